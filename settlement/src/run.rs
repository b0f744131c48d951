//! `settlement run` and `settlement close`: recompute a period's draft from
//! all facts and replace it atomically; freeze it.

use crate::batch;
use crate::config::{Base, Config};
use crate::engine::{self, hex_id, Engine, Options};
use crate::error::{Error, Result};
use crate::events::Block;
use crate::facts::Facts;
use crate::ledger::{Entry, EntryKind, InvoiceLine};
use crate::money::{fmt_decimal, plain, Amount};
use crate::period::{date_of_day, Period};
use crate::restate::{
    adjustments, booked_on_refunded_sales, late_decisions, review_reversals, with_old_view,
    Restated,
};
use crate::statement::{self, Statement};
use crate::store::{pos_base, Store};
use crate::timing::Phase;
use crate::words::{EntryView, Scratch, Words};
use rusqlite::params;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

/// What a run produced.
#[derive(Debug, Default)]
pub struct Draft {
    pub period: Option<Period>,
    pub entries: Vec<Entry>,
    pub statements: Vec<Statement>,
    pub invoices: Vec<InvoiceLine>,
    /// `(program, name, value)`
    pub stats: Vec<(String, String, i64)>,
    pub rules: Vec<(String, String, String, String)>,
    /// Flagged conversions of the period, as fraud.csv rows.
    pub fraud: Vec<Vec<String>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// The draft was written.
    Replaced { entries: usize, statements: usize },
    /// The recomputed draft is identical to the stored one.
    Unchanged { entries: usize, statements: usize },
}

fn kind_rank(k: EntryKind) -> usize {
    EntryKind::ALL.iter().position(|x| *x == k).unwrap_or(0)
}

/// An entry of a draft, as 4 bytes: an index into the engine's output, or
/// (high bit set) into the entries built here (adjustments, write-offs,
/// payouts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item(u32);

const OWN: u32 = 1 << 31;

impl Item {
    fn eng(i: usize) -> Item {
        Item(i as u32)
    }
    fn own(i: usize) -> Item {
        Item(i as u32 | OWN)
    }
    fn is_own(self) -> bool {
        self.0 & OWN != 0
    }
    fn index(self) -> usize {
        (self.0 & !OWN) as usize
    }
}

/// A period's draft before it is written: entries stay in the engine's
/// compact form and become rows one at a time.
pub struct Plan<'a> {
    pub period: Period,
    pub words: Words<'a>,
    /// Ledger order.
    pub items: Vec<Item>,
    pub own: Vec<Entry>,
    pub statements: Vec<Statement>,
    /// Invoice lines, in order: the engine's (by index) or built here.
    pub invoices: Vec<Inv>,
    /// `(program, name, value)`
    pub stats: Vec<(String, String, i64)>,
    /// `(rule, program, model, description)`
    pub rules: Vec<(String, String, String, String)>,
    /// fraud.csv rows of the period.
    pub fraud: Vec<Vec<String>>,
    pub watermark: i64,
    /// The last operator's decision (`reviews.seq`) it saw.
    pub review_seq: i64,
    /// The last closed period when the draft was computed (its late facts
    /// and review reversals are in the draft): the draft is written, and
    /// later closed, only while it is still the last closed one.
    pub basis: Option<Period>,
}

/// An invoice line of a draft: an index into the engine's output, or a
/// line built here (late lines of closed periods).
pub enum Inv {
    Eng(u32),
    Own(Box<InvoiceLine>),
}

/// The engine's hash of a stored id (`prefix` and 20 hex digits), `None`
/// for an id of another shape.
pub(crate) fn id_hash(prefix: &str, id: &str) -> Option<engine::Hash10> {
    let mut b = [0u8; 10];
    hex::decode_to_slice(id.strip_prefix(prefix)?, &mut b).ok()?;
    Some(b)
}

fn id_bytes(id: &str) -> [u8; 10] {
    id_hash("le_", id).unwrap_or_default()
}

impl Plan<'_> {
    fn event_day(&self, it: Item) -> i64 {
        if it.is_own() {
            self.own[it.index()].event_day
        } else {
            i64::from(self.words.out.entries[it.index()].event_day)
        }
    }

    fn view(&self, it: Item) -> statement::View<'_> {
        if it.is_own() {
            return statement::View::from(&self.own[it.index()]);
        }
        let e = &self.words.out.entries[it.index()];
        statement::View {
            partner: self.words.eng.facts.syms.str(e.partner),
            program: &self.words.eng.cfg.programs[usize::from(e.prog)].id,
            kind: e.kind,
            amount: e.amount,
            event_day: i64::from(e.event_day),
            hold_from: statement::View::hold_from(
                e.kind,
                i64::from(e.event_day),
                match &e.calc {
                    engine::Calc::Clawback(b) => Some(i64::from(b.3)),
                    _ => None,
                },
            ),
            held: e.fraud != 0 && e.kind != EntryKind::Rejected,
        }
    }

    fn sort_key(&self, it: Item) -> (&str, i64, usize, [u8; 10]) {
        let v = self.view(it);
        let id = if it.is_own() {
            id_bytes(&self.own[it.index()].id)
        } else {
            self.words.out.entries[it.index()].id
        };
        (v.partner, v.event_day, kind_rank(v.kind), id)
    }

    /// One entry with its words.
    pub fn entry(&self, it: Item) -> Entry {
        if it.is_own() {
            self.own[it.index()].clone()
        } else {
            self.words.entry(&self.words.out.entries[it.index()])
        }
    }

    /// [`Plan::entry`] borrowed, handed to `f`; an engine entry's words
    /// are written into `s`.
    fn with_view_in<R>(&self, it: Item, s: &mut Scratch, f: impl FnOnce(&EntryView) -> R) -> R {
        if it.is_own() {
            EntryView::of(&self.own[it.index()], f)
        } else {
            self.words
                .with_view_in(&self.words.out.entries[it.index()], s, f)
        }
    }

    /// One invoice line with its words.
    pub fn invoice(&self, i: &Inv) -> InvoiceLine {
        match i {
            Inv::Eng(k) => self.words.invoice(&self.words.out.invoices[*k as usize]),
            Inv::Own(l) => (**l).clone(),
        }
    }

    /// An invoice's partner, without its conversion (see
    /// [`Plan::invoice_key`]).
    fn invoice_partner<'s>(&'s self, i: &'s Inv) -> &'s str {
        match i {
            Inv::Eng(k) => {
                let l = &self.words.out.invoices[*k as usize];
                self.words.eng.facts.syms.str(l.partner)
            }
            Inv::Own(l) => &l.partner,
        }
    }

    fn invoice_key<'s>(&'s self, i: &'s Inv) -> InvoiceKey<'s> {
        match i {
            Inv::Eng(k) => {
                let l = &self.words.out.invoices[*k as usize];
                let f = self.words.eng.facts;
                let c = &f.convs[l.conv as usize];
                (self.invoice_partner(i), f.txns.get(c.idx), l.id)
            }
            Inv::Own(l) => (
                &l.partner,
                &l.txn_id,
                id_hash("inv_", &l.id).unwrap_or_default(),
            ),
        }
    }

    /// Every entry, in ledger order (tests and small periods).
    pub fn materialize(&self) -> Draft {
        Draft {
            period: Some(self.period),
            entries: self.items.iter().map(|it| self.entry(*it)).collect(),
            statements: self.statements.clone(),
            invoices: self.invoices.iter().map(|i| self.invoice(i)).collect(),
            stats: self.stats.clone(),
            rules: self.rules.clone(),
            fraud: self.fraud.clone(),
        }
    }
}

/// An invoice's partner, transaction id and id, the order of invoices.
type InvoiceKey<'s> = (&'s str, &'s str, [u8; 10]);

/// Invoices by partner, transaction id and id: each one's key is read once
/// (not at every comparison, through the invoice and its conversion), and
/// its position breaks ties as a stable sort would. Sorted by partner
/// first as small integers, then each partner's invoices by the rest, so
/// the keys held at once are one partner's.
fn sort_invoices(plan: &Plan, invs: Vec<Inv>) -> Vec<Inv> {
    let partners: std::collections::BTreeSet<&str> =
        invs.iter().map(|i| plan.invoice_partner(i)).collect();
    let rank: rustc_hash::FxHashMap<&str, u32> = partners
        .iter()
        .enumerate()
        .map(|(r, p)| (*p, r as u32))
        .collect();
    let mut by_partner: Vec<(u32, u32)> = invs
        .iter()
        .enumerate()
        .map(|(i, inv)| (rank[plan.invoice_partner(inv)], i as u32))
        .collect();
    drop(rank);
    by_partner.sort_unstable();
    let mut order: Vec<u32> = Vec::with_capacity(invs.len());
    let mut keyed: Vec<(InvoiceKey, u32)> = Vec::new();
    for run in by_partner.chunk_by(|a, b| a.0 == b.0) {
        keyed.clear();
        keyed.extend(
            run.iter()
                .map(|&(_, i)| (plan.invoice_key(&invs[i as usize]), i)),
        );
        keyed.sort_unstable();
        order.extend(keyed.iter().map(|(_, i)| *i));
    }
    drop(keyed);
    drop(by_partner);
    let mut invs = invs;
    permute(&mut invs, &mut order);
    invs
}

/// Puts `v[order[i]]` at `i` for every `i`, in place (`order` a
/// permutation of `v`'s positions, each below 2^31; it is used up as the
/// record of what has moved): by the permutation's cycles, one swap a
/// move.
fn permute<T>(v: &mut [T], order: &mut [u32]) {
    const MOVED: u32 = 1 << 31;
    debug_assert_eq!(v.len(), order.len());
    for start in 0..v.len() {
        if order[start] & MOVED != 0 {
            continue;
        }
        let mut at = start;
        loop {
            let from = order[at] as usize;
            order[at] |= MOVED;
            if from == start {
                break;
            }
            v.swap(at, from);
            at = from;
        }
    }
}

/// Ledger order: by date; within a date, the engine's entries in the order
/// it made them (conversions in `(ts, id)` order, so deterministic), then
/// the entries built here (adjustments, write-offs, payouts) by partner,
/// kind and id. Following the engine's order keeps the writer's memory
/// accesses sequential.
fn sort_items(plan: &Plan, items: Vec<Item>) -> Vec<Item> {
    sort_items_with(plan, items, true)
}

/// [`sort_items`], packed keys or not (the tests compare the two).
fn sort_items_with(plan: &Plan, mut items: Vec<Item>, packed: bool) -> Vec<Item> {
    // the engine's entries come first, in the order it made them; the
    // entries built here follow, by partner, kind and id
    let split = items
        .iter()
        .position(|it| it.is_own())
        .unwrap_or(items.len());
    debug_assert!(items[split..].iter().all(|it| it.is_own()));
    items[split..].sort_by(|a, b| plan.sort_key(*a).cmp(&plan.sort_key(*b)));
    // then by date, keeping that order within a date
    if packed {
        if let Some(sorted) = sort_items_packed(plan, &items) {
            return sorted;
        }
    }
    // (a ledger too large for that) sorted as (date,
    // position) integers, without looking an entry up per comparison
    // (days since 1970 fit 32 bits for six million years either way)
    let mut keyed: Vec<(i32, u32)> = items
        .iter()
        .enumerate()
        .map(|(k, it)| {
            let d = plan.event_day(*it);
            (
                i32::try_from(d).unwrap_or(if d < 0 { i32::MIN } else { i32::MAX }),
                k as u32,
            )
        })
        .collect();
    keyed.sort_unstable();
    // the items in that order, written over the positions (`Item` is a
    // `u32`) and collected from the keys, in their allocation where the
    // standard library reuses it; the unsorted items are let go first, so
    // the three lists never exist at once
    for x in &mut keyed {
        x.1 = items[x.1 as usize].0;
    }
    drop(items);
    let mut sorted: Vec<Item> = keyed.into_iter().map(|(_, raw)| Item(raw)).collect();
    sorted.shrink_to_fit();
    sorted
}

/// [`sort_items`]' sort by date, when the rank of an item's date among the
/// period's dates fits 9 bits and its position 23 (every ledger of up to
/// eight million entries over up to 512 dates): as one `u32` each, sorted
/// and then overwritten with the items in their allocation, the only list
/// besides the items. `None` when they do not fit.
fn sort_items_packed(plan: &Plan, items: &[Item]) -> Option<Vec<Item>> {
    const POS_BITS: u32 = 23;
    const POS: u32 = (1 << POS_BITS) - 1;
    if items.len() > POS as usize {
        return None;
    }
    // the distinct dates; neighbours mostly share one
    let mut days: Vec<i64> = Vec::new();
    let mut last = None;
    for it in items {
        let d = plan.event_day(*it);
        if last != Some(d) {
            last = Some(d);
            if let Err(at) = days.binary_search(&d) {
                if days.len() == 1 << (32 - POS_BITS) {
                    return None;
                }
                days.insert(at, d);
            }
        }
    }
    let mut last = (i64::MIN, 0u32);
    let mut keys: Vec<u32> = Vec::with_capacity(items.len());
    for (k, it) in items.iter().enumerate() {
        let d = plan.event_day(*it);
        if d != last.0 {
            last = (d, days.binary_search(&d).ok()? as u32);
        }
        keys.push(last.1 << POS_BITS | k as u32);
    }
    keys.sort_unstable();
    for x in &mut keys {
        *x = items[(*x & POS) as usize].0;
    }
    Some(keys.into_iter().map(Item).collect())
}

/// Programs whose invoices name transaction ids.
pub fn txn_programs(cfg: &Config) -> Vec<&str> {
    cfg.programs
        .iter()
        .filter(|p| p.rules.iter().any(|r| matches!(r.base, Base::Discount(_))))
        .map(|p| p.id.as_str())
        .collect()
}

/// The facts the engine reads for period `p`: everything before its end,
/// with the transaction ids invoices name and the clicks of programs with
/// fraud rules.
pub fn load_period_facts(store: &Store, cfg: &Config, p: Period) -> Result<Facts> {
    let fraud_programs: Vec<&str> = cfg
        .programs
        .iter()
        .filter(|p| p.fraud.is_some())
        .map(|p| p.id.as_str())
        .collect();
    store.load_facts_with(p.end_ms(), &txn_programs(cfg), &fraud_programs)
}

/// Computes a period's draft from the store without writing it.
pub fn compute_draft(store: &Store, cfg: &Config, p: Period) -> Result<(Draft, i64)> {
    with_plan(store, cfg, p, |plan| {
        Ok((plan.materialize(), plan.watermark))
    })
}

/// Computes a period's draft and hands it to `f`.
pub fn with_plan<R>(
    store: &Store,
    cfg: &Config,
    p: Period,
    f: impl FnOnce(&Plan) -> Result<R>,
) -> Result<R> {
    with_plan_at(store, cfg, p, store.max_arrival()?, f)
}

/// [`with_plan`] over the events that had arrived at `watermark` (the
/// draft records it): an import committed while the facts load is left to
/// the next run, or, once the period is closed, to the late facts, instead
/// of being booked in this draft and then again as late.
fn with_plan_at<R>(
    store: &Store,
    cfg: &Config,
    p: Period,
    watermark: i64,
    f: impl FnOnce(&Plan) -> Result<R>,
) -> Result<R> {
    let ph = Phase::start("load facts");
    let mut facts = load_period_facts(store, cfg, p)?;
    let reviews = crate::fraud::load_reviews(store)?;
    // the last decision this draft sees
    let review_seq = reviews.values().map(|r| r.seq).max().unwrap_or(0);
    drop(ph);
    // the closed period whose late facts become adjustments in this one
    let basis = store.last_closed()?;
    // the last arrival and the last decision the closed period saw
    let (w_h, rs_h) = match basis {
        Some(h) => (
            store.period_state(h)?.map_or(0, |s| s.1),
            store.review_seq(h)?,
        ),
        None => (0, 0),
    };
    let late = match basis {
        Some(h) if h.next() == p => {
            let facts_late = store.late_facts(w_h, watermark, h.end_ms())?;
            let released = late_decisions(&facts, &reviews, rs_h, h.end_ms());
            (facts_late || released).then_some((h, w_h, facts_late))
        }
        _ => None,
    };
    let opts = Options {
        until_ms: p.end_ms(),
        max_arrival: watermark,
        review_seq,
    };
    let old_opts = late.map(|(h, w_h, _)| Options {
        until_ms: h.end_ms(),
        max_arrival: w_h,
        review_seq: rs_h,
    });
    // the fraud rules read the clicks, which the engine does not need: the
    // closed period's view is scored first, then the clicks are handed to
    // the engine, which drops them once its own fraud tasks are done
    let old_pre = old_opts.map(|o| {
        let _ph = Phase::start("fraud rules (closed period's view)");
        crate::fraud::prepare(cfg, &facts, &o)
    });
    let clicks = std::mem::take(&mut facts.fraud);
    // what the closed periods booked on the sales refunds reverse: their
    // clawbacks reverse that, not today's reading of those sales
    let eng = Engine::new(cfg, &facts).with_reviews(&reviews);
    let booked = match basis {
        Some(h) => booked_on_refunded_sales(store, &eng, &reviews, h, w_h)?,
        None => None,
    };
    // the closed period's view first, when there are late facts: this
    // view's clawbacks of closed entries add what the late facts changed
    let old = match (late, old_opts, old_pre.as_ref()) {
        (Some(_), Some(o), Some(pre)) => {
            let _ph = Phase::start("engine (the closed period's view)");
            eng.set_booked(booked.clone().map(std::sync::Arc::new));
            let old = engine::compute_with(&eng, &o, pre)?;
            eng.set_booked(booked.map(|b| std::sync::Arc::new(with_old_view(b, &old, &o))));
            Some(old)
        }
        _ => {
            eng.set_booked(booked.map(std::sync::Arc::new));
            None
        }
    };
    let ph = Phase::start("engine (with the fraud rules)");
    let out = engine::compute_scored(&eng, &opts, engine::Clicks::Owned(clicks))?;
    drop(ph);
    let ph = Phase::start("plan");
    let words = Words::new(&eng, &out);
    let mut items: Vec<Item> = Vec::with_capacity(out.entries.len() + 1024);
    items.extend(
        out.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.period == p)
            .map(|(i, _)| Item::eng(i)),
    );
    let mut own: Vec<Entry> = Vec::new();
    let mut invoices: Vec<Inv> = out
        .invoices
        .iter()
        .enumerate()
        .filter(|(_, l)| l.period == p)
        .map(|(k, _)| Inv::Eng(k as u32))
        .collect();

    // late facts for closed periods become adjustments in the next open one
    if let (Some((h, w_h, facts_late)), Some(old)) = (late, old) {
        let mut late = Vec::new();
        let why = Restated {
            h,
            rs_h,
            facts_late,
            w_h,
        };
        adjustments(&words, &out, &old, p, &why, &mut own, &mut late)?;
        invoices.extend(late.into_iter().map(|l| Inv::Own(Box::new(l))));
    }
    // held entries of closed periods rejected on review are reversed here
    if let Some(h) = store.last_closed()? {
        if h.next() == p {
            review_reversals(store, &reviews, p, h, &mut own)?;
        }
    }
    // balances carried over from another platform (settlement import --map)
    own.extend(crate::migrate::opening_entries(store, cfg, p)?);
    // reinstated reversals and late facts of closed periods that wrote the
    // balance off
    let back = crate::writeoff_back::taken_back(store, &words, &out, &own, p)?;
    own.extend(back);
    items.extend((0..own.len()).map(Item::own));

    let carried_in = crate::carry::carried_in(store, cfg, p)?;
    let earlier_pending = crate::carry::earlier_pending(store, cfg, &reviews, p)?;
    let mut plan = Plan {
        period: p,
        words,
        items: Vec::new(),
        own,
        statements: Vec::new(),
        invoices,
        stats: Vec::new(),
        rules: Vec::new(),
        fraud: Vec::new(),
        watermark,
        review_seq,
        basis,
    };
    // the invoices are sorted on a second thread meanwhile: neither reads
    // what the other makes
    let invs = std::mem::take(&mut plan.invoices);
    let (computed, invs) = std::thread::scope(|sc| {
        let sorting = sc.spawn(|| sort_invoices(&plan, invs));
        let views = items.iter().map(|it| plan.view(*it));
        let computed = statement::compute(p, cfg, views, &carried_in, &earlier_pending);
        match sorting.join() {
            Ok(invs) => (computed, invs),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    let (statements, extra) = computed?;
    plan.invoices = invs;
    for e in extra {
        items.push(Item::own(plan.own.len()));
        plan.own.push(e);
    }
    plan.items = sort_items(&plan, items);
    plan.statements = statements;

    let mut keys: Vec<_> = out.stats.iter().filter(|((per, _), _)| *per == p).collect();
    keys.sort_by(|a, b| facts.syms.str(a.0 .1).cmp(facts.syms.str(b.0 .1)));
    for ((_, prog), s) in keys {
        let name = facts.syms.str(*prog).to_string();
        for (k, v) in [
            ("conversions", s.conversions),
            ("attributed", s.attributed),
            ("unattributed", s.unattributed),
            ("rejected", s.rejected),
            ("reversals", s.reversals),
            ("unknown_program", s.unknown_program),
            ("duplicates", s.duplicates),
        ] {
            // a store drafted before duplicates were counted has no such
            // row; one is written only when there are some
            if k != "duplicates" || v > 0 {
                plan.stats.push((name.clone(), k.to_string(), v as i64));
            }
        }
    }
    for prog in &cfg.programs {
        for r in &prog.rules {
            plan.rules.push((
                r.id.clone(),
                prog.id.clone(),
                prog.model.as_str().to_string(),
                r.description.clone(),
            ));
        }
    }
    plan.rules.sort();
    plan.fraud = fraud_rows(&plan.words, p);
    drop(ph);
    f(&plan)
}

/// The period's flagged conversions as fraud.csv rows, in `(ts, event id)`
/// order.
fn fraud_rows(words: &Words, p: Period) -> Vec<Vec<String>> {
    let f = words.eng.facts;
    let mut rows: Vec<&engine::FraudRow> = words
        .out
        .fraud
        .iter()
        .filter(|r| Period::of_ms(f.convs[r.conv as usize].ts) == p)
        .collect();
    rows.sort_by(|a, b| {
        let (ca, cb) = (&f.convs[a.conv as usize], &f.convs[b.conv as usize]);
        ca.ts.cmp(&cb.ts).then_with(|| f.id(ca).cmp(f.id(cb)))
    });
    rows.iter()
        .map(|r| {
            let review = matches!(
                r.outcome,
                engine::Outcome::Released | engine::Outcome::ReviewRejected
            )
            .then(|| words.eng.reviews.get(&r.conv))
            .flatten();
            vec![
                r.entry.map(|h| hex_id("le_", &h)).unwrap_or_default(),
                f.syms.str(r.partner).to_string(),
                words.eng.cfg.programs[usize::from(r.prog)].id.clone(),
                f.id(&f.convs[r.conv as usize]).to_string(),
                r.verdict.score.to_string(),
                crate::fraud::reasons(r.mask),
                r.verdict.action.as_str().to_string(),
                r.outcome.decision().to_string(),
                review.map(|v| v.by.clone()).unwrap_or_default(),
                review.map(|v| v.why.clone()).unwrap_or_default(),
            ]
        })
        .collect()
}

pub(crate) fn dec(s: &str) -> Result<Decimal> {
    crate::money::parse_decimal(s)
        .ok_or_else(|| Error::data(format!("bad amount {s:?} in the store")))
}

fn put(h: &mut Sha256, s: &str) {
    h.update(s.as_bytes());
    h.update([0]);
}

fn hash_statements(h: &mut Sha256, statements: &[Statement]) {
    h.update([2]);
    for s in statements {
        for c in s.csv_row() {
            put(h, &c);
        }
        put(h, &s.model);
        h.update([1]);
    }
    h.update([2]);
}

/// An invoice line's columns (the texts of `ledger_blocks::INVOICES`,
/// `I_ID` .. `I_CALC`), added to `b`.
fn invoice_columns(l: &InvoiceLine, b: &mut Block) -> std::result::Result<(), batch::TooLarge> {
    let row = invoice_row(l);
    b.push_values(
        &[],
        &[
            &l.id, &l.partner, &l.program, &l.txn_id, &row[3], &row[4], &row[5], &row[6],
            &l.source, &l.calc,
        ]
        .map(|v| Some(v.as_bytes())),
    )
}

fn hash_tail(
    h: &mut Sha256,
    stats: &[(String, String, i64)],
    rules: &[(String, String, String, String)],
) {
    h.update([2]);
    for (a, b, c) in stats {
        put(h, a);
        put(h, b);
        h.update(c.to_le_bytes());
    }
    for (a, b, c, e) in rules {
        put(h, a);
        put(h, b);
        put(h, c);
        put(h, e);
    }
}

pub const LEDGER_COLUMNS: [&str; 13] = [
    "id",
    "period",
    "partner",
    "program",
    "kind",
    "amount",
    "currency",
    "rule",
    "sources",
    "event_date",
    "reason",
    "adjusts",
    "calc",
];

pub fn ledger_row(e: &Entry) -> Vec<String> {
    vec![
        e.id.clone(),
        e.period.to_string(),
        e.partner.clone(),
        e.program.clone(),
        e.kind.to_string(),
        fmt_decimal(e.amount, e.currency),
        e.currency.to_string(),
        e.rule.clone(),
        e.sources.join(" "),
        date_of_day(e.event_day),
        e.reason.clone(),
        e.adjusts.clone(),
        e.calc.clone(),
    ]
}

pub const INVOICE_COLUMNS: [&str; 7] = [
    "period",
    "partner",
    "txn_id",
    "list_amount",
    "discount_percent",
    "amount_due",
    "currency",
];

pub fn invoice_row(l: &InvoiceLine) -> Vec<String> {
    vec![
        l.period.to_string(),
        l.partner.clone(),
        l.txn_id.clone(),
        fmt_decimal(l.list_amount, l.currency),
        plain(l.discount_percent),
        fmt_decimal(l.amount_due, l.currency),
        l.currency.to_string(),
    ]
}

/// `settlement run`: refuses closed periods; a rerun changes nothing.
pub fn run(store: &mut Store, cfg: &Config, p: Period) -> Result<RunOutcome> {
    check_open(store, p)?;
    let store: &Store = store;
    with_plan(store, cfg, p, |plan| write_plan(store, plan))
}

fn check_open(store: &Store, p: Period) -> Result<()> {
    if let Some((state, _, _)) = store.period_state(p)? {
        if state == "closed" {
            return Err(Error::Closed(p.to_string()));
        }
    }
    if let Some(h) = store.last_closed()? {
        if p < h {
            return Err(Error::Usage(format!(
                "period {p} precedes the closed period {h}: it is frozen; late facts for it are booked as adjustments in {}",
                h.next()
            )));
        }
    }
    Ok(())
}

/// The `ledger` insert's parameter of each text column (for the entries
/// kept as rows): [`ledger_columns`] pushes the event day, then the texts
/// in `ledger_blocks`' order (`L_ID` .. `L_ADJUSTS`), this array's order.
const LEDGER_TEXT_PARAMS: [usize; crate::ledger_blocks::TEXTS] =
    [2, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14];

/// A block of rows (ledger entries, or invoice lines) as a producer of
/// [`in_blocks`] made it: the rows, each column's bytes unpacked (what the
/// draft's fingerprint reads, [`hash_block`]) and the block packed as it
/// is stored.
#[derive(Clone)]
struct LedgerRows {
    rows: Block,
    columns: Vec<Vec<u8>>,
    block: Vec<u8>,
}

impl batch::Refill for LedgerRows {
    fn clear(&mut self) {
        self.rows.clear();
        self.columns.clear();
        self.block.clear();
    }
    fn is_empty(&self) -> bool {
        self.rows.rows() == 0
    }
}

/// Adds a block's rows to the draft's fingerprint: its row count, then
/// each column's length and bytes as stored unpacked (so the fingerprint
/// reads what the store holds, whatever zstd makes of it).
fn hash_block(h: &mut Sha256, b: &LedgerRows) {
    h.update((b.rows.rows() as u64).to_le_bytes());
    for c in &b.columns {
        h.update((c.len() as u64).to_le_bytes());
        h.update(c);
    }
}

/// Adds an entry's columns to `rows`; `amount` is room to write its
/// amount in.
fn ledger_columns(
    e: &EntryView,
    rows: &mut Block,
    amount: &mut String,
) -> std::result::Result<(), batch::TooLarge> {
    use std::fmt::Write;
    amount.clear();
    let _ = write!(amount, "{}", Amount(e.amount, e.currency));
    let amount = amount.as_str();
    let joined;
    let sources = match e.sources {
        [] => "",
        [one] => one,
        many => {
            joined = many.join(" ");
            &joined
        }
    };
    rows.push_values(
        &[Some(e.event_day)],
        &[
            e.id,
            e.partner,
            e.program,
            e.kind.as_str(),
            amount,
            e.currency.code(),
            e.rule,
            sources,
            e.reason,
            e.calc,
            e.adjusts,
        ]
        .map(|v| Some(v.as_bytes())),
    )
}

/// Binds and inserts row `r` of `rows` at ledger position `pos`.
fn insert_ledger_row(
    st: &mut rusqlite::CachedStatement,
    rows: &Block,
    r: usize,
    pos: i64,
    period: i64,
) -> rusqlite::Result<usize> {
    st.raw_bind_parameter(1, pos)?;
    st.raw_bind_parameter(3, period)?;
    st.raw_bind_parameter(
        11,
        rows.int(crate::ledger_blocks::L_EVENT_DAY, r).unwrap_or(0),
    )?;
    bind_texts(st, rows, r, &LEDGER_TEXT_PARAMS)?;
    st.raw_execute()
}

/// Binds the text columns of row `r` of `rows`, column `c` to parameter
/// `params[c]`, as TEXT (the producers push only strings).
fn bind_texts(
    st: &mut rusqlite::CachedStatement,
    rows: &Block,
    r: usize,
    params: &[usize],
) -> rusqlite::Result<()> {
    for (c, &param) in params.iter().enumerate() {
        let v = rows.bytes(c, r).unwrap_or_default();
        st.raw_bind_parameter(
            param,
            rusqlite::types::ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(v)),
        )?;
    }
    Ok(())
}

/// Writes `items` as blocks of `table`, a block per [`BLOCK_ROWS`] of them
/// in order: producer threads (one per core, up to four; block i on
/// producer i % n) each make their own state with `state`, put a block's
/// items into rows (and the fingerprint's bytes) with `fill` and pack them,
/// while this thread hands each batch to `take` with its block's index, in
/// order. The batches go back to be refilled, so what a producer allocates
/// it also frees. The first error stops both sides and is the one returned.
///
/// [`BLOCK_ROWS`]: crate::ledger_blocks::BLOCK_ROWS
fn in_blocks<T: Sync, S>(
    phase: &'static str,
    items: &[T],
    table: crate::ledger_blocks::Table,
    state: impl Fn() -> S + Sync,
    fill: impl Fn(&mut S, &[T], &mut Block) -> Result<()> + Sync,
    mut take: impl FnMut(usize, &LedgerRows) -> Result<()>,
) -> Result<()> {
    use crate::ledger_blocks::BLOCK_ROWS;
    let producers = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4));
    let empty = LedgerRows {
        rows: table.block(0),
        columns: Vec::new(),
        block: Vec::new(),
    };
    std::thread::scope(|sc| {
        let mut readers = Vec::new();
        let mut handles = Vec::new();
        for k in 0..producers {
            let (filler, reader) = batch::channel(empty.clone(), 2);
            readers.push(reader);
            let (state, fill) = (&state, &fill);
            handles.push(sc.spawn(move || -> Result<()> {
                let _p = Phase::start(phase);
                let mut st = state();
                for chunk in items.chunks(BLOCK_ROWS).skip(k).step_by(producers) {
                    let mut b = filler.fresh();
                    fill(&mut st, chunk, &mut b.rows)?;
                    (b.block, b.columns) = b.rows.encode_packed_with_columns();
                    if filler.send(b).is_none() {
                        // the taker stopped: its result says why
                        return Ok(());
                    }
                }
                Ok(())
            }));
        }
        let mut taken = Ok(());
        for i in 0.. {
            // block i's producer is done when it has no more
            let reader = &readers[i % producers];
            let Some(b) = reader.next() else {
                break;
            };
            taken = take(i, &b);
            reader.give_back(b);
            if taken.is_err() {
                break;
            }
        }
        drop(readers);
        let mut made = Ok(());
        for h in handles {
            match h.join() {
                Ok(r) => made = made.and(r),
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        taken.and(made)
    })
}

/// Replaces the period's draft in one transaction, fingerprinting it on
/// the way; when the fingerprint is the stored one, rolls back instead.
/// The transaction takes the store's write lock first and checks again that
/// the period is open: a `close` committed by another process while this
/// run computed is never undone (the run fails, the closed period stays).
fn write_plan(store: &Store, plan: &Plan) -> Result<RunOutcome> {
    let _ph = Phase::start("write draft");
    let p = plan.period;
    let tx = rusqlite::Transaction::new_unchecked(
        &store.conn,
        rusqlite::TransactionBehavior::Immediate,
    )?;
    check_open(store, p)?;
    let basis = store.last_closed()?;
    if basis != plan.basis {
        return Err(Error::Usage(format!(
            "period {} was closed while this run computed {p}'s draft (whose late facts and reviews it changes): run `settlement run --period {p}` again",
            basis.map_or_else(|| "none".to_string(), |h| h.to_string())
        )));
    }
    let prev = store.period_state(p)?;
    // an unchanged draft rolls back to here and keeps the lock to record
    // its watermark and basis
    tx.execute_batch("SAVEPOINT draft")?;
    let base = pos_base(p);
    let ph_del = Phase::start("write: deletes");
    tx.execute(
        "DELETE FROM ledger WHERE pos >= ?1 AND pos < ?2",
        params![base, pos_base(p.next())],
    )?;
    for t in [crate::ledger_blocks::LEDGER, crate::ledger_blocks::INVOICES] {
        crate::ledger_blocks::delete(&tx, t, base, pos_base(p.next()))?;
    }
    for t in ["statements", "rules", "stats", "fraud"] {
        tx.execute(&format!("DELETE FROM {t} WHERE period = ?1"), [p.key()])?;
    }
    drop(ph_del);
    let ph_l = Phase::start("write: ledger");
    // producer threads put entries into words, format their columns and
    // pack them into their block (batch i is the block at `base + i *
    // BLOCK_ROWS`) while this one fingerprints them and writes the blocks
    // (and as rows the few entries that queries look up by their reason)
    let mut h = Sha256::new();
    {
        use crate::ledger_blocks::{kept_as_row, BLOCK_ROWS, LEDGER, L_REASON};
        let mut st = tx.prepare_cached(
            "INSERT INTO ledger (pos, id, period, partner, program, kind, amount, currency, rule, sources,
               event_day, reason, calc, adjusts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?;
        let mut busy = std::time::Duration::ZERO;
        in_blocks(
            "entry words (producer)",
            &plan.items,
            LEDGER,
            || (Scratch::default(), String::new()),
            |(words, amount), items, b| {
                for it in items {
                    plan.with_view_in(*it, words, |e| ledger_columns(e, b, amount))
                        .map_err(|e| Error::data(format!("writing the ledger: {e}")))?;
                }
                Ok(())
            },
            |i, b| {
                let t = std::time::Instant::now();
                hash_block(&mut h, b);
                let rows = &b.rows;
                let first = base + (i * BLOCK_ROWS) as i64;
                for r in 0..rows.rows() {
                    if kept_as_row(rows.bytes(L_REASON, r).unwrap_or_default()) {
                        insert_ledger_row(&mut st, rows, r, first + r as i64, p.key())?;
                    }
                }
                crate::ledger_blocks::insert(&tx, LEDGER, p.key(), first, rows.rows(), &b.block)?;
                busy += t.elapsed();
                Ok(())
            },
        )?;
        if std::env::var_os("SETTLEMENT_TIMING").is_some() {
            eprintln!("timing: ledger inserts: {:.3} s", busy.as_secs_f64());
        }
    }
    drop(ph_l);
    {
        let _x = Phase::start("write: statements, invoices, stats, rules, fraud");
        let mut st = tx.prepare_cached(
            "INSERT INTO statements (period, partner, program, currency, earned, reversed, adjusted, carried_in,
               pending, payable, carried_out, model) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for s in &plan.statements {
            let r = s.csv_row();
            st.execute(params![
                p.key(),
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
                r[10],
                s.model
            ])?;
        }
        hash_statements(&mut h, &plan.statements);
        // as the ledger's entries: producer threads put the invoice lines
        // into words and columns and pack them, this one fingerprints and
        // stores the blocks in order
        {
            use crate::ledger_blocks::{BLOCK_ROWS, INVOICES};
            in_blocks(
                "invoice words (producer)",
                &plan.invoices,
                INVOICES,
                || (),
                |(), invs, b| {
                    for inv in invs {
                        invoice_columns(&plan.invoice(inv), b)
                            .map_err(|e| Error::data(format!("writing the invoices: {e}")))?;
                    }
                    Ok(())
                },
                |i, b| {
                    hash_block(&mut h, b);
                    let first = base + (i * BLOCK_ROWS) as i64;
                    crate::ledger_blocks::insert(
                        &tx,
                        INVOICES,
                        p.key(),
                        first,
                        b.rows.rows(),
                        &b.block,
                    )
                },
            )?;
        }
        let mut st = tx.prepare_cached(
            "INSERT INTO stats (period, program, name, value) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (prog, name, v) in &plan.stats {
            st.execute(params![p.key(), prog, name, v])?;
        }
        let mut st = tx.prepare_cached(
            "INSERT INTO rules (period, rule, program, model, description) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (r, prog, model, desc) in &plan.rules {
            st.execute(params![p.key(), r, prog, model, desc])?;
        }
        let mut st = tx.prepare_cached(
            "INSERT INTO fraud (period, pos, entry, partner, program, event, score, reasons, action,
               decision, decided_by, why) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for (i, r) in plan.fraud.iter().enumerate() {
            let score: i64 = r[4].parse().unwrap_or(0);
            st.execute(params![
                p.key(),
                i as i64,
                r[0],
                r[1],
                r[2],
                r[3],
                score,
                r[5],
                r[6],
                r[7],
                r[8],
                r[9]
            ])?;
        }
    }
    hash_tail(&mut h, &plan.stats, &plan.rules);
    if !plan.fraud.is_empty() {
        h.update([3]);
        for r in &plan.fraud {
            for c in r {
                put(&mut h, c);
            }
        }
    }
    let hash = hex::encode(h.finalize());
    let (ne, ns) = (plan.items.len(), plan.statements.len());
    let basis_key = plan.basis.map(|h| h.key());
    if let Some((state, _, old)) = prev {
        if state == "draft" && old == hash {
            // the stored draft is this one: its rows stay as they were
            tx.execute_batch("ROLLBACK TO draft; RELEASE draft")?;
            tx.execute(
                "UPDATE periods SET watermark = ?2, basis = ?3, review_seq = ?4 WHERE period = ?1",
                params![p.key(), plan.watermark, basis_key, plan.review_seq],
            )?;
            tx.commit()?;
            return Ok(RunOutcome::Unchanged {
                entries: ne,
                statements: ns,
            });
        }
    }
    tx.execute(
        "INSERT INTO periods (period, state, watermark, draft_hash, basis, review_seq) VALUES (?1, 'draft', ?2, ?3, ?4, ?5)
         ON CONFLICT (period) DO UPDATE SET state = 'draft', watermark = excluded.watermark, draft_hash = excluded.draft_hash, basis = excluded.basis, review_seq = excluded.review_seq",
        params![p.key(), plan.watermark, hash, basis_key, plan.review_seq],
    )?;
    let c = Phase::start("commit");
    tx.commit()?;
    drop(c);
    store.checkpoint_behind();
    Ok(RunOutcome::Replaced {
        entries: ne,
        statements: ns,
    })
}

/// How many conversions period `p`'s draft counted for nothing because
/// they repeat the program, `event` and `txn_id` of another (the stats'
/// `duplicates`).
pub fn duplicates(store: &Store, p: Period) -> Result<i64> {
    Ok(stat(store, p, "duplicates")?.iter().map(|x| x.1).sum())
}

/// A figure of period `p`'s draft per program (the stats, as report.html
/// shows them), the programs with one above zero, by name.
pub fn stat(store: &Store, p: Period, name: &str) -> Result<Vec<(String, i64)>> {
    let mut st = store.conn.prepare(
        "SELECT program, value FROM stats WHERE period = ?1 AND name = ?2 AND value > 0 ORDER BY program",
    )?;
    let rows = st.query_map(params![p.key(), name], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The first month before `p` that has never been run: after the last
/// closed period, or, before any was closed, from the month of the store's
/// first conversion or MDF claim on (deal registrations book nothing). Closing `p` then would freeze
/// that month with no draft: its facts arrived before `p`'s watermark, so
/// they are no late facts either, and would be booked in no period at all.
pub fn never_run_before(store: &Store, p: Period) -> Result<Option<Period>> {
    let mut q = match store.last_closed()? {
        Some(h) => h.next(),
        None => match store.first_booking_ms()? {
            Some(ms) => Period::of_ms(ms),
            None => return Ok(None),
        },
    };
    while q < p {
        if store.period_state(q)?.is_none() {
            return Ok(Some(q));
        }
        q = q.next();
    }
    Ok(None)
}

/// `settlement close`: freezes the period's draft.
pub fn close(store: &mut Store, p: Period) -> Result<()> {
    close_with(store, p, false)
}

/// [`close`]; with `first`, `p` is the store's first settled period (no
/// period is closed yet): the months before it are never settled, and
/// their facts are never booked (nightly's `first_period`, or
/// `settlement close --first`: a store holding history from before the
/// operator settles with it).
pub fn close_with(store: &mut Store, p: Period, first: bool) -> Result<()> {
    let store: &Store = store;
    // the write lock first: no import or run commits between the checks
    // below and the close (a rollback, on any refusal, releases it)
    let tx = rusqlite::Transaction::new_unchecked(
        &store.conn,
        rusqlite::TransactionBehavior::Immediate,
    )?;
    if first {
        if let Some(h) = store.last_closed()? {
            return Err(Error::Usage(format!(
                "--first: {h} is closed already; only a store's first close may leave the months before it unsettled"
            )));
        }
    }
    match store.period_state(p)? {
        None => {
            return Err(Error::Usage(format!(
                "period {p} has no draft: run `settlement run --period {p}` first"
            )))
        }
        Some((s, _, _)) if s == "closed" => return Err(Error::Closed(p.to_string())),
        Some(_) => {}
    }
    if let Some(h) = store.last_closed()? {
        if p < h {
            return Err(Error::Closed(p.to_string()));
        }
    }
    let open_before: Option<i64> = store.conn.query_row(
        "SELECT MIN(period) FROM periods WHERE state = 'draft' AND period < ?1",
        [p.key()],
        |r| r.get(0),
    )?;
    if let Some(q) = open_before {
        return Err(Error::Usage(format!(
            "period {} is still open: close it before {p}",
            Period::from_key(q)
        )));
    }
    if let Some(q) = never_run_before(store, p)?.filter(|_| !first) {
        let start = if store.last_closed()?.is_none() {
            format!("; or, to settle from {p} on and never book the facts of the months before it, close it with --first")
        } else {
            String::new()
        };
        return Err(Error::Usage(format!(
            "period {q} has never been run: periods close in order, so run and close {q} before {p} (else its facts are booked in no period){start}"
        )));
    }
    // the draft must have been computed after the period before it closed:
    // else the late facts of that one are in neither
    let last = store.last_closed()?;
    if store.draft_basis(p)? != last {
        return Err(Error::Usage(format!(
            "period {p}'s draft was computed before {} was closed, so it lacks that period's late facts and reviews: run `settlement run --period {p}` again, then close it",
            last.map_or_else(|| "the last closed period".to_string(), |h| h.to_string())
        )));
    }
    if let Some(partner) = crate::migrate::replaced_since_draft(store, p)? {
        return Err(Error::Usage(format!(
            "the opening balance of {partner} was replaced since {p}'s draft booked it (a corrected export imported after the run): run `settlement run --period {p}` again, then close it"
        )));
    }
    tx.execute(
        "UPDATE periods SET state = 'closed' WHERE period = ?1",
        [p.key()],
    )?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `p`'s ledger.csv, statements.csv and payouts.csv as `report` writes
    /// them into `out`.
    fn outputs(store: &Store, p: Period, out: &std::path::Path) -> Vec<Vec<u8>> {
        crate::report::report(store, p, out).unwrap();
        ["ledger.csv", "statements.csv", "payouts.csv"]
            .map(|f| std::fs::read(out.join(f)).unwrap())
            .to_vec()
    }

    /// A draft computed while the period before it was open lacks that
    /// period's late facts: `close` refuses it until it is run again, and a
    /// run during which that period closes writes nothing. Then the late
    /// facts are booked once, as when the periods are run and closed in
    /// turn. (Before, `run p`, late events, `run p+1`, `close p`, `close
    /// p+1` lost them: p+1's draft had been computed before p closed.)
    #[test]
    fn a_draft_older_than_the_last_close_is_neither_written_nor_closed() {
        let (g, records) = crate::sim::records(4_000);
        let (early, late) = crate::sim::split_late(records, 2_500);
        let cfg =
            crate::config::parse(std::path::Path::new("p.toml"), crate::sim::PROGRAMS).unwrap();
        let (p, next) = (g.period, g.period.next());
        let dir = tempfile::tempdir().unwrap();
        let files = |store: &Store, name: &str| outputs(store, next, &dir.path().join(name));

        // in turn: run p, the late events, close p, run and close p+1
        let mut turn = Store::open(&dir.path().join("turn.db")).unwrap();
        crate::import::import_records(&mut turn, &early).unwrap();
        run(&mut turn, &cfg, p).unwrap();
        crate::import::import_records(&mut turn, &late).unwrap();
        close(&mut turn, p).unwrap();
        run(&mut turn, &cfg, next).unwrap();
        close(&mut turn, next).unwrap();
        let want = files(&turn, "turn");
        let ledger = String::from_utf8(want[0].clone()).unwrap();
        assert!(ledger.contains(",adjustment,"), "no late facts booked");

        // p+1 run before p closes
        let db = dir.path().join("ahead.db");
        let mut ahead = Store::open(&db).unwrap();
        crate::import::import_records(&mut ahead, &early).unwrap();
        run(&mut ahead, &cfg, p).unwrap();
        crate::import::import_records(&mut ahead, &late).unwrap();
        run(&mut ahead, &cfg, next).unwrap();
        let drafted = ahead.period_state(next).unwrap();
        close(&mut ahead, p).unwrap();
        let e = close(&mut ahead, next).unwrap_err().to_string();
        assert!(
            e.contains(&format!("computed before {p} was closed"))
                && e.contains(&format!("settlement run --period {next}")),
            "{e}"
        );
        assert_eq!(ahead.period_state(next).unwrap(), drafted);

        // a run of p+1 during which p closes writes nothing
        let mut ahead2 = Store::open(&dir.path().join("ahead2.db")).unwrap();
        crate::import::import_records(&mut ahead2, &early).unwrap();
        run(&mut ahead2, &cfg, p).unwrap();
        crate::import::import_records(&mut ahead2, &late).unwrap();
        let path2 = dir.path().join("ahead2.db");
        let r = with_plan(&ahead2, &cfg, next, |plan| {
            let mut other = Store::open(&path2).unwrap();
            close(&mut other, p).unwrap();
            write_plan(&ahead2, plan)
        });
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains(&format!("{p} was closed while this run computed")),
            "{e}"
        );
        assert_eq!(ahead2.period_state(next).unwrap(), None);

        // run again, both close, and the late facts are booked once
        for store in [&mut ahead, &mut ahead2] {
            run(store, &cfg, next).unwrap();
            close(store, next).unwrap();
        }
        assert!(
            files(&ahead, "ahead") == want,
            "p+1 differs from the periods in turn"
        );
        assert!(
            files(&ahead2, "ahead2") == want,
            "p+1 differs from the periods in turn"
        );
    }

    /// A period closed by another process while a run computes its draft
    /// stays closed: the run fails saying so, and the closed draft (its
    /// ledger, statements and payouts) is the one closed, byte for byte.
    #[test]
    fn a_close_during_a_run_is_never_undone() {
        let (g, records) = crate::sim::records(3_000);
        let first =
            crate::config::parse(std::path::Path::new("p.toml"), crate::sim::PROGRAMS).unwrap();
        let changed = crate::sim::PROGRAMS.replacen("percent = \"20\"", "percent = \"25\"", 1);
        let second = crate::config::parse(std::path::Path::new("p.toml"), &changed).unwrap();
        let p = g.period;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let mut store = Store::open(&db).unwrap();
        crate::import::import_records(&mut store, &records).unwrap();
        run(&mut store, &first, p).unwrap();
        let files = |name: &str| outputs(&store, p, &dir.path().join(name));
        let before = files("before");

        // a second run (another rate) computes; meanwhile the period closes
        let mut closed = false;
        let r = with_plan(&store, &second, p, |plan| {
            let mut other = Store::open(&db).unwrap();
            close(&mut other, p).unwrap();
            closed = true;
            write_plan(&store, plan)
        });
        assert!(closed);
        match r {
            Err(Error::Closed(q)) => assert_eq!(q, p.to_string()),
            other => panic!("expected the period closed, got {:?}", other.map(|_| ())),
        }
        assert_eq!(store.period_state(p).unwrap().unwrap().0, "closed");
        assert!(files("after") == before, "the closed draft changed");
        // and a run of it now says so at once
        assert!(matches!(run(&mut store, &second, p), Err(Error::Closed(_))));
    }

    /// Events imported while a run loads its facts (after the watermark it
    /// records) are not in its draft: once the period is closed they are
    /// late facts, booked once as adjustments in the next period, exactly
    /// as when they arrive after the run. (Before, the draft took them and
    /// the next period booked them again.)
    #[test]
    fn events_after_the_watermark_wait_for_the_next_run() {
        let (g, records) = crate::sim::records(4_000);
        // the registry and the first events, then conversions alone
        let (early, late) = crate::sim::split_late(records, 2_500);
        assert!(late.len() > 500, "{}", late.len());
        let cfg =
            crate::config::parse(std::path::Path::new("p.toml"), crate::sim::PROGRAMS).unwrap();
        let (p, next) = (g.period, g.period.next());
        let dir = tempfile::tempdir().unwrap();
        let reports = |store: &Store, name: &str| -> Vec<Vec<u8>> {
            [p, next]
                .iter()
                .flat_map(|q| outputs(store, *q, &dir.path().join(format!("{name}-{q}"))))
                .collect()
        };

        // the late conversions arrive after the run
        let mut after = Store::open(&dir.path().join("after.db")).unwrap();
        crate::import::import_records(&mut after, &early).unwrap();
        run(&mut after, &cfg, p).unwrap();
        close(&mut after, p).unwrap();
        crate::import::import_records(&mut after, &late).unwrap();
        run(&mut after, &cfg, next).unwrap();

        // ... or while it loads: there before the facts, after the watermark
        let mut during = Store::open(&dir.path().join("during.db")).unwrap();
        crate::import::import_records(&mut during, &early).unwrap();
        let watermark = during.max_arrival().unwrap();
        crate::import::import_records(&mut during, &late).unwrap();
        assert!(during.max_arrival().unwrap() > watermark);
        with_plan_at(&during, &cfg, p, watermark, |plan| {
            write_plan(&during, plan)
        })
        .unwrap();
        close(&mut during, p).unwrap();
        run(&mut during, &cfg, next).unwrap();

        let (a, d) = (reports(&after, "after"), reports(&during, "during"));
        assert!(
            a == d,
            "the two stores' ledgers, statements or payouts differ"
        );
        // the late conversions are adjustments in the next period
        let next_ledger = String::from_utf8(a[3].clone()).unwrap();
        assert!(
            next_ledger.contains(",adjustment,"),
            "{}",
            &next_ledger[..next_ledger.len().min(400)]
        );
    }

    /// `in_blocks` hands every block to `take` once, in order, with its
    /// index and its rows packed; an error of a producer or of `take`
    /// stops it and is the one returned.
    #[test]
    fn in_blocks_takes_every_block_in_order() {
        use crate::ledger_blocks::{BLOCK_ROWS, INVOICES};
        let items: Vec<u32> = (0..(BLOCK_ROWS * 5 + 17) as u32).collect();
        let fill = |seen: &mut usize, xs: &[u32], b: &mut Block| -> Result<()> {
            for x in xs {
                if *x == u32::MAX {
                    return Err(Error::data("bad item"));
                }
                *seen += 1;
                let texts: Vec<String> = (0..10).map(|c| format!("{x}:{c}")).collect();
                let texts: Vec<Option<&[u8]>> = texts.iter().map(|t| Some(t.as_bytes())).collect();
                b.push_values(&[], &texts).unwrap();
            }
            Ok(())
        };
        let mut got = Vec::new();
        in_blocks(
            "test",
            &items,
            INVOICES,
            || 0usize,
            fill,
            |i, b| {
                let mut blk = INVOICES.block(0);
                blk.decode(0, &b.block, INVOICES.all())?;
                assert_eq!(blk.rows(), b.rows.rows());
                // the unpacked columns the fingerprint reads: the rows'
                assert_eq!(b.columns, b.rows.columns());
                for r in 0..blk.rows() {
                    let first = std::str::from_utf8(b.rows.bytes(0, r).unwrap()).unwrap();
                    let x: u32 = first.strip_suffix(":0").unwrap().parse().unwrap();
                    for c in 0..10 {
                        assert_eq!(blk.bytes(c, r), Some(format!("{x}:{c}").as_bytes()));
                    }
                    got.push((i, x));
                }
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got.len(), items.len());
        for (k, &(i, x)) in got.iter().enumerate() {
            assert_eq!((i, x), (k / BLOCK_ROWS, k as u32));
        }

        // a producer's error, in the third block
        let mut bad = items.clone();
        bad[BLOCK_ROWS * 2 + 5] = u32::MAX;
        let mut taken = 0;
        let e = in_blocks(
            "test",
            &bad,
            INVOICES,
            || 0usize,
            fill,
            |_, _| {
                taken += 1;
                Ok(())
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("bad item"), "{e}");
        assert_eq!(taken, 2);
        // take's error, at the second block
        let e = in_blocks(
            "test",
            &items,
            INVOICES,
            || 0usize,
            fill,
            |i, _| match i {
                1 => Err(Error::data("full disk")),
                _ => Ok(()),
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("full disk"), "{e}");
    }

    /// `permute` puts `v[order[i]]` at `i`, for permutations of every
    /// shape (cycles long and short, fixed points, the identity).
    #[test]
    fn permute_follows_the_order() {
        let mut x: u64 = 3;
        for n in [0usize, 1, 2, 5, 64, 1000] {
            for round in 0..4 {
                let mut order: Vec<u32> = (0..n as u32).collect();
                if round > 0 {
                    for i in (1..n).rev() {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        let j = (x >> 33) as usize % (i + 1);
                        // round 1: a few swaps only (fixed points stay)
                        if round > 1 || j.is_multiple_of(7) {
                            order.swap(i, j);
                        }
                    }
                }
                let v: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
                let want: Vec<String> = order.iter().map(|&o| v[o as usize].clone()).collect();
                let mut got = v.clone();
                permute(&mut got, &mut order.clone());
                assert_eq!(got, want, "n {n} round {round}");
            }
        }
    }

    /// The ledger's order by date is the same from packed keys as from
    /// (date, position) pairs, whatever order the engine's items come in.
    #[test]
    fn items_sort_the_same_packed_or_not() {
        let (g, records) = crate::sim::records(6_000);
        let cfg =
            crate::config::parse(std::path::Path::new("p.toml"), crate::sim::PROGRAMS).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        crate::import::import_records(&mut store, &records).unwrap();
        with_plan(&store, &cfg, g.period, |plan| {
            let split = plan
                .items
                .iter()
                .position(|it| it.is_own())
                .unwrap_or(plan.items.len());
            assert!(split > 1000 && split < plan.items.len(), "{split}");
            let days: std::collections::BTreeSet<i64> =
                plan.items.iter().map(|it| plan.event_day(*it)).collect();
            assert!(days.len() > 20);
            for shuffle in [false, true] {
                let mut items: Vec<Item> = plan.items.iter().map(|it| Item(it.0)).collect();
                if shuffle {
                    items[..split].reverse();
                }
                let a = sort_items_with(plan, items.iter().map(|it| Item(it.0)).collect(), true);
                let b = sort_items_with(plan, items, false);
                let raw = |v: &[Item]| v.iter().map(|it| it.0).collect::<Vec<u32>>();
                assert_eq!(raw(&a), raw(&b));
                assert!(a
                    .windows(2)
                    .all(|w| plan.event_day(w[0]) <= plan.event_day(w[1])));
                if !shuffle {
                    assert_eq!(raw(&a), raw(&plan.items));
                }
            }
            Ok(())
        })
        .unwrap();
    }
}
