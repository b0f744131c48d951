//! `nightly` emitting statement.ready and payout.created against a tiny
//! local edge (export API + `POST /api/webhooks/emit`): an emit endpoint
//! that is down exits 3 after the reports are written and leaves the closed
//! period pending; the next night emits it; the night after sends nothing.

mod common;
use common::*;
use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

const TOKEN: &str = "export-secret";
const ADMIN: &str = "admin-secret";

#[derive(Default)]
struct Edge {
    /// Answer emits with 503.
    down: bool,
    /// Emit bodies accepted, in order.
    emitted: Vec<serde_json::Value>,
    emit_requests: usize,
    /// Events after the three of November: seq 4, 5, ...
    extra: Vec<String>,
}

fn event(seq: u64) -> String {
    format!(
        r#"{{"seq":{seq},"id":"ev_{seq}","type":"conversion","ts":"2026-11-{:02}T10:00:00.000Z","program":"p","partner":"a","click_id":"c{seq}","click_ts":"2026-11-{:02}T09:00:00.000Z","event":"sale","txn_id":"T{seq}","amount":"100.00","currency":"USD","customer":"cu{seq}"}}"#,
        1 + seq % 28,
        1 + seq % 28
    )
}

const PARTNER: &str = r#"{"type":"partner","id":"a","program":"p","parent":null,"tier":null,"status":"approved","history":[{"status":"approved","at":"2026-01-01T00:00:00.000Z"}],"currency":"USD","email_hash":"h","created_at":"2026-01-01T00:00:00.000Z","updated_at":"2026-01-01T00:00:00.000Z"}"#;

fn serve(edge: Arc<Mutex<Edge>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let Some(Request { path, auth, body }) = read_request(&conn) else {
                continue;
            };
            let mut e = edge.lock().unwrap();
            let (status, text, cursor) = if path == "/api/webhooks/emit" {
                e.emit_requests += 1;
                if auth != format!("Bearer {ADMIN}") {
                    ("401 Unauthorized", "{}".to_string(), None)
                } else if e.down {
                    ("503 Service Unavailable", "down".to_string(), None)
                } else {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    e.emitted.push(v.clone());
                    (
                        "202 Accepted",
                        serde_json::json!({"status": "queued", "id": v["id"], "deliveries": ["wd_1"]})
                            .to_string(),
                        None,
                    )
                }
            } else if auth != format!("Bearer {TOKEN}") {
                ("401 Unauthorized", "{}".to_string(), None)
            } else if path.starts_with("/export/v1/events") {
                let after: u64 = path
                    .split(['?', '&'])
                    .find_map(|kv| kv.strip_prefix("after="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut page: String = (after + 1..=3).map(|s| event(s) + "\n").collect();
                for (k, l) in e.extra.iter().enumerate() {
                    if 4 + k as u64 > after {
                        page.push_str(l);
                        page.push('\n');
                    }
                }
                ("200 OK", page, Some((3 + e.extra.len() as u64).max(after)))
            } else if path == "/export/v1/partners" {
                ("200 OK", format!("{PARTNER}\n"), None)
            } else {
                ("200 OK", String::new(), None)
            };
            drop(e);
            let mut resp = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
                text.len()
            );
            if let Some(c) = cursor {
                resp.push_str(&format!("X-Next-Cursor: {c}\r\n"));
            }
            resp.push_str("\r\n");
            resp.push_str(&text);
            let _ = conn.write_all(resp.as_bytes());
        }
    });
    url
}

/// A store, programs.toml (10% of sales, payout minimum 10.00) and
/// settlement.toml for the edge at `url` in `dir`: `nightly` on a given day.
fn nights<'a>(dir: &'a std::path::Path, url: &str) -> impl Fn(&str) -> std::process::Output + 'a {
    std::fs::write(
        dir.join("programs.toml"),
        "currency = \"USD\"\n[payout]\nhold_days = 0\nminimum = \"10.00\"\n[[programs]]\nid = \"p\"\nmodel = \"affiliate\"\n[[programs.rules]]\nevent = \"sale\"\npercent = \"10\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("settlement.toml"),
        format!("edge = \"{url}\"\ntoken_env = \"EMIT_TEST_TOKEN\"\nadmin_token_env = \"EMIT_TEST_ADMIN\"\nprograms = \"programs.toml\"\nout = \"reports\"\ngrace_days = 3\n"),
    )
    .unwrap();
    move |now: &str| {
        nightly(
            &dir.join("s.db"),
            &dir.join("settlement.toml"),
            now,
            &[("EMIT_TEST_TOKEN", TOKEN), ("EMIT_TEST_ADMIN", ADMIN)],
        )
    }
}

#[test]
fn nightly_emits_closed_periods_once_and_retries_after_the_edge_was_down() {
    let edge = Arc::new(Mutex::new(Edge {
        down: true,
        ..Edge::default()
    }));
    let t = tempfile::tempdir().unwrap();
    let run = nights(t.path(), &serve(edge.clone()));
    // Within the grace days: November is a draft, nothing is emitted.
    let o = run("2026-12-02");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(edge.lock().unwrap().emit_requests, 0);

    // November closes; the emit endpoint is down: exit 3, the report is whole.
    let o = run("2026-12-05");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("2 of 2 events were not emitted"), "{err}");
    let st = read(&t.path().join("reports/2026-11/statements.csv"));
    assert!(st.contains("2026-11,a,p,USD,30.00,"), "{st}");
    let payouts = read(&t.path().join("reports/2026-11/payouts.csv"));
    assert!(payouts.contains("2026-11,a,USD,30.00,"), "{payouts}");
    assert!(edge.lock().unwrap().emitted.is_empty());

    // The next night (nothing closes) emits the pending November.
    edge.lock().unwrap().down = false;
    let o = run("2026-12-06");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("2026-11: emitted 1 statement.ready and 1 payout.created events"),
        "{err}"
    );
    {
        let e = edge.lock().unwrap();
        let ids: Vec<&str> = e
            .emitted
            .iter()
            .map(|v| v["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["stmt_2026-11_a", "payout_2026-11_a_USD"]);
        assert_eq!(e.emitted[0]["event"], "statement.ready");
        assert_eq!(e.emitted[0]["data"]["earned"], "30.00");
        assert_eq!(e.emitted[0]["data"]["payable"], "30.00");
        assert_eq!(e.emitted[1]["event"], "payout.created");
        assert_eq!(e.emitted[1]["data"]["amount"], "30.00");
    }

    // And never again.
    let before = edge.lock().unwrap().emit_requests;
    let o = run("2026-12-07");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(edge.lock().unwrap().emit_requests, before);
}

/// A first nightly that closes two periods while the emit endpoint is down
/// stops at the first: the second, closed that night, is emitted the next
/// night with it. (Before, a period was marked for retry only when its own
/// emission started, so October's failure left November closed and never
/// emitted.)
#[test]
fn every_period_closed_on_a_night_the_edge_was_down_is_emitted_later() {
    let october = r#"{"seq":4,"id":"ev_4","type":"conversion","ts":"2026-10-10T10:00:00.000Z","program":"p","partner":"a","click_id":"c4","click_ts":"2026-10-10T09:00:00.000Z","event":"sale","txn_id":"T4","amount":"200.00","currency":"USD","customer":"cu4"}"#;
    let edge = Arc::new(Mutex::new(Edge {
        down: true,
        extra: vec![october.to_string()],
        ..Edge::default()
    }));
    let t = tempfile::tempdir().unwrap();
    let run = nights(t.path(), &serve(edge.clone()));
    // October and November close; October's emission fails first
    let o = run("2026-12-05");
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(read(&t.path().join("reports/2026-11/payouts.csv")).contains("2026-11,a,USD,30.00,"));
    assert!(edge.lock().unwrap().emitted.is_empty());

    // the next night (nothing closes) emits both
    edge.lock().unwrap().down = false;
    let o = run("2026-12-06");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let ids: Vec<String> = edge
        .lock()
        .unwrap()
        .emitted
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "stmt_2026-10_a",
            "payout_2026-10_a_USD",
            "stmt_2026-11_a",
            "payout_2026-11_a_USD"
        ],
        "{err}"
    );
}
