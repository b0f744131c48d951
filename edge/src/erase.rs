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
}
