//! SPEC section 3, row by row, against the real worker in workerd.

use e2e::harness::{agent, now_s, send, wait_for, Worker, ADMIN_TOKEN, EXPORT_TOKEN};
use edge::auth::sign;
use serde_json::{json, Value};
use std::sync::OnceLock;

fn admin(method: &str, path: &str, body: Value) -> (u16, Value) {
    worker().admin(method, path, body)
}

fn export_all() -> Vec<Value> {
    worker().export_all()
}

fn worker() -> &'static Worker {
    static W: OnceLock<Worker> = OnceLock::new();
    W.get_or_init(Worker::start)
}

const TOKEN: &str = "postback-token-0123456789";
const HMAC: &str = "hmac-secret-0123456789abcdef";

/// A program with one approved partner and one link; ids are prefixed so
/// that tests sharing the worker never collide.
fn setup(prefix: &str) -> (String, String, String) {
    let program = format!("{prefix}-prog");
    let partner = format!("{prefix}-aff");
    let (s, b) = admin(
        "PUT",
        &format!("/api/programs/{program}"),
        json!({"cookie_days": 60, "postback_tokens": [TOKEN], "hmac_secrets": [HMAC],
               "allowed_hosts": ["shop.example"], "pixel": true}),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = admin(
        "PUT",
        &format!("/api/partners/{partner}"),
        json!({"program": program, "name": "Ann", "email": "ann@example.com", "status": "approved", "currency": "USD"}),
    );
    assert!(s == 201 || s == 200, "{b}");
    let (s, b) = admin(
        "POST",
        "/api/links",
        json!({"partner": partner, "program": program, "destination": "https://shop.example/?ref={click_id}&s={sub1}"}),
    );
    assert_eq!(s, 201, "{b}");
    let slug = b["slug"].as_str().unwrap().to_string();
    assert!(b["url"].as_str().unwrap().ends_with(&format!("/c/{slug}")));
    (program, partner, slug)
}

fn click(slug: &str, query: &str, ua: &str) -> (u16, ureq::Response) {
    let w = worker();
    let (status, _, head) = send(
        agent()
            .get(&w.url(&format!("/c/{slug}{query}")))
            .set("User-Agent", ua),
        None,
    );
    (status, head)
}

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

fn click_id_of(head: &ureq::Response) -> String {
    let loc = head.header("Location").unwrap();
    let url = url::Url::parse(loc).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == "ref")
        .unwrap()
        .1
        .into_owned()
}

fn postback_json(body: &Value) -> (u16, Value) {
    let w = worker();
    let req = agent()
        .post(&w.url("/postback"))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .set("Content-Type", "application/json");
    let (s, text, _) = send(req, Some(&body.to_string()));
    (
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Waits until `pred` holds over the export (clicks are written in batches).
fn export_until(what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    wait_for(what, 30, || Some(export_all()).filter(|all| pred(all)))
}

#[test]
fn click_redirects_with_cookie_and_is_recorded() {
    let (program, partner, slug) = setup("click");
    let (s, head) = click(&slug, "?sub1=news%20letter&sub2=x", BROWSER);
    assert_eq!(s, 302);
    let loc = head.header("Location").unwrap().to_string();
    assert!(loc.starts_with("https://shop.example/?ref="), "{loc}");
    assert!(loc.ends_with("&s=news%20letter"), "{loc}");
    let cid = click_id_of(&head);
    assert!(cid.len() <= 64);
    assert_eq!(
        head.header("Set-Cookie").unwrap(),
        format!(
            "pt_click={cid}; Max-Age={}; Path=/; Secure; HttpOnly; SameSite=Lax",
            60 * 86400
        )
    );
    assert_eq!(head.header("Cache-Control"), Some("no-store"));

    let all = export_until("the click", |all| {
        all.iter().any(|e| e["click_id"] == cid.as_str())
    });
    let e = all.iter().find(|e| e["click_id"] == cid.as_str()).unwrap();
    assert_eq!(e["type"], "click");
    assert_eq!(e["program"], program.as_str());
    assert_eq!(e["partner"], partner.as_str());
    assert_eq!(e["link"], slug.as_str());
    assert_eq!(e["bot"], false);
    assert_eq!(e["unique"], true);
    assert_eq!(e["sub"], json!(["news letter", "x", null, null, null]));
    assert!(!e.to_string().contains("127.0.0.1"), "raw IP stored: {e}");

    // Same visitor, same link, within the hour: not unique.
    let (_, head2) = click(&slug, "", BROWSER);
    let cid2 = click_id_of(&head2);
    let all = export_until("the second click", |all| {
        all.iter().any(|e| e["click_id"] == cid2.as_str())
    });
    let e2 = all.iter().find(|e| e["click_id"] == cid2.as_str()).unwrap();
    assert_eq!(e2["unique"], false);
    assert!(e2["seq"].as_u64() > e["seq"].as_u64());
}

#[test]
fn clicks_carry_the_fraud_signals() {
    let (_, _, slug) = setup("signals");
    let w = worker();
    let (s, _, head) = send(
        agent()
            .get(&w.url(&format!("/c/{slug}")))
            .set("User-Agent", BROWSER)
            .set("Referer", "https://blog.example/posts/1?utm=x")
            .set("CF-IPCountry", "DE"),
        None,
    );
    assert_eq!(s, 302);
    let with = click_id_of(&head);
    let (_, head) = click(&slug, "", BROWSER);
    let without = click_id_of(&head);
    let all = export_until("both clicks", |all| {
        [&with, &without]
            .iter()
            .all(|c| all.iter().any(|e| e["click_id"] == c.as_str()))
    });
    let find = |c: &str| all.iter().find(|e| e["click_id"] == c).unwrap().clone();
    let a = find(&with);
    assert_eq!(a["has_referrer"], true, "{a}");
    assert_eq!(a["referrer_host"], "blog.example", "{a}");
    let b = find(&without);
    assert_eq!(b["has_referrer"], false, "{b}");
    assert!(b.get("referrer_host").is_none(), "{b}");
    for e in [&a, &b] {
        // The visitor hash is salted: the same client gives the same hash,
        // and no raw address is stored.
        assert_eq!(e["visitor"], a["visitor"]);
        assert!(e["visitor"].as_str().unwrap().len() >= 16, "{e}");
        // request.cf.asn is there in workerd; the hosting flag follows it.
        if let Some(asn) = e.get("asn").and_then(Value::as_u64) {
            assert!(e["datacenter"].is_boolean(), "{e}");
            assert!(asn > 0);
        } else {
            assert!(e.get("datacenter").is_none(), "{e}");
        }
    }
}

#[test]
fn destination_without_macro_gets_click_id_appended_and_deep_links_are_checked() {
    let (program, partner, _) = setup("deep");
    let (s, b) = admin(
        "POST",
        "/api/links",
        json!({"partner": partner, "program": program, "destination": "https://shop.example/landing?x=1", "slug": "deep-plain"}),
    );
    assert_eq!(s, 201, "{b}");
    let (s, head) = click("deep-plain", "", BROWSER);
    assert_eq!(s, 302);
    let loc = head.header("Location").unwrap();
    assert!(
        loc.starts_with("https://shop.example/landing?x=1&click_id="),
        "{loc}"
    );

    let (s, head) = click(
        "deep-plain",
        "?to=https%3A%2F%2Fshop.example%2Fitem%2F7",
        BROWSER,
    );
    assert_eq!(s, 302);
    assert!(head
        .header("Location")
        .unwrap()
        .starts_with("https://shop.example/item/7?click_id="));

    for evil in [
        "https%3A%2F%2Fevil.example%2F",
        "https%3A%2F%2Fshop.example%40evil.example%2F",
        "javascript%3Aalert(1)",
        "%2F%2Fevil.example",
    ] {
        let (s, head) = click("deep-plain", &format!("?to={evil}"), BROWSER);
        assert_eq!(s, 400, "open redirect via {evil}");
        assert!(head.header("Location").is_none());
    }
    // A slug taken twice is a conflict.
    let (s, _) = admin(
        "POST",
        "/api/links",
        json!({"partner": partner, "program": program, "destination": "https://shop.example/", "slug": "deep-plain"}),
    );
    assert_eq!(s, 409);
}

#[test]
fn unknown_and_paused_slugs_are_404_and_bots_are_flagged() {
    let (program, partner, slug) = setup("bots");
    let (s, _) = click("no-such-slug", "", BROWSER);
    assert_eq!(s, 404);

    let w = worker();
    let (s, _, head) = send(
        agent()
            .head(&w.url(&format!("/c/{slug}")))
            .set("User-Agent", BROWSER),
        None,
    );
    assert_eq!(s, 302);
    let head_cid = click_id_of(&head);
    let (_, gb) = click(
        &slug,
        "",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    );
    let gb_cid = click_id_of(&gb);
    let (_, prev) = click(
        &slug,
        "",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    );
    let prev_cid = click_id_of(&prev);
    let (_, _, pf) = send(
        agent()
            .get(&w.url(&format!("/c/{slug}")))
            .set("User-Agent", BROWSER)
            .set("Sec-Purpose", "prefetch"),
        None,
    );
    let pf_cid = click_id_of(&pf);
    let want = [
        (head_cid, "head"),
        (gb_cid, "crawler"),
        (prev_cid, "preview"),
        (pf_cid, "prefetch"),
    ];
    let all = export_until("bot clicks", |all| {
        want.iter()
            .all(|(c, _)| all.iter().any(|e| e["click_id"] == c.as_str()))
    });
    for (cid, reason) in &want {
        let e = all.iter().find(|e| e["click_id"] == cid.as_str()).unwrap();
        assert_eq!(e["bot"], true, "{reason}");
        assert_eq!(e["bot_reason"], *reason);
        assert_eq!(e["unique"], false);
    }

    // Pausing the link makes it 404.
    let (s, b) = admin(
        "PUT",
        &format!("/api/links/{slug}"),
        json!({"partner": partner, "program": program, "destination": "https://shop.example/", "status": "paused"}),
    );
    assert_eq!(s, 200, "{b}");
    let (s, _) = click(&slug, "", BROWSER);
    assert_eq!(s, 404);
}

#[test]
fn postback_recorded_duplicate_conflict_and_attribution() {
    let (program, partner, slug) = setup("pb");
    let (_, head) = click(&slug, "", BROWSER);
    let cid = click_id_of(&head);
    let body = json!({"program": program, "event": "sale", "txn_id": "T-1", "click_id": cid,
                      "amount": "120.00", "currency": "USD", "customer": "cust-1", "email": "Buyer@Example.com"});
    let (s, b) = postback_json(&body);
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "recorded");
    let id = b["id"].as_str().unwrap().to_string();
    let (s, b) = postback_json(&body);
    assert_eq!((s, b["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(b["id"], id.as_str());
    // 120 and 120.00 are the same amount: still a duplicate.
    let mut same = body.clone();
    same["amount"] = json!("120");
    assert_eq!(postback_json(&same).1["status"], "duplicate");
    let mut changed = body.clone();
    changed["amount"] = json!("99.00");
    let (s, b) = postback_json(&changed);
    assert_eq!((s, b["status"].as_str()), (409, Some("conflict")));
    assert_eq!(b["id"], id.as_str());

    let all = export_until("the sale", |all| all.iter().any(|e| e["id"] == id.as_str()));
    let e = all.iter().find(|e| e["id"] == id.as_str()).unwrap();
    assert_eq!(e["type"], "conversion");
    assert_eq!(e["partner"], partner.as_str());
    assert_eq!(e["link"], slug.as_str());
    assert_eq!(e["amount"], "120.00");
    assert_eq!(e["currency"], "USD");
    assert_eq!(e["source"], "postback");
    assert!(e["click_ts"].is_string());
    assert_eq!(e["email_hash"].as_str().unwrap().len(), 64);
    assert!(!e.to_string().contains("Buyer@"), "raw email stored");
    assert_eq!(
        all.iter()
            .filter(|e| e["txn_id"] == "T-1" && e["program"] == program.as_str())
            .count(),
        1
    );
}

#[test]
fn postback_get_form_and_hmac() {
    let (program, _, _) = setup("auth");
    let w = worker();
    // GET with a token in the query, the way networks send.
    let (s, b, _) = send(
        agent().get(&w.url(&format!(
            "/postback?program={program}&event=lead&txn_id=L-1&token={TOKEN}"
        ))),
        None,
    );
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("recorded"));
    // Form body.
    let (s, b, _) = send(
        agent()
            .post(&w.url("/postback"))
            .set("Content-Type", "application/x-www-form-urlencoded"),
        Some(&format!(
            "program={program}&event=signup&txn_id=S-1&token={TOKEN}"
        )),
    );
    assert_eq!(s, 200, "{b}");
    // HMAC signature, several v1 during rotation.
    let body = json!({"program": program, "event": "lead", "txn_id": "H-1"}).to_string();
    let now = now_s();
    let sig = format!(
        "t={now},v1={},v1={}",
        sign("some-retired-secret-000", now, body.as_bytes()),
        sign(HMAC, now, body.as_bytes())
    );
    let signed = |sig: &str, body: &str| {
        send(
            agent()
                .post(&w.url("/postback"))
                .set("Content-Type", "application/json")
                .set("X-Signature", sig),
            Some(body),
        )
    };
    let (s, b, _) = signed(&sig, &body);
    assert_eq!(s, 200, "{b}");
    // Tampered body, replay outside the window, wrong secret, no credentials: 401.
    let tampered = body.replace("H-1", "H-2");
    assert_eq!(signed(&sig, &tampered).0, 401);
    let old = now - 301;
    let stale = format!("t={old},v1={}", sign(HMAC, old, body.as_bytes()));
    assert_eq!(signed(&stale, &body).0, 401);
    let wrong = format!(
        "t={now},v1={}",
        sign("not-the-secret-0000000", now, body.as_bytes())
    );
    assert_eq!(signed(&wrong, &body).0, 401);
    let (s, _, _) = send(
        agent()
            .post(&w.url("/postback"))
            .set("Content-Type", "application/json"),
        Some(&json!({"program": program, "event": "lead", "txn_id": "N-1"}).to_string()),
    );
    assert_eq!(s, 401);
    let (s, _, _) = send(
        agent().get(&w.url(&format!(
            "/postback?program={program}&event=lead&txn_id=N-2&token=wrong-token-000000"
        ))),
        None,
    );
    assert_eq!(s, 401);
    // Nothing unauthenticated was recorded.
    let all = export_all();
    assert!(!all
        .iter()
        .any(|e| e["txn_id"] == "N-1" || e["txn_id"] == "N-2" || e["txn_id"] == "H-2"));
}

#[test]
fn postback_errors_are_422_413_and_logged() {
    let (program, _, _) = setup("err");
    let w = worker();
    let (s, b) =
        postback_json(&json!({"program": "no-such-program", "event": "sale", "txn_id": "X"}));
    assert_eq!(s, 422);
    assert_eq!(b["error"]["field"], "program");

    let cases = [
        (
            json!({"event": "sale", "txn_id": "E1", "amount": "NaN", "currency": "USD"}),
            "amount",
        ),
        (
            json!({"event": "sale", "txn_id": "E2", "amount": "9".repeat(1000), "currency": "USD"}),
            "amount",
        ),
        (
            json!({"event": "sale", "txn_id": "E3", "amount": "-5.00", "currency": "USD"}),
            "amount",
        ),
        (
            json!({"event": "sale", "txn_id": "E4", "amount": "5.00", "currency": "XXY"}),
            "currency",
        ),
        (
            json!({"event": "sale", "txn_id": "E5", "amount": 5.0, "currency": "USD"}),
            "amount",
        ),
        (json!({"event": "nope", "txn_id": "E6"}), "event"),
        (
            json!({"event": "lead", "txn_id": "E7", "click_id": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
            "click_id",
        ),
    ];
    for (mut body, field) in cases {
        body["program"] = json!(program);
        let (s, b) = postback_json(&body);
        assert_eq!(s, 422, "{body}");
        assert_eq!(b["error"]["field"], field, "{body}: {b}");
        assert!(b["error"]["reason"].is_string());
    }
    // A tampered click id: 422, and the rejection log keeps the raw request.
    let (_, _, head) = send(agent().get(&w.url("/c/none")), None);
    drop(head);
    let (_, _, slug) = setup("err2");
    let (_, head) = click(&slug, "", BROWSER);
    let cid = click_id_of(&head);
    let mut bytes = cid.into_bytes();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(bytes).unwrap();
    let (s, b) = postback_json(
        &json!({"program": program, "event": "lead", "txn_id": "F1", "click_id": forged}),
    );
    assert_eq!(s, 422);
    assert_eq!(b["error"]["field"], "click_id");
    // review22 F3: a refused request keeps no email (an erasure finds a
    // guest by its hash, which no raw body holds)
    let (s, _) = postback_json(&json!({"program": program, "event": "lead", "txn_id": "F2",
        "click_id": forged, "email": "guest.pii@example.com"}));
    assert_eq!(s, 422);
    // the same JSON-number body without a credential: 422, never logged
    let (s, _, _) = send(
        agent()
            .post(&w.url("/postback"))
            .set("Content-Type", "application/json"),
        Some(
            &json!({"program": program, "event": "sale", "txn_id": "E5-anon", "amount": 5.0, "currency": "USD"})
                .to_string(),
        ),
    );
    assert_eq!(s, 422);

    let (s, b, _) = send(
        agent()
            .get(&w.url("/api/rejections?limit=1000"))
            .set("Authorization", &format!("Bearer {ADMIN_TOKEN}")),
        None,
    );
    assert_eq!(s, 200);
    let rej: Value = serde_json::from_str(&b).unwrap();
    let rows = rej["rejections"].as_array().unwrap();
    assert!(rows
        .iter()
        .any(|r| r["field"] == "click_id" && r["raw"].as_str().unwrap().contains("F1")));
    assert!(rows
        .iter()
        .any(|r| r["field"] == "amount" && r["raw"].as_str().unwrap().contains("NaN")));
    // review21 M1: a body the fields could not be read from (a JSON number)
    // is logged when it names its program and authenticates for it
    assert!(rows
        .iter()
        .any(|r| r["field"] == "amount" && r["raw"].as_str().unwrap().contains("\"E5\"")));
    assert!(!rows
        .iter()
        .any(|r| r["raw"].as_str().unwrap().contains("E5-anon")));
    let f2: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["raw"].as_str())
        .filter(|r| r.contains("\"F2\""))
        .collect();
    assert!(
        f2.len() == 1 && !f2[0].contains("guest.pii") && f2[0].contains("[personal]"),
        "{f2:?}"
    );

    // Over 16 KiB: 413.
    let big = json!({"program": program, "event": "lead", "txn_id": "B1", "customer": "x".repeat(17 * 1024)});
    let (s, _) = postback_json(&big);
    assert_eq!(s, 413);
}

#[test]
fn pixel_with_and_without_cookie() {
    let (program, partner, slug) = setup("px");
    let (_, head) = click(&slug, "", BROWSER);
    let cid = click_id_of(&head);
    let w = worker();
    let (s, _, h) = send(
        agent()
            .get(&w.url(&format!(
                "/pixel?program={program}&event=sale&txn_id=P-1&amount=10.00&currency=EUR"
            )))
            .set("Cookie", &format!("other=1; pt_click={cid}")),
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(h.header("Content-Type"), Some("image/gif"));
    let (s, _, _) = send(
        agent().get(&w.url(&format!("/pixel?program={program}&event=lead&txn_id=P-2"))),
        None,
    );
    assert_eq!(s, 200);
    let all = export_until("pixel conversions", |all| {
        all.iter()
            .filter(|e| e["source"] == "pixel" && e["program"] == program.as_str())
            .count()
            == 2
    });
    let p1 = all
        .iter()
        .find(|e| e["txn_id"] == "P-1" && e["program"] == program.as_str())
        .unwrap();
    assert_eq!(p1["partner"], partner.as_str());
    assert_eq!(p1["click_id"], cid.as_str());
    let p2 = all
        .iter()
        .find(|e| e["txn_id"] == "P-2" && e["program"] == program.as_str())
        .unwrap();
    assert!(p2["partner"].is_null() && p2["click_id"].is_null());
}

#[test]
fn admin_and_export_need_their_tokens_and_validate() {
    let w = worker();
    for path in [
        "/api/programs/x",
        "/api/partners/x",
        "/api/coupons/x",
        "/api/links/x",
        "/api/rejections",
    ] {
        let (s, _, _) = send(agent().get(&w.url(path)), None);
        assert_eq!(s, 401, "{path}");
        let (s, _, _) = send(
            agent()
                .get(&w.url(path))
                .set("Authorization", &format!("Bearer {EXPORT_TOKEN}")),
            None,
        );
        assert_eq!(s, 401, "export token on {path}");
    }
    for path in [
        "/export/v1/events",
        "/export/v1/partners",
        "/export/v1/coupons",
    ] {
        let (s, _, _) = send(agent().get(&w.url(path)), None);
        assert_eq!(s, 401, "{path}");
        let (s, _, _) = send(
            agent()
                .get(&w.url(path))
                .set("Authorization", &format!("Bearer {ADMIN_TOKEN}")),
            None,
        );
        assert_eq!(s, 401, "admin token on {path}");
    }
    let (s, b) = admin(
        "PUT",
        "/api/programs/bad",
        json!({"allowed_hosts": ["javascript:x"]}),
    );
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (422, Some("allowed_hosts"))
    );
    let (s, b) = admin("PUT", "/api/programs/bad", json!({"currency": "ABC"}));
    assert_eq!((s, b["error"]["field"].as_str()), (422, Some("currency")));
    let (s, b) = admin(
        "PUT",
        "/api/partners/p",
        json!({"program": "no-such", "status": "approved"}),
    );
    assert_eq!((s, b["error"]["field"].as_str()), (422, Some("program")));
    let (program, partner, _) = setup("adm");
    let (s, b) = admin(
        "POST",
        "/api/links",
        json!({"partner": partner, "program": program, "destination": "ftp://shop.example/"}),
    );
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (422, Some("destination"))
    );
    let (s, b) = admin(
        "PUT",
        "/api/coupons/SAVE10",
        json!({"partner": partner, "program": program}),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = admin("GET", &format!("/api/programs/{program}"), json!({}));
    assert_eq!(s, 200);
    assert_eq!(b["cookie_days"], 60);
    let (s, _) = admin("GET", "/api/programs/never-made", json!({}));
    assert_eq!(s, 404);

    // Registry exports: partner lines without raw emails, coupon lines.
    let (s, body, _) = send(
        agent()
            .get(&w.url("/export/v1/partners"))
            .set("Authorization", &format!("Bearer {EXPORT_TOKEN}")),
        None,
    );
    assert_eq!(s, 200);
    assert!(!body.contains("ann@example.com"));
    let line: Value = body
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|p| p["id"] == partner.as_str())
        .unwrap();
    assert_eq!(line["type"], "partner");
    assert_eq!(line["status"], "approved");
    assert_eq!(line["history"][0]["status"], "approved");
    assert_eq!(line["email_hash"].as_str().unwrap().len(), 64);
    let (_, body, _) = send(
        agent()
            .get(&w.url("/export/v1/coupons"))
            .set("Authorization", &format!("Bearer {EXPORT_TOKEN}")),
        None,
    );
    let line: Value = body
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|c| c["code"] == "SAVE10")
        .unwrap();
    assert_eq!(line["partner"], partner.as_str());
    // the time of the last change too: settlement keeps the newer line of
    // a coupon moved to another partner by it
    let (created, updated) = (line["created_at"].as_str(), line["updated_at"].as_str());
    assert!(created.is_some() && updated >= created, "{line}");
}

#[test]
fn coupon_is_evidence_when_there_is_no_click() {
    let (program, partner, _) = setup("cpn");
    let (s, _) = admin(
        "PUT",
        "/api/coupons/CPN-20",
        json!({"partner": partner, "program": program}),
    );
    assert_eq!(s, 200);
    let (s, b) = postback_json(
        &json!({"program": program, "event": "sale", "txn_id": "C-1",
        "coupon": "CPN-20", "amount": "50.00", "currency": "USD"}),
    );
    assert_eq!(s, 200, "{b}");
    let id = b["id"].as_str().unwrap().to_string();
    let all = export_all();
    let e = all.iter().find(|e| e["id"] == id.as_str()).unwrap();
    assert_eq!(e["partner"], partner.as_str());
    assert_eq!(e["coupon"], "CPN-20");
}

#[test]
fn the_test_clock_is_ignored_unless_enabled() {
    let (_, _, slug) = setup("clock");
    let w = worker();
    let (s, _, head) = send(
        agent()
            .get(&w.url(&format!("/c/{slug}")))
            .set("User-Agent", BROWSER)
            .set("X-Ptrack-Clock", "86400000"),
        None,
    );
    assert_eq!(s, 302);
    let cid = click_id_of(&head);
    let all = export_until("the click", |all| {
        all.iter().any(|e| e["click_id"] == cid.as_str())
    });
    let e = all.iter().find(|e| e["click_id"] == cid.as_str()).unwrap();
    assert!(e["ts"].as_str().unwrap() > "2026-01-01", "{e}");
}
