//! `DELETE /api/customers/{id}` (the admin token): erases one customer's
//! personal data. The rules are in `crate::erase`; here they run as a few
//! SQL statements in one D1 batch (one transaction), so an erasure is all or
//! nothing, and an audit row records who and when (never the id itself).

use super::store::{self, result_changes, s, txt};
use super::{env_string, error, event_now, json, Config};
use crate::erase;
use crate::fields::Obj;
use crate::ids::is_valid_ref;
use crate::time::Timestamp;
use worker::*;

const MAX_BODY: usize = 4096;

/// `json_remove` paths of a list of fields (constants, never request data).
fn paths(fields: &[&str]) -> String {
    fields
        .iter()
        .map(|f| format!("'$.{f}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key of the pseudonyms: `ERASURE_SECRET`, else `CLICK_SECRET`.
/// Settlement needs the same one (or the pseudonym this route answers).
fn secret(env: &Env, cfg: &Config) -> String {
    let own = env_string(env, "ERASURE_SECRET");
    if own.is_empty() {
        cfg.click_secret.clone()
    } else {
        own
    }
}

pub async fn handle(mut req: Request, env: &Env, cfg: &Config, raw_id: &str) -> Result<Response> {
    let Ok(id) = percent_encoding::percent_decode_str(raw_id).decode_utf8() else {
        return super::field_error(
            422,
            &crate::fields::FieldError::new("customer", "not UTF-8"),
        );
    };
    let id = id.into_owned();
    if !is_valid_ref(&id) || erase::is_pseudonym(&id) {
        return super::field_error(
            422,
            &crate::fields::FieldError::new("customer", "not a customer id"),
        );
    }
    let body = match super::body_limited(&mut req, MAX_BODY).await? {
        Some(b) => b,
        None => return error(413, "body too large"),
    };
    let (actor, reason) = if body.iter().all(u8::is_ascii_whitespace) {
        ("operator".to_string(), None)
    } else {
        let o = match Obj::parse(&body, &["actor", "reason"]) {
            Ok(o) => o,
            Err(e) => return super::field_error(422, &e),
        };
        match (
            crate::partner::actor(&o),
            crate::admin::short_text(&o, "reason", 500),
        ) {
            (Ok(a), Ok(r)) => (a, r),
            (Err(e), _) | (_, Err(e)) => return super::field_error(422, &e),
        }
    };
    let key = secret(env, cfg);
    if key.is_empty() {
        return Err(Error::RustError("no erasure secret is set".into()));
    }
    let pseudonym = erase::pseudonym(key.as_bytes(), &id);
    let now = event_now(&req, cfg);
    let at = Timestamp(now).to_string();
    let db = store::db(env)?;

    let click_paths = paths(erase::CLICK_FIELDS);
    let conv_paths = paths(erase::CONVERSION_FIELDS);
    // Events that carry the id (conversions and deals), and their clicks.
    const MINE: &str = "type IN ('conversion', 'deal') AND json_extract(record, '$.customer') = ?1";
    let clicks_of_mine = format!(
        "type = 'click' AND id IN (SELECT 'ev_' || json_extract(record, '$.click_id')
           FROM events WHERE {MINE} AND json_extract(record, '$.click_id') IS NOT NULL)"
    );
    // The audit row first, in the same transaction, and only when there is
    // something to erase: who and when, the pseudonym, never the id.
    let audit = format!(
        "INSERT INTO erasures (pseudonym, at, actor, reason, events, clicks, deals)
         SELECT ?2, ?3, ?4, ?5,
           (SELECT count(*) FROM events WHERE {MINE}),
           (SELECT count(*) FROM events WHERE {clicks_of_mine}),
           (SELECT count(*) FROM deals WHERE customer = ?1)
         WHERE EXISTS (SELECT 1 FROM events WHERE {MINE})
            OR EXISTS (SELECT 1 FROM deals WHERE customer = ?1)"
    );
    // The clicks before the conversions: they are found through the id.
    let clicks = format!(
        "UPDATE events SET record = json_remove(record, {click_paths}), visitor_key = NULL
         WHERE {clicks_of_mine}"
    );
    let events = format!(
        "UPDATE events SET record = json_remove(json_set(record, '$.customer', ?2), {conv_paths}),
           visitor_key = NULL
         WHERE {MINE}"
    );
    let deliveries = format!(
        "UPDATE webhook_deliveries
         SET body = json_remove(json_set(body, '$.data.customer', ?2), {})
         WHERE json_valid(body) AND json_extract(body, '$.data.customer') = ?1",
        erase::CONVERSION_FIELDS
            .iter()
            .map(|f| format!("'$.data.{f}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let both = [s(&id), s(&pseudonym)];
    let stmts = vec![
        db.prepare(&audit).bind(&[
            s(&id),
            s(&pseudonym),
            s(&at),
            s(&actor),
            store::opt(reason.as_deref()),
        ])?,
        db.prepare(&clicks).bind(&[s(&id)])?,
        db.prepare(&events).bind(&both)?,
        db.prepare(
            "UPDATE deals SET customer = ?2, customer_key = ?2, company = NULL, domain = NULL
             WHERE customer = ?1",
        )
        .bind(&both)?,
        db.prepare(&deliveries).bind(&both)?,
        // Refused postbacks that named the customer: the log keeps raw
        // requests, so those go.
        db.prepare(
            "DELETE FROM rejections WHERE instr(raw, 'customer') > 0 AND instr(raw, ?1) > 0",
        )
        .bind(&[s(&id)])?,
    ];
    let results = db.batch(stmts).await?;
    let count = |i: usize| results.get(i).map_or(0, result_changes);
    if count(0) == 0 {
        // Nothing carried the id: erased before (idempotent), or unknown.
        let first = store::row(
            db.prepare("SELECT at FROM erasures WHERE pseudonym = ?1 ORDER BY id LIMIT 1")
                .bind(&[s(&pseudonym)])?,
        )
        .await?;
        return match first {
            Some(r) => json(
                200,
                &serde_json::json!({
                    "status": "erased", "customer": pseudonym, "erased_at": txt(&r, "at"),
                    "events": 0, "clicks": 0, "deals": 0, "webhook_deliveries": 0,
                    "rejections": count(5),
                }),
            ),
            None => error(404, "unknown customer"),
        };
    }
    json(
        200,
        &serde_json::json!({
            "status": "erased",
            "customer": pseudonym,
            "erased_at": at,
            "events": count(2),
            "clicks": count(1),
            "deals": count(3),
            "webhook_deliveries": count(4),
            "rejections": count(5),
        }),
    )
}

/// `GET /api/erasures`: the audit of erasures (who, when, how much; never
/// the erased id).
pub async fn list(env: &Env) -> Result<Response> {
    store::json_answer(store::db(env)?.prepare(
        "SELECT json_object('erasures', json_group_array(json_object('id', id,
           'customer', pseudonym, 'at', at, 'actor', actor, 'reason', reason, 'events', events,
           'clicks', clicks, 'deals', deals))) AS j FROM (SELECT * FROM erasures ORDER BY id)",
    ))
    .await
}
