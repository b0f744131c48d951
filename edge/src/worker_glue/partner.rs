//! Partner routes (`Authorization: Bearer pk_...`) and the public
//! application. Every answer holds only the calling partner's own data:
//! anything of another partner, named in the path, the body or the query,
//! is 404 as if it did not exist.

use super::layer::{self, not_found, Answer};
use super::store::{self, int, otxt, txt, Row, N, O, S};
use super::{admin, error, event_now, header, json, random, Config};
use crate::admin::{LinkInput, Partner, PartnerStatus, Program};
use crate::auth;
use crate::clickid::sortable_id;
use crate::deal::{self, Claim, DealInput, MdfRequest};
use crate::dest;
use crate::fields::{FieldError, Fields, Obj};
use crate::hash;
use crate::partner::{self as rules, Application, DayCounts, DayRange};
use crate::record::StatusChange;
use crate::routes::Route;
use crate::time::Timestamp;
use serde_json::{json as j, Value};
use std::rc::Rc;
use worker::*;

const MAX_BODY: usize = 16 * 1024;

/// The authenticated partner.
pub struct Me {
    pub p: Partner,
    /// Effective status (licence expiry applied).
    pub status: PartnerStatus,
    pub reason: Option<String>,
    pub program: Rc<Program>,
    /// The request's clock (see `event_now`).
    pub now: i64,
}

impl Me {
    fn approved(&self) -> Answer<()> {
        Ok(if self.status == PartnerStatus::Approved {
            Ok(())
        } else {
            Err(error(403, "the partner is not approved yet")?)
        })
    }

    /// The program named in a body: the partner's own, or 404.
    fn own_program(&self, program: &str) -> Answer<()> {
        Ok(if program == self.p.program {
            Ok(())
        } else {
            Err(not_found()?)
        })
    }
}

async fn authenticate(req: &Request, env: &Env) -> Answer<Me> {
    let given = header(req, "Authorization");
    let Some(key) = auth::bearer(given.as_deref()).filter(|k| rules::looks_like_key(k)) else {
        return Ok(Err(error(401, "partner key required")?));
    };
    let hash = rules::key_hash(key);
    let found = store::row(store::q(
        env,
        "SELECT key_hash, partner FROM partner_keys WHERE key_hash = ?1 AND revoked_at IS NULL",
        &[S(&hash)],
    )?)
    .await?
    .filter(|r| auth::secret_eq(txt(r, "key_hash"), &hash));
    let Some(found) = found else {
        return Ok(Err(error(401, "unknown or revoked partner key")?));
    };
    let Some(p) = store::partner(env, txt(&found, "partner")).await? else {
        return Ok(Err(error(401, "unknown or revoked partner key")?));
    };
    let now = event_now(req, &Config::get(env));
    let expires = store::license_expires(env, &p.id).await?;
    let eff = rules::effective(p.status, &p.history, expires, now);
    if !rules::key_allowed(eff.status) {
        return Ok(Err(json(
            403,
            &j!({"error": {"reason": format!("the partner is {}", eff.status.as_str()),
                 "status": eff.status.as_str(), "status_reason": eff.reason}}),
        )?));
    }
    let Some(program) = store::program(env, &p.program).await? else {
        return Ok(Err(error(403, "the partner's program is not available")?));
    };
    Ok(Ok(Me {
        p,
        status: eff.status,
        reason: eff.reason,
        program,
        now,
    }))
}

pub async fn handle(route: Route<'_>, mut req: Request, env: &Env) -> Result<Response> {
    let me = ok_or_return!(authenticate(&req, env).await);
    let query = layer::query(&req)?;
    if let Ok(f) = Fields::from_query(&query) {
        if f.opt("partner").is_some_and(|p| p != me.p.id) {
            return not_found();
        }
    }
    let body = if req.method() == Method::Post {
        let b = ok_or_return!(layer::body(&mut req, MAX_BODY).await);
        if rules::names_other_partner(&b, &me.p.id) {
            return not_found();
        }
        b
    } else {
        Vec::new()
    };
    match (route, req.method()) {
        (Route::Me, Method::Get) => profile(env, &me).await,
        (Route::Stats, Method::Get) => stats(env, &me, &query).await,
        (Route::MyLinks, Method::Get) => links(env, &req, &me).await,
        (Route::MyLinks, Method::Post) => new_link(env, &req, &me, &body).await,
        (Route::MyDeals, Method::Get) => deals(env, &me).await,
        (Route::MyDeals, Method::Post) => new_deal(env, &me, &body).await,
        (Route::MyMdf, Method::Get) => mdf(env, &me).await,
        (Route::MyMdf, Method::Post) => new_mdf(env, &me, &body).await,
        (Route::MyClaim(id), Method::Post) => claim(env, &me, id, &body).await,
        (Route::MyAssets, Method::Get) => assets(env, &req, &me).await,
        (Route::MyStatements, Method::Get) => statements(env, &me).await,
        _ => error(405, "method not allowed"),
    }
}

// ---- Application (public) ---------------------------------------------------

pub async fn apply(mut req: Request, env: &Env) -> Result<Response> {
    let body = ok_or_return!(layer::body(&mut req, 8 * 1024).await);
    let a = field_or_422!(Application::parse(&body));
    // Unknown and malformed programs read the same: no hint of which exist.
    if store::program(env, &a.program).await?.is_none() {
        return super::field_error(422, &rules::unknown_program());
    }
    let cfg = Config::get(env);
    let now = Timestamp(event_now(&req, &cfg));
    let id = sortable_id("p_", now.ms(), &random::<6>()?);
    let now_s = now.to_string();
    let history = vec![StatusChange {
        status: "applied".into(),
        at: now,
        reason: Some("application".into()),
    }];
    let db = store::db(env)?;
    let insert = store::q(env, "INSERT INTO partners (id, program, name, email, email_hash, status, history, company, website, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'applied', ?6, ?7, ?8, ?9, ?9)", &[
            S(&id),
            S(&a.program),
            S(&a.name),
            S(&a.email),
            S(&hash::email(&cfg.email_salt, &a.email)),
            S(&serde_json::to_string(&history)?),
            O(a.company.as_deref()),
            O(a.website.as_deref()),
            S(&now_s),
        ])?;
    let audit = store::audit_stmt(
        env,
        &id,
        &now_s,
        "applicant",
        None,
        "applied",
        Some("application"),
        store::Guard::None,
    )?;
    db.batch(vec![insert, audit]).await?;
    json(201, &j!({"id": id, "status": "applied"}))
}

// ---- Profile and numbers ---------------------------------------------------

async fn profile(env: &Env, me: &Me) -> Result<Response> {
    let crm = store::row(store::q(
        env,
        "SELECT company, website, manager FROM partners WHERE id = ?1",
        &[S(&me.p.id)],
    )?)
    .await?
    .unwrap_or(Value::Null);
    let coupons: Vec<Value> = store::rows(store::q(
        env,
        "SELECT code FROM coupons WHERE partner = ?1 ORDER BY code",
        &[S(&me.p.id)],
    )?)
    .await?
    .iter()
    .map(|r| Value::from(txt(r, "code")))
    .collect();
    let p = &me.p;
    let g = &me.program;
    json(
        200,
        &j!({
            "id": p.id, "program": p.program, "name": p.name, "email": p.email,
            "company": otxt(&crm, "company"), "website": otxt(&crm, "website"),
            "manager": otxt(&crm, "manager"),
            "tier": p.tier, "status": me.status.as_str(), "status_reason": me.reason,
            "currency": p.currency.map(|c| c.code()), "created_at": p.created_at,
            "coupons": coupons,
            "program_info": {"id": g.id, "name": g.name, "tiers": g.tiers,
                "allowed_hosts": g.allowed_hosts, "deal_days": g.deal_days,
                "currency": g.currency.map(|c| c.code())},
        }),
    )
}

async fn stats(env: &Env, me: &Me, query: &str) -> Result<Response> {
    let range = field_or_422!(DayRange::parse(query, me.now));
    let rows = store::rows(store::q(
        env,
        "SELECT CAST(ts_ms / 86400000 AS INTEGER) AS day,
                   SUM(type = 'click' AND coalesce(json_extract(record, '$.bot'), 0) = 0) AS clicks,
                   SUM(type = 'click' AND uniq = 1) AS uniq,
                   -- an order the pixel and an authenticated source both
                   -- brought is one conversion; a refund, chargeback or
                   -- reinstatement is none (review26 L5)
                   SUM(type = 'conversion'
                       AND coalesce(json_extract(record, '$.event'), '') NOT IN ('refund', 'chargeback', 'reinstate')
                       AND NOT (dedupe_key LIKE 'pixel|%'
                       AND EXISTS (SELECT 1 FROM events a WHERE a.dedupe_key = substr(events.dedupe_key, 7))))
                     AS conversions
                 FROM events WHERE partner = ?1 AND ts_ms >= ?2 AND ts_ms < ?3
                 GROUP BY day",
        &[S(&me.p.id), N(range.start_ms()), N(range.end_ms())],
    )?)
    .await?;
    let counts: Vec<(i64, DayCounts)> = rows
        .iter()
        .map(|r| {
            let c = |k| u64::try_from(int(r, k)).unwrap_or(0);
            (
                int(r, "day"),
                DayCounts {
                    clicks: c("clicks"),
                    unique_clicks: c("uniq"),
                    conversions: c("conversions"),
                },
            )
        })
        .collect();
    json(200, &rules::stats_json(range, &counts))
}

// ---- Links ------------------------------------------------------------------

async fn links(env: &Env, req: &Request, me: &Me) -> Result<Response> {
    store::json_answer(store::q(
        env,
        store::list_sql(
            "links",
            "json_object('slug', slug, 'url', ?2 || '/c/' || slug, 'program', program,
                   'destination', destination, 'status', status, 'created_at', created_at)",
            "FROM links WHERE partner = ?1 ORDER BY num LIMIT 1000",
        ),
        &[S(&me.p.id), S(&admin::public_base(req))],
    )?)
    .await
}

async fn new_link(env: &Env, req: &Request, me: &Me, body: &[u8]) -> Result<Response> {
    let o = field_or_422!(Obj::parse(body, &["program", "destination", "partner"]));
    let program = field_or_422!(rules::id_field(&o, "program"));
    ok_or_return!(me.own_program(program));
    ok_or_return!(me.approved());
    let destination = field_or_422!(o.req_str("destination"));
    let host =
        field_or_422!(dest::template_host(destination)
            .map_err(|e| FieldError::new("destination", e.reason())));
    if !dest::host_allowed(&host, &me.program.allowed_hosts) {
        return super::field_error(
            422,
            &FieldError::new(
                "destination",
                format!("host {host} is not in the program's allowed_hosts"),
            ),
        );
    }
    admin::create_link(
        env,
        req,
        LinkInput {
            partner: me.p.id.clone(),
            program: program.to_string(),
            destination: destination.to_string(),
            slug: None,
            paused: false,
        },
    )
    .await
}

// ---- Deals ------------------------------------------------------------------

/// A deal as JSON, rendered by SQLite (`?1` is now, in ms).
pub const DEAL_VIEW: &str = "json_object('id', id, 'program', program, 'partner', partner,
  'customer', customer, 'company', company, 'domain', domain, 'value', value, 'currency', currency,
  'expected_close', expected_close, 'status', status, 'reason', reason, 'created_at', created_at,
  'expires_at', expires_at, 'expired', json(CASE WHEN expires_ms <= ?1 THEN 'true' ELSE 'false' END),
  'decided_at', decided_at)";

async fn deals(env: &Env, me: &Me) -> Result<Response> {
    store::json_answer(store::q(
        env,
        store::list_sql(
            "deals",
            DEAL_VIEW,
            "FROM deals WHERE partner = ?2 ORDER BY created_ms DESC LIMIT 1000",
        ),
        &[N(me.now), S(&me.p.id)],
    )?)
    .await
}

async fn new_deal(env: &Env, me: &Me, body: &[u8]) -> Result<Response> {
    let d = field_or_422!(DealInput::parse(body));
    ok_or_return!(me.own_program(&d.program));
    ok_or_return!(me.approved());
    let now = me.now;
    let expires = deal::deal_expires_ms(now, me.program.deal_days);
    let id = sortable_id("dl_", now, &random::<8>()?);
    // One statement: the conflict check and the insert cannot be split by
    // a concurrent registration.
    let inserted = store::row(store::q(
        env,
        "INSERT INTO deals (id, program, partner, customer, customer_key, company, domain, value,
                   currency, expected_close, status, created_at, created_ms, expires_ms, expires_at)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', ?11, ?12, ?13, ?14
                 WHERE NOT EXISTS (SELECT 1 FROM deals WHERE program = ?2
                   AND status IN ('pending', 'approved') AND expires_ms > ?12
                   AND (customer_key = ?5 OR (?7 IS NOT NULL AND domain = ?7)))
                 RETURNING id",
        &[
            S(&id),
            S(&d.program),
            S(&me.p.id),
            S(&d.customer),
            S(&deal::customer_key(&d.customer)),
            O(d.company.as_deref()),
            O(d.domain.as_deref()),
            O(d.value.map(|v| v.to_string()).as_deref()),
            O(d.currency.map(|c| c.code())),
            O(d.expected_close.as_deref()),
            S(&Timestamp(now).to_string()),
            N(now),
            N(expires),
            S(&Timestamp(expires).to_string()),
        ],
    )?)
    .await?;
    if inserted.is_none() {
        // Someone (maybe this partner) registered this customer: say no
        // more than that.
        return json(409, &j!({"status": "conflict"}));
    }
    json(
        201,
        &j!({"id": id, "status": "pending", "expires_at": Timestamp(expires).to_string()}),
    )
}

// ---- MDF ----------------------------------------------------------------------

/// An MDF request and its claim as JSON, rendered by SQLite.
pub const MDF_VIEW: &str = "json_object('id', id, 'program', program, 'partner', partner,
  'activity', activity, 'amount', amount, 'currency', currency,
  'quarter', substr(created_at, 1, 4) || '-Q' || ((CAST(substr(created_at, 6, 2) AS INTEGER) + 2) / 3),
  'status', status, 'reason', reason, 'created_at', created_at, 'decided_at', decided_at,
  'claim', json(CASE WHEN claim_status IS NULL THEN NULL ELSE json_object('status', claim_status,
    'amount', claim_amount, 'proof_url', proof_url, 'reason', claim_reason, 'claimed_at', claimed_at,
    'decided_at', claim_decided_at) END))";

async fn mdf(env: &Env, me: &Me) -> Result<Response> {
    store::json_answer(store::q(
        env,
        store::list_sql(
            "requests",
            MDF_VIEW,
            "FROM mdf_requests WHERE partner = ?1 ORDER BY created_at DESC LIMIT 1000",
        ),
        &[S(&me.p.id)],
    )?)
    .await
}

async fn new_mdf(env: &Env, me: &Me, body: &[u8]) -> Result<Response> {
    let r = field_or_422!(MdfRequest::parse(body));
    ok_or_return!(me.own_program(&r.program));
    ok_or_return!(me.approved());
    let quarter = deal::quarter_of(Timestamp(me.now));
    // The partner's own budget first, then its tier's pool.
    let budget = store::row(
        store::q(env, "SELECT id, currency, amount_minor, spent_minor FROM mdf_budgets
             WHERE program = ?1 AND quarter = ?2 AND (partner = ?3 OR (partner IS NULL AND tier = ?4))
             ORDER BY partner IS NULL LIMIT 1", &[
            S(&r.program),
            S(&quarter),
            S(&me.p.id),
            O(me.p.tier.as_deref()),
        ])?,
    )
    .await?;
    let Some(budget) = budget else {
        return super::field_error(
            422,
            &FieldError::new("amount", format!("no MDF budget for you in {quarter}")),
        );
    };
    if txt(&budget, "currency") != r.money.currency.code() {
        return super::field_error(
            422,
            &FieldError::new(
                "currency",
                format!("the budget is in {}", txt(&budget, "currency")),
            ),
        );
    }
    let left = int(&budget, "amount_minor") - int(&budget, "spent_minor");
    if r.money.minor > left {
        return super::field_error(
            422,
            &FieldError::new(
                "amount",
                format!(
                    "more than the budget has left ({})",
                    deal::from_minor(left, r.money.currency)
                ),
            ),
        );
    }
    let id = sortable_id("md_", me.now, &random::<8>()?);
    store::q(env, "INSERT INTO mdf_requests (id, program, partner, budget, activity, amount, amount_minor, currency, status, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'requested', ?9)", &[
        S(&id),
        S(&r.program),
        S(&me.p.id),
        S(txt(&budget, "id")),
        S(&r.activity),
        S(&r.money.text()),
        N(r.money.minor),
        S(r.money.currency.code()),
        S(&Timestamp(me.now).to_string()),
    ])?
    .run()
    .await?;
    json(
        201,
        &j!({"id": id, "status": "requested", "quarter": quarter, "amount": r.money.text(),
             "currency": r.money.currency.code()}),
    )
}

async fn claim(env: &Env, me: &Me, id: &str, body: &[u8]) -> Result<Response> {
    let Some(req) = store::row(store::q(
        env,
        "SELECT status, currency, amount, amount_minor, claim_status FROM mdf_requests
             WHERE id = ?1 AND partner = ?2",
        &[S(id), S(&me.p.id)],
    )?)
    .await?
    else {
        return not_found();
    };
    let Some(currency) = crate::currency::Currency::parse(txt(&req, "currency")) else {
        return error(500, "stored currency unreadable");
    };
    let c = field_or_422!(Claim::parse(body, currency));
    if txt(&req, "status") != "approved" {
        return json(409, &j!({"status": "not_approved"}));
    }
    if matches!(otxt(&req, "claim_status"), Some("claimed" | "approved")) {
        return json(409, &j!({"status": "already_claimed"}));
    }
    if c.money.minor > int(&req, "amount_minor") {
        return super::field_error(
            422,
            &FieldError::new(
                "amount",
                format!("at most the approved amount, {}", txt(&req, "amount")),
            ),
        );
    }
    let changed = store::changes(
        store::q(env, "UPDATE mdf_requests SET claim_amount = ?3, claim_minor = ?4, proof_url = ?5,
               claim_status = 'claimed', claimed_at = ?6, claim_reason = NULL, claim_decided_at = NULL
             WHERE id = ?1 AND partner = ?2 AND status = 'approved'
               AND (claim_status IS NULL OR claim_status = 'rejected') AND ?4 <= amount_minor", &[
            S(id),
            S(&me.p.id),
            S(&c.money.text()),
            N(c.money.minor),
            S(&c.proof_url),
            S(&Timestamp(me.now).to_string()),
        ])?,
    )
    .await?;
    if changed == 0 {
        return json(409, &j!({"status": "already_claimed"}));
    }
    json(
        201,
        &j!({"id": id, "claim": {"status": "claimed", "amount": c.money.text(), "currency": currency.code()}}),
    )
}

// ---- Assets and statements -------------------------------------------------

/// The partner's tracking link for assets: its oldest active link in the
/// program; an approved partner without one gets one to the program's first
/// (non-wildcard) allowed host.
async fn tracking_slug(env: &Env, me: &Me) -> Result<Option<String>> {
    let found = store::row(store::q(
        env,
        "SELECT slug FROM links WHERE partner = ?1 AND program = ?2 AND status = 'active'
                 ORDER BY num LIMIT 1",
        &[S(&me.p.id), S(&me.p.program)],
    )?)
    .await?;
    if let Some(r) = found {
        return Ok(Some(txt(&r, "slug").to_string()));
    }
    let host = me
        .program
        .allowed_hosts
        .iter()
        .find(|h| !h.starts_with("*."));
    let (Some(host), PartnerStatus::Approved) = (host, me.status) else {
        return Ok(None);
    };
    let input = LinkInput {
        partner: me.p.id.clone(),
        program: me.p.program.clone(),
        destination: format!("https://{host}/"),
        slug: None,
        paused: false,
    };
    Ok(admin::insert_link(env, &input).await?.ok())
}

async fn assets(env: &Env, req: &Request, me: &Me) -> Result<Response> {
    let rows = store::rows(store::q(
        env,
        "SELECT id, title, kind, url, min_tier, updated_at FROM assets WHERE program = ?1
                 ORDER BY title, id LIMIT 1000",
        &[S(&me.p.program)],
    )?)
    .await?;
    let visible: Vec<&Row> = rows
        .iter()
        .filter(|r| {
            rules::tier_allows(&me.program.tiers, me.p.tier.as_deref(), otxt(r, "min_tier"))
        })
        .collect();
    let slug = if visible.is_empty() {
        None
    } else {
        tracking_slug(env, me).await?
    };
    let base = admin::public_base(req);
    let list: Vec<Value> = visible
        .into_iter()
        .map(|r| {
            let url = txt(r, "url");
            let link = slug.as_ref().map(|slug| {
                let deep = dest::parse_http_url(url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    .is_some_and(|h| dest::host_allowed(&h, &me.program.allowed_hosts));
                if deep {
                    format!("{base}/c/{slug}?to={}", dest::encode(url))
                } else {
                    format!("{base}/c/{slug}")
                }
            });
            let mut r = r.clone();
            r["tracking_link"] = j!(link);
            r
        })
        .collect();
    json(200, &j!({ "tier": me.p.tier, "assets": list }))
}

async fn statements(env: &Env, me: &Me) -> Result<Response> {
    store::json_answer(
        store::q(env, store::list_sql(
                "statements",
                "json_object('period', period, 'program', program, 'currency', currency, 'earned', earned,
                   'reversed', reversed, 'adjusted', adjusted, 'carried_in', carried_in, 'pending', pending,
                   'payable', payable, 'carried_out', carried_out, 'updated_at', updated_at)",
                "FROM statements WHERE partner = ?1 ORDER BY period DESC, currency LIMIT 1000",
            ), &[S(&me.p.id)])?,
    )
    .await
}
