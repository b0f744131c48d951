//! What earlier periods hand to the one a run drafts: the balances their
//! statements carried out, and what they booked that is still pending on
//! the period's last day (`hold_days`, or held for an operator's review).

use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::Cols;
use crate::money::fmt_decimal;
use crate::period::Period;
use crate::run::dec;
use crate::store::{pos_base, Store};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashSet};

/// Per `(partner, program)`, the balance the period before `p` carried
/// out. A balance is paid in the currency it was booked in, under its
/// program's rules: one whose program left the config, or now pays in
/// another currency, is refused.
pub(crate) fn carried_in(
    store: &Store,
    cfg: &Config,
    p: Period,
) -> Result<BTreeMap<(String, String), Decimal>> {
    let prev: Option<i64> = store.conn.query_row(
        "SELECT MAX(period) FROM periods WHERE period < ?1",
        [p.key()],
        |r| r.get(0),
    )?;
    let mut carried_in = BTreeMap::new();
    if let Some(q) = prev {
        let mut st = store.conn.prepare(
            "SELECT partner, program, carried_out, currency FROM statements WHERE period = ?1",
        )?;
        let mut rows = st.query([q])?;
        while let Some(r) = rows.next()? {
            let (partner, program): (String, String) = (r.get(0)?, r.get(1)?);
            let v = dec(&r.get::<_, String>(2)?)?;
            let currency: String = r.get(3)?;
            // a balance is paid in the currency it was booked in, under
            // its program's rules: a program gone from the config, or one
            // whose currency changed, would pay it in another currency
            if !v.is_zero() {
                let now = cfg.program(&program).map(|g| g.currency.code());
                if now != Some(currency.as_str()) {
                    return Err(Error::Usage(format!(
                        "{}: partner {partner} carries {} {currency} in program {program} from {}, but {}: \
                         keep the program, in {currency}, until its balances are paid or written off",
                        cfg.path.display(),
                        fmt_decimal(v, edge::currency::Currency::parse(&currency).unwrap_or(cfg.currency)),
                        Period::from_key(q),
                        match now {
                            None => "the program is not in it".to_string(),
                            Some(c) => format!("the program now pays in {c}"),
                        }
                    )));
                }
            }
            carried_in.insert((partner, program), v);
        }
    }
    Ok(carried_in)
}

/// Per `(partner, program)`, what earlier periods booked that is still
/// pending on `p`'s last day: commissions, overrides, MDF and late
/// adjustments within `hold_days` of it, with their clawbacks, and entries
/// held for review that no operator has released.
pub(crate) fn earlier_pending(
    store: &Store,
    cfg: &Config,
    reviews: &rustc_hash::FxHashMap<String, crate::fraud::Review>,
    p: Period,
) -> Result<BTreeMap<(String, String), Decimal>> {
    let mut earlier_pending: BTreeMap<(String, String), Decimal> = BTreeMap::new();
    // the commissions and overrides of earlier periods still pending
    let mut pending_ids: HashSet<String> = HashSet::new();
    if cfg.hold_days > 0 {
        let threshold = p.last_day() - cfg.hold_days; // held when event_day > threshold
        let lo = Period::of_day(threshold + 1);
        use crate::ledger_blocks::{
            text, L_ADJUSTS, L_AMOUNT, L_EVENT_DAY, L_ID, L_KIND, L_PARTNER, L_PROGRAM,
        };
        // and the clawbacks of earlier periods (on or after the day of what
        // they reverse, so in these periods too): those of a pending entry
        // are pending with it
        let mut clawbacks: Vec<((String, String), String, Decimal)> = Vec::new();
        crate::ledger_blocks::scan(
            &store.conn,
            pos_base(lo),
            pos_base(p),
            Cols::of(
                &[L_EVENT_DAY],
                &[L_ID, L_PARTNER, L_PROGRAM, L_KIND, L_AMOUNT, L_ADJUSTS],
            ),
            |b| {
                for r in 0..b.rows() {
                    let kind = text(b, L_KIND, r)?;
                    if !matches!(
                        kind,
                        "commission" | "override" | "mdf" | "adjustment" | "clawback"
                    ) {
                        continue;
                    }
                    let key = || -> Result<(String, String)> {
                        Ok((
                            text(b, L_PARTNER, r)?.to_string(),
                            text(b, L_PROGRAM, r)?.to_string(),
                        ))
                    };
                    // a clawback by what it reverses, whatever its own
                    // day (a refund dated before its sale)
                    if kind == "clawback" {
                        let amount = dec(text(b, L_AMOUNT, r)?)?;
                        clawbacks.push((key()?, text(b, L_ADJUSTS, r)?.to_string(), amount));
                        continue;
                    }
                    if b.int(L_EVENT_DAY, r).is_none_or(|d| d <= threshold) {
                        continue;
                    }
                    let (key, amount) = (key()?, dec(text(b, L_AMOUNT, r)?)?);
                    match kind {
                        "commission" | "override" => {
                            pending_ids.insert(text(b, L_ID, r)?.to_string());
                        }
                        // a commission or override first booked late, as
                        // an adjustment: its clawbacks name the entry
                        "adjustment" => {
                            pending_ids.insert(text(b, L_ADJUSTS, r)?.to_string());
                        }
                        _ => {}
                    }
                    let s = earlier_pending.entry(key).or_default();
                    *s = s.checked_add(amount).ok_or(crate::money::Overflow)?;
                }
                Ok(())
            },
        )?;
        for (key, reverses, amount) in clawbacks {
            if pending_ids.contains(&reverses) {
                let s = earlier_pending.entry(key).or_default();
                *s = s.checked_add(amount).ok_or(crate::money::Overflow)?;
            }
        }
    }
    held_pending(store, cfg, reviews, p, &pending_ids, &mut earlier_pending)?;
    Ok(earlier_pending)
}

/// Held entries of earlier periods stay pending until an operator decides
/// (a rejected one stays pending until its period's run has turned it into
/// a rejection, or, closed, until the reversal in the next open period).
/// Entries the hold_days query already counts are not counted twice.
fn held_pending(
    store: &Store,
    cfg: &Config,
    reviews: &rustc_hash::FxHashMap<String, crate::fraud::Review>,
    p: Period,
    pending_ids: &HashSet<String>,
    pending: &mut BTreeMap<(String, String), Decimal>,
) -> Result<()> {
    let closed_until = store.last_closed()?.map_or(0, |h| pos_base(h.next()));
    let threshold = p.last_day() - cfg.hold_days;
    let lo = pos_base(Period::of_day(threshold + 1));
    let mut st = store.conn.prepare(
        "SELECT pos, partner, program, amount, kind, sources, event_day, adjusts FROM ledger
         WHERE pos < ?1 AND reason LIKE 'held:fraud:%'",
    )?;
    let mut rows = st.query([pos_base(p)])?;
    while let Some(r) = rows.next()? {
        let pos: i64 = r.get(0)?;
        let kind: String = r.get(4)?;
        let sources: String = r.get(5)?;
        let day: i64 = r.get(6)?;
        let event = crate::fraud::review_event(&kind, &sources);
        let still_held = match reviews.get(&event) {
            None => true,
            Some(rv) => !rv.release && pos >= closed_until,
        };
        // what the scan of pending entries counted already
        let counted = cfg.hold_days > 0
            && pos >= lo
            && match kind.as_str() {
                "commission" | "override" | "mdf" | "adjustment" => day > threshold,
                "clawback" => pending_ids.contains(r.get_ref(7)?.as_str_or_null()?.unwrap_or("")),
                _ => false,
            };
        if still_held && !counted {
            let v: String = r.get(3)?;
            let s = pending.entry((r.get(1)?, r.get(2)?)).or_default();
            *s = s.checked_add(dec(&v)?).ok_or(crate::money::Overflow)?;
        }
    }
    Ok(())
}
