//! Traffic through the real worker, pulled and settled by the real binary:
//! the statements match hand arithmetic, a second pull adds nothing, and a
//! bad export token stops with exit 3.

use e2e::harness::{
    self, agent, csv_rows, root, send, settlement_ok, Options, Worker, ADMIN_TOKEN, EXPORT_TOKEN,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TOKEN: &str = "postback-token-0123456789";
/// 2026-10-01T00:00:00Z
const OCT: i64 = 1_790_812_800_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

fn settlement(args: &[&str]) -> Output {
    harness::settlement(args, &[])
}

fn ok(args: &[&str]) -> String {
    settlement_ok(args, &[]).0
}

fn call(w: &Worker, method: &str, path: &str, auth: &str, body: Value, clock: i64) -> (u16, Value) {
    w.call(method, path, Some(auth), Some(&body), Some(clock))
}

fn click(w: &Worker, slug: &str, clock: i64, ua: &str) -> String {
    let (s, _, head) = send(
        agent()
            .get(&w.url(&format!("/c/{slug}")))
            .set("User-Agent", ua)
            .set("X-Ptrack-Clock", &clock.to_string()),
        None,
    );
    assert_eq!(s, 302);
    let loc = head.header("Location").unwrap().to_string();
    loc.rsplit_once("ref=").unwrap().1.to_string()
}

#[test]
fn traffic_through_the_worker_settles_to_hand_computed_statements() {
    let mut opts = Options::default();
    opts.vars.push(("ALLOW_TEST_CLOCK".into(), "1".into()));
    let w = Worker::start_with(opts);
    let setup = OCT - DAY;
    let admin = |m: &str, p: &str, b: Value| {
        let (s, r) = call(&w, m, p, ADMIN_TOKEN, b, setup);
        assert!(s < 300, "{m} {p}: {s} {r}");
        r
    };
    admin(
        "PUT",
        "/api/programs/shop",
        json!({"postback_tokens": [TOKEN], "allowed_hosts": ["shop.example"]}),
    );
    admin(
        "PUT",
        "/api/partners/ann",
        json!({"program": "shop", "status": "approved", "email": "ann@example.com"}),
    );
    admin(
        "PUT",
        "/api/partners/bob",
        json!({"program": "shop", "status": "approved"}),
    );
    let l1 = admin(
        "POST",
        "/api/links",
        json!({"partner": "ann", "program": "shop", "slug": "ann-1", "destination": "https://shop.example/?ref={click_id}"}),
    );
    let l2 = admin(
        "POST",
        "/api/links",
        json!({"partner": "bob", "program": "shop", "slug": "bob-1", "destination": "https://shop.example/?ref={click_id}"}),
    );
    assert_eq!(
        (l1["slug"].as_str(), l2["slug"].as_str()),
        (Some("ann-1"), Some("bob-1"))
    );
    admin(
        "PUT",
        "/api/coupons/BOB10",
        json!({"partner": "bob", "program": "shop"}),
    );

    let pb = |body: Value, clock: i64| {
        let (s, r) = call(&w, "POST", "/postback", TOKEN, body, clock);
        assert_eq!(s, 200, "{r}");
    };
    // Ann: two sales from her click, one refunded by half.
    let c1 = click(&w, "ann-1", OCT + 2 * DAY, UA);
    pb(
        json!({"program": "shop", "event": "sale", "txn_id": "S1", "click_id": c1, "customer": "c1", "amount": "200.00", "currency": "USD"}),
        OCT + 2 * DAY + HOUR,
    );
    let c2 = click(&w, "ann-1", OCT + 5 * DAY, UA);
    pb(
        json!({"program": "shop", "event": "sale", "txn_id": "S2", "click_id": c2, "customer": "c2", "amount": "100.00", "currency": "USD"}),
        OCT + 5 * DAY + HOUR,
    );
    pb(
        json!({"program": "shop", "event": "refund", "txn_id": "R1", "original_txn_id": "S2", "amount": "50.00", "currency": "USD"}),
        OCT + 9 * DAY,
    );
    // S1 charged back, and the dispute won: reinstated, they net to nothing.
    pb(
        json!({"program": "shop", "event": "chargeback", "txn_id": "CB1", "original_txn_id": "S1"}),
        OCT + 12 * DAY,
    );
    pb(
        json!({"program": "shop", "event": "reinstate", "txn_id": "CB1:won", "original_txn_id": "CB1"}),
        OCT + 14 * DAY,
    );
    // Bob: a coupon sale, and a sale whose only evidence is a bot click.
    pb(
        json!({"program": "shop", "event": "sale", "txn_id": "S3", "coupon": "BOB10", "customer": "c3", "amount": "80.00", "currency": "USD"}),
        OCT + 7 * DAY,
    );
    let bot = click(
        &w,
        "bob-1",
        OCT + 8 * DAY,
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    );
    pb(
        json!({"program": "shop", "event": "sale", "txn_id": "S4", "click_id": bot, "customer": "c4", "amount": "500.00", "currency": "USD"}),
        OCT + 8 * DAY + HOUR,
    );
    // A self-referral by email: rejected. An organic sale: unattributed.
    let c5 = click(&w, "ann-1", OCT + 10 * DAY, UA);
    pb(
        json!({"program": "shop", "event": "sale", "txn_id": "S5", "click_id": c5, "customer": "c5", "email": "ANN@example.com", "amount": "300.00", "currency": "USD"}),
        OCT + 10 * DAY + HOUR,
    );
    pb(
        json!({"program": "shop", "event": "sale", "txn_id": "S6", "customer": "c6", "amount": "40.00", "currency": "USD"}),
        OCT + 11 * DAY,
    );
    // A click older than the 30-day window does not attribute a later sale.
    let old = click(&w, "bob-1", OCT - 20 * DAY, UA);
    pb(
        json!({"program": "shop", "event": "sale", "txn_id": "S7", "click_id": old, "customer": "c7", "amount": "60.00", "currency": "USD"}),
        OCT + 15 * DAY,
    );

    // Clicks are written in batches: wait until the export has all 5.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, body, _) = send(
            agent()
                .get(&w.url("/export/v1/events?limit=5000"))
                .set("Authorization", &format!("Bearer {EXPORT_TOKEN}")),
            None,
        );
        if body
            .lines()
            .filter(|l| l.contains("\"type\":\"click\""))
            .count()
            == 5
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "clicks missing from the export"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let dir: PathBuf = root()
        .join("target/e2e-state")
        .join(format!("settle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("settlement.db").display().to_string();
    let config = dir.join("programs.toml");
    std::fs::write(
        &config,
        r#"currency = "USD"

[payout]
hold_days = 0
minimum = "10.00"

[[programs]]
id = "shop"
model = "affiliate"
window_days = 30

  [[programs.rules]]
  event = "sale"
  percent = "10"
"#,
    )
    .unwrap();
    let config = config.display().to_string();

    // A wrong token: exit 3, nothing pulled.
    let bad = settlement(&[
        "--db",
        &db,
        "pull",
        "--edge",
        &w.base,
        "--token",
        "wrong-token",
    ]);
    assert_eq!(
        bad.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .to_lowercase()
            .contains("401")
            || String::from_utf8_lossy(&bad.stderr)
                .to_lowercase()
                .contains("token")
    );

    ok(&[
        "--db",
        &db,
        "pull",
        "--edge",
        &w.base,
        "--token",
        EXPORT_TOKEN,
    ]);
    let out_dir = dir.join("out");
    let out = out_dir.display().to_string();
    ok(&[
        "--db", &db, "run", "--config", &config, "--period", "2026-10",
    ]);
    ok(&["--db", &db, "report", "--period", "2026-10", "--out", &out]);
    let first = std::fs::read(out_dir.join("statements.csv")).unwrap();

    // A second pull adds nothing; a rerun writes the same bytes.
    ok(&[
        "--db",
        &db,
        "pull",
        "--edge",
        &w.base,
        "--token",
        EXPORT_TOKEN,
    ]);
    ok(&[
        "--db", &db, "run", "--config", &config, "--period", "2026-10",
    ]);
    ok(&["--db", &db, "report", "--period", "2026-10", "--out", &out]);
    assert_eq!(
        first,
        std::fs::read(out_dir.join("statements.csv")).unwrap()
    );

    // period,partner,program,currency,earned,reversed,adjusted,carried_in,pending,payable,carried_out
    // Ann: 10% of 200 + 10% of 100 = 30.00 earned; half of S2's 10.00 clawed back = -5.00
    //      (S1's chargeback -20.00 and its reinstatement +20.00 net to nothing);
    //      S5 is a self-referral (rejected). Payable 25.00.
    // Bob: 10% of the coupon sale 80 = 8.00; S4 (bot click only) rejected; S7 outside the window
    //      (unattributed). 8.00 is under the 10.00 minimum: carried forward.
    let rows = csv_rows(&out_dir.join("statements.csv"));
    let row = |p: &str| {
        rows.iter()
            .find(|r| r[1] == p)
            .unwrap_or_else(|| panic!("no statement for {p}: {rows:?}"))
            .clone()
    };
    assert_eq!(
        row("ann")[4..].to_vec(),
        ["30.00", "-5.00", "0.00", "0.00", "0.00", "25.00", "0.00"]
    );
    assert_eq!(
        row("bob")[4..].to_vec(),
        ["8.00", "0.00", "0.00", "0.00", "0.00", "0.00", "8.00"]
    );
    let payouts = csv_rows(&out_dir.join("payouts.csv"));
    assert_eq!(payouts.len(), 1);
    assert_eq!(
        (payouts[0][1].as_str(), payouts[0][3].as_str()),
        ("ann", "25.00")
    );
    let ledger = std::fs::read_to_string(out_dir.join("ledger.csv")).unwrap();
    assert!(
        ledger.contains("rejected"),
        "rejected entries are in the ledger"
    );
    // the chargeback of S1 and its reinstatement, each booked
    let clawbacks: Vec<(&str, &str)> = ledger
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(10, ',').collect();
            (f.get(4) == Some(&"clawback")).then(|| (f[5], f[8]))
        })
        .collect();
    assert!(
        clawbacks.len() == 3
            && clawbacks.iter().any(|&(a, _)| a == "-20.00")
            && clawbacks.iter().any(|&(a, _)| a == "20.00")
            && ledger.contains("cancels the reversal"),
        "{ledger}"
    );
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(html.contains("ann") && html.contains("25.00"));
    check_report_in_chromium(
        &out_dir.join("report.html"),
        &out_dir.join("statements.csv"),
        "settlement-e2e",
    );
}

/// Loads report.html in real headless Chromium (Debian's, installed by
/// edge/setup-browser.sh), reads the rendered DOM back, checks every
/// statement figure against statements.csv and the KPI cards against their
/// sums, and saves a screenshot under target/screenshots/.
fn check_report_in_chromium(report: &Path, statements: &Path, name: &str) {
    let profile = tempfile_dir(name);
    let shots = root().join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
    ];
    let url = format!("file://{}", report.display());
    let dom = Command::new("chromium")
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium (edge/setup-browser.sh installs it)");
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(
        dom.contains("<h1>Settlement"),
        "rendered page: {}",
        &dom[..dom.len().min(500)]
    );

    let rows = csv_rows(statements);
    assert!(!rows.is_empty());
    let cols = [
        "earned",
        "reversed",
        "adjusted",
        "carried_in",
        "pending",
        "payable",
        "carried_out",
    ];
    let mut payable = std::collections::BTreeMap::<String, rust_decimal::Decimal>::new();
    for r in &rows {
        let start = dom
            .find(&format!(
                "<tr data-partner=\"{}\" data-program=\"{}\">",
                r[1], r[2]
            ))
            .unwrap_or_else(|| panic!("no row for {} in the rendered report", r[1]));
        let end = start + dom[start..].find("</tr>").unwrap();
        let tr = &dom[start..end];
        for (i, col) in cols.iter().enumerate() {
            let cell = format!("data-col=\"{col}\">{}</td>", r[4 + i]);
            assert!(
                tr.contains(&cell),
                "{} {col}: page row {tr} lacks {}",
                r[1],
                r[4 + i]
            );
        }
        *payable.entry(r[3].clone()).or_default() += r[9].parse::<rust_decimal::Decimal>().unwrap();
    }
    for (cur, sum) in payable {
        let card = format!("data-kpi=\"payable-{cur}\">{sum}</div>");
        assert!(dom.contains(&card), "the payable card shows {sum} {cur}");
    }
    assert!(dom.contains("Clicks and conversions per day"));
    assert!(dom.contains("settlement explain "));

    let shot = shots.join(format!("report-{name}.png"));
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("chromium")
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,2400")
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "screenshot written"
    );
}

fn tempfile_dir(name: &str) -> PathBuf {
    let d = root()
        .join("target/e2e-state")
        .join(format!("chromium-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn nightly_pulls_runs_closes_and_reports_and_fails_cleanly_when_upstream_is_down() {
    let mut opts = Options::default();
    opts.vars.push(("ALLOW_TEST_CLOCK".into(), "1".into()));
    let mut w = Worker::start_with(opts);
    let setup = OCT - DAY;
    let (s, _) = call(
        &w,
        "PUT",
        "/api/programs/shop",
        ADMIN_TOKEN,
        json!({"postback_tokens": [TOKEN], "allowed_hosts": ["shop.example"]}),
        setup,
    );
    assert_eq!(s, 200);
    let (s, _) = call(
        &w,
        "PUT",
        "/api/partners/ann",
        ADMIN_TOKEN,
        json!({"program": "shop", "status": "approved"}),
        setup,
    );
    assert!(s < 300);
    let (s, _) = call(
        &w,
        "POST",
        "/api/links",
        ADMIN_TOKEN,
        json!({"partner": "ann", "program": "shop", "slug": "ann-n", "destination": "https://shop.example/?ref={click_id}"}),
        setup,
    );
    assert_eq!(s, 201);
    let c = click(&w, "ann-n", OCT + DAY, UA);
    let (s, _) = call(
        &w,
        "POST",
        "/postback",
        TOKEN,
        json!({"program": "shop", "event": "sale", "txn_id": "N1", "click_id": c, "customer": "c1", "amount": "500.00", "currency": "USD"}),
        OCT + DAY + HOUR,
    );
    assert_eq!(s, 200);

    let dir: PathBuf = root()
        .join("target/e2e-state")
        .join(format!("nightly-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("programs.toml"),
        "currency = \"USD\"\n\n[payout]\nhold_days = 0\nminimum = \"10.00\"\n\n[[programs]]\nid = \"shop\"\nmodel = \"affiliate\"\nwindow_days = 30\n\n  [[programs.rules]]\n  event = \"sale\"\n  percent = \"10\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("settlement.toml"),
        format!("edge = \"{}\"\ntoken_env = \"PTRACK_EXPORT_TOKEN\"\nprograms = \"programs.toml\"\nout = \"reports\"\ngrace_days = 3\n", w.base),
    )
    .unwrap();
    let db = dir.join("settlement.db").display().to_string();
    let config = dir.join("settlement.toml").display().to_string();
    let nightly = |now: &str| {
        Command::new(root().join("target/release/settlement"))
            .args([
                "--quiet", "--db", &db, "nightly", "--config", &config, "--now", now,
            ])
            .env("PTRACK_EXPORT_TOKEN", EXPORT_TOKEN)
            .output()
            .unwrap()
    };
    let out = nightly("2026-11-10");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let oct = dir.join("reports/2026-10/statements.csv");
    let rows = csv_rows(&oct);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][1], "ann");
    assert_eq!(rows[0][4], "50.00");
    // October is closed (its last day + 3 grace days is past): run refuses it.
    let again = settlement(&[
        "--db",
        &db,
        "run",
        "--config",
        &dir.join("programs.toml").display().to_string(),
        "--period",
        "2026-10",
    ]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The edge goes away: exit 3 with a message, and the store is untouched.
    w.stop();
    let before = std::fs::read(dir.join("reports/2026-10/statements.csv")).unwrap();
    let down = nightly("2026-11-11");
    assert_eq!(
        down.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(!String::from_utf8_lossy(&down.stderr).trim().is_empty());
    assert_eq!(
        before,
        std::fs::read(dir.join("reports/2026-10/statements.csv")).unwrap()
    );
}
