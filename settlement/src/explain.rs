//! `settlement explain ENTRY_ID`: the rule, the inputs and the arithmetic.

use crate::error::{Error, Result};
use crate::period::{date_of_day, Period};
use crate::store::{kind_name, Store};
use rusqlite::OptionalExtension;
use std::fmt::Write as _;

pub fn explain(store: &Store, id: &str) -> Result<String> {
    let c = &store.conn;
    let mut o = String::new();
    type Row = (
        i64,
        String,
        String,
        String,
        String,
        String,
        String,
        String,
        i64,
        String,
        String,
        String,
    );
    let row: Option<Row> = match crate::ledger_blocks::find(c, id)? {
        None => None,
        Some((b, r)) => {
            use crate::ledger_blocks::*;
            let t = |col: usize| text(&b, col, r).map(str::to_string);
            Some((
                period_of(b.first),
                t(L_PARTNER)?,
                t(L_PROGRAM)?,
                t(L_KIND)?,
                t(L_AMOUNT)?,
                t(L_CURRENCY)?,
                t(L_RULE)?,
                t(L_SOURCES)?,
                b.int(L_EVENT_DAY, r).unwrap_or(0),
                t(L_REASON)?,
                t(L_CALC)?,
                t(L_ADJUSTS)?,
            ))
        }
    };
    let (period, sources, rule, calc) = if let Some((
        period,
        partner,
        program,
        kind,
        amount,
        cur,
        rule,
        sources,
        day,
        reason,
        calc,
        adjusts,
    )) = row
    {
        let p = Period::from_key(period);
        let state = store.period_state(p)?.map_or("unknown".into(), |s| s.0);
        let _ = writeln!(o, "entry {id}: {kind} of {amount} {cur}");
        let _ = writeln!(o, "  period   {p} ({state})");
        let _ = writeln!(o, "  partner  {partner} (program {program})");
        // what `hold_days` counts from (statement::View::hold_from)
        use crate::ledger::EntryKind;
        let hold = match EntryKind::parse(&kind) {
            Some(EntryKind::Clawback) => "held, or not, with the entry it reverses",
            Some(k) if k.holdable() => "the date holds count from",
            _ => "never held",
        };
        let _ = writeln!(o, "  date     {} ({hold})", date_of_day(day));
        if !reason.is_empty() {
            let _ = writeln!(o, "  reason   {reason}");
        }
        if !adjusts.is_empty() {
            let _ = writeln!(o, "  derives from entry {adjusts}");
        }
        type FraudRow = (i64, String, String, String, String, String, String);
        let fraud: Option<FraudRow> = c
            .query_row(
                "SELECT score, reasons, action, decision, decided_by, why, event FROM fraud
                 WHERE period = ?1 AND entry = ?2 LIMIT 1",
                rusqlite::params![period, id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .optional()?;
        if let Some((score, reasons, action, decision, by, why, event)) = fraud {
            let _ = write!(o, "  fraud    score {score} ({reasons}), action {action}");
            // a decision made after this draft was computed: the period's
            // rows do not have it, the next run books it
            let later: Option<(String, String, String)> =
                if matches!(decision.as_str(), "" | "pending") {
                    c.query_row(
                        "SELECT decision, decided_by, reason FROM reviews WHERE event = ?1",
                        [&event],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?
                } else {
                    None
                };
            if let Some((d, by, why)) = later {
                let d = if d == "release" {
                    "released"
                } else {
                    "rejected"
                };
                let _ = write!(
                    o,
                    ", {d} by {by}: {why}, after this period's draft (booked by {})",
                    if state == "closed" {
                        "the next run of the first open period".to_string()
                    } else {
                        format!("the next run of {p}")
                    }
                );
            } else {
                match decision.as_str() {
                    "" => {}
                    "pending" => {
                        let _ = write!(
                            o,
                            ", awaiting review (settlement review release|reject {id})"
                        );
                    }
                    d => {
                        let _ = write!(o, ", {d} by {by}: {why}");
                    }
                }
            }
            let _ = writeln!(o);
        }
        (period, sources, rule, calc)
    } else {
        use crate::ledger_blocks::*;
        let Some((b, r)) = find_in(c, INVOICES, I_ID, id)? else {
            return never_booked(store, id);
        };
        let t = |col: usize| text(&b, col, r).map(str::to_string);
        let period = period_of(b.first);
        let (partner, program, txn) = (t(I_PARTNER)?, t(I_PROGRAM)?, t(I_TXN_ID)?);
        let (list, disc, due) = (t(I_LIST_AMOUNT)?, t(I_DISCOUNT_PERCENT)?, t(I_AMOUNT_DUE)?);
        let (cur, source, calc) = (t(I_CURRENCY)?, t(I_SOURCE)?, t(I_CALC)?);
        let _ = writeln!(
            o,
            "invoice line {id}: {partner} owes {due} {cur} (program {program})"
        );
        let _ = writeln!(o, "  period   {}", Period::from_key(period));
        let _ = writeln!(o, "  txn      {txn}: list {list} {cur}, discount {disc}%");
        (period, source, String::new(), calc)
    };
    if !rule.is_empty() && rule != "-" {
        let desc: Option<String> = c
            .query_row(
                "SELECT description FROM rules WHERE period = ?1 AND rule = ?2",
                rusqlite::params![period, rule],
                |r| r.get(0),
            )
            .optional()?;
        let _ = writeln!(
            o,
            "rule {rule}: {}",
            desc.unwrap_or_else(|| "(no longer in the configuration)".into())
        );
    }
    let srcs: Vec<&str> = sources.split_whitespace().collect();
    if !srcs.is_empty() {
        let _ = writeln!(o, "inputs:");
    }
    for s in srcs {
        let ev = crate::events::find(c, s)?.map(|(b, r)| describe(&b, r));
        let _ = writeln!(
            o,
            "  {s}: {}",
            ev.unwrap_or_else(|| "(not in the store)".into())
        );
    }
    let _ = writeln!(o, "arithmetic: {calc}");
    Ok(o)
}

/// An id no entry has, that adjustments name in `adjusts`: an entry of a
/// closed period's view that the ledger never booked (a commission of a
/// fact that arrived after its period closed, say), whose adjustments
/// booked it later. Explained by them; else the id is unknown (exit 1).
fn never_booked(store: &Store, id: &str) -> Result<String> {
    use crate::events::Cols;
    use crate::ledger_blocks::*;
    let mut by: Vec<(i64, String, String, String, String)> = Vec::new();
    scan(
        &store.conn,
        i64::MIN,
        i64::MAX,
        Cols::of(&[], &[L_ID, L_ADJUSTS, L_KIND, L_AMOUNT, L_CURRENCY]),
        |b| {
            for r in 0..b.rows() {
                if b.bytes(L_ADJUSTS, r) == Some(id.as_bytes()) {
                    by.push((
                        period_of(b.first),
                        text(b, L_ID, r)?.to_string(),
                        text(b, L_KIND, r)?.to_string(),
                        text(b, L_AMOUNT, r)?.to_string(),
                        text(b, L_CURRENCY, r)?.to_string(),
                    ));
                }
            }
            Ok(())
        },
    )?;
    if by.is_empty() {
        return Err(Error::Usage(format!(
            "no ledger entry or invoice line has the id {id:?}"
        )));
    }
    let mut o = format!(
        "{id}: no ledger entry; the entry a closed period's view computed, which its ledger never booked, and these entries adjust:\n"
    );
    for (period, e, kind, amount, cur) in by {
        let _ = writeln!(
            o,
            "  {e}: {kind} of {amount} {cur} in {} (settlement explain {e})",
            Period::from_key(period)
        );
    }
    Ok(o)
}

/// One stored event in words: its kind, time and the fields it has.
fn describe(b: &crate::events::Block, r: usize) -> String {
    use crate::events::*;
    let mut parts = vec![kind_name(b.int(E_KIND, r).unwrap_or(-1)).to_string()];
    parts.push(format!(
        "at {}",
        edge::time::Timestamp(b.int(E_TS, r).unwrap_or(0))
    ));
    let text = |parts: &mut Vec<String>, c: usize, n: &str| {
        if let Some(v) = b.bytes(c, r) {
            parts.push(format!("{n} {}", String::from_utf8_lossy(v)));
        }
    };
    for (c, n) in [
        (E_PROGRAM, "program"),
        (E_PARTNER, "partner"),
        (E_EVENT, "event"),
        (E_TXN_ID, "txn_id"),
        (E_AMOUNT, "amount"),
        (E_CURRENCY, "currency"),
        (E_CUSTOMER, "customer"),
        (E_COUPON, "coupon"),
        (E_CLICK_ID, "click_id"),
    ] {
        text(&mut parts, c, n);
    }
    if let Some(ct) = b.int(E_CLICK_TS, r) {
        parts.push(format!("click_ts {}", edge::time::Timestamp(ct)));
    }
    for (c, n) in [
        (E_ORIGINAL_TXN_ID, "original_txn_id"),
        (E_LOTS, "lots"),
        (E_INSTRUMENT, "instrument"),
        (E_COUNTRY, "country"),
        (E_STATUS, "status"),
    ] {
        text(&mut parts, c, n);
    }
    parts.join(", ")
}
