//! Erasure of one customer's personal data (`DELETE /api/customers/{id}` at
//! the edge, `settlement erase` in the settlement store): the same rules on
//! both sides, so a settlement that pulls again after an erasure, or that had
//! already pulled, sees the same facts and books the same sums.
//!
//! What stays: everything money depends on (type, event, amount, currency,
//! program, partner, link, click id and time, txn ids, coupon, lots,
//! instrument, source, bot flag, seq, and the conversion's country, which a
//! commission rule may match on). What goes: the customer id (replaced by a
//! stable pseudonym, so lifetime locks and deal attribution still hold
//! together), the email hash, and the person's traces on the conversion and
//! on its click (visitor hash, referrer, ASN, datacenter flag, the click's
//! country and `sub` values).

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// Prefix of every pseudonym: an erased customer is recognisable as such.
pub const PREFIX: &str = "erased:";

/// The stable, irreversible pseudonym of a customer id under a secret:
/// `erased:` + the first 32 hex characters of HMAC-SHA256(secret,
/// "customer-erasure" NUL id). The same id and secret always give the same
/// pseudonym; without the secret it cannot be recomputed from a guess.
pub fn pseudonym(secret: &[u8], customer: &str) -> String {
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return format!("{PREFIX}invalid-key"),
    };
    mac.update(b"customer-erasure\0");
    mac.update(customer.as_bytes());
    let mut h = hex::encode(mac.finalize().into_bytes());
    h.truncate(32);
    format!("{PREFIX}{h}")
}

/// True for a pseudonym (an id that was already erased).
pub fn is_pseudonym(s: &str) -> bool {
    s.strip_prefix(PREFIX)
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Personal fields of a conversion or deal (the customer's own record).
pub const CONVERSION_FIELDS: &[&str] = &[
    "email_hash",
    "visitor",
    "referrer_host",
    "has_referrer",
    "asn",
    "datacenter",
];

/// Personal fields of the click a customer's conversion names.
pub const CLICK_FIELDS: &[&str] = &[
    "visitor",
    "referrer_host",
    "has_referrer",
    "asn",
    "datacenter",
    "country",
    "sub",
];

/// Pseudonymises a conversion or deal record (a JSON object) in place:
/// `customer` becomes the pseudonym, the personal fields go. Returns whether
/// anything changed (an erased record is left as it is).
pub fn scrub_customer_record(rec: &mut Value, pseudonym: &str) -> bool {
    let Some(obj) = rec.as_object_mut() else {
        return false;
    };
    let mut changed = false;
    if obj.get("customer").and_then(Value::as_str) != Some(pseudonym) {
        obj.insert("customer".into(), Value::String(pseudonym.to_string()));
        changed = true;
    }
    for f in CONVERSION_FIELDS {
        changed |= obj.remove(*f).is_some();
    }
    changed
}

/// Removes the personal fields of a click record in place.
pub fn scrub_click_record(rec: &mut Value) -> bool {
    let Some(obj) = rec.as_object_mut() else {
        return false;
    };
    let mut changed = false;
    for f in CLICK_FIELDS {
        changed |= obj.remove(*f).is_some();
    }
    changed
}

/// Keys whose values are a person's data in the bodies the rejections log
/// keeps (a provider's customer details, a postback's `email`).
const PERSONAL: &[&str] = &[
    "email",
    "contact_email",
    "customer_email",
    "receipt_email",
    "phone",
    "first_name",
    "last_name",
    "address",
    "addresses",
    "default_address",
    "billing_address",
    "shipping_address",
    "billing_details",
    "customer_details",
    "shipping",
    "shipping_details",
    "customer_name",
    "customer_phone",
    "customer_address",
    "customer_shipping",
];

/// Keys that are a person's data inside a customer object (`customer`,
/// expanded): its `name` too, which elsewhere (a Shopify order's `name`,
/// `#1001`) is not.
const PERSONAL_IN_CUSTOMER: &[&str] = &["name", "description"];

/// What a refused request keeps of a person: nothing. The values of
/// [`PERSONAL`] keys (at any depth of a JSON body; or in a form or query
/// string) become `[personal]`, and any word with an `@` left (an email in
/// another field, or in a body that is not JSON) too, before the raw
/// request enters the rejections log. An erasure finds a customer's rows by
/// its id: for a guest checkout that is an email hash, which no raw body
/// holds, so the email, name and address must never be kept (review22 F3).
pub fn redact_personal(raw: &str) -> String {
    const GONE: &str = "[personal]";
    let t = raw.trim_start();
    let structured = if t.starts_with('{') || t.starts_with('[') {
        serde_json::from_str::<Value>(raw).ok().map(|mut v| {
            // whether anything was redacted; `customer`: inside a customer
            fn walk(v: &mut Value, customer: bool) -> bool {
                match v {
                    Value::Object(m) => {
                        let mut changed = false;
                        for (k, x) in m.iter_mut() {
                            let personal = PERSONAL.contains(&k.as_str())
                                || (customer && PERSONAL_IN_CUSTOMER.contains(&k.as_str()));
                            if personal && !x.is_null() {
                                *x = Value::String(GONE.into());
                                changed = true;
                            } else {
                                changed |= walk(x, k == "customer");
                            }
                        }
                        changed
                    }
                    Value::Array(a) => a.iter_mut().fold(false, |c, x| walk(x, customer) | c),
                    _ => false,
                }
            }
            // as sent when nothing is personal
            if walk(&mut v, false) {
                v.to_string()
            } else {
                raw.to_string()
            }
        })
    } else if form_urlencoded::parse(raw.as_bytes()).any(|(k, _)| PERSONAL.contains(&&*k)) {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
            .into_owned()
            .map(|(k, v)| {
                if PERSONAL.contains(&k.as_str()) {
                    (k, GONE.to_string())
                } else {
                    (k, v)
                }
            })
            .collect();
        Some(
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish(),
        )
    } else {
        None
    };
    let text = structured.unwrap_or_else(|| raw.to_string());
    // any email left: a word around an `@` (up to a delimiter)
    let delim = |c: char| c.is_whitespace() || "\"'<>,;&=?()[]{}".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find('@') {
        let start = rest[..at].rfind(delim).map_or(0, |i| i + 1);
        let end = rest[at + 1..]
            .find(delim)
            .map_or(rest.len(), |i| at + 1 + i);
        out.push_str(&rest[..start]);
        if start < at && end > at + 1 {
            out.push_str(GONE);
        } else {
            out.push_str(&rest[start..end]);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pseudonym_is_stable_keyed_and_recognisable() {
        let a = pseudonym(b"k1", "acct_55");
        assert_eq!(a, pseudonym(b"k1", "acct_55"));
        assert_ne!(a, pseudonym(b"k2", "acct_55"));
        assert_ne!(a, pseudonym(b"k1", "acct_56"));
        assert!(is_pseudonym(&a), "{a}");
        assert!(!a.contains("acct_55"));
        assert!(!is_pseudonym("acct_55"));
        assert!(!is_pseudonym("erased:xyz"));
    }

    #[test]
    fn scrubbing_keeps_money_fields() {
        let mut conv = json!({"id":"ev_1","type":"conversion","event":"sale","txn_id":"T1",
            "amount":"10.00","currency":"USD","customer":"c1","email_hash":"ab","country":"DE",
            "partner":"p","click_id":"x","visitor":"v"});
        let p = pseudonym(b"k", "c1");
        assert!(scrub_customer_record(&mut conv, &p));
        assert_eq!(conv["customer"], p.as_str());
        assert_eq!(conv["amount"], "10.00");
        assert_eq!(conv["country"], "DE");
        assert_eq!(conv["click_id"], "x");
        assert!(conv.get("email_hash").is_none() && conv.get("visitor").is_none());
        assert!(!scrub_customer_record(&mut conv, &p), "idempotent");

        let mut click = json!({"id":"ev_x","type":"click","visitor":"v","sub":["s",null],
            "country":"DE","partner":"p","bot":false,"referrer_host":"r.example"});
        assert!(scrub_click_record(&mut click));
        assert_eq!(
            click,
            json!({"id":"ev_x","type":"click","partner":"p","bot":false})
        );
        assert!(!scrub_click_record(&mut click));
        assert!(!scrub_click_record(&mut json!([1])));
    }

    /// review22 F3: a guest's email, name, phone and address never enter
    /// the rejections log; ids, amounts and the rest stay.
    #[test]
    fn personal_data_is_redacted_from_kept_requests() {
        let stripe = r#"{"id":"evt_1","data":{"object":{"customer":null,"amount_total":1999,"customer_details":{"email":"grete@example.com","name":"Grete Gast","phone":"+49 30 1234","address":{"city":"Berlin"}}}}}"#;
        let r = redact_personal(stripe);
        for gone in ["grete@example.com", "Grete Gast", "+49 30 1234", "Berlin"] {
            assert!(!r.contains(gone), "{r}");
        }
        assert!(
            r.contains("evt_1") && r.contains("1999") && r.contains("[personal]"),
            "{r}"
        );
        let shopify = r##"{"id":1,"contact_email":"jon@example.com","customer":{"id":7,"email":"jon@example.com","first_name":"Jon"},"note":"call jon@example.com","name":"#9999"}"##;
        let r = redact_personal(shopify);
        assert!(
            !r.contains("jon@example.com") && !r.contains("Jon\""),
            "{r}"
        );
        assert!(r.contains("#9999") && r.contains("\"id\":7"), "{r}");
        let form = "program=p&event=lead&txn_id=T1&email=ann%40example.com&customer=c1";
        let r = redact_personal(form);
        assert!(
            !r.contains("ann") && r.contains("txn_id=T1") && r.contains("customer=c1"),
            "{r}"
        );
        // not JSON (truncated): its emails still go
        let r = redact_personal(r#"{"email":"bob@example.com","amount":"#);
        assert!(!r.contains("bob@example.com"), "{r}");
        // a Stripe invoice's customer fields, an expanded customer's name
        let invoice = r#"{"id":"in_1","customer_name":"Ann Lee","customer_phone":"+1 555","customer_address":{"city":"Oslo"},"customer":{"id":"cus_1","name":"Ann Lee"}}"#;
        let r = redact_personal(invoice);
        assert!(
            !r.contains("Ann Lee") && !r.contains("+1 555") && !r.contains("Oslo"),
            "{r}"
        );
        assert!(r.contains("cus_1") && r.contains("in_1"), "{r}");
        // nothing personal: unchanged, byte for byte
        assert_eq!(redact_personal("event=x&amount=NaN"), "event=x&amount=NaN");
        let json = r#"{ "txn_id": "T",  "amount": 5.0 }"#;
        assert_eq!(redact_personal(json), json);
    }
}
