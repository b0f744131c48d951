//! The facts the engine reads, in memory: conversions, deal registrations,
//! MDF claims, the partner and coupon registries. Strings are interned to
//! `u32` symbols so the engine works over plain integers.

use edge::currency::Currency;
use edge::record::{Kind, Record};
use rust_decimal::Decimal;
use rustc_hash::{FxHashMap, FxHashSet};

/// No symbol.
pub const NONE: u32 = u32::MAX;

use crate::mem::hint;
pub use crate::mem::prefetch;

/// The distinct values of `it`, ascending, for the few there are (programs):
/// a small set in place of sorting millions.
fn distinct(it: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut seen: FxHashSet<u32> = FxHashSet::default();
    let mut last = None;
    for x in it {
        if last != Some(x) {
            last = Some(x);
            seen.insert(x);
        }
    }
    let mut v: Vec<u32> = seen.into_iter().collect();
    v.sort_unstable();
    v
}

/// A stable counting sort by program: `perm[new] = old`, and where each
/// program's run starts (`starts[k]..starts[k + 1]`, programs ascending).
fn group_by_program(programs: impl Iterator<Item = u32> + Clone) -> (Vec<usize>, Vec<u32>) {
    let progs = distinct(programs.clone());
    let slot = |p: u32| progs.binary_search(&p).unwrap_or(0);
    let mut starts = vec![0usize; progs.len() + 1];
    // a program's slot is looked up once per run of it, not per element
    let mut last = (NONE, 0usize);
    let mut slot_of = |p: u32| {
        if p != last.0 {
            last = (p, slot(p));
        }
        last.1
    };
    for p in programs.clone() {
        starts[slot_of(p) + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut perm = vec![0u32; starts[progs.len()]];
    let mut next = starts.clone();
    for (i, p) in programs.enumerate() {
        let k = slot_of(p);
        perm[next[k]] = i as u32;
        next[k] += 1;
    }
    (starts, perm)
}

/// People's clicks grouped by program (stable, so in load order within
/// one), and `keys` (click id hash, click) following them: the fraud rules
/// read one program's clicks at a time.
fn group_clicks(clicks: &mut Vec<FClick>, keys: &mut [(u64, u32)]) {
    let n = clicks.len();
    if n == 0 || clicks.windows(2).all(|w| w[0].program <= w[1].program) {
        return;
    }
    let (_, perm) = group_by_program(clicks.iter().map(|c| c.program));
    // old index -> new position
    let mut at = vec![0u32; n];
    for (new, &old) in perm.iter().enumerate() {
        at[old as usize] = new as u32;
    }
    *clicks = perm.iter().map(|&old| clicks[old as usize]).collect();
    for k in keys {
        k.1 = at[k.1 as usize];
    }
}

/// The runs of equal programs, `(program, start, end)`, if no program has
/// two.
fn runs(programs: impl Iterator<Item = u32>) -> Option<Vec<(u32, u32, u32)>> {
    let mut out: Vec<(u32, u32, u32)> = Vec::new();
    for (i, p) in programs.enumerate() {
        let i = u32::try_from(i).ok()?;
        match out.last_mut() {
            Some(r) if r.0 == p => r.2 = i + 1,
            _ => out.push((p, i, i + 1)),
        }
    }
    let mut seen: Vec<u32> = out.iter().map(|r| r.0).collect();
    seen.sort_unstable();
    seen.dedup();
    (seen.len() == out.len()).then_some(out)
}

/// Strings stored once, in an arena, found again through a table of their
/// indices.
///
/// The table is open addressing over slots that hold where their string is
/// in the arena as well as its index, so a lookup reads one slot and the
/// string's bytes: two cache misses in a table of a million customers,
/// where a table of bare indices takes four (slot, index, the arena's
/// offsets, bytes). [`Interner::prefetch`] asks for a slot ahead of use.
#[derive(Default, Clone)]
pub struct Interner {
    slots: Vec<Slot>,
    arena: Arena,
}

/// A slot of [`Interner`]'s table: the high half of the string's hash, its
/// index (`NONE`: a free slot), and where its bytes are in the arena.
#[derive(Clone, Copy)]
struct Slot {
    tag: u32,
    idx: u32,
    start: u32,
    len: u32,
}

const FREE: Slot = Slot {
    tag: 0,
    idx: NONE,
    start: 0,
    len: 0,
};

impl std::fmt::Debug for Interner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interner({} strings)", self.arena.len())
    }
}

fn str_hash(s: &str) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(s)
}

impl Interner {
    /// The slot holding `s` (hash `h`), or the free one where it goes.
    #[inline]
    fn find(&self, h: u64, s: &str) -> usize {
        let mask = self.slots.len() - 1;
        let tag = (h >> 32) as u32;
        let mut i = h as usize & mask;
        loop {
            let x = self.slots[i];
            if x.idx == NONE
                || (x.tag == tag
                    && x.len as usize == s.len()
                    && self.arena.buf.as_bytes()[x.start as usize..][..s.len()] == *s.as_bytes())
            {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    pub fn intern(&mut self, s: &str) -> u32 {
        let h = str_hash(s);
        if self.slots.is_empty() {
            self.grow();
        }
        let i = self.find(h, s);
        if self.slots[i].idx != NONE {
            return self.slots[i].idx;
        }
        let start = self.arena.buf.len() as u32;
        let idx = self.arena.push(s);
        self.slots[i] = Slot {
            tag: (h >> 32) as u32,
            idx,
            start,
            len: s.len() as u32,
        };
        // at most three quarters full
        if self.arena.len() * 4 > self.slots.len() * 3 {
            self.grow();
        }
        idx
    }

    /// Twice the slots (1024 at first), the strings placed again.
    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).max(1024);
        let mut slots = vec![FREE; cap];
        crate::mem::huge_pages(&mut slots);
        self.slots = slots;
        let mask = cap - 1;
        for idx in 0..self.arena.len() as u32 {
            let s = self.arena.get(idx);
            let h = str_hash(s);
            let mut i = h as usize & mask;
            while self.slots[i].idx != NONE {
                i = (i + 1) & mask;
            }
            let end = self.arena.ends[idx as usize];
            self.slots[i] = Slot {
                tag: (h >> 32) as u32,
                idx,
                start: end - s.len() as u32,
                len: s.len() as u32,
            };
        }
    }

    /// Asks for the cache line of the slot where `s` would be found: a
    /// loop that interns a string a few steps from now calls it first.
    #[inline]
    pub fn prefetch(&self, s: &str) {
        if let Some(x) = self
            .slots
            .get(str_hash(s) as usize & self.slots.len().wrapping_sub(1))
        {
            crate::mem::prefetch(x);
        }
    }

    /// Asks for the bytes of `s` in the arena, if its slot (asked for by
    /// [`Interner::prefetch`] a few steps before, so in cache now) says
    /// where they are: the comparison that confirms a found string then
    /// reads them from the cache instead of waiting for memory. Only a
    /// hint: a slot whose tag and length match another string's asks for
    /// that one's bytes, and nothing else follows from it.
    #[inline]
    pub fn prefetch_bytes(&self, s: &str) {
        if self.slots.is_empty() {
            return;
        }
        let h = str_hash(s);
        let (mask, tag) = (self.slots.len() - 1, (h >> 32) as u32);
        let mut i = h as usize & mask;
        // the first few slots of the probe: a longer one is rare
        for _ in 0..4 {
            let x = self.slots[i];
            if x.idx == NONE {
                return;
            }
            if x.tag == tag && x.len as usize == s.len() {
                let p = self.arena.buf.as_bytes()[x.start as usize..].as_ptr();
                hint(p.cast());
                hint(p.wrapping_add(s.len().saturating_sub(1)).cast());
                return;
            }
            i = (i + 1) & mask;
        }
    }

    pub fn opt(&mut self, s: Option<&str>) -> u32 {
        match s {
            Some(s) if !s.is_empty() => self.intern(s),
            _ => NONE,
        }
    }

    pub fn get(&self, s: &str) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let x = self.slots[self.find(str_hash(s), s)];
        (x.idx != NONE).then_some(x.idx)
    }

    /// The number of strings held (symbols are `0..len`).
    pub fn len(&self) -> usize {
        self.arena.len()
    }

    pub fn is_empty(&self) -> bool {
        self.arena.is_empty()
    }

    pub fn str(&self, i: u32) -> &str {
        if i == NONE {
            ""
        } else {
            self.arena.get(i)
        }
    }
}

/// Many strings in one buffer, addressed by index.
#[derive(Default, Debug, Clone)]
pub struct Arena {
    buf: String,
    ends: Vec<u32>,
}

impl Arena {
    pub fn push(&mut self, s: &str) -> u32 {
        self.buf.push_str(s);
        let end = u32::try_from(self.buf.len()).expect("an arena holds at most 4 GiB");
        self.ends.push(end);
        (self.ends.len() - 1) as u32
    }
    #[inline]
    pub fn get(&self, i: u32) -> &str {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.buf[start..self.ends[i] as usize]
    }
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// A new arena of the strings at `idx(i)`, string `i` going to
    /// position `at[i]` (`at` a permutation of `0..at.len()`); read front
    /// to back, written where each string goes.
    pub fn scattered(&self, idx: impl Fn(usize) -> u32, at: &[u32]) -> Arena {
        let n = at.len();
        let mut ends = vec![0u32; n];
        for (i, &a) in at.iter().enumerate() {
            ends[a as usize] = self.get(idx(i)).len() as u32;
        }
        let mut total = 0u32;
        for e in ends.iter_mut() {
            total += *e;
            *e = total;
        }
        let mut buf = vec![0u8; total as usize];
        for (i, &a) in at.iter().enumerate() {
            let s = self.get(idx(i)).as_bytes();
            let end = ends[a as usize] as usize;
            buf[end - s.len()..end].copy_from_slice(s);
        }
        Arena {
            // whole strings, laid end to end
            buf: String::from_utf8(buf).expect("strings end to end are UTF-8"),
            ends,
        }
    }

    /// Room for `n` more strings of about 16 bytes.
    pub fn reserve(&mut self, n: usize) {
        self.ends.reserve(n);
        self.buf.reserve(n.saturating_mul(16));
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

pub const NO_TS: i64 = i64::MIN;

/// A conversion (any `event`, including `refund` and `chargeback`).
#[derive(Clone, Debug)]
pub struct Conv {
    pub ts: i64,
    pub arrival: u32,
    /// Index into `Facts::ids` and `Facts::txns`.
    pub idx: u32,
    pub program: u32,
    pub partner: u32,
    pub click_ts: i64,
    pub has_click: bool,
    pub click_bot: bool,
    /// Recorded by the edge's pixel (`source: "pixel"`, anyone can fire
    /// one): of two copies of one sale, the other stands. Read only for a
    /// conversion whose `txn_id` is kept.
    pub pixel: bool,
    pub event: u32,
    pub customer: u32,
    /// Index into `Facts::extras`, or `NONE` (most conversions have none).
    pub extra: u32,
    pub amount: Option<Decimal>,
    pub currency: Option<Currency>,
}

/// The fields few conversions carry, kept aside so a conversion stays small.
#[derive(Clone, Debug)]
pub struct ConvExtra {
    pub orig_txn: u32,
    pub coupon: u32,
    pub country: u32,
    pub instrument: u32,
    pub email_hash: u32,
    pub lots: Option<Decimal>,
}

const NO_EXTRA: ConvExtra = ConvExtra {
    orig_txn: NONE,
    coupon: NONE,
    country: NONE,
    instrument: NONE,
    email_hash: NONE,
    lots: None,
};

#[derive(Clone, Debug)]
pub struct Deal {
    pub ts: i64,
    pub arrival: i64,
    pub id: u32,
    pub program: u32,
    pub partner: u32,
    pub customer: u32,
    pub approved: bool,
    pub expires_at: i64,
}

#[derive(Clone, Debug)]
pub struct Mdf {
    pub ts: i64,
    pub arrival: i64,
    pub id: u32,
    pub program: u32,
    pub partner: u32,
    pub amount: Decimal,
    pub currency: Currency,
}

#[derive(Clone, Debug)]
pub struct PartnerInfo {
    pub program: u32,
    pub parent: u32,
    pub tier: u32,
    pub status: u32,
    /// `(at, status)` sorted by time.
    pub history: Vec<(i64, u32)>,
    pub email_hash: u32,
}

/// A person's click as the fraud rules read it (bot clicks are left out:
/// they never pay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FClick {
    pub ts: i64,
    /// [`visitor_key`] of the salted visitor hash, 0 when absent.
    pub visitor: u64,
    pub program: u32,
    pub partner: u32,
    pub arrival: u32,
    /// [`country_code`], 0 when absent.
    pub country: u16,
    /// [`FClick::DATACENTER`], [`FClick::REFERRER`].
    pub flags: u8,
}

impl FClick {
    pub const DATACENTER: u8 = 1;
    pub const REFERRER: u8 = 2;
}

/// 64-bit FNV-1a: stable across runs and machines.
pub fn hash64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A visitor hash as 64 bits: its first 16 hex digits (the edge's hashes
/// are hex), else [`hash64`]; never 0.
pub fn visitor_key(s: &str) -> u64 {
    let v = s
        .get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| hash64(s));
    v.max(1)
}

/// A two-letter country code as 16 bits, 0 for anything else.
pub fn country_code(s: Option<&str>) -> u16 {
    match s.map(str::as_bytes) {
        Some([a, b]) => u16::from(a.to_ascii_uppercase()) << 8 | u16::from(b.to_ascii_uppercase()),
        _ => 0,
    }
}

fn fclick(k: &ClickIn, program: u32, partner: u32) -> FClick {
    let mut flags = 0;
    if k.datacenter == Some(true) || k.asn.is_some_and(edge::bot::is_hosting_asn) {
        flags |= FClick::DATACENTER;
    }
    if k.has_referrer == Some(true) {
        flags |= FClick::REFERRER;
    }
    FClick {
        ts: k.ts,
        visitor: k.visitor.filter(|v| !v.is_empty()).map_or(0, visitor_key),
        program,
        partner,
        arrival: u32::try_from(k.arrival).unwrap_or(u32::MAX),
        country: country_code(k.country),
        flags,
    }
}

/// What the fraud rules need beyond the conversions: people's clicks and
/// which click each conversion cites. Loaded only for programs with a
/// `[programs.fraud]` table.
#[derive(Default, Debug, Clone)]
pub struct ClickFacts {
    pub clicks: Vec<FClick>,
    /// Per conversion (index in `Facts::convs`): the index of the click it
    /// cites in `clicks`, or `NONE`; built by [`Facts::finish`].
    pub conv_click: Vec<u32>,
    /// `(conversion, visitor key)` of conversions that carry their own
    /// visitor hash, sorted.
    pub conv_visitor: Vec<(u32, u64)>,
    /// `(click key, click index)` while loading.
    keys: Vec<(u64, u32)>,
    /// `(click key, conversion index)` while loading.
    conv_keys: Vec<(u64, u32)>,
}

impl ClickFacts {
    /// The visitor of a conversion: its own, else its click's (0: none).
    pub fn visitor_of(&self, conv: u32) -> u64 {
        if let Ok(i) = self.conv_visitor.binary_search_by_key(&conv, |x| x.0) {
            return self.conv_visitor[i].1;
        }
        match self.conv_click.get(conv as usize) {
            Some(&k) if k != NONE => self.clicks[k as usize].visitor,
            _ => 0,
        }
    }
}

#[derive(Default, Debug, Clone)]
pub struct Facts {
    pub syms: Interner,
    pub ids: Arena,
    pub txns: Arena,
    pub convs: Vec<Conv>,
    pub extras: Vec<ConvExtra>,
    pub deals: Vec<Deal>,
    pub mdfs: Vec<Mdf>,
    pub partners: FxHashMap<u32, PartnerInfo>,
    /// `(program, code)` -> partner.
    pub coupons: FxHashMap<(u32, u32), u32>,
    /// `(pseudonym, partner)`: an erased customer who was that partner
    /// (`settlement erase`), a self-referral still.
    pub erased_self: FxHashSet<(u32, u32)>,
    pub bot_clicks: FxHashSet<Box<str>>,
    /// Conversions that name an `original_txn_id` (refunds, chargebacks),
    /// in load order: the engine finds what they reverse without a pass
    /// over every conversion.
    pub with_orig: Vec<u32>,
    /// Conversions whose transaction id is kept (see `Facts::txns`), in
    /// load order.
    pub with_txn: Vec<u32>,
    /// For the fraud rules; empty unless a program has them.
    pub fraud: ClickFacts,
    /// Set by [`Facts::finish`]: the runs of one program each that the
    /// conversions and the people's clicks form, `(program, start, end)`.
    conv_runs: Option<Vec<(u32, u32, u32)>>,
    click_runs: Option<Vec<(u32, u32, u32)>>,
    /// Turns the names of facts being added into symbols.
    namer: Namer,
}

/// Turns the names a fact carries (program, partner, customer, ...) into
/// symbols of [`Facts::syms`], in the order facts are added, so the
/// numbering does not depend on who does it. The store's loader runs it on
/// the thread that decodes the event blocks, beside the one that builds the
/// facts ([`Facts::take_naming`]): interning a million customers is a cache
/// miss or more each, and the two halves then overlap.
#[derive(Default, Debug, Clone)]
pub struct Namer {
    /// The last program and event name of a conversion: consecutive
    /// conversions mostly repeat them, and a comparison with the last one
    /// spares a hash and a probe of the (large) symbol table.
    recent: [Option<u32>; 2],
    /// Program and partner names -> symbols: a small table that stays in
    /// cache, in front of the interner.
    names: FxHashMap<Box<str>, u32>,
    /// The programs whose clicks and click ids are kept; `None`: all.
    programs: Option<FxHashSet<u32>>,
}

/// The symbols of a conversion's names ([`Namer::conv`]).
#[derive(Clone, Copy, Debug)]
pub struct ConvSyms {
    pub program: u32,
    pub partner: u32,
    pub event: u32,
    pub customer: u32,
    pub orig_txn: u32,
    pub coupon: u32,
    pub country: u32,
    pub instrument: u32,
    pub email_hash: u32,
    /// The program's click ids are kept (it has fraud rules).
    pub fraud: bool,
}

impl Namer {
    /// [`Interner::intern`] through the table of program and partner names.
    fn name(&mut self, syms: &mut Interner, s: &str) -> u32 {
        match self.names.get(s) {
            Some(&x) => x,
            None => {
                let x = syms.intern(s);
                self.names.insert(s.into(), x);
                x
            }
        }
    }

    /// [`Interner::intern`], first trying the symbol this slot last gave.
    fn recent(&mut self, syms: &mut Interner, slot: usize, s: &str) -> u32 {
        if let Some(i) = self.recent[slot] {
            if syms.str(i) == s {
                return i;
            }
        }
        let i = syms.intern(s);
        self.recent[slot] = Some(i);
        i
    }

    /// Keeps clicks and click ids for these programs only.
    fn keep_programs(&mut self, syms: &mut Interner, programs: &[&str]) {
        let set = programs.iter().map(|p| syms.intern(p)).collect();
        self.programs = Some(set);
    }

    /// The symbol of a program whose clicks are kept, or `None`.
    pub fn click_program(&mut self, syms: &mut Interner, program: &str) -> Option<u32> {
        if self.programs.as_ref().is_some_and(|s| s.is_empty()) {
            return None;
        }
        let p = self.name(syms, program);
        match &self.programs {
            Some(set) if !set.contains(&p) => None,
            _ => Some(p),
        }
    }

    /// The symbol of a click's partner.
    pub fn click_partner(&mut self, syms: &mut Interner, partner: &str) -> u32 {
        self.name(syms, partner)
    }

    /// The symbols of a conversion's names.
    pub fn conv(&mut self, syms: &mut Interner, c: &ConvIn) -> ConvSyms {
        let program = self.recent(syms, 0, c.program);
        let fraud = match &self.programs {
            None => true,
            Some(set) => !set.is_empty() && set.contains(&program),
        };
        let orig_txn = syms.opt(c.original_txn_id);
        let coupon = syms.opt(c.coupon);
        let country = syms.opt(c.country);
        let instrument = syms.opt(c.instrument);
        let email_hash = syms.opt(c.email_hash);
        let partner = match c.partner {
            Some(p) if !p.is_empty() => self.name(syms, p),
            _ => NONE,
        };
        ConvSyms {
            program,
            partner,
            event: self.recent(syms, 1, c.event),
            customer: syms.opt(c.customer),
            orig_txn,
            coupon,
            country,
            instrument,
            email_hash,
            fraud,
        }
    }

    /// The symbols of a deal registration's program, partner and customer.
    pub fn deal(
        &mut self,
        syms: &mut Interner,
        program: &str,
        partner: &str,
        customer: &str,
    ) -> [u32; 3] {
        [
            syms.intern(program),
            syms.intern(partner),
            syms.intern(customer),
        ]
    }

    /// The symbols of an MDF claim's partner and program (if it names one).
    pub fn mdf(
        &mut self,
        syms: &mut Interner,
        program: Option<&str>,
        partner: &str,
    ) -> (u32, Option<u32>) {
        let partner = syms.intern(partner);
        (partner, program.map(|p| syms.intern(p)))
    }
}

/// The fields of a conversion as the store or a record gives them.
#[derive(Default, Clone, Copy)]
pub struct ConvIn<'a> {
    pub id: &'a str,
    pub ts: i64,
    pub arrival: i64,
    pub program: &'a str,
    pub partner: Option<&'a str>,
    pub click_id: Option<&'a str>,
    pub click_ts: Option<i64>,
    pub event: &'a str,
    pub txn_id: Option<&'a str>,
    pub original_txn_id: Option<&'a str>,
    pub customer: Option<&'a str>,
    pub coupon: Option<&'a str>,
    pub country: Option<&'a str>,
    pub instrument: Option<&'a str>,
    pub email_hash: Option<&'a str>,
    pub amount: Option<Decimal>,
    pub currency: Option<Currency>,
    pub lots: Option<Decimal>,
    pub bot: bool,
    /// `source: "pixel"` ([`Conv::pixel`]).
    pub pixel: bool,
    /// The conversion's own visitor hash (pixel conversions may carry one).
    pub visitor: Option<&'a str>,
}

/// The fields of a click as the store or a record gives them.
#[derive(Default, Clone, Copy)]
pub struct ClickIn<'a> {
    /// The click id (or the event id when the click has none).
    pub key: &'a str,
    pub ts: i64,
    pub arrival: i64,
    pub program: &'a str,
    pub partner: &'a str,
    pub visitor: Option<&'a str>,
    pub country: Option<&'a str>,
    pub asn: Option<u32>,
    pub datacenter: Option<bool>,
    pub has_referrer: Option<bool>,
}

impl Facts {
    pub fn id(&self, c: &Conv) -> &str {
        self.ids.get(c.idx)
    }

    /// Conversion indices (ascending, as a stable sort would keep ties) in
    /// `(ts, id)` order: sorted by `(ts, index)` as plain integers, then each
    /// run of equal `ts` by `(id, index)`, the order a stable sort by
    /// `(ts, id)` gives, without reading a conversion or an id per comparison.
    pub fn sorted_ts_id(&self, idx: &[u32]) -> Vec<u32> {
        let mut keys: Vec<(i64, u32)> = idx
            .iter()
            .map(|&i| (self.convs[i as usize].ts, i))
            .collect();
        keys.sort_unstable();
        let mut s = 0;
        while s < keys.len() {
            let ts = keys[s].0;
            let mut e = s + 1;
            while e < keys.len() && keys[e].0 == ts {
                e += 1;
            }
            if e - s > 1 {
                keys[s..e].sort_unstable_by(|a, b| {
                    let ia = self.id(&self.convs[a.1 as usize]);
                    let ib = self.id(&self.convs[b.1 as usize]);
                    ia.cmp(ib).then(a.1.cmp(&b.1))
                });
            }
            s = e;
        }
        keys.into_iter().map(|k| k.1).collect()
    }

    /// Asks for the cache lines of the conversion `AHEAD` places further in
    /// `order` than `k`: loops over a program's conversions in `(ts, id)`
    /// order read them scattered among the other programs', and each would
    /// otherwise wait for memory.
    #[inline(always)]
    pub fn prefetch_ahead(&self, order: &[u32], k: usize) {
        const AHEAD: usize = 8;
        if let Some(c) = order
            .get(k + AHEAD)
            .and_then(|&i| self.convs.get(i as usize))
        {
            // both ends: a `Conv` may straddle two cache lines
            let p = (c as *const Conv).cast::<i8>();
            hint(p);
            hint(p.wrapping_add(std::mem::size_of::<Conv>() - 1));
        }
    }

    /// The rarely present fields of a conversion.
    pub fn ex(&self, c: &Conv) -> &ConvExtra {
        if c.extra == NONE {
            &NO_EXTRA
        } else {
            &self.extras[c.extra as usize]
        }
    }

    pub fn add_bot_click(&mut self, click_id: &str) {
        self.bot_clicks.insert(click_id.into());
    }

    /// Keep clicks and click ids for these programs only (the ones with
    /// fraud rules); by default, for every program.
    pub fn fraud_programs(&mut self, programs: &[&str]) {
        self.namer.keep_programs(&mut self.syms, programs);
    }

    /// The symbol table and the namer, taken out for a loader that names
    /// facts on another thread while this one adds them (with the `_named`
    /// methods); [`Facts::put_naming`] gives them back.
    pub fn take_naming(&mut self) -> (Interner, Namer) {
        (
            std::mem::take(&mut self.syms),
            std::mem::take(&mut self.namer),
        )
    }

    /// Gives back what [`Facts::take_naming`] took.
    pub fn put_naming(&mut self, (syms, namer): (Interner, Namer)) {
        self.syms = syms;
        self.namer = namer;
    }

    /// A person's click, for the fraud rules (of a program that wants them).
    pub fn add_click(&mut self, k: ClickIn) {
        if let Some(p) = self.namer.click_program(&mut self.syms, k.program) {
            let partner = self.namer.click_partner(&mut self.syms, k.partner);
            self.add_click_named(k, p, partner);
        }
    }

    /// [`Facts::add_click`] with the symbols from [`Namer::click_program`]
    /// and [`Namer::click_partner`].
    pub fn add_click_named(&mut self, k: ClickIn, program: u32, partner: u32) {
        let i = self.fraud.clicks.len() as u32;
        self.fraud.clicks.push(fclick(&k, program, partner));
        self.fraud.keys.push((hash64(k.key), i));
    }

    /// Room for `n` more clicks (capacity never touched costs no memory).
    pub fn reserve_clicks(&mut self, n: usize) {
        self.fraud.clicks.reserve(n);
        self.fraud.keys.reserve(n);
    }

    /// Call once everything is added: puts the conversions in `(program,
    /// ts, id)` order, so the engine, the fraud rules and the ledger's
    /// writer, which walk one program at a time in that order, read memory
    /// front to back instead of striding across every program's
    /// conversions; then joins conversions to the clicks they cite.
    pub fn finish(&mut self) {
        self.reorder();
        self.group_and_link_clicks();
        self.conv_runs = runs(self.convs.iter().map(|c| c.program));
        self.click_runs = runs(self.fraud.clicks.iter().map(|c| c.program));
    }

    /// After [`Facts::finish`], each program's conversions in one run,
    /// `(program, start, end)` in order: a program's work starts from its
    /// run instead of a pass over everyone's. `None` if conversions were
    /// added since.
    pub fn conv_runs(&self) -> Option<&[(u32, u32, u32)]> {
        let r = self.conv_runs.as_deref()?;
        (r.last().map_or(0, |x| x.2) as usize == self.convs.len()).then_some(r)
    }

    /// [`Facts::conv_runs`] for the people's clicks.
    pub fn click_runs(&self) -> Option<&[(u32, u32, u32)]> {
        self.click_runs_of(&self.fraud)
    }

    /// [`Facts::click_runs`] once the clicks have been taken out of the
    /// facts (`fr`: the facts' own before).
    pub fn click_runs_of(&self, fr: &ClickFacts) -> Option<&[(u32, u32, u32)]> {
        let r = self.click_runs.as_deref()?;
        (r.last().map_or(0, |x| x.2) as usize == fr.clicks.len()).then_some(r)
    }

    /// Puts the conversions in `(program, ts, id)` order (programs by
    /// symbol; ties by load order), the id and transaction arenas and the
    /// extras in the same order, and renumbers what names a conversion.
    ///
    /// Every large array is read once, front to back, and written at the
    /// places its values go: gathering one program's conversions at a time
    /// instead would read the whole array once a program.
    fn reorder(&mut self) {
        let _ph = crate::timing::Phase::start("facts: reorder");
        let n = self.convs.len();
        if n == 0 {
            return;
        }
        let progs = distinct(self.convs.iter().map(|c| c.program));
        let mut last_prog = (NONE, 0usize);
        let mut slot_of = |p: u32| {
            if p != last_prog.0 {
                last_prog = (p, progs.binary_search(&p).unwrap_or(0));
            }
            last_prog.1
        };
        // (ts, id, index); the id is read only on a tie of ts
        let lt = |a: usize, b: usize| {
            let (ca, cb) = (&self.convs[a], &self.convs[b]);
            ca.ts
                .cmp(&cb.ts)
                .then_with(|| self.ids.get(ca.idx).cmp(self.ids.get(cb.idx)))
                .then(a.cmp(&b))
                .is_lt()
        };
        // how many conversions each program has, and whether they were
        // loaded in order (the common case: then load order is the order)
        let k = progs.len();
        let mut count = vec![0usize; k];
        let mut last: Vec<Option<usize>> = vec![None; k];
        let mut sorted = vec![true; k];
        for (i, c) in self.convs.iter().enumerate() {
            let s = slot_of(c.program);
            if let Some(j) = last[s] {
                if sorted[s] && !lt(j, i) {
                    sorted[s] = false;
                }
            }
            last[s] = Some(i);
            count[s] += 1;
        }
        let mut next = vec![0usize; k];
        for s in 1..k {
            next[s] = next[s - 1] + count[s - 1];
        }
        let starts = next.clone();
        // old index -> new position
        let mut at = vec![0u32; n];
        let mut unsorted: Vec<Vec<u32>> = vec![Vec::new(); k];
        for (i, c) in self.convs.iter().enumerate() {
            let s = slot_of(c.program);
            if sorted[s] {
                at[i] = next[s] as u32;
                next[s] += 1;
            } else {
                unsorted[s].push(i as u32);
            }
        }
        for (s, mut olds) in unsorted.into_iter().enumerate() {
            olds.sort_unstable_by(|&a, &b| {
                if lt(a as usize, b as usize) {
                    std::cmp::Ordering::Less
                } else {
                    std::cmp::Ordering::Greater
                }
            });
            for (r, old) in olds.into_iter().enumerate() {
                at[old as usize] = (starts[s] + r) as u32;
            }
        }
        if at.iter().enumerate().all(|(i, &a)| i as u32 == a) {
            return;
        }
        // the id and transaction arenas in the new order: conversions, then
        // deals and MDF claims
        // (the two arenas on two threads: both new ones were held together
        // before the swap anyway)
        let idx = |i: usize| self.convs[i].idx;
        let (ids, mut txns) = std::thread::scope(|sc| {
            let ids = sc.spawn(|| self.ids.scattered(idx, &at));
            let txns = self.txns.scattered(idx, &at);
            (ids.join(), txns)
        });
        let mut ids = match ids {
            Ok(a) => a,
            Err(p) => std::panic::resume_unwind(p),
        };
        for d in &mut self.deals {
            let i = ids.push(self.ids.get(d.id));
            txns.push("");
            d.id = i;
        }
        for m in &mut self.mdfs {
            let i = ids.push(self.ids.get(m.id));
            txns.push("");
            m.id = i;
        }
        self.ids = ids;
        self.txns = txns;
        // the conversions, each written at its new position
        let mut convs = vec![self.convs[0].clone(); n];
        for (old, mut c) in std::mem::take(&mut self.convs).into_iter().enumerate() {
            let new = at[old] as usize;
            c.idx = new as u32;
            convs[new] = c;
        }
        self.convs = convs;
        self.follow_new_order(&at);
    }

    /// After the conversions moved (old index -> new position in `at`):
    /// the extras in their conversions' order (a fraction of them have
    /// any: read in the new order, they are a small array), and the new
    /// positions in every list that names a conversion.
    fn follow_new_order(&mut self, at: &[u32]) {
        if !self.extras.is_empty() {
            let mut extras = Vec::with_capacity(self.extras.len());
            for c in &mut self.convs {
                if c.extra != NONE {
                    extras.push(self.extras[c.extra as usize].clone());
                    c.extra = (extras.len() - 1) as u32;
                }
            }
            self.extras = extras;
        }
        let remap = |v: &mut Vec<u32>| {
            for x in v.iter_mut() {
                *x = at[*x as usize];
            }
            v.sort_unstable();
        };
        remap(&mut self.with_orig);
        remap(&mut self.with_txn);
        for k in &mut self.fraud.conv_keys {
            k.1 = at[k.1 as usize];
        }
        for k in &mut self.fraud.conv_visitor {
            k.0 = at[k.0 as usize];
        }
    }

    /// The former [`Facts::reorder`], gathering each program's
    /// conversions in turn: the reference the one-pass version is tested
    /// against.
    #[cfg(test)]
    fn reorder_by_gathering(&mut self) {
        let n = self.convs.len();
        if n == 0 {
            return;
        }
        // new position -> old index: grouped by program (a counting sort,
        // stable), then each program's run in (ts, id) order, which load
        // order mostly is already
        let (starts, mut perm) = group_by_program(self.convs.iter().map(|c| c.program));
        // (ts, id, index); the id is read only on a tie of ts
        let cmp = |a: u32, b: u32| {
            let (ca, cb) = (&self.convs[a as usize], &self.convs[b as usize]);
            ca.ts.cmp(&cb.ts).then_with(|| {
                self.ids
                    .get(ca.idx)
                    .cmp(self.ids.get(cb.idx))
                    .then(a.cmp(&b))
            })
        };
        for w in starts.windows(2) {
            let run = &mut perm[w[0]..w[1]];
            if !run.windows(2).all(|p| cmp(p[0], p[1]).is_lt()) {
                run.sort_unstable_by(|&a, &b| cmp(a, b));
            }
        }
        if perm.iter().enumerate().all(|(i, &o)| i as u32 == o) {
            return;
        }
        // the id and transaction arenas in the new order: conversions, then
        // deals and MDF claims
        let mut ids = Arena::default();
        let mut txns = Arena::default();
        ids.reserve(self.ids.len());
        txns.reserve(self.txns.len());
        let mut new_idx = vec![0u32; n];
        for (new, &old) in perm.iter().enumerate() {
            let c = &self.convs[old as usize];
            new_idx[new] = ids.push(self.ids.get(c.idx));
            txns.push(self.txns.get(c.idx));
        }
        for d in &mut self.deals {
            let i = ids.push(self.ids.get(d.id));
            txns.push("");
            d.id = i;
        }
        for m in &mut self.mdfs {
            let i = ids.push(self.ids.get(m.id));
            txns.push("");
            m.id = i;
        }
        self.ids = ids;
        self.txns = txns;
        // old index -> new position, for what names conversions by index
        let mut at = vec![0u32; n];
        for (new, &old) in perm.iter().enumerate() {
            at[old as usize] = new as u32;
        }
        // the conversions, gathered in the new order (front to back in each
        // program's stream; the copy is gone before the engine's output
        // exists, so it never raises the peak)
        let mut convs = Vec::with_capacity(n);
        convs.extend(perm.iter().map(|&old| self.convs[old as usize].clone()));
        self.convs = convs;
        for (c, &i) in self.convs.iter_mut().zip(&new_idx) {
            c.idx = i;
        }
        self.follow_new_order(&at);
    }

    /// Groups people's clicks by program ([`group_clicks`]) and joins the
    /// conversions to the clicks they cite (by a 64-bit hash of the click
    /// id; a collision among a few million ids is about one in a million,
    /// and deterministic), once everything is added ([`Facts::finish`]).
    ///
    /// The conversions' sorts run on this thread while a second groups the
    /// clicks and sorts their keys (every element of each list differs from
    /// the others: the orders do not depend on the sort).
    fn group_and_link_clicks(&mut self) {
        self.namer.names = FxHashMap::default();
        let fr = &mut self.fraud;
        let (clicks, mut keys) = (&mut fr.clicks, std::mem::take(&mut fr.keys));
        let mut conv_keys = std::mem::take(&mut fr.conv_keys);
        let visitors = &mut fr.conv_visitor;
        let linking = !keys.is_empty() && !conv_keys.is_empty();
        std::thread::scope(|sc| {
            let keys = &mut keys;
            sc.spawn(move || {
                group_clicks(clicks, keys);
                if linking {
                    keys.sort_unstable();
                }
            });
            visitors.sort_unstable();
            if linking {
                conv_keys.sort_unstable();
            }
        });
        if !linking {
            return;
        }
        fr.conv_click = vec![NONE; self.convs.len()];
        let mut j = 0;
        for (key, conv) in conv_keys {
            while j < keys.len() && keys[j].0 < key {
                j += 1;
            }
            if j < keys.len() && keys[j].0 == key {
                // the first click imported with that id
                fr.conv_click[conv as usize] = keys[j].1;
            }
        }
    }

    /// Bot clicks must be added before the conversions that cite them.
    pub fn add_conv(&mut self, c: ConvIn) {
        let s = self.namer.conv(&mut self.syms, &c);
        self.add_conv_named(c, s);
    }

    /// [`Facts::add_conv`] with the symbols from [`Namer::conv`]; the
    /// names in `c` (program, partner, customer, ...) are not read.
    pub fn add_conv_named(&mut self, c: ConvIn, s: ConvSyms) {
        if s.fraud {
            let ci = self.convs.len() as u32;
            if let Some(k) = c.click_id {
                self.fraud.conv_keys.push((hash64(k), ci));
            }
            if let Some(v) = c.visitor.filter(|v| !v.is_empty()) {
                self.fraud.conv_visitor.push((ci, visitor_key(v)));
            }
        }
        let idx = self.ids.push(c.id);
        let ci = self.convs.len() as u32;
        match c.txn_id {
            Some(t) if !t.is_empty() => {
                self.txns.push(t);
                self.with_txn.push(ci);
            }
            _ => {
                self.txns.push("");
            }
        }
        if s.orig_txn != NONE {
            self.with_orig.push(ci);
        }
        let click_bot = c.bot || c.click_id.is_some_and(|k| self.bot_clicks.contains(k));
        let ex = ConvExtra {
            orig_txn: s.orig_txn,
            coupon: s.coupon,
            country: s.country,
            instrument: s.instrument,
            email_hash: s.email_hash,
            lots: c.lots,
        };
        let extra = if ex.orig_txn == NONE
            && ex.coupon == NONE
            && ex.country == NONE
            && ex.instrument == NONE
            && ex.email_hash == NONE
            && ex.lots.is_none()
        {
            NONE
        } else {
            self.extras.push(ex);
            (self.extras.len() - 1) as u32
        };
        let conv = Conv {
            ts: c.ts,
            arrival: u32::try_from(c.arrival).unwrap_or(u32::MAX),
            idx,
            program: s.program,
            partner: s.partner,
            click_ts: c.click_ts.unwrap_or(NO_TS),
            has_click: c.click_id.is_some() && c.click_ts.is_some(),
            click_bot,
            pixel: c.pixel,
            event: s.event,
            customer: s.customer,
            extra,
            amount: c.amount,
            currency: c.currency,
        };
        self.convs.push(conv);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn add_deal(
        &mut self,
        id: &str,
        ts: i64,
        arrival: i64,
        program: &str,
        partner: &str,
        customer: &str,
        status: &str,
        expires_at: Option<i64>,
    ) {
        let names = self.namer.deal(&mut self.syms, program, partner, customer);
        self.add_deal_named(id, ts, arrival, names, status, expires_at);
    }

    /// [`Facts::add_deal`] with the symbols from [`Namer::deal`].
    pub fn add_deal_named(
        &mut self,
        id: &str,
        ts: i64,
        arrival: i64,
        [program, partner, customer]: [u32; 3],
        status: &str,
        expires_at: Option<i64>,
    ) {
        let id = self.ids.push(id);
        self.txns.push("");
        let d = Deal {
            ts,
            arrival,
            id,
            program,
            partner,
            customer,
            approved: status == "approved",
            expires_at: expires_at.unwrap_or(i64::MAX),
        };
        self.deals.push(d);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn add_mdf(
        &mut self,
        id: &str,
        ts: i64,
        arrival: i64,
        program: Option<&str>,
        partner: &str,
        amount: Decimal,
        currency: Currency,
    ) {
        let names = self.namer.mdf(&mut self.syms, program, partner);
        self.add_mdf_named(id, ts, arrival, names, amount, currency);
    }

    /// [`Facts::add_mdf`] with the symbols from [`Namer::mdf`].
    pub fn add_mdf_named(
        &mut self,
        id: &str,
        ts: i64,
        arrival: i64,
        (partner, program): (u32, Option<u32>),
        amount: Decimal,
        currency: Currency,
    ) {
        let id = self.ids.push(id);
        self.txns.push("");
        let program = match program {
            Some(p) => p,
            None => self.partners.get(&partner).map_or(NONE, |p| p.program),
        };
        self.mdfs.push(Mdf {
            ts,
            arrival,
            id,
            program,
            partner,
            amount,
            currency,
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub fn add_partner(
        &mut self,
        id: &str,
        program: &str,
        parent: Option<&str>,
        tier: Option<&str>,
        status: Option<&str>,
        history: &[(i64, String)],
        email_hash: Option<&str>,
    ) {
        let id = self.syms.intern(id);
        let mut h: Vec<(i64, u32)> = history
            .iter()
            .map(|(t, s)| (*t, self.syms.intern(s)))
            .collect();
        h.sort();
        let info = PartnerInfo {
            program: self.syms.intern(program),
            parent: self.syms.opt(parent),
            tier: self.syms.opt(tier),
            status: self.syms.opt(status),
            history: h,
            email_hash: self.syms.opt(email_hash),
        };
        self.partners.insert(id, info);
    }

    /// An erased customer (its pseudonym) who was `partner`: its
    /// conversions attributed to that partner stay self-referrals.
    pub fn add_erased_self_referral(&mut self, pseudonym: &str, partner: &str) {
        let k = (self.syms.intern(pseudonym), self.syms.intern(partner));
        self.erased_self.insert(k);
    }

    pub fn add_coupon(&mut self, program: &str, code: &str, partner: &str) {
        let k = (self.syms.intern(program), self.syms.intern(code));
        let p = self.syms.intern(partner);
        self.coupons.insert(k, p);
    }

    /// Builds facts from records (tests, the simulator). Registry lines are
    /// read first, as the store does; the last line of an id wins.
    pub fn from_records(records: &[Record]) -> Facts {
        Facts::from_records_with(records, None)
    }

    /// [`Facts::from_records`], keeping clicks and click ids for
    /// `fraud_programs` only (as the store's loader does), or for all.
    pub fn from_records_with(records: &[Record], fraud_programs: Option<&[&str]>) -> Facts {
        let mut f = Facts::default();
        if let Some(p) = fraud_programs {
            f.fraud_programs(p);
        }
        for r in records {
            match r.kind {
                Kind::Partner => {
                    let hist: Vec<(i64, String)> = r
                        .history
                        .iter()
                        .flatten()
                        .map(|h| (h.at.ms(), h.status.clone()))
                        .collect();
                    f.add_partner(
                        r.id.as_deref().unwrap_or(""),
                        r.program.as_deref().unwrap_or(""),
                        r.parent.as_deref(),
                        r.tier.as_deref(),
                        r.status.as_deref(),
                        &hist,
                        r.email_hash.as_deref(),
                    );
                }
                Kind::Coupon => f.add_coupon(
                    r.program.as_deref().unwrap_or(""),
                    r.code.as_deref().unwrap_or(""),
                    r.partner.as_deref().unwrap_or(""),
                ),
                Kind::Click if r.bot == Some(true) => {
                    if let Some(k) = r.click_id.as_deref().or(r.id.as_deref()) {
                        f.add_bot_click(k);
                    }
                }
                _ => {}
            }
        }
        for (arrival, r) in records.iter().enumerate() {
            let arrival = arrival as i64 + 1;
            let ts = r.ts.map_or(0, |t| t.ms());
            let id = r.id.as_deref().unwrap_or("");
            match r.kind {
                Kind::Conversion => f.add_conv(ConvIn {
                    id,
                    ts,
                    arrival,
                    program: r.program.as_deref().unwrap_or(""),
                    partner: r.partner.as_deref(),
                    click_id: r.click_id.as_deref(),
                    click_ts: r.click_ts.map(|t| t.ms()),
                    event: r.event.as_deref().unwrap_or(""),
                    txn_id: r.txn_id.as_deref(),
                    original_txn_id: r.original_txn_id.as_deref(),
                    customer: r.customer.as_deref(),
                    coupon: r.coupon.as_deref(),
                    country: r.country.as_deref(),
                    instrument: r.instrument.as_deref(),
                    email_hash: r.email_hash.as_deref(),
                    amount: r.amount,
                    currency: r.currency,
                    lots: r.lots,
                    bot: r.bot == Some(true),
                    pixel: r.source == Some(edge::record::Source::Pixel),
                    visitor: r.visitor.as_deref(),
                }),
                Kind::Click if r.bot != Some(true) => f.add_click(ClickIn {
                    key: r.click_id.as_deref().unwrap_or(id),
                    ts,
                    arrival,
                    program: r.program.as_deref().unwrap_or(""),
                    partner: r.partner.as_deref().unwrap_or(""),
                    visitor: r.visitor.as_deref(),
                    country: r.country.as_deref(),
                    asn: r.asn,
                    datacenter: r.datacenter,
                    has_referrer: r.has_referrer,
                }),
                Kind::Deal => f.add_deal(
                    id,
                    ts,
                    arrival,
                    r.program.as_deref().unwrap_or(""),
                    r.partner.as_deref().unwrap_or(""),
                    r.customer.as_deref().unwrap_or(""),
                    r.status.as_deref().unwrap_or(""),
                    r.expires_at.map(|t| t.ms()),
                ),
                Kind::Mdf => {
                    if let (Some(a), Some(c)) = (r.amount, r.currency) {
                        f.add_mdf(
                            id,
                            ts,
                            arrival,
                            r.program.as_deref(),
                            r.partner.as_deref().unwrap_or(""),
                            a,
                            c,
                        )
                    }
                }
                _ => {}
            }
        }
        f.finish();
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass reorder leaves the facts exactly as gathering each
    /// program's conversions in turn did: conversions, arenas, extras,
    /// deals, MDF claims and every list of conversion indices, with
    /// programs loaded in and out of `(ts, id)` order and ties of ts.
    #[test]
    fn reorder_in_one_pass_is_the_gathering_reorder() {
        for seed in 0..6u64 {
            let mut f = Facts::default();
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut rnd = |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            let programs = ["b", "a", "c", "d"];
            for i in 0..3000u64 {
                let p = programs[rnd(4) as usize];
                // program "a" in order, "c" in order with ties of ts,
                // the others out of order (seed 0: all in order)
                let ts = match (p, seed) {
                    (_, 0) | ("a", _) => i as i64,
                    ("c", _) => (i / 4) as i64,
                    _ => rnd(500) as i64,
                };
                let id = format!("e{}", rnd(100_000));
                let txn = format!("t{i}");
                let orig = format!("t{}", rnd(i + 1));
                let cust = format!("cu{}", rnd(50));
                let click = format!("k{}", rnd(300));
                match rnd(20) {
                    0 => f.add_deal(&id, ts, i as i64, p, "pa1", &cust, "approved", None),
                    1 => f.add_mdf(
                        &id,
                        ts,
                        i as i64,
                        Some(p),
                        "pa1",
                        Decimal::ONE,
                        Currency::parse("USD").unwrap(),
                    ),
                    r => f.add_conv(ConvIn {
                        id: &id,
                        ts,
                        arrival: i as i64,
                        program: p,
                        partner: Some("pa1"),
                        event: if r == 2 { "refund" } else { "sale" },
                        txn_id: (r % 3 == 0).then_some(txn.as_str()),
                        original_txn_id: (r == 2).then_some(orig.as_str()),
                        customer: Some(&cust),
                        coupon: (r == 4).then_some("SAVE"),
                        click_id: (r % 2 == 0).then_some(click.as_str()),
                        visitor: (r == 5).then_some("abcdef0123456789"),
                        amount: Some(Decimal::new(r as i64, 1)),
                        ..ConvIn::default()
                    }),
                }
            }
            let mut want = f.clone();
            want.reorder_by_gathering();
            f.reorder();
            assert_eq!(
                format!("{:?}", f.convs),
                format!("{:?}", want.convs),
                "seed {seed}"
            );
            assert_eq!(format!("{:?}", f.ids), format!("{:?}", want.ids));
            assert_eq!(format!("{:?}", f.txns), format!("{:?}", want.txns));
            assert_eq!(format!("{:?}", f.extras), format!("{:?}", want.extras));
            assert_eq!(format!("{:?}", f.deals), format!("{:?}", want.deals));
            assert_eq!(format!("{:?}", f.mdfs), format!("{:?}", want.mdfs));
            assert_eq!(f.with_orig, want.with_orig);
            assert_eq!(f.with_txn, want.with_txn);
            assert_eq!(f.fraud.conv_keys, want.fraud.conv_keys);
            assert_eq!(f.fraud.conv_visitor, want.fraud.conv_visitor);
            assert!(f.convs.windows(2).all(|w| w[0].program <= w[1].program));
        }
    }

    /// Symbols number strings in first-seen order, the same string gives
    /// the same symbol through every growth of the table, and `get` and
    /// `str` agree with a map kept beside it.
    #[test]
    fn interner_numbers_strings_in_first_seen_order() {
        let mut syms = Interner::default();
        let mut want: FxHashMap<String, u32> = FxHashMap::default();
        let mut x: u64 = 7;
        for _ in 0..200_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // repeats, the empty string, lengths up to a hundred bytes
            let s = match x >> 60 {
                0 => String::new(),
                1 => "c".repeat((x >> 20) as usize % 100),
                _ => format!("cu{}", (x >> 33) % 60_000),
            };
            let next = want.len() as u32;
            let sym = *want.entry(s.clone()).or_insert(next);
            // the loader's hints before it interns: they change nothing
            syms.prefetch(&s);
            syms.prefetch_bytes(&s);
            assert_eq!(syms.intern(&s), sym, "{s:?}");
        }
        assert_eq!(syms.len(), want.len());
        assert!(want.len() > 50_000);
        for (s, &i) in &want {
            assert_eq!(syms.get(s), Some(i));
            assert_eq!(syms.str(i), s);
        }
        assert_eq!(syms.get("never interned"), None);
        assert_eq!(Interner::default().get("x"), None);
        Interner::default().prefetch_bytes("x");
        assert_eq!(syms.len(), want.len());
    }

    /// `finish` leaves each program's conversions in one run, found by
    /// `conv_runs`; a conversion added afterwards voids the runs (the
    /// engine then sorts everyone's out itself).
    #[test]
    fn runs_of_programs_after_finish() {
        assert_eq!(
            runs([5, 5, 2, 2, 2, 9].into_iter()),
            Some(vec![(5, 0, 2), (2, 2, 5), (9, 5, 6)])
        );
        assert_eq!(runs([5, 2, 5].into_iter()), None);
        assert_eq!(runs(std::iter::empty()), Some(vec![]));
        let mut f = Facts::default();
        for (i, p) in ["b", "a", "b", "c", "a"].iter().enumerate() {
            f.add_conv(ConvIn {
                id: &format!("e{i}"),
                ts: i as i64,
                program: p,
                event: "sale",
                ..ConvIn::default()
            });
        }
        assert!(f.conv_runs().is_none());
        f.finish();
        let r: Vec<(&str, u32, u32)> = f
            .conv_runs()
            .expect("runs")
            .iter()
            .map(|&(p, lo, hi)| (f.syms.str(p), lo, hi))
            .collect();
        assert_eq!(r.len(), 3);
        for (p, lo, hi) in &r {
            assert!((*lo..*hi).all(|i| f.syms.str(f.convs[i as usize].program) == *p));
        }
        assert_eq!(r.iter().map(|x| x.2 - x.1).sum::<u32>(), 5);
        f.add_conv(ConvIn {
            id: "late",
            ts: 9,
            program: "a",
            event: "sale",
            ..ConvIn::default()
        });
        assert!(f.conv_runs().is_none());
    }

    /// `sorted_ts_id` is the order of a stable sort by `(ts, id)`, ties on
    /// `ts` (and repeated ids) included.
    #[test]
    fn sorted_ts_id_is_the_stable_sort_by_ts_and_id() {
        let mut f = Facts::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5000 {
            let ts = (next() % 40) as i64;
            let id = format!("e{}", next() % 300);
            f.add_conv(ConvIn {
                id: &id,
                ts,
                program: if next() % 2 == 0 { "a" } else { "b" },
                event: "sale",
                ..ConvIn::default()
            });
        }
        let idx: Vec<u32> = (0..f.convs.len() as u32).filter(|i| i % 3 != 1).collect();
        let mut want = idx.clone();
        want.sort_by(|&a, &b| {
            let (ca, cb) = (&f.convs[a as usize], &f.convs[b as usize]);
            ca.ts.cmp(&cb.ts).then_with(|| f.id(ca).cmp(f.id(cb)))
        });
        assert_eq!(f.sorted_ts_id(&idx), want);
    }

    /// `finish` puts conversions in `(program, ts, id)` order and keeps
    /// every index that names one (ids, transaction ids, the lists of
    /// refunds and kept transactions, deal and MDF ids) pointing at the
    /// same record.
    #[test]
    fn finish_orders_conversions_and_keeps_what_names_them() {
        let mut f = Facts::default();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // (id, program, ts, txn, original txn) as added
        let mut added = Vec::new();
        for i in 0..3000 {
            let program = ["p1", "p0", "p2"][(next() % 3) as usize];
            let ts = (next() % 50) as i64;
            let id = format!("ev{}", next() % 100_000 * 10_000 + i);
            let txn = (next() % 4 == 0).then(|| format!("t{i}"));
            let orig = (next() % 9 == 0).then(|| format!("t{}", next() % 3000));
            f.add_conv(ConvIn {
                id: &id,
                ts,
                program,
                event: if orig.is_some() { "refund" } else { "sale" },
                txn_id: txn.as_deref(),
                original_txn_id: orig.as_deref(),
                click_id: Some(&id),
                ..ConvIn::default()
            });
            if i % 500 == 0 {
                f.add_deal(
                    &format!("deal{i}"),
                    ts,
                    1,
                    program,
                    "pa",
                    "cu",
                    "approved",
                    None,
                );
            }
            added.push((id, program.to_string(), ts, txn, orig));
        }
        f.finish();
        assert_eq!(f.convs.len(), added.len());
        // grouped by program (in symbol order), each in (ts, id) order
        let key = |c: &Conv| (c.program, c.ts, f.id(c).to_string());
        for w in f.convs.windows(2) {
            assert!(
                key(&w[0]) < key(&w[1]),
                "{:?} before {:?}",
                key(&w[0]),
                key(&w[1])
            );
        }
        type Added = (String, String, i64, Option<String>, Option<String>);
        let by_id: FxHashMap<&str, &Added> = added.iter().map(|a| (a.0.as_str(), a)).collect();
        for (i, c) in f.convs.iter().enumerate() {
            let a = by_id[f.id(c)];
            assert_eq!((f.syms.str(c.program), c.ts), (a.1.as_str(), a.2));
            assert_eq!(f.txns.get(c.idx), a.3.as_deref().unwrap_or(""));
            let i = i as u32;
            assert_eq!(f.with_txn.binary_search(&i).is_ok(), a.3.is_some());
            assert_eq!(f.with_orig.binary_search(&i).is_ok(), a.4.is_some());
            // the extras moved with their conversions
            assert_eq!(f.syms.str(f.ex(c).orig_txn), a.4.as_deref().unwrap_or(""));
        }
        let deals: Vec<&str> = f.deals.iter().map(|d| f.ids.get(d.id)).collect();
        let want: Vec<String> = (0..3000).step_by(500).map(|i| format!("deal{i}")).collect();
        assert_eq!(deals, want);
    }

    /// `finish` groups people's clicks by program and every conversion
    /// still finds the click it cites.
    #[test]
    fn finish_groups_clicks_and_keeps_their_links() {
        let mut f = Facts::default();
        let programs = ["b", "a", "c"];
        for i in 0..900 {
            f.add_click(ClickIn {
                key: &format!("k{i}"),
                ts: 1000 + i,
                arrival: i,
                program: programs[(i * 7 % 3) as usize],
                partner: "pa",
                ..ClickIn::default()
            });
        }
        // conversion j cites click (j * 13) % 900, in that click's program
        for j in 0..600i64 {
            let k = (j * 13) % 900;
            f.add_conv(ConvIn {
                id: &format!("ev{j}"),
                ts: 5000 + j,
                arrival: 1000 + j,
                program: programs[(k * 7 % 3) as usize],
                click_id: Some(&format!("k{k}")),
                event: "sale",
                ..ConvIn::default()
            });
        }
        f.finish();
        let fr = &f.fraud;
        assert_eq!(fr.clicks.len(), 900);
        assert!(fr.clicks.windows(2).all(|w| w[0].program <= w[1].program));
        // within a program, load order (here: time order) is kept
        assert!(fr
            .clicks
            .windows(2)
            .all(|w| w[0].program != w[1].program || w[0].ts < w[1].ts));
        for (ci, c) in f.convs.iter().enumerate() {
            let j: i64 = f.id(c)[2..].parse().unwrap();
            let k = (j * 13) % 900;
            let click = &fr.clicks[fr.conv_click[ci] as usize];
            assert_eq!(click.ts, 1000 + k, "conversion ev{j}");
            assert_eq!(click.program, c.program);
        }
    }
}
