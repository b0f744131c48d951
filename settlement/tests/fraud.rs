//! The fraud rules (docs/fraud.md): a hand-built case per rule, actions and
//! scores, configuration errors, the operators' review end to end through
//! the CLI, and the seeded evaluation against its targets.

mod common;
use common::*;
use edge::record::Record;
use rust_decimal::Decimal;
use settlement::config;
use settlement::import::import_records;
use settlement::period::Period;
use settlement::run::{compute_draft, run, Draft, RunOutcome};
use settlement::store::Store;

const BASE: &str = r#"currency = "USD"
[[programs]]
id = "p"
model = "affiliate"
window_days = 30
  [[programs.rules]]
  event = "sale"
  percent = "10"
  [[programs.rules]]
  event = "signup"
  fixed = "2.00"
  [[programs.rules]]
  event = "trade"
  per_lot = "1.00"
  [programs.fraud]
"#;

fn at(s: &str) -> String {
    format!("2026-11-{s}.000Z")
}

fn partner(id: &str) -> String {
    format!(
        r#"{{"type":"partner","id":"{id}","program":"p","status":"approved","email_hash":"eh-{id}"}}"#
    )
}

fn coupon(code: &str, partner: &str) -> String {
    format!(r#"{{"type":"coupon","code":"{code}","partner":"{partner}","program":"p"}}"#)
}

/// A person's click from the US; `extra` is more JSON fields
/// (`,"asn":16509`, or another `,"country":"VN"`).
fn click(k: &str, when: &str, partner: &str, visitor: &str, extra: &str) -> String {
    let country = if extra.contains("\"country\"") {
        ""
    } else {
        r#","country":"US""#
    };
    format!(
        r#"{{"type":"click","id":"ev-{k}","click_id":"{k}","ts":"{}","program":"p","partner":"{partner}","visitor":"{visitor}","bot":false{country}{extra}}}"#,
        at(when)
    )
}

/// The fields of a conversion that came through a click.
fn via(k: &str, when: &str, partner: &str) -> String {
    format!(
        r#","partner":"{partner}","click_id":"{k}","click_ts":"{}""#,
        at(when)
    )
}

fn sale(id: &str, when: &str, customer: &str, extra: &str) -> String {
    format!(
        r#"{{"type":"conversion","id":"{id}","ts":"{}","program":"p","event":"sale","txn_id":"t-{id}","amount":"100.00","currency":"USD","customer":"{customer}","country":"US"{extra}}}"#,
        at(when)
    )
}

fn trade(
    id: &str,
    when: &str,
    customer: &str,
    instrument: &str,
    lots: &str,
    extra: &str,
) -> String {
    format!(
        r#"{{"type":"conversion","id":"{id}","ts":"{}","program":"p","event":"trade","txn_id":"t-{id}","lots":"{lots}","instrument":"{instrument}","customer":"{customer}"{extra}}}"#,
        at(when)
    )
}

fn refund(id: &str, when: &str, of: &str) -> String {
    format!(
        r#"{{"type":"conversion","id":"{id}","ts":"{}","program":"p","event":"refund","original_txn_id":"t-{of}"}}"#,
        at(when)
    )
}

/// A click and a sale through it, `wait` later (`"10:00:00"` -> `"10:00:30"`).
fn clicked_sale(
    n: &str,
    click_at: &str,
    sale_at: &str,
    partner: &str,
    visitor: &str,
    click_extra: &str,
    sale_extra: &str,
) -> Vec<String> {
    vec![
        click(&format!("k{n}"), click_at, partner, visitor, click_extra),
        sale(
            &format!("s{n}"),
            sale_at,
            &format!("cu{n}"),
            &format!("{}{sale_extra}", via(&format!("k{n}"), click_at, partner)),
        ),
    ]
}

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    cfg: config::Config,
}

fn world(fraud: &str, lines: &[String]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let mut all: Vec<String> = ["a", "b", "c"].iter().map(|p| partner(p)).collect();
    all.push(coupon("CA", "a"));
    all.extend_from_slice(lines);
    let recs: Vec<Record> = all
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    import_records(&mut store, &recs).unwrap();
    let cfg = config::parse(&dir.path().join("programs.toml"), &format!("{BASE}{fraud}")).unwrap();
    World {
        _dir: dir,
        store,
        cfg,
    }
}

impl World {
    fn draft(&self) -> Draft {
        compute_draft(&self.store, &self.cfg, Period::parse("2026-11").unwrap())
            .unwrap()
            .0
    }
}

fn flagged(d: &Draft, rule: &str) -> Vec<String> {
    let mut v: Vec<String> = d
        .fraud
        .iter()
        .filter(|r| r[5].split(' ').any(|x| x == rule))
        .map(|r| r[3].clone())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------- one case per rule

#[test]
fn click_too_fast() {
    let mut l = clicked_sale("1", "03T10:00:00", "03T10:00:05", "a", "v1", "", "");
    l.extend(clicked_sale(
        "2",
        "03T10:00:00",
        "03T10:00:30",
        "a",
        "v2",
        "",
        "",
    ));
    let w = world("", &l);
    let d = w.draft();
    assert_eq!(flagged(&d, "click_too_fast"), ["s1"]);
    let row = d.fraud.iter().find(|r| r[3] == "s1").unwrap();
    assert_eq!(
        (&row[4][..], &row[6][..], &row[7][..]),
        ("60", "hold", "pending")
    );
    // held: earned and pending, not payable
    let e = d.entries.iter().find(|e| e.id == row[0]).unwrap();
    assert_eq!(e.reason, "held:fraud:click_too_fast");
    assert!(e.calc.contains("held for review"), "{}", e.calc);
    let st = &d.statements[0];
    assert_eq!(
        (
            st.earned.to_string(),
            st.pending.to_string(),
            st.payable.to_string()
        ),
        ("20.00".into(), "10.00".into(), "10.00".into())
    );
}

#[test]
fn click_too_slow_needs_a_pattern_at_the_partner() {
    let mut l = Vec::new();
    // partner a: three conversions 28 days after their clicks (of three)
    for i in 0..3 {
        l.extend(clicked_sale(
            &format!("a{i}"),
            "01T08:00:00",
            "29T09:00:00",
            "a",
            &format!("va{i}"),
            "",
            "",
        ));
    }
    // partner b: one of ten
    l.extend(clicked_sale(
        "b0",
        "01T08:00:00",
        "29T09:00:00",
        "b",
        "vb0",
        "",
        "",
    ));
    for i in 1..10 {
        l.extend(clicked_sale(
            &format!("b{i}"),
            "20T08:00:00",
            "20T12:00:00",
            "b",
            &format!("vb{i}"),
            "",
            "",
        ));
    }
    let d = world("", &l).draft();
    assert_eq!(flagged(&d, "click_too_slow"), ["sa0", "sa1", "sa2"]);
    // a flag only: booked as usual
    let row = d.fraud.iter().find(|r| r[3] == "sa0").unwrap();
    assert_eq!((&row[6][..], &row[7][..]), ("flag", ""));
}

#[test]
fn conversion_before_click() {
    let mut l = clicked_sale("1", "03T12:00:00", "03T10:00:00", "a", "v1", "", "");
    // two minutes early: within the 300 s clock tolerance
    l.extend(clicked_sale(
        "2",
        "03T12:00:00",
        "03T11:58:00",
        "a",
        "v2",
        "",
        "",
    ));
    let d = world("", &l).draft();
    assert_eq!(flagged(&d, "conversion_before_click"), ["s1"]);
}

#[test]
fn visitor_flood() {
    let mut l = Vec::new();
    for i in 0..10 {
        l.push(click(
            &format!("f{i}"),
            &format!("05T10:{:02}:00", i),
            "a",
            "flooder",
            "",
        ));
    }
    for i in 0..9 {
        l.push(click(
            &format!("g{i}"),
            &format!("05T10:{:02}:00", i),
            "a",
            "busy",
            "",
        ));
    }
    l.push(sale(
        "s1",
        "05T12:00:00",
        "cu1",
        &via("f4", "05T10:04:00", "a"),
    ));
    l.push(sale(
        "s2",
        "05T12:00:00",
        "cu2",
        &via("g4", "05T10:04:00", "a"),
    ));
    let d = world("", &l).draft();
    assert_eq!(flagged(&d, "visitor_flood"), ["s1"]);
}

#[test]
fn partner_flood() {
    let mut l = Vec::new();
    // partner a: one click an hour for 20 hours, then 60 in one hour
    for h in 0..20 {
        l.push(click(
            &format!("n{h}"),
            &format!("{:02}T{:02}:10:00", 2 + h / 24, h % 24),
            "a",
            &format!("vn{h}"),
            "",
        ));
    }
    for i in 0..60 {
        l.push(click(
            &format!("x{i}"),
            &format!("06T15:{:02}:00", i),
            "a",
            &format!("vx{i}"),
            "",
        ));
    }
    l.push(sale(
        "s1",
        "06T20:00:00",
        "cu1",
        &via("x30", "06T15:30:00", "a"),
    ));
    l.push(sale(
        "s2",
        "02T20:00:00",
        "cu2",
        &via("n5", "02T05:10:00", "a"),
    ));
    let d = world("", &l).draft();
    assert_eq!(flagged(&d, "partner_flood"), ["s1"]);
}

#[test]
fn conversion_rate_outlier() {
    let mut l = Vec::new();
    // a: 200 clicks, 5 conversions; b: 20 clicks, 20 conversions
    for i in 0..200 {
        l.push(click(
            &format!("a{i}"),
            &format!("{:02}T10:00:{:02}", 2 + i / 60, i % 60),
            "a",
            &format!("va{i}"),
            "",
        ));
    }
    for i in 0..5 {
        l.push(sale(
            &format!("sa{i}"),
            "25T10:00:00",
            &format!("ca{i}"),
            &via(&format!("a{i}"), "02T10:00:00", "a"),
        ));
    }
    for i in 0..20 {
        l.push(click(
            &format!("b{i}"),
            &format!("03T11:00:{i:02}"),
            "b",
            &format!("vb{i}"),
            "",
        ));
        l.push(sale(
            &format!("sb{i:02}"),
            "04T10:00:00",
            &format!("cb{i}"),
            &via(&format!("b{i}"), &format!("03T11:00:{i:02}"), "b"),
        ));
    }
    let d = world("", &l).draft();
    let hits = flagged(&d, "conversion_rate");
    assert_eq!(hits.len(), 20, "{hits:?}");
    assert!(hits.iter().all(|h| h.starts_with("sb")), "{hits:?}");
}

#[test]
fn refund_rate_outlier() {
    let mut l = Vec::new();
    // a: 10 sales, 8 refunded; b: 40 sales, 2 refunded (program: 10 of 50)
    for i in 0..10 {
        l.extend(clicked_sale(
            &format!("a{i}"),
            "02T10:00:00",
            "02T12:00:00",
            "a",
            &format!("va{i}"),
            "",
            "",
        ));
        if i < 8 {
            l.push(refund(&format!("ra{i}"), "10T10:00:00", &format!("sa{i}")));
        }
    }
    for i in 0..40 {
        l.extend(clicked_sale(
            &format!("b{i:02}"),
            "02T10:00:00",
            "02T12:00:00",
            "b",
            &format!("vb{i}"),
            "",
            "",
        ));
        if i < 2 {
            l.push(refund(
                &format!("rb{i}"),
                "10T10:00:00",
                &format!("sb{i:02}"),
            ));
        }
    }
    let d = world("", &l).draft();
    let hits = flagged(&d, "refund_rate");
    assert_eq!(hits.len(), 10, "{hits:?}");
    assert!(hits.iter().all(|h| h.starts_with("sa")), "{hits:?}");
    // a's refunds were chargebacks, and the merchant won three of the
    // disputes: five reversals stand, fewer than min_refunds (8)
    let mut l: Vec<String> = l
        .into_iter()
        .map(
            |x| match x.find(r#""event":"refund","original_txn_id":"t-sa"#) {
                Some(_) => x.replace(
                    r#""event":"refund","original_txn_id""#,
                    r#""event":"chargeback","txn_id":"cb-x","original_txn_id""#,
                ),
                None => x,
            },
        )
        .collect();
    for (i, x) in l.iter_mut().filter(|x| x.contains("cb-x")).enumerate() {
        *x = x.replace("cb-x", &format!("cb-{i}"));
    }
    for i in 0..3 {
        l.push(format!(
            r#"{{"type":"conversion","id":"w{i}","ts":"{}","program":"p","event":"reinstate","txn_id":"won-{i}","original_txn_id":"cb-{i}"}}"#,
            at("20T10:00:00")
        ));
    }
    let d = world("", &l).draft();
    assert!(flagged(&d, "refund_rate").is_empty());
}

/// review24 F4: a dispute of November won in December leaves November's
/// refund_rate verdict as it was: an unrelated late November fact that
/// restates November pays a's rejected sales nothing (before: 20.00,
/// 10.00 without the late fact).
#[test]
fn a_reinstatement_never_changes_an_earlier_months_verdict() {
    let conv = |id: &str, day: &str, partner: &str| {
        format!(
            r#"{{"type":"conversion","id":"{id}","ts":"2026-11-{day}T12:00:00.000Z","program":"p","event":"sale","txn_id":"{id}","partner":"{partner}","click_id":"k{id}","click_ts":"2026-11-{day}T11:00:00.000Z","amount":"100","currency":"USD"}}"#
        )
    };
    let mut l = vec![conv("sa1", "02", "a"), conv("sa2", "02", "a")];
    for i in 1..=4 {
        l.push(conv(&format!("sb{i}"), "03", "b"));
    }
    l.push(r#"{"type":"conversion","id":"ra1","ts":"2026-11-10T12:00:00.000Z","program":"p","event":"chargeback","txn_id":"DU1","original_txn_id":"sa1"}"#.to_string());
    let mut w = world(
        "refund_rate = { action = \"reject\", min_refunds = 1, min_rate = \"0.1\", factor = \"1\" }\n",
        &l,
    );
    assert_eq!(flagged(&w.draft(), "refund_rate"), ["sa1", "sa2"]);
    let nov = Period::parse("2026-11").unwrap();
    run(&mut w.store, &w.cfg, nov).unwrap();
    settlement::run::close(&mut w.store, nov).unwrap();
    let later: Vec<Record> = [
        r#"{"type":"conversion","id":"w1","ts":"2026-12-03T12:00:00.000Z","program":"p","event":"reinstate","txn_id":"DU1:won","original_txn_id":"DU1"}"#.to_string(),
        conv("sb9", "20", "b"),
    ]
    .iter()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    import_records(&mut w.store, &later).unwrap();
    let (d, _) = compute_draft(&w.store, &w.cfg, Period::parse("2026-12").unwrap()).unwrap();
    let a: Vec<(&str, String)> = d
        .entries
        .iter()
        .filter(|e| e.partner == "a")
        .map(|e| (e.kind.as_str(), e.amount.to_string()))
        .collect();
    assert!(a.is_empty(), "{a:?}");
}

#[test]
fn shared_visitor() {
    let mut l = Vec::new();
    for i in 0..3 {
        l.extend(clicked_sale(
            &format!("v{i}"),
            &format!("0{}T10:00:00", 3 + i),
            &format!("0{}T11:00:00", 3 + i),
            "a",
            "one-device",
            "",
            "",
        ));
    }
    for i in 0..2 {
        l.extend(clicked_sale(
            &format!("h{i}"),
            &format!("0{}T10:00:00", 3 + i),
            &format!("0{}T11:00:00", 3 + i),
            "a",
            "household",
            "",
            "",
        ));
    }
    // the same device 20 days later: outside the 7 days
    l.extend(clicked_sale(
        "late",
        "28T10:00:00",
        "28T11:00:00",
        "a",
        "one-device",
        "",
        "",
    ));
    let d = world("", &l).draft();
    assert_eq!(flagged(&d, "shared_visitor"), ["sv0", "sv1", "sv2"]);
}

#[test]
fn country_mismatch_needs_a_pattern_at_the_partner() {
    let mut l = Vec::new();
    for i in 0..5 {
        let c = if i < 3 { r#","country":"VN""# } else { "" };
        l.extend(clicked_sale(
            &format!("a{i}"),
            "04T10:00:00",
            "04T12:00:00",
            "a",
            &format!("va{i}"),
            c,
            "",
        ));
    }
    for i in 0..10 {
        let c = if i == 0 { r#","country":"VN""# } else { "" };
        l.extend(clicked_sale(
            &format!("b{i}"),
            "04T10:00:00",
            "04T12:00:00",
            "b",
            &format!("vb{i}"),
            c,
            "",
        ));
    }
    let d = world("", &l).draft();
    assert_eq!(flagged(&d, "country_mismatch"), ["sa0", "sa1", "sa2"]);
}

#[test]
fn datacenter_clicks() {
    let mut l = Vec::new();
    // AWS by ASN (the list is the edge's), one by the edge's flag
    l.extend(clicked_sale(
        "a0",
        "04T10:00:00",
        "04T12:00:00",
        "a",
        "va0",
        r#","asn":16509"#,
        "",
    ));
    l.extend(clicked_sale(
        "a1",
        "04T10:00:00",
        "04T12:00:00",
        "a",
        "va1",
        r#","asn":14061"#,
        "",
    ));
    l.extend(clicked_sale(
        "a2",
        "04T10:00:00",
        "04T12:00:00",
        "a",
        "va2",
        r#","datacenter":true"#,
        "",
    ));
    l.extend(clicked_sale(
        "a3",
        "04T10:00:00",
        "04T12:00:00",
        "a",
        "va3",
        r#","asn":7922,"datacenter":false"#,
        "",
    ));
    l.extend(clicked_sale(
        "b0",
        "04T10:00:00",
        "04T12:00:00",
        "b",
        "vb0",
        r#","asn":16509"#,
        "",
    ));
    for i in 1..10 {
        l.extend(clicked_sale(
            &format!("b{i}"),
            "04T10:00:00",
            "04T12:00:00",
            "b",
            &format!("vb{i}"),
            "",
            "",
        ));
    }
    let d = world("", &l).draft();
    assert_eq!(flagged(&d, "datacenter"), ["sa0", "sa1", "sa2"]);
}

#[test]
fn self_referral_is_a_reason_and_a_rejection() {
    let l = clicked_sale(
        "1",
        "04T10:00:00",
        "04T12:00:00",
        "a",
        "v1",
        "",
        r#","email_hash":"eh-a""#,
    );
    let d = world("", &l).draft();
    let row = d.fraud.iter().find(|r| r[3] == "s1").unwrap();
    assert_eq!((&row[5][..], &row[6][..]), ("self_referral", "reject"));
    let e = d.entries.iter().find(|e| e.id == row[0]).unwrap();
    assert_eq!(
        (e.kind.as_str(), &e.reason[..]),
        ("rejected", "self_referral")
    );
}

#[test]
fn coupon_leakage() {
    let l = vec![
        // cu1 came through b's link (a sign-up), then paid with a's coupon
        click("kb", "02T10:00:00", "b", "dev1", ""),
        format!(
            r#"{{"type":"conversion","id":"up1","ts":"{}","program":"p","event":"signup","customer":"cu1"{}}}"#,
            at("02T10:30:00"),
            via("kb", "02T10:00:00", "b")
        ),
        sale("s1", "05T10:00:00", "cu1", r#","coupon":"CA""#),
        // cu2 never clicked anything
        sale("s2", "05T10:00:00", "cu2", r#","coupon":"CA""#),
        // cu3's checkout pixel carries the device that clicked c's link
        click("kc", "04T10:00:00", "c", "dev3", ""),
        sale(
            "s3",
            "06T10:00:00",
            "cu3",
            r#","coupon":"CA","visitor":"dev3""#,
        ),
        // cu4 clicked a's own link: no leak
        click("ka", "04T10:00:00", "a", "dev4", ""),
        sale(
            "s4",
            "06T10:00:00",
            "cu4",
            r#","coupon":"CA","visitor":"dev4""#,
        ),
    ];
    let d = world("", &l).draft();
    assert_eq!(flagged(&d, "coupon_leakage"), ["s1", "s3"]);
}

#[test]
fn round_trips() {
    let l = vec![
        click("k1", "02T10:00:00", "a", "v1", ""),
        trade(
            "t1",
            "03T10:00:00",
            "cu1",
            "EURUSD",
            "2.0",
            &via("k1", "02T10:00:00", "a"),
        ),
        trade(
            "t2",
            "03T10:00:30",
            "cu1",
            "EURUSD",
            "2.00",
            &via("k1", "02T10:00:00", "a"),
        ),
        // other lots, or minutes later: ordinary trading
        trade(
            "t3",
            "03T10:00:40",
            "cu1",
            "EURUSD",
            "1.5",
            &via("k1", "02T10:00:00", "a"),
        ),
        trade(
            "t4",
            "03T10:10:00",
            "cu1",
            "EURUSD",
            "2.0",
            &via("k1", "02T10:00:00", "a"),
        ),
    ];
    let d = world("", &l).draft();
    assert_eq!(flagged(&d, "round_trip"), ["t1", "t2"]);
}

/// One trade brought in under two event ids (a backfill beside the edge's
/// record: the same program, event and txn_id) is one trade to the fraud
/// rules as to the engine: not a round trip of itself, paid once and not
/// held. Before, both copies tripped `round_trip`, and the trade that
/// stands was held for review.
#[test]
fn a_trade_brought_in_twice_is_not_a_round_trip_of_itself() {
    let t1 = trade(
        "t1",
        "03T10:00:00",
        "cu1",
        "EURUSD",
        "2.0",
        &via("k1", "02T10:00:00", "a"),
    );
    let copy = t1.replace(r#""id":"t1""#, r#""id":"bf-t1""#);
    assert_ne!(copy, t1);
    let l = vec![click("k1", "02T10:00:00", "a", "v1", ""), t1, copy];
    let d = world("", &l).draft();
    assert!(flagged(&d, "round_trip").is_empty(), "{:?}", d.fraud);
    let paid: Vec<(String, String, String)> = d
        .entries
        .iter()
        .filter(|e| e.kind.to_string() == "commission")
        .map(|e| (e.sources.join(" "), e.amount.to_string(), e.reason.clone()))
        .collect();
    // the first in (ts, id) order stands
    assert_eq!(
        paid,
        [("bf-t1".to_string(), "2.00".to_string(), String::new())]
    );
}

// ---------------------------------------------------------------- actions and scores

#[test]
fn reject_action_makes_a_rejected_entry() {
    let l = clicked_sale("1", "03T10:00:00", "03T10:00:05", "a", "v1", "", "");
    let d = world("click_too_fast = { action = \"reject\" }\n", &l).draft();
    let row = d.fraud.iter().find(|r| r[3] == "s1").unwrap();
    assert_eq!(&row[6], "reject");
    let e = d.entries.iter().find(|e| e.id == row[0]).unwrap();
    assert_eq!(
        (e.kind.as_str(), &e.reason[..]),
        ("rejected", "fraud:click_too_fast")
    );
    assert!(
        e.calc.contains("the fraud rule click_too_fast rejects it"),
        "{}",
        e.calc
    );
    assert!(d.statements.is_empty() || d.statements[0].earned.is_zero());
}

#[test]
fn off_and_flag_and_the_score_threshold() {
    let l = clicked_sale("1", "03T10:00:00", "03T10:00:05", "a", "v1", "", "");
    let d = world("click_too_fast = { action = \"off\" }\n", &l).draft();
    assert!(d.fraud.is_empty());
    let d = world("click_too_fast = { action = \"flag\" }\n", &l).draft();
    assert_eq!(d.fraud[0][6], "flag");
    assert_eq!(d.statements[0].payable.to_string(), "10.00");
    // weights add up: a flag of weight 100 reaches hold_score
    let d = world(
        "hold_score = 90\nclick_too_fast = { action = \"flag\", weight = 90 }\n",
        &l,
    )
    .draft();
    assert_eq!((&d.fraud[0][4][..], &d.fraud[0][6][..]), ("90", "hold"));
    let d = world("reject_score = 50\n", &l).draft();
    assert_eq!(d.fraud[0][6], "reject");
}

#[test]
fn config_errors_name_file_line_and_key() {
    let cases = [
        ("colour = 1\n", 16, "colour"),
        ("click_too_fast = { days = 3 }\n", 16, "days"),
        ("click_too_fast = { action = \"ban\" }\n", 16, "action"),
        ("[programs.fraud.visitor_flood]\nclicks = 1\n", 17, "clicks"),
        ("round_trip = { weight = 101 }\n", 16, "weight"),
        ("refund_rate = { min_rate = \"1.5\" }\n", 16, "min_rate"),
        ("conversion_rate = { factor = 2.5 }\n", 16, "factor"),
    ];
    for (text, line, key) in cases {
        let e = config::parse(
            std::path::Path::new("programs.toml"),
            &format!("{BASE}{text}"),
        )
        .err()
        .unwrap_or_else(|| panic!("accepted: {text}"));
        let s = e.to_string();
        assert!(
            s.starts_with(&format!("programs.toml:{line}: key `{key}`")),
            "{text:?} -> {s}"
        );
    }
    // defaults: the table alone turns every rule on
    let c = config::parse(std::path::Path::new("p.toml"), BASE).unwrap();
    let f = c.programs[0].fraud.as_ref().unwrap();
    assert_eq!(f.slow_ms, 27 * 86_400_000);
    assert_eq!(f.rules[0].weight, 60);
}

#[test]
fn rerun_changes_nothing_and_reverdicts_are_stable() {
    let mut l = clicked_sale("1", "03T10:00:00", "03T10:00:05", "a", "v1", "", "");
    for i in 0..10 {
        l.push(click(
            &format!("f{i}"),
            &format!("05T10:{:02}:00", i),
            "a",
            "flooder",
            "",
        ));
    }
    l.push(sale(
        "s2",
        "05T12:00:00",
        "cu2",
        &via("f4", "05T10:04:00", "a"),
    ));
    let mut w = world("", &l);
    let p = Period::parse("2026-11").unwrap();
    assert!(matches!(
        run(&mut w.store, &w.cfg, p).unwrap(),
        RunOutcome::Replaced { .. }
    ));
    assert!(matches!(
        run(&mut w.store, &w.cfg, p).unwrap(),
        RunOutcome::Unchanged { .. }
    ));
    // a later month's facts do not change November's verdicts
    let a = w.draft().fraud;
    let dec = compute_draft(&w.store, &w.cfg, Period::parse("2026-12").unwrap())
        .unwrap()
        .0;
    assert!(dec.fraud.is_empty());
    assert_eq!(a, w.draft().fraud);
}

#[test]
fn a_late_fact_the_rules_hold_is_a_held_adjustment() {
    let l = clicked_sale("1", "03T10:00:00", "03T12:00:00", "a", "v1", "", "");
    let mut w = world("", &l);
    let nov = Period::parse("2026-11").unwrap();
    run(&mut w.store, &w.cfg, nov).unwrap();
    settlement::run::close(&mut w.store, nov).unwrap();
    // a November sale 5 s after its click arrives in December
    let late: Vec<Record> = clicked_sale("2", "20T10:00:00", "20T10:00:05", "a", "v2", "", "")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    import_records(&mut w.store, &late).unwrap();
    let (d, _) = compute_draft(&w.store, &w.cfg, Period::parse("2026-12").unwrap()).unwrap();
    let adj = d
        .entries
        .iter()
        .find(|e| e.kind.as_str() == "adjustment")
        .expect("an adjustment");
    assert_eq!(
        (adj.amount.to_string(), &adj.reason[..]),
        ("10.00".to_string(), "held:fraud:click_too_fast")
    );
    // November's own sale was paid in November; the late one waits
    assert_eq!(d.statements[0].pending.to_string(), "10.00");
    assert!(d.statements[0].payable.is_zero());
}

/// A late commission held for review lowers a technology minimum's top-up:
/// the lower top-up waits for the review with it. November: 10.00 earned,
/// topped up to 100 by 90.00 and paid. A November sale (+10.00) the rules
/// hold arrives in December: the top-up is restated as 80.00, and its
/// -10.00 is held under the same rule and event, so December writes
/// nothing off (before, the -10.00 matured alone: 10.00 was written off,
/// and a release then paid 110 on a 100 minimum).
#[test]
fn a_top_up_lowered_by_a_held_late_commission_waits_for_the_review() {
    let l = clicked_sale("1", "03T10:00:00", "03T12:00:00", "a", "v1", "", "");
    let mut w = world("", &l);
    let text = BASE.replace(
        "model = \"affiliate\"",
        "model = \"technology\"\nminimum_per_period = \"100\"",
    );
    w.cfg = config::parse(std::path::Path::new("programs.toml"), &text).unwrap();
    let nov = Period::parse("2026-11").unwrap();
    run(&mut w.store, &w.cfg, nov).unwrap();
    settlement::run::close(&mut w.store, nov).unwrap();
    let late: Vec<Record> = clicked_sale("2", "20T10:00:00", "20T10:00:05", "a", "v2", "", "")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    import_records(&mut w.store, &late).unwrap();
    let (d, _) = compute_draft(&w.store, &w.cfg, Period::parse("2026-12").unwrap()).unwrap();
    let mut adj: Vec<(String, &str)> = d
        .entries
        .iter()
        .filter(|e| e.kind.as_str() == "adjustment")
        .map(|e| (e.amount.to_string(), e.reason.as_str()))
        .collect();
    adj.sort();
    assert_eq!(
        adj,
        [
            ("-10.00".to_string(), "held:fraud:click_too_fast"),
            ("10.00".to_string(), "held:fraud:click_too_fast"),
        ]
    );
    // the two net while held: no figure, no write-off, nothing paid (a
    // row of zeros names the partner)
    assert!(
        !d.entries.iter().any(|e| e.kind.as_str() == "writeoff"),
        "{:?}",
        d.entries
    );
    assert_eq!(d.statements.len(), 1, "{:?}", d.statements);
    assert!(
        d.statements[0].figures().iter().all(|x| x.is_zero()),
        "{:?}",
        d.statements
    );
}

// ---------------------------------------------------------------- review, end to end

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn events_file(dir: &std::path::Path, lines: &[String]) -> String {
    let mut all: Vec<String> = ["a", "b"].iter().map(|p| partner(p)).collect();
    all.extend_from_slice(lines);
    write(dir, "e.ndjson", &(all.join("\n") + "\n"))
}

fn statement_row(out: &std::path::Path, partner: &str) -> String {
    read(&out.join("statements.csv"))
        .lines()
        .find(|l| l.split(',').nth(1) == Some(partner))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn hold_then_release_is_payable_at_the_next_run() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(t.path(), "p.toml", BASE);
    let mut l = clicked_sale("1", "03T10:00:00", "03T10:00:05", "a", "v1", "", "");
    l.extend(clicked_sale(
        "2",
        "03T10:00:00",
        "03T12:00:00",
        "a",
        "v2",
        "",
        "",
    ));
    ok(&db, &["import", &events_file(t.path(), &l)]);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    let out = t.path().join("o");
    let o = out.to_str().unwrap();
    ok(&db, &["report", "--period", "2026-11", "--out", o]);
    // earned 20.00, of which 10.00 held: payable 10.00
    assert_eq!(
        statement_row(&out, "a"),
        "2026-11,a,p,USD,20.00,0.00,0.00,0.00,10.00,10.00,10.00"
    );
    let fraud_csv = read(&out.join("fraud.csv"));
    assert!(
        fraud_csv.starts_with("entry,partner,program,event,score,reasons,action,decision,by,why\n")
    );
    let row: Vec<&str> = fraud_csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(
        &row[1..8],
        ["a", "p", "s1", "60", "click_too_fast", "hold", "pending"]
    );
    let entry = row[0].to_string();
    assert!(read(&out.join("report.html")).contains("<h2>Fraud</h2>"));
    let explain = ok(&db, &["explain", &entry]);
    assert!(
        explain.contains("fraud    score 60 (click_too_fast), action hold, awaiting review"),
        "{explain}"
    );

    let list = ok(&db, &["review", "list"]);
    assert!(list.contains(&entry) && list.contains("\theld\n"), "{list}");

    // decisions need who and why
    let (c, err) = code(
        &db,
        &["review", "release", &entry, "--by", "", "--reason", "x"],
    );
    assert_eq!(c, 1, "{err}");
    // an entry that is not held
    let other = read(&out.join("ledger.csv"))
        .lines()
        .find(|l| l.contains(",s2,"))
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let (c, err) = code(
        &db,
        &["review", "release", &other, "--by", "ops", "--reason", "x"],
    );
    assert_eq!(c, 1, "{err}");
    assert!(err.contains("not held"), "{err}");

    let (c, err) = code(
        &db,
        &[
            "review",
            "release",
            &entry,
            "--by",
            "alice",
            "--reason",
            "merchant confirmed the order",
        ],
    );
    assert_eq!(c, 0, "{err}");
    assert!(err.contains("released by alice"), "{err}");
    // rerun-safe: the same decision again changes nothing; another is refused
    let (c, err) = code(
        &db,
        &[
            "review", "release", &entry, "--by", "alice", "--reason", "again",
        ],
    );
    assert_eq!(c, 0, "{err}");
    assert!(err.contains("already released"), "{err}");
    let (c, err) = code(
        &db,
        &["review", "reject", &entry, "--by", "bob", "--reason", "no"],
    );
    assert_eq!(c, 1, "{err}");
    assert!(err.contains("final"), "{err}");
    assert!(ok(&db, &["review", "list"]).contains("nothing awaits"));
    assert!(ok(&db, &["review", "list", "--all"])
        .contains("released by alice: merchant confirmed the order"));

    // the next run pays it; a rerun changes nothing
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    ok(&db, &["report", "--period", "2026-11", "--out", o]);
    assert_eq!(
        statement_row(&out, "a"),
        "2026-11,a,p,USD,20.00,0.00,0.00,0.00,0.00,20.00,0.00"
    );
    let ledger = read(&out.join("ledger.csv"));
    let line = ledger.lines().find(|l| l.starts_with(&entry)).unwrap();
    assert!(
        line.contains("released on review by alice: merchant confirmed the order"),
        "{line}"
    );
    let fraud_csv = read(&out.join("fraud.csv"));
    assert!(
        fraud_csv.contains(",hold,released,alice,merchant confirmed the order"),
        "{fraud_csv}"
    );
    let before: Vec<String> = ["ledger.csv", "statements.csv", "fraud.csv", "report.html"]
        .iter()
        .map(|f| read(&out.join(f)))
        .collect();
    let (_, err) = code(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    assert!(err.contains("unchanged"), "{err}");
    ok(&db, &["report", "--period", "2026-11", "--out", o]);
    for (f, b) in ["ledger.csv", "statements.csv", "fraud.csv", "report.html"]
        .iter()
        .zip(&before)
    {
        assert_eq!(&read(&out.join(f)), b, "{f} changed on rerun");
    }
}

#[test]
fn held_in_a_closed_period_released_or_rejected_later() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(t.path(), "p.toml", BASE);
    let mut l = clicked_sale("1", "03T10:00:00", "03T10:00:05", "a", "v1", "", "");
    l.extend(clicked_sale(
        "2",
        "03T10:00:00",
        "03T10:00:03",
        "b",
        "v2",
        "",
        "",
    ));
    ok(&db, &["import", &events_file(t.path(), &l)]);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    let nov = t.path().join("nov");
    report(&db, "2026-11", &nov, &[]);
    assert_eq!(
        statement_row(&nov, "a"),
        "2026-11,a,p,USD,10.00,0.00,0.00,0.00,10.00,0.00,10.00"
    );
    ok(&db, &["close", "--period", "2026-11"]);
    let held: Vec<(String, String)> = read(&nov.join("fraud.csv"))
        .lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c[1].to_string(), c[0].to_string())
        })
        .collect();
    let entry_of = |p: &str| held.iter().find(|h| h.0 == p).unwrap().1.clone();

    // December before any decision: both still pending
    ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
    let dec = t.path().join("dec");
    let d = dec.to_str().unwrap();
    ok(&db, &["report", "--period", "2026-12", "--out", d]);
    assert_eq!(
        statement_row(&dec, "a"),
        "2026-12,a,p,USD,0.00,0.00,0.00,10.00,10.00,0.00,10.00"
    );

    // a released, b rejected
    ok(
        &db,
        &[
            "review",
            "release",
            &entry_of("a"),
            "--by",
            "alice",
            "--reason",
            "ok",
        ],
    );
    let (c, err) = code(
        &db,
        &[
            "review",
            "reject",
            &entry_of("b"),
            "--by",
            "bob",
            "--reason",
            "injected click",
        ],
    );
    assert_eq!(c, 0, "{err}");
    assert!(err.contains("reversed by an adjustment"), "{err}");
    // a held entry released is not booked again: it stops being pending
    let why = ok(&db, &["explain", &entry_of("a")]);
    assert!(
        why.contains("released by alice: ok, after this period's draft (the entry stands as booked and is payable from the statement of the next run of the first open period)"),
        "{why}"
    );
    let why = ok(&db, &["explain", &entry_of("b")]);
    assert!(
        why.contains("rejected by bob: injected click, after this period's draft (booked by the next run of the first open period)"),
        "{why}"
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
    ok(&db, &["report", "--period", "2026-12", "--out", d]);
    assert_eq!(
        statement_row(&dec, "a"),
        "2026-12,a,p,USD,0.00,0.00,0.00,10.00,0.00,10.00,0.00"
    );
    // the page of the period that pays a's release names it (no entry does)
    let html = read(&dec.join("report.html"));
    assert!(
        html.contains("<h2>Decisions on earlier periods' entries (2)</h2>")
            && html.contains(&format!(
                "<tr><td>{}</td><td>s1</td><td>release</td><td>alice</td><td>ok</td>",
                entry_of("a")
            ))
            && html.contains(&format!(
                "<tr><td>{}</td><td>s2</td><td>reject</td><td>bob</td><td>injected click</td>",
                entry_of("b")
            )),
        "{html}"
    );
    // November's page, written again, does not list them (its draft
    // took in none)
    let nov2 = t.path().join("nov2");
    report(&db, "2026-11", &nov2, &[]);
    assert!(!read(&nov2.join("report.html")).contains("Decisions on earlier"));
    assert_eq!(
        statement_row(&dec, "b"),
        "2026-12,b,p,USD,0.00,0.00,-10.00,10.00,0.00,0.00,0.00"
    );
    let ledger = read(&dec.join("ledger.csv"));
    let rev = ledger.lines().find(|l| l.contains(",adjustment,")).unwrap();
    assert!(
        rev.contains(",-10.00,USD,") && rev.contains("fraud:click_too_fast"),
        "{rev}"
    );
    assert!(
        rev.contains(&entry_of("b")) && rev.contains("rejected on review by bob: injected click"),
        "{rev}"
    );
    // closed November never changed
    let (c, _) = code(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    assert_eq!(c, 1);

    // January: the reversal is in closed December, not booked again
    ok(&db, &["close", "--period", "2026-12"]);
    ok(&db, &["run", "--config", &cfg, "--period", "2027-01"]);
    let jan = t.path().join("jan");
    report(&db, "2027-01", &jan, &[]);
    assert!(!read(&jan.join("ledger.csv")).contains(",adjustment,"));
    assert_eq!(read(&jan.join("statements.csv")).lines().count(), 1);
}

/// The `payable` column of `partner`'s statement in each period's report,
/// summed (a period without its statement pays nothing).
fn paid(db: &std::path::Path, dir: &std::path::Path, partner: &str, periods: &[&str]) -> Decimal {
    let mut sum = Decimal::ZERO;
    for p in periods {
        let out = dir.join(format!("paid-{p}"));
        report(db, p, &out, &[]);
        let row = statement_row(&out, partner);
        if let Some(v) = row.split(',').nth(9) {
            sum += v.parse::<Decimal>().unwrap();
        }
    }
    sum
}

/// The id of the first ledger entry of `kind` in a report's ledger.csv.
fn entry_of(out: &std::path::Path, kind: &str) -> String {
    read(&out.join("ledger.csv"))
        .lines()
        .find(|l| l.split(',').nth(4) == Some(kind))
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("no {kind} entry"))
        .to_string()
}

/// A retroactive ladder on count: 10.00 a sale, 20.00 each from `step`
/// sales on, with (`fraud`) or without `click_too_fast` rejecting.
fn ladder(step: &str, fraud: bool) -> String {
    format!(
        r#"currency = "USD"
[payout]
hold_days = 0
minimum = "0.00"
[[programs]]
id = "p"
model = "affiliate"
window_days = 30
  [[programs.rules]]
  event = "sale"
  ladder = {{ metric = "count", mode = "retroactive", steps = [ {{ from = "0", fixed = "10.00" }}, {{ from = "{step}", fixed = "20.00" }} ] }}
{}"#,
        if fraud {
            "  [programs.fraud]\n  click_too_fast = { action = \"reject\" }\n"
        } else {
            ""
        }
    )
}

/// A sale a fraud rule rejected, released on review after its period
/// closed, restates the closed period as a late fact does: the next
/// period books its commission and what the retroactive ladder then gives
/// the partner's other sales, once, beside late facts of that period or
/// without any. The partner is paid in all what the same facts pay with the
/// rule off (60.00 and 40.00); a rerun and the period after add nothing.
/// Before, such a release was refused; before that, accepted and booked
/// nowhere (and a first attempt booked the commission twice beside late
/// facts, and missed the ladder's effect without them).
#[test]
fn a_rule_rejection_released_after_the_close_restates_the_closed_period() {
    for (step, late, expected) in [("2", true, "60.00"), ("1", false, "40.00")] {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("s.db");
        let cfg = write(t.path(), "p.toml", &ladder(step, true));
        let mut nov = clicked_sale("1", "03T10:00:00", "03T10:00:05", "a", "v1", "", "");
        nov.extend(clicked_sale(
            "2",
            "04T10:00:00",
            "04T12:00:05",
            "a",
            "v2",
            "",
            "",
        ));
        let s3 = clicked_sale("3", "05T10:00:00", "05T12:00:05", "a", "v3", "", "");
        ok(&db, &["import", &events_file(t.path(), &nov)]);
        ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
        let out = t.path().join("nov");
        report(&db, "2026-11", &out, &[]);
        let rejected = entry_of(&out, "rejected");
        ok(&db, &["close", "--period", "2026-11"]);
        let (c, said) = code(
            &db,
            &[
                "review",
                "release",
                &rejected,
                "--by",
                "alice",
                "--reason",
                "merchant confirmed",
            ],
        );
        assert_eq!(c, 0, "{said}");
        let why = ok(&db, &["explain", &rejected]);
        assert!(
            why.contains("action reject, released by alice: merchant confirmed, after this period's draft (booked by the next run of the first open period)"),
            "{why}"
        );
        assert!(said.contains("restates the closed periods"), "{said}");
        if late {
            ok(
                &db,
                &[
                    "import",
                    &write(t.path(), "late.ndjson", &(s3.join("\n") + "\n")),
                ],
            );
        }
        ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
        let dec = t.path().join("dec");
        report(&db, "2026-12", &dec, &[]);
        let ledger = read(&dec.join("ledger.csv"));
        let s1: Vec<&str> = ledger.lines().filter(|l| l.contains(",s1,")).collect();
        assert_eq!(s1.len(), 1, "{ledger}");
        assert!(
            s1[0].contains(",adjustment,20.00,USD,")
                && s1[0].contains(",released:fraud:click_too_fast,")
                && s1[0].contains("released on review by alice (merchant confirmed) after its period 2026-11 closed"),
            "{ledger}"
        );
        // s2 goes from 10.00 to 20.00: the second sale reaches the step
        let s2 = ledger.lines().find(|l| l.contains(",s2,")).unwrap_or("");
        let why = if late {
            "late_facts_2026-11"
        } else {
            "restated_2026-11"
        };
        assert!(
            s2.contains(",adjustment,10.00,USD,") && s2.contains(why),
            "{ledger}"
        );
        let (c, again) = code(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
        assert!(c == 0 && again.contains("draft unchanged"), "{again}");
        ok(&db, &["close", "--period", "2026-12"]);
        ok(&db, &["run", "--config", &cfg, "--period", "2027-01"]);
        let jan = t.path().join("jan");
        report(&db, "2027-01", &jan, &[]);
        assert!(!read(&jan.join("ledger.csv")).contains(",adjustment,"));
        let total = paid(&db, t.path(), "a", &["2026-11", "2026-12", "2027-01"]);

        // the same facts, all on time, with the rule off
        let r = tempfile::tempdir().unwrap();
        let rdb = r.path().join("r.db");
        let mut all = nov.clone();
        if late {
            all.extend(s3);
        }
        ok(&rdb, &["import", &events_file(r.path(), &all)]);
        let clean = write(r.path(), "clean.toml", &ladder(step, false));
        ok(&rdb, &["run", "--config", &clean, "--period", "2026-11"]);
        let reference = paid(&rdb, r.path(), "a", &["2026-11"]);
        assert_eq!(reference.to_string(), expected);
        assert_eq!(total, reference, "step {step}, late facts {late}");
    }
}

/// What a release after the close changes on a sale the rules hold (a
/// ladder's step reached by the released sale) waits for that sale's review
/// like the rest of it: rejecting the held sale later takes it back, and
/// the partner is paid what the same decisions made on time pay (40.00:
/// two sales at the second step). Before, the increment was booked
/// `restated_2026-11`, payable at once, and kept: 50.00.
#[test]
fn what_a_release_changes_on_a_held_sale_waits_for_its_review() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(t.path(), "p.toml", &ladder("2", true));
    let mut nov = clicked_sale("1", "03T10:00:00", "03T10:00:05", "a", "v1", "", "");
    nov.extend(clicked_sale(
        "2",
        "04T10:00:00",
        "04T12:00:05",
        "a",
        "v2",
        "",
        "",
    ));
    // a sale before its click (attributed by its coupon): held by
    // conversion_before_click
    nov.push(coupon("CA", "a"));
    nov.extend(clicked_sale(
        "3",
        "05T11:00:00",
        "05T10:00:00",
        "a",
        "v3",
        "",
        r#","coupon":"CA""#,
    ));
    ok(&db, &["import", &events_file(t.path(), &nov)]);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    let out = t.path().join("nov");
    report(&db, "2026-11", &out, &[]);
    let rejected = entry_of(&out, "rejected");
    let held = read(&out.join("ledger.csv"))
        .lines()
        .find(|l| l.contains(",s3,") && l.contains("held:fraud:conversion_before_click"))
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("s3 held: {}", read(&out.join("ledger.csv"))))
        .to_string();
    ok(&db, &["close", "--period", "2026-11"]);
    ok(
        &db,
        &[
            "review", "release", &rejected, "--by", "al", "--reason", "ok",
        ],
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
    let dec = t.path().join("dec");
    report(&db, "2026-12", &dec, &[]);
    let ledger = read(&dec.join("ledger.csv"));
    let s3 = ledger.lines().find(|l| l.contains(",s3,")).unwrap_or("");
    assert!(
        s3.contains(",adjustment,10.00,USD,")
            && s3.contains(",held:fraud:conversion_before_click,"),
        "{ledger}"
    );
    ok(&db, &["close", "--period", "2026-12"]);
    ok(
        &db,
        &["review", "reject", &held, "--by", "al", "--reason", "bad"],
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2027-01"]);
    let total = paid(&db, t.path(), "a", &["2026-11", "2026-12", "2027-01"]);
    assert_eq!(total.to_string(), "40.00");
}

/// A release after the close of a sale a rule rejected is paid when the
/// rule was turned to hold, flag or off since (the closed view keeps the
/// sale rejected as booked; configuration changes do not restate, the
/// release does). Before, nothing was paid.
#[test]
fn a_release_after_the_close_is_paid_after_its_rule_was_turned_down() {
    for action in ["hold", "flag", "off"] {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("s.db");
        let reject = write(
            t.path(),
            "reject.toml",
            &format!("{BASE}click_too_fast = {{ action = \"reject\" }}\n"),
        );
        let now = write(
            t.path(),
            "now.toml",
            &format!("{BASE}click_too_fast = {{ action = \"{action}\" }}\n"),
        );
        let l = clicked_sale("1", "03T10:00:00", "03T10:00:05", "a", "v1", "", "");
        ok(&db, &["import", &events_file(t.path(), &l)]);
        ok(&db, &["run", "--config", &reject, "--period", "2026-11"]);
        let nov = t.path().join("nov");
        report(&db, "2026-11", &nov, &[]);
        let rejected = entry_of(&nov, "rejected");
        ok(&db, &["close", "--period", "2026-11"]);
        ok(
            &db,
            &[
                "review", "release", &rejected, "--by", "al", "--reason", "ok",
            ],
        );
        ok(&db, &["run", "--config", &now, "--period", "2026-12"]);
        ok(&db, &["close", "--period", "2026-12"]);
        ok(&db, &["run", "--config", &now, "--period", "2027-01"]);
        let total = paid(&db, t.path(), "a", &["2026-11", "2026-12", "2027-01"]);
        assert_eq!(total.to_string(), "10.00", "{action}");
    }
}

/// A held sale rejected on review after its period closed takes back its
/// lifetime lock: the customer's later sale, paid to the held sale's
/// partner through the lock, is restated to the partner whose click
/// brought it, as if the review had come before the close (b is paid
/// 10.00, a nets to nothing: its 10.00 paid is carried as -10.00 with
/// `negative_carryover`). Before, a kept the sale and b was never paid.
#[test]
fn a_held_sale_rejected_after_the_close_takes_back_its_lifetime_lock() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(
        t.path(),
        "p.toml",
        &BASE.replace("[payout]", "").replace(
            "window_days = 30\n",
            "window_days = 30\nlifetime = true\nnegative_carryover = true\n",
        ),
    );
    assert!(read(std::path::Path::new(&cfg)).contains("lifetime = true"));
    // s1: 5 s after a's click, held; s2: the same customer through b's click
    let mut l = clicked_sale("1", "03T10:00:00", "03T10:00:05", "a", "v1", "", "");
    l.push(click("k2", "10T10:00:00", "b", "v2", ""));
    l.push(sale(
        "s2",
        "10T12:00:00",
        "cu1",
        &via("k2", "10T10:00:00", "b"),
    ));
    ok(&db, &["import", &events_file(t.path(), &l)]);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    let nov = t.path().join("nov");
    report(&db, "2026-11", &nov, &[]);
    let ledger = read(&nov.join("ledger.csv"));
    let held = ledger
        .lines()
        .find(|l| l.contains(",s1,") && l.contains("held:fraud:click_too_fast"))
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("s1 held: {ledger}"))
        .to_string();
    // through the lock: a's
    assert!(
        ledger.contains(",a,p,commission,10.00,USD,p/1,s2,"),
        "{ledger}"
    );
    ok(&db, &["close", "--period", "2026-11"]);
    ok(
        &db,
        &["review", "reject", &held, "--by", "al", "--reason", "bad"],
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
    let dec = t.path().join("dec");
    report(&db, "2026-12", &dec, &[]);
    let ledger = read(&dec.join("ledger.csv"));
    assert!(
        ledger.contains(",a,p,adjustment,-10.00,USD,p/1,s2,")
            && ledger.contains(",b,p,adjustment,10.00,USD,p/1,s2,"),
        "{ledger}"
    );
    assert_eq!(
        paid(&db, t.path(), "b", &["2026-11", "2026-12"]).to_string(),
        "10.00"
    );
    let a = statement_row(&dec, "a");
    assert_eq!(a.split(',').nth(10), Some("-10.00"), "{a}");
    assert_eq!(
        paid(&db, t.path(), "a", &["2026-11", "2026-12"]).to_string(),
        "10.00"
    );
}

/// A rejected sale that is refunded and released nets to nothing, and so
/// does its parent's override: refund and release in the same open period,
/// the refund's period closed before the release, and a release decided
/// after the sale's draft but before its close (which no rerun took in:
/// the next period books it). Before, the first two paid 10.00 and 1.00
/// for a fully refunded sale.
#[test]
fn a_rejected_sale_refunded_and_released_after_the_close_nets_to_zero() {
    let cfg_text = r#"currency = "USD"
[payout]
hold_days = 0
minimum = "0.00"
[[programs]]
id = "p"
model = "affiliate"
window_days = 30
overrides = ["10"]
  [[programs.rules]]
  event = "sale"
  percent = "10"
  [programs.fraud]
  click_too_fast = { action = "reject" }
"#;
    let registry = [
        r#"{"type":"partner","id":"par","program":"p","status":"approved","email_hash":"eh-par"}"#.to_string(),
        r#"{"type":"partner","id":"a","program":"p","parent":"par","status":"approved","email_hash":"eh-a"}"#.to_string(),
    ];
    let r1 = r#"{"type":"conversion","id":"r1","ts":"2026-12-05T10:00:00.000Z","program":"p","event":"refund","txn_id":"t-r1","original_txn_id":"t-s1"}"#;
    for case in [
        "refund and release in December",
        "release in January",
        "release before the close",
    ] {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("s.db");
        let cfg = write(t.path(), "p.toml", cfg_text);
        let mut lines = registry.to_vec();
        lines.extend(clicked_sale(
            "1",
            "03T10:00:00",
            "03T10:00:05",
            "a",
            "v1",
            "",
            "",
        ));
        ok(
            &db,
            &[
                "import",
                &write(t.path(), "nov.ndjson", &(lines.join("\n") + "\n")),
            ],
        );
        ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
        let nov = t.path().join("nov");
        report(&db, "2026-11", &nov, &[]);
        let rejected = entry_of(&nov, "rejected");
        let release = || {
            ok(
                &db,
                &[
                    "review", "release", &rejected, "--by", "alice", "--reason", "ok",
                ],
            );
        };
        let refund = write(t.path(), "dec.ndjson", &format!("{r1}\n"));
        let periods: &[&str] = match case {
            "refund and release in December" => {
                ok(&db, &["close", "--period", "2026-11"]);
                release();
                ok(&db, &["import", &refund]);
                ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
                &["2026-11", "2026-12"]
            }
            "release in January" => {
                ok(&db, &["close", "--period", "2026-11"]);
                ok(&db, &["import", &refund]);
                ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
                ok(&db, &["close", "--period", "2026-12"]);
                release();
                ok(&db, &["run", "--config", &cfg, "--period", "2027-01"]);
                &["2026-11", "2026-12", "2027-01"]
            }
            _ => {
                // decided while November is a draft, closed without a rerun
                release();
                ok(&db, &["close", "--period", "2026-11"]);
                ok(&db, &["import", &refund]);
                ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
                let dec = t.path().join("dec");
                report(&db, "2026-12", &dec, &[]);
                let ledger = read(&dec.join("ledger.csv"));
                assert!(
                    ledger.contains(",a,p,adjustment,10.00,USD,p/1,s1,")
                        && ledger.contains(",par,p,adjustment,1.00,USD,p/1,s1,"),
                    "{ledger}"
                );
                ok(&db, &["close", "--period", "2026-12"]);
                ok(&db, &["run", "--config", &cfg, "--period", "2027-01"]);
                &["2026-11", "2026-12", "2027-01"]
            }
        };
        let last = periods[periods.len() - 1];
        let out = t.path().join("last");
        report(&db, last, &out, &[]);
        for who in ["a", "par"] {
            let earned = paid(&db, t.path(), who, periods);
            let row = statement_row(&out, who);
            let carried = row.split(',').nth(10).unwrap_or("0.00");
            assert!(
                earned.is_zero() && carried.parse::<Decimal>().unwrap().is_zero(),
                "{case}: {who}: paid {earned}, carries {row}"
            );
        }
    }
}

/// A held commission of a closed period released after its rule was
/// turned from hold to reject is paid once, by the release of the held
/// entry, beside a late sale of that period: the closed period's view
/// still sees the decision (it was not a release of a rule's rejection,
/// which restates the period).
#[test]
fn a_held_entry_released_after_its_rule_turned_to_reject_is_paid_once() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let hold = write(t.path(), "hold.toml", BASE);
    let reject = write(
        t.path(),
        "reject.toml",
        &format!("{BASE}click_too_fast = {{ action = \"reject\" }}\n"),
    );
    let l = clicked_sale("1", "03T10:00:00", "03T10:00:05", "a", "v1", "", "");
    ok(&db, &["import", &events_file(t.path(), &l)]);
    ok(&db, &["run", "--config", &hold, "--period", "2026-11"]);
    let nov = t.path().join("nov");
    report(&db, "2026-11", &nov, &[]);
    let held = entry_of(&nov, "commission");
    ok(&db, &["close", "--period", "2026-11"]);
    ok(
        &db,
        &[
            "review", "release", &held, "--by", "alice", "--reason", "ok",
        ],
    );
    // a late sale of November: the closed period's view is computed
    let s2 = clicked_sale("2", "04T10:00:00", "04T12:00:00", "a", "v2", "", "");
    ok(
        &db,
        &[
            "import",
            &write(t.path(), "late.ndjson", &(s2.join("\n") + "\n")),
        ],
    );
    ok(&db, &["run", "--config", &reject, "--period", "2026-12"]);
    let dec = t.path().join("dec");
    report(&db, "2026-12", &dec, &[]);
    let ledger = read(&dec.join("ledger.csv"));
    let adjusted: Vec<&str> = ledger
        .lines()
        .filter(|l| l.contains(",adjustment,"))
        .collect();
    assert!(
        adjusted.len() == 1 && adjusted[0].contains(",s2,"),
        "{ledger}"
    );
    assert_eq!(
        paid(&db, t.path(), "a", &["2026-11", "2026-12"]).to_string(),
        "20.00"
    );
}

/// A held commission of a closed period keeps its hold after the rule is
/// turned to `flag`: its refund in December is a held clawback, and
/// rejecting the sale in January reverses both (net 0.00), as with the
/// rule unchanged. Before, the clawback was booked as not held, the reject
/// then reversed only the commission, and the partner carried -10.00 for a
/// commission it was never paid.
#[test]
fn a_held_sale_refunded_after_its_rule_was_turned_to_flag_nets_to_zero() {
    let mut ledgers = Vec::new();
    for dec_rules in ["", "click_too_fast = { action = \"flag\" }\n"] {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("s.db");
        let hold = write(t.path(), "hold.toml", BASE);
        let dec_cfg = write(t.path(), "dec.toml", &format!("{BASE}{dec_rules}"));
        let l = clicked_sale("1", "03T10:00:00", "03T10:00:05", "a", "v1", "", "");
        ok(&db, &["import", &events_file(t.path(), &l)]);
        ok(&db, &["run", "--config", &hold, "--period", "2026-11"]);
        let nov = t.path().join("nov");
        report(&db, "2026-11", &nov, &[]);
        ok(&db, &["close", "--period", "2026-11"]);
        let held = read(&nov.join("fraud.csv"))
            .lines()
            .nth(1)
            .and_then(|l| l.split(',').next())
            .unwrap()
            .to_string();
        let r1 = r#"{"type":"conversion","id":"r1","ts":"2026-12-05T10:00:00.000Z","program":"p","event":"refund","original_txn_id":"t-s1"}"#;
        ok(
            &db,
            &["import", &write(t.path(), "dec.ndjson", &format!("{r1}\n"))],
        );
        ok(&db, &["run", "--config", &dec_cfg, "--period", "2026-12"]);
        let dec = t.path().join("dec");
        report(&db, "2026-12", &dec, &[]);
        let claw = read(&dec.join("ledger.csv"))
            .lines()
            .find(|l| l.contains(",clawback,"))
            .unwrap()
            .to_string();
        assert!(
            claw.contains(",-10.00,USD,") && claw.contains("held:fraud:click_too_fast"),
            "{dec_rules}: {claw}"
        );
        ok(&db, &["close", "--period", "2026-12"]);
        ok(
            &db,
            &[
                "review",
                "reject",
                &held,
                "--by",
                "ops",
                "--reason",
                "injected click",
            ],
        );
        ok(&db, &["run", "--config", &dec_cfg, "--period", "2027-01"]);
        let jan = t.path().join("jan");
        report(&db, "2027-01", &jan, &[]);
        let mut amounts: Vec<String> = read(&jan.join("ledger.csv"))
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(5).unwrap().to_string())
            .collect();
        amounts.sort();
        assert_eq!(amounts, ["-10.00", "10.00"], "{dec_rules}");
        // the two net to nothing: a row of zeros names the partner
        assert_eq!(read(&jan.join("statements.csv")).lines().count(), 2);
        assert_eq!(
            statement_row(&jan, "a"),
            "2027-01,a,p,USD,0.00,0.00,0.00,0.00,0.00,0.00,0.00"
        );
        ledgers.push(read(&jan.join("ledger.csv")));
    }
    assert_eq!(ledgers[0], ledgers[1]);
}

// ---------------------------------------------------------------- evaluation

/// The fraud simulator's month for `g`, with its programs.
fn simulated(
    g: &settlement::fraud_sim::FraudGen,
) -> (settlement::fraud_sim::Generated, config::Config) {
    use settlement::fraud_sim::{generate, programs_toml};
    let cfg = config::parse(std::path::Path::new("p.toml"), &programs_toml()).unwrap();
    (generate(g), cfg)
}

#[test]
fn evaluation_meets_the_targets() {
    use settlement::fraud_sim::{evaluate, generate, FraudGen};
    let g = FraudGen {
        seed: 11,
        sessions: 60_000,
        ..FraudGen::default()
    };
    let (gen, cfg) = simulated(&g);
    let e = evaluate(&gen, &cfg, g.period).unwrap();
    assert!(e.injected > 600 && e.clean > 8_000, "{e:?}");
    assert!(e.precision >= 0.95, "{e:?}");
    assert!(e.recall >= 0.95, "{e:?}");
    assert!(e.clean_false_positive_rate <= 0.005, "{e:?}");
    for (name, s) in &e.patterns {
        assert!(s.injected > 0 && s.recall >= 0.95, "{name}: {s:?}");
    }
    // the same seed, the same records
    assert_eq!(generate(&g).records, gen.records);
}

/// The engine runs each program's fraud rules as a task of its own queue
/// (and may drop the clicks once they are done): the same output as the
/// rules run apart first, for the whole period and for an earlier view.
#[test]
fn fraud_tasks_in_the_engine_queue_agree_with_the_rules_run_apart() {
    use settlement::engine::{compute, compute_scored, compute_with, Clicks, Engine, Options};
    let g = settlement::fraud_sim::FraudGen {
        seed: 11,
        sessions: 12_000,
        partners: 12,
        customers: 4_000,
        ..Default::default()
    };
    let (gen, cfg) = simulated(&g);
    let mut facts = settlement::facts::Facts::from_records(&gen.records);
    let end = g.period.end_ms();
    let views = [
        Options {
            until_ms: end,
            max_arrival: i64::MAX,
            review_seq: i64::MAX,
        },
        Options {
            until_ms: end - 3 * 86_400_000,
            max_arrival: gen.records.len() as i64 * 19 / 20,
            review_seq: i64::MAX,
        },
    ];
    let mut apart = Vec::new();
    for o in &views {
        let pre = settlement::fraud::prepare(&cfg, &facts, o);
        assert!(pre.masks.iter().any(|&m| m != 0));
        let eng = Engine::new(&cfg, &facts);
        let a = compute_with(&eng, o, &pre).unwrap();
        let b = compute(&eng, o).unwrap();
        assert!(a.fraud.len() > 50 && a.entries.len() > 300);
        assert!(a == b, "compute and compute_with differ");
        apart.push(a);
    }
    // with the clicks taken out of the facts and dropped on the way
    let clicks = std::mem::take(&mut facts.fraud);
    for (o, a) in views.iter().zip(&apart) {
        let eng = Engine::new(&cfg, &facts);
        let c = compute_scored(&eng, o, Clicks::Owned(clicks.clone())).unwrap();
        assert!(*a == c, "compute_scored with owned clicks differs");
    }
}

#[test]
fn store_and_records_agree() {
    let g = settlement::fraud_sim::FraudGen {
        seed: 3,
        sessions: 15_000,
        partners: 10,
        customers: 5_000,
        ..Default::default()
    };
    let (gen, cfg) = simulated(&g);
    // through the engine over records
    let facts = settlement::facts::Facts::from_records(&gen.records);
    let eng = settlement::engine::Engine::new(&cfg, &facts);
    let out = settlement::engine::compute(
        &eng,
        &settlement::engine::Options {
            until_ms: g.period.end_ms(),
            max_arrival: i64::MAX,
            review_seq: i64::MAX,
        },
    )
    .unwrap();
    let mut want: Vec<(String, String)> = out
        .fraud
        .iter()
        .map(|r| {
            (
                facts.id(&facts.convs[r.conv as usize]).to_string(),
                settlement::fraud::reasons(r.mask),
            )
        })
        .collect();
    want.sort();
    assert!(want.len() > 300, "{}", want.len());
    // through the store, as `settlement run` does
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    import_records(&mut store, &gen.records).unwrap();
    let (d, _) = compute_draft(&store, &cfg, g.period).unwrap();
    let mut got: Vec<(String, String)> = d
        .fraud
        .iter()
        .map(|r| (r[3].clone(), r[5].clone()))
        .collect();
    got.sort();
    assert_eq!(got, want);
}

/// hold_days 60: a sale held by the fraud rules on Nov 3 (10.00) and
/// refunded on Dec 20 (its clawback held with it); both periods closed,
/// then the sale is rejected on review. January reverses both, and both
/// reversals are dated Nov 3 (the clawback's by the entry it reverses), so
/// they mature together: nothing pending, written off or paid. (Dated Dec
/// 20, the clawback's reversal, +10.00, was pending in January: -10.00
/// matured was written off and February paid 10.00 for a sale refunded
/// and rejected.)
#[test]
fn a_rejected_sale_and_its_refund_are_reversed_together() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(
        t.path(),
        "p.toml",
        &BASE.replace(
            "currency = \"USD\"\n",
            "currency = \"USD\"\n[payout]\nhold_days = 60\nminimum = \"0\"\n",
        ),
    );
    let mut l = clicked_sale("1", "03T10:00:00", "03T10:00:05", "a", "v1", "", "");
    l.push(
        r#"{"type":"conversion","id":"r1","ts":"2026-12-20T10:00:00.000Z","program":"p","event":"refund","original_txn_id":"t-s1"}"#
            .to_string(),
    );
    ok(&db, &["import", &events_file(t.path(), &l)]);
    let out = |p: &str| t.path().join(format!("o-{p}"));
    for p in ["2026-11", "2026-12"] {
        ok(&db, &["run", "--config", &cfg, "--period", p]);
        ok(&db, &["close", "--period", p]);
        ok(
            &db,
            &["report", "--period", p, "--out", out(p).to_str().unwrap()],
        );
    }
    // held: earned 10.00, pending 10.00; then the held clawback nets it
    assert_eq!(
        statement_row(&out("2026-11"), "a"),
        "2026-11,a,p,USD,10.00,0.00,0.00,0.00,10.00,0.00,10.00"
    );
    assert_eq!(
        statement_row(&out("2026-12"), "a"),
        "2026-12,a,p,USD,0.00,-10.00,0.00,10.00,0.00,0.00,0.00"
    );
    let fraud_csv = read(&out("2026-11").join("fraud.csv"));
    let entry = fraud_csv
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    ok(
        &db,
        &["review", "reject", &entry, "--by", "ops", "--reason", "bot"],
    );
    for p in ["2027-01", "2027-02"] {
        ok(&db, &["run", "--config", &cfg, "--period", p]);
        ok(&db, &["close", "--period", p]);
        ok(
            &db,
            &["report", "--period", p, "--out", out(p).to_str().unwrap()],
        );
        // January books the two reversals, which net to nothing
        let row = match p {
            "2027-01" => "2027-01,a,p,USD,0.00,0.00,0.00,0.00,0.00,0.00,0.00",
            _ => "",
        };
        assert_eq!(statement_row(&out(p), "a"), row, "{p}");
        assert_eq!(read(&out(p).join("payouts.csv")).lines().count(), 1, "{p}");
    }
    // the two reversals, both dated Nov 3
    let ledger = read(&out("2027-01").join("ledger.csv"));
    let reversals: Vec<&str> = ledger
        .lines()
        .filter(|l| l.contains(",adjustment,"))
        .collect();
    assert_eq!(reversals.len(), 2, "{ledger}");
    assert!(
        reversals.iter().all(|l| l.contains(",2026-11-03,")),
        "{ledger}"
    );
}

/// a held Nov sale, rejected on review and refunded in Dec (both
/// before Dec's run): the review reversal takes the held 10.00 back, the
/// refund must take nothing more (the commission was never paid).
#[test]
fn held_rejected_and_refunded_in_one_period_is_reversed_once() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(t.path(), "p.toml", BASE);
    let mut l = clicked_sale("1", "03T10:00:00", "03T10:00:05", "a", "v1", "", "");
    l.extend(clicked_sale(
        "2",
        "04T10:00:00",
        "04T10:00:40",
        "a",
        "v2",
        "",
        "",
    ));
    ok(&db, &["import", &events_file(t.path(), &l)]);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    let nov = t.path().join("nov");
    report(&db, "2026-11", &nov, &[]);
    ok(&db, &["close", "--period", "2026-11"]);
    let fraud_csv = read(&nov.join("fraud.csv"));
    let entry = fraud_csv
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    // December: s1 refunded; a sells again (10.00)
    let dec_l = [
        r#"{"type":"conversion","id":"r1","ts":"2026-12-05T10:00:00.000Z","program":"p","event":"refund","original_txn_id":"t-s1"}"#.to_string(),
        r#"{"type":"click","id":"ev-k3","click_id":"k3","ts":"2026-12-06T10:00:00.000Z","program":"p","partner":"a","visitor":"v3","bot":false,"country":"US"}"#.to_string(),
        r#"{"type":"conversion","id":"s3","ts":"2026-12-06T10:00:40.000Z","program":"p","event":"sale","txn_id":"t-s3","amount":"100.00","currency":"USD","customer":"cu3","country":"US","partner":"a","click_id":"k3","click_ts":"2026-12-06T10:00:00.000Z"}"#.to_string(),
    ];
    let f2 = t.path().join("dec.ndjson");
    std::fs::write(&f2, dec_l.join("\n") + "\n").unwrap();
    ok(&db, &["import", f2.to_str().unwrap()]);
    ok(
        &db,
        &["review", "reject", &entry, "--by", "ops", "--reason", "bot"],
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
    let dec = t.path().join("dec");
    report(&db, "2026-12", &dec, &[]);
    // carried_in 10 (held s1), earned 10 (s3), review reversal -10: 10 payable
    assert_eq!(
        statement_row(&dec, "a"),
        "2026-12,a,p,USD,10.00,0.00,-10.00,10.00,0.00,10.00,0.00"
    );
}

/// the held top-up part that split_restated_topups gives the late
/// sale's sources is summed into "what was booked on the sale": the refund
/// of the late held sale reverses 10.00 + (-10.00) = 0, nothing. Nov: s1
/// 10.00 + top-up 90.00 (minimum 100). Dec: late Nov sale s2 held (+10.00
/// held, top-up part -10.00 held with it), closed. Jan: s2 refunded in full.
/// Expected (as before ca83c97, config unchanged): a clawback of -10.00 on a.
#[test]
fn refund_of_a_late_held_sale_under_a_minimum_reverses_its_commission() {
    let l = clicked_sale("1", "03T10:00:00", "03T12:00:00", "a", "v1", "", "");
    let mut w = world("", &l);
    let text = BASE.replace(
        "model = \"affiliate\"",
        "model = \"technology\"\nminimum_per_period = \"100\"",
    );
    w.cfg = config::parse(std::path::Path::new("programs.toml"), &text).unwrap();
    let nov = Period::parse("2026-11").unwrap();
    run(&mut w.store, &w.cfg, nov).unwrap();
    settlement::run::close(&mut w.store, nov).unwrap();
    let late: Vec<Record> = clicked_sale("2", "20T10:00:00", "20T10:00:05", "a", "v2", "", "")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    import_records(&mut w.store, &late).unwrap();
    let dec = Period::parse("2026-12").unwrap();
    run(&mut w.store, &w.cfg, dec).unwrap();
    settlement::run::close(&mut w.store, dec).unwrap();
    let r: Record = serde_json::from_str(
        r#"{"type":"conversion","id":"r2","ts":"2027-01-05T10:00:00.000Z","program":"p","event":"refund","original_txn_id":"t-s2"}"#,
    )
    .unwrap();
    import_records(&mut w.store, &[r]).unwrap();
    let (d, _) = compute_draft(&w.store, &w.cfg, Period::parse("2027-01").unwrap()).unwrap();
    let claw: Vec<(String, String)> = d
        .entries
        .iter()
        .filter(|e| e.kind.as_str() == "clawback")
        .map(|e| (e.partner.clone(), e.amount.to_string()))
        .collect();
    assert_eq!(
        claw,
        [("a".to_string(), "-10.00".to_string())],
        "{:#?}",
        d.entries
    );
}

/// a booked override that was held in its closed period and
/// released on review since, whose parent is not today's (substituted
/// clawback), gets `fraud` from the ledger's `held:fraud:` reason although
/// the sale was released: its clawback is "held for review" and the
/// statement keeps it in `pending`. Nov: x (parent m1) sells 100, held
/// (click_too_fast): x 10.00, m1 1.00, both held; closed. Released on review.
/// Dec: x's parent is m2; s1 refunded in full; m1's own Dec sale (10.00) is
/// held. m1: carried_in 1.00 (released), earned 10.00 (held), reversed -1.00:
/// balance 10.00, all of it held: payable 0.00.
#[test]
fn released_then_refunded_override_of_a_moved_parent_is_not_held() {
    let parent = |id: &str, p: &str, at: &str| {
        format!(
            r#"{{"type":"partner","id":"{id}","program":"p","status":"approved","email_hash":"eh-{id}","parent":"{p}","updated_at":"{at}T00:00:00Z"}}"#
        )
    };
    let mut l = vec![
        partner("m1"),
        partner("m2"),
        parent("x", "m1", "2026-01-01"),
    ];
    l.extend(clicked_sale(
        "1",
        "03T10:00:00",
        "03T10:00:05",
        "x",
        "v1",
        "",
        "",
    ));
    let mut w = world("", &l);
    let text = BASE.replace("window_days = 30", "window_days = 30\noverrides = [\"10\"]");
    w.cfg = config::parse(std::path::Path::new("programs.toml"), &text).unwrap();
    let nov = Period::parse("2026-11").unwrap();
    let d = w.draft();
    let held: Vec<(String, String, String)> = d
        .entries
        .iter()
        .filter(|e| e.kind.as_str() != "rejected")
        .map(|e| (e.partner.clone(), e.amount.to_string(), e.reason.clone()))
        .collect();
    assert!(
        held.iter()
            .any(|h| h.0 == "m1" && h.2.starts_with("held:fraud:")),
        "{held:?}"
    );
    let entry = d
        .entries
        .iter()
        .find(|e| e.partner == "x" && e.kind.as_str() == "commission")
        .unwrap()
        .id
        .clone();
    run(&mut w.store, &w.cfg, nov).unwrap();
    settlement::run::close(&mut w.store, nov).unwrap();
    settlement::fraud::decide_entry(&mut w.store, &entry, true, "ops", "fine").unwrap();
    let dec_l = [
        parent("x", "m2", "2026-12-01"),
        r#"{"type":"conversion","id":"r1","ts":"2026-12-05T10:00:00.000Z","program":"p","event":"refund","original_txn_id":"t-s1"}"#.to_string(),
        r#"{"type":"click","id":"ev-k9","click_id":"k9","ts":"2026-12-06T10:00:00.000Z","program":"p","partner":"m1","visitor":"v9","bot":false,"country":"US"}"#.to_string(),
        r#"{"type":"conversion","id":"s9","ts":"2026-12-06T10:00:05.000Z","program":"p","event":"sale","txn_id":"t-s9","amount":"100.00","currency":"USD","customer":"cu9","country":"US","partner":"m1","click_id":"k9","click_ts":"2026-12-06T10:00:00.000Z"}"#.to_string(),
    ];
    let recs: Vec<Record> = dec_l
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    import_records(&mut w.store, &recs).unwrap();
    let (d, _) = compute_draft(&w.store, &w.cfg, Period::parse("2026-12").unwrap()).unwrap();
    let claw: Vec<(String, String, String)> = d
        .entries
        .iter()
        .filter(|e| e.kind.as_str() == "clawback")
        .map(|e| (e.partner.clone(), e.amount.to_string(), e.reason.clone()))
        .collect();
    let m1 = d.statements.iter().find(|s| s.partner == "m1").unwrap();
    assert_eq!(
        (m1.pending.to_string(), m1.payable.is_zero()),
        ("10.00".to_string(), true),
        "{claw:?}"
    );
    assert!(claw.iter().all(|c| c.2.is_empty()), "{claw:?}");
}

/// report.html's decisions on earlier periods' entries lists only entries
/// of periods before the reported one: a release of December's held entry,
/// taken in by a rerun of November in its grace days, is December's own
/// (its fraud.csv has it), not November's. Before, November's closed page
/// listed it for good.
#[test]
fn a_decision_on_a_later_periods_entry_is_not_listed_by_an_earlier_period() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(t.path(), "p.toml", BASE);
    let mut l = clicked_sale("1", "10T08:00:00", "10T10:00:00", "a", "v1", "", "");
    l.extend(
        clicked_sale("2", "01T09:00:00", "01T09:00:02", "a", "v2", "", "")
            .into_iter()
            .map(|x| x.replace("2026-11-", "2026-12-")),
    );
    ok(&db, &["import", &events_file(t.path(), &l)]);
    for p in ["2026-11", "2026-12"] {
        ok(&db, &["run", "--config", &cfg, "--period", p]);
    }
    let dec = t.path().join("dec");
    report(&db, "2026-12", &dec, &[]);
    let held = entry_of(&dec, "commission");
    assert!(read(&dec.join("fraud.csv")).contains(&held));
    ok(
        &db,
        &[
            "review", "release", &held, "--by", "alice", "--reason", "ok",
        ],
    );
    for p in ["2026-11", "2026-12"] {
        ok(&db, &["run", "--config", &cfg, "--period", p]);
    }
    ok(&db, &["close", "--period", "2026-11"]);
    let nov = t.path().join("nov");
    report(&db, "2026-11", &nov, &[]);
    report(&db, "2026-12", &dec, &[]);
    for out in [&nov, &dec] {
        let html = read(&out.join("report.html"));
        assert!(!html.contains("Decisions on earlier"), "{html}");
    }
    assert!(
        read(&dec.join("fraud.csv")).contains(&format!("{held},a,p,s2,")),
        "{}",
        read(&dec.join("fraud.csv"))
    );
    assert!(read(&dec.join("fraud.csv")).contains(",released,alice,ok"));
    // nor once December is closed too
    ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
    ok(&db, &["close", "--period", "2026-12"]);
    report(&db, "2026-11", &nov, &[]);
    let html = read(&nov.join("report.html"));
    assert!(!html.contains("Decisions on earlier"), "{html}");
}

/// review20 D2: a late sale of a closed November held by a rule is booked
/// in December as a held adjustment, which December's fraud.csv has no row
/// for: its release was listed nowhere in December's report. It is listed
/// with the decisions December took in.
#[test]
fn the_release_of_a_late_held_adjustment_is_listed_by_its_period() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(t.path(), "p.toml", BASE);
    let first = clicked_sale("1", "10T08:00:00", "10T10:00:00", "a", "v1", "", "");
    ok(&db, &["import", &events_file(t.path(), &first)]);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    ok(&db, &["close", "--period", "2026-11"]);
    // a November sale two seconds after its click, arriving after the close
    let late = clicked_sale("2", "20T09:00:00", "20T09:00:02", "a", "v2", "", "");
    let dir = t.path().join("late");
    std::fs::create_dir(&dir).unwrap();
    ok(&db, &["import", &events_file(&dir, &late)]);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
    let dec = t.path().join("dec");
    report(&db, "2026-12", &dec, &[]);
    let held = entry_of(&dec, "adjustment");
    assert!(!read(&dec.join("fraud.csv")).contains(&held));
    ok(
        &db,
        &[
            "review", "release", &held, "--by", "carol", "--reason", "ok",
        ],
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
    report(&db, "2026-12", &dec, &[]);
    let html = read(&dec.join("report.html"));
    let section = html
        .split("<h2>Decisions on earlier periods' entries (1)</h2>")
        .nth(1)
        .unwrap_or_else(|| panic!("{html}"));
    let section = section.split("</table>").next().unwrap();
    assert!(
        section.contains(&held) && section.contains("carol"),
        "{section}"
    );
}

/// A reversal held for review with its sale when it was booked was never in
/// the balance its month wrote off (it netted with the held sale): once the
/// sale is released, its reinstatement is paid in full, and takes back no
/// write-off another reversal caused.
#[test]
fn a_held_reversal_reinstated_takes_no_write_off_back() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(t.path(), "p.toml", BASE);
    let conv = |id: &str, ts: &str, event: &str, of: &str| {
        format!(
            r#"{{"type":"conversion","id":"{id}","ts":"{ts}","program":"p","event":"{event}","txn_id":"t-{id}","original_txn_id":"t-{of}"}}"#
        )
    };
    // s1 held (a click too fast), s3 not: 10.00 each
    let mut l = clicked_sale("1", "03T10:00:00", "03T10:00:05", "a", "v1", "", "");
    l.extend(clicked_sale(
        "3",
        "04T10:00:00",
        "04T10:40:00",
        "a",
        "v3",
        "",
        "",
    ));
    ok(&db, &["import", &events_file(t.path(), &l)]);
    ok(&db, &["run", "--config", &cfg, "--period", "2026-11"]);
    let nov = t.path().join("nov");
    report(&db, "2026-11", &nov, &[]);
    assert_eq!(
        statement_row(&nov, "a"),
        "2026-11,a,p,USD,20.00,0.00,0.00,0.00,10.00,10.00,10.00"
    );
    ok(&db, &["close", "--period", "2026-11"]);
    let held = read(&nov.join("fraud.csv"));
    let entry = held
        .lines()
        .skip(1)
        .find(|l| l.contains(",a,"))
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("{held}"))
        .to_string();
    // December refunds both: s3's -10.00 is written off, s1's nets with
    // the held sale
    let dec = [
        conv("r1", "2026-12-05T10:00:00.000Z", "refund", "s1"),
        conv("r3", "2026-12-05T11:00:00.000Z", "refund", "s3"),
    ];
    ok(
        &db,
        &["import", &write(t.path(), "dec.ndjson", &dec.join("\n"))],
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2026-12"]);
    let out = t.path().join("dec");
    report(&db, "2026-12", &out, &[]);
    assert_eq!(
        statement_row(&out, "a"),
        "2026-12,a,p,USD,0.00,-20.00,10.00,10.00,0.00,0.00,0.00"
    );
    ok(&db, &["close", "--period", "2026-12"]);
    // January: s1 released (it and its refund: nothing to pay)
    ok(
        &db,
        &[
            "review", "release", &entry, "--by", "alice", "--reason", "ok",
        ],
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2027-01"]);
    let out = t.path().join("jan");
    report(&db, "2027-01", &out, &[]);
    ok(&db, &["close", "--period", "2027-01"]);
    // February: the refund of s1 failed: its 10.00 paid in full
    let feb = [conv("w1", "2027-02-03T10:00:00.000Z", "reinstate", "r1")];
    ok(
        &db,
        &["import", &write(t.path(), "feb.ndjson", &feb.join("\n"))],
    );
    ok(&db, &["run", "--config", &cfg, "--period", "2027-02"]);
    let out = t.path().join("feb");
    report(&db, "2027-02", &out, &[]);
    let ledger = read(&out.join("ledger.csv"));
    assert!(!ledger.contains("writeoff_taken_back_"), "{ledger}");
    assert_eq!(
        statement_row(&out, "a"),
        "2027-02,a,p,USD,0.00,10.00,0.00,0.00,0.00,10.00,0.00"
    );
}

/// review27 F5: a late sale of a written-off month held for review counts
/// for that month like any late fact (a held entry is in the balance), so
/// its late refund only cancels it: the write-off another late sale paid
/// stays taken back (the refund gave it back: 6.00 paid twice).
#[test]
fn a_held_late_sale_and_its_late_refund_cancel_out_against_the_write_off() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("s.db");
    let cfg = write(
        t.path(),
        "p.toml",
        "currency = \"USD\"\n[payout]\nhold_days = 0\nminimum = \"0\"\n[[programs]]\nid = \"p\"\n\
         model = \"affiliate\"\nwindow_days = 30\n[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n\
         [programs.fraud]\n",
    );
    let clicked = |n: &str, click: &str, at: &str, amount: &str| {
        format!(
            "{{\"type\":\"click\",\"id\":\"ev-k{n}\",\"click_id\":\"k{n}\",\"ts\":\"{click}\",\"program\":\"p\",\"partner\":\"a\",\"visitor\":\"v{n}\",\"bot\":false,\"country\":\"US\"}}\n\
             {{\"type\":\"conversion\",\"id\":\"s{n}\",\"ts\":\"{at}\",\"program\":\"p\",\"event\":\"sale\",\"txn_id\":\"s{n}\",\"amount\":\"{amount}\",\"currency\":\"USD\",\"customer\":\"cus{n}\",\"country\":\"US\",\"partner\":\"a\",\"click_id\":\"k{n}\",\"click_ts\":\"{click}\"}}"
        )
    };
    let rev = |id: &str, at: &str, event: &str, of: &str| {
        format!(
            "{{\"type\":\"conversion\",\"id\":\"{id}\",\"ts\":\"{at}\",\"program\":\"p\",\"event\":\"{event}\",\"txn_id\":\"{id}\",\"original_txn_id\":\"{of}\"}}"
        )
    };
    let import = |name: &str, lines: &[String]| {
        ok(&db, &["import", &write(t.path(), name, &lines.join("\n"))]);
    };
    let close = |p: &str| -> String {
        ok(&db, &["run", "--config", &cfg, "--period", p]);
        let out = t.path().join(p);
        report(&db, p, &out, &[]);
        ok(&db, &["close", "--period", p]);
        statement_row(&out, "a")
    };
    import(
        "nov.ndjson",
        &[
            r#"{"type":"partner","id":"a","program":"p","status":"approved"}"#.to_string(),
            clicked(
                "1",
                "2026-11-02T11:30:00.000Z",
                "2026-11-02T12:00:00.000Z",
                "50",
            ),
            clicked(
                "9",
                "2027-03-02T11:30:00.000Z",
                "2027-03-02T12:00:00.000Z",
                "100",
            ),
        ],
    );
    assert_eq!(
        close("2026-11"),
        "2026-11,a,p,USD,10.00,0.00,0.00,0.00,0.00,10.00,0.00"
    );
    import(
        "dec.ndjson",
        &[rev("c1", "2026-12-05T12:00:00.000Z", "chargeback", "s1")],
    );
    assert_eq!(
        close("2026-12"),
        "2026-12,a,p,USD,0.00,-10.00,10.00,0.00,0.00,0.00,0.00"
    );
    // late for December: s2 (10.00, a click too fast: held) and s5 (6.00)
    import(
        "late.ndjson",
        &[
            clicked(
                "2",
                "2026-12-20T11:59:58.000Z",
                "2026-12-20T12:00:00.000Z",
                "50",
            ),
            clicked(
                "5",
                "2026-12-21T11:30:00.000Z",
                "2026-12-21T12:00:00.000Z",
                "30",
            ),
        ],
    );
    let jan = close("2027-01");
    let ledger = read(&t.path().join("2027-01").join("ledger.csv"));
    let entry = ledger
        .lines()
        .find(|l| l.contains(",held:fraud:click_too_fast,"))
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("{ledger}"))
        .to_string();
    // both count for December: its 10.00 write-off taken back, the held
    // 10.00 pending, 6.00 carried (the rest pending with the held sale)
    assert_eq!(jan, "2027-01,a,p,USD,0.00,0.00,6.00,0.00,6.00,0.00,6.00");
    ok(
        &db,
        &[
            "review", "release", &entry, "--by", "alice", "--reason", "ok",
        ],
    );
    assert_eq!(
        close("2027-02"),
        "2027-02,a,p,USD,0.00,0.00,0.00,6.00,0.00,6.00,0.00"
    );
    // s2 refunded late: it and its sale cancel out, 4.00 of the write-off
    // given back (s5's 6.00 stays taken back), s9 pays 20.00: in all 30.00,
    // as on time (December -4.00 written off, March 20.00)
    import(
        "mar.ndjson",
        &[rev("r2", "2026-12-22T12:00:00.000Z", "refund", "s2")],
    );
    assert_eq!(
        close("2027-03"),
        "2027-03,a,p,USD,20.00,0.00,-6.00,0.00,0.00,14.00,0.00"
    );
}
