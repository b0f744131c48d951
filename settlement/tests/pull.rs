//! `pull` and `nightly` against a tiny local export API (std TcpListener).

mod common;
use common::*;
use settlement::pull::{pull, PullOptions};
use settlement::store::Store;
use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    events: Vec<String>,
    partners: Vec<String>,
    coupons: Vec<String>,
    page: usize,
    /// Answer this many requests with 503 first.
    fail_next: usize,
    /// Always 500 for this `after`.
    broken_after: Option<u64>,
    requests: Vec<String>,
}

struct Server {
    url: String,
    state: Arc<Mutex<State>>,
}

const TOKEN: &str = "export-secret";

fn serve(state: State) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(Mutex::new(state));
    let st = state.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let Some(Request { path, auth, .. }) = read_request(&conn) else {
                continue;
            };
            let (status, body, cursor) = answer(&st, &path, &auth);
            let mut resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            if let Some(c) = cursor {
                resp.push_str(&format!("X-Next-Cursor: {c}\r\n"));
            }
            resp.push_str("\r\n");
            resp.push_str(&body);
            let _ = conn.write_all(resp.as_bytes());
        }
    });
    Server { url, state }
}

fn answer(st: &Arc<Mutex<State>>, path: &str, auth: &str) -> (&'static str, String, Option<u64>) {
    let mut s = st.lock().unwrap();
    s.requests.push(path.to_string());
    if auth != format!("Bearer {TOKEN}") {
        return (
            "401 Unauthorized",
            "{\"error\":\"unauthorized\"}".into(),
            None,
        );
    }
    if s.fail_next > 0 {
        s.fail_next -= 1;
        return ("503 Service Unavailable", "busy".into(), None);
    }
    let lines = |v: &[String]| v.iter().map(|l| format!("{l}\n")).collect::<String>();
    if path.starts_with("/export/v1/events") {
        let q = |k: &str| {
            path.split(['?', '&'])
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")).map(str::to_string))
        };
        let after: u64 = q("after").and_then(|v| v.parse().ok()).unwrap_or(0);
        if s.broken_after == Some(after) {
            return ("500 Internal Server Error", "oops".into(), None);
        }
        let limit: usize = q("limit")
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000)
            .min(s.page);
        let page: Vec<String> = s
            .events
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 + 1 > after)
            .take(limit)
            .map(|(_, l)| l.clone())
            .collect();
        let next = after + page.len() as u64;
        return ("200 OK", lines(&page), Some(next));
    }
    match path {
        "/export/v1/partners" => ("200 OK", lines(&s.partners), None),
        "/export/v1/coupons" => ("200 OK", lines(&s.coupons), None),
        _ => ("404 Not Found", String::new(), None),
    }
}

fn event(seq: u64) -> String {
    format!(
        r#"{{"seq":{seq},"id":"ev_{seq}","type":"conversion","ts":"2026-11-{:02}T10:00:00.000Z","program":"p","partner":"a","click_id":"c{seq}","click_ts":"2026-11-{:02}T09:00:00.000Z","event":"sale","txn_id":"T{seq}","amount":"10.00","currency":"USD","customer":"cu{seq}"}}"#,
        1 + seq % 28,
        1 + seq % 28
    )
}

fn state(n: u64) -> State {
    State {
        events: (1..=n).map(event).collect(),
        partners: vec![r#"{"type":"partner","id":"a","program":"p","parent":null,"tier":null,"status":"approved","history":[{"status":"approved","at":"2026-01-01T00:00:00.000Z"}],"currency":"USD","email_hash":"h","created_at":"2026-01-01T00:00:00.000Z","updated_at":"2026-01-01T00:00:00.000Z"}"#.into()],
        coupons: vec![r#"{"type":"coupon","code":"A10","partner":"a","program":"p","created_at":"2026-01-01T00:00:00.000Z"}"#.into()],
        page: 5,
        ..State::default()
    }
}

fn opts(url: &str) -> PullOptions {
    let mut o = PullOptions::new(url, TOKEN);
    o.backoff = Duration::from_millis(5);
    o.progress = false;
    o
}

fn count(store: &Store, sql: &str) -> i64 {
    store.conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn pull_pages_resumes_and_is_incremental() {
    let srv = serve(state(12));
    let t = tempfile::tempdir().unwrap();
    let mut store = Store::open(&t.path().join("s.db")).unwrap();
    let r = pull(&mut store, &opts(&srv.url)).unwrap();
    assert_eq!((r.counts.new, r.cursor), (12, 12));
    assert_eq!(
        count(&store, "SELECT COALESCE(SUM(n), 0) FROM event_blocks"),
        12
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM partners"), 1);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM coupons"), 1);
    // three more arrive; the next pull starts after the stored cursor
    {
        let mut s = srv.state.lock().unwrap();
        s.events.extend((13..=15).map(event));
        s.requests.clear();
    }
    let r = pull(&mut store, &opts(&srv.url)).unwrap();
    assert_eq!((r.counts.new, r.counts.duplicate, r.cursor), (3, 0, 15));
    let reqs = srv.state.lock().unwrap().requests.clone();
    // the edge's first event is checked, then the pull goes on after 12
    assert!(reqs[0].contains("after=0&limit=1"), "{reqs:?}");
    assert!(reqs[1].contains("after=12"), "{reqs:?}");
}

/// An edge whose events were numbered again (its D1 reset, or another
/// deployment at the same URL) is refused with exit 3 before anything is
/// read: pulling after the stored cursor would skip its first events
/// without a word. The store and its cursor stay as they were.
#[test]
fn a_reset_edge_is_refused_instead_of_skipped() {
    let srv = serve(state(12));
    let t = tempfile::tempdir().unwrap();
    let mut store = Store::open(&t.path().join("s.db")).unwrap();
    pull(&mut store, &opts(&srv.url)).unwrap();
    assert_eq!(
        store.meta("pull_origin").unwrap().as_deref(),
        Some("1 ev_1")
    );
    // the same edge again: fine
    pull(&mut store, &opts(&srv.url)).unwrap();
    // reset: 20 new events numbered from 1
    srv.state.lock().unwrap().events = (1..=20)
        .map(|s| event(s).replace(&format!("\"ev_{s}\""), &format!("\"new_{s}\"")))
        .collect();
    let e = pull(&mut store, &opts(&srv.url)).unwrap_err();
    assert_eq!(e.exit_code(), 3, "{e}");
    let m = e.to_string();
    assert!(
        m.contains("first event is 1 new_1 but this store's pulls began with 1 ev_1")
            && m.contains("would skip its events"),
        "{m}"
    );
    assert_eq!(store.meta("pull_cursor").unwrap().as_deref(), Some("12"));
    assert_eq!(
        count(&store, "SELECT COALESCE(SUM(n), 0) FROM event_blocks"),
        12
    );
    // an edge with no events at all is refused the same way
    srv.state.lock().unwrap().events.clear();
    let e = pull(&mut store, &opts(&srv.url)).unwrap_err();
    assert!(e.to_string().contains("none (it has no events)"), "{e}");
}

#[test]
fn pull_retries_5xx_and_resumes_after_a_failure() {
    let mut st = state(12);
    st.fail_next = 2;
    st.broken_after = Some(10);
    let srv = serve(st);
    let t = tempfile::tempdir().unwrap();
    let mut store = Store::open(&t.path().join("s.db")).unwrap();
    let e = pull(&mut store, &opts(&srv.url)).unwrap_err();
    assert_eq!(e.exit_code(), 3, "{e}");
    assert!(e.to_string().contains("gave up after 5 tries"), "{e}");
    // the two pages before the failure are committed with their cursor
    assert_eq!(
        count(&store, "SELECT COALESCE(SUM(n), 0) FROM event_blocks"),
        10
    );
    assert_eq!(store.meta("pull_cursor").unwrap().as_deref(), Some("10"));
    srv.state.lock().unwrap().broken_after = None;
    let r = pull(&mut store, &opts(&srv.url)).unwrap();
    assert_eq!((r.counts.new, r.cursor), (2, 12));
}

#[test]
fn unauthorized_pull_exits_3_with_a_clear_message() {
    let srv = serve(state(3));
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let (c, err) = code(&db, &["pull", "--edge", &srv.url, "--token", "wrong"]);
    assert_eq!(c, 3, "{err}");
    assert!(err.contains("HTTP 401") && err.contains("--token"), "{err}");
    let (c, err) = code(&db, &["pull", "--edge", &srv.url, "--token", TOKEN]);
    assert_eq!(c, 0, "{err}");
}

#[test]
fn nightly_pulls_runs_closes_and_reports() {
    let srv = serve(state(12));
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    std::fs::write(
        t.path().join("programs.toml"),
        "currency = \"USD\"\n[[programs]]\nid = \"p\"\nmodel = \"affiliate\"\n[[programs.rules]]\nevent = \"sale\"\npercent = \"10\"\n",
    )
    .unwrap();
    let cfg = t.path().join("settlement.toml");
    std::fs::write(
        &cfg,
        format!("edge = \"{}\"\ntoken_env = \"NIGHTLY_TEST_TOKEN\"\nprograms = \"programs.toml\"\nout = \"reports\"\ngrace_days = 3\n", srv.url),
    )
    .unwrap();
    let run = |now: &str| nightly(&db, &cfg, now, &[("NIGHTLY_TEST_TOKEN", TOKEN)]);
    let o = run("2026-12-02");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // within the grace days: November is still open
    let st = read(&t.path().join("reports/2026-11/statements.csv"));
    assert!(st.contains("2026-11,a,p,USD,12.00,"), "{st}");
    let (c, _) = code(&db, &["close", "--period", "2026-12"]);
    assert_eq!(c, 1, "December cannot close before November");
    let o = run("2026-12-05");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfgp = t.path().join("programs.toml");
    let (c, _) = code(
        &db,
        &[
            "run",
            "--config",
            cfgp.to_str().unwrap(),
            "--period",
            "2026-11",
        ],
    );
    assert_eq!(c, 1, "November was closed");
    assert!(t.path().join("reports/2026-12/report.html").exists());

    // upstream down: exit 3 and no period touched
    let t2 = tempfile::tempdir().unwrap();
    let db2 = t2.path().join("s.db");
    let o = nightly(&db2, &cfg, "2026-12-05", &[("NIGHTLY_TEST_TOKEN", "wrong")]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let store = Store::open(&db2).unwrap();
    assert_eq!(count(&store, "SELECT COUNT(*) FROM periods"), 0);
}
