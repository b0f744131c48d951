//! One NDJSON line of SPEC section 4 as the import reads it: the fields of
//! [`Record`], its strings borrowed from the line instead of copied into
//! new `String`s (ten million lines are a hundred million small
//! allocations otherwise).
//!
//! A [`Line`] accepts a subset of what a [`Record`] does, with the same
//! values: its fields have the same names, types and serde attributes, but
//! a string field borrows, so a string with an escape in it (`\"`, `\u00e9`)
//! cannot be read this way. The import then reads the line as a `Record`
//! ([`Line::parse`] does both), which also gives every bad line the
//! `Record`'s own error message.
//!
//! Before serde_json, [`Line::parse`] tries `flat`: a reader by hand of the
//! one shape nearly every line has (a flat object of these keys, strings
//! without escapes), which gives the same `Line` serde would or leaves the
//! line to serde.

use edge::currency::Currency;
use edge::record::{Kind, Record, Source, StatusChange};
use edge::time::Timestamp;
use rust_decimal::Decimal;
use serde::Deserialize;

mod flat;

/// A line's fields (see the module's text); build one from a [`Record`]
/// with [`Line::of`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Line<'a> {
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default, borrow)]
    pub id: Option<&'a str>,
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(default)]
    pub ts: Option<Timestamp>,
    #[serde(default, borrow)]
    pub program: Option<&'a str>,
    #[serde(default, borrow)]
    pub partner: Option<&'a str>,
    #[serde(default, borrow)]
    pub link: Option<&'a str>,
    #[serde(default, borrow)]
    pub click_id: Option<&'a str>,
    #[serde(default)]
    pub click_ts: Option<Timestamp>,
    #[serde(default, borrow)]
    pub event: Option<&'a str>,
    #[serde(default, borrow)]
    pub txn_id: Option<&'a str>,
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub amount: Option<Decimal>,
    #[serde(default)]
    pub currency: Option<Currency>,
    #[serde(default, borrow)]
    pub customer: Option<&'a str>,
    #[serde(default, borrow)]
    pub coupon: Option<&'a str>,
    #[serde(default, borrow)]
    pub original_txn_id: Option<&'a str>,
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub lots: Option<Decimal>,
    #[serde(default, borrow)]
    pub instrument: Option<&'a str>,
    #[serde(default)]
    pub source: Option<Source>,
    #[serde(default)]
    pub bot: Option<bool>,
    #[serde(default)]
    pub unique: Option<bool>,
    #[serde(default, borrow)]
    pub country: Option<&'a str>,
    #[serde(default, borrow)]
    pub sub: Option<Vec<Option<&'a str>>>,
    #[serde(default, borrow)]
    pub email_hash: Option<&'a str>,
    #[serde(default, borrow)]
    pub visitor: Option<&'a str>,
    #[serde(default, borrow)]
    pub bot_reason: Option<&'a str>,
    #[serde(default, borrow)]
    pub referrer_host: Option<&'a str>,
    #[serde(default)]
    pub asn: Option<u32>,
    #[serde(default)]
    pub datacenter: Option<bool>,
    #[serde(default)]
    pub has_referrer: Option<bool>,
    #[serde(default, borrow)]
    pub status: Option<&'a str>,
    #[serde(default)]
    pub approved_at: Option<Timestamp>,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    #[serde(default, borrow)]
    pub status_reason: Option<&'a str>,
    #[serde(default, borrow)]
    pub name: Option<&'a str>,
    #[serde(default, borrow)]
    pub parent: Option<&'a str>,
    #[serde(default, borrow)]
    pub tier: Option<&'a str>,
    #[serde(default)]
    pub history: Option<Vec<StatusChange>>,
    #[serde(default, borrow)]
    pub code: Option<&'a str>,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
}

/// A line read: borrowed from it, or (when a string in it has an escape)
/// read into a [`Record`].
// the common case stays on the stack: boxing it would be an allocation a
// line, what `Line` is for avoiding
#[allow(clippy::large_enum_variant)]
pub enum Parsed<'a> {
    Line(Line<'a>),
    Record(Box<Record>),
}

/// What is wrong with a line serde refused, for a person: the field whose
/// value is bad (`amount`: invalid decimal), else serde's message with the
/// column (the line number serde gives is the line's own, always 1; the
/// caller names the file's line).
pub fn describe_error(text: &str, e: &serde_json::Error) -> String {
    let full = e.to_string();
    let msg = full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(m, _)| m)
        .to_string();
    if e.classify() == serde_json::error::Category::Data {
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text)
        {
            let kind = map
                .get("type")
                .cloned()
                .unwrap_or_else(|| serde_json::Value::from("click"));
            let probe = |k: &str, v: &serde_json::Value| {
                let mut m = serde_json::Map::new();
                m.insert("type".into(), kind.clone());
                m.insert(k.to_string(), v.clone());
                serde_json::from_value::<Record>(serde_json::Value::Object(m))
            };
            // the type first, then each field on its own beside it: the
            // first a record refuses is the one to name
            if let Err(fe) = probe("type", &kind) {
                return format!("`type`: {fe}");
            }
            for (k, v) in &map {
                if let Err(fe) = probe(k, v) {
                    return match k.as_str() {
                        "amount" | "lots" => format!(
                            "`{k}`: {} is not a decimal string (such as \"12.50\")",
                            shown(v)
                        ),
                        _ => format!("`{k}`: {fe}"),
                    };
                }
            }
        }
    }
    format!("{msg} (column {})", e.column())
}

/// A JSON value in an error message, cut to 64 characters.
fn shown(v: &serde_json::Value) -> String {
    let t = v.to_string();
    match t.char_indices().nth(64) {
        Some((i, _)) => format!("{}... ({} bytes)", &t[..i], t.len()),
        None => t,
    }
}

impl<'a> Line<'a> {
    /// Reads a line as a [`Line`], else as a [`Record`]; `Err` is the
    /// `Record`'s error.
    pub fn parse(text: &'a str) -> Result<Parsed<'a>, serde_json::Error> {
        // the common line's shape is read by hand (`flat`), the rest by serde
        if let Some(l) = flat::line(text) {
            return Ok(Parsed::Line(l));
        }
        match serde_json::from_str::<Line>(text) {
            Ok(l) => Ok(Parsed::Line(l)),
            Err(_) => serde_json::from_str::<Record>(text).map(|r| Parsed::Record(Box::new(r))),
        }
    }

    /// A record's fields, borrowed from it.
    pub fn of(r: &'a Record) -> Line<'a> {
        Line {
            seq: r.seq,
            id: r.id.as_deref(),
            kind: r.kind,
            ts: r.ts,
            program: r.program.as_deref(),
            partner: r.partner.as_deref(),
            link: r.link.as_deref(),
            click_id: r.click_id.as_deref(),
            click_ts: r.click_ts,
            event: r.event.as_deref(),
            txn_id: r.txn_id.as_deref(),
            amount: r.amount,
            currency: r.currency,
            customer: r.customer.as_deref(),
            coupon: r.coupon.as_deref(),
            original_txn_id: r.original_txn_id.as_deref(),
            lots: r.lots,
            instrument: r.instrument.as_deref(),
            source: r.source,
            bot: r.bot,
            unique: r.unique,
            country: r.country.as_deref(),
            sub: r
                .sub
                .as_ref()
                .map(|v| v.iter().map(|s| s.as_deref()).collect()),
            email_hash: r.email_hash.as_deref(),
            visitor: r.visitor.as_deref(),
            bot_reason: r.bot_reason.as_deref(),
            referrer_host: r.referrer_host.as_deref(),
            asn: r.asn,
            datacenter: r.datacenter,
            has_referrer: r.has_referrer,
            status: r.status.as_deref(),
            approved_at: r.approved_at,
            expires_at: r.expires_at,
            status_reason: r.status_reason.as_deref(),
            name: r.name.as_deref(),
            parent: r.parent.as_deref(),
            tier: r.tier.as_deref(),
            history: r.history.clone(),
            code: r.code.as_deref(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }

    /// The record, its strings copied.
    pub fn to_record(&self) -> Record {
        let s = |v: Option<&str>| v.map(str::to_string);
        Record {
            seq: self.seq,
            id: s(self.id),
            kind: self.kind,
            ts: self.ts,
            program: s(self.program),
            partner: s(self.partner),
            link: s(self.link),
            click_id: s(self.click_id),
            click_ts: self.click_ts,
            event: s(self.event),
            txn_id: s(self.txn_id),
            amount: self.amount,
            currency: self.currency,
            customer: s(self.customer),
            coupon: s(self.coupon),
            original_txn_id: s(self.original_txn_id),
            lots: self.lots,
            instrument: s(self.instrument),
            source: self.source,
            bot: self.bot,
            unique: self.unique,
            country: s(self.country),
            sub: self.sub.as_ref().map(|v| v.iter().map(|x| s(*x)).collect()),
            email_hash: s(self.email_hash),
            visitor: s(self.visitor),
            bot_reason: s(self.bot_reason),
            referrer_host: s(self.referrer_host),
            asn: self.asn,
            datacenter: self.datacenter,
            has_referrer: self.has_referrer,
            status: s(self.status),
            approved_at: self.approved_at,
            expires_at: self.expires_at,
            status_reason: s(self.status_reason),
            name: s(self.name),
            parent: s(self.parent),
            tier: s(self.tier),
            history: self.history.clone(),
            code: s(self.code),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of a record set (a struct literal, so a field added to
    /// `Record` fails to compile here until it is set, and then fails the
    /// round trip until `Line` has it).
    fn full() -> Record {
        let t = |s: &str| Some(Timestamp::parse(s).unwrap());
        Record {
            seq: Some(7),
            id: Some("ev_1".into()),
            kind: Kind::Conversion,
            ts: t("2026-11-03T10:00:00.000Z"),
            program: Some("fx".into()),
            partner: Some("ib_7".into()),
            link: Some("l_3".into()),
            click_id: Some("k1".into()),
            click_ts: t("2026-11-02T09:00:00.000Z"),
            event: Some("trade".into()),
            txn_id: Some("T-1".into()),
            amount: Some(Decimal::new(12345, 2)),
            currency: Currency::parse("EUR"),
            customer: Some("c1".into()),
            coupon: Some("SAVE".into()),
            original_txn_id: Some("T-0".into()),
            lots: Some(Decimal::new(25, 1)),
            instrument: Some("EURUSD".into()),
            source: Some(Source::Postback),
            bot: Some(false),
            unique: Some(true),
            country: Some("DE".into()),
            sub: Some(vec![Some("s1".into()), None]),
            email_hash: Some("eh".into()),
            visitor: Some("v1".into()),
            bot_reason: Some("head".into()),
            referrer_host: Some("example.com".into()),
            asn: Some(16509),
            datacenter: Some(true),
            has_referrer: Some(false),
            status: Some("approved".into()),
            approved_at: t("2026-11-01T00:00:00.000Z"),
            expires_at: t("2026-12-01T00:00:00.000Z"),
            status_reason: Some("ok".into()),
            name: Some("Ann".into()),
            parent: Some("ib_1".into()),
            tier: Some("gold".into()),
            history: Some(vec![StatusChange {
                status: "approved".into(),
                at: Timestamp::parse("2026-01-01T00:00:00.000Z").unwrap(),
                reason: Some("first".into()),
            }]),
            code: Some("C1".into()),
            created_at: t("2026-01-02T00:00:00.000Z"),
            updated_at: t("2026-01-03T00:00:00.000Z"),
        }
    }

    /// A bad line's error names the field whose value is bad; a line that
    /// is not JSON gives serde's message and the column.
    #[test]
    fn errors_name_the_bad_field() {
        let said = |text: &str| {
            let Err(e) = Line::parse(text) else {
                panic!("read: {text}");
            };
            describe_error(text, &e)
        };
        let conv = |extra: &str| {
            format!(
                r#"{{"id":"e","type":"conversion","ts":"2026-11-01T10:00:00Z","event":"sale"{extra}}}"#
            )
        };
        assert_eq!(
            said(&conv(r#","amount":"abc","currency":"USD""#)),
            r#"`amount`: "abc" is not a decimal string (such as "12.50")"#
        );
        assert_eq!(
            said(&conv(r#","lots":2.5"#)),
            r#"`lots`: 2.5 is not a decimal string (such as "12.50")"#
        );
        assert_eq!(
            said(&conv(r#","click_ts":"yesterday""#)),
            "`click_ts`: not an RFC 3339 timestamp"
        );
        assert!(said(r#"{"id":"e","type":"conv"}"#).starts_with("`type`: unknown variant `conv`"));
        assert_eq!(
            said(r#"{"id":"e","#),
            "EOF while parsing a value (column 10)"
        );
    }

    #[test]
    fn a_line_reads_every_field_of_a_record() {
        let r = full();
        let text = serde_json::to_string(&r).unwrap();
        let Ok(Parsed::Line(l)) = Line::parse(&text) else {
            panic!("not read as a line: {text}");
        };
        assert_eq!(l, Line::of(&r));
        assert_eq!(l.to_record(), r);
    }

    #[test]
    fn escapes_and_errors_are_read_as_records() {
        let text = r#"{"type":"click","id":"a\"b","ts":"2026-11-03T10:00:00.000Z"}"#;
        match Line::parse(text) {
            Ok(Parsed::Record(r)) => assert_eq!(r.id.as_deref(), Some("a\"b")),
            _ => panic!("an escaped id is read as a record"),
        }
        for bad in [
            r#"{"type":"click","id":5}"#,
            r#"{"type":"nope"}"#,
            r#"{"type":"click","id":"a","id":"b"}"#,
            r#"{"type":"conversion","amount":"x"}"#,
            "{",
        ] {
            let want = serde_json::from_str::<Record>(bad).unwrap_err().to_string();
            match Line::parse(bad) {
                Err(e) => assert_eq!(e.to_string(), want, "{bad}"),
                Ok(_) => panic!("accepted: {bad}"),
            }
        }
        // a field no record has is ignored by both
        let text = r#"{"type":"click","id":"a","whatever":[1,{"x":2}]}"#;
        assert!(matches!(Line::parse(text), Ok(Parsed::Line(l)) if l.id == Some("a")));
    }
}
