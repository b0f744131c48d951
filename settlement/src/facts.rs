//! The facts the engine reads, in memory: conversions, deal registrations,
//! MDF claims, the partner and coupon registries. Strings are interned to
//! `u32` symbols so the engine works over plain integers.

use edge::currency::Currency;
use edge::record::{Kind, Record};
use rust_decimal::Decimal;
use rustc_hash::{FxHashMap, FxHashSet};

/// No symbol.
pub const NONE: u32 = u32::MAX;

/// Strings stored once, in an arena, found again through a table of their
/// indices.
#[derive(Default, Clone)]
pub struct Interner {
    table: hashbrown::HashTable<u32>,
    arena: Arena,
}

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
    pub fn intern(&mut self, s: &str) -> u32 {
        let h = str_hash(s);
        let arena = &self.arena;
        if let Some(&i) = self.table.find(h, |&i| arena.get(i) == s) {
            return i;
        }
        let i = self.arena.push(s);
        let arena = &self.arena;
        self.table.insert_unique(h, i, |&j| str_hash(arena.get(j)));
        i
    }

    pub fn opt(&mut self, s: Option<&str>) -> u32 {
        match s {
            Some(s) if !s.is_empty() => self.intern(s),
            _ => NONE,
        }
    }

    pub fn get(&self, s: &str) -> Option<u32> {
        let arena = &self.arena;
        self.table
            .find(str_hash(s), |&i| arena.get(i) == s)
            .copied()
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
    pub fn get(&self, i: u32) -> &str {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.buf[start..self.ends[i] as usize]
    }
    pub fn len(&self) -> usize {
        self.ends.len()
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
    pub bot_clicks: FxHashSet<Box<str>>,
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
}

impl Facts {
    pub fn id(&self, c: &Conv) -> &str {
        self.ids.get(c.idx)
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

    /// Bot clicks must be added before the conversions that cite them.
    pub fn add_conv(&mut self, c: ConvIn) {
        let idx = self.ids.push(c.id);
        self.txns.push(c.txn_id.unwrap_or(""));
        let click_bot = c.bot || c.click_id.is_some_and(|k| self.bot_clicks.contains(k));
        let ex = ConvExtra {
            orig_txn: self.syms.opt(c.original_txn_id),
            coupon: self.syms.opt(c.coupon),
            country: self.syms.opt(c.country),
            instrument: self.syms.opt(c.instrument),
            email_hash: self.syms.opt(c.email_hash),
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
            program: self.syms.intern(c.program),
            partner: self.syms.opt(c.partner),
            click_ts: c.click_ts.unwrap_or(NO_TS),
            has_click: c.click_id.is_some() && c.click_ts.is_some(),
            click_bot,
            event: self.syms.intern(c.event),
            customer: self.syms.opt(c.customer),
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
        let id = self.ids.push(id);
        self.txns.push("");
        let d = Deal {
            ts,
            arrival,
            id,
            program: self.syms.intern(program),
            partner: self.syms.intern(partner),
            customer: self.syms.intern(customer),
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
        let id = self.ids.push(id);
        self.txns.push("");
        let partner = self.syms.intern(partner);
        let program = match program {
            Some(p) => self.syms.intern(p),
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

    pub fn add_coupon(&mut self, program: &str, code: &str, partner: &str) {
        let k = (self.syms.intern(program), self.syms.intern(code));
        let p = self.syms.intern(partner);
        self.coupons.insert(k, p);
    }

    /// Builds facts from records (tests, the simulator). Registry lines are
    /// read first, as the store does; the last line of an id wins.
    pub fn from_records(records: &[Record]) -> Facts {
        let mut f = Facts::default();
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
        f
    }
}
