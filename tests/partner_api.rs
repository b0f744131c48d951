//! The partner layer (SPEC section 3, "Partner program API") against the
//! real worker in workerd: applications and approvals with their audit,
//! compliance and licence expiry, keys, links and stats, deal registration,
//! MDF under concurrent approvals, assets by tier, statements, the CRM, the
//! pages' headers, and an authorization matrix over every route.

use e2e::harness::{agent, send, Options, Worker, ADMIN_TOKEN, EXPORT_TOKEN};
use serde_json::{json, Value};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

fn worker() -> &'static Worker {
    static W: OnceLock<Worker> = OnceLock::new();
    W.get_or_init(|| {
        let mut opts = Options::default();
        opts.vars.push(("ALLOW_TEST_CLOCK".into(), "1".into()));
        Worker::start_with(opts)
    })
}

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const TOKEN: &str = "postback-token-0123456789";
const DAY: i64 = 86_400_000;

/// A request with an optional bearer token, an optional JSON body and an
/// optional test clock (ms).
fn call_at(
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&Value>,
    clock: Option<i64>,
) -> (u16, Value) {
    worker().call(method, path, auth, body, clock)
}

fn call(method: &str, path: &str, auth: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    call_at(method, path, auth, body, None)
}

fn admin(method: &str, path: &str, body: Value) -> (u16, Value) {
    let b = (method != "GET" && method != "DELETE").then_some(&body);
    call(method, path, Some(ADMIN_TOKEN), b)
}

fn get(path: &str, auth: &str) -> (u16, Value) {
    call("GET", path, Some(auth), None)
}

fn post(path: &str, auth: &str, body: Value) -> (u16, Value) {
    call("POST", path, Some(auth), Some(&body))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn quarter(ms: i64) -> String {
    let t = edge::time::Timestamp(ms);
    edge::deal::quarter_of(t)
}

/// A program with tiers and two approved partners (A gold, B silver), each
/// with a key.
struct Prog {
    program: String,
    a: String,
    key_a: String,
    b: String,
    key_b: String,
}

fn program(prefix: &str, settings: Value) -> String {
    let program = format!("{prefix}-prog");
    let mut body = json!({"postback_tokens": [TOKEN], "allowed_hosts": ["shop.example", "*.cdn.shop.example"],
        "tiers": ["silver", "gold", "platinum"], "deal_days": 90, "currency": "USD", "name": "Acme partners"});
    if let (Some(b), Some(s)) = (body.as_object_mut(), settings.as_object()) {
        for (k, v) in s {
            b.insert(k.clone(), v.clone());
        }
    }
    let (s, b) = admin("PUT", &format!("/api/programs/{program}"), body);
    assert_eq!(s, 200, "{b}");
    program
}

fn partner(program: &str, id: &str, tier: &str, status: &str) -> String {
    let (s, b) = admin(
        "PUT",
        &format!("/api/partners/{id}"),
        json!({"program": program, "name": format!("Partner {id}"), "email": format!("{id}@example.com"),
               "tier": tier, "status": status, "currency": "USD"}),
    );
    assert!(s == 200 || s == 201, "{b}");
    id.to_string()
}

fn key(partner: &str) -> String {
    let (s, b) = admin("POST", &format!("/api/partners/{partner}/keys"), json!({}));
    assert_eq!(s, 201, "{b}");
    let k = b["key"].as_str().unwrap().to_string();
    assert!(k.starts_with("pk_"), "{k}");
    k
}

fn setup(prefix: &str) -> Prog {
    let program = program(prefix, json!({}));
    let a = partner(&program, &format!("{prefix}-a"), "gold", "approved");
    let b = partner(&program, &format!("{prefix}-b"), "silver", "approved");
    Prog {
        key_a: key(&a),
        key_b: key(&b),
        program,
        a,
        b,
    }
}

fn export(path: &str) -> Vec<Value> {
    let (s, body, _) = send(
        agent()
            .get(&worker().url(path))
            .set("Authorization", &format!("Bearer {EXPORT_TOKEN}")),
        None,
    );
    assert_eq!(s, 200, "{body}");
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn exported_partner(id: &str) -> Value {
    export("/export/v1/partners")
        .into_iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("partner {id} not exported"))
}

fn events() -> Vec<Value> {
    export("/export/v1/events?after=0&limit=5000")
}

#[test]
fn application_approval_and_audit_trail() {
    let program = program("life", json!({}));
    // Public: anyone may apply.
    let (s, b) = call(
        "POST",
        "/partner/v1/apply",
        None,
        Some(
            &json!({"program": program, "name": "Ann <b>Media</b>", "email": "ann@example.com",
                     "company": "Ann Media", "website": "https://ann.example"}),
        ),
    );
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["status"], "applied");
    let id = b["id"].as_str().unwrap().to_string();
    assert!(edge::ids::is_valid_id(&id), "{id}");

    // Unknown and malformed programs answer the same 422: no hint.
    let unknown = call(
        "POST",
        "/partner/v1/apply",
        None,
        Some(&json!({"program": "no-such-program", "name": "X", "email": "x@example.com"})),
    );
    let malformed = call(
        "POST",
        "/partner/v1/apply",
        None,
        Some(&json!({"program": "no such/program", "name": "X", "email": "x@example.com"})),
    );
    assert_eq!(unknown.0, 422);
    assert_eq!(unknown, malformed);
    assert_eq!(unknown.1["error"]["field"], "program");
    for (body, field) in [
        (
            json!({"program": program, "name": "X", "email": "nope"}),
            "email",
        ),
        (
            json!({"program": program, "email": "x@example.com"}),
            "name",
        ),
        (
            json!({"program": program, "name": "X", "email": "x@example.com", "website": "javascript:alert(1)"}),
            "website",
        ),
        (
            json!({"program": program, "name": "X", "email": "x@example.com", "status": "approved"}),
            "status",
        ),
    ] {
        let (s, b) = call("POST", "/partner/v1/apply", None, Some(&body));
        assert_eq!((s, b["error"]["field"].as_str()), (422, Some(field)), "{b}");
    }

    // The operator sees the application in the queue.
    let (s, b) = admin(
        "GET",
        &format!("/api/partners?status=applied&program={program}"),
        json!(null),
    );
    assert_eq!(s, 200, "{b}");
    let listed = b["partners"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["company"], "Ann Media");

    // Reject and suspend need a reason; applied is not a target.
    let status = format!("/api/partners/{id}/status");
    assert_eq!(admin("POST", &status, json!({"status": "rejected"})).0, 422);
    assert_eq!(
        admin("POST", &status, json!({"status": "applied", "reason": "x"})).0,
        422
    );
    assert_eq!(
        admin(
            "POST",
            "/api/partners/nobody/status",
            json!({"status": "approved"})
        )
        .0,
        404
    );
    let (s, b) = admin(
        "POST",
        &status,
        json!({"status": "approved", "reason": "good fit", "actor": "mia"}),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "approved");
    // The same status again changes nothing.
    let (s, b) = admin("POST", &status, json!({"status": "approved"}));
    assert_eq!((s, b["changed"].as_bool()), (200, Some(false)));
    let k = key(&id);
    assert_eq!(get("/partner/v1/me", &k).0, 200);
    let (s, _) = admin(
        "POST",
        &status,
        json!({"status": "suspended", "reason": "traffic quality review"}),
    );
    assert_eq!(s, 200);
    // A suspended partner's key: 403.
    let (s, b) = get("/partner/v1/me", &k);
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["status"], "suspended");
    let (s, _) = admin(
        "POST",
        &status,
        json!({"status": "rejected", "reason": "fraud"}),
    );
    assert_eq!(s, 200);
    assert_eq!(get("/partner/v1/me", &k).0, 403);

    // The audit trail: at, actor, from, to, reason, in order.
    let (s, b) = admin("GET", &format!("/api/partners/{id}/audit"), json!(null));
    assert_eq!(s, 200, "{b}");
    let audit = b["audit"].as_array().unwrap();
    let steps: Vec<(Value, Value, Value, Value)> = audit
        .iter()
        .map(|e| {
            assert!(e["at"].as_str().unwrap().ends_with('Z'));
            (
                e["actor"].clone(),
                e["from"].clone(),
                e["to"].clone(),
                e["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            (
                json!("applicant"),
                json!(null),
                json!("applied"),
                json!("application")
            ),
            (
                json!("mia"),
                json!("applied"),
                json!("approved"),
                json!("good fit")
            ),
            (
                json!("operator"),
                json!("approved"),
                json!("suspended"),
                json!("traffic quality review")
            ),
            (
                json!("operator"),
                json!("suspended"),
                json!("rejected"),
                json!("fraud")
            ),
        ]
    );
    assert_eq!(
        admin("GET", "/api/partners/nobody/audit", json!(null)).0,
        404
    );

    // The export carries the history with reasons, and no raw email.
    let p = exported_partner(&id);
    assert_eq!(p["status"], "rejected");
    let hist: Vec<&str> = p["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(hist, ["applied", "approved", "suspended", "rejected"]);
    assert_eq!(p["history"][3]["reason"], "fraud");
    assert!(!p.to_string().contains("ann@example.com"));
    assert_eq!(p["email_hash"].as_str().unwrap().len(), 64);

    // PUT /api/partners changes are audited too.
    let other = partner(&program, "life-put", "silver", "applied");
    partner(&program, &other, "silver", "approved");
    let (_, b) = admin("GET", &format!("/api/partners/{other}/audit"), json!(null));
    let tos: Vec<&str> = b["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to"].as_str().unwrap())
        .collect();
    assert_eq!(tos, ["applied", "approved"]);
}

#[test]
fn regulated_programs_need_compliance_and_an_expired_licence_suspends() {
    let program = program("reg", json!({"regulated": true}));
    let jan = edge::time::Timestamp::parse("2026-01-05T09:00:00Z")
        .unwrap()
        .ms();
    let (s, b) = call_at(
        "POST",
        "/partner/v1/apply",
        None,
        Some(&json!({"program": program, "name": "IB One", "email": "ib1@example.com"})),
        Some(jan),
    );
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    let status = format!("/api/partners/{id}/status");
    // No compliance data: approval is refused, by either route.
    let (s, b) = call_at(
        "POST",
        &status,
        Some(ADMIN_TOKEN),
        Some(&json!({"status": "approved"})),
        Some(jan + DAY),
    );
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["status"], "compliance_required");
    let (s, _) = admin(
        "PUT",
        &format!("/api/partners/{id}"),
        json!({"program": program, "name": "IB One", "status": "approved"}),
    );
    assert_eq!(s, 409);
    // Incomplete compliance data is a 422.
    let compliance = format!("/api/partners/{id}/compliance");
    let (s, b) = admin("PUT", &compliance, json!({"license_number": "L-1"}));
    assert_eq!((s, b["error"]["field"].as_str()), (422, Some("regulator")));
    assert_eq!(admin("GET", &compliance, json!(null)).0, 404);
    let data = json!({"license_number": "MGA/B2B/123", "regulator": "MGA", "jurisdiction": "MT",
        "license_expires": "2026-06-30", "kyc_checked_at": "2026-01-04T10:00:00Z",
        "dsa_version": "v3", "dsa_accepted_at": "2026-01-04"});
    let (s, b) = call_at(
        "PUT",
        &compliance,
        Some(ADMIN_TOKEN),
        Some(&data),
        Some(jan),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = admin("GET", &compliance, json!(null));
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["license_expires"], "2026-06-30T00:00:00.000Z");
    assert_eq!(b["regulator"], "MGA");
    // Approved in January, while the licence was valid.
    let (s, b) = call_at(
        "POST",
        &status,
        Some(ADMIN_TOKEN),
        Some(&json!({"status": "approved", "reason": "licence checked"})),
        Some(jan + DAY),
    );
    assert_eq!(s, 200, "{b}");
    let k = key(&id);

    // Today the licence has lapsed: exported as suspended from 2026-06-30.
    let p = exported_partner(&id);
    assert_eq!(p["status"], "suspended", "{p}");
    assert_eq!(p["status_reason"], "license_expired");
    let last = p["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last,
        json!({"status": "suspended", "at": "2026-06-30T00:00:00.000Z", "reason": "license_expired"})
    );
    assert_eq!(p["history"][1]["status"], "approved");
    // The key no longer works; the CRM lists the partner as suspended.
    let (s, b) = get("/partner/v1/me", &k);
    assert_eq!(
        (s, b["error"]["status_reason"].as_str()),
        (403, Some("license_expired"))
    );
    let (_, b) = admin(
        "GET",
        &format!("/api/partners?program={program}&status=suspended"),
        json!(null),
    );
    assert_eq!(b["partners"][0]["id"], id.as_str());
    assert_eq!(b["partners"][0]["status_reason"], "license_expired");
    // It cannot be approved while the licence is expired.
    let (s, _) = admin("POST", &status, json!({"status": "approved"}));
    assert_eq!(s, 409);

    // A renewed licence keeps the lapse on record; the operator re-approves.
    let mut renewed = data.clone();
    renewed["license_expires"] = json!("2030-06-30");
    let (s, b) = admin("PUT", &compliance, renewed);
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "suspended");
    let (s, b) = admin(
        "POST",
        &status,
        json!({"status": "approved", "reason": "licence renewed"}),
    );
    assert_eq!(s, 200, "{b}");
    let p = exported_partner(&id);
    assert_eq!(p["status"], "approved");
    let hist: Vec<(String, String)> = p["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["status"].as_str().unwrap().to_string(),
                h["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        hist[1..],
        [
            ("approved".into(), "licence checked".into()),
            ("suspended".into(), "license_expired".into()),
            ("approved".into(), "licence renewed".into()),
        ]
    );
    assert_eq!(get("/partner/v1/me", &k).0, 200);
    let (_, b) = admin("GET", &format!("/api/partners/{id}/audit"), json!(null));
    assert!(b["audit"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["actor"] == "system" && e["reason"] == "license_expired"));
}

#[test]
fn keys_are_shown_once_stored_hashed_and_revocable() {
    let p = setup("keys");
    let (s, b) = admin("POST", &format!("/api/partners/{}/keys", p.a), json!({}));
    assert_eq!(s, 201);
    let second = b["key"].as_str().unwrap().to_string();
    assert_ne!(second, p.key_a);
    assert_eq!(b["hint"].as_str().unwrap(), &second[..7]);
    assert_eq!(admin("POST", "/api/partners/nobody/keys", json!({})).0, 404);
    // Both keys work; the partner sees itself.
    for k in [&p.key_a, &second] {
        let (s, b) = get("/partner/v1/me", k);
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["id"], p.a.as_str());
        assert_eq!(b["tier"], "gold");
        assert_eq!(
            b["program_info"]["tiers"],
            json!(["silver", "gold", "platinum"])
        );
    }
    // Only the hash is in D1: the raw bytes of the local database files
    // (read, never opened as a database, so the worker is not disturbed).
    let hash = edge::partner::key_hash(&second);
    let start = Instant::now();
    loop {
        let mut files = vec![worker().state.clone()];
        let mut blob = Vec::new();
        while let Some(f) = files.pop() {
            if f.is_dir() {
                files.extend(std::fs::read_dir(&f).unwrap().flatten().map(|e| e.path()));
            } else if let Ok(bytes) = std::fs::read(&f) {
                blob.extend(bytes);
            }
        }
        let has = |needle: &str| blob.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(!has(&second) && !has(&p.key_a), "a raw key is stored");
        if has(&hash) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the key's hash is not stored"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Revoking: every key of the partner stops working.
    let (s, b) = admin(
        "DELETE",
        &format!("/api/partners/{}/keys", p.a),
        json!(null),
    );
    assert_eq!((s, b["revoked"].as_u64()), (200, Some(2)));
    assert_eq!(get("/partner/v1/me", &second).0, 401);
    assert_eq!(get("/partner/v1/me", &p.key_a).0, 401);
    assert_eq!(get("/partner/v1/me", &p.key_b).0, 200);
    // Malformed and forged keys.
    for bad in [
        "",
        "pk_",
        "nonsense",
        &format!("{}x", p.key_b),
        ADMIN_TOKEN,
        EXPORT_TOKEN,
    ] {
        assert_eq!(get("/partner/v1/me", bad).0, 401, "{bad}");
    }
    assert_eq!(call("GET", "/partner/v1/me", None, None).0, 401);
}

#[test]
fn links_and_stats() {
    let p = setup("links");
    // A destination outside allowed_hosts is refused; an allowed one works.
    let (s, b) = post(
        "/partner/v1/links",
        &p.key_a,
        json!({"program": p.program, "destination": "https://evil.example/"}),
    );
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (422, Some("destination")),
        "{b}"
    );
    let (s, b) = post(
        "/partner/v1/links",
        &p.key_a,
        json!({"program": p.program, "destination": "https://shop.example/?ref={click_id}"}),
    );
    assert_eq!(s, 201, "{b}");
    let slug = b["slug"].as_str().unwrap().to_string();
    // Another program, or another partner named in the body: 404.
    let other = program("links-other", json!({}));
    let (s, _) = post(
        "/partner/v1/links",
        &p.key_a,
        json!({"program": other, "destination": "https://shop.example/"}),
    );
    assert_eq!(s, 404);
    let (s, _) = post(
        "/partner/v1/links",
        &p.key_a,
        json!({"program": p.program, "partner": p.b, "destination": "https://shop.example/"}),
    );
    assert_eq!(s, 404);
    // An applied partner may sign in, not create links.
    let applied = partner(&p.program, "links-new", "silver", "applied");
    let k = key(&applied);
    assert_eq!(get("/partner/v1/me", &k).1["status"], "applied");
    let (s, _) = post(
        "/partner/v1/links",
        &k,
        json!({"program": p.program, "destination": "https://shop.example/"}),
    );
    assert_eq!(s, 403);

    let (s, b) = get("/partner/v1/links", &p.key_a);
    assert_eq!(s, 200);
    assert_eq!(b["links"][0]["slug"], slug.as_str());
    assert!(b["links"][0]["url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/c/{slug}")));
    assert_eq!(get("/partner/v1/links", &p.key_b).1["links"], json!([]));

    // Traffic: three clicks (two visitors), one bot, one conversion.
    let w = worker();
    let mut cid = String::new();
    let other_browser = format!("{BROWSER} Edg/131.0");
    for ua in [BROWSER, BROWSER, other_browser.as_str()] {
        let (s, _, head) = send(
            agent()
                .get(&w.url(&format!("/c/{slug}")))
                .set("User-Agent", ua),
            None,
        );
        assert_eq!(s, 302);
        let loc = url::Url::parse(head.header("Location").unwrap()).unwrap();
        cid = loc
            .query_pairs()
            .find(|(k, _)| k == "ref")
            .unwrap()
            .1
            .into_owned();
    }
    let (s, _, _) = send(
        agent().get(&w.url(&format!("/c/{slug}"))).set(
            "User-Agent",
            "Googlebot/2.1 (+http://www.google.com/bot.html)",
        ),
        None,
    );
    assert_eq!(s, 302);
    // the order's pixel fires first (the thank-you page), then the
    // merchant's postback: one conversion (review23 F4: it counted two)
    program("links", json!({"pixel": true}));
    let (s, _, _) = send(
        agent()
            .get(&w.url(&format!(
                "/pixel?program={}&event=sale&txn_id=L-1&amount=10.00&currency=USD",
                p.program
            )))
            .set("Cookie", &format!("pt_click={cid}")),
        None,
    );
    assert_eq!(s, 200);
    let (s, b) = call(
        "POST",
        "/postback",
        Some(TOKEN),
        Some(
            &json!({"program": p.program, "event": "sale", "txn_id": "L-1", "click_id": cid,
                      "amount": "10.00", "currency": "USD"}),
        ),
    );
    assert_eq!(s, 200, "{b}");
    // its refund is no second conversion in the stats (review26 L5)
    let (s, b) = call(
        "POST",
        "/postback",
        Some(TOKEN),
        Some(
            &json!({"program": p.program, "event": "refund", "txn_id": "L-1-r", "original_txn_id": "L-1",
                      "click_id": cid, "amount": "10.00", "currency": "USD"}),
        ),
    );
    assert_eq!(s, 200, "{b}");
    let refund: Vec<Value> = export("/export/v1/events?limit=5000")
        .into_iter()
        .filter(|e| e["program"] == p.program.as_str() && e["txn_id"] == "L-1-r")
        .collect();
    assert_eq!(refund[0]["partner"], p.a.as_str(), "{refund:?}");
    let copies: Vec<Value> = export("/export/v1/events?limit=5000")
        .into_iter()
        .filter(|e| e["program"] == p.program.as_str() && e["txn_id"] == "L-1")
        .collect();
    assert_eq!(
        copies
            .iter()
            .map(|e| (e["source"].as_str(), e["partner"].as_str()))
            .collect::<Vec<_>>(),
        [
            (Some("pixel"), Some(p.a.as_str())),
            (Some("postback"), Some(p.a.as_str()))
        ],
        "{copies:?}"
    );
    let today = edge::time::Timestamp(now_ms()).date_string();
    let start = Instant::now();
    loop {
        let (s, b) = get(
            &format!("/partner/v1/stats?from={today}&to={today}"),
            &p.key_a,
        );
        assert_eq!(s, 200, "{b}");
        let t = &b["totals"];
        if t["clicks"] == 3 {
            assert_eq!(t["unique_clicks"], 2, "{b}");
            assert_eq!(t["conversions"], 1, "{b}");
            assert_eq!(b["days"][0]["date"], today.as_str());
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{b}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // B sees none of it; the default range is the last 30 days.
    let (s, b) = get("/partner/v1/stats", &p.key_b);
    assert_eq!(s, 200);
    assert_eq!(b["days"].as_array().unwrap().len(), 30);
    assert_eq!(b["totals"]["clicks"], 0);
    for bad in [
        "from=2024-01-01&to=2025-01-01",
        "from=2026-02-30",
        "from=2026-03-02&to=2026-03-01",
        "to=soon",
    ] {
        let (s, b) = get(&format!("/partner/v1/stats?{bad}"), &p.key_a);
        assert_eq!(s, 422, "{bad}: {b}");
    }
    assert_eq!(
        get("/partner/v1/stats?from=2024-01-01&to=2024-12-31", &p.key_a).0,
        200
    );
}

#[test]
fn deal_registration_conflicts_decisions_expiry_and_export() {
    let p = setup("deal");
    let d = |k: &str, body: Value| post("/partner/v1/deals", k, body);
    let base = json!({"program": p.program, "customer": "acct_9001", "company": "Acme Corp",
        "domain": "acme.example", "value": "12000.00", "currency": "USD", "expected_close": "2026-12-15"});
    let (s, b) = d(&p.key_a, base.clone());
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["status"], "pending");
    let deal_a = b["id"].as_str().unwrap().to_string();
    // The same customer, or the same domain, by anyone: 409 naming nobody.
    let (s, b) = d(&p.key_b, base.clone());
    assert_eq!(s, 409);
    assert_eq!(b, json!({"status": "conflict"}));
    let mut same_domain = base.clone();
    same_domain["customer"] = json!("acct_other");
    same_domain["domain"] = json!("https://WWW.Acme.example/pricing");
    let (s, b) = d(&p.key_b, same_domain);
    assert_eq!((s, b.clone()), (409, json!({"status": "conflict"})));
    assert!(!b.to_string().contains(&p.a));
    let mut upper = base.clone();
    upper["customer"] = json!("ACCT_9001");
    upper["domain"] = Value::Null;
    assert_eq!(d(&p.key_b, upper).0, 409);
    // Another customer is fine.
    let (s, b) = d(
        &p.key_b,
        json!({"program": p.program, "customer": "acct_7", "company": "Beta", "domain": "beta.example"}),
    );
    assert_eq!(s, 201, "{b}");
    let deal_b = b["id"].as_str().unwrap().to_string();
    // Invalid fields.
    for (body, field) in [
        (json!({"program": p.program}), "customer"),
        (
            json!({"program": p.program, "customer": "c", "value": "10"}),
            "currency",
        ),
        (
            json!({"program": p.program, "customer": "c", "value": 10, "currency": "USD"}),
            "value",
        ),
        (
            json!({"program": p.program, "customer": "c", "domain": "not a domain"}),
            "domain",
        ),
    ] {
        let (s, b) = d(&p.key_a, body);
        assert_eq!((s, b["error"]["field"].as_str()), (422, Some(field)), "{b}");
    }
    // Each partner lists only its own.
    let (_, b) = get("/partner/v1/deals", &p.key_a);
    let ids: Vec<&str> = b["deals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [deal_a.as_str()]);
    assert_eq!(b["deals"][0]["domain"], "acme.example");
    assert_eq!(b["deals"][0]["expired"], false);
    let (_, b) = get("/partner/v1/deals", &p.key_b);
    assert_eq!(b["deals"].as_array().unwrap().len(), 1);
    assert_eq!(
        get(&format!("/partner/v1/deals?partner={}", p.a), &p.key_b).0,
        404
    );

    // The operator's queue and decisions.
    let (s, b) = admin(
        "GET",
        &format!("/api/deals?status=pending&program={}", p.program),
        json!(null),
    );
    assert_eq!(s, 200);
    assert_eq!(b["deals"].as_array().unwrap().len(), 2);
    let (s, b) = admin(
        "POST",
        &format!("/api/deals/{deal_a}/decision"),
        json!({"decision": "approve", "reason": "first to register"}),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "approved");
    let (s, b) = admin(
        "POST",
        &format!("/api/deals/{deal_a}/decision"),
        json!({"decision": "reject"}),
    );
    assert_eq!((s, b["status"].as_str()), (409, Some("already_decided")));
    assert_eq!(
        admin(
            "POST",
            "/api/deals/dl_nope/decision",
            json!({"decision": "approve"})
        )
        .0,
        404
    );
    assert_eq!(
        admin(
            "POST",
            &format!("/api/deals/{deal_b}/decision"),
            json!({"decision": "maybe"})
        )
        .0,
        422
    );
    let (s, _) = admin(
        "POST",
        &format!("/api/deals/{deal_b}/decision"),
        json!({"decision": "reject", "reason": "existing customer"}),
    );
    assert_eq!(s, 200);
    // A rejected registration does not block.
    let (s, _) = d(
        &p.key_a,
        json!({"program": p.program, "customer": "acct_7", "domain": "beta.example"}),
    );
    assert_eq!(s, 201);
    let (_, b) = get("/partner/v1/deals", &p.key_b);
    assert_eq!(b["deals"][0]["status"], "rejected");
    assert_eq!(b["deals"][0]["reason"], "existing customer");

    // Exported: one `deal` record for the approved registration.
    let all = events();
    let deals: Vec<&Value> = all
        .iter()
        .filter(|e| e["type"] == "deal" && e["program"] == p.program.as_str())
        .collect();
    assert_eq!(deals.len(), 1, "{deals:?}");
    let e = deals[0];
    assert_eq!(e["id"], deal_a.as_str());
    assert_eq!(e["partner"], p.a.as_str());
    assert_eq!(e["customer"], "acct_9001");
    assert_eq!(e["status"], "approved");
    assert!(e["seq"].as_u64().unwrap() > 0);
    let ts = edge::time::Timestamp::parse(e["ts"].as_str().unwrap()).unwrap();
    let approved = edge::time::Timestamp::parse(e["approved_at"].as_str().unwrap()).unwrap();
    let expires = edge::time::Timestamp::parse(e["expires_at"].as_str().unwrap()).unwrap();
    assert!(approved >= ts);
    assert_eq!(expires.ms() - ts.ms(), 90 * DAY);
    let rec: edge::record::Record = serde_json::from_value(e.clone()).unwrap();
    assert_eq!(rec.kind, edge::record::Kind::Deal);
}

#[test]
fn deals_expire_after_deal_days() {
    let program = program("expiry", json!({"deal_days": 30}));
    let a = partner(&program, "expiry-a", "gold", "approved");
    let b = partner(&program, "expiry-b", "gold", "approved");
    let (ka, kb) = (key(&a), key(&b));
    let long_ago = now_ms() - 31 * DAY;
    let body = json!({"program": program, "customer": "acct_old", "domain": "old.example"});
    let (s, r) = call_at(
        "POST",
        "/partner/v1/deals",
        Some(&ka),
        Some(&body),
        Some(long_ago),
    );
    assert_eq!(s, 201, "{r}");
    let old = r["id"].as_str().unwrap().to_string();
    // 31 days later the registration has expired: no conflict, no approval.
    let (s, r) = post("/partner/v1/deals", &kb, body.clone());
    assert_eq!(s, 201, "{r}");
    let (s, r) = admin(
        "POST",
        &format!("/api/deals/{old}/decision"),
        json!({"decision": "approve"}),
    );
    assert_eq!((s, r["status"].as_str()), (409, Some("expired")));
    let (_, r) = get("/partner/v1/deals", &ka);
    assert_eq!(r["deals"][0]["expired"], true);
    // Within the window, the first registration blocks.
    let (s, _) = call_at(
        "POST",
        "/partner/v1/deals",
        Some(&ka),
        Some(&json!({"program": program, "customer": "acct_new"})),
        Some(now_ms() - 29 * DAY),
    );
    assert_eq!(s, 201);
    let (s, _) = post(
        "/partner/v1/deals",
        &kb,
        json!({"program": program, "customer": "acct_new"}),
    );
    assert_eq!(s, 409);
}

#[test]
fn mdf_budgets_requests_claims_and_concurrent_approvals() {
    let p = setup("mdf");
    let q = quarter(now_ms());
    // Budgets: a pool for gold partners, validated.
    let (s, b) = admin(
        "PUT",
        "/api/mdf/budgets/mdf-gold",
        json!({"program": p.program, "tier": "gold", "quarter": q, "amount": "1000.00", "currency": "USD"}),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["remaining"], "1000.00");
    for (body, field) in [
        (
            json!({"program": p.program, "tier": "diamond", "quarter": q, "amount": "1", "currency": "USD"}),
            "tier",
        ),
        (
            json!({"program": p.program, "partner": "nobody", "quarter": q, "amount": "1", "currency": "USD"}),
            "partner",
        ),
        (
            json!({"program": p.program, "tier": "gold", "quarter": "2026-Q9", "amount": "1", "currency": "USD"}),
            "quarter",
        ),
        (
            json!({"program": p.program, "tier": "gold", "partner": p.a, "quarter": q, "amount": "1", "currency": "USD"}),
            "partner",
        ),
        (
            json!({"program": p.program, "tier": "gold", "quarter": q, "amount": "1.001", "currency": "USD"}),
            "amount",
        ),
    ] {
        let (s, b) = admin("PUT", "/api/mdf/budgets/mdf-bad", body);
        assert_eq!((s, b["error"]["field"].as_str()), (422, Some(field)), "{b}");
    }
    // Requests: B (silver) has no budget; A (gold) draws on the pool.
    let req = |k: &str, amount: &str| {
        post(
            "/partner/v1/mdf",
            k,
            json!({"program": p.program, "activity": "Webinar series", "amount": amount, "currency": "USD"}),
        )
    };
    let (s, b) = req(&p.key_b, "100");
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (422, Some("amount")),
        "{b}"
    );
    assert_eq!(req(&p.key_a, "1000.01").0, 422);
    let (s, b) = post(
        "/partner/v1/mdf",
        &p.key_a,
        json!({"program": p.program, "activity": "x", "amount": "10", "currency": "EUR"}),
    );
    assert_eq!((s, b["error"]["field"].as_str()), (422, Some("currency")));
    let ids: Vec<String> = (0..4)
        .map(|_| {
            let (s, b) = req(&p.key_a, "400.00");
            assert_eq!(s, 201, "{b}");
            assert_eq!(b["status"], "requested");
            b["id"].as_str().unwrap().to_string()
        })
        .collect();
    // Four concurrent approvals of 400 against 1000: exactly two pass.
    let barrier = Arc::new(Barrier::new(ids.len()));
    let handles: Vec<_> = ids
        .iter()
        .cloned()
        .map(|id| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                admin(
                    "POST",
                    &format!("/api/mdf/{id}/decision"),
                    json!({"decision": "approve"}),
                )
            })
        })
        .collect();
    let results: Vec<(u16, Value)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let over = results
        .iter()
        .filter(|(s, b)| *s == 409 && b["status"] == "over_budget")
        .count();
    assert_eq!((ok, over), (2, 2), "{results:?}");
    let (_, b) = admin("GET", "/api/mdf/budgets/mdf-gold", json!(null));
    assert_eq!(
        (b["spent"].as_str(), b["remaining"].as_str()),
        (Some("800.00"), Some("200.00"))
    );
    // The budget cannot drop below what was approved.
    let (s, _) = admin(
        "PUT",
        "/api/mdf/budgets/mdf-gold",
        json!({"program": p.program, "tier": "gold", "quarter": q, "amount": "500.00", "currency": "USD"}),
    );
    assert_eq!(s, 422);
    // A partner budget takes precedence over the tier pool.
    let (s, _) = admin(
        "PUT",
        "/api/mdf/budgets/mdf-b",
        json!({"program": p.program, "partner": p.b, "quarter": q, "amount": "300", "currency": "USD"}),
    );
    assert_eq!(s, 200);
    let (s, b) = req(&p.key_b, "300");
    assert_eq!(s, 201, "{b}");
    let b_req = b["id"].as_str().unwrap().to_string();

    let approved: Vec<&String> = ids
        .iter()
        .zip(&results)
        .filter(|(_, (s, _))| *s == 200)
        .map(|(id, _)| id)
        .collect();
    let refused = ids
        .iter()
        .zip(&results)
        .find(|(_, (s, _))| *s == 409)
        .map(|(id, _)| id.clone())
        .unwrap();
    let first = approved[0].clone();
    // Decided once only; rejecting the refused one works.
    let (s, b) = admin(
        "POST",
        &format!("/api/mdf/{first}/decision"),
        json!({"decision": "reject"}),
    );
    assert_eq!((s, b["status"].as_str()), (409, Some("already_decided")));
    let (s, b) = admin(
        "POST",
        &format!("/api/mdf/{refused}/decision"),
        json!({"decision": "reject", "reason": "budget used up"}),
    );
    assert_eq!((s, b["status"].as_str()), (200, Some("rejected")), "{b}");

    // Claims: only on an approved request, at most its amount, own only.
    let claim =
        |k: &str, id: &str, body: Value| post(&format!("/partner/v1/mdf/{id}/claim"), k, body);
    let proof = "https://files.example/invoice-77.pdf";
    let (s, b) = claim(
        &p.key_a,
        &refused,
        json!({"amount": "100", "proof_url": proof}),
    );
    assert_eq!((s, b["status"].as_str()), (409, Some("not_approved")));
    let (s, b) = claim(
        &p.key_a,
        &first,
        json!({"amount": "400.01", "proof_url": proof}),
    );
    assert_eq!((s, b["error"]["field"].as_str()), (422, Some("amount")));
    let (s, b) = claim(
        &p.key_a,
        &first,
        json!({"amount": "350", "proof_url": "ftp://x"}),
    );
    assert_eq!((s, b["error"]["field"].as_str()), (422, Some("proof_url")));
    assert_eq!(
        claim(&p.key_b, &first, json!({"amount": "1", "proof_url": proof})).0,
        404
    );
    let (s, b) = claim(
        &p.key_a,
        &first,
        json!({"amount": "350", "proof_url": proof}),
    );
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        claim(
            &p.key_a,
            &first,
            json!({"amount": "350", "proof_url": proof})
        )
        .0,
        409
    );
    // The operator's claim queue, then the decision.
    let (_, b) = admin("GET", "/api/mdf?claim_status=claimed", json!(null));
    let queued: Vec<&str> = b["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(queued.contains(&first.as_str()));
    let (s, b) = admin(
        "POST",
        &format!("/api/mdf/{first}/claim-decision"),
        json!({"decision": "approve", "reason": "invoice checked"}),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["claim"]["status"], "approved");
    assert_eq!(
        admin(
            "POST",
            &format!("/api/mdf/{first}/claim-decision"),
            json!({"decision": "approve"})
        )
        .0,
        409
    );
    // A rejected claim may be claimed again.
    let (s, _) = admin(
        "POST",
        &format!("/api/mdf/{b_req}/decision"),
        json!({"decision": "approve"}),
    );
    assert_eq!(s, 200);
    assert_eq!(
        claim(
            &p.key_b,
            &b_req,
            json!({"amount": "300", "proof_url": proof})
        )
        .0,
        201
    );
    let (s, _) = admin(
        "POST",
        &format!("/api/mdf/{b_req}/claim-decision"),
        json!({"decision": "reject", "reason": "no proof of the event"}),
    );
    assert_eq!(s, 200);
    assert_eq!(
        claim(
            &p.key_b,
            &b_req,
            json!({"amount": "250", "proof_url": proof})
        )
        .0,
        201
    );

    // The partner's view.
    let (_, b) = get("/partner/v1/mdf", &p.key_a);
    let mine = b["requests"].as_array().unwrap();
    assert_eq!(mine.len(), 4);
    assert!(mine.iter().all(|r| r["partner"] == p.a.as_str()));
    let r = mine.iter().find(|r| r["id"] == first.as_str()).unwrap();
    assert_eq!(r["claim"]["status"], "approved");
    assert_eq!(r["claim"]["amount"], "350.00");
    assert_eq!(r["quarter"], q.as_str());

    // Exported: one `mdf` record for the approved claim.
    let all = events();
    let mdf: Vec<&Value> = all
        .iter()
        .filter(|e| e["type"] == "mdf" && e["program"] == p.program.as_str())
        .collect();
    assert_eq!(mdf.len(), 1, "{mdf:?}");
    assert_eq!(mdf[0]["partner"], p.a.as_str());
    assert_eq!(mdf[0]["amount"], "350.00");
    assert_eq!(mdf[0]["currency"], "USD");
    assert!(mdf[0]["ts"].is_string());
    let rec: edge::record::Record = serde_json::from_value(mdf[0].clone()).unwrap();
    assert_eq!(rec.kind, edge::record::Kind::Mdf);
}

#[test]
fn assets_by_tier_with_own_tracking_links() {
    let p = setup("asset");
    let plat = partner(&p.program, "asset-p", "platinum", "approved");
    let kp = key(&plat);
    for (id, min_tier, url) in [
        ("asset-logo", None, "https://cdn.shop.example/logo.svg"),
        (
            "asset-silver",
            Some("silver"),
            "https://files.example/silver-kit.pdf",
        ),
        (
            "asset-gold",
            Some("gold"),
            "https://shop.example/gold-landing",
        ),
        (
            "asset-plat",
            Some("platinum"),
            "https://files.example/plat.zip",
        ),
    ] {
        let (s, b) = admin(
            "PUT",
            &format!("/api/assets/{id}"),
            json!({"program": p.program, "title": format!("Title {id}"), "kind": "banner", "url": url, "min_tier": min_tier}),
        );
        assert_eq!(s, 200, "{b}");
    }
    let (s, b) = admin(
        "PUT",
        "/api/assets/asset-bad",
        json!({"program": p.program, "title": "x", "kind": "banner", "url": "https://x.example/", "min_tier": "diamond"}),
    );
    assert_eq!((s, b["error"]["field"].as_str()), (422, Some("min_tier")));
    let seen = |k: &str| -> Vec<Value> {
        let (s, b) = get("/partner/v1/assets", k);
        assert_eq!(s, 200, "{b}");
        b["assets"].as_array().unwrap().clone()
    };
    let ids = |v: &[Value]| -> Vec<String> {
        let mut i: Vec<String> = v
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect();
        i.sort();
        i
    };
    let gold = seen(&p.key_a);
    assert_eq!(ids(&gold), ["asset-gold", "asset-logo", "asset-silver"]);
    assert_eq!(ids(&seen(&p.key_b)), ["asset-logo", "asset-silver"]);
    assert_eq!(ids(&seen(&kp)).len(), 4);
    // Each with the partner's own link; a landing page on an allowed host is
    // a deep link through it.
    let (_, links) = get("/partner/v1/links", &p.key_a);
    let slug = links["links"][0]["slug"].as_str().unwrap().to_string();
    for a in &gold {
        let t = a["tracking_link"].as_str().unwrap();
        assert!(t.contains(&format!("/c/{slug}")), "{t}");
    }
    let landing = gold.iter().find(|a| a["id"] == "asset-gold").unwrap();
    let link = landing["tracking_link"].as_str().unwrap();
    assert!(link.contains("?to="), "{link}");
    let (s, _, head) = send(agent().get(link).set("User-Agent", BROWSER), None);
    assert_eq!(s, 302);
    assert!(head
        .header("Location")
        .unwrap()
        .starts_with("https://shop.example/gold-landing?click_id="));
    let b_slug = seen(&p.key_b)[0]["tracking_link"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!b_slug.contains(&slug));
    // The operator's list.
    let (_, b) = admin(
        "GET",
        &format!("/api/assets?program={}", p.program),
        json!(null),
    );
    assert_eq!(b["assets"].as_array().unwrap().len(), 4);
}

#[test]
fn statements_from_settlement_and_the_crm() {
    let p = setup("stmt");
    let csv = format!(
        "period,partner,program,currency,earned,reversed,adjusted,carried_in,pending,payable,carried_out\n\
         2026-10,{a},{g},USD,120.00,-10.00,0.00,0.00,20.00,90.00,20.00\n\
         2026-10,{b},{g},USD,5.00,0.00,0.00,0.00,0.00,0.00,5.00\n",
        a = p.a,
        b = p.b,
        g = p.program
    );
    let w = worker();
    let (s, body, _) = send(
        agent()
            .post(&w.url("/api/statements"))
            .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
            .set("Content-Type", "text/csv"),
        Some(&csv),
    );
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("\"stored\":2"));
    // JSON rows replace a period's row.
    let (s, b) = admin(
        "POST",
        "/api/statements",
        json!({"rows": [{"period": "2026-11", "partner": p.a, "program": p.program, "currency": "USD",
            "earned": "50.00", "reversed": "0.00", "adjusted": "0.00", "carried_in": "20.00",
            "pending": "0.00", "payable": "70.00", "carried_out": "0.00"}]}),
    );
    assert_eq!(s, 200, "{b}");
    let bad = csv.replace("120.00", "12O.00");
    let (s, body, _) = send(
        agent()
            .post(&w.url("/api/statements"))
            .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
            .set("Content-Type", "text/csv"),
        Some(&bad),
    );
    assert_eq!(s, 422, "{body}");
    assert!(body.contains("row 2"), "{body}");
    // review21 L3: a row of a partner the registry lacks, or of a program
    // not the partner's, replaced the partner's statement: 422, and the
    // upload's other rows are not stored either
    let row = |partner: &str, program: &str| {
        json!({"period": "2026-12", "partner": partner, "program": program, "currency": "USD",
            "earned": "999.00", "reversed": "0.00", "adjusted": "0.00", "carried_in": "0.00",
            "pending": "0.00", "payable": "999.00", "carried_out": "0.00"})
    };
    for (partner, program) in [
        ("nobody", p.program.as_str()),
        (p.a.as_str(), "other-program"),
    ] {
        let (s, b) = admin(
            "POST",
            "/api/statements",
            json!({"rows": [row(&p.a, &p.program), row(partner, program)]}),
        );
        assert_eq!(s, 422, "{b}");
        assert_eq!(b["error"]["field"], "partner", "{b}");
        assert_eq!(
            b["error"]["reason"],
            format!("statement 2 of the upload: {partner} is not a partner of program {program} in the registry"),
            "{b}"
        );
    }
    let (s, b) = get("/partner/v1/statements", &p.key_a);
    assert_eq!(s, 200);
    let rows = b["statements"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["period"], "2026-11");
    assert_eq!(rows[1]["payable"], "90.00");
    assert_eq!(rows[1]["reversed"], "-10.00");
    let (_, b) = get("/partner/v1/statements", &p.key_b);
    assert_eq!(b["statements"].as_array().unwrap().len(), 1);

    // CRM fields, search, filters, CSV.
    let (s, b) = admin(
        "PUT",
        &format!("/api/partners/{}/crm", p.a),
        json!({"manager": "Mia", "tags": ["vip", "de"], "notes": "Met at =FWD 2026, \"great\"",
               "company": "=HYPERLINK(\"http://evil\")", "website": "https://a.example"}),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["tags"], json!(["de", "vip"]));
    assert_eq!(
        admin("PUT", "/api/partners/nobody/crm", json!({"manager": "x"})).0,
        404
    );
    assert_eq!(
        admin(
            "PUT",
            &format!("/api/partners/{}/crm", p.a),
            json!({"tags": ["Bad Tag"]})
        )
        .0,
        422
    );
    let list = |q: &str| -> Vec<String> {
        let (s, b) = admin(
            "GET",
            &format!("/api/partners?program={}&{q}", p.program),
            json!(null),
        );
        assert_eq!(s, 200, "{b}");
        b["partners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(list("tag=vip"), [p.a.as_str()]);
    assert_eq!(list("q=FWD"), [p.a.as_str()]);
    assert_eq!(list("q=partner%20stmt-b"), [p.b.as_str()]);
    assert_eq!(list("tier=silver"), [p.b.as_str()]);
    assert_eq!(list("manager=Mia"), [p.a.as_str()]);
    assert_eq!(list("status=approved").len(), 2);
    assert_eq!(list("status=rejected").len(), 0);
    assert_eq!(list("limit=1").len(), 1);
    assert_eq!(admin("GET", "/api/partners?status=vip", json!(null)).0, 422);
    let (_, b) = admin("GET", &format!("/api/partners?q={}", p.a), json!(null));
    assert_eq!(b["partners"][0]["manager"], "Mia");
    assert_eq!(b["partners"][0]["tags"], json!(["de", "vip"]));

    let (s, csv, head) = send(
        agent()
            .get(&w.url(&format!("/api/partners.csv?program={}", p.program)))
            .set("Authorization", &format!("Bearer {ADMIN_TOKEN}")),
        None,
    );
    assert_eq!(s, 200);
    assert!(head.header("Content-Type").unwrap().starts_with("text/csv"));
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("id,program,name,company,email,website,tier,status,status_reason,manager,tags,license_expires,created_at")
    );
    let a_line = csv.lines().find(|l| l.starts_with(&p.a)).unwrap();
    assert!(
        a_line.contains("\"'=HYPERLINK(\"\"http://evil\"\")\""),
        "{a_line}"
    );
    assert!(a_line.contains(",de vip,"), "{a_line}");
    assert_eq!(csv.lines().count(), 3);
}

#[test]
fn pages_are_served_with_strict_headers() {
    let w = worker();
    for (path, ty) in [
        ("/portal", "text/html"),
        ("/admin", "text/html"),
        ("/ui/ui.js", "text/javascript"),
        ("/ui/portal.js", "text/javascript"),
        ("/ui/admin.js", "text/javascript"),
        ("/ui/ui.css", "text/css"),
    ] {
        let (s, body, head) = send(agent().get(&w.url(path)), None);
        assert_eq!(s, 200, "{path}");
        assert!(
            head.header("Content-Type").unwrap().starts_with(ty),
            "{path}"
        );
        let csp = head.header("Content-Security-Policy").unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(head.header("X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(head.header("X-Frame-Options"), Some("DENY"));
        assert!(!body.is_empty());
        if ty == "text/html" {
            assert!(body.contains("<html lang=\"en\">"));
            assert!(
                !body.contains("<script>") && !body.contains("style="),
                "inline code in {path}"
            );
        }
    }
    assert_eq!(send(agent().get(&w.url("/ui/nope.js")), None).0, 404);
    // The scripts never parse data as HTML.
    for f in ["ui.js", "portal.js", "admin.js"] {
        let src =
            std::fs::read_to_string(e2e::harness::root().join("edge/src/pages").join(f)).unwrap();
        for bad in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!src.contains(bad), "{f} uses {bad}");
        }
    }
}

/// Who calls.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Caller {
    Anonymous,
    A,
    B,
    Operator,
    Export,
}

#[test]
fn authorization_matrix() {
    use Caller::*;
    let p = setup("authz");
    let q = quarter(now_ms());
    // Fixtures of A: a deal, an approved MDF request, a budget.
    let (s, b) = post(
        "/partner/v1/deals",
        &p.key_a,
        json!({"program": p.program, "customer": "authz-cust"}),
    );
    assert_eq!(s, 201, "{b}");
    let deal = b["id"].as_str().unwrap().to_string();
    admin(
        "PUT",
        "/api/mdf/budgets/authz-b",
        json!({"program": p.program, "tier": "gold", "quarter": q, "amount": "100", "currency": "USD"}),
    );
    let (s, b) = post(
        "/partner/v1/mdf",
        &p.key_a,
        json!({"program": p.program, "activity": "x", "amount": "10", "currency": "USD"}),
    );
    assert_eq!(s, 201, "{b}");
    let mdf = b["id"].as_str().unwrap().to_string();
    let mdf2 = post(
        "/partner/v1/mdf",
        &p.key_a,
        json!({"program": p.program, "activity": "y", "amount": "10", "currency": "USD"}),
    )
    .1["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        admin(
            "POST",
            &format!("/api/mdf/{mdf}/decision"),
            json!({"decision": "approve"})
        )
        .0,
        200
    );

    let token = |c: Caller| -> Option<String> {
        match c {
            Anonymous => None,
            A => Some(p.key_a.clone()),
            B => Some(p.key_b.clone()),
            Operator => Some(ADMIN_TOKEN.to_string()),
            Export => Some(EXPORT_TOKEN.to_string()),
        }
    };
    let a = &p.a;
    let g = &p.program;
    // Partner routes: A's own data; B gets its own (lists) or 404 (A's ids).
    let partner_routes: Vec<(&str, String, Value)> = vec![
        ("GET", "/partner/v1/me".into(), Value::Null),
        ("GET", "/partner/v1/stats".into(), Value::Null),
        ("GET", "/partner/v1/links".into(), Value::Null),
        (
            "POST",
            "/partner/v1/links".into(),
            json!({"program": g, "destination": "https://shop.example/m"}),
        ),
        ("GET", "/partner/v1/deals".into(), Value::Null),
        (
            "POST",
            "/partner/v1/deals".into(),
            json!({"program": g, "customer": "authz-new"}),
        ),
        ("GET", "/partner/v1/mdf".into(), Value::Null),
        (
            "POST",
            "/partner/v1/mdf".into(),
            json!({"program": g, "activity": "z", "amount": "1", "currency": "USD"}),
        ),
        (
            "POST",
            format!("/partner/v1/mdf/{mdf}/claim"),
            json!({"amount": "5", "proof_url": "https://x.example/p"}),
        ),
        ("GET", "/partner/v1/assets".into(), Value::Null),
        ("GET", "/partner/v1/statements".into(), Value::Null),
    ];
    for (m, path, body) in &partner_routes {
        let body = (!body.is_null()).then_some(body);
        for c in [Anonymous, Operator, Export] {
            let (s, r) = call(m, path, token(c).as_deref(), body);
            assert_eq!(s, 401, "{c:?} {m} {path}: {r}");
        }
        let (s, r) = call(m, path, token(A).as_deref(), body);
        assert!((200..300).contains(&s), "A {m} {path}: {s} {r}");
        // B: never A's data. Creating its own is fine (B has no MDF budget,
        // so an MDF request is a 422; A's customer is a bare 409 conflict;
        // A's request id is a 404).
        let (s, r) = call(m, path, token(B).as_deref(), body);
        assert!(s < 500 && s != 401 && s != 403, "B {m} {path}: {s} {r}");
        assert!(
            !r.to_string().contains(a.as_str()),
            "B saw A's id at {m} {path}: {r}"
        );
        if path.contains(&mdf) {
            assert_eq!(s, 404, "B {m} {path}");
        }
    }
    // Naming the other partner anywhere is a 404.
    for (m, path, body) in [
        ("GET", format!("/partner/v1/deals?partner={a}"), Value::Null),
        ("GET", format!("/partner/v1/stats?partner={a}"), Value::Null),
        (
            "POST",
            "/partner/v1/deals".to_string(),
            json!({"program": g, "partner": a, "customer": "c-x"}),
        ),
        (
            "POST",
            "/partner/v1/mdf".to_string(),
            json!({"program": g, "partner": a, "activity": "x", "amount": "1", "currency": "USD"}),
        ),
        (
            "POST",
            format!("/partner/v1/mdf/{mdf}/claim"),
            json!({"partner": a, "amount": "1", "proof_url": "https://x.example/"}),
        ),
    ] {
        let body = (!body.is_null()).then_some(&body);
        assert_eq!(
            call(m, &path, token(B).as_deref(), body).0,
            404,
            "{m} {path}"
        );
    }

    // Operator routes: only the admin token.
    let operator_routes: Vec<(&str, String, Value)> = vec![
        ("GET", "/api/partners".into(), Value::Null),
        ("GET", "/api/partners.csv".into(), Value::Null),
        (
            "POST",
            format!("/api/partners/{}/status", p.b),
            json!({"status": "approved"}),
        ),
        ("GET", format!("/api/partners/{a}/audit"), Value::Null),
        (
            "PUT",
            format!("/api/partners/{a}/compliance"),
            json!({"license_number": "L", "regulator": "R",
            "jurisdiction": "J", "license_expires": "2030-01-01", "kyc_checked_at": "2026-01-01",
            "dsa_version": "v1", "dsa_accepted_at": "2026-01-01"}),
        ),
        ("GET", format!("/api/partners/{a}/compliance"), Value::Null),
        (
            "PUT",
            format!("/api/partners/{a}/crm"),
            json!({"manager": "Mia"}),
        ),
        ("GET", "/api/deals".into(), Value::Null),
        (
            "POST",
            format!("/api/deals/{deal}/decision"),
            json!({"decision": "approve"}),
        ),
        ("GET", "/api/mdf/budgets".into(), Value::Null),
        ("GET", "/api/mdf/budgets/authz-b".into(), Value::Null),
        (
            "PUT",
            "/api/mdf/budgets/authz-b".into(),
            json!({"program": g, "tier": "gold", "quarter": q, "amount": "100", "currency": "USD"}),
        ),
        ("GET", "/api/mdf".into(), Value::Null),
        (
            "POST",
            format!("/api/mdf/{mdf2}/decision"),
            json!({"decision": "reject", "reason": "x"}),
        ),
        ("GET", "/api/assets".into(), Value::Null),
        (
            "PUT",
            "/api/assets/authz-asset".into(),
            json!({"program": g, "title": "t", "kind": "logo", "url": "https://x.example/l.png"}),
        ),
        ("POST", "/api/statements".into(), json!([])),
        ("POST", format!("/api/partners/{}/keys", p.b), json!({})),
    ];
    for (m, path, body) in &operator_routes {
        let body = (!body.is_null()).then_some(body);
        for c in [Anonymous, A, B, Export] {
            let (s, r) = call(m, path, token(c).as_deref(), body);
            assert_eq!(s, 401, "{c:?} {m} {path}: {r}");
        }
        let (s, r) = call(m, path, token(Operator).as_deref(), body);
        assert!((200..300).contains(&s), "operator {m} {path}: {s} {r}");
    }
    // The claim decision (after A claimed above) and key revocation.
    for c in [Anonymous, A, B, Export] {
        let t = token(c);
        assert_eq!(
            call(
                "POST",
                &format!("/api/mdf/{mdf}/claim-decision"),
                t.as_deref(),
                Some(&json!({"decision": "approve"}))
            )
            .0,
            401
        );
        assert_eq!(
            call(
                "DELETE",
                &format!("/api/partners/{}/keys", p.b),
                t.as_deref(),
                None
            )
            .0,
            401
        );
    }
    assert_eq!(
        admin(
            "POST",
            &format!("/api/mdf/{mdf}/claim-decision"),
            json!({"decision": "approve"})
        )
        .0,
        200
    );
    // Export routes: only the export token.
    for path in [
        "/export/v1/events",
        "/export/v1/partners",
        "/export/v1/coupons",
    ] {
        for c in [Anonymous, A, B, Operator] {
            assert_eq!(
                call("GET", path, token(c).as_deref(), None).0,
                401,
                "{c:?} {path}"
            );
        }
        assert_eq!(call("GET", path, token(Export).as_deref(), None).0, 200);
    }
    // Public: the application and the pages, whoever calls.
    for c in [Anonymous, A, B, Operator, Export] {
        let (s, _) = call(
            "POST",
            "/partner/v1/apply",
            token(c).as_deref(),
            Some(&json!({"program": g, "name": "N", "email": "n@example.com"})),
        );
        assert_eq!(s, 201, "{c:?}");
        assert_eq!(call("GET", "/portal", token(c).as_deref(), None).0, 200);
    }
    // Revoking B's keys locks B out; A is untouched.
    assert_eq!(
        admin(
            "DELETE",
            &format!("/api/partners/{}/keys", p.b),
            json!(null)
        )
        .0,
        200
    );
    assert_eq!(get("/partner/v1/me", &p.key_b).0, 401);
    assert_eq!(get("/partner/v1/me", &p.key_a).0, 200);
}

/// review21 L2: a partner as its own parent was refused, but a cycle one
/// step removed (A under B, B under A) was stored and exported. Refused now,
/// at any depth; a chain without a cycle is still taken.
#[test]
fn a_parent_cycle_is_refused() {
    let program = program("cycle", json!({}));
    let [a, b, c] =
        ["cycle-a", "cycle-b", "cycle-c"].map(|id| partner(&program, id, "silver", "approved"));
    let put = |id: &str, parent: &str| {
        admin(
            "PUT",
            &format!("/api/partners/{id}"),
            json!({"program": program, "name": format!("Partner {id}"), "email": format!("{id}@example.com"),
                   "status": "approved", "currency": "USD", "parent": parent}),
        )
    };
    let (s, body) = put(&b, &a);
    assert_eq!(s, 200, "{body}");
    let (s, body) = put(&c, &b);
    assert_eq!(s, 200, "{body}");
    for (id, parent) in [(&a, &b), (&a, &c), (&b, &c)] {
        let (s, body) = put(id, parent);
        assert_eq!(s, 422, "{id} under {parent}: {body}");
        assert_eq!(body["error"]["field"], "parent", "{body}");
        assert_eq!(
            body["error"]["reason"],
            format!("{parent} is {id} or has {id} above it: a parent cycle"),
            "{body}"
        );
    }
    let (_, body) = admin("GET", &format!("/api/partners/{a}"), json!(null));
    assert!(body["parent"].is_null(), "{body}");
}

/// review26 H1: a licence that lapsed, then an operator's suspension, then a
/// renewal: the lapse stays in the exported history (it was erased, and a
/// sale made in it paid).
#[test]
fn a_lapse_stays_on_record_when_the_operator_suspended_after_it() {
    let program = program("lapse", json!({"regulated": true}));
    let jan = edge::time::Timestamp::parse("2026-01-05T09:00:00Z")
        .unwrap()
        .ms();
    let (s, b) = call_at(
        "POST",
        "/partner/v1/apply",
        None,
        Some(&json!({"program": program, "name": "IB Two", "email": "ib2@example.com"})),
        Some(jan),
    );
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    let compliance = format!("/api/partners/{id}/compliance");
    let data = json!({"license_number": "MGA/B2B/9", "regulator": "MGA", "jurisdiction": "MT",
        "license_expires": "2026-06-30", "kyc_checked_at": "2026-01-04T10:00:00Z",
        "dsa_version": "v3", "dsa_accepted_at": "2026-01-04"});
    let (s, b) = call_at(
        "PUT",
        &compliance,
        Some(ADMIN_TOKEN),
        Some(&data),
        Some(jan),
    );
    assert_eq!(s, 200, "{b}");
    let status = format!("/api/partners/{id}/status");
    let (s, b) = call_at(
        "POST",
        &status,
        Some(ADMIN_TOKEN),
        Some(&json!({"status": "approved", "reason": "licence checked"})),
        Some(jan + DAY),
    );
    assert_eq!(s, 200, "{b}");
    // after the lapse, the operator suspends the partner on its own account
    let (s, b) = admin(
        "POST",
        &status,
        json!({"status": "suspended", "reason": "fraud review"}),
    );
    assert_eq!(s, 200, "{b}");
    let reasons = |p: &Value| -> Vec<(String, String)> {
        p["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["status"].as_str().unwrap().to_string(),
                    h["reason"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let want: Vec<(String, String)> = [
        ("applied", "application"),
        ("approved", "licence checked"),
        ("suspended", "license_expired"),
        ("suspended", "fraud review"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(reasons(&exported_partner(&id)), want);
    // the renewal writes the lapse down; nothing of the history is lost
    let mut renewed = data.clone();
    renewed["license_expires"] = json!("2030-06-30");
    let (s, b) = admin("PUT", &compliance, renewed);
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "suspended");
    let p = exported_partner(&id);
    assert_eq!(reasons(&p), want);
    assert_eq!(p["history"][2]["at"], "2026-06-30T00:00:00.000Z");
}

/// review26 M2: two operators changing one partner at once through `PUT
/// /api/partners/{id}`: each change is either kept (in the history and the
/// audit both) or answered 409; none is audited and lost.
#[test]
fn concurrent_partner_changes_lose_no_history() {
    let program = program("race", json!({}));
    let id = partner(&program, "race-a", "silver", "approved");
    for _ in 0..10 {
        let barrier = Arc::new(Barrier::new(2));
        let answers: Vec<u16> = ["suspended", "rejected"]
            .into_iter()
            .map(|to| {
                let (barrier, program, id) = (barrier.clone(), program.clone(), id.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    admin(
                        "PUT",
                        &format!("/api/partners/{id}"),
                        json!({"program": program, "name": "Partner race-a", "tier": "silver", "status": to}),
                    )
                    .0
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(
            answers.iter().all(|s| *s == 200 || *s == 409) && answers.contains(&200),
            "{answers:?}"
        );
        partner(&program, &id, "silver", "approved");
    }
    let (_, audit) = admin("GET", &format!("/api/partners/{id}/audit"), json!(null));
    let audit = audit["audit"].as_array().unwrap().len();
    let (_, p) = admin("GET", &format!("/api/partners/{id}"), json!(null));
    let history = p["history"].as_array().unwrap().len();
    assert_eq!(audit, history, "{p}");
    assert!(history >= 21, "{p}");
}

/// review26 M1, L2, L3, L4, L6, L7: the partner layer refuses what it
/// cannot keep consistent.
#[test]
fn the_partner_layer_refuses_what_it_cannot_keep_consistent() {
    let p = setup("keep");
    let q = quarter(now_ms());
    // M1: a budget's currency stays while a request against it is open
    let budget = "/api/mdf/budgets/keep-b1";
    let (s, b) = admin(
        "PUT",
        budget,
        json!({"program": p.program, "partner": p.a, "quarter": q, "amount": "1000.00", "currency": "USD"}),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = post(
        "/partner/v1/mdf",
        &p.key_a,
        json!({"program": p.program, "activity": "webinar", "amount": "9.00", "currency": "USD"}),
    );
    assert_eq!(s, 201, "{b}");
    let request = b["id"].as_str().unwrap().to_string();
    let (s, b) = admin(
        "PUT",
        budget,
        json!({"program": p.program, "partner": p.a, "quarter": q, "amount": "1000", "currency": "JPY"}),
    );
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (422, Some("budget")),
        "{b}"
    );
    // the amount may still change
    let (s, b) = admin(
        "PUT",
        budget,
        json!({"program": p.program, "partner": p.a, "quarter": q, "amount": "1200.00", "currency": "USD"}),
    );
    assert_eq!(s, 200, "{b}");
    // once the request is rejected, nothing holds the budget
    let (s, b) = admin(
        "POST",
        &format!("/api/mdf/{request}/decision"),
        json!({"decision": "reject", "reason": "no"}),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = admin(
        "PUT",
        budget,
        json!({"program": p.program, "partner": p.a, "quarter": q, "amount": "1000", "currency": "JPY"}),
    );
    assert_eq!((s, b["currency"].as_str()), (200, Some("JPY")), "{b}");

    // L2: statements in the currency's decimals
    let row = |earned: &str, currency: &str| {
        json!([{"period": "2026-10", "partner": p.a, "program": p.program, "currency": currency,
                "earned": earned, "reversed": "0", "adjusted": "0", "carried_in": "0", "pending": "0",
                "payable": earned, "carried_out": "0"}])
    };
    for (earned, currency) in [("100.005", "USD"), ("100.5", "JPY")] {
        let (s, b) = admin("POST", "/api/statements", row(earned, currency));
        assert_eq!(
            (s, b["error"]["field"].as_str()),
            (422, Some("earned")),
            "{b}"
        );
    }
    let (s, b) = admin("POST", "/api/statements", row("100.50", "USD"));
    assert_eq!(s, 200, "{b}");

    // L3: a tier list leaving out a partner's tier
    let (s, b) = admin(
        "PUT",
        &format!("/api/programs/{}", p.program),
        json!({"postback_tokens": [TOKEN], "allowed_hosts": ["shop.example"],
               "tiers": ["silver", "platinum"], "deal_days": 90, "currency": "USD"}),
    );
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (422, Some("tiers")),
        "{b}"
    );
    assert!(b["error"]["reason"].as_str().unwrap().contains(&p.a), "{b}");
    let (_, b) = admin("GET", &format!("/api/programs/{}", p.program), json!(null));
    assert_eq!(b["tiers"], json!(["silver", "gold", "platinum"]));

    // L4: a "partner" that is not the caller's id string is another's
    for other in [json!(5), json!([p.a.clone()]), json!({"id": p.a.clone()})] {
        let (s, b) = post(
            "/partner/v1/deals",
            &p.key_b,
            json!({"program": p.program, "customer": "keep-c1", "partner": other}),
        );
        assert_eq!(s, 404, "{b}");
    }

    // L7: a status filter names a status there is
    for path in [
        "/api/deals?status=bogus",
        "/api/mdf?status=bogus",
        "/api/mdf?claim_status=open",
    ] {
        let (s, b) = admin("GET", path, json!(null));
        assert_eq!(s, 422, "{path}: {b}");
    }
    assert_eq!(
        admin("GET", "/api/deals?status=pending", json!(null)).0,
        200
    );

    // L6: the page of approved partners counts only approved ones (a
    // lapsed licence suspends): the newest partner lapsed, limit=1 still
    // finds an approved one
    let reg = program("keepreg", json!({"regulated": true}));
    let old = partner(&reg, "keepreg-a", "silver", "applied");
    let lapsed = partner(&reg, "keepreg-0", "silver", "applied");
    for id in [&old, &lapsed] {
        let (s, b) = admin(
            "PUT",
            &format!("/api/partners/{id}/compliance"),
            json!({"license_number": "L-7", "regulator": "MGA", "jurisdiction": "MT",
                   "license_expires": "2030-06-30", "kyc_checked_at": "2026-01-04T10:00:00Z",
                   "dsa_version": "v3", "dsa_accepted_at": "2026-01-04"}),
        );
        assert_eq!(s, 200, "{b}");
        let (s, b) = admin(
            "POST",
            &format!("/api/partners/{id}/status"),
            json!({"status": "approved"}),
        );
        assert_eq!(s, 200, "{b}");
    }
    let (s, b) = admin(
        "PUT",
        &format!("/api/partners/{lapsed}/compliance"),
        json!({"license_number": "L-7", "regulator": "MGA", "jurisdiction": "MT",
               "license_expires": "2026-01-01", "kyc_checked_at": "2025-01-04T10:00:00Z",
               "dsa_version": "v3", "dsa_accepted_at": "2025-01-04"}),
    );
    assert_eq!((s, b["status"].as_str()), (200, Some("suspended")), "{b}");
    let (s, b) = admin(
        "GET",
        &format!("/api/partners?program={reg}&status=approved&limit=1"),
        json!(null),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["partners"][0]["id"], old.as_str(), "{b}");
    let (_, b) = admin(
        "GET",
        &format!("/api/partners?program={reg}&status=suspended&limit=1"),
        json!(null),
    );
    assert_eq!(b["partners"][0]["id"], lapsed.as_str(), "{b}");
}
