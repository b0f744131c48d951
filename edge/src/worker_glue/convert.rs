//! Conversions: `POST|GET /postback` (server to server, authenticated) and
//! `GET /pixel` (browser, cookie). Each is recorded exactly once: a unique
//! key on `program|event|txn_id` in D1 decides, even under concurrency.

use super::store::{self, n, s};
use super::{body_limited, error, field_error, header, json, now_ms, random, respond, Config};
use crate::admin::Program;
use crate::auth;
use crate::clickid;
use crate::fields::{FieldError, Fields};
use crate::hash;
use crate::postback::{Postback, MAX_BODY};
use crate::record::{Kind, Record, Source};
use crate::time::Timestamp;
use serde::Deserialize;
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

/// Evidence resolved from a verified click id or a registered coupon.
struct Evidence {
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
    let mut ev = Evidence {
        partner: None,
        link: None,
        click_ts: None,
    };
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

#[derive(Deserialize)]
struct Existing {
    id: String,
    payload_hash: Option<String>,
}

/// Stores a conversion once per `program|event|txn_id`.
async fn record(
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
    rec.country = pb
        .country
        .clone()
        .or_else(|| req.cf().and_then(|cf| cf.country()));
    rec.email_hash = pb.email.as_deref().map(|e| hash::email(&cfg.email_salt, e));
    let key = pb.dedupe_key();
    let payload = hash::payload(&pb.canonical());
    let db = store::db(env)?;
    let inserted: Option<f64> = db
        .prepare(
            "INSERT INTO events (id, type, program, ts_ms, dedupe_key, payload_hash, record)
             VALUES (?1, 'conversion', ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(dedupe_key) DO NOTHING RETURNING seq",
        )
        .bind(&[
            s(&id),
            s(&pb.program),
            n(ts.ms()),
            s(&key),
            s(&payload),
            s(&serde_json::to_string(&rec)?),
        ])?
        .first::<f64>(Some("seq"))
        .await?;
    if inserted.is_some() {
        return Ok(Outcome::Recorded(id));
    }
    let existing: Option<Existing> = store::first(
        db.prepare("SELECT id, payload_hash FROM events WHERE dedupe_key = ?1")
            .bind(&[s(&key)])?,
    )
    .await?;
    match existing {
        Some(e) if e.payload_hash.as_deref() == Some(payload.as_str()) => {
            Ok(Outcome::Duplicate(e.id))
        }
        Some(e) => Ok(Outcome::Conflict(e.id)),
        None => Err(Error::RustError(
            "conversion neither inserted nor found".into(),
        )),
    }
}

fn outcome_response(o: Outcome) -> Result<Response> {
    match o {
        Outcome::Recorded(id) => json(200, &j!({"status": "recorded", "id": id})),
        Outcome::Duplicate(id) => json(200, &j!({"status": "duplicate", "id": id})),
        Outcome::Conflict(id) => json(409, &j!({"status": "conflict", "id": id})),
    }
}

fn is_json(req: &Request, body: &[u8]) -> bool {
    header(req, "Content-Type").is_some_and(|c| c.to_ascii_lowercase().contains("json"))
        || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
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
        Err(e) => return field_error(422, &e),
    };
    if is_post {
        if let Ok(q) = Fields::from_query(&query) {
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
    let authed = match (&token, &signature) {
        (Some(t), _) => auth::token_matches(t, &program.postback_tokens),
        (None, Some(sig)) => {
            let signed: &[u8] = if is_post { &body } else { query.as_bytes() };
            auth::verify_signature(sig, signed, &program.hmac_secrets, now_ms() / 1000).is_ok()
        }
        (None, None) => false,
    };
    if !authed {
        return error(401, "bad or missing credentials");
    }

    let raw = if is_post {
        String::from_utf8_lossy(&body).into_owned()
    } else {
        query.clone()
    };
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
    let mut pb = match Postback::parse(&fields, &program, super::event_now(&req, cfg)) {
        Ok(pb) => pb,
        Err(e) => {
            store::log_rejection(env, "pixel", Some(&program.id), &e.field, &e.reason, &query)
                .await?;
            return field_error(422, &e);
        }
    };
    let ev = match evidence(env, cfg, &program, &pb).await? {
        Ok(ev) => ev,
        Err(e) => {
            // A forged or foreign cookie: keep the conversion, unattributed.
            store::log_rejection(env, "pixel", Some(&program.id), &e.field, &e.reason, &query)
                .await?;
            pb.click_id = None;
            Evidence {
                partner: None,
                link: None,
                click_ts: None,
            }
        }
    };
    match record(env, cfg, &req, &pb, ev, Source::Pixel).await? {
        Outcome::Conflict(id) => json(409, &j!({"status": "conflict", "id": id})),
        _ => respond(200, "image/gif", GIF.to_vec()),
    }
}
