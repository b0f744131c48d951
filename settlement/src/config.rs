//! `programs.toml` (SPEC section 5), its `fx.csv`, and the nightly
//! `settlement.toml`. Every error names the file, the line and the key.

use crate::error::{ConfigError, Error, Result};
use crate::money::parse_decimal;
use edge::currency::Currency;
use rust_decimal::Decimal;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

// ---------------------------------------------------------------- raw form

/// A decimal written as a TOML string (`"12.50"`) or integer; never a float.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dec(pub Decimal);

impl<'de> Deserialize<'de> for Dec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Dec, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a decimal string such as \"12.50\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Dec, E> {
                parse_decimal(s)
                    .map(Dec)
                    .ok_or_else(|| E::custom(format!("{s:?} is not a decimal number")))
            }
            fn visit_i64<E: de::Error>(self, i: i64) -> std::result::Result<Dec, E> {
                Ok(Dec(Decimal::from(i)))
            }
            fn visit_f64<E: de::Error>(self, x: f64) -> std::result::Result<Dec, E> {
                Err(E::custom(format!(
                    "write decimals as strings, e.g. \"{x}\": a float is not exact"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    currency: Option<Spanned<String>>,
    fx: Option<Spanned<String>>,
    rounding: Option<Spanned<String>>,
    payout: Option<RawPayout>,
    #[serde(default)]
    programs: Vec<Spanned<RawProgram>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayout {
    hold_days: Option<Spanned<i64>>,
    minimum: Option<Spanned<Dec>>,
    /// The operator's account for SEPA transfers (payouts.sepa.xml).
    sepa: Option<Spanned<crate::payout_files::RawSepa>>,
    /// Partners' payout details (IBAN, BIC, PayPal email, legal name).
    #[serde(default)]
    partners: Vec<Spanned<crate::payout_files::RawPayee>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProgram {
    id: Spanned<String>,
    model: Spanned<String>,
    currency: Option<Spanned<String>>,
    window_days: Option<Spanned<i64>>,
    deal_days: Option<Spanned<i64>>,
    lifetime: Option<bool>,
    negative_carryover: Option<bool>,
    overrides: Option<Vec<Spanned<Dec>>>,
    minimum_per_period: Option<Spanned<Dec>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
    fraud: Option<crate::fraud::RawFraud>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Option<Spanned<String>>,
    event: Option<Spanned<String>>,
    tier: Option<String>,
    country: Option<String>,
    instrument: Option<String>,
    coupon: Option<String>,
    min_amount: Option<Spanned<Dec>>,
    months: Option<Spanned<i64>>,
    first_only: Option<bool>,
    fixed: Option<Spanned<Dec>>,
    percent: Option<Spanned<Dec>>,
    per_lot: Option<Spanned<Dec>>,
    discount: Option<Spanned<Dec>>,
    ladder: Option<Spanned<RawLadder>>,
    cap: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLadder {
    metric: Spanned<String>,
    mode: Spanned<String>,
    steps: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    from: Spanned<Dec>,
    fixed: Option<Spanned<Dec>>,
    percent: Option<Spanned<Dec>>,
    per_lot: Option<Spanned<Dec>>,
}

// ---------------------------------------------------------------- checked form

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Model {
    Affiliate,
    Referral,
    Reseller,
    Technology,
}

impl Model {
    pub fn as_str(self) -> &'static str {
        match self {
            Model::Affiliate => "affiliate",
            Model::Referral => "referral",
            Model::Reseller => "reseller",
            Model::Technology => "technology",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Count,
    Amount,
    Lots,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Marginal,
    Retroactive,
}

/// A base of a ladder step, or of a rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StepBase {
    Fixed(Decimal),
    Percent(Decimal),
    PerLot(Decimal),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub from: Decimal,
    pub base: StepBase,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ladder {
    pub metric: Metric,
    pub mode: Mode,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Base {
    Simple(StepBase),
    /// Reseller: the partner owes `amount x (1 - discount%)`.
    Discount(Decimal),
    Ladder(Ladder),
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub id: String,
    pub event: String,
    pub tier: Option<String>,
    pub country: Option<String>,
    pub instrument: Option<String>,
    pub coupon: Option<String>,
    pub min_amount: Option<Decimal>,
    pub months: Option<u32>,
    pub first_only: bool,
    pub base: Base,
    pub cap: Option<u64>,
    /// Match keys besides `event`.
    pub specificity: u32,
    /// The rule as written, for `explain`.
    pub description: String,
}

#[derive(Clone, Debug)]
pub struct Program {
    pub id: String,
    pub model: Model,
    pub currency: Currency,
    pub window_days: i64,
    pub deal_days: i64,
    pub lifetime: bool,
    pub negative_carryover: bool,
    pub overrides: Vec<Decimal>,
    pub minimum_per_period: Option<Decimal>,
    pub rules: Vec<Rule>,
    /// `[programs.fraud]`: the fraud rules, when the table is present.
    pub fraud: Option<crate::fraud::FraudConfig>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub currency: Currency,
    pub fx: Option<Fx>,
    pub hold_days: i64,
    pub minimum: Decimal,
    pub programs: Vec<Program>,
    /// `[payout.sepa]` and `[[payout.partners]]`: for the payout files.
    pub payout_details: crate::payout_files::PayoutDetails,
}

impl Config {
    pub fn program(&self, id: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.id == id)
    }
}

pub const DEFAULT_WINDOW_DAYS: i64 = 30;
pub const DEFAULT_DEAL_DAYS: i64 = 90;

// ---------------------------------------------------------------- errors

/// Maps byte offsets to lines, and finds the key written on a line.
pub(crate) struct Src<'a> {
    file: String,
    text: &'a str,
}

impl<'a> Src<'a> {
    pub(crate) fn new(file: String, text: &'a str) -> Src<'a> {
        Src { file, text }
    }

    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    pub(crate) fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> Error {
        Error::Config(ConfigError {
            file: self.file.clone(),
            line: self.line(span.start),
            key: key.to_string(),
            message: message.into(),
        })
    }

    /// The key of a TOML line (`percent = ...` -> `percent`, `[payout]` -> `payout`).
    fn key_at(&self, offset: usize) -> String {
        let start = self.text[..offset.min(self.text.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next().unwrap_or("");
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            return h.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
        // the key nearest before the offset on this line
        let upto = &self.text[start..offset.min(self.text.len()).max(start)];
        let seg = upto.rfind('=').map(|i| &upto[..i]).unwrap_or(t);
        let seg = seg.rsplit([',', '{', '[']).next().unwrap_or(seg);
        seg.trim().trim_matches('"').to_string()
    }

    pub(crate) fn toml_err(&self, e: toml::de::Error) -> Error {
        let span = e.span().unwrap_or(0..0);
        let msg = e.message().trim().to_string();
        let key = if let Some(rest) = msg.strip_prefix("unknown field `") {
            rest.split('`').next().unwrap_or("").to_string()
        } else {
            self.key_at(span.start)
        };
        self.err(span, &key, msg)
    }
}

pub(crate) fn valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

// ---------------------------------------------------------------- loading

pub fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Usage(format!(
            "{}: cannot read the programs file: {e}",
            path.display()
        ))
    })?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<Config> {
    let src = Src {
        file: path.display().to_string(),
        text,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| src.toml_err(e))?;

    let currency = |s: &Spanned<String>, key: &str| -> Result<Currency> {
        Currency::parse(s.get_ref())
            .ok_or_else(|| src.err(s.span(), key, format!("unknown currency {:?}", s.get_ref())))
    };
    let top_currency = match &raw.currency {
        Some(c) => Some(currency(c, "currency")?),
        None => None,
    };
    if let Some(r) = &raw.rounding {
        if r.get_ref() != "half_even" {
            return Err(src.err(r.span(), "rounding", "the only rounding is \"half_even\""));
        }
    }
    let (mut hold_days, mut minimum) = (0, Decimal::ZERO);
    let mut payout_details = crate::payout_files::PayoutDetails::default();
    if let Some(p) = &raw.payout {
        payout_details = crate::payout_files::check(&src, p.sepa.as_ref(), &p.partners)?;
        if let Some(h) = &p.hold_days {
            if *h.get_ref() < 0 || *h.get_ref() > 3660 {
                return Err(src.err(h.span(), "hold_days", "must be between 0 and 3660 days"));
            }
            hold_days = *h.get_ref();
        }
        if let Some(m) = &p.minimum {
            if m.get_ref().0.is_sign_negative() {
                return Err(src.err(m.span(), "minimum", "must not be negative"));
            }
            // an amount of the top-level currency: no finer than its minor unit
            if let Some(c) = top_currency {
                if m.get_ref().0.normalize().scale() > c.minor_units() {
                    return Err(src.err(
                        m.span(),
                        "minimum",
                        format!(
                            "{} has more decimals than {c} has ({})",
                            m.get_ref().0,
                            c.minor_units()
                        ),
                    ));
                }
            }
            minimum = m.get_ref().0;
        }
    }
    if raw.programs.is_empty() {
        return Err(src.err(0..0, "programs", "no [[programs]] defined"));
    }

    let mut programs: Vec<Program> = Vec::new();
    for sp in &raw.programs {
        let rp = sp.get_ref();
        let id = rp.id.get_ref().clone();
        if !valid_id(&id) {
            return Err(src.err(rp.id.span(), "id", "a program id is [A-Za-z0-9_-]{1,64}"));
        }
        if programs.iter().any(|p| p.id == id) {
            return Err(src.err(
                rp.id.span(),
                "id",
                format!("program {id:?} is defined twice"),
            ));
        }
        let model = match rp.model.get_ref().as_str() {
            "affiliate" => Model::Affiliate,
            "referral" => Model::Referral,
            "reseller" => Model::Reseller,
            "technology" => Model::Technology,
            other => {
                return Err(src.err(
                    rp.model.span(),
                    "model",
                    format!("unknown model {other:?}: affiliate, referral, reseller or technology"),
                ))
            }
        };
        let pcur = match &rp.currency {
            Some(c) => currency(c, "currency")?,
            None => top_currency.ok_or_else(|| {
                src.err(
                    sp.span(),
                    "currency",
                    format!("program {id:?} has no currency and there is no top-level currency"),
                )
            })?,
        };
        let days = |v: &Option<Spanned<i64>>, key: &str, default: i64| -> Result<i64> {
            match v {
                None => Ok(default),
                Some(s) if *s.get_ref() < 0 || *s.get_ref() > 36_600 => {
                    Err(src.err(s.span(), key, "must be between 0 and 36600 days"))
                }
                Some(s) => Ok(*s.get_ref()),
            }
        };
        let window_days = days(&rp.window_days, "window_days", DEFAULT_WINDOW_DAYS)?;
        let deal_days = days(&rp.deal_days, "deal_days", DEFAULT_DEAL_DAYS)?;
        let mut overrides = Vec::new();
        for o in rp.overrides.iter().flatten() {
            overrides.push(check_percent(&src, o, "overrides")?);
        }
        let minimum_per_period = match &rp.minimum_per_period {
            Some(m) if m.get_ref().0.is_sign_negative() => {
                return Err(src.err(m.span(), "minimum_per_period", "must not be negative"))
            }
            Some(m) => Some(m.get_ref().0),
            None => None,
        };
        let mut rules = Vec::new();
        for (i, rr) in rp.rules.iter().enumerate() {
            rules.push(check_rule(&src, &id, model, i, rr)?);
        }
        let mut seen = std::collections::HashSet::new();
        for (r, rr) in rules.iter().zip(&rp.rules) {
            if !seen.insert(r.id.clone()) {
                let span = rr.get_ref().id.as_ref().map_or(rr.span(), |s| s.span());
                return Err(src.err(span, "id", format!("rule id {:?} is used twice", r.id)));
            }
        }
        let fraud = match &rp.fraud {
            Some(raw) => Some(crate::fraud::check(&src, raw, window_days)?),
            None => None,
        };
        programs.push(Program {
            fraud,
            id,
            model,
            currency: pcur,
            window_days,
            deal_days,
            lifetime: rp.lifetime.unwrap_or(false),
            negative_carryover: rp.negative_carryover.unwrap_or(false),
            overrides,
            minimum_per_period,
            rules,
        });
    }

    let base = top_currency.unwrap_or(programs[0].currency);
    let fx = match &raw.fx {
        None => None,
        Some(f) => {
            let dir = path.parent().unwrap_or(Path::new("."));
            let fpath = dir.join(f.get_ref());
            let text = std::fs::read_to_string(&fpath).map_err(|e| {
                src.err(
                    f.span(),
                    "fx",
                    format!("cannot read {}: {e}", fpath.display()),
                )
            })?;
            Some(Fx::parse(&fpath, &text, base)?)
        }
    };
    Ok(Config {
        path: path.to_path_buf(),
        currency: base,
        fx,
        hold_days,
        minimum,
        programs,
        payout_details,
    })
}

fn check_percent(src: &Src, v: &Spanned<Dec>, key: &str) -> Result<Decimal> {
    let d = v.get_ref().0;
    if d.is_sign_negative() && !d.is_zero() {
        return Err(src.err(v.span(), key, format!("{d} is a negative percentage")));
    }
    if d > Decimal::ONE_HUNDRED {
        return Err(src.err(v.span(), key, format!("{d} is over 100 percent")));
    }
    Ok(d)
}

fn non_negative(src: &Src, v: &Spanned<Dec>, key: &str) -> Result<Decimal> {
    let d = v.get_ref().0;
    if d.is_sign_negative() && !d.is_zero() {
        return Err(src.err(v.span(), key, format!("{d} must not be negative")));
    }
    Ok(d)
}

fn check_rule(
    src: &Src,
    program: &str,
    model: Model,
    i: usize,
    sr: &Spanned<RawRule>,
) -> Result<Rule> {
    let r = sr.get_ref();
    let event = match &r.event {
        Some(e) if e.get_ref() == "reinstate" => {
            return Err(src.err(
                e.span(),
                "event",
                "a `reinstate` cancels the refund or chargeback it names and earns nothing itself: no rule may pay it",
            ))
        }
        Some(e) if !e.get_ref().is_empty() => e.get_ref().clone(),
        Some(e) => return Err(src.err(e.span(), "event", "must not be empty")),
        None => return Err(src.err(sr.span(), "event", "a rule needs an `event`")),
    };
    let id = match &r.id {
        Some(s) if valid_id(s.get_ref()) => s.get_ref().clone(),
        Some(s) => return Err(src.err(s.span(), "id", "a rule id is [A-Za-z0-9_-]{1,64}")),
        None => format!("{program}/{}", i + 1),
    };
    let mut bases: Vec<(&str, Range<usize>, Base)> = Vec::new();
    if let Some(v) = &r.fixed {
        bases.push((
            "fixed",
            v.span(),
            Base::Simple(StepBase::Fixed(non_negative(src, v, "fixed")?)),
        ));
    }
    if let Some(v) = &r.percent {
        bases.push((
            "percent",
            v.span(),
            Base::Simple(StepBase::Percent(check_percent(src, v, "percent")?)),
        ));
    }
    if let Some(v) = &r.per_lot {
        bases.push((
            "per_lot",
            v.span(),
            Base::Simple(StepBase::PerLot(non_negative(src, v, "per_lot")?)),
        ));
    }
    if let Some(v) = &r.discount {
        let d = check_percent(src, v, "discount")?;
        if model != Model::Reseller {
            return Err(src.err(v.span(), "discount", "`discount` is for reseller programs"));
        }
        bases.push(("discount", v.span(), Base::Discount(d)));
    }
    if let Some(l) = &r.ladder {
        bases.push(("ladder", l.span(), Base::Ladder(check_ladder(src, l)?)));
    }
    let base = match bases.len() {
        1 => bases.pop().map(|b| b.2).expect("one base"),
        0 => {
            return Err(src.err(
                sr.span(),
                "event",
                "a rule needs exactly one base: fixed, percent, per_lot, discount or ladder",
            ))
        }
        _ => {
            let names: Vec<&str> = bases.iter().map(|b| b.0).collect();
            return Err(src.err(
                bases[1].1.clone(),
                bases[1].0,
                format!(
                    "a rule has exactly one base, this one has {}",
                    names.join(" and ")
                ),
            ));
        }
    };
    let months = match &r.months {
        Some(m) if *m.get_ref() < 1 || *m.get_ref() > 1200 => {
            return Err(src.err(m.span(), "months", "must be between 1 and 1200"))
        }
        Some(m) => Some(*m.get_ref() as u32),
        None => None,
    };
    let cap = match &r.cap {
        Some(c) if *c.get_ref() < 0 => {
            return Err(src.err(c.span(), "cap", "must not be negative"))
        }
        Some(c) => Some(*c.get_ref() as u64),
        None => None,
    };
    let min_amount = match &r.min_amount {
        Some(m) => Some(non_negative(src, m, "min_amount")?),
        None => None,
    };
    let first_only = r.first_only.unwrap_or(false);
    let specificity = [
        r.tier.is_some(),
        r.country.is_some(),
        r.instrument.is_some(),
        r.coupon.is_some(),
        min_amount.is_some(),
        months.is_some(),
        first_only,
    ]
    .iter()
    .filter(|&&b| b)
    .count() as u32;

    // the rule in words, keys in a fixed order
    let mut d = vec![format!("event = {event:?}")];
    for (k, v) in [
        ("tier", &r.tier),
        ("country", &r.country),
        ("instrument", &r.instrument),
        ("coupon", &r.coupon),
    ] {
        if let Some(v) = v {
            d.push(format!("{k} = {v:?}"));
        }
    }
    if let Some(m) = min_amount {
        d.push(format!("min_amount = \"{m}\""));
    }
    if let Some(m) = months {
        d.push(format!("months = {m}"));
    }
    if first_only {
        d.push("first_only = true".into());
    }
    d.push(describe_base(&base));
    if let Some(c) = cap {
        d.push(format!("cap = {c}"));
    }
    Ok(Rule {
        id,
        event,
        tier: r.tier.clone(),
        country: r.country.clone(),
        instrument: r.instrument.clone(),
        coupon: r.coupon.clone(),
        min_amount,
        months,
        first_only,
        base,
        cap,
        specificity,
        description: d.join(", "),
    })
}

pub fn describe_step_base(b: &StepBase) -> String {
    match b {
        StepBase::Fixed(x) => format!("fixed = \"{x}\""),
        StepBase::Percent(x) => format!("percent = \"{x}\""),
        StepBase::PerLot(x) => format!("per_lot = \"{x}\""),
    }
}

fn describe_base(b: &Base) -> String {
    match b {
        Base::Simple(s) => describe_step_base(s),
        Base::Discount(x) => format!("discount = \"{x}\""),
        Base::Ladder(l) => {
            let steps: Vec<String> = l
                .steps
                .iter()
                .map(|s| {
                    format!(
                        "{{ from = \"{}\", {} }}",
                        s.from,
                        describe_step_base(&s.base)
                    )
                })
                .collect();
            format!(
                "ladder = {{ metric = \"{}\", mode = \"{}\", steps = [{}] }}",
                match l.metric {
                    Metric::Count => "count",
                    Metric::Amount => "amount",
                    Metric::Lots => "lots",
                },
                match l.mode {
                    Mode::Marginal => "marginal",
                    Mode::Retroactive => "retroactive",
                },
                steps.join(", ")
            )
        }
    }
}

fn check_ladder(src: &Src, sl: &Spanned<RawLadder>) -> Result<Ladder> {
    let l = sl.get_ref();
    let metric = match l.metric.get_ref().as_str() {
        "count" => Metric::Count,
        "amount" => Metric::Amount,
        "lots" => Metric::Lots,
        other => {
            return Err(src.err(
                l.metric.span(),
                "metric",
                format!("unknown ladder metric {other:?}: count, amount or lots"),
            ))
        }
    };
    let mode = match l.mode.get_ref().as_str() {
        "marginal" => Mode::Marginal,
        "retroactive" => Mode::Retroactive,
        other => {
            return Err(src.err(
                l.mode.span(),
                "mode",
                format!("unknown ladder mode {other:?}: marginal or retroactive"),
            ))
        }
    };
    if l.steps.is_empty() {
        return Err(src.err(sl.span(), "steps", "a ladder needs at least one step"));
    }
    let mut steps: Vec<Step> = Vec::new();
    for ss in &l.steps {
        let s = ss.get_ref();
        let from = non_negative(src, &s.from, "from")?;
        if let Some(prev) = steps.last() {
            if from <= prev.from {
                return Err(src.err(
                    s.from.span(),
                    "from",
                    format!(
                        "ladder steps overlap or are unsorted: from = \"{from}\" after from = \"{}\"; each step starts above the previous one",
                        prev.from
                    ),
                ));
            }
        }
        let mut bases = Vec::new();
        if let Some(v) = &s.fixed {
            bases.push((
                "fixed",
                v.span(),
                StepBase::Fixed(non_negative(src, v, "fixed")?),
            ));
        }
        if let Some(v) = &s.percent {
            bases.push((
                "percent",
                v.span(),
                StepBase::Percent(check_percent(src, v, "percent")?),
            ));
        }
        if let Some(v) = &s.per_lot {
            bases.push((
                "per_lot",
                v.span(),
                StepBase::PerLot(non_negative(src, v, "per_lot")?),
            ));
        }
        let base = match bases.len() {
            1 => bases[0].2,
            0 => {
                return Err(src.err(
                    ss.span(),
                    "steps",
                    "a ladder step needs exactly one base: fixed, percent or per_lot",
                ))
            }
            _ => {
                return Err(src.err(
                    bases[1].1.clone(),
                    bases[1].0,
                    "a ladder step has exactly one base",
                ))
            }
        };
        steps.push(Step { from, base });
    }
    Ok(Ladder {
        metric,
        mode,
        steps,
    })
}

// ---------------------------------------------------------------- fx.csv

/// Dated rates: units of the base currency per 1 unit of a currency.
#[derive(Clone, Debug)]
pub struct Fx {
    pub path: PathBuf,
    pub base: Currency,
    /// Per currency, `(day, rate)` sorted by day.
    rates: Vec<(Currency, Vec<(i64, Decimal)>)>,
}

impl Fx {
    pub fn parse(path: &Path, text: &str, base: Currency) -> Result<Fx> {
        let file = path.display().to_string();
        let err = |line: usize, key: &str, msg: String| {
            Error::Config(ConfigError {
                file: file.clone(),
                line,
                key: key.to_string(),
                message: msg,
            })
        };
        let mut rates: Vec<(Currency, Vec<(i64, Decimal)>)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') || (line == 1 && l.starts_with("date")) {
                continue;
            }
            let cols: Vec<&str> = l.split(',').map(str::trim).collect();
            if cols.len() != 3 {
                return Err(err(line, "", "a row is date,currency,rate".into()));
            }
            let day = edge::time::Timestamp::parse_date(cols[0])
                .map_err(|_| {
                    err(
                        line,
                        "date",
                        format!("{:?} is not a YYYY-MM-DD date", cols[0]),
                    )
                })?
                .day();
            let cur = Currency::parse(cols[1])
                .ok_or_else(|| err(line, "currency", format!("unknown currency {:?}", cols[1])))?;
            let rate = parse_decimal(cols[2])
                .filter(|r| r > &Decimal::ZERO)
                .ok_or_else(|| {
                    err(
                        line,
                        "rate",
                        format!("{:?} is not a positive decimal", cols[2]),
                    )
                })?;
            if cur == base {
                return Err(err(
                    line,
                    "currency",
                    format!("{cur} is the base currency (its rate is 1)"),
                ));
            }
            let idx = match rates.iter().position(|(c, _)| *c == cur) {
                Some(i) => i,
                None => {
                    rates.push((cur, Vec::new()));
                    rates.len() - 1
                }
            };
            if rates[idx].1.iter().any(|(d, _)| *d == day) {
                return Err(err(
                    line,
                    "date",
                    format!("a second rate for {cur} on {}", cols[0]),
                ));
            }
            rates[idx].1.push((day, rate));
        }
        for (_, v) in rates.iter_mut() {
            v.sort_by_key(|(d, _)| *d);
        }
        rates.sort_by_key(|(c, _)| *c);
        Ok(Fx {
            path: path.to_path_buf(),
            base,
            rates,
        })
    }

    /// The rate of `cur` on `day`, or the last earlier one; the base is 1.
    pub fn rate(&self, cur: Currency, day: i64) -> Option<(Decimal, i64)> {
        if cur == self.base {
            return Some((Decimal::ONE, day));
        }
        let (_, v) = self.rates.iter().find(|(c, _)| *c == cur)?;
        let i = v.partition_point(|(d, _)| *d <= day);
        (i > 0).then(|| (v[i - 1].1, v[i - 1].0))
    }
}

// ---------------------------------------------------------------- settlement.toml

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNightly {
    edge: Option<String>,
    token: Option<String>,
    token_env: Option<Spanned<String>>,
    admin_token: Option<String>,
    admin_token_env: Option<Spanned<String>>,
    programs: Spanned<String>,
    out: String,
    grace_days: Option<Spanned<i64>>,
    first_period: Option<Spanned<String>>,
}

/// The nightly job's settings; paths are relative to the file.
#[derive(Clone, Debug)]
pub struct Nightly {
    pub edge: Option<String>,
    pub token: Option<String>,
    /// The edge's admin token: with `edge`, closed periods' statements and
    /// payouts are emitted as webhooks (`emit.rs`).
    pub admin_token: Option<String>,
    pub programs: PathBuf,
    pub out: PathBuf,
    pub grace_days: i64,
    /// The period a store with no closed period starts from (else the
    /// first with events).
    pub first_period: Option<crate::period::Period>,
}

pub fn load_nightly(path: &Path) -> Result<Nightly> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("{}: cannot read: {e}", path.display())))?;
    let src = Src {
        file: path.display().to_string(),
        text: &text,
    };
    let raw: RawNightly = toml::from_str(&text).map_err(|e| src.toml_err(e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let token = match (&raw.token, &raw.token_env) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(env)) => Some(std::env::var(env.get_ref()).map_err(|_| {
            src.err(
                env.span(),
                "token_env",
                format!("environment variable {} is not set", env.get_ref()),
            )
        })?),
        (None, None) => None,
    };
    let admin_token = match (&raw.admin_token, &raw.admin_token_env) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(env)) => Some(std::env::var(env.get_ref()).map_err(|_| {
            src.err(
                env.span(),
                "admin_token_env",
                format!("environment variable {} is not set", env.get_ref()),
            )
        })?),
        (None, None) => None,
    };
    if raw.edge.is_none() && admin_token.is_some() {
        return Err(src.err(0..0, "admin_token", "`admin_token` needs `edge`"));
    }
    if raw.edge.is_some() && token.is_none() {
        return Err(src.err(0..0, "token", "`edge` needs `token` or `token_env`"));
    }
    let grace_days = match &raw.grace_days {
        Some(g) if *g.get_ref() < 0 || *g.get_ref() > 365 => {
            return Err(src.err(g.span(), "grace_days", "must be between 0 and 365"))
        }
        Some(g) => *g.get_ref(),
        None => 3,
    };
    let first_period = match &raw.first_period {
        None => None,
        Some(f) => Some(crate::period::Period::parse(f.get_ref()).ok_or_else(|| {
            src.err(
                f.span(),
                "first_period",
                format!("{:?} is not a YYYY-MM period", f.get_ref()),
            )
        })?),
    };
    Ok(Nightly {
        edge: raw.edge,
        token,
        admin_token,
        programs: dir.join(raw.programs.get_ref()),
        out: dir.join(&raw.out),
        grace_days,
        first_period,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(text: &str) -> ConfigError {
        match parse(Path::new("programs.toml"), text) {
            Err(Error::Config(e)) => e,
            Err(e) => panic!("not a config error: {e}"),
            Ok(_) => panic!("accepted:\n{text}"),
        }
    }

    const HEAD: &str = "currency = \"USD\"\n[[programs]]\nid = \"p\"\nmodel = \"affiliate\"\n";

    #[test]
    fn spec_example_parses() {
        let text = r#"
currency = "USD"
rounding = "half_even"

[payout]
hold_days = 30
minimum = "50.00"

[[programs]]
id = "saas-aff"
model = "affiliate"
window_days = 60
lifetime = true
negative_carryover = false
overrides = ["10", "5"]

  [[programs.rules]]
  event = "signup"
  fixed = "5.00"
  cap = 1000

  [[programs.rules]]
  event = "sale"
  percent = "20"
  months = 12

  [[programs.rules]]
  event = "sale"
  tier = "gold"
  months = 12
  percent = "30"

  [[programs.rules]]
  event = "trade"
  ladder = { metric = "lots", mode = "marginal", steps = [
    { from = "0", per_lot = "8.00" }, { from = "500", per_lot = "10.00" } ] }
"#;
        let c = parse(Path::new("programs.toml"), text).unwrap();
        assert_eq!(c.hold_days, 30);
        let p = &c.programs[0];
        assert_eq!(p.rules.len(), 4);
        assert_eq!(p.rules[2].specificity, 2);
        assert_eq!(p.rules[0].id, "saas-aff/1");
        assert!(matches!(p.rules[3].base, Base::Ladder(_)));
        assert_eq!(p.overrides.len(), 2);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = err_of(&format!("{HEAD}colour = \"red\"\n"));
        assert_eq!((e.line, e.key.as_str()), (5, "colour"), "{e}");
    }

    #[test]
    fn two_bases_and_none() {
        let e = err_of(&format!(
            "{HEAD}[[programs.rules]]\nevent = \"sale\"\nfixed = \"1\"\npercent = \"2\"\n"
        ));
        assert_eq!((e.line, e.key.as_str()), (8, "percent"), "{e}");
        let e = err_of(&format!("{HEAD}[[programs.rules]]\nevent = \"sale\"\n"));
        assert_eq!(e.line, 5, "{e}");
        assert!(e.message.contains("exactly one base"), "{e}");
    }

    #[test]
    fn no_rule_pays_a_reinstatement() {
        let e = err_of(&format!(
            "{HEAD}[[programs.rules]]\nevent = \"reinstate\"\nfixed = \"1\"\n"
        ));
        assert_eq!((e.line, e.key.as_str()), (6, "event"), "{e}");
        assert!(e.message.contains("earns nothing itself"), "{e}");
    }

    #[test]
    fn percentages_bounded() {
        let e = err_of(&format!(
            "{HEAD}[[programs.rules]]\nevent = \"sale\"\npercent = \"-1\"\n"
        ));
        assert_eq!((e.line, e.key.as_str()), (7, "percent"), "{e}");
        let e = err_of(&format!(
            "{HEAD}[[programs.rules]]\nevent = \"sale\"\npercent = \"100.5\"\n"
        ));
        assert!(e.message.contains("over 100"), "{e}");
        let e = err_of(&format!("{HEAD}overrides = [\"10\", \"101\"]\n"));
        assert_eq!((e.line, e.key.as_str()), (5, "overrides"), "{e}");
    }

    #[test]
    fn floats_refused() {
        let e = err_of(&format!(
            "{HEAD}[[programs.rules]]\nevent = \"sale\"\npercent = 20.5\n"
        ));
        assert_eq!((e.line, e.key.as_str()), (7, "percent"), "{e}");
    }

    #[test]
    fn ladder_steps_sorted() {
        let e = err_of(&format!(
            "{HEAD}[[programs.rules]]\nevent = \"trade\"\nladder = {{ metric = \"lots\", mode = \"marginal\", steps = [\n {{ from = \"10\", per_lot = \"1\" }},\n {{ from = \"10\", per_lot = \"2\" }} ] }}\n"
        ));
        assert_eq!((e.line, e.key.as_str()), (9, "from"), "{e}");
        let e = err_of(&format!(
            "{HEAD}[[programs.rules]]\nevent = \"trade\"\nladder = {{ metric = \"volume\", mode = \"marginal\", steps = [{{ from = \"0\", per_lot = \"1\" }}] }}\n"
        ));
        assert_eq!(e.key, "metric", "{e}");
    }

    #[test]
    fn unknown_currency() {
        let e = err_of("currency = \"ZZZ\"\n");
        assert_eq!((e.line, e.key.as_str()), (1, "currency"), "{e}");
        let e = err_of(&format!("{HEAD}currency = \"XYZ\"\n"));
        assert_eq!((e.line, e.key.as_str()), (5, "currency"), "{e}");
    }

    #[test]
    fn missing_fx_file_is_a_config_error() {
        let e = err_of(&format!("fx = \"nope.csv\"\n{HEAD}"));
        assert_eq!((e.line, e.key.as_str()), (1, "fx"), "{e}");
    }

    #[test]
    fn fx_lookup_uses_last_earlier_date() {
        let usd = Currency::parse("USD").unwrap();
        let eur = Currency::parse("EUR").unwrap();
        let fx = Fx::parse(
            Path::new("fx.csv"),
            "date,currency,rate\n2026-11-01,EUR,1.10\n2026-11-05,EUR,1.20\n",
            usd,
        )
        .unwrap();
        let d = |s| edge::time::Timestamp::parse_date(s).unwrap().day();
        assert_eq!(fx.rate(eur, d("2026-11-03")).unwrap().0.to_string(), "1.10");
        assert_eq!(fx.rate(eur, d("2026-11-05")).unwrap().0.to_string(), "1.20");
        assert!(fx.rate(eur, d("2026-10-31")).is_none());
        let e = Fx::parse(Path::new("fx.csv"), "2026-11-01,EUR,abc\n", usd).unwrap_err();
        assert!(e.to_string().starts_with("fx.csv:1: key `rate`"), "{e}");
    }
}
