//! Settlement under faults (issue 8): the real binary SIGKILLed at seeded
//! random instants of `pull`, `import`, `run`, `close` and `report` (56 kills)
//! and `nightly` (8), corrupt and truncated inputs, a corrupt store, and an export API
//! that stalls, fails, repeats itself or moves its cursor backwards. Every
//! case ends either in exactly the state and files of an undisturbed run or
//! in a clear error (exit code per SPEC) with nothing half-written.
//!
//! The totals go to `target/bench/settlement-faults.json`.

mod common;
use common::*;
use settlement::period::Period;
use settlement::pull::{pull, PullOptions};
use settlement::sim::{generate, GenConfig, Rng, PROGRAMS};
use settlement::store::Store;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PERIOD: &str = "2026-11";
const TOKEN: &str = "export-secret";

// ------------------------------------------------------------ the tally

/// (kills survived, cases) of the tests that finished; each test adds its
/// own and rewrites the file, so the last one writes the totals.
static TALLY: Mutex<(u64, u64)> = Mutex::new((0, 0));

fn tally(kills: u64, cases: u64) {
    let mut t = TALLY.lock().unwrap_or_else(|e| e.into_inner());
    t.0 += kills;
    t.1 += cases;
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        .join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("settlement-faults.json"),
        format!("{{\"kills_survived\": {}, \"cases\": {}}}\n", t.0, t.1),
    )
    .unwrap();
}

// ------------------------------------------------------------ fixture

struct Fixture {
    dir: tempfile::TempDir,
    /// partner and coupon lines, then the first half of the events
    part1: PathBuf,
    /// the second half of the events
    part2: PathBuf,
    cfg: PathBuf,
    partners: Vec<String>,
    coupons: Vec<String>,
    /// event lines; line i has seq i + 1
    events: Vec<String>,
    /// events in part1
    n1: i64,
}

fn fixture(events: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let g = GenConfig {
        seed: 8,
        events,
        partners: 60,
        customers: 600,
        period: Period::parse(PERIOD).unwrap(),
    };
    let mut buf = Vec::new();
    generate(&g, &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (mut partners, mut coupons, mut evs) = (Vec::new(), Vec::new(), Vec::new());
    for l in text.lines() {
        if l.starts_with(r#"{"type":"partner""#) {
            partners.push(l.to_string());
        } else if l.starts_with(r#"{"type":"coupon""#) {
            coupons.push(l.to_string());
        } else {
            assert!(
                l.starts_with(&format!("{{\"seq\":{},", evs.len() + 1)),
                "{l}"
            );
            evs.push(l.to_string());
        }
    }
    let half = evs.len() / 2;
    let join = |ls: &[String]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();
    let part1 = dir.path().join("part1.ndjson");
    let part2 = dir.path().join("part2.ndjson");
    std::fs::write(
        &part1,
        join(&partners) + &join(&coupons) + &join(&evs[..half]),
    )
    .unwrap();
    std::fs::write(&part2, join(&evs[half..])).unwrap();
    let cfg = dir.path().join("programs.toml");
    std::fs::write(&cfg, PROGRAMS).unwrap();
    Fixture {
        dir,
        part1,
        part2,
        cfg,
        partners,
        coupons,
        events: evs,
        n1: half as i64,
    }
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ------------------------------------------------------------ the store

/// Every row of every table, as text, sorted: two stores with the same dump
/// hold the same state.
fn dump(db: &Path) -> String {
    let c = rusqlite::Connection::open(db).unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = String::new();
    for t in tables {
        let mut st = c.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = st.column_count();
        let mut rows: Vec<String> = st
            .query_map([], |r| {
                let mut line = String::new();
                for i in 0..n {
                    use rusqlite::types::ValueRef::*;
                    let v = match r.get_ref(i)? {
                        Null => "NULL".to_string(),
                        Integer(x) => x.to_string(),
                        Real(x) => format!("{x:?}"),
                        Text(b) => format!("{:?}", String::from_utf8_lossy(b)),
                        Blob(b) => format!("x'{}'", hex::encode(b)),
                    };
                    line.push_str(&v);
                    line.push('|');
                }
                Ok(line)
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort();
        out.push_str(&format!("== {t} ({} rows)\n", rows.len()));
        for r in rows {
            out.push_str(&r);
            out.push('\n');
        }
    }
    out
}

fn scalar(db: &Path, sql: &str) -> i64 {
    Store::open(db)
        .unwrap()
        .conn
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// Copies a store whose last writer has exited (WAL checkpointed), with
/// its WAL if one is left.
fn copy_db(from: &Path, to: &Path) {
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", to.display()));
    }
    std::fs::copy(from, to).unwrap();
    let wal = PathBuf::from(format!("{}-wal", from.display()));
    if wal.exists() {
        std::fs::copy(&wal, format!("{}-wal", to.display())).unwrap();
    }
}

fn assert_same(a: &str, b: &str, what: &str) {
    if a != b {
        let (la, lb): (Vec<_>, Vec<_>) = (a.lines().collect(), b.lines().collect());
        let i = la
            .iter()
            .zip(&lb)
            .position(|(x, y)| x != y)
            .unwrap_or(la.len().min(lb.len()));
        panic!(
            "{what}: first difference at line {}:\n  expected {:?}\n  got      {:?}",
            i + 1,
            la.get(i),
            lb.get(i)
        );
    }
}

/// The directory's entries (hidden ones too) and their bytes.
fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

// ------------------------------------------------------------ killing

fn spawn(db: &Path, args: &[&str]) -> std::process::Child {
    Command::new(bin())
        .arg("--db")
        .arg(db)
        .arg("--quiet")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn timed(db: &Path, args: &[&str]) -> Duration {
    let t0 = Instant::now();
    ok(db, args);
    t0.elapsed()
}

/// Starts the command and SIGKILLs it after a seeded random delay within
/// its undisturbed duration (every other time within its second half,
/// where the writes are); true when it was still running (a real kill).
/// When the command had already finished, `full` shrinks to what this run
/// took at most (a busy machine can make the first measurement slow), so the
/// next delays land inside the command again.
fn kill_at_random(db: &Path, args: &[&str], full: &mut Duration, rng: &mut Rng) -> bool {
    let t0 = Instant::now();
    let mut child = spawn(db, args);
    let wait = (full.as_micros() as u64).max(2);
    let delay = if rng.chance(50) {
        rng.below(wait)
    } else {
        wait / 2 + rng.below(wait / 2)
    };
    std::thread::sleep(Duration::from_micros(delay));
    let killed = if child.try_wait().unwrap().is_none() {
        child.kill().unwrap(); // SIGKILL
        true
    } else {
        *full = (*full).min(t0.elapsed()) * 3 / 4;
        false
    };
    child.wait().unwrap();
    killed
}

fn note(seen: &mut std::collections::BTreeMap<String, u64>, what: String) {
    *seen.entry(what).or_insert(0) += 1;
}

/// Calls `attempt` (kill, check what is left, rerun to completion, compare)
/// until `target` kills landed while the process ran, at most 6 x target
/// times; `attempt` says whether its kill landed.
fn kill_loop(
    name: &str,
    target: u64,
    rng: &mut Rng,
    mut attempt: impl FnMut(&mut Rng, u64) -> bool,
) -> u64 {
    let mut killed = 0;
    let mut tries = 0;
    while killed < target && tries < 6 * target {
        if attempt(rng, tries) {
            killed += 1;
        }
        tries += 1;
    }
    assert_eq!(
        killed, target,
        "{name}: only {killed} of {tries} attempts were killed while running"
    );
    killed
}

#[test]
fn sigkills_of_every_command_end_as_an_undisturbed_run() {
    let fx = fixture(3_000);
    let (p1, p2, cfg) = (s(&fx.part1), s(&fx.part2), s(&fx.cfg));
    let import = ["import", p1, p2];
    let run = ["run", "--config", cfg, "--period", PERIOD];
    let close = ["close", "--period", PERIOD];

    // the undisturbed run, one step at a time
    let refdb = fx.path("ref.db");
    let mut t_import = timed(&refdb, &import);
    let d_import = dump(&refdb);
    copy_db(&refdb, &fx.path("imported.db"));
    let mut t_run = timed(&refdb, &run);
    let d_run = dump(&refdb);
    let rows = scalar(&refdb, "SELECT COALESCE(SUM(n), 0) FROM ledger_blocks");
    assert!(rows > 500, "{rows}");
    copy_db(&refdb, &fx.path("ran.db"));
    let mut t_close = timed(&refdb, &close);
    let d_close = dump(&refdb);
    copy_db(&refdb, &fx.path("closed.db"));
    let out_ref = fx.path("out-ref");
    let report = |out: &Path| {
        vec![
            "report".to_string(),
            "--period".into(),
            PERIOD.into(),
            "--out".into(),
            s(out).into(),
        ]
    };
    let t0 = Instant::now();
    ok(
        &refdb,
        &report(&out_ref)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let mut t_report = t0.elapsed();
    let ref_files = listing(&out_ref);
    assert_eq!(ref_files.len(), 6, "{:?}", ref_files.iter().map(|f| &f.0));
    // the files of a store, for the comparisons after a rerun
    let files_of = |db: &Path, out: &Path| {
        let args = report(out);
        ok(db, &args.iter().map(String::as_str).collect::<Vec<_>>());
        let l = listing(out);
        std::fs::remove_dir_all(out).unwrap();
        l
    };
    let draft_files = files_of(&fx.path("ran.db"), &fx.path("out-draft"));
    assert!(draft_files != ref_files, "the draft's report says draft");

    let mut rng = Rng::new(2026);
    let mut kills = 0;
    // where the kills landed (printed with --nocapture)
    let mut seen = std::collections::BTreeMap::new();

    // import: each file is one transaction
    kills += kill_loop("import", 12, &mut rng, |rng, i| {
        let db = fx.path(&format!("k-import-{i}.db"));
        let k = kill_at_random(&db, &import, &mut t_import, rng);
        if db.exists() {
            let n = scalar(&db, "SELECT COALESCE(SUM(n), 0) FROM event_blocks");
            let total = fx.events.len() as i64;
            assert!(
                n == 0 || n == fx.n1 || n == total,
                "a killed import left {n} events (files of {} and {total})",
                fx.n1
            );
            if k {
                note(&mut seen, format!("import left {n} events"));
            }
        }
        ok(&db, &import);
        assert_same(&d_import, &dump(&db), "store after a killed import");
        std::fs::remove_file(&db).unwrap();
        k
    });

    // run: the draft is replaced in one transaction
    kills += kill_loop("run", 12, &mut rng, |rng, i| {
        let db = fx.path(&format!("k-run-{i}.db"));
        copy_db(&fx.path("imported.db"), &db);
        let k = kill_at_random(&db, &run, &mut t_run, rng);
        let n = scalar(&db, "SELECT COALESCE(SUM(n), 0) FROM ledger_blocks");
        assert!(
            n == 0 || n == rows,
            "a killed run left {n} of {rows} ledger rows"
        );
        if k {
            note(&mut seen, format!("run left {n} ledger rows"));
        }
        ok(&db, &run);
        assert_same(&d_run, &dump(&db), "store after a killed run");
        assert!(
            files_of(&db, &fx.path("k-run-out")) == draft_files,
            "the report after a killed run differs"
        );
        std::fs::remove_file(&db).unwrap();
        k
    });

    // close: draft or closed, never in between
    kills += kill_loop("close", 8, &mut rng, |rng, i| {
        let db = fx.path(&format!("k-close-{i}.db"));
        copy_db(&fx.path("ran.db"), &db);
        let k = kill_at_random(&db, &close, &mut t_close, rng);
        let d = dump(&db);
        let closed = scalar(&db, "SELECT COUNT(*) FROM periods WHERE state = 'closed'");
        if k {
            note(&mut seen, format!("close left {closed} closed periods"));
        }
        if closed == 0 {
            assert_same(&d_run, &d, "store after a close killed before its commit");
            ok(&db, &close);
        } else {
            // it had committed: a rerun says so (exit 1) and changes nothing
            let (c, err) = code(&db, &close);
            assert_eq!(c, 1, "{err}");
            assert!(err.contains("is closed"), "{err}");
        }
        assert_same(&d_close, &dump(&db), "store after a killed close");
        assert!(
            files_of(&db, &fx.path("k-close-out")) == ref_files,
            "the report after a killed close differs"
        );
        std::fs::remove_file(&db).unwrap();
        k
    });

    // report: each file whole or absent; the rerun leaves no temporary files
    let db = fx.path("report.db");
    copy_db(&fx.path("closed.db"), &db);
    kills += kill_loop("report", 12, &mut rng, |rng, i| {
        let out = fx.path(&format!("k-out-{i}"));
        let args = report(&out);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let k = kill_at_random(&db, &args, &mut t_report, rng);
        if k {
            let files = if out.exists() {
                listing(&out)
            } else {
                Vec::new()
            };
            let temps = files.iter().filter(|f| f.0.starts_with('.')).count();
            note(
                &mut seen,
                format!(
                    "report left {} files, {temps} temporary",
                    files.len() - temps
                ),
            );
        }
        if out.exists() {
            for (name, bytes) in listing(&out) {
                if name.starts_with('.') {
                    continue; // a temporary file, never an output
                }
                let want = &ref_files.iter().find(|f| f.0 == name).unwrap().1;
                assert!(bytes == *want, "a killed report left {name} half-written");
            }
        }
        ok(&db, &args);
        assert!(
            listing(&out) == ref_files,
            "the report after a killed one differs: {:?}",
            listing(&out).iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        std::fs::remove_dir_all(&out).unwrap();
        k
    });
    assert_same(&d_close, &dump(&db), "report changed the store");

    // pull: each page is committed with its cursor
    let srv = serve(&fx, Fault::None);
    let pull_args = ["pull", "--edge", &srv.url, "--token", TOKEN];
    let pdb = fx.path("pull-ref.db");
    let mut t_pull = timed(&pdb, &pull_args);
    let d_pull = dump(&pdb);
    assert_eq!(
        scalar(&pdb, "SELECT COALESCE(SUM(n), 0) FROM event_blocks"),
        fx.events.len() as i64
    );
    kills += kill_loop("pull", 12, &mut rng, |rng, i| {
        let db = fx.path(&format!("k-pull-{i}.db"));
        let k = kill_at_random(&db, &pull_args, &mut t_pull, rng);
        if db.exists() {
            let st = Store::open(&db).unwrap();
            let cursor: i64 = st
                .meta("pull_cursor")
                .unwrap()
                .map_or(0, |c| c.parse().unwrap());
            let rows = settlement::events::all_rows(&st.conn).unwrap();
            let n = rows.len() as i64;
            // seq is the third column
            let max = rows
                .iter()
                .filter_map(|r| match r[2] {
                    rusqlite::types::Value::Integer(s) => Some(s),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            assert!(
                n == cursor && max == cursor,
                "a killed pull left {n} events up to seq {max} with cursor {cursor}"
            );
            if k {
                note(&mut seen, format!("pull left cursor {cursor}"));
            }
        }
        ok(&db, &pull_args);
        assert_same(&d_pull, &dump(&db), "store after a killed pull");
        std::fs::remove_file(&db).unwrap();
        k
    });

    // a pulled store settles like an imported one
    ok(&pdb, &run);
    ok(&pdb, &close);
    let out_pull = fx.path("out-pull");
    let args = report(&out_pull);
    ok(&pdb, &args.iter().map(String::as_str).collect::<Vec<_>>());
    for (name, bytes) in listing(&out_pull) {
        let want = &ref_files.iter().find(|f| f.0 == name).unwrap().1;
        assert!(bytes == *want, "{name}: pulled and imported stores differ");
    }

    for (what, n) in &seen {
        eprintln!("{n:3} x {what}");
    }
    assert_eq!(kills, 56);
    tally(kills, 5);
}

// ------------------------------------------------------------ inputs

/// Runs a command that must fail with `want`, a short message naming each of
/// `needles`, and no panic; returns the message.
fn fails(db: &Path, args: &[&str], want: i32, needles: &[&str]) -> String {
    let (c, err) = code(db, args);
    assert_eq!(c, want, "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {n:?} not in {err}");
    }
    assert!(err.len() < 2000, "a {} byte error message", err.len());
    err
}

#[test]
fn corrupt_and_truncated_inputs_are_clear_errors_with_nothing_imported() {
    let fx = fixture(400);
    let db = fx.path("s.db");
    ok(&db, &["import", s(&fx.part1)]);
    let before = dump(&db);
    let good = std::fs::read(&fx.part2).unwrap();
    let lines: Vec<&[u8]> = good.split_inclusive(|b| *b == b'\n').collect();
    let mut cases = 0;

    // truncated mid-line: the last line is the bad one
    let cut = good.len() - lines.last().unwrap().len() / 2;
    let f = fx.path("truncated.ndjson");
    std::fs::write(&f, &good[..cut]).unwrap();
    let line = format!("truncated.ndjson:{}:", lines.len());
    fails(&db, &["import", s(&f)], 2, &[&line, "nothing imported"]);
    assert_same(&before, &dump(&db), "store after a truncated file");
    cases += 1;

    // invalid UTF-8 in line 10
    let mut bad = good.clone();
    let at: usize = lines[..9].iter().map(|l| l.len()).sum::<usize>() + 20;
    bad[at] = 0xff;
    let f = fx.path("latin1.ndjson");
    std::fs::write(&f, &bad).unwrap();
    fails(
        &db,
        &["import", s(&f)],
        2,
        &["latin1.ndjson:10:", "invalid UTF-8"],
    );
    assert_same(&before, &dump(&db), "store after invalid UTF-8");
    // with --skip-invalid the line is set aside and the rest imported
    let rej = fx.path("latin1.rejects");
    ok(
        &db,
        &["import", "--skip-invalid", "--rejects", s(&rej), s(&f)],
    );
    // the line as read, its bad byte too
    let line10 = bad.split(|&b| b == b'\n').nth(9).unwrap();
    assert_eq!(std::fs::read(&rej).unwrap(), [line10, b"\n"].concat());
    assert_eq!(
        scalar(&db, "SELECT COALESCE(SUM(n), 0) FROM event_blocks"),
        fx.events.len() as i64 - 1
    );
    let db = fx.path("s2.db");
    ok(&db, &["import", s(&fx.part1)]);
    cases += 1;

    // a 16 MiB line (an id no one could have): a short message with its line
    let mut huge = good[..lines[..5].iter().map(|l| l.len()).sum::<usize>()].to_vec();
    huge.extend_from_slice(
        br#"{"seq":999999,"id":"big","type":"click","ts":"2026-11-02T00:00:00.000Z","program":""#,
    );
    huge.extend(std::iter::repeat_n(b'x', 16 << 20));
    huge.extend_from_slice(b"\"}\n");
    huge.extend_from_slice(&good);
    let f = fx.path("huge.ndjson");
    std::fs::write(&f, &huge).unwrap();
    fails(&db, &["import", s(&f)], 2, &["huge.ndjson:6:", "`program`"]);
    assert_same(&before, &dump(&db), "store after a huge line");
    cases += 1;

    // bytes that are not text at all
    let f = fx.path("garbage.ndjson");
    let mut rng = Rng::new(5);
    let junk: Vec<u8> = (0..4096).map(|_| rng.below(256) as u8).collect();
    std::fs::write(&f, &junk).unwrap();
    fails(&db, &["import", s(&f)], 2, &["garbage.ndjson:1:"]);
    assert_same(&before, &dump(&db), "store after a binary file");
    cases += 1;

    // none of it left a trace: the good file imports as if first
    ok(&db, &["import", s(&fx.part2)]);
    let reference = fx.path("ref.db");
    ok(&reference, &["import", s(&fx.part1), s(&fx.part2)]);
    assert_same(&dump(&reference), &dump(&db), "store after the bad files");

    // truncated programs.toml: cut inside a string, inside a table header
    // and inside an inline table; then seeded random cuts, which end in a
    // located error or (a prefix that is itself valid) a normal run
    ok(&db, &["run", "--config", s(&fx.cfg), "--period", PERIOD]);
    let drafted = dump(&db);
    copy_db(&db, &fx.path("drafted.db"));
    let toml = PROGRAMS.as_bytes();
    let find = |pat: &str| PROGRAMS.find(pat).unwrap();
    let mut cuts = vec![
        find("\"affiliate\"") + 4,
        find("[[programs.rules]]") + 9,
        find("{ from = \"100\"") + 8,
    ];
    let mut rng = Rng::new(11);
    for _ in 0..6 {
        cuts.push(rng.below(toml.len() as u64) as usize);
    }
    let cfg = fx.path("cut.toml");
    for (i, cut) in cuts.iter().enumerate() {
        std::fs::write(&cfg, &toml[..*cut]).unwrap();
        let (c, err) = code(&db, &["run", "--config", s(&cfg), "--period", PERIOD]);
        assert!(!err.contains("panicked"), "{err}");
        if i < 3 || c != 0 {
            assert_eq!(c, 1, "cut at {cut}: {err}");
            assert!(err.contains("cut.toml:"), "cut at {cut}: {err}");
            assert_same(&drafted, &dump(&db), "store after a bad programs.toml");
        } else {
            copy_db(&fx.path("drafted.db"), &db); // a valid prefix ran
        }
        cases += 1;
    }
    // back to the real configuration: nothing was lost
    ok(&db, &["run", "--config", s(&fx.cfg), "--period", PERIOD]);
    assert_same(&drafted, &dump(&db), "store after the truncated configs");

    // truncated fx.csv: every cut inside its last row
    let fxcsv =
        "date,currency,rate\n2026-10-01,EUR,1.08\n2026-11-01,EUR,1.09\n2026-11-01,GBP,1.27\n";
    let rows_start = fxcsv.trim_end().rfind('\n').unwrap() + 1;
    let prog = fx.path("fx-programs.toml");
    std::fs::write(&prog, format!("fx = \"fx.csv\"\n{PROGRAMS}")).unwrap();
    for cut in rows_start + 1..fxcsv.len() - 1 {
        std::fs::write(fx.path("fx.csv"), &fxcsv[..cut]).unwrap();
        let (c, err) = code(&db, &["run", "--config", s(&prog), "--period", PERIOD]);
        assert!(!err.contains("panicked"), "{err}");
        if c != 0 {
            assert_eq!(c, 1, "fx.csv cut at {cut}: {err}");
            assert!(err.contains("fx.csv:4: "), "fx.csv cut at {cut}: {err}");
            assert_same(&drafted, &dump(&db), "store after a bad fx.csv");
        } else {
            // only a whole row, or a rate cut to a shorter decimal, parses
            let row = &fxcsv[rows_start..cut];
            assert!(row.starts_with("2026-11-01,GBP,1"), "{row:?} was accepted");
        }
        cases += 1;
    }
    tally(0, cases);
}

#[test]
fn a_corrupt_store_is_a_clear_error_and_is_left_as_it_was() {
    let fx = fixture(400);
    let db = fx.path("s.db");
    ok(&db, &["import", s(&fx.part1), s(&fx.part2)]);
    ok(&db, &["run", "--config", s(&fx.cfg), "--period", PERIOD]);
    assert!(!PathBuf::from(format!("{}-wal", db.display())).exists());
    let bytes = std::fs::read(&db).unwrap();
    let out = fx.path("out");
    let commands: [&[&str]; 3] = [
        &["report", "--period", PERIOD, "--out", s(&out)],
        &["run", "--config", s(&fx.cfg), "--period", PERIOD],
        &["import", s(&fx.part1)],
    ];
    let mut cases = 0;
    for (what, corrupt) in [
        ("truncated to half", bytes[..bytes.len() / 2].to_vec()),
        ("truncated to 3 pages", bytes[..3 * 16384].to_vec()),
        ("a garbage header", {
            let mut b = bytes.clone();
            b[..100].copy_from_slice(&[0x5a; 100]);
            b
        }),
    ] {
        let bad = fx.path("bad.db");
        for cmd in commands {
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", bad.display()));
            }
            std::fs::write(&bad, &corrupt).unwrap();
            let err = fails(&bad, cmd, 2, &["bad.db: settlement store: "]);
            assert!(
                err.contains("malformed") || err.contains("not a database"),
                "{what}: {err}"
            );
            assert!(
                std::fs::read(&bad).unwrap() == corrupt,
                "{what}: {cmd:?} wrote to a corrupt store"
            );
            assert!(
                !out.join("statements.csv").exists(),
                "{what}: report wrote files from a corrupt store"
            );
            cases += 1;
        }
    }
    tally(0, cases);
}

// ------------------------------------------------------------ export API

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    None,
    /// The first n requests answer 500.
    Fail500(usize),
    /// Every request for this cursor answers 500.
    Fail500At(u64),
    /// The first n requests stall past the client's timeout.
    Stall(usize),
    /// Every request for this cursor stalls.
    StallAt(u64),
    /// At this cursor, X-Next-Cursor goes back by 50.
    BackwardsAt(u64),
    /// At this cursor, the previous page again, and the cursor stays.
    RepeatAt(u64),
    /// Every page with new records starts 20 records before the cursor and
    /// lists each record twice (duplicates the client must not count twice).
    Duplicates,
    /// The first n answers close the connection halfway through the body.
    ShortBody(usize),
    /// At this cursor, the body ends mid-line (Content-Length agrees).
    CutLineAt(u64),
    /// The partner registry answers 500.
    PartnersDown,
    /// X-Next-Cursor is not a number (or absent): the client goes by the
    /// page's last seq.
    GarbageCursor,
}

const PAGE: u64 = 100;

struct Server {
    url: String,
    fault: Arc<Mutex<(Fault, usize)>>,
}

impl Server {
    fn set(&self, f: Fault) {
        *self.fault.lock().unwrap() = (f, 0);
    }
}

fn serve(fx: &Fixture, fault: Fault) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let fault = Arc::new(Mutex::new((fault, 0usize)));
    let data = Arc::new((fx.events.clone(), fx.partners.clone(), fx.coupons.clone()));
    let f2 = fault.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (f, d) = (f2.clone(), data.clone());
            std::thread::spawn(move || handle(conn, &f, &d));
        }
    });
    Server { url, fault }
}

type Data = (Vec<String>, Vec<String>, Vec<String>);

fn handle(mut conn: TcpStream, fault: &Mutex<(Fault, usize)>, d: &Data) {
    let Some(Request { path, auth, .. }) = read_request(&conn) else {
        return;
    };
    let (f, nth) = {
        let mut g = fault.lock().unwrap();
        g.1 += 1;
        (g.0, g.1)
    };
    let after: u64 = path
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("after="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let events = path.starts_with("/export/v1/events");
    let reply = |conn: &mut TcpStream, status: &str, body: &str, cursor: Option<u64>| {
        let mut r = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        match cursor {
            Some(_) if f == Fault::GarbageCursor => r.push_str("X-Next-Cursor: next\r\n"),
            Some(c) => r.push_str(&format!("X-Next-Cursor: {c}\r\n")),
            None => {}
        }
        r.push_str("\r\n");
        r.push_str(body);
        let _ = conn.write_all(r.as_bytes());
    };
    if auth != format!("Bearer {TOKEN}") {
        return reply(
            &mut conn,
            "401 Unauthorized",
            "{\"error\":\"unauthorized\"}",
            None,
        );
    }
    let stall = || std::thread::sleep(Duration::from_secs(3));
    match f {
        Fault::Fail500(n) if nth <= n => {
            return reply(&mut conn, "500 Internal Server Error", "oops", None)
        }
        Fault::Fail500At(a) if events && after == a => {
            return reply(&mut conn, "500 Internal Server Error", "oops", None)
        }
        Fault::Stall(n) if nth <= n => {
            stall();
            return;
        }
        Fault::StallAt(a) if events && after == a => {
            stall();
            return;
        }
        Fault::PartnersDown if path == "/export/v1/partners" => {
            return reply(&mut conn, "500 Internal Server Error", "down", None)
        }
        _ => {}
    }
    let lines = |v: &[String]| v.iter().map(|l| format!("{l}\n")).collect::<String>();
    let (body, cursor) = if events {
        let page = |from: u64| {
            let from = from.min(d.0.len() as u64) as usize;
            let to = (from + PAGE as usize).min(d.0.len());
            (&d.0[from..to], to as u64)
        };
        match f {
            Fault::BackwardsAt(a) if after == a => {
                let (p, _) = page(after);
                (lines(p), Some(after - 50))
            }
            Fault::RepeatAt(a) if after == a => {
                let (p, _) = page(after - PAGE);
                (lines(p), Some(after))
            }
            Fault::Duplicates if after < d.0.len() as u64 => {
                let (_, next) = page(after);
                let p = &d.0[after.saturating_sub(20) as usize..next as usize];
                let doubled: Vec<String> = p.iter().flat_map(|l| [l.clone(), l.clone()]).collect();
                (lines(&doubled), Some(next))
            }
            Fault::CutLineAt(a) if after == a => {
                let (p, next) = page(after);
                let b = lines(p);
                (b[..b.len() - 40].to_string(), Some(next))
            }
            _ => {
                let (p, next) = page(after);
                (lines(p), Some(next.max(after)))
            }
        }
    } else {
        match path.as_str() {
            "/export/v1/partners" => (lines(&d.1), None),
            "/export/v1/coupons" => (lines(&d.2), None),
            _ => return reply(&mut conn, "404 Not Found", "", None),
        }
    };
    if let Fault::ShortBody(n) = f {
        if nth <= n {
            // promise the whole body, send half, hang up
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nX-Next-Cursor: {}\r\nConnection: close\r\n\r\n",
                body.len(),
                cursor.unwrap_or(0)
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body.as_bytes()[..body.len() / 2]);
            return;
        }
    }
    reply(&mut conn, "200 OK", &body, cursor)
}

fn opts(url: &str) -> PullOptions {
    let mut o = PullOptions::new(url, TOKEN);
    o.backoff = Duration::from_millis(5);
    o.timeout = Duration::from_secs(1);
    o.tries = 3;
    o.progress = false;
    o
}

fn cursor_and_events(db: &Path) -> (i64, i64) {
    let st = Store::open(db).unwrap();
    let c = st
        .meta("pull_cursor")
        .unwrap()
        .map_or(0, |c| c.parse().unwrap());
    let n = st
        .conn
        .query_row("SELECT COALESCE(SUM(n), 0) FROM event_blocks", [], |r| {
            r.get(0)
        })
        .unwrap();
    (c, n)
}

#[test]
fn a_misbehaving_export_api_never_imports_twice_or_skips() {
    let fx = fixture(1_000);
    let total = fx.events.len() as u64;
    assert!(total > 5 * PAGE);
    let srv = serve(&fx, Fault::None);
    let reference = fx.path("ref.db");
    let r = pull(&mut Store::open(&reference).unwrap(), &opts(&srv.url)).unwrap();
    assert_eq!(
        (r.counts.new, r.counts.duplicate, r.cursor),
        (total, 0, total)
    );
    let want = dump(&reference);
    let mut cases = 0;

    // recovers by itself: the same store as an undisturbed pull
    for f in [
        Fault::Fail500(2),
        Fault::Stall(1),
        Fault::ShortBody(2),
        Fault::Duplicates,
        Fault::GarbageCursor,
    ] {
        srv.set(f);
        let db = fx.path(&format!("{f:?}.db"));
        let r = pull(&mut Store::open(&db).unwrap(), &opts(&srv.url))
            .unwrap_or_else(|e| panic!("{f:?}: {e}"));
        assert_eq!((r.counts.new, r.cursor), (total, total), "{f:?}");
        if f == Fault::Duplicates {
            assert!(r.counts.duplicate > total, "{f:?}: {r:?}");
        }
        assert_same(&want, &dump(&db), &format!("store after {f:?}"));
        cases += 1;
    }

    // fails with a clear error; the pages before it are committed with
    // their cursor, nothing of the bad page is; a later pull completes
    let at = 3 * PAGE;
    for (f, exit, needle) in [
        (Fault::Fail500At(at), 3, "gave up after 3 tries: HTTP 500"),
        (Fault::StallAt(at), 3, "gave up after 3 tries"),
        (Fault::BackwardsAt(at), 3, "goes backwards"),
        (Fault::RepeatAt(at), 3, "stays at 300"),
        (Fault::CutLineAt(at), 2, "line 100"),
        (Fault::PartnersDown, 3, "/export/v1/partners"),
    ] {
        srv.set(f);
        let db = fx.path(&format!("{f:?}.db"));
        let e = pull(&mut Store::open(&db).unwrap(), &opts(&srv.url)).unwrap_err();
        assert_eq!(e.exit_code(), exit, "{f:?}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(needle), "{f:?}: {msg}");
        let stopped = if f == Fault::PartnersDown { total } else { at };
        assert_eq!(
            cursor_and_events(&db),
            (stopped as i64, stopped as i64),
            "{f:?}"
        );
        srv.set(Fault::None);
        let r = pull(&mut Store::open(&db).unwrap(), &opts(&srv.url)).unwrap();
        assert_eq!(r.counts.duplicate, 0, "{f:?}: {r:?}");
        assert_same(&want, &dump(&db), &format!("store after {f:?} and a retry"));
        cases += 1;
    }

    // through the binary: exit 3 and nothing imported
    srv.set(Fault::None);
    let db = fx.path("cli.db");
    fails(
        &db,
        &["pull", "--edge", &srv.url, "--token", "wrong"],
        3,
        &["HTTP 401", "--token"],
    );
    assert_eq!(cursor_and_events(&db), (0, 0));
    cases += 1;
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }; // nothing listens there any more
    fails(
        &db,
        &["pull", "--edge", &closed, "--token", TOKEN],
        3,
        &["gave up after 5 tries"],
    );
    assert_eq!(cursor_and_events(&db), (0, 0));
    cases += 1;
    srv.set(Fault::BackwardsAt(PAGE));
    fails(
        &db,
        &["pull", "--edge", &srv.url, "--token", TOKEN],
        3,
        &["goes backwards"],
    );
    assert_eq!(cursor_and_events(&db), (PAGE as i64, PAGE as i64));
    srv.set(Fault::None);
    ok(&db, &["pull", "--edge", &srv.url, "--token", TOKEN]);
    assert_same(&want, &dump(&db), "store after the CLI faults");
    cases += 1;
    tally(0, cases);
}

// ------------------------------------------------------------ nightly

/// Every file under `dir`, with its path relative to it.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    if !dir.exists() {
        return v;
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            for (n, b) in tree(&e.path()) {
                v.push((format!("{name}/{n}"), b));
            }
        } else {
            v.push((name, std::fs::read(e.path()).unwrap()));
        }
    }
    v.sort();
    v
}

fn names(t: &[(String, Vec<u8>)]) -> Vec<&str> {
    t.iter().map(|f| f.0.as_str()).collect()
}

#[test]
fn a_killed_nightly_reruns_to_the_same_store_and_reports() {
    let fx = fixture(2_000);
    let imported = fx.path("imported.db");
    ok(&imported, &["import", s(&fx.part1), s(&fx.part2)]);
    let nightly_cfg = fx.path("settlement.toml");
    std::fs::write(
        &nightly_cfg,
        "programs = \"programs.toml\"\nout = \"reports\"\ngrace_days = 3\n",
    )
    .unwrap();
    let reports = fx.path("reports");
    let nightly = [
        "nightly",
        "--config",
        s(&nightly_cfg),
        "--now",
        "2026-12-10",
    ];

    // undisturbed: November run, closed and reported, December run and reported
    let refdb = fx.path("ref.db");
    copy_db(&imported, &refdb);
    let mut full = timed(&refdb, &nightly);
    let want_store = dump(&refdb);
    let want = tree(&reports);
    // December, a draft, has no payout files (payouts.manual.csv)
    assert_eq!(want.len(), 13, "{:?}", names(&want));
    assert!(!names(&want)
        .iter()
        .any(|n| n.starts_with("2026-12/payouts.manual")));
    assert!(read(&reports.join("2026-11/report.html")).contains("<b>closed</b>"));
    std::fs::remove_dir_all(&reports).unwrap();

    // the state a nightly killed between November's close and its report
    // leaves, over the draft report of the night before
    let db = fx.path("between.db");
    copy_db(&imported, &db);
    ok(
        &db,
        &[
            "nightly",
            "--config",
            s(&nightly_cfg),
            "--now",
            "2026-12-02",
        ],
    );
    assert!(read(&reports.join("2026-11/report.html")).contains("<b>draft</b>"));
    ok(&db, &["run", "--config", s(&fx.cfg), "--period", PERIOD]);
    ok(&db, &["close", "--period", PERIOD]);
    ok(&db, &nightly);
    assert!(
        tree(&reports) == want,
        "after a close without its report: {:?}",
        names(&tree(&reports))
    );
    assert_same(
        &want_store,
        &dump(&db),
        "store after a close without its report",
    );
    std::fs::remove_dir_all(&reports).unwrap();

    let mut rng = Rng::new(12);
    let mut seen = std::collections::BTreeMap::new();
    let kills = kill_loop("nightly", 8, &mut rng, |rng, i| {
        let db = fx.path(&format!("k-nightly-{i}.db"));
        copy_db(&imported, &db);
        let k = kill_at_random(&db, &nightly, &mut full, rng);
        if k {
            let closed = scalar(&db, "SELECT COUNT(*) FROM periods WHERE state = 'closed'");
            let files = tree(&reports)
                .iter()
                .filter(|f| !f.0.contains("/."))
                .count();
            note(
                &mut seen,
                format!("nightly left {closed} closed, {files} files"),
            );
        }
        ok(&db, &nightly);
        let got = tree(&reports);
        assert!(got == want, "after a killed nightly: {:?}", names(&got));
        assert_same(&want_store, &dump(&db), "store after a killed nightly");
        std::fs::remove_dir_all(&reports).unwrap();
        std::fs::remove_file(&db).unwrap();
        k
    });
    for (what, n) in &seen {
        eprintln!("{n:3} x {what}");
    }
    tally(kills, 2);
}
