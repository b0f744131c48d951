//! A seeded generator for the fraud rules' evaluation: a month of clean
//! mixed-model traffic with the edge's signals (visitor, country, ASN,
//! referrer), into which it injects labelled fraud, one pattern per rule.
//! Same seed, same records. `fraud-bench` and `tests/fraud.rs` score the
//! rules against the labels.
//!
//! The clean model (docs/fraud.md, "Evaluation") is people: a device and a
//! home country each, sessions of one to three clicks on a partner's link
//! (85% with a referrer), 2% of devices shared by two customers, 0.3% of
//! sessions through a VPN on a hosting network, 0.4% clicked abroad, a
//! conversion 20 s to days after the click (log-normal, median about two
//! hours), 5% of sales refunded, coupon customers who never clicked. It
//! also carries two kinds of honest traffic the rules cannot tell from
//! fraud, so the false-positive rate is not zero by construction: one-click
//! checkouts a few seconds after the click (0.05% of conversions) and two
//! offices whose three colleagues share one visitor hash.

use crate::period::{Period, DAY_MS};
use crate::sim::Rng;
use edge::currency::Currency;
use edge::record::{Kind, Record, Source};
use edge::time::Timestamp;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// The patterns, named after the rule each one is meant to trip.
pub const PATTERNS: [&str; 13] = crate::fraud::RULES;

/// The generator's programs: `sim::PROGRAMS` with `[programs.fraud]` (all
/// defaults) on every program.
pub fn programs_toml() -> String {
    let base = crate::sim::PROGRAMS;
    let first = base.find("[[programs]]").expect("programs");
    let (head, rest) = base.split_at(first);
    let rest = rest.replace("\n[[programs]]\n", "\n  [programs.fraud]\n\n[[programs]]\n");
    format!("{head}{rest}\n  [programs.fraud]\n")
}

#[derive(Clone, Debug)]
pub struct FraudGen {
    pub seed: u64,
    /// Sessions of clean click traffic.
    pub sessions: u64,
    /// Clean partners per program.
    pub partners: u64,
    pub customers: u64,
    pub period: Period,
}

impl Default for FraudGen {
    fn default() -> Self {
        FraudGen {
            seed: 1,
            sessions: 200_000,
            partners: 30,
            customers: 60_000,
            period: Period {
                year: 2026,
                month: 11,
            },
        }
    }
}

/// Records and labels: conversion event id -> pattern.
pub struct Generated {
    pub records: Vec<Record>,
    pub labels: BTreeMap<String, &'static str>,
}

const COUNTRIES: [&str; 15] = [
    "US", "GB", "DE", "FR", "ES", "IT", "NL", "PL", "BR", "IN", "JP", "AU", "CA", "MX", "SE",
];
/// Consumer networks (none is in edge/data/hosting-asns.txt).
const HOME_ASNS: [u32; 15] = [
    7922, 3320, 22394, 701, 2856, 3215, 3269, 6830, 12322, 9829, 2516, 1221, 812, 8151, 5089,
];
/// Hosting networks (all in edge/data/hosting-asns.txt).
const HOSTING_ASNS: [u32; 6] = [16509, 14061, 24940, 16276, 9009, 20473];
const INSTRUMENTS: [&str; 4] = ["EURUSD", "GBPUSD", "XAUUSD", "USDJPY"];
/// Programs people click into, and their base conversion rate (percent).
const CLICK_PROGRAMS: [(&str, u64); 5] = [
    ("saas", 9),
    ("fx", 6),
    ("prop", 7),
    ("tech", 8),
    ("casino", 8),
];

struct G {
    rng: Rng,
    seed: u64,
    recs: Vec<Record>,
    labels: BTreeMap<String, &'static str>,
    n: u64,
    start: i64,
    end: i64,
    usd: Currency,
}

#[derive(Clone)]
struct Click {
    id: String,
    ts: i64,
    partner: String,
}

fn hex(seed: u64, kind: &str, i: u64) -> String {
    let a = crate::facts::hash64(&format!("{seed}/{kind}/{i}"));
    let b = crate::facts::hash64(&format!("{i}/{kind}/{seed}"));
    format!("{a:016x}{b:016x}")
}

impl G {
    fn next_id(&mut self) -> String {
        self.n += 1;
        format!("ev{:08}", self.n)
    }

    fn device(&self, customer: u64) -> String {
        // 2% of devices are shared by two customers (households)
        let d = if customer % 50 == 1 {
            customer - 1
        } else {
            customer
        };
        hex(self.seed, "device", d)
    }

    fn home(&self, customer: u64) -> usize {
        (crate::facts::hash64(&format!("{}/home/{customer}", self.seed)) % 15) as usize
    }

    #[allow(clippy::too_many_arguments)]
    fn click(
        &mut self,
        ts: i64,
        program: &'static str,
        partner: &str,
        visitor: &str,
        country: &str,
        asn: u32,
        referrer: bool,
    ) -> Click {
        let id = self.next_id();
        let click_id = format!("k{}", self.n);
        let mut r = Record::new(Kind::Click);
        r.id = Some(id);
        r.ts = Some(Timestamp(ts));
        r.program = Some(program.into());
        r.partner = Some(partner.into());
        r.link = Some(format!("l-{partner}"));
        r.click_id = Some(click_id.clone());
        r.bot = Some(false);
        r.country = Some(country.into());
        r.visitor = Some(visitor.into());
        r.asn = Some(asn);
        r.datacenter = Some(edge::bot::is_hosting_asn(asn));
        r.has_referrer = Some(referrer);
        if referrer {
            r.referrer_host = Some(format!("{partner}.example"));
        }
        self.recs.push(r);
        Click {
            id: click_id,
            ts,
            partner: partner.into(),
        }
    }

    fn bot_click(&mut self, ts: i64, program: &'static str, partner: &str) {
        let id = self.next_id();
        let mut r = Record::new(Kind::Click);
        r.click_id = Some(format!("k{}", self.n));
        r.id = Some(id);
        r.ts = Some(Timestamp(ts));
        r.program = Some(program.into());
        r.partner = Some(partner.into());
        r.bot = Some(true);
        r.bot_reason = Some("crawler".into());
        self.recs.push(r);
    }

    fn money(&mut self, lo: u64, hi: u64) -> Decimal {
        Decimal::new((lo + self.rng.below(hi - lo)) as i64, 2)
    }

    /// A conversion of the program's usual kind; returns its id.
    #[allow(clippy::too_many_arguments)]
    fn conversion(
        &mut self,
        ts: i64,
        program: &'static str,
        click: Option<&Click>,
        coupon: Option<String>,
        customer: u64,
        country: &str,
        label: Option<&'static str>,
    ) -> Vec<String> {
        let mut made = Vec::new();
        let mut r = Record::new(Kind::Conversion);
        r.program = Some(program.into());
        if let Some(k) = click {
            r.partner = Some(k.partner.clone());
            r.click_id = Some(k.id.clone());
            r.click_ts = Some(Timestamp(k.ts));
        }
        r.coupon = coupon;
        r.customer = Some(format!("cu{customer}"));
        r.email_hash = Some(format!("em-{customer}"));
        r.country = Some(country.into());
        r.source = Some(Source::Postback);
        let amount = |g: &mut G, r: &mut Record, lo, hi| {
            r.amount = Some(g.money(lo, hi));
            r.currency = Some(g.usd);
        };
        let mut trades = 0;
        match program {
            "saas" => {
                if self.rng.chance(40) {
                    r.event = Some("signup".into());
                } else {
                    r.event = Some("sale".into());
                    amount(self, &mut r, 1_000, 50_000);
                }
            }
            "fx" => {
                if self.rng.chance(25) {
                    r.event = Some("ftd".into());
                    amount(self, &mut r, 10_000, 200_000);
                } else {
                    r.event = Some("trade".into());
                    trades = self.rng.below(3);
                }
            }
            "prop" | "var" => {
                r.event = Some("sale".into());
                amount(self, &mut r, 5_000, 60_000);
            }
            _ => {
                r.event = Some("revenue".into());
                amount(self, &mut r, 1_000, 40_000);
            }
        }
        let mut t = ts;
        for i in 0..=trades {
            if t >= self.end {
                break;
            }
            let mut c = r.clone();
            if c.event.as_deref() == Some("trade") {
                c.instrument = Some(INSTRUMENTS[self.rng.below(4) as usize].into());
                c.lots = Some(Decimal::new(1 + self.rng.below(50) as i64, 1));
            }
            let id = self.next_id();
            c.id = Some(id.clone());
            c.ts = Some(Timestamp(t));
            c.txn_id = Some(format!("t-{id}"));
            self.recs.push(c);
            if let Some(l) = label {
                self.labels.insert(id.clone(), l);
            }
            made.push(id);
            if i < trades {
                t += 600_000 + self.rng.below(2 * DAY_MS as u64) as i64;
            }
        }
        made
    }

    fn refund(&mut self, sale: &str, ts: i64, program: &'static str) {
        if ts >= self.end {
            return;
        }
        let id = self.next_id();
        let mut r = Record::new(Kind::Conversion);
        r.id = Some(id.clone());
        r.ts = Some(Timestamp(ts));
        r.program = Some(program.into());
        r.event = Some(
            if self.rng.chance(80) {
                "refund"
            } else {
                "chargeback"
            }
            .into(),
        );
        r.txn_id = Some(format!("r-{id}"));
        r.original_txn_id = Some(format!("t-{sale}"));
        r.source = Some(Source::Postback);
        self.recs.push(r);
    }

    /// Click to conversion: 20 s plus a log-normal wait, median ~2 h.
    fn delay(&mut self) -> i64 {
        // sum of uniforms ~ normal: 12 draws
        let z: f64 = (0..12)
            .map(|_| self.rng.below(1_000_000) as f64 / 1e6)
            .sum::<f64>()
            - 6.0;
        let secs = 7200.0 * (1.6 * z).exp();
        20_000 + (secs * 1000.0) as i64
    }

    fn when(&mut self) -> i64 {
        self.start + self.rng.below((self.end - self.start) as u64) as i64
    }
}

fn partner(program: &str, i: u64) -> String {
    format!("{program}-p{i}")
}

fn registry(g: &mut G, id: &str, program: &str) {
    let mut r = Record::new(Kind::Partner);
    r.id = Some(id.into());
    r.program = Some(program.into());
    r.status = Some("approved".into());
    r.tier = Some("silver".into());
    r.email_hash = Some(format!("eh-{id}"));
    r.currency = Some(g.usd);
    g.recs.push(r);
    if program == "prop" || program == "var" {
        let mut c = Record::new(Kind::Coupon);
        c.code = Some(format!("C-{id}"));
        c.partner = Some(id.into());
        c.program = Some(program.into());
        g.recs.push(c);
    }
}

/// The dedicated fraudulent partners and their programs.
const FRAUD_PARTNERS: [(&str, &str); 6] = [
    ("saas-stuffer", "saas"),
    ("fx-spammer", "fx"),
    ("saas-incent", "saas"),
    ("prop-carder", "prop"),
    ("casino-proxy", "casino"),
    ("tech-dcfarm", "tech"),
];

pub fn generate(cfg: &FraudGen) -> Generated {
    let mut g = G {
        rng: Rng::new(cfg.seed),
        seed: cfg.seed,
        recs: Vec::new(),
        labels: BTreeMap::new(),
        n: 0,
        start: cfg.period.start_ms(),
        end: cfg.period.end_ms(),
        usd: Currency::parse("USD").expect("USD"),
    };
    for prog in crate::sim::PROGRAM_IDS {
        for i in 0..cfg.partners {
            registry(&mut g, &partner(prog, i), prog);
        }
    }
    for (id, prog) in FRAUD_PARTNERS {
        registry(&mut g, id, prog);
    }
    // partner weights per program: a few big partners, many small ones
    let weights: Vec<u64> = (0..cfg.partners)
        .map(|_| {
            let x = g.rng.below(100);
            1 + x * x / 500
        })
        .collect();
    let total_w: u64 = weights.iter().sum();
    let quality: Vec<u64> = (0..cfg.partners).map(|_| 60 + g.rng.below(100)).collect();
    let refund_pct: Vec<u64> = (0..cfg.partners).map(|_| 3 + g.rng.below(5)).collect();
    let clickers = cfg.customers * 85 / 100;

    // ---- clean sessions
    for _ in 0..cfg.sessions {
        let (program, base) = CLICK_PROGRAMS[g.rng.below(5) as usize];
        let mut pick = g.rng.below(total_w);
        let mut pi = 0;
        while pick >= weights[pi] {
            pick -= weights[pi];
            pi += 1;
        }
        let pid = partner(program, pi as u64);
        let customer = g.rng.below(clickers);
        let home = COUNTRIES[g.home(customer)];
        let device = g.device(customer);
        let t = g.when();
        // a small share of sessions: VPN on a hosting network, or abroad
        let vpn = g.rng.below(1000) < 3;
        let abroad = g.rng.below(1000) < 4;
        let asn = if vpn {
            HOSTING_ASNS[g.rng.below(6) as usize]
        } else {
            HOME_ASNS[g.home(customer)]
        };
        let click_country = if abroad {
            COUNTRIES[(g.home(customer) + 1 + g.rng.below(14) as usize) % 15]
        } else {
            home
        };
        let referrer = g.rng.chance(85);
        let n = match g.rng.below(100) {
            0..=79 => 1,
            80..=94 => 2,
            _ => 3,
        };
        let mut last = None;
        let mut tk = t;
        for _ in 0..n {
            if tk >= g.end {
                break;
            }
            last = Some(g.click(tk, program, &pid, &device, click_country, asn, referrer));
            tk += 5_000 + g.rng.below(120_000) as i64;
        }
        if g.rng.chance(2) {
            g.bot_click(t, program, &pid);
        }
        let Some(k) = last else { continue };
        if g.rng.below(10_000) >= base * quality[pi] {
            continue;
        }
        // one-click checkouts: an honest conversion a few seconds after the click
        let delay = if g.rng.below(10_000) < 5 {
            3_000 + g.rng.below(6_000) as i64
        } else {
            g.delay()
        };
        let ts = k.ts + delay;
        if ts >= g.end {
            continue;
        }
        let ids = g.conversion(ts, program, Some(&k), None, customer, home, None);
        if g.rng.below(100) < refund_pct[pi] && program != "fx" {
            let rt = ts + DAY_MS + g.rng.below(9 * DAY_MS as u64) as i64;
            g.refund(&ids[0], rt, program);
        }
    }
    // coupon customers (never click): prop and var
    for _ in 0..cfg.sessions / 20 {
        let program = if g.rng.chance(50) { "prop" } else { "var" };
        let pi = g.rng.below(cfg.partners);
        let customer = clickers + g.rng.below(cfg.customers - clickers);
        let home = COUNTRIES[g.home(customer)];
        let ts = g.when();
        let coupon = Some(format!("C-{}", partner(program, pi)));
        let ids = g.conversion(ts, program, None, coupon, customer, home, None);
        if g.rng.chance(5) {
            let rt = ts + DAY_MS + g.rng.below(9 * DAY_MS as u64) as i64;
            g.refund(&ids[0], rt, program);
        }
    }
    // referral deals (no clicks)
    for i in 0..cfg.sessions / 200 {
        let pid = partner("ref", i % cfg.partners);
        let customer = g.rng.below(cfg.customers);
        let t = g.start + g.rng.below((g.end - g.start) as u64 / 2) as i64;
        let id = g.next_id();
        let mut d = Record::new(Kind::Deal);
        d.id = Some(id);
        d.ts = Some(Timestamp(t));
        d.program = Some("ref".into());
        d.partner = Some(pid);
        d.customer = Some(format!("cu{customer}"));
        d.status = Some("approved".into());
        g.recs.push(d);
        let ts = t + DAY_MS + g.rng.below(10 * DAY_MS as u64) as i64;
        if ts < g.end {
            let mut r = Record::new(Kind::Conversion);
            r.id = Some(g.next_id());
            r.ts = Some(Timestamp(ts));
            r.program = Some("ref".into());
            r.event = Some("deal_won".into());
            r.customer = Some(format!("cu{customer}"));
            r.amount = Some(g.money(100_000, 900_000));
            r.currency = Some(g.usd);
            r.txn_id = Some(format!("t-{}", g.n));
            g.recs.push(r);
        }
    }
    // two offices: three colleagues behind one address and browser build
    for office in 0..2u64 {
        let visitor = hex(cfg.seed, "office", office);
        let t0 = g.start + (5 + 10 * office as i64) * DAY_MS;
        for colleague in 0..3u64 {
            let customer = clickers - 10 - office * 3 - colleague;
            let pid = partner("saas", g.rng.below(cfg.partners));
            let t = t0 + g.rng.below(3 * DAY_MS as u64) as i64;
            let k = g.click(t, "saas", &pid, &visitor, "US", 7922, true);
            let d = g.delay();
            g.conversion(t + d, "saas", Some(&k), None, customer, "US", None);
        }
    }

    inject(&mut g, cfg, clickers);
    Generated {
        records: g.recs,
        labels: g.labels,
    }
}

/// A customer for injected traffic (a clicker nobody else uses much).
fn someone(g: &mut G, clickers: u64) -> (u64, &'static str, String, u32) {
    let c = g.rng.below(clickers);
    let h = g.home(c);
    (c, COUNTRIES[h], g.device(c), HOME_ASNS[h])
}

fn clean_partner(g: &mut G, cfg: &FraudGen, program: &str) -> String {
    partner(program, g.rng.below(cfg.partners))
}

fn inject(g: &mut G, cfg: &FraudGen, clickers: u64) {
    let month = g.end - g.start;
    let (start, end) = (g.start, g.end);

    // click_too_fast: click injection, the conversion 1-8 s after the click
    for _ in 0..60 {
        let program = ["saas", "tech", "casino"][g.rng.below(3) as usize];
        let pid = clean_partner(g, cfg, program);
        let (c, home, dev, asn) = someone(g, clickers);
        let t = g.when().min(end - DAY_MS);
        let k = g.click(t, program, &pid, &dev, home, asn, true);
        let ts = t + 1_000 + g.rng.below(7_000) as i64;
        g.conversion(ts, program, Some(&k), None, c, home, Some("click_too_fast"));
    }

    // click_too_slow: cookie stuffing; stuffed clicks early in the month
    // convert 27-29.9 days later
    let mut stuffed = Vec::new();
    for _ in 0..400 {
        let (c, home, dev, asn) = someone(g, clickers);
        let t = start + g.rng.below(DAY_MS as u64) as i64;
        let k = g.click(t, "saas", "saas-stuffer", &dev, home, asn, false);
        stuffed.push((k, c, home));
    }
    for (k, c, home) in stuffed.into_iter().take(50) {
        let ts =
            (k.ts + 27 * DAY_MS + g.rng.below(2 * DAY_MS as u64 + DAY_MS as u64 * 9 / 10) as i64)
                .min(end - 1);
        g.conversion(ts, "saas", Some(&k), None, c, home, Some("click_too_slow"));
    }

    // conversion_before_click: the conversion is dated 1-6 h before the click
    for _ in 0..40 {
        let program = ["saas", "tech", "casino"][g.rng.below(3) as usize];
        let pid = clean_partner(g, cfg, program);
        let (c, home, dev, asn) = someone(g, clickers);
        let t = start + DAY_MS + g.rng.below((month - 2 * DAY_MS) as u64) as i64;
        let k = g.click(t, program, &pid, &dev, home, asn, true);
        let ts = t - 3_600_000 - g.rng.below(5 * 3_600_000) as i64;
        g.conversion(
            ts,
            program,
            Some(&k),
            None,
            c,
            home,
            Some("conversion_before_click"),
        );
    }

    // visitor_flood: an undetected bot clicks 30 times in 20 minutes, and
    // one customer converts from it (twice)
    for i in 0..15u64 {
        let pid = clean_partner(g, cfg, "saas");
        let dev = hex(cfg.seed, "farm", i);
        let (c, home, _, asn) = someone(g, clickers);
        let t = g.when().min(end - 2 * DAY_MS);
        let mut ks = Vec::new();
        for j in 0..30 {
            ks.push(g.click(t + j * 40_000, "saas", &pid, &dev, home, asn, false));
        }
        for j in [3usize, 20] {
            let k = ks[j].clone();
            let d = g.delay().min(DAY_MS);
            g.conversion(
                k.ts + d,
                "saas",
                Some(&k),
                None,
                c,
                home,
                Some("visitor_flood"),
            );
        }
    }

    // partner_flood: click spam, 3 hours of 400 clicks from as many devices;
    // 20 organic customers' conversions land on those clicks
    let mut spam = Vec::new();
    for _ in 0..60 {
        let (_, home, dev, asn) = someone(g, clickers);
        let t = g.when();
        g.click(t, "fx", "fx-spammer", &dev, home, asn, true);
    }
    for hour in 0..3u64 {
        let h0 = start + (3 + 8 * hour as i64) * DAY_MS + 14 * 3_600_000;
        for j in 0..400u64 {
            let dev = hex(cfg.seed, "spam", hour * 1000 + j);
            let home = COUNTRIES[(j % 15) as usize];
            let t = h0 + (j as i64) * 9_000;
            let k = g.click(
                t,
                "fx",
                "fx-spammer",
                &dev,
                home,
                HOME_ASNS[(j % 15) as usize],
                false,
            );
            spam.push((k, home));
        }
    }
    for i in 0..20 {
        let (k, home) = spam[i * 59 % spam.len()].clone();
        let (c, _, _, _) = someone(g, clickers);
        let d = 3_600_000 + g.rng.below(20 * 3_600_000) as i64;
        g.conversion(
            k.ts + d,
            "fx",
            Some(&k),
            None,
            c,
            home,
            Some("partner_flood"),
        );
    }

    // conversion_rate: incentivised sign-ups, most clicks convert
    for _ in 0..100 {
        let (c, home, dev, asn) = someone(g, clickers);
        let t = g.when().min(end - DAY_MS);
        let k = g.click(t, "saas", "saas-incent", &dev, home, asn, true);
        if g.rng.chance(60) {
            let d = g.delay().min(20 * 3_600_000);
            g.conversion(
                t + d,
                "saas",
                Some(&k),
                None,
                c,
                home,
                Some("conversion_rate"),
            );
        }
    }

    // refund_rate: sales on stolen cards, most charged back
    for _ in 0..60 {
        let (c, home, dev, asn) = someone(g, clickers);
        let t = g.when().min(end - 12 * DAY_MS);
        let k = g.click(t, "prop", "prop-carder", &dev, home, asn, true);
        let ts = t + g.delay().min(DAY_MS);
        let ids = g.conversion(ts, "prop", Some(&k), None, c, home, Some("refund_rate"));
        // with some ordinary clicks around them
        for _ in 0..8 {
            let (_, h2, d2, a2) = someone(g, clickers);
            let t2 = g.when();
            g.click(t2, "prop", "prop-carder", &d2, h2, a2, true);
        }
        if g.rng.chance(60) {
            let rt = ts + DAY_MS + g.rng.below(9 * DAY_MS as u64) as i64;
            g.refund(&ids[0], rt, "prop");
        }
    }

    // shared_visitor: one device, five accounts within three days
    for i in 0..8u64 {
        let dev = hex(cfg.seed, "multi", i);
        let pid = clean_partner(g, cfg, "casino");
        let t0 = g.when().min(end - 4 * DAY_MS);
        for _ in 0..5 {
            let (c, home, _, asn) = someone(g, clickers);
            let t = t0 + g.rng.below(2 * DAY_MS as u64) as i64;
            let k = g.click(t, "casino", &pid, &dev, home, asn, true);
            let d = g.delay().min(DAY_MS / 2);
            g.conversion(
                t + d,
                "casino",
                Some(&k),
                None,
                c,
                home,
                Some("shared_visitor"),
            );
        }
    }

    // country_mismatch: clicks from a proxy farm abroad, conversions at home
    for _ in 0..50 {
        let (c, home, dev, _) = someone(g, clickers);
        let t = g.when().min(end - DAY_MS);
        let abroad = if home == "VN" { "ID" } else { "VN" };
        let k = g.click(t, "casino", "casino-proxy", &dev, abroad, 45899, true);
        let d = g.delay().min(20 * 3_600_000);
        g.conversion(
            t + d,
            "casino",
            Some(&k),
            None,
            c,
            home,
            Some("country_mismatch"),
        );
    }
    for _ in 0..150 {
        let (_, home, dev, asn) = someone(g, clickers);
        let t = g.when();
        g.click(t, "casino", "casino-proxy", &dev, home, asn, true);
    }

    // datacenter: a headless-browser farm on hosting networks
    for _ in 0..50 {
        let (c, home, dev, _) = someone(g, clickers);
        let t = g.when().min(end - DAY_MS);
        let asn = HOSTING_ASNS[g.rng.below(6) as usize];
        let k = g.click(t, "tech", "tech-dcfarm", &dev, home, asn, true);
        let d = g.delay().min(20 * 3_600_000);
        g.conversion(t + d, "tech", Some(&k), None, c, home, Some("datacenter"));
    }
    for _ in 0..400 {
        let (_, home, dev, _) = someone(g, clickers);
        let t = g.when();
        let asn = HOSTING_ASNS[g.rng.below(6) as usize];
        g.click(t, "tech", "tech-dcfarm", &dev, home, asn, true);
    }

    // self_referral: partners buying through their own links (as new
    // customers: a lifetime lock would send an old one's conversion elsewhere)
    for i in 0..30 {
        let program = ["saas", "prop", "casino"][g.rng.below(3) as usize];
        let pid = clean_partner(g, cfg, program);
        let (_, home, dev, asn) = someone(g, clickers);
        let c = cfg.customers + 1_000 + i;
        let t = g.when().min(end - DAY_MS);
        let k = g.click(t, program, &pid, &dev, home, asn, true);
        let d = g.delay().min(20 * 3_600_000);
        let ids = g.conversion(
            t + d,
            program,
            Some(&k),
            None,
            c,
            home,
            Some("self_referral"),
        );
        for id in ids {
            let r = g
                .recs
                .iter_mut()
                .rev()
                .find(|r| r.id.as_deref() == Some(id.as_str()))
                .expect("just made");
            r.email_hash = Some(format!("eh-{pid}"));
        }
    }

    // coupon_leakage: a customer another partner brought in pays with a
    // coupon: known from an earlier conversion (20) or from the visitor
    // hash the checkout pixel carries (20)
    for i in 0..40 {
        let b = clean_partner(g, cfg, "prop");
        let mut a = clean_partner(g, cfg, "prop");
        if a == b {
            a = partner(
                "prop",
                (g.rng.below(cfg.partners - 1) + 1 + b[6..].parse::<u64>().unwrap_or(0))
                    % cfg.partners,
            );
        }
        let (c, home, dev, asn) = someone(g, clickers);
        let t = g.when().min(end - 12 * DAY_MS);
        let k = g.click(t, "prop", &b, &dev, home, asn, true);
        let ts = t + 2 * DAY_MS + g.rng.below(8 * DAY_MS as u64) as i64;
        if i < 20 {
            let d = g.delay().min(DAY_MS);
            g.conversion(t + d, "prop", Some(&k), None, c, home, None);
            g.conversion(
                ts,
                "prop",
                None,
                Some(format!("C-{a}")),
                c,
                home,
                Some("coupon_leakage"),
            );
        } else {
            let ids = g.conversion(
                ts,
                "prop",
                None,
                Some(format!("C-{a}")),
                c,
                home,
                Some("coupon_leakage"),
            );
            let r = g
                .recs
                .iter_mut()
                .rev()
                .find(|r| r.id.as_deref() == Some(ids[0].as_str()))
                .expect("just made");
            r.visitor = Some(dev);
        }
    }

    // round_trip: positions opened and closed within a minute, for rebates
    for _ in 0..20 {
        let pid = clean_partner(g, cfg, "fx");
        let (c, home, dev, asn) = someone(g, clickers);
        let t = g.when().min(end - 5 * DAY_MS);
        let k = g.click(t, "fx", &pid, &dev, home, asn, true);
        let mut ts = t + g.delay().min(DAY_MS);
        for _ in 0..4 {
            let instrument = INSTRUMENTS[g.rng.below(4) as usize];
            let lots = Decimal::new(10 + g.rng.below(40) as i64 * 10, 1);
            for leg in 0..2 {
                let id = g.next_id();
                let mut r = Record::new(Kind::Conversion);
                r.id = Some(id.clone());
                r.ts = Some(Timestamp(ts + leg * (5_000 + g.rng.below(55_000) as i64)));
                r.program = Some("fx".into());
                r.partner = Some(k.partner.clone());
                r.click_id = Some(k.id.clone());
                r.click_ts = Some(Timestamp(k.ts));
                r.event = Some("trade".into());
                r.txn_id = Some(format!("t-{id}"));
                r.customer = Some(format!("cu{c}"));
                r.instrument = Some(instrument.into());
                r.lots = Some(lots);
                r.country = Some(home.into());
                r.source = Some(Source::Postback);
                g.recs.push(r);
                g.labels.insert(id, "round_trip");
            }
            ts += 3_600_000 + g.rng.below(6 * 3_600_000) as i64;
        }
    }
}

// ---------------------------------------------------------------- evaluation

/// Detection of one pattern: injected conversions its rule flagged, and
/// clean conversions it flagged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PatternScore {
    pub injected: u64,
    pub detected: u64,
    pub clean_flagged: u64,
    pub precision: f64,
    pub recall: f64,
    pub clean_false_positive_rate: f64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Eval {
    /// Conversions scored (refunds and chargebacks are not).
    pub conversions: u64,
    pub clean: u64,
    pub injected: u64,
    /// Injected conversions any rule flagged.
    pub detected: u64,
    /// Clean conversions any rule flagged.
    pub clean_flagged: u64,
    pub precision: f64,
    pub recall: f64,
    pub clean_false_positive_rate: f64,
    pub patterns: Vec<(&'static str, PatternScore)>,
    /// Held or rejected among the clean conversions (money delayed or lost).
    pub clean_held_or_rejected: u64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// Runs the engine over generated traffic and scores the rules against the
/// labels. A pattern's precision counts as false positives the clean
/// conversions its rule flagged (another pattern's conversion it also
/// flags is fraud, not a false alarm).
pub fn evaluate(
    gen: &Generated,
    cfg: &crate::config::Config,
    period: Period,
) -> crate::Result<Eval> {
    let facts = crate::facts::Facts::from_records(&gen.records);
    let eng = crate::engine::Engine::new(cfg, &facts);
    let out = crate::engine::compute(
        &eng,
        &crate::engine::Options {
            until_ms: period.end_ms(),
            max_arrival: i64::MAX,
            review_seq: i64::MAX,
        },
    )?;
    Ok(score(gen, &facts, &out))
}

/// Scores an engine output against the labels.
pub fn score(gen: &Generated, facts: &crate::facts::Facts, out: &crate::engine::Output) -> Eval {
    let refund = facts.syms.get("refund");
    let chargeback = facts.syms.get("chargeback");
    let mut e = Eval::default();
    let mut per: Vec<PatternScore> = vec![PatternScore::default(); PATTERNS.len()];
    for (i, c) in facts.convs.iter().enumerate() {
        if Some(c.event) == refund || Some(c.event) == chargeback {
            continue;
        }
        e.conversions += 1;
        let row = out.fraud_row(i as u32);
        let mask = row.map_or(0, |r| r.mask);
        match gen.labels.get(facts.id(c)) {
            Some(label) => {
                e.injected += 1;
                if mask != 0 {
                    e.detected += 1;
                }
                let p = PATTERNS.iter().position(|x| x == label).expect("a pattern");
                per[p].injected += 1;
                if mask & (1 << p) != 0 {
                    per[p].detected += 1;
                }
            }
            None => {
                e.clean += 1;
                if mask != 0 {
                    e.clean_flagged += 1;
                }
                if row.is_some_and(|r| {
                    matches!(
                        r.outcome,
                        crate::engine::Outcome::Held
                            | crate::engine::Outcome::Rejected
                            | crate::engine::Outcome::ReviewRejected
                    )
                }) {
                    e.clean_held_or_rejected += 1;
                }
                for (p, s) in per.iter_mut().enumerate() {
                    if mask & (1 << p) != 0 {
                        s.clean_flagged += 1;
                    }
                }
            }
        }
    }
    for s in per.iter_mut() {
        s.precision = ratio(s.detected, s.detected + s.clean_flagged);
        s.recall = ratio(s.detected, s.injected);
        s.clean_false_positive_rate = if e.clean == 0 {
            0.0
        } else {
            s.clean_flagged as f64 / e.clean as f64
        };
    }
    e.precision = ratio(e.detected, e.detected + e.clean_flagged);
    e.recall = ratio(e.detected, e.injected);
    e.clean_false_positive_rate = if e.clean == 0 {
        0.0
    } else {
        e.clean_flagged as f64 / e.clean as f64
    };
    e.patterns = PATTERNS.iter().copied().zip(per).collect();
    e
}
