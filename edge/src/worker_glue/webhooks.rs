//! Outgoing webhooks: the admin routes (`/api/webhooks/...`), the queue
//! producer and the consumer that delivers.
//!
//! A delivery row is written first (conversions write theirs in the same D1
//! transaction as the event), then its id goes on the `WEBHOOKS` queue. The
//! consumer (`#[event(queue)]` in `mod.rs`) POSTs the stored body signed
//! `X-Signature: t=,v1=` (`webhook.rs`), logs the attempt, and on failure
//! retries the message with a doubling delay, `MAX_ATTEMPTS` times per
//! (re)play. A delivery whose id never reached the queue stays `pending` in
//! the log, where a replay sends it.

use super::layer::{self, not_found};
use super::store::{self, int, txt, N, O, S};
use super::{error, field_error, json, now_ms, random, Config};
use crate::routes::Route;
use crate::time::Timestamp;
use crate::webhook::{self, Emit, WebhookInput};
use serde_json::json as j;
use wasm_bindgen::{JsCast, JsValue};
use worker::*;

const MAX_BODY: usize = 64 * 1024;
const QUEUE: &str = "WEBHOOKS";
/// How long a receiver may take to answer.
const TIMEOUT_MS: u32 = 10_000;

pub async fn handle(route: Route<'_>, mut req: Request, env: &Env) -> Result<Response> {
    let method = req.method();
    let body = if matches!(method, Method::Post | Method::Put) {
        ok_or_return!(layer::body(&mut req, MAX_BODY).await)
    } else {
        Vec::new()
    };
    let now = Timestamp(now_ms()).to_string();
    match (route, method) {
        (Route::Webhook(id), Method::Get) => view(env, id, 200).await,
        (Route::Webhook(id), Method::Put) => {
            let w = field_or_422!(WebhookInput::parse(id, &body));
            let existed = store::row(store::q(
                env,
                "SELECT 1 AS x FROM webhooks WHERE id = ?1",
                &[S(id)],
            )?)
            .await?
            .is_some();
            store::q(
                env,
                "INSERT INTO webhooks (id, url, events, secret, active, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                 ON CONFLICT(id) DO UPDATE SET url = excluded.url, events = excluded.events,
                   secret = excluded.secret, active = excluded.active, updated_at = excluded.updated_at",
                &[
                    S(id),
                    S(&w.url),
                    S(&serde_json::to_string(&w.events)?),
                    S(&w.secret),
                    N(i64::from(w.active)),
                    S(&now),
                ],
            )?
            .run()
            .await?;
            view(env, id, if existed { 200 } else { 201 }).await
        }
        (Route::WebhookDeliveries(id), Method::Get) => {
            deliveries(env, id, &layer::query(&req)?).await
        }
        (Route::WebhookReplay(id), Method::Post) => {
            let r = store::row(store::q(
                env,
                "UPDATE webhook_deliveries SET status = 'pending', round = 0, next_at = NULL, updated_at = ?2
                 WHERE id = ?1 RETURNING id",
                &[S(id), S(&now)],
            )?)
            .await?;
            if r.is_none() {
                return not_found();
            }
            enqueue(env, &[id]).await;
            json(202, &j!({"status": "queued", "id": id}))
        }
        (Route::WebhookEmit, Method::Post) => {
            let e = field_or_422!(Emit::parse(&body));
            if let Some(id) = e.id.as_deref() {
                return emit_once(env, id, &e, &now).await;
            }
            let event_id = crate::clickid::sortable_id("we_", now_ms(), &random::<10>()?);
            let envelope = webhook::envelope(&event_id, &e.event, &now, &e.data);
            let rows = store::rows(store::q(
                env,
                "INSERT INTO webhook_deliveries (id, webhook, event, event_id, body, created_at, updated_at)
                 SELECT 'wd_' || lower(hex(randomblob(10))), w.id, ?1, ?2, ?3, ?4, ?4 FROM webhooks w
                 WHERE w.active = 1 AND EXISTS (SELECT 1 FROM json_each(w.events) WHERE value = ?1)
                 RETURNING id",
                &[S(&e.event), S(&event_id), S(&envelope), S(&now)],
            )?)
            .await?;
            let ids: Vec<&str> = rows.iter().map(|r| txt(r, "id")).collect();
            enqueue(env, &ids).await;
            json(202, &j!({"id": event_id, "deliveries": ids}))
        }
        _ => error(405, "method not allowed"),
    }
}

/// The deliveries of an emitted event to every active endpoint subscribed
/// to it, written only by the request whose `nonce` stored the event (in
/// the same batch, right after).
const EMIT_OUTBOX: &str =
    "INSERT INTO webhook_deliveries (id, webhook, event, event_id, body, created_at, updated_at)
  SELECT 'wd_' || lower(hex(randomblob(10))), w.id, ?1, ?2, ?3, ?4, ?4 FROM webhooks w
  WHERE w.active = 1 AND EXISTS (SELECT 1 FROM json_each(w.events) WHERE value = ?1)
    AND EXISTS (SELECT 1 FROM webhook_events WHERE id = ?2 AND nonce = ?5)
  RETURNING id";

/// An emitted event with the sender's id, delivered at most once: the first
/// request with the id stores it and writes its deliveries in one
/// transaction (202); later ones answer 200 `duplicate` with the first
/// deliveries, or 409 `conflict` when the event or its data differ.
async fn emit_once(env: &Env, id: &str, e: &Emit, now: &str) -> Result<Response> {
    let envelope = webhook::envelope(id, &e.event, now, &e.data);
    let hash = e.fingerprint();
    let nonce = hex::encode(random::<16>()?);
    let db = store::db(env)?;
    let results = db
        .batch(vec![
            store::q(
                env,
                "INSERT INTO webhook_events (id, event, hash, nonce, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(id) DO NOTHING",
                &[S(id), S(&e.event), S(&hash), S(&nonce), S(now)],
            )?,
            store::q(
                env,
                EMIT_OUTBOX,
                &[S(&e.event), S(id), S(&envelope), S(now), S(&nonce)],
            )?,
        ])
        .await?;
    if results
        .first()
        .is_some_and(|r| store::result_changes(r) > 0)
    {
        let rows: Vec<store::Row> = match results.get(1) {
            Some(r) => r.results()?,
            None => Vec::new(),
        };
        let ids: Vec<&str> = rows.iter().map(|r| txt(r, "id")).collect();
        enqueue(env, &ids).await;
        return json(202, &j!({"status": "queued", "id": id, "deliveries": ids}));
    }
    let first = store::row(store::q(
        env,
        "SELECT event, hash, (SELECT json_group_array(d.id) FROM webhook_deliveries d
           WHERE d.event_id = ?1) AS deliveries FROM webhook_events WHERE id = ?1",
        &[S(id)],
    )?)
    .await?;
    match first {
        Some(f) if txt(&f, "event") == e.event && txt(&f, "hash") == hash => {
            let deliveries: serde_json::Value =
                serde_json::from_str(txt(&f, "deliveries")).unwrap_or_else(|_| j!([]));
            json(
                200,
                &j!({"status": "duplicate", "id": id, "deliveries": deliveries}),
            )
        }
        Some(_) => json(409, &j!({"status": "conflict", "id": id})),
        None => Err(Error::RustError(
            "emitted event neither stored nor found".into(),
        )),
    }
}

/// An endpoint as the API shows it: never its secret.
async fn view(env: &Env, id: &str, status: u16) -> Result<Response> {
    let r = store::row(store::q(
        env,
        "SELECT json_object('id', id, 'url', url, 'events', json(events), 'active', active = 1,
           'created_at', created_at, 'updated_at', updated_at) AS j FROM webhooks WHERE id = ?1",
        &[S(id)],
    )?)
    .await?;
    match r {
        Some(r) => {
            // `active = 1` comes back as 0/1: make it a boolean.
            let mut v: serde_json::Value = serde_json::from_str(txt(&r, "j"))?;
            v["active"] = (int(&v, "active") != 0).into();
            json(status, &v)
        }
        None => not_found(),
    }
}

async fn deliveries(env: &Env, id: &str, query: &str) -> Result<Response> {
    let mut limit = 100;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k == "limit" {
            match v.parse::<i64>() {
                Ok(l) if (1..=500).contains(&l) => limit = l,
                _ => return field_error(422, &crate::fields::FieldError::new("limit", "1 to 500")),
            }
        }
    }
    if store::row(store::q(
        env,
        "SELECT 1 AS x FROM webhooks WHERE id = ?1",
        &[S(id)],
    )?)
    .await?
    .is_none()
    {
        return not_found();
    }
    let sql = store::list_sql(
        "deliveries",
        "json_object('id', d.id, 'webhook', d.webhook, 'event', d.event, 'event_id', d.event_id,
           'status', d.status, 'next_at', d.next_at, 'created_at', d.created_at,
           'updated_at', d.updated_at,
           'attempts', (SELECT json_group_array(json_object('attempt', a.attempt,
               'status_code', a.status_code, 'error', a.error, 'duration_ms', a.duration_ms, 'at', a.at))
             FROM (SELECT * FROM webhook_attempts WHERE delivery = d.id ORDER BY attempt, id) a))",
        "FROM webhook_deliveries d WHERE d.webhook = ?1 ORDER BY d.created_at DESC, d.id LIMIT ?2",
    );
    store::json_answer(store::q(env, sql, &[S(id), N(limit)])?).await
}

/// Puts delivery ids on the queue. A failure is logged, not raised: the
/// conversion is recorded either way and its delivery stays `pending` in
/// the log, from where a replay sends it.
pub async fn enqueue(env: &Env, ids: &[&str]) {
    if ids.is_empty() {
        return;
    }
    let sent = async {
        let queue = env.queue(QUEUE)?;
        for id in ids {
            queue
                .send_raw(
                    RawMessageBuilder::new(JsValue::from_str(id))
                        .build_with_content_type(QueueContentType::Json),
                )
                .await?;
        }
        Ok::<(), Error>(())
    }
    .await;
    if let Err(e) = sent {
        console_error!("webhook deliveries {ids:?} not queued: {e}");
    }
}

/// What to do with a message after an attempt.
enum Next {
    Done,
    Retry(u32),
}

/// The queue consumer: one attempt per message.
pub async fn consume(batch: MessageBatch<String>, env: &Env) -> Result<()> {
    let base = Config::get(env).webhook_retry_s;
    // the batch's deliveries at once: a slow or hanging endpoint (up to the
    // 10 s timeout) never holds up the others' (review22 F7: one at a time,
    // a healthy endpoint waited 10 s per message queued before it)
    // Two messages of one delivery in a batch (a replay pressed twice, a
    // redelivery) are one attempt: the later ones are acknowledged, as one
    // at a time they found it delivered (or retried by the first).
    let msgs: Vec<_> = batch.raw_iter().collect();
    let ids: Vec<Option<String>> = msgs.iter().map(|m| m.body().as_string()).collect();
    let ids = &ids;
    let nexts = futures_util::future::join_all(ids.iter().enumerate().map(|(i, id)| async move {
        match id {
            Some(id) if ids[..i].iter().any(|x| x.as_deref() == Some(id.as_str())) => Next::Done,
            Some(id) => deliver(env, id, base).await.unwrap_or_else(|e| {
                console_error!("webhook delivery {id}: {e}");
                Next::Retry(base)
            }),
            None => Next::Done,
        }
    }))
    .await;
    for (msg, next) in msgs.iter().zip(nexts) {
        match next {
            Next::Done => msg.ack(),
            Next::Retry(delay) => msg.retry_with_options(
                &QueueRetryOptionsBuilder::new()
                    .with_delay_seconds(delay)
                    .build(),
            ),
        }
    }
    Ok(())
}

/// POSTs `body` signed; the status code or the error.
async fn post(
    url: &str,
    secret: &str,
    delivery: &str,
    event: &str,
    body: &str,
) -> std::result::Result<u16, String> {
    let js = |e: JsValue| e.as_string().unwrap_or_else(|| format!("{e:?}"));
    let headers = web_sys::Headers::new().map_err(js)?;
    let signature = webhook::signature(secret, now_ms() / 1000, body.as_bytes());
    for (k, v) in [
        ("Content-Type", "application/json"),
        ("User-Agent", "ptrack-webhooks/1"),
        ("X-Signature", signature.as_str()),
        ("X-Webhook-Delivery", delivery),
        ("X-Webhook-Event", event),
    ] {
        headers.set(k, v).map_err(js)?;
    }
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(&JsValue::from_str(body));
    // A redirect is an answer, not a new destination.
    init.set_redirect(web_sys::RequestRedirect::Manual);
    init.set_signal(Some(&web_sys::AbortSignal::timeout_with_u32(TIMEOUT_MS)));
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let answer = wasm_bindgen_futures::JsFuture::from(scope.fetch_with_str_and_init(url, &init))
        .await
        .map_err(js)?;
    let answer: web_sys::Response = answer.dyn_into().map_err(js)?;
    Ok(answer.status())
}

/// One attempt of a delivery.
async fn deliver(env: &Env, id: &str, base: u32) -> Result<Next> {
    let Some(d) = store::row(store::q(
        env,
        "SELECT d.status, d.attempts, d.round, d.body, d.event, w.url, w.secret, w.active
         FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook WHERE d.id = ?1",
        &[S(id)],
    )?)
    .await?
    else {
        return Ok(Next::Done);
    };
    // Already settled: a stale message (a replay sends a fresh one).
    if !matches!(txt(&d, "status"), "pending" | "retrying") {
        return Ok(Next::Done);
    }
    let attempt = int(&d, "attempts") + 1;
    let round = int(&d, "round") + 1;
    let started = now_ms();
    let result = if int(&d, "active") == 0 {
        Err("endpoint is inactive".to_string())
    } else {
        post(
            txt(&d, "url"),
            txt(&d, "secret"),
            id,
            txt(&d, "event"),
            txt(&d, "body"),
        )
        .await
    };
    let finished = now_ms();
    let (code, err) = match &result {
        Ok(c) if (200..300).contains(c) => (Some(*c), None),
        Ok(c) => (Some(*c), Some(format!("answered HTTP {c}"))),
        Err(e) => (None, Some(e.chars().take(500).collect::<String>())),
    };
    let delay = webhook::backoff_s(base, round);
    let (status, next_at, next) = if err.is_none() {
        ("delivered", None, Next::Done)
    } else if round >= webhook::MAX_ATTEMPTS || int(&d, "active") == 0 {
        ("failed", None, Next::Done)
    } else {
        let at = Timestamp(finished + i64::from(delay) * 1000).to_string();
        ("retrying", Some(at), Next::Retry(delay))
    };
    let at = Timestamp(finished).to_string();
    let code = code.map(i64::from);
    let db = store::db(env)?;
    db.batch(vec![
        store::q(
            env,
            "INSERT INTO webhook_attempts (delivery, attempt, status_code, error, duration_ms, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &[
                S(id),
                N(attempt),
                code.map_or(O(None), N),
                O(err.as_deref()),
                N(finished - started),
                S(&at),
            ],
        )?,
        store::q(
            env,
            "UPDATE webhook_deliveries SET status = ?2, attempts = ?3, round = ?4, next_at = ?5,
               updated_at = ?6 WHERE id = ?1",
            &[
                S(id),
                S(status),
                N(attempt),
                N(round),
                O(next_at.as_deref()),
                S(&at),
            ],
        )?,
    ])
    .await?;
    Ok(next)
}
