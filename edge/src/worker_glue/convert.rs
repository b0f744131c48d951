//! Conversions: `POST|GET /postback` (server to server, authenticated) and
//! `GET /pixel` (browser, cookie); the Stripe and Shopify webhooks
//! (`integrations.rs`) end here too. Every source goes through one path:
//! a parsed [`Postback`], its [`evidence`], then [`record`], exactly once:
//! a unique key on `program|event|txn_id` in D1 decides, even under
//! concurrency. A recorded conversion writes its `conversion.recorded`
//! webhook deliveries in the same transaction (an outbox), then queues them.

use super::store::{self, n, s, Row};
use super::{body_limited, error, field_error, header, json, now_ms, random, respond, Config};
use crate::admin::Program;
use crate::auth;
use crate::clickid;
use crate::fields::{FieldError, Fields};
use crate::hash;
use crate::postback::{Postback, MAX_BODY};
use crate::record::{Kind, Record, Source};
use crate::time::Timestamp;
use serde_json::json as j;
use worker::*;

/// A transparent 1x1 GIF.
const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

pub enum Outcome {
    Recorded(String),
    Duplicate(String),
    Conflict(String),
}

impl Outcome {
    /// `{"status": ..., "id": ...}`, and whether it is a conflict.
    pub fn answer(&self) -> (serde_json::Value, bool) {
        let (status, id) = match self {
            Outcome::Recorded(id) => ("recorded", id),
            Outcome::Duplicate(id) => ("duplicate", id),
            Outcome::Conflict(id) => ("conflict", id),
        };
        (
            j!({"status": status, "id": id}),
            matches!(self, Outcome::Conflict(_)),
        )
    }
}

/// Evidence resolved from a verified click id or a registered coupon.
#[derive(Default)]
pub struct Evidence {
    partner: Option<String>,
    link: Option<String>,
    click_ts: Option<Timestamp>,
}

/// Verifies the click id and finds the partner it names.
async fn evidence(
    env: &Env,
    cfg: &Config,
    program: &Program,
    pb: &Postback,
) -> Result<std::result::Result<Evidence, FieldError>> {
    let mut ev = Evidence::default();
    if let Some(cid) = &pb.click_id {
        let claims = match clickid::verify(&cfg.click_secrets(), cid) {
            Ok(c) => c,
            Err(e) => return Ok(Err(FieldError::new("click_id", e.reason()))),
        };
        if claims.program != program.num {
            return Ok(Err(FieldError::new(
                "click_id",
                "click id belongs to another program",
            )));
        }
        ev.click_ts = Timestamp::from_ms(claims.ts_ms);
        if let Some(link) = store::link_by_num(env, claims.link).await? {
            ev.partner = Some(link.partner.clone());
            ev.link = Some(link.slug.clone());
        }
    }
    if ev.partner.is_none() {
        if let Some(code) = &pb.coupon {
            if let Some(c) = store::coupon(env, code).await? {
                if c.program == program.id {
                    ev.partner = Some(c.partner.clone());
                }
            }
        }
    }
    Ok(Ok(ev))
}

/// Evidence for a conversion whose sender cannot be told "fix it" (a
/// browser's cookie, a provider's webhook): a click id that does not verify
/// is logged as a rejection and dropped, and the conversion is kept
/// unattributed.
pub async fn evidence_or_none(
    env: &Env,
    cfg: &Config,
    program: &Program,
    pb: &mut Postback,
    route: &str,
    raw: &str,
) -> Result<Evidence> {
    match evidence(env, cfg, program, pb).await? {
        Ok(ev) => Ok(ev),
        Err(e) => {
            store::log_rejection(env, route, Some(&program.id), &e.field, &e.reason, raw).await?;
            pb.click_id = None;
            // A coupon may still name the partner.
            Ok(evidence(env, cfg, program, pb).await?.unwrap_or_default())
        }
    }
}

/// The deliveries of a newly stored event to every active endpoint that
/// subscribed to `conversion.recorded`: inserted only when the event with
/// this id exists, i.e. in the same batch right after its insert.
const OUTBOX: &str =
    "INSERT INTO webhook_deliveries (id, webhook, event, event_id, body, created_at, updated_at)
  SELECT 'wd_' || lower(hex(randomblob(10))), w.id, 'conversion.recorded', e.id,
    CASE WHEN p.id IS NULL
      THEN json_object('id', e.id, 'type', 'conversion.recorded', 'created', ?2,
                       'data', json_set(e.record, '$.seq', e.seq))
      ELSE json_object('id', e.id, 'type', 'conversion.recorded', 'created', ?2,
                       'replaces', p.id, 'data', json_set(e.record, '$.seq', e.seq))
    END,
    ?2, ?2
  FROM events e JOIN webhooks w
    -- the pixel's copy of the same order, delivered before: this
    -- authenticated record stands for it
    LEFT JOIN events p ON p.dedupe_key = 'pixel|' || e.dedupe_key
  WHERE e.id = ?1 AND w.active = 1
    AND EXISTS (SELECT 1 FROM json_each(w.events) WHERE value = 'conversion.recorded')
  RETURNING id";

/// Stores a conversion once per `program|event|txn_id`: the one recording
/// path of postbacks, the pixel and the provider webhooks.
pub async fn record(
    env: &Env,
    cfg: &Config,
    req: &Request,
    pb: &Postback,
    ev: Evidence,
    source: Source,
) -> Result<Outcome> {
    let now = super::event_now(req, cfg);
    let id = clickid::event_id(now, random::<10>()?);
    let ts = pb.ts.unwrap_or(Timestamp(now));
    let mut rec = Record::new(Kind::Conversion);
    rec.id = Some(id.clone());
    rec.ts = Some(ts);
    rec.program = Some(pb.program.clone());
    rec.partner = ev.partner;
    rec.link = ev.link;
    rec.click_id = pb.click_id.clone();
    rec.click_ts = ev.click_ts;
    rec.event = Some(pb.event.clone());
    rec.txn_id = Some(pb.txn_id.clone());
    rec.amount = pb.amount;
    rec.currency = pb.currency;
    rec.customer = pb.customer.clone();
    rec.coupon = pb.coupon.clone();
    rec.original_txn_id = pb.original_txn_id.clone();
    rec.lots = pb.lots;
    rec.instrument = pb.instrument.clone();
    rec.source = Some(source);
    // A provider's webhook comes from its servers: their country is not
    // the customer's.
    let from_browser_or_sender = matches!(source, Source::Postback | Source::Pixel);
    rec.country = pb.country.clone().or_else(|| {
        from_browser_or_sender
            .then(|| req.cf().and_then(|cf| cf.country()))
            .flatten()
    });
    rec.email_hash = pb.email.as_deref().map(|e| hash::email(&cfg.email_salt, e));
    let key = match source {
        Source::Pixel => pb.pixel_dedupe_key(),
        _ => pb.dedupe_key(),
    };
    // the pixel's copy of an order the authenticated postback (or a
    // provider) recorded already adds nothing: not stored, not delivered
    let bare = pb.dedupe_key();
    let payload = hash::payload(&pb.canonical());
    let db = store::db(env)?;
    let results = db
        .batch(vec![
            db.prepare(
                "INSERT INTO events (id, type, program, ts_ms, dedupe_key, payload_hash, record)
                 SELECT ?1, 'conversion', ?2, ?3, ?4, ?5, ?6
                 WHERE ?4 = ?7 OR NOT EXISTS (SELECT 1 FROM events WHERE dedupe_key = ?7)
                 ON CONFLICT(dedupe_key) DO NOTHING",
            )
            .bind(&[
                s(&id),
                s(&pb.program),
                n(ts.ms()),
                s(&key),
                s(&payload),
                s(&serde_json::to_string(&rec)?),
                s(&bare),
            ])?,
            db.prepare(OUTBOX)
                .bind(&[s(&id), s(&Timestamp(now_ms()).to_string())])?,
        ])
        .await?;
    if results
        .first()
        .is_some_and(|r| store::result_changes(r) > 0)
    {
        let deliveries: Vec<Row> = match results.get(1) {
            Some(r) => r.results()?,
            None => Vec::new(),
        };
        let ids: Vec<&str> = deliveries.iter().map(|d| store::txt(d, "id")).collect();
        super::webhooks::enqueue(env, &ids).await;
        return Ok(Outcome::Recorded(id));
    }
    let existing = store::row(
        db.prepare(
            "SELECT id, payload_hash, dedupe_key = ?1 AS own FROM events
             WHERE dedupe_key IN (?1, ?2) ORDER BY own DESC LIMIT 1",
        )
        .bind(&[s(&key), s(&bare)])?,
    )
    .await?;
    match existing {
        // the pixel's hit of an order recorded by an authenticated source
        Some(e) if store::int(&e, "own") == 0 => {
            Ok(Outcome::Duplicate(store::txt(&e, "id").to_string()))
        }
        Some(e) if store::otxt(&e, "payload_hash") == Some(payload.as_str()) => {
            Ok(Outcome::Duplicate(store::txt(&e, "id").to_string()))
        }
        Some(e) => Ok(Outcome::Conflict(store::txt(&e, "id").to_string())),
        None => Err(Error::RustError(
            "conversion neither inserted nor found".into(),
        )),
    }
}

fn outcome_response(o: Outcome) -> Result<Response> {
    let (answer, conflict) = o.answer();
    json(if conflict { 409 } else { 200 }, &answer)
}

fn is_json(req: &Request, body: &[u8]) -> bool {
    header(req, "Content-Type").is_some_and(|c| c.to_ascii_lowercase().contains("json"))
        || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The raw request kept in the rejections log: the body of a POST, the
/// query string of a GET, never with the credential.
fn kept_raw(is_post: bool, body: &[u8], query: &str) -> String {
    crate::postback::redact_token(&if is_post {
        String::from_utf8_lossy(body).into_owned()
    } else {
        query.to_string()
    })
}

/// A postback's authentication: a token (any of the program's), else an
/// HMAC signature of the raw body (the raw query string for GET).
fn authenticated(
    program: &Program,
    token: Option<&str>,
    signature: Option<&str>,
    is_post: bool,
    body: &[u8],
    query: &str,
) -> bool {
    match (token, signature) {
        (Some(t), _) => auth::token_matches(t, &program.postback_tokens),
        (None, Some(sig)) => {
            let signed: &[u8] = if is_post { body } else { query.as_bytes() };
            auth::verify_signature(sig, signed, &program.hmac_secrets, now_ms() / 1000).is_ok()
        }
        (None, None) => false,
    }
}

/// The string fields of a request whose fields could not be read as
/// fields, for finding its program and credential: a JSON object's string
/// members (the last of a name given twice), or the form body's pairs;
/// then the query string's ([`loose_get`] reads the first of these).
fn loose_fields(is_post: bool, json: bool, body: &[u8], query: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    if is_post && json {
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(body) {
            pairs.extend(
                m.into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string()))),
            );
        }
    } else if is_post {
        pairs.extend(form_urlencoded::parse(body).into_owned());
    }
    pairs.extend(form_urlencoded::parse(query.as_bytes()).into_owned());
    pairs
}

fn loose_get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// The program [`loose_fields`] name, if it is one.
async fn loose_program(
    env: &Env,
    pairs: &[(String, String)],
) -> Result<Option<std::rc::Rc<Program>>> {
    match loose_get(pairs, "program") {
        Some(p) if crate::ids::is_valid_id(p) => store::program(env, p).await,
        _ => Ok(None),
    }
}

pub async fn postback(mut req: Request, env: &Env, cfg: &Config) -> Result<Response> {
    let is_post = req.method() == Method::Post;
    let url = req.url()?;
    let query = url.query().unwrap_or("").to_string();
    if query.len() > MAX_BODY {
        return error(413, "request over 16 KiB");
    }
    let body = if is_post {
        match body_limited(&mut req, MAX_BODY).await? {
            Some(b) => b,
            None => return error(413, "body over 16 KiB"),
        }
    } else {
        Vec::new()
    };
    let parsed = if is_post && is_json(&req, &body) {
        Fields::from_json(&body)
    } else if is_post {
        match std::str::from_utf8(&body) {
            Ok(text) => Fields::from_query(text),
            Err(_) => Err(FieldError::new("body", "not valid UTF-8")),
        }
    } else {
        Fields::from_query(&query)
    };
    let mut fields = match parsed {
        Ok(f) => f,
        Err(e) => {
            // kept in the rejections log when the request still names a
            // program it authenticates for (a JSON number where a string
            // belongs, a field given twice): the integrator finds it there
            let json = is_post && is_json(&req, &body);
            let loose = loose_fields(is_post, json, &body, &query);
            if let Some(program) = loose_program(env, &loose).await? {
                let token = loose_get(&loose, "token").map(str::to_string).or_else(|| {
                    auth::bearer(header(&req, "Authorization").as_deref()).map(str::to_string)
                });
                let signature = header(&req, "X-Signature");
                if authenticated(
                    &program,
                    token.as_deref(),
                    signature.as_deref(),
                    is_post,
                    &body,
                    &query,
                ) {
                    let raw = kept_raw(is_post, &body, &query);
                    store::log_rejection(
                        env,
                        "postback",
                        Some(&program.id),
                        &e.field,
                        &e.reason,
                        &raw,
                    )
                    .await?;
                }
            }
            return field_error(422, &e);
        }
    };
    // a POST's fields the body lacks, from its query string: not covered
    // by a signature (which signs the body)
    let mut from_query: Vec<String> = Vec::new();
    if is_post {
        if let Ok(q) = Fields::from_query(&query) {
            from_query = q
                .names()
                .filter(|k| fields.get(k).is_none())
                .map(str::to_string)
                .collect();
            fields.merge_missing(&q);
        }
    }
    let program_id = match fields.require("program") {
        Ok(p) if crate::ids::is_valid_id(p) => p.to_string(),
        Ok(_) => return field_error(422, &FieldError::new("program", "unknown program")),
        Err(e) => return field_error(422, &e),
    };
    let Some(program) = store::program(env, &program_id).await? else {
        return field_error(422, &FieldError::new("program", "unknown program"));
    };

    // Authentication: a token, or an HMAC signature of the raw body (the raw
    // query string for GET).
    let token = fields
        .opt("token")
        .map(str::to_string)
        .or_else(|| auth::bearer(header(&req, "Authorization").as_deref()).map(str::to_string));
    let signature = header(&req, "X-Signature");
    let authed = authenticated(
        &program,
        token.as_deref(),
        signature.as_deref(),
        is_post,
        &body,
        &query,
    );
    if !authed {
        return error(401, "bad or missing credentials");
    }

    let raw = kept_raw(is_post, &body, &query);
    // A signed POST: its fields are the body's. `program` may come from the
    // query, as it chose the secrets the signature verified with; any other
    // field there is refused, not recorded unsigned.
    if is_post && token.is_none() {
        if let Some(k) = from_query.iter().find(|k| *k != "program") {
            let e = FieldError::new(
                k.as_str(),
                "in the query string of a signed POST, which the signature does not cover: \
                 send it in the signed body",
            );
            // each part redacted on its own (the body with a suffix is no
            // longer JSON to redact by key)
            let raw = format!(
                "{}\n(query: {})",
                crate::erase::redact_personal(&raw),
                crate::erase::redact_personal(&crate::postback::redact_token(&query))
            );
            store::log_rejection(
                env,
                "postback",
                Some(&program.id),
                &e.field,
                &e.reason,
                &raw,
            )
            .await?;
            return field_error(422, &e);
        }
    }
    let pb = match Postback::parse(&fields, &program, super::event_now(&req, cfg)) {
        Ok(pb) => pb,
        Err(e) => {
            store::log_rejection(
                env,
                "postback",
                Some(&program.id),
                &e.field,
                &e.reason,
                &raw,
            )
            .await?;
            return field_error(422, &e);
        }
    };
    let ev = match evidence(env, cfg, &program, &pb).await? {
        Ok(ev) => ev,
        Err(e) => {
            store::log_rejection(
                env,
                "postback",
                Some(&program.id),
                &e.field,
                &e.reason,
                &raw,
            )
            .await?;
            return field_error(422, &e);
        }
    };
    outcome_response(record(env, cfg, &req, &pb, ev, Source::Postback).await?)
}

pub async fn pixel(req: Request, env: &Env, cfg: &Config) -> Result<Response> {
    let url = req.url()?;
    let query = url.query().unwrap_or("").to_string();
    if query.len() > MAX_BODY {
        return error(413, "request over 16 KiB");
    }
    let mut fields = match Fields::from_query(&query) {
        Ok(f) => f,
        Err(e) => return field_error(422, &e),
    };
    let program = match fields.require("program") {
        Ok(p) if crate::ids::is_valid_id(p) => store::program(env, p).await?,
        _ => None,
    };
    let Some(program) = program.filter(|p| p.pixel) else {
        return field_error(
            422,
            &FieldError::new("program", "unknown program or pixel tracking off"),
        );
    };
    // The click id comes from the cookie, never from the page.
    let cookie = crate::cookie::click_id(header(&req, "Cookie").as_deref());
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "click_id")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Some(c) = &cookie {
        pairs.push(("click_id".into(), c.clone()));
    }
    fields = match Fields::from_pairs(pairs) {
        Ok(f) => f,
        Err(e) => return field_error(422, &e),
    };
    let query = crate::postback::redact_token(&query);
    let mut pb = match Postback::parse(&fields, &program, super::event_now(&req, cfg))
        .and_then(|pb| pb.pixel_refusal().map_or(Ok(pb), Err))
    {
        Ok(pb) => pb,
        Err(e) => {
            store::log_rejection(env, "pixel", Some(&program.id), &e.field, &e.reason, &query)
                .await?;
            return field_error(422, &e);
        }
    };
    // A forged or foreign cookie: keep the conversion, unattributed.
    let ev = evidence_or_none(env, cfg, &program, &mut pb, "pixel", &query).await?;
    match record(env, cfg, &req, &pb, ev, Source::Pixel).await? {
        Outcome::Conflict(id) => json(409, &j!({"status": "conflict", "id": id})),
        _ => respond(200, "image/gif", GIF.to_vec()),
    }
}
