//! The admin API (`Authorization: Bearer $ADMIN_TOKEN`): programs, partners,
//! links and coupons, validated before they are stored in D1 and KV.

use super::store::{self, n, opt, s};
use super::{body_limited, error, field_error, json, now_ms, random};
use crate::admin::{Coupon, LinkInput, Partner, PartnerInput, PartnerStatus, Program};
use crate::fields::FieldError;
use crate::hash;
use crate::partner;
use crate::record::StatusChange;
use crate::routes::Route;
use crate::time::Timestamp;
use serde::Deserialize;
use serde_json::json as j;
use worker::*;

const MAX_ADMIN_BODY: usize = 64 * 1024;

async fn body(req: &mut Request) -> Result<std::result::Result<Vec<u8>, Response>> {
    Ok(match body_limited(req, MAX_ADMIN_BODY).await? {
        Some(b) => Ok(b),
        None => Err(error(413, "body over 64 KiB")?),
    })
}

macro_rules! try_body {
    ($req:expr) => {
        match body($req).await? {
            Ok(b) => b,
            Err(r) => return Ok(r),
        }
    };
}

macro_rules! try_field {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return field_error(422, &e),
        }
    };
}

fn partner_json(p: &Partner) -> serde_json::Value {
    j!({
        "id": p.id, "program": p.program, "name": p.name, "email": p.email,
        "email_hash": p.email_hash, "parent": p.parent, "tier": p.tier,
        "status": p.status.as_str(), "currency": p.currency.map(|c| c.code()),
        "history": p.history, "created_at": p.created_at, "updated_at": p.updated_at,
    })
}

/// A tier the program's partners, assets or MDF budgets use that its new
/// `tiers` list leaves out (review26 L3: the partners lost their assets and
/// could not be saved again): move them first.
async fn tier_in_use(env: &Env, p: &Program) -> Result<Option<FieldError>> {
    if p.tiers.is_empty() {
        return Ok(None);
    }
    let tiers = serde_json::to_string(&p.tiers)?;
    let row = store::row(
        store::db(env)?
            .prepare(
                "SELECT what, id, tier FROM (
                   SELECT 'partner' AS what, id, tier FROM partners WHERE program = ?1 AND tier IS NOT NULL
                   UNION ALL SELECT 'asset', id, min_tier FROM assets WHERE program = ?1 AND min_tier IS NOT NULL
                   UNION ALL SELECT 'MDF budget', id, tier FROM mdf_budgets WHERE program = ?1 AND tier IS NOT NULL)
                 WHERE tier NOT IN (SELECT value FROM json_each(?2)) ORDER BY what, id LIMIT 1",
            )
            .bind(&[s(&p.id), s(&tiers)])?,
    )
    .await?;
    Ok(row.map(|r| {
        FieldError::new(
            "tiers",
            format!(
                "{} {} has the tier {:?}, which the list leaves out: move it to a listed tier first",
                store::txt(&r, "what"),
                store::txt(&r, "id"),
                store::txt(&r, "tier")
            ),
        )
    }))
}

fn email_salt(env: &Env) -> String {
    super::Config::get(env).email_salt.clone()
}

pub async fn handle(route: Route<'_>, mut req: Request, env: &Env) -> Result<Response> {
    let method = req.method();
    match (route, method) {
        (Route::Program(id), Method::Get) => match store::program(env, id).await? {
            Some(p) => json(200, &serde_json::to_value(&*p)?),
            None => error(404, "no such program"),
        },
        (Route::Program(id), Method::Put) => {
            let body = try_body!(&mut req);
            let mut p = try_field!(Program::parse(id, &body));
            if let Some(e) = tier_in_use(env, &p).await? {
                return field_error(422, &e);
            }
            store::put_program(env, &mut p).await?;
            json(200, &serde_json::to_value(&p)?)
        }
        (Route::Partner(id), Method::Get) => match store::partner(env, id).await? {
            Some(p) => json(200, &partner_json(&p)),
            None => error(404, "no such partner"),
        },
        (Route::Partner(id), Method::Put) => {
            let body = try_body!(&mut req);
            let input = try_field!(PartnerInput::parse(id, &body));
            let clock = super::event_now(&req, &super::Config::get(env));
            put_partner(env, id, input, clock).await
        }
        (Route::Links, Method::Post) => {
            let body = try_body!(&mut req);
            let input = try_field!(LinkInput::parse(&body));
            create_link(env, &req, input).await
        }
        (Route::Link(slug), Method::Get) => match store::link_by_slug(env, slug).await? {
            Some(l) => json(200, &serde_json::to_value(&*l)?),
            None => error(404, "no such link"),
        },
        (Route::Link(slug), Method::Put) => {
            let body = try_body!(&mut req);
            let input = try_field!(LinkInput::parse(&body));
            update_link(env, slug, input).await
        }
        (Route::Coupon(code), Method::Get) => match store::coupon(env, code).await? {
            Some(c) => json(200, &serde_json::to_value(&*c)?),
            None => error(404, "no such coupon"),
        },
        (Route::Coupon(code), Method::Put) => {
            let body = try_body!(&mut req);
            let c = try_field!(Coupon::parse(code, &body));
            put_coupon(env, c).await
        }
        (Route::Rejections, Method::Get) => rejections(env, &req).await,
        _ => error(405, "method not allowed"),
    }
}

async fn put_partner(env: &Env, id: &str, input: PartnerInput, clock: i64) -> Result<Response> {
    let Some(program) = store::program(env, &input.program).await? else {
        return field_error(422, &FieldError::new("program", "unknown program"));
    };
    if let Some(parent) = &input.parent {
        match store::partner(env, parent).await? {
            Some(p) if p.program == input.program => {}
            _ => {
                return field_error(
                    422,
                    &FieldError::new("parent", "no such partner in this program"),
                )
            }
        }
        // review21 L2: a partner may not be its own ancestor (A -> B -> A):
        // the parents above the new parent, up the registry
        let above = store::row(
            store::db(env)?
                .prepare(
                    "WITH RECURSIVE up(id, depth) AS (
                       SELECT ?1, 0
                       UNION SELECT p.parent, up.depth + 1 FROM partners p JOIN up ON p.id = up.id
                        WHERE p.parent IS NOT NULL AND up.depth < 64)
                     SELECT 1 AS hit FROM up WHERE id = ?2 LIMIT 1",
                )
                .bind(&[s(parent), s(id)])?,
        )
        .await?;
        if above.is_some() {
            return field_error(
                422,
                &FieldError::new(
                    "parent",
                    format!("{parent} is {id} or has {id} above it: a parent cycle"),
                ),
            );
        }
    }
    if let Some(t) = &input.tier {
        if !program.tiers.is_empty() && !program.tiers.contains(t) {
            return field_error(
                422,
                &FieldError::new("tier", format!("must be one of {:?}", program.tiers)),
            );
        }
    }
    let existing = store::partner(env, id).await?;
    if let Some(e) = &existing {
        if e.program != input.program {
            return field_error(
                422,
                &FieldError::new("program", "a partner belongs to one program"),
            );
        }
    }
    // Status history is dated by the (test) clock, like events.
    let now = Timestamp(clock);
    let changed = existing.as_ref().is_none_or(|e| e.status != input.status);
    if changed && input.status == PartnerStatus::Approved {
        let expires = store::license_expires(env, id).await?;
        if let Some(reason) = partner::approval_blocked(program.regulated, expires, now.ms()) {
            return compliance_conflict(reason);
        }
    }
    let mut history = existing
        .as_ref()
        .map(|e| e.history.clone())
        .unwrap_or_default();
    if changed {
        history.push(StatusChange {
            status: input.status.as_str().to_string(),
            at: now,
            reason: None,
        });
    }
    let email_hash = input
        .email
        .as_deref()
        .map(|e| hash::email(&email_salt(env), e));
    let now_s = now.to_string();
    let db = store::db(env)?;
    // Every statement holds only while the partner is as it was read (or
    // still absent): two operators changing one partner at once, one wins,
    // the other gets a 409 and no history entry is lost (review26 M2). The
    // audit entry comes first, read against the same state as the write.
    let guard = match &existing {
        Some(e) => store::Guard::As(&e.updated_at),
        None => store::Guard::Absent,
    };
    let mut stmts = Vec::new();
    if changed {
        stmts.push(store::audit_stmt(
            env,
            id,
            &now_s,
            "operator",
            existing.as_ref().map(|e| e.status.as_str()),
            input.status.as_str(),
            Some("PUT /api/partners"),
            guard,
        )?);
    }
    let history = serde_json::to_string(&history)?;
    let args = [
        s(id),
        s(&input.program),
        opt(input.name.as_deref()),
        opt(input.email.as_deref()),
        opt(email_hash.as_deref()),
        opt(input.parent.as_deref()),
        opt(input.tier.as_deref()),
        s(input.status.as_str()),
        opt(input.currency.map(|c| c.code())),
        s(&history),
        s(&now_s),
    ];
    stmts.push(match &existing {
        Some(e) => {
            let mut args = args.to_vec();
            args.push(s(&e.updated_at));
            db.prepare(
                "UPDATE partners SET name = ?3, email = ?4, email_hash = ?5, parent = ?6, tier = ?7,
                   status = ?8, currency = ?9, history = ?10, updated_at = ?11
                 WHERE id = ?1 AND program = ?2 AND updated_at = ?12",
            )
            .bind(&args)?
        }
        None => db
            .prepare(
                "INSERT INTO partners (id, program, name, email, email_hash, parent, tier, status, currency, history, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)
                 ON CONFLICT(id) DO NOTHING",
            )
            .bind(&args)?,
    });
    let results = db.batch(stmts).await?;
    if results.last().map(store::result_changes) != Some(1) {
        return super::operator::conflict();
    }
    match store::partner(env, id).await? {
        Some(p) => json(
            if existing.is_some() { 200 } else { 201 },
            &partner_json(&p),
        ),
        None => error(500, "partner not stored"),
    }
}

pub fn public_base(req: &Request) -> String {
    req.url()
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default()
}

async fn check_link_owner(env: &Env, input: &LinkInput) -> Result<Option<FieldError>> {
    if store::program(env, &input.program).await?.is_none() {
        return Ok(Some(FieldError::new("program", "unknown program")));
    }
    match store::partner(env, &input.partner).await? {
        Some(p) if p.program == input.program => Ok(None),
        _ => Ok(Some(FieldError::new(
            "partner",
            "no such partner in this program",
        ))),
    }
}

fn random_slug() -> Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    Ok(random::<8>()?
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// 409 for an approval that a regulated program does not allow yet.
pub fn compliance_conflict(reason: &str) -> Result<Response> {
    json(
        409,
        &j!({"status": "compliance_required", "error": {"reason": reason}}),
    )
}

pub async fn create_link(env: &Env, req: &Request, input: LinkInput) -> Result<Response> {
    if let Some(e) = check_link_owner(env, &input).await? {
        return field_error(422, &e);
    }
    match insert_link(env, &input).await? {
        Ok(slug) => {
            let url = format!("{}/c/{slug}", public_base(req));
            json(201, &j!({"slug": slug, "url": url}))
        }
        Err(r) => Ok(r),
    }
}

/// Stores a link (owner already checked) and publishes it to KV: its slug.
pub async fn insert_link(
    env: &Env,
    input: &LinkInput,
) -> Result<std::result::Result<String, Response>> {
    let now = Timestamp(now_ms()).to_string();
    let status = if input.paused { "paused" } else { "active" };
    let db = store::db(env)?;
    for _ in 0..5 {
        let slug = match &input.slug {
            Some(s) => s.clone(),
            None => random_slug()?,
        };
        let inserted: Option<f64> = db
            .prepare(
                "INSERT INTO links (slug, program, partner, destination, status, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT(slug) DO NOTHING RETURNING num",
            )
            .bind(&[s(&slug), s(&input.program), s(&input.partner), s(&input.destination), s(status), s(&now)])?
            .first::<f64>(Some("num"))
            .await?;
        if inserted.is_none() {
            if input.slug.is_some() {
                return Ok(Err(json(
                    409,
                    &j!({"error": {"field": "slug", "reason": "slug already taken"}}),
                )?));
            }
            continue;
        }
        store::forget(&format!("link:{slug}"));
        store::publish_link(env, &slug).await?;
        return Ok(Ok(slug));
    }
    Ok(Err(error(500, "could not find a free slug")?))
}

async fn update_link(env: &Env, slug: &str, input: LinkInput) -> Result<Response> {
    let Some(existing) = store::link_by_slug(env, slug).await? else {
        return error(404, "no such link");
    };
    if existing.partner != input.partner || existing.program != input.program {
        return field_error(
            422,
            &FieldError::new("partner", "a link keeps its partner and program"),
        );
    }
    let status = if input.paused { "paused" } else { "active" };
    store::db(env)?
        .prepare("UPDATE links SET destination = ?2, status = ?3, updated_at = ?4 WHERE slug = ?1")
        .bind(&[
            s(slug),
            s(&input.destination),
            s(status),
            s(&Timestamp(now_ms()).to_string()),
        ])?
        .run()
        .await?;
    match store::publish_link(env, slug).await? {
        Some(l) => json(200, &serde_json::to_value(&l)?),
        None => error(404, "no such link"),
    }
}

async fn put_coupon(env: &Env, c: Coupon) -> Result<Response> {
    if store::program(env, &c.program).await?.is_none() {
        return field_error(422, &FieldError::new("program", "unknown program"));
    }
    match store::partner(env, &c.partner).await? {
        Some(p) if p.program == c.program => {}
        _ => {
            return field_error(
                422,
                &FieldError::new("partner", "no such partner in this program"),
            )
        }
    }
    let now = Timestamp(now_ms()).to_string();
    store::db(env)?
        .prepare(
            "INSERT INTO coupons (code, program, partner, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT(code) DO UPDATE SET program = excluded.program, partner = excluded.partner,
               updated_at = excluded.updated_at",
        )
        .bind(&[s(&c.code), s(&c.program), s(&c.partner), s(&now)])?
        .run()
        .await?;
    let key = format!("coupon:{}", c.code);
    store::forget(&key);
    match store::coupon(env, &c.code).await? {
        Some(row) => {
            store::kv_put(env, &key, &serde_json::to_string(&*row)?).await?;
            json(200, &serde_json::to_value(&*row)?)
        }
        None => error(500, "coupon not stored"),
    }
}

#[derive(Deserialize, serde::Serialize)]
struct RejectionRow {
    id: f64,
    at: String,
    route: String,
    program: Option<String>,
    field: String,
    reason: String,
    raw: String,
}

async fn rejections(env: &Env, req: &Request) -> Result<Response> {
    let url = req.url()?;
    let mut after = 0i64;
    let mut limit = 100i64;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "after" => after = v.parse().unwrap_or(-1),
            "limit" => limit = v.parse().unwrap_or(-1),
            _ => {}
        }
    }
    if after < 0 || !(1..=1000).contains(&limit) {
        return error(400, "after >= 0, limit 1..1000");
    }
    let rows: Vec<RejectionRow> = store::all(
        store::db(env)?
            .prepare("SELECT id, at, route, program, field, reason, raw FROM rejections WHERE id > ?1 ORDER BY id LIMIT ?2")
            .bind(&[n(after), n(limit)])?,
    )
    .await?;
    let rows: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|r| j!({"id": r.id as i64, "at": r.at, "route": r.route, "program": r.program, "field": r.field, "reason": r.reason, "raw": r.raw}))
        .collect();
    json(200, &j!({ "rejections": rows }))
}
