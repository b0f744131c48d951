//! Kills `settlement run` (SIGKILL, the real binary) at random instants 20
//! times, checks the store is never half-written, reruns, and compares the
//! outputs byte for byte with an uninterrupted run.

mod common;
use common::*;
use settlement::period::Period;
use settlement::sim::{generate, GenConfig, Rng, PROGRAMS};
use settlement::store::{pos_base, Store};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const OUTPUTS: [&str; 5] = [
    "statements.csv",
    "payouts.csv",
    "invoices.csv",
    "ledger.csv",
    "report.html",
];

fn ledger_rows(db: &std::path::Path, p: Period) -> i64 {
    let s = Store::open(db).unwrap();
    s.conn
        .query_row(
            "SELECT COALESCE(SUM(n), 0) FROM ledger_blocks WHERE first >= ?1 AND first < ?2",
            [pos_base(p), pos_base(p.next())],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn killed_runs_leave_nothing_half_done() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("events.ndjson");
    let g = GenConfig {
        seed: 99,
        events: 20_000,
        partners: 200,
        customers: 2_000,
        period: Period::parse("2026-11").unwrap(),
    };
    let mut buf = Vec::new();
    generate(&g, &mut buf).unwrap();
    std::fs::write(&data, buf).unwrap();
    let cfg = t.path().join("programs.toml");
    std::fs::write(&cfg, PROGRAMS).unwrap();
    let (data, cfg) = (data.to_str().unwrap(), cfg.to_str().unwrap());

    // the uninterrupted run
    let a = t.path().join("a.db");
    ok(&a, &["import", data]);
    let t0 = Instant::now();
    ok(&a, &["run", "--config", cfg, "--period", "2026-11"]);
    let full = t0.elapsed();
    let out_a = t.path().join("out-a");
    report(&a, "2026-11", &out_a, &[]);
    let rows = ledger_rows(&a, g.period);
    assert!(rows > 1000, "{rows}");

    let b = t.path().join("b.db");
    ok(&b, &["import", data]);
    let mut rng = Rng::new(7);
    let mut killed = 0;
    for _ in 0..20 {
        // force a rewrite, so every attempt writes a whole draft
        Store::open(&b)
            .unwrap()
            .conn
            .execute("UPDATE periods SET draft_hash = 'stale'", [])
            .unwrap();
        let mut child = Command::new(bin())
            .args([
                "--db",
                b.to_str().unwrap(),
                "--quiet",
                "run",
                "--config",
                cfg,
                "--period",
                "2026-11",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let wait = full.as_micros() as u64 * 12 / 10;
        std::thread::sleep(Duration::from_micros(rng.below(wait.max(1))));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
        let n = ledger_rows(&b, g.period);
        assert!(
            n == 0 || n == rows,
            "a killed run left {n} of {rows} ledger rows"
        );
    }
    assert!(
        killed >= 10,
        "only {killed} of 20 runs were killed before finishing"
    );
    ok(&b, &["run", "--config", cfg, "--period", "2026-11"]);
    let out_b = t.path().join("out-b");
    report(&b, "2026-11", &out_b, &[]);
    for f in OUTPUTS {
        assert!(
            read(&out_a.join(f)) == read(&out_b.join(f)),
            "{f} differs after killed runs"
        );
    }
}
