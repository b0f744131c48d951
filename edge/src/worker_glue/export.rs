//! The export API (`Authorization: Bearer $EXPORT_TOKEN`): NDJSON for
//! settlement. Events page by `seq` with `X-Next-Cursor`.

use super::store::{self, n};
use super::{error, respond};
use crate::record::{Kind, Record};
use crate::routes::Route;
use crate::time::Timestamp;
use serde::Deserialize;
use worker::*;

pub const MAX_LIMIT: i64 = 5000;

#[derive(Deserialize)]
struct EventRow {
    seq: f64,
    uniq: Option<f64>,
    record: String,
}

fn ndjson(body: String, cursor: Option<i64>) -> Result<Response> {
    let r = respond(200, "application/x-ndjson", body.into_bytes())?;
    if let Some(c) = cursor {
        r.headers().set("X-Next-Cursor", &c.to_string())?;
    }
    Ok(r)
}

pub async fn handle(route: Route<'_>, req: Request, env: &Env) -> Result<Response> {
    match route {
        Route::ExportEvents => events(&req, env).await,
        Route::ExportPartners => partners(&req, env).await,
        Route::ExportCoupons => coupons(env).await,
        _ => error(404, "not found"),
    }
}

async fn events(req: &Request, env: &Env) -> Result<Response> {
    let url = req.url()?;
    let mut after = 0i64;
    let mut limit = 1000i64;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "after" => match v.parse::<i64>() {
                Ok(a) if a >= 0 => after = a,
                _ => return error(400, "after must be a non-negative integer"),
            },
            "limit" => match v.parse::<i64>() {
                Ok(l) if (1..=MAX_LIMIT).contains(&l) => limit = l,
                _ => return error(400, "limit must be an integer from 1 to 5000"),
            },
            _ => {}
        }
    }
    let rows: Vec<EventRow> = store::all(
        store::db(env)?
            .prepare("SELECT seq, uniq, record FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
            .bind(&[n(after), n(limit)])?,
    )
    .await?;
    let mut out = String::with_capacity(rows.len() * 400);
    let mut cursor = after;
    for r in rows {
        let seq = r.seq as i64;
        cursor = seq;
        // The stored record is a JSON object without seq and unique.
        let Some(rest) = r.record.strip_prefix('{') else {
            continue;
        };
        out.push_str("{\"seq\":");
        out.push_str(&seq.to_string());
        // Only clicks have a unique flag (set when their batch is written).
        if let Some(u) = r.uniq {
            out.push_str(if u != 0.0 {
                ",\"unique\":true"
            } else {
                ",\"unique\":false"
            });
        }
        out.push(',');
        out.push_str(rest);
        out.push('\n');
    }
    ndjson(out, Some(cursor))
}

async fn partners(req: &Request, env: &Env) -> Result<Response> {
    // A lapsed licence exports as `suspended` from its expiry, reason
    // `license_expired` (the partner layer's compliance data).
    let now = super::event_now(req, &super::Config::get(env));
    let licences: std::collections::HashMap<String, Timestamp> =
        store::rows(store::db(env)?.prepare("SELECT partner, license_expires FROM compliance"))
            .await?
            .iter()
            .filter_map(|r| {
                Some((
                    store::txt(r, "partner").to_string(),
                    Timestamp::parse(store::txt(r, "license_expires")).ok()?,
                ))
            })
            .collect();
    let mut out = String::new();
    for p in store::all_partners(env).await? {
        let eff =
            crate::partner::effective(p.status, &p.history, licences.get(&p.id).copied(), now);
        let mut r = Record::new(Kind::Partner);
        r.id = Some(p.id);
        r.program = Some(p.program);
        r.name = p.name;
        r.parent = p.parent;
        r.tier = p.tier;
        r.status = Some(eff.status.as_str().to_string());
        r.status_reason = eff.reason;
        r.history = Some(eff.history);
        r.currency = p.currency;
        r.email_hash = p.email_hash;
        r.created_at = Timestamp::parse(&p.created_at).ok();
        r.updated_at = Timestamp::parse(&p.updated_at).ok();
        out.push_str(&serde_json::to_string(&r)?);
        out.push('\n');
    }
    ndjson(out, None)
}

async fn coupons(env: &Env) -> Result<Response> {
    let rows: Vec<store::CouponRow> = store::all(store::db(env)?.prepare(
        "SELECT code, program, partner, created_at, updated_at FROM coupons ORDER BY code",
    ))
    .await?;
    let mut out = String::new();
    for c in rows {
        let mut r = Record::new(Kind::Coupon);
        r.code = Some(c.code);
        r.partner = Some(c.partner);
        r.program = Some(c.program);
        r.created_at = Timestamp::parse(&c.created_at).ok();
        // a coupon moved to another partner keeps its created_at: the
        // newer line is the one with the later updated_at
        r.updated_at = Timestamp::parse(&c.updated_at).ok();
        out.push_str(&serde_json::to_string(&r)?);
        out.push('\n');
    }
    ndjson(out, None)
}
