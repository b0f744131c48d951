//! Period-end statements (SPEC section 5, "Ledger and outputs"): balances,
//! holds, the payout minimum, write-offs and payouts.

use crate::config::Config;
use crate::error::Result;
use crate::ledger::{entry_id, Entry, EntryKind};
use crate::money::{fmt_decimal, norm, Exact, Money, Overflow};
use crate::period::Period;
use edge::currency::Currency;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub period: Period,
    pub partner: String,
    pub program: String,
    pub currency: Currency,
    pub earned: Decimal,
    pub reversed: Decimal,
    pub adjusted: Decimal,
    pub carried_in: Decimal,
    pub pending: Decimal,
    pub payable: Decimal,
    pub carried_out: Decimal,
    pub model: String,
}

impl Statement {
    pub fn figures(&self) -> [Decimal; 7] {
        [
            self.earned,
            self.reversed,
            self.adjusted,
            self.carried_in,
            self.pending,
            self.payable,
            self.carried_out,
        ]
    }

    pub fn csv_row(&self) -> Vec<String> {
        let f = |d: Decimal| fmt_decimal(d, self.currency);
        vec![
            self.period.to_string(),
            self.partner.clone(),
            self.program.clone(),
            self.currency.to_string(),
            f(self.earned),
            f(self.reversed),
            f(self.adjusted),
            f(self.carried_in),
            f(self.pending),
            f(self.payable),
            f(self.carried_out),
        ]
    }
}

pub const STATEMENT_COLUMNS: [&str; 11] = [
    "period",
    "partner",
    "program",
    "currency",
    "earned",
    "reversed",
    "adjusted",
    "carried_in",
    "pending",
    "payable",
    "carried_out",
];

fn add(a: &mut Decimal, b: Decimal) -> Result<(), Overflow> {
    *a = a.checked_add(b).ok_or(Overflow)?;
    Ok(())
}

/// Balances of the partners of one period.
///
/// `entries`: the period's entries from facts and adjustments (no payouts
/// or write-offs yet). `carried_in`: last statement's carried_out per
/// `(partner, program)`. `earlier_pending`: entries of earlier periods that
/// are still held on this period's last day, summed per `(partner, program)`.
/// Returns the statements and the write-off and payout entries to add.
/// What a statement needs of an entry.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub partner: &'a str,
    pub program: &'a str,
    pub kind: EntryKind,
    pub amount: Decimal,
    pub event_day: i64,
    /// The day its hold runs from (it is pending while that day plus
    /// `hold_days` is after the period's last day), `None` when it is never
    /// held: [`View::hold_from`].
    pub hold_from: Option<i64>,
    /// Held for review by the fraud rules: pending until decided.
    pub held: bool,
}

impl View<'_> {
    /// The hold of an entry of `kind` on `event_day`: commissions,
    /// overrides, MDF and adjustments from their day; a clawback from the
    /// day of the entry it reverses (`reversed_day`), so it nets against
    /// that entry while the entry is pending and takes matured money at once
    /// afterwards (a refund within the hold never pays the commission it
    /// reverses); write-offs, top-ups and the rest are never held.
    pub fn hold_from(kind: EntryKind, event_day: i64, reversed_day: Option<i64>) -> Option<i64> {
        match kind {
            EntryKind::Clawback => reversed_day,
            k if k.holdable() => Some(event_day),
            _ => None,
        }
    }
}

impl<'a> From<&'a Entry> for View<'a> {
    fn from(e: &'a Entry) -> View<'a> {
        View {
            partner: &e.partner,
            program: &e.program,
            kind: e.kind,
            amount: e.amount,
            event_day: e.event_day,
            // an entry read back has no reversed entry at hand: a stored
            // clawback's hold is found by the run ([`crate::run`]'s scan
            // of earlier periods)
            hold_from: View::hold_from(e.kind, e.event_day, None),
            held: e.reason.starts_with("held:"),
        }
    }
}

/// `[payout] minimum`, in the top-level currency, in `currency`: converted
/// at the rate of the period's last day (or the last earlier one in
/// fx.csv) and rounded half-even to the currency's minor unit, so one
/// threshold holds for programs in JPY and KWD alike.
/// Also the conversion in words (empty when none), for the payout's calc.
fn minimum_in(
    cfg: &Config,
    currency: Currency,
    last: i64,
    cache: &mut HashMap<Currency, (Decimal, String)>,
) -> Result<(Decimal, String)> {
    if currency == cfg.currency || cfg.minimum.is_zero() {
        return Ok((cfg.minimum, String::new()));
    }
    if let Some(m) = cache.get(&currency) {
        return Ok(m.clone());
    }
    let missing = || {
        crate::error::Error::data(format!(
            "{}: no {currency} rate on or before {} to convert the payout minimum {} {} into {currency}",
            cfg.fx
                .as_ref()
                .map_or_else(|| cfg.path.display().to_string(), |f| f.path.display().to_string()),
            crate::period::date_of_day(last),
            cfg.minimum,
            cfg.currency
        ))
    };
    let fx = cfg.fx.as_ref().ok_or_else(missing)?;
    let (rate, day) = fx.rate(currency, last).ok_or_else(missing)?;
    let m = Money::round(
        Exact::from_dec(cfg.minimum).div(Exact::from_dec(rate))?,
        currency,
    )?
    .amount;
    let words = format!(
        " ({} {} / {} {} per {currency}, fx.csv {})",
        fmt_decimal(cfg.minimum, cfg.currency),
        cfg.currency,
        crate::money::plain(rate),
        cfg.currency,
        crate::period::date_of_day(day)
    );
    cache.insert(currency, (m, words.clone()));
    Ok((m, words))
}

pub fn compute<'a>(
    period: Period,
    cfg: &Config,
    entries: impl Iterator<Item = View<'a>>,
    carried_in: &'a BTreeMap<(String, String), Decimal>,
    earlier_pending: &'a BTreeMap<(String, String), Decimal>,
) -> Result<(Vec<Statement>, Vec<Entry>)> {
    #[derive(Default)]
    struct Acc {
        earned: Decimal,
        reversed: Decimal,
        adjusted: Decimal,
        pending: Decimal,
        carried_in: Decimal,
        /// An entry of a non-zero amount booked in the period.
        booked: bool,
    }
    let last = period.last_day();
    // (a few million entries: Fx, not SipHash; the rows are sorted below)
    let mut acc: rustc_hash::FxHashMap<(&'a str, &'a str), Acc> = Default::default();
    for e in entries {
        let a = acc.entry((e.partner, e.program)).or_default();
        match e.kind {
            EntryKind::Commission
            | EntryKind::Override
            | EntryKind::MinimumTopup
            | EntryKind::Mdf => add(&mut a.earned, e.amount)?,
            EntryKind::Clawback => add(&mut a.reversed, e.amount)?,
            EntryKind::Adjustment | EntryKind::Writeoff => add(&mut a.adjusted, e.amount)?,
            EntryKind::Capped | EntryKind::Rejected | EntryKind::Payout => {}
        }
        a.booked |= !e.amount.is_zero();
        if e.held || e.hold_from.is_some_and(|d| d + cfg.hold_days > last) {
            add(&mut a.pending, e.amount)?;
        }
    }
    for ((p, g), v) in carried_in {
        add(
            &mut acc.entry((p.as_str(), g.as_str())).or_default().carried_in,
            *v,
        )?;
    }
    for ((p, g), v) in earlier_pending {
        add(
            &mut acc.entry((p.as_str(), g.as_str())).or_default().pending,
            *v,
        )?;
    }
    let mut acc: Vec<((&'a str, &'a str), Acc)> = acc.into_iter().collect();
    acc.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rows = Vec::new();
    let mut extra = Vec::new();
    let mut minimums = HashMap::new();
    let ps = period.to_string();
    for ((partner, program), mut a) in acc {
        let (partner, program) = (partner.to_string(), program.to_string());
        let prog = cfg.program(&program);
        let currency = prog.map_or(cfg.currency, |p| p.currency);
        let negative_carryover = prog.is_some_and(|p| p.negative_carryover);
        let mut balance = a.carried_in;
        for x in [a.earned, a.reversed, a.adjusted] {
            add(&mut balance, x)?;
        }
        // what is held back is never more than the balance, nor negative: a
        // negative entry still within its hold (a net-revenue loss) or a
        // matured clawback larger than the matured money takes it from the
        // held money, instead of being left out of the matured balance
        // (which paid the commission it offsets) or written off (which
        // paid the held money later)
        a.pending = a.pending.max(Decimal::ZERO).min(balance.max(Decimal::ZERO));
        let mut matured = balance.checked_sub(a.pending).ok_or(Overflow)?;
        if matured.is_sign_negative() && !matured.is_zero() && !negative_carryover {
            let w = -matured;
            add(&mut a.adjusted, w)?;
            add(&mut balance, w)?;
            matured = Decimal::ZERO;
            extra.push(Entry {
                id: entry_id(&["writeoff", &ps, &partner, &program]),
                period,
                partner: partner.clone(),
                program: program.clone(),
                kind: EntryKind::Writeoff,
                amount: w,
                currency,
                rule: "-".into(),
                sources: vec![],
                event_day: last,
                reason: "negative_balance".into(),
                calc: format!(
                    "the matured balance {} {currency} is negative and the program has no negative_carryover: written off by {} {currency}",
                    fmt_decimal(-w, currency),
                    fmt_decimal(w, currency)
                ),
                adjusts: String::new(),
            });
        }
        let (minimum, converted) = minimum_in(cfg, currency, last, &mut minimums)?;
        let payable = if matured > Decimal::ZERO && matured >= minimum {
            matured
        } else {
            Decimal::ZERO
        };
        let carried_out = balance.checked_sub(payable).ok_or(Overflow)?;
        if payable > Decimal::ZERO {
            extra.push(Entry {
                id: entry_id(&["payout", &ps, &partner, &program]),
                period,
                partner: partner.clone(),
                program: program.clone(),
                kind: EntryKind::Payout,
                amount: -payable,
                currency,
                rule: "-".into(),
                sources: vec![],
                event_day: last,
                reason: payout_reference(period, &partner),
                calc: format!(
                    "balance {} - pending {} = matured {}, at least the minimum {}{converted}: paid out",
                    fmt_decimal(balance, currency),
                    fmt_decimal(a.pending, currency),
                    fmt_decimal(payable, currency),
                    fmt_decimal(minimum, currency)
                ),
                adjusts: String::new(),
            });
        }
        let st = Statement {
            period,
            partner,
            program,
            currency,
            earned: norm(a.earned),
            reversed: norm(a.reversed),
            adjusted: norm(a.adjusted),
            carried_in: norm(a.carried_in),
            pending: norm(a.pending),
            payable: norm(payable),
            carried_out: norm(carried_out),
            model: prog.map_or("", |p| p.model.as_str()).to_string(),
        };
        // and a row for entries that net to nothing (a late refund's
        // adjustment and the write-off it causes, both in `adjusted`): the
        // reader of statements.csv sees the partner the ledger names
        if a.booked || st.figures().iter().any(|d| !d.is_zero()) {
            rows.push(st);
        }
    }
    // a partner paid in several programs (several currencies, say) gets a
    // reference per payout: one reference for two transfers could not be
    // told apart at the bank
    let mut paid: HashMap<String, usize> = HashMap::new();
    for e in extra.iter().filter(|e| e.kind == EntryKind::Payout) {
        *paid.entry(e.partner.clone()).or_default() += 1;
    }
    for e in extra.iter_mut().filter(|e| e.kind == EntryKind::Payout) {
        if paid.get(&e.partner).is_some_and(|&n| n > 1) {
            // `.`: never in an id, so `anna` in `eu` is not `anna-eu`
            e.reason = format!("{}.{}", payout_reference(period, &e.partner), e.program);
        }
    }
    Ok((rows, extra))
}

/// `PO-<period>-<partner>`; `.<program>` is added when the partner is paid
/// in more than one program in the period.
pub fn payout_reference(period: Period, partner: &str) -> String {
    format!("PO-{period}-{partner}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::parse_decimal;
    use std::path::Path;

    fn cfg(extra: &str) -> Config {
        let text = format!(
            "currency = \"USD\"\n[payout]\nhold_days = 30\nminimum = \"50.00\"\n[[programs]]\nid = \"p\"\nmodel = \"affiliate\"\n{extra}"
        );
        crate::config::parse(Path::new("t.toml"), &text).unwrap()
    }

    fn e(kind: EntryKind, amount: &str, day: &str) -> Entry {
        Entry {
            id: format!("{kind}-{amount}-{day}"),
            period: Period::parse("2026-11").unwrap(),
            partner: "a".into(),
            program: "p".into(),
            kind,
            amount: parse_decimal(amount).unwrap(),
            currency: Currency::parse("USD").unwrap(),
            rule: "-".into(),
            sources: vec![],
            event_day: edge::time::Timestamp::parse_date(day).unwrap().day(),
            reason: String::new(),
            calc: String::new(),
            adjusts: String::new(),
        }
    }

    fn d(s: &str) -> Decimal {
        parse_decimal(s).unwrap()
    }

    #[test]
    fn hold_minimum_and_payout() {
        let c = cfg("");
        let p = Period::parse("2026-11").unwrap();
        // 60 earned on Oct 20 (matured by Nov 30 with 30 days hold), 40 on Nov 15 (held)
        let mut es = [
            e(EntryKind::Commission, "60.00", "2026-10-20"),
            e(EntryKind::Commission, "40.00", "2026-11-15"),
        ];
        es[0].period = p;
        let (rows, extra) = compute(
            p,
            &c,
            es.iter().map(View::from),
            &BTreeMap::new(),
            &BTreeMap::new(),
        )
        .unwrap();
        let r = &rows[0];
        assert_eq!(
            (r.earned, r.pending, r.payable, r.carried_out),
            (d("100.00"), d("40.00"), d("60.00"), d("40.00"))
        );
        assert_eq!(extra.len(), 1);
        assert_eq!(extra[0].amount, d("-60.00"));
    }

    /// A partner paid in two programs gets a reference per payout; a
    /// partner paid once keeps `PO-<period>-<partner>`.
    #[test]
    fn two_payouts_of_one_partner_have_two_references() {
        let mut c = cfg("[[programs]]\nid = \"q\"\nmodel = \"affiliate\"\ncurrency = \"EUR\"\n");
        // the minimum, 50.00 USD, is 45.45 EUR
        c.fx = Some(
            crate::config::Fx::parse(
                Path::new("fx.csv"),
                "date,currency,rate\n2026-10-01,EUR,1.10\n",
                c.currency,
            )
            .unwrap(),
        );
        let p = Period::parse("2026-11").unwrap();
        let mut es = [
            e(EntryKind::Commission, "60.00", "2026-10-01"),
            e(EntryKind::Commission, "70.00", "2026-10-01"),
            e(EntryKind::Commission, "80.00", "2026-10-01"),
        ];
        es[1].program = "q".into();
        es[1].currency = Currency::parse("EUR").unwrap();
        es[2].partner = "b".into();
        let (_, extra) = compute(
            p,
            &c,
            es.iter().map(View::from),
            &BTreeMap::new(),
            &BTreeMap::new(),
        )
        .unwrap();
        let mut refs: Vec<(&str, &str, &str)> = extra
            .iter()
            .filter(|x| x.kind == EntryKind::Payout)
            .map(|x| (x.partner.as_str(), x.program.as_str(), x.reason.as_str()))
            .collect();
        refs.sort();
        assert_eq!(
            refs,
            [
                ("a", "p", "PO-2026-11-a.p"),
                ("a", "q", "PO-2026-11-a.q"),
                ("b", "p", "PO-2026-11-b"),
            ]
        );
    }

    #[test]
    fn below_minimum_carries_forward() {
        let c = cfg("");
        let p = Period::parse("2026-11").unwrap();
        let es = [e(EntryKind::Commission, "30.00", "2026-10-01")];
        let mut cin = BTreeMap::new();
        cin.insert(("a".to_string(), "p".to_string()), d("10.00"));
        let (rows, extra) =
            compute(p, &c, es.iter().map(View::from), &cin, &BTreeMap::new()).unwrap();
        assert_eq!((rows[0].payable, rows[0].carried_out), (d("0"), d("40.00")));
        assert!(extra.is_empty());
    }

    #[test]
    fn negative_balance_written_off_unless_carryover() {
        let p = Period::parse("2026-11").unwrap();
        let es = [
            e(EntryKind::Commission, "-80.00", "2026-10-01"),
            e(EntryKind::Commission, "25.00", "2026-11-20"),
        ];
        let (rows, extra) = compute(
            p,
            &cfg(""),
            es.iter().map(View::from),
            &BTreeMap::new(),
            &BTreeMap::new(),
        )
        .unwrap();
        // the held 25.00 covers part of the -80.00 (pending is never more
        // than the balance): -55.00 written off, nothing left to pay later
        let r = &rows[0];
        assert_eq!(
            (r.earned, r.adjusted, r.pending, r.payable, r.carried_out),
            (d("-55.00"), d("55.00"), d("0"), d("0"), d("0"))
        );
        assert_eq!(extra[0].kind, EntryKind::Writeoff);
        let (rows, extra) = compute(
            p,
            &cfg("negative_carryover = true\n"),
            es.iter().map(View::from),
            &BTreeMap::new(),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(
            (rows[0].adjusted, rows[0].carried_out),
            (d("0"), d("-55.00"))
        );
        assert!(extra.is_empty());
    }
}
