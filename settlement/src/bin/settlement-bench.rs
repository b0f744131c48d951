//! The settlement benchmark: a deterministic generator of N mixed-model
//! events (10k partners, 1M customers), then import + run + report timed
//! end to end, peak RSS, the engine alone in events per second, and DuckDB
//! computing the simplest equivalent (20% of sale amounts per partner) over
//! the same NDJSON as the baseline. Writes target/bench/settlement.json.
//!
//! `cargo run --release -p settlement --bin settlement-bench -- --events 10000000`
//!
//! `--events 1000000,10000000` (what `make bench` runs) measures each size
//! in a process of its own (its own peak RSS, a fresh heap), smallest
//! first, and writes them all into settlement.json: the largest size's
//! figures at the top level, every size's under `runs`.

use settlement::config;
use settlement::engine::{self, Engine, Options};
use settlement::import::{import_file, ImportOptions};
use settlement::period::Period;
use settlement::run::run;
use settlement::sim::{generate, GenConfig, PROGRAMS};
use settlement::store::Store;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const DUCKDB_VERSION: &str = "1.1.3";

struct Args {
    events: u64,
    /// Every size asked for (`--events N,M,...`), ascending; `events` is
    /// the one this process measures when there is one.
    sizes: Vec<u64>,
    partners: u64,
    customers: u64,
    dir: PathBuf,
    duckdb: bool,
    /// `[programs.fraud]` (defaults) on every program.
    fraud: bool,
    /// Only the engine, over the store a previous full run left in `dir`.
    engine_only: bool,
}

fn args() -> Args {
    let mut a = Args {
        events: 1_000_000,
        sizes: vec![1_000_000],
        partners: 10_000,
        customers: 1_000_000,
        dir: PathBuf::from("target/bench"),
        duckdb: true,
        fraud: true,
        engine_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{k} needs a value")))
        };
        match k.as_str() {
            "--events" => {
                a.sizes = sizes(&v());
                a.events = *a.sizes.last().unwrap_or(&a.events);
            }
            "--partners" => a.partners = v().parse().unwrap_or_else(|_| die("--partners N")),
            "--customers" => a.customers = v().parse().unwrap_or_else(|_| die("--customers N")),
            "--dir" => a.dir = PathBuf::from(v()),
            "--no-duckdb" => a.duckdb = false,
            "--no-fraud" => a.fraud = false,
            "--engine-only" => a.engine_only = true,
            "-h" | "--help" => {
                println!("settlement-bench [--events N[,N...]] [--partners N] [--customers N] [--dir DIR] [--no-duckdb] [--no-fraud] [--engine-only]");
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other}")),
        }
    }
    a
}

/// `--events`' value: one count or several, comma separated, each at least
/// 1; sorted, repeats dropped.
fn sizes(v: &str) -> Vec<u64> {
    let mut out: Vec<u64> = v
        .split(',')
        .map(|n| match n.trim().parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => die(&format!(
                "--events takes event counts, comma separated (1000000,10000000), not {v:?}"
            )),
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn die(msg: &str) -> ! {
    eprintln!("settlement-bench: {msg}");
    std::process::exit(1)
}

fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) of the whole process so far, every thread
/// included: a figure the other processes on a shared machine disturb far
/// less than the wall clock.
fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // the fields after the command name (which may hold spaces)
    let rest = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime (fields 14 and 15) in USER_HZ (100 on Linux)
    (tick(11) + tick(12)) / 100.0
}

fn main() {
    let a = args();
    if !a.engine_only && std::env::var_os(SIZE_OUT).is_none() {
        // a bench that fails leaves no figures, not an earlier run's
        for dir in [Path::new("target/bench"), a.dir.as_path()] {
            let _ = std::fs::remove_file(dir.join("settlement.json"));
        }
    }
    std::fs::create_dir_all(&a.dir).unwrap_or_else(|e| die(&format!("{}: {e}", a.dir.display())));
    if a.sizes.len() > 1 && !a.engine_only {
        return each_size(&a);
    }
    let g = GenConfig {
        seed: 7,
        events: a.events,
        partners: a.partners,
        customers: a.customers,
        period: Period {
            year: 2026,
            month: 11,
        },
    };
    let data = a.dir.join(format!(
        "events-{}-{}-{}.ndjson",
        a.events, a.partners, a.customers
    ));
    if !data.exists() {
        eprintln!("generating {} events into {} ...", a.events, data.display());
        let tmp = data.with_extension("tmp");
        let f = std::fs::File::create(&tmp).unwrap_or_else(|e| die(&e.to_string()));
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        generate(&g, &mut w).unwrap_or_else(|e| die(&e.to_string()));
        drop(w);
        std::fs::rename(&tmp, &data).unwrap_or_else(|e| die(&e.to_string()));
    }
    let programs = a.dir.join("programs.toml");
    let text = if a.fraud {
        settlement::fraud_sim::programs_toml()
    } else {
        PROGRAMS.to_string()
    };
    std::fs::write(&programs, text).unwrap_or_else(|e| die(&e.to_string()));
    let cfg = config::load(&programs).unwrap_or_else(|e| die(&e.to_string()));
    let db = a.dir.join("bench.db");
    let period = g.period;
    if a.engine_only {
        // for work on the engine: its figure without the minute before it
        if !db.exists() {
            die(&format!(
                "--engine-only reads {}: run the full bench first",
                db.display()
            ));
        }
        let store = Store::open(&db).unwrap_or_else(|e| die(&e.to_string()));
        let (t, c, repeat) = engine_alone(&store, &cfg, period);
        if std::env::var_os(CHILD).is_some() {
            // for the full bench that started this process
            println!("{t} {c}");
        } else {
            println!(
                "  engine alone {t:.2} s (best of {}, CPU {c:.2} s): {:.2} M events/s",
                repeat + 1,
                a.events as f64 / t / 1e6
            );
        }
        return;
    }
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    let out = a.dir.join("report");

    // ---- end to end: import + run + report
    let t0 = Instant::now();
    let c0 = cpu_seconds();
    let mut store = Store::open(&db).unwrap_or_else(|e| die(&e.to_string()));
    let opts = ImportOptions {
        skip_invalid: false,
        rejects: None,
        progress: false,
    };
    import_file(&mut store, &data, &opts).unwrap_or_else(|e| die(&e.to_string()));
    let t_import = t0.elapsed().as_secs_f64();
    let c1 = cpu_seconds();
    let t1 = Instant::now();
    run(&mut store, &cfg, period).unwrap_or_else(|e| die(&e.to_string()));
    let t_run = t1.elapsed().as_secs_f64();
    let c2 = cpu_seconds();
    let t2 = Instant::now();
    settlement::report::report(&store, period, &out).unwrap_or_else(|e| die(&e.to_string()));
    // the store copies large commits into the database file beside the next
    // steps: the clock stops once that copy is done too
    {
        let _w = settlement::timing::Phase::start("report: the wait for the checkpoint");
        store.wait_checkpoint();
    }
    let t_report = t2.elapsed().as_secs_f64();
    let c3 = cpu_seconds();
    let seconds = t0.elapsed().as_secs_f64();
    let rss = peak_rss_mb();

    // ---- the engine alone, over facts already in memory: in this process,
    // after the end to end, and in a fresh one, as `settlement run` computes
    // it (the headline figure: this process's heap has held and freed the
    // import's, the run's and the report's gigabytes by now)
    let (t_same, c_same, repeat) = engine_alone(&store, &cfg, period);
    drop(store);
    let fresh = engine_in_fresh_process(&a);
    let (t_engine, c_engine) = fresh.unwrap_or((t_same, c_same));
    let engine_eps = a.events as f64 / t_engine;

    let duck = if a.duckdb {
        duckdb_seconds(&a.dir, &data)
    } else {
        None
    };
    let ratio = duck.map(|d| seconds / d);
    let json = format!(
        "{{\n  \"events\": {},\n  \"fraud_rules\": {},\n  \"seconds\": {:.3},\n  \"import_seconds\": {:.3},\n  \"run_seconds\": {:.3},\n  \"report_seconds\": {:.3},\n  \"peak_rss_mb\": {:.1},\n  \"engine_events_per_s\": {:.0},\n  \"engine_events_per_s_same_process\": {:.0},\n  \"duckdb_seconds\": {},\n  \"ratio_vs_duckdb\": {}\n}}\n",
        a.events,
        a.fraud,
        seconds,
        t_import,
        t_run,
        t_report,
        rss,
        engine_eps,
        a.events as f64 / t_same,
        duck.map_or("null".into(), |d| format!("{d:.3}")),
        ratio.map_or("null".into(), |r| format!("{r:.2}")),
    );
    // one size of several: the figures go to the parent ([`each_size`]),
    // which writes settlement.json once every size is measured
    let jp = match std::env::var_os(SIZE_OUT) {
        Some(p) => {
            let p = PathBuf::from(p);
            std::fs::write(&p, &json).unwrap_or_else(|e| die(&e.to_string()));
            p
        }
        None => write_json(&a.dir, &json),
    };
    println!(
        "settlement bench: {} events, fraud rules {}",
        a.events,
        if a.fraud { "on" } else { "off" }
    );
    println!("  import {t_import:.2} s, run {t_run:.2} s, report {t_report:.2} s: end to end {seconds:.2} s");
    println!(
        "  CPU (user + sys, all threads): import {:.2} s, run {:.2} s, report {:.2} s: end to end {:.2} s; engine alone {:.2} s",
        c1 - c0,
        c2 - c1,
        c3 - c2,
        c3 - c0,
        c_engine
    );
    println!("  peak RSS {rss:.0} MB");
    match fresh {
        Some(_) => println!(
            "  engine alone, in a fresh process as `settlement run` computes it: {:.2} s (best of {}): {:.2} M events/s",
            t_engine,
            repeat + 1,
            engine_eps / 1e6
        ),
        None => println!("  engine alone in a fresh process: not measured (see above)"),
    }
    println!(
        "  engine alone, in this process after the end to end: {:.2} s (best of {}, CPU {:.2} s): {:.2} M events/s",
        t_same,
        repeat + 1,
        c_same,
        a.events as f64 / t_same / 1e6
    );
    match (duck, ratio) {
        (Some(d), Some(r)) => {
            println!("  DuckDB (20% of sales per partner) {d:.2} s; settlement / DuckDB = {r:.2}x")
        }
        _ => println!("  DuckDB baseline skipped"),
    }
    println!("  written to {}", jp.display());
}

/// Writes the figures to target/bench/settlement.json (relative to the
/// workspace root `make bench` runs from), and beside the data when `dir`
/// differs; answers the first path.
fn write_json(dir: &Path, json: &str) -> PathBuf {
    let target = Path::new("target/bench");
    std::fs::create_dir_all(target).unwrap_or_else(|e| die(&e.to_string()));
    let jp = target.join("settlement.json");
    std::fs::write(&jp, json).unwrap_or_else(|e| die(&e.to_string()));
    if dir != target {
        std::fs::write(dir.join("settlement.json"), json).unwrap_or_else(|e| die(&e.to_string()));
    }
    jp
}

/// Set in the environment of a child measuring one size of several: where
/// it writes its figures, instead of settlement.json.
const SIZE_OUT: &str = "SETTLEMENT_BENCH_SIZE_OUT";

/// Measures each of `a.sizes` in a child process of this binary, smallest
/// first, each printing its own figures; then writes settlement.json: the
/// largest size's figures at the top level (the targets are set at 10M),
/// every size's, ascending, under `runs`. A child that fails stops the
/// bench with its status, and nothing is written.
fn each_size(a: &Args) {
    let exe = std::env::current_exe().unwrap_or_else(|e| die(&e.to_string()));
    let mut runs = Vec::new();
    for &n in &a.sizes {
        let out = a.dir.join(format!("settlement-{n}.json"));
        let _ = std::fs::remove_file(&out);
        let mut cmd = Command::new(&exe);
        cmd.args(["--events", &n.to_string()])
            .args(["--partners", &a.partners.to_string()])
            .args(["--customers", &a.customers.to_string()])
            .arg("--dir")
            .arg(&a.dir)
            .env(SIZE_OUT, &out);
        if !a.duckdb {
            cmd.arg("--no-duckdb");
        }
        if !a.fraud {
            cmd.arg("--no-fraud");
        }
        match cmd.status() {
            Ok(s) if s.success() => {}
            Ok(s) => die(&format!("the bench of {n} events failed ({s})")),
            Err(e) => die(&format!("cannot start the bench of {n} events: {e}")),
        }
        let text = std::fs::read_to_string(&out)
            .unwrap_or_else(|e| die(&format!("{}: {e}", out.display())));
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| die(&format!("{}: {e}", out.display())));
        runs.push(v);
    }
    let mut top = match runs.last() {
        Some(serde_json::Value::Object(m)) => m.clone(),
        _ => die("no figures to write"),
    };
    top.insert("runs".into(), serde_json::Value::Array(runs.clone()));
    let json = serde_json::to_string_pretty(&serde_json::Value::Object(top))
        .unwrap_or_else(|e| die(&e.to_string()))
        + "\n";
    let jp = write_json(&a.dir, &json);
    println!("settlement bench, every size (end to end, against DuckDB):");
    for r in &runs {
        let f = |k: &str| r.get(k).and_then(serde_json::Value::as_f64);
        let ratio = f("ratio_vs_duckdb").map_or("no DuckDB".into(), |x| format!("{x:.2}x DuckDB"));
        println!(
            "  {:>10} events: {:.2} s, peak RSS {:.0} MB, engine {:.2} M events/s, {ratio}",
            r.get("events")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
            f("seconds").unwrap_or(0.0),
            f("peak_rss_mb").unwrap_or(0.0),
            f("engine_events_per_s").unwrap_or(0.0) / 1e6,
        );
    }
    println!("  written to {}", jp.display());
}

/// Set in the environment of the `--engine-only` child the full bench
/// starts: it answers with `seconds cpu_seconds` alone.
const CHILD: &str = "SETTLEMENT_BENCH_CHILD";

/// [`engine_alone`] in a new process of this binary (`--engine-only` over
/// the store the end to end left), as `(wall seconds, CPU seconds)`.
fn engine_in_fresh_process(a: &Args) -> Option<(f64, f64)> {
    let exe = std::env::current_exe().ok()?;
    let mut cmd = Command::new(exe);
    cmd.args(["--events", &a.events.to_string()])
        .args(["--partners", &a.partners.to_string()])
        .args(["--customers", &a.customers.to_string()])
        .arg("--dir")
        .arg(&a.dir)
        .arg("--engine-only")
        .env(CHILD, "1");
    if !a.fraud {
        cmd.arg("--no-fraud");
    }
    let out = match cmd.output() {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!(
                "settlement-bench: the engine's fresh process failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return None;
        }
        Err(e) => {
            eprintln!("settlement-bench: cannot start the engine's fresh process: {e}");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    match (it.next().flatten(), it.next().flatten()) {
        (Some(t), Some(c)) if t > 0.0 => Some((t, c)),
        _ => {
            eprintln!("settlement-bench: the engine's fresh process answered {text:?}");
            None
        }
    }
}

/// The engine alone over the store's facts (loaded once): the best of
/// 1 + `BENCH_ENGINE_REPEAT` (2) runs, as (wall seconds, CPU seconds,
/// repeats).
fn engine_alone(store: &Store, cfg: &config::Config, period: Period) -> (f64, f64, usize) {
    let facts = settlement::run::load_period_facts(store, cfg, period)
        .unwrap_or_else(|e| die(&e.to_string()));
    let eng = Engine::new(cfg, &facts);
    // the best of several runs (one figure swings with whatever else the
    // machine does); BENCH_ENGINE_REPEAT=n: of n + 1
    let repeat: usize = std::env::var("BENCH_ENGINE_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let (mut t_engine, mut c_engine) = (f64::MAX, f64::MAX);
    for i in 0..=repeat {
        let te = Instant::now();
        let ce = cpu_seconds();
        let o = engine::compute(
            &eng,
            &Options {
                until_ms: period.end_ms(),
                max_arrival: i64::MAX,
                review_seq: i64::MAX,
            },
        )
        .unwrap_or_else(|e| die(&e.to_string()));
        t_engine = t_engine.min(te.elapsed().as_secs_f64());
        c_engine = c_engine.min(cpu_seconds() - ce);
        if i == 0 {
            eprintln!("engine: {} entries", o.entries.len());
        }
        // one output at a time
        drop(o);
    }
    (t_engine, c_engine, repeat)
}

/// Times DuckDB's one query over the NDJSON; installs the pinned `duckdb`
/// Python package into a venv under the bench dir when it is missing.
fn duckdb_seconds(dir: &Path, data: &Path) -> Option<f64> {
    let venv = dir.join("venv");
    let py = venv.join("bin/python");
    let has = |p: &Path| {
        Command::new(p)
            .args(["-c", "import duckdb"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !has(&py) {
        eprintln!(
            "installing duckdb=={DUCKDB_VERSION} into {} ...",
            venv.display()
        );
        let ok = Command::new("python3")
            .args(["-m", "venv", venv.to_str()?])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
            && Command::new(&py)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    &format!("duckdb=={DUCKDB_VERSION}"),
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        if !ok || !has(&py) {
            eprintln!("DuckDB unavailable: baseline skipped");
            return None;
        }
    }
    let script = r#"
import sys, time, duckdb
path = sys.argv[1]
con = duckdb.connect()
con.execute("PRAGMA threads=2")
con.execute("SET enable_progress_bar = false")
t = time.perf_counter()
rows = con.execute("""
  SELECT partner, SUM(CAST(amount AS DECIMAL(18,2))) * 0.20 AS commission
  FROM read_json(?, format='newline_delimited',
                 columns={'type': 'VARCHAR', 'partner': 'VARCHAR', 'event': 'VARCHAR', 'amount': 'VARCHAR'})
  WHERE type = 'conversion' AND event = 'sale' AND partner IS NOT NULL
  GROUP BY partner ORDER BY partner
""", [path]).fetchall()
print(time.perf_counter() - t, len(rows))
"#;
    let o = match Command::new(&py)
        .args(["-c", script, data.to_str()?])
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("DuckDB could not start: {e}");
            return None;
        }
    };
    if !o.status.success() {
        eprintln!("DuckDB failed: {}", String::from_utf8_lossy(&o.stderr));
        return None;
    }
    // the timing is the last line's first word
    let out = String::from_utf8_lossy(&o.stdout);
    let secs = out
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    if secs.is_none() {
        eprintln!("DuckDB printed no timing: {out}");
    }
    secs
}
