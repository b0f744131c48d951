//! Ledger entries: immutable once their period is closed; corrections are
//! new entries (`adjustment`, `clawback`), never edits.

use crate::period::Period;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntryKind {
    Commission,
    Override,
    MinimumTopup,
    Mdf,
    Clawback,
    Adjustment,
    Writeoff,
    Capped,
    Rejected,
    Payout,
}

impl EntryKind {
    pub const ALL: [EntryKind; 10] = [
        EntryKind::Commission,
        EntryKind::Override,
        EntryKind::MinimumTopup,
        EntryKind::Mdf,
        EntryKind::Clawback,
        EntryKind::Adjustment,
        EntryKind::Writeoff,
        EntryKind::Capped,
        EntryKind::Rejected,
        EntryKind::Payout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Commission => "commission",
            EntryKind::Override => "override",
            EntryKind::MinimumTopup => "minimum_topup",
            EntryKind::Mdf => "mdf",
            EntryKind::Clawback => "clawback",
            EntryKind::Adjustment => "adjustment",
            EntryKind::Writeoff => "writeoff",
            EntryKind::Capped => "capped",
            EntryKind::Rejected => "rejected",
            EntryKind::Payout => "payout",
        }
    }

    pub fn parse(s: &str) -> Option<EntryKind> {
        EntryKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Entries that wait `hold_days` before they can be paid (SPEC: clawbacks,
    /// write-offs and top-ups are never held).
    pub fn holdable(self) -> bool {
        matches!(
            self,
            EntryKind::Commission | EntryKind::Override | EntryKind::Mdf | EntryKind::Adjustment
        )
    }

    /// Entries computed from facts (as opposed to the period-end balance).
    pub fn from_facts(self) -> bool {
        !matches!(
            self,
            EntryKind::Writeoff | EntryKind::Payout | EntryKind::Adjustment
        )
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an attributed conversion pays nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    SelfReferral,
    /// The partner's status at event time (`applied`, `suspended`, ...).
    PartnerNotApproved,
    UnknownPartner,
    /// The partner is registered in another program (an MDF claim).
    OtherProgram,
    BotClick,
    /// A fraud rule (index into `fraud::RULES`), by its action or on review.
    Fraud(u8),
}

/// One ledger entry. `amount` is rounded to the currency's minor unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub id: String,
    pub period: Period,
    pub partner: String,
    pub program: String,
    pub kind: EntryKind,
    pub amount: Decimal,
    pub currency: edge::currency::Currency,
    /// The rule id, or `-`.
    pub rule: String,
    /// Source event ids.
    pub sources: Vec<String>,
    /// Day number of the source event (for `hold_days`).
    pub event_day: i64,
    pub reason: String,
    /// The arithmetic in words.
    pub calc: String,
    /// The entry this one corrects (adjustments, clawbacks, overrides).
    pub adjusts: String,
}

/// A deterministic id: `le_` + 20 hex digits of SHA-256 over the parts.
pub fn entry_id(parts: &[&str]) -> String {
    prefixed_id("le_", parts)
}

pub fn prefixed_id(prefix: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut s = String::with_capacity(prefix.len() + 20);
    s.push_str(prefix);
    s.push_str(&hex::encode(&d[..10]));
    s
}

/// A reseller's invoice line (the partner owes us).
#[derive(Clone, Debug, PartialEq)]
pub struct InvoiceLine {
    pub id: String,
    pub period: Period,
    pub partner: String,
    pub program: String,
    pub txn_id: String,
    pub list_amount: Decimal,
    pub discount_percent: Decimal,
    pub amount_due: Decimal,
    pub currency: edge::currency::Currency,
    pub source: String,
    pub calc: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_separated() {
        assert_eq!(entry_id(&["a", "b"]), entry_id(&["a", "b"]));
        assert_ne!(entry_id(&["ab", ""]), entry_id(&["a", "b"]));
        assert_eq!(entry_id(&["x"]).len(), 23);
        for k in EntryKind::ALL {
            assert_eq!(EntryKind::parse(k.as_str()), Some(k));
        }
    }
}
