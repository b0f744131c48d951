//! A reinstatement of a reversal a closed period wrote off takes the
//! write-off back.
//!
//! Without `negative_carryover`, a period whose matured balance a refund or
//! chargeback made negative writes the debt off: the partner keeps money the
//! reversal took back on paper. When that reversal is later cancelled (a
//! dispute won, a refund that failed), the reinstatement pays back what the
//! reversal took; the part of it the write-off forgave was never recovered,
//! so paying it would pay the partner twice. For the reinstatements of this
//! period whose reversal was booked in the closed period `P`, the write-off
//! of `P` (what earlier reinstatements took back of it left aside) is taken
//! back up to their sum: exactly what the partner's balance would have been
//! without the reversal, `min(reversed, written off)`.

use crate::engine::{Calc, Output};
use crate::error::Result;
use crate::events::Cols;
use crate::facts::NONE;
use crate::ledger::{entry_id, Entry, EntryKind};
use crate::ledger_blocks::{text, L_AMOUNT, L_KIND, L_PARTNER, L_PROGRAM, L_REASON};
use crate::money::{fmt_decimal, parse_decimal};
use crate::period::Period;
use crate::store::{pos_base, Store};
use crate::words::Words;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// What this period gives back to one closed period of one partner.
#[derive(Default)]
struct Back {
    amount: Decimal,
    /// The reinstatements (event ids) and late-fact adjustments (entry ids).
    reinstatements: Vec<String>,
    adjustments: Vec<String>,
    /// The events they cite.
    sources: Vec<String>,
    /// The positive parts by the day their hold runs from: a part taken
    /// back is held with what it offsets.
    parts: BTreeMap<i64, Decimal>,
}

impl Back {
    fn words(&self) -> String {
        let list =
            |what: &str, v: &[String]| (!v.is_empty()).then(|| format!("{what} {}", v.join(", ")));
        [
            list("the reinstatements", &self.reinstatements),
            list("the late-fact adjustments", &self.adjustments),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" and ")
    }
}

/// The reason of an entry taking back (part of) the write-off of `p`.
fn reason(p: Period) -> String {
    format!("writeoff_taken_back_{p}")
}

/// The entries of period `p` that take back the write-offs of closed periods
/// whose reversals this period's reinstatements cancel.
///
/// Late facts restating a closed period are the same case: `adjusted` are
/// this period's adjustments, and a period's net positive restatement (not
/// held for review) takes its write-off back the same way: the balance
/// the period would have had is `min(change, written off)` less negative.
pub fn taken_back(
    store: &Store,
    words: &Words,
    out: &Output,
    adjusted: &[Entry],
    p: Period,
) -> Result<Vec<Entry>> {
    let f = words.eng.facts;
    // (partner, program, the closed period) -> what is given back to it
    let mut back: BTreeMap<(String, String, Period), Back> = BTreeMap::new();
    for e in adjusted.iter().filter(|e| e.kind == EntryKind::Adjustment) {
        let of = e
            .reason
            .strip_prefix("late_facts_")
            .or_else(|| e.reason.strip_prefix("restated_"))
            .and_then(Period::parse);
        let Some(of) = of.filter(|&q| q < p) else {
            continue;
        };
        let v = back
            .entry((e.partner.clone(), e.program.clone(), of))
            .or_default();
        v.amount += e.amount;
        if e.amount > Decimal::ZERO {
            *v.parts.entry(e.event_day).or_default() += e.amount;
        }
        v.adjustments.push(e.id.clone());
        for s in &e.sources {
            if !v.sources.contains(s) {
                v.sources.push(s.clone());
            }
        }
    }
    for e in out.entries.iter().filter(|e| e.period == p) {
        let Calc::Clawback(b) = &e.calc else {
            continue;
        };
        let (reversal, sale) = (b.6, b.5);
        // a held reinstatement is not yet paid
        if reversal == NONE || e.fraud != 0 || e.amount <= Decimal::ZERO {
            continue;
        }
        let (r, o) = (&f.convs[reversal as usize], &f.convs[sale as usize]);
        let at = Period::of_ms(r.ts.max(o.ts));
        if at >= p {
            continue;
        }
        let program = &words.eng.cfg.programs[usize::from(e.prog)].id;
        let k = (f.syms.str(e.partner).to_string(), program.clone(), at);
        let v = back.entry(k).or_default();
        v.amount += e.amount;
        // a clawback is held from the day of the entry it reverses
        *v.parts.entry(i64::from(b.3)).or_default() += e.amount;
        let id = f.id(&f.convs[e.conv as usize]).to_string();
        if !v.reinstatements.contains(&id) {
            v.reinstatements.push(id.clone());
        }
        if !v.sources.contains(&id) {
            v.sources.push(id);
        }
    }
    if back.is_empty() {
        return Ok(Vec::new());
    }
    // per (partner, program, period): written off then, and taken back since
    let first = back.keys().map(|k| k.2).min().unwrap_or(p);
    let wanted: BTreeMap<(&str, &str), ()> = back
        .keys()
        .map(|(a, g, _)| ((a.as_str(), g.as_str()), ()))
        .collect();
    let mut left: BTreeMap<(String, String, Period), Decimal> = BTreeMap::new();
    crate::ledger_blocks::scan(
        &store.conn,
        pos_base(first),
        pos_base(p),
        Cols::of(&[], &[L_PARTNER, L_PROGRAM, L_KIND, L_AMOUNT, L_REASON]),
        |b| {
            let at = Period::from_key(crate::ledger_blocks::period_of(b.first));
            for r in 0..b.rows() {
                let reason = text(b, L_REASON, r)?;
                if b.bytes(L_KIND, r) != Some(b"writeoff")
                    && !reason.starts_with("writeoff_taken_back_")
                {
                    continue;
                }
                let (partner, program) = (text(b, L_PARTNER, r)?, text(b, L_PROGRAM, r)?);
                if !wanted.contains_key(&(partner, program)) {
                    continue;
                }
                let amount = parse_decimal(text(b, L_AMOUNT, r)?).unwrap_or_default();
                // a write-off of its own period, or a taking back of an
                // earlier one's
                let of = match reason.strip_prefix("writeoff_taken_back_") {
                    Some(q) => match Period::parse(q) {
                        Some(q) => q,
                        None => continue,
                    },
                    None => at,
                };
                *left
                    .entry((partner.to_string(), program.to_string(), of))
                    .or_default() += amount;
            }
            Ok(())
        },
    )?;
    let ps = p.to_string();
    let mut entries = Vec::new();
    for ((partner, program, at), b) in back {
        let reinstated = b.amount;
        let written = left
            .get(&(partner.clone(), program.clone(), at))
            .copied()
            .unwrap_or_default();
        let take = reinstated.min(written);
        if take <= Decimal::ZERO {
            continue;
        }
        let currency = words
            .eng
            .cfg
            .program(&program)
            .map_or(words.eng.cfg.currency, |g| g.currency);
        // in parts held as what they offset (earliest first)
        let mut rest = take;
        for (&day, &part) in &b.parts {
            let t = part.min(rest);
            if t <= Decimal::ZERO {
                break;
            }
            rest -= t;
            let held = if b.parts.len() > 1 {
                format!(
                    "; this part, {} {currency}, is held as what it offsets, from {}",
                    fmt_decimal(t, currency),
                    crate::period::date_of_day(day)
                )
            } else {
                String::new()
            };
            entries.push(Entry {
                id: entry_id(&[
                    "writeoff_back",
                    &ps,
                    &at.to_string(),
                    &partner,
                    &program,
                    &day.to_string(),
                ]),
                period: p,
                partner: partner.clone(),
                program: program.clone(),
                kind: EntryKind::Adjustment,
                amount: -t,
                currency,
                rule: "-".into(),
                sources: b.sources.clone(),
                event_day: day,
                reason: reason(at),
                calc: format!(
                    "{} give back {} {currency} to {at}, whose negative balance was written off ({} {currency} of the write-off not taken back before): the part the write-off forgave was never recovered, so the write-off is taken back by min({}, {}) = {}{held}: {} {currency}",
                    b.words(),
                    fmt_decimal(reinstated, currency),
                    fmt_decimal(written, currency),
                    fmt_decimal(reinstated, currency),
                    fmt_decimal(written, currency),
                    fmt_decimal(take, currency),
                    fmt_decimal(-t, currency),
                ),
                adjusts: String::new(),
            });
        }
    }
    Ok(entries)
}
