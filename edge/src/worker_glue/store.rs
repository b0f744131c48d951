//! The registry: D1 is the record, KV the hot copy the redirect reads, and a
//! short in-isolate cache in front of both. A KV miss falls back to D1 and
//! refills KV. Writes go to D1 first, then KV, then drop the cached copy.

use super::now_ms;
use crate::admin::{LinkConfig, Partner, Program};
use crate::time::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use wasm_bindgen::JsValue;
use worker::*;

/// How long an isolate trusts its cached copy (KV itself may lag 60 s).
const CACHE_MS: i64 = 5_000;
const CACHE_MAX: usize = 20_000;

/// Parsed registry entries, shared by the requests of one isolate.
type Entry = Option<Rc<dyn Any>>;

thread_local! {
    static CACHE: RefCell<HashMap<String, (i64, Entry)>> = RefCell::new(HashMap::new());
}

fn cache_get<T: 'static>(key: &str) -> Option<Option<Rc<T>>> {
    let now = now_ms();
    CACHE.with(|c| {
        c.borrow()
            .get(key)
            .filter(|(exp, _)| *exp > now)
            .map(|(_, v)| v.clone().and_then(|v| v.downcast::<T>().ok()))
    })
}

fn cache_put<T: 'static>(key: &str, value: Option<Rc<T>>) {
    let exp = now_ms() + CACHE_MS;
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert(key.to_string(), (exp, value.map(|v| v as Rc<dyn Any>)));
    });
}

pub fn forget(key: &str) {
    CACHE.with(|c| {
        c.borrow_mut().remove(key);
    });
}

pub fn s(v: &str) -> JsValue {
    JsValue::from_str(v)
}

pub fn opt(v: Option<&str>) -> JsValue {
    v.map_or(JsValue::NULL, JsValue::from_str)
}

/// Integers go to D1 as f64 (exact to 2^53): D1 rejects BigInt.
pub fn n(v: i64) -> JsValue {
    JsValue::from_f64(v as f64)
}

pub fn db(env: &Env) -> Result<D1Database> {
    env.d1("DB")
}

fn kv(env: &Env) -> Result<kv::KvStore> {
    env.kv("LINKS")
}

pub async fn first<T: DeserializeOwned>(stmt: D1PreparedStatement) -> Result<Option<T>> {
    stmt.first::<T>(None).await
}

pub async fn all<T: DeserializeOwned>(stmt: D1PreparedStatement) -> Result<Vec<T>> {
    stmt.all().await?.results::<T>()
}

/// Cache, then KV, then `load` (D1) which refills KV.
async fn cached<T, F>(env: &Env, key: &str, load: F) -> Result<Option<Rc<T>>>
where
    T: DeserializeOwned + Serialize + 'static,
    F: std::future::Future<Output = Result<Option<T>>>,
{
    if let Some(hit) = cache_get::<T>(key) {
        return Ok(hit);
    }
    let kv = kv(env)?;
    if let Some(text) = kv
        .get(key)
        .text()
        .await
        .map_err(|e| Error::RustError(e.to_string()))?
    {
        if let Ok(v) = serde_json::from_str::<T>(&text) {
            let v = Rc::new(v);
            cache_put(key, Some(v.clone()));
            return Ok(Some(v));
        }
    }
    let loaded = load.await?.map(Rc::new);
    if let Some(v) = &loaded {
        kv_put(env, key, &serde_json::to_string(&**v)?).await?;
    }
    cache_put(key, loaded.clone());
    Ok(loaded)
}

pub async fn kv_put(env: &Env, key: &str, value: &str) -> Result<()> {
    // As bytes: `put` of a `&str` goes through the crate's generic
    // serializer (serde-wasm-bindgen, float formatting: ~15 KB of wasm) to
    // arrive at the same stored text.
    kv(env)?
        .put_bytes(key, value.as_bytes())
        .map_err(|e| Error::RustError(e.to_string()))?
        .execute()
        .await
        .map_err(|e| Error::RustError(e.to_string()))?;
    forget(key);
    Ok(())
}

#[derive(Deserialize)]
struct ProgramRow {
    num: f64,
    settings: String,
}

pub async fn program(env: &Env, id: &str) -> Result<Option<Rc<Program>>> {
    // Not an id: nothing to find, and too long a KV key would be an error.
    if !crate::ids::is_valid_id(id) {
        return Ok(None);
    }
    let key = format!("program:{id}");
    cached(env, &key, async {
        let row: Option<ProgramRow> = first(
            db(env)?
                .prepare("SELECT num, settings FROM programs WHERE id = ?1")
                .bind(&[s(id)])?,
        )
        .await?;
        Ok(row.and_then(|r| {
            let mut p: Program = serde_json::from_str(&r.settings).ok()?;
            p.num = r.num as u32;
            Some(p)
        }))
    })
    .await
}

pub async fn put_program(env: &Env, p: &mut Program) -> Result<()> {
    let now = Timestamp(now_ms()).to_string();
    let settings = serde_json::to_string(&p)?;
    let num: Option<f64> = db(env)?
        .prepare(
            "INSERT INTO programs (id, settings, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT(id) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at
             RETURNING num",
        )
        .bind(&[s(&p.id), s(&settings), s(&now)])?
        .first::<f64>(Some("num"))
        .await?;
    p.num = num.unwrap_or(0.0) as u32;
    kv_put(
        env,
        &format!("program:{}", p.id),
        &serde_json::to_string(&p)?,
    )
    .await
}

const LINK_SELECT: &str =
    "SELECT l.slug, l.num, l.program, g.num AS program_num, l.partner, p.num AS partner_num,
        l.destination, l.status = 'paused' AS paused
   FROM links l JOIN programs g ON g.id = l.program JOIN partners p ON p.id = l.partner";

#[derive(Deserialize)]
struct LinkRow {
    slug: String,
    num: f64,
    program: String,
    program_num: f64,
    partner: String,
    partner_num: f64,
    destination: String,
    paused: f64,
}

impl From<LinkRow> for LinkConfig {
    fn from(r: LinkRow) -> LinkConfig {
        LinkConfig {
            slug: r.slug,
            num: r.num as u32,
            program: r.program,
            program_num: r.program_num as u32,
            partner: r.partner,
            partner_num: r.partner_num as u32,
            destination: r.destination,
            paused: r.paused != 0.0,
        }
    }
}

pub async fn link_by_slug(env: &Env, slug: &str) -> Result<Option<Rc<LinkConfig>>> {
    if !crate::ids::is_valid_id(slug) {
        return Ok(None);
    }
    cached(env, &format!("link:{slug}"), async {
        let sql = format!("{LINK_SELECT} WHERE l.slug = ?1");
        let row: Option<LinkRow> = first(db(env)?.prepare(sql).bind(&[s(slug)])?).await?;
        Ok(row.map(LinkConfig::from))
    })
    .await
}

pub async fn link_by_num(env: &Env, num: u32) -> Result<Option<Rc<LinkConfig>>> {
    cached(env, &format!("linknum:{num}"), async {
        let sql = format!("{LINK_SELECT} WHERE l.num = ?1");
        let row: Option<LinkRow> = first(db(env)?.prepare(sql).bind(&[n(i64::from(num))])?).await?;
        Ok(row.map(LinkConfig::from))
    })
    .await
}

/// Writes both KV copies of a link after D1 changed.
pub async fn publish_link(env: &Env, slug: &str) -> Result<Option<LinkConfig>> {
    let sql = format!("{LINK_SELECT} WHERE l.slug = ?1");
    let row: Option<LinkRow> = first(db(env)?.prepare(sql).bind(&[s(slug)])?).await?;
    let Some(link) = row.map(LinkConfig::from) else {
        return Ok(None);
    };
    let text = serde_json::to_string(&link)?;
    kv_put(env, &format!("link:{}", link.slug), &text).await?;
    kv_put(env, &format!("linknum:{}", link.num), &text).await?;
    Ok(Some(link))
}

#[derive(Deserialize)]
struct PartnerRow {
    num: f64,
    id: String,
    program: String,
    name: Option<String>,
    email: Option<String>,
    email_hash: Option<String>,
    parent: Option<String>,
    tier: Option<String>,
    status: String,
    currency: Option<String>,
    history: String,
    created_at: String,
    updated_at: String,
}

pub const PARTNER_COLUMNS: &str =
    "num, id, program, name, email, email_hash, parent, tier, status, currency, history, created_at, updated_at";

fn partner_from_row(r: PartnerRow) -> Option<Partner> {
    Some(Partner {
        id: r.id,
        num: r.num as u32,
        program: r.program,
        name: r.name,
        email: r.email,
        email_hash: r.email_hash,
        parent: r.parent,
        tier: r.tier,
        status: crate::admin::PartnerStatus::parse(&r.status)?,
        currency: r
            .currency
            .as_deref()
            .and_then(crate::currency::Currency::parse),
        history: serde_json::from_str(&r.history).unwrap_or_default(),
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

pub async fn partner(env: &Env, id: &str) -> Result<Option<Partner>> {
    let sql = format!("SELECT {PARTNER_COLUMNS} FROM partners WHERE id = ?1");
    let row: Option<PartnerRow> = first(db(env)?.prepare(sql).bind(&[s(id)])?).await?;
    Ok(row.and_then(partner_from_row))
}

pub async fn all_partners(env: &Env) -> Result<Vec<Partner>> {
    let sql = format!("SELECT {PARTNER_COLUMNS} FROM partners ORDER BY id");
    let rows: Vec<PartnerRow> = all(db(env)?.prepare(sql)).await?;
    Ok(rows.into_iter().filter_map(partner_from_row).collect())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CouponRow {
    pub code: String,
    pub program: String,
    pub partner: String,
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
}

pub async fn coupon(env: &Env, code: &str) -> Result<Option<Rc<CouponRow>>> {
    if !crate::ids::is_valid_id(code) {
        return Ok(None);
    }
    cached(env, &format!("coupon:{code}"), async {
        first(
            db(env)?
                .prepare("SELECT code, program, partner, created_at, updated_at FROM coupons WHERE code = ?1")
                .bind(&[s(code)])?,
        )
        .await
    })
    .await
}

/// Keeps a refused request (that passed authentication) for operators.
pub async fn log_rejection(
    env: &Env,
    route: &str,
    program: Option<&str>,
    field: &str,
    reason: &str,
    raw: &str,
) -> Result<()> {
    // never a person's email, name or address (an erasure could not find
    // them: a guest's customer id is a hash)
    let mut raw = crate::erase::redact_personal(raw);
    if raw.len() > 16 * 1024 {
        let mut cut = 16 * 1024;
        while !raw.is_char_boundary(cut) {
            cut -= 1;
        }
        raw.truncate(cut);
    }
    db(env)?
        .prepare("INSERT INTO rejections (at, route, program, field, reason, raw) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
        .bind(&[s(&Timestamp(now_ms()).to_string()), s(route), opt(program), s(field), s(reason), s(&raw)])?
        .run()
        .await?;
    Ok(())
}

// ---- The partner layer: rows read as JSON values (one deserializer for all
// of them keeps the wasm small), with typed accessors.

pub type Row = serde_json::Value;

pub async fn rows(stmt: D1PreparedStatement) -> Result<Vec<Row>> {
    all::<Row>(stmt).await
}

pub async fn row(stmt: D1PreparedStatement) -> Result<Option<Row>> {
    first::<Row>(stmt).await
}

/// Runs a statement; the number of rows it changed.
pub async fn changes(stmt: D1PreparedStatement) -> Result<usize> {
    Ok(result_changes(&stmt.run().await?))
}

pub fn result_changes(r: &D1Result) -> usize {
    r.meta().ok().flatten().and_then(|m| m.changes).unwrap_or(0)
}

/// A text column ("" when absent or null).
pub fn txt<'a>(r: &'a Row, k: &str) -> &'a str {
    r.get(k).and_then(|v| v.as_str()).unwrap_or("")
}

/// A text column that may be null.
pub fn otxt<'a>(r: &'a Row, k: &str) -> Option<&'a str> {
    r.get(k).and_then(|v| v.as_str())
}

/// An integer column (0 when absent or null).
pub fn int(r: &Row, k: &str) -> i64 {
    r.get(k)
        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
        .unwrap_or(0)
}

/// When a partner's licence expires, if compliance data is on file.
pub async fn license_expires(env: &Env, partner: &str) -> Result<Option<Timestamp>> {
    let r = row(db(env)?
        .prepare("SELECT license_expires FROM compliance WHERE partner = ?1")
        .bind(&[s(partner)])?)
    .await?;
    Ok(r.and_then(|r| Timestamp::parse(txt(&r, "license_expires")).ok()))
}

/// An audit entry, as a statement to run alone or in a batch. `guard` is the
/// partner's `updated_at` the change was computed from: the entry is written
/// only while the partner still has it.
#[allow(clippy::too_many_arguments)]
pub fn audit_stmt(
    env: &Env,
    partner: &str,
    at: &str,
    actor: &str,
    from: Option<&str>,
    to: &str,
    reason: Option<&str>,
    guard: Guard,
) -> Result<D1PreparedStatement> {
    let (cond, value) = match guard {
        Guard::None => ("?7 IS NULL", None),
        Guard::As(updated_at) => (
            "EXISTS (SELECT 1 FROM partners WHERE id = ?1 AND updated_at = ?7)",
            Some(updated_at),
        ),
        Guard::Absent => (
            "?7 IS NULL AND NOT EXISTS (SELECT 1 FROM partners WHERE id = ?1)",
            None,
        ),
    };
    db(env)?
        .prepare(format!(
            "INSERT INTO audit (partner, at, actor, from_status, to_status, reason)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE {cond}"
        ))
        .bind(&[
            s(partner),
            s(at),
            s(actor),
            opt(from),
            s(to),
            opt(reason),
            opt(value),
        ])
}

/// What an audit entry holds on: written in the same batch as the change it
/// records, it is kept only if the partner is still as the change read it.
#[derive(Clone, Copy)]
pub enum Guard<'a> {
    /// Always kept.
    None,
    /// The partner's row still has this `updated_at`.
    As(&'a str),
    /// No such partner yet (a new one).
    Absent,
}

/// Answers a query that renders its own JSON in one column `j` (SQLite's
/// `json_object`/`json_group_array`): no row types and no re-encoding here.
pub async fn json_answer(stmt: D1PreparedStatement) -> Result<Response> {
    match stmt.first::<String>(Some("j")).await? {
        Some(j) => super::respond(200, "application/json", j.into_bytes()),
        None => super::error(404, "not found"),
    }
}

/// `SELECT` of a JSON list `{"<key>": [<view>, ...]}` over `rest` (`FROM ...
/// WHERE ... ORDER BY ... LIMIT ...`).
pub fn list_sql(key: &str, view: &str, rest: &str) -> String {
    format!(
        "SELECT json_object('{key}', json_group_array(json(v))) AS j FROM (SELECT {view} AS v {rest})"
    )
}

/// A bound parameter: text, optional text (NULL), or an integer (as f64).
#[derive(Clone, Copy)]
pub enum Arg<'a> {
    S(&'a str),
    O(Option<&'a str>),
    N(i64),
}
pub use Arg::{N, O, S};

/// A prepared statement with its parameters: one place that talks to D1's
/// binding, instead of the same few calls at every query.
pub fn q<T: Into<String>>(env: &Env, sql: T, args: &[Arg<'_>]) -> Result<D1PreparedStatement> {
    let values: Vec<JsValue> = args
        .iter()
        .map(|a| match *a {
            Arg::S(v) => s(v),
            Arg::O(v) => opt(v),
            Arg::N(v) => n(v),
        })
        .collect();
    db(env)?.prepare(sql).bind(&values)
}
