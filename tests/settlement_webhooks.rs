//! Issue 12, settlement's side: the real `settlement` binary emits
//! `statement.ready` and `payout.created` of a closed period through the
//! real worker's `POST /api/webhooks/emit`; a local HTTP server receives
//! them signed, with the amounts of statements.csv and payouts.csv; a rerun,
//! another store (the edge deduplicates on the event id) and `nightly` do
//! not deliver them again; a draft emits nothing; a wrong token or an
//! unreachable edge exits 3 and leaves the report whole.

use e2e::harness::{
    csv_rows, free_port, now_s, read_request, root, settlement, settlement_ok, wait_for, Options,
    Worker, ADMIN_TOKEN, EXPORT_TOKEN,
};
use edge::auth::verify_signature;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Output;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "postback-token-0123456789";
const HOOK_SECRET: &str = "whk-books-0123456789abcdef";
/// 2026-10-01T00:00:00Z
const OCT: i64 = 1_790_812_800_000;
const DAY: i64 = 24 * 3_600_000;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(args: &[&str]) -> String {
    settlement_ok(args, &[]).1
}

fn call(w: &Worker, method: &str, path: &str, auth: &str, body: Value, clock: i64) -> (u16, Value) {
    w.call(method, path, Some(auth), Some(&body), Some(clock))
}

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .unwrap_or_else(|e| panic!("{v}: {e}"))
}

#[derive(Clone, Debug)]
struct Received {
    headers: HashMap<String, String>,
    body: String,
}

/// A webhook receiver answering 200 to everything, keeping what it got.
fn receiver() -> (u16, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: Arc<Mutex<Vec<Received>>> = Arc::default();
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some((headers, body)) = read_request(&stream) else {
                continue;
            };
            seen.lock().unwrap().push(Received { headers, body });
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, log)
}

const PROGRAMS: &str = "currency = \"USD\"\n\n[payout]\nhold_days = 0\nminimum = \"10.00\"\n\n\
[[programs]]\nid = \"shop\"\nmodel = \"affiliate\"\nwindow_days = 30\n\n  [[programs.rules]]\n  \
event = \"sale\"\n  percent = \"10\"\n";

/// A fresh store directory with programs.toml.
fn store_dir(name: &str) -> PathBuf {
    let dir = root()
        .join("target/e2e-state")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("programs.toml"), PROGRAMS).unwrap();
    dir
}

#[test]
fn report_and_nightly_emit_statements_and_payouts_once() {
    let mut opts = Options::default();
    opts.vars.push(("ALLOW_TEST_CLOCK".into(), "1".into()));
    opts.vars.push(("WEBHOOK_RETRY_SECONDS".into(), "1".into()));
    let w = Worker::start_with(opts);
    let setup = OCT - DAY;
    let admin = |m: &str, p: &str, b: Value| {
        let (s, r) = call(&w, m, p, ADMIN_TOKEN, b, setup);
        assert!(s < 300, "{m} {p}: {s} {r}");
        r
    };
    let (port, received) = receiver();
    admin(
        "PUT",
        "/api/webhooks/books",
        json!({"url": format!("http://127.0.0.1:{port}/hooks"),
               "events": ["statement.ready", "payout.created"], "secret": HOOK_SECRET}),
    );
    admin(
        "PUT",
        "/api/programs/shop",
        json!({"postback_tokens": [TOKEN], "allowed_hosts": ["shop.example"]}),
    );
    for (partner, code) in [("ann", "ANN10"), ("bob", "BOB10")] {
        admin(
            "PUT",
            &format!("/api/partners/{partner}"),
            json!({"program": "shop", "status": "approved"}),
        );
        admin(
            "PUT",
            &format!("/api/coupons/{code}"),
            json!({"partner": partner, "program": "shop"}),
        );
    }
    // Ann: 200 + 100 in sales at 10%, half of the second refunded: earned
    // 30.00, reversed -5.00, payable 25.00. Bob: 8.00, under the 10.00
    // minimum: a statement without a payout.
    for (body, day) in [
        (
            json!({"program": "shop", "event": "sale", "txn_id": "S1", "coupon": "ANN10", "customer": "c1", "amount": "200.00", "currency": "USD"}),
            2,
        ),
        (
            json!({"program": "shop", "event": "sale", "txn_id": "S2", "coupon": "ANN10", "customer": "c2", "amount": "100.00", "currency": "USD"}),
            5,
        ),
        (
            json!({"program": "shop", "event": "refund", "txn_id": "R1", "original_txn_id": "S2", "amount": "50.00", "currency": "USD"}),
            9,
        ),
        (
            json!({"program": "shop", "event": "sale", "txn_id": "S3", "coupon": "BOB10", "customer": "c3", "amount": "80.00", "currency": "USD"}),
            7,
        ),
    ] {
        let (s, r) = call(&w, "POST", "/postback", TOKEN, body, OCT + day * DAY);
        assert_eq!(s, 200, "{r}");
    }

    // Store 1: pull, run; the draft's report emits nothing.
    let dir = store_dir("emit-report");
    let db = dir.join("settlement.db").display().to_string();
    let config = dir.join("programs.toml").display().to_string();
    let out_dir = dir.join("out");
    let out = out_dir.display().to_string();
    let report = |db: &str, edge: &str, token: &str| {
        settlement(
            &[
                "--db", db, "report", "--period", "2026-10", "--out", &out, "--edge", edge,
            ],
            &[("SETTLEMENT_ADMIN_TOKEN", token)],
        )
    };
    ok(&[
        "--db",
        &db,
        "pull",
        "--edge",
        &w.base,
        "--token",
        EXPORT_TOKEN,
    ]);
    ok(&[
        "--db", &db, "run", "--config", &config, "--period", "2026-10",
    ]);
    let draft = report(&db, &w.base, ADMIN_TOKEN);
    assert!(draft.status.success(), "{}", stderr(&draft));
    assert!(stderr(&draft).contains("a draft"), "{}", stderr(&draft));
    ok(&["--db", &db, "close", "--period", "2026-10"]);

    // --edge without a token: usage (1), before anything is written.
    let no_token = settlement(
        &[
            "--db", &db, "report", "--period", "2026-10", "--out", &out, "--edge", &w.base,
        ],
        &[],
    );
    assert_eq!(no_token.status.code(), Some(1), "{}", stderr(&no_token));

    // A wrong admin token: exit 3, the report is written all the same.
    let refused = report(&db, &w.base, "wrong-admin-token");
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("401"), "{}", stderr(&refused));
    let statements = csv_rows(&out_dir.join("statements.csv"));
    let payouts = csv_rows(&out_dir.join("payouts.csv"));
    assert_eq!(statements.len(), 2, "{statements:?}");
    assert_eq!(payouts.len(), 1, "{payouts:?}");
    assert_eq!(
        (statements[0][1].as_str(), statements[0][9].as_str()),
        ("ann", "25.00")
    );
    assert_eq!(
        (statements[1][1].as_str(), statements[1][9].as_str()),
        ("bob", "0.00")
    );
    let first_csv = std::fs::read(out_dir.join("statements.csv")).unwrap();

    // The real thing.
    let sent = report(&db, &w.base, ADMIN_TOKEN);
    assert!(sent.status.success(), "{}", stderr(&sent));
    assert!(
        stderr(&sent)
            .contains("emitted 2 statement.ready and 1 payout.created events (0 emitted before)"),
        "{}",
        stderr(&sent)
    );
    let got = wait_for("three deliveries", 60, || {
        let log = received.lock().unwrap();
        (log.len() >= 3).then(|| log.clone())
    });
    let secrets = vec![HOOK_SECRET.to_string()];
    let mut by_id = HashMap::new();
    for r in &got {
        let sig = r.headers.get("x-signature").expect("X-Signature");
        assert_eq!(
            verify_signature(sig, r.body.as_bytes(), &secrets, now_s()),
            Ok(()),
            "{sig}"
        );
        // Any change to the body breaks the signature.
        let tampered = r.body.replacen("\"2026-10\"", "\"2026-11\"", 1);
        assert_ne!(tampered, r.body);
        assert!(verify_signature(sig, tampered.as_bytes(), &secrets, now_s()).is_err());
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            r.headers.get("x-webhook-event").map(String::as_str),
            v["type"].as_str()
        );
        by_id.insert(v["id"].as_str().unwrap().to_string(), v);
    }
    assert_eq!(by_id.len(), 3, "{by_id:?}");
    let columns = [
        "period",
        "partner",
        "program",
        "currency",
        "earned",
        "reversed",
        "adjusted",
        "carried_in",
        "pending",
        "payable",
        "carried_out",
    ];
    for row in &statements {
        let e = &by_id[&format!("stmt_2026-10_{}", row[1])];
        assert_eq!(e["type"], "statement.ready");
        for (i, c) in columns.iter().enumerate() {
            if i >= 4 {
                assert_eq!(
                    dec(&e["data"][c]),
                    Decimal::from_str(&row[i]).unwrap(),
                    "{c} {e}"
                );
                assert_eq!(
                    e["data"][c],
                    row[i].as_str(),
                    "decimal strings as in the CSV"
                );
            } else {
                assert_eq!(e["data"][c], row[i].as_str(), "{c} {e}");
            }
        }
    }
    let p = &payouts[0];
    let e = &by_id[&format!("payout_2026-10_{}_{}", p[1], p[2])];
    assert_eq!(e["type"], "payout.created");
    assert_eq!(e["data"]["partner"], p[1].as_str());
    assert_eq!(e["data"]["currency"], p[2].as_str());
    assert_eq!(dec(&e["data"]["amount"]), Decimal::from_str(&p[3]).unwrap());
    assert_eq!(
        dec(&e["data"]["amount"]),
        Decimal::from_str("25.00").unwrap()
    );
    assert_eq!(e["data"]["reference"], p[4].as_str());
    assert_eq!(e["data"]["program"], "shop");

    // A rerun sends nothing: the store knows.
    let again = report(&db, &w.base, ADMIN_TOKEN);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again)
            .contains("emitted 0 statement.ready and 0 payout.created events (3 emitted before)"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        first_csv,
        std::fs::read(out_dir.join("statements.csv")).unwrap()
    );

    // The edge itself deduplicates on the id: the same event again is a
    // duplicate, other content under the id a conflict.
    let (s, b) = call(
        &w,
        "POST",
        "/api/webhooks/emit",
        ADMIN_TOKEN,
        json!({"id": "payout_2026-10_ann_USD", "event": "payout.created", "data": e["data"]}),
        setup,
    );
    assert_eq!((s, b["status"].as_str()), (200, Some("duplicate")), "{b}");
    assert_eq!(b["deliveries"].as_array().map(Vec::len), Some(1), "{b}");
    let mut changed = e["data"].clone();
    changed["amount"] = json!("26.00");
    let (s, b) = call(
        &w,
        "POST",
        "/api/webhooks/emit",
        ADMIN_TOKEN,
        json!({"id": "payout_2026-10_ann_USD", "event": "payout.created", "data": changed}),
        setup,
    );
    assert_eq!((s, b["status"].as_str()), (409, Some("conflict")), "{b}");

    // Store 2: an unreachable edge exits 3 and leaves the same report; then
    // the real edge answers duplicates, delivering nothing new.
    let dir2 = store_dir("emit-down");
    let db2 = dir2.join("settlement.db").display().to_string();
    ok(&[
        "--db",
        &db2,
        "pull",
        "--edge",
        &w.base,
        "--token",
        EXPORT_TOKEN,
    ]);
    ok(&[
        "--db", &db2, "run", "--config", &config, "--period", "2026-10",
    ]);
    ok(&["--db", &db2, "close", "--period", "2026-10"]);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let down = report(&db2, &dead, ADMIN_TOKEN);
    assert_eq!(down.status.code(), Some(3), "{}", stderr(&down));
    assert!(
        stderr(&down).contains("3 of 3 events were not emitted"),
        "{}",
        stderr(&down)
    );
    assert_eq!(
        first_csv,
        std::fs::read(out_dir.join("statements.csv")).unwrap()
    );
    let up = report(&db2, &w.base, ADMIN_TOKEN);
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(
        stderr(&up).contains("(3 emitted before)"),
        "the edge answered duplicates: {}",
        stderr(&up)
    );

    // Store 3: nightly closes October and emits it (admin token from the
    // environment); the edge already has every event.
    let dir3 = store_dir("emit-nightly");
    std::fs::write(
        dir3.join("settlement.toml"),
        format!(
            "edge = \"{}\"\ntoken_env = \"PTRACK_EXPORT_TOKEN\"\nadmin_token_env = \"PTRACK_ADMIN_TOKEN\"\n\
             programs = \"programs.toml\"\nout = \"reports\"\ngrace_days = 3\n",
            w.base
        ),
    )
    .unwrap();
    let nightly = settlement(
        &[
            "--db",
            &dir3.join("settlement.db").display().to_string(),
            "nightly",
            "--config",
            &dir3.join("settlement.toml").display().to_string(),
            "--now",
            "2026-11-10",
        ],
        &[
            ("PTRACK_EXPORT_TOKEN", EXPORT_TOKEN),
            ("PTRACK_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    );
    assert!(nightly.status.success(), "{}", stderr(&nightly));
    assert!(
        stderr(&nightly).contains(
            "2026-10: emitted 0 statement.ready and 0 payout.created events (3 emitted before)"
        ),
        "{}",
        stderr(&nightly)
    );
    assert_eq!(csv_rows(&dir3.join("reports/2026-10/payouts.csv")), payouts);

    // Still exactly the three deliveries.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(received.lock().unwrap().len(), 3);
}
