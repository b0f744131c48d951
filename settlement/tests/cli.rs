//! The CLI contract: exit codes, error messages with file and line,
//! idempotent imports, closed periods.

mod common;
use common::*;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

const PROGRAMS: &str = "currency = \"USD\"\n[[programs]]\nid = \"p\"\nmodel = \"affiliate\"\n[[programs.rules]]\nevent = \"sale\"\npercent = \"10\"\n";
const PARTNER: &str = r#"{"type":"partner","id":"a","program":"p","status":"approved"}"#;

/// A store in `dir` with examples/`name`'s events, November run.
fn example_november(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let x = repo().join("examples").join(name);
    let db = dir.join("s.db");
    ok(&db, &["import", x.join("events.ndjson").to_str().unwrap()]);
    let cfg = x.join("programs.toml");
    let cfg = cfg.to_str().unwrap();
    ok(&db, &["run", "--config", cfg, "--period", "2026-11"]);
    db
}

fn sale(id: &str, day: u32, amount: &str) -> String {
    format!(
        r#"{{"id":"{id}","type":"conversion","ts":"2026-11-{day:02}T10:00:00.000Z","program":"p","partner":"a","click_id":"c","click_ts":"2026-11-{day:02}T09:00:00.000Z","event":"sale","txn_id":"{id}","amount":"{amount}","currency":"USD","customer":"cust_{id}"}}"#
    )
}

#[test]
fn bad_line_imports_nothing_from_the_file_and_exits_2() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let f = write(
        t.path(),
        "e.ndjson",
        &format!(
            "{PARTNER}\n{}\n{{\"type\":\"conversion\",\"id\":\"x\"}}\n{}\n",
            sale("e1", 1, "10"),
            sale("e2", 2, "10")
        ),
    );
    let (c, err) = code(&db, &["import", &f]);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("e.ndjson:3:"), "{err}");
    assert!(err.contains("missing `ts`"), "{err}");
    let cfg = write(t.path(), "p.toml", PROGRAMS);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    report(&db, "2026-11", &t.path().join("o"), &[]);
    assert_eq!(
        read(&t.path().join("o/statements.csv")).lines().count(),
        1,
        "nothing was imported"
    );

    // --skip-invalid sets the line aside and imports the rest
    let (c, err) = code(&db, &["import", "--skip-invalid", &f]);
    assert_eq!(c, 0, "{err}");
    assert_eq!(
        read(&t.path().join("e.ndjson.rejects.ndjson")),
        "{\"type\":\"conversion\",\"id\":\"x\"}\n"
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    report(&db, "2026-11", &t.path().join("o"), &[]);
    assert!(read(&t.path().join("o/statements.csv")).contains("2026-11,a,p,USD,2.00,"));
}

#[test]
fn import_is_idempotent_and_rerun_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let f = write(
        t.path(),
        "e.ndjson",
        &format!(
            "{PARTNER}\n{}\n{}\n",
            sale("e1", 1, "10"),
            sale("e2", 2, "33.35")
        ),
    );
    let cfg = write(t.path(), "p.toml", PROGRAMS);
    ok(&db, &["import", &f]);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    let out = t.path().join("o");
    report(&db, "2026-11", &out, &[]);
    let first: Vec<String> = ["statements.csv", "ledger.csv", "report.html"]
        .iter()
        .map(|f| read(&out.join(f)))
        .collect();
    let (_, err) = code(&db, &["import", &f]);
    assert!(err.contains("0 new events, 2 already known"), "{err}");
    let (_, err) = code(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    assert!(err.contains("unchanged"), "{err}");
    report(&db, "2026-11", &out, &[]);
    let again: Vec<String> = ["statements.csv", "ledger.csv", "report.html"]
        .iter()
        .map(|f| read(&out.join(f)))
        .collect();
    assert_eq!(first, again);
    // 10% of 33.35 = 3.335 -> 3.34 (half-even: 3.335 has an odd 3 before the 5)
    assert!(first[1].contains(",commission,3.34,USD,"), "{}", first[1]);
    assert!(
        first[0].contains("2026-11,a,p,USD,4.34,0.00,0.00,0.00,0.00,4.34,0.00"),
        "{}",
        first[0]
    );
}

#[test]
fn closed_period_refuses_run_with_exit_1_and_late_facts_adjust() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(t.path(), "p.toml", PROGRAMS);
    ok(
        &db,
        &[
            "import",
            &write(
                t.path(),
                "a.ndjson",
                &format!("{PARTNER}\n{}\n", sale("e1", 1, "100")),
            ),
        ],
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    ok(&db, &["close", "--period", "2026-11"]);
    let (c, err) = code(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    assert_eq!(c, 1, "{err}");
    assert!(err.contains("closed"), "{err}");
    let (c, _) = code(&db, &["run", "--config", &cfg, "--period", "2026-10"]);
    assert_eq!(c, 1);
    let (c, _) = code(&db, &["close", "--period", "2026-11"]);
    assert_eq!(c, 1);
    // a November sale arrives late
    ok(
        &db,
        &[
            "import",
            &write(t.path(), "b.ndjson", &format!("{}\n", sale("e2", 20, "50"))),
        ],
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
    let out = t.path().join("dec");
    report(&db, "2026-12", &out, &[]);
    let st = read(&out.join("statements.csv"));
    assert!(
        st.contains("2026-12,a,p,USD,0.00,0.00,5.00,0.00,0.00,5.00,0.00"),
        "{st}"
    );
    let ledger = read(&out.join("ledger.csv"));
    let adj = ledger
        .lines()
        .find(|l| l.contains(",adjustment,"))
        .expect("an adjustment");
    let id = adj.split(',').next().unwrap();
    let words = ok(&db, &["explain", id]);
    assert!(
        words.contains("late facts for the closed period 2026-11 (arrived since the close: e2, sale dated 2026-11-20)")
            && words.contains("adjusted by 5.00 USD; as restated: 10% of 50.00 USD = 5.00 USD"),
        "{words}"
    );
    assert!(words.contains("(the date holds count from)"), "{words}");
    // the entry it adjusts was never booked (the sale came after the
    // close): explain says so and names the adjustment (it was exit 1)
    let adjusts = adj.split(',').nth(11).unwrap();
    assert!(adjusts.starts_with("le_") && !read(&out.join("ledger.csv")).starts_with(adjusts));
    let words = ok(&db, &["explain", adjusts]);
    assert!(
        words.contains("no ledger entry; the entry a closed period's view computed")
            && words.contains(&format!("{id}: adjustment of 5.00 USD in 2026-12")),
        "{words}"
    );
    let (c, _) = code(&db, &["explain", "le_00000000000000000000"]);
    assert_eq!(c, 1);
    // a payout is never held
    let payout = ledger
        .lines()
        .find(|l| l.contains(",payout,"))
        .expect("a payout");
    let words = ok(&db, &["explain", payout.split(',').next().unwrap()]);
    assert!(words.contains("(never held)"), "{words}");
    // November's report is unchanged
    let nov = t.path().join("nov");
    report(&db, "2026-11", &nov, &[]);
    assert!(read(&nov.join("statements.csv")).contains("2026-11,a,p,USD,10.00,"));
}

/// Periods close in order: with November closed, January cannot close
/// while December was never run. (Before, it could: December had no draft
/// for the check to see, was frozen with January, and its sale was paid in
/// no period.) `run` of January warns; December, once run and closed,
/// pays its sale and January closes.
#[test]
fn a_month_never_run_cannot_be_skipped_by_close() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(t.path(), "p.toml", PROGRAMS);
    let dec = sale("e2", 6, "300").replace("2026-11-", "2026-12-");
    let jan = sale("e3", 6, "500").replace("2026-11-", "2027-01-");
    let events = format!("{PARTNER}\n{}\n{dec}\n{jan}\n", sale("e1", 5, "1000"));
    ok(&db, &["import", &write(t.path(), "a.ndjson", &events)]);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    ok(&db, &["close", "--period", "2026-11"]);
    let o = settlement(&db, &["run", "--config", &cfg, "--period", "2027-01"]);
    assert!(o.status.success());
    let warned = String::from_utf8_lossy(&o.stderr);
    assert!(
        warned.contains("warning: 2026-12 has never been run"),
        "{warned}"
    );
    let (c, err) = code(&db, &["close", "--period", "2027-01"]);
    assert_eq!(c, 1, "{err}");
    assert!(
        err.contains("period 2026-12 has never been run: periods close in order, so run and close 2026-12 before 2027-01"),
        "{err}"
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
    let (c, err) = code(&db, &["close", "--period", "2027-01"]);
    assert_eq!(c, 1, "{err}");
    assert!(err.contains("period 2026-12 is still open"), "{err}");
    ok(&db, &["close", "--period", "2026-12"]);
    let out = t.path().join("dec");
    report(&db, "2026-12", &out, &[]);
    assert_eq!(
        read(&out.join("payouts.csv")).lines().nth(1),
        Some("2026-12,a,USD,30.00,PO-2026-12-a"),
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2027-01"]);
    ok(&db, &["close", "--period", "2027-01"]);
}

/// The same before any period is closed: October has a sale and was never
/// run, so November's close is refused (before, October's sale was booked
/// in no period, and `run 2026-10` was then refused as frozen). A deal
/// registration alone books nothing, so a month holding only one is no
/// month to run. `close --first` settles from November on on purpose
/// (history imported for attribution); it is refused once a period is
/// closed.
#[test]
fn a_first_close_cannot_skip_a_month_with_sales() {
    let t = tempfile::tempdir().unwrap();
    let cfg = write(t.path(), "p.toml", PROGRAMS);
    let oct = sale("e0", 15, "100").replace("2026-11-", "2026-10-");
    let deal = r#"{"id":"d1","type":"deal","ts":"2026-06-01T12:00:00.000Z","program":"p","partner":"a","customer":"acme","status":"approved","approved_at":"2026-06-02T12:00:00.000Z"}"#;
    let events = format!("{PARTNER}\n{deal}\n{oct}\n{}\n", sale("e1", 5, "1000"));
    let file = write(t.path(), "a.ndjson", &events);
    let db = t.path().join("s.db");
    ok(&db, &["import", &file]);
    let o = settlement(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    assert!(o.status.success());
    let warned = String::from_utf8_lossy(&o.stderr);
    assert!(
        warned.contains("warning: 2026-10 has never been run") && warned.contains("--first"),
        "{warned}"
    );
    let (c, err) = code(&db, &["close", "--period", "2026-11"]);
    assert_eq!(c, 1, "{err}");
    assert!(
        err.contains("period 2026-10 has never been run") && err.contains("close it with --first"),
        "{err}"
    );
    // in order: October pays its 10.00, then November 100.00; June (the
    // deal's month) is never asked for
    ok(&db, &["run", "--config", &cfg, "--period", "2026-10"]);
    ok(&db, &["close", "--period", "2026-10"]);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    ok(&db, &["close", "--period", "2026-11"]);
    let out = t.path().join("oct");
    report(&db, "2026-10", &out, &[]);
    assert_eq!(
        read(&out.join("payouts.csv")).lines().nth(1),
        Some("2026-10,a,USD,10.00,PO-2026-10-a"),
    );

    // on purpose: November is the first settled period
    let db = t.path().join("first.db");
    ok(&db, &["import", &file]);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    ok(&db, &["close", "--period", "2026-11", "--first"]);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
    let (c, err) = code(&db, &["close", "--period", "2026-12", "--first"]);
    assert_eq!(c, 1, "{err}");
    assert!(err.contains("2026-11 is closed already"), "{err}");
    ok(&db, &["close", "--period", "2026-12"]);
}

/// `erase` changes no money: a self-referral stays rejected once its
/// customer is a pseudonym without its email hash. In examples/prop-firm
/// customer u_5 has trader_tom's email hash (ev_p6, rejected); in
/// examples/saas-affiliate customer aff_silver is that partner (ev_009).
/// Before, the rerun after the erasure paid both: trader_tom 39.30 became
/// 99.30.
#[test]
fn erasing_a_self_referring_customer_pays_nothing_more() {
    let t = tempfile::tempdir().unwrap();
    for (example, customer) in [("prop-firm", "u_5"), ("saas-affiliate", "aff_silver")] {
        let dir = repo().join("examples").join(example);
        let db = t.path().join(format!("{example}.db"));
        let cfg = dir.join("programs.toml");
        let cfg = cfg.to_str().unwrap();
        ok(
            &db,
            &["import", dir.join("events.ndjson").to_str().unwrap()],
        );
        ok(&db, &["run", "--config", cfg, "--period", "2026-11"]);
        let before = t.path().join(format!("{example}-before"));
        report(&db, "2026-11", &before, &[]);
        let ledger = read(&before.join("ledger.csv"));
        assert!(ledger.contains(",self_referral,"), "{ledger}");
        let o = std::process::Command::new(bin())
            .arg("--db")
            .arg(&db)
            .args(["erase", "--customer", customer, "--by", "dpo"])
            .env("ERASURE_SECRET", "k")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        ok(&db, &["run", "--config", cfg, "--period", "2026-11"]);
        let after = t.path().join(format!("{example}-after"));
        report(&db, "2026-11", &after, &[]);
        for f in ["statements.csv", "payouts.csv", "ledger.csv"] {
            assert_eq!(
                read(&before.join(f)),
                read(&after.join(f)),
                "{example}: {f} changed by the erasure of {customer}"
            );
        }
    }
}

/// A command started while an import holds the store (in rollback mode,
/// as a large import does, with its write transaction open) waits for it,
/// as the busy timeout promises. Before, SQLite refused the new process's
/// switch to WAL at once ("database is locked", exit 2).
#[test]
fn a_command_waits_for_an_import_holding_the_store() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    ok(
        &db,
        &[
            "import",
            &write(
                t.path(),
                "a.ndjson",
                &format!("{PARTNER}\n{}\n", sale("e1", 1, "100")),
            ),
        ],
    );
    let later = write(t.path(), "b.ndjson", &format!("{}\n", sale("e2", 2, "50")));
    // what Store::bulk_mode does: rollback journal, a write under way
    let c = rusqlite::Connection::open(&db).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
    c.execute_batch("BEGIN IMMEDIATE; INSERT INTO meta (key, value) VALUES ('test', 'held');")
        .unwrap();
    // the write ends a while after the command started
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        c.execute_batch("COMMIT").unwrap();
        drop(c);
    });
    let o = std::process::Command::new(bin())
        .arg("--db")
        .arg(&db)
        .args(["--quiet", "import", &later])
        .output()
        .unwrap();
    release.join().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 new events"));
}

/// An amount of more than 18 integer digits (the edge's limit) is a bad
/// line naming its field: before, it was imported, and every later run
/// stopped on an overflow that named no event. 18 digits are fine.
#[test]
fn an_amount_past_18_integer_digits_is_a_bad_line() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let f = write(
        t.path(),
        "e.ndjson",
        &format!(
            "{PARTNER}\n{}\n{}\n",
            sale("e1", 1, "999999999999999999.99"),
            sale("e2", 2, "79228162514264337593543950335")
        ),
    );
    let (c, err) = code(&db, &["import", &f]);
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains("e.ndjson:3: `amount` has more than 18 integer digits"),
        "{err}"
    );
    let (c, err) = code(&db, &["import", "--skip-invalid", &f]);
    assert_eq!(c, 0, "{err}");
    let cfg = write(t.path(), "p.toml", PROGRAMS);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    report(&db, "2026-11", &t.path().join("o"), &[]);
    assert!(
        read(&t.path().join("o/statements.csv")).contains("2026-11,a,p,USD,100000000000000000.00,"),
    );
}

/// A closed period never changes, its report.html included: the traffic
/// per day counts the events its draft saw (its watermark), not the late
/// ones. Before, a late click and sale raised the page's counts while its
/// money stayed frozen.
#[test]
fn a_closed_periods_report_html_is_unchanged_by_late_events() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(t.path(), "p.toml", PROGRAMS);
    ok(
        &db,
        &[
            "import",
            &write(
                t.path(),
                "a.ndjson",
                &format!("{PARTNER}\n{}\n", sale("e1", 1, "100")),
            ),
        ],
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    ok(&db, &["close", "--period", "2026-11"]);
    let before = t.path().join("before");
    report(&db, "2026-11", &before, &[]);
    let click = r#"{"id":"k9","type":"click","ts":"2026-11-05T09:00:00.000Z","program":"p","partner":"a","click_id":"c9"}"#;
    ok(
        &db,
        &[
            "import",
            &write(
                t.path(),
                "b.ndjson",
                &format!("{click}\n{}\n", sale("e2", 5, "50")),
            ),
        ],
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
    let after = t.path().join("after");
    report(&db, "2026-11", &after, &[]);
    for f in ["report.html", "statements.csv", "ledger.csv"] {
        assert!(
            read(&before.join(f)) == read(&after.join(f)),
            "{f} of the closed 2026-11 changed"
        );
    }
    // December's own page counts nothing of November, and its ledger the
    // late sale as an adjustment
    let dec = t.path().join("dec");
    report(&db, "2026-12", &dec, &[]);
    assert!(read(&dec.join("ledger.csv")).contains(",adjustment,"));
}

/// One event dated 1970-01-01 (a zero timestamp) does not make the first
/// nightly run and close every month since: more than two years of
/// periods is exit 1 naming the first event's period and `first_period`,
/// with nothing run or closed; `first_period` starts there.
#[test]
fn a_first_nightly_does_not_close_decades_of_periods() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    write(t.path(), "programs.toml", PROGRAMS);
    let epoch = sale("e0", 1, "10").replace("2026-11-01", "1970-01-01");
    ok(
        &db,
        &[
            "import",
            &write(
                t.path(),
                "a.ndjson",
                &format!("{PARTNER}\n{epoch}\n{}\n", sale("e1", 2, "100")),
            ),
        ],
    );
    let conf = |extra: &str| {
        let p = t.path().join("settlement.toml");
        std::fs::write(
            &p,
            format!("programs = \"programs.toml\"\nout = \"reports\"\n{extra}"),
        )
        .unwrap();
        p
    };
    let o = nightly(&db, &conf(""), "2026-12-10", &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the store's first event is in 1970-01, 684 periods before 2026-12"),
        "{err}"
    );
    assert!(err.contains("first_period"), "{err}");
    assert!(!t.path().join("reports").exists());
    let (c, err) = code(
        &db,
        &[
            "report",
            "--period",
            "1970-01",
            "--out",
            t.path().join("x").to_str().unwrap(),
        ],
    );
    assert_eq!(c, 1, "1970-01 was run: {err}");
    let o = nightly(
        &db,
        &conf("first_period = \"2026-11\"\n"),
        "2026-12-10",
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut made: Vec<String> = std::fs::read_dir(t.path().join("reports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    made.sort();
    assert_eq!(made, ["2026-11", "2026-12"]);
    assert!(read(&t.path().join("reports/2026-11/payouts.csv")).contains("2026-11,a,USD,10.00,"));
}

/// Small import rough edges: a file starting with a UTF-8 byte order mark
/// imports (it failed on line 1); a directory is a usage error, exit 1,
/// as a missing file is (it was exit 2, data); a coupon code outside
/// SPEC's `[A-Za-z0-9_-]{1,64}` is a bad line; the same file imported again
/// with --skip-invalid sets its bad lines aside once, not twice.
#[test]
fn import_takes_a_bom_refuses_a_directory_and_sets_bad_lines_aside_once() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let bom = t.path().join("bom.ndjson");
    std::fs::write(
        &bom,
        format!("\u{feff}{PARTNER}\n{}\n", sale("e1", 1, "100")),
    )
    .unwrap();
    ok(&db, &["import", bom.to_str().unwrap()]);
    let (c, err) = code(&db, &["import", t.path().to_str().unwrap()]);
    assert_eq!(c, 1, "{err}");
    assert!(err.contains("is a directory"), "{err}");
    let coupon = r#"{"type":"coupon","code":"SAVE 10","partner":"a","program":"p"}"#;
    let f = write(
        t.path(),
        "c.ndjson",
        &format!("{coupon}\n{}\n", sale("e2", 2, "10")),
    );
    let (c, err) = code(&db, &["import", &f]);
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains("c.ndjson:1: `code` \"SAVE 10\" is not [A-Za-z0-9_-]{1,64}"),
        "{err}"
    );
    for _ in 0..2 {
        ok(&db, &["import", "--skip-invalid", &f]);
    }
    assert_eq!(
        read(&t.path().join("c.ndjson.rejects.ndjson")),
        format!("{coupon}\n")
    );
    let cfg = write(t.path(), "p.toml", PROGRAMS);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    report(&db, "2026-11", &t.path().join("o"), &[]);
    assert!(read(&t.path().join("o/statements.csv")).contains("2026-11,a,p,USD,11.00,"));
}

#[test]
fn config_errors_name_file_line_and_key() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cases = [
        ("currency = \"USD\"\nbogus = 1\n", ":2: key `bogus`"),
        (
            "currency = \"USD\"\n[[programs]]\nid = \"p\"\nmodel = \"affiliate\"\n[[programs.rules]]\nevent = \"sale\"\nfixed = \"1\"\npercent = \"2\"\n",
            ":8: key `percent`",
        ),
        (
            "currency = \"USD\"\n[[programs]]\nid = \"p\"\nmodel = \"affiliate\"\n[[programs.rules]]\nevent = \"sale\"\npercent = \"120\"\n",
            ":7: key `percent`",
        ),
        (
            "currency = \"USD\"\n[[programs]]\nid = \"p\"\nmodel = \"affiliate\"\ncurrency = \"ABC\"\n",
            ":5: key `currency`",
        ),
        (
            "currency = \"USD\"\nfx = \"missing.csv\"\n[[programs]]\nid = \"p\"\nmodel = \"affiliate\"\n",
            ":2: key `fx`",
        ),
        (
            // a payout minimum finer than a cent
            "currency = \"USD\"\n[payout]\nminimum = \"50.001\"\n[[programs]]\nid = \"p\"\nmodel = \"affiliate\"\n",
            ":3: key `minimum`: 50.001 has more decimals than USD has (2)",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let cfg = write(t.path(), &format!("c{i}.toml"), text);
        let (c, err) = code(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
        assert_eq!(c, 1, "{err}");
        assert!(err.contains(&format!("c{i}.toml{want}")), "case {i}: {err}");
    }
    let (c, _) = code(
        &db,
        &["run", "--config", "nope.toml", "--period", "2026-11"],
    );
    assert_eq!(c, 1);
    let (c, _) = code(&db, &["frobnicate"]);
    assert_eq!(c, 1);
}

#[test]
fn missing_fx_rate_for_an_event_is_a_data_error() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    write(
        t.path(),
        "fx.csv",
        "date,currency,rate\n2026-11-10,EUR,1.1\n",
    );
    let cfg = write(t.path(), "p.toml", &format!("fx = \"fx.csv\"\n{PROGRAMS}"));
    let ev = sale("e1", 3, "10").replace("\"USD\"", "\"EUR\"");
    ok(
        &db,
        &[
            "import",
            &write(t.path(), "a.ndjson", &format!("{PARTNER}\n{ev}\n")),
        ],
    );
    let (c, err) = code(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains("fx.csv: no EUR rate on or before 2026-11-03 (event e1)"),
        "{err}"
    );
}

#[test]
fn report_html_is_self_contained() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(t.path(), "p.toml", PROGRAMS);
    ok(
        &db,
        &[
            "import",
            &write(
                t.path(),
                "a.ndjson",
                &format!("{PARTNER}\n{}\n", sale("e1", 1, "600")),
            ),
        ],
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    let out = t.path().join("o");
    report(&db, "2026-11", &out, &[]);
    let html = read(&out.join("report.html"));
    assert!(html.contains("<svg"));
    assert!(
        !html.contains("http://")
            || html
                .matches("http://")
                .all(|_| html.contains("xmlns=\"http://www.w3.org/2000/svg\""))
    );
    assert!(!html.contains("<script") && !html.contains("https://"));
    assert_eq!(
        read(&out.join("payouts.csv")),
        "period,partner,currency,amount,reference\n2026-11,a,USD,60.00,PO-2026-11-a\n"
    );
}

/// Text from outside (a `txn_id` a pixel was called with, an event id from
/// a migrated platform) never reaches a spreadsheet as a formula: such a
/// cell gets a leading apostrophe; negative amounts stay numbers.
#[test]
fn csv_cells_a_spreadsheet_would_run_are_defused() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let evil_txn = r#"=HYPERLINK(\"http://evil.example\",\"open\")"#;
    let evil_id = "@SUM(1+1)";
    let events = [
        r#"{"type":"partner","id":"a","program":"p","status":"approved"}"#.to_string(),
        r#"{"type":"partner","id":"r","program":"v","status":"approved"}"#.to_string(),
        r#"{"type":"partner","id":"-dash","program":"p","status":"approved"}"#.to_string(),
        sale("d1", 4, "50").replace(r#""partner":"a""#, r#""partner":"-dash""#),
        // a commission whose source event id and txn_id are formulas
        sale("x", 2, "100").replace(r#""id":"x""#, &format!(r#""id":"{evil_id}""#)),
        // refunded in part: a negative clawback amount
        r#"{"id":"rf","type":"conversion","ts":"2026-11-05T10:00:00.000Z","program":"p","event":"refund","txn_id":"rf","original_txn_id":"x","amount":"40","currency":"USD"}"#
            .to_string(),
        // a reseller sale: its txn_id is on invoices.csv
        format!(
            r#"{{"id":"v1","type":"conversion","ts":"2026-11-03T10:00:00.000Z","program":"v","partner":"r","click_id":"c2","click_ts":"2026-11-03T09:00:00.000Z","event":"sale","txn_id":"{evil_txn}","amount":"200","currency":"USD","customer":"k"}}"#
        ),
    ];
    let f = write(t.path(), "e.ndjson", &(events.join("\n") + "\n"));
    let cfg = write(
        t.path(),
        "p.toml",
        &format!(
            "{PROGRAMS}[[programs]]\nid = \"v\"\nmodel = \"reseller\"\n[[programs.rules]]\nevent = \"sale\"\ndiscount = \"25\"\n"
        ),
    );
    ok(&db, &["import", &f]);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    let out = t.path().join("o");
    report(&db, "2026-11", &out, &[]);

    let cells = |file: &str| -> Vec<Vec<String>> {
        let mut r = csv::Reader::from_path(out.join(file)).unwrap();
        r.records()
            .map(|rec| rec.unwrap().iter().map(str::to_string).collect())
            .collect()
    };
    for file in [
        "statements.csv",
        "payouts.csv",
        "invoices.csv",
        "ledger.csv",
        "fraud.csv",
    ] {
        for row in cells(file) {
            for c in &row {
                let bare = c.starts_with(['=', '+', '@', '\t', '\r'])
                    || (c.starts_with('-')
                        && c.parse::<rust_decimal::Decimal>().is_err()
                        && c != "-"
                        && c != "-dash");
                assert!(!bare, "{file}: {c:?} in {row:?}");
            }
        }
    }
    // ids, and the rule `-` of entries without one, are written as they
    // are: statements.csv goes back to the edge, which takes ids as ids
    let st = cells("statements.csv");
    assert!(st.iter().any(|r| r[1] == "-dash"), "{st:?}");
    assert!(cells("payouts.csv").iter().any(|r| r[1] == "-dash"));
    let invoices = cells("invoices.csv");
    let txn = r#"'=HYPERLINK("http://evil.example","open")"#;
    assert!(invoices.iter().any(|r| r[2] == txn), "{invoices:?}");
    let ledger = cells("ledger.csv");
    let commission = ledger
        .iter()
        .find(|r| r[4] == "commission" && r[2] == "a")
        .expect("the commission");
    assert_eq!(commission[5], "10.00");
    assert!(
        commission[8].split(' ').any(|s| s == "'@SUM(1+1)"),
        "{commission:?}"
    );
    let payout = ledger.iter().find(|r| r[4] == "payout").expect("a payout");
    assert_eq!(payout[7], "-", "{payout:?}");
    let clawback = ledger
        .iter()
        .find(|r| r[4] == "clawback")
        .expect("the clawback");
    assert_eq!(clawback[5], "-4.00", "a negative amount stays a number");
}

/// An import started beside another command that writes (a `close`, a
/// `run`) waits for it instead of failing: its transaction takes the
/// write lock when it begins. Before, it read first and wrote later, and a
/// write committed in between failed it at once ("database is locked",
/// exit 2): 19 of 20 imports beside a `close`. Each round starts both at
/// the same instant on a fresh store; both must succeed every time.
#[test]
fn an_import_beside_a_writing_command_waits_for_it() {
    let ex = repo().join("examples/saas-affiliate");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (events, late, cfg) = (
        s(&ex.join("events.ndjson")),
        s(&ex.join("arrivals/2026-12.ndjson")),
        s(&ex.join("programs.toml")),
    );
    for round in 0..12 {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("s.db");
        ok(&db, &["import", &events]);
        ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
        let other: Vec<&str> = if round % 2 == 0 {
            vec!["close", "--period", "2026-11"]
        } else {
            vec!["run", "--config", &cfg, "--period", "2026-11"]
        };
        let (a, b) = std::thread::scope(|sc| {
            let o = sc.spawn(|| settlement(&db, &other));
            let i = settlement(&db, &["import", &late]);
            (i, o.join().unwrap())
        });
        for (what, o) in [("import", &a), (other[0], &b)] {
            assert!(
                o.status.success(),
                "round {round}: {what} failed ({:?}): {}",
                o.status.code(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

/// `run` says when conversions name a program programs.toml does not
/// define (before, only report.html counted them, and a period closed so
/// kept them out for good).
#[test]
fn run_warns_of_conversions_of_an_unknown_program() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(t.path(), "p.toml", PROGRAMS);
    let other = sale("e2", 6, "300").replace(r#""program":"p""#, r#""program":"q""#);
    let events = format!("{PARTNER}\n{}\n{other}\n", sale("e1", 5, "1000"));
    ok(&db, &["import", &write(t.path(), "a.ndjson", &events)]);
    let o = settlement(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning: conversions of 2026-11 name programs") && err.contains("q (1)"),
        "{err}"
    );
    let (c, err) = code(
        &db,
        &[
            "run",
            "--config",
            &write(
                t.path(),
                "q.toml",
                &PROGRAMS.replace("id = \"p\"", "id = \"q\""),
            ),
            "--period",
            "2026-11",
        ],
    );
    assert_eq!(c, 0, "{err}");
    assert!(err.contains("p (1)") && !err.contains("q (1)"), "{err}");
}

/// `explain` answers the ids a reader holds besides an entry's: a payout
/// reference (payouts.csv) explains its payout entry; an event id (ledger
/// rows' `sources`) and a `txn_id` (invoices.csv, the operator's order
/// id, its refunds too) list what cites the event; an event nothing
/// cites says so. An empty id (an unset shell variable) is a usage error,
/// not every entry with no `adjusts`; an id pasted with spaces is found.
/// The commands that only read never make a store: a mistyped `--db` is
/// exit 1 and no file (before, an empty store was made and the entry said
/// not to exist).
#[test]
fn explain_takes_references_event_ids_and_txn_ids_and_never_makes_a_store() {
    let t = tempfile::tempdir().unwrap();
    let db = example_november(t.path(), "saas-affiliate");
    let out = t.path().join("out");
    report(&db, "2026-11", &out, &[]);
    let ledger = read(&out.join("ledger.csv"));
    let id_of = |kind: &str, source: &str| {
        ledger
            .lines()
            .find(|l| l.split(',').nth(4) == Some(kind) && l.contains(source))
            .and_then(|l| l.split(',').next())
            .unwrap_or_else(|| panic!("{kind} of {source}: {ledger}"))
            .to_string()
    };
    let (commission, clawback) = (id_of("commission", ",ev_005,"), id_of("clawback", "ev_005"));

    let reference = read(&out.join("payouts.csv"))
        .lines()
        .find(|l| l.contains(",aff_silver,"))
        .and_then(|l| l.split(',').nth(4))
        .expect("aff_silver's payout")
        .to_string();
    let words = ok(&db, &["explain", &reference]);
    assert!(
        words.starts_with(&format!("payout reference {reference}: ledger entry le_"))
            && words.contains(": payout of -60.00 USD"),
        "{words}"
    );

    let words = ok(&db, &["explain", "ev_005"]);
    assert!(words.starts_with("event ev_005: conversion"), "{words}");
    for e in [&commission, &clawback] {
        assert!(words.contains(&format!("  {e}: ")), "{e}: {words}");
    }
    // T-1: the sale ev_005 and its refund ev_008
    let words = ok(&db, &["explain", "T-1"]);
    assert!(words.starts_with("txn_id T-1: 2 event(s)"), "{words}");
    assert!(
        words.contains("event ev_008: conversion") && words.contains(&clawback),
        "{words}"
    );
    // ev_010: a sale no partner brought
    // with the rules its program's draft had, for the reader to match
    let words = ok(&db, &["explain", "ev_010"]);
    assert!(
        words.contains("no ledger entry or invoice line cites it")
            && words.contains(
                "\n  the rules of program saas-aff when 2026-11 was run:\n    saas-aff/1: "
            )
            && words.contains("\n    saas-aff/3: event = \"sale\", tier = \"gold\""),
        "{words}"
    );

    assert!(ok(&db, &["explain", &format!(" {commission} ")]).contains("commission of 30.00 USD"));
    let (c, said) = code(&db, &["explain", ""]);
    assert!(c == 1 && said.contains("explain needs an id"), "{c} {said}");
    let (c, said) = code(&db, &["explain", "stmt_2026-11_aff_silver"]);
    assert!(
        c == 1 && said.contains("no ledger entry, invoice line, payout reference, event or txn_id"),
        "{c} {said}"
    );

    let typo = t.path().join("typo.db");
    for args in [
        vec!["explain", commission.as_str()],
        vec![
            "report",
            "--period",
            "2026-11",
            "--out",
            out.to_str().unwrap(),
        ],
        vec!["review", "list"],
    ] {
        let (c, said) = code(&typo, &args);
        assert!(
            c == 1 && said.contains("no settlement store at"),
            "{args:?}: {c} {said}"
        );
        assert!(!typo.exists(), "{args:?} made a store");
    }
}

/// A partner whose period's entries net to nothing has a statement row: a
/// refund of a paid sale, dated in the closed month and arriving after its
/// close, is an adjustment of -10.00 and a write-off of +10.00, both in
/// `adjusted` (before, the row was left out as all zeros, and the
/// write-off was on no statement nor in report.html).
#[test]
fn entries_that_net_to_nothing_still_have_a_statement_row() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(
        t.path(),
        "p.toml",
        &PROGRAMS.replace("[[programs]]", "[payout]\nminimum = \"0\"\n[[programs]]"),
    );
    let nov = format!("{PARTNER}\n{}\n", sale("s1", 10, "100"));
    ok(&db, &["import", &write(t.path(), "a.ndjson", &nov)]);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    let nov = t.path().join("nov");
    report(&db, "2026-11", &nov, &[]);
    let commission = read(&nov.join("ledger.csv"))
        .lines()
        .find(|l| l.contains(",commission,10.00,"))
        .and_then(|l| l.split(',').next())
        .expect("s1's commission")
        .to_string();
    ok(&db, &["close", "--period", "2026-11"]);
    let refund = r#"{"id":"r1","type":"conversion","ts":"2026-11-29T10:00:00.000Z","program":"p","event":"refund","txn_id":"r1","original_txn_id":"s1","amount":"100","currency":"USD","customer":"cust_s1"}"#;
    ok(
        &db,
        &[
            "import",
            &write(t.path(), "b.ndjson", &format!("{refund}\n")),
        ],
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
    let out = t.path().join("dec");
    report(&db, "2026-12", &out, &[]);
    let ledger = read(&out.join("ledger.csv"));
    assert!(
        ledger.contains(",a,p,adjustment,-10.00,USD,")
            && ledger.contains(",a,p,writeoff,10.00,USD,"),
        "{ledger}"
    );
    // the late clawback's adjustment names the commission it reverses and
    // shows its arithmetic
    let adj = ledger.lines().find(|l| l.contains(",adjustment,")).unwrap();
    assert!(
        adj.contains(&format!(" of {commission} (rule p/1) restated as -10.00 USD, booked 0.00 USD: adjusted by -10.00 USD; as restated: all of the original entry's 10.00 USD reversed")),
        "{adj}"
    );
    let statements = read(&out.join("statements.csv"));
    assert!(
        statements.contains("\n2026-12,a,p,USD,0.00,0.00,0.00,0.00,0.00,0.00,0.00\n"),
        "{statements}"
    );
}

/// A late adjustment names the late conversions that concern it: those of
/// its conversion's customer (a signup that moved the customer's lifetime
/// lock from pb to pa) and those booked to its partner (late sales that
/// lifted a ladder's step for the two booked ones: the first three, then
/// "and more"). Before, each said only "late facts for the closed period".
#[test]
fn a_late_adjustment_names_the_late_facts_behind_it() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(
        t.path(),
        "p.toml",
        r#"currency = "USD"
[payout]
minimum = "0"
[[programs]]
id = "p"
model = "affiliate"
lifetime = true
window_days = 30
  [[programs.rules]]
  event = "signup"
  fixed = "1.00"
  [[programs.rules]]
  event = "sale"
  percent = "10"
[[programs]]
id = "l"
model = "affiliate"
  [[programs.rules]]
  event = "sale"
  ladder = { metric = "count", mode = "retroactive", steps = [ { from = "0", fixed = "10.00" }, { from = "2", fixed = "20.00" } ] }
"#,
    );
    let partner = |id: &str, p: &str| {
        format!(r#"{{"type":"partner","id":"{id}","program":"{p}","status":"approved"}}"#)
    };
    let conv = |id: &str, day: u32, p: &str, event: &str, who: &str, customer: &str| {
        format!(
            r#"{{"id":"{id}","type":"conversion","ts":"2026-11-{day:02}T10:00:00.000Z","program":"{p}","event":"{event}","txn_id":"{id}","amount":"100.00","currency":"USD","customer":"{customer}",{who}}}"#
        )
    };
    let click = |partner: &str, day: u32| {
        format!(
            r#""partner":"{partner}","click_id":"k{partner}","click_ts":"2026-11-{day:02}T09:00:00.000Z""#
        )
    };
    let nov = [
        partner("pa", "p"),
        partner("pb", "p"),
        partner("la", "l"),
        r#"{"type":"coupon","code":"LA","partner":"la","program":"l"}"#.to_string(),
        conv("s1", 20, "p", "sale", &click("pb", 20), "c1"),
        conv("l1", 10, "l", "sale", r#""coupon":"LA""#, "d1"),
        conv("l2", 11, "l", "sale", r#""coupon":"LA""#, "d2"),
    ];
    ok(
        &db,
        &[
            "import",
            &write(t.path(), "nov.ndjson", &(nov.join("\n") + "\n")),
        ],
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    ok(&db, &["close", "--period", "2026-11"]);
    let late = [
        conv("u1", 5, "p", "signup", &click("pa", 5), "c1"),
        conv("l3", 12, "l", "sale", r#""coupon":"LA""#, "d3"),
        conv("l4", 13, "l", "sale", r#""coupon":"LA""#, "d4"),
        conv("l5", 14, "l", "sale", r#""coupon":"LA""#, "d5"),
        conv("l6", 15, "l", "sale", r#""coupon":"LA""#, "d6"),
    ];
    ok(
        &db,
        &[
            "import",
            &write(t.path(), "late.ndjson", &(late.join("\n") + "\n")),
        ],
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
    let out = t.path().join("dec");
    report(&db, "2026-12", &out, &[]);
    let ledger = read(&out.join("ledger.csv"));
    let adjustment = |partner: &str, source: &str| {
        ledger
            .lines()
            .find(|l| {
                l.contains(&format!(",{partner},"))
                    && l.contains(",adjustment,")
                    && l.contains(source)
            })
            .unwrap_or_else(|| panic!("{partner} {source}: {ledger}"))
            .to_string()
    };
    for (partner, source, amount) in [("pb", ",s1,", "-10.00"), ("pa", ",s1,", "10.00")] {
        let row = adjustment(partner, source);
        assert!(
            row.contains(&format!(",adjustment,{amount},"))
                && row.contains("late facts for the closed period 2026-11 (arrived since the close: u1, signup dated 2026-11-05)"),
            "{row}"
        );
    }
    for source in [",l1,", ",l2,"] {
        let row = adjustment("la", source);
        assert!(
            row.contains(",adjustment,10.00,")
                && row.contains("(arrived since the close: l3, sale dated 2026-11-12; l4, sale dated 2026-11-13; l5, sale dated 2026-11-14; and more)")
                && row.contains("as restated: retroactive ladder on count: the partner's period total 6 is in the step from 2"),
            "{row}"
        );
    }
}

/// Invoice lines are explained from what a reader holds: the txn_id of
/// invoices.csv lists the line's id; a credit note names the line it
/// credits and shows its amounts; every invoice line lists its program's
/// rules (the discount is the most specific match's). Before, no output
/// had an invoice line's id and a credit note said only "40% of the
/// original line reversed".
#[test]
fn a_credit_note_names_the_line_it_credits() {
    let t = tempfile::tempdir().unwrap();
    let db = example_november(t.path(), "reseller");
    let line_of = |txn: &str| {
        let words = ok(&db, &["explain", txn]);
        let ids: Vec<&str> = words
            .split_whitespace()
            .filter(|w| w.starts_with("inv_"))
            .collect();
        assert!(!ids.is_empty(), "{words}");
        ids[0].trim_end_matches([')', ':']).to_string()
    };
    let (sale, credit) = (line_of("INV-1"), line_of("RF-1"));
    assert_ne!(sale, credit);
    let words = ok(&db, &["explain", &credit]);
    assert!(
        words.contains(&format!("  credits  invoice line {sale} of 2026-11 (750.00 EUR due; settlement explain {sale})"))
            && words.contains("arithmetic: credit note: 40% of the original line reversed (refund amount / original amount): list -400.00 EUR, due -300.00 EUR")
            && words.contains("  var-eu/2: event = \"sale\", coupon = \"ENTERPRISE\", discount = \"30\""),
        "{words}"
    );
    let words = ok(&db, &["explain", &sale]);
    assert!(
        !words.contains("credits")
            && words.contains("arithmetic: list 1000.00 EUR x (100% - 25%) = 750.00 EUR due"),
        "{words}"
    );
}

/// The entries whose sources cite `event`, from `explain EVENT`: (id,
/// kind).
fn entries_citing(db: &std::path::Path, event: &str) -> Vec<(String, String)> {
    let words = ok(db, &["explain", event]);
    words
        .lines()
        .filter_map(|l| {
            let (id, rest) = l.trim().split_once(": ")?;
            let kind = rest.split(" of ").next()?;
            id.starts_with("le_")
                .then(|| (id.to_string(), kind.to_string()))
        })
        .collect()
}

fn entry_of(db: &std::path::Path, event: &str, kind: &str) -> String {
    let all = entries_citing(db, event);
    all.iter()
        .find(|(_, k)| k == kind)
        .unwrap_or_else(|| panic!("no {kind} entry cites {event}: {all:?}"))
        .0
        .clone()
}

/// review19 F8: explain showed only the event ids an entry cites, not the
/// records its decision used: the click record (a bot), the coupon's and
/// the partner's registry rows (an email-hash self-referral), the deal
/// registrations (which won), the conversion that set a lifetime lock,
/// the parents an override climbs through, the entries a top-up summed
/// and a cap counted.
#[test]
fn explain_shows_the_evidence_behind_a_decision() {
    let t = tempfile::tempdir().unwrap();
    let evidence = |db: &std::path::Path, id: &str| {
        let words = ok(db, &["explain", id]);
        let e = words
            .split("\nevidence:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("no evidence: {words}"));
        e.split("\narithmetic: ").next().unwrap().to_string()
    };

    // prop-firm: a bot click as the only evidence; a self-referral by
    // email hash through a coupon
    let d = t.path().join("prop");
    std::fs::create_dir(&d).unwrap();
    let db = example_november(&d, "prop-firm");
    let e = evidence(&db, &entry_of(&db, "ev_p5", "rejected"));
    assert!(
        e.contains("  click bot1 of ev_p5: record ck_bot: at 2026-11-14T09:00:00.000Z, program prop, partner trader_lia, bot"),
        "{e}"
    );
    let e = evidence(&db, &entry_of(&db, "ev_p6", "rejected"));
    assert!(
        e.contains("  partner trader_tom (the registry now): program prop, tier none, parent none, status approved (history: approved from 2026-01-01T00:00:00.000Z), email_hash eh_tom")
            && e.contains("  coupon TOM10 of ev_p6: registered to trader_tom in program prop on 2026-01-01T00:00:00.000Z"),
        "{e}"
    );
    assert!(ok(&db, &["explain", "ev_p6"]).contains("email_hash eh_tom"));

    // saas-affiliate: an override, a capped signup, a sale under the
    // customer's lifetime lock
    let d = t.path().join("saas");
    std::fs::create_dir(&d).unwrap();
    let db = example_november(&d, "saas-affiliate");
    let child = entry_of(&db, "ev_002", "commission");
    let e = evidence(&db, &entry_of(&db, "ev_002", "override"));
    assert!(
        e.contains(&format!("  override of aff_silver's commission {child}; parents in the registry now: aff_silver -> aff_gold"))
            && e.contains("  click c1 of ev_002: record ev_001: at 2026-11-01T09:00:00.000Z, program saas-aff, partner aff_silver, not a bot"),
        "{e}"
    );
    let e = evidence(&db, &entry_of(&db, "ev_004", "capped"));
    let counted = [
        entry_of(&db, "ev_002", "commission"),
        entry_of(&db, "ev_003", "commission"),
    ];
    assert!(
        e.contains("  counted by the cap: 2 commission entries of rule saas-aff/1 for aff_silver in 2026-11\n")
            && e.contains(&format!("    {}: commission of 5.00 on ev_002\n    {}: commission of 5.00 on ev_003", counted[0], counted[1])),
        "{e}"
    );
    let locked = entry_of(&db, "ev_007", "commission");
    let words = ok(&db, &["explain", &locked]);
    assert!(
        words.contains("attributed by the customer's lifetime lock, set by ev_003 on 2026-11-02")
            && words.contains("  lifetime lock of cust_2: set by ev_003 (the customer's first attributed conversion in the program, what `months` counts from): conversion, at 2026-11-02T10:00:00.000Z"),
        "{words}"
    );

    // referral: both approved registrations of the customer, the earliest
    // wins
    let d = t.path().join("referral");
    std::fs::create_dir(&d).unwrap();
    let db = d.join("s.db");
    let x = repo().join("examples/referral");
    ok(&db, &["import", x.join("events.ndjson").to_str().unwrap()]);
    let cfg = x.join("programs.toml");
    ok(
        &db,
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--period",
            "2026-10",
        ],
    );
    let e = evidence(&db, &entry_of(&db, "ev_r1", "commission"));
    assert!(
        e.contains("    deal_1: registered 2026-09-01T12:00:00.000Z by ref_anna, status approved, approved 2026-09-02T12:00:00.000Z\n    deal_2: registered 2026-10-01T12:00:00.000Z by ref_bob, status approved"),
        "{e}"
    );
    // an unattributed one: its registration was too old
    let words = ok(&db, &["explain", "ev_r3"]);
    assert!(
        words.contains("      deal_5: registered 2026-06-01T12:00:00.000Z by ref_anna"),
        "{words}"
    );

    // technology: what the top-up summed
    let d = t.path().join("tech");
    std::fs::create_dir(&d).unwrap();
    let db = example_november(&d, "technology");
    let commission = entry_of(&db, "ev_t1", "commission");
    let out = d.join("out");
    ok(
        &db,
        &[
            "report",
            "--period",
            "2026-11",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let ledger = std::fs::read_to_string(out.join("ledger.csv")).unwrap();
    let topup = ledger
        .lines()
        .find(|l| l.contains(",minimum_topup,"))
        .and_then(|l| l.split(',').next())
        .unwrap()
        .to_string();
    let e = evidence(&db, &topup);
    assert!(
        e.contains("  summed by the top-up: the commissions and overrides of tp_crm in 2026-11 (1 entry, 180.00 USD)\n")
            && e.contains(&format!("    {commission}: commission of 180.00 on ev_t1")),
        "{e}"
    );
}

/// review22 F13: a chargeback's explain names the reinstatement that
/// cancelled it, whose entry says what it gives back.
#[test]
fn explain_names_the_reinstatement_of_a_chargeback() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(t.path(), "programs.toml", PROGRAMS);
    let ev = write(
        t.path(),
        "ev.ndjson",
        &format!(
            "{PARTNER}\n{}\n{}\n{}\n",
            r#"{"type":"conversion","id":"s1","ts":"2026-11-02T12:00:00.000Z","program":"p","event":"sale","txn_id":"S1","partner":"a","click_id":"k","click_ts":"2026-11-02T11:00:00.000Z","amount":"100","currency":"USD"}"#,
            r#"{"type":"conversion","id":"c1","ts":"2026-11-05T12:00:00.000Z","program":"p","event":"chargeback","txn_id":"C1","original_txn_id":"S1"}"#,
            r#"{"type":"conversion","id":"w1","ts":"2026-11-20T12:00:00.000Z","program":"p","event":"reinstate","txn_id":"W1","original_txn_id":"C1"}"#,
        ),
    );
    ok(&db, &["import", &ev]);
    ok(&db, &["run", "--period", "2026-11", "--config", &cfg]);
    let words = ok(&db, &["explain", "c1"]);
    assert!(
        words.contains("clawback of -10.00 USD")
            && words.contains(
                "reinstatement w1 names its txn_id (a dispute won or a refund that failed): it cancels the first refund or chargeback of that txn_id still standing; settlement explain w1"
            ),
        "{words}"
    );
    let back = entry_of(&db, "w1", "clawback");
    let words = ok(&db, &["explain", &back]);
    assert!(
        words.contains("reinstated: w1 cancels the reversal \"C1\"")
            && words.contains("= 10.00 USD"),
        "{words}"
    );
    // the sale's explain by txn_id lists all three
    let words = ok(&db, &["explain", "C1"]);
    assert!(
        words.contains("event c1:") && words.contains("event w1:"),
        "{words}"
    );
}
