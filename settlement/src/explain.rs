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
    let row: Option<Row> = c
        .query_row(
            "SELECT period, partner, program, kind, amount, currency, rule, sources, event_day, reason, calc, adjusts
             FROM ledger WHERE id = ?1 ORDER BY pos DESC LIMIT 1",
            [id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                ))
            },
        )
        .optional()?;
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
        let _ = writeln!(
            o,
            "  date     {} (the date holds count from)",
            date_of_day(day)
        );
        if !reason.is_empty() {
            let _ = writeln!(o, "  reason   {reason}");
        }
        if !adjusts.is_empty() {
            let _ = writeln!(o, "  derives from entry {adjusts}");
        }
        let fraud: Option<(i64, String, String, String, String, String)> = c
            .query_row(
                "SELECT score, reasons, action, decision, decided_by, why FROM fraud
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
                    ))
                },
            )
            .optional()?;
        if let Some((score, reasons, action, decision, by, why)) = fraud {
            let _ = write!(o, "  fraud    score {score} ({reasons}), action {action}");
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
            let _ = writeln!(o);
        }
        (period, sources, rule, calc)
    } else {
        type Inv = (
            i64,
            String,
            String,
            String,
            String,
            String,
            String,
            String,
            String,
            String,
        );
        let inv: Option<Inv> = c
            .query_row(
                "SELECT period, partner, program, txn_id, list_amount, discount_percent, amount_due, currency, source, calc
                 FROM invoices WHERE id = ?1 ORDER BY pos DESC LIMIT 1",
                [id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                    ))
                },
            )
            .optional()?;
        let Some((period, partner, program, txn, list, disc, due, cur, source, calc)) = inv else {
            return Err(Error::Usage(format!(
                "no ledger entry or invoice line has the id {id:?}"
            )));
        };
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
        let ev = c
            .query_row(
                "SELECT kind, ts, program, partner, event, txn_id, amount, currency, customer, coupon, click_id,
                        click_ts, original_txn_id, lots, instrument, country, status
                 FROM events WHERE id = ?1",
                [s],
                |r| {
                    let mut parts = vec![kind_name(r.get(0)?).to_string()];
                    let ts: i64 = r.get(1)?;
                    parts.push(format!("at {}", edge::time::Timestamp(ts)));
                    let names = [
                        "program", "partner", "event", "txn_id", "amount", "currency", "customer", "coupon",
                        "click_id",
                    ];
                    for (i, n) in names.iter().enumerate() {
                        if let Some(v) = r.get::<_, Option<String>>(2 + i)? {
                            parts.push(format!("{n} {v}"));
                        }
                    }
                    if let Some(ct) = r.get::<_, Option<i64>>(11)? {
                        parts.push(format!("click_ts {}", edge::time::Timestamp(ct)));
                    }
                    for (i, n) in ["original_txn_id", "lots", "instrument", "country", "status"].iter().enumerate() {
                        if let Some(v) = r.get::<_, Option<String>>(12 + i)? {
                            parts.push(format!("{n} {v}"));
                        }
                    }
                    Ok(parts.join(", "))
                },
            )
            .optional()?;
        let _ = writeln!(
            o,
            "  {s}: {}",
            ev.unwrap_or_else(|| "(not in the store)".into())
        );
    }
    let _ = writeln!(o, "arithmetic: {calc}");
    Ok(o)
}
