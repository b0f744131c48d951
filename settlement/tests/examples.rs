//! Every example under `examples/` produces, byte for byte, the statements,
//! payouts and invoices its `expected/` folder holds (worked by hand in
//! docs/settlement.md). `UPDATE_EXPECTED=1` rewrites them instead.

mod common;
use common::*;
use std::path::Path;

const COMPARED: [&str; 3] = ["statements.csv", "payouts.csv", "invoices.csv"];

fn check_example(name: &str) {
    let dir = repo().join("examples").join(name);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("s.db");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    ok(&db, &["import", &s(&dir.join("events.ndjson"))]);
    let mut periods: Vec<String> = std::fs::read_dir(dir.join("expected"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    periods.sort();
    assert!(!periods.is_empty(), "{name}: no expected periods");
    let update = std::env::var_os("UPDATE_EXPECTED").is_some();
    for p in &periods {
        let arrivals = dir.join("arrivals").join(format!("{p}.ndjson"));
        if arrivals.exists() {
            ok(&db, &["import", &s(&arrivals)]);
        }
        let cfg = s(&dir.join("programs.toml"));
        ok(&db, &["run", "--config", &cfg, "--period", p]);
        let out = tmp.path().join(p);
        ok(&db, &["report", "--period", p, "--out", &s(&out)]);
        // a rerun changes nothing
        let before = read(&out.join("ledger.csv"));
        ok(&db, &["run", "--config", &cfg, "--period", p]);
        ok(&db, &["report", "--period", p, "--out", &s(&out)]);
        assert_eq!(
            before,
            read(&out.join("ledger.csv")),
            "{name} {p}: rerun changed the ledger"
        );
        for f in COMPARED {
            let got = read(&out.join(f));
            let want_path = dir.join("expected").join(p).join(f);
            if update {
                std::fs::write(&want_path, &got).unwrap();
                continue;
            }
            let want = read(&want_path);
            assert_eq!(
                got,
                want,
                "{name} {p} {f} differs from {}",
                want_path.display()
            );
        }
        ok(&db, &["close", "--period", p]);
    }
}

#[test]
fn saas_affiliate() {
    check_example("saas-affiliate");
}

#[test]
fn referral() {
    check_example("referral");
}

#[test]
fn reseller() {
    check_example("reseller");
}

#[test]
fn technology() {
    check_example("technology");
}

#[test]
fn forex_ib() {
    check_example("forex-ib");
}

#[test]
fn igaming() {
    check_example("igaming");
}

#[test]
fn prop_firm() {
    check_example("prop-firm");
}

/// December run before November closes, through the binary: the late
/// November sale of `arrivals/2026-12.ndjson` is in neither draft, so
/// `close --period 2026-12` refuses (exit 1, saying to run it again); run
/// again, December's statements, payouts and invoices are the hand-worked
/// ones of `expected/2026-12`, the late sale booked once.
#[test]
fn a_draft_run_before_the_last_close_is_run_again_before_it_closes() {
    let dir = repo().join("examples").join("saas-affiliate");
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("s.db");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let cfg = s(&dir.join("programs.toml"));
    ok(&db, &["import", &s(&dir.join("events.ndjson"))]);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    ok(
        &db,
        &["import", &s(&dir.join("arrivals").join("2026-12.ndjson"))],
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
    ok(&db, &["close", "--period", "2026-11"]);
    let (c, err) = code(&db, &["close", "--period", "2026-12"]);
    assert_eq!(c, 1, "{err}");
    assert!(
        err.contains("2026-12's draft was computed before 2026-11 was closed")
            && err.contains("settlement run --period 2026-12"),
        "{err}"
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
    ok(&db, &["close", "--period", "2026-12"]);
    let out = tmp.path().join("2026-12");
    ok(&db, &["report", "--period", "2026-12", "--out", &s(&out)]);
    for f in COMPARED {
        let want = read(&dir.join("expected").join("2026-12").join(f));
        assert_eq!(read(&out.join(f)), want, "2026-12 {f}");
    }
    assert!(read(&out.join("ledger.csv")).contains(",adjustment,"));
}
