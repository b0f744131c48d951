//! Engine entries in words: each ledger entry's reason and arithmetic
//! (`calc`), each invoice line's, and the borrowed view of an entry the
//! ledger's writer and the draft's fingerprint read.

use crate::config::{describe_step_base, Base, Metric, Mode, StepBase};
use crate::engine::{self, hex_id, hex_id_in, Calc, Engine, Method, Output, REntry, RInvoice};
use crate::error::Result;
use crate::facts::{Facts, NONE};
use crate::ledger::{Entry, EntryKind, InvoiceLine, Rejection};
use crate::money::{fmt_decimal, plain, Amount, Exact, Input, Plain};
use crate::period::{date_of_day, Period, DAY_MS};
use rust_decimal::Decimal;

/// Room for an entry's words, reused from one entry to the next.
#[derive(Default)]
pub(crate) struct Scratch {
    calc: String,
}

/// Turns engine entries into ledger entries with words.
pub struct Words<'a> {
    pub eng: &'a Engine<'a>,
    pub out: &'a Output,
    /// The symbols of the events that reverse a sale (`NONE` if unused).
    reversals: [u32; 2],
    reinstate: u32,
}

impl<'a> Words<'a> {
    pub fn new(eng: &'a Engine<'a>, out: &'a Output) -> Words<'a> {
        let sym = |s: &str| eng.facts.syms.get(s).unwrap_or(NONE);
        Words {
            eng,
            out,
            reversals: [sym("refund"), sym("chargeback")],
            reinstate: sym("reinstate"),
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
    pub(crate) fn with_view_in<R>(
        &self,
        e: &REntry,
        s: &mut Scratch,
        f: impl FnOnce(&EntryView) -> R,
    ) -> R {
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
            Method::Lifetime(by) => {
                // the conversion that locked the customer: its id and day
                out.push_str("; attributed by the customer's lifetime lock, set by ");
                match f.convs.get(by as usize) {
                    Some(c) => {
                        use std::fmt::Write;
                        out.push_str(f.id(c));
                        let _ = write!(out, " on {}", date_of_day(c.ts.div_euclid(DAY_MS)));
                    }
                    None => out.push_str("an earlier conversion"),
                }
                return;
            }
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
                        // the step's share of the event's volume, times
                        // the step's base applied to the whole event
                        parts.push(format!(
                            "{}/{} x ({}) in the step from {}",
                            plain(hi - lo),
                            plain(volume),
                            self.base_words(&s.base, i, cur)?,
                            plain(s.from)
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
                let (share, original, _, _, before, oi, _) = **b;
                let pct = |x: Decimal| {
                    if x == Decimal::ONE {
                        "all".to_string()
                    } else {
                        format!("{}%", plain(x * Decimal::ONE_HUNDRED))
                    }
                };
                // a refund or chargeback without an amount reverses all, as
                // does one of a sale without an amount; one in another
                // currency than its sale's is compared converted
                let f = self.facts();
                if share.is_sign_negative() {
                    // a reinstatement: the reversal it names is cancelled
                    let after = before + share;
                    let (event, named) = match conv.map(|i| &f.convs[i]) {
                        Some(c) => (f.id(c), f.syms.str(f.ex(c).orig_txn)),
                        None => ("", ""),
                    };
                    let standing = if after.is_zero() {
                        format!(
                            "none of it stands now ({} {cur})",
                            fmt_decimal(Decimal::ZERO, cur)
                        )
                    } else {
                        format!(
                            "the reversals still standing reverse {} = {} {cur}, rounded half-even",
                            pct(after),
                            fmt_decimal(original * after, cur)
                        )
                    };
                    return Ok(format!(
                        "reinstated: {event} cancels the reversal {named:?} (a dispute won or a refund that failed), so {} of the original entry's {} {cur} is given back: {} {cur} was reversed before, {standing}; the difference = {amt}",
                        pct(-share),
                        fmt_decimal(original, cur),
                        fmt_decimal(original * before, cur)
                    ));
                }
                let o = f.convs.get(oi as usize);
                let basis = match (conv.map(|i| (i, &f.convs[i])), o) {
                    (Some((_, r)), _) if r.amount.is_none() => {
                        "the reversal has no amount: all of it".to_string()
                    }
                    (_, Some(o)) if o.amount.is_none_or(|a| a.is_zero()) => {
                        "the original sale has no amount: all of it".to_string()
                    }
                    (Some((ri, r)), Some(o)) if r.currency != o.currency => format!(
                        "refund amount / original amount, each converted: {} / {}",
                        self.amount_words(ri, cur)?.1,
                        self.amount_words(oi as usize, cur)?.1
                    ),
                    _ => "refund amount / original amount".to_string(),
                };
                if before.is_zero() {
                    format!(
                        "{} of the original entry's {} {cur} reversed ({basis}) = {amt}{half_even}",
                        pct(share),
                        fmt_decimal(original, cur)
                    )
                } else {
                    // a later partial refund: the refunds so far reverse
                    // their whole share, less what the earlier ones took
                    // (so all of them never exceed the entry)
                    // fmt_decimal rounds half-even to the currency
                    format!(
                        "{} more of the original entry's {} {cur} reversed ({basis}): the refunds so far reverse {} = {} {cur}, rounded half-even, less {} {cur} reversed by the earlier ones = {amt}",
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
        let calc = if c.event != NONE && c.event == self.reinstate {
            format!(
                "credit note cancelled: {} cancels the reversal {:?} (a dispute won or a refund that failed), so {}% of the original line is charged again (the credit notes' shares, each part rounded half-even as they were): list {} {cur}, due {} {cur}",
                f.id(c),
                f.syms.str(f.ex(c).orig_txn),
                plain(-l.share * Decimal::ONE_HUNDRED),
                fmt_decimal(l.list_amount, cur),
                fmt_decimal(l.amount_due, cur)
            )
        } else if c.event != NONE && self.reversals.contains(&c.event) {
            format!(
                "credit note: {}% of the original line reversed (refund amount / original amount): list {} {cur}, due {} {cur}",
                plain(l.share * Decimal::ONE_HUNDRED),
                fmt_decimal(l.list_amount, cur),
                fmt_decimal(l.amount_due, cur)
            )
        } else {
            format!(
                "list {} {cur} x (100% - {}%) = {} {cur} due, rounded half-even",
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

pub(crate) fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::Count => "count",
        Metric::Amount => "amount",
        Metric::Lots => "lots",
    }
}

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
    pub(crate) fn of<R>(e: &Entry, f: impl FnOnce(&EntryView) -> R) -> R {
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

    pub(crate) fn to_entry(&self) -> Entry {
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
