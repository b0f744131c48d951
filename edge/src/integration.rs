//! What the Stripe and Shopify webhooks share: small accessors over
//! `serde_json::Value` (their payloads are large and only a few fields
//! matter, so no derived structs), and what a provider event becomes: the
//! fields of a postback, validated afterwards by `Postback::parse` exactly
//! like one, so an integration can never record what a postback could not.

use crate::admin::{valid_email, Program};
use crate::fields::{FieldError, Fields};
use crate::ids::is_valid_id;
use crate::postback::Postback;
use crate::time::Timestamp;
use serde_json::Value;

/// Largest webhook body a provider may send (Stripe invoices with many
/// lines and Shopify orders run to tens of KiB).
pub const MAX_BODY: usize = 256 * 1024;

/// What a provider event means for the record.
#[derive(Debug, PartialEq, Eq)]
pub enum Mapped {
    /// An event the program does not use, and why: answered 200
    /// `{"status":"ignored"}`.
    Ignored(&'static str),
    Conversion(Conversion),
    /// Other ids of a recorded sale's payment, learnt apart from the sale
    /// (Stripe's `invoice_payment.paid` from API 2025-03-31 on: the invoice
    /// and the payment intent or charge that paid it), so a refund or
    /// dispute naming them reverses the sale. Nothing is recorded.
    Refs {
        txn: String,
        refs: Vec<String>,
    },
}

/// A conversion as postback fields (`event`, `txn_id`, `amount`, ...).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Conversion {
    pub fields: Vec<(String, String)>,
    /// Refund and chargeback: the ids the original sale may be recorded
    /// under, most specific first. The glue looks them up among the aliases
    /// of earlier sales; without a hit the first one is the original.
    pub originals: Vec<String>,
    /// Sale: further ids of the same payment (payment intent, charge) that a
    /// later refund or dispute may name instead of the sale's `txn_id`.
    pub aliases: Vec<String>,
    /// Reinstatement of a refund: the charge refunded (a refund recorded
    /// without its own id, `<charge>:refund:<total>`, is found among that
    /// charge's refunds by its amount). A refund recorded so: its charge.
    pub refund_of_charge: Option<String>,
}

impl Conversion {
    pub fn new(event: &str, txn_id: String) -> Conversion {
        Conversion {
            fields: vec![("event".into(), event.into()), ("txn_id".into(), txn_id)],
            ..Conversion::default()
        }
    }

    /// Sets a field once; absent and empty values are skipped.
    pub fn set(&mut self, k: &str, v: Option<String>) {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            if self.get(k).is_none() {
                self.fields.push((k.to_string(), v));
            }
        }
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.as_str())
    }

    /// The postback this conversion is, validated like any other.
    /// `original` is the resolved original of a refund or chargeback; a
    /// conversion without a customer id but with an email is the customer
    /// `email_hash` (guest checkouts), so a returning guest is one customer.
    pub fn postback(
        &self,
        program: &Program,
        original: Option<String>,
        email_hash: impl Fn(&str) -> String,
        now_ms: i64,
    ) -> Result<Postback, FieldError> {
        let mut pairs = self.fields.clone();
        pairs.retain(|(k, _)| k != "program" && k != "original_txn_id");
        pairs.push(("program".into(), program.id.clone()));
        if let Some(o) = original.or_else(|| self.originals.first().cloned()) {
            pairs.push(("original_txn_id".into(), o));
        }
        if self.get("customer").is_none() {
            if let Some(e) = self.get("email") {
                pairs.push(("customer".into(), email_hash(e)));
            }
        }
        Postback::parse(&Fields::from_pairs(pairs)?, program, now_ms)
    }
}

/// The value at a path of object keys.
pub fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

/// A non-empty string, or an integer written as one (Shopify ids are
/// numbers beyond 2^53: serde_json keeps them exact as u64/i64).
pub fn text(v: &Value, path: &[&str]) -> Option<String> {
    match at(v, path)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// An integer (never a float).
pub fn int(v: &Value, path: &[&str]) -> Option<i64> {
    at(v, path)?.as_i64()
}

/// A reference that is either an id or an expanded object with an `id`
/// (Stripe's expandable fields).
pub fn id_of(v: &Value, path: &[&str]) -> Option<String> {
    let r = at(v, path)?;
    text(r, &[]).or_else(|| text(r, &["id"]))
}

/// The first candidate that can be a click id (`[A-Za-z0-9_-]{1,64}`, the
/// alphabet of ours); it is verified later, when evidence is resolved.
pub fn click_id(candidates: impl IntoIterator<Item = Option<String>>) -> Option<String> {
    candidates.into_iter().flatten().find(|c| is_valid_id(c))
}

/// The first candidate that can be a coupon code.
pub fn coupon(candidates: impl IntoIterator<Item = Option<String>>) -> Option<String> {
    candidates.into_iter().flatten().find(|c| is_valid_id(c))
}

/// The first candidate that is an email address.
pub fn email(candidates: impl IntoIterator<Item = Option<String>>) -> Option<String> {
    candidates.into_iter().flatten().find(|e| valid_email(e))
}

/// An ISO 3166 two-letter country code, upper-cased.
pub fn country(c: Option<String>) -> Option<String> {
    c.map(|c| c.to_ascii_uppercase())
        .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()))
}

/// Unix seconds as the record's RFC 3339.
pub fn unix_ts(secs: Option<i64>) -> Option<String> {
    let ms = secs?.checked_mul(1000)?;
    Timestamp::from_ms(ms).map(|t| t.to_string())
}

/// Arbitrary JSON built from the keys the mappers read, for property tests.
#[cfg(test)]
pub fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    const KEYS: &[&str] = &[
        "id",
        "type",
        "currency",
        "amount",
        "amount_total",
        "amount_paid",
        "amount_refunded",
        "payment_status",
        "invoice",
        "payment_intent",
        "charge",
        "customer",
        "metadata",
        "click_id",
        "pt_click",
        "client_reference_id",
        "discounts",
        "discount",
        "coupon",
        "promotion_code",
        "code",
        "refunds",
        "data",
        "previous_attributes",
        "total_price",
        "financial_status",
        "note_attributes",
        "name",
        "value",
        "landing_site",
        "discount_codes",
        "transactions",
        "kind",
        "status",
        "order_id",
        "email",
        "processed_at",
        "created_at",
        "subscription_details",
        "parent",
        "object",
        "created",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::from),
        prop::sample::select(KEYS).prop_map(Value::from),
        prop::sample::select(vec![
            "usd",
            "JPY",
            "kwd",
            "paid",
            "refund",
            "success",
            "12.50",
            "-1",
            "0",
            "/?ref=x&click_id=y"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accessors() {
        let v = json!({"a": {"b": "x", "n": 820982911946154508u64, "f": 1.5, "e": ""},
                       "ref": {"id": "cus_1"}, "s": "cus_2"});
        assert_eq!(text(&v, &["a", "b"]).as_deref(), Some("x"));
        assert_eq!(text(&v, &["a", "n"]).as_deref(), Some("820982911946154508"));
        assert_eq!(text(&v, &["a", "f"]), None);
        assert_eq!(text(&v, &["a", "e"]), None);
        assert_eq!(text(&v, &["a", "b", "c"]), None);
        assert_eq!(id_of(&v, &["ref"]).as_deref(), Some("cus_1"));
        assert_eq!(id_of(&v, &["s"]).as_deref(), Some("cus_2"));
        assert_eq!(int(&v, &["a", "f"]), None);
        assert_eq!(
            unix_ts(Some(1_700_000_000)).as_deref(),
            Some("2023-11-14T22:13:20.000Z")
        );
        assert_eq!(unix_ts(Some(i64::MAX)), None);
        assert_eq!(unix_ts(Some(-1)), None);
        assert_eq!(
            click_id([None, Some("not a click".into()), Some("abc-_1".into())]).as_deref(),
            Some("abc-_1")
        );
        assert_eq!(
            email([Some("nope".into()), Some("a@b.co".into())]).as_deref(),
            Some("a@b.co")
        );
        assert_eq!(country(Some("de".into())).as_deref(), Some("DE"));
        assert_eq!(country(Some("Germany".into())), None);
    }

    #[test]
    fn conversions_become_validated_postbacks() {
        let program = Program::parse("shop", b"{}").unwrap();
        let now = 1_800_000_000_000;
        let mut c = Conversion::new("sale", "T1".into());
        c.set("amount", Some("12.50".into()));
        c.set("currency", Some("USD".into()));
        c.set("email", Some("Guest@Example.com".into()));
        let pb = c
            .postback(&program, None, |e| format!("h:{}", e.to_lowercase()), now)
            .unwrap();
        assert_eq!(pb.program, "shop");
        assert_eq!(pb.customer.as_deref(), Some("h:guest@example.com"));
        assert_eq!(pb.dedupe_key(), "shop|sale|T1");
        let mut r = Conversion::new("refund", "R1".into());
        r.set("amount", Some("1.00".into()));
        r.set("currency", Some("USD".into()));
        r.originals = vec!["pi_1".into(), "ch_1".into()];
        let pb = r.postback(&program, None, |e| e.to_string(), now).unwrap();
        assert_eq!(pb.original_txn_id.as_deref(), Some("pi_1"));
        let pb = r
            .postback(&program, Some("in_1".into()), |e| e.to_string(), now)
            .unwrap();
        assert_eq!(pb.original_txn_id.as_deref(), Some("in_1"));
        // What a postback could not record, an integration cannot either.
        let long = Conversion::new("sale", "x".repeat(200));
        assert_eq!(
            long.postback(&program, None, |e| e.to_string(), now)
                .unwrap_err()
                .field,
            "txn_id"
        );
        let mut bad = Conversion::new("sale", "T2".into());
        bad.set("amount", Some("1".into()));
        bad.set("currency", Some("usd".into()));
        assert_eq!(
            bad.postback(&program, None, |e| e.to_string(), now)
                .unwrap_err()
                .field,
            "currency"
        );
    }

    #[test]
    fn conversion_fields_are_set_once() {
        let mut c = Conversion::new("sale", "T1".into());
        c.set("amount", Some("1.00".into()));
        c.set("amount", Some("2.00".into()));
        c.set("coupon", Some(String::new()));
        c.set("customer", None);
        assert_eq!(c.get("amount"), Some("1.00"));
        assert_eq!(c.get("coupon"), None);
        assert_eq!(c.get("txn_id"), Some("T1"));
    }
}
