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
    /// The reinstatements (event ids; a late one's adjustment: its entry
    /// id).
    reinstatements: Vec<String>,
    /// The events they cite.
    sources: Vec<String>,
    /// The positive parts by the day their hold runs from: a part taken
    /// back is held with what it offsets.
    parts: BTreeMap<i64, Decimal>,
}

/// The reason of an entry taking back (part of) the write-off of `p`.
fn reason(p: Period) -> String {
    format!("writeoff_taken_back_{p}")
}

/// The entries of period `p` that take back the write-offs of closed periods
/// whose reversals this period's reinstatements cancel: on time (a positive
/// clawback of `p`), or late for a closed period (its adjustment, among
/// `adjusted`). A reversal counts for the period it was dated in only when
/// it was booked there on time: one that arrived after that period closed
/// was charged by a later period's adjustment, not written off with it.
pub fn taken_back(
    store: &Store,
    words: &Words,
    out: &Output,
    adjusted: &[Entry],
    p: Period,
) -> Result<Vec<Entry>> {
    let f = words.eng.facts;
    // the period a reinstatement gives back to: its reversal's, when the
    // reversal was booked there on time
    let mut closes: BTreeMap<Period, Option<i64>> = BTreeMap::new();
    let mut gives_to = |reversal: u32, sale: u32| -> Result<Option<Period>> {
        if reversal == NONE {
            return Ok(None);
        }
        let (r, o) = (&f.convs[reversal as usize], &f.convs[sale as usize]);
        let at = Period::of_ms(r.ts.max(o.ts));
        if at >= p {
            return Ok(None);
        }
        let watermark = match closes.get(&at) {
            Some(w) => *w,
            None => {
                let w = store
                    .period_state(at)?
                    .filter(|(state, _, _)| state == "closed")
                    .map(|(_, w, _)| w);
                closes.insert(at, w);
                w
            }
        };
        Ok(watermark.filter(|&w| i64::from(r.arrival) <= w).map(|_| at))
    };
    // (partner, program, the closed period) -> what is given back to it
    let mut back: BTreeMap<(String, String, Period), Back> = BTreeMap::new();
    // late reinstatements: their adjustments name the engine's entry
    let late: BTreeMap<&str, &Entry> = adjusted
        .iter()
        .filter(|e| {
            e.kind == EntryKind::Adjustment
                && e.amount > Decimal::ZERO
                && !e.reason.starts_with("held:")
                && !e.adjusts.is_empty()
        })
        .map(|e| (e.adjusts.as_str(), e))
        .collect();
    for e in out.entries.iter().filter(|e| e.period <= p) {
        let Calc::Clawback(b) = &e.calc else {
            continue;
        };
        // on time in `p`, or restated late by an adjustment of `p`
        let (amount, day, id, sources) = if e.period == p {
            // a held reinstatement is not yet paid
            if e.fraud != 0 || e.amount <= Decimal::ZERO {
                continue;
            }
            let id = f.id(&f.convs[e.conv as usize]).to_string();
            (e.amount, i64::from(b.3), id.clone(), vec![id])
        } else {
            if b.6 == NONE || late.is_empty() {
                continue;
            }
            let Some(a) = late.get(crate::engine::hex_id("le_", &e.id).as_str()) else {
                continue;
            };
            (a.amount, a.event_day, a.id.clone(), a.sources.clone())
        };
        let Some(at) = gives_to(b.6, b.5)? else {
            continue;
        };
        let program = &words.eng.cfg.programs[usize::from(e.prog)].id;
        let k = (f.syms.str(e.partner).to_string(), program.clone(), at);
        let v = back.entry(k).or_default();
        v.amount += amount;
        // held as what it offsets: a clawback from the day of the entry
        // it reverses, an adjustment from its own
        *v.parts.entry(day).or_default() += amount;
        if !v.reinstatements.contains(&id) {
            v.reinstatements.push(id);
        }
        for s in sources {
            if !v.sources.contains(&s) {
                v.sources.push(s);
            }
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
                    "the reinstatement entries {} give back {} {currency} to {at}, whose negative balance was written off ({} {currency} of the write-off not taken back before): the part the write-off forgave was never recovered, so the write-off is taken back by min({}, {}) = {}{held}: {} {currency}",
                    b.reinstatements.join(", "),
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
