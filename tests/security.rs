//! Injection and leakage against the real worker in workerd (issue 8,
//! "Security"): SQL and HTML payloads in every free-text field and list
//! filter, URL schemes where a URL is expected, CR/LF through the click
//! route's macros and deep links (read from the raw socket), the security
//! headers of every HTML route, secrets kept out of the log, the export and
//! the rejections log, and signed-postback replay. `docs/security.md` names
//! these tests.

use e2e::harness::{agent, json_or_text, now_s, send, wait_for, Worker, ADMIN_TOKEN, EXPORT_TOKEN};
use edge::auth::sign;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

fn worker() -> &'static Worker {
    static W: OnceLock<Worker> = OnceLock::new();
    W.get_or_init(Worker::start)
}

const TOKEN: &str = "sec-postback-token-5f1e2d3c4b5a";
const HMAC: &str = "sec-hmac-secret-9a8b7c6d5e4f3a2b";
const WEBHOOK_SECRET: &str = "sec-webhook-secret-1029384756";
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

/// SQL payloads, then HTML/JS ones: each must be refused (4xx) or kept
/// byte for byte.
const SQL: &[&str] = &[
    "' OR 1=1 --",
    "\"; DROP TABLE events; --",
    "%' UNION SELECT id, record, 1, 2 FROM events --",
    "x'); DELETE FROM partners; --",
    "1; UPDATE partners SET status='approved' WHERE 1=1; --",
    "nul\u{0}byte",
    "Robert'); DROP TABLE partners;--\u{2028}\u{1F600}",
];
const HTML: &[&str] = &[
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(document.cookie)>",
    "\"><svg onload=alert(1)>",
    "javascript:alert(1)",
];

fn payloads() -> Vec<String> {
    let mut v: Vec<String> = SQL.iter().chain(HTML).map(|s| s.to_string()).collect();
    // Very long: over every text limit, and over the 64 KiB admin body.
    v.push("A'".repeat(300));
    v.push("B".repeat(70 * 1024));
    v
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A request with an optional bearer token and JSON body: status and body.
fn call(method: &str, path: &str, auth: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    worker().call(method, path, auth, body, None)
}

fn admin(method: &str, path: &str, body: Value) -> (u16, Value) {
    let b = (method != "GET" && method != "DELETE").then_some(&body);
    call(method, path, Some(ADMIN_TOKEN), b)
}

fn get(path: &str, auth: &str) -> (u16, Value) {
    call("GET", path, Some(auth), None)
}

/// The verdict on a request carrying a payload: never a 5xx; a 2xx means the
/// value was accepted (the caller then checks it is stored verbatim).
fn accepted(what: &str, status: u16, body: &Value) -> bool {
    assert!(status < 500, "{what}: {status} {body}");
    if (200..300).contains(&status) {
        return true;
    }
    assert!(
        matches!(status, 400 | 404 | 409 | 413 | 422),
        "{what}: unexpected {status} {body}"
    );
    if status == 422 {
        assert!(body["error"]["field"].is_string(), "{what}: {body}");
    }
    false
}

/// Does `v` hold the string `s` exactly, anywhere?
fn holds(v: &Value, s: &str) -> bool {
    match v {
        Value::String(x) => x == s,
        Value::Array(a) => a.iter().any(|x| holds(x, s)),
        Value::Object(m) => m.values().any(|x| holds(x, s)),
        _ => false,
    }
}

fn short(p: &str) -> String {
    p.chars().take(40).collect()
}

fn export_text(path: &str) -> String {
    let (s, body, _) = send(
        agent()
            .get(&worker().url(path))
            .set("Authorization", &format!("Bearer {EXPORT_TOKEN}")),
        None,
    );
    assert_eq!(s, 200, "{body}");
    body
}

/// Every exported event, following the cursor.
fn events() -> Vec<Value> {
    let mut after = 0u64;
    let mut out = Vec::new();
    loop {
        let body = export_text(&format!("/export/v1/events?after={after}&limit=5000"));
        let lines: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let Some(last) = lines.last() else {
            return out;
        };
        after = last["seq"].as_u64().unwrap();
        out.extend(lines);
    }
}

fn exported_partners() -> Vec<Value> {
    export_text("/export/v1/partners")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Polls the export until `pred` holds (clicks are written in batches).
fn events_until(what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    wait_for(what, 30, || Some(events()).filter(|all| pred(all)))
}

fn quarter_now() -> String {
    edge::deal::quarter_of(edge::time::Timestamp(now_s() * 1000))
}

struct Setup {
    program: String,
    partner: String,
    key: String,
    slug: String,
}

fn program_body() -> Value {
    json!({"cookie_days": 30, "postback_tokens": [TOKEN], "hmac_secrets": [HMAC],
           "allowed_hosts": ["shop.example"], "pixel": true, "currency": "USD",
           "tiers": ["silver", "gold"], "deal_days": 90, "name": "Security"})
}

/// A program, an approved gold partner with a key and a link, and an MDF
/// budget for the current quarter.
fn setup(prefix: &str) -> Setup {
    let program = format!("{prefix}-prog");
    let (s, b) = admin("PUT", &format!("/api/programs/{program}"), program_body());
    assert_eq!(s, 200, "{b}");
    let partner = format!("{prefix}-a");
    let (s, b) = admin(
        "PUT",
        &format!("/api/partners/{partner}"),
        json!({"program": program, "name": "Ann", "email": format!("{partner}@example.com"),
               "tier": "gold", "status": "approved", "currency": "USD"}),
    );
    assert!(s == 200 || s == 201, "{b}");
    let (s, b) = admin("POST", &format!("/api/partners/{partner}/keys"), json!({}));
    assert_eq!(s, 201, "{b}");
    let key = b["key"].as_str().unwrap().to_string();
    let (s, b) = admin(
        "POST",
        "/api/links",
        json!({"partner": partner, "program": program,
               "destination": "https://shop.example/p?ref={click_id}&a={sub1}&b={sub2}&c={sub3}&d={sub4}&e={sub5}&who={partner}"}),
    );
    assert_eq!(s, 201, "{b}");
    let slug = b["slug"].as_str().unwrap().to_string();
    let (s, b) = admin(
        "PUT",
        &format!("/api/mdf/budgets/{prefix}-budget"),
        json!({"program": program, "partner": partner, "quarter": quarter_now(),
               "amount": "1000000.00", "currency": "USD"}),
    );
    assert!(s == 200 || s == 201, "{b}");
    Setup {
        program,
        partner,
        key,
        slug,
    }
}

fn postback_json(body: &Value) -> (u16, Value) {
    let req = agent()
        .post(&worker().url("/postback"))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .set("Content-Type", "application/json");
    let (s, t, _) = send(req, Some(&body.to_string()));
    (s, json_or_text(&t))
}

/// SQL and HTML payloads in every free-text field the API accepts: refused
/// with a 4xx naming the field, or stored and returned byte for byte; and
/// rows of another program are untouched.
#[test]
fn injection_payloads_in_text_fields_are_refused_or_kept_verbatim() {
    let st = setup("sqli");
    // Rows a payload might aim at: another program with a partner and a
    // conversion.
    let other = setup("sqli-other");
    let (s, b) = call(
        "POST",
        "/postback",
        None,
        Some(
            &json!({"program": other.program, "event": "lead", "txn_id": "OTHER-1", "token": TOKEN}),
        ),
    );
    assert_eq!(s, 200, "{b}");
    let count_other = |evs: &[Value]| evs.iter().filter(|e| e["program"] == other.program).count();
    let other_events = count_other(&events());
    let other_partner = |ps: &[Value]| {
        ps.iter()
            .filter(|p| p["program"] == other.program)
            .cloned()
            .collect::<Vec<_>>()
    };
    let other_before = other_partner(&exported_partners());
    assert_eq!(other_before.len(), 1);

    let mut stored = 0;
    let mut refused = 0;
    let mut tally = |ok: bool| if ok { stored += 1 } else { refused += 1 };
    // (event id, field, payload) of every accepted postback.
    let mut recorded: Vec<(Value, &str, String)> = Vec::new();
    let mut sub_payloads: Vec<String> = Vec::new();
    for (i, p) in payloads().into_iter().enumerate() {
        let tag = short(&p);
        // Program and partner names.
        let mut body = program_body();
        body["name"] = json!(p);
        let (s, b) = admin("PUT", &format!("/api/programs/{}", st.program), body);
        let ok = accepted(&format!("program name {tag}"), s, &b);
        if ok {
            let (_, b) = admin("GET", &format!("/api/programs/{}", st.program), json!(null));
            assert!(holds(&b, &p), "program name {tag}: {b}");
        }
        tally(ok);
        let (s, b) = admin(
            "PUT",
            &format!("/api/partners/{}", st.partner),
            json!({"program": st.program, "name": p, "email": format!("{}@example.com", st.partner),
                   "tier": "gold", "status": "approved", "currency": "USD"}),
        );
        let ok = accepted(&format!("partner name {tag}"), s, &b);
        if ok {
            let (_, b) = admin("GET", &format!("/api/partners/{}", st.partner), json!(null));
            assert!(holds(&b, &p), "partner name {tag}: {b}");
            let (_, me) = get("/partner/v1/me", &st.key);
            assert!(holds(&me, &p), "portal profile {tag}: {me}");
        }
        tally(ok);
        // CRM notes and company.
        let (s, b) = admin(
            "PUT",
            &format!("/api/partners/{}/crm", st.partner),
            json!({"notes": p, "company": p, "tags": ["vip"]}),
        );
        let ok = accepted(&format!("crm {tag}"), s, &b);
        if ok {
            let (_, b) = admin(
                "GET",
                &format!("/api/partners?program={}", st.program),
                json!(null),
            );
            let row = b["partners"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["id"] == st.partner.as_str())
                .cloned()
                .unwrap();
            assert_eq!(row["notes"], json!(p), "crm notes {tag}");
            assert_eq!(row["company"], json!(p), "crm company {tag}");
        }
        tally(ok);
        // Public application: name and company.
        let (s, b) = call(
            "POST",
            "/partner/v1/apply",
            None,
            Some(
                &json!({"program": st.program, "name": p, "email": format!("app{i}@example.com"), "company": p}),
            ),
        );
        let ok = accepted(&format!("apply {tag}"), s, &b);
        if ok {
            let id = b["id"].as_str().unwrap();
            let (_, b) = admin("GET", &format!("/api/partners/{id}"), json!(null));
            assert_eq!(b["name"], json!(p), "applicant name {tag}: {b}");
        }
        tally(ok);
        // Deal registration: customer and company.
        let (s, b) = call(
            "POST",
            "/partner/v1/deals",
            Some(&st.key),
            Some(&json!({"program": st.program, "customer": p, "company": p})),
        );
        let ok = accepted(&format!("deal {tag}"), s, &b);
        if ok {
            let (_, b) = get("/partner/v1/deals", &st.key);
            assert!(holds(&b, &p), "deal customer {tag}: {b}");
        }
        tally(ok);
        // MDF activity.
        let (s, b) = call(
            "POST",
            "/partner/v1/mdf",
            Some(&st.key),
            Some(
                &json!({"program": st.program, "activity": p, "amount": "1.00", "currency": "USD"}),
            ),
        );
        let ok = accepted(&format!("mdf {tag}"), s, &b);
        if ok {
            let (_, b) = get("/partner/v1/mdf", &st.key);
            assert!(holds(&b, &p), "mdf activity {tag}: {b}");
        }
        tally(ok);
        // Asset title (and kind, which is a tag).
        let (s, b) = admin(
            "PUT",
            &format!("/api/assets/sqli-asset-{i}"),
            json!({"program": st.program, "title": p, "kind": "banner", "url": "https://shop.example/b.png"}),
        );
        let ok = accepted(&format!("asset {tag}"), s, &b);
        if ok {
            let (_, b) = get("/partner/v1/assets", &st.key);
            assert!(holds(&b, &p), "asset title {tag}: {b}");
        }
        tally(ok);
        let (s, b) = admin(
            "PUT",
            &format!("/api/assets/sqli-kind-{i}"),
            json!({"program": st.program, "title": "t", "kind": p, "url": "https://shop.example/b.png"}),
        );
        assert!(!accepted(&format!("asset kind {tag}"), s, &b));
        // Postback fields, JSON and query string.
        for field in ["txn_id", "customer", "coupon", "instrument", "event"] {
            let txn = format!("SQ-{i}-{field}");
            let mut body = json!({"program": st.program, "event": "lead", "txn_id": txn});
            body[field] = json!(p);
            let (s, b) = postback_json(&body);
            let ok = accepted(&format!("postback {field} {tag}"), s, &b);
            if ok {
                assert_eq!(b["status"], "recorded", "postback {field} {tag}: {b}");
                recorded.push((b["id"].clone(), field, p.clone()));
            }
            tally(ok);
            let q = format!(
                "/postback?program={}&event=lead&txn_id=Q{}&{field}={}&token={TOKEN}",
                st.program,
                enc(&txn),
                enc(&p)
            );
            if q.len() < 8 * 1024 {
                let (s, b) = call("GET", &q, None, None);
                let ok = accepted(&format!("GET postback {field} {tag}"), s, &b);
                if ok {
                    recorded.push((b["id"].clone(), field, p.clone()));
                }
                tally(ok);
            }
        }
        // sub1..sub5 on a click.
        if p.len() <= 256 {
            let q: String = (1..=5).map(|n| format!("&sub{n}={}", enc(&p))).collect();
            let (s, body, _) = send(
                agent()
                    .get(&worker().url(&format!("/c/{}?x=1{q}", st.slug)))
                    .set("User-Agent", BROWSER),
                None,
            );
            assert_eq!(s, 302, "click sub {tag}: {body}");
            sub_payloads.push(p.clone());
        }
        // List and export filters: never a 5xx; a search only returns rows
        // that really contain the text.
        for path in [
            format!("/api/partners?q={}", enc(&p)),
            format!("/api/partners?tag={}", enc(&p)),
            format!("/api/partners?manager={}", enc(&p)),
            format!("/api/partners?status={}", enc(&p)),
            format!("/api/partners?program={}", enc(&p)),
            format!("/api/partners.csv?q={}", enc(&p)),
            format!("/api/deals?status={}", enc(&p)),
            format!("/api/deals?partner={}", enc(&p)),
            format!("/api/mdf?program={}", enc(&p)),
            format!("/api/assets?program={}", enc(&p)),
            format!("/api/rejections?after={}", enc(&p)),
            format!("/api/partners/{}", enc(&p)),
            format!("/api/programs/{}", enc(&p)),
            format!("/api/links/{}", enc(&p)),
            format!("/api/coupons/{}", enc(&p)),
        ] {
            if path.len() > 8 * 1024 {
                continue;
            }
            let (s, b) = admin("GET", &path, json!(null));
            assert!(s < 500, "{path}: {s} {b}");
            if path.starts_with("/api/partners?q=") && s == 200 {
                let needle = p.to_lowercase();
                for r in b["partners"].as_array().unwrap() {
                    let hay = ["id", "name", "company", "email", "website", "notes"]
                        .iter()
                        .map(|k| r[*k].as_str().unwrap_or("").to_lowercase())
                        .collect::<Vec<_>>()
                        .join(" ");
                    assert!(hay.contains(&needle), "q={tag} matched {r}");
                }
            }
        }
        for path in [
            format!("/export/v1/events?after={}", enc(&p)),
            format!("/export/v1/events?limit={}", enc(&p)),
        ] {
            if path.len() > 8 * 1024 {
                continue;
            }
            let (s, b) = get(&path, EXPORT_TOKEN);
            assert!(s == 400 || s == 422, "{path}: {s} {b}");
        }
        for path in [
            format!("/partner/v1/stats?from={}&to=2026-12-01", enc(&p)),
            format!("/partner/v1/assets?program={}", enc(&p)),
        ] {
            if path.len() > 8 * 1024 {
                continue;
            }
            let (s, b) = get(&path, &st.key);
            assert!(s < 500, "{path}: {s} {b}");
        }
    }
    assert!(
        stored > 0 && refused > 0,
        "stored {stored}, refused {refused}"
    );

    // The click records keep every sub value verbatim.
    let evs = events_until("the payload clicks", |evs| {
        let subs: Vec<&Value> = evs
            .iter()
            .filter(|e| e["type"] == "click" && e["link"] == st.slug.as_str())
            .map(|e| &e["sub"])
            .collect();
        sub_payloads
            .iter()
            .all(|p| subs.iter().any(|s| *s == &json!([p, p, p, p, p])))
    });
    // Nothing happened to the other program's rows, and no recorded
    // postback went missing.
    assert_eq!(count_other(&evs), other_events);
    assert_eq!(other_partner(&exported_partners()), other_before);
    assert!(!recorded.is_empty());
    for (id, field, p) in &recorded {
        let e = evs
            .iter()
            .find(|e| e["id"] == *id)
            .unwrap_or_else(|| panic!("{id} ({field} {}) not exported", short(p)));
        assert_eq!(e[*field], json!(p), "postback {field} {}", short(p));
    }
    let (_, b) = admin(
        "GET",
        &format!("/api/partners/{}", other.partner),
        json!(null),
    );
    assert_eq!(b["name"], "Ann");
    assert_eq!(b["status"], "approved");
}

/// Every route that answers HTML, found from the router's own table: each
/// carries the documented headers, and they are exactly `/portal` and
/// `/admin`. Scripts and styles are served with their own types and
/// `nosniff`; no other answer is HTML, so reflected text is never markup.
#[test]
fn every_html_route_has_the_security_headers() {
    let w = worker();
    let mut html_routes = Vec::new();
    for (method, template) in edge::routes::ROUTES {
        if *method != "GET" {
            continue;
        }
        let path = template
            .replace("{slug}", "%3Cscript%3E")
            .replace("{id}", "%3Cscript%3E")
            .replace("{code}", "x")
            .replace("{file}", "x")
            .replace("{program}", "x");
        for m in ["GET", "HEAD"] {
            let (s, _, head) = send(agent().request(m, &w.url(&path)), None);
            assert!(s < 500, "{m} {path}: {s}");
            let ct = head.header("Content-Type").unwrap_or("").to_string();
            // Every answer with a body type says it must not be sniffed.
            if !ct.is_empty() {
                assert_eq!(
                    head.header("X-Content-Type-Options"),
                    Some("nosniff"),
                    "{m} {path}"
                );
            }
            if ct.starts_with("text/html") {
                if m == "GET" {
                    html_routes.push(path.clone());
                }
                let csp = head.header("Content-Security-Policy").unwrap_or("");
                assert!(csp.starts_with("default-src 'none'"), "{path}: {csp}");
                assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
                assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
                assert!(csp.contains("base-uri 'none'"), "{path}: {csp}");
                assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
                assert!(!csp.contains("unsafe-eval"), "{path}: {csp}");
                assert_eq!(head.header("X-Frame-Options"), Some("DENY"), "{path}");
                assert_eq!(
                    head.header("Referrer-Policy"),
                    Some("no-referrer"),
                    "{path}"
                );
            }
        }
    }
    html_routes.sort();
    assert_eq!(html_routes, vec!["/admin", "/portal"]);
    for (file, ct) in [
        ("ui.js", "text/javascript"),
        ("portal.js", "text/javascript"),
        ("admin.js", "text/javascript"),
        ("ui.css", "text/css"),
    ] {
        let (s, _, head) = send(agent().get(&w.url(&format!("/ui/{file}"))), None);
        assert_eq!(s, 200, "{file}");
        assert!(
            head.header("Content-Type").unwrap().starts_with(ct),
            "{file}"
        );
        assert_eq!(head.header("X-Content-Type-Options"), Some("nosniff"));
    }
    // An error that echoes the visitor's input is plain text, not HTML.
    let st = setup("hdr");
    let (s, body, head) = send(
        agent().get(&w.url(&format!(
            "/c/{}?to={}",
            st.slug,
            enc("https://<script>alert(1)</script>.evil.example/")
        ))),
        None,
    );
    assert_eq!(s, 400, "{body}");
    assert!(head.header("Location").is_none());
    assert!(head
        .header("Content-Type")
        .unwrap()
        .starts_with("text/plain"));
}

/// `javascript:`, `data:` and other non-http URLs are refused wherever a URL
/// is expected; HTML payloads in JSON answers stay plain data.
#[test]
fn script_urls_are_refused_where_a_url_is_expected() {
    let st = setup("urls");
    let bad = [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "java\tscript:alert(1)",
        "javascript://shop.example/%0aalert(1)",
        "data:text/html,<script>alert(1)</script>",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
        "//shop.example/x",
        "https://user:pass@shop.example/",
    ];
    for u in bad {
        let cases: Vec<(&str, String, u16, Value)> = {
            let mut v = Vec::new();
            let (s, b) = admin(
                "PUT",
                "/api/assets/urls-asset",
                json!({"program": st.program, "title": "t", "kind": "banner", "url": u}),
            );
            v.push(("asset url", "url".to_string(), s, b));
            let (s, b) = admin(
                "POST",
                "/api/links",
                json!({"partner": st.partner, "program": st.program, "destination": u}),
            );
            v.push(("admin link destination", "destination".into(), s, b));
            let (s, b) = call(
                "POST",
                "/partner/v1/links",
                Some(&st.key),
                Some(&json!({"program": st.program, "destination": u})),
            );
            v.push(("partner link destination", "destination".into(), s, b));
            let (s, b) = admin(
                "PUT",
                "/api/webhooks/urls-hook",
                json!({"url": u, "events": ["conversion.recorded"], "secret": WEBHOOK_SECRET}),
            );
            v.push(("webhook url", "url".into(), s, b));
            let (s, b) = call(
                "POST",
                "/partner/v1/apply",
                None,
                Some(
                    &json!({"program": st.program, "name": "N", "email": "n@example.com", "website": u}),
                ),
            );
            v.push(("apply website", "website".into(), s, b));
            let (s, b) = admin(
                "PUT",
                &format!("/api/partners/{}/crm", st.partner),
                json!({"website": u}),
            );
            v.push(("crm website", "website".into(), s, b));
            v
        };
        for (what, field, s, b) in cases {
            assert!(s == 400 || s == 422, "{what} {u:?} accepted: {s} {b}");
            if s == 422 {
                assert_eq!(b["error"]["field"], field.as_str(), "{what} {u:?}: {b}");
            }
        }
        // A deep link: 400 and no Location.
        let (s, body, head) = send(
            agent().get(&worker().url(&format!("/c/{}?to={}", st.slug, enc(u)))),
            None,
        );
        assert_eq!(s, 400, "deep link {u:?}: {body}");
        assert!(head.header("Location").is_none());
    }
    // MDF claim proof_url: an approved request first.
    let (s, b) = call(
        "POST",
        "/partner/v1/mdf",
        Some(&st.key),
        Some(
            &json!({"program": st.program, "activity": "Webinar", "amount": "10.00", "currency": "USD"}),
        ),
    );
    assert_eq!(s, 201, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    let (s, b) = admin(
        "POST",
        &format!("/api/mdf/{id}/decision"),
        json!({"decision": "approve", "reason": "ok"}),
    );
    assert_eq!(s, 200, "{b}");
    for u in [
        "javascript:alert(1)",
        "data:text/html,x",
        "file:///etc/passwd",
    ] {
        let (s, b) = call(
            "POST",
            &format!("/partner/v1/mdf/{id}/claim"),
            Some(&st.key),
            Some(&json!({"amount": "5.00", "proof_url": u})),
        );
        assert_eq!(s, 422, "claim proof_url {u:?}: {b}");
        assert_eq!(b["error"]["field"], "proof_url");
    }
    // The honest URLs pass (the checks above are not refusing everything).
    let (s, b) = call(
        "POST",
        &format!("/partner/v1/mdf/{id}/claim"),
        Some(&st.key),
        Some(&json!({"amount": "5.00", "proof_url": "https://shop.example/proof.pdf"})),
    );
    assert!(s == 200 || s == 201, "{b}");
    let (s, b) = admin(
        "PUT",
        "/api/assets/urls-asset",
        json!({"program": st.program, "title": "<img src=x onerror=alert(1)>", "kind": "banner",
               "url": "https://shop.example/a.png"}),
    );
    assert!(s == 200 || s == 201, "{b}");
    let (s, body, head) = send(
        agent()
            .get(&worker().url("/partner/v1/assets"))
            .set("Authorization", &format!("Bearer {}", st.key)),
        None,
    );
    assert_eq!(s, 200);
    assert!(head
        .header("Content-Type")
        .unwrap()
        .starts_with("application/json"));
    assert!(
        holds(&json_or_text(&body), "<img src=x onerror=alert(1)>"),
        "{body}"
    );
}

/// One raw HTTP/1.1 exchange: the status line and header lines exactly as
/// sent, and the body.
fn raw_get(target: &str) -> (String, Vec<u8>) {
    let w = worker();
    let mut s = TcpStream::connect(("127.0.0.1", w.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: {BROWSER}\r\nConnection: close\r\n\r\n",
        w.port
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let end = out
        .windows(4)
        .position(|x| x == b"\r\n\r\n")
        .unwrap_or(out.len());
    let head = out[..end].to_vec();
    let body = out[(end + 4).min(out.len())..].to_vec();
    // The head must be ASCII: a raw CR, LF or multi-byte character inside a
    // value would show here.
    assert!(head.is_ascii(), "non-ASCII head for {target}: {head:?}");
    (String::from_utf8(head).unwrap(), body)
}

/// Header lines (lower-cased name, value) of a raw head.
/// review21 H1: a `sub` macro in a destination's host passed the
/// allowed_hosts check (probed with empty subs) and let a visitor's
/// `?sub1=.evil.example` choose the redirect's host. Such a destination is
/// refused, by the partner API and the admin API alike.
#[test]
fn a_macro_in_the_destination_host_is_refused() {
    let st = setup("hostmacro");
    for d in [
        "https://shop.example{sub1}/landing",
        "https://{sub1}.example/",
        "https://{sub2}@shop.example/",
    ] {
        let (s, b) = call(
            "POST",
            "/partner/v1/links",
            Some(&st.key),
            Some(&json!({"program": st.program, "destination": d})),
        );
        assert_eq!(s, 422, "partner link {d}: {b}");
        assert_eq!(b["error"]["field"], "destination", "{b}");
        assert!(
            b["error"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("never in the scheme or host")),
            "{b}"
        );
        let (s, b) = admin(
            "POST",
            "/api/links",
            json!({"partner": st.partner, "program": st.program, "destination": d}),
        );
        assert_eq!(s, 422, "admin link {d}: {b}");
        assert_eq!(b["error"]["field"], "destination", "{b}");
    }
    // a sub value in the query stays a value of its parameter
    let (head, _) = raw_get(&format!("/c/{}?sub1=.evil.example%2F", st.slug));
    let lines = header_lines(&head);
    let location = &lines.iter().find(|(k, _)| k == "location").unwrap().1;
    assert!(
        location.starts_with("https://shop.example/p?ref=")
            && location.contains("&a=.evil.example%2F&"),
        "{location}"
    );
}

fn header_lines(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .map(|l| {
            assert!(!l.contains('\r') && !l.contains('\n'), "{l:?}");
            let (k, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (k.to_ascii_lowercase(), v.trim().to_string())
        })
        .collect()
}

/// CR/LF, raw, percent-encoded and as unicode line separators, through the
/// sub macros and deep links: the `Location` stays one line, no header is
/// added, and `Set-Cookie` is only the click cookie.
#[test]
fn crlf_never_splits_the_click_response() {
    let st = setup("crlf");
    let injections = [
        "%0d%0aX-Injected:%20yes",
        "%0D%0ASet-Cookie:%20evil=1",
        "%0d%0a%0d%0a<script>alert(1)</script>",
        "%E2%80%A8X-Injected:%20yes",
        "%E2%80%A9X-Injected:%20yes",
        "%C2%85X-Injected:%20yes",
        "%25%30%64%25%30%61X-Injected:%20yes",
        "%0aX-Injected:yes%0d",
        "%E5%98%8A%E5%98%8DX-Injected:%20yes",
    ];
    let mut checked = 0;
    for inj in injections {
        let subs: String = (1..=5).map(|n| format!("&sub{n}={inj}")).collect();
        for target in [
            format!("/c/{}?x=1{subs}", st.slug),
            format!("/c/{}?to=https://shop.example/a{inj}", st.slug),
            format!("/c/{}?to=https://shop.example/?q={inj}", st.slug),
            format!("/c/{}?to=https://shop.example{inj}/", st.slug),
        ] {
            let (head, _) = raw_get(&target);
            let status: u16 = head[9..12].parse().unwrap();
            assert!(status == 302 || status == 400, "{target}: {head}");
            let lines = header_lines(&head);
            assert!(
                !lines.iter().any(|(k, _)| k == "x-injected"),
                "{target}: {head}"
            );
            let cookies: Vec<&String> = lines
                .iter()
                .filter(|(k, _)| k == "set-cookie")
                .map(|(_, v)| v)
                .collect();
            let locations: Vec<&String> = lines
                .iter()
                .filter(|(k, _)| k == "location")
                .map(|(_, v)| v)
                .collect();
            if status == 400 {
                assert!(locations.is_empty() && cookies.is_empty(), "{head}");
                continue;
            }
            checked += 1;
            assert_eq!(locations.len(), 1, "{head}");
            assert_eq!(cookies.len(), 1, "{head}");
            let loc = locations[0];
            assert!(loc.starts_with("https://shop.example/"), "{loc}");
            assert!(!loc.contains(' ') && !loc.contains('<'), "{loc}");
            let url = url::Url::parse(loc).unwrap();
            assert_eq!(url.host_str(), Some("shop.example"));
            // The cookie is the click id and the documented attributes only.
            let parts: Vec<&str> = cookies[0].split("; ").collect();
            assert!(parts[0].starts_with("pt_click="), "{}", cookies[0]);
            assert!(edge::ids::is_valid_id(&parts[0]["pt_click=".len()..]));
            assert_eq!(
                &parts[1..],
                &[
                    "Max-Age=2592000",
                    "Path=/",
                    "Secure",
                    "HttpOnly",
                    "SameSite=Lax"
                ]
            );
            // The decoded sub value comes back in its macro, encoded.
            if target.contains("sub1=") {
                let a = url.query_pairs().find(|(k, _)| k == "a").unwrap().1;
                let want: String = url::form_urlencoded::parse(format!("v={inj}").as_bytes())
                    .next()
                    .unwrap()
                    .1
                    .into_owned();
                assert_eq!(a, want, "{loc}");
            }
        }
    }
    assert!(
        checked >= injections.len(),
        "only {checked} redirects checked"
    );
    // A raw CR or LF in the request line never gets through (the server
    // refuses the request or takes the line as ended).
    let w = worker();
    let mut s = TcpStream::connect(("127.0.0.1", w.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /c/{}?sub1=a\rX-Injected: yes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        st.slug
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(!text.contains("x-injected"), "{text}");
    // A destination template with a line separator or spaces is refused or
    // redirects to an encoded, single-line Location.
    for dest in [
        "https://shop.example/a\u{2028}b?ref={click_id}",
        "https://shop.example/a b?ref={click_id}",
        "https://shop.example/\u{e9}t\u{e9}?ref={click_id}",
    ] {
        let (s, b) = admin(
            "POST",
            "/api/links",
            json!({"partner": st.partner, "program": st.program, "destination": dest}),
        );
        assert!(s == 201 || s == 422, "{dest:?}: {s} {b}");
        if s == 201 {
            let slug = b["slug"].as_str().unwrap();
            let (head, _) = raw_get(&format!("/c/{slug}"));
            assert!(head.starts_with("HTTP/1.1 302"), "{dest:?}: {head}");
            let lines = header_lines(&head);
            let loc = &lines.iter().find(|(k, _)| k == "location").unwrap().1;
            assert!(!loc.contains(' '), "{dest:?}: {loc}");
            url::Url::parse(loc).unwrap();
        }
    }
}

/// Requests carrying every secret, valid and not, with answers from 200 to
/// 422: none of the secrets appears in the worker's log, the export or the
/// rejections log.
#[test]
fn secrets_are_never_logged_exported_or_kept() {
    let st = setup("leak");
    let w = worker();
    let bad_admin = "wrong-admin-token-7c1f0e9d8b";
    let bad_export = "wrong-export-token-2a3b4c5d6e";
    let bad_postback = "wrong-postback-token-9f8e7d6c";
    let bad_key = "pk_wrongpartnerkey0123456789abcdef";
    let bad_hmac = "wrong-hmac-secret-00112233445566";
    // Operator requests, good and bad, some failing validation.
    let (s, _) = admin(
        "PUT",
        "/api/webhooks/leak-hook",
        json!({"url": "https://hooks.example/in", "events": ["conversion.recorded"], "secret": WEBHOOK_SECRET}),
    );
    assert!(s == 200 || s == 201, "{s}");
    let (s, _) = admin("PUT", "/api/programs/leak-prog", json!({"cookie_days": -1}));
    assert_eq!(s, 422);
    let (s, _) = call("GET", "/api/partners", Some(bad_admin), None);
    assert_eq!(s, 401);
    let (s, _) = call("GET", "/api/partners", Some(EXPORT_TOKEN), None);
    assert_eq!(s, 401);
    let (s, _) = call("GET", "/export/v1/events", Some(bad_export), None);
    assert_eq!(s, 401);
    let (s, _) = call("GET", "/export/v1/events", Some(ADMIN_TOKEN), None);
    assert_eq!(s, 401);
    let (s, _) = get("/export/v1/events?after=-1", EXPORT_TOKEN);
    assert_eq!(s, 400);
    // Partner keys.
    let (s, _) = get("/partner/v1/me", &st.key);
    assert_eq!(s, 200);
    let (s, _) = get("/partner/v1/me", bad_key);
    assert_eq!(s, 401);
    let (s, _) = get("/partner/v1/stats?from=nope", &st.key);
    assert_eq!(s, 422);
    let (s, _) = call(
        "POST",
        "/partner/v1/deals",
        Some(&st.key),
        Some(&json!({"program": st.program, "customer": "\u{0}"})),
    );
    assert_eq!(s, 422);
    // Postbacks: the token in the query, the body and the header, valid and
    // not, recorded, refused and rejected (422 goes to the rejections log).
    let p = &st.program;
    for (q, want) in [
        (
            format!("program={p}&event=lead&txn_id=LK-1&token={TOKEN}"),
            200,
        ),
        (
            format!("program={p}&event=nope&txn_id=LK-2&token={TOKEN}"),
            422,
        ),
        (
            format!("program={p}&event=sale&txn_id=LK-3&amount=NaN&currency=USD&token={TOKEN}"),
            422,
        ),
        (
            format!("program={p}&event=lead&txn_id=LK-4&token={bad_postback}"),
            401,
        ),
        (
            format!("program=no-such&event=lead&txn_id=LK-5&token={TOKEN}"),
            422,
        ),
    ] {
        let (s, b) = call("GET", &format!("/postback?{q}"), None, None);
        assert_eq!(s, want, "{q}: {b}");
    }
    for (body, want) in [
        (
            json!({"program": p, "event": "signup", "txn_id": "LK-6", "token": TOKEN}),
            200,
        ),
        (
            json!({"program": p, "event": "nope", "txn_id": "LK-7", "token": TOKEN}),
            422,
        ),
        (
            json!({"program": p, "event": "lead", "txn_id": "LK-8", "click_id": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "token": TOKEN}),
            422,
        ),
    ] {
        let (s, b) = call("POST", "/postback", None, Some(&body));
        assert_eq!(s, want, "{body}: {b}");
    }
    let (s, b, _) = send(
        agent()
            .post(&w.url("/postback"))
            .set("Content-Type", "application/x-www-form-urlencoded"),
        Some(&format!(
            "program={p}&event=sale&txn_id=LK-9&amount=1e5&currency=USD&token={TOKEN}"
        )),
    );
    assert_eq!(s, 422, "{b}");
    let (s, _) = postback_json(&json!({"program": p, "event": "nope", "txn_id": "LK-10"}));
    assert_eq!(s, 422);
    // HMAC-signed: good, wrong secret, and a valid signature on a bad body.
    let t = now_s();
    for (secret, body, want) in [
        (
            HMAC,
            json!({"program": p, "event": "lead", "txn_id": "LK-11"}),
            200,
        ),
        (
            bad_hmac,
            json!({"program": p, "event": "lead", "txn_id": "LK-12"}),
            401,
        ),
        (
            HMAC,
            json!({"program": p, "event": "nope", "txn_id": "LK-13"}),
            422,
        ),
    ] {
        let body = body.to_string();
        let (s, b, _) = send(
            agent()
                .post(&w.url("/postback"))
                .set("Content-Type", "application/json")
                .set(
                    "X-Signature",
                    &format!("t={t},v1={}", sign(secret, t, body.as_bytes())),
                ),
            Some(&body),
        );
        assert_eq!(s, want, "{body}: {b}");
    }
    // The pixel with a forged cookie (logged as a rejection).
    let (s, _, _) = send(
        agent()
            .get(&w.url(&format!("/pixel?program={p}&event=lead&txn_id=LK-14")))
            .set(
                "Cookie",
                "pt_click=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ),
        None,
    );
    assert_eq!(s, 200);

    let secrets = [
        ADMIN_TOKEN,
        EXPORT_TOKEN,
        TOKEN,
        HMAC,
        WEBHOOK_SECRET,
        st.key.as_str(),
        e2e::harness::CLICK_SECRET,
        e2e::harness::CLICK_SECRET_PREVIOUS,
        e2e::harness::VISITOR_SALT,
        e2e::harness::EMAIL_SALT,
        bad_admin,
        bad_export,
        bad_postback,
        bad_key,
        bad_hmac,
    ];
    // The rejections really were logged (so the check below means something).
    let (s, rej) = admin("GET", "/api/rejections?limit=1000", json!(null));
    assert_eq!(s, 200);
    let rows = rej["rejections"].as_array().unwrap();
    for txn in ["LK-2", "LK-3", "LK-7", "LK-8", "LK-9", "LK-13", "LK-14"] {
        assert!(
            rows.iter()
                .any(|r| r["raw"].as_str().unwrap_or("").contains(txn)),
            "{txn} not in the rejections log"
        );
    }
    let rejections = rej.to_string();
    let export = format!(
        "{}\n{}\n{}",
        export_text("/export/v1/events?after=0&limit=5000"),
        export_text("/export/v1/partners"),
        export_text("/export/v1/coupons")
    );
    assert!(export.contains("LK-11") && export.contains("LK-6"));
    let log = w.log_text();
    for secret in secrets {
        assert!(!log.contains(secret), "{secret} in the worker log");
        assert!(!export.contains(secret), "{secret} in the export");
        assert!(
            !rejections.contains(secret),
            "{secret} in the rejections log"
        );
        let encoded = enc(secret);
        assert!(
            !rejections.contains(&encoded),
            "{secret} in the rejections log"
        );
    }
}

/// A signed postback replayed: inside the 300 s window it is the same
/// record (a duplicate), outside it (either side) it is 401 and never
/// recorded.
#[test]
fn signed_postback_replays() {
    let st = setup("replay");
    let w = worker();
    let signed = |t: i64, body: &str| {
        let (s, b, _) = send(
            agent()
                .post(&w.url("/postback"))
                .set("Content-Type", "application/json")
                .set(
                    "X-Signature",
                    &format!("t={t},v1={}", sign(HMAC, t, body.as_bytes())),
                ),
            Some(body),
        );
        (s, json_or_text(&b))
    };
    let now = now_s();
    let body = json!({"program": st.program, "event": "sale", "txn_id": "RP-1",
                      "amount": "10.00", "currency": "USD"})
    .to_string();
    let (s, first) = signed(now, &body);
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["status"], "recorded");
    // The same signed request again, byte for byte: a duplicate.
    let (s, again) = signed(now, &body);
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["id"], first["id"]);
    // Re-signed later inside the window: still the same record.
    let (s, later) = signed(now - 200, &body);
    assert_eq!(s, 200, "{later}");
    assert_eq!(later["status"], "duplicate");
    assert_eq!(later["id"], first["id"]);
    // Outside the window, past and future, with a new txn: refused. The
    // clock is read again for each: seconds pass between requests on a busy
    // machine, and the worker's clock only moves on (a future timestamp
    // 301 s ahead of a clock read a second earlier is inside the window).
    for (ahead, txn) in [(-301, "RP-2"), (330, "RP-3"), (-86_400, "RP-4")] {
        let t = now_s() + ahead;
        let body = json!({"program": st.program, "event": "sale", "txn_id": txn,
                          "amount": "10.00", "currency": "USD"})
        .to_string();
        let (s, b) = signed(t, &body);
        assert_eq!(s, 401, "t={t}: {b}");
    }
    // The old signature of RP-1 (a captured request) outside the window.
    let (s, b) = signed(now - 400, &body);
    assert_eq!(s, 401, "{b}");
    // Garbled timestamps.
    for sig in [
        "t=,v1=00",
        "t=abc,v1=00",
        "v1=00",
        "t=99999999999999999999,v1=00",
    ] {
        let (s, b, _) = send(
            agent()
                .post(&w.url("/postback"))
                .set("Content-Type", "application/json")
                .set("X-Signature", sig),
            Some(&body),
        );
        assert_eq!(s, 401, "{sig}: {b}");
    }
    let evs = events();
    let mine: Vec<&Value> = evs
        .iter()
        .filter(|e| e["program"] == st.program.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["txn_id"], "RP-1");
    assert_eq!(mine[0]["id"], first["id"]);
}

/// review21 H2: an anonymous pixel hit with an order's txn_id (and a
/// made-up amount) took the key the merchant's authenticated postback
/// needed, which then answered 409 and was never recorded; the pixel also
/// recorded chargebacks of anyone's order. The pixel's records now have a
/// key space of their own, and it never brings a reversal or net revenue.
#[test]
fn an_anonymous_pixel_never_blocks_the_authenticated_postback() {
    let st = setup("pixelkey");
    let w = worker();
    let p = &st.program;
    let pixel = |q: &str| {
        let (s, b, _) = send(
            agent().get(&w.url(&format!("/pixel?program={p}&{q}"))),
            None,
        );
        (s, json_or_text(&b))
    };
    let (s, b) = pixel("event=sale&txn_id=PK-1&amount=0.01&currency=USD");
    assert_eq!(s, 200, "{b}");
    let (s, b) = postback_json(&json!({"program": p, "event": "sale", "txn_id": "PK-1",
        "amount": "250.00", "currency": "USD", "customer": "c1"}));
    assert_eq!((s, &b["status"]), (200, &json!("recorded")), "{b}");
    // the same pixel again is the pixel's duplicate, not a new record
    let (s, _) = pixel("event=sale&txn_id=PK-1&amount=0.01&currency=USD");
    assert_eq!(s, 200);
    // the pixel of an order the postback recorded first adds nothing
    // (review23 F4: a second record, delivered and counted again)
    let (s, b) = postback_json(&json!({"program": p, "event": "sale", "txn_id": "PK-2",
        "amount": "90.00", "currency": "USD", "customer": "c2"}));
    assert_eq!((s, &b["status"]), (200, &json!("recorded")), "{b}");
    let (s, _) = pixel("event=sale&txn_id=PK-2&amount=90.00&currency=USD");
    assert_eq!(s, 200);
    for q in [
        "event=chargeback&txn_id=PK-CB&original_txn_id=PK-1",
        "event=refund&txn_id=PK-RF&original_txn_id=PK-1",
        "event=revenue&txn_id=PK-NR&amount=-40.00&currency=USD",
    ] {
        let (s, b) = pixel(q);
        assert_eq!(s, 422, "{q}: {b}");
        assert_eq!(b["error"]["field"], "event", "{q}: {b}");
    }
    let all = events_until("the pixel's and the postback's sale", |all| {
        all.iter()
            .filter(|e| e["program"] == p.as_str() && e["txn_id"] == "PK-1")
            .count()
            >= 2
    });
    let mine: Vec<&Value> = all.iter().filter(|e| e["program"] == p.as_str()).collect();
    let pk2: Vec<&Value> = mine
        .iter()
        .filter(|e| e["txn_id"] == "PK-2")
        .map(|e| &e["source"])
        .collect();
    assert_eq!(pk2, [&json!("postback")], "{mine:?}");
    let sales: Vec<(&Value, &Value)> = mine
        .iter()
        .filter(|e| e["txn_id"] == "PK-1")
        .map(|e| (&e["source"], &e["amount"]))
        .collect();
    assert_eq!(
        sales,
        [
            (&json!("pixel"), &json!("0.01")),
            (&json!("postback"), &json!("250.00"))
        ],
        "{mine:?}"
    );
    assert!(
        !mine.iter().any(|e| e["txn_id"]
            .as_str()
            .is_some_and(|t| t.starts_with("PK-") && t != "PK-1" && t != "PK-2")),
        "{mine:?}"
    );
}

/// review21 H3: an HMAC-signed POST signs its body only, yet fields of its
/// query string were merged in and recorded (a customer, a coupon and so
/// the partner evidence). A signed POST with such a field is refused and
/// records nothing; `program` in the query (which chose the secret the
/// signature verified with) is still taken.
#[test]
fn a_signed_post_takes_no_unsigned_query_field() {
    let st = setup("signedq");
    let w = worker();
    let signed = |path: &str, body: &str| {
        let t = now_s();
        let (s, b, _) = send(
            agent()
                .post(&w.url(path))
                .set("Content-Type", "application/json")
                .set(
                    "X-Signature",
                    &format!("t={t},v1={}", sign(HMAC, t, body.as_bytes())),
                ),
            Some(body),
        );
        (s, json_or_text(&b))
    };
    let body = json!({"program": st.program, "event": "sale", "txn_id": "SQ-1",
                      "amount": "10.00", "currency": "USD"})
    .to_string();
    let (s, b) = signed("/postback?customer=attacker&coupon=EVIL", &body);
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"]["field"], "customer", "{b}");
    assert!(
        b["error"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("signature does not cover")),
        "{b}"
    );
    // the same body signed, without the query: recorded, with no customer
    let (s, b) = signed("/postback", &body);
    assert_eq!((s, &b["status"]), (200, &json!("recorded")), "{b}");
    // program in the query of a signed body without it
    let body2 =
        json!({"event": "sale", "txn_id": "SQ-2", "amount": "5.00", "currency": "USD"}).to_string();
    let (s, b) = signed(&format!("/postback?program={}", st.program), &body2);
    assert_eq!((s, &b["status"]), (200, &json!("recorded")), "{b}");
    let all = events_until("the signed sales", |all| {
        all.iter()
            .filter(|e| e["program"] == st.program.as_str() && e["type"] == "conversion")
            .count()
            >= 2
    });
    let sales: Vec<&Value> = all
        .iter()
        .filter(|e| e["program"] == st.program.as_str() && e["type"] == "conversion")
        .collect();
    assert_eq!(sales.len(), 2, "{sales:?}");
    assert!(
        sales
            .iter()
            .all(|e| e["customer"].is_null() && e["coupon"].is_null()),
        "{sales:?}"
    );
}
