//! Outgoing webhooks: what an operator registers (`PUT /api/webhooks/{id}`),
//! what settlement may emit (`POST /api/webhooks/emit`), the envelope every
//! delivery carries, its signature and the retry schedule.
//!
//! A delivery is `POST <url>` with the JSON envelope
//! `{"id","type","created","data"}` signed like SPEC's postbacks:
//! `X-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, t + "." + body)>`, so
//! a receiver verifies it with the same code (`auth::verify_signature`) and
//! refuses replays outside 300 s. The envelope `id` names the event (the
//! same across retries, replays and endpoints); `X-Webhook-Delivery` names
//! the delivery.

use crate::admin::valid_secret;
use crate::auth;
use crate::dest::parse_http_url;
use crate::fields::{FieldError, Obj};
use crate::ids::is_valid_id;
use serde_json::Value;

/// Events an endpoint may subscribe to.
pub const EVENTS: &[&str] = &["conversion.recorded", "statement.ready", "payout.created"];
/// Events `POST /api/webhooks/emit` accepts (settlement's).
pub const EMITTED: &[&str] = &["statement.ready", "payout.created"];
/// Attempts per delivery (the first and its retries) before it is `failed`;
/// a replay starts a new round.
pub const MAX_ATTEMPTS: i64 = 8;
/// The longest wait between two attempts.
pub const MAX_DELAY_S: u32 = 3600;
/// Largest `data` of an emitted event.
pub const MAX_EMIT_BODY: usize = 64 * 1024;

/// Path segments under `/api/webhooks/` that are routes, not endpoint ids.
const RESERVED: &[&str] = &["emit", "deliveries"];

/// An endpoint as registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookInput {
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
    pub active: bool,
}

impl WebhookInput {
    pub fn parse(id: &str, body: &[u8]) -> Result<WebhookInput, FieldError> {
        if !is_valid_id(id) || RESERVED.contains(&id) {
            return Err(FieldError::new(
                "id",
                "must match [A-Za-z0-9_-]{1,64} and not be emit or deliveries",
            ));
        }
        let o = Obj::parse(body, &["url", "events", "secret", "active"])?;
        let url = o.req_str("url")?;
        parse_http_url(url).map_err(|_| FieldError::new("url", "an absolute http or https URL"))?;
        let events = o.str_list("events", EVENTS.len())?;
        if events.is_empty() {
            return Err(FieldError::new("events", "required, at least one event"));
        }
        if let Some(e) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
            return Err(FieldError::new(
                "events",
                format!("{e:?} is not one of {}", EVENTS.join(", ")),
            ));
        }
        if (1..events.len()).any(|i| events[..i].contains(&events[i])) {
            return Err(FieldError::new("events", "events must be distinct"));
        }
        let secret = o.req_str("secret")?;
        if !valid_secret(secret) {
            return Err(FieldError::new(
                "secret",
                "16 to 256 visible ASCII characters",
            ));
        }
        Ok(WebhookInput {
            url: url.to_string(),
            events,
            secret: secret.to_string(),
            active: o.bool("active")?.unwrap_or(true),
        })
    }
}

/// An event settlement hands over for delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct Emit {
    /// The sender's event id (`[A-Za-z0-9_.:-]{1,128}`): the envelope id,
    /// and the idempotency key (an event with a known id is not delivered
    /// again). Without one the edge names the event itself.
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// True for an emitted event's id: 1 to 128 of `[A-Za-z0-9_.:-]`.
pub fn is_valid_event_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

impl Emit {
    pub fn parse(body: &[u8]) -> Result<Emit, FieldError> {
        if body.len() > MAX_EMIT_BODY {
            return Err(FieldError::new("body", "over 64 KiB"));
        }
        let o = Obj::parse(body, &["id", "event", "data"])?;
        let id = o.str("id")?;
        if let Some(id) = id {
            if !is_valid_event_id(id) {
                return Err(FieldError::new("id", "1 to 128 of [A-Za-z0-9_.:-]"));
            }
        }
        let event = o.req_str("event")?;
        if !EMITTED.contains(&event) {
            return Err(FieldError::new(
                "event",
                format!("one of {}", EMITTED.join(", ")),
            ));
        }
        let data = o
            .value("data")
            .filter(|d| d.is_object())
            .ok_or_else(|| FieldError::new("data", "required, a JSON object"))?;
        Ok(Emit {
            id: id.map(str::to_string),
            event: event.to_string(),
            data: data.clone(),
        })
    }

    /// Fingerprint of what is emitted (the same id with other content is a
    /// conflict).
    pub fn fingerprint(&self) -> String {
        crate::hash::payload(&format!("{}\n{}", self.event, self.data))
    }
}

/// The JSON body of a delivery.
pub fn envelope(id: &str, event: &str, created: &str, data: &Value) -> String {
    serde_json::json!({"id": id, "type": event, "created": created, "data": data}).to_string()
}

/// `X-Signature` of a body sent at `t` (unix seconds).
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", auth::sign(secret, t, body))
}

/// Seconds to wait after failed attempt number `attempt` (1-based):
/// `base`, doubling, at most an hour.
pub fn backoff_s(base: u32, attempt: i64) -> u32 {
    let doublings = attempt.clamp(1, 17) - 1;
    base.max(1)
        .saturating_mul(1u32 << doublings)
        .min(MAX_DELAY_S)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{verify_signature, SignatureError};

    #[test]
    fn registration() {
        let w = WebhookInput::parse(
            "crm",
            br#"{"url":"http://127.0.0.1:9000/hook","events":["conversion.recorded","payout.created"],"secret":"whk-0123456789abcdef"}"#,
        )
        .unwrap();
        assert!(w.active);
        assert_eq!(w.events.len(), 2);
        let cases: &[(&str, &[u8], &str)] = &[
            ("emit", br#"{}"#, "id"),
            ("a b", br#"{}"#, "id"),
            ("h", br#"{"events":["conversion.recorded"],"secret":"whk-0123456789abcdef"}"#, "url"),
            ("h", br#"{"url":"ftp://x.example/","events":["conversion.recorded"],"secret":"whk-0123456789abcdef"}"#, "url"),
            ("h", br#"{"url":"javascript:alert(1)","events":["conversion.recorded"],"secret":"whk-0123456789abcdef"}"#, "url"),
            ("h", br#"{"url":"https://u:p@x.example/","events":["conversion.recorded"],"secret":"whk-0123456789abcdef"}"#, "url"),
            ("h", br#"{"url":"https://x.example/","events":[],"secret":"whk-0123456789abcdef"}"#, "events"),
            ("h", br#"{"url":"https://x.example/","events":["sale"],"secret":"whk-0123456789abcdef"}"#, "events"),
            ("h", br#"{"url":"https://x.example/","events":["payout.created","payout.created"],"secret":"whk-0123456789abcdef"}"#, "events"),
            ("h", br#"{"url":"https://x.example/","events":["payout.created"],"secret":"short"}"#, "secret"),
            ("h", br#"{"url":"https://x.example/","events":["payout.created"],"secret":"whk-0123456789abcdef","x":1}"#, "x"),
        ];
        for (id, body, field) in cases {
            let e = WebhookInput::parse(id, body).unwrap_err();
            assert_eq!(&e.field, field, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn emitted_events() {
        let e = Emit::parse(br#"{"event":"statement.ready","data":{"period":"2026-11"}}"#).unwrap();
        assert_eq!(e.data["period"], "2026-11");
        assert_eq!(e.id, None);
        let a = Emit::parse(
            br#"{"id":"stmt_2026-11_ib_7","event":"statement.ready","data":{"period":"2026-11"}}"#,
        )
        .unwrap();
        assert_eq!(a.id.as_deref(), Some("stmt_2026-11_ib_7"));
        assert_eq!(a.fingerprint(), e.fingerprint());
        let b = Emit::parse(
            br#"{"id":"stmt_2026-11_ib_7","event":"statement.ready","data":{"period":"2026-12"}}"#,
        )
        .unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        for (body, field) in [
            (
                &br#"{"event":"conversion.recorded","data":{}}"#[..],
                "event",
            ),
            (br#"{"event":"payout.created","data":[1]}"#, "data"),
            (br#"{"event":"payout.created"}"#, "data"),
            (b"nope", "body"),
            (br#"{"id":"","event":"payout.created","data":{}}"#, "id"),
            (br#"{"id":"a b","event":"payout.created","data":{}}"#, "id"),
            (br#"{"id":7,"event":"payout.created","data":{}}"#, "id"),
        ] {
            assert_eq!(Emit::parse(body).unwrap_err().field, field);
        }
    }

    #[test]
    fn signed_like_postbacks_and_verified_by_auth() {
        let body = envelope(
            "ev_1",
            "conversion.recorded",
            "2026-11-03T10:00:00.000Z",
            &serde_json::json!({"amount": "12.50"}),
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "conversion.recorded");
        assert_eq!(v["data"]["amount"], "12.50");
        let t = 1_800_000_000;
        let header = signature("whk-0123456789abcdef", t, body.as_bytes());
        let secrets = vec!["whk-0123456789abcdef".to_string()];
        assert_eq!(
            verify_signature(&header, body.as_bytes(), &secrets, t + 1),
            Ok(())
        );
        assert_eq!(
            verify_signature(&header, body.as_bytes(), &secrets, t + 301),
            Err(SignatureError::Expired)
        );
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff_s(30, 1), 30);
        assert_eq!(backoff_s(30, 2), 60);
        assert_eq!(backoff_s(30, 4), 240);
        assert_eq!(backoff_s(30, 8), 3600);
        assert_eq!(backoff_s(1, 1), 1);
        assert_eq!(backoff_s(0, 0), 1);
        assert_eq!(backoff_s(u32::MAX, i64::MAX), 3600);
    }
}
