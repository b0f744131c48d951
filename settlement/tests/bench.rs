//! `settlement-bench` as `make bench` runs it, at tiny sizes and without
//! DuckDB: every size measured in its own process, the figures printed and
//! written where the issue asks (timings themselves are never asserted).

use serde_json::Value;

fn bench(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_settlement-bench"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn every_size_is_measured_and_written_with_the_largest_at_the_top() {
    let t = tempfile::tempdir().unwrap();
    // out of order on purpose: the sizes run ascending
    let out = bench(
        t.path(),
        &["--events", "3000,1500", "--no-duckdb", "--dir", "data"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read_to_string(t.path().join("target/bench/settlement.json")).unwrap();
    let v: Value = serde_json::from_str(&json).unwrap();
    // the keys, for the largest size
    assert_eq!(v["events"], 3000);
    for k in ["seconds", "peak_rss_mb", "engine_events_per_s"] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {json}");
    }
    assert!(v["duckdb_seconds"].is_null() && v["ratio_vs_duckdb"].is_null());
    let runs = v["runs"].as_array().unwrap();
    let sizes: Vec<u64> = runs.iter().map(|r| r["events"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [1500, 3000]);
    // each size its own measurement, the last one the top level's
    assert_eq!(runs[1]["seconds"], v["seconds"]);
    for r in runs {
        let parts =
            ["import_seconds", "run_seconds", "report_seconds"].map(|k| r[k].as_f64().unwrap());
        assert!(parts.iter().all(|&x| x > 0.0));
        // four figures, each rounded to the millisecond
        assert!(parts.iter().sum::<f64>() <= r["seconds"].as_f64().unwrap() + 2.5e-3);
    }
    // printed: each size, then the summary naming both
    assert_eq!(stdout.matches("settlement bench: ").count(), 2, "{stdout}");
    assert!(stdout.contains("1500 events:") && stdout.contains("3000 events:"));
    // the same figures beside the data, and each size's own file
    assert_eq!(
        std::fs::read_to_string(t.path().join("data/settlement.json")).unwrap(),
        json
    );
    for n in [1500, 3000] {
        let f = t.path().join(format!("data/settlement-{n}.json"));
        let one: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        assert_eq!(one["events"], n);
    }
}

#[test]
fn a_bad_size_is_refused_before_anything_runs() {
    let t = tempfile::tempdir().unwrap();
    // an earlier run's figures: gone once a bench starts, failing or not
    std::fs::create_dir_all(t.path().join("target/bench")).unwrap();
    std::fs::write(t.path().join("target/bench/settlement.json"), "{}").unwrap();
    // --dir is a file: the bench cannot start
    std::fs::write(t.path().join("not-a-dir"), "").unwrap();
    let out = bench(
        t.path(),
        &["--events", "1000", "--no-duckdb", "--dir", "not-a-dir"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-a-dir"));
    assert!(!t.path().join("target/bench/settlement.json").exists());
    for bad in ["0", "1000,x", ""] {
        let out = bench(t.path(), &["--events", bad, "--no-duckdb", "--dir", "data"]);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--events takes event counts"), "{err}");
        assert!(!t.path().join("target/bench/settlement.json").exists());
    }
}
