//! `settlement run` and `settlement close`: recompute a period's draft from
//! all facts and replace it atomically; freeze it.

use crate::batch;
use crate::config::{describe_step_base, Base, Config, Metric, Mode, StepBase};
use crate::engine::{
    self, hash_parts, hex_id, hex_id_in, Calc, Engine, Method, Options, Output, REntry, RInvoice,
};
use crate::error::{Error, Result};
use crate::events::{Block, Cols};
use crate::facts::{Facts, NONE};
use crate::ledger::{Entry, EntryKind, InvoiceLine, Rejection};
use crate::money::{fmt_decimal, plain, Amount, Exact, Input, Plain};
use crate::period::{date_of_day, Period, DAY_MS};
use crate::statement::{self, Statement};
use crate::store::{pos_base, Store};
use rusqlite::params;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};

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

/// Room for an entry's words, reused from one entry to the next.
#[derive(Default)]
struct Scratch {
    calc: String,
}

/// Turns engine entries into ledger entries with words.
pub struct Words<'a> {
    pub eng: &'a Engine<'a>,
    pub out: &'a Output,
    /// The symbols of the events that reverse a sale (`NONE` if unused).
    reversals: [u32; 2],
}

impl<'a> Words<'a> {
    pub fn new(eng: &'a Engine<'a>, out: &'a Output) -> Words<'a> {
        let sym = |s: &str| eng.facts.syms.get(s).unwrap_or(NONE);
        Words {
            eng,
            out,
            reversals: [sym("refund"), sym("chargeback")],
        }
    }

    fn facts(&self) -> &Facts {
        self.eng.facts
    }

    pub fn entry(&self, e: &REntry) -> Entry {
        self.with_view(e, |v| v.to_entry())
    }

    /// The entry's fields, borrowed where they are names (partner,
    /// program, rule, sources, ids), handed to `f`: the ledger's writer
    /// reads them without a copy into an [`Entry`]'s strings.
    fn with_view<R>(&self, e: &REntry, f: impl FnOnce(&EntryView) -> R) -> R {
        self.with_view_in(e, &mut Scratch::default(), f)
    }

    /// [`Words::with_view`] with the entry's words written into `s` (a
    /// producer of millions reuses one).
    fn with_view_in<R>(&self, e: &REntry, s: &mut Scratch, f: impl FnOnce(&EntryView) -> R) -> R {
        let facts = self.facts();
        let p = &self.eng.cfg.programs[usize::from(e.prog)];
        let cur = p.currency;
        let mut sources = [""; 2];
        let mut n = 0;
        for s in [e.src, e.src2] {
            if s != NONE {
                sources[n] = facts.ids.get(s);
                n += 1;
            }
        }
        let rule = if e.rule == NONE {
            "-"
        } else {
            self.eng.rule(e.rule).1.id.as_str()
        };
        let conv = (e.conv != NONE).then_some(e.conv as usize);
        let reason = match (e.calc.rejection(), &e.calc) {
            (Some(r), _) => self.reason(r, e.partner, self.event_ts(e)),
            (None, Calc::Capped { .. }) => "cap".to_string(),
            _ if e.fraud != 0 => {
                format!(
                    "held:fraud:{}",
                    crate::fraud::RULES[usize::from(e.fraud - 1)]
                )
            }
            _ => String::new(),
        };
        let calc = &mut s.calc;
        calc.clear();
        if self.calc_into(e, conv, &reason, calc).is_err() {
            calc.clear();
            calc.push_str("(not computable)");
        }
        self.fraud_words(e, calc);
        let mut id = [0u8; 32];
        let mut adjusts = [0u8; 32];
        f(&EntryView {
            id: hex_id_in("le_", &e.id, &mut id),
            period: e.period,
            partner: facts.syms.str(e.partner),
            program: &p.id,
            kind: e.kind,
            amount: e.amount,
            currency: cur,
            rule,
            sources: &sources[..n],
            event_day: i64::from(e.event_day),
            reason: &reason,
            calc,
            adjusts: e
                .calc
                .parent()
                .map_or("", |h| hex_id_in("le_", h, &mut adjusts)),
        })
    }

    /// The fraud verdict of an entry's conversion, in words.
    fn verdict_words(&self, conv: u32) -> Option<String> {
        let row = self.out.fraud_row(conv)?;
        Some(format!(
            "fraud score {} ({})",
            row.verdict.score,
            crate::fraud::reasons(row.mask)
        ))
    }

    /// Adds to an entry's arithmetic what the fraud rules and the operators
    /// decided about it.
    fn fraud_words(&self, e: &REntry, calc: &mut String) {
        if e.conv == NONE || self.out.fraud.is_empty() || e.calc.rejection().is_some() {
            return;
        }
        if e.fraud != 0 {
            let rule = crate::fraud::RULES[usize::from(e.fraud - 1)];
            match self.verdict_words(e.conv) {
                Some(v) => calc.push_str(&format!(
                    "; held for review under {rule}: {v}; not payable until an operator decides"
                )),
                None => calc.push_str(&format!(
                    "; held for review with the sale it reverses ({rule}); not payable until an operator decides"
                )),
            }
            return;
        }
        if let Some(r) = self.eng.reviews.get(&e.conv).filter(|r| r.release) {
            if let Some(v) = self.verdict_words(e.conv) {
                calc.push_str(&format!("; {v}; released on review by {}: {}", r.by, r.why));
            }
        }
    }

    /// The instant of an entry's source event: its conversion's, else its
    /// MDF claim's (0: neither).
    fn event_ts(&self, e: &REntry) -> i64 {
        let f = self.facts();
        if e.conv != NONE {
            return f.convs[e.conv as usize].ts;
        }
        f.mdfs
            .binary_search_by_key(&e.src, |m| m.id)
            .map_or(0, |i| f.mdfs[i].ts)
    }

    fn reason(&self, r: Rejection, partner: u32, ts: i64) -> String {
        match r {
            Rejection::Fraud(rule) => format!("fraud:{}", crate::fraud::RULES[usize::from(rule)]),
            Rejection::SelfReferral => "self_referral".into(),
            Rejection::UnknownPartner => "unknown_partner".into(),
            Rejection::OtherProgram => "other_program".into(),
            Rejection::BotClick => "bot_click".into(),
            Rejection::PartnerNotApproved => {
                let s = self.eng.status_at(partner, ts);
                if s == NONE {
                    "partner_no_status".into()
                } else {
                    format!("partner_{}", self.facts().syms.str(s))
                }
            }
        }
    }

    fn method(&self, conv: Option<usize>) -> String {
        let mut s = String::new();
        self.method_into(conv, &mut s);
        s
    }

    /// How the entry's conversion found its partner, in words, written
    /// after `out`.
    fn method_into(&self, conv: Option<usize>, out: &mut String) {
        let Some(i) = conv else { return };
        let f = self.facts();
        let (what, name) = match self.out.attribution[i].1 {
            Method::Lifetime => ("; attributed by the customer's lifetime lock", ""),
            Method::Click => ("; attributed by click", ""),
            Method::Coupon => (
                "; attributed by coupon ",
                f.syms.str(f.ex(&f.convs[i]).coupon),
            ),
            Method::Deal(d) => (
                "; attributed by deal registration ",
                f.ids.get(f.deals[d as usize].id),
            ),
            _ => ("", ""),
        };
        out.push_str(what);
        out.push_str(name);
    }

    /// A commission's arithmetic ([`Calc::Base`]) in words, written after
    /// `out`: the rule's base applied to the event, the rounded amount, how
    /// the partner was found.
    fn base_calc_into(&self, e: &REntry, conv: Option<usize>, out: &mut String) -> Result<()> {
        let cur = self.eng.cfg.programs[usize::from(e.prog)].currency;
        let (_, rule) = self.eng.rule(e.rule);
        let i = conv.expect("commission has a conversion");
        if let Base::Simple(b) = &rule.base {
            self.base_words_into(b, i, cur, out)?;
        }
        Self::result_into(out, e.amount, cur);
        self.method_into(conv, out);
        Ok(())
    }

    /// [`Words::calc`] written after `out`.
    fn calc_into(
        &self,
        e: &REntry,
        conv: Option<usize>,
        reason: &str,
        out: &mut String,
    ) -> Result<()> {
        match e.calc {
            // most entries: without a String of their own
            Calc::Base => self.base_calc_into(e, conv, out),
            Calc::Override(_) => {
                self.override_calc_into(e, out);
                Ok(())
            }
            _ => {
                out.push_str(&self.calc(e, conv, reason)?);
                Ok(())
            }
        }
    }

    /// The rates a conversion from `from` to `to` at `ms` used, in words:
    /// each currency's rate in the base currency and the fx.csv date it is
    /// from (the last on or before the event's day), so the arithmetic can
    /// be redone from the words alone.
    fn rates_words(
        &self,
        from: edge::currency::Currency,
        to: edge::currency::Currency,
        ms: i64,
    ) -> String {
        let day = ms.div_euclid(DAY_MS);
        let Some(fx) = self.eng.cfg.fx.as_ref() else {
            return format!("at the fx rate of {}", date_of_day(day));
        };
        let rate = |c: edge::currency::Currency| match fx.rate(c, day) {
            _ if c == fx.base => format!("1 ({c}, the base)"),
            Some((r, d)) => format!("{r} (the {c} rate of {} in fx.csv)", date_of_day(d)),
            None => format!("(no {c} rate)"),
        };
        format!("x {} / {}", rate(from), rate(to))
    }

    /// The event's amount in words, with its conversion when there was one.
    fn amount_words(&self, i: usize, to: edge::currency::Currency) -> Result<(Exact, String)> {
        let c = &self.facts().convs[i];
        let Some(a) = c.amount else {
            return Ok((Exact::ZERO, "no amount (0)".into()));
        };
        let from = c.currency.unwrap_or(to);
        let x = self
            .eng
            .convert(a, Some(from), to, c.ts, || self.facts().id(c))?;
        if from == to {
            Ok((x, format!("{} {to}", Input(a, to))))
        } else {
            Ok((
                x,
                format!(
                    "{a} {from} {} = {} {to}",
                    self.rates_words(from, to, c.ts),
                    plain(x.approx())
                ),
            ))
        }
    }

    fn base_words(&self, b: &StepBase, i: usize, cur: edge::currency::Currency) -> Result<String> {
        let mut s = String::new();
        self.base_words_into(b, i, cur, &mut s)?;
        Ok(s)
    }

    /// A simple base applied to conversion `i`, in words, written after
    /// `out` (`20% of 470.77 USD`, `fixed 5.00 USD`, `3 lots x 8 USD`).
    fn base_words_into(
        &self,
        b: &StepBase,
        i: usize,
        cur: edge::currency::Currency,
        out: &mut String,
    ) -> Result<()> {
        use std::fmt::Write;
        let c = &self.facts().convs[i];
        // writing into a String cannot fail
        let _ = match b {
            StepBase::Fixed(x) => write!(out, "fixed {} {cur}", Input(*x, cur)),
            StepBase::Percent(p) => {
                let _ = write!(out, "{}% of ", Plain(*p));
                match c.amount {
                    // the common case, without the conversion's own String
                    Some(a) if c.currency.unwrap_or(cur) == cur => {
                        write!(out, "{} {cur}", Input(a, cur))
                    }
                    _ => {
                        out.push_str(&self.amount_words(i, cur)?.1);
                        Ok(())
                    }
                }
            }
            StepBase::PerLot(x) => write!(
                out,
                "{} lots x {} {cur}",
                Plain(self.facts().ex(c).lots.unwrap_or_default()),
                Plain(*x)
            ),
        };
        Ok(())
    }

    /// ` = <amount> <currency>`, and that it was rounded when it is not
    /// zero: how the words of an entry's arithmetic end.
    fn result_into(out: &mut String, amount: Decimal, cur: edge::currency::Currency) {
        use std::fmt::Write;
        let half_even = if amount.is_zero() {
            ""
        } else {
            ", rounded half-even once"
        };
        // writing into a String cannot fail
        let _ = write!(out, " = {} {cur}{half_even}", Amount(amount, cur));
    }

    fn calc(&self, e: &REntry, conv: Option<usize>, reason: &str) -> Result<String> {
        let cur = self.eng.cfg.programs[usize::from(e.prog)].currency;
        let amt = format!("{} {cur}", fmt_decimal(e.amount, cur));
        let half_even = if e.amount.is_zero() {
            ""
        } else {
            ", rounded half-even once"
        };
        Ok(match &e.calc {
            Calc::Base => {
                let mut s = String::new();
                self.base_calc_into(e, conv, &mut s)?;
                s
            }
            Calc::LadderMarginal(b) => {
                let (before, volume) = **b;
                let (_, rule) = self.eng.rule(e.rule);
                let Base::Ladder(l) = &rule.base else { unreachable!() };
                let i = conv.expect("ladder entry has a conversion");
                let after = before + volume;
                let mut parts = Vec::new();
                for (k, s) in l.steps.iter().enumerate() {
                    let lo = s.from.max(before);
                    let hi = l.steps.get(k + 1).map_or(after, |n| n.from.min(after));
                    if hi > lo {
                        parts.push(format!(
                            "{} of {} in the step from {} ({})",
                            plain(hi - lo),
                            plain(volume),
                            plain(s.from),
                            self.base_words(&s.base, i, cur)?
                        ));
                    }
                }
                if parts.is_empty() {
                    let k = engine::step_at(&l.steps, Exact::from_dec(before)).unwrap_or(0);
                    parts.push(format!("the step from {} ({})", plain(l.steps[k].from), self.base_words(&l.steps[k].base, i, cur)?));
                }
                format!(
                    "marginal ladder on {}: the partner's period volume goes from {} to {}; {} = {amt}{half_even}{}",
                    metric_name(l.metric),
                    plain(before),
                    plain(after),
                    parts.join(" + "),
                    self.method(conv)
                )
            }
            Calc::LadderRetroactive(b) => {
                let (total, step) = **b;
                let (_, rule) = self.eng.rule(e.rule);
                let Base::Ladder(l) = &rule.base else { unreachable!() };
                let i = conv.expect("ladder entry has a conversion");
                let _ = Mode::Retroactive;
                match l.steps.get(usize::from(step)) {
                    Some(s) => format!(
                        "retroactive ladder on {}: the partner's period total {} is in the step from {} ({}), applied to every event of the period: {} = {amt}{half_even}{}",
                        metric_name(l.metric),
                        plain(total),
                        plain(s.from),
                        describe_step_base(&s.base),
                        self.base_words(&s.base, i, cur)?,
                        self.method(conv)
                    ),
                    None => format!(
                        "retroactive ladder on {}: the partner's period total {} is below the first step = {amt}",
                        metric_name(l.metric),
                        plain(total)
                    ),
                }
            }
            Calc::Capped { cap } => format!(
                "the rule's cap of {cap} paid events per partner per period was reached: recorded as capped, {amt}"
            ),
            Calc::Override(_) => {
                let mut s = String::new();
                self.override_calc_into(e, &mut s);
                s
            }
            Calc::Clawback(b) => {
                let (share, original, _, _, before) = **b;
                let pct = |x: Decimal| {
                    if x == Decimal::ONE {
                        "all".to_string()
                    } else {
                        format!("{}%", plain(x * Decimal::ONE_HUNDRED))
                    }
                };
                if before.is_zero() {
                    format!(
                        "{} of the original entry's {} {cur} reversed (refund amount / original amount) = {amt}{half_even}",
                        pct(share),
                        fmt_decimal(original, cur)
                    )
                } else {
                    // a later partial refund: the refunds so far reverse
                    // their whole share, less what the earlier ones took
                    // (so all of them never exceed the entry)
                    // fmt_decimal rounds half-even to the currency
                    format!(
                        "{} more of the original entry's {} {cur} reversed (refund amount / original amount): the refunds so far reverse {} = {} {cur}, rounded half-even, less {} {cur} reversed by the earlier ones = {amt}",
                        pct(share),
                        fmt_decimal(original, cur),
                        pct(before + share),
                        fmt_decimal(original * (before + share), cur),
                        fmt_decimal(original * before, cur)
                    )
                }
            }
            Calc::Topup(b) => {
                let (minimum, earned) = **b;
                format!(
                "minimum_per_period {} {cur} - earned {} {cur} (commissions and overrides of the period) = {amt}",
                fmt_decimal(minimum, cur),
                fmt_decimal(earned, cur)
            )
            }
            Calc::Mdf => {
                let mdfs = &self.facts().mdfs;
                let m = mdfs.binary_search_by_key(&e.src, |m| m.id).ok().map(|i| &mdfs[i]);
                match m {
                    Some(m) if m.currency != cur => format!(
                        "approved MDF claim of {} {} converted {} = {amt}{half_even}",
                        m.amount,
                        m.currency,
                        self.rates_words(m.currency, cur, m.ts)
                    ),
                    _ => format!("approved MDF claim = {amt}"),
                }
            }
            Calc::Rejected(_) | Calc::RejectedOverride(_) => {
                let r = e.calc.rejection().unwrap_or(Rejection::PartnerNotApproved);
                let why = match r {
                    Rejection::SelfReferral => {
                        // which of the tests matched: the customer id, the
                        // email hash, or an erased customer's verdict
                        let f = self.facts();
                        let c = conv.map(|i| &f.convs[i]);
                        let hash = c.map_or(NONE, |c| f.ex(c).email_hash);
                        let partner_hash = f.partners.get(&e.partner).map_or(NONE, |i| i.email_hash);
                        // (an erased customer's verdict, kept beside its
                        // pseudonym, is the customer id's: the same words
                        // before and after the erasure)
                        if c.is_some_and(|c| c.customer != e.partner)
                            && hash != NONE
                            && hash == partner_hash
                        {
                            // the hash itself stays out of the words: a
                            // closed ledger keeps them after an erasure
                            "the conversion's email hash is the partner's (self-referral)".to_string()
                        } else {
                            "the customer is the partner (self-referral)".to_string()
                        }
                    }
                    Rejection::UnknownPartner => "the partner is not in the registry".to_string(),
                    Rejection::OtherProgram => "the partner is registered in another program".to_string(),
                    Rejection::BotClick => "the only evidence is a bot click".to_string(),
                    Rejection::PartnerNotApproved => format!("the partner's status at event time was not approved ({reason})"),
                    Rejection::Fraud(rule) => {
                        let name = crate::fraud::RULES[usize::from(rule)];
                        let v = conv
                            .and_then(|i| self.verdict_words(i as u32))
                            .unwrap_or_default();
                        match conv.and_then(|i| self.eng.reviews.get(&(i as u32))) {
                            Some(r) if !r.release => format!(
                                "held under the fraud rule {name} ({v}) and rejected on review by {}: {}",
                                r.by, r.why
                            ),
                            _ => format!("the fraud rule {name} rejects it ({v})"),
                        }
                    }
                };
                format!("rejected: {why}; never payable, {amt}{}", self.method(conv))
            }
        })
    }

    /// An override's arithmetic ([`Calc::Override`]) in words, written
    /// after `out`: the level's percentage of the commission it derives
    /// from, whose partner and event are named.
    fn override_calc_into(&self, e: &REntry, out: &mut String) {
        use std::fmt::Write;
        let Calc::Override(b) = &e.calc else { return };
        let (level, child, _) = **b;
        let p = &self.eng.cfg.programs[usize::from(e.prog)];
        let cur = p.currency;
        let pct = p.overrides[usize::from(level) - 1];
        // writing into a String cannot fail
        let _ = write!(
            out,
            "level {level} override: {}% of the commission {} {cur} of ",
            Plain(pct),
            Amount(child, cur)
        );
        // the partner below, found from the entry's conversion
        let f = self.facts();
        if e.conv != NONE {
            out.push_str(f.syms.str(self.out.attribution[e.conv as usize].0));
            out.push_str(" on ");
            out.push_str(f.ids.get(e.src));
        }
        Self::result_into(out, e.amount, cur);
    }

    pub fn invoice(&self, l: &RInvoice) -> InvoiceLine {
        let f = self.facts();
        let p = &self.eng.cfg.programs[usize::from(l.prog)];
        let c = &f.convs[l.conv as usize];
        let cur = p.currency;
        let calc = if c.event != NONE && self.reversals.contains(&c.event) {
            format!(
                "credit note: {}% of the original line reversed",
                plain(l.share * Decimal::ONE_HUNDRED)
            )
        } else {
            format!(
                "list {} {cur} x (100 - {}%) = {} {cur} due, rounded half-even",
                fmt_decimal(l.list_amount, cur),
                plain(l.discount),
                fmt_decimal(l.amount_due, cur)
            )
        };
        InvoiceLine {
            id: hex_id("inv_", &l.id),
            period: l.period,
            partner: f.syms.str(l.partner).to_string(),
            program: p.id.clone(),
            txn_id: f.txns.get(c.idx).to_string(),
            list_amount: l.list_amount,
            discount_percent: l.discount,
            amount_due: l.amount_due,
            currency: cur,
            source: f.id(c).to_string(),
            calc,
        }
    }
}

fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::Count => "count",
        Metric::Amount => "amount",
        Metric::Lots => "lots",
    }
}

fn kind_rank(k: EntryKind) -> usize {
    EntryKind::ALL.iter().position(|x| *x == k).unwrap_or(0)
}

/// Prints how long a phase took when `SETTLEMENT_TIMING` is set.
pub struct Phase(Option<(std::time::Instant, &'static str)>);

impl Phase {
    pub fn start(name: &'static str) -> Phase {
        Phase(std::env::var_os("SETTLEMENT_TIMING").map(|_| (std::time::Instant::now(), name)))
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        if let Some((t, n)) = self.0 {
            let rss = std::fs::read_to_string("/proc/self/status")
                .ok()
                .map(|s| {
                    let v = |k: &str| {
                        s.lines()
                            .find(|l| l.starts_with(k))
                            .map(|l| l[k.len()..].trim().to_string())
                            .unwrap_or_default()
                    };
                    format!("{}, peak {}", v("VmRSS:"), v("VmHWM:"))
                })
                .unwrap_or_default();
            eprintln!(
                "timing: {n}: {:.3} s (rss {rss})",
                t.elapsed().as_secs_f64()
            );
        }
    }
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
fn id_hash(prefix: &str, id: &str) -> Option<engine::Hash10> {
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
    if let (Some((h, _, facts_late)), Some(old)) = (late, old) {
        let mut late = Vec::new();
        let why = Restated {
            h,
            rs_h,
            facts_late,
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
    items.extend((0..own.len()).map(Item::own));

    // statements
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
    held_pending(store, cfg, &reviews, p, &pending_ids, &mut earlier_pending)?;
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

/// Held entries of closed periods that an operator rejected: reversed by an
/// adjustment in the first open period (once: a reversal already in a
/// closed period is not booked again). It carries the held entry's date,
/// so the two wait for `hold_days` together.
fn review_reversals(
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

fn dec(s: &str) -> Result<Decimal> {
    crate::money::parse_decimal(s)
        .ok_or_else(|| Error::data(format!("bad amount {s:?} in the store")))
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
fn split_restated_topups(entries: &mut Vec<Entry>, restated: &[(usize, EntryKind, Period)]) {
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
fn booked_on_refunded_sales(
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
    for &i in &f.with_orig {
        let c = &f.convs[i as usize];
        // the refunds whose clawbacks this run books or restates: after
        // the closed period, or late for it; the others are the same in
        // both views and booked already
        let this_run = c.ts >= end || i64::from(c.arrival) > w_h;
        if this_run && reversal(c) && f.ex(c).orig_txn != NONE {
            named.insert((c.program, f.syms.str(f.ex(c).orig_txn)));
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
fn with_old_view(mut b: engine::Booked, old: &Output, o: &Options) -> engine::Booked {
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
fn booked_id(prefix: &str, id: &str) -> engine::Hash10 {
    id_hash(prefix, id).unwrap_or_else(|| hash_parts(&[id.as_bytes()]))
}

/// Whether an operator decided, after closed period `h`'s draft (its last
/// decision `rs_h`), on a conversion of the closed periods (`ts` before
/// `until_ms`) in a way that restates them like a late fact (released a
/// rule's rejection, rejected a held entry).
fn late_decisions(
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
struct Restated {
    h: Period,
    rs_h: i64,
    facts_late: bool,
}

/// Restated closed-period entries minus what was known at close.
fn adjustments(
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
            None if why.facts_late => format!("late facts for the closed period {}", src.period),
            None => format!(
                "a decision on review after the close, for the closed period {}",
                src.period
            ),
        };
        e.calc = format!(
            "{cause}: {} {} ({}) restated as {} {cur}, booked {} {cur}: adjusted by {} {cur}",
            src.kind,
            orig_id,
            e.reason_or_rule(),
            fmt_decimal(na, cur),
            fmt_decimal(nb, cur),
            fmt_decimal(diff, cur)
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
        if !now.contains(&l.id) {
            line.list_amount = crate::money::norm(-line.list_amount);
            line.amount_due = crate::money::norm(-line.amount_due);
        } else if let Some(b) = before.get(&l.id) {
            line.list_amount -= b.list_amount;
            line.amount_due -= b.amount_due;
        }
        line.calc = format!(
            "late line for the closed period {}: {}",
            l.period, line.calc
        );
        line.id = hex_id("inv_", &hash_parts(&[b"late", ps.as_bytes(), &l.id]));
        line.period = p;
        invoices.push(line);
    }
    Ok(())
}

impl Entry {
    fn reason_or_rule(&self) -> String {
        format!("rule {}", self.rule)
    }
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

/// A ledger entry's fields, borrowed: what the fingerprint and the ledger's
/// columns read, from an engine entry ([`Words::with_view`]) or an
/// [`Entry`] ([`EntryView::of`]).
pub struct EntryView<'a> {
    pub id: &'a str,
    pub period: Period,
    pub partner: &'a str,
    pub program: &'a str,
    pub kind: EntryKind,
    pub amount: Decimal,
    pub currency: edge::currency::Currency,
    pub rule: &'a str,
    pub sources: &'a [&'a str],
    pub event_day: i64,
    pub reason: &'a str,
    pub calc: &'a str,
    pub adjusts: &'a str,
}

impl EntryView<'_> {
    /// An [`Entry`]'s fields, borrowed, handed to `f`.
    fn of<R>(e: &Entry, f: impl FnOnce(&EntryView) -> R) -> R {
        let sources: Vec<&str> = e.sources.iter().map(String::as_str).collect();
        f(&EntryView {
            id: &e.id,
            period: e.period,
            partner: &e.partner,
            program: &e.program,
            kind: e.kind,
            amount: e.amount,
            currency: e.currency,
            rule: &e.rule,
            sources: &sources,
            event_day: e.event_day,
            reason: &e.reason,
            calc: &e.calc,
            adjusts: &e.adjusts,
        })
    }

    fn to_entry(&self) -> Entry {
        Entry {
            id: self.id.to_string(),
            period: self.period,
            partner: self.partner.to_string(),
            program: self.program.to_string(),
            kind: self.kind,
            amount: self.amount,
            currency: self.currency,
            rule: self.rule.to_string(),
            sources: self.sources.iter().map(|s| s.to_string()).collect(),
            event_day: self.event_day,
            reason: self.reason.to_string(),
            calc: self.calc.to_string(),
            adjusts: self.adjusts.to_string(),
        }
    }
}

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
