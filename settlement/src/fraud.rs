//! Fraud rules (docs/fraud.md): settlement-time checks over the whole event
//! log, configured per program under `[programs.fraud]`.
//!
//! [`prepare`] computes, in one pass per program over its people's clicks
//! and its conversions, which rules each conversion trips (a bit each); the
//! engine adds the two rules that need the attribution (self-referral,
//! coupon leakage), turns the bits into a score and an action (`flag`,
//! `hold`, `reject`), and applies the operators' review decisions.
//!
//! Every figure a rule reads about a conversion comes from facts dated
//! before the end of that conversion's month (and of its click's month for
//! click figures), so a conversion's verdict does not depend on which later
//! period is being run: reruns are byte-identical, and late facts change a
//! closed period only through adjustments, like every other input.

use crate::config::{Dec, Src};
use crate::engine::Options;
use crate::error::{Error, Result};
use crate::facts::{ClickFacts, FClick, Facts, NONE};
use crate::period::{Period, DAY_MS};
use crate::store::Store;
use rusqlite::OptionalExtension;
use rust_decimal::Decimal;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Deserialize;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

// ---------------------------------------------------------------- rules

/// The rules, in bit order; their names are the config keys and reasons.
pub const RULES: [&str; 13] = [
    "click_too_fast",
    "click_too_slow",
    "conversion_before_click",
    "visitor_flood",
    "partner_flood",
    "conversion_rate",
    "refund_rate",
    "shared_visitor",
    "country_mismatch",
    "datacenter",
    "self_referral",
    "coupon_leakage",
    "round_trip",
];

pub const CLICK_TOO_FAST: u16 = 1 << 0;
pub const CLICK_TOO_SLOW: u16 = 1 << 1;
pub const CONVERSION_BEFORE_CLICK: u16 = 1 << 2;
pub const VISITOR_FLOOD: u16 = 1 << 3;
pub const PARTNER_FLOOD: u16 = 1 << 4;
pub const CONVERSION_RATE: u16 = 1 << 5;
pub const REFUND_RATE: u16 = 1 << 6;
pub const SHARED_VISITOR: u16 = 1 << 7;
pub const COUNTRY_MISMATCH: u16 = 1 << 8;
pub const DATACENTER: u16 = 1 << 9;
pub const SELF_REFERRAL: u16 = 1 << 10;
pub const COUPON_LEAKAGE: u16 = 1 << 11;
pub const ROUND_TRIP: u16 = 1 << 12;

/// The keys each rule takes besides `action` and `weight`.
const PARAMS: [&[&str]; 13] = [
    &["seconds"],
    &["days", "min_count", "min_share"],
    &["seconds"],
    &["clicks", "minutes"],
    &["clicks", "factor"],
    &["factor", "min_conversions"],
    &["factor", "min_refunds", "min_rate"],
    &["customers", "days"],
    &["min_count", "min_share"],
    &["min_count", "min_share"],
    &[],
    &["days"],
    &["seconds"],
];

/// Default `(action, weight)` per rule.
const DEFAULTS: [(Action, u32); 13] = [
    (Action::Hold, 60),    // click_too_fast
    (Action::Flag, 30),    // click_too_slow
    (Action::Hold, 80),    // conversion_before_click
    (Action::Hold, 60),    // visitor_flood
    (Action::Flag, 40),    // partner_flood
    (Action::Hold, 50),    // conversion_rate
    (Action::Hold, 50),    // refund_rate
    (Action::Hold, 50),    // shared_visitor
    (Action::Flag, 30),    // country_mismatch
    (Action::Hold, 50),    // datacenter
    (Action::Reject, 100), // self_referral
    (Action::Hold, 50),    // coupon_leakage
    (Action::Hold, 60),    // round_trip
];

/// The reasons of a mask, space-separated, in rule order.
pub fn reasons(mask: u16) -> String {
    let mut s = String::new();
    for (i, name) in RULES.iter().enumerate() {
        if mask & (1 << i) != 0 {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(name);
        }
    }
    s
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Off,
    Flag,
    Hold,
    Reject,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Off => "off",
            Action::Flag => "flag",
            Action::Hold => "hold",
            Action::Reject => "reject",
        }
    }
    pub fn parse(s: &str) -> Option<Action> {
        [Action::Off, Action::Flag, Action::Hold, Action::Reject]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleCfg {
    pub action: Action,
    pub weight: u32,
}

/// `[programs.fraud]`, checked, with every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct FraudConfig {
    pub rules: [RuleCfg; 13],
    /// A score at or above this holds (at least); `None`: never by score.
    pub hold_score: Option<u32>,
    /// A score at or above this rejects; `None`: never by score.
    pub reject_score: Option<u32>,
    pub fast_ms: i64,
    pub slow_ms: i64,
    pub slow_min_count: u32,
    pub slow_min_share: Decimal,
    pub before_ms: i64,
    pub flood_clicks: u32,
    pub flood_ms: i64,
    pub pflood_clicks: u32,
    pub pflood_factor: Decimal,
    pub cr_factor: Decimal,
    pub cr_min_conversions: u32,
    pub rr_factor: Decimal,
    pub rr_min_refunds: u32,
    pub rr_min_rate: Decimal,
    pub sv_customers: u32,
    pub sv_ms: i64,
    pub cm_min_count: u32,
    pub cm_min_share: Decimal,
    pub dc_min_count: u32,
    pub dc_min_share: Decimal,
    pub leak_ms: i64,
    pub rt_ms: i64,
    /// The program's click window (too-slow clicks are the ones inside it).
    pub window_ms: i64,
}

/// What the rules say about one conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub score: u8,
    pub action: Action,
    /// The rule the action is booked under (index into [`RULES`]).
    pub rule: u8,
}

fn dec(s: &str) -> Decimal {
    crate::money::parse_decimal(s).expect("a literal decimal")
}

impl FraudConfig {
    /// Every rule at its default, for a program with this click window.
    pub fn defaults(window_days: i64) -> FraudConfig {
        FraudConfig {
            rules: DEFAULTS.map(|(action, weight)| RuleCfg { action, weight }),
            hold_score: Some(100),
            reject_score: None,
            fast_ms: 10_000,
            slow_ms: (window_days * 9 / 10).max(1) * DAY_MS,
            slow_min_count: 3,
            slow_min_share: dec("0.2"),
            before_ms: 300_000,
            flood_clicks: 10,
            flood_ms: 60 * 60_000,
            pflood_clicks: 50,
            pflood_factor: dec("10"),
            cr_factor: dec("5"),
            cr_min_conversions: 20,
            rr_factor: dec("3"),
            rr_min_refunds: 8,
            rr_min_rate: dec("0.2"),
            sv_customers: 3,
            sv_ms: 7 * DAY_MS,
            cm_min_count: 3,
            cm_min_share: dec("0.1"),
            dc_min_count: 3,
            dc_min_share: dec("0.1"),
            leak_ms: window_days * DAY_MS,
            rt_ms: 120_000,
            window_ms: window_days * DAY_MS,
        }
    }

    fn on(&self, bit: u16) -> bool {
        self.rules[bit.trailing_zeros() as usize].action != Action::Off
    }

    /// The mask without the rules that are off.
    pub fn active(&self, mask: u16) -> u16 {
        let mut m = mask;
        for (i, r) in self.rules.iter().enumerate() {
            if r.action == Action::Off {
                m &= !(1 << i);
            }
        }
        m
    }

    /// Score (the fired rules' weights, at most 100), action (the most
    /// severe of theirs, raised by the score thresholds) and the rule it is
    /// booked under (the heaviest fired rule with that action, else the
    /// heaviest fired rule; the first listed among equals). `mask` must be
    /// [`FraudConfig::active`] and non-zero.
    pub fn decide(&self, mask: u16) -> Verdict {
        let mut score = 0u32;
        let mut action = Action::Off;
        for (i, r) in self.rules.iter().enumerate() {
            if mask & (1 << i) != 0 {
                score += r.weight;
                action = action.max(r.action);
            }
        }
        let score = score.min(100);
        if self.hold_score.is_some_and(|h| score >= h) {
            action = action.max(Action::Hold);
        }
        if self.reject_score.is_some_and(|h| score >= h) {
            action = Action::Reject;
        }
        let heaviest = |want: Option<Action>| -> Option<usize> {
            let mut best: Option<usize> = None;
            for (i, r) in self.rules.iter().enumerate() {
                if mask & (1 << i) != 0
                    && want.is_none_or(|a| r.action == a)
                    && best.is_none_or(|b| r.weight > self.rules[b].weight)
                {
                    best = Some(i);
                }
            }
            best
        };
        let rule = heaviest(Some(action))
            .or_else(|| heaviest(None))
            .unwrap_or(0);
        Verdict {
            score: score as u8,
            action,
            rule: rule as u8,
        }
    }
}

// ---------------------------------------------------------------- configuration

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    action: Option<Spanned<String>>,
    weight: Option<Spanned<i64>>,
    seconds: Option<Spanned<i64>>,
    minutes: Option<Spanned<i64>>,
    days: Option<Spanned<i64>>,
    clicks: Option<Spanned<i64>>,
    customers: Option<Spanned<i64>>,
    min_count: Option<Spanned<i64>>,
    min_conversions: Option<Spanned<i64>>,
    min_refunds: Option<Spanned<i64>>,
    factor: Option<Spanned<Dec>>,
    min_share: Option<Spanned<Dec>>,
    min_rate: Option<Spanned<Dec>>,
}

impl RawRule {
    /// The rule-specific keys that are set, with their spans.
    fn params(&self) -> Vec<(&'static str, Range<usize>)> {
        let mut v = Vec::new();
        let mut i = |k: &'static str, x: &Option<Spanned<i64>>| {
            if let Some(x) = x {
                v.push((k, x.span()));
            }
        };
        i("seconds", &self.seconds);
        i("minutes", &self.minutes);
        i("days", &self.days);
        i("clicks", &self.clicks);
        i("customers", &self.customers);
        i("min_count", &self.min_count);
        i("min_conversions", &self.min_conversions);
        i("min_refunds", &self.min_refunds);
        for (k, x) in [
            ("factor", &self.factor),
            ("min_share", &self.min_share),
            ("min_rate", &self.min_rate),
        ] {
            if let Some(x) = x {
                v.push((k, x.span()));
            }
        }
        v
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFraud {
    hold_score: Option<Spanned<i64>>,
    reject_score: Option<Spanned<i64>>,
    click_too_fast: Option<RawRule>,
    click_too_slow: Option<RawRule>,
    conversion_before_click: Option<RawRule>,
    visitor_flood: Option<RawRule>,
    partner_flood: Option<RawRule>,
    conversion_rate: Option<RawRule>,
    refund_rate: Option<RawRule>,
    shared_visitor: Option<RawRule>,
    country_mismatch: Option<RawRule>,
    datacenter: Option<RawRule>,
    self_referral: Option<RawRule>,
    coupon_leakage: Option<RawRule>,
    round_trip: Option<RawRule>,
}

impl RawFraud {
    fn rules(&self) -> [Option<&RawRule>; 13] {
        [
            self.click_too_fast.as_ref(),
            self.click_too_slow.as_ref(),
            self.conversion_before_click.as_ref(),
            self.visitor_flood.as_ref(),
            self.partner_flood.as_ref(),
            self.conversion_rate.as_ref(),
            self.refund_rate.as_ref(),
            self.shared_visitor.as_ref(),
            self.country_mismatch.as_ref(),
            self.datacenter.as_ref(),
            self.self_referral.as_ref(),
            self.coupon_leakage.as_ref(),
            self.round_trip.as_ref(),
        ]
    }
}

/// Checks `[programs.fraud]` of a program with this click window.
pub(crate) fn check(src: &Src, raw: &RawFraud, window_days: i64) -> Result<FraudConfig> {
    let mut c = FraudConfig::defaults(window_days);
    let int = |v: &Option<Spanned<i64>>, key: &str, lo: i64, hi: i64| -> Result<Option<i64>> {
        match v {
            None => Ok(None),
            Some(s) if *s.get_ref() < lo || *s.get_ref() > hi => {
                Err(src.err(s.span(), key, format!("must be between {lo} and {hi}")))
            }
            Some(s) => Ok(Some(*s.get_ref())),
        }
    };
    let frac = |v: &Option<Spanned<Dec>>, key: &str, lo: Decimal, hi: Option<Decimal>| match v {
        None => Ok(None),
        Some(s) => {
            let d = s.get_ref().0;
            if d < lo || hi.is_some_and(|h| d > h) {
                let range = match hi {
                    Some(h) => format!("between \"{lo}\" and \"{h}\""),
                    None => format!("at least \"{lo}\""),
                };
                Err(src.err(s.span(), key, format!("must be {range}")))
            } else {
                Ok(Some(d))
            }
        }
    };
    if let Some(h) = int(&raw.hold_score, "hold_score", 1, 100)? {
        c.hold_score = Some(h as u32);
    }
    if let Some(h) = int(&raw.reject_score, "reject_score", 1, 100)? {
        c.reject_score = Some(h as u32);
    }
    let one = Decimal::ONE;
    for (i, r) in raw.rules().into_iter().enumerate() {
        let Some(r) = r else { continue };
        for (k, span) in r.params() {
            if !PARAMS[i].contains(&k) {
                let takes: Vec<&str> = ["action", "weight"]
                    .iter()
                    .chain(PARAMS[i].iter())
                    .copied()
                    .collect();
                return Err(src.err(
                    span,
                    k,
                    format!("`{}` takes {}", RULES[i], takes.join(", ")),
                ));
            }
        }
        if let Some(a) = &r.action {
            c.rules[i].action = Action::parse(a.get_ref()).ok_or_else(|| {
                src.err(
                    a.span(),
                    "action",
                    format!(
                        "unknown action {:?}: flag, hold, reject or off",
                        a.get_ref()
                    ),
                )
            })?;
        }
        if let Some(w) = int(&r.weight, "weight", 0, 100)? {
            c.rules[i].weight = w as u32;
        }
        let secs =
            |v| -> Result<Option<i64>> { Ok(int(v, "seconds", 0, 30 * 86_400)?.map(|s| s * 1000)) };
        let days =
            |v| -> Result<Option<i64>> { Ok(int(v, "days", 1, 36_600)?.map(|d| d * DAY_MS)) };
        let count = |v, key| -> Result<Option<u32>> {
            Ok(int(v, key, 1, 1_000_000_000)?.map(|n| n as u32))
        };
        let share = |v, key| frac(v, key, Decimal::ZERO, Some(one));
        let factor = |v| frac(v, "factor", one, None);
        let bit = 1u16 << i;
        match bit {
            CLICK_TOO_FAST => set(&mut c.fast_ms, secs(&r.seconds)?),
            CLICK_TOO_SLOW => {
                set(&mut c.slow_ms, days(&r.days)?);
                set(&mut c.slow_min_count, count(&r.min_count, "min_count")?);
                set(&mut c.slow_min_share, share(&r.min_share, "min_share")?);
            }
            CONVERSION_BEFORE_CLICK => set(&mut c.before_ms, secs(&r.seconds)?),
            VISITOR_FLOOD => {
                set(
                    &mut c.flood_clicks,
                    int(&r.clicks, "clicks", 2, 1_000_000)?.map(|n| n as u32),
                );
                set(
                    &mut c.flood_ms,
                    int(&r.minutes, "minutes", 1, 7 * 24 * 60)?.map(|m| m * 60_000),
                );
            }
            PARTNER_FLOOD => {
                set(&mut c.pflood_clicks, count(&r.clicks, "clicks")?);
                set(&mut c.pflood_factor, factor(&r.factor)?);
            }
            CONVERSION_RATE => {
                set(&mut c.cr_factor, factor(&r.factor)?);
                set(
                    &mut c.cr_min_conversions,
                    count(&r.min_conversions, "min_conversions")?,
                );
            }
            REFUND_RATE => {
                set(&mut c.rr_factor, factor(&r.factor)?);
                set(&mut c.rr_min_refunds, count(&r.min_refunds, "min_refunds")?);
                set(&mut c.rr_min_rate, share(&r.min_rate, "min_rate")?);
            }
            SHARED_VISITOR => {
                set(
                    &mut c.sv_customers,
                    int(&r.customers, "customers", 2, 1_000_000)?.map(|n| n as u32),
                );
                set(&mut c.sv_ms, days(&r.days)?);
            }
            COUNTRY_MISMATCH => {
                set(&mut c.cm_min_count, count(&r.min_count, "min_count")?);
                set(&mut c.cm_min_share, share(&r.min_share, "min_share")?);
            }
            DATACENTER => {
                set(&mut c.dc_min_count, count(&r.min_count, "min_count")?);
                set(&mut c.dc_min_share, share(&r.min_share, "min_share")?);
            }
            COUPON_LEAKAGE => set(&mut c.leak_ms, days(&r.days)?),
            ROUND_TRIP => set(&mut c.rt_ms, secs(&r.seconds)?),
            _ => {}
        }
    }
    Ok(c)
}

fn set<T>(to: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *to = v;
    }
}

// ---------------------------------------------------------------- the rules over the facts

/// Per conversion (index in `Facts::convs`), the rules it trips before
/// attribution; empty when no program has fraud rules.
#[derive(Debug, Default, Clone)]
pub struct Pre {
    pub masks: Vec<u16>,
    /// Per program (index in the config), its conversions in `(ts, id)`
    /// order as the engine visits them, when computed here (else empty).
    pub orders: Vec<Vec<u32>>,
    /// Per program, its duplicates ([`crate::engine::duplicates`]), when
    /// computed here (else `None`).
    pub dups: Vec<Option<Dups>>,
}

/// Each conversion that repeats another's program, `event` and `txn_id`,
/// and the one that stands.
pub type Dups = FxHashMap<u32, u32>;

impl Pre {
    pub fn mask(&self, conv: u32) -> u16 {
        self.masks.get(conv as usize).copied().unwrap_or(0)
    }
}

const HOUR_MS: i64 = 3_600_000;

/// Runs the rules of every program with a `[programs.fraud]` table over the
/// facts `opts` lets the engine see.
pub fn prepare(cfg: &crate::config::Config, f: &Facts, opts: &Options) -> Pre {
    let s = Scoring::new(cfg, f, &f.fraud, opts);
    if s.is_empty() {
        return Pre::default();
    }
    // programs in parallel (nothing crosses programs), biggest first
    type Slot = std::sync::Mutex<(Found, Vec<u32>, Dups)>;
    let found: Vec<Slot> = (0..s.len()).map(|_| Slot::default()).collect();
    crate::tasks::run(s.len(), crate::tasks::threads_for(s.len()), |k| {
        let b = s.queue[k];
        *found[b].lock().expect("fraud lock") = s.score(b, &f.fraud);
    });
    let mut masks = vec![0u16; f.convs.len()];
    let mut orders = vec![Vec::new(); cfg.programs.len()];
    let mut all_dups = vec![None; cfg.programs.len()];
    for (b, slot) in found.into_iter().enumerate() {
        let (hits, order, dups) = slot.into_inner().expect("fraud lock");
        for (ci, bits) in hits {
            masks[ci as usize] |= bits;
        }
        orders[s.program(b)] = order;
        all_dups[s.program(b)] = Some(dups);
    }
    Pre {
        masks,
        orders,
        dups: all_dups,
    }
}

/// A program's run of conversions or clicks: `(program, start, end)`.
type Runs<'a> = &'a [(u32, u32, u32)];

/// The fraud rules' work, one task a program with a `[programs.fraud]`
/// table: which programs, where their conversions and clicks are, and the
/// order to take them in (biggest first). The engine runs these tasks
/// beside its own programs' ([`crate::engine::compute`]); [`prepare`] runs
/// them alone.
pub struct Scoring<'a> {
    f: &'a Facts,
    opts: Options,
    progs: Vec<&'a FraudConfig>,
    /// per task, its program's index in the config
    prog_index: Vec<usize>,
    /// per task, its program's symbol
    sym_of: Vec<u32>,
    /// each program's conversions and clicks when the facts are not in
    /// runs (else picked from the runs by the task itself)
    convs: Vec<Vec<u32>>,
    clicks: Vec<Vec<u32>>,
    runs: Option<(Runs<'a>, Runs<'a>)>,
    /// the tasks, biggest first
    pub queue: Vec<usize>,
}

impl<'a> Scoring<'a> {
    /// The tasks of `cfg` over `f`, whose clicks are `fr` (the facts' own,
    /// or the same taken out of them).
    pub fn new(
        cfg: &'a crate::config::Config,
        f: &'a Facts,
        fr: &ClickFacts,
        opts: &Options,
    ) -> Scoring<'a> {
        let opts = *opts;
        let mut bucket_of: FxHashMap<u32, usize> = FxHashMap::default();
        let mut progs: Vec<&FraudConfig> = Vec::new();
        let mut prog_index: Vec<usize> = Vec::new();
        for (pi, p) in cfg.programs.iter().enumerate() {
            if let (Some(fc), Some(sym)) = (&p.fraud, f.syms.get(&p.id)) {
                bucket_of.insert(sym, progs.len());
                progs.push(fc);
                prog_index.push(pi);
            }
        }
        let n = progs.len();
        let runs = f.conv_runs().zip(f.click_runs_of(fr));
        let mut convs: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut clicks: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut sizes = vec![0usize; n];
        match runs {
            Some((cr, kr)) => {
                for &(sym, lo, hi) in cr.iter().chain(kr) {
                    if let Some(&b) = bucket_of.get(&sym) {
                        sizes[b] += (hi - lo) as usize;
                    }
                }
            }
            None if n > 0 => {
                for (i, c) in f.convs.iter().enumerate() {
                    if conv_seen(&opts, c) {
                        if let Some(&b) = bucket_of.get(&c.program) {
                            convs[b].push(i as u32);
                        }
                    }
                }
                for (i, k) in fr.clicks.iter().enumerate() {
                    if click_seen(&opts, k) {
                        if let Some(&b) = bucket_of.get(&k.program) {
                            clicks[b].push(i as u32);
                        }
                    }
                }
                for b in 0..n {
                    sizes[b] = convs[b].len() + clicks[b].len();
                }
            }
            None => {}
        }
        let mut sym_of = vec![NONE; n];
        for (&sym, &b) in &bucket_of {
            sym_of[b] = sym;
        }
        let mut queue: Vec<usize> = (0..n).collect();
        queue.sort_by_key(|&b| std::cmp::Reverse(sizes[b]));
        Scoring {
            f,
            opts,
            progs,
            prog_index,
            sym_of,
            convs,
            clicks,
            runs,
            queue,
        }
    }

    /// How many tasks.
    pub fn len(&self) -> usize {
        self.progs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.progs.is_empty()
    }

    /// Task `b`'s program (its index in the config).
    pub fn program(&self, b: usize) -> usize {
        self.prog_index[b]
    }

    /// Task `b`: the rules its conversions trip, its conversions in the
    /// `(ts, id)` order the engine visits them, and its duplicates. `fr`:
    /// the clicks [`Scoring::new`] was given.
    pub fn score(&self, b: usize, fr: &ClickFacts) -> (Found, Vec<u32>, Dups) {
        let f = self.f;
        let opts = &self.opts;
        // the visible members of `sym`'s run
        let pick = |rs: &[(u32, u32, u32)], seen: &dyn Fn(u32) -> bool| -> Vec<u32> {
            rs.iter()
                .find(|r| r.0 == self.sym_of[b])
                .map_or_else(Vec::new, |&(_, lo, hi)| {
                    (lo..hi).filter(|&i| seen(i)).collect()
                })
        };
        let (cl, kl) = match self.runs {
            Some((cr, kr)) => (
                std::borrow::Cow::Owned(pick(cr, &|i| conv_seen(opts, &f.convs[i as usize]))),
                std::borrow::Cow::Owned(pick(kr, &|i| {
                    fr.clicks
                        .get(i as usize)
                        .is_some_and(|k| click_seen(opts, k))
                })),
            ),
            None => (
                std::borrow::Cow::Borrowed(self.convs[b].as_slice()),
                std::borrow::Cow::Borrowed(self.clicks[b].as_slice()),
            ),
        };
        let order = f.sorted_ts_id(&cl);
        // one sale brought in under two ids is one to the rules as well:
        // the copies the engine counts for nothing are not scored (a trade
        // twice would be a round trip of itself)
        let sym = self.sym_of[b];
        let dups = crate::engine::duplicates(f, &|i| {
            let c = &f.convs[i as usize];
            c.program == sym && conv_seen(opts, c)
        });
        let scored: std::borrow::Cow<[u32]> = if dups.is_empty() {
            std::borrow::Cow::Borrowed(&order)
        } else {
            std::borrow::Cow::Owned(
                order
                    .iter()
                    .copied()
                    .filter(|i| !dups.contains_key(i))
                    .collect(),
            )
        };
        let mut m = FxHashMap::default();
        score_program(f, fr, self.progs[b], opts, &scored, &kl, &mut m);
        drop(scored);
        (m, order, dups)
    }
}

fn conv_seen(opts: &Options, c: &crate::facts::Conv) -> bool {
    c.ts < opts.until_ms && i64::from(c.arrival) <= opts.max_arrival
}

fn click_seen(opts: &Options, k: &FClick) -> bool {
    k.ts < opts.until_ms && i64::from(k.arrival) <= opts.max_arrival
}

/// Per conversion, the rules it trips (only conversions that trip one).
pub type Found = FxHashMap<u32, u16>;

fn mark(m: &mut Found, ci: u32, bits: u16) {
    if bits != 0 {
        *m.entry(ci).or_insert(0) |= bits;
    }
}

fn period_end(ts: i64) -> i64 {
    Period::of_ms(ts).end_ms()
}

#[derive(Default, Clone, Copy)]
struct Agg {
    /// conversions citing the partner's click
    click_convs: u32,
    slow: u32,
    /// with a click country and a conversion country
    both: u32,
    mismatch: u32,
    /// with their click found
    joined: u32,
    dc: u32,
    sales: u32,
    refunds: u32,
}

#[derive(Default, Clone, Copy)]
struct ProgAgg {
    click_convs: u64,
    sales: u64,
    refunds: u64,
}

fn at_least_share(n: u32, total: u32, share: Decimal) -> bool {
    Decimal::from(n) >= share * Decimal::from(total)
}

fn score_program(
    f: &Facts,
    fr: &ClickFacts,
    fc: &FraudConfig,
    opts: &Options,
    order: &[u32],
    clicks: &[u32],
    masks: &mut Found,
) {
    let refund = f.syms.get("refund").unwrap_or(NONE - 1);
    let chargeback = f.syms.get("chargeback").unwrap_or(NONE - 1);
    let click = |k: u32| -> &FClick { &fr.clicks[k as usize] };
    let joined = |ci: u32| -> Option<&FClick> {
        let k = *fr.conv_click.get(ci as usize)?;
        if k == NONE {
            return None;
        }
        let c = click(k);
        (c.ts < opts.until_ms && i64::from(c.arrival) <= opts.max_arrival).then_some(c)
    };
    let own_visitor = |ci: u32| -> u64 {
        fr.conv_visitor
            .binary_search_by_key(&ci, |x| x.0)
            .map_or(0, |i| fr.conv_visitor[i].1)
    };

    // ---- people's clicks: per visitor, sorted by time
    let mut by_visitor: Vec<(u64, i64, u32)> = clicks
        .iter()
        .filter(|&&k| click(k).visitor != 0)
        .map(|&k| (click(k).visitor, click(k).ts, k))
        .collect();
    by_visitor.sort_unstable();
    let mut flooded: FxHashSet<u32> = FxHashSet::default();
    if fc.on(VISITOR_FLOOD) {
        let n = fc.flood_clicks as usize;
        let w = fc.flood_ms;
        let mut g = 0;
        while g < by_visitor.len() {
            let v = by_visitor[g].0;
            let end = g + by_visitor[g..].partition_point(|x| x.0 == v);
            if end - g >= n {
                let (mut lo, mut hi) = (g, g);
                for j in g..end {
                    let t = by_visitor[j].1;
                    let upper = (t + w).min(period_end(t) - 1);
                    while by_visitor[lo].1 < t - w {
                        lo += 1;
                    }
                    while hi < end && by_visitor[hi].1 <= upper {
                        hi += 1;
                    }
                    if hi - lo >= n {
                        flooded.insert(by_visitor[j].2);
                    }
                }
            }
            g = end;
        }
    }

    // ---- people's clicks: per partner and hour
    let mut hours: Vec<(u32, i64)> = clicks
        .iter()
        .map(|&k| (click(k).partner, click(k).ts.div_euclid(HOUR_MS)))
        .collect();
    hours.sort_unstable();
    let mut flood_hours: FxHashSet<(u32, i64)> = FxHashSet::default();
    if fc.on(PARTNER_FLOOD) {
        let mut g = 0;
        let mut counts: Vec<(i64, u32)> = Vec::new();
        while g < hours.len() {
            // one partner's hours within one month
            let (partner, h0) = hours[g];
            let month = Period::of_ms(h0 * HOUR_MS);
            let month_end_hour = month.end_ms() / HOUR_MS;
            counts.clear();
            let mut j = g;
            while j < hours.len() && hours[j].0 == partner && hours[j].1 < month_end_hour {
                let h = hours[j].1;
                let k = j + hours[j..].partition_point(|x| *x == (partner, h));
                counts.push((h, (k - j) as u32));
                j = k;
            }
            let mut sizes: Vec<u32> = counts.iter().map(|c| c.1).collect();
            sizes.sort_unstable();
            let median = sizes[(sizes.len() - 1) / 2];
            let need = Decimal::from(median) * fc.pflood_factor;
            for &(h, n) in &counts {
                if n >= fc.pflood_clicks && Decimal::from(n) >= need {
                    flood_hours.insert((partner, h));
                }
            }
            g = j;
        }
    }
    // all the program's clicks in time order (conversion rates)
    let mut click_times: Vec<i64> = Vec::new();
    if fc.on(CONVERSION_RATE) {
        click_times = clicks.iter().map(|&k| click(k).ts).collect();
        click_times.sort_unstable();
    }

    // ---- conversions, in (ts, id) order
    let ev_partner = |c: &crate::facts::Conv| -> u32 {
        if c.partner != NONE {
            return c.partner;
        }
        let cp = f.ex(c).coupon;
        if cp == NONE {
            return NONE;
        }
        f.coupons.get(&(c.program, cp)).copied().unwrap_or(NONE)
    };
    let reinstate = f.syms.get("reinstate").unwrap_or(NONE - 1);
    // a reinstatement is no sale either; the reversal it cancels counts
    // for no refund
    let is_reversal =
        |c: &crate::facts::Conv| c.event == refund || c.event == chargeback || c.event == reinstate;
    // per reversal txn id, the months of the reinstatements naming it (in
    // (ts, id) order)
    let mut reinstated: FxHashMap<&str, Vec<i64>> = FxHashMap::default();
    // refunds and chargebacks `(transaction they name, month)`, and the
    // conversions with a transaction id, for the refund rates
    let rr_on = fc.on(REFUND_RATE);
    let mut reversals: Vec<(u32, i64, &str)> = Vec::new();
    let mut txns: Vec<(&str, u32)> = Vec::new();
    let mut agg: FxHashMap<(u32, i64), Agg> = FxHashMap::default();
    let mut prog: FxHashMap<i64, ProgAgg> = FxHashMap::default();
    let mut gated: Vec<(u32, u16, i64)> = Vec::new();
    // customers' last clicks matter only where coupons are registered
    let prog_sym = order
        .first()
        .map_or(NONE, |&ci| f.convs[ci as usize].program);
    let coupons = f.coupons.keys().any(|&(p, _)| p == prog_sym);
    let (mut cur_day, mut period, mut month_start) = (i64::MIN, 0i64, 0i64);
    let mut last_click: FxHashMap<u32, (u32, i64)> = FxHashMap::default();
    let mut trades: FxHashMap<(u32, u32, Decimal), (i64, u32)> = FxHashMap::default();
    let mut shared: Vec<(u64, i64, u32, u32)> = Vec::new();
    for (k, &ci) in order.iter().enumerate() {
        f.prefetch_ahead(order, k);
        // the click a conversion cites is read at random among millions
        if let Some(kc) = order
            .get(k + 8)
            .and_then(|&cj| fr.conv_click.get(cj as usize))
            .and_then(|&kx| fr.clicks.get(kx as usize))
        {
            crate::facts::prefetch(kc);
        }
        let c = &f.convs[ci as usize];
        let day = c.ts.div_euclid(DAY_MS);
        if day != cur_day {
            cur_day = day;
            let m = Period::of_day(day);
            period = m.index();
            month_start = m.start_ms();
        }
        if is_reversal(c) {
            let ex = f.ex(c);
            if rr_on && ex.orig_txn != NONE {
                if c.event == reinstate {
                    reinstated
                        .entry(f.syms.str(ex.orig_txn))
                        .or_default()
                        .push(period);
                } else {
                    reversals.push((ex.orig_txn, period, f.txns.get(c.idx)));
                }
            }
            continue;
        }
        let ex = f.ex(c);
        if rr_on {
            let t = f.txns.get(c.idx);
            if !t.is_empty() {
                txns.push((t, ci));
            }
        }
        let evp = ev_partner(c);
        let own = if fr.conv_visitor.is_empty() {
            0
        } else {
            own_visitor(ci)
        };
        let mut bits = 0u16;
        let mut cand = 0u16;
        let mut a = Agg::default();
        let age = if c.has_click {
            c.ts.saturating_sub(c.click_ts)
        } else {
            0
        };
        if c.has_click {
            if (0..fc.fast_ms).contains(&age) {
                bits |= CLICK_TOO_FAST;
            }
            if -age > fc.before_ms {
                bits |= CONVERSION_BEFORE_CLICK;
            }
            if c.partner != NONE {
                a.click_convs = 1;
                if flood_hours.contains(&(c.partner, c.click_ts.div_euclid(HOUR_MS))) {
                    bits |= PARTNER_FLOOD;
                }
                if age > fc.slow_ms && age <= fc.window_ms {
                    cand |= CLICK_TOO_SLOW;
                    a.slow = 1;
                }
            }
        }
        let k = joined(ci);
        if let Some(k) = k {
            a.joined = 1;
            let kix = fr.conv_click[ci as usize];
            if flooded.contains(&kix) {
                bits |= VISITOR_FLOOD;
            }
            if k.flags & FClick::DATACENTER != 0 {
                cand |= DATACENTER;
                a.dc = 1;
            }
            let cc =
                crate::facts::country_code((ex.country != NONE).then(|| f.syms.str(ex.country)));
            if cc != 0 && k.country != 0 {
                a.both = 1;
                if cc != k.country {
                    cand |= COUNTRY_MISMATCH;
                    a.mismatch = 1;
                }
            }
        }
        if c.amount.is_some() {
            a.sales = 1;
        }
        if evp != NONE {
            let t = agg.entry((evp, period)).or_default();
            t.click_convs += a.click_convs;
            t.slow += a.slow;
            t.both += a.both;
            t.mismatch += a.mismatch;
            t.joined += a.joined;
            t.dc += a.dc;
            t.sales += a.sales;
            let pa = prog.entry(period).or_default();
            pa.click_convs += u64::from(a.click_convs);
            pa.sales += u64::from(a.sales);
        }
        // round trips: the same customer, instrument and lots within seconds
        if c.customer != NONE && ex.instrument != NONE {
            if let Some(lots) = ex.lots {
                let key = (c.customer, ex.instrument, lots.normalize());
                if let Some(&(pt, pci)) = trades.get(&key) {
                    if c.ts - pt <= fc.rt_ms {
                        bits |= ROUND_TRIP;
                        // the earlier leg, when it is of the same month
                        if pt >= month_start {
                            mark(masks, pci, ROUND_TRIP);
                        }
                    }
                }
                trades.insert(key, (c.ts, ci));
            }
        }
        // coupon leakage: another partner's click before a coupon conversion
        if ex.coupon != NONE {
            if let Some(&owner) = f.coupons.get(&(c.program, ex.coupon)) {
                if c.customer != NONE {
                    if let Some(&(b, kts)) = last_click.get(&c.customer) {
                        if b != owner && c.ts >= kts && c.ts - kts <= fc.leak_ms {
                            bits |= COUPON_LEAKAGE;
                        }
                    }
                }
                let v = own;
                if v != 0 && bits & COUPON_LEAKAGE == 0 {
                    let lo = by_visitor.partition_point(|x| (x.0, x.1) < (v, c.ts - fc.leak_ms));
                    let hi = by_visitor.partition_point(|x| (x.0, x.1) <= (v, c.ts));
                    if by_visitor[lo..hi]
                        .iter()
                        .any(|x| click(x.2).partner != owner)
                    {
                        bits |= COUPON_LEAKAGE;
                    }
                }
            }
        }
        if coupons
            && c.has_click
            && c.partner != NONE
            && !c.click_bot
            && c.customer != NONE
            && age >= 0
        {
            last_click.insert(c.customer, (c.partner, c.click_ts));
        }
        if c.customer != NONE {
            let v = match own {
                0 => k.map_or(0, |k| k.visitor),
                v => v,
            };
            if v != 0 {
                shared.push((v, c.ts, ci, c.customer));
            }
        }
        mark(masks, ci, bits);
        if cand != 0 && evp != NONE {
            gated.push((ci, cand, period));
        }
    }

    // ---- refunds: the sale a reversal names is the first conversion (in
    // (ts, id) order) with that transaction id, as the engine's clawbacks
    if !reversals.is_empty() {
        let wanted: FxHashSet<&str> = reversals.iter().map(|r| f.syms.str(r.0)).collect();
        let mut originals: FxHashMap<&str, u32> = FxHashMap::default();
        for &(t, ci) in &txns {
            if wanted.contains(t) {
                originals.entry(t).or_insert(ci);
            }
        }
        for &(orig, period, own) in &reversals {
            // a reversal reinstated within its month counts for nothing (one
            // reinstatement, one reversal of the txn id, in order); one
            // reinstated later still counts in its month, whose verdict
            // later facts do not change
            if let Some(ws) = (!own.is_empty()).then(|| reinstated.get_mut(own)).flatten() {
                if let Some(k) = ws.iter().position(|&w| w <= period) {
                    ws.remove(k);
                    continue;
                }
            }
            if let Some(&oi) = originals.get(f.syms.str(orig)) {
                let op = ev_partner(&f.convs[oi as usize]);
                if op != NONE {
                    agg.entry((op, period)).or_default().refunds += 1;
                    prog.entry(period).or_default().refunds += 1;
                }
            }
        }
    }
    drop(txns);

    // ---- partner-level gates: a weak signal counts when it is frequent
    for &(ci, cand, period) in &gated {
        let c = &f.convs[ci as usize];
        let a = agg[&(ev_partner(c), period)];
        let mut bits = 0;
        if cand & CLICK_TOO_SLOW != 0
            && a.slow >= fc.slow_min_count
            && at_least_share(a.slow, a.click_convs, fc.slow_min_share)
        {
            bits |= CLICK_TOO_SLOW;
        }
        if cand & COUNTRY_MISMATCH != 0
            && a.mismatch >= fc.cm_min_count
            && at_least_share(a.mismatch, a.both, fc.cm_min_share)
        {
            bits |= COUNTRY_MISMATCH;
        }
        if cand & DATACENTER != 0
            && a.dc >= fc.dc_min_count
            && at_least_share(a.dc, a.joined, fc.dc_min_share)
        {
            bits |= DATACENTER;
        }
        mark(masks, ci, bits);
    }

    // ---- outliers against the program: conversion and refund rates
    let mut cr: FxHashSet<(u32, i64)> = FxHashSet::default();
    let mut rr: FxHashSet<(u32, i64)> = FxHashSet::default();
    let mut keys: Vec<(&(u32, i64), &Agg)> = agg.iter().collect();
    keys.sort_unstable_by_key(|x| *x.0);
    for (&(partner, pidx), a) in keys {
        let Some(pa) = prog.get(&pidx) else { continue };
        if fc.on(CONVERSION_RATE) && a.click_convs >= fc.cr_min_conversions && pa.click_convs > 0 {
            // clicks over the click window before the month's end
            let month = Period::from_index(pidx);
            let (from, to) = (month.start_ms() - fc.window_ms, month.end_ms());
            let all = click_times.partition_point(|&t| t < to)
                - click_times.partition_point(|&t| t < from);
            let lo = hours.partition_point(|x| *x < (partner, from.div_euclid(HOUR_MS)));
            let hi = hours.partition_point(|x| *x < (partner, to.div_euclid(HOUR_MS)));
            let mine = hi - lo;
            // conversions per click at least `factor` times the program's
            if all > 0
                && Decimal::from(a.click_convs) * Decimal::from(all)
                    >= fc.cr_factor * Decimal::from(pa.click_convs) * Decimal::from(mine)
            {
                cr.insert((partner, pidx));
            }
        }
        if fc.on(REFUND_RATE)
            && a.refunds >= fc.rr_min_refunds
            && pa.sales > 0
            && at_least_share(a.refunds, a.sales, fc.rr_min_rate)
            && Decimal::from(a.refunds) * Decimal::from(pa.sales)
                >= fc.rr_factor * Decimal::from(pa.refunds) * Decimal::from(a.sales)
        {
            rr.insert((partner, pidx));
        }
    }
    if !cr.is_empty() || !rr.is_empty() {
        for (k, &ci) in order.iter().enumerate() {
            f.prefetch_ahead(order, k);
            let c = &f.convs[ci as usize];
            if is_reversal(c) {
                continue;
            }
            let pidx = Period::of_ms(c.ts).index();
            if c.has_click && c.partner != NONE && cr.contains(&(c.partner, pidx)) {
                mark(masks, ci, CONVERSION_RATE);
            }
            if c.amount.is_some() && rr.contains(&(ev_partner(c), pidx)) {
                mark(masks, ci, REFUND_RATE);
            }
        }
    }

    // ---- many customers converting from one visitor
    if fc.on(SHARED_VISITOR) && !shared.is_empty() {
        shared.sort_unstable();
        let n = fc.sv_customers as usize;
        let w = fc.sv_ms;
        let mut inside: FxHashMap<u32, u32> = FxHashMap::default();
        let mut g = 0;
        while g < shared.len() {
            let v = shared[g].0;
            let end = g + shared[g..].partition_point(|x| x.0 == v);
            if end - g >= n {
                inside.clear();
                let (mut lo, mut hi) = (g, g);
                for j in g..end {
                    let t = shared[j].1;
                    let upper = (t + w).min(period_end(t) - 1);
                    while hi < end && shared[hi].1 <= upper {
                        *inside.entry(shared[hi].3).or_insert(0) += 1;
                        hi += 1;
                    }
                    while shared[lo].1 < t - w {
                        let e = inside.get_mut(&shared[lo].3).expect("counted");
                        *e -= 1;
                        if *e == 0 {
                            inside.remove(&shared[lo].3);
                        }
                        lo += 1;
                    }
                    if inside.len() >= n {
                        mark(masks, shared[j].2, SHARED_VISITOR);
                    }
                }
            }
            g = end;
        }
    }
}

// ---------------------------------------------------------------- operators' decisions

/// An operator's decision on a held (or rule-rejected) conversion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    pub release: bool,
    /// The decision's number (`reviews.seq`, in the order decided).
    pub seq: i64,
    /// A decision that restates the closed periods (through the views, as
    /// late facts do) when made after their last draft: a release of an
    /// entry a rule rejected, or a reject of a held one (its lifetime lock,
    /// its place on a ladder). Releases of held entries are paid, and held
    /// entries rejected are reversed, apart from the views.
    pub restates: bool,
    pub by: String,
    pub why: String,
}

impl Review {
    pub fn word(&self) -> &'static str {
        if self.release {
            "released"
        } else {
            "rejected"
        }
    }
}

/// Every decision, keyed by the conversion's event id.
pub fn load_reviews(store: &Store) -> Result<FxHashMap<String, Review>> {
    let mut st = store
        .conn
        .prepare("SELECT event, decision, decided_by, reason, seq, restates FROM reviews")?;
    let mut rows = st.query([])?;
    let mut m = FxHashMap::default();
    while let Some(r) = rows.next()? {
        let d: String = r.get(1)?;
        m.insert(
            r.get(0)?,
            Review {
                release: d == "release",
                by: r.get(2)?,
                why: r.get(3)?,
                seq: r.get(4)?,
                restates: r.get::<_, i64>(5)? != 0,
            },
        );
    }
    Ok(m)
}

/// The conversion event an entry's review decides: the first source, or
/// for a clawback the sale it reverses.
pub fn review_event(kind: &str, sources: &str) -> String {
    let mut it = sources.split_whitespace();
    let first = it.next().unwrap_or("");
    if kind == "clawback" {
        it.next().unwrap_or(first).to_string()
    } else {
        first.to_string()
    }
}

/// `settlement review release|reject ENTRY_ID --by WHO --reason WHY`.
/// Decisions are final and rerun-safe: the same decision again changes
/// nothing; a different one is refused.
pub fn decide_entry(
    store: &mut Store,
    entry: &str,
    release: bool,
    by: &str,
    why: &str,
) -> Result<String> {
    if by.trim().is_empty() || why.trim().is_empty() {
        return Err(Error::Usage(
            "a decision needs --by WHO and --reason WHY".into(),
        ));
    }
    let row: Option<(String, String, String, i64)> =
        match crate::ledger_blocks::find(&store.conn, entry)? {
            None => None,
            Some((b, r)) => {
                use crate::ledger_blocks::{period_of, text, L_KIND, L_REASON, L_SOURCES};
                Some((
                    text(&b, L_KIND, r)?.to_string(),
                    text(&b, L_REASON, r)?.to_string(),
                    text(&b, L_SOURCES, r)?.to_string(),
                    period_of(b.first),
                ))
            }
        };
    let Some((kind, reason, sources, period)) = row else {
        return Err(Error::Usage(format!(
            "no ledger entry has the id {entry:?}"
        )));
    };
    let held = reason.starts_with("held:fraud:");
    let rule_rejected = kind == "rejected" && reason.starts_with("fraud:");
    let decidable = held || (release && rule_rejected);
    if !decidable {
        return Err(Error::Usage(format!(
            "entry {entry} is not held for review ({kind}{}): only held entries{} can be decided",
            if reason.is_empty() {
                String::new()
            } else {
                format!(", {reason}")
            },
            if release {
                " and entries rejected by a fraud rule"
            } else {
                ""
            }
        )));
    }
    let event = review_event(&kind, &sources);
    let word = if release { "release" } else { "reject" };
    let existing: Option<(String, String, String)> = {
        use rusqlite::OptionalExtension;
        store
            .conn
            .query_row(
                "SELECT decision, decided_by, reason FROM reviews WHERE event = ?1",
                [&event],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
    };
    let p = Period::from_key(period);
    let past = |d: &str| {
        if d == "release" {
            "released"
        } else {
            "rejected"
        }
    };
    if let Some((d, b, w)) = existing {
        if d == word {
            return Ok(format!(
                "{entry} (event {event}): already {} by {b}: {w}; nothing changed",
                past(&d)
            ));
        }
        return Err(Error::Usage(format!(
            "event {event} was already {} by {b} ({w}): decisions are final",
            past(&d)
        )));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let tx = store
        .conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM reviews", [], |r| {
        r.get(0)
    })?;
    tx.execute(
        "INSERT INTO reviews (event, entry, decision, decided_by, reason, decided_at, seq, restates)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        rusqlite::params![
            event,
            entry,
            word,
            by,
            why,
            edge::time::Timestamp(now).to_string(),
            seq,
            i64::from(if release { !held && rule_rejected } else { held })
        ],
    )?;
    tx.commit()?;
    let state = store.period_state(p)?.map_or("draft".into(), |s| s.0);
    let next = if state == "closed" {
        if release && rule_rejected {
            "the next run of the first open period restates the closed periods with it (its commission and what it changes for the partner's other entries) as adjustments".to_string()
        } else if release {
            "payable from the next run of the first open period".to_string()
        } else {
            "reversed by an adjustment in the next run of the first open period, with what it changes for the partner's other entries (a lifetime lock, a ladder)".to_string()
        }
    } else {
        format!("applies when {p} is run again")
    };
    Ok(format!(
        "{entry} (event {event}, {p}): {} by {by}: {why}; {next}",
        past(word)
    ))
}

/// `settlement review list [--all]`: held entries awaiting a decision (all
/// held and rule-rejected entries with their decisions, with `--all`).
pub fn list(store: &Store, all: bool) -> Result<String> {
    let reviews = load_reviews(store)?;
    let mut st = store.conn.prepare(
        "SELECT l.id, l.period, l.partner, l.program, l.kind, l.amount, l.currency, l.sources, l.reason,
                COALESCE(f.score, ''), COALESCE(f.reasons, '')
         FROM ledger l LEFT JOIN fraud f ON f.entry = l.id AND f.period = l.period
         WHERE l.reason LIKE 'held:fraud:%'
         UNION ALL
         SELECT l.id, l.period, l.partner, l.program, l.kind, l.amount, l.currency, l.sources, l.reason,
                COALESCE(f.score, ''), COALESCE(f.reasons, '')
         FROM ledger l LEFT JOIN fraud f ON f.entry = l.id AND f.period = l.period
         WHERE l.reason LIKE 'fraud:%' AND l.kind = 'rejected'
         ORDER BY 2, 3, 1",
    )?;
    let mut rows = st.query([])?;
    let mut o = String::from(
        "entry\tperiod\tpartner\tprogram\tkind\tamount\tcurrency\tevent\tscore\treasons\tstatus\n",
    );
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let (id, period, partner, program, kind): (String, i64, String, String, String) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
        let (amount, cur, sources, reason): (String, String, String, String) =
            (r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?);
        let score: String = r.get::<_, rusqlite::types::Value>(9).map(|v| match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(t) => t,
            _ => String::new(),
        })?;
        let why: String = r.get(10)?;
        let event = review_event(&kind, &sources);
        let held = reason.starts_with("held:");
        let status = match reviews.get(&event) {
            Some(rv) => format!("{} by {}: {}", rv.word(), rv.by, rv.why),
            None if held => "held".to_string(),
            None => "rejected by rule".to_string(),
        };
        let awaiting = held && !reviews.contains_key(&event);
        if !(all || awaiting) {
            continue;
        }
        let reasons = if why.is_empty() {
            reason
                .trim_start_matches("held:")
                .trim_start_matches("fraud:")
                .to_string()
        } else {
            why
        };
        let _ = writeln!(
            o,
            "{id}\t{}\t{partner}\t{program}\t{kind}\t{amount}\t{cur}\t{event}\t{score}\t{reasons}\t{status}",
            Period::from_key(period)
        );
        n += 1;
    }
    if n == 0 {
        o.push_str(if all {
            "(no held or fraud-rejected entries)\n"
        } else {
            "(nothing awaits a decision)\n"
        });
    }
    Ok(o)
}

// ---------------------------------------------------------------- report

pub const CSV_COLUMNS: [&str; 10] = [
    "entry", "partner", "program", "event", "score", "reasons", "action", "decision", "by", "why",
];

/// The period's flagged conversions, as `fraud.csv` rows.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub rows: Vec<Vec<String>>,
    /// Decisions on entries of earlier periods that this period's draft
    /// took in (decided after the draft before it): entry, event,
    /// decision, by, why, when.
    pub earlier: Vec<[String; 6]>,
}

pub fn load(store: &Store, p: Period) -> Result<Summary> {
    let mut st = store.conn.prepare(
        "SELECT entry, partner, program, event, score, reasons, action, decision, decided_by, why
         FROM fraud WHERE period = ?1 ORDER BY pos",
    )?;
    let mut rows = st.query([p.key()])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut row = Vec::with_capacity(10);
        for i in 0..10 {
            if i == 4 {
                row.push(r.get::<_, i64>(i)?.to_string());
            } else {
                row.push(r.get(i)?);
            }
        }
        out.push(row);
    }
    // the decisions the period before's draft had not seen, up to the
    // last this one saw: stable once the period is closed
    let before: i64 = store
        .conn
        .query_row(
            "SELECT review_seq FROM periods WHERE period < ?1 ORDER BY period DESC LIMIT 1",
            [p.key()],
            |r| r.get::<_, Option<i64>>(0),
        )
        .optional()?
        .flatten()
        .unwrap_or(0);
    let upto = store.review_seq(p)?;
    // only entries of earlier periods, and this period's late adjustments
    // (held for an earlier period's sale: fraud.csv has no row for them):
    // a decision on this period's other entries is in its fraud rows, one
    // on a later period's is that period's own (nightly reruns an open
    // period while the next one is drafted); a store's first period has
    // none before it (migration 12 gave older decisions no window: they
    // are listed nowhere). `ledger` keeps held entries as rows: a released
    // one is found in the period's blocks
    type Decided = ([String; 6], Option<i64>, bool);
    let mut decided: Vec<Decided> = Vec::new();
    let mut st = store.conn.prepare(
        "SELECT x.entry, x.event, x.decision, x.decided_by, x.reason, x.decided_at, x.booked_in,
                EXISTS (SELECT 1 FROM fraud f WHERE f.period = ?3 AND f.entry = x.entry)
         FROM (SELECT r.*, (SELECT l.period FROM ledger l WHERE l.id = r.entry
                            ORDER BY l.pos DESC LIMIT 1) AS booked_in
               FROM reviews r WHERE r.seq > ?1 AND r.seq <= ?2) x
         ORDER BY x.seq",
    )?;
    let mut rows = st.query([before, upto, p.key()])?;
    while let Some(r) = rows.next()? {
        decided.push((
            [
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ],
            r.get(6)?,
            r.get(7)?,
        ));
    }
    // entries no row dates: are they this period's?
    let unknown: FxHashSet<&str> = decided
        .iter()
        .filter(|(_, booked, in_rows)| booked.is_none() && !in_rows)
        .map(|(d, _, _)| d[0].as_str())
        .collect();
    let mut here: FxHashSet<String> = FxHashSet::default();
    if !unknown.is_empty() {
        use crate::ledger_blocks::{self as lb, L_ID};
        let from = p.key() * 10_000_000_000;
        lb::scan(
            &store.conn,
            from,
            from + 10_000_000_000,
            crate::events::Cols::of(&[], &[L_ID]),
            |b| {
                for r in 0..b.rows() {
                    let id = lb::text(b, L_ID, r)?;
                    if unknown.contains(id) {
                        here.insert(id.to_string());
                    }
                }
                Ok(())
            },
        )?;
    }
    let earlier: Vec<[String; 6]> = decided
        .iter()
        .filter(|(d, booked, in_rows)| match booked {
            Some(k) => *k < p.key() || (*k == p.key() && !in_rows),
            None => !in_rows && here.contains(&d[0]),
        })
        .map(|(d, _, _)| d.clone())
        .collect();
    Ok(Summary { rows: out, earlier })
}

pub fn write_csv(path: &Path, s: &Summary) -> Result<()> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    w.write_record(CSV_COLUMNS).expect("in-memory csv");
    for r in &s.rows {
        // event, reasons, by, why
        w.write_record(crate::cell::defuse_columns(
            r.iter().map(|c| c.as_bytes()),
            &[3, 5, 8, 9],
        ))
        .expect("in-memory csv");
    }
    crate::report::write_atomic(path, &w.into_inner().expect("in-memory csv"))
}

/// The decisions on earlier periods' entries a period's draft took in: a
/// release of a held entry makes it payable here without a new entry, so
/// the page says which.
fn earlier_decisions_html(o: &mut String, earlier: &[[String; 6]]) {
    if earlier.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "<h2>Decisions on earlier periods' entries ({})</h2>\n<p class=\"note\">Taken in by this period, on entries of earlier periods and on this period's late adjustments for earlier periods' sales: a released held entry stands as booked and is no longer pending (no new entry); a rejected one is reversed by an adjustment; a released rejection is booked as an adjustment (<code>settlement explain ENTRY</code>).</p>",
        earlier.len()
    );
    o.push_str("<table><thead><tr><th>entry</th><th>event</th><th>decision</th><th>by</th><th>reason</th><th>decided at</th></tr></thead><tbody>\n");
    for r in earlier.iter().take(200) {
        o.push_str("<tr>");
        for c in r {
            let _ = write!(o, "<td>{}</td>", esc(c));
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody></table>\n");
    if earlier.len() > 200 {
        let _ = writeln!(
            o,
            "<p class=\"note\">… and {} more (settlement review list --all).</p>",
            earlier.len() - 200
        );
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The fraud section of report.html: counts by action and by rule, then
/// the held entries awaiting a decision.
pub fn html_section(o: &mut String, s: &Summary) {
    earlier_decisions_html(o, &s.earlier);
    if s.rows.is_empty() {
        return;
    }
    o.push_str("<h2>Fraud</h2>\n");
    let mut by_action: std::collections::BTreeMap<(String, String), u64> = Default::default();
    let mut by_rule: std::collections::BTreeMap<String, u64> = Default::default();
    for r in &s.rows {
        let d = if r[7].is_empty() {
            "-".to_string()
        } else {
            r[7].clone()
        };
        *by_action.entry((r[6].clone(), d)).or_default() += 1;
        for reason in r[5].split_whitespace() {
            *by_rule.entry(reason.to_string()).or_default() += 1;
        }
    }
    let _ = writeln!(
        o,
        "<p class=\"note\">{} flagged conversions. Held commissions are pending until an operator decides (<code>settlement review</code>); every one is in fraud.csv.</p>",
        s.rows.len()
    );
    o.push_str("<table><thead><tr><th>action</th><th>decision</th><th>conversions</th></tr></thead><tbody>\n");
    for ((a, d), n) in &by_action {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{n}</td></tr>",
            esc(a),
            esc(d)
        );
    }
    o.push_str("</tbody></table>\n");
    o.push_str("<table><thead><tr><th>rule</th><th>conversions</th></tr></thead><tbody>\n");
    for (rule, n) in &by_rule {
        let _ = writeln!(o, "<tr><td>{}</td><td class=\"n\">{n}</td></tr>", esc(rule));
    }
    o.push_str("</tbody></table>\n");
    let pending: Vec<&Vec<String>> = s.rows.iter().filter(|r| r[7] == "pending").collect();
    if !pending.is_empty() {
        let _ = writeln!(o, "<h2>Awaiting review ({})</h2>", pending.len());
        o.push_str("<table><thead><tr><th>entry</th><th>partner</th><th>program</th><th>event</th><th>score</th><th>reasons</th></tr></thead><tbody>\n");
        for r in pending.iter().take(200) {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                esc(&r[0]),
                esc(&r[1]),
                esc(&r[2]),
                esc(&r[3]),
                esc(&r[4]),
                esc(&r[5])
            );
        }
        o.push_str("</tbody></table>\n");
        if pending.len() > 200 {
            let _ = writeln!(
                o,
                "<p class=\"note\">… and {} more in fraud.csv.</p>",
                pending.len() - 200
            );
        }
    }
}
