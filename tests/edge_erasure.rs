//! Erasure of a customer's personal data through the real worker and the
//! real settlement binary: `DELETE /api/customers/{id}` leaves no trace of
//! the id, its email hash or its visitor in the export, keeps every amount,
//! answers the same on a repeat, 404 for an unknown customer, 401 without
//! the admin token; `settlement erase` gives the store the same pseudonym,
//! and the statements before and after the erasure are equal, for a store
//! that had already pulled and for one that pulls afterwards.

use e2e::harness::{
    agent, root, send, settlement, settlement_ok, Options, Worker, ADMIN_TOKEN, EXPORT_TOKEN,
};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::path::Path;
use std::str::FromStr;

const TOKEN: &str = "postback-token-erasure-0123";
const ERASURE_SECRET: &str = "test-erasure-secret-0123456789";
/// 2026-10-01T00:00:00Z
const OCT: i64 = 1_790_812_800_000;
const HOUR: i64 = 3_600_000;
const UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
const GONE: &str = "cust-erase-1";
const KEPT: &str = "cust-keep-2";

fn call(w: &Worker, method: &str, path: &str, auth: Option<&str>, body: Value) -> (u16, Value) {
    // The registry is set up the day before the traffic (a partner's
    // status at event time must be approved).
    w.call(method, path, auth, Some(&body), Some(OCT - 24 * HOUR))
}

fn click(w: &Worker, slug: &str, clock: i64, ip: &str, who: &str) -> String {
    let (s, _, head) = send(
        agent()
            .get(&w.url(&format!("/c/{slug}?sub1={who}%40example.com")))
            .set("User-Agent", UA)
            .set("CF-Connecting-IP", ip)
            .set("Referer", &format!("https://blog.{who}.example/post"))
            .set("X-Ptrack-Clock", &clock.to_string()),
        None,
    );
    assert_eq!(s, 302);
    let loc = head.header("Location").unwrap().to_string();
    loc.rsplit_once("ref=").unwrap().1.to_string()
}

fn postback(w: &Worker, body: Value, clock: i64) -> Value {
    let (s, t, _) = send(
        agent()
            .post(&w.url("/postback"))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .set("Content-Type", "application/json")
            .set("X-Ptrack-Clock", &clock.to_string()),
        Some(&body.to_string()),
    );
    assert_eq!(s, 200, "{t}");
    let v: Value = serde_json::from_str(&t).unwrap();
    assert_eq!(v["status"], "recorded", "{v}");
    v
}

fn export_text(w: &Worker) -> String {
    let (s, body, _) = send(
        agent()
            .get(&w.url("/export/v1/events?after=0&limit=5000"))
            .set("Authorization", &format!("Bearer {EXPORT_TOKEN}")),
        None,
    );
    assert_eq!(s, 200);
    body
}

fn events(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ok(args: &[&str], env: &[(&str, &str)]) -> String {
    settlement_ok(args, env).1
}

/// pull, run October, report; the statements.csv text.
fn settle(w: &Worker, db: &str, config: &str, out: &Path) -> String {
    ok(
        &[
            "--db",
            db,
            "pull",
            "--edge",
            &w.base,
            "--token",
            EXPORT_TOKEN,
        ],
        &[],
    );
    rerun(db, config, out)
}

fn rerun(db: &str, config: &str, out: &Path) -> String {
    ok(
        &["--db", db, "run", "--config", config, "--period", "2026-10"],
        &[],
    );
    let o = out.display().to_string();
    ok(
        &["--db", db, "report", "--period", "2026-10", "--out", &o],
        &[],
    );
    std::fs::read_to_string(out.join("statements.csv")).unwrap()
}

fn amounts(evs: &[Value]) -> (usize, Decimal) {
    let convs: Vec<&Value> = evs.iter().filter(|e| e["type"] == "conversion").collect();
    let sum = convs
        .iter()
        .filter_map(|e| e["amount"].as_str())
        .map(|a| Decimal::from_str(a).unwrap())
        .sum();
    (convs.len(), sum)
}

#[test]
fn erasing_a_customer_keeps_the_money_and_loses_the_person() {
    let mut opts = Options::default();
    opts.vars.push(("ALLOW_TEST_CLOCK".into(), "1".into()));
    opts.vars
        .push(("ERASURE_SECRET".into(), ERASURE_SECRET.into()));
    let w = Worker::start_with(opts);

    assert_eq!(
        call(
            &w,
            "PUT",
            "/api/programs/shop",
            Some(ADMIN_TOKEN),
            json!({"postback_tokens": [TOKEN], "allowed_hosts": ["shop.example"]})
        )
        .0,
        200
    );
    assert!(
        call(
            &w,
            "PUT",
            "/api/partners/aff",
            Some(ADMIN_TOKEN),
            json!({"program": "shop", "status": "approved"})
        )
        .0 < 300
    );
    let (s, link) = call(
        &w,
        "POST",
        "/api/links",
        Some(ADMIN_TOKEN),
        json!({"partner": "aff", "program": "shop", "destination": "https://shop.example/?ref={click_id}"}),
    );
    assert_eq!(s, 201, "{link}");
    let slug = link["slug"].as_str().unwrap().to_string();
    let (s, key) = call(
        &w,
        "POST",
        "/api/partners/aff/keys",
        Some(ADMIN_TOKEN),
        json!({}),
    );
    assert_eq!(s, 201, "{key}");
    let partner_key = key["key"].as_str().unwrap().to_string();

    // The customer to erase: two clicks, two sales, a refund; another
    // customer stays as they are.
    let c1 = click(&w, &slug, OCT + HOUR, "203.0.113.7", "alice");
    let c2 = click(&w, &slug, OCT + 2 * HOUR, "203.0.113.7", "alice");
    let c3 = click(&w, &slug, OCT + 3 * HOUR, "198.51.100.9", "bob");
    postback(
        &w,
        json!({"program": "shop", "event": "sale", "txn_id": "T1", "amount": "100.00",
               "currency": "USD", "customer": GONE, "email": "Alice@Example.com", "click_id": c1}),
        OCT + 5 * HOUR,
    );
    postback(
        &w,
        json!({"program": "shop", "event": "sale", "txn_id": "T2", "amount": "50.00",
               "currency": "USD", "customer": GONE, "email": "alice@example.com", "click_id": c2}),
        OCT + 6 * HOUR,
    );
    postback(
        &w,
        json!({"program": "shop", "event": "refund", "txn_id": "R1", "amount": "40.00",
               "currency": "USD", "customer": GONE, "original_txn_id": "T1"}),
        OCT + 30 * HOUR,
    );
    postback(
        &w,
        json!({"program": "shop", "event": "sale", "txn_id": "T3", "amount": "30.00",
               "currency": "USD", "customer": KEPT, "email": "bob@example.com", "click_id": c3}),
        OCT + 7 * HOUR,
    );
    // A refused postback naming the customer lands in the rejections log.
    let (s, _, _) = send(
        agent()
            .post(&w.url("/postback"))
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .set("Content-Type", "application/json"),
        Some(
            &json!({"program": "shop", "event": "sale", "txn_id": "T9", "amount": "x",
                    "currency": "USD", "customer": GONE})
            .to_string(),
        ),
    );
    assert_eq!(s, 422);

    let before_text = export_text(&w);
    let before = events(&before_text);
    assert!(before_text.contains(GONE));
    let gone_email = before
        .iter()
        .find(|e| e["txn_id"] == "T1")
        .and_then(|e| e["email_hash"].as_str())
        .expect("the sale carries an email hash")
        .to_string();
    let gone_visitor = before
        .iter()
        .find(|e| e["click_id"] == c1.as_str() && e["type"] == "click")
        .and_then(|e| e["visitor"].as_str())
        .expect("the click carries a visitor hash")
        .to_string();
    let kept_email = before
        .iter()
        .find(|e| e["txn_id"] == "T3")
        .and_then(|e| e["email_hash"].as_str())
        .unwrap()
        .to_string();

    // Settlement pulls before the erasure.
    let dir = root()
        .join("target/e2e-state")
        .join(format!("erasure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("programs.toml");
    std::fs::write(
        &config,
        "currency = \"USD\"\n\n[payout]\nhold_days = 0\nminimum = \"1.00\"\n\n[[programs]]\nid = \"shop\"\nmodel = \"affiliate\"\nwindow_days = 30\nlifetime = true\n\n  [[programs.rules]]\n  event = \"sale\"\n  percent = \"10\"\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let db_a = dir.join("a.db").display().to_string();
    let statements_before = settle(&w, &db_a, &config, &dir.join("a-before"));
    assert!(
        statements_before.contains("aff"),
        "the partner earned something: {statements_before}"
    );

    // Only the admin token erases.
    let path = format!("/api/customers/{GONE}");
    for auth in [None, Some(partner_key.as_str()), Some(EXPORT_TOKEN)] {
        let (s, v) = call(&w, "DELETE", &path, auth, json!({}));
        assert_eq!(s, 401, "{auth:?}: {v}");
    }
    assert!(
        export_text(&w).contains(GONE),
        "nothing erased without the admin token"
    );
    let (s, _) = call(
        &w,
        "DELETE",
        "/api/customers/nobody-we-know",
        Some(ADMIN_TOKEN),
        json!({}),
    );
    assert_eq!(s, 404);

    let (s, erased) = call(
        &w,
        "DELETE",
        &path,
        Some(ADMIN_TOKEN),
        json!({"actor": "dpo@shop.example", "reason": "GDPR art. 17 request"}),
    );
    assert_eq!(s, 200, "{erased}");
    assert_eq!(erased["status"], "erased");
    assert_eq!(
        (erased["events"].as_u64(), erased["clicks"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(erased["rejections"], 1);
    let pseudonym = erased["customer"].as_str().unwrap().to_string();
    assert!(pseudonym.starts_with("erased:") && !pseudonym.contains(GONE));
    assert_eq!(
        pseudonym,
        edge::erase::pseudonym(ERASURE_SECRET.as_bytes(), GONE)
    );

    let after_text = export_text(&w);
    let after = events(&after_text);
    for trace in [
        GONE,
        gone_email.as_str(),
        gone_visitor.as_str(),
        "alice",
        "blog.alice.example",
    ] {
        assert!(
            !after_text.contains(trace),
            "{trace} is still in the export"
        );
    }
    assert!(
        after_text.contains(KEPT) && after_text.contains(&kept_email),
        "the other customer is untouched"
    );
    assert_eq!(before.len(), after.len(), "no event removed");
    assert_eq!(amounts(&before), amounts(&after), "amounts unchanged");
    for (b, a) in before.iter().zip(&after) {
        for k in [
            "seq",
            "id",
            "type",
            "event",
            "txn_id",
            "amount",
            "currency",
            "program",
            "partner",
            "link",
            "click_id",
            "original_txn_id",
            "ts",
        ] {
            assert_eq!(b[k], a[k], "{k} of {}", b["id"]);
        }
    }
    let erased_sales: Vec<&Value> = after
        .iter()
        .filter(|e| e["customer"] == pseudonym.as_str())
        .collect();
    assert_eq!(erased_sales.len(), 3);
    assert!(erased_sales
        .iter()
        .all(|e| e.get("email_hash").is_none_or(Value::is_null)));
    let clicks: Vec<&Value> = after
        .iter()
        .filter(|e| {
            e["type"] == "click" && (e["click_id"] == c1.as_str() || e["click_id"] == c2.as_str())
        })
        .collect();
    assert_eq!(clicks.len(), 2);
    for c in clicks {
        for k in ["visitor", "sub", "referrer_host", "country"] {
            assert!(c.get(k).is_none_or(Value::is_null), "{k} left on {c}");
        }
    }
    let (s, rejections) = call(&w, "GET", "/api/rejections", Some(ADMIN_TOKEN), json!({}));
    assert_eq!(s, 200);
    assert!(!rejections.to_string().contains(GONE), "{rejections}");

    // A repeat is answered the same, changes nothing, and is not a 404.
    let (s, again) = call(&w, "DELETE", &path, Some(ADMIN_TOKEN), json!({}));
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["status"], "erased");
    assert_eq!(again["customer"], pseudonym.as_str());
    assert_eq!(again["erased_at"], erased["erased_at"]);
    assert_eq!(again["events"], 0);
    assert_eq!(export_text(&w), after_text);

    // The audit: who and when, never the id.
    let (s, audit) = call(&w, "GET", "/api/erasures", Some(ADMIN_TOKEN), json!({}));
    assert_eq!(s, 200, "{audit}");
    let list = audit["erasures"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{audit}");
    assert_eq!(list[0]["actor"], "dpo@shop.example");
    assert_eq!(list[0]["customer"], pseudonym.as_str());
    assert!(!audit.to_string().contains(GONE));
    let (s, _) = call(&w, "GET", "/api/erasures", Some(&partner_key), json!({}));
    assert_eq!(s, 401);

    // Settlement: the store that had pulled erases with the same pseudonym
    // (from the secret), and its statements do not move.
    let out = ok(
        &["--db", &db_a, "erase", "--customer", GONE, "--by", "dpo"],
        &[("ERASURE_SECRET", ERASURE_SECRET)],
    );
    assert!(out.contains(&pseudonym), "{out}");
    assert!(out.contains("3 conversions"), "{out}");
    let again = ok(
        &[
            "--db",
            &db_a,
            "erase",
            "--customer",
            GONE,
            "--pseudonym",
            &pseudonym,
        ],
        &[],
    );
    assert!(again.contains("erased before"), "{again}");
    let no_secret = settlement(&["--db", &db_a, "erase", "--customer", GONE], &[]);
    assert_eq!(no_secret.status.code(), Some(1));
    let unknown = settlement(
        &[
            "--db",
            &db_a,
            "erase",
            "--customer",
            "nobody",
            "--pseudonym",
            &edge::erase::pseudonym(b"x", "nobody"),
        ],
        &[],
    );
    assert_eq!(unknown.status.code(), Some(2));
    let statements_after = rerun(&db_a, &config, &dir.join("a-after"));
    assert_eq!(statements_before, statements_after);

    // A store that pulls only after the erasure settles to the same figures.
    let db_b = dir.join("b.db").display().to_string();
    let statements_fresh = settle(&w, &db_b, &config, &dir.join("b"));
    assert_eq!(statements_before, statements_fresh);
    let _ = std::fs::remove_dir_all(&dir);
}
