//! Conversions reported by postback (S2S) or pixel: typed parsing with
//! field-level errors, and the canonical payload that tells a duplicate
//! from a conflict.

use crate::admin::Program;
use crate::currency::Currency;
use crate::fields::{FieldError, Fields};
use crate::ids::{is_valid_id, is_valid_ref};
use crate::time::Timestamp;
use rust_decimal::Decimal;
use std::str::FromStr;

/// Largest body a postback may have.
pub const MAX_BODY: usize = 16 * 1024;

/// Events whose amount and currency are required.
const MONEY_EVENTS: &[&str] = &["sale", "ftd", "deposit", "revenue"];
/// Events that name an earlier conversion they undo: a refund or
/// chargeback reverses a sale; a `reinstate` cancels a refund or chargeback
/// (a dispute the merchant won, a refund that failed).
const REVERSALS: &[&str] = &["refund", "chargeback", "reinstate"];

/// A validated conversion report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Postback {
    pub program: String,
    pub event: String,
    pub txn_id: String,
    pub click_id: Option<String>,
    pub coupon: Option<String>,
    pub customer: Option<String>,
    pub amount: Option<Decimal>,
    pub currency: Option<Currency>,
    pub original_txn_id: Option<String>,
    pub lots: Option<Decimal>,
    pub instrument: Option<String>,
    pub ts: Option<Timestamp>,
    pub email: Option<String>,
    pub country: Option<String>,
}

/// A decimal string: optional minus, digits, optional fraction; at most 30
/// significant characters and 10 decimals. No exponents, NaN or infinity.
pub fn parse_decimal(field: &str, s: &str, allow_negative: bool) -> Result<Decimal, FieldError> {
    let bad = || FieldError::new(field, "must be a decimal string like \"12.50\"");
    let digits = s.strip_prefix('-').unwrap_or(s);
    if s.len() > 32 || digits.is_empty() {
        return Err(bad());
    }
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || frac.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    if frac.is_some_and(|f| f.len() > 10) {
        return Err(FieldError::new(field, "at most 10 decimal places"));
    }
    if int.trim_start_matches('0').len() > 18 {
        return Err(FieldError::new(field, "too large"));
    }
    let d = Decimal::from_str(s).map_err(|_| bad())?;
    if d.is_sign_negative() && !d.is_zero() && !allow_negative {
        return Err(FieldError::new(field, "must not be negative"));
    }
    Ok(d)
}

fn opt_ref(f: &Fields, k: &str) -> Result<Option<String>, FieldError> {
    match f.opt(k) {
        None => Ok(None),
        Some(v) if is_valid_ref(v) => Ok(Some(v.to_string())),
        Some(_) => Err(FieldError::new(
            k,
            "1 to 128 characters, no control characters",
        )),
    }
}

impl Postback {
    /// Parses and validates. `now_ms` bounds `ts` (at most a day ahead).
    pub fn parse(f: &Fields, program: &Program, now_ms: i64) -> Result<Postback, FieldError> {
        let event = f.require("event")?;
        if !program.knows_event(event) {
            return Err(FieldError::new(
                "event",
                format!("unknown event {event:?} for this program"),
            ));
        }
        let txn_id = f.require("txn_id")?;
        if !is_valid_ref(txn_id) {
            return Err(FieldError::new(
                "txn_id",
                "1 to 128 characters, no control characters",
            ));
        }
        let click_id = f.opt("click_id").map(str::to_string);
        if click_id.as_deref().is_some_and(|c| c.len() > 64) {
            return Err(FieldError::new("click_id", "malformed click id"));
        }
        let coupon = f.opt("coupon").map(str::to_string);
        if coupon.as_deref().is_some_and(|c| !is_valid_id(c)) {
            return Err(FieldError::new("coupon", "must match [A-Za-z0-9_-]{1,64}"));
        }
        let amount = f
            .opt("amount")
            .map(|a| parse_decimal("amount", a, event == "revenue"))
            .transpose()?;
        let currency = f
            .opt("currency")
            .map(|c| {
                Currency::parse(c).ok_or_else(|| {
                    FieldError::new("currency", format!("unknown ISO 4217 currency {c:?}"))
                })
            })
            .transpose()?;
        if MONEY_EVENTS.contains(&event) && amount.is_none() {
            return Err(FieldError::new("amount", format!("required for {event}")));
        }
        if amount.is_some() && currency.is_none() {
            return Err(FieldError::new("currency", "required with an amount"));
        }
        let original_txn_id = opt_ref(f, "original_txn_id")?;
        if REVERSALS.contains(&event) && original_txn_id.is_none() {
            return Err(FieldError::new(
                "original_txn_id",
                format!("required for {event}"),
            ));
        }
        let lots = f
            .opt("lots")
            .map(|l| parse_decimal("lots", l, false))
            .transpose()?;
        if event == "trade" && lots.is_none_or(|l| l.is_zero()) {
            return Err(FieldError::new("lots", "required for trade, above zero"));
        }
        let ts = match f.opt("ts") {
            None => None,
            Some(s) => {
                let t = Timestamp::parse(s)
                    .map_err(|_| FieldError::new("ts", "must be an RFC 3339 time"))?;
                if t.ms() > now_ms + 86_400_000 {
                    return Err(FieldError::new("ts", "more than a day in the future"));
                }
                Some(t)
            }
        };
        // the hash and the duplicate check read it trimmed: so does the check
        let email = f
            .opt("email")
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string);
        if email
            .as_deref()
            .is_some_and(|e| !crate::admin::valid_email(e))
        {
            return Err(FieldError::new("email", "not an email address"));
        }
        let country = f.opt("country").map(str::to_ascii_uppercase);
        if country
            .as_deref()
            .is_some_and(|c| c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(FieldError::new("country", "ISO 3166 two-letter code"));
        }
        let instrument = opt_ref(f, "instrument")?;
        Ok(Postback {
            program: program.id.clone(),
            event: event.to_string(),
            txn_id: txn_id.to_string(),
            click_id,
            coupon,
            customer: opt_ref(f, "customer")?,
            amount,
            currency,
            original_txn_id,
            lots,
            instrument,
            ts,
            email,
            country,
        })
    }

    /// `program|event|txn_id`: one conversion per key, ever.
    pub fn dedupe_key(&self) -> String {
        format!("{}|{}|{}", self.program, self.event, self.txn_id)
    }

    /// A pixel's key: `pixel|program|event|txn_id`. Anyone can fire the
    /// pixel, so its records never take a key an authenticated postback
    /// needs (an order's txn_id claimed first with a made-up amount would
    /// turn the merchant's postback into a 409); settlement counts one sale
    /// brought by both once, the postback's copy first.
    pub fn pixel_dedupe_key(&self) -> String {
        format!("pixel|{}", self.dedupe_key())
    }

    /// Why the pixel may not bring this event, if it may not: a refund,
    /// chargeback or reinstatement (it would reverse anyone's order, or
    /// undo the reversal), or `revenue` (net
    /// revenue, which may be negative, is reported by the operator's
    /// servers). They come by an authenticated postback.
    pub fn pixel_refusal(&self) -> Option<FieldError> {
        (REVERSALS.contains(&self.event.as_str()) || self.event == "revenue").then(|| {
            FieldError::new(
                "event",
                format!(
                    "{} is never taken from the pixel, which anyone can fire: send it by an authenticated postback",
                    self.event
                ),
            )
        })
    }

    /// The payload as given, normalized (12.5 and 12.50 are the same), so
    /// a resend is a duplicate and a changed report is a conflict.
    pub fn canonical(&self) -> String {
        let d = |v: &Option<Decimal>| v.map(|d| d.normalize().to_string()).unwrap_or_default();
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        [
            ("program", self.program.clone()),
            ("event", self.event.clone()),
            ("txn_id", self.txn_id.clone()),
            ("click_id", s(&self.click_id)),
            ("coupon", s(&self.coupon)),
            ("customer", s(&self.customer)),
            ("amount", d(&self.amount)),
            (
                "currency",
                self.currency
                    .map(|c| c.code().to_string())
                    .unwrap_or_default(),
            ),
            ("original_txn_id", s(&self.original_txn_id)),
            ("lots", d(&self.lots)),
            ("instrument", s(&self.instrument)),
            ("ts", self.ts.map(|t| t.to_string()).unwrap_or_default()),
            (
                "email",
                s(&self.email.as_ref().map(|e| e.trim().to_lowercase())),
            ),
            ("country", s(&self.country)),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", crate::dest::encode(v)))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// The raw request kept in the rejections log, without its credential: a
/// `token` parameter (query string, form or JSON body) is replaced by
/// `[redacted]`; everything else stays as sent.
pub fn redact_token(raw: &str) -> String {
    const REDACTED: &str = "[redacted]";
    if raw.trim_start().starts_with('{') {
        return match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(serde_json::Value::Object(mut m)) if m.contains_key("token") => {
                m.insert("token".into(), REDACTED.into());
                serde_json::Value::Object(m).to_string()
            }
            Ok(_) => raw.to_string(),
            // Not JSON after all: no way to tell where a token would be.
            Err(_) if raw.contains("token") => REDACTED.to_string(),
            Err(_) => raw.to_string(),
        };
    }
    raw.split('&')
        .map(|pair| {
            let is_token = form_urlencoded::parse(pair.as_bytes())
                .next()
                .is_some_and(|(k, _)| k == "token");
            if is_token {
                "token=[redacted]"
            } else {
                pair
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_redacted_from_raw_requests() {
        assert_eq!(
            redact_token("program=p&token=s%65cret&event=nope&%74oken=x&tokens=1"),
            "program=p&token=[redacted]&event=nope&token=[redacted]&tokens=1"
        );
        let j = redact_token(r#"{"program":"p","token":"secret","txn_id":"T"}"#);
        assert!(
            !j.contains("secret") && j.contains("\"txn_id\":\"T\""),
            "{j}"
        );
        assert_eq!(
            redact_token(r#"{"token":1,"token":"secret"}"#),
            r#"{"token":"[redacted]"}"#
        );
        assert_eq!(redact_token(r#"{"txn_id":"T"}"#), r#"{"txn_id":"T"}"#);
        assert_eq!(redact_token(r#"{"token":"secret""#), "[redacted]");
        assert_eq!(redact_token("event=x&amount=NaN"), "event=x&amount=NaN");
    }

    fn program() -> Program {
        Program::parse("shop", br#"{"custom_events":["trial"]}"#).unwrap()
    }

    fn parse(q: &str) -> Result<Postback, FieldError> {
        Postback::parse(
            &Fields::from_query(q).unwrap(),
            &program(),
            1_800_000_000_000,
        )
    }

    #[test]
    fn a_sale() {
        let p = parse("program=shop&event=sale&txn_id=T1&amount=12.50&currency=EUR&customer=c1")
            .unwrap();
        assert_eq!(p.amount, Some(Decimal::new(1250, 2)));
        assert_eq!(p.currency.unwrap().code(), "EUR");
        assert_eq!(p.dedupe_key(), "shop|sale|T1");
        let same = parse("program=shop&event=sale&txn_id=T1&amount=12.5&currency=EUR&customer=c1")
            .unwrap();
        assert_eq!(p.canonical(), same.canonical());
        let other =
            parse("program=shop&event=sale&txn_id=T1&amount=13&currency=EUR&customer=c1").unwrap();
        assert_ne!(p.canonical(), other.canonical());
    }

    #[test]
    fn field_errors() {
        let cases = [
            ("event=sale&txn_id=T&amount=1", "currency"),
            ("event=sale&txn_id=T", "amount"),
            ("event=sale&txn_id=T&amount=NaN&currency=USD", "amount"),
            ("event=sale&txn_id=T&amount=1e5&currency=USD", "amount"),
            ("event=sale&txn_id=T&amount=-5&currency=USD", "amount"),
            (
                &format!(
                    "event=sale&txn_id=T&amount={}&currency=USD",
                    "9".repeat(1000)
                ),
                "amount",
            ),
            ("event=sale&txn_id=T&amount=1&currency=usd", "currency"),
            ("event=bogus&txn_id=T", "event"),
            ("event=sale", "txn_id"),
            ("txn_id=T", "event"),
            ("event=refund&txn_id=R", "original_txn_id"),
            ("event=reinstate&txn_id=W", "original_txn_id"),
            ("event=trade&txn_id=X", "lots"),
            ("event=lead&txn_id=T&ts=yesterday", "ts"),
            ("event=lead&txn_id=T&ts=2099-01-01T00:00:00Z", "ts"),
            ("event=lead&txn_id=T&coupon=A%20B", "coupon"),
            ("event=lead&txn_id=T%0D%0ASet-Cookie:x", "txn_id"),
            ("event=lead&txn_id=T&email=x", "email"),
            ("event=lead&txn_id=T&email=%20x%20", "email"),
        ];
        for (q, field) in cases {
            assert_eq!(parse(q).unwrap_err().field, field, "{q}");
        }
    }

    #[test]
    fn an_email_is_read_trimmed() {
        // review21 L5: refused as "not an email address" with spaces around
        let p = parse("event=lead&txn_id=T&email=%20Ann@Example.com%20").unwrap();
        assert_eq!(p.email.as_deref(), Some("Ann@Example.com"));
    }

    #[test]
    fn revenue_may_be_negative_and_custom_events_count() {
        let p = parse("event=revenue&txn_id=NR1&amount=-40.00&currency=EUR").unwrap();
        assert_eq!(p.amount, Some(Decimal::new(-4000, 2)));
        assert!(parse("event=trial&txn_id=X").is_ok());
        let t = parse("event=trade&txn_id=X&lots=2.5&instrument=EURUSD").unwrap();
        assert_eq!(t.lots, Some(Decimal::new(25, 1)));
    }

    /// review21 H2: the pixel, which anyone can fire, never brings a
    /// reversal or net revenue, and its records have a key space of their
    /// own, so they never take an order's key from the merchant's postback.
    #[test]
    fn the_pixel_brings_no_reversal_and_keys_apart() {
        for q in [
            "event=refund&txn_id=R&original_txn_id=O",
            "event=chargeback&txn_id=C&original_txn_id=O",
            "event=reinstate&txn_id=W&original_txn_id=C",
            "event=revenue&txn_id=NR&amount=-40.00&currency=EUR",
        ] {
            let e = parse(q).unwrap().pixel_refusal().unwrap();
            assert_eq!(e.field, "event", "{q}");
        }
        let sale = parse("event=sale&txn_id=T1&amount=1&currency=USD").unwrap();
        assert_eq!(sale.pixel_refusal(), None);
        assert_eq!(sale.pixel_dedupe_key(), "pixel|shop|sale|T1");
        assert_ne!(sale.pixel_dedupe_key(), sale.dedupe_key());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Hostile input never panics: every query either parses or names a field.
        #[test]
        fn any_query_parses_or_names_a_field(q in "\\PC{0,300}") {
            let program = Program::parse("p", b"{}").unwrap();
            if let Ok(f) = Fields::from_query(&q) {
                match Postback::parse(&f, &program, 1_800_000_000_000) {
                    Ok(pb) => prop_assert!(!pb.txn_id.is_empty()),
                    Err(e) => prop_assert!(!e.field.is_empty() && !e.reason.is_empty()),
                }
            }
        }

        #[test]
        fn any_json_parses_or_names_a_field(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            match Fields::from_json(&body) {
                Ok(_) => {}
                Err(e) => prop_assert!(!e.field.is_empty()),
            }
        }

        /// Decimals round-trip exactly: what we accept is what we store.
        #[test]
        fn decimals_are_exact(int in 0u64..1_000_000_000_000, frac in 0u32..100) {
            let s = format!("{int}.{frac:02}");
            let d = parse_decimal("amount", &s, false).unwrap();
            prop_assert_eq!(d.to_string(), s);
        }
    }
}
