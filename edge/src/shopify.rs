//! Shopify webhooks (`POST /integrations/shopify/{program}`): the
//! `X-Shopify-Hmac-Sha256` check and the mapping of paid orders and refunds
//! to conversions. See docs/integrations.md for the tables.
//!
//! Shopify signs the raw body only: base64 of HMAC-SHA256 keyed with the
//! app's client secret. There is no timestamp to bound a replay, so the
//! webhook id (`X-Shopify-Webhook-Id`) is what makes a delivery count once,
//! besides the conversion's own `program|event|txn_id` key.

use crate::auth::SignatureError;
use crate::fields::FieldError;
use crate::integration::{self as i, at, text, Conversion, Mapped};
use crate::postback::parse_decimal;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rust_decimal::Decimal;
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const SIGNATURE_HEADER: &str = "X-Shopify-Hmac-Sha256";
pub const TOPIC_HEADER: &str = "X-Shopify-Topic";
pub const WEBHOOK_ID_HEADER: &str = "X-Shopify-Webhook-Id";

/// The header value Shopify sends for a body under a secret.
pub fn sign(secret: &str, body: &[u8]) -> String {
    STANDARD.encode(mac(secret, body))
}

fn mac(secret: &str, body: &[u8]) -> Vec<u8> {
    match <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) {
        Ok(mut m) => {
            m.update(body);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// Checks `X-Shopify-Hmac-Sha256` against each of the program's secrets,
/// constant-time.
pub fn verify(header: &str, body: &[u8], secrets: &[String]) -> Result<(), SignatureError> {
    // Compared in its base64 form (44 characters for 32 bytes, one canonical
    // encoding), which spares the worker a base64 decoder.
    let given = header.trim().as_bytes();
    if given.len() != 44
        || !given
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        return Err(SignatureError::Malformed);
    }
    let mut ok = false;
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        ok |= bool::from(sign(secret, body).as_bytes().ct_eq(given));
    }
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn field(name: &str, reason: &str) -> FieldError {
    FieldError::new(name, reason)
}

/// The click id a visitor brought: a cart attribute `pt_click` or
/// `click_id` (`note_attributes`), else the `click_id`, `pt_click` or `ref`
/// parameter of the landing page the order session started on.
fn click_id(order: &Value) -> Option<String> {
    let mut out = Vec::new();
    if let Some(notes) = at(order, &["note_attributes"]).and_then(Value::as_array) {
        for name in ["pt_click", "click_id"] {
            out.extend(
                notes
                    .iter()
                    .filter(|n| text(n, &["name"]).as_deref() == Some(name))
                    .map(|n| text(n, &["value"])),
            );
        }
    }
    if let Some(landing) = text(order, &["landing_site"]) {
        let query = landing
            .split_once('?')
            .map_or("", |(_, q)| q.split('#').next().unwrap_or(""));
        let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        for name in ["click_id", "pt_click", "ref"] {
            out.extend(
                params
                    .iter()
                    .filter(|(k, _)| k == name)
                    .map(|(_, v)| Some(v.clone())),
            );
        }
    }
    i::click_id(out)
}

/// Maps a verified webhook of `topic`. `Err` names the field that made a
/// used topic unusable.
pub fn map(topic: &str, body: &Value) -> Result<Mapped, FieldError> {
    let ts = text(body, &["processed_at"]).or_else(|| text(body, &["created_at"]));
    let mut c = match topic {
        "orders/paid" | "orders/create" => {
            if topic == "orders/create"
                && text(body, &["financial_status"]).as_deref() != Some("paid")
            {
                return Ok(Mapped::Ignored("order not paid"));
            }
            let id = text(body, &["id"]).ok_or_else(|| field("id", "required"))?;
            let total =
                text(body, &["total_price"]).ok_or_else(|| field("total_price", "required"))?;
            if parse_decimal("total_price", &total, false)?.is_zero() {
                return Ok(Mapped::Ignored("nothing paid"));
            }
            let mut c = Conversion::new("sale", id);
            c.set("amount", Some(total));
            c.set("currency", text(body, &["currency"]));
            c.set("customer", text(body, &["customer", "id"]));
            let first_code = at(body, &["discount_codes"])
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|d| text(d, &["code"]));
            c.set("coupon", i::coupon([first_code]));
            c.set("click_id", click_id(body));
            c.set(
                "email",
                i::email([
                    text(body, &["email"]),
                    text(body, &["contact_email"]),
                    text(body, &["customer", "email"]),
                ]),
            );
            c.set(
                "country",
                i::country(
                    text(body, &["billing_address", "country_code"])
                        .or_else(|| text(body, &["shipping_address", "country_code"])),
                ),
            );
            c
        }
        "refunds/create" => {
            let id = text(body, &["id"]).ok_or_else(|| field("id", "required"))?;
            let order = text(body, &["order_id"]).ok_or_else(|| field("order_id", "required"))?;
            let mut sum = Decimal::ZERO;
            let mut currency: Option<String> = None;
            for t in at(body, &["transactions"])
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let kind = text(t, &["kind"]);
                let status = text(t, &["status"]);
                if kind.as_deref() != Some("refund")
                    || status.as_deref().is_some_and(|s| s != "success")
                {
                    continue;
                }
                let cur = text(t, &["currency"]);
                if currency.is_none() {
                    currency = cur.clone();
                } else if cur.is_some() && cur != currency {
                    return Err(field(
                        "transactions",
                        "refund transactions in several currencies",
                    ));
                }
                let amount =
                    text(t, &["amount"]).ok_or_else(|| field("transactions.amount", "required"))?;
                sum = sum
                    .checked_add(parse_decimal("transactions.amount", &amount, false)?)
                    .ok_or_else(|| field("transactions.amount", "too large"))?;
            }
            if sum.is_zero() {
                return Ok(Mapped::Ignored("nothing refunded"));
            }
            let mut c = Conversion::new("refund", id);
            c.set("amount", Some(sum.to_string()));
            c.set("currency", currency);
            c.originals = vec![order];
            c
        }
        _ => return Ok(Mapped::Ignored("topic not used")),
    };
    c.set("ts", ts);
    Ok(Mapped::Conversion(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "shpss_0123456789abcdef0123456789ab";

    #[test]
    fn hmac_as_shopify_documents_it() {
        let body = br#"{"id":820982911946154508,"total_price":"403.00"}"#;
        let header = sign(SECRET, body);
        // Base64 (standard alphabet, padded) of a 32-byte HMAC-SHA256.
        assert_eq!(header.len(), 44);
        assert!(header.ends_with('='));
        let secrets = vec![SECRET.to_string()];
        assert_eq!(verify(&header, body, &secrets), Ok(()));
        assert_eq!(
            verify(
                &header,
                br#"{"id":820982911946154508,"total_price":"4030.00"}"#,
                &secrets
            ),
            Err(SignatureError::Mismatch)
        );
        // Rotation: the old and the new client secret both verify.
        let old = "shpss_old_0123456789abcdef0123456";
        let both = vec![SECRET.to_string(), old.to_string()];
        assert_eq!(verify(&sign(old, body), body, &both), Ok(()));
        assert_eq!(
            verify(&sign(old, body), body, &secrets),
            Err(SignatureError::Mismatch)
        );
        for bad in ["", "not base64!", "AAAA", &hex::encode([0u8; 32])] {
            assert_eq!(
                verify(bad, body, &secrets),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }

    /// An `orders/paid` body as Shopify's webhook reference shows it (trimmed).
    fn order(extra: Value) -> Value {
        let mut v = json!({
            "id": 820982911946154508u64, "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
            "app_id": null, "browser_ip": null, "buyer_accepts_marketing": true,
            "cancel_reason": "customer", "cancelled_at": null, "cart_token": null,
            "checkout_id": null, "checkout_token": null, "confirmed": false,
            "contact_email": "jon@example.com", "created_at": "2021-12-31T19:00:00-05:00",
            "currency": "USD", "current_subtotal_price": "398.00", "current_total_price": "403.00",
            "customer_locale": "en", "discount_codes": [{"code": "SPRING", "amount": "10.00", "type": "fixed_amount"}],
            "email": "jon@example.com", "financial_status": "paid", "fulfillment_status": null,
            "landing_site": "/products/shirt?utm_source=x&ref=FROMref", "name": "#9999",
            "note": null, "note_attributes": [{"name": "gift", "value": "yes"}],
            "order_number": 1234, "presentment_currency": "USD",
            "processed_at": "2021-12-31T19:00:00-05:00", "referring_site": null,
            "subtotal_price": "398.00", "test": true, "total_discounts": "10.00",
            "total_price": "403.00", "total_tax": "0.00",
            "customer": {"id": 115310627314723954u64, "email": "john@example.com", "first_name": "John"},
            "billing_address": {"country": "Canada", "country_code": "CA", "province_code": "ON"}
        });
        if let (Some(s), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                s.insert(k.clone(), x.clone());
            }
        }
        v
    }

    fn conversion(topic: &str, v: &Value) -> Conversion {
        match map(topic, v).unwrap() {
            Mapped::Conversion(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn paid_order_is_a_sale() {
        let c = conversion("orders/paid", &order(json!({})));
        assert_eq!(c.get("event"), Some("sale"));
        assert_eq!(c.get("txn_id"), Some("820982911946154508"));
        assert_eq!(c.get("amount"), Some("403.00"));
        assert_eq!(c.get("currency"), Some("USD"));
        assert_eq!(c.get("customer"), Some("115310627314723954"));
        assert_eq!(c.get("coupon"), Some("SPRING"));
        assert_eq!(c.get("click_id"), Some("FROMref"));
        assert_eq!(c.get("email"), Some("jon@example.com"));
        assert_eq!(c.get("country"), Some("CA"));
        assert_eq!(c.get("ts"), Some("2021-12-31T19:00:00-05:00"));
        // orders/create counts only once paid, with the same payload.
        assert_eq!(conversion("orders/create", &order(json!({}))), c);
        assert_eq!(
            map(
                "orders/create",
                &order(json!({"financial_status": "pending"}))
            )
            .unwrap(),
            Mapped::Ignored("order not paid")
        );
        // Cart attributes win over the landing page; pt_click over click_id.
        let v = order(
            json!({"note_attributes": [{"name": "click_id", "value": "NOTEclick"},
            {"name": "pt_click", "value": "PTclick"}], "landing_site": "https://shop.example/?click_id=LANDclick"}),
        );
        assert_eq!(
            conversion("orders/paid", &v).get("click_id"),
            Some("PTclick")
        );
        let v =
            order(json!({"note_attributes": [], "landing_site": "/?ref=R&click_id=LANDclick#top"}));
        assert_eq!(
            conversion("orders/paid", &v).get("click_id"),
            Some("LANDclick")
        );
        // A guest order: no customer id (the glue uses the email hash).
        let v = order(json!({"customer": null, "discount_codes": [], "landing_site": null}));
        let c = conversion("orders/paid", &v);
        assert_eq!(c.get("customer"), None);
        assert_eq!(c.get("coupon"), None);
        assert_eq!(c.get("click_id"), None);
        // JPY and KWD totals are written as the shop sends them.
        let c = conversion(
            "orders/paid",
            &order(json!({"currency": "KWD", "total_price": "12.500"})),
        );
        assert_eq!(
            (c.get("amount"), c.get("currency")),
            (Some("12.500"), Some("KWD"))
        );
        assert_eq!(
            map("orders/paid", &order(json!({"total_price": "0.00"}))).unwrap(),
            Mapped::Ignored("nothing paid")
        );
        assert_eq!(
            map("orders/paid", &order(json!({"total_price": 403.0})))
                .unwrap_err()
                .field,
            "total_price"
        );
        assert_eq!(
            map("orders/paid", &order(json!({"total_price": "4e2"})))
                .unwrap_err()
                .field,
            "total_price"
        );
    }

    /// A `refunds/create` body as Shopify's reference shows it (trimmed).
    fn refund(transactions: Value) -> Value {
        json!({"id": 509562969u64, "order_id": 450789469u64, "created_at": "2024-01-02T10:00:00-05:00",
            "note": "it broke during shipping", "user_id": 548380009u64,
            "processed_at": "2024-01-02T10:00:00-05:00", "restock": true,
            "refund_line_items": [{"id": 104689539, "quantity": 1, "line_item_id": 703073504, "subtotal": 195.66}],
            "transactions": transactions, "order_adjustments": []})
    }

    #[test]
    fn refund_sums_its_successful_refund_transactions() {
        let v = refund(json!([
            {"id": 179259969u64, "order_id": 450789469u64, "kind": "refund", "gateway": "bogus",
             "status": "success", "amount": "41.94", "currency": "USD"},
            {"id": 179259970u64, "kind": "refund", "status": "success", "amount": "8.06", "currency": "USD"},
            {"id": 179259971u64, "kind": "refund", "status": "failure", "amount": "100.00", "currency": "USD"},
            {"id": 179259972u64, "kind": "sale", "status": "success", "amount": "999.00", "currency": "USD"}
        ]));
        let c = conversion("refunds/create", &v);
        assert_eq!(c.get("event"), Some("refund"));
        assert_eq!(c.get("txn_id"), Some("509562969"));
        assert_eq!(c.get("amount"), Some("50.00"));
        assert_eq!(c.get("currency"), Some("USD"));
        assert_eq!(c.originals, vec!["450789469"]);
        assert_eq!(c.get("ts"), Some("2024-01-02T10:00:00-05:00"));
        // A restock without money is no refund.
        assert_eq!(
            map("refunds/create", &refund(json!([]))).unwrap(),
            Mapped::Ignored("nothing refunded")
        );
        let mixed = refund(
            json!([{"kind": "refund", "status": "success", "amount": "1.00", "currency": "USD"},
            {"kind": "refund", "status": "success", "amount": "1.00", "currency": "EUR"}]),
        );
        assert_eq!(
            map("refunds/create", &mixed).unwrap_err().field,
            "transactions"
        );
    }

    #[test]
    fn other_topics_are_ignored() {
        assert_eq!(
            map("customers/create", &json!({"id": 1})).unwrap(),
            Mapped::Ignored("topic not used")
        );
        assert_eq!(map("orders/paid", &json!({})).unwrap_err().field, "id");
        assert_eq!(
            map("refunds/create", &json!({"id": 1})).unwrap_err().field,
            "order_id"
        );
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Hostile payloads never panic.
        #[test]
        fn any_json_maps_or_names_a_field(body in crate::integration::arb_json(),
            topic in prop::sample::select(vec!["orders/paid", "orders/create", "refunds/create"])) {
            match map(topic, &body) {
                Ok(Mapped::Conversion(c)) => prop_assert!(c.get("txn_id").is_some()),
                Ok(Mapped::Ignored(why)) => prop_assert!(!why.is_empty()),
                Ok(Mapped::Refs { txn, refs }) => prop_assert!(!txn.is_empty() && !refs.is_empty()),
                Err(e) => prop_assert!(!e.field.is_empty()),
            }
        }
    }
}
