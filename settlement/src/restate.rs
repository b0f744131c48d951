//! Closed periods restated: what late facts and operators' decisions since
//! the close change on them, booked as adjustments (and late invoice lines)
//! in the first open period; held entries rejected on review after their
//! period closed, reversed; and what the closed periods booked on the sales
//! that refunds reverse.

use crate::engine::{self, hash_parts, hex_id, Engine, Options, Output, REntry, RInvoice};
use crate::error::{Error, Result};
use crate::events::Cols;
use crate::facts::{Facts, NONE};
use crate::ledger::{Entry, EntryKind, InvoiceLine};
use crate::money::fmt_decimal;
use crate::period::{date_of_day, Period};
use crate::run::{dec, id_hash};
use crate::store::{pos_base, Store};
use crate::timing::Phase;
use crate::words::Words;
use rust_decimal::Decimal;
use std::collections::{HashMap, HashSet};

/// Held entries of closed periods that an operator rejected: reversed by an
/// adjustment in the first open period (once: a reversal already in a
/// closed period is not booked again). It carries the held entry's date,
/// so the two wait for `hold_days` together.
pub(crate) fn review_reversals(
    store: &Store,
    reviews: &rustc_hash::FxHashMap<String, crate::fraud::Review>,
    p: Period,
    h: Period,
    own: &mut Vec<Entry>,
) -> Result<()> {
    if !reviews.values().any(|r| !r.release) {
        return Ok(());
    }
    let end = pos_base(h.next());
    let mut done: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut st = store.conn.prepare(
        "SELECT adjusts FROM ledger WHERE pos < ?1 AND kind = 'adjustment' AND reason LIKE 'fraud:%'",
    )?;
    let mut rows = st.query([end])?;
    while let Some(r) = rows.next()? {
        done.insert(r.get(0)?);
    }
    // a held clawback's reversal is dated as the held entry it reverses
    // (held too: a clawback of a held entry waits with it), so the two
    // reversals mature together
    let mut days: HashMap<String, i64> = HashMap::new();
    {
        let mut st = store.conn.prepare(
            "SELECT id, event_day FROM ledger WHERE pos < ?1 AND reason LIKE 'held:fraud:%'",
        )?;
        let mut rows = st.query([end])?;
        while let Some(r) = rows.next()? {
            days.insert(r.get(0)?, r.get(1)?);
        }
    }
    let mut st = store.conn.prepare(
        "SELECT id, period, partner, program, kind, amount, currency, rule, sources, event_day, reason, adjusts
         FROM ledger WHERE pos < ?1 AND reason LIKE 'held:fraud:%' ORDER BY pos",
    )?;
    let mut rows = st.query([end])?;
    let ps = p.to_string();
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let kind: String = r.get(4)?;
        let sources: String = r.get(8)?;
        let event = crate::fraud::review_event(&kind, &sources);
        let Some(rv) = reviews.get(&event).filter(|rv| !rv.release) else {
            continue;
        };
        if done.contains(&id) {
            continue;
        }
        let amount = dec(&r.get::<_, String>(5)?)?;
        let currency = edge::currency::Currency::parse(&r.get::<_, String>(6)?)
            .ok_or_else(|| Error::data(format!("entry {id}: bad currency in the store")))?;
        let reason: String = r.get(10)?;
        let period = Period::from_key(r.get(1)?);
        own.push(Entry {
            id: hex_id("le_", &hash_parts(&[b"review_reversal", ps.as_bytes(), id.as_bytes()])),
            period: p,
            partner: r.get(2)?,
            program: r.get(3)?,
            kind: EntryKind::Adjustment,
            amount: crate::money::norm(-amount),
            currency,
            rule: r.get(7)?,
            sources: sources.split_whitespace().map(str::to_string).collect(),
            event_day: match kind.as_str() {
                "clawback" => r
                    .get::<_, Option<String>>(11)?
                    .and_then(|a| days.get(&a).copied())
                    .map_or_else(|| r.get(9), Ok)?,
                _ => r.get(9)?,
            },
            reason: reason.trim_start_matches("held:").to_string(),
            calc: format!(
                "the {kind} {id} of {} {currency}, held for review in the closed period {period}, was rejected on review by {}: {}: reversed = {} {currency}",
                fmt_decimal(amount, currency),
                rv.by,
                rv.why,
                fmt_decimal(-amount, currency)
            ),
            adjusts: id,
        });
    }
    Ok(())
}

/// A restated `minimum_per_period` top-up waits with the late commissions
/// and overrides that restated it: it is split into one part per late
/// commission of the same partner, program and period (earliest first, of
/// the opposite sign, each at most that commission), dated and so held
/// with it, so each part nets with its commission while held and matures
/// with it. Dated as the top-up (the period's last day), a lower top-up was
/// still pending when a late commission of an earlier day matured, and
/// that commission was paid on top of the minimum; dated as one of two
/// late commissions, it still matured apart from the other. What no late
/// commission offsets (a minimum changed in programs.toml) keeps the
/// top-up's date and the adjustment's id.
pub(crate) fn split_restated_topups(
    entries: &mut Vec<Entry>,
    restated: &[(usize, EntryKind, Period)],
) {
    type Key = (String, String, Period);
    // (day, id, amount, and the hold and sources of one held for review)
    type Late = (i64, String, Decimal, Option<(String, Vec<String>)>);
    let mut late: HashMap<Key, Vec<Late>> = HashMap::new();
    for &(i, kind, period) in restated {
        if matches!(kind, EntryKind::Commission | EntryKind::Override) {
            let e = &entries[i];
            let held = e
                .reason
                .starts_with("held:fraud:")
                .then(|| (e.reason.clone(), e.sources.clone()));
            late.entry((e.partner.clone(), e.program.clone(), period))
                .or_default()
                .push((e.event_day, e.id.clone(), e.amount, held));
        }
    }
    for v in late.values_mut() {
        v.sort();
    }
    let topups: Vec<(usize, Period)> = restated
        .iter()
        .filter(|r| r.1 == EntryKind::MinimumTopup)
        .map(|&(i, _, period)| (i, period))
        .collect();
    for (i, period) in topups {
        let key = (
            entries[i].partner.clone(),
            entries[i].program.clone(),
            period,
        );
        let Some(offsets) = late.get(&key) else {
            continue;
        };
        let top = entries[i].clone();
        let cur = top.currency;
        let mut left = top.amount;
        let mut parts: Vec<Entry> = Vec::new();
        for (day, id, amount, held) in offsets {
            if left.is_zero() {
                break;
            }
            // a lower top-up offsets a higher commission, and the reverse
            if amount.is_zero() || amount.is_sign_negative() == left.is_sign_negative() {
                continue;
            }
            let take = if left.abs() <= amount.abs() {
                left
            } else {
                -*amount
            };
            left -= take;
            let mut part = top.clone();
            part.id = hex_id("le_", &hash_parts(&[top.id.as_bytes(), id.as_bytes()]));
            part.amount = take;
            part.event_day = *day;
            // held for review with the commission: released or reversed
            // with it (its sources name the event the review decides)
            if let Some((reason, sources)) = held {
                part.reason = reason.clone();
                part.sources = sources.clone();
            }
            part.calc = format!(
                "{}; this part, {} {cur}, offsets the late entry {id} ({} {cur}) and is dated {} and held with it",
                top.calc,
                fmt_decimal(take, cur),
                fmt_decimal(*amount, cur),
                date_of_day(*day)
            );
            parts.push(part);
        }
        if parts.is_empty() {
            continue;
        }
        if left.is_zero() {
            entries[i] = parts.remove(0);
        } else {
            let e = &mut entries[i];
            e.amount = left;
            e.calc = format!(
                "{}; this part, {} {cur}, offsets no late commission and keeps the top-up's date",
                top.calc,
                fmt_decimal(left, cur)
            );
        }
        entries.extend(parts);
    }
}

/// What the ledger of closed periods (up to `h`) booked on the sales that
/// the refunds this run books name (those after `h`, and late ones, that
/// arrived after `h`'s watermark `w_h`): per sale, per partner, its
/// commission, override and adjustment entries (see [`engine::Booked`]);
/// a sale the ledger booked nothing on has no parts. Entries held for
/// review and rejected on review, and the reversals of such, are left out
/// (the review's reversal takes them back). `None` when no such refund
/// names a sale of a closed period.
pub(crate) fn booked_on_refunded_sales(
    store: &Store,
    eng: &Engine,
    reviews: &rustc_hash::FxHashMap<String, crate::fraud::Review>,
    h: Period,
    w_h: i64,
) -> Result<Option<engine::Booked>> {
    let f = eng.facts;
    let reversal = |c: &crate::facts::Conv| eng.is_reversal(c);
    let end = h.end_ms();
    let mut named: HashSet<(u32, &str)> = HashSet::new();
    // the reversals a reinstatement of this run names (by their txn id):
    // it gives back what they took, so as booked too
    let mut reinstated: HashSet<(u32, &str)> = HashSet::new();
    for &i in &f.with_orig {
        let c = &f.convs[i as usize];
        // the refunds whose clawbacks this run books or restates: after
        // the closed period, or late for it; the others are the same in
        // both views and booked already
        let this_run = c.ts >= end || i64::from(c.arrival) > w_h;
        if this_run && reversal(c) && f.ex(c).orig_txn != NONE {
            named.insert((c.program, f.syms.str(f.ex(c).orig_txn)));
        }
        if this_run && eng.is_reinstate(c) && f.ex(c).orig_txn != NONE {
            reinstated.insert((c.program, f.syms.str(f.ex(c).orig_txn)));
        }
    }
    if !reinstated.is_empty() {
        for &i in &f.with_orig {
            let c = &f.convs[i as usize];
            if reversal(c)
                && f.ex(c).orig_txn != NONE
                && reinstated.contains(&(c.program, f.txns.get(c.idx)))
            {
                named.insert((c.program, f.syms.str(f.ex(c).orig_txn)));
            }
        }
    }
    if named.is_empty() {
        return Ok(None);
    }
    let mut sales: HashMap<&str, u32> = HashMap::new();
    let mut first = h;
    for &i in &f.with_txn {
        let c = &f.convs[i as usize];
        if c.ts < end && !reversal(c) && named.contains(&(c.program, f.txns.get(c.idx))) {
            sales.insert(f.id(c), i);
            first = first.min(Period::of_ms(c.ts));
        }
    }
    if sales.is_empty() {
        return Ok(None);
    }
    let _ph = Phase::start("the booked entries of refunded sales");
    use crate::ledger_blocks::{
        text, L_ADJUSTS, L_AMOUNT, L_CURRENCY, L_ID, L_KIND, L_PARTNER, L_REASON, L_RULE, L_SOURCES,
    };
    // every named sale of a closed period: one the ledger booked nothing
    // on reverses nothing, whatever today's view pays on it
    let mut by_conv: rustc_hash::FxHashMap<u32, engine::BookedConv> = sales
        .values()
        .map(|&ci| (ci, engine::BookedConv::default()))
        .collect();
    // a booked amount in the sale's program's currency today: a program
    // whose `currency` changed since (allowed once its balances were paid)
    // reverses what it booked converted at the sale's date, never the
    // same number in the new currency
    let now_in = |ci: u32, amount: Decimal, cur: &str| -> Result<Decimal> {
        let c = &f.convs[ci as usize];
        let Some(pi) = eng.program_of(c.program) else {
            return Ok(amount);
        };
        let to = eng.cfg.programs[usize::from(pi)].currency;
        match edge::currency::Currency::parse(cur) {
            Some(from) if from != to => {
                let x = eng.convert(amount, Some(from), to, c.ts, || f.id(c))?;
                Ok(crate::money::Money::round(x, to)?.amount)
            }
            _ => Ok(amount),
        }
    };
    crate::ledger_blocks::scan(
        &store.conn,
        pos_base(first),
        pos_base(h.next()),
        Cols::of(
            &[],
            &[
                L_ID, L_PARTNER, L_KIND, L_AMOUNT, L_CURRENCY, L_SOURCES, L_ADJUSTS, L_REASON,
                L_RULE,
            ],
        ),
        |b| {
            for r in 0..b.rows() {
                let sale = text(b, L_SOURCES, r)?;
                let Some(&ci) = sales.get(sale) else {
                    continue;
                };
                let kind = text(b, L_KIND, r)?;
                if !matches!(kind, "commission" | "override" | "adjustment") {
                    continue;
                }
                // a part of a restated minimum top-up held with the sale's
                // late commission carries the sale's id, and no rule: the
                // top-up's, not an earning on the sale (a top-up is never
                // restored by a later refund, on time or late)
                if kind == "adjustment" && text(b, L_RULE, r)? == "-" {
                    continue;
                }
                let reason = text(b, L_REASON, r)?;
                // a review's reversal, and what it reversed
                if reason.starts_with("fraud:") {
                    continue;
                }
                let held = reason.strip_prefix("held:fraud:");
                let review = reviews.get(sale);
                if held.is_some() && review.is_some_and(|v| !v.release) {
                    continue;
                }
                // still held while no operator has decided (the reason
                // stays on the row after a release)
                let fraud = held
                    .filter(|_| review.is_none())
                    .and_then(|rule| crate::fraud::RULES.iter().position(|x| *x == rule))
                    .map_or(0, |i| i as u8 + 1);
                // a partner the registry no longer has is nobody to reverse
                let Some(partner) = f.syms.get(text(b, L_PARTNER, r)?) else {
                    continue;
                };
                let amount = now_in(ci, dec(text(b, L_AMOUNT, r)?)?, text(b, L_CURRENCY, r)?)?;
                // an adjustment names the entry it restates
                let id = if kind == "adjustment" {
                    text(b, L_ADJUSTS, r)?
                } else {
                    text(b, L_ID, r)?
                };
                let parts = &mut by_conv.entry(ci).or_default().parts;
                match parts.iter_mut().find(|x| x.partner == partner) {
                    Some(part) => part.amount += amount,
                    None => parts.push(engine::BookedPart {
                        partner,
                        amount,
                        id: booked_id("le_", id),
                        fraud,
                    }),
                }
            }
            Ok(())
        },
    )?;
    // a reseller's invoice lines of those sales (the sale's, and late
    // lines restating it), summed per partner
    {
        let mut per_partner: rustc_hash::FxHashMap<u32, Vec<engine::BookedInvoice>> =
            Default::default();
        use crate::ledger_blocks::{
            INVOICES, I_AMOUNT_DUE, I_CURRENCY, I_DISCOUNT_PERCENT, I_ID, I_LIST_AMOUNT, I_PARTNER,
            I_SOURCE,
        };
        crate::ledger_blocks::scan_in(
            &store.conn,
            INVOICES,
            pos_base(first),
            pos_base(h.next()),
            Cols::of(
                &[],
                &[
                    I_ID,
                    I_PARTNER,
                    I_LIST_AMOUNT,
                    I_DISCOUNT_PERCENT,
                    I_AMOUNT_DUE,
                    I_CURRENCY,
                    I_SOURCE,
                ],
            ),
            |b| {
                for r in 0..b.rows() {
                    let Some(&ci) = sales.get(text(b, I_SOURCE, r)?) else {
                        continue;
                    };
                    let Some(partner) = f.syms.get(text(b, I_PARTNER, r)?) else {
                        continue;
                    };
                    let cur = text(b, I_CURRENCY, r)?;
                    let (list, due) = (
                        now_in(ci, dec(text(b, I_LIST_AMOUNT, r)?)?, cur)?,
                        now_in(ci, dec(text(b, I_AMOUNT_DUE, r)?)?, cur)?,
                    );
                    let lines = per_partner.entry(ci).or_default();
                    match lines.iter_mut().find(|i| i.partner == partner) {
                        Some(i) => {
                            i.list += list;
                            i.due += due;
                        }
                        None => lines.push(engine::BookedInvoice {
                            partner,
                            list,
                            due,
                            discount: dec(text(b, I_DISCOUNT_PERCENT, r)?)?,
                            id: booked_id("inv_", text(b, I_ID, r)?),
                        }),
                    }
                }
                Ok(())
            },
        )?;
        // the partner the sale's lines leave owing it (a line late facts
        // moved to another partner was cancelled for the first)
        for (ci, lines) in per_partner {
            let owing = lines
                .into_iter()
                .filter(|i| !i.list.is_zero() || !i.due.is_zero())
                .max_by(|x, y| {
                    x.list
                        .abs()
                        .cmp(&y.list.abs())
                        .then(y.partner.cmp(&x.partner))
                });
            by_conv.entry(ci).or_default().invoice = owing;
        }
    }
    Ok(Some(engine::Booked { by_conv }))
}

/// The booked entries with the closed period's own view of each sale
/// (`old`, computed with them), per partner: the view that restates the
/// closed period reverses what was booked plus what the late facts
/// changed.
pub(crate) fn with_old_view(mut b: engine::Booked, old: &Output, o: &Options) -> engine::Booked {
    for bc in b.by_conv.values_mut() {
        bc.old = Some(Vec::new());
    }
    for e in &old.entries {
        if !matches!(e.kind, EntryKind::Commission | EntryKind::Override)
            || e.period.end_ms() > o.until_ms
        {
            continue;
        }
        if let Some(bc) = b.by_conv.get_mut(&e.conv) {
            if let Some(v) = bc.old.as_mut() {
                v.push((e.partner, e.amount));
            }
        }
    }
    for l in &old.invoices {
        if l.period.end_ms() > o.until_ms {
            continue;
        }
        if let Some(bc) = b.by_conv.get_mut(&l.conv) {
            let (list, due) = bc.old_invoice.unwrap_or_default();
            bc.old_invoice = Some((list + l.list_amount, due + l.amount_due));
        }
    }
    b
}

/// A booked id (`prefix` and 20 hex digits) as the engine's hash; an id
/// of another shape hashes to a stable value.
pub(crate) fn booked_id(prefix: &str, id: &str) -> engine::Hash10 {
    id_hash(prefix, id).unwrap_or_else(|| hash_parts(&[id.as_bytes()]))
}

/// Whether an operator decided, after closed period `h`'s draft (its last
/// decision `rs_h`), on a conversion of the closed periods (`ts` before
/// `until_ms`) in a way that restates them like a late fact (released a
/// rule's rejection, rejected a held entry).
pub(crate) fn late_decisions(
    facts: &Facts,
    reviews: &rustc_hash::FxHashMap<String, crate::fraud::Review>,
    rs_h: i64,
    until_ms: i64,
) -> bool {
    let after: HashSet<&str> = reviews
        .iter()
        .filter(|(_, r)| r.restates && r.seq > rs_h)
        .map(|(e, _)| e.as_str())
        .collect();
    !after.is_empty()
        && facts
            .convs
            .iter()
            .any(|c| c.ts < until_ms && after.contains(facts.id(c)))
}

/// Why the closed periods are restated: the last closed one, the last
/// decision its draft saw, and whether late facts arrived since (else only
/// decisions made since on review do).
pub(crate) struct Restated {
    pub h: Period,
    pub rs_h: i64,
    pub facts_late: bool,
    /// The closed period's watermark: conversions that arrived after it,
    /// dated in the closed range, are the late facts.
    pub w_h: i64,
}

/// Restated closed-period entries minus what was known at close.
pub(crate) fn adjustments(
    words: &Words,
    new: &Output,
    old: &Output,
    p: Period,
    why: &Restated,
    entries: &mut Vec<Entry>,
    invoices: &mut Vec<InvoiceLine>,
) -> Result<()> {
    let h = why.h;
    let ps = p.to_string();
    let mut before: HashMap<[u8; 10], &REntry> = HashMap::new();
    for e in old.entries.iter().filter(|e| e.period <= h) {
        before.insert(e.id, e);
    }
    let mut after: HashMap<[u8; 10], &REntry> = HashMap::new();
    for e in new.entries.iter().filter(|e| e.period <= h) {
        after.insert(e.id, e);
    }
    let mut ids: Vec<&[u8; 10]> = before.keys().chain(after.keys()).collect();
    ids.sort();
    ids.dedup();
    // held sales rejected on review since the close: their held entries
    // (commission, overrides, clawbacks of the sale) are reversed by
    // `review_reversals`; the views restate the rest (a lifetime lock, a
    // ladder's count)
    let f = words.eng.facts;
    let rejected: rustc_hash::FxHashSet<u32> = words
        .eng
        .reviews
        .iter()
        .filter(|(_, r)| !r.release && r.restates && r.seq > why.rs_h)
        .map(|(&ci, _)| ci)
        .collect();
    let rejected_ids: rustc_hash::FxHashSet<u32> = rejected
        .iter()
        .map(|&ci| f.convs[ci as usize].idx)
        .collect();
    let reversed_apart =
        |e: &REntry| e.fraud != 0 && (rejected.contains(&e.conv) || rejected_ids.contains(&e.src2));
    // the late conversions, by customer and by the partner the restated
    // view books them to: an adjustment names those of its conversion's
    // customer and of its partner (a signup that moved a lifetime lock, a
    // sale that moved a ladder)
    let mut late_by: rustc_hash::FxHashMap<(bool, u32), Vec<u32>> = Default::default();
    let is_late = |c: &crate::facts::Conv| c.ts < why.h.end_ms() && i64::from(c.arrival) > why.w_h;
    if why.facts_late {
        for (i, c) in f.convs.iter().enumerate() {
            if c.customer != NONE && is_late(c) {
                late_by
                    .entry((true, c.customer))
                    .or_default()
                    .push(i as u32);
            }
        }
        for e in new
            .entries
            .iter()
            .filter(|e| e.period <= h && e.conv != NONE)
        {
            if is_late(&f.convs[e.conv as usize]) {
                late_by.entry((false, e.partner)).or_default().push(e.conv);
            }
        }
    }
    // each list in time order, once: an entry reads the first few of its
    // lists (a backfill of many late sales of one partner restates many
    // entries; none of them sorts the partner's whole list)
    let key = |i: &u32| (f.convs[*i as usize].ts, *i);
    for l in late_by.values_mut() {
        l.sort_by_key(key);
        l.dedup();
    }
    let late_words = |e: &REntry| -> String {
        const SHOWN: usize = 3;
        let mut v: Vec<u32> = Vec::new();
        let mut more = false;
        let mut take = |l: &[u32]| {
            v.extend(l.iter().take(SHOWN + 1));
            more |= l.len() > SHOWN + 1;
        };
        if e.conv != NONE {
            let c = &f.convs[e.conv as usize];
            if is_late(c) {
                take(&[e.conv]);
            }
            if let Some(l) = late_by.get(&(true, c.customer)) {
                take(l);
            }
        }
        if let Some(l) = late_by.get(&(false, e.partner)) {
            take(l);
        }
        if v.is_empty() {
            return String::new();
        }
        v.sort_by_key(key);
        v.dedup();
        more |= v.len() > SHOWN;
        let mut words: Vec<String> = v
            .iter()
            .take(SHOWN)
            .map(|&i| {
                let c = &f.convs[i as usize];
                format!(
                    "{}, {} dated {}",
                    f.id(c),
                    f.syms.str(c.event),
                    date_of_day(c.ts.div_euclid(crate::period::DAY_MS))
                )
            })
            .collect();
        if more {
            words.push("and more".into());
        }
        format!(" (arrived since the close: {})", words.join("; "))
    };
    // (index in `entries`, kind and period of the restated entry)
    let mut restated: Vec<(usize, EntryKind, Period)> = Vec::new();
    for id in ids {
        let (a, b) = (after.get(id), before.get(id));
        if !rejected.is_empty() && b.is_some_and(|e| reversed_apart(e)) {
            continue;
        }
        let na = a.map_or(Decimal::ZERO, |e| e.amount);
        let nb = b.map_or(Decimal::ZERO, |e| e.amount);
        let diff = crate::money::norm(na - nb);
        if diff.is_zero() {
            continue;
        }
        let src = a.or(b).expect("one side exists");
        let mut e = words.entry(src);
        // dated, and so held, as the entry whose earnings it changes: a
        // restated clawback by the entry it reverses
        if let engine::Calc::Clawback(x) = &src.calc {
            e.event_day = i64::from(x.3);
        }
        let orig_id = e.id.clone();
        let cur = e.currency;
        e.id = hex_id("le_", &hash_parts(&[b"adjustment", ps.as_bytes(), id]));
        // a conversion released on review after the close: its own entries
        let released = (src.conv != NONE)
            .then(|| words.eng.reviews.get(&src.conv))
            .flatten()
            .filter(|r| r.release && r.restates && r.seq > why.rs_h)
            .zip(words.out.fraud_row(src.conv));
        let cause = match released {
            Some((r, _)) => format!(
                "released on review by {} ({}) after its period {} closed",
                r.by, r.why, src.period
            ),
            None if why.facts_late => format!(
                "late facts for the closed period {}{}",
                src.period,
                late_words(src)
            ),
            None => format!(
                "a decision on review after the close, for the closed period {}",
                src.period
            ),
        };
        // the restated entry's own arithmetic, and what a clawback
        // reverses: the reader checks the restated amount as an entry on
        // time (the words read today's view: an entry the restatement
        // takes away is explained by its id, which explain answers with
        // the entry booked, or with the adjustments that booked it when it
        // was only ever booked late)
        let own = match a {
            Some(_) => format!("; as restated: {}", std::mem::take(&mut e.calc)),
            None => format!("; what was booked for it: settlement explain {orig_id}"),
        };
        let reverses = match src.kind {
            EntryKind::Clawback if !e.adjusts.is_empty() => format!(" of {}", e.adjusts),
            _ => String::new(),
        };
        e.calc = format!(
            "{cause}: {} {}{reverses} (rule {}) restated as {} {cur}, booked {} {cur}: adjusted by {} {cur}{own}",
            src.kind,
            orig_id,
            e.rule,
            fmt_decimal(na, cur),
            fmt_decimal(nb, cur),
            fmt_decimal(diff, cur),
        );
        e.kind = EntryKind::Adjustment;
        e.period = p;
        e.amount = diff;
        e.reason = if src.fraud != 0 && src.kind != EntryKind::Rejected {
            // what late facts or a release change on an entry the fraud
            // rules hold waits for its review like the rest of it
            format!(
                "held:fraud:{}",
                crate::fraud::RULES[usize::from(src.fraud - 1)]
            )
        } else if let Some((_, row)) = released {
            format!(
                "released:fraud:{}",
                crate::fraud::RULES[usize::from(row.verdict.rule)]
            )
        } else if !why.facts_late {
            format!("restated_{}", src.period)
        } else {
            format!("late_facts_{}", src.period)
        };
        e.adjusts = orig_id;
        restated.push((entries.len(), src.kind, src.period));
        entries.push(e);
    }
    split_restated_topups(entries, &restated);
    // reseller invoice lines
    let key = |l: &RInvoice| l.id;
    let before: HashMap<[u8; 10], &RInvoice> = old
        .invoices
        .iter()
        .filter(|l| l.period <= h)
        .map(|l| (key(l), l))
        .collect();
    let now: HashSet<[u8; 10]> = new
        .invoices
        .iter()
        .filter(|l| l.period <= h)
        .map(key)
        .collect();
    let mut late: Vec<&RInvoice> = new
        .invoices
        .iter()
        .filter(|l| l.period <= h && before.get(&l.id).is_none_or(|b| *b != *l))
        .collect();
    // a line the late facts took away (its sale now another partner's, or
    // rejected) is cancelled, as a restated entry is adjusted to nothing
    late.extend(
        old.invoices
            .iter()
            .filter(|l| l.period <= h && !now.contains(&l.id)),
    );
    late.sort_by_key(|l| l.id);
    for l in late {
        let mut line = words.invoice(l);
        let cur = line.currency;
        // what the line corrects, in words: the booked line it cancels or
        // restates (its id, as invoice lines are identified), else a new one
        let what = if !now.contains(&l.id) {
            line.list_amount = crate::money::norm(-line.list_amount);
            line.amount_due = crate::money::norm(-line.amount_due);
            format!(
                "cancels the booked line {} (list {} {cur}, due {} {cur}): the sale is no longer this partner's to owe",
                line.id,
                fmt_decimal(-line.list_amount, cur),
                fmt_decimal(-line.amount_due, cur)
            )
        } else if let Some(b) = before.get(&l.id) {
            let was = fmt_decimal(b.amount_due, cur);
            line.list_amount -= b.list_amount;
            line.amount_due -= b.amount_due;
            format!(
                "restates the booked line {} (due {was} {cur}) as {}: the difference, {} {cur}",
                line.id,
                line.calc,
                fmt_decimal(line.amount_due, cur)
            )
        } else {
            line.calc.clone()
        };
        line.calc = format!("late line for the closed period {}: {what}", l.period);
        line.id = hex_id("inv_", &hash_parts(&[b"late", ps.as_bytes(), &l.id]));
        line.period = p;
        invoices.push(line);
    }
    Ok(())
}
