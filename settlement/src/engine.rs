//! The commission engine: a pure function from facts and `programs.toml` to
//! ledger entries and invoice lines, for every period before a bound.
//!
//! Conversions are visited in `(ts, id)` order, so attribution (which looks
//! only at earlier facts) and every per-period rule (caps, ladders,
//! minimums) see the same inputs whatever the import order was.

use crate::config::{Base, Config, Metric, Mode, Program, StepBase};
use crate::error::{Error, Result};
use crate::facts::{ClickFacts, Conv, Facts, NONE, NO_TS};
use crate::fraud::{self, Action, Pre, Review, Verdict};
use crate::ledger::{EntryKind, Rejection};
use crate::money::{Exact, Money};
use crate::period::{add_months_ms, date_of_day, Period, DAY_MS};
use edge::currency::Currency;
use rust_decimal::Decimal;
use rustc_hash::{FxHashMap, FxHashSet};
use sha2::{Digest, Sha256};

/// Which facts the engine sees.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Facts with `ts` before this instant (exclusive).
    pub until_ms: i64,
    /// Facts imported at or before this arrival number.
    pub max_arrival: i64,
    /// Operators' decisions that restate closed periods (`reviews.restates`:
    /// releases of entries a fraud rule rejected, rejects of held entries)
    /// count when made at or before this review number (`reviews.seq`): a
    /// closed period's view sees the decisions its draft saw. Releases of
    /// held entries count whenever made (paid apart from the views).
    pub review_seq: i64,
}

/// How a conversion found its partner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    None,
    /// The customer's lifetime lock, set by the conversion (index into
    /// `Facts::convs`) named.
    Lifetime(u32),
    Click,
    Coupon,
    /// Index into `Facts::deals`.
    Deal(u32),
    UnknownProgram,
    Reversal,
    /// A `reinstate`: it cancels the refund or chargeback its
    /// `original_txn_id` names (see the clawbacks in [`compute`]).
    Reinstate,
    /// It repeats the program, `event` and `txn_id` of the conversion
    /// (index into `Facts::convs`) that stands for both, and counts for
    /// nothing.
    Duplicate(u32),
}

/// The arithmetic of an entry, enough to say it in words. The rare
/// variants with figures are boxed, so an entry stays small.
#[derive(Clone, Debug, PartialEq)]
pub enum Calc {
    /// The rule's simple base applied to the source event.
    Base,
    /// `(volume before, the event's volume)`
    LadderMarginal(Box<(Decimal, Decimal)>),
    /// `(the period's total, the step index)`
    LadderRetroactive(Box<(Decimal, u16)>),
    Capped {
        cap: u64,
    },
    /// `(level, the child's commission, the commission's id)`
    Override(Box<(u8, Decimal, Hash10)>),
    /// `(share, the original entry's amount, the original entry's id, its
    /// event day, the share earlier refunds reversed)`: the clawback is
    /// pending while that entry is
    /// The last: the original sale (index into `Facts::convs`), for the
    /// words of the share (a sale without an amount is reversed whole; a
    /// refund in another currency is compared converted). A reinstatement
    /// (a negative share) names after it the reversal it cancels (index
    /// into `Facts::convs`; `NONE` for a clawback).
    Clawback(Box<(Decimal, Decimal, Hash10, i32, Decimal, u32, u32)>),
    /// `(minimum, earned)`
    Topup(Box<(Decimal, Decimal)>),
    Mdf,
    Rejected(Rejection),
    /// An override the ancestor's status at event time rejects
    /// ([`Rejection::PartnerNotApproved`]): the commission's id.
    RejectedOverride(Box<Hash10>),
}

impl Calc {
    /// Why the entry is rejected, if it is.
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            Calc::Rejected(r) => Some(*r),
            Calc::RejectedOverride(_) => Some(Rejection::PartnerNotApproved),
            _ => None,
        }
    }

    /// The id of the entry this one derives from (override, clawback).
    pub fn parent(&self) -> Option<&Hash10> {
        match self {
            Calc::Override(b) => Some(&b.2),
            Calc::Clawback(b) => Some(&b.2),
            Calc::RejectedOverride(h) => Some(h),
            _ => None,
        }
    }
}

pub type Hash10 = [u8; 10];

/// An entry as the engine makes it; strings are symbols of the facts.
/// Millions are held at once: what few entries have (the parent of an
/// override or a clawback) is in their boxed [`Calc`], and the day is an
/// `i32` (timestamps have four-digit years), so an entry is 80 bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct REntry {
    pub id: Hash10,
    pub period: Period,
    pub partner: u32,
    pub prog: u16,
    pub kind: EntryKind,
    pub amount: Decimal,
    /// Global rule index (see [`Engine::rules`]) or `NONE`.
    pub rule: u32,
    /// Index into `Facts::ids` of the source event, or `NONE`.
    pub src: u32,
    /// A second source (the original sale of a clawback), or `NONE`.
    pub src2: u32,
    /// Index into `Facts::convs` of the source conversion, or `NONE`.
    pub conv: u32,
    /// Days since 1970-01-01 (see [`day32`]).
    pub event_day: i32,
    pub calc: Calc,
    /// Held for review: 1 + the fraud rule (index into `fraud::RULES`) it
    /// is held under; 0 when not held.
    pub fraud: u8,
}

/// What became of a conversion the fraud rules flagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No partner: nothing to pay.
    Unattributed,
    /// Booked as usual; the flag is for the report.
    Flagged,
    /// Booked, not payable until an operator decides.
    Held,
    /// Held (or rejected by a rule) and released by an operator.
    Released,
    /// Rejected by the rules (`fraud:<rule>`).
    Rejected,
    /// Held and rejected by an operator.
    ReviewRejected,
    /// Rejected for another reason first (self-referral, partner status).
    OtherRejection,
}

impl Outcome {
    /// The `decision` column of fraud.csv.
    pub fn decision(self) -> &'static str {
        match self {
            Outcome::Held => "pending",
            Outcome::Released => "released",
            Outcome::ReviewRejected => "rejected",
            _ => "",
        }
    }
}

/// A conversion the fraud rules flagged.
#[derive(Clone, Debug, PartialEq)]
pub struct FraudRow {
    pub conv: u32,
    /// The attributed partner, else the edge's evidence (or `NONE`).
    pub partner: u32,
    pub prog: u16,
    pub mask: u16,
    pub verdict: Verdict,
    pub outcome: Outcome,
    /// The conversion's entry (commission, rejected or capped), if any.
    pub entry: Option<Hash10>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RInvoice {
    pub id: Hash10,
    pub period: Period,
    pub partner: u32,
    pub prog: u16,
    /// The conversion (sale or credit note) index in `Facts::convs`.
    pub conv: u32,
    pub list_amount: Decimal,
    pub discount: Decimal,
    pub amount_due: Decimal,
    /// Share of the original line (credit notes), else 1.
    pub share: Decimal,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub conversions: u64,
    pub attributed: u64,
    pub unattributed: u64,
    pub rejected: u64,
    pub reversals: u64,
    pub unknown_program: u64,
    /// Conversions repeating another's program, `event` and `txn_id`.
    pub duplicates: u64,
}

#[derive(Debug, Default, PartialEq)]
pub struct Output {
    pub entries: Entries,
    pub invoices: Vec<RInvoice>,
    /// Per conversion (index in `Facts::convs`): partner and method.
    pub attribution: Vec<(u32, Method)>,
    /// Keyed by `(period, program symbol)`.
    pub stats: FxHashMap<(Period, u32), Stat>,
    /// Flagged conversions, by conversion index.
    pub fraud: Vec<FraudRow>,
}

/// The engine's entries: one vector per program, joined without a copy
/// (moving millions of entries into one vector cost a tenth of the engine's
/// time and held them twice). Indexed as if they were one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entries {
    chunks: Vec<Vec<REntry>>,
    /// The index of each chunk's first entry.
    starts: Vec<usize>,
}

impl Entries {
    pub fn len(&self) -> usize {
        match (self.starts.last(), self.chunks.last()) {
            (Some(s), Some(c)) => s + c.len(),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push(&mut self, e: REntry) {
        if self.chunks.is_empty() {
            self.append(Vec::new());
        }
        if let Some(c) = self.chunks.last_mut() {
            c.push(e);
        }
    }

    /// Room for `n` more in the last chunk.
    pub fn reserve(&mut self, n: usize) {
        if self.chunks.is_empty() {
            self.append(Vec::new());
        }
        if let Some(c) = self.chunks.last_mut() {
            c.reserve(n);
        }
    }

    /// Adds `v` after the others, without copying them.
    pub fn append(&mut self, v: Vec<REntry>) {
        let at = self.len();
        self.starts.push(at);
        self.chunks.push(v);
    }

    pub fn get(&self, i: usize) -> Option<&REntry> {
        let k = self.starts.partition_point(|&s| s <= i).checked_sub(1)?;
        self.chunks[k].get(i - self.starts[k])
    }

    pub fn iter(&self) -> impl Iterator<Item = &REntry> + '_ {
        self.chunks.iter().flatten()
    }
}

impl std::ops::Index<usize> for Entries {
    type Output = REntry;
    fn index(&self, i: usize) -> &REntry {
        match self.get(i) {
            Some(e) => e,
            None => panic!("entry {i} of {}", self.len()),
        }
    }
}

impl<'a> IntoIterator for &'a Entries {
    type Item = &'a REntry;
    type IntoIter = std::iter::Flatten<std::slice::Iter<'a, Vec<REntry>>>;
    fn into_iter(self) -> Self::IntoIter {
        self.chunks.iter().flatten()
    }
}

impl Output {
    /// The fraud row of a conversion.
    pub fn fraud_row(&self, conv: u32) -> Option<&FraudRow> {
        self.fraud
            .binary_search_by_key(&conv, |r| r.conv)
            .ok()
            .map(|i| &self.fraud[i])
    }
}

/// Hashes id parts: SHA-256 over parts separated by NUL, first 10 bytes.
pub fn hash_parts(parts: &[&[u8]]) -> Hash10 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut out = [0u8; 10];
    out.copy_from_slice(&d[..10]);
    out
}

pub fn hex_id(prefix: &str, h: &Hash10) -> String {
    hex_id_in(prefix, h, &mut [0; 32]).to_string()
}

/// [`hex_id`] written into `buf`, without an allocation (`prefix`, one of
/// the crate's own, is at most 12 bytes).
pub fn hex_id_in<'b>(prefix: &str, h: &Hash10, buf: &'b mut [u8; 32]) -> &'b str {
    let n = prefix.len();
    buf[..n].copy_from_slice(prefix.as_bytes());
    // 10 bytes are 20 hex digits, ASCII
    match hex::encode_to_slice(h, &mut buf[n..n + 20]) {
        Ok(()) => std::str::from_utf8(&buf[..n + 20]).unwrap_or_default(),
        Err(_) => "",
    }
}

/// A rule with its program, flattened.
pub struct RuleRef {
    pub prog: u16,
    pub rule: usize,
    event: u32,
    tier: u32,
    country: u32,
    instrument: u32,
    coupon: u32,
}

/// Resolved configuration against the facts' symbols.
pub struct Engine<'a> {
    pub cfg: &'a Config,
    pub facts: &'a Facts,
    pub rules: Vec<RuleRef>,
    /// program symbol -> program index
    progs: FxHashMap<u32, u16>,
    /// per program: indices into `rules`
    prog_rules: Vec<Vec<u32>>,
    approved: u32,
    refund: u32,
    chargeback: u32,
    reinstate: u32,
    /// Operators' decisions, by conversion index.
    pub reviews: FxHashMap<u32, Review>,
    /// What closed periods booked on the sales refunds reverse (see
    /// [`Booked`]), for the view being computed.
    booked: std::sync::RwLock<Option<std::sync::Arc<Booked>>>,
}

/// What the closed periods' ledger booked on a sale, by conversion index:
/// a clawback of an entry of a closed period reverses what was booked and
/// paid, not what the sale earns under today's programs.toml and registry
/// (a partner promoted to another tier, a rate changed, a parent or a
/// coupon moved to another partner).
#[derive(Clone, Debug, Default)]
pub struct Booked {
    pub by_conv: FxHashMap<u32, BookedConv>,
}

/// One partner's entries on a sale in closed periods.
#[derive(Clone, Debug)]
pub struct BookedPart {
    pub partner: u32,
    /// The sum of its commission, override and adjustment entries.
    pub amount: Decimal,
    /// The first one's id.
    pub id: Hash10,
    /// Held for review (1 + the fraud rule), as [`REntry::fraud`].
    pub fraud: u8,
}

#[derive(Clone, Debug, Default)]
pub struct BookedConv {
    /// Per partner: what the closed periods booked on the sale.
    pub parts: Vec<BookedPart>,
    /// The closed period's own view of the sale's entries, per partner
    /// (the view the late facts are measured against), when this view
    /// restates it: what the late facts changed is reversed too.
    pub old: Option<Vec<(u32, Decimal)>>,
    /// A reseller's invoice line of the sale, as the closed periods booked
    /// it (late lines added): what its credit note cancels.
    pub invoice: Option<BookedInvoice>,
    /// The closed period's own view of that line `(list, due)`, when this
    /// view restates it.
    pub old_invoice: Option<(Decimal, Decimal)>,
}

#[derive(Clone, Debug)]
pub struct BookedInvoice {
    pub partner: u32,
    pub list: Decimal,
    pub due: Decimal,
    pub discount: Decimal,
    pub id: Hash10,
}

/// A symbol that matches nothing (the config names a value no fact has).
const NEVER: u32 = u32::MAX - 1;

impl<'a> Engine<'a> {
    pub fn new(cfg: &'a Config, facts: &'a Facts) -> Engine<'a> {
        let sym = |s: &str| facts.syms.get(s).unwrap_or(NEVER);
        let osym = |s: &Option<String>| s.as_deref().map_or(NONE, sym);
        let mut rules = Vec::new();
        let mut prog_rules = Vec::new();
        let mut progs = FxHashMap::default();
        for (pi, p) in cfg.programs.iter().enumerate() {
            if let Some(s) = facts.syms.get(&p.id) {
                progs.insert(s, pi as u16);
            }
            let mut mine = Vec::new();
            for (ri, r) in p.rules.iter().enumerate() {
                mine.push(rules.len() as u32);
                rules.push(RuleRef {
                    prog: pi as u16,
                    rule: ri,
                    event: sym(&r.event),
                    tier: osym(&r.tier),
                    country: osym(&r.country),
                    instrument: osym(&r.instrument),
                    coupon: osym(&r.coupon),
                });
            }
            prog_rules.push(mine);
        }
        Engine {
            cfg,
            facts,
            rules,
            progs,
            prog_rules,
            approved: sym("approved"),
            refund: sym("refund"),
            chargeback: sym("chargeback"),
            reinstate: sym("reinstate"),
            reviews: FxHashMap::default(),
            booked: std::sync::RwLock::new(None),
        }
    }

    /// The booked entries the next computation's clawbacks reverse (see
    /// [`Booked`]); `None`: what the engine computes.
    pub fn set_booked(&self, b: Option<std::sync::Arc<Booked>>) {
        if let Ok(mut g) = self.booked.write() {
            *g = b;
        }
    }

    /// With the operators' decisions, keyed by conversion event id.
    pub fn with_reviews(mut self, by_event: &FxHashMap<String, Review>) -> Self {
        if by_event.is_empty() {
            return self;
        }
        for (i, c) in self.facts.convs.iter().enumerate() {
            if let Some(r) = by_event.get(self.facts.id(c)) {
                self.reviews.insert(i as u32, r.clone());
            }
        }
        self
    }

    pub fn program_of(&self, sym: u32) -> Option<u16> {
        self.progs.get(&sym).copied()
    }

    pub fn rule(&self, g: u32) -> (&Program, &crate::config::Rule) {
        let r = &self.rules[g as usize];
        let p = &self.cfg.programs[usize::from(r.prog)];
        (p, &p.rules[r.rule])
    }

    pub fn is_reversal(&self, c: &Conv) -> bool {
        c.event == self.refund || c.event == self.chargeback
    }

    /// A `reinstate`: the refund or chargeback its `original_txn_id` names
    /// is cancelled (a dispute the merchant won, a refund that failed).
    pub fn is_reinstate(&self, c: &Conv) -> bool {
        c.event == self.reinstate
    }

    /// The partner's status at an instant: the last change at or before it;
    /// with no history, the registry's current status.
    pub fn status_at(&self, partner: u32, ts: i64) -> u32 {
        self.facts
            .partners
            .get(&partner)
            .map_or(NONE, |p| status_of(p, ts))
    }

    /// An amount of an event in its program's currency, exact. `ev` names
    /// the event in an error (read only then: most amounts need no rate).
    pub fn convert<'s>(
        &self,
        amount: Decimal,
        cur: Option<Currency>,
        to: Currency,
        ms: i64,
        ev: impl Fn() -> &'s str,
    ) -> Result<Exact> {
        let cur = cur.unwrap_or(to);
        if cur == to {
            return Ok(Exact::from_dec(amount));
        }
        let ev = ev();
        let day = ms.div_euclid(DAY_MS);
        let fx = self.cfg.fx.as_ref().ok_or_else(|| {
            Error::data(format!(
                "event {ev}: amount in {cur} but {} names no fx file to convert it to {to}",
                self.cfg.path.display()
            ))
        })?;
        let missing = |c: Currency| {
            Error::data(format!(
                "{}: no {c} rate on or before {} (event {ev})",
                fx.path.display(),
                date_of_day(day)
            ))
        };
        let (rf, _) = fx.rate(cur, day).ok_or_else(|| missing(cur))?;
        let (rt, _) = fx.rate(to, day).ok_or_else(|| missing(to))?;
        Ok(Exact::from_dec(amount)
            .mul(Exact::from_dec(rf))?
            .div(Exact::from_dec(rt))?)
    }

    fn conv_amount(&self, c: &Conv, p: &Program) -> Result<Exact> {
        match c.amount {
            None => Ok(Exact::ZERO),
            Some(a) => self.convert(a, c.currency, p.currency, c.ts, || self.facts.id(c)),
        }
    }
}

/// A day number as an entry keeps it. Every timestamp has a four-digit
/// year (days within +-3 million of 1970), so this never saturates on
/// real data; it saturates rather than wraps on anything else.
pub fn day32(day: i64) -> i32 {
    i32::try_from(day).unwrap_or(if day < 0 { i32::MIN } else { i32::MAX })
}

/// A partner's status at an instant.
fn status_of(p: &crate::facts::PartnerInfo, ts: i64) -> u32 {
    if p.history.is_empty() {
        return p.status;
    }
    let i = p.history.partition_point(|(at, _)| *at <= ts);
    if i == 0 {
        NONE
    } else {
        p.history[i - 1].1
    }
}

/// The full event amount at one base.
fn base_amount(b: StepBase, amount: Exact, lots: Exact) -> Result<Exact> {
    Ok(match b {
        StepBase::Fixed(x) => Exact::from_dec(x),
        StepBase::Percent(p) => amount.mul(Exact::percent(p))?,
        StepBase::PerLot(x) => lots.mul(Exact::from_dec(x))?,
    })
}

fn volume_of(metric: Metric, amount: Exact, lots: Exact) -> Exact {
    match metric {
        Metric::Count => Exact::ONE,
        Metric::Amount => amount,
        Metric::Lots => lots,
    }
}

/// The step in force at a volume: the last whose `from` is strictly below it.
pub fn step_at(steps: &[crate::config::Step], v: Exact) -> Option<usize> {
    let i = steps
        .iter()
        .rposition(|s| Exact::from_dec(s.from).cmp_to(&v) == std::cmp::Ordering::Less);
    i
}

/// Marginal ladder: each slice of the event's volume at the step it falls in.
pub fn marginal_amount(
    steps: &[crate::config::Step],
    before: Exact,
    v: Exact,
    amount: Exact,
    lots: Exact,
) -> Result<Exact> {
    if v.signum() <= 0 {
        let i = step_at(steps, before).unwrap_or(0);
        return base_amount(steps[i].base, amount, lots);
    }
    let after = before.add(v)?;
    let mut total = Exact::ZERO;
    for (i, s) in steps.iter().enumerate() {
        let lo = Exact::from_dec(s.from).max(before);
        let hi = match steps.get(i + 1) {
            Some(n) => Exact::from_dec(n.from).min(after),
            None => after,
        };
        let overlap = hi.sub(lo)?;
        if overlap.signum() > 0 {
            let full = base_amount(s.base, amount, lots)?;
            total = total.add(full.mul(overlap)?.div(v)?)?;
        }
    }
    Ok(total)
}

#[derive(Clone, Copy)]
struct Cust {
    lock: u32,
    /// the conversion that set `lock` (index into `Facts::convs`)
    lock_by: u32,
    /// the customer's first approved deal registration in the part's
    /// [`DealRef`]s (the rest follow it), `NONE` without one
    deal: u32,
    first_ts: i64,
    seen: u64,
}

/// An approved deal registration of a part's program, what attribution
/// reads of it; a customer's are contiguous, earliest first.
struct DealRef {
    ts: i64,
    expires_at: i64,
    /// The customer as the edge compares registrations (trimmed, lower
    /// case): a registration of `ACME-1` is the one `acme-1` conflicts with
    /// there, so it attributes `acme-1`'s conversions here (review26 L1).
    /// The index of that key among the program's, ascending.
    group: u32,
    partner: u32,
    /// index into `Facts::deals`
    idx: u32,
}

/// The approved deal registrations among `deals` (indexes into
/// `Facts::deals`) grouped by customer (as the edge compares them: trimmed,
/// without case), each customer's in `(ts, id)` order, and each slot of
/// [`customer_slots`] pointed at its customer's first. One sorted array read in place of a table probe, a list and a
/// deal, three cache misses a conversion, in a referral program.
fn link_deals(f: &Facts, deals: &[u32], cust_of_slot: &[u32], custs: &mut [Cust]) -> Vec<DealRef> {
    if deals.is_empty() {
        return Vec::new();
    }
    // as the edge's `customer_key`, without a copy when it is one already
    let key = |sym: u32| -> std::borrow::Cow<'_, str> {
        let s = f.syms.str(sym);
        if s.trim().len() == s.len() && !s.chars().any(char::is_uppercase) {
            std::borrow::Cow::Borrowed(s)
        } else {
            std::borrow::Cow::Owned(edge::deal::customer_key(s))
        }
    };
    let mut list: Vec<(std::borrow::Cow<'_, str>, DealRef)> = deals
        .iter()
        .map(|&i| {
            let d = &f.deals[i as usize];
            (
                key(d.customer),
                DealRef {
                    ts: d.ts,
                    expires_at: d.expires_at,
                    group: 0,
                    partner: d.partner,
                    idx: i,
                },
            )
        })
        .collect();
    list.sort_by(|(ka, a), (kb, b)| {
        (ka, a.ts).cmp(&(kb, b.ts)).then_with(|| {
            let (da, db) = (&f.deals[a.idx as usize], &f.deals[b.idx as usize]);
            f.ids.get(da.id).cmp(f.ids.get(db.id))
        })
    });
    let mut group = 0;
    for j in 1..list.len() {
        if list[j].0 != list[j - 1].0 {
            group += 1;
        }
        list[j].1.group = group;
    }
    // each key's first registration, for each slot of that customer
    let mut starts: FxHashMap<&str, u32> = FxHashMap::default();
    for (j, (k, _)) in list.iter().enumerate() {
        starts.entry(k.as_ref()).or_insert(j as u32);
    }
    for (slot, &cu) in custs.iter_mut().zip(cust_of_slot) {
        if let Some(&j) = starts.get(key(cu).as_ref()) {
            slot.deal = j;
        }
    }
    drop(starts);
    list.into_iter().map(|(_, d)| d).collect()
}

/// A dense slot for each customer among `order`'s conversions: per position
/// in `order` its customer's slot (`NONE` without a customer), the slots,
/// fresh, and each slot's customer (ascending). One sort of `(customer,
/// position)` replaces a probe of a table of every customer per conversion,
/// a cache miss each once there are millions.
fn customer_slots(f: &Facts, order: &[u32]) -> (Vec<u32>, Vec<Cust>, Vec<u32>) {
    let mut pairs: Vec<u64> = order
        .iter()
        .enumerate()
        .filter_map(|(k, &ci)| {
            let cu = f.convs[ci as usize].customer;
            (cu != NONE).then_some(u64::from(cu) << 32 | k as u64)
        })
        .collect();
    pairs.sort_unstable();
    let mut slot_of = vec![NONE; order.len()];
    let mut cust_of_slot: Vec<u32> = Vec::new();
    for x in pairs {
        let cu = (x >> 32) as u32;
        if cust_of_slot.last() != Some(&cu) {
            cust_of_slot.push(cu);
        }
        slot_of[(x & 0xffff_ffff) as usize] = cust_of_slot.len() as u32 - 1;
    }
    let fresh = Cust {
        lock: NONE,
        lock_by: NONE,
        deal: NONE,
        first_ts: NO_TS,
        seen: 0,
    };
    (slot_of, vec![fresh; cust_of_slot.len()], cust_of_slot)
}

fn add_stat(to: &mut Stat, s: &Stat) {
    to.conversions += s.conversions;
    to.attributed += s.attributed;
    to.unattributed += s.unattributed;
    to.rejected += s.rejected;
    to.reversals += s.reversals;
    to.unknown_program += s.unknown_program;
    to.duplicates += s.duplicates;
}

struct Retro {
    conv: u32,
    partner: u32,
    rule: u32,
    period: Period,
    amount: Exact,
    lots: Exact,
    held: u8,
}

/// Computes every program, each on its own (attribution, rules, ladders,
/// caps and minimums never cross programs), on as many threads as the
/// machine has; the outputs are joined in program order, so the result does
/// not depend on the threads. The fraud rules of a program run just before
/// its part, in the same pool of tasks (see [`compute_scored`]).
pub fn compute(eng: &Engine, opts: &Options) -> Result<Output> {
    compute_scored(eng, opts, Clicks::Shared(&eng.facts.fraud))
}

/// The people's clicks the fraud rules read: the facts' own, or taken out
/// of them (`std::mem::take(&mut facts.fraud)`), then dropped as soon as
/// the last program's rules have run, before the engine's largest
/// allocations.
pub enum Clicks<'a> {
    Shared(&'a ClickFacts),
    Owned(ClickFacts),
}

impl Clicks<'_> {
    fn get(&self) -> &ClickFacts {
        match self {
            Clicks::Shared(c) => c,
            Clicks::Owned(c) => c,
        }
    }
}

/// [`compute`] with the clicks given apart. The fraud rules' tasks (one a
/// program with rules, biggest first) go before the engine's parts in one
/// queue, with no barrier between the two: a thread done with the rules
/// starts a program whose rules are done instead of waiting for the other
/// thread's last one. (The parts' own tail stays: the last part runs alone
/// for a tenth of a second or so at ten million events.)
pub fn compute_scored(eng: &Engine, opts: &Options, clicks: Clicks) -> Result<Output> {
    let scoring = fraud::Scoring::new(eng.cfg, eng.facts, clicks.get(), opts);
    let held = std::sync::RwLock::new(Some(clicks));
    schedule(eng, opts, FraudIn::Scoring(&scoring, &held))
}

/// [`compute`] with the fraud rules' verdicts before attribution already
/// computed (for the same `opts`).
pub fn compute_with(eng: &Engine, opts: &Options, pre: &Pre) -> Result<Output> {
    schedule(eng, opts, FraudIn::Pre(pre))
}

/// Where the parts find the fraud rules' verdicts.
enum FraudIn<'s, 'a> {
    /// computed before, for every program
    Pre(&'s Pre),
    /// computed by tasks of the same queue, over these clicks
    Scoring(
        &'s fraud::Scoring<'a>,
        &'s std::sync::RwLock<Option<Clicks<'a>>>,
    ),
}

/// A fraud task's result, waited for by its program's part.
#[derive(Default)]
struct Ready {
    state: std::sync::Mutex<Scored>,
    cv: std::sync::Condvar,
}

#[derive(Default)]
enum Scored {
    #[default]
    Pending,
    Done(fraud::Found, Vec<u32>, fraud::Dups),
    Taken,
    /// the task panicked (the panic itself ends the scope)
    Failed,
}

impl Ready {
    fn set(&self, v: Scored) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *s = v;
        self.cv.notify_all();
    }

    fn take(&self) -> Scored {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while matches!(*s, Scored::Pending) {
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        std::mem::replace(&mut *s, Scored::Taken)
    }
}

/// Marks its task's result failed unless it was set: a part waiting for it
/// never waits forever.
struct FailOnDrop<'r>(&'r Ready, bool);

impl Drop for FailOnDrop<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.set(Scored::Failed);
        }
    }
}

/// Per conversion, the fraud rules it trips, for one part.
enum Masks<'s> {
    None,
    Global(&'s Pre),
    Part(&'s fraud::Found),
}

impl Masks<'_> {
    fn get(&self, ci: u32) -> u16 {
        match self {
            Masks::None => 0,
            Masks::Global(p) => p.mask(ci),
            Masks::Part(m) => m.get(&ci).copied().unwrap_or(0),
        }
    }
}

fn schedule(eng: &Engine, opts: &Options, fin: FraudIn) -> Result<Output> {
    let f = eng.facts;
    let ph = crate::timing::Phase::start("engine: buckets");
    let n = eng.cfg.programs.len();
    let mut out = Output {
        attribution: vec![(NONE, Method::None); f.convs.len()],
        ..Output::default()
    };
    let seen = |c: &Conv| c.ts < opts.until_ms && i64::from(c.arrival) <= opts.max_arrival;
    // each program's conversions: picked from its run in its own task (and
    // its attribution written in place there), else sorted out here in one
    // pass over everyone's
    let runs = f.conv_runs();
    let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut run_of: Vec<(u32, u32)> = vec![(0, 0); n];
    let mut sizes = vec![0usize; n];
    let unknown = |out: &mut Output, i: usize, c: &Conv| {
        out.stats
            .entry((Period::of_ms(c.ts), c.program))
            .or_default()
            .unknown_program += 1;
        out.attribution[i] = (NONE, Method::UnknownProgram);
    };
    match runs {
        Some(rs) => {
            for &(sym, lo, hi) in rs {
                match eng.program_of(sym) {
                    Some(pi) => {
                        run_of[usize::from(pi)] = (lo, hi);
                        sizes[usize::from(pi)] = (hi - lo) as usize;
                    }
                    None => {
                        for i in lo as usize..hi as usize {
                            if seen(&f.convs[i]) {
                                unknown(&mut out, i, &f.convs[i]);
                            }
                        }
                    }
                }
            }
        }
        None => {
            for (i, c) in f.convs.iter().enumerate() {
                if !seen(c) {
                    continue;
                }
                match eng.program_of(c.program) {
                    Some(pi) => buckets[usize::from(pi)].push(i as u32),
                    None => unknown(&mut out, i, c),
                }
            }
            for (s, b) in sizes.iter_mut().zip(&buckets) {
                *s = b.len();
            }
        }
    }
    let threads = crate::tasks::threads_for(n);
    let parts: Vec<std::sync::Mutex<Option<Result<Part>>>> =
        (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    // biggest programs first, so the threads finish together
    let mut queue: Vec<usize> = (0..n).collect();
    queue.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    // the fraud rules' tasks first, then the parts; program -> its task
    let (scoring, clicks, fin_pre) = match fin {
        FraudIn::Scoring(s, c) => (Some(s), Some(c), None),
        FraudIn::Pre(p) => (None, None, Some(p)),
    };
    let n_score = scoring.map_or(0, |s| s.len());
    let mut task_of: Vec<Option<usize>> = vec![None; n];
    if let Some(s) = scoring {
        for b in 0..s.len() {
            task_of[s.program(b)] = Some(b);
        }
    }
    let ready: Vec<Ready> = (0..n_score).map(|_| Ready::default()).collect();
    let scoring_left = std::sync::atomic::AtomicUsize::new(n_score);
    drop(ph);
    let ph = crate::timing::Phase::start("engine: parts");
    {
        // finished facts hold each program's conversions in one run: its
        // part writes their attribution in place, in its own slice
        let mut ranges: Vec<(u32, u32, usize)> = match runs {
            Some(_) => run_of
                .iter()
                .enumerate()
                .filter(|(_, r)| r.1 > r.0)
                .map(|(i, r)| (r.0, r.1, i))
                .collect(),
            None => buckets
                .iter()
                .enumerate()
                .filter_map(|(i, b)| Some((*b.first()?, *b.last()? + 1, i)))
                .collect(),
        };
        ranges.sort_unstable();
        type Slot<'a> = std::sync::Mutex<Option<(&'a mut [(u32, Method)], u32)>>;
        let mut slots: Vec<Slot> = (0..n).map(|_| std::sync::Mutex::new(None)).collect();
        if ranges.windows(2).all(|w| w[0].1 <= w[1].0) {
            let mut rest: &mut [(u32, Method)] = &mut out.attribution;
            let mut at = 0u32;
            for (lo, hi, i) in ranges {
                let (_, tail) = std::mem::take(&mut rest).split_at_mut((lo - at) as usize);
                let (mine, tail) = tail.split_at_mut((hi - lo) as usize);
                rest = tail;
                at = hi;
                slots[i] = std::sync::Mutex::new(Some((mine, lo)));
            }
        }
        let buckets = &buckets;
        crate::tasks::run(n_score + n, threads, |k| {
            if let (Some(s), Some(held), true) = (scoring, clicks, k < n_score) {
                let b = s.queue[k];
                let mut guard = FailOnDrop(&ready[b], false);
                let found = {
                    let c = held.read().unwrap_or_else(|e| e.into_inner());
                    c.as_ref().map(|c| s.score(b, c.get()))
                };
                ready[b].set(match found {
                    Some((m, order, dups)) => Scored::Done(m, order, dups),
                    None => Scored::Failed,
                });
                guard.1 = true;
                if scoring_left.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                    // the last of the rules: their clicks go
                    let mut c = held.write().unwrap_or_else(|e| e.into_inner());
                    *c = None;
                }
                return;
            }
            let Some(&i) = queue.get(k - n_score) else {
                return;
            };
            let (order, masks, scored, dups);
            match (fin_pre, task_of[i]) {
                (Some(pre), _) => {
                    order = pre.orders.get(i).cloned();
                    dups = pre.dups.get(i).cloned().flatten();
                    masks = Masks::Global(pre);
                }
                (None, Some(b)) => match ready[b].take() {
                    Scored::Done(m, o, d) => {
                        scored = m;
                        order = Some(o);
                        dups = Some(d);
                        masks = Masks::Part(&scored);
                    }
                    _ => {
                        *parts[i].lock().expect("part lock") =
                            Some(Err(Error::data("the fraud rules of a program failed")));
                        return;
                    }
                },
                (None, None) => {
                    order = None;
                    dups = None;
                    masks = Masks::None;
                }
            }
            let attr = Attr {
                slice: slots[i].lock().expect("slot lock").take(),
                list: Vec::new(),
            };
            let picked: Vec<u32>;
            let convs: &[u32] = match runs {
                Some(_) => {
                    let (lo, hi) = run_of[i];
                    picked = (lo..hi).filter(|&c| seen(&f.convs[c as usize])).collect();
                    &picked
                }
                None => &buckets[i],
            };
            let known = Known { order, dups };
            let r = compute_part(eng, opts, known, &masks, i as u16, convs, attr);
            *parts[i].lock().expect("part lock") = Some(r);
        });
    }
    drop(buckets);
    drop(ph);
    let _ph = crate::timing::Phase::start("engine: merge");
    let mut done = Vec::with_capacity(n);
    for slot in parts {
        done.push(
            slot.into_inner()
                .expect("part lock")
                .expect("every program computed")?,
        );
    }
    // the first part's invoices and fraud rows are kept as they are, grown
    // once to the total (a large block grows in place) and the others'
    // copied after them: a part's rows are never held twice
    let invoices: usize = done.iter().map(|p| p.out.invoices.len()).sum();
    let fraud: usize = done.iter().map(|p| p.out.fraud.len()).sum();
    for part in done {
        for c in part.out.entries.chunks {
            out.entries.append(c);
        }
        join(&mut out.invoices, part.out.invoices, invoices);
        for (k, s) in part.out.stats {
            add_stat(out.stats.entry(k).or_default(), &s);
        }
        for (ci, partner, method) in part.attr {
            out.attribution[ci as usize] = (partner, method);
        }
        join(&mut out.fraud, part.out.fraud, fraud);
    }
    out.fraud.sort_unstable_by_key(|r| r.conv);
    Ok(out)
}

/// Appends `part` to `all` (which ends up `total` long): the first
/// non-empty part becomes `all` itself.
fn join<T>(all: &mut Vec<T>, mut part: Vec<T>, total: usize) {
    if all.is_empty() {
        part.reserve_exact(total.saturating_sub(part.len()));
        *all = part;
    } else {
        all.extend(part);
    }
}

/// What a clawback copies of the entry it reverses.
#[derive(Clone, Debug, PartialEq)]
struct Reversed {
    id: Hash10,
    partner: u32,
    prog: u16,
    amount: Decimal,
    rule: u32,
    fraud: u8,
    /// The entry's event day: its clawback is held while it is.
    day: i32,
}

/// The entries a refund of a sale reverses, as the closed periods booked
/// them ([`BookedConv`]): per partner, what was booked (plus, in a view
/// that restates the closed period, what the late facts changed), under
/// the booked entry's id. Partners only this view pays are reversed as
/// computed. The recomputed entries, unchanged, when they say the same.
fn as_booked(recomputed: &[Reversed], b: &BookedConv, prog: u16, sale_day: i32) -> Vec<Reversed> {
    let now = |p: u32| -> Decimal {
        recomputed
            .iter()
            .filter(|r| r.partner == p)
            .map(|r| r.amount)
            .sum()
    };
    let then = |p: u32| -> Option<Decimal> {
        b.old
            .as_ref()
            .map(|o| o.iter().filter(|(q, _)| *q == p).map(|(_, a)| *a).sum())
    };
    let mut out: Vec<Reversed> = Vec::new();
    let mut seen: Vec<u32> = Vec::new();
    let mut push = |p: u32, id: Option<Hash10>, fraud: u8, amount: Decimal| {
        let same = recomputed.iter().find(|r| r.partner == p);
        let like = same.or(recomputed.first());
        out.push(Reversed {
            id: id.or(same.map(|r| r.id)).unwrap_or_default(),
            partner: p,
            prog: like.map_or(prog, |r| r.prog),
            amount: crate::money::norm(amount),
            rule: like.map_or(NONE, |r| r.rule),
            // held for review with what it reverses, as booked: a hold of a
            // closed period outlives a configuration change (the rule now
            // flags, or holds what was paid), until an operator decides
            fraud,
            day: same.map_or(sale_day, |r| r.day),
        });
    };
    for x in &b.parts {
        if seen.contains(&x.partner) {
            continue;
        }
        seen.push(x.partner);
        let e = match then(x.partner) {
            None => x.amount,
            Some(old) => x.amount + now(x.partner) - old,
        };
        push(x.partner, Some(x.id), x.fraud, e);
    }
    if b.old.is_some() {
        for r in recomputed {
            if seen.contains(&r.partner) {
                continue;
            }
            seen.push(r.partner);
            let e = now(r.partner) - then(r.partner).unwrap_or_default();
            push(r.partner, None, r.fraud, e);
        }
    }
    // what the engine computed, when the ledger says the same for every
    // partner, amounts and ids (so an unchanged configuration books
    // exactly as before, 0.00 entries included)
    let booked_of = |p: u32| out.iter().find(|o| o.partner == p);
    let same = recomputed.iter().all(|r| match booked_of(r.partner) {
        Some(o) => {
            o.amount == now(r.partner) && (r.amount.is_zero() || o.id == r.id) && o.fraud == r.fraud
        }
        None => r.amount.is_zero(),
    }) && out.iter().all(|o| o.amount == now(o.partner));
    if same {
        return recomputed.to_vec();
    }
    out.retain(|o| !o.amount.is_zero());
    out
}

/// One program's share of the output.
struct Part {
    out: Output,
    /// `(conversion, partner, method)` not written in place
    attr: Vec<(u32, u32, Method)>,
}

/// Where a part puts the attribution of its conversions: in place, in its
/// slice of [`Output::attribution`] (from conversion `.1` on), else in a
/// list joined afterwards.
struct Attr<'a> {
    slice: Option<(&'a mut [(u32, Method)], u32)>,
    list: Vec<(u32, u32, Method)>,
}

impl Attr<'_> {
    fn push(&mut self, (ci, partner, method): (u32, u32, Method)) {
        if let Some((s, lo)) = &mut self.slice {
            if let Some(x) = ci.checked_sub(*lo).and_then(|k| s.get_mut(k as usize)) {
                *x = (partner, method);
                return;
            }
        }
        self.list.push((ci, partner, method));
    }
}

/// The conversions that `mine` accepts (one program's, visible) and that
/// repeat the `event` and `txn_id` of another, each with the one that
/// stands for them: the first in `(ts, id)` order among those with
/// attribution evidence, else among all. The edge refuses a
/// second conversion under the same key (SPEC section 3: `txn_id` is the
/// idempotency key per program); the store tells events apart by their
/// ids, so one sale brought in under two (a backfill file beside what
/// `pull` brings, a migration overlapping the edge) would otherwise be paid
/// twice, and one refund reversed twice. The order does not depend on the
/// import's, so neither does which one stands.
pub(crate) fn duplicates(f: &Facts, mine: &impl Fn(u32) -> bool) -> FxHashMap<u32, u32> {
    let key = |i: u32| {
        let c = &f.convs[i as usize];
        (c.event, f.txns.get(c.idx))
    };
    // the first conversion of each key's hash; the rest are candidates
    let mut first: FxHashMap<u64, u32> = FxHashMap::default();
    let mut again: Vec<(u64, u32)> = Vec::new();
    for &i in &f.with_txn {
        if !mine(i) {
            continue;
        }
        let (event, txn) = key(i);
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(txn.as_bytes(), u64::from(event));
        match first.entry(h) {
            std::collections::hash_map::Entry::Occupied(_) => again.push((h, i)),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(i);
            }
        }
    }
    let mut out = FxHashMap::default();
    if again.is_empty() {
        return out;
    }
    // the exact keys among the hashes seen twice (two keys may share one)
    let mut groups: FxHashMap<(u32, &str), Vec<u32>> = FxHashMap::default();
    for &(h, i) in &again {
        groups.entry(key(i)).or_default().push(i);
        if let Some(&f0) = first.get(&h) {
            groups.entry(key(f0)).or_default().push(f0);
        }
    }
    // the copy with attribution evidence (a click, a partner, a coupon)
    // first: a backfill of the order, stamped with the order's time and
    // carrying none, never displaces the edge's attributed record; among
    // equals, an authenticated copy before a pixel's (anyone can fire a
    // pixel with an order's txn_id and a made-up amount)
    let bare = |c: &Conv| !c.has_click && c.partner == NONE && f.ex(c).coupon == NONE;
    for (_, mut g) in groups {
        g.sort_unstable_by(|&a, &b| {
            let (ca, cb) = (&f.convs[a as usize], &f.convs[b as usize]);
            (bare(ca), ca.pixel, ca.ts, f.id(ca), a).cmp(&(bare(cb), cb.pixel, cb.ts, f.id(cb), b))
        });
        g.dedup();
        if let Some((&stands, rest)) = g.split_first() {
            for &d in rest {
                out.insert(d, stands);
            }
        }
    }
    out
}

/// What the fraud rules found out about a program's conversions for the
/// engine (`None`: the engine finds it).
struct Known {
    /// its conversions in `(ts, id)` order
    order: Option<Vec<u32>>,
    /// its duplicates ([`duplicates`])
    dups: Option<fraud::Dups>,
}

fn compute_part(
    eng: &Engine,
    opts: &Options,
    known: Known,
    masks: &Masks,
    pi: u16,
    convs: &[u32],
    mut attr: Attr,
) -> Result<Part> {
    let f = eng.facts;
    let cfg = eng.cfg;
    let prog_sym = f
        .syms
        .get(&cfg.programs[usize::from(pi)].id)
        .unwrap_or(NONE);
    let mut out = Output::default();
    let visible = |ts: i64, arrival: i64| ts < opts.until_ms && arrival <= opts.max_arrival;

    let Known { order, dups } = known;
    // conversions in (ts, id) order (the fraud rules may have sorted them)
    let order: Vec<u32> = match order {
        Some(o) if o.len() == convs.len() => o,
        _ => f.sorted_ts_id(convs),
    };

    // the program's approved deal registrations (linked to their customers
    // below)
    let approved: Vec<u32> = (0..f.deals.len() as u32)
        .filter(|&i| {
            let d = &f.deals[i as usize];
            d.approved && d.program == prog_sym && visible(d.ts, d.arrival)
        })
        .collect();

    // `convs` ascends: a conversion outside its first..=last is another
    // program's, known without reading it
    let (lo, hi) = (
        convs.first().copied().unwrap_or(1),
        convs.last().copied().unwrap_or(0),
    );
    // sales that a refund or chargeback names: (program, txn) -> the first
    // conversion in (ts, id) order; found through the facts' short lists of
    // conversions with an original or a kept transaction id
    let mine = |i: u32| {
        if i < lo || i > hi {
            return false;
        }
        let c = &f.convs[i as usize];
        c.program == prog_sym && visible(c.ts, i64::from(c.arrival))
    };
    // the fraud rules found them already (for the same facts)
    let dups = dups.unwrap_or_else(|| duplicates(f, &mine));
    let mut wanted: FxHashSet<(u32, &str)> = FxHashSet::default();
    for &i in &f.with_orig {
        let c = &f.convs[i as usize];
        if mine(i) && eng.is_reversal(c) && f.ex(c).orig_txn != NONE {
            wanted.insert((c.program, f.syms.str(f.ex(c).orig_txn)));
        }
    }
    let mut originals: FxHashMap<(u32, &str), u32> = FxHashMap::default();
    if !wanted.is_empty() {
        // the first with an amount (a lead sharing its sale's order id is
        // not what a refund of the sale reverses), else the first
        let before = |a: u32, b: u32| {
            let (ca, cb) = (&f.convs[a as usize], &f.convs[b as usize]);
            (ca.amount.is_none(), ca.ts, f.id(ca), a) < (cb.amount.is_none(), cb.ts, f.id(cb), b)
        };
        for &i in &f.with_txn {
            let c = &f.convs[i as usize];
            if !mine(i) || eng.is_reversal(c) || eng.is_reinstate(c) || dups.contains_key(&i) {
                continue;
            }
            let t = f.txns.get(c.idx);
            if wanted.contains(&(c.program, t)) {
                originals
                    .entry((c.program, t))
                    .and_modify(|o| {
                        if before(i, *o) {
                            *o = i;
                        }
                    })
                    .or_insert(i);
            }
        }
    }
    let track: FxHashSet<u32> = originals.values().copied().collect();
    // entries and invoice lines of tracked originals
    let mut of_conv: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
    let mut inv_of_conv: FxHashMap<u32, u32> = FxHashMap::default();

    // per customer of the program: lifetime lock, first accepted
    // attribution, event names seen (a bit each; names past 64 go to
    // `first_event`); in a dense slot per customer, found by position
    let (slot_of, mut custs, cust_of_slot) = customer_slots(f, &order);
    // approved deals per customer, earliest registration first
    let deals = link_deals(f, &approved, &cust_of_slot, &mut custs);
    drop((approved, cust_of_slot));
    let mut event_bits: FxHashMap<u32, u32> = FxHashMap::default();
    let mut first_event: FxHashSet<(u32, u32, u32)> = FxHashSet::default();
    let mut stat_key = (Period { year: 0, month: 0 }, NONE);
    let (mut cur_day, mut cur_period) = (i64::MIN, Period { year: 0, month: 0 });
    out.entries.reserve(order.len() + order.len() / 4);
    let mut stat = Stat::default();
    let mut counts: FxHashMap<(u32, u32, i64), u64> = FxHashMap::default();
    let mut volumes: FxHashMap<(u32, u32, i64), Exact> = FxHashMap::default();
    let mut retro: Vec<Retro> = Vec::new();
    let mut active: FxHashSet<(u16, u32, Period)> = FxHashSet::default();
    let mut reversals: Vec<u32> = Vec::new();

    for (k, &ci) in order.iter().enumerate() {
        f.prefetch_ahead(&order, k);
        // a customer's state is a random access among millions: ask early
        if let Some(cu) = slot_of.get(k + 8).and_then(|&s| custs.get(s as usize)) {
            crate::facts::prefetch(cu);
        }
        let c = &f.convs[ci as usize];
        let day = c.ts.div_euclid(DAY_MS);
        if day != cur_day {
            cur_day = day;
            cur_period = Period::of_day(day);
        }
        let period = cur_period;
        let Some(pi) = eng.program_of(c.program) else {
            out.stats
                .entry((period, c.program))
                .or_default()
                .unknown_program += 1;
            attr.push((ci, NONE, Method::UnknownProgram));
            continue;
        };
        let p = &cfg.programs[usize::from(pi)];
        if stat_key != (period, c.program) {
            if stat_key.1 != NONE {
                add_stat(out.stats.entry(stat_key).or_default(), &stat);
            }
            stat_key = (period, c.program);
            stat = Stat::default();
        }
        if let Some(&first) = dups.get(&ci) {
            stat.duplicates += 1;
            attr.push((ci, NONE, Method::Duplicate(first)));
            continue;
        }
        if eng.is_reversal(c) {
            stat.reversals += 1;
            attr.push((ci, NONE, Method::Reversal));
            reversals.push(ci);
            continue;
        }
        if eng.is_reinstate(c) {
            // earns nothing itself: it gives back what a reversal took
            stat.reversals += 1;
            attr.push((ci, NONE, Method::Reinstate));
            reversals.push(ci);
            continue;
        }
        stat.conversions += 1;
        let mut cust = if c.customer == NONE {
            None
        } else {
            Some(&mut custs[slot_of[k] as usize])
        };
        let is_first = match cust.as_deref_mut() {
            // no customer, no telling: a `first_only` rule (a one-off
            // bounty) would pay each one
            None => false,
            Some(cu) => {
                let n = event_bits.len() as u32;
                let bit = *event_bits.entry(c.event).or_insert(n);
                if bit < 64 {
                    let first = cu.seen & (1u64 << bit) == 0;
                    cu.seen |= 1u64 << bit;
                    first
                } else {
                    first_event.insert((c.program, c.customer, c.event))
                }
            }
        };

        // ---- attribution, first that applies (SPEC section 5)
        let same_program = |partner: u32| {
            f.partners
                .get(&partner)
                .is_none_or(|info| info.program == c.program)
        };
        let mut partner = NONE;
        let mut method = Method::None;
        if p.lifetime && c.customer != NONE {
            if let Some(cu) = cust.as_deref() {
                if cu.lock != NONE {
                    partner = cu.lock;
                    method = Method::Lifetime(cu.lock_by);
                }
            }
        }
        let mut bot_only = NONE;
        if partner == NONE && c.has_click && c.partner != NONE {
            let age = c.ts - c.click_ts;
            if age >= 0 && age <= p.window_days * DAY_MS && same_program(c.partner) {
                if c.click_bot {
                    bot_only = c.partner;
                } else {
                    partner = c.partner;
                    method = Method::Click;
                }
            }
        }
        let ex = f.ex(c);
        if partner == NONE && ex.coupon != NONE {
            if let Some(&cp) = f.coupons.get(&(c.program, ex.coupon)) {
                if same_program(cp) {
                    partner = cp;
                    method = Method::Coupon;
                }
            }
        }
        if partner == NONE {
            let first = cust.as_deref().map_or(NONE, |cu| cu.deal);
            let group = deals.get(first as usize).map(|d| d.group);
            for d in deals.get(first as usize..).unwrap_or_default() {
                if Some(d.group) != group || d.ts > c.ts {
                    break;
                }
                if c.ts - d.ts <= p.deal_days * DAY_MS
                    && d.expires_at >= c.ts
                    && same_program(d.partner)
                {
                    partner = d.partner;
                    method = Method::Deal(d.idx);
                    break;
                }
            }
        }
        let mut rejection = None;
        if partner == NONE && bot_only != NONE {
            partner = bot_only;
            method = Method::Click;
            rejection = Some(Rejection::BotClick);
        }
        let fc = p.fraud.as_ref();
        if partner == NONE {
            stat.unattributed += 1;
            if let Some(fc) = fc {
                let mask = fc.active(masks.get(ci) & !fraud::COUPON_LEAKAGE);
                if mask != 0 {
                    out.fraud.push(FraudRow {
                        conv: ci,
                        partner: c.partner,
                        prog: pi,
                        mask,
                        verdict: fc.decide(mask),
                        outcome: Outcome::Unattributed,
                        entry: None,
                    });
                }
            }
            continue;
        }
        attr.push((ci, partner, method));
        let info = f.partners.get(&partner);
        let self_ref = c.customer == partner
            || (ex.email_hash != NONE && info.is_some_and(|i| i.email_hash == ex.email_hash))
            || (!f.erased_self.is_empty() && f.erased_self.contains(&(c.customer, partner)));
        if self_ref {
            rejection = Some(Rejection::SelfReferral);
        } else if info.is_none() {
            rejection = Some(Rejection::UnknownPartner);
        } else if info.map_or(NONE, |i| status_of(i, c.ts)) != eng.approved {
            rejection = Some(Rejection::PartnerNotApproved);
        }
        // ---- fraud rules: score, action, operators' decisions
        let mut held = 0u8;
        let mut row: Option<usize> = None;
        if let Some(fc) = fc {
            let mut mask = masks.get(ci);
            if method != Method::Coupon {
                mask &= !fraud::COUPON_LEAKAGE;
            }
            if self_ref {
                mask |= fraud::SELF_REFERRAL;
            }
            let mask = fc.active(mask);
            if mask != 0 {
                let v = fc.decide(mask);
                // a release of a rule's rejection, or a reject of a held
                // entry, counts from the draft that saw it on (a closed
                // period's view: not after it)
                let review = eng
                    .reviews
                    .get(&ci)
                    .filter(|r| !r.restates || r.seq <= opts.review_seq);
                let outcome = if rejection.is_some() {
                    Outcome::OtherRejection
                } else {
                    match (v.action, review) {
                        (Action::Reject | Action::Hold, Some(r)) if r.release => Outcome::Released,
                        (Action::Reject, _) => {
                            rejection = Some(Rejection::Fraud(v.rule));
                            Outcome::Rejected
                        }
                        (Action::Hold, None) => {
                            held = v.rule + 1;
                            Outcome::Held
                        }
                        (Action::Hold, Some(_)) => {
                            rejection = Some(Rejection::Fraud(v.rule));
                            Outcome::ReviewRejected
                        }
                        _ => Outcome::Flagged,
                    }
                };
                row = Some(out.fraud.len());
                out.fraud.push(FraudRow {
                    conv: ci,
                    partner,
                    prog: pi,
                    mask,
                    verdict: v,
                    outcome,
                    entry: None,
                });
            }
        }
        // a release of a rule's rejection this view does not see (decided
        // after the closed period's last draft): the sale stays rejected as
        // it was booked, whatever the rules say today (turned to hold, flag
        // or off), so that the release restates it in the next period
        if rejection.is_none()
            && eng
                .reviews
                .get(&ci)
                .is_some_and(|r| r.release && r.restates && r.seq > opts.review_seq)
        {
            let rule = row.map_or(0, |k| out.fraud[k].verdict.rule);
            rejection = Some(Rejection::Fraud(rule));
            held = 0;
        }
        if rejection.is_none() {
            stat.attributed += 1;
            if p.minimum_per_period.is_some() {
                // the partners a minimum tops up (read only then)
                active.insert((pi, partner, period));
            }
            if let Some(cu) = cust.as_deref_mut() {
                if p.lifetime && cu.lock == NONE {
                    cu.lock = partner;
                    cu.lock_by = ci;
                }
                if cu.first_ts == NO_TS {
                    cu.first_ts = c.ts;
                }
            }
        } else {
            stat.rejected += 1;
        }

        // ---- the most specific matching rule
        let tier = info.map_or(NONE, |i| i.tier);
        let mut amount: Option<Exact> = None;
        let mut best: Option<(u32, u32)> = None;
        for &g in &eng.prog_rules[usize::from(pi)] {
            let rr = &eng.rules[g as usize];
            if rr.event != c.event {
                continue;
            }
            let rule = &p.rules[rr.rule];
            if (rr.tier != NONE && rr.tier != tier)
                || (rr.country != NONE && rr.country != ex.country)
                || (rr.instrument != NONE && rr.instrument != ex.instrument)
                || (rr.coupon != NONE && rr.coupon != ex.coupon)
                || (rule.first_only && !is_first)
            {
                continue;
            }
            if let Some(m) = rule.months {
                if let Some(cu) = cust.as_deref() {
                    // no accepted attribution yet (NO_TS): this is the first
                    if cu.first_ts != NO_TS && c.ts >= add_months_ms(cu.first_ts, m) {
                        continue;
                    }
                }
            }
            if let Some(min) = rule.min_amount {
                let a = match amount {
                    Some(a) => a,
                    None => *amount.insert(eng.conv_amount(c, p)?),
                };
                if a.cmp_to(&Exact::from_dec(min)) == std::cmp::Ordering::Less {
                    continue;
                }
            }
            if best.is_none_or(|(_, s)| rule.specificity > s) {
                best = Some((g, rule.specificity));
            }
        }

        let ev_id = f.id(c).as_bytes();
        let partner_b = f.syms.str(partner).as_bytes();
        if let Some(why) = rejection {
            let rule_id = best.map_or("-", |(g, _)| eng.rule(g).1.id.as_str());
            let id = hash_parts(&[b"rejected", rule_id.as_bytes(), partner_b, ev_id]);
            if let Some(r) = row {
                out.fraud[r].entry = Some(id);
            }
            out.entries.push(REntry {
                id,
                period,
                partner,
                prog: pi,
                kind: EntryKind::Rejected,
                amount: Decimal::ZERO,
                rule: best.map_or(NONE, |b| b.0),
                src: c.idx,
                src2: NONE,
                conv: ci,
                event_day: day32(day),
                calc: Calc::Rejected(why),
                fraud: 0,
            });
            continue;
        }
        let Some((g, _)) = best else { continue };
        let rule = eng.rule(g).1;
        if let Some(r) = row {
            if !matches!(rule.base, Base::Discount(_)) {
                out.fraud[r].entry = Some(hash_parts(&[
                    b"commission",
                    rule.id.as_bytes(),
                    partner_b,
                    ev_id,
                ]));
            }
        }
        let amount = match amount {
            Some(a) => a,
            None => eng.conv_amount(c, p)?,
        };
        let lots = Exact::from_dec(ex.lots.unwrap_or_default());
        let key = (g, partner, period.index());

        if let Some(cap) = rule.cap {
            let n = counts.entry(key).or_insert(0);
            if *n >= cap {
                let id = hash_parts(&[b"capped", rule.id.as_bytes(), partner_b, ev_id]);
                if let Some(r) = row {
                    out.fraud[r].entry = Some(id);
                }
                out.entries.push(REntry {
                    id,
                    period,
                    partner,
                    prog: pi,
                    kind: EntryKind::Capped,
                    amount: Decimal::ZERO,
                    rule: g,
                    src: c.idx,
                    src2: NONE,
                    conv: ci,
                    event_day: day32(day),
                    calc: Calc::Capped { cap },
                    fraud: 0,
                });
                continue;
            }
            *n += 1;
        }
        match &rule.base {
            Base::Discount(d) => {
                let cur = p.currency;
                let list = Money::round(amount, cur)?.amount;
                let due = Money::round(amount.mul(Exact::percent(Decimal::ONE_HUNDRED - d))?, cur)?
                    .amount;
                if track.contains(&ci) {
                    inv_of_conv.insert(ci, out.invoices.len() as u32);
                }
                out.invoices.push(RInvoice {
                    id: hash_parts(&[b"invoice", rule.id.as_bytes(), partner_b, ev_id]),
                    period,
                    partner,
                    prog: pi,
                    conv: ci,
                    list_amount: list,
                    discount: *d,
                    amount_due: due,
                    share: Decimal::ONE,
                });
            }
            Base::Simple(b) => {
                let x = base_amount(*b, amount, lots)?;
                book(
                    eng,
                    &mut out,
                    &track,
                    &mut of_conv,
                    ci,
                    partner,
                    pi,
                    g,
                    x,
                    Calc::Base,
                    held,
                )?;
            }
            Base::Ladder(l) => {
                let v = volume_of(l.metric, amount, lots);
                match l.mode {
                    Mode::Marginal => {
                        let before = *volumes.get(&key).unwrap_or(&Exact::ZERO);
                        let x = marginal_amount(&l.steps, before, v, amount, lots)?;
                        volumes.insert(key, before.add(v)?);
                        let calc = Calc::LadderMarginal(Box::new((before.approx(), v.approx())));
                        book(
                            eng,
                            &mut out,
                            &track,
                            &mut of_conv,
                            ci,
                            partner,
                            pi,
                            g,
                            x,
                            calc,
                            held,
                        )?;
                    }
                    Mode::Retroactive => {
                        let t = volumes.entry(key).or_insert(Exact::ZERO);
                        *t = t.add(v)?;
                        retro.push(Retro {
                            conv: ci,
                            partner,
                            rule: g,
                            period,
                            amount,
                            lots,
                            held,
                        });
                    }
                }
            }
        }
    }

    if stat_key.1 != NONE {
        add_stat(out.stats.entry(stat_key).or_default(), &stat);
    }

    // ---- retroactive ladders: the step of the period's total, for every event
    for r in &retro {
        let (_, rule) = eng.rule(r.rule);
        let Base::Ladder(l) = &rule.base else {
            unreachable!("retro items are ladders")
        };
        let total = volumes[&(r.rule, r.partner, r.period.index())];
        let i = step_at(&l.steps, total);
        let x = match i {
            Some(i) => base_amount(l.steps[i].base, r.amount, r.lots)?,
            None => Exact::ZERO,
        };
        let pi = eng.rules[r.rule as usize].prog;
        let calc =
            Calc::LadderRetroactive(Box::new((total.approx(), i.map_or(u16::MAX, |i| i as u16))));
        book(
            eng,
            &mut out,
            &track,
            &mut of_conv,
            r.conv,
            r.partner,
            pi,
            r.rule,
            x,
            calc,
            r.held,
        )?;
    }

    // ---- refunds and chargebacks: proportional clawbacks, in (ts, id) order;
    // a `reinstate` cancels the reversal it names. The share of a sale
    // reversed is that of the reversals still standing, together at most
    // all of it; each reversal or reinstatement books the change of that
    // share, each entry's rounded anew (so they sum to the standing
    // share's, rounded once, whatever came and went)
    let booked = eng.booked.read().ok().and_then(|g| g.clone());
    // per sale: its standing reversals and their shares, in order
    let mut standing: FxHashMap<u32, Vec<(u32, Exact)>> = FxHashMap::default();
    let share_of = |v: &[(u32, Exact)]| -> Result<Exact> {
        let mut t = Exact::ZERO;
        for (_, x) in v {
            t = t.add(*x)?.min(Exact::ONE);
        }
        Ok(t)
    };
    // the reversals so far by their (program, txn id), with their sale:
    // what a reinstatement names
    let mut by_txn: FxHashMap<(u32, &str), Vec<(u32, u32)>> = FxHashMap::default();
    // reinstatements that came before the reversal they name (by date):
    // that reversal counts for nothing when it comes
    let mut cancelled: FxHashMap<(u32, &str), u32> = FxHashMap::default();
    // what a refund's clawbacks reverse, one buffer for all of them
    let mut reversed: Vec<Reversed> = Vec::new();
    for &ri in &reversals {
        let r = &f.convs[ri as usize];
        if f.ex(r).orig_txn == NONE {
            continue;
        }
        let named = (r.program, f.syms.str(f.ex(r).orig_txn));
        let pi = eng
            .program_of(r.program)
            .expect("reversal of a known program");
        let p = &cfg.programs[usize::from(pi)];
        let (oi, before, after, cancels) = if eng.is_reinstate(r) {
            // the first reversal of that txn id still standing
            let found = by_txn.get(&named).and_then(|v| {
                v.iter().copied().find(|&(x, o)| {
                    standing
                        .get(&o)
                        .is_some_and(|st| st.iter().any(|&(y, _)| y == x))
                })
            });
            let Some((x, oi)) = found else {
                // none yet: the one that comes later is cancelled (a
                // second reinstatement of one reversal does nothing)
                if by_txn.get(&named).is_none_or(Vec::is_empty) {
                    *cancelled.entry(named).or_insert(0) += 1;
                }
                continue;
            };
            let st = standing.entry(oi).or_default();
            let before = share_of(st)?;
            st.retain(|&(y, _)| y != x);
            (oi, before, share_of(st)?, x)
        } else {
            let Some(&oi) = originals.get(&named) else {
                continue;
            };
            let o = &f.convs[oi as usize];
            let share = match (r.amount, o.amount) {
                (Some(ra), Some(oa)) if !oa.is_zero() => {
                    let (ra, oa) = if r.currency == o.currency {
                        (Exact::from_dec(ra), Exact::from_dec(oa))
                    } else {
                        (eng.conv_amount(r, p)?, eng.conv_amount(o, p)?)
                    };
                    ra.div(oa)?.max(Exact::ZERO).min(Exact::ONE)
                }
                _ => Exact::ONE,
            };
            let own = f.txns.get(r.idx);
            if !own.is_empty() {
                by_txn.entry((r.program, own)).or_default().push((ri, oi));
                // reinstated already (dated before it): it stands for nothing
                if let Some(n) = cancelled.get_mut(&(r.program, own)) {
                    *n -= 1;
                    if *n == 0 {
                        cancelled.remove(&(r.program, own));
                    }
                    continue;
                }
            }
            let st = standing.entry(oi).or_default();
            let before = share_of(st)?;
            st.push((ri, share));
            (oi, before, share_of(st)?, NONE)
        };
        if after.cmp_to(&before) == std::cmp::Ordering::Equal {
            continue;
        }
        let o = &f.convs[oi as usize];
        // booked when the refund is dated; one dated before its sale (clock
        // skew between shop and network) on the sale's date: booked in the
        // refund's earlier month, the sale not yet in that month's history,
        // it reversed nothing and the sale was paid
        let at = r.ts.max(o.ts);
        let period = Period::of_ms(at);
        let day = at.div_euclid(DAY_MS);
        let rid = f.id(r).as_bytes();
        // what the clawbacks take of the entries (not their boxed arithmetic)
        reversed.clear();
        reversed.extend(
            of_conv
                .get(&oi)
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .map(|&ei| {
                    let x = &out.entries[ei as usize];
                    Reversed {
                        id: x.id,
                        partner: x.partner,
                        prog: x.prog,
                        amount: x.amount,
                        rule: x.rule,
                        fraud: x.fraud,
                        day: x.event_day,
                    }
                }),
        );
        // for a sale of a closed period: as booked (see [`Booked`])
        let bc = booked.as_ref().and_then(|b| b.by_conv.get(&oi));
        if let Some(b) = bc {
            reversed = as_booked(&reversed, b, pi, day32(o.ts.div_euclid(DAY_MS)));
        }
        for e in &reversed {
            let cur = p.currency;
            // cumulative rounding: all clawbacks together never exceed the entry
            let total_after = Money::round(Exact::from_dec(e.amount).mul(after)?, cur)?.amount;
            let total_before = Money::round(Exact::from_dec(e.amount).mul(before)?, cur)?.amount;
            let amount = crate::money::norm(-(total_after - total_before));
            out.entries.push(REntry {
                id: hash_parts(&[b"clawback", rid, &e.id]),
                period,
                partner: e.partner,
                prog: e.prog,
                kind: EntryKind::Clawback,
                amount,
                rule: e.rule,
                src: r.idx,
                src2: o.idx,
                conv: ri,
                event_day: day32(day),
                calc: Calc::Clawback(Box::new((
                    after.sub(before)?.approx(),
                    e.amount,
                    e.id,
                    e.day,
                    before.approx(),
                    oi,
                    cancels,
                ))),
                // a clawback of a held entry waits with it
                fraud: e.fraud,
            });
        }
        let today = inv_of_conv
            .get(&oi)
            .map(|&li| out.invoices[li as usize].clone());
        // the line the credit note cancels: as booked, for a sale of a
        // closed period (plus what late facts restate in this view)
        let line = match bc {
            None => today.map(|l| (l.partner, l.list_amount, l.amount_due, l.discount, l.id)),
            Some(bc) => {
                let (tl, td) = today.as_ref().map_or((Decimal::ZERO, Decimal::ZERO), |l| {
                    (l.list_amount, l.amount_due)
                });
                let (ol, od) = bc.old_invoice.unwrap_or((Decimal::ZERO, Decimal::ZERO));
                match (&bc.invoice, bc.old.is_some(), &today) {
                    (Some(b), false, _) => Some((b.partner, b.list, b.due, b.discount, b.id)),
                    (Some(b), true, _) => Some((
                        b.partner,
                        b.list + tl - ol,
                        b.due + td - od,
                        b.discount,
                        b.id,
                    )),
                    (None, true, Some(l)) if tl != ol || td != od => {
                        Some((l.partner, tl - ol, td - od, l.discount, l.id))
                    }
                    _ => None,
                }
            }
        };
        if let Some((partner, list, due, discount, id)) = line {
            let cur = p.currency;
            let part = |x: Decimal| -> Result<Decimal> {
                let a = Money::round(Exact::from_dec(x).mul(after)?, cur)?.amount;
                let b = Money::round(Exact::from_dec(x).mul(before)?, cur)?.amount;
                Ok(crate::money::norm(-(a - b)))
            };
            out.invoices.push(RInvoice {
                id: hash_parts(&[b"credit", rid, &id]),
                period,
                partner,
                prog: pi,
                conv: ri,
                list_amount: part(list)?,
                discount,
                amount_due: part(due)?,
                share: after.sub(before)?.approx(),
            });
        }
    }

    // ---- MDF claims
    let mut mdfs: Vec<&crate::facts::Mdf> = f
        .mdfs
        .iter()
        .filter(|m| m.program == prog_sym && visible(m.ts, m.arrival))
        .collect();
    mdfs.sort_by(|a, b| {
        a.ts.cmp(&b.ts)
            .then_with(|| f.ids.get(a.id).cmp(f.ids.get(b.id)))
    });
    for m in mdfs {
        let Some(pi) = eng.program_of(m.program) else {
            continue;
        };
        let p = &cfg.programs[usize::from(pi)];
        // the registry's checks, as for a conversion's partner: known, of
        // this program, approved on the claim's date; else a rejected
        // entry, under the claim's entry id (a registry corrected later
        // changes an open draft; a closed period's stays as booked, as for
        // conversions)
        let why = match f.partners.get(&m.partner) {
            None => Some(Rejection::UnknownPartner),
            Some(i) if i.program != m.program => Some(Rejection::OtherProgram),
            Some(i) if status_of(i, m.ts) != eng.approved => Some(Rejection::PartnerNotApproved),
            Some(_) => None,
        };
        let (kind, amount, calc) = match why {
            Some(r) => (EntryKind::Rejected, Decimal::ZERO, Calc::Rejected(r)),
            None => {
                let x = eng.convert(m.amount, Some(m.currency), p.currency, m.ts, || {
                    f.ids.get(m.id)
                })?;
                (
                    EntryKind::Mdf,
                    Money::round(x, p.currency)?.amount,
                    Calc::Mdf,
                )
            }
        };
        out.entries.push(REntry {
            id: hash_parts(&[b"mdf", f.ids.get(m.id).as_bytes()]),
            period: Period::of_ms(m.ts),
            partner: m.partner,
            prog: pi,
            kind,
            amount,
            rule: NONE,
            src: m.id,
            src2: NONE,
            conv: NONE,
            event_day: day32(m.ts.div_euclid(DAY_MS)),
            calc,
            fraud: 0,
        });
    }

    // ---- technology minimums: top up partners with an attributed conversion
    if cfg.programs[usize::from(pi)].minimum_per_period.is_some() {
        let mut earned: FxHashMap<(u16, u32, Period), Decimal> = FxHashMap::default();
        for e in &out.entries {
            if matches!(e.kind, EntryKind::Commission | EntryKind::Override)
                && cfg.programs[usize::from(e.prog)]
                    .minimum_per_period
                    .is_some()
            {
                let s = earned.entry((e.prog, e.partner, e.period)).or_default();
                *s = s.checked_add(e.amount).ok_or(crate::money::Overflow)?;
            }
        }
        let mut act: Vec<&(u16, u32, Period)> = active.iter().collect();
        act.sort_by(|a, b| (a.0, a.2, f.syms.str(a.1)).cmp(&(b.0, b.2, f.syms.str(b.1))));
        for &&(pi, partner, period) in &act {
            let p = &cfg.programs[usize::from(pi)];
            let Some(min) = p.minimum_per_period else {
                continue;
            };
            let got = earned
                .get(&(pi, partner, period))
                .copied()
                .unwrap_or_default();
            if got < min {
                let period_s = period.to_string();
                out.entries.push(REntry {
                    id: hash_parts(&[
                        b"minimum_topup",
                        p.id.as_bytes(),
                        f.syms.str(partner).as_bytes(),
                        period_s.as_bytes(),
                    ]),
                    period,
                    partner,
                    prog: pi,
                    kind: EntryKind::MinimumTopup,
                    amount: Money::round(Exact::from_dec(min - got), p.currency)?.amount,
                    rule: NONE,
                    src: NONE,
                    src2: NONE,
                    conv: NONE,
                    event_day: day32(period.last_day()),
                    calc: Calc::Topup(Box::new((min, got))),
                    fraud: 0,
                });
            }
        }
    }
    Ok(Part {
        out,
        attr: attr.list,
    })
}

/// Books a commission (rounded once) and the overrides of its ancestors.
#[allow(clippy::too_many_arguments)]
fn book(
    eng: &Engine,
    out: &mut Output,
    track: &FxHashSet<u32>,
    of_conv: &mut FxHashMap<u32, Vec<u32>>,
    ci: u32,
    partner: u32,
    pi: u16,
    g: u32,
    x: Exact,
    calc: Calc,
    held: u8,
) -> Result<()> {
    let f = eng.facts;
    let c = &f.convs[ci as usize];
    let (p, rule) = eng.rule(g);
    let cur = p.currency;
    let amount = Money::round(x, cur)?.amount;
    let period = Period::of_ms(c.ts);
    let day = c.ts.div_euclid(DAY_MS);
    let id = hash_parts(&[
        b"commission",
        rule.id.as_bytes(),
        f.syms.str(partner).as_bytes(),
        f.id(c).as_bytes(),
    ]);
    let tracked = track.contains(&ci);
    if tracked {
        of_conv
            .entry(ci)
            .or_default()
            .push(out.entries.len() as u32);
    }
    out.entries.push(REntry {
        id,
        period,
        partner,
        prog: pi,
        kind: EntryKind::Commission,
        amount,
        rule: g,
        src: c.idx,
        src2: NONE,
        conv: ci,
        event_day: day32(day),
        calc,
        fraud: held,
    });
    if amount.is_zero() || p.overrides.is_empty() {
        return Ok(());
    }
    let mut child = partner;
    for (level, pct) in p.overrides.iter().enumerate() {
        let Some(info) = f.partners.get(&child) else {
            break;
        };
        let anc = info.parent;
        if anc == NONE || anc == partner {
            break;
        }
        match f.partners.get(&anc) {
            Some(a) if a.program == c.program => {}
            _ => break,
        }
        let lvl = [level as u8 + 1];
        let oid = hash_parts(&[b"override", &lvl, &id, f.syms.str(anc).as_bytes()]);
        let (kind, amt, calc) = if eng.status_at(anc, c.ts) == eng.approved {
            let o = Exact::from_dec(amount).mul(Exact::percent(*pct))?;
            (
                EntryKind::Override,
                Money::round(o, cur)?.amount,
                Calc::Override(Box::new((level as u8 + 1, amount, id))),
            )
        } else {
            (
                EntryKind::Rejected,
                Decimal::ZERO,
                Calc::RejectedOverride(Box::new(id)),
            )
        };
        if tracked && kind == EntryKind::Override {
            of_conv
                .entry(ci)
                .or_default()
                .push(out.entries.len() as u32);
        }
        out.entries.push(REntry {
            id: oid,
            period,
            partner: anc,
            prog: pi,
            kind,
            amount: amt,
            rule: g,
            src: c.idx,
            src2: NONE,
            conv: ci,
            event_day: day32(day),
            calc,
            fraud: if kind == EntryKind::Override { held } else { 0 },
        });
        child = anc;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> REntry {
        REntry {
            id: [n; 10],
            period: Period {
                year: 2026,
                month: 11,
            },
            partner: u32::from(n),
            prog: 0,
            kind: EntryKind::Commission,
            amount: Decimal::from(n),
            rule: NONE,
            src: NONE,
            src2: NONE,
            conv: NONE,
            event_day: 0,
            calc: Calc::Base,
            fraud: 0,
        }
    }

    /// An entry stays within 80 bytes (millions are held at once; 96 before the
    /// parent moved into the boxed arithmetic), and its parent is found in
    /// the arithmetic of the entries that have one.
    #[test]
    fn entries_are_small_and_keep_their_parent() {
        assert!(std::mem::size_of::<REntry>() <= 80);
        let h = [7u8; 10];
        let d = Decimal::ONE;
        assert_eq!(Calc::Override(Box::new((1, d, h))).parent(), Some(&h));
        assert_eq!(
            Calc::Clawback(Box::new((d, d, h, 0, d, 0, NONE))).parent(),
            Some(&h)
        );
        let r = Calc::RejectedOverride(Box::new(h));
        assert_eq!(r.parent(), Some(&h));
        assert_eq!(r.rejection(), Some(Rejection::PartnerNotApproved));
        assert_eq!(Calc::Base.parent(), None);
        assert_eq!(Calc::Rejected(Rejection::BotClick).parent(), None);
        assert_eq!(Calc::Base.rejection(), None);
        assert_eq!(day32(20_000), 20_000);
        assert_eq!(day32(i64::MAX), i32::MAX);
        assert_eq!(day32(i64::MIN), i32::MIN);
    }

    /// Entries joined from several vectors (empty ones too) index, count and
    /// iterate as one vector would.
    #[test]
    fn entries_read_as_one_vector() {
        let mut e = Entries::default();
        assert!(e.is_empty());
        assert!(e.get(0).is_none());
        e.append((0..3).map(entry).collect());
        e.append(Vec::new());
        e.append((3..7).map(entry).collect());
        e.push(entry(7));
        assert_eq!(e.len(), 8);
        for i in 0..8u8 {
            assert_eq!(e[usize::from(i)].partner, u32::from(i));
        }
        assert!(e.get(8).is_none());
        let all: Vec<u32> = e.iter().map(|x| x.partner).collect();
        assert_eq!(all, (0..8).collect::<Vec<u32>>());
        assert_eq!((&e).into_iter().count(), 8);
    }

    /// A part writes attribution in place inside its slice and lists what
    /// falls outside it (or everything, without a slice).
    #[test]
    fn attribution_in_place_or_listed() {
        let mut all = [(NONE, Method::None); 10];
        {
            let (_, tail) = all.split_at_mut(4);
            let (mine, _) = tail.split_at_mut(3);
            let mut a = Attr {
                slice: Some((mine, 4)),
                list: Vec::new(),
            };
            a.push((4, 1, Method::Click));
            a.push((6, 2, Method::Coupon));
            a.push((7, 3, Method::Click));
            a.push((3, 4, Method::Click));
            assert_eq!(a.list, vec![(7, 3, Method::Click), (3, 4, Method::Click)]);
        }
        assert_eq!(all[4], (1, Method::Click));
        assert_eq!(all[6], (2, Method::Coupon));
        assert_eq!(all[5], (NONE, Method::None));
        let mut b = Attr {
            slice: None,
            list: Vec::new(),
        };
        b.push((0, 9, Method::Lifetime(3)));
        assert_eq!(b.list, vec![(0, 9, Method::Lifetime(3))]);
    }
}
