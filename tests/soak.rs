//! A bounded mixed load against the real worker, optionally with workerd
//! killed (SIGKILL) mid-run and restarted on the same persisted state, then
//! an audit of the export: every acknowledged click (a 302 with a click id)
//! and every recorded postback must be there exactly once. Used by
//! `make soak` (`bin/soak.rs`, full size) and by `tests/edge_kill_restart.rs`
//! (small, in `make test`).

use crate::harness::{Options, Worker, ADMIN_TOKEN, EXPORT_TOKEN};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "soak-postback-token-0123456789";
const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

#[derive(Clone, Debug)]
pub struct Plan {
    pub clicks: usize,
    pub postbacks: usize,
    pub clients: usize,
    /// SIGKILLs of workerd, spread evenly over the run (0: none).
    pub kills: usize,
    /// Extra worker variables (e.g. `CLICK_ACK=early` to measure the old mode).
    pub vars: Vec<(String, String)>,
    /// A label for the state directory.
    pub name: String,
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub clicks_sent: usize,
    pub clicks_acked: usize,
    pub clicks_exported: usize,
    pub clicks_lost: usize,
    pub clicks_duplicated: usize,
    pub clicks_unacked_recorded: usize,
    pub postbacks_sent: usize,
    pub postbacks_recorded: usize,
    pub postbacks_exported: usize,
    pub postbacks_lost: usize,
    pub postbacks_duplicated: usize,
    pub duplicate_answers: usize,
    pub duplicate_answer_mismatches: usize,
    pub conflicts: usize,
    pub malformed_sent: usize,
    pub malformed_unexpected: usize,
    pub server_errors: usize,
    pub transport_errors: usize,
    pub kills_survived: usize,
    pub seconds: f64,
    pub click_p50_ms: f64,
    pub click_p99_ms: f64,
    pub problems: Vec<String>,
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "clicks_sent": self.clicks_sent,
            "clicks_acked": self.clicks_acked,
            "clicks_exported": self.clicks_exported,
            "clicks_lost": self.clicks_lost,
            "clicks_duplicated": self.clicks_duplicated,
            "clicks_unacked_recorded": self.clicks_unacked_recorded,
            "postbacks_sent": self.postbacks_sent,
            "postbacks_recorded": self.postbacks_recorded,
            "postbacks_exported": self.postbacks_exported,
            "postbacks_lost": self.postbacks_lost,
            "postbacks_duplicated": self.postbacks_duplicated,
            "duplicate_answers": self.duplicate_answers,
            "duplicate_answer_mismatches": self.duplicate_answer_mismatches,
            "conflicts": self.conflicts,
            "malformed_sent": self.malformed_sent,
            "malformed_unexpected": self.malformed_unexpected,
            "server_errors": self.server_errors,
            "transport_errors": self.transport_errors,
            "kills_survived": self.kills_survived,
            "seconds": (self.seconds * 10.0).round() / 10.0,
            "click_p50_ms": (self.click_p50_ms * 10.0).round() / 10.0,
            "click_p99_ms": (self.click_p99_ms * 10.0).round() / 10.0,
            "problems": self.problems,
        })
    }

    /// Nothing acknowledged lost or doubled, no 5xx, every answer as expected.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    clicks_sent: usize,
    acked: Vec<String>,
    latencies: Vec<f64>,
    postbacks_sent: usize,
    /// txn -> id, for every txn whose postback was acknowledged (recorded,
    /// or duplicate on a retry after a lost answer).
    acked_txns: HashMap<String, String>,
    recorded: Vec<String>,
    duplicate_answers: usize,
    duplicate_mismatches: usize,
    conflicts: usize,
    malformed_sent: usize,
    malformed_unexpected: Vec<String>,
    server_errors: Vec<String>,
    transport_errors: usize,
}

enum Answer {
    Status(u16, String, Option<String>),
    /// No answer (connection refused or reset): not acknowledged.
    Transport,
}

fn call(req: ureq::Request, body: Option<&str>) -> Answer {
    let res = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    match res {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let status = r.status();
            let loc = r.header("Location").map(str::to_string);
            match r.into_string() {
                Ok(text) => Answer::Status(status, text, loc),
                Err(_) => Answer::Transport,
            }
        }
        Err(ureq::Error::Transport(_)) => Answer::Transport,
    }
}

/// A small deterministic generator (no rand dependency).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn admin(base: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let a = crate::harness::agent();
    match call(
        a.request(method, &format!("{base}{path}"))
            .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
            .set("Content-Type", "application/json"),
        Some(&body.to_string()),
    ) {
        Answer::Status(s, t, _) => (s, serde_json::from_str(&t).unwrap_or(Value::String(t))),
        Answer::Transport => (0, Value::Null),
    }
}

/// Every event of the export, paging with the cursor.
pub fn export_all(base: &str) -> Vec<Value> {
    let a = crate::harness::agent();
    let mut after = 0u64;
    let mut out = Vec::new();
    loop {
        let r = a
            .get(&format!("{base}/export/v1/events?after={after}&limit=5000"))
            .set("Authorization", &format!("Bearer {EXPORT_TOKEN}"))
            .call()
            .expect("export answers");
        let next: u64 = r
            .header("X-Next-Cursor")
            .and_then(|c| c.parse().ok())
            .expect("X-Next-Cursor");
        let body = r.into_string().expect("export body");
        if next == after {
            return out;
        }
        out.extend(
            body.lines()
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_str::<Value>(l).expect("an NDJSON line")),
        );
        after = next;
    }
}

fn state_dir(name: &str) -> PathBuf {
    let dir = crate::harness::root()
        .join("target/soak-state")
        .join(format!(
            "{name}-{}-{}",
            std::process::id(),
            crate::harness::free_port()
        ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create state dir");
    dir
}

fn options(state: &std::path::Path, plan: &Plan) -> Options {
    let mut o = Options {
        state: Some(state.to_path_buf()),
        ..Options::default()
    };
    o.vars.extend(plan.vars.iter().cloned());
    o
}

/// Runs the plan; the worker is started (and restarted) here.
pub fn run(plan: &Plan) -> Report {
    let state = state_dir(&plan.name);
    let mut worker = Worker::start_with(options(&state, plan));
    let base = Arc::new(RwLock::new(worker.base.clone()));
    let program = format!("{}-prog", plan.name);
    let partner = format!("{}-aff", plan.name);
    {
        let b = worker.base.clone();
        let (s, v) = admin(
            &b,
            "PUT",
            &format!("/api/programs/{program}"),
            json!({"postback_tokens": [TOKEN], "allowed_hosts": ["shop.example"]}),
        );
        assert!(s < 300, "program: {s} {v}");
        let (s, v) = admin(
            &b,
            "PUT",
            &format!("/api/partners/{partner}"),
            json!({"program": program, "status": "approved"}),
        );
        assert!(s < 300, "partner: {s} {v}");
    }
    let mut slugs = Vec::new();
    for _ in 0..4 {
        let (s, v) = admin(
            &worker.base,
            "POST",
            "/api/links",
            json!({"partner": partner, "program": program,
                   "destination": "https://shop.example/?r={click_id}&s={sub1}"}),
        );
        assert_eq!(s, 201, "link: {v}");
        slugs.push(v["slug"].as_str().expect("slug").to_string());
    }
    let slugs = Arc::new(slugs);

    let total = plan.clicks + plan.postbacks;
    let progress = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..plan.clients)
        .map(|c| {
            let n_clicks = plan.clicks / plan.clients + usize::from(c < plan.clicks % plan.clients);
            let n_pb =
                plan.postbacks / plan.clients + usize::from(c < plan.postbacks % plan.clients);
            let (base, slugs, progress, seen, program) = (
                base.clone(),
                slugs.clone(),
                progress.clone(),
                seen.clone(),
                program.clone(),
            );
            let name = plan.name.clone();
            std::thread::spawn(move || {
                let s = client(c, n_clicks, n_pb, &base, &slugs, &program, &name, &progress);
                if let Ok(mut v) = seen.lock() {
                    v.push(s);
                }
            })
        })
        .collect();

    // The killer: SIGKILL at evenly spaced points of progress, then a
    // restart on the same state directory.
    let mut kills_survived = 0;
    for k in 1..=plan.kills {
        let at = total * k / (plan.kills + 1);
        while progress.load(Ordering::Relaxed) < at {
            if handles.iter().all(|h| h.is_finished()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if handles.iter().all(|h| h.is_finished()) {
            break;
        }
        let killed = worker.kill_workerd();
        eprintln!(
            "[soak] kill {k}: SIGKILL to {killed} workerd process(es) at {} of {total} requests, {:.1}s in",
            progress.load(Ordering::Relaxed),
            start.elapsed().as_secs_f64()
        );
        assert!(killed > 0, "no workerd process found to kill");
        worker = Worker::start_with(options(&state, plan));
        if let Ok(mut b) = base.write() {
            *b = worker.base.clone();
        }
        kills_survived += 1;
        eprintln!(
            "[soak] restarted on the same state at {:.1}s",
            start.elapsed().as_secs_f64()
        );
    }
    for h in handles {
        h.join().expect("a client thread panicked");
    }
    let seconds = start.elapsed().as_secs_f64();
    let seen = std::mem::take(&mut *seen.lock().expect("seen"));

    // Audit the export.
    let b = worker.base.clone();
    let events = export_all(&b);
    let mut click_count: HashMap<&str, usize> = HashMap::new();
    let mut conv_by_id: HashMap<&str, usize> = HashMap::new();
    let mut conv_by_txn: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        if e["program"] != program.as_str() {
            continue;
        }
        match e["type"].as_str() {
            Some("click") => {
                if let Some(c) = e["click_id"].as_str() {
                    *click_count.entry(c).or_default() += 1;
                }
            }
            Some("conversion") => {
                if let Some(i) = e["id"].as_str() {
                    *conv_by_id.entry(i).or_default() += 1;
                }
                if let Some(t) = e["txn_id"].as_str() {
                    *conv_by_txn.entry(t).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    let mut r = Report {
        kills_survived,
        seconds,
        ..Report::default()
    };
    let mut latencies = Vec::new();
    let mut acked_clicks = HashSet::new();
    let mut acked_txns: HashMap<String, String> = HashMap::new();
    for s in seen {
        r.clicks_sent += s.clicks_sent;
        r.clicks_acked += s.acked.len();
        acked_clicks.extend(s.acked);
        latencies.extend(s.latencies);
        r.postbacks_sent += s.postbacks_sent;
        r.postbacks_recorded += s.recorded.len();
        acked_txns.extend(s.acked_txns);
        r.duplicate_answers += s.duplicate_answers;
        r.duplicate_answer_mismatches += s.duplicate_mismatches;
        r.conflicts += s.conflicts;
        r.malformed_sent += s.malformed_sent;
        r.malformed_unexpected += s.malformed_unexpected.len();
        r.server_errors += s.server_errors.len();
        r.transport_errors += s.transport_errors;
        for p in s
            .malformed_unexpected
            .iter()
            .chain(&s.server_errors)
            .take(5)
        {
            r.problems.push(p.clone());
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    r.click_p50_ms = pct(0.5);
    r.click_p99_ms = pct(0.99);
    for c in &acked_clicks {
        match click_count.get(c.as_str()).copied().unwrap_or(0) {
            0 => r.clicks_lost += 1,
            1 => r.clicks_exported += 1,
            _ => r.clicks_duplicated += 1,
        }
    }
    r.clicks_unacked_recorded = click_count
        .keys()
        .filter(|c| !acked_clicks.contains(**c))
        .count();
    for (txn, id) in &acked_txns {
        let by_id = conv_by_id.get(id.as_str()).copied().unwrap_or(0);
        let by_txn = conv_by_txn.get(txn.as_str()).copied().unwrap_or(0);
        if by_id == 0 {
            r.postbacks_lost += 1;
        } else if by_id > 1 || by_txn > 1 {
            r.postbacks_duplicated += 1;
        } else {
            r.postbacks_exported += 1;
        }
    }
    // Nothing in the export that no client ever sent.
    let stray = conv_by_txn
        .keys()
        .filter(|t| !acked_txns.contains_key(**t))
        .count();
    if r.clicks_lost > 0 {
        r.problems.push(format!(
            "{} acknowledged clicks are not in the export",
            r.clicks_lost
        ));
    }
    if r.clicks_duplicated > 0 {
        r.problems.push(format!(
            "{} clicks are in the export more than once",
            r.clicks_duplicated
        ));
    }
    if r.postbacks_lost > 0 || r.postbacks_duplicated > 0 {
        r.problems.push(format!(
            "postbacks: {} lost, {} doubled",
            r.postbacks_lost, r.postbacks_duplicated
        ));
    }
    if stray > 0 {
        r.problems.push(format!(
            "{stray} exported conversions were never acknowledged"
        ));
    }
    if r.duplicate_answer_mismatches > 0 {
        r.problems.push(format!(
            "{} duplicates answered with another id",
            r.duplicate_answer_mismatches
        ));
    }
    if r.server_errors > 0 {
        r.problems
            .push(format!("{} answers were 5xx", r.server_errors));
    }
    if r.kills_survived < plan.kills {
        r.problems.push(format!(
            "only {} of {} kills happened",
            r.kills_survived, plan.kills
        ));
    }
    let log = worker.log_text();
    if log.contains("panicked") {
        r.problems.push("the worker panicked".into());
    }
    drop(worker);
    let _ = std::fs::remove_dir_all(&state);
    r
}

/// One client: its share of clicks and postbacks, interleaved, with
/// duplicates, conflicts and malformed requests mixed in. A request that gets
/// no answer (the worker is down) is not acknowledged; a postback is retried
/// with the same txn until it is.
#[allow(clippy::too_many_arguments)]
fn client(
    c: usize,
    mut clicks: usize,
    mut postbacks: usize,
    base: &RwLock<String>,
    slugs: &[String],
    program: &str,
    name: &str,
    progress: &AtomicUsize,
) -> Seen {
    let agent = crate::harness::agent();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut s = Seen::default();
    // (txn, body, id) of recorded postbacks, to resend as duplicates.
    let mut sent: Vec<(String, String, String)> = Vec::new();
    let url = |p: &str| {
        format!(
            "{}{}",
            base.read().map(|b| b.clone()).unwrap_or_default(),
            p
        )
    };
    let mut op = 0usize;
    while clicks + postbacks > 0 {
        op += 1;
        // Malformed and abusive requests, every 20th operation.
        if op.is_multiple_of(20) {
            let (method, path, body, ok): (&str, String, Option<String>, &[u16]) =
                match rng.below(8) {
                    0 => ("POST", "/postback".into(), Some(json!({"program": program, "event": "sale", "amount": "1.00", "currency": "USD"}).to_string()), &[422]),
                    1 => ("POST", "/postback".into(), Some(json!({"program": program, "event": "sale", "txn_id": format!("bad-{c}-{op}"), "amount": "12,50", "currency": "USD"}).to_string()), &[422]),
                    2 => ("POST", "/postback".into(), Some(json!({"program": program, "event": "sale", "txn_id": format!("bad-{c}-{op}"), "amount": "1.00", "currency": "USD", "token": "wrong"}).to_string()), &[401]),
                    3 => ("POST", "/postback".into(), Some("x".repeat(20_000)), &[413]),
                    4 => ("GET", format!("/c/{name}-no-such-slug"), None, &[404]),
                    5 => ("GET", format!("/c/{}?to=https://evil.example/", slugs[0]), None, &[400]),
                    6 => ("POST", "/postback".into(), Some(json!({"program": program, "event": "sale", "txn_id": format!("bad-{c}-{op}"), "amount": "1.00", "currency": "USD", "click_id": "0forgedforgedforgedforgedforgedforged"}).to_string()), &[422]),
                    _ => ("POST", "/postback".into(), Some("{\"program\":".into()), &[422]),
                };
            let mut req = agent.request(method, &url(&path)).set("User-Agent", UA);
            // Case 2 carries a wrong token in the body and none in the header.
            if method == "POST" && !body.as_deref().is_some_and(|b| b.contains("\"wrong\"")) {
                req = req
                    .set("Authorization", &format!("Bearer {TOKEN}"))
                    .set("Content-Type", "application/json");
            } else if method == "POST" {
                req = req.set("Content-Type", "application/json");
            }
            s.malformed_sent += 1;
            match call(req, body.as_deref()) {
                Answer::Status(st, t, _) if st >= 500 => s
                    .server_errors
                    .push(format!("{st} for {method} {path}: {t}")),
                Answer::Status(st, _, _) if !ok.contains(&st) => s
                    .malformed_unexpected
                    .push(format!("{st} (expected {ok:?}) for {method} {path}")),
                Answer::Status(..) => {}
                Answer::Transport => {
                    s.transport_errors += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            continue;
        }
        // A duplicate (same txn, same payload) or a conflict (same txn,
        // another amount) of a recorded postback, every 10th operation.
        if op % 10 == 5 && !sent.is_empty() {
            let (txn, body, id) = sent[rng.below(sent.len() as u64) as usize].clone();
            let conflict = rng.below(5) == 0;
            let body = if conflict {
                body.replace("\"amount\":\"", "\"amount\":\"1")
            } else {
                body
            };
            let req = agent
                .post(&url("/postback"))
                .set("Authorization", &format!("Bearer {TOKEN}"))
                .set("Content-Type", "application/json");
            match call(req, Some(&body)) {
                Answer::Status(st, t, _) if st >= 500 => {
                    s.server_errors.push(format!("{st} for a duplicate: {t}"))
                }
                Answer::Status(st, t, _) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or_default();
                    let want = if conflict {
                        (409, "conflict")
                    } else {
                        (200, "duplicate")
                    };
                    if (st, v["status"].as_str().unwrap_or("")) != want {
                        s.malformed_unexpected
                            .push(format!("{st} {t} for a {} of {txn}", want.1));
                    } else if v["id"] != id.as_str() {
                        s.duplicate_mismatches += 1;
                    } else if conflict {
                        s.conflicts += 1;
                    } else {
                        s.duplicate_answers += 1;
                    }
                }
                Answer::Transport => {
                    s.transport_errors += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            continue;
        }
        let do_postback = postbacks > 0
            && (clicks == 0 || rng.below((clicks + postbacks) as u64) < postbacks as u64);
        if do_postback {
            let txn = format!("{name}-{c}-{postbacks}");
            let mut body = json!({"program": program, "event": "sale", "txn_id": txn,
                "amount": format!("{}.{:02}", 1 + rng.below(500), rng.below(100)),
                "currency": "USD", "customer": format!("cust-{c}-{}", rng.below(50))});
            if let Some(click) = s.acked.last() {
                if rng.below(2) == 0 {
                    body["click_id"] = Value::String(click.clone());
                }
            }
            let body = body.to_string();
            s.postbacks_sent += 1;
            // Until acknowledged: the same txn, the same payload.
            let mut first = true;
            loop {
                let req = agent
                    .post(&url("/postback"))
                    .set("Authorization", &format!("Bearer {TOKEN}"))
                    .set("Content-Type", "application/json");
                match call(req, Some(&body)) {
                    Answer::Status(st, t, _) if st >= 500 => {
                        s.server_errors.push(format!("{st} for a postback: {t}"));
                        break;
                    }
                    Answer::Status(200, t, _) => {
                        let v: Value = serde_json::from_str(&t).unwrap_or_default();
                        let id = v["id"].as_str().unwrap_or("").to_string();
                        match v["status"].as_str() {
                            Some("recorded") => s.recorded.push(id.clone()),
                            // A retry whose first try was written but not
                            // answered (the worker died in between).
                            Some("duplicate") if !first => {}
                            _ => {
                                s.malformed_unexpected
                                    .push(format!("200 {t} for a new postback {txn}"));
                                break;
                            }
                        }
                        s.acked_txns.insert(txn.clone(), id.clone());
                        sent.push((txn.clone(), body.clone(), id));
                        break;
                    }
                    Answer::Status(st, t, _) => {
                        s.malformed_unexpected
                            .push(format!("{st} {t} for a new postback {txn}"));
                        break;
                    }
                    Answer::Transport => {
                        s.transport_errors += 1;
                        first = false;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
            postbacks -= 1;
        } else {
            let slug = &slugs[rng.below(slugs.len() as u64) as usize];
            let req = agent
                .get(&url(&format!("/c/{slug}?sub1=c{c}")))
                .set("User-Agent", &format!("{UA} soak/{c}.{clicks}"));
            s.clicks_sent += 1;
            let t0 = Instant::now();
            match call(req, None) {
                Answer::Status(302, _, Some(loc)) => {
                    s.latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
                    let id = url::Url::parse(&loc).ok().and_then(|u| {
                        u.query_pairs()
                            .find(|(k, _)| k == "r")
                            .map(|(_, v)| v.into_owned())
                    });
                    match id {
                        Some(id) if !id.is_empty() => s.acked.push(id),
                        _ => s
                            .malformed_unexpected
                            .push(format!("302 without a click id: {loc}")),
                    }
                }
                Answer::Status(st, t, _) if st >= 500 => {
                    s.server_errors.push(format!("{st} for a click: {t}"))
                }
                Answer::Status(st, t, _) => {
                    s.malformed_unexpected.push(format!("{st} {t} for a click"))
                }
                Answer::Transport => {
                    s.transport_errors += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            clicks -= 1;
        }
        progress.fetch_add(1, Ordering::Relaxed);
    }
    s
}
