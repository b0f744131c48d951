//! Stripe webhooks (`POST /integrations/stripe/{program}`): the
//! `Stripe-Signature` check and the mapping of the events that matter to
//! conversions. See docs/integrations.md for the tables.
//!
//! The signature is Stripe's documented scheme, which is also the scheme of
//! our own `X-Signature` (SPEC section 3), so the check is `auth`'s:
//! `t=<unix>,v1=<hex>[,v1=<hex>...]` (other schemes such as `v0` ignored),
//! HMAC-SHA256 keyed with the endpoint secret (the whole `whsec_...` string
//! as bytes) over `"{t}.{raw payload}"`, constant-time, 300 s tolerance,
//! any `v1` against any of the program's `stripe_secrets` (rotation).

use crate::auth::{self, SignatureError};
use crate::currency::Currency;
use crate::fields::FieldError;
use crate::integration::{self as i, at, id_of, int, text, Conversion, Mapped};
use serde_json::Value;

pub const SIGNATURE_HEADER: &str = "Stripe-Signature";

/// Checks a `Stripe-Signature` header against the program's endpoint secrets.
pub fn verify(
    header: &str,
    payload: &[u8],
    secrets: &[String],
    now_s: i64,
) -> Result<(), SignatureError> {
    auth::verify_signature(header, payload, secrets, now_s)
}

/// The number of decimals Stripe counts a currency's amounts in: the ISO
/// 4217 minor unit, except ISK and UGX (zero-decimal, but still sent as
/// two-decimal amounts for backwards compatibility) and MGA (zero-decimal
/// at Stripe).
pub fn exponent(c: Currency) -> u32 {
    match c.code() {
        "ISK" | "UGX" => 2,
        "MGA" => 0,
        _ => c.minor_units(),
    }
}

fn field(name: &str, reason: &str) -> FieldError {
    FieldError::new(format!("data.object.{name}"), reason)
}

/// `amount` and `currency` from an integer amount in minor units and a
/// lower-case currency; `None` when the amount is zero.
fn money(
    c: &mut Conversion,
    obj: &Value,
    key: &str,
    minor: Option<i64>,
) -> Result<bool, FieldError> {
    let code = text(obj, &["currency"]).ok_or_else(|| field("currency", "required"))?;
    let cur = Currency::parse_any_case(&code)
        .ok_or_else(|| field("currency", "unknown ISO 4217 currency"))?;
    let minor = minor
        .or_else(|| int(obj, &[key]))
        .ok_or_else(|| field(key, "required, an integer in minor units"))?;
    if minor == 0 {
        return Ok(false);
    }
    c.set(
        "amount",
        Some(cur.from_minor(minor, exponent(cur)).to_string()),
    );
    c.set("currency", Some(cur.code().to_string()));
    Ok(true)
}

fn meta(obj: &Value, path: &[&str]) -> [Option<String>; 2] {
    let mut p: Vec<&str> = path.to_vec();
    p.push("click_id");
    let a = text(obj, &p);
    if let Some(last) = p.last_mut() {
        *last = "pt_click";
    }
    [a, text(obj, &p)]
}

/// Coupon evidence: `metadata.coupon`, then a promotion code's customer
/// facing `code` (when expanded) or the coupon's id, from `discounts` or the
/// older single `discount`.
fn coupon(obj: &Value) -> Option<String> {
    let mut out = vec![text(obj, &["metadata", "coupon"])];
    let mut discounts: Vec<&Value> = at(obj, &["discounts"])
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    discounts.extend(at(obj, &["discount"]));
    for d in discounts.into_iter().filter(|d| d.is_object()) {
        out.push(text(d, &["promotion_code", "code"]));
        out.push(id_of(d, &["coupon"]));
        out.push(id_of(d, &["source", "coupon"]));
    }
    i::coupon(out)
}

fn sale(obj: &Value, txn: String, amount_key: &str) -> Result<Option<Conversion>, FieldError> {
    let mut c = Conversion::new("sale", txn);
    if !money(&mut c, obj, amount_key, None)? {
        return Ok(None);
    }
    c.set("customer", id_of(obj, &["customer"]));
    c.set("coupon", coupon(obj));
    // an invoice names its payment on itself before API 2025-03-31, in its
    // `payments` list after (when the payload includes it)
    let listed = at(obj, &["payments", "data"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|p| {
            [
                id_of(p, &["payment", "payment_intent"]),
                id_of(p, &["payment", "charge"]),
            ]
        });
    for alias in [id_of(obj, &["payment_intent"]), id_of(obj, &["charge"])]
        .into_iter()
        .chain(listed)
        .flatten()
    {
        if Some(alias.as_str()) != c.get("txn_id") {
            c.aliases.push(alias);
        }
    }
    Ok(Some(c))
}

/// Maps a verified event. `Err` names the field that made a used event
/// unusable.
pub fn map(event: &Value) -> Result<Mapped, FieldError> {
    let kind = at(event, &["type"])
        .and_then(Value::as_str)
        .ok_or_else(|| FieldError::new("type", "required"))?;
    let obj = at(event, &["data", "object"])
        .filter(|o| o.is_object())
        .ok_or_else(|| FieldError::new("data.object", "required"))?;
    let object_id = || text(obj, &["id"]).ok_or_else(|| field("id", "required"));
    // the time of the sale: an invoice's own payment time when it has one
    // (invoice.paid and invoice.payment_succeeded of one payment then carry
    // the same record), else the event's
    let mut paid_at = None;
    let mut c = match kind {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            if text(obj, &["payment_status"]).as_deref() != Some("paid") {
                return Ok(Mapped::Ignored("checkout session not paid"));
            }
            // A session that created an invoice (subscriptions, invoiced
            // payments) is the same sale as that invoice's `invoice.paid`.
            let txn = match id_of(obj, &["invoice"]).or_else(|| id_of(obj, &["payment_intent"])) {
                Some(t) => t,
                None => object_id()?,
            };
            let Some(mut c) = sale(obj, txn, "amount_total")? else {
                return Ok(Mapped::Ignored("nothing paid"));
            };
            let [m1, m2] = meta(obj, &["metadata"]);
            let [c1, c2] = meta(obj, &["customer", "metadata"]);
            c.set(
                "click_id",
                i::click_id([m1, m2, text(obj, &["client_reference_id"]), c1, c2]),
            );
            c.set(
                "email",
                i::email([
                    text(obj, &["customer_details", "email"]),
                    text(obj, &["customer_email"]),
                ]),
            );
            c.set(
                "country",
                i::country(text(obj, &["customer_details", "address", "country"])),
            );
            c
        }
        "invoice.paid" | "invoice.payment_succeeded" => {
            let Some(mut c) = sale(obj, object_id()?, "amount_paid")? else {
                return Ok(Mapped::Ignored("nothing paid"));
            };
            paid_at = int(obj, &["status_transitions", "paid_at"]).filter(|&t| t > 0);
            let [m1, m2] = meta(obj, &["metadata"]);
            let [s1, s2] = meta(obj, &["subscription_details", "metadata"]);
            let [p1, p2] = meta(obj, &["parent", "subscription_details", "metadata"]);
            let [c1, c2] = meta(obj, &["customer", "metadata"]);
            c.set("click_id", i::click_id([m1, m2, s1, s2, p1, p2, c1, c2]));
            c.set("email", i::email([text(obj, &["customer_email"])]));
            c.set(
                "country",
                i::country(text(obj, &["customer_address", "country"])),
            );
            c
        }
        "charge.refunded" => {
            let charge = object_id()?;
            let total = int(obj, &["amount_refunded"])
                .ok_or_else(|| field("amount_refunded", "required, an integer in minor units"))?;
            let latest = at(obj, &["refunds", "data"])
                .and_then(Value::as_array)
                .and_then(|a| a.first());
            // This refund: the change of the cumulative `amount_refunded`,
            // else the newest refund listed, else the whole (first refund).
            let previous = int(event, &["data", "previous_attributes", "amount_refunded"]);
            let amount = match (previous, latest) {
                (Some(p), _) => total.saturating_sub(p),
                (None, Some(r)) => int(r, &["amount"]).unwrap_or(total),
                (None, None) => total,
            };
            if amount <= 0 {
                return Ok(Mapped::Ignored("nothing refunded"));
            }
            let own = latest.and_then(|r| text(r, &["id"]));
            let under_charge = own.is_none().then(|| charge.clone());
            let txn = own.unwrap_or_else(|| format!("{charge}:refund:{total}"));
            let mut c = Conversion::new("refund", txn);
            c.refund_of_charge = under_charge;
            money(&mut c, obj, "amount_refunded", Some(amount))?;
            c.set("customer", id_of(obj, &["customer"]));
            c.originals = [
                id_of(obj, &["invoice"]),
                id_of(obj, &["payment_intent"]),
                Some(charge),
            ]
            .into_iter()
            .flatten()
            .collect();
            c
        }
        "charge.dispute.created" => {
            let mut c = Conversion::new("chargeback", object_id()?);
            if !money(&mut c, obj, "amount", None)? {
                return Ok(Mapped::Ignored("nothing disputed"));
            }
            c.originals = [
                id_of(obj, &["charge", "invoice"]),
                id_of(obj, &["payment_intent"]),
                id_of(obj, &["charge"]),
            ]
            .into_iter()
            .flatten()
            .collect();
            if c.originals.is_empty() {
                return Err(field("charge", "required"));
            }
            c.set("customer", id_of(obj, &["charge", "customer"]));
            c
        }
        // a dispute the merchant won: the funds are back, so is the
        // partner's commission (the chargeback is reinstated)
        "charge.dispute.closed" => {
            if text(obj, &["status"]).as_deref() != Some("won") {
                return Ok(Mapped::Ignored("dispute not won"));
            }
            let dispute = object_id()?;
            let mut c = Conversion::new("reinstate", format!("{dispute}:reinstated"));
            money(&mut c, obj, "amount", None)?;
            c.originals = vec![dispute];
            c
        }
        // a refund that failed or was canceled paid nothing back: the
        // refund is reinstated (`charge.refunded` reports pending refunds)
        "charge.refund.updated" | "refund.updated" | "refund.failed" => {
            match text(obj, &["status"]).as_deref() {
                Some("failed" | "canceled") => {}
                _ => return Ok(Mapped::Ignored("refund neither failed nor canceled")),
            }
            let refund = object_id()?;
            let mut c = Conversion::new("reinstate", format!("{refund}:reinstated"));
            money(&mut c, obj, "amount", None)?;
            c.originals = vec![refund];
            c.refund_of_charge = id_of(obj, &["charge"]);
            c
        }
        // API 2025-03-31 on: invoices and charges no longer name each
        // other; the invoice payment links them
        "invoice_payment.paid" => {
            let invoice = id_of(obj, &["invoice"]).ok_or_else(|| field("invoice", "required"))?;
            let refs: Vec<String> = [
                id_of(obj, &["payment", "payment_intent"]),
                id_of(obj, &["payment", "charge"]),
            ]
            .into_iter()
            .flatten()
            .filter(|r| *r != invoice)
            .collect();
            if refs.is_empty() {
                return Ok(Mapped::Ignored(
                    "invoice payment without a payment intent or charge",
                ));
            }
            return Ok(Mapped::Refs { txn: invoice, refs });
        }
        _ => return Ok(Mapped::Ignored("event type not used")),
    };
    c.set("ts", i::unix_ts(paid_at.or(int(event, &["created"]))));
    Ok(Mapped::Conversion(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use serde_json::json;
    use sha2::Sha256;

    const SECRET: &str = "whsec_test_0123456789abcdefABCDEF";

    /// Stripe's documented computation, written out independently of `auth`.
    fn stripe_v1(secret: &str, t: i64, payload: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{payload}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signature_as_stripe_documents_it() {
        let payload = r#"{"id":"evt_1","object":"event","type":"invoice.paid"}"#;
        let t = 1_492_774_577;
        let secrets = vec![SECRET.to_string()];
        // The documented header layout: t, v1, and a v0 we ignore.
        let header = format!(
            "t={t},v1={},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39",
            stripe_v1(SECRET, t, payload)
        );
        assert_eq!(verify(&header, payload.as_bytes(), &secrets, t + 5), Ok(()));
        // Tampered payload, other secret, outside 300 s.
        let tampered = payload.replace("invoice.paid", "invoice.payd");
        assert_eq!(
            verify(&header, tampered.as_bytes(), &secrets, t),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                &header,
                payload.as_bytes(),
                &["whsec_other_0123456789abcdef".into()],
                t
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header, payload.as_bytes(), &secrets, t + 301),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            verify(&header, payload.as_bytes(), &secrets, t + 300),
            Ok(())
        );
        // Rotation on Stripe's side: one v1 per active secret.
        let old = "whsec_old_0123456789abcdefABCDEF";
        let rolled = format!(
            "t={t},v1={},v1={}",
            stripe_v1(old, t, payload),
            stripe_v1(SECRET, t, payload)
        );
        assert_eq!(verify(&rolled, payload.as_bytes(), &secrets, t), Ok(()));
        // Rotation on ours: both endpoint secrets configured.
        let old_only = format!("t={t},v1={}", stripe_v1(old, t, payload));
        let both = vec![SECRET.to_string(), old.to_string()];
        assert_eq!(verify(&old_only, payload.as_bytes(), &both, t), Ok(()));
        assert_eq!(
            verify(&old_only, payload.as_bytes(), &secrets, t),
            Err(SignatureError::Mismatch)
        );
        for bad in ["", "t=1", "v1=abc", &format!("t=x,v1={}", "0".repeat(64))] {
            assert_eq!(
                verify(bad, payload.as_bytes(), &secrets, t),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        // Our signer produces exactly Stripe's v1.
        assert_eq!(
            auth::sign(SECRET, t, payload.as_bytes()),
            stripe_v1(SECRET, t, payload)
        );
    }

    fn event(kind: &str, object: Value) -> Value {
        json!({"id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "object": "event",
               "api_version": "2024-06-20", "created": 1_700_000_000,
               "data": {"object": object}, "livemode": false, "pending_webhooks": 1,
               "request": {"id": null, "idempotency_key": null}, "type": kind})
    }

    fn conversion(ev: &Value) -> Conversion {
        match map(ev).unwrap() {
            Mapped::Conversion(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn session(extra: Value) -> Value {
        let mut s = json!({
            "id": "cs_test_a1b2c3", "object": "checkout.session", "amount_subtotal": 2500,
            "amount_total": 1999, "client_reference_id": "CLICKabc_-123", "currency": "usd",
            "customer": "cus_NffrFeUfNV2Hib",
            "customer_details": {"email": "jenny.rosen@example.com", "name": "Jenny Rosen",
                                 "address": {"country": "DE", "postal_code": "10115"}},
            "customer_email": null, "discounts": [{"coupon": "SPRING25", "promotion_code": "promo_1"}],
            "invoice": null, "livemode": false, "metadata": {}, "mode": "payment",
            "payment_intent": "pi_3MtwBwLkdIwHu7ix28a3tqPa", "payment_status": "paid",
            "status": "complete", "subscription": null,
            "total_details": {"amount_discount": 501, "amount_shipping": 0, "amount_tax": 0}
        });
        if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        s
    }

    #[test]
    fn paid_checkout_is_a_sale() {
        let c = conversion(&event("checkout.session.completed", session(json!({}))));
        assert_eq!(c.get("event"), Some("sale"));
        assert_eq!(c.get("txn_id"), Some("pi_3MtwBwLkdIwHu7ix28a3tqPa"));
        assert_eq!(c.get("amount"), Some("19.99"));
        assert_eq!(c.get("currency"), Some("USD"));
        assert_eq!(c.get("customer"), Some("cus_NffrFeUfNV2Hib"));
        assert_eq!(c.get("click_id"), Some("CLICKabc_-123"));
        assert_eq!(c.get("coupon"), Some("SPRING25"));
        assert_eq!(c.get("email"), Some("jenny.rosen@example.com"));
        assert_eq!(c.get("country"), Some("DE"));
        assert_eq!(c.get("ts"), Some("2023-11-14T22:13:20.000Z"));
        assert!(c.aliases.is_empty() && c.originals.is_empty());

        // metadata.click_id wins over client_reference_id; expanded
        // promotion codes give their customer-facing code.
        let s = session(json!({"metadata": {"click_id": "FROMmeta"},
            "discounts": [{"coupon": {"id": "c_1"}, "promotion_code": {"id": "promo_1", "code": "FRIENDS10"}}]}));
        let c = conversion(&event("checkout.session.completed", s));
        assert_eq!(c.get("click_id"), Some("FROMmeta"));
        assert_eq!(c.get("coupon"), Some("FRIENDS10"));

        // A subscription checkout is the sale of its first invoice.
        let s = session(
            json!({"mode": "subscription", "invoice": "in_1MtHbELkdIwHu7ixl4OzzPMv",
            "payment_intent": null, "subscription": "sub_1", "client_reference_id": null,
            "customer": {"id": "cus_9", "metadata": {"pt_click": "CUSTclick"}}}),
        );
        let c = conversion(&event("checkout.session.completed", s));
        assert_eq!(c.get("txn_id"), Some("in_1MtHbELkdIwHu7ixl4OzzPMv"));
        assert_eq!(c.get("customer"), Some("cus_9"));
        assert_eq!(c.get("click_id"), Some("CUSTclick"));

        // Not paid yet (delayed methods), then paid asynchronously.
        let unpaid = session(json!({"payment_status": "unpaid"}));
        assert_eq!(
            map(&event("checkout.session.completed", unpaid)).unwrap(),
            Mapped::Ignored("checkout session not paid")
        );
        let later = conversion(&event(
            "checkout.session.async_payment_succeeded",
            session(json!({})),
        ));
        assert_eq!(later.get("txn_id"), Some("pi_3MtwBwLkdIwHu7ix28a3tqPa"));
        // A free checkout records nothing.
        let free = session(json!({"amount_total": 0}));
        assert_eq!(
            map(&event("checkout.session.completed", free)).unwrap(),
            Mapped::Ignored("nothing paid")
        );
    }

    #[test]
    fn minor_units_by_currency() {
        for (cur, minor, want) in [
            ("jpy", 1500, "1500"),
            ("usd", 1500, "15.00"),
            ("kwd", 1500, "1.500"),
            ("eur", 1, "0.01"),
            ("isk", 150000, "1500"),
            ("mga", 1500, "1500.00"),
        ] {
            let s = session(json!({"currency": cur, "amount_total": minor}));
            let c = conversion(&event("checkout.session.completed", s));
            assert_eq!(c.get("amount"), Some(want), "{cur}");
            assert_eq!(c.get("currency"), Some(cur.to_uppercase().as_str()));
        }
        let bad = session(json!({"currency": "zzz"}));
        assert_eq!(
            map(&event("checkout.session.completed", bad))
                .unwrap_err()
                .field,
            "data.object.currency"
        );
        let float = session(json!({"amount_total": 19.99}));
        assert_eq!(
            map(&event("checkout.session.completed", float))
                .unwrap_err()
                .field,
            "data.object.amount_total"
        );
    }

    fn invoice(extra: Value) -> Value {
        let mut v = json!({
            "id": "in_1MtHbELkdIwHu7ixl4OzzPMv", "object": "invoice", "amount_due": 4900,
            "amount_paid": 4900, "amount_remaining": 0, "billing_reason": "subscription_cycle",
            "charge": "ch_3MtHbELkdIwHu7ix1ymMZvKb", "currency": "kwd", "customer": "cus_NeZwdNtLEOXuvB",
            "customer_email": "ann@example.com", "discount": null, "discounts": ["di_1"],
            "metadata": {}, "paid": true, "payment_intent": "pi_3MtHbELkdIwHu7ix1VwmXUrl",
            "status": "paid", "subscription": "sub_1MtHbELkdIwHu7ixAe9ZBIXZ",
            "subscription_details": {"metadata": {"click_id": "SUBclick"}}
        });
        if let (Some(s), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                s.insert(k.clone(), x.clone());
            }
        }
        v
    }

    #[test]
    /// review22 F1: from API 2025-03-31 on, an invoice names no payment
    /// intent or charge and a charge no invoice: `invoice_payment.paid`
    /// links them, and an invoice whose payload lists its payments takes
    /// their ids as aliases.
    fn basil_invoice_payments_link_the_invoice_and_its_payment() {
        let ip = json!({"id": "inpay_1", "object": "invoice_payment", "invoice": "in_b1",
            "amount_paid": 4900, "currency": "usd", "is_default": true, "status": "paid",
            "payment": {"type": "payment_intent", "payment_intent": "pi_b1"}});
        assert_eq!(
            map(&event("invoice_payment.paid", ip)).unwrap(),
            Mapped::Refs {
                txn: "in_b1".into(),
                refs: vec!["pi_b1".into()]
            }
        );
        let by_charge = json!({"id": "inpay_2", "invoice": {"id": "in_b2"},
            "payment": {"type": "charge", "charge": "ch_b2"}, "status": "paid"});
        assert_eq!(
            map(&event("invoice_payment.paid", by_charge)).unwrap(),
            Mapped::Refs {
                txn: "in_b2".into(),
                refs: vec!["ch_b2".into()]
            }
        );
        let v = invoice(json!({"payment_intent": null, "charge": null,
            "payments": {"object": "list", "data": [
                {"id": "inpay_3", "payment": {"type": "payment_intent", "payment_intent": "pi_b3"}}]}}));
        let c = conversion(&event("invoice.paid", v));
        assert_eq!(c.aliases, vec!["pi_b3".to_string()]);
    }

    #[test]
    fn paid_invoice_is_a_sale_with_aliases() {
        for kind in ["invoice.paid", "invoice.payment_succeeded"] {
            let c = conversion(&event(kind, invoice(json!({}))));
            assert_eq!(c.get("txn_id"), Some("in_1MtHbELkdIwHu7ixl4OzzPMv"));
            assert_eq!(c.get("amount"), Some("4.900"));
            assert_eq!(c.get("currency"), Some("KWD"));
            assert_eq!(c.get("customer"), Some("cus_NeZwdNtLEOXuvB"));
            assert_eq!(c.get("click_id"), Some("SUBclick"));
            assert_eq!(c.get("coupon"), None);
            assert_eq!(
                c.aliases,
                vec!["pi_3MtHbELkdIwHu7ix1VwmXUrl", "ch_3MtHbELkdIwHu7ix1ymMZvKb"]
            );
        }
        // the invoice's payment time, not the event's, when it has one
        let paid = invoice(json!({"status_transitions": {"paid_at": 1_699_999_000}}));
        for kind in ["invoice.paid", "invoice.payment_succeeded"] {
            let c = conversion(&event(kind, paid.clone()));
            assert_eq!(c.get("ts"), Some("2023-11-14T21:56:40.000Z"));
            let c = conversion(&event(kind, invoice(json!({}))));
            assert_eq!(c.get("ts"), Some("2023-11-14T22:13:20.000Z"), "the event's");
        }
        // API 2025-03-31 and later: metadata under parent, discounts expanded.
        let v = invoice(
            json!({"subscription_details": null, "charge": null, "payment_intent": null,
            "parent": {"type": "subscription_details", "subscription_details": {"metadata": {"pt_click": "PARENTclick"}}},
            "discounts": [{"id": "di_1", "coupon": {"id": "LAUNCH"}, "promotion_code": null}]}),
        );
        let c = conversion(&event("invoice.paid", v));
        assert_eq!(c.get("click_id"), Some("PARENTclick"));
        assert_eq!(c.get("coupon"), Some("LAUNCH"));
        assert!(c.aliases.is_empty());
        // A trial's zero invoice is no sale.
        assert_eq!(
            map(&event("invoice.paid", invoice(json!({"amount_paid": 0})))).unwrap(),
            Mapped::Ignored("nothing paid")
        );
    }

    fn charge(extra: Value) -> Value {
        let mut v = json!({
            "id": "ch_3MmlLrLkdIwHu7ix0snN0B15", "object": "charge", "amount": 10000,
            "amount_captured": 10000, "amount_refunded": 2500, "currency": "usd",
            "customer": "cus_1", "invoice": null, "paid": true,
            "payment_intent": "pi_3MmlLrLkdIwHu7ix0uke3Ezy", "refunded": false
        });
        if let (Some(s), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                s.insert(k.clone(), x.clone());
            }
        }
        v
    }

    #[test]
    fn refunds_and_disputes() {
        // First partial refund, refunds not expanded (API 2022-11-15+).
        let c = conversion(&event("charge.refunded", charge(json!({}))));
        assert_eq!(c.get("event"), Some("refund"));
        assert_eq!(
            c.get("txn_id"),
            Some("ch_3MmlLrLkdIwHu7ix0snN0B15:refund:2500")
        );
        assert_eq!(c.get("amount"), Some("25.00"));
        assert_eq!(c.get("currency"), Some("USD"));
        assert_eq!(
            c.originals,
            vec!["pi_3MmlLrLkdIwHu7ix0uke3Ezy", "ch_3MmlLrLkdIwHu7ix0snN0B15"]
        );
        assert_eq!(
            c.refund_of_charge.as_deref(),
            Some("ch_3MmlLrLkdIwHu7ix0snN0B15")
        );
        // A second refund: the change since the previous attributes.
        let mut ev = event(
            "charge.refunded",
            charge(json!({"amount_refunded": 4000, "invoice": "in_9"})),
        );
        ev["data"]["previous_attributes"] = json!({"amount_refunded": 2500});
        let c = conversion(&ev);
        assert_eq!(c.get("amount"), Some("15.00"));
        assert_eq!(
            c.get("txn_id"),
            Some("ch_3MmlLrLkdIwHu7ix0snN0B15:refund:4000")
        );
        assert_eq!(c.originals[0], "in_9");
        // Refunds listed (older API versions): the newest one.
        let listed = charge(json!({"amount_refunded": 4000,
            "refunds": {"object": "list", "data": [{"id": "re_2", "amount": 1500}, {"id": "re_1", "amount": 2500}]}}));
        let c = conversion(&event("charge.refunded", listed));
        assert_eq!(c.get("txn_id"), Some("re_2"));
        assert_eq!(c.get("amount"), Some("15.00"));
        assert_eq!(c.refund_of_charge, None);

        let dispute = json!({"id": "du_1MtJUT2eZvKYlo2CNaw2HvEv", "object": "dispute", "amount": 1000,
            "charge": "ch_1AZtxr2eZvKYlo2CJDX8whov", "currency": "jpy",
            "payment_intent": "pi_1", "reason": "fraudulent", "status": "needs_response"});
        let c = conversion(&event("charge.dispute.created", dispute));
        assert_eq!(c.get("event"), Some("chargeback"));
        assert_eq!(c.get("txn_id"), Some("du_1MtJUT2eZvKYlo2CNaw2HvEv"));
        assert_eq!(c.get("amount"), Some("1000"));
        assert_eq!(c.get("currency"), Some("JPY"));
        assert_eq!(c.originals, vec!["pi_1", "ch_1AZtxr2eZvKYlo2CJDX8whov"]);
    }

    /// review22 F13: a dispute the merchant won and a refund that failed
    /// reinstate the reversal they undo; a lost dispute and a refund that
    /// succeeded change nothing.
    #[test]
    fn a_won_dispute_and_a_failed_refund_are_reinstatements() {
        let dispute = |status: &str| {
            json!({"id": "du_1", "object": "dispute", "amount": 1000, "charge": "ch_1",
                "currency": "usd", "payment_intent": "pi_1", "status": status})
        };
        let c = conversion(&event("charge.dispute.closed", dispute("won")));
        assert_eq!(c.get("event"), Some("reinstate"));
        assert_eq!(c.get("txn_id"), Some("du_1:reinstated"));
        assert_eq!(c.get("amount"), Some("10.00"));
        assert_eq!(c.originals, vec!["du_1"]);
        assert_eq!(c.refund_of_charge, None);
        for status in ["lost", "warning_closed"] {
            assert_eq!(
                map(&event("charge.dispute.closed", dispute(status))),
                Ok(Mapped::Ignored("dispute not won"))
            );
        }
        let refund = |status: &str| {
            json!({"id": "re_1", "object": "refund", "amount": 2500, "charge": "ch_1",
                "currency": "eur", "payment_intent": "pi_1", "status": status})
        };
        for kind in ["charge.refund.updated", "refund.updated", "refund.failed"] {
            for status in ["failed", "canceled"] {
                let c = conversion(&event(kind, refund(status)));
                assert_eq!(c.get("event"), Some("reinstate"));
                assert_eq!(c.get("txn_id"), Some("re_1:reinstated"));
                assert_eq!(c.get("amount"), Some("25.00"));
                assert_eq!(c.originals, vec!["re_1"]);
                assert_eq!(c.refund_of_charge.as_deref(), Some("ch_1"));
            }
            for status in ["pending", "succeeded", "requires_action"] {
                assert_eq!(
                    map(&event(kind, refund(status))),
                    Ok(Mapped::Ignored("refund neither failed nor canceled"))
                );
            }
        }
    }

    #[test]
    fn other_events_are_ignored_and_junk_named() {
        let ev = event(
            "customer.created",
            json!({"id": "cus_1", "object": "customer"}),
        );
        assert_eq!(map(&ev).unwrap(), Mapped::Ignored("event type not used"));
        assert_eq!(map(&json!({})).unwrap_err().field, "type");
        assert_eq!(
            map(&json!({"type": "invoice.paid"})).unwrap_err().field,
            "data.object"
        );
        assert_eq!(map(&json!([1, 2])).unwrap_err().field, "type");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        /// Hostile payloads never panic.
        #[test]
        fn any_json_maps_or_names_a_field(obj in crate::integration::arb_json(), prev in crate::integration::arb_json(),
            kind in prop::sample::select(vec![
                "checkout.session.completed", "checkout.session.async_payment_succeeded", "invoice.paid",
                "charge.refunded", "charge.dispute.created", "invoice_payment.paid", "charge.dispute.closed",
                "charge.refund.updated", "refund.failed"])) {
            let ev = json!({"type": kind, "created": 1, "data": {"object": obj, "previous_attributes": prev}});
            match map(&ev) {
                Ok(Mapped::Conversion(c)) => prop_assert!(c.get("txn_id").is_some()),
                Ok(Mapped::Ignored(why)) => prop_assert!(!why.is_empty()),
                Ok(Mapped::Refs { txn, refs }) => prop_assert!(!txn.is_empty() && !refs.is_empty()),
                Err(e) => prop_assert!(!e.field.is_empty()),
            }
        }
    }
}
