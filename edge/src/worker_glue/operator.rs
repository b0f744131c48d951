//! Operator routes of the partner layer (`Authorization: Bearer
//! $ADMIN_TOKEN`): approvals with their audit trail, compliance, partner
//! keys, the CRM list and CSV, deal and MDF decisions, budgets, assets and
//! statements from settlement.

use super::layer::{self, not_found};
use super::partner::{DEAL_VIEW, MDF_VIEW};
use super::store::{self, int, otxt, txt, Row, N, O, S};
use super::{admin, error, event_now, json, random, respond, Config};
use crate::admin::PartnerStatus;
use crate::deal::{self, Budget, Decision};
use crate::fields::{FieldError, Fields};
use crate::partner::{self as rules, Asset, Compliance, Crm, ListQuery, StatusInput};
use crate::record::{Kind, Record, StatusChange};
use crate::routes::Route;
use crate::statement;
use crate::time::Timestamp;
use serde_json::{json as j, Value};
use worker::*;

const MAX_BODY: usize = 64 * 1024;
const MAX_STATEMENTS_BODY: usize = 512 * 1024;

pub async fn handle(route: Route<'_>, mut req: Request, env: &Env) -> Result<Response> {
    let now = event_now(&req, &Config::get(env));
    let query = layer::query(&req)?;
    let method = req.method();
    let body = if matches!(method, Method::Post | Method::Put) {
        let max = if route == Route::Statements {
            MAX_STATEMENTS_BODY
        } else {
            MAX_BODY
        };
        ok_or_return!(layer::body(&mut req, max).await)
    } else {
        Vec::new()
    };
    match (route, method) {
        (Route::PartnerList, Method::Get) => list(env, &query, now, false).await,
        (Route::PartnerCsv, Method::Get) => list(env, &query, now, true).await,
        (Route::PartnerStatus(id), Method::Post) => set_status(env, id, &body, now).await,
        (Route::PartnerAudit(id), Method::Get) => audit(env, id).await,
        (Route::Compliance(id), Method::Get) => get_compliance(env, id).await,
        (Route::Compliance(id), Method::Put) => put_compliance(env, id, &body, now).await,
        (Route::Keys(id), Method::Post) => new_key(env, id, now).await,
        (Route::Keys(id), Method::Delete) => revoke_keys(env, id, now).await,
        (Route::Crm(id), Method::Put) => put_crm(env, id, &body).await,
        (Route::Deals, Method::Get) => deals(env, &query, now).await,
        (Route::DealDecision(id), Method::Post) => decide_deal(env, id, &body, now).await,
        (Route::Budgets, Method::Get) => budgets(env, None).await,
        (Route::Budget(id), Method::Get) => budgets(env, Some(id)).await,
        (Route::Budget(id), Method::Put) => put_budget(env, id, &body, now).await,
        (Route::MdfList, Method::Get) => mdf_list(env, &query).await,
        (Route::MdfDecision(id), Method::Post) => decide_mdf(env, id, &body, now).await,
        (Route::ClaimDecision(id), Method::Post) => decide_claim(env, id, &body, now).await,
        (Route::Assets, Method::Get) => asset_list(env, &query).await,
        (Route::Asset(id), Method::Put) => put_asset(env, id, &body, now).await,
        (Route::Statements, Method::Post) => put_statements(env, &req, &body, now).await,
        _ => error(405, "method not allowed"),
    }
}

// ---- Partners: list, CSV, status, audit -----------------------------------

async fn list(env: &Env, query: &str, now: i64, csv: bool) -> Result<Response> {
    let q = field_or_422!(ListQuery::parse(query));
    let limit = q.limit.unwrap_or(if csv { 10_000 } else { 200 });
    let now_s = Timestamp(now).to_string();
    let rows = store::rows(
        store::q(env, "SELECT p.id, p.program, p.name, p.company, p.website, p.email, p.tier, p.status,
                   p.history, p.manager, p.tags, p.notes, p.created_at, p.updated_at, c.license_expires
                 FROM partners p LEFT JOIN compliance c ON c.partner = p.id
                 WHERE (?1 IS NULL OR p.program = ?1) AND (?2 IS NULL OR p.tier = ?2)
                   AND (?3 IS NULL OR p.manager = ?3)
                   AND (?4 IS NULL OR EXISTS (SELECT 1 FROM json_each(p.tags) WHERE value = ?4))
                   AND (?5 IS NULL OR instr(lower(p.id || ' ' || coalesce(p.name, '') || ' ' ||
                        coalesce(p.company, '') || ' ' || coalesce(p.email, '') || ' ' ||
                        coalesce(p.website, '') || ' ' || coalesce(p.notes, '')), lower(?5)) > 0)
                   -- the effective status, in the query so that LIMIT
                   -- counts what is shown (review26 L6): a lapsed licence
                   -- suspends (a rejection stands)
                   AND (?6 IS NULL
                        OR ((c.license_expires IS NULL OR c.license_expires > ?7) AND p.status = ?6)
                        OR (c.license_expires <= ?7
                            AND (CASE WHEN p.status = 'rejected' THEN 'rejected' ELSE 'suspended' END) = ?6))
                 ORDER BY p.created_at DESC, p.id LIMIT ?8 OFFSET ?9", &[
                O(q.program.as_deref()),
                O(q.tier.as_deref()),
                O(q.manager.as_deref()),
                O(q.tag.as_deref()),
                O(q.q.as_deref()),
                O(q.status.map(PartnerStatus::as_str)),
                S(&now_s),
                N(i64::from(limit)),
                N(i64::from(q.offset)),
            ])?,
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for mut r in rows {
        let Some(stored) = PartnerStatus::parse(txt(&r, "status")) else {
            continue;
        };
        let history: Vec<StatusChange> =
            serde_json::from_str(txt(&r, "history")).unwrap_or_default();
        let eff = rules::effective(stored, &history, layer::ts(&r, "license_expires"), now);
        if q.status.is_some_and(|want| want != eff.status) {
            continue;
        }
        let tags: Value = serde_json::from_str(txt(&r, "tags")).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut r {
            m.remove("history");
            m.insert("status".into(), eff.status.as_str().into());
            m.insert("status_reason".into(), j!(eff.reason));
            m.insert("tags".into(), tags);
        }
        out.push(r);
    }
    if !csv {
        return json(200, &j!({ "partners": out }));
    }
    let cols = [
        "id",
        "program",
        "name",
        "company",
        "email",
        "website",
        "tier",
        "status",
        "status_reason",
        "manager",
        "tags",
        "license_expires",
        "created_at",
    ];
    let mut text = String::new();
    rules::csv_line(&mut text, &cols);
    for p in &out {
        let values: Vec<String> = cols
            .iter()
            .map(|c| match &p[*c] {
                Value::String(s) => s.clone(),
                Value::Array(a) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => String::new(),
            })
            .collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        rules::csv_line(&mut text, &refs);
    }
    let r = respond(200, "text/csv; charset=utf-8", text.into_bytes())?;
    r.headers().set(
        "Content-Disposition",
        "attachment; filename=\"partners.csv\"",
    )?;
    Ok(r)
}

async fn set_status(env: &Env, id: &str, body: &[u8], now: i64) -> Result<Response> {
    let input = field_or_422!(StatusInput::parse(body));
    let Some(p) = store::partner(env, id).await? else {
        return not_found();
    };
    let expires = store::license_expires(env, id).await?;
    if input.status == PartnerStatus::Approved {
        let regulated = store::program(env, &p.program)
            .await?
            .is_some_and(|g| g.regulated);
        if let Some(reason) = rules::approval_blocked(regulated, expires, now) {
            return admin::compliance_conflict(reason);
        }
    }
    let eff = rules::effective(p.status, &p.history, expires, now);
    if p.status == input.status && eff.status == input.status {
        return json(
            200,
            &j!({"id": p.id, "status": p.status.as_str(), "changed": false}),
        );
    }
    let at = Timestamp(now);
    let mut history = p.history.clone();
    history.push(StatusChange {
        status: input.status.as_str().to_string(),
        at,
        reason: input.reason.clone(),
    });
    let at_s = at.to_string();
    let db = store::db(env)?;
    // Both statements hold only while the partner is as it was read: a
    // concurrent change makes this one a 409, never a lost history entry.
    let audit = store::audit_stmt(
        env,
        id,
        &at_s,
        &input.actor,
        Some(eff.status.as_str()),
        input.status.as_str(),
        input.reason.as_deref(),
        store::Guard::As(&p.updated_at),
    )?;
    let update = store::q(
        env,
        "UPDATE partners SET status = ?2, history = ?3, updated_at = ?4
             WHERE id = ?1 AND updated_at = ?5",
        &[
            S(id),
            S(input.status.as_str()),
            S(&serde_json::to_string(&history)?),
            S(&at_s),
            S(&p.updated_at),
        ],
    )?;
    let results = db.batch(vec![audit, update]).await?;
    if results.get(1).map(store::result_changes) != Some(1) {
        return conflict();
    }
    json(
        200,
        &j!({"id": id, "status": input.status.as_str(), "changed": true, "history": history}),
    )
}

async fn audit(env: &Env, id: &str) -> Result<Response> {
    if store::partner(env, id).await?.is_none() {
        return not_found();
    }
    store::json_answer(
        store::q(env, store::list_sql(
                "audit",
                "json_object('at', at, 'actor', actor, 'from', from_status, 'to', to_status, 'reason', reason)",
                "FROM audit WHERE partner = ?1 ORDER BY id",
            ), &[S(id)])?,
    )
    .await
}

// ---- Compliance ---------------------------------------------------------------

const COMPLIANCE_COLUMNS: &str = "license_number, regulator, jurisdiction, license_expires, kyc_checked_at, dsa_version, dsa_accepted_at, updated_at";

async fn get_compliance(env: &Env, id: &str) -> Result<Response> {
    let r = store::row(store::q(
        env,
        format!("SELECT {COMPLIANCE_COLUMNS} FROM compliance WHERE partner = ?1"),
        &[S(id)],
    )?)
    .await?;
    match r {
        Some(r) => json(200, &r),
        None => not_found(),
    }
}

async fn put_compliance(env: &Env, id: &str, body: &[u8], now: i64) -> Result<Response> {
    let c = field_or_422!(Compliance::parse(body));
    let Some(p) = store::partner(env, id).await? else {
        return not_found();
    };
    let db = store::db(env)?;
    let at_s = Timestamp(now).to_string();
    let mut stmts = Vec::new();
    // A lapsed licence being replaced: the suspension it caused is written
    // down (status, history, audit), so renewing never rewrites the past;
    // the operator approves the partner again. Written down whenever the
    // history it reads differs from the stored one, also when the stored
    // status already agrees (review26 H1: the operator suspended the partner
    // after the lapse; the renewal then erased the lapse, and a sale made in
    // it was paid).
    let old = store::license_expires(env, id).await?;
    let eff = rules::effective(p.status, &p.history, old, now);
    let written_down = eff.status != p.status || eff.history != p.history;
    // Every statement holds only while the partner is as it was read (the
    // compliance row first: it does not change the partner): a concurrent
    // change makes this a 409, never a lost history entry.
    stmts.push(store::q(
        env,
        "INSERT INTO compliance (partner, license_number, regulator, jurisdiction, license_expires,
               kyc_checked_at, dsa_version, dsa_accepted_at, updated_at)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9
             WHERE EXISTS (SELECT 1 FROM partners WHERE id = ?1 AND updated_at = ?10)
             ON CONFLICT(partner) DO UPDATE SET license_number = excluded.license_number,
               regulator = excluded.regulator, jurisdiction = excluded.jurisdiction,
               license_expires = excluded.license_expires, kyc_checked_at = excluded.kyc_checked_at,
               dsa_version = excluded.dsa_version, dsa_accepted_at = excluded.dsa_accepted_at,
               updated_at = excluded.updated_at",
        &[
            S(id),
            S(&c.license_number),
            S(&c.regulator),
            S(&c.jurisdiction),
            S(&c.license_expires.to_string()),
            S(&c.kyc_checked_at.to_string()),
            S(&c.dsa_version),
            S(&c.dsa_accepted_at.to_string()),
            S(&at_s),
            S(&p.updated_at),
        ],
    )?);
    if written_down {
        if eff.status != p.status {
            stmts.push(store::audit_stmt(
                env,
                id,
                &at_s,
                "system",
                Some(p.status.as_str()),
                eff.status.as_str(),
                eff.reason.as_deref(),
                store::Guard::As(&p.updated_at),
            )?);
        }
        stmts.push(store::q(
            env,
            "UPDATE partners SET status = ?2, history = ?3, updated_at = ?4
             WHERE id = ?1 AND updated_at = ?5",
            &[
                S(id),
                S(eff.status.as_str()),
                S(&serde_json::to_string(&eff.history)?),
                S(&at_s),
                S(&p.updated_at),
            ],
        )?);
    }
    let results = db.batch(stmts).await?;
    if results.first().map(store::result_changes) != Some(1) {
        return conflict();
    }
    let status = if written_down {
        eff.status
    } else {
        rules::effective(p.status, &p.history, Some(c.license_expires), now).status
    };
    json(
        200,
        &j!({"partner": id, "license_expires": c.license_expires, "status": status.as_str(),
             "license_expired": c.license_expires.ms() <= now}),
    )
}

/// 409: the partner changed between this request's read and its write.
pub fn conflict() -> Result<Response> {
    json(
        409,
        &j!({"status": "conflict", "error": {"reason": "changed meanwhile; try again"}}),
    )
}

// ---- Keys and CRM ---------------------------------------------------------------

async fn new_key(env: &Env, id: &str, now: i64) -> Result<Response> {
    if store::partner(env, id).await?.is_none() {
        return not_found();
    }
    let key = rules::key_from_bytes(&random::<24>()?);
    let hint: String = key.chars().take(7).collect();
    let at = Timestamp(now).to_string();
    store::q(
        env,
        "INSERT INTO partner_keys (key_hash, partner, hint, created_at) VALUES (?1, ?2, ?3, ?4)",
        &[S(&rules::key_hash(&key)), S(id), S(&hint), S(&at)],
    )?
    .run()
    .await?;
    json(
        201,
        &j!({"key": key, "partner": id, "hint": hint, "created_at": at}),
    )
}

async fn revoke_keys(env: &Env, id: &str, now: i64) -> Result<Response> {
    if store::partner(env, id).await?.is_none() {
        return not_found();
    }
    let revoked = store::changes(store::q(
        env,
        "UPDATE partner_keys SET revoked_at = ?2 WHERE partner = ?1 AND revoked_at IS NULL",
        &[S(id), S(&Timestamp(now).to_string())],
    )?)
    .await?;
    json(200, &j!({"partner": id, "revoked": revoked}))
}

async fn put_crm(env: &Env, id: &str, body: &[u8]) -> Result<Response> {
    let c = field_or_422!(Crm::parse(body));
    let changed = store::changes(
        store::q(env, "UPDATE partners SET manager = ?2, tags = ?3, notes = ?4, company = ?5, website = ?6 WHERE id = ?1", &[
                S(id),
                O(c.manager.as_deref()),
                S(&serde_json::to_string(&c.tags)?),
                O(c.notes.as_deref()),
                O(c.company.as_deref()),
                O(c.website.as_deref()),
            ])?,
    )
    .await?;
    if changed == 0 {
        return not_found();
    }
    json(
        200,
        &j!({"id": id, "manager": c.manager, "tags": c.tags, "notes": c.notes,
             "company": c.company, "website": c.website}),
    )
}

// ---- Deals ------------------------------------------------------------------------

/// Optional id filters of a list query.
fn filters<const N: usize>(
    query: &str,
    keys: [&str; N],
) -> std::result::Result<[Option<String>; N], FieldError> {
    let f = Fields::from_query(query)?;
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    for (i, k) in keys.iter().enumerate() {
        if let Some(v) = f.opt(k) {
            if !crate::ids::is_valid_id(v) {
                return Err(FieldError::new(*k, rules::ID_REASON));
            }
            out[i] = Some(v.to_string());
        }
    }
    Ok(out)
}

/// A status filter must name a status there is (review26 L7: an unknown one
/// answered an empty list).
fn one_of(
    field: &str,
    v: &Option<String>,
    allowed: &[&str],
) -> std::result::Result<(), FieldError> {
    match v {
        Some(v) if !allowed.contains(&v.as_str()) => Err(FieldError::new(
            field,
            format!("must be one of {}", allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}

async fn deals(env: &Env, query: &str, now: i64) -> Result<Response> {
    let [status, program, partner] =
        field_or_422!(filters(query, ["status", "program", "partner"]));
    field_or_422!(one_of(
        "status",
        &status,
        &["pending", "approved", "rejected"]
    ));
    store::json_answer(store::q(
        env,
        store::list_sql(
            "deals",
            DEAL_VIEW,
            "FROM deals WHERE (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR program = ?3)
                   AND (?4 IS NULL OR partner = ?4) ORDER BY created_ms DESC LIMIT 1000",
        ),
        &[
            N(now),
            O(status.as_deref()),
            O(program.as_deref()),
            O(partner.as_deref()),
        ],
    )?)
    .await
}

/// One deal or request as JSON (after a decision).
async fn view_one(env: &Env, view: &str, table: &str, id: &str, now: i64) -> Result<Response> {
    store::json_answer(store::q(
        env,
        format!("SELECT {view} AS j FROM {table} WHERE id = ?2"),
        &[N(now), S(id)],
    )?)
    .await
}

async fn decide_deal(env: &Env, id: &str, body: &[u8], now: i64) -> Result<Response> {
    let d = field_or_422!(Decision::parse(body));
    let db = store::db(env)?;
    let Some(deal) = store::row(
        store::q(env, "SELECT program, partner, customer, status, created_at, created_ms, expires_ms FROM deals WHERE id = ?1", &[S(id)])?,
    )
    .await?
    else {
        return not_found();
    };
    if txt(&deal, "status") != "pending" {
        return json(
            409,
            &j!({"status": "already_decided", "decision": txt(&deal, "status")}),
        );
    }
    if d.approve && int(&deal, "expires_ms") <= now {
        return json(409, &j!({"status": "expired"}));
    }
    let at = Timestamp(now).to_string();
    let to = if d.approve { "approved" } else { "rejected" };
    let update = store::q(
        env,
        "UPDATE deals SET status = ?2, reason = ?3, decided_at = ?4, decided_by = ?5
             WHERE id = ?1 AND status = 'pending'",
        &[S(id), S(to), O(d.reason.as_deref()), S(&at), S(&d.actor)],
    )?;
    let mut stmts = vec![update];
    if d.approve {
        // The exported `deal` record gets its seq in the same transaction.
        let mut r = Record::new(Kind::Deal);
        r.id = Some(id.to_string());
        r.ts = layer::ts(&deal, "created_at");
        r.program = Some(txt(&deal, "program").to_string());
        r.partner = Some(txt(&deal, "partner").to_string());
        r.customer = Some(txt(&deal, "customer").to_string());
        r.status = Some("approved".into());
        r.approved_at = Some(Timestamp(now));
        r.expires_at = Timestamp::from_ms(int(&deal, "expires_ms"));
        stmts.push(event_stmt(
            env,
            id,
            "deal",
            &deal,
            int(&deal, "created_ms"),
            &r,
            "deals",
            "status = 'approved' AND decided_at = ?7",
        )?);
    }
    let results = db.batch(stmts).await?;
    if results.first().map(store::result_changes) != Some(1) {
        return json(409, &j!({"status": "already_decided"}));
    }
    view_one(env, DEAL_VIEW, "deals", id, now).await
}

/// Inserts an exported event (`deal`, `mdf`) once (`type|id` is unique),
/// only while its source row in `table` matches `cond` (?6 = the source id,
/// ?7 = the decision time).
#[allow(clippy::too_many_arguments)]
fn event_stmt(
    env: &Env,
    source_id: &str,
    kind: &str,
    source: &Row,
    ts_ms: i64,
    r: &Record,
    table: &str,
    cond: &str,
) -> Result<D1PreparedStatement> {
    let id = r.id.clone().unwrap_or_default();
    let decided = r
        .approved_at
        .or(r.ts)
        .map(|t| t.to_string())
        .unwrap_or_default();
    store::q(
        env,
        format!(
            "INSERT INTO events (id, type, program, ts_ms, dedupe_key, record)
             SELECT ?1, ?2, ?3, ?4, ?5, ?8
             WHERE EXISTS (SELECT 1 FROM {table} WHERE id = ?6 AND {cond})
             ON CONFLICT(dedupe_key) DO NOTHING"
        ),
        &[
            S(&id),
            S(kind),
            S(txt(source, "program")),
            N(ts_ms),
            S(&format!("{kind}|{source_id}")),
            S(source_id),
            S(&decided),
            S(&serde_json::to_string(r)?),
        ],
    )
}

// ---- MDF ---------------------------------------------------------------------------

async fn budgets(env: &Env, id: Option<&str>) -> Result<Response> {
    let mut rows = store::rows(
        store::q(env, "SELECT id, program, partner, tier, quarter, amount, currency, amount_minor, spent_minor, updated_at
                 FROM mdf_budgets WHERE ?1 IS NULL OR id = ?1 ORDER BY quarter DESC, id LIMIT 1000", &[O(id)])?,
    )
    .await?;
    for r in &mut rows {
        let (amount, spent) = (int(r, "amount_minor"), int(r, "spent_minor"));
        let money = crate::currency::Currency::parse(txt(r, "currency")).map(|c| {
            (
                deal::from_minor(spent, c),
                deal::from_minor(amount - spent, c),
            )
        });
        if let (Value::Object(m), Some((spent, left))) = (r, money) {
            m.remove("amount_minor");
            m.remove("spent_minor");
            m.insert("spent".into(), spent.into());
            m.insert("remaining".into(), left.into());
        }
    }
    match id {
        None => json(200, &j!({ "budgets": rows })),
        Some(_) => match rows.into_iter().next() {
            Some(b) => json(200, &b),
            None => not_found(),
        },
    }
}

async fn put_budget(env: &Env, id: &str, body: &[u8], now: i64) -> Result<Response> {
    let b = field_or_422!(Budget::parse(id, body));
    let Some(program) = store::program(env, &b.program).await? else {
        return super::field_error(422, &FieldError::new("program", "unknown program"));
    };
    if let Some(p) = &b.partner {
        if store::partner(env, p)
            .await?
            .is_none_or(|p| p.program != b.program)
        {
            return super::field_error(
                422,
                &FieldError::new("partner", "no such partner in this program"),
            );
        }
    }
    if let Some(t) = &b.tier {
        if !program.tiers.contains(t) {
            return super::field_error(
                422,
                &FieldError::new("tier", format!("must be one of {:?}", program.tiers)),
            );
        }
    }
    let at = Timestamp(now).to_string();
    // Never below what is already approved; never another currency,
    // program, quarter, partner or tier while requests against it are open
    // or approved (review26 M1: a USD request approved against a budget
    // switched to JPY booked its cents as yen).
    let changed = store::changes(
        store::q(env, "INSERT INTO mdf_budgets (id, program, partner, tier, quarter, amount, amount_minor, currency,
                   spent_minor, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?9)
                 ON CONFLICT(id) DO UPDATE SET program = excluded.program, partner = excluded.partner,
                   tier = excluded.tier, quarter = excluded.quarter, amount = excluded.amount,
                   amount_minor = excluded.amount_minor, currency = excluded.currency,
                   updated_at = excluded.updated_at
                 WHERE mdf_budgets.spent_minor <= excluded.amount_minor
                   AND ((mdf_budgets.currency = excluded.currency AND mdf_budgets.program = excluded.program
                         AND mdf_budgets.quarter = excluded.quarter AND mdf_budgets.partner IS excluded.partner
                         AND mdf_budgets.tier IS excluded.tier)
                     OR (mdf_budgets.spent_minor = 0 AND NOT EXISTS (SELECT 1 FROM mdf_requests r
                           WHERE r.budget = mdf_budgets.id AND r.status != 'rejected')))", &[
                S(id),
                S(&b.program),
                O(b.partner.as_deref()),
                O(b.tier.as_deref()),
                S(&b.quarter),
                S(&b.money.text()),
                N(b.money.minor),
                S(b.money.currency.code()),
                S(&at),
            ])?,
    )
    .await?;
    if changed == 0 {
        let spent = store::row(store::q(
            env,
            "SELECT spent_minor FROM mdf_budgets WHERE id = ?1",
            &[S(id)],
        )?)
        .await?
        .and_then(|r| r.get("spent_minor").and_then(|v| v.as_i64()))
        .unwrap_or(0);
        return super::field_error(
            422,
            &if spent > b.money.minor {
                FieldError::new("amount", "below what is already approved from this budget")
            } else {
                FieldError::new(
                    "budget",
                    "requests against this budget are open or approved: its currency, program, \
                     quarter, partner and tier stay as they are (a new budget id for another)",
                )
            },
        );
    }
    budgets(env, Some(id)).await
}

async fn mdf_list(env: &Env, query: &str) -> Result<Response> {
    let [status, claim, partner, program] = field_or_422!(filters(
        query,
        ["status", "claim_status", "partner", "program"]
    ));
    field_or_422!(one_of(
        "status",
        &status,
        &["requested", "approved", "rejected"]
    ));
    field_or_422!(one_of(
        "claim_status",
        &claim,
        &["claimed", "approved", "rejected"]
    ));
    store::json_answer(store::q(
        env,
        store::list_sql(
            "requests",
            MDF_VIEW,
            "FROM mdf_requests WHERE (?1 IS NULL OR status = ?1)
                   AND (?2 IS NULL OR claim_status = ?2) AND (?3 IS NULL OR partner = ?3)
                   AND (?4 IS NULL OR program = ?4) ORDER BY created_at DESC LIMIT 1000",
        ),
        &[
            O(status.as_deref()),
            O(claim.as_deref()),
            O(partner.as_deref()),
            O(program.as_deref()),
        ],
    )?)
    .await
}

async fn mdf_row(env: &Env, id: &str) -> Result<Option<Row>> {
    store::row(
        store::q(env, "SELECT program, partner, status, currency, claim_status, claim_amount FROM mdf_requests WHERE id = ?1", &[S(id)])?,
    )
    .await
}

async fn decide_mdf(env: &Env, id: &str, body: &[u8], now: i64) -> Result<Response> {
    let d = field_or_422!(Decision::parse(body));
    let Some(r) = mdf_row(env, id).await? else {
        return not_found();
    };
    if txt(&r, "status") != "requested" {
        return json(
            409,
            &j!({"status": "already_decided", "decision": txt(&r, "status")}),
        );
    }
    let at = Timestamp(now).to_string();
    let db = store::db(env)?;
    let changed = if d.approve {
        // One transaction: the request is approved only if its budget still
        // has room, and the budget is charged only for the request this batch
        // approved (its tag). D1 runs batches one at a time, so concurrent
        // approvals can never overspend; the CHECK on the table is the net.
        let tag = hex::encode(random::<8>()?);
        let approve = store::q(env, "UPDATE mdf_requests SET status = 'approved', reason = ?2, decided_at = ?3, decided_by = ?4,
                   decision_tag = ?5
                 WHERE id = ?1 AND status = 'requested' AND EXISTS (SELECT 1 FROM mdf_budgets b
                   WHERE b.id = mdf_requests.budget AND b.currency = mdf_requests.currency
                     AND b.spent_minor + mdf_requests.amount_minor <= b.amount_minor)", &[S(id), O(d.reason.as_deref()), S(&at), S(&d.actor), S(&tag)])?;
        let charge = store::q(env, "UPDATE mdf_budgets SET spent_minor = spent_minor +
                   (SELECT amount_minor FROM mdf_requests WHERE id = ?1 AND decision_tag = ?2), updated_at = ?3
                 WHERE id = (SELECT budget FROM mdf_requests WHERE id = ?1 AND decision_tag = ?2)", &[S(id), S(&tag), S(&at)])?;
        let results = db.batch(vec![approve, charge]).await?;
        results.first().map_or(0, store::result_changes)
    } else {
        store::changes(
            store::q(env, "UPDATE mdf_requests SET status = 'rejected', reason = ?2, decided_at = ?3, decided_by = ?4
                 WHERE id = ?1 AND status = 'requested'", &[S(id), O(d.reason.as_deref()), S(&at), S(&d.actor)])?,
        )
        .await?
    };
    if changed != 1 {
        let Some(after) = mdf_row(env, id).await? else {
            return not_found();
        };
        return if txt(&after, "status") == "requested" {
            json(409, &j!({"status": "over_budget"}))
        } else {
            json(
                409,
                &j!({"status": "already_decided", "decision": txt(&after, "status")}),
            )
        };
    }
    view_one(env, MDF_VIEW, "mdf_requests", id, now).await
}

async fn decide_claim(env: &Env, id: &str, body: &[u8], now: i64) -> Result<Response> {
    let d = field_or_422!(Decision::parse(body));
    let Some(r) = mdf_row(env, id).await? else {
        return not_found();
    };
    if otxt(&r, "claim_status") != Some("claimed") {
        return json(409, &j!({"status": "no_open_claim"}));
    }
    let at = Timestamp(now).to_string();
    let db = store::db(env)?;
    let to = if d.approve { "approved" } else { "rejected" };
    let update = store::q(
        env,
        "UPDATE mdf_requests SET claim_status = ?2, claim_reason = ?3, claim_decided_at = ?4
             WHERE id = ?1 AND claim_status = 'claimed'",
        &[S(id), S(to), O(d.reason.as_deref()), S(&at)],
    )?;
    let mut stmts = vec![update];
    if d.approve {
        let mut rec = Record::new(Kind::Mdf);
        rec.id = Some(format!("{id}-claim"));
        rec.ts = Some(Timestamp(now));
        rec.program = Some(txt(&r, "program").to_string());
        rec.partner = Some(txt(&r, "partner").to_string());
        rec.amount = otxt(&r, "claim_amount").and_then(|a| a.parse().ok());
        rec.currency = crate::currency::Currency::parse(txt(&r, "currency"));
        stmts.push(event_stmt(
            env,
            id,
            "mdf",
            &r,
            now,
            &rec,
            "mdf_requests",
            "claim_status = 'approved' AND claim_decided_at = ?7",
        )?);
    }
    let results = db.batch(stmts).await?;
    if results.first().map(store::result_changes) != Some(1) {
        return json(409, &j!({"status": "no_open_claim"}));
    }
    view_one(env, MDF_VIEW, "mdf_requests", id, now).await
}

// ---- Assets and statements -----------------------------------------------------

async fn asset_list(env: &Env, query: &str) -> Result<Response> {
    let [program] = field_or_422!(filters(query, ["program"]));
    let rows = store::rows(store::q(
        env,
        "SELECT id, program, title, kind, url, min_tier, created_at, updated_at FROM assets
                 WHERE ?1 IS NULL OR program = ?1 ORDER BY program, title, id LIMIT 1000",
        &[O(program.as_deref())],
    )?)
    .await?;
    json(200, &j!({ "assets": rows }))
}

async fn put_asset(env: &Env, id: &str, body: &[u8], now: i64) -> Result<Response> {
    let a = field_or_422!(Asset::parse(id, body));
    let Some(program) = store::program(env, &a.program).await? else {
        return super::field_error(422, &FieldError::new("program", "unknown program"));
    };
    if let Some(t) = &a.min_tier {
        if !program.tiers.contains(t) {
            return super::field_error(
                422,
                &FieldError::new("min_tier", format!("must be one of {:?}", program.tiers)),
            );
        }
    }
    let at = Timestamp(now).to_string();
    store::q(
        env,
        "INSERT INTO assets (id, program, title, kind, url, min_tier, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
             ON CONFLICT(id) DO UPDATE SET program = excluded.program, title = excluded.title,
               kind = excluded.kind, url = excluded.url, min_tier = excluded.min_tier,
               updated_at = excluded.updated_at",
        &[
            S(id),
            S(&a.program),
            S(&a.title),
            S(&a.kind),
            S(&a.url),
            O(a.min_tier.as_deref()),
            S(&at),
        ],
    )?
    .run()
    .await?;
    json(
        200,
        &j!({"id": id, "program": a.program, "title": a.title, "kind": a.kind, "url": a.url,
             "min_tier": a.min_tier, "updated_at": at}),
    )
}

async fn put_statements(env: &Env, req: &Request, body: &[u8], now: i64) -> Result<Response> {
    let is_json = super::header(req, "Content-Type")
        .is_some_and(|c| c.to_ascii_lowercase().contains("json"))
        || matches!(
            body.iter().find(|b| !b.is_ascii_whitespace()),
            Some(b'[' | b'{')
        );
    let rows = if is_json {
        field_or_422!(statement::parse_json(body))
    } else {
        let Ok(text) = std::str::from_utf8(body) else {
            return super::field_error(422, &FieldError::new("body", "not valid UTF-8"));
        };
        field_or_422!(statement::parse_csv(text))
    };
    // each row's partner is in the registry, in the row's program (a row of
    // an unknown partner, or of another program, would replace the
    // partner's statement in the portal): else 422 and nothing stored
    let pairs: Vec<String> = rows
        .iter()
        .map(|r| format!("{}|{}", r.0[1], r.0[2]))
        .collect();
    let unknown = store::row(store::q(
        env,
        "SELECT j.key AS i FROM json_each(?1) j
          WHERE j.value NOT IN (SELECT id || '|' || program FROM partners)
          ORDER BY j.key LIMIT 1",
        &[S(&serde_json::to_string(&pairs)?)],
    )?)
    .await?;
    if let Some(u) = unknown {
        let i = usize::try_from(int(&u, "i")).unwrap_or(0);
        if let Some(r) = rows.get(i) {
            return super::field_error(
                422,
                &FieldError::new(
                    "partner",
                    format!(
                        "statement {} of the upload: {} is not a partner of program {} in the registry",
                        i + 1,
                        r.0[1],
                        r.0[2]
                    ),
                ),
            );
        }
    }
    let db = store::db(env)?;
    let at = Timestamp(now).to_string();
    let mut stmts = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut args: Vec<store::Arg> = row.0.iter().map(|v| S(v)).collect();
        args.push(S(&at));
        stmts.push(store::q(
            env,
            "INSERT INTO statements (period, partner, program, currency, earned, reversed, adjusted,
                   carried_in, pending, payable, carried_out, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT(period, partner, currency) DO UPDATE SET program = excluded.program,
                   earned = excluded.earned, reversed = excluded.reversed, adjusted = excluded.adjusted,
                   carried_in = excluded.carried_in, pending = excluded.pending, payable = excluded.payable,
                   carried_out = excluded.carried_out, updated_at = excluded.updated_at",
            &args,
        )?);
    }
    // One transaction for the whole upload.
    if !stmts.is_empty() {
        db.batch(stmts).await?;
    }
    json(200, &j!({"stored": rows.len()}))
}
