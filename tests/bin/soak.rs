//! `make soak`: a bounded mixed run against `wrangler dev` on this machine,
//! then the same with workerd killed (SIGKILL) mid-run and restarted on the
//! same persisted state. Prints the counts and writes
//! target/bench/reliability.json (merging fuzz_execs and fuzz_crashes from
//! target/bench/fuzz.json when `fuzz/run.sh` wrote it, and adding the
//! settlement fault tests' kills from target/bench/settlement-faults.json). Exits 1 when an
//! acknowledged click or postback is missing or doubled, or anything
//! answered 5xx.
//!
//! Sizes: SOAK_CLICKS (50000), SOAK_POSTBACKS (10000), SOAK_CLIENTS (64),
//! SOAK_KILLS (2). The worker runs with CLICK_ACK=durable (acknowledge after
//! the D1 write); SOAK_CLICK_ACK=early runs the default mode of SPEC section 3
//! (acknowledge first), to measure what a kill loses there.

use e2e::harness::root;
use e2e::soak::{run, Plan, Report};
use serde_json::{json, Value};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn print(label: &str, r: &Report) {
    println!(
        "{label}: clicks sent {} acknowledged {} exported {} lost {} doubled {} (recorded without an answer {}); \
         postbacks sent {} recorded {} exported {} lost {} doubled {}; duplicates answered {} conflicts {}; \
         malformed {} (unexpected answers {}); 5xx {}; kills survived {}; {:.1}s, click p50 {:.1} ms p99 {:.1} ms",
        r.clicks_sent, r.clicks_acked, r.clicks_exported, r.clicks_lost, r.clicks_duplicated,
        r.clicks_unacked_recorded, r.postbacks_sent, r.postbacks_recorded, r.postbacks_exported,
        r.postbacks_lost, r.postbacks_duplicated, r.duplicate_answers, r.conflicts,
        r.malformed_sent, r.malformed_unexpected, r.server_errors, r.kills_survived, r.seconds,
        r.click_p50_ms, r.click_p99_ms
    );
    for p in &r.problems {
        println!("  problem: {p}");
    }
}

fn main() {
    let clicks = env_usize("SOAK_CLICKS", 50_000);
    let postbacks = env_usize("SOAK_POSTBACKS", 10_000);
    let clients = env_usize("SOAK_CLIENTS", 64);
    let kills = env_usize("SOAK_KILLS", 2);
    let mut vars = Vec::new();
    let mode = std::env::var("SOAK_CLICK_ACK").unwrap_or_else(|_| "durable".into());
    vars.push(("CLICK_ACK".to_string(), mode.clone()));
    let plan = |name: &str, kills: usize| Plan {
        clicks,
        postbacks,
        clients,
        kills,
        vars: vars.clone(),
        name: name.to_string(),
    };
    let steady = run(&plan("soak", 0));
    print("steady", &steady);
    let killed = run(&plan("soakkill", kills));
    print("killed", &killed);

    let dir = root().join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let mut out = json!({
        "clicks_sent": steady.clicks_sent + killed.clicks_sent,
        "clicks_acked": steady.clicks_acked + killed.clicks_acked,
        "clicks_exported": steady.clicks_exported + killed.clicks_exported,
        "clicks_lost": steady.clicks_lost + killed.clicks_lost,
        "postbacks_sent": steady.postbacks_sent + killed.postbacks_sent,
        "postbacks_recorded": steady.postbacks_recorded + killed.postbacks_recorded,
        "postbacks_exported": steady.postbacks_exported + killed.postbacks_exported,
        "postbacks_lost": steady.postbacks_lost + killed.postbacks_lost,
        "server_errors": steady.server_errors + killed.server_errors,
        "kills_survived": killed.kills_survived,
        "click_ack": mode,
        "clients": clients,
        "steady": steady.to_json(),
        "killed": killed.to_json(),
        "ok": steady.ok() && killed.ok(),
    });
    if let Ok(text) = std::fs::read_to_string(dir.join("fuzz.json")) {
        if let Ok(Value::Object(f)) = serde_json::from_str::<Value>(&text) {
            for k in ["fuzz_execs", "fuzz_crashes"] {
                if let Some(v) = f.get(k) {
                    out[k] = v.clone();
                }
            }
        }
    }
    // settlement/tests/faults.rs (run by `make test`) writes its SIGKILLs
    // of pull/import/run/close/report/nightly: counted in kills_survived too
    if let Ok(text) = std::fs::read_to_string(dir.join("settlement-faults.json")) {
        if let Some(n) = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|f| f.get("kills_survived").and_then(Value::as_u64))
        {
            out["settlement_kills_survived"] = json!(n);
            out["kills_survived"] = json!(killed.kills_survived as u64 + n);
        }
    }
    let path = dir.join("reliability.json");
    let _ = std::fs::write(&path, format!("{out:#}\n"));
    println!("wrote {}", path.display());
    if !(steady.ok() && killed.ok()) {
        std::process::exit(1);
    }
}
