//! `settlement explain ID`: the rule, the inputs and the arithmetic of a
//! ledger entry or an invoice line; a payout reference explains its payout
//! entry, an event id or a `txn_id` lists the entries and invoice lines
//! that cite the event.

use crate::error::{Error, Result};
use crate::period::{date_of_day, Period};
use crate::store::{kind_name, Store};
use rusqlite::OptionalExtension;
use std::fmt::Write as _;

pub fn explain(store: &Store, id: &str) -> Result<String> {
    // an id pasted with the spaces around it
    let id = id.trim();
    if id.is_empty() {
        return Err(Error::Usage(
            "explain needs an id: a ledger entry's (`id` in ledger.csv), an invoice line's, \
             a payout reference, an event id or a txn_id"
                .into(),
        ));
    }
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
    let (period, sources, rule, calc, evidence) = if let Some((
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
                let run = if state == "closed" {
                    "the next run of the first open period".to_string()
                } else {
                    format!("the next run of {p}")
                };
                // a held entry released stands as booked: it only stops
                // being pending; the rest is booked anew
                let what = if d == "released" && kind != "rejected" {
                    format!("the entry stands as booked and is payable from the statement of {run}")
                } else {
                    format!("booked by {run}")
                };
                let _ = write!(
                    o,
                    ", {d} by {by}: {why}, after this period's draft ({what})"
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
        let evidence = crate::evidence::of_entry(
            store,
            &crate::evidence::Entry {
                id,
                period,
                partner: &partner,
                program: &program,
                kind: &kind,
                rule: &rule,
                sources: &sources,
                calc: &calc,
                currency: &cur,
            },
        )?;
        (period, sources, rule, calc, evidence)
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
        // a credit note: the lines of the sale its refund names
        for (line, p, due, cur) in credited(store, &source, id)? {
            let _ = writeln!(
                o,
                "  credits  invoice line {line} of {} ({due} {cur} due; settlement explain {line})",
                Period::from_key(p)
            );
        }
        // the discount is the most specific matching rule's; the line does
        // not keep which, the period's draft kept the program's rules
        let rules = program_rules(store, period, &program)?;
        if !rules.is_empty() {
            let _ = writeln!(
                o,
                "rules of program {program} in {} (the most specific that matches the sale wins):",
                Period::from_key(period)
            );
            for (rule, desc) in rules {
                let _ = writeln!(o, "  {rule}: {desc}");
            }
        }
        let evidence = crate::evidence::of_invoice_line(store, &partner)?;
        (period, source, String::new(), calc, evidence)
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
    if !evidence.is_empty() {
        let _ = writeln!(o, "evidence:");
        o.push_str(&evidence);
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
        return other_id(store, id);
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

/// An id that is neither an entry's nor what adjustments name: a payout
/// reference explains its payout entry; an event id, or a `txn_id` (its
/// conversions and the refunds naming it), lists the ledger entries and
/// invoice lines whose sources cite the events. Else exit 1.
fn other_id(store: &Store, id: &str) -> Result<String> {
    use crate::events::{self, Cols, E_ID, E_ORIGINAL_TXN_ID, E_TXN_ID};
    use crate::ledger_blocks::*;
    let c = &store.conn;
    // payouts.csv's reference is the payout entry's reason
    let mut payout: Option<String> = None;
    scan(
        c,
        i64::MIN,
        i64::MAX,
        Cols::of(&[], &[L_ID, L_KIND, L_REASON]),
        |b| {
            for r in 0..b.rows() {
                if b.bytes(L_KIND, r) == Some(b"payout")
                    && b.bytes(L_REASON, r) == Some(id.as_bytes())
                {
                    payout = Some(text(b, L_ID, r)?.to_string());
                }
            }
            Ok(())
        },
    )?;
    if let Some(e) = payout {
        return Ok(format!(
            "payout reference {id}: ledger entry {e}\n{}",
            explain(store, &e)?
        ));
    }
    // (event id, its words, and for a conversion its program and period)
    type Found = (String, String, Option<(String, i64, i64)>);
    let mut found: Vec<Found> = Vec::new();
    // a refund or chargeback: the reinstatements that name it
    let mut reinstated_by: Vec<String> = Vec::new();
    let how = if let Some((b, r)) = events::find(c, id)? {
        found.push((id.to_string(), describe(&b, r), conversion_of(&b, r)));
        if let (Some(b"refund" | b"chargeback"), Some(txn), Some(program)) = (
            b.bytes(events::E_EVENT, r),
            b.bytes(E_TXN_ID, r),
            b.bytes(events::E_PROGRAM, r),
        ) {
            reinstated_by = event_ids_where(
                store,
                Cols::of(
                    &[],
                    &[E_ID, events::E_EVENT, events::E_PROGRAM, E_ORIGINAL_TXN_ID],
                ),
                |x, i| {
                    x.bytes(E_ORIGINAL_TXN_ID, i) == Some(txn)
                        && x.bytes(events::E_EVENT, i) == Some(b"reinstate")
                        && x.bytes(events::E_PROGRAM, i) == Some(program)
                },
            )?;
        }
        "event"
    } else {
        let cols = Cols::of(&[], &[E_ID, E_TXN_ID, E_ORIGINAL_TXN_ID]);
        let ids = event_ids_where(store, cols, |b, r| {
            b.bytes(E_TXN_ID, r) == Some(id.as_bytes())
                || b.bytes(E_ORIGINAL_TXN_ID, r) == Some(id.as_bytes())
        })?;
        for e in ids {
            if let Some((b, r)) = events::find(c, &e)? {
                let conv = conversion_of(&b, r);
                found.push((e, describe(&b, r), conv));
            }
        }
        "txn_id"
    };
    if found.is_empty() {
        return Err(Error::Usage(format!(
            "no ledger entry, invoice line, payout reference, event or txn_id is {id:?} \
             (ids are in ledger.csv's `id`, references in payouts.csv)"
        )));
    }
    let ids: Vec<&str> = found.iter().map(|(e, _, _)| e.as_str()).collect();
    let citing = citing(store, &ids)?;
    let mut o = String::new();
    if how == "txn_id" {
        let _ = writeln!(o, "txn_id {id}: {} event(s)", found.len());
    }
    for ((e, words, conv), (_, rows)) in found.iter().zip(&citing) {
        let _ = writeln!(o, "event {e}: {words}");
        if rows.is_empty() {
            let _ = writeln!(
                o,
                "  no ledger entry or invoice line cites it{}",
                if conv.is_some() {
                    ": the periods run so far book nothing on this conversion (unattributed, \
                     matched by no rule of its program, a duplicate, or of a period not run yet)"
                } else {
                    ""
                }
            );
            // what could have attributed it, and the match keys it met, or
            // not: its program's rules as its period's draft recorded them
            if let Some((program, period, arrival)) = conv {
                let evidence = crate::evidence::of_event(store, e)?;
                if !evidence.is_empty() {
                    let _ = writeln!(o, "  evidence:");
                    for line in evidence.lines() {
                        let _ = writeln!(o, "  {line}");
                    }
                }
                // one that arrived after its period closed was evaluated,
                // as a late fact, by the runs after the close: the last
                // one's rules
                let own = Period::from_key(*period);
                let late = matches!(store.period_state(own)?,
                    Some((state, watermark, _)) if state == "closed" && *arrival > watermark);
                let p = if late {
                    c.query_row(
                        "SELECT MAX(period) FROM rules WHERE program = ?1",
                        [program],
                        |r| r.get::<_, Option<i64>>(0),
                    )?
                    .map_or(own, Period::from_key)
                } else {
                    own
                };
                let rules = program_rules(store, p.key(), program)?;
                if late {
                    let _ = writeln!(
                        o,
                        "  it arrived after {own} closed: late facts are evaluated by the runs after the close"
                    );
                }
                if rules.is_empty() {
                    let _ = writeln!(o, "  {p} has no draft with rules of program {program}");
                } else {
                    let _ = writeln!(o, "  the rules of program {program} when {p} was run:");
                    for (rule, desc) in rules {
                        let _ = writeln!(o, "    {rule}: {desc}");
                    }
                }
            }
        }
        for (period, le, kind, amount, cur, partner) in rows {
            let _ = writeln!(
                o,
                "  {le}: {kind} of {amount} {cur}, partner {partner}, in {} (settlement explain {le})",
                Period::from_key(*period)
            );
        }
    }
    // (with two reversals of one txn id, a reinstatement cancels the first
    // still standing: the words say which rule, not which one)
    for w in &reinstated_by {
        let _ = writeln!(
            o,
            "  reinstatement {w} names its txn_id (a dispute won or a refund that failed): it cancels the first refund or chargeback of that txn_id still standing; settlement explain {w}"
        );
    }
    Ok(o)
}

/// The invoice lines a credit note's refund (`source`) reverses: those
/// of the sales its `original_txn_id` names in its program, other than the
/// line `this`: (id, period, amount due, currency).
fn credited(store: &Store, source: &str, this: &str) -> Result<Vec<(String, i64, String, String)>> {
    use crate::events::{self, Cols, E_ID, E_ORIGINAL_TXN_ID, E_PROGRAM, E_TXN_ID};
    let c = &store.conn;
    let Some((b, r)) = events::find(c, source)? else {
        return Ok(Vec::new());
    };
    let (Some(orig), Some(program)) = (b.bytes(E_ORIGINAL_TXN_ID, r), b.bytes(E_PROGRAM, r)) else {
        return Ok(Vec::new());
    };
    let sales = event_ids_where(
        store,
        Cols::of(&[], &[E_ID, E_TXN_ID, E_PROGRAM, E_ORIGINAL_TXN_ID]),
        |s, i| {
            s.bytes(E_TXN_ID, i) == Some(orig)
                && s.bytes(E_PROGRAM, i) == Some(program)
                && s.bytes(E_ORIGINAL_TXN_ID, i).is_none()
        },
    )?;
    let ids: Vec<&str> = sales.iter().map(String::as_str).collect();
    Ok(citing(store, &ids)?
        .into_iter()
        .flat_map(|(_, rows)| rows)
        .filter(|(_, id, kind, ..)| kind == "invoice line" && id != this)
        .map(|(p, id, _, due, cur, _)| (id, p, due, cur))
        .collect())
}

/// The rules of `program` as the draft of period `period` (key) recorded
/// them: (rule id, description), in rule order.
fn program_rules(store: &Store, period: i64, program: &str) -> Result<Vec<(String, String)>> {
    let mut st = store.conn.prepare(
        "SELECT rule, description FROM rules WHERE period = ?1 AND program = ?2 ORDER BY rule",
    )?;
    let rules = st
        .query_map(rusqlite::params![period, program], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rules)
}

/// The ids of the stored events for which `keep(block, row)` holds, in
/// arrival order: a scan of every block, decoding `cols` (the id and what
/// `keep` reads).
fn event_ids_where(
    store: &Store,
    cols: crate::events::Cols,
    keep: impl Fn(&crate::events::Block, usize) -> bool,
) -> Result<Vec<String>> {
    use crate::events::{self, E_ID};
    let mut ids = Vec::new();
    events::scan(&store.conn, cols, "1", [], |b| {
        for r in 0..b.rows() {
            if keep(b, r) {
                if let Some(e) = b.bytes(E_ID, r) {
                    ids.push(String::from_utf8_lossy(e).into_owned());
                }
            }
        }
        Ok(())
    })?;
    Ok(ids)
}

/// An entry or invoice line that cites an event: (period, id, kind,
/// amount, currency, partner).
type Citing = (i64, String, String, String, String, String);

/// Per event id, the ledger entries and invoice lines whose sources cite
/// it, in ledger order.
fn citing(store: &Store, events: &[&str]) -> Result<Vec<(String, Vec<Citing>)>> {
    use crate::events::Cols;
    use crate::ledger_blocks::*;
    let c = &store.conn;
    let mut citing: Vec<(String, Vec<Citing>)> =
        events.iter().map(|e| (e.to_string(), Vec::new())).collect();
    let mut cited = |sources: &str, row: (i64, String, String, String, String, String)| {
        for (e, v) in citing.iter_mut() {
            if sources.split_whitespace().any(|s| s == e) {
                v.push(row.clone());
            }
        }
    };
    scan(
        c,
        i64::MIN,
        i64::MAX,
        Cols::of(
            &[],
            &[L_ID, L_PARTNER, L_KIND, L_AMOUNT, L_CURRENCY, L_SOURCES],
        ),
        |b| {
            for r in 0..b.rows() {
                let sources = text(b, L_SOURCES, r)?;
                if sources.is_empty() {
                    continue;
                }
                let t = |col| text(b, col, r).map(str::to_string);
                cited(
                    sources,
                    (
                        period_of(b.first),
                        t(L_ID)?,
                        t(L_KIND)?,
                        t(L_AMOUNT)?,
                        t(L_CURRENCY)?,
                        t(L_PARTNER)?,
                    ),
                );
            }
            Ok(())
        },
    )?;
    scan_in(
        c,
        INVOICES,
        i64::MIN,
        i64::MAX,
        Cols::of(&[], &[I_ID, I_PARTNER, I_AMOUNT_DUE, I_CURRENCY, I_SOURCE]),
        |b| {
            for r in 0..b.rows() {
                let t = |col| text(b, col, r).map(str::to_string);
                cited(
                    text(b, I_SOURCE, r)?,
                    (
                        period_of(b.first),
                        t(I_ID)?,
                        "invoice line".into(),
                        t(I_AMOUNT_DUE)?,
                        t(I_CURRENCY)?,
                        t(I_PARTNER)?,
                    ),
                );
            }
            Ok(())
        },
    )?;
    Ok(citing)
}

/// A conversion's program, period (key) and arrival, `None` for another
/// record.
fn conversion_of(b: &crate::events::Block, r: usize) -> Option<(String, i64, i64)> {
    use crate::events::*;
    if b.int(E_KIND, r) != Some(crate::store::KIND_CONVERSION) {
        return None;
    }
    let program = String::from_utf8_lossy(b.bytes(E_PROGRAM, r)?).into_owned();
    Some((program, Period::of_ms(b.int(E_TS, r)?).key(), b.arrival(r)))
}

/// One stored event in words: its kind, time and the fields it has.
pub(crate) fn describe(b: &crate::events::Block, r: usize) -> String {
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
    if b.int(E_BOT, r) == Some(1) {
        parts.push("bot".into());
    }
    for (c, n) in [
        (E_ORIGINAL_TXN_ID, "original_txn_id"),
        (E_LOTS, "lots"),
        (E_INSTRUMENT, "instrument"),
        (E_COUNTRY, "country"),
        (E_STATUS, "status"),
        (E_EMAIL_HASH, "email_hash"),
        (E_SOURCE, "source"),
    ] {
        text(&mut parts, c, n);
    }
    for (c, n) in [(E_APPROVED_AT, "approved_at"), (E_EXPIRES_AT, "expires_at")] {
        if let Some(t) = b.int(c, r) {
            parts.push(format!("{n} {}", edge::time::Timestamp(t)));
        }
    }
    parts.join(", ")
}
