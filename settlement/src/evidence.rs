//! The records behind an entry's decision, for `settlement explain`: the
//! partner's registry row, the click a conversion names, the coupon and
//! deal registrations that attributed it, the partners an override climbs
//! through, and the entries a top-up summed or a cap counted.
//!
//! The registry is the one stored now (a run reads the registry as it is
//! at run time); the events are the store's, which never change.

use crate::error::Result;
use crate::events::{self, Cols};
use crate::ledger_blocks::{self as lb, text};
use crate::period::Period;
use crate::store::Store;
use edge::time::Timestamp;
use rusqlite::OptionalExtension;
use rust_decimal::Decimal;
use std::fmt::Write as _;

/// At most this many entries are listed of what a top-up summed or a cap
/// counted; the rest are counted.
const LISTED: usize = 8;

/// A ledger entry, what the evidence needs of it.
pub struct Entry<'a> {
    pub id: &'a str,
    pub period: i64,
    pub partner: &'a str,
    pub program: &'a str,
    pub kind: &'a str,
    pub rule: &'a str,
    pub sources: &'a str,
    pub calc: &'a str,
    pub currency: &'a str,
}

/// The evidence lines of an entry (each indented by two spaces), empty
/// when it has none (a payout, a write-off).
pub fn of_entry(store: &Store, e: &Entry) -> Result<String> {
    let mut o = String::new();
    if !matches!(
        e.kind,
        "commission" | "override" | "capped" | "rejected" | "minimum_topup" | "mdf"
    ) {
        return Ok(o);
    }
    registry(store, e.partner, &mut o)?;
    if e.kind == "override" {
        override_chain(store, e, &mut o)?;
    }
    for s in e.sources.split_whitespace() {
        conversion(store, s, e.calc, &mut o)?;
    }
    match e.kind {
        "minimum_topup" => summed(store, e, &mut o)?,
        "capped" => cap_counted(store, e, &mut o)?,
        _ => {}
    }
    Ok(o)
}

/// A conversion's evidence when no entry cites it: the click, coupon and
/// deal registrations that could have attributed it.
pub fn of_event(store: &Store, id: &str) -> Result<String> {
    let mut o = String::new();
    conversion(store, id, "", &mut o)?;
    Ok(o)
}

/// An invoice line's evidence: its partner's registry row (the tier a
/// discount rule matches on).
pub fn of_invoice_line(store: &Store, partner: &str) -> Result<String> {
    let mut o = String::new();
    registry(store, partner, &mut o)?;
    Ok(o)
}

/// A partner's registry row as stored now: (program, parent, tier,
/// status, history as `[[ms, status], ...]`, email hash).
type Row = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn partner_row(store: &Store, partner: &str) -> Result<Option<Row>> {
    Ok(store
        .conn
        .query_row(
            "SELECT program, parent, tier, status, history, email_hash FROM partners WHERE id = ?1",
            [partner],
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
        .optional()?)
}

/// `partner P (registry now): program, tier, parent, status and its
/// history, email hash`.
fn registry(store: &Store, partner: &str, o: &mut String) -> Result<()> {
    if partner.is_empty() || partner == "-" {
        return Ok(());
    }
    let Some((program, parent, tier, status, history, email)) = partner_row(store, partner)? else {
        let _ = writeln!(o, "  partner {partner}: not in the registry");
        return Ok(());
    };
    let _ = write!(
        o,
        "  partner {partner} (the registry now): program {program}"
    );
    let _ = write!(o, ", tier {}", tier.as_deref().unwrap_or("none"));
    let _ = write!(o, ", parent {}", parent.as_deref().unwrap_or("none"));
    let _ = write!(o, ", status {}", status.as_deref().unwrap_or("none"));
    let steps: Vec<(i64, String)> = history
        .as_deref()
        .and_then(|h| serde_json::from_str(h).ok())
        .unwrap_or_default();
    if !steps.is_empty() {
        let h: Vec<String> = steps
            .iter()
            .map(|(ms, s)| format!("{s} from {}", Timestamp(*ms)))
            .collect();
        let _ = write!(o, " (history: {})", h.join(", "));
    }
    if let Some(h) = email {
        let _ = write!(o, ", email_hash {h}");
    }
    let _ = writeln!(o);
    Ok(())
}

/// An override's way up: the partner whose commission it derives from
/// (the commission entry of the same period citing the same event) and
/// each parent above it in the registry.
fn override_chain(store: &Store, e: &Entry, o: &mut String) -> Result<()> {
    let Some(src) = e.sources.split_whitespace().next() else {
        return Ok(());
    };
    let (lo, hi) = period_range(e.period);
    let mut child: Option<(String, String)> = None;
    lb::scan(
        &store.conn,
        lo,
        hi,
        Cols::of(&[], &[lb::L_ID, lb::L_PARTNER, lb::L_KIND, lb::L_SOURCES]),
        |b| {
            for r in 0..b.rows() {
                if child.is_none()
                    && b.bytes(lb::L_KIND, r) == Some(b"commission")
                    && text(b, lb::L_SOURCES, r)?
                        .split_whitespace()
                        .any(|s| s == src)
                {
                    child = Some((
                        text(b, lb::L_PARTNER, r)?.to_string(),
                        text(b, lb::L_ID, r)?.to_string(),
                    ));
                }
            }
            Ok(())
        },
    )?;
    let Some((child, entry)) = child else {
        return Ok(());
    };
    let mut chain = vec![child.clone()];
    let mut at = child.clone();
    // a registry loop (a partner its own ancestor) ends the walk
    while chain.len() < 8 {
        let Some(parent) = partner_row(store, &at)?.and_then(|r| r.1) else {
            break;
        };
        if chain.contains(&parent) {
            break;
        }
        chain.push(parent.clone());
        at = parent;
    }
    let _ = writeln!(
        o,
        "  override of {child}'s commission {entry}; parents in the registry now: {}",
        chain.join(" -> ")
    );
    Ok(())
}

/// The records that attributed a conversion: the click its `click_id`
/// names, the coupon it carries, the deal registrations of its customer
/// (when `calc`, the entry's words, says a deal attributed it, or when no
/// entry cites it: `calc` empty).
fn conversion(store: &Store, id: &str, calc: &str, o: &mut String) -> Result<()> {
    use crate::events::*;
    let c = &store.conn;
    let Some((b, r)) = events::find(c, id)? else {
        return Ok(());
    };
    if b.int(E_KIND, r) != Some(KIND_CONVERSION) {
        return Ok(());
    }
    let get = |col| {
        b.bytes(col, r)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let (program, customer, coupon) = (get(E_PROGRAM), get(E_CUSTOMER), get(E_COUPON));
    if let Some(click) = get(E_CLICK_ID) {
        let at = b.int(E_CLICK_TS, r);
        let clicks = clicks_of(store, &click, at)?;
        if clicks.is_empty() {
            let _ = writeln!(
                o,
                "  click {click} of {id}: no click record in the store (the conversion carries the edge's evidence{})",
                if b.int(E_BOT, r) == Some(1) {
                    ", marked bot"
                } else {
                    ""
                }
            );
        }
        for (cid, words) in clicks {
            let _ = writeln!(o, "  click {click} of {id}: record {cid}: {words}");
        }
    }
    if let (Some(program), Some(code)) = (&program, &coupon) {
        let row: Option<(String, Option<i64>)> = c
            .query_row(
                "SELECT partner, created_at FROM coupons WHERE program = ?1 AND code = ?2",
                [program, code],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            Some((partner, at)) => {
                let _ = write!(
                    o,
                    "  coupon {code} of {id}: registered to {partner} in program {program}"
                );
                if let Some(at) = at {
                    let _ = write!(o, " on {}", Timestamp(at));
                }
                let _ = writeln!(o);
            }
            None => {
                let _ = writeln!(
                    o,
                    "  coupon {code} of {id}: not registered in program {program}"
                );
            }
        }
    }
    // words::method_into names the conversion that locked the customer
    if let Some(rest) = calc.split("lifetime lock, set by ").nth(1) {
        let by = rest.split(' ').next().unwrap_or_default();
        if let Some((lb_, lr)) = events::find(c, by)? {
            let _ = writeln!(
                o,
                "  lifetime lock of {}: set by {by} (the customer's first attributed conversion in the program, what `months` counts from): {}",
                customer.as_deref().unwrap_or("the customer"),
                crate::explain::describe(&lb_, lr)
            );
        }
    }
    if calc.contains("attributed by deal registration") || calc.is_empty() {
        if let (Some(program), Some(customer)) = (&program, &customer) {
            let ts = b.int(E_TS, r).unwrap_or(i64::MAX);
            let deals = deals_of(store, program, customer, ts)?;
            if !deals.is_empty() {
                let _ = writeln!(
                    o,
                    "  deal registrations of {customer} in {program} up to {id} (the earliest approved one registered within the program's deal_days wins):"
                );
            }
            for (did, words) in deals {
                let _ = writeln!(o, "    {did}: {words}");
            }
        }
    }
    Ok(())
}

/// The click records (kind `click`) whose `click_id` is `click` (or whose
/// id is, for a click without one): (id, words). `at`: the conversion's
/// `click_ts`, which narrows the blocks read to those spanning it.
fn clicks_of(store: &Store, click: &str, at: Option<i64>) -> Result<Vec<(String, String)>> {
    use crate::events::*;
    let mut found = Vec::new();
    let cols = Cols::of(
        &[E_KIND, E_TS, E_BOT],
        &[E_ID, E_PROGRAM, E_PARTNER, E_LINK, E_CLICK_ID],
    );
    let each = |b: &Block, found: &mut Vec<(String, String)>| {
        for r in 0..b.rows() {
            if b.int(E_KIND, r) != Some(KIND_CLICK) {
                continue;
            }
            let key = b.bytes(E_CLICK_ID, r).or(b.bytes(E_ID, r));
            if key != Some(click.as_bytes()) {
                continue;
            }
            let t = |col| {
                b.bytes(col, r)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            let mut w = format!("at {}", Timestamp(b.int(E_TS, r).unwrap_or(0)));
            for (col, n) in [
                (E_PROGRAM, "program"),
                (E_PARTNER, "partner"),
                (E_LINK, "link"),
            ] {
                if let Some(v) = t(col) {
                    let _ = write!(w, ", {n} {v}");
                }
            }
            w.push_str(if b.int(E_BOT, r) == Some(1) {
                ", bot (its only evidence makes the entry rejected: bot_click)"
            } else {
                ", not a bot"
            });
            found.push((t(E_ID).unwrap_or_default(), w));
        }
    };
    match at {
        Some(ts) => events::scan(
            &store.conn,
            cols,
            "min_ts <= ?1 AND max_ts >= ?1",
            [ts],
            |b| {
                each(b, &mut found);
                Ok(())
            },
        )?,
        None => events::scan(&store.conn, cols, "1", [], |b| {
            each(b, &mut found);
            Ok(())
        })?,
    }
    Ok(found)
}

/// The deal registrations (kind `deal`) of `customer` in `program`
/// registered at or before `ts`, earliest first: (id, words).
fn deals_of(
    store: &Store,
    program: &str,
    customer: &str,
    ts: i64,
) -> Result<Vec<(String, String)>> {
    use crate::events::*;
    let mut found: Vec<(i64, String, String)> = Vec::new();
    // compared as attribution compares them (the edge's customer key)
    let want = edge::deal::customer_key(customer);
    events::scan(
        &store.conn,
        Cols::of(
            &[E_KIND, E_TS, E_APPROVED_AT, E_EXPIRES_AT],
            &[E_ID, E_PROGRAM, E_PARTNER, E_CUSTOMER, E_STATUS],
        ),
        "fact_min_ts <= ?1",
        [ts],
        |b| {
            for r in 0..b.rows() {
                if b.int(E_KIND, r) != Some(KIND_DEAL)
                    || b.bytes(E_PROGRAM, r) != Some(program.as_bytes())
                    || b.bytes(E_CUSTOMER, r).is_none_or(|c| {
                        edge::deal::customer_key(&String::from_utf8_lossy(c)) != want
                    })
                {
                    continue;
                }
                let at = b.int(E_TS, r).unwrap_or(0);
                if at > ts {
                    continue;
                }
                let t = |col| {
                    b.bytes(col, r)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                };
                let mut w = format!("registered {}", Timestamp(at));
                if let Some(p) = t(E_PARTNER) {
                    let _ = write!(w, " by {p}");
                }
                let _ = write!(w, ", status {}", t(E_STATUS).as_deref().unwrap_or("none"));
                if let Some(a) = b.int(E_APPROVED_AT, r) {
                    let _ = write!(w, ", approved {}", Timestamp(a));
                }
                if let Some(x) = b.int(E_EXPIRES_AT, r) {
                    let _ = write!(w, ", expires {}", Timestamp(x));
                }
                found.push((at, t(E_ID).unwrap_or_default(), w));
            }
            Ok(())
        },
    )?;
    found.sort();
    Ok(found.into_iter().map(|(_, id, w)| (id, w)).collect())
}

/// A top-up's sum: the partner's commissions and overrides of the
/// program in the period, listed (the first [`LISTED`]) and totalled.
fn summed(store: &Store, e: &Entry, o: &mut String) -> Result<()> {
    let rows = same_partner(store, e, |kind, _| {
        matches!(kind, b"commission" | b"override")
    })?;
    // the amounts are written to the currency's minor unit: their sum is
    let total: Decimal = rows
        .iter()
        .filter_map(|r| r.1.parse::<Decimal>().ok())
        .sum();
    let _ = writeln!(
        o,
        "  summed by the top-up: the commissions and overrides of {} in {} ({} {}, {} {})",
        e.partner,
        Period::from_key(e.period),
        rows.len(),
        if rows.len() == 1 { "entry" } else { "entries" },
        total,
        e.currency
    );
    list(&rows, o);
    Ok(())
}

/// A capped entry's count: the partner's commissions of the same rule in
/// the period, which the cap counted.
fn cap_counted(store: &Store, e: &Entry, o: &mut String) -> Result<()> {
    let rule = e.rule.as_bytes();
    let rows = same_partner(store, e, |kind, r| kind == b"commission" && r == rule)?;
    let _ = writeln!(
        o,
        "  counted by the cap: {} commission {} of rule {} for {} in {}",
        rows.len(),
        if rows.len() == 1 { "entry" } else { "entries" },
        e.rule,
        e.partner,
        Period::from_key(e.period)
    );
    list(&rows, o);
    Ok(())
}

/// The entries of the period of `e`'s partner and program for which
/// `keep(kind, rule)` holds, in ledger order: (id, amount, kind, sources).
fn same_partner(
    store: &Store,
    e: &Entry,
    keep: impl Fn(&[u8], &[u8]) -> bool,
) -> Result<Vec<(String, String, String, String)>> {
    let (lo, hi) = period_range(e.period);
    let mut rows = Vec::new();
    lb::scan(
        &store.conn,
        lo,
        hi,
        Cols::of(
            &[],
            &[
                lb::L_ID,
                lb::L_PARTNER,
                lb::L_PROGRAM,
                lb::L_KIND,
                lb::L_AMOUNT,
                lb::L_RULE,
                lb::L_SOURCES,
            ],
        ),
        |b| {
            for r in 0..b.rows() {
                if b.bytes(lb::L_PARTNER, r) != Some(e.partner.as_bytes())
                    || b.bytes(lb::L_PROGRAM, r) != Some(e.program.as_bytes())
                    || b.bytes(lb::L_ID, r) == Some(e.id.as_bytes())
                {
                    continue;
                }
                let kind = b.bytes(lb::L_KIND, r).unwrap_or_default();
                if !keep(kind, b.bytes(lb::L_RULE, r).unwrap_or_default()) {
                    continue;
                }
                rows.push((
                    text(b, lb::L_ID, r)?.to_string(),
                    text(b, lb::L_AMOUNT, r)?.to_string(),
                    text(b, lb::L_KIND, r)?.to_string(),
                    text(b, lb::L_SOURCES, r)?.to_string(),
                ));
            }
            Ok(())
        },
    )?;
    Ok(rows)
}

fn list(rows: &[(String, String, String, String)], o: &mut String) {
    for (id, amount, kind, sources) in rows.iter().take(LISTED) {
        let _ = writeln!(o, "    {id}: {kind} of {amount} on {sources}");
    }
    if rows.len() > LISTED {
        let _ = writeln!(
            o,
            "    and {} more (ledger.csv, this partner's rows)",
            rows.len() - LISTED
        );
    }
}

/// The ledger positions of a period's entries: `[from, to)`.
fn period_range(period: i64) -> (i64, i64) {
    (period * 10_000_000_000, (period + 1) * 10_000_000_000)
}
