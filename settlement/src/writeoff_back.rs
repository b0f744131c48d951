//! What comes back to a closed period that wrote its loss off takes the
//! write-off back.
//!
//! Without `negative_carryover`, a period whose matured balance ends
//! negative writes the loss off: the partner keeps money its reversals took
//! back on paper. What later restates that period upwards (a late sale, a
//! release on review) would, had it come on time, have made the loss
//! smaller, not been paid on top of it. A reinstatement (a dispute won, a
//! refund that failed) cancels a reversal as if it had never been: it gives
//! back to the period whose ledger booked that reversal (its own, or the
//! later one that booked it late), whose write-off the reversal may have
//! caused.
//!
//! So for each closed period `P` with a write-off `W` (per partner and
//! program), `G` is everything booked for `P` since its close: the late
//! facts and review decisions restating it (either sign; held ones too, as
//! held entries count in a balance, and the rejection of a held entry), and
//! the reinstatements of the reversals it booked. The write-off taken back
//! in all is `max(0, min(W, G))`; each run books the change of that figure
//! since the earlier runs (reason `writeoff_taken_back_P`): negative when
//! more came back, positive (given back) when a later fact took it away
//! again. A late loss of `P` is charged when it comes, by the period that
//! books it.

use crate::engine::{hash_parts, hex_id, Calc, Output};
use crate::error::Result;
use crate::events::Cols;
use crate::facts::NONE;
use crate::ledger::{entry_id, Entry, EntryKind};
use crate::ledger_blocks::{
    text, L_ADJUSTS, L_AMOUNT, L_EVENT_DAY, L_ID, L_KIND, L_PARTNER, L_PROGRAM, L_REASON,
};
use crate::money::fmt_decimal;
use crate::period::Period;
use crate::store::{pos_base, Store};
use crate::words::Words;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap, HashSet};

/// A reinstatement among the engine's entries: its reversal's own period,
/// and when and under which ledger id that reversal was booked.
struct Reinstated {
    reversal_at: Period,
    /// When the reversal arrived (to find the period that booked it).
    arrival: i64,
    /// The ledger id of the reversal's clawback of the same entry.
    reversal: String,
}

/// What this run gives back to (or takes from) one closed period of one
/// partner and program.
#[derive(Default)]
struct Back {
    /// This run's net.
    net: Decimal,
    /// The entries and events of this run that do (ids).
    items: Vec<String>,
    /// The events they cite.
    sources: Vec<String>,
    /// Their positive and negative parts by the day their hold runs from
    /// (magnitudes): what is booked against them is held as they are.
    up: BTreeMap<i64, Decimal>,
    down: BTreeMap<i64, Decimal>,
}

/// From the closed ledgers: written off, given back since, taken back since.
#[derive(Default, Clone, Copy)]
struct Past {
    written: Decimal,
    given: Decimal,
    taken: Decimal,
}

/// The reason of an entry taking back (or giving back) part of the
/// write-off of `p`.
fn reason(p: Period) -> String {
    format!("writeoff_taken_back_{p}")
}

/// What classifies the ledger's entries by the closed period they give
/// back to.
#[derive(Default)]
struct Ctx {
    /// A reinstatement's ledger id -> the period that booked its reversal.
    reinstated: HashMap<String, Period>,
    /// The reinstatements whose reversal this run books (the two net in
    /// this period) or was held for review when booked: they give nothing
    /// back to another period.
    apart: HashSet<String>,
    /// A reinstatement's ledger id -> its reversal's own period (when the
    /// reversal came late for it, and so was a late loss of it).
    late_of: HashMap<String, Period>,
    /// The ledger ids of the reversals reinstatements cancel.
    cancelled: HashSet<String>,
}

/// The closed period an entry of the ledger gives back to (or takes from),
/// if any: a reinstatement (on time: its clawback; late or released: its
/// adjustment) to the period that booked its reversal, as if that reversal
/// had never been (a late reversal so cancelled is no late fact of its own
/// period); a late fact's or review decision's adjustment to the period its
/// reason names; a late fact held for review (counted like an entry held on
/// time, in the balance), a conversion released on review after its
/// period's close, and the reversal of a held entry rejected on review, to
/// the period of the entry they date by.
fn gives_to(
    kind: &str,
    id: &str,
    reason: &str,
    adjusts: &str,
    event_day: i64,
    ctx: &Ctx,
) -> Option<Period> {
    match kind {
        "clawback" if !reason.starts_with("held:") => ctx.reinstated.get(id).copied(),
        "adjustment" => {
            if ctx.apart.contains(adjusts) {
                return None;
            }
            if let Some(&at) = ctx.reinstated.get(adjusts) {
                let restates = ["late_facts_", "restated_", "released:"]
                    .iter()
                    .any(|w| reason.starts_with(w));
                return restates.then_some(at);
            }
            if ctx.cancelled.contains(adjusts) {
                return None;
            }
            if ["held:fraud:", "fraud:", "released:"]
                .iter()
                .any(|w| reason.starts_with(w))
            {
                return Some(Period::of_day(event_day));
            }
            reason
                .strip_prefix("late_facts_")
                .or_else(|| reason.strip_prefix("restated_"))
                .and_then(Period::parse)
        }
        _ => None,
    }
}

/// The entries of period `p` that take back (or give back) write-offs of
/// closed periods, for what this run's entries (`own`: adjustments; and the
/// engine's reinstatements of `p`) give back to them.
pub fn taken_back(
    store: &Store,
    words: &Words,
    out: &Output,
    own: &[Entry],
    p: Period,
) -> Result<Vec<Entry>> {
    let f = words.eng.facts;
    // every reinstatement the engine books up to `p`, by its ledger id
    let mut found: Vec<(usize, Reinstated)> = Vec::new();
    for (i, e) in out.entries.iter().enumerate() {
        let Calc::Clawback(b) = &e.calc else {
            continue;
        };
        if b.6 == NONE || e.period > p {
            continue;
        }
        let (r, o) = (&f.convs[b.6 as usize], &f.convs[b.5 as usize]);
        found.push((
            i,
            Reinstated {
                reversal_at: Period::of_ms(r.ts.max(o.ts)),
                // booked once both it and its sale had come
                arrival: i64::from(r.arrival.max(o.arrival)),
                reversal: hex_id("le_", &hash_parts(&[b"clawback", f.id(r).as_bytes(), &b.2])),
            },
        ));
    }
    // a reversal held for review when booked was never in a written-off
    // balance: its reinstatement gives nothing back to a write-off (the
    // held rows read once: they are few, and kept as rows of `ledger`)
    let mut held: HashSet<String> = HashSet::new();
    if found.iter().any(|(_, r)| r.reversal_at < p) {
        let mut st = store.conn.prepare(
            "SELECT id, adjusts FROM ledger WHERE pos < ?1 AND reason LIKE 'held:fraud:%'",
        )?;
        let mut rows = st.query([pos_base(p)])?;
        while let Some(r) = rows.next()? {
            held.insert(r.get(0)?);
            if let Some(a) = r.get::<_, Option<String>>(1)? {
                held.insert(a);
            }
        }
    }
    // the period whose ledger booked a reversal: its own, when it came
    // before that period closed; else the first later one whose close
    // came after it (its run booked the reversal as a late adjustment)
    let mut closes: BTreeMap<Period, Option<i64>> = BTreeMap::new();
    let mut booked_in = |at: Period, arrival: i64| -> Result<Option<Period>> {
        let mut q = at;
        while q < p {
            let w = match closes.get(&q) {
                Some(w) => *w,
                None => {
                    let w = store
                        .period_state(q)?
                        .filter(|(state, _, _)| state == "closed")
                        .map(|(_, w, _)| w);
                    closes.insert(q, w);
                    w
                }
            };
            if w.is_some_and(|w| arrival <= w) {
                return Ok(Some(q));
            }
            q = q.next();
        }
        Ok(None)
    };
    let mut ctx = Ctx::default();
    let mut on_time: Vec<(usize, Period)> = Vec::new();
    for (i, r) in found {
        if r.reversal_at >= p {
            continue;
        }
        // the reversal and its reinstatement go together, to the period
        // that booked the reversal: neither is a late fact of another
        ctx.cancelled.insert(r.reversal.clone());
        let e = &out.entries[i];
        // a reversal held when booked counts nowhere, nor does what
        // cancels it
        if held.contains(&r.reversal) {
            ctx.apart.insert(hex_id("le_", &e.id));
            continue;
        }
        let Some(at) = booked_in(r.reversal_at, r.arrival)? else {
            ctx.apart.insert(hex_id("le_", &e.id));
            continue;
        };
        ctx.reinstated.insert(hex_id("le_", &e.id), at);
        if at != r.reversal_at {
            ctx.late_of.insert(hex_id("le_", &e.id), r.reversal_at);
        }
        if e.period == p && e.fraud == 0 && !e.amount.is_zero() {
            on_time.push((i, at));
        }
    }
    // (partner, program, the closed period) -> what this run gives back to it
    let mut back: BTreeMap<(String, String, Period), Back> = BTreeMap::new();
    let mut add =
        |k: (String, String, Period), amount: Decimal, day: i64, id: String, sources: &[String]| {
            let v = back.entry(k).or_default();
            v.net += amount;
            let side = if amount > Decimal::ZERO {
                &mut v.up
            } else {
                &mut v.down
            };
            if !amount.is_zero() {
                *side.entry(day).or_default() += amount.abs();
            }
            if !v.items.contains(&id) {
                v.items.push(id);
            }
            for s in sources {
                if !v.sources.contains(s) {
                    v.sources.push(s.clone());
                }
            }
        };
    for (i, at) in on_time {
        let e = &out.entries[i];
        let Calc::Clawback(b) = &e.calc else {
            continue;
        };
        let program = &words.eng.cfg.programs[usize::from(e.prog)].id;
        let id = f.id(&f.convs[e.conv as usize]).to_string();
        let k = (f.syms.str(e.partner).to_string(), program.clone(), at);
        // held as what it offsets: a clawback from the day of the entry it
        // reverses
        add(
            k,
            e.amount,
            i64::from(b.3),
            id.clone(),
            std::slice::from_ref(&id),
        );
        // a late reversal it cancels no longer counts for its own period:
        // that period's take-back is recomputed too
        if let Some(&of) = ctx.late_of.get(&hex_id("le_", &e.id)) {
            let k = (f.syms.str(e.partner).to_string(), program.clone(), of);
            add(k, Decimal::ZERO, i64::from(b.3), id.clone(), &[id]);
        }
    }
    for e in own.iter().filter(|e| e.kind == EntryKind::Adjustment) {
        let Some(at) = gives_to(
            "adjustment",
            &e.id,
            &e.reason,
            &e.adjusts,
            e.event_day,
            &ctx,
        ) else {
            continue;
        };
        if at >= p || e.amount.is_zero() {
            continue;
        }
        let k = (e.partner.clone(), e.program.clone(), at);
        add(k, e.amount, e.event_day, e.id.clone(), &e.sources);
        if let Some(&of) = ctx.late_of.get(&e.adjusts) {
            let k = (e.partner.clone(), e.program.clone(), of);
            add(k, Decimal::ZERO, e.event_day, e.id.clone(), &e.sources);
        }
    }
    if back.is_empty() {
        return Ok(Vec::new());
    }
    let past = past(store, &back, &ctx, p)?;
    let ps = p.to_string();
    let mut entries = Vec::new();
    for ((partner, program, at), b) in back {
        let Past {
            written,
            given,
            taken,
        } = past
            .get(&(partner.clone(), program.clone(), at))
            .copied()
            .unwrap_or_default();
        if written <= Decimal::ZERO {
            continue;
        }
        // what came back pays the loss the write-off forgave first; what
        // a later fact took away again is given back
        let given_now = given + b.net;
        let target = given_now.min(written).max(Decimal::ZERO);
        let change = target - taken;
        if change.is_zero() {
            continue;
        }
        let currency = words
            .eng
            .cfg
            .program(&program)
            .map_or(words.eng.cfg.currency, |g| g.currency);
        let c = |d: Decimal| fmt_decimal(d, currency);
        // in parts held as what they offset (earliest first); what is left
        // (none, unless the closed ledgers disagree) with the last part
        let parts = if change > Decimal::ZERO {
            &b.up
        } else {
            &b.down
        };
        let mut split: Vec<(i64, Decimal)> = Vec::new();
        let mut rest = change.abs();
        for (&day, &part) in parts {
            let t = part.min(rest);
            if t <= Decimal::ZERO {
                break;
            }
            rest -= t;
            split.push((day, t));
        }
        match split.last_mut() {
            Some(last) => last.1 += rest,
            None => split.push((p.first_day(), rest)),
        }
        let what = if change > Decimal::ZERO {
            format!("{} taken back now", c(change))
        } else {
            format!("{} given back now", c(-change))
        };
        for &(day, t) in &split {
            let amount = if change > Decimal::ZERO { -t } else { t };
            let held = if split.len() > 1 {
                format!(
                    "; this part, {} {currency}, is held as what it offsets, from {}",
                    c(t),
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
                amount,
                currency,
                rule: "-".into(),
                sources: b.sources.clone(),
                event_day: day,
                reason: reason(at),
                calc: format!(
                    "{at} wrote off {} {currency} of negative balance; given back to {at} since its close, {} {currency} ({} in this period: {} {currency}); a write-off forgives a loss, so what comes back to the period pays it first: taken back in all max(0, min({}, {})) = {} {currency}, {} {currency} before, so {what}{held}: {} {currency}",
                    c(written),
                    c(given_now),
                    b.items.join(", "),
                    c(b.net),
                    c(written),
                    c(given_now),
                    c(target),
                    c(taken),
                    c(amount),
                ),
                adjusts: String::new(),
            });
        }
    }
    Ok(entries)
}

/// For the keys of `back`, what the closed ledgers since each period (and
/// its own, for its write-off) hold: written off, given back, taken back.
fn past(
    store: &Store,
    back: &BTreeMap<(String, String, Period), Back>,
    ctx: &Ctx,
    p: Period,
) -> Result<HashMap<(String, String, Period), Past>> {
    /// One partner and program's ledger since the first period wanted.
    #[derive(Default)]
    struct Pair {
        written: BTreeMap<Period, Decimal>,
        taken: BTreeMap<Period, Decimal>,
        given: BTreeMap<Period, Decimal>,
    }
    let first = back.keys().map(|k| k.2).min().unwrap_or(p);
    let mut pairs: Vec<((&str, &str), Pair)> = Vec::new();
    for (a, g, _) in back.keys() {
        if !pairs.iter().any(|(k, _)| *k == (a.as_str(), g.as_str())) {
            pairs.push(((a.as_str(), g.as_str()), Pair::default()));
        }
    }
    crate::ledger_blocks::scan(
        &store.conn,
        pos_base(first),
        pos_base(p),
        Cols::of(
            &[L_EVENT_DAY],
            &[
                L_ID, L_PARTNER, L_PROGRAM, L_KIND, L_AMOUNT, L_REASON, L_ADJUSTS,
            ],
        ),
        |b| {
            let here = Period::from_key(crate::ledger_blocks::period_of(b.first));
            for r in 0..b.rows() {
                let kind = text(b, L_KIND, r)?;
                if !matches!(kind, "writeoff" | "adjustment" | "clawback") {
                    continue;
                }
                let (partner, program) = (text(b, L_PARTNER, r)?, text(b, L_PROGRAM, r)?);
                let Some((_, x)) = pairs
                    .iter_mut()
                    .find(|((a, g), _)| *a == partner && *g == program)
                else {
                    continue;
                };
                let reason = text(b, L_REASON, r)?;
                let amount = || crate::run::dec(text(b, L_AMOUNT, r)?);
                if kind == "writeoff" {
                    *x.written.entry(here).or_default() += amount()?;
                } else if let Some(at) = reason
                    .strip_prefix("writeoff_taken_back_")
                    .and_then(Period::parse)
                {
                    // booked negative when taken back
                    *x.taken.entry(at).or_default() -= amount()?;
                } else if let Some(at) = gives_to(
                    kind,
                    text(b, L_ID, r)?,
                    reason,
                    text(b, L_ADJUSTS, r)?,
                    b.int(L_EVENT_DAY, r).unwrap_or(0),
                    ctx,
                ) {
                    // only what periods after it booked
                    if at < here {
                        *x.given.entry(at).or_default() += amount()?;
                    }
                }
            }
            Ok(())
        },
    )?;
    let mut past: HashMap<(String, String, Period), Past> = HashMap::new();
    for (partner, program, at) in back.keys() {
        let Some((_, x)) = pairs
            .iter()
            .find(|((a, g), _)| a == partner && g == program)
        else {
            continue;
        };
        let get = |m: &BTreeMap<Period, Decimal>, q: Period| m.get(&q).copied().unwrap_or_default();
        past.insert(
            (partner.clone(), program.clone(), *at),
            Past {
                written: get(&x.written, *at),
                given: get(&x.given, *at),
                taken: get(&x.taken, *at),
            },
        );
    }
    Ok(past)
}
