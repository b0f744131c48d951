//! Property tests of SPEC's invariants over random worlds: payouts equal the
//! payable column, the ledger sums to carried_out per partner, a rerun adds
//! nothing, import order does not change results, and a clawback never
//! exceeds what was earned on its transaction.

use edge::record::Record;
use proptest::prelude::*;
use rust_decimal::Decimal;
use settlement::config;
use settlement::import::import_records;
use settlement::period::Period;
use settlement::report;
use settlement::run::{close, run, RunOutcome};
use settlement::store::Store;
use std::collections::BTreeMap;

const PROGRAMS: &str = r#"currency = "USD"
[payout]
hold_days = 10
minimum = "20.00"
[[programs]]
id = "p"
model = "affiliate"
window_days = 20
lifetime = true
overrides = ["10", "5"]
  [[programs.rules]]
  event = "sale"
  percent = "12.5"
  [[programs.rules]]
  event = "sale"
  tier = "gold"
  percent = "20"
  [[programs.rules]]
  event = "signup"
  fixed = "3.33"
  cap = 3
  [[programs.rules]]
  event = "trade"
  ladder = { metric = "lots", mode = "marginal", steps = [{ from = "0", per_lot = "1.10" }, { from = "5", per_lot = "2.25" }] }
  [[programs.rules]]
  event = "revenue"
  percent = "30"
[[programs]]
id = "t"
model = "technology"
minimum_per_period = "25.00"
negative_carryover = true
  [[programs.rules]]
  event = "revenue"
  percent = "10"
"#;

#[derive(Clone, Debug)]
enum Ev {
    Conv {
        partner: usize,
        customer: usize,
        day: u32,
        event: usize,
        cents: i64,
        prog: usize,
    },
    Refund {
        of: usize,
        day: u32,
        share: u8,
    },
    /// A dispute won or a refund that failed: cancels a refund.
    Reinstate {
        of: usize,
        day: u32,
    },
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => (0..6usize, 0..8usize, 0..60u32, 0..4usize, -5000i64..50_000, 0..2usize).prop_map(
            |(partner, customer, day, event, cents, prog)| Ev::Conv { partner, customer, day, event, cents, prog }
        ),
        1 => (0..40usize, 0..60u32, 0..3u8).prop_map(|(of, day, share)| Ev::Refund { of, day, share }),
        1 => (0..40usize, 0..60u32).prop_map(|(of, day)| Ev::Reinstate { of, day }),
    ]
}

fn day_ts(day: u32) -> String {
    // days from 2026-11-01, two months
    let t = edge::time::Timestamp::parse_date("2026-11-01")
        .unwrap()
        .ms()
        + i64::from(day) * 86_400_000
        + 43_200_000;
    edge::time::Timestamp(t).to_string()
}

fn world(evs: &[Ev]) -> Vec<Record> {
    let mut lines = Vec::new();
    for i in 0..6 {
        let prog = if i < 4 { "p" } else { "t" };
        let parent = if i == 1 {
            r#","parent":"a0""#
        } else if i == 2 {
            r#","parent":"a1""#
        } else {
            ""
        };
        let tier = if i == 3 { "gold" } else { "silver" };
        let status = if i == 5 {
            r#""history":[{"status":"approved","at":"2026-01-01T00:00:00.000Z"},{"status":"suspended","at":"2026-12-10T00:00:00.000Z"}]"#
        } else {
            r#""history":[{"status":"approved","at":"2026-01-01T00:00:00.000Z"}]"#
        };
        lines.push(format!(r#"{{"type":"partner","id":"a{i}","program":"{prog}","tier":"{tier}"{parent},"status":"approved",{status}}}"#));
    }
    let mut sales: Vec<(String, String, i64)> = Vec::new();
    let mut refunds: Vec<(String, String)> = Vec::new();
    for (n, e) in evs.iter().enumerate() {
        match e {
            Ev::Conv {
                partner,
                customer,
                day,
                event,
                cents,
                prog,
            } => {
                let prog = if *partner >= 4 || *prog == 1 {
                    "t"
                } else {
                    "p"
                };
                let partner = if prog == "t" {
                    4 + partner % 2
                } else {
                    partner % 4
                };
                let event = if prog == "t" {
                    "revenue"
                } else {
                    ["sale", "signup", "trade", "revenue"][*event]
                };
                let cents = if event == "revenue" {
                    *cents
                } else {
                    cents.abs()
                };
                let amount =
                    format!("{}.{:02}", cents / 100, (cents % 100).abs()).replace("0.-", "-0.");
                let amount = if cents < 0 && cents > -100 {
                    format!("-0.{:02}", -cents)
                } else {
                    amount
                };
                let ts = day_ts(*day);
                let extra = if event == "trade" {
                    format!(r#","lots":"{}.{}""#, cents.abs() % 7, cents.abs() % 10)
                } else {
                    format!(r#","amount":"{amount}","currency":"USD""#)
                };
                let click = if n % 3 != 0 {
                    format!(r#","partner":"a{partner}","click_id":"k{n}","click_ts":"{ts}""#)
                } else {
                    String::new()
                };
                lines.push(format!(
                    r#"{{"type":"conversion","id":"e{n}","ts":"{ts}","program":"{prog}","event":"{event}","txn_id":"x{n}","customer":"c{customer}"{click}{extra}}}"#
                ));
                if event == "sale" {
                    sales.push((format!("x{n}"), prog.to_string(), cents));
                }
            }
            Ev::Refund { of, day, share } => {
                if sales.is_empty() {
                    continue;
                }
                let (txn, prog, cents) = &sales[of % sales.len()];
                let amount = match share {
                    0 => String::new(),
                    1 => format!(
                        r#","amount":"{}.{:02}","currency":"USD""#,
                        cents / 200,
                        (cents / 2) % 100
                    ),
                    _ => format!(
                        r#","amount":"{}.{:02}","currency":"USD""#,
                        cents / 100,
                        cents % 100
                    ),
                };
                lines.push(format!(
                    r#"{{"type":"conversion","id":"r{n}","ts":"{}","program":"{prog}","event":"refund","txn_id":"rf{n}","original_txn_id":"{txn}"{amount}}}"#,
                    day_ts(*day)
                ));
                refunds.push((format!("rf{n}"), prog.clone()));
            }
            Ev::Reinstate { of, day } => {
                if refunds.is_empty() {
                    continue;
                }
                let (txn, prog) = &refunds[of % refunds.len()];
                lines.push(format!(
                    r#"{{"type":"conversion","id":"w{n}","ts":"{}","program":"{prog}","event":"reinstate","txn_id":"ri{n}","original_txn_id":"{txn}"}}"#,
                    day_ts(*day)
                ));
            }
        }
    }
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

struct Out {
    files: BTreeMap<String, String>,
    /// per period: rows of statements.csv and of ledger.csv
    statements: Vec<Vec<Vec<String>>>,
    ledger: Vec<Vec<Vec<String>>>,
    payouts: Vec<Vec<Vec<String>>>,
    reran_unchanged: bool,
}

fn settle(records: &[Record], close_first: bool) -> Out {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    import_records(&mut store, records).unwrap();
    let cfg = config::parse(&dir.path().join("p.toml"), PROGRAMS).unwrap();
    let mut out = Out {
        files: BTreeMap::new(),
        statements: vec![],
        ledger: vec![],
        payouts: vec![],
        reran_unchanged: true,
    };
    for (i, p) in ["2026-11", "2026-12"].iter().enumerate() {
        let per = Period::parse(p).unwrap();
        run(&mut store, &cfg, per).unwrap();
        out.reran_unchanged &= matches!(
            run(&mut store, &cfg, per).unwrap(),
            RunOutcome::Unchanged { .. }
        );
        let o = dir.path().join(p);
        report::report(&store, per, &o).unwrap();
        let mut rows = |f: &str| -> Vec<Vec<String>> {
            let text = std::fs::read_to_string(o.join(f)).unwrap();
            out.files.insert(format!("{p}/{f}"), text.clone());
            let mut r = csv::Reader::from_reader(text.as_bytes());
            r.records()
                .map(|x| x.unwrap().iter().map(str::to_string).collect())
                .collect()
        };
        let st = rows("statements.csv");
        let le = rows("ledger.csv");
        let pa = rows("payouts.csv");
        rows("invoices.csv");
        out.statements.push(st);
        out.ledger.push(le);
        out.payouts.push(pa);
        if close_first && i == 0 {
            close(&mut store, per).unwrap();
        }
    }
    out
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn invariants(evs in prop::collection::vec(ev(), 1..40), seed in any::<u64>()) {
        let records = world(&evs);
        let out = settle(&records, true);

        // a rerun changes nothing
        prop_assert!(out.reran_unchanged);

        for k in 0..2 {
            // payouts equal the payable column, partner by partner
            let payable: BTreeMap<String, Decimal> = out.statements[k].iter()
                .filter(|r| d(&r[9]) != Decimal::ZERO)
                .map(|r| (r[1].clone(), d(&r[9]))).collect();
            let paid: BTreeMap<String, Decimal> = out.payouts[k].iter().map(|r| (r[1].clone(), d(&r[3]))).collect();
            prop_assert_eq!(payable, paid);
        }

        // the ledger (both periods, payouts negative) sums to the last carried_out
        let mut sums: BTreeMap<String, Decimal> = BTreeMap::new();
        for le in &out.ledger {
            for r in le {
                *sums.entry(r[2].clone()).or_default() += d(&r[5]);
            }
        }
        let last: BTreeMap<String, Decimal> = out.statements[1].iter().map(|r| (r[1].clone(), d(&r[10]))).collect();
        for (p, s) in &sums {
            prop_assert_eq!(*s, last.get(p).copied().unwrap_or_default(), "partner {}", p);
        }
        // carried_in of December is November's carried_out
        for r in &out.statements[1] {
            let nov = out.statements[0].iter().find(|n| n[1] == r[1]).map_or(Decimal::ZERO, |n| d(&n[10]));
            prop_assert_eq!(d(&r[7]), nov);
        }

        // a clawback never exceeds what was earned on its transaction
        let mut earned: BTreeMap<(String, String), Decimal> = BTreeMap::new();
        let mut clawed: BTreeMap<(String, String), Decimal> = BTreeMap::new();
        for le in &out.ledger {
            for r in le {
                let src: Vec<&str> = r[8].split(' ').collect();
                match r[4].as_str() {
                    "commission" | "override" => *earned.entry((r[2].clone(), src[0].to_string())).or_default() += d(&r[5]),
                    "clawback" => *clawed.entry((r[2].clone(), src[1].to_string())).or_default() += d(&r[5]),
                    _ => {}
                }
            }
        }
        for (k, c) in &clawed {
            let e = earned.get(k).copied().unwrap_or_default();
            prop_assert!(c.abs() <= e.abs(), "clawed {} of {} on {:?}", c, e, k);
            prop_assert!(e.is_zero() || c.is_zero() || c.is_sign_negative() != e.is_sign_negative());
        }

        // import order does not change results
        let mut shuffled = records.clone();
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        let again = settle(&shuffled, true);
        prop_assert_eq!(&out.files, &again.files);
    }
}
