//! One test per rule and attribution step, with figures computed by hand
//! in the comments. Runs the library over a real (temporary) store.

use edge::record::Record;
use settlement::config;
use settlement::import::import_records;
use settlement::ledger::{Entry, EntryKind};
use settlement::period::Period;
use settlement::run::{close, compute_draft, run};
use settlement::statement::Statement;
use settlement::store::Store;

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    cfg: config::Config,
}

fn world(programs: &str, lines: &[String]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let recs: Vec<Record> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    import_records(&mut store, &recs).unwrap();
    std::fs::write(dir.path().join("fx.csv"), FX).unwrap();
    let cfg = config::parse(&dir.path().join("programs.toml"), programs).unwrap();
    World {
        _dir: dir,
        store,
        cfg,
    }
}

const FX: &str =
    "date,currency,rate\n2026-10-01,EUR,1.10\n2026-11-01,EUR,1.20\n2026-11-01,JPY,0.0067\n";

impl World {
    fn draft(&self, p: &str) -> (Vec<Entry>, Vec<Statement>) {
        let (d, _) = compute_draft(&self.store, &self.cfg, Period::parse(p).unwrap()).unwrap();
        (d.entries, d.statements)
    }
    fn run_close(&mut self, p: &str) {
        let p = Period::parse(p).unwrap();
        run(&mut self.store, &self.cfg, p).unwrap();
        close(&mut self.store, p).unwrap();
    }
    fn add(&mut self, lines: &[String]) {
        let recs: Vec<Record> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        import_records(&mut self.store, &recs).unwrap();
    }
}

/// `(partner, amount)` of the entries of a kind, sorted.
fn amounts(es: &[Entry], kind: EntryKind) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = es
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| {
            (
                e.partner.clone(),
                settlement::money::fmt_decimal(e.amount, e.currency),
            )
        })
        .collect();
    v.sort();
    v
}

fn partner(id: &str, extra: &str) -> String {
    format!(r#"{{"type":"partner","id":"{id}","program":"p","status":"approved"{extra}}}"#)
}

/// A conversion; `ev` holds extra JSON fields.
fn conv(id: &str, ts: &str, event: &str, ev: &str) -> String {
    format!(
        r#"{{"type":"conversion","id":"{id}","ts":"{ts}T12:00:00.000Z","program":"p","event":"{event}","txn_id":"{id}"{ev}}}"#
    )
}

fn click(partner: &str, ts: &str) -> String {
    format!(r#","partner":"{partner}","click_id":"k","click_ts":"{ts}T11:00:00.000Z""#)
}

fn usd(a: &str) -> String {
    format!(r#","amount":"{a}","currency":"USD""#)
}

const HEAD: &str = "currency = \"USD\"\n[[programs]]\nid = \"p\"\nmodel = \"affiliate\"\n";

fn rules(extra_program: &str, rules: &str) -> String {
    format!("{HEAD}{extra_program}\n{rules}")
}

fn s(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn percent_rounds_half_even_once() {
    // 20% of 0.125 = 0.025 -> 0.02 (2 is even); 20% of 0.175 = 0.035 -> 0.04
    let w = world(
        &rules(
            "",
            "[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n",
        ),
        &[
            partner("a", ""),
            conv(
                "e1",
                "2026-11-02",
                "sale",
                &format!("{}{}", click("a", "2026-11-02"), usd("0.125")),
            ),
            conv(
                "e2",
                "2026-11-03",
                "sale",
                &format!("{}{}", click("a", "2026-11-03"), usd("0.175")),
            ),
        ],
    );
    let (es, _) = w.draft("2026-11");
    assert_eq!(
        amounts(&es, EntryKind::Commission),
        s(&[("a", "0.02"), ("a", "0.04")])
    );
    // the words show the amount the rule was applied to, not a rounded one
    // (20% of 0.12 or 0.13 would not give these figures)
    let mut words: Vec<&str> = es
        .iter()
        .filter(|e| e.kind == EntryKind::Commission)
        .map(|e| e.calc.as_str())
        .collect();
    words.sort();
    assert!(
        words[0].starts_with("20% of 0.125 USD = 0.02 USD"),
        "{words:?}"
    );
    assert!(
        words[1].starts_with("20% of 0.175 USD = 0.04 USD"),
        "{words:?}"
    );
}

#[test]
fn per_lot_and_minor_units_of_jpy_and_kwd() {
    // 2.5 lots x 8.00 = 20.00 USD
    let w = world(
        &rules(
            "",
            "[[programs.rules]]\nevent = \"trade\"\nper_lot = \"8.00\"\n",
        ),
        &[
            partner("a", ""),
            conv(
                "e1",
                "2026-11-02",
                "trade",
                &format!("{},\"lots\":\"2.5\"", click("a", "2026-11-02")),
            ),
        ],
    );
    assert_eq!(
        amounts(&w.draft("2026-11").0, EntryKind::Commission),
        s(&[("a", "20.00")])
    );
    // JPY has no minor unit: 10% of 1234 = 123.4 -> 123; 10% of 1235 = 123.5 -> 124 (half-even)
    let jp = "currency = \"JPY\"\n[[programs]]\nid = \"p\"\nmodel = \"affiliate\"\n[[programs.rules]]\nevent = \"sale\"\npercent = \"10\"\n";
    let yen = |a: &str| format!(r#","amount":"{a}","currency":"JPY""#);
    let w = world(
        jp,
        &[
            partner("a", ""),
            conv(
                "e1",
                "2026-11-02",
                "sale",
                &format!("{}{}", click("a", "2026-11-02"), yen("1234")),
            ),
            conv(
                "e2",
                "2026-11-03",
                "sale",
                &format!("{}{}", click("a", "2026-11-03"), yen("1235")),
            ),
        ],
    );
    assert_eq!(
        amounts(&w.draft("2026-11").0, EntryKind::Commission),
        s(&[("a", "123"), ("a", "124")])
    );
    // KWD has three: 10% of 12.345 = 1.2345 -> 1.234 (half-even)
    let kw = jp.replace("JPY", "KWD");
    let w = world(
        &kw,
        &[
            partner("a", ""),
            conv(
                "e1",
                "2026-11-02",
                "sale",
                &format!(
                    "{},\"amount\":\"12.345\",\"currency\":\"KWD\"",
                    click("a", "2026-11-02")
                ),
            ),
        ],
    );
    assert_eq!(
        amounts(&w.draft("2026-11").0, EntryKind::Commission),
        s(&[("a", "1.234")])
    );
}

/// `[payout] minimum` is in the top-level currency: a program paying in
/// JPY or EUR compares with it converted at the period's last day's rate
/// (fx.csv), half-even to the currency's minor unit. 50 USD = 50 / 0.0067
/// = 7462.69 -> 7463 JPY and 50 / 1.20 = 41.666 -> 41.67 EUR. So 1000 JPY
/// (6.70 USD) is carried forward and 45.00 EUR (54 USD) is paid. (Before,
/// the number was read in each program's currency: 1000 JPY was paid and
/// 45 EUR held.)
#[test]
fn the_payout_minimum_is_converted_to_each_programs_currency() {
    let cfg = "currency = \"USD\"\nfx = \"fx.csv\"\n[payout]\nminimum = \"50.00\"\n\
               [[programs]]\nid = \"j\"\nmodel = \"affiliate\"\ncurrency = \"JPY\"\n\
               [[programs.rules]]\nevent = \"sale\"\npercent = \"10\"\n\
               [[programs]]\nid = \"e\"\nmodel = \"affiliate\"\ncurrency = \"EUR\"\n\
               [[programs.rules]]\nevent = \"sale\"\npercent = \"10\"\n";
    let line = |id: &str, prog: &str, partner: &str, amount: &str, cur: &str| {
        conv(
            id,
            "2026-11-05",
            "sale",
            &format!(
                "{},\"amount\":\"{amount}\",\"currency\":\"{cur}\"",
                click(partner, "2026-11-05")
            ),
        )
        .replace("\"program\":\"p\"", &format!("\"program\":\"{prog}\""))
    };
    let member = |id: &str, prog: &str| {
        partner(id, "").replace("\"program\":\"p\"", &format!("\"program\":\"{prog}\""))
    };
    let w = world(
        cfg,
        &[
            member("ja", "j"),
            member("ea", "e"),
            line("s1", "j", "ja", "10000", "JPY"),
            line("s2", "e", "ea", "450", "EUR"),
        ],
    );
    let (es, st) = w.draft("2026-11");
    let row = |p: &str| {
        st.iter()
            .find(|s| s.partner == p)
            .map(|s| s.csv_row()[4..].join(","))
            .unwrap()
    };
    assert_eq!(row("ja"), "1000,0,0,0,0,0,1000");
    assert_eq!(row("ea"), "45.00,0.00,0.00,0.00,0.00,45.00,0.00");
    let payout = es.iter().find(|e| e.kind == EntryKind::Payout).unwrap();
    assert!(
        payout.calc.ends_with(
            "at least the minimum 41.67 (50.00 USD / 1.2 USD per EUR, fx.csv 2026-11-01): paid out"
        ),
        "{}",
        payout.calc
    );
}

#[test]
fn fx_converts_at_full_precision_then_rounds() {
    // 33.33 EUR at 1.20 = 39.996 USD; 10% = 3.9996 -> 4.00. Before Nov 1 the
    // Oct 1 rate applies: 10.05 EUR x 1.10 = 11.055; 10% = 1.1055 -> 1.11
    let w = world(
        &format!(
            "fx = \"fx.csv\"\n{}",
            rules(
                "",
                "[[programs.rules]]\nevent = \"sale\"\npercent = \"10\"\n"
            )
        ),
        &[
            partner("a", ""),
            conv(
                "e1",
                "2026-11-05",
                "sale",
                &format!(
                    "{},\"amount\":\"33.33\",\"currency\":\"EUR\"",
                    click("a", "2026-11-05")
                ),
            ),
            conv(
                "e2",
                "2026-10-31",
                "sale",
                &format!(
                    "{},\"amount\":\"10.05\",\"currency\":\"EUR\"",
                    click("a", "2026-10-31")
                ),
            ),
        ],
    );
    assert_eq!(
        amounts(&w.draft("2026-11").0, EntryKind::Commission),
        s(&[("a", "4.00")])
    );
    assert_eq!(
        amounts(&w.draft("2026-10").0, EntryKind::Commission),
        s(&[("a", "1.11")])
    );
    // the words name the rate and the fx.csv row used (Oct 1's for Oct
    // 31), so the arithmetic can be redone from them alone
    let calc = w.draft("2026-10").0[0].calc.clone();
    assert!(
        calc.contains("10.05 EUR x 1.10 (the EUR rate of 2026-10-01 in fx.csv) / 1 (USD, the base) = 11.055 USD"),
        "{calc}"
    );
}

#[test]
fn most_specific_rule_wins_first_listed_on_ties() {
    // gold + DE: the rule with two keys (40%) beats one key (30%) and none (20%);
    // a silver partner in FR: two one-key rules tie? no: country FR (25%) vs none.
    let r = "[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n\
             [[programs.rules]]\nevent = \"sale\"\ntier = \"gold\"\npercent = \"30\"\n\
             [[programs.rules]]\nevent = \"sale\"\ntier = \"gold\"\ncountry = \"DE\"\npercent = \"40\"\n\
             [[programs.rules]]\nevent = \"sale\"\ncountry = \"FR\"\npercent = \"25\"\n\
             [[programs.rules]]\nevent = \"sale\"\ncountry = \"FR\"\npercent = \"99\"\n";
    let w = world(
        &rules("", r),
        &[
            partner("g", r#","tier":"gold""#),
            partner("s", r#","tier":"silver""#),
            conv(
                "e1",
                "2026-11-02",
                "sale",
                &format!(
                    "{}{},\"country\":\"DE\"",
                    click("g", "2026-11-02"),
                    usd("100")
                ),
            ),
            conv(
                "e2",
                "2026-11-03",
                "sale",
                &format!(
                    "{}{},\"country\":\"US\"",
                    click("g", "2026-11-03"),
                    usd("100")
                ),
            ),
            conv(
                "e3",
                "2026-11-04",
                "sale",
                &format!(
                    "{}{},\"country\":\"FR\"",
                    click("s", "2026-11-04"),
                    usd("100")
                ),
            ),
            conv(
                "e4",
                "2026-11-05",
                "sale",
                &format!("{}{}", click("s", "2026-11-05"), usd("100")),
            ),
        ],
    );
    assert_eq!(
        amounts(&w.draft("2026-11").0, EntryKind::Commission),
        s(&[
            ("g", "30.00"),
            ("g", "40.00"),
            ("s", "20.00"),
            ("s", "25.00")
        ])
    );
}

#[test]
fn cap_months_first_only_min_amount() {
    let r = "[[programs.rules]]\nevent = \"signup\"\nfixed = \"5\"\ncap = 2\n\
             [[programs.rules]]\nevent = \"sale\"\npercent = \"10\"\nmonths = 2\n\
             [[programs.rules]]\nevent = \"ftd\"\nfixed = \"50\"\nfirst_only = true\nmin_amount = \"20\"\n";
    let mut lines = vec![partner("a", "")];
    for (i, d) in ["2026-11-01", "2026-11-02", "2026-11-03"]
        .iter()
        .enumerate()
    {
        lines.push(conv(
            &format!("su{i}"),
            d,
            "signup",
            &format!("{},\"customer\":\"c{i}\"", click("a", d)),
        ));
    }
    // c0's first attributed conversion is its signup on Nov 1: a sale on Jan 1 is within
    // 2 months (before Jan 1 12:00 + ... = Jan 1, 2027 12:00 is exactly 2 months: not before)
    lines.push(conv(
        "s1",
        "2026-12-31",
        "sale",
        &format!(
            ",\"customer\":\"c0\"{}{}",
            click("a", "2026-12-31"),
            usd("100")
        ),
    ));
    lines.push(conv(
        "s2",
        "2027-01-01",
        "sale",
        &format!(
            ",\"customer\":\"c0\"{}{}",
            click("a", "2027-01-01"),
            usd("100")
        ),
    ));
    // ftd: 10 is below min_amount; the second ftd of c1 is not its first
    lines.push(conv(
        "f1",
        "2026-11-10",
        "ftd",
        &format!(
            ",\"customer\":\"c1\"{}{}",
            click("a", "2026-11-10"),
            usd("10")
        ),
    ));
    lines.push(conv(
        "f2",
        "2026-11-11",
        "ftd",
        &format!(
            ",\"customer\":\"c1\"{}{}",
            click("a", "2026-11-11"),
            usd("100")
        ),
    ));
    lines.push(conv(
        "f3",
        "2026-11-12",
        "ftd",
        &format!(
            ",\"customer\":\"c2\"{}{}",
            click("a", "2026-11-12"),
            usd("20")
        ),
    ));
    let w = world(&rules("", r), &lines);
    let (nov, _) = w.draft("2026-11");
    assert_eq!(
        amounts(&nov, EntryKind::Commission),
        s(&[("a", "5.00"), ("a", "5.00"), ("a", "50.00")])
    );
    assert_eq!(amounts(&nov, EntryKind::Capped), s(&[("a", "0.00")]));
    assert_eq!(
        amounts(&w.draft("2026-12").0, EntryKind::Commission),
        s(&[("a", "10.00")])
    );
    assert!(amounts(&w.draft("2027-01").0, EntryKind::Commission).is_empty());
}

/// A `first_only` rule cannot tell the first conversion of a conversion
/// without a customer: it never matches one, and the next rule does (or
/// none). Before, each of three `ftd`s without a customer was its
/// customer's first and paid the one-off bounty: 150.00.
#[test]
fn first_only_never_pays_a_conversion_without_a_customer() {
    let r = "[[programs.rules]]\nevent = \"ftd\"\nfixed = \"50\"\nfirst_only = true\n\
             [[programs.rules]]\nevent = \"ftd\"\nfixed = \"1\"\n";
    let mut lines = vec![partner("a", "")];
    for (i, d) in ["2026-11-02", "2026-11-03", "2026-11-04"]
        .iter()
        .enumerate()
    {
        lines.push(conv(
            &format!("f{i}"),
            d,
            "ftd",
            &format!("{}{}", click("a", d), usd("500")),
        ));
    }
    // one with a customer still gets the bounty
    lines.push(conv(
        "f9",
        "2026-11-05",
        "ftd",
        &format!(
            ",\"customer\":\"c9\"{}{}",
            click("a", "2026-11-05"),
            usd("500")
        ),
    ));
    let w = world(&rules("", r), &lines);
    let (nov, st) = w.draft("2026-11");
    assert_eq!(
        amounts(&nov, EntryKind::Commission),
        s(&[("a", "1.00"), ("a", "1.00"), ("a", "1.00"), ("a", "50.00")])
    );
    assert_eq!(st[0].earned.to_string(), "53.00");
}

/// A refund reverses the sale its `original_txn_id` names, not a lead that
/// shares the order id (SPEC: `txn_id` is unique per program and event):
/// the first conversion with that id carrying an amount. Hand-worked: lead
/// 5.00 fixed, sale 20% of 500 = 100.00; a refund of 250 reverses
/// 250 / 500 of 100.00 = 50.00 of the sale, and a chargeback with no amount
/// of a second order all of its sale's 40.00; both leads stay paid. (Before,
/// the refund reversed the lead's 5.00 in full and the sale stayed paid.)
#[test]
fn a_refund_reverses_the_sale_not_a_lead_with_its_order_id() {
    let r = "[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n\
             [[programs.rules]]\nevent = \"lead\"\nfixed = \"5\"\n";
    let order = |id: &str, event: &str, d: &str, txn: &str, extra: &str| {
        conv(id, d, event, &format!("{}{extra}", click("a", d))).replace(
            &format!("\"txn_id\":\"{id}\""),
            &format!("\"txn_id\":\"{txn}\""),
        )
    };
    let w = world(
        &rules("", r),
        &[
            partner("a", ""),
            order("l1", "lead", "2026-11-02", "ORD-1", ""),
            order("s1", "sale", "2026-11-03", "ORD-1", &usd("500")),
            order("l2", "lead", "2026-11-04", "ORD-2", ""),
            order("s2", "sale", "2026-11-05", "ORD-2", &usd("200")),
            conv(
                "r1",
                "2026-11-10",
                "refund",
                &format!(",\"original_txn_id\":\"ORD-1\"{}", usd("250")),
            ),
            refund("r2", "2026-11-11", "ORD-2"),
        ],
    );
    let (es, st) = w.draft("2026-11");
    assert_eq!(
        amounts(&es, EntryKind::Commission),
        s(&[
            ("a", "100.00"),
            ("a", "40.00"),
            ("a", "5.00"),
            ("a", "5.00")
        ])
    );
    assert_eq!(
        amounts(&es, EntryKind::Clawback),
        s(&[("a", "-40.00"), ("a", "-50.00")])
    );
    let mut reversed: Vec<&str> = es
        .iter()
        .filter(|e| e.kind == EntryKind::Clawback)
        .map(|e| e.sources[1].as_str())
        .collect();
    reversed.sort();
    assert_eq!(reversed, ["s1", "s2"]);
    assert_eq!(
        (st[0].earned.to_string(), st[0].reversed.to_string()),
        ("150.00".into(), "-90.00".into())
    );
    // the words say which share each reversal took
    let calc = |sale: &str| {
        es.iter()
            .find(|e| e.kind == EntryKind::Clawback && e.sources[1] == sale)
            .map(|e| e.calc.clone())
            .unwrap()
    };
    assert!(
        calc("s1").starts_with("50% of the original entry's 100.00 USD reversed (refund amount / original amount) = -50.00 USD"),
        "{}",
        calc("s1")
    );
    assert!(
        calc("s2").starts_with("all of the original entry's 40.00 USD reversed (the reversal has no amount: all of it) = -40.00 USD"),
        "{}",
        calc("s2")
    );
}

#[test]
fn ladders_marginal_and_retroactive() {
    // lots, marginal, steps 0 and 500 (SPEC): 499 lots at 8 = 3992; then 3 lots:
    // 1 at 8 + 2 at 10 = 28
    let r = "[[programs.rules]]\nevent = \"trade\"\nladder = { metric = \"lots\", mode = \"marginal\", steps = [{ from = \"0\", per_lot = \"8.00\" }, { from = \"500\", per_lot = \"10.00\" }] }\n";
    let lots = |l: &str| format!(",\"customer\":\"c\",\"lots\":\"{l}\"");
    let w = world(
        &rules("lifetime = true", r),
        &[
            partner("a", ""),
            conv(
                "t1",
                "2026-11-02",
                "trade",
                &format!("{}{}", click("a", "2026-11-02"), lots("499")),
            ),
            conv("t2", "2026-11-03", "trade", &lots("3")),
        ],
    );
    let (es, _) = w.draft("2026-11");
    assert_eq!(
        amounts(&es, EntryKind::Commission),
        s(&[("a", "28.00"), ("a", "3992.00")])
    );
    // each step's share of the event's lots times the step's base on all
    // of them: 1/3 x 24.00 + 2/3 x 30.00 = 28.00
    let t2 = es.iter().find(|e| e.sources[0] == "t2").unwrap();
    assert!(
        t2.calc.contains("goes from 499 to 502; 1/3 x (3 lots x 8 USD) in the step from 0 + 2/3 x (3 lots x 10 USD) in the step from 500 = 28.00 USD"),
        "{}",
        t2.calc
    );

    // amount, marginal, 5% to 1000 then 10%: 800 -> 40; 400 -> 200 x 5% + 200 x 10% = 30
    let r = "[[programs.rules]]\nevent = \"sale\"\nladder = { metric = \"amount\", mode = \"marginal\", steps = [{ from = \"0\", percent = \"5\" }, { from = \"1000\", percent = \"10\" }] }\n";
    let w = world(
        &rules("", r),
        &[
            partner("a", ""),
            conv(
                "s1",
                "2026-11-02",
                "sale",
                &format!("{}{}", click("a", "2026-11-02"), usd("800")),
            ),
            conv(
                "s2",
                "2026-11-03",
                "sale",
                &format!("{}{}", click("a", "2026-11-03"), usd("400")),
            ),
        ],
    );
    assert_eq!(
        amounts(&w.draft("2026-11").0, EntryKind::Commission),
        s(&[("a", "30.00"), ("a", "40.00")])
    );

    // count, retroactive: 10 per signup, 20 from the 4th; 3 signups -> 10 each,
    // 4 signups -> 20 each
    let r = "[[programs.rules]]\nevent = \"signup\"\nladder = { metric = \"count\", mode = \"retroactive\", steps = [{ from = \"0\", fixed = \"10\" }, { from = \"3\", fixed = \"20\" }] }\n";
    let mut lines = vec![partner("a", ""), partner("b", "")];
    for i in 0..3 {
        lines.push(conv(
            &format!("a{i}"),
            "2026-11-02",
            "signup",
            &click("a", "2026-11-02"),
        ));
    }
    for i in 0..4 {
        lines.push(conv(
            &format!("b{i}"),
            "2026-11-02",
            "signup",
            &click("b", "2026-11-02"),
        ));
    }
    let w = world(&rules("", r), &lines);
    let (_, st) = w.draft("2026-11");
    let earned: Vec<(String, String)> = st
        .iter()
        .map(|s| (s.partner.clone(), s.earned.to_string()))
        .collect();
    assert_eq!(earned, s(&[("a", "30.00"), ("b", "80.00")]));
}

#[test]
fn overrides_two_levels_and_a_suspended_parent() {
    // c earns 100; parent b 10% = 10.00; grandparent a 5% = 5.00. When b is
    // suspended, b's override is rejected and a still earns its 5%.
    let r = "[[programs.rules]]\nevent = \"sale\"\nfixed = \"100\"\n";
    let w = world(
        &rules("overrides = [\"10\", \"5\"]", r),
        &[
            partner("a", ""),
            partner("b", r#","parent":"a""#),
            partner("c", r#","parent":"b""#),
            conv(
                "e1",
                "2026-11-02",
                "sale",
                &format!("{}{}", click("c", "2026-11-02"), usd("1")),
            ),
        ],
    );
    let (es, _) = w.draft("2026-11");
    assert_eq!(
        amounts(&es, EntryKind::Override),
        s(&[("a", "5.00"), ("b", "10.00")])
    );
    let w = world(
        &rules("overrides = [\"10\", \"5\"]", r),
        &[
            partner("a", ""),
            partner("b", r#","parent":"a","status":"suspended""#)
                .replace(r#""status":"approved","#, ""),
            partner("c", r#","parent":"b""#),
            conv(
                "e1",
                "2026-11-02",
                "sale",
                &format!("{}{}", click("c", "2026-11-02"), usd("1")),
            ),
        ],
    );
    let (es, _) = w.draft("2026-11");
    assert_eq!(amounts(&es, EntryKind::Override), s(&[("a", "5.00")]));
    assert_eq!(amounts(&es, EntryKind::Rejected), s(&[("b", "0.00")]));
}

#[test]
fn partial_refunds_never_claw_back_more_than_earned() {
    // commission 0.03; two refunds of half each: round(0.015) = 0.02 then
    // round(0.03) - 0.02 = 0.01; a third refund finds nothing left
    let r = "[[programs.rules]]\nevent = \"sale\"\nfixed = \"0.03\"\n";
    let refund = |id: &str, d: &str| {
        conv(
            id,
            d,
            "refund",
            &format!(",\"original_txn_id\":\"e1\"{}", usd("5")),
        )
    };
    let w = world(
        &rules("", r),
        &[
            partner("a", ""),
            conv(
                "e1",
                "2026-11-02",
                "sale",
                &format!("{}{}", click("a", "2026-11-02"), usd("10")),
            ),
            refund("r1", "2026-11-03"),
            refund("r2", "2026-11-04"),
            refund("r3", "2026-11-05"),
        ],
    );
    let (es, st) = w.draft("2026-11");
    assert_eq!(
        amounts(&es, EntryKind::Clawback),
        s(&[("a", "-0.01"), ("a", "-0.02")])
    );
    // the words of each say how its amount came about: the second is not
    // 50% of 0.03 (0.015, 0.02 half-even) but the rest
    let mut words: Vec<&str> = es
        .iter()
        .filter(|e| e.kind == EntryKind::Clawback)
        .map(|e| e.calc.as_str())
        .collect();
    words.sort();
    assert_eq!(
        words,
        [
            "50% more of the original entry's 0.03 USD reversed (refund amount / original amount): \
             the refunds so far reverse all = 0.03 USD, rounded half-even, less 0.02 USD reversed by \
             the earlier ones = -0.01 USD",
            "50% of the original entry's 0.03 USD reversed (refund amount / original amount) = -0.02 USD, \
             rounded half-even once",
        ]
    );
    assert_eq!(
        (st[0].earned.to_string(), st[0].reversed.to_string()),
        ("0.03".into(), "-0.03".into())
    );
}

#[test]
fn clawback_after_payout_and_close_lands_in_the_refund_period() {
    // Nov: 20% of 300 = 60 paid. Dec: a refund of 150 claws back 30 (and the
    // parent's 10% override 6 -> -3); the negative matured balance is written off.
    let r = "[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n";
    let mut w = world(
        &rules("overrides = [\"10\"]", r),
        &[
            partner("a", ""),
            partner("c", r#","parent":"a""#),
            conv(
                "e1",
                "2026-11-02",
                "sale",
                &format!("{}{}", click("c", "2026-11-02"), usd("300")),
            ),
        ],
    );
    w.run_close("2026-11");
    w.add(&[conv(
        "r1",
        "2026-12-01",
        "refund",
        &format!(",\"original_txn_id\":\"e1\"{}", usd("150")),
    )]);
    let (es, st) = w.draft("2026-12");
    assert_eq!(
        amounts(&es, EntryKind::Clawback),
        s(&[("a", "-3.00"), ("c", "-30.00")])
    );
    let c = st.iter().find(|s| s.partner == "c").unwrap();
    let row = c.csv_row();
    assert_eq!(
        (&row[5][..], &row[6][..], &row[10][..]),
        ("-30.00", "30.00", "0.00")
    );
}

#[test]
fn attribution_precedence() {
    let r = "[[programs.rules]]\nevent = \"sale\"\nfixed = \"1\"\n";
    let prog = "lifetime = true\nwindow_days = 10\ndeal_days = 30";
    let lines = vec![
        partner("a", ""),
        partner("b", ""),
        partner("d", ""),
        partner("late", r#","history":[{"status":"applied","at":"2026-01-01T00:00:00.000Z"},{"status":"approved","at":"2026-11-15T00:00:00.000Z"}]"#),
        r#"{"type":"coupon","code":"BEE","partner":"b","program":"p"}"#.to_string(),
        r#"{"type":"click","id":"bk","ts":"2026-11-01T11:00:00.000Z","click_id":"botclick","bot":true}"#.to_string(),
        r#"{"type":"deal","id":"d2","ts":"2026-10-20T00:00:00.000Z","program":"p","partner":"b","customer":"dc","status":"approved"}"#.to_string(),
        r#"{"type":"deal","id":"d1","ts":"2026-10-15T00:00:00.000Z","program":"p","partner":"d","customer":"dc","status":"approved"}"#.to_string(),
        r#"{"type":"deal","id":"d0","ts":"2026-10-10T00:00:00.000Z","program":"p","partner":"a","customer":"dc","status":"pending"}"#.to_string(),
        // click by a locks c1 to a; a later click by b does not move it
        conv("e1", "2026-11-01", "sale", &format!(",\"customer\":\"c1\"{}", click("a", "2026-11-01"))),
        conv("e2", "2026-11-02", "sale", &format!(",\"customer\":\"c1\"{}", click("b", "2026-11-02"))),
        // a click older than window_days is no evidence; the coupon is
        conv("e3", "2026-11-20", "sale", &format!(",\"customer\":\"c3\",\"coupon\":\"BEE\"{}", click("a", "2026-11-05"))),
        // earliest approved deal wins (d1, registered Oct 15, 19 days before)
        conv("e4", "2026-11-03", "sale", ",\"customer\":\"dc\""),
        // a bot click with a coupon: the coupon wins; alone: rejected
        conv("e5", "2026-11-04", "sale", ",\"customer\":\"c5\",\"coupon\":\"BEE\",\"partner\":\"a\",\"click_id\":\"botclick\",\"click_ts\":\"2026-11-04T11:00:00.000Z\""),
        conv("e6", "2026-11-04", "sale", ",\"customer\":\"c6\",\"partner\":\"a\",\"click_id\":\"botclick\",\"click_ts\":\"2026-11-04T11:00:00.000Z\""),
        // status at event time: applied on Nov 10, approved from Nov 15
        conv("e7", "2026-11-10", "sale", &format!(",\"customer\":\"c7\"{}", click("late", "2026-11-10"))),
        conv("e8", "2026-11-16", "sale", &format!(",\"customer\":\"c8\"{}", click("late", "2026-11-16"))),
        // self-referral: the customer is the partner
        conv("e9", "2026-11-17", "sale", &format!(",\"customer\":\"b\"{}", click("b", "2026-11-17"))),
        // nothing: unattributed, no entry
        conv("e10", "2026-11-18", "sale", ",\"customer\":\"c10\""),
    ];
    let w = world(&rules(prog, r), &lines);
    let (es, _) = w.draft("2026-11");
    let by: Vec<(String, String, String)> = es
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Commission | EntryKind::Rejected))
        .map(|e| {
            (
                e.sources[0].clone(),
                e.partner.clone(),
                if e.kind == EntryKind::Rejected {
                    e.reason.clone()
                } else {
                    "paid".into()
                },
            )
        })
        .collect();
    let mut by = by;
    by.sort();
    let want: Vec<(String, String, String)> = [
        ("e1", "a", "paid"),
        ("e2", "a", "paid"),
        ("e3", "b", "paid"),
        ("e4", "d", "paid"),
        ("e5", "b", "paid"),
        ("e6", "a", "bot_click"),
        ("e7", "late", "partner_applied"),
        ("e8", "late", "paid"),
        ("e9", "b", "self_referral"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(by, want);
}

#[test]
fn deal_registration_expires_after_deal_days() {
    let r = "[[programs.rules]]\nevent = \"deal_won\"\nfixed = \"1\"\n";
    let w = world(
        &rules("deal_days = 30", r),
        &[
            partner("a", ""),
            r#"{"type":"deal","id":"d1","ts":"2026-10-01T12:00:00.000Z","program":"p","partner":"a","customer":"x","status":"approved"}"#.to_string(),
            // exactly 30 x 24 h after the registration: still attributed; a day later: expired
            conv("e1", "2026-10-31", "deal_won", ",\"customer\":\"x\""),
            conv("e2", "2026-11-01", "deal_won", ",\"customer\":\"x\""),
        ],
    );
    assert_eq!(
        amounts(&w.draft("2026-10").0, EntryKind::Commission),
        s(&[("a", "1.00")])
    );
    assert!(amounts(&w.draft("2026-11").0, EntryKind::Commission).is_empty());
}

#[test]
fn first_approved_registration_of_the_customer_wins() {
    let r = "[[programs.rules]]\nevent = \"deal_won\"\nfixed = \"1\"\n";
    let deal = |id: &str, day: &str, partner: &str, customer: &str, status: &str| {
        format!(
            r#"{{"type":"deal","id":"{id}","ts":"2026-10-{day}T12:00:00.000Z","program":"p","partner":"{partner}","customer":"{customer}","status":"{status}"}}"#
        )
    };
    let w = world(
        &rules("deal_days = 90", r),
        &[
            partner("a", ""),
            partner("b", ""),
            partner("c", ""),
            // x: a's registration is the earliest but not approved; b's
            // approved one is older than c's
            deal("d1", "01", "a", "x", "pending"),
            deal("d3", "05", "c", "x", "approved"),
            deal("d2", "03", "b", "x", "approved"),
            // y: only c; w (sorts before x) registered after its sale
            deal("d4", "02", "c", "y", "approved"),
            deal("d5", "20", "a", "w", "approved"),
            conv("e1", "2026-10-10", "deal_won", ",\"customer\":\"x\""),
            conv("e2", "2026-10-11", "deal_won", ",\"customer\":\"y\""),
            conv("e3", "2026-10-12", "deal_won", ",\"customer\":\"w\""),
            conv("e4", "2026-10-13", "deal_won", ",\"customer\":\"z\""),
        ],
    );
    assert_eq!(
        amounts(&w.draft("2026-10").0, EntryKind::Commission),
        s(&[("b", "1.00"), ("c", "1.00")])
    );
}

/// review26 L1: the edge refuses `acme-1` as the same customer as a
/// registered `ACME-1` (trimmed, without case), so that registration
/// attributes both spellings' conversions; the earliest still wins across
/// spellings, and another customer is not matched.
#[test]
fn a_registration_covers_its_customer_in_any_case() {
    let r = "[[programs.rules]]\nevent = \"deal_won\"\nfixed = \"1\"\n";
    let deal = |id: &str, day: &str, partner: &str, customer: &str| {
        format!(
            r#"{{"type":"deal","id":"{id}","ts":"2026-10-{day}T12:00:00.000Z","program":"p","partner":"{partner}","customer":"{customer}","status":"approved"}}"#
        )
    };
    let w = world(
        &rules("deal_days = 90", r),
        &[
            partner("a", ""),
            partner("b", ""),
            deal("d1", "02", "a", "ACME-1"),
            deal("d2", "03", "b", " acme-1"),
            deal("d3", "03", "b", "Beta"),
            conv("e1", "2026-10-10", "deal_won", ",\"customer\":\"acme-1\""),
            conv("e2", "2026-10-11", "deal_won", ",\"customer\":\"ACME-1\""),
            conv("e3", "2026-10-12", "deal_won", ",\"customer\":\"beta\""),
            conv("e4", "2026-10-13", "deal_won", ",\"customer\":\"acme-12\""),
        ],
    );
    assert_eq!(
        amounts(&w.draft("2026-10").0, EntryKind::Commission),
        s(&[("a", "1.00"), ("a", "1.00"), ("b", "1.00")])
    );
}

/// A program paying 20% of sales, with `hold_days` and no payout minimum.
fn held(days: u32) -> String {
    format!(
        "currency = \"USD\"\n[payout]\nhold_days = {days}\nminimum = \"0\"\n[[programs]]\nid = \"p\"\nmodel = \"affiliate\"\n\
         [[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n"
    )
}

fn sale(id: &str, day: &str, amount: &str) -> String {
    conv(
        id,
        day,
        "sale",
        &format!("{}{}", click("a", day), usd(amount)),
    )
}

fn refund(id: &str, day: &str, of: &str) -> String {
    conv(id, day, "refund", &format!(",\"original_txn_id\":\"{of}\""))
}

/// `(earned, reversed, adjusted, carried_in, pending, payable, carried_out)`
/// of partner a's statement of `p`, `None` when it has none.
fn figures(w: &World, p: &str) -> Option<[String; 7]> {
    let (_, st) = w.draft(p);
    st.iter().find(|s| s.partner == "a").map(|s| {
        let r = s.csv_row();
        std::array::from_fn(|i| r[4 + i].clone())
    })
}

fn f7(v: [&str; 7]) -> Option<[String; 7]> {
    Some(v.map(str::to_string))
}

#[test]
fn a_refund_within_the_hold_never_pays_its_commission() {
    // hold 30: 20% of 500 = 100 on Jan 20, refunded on Jan 25; 20% of 300 =
    // 60 on Jan 22. At Jan 31 both sales are held; the clawback nets with
    // the commission it reverses: pending 100 - 100 + 60 = 60, balance 60,
    // matured 0, nothing written off. (Were the clawback taken from the
    // matured balance, -100 would be written off and February would pay the
    // refunded 100.) Feb 28: both matured, 60 paid.
    let mut w = world(
        &held(30),
        &[
            partner("a", ""),
            sale("s1", "2027-01-20", "500"),
            sale("s2", "2027-01-22", "300"),
            refund("r1", "2027-01-25", "s1"),
        ],
    );
    let jan = [
        "160.00", "-100.00", "0.00", "0.00", "60.00", "0.00", "60.00",
    ];
    assert_eq!(figures(&w, "2027-01"), f7(jan));
    let (es, _) = w.draft("2027-01");
    w.run_close("2027-01");
    // explain says so
    let clawback = es.iter().find(|e| e.kind == EntryKind::Clawback).unwrap();
    let words = settlement::explain::explain(&w.store, &clawback.id).unwrap();
    assert!(
        words.contains("2027-01-25 (held, or not, with the entry it reverses)"),
        "{words}"
    );
    let feb = ["0.00", "0.00", "0.00", "60.00", "0.00", "60.00", "0.00"];
    assert_eq!(figures(&w, "2027-02"), f7(feb));
}

/// A net-revenue loss still within its hold is no reason to pay more: the
/// held money is never negative. Hold 10: +50 matured (Nov 6 + 10), +100
/// matured (Nov 5), -100 (Nov 25, held until Dec 5). Nov: balance 50,
/// pending 0, 50 paid; Dec: nothing. (Before, pending -100 made the
/// matured balance 150: 150 paid, and December wrote off the -100.)
#[test]
fn a_held_net_revenue_loss_is_never_paid_out() {
    let cfg = held(10);
    let w = world(
        &cfg,
        &[
            partner("a", ""),
            sale("s1", "2026-11-05", "500"),
            sale("s3", "2026-11-06", "250"),
            sale("s2", "2026-11-25", "-500"),
        ],
    );
    let nov = ["50.00", "0.00", "0.00", "0.00", "0.00", "50.00", "0.00"];
    assert_eq!(figures(&w, "2026-11"), f7(nov));
    let mut w = w;
    w.run_close("2026-11");
    assert_eq!(figures(&w, "2026-12"), None);
}

/// A refund of a paid sale is recovered from the refund period's balance,
/// held money too, before anything is written off. Hold 10: Oct 5 sale
/// 500, 100.00 paid in October; Nov 20 refunded (-100.00, at once: what it
/// reverses has matured); Nov 25 sale 300, 60.00 held until Dec 5.
/// Nov: balance -40, pending 0 (never more than the balance), matured -40
/// written off; Dec: nothing to pay. (Before, pending 60 left -100 to be
/// written off, and December paid the 60.)
#[test]
fn a_refund_of_a_paid_sale_is_recovered_from_held_money() {
    let mut w = world(
        &held(10),
        &[
            partner("a", ""),
            sale("s1", "2026-10-05", "500"),
            refund("r1", "2026-11-20", "s1"),
            sale("s2", "2026-11-25", "300"),
        ],
    );
    let oct = ["100.00", "0.00", "0.00", "0.00", "0.00", "100.00", "0.00"];
    assert_eq!(figures(&w, "2026-10"), f7(oct));
    w.run_close("2026-10");
    let nov = ["60.00", "-100.00", "40.00", "0.00", "0.00", "0.00", "0.00"];
    assert_eq!(figures(&w, "2026-11"), f7(nov));
    w.run_close("2026-11");
    assert_eq!(figures(&w, "2026-12"), None);
}

#[test]
fn a_clawback_of_an_earlier_period_waits_with_what_it_reverses() {
    // hold 90: 100 on Jan 20 (pending until Apr 20), 50 on Jan 25 (until
    // Apr 25); the first sale refunded on Feb 5, in February's own period.
    // Feb: carried_in 150 (both pending), reversed -100, pending 150 - 100
    // = 50, matured 0. Mar: the January commissions and the February
    // clawback, read back from the closed periods, still pending: 100 - 100
    // + 50 = 50 = the balance, nothing written off. Apr 30: 50 paid.
    let mut w = world(
        &held(90),
        &[
            partner("a", ""),
            sale("s1", "2027-01-20", "500"),
            sale("s2", "2027-01-25", "250"),
            refund("r1", "2027-02-05", "s1"),
        ],
    );
    w.run_close("2027-01");
    let feb = [
        "0.00", "-100.00", "0.00", "150.00", "50.00", "0.00", "50.00",
    ];
    assert_eq!(figures(&w, "2027-02"), f7(feb));
    w.run_close("2027-02");
    let mar = ["0.00", "0.00", "0.00", "50.00", "50.00", "0.00", "50.00"];
    assert_eq!(figures(&w, "2027-03"), f7(mar));
    w.run_close("2027-03");
    let apr = ["0.00", "0.00", "0.00", "50.00", "0.00", "50.00", "0.00"];
    assert_eq!(figures(&w, "2027-04"), f7(apr));
}

#[test]
fn a_late_refund_is_dated_and_held_as_the_commission_it_reverses() {
    // hold 30: 100 on Jan 1 (matured Jan 31, paid in January), 80 on Jan 20
    // (pending at Jan 31). The refund of the first sale, dated Jan 31,
    // arrives after January closed: February's adjustment of -100 is dated
    // Jan 1, as the commission it reverses, so it is not held. Feb: balance
    // 80 - 100 = -20, the January 80 matured, so -20 matured is written off
    // (adjusted -100 + 20) and nothing is paid: 100 paid in all, not 180.
    let mut w = world(
        &held(30),
        &[
            partner("a", ""),
            sale("s1", "2027-01-01", "500"),
            sale("s2", "2027-01-20", "400"),
        ],
    );
    let jan = ["180.00", "0.00", "0.00", "0.00", "80.00", "100.00", "80.00"];
    assert_eq!(figures(&w, "2027-01"), f7(jan));
    w.run_close("2027-01");
    w.add(&[refund("r1", "2027-01-31", "s1")]);
    let (es, _) = w.draft("2027-02");
    let adj: Vec<&Entry> = es
        .iter()
        .filter(|e| e.kind == EntryKind::Adjustment)
        .collect();
    assert_eq!(adj.len(), 1, "{adj:?}");
    assert_eq!(adj[0].amount.to_string(), "-100.00");
    assert_eq!(
        adj[0].event_day,
        edge::time::Timestamp::parse_date("2027-01-01")
            .unwrap()
            .day()
    );
    let feb = ["0.00", "0.00", "-80.00", "80.00", "0.00", "0.00", "0.00"];
    assert_eq!(figures(&w, "2027-02"), f7(feb));
}

#[test]
fn a_coupon_moved_to_another_partner_pays_the_new_one() {
    // SAVE10 went to zed on Jan 1 and was moved to amy on Nov 1: the edge
    // keeps its created_at and exports the move's updated_at. Whatever the
    // order the two lines are imported in, the newer one holds the coupon
    // (before, two lines with one created_at kept the larger JSON: zed's).
    let line = |partner: &str, updated: &str| {
        format!(
            r#"{{"type":"coupon","code":"SAVE10","program":"p","partner":"{partner}","created_at":"2026-01-01T00:00:00.000Z","updated_at":"{updated}T00:00:00.000Z"}}"#
        )
    };
    let (old, new) = (line("zed", "2026-01-01"), line("amy", "2026-11-01"));
    for lines in [[old.clone(), new.clone()], [new.clone(), old.clone()]] {
        let mut w = world(
            &rules("", "[[programs.rules]]\nevent = \"sale\"\nfixed = \"7\"\n"),
            &[partner("amy", ""), partner("zed", "")],
        );
        w.add(&lines[..1]);
        w.add(&lines[1..]);
        w.add(&[conv(
            "e1",
            "2026-11-05",
            "sale",
            &format!(",\"coupon\":\"SAVE10\"{}", usd("100")),
        )]);
        let (es, _) = w.draft("2026-11");
        assert_eq!(
            amounts(&es, EntryKind::Commission),
            s(&[("amy", "7.00")]),
            "{lines:?}"
        );
    }
}

#[test]
fn a_late_sale_refunded_later_is_never_paid() {
    // hold 90: the Nov 20 sale (100) arrives after November closed and is
    // booked in December as an adjustment dated Nov 20; its refund of Dec
    // 15 nets against it. January reads both back from December: the
    // adjustment still pending (Nov 20 + 90 > Jan 31) and the clawback of
    // the entry it books, so pending 0 and nothing written off; February
    // pays nothing. (Before, the clawback was not matched to the
    // adjustment: January wrote off 100 and February paid it.)
    let mut w = world(&held(90), &[partner("a", "")]);
    w.run_close("2026-11");
    w.add(&[
        sale("s1", "2026-11-20", "500"),
        refund("r1", "2026-12-15", "s1"),
    ]);
    let dec = ["0.00", "-100.00", "100.00", "0.00", "0.00", "0.00", "0.00"];
    assert_eq!(figures(&w, "2026-12"), f7(dec));
    w.run_close("2026-12");
    assert_eq!(figures(&w, "2027-01"), None);
    w.run_close("2027-01");
    assert_eq!(figures(&w, "2027-02"), None);
}

#[test]
fn a_refund_dated_before_its_sale_nets_in_later_periods_too() {
    // hold 40: the sale of Jan 20 (100) and its refund dated Jan 19 (clock
    // skew between shop and network). January nets them. February reads
    // them back: the commission is pending (Jan 20 > Feb 28 - 40 = Jan 19)
    // and so is its clawback, though its own day is not: pending 0.
    let mut w = world(
        &held(40),
        &[
            partner("a", ""),
            sale("s1", "2027-01-20", "500"),
            refund("r1", "2027-01-19", "s1"),
        ],
    );
    let jan = ["100.00", "-100.00", "0.00", "0.00", "0.00", "0.00", "0.00"];
    assert_eq!(figures(&w, "2027-01"), f7(jan));
    w.run_close("2027-01");
    assert_eq!(figures(&w, "2027-02"), None);
    w.run_close("2027-02");
    assert_eq!(figures(&w, "2027-03"), None);
}

#[test]
fn a_balance_is_never_paid_in_another_currency() {
    // 20% of 100 EUR = 20.00 EUR, below the 50.00 minimum: carried into
    // December. Run December with the program's currency changed to USD, or
    // with the program gone, and the 20.00 would be paid as 20.00 USD: the
    // run stops (exit 1) and names the balance; with the program as it was,
    // it runs.
    let eur = "currency = \"USD\"\nfx = \"fx.csv\"\n[payout]\nminimum = \"50\"\n[[programs]]\nid = \"p\"\nmodel = \"affiliate\"\ncurrency = \"EUR\"\n\
               [[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n";
    let sale = conv(
        "s1",
        "2026-11-05",
        "sale",
        &format!(
            r#"{},"amount":"100","currency":"EUR""#,
            click("a", "2026-11-05")
        ),
    );
    let mut w = world(eur, &[partner("a", ""), sale]);
    w.run_close("2026-11");
    let dec = Period::parse("2026-12").unwrap();
    let path = w._dir.path().join("programs.toml");
    let cfg = |text: &str| config::parse(&path, text).unwrap();
    for (text, says) in [
        (
            eur.replace("currency = \"EUR\"\n", ""),
            "the program now pays in USD",
        ),
        (
            eur.replace("id = \"p\"", "id = \"q\""),
            "the program is not in it",
        ),
    ] {
        let e = run(&mut w.store, &cfg(&text), dec).unwrap_err();
        assert_eq!(e.exit_code(), 1, "{e}");
        let m = e.to_string();
        assert!(
            m.contains("programs.toml: partner a carries 20.00 EUR in program p from 2026-11")
                && m.contains(says),
            "{m}"
        );
    }
    run(&mut w.store, &cfg(eur), dec).unwrap();
}

/// A technology program paying 20% of sales with a minimum of 100 a
/// period, `hold_days` and no payout minimum.
fn technology(hold: u32) -> String {
    held(hold).replace(
        "model = \"affiliate\"",
        "model = \"technology\"\nminimum_per_period = \"100\"",
    )
}

#[test]
fn a_restated_top_up_waits_with_the_late_commission_that_lowered_it() {
    // technology program, minimum 100 a period. November: 20% of 100 = 20
    // on Nov 10, topped up by 80 (a top-up is never held: paid in
    // November). A sale of 150 on Nov 20 arrives after November closed: 30
    // more earned, so the top-up is restated as 50. December books +30
    // (dated Nov 20) and -30 restating the top-up, dated Nov 20 as well, so
    // the two net while held and mature together; 100 is paid in all.
    let nov20 = edge::time::Timestamp::parse_date("2026-11-20")
        .unwrap()
        .day();
    // hold 40: the Nov 10 commission matures Dec 20, the late pair Dec 30.
    // December: carried in 20, pending 0, payable 20. (Dated Nov 30 as the
    // top-up, the -30 was pending until Jan 9: December paid 50, 130 in
    // all, and January wrote the -30 off.)
    // hold 75: the Nov 10 commission matures Jan 24, the pair Feb 3.
    // December: pending 20 + 30 - 30, nothing payable; January pays 20;
    // February nets the pair. (Never held, the -30 would take December's
    // matured balance to -30, written off, and February would pay the 30.)
    let cases = [
        (
            40,
            ["0.00", "0.00", "0.00", "20.00", "0.00", "20.00", "0.00"],
            None,
        ),
        (
            75,
            ["0.00", "0.00", "0.00", "20.00", "20.00", "0.00", "20.00"],
            Some(["0.00", "0.00", "0.00", "20.00", "0.00", "20.00", "0.00"]),
        ),
    ];
    for (hold, dec, jan) in cases {
        let mut w = world(
            &technology(hold),
            &[partner("a", ""), sale("s1", "2026-11-10", "100")],
        );
        let nov = ["100.00", "0.00", "0.00", "0.00", "20.00", "80.00", "20.00"];
        assert_eq!(figures(&w, "2026-11"), f7(nov), "hold {hold}");
        w.run_close("2026-11");
        w.add(&[sale("s2", "2026-11-20", "150")]);
        let (es, _) = w.draft("2026-12");
        let adj: Vec<(String, i64)> = es
            .iter()
            .filter(|e| e.kind == EntryKind::Adjustment)
            .map(|e| (e.amount.to_string(), e.event_day))
            .collect();
        assert_eq!(
            adj.len(),
            2,
            "the late commission and the restated top-up: {adj:?}"
        );
        assert!(adj.contains(&("30.00".into(), nov20)), "{adj:?}");
        assert!(adj.contains(&("-30.00".into(), nov20)), "{adj:?}");
        assert_eq!(figures(&w, "2026-12"), f7(dec), "hold {hold}");
        w.run_close("2026-12");
        assert_eq!(
            figures(&w, "2027-01"),
            jan.map(|j| j.map(str::to_string)),
            "hold {hold}"
        );
        w.run_close("2027-01");
        let feb = figures(&w, "2027-02");
        assert!(
            feb.as_ref()
                .is_none_or(|f| f[5] == "0.00" && f[2] == "0.00"),
            "nothing more paid or written off: {feb:?}"
        );
    }
}

#[test]
fn a_refund_dated_in_the_month_before_its_sale_is_never_paid() {
    // hold 45: the sale of Dec 1 (20% of 500 = 100) and its refund dated
    // Nov 30 (clock skew across the month's end), both imported before
    // November is run. November's history ends on Nov 30: the refund
    // reverses nothing there. It is booked on its sale's date, Dec 1, so
    // December nets the clawback against the commission while both are
    // pending (until Jan 15). Nothing is paid or written off, then or
    // later. (Before, the clawback belonged to November, already closed
    // without it and with no late fact to restate it: it was never booked,
    // and January paid the refunded 100.)
    let mut w = world(
        &held(45),
        &[
            partner("a", ""),
            sale("s1", "2026-12-01", "500"),
            refund("r1", "2026-11-30", "s1"),
        ],
    );
    assert_eq!(figures(&w, "2026-11"), None);
    w.run_close("2026-11");
    let dec = ["100.00", "-100.00", "0.00", "0.00", "0.00", "0.00", "0.00"];
    assert_eq!(figures(&w, "2026-12"), f7(dec));
    w.run_close("2026-12");
    assert_eq!(figures(&w, "2027-01"), None);
    w.run_close("2027-01");
    assert_eq!(figures(&w, "2027-02"), None);
}

#[test]
fn a_restated_top_up_is_split_over_the_late_commissions_that_lowered_it() {
    // minimum 100, hold 40. November: 20 on Nov 10, topped up by 80, paid.
    // After the close, sales of Nov 2 (150: +30) and Nov 25 (50: +10)
    // arrive: the top-up is restated as 40 (-40). It is split earliest
    // first: -30 dated Nov 2 and -10 dated Nov 25, each with the commission
    // it offsets. December (matured up to Nov 21): the Nov 2 pair nets
    // matured, the Nov 25 pair nets pending, the Nov 10 commission matured:
    // payable 20, 100 in all. (Dated Nov 25 as the later commission, the
    // whole -40 waited while the Nov 2 +30 matured: December paid 50 and
    // January wrote off -30.)
    let mut w = world(
        &technology(40),
        &[partner("a", ""), sale("s1", "2026-11-10", "100")],
    );
    w.run_close("2026-11");
    w.add(&[
        sale("s2", "2026-11-02", "150"),
        sale("s3", "2026-11-25", "50"),
    ]);
    let (es, _) = w.draft("2026-12");
    let day = |d: &str| edge::time::Timestamp::parse_date(d).unwrap().day();
    let mut adj: Vec<(i64, String)> = es
        .iter()
        .filter(|e| e.kind == EntryKind::Adjustment)
        .map(|e| (e.event_day, e.amount.to_string()))
        .collect();
    adj.sort();
    let want = [
        (day("2026-11-02"), "-30.00"),
        (day("2026-11-02"), "30.00"),
        (day("2026-11-25"), "-10.00"),
        (day("2026-11-25"), "10.00"),
    ];
    assert_eq!(adj, want.map(|(d, a)| (d, a.to_string())));
    let dec = ["0.00", "0.00", "0.00", "20.00", "0.00", "20.00", "0.00"];
    assert_eq!(figures(&w, "2026-12"), f7(dec));
    w.run_close("2026-12");
    assert_eq!(
        figures(&w, "2027-01"),
        None,
        "nothing left to pay or write off"
    );
}

/// A clawback of a sale of a closed period reverses what that period
/// booked and paid, not what the sale earns under today's registry and
/// programs.toml. Nov: a (silver, 20%) and b (20%) each sell 500: 100.00
/// each, paid, closed. Dec: a is promoted to gold (30%), the default rate
/// becomes 25%, and both sales are refunded in full: each clawback is
/// -100.00 (before: -150.00 and -125.00), under the November entry's id;
/// December's own sales earn at the new rates (300.00, 250.00).
#[test]
fn a_clawback_reverses_what_the_closed_period_booked() {
    let nov = "[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n\
               [[programs.rules]]\nevent = \"sale\"\ntier = \"gold\"\npercent = \"30\"\n";
    let mut w = world(
        &rules("", nov),
        &[
            partner(
                "a",
                r#","tier":"silver","updated_at":"2026-01-01T00:00:00Z""#,
            ),
            partner("b", r#","tier":"silver""#),
            sale_of("s1", "a", "2026-11-05", "500"),
            sale_of("s2", "b", "2026-11-05", "500"),
        ],
    );
    let (nov_entries, _) = w.draft("2026-11");
    w.run_close("2026-11");
    let booked_a = nov_entries
        .iter()
        .find(|e| e.partner == "a" && e.kind == EntryKind::Commission)
        .unwrap()
        .id
        .clone();
    w.add(&[
        partner("a", r#","tier":"gold","updated_at":"2026-12-01T00:00:00Z""#),
        refund("r1", "2026-12-05", "s1"),
        refund("r2", "2026-12-05", "s2"),
        sale_of("s3", "a", "2026-12-06", "1000"),
        sale_of("s4", "b", "2026-12-06", "1000"),
    ]);
    w.cfg = config::parse(
        &w._dir.path().join("programs.toml"),
        &rules("", &nov.replacen("percent = \"20\"", "percent = \"25\"", 1)),
    )
    .unwrap();
    let (dec, _) = w.draft("2026-12");
    assert_eq!(
        amounts(&dec, EntryKind::Clawback),
        s(&[("a", "-100.00"), ("b", "-100.00")])
    );
    assert_eq!(
        amounts(&dec, EntryKind::Commission),
        s(&[("a", "300.00"), ("b", "250.00")])
    );
    let a = dec
        .iter()
        .find(|e| e.partner == "a" && e.kind == EntryKind::Clawback)
        .unwrap();
    assert_eq!(a.adjusts, booked_a);
}

fn sale_of(id: &str, partner: &str, day: &str, amount: &str) -> String {
    conv(
        id,
        day,
        "sale",
        &format!("{}{}", click(partner, day), usd(amount)),
    )
}

/// The override of a refunded sale is reversed from the parent it was
/// paid to, though the registry now names another: Nov, a (parent m1)
/// sells 500: a 100.00, m1 10.00, closed. Dec: a's parent is m2, the sale
/// is refunded in full: a -100.00, m1 -10.00, m2 nothing (before, m2 paid
/// back m1's override).
#[test]
fn an_override_clawback_goes_to_the_parent_that_was_paid() {
    let r = "[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n";
    let mut w = world(
        &rules("overrides = [\"10\"]", r),
        &[
            partner("m1", ""),
            partner("m2", ""),
            partner("a", r#","parent":"m1","updated_at":"2026-01-01T00:00:00Z""#),
            sale_of("s1", "a", "2026-11-05", "500"),
        ],
    );
    w.run_close("2026-11");
    w.add(&[
        partner("a", r#","parent":"m2","updated_at":"2026-12-01T00:00:00Z""#),
        refund("r1", "2026-12-05", "s1"),
    ]);
    let (dec, _) = w.draft("2026-12");
    assert_eq!(
        amounts(&dec, EntryKind::Clawback),
        s(&[("a", "-100.00"), ("m1", "-10.00")])
    );
}

/// A coupon moved to another partner: the refund of a sale the old owner
/// was paid for is reversed from the old owner, not the new one.
#[test]
fn a_coupon_moved_leaves_the_clawback_with_the_partner_paid() {
    let r = "[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n";
    let coupon = |to: &str, at: &str| {
        format!(
            r#"{{"type":"coupon","code":"SAVE10","partner":"{to}","program":"p","created_at":"2026-01-01T00:00:00Z","updated_at":"{at}T00:00:00Z"}}"#
        )
    };
    let with_coupon = |id: &str, day: &str, amount: &str| {
        conv(
            id,
            day,
            "sale",
            &format!(
                ",\"customer\":\"c_{id}\",\"coupon\":\"SAVE10\"{}",
                usd(amount)
            ),
        )
    };
    let mut w = world(
        &rules("", r),
        &[
            partner("zed", ""),
            partner("amy", ""),
            coupon("zed", "2026-01-01"),
            with_coupon("s1", "2026-11-05", "500"),
        ],
    );
    w.run_close("2026-11");
    w.add(&[
        coupon("amy", "2026-12-01"),
        refund("r1", "2026-12-05", "s1"),
        with_coupon("s2", "2026-12-06", "1000"),
    ]);
    let (dec, _) = w.draft("2026-12");
    assert_eq!(amounts(&dec, EntryKind::Clawback), s(&[("zed", "-100.00")]));
    assert_eq!(
        amounts(&dec, EntryKind::Commission),
        s(&[("amy", "200.00")])
    );
}

/// A refund of a closed-period sale whose commission late facts restate in
/// the same run reverses what was booked plus the restatement. Nov: a
/// retroactive count ladder (5.00 each from 0, 10.00 each above 2), two
/// signups booked at 5.00, closed. Dec: a third November signup arrives
/// late (the step is 10.00 for all three: adjustments +5, +5, +10) and the
/// first signup is refunded: -10.00, all of it.
#[test]
fn a_refund_reverses_the_late_restatement_of_its_sale_too() {
    let r = "[[programs.rules]]\nevent = \"signup\"\nladder = { metric = \"count\", mode = \"retroactive\", steps = [{ from = \"0\", fixed = \"5\" }, { from = \"2\", fixed = \"10\" }] }\n";
    let signup = |id: &str, day: &str| conv(id, day, "signup", &click("a", day));
    let mut w = world(
        &rules("", r),
        &[
            partner("a", ""),
            signup("u1", "2026-11-02"),
            signup("u2", "2026-11-03"),
        ],
    );
    assert_eq!(
        amounts(&w.draft("2026-11").0, EntryKind::Commission),
        s(&[("a", "5.00"), ("a", "5.00")])
    );
    w.run_close("2026-11");
    w.add(&[signup("u3", "2026-11-04"), refund("r1", "2026-12-05", "u1")]);
    let (dec, _) = w.draft("2026-12");
    assert_eq!(
        amounts(&dec, EntryKind::Adjustment),
        s(&[("a", "10.00"), ("a", "5.00"), ("a", "5.00")])
    );
    assert_eq!(amounts(&dec, EntryKind::Clawback), s(&[("a", "-10.00")]));
}

/// a sale the closed period booked nothing on (no rule matched
/// then: min_amount 1000) whose rule today pays it (min_amount dropped):
/// its refund must reverse what was booked, nothing.
#[test]
fn a_refund_of_a_sale_booked_nothing_reverses_nothing() {
    let nov = "[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\nmin_amount = \"1000\"\n";
    let mut w = world(
        &rules("", nov),
        &[partner("a", ""), sale_of("s1", "a", "2026-11-05", "500")],
    );
    let (n, _) = w.draft("2026-11");
    assert_eq!(amounts(&n, EntryKind::Commission), s(&[]));
    w.run_close("2026-11");
    w.add(&[refund("r1", "2026-12-05", "s1")]);
    w.cfg = config::parse(
        &w._dir.path().join("programs.toml"),
        &rules(
            "",
            "[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n",
        ),
    )
    .unwrap();
    let (dec, _) = w.draft("2026-12");
    assert_eq!(amounts(&dec, EntryKind::Clawback), s(&[]));
}

/// the same with the partner's status: pending (no history) when
/// November closed and rejected its sale; a corrected registry line says
/// approved. The refund must not claw back a commission never paid.
#[test]
fn a_refund_of_a_sale_rejected_then_reverses_nothing() {
    let r = "[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n";
    let pend = r#"{"type":"partner","id":"a","program":"p","status":"applied","updated_at":"2026-01-01T00:00:00Z"}"#.to_string();
    let appr = r#"{"type":"partner","id":"a","program":"p","status":"approved","updated_at":"2026-12-01T00:00:00Z"}"#.to_string();
    let mut w = world(
        &rules("", r),
        &[pend, sale_of("s1", "a", "2026-11-05", "500")],
    );
    let (n, _) = w.draft("2026-11");
    assert_eq!(amounts(&n, EntryKind::Commission), s(&[]));
    w.run_close("2026-11");
    w.add(&[
        appr,
        refund("r1", "2026-12-05", "s1"),
        sale_of("s2", "a", "2026-12-06", "500"),
    ]);
    let (dec, st) = w.draft("2026-12");
    // December's own sale pays 100.00; nothing was paid on s1
    assert_eq!(st[0].payable.to_string(), "100.00");
    assert_eq!(amounts(&dec, EntryKind::Clawback), s(&[]));
}

/// erasing a customer keeps its self-referrals rejected, but it
/// must not reject its conversions that were no self-referral: s1 carries
/// partner a's email hash (rejected), s2 carries none (paid 100.00). After
/// the erasure the rerun of the open period must pay s2 as before.
#[test]
fn erasing_a_customer_rejects_only_its_self_referrals() {
    let h = "a".repeat(64);
    let r = "[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n";
    let s_with = |id: &str, day: &str, extra: &str| {
        conv(
            id,
            day,
            "sale",
            &format!(
                ",\"customer\":\"c1\"{extra}{}{}",
                click("a", day),
                usd("500")
            ),
        )
    };
    let mut w = world(
        &rules("", r),
        &[
            partner("a", &format!(",\"email_hash\":\"{h}\"")),
            s_with("s1", "2026-11-05", &format!(",\"email_hash\":\"{h}\"")),
            s_with("s2", "2026-11-06", ""),
        ],
    );
    let before = amounts(&w.draft("2026-11").0, EntryKind::Commission);
    assert_eq!(before, s(&[("a", "100.00")]));
    // the words say which test rejected s1: its email hash (not the
    // customer id, which is c1), and never show the hash
    let words = |w: &World| {
        w.draft("2026-11")
            .0
            .into_iter()
            .find(|e| e.kind == EntryKind::Rejected)
            .map(|e| e.calc)
            .unwrap()
    };
    let said = words(&w);
    assert!(
        said.contains("the conversion's email hash is the partner's (self-referral)")
            && !said.contains(&h),
        "{said}"
    );
    settlement::erase::erase(
        &mut w.store,
        "c1",
        &format!("erased:{}", "0".repeat(32)),
        "dpo",
        "2026-11-20T00:00:00Z",
    )
    .unwrap();
    let after = amounts(&w.draft("2026-11").0, EntryKind::Commission);
    assert_eq!(after, before);
    let said = words(&w);
    assert!(
        said.contains("self-referral") && !said.contains(&h),
        "{said}"
    );
}

/// the `same` shortcut in as_booked ignores recomputed entries
/// of 0: November booked 100.00 (20%), the rate is 0% today; the refund
/// must reverse the 100.00 paid.
#[test]
fn a_rate_cut_to_zero_still_reverses_what_was_booked() {
    let r = |p: &str| format!("[[programs.rules]]\nevent = \"sale\"\npercent = \"{p}\"\n");
    let mut w = world(
        &rules("", &r("20")),
        &[partner("a", ""), sale_of("s1", "a", "2026-11-05", "500")],
    );
    w.run_close("2026-11");
    w.add(&[refund("r1", "2026-12-05", "s1")]);
    w.cfg = config::parse(&w._dir.path().join("programs.toml"), &rules("", &r("0"))).unwrap();
    let (dec, _) = w.draft("2026-12");
    assert_eq!(amounts(&dec, EntryKind::Clawback), s(&[("a", "-100.00")]));
}

/// a reseller's invoice booked at 20% discount in a closed
/// November (owes 400.00 of 500.00); the discount is 30% today. The full
/// refund's credit note must cancel what was invoiced: -400.00, not -350.00.
#[test]
fn a_reseller_credit_note_cancels_the_invoice_booked() {
    let head = "currency = \"USD\"\n[[programs]]\nid = \"p\"\nmodel = \"reseller\"\n";
    let r20 = format!("{head}[[programs.rules]]\nevent = \"sale\"\ndiscount = \"20\"\n");
    let mut w = world(
        &r20,
        &[partner("a", ""), sale_of("s1", "a", "2026-11-05", "500")],
    );
    let (d, _) = compute_draft(&w.store, &w.cfg, Period::parse("2026-11").unwrap()).unwrap();
    assert_eq!(d.invoices[0].amount_due.to_string(), "400.00");
    w.run_close("2026-11");
    w.add(&[refund("r1", "2026-12-05", "s1")]);
    w.cfg = config::parse(
        &w._dir.path().join("programs.toml"),
        &r20.replace("\"20\"", "\"30\""),
    )
    .unwrap();
    let (d, _) = compute_draft(&w.store, &w.cfg, Period::parse("2026-12").unwrap()).unwrap();
    let due: Vec<String> = d
        .invoices
        .iter()
        .map(|l| l.amount_due.to_string())
        .collect();
    assert_eq!(due, ["-400.00"]);
}

/// erase keeps an email hash on the erased customer's
/// conversion when it is *any* partner's, also a partner of another
/// program, who can never be attributed that conversion (a partner id
/// belongs to one program): the hash is kept for no self-referral test.
#[test]
fn erase_drops_a_hash_no_partner_of_the_program_has() {
    let h = "b".repeat(64);
    let r = "[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n";
    let mut w = world(
        &rules("", r),
        &[
            partner("a", ""),
            format!(
                r#"{{"type":"partner","id":"z","program":"q","status":"approved","email_hash":"{h}"}}"#
            ),
            conv(
                "s1",
                "2026-11-05",
                "sale",
                &format!(
                    ",\"customer\":\"c1\",\"email_hash\":\"{h}\"{}{}",
                    click("a", "2026-11-05"),
                    usd("500")
                ),
            ),
        ],
    );
    settlement::erase::erase(
        &mut w.store,
        "c1",
        &format!("erased:{}", "0".repeat(32)),
        "dpo",
        "2026-11-20T00:00:00Z",
    )
    .unwrap();
    let f = w.store.load_facts(i64::MAX, &["p"]).unwrap();
    let c = f.convs.iter().find(|c| f.id(c) == "s1").unwrap();
    let kept = f.ex(c).email_hash;
    assert!(
        kept == u32::MAX || f.syms.str(kept).is_empty(),
        "kept {:?}",
        f.syms.str(kept)
    );
}

/// A reseller's invoice line that late facts move to another partner is
/// cancelled for the first: lifetime lock, customer c1's November sale of
/// 500 (20% discount: 400.00 due) invoiced to a, closed; in December an
/// October conversion of c1 through b arrives late, so c1 was b's all
/// along: December's late lines credit a -400.00 and invoice b 400.00 (and
/// b's October sale, 100 -> 80.00). Before, a's line was never cancelled:
/// both partners owed the same sale.
#[test]
fn a_reseller_line_moved_by_late_facts_is_cancelled_for_the_first_partner() {
    let head =
        "currency = \"USD\"\n[[programs]]\nid = \"p\"\nmodel = \"reseller\"\nlifetime = true\n";
    let cfg = format!("{head}[[programs.rules]]\nevent = \"sale\"\ndiscount = \"20\"\n");
    let bought = |id: &str, partner: &str, day: &str, amount: &str| {
        conv(
            id,
            day,
            "sale",
            &format!(",\"customer\":\"c1\"{}{}", click(partner, day), usd(amount)),
        )
    };
    let mut w = world(
        &cfg,
        &[
            partner("a", ""),
            partner("b", ""),
            bought("s1", "a", "2026-11-05", "500"),
        ],
    );
    w.run_close("2026-10");
    w.run_close("2026-11");
    w.add(&[bought("s0", "b", "2026-10-20", "100")]);
    let (d, _) = compute_draft(&w.store, &w.cfg, Period::parse("2026-12").unwrap()).unwrap();
    let mut due: Vec<(String, String, String)> = d
        .invoices
        .iter()
        .map(|l| {
            (
                l.partner.clone(),
                l.source.clone(),
                l.amount_due.to_string(),
            )
        })
        .collect();
    due.sort();
    assert_eq!(
        due,
        [
            ("a".to_string(), "s1".to_string(), "-400.00".to_string()),
            ("b".to_string(), "s0".to_string(), "80.00".to_string()),
            ("b".to_string(), "s1".to_string(), "400.00".to_string()),
        ]
    );
    // and a refund of that sale credits the partner that owes it now
    w.run_close("2026-12");
    w.add(&[refund("r1", "2027-01-05", "s1")]);
    let (d, _) = compute_draft(&w.store, &w.cfg, Period::parse("2027-01").unwrap()).unwrap();
    let credits: Vec<(String, String)> = d
        .invoices
        .iter()
        .map(|l| (l.partner.clone(), l.amount_due.to_string()))
        .collect();
    assert_eq!(credits, [("b".to_string(), "-400.00".to_string())]);
}

/// A conversion line with its own `id` and `txn_id` (`conv` uses one for
/// both).
fn conv_txn(id: &str, txn: &str, ts: &str, event: &str, ev: &str) -> String {
    format!(
        r#"{{"type":"conversion","id":"{id}","ts":"{ts}","program":"p","event":"{event}","txn_id":"{txn}"{ev}}}"#
    )
}

/// One sale brought in under two event ids (the edge's postback and a
/// backfill file: same program, event and txn_id) is paid once, whatever
/// the import order: the first in time stands (s1 at 12:00, though the
/// backfill's id s0 sorts first). A lead sharing the order id is another
/// event and is paid. A partial refund brought in twice (r1, r2: one
/// txn_id) reverses 20% of 100.00 once, not twice.
#[test]
fn one_sale_under_two_event_ids_is_paid_once() {
    let r = "[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n\
             [[programs.rules]]\nevent = \"lead\"\nfixed = \"5\"\n";
    let edge = conv_txn(
        "s1",
        "T1",
        "2026-11-05T12:00:00.000Z",
        "sale",
        &format!("{}{}", click("a", "2026-11-05"), usd("500")),
    );
    let backfill = conv_txn(
        "s0",
        "T1",
        "2026-11-05T12:00:07.000Z",
        "sale",
        &format!("{}{}", click("a", "2026-11-05"), usd("500")),
    );
    let lead = conv_txn(
        "l1",
        "T1",
        "2026-11-05T11:30:00.000Z",
        "lead",
        &click("a", "2026-11-05"),
    );
    let refund_of = |id: &str| {
        conv_txn(
            id,
            "R1",
            "2026-11-20T09:00:00.000Z",
            "refund",
            &format!(r#","original_txn_id":"T1"{}"#, usd("100")),
        )
    };
    let lines = [
        partner("a", ""),
        edge,
        backfill,
        lead,
        refund_of("r1"),
        refund_of("r2"),
    ];
    let mut reversed = lines.to_vec();
    reversed[1..].reverse();
    let mut seen = Vec::new();
    for lines in [lines.to_vec(), reversed] {
        let w = world(&rules("", r), &lines);
        let (n, st) = w.draft("2026-11");
        assert_eq!(
            amounts(&n, EntryKind::Commission),
            s(&[("a", "100.00"), ("a", "5.00")])
        );
        let sale = n
            .iter()
            .find(|e| e.kind == EntryKind::Commission && e.amount.to_string() == "100.00")
            .unwrap();
        assert_eq!(sale.sources, ["s1"]);
        assert_eq!(amounts(&n, EntryKind::Clawback), s(&[("a", "-20.00")]));
        // 100.00 + 5.00 - 20.00
        assert_eq!(st[0].payable.to_string(), "85.00");
        seen.push(n);
    }
    assert_eq!(seen[0], seen[1]);
}

/// Through the CLI's store: the duplicate is counted in the stats (and so
/// in report.html), and a backfill brought in after November closed books
/// nothing in December.
#[test]
fn a_late_duplicate_of_a_closed_sale_books_nothing() {
    let r = "[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n";
    let sale_line = |id: &str, ts: &str| {
        conv_txn(
            id,
            "T1",
            ts,
            "sale",
            &format!("{}{}", click("a", "2026-11-05"), usd("500")),
        )
    };
    let mut w = world(
        &rules("", r),
        &[
            partner("a", ""),
            sale_line("s1", "2026-11-05T12:00:00.000Z"),
        ],
    );
    w.run_close("2026-11");
    w.add(&[
        sale_line("s9", "2026-11-05T12:00:03.000Z"),
        sale_line("s8", "2026-11-05T12:00:05.000Z"),
    ]);
    let (dec, st) = w.draft("2026-12");
    assert_eq!(amounts(&dec, EntryKind::Adjustment), s(&[]));
    assert!(st.iter().all(|s| s.payable.is_zero()), "{st:?}");
    // one at the same instant with a lower id stands from now on: it
    // restates the sale under its own id, and the two adjustments net to
    // nothing
    w.add(&[sale_line("s0", "2026-11-05T12:00:00.000Z")]);
    let (dec, st) = w.draft("2026-12");
    assert_eq!(
        amounts(&dec, EntryKind::Adjustment),
        s(&[("a", "-100.00"), ("a", "100.00")])
    );
    assert!(st.iter().all(|s| s.payable.is_zero()), "{st:?}");
    run(&mut w.store, &w.cfg, Period::parse("2026-12").unwrap()).unwrap();
    // November's draft was closed before the backfill came: it counted none
    let dups = |p: &str| settlement::run::duplicates(&w.store, Period::parse(p).unwrap()).unwrap();
    assert_eq!(dups("2026-11"), 0);
    let mut w2 = world(
        &rules("", r),
        &[
            partner("a", ""),
            sale_line("s1", "2026-11-05T12:00:00.000Z"),
            sale_line("s9", "2026-11-05T12:00:03.000Z"),
        ],
    );
    run(&mut w2.store, &w2.cfg, Period::parse("2026-11").unwrap()).unwrap();
    assert_eq!(
        settlement::run::duplicates(&w2.store, Period::parse("2026-11").unwrap()).unwrap(),
        1
    );
    let _ = &mut w2;
}

/// An MDF claim pays a partner of its program approved on the claim's
/// date, as a conversion does; the others are rejected entries with the
/// reason (before, each was paid: an id in no registry, a partner
/// suspended since October, a partner of another program).
#[test]
fn an_mdf_claim_is_paid_only_to_an_approved_partner_of_its_program() {
    let r = "[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n\
             [[programs]]\nid = \"q\"\nmodel = \"affiliate\"\n";
    let mdf = |id: &str, partner: &str, amount: &str| {
        format!(
            r#"{{"id":"{id}","type":"mdf","ts":"2026-11-10T12:00:00.000Z","program":"p","partner":"{partner}","amount":"{amount}","currency":"USD"}}"#
        )
    };
    let suspended = r#"{"type":"partner","id":"su","program":"p","status":"suspended","history":[{"status":"approved","at":"2026-01-01T00:00:00Z"},{"status":"suspended","at":"2026-10-01T00:00:00Z"}]}"#;
    let other = r#"{"type":"partner","id":"o","program":"q","status":"approved"}"#;
    let w = world(
        &rules("", r),
        &[
            partner("a", ""),
            suspended.to_string(),
            other.to_string(),
            mdf("m1", "a", "50"),
            mdf("m2", "su", "70"),
            mdf("m3", "nobody", "80"),
            mdf("m4", "o", "60"),
        ],
    );
    let (n, st) = w.draft("2026-11");
    assert_eq!(amounts(&n, EntryKind::Mdf), s(&[("a", "50.00")]));
    let mut rejected: Vec<(String, String)> = n
        .iter()
        .filter(|e| e.kind == EntryKind::Rejected)
        .map(|e| (e.partner.clone(), e.reason.clone()))
        .collect();
    rejected.sort();
    assert_eq!(
        rejected,
        s(&[
            ("nobody", "unknown_partner"),
            ("o", "other_program"),
            ("su", "partner_suspended"),
        ])
    );
    let paid: Vec<(&str, String)> = st
        .iter()
        .filter(|s| !s.payable.is_zero())
        .map(|s| (s.partner.as_str(), s.payable.to_string()))
        .collect();
    assert_eq!(paid, [("a", "50.00".to_string())]);
}

/// A program whose `currency` changed after its balances were paid (JPY to
/// USD): a refund of a sale booked in JPY reverses what was booked,
/// converted at the sale's date (1000 JPY x 0.0067 = 6.70 USD), not the
/// same number in the new currency (-1000.00 USD before). A reseller's
/// credit note the same: 400.00 EUR booked x 1.20 = 480.00 USD.
#[test]
fn a_clawback_after_a_currency_change_converts_what_was_booked() {
    let jpy_sale = conv(
        "s1",
        "2026-11-05",
        "sale",
        &format!(
            r#"{},"amount":"10000","currency":"JPY""#,
            click("a", "2026-11-05")
        ),
    );
    let r = "[[programs.rules]]\nevent = \"sale\"\npercent = \"10\"\n";
    let mut w = world(
        &format!("fx = \"fx.csv\"\n{}", rules("currency = \"JPY\"\n", r)),
        &[partner("a", ""), jpy_sale],
    );
    let (n, _) = w.draft("2026-11");
    assert_eq!(amounts(&n, EntryKind::Commission), s(&[("a", "1000")]));
    w.run_close("2026-11");
    w.add(&[refund("r1", "2026-12-05", "s1")]);
    let path = w._dir.path().join("programs.toml");
    w.cfg = config::parse(&path, &format!("fx = \"fx.csv\"\n{}", rules("", r))).unwrap();
    let (dec, _) = w.draft("2026-12");
    assert_eq!(amounts(&dec, EntryKind::Clawback), s(&[("a", "-6.70")]));

    let head =
        "currency = \"USD\"\nfx = \"fx.csv\"\n[[programs]]\nid = \"p\"\nmodel = \"reseller\"\n";
    let d20 = "[[programs.rules]]\nevent = \"sale\"\ndiscount = \"20\"\n";
    let eur_sale = conv(
        "s1",
        "2026-11-05",
        "sale",
        &format!(
            r#"{},"amount":"500","currency":"EUR""#,
            click("a", "2026-11-05")
        ),
    );
    let mut w = world(
        &format!("{}currency = \"EUR\"\n{d20}", head),
        &[partner("a", ""), eur_sale],
    );
    w.run_close("2026-11");
    w.add(&[refund("r1", "2026-12-05", "s1")]);
    w.cfg = config::parse(&path, &format!("{head}{d20}")).unwrap();
    let (d, _) = compute_draft(&w.store, &w.cfg, Period::parse("2026-12").unwrap()).unwrap();
    let due: Vec<(String, String)> = d
        .invoices
        .iter()
        .map(|l| (l.amount_due.to_string(), l.currency.code().to_string()))
        .collect();
    assert_eq!(due, [("-480.00".to_string(), "USD".to_string())]);
}

/// A backfill of the order, stamped with the order's time (before the
/// edge's record) and carrying no click, partner or coupon, never stands
/// for the edge's attributed sale: in the open period the sale is paid
/// once, to a; arriving after the close it books nothing (before, it stood
/// and took the sale from a: nothing paid, or -20.00 as a late fact).
#[test]
fn a_bare_backfill_copy_never_displaces_the_attributed_sale() {
    let r = "[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n";
    let edge = conv_txn(
        "s1",
        "T1",
        "2026-11-05T12:00:00.000Z",
        "sale",
        &format!("{}{}", click("a", "2026-11-05"), usd("100")),
    );
    let backfill = conv_txn(
        "bf-T1",
        "T1",
        "2026-11-05T11:59:58.000Z",
        "sale",
        &format!(r#","customer":"c1"{}"#, usd("100")),
    );
    let w = world(
        &rules("", r),
        &[partner("a", ""), edge.clone(), backfill.clone()],
    );
    assert_eq!(
        amounts(&w.draft("2026-11").0, EntryKind::Commission),
        s(&[("a", "20.00")])
    );
    let mut w = world(&rules("", r), &[partner("a", ""), edge]);
    w.run_close("2026-11");
    w.add(&[backfill]);
    let (dec, st) = w.draft("2026-12");
    assert!(dec.is_empty(), "{dec:?}");
    assert!(st.is_empty(), "{st:?}");
}

/// review21 H2: a pixel (which anyone can fire) and the merchant's
/// authenticated postback of one order (same program, event and txn_id),
/// neither with a click, partner or coupon: the postback's copy stands,
/// whatever their times. Here its customer is a's for life, so its 250.00
/// pays a 50.00; before, the earlier pixel's copy (0.01, no customer)
/// stood and nothing was paid.
#[test]
fn a_pixel_copy_never_displaces_the_authenticated_sale() {
    let r = "[[programs.rules]]\nevent = \"signup\"\nfixed = \"1.00\"\n\
             [[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n";
    let signup = conv_txn(
        "su",
        "SU-1",
        "2026-11-02T12:00:00.000Z",
        "signup",
        &format!(r#"{},"customer":"c1""#, click("a", "2026-11-02")),
    );
    let pixel = conv_txn(
        "px",
        "ORDER-1",
        "2026-11-05T11:00:00.000Z",
        "sale",
        &format!(r#"{},"source":"pixel""#, usd("0.01")),
    );
    let postback = conv_txn(
        "pb",
        "ORDER-1",
        "2026-11-05T12:00:00.000Z",
        "sale",
        &format!(r#"{},"customer":"c1","source":"postback""#, usd("250.00")),
    );
    for lines in [
        [signup.clone(), pixel.clone(), postback.clone()],
        [signup.clone(), postback.clone(), pixel.clone()],
    ] {
        let mut all = vec![partner("a", "")];
        all.extend(lines);
        let w = world(&rules("lifetime = true\n", r), &all);
        let (entries, _) = w.draft("2026-11");
        assert_eq!(
            amounts(&entries, EntryKind::Commission),
            s(&[("a", "1.00"), ("a", "50.00")]),
            "{entries:?}"
        );
    }
}

/// review20 C1: a refund with an amount of a sale without one (a fixed
/// bounty's signup) reverses all of the entry; the words said "refund
/// amount / original amount", which there is none of.
#[test]
fn a_refund_of_a_sale_without_an_amount_says_why_it_reverses_all() {
    let r = "[[programs.rules]]\nevent = \"signup\"\nfixed = \"20.00\"\n";
    let signup = conv_txn(
        "s1",
        "S1",
        "2026-11-05T12:00:00.000Z",
        "signup",
        &click("a", "2026-11-05"),
    );
    let refund = conv_txn(
        "r1",
        "R1",
        "2026-11-06T12:00:00.000Z",
        "refund",
        &format!(r#","original_txn_id":"S1"{}"#, usd("30.00")),
    );
    let w = world(&rules("", r), &[partner("a", ""), signup, refund]);
    let (es, _) = w.draft("2026-11");
    let c = es
        .iter()
        .find(|e| e.kind == EntryKind::Clawback)
        .expect("a clawback");
    assert_eq!(c.amount.to_string(), "-20.00");
    assert!(
        c.calc.starts_with("all of the original entry's 20.00 USD reversed (the original sale has no amount: all of it) = -20.00 USD"),
        "{}",
        c.calc
    );
}

/// review19 F12d: a refund in another currency than its sale's is compared
/// converted (30.00 EUR at 1.20 = 36.00 USD of a 100.00 USD sale: 36%); the
/// words showed only "refund amount / original amount", which the figures
/// in the events do not give.
#[test]
fn a_refund_in_another_currency_shows_its_conversion() {
    let w = world(
        &format!(
            "fx = \"fx.csv\"\n{}",
            rules(
                "",
                "[[programs.rules]]\nevent = \"sale\"\npercent = \"20\"\n"
            )
        ),
        &[
            partner("a", ""),
            conv_txn(
                "s1",
                "S1",
                "2026-11-05T12:00:00.000Z",
                "sale",
                &format!("{}{}", click("a", "2026-11-05"), usd("100.00")),
            ),
            conv_txn(
                "r1",
                "R1",
                "2026-11-06T12:00:00.000Z",
                "refund",
                r#","original_txn_id":"S1","amount":"30.00","currency":"EUR""#,
            ),
        ],
    );
    let (es, _) = w.draft("2026-11");
    let c = es
        .iter()
        .find(|e| e.kind == EntryKind::Clawback)
        .expect("a clawback");
    assert_eq!(c.amount.to_string(), "-7.20");
    assert!(
        c.calc.starts_with("36% of the original entry's 20.00 USD reversed (refund amount / original amount, each converted: 30.00 EUR x 1.20 (the EUR rate of 2026-11-01 in fx.csv) / 1 (USD, the base) = 36")
            && c.calc.contains(" USD / 100.00 USD) = -7.20 USD"),
        "{}",
        c.calc
    );
}

fn reinstate(id: &str, day: &str, of: &str) -> String {
    conv(
        id,
        day,
        "reinstate",
        &format!(",\"original_txn_id\":\"{of}\""),
    )
}

fn chargeback(id: &str, day: &str, of: &str) -> String {
    conv(
        id,
        day,
        "chargeback",
        &format!(",\"original_txn_id\":\"{of}\""),
    )
}

/// review22 F13: a dispute the merchant wins (or a refund that fails)
/// gives the partner back what its chargeback took: a `reinstate` naming
/// the chargeback. In the period of both, they net to nothing.
#[test]
fn a_reinstated_chargeback_gives_the_commission_back() {
    let w = world(
        &held(0),
        &[
            partner("a", ""),
            sale("s1", "2026-11-02", "100"),
            chargeback("c1", "2026-11-05", "s1"),
            reinstate("w1", "2026-11-20", "c1"),
        ],
    );
    let (es, _) = w.draft("2026-11");
    assert_eq!(
        amounts(&es, EntryKind::Clawback),
        s(&[("a", "-20.00"), ("a", "20.00")])
    );
    let back = es
        .iter()
        .find(|e| e.kind == EntryKind::Clawback && e.amount.is_sign_positive())
        .unwrap();
    assert_eq!(
        back.calc,
        "reinstated: w1 cancels the reversal \"c1\" (a dispute won or a refund that failed), so all \
         of the original entry's 20.00 USD is given back: 20.00 USD was reversed before, none of it \
         stands now (0.00 USD); the difference = 20.00 USD"
    );
    assert_eq!(
        figures(&w, "2026-11"),
        f7(["20.00", "0.00", "0.00", "0.00", "0.00", "20.00", "0.00"])
    );
}

/// The chargeback was booked in a closed (and paid) period: the
/// reinstatement is booked when it is dated, as a refund of a closed
/// period's sale is, and pays the commission again.
#[test]
fn a_chargeback_reinstated_after_its_period_closed_is_paid_back_later() {
    let mut w = world(
        &held(0),
        &[
            partner("a", ""),
            sale("s1", "2026-10-02", "100"),
            sale("s2", "2026-11-02", "300"),
            chargeback("c1", "2026-11-05", "s1"),
        ],
    );
    w.run_close("2026-10");
    w.run_close("2026-11");
    assert_eq!(
        figures(&w, "2026-11"),
        f7(["60.00", "-20.00", "0.00", "0.00", "0.00", "40.00", "0.00"])
    );
    w.add(&[reinstate("w1", "2026-12-03", "c1")]);
    let (es, _) = w.draft("2026-12");
    assert_eq!(amounts(&es, EntryKind::Clawback), s(&[("a", "20.00")]));
    assert!(amounts(&es, EntryKind::Adjustment).is_empty());
    assert_eq!(
        figures(&w, "2026-12"),
        f7(["0.00", "20.00", "0.00", "0.00", "0.00", "20.00", "0.00"])
    );
    // the closed November is as booked
    assert_eq!(
        figures(&w, "2026-11"),
        f7(["60.00", "-20.00", "0.00", "0.00", "0.00", "40.00", "0.00"])
    );
}

/// Partial refunds, one of them failing: what stays reversed is the share
/// of the refunds still standing, each entry rounded once, never more
/// than was earned. Commission 0.03; refunds of half each: -0.02, -0.01;
/// the first fails: half stands, round(0.015) = 0.02 reversed, so +0.01;
/// a third half refund: all of it again, -0.01.
#[test]
fn a_failed_partial_refund_leaves_the_others_standing() {
    let r = "[[programs.rules]]\nevent = \"sale\"\nfixed = \"0.03\"\n";
    let refund = |id: &str, d: &str| {
        conv(
            id,
            d,
            "refund",
            &format!(",\"original_txn_id\":\"e1\"{}", usd("5")),
        )
    };
    let sale = conv(
        "e1",
        "2026-11-02",
        "sale",
        &format!("{}{}", click("a", "2026-11-02"), usd("10")),
    );
    let w = world(
        &rules("", r),
        &[
            partner("a", ""),
            sale.clone(),
            refund("r1", "2026-11-03"),
            refund("r2", "2026-11-04"),
            reinstate("w1", "2026-11-05", "r1"),
        ],
    );
    let (es, st) = w.draft("2026-11");
    assert_eq!(
        amounts(&es, EntryKind::Clawback),
        s(&[("a", "-0.01"), ("a", "-0.02"), ("a", "0.01")])
    );
    assert_eq!(st[0].reversed.to_string(), "-0.02");
    let w = world(
        &rules("", r),
        &[
            partner("a", ""),
            sale,
            refund("r1", "2026-11-03"),
            refund("r2", "2026-11-04"),
            reinstate("w1", "2026-11-05", "r1"),
            // a second reinstatement of r1 does nothing
            reinstate("w2", "2026-11-06", "r1"),
            refund("r3", "2026-11-07"),
        ],
    );
    let (es, st) = w.draft("2026-11");
    assert_eq!(st[0].reversed.to_string(), "-0.03");
    assert_eq!(
        es.iter().filter(|e| e.kind == EntryKind::Clawback).count(),
        4
    );
}

/// A reinstatement dated before the chargeback it names (the shop's clock,
/// a late delivery) cancels it all the same, in either arrival order; one
/// naming no reversal (the sale itself, an unknown id) changes nothing.
#[test]
fn a_reinstatement_before_its_chargeback_or_of_no_reversal_changes_nothing() {
    for lines in [
        vec![
            reinstate("w1", "2026-11-04", "c1"),
            chargeback("c1", "2026-11-05", "s1"),
        ],
        vec![
            chargeback("c1", "2026-11-05", "s1"),
            reinstate("w1", "2026-11-04", "c1"),
        ],
    ] {
        let mut all = vec![partner("a", ""), sale("s1", "2026-11-02", "100")];
        all.extend(lines);
        let w = world(&held(0), &all);
        let (es, _) = w.draft("2026-11");
        assert!(amounts(&es, EntryKind::Clawback).is_empty());
        assert_eq!(
            figures(&w, "2026-11"),
            f7(["20.00", "0.00", "0.00", "0.00", "0.00", "20.00", "0.00"])
        );
    }
    let w = world(
        &held(0),
        &[
            partner("a", ""),
            sale("s1", "2026-11-02", "100"),
            reinstate("w1", "2026-11-03", "s1"),
            reinstate("w2", "2026-11-03", "nothing"),
            chargeback("c1", "2026-11-05", "s1"),
        ],
    );
    assert_eq!(
        figures(&w, "2026-11"),
        f7(["20.00", "-20.00", "0.00", "0.00", "0.00", "0.00", "0.00"])
    );
}

/// review24 F1: a reinstatement gives back what the reversal took, as the
/// closed ledger booked it, whatever programs.toml and the registry say
/// now: the rate raised from 10% to 20% (+10.00, not +20.00), the parent
/// changed (the old parent gets its override back, not the new one), a
/// sale the closed period rejected (nothing was taken: nothing given back).
#[test]
fn a_reinstatement_gives_back_what_was_booked() {
    let cfg = |percent: &str| {
        rules(
            "overrides = [\"10\"]",
            &format!("[[programs.rules]]\nevent = \"sale\"\npercent = \"{percent}\"\n"),
        )
        .replace(
            "currency = \"USD\"\n",
            "currency = \"USD\"\n[payout]\nhold_days = 0\nminimum = \"0\"\n",
        )
    };
    let mut w = world(
        &cfg("10"),
        &[
            partner("m1", ""),
            partner("m2", ""),
            partner("a", r#","parent":"m1""#),
            sale("s1", "2026-11-02", "1000"),
            chargeback("c1", "2026-11-05", "s1"),
            // b is not in the registry in November: rejected
            conv(
                "s2",
                "2026-11-03",
                "sale",
                &format!("{}{}", click("b", "2026-11-03"), usd("500")),
            ),
            chargeback("c2", "2026-11-06", "s2"),
        ],
    );
    w.run_close("2026-11");
    w.cfg = config::parse(std::path::Path::new("programs.toml"), &cfg("20")).unwrap();
    w.add(&[
        partner("a", r#","parent":"m2""#),
        partner("b", ""),
        reinstate("w1", "2026-12-03", "c1"),
        reinstate("w2", "2026-12-03", "c2"),
    ]);
    let (es, _) = w.draft("2026-12");
    assert_eq!(
        amounts(&es, EntryKind::Clawback),
        s(&[("a", "100.00"), ("m1", "10.00")])
    );
    assert!(amounts(&es, EntryKind::Adjustment).is_empty());
}

/// review24 F5: the line that cancels a reseller's credit note says so
/// (it was worded as a sale line, with arithmetic that did not hold):
/// sale 0.03 at 50% discount (0.02 due), a refund of a third (-0.01 /
/// -0.01), the refund fails: +0.01 / +0.01.
#[test]
fn a_reinstatement_cancels_a_resellers_credit_note() {
    let head = "currency = \"USD\"\n[[programs]]\nid = \"p\"\nmodel = \"reseller\"\n";
    let w = world(
        &format!("{head}[[programs.rules]]\nevent = \"sale\"\ndiscount = \"50\"\n"),
        &[
            partner("a", ""),
            sale_of("s1", "a", "2026-11-05", "0.03"),
            conv(
                "r1",
                "2026-11-06",
                "refund",
                &format!(",\"original_txn_id\":\"s1\"{}", usd("0.01")),
            ),
            reinstate("w1", "2026-11-07", "r1"),
        ],
    );
    let (d, _) = compute_draft(&w.store, &w.cfg, Period::parse("2026-11").unwrap()).unwrap();
    let lines: Vec<(String, String, String)> = d
        .invoices
        .iter()
        .map(|l| {
            (
                l.source.clone(),
                l.list_amount.to_string(),
                l.amount_due.to_string(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("r1".into(), "-0.01".into(), "-0.01".into()),
            ("s1".into(), "0.03".into(), "0.02".into()),
            ("w1".into(), "0.01".into(), "0.01".into()),
        ]
    );
    let w1 = d.invoices.iter().find(|l| l.source == "w1").unwrap();
    assert_eq!(
        w1.calc,
        "credit note cancelled: w1 cancels the reversal \"r1\" (a dispute won or a refund that \
         failed), so 33.3333333333% of the original line is charged again (the \
         credit notes' shares, each part rounded half-even as they were): list 0.01 USD, due 0.01 USD"
    );
}

/// review24 F2: a chargeback a closed period wrote off (no
/// negative_carryover), then reinstated, is not paid twice. November pays
/// 10.00; December earns 4.00 and the chargeback takes 10.00: -6.00
/// written off (the partner kept 6.00 the chargeback took on paper); the
/// January reinstatement gives back 10.00, of which the write-off's 6.00
/// is taken back: 4.00 payable, what December would have paid without the
/// chargeback.
#[test]
fn a_written_off_chargeback_reinstated_is_not_paid_twice() {
    let mut w = world(
        &held(0),
        &[
            partner("a", ""),
            sale("s1", "2026-11-02", "50"),
            sale("s2", "2026-12-02", "20"),
            chargeback("c1", "2026-12-05", "s1"),
            reinstate("w1", "2027-01-10", "c1"),
        ],
    );
    w.run_close("2026-11");
    w.run_close("2026-12");
    assert_eq!(
        figures(&w, "2026-12"),
        f7(["4.00", "-10.00", "6.00", "0.00", "0.00", "0.00", "0.00"])
    );
    let (es, _) = w.draft("2027-01");
    let back = es
        .iter()
        .find(|e| e.reason.starts_with("writeoff_taken_back_"))
        .expect("the write-off taken back");
    assert_eq!(
        (back.amount.to_string(), &back.reason[..], back.kind),
        (
            "-6.00".to_string(),
            "writeoff_taken_back_2026-12",
            EntryKind::Adjustment
        )
    );
    assert_eq!(
        figures(&w, "2027-01"),
        f7(["0.00", "10.00", "-6.00", "0.00", "0.00", "4.00", "0.00"])
    );
    // taken back once: a rerun, and the next month, take nothing more
    let p = Period::parse("2027-01").unwrap();
    run(&mut w.store, &w.cfg, p).unwrap();
    close(&mut w.store, p).unwrap();
    let (es, _) = w.draft("2027-02");
    assert!(es.is_empty(), "{es:?}");
}

/// review25 F1: a reinstatement that arrives after its own month closed
/// (booked as that month's late adjustment) takes the write-off of its
/// chargeback's month back all the same (it was paid twice); F2: one of a
/// chargeback that itself came late for its month (charged by a later
/// month's adjustment, not written off with its month) takes back nothing
/// of that month's write-off (it took back the write-off another
/// chargeback caused).
#[test]
fn late_reinstatements_and_late_chargebacks_and_the_write_off() {
    // F1: November pays 10.00; December's chargeback -10.00 is written
    // off; the January reinstatement arrives after January closed
    let mut w = world(
        &held(0),
        &[
            partner("a", ""),
            sale("s1", "2026-11-02", "50"),
            chargeback("c1", "2026-12-05", "s1"),
        ],
    );
    for p in ["2026-11", "2026-12", "2027-01"] {
        w.run_close(p);
    }
    w.add(&[reinstate("w1", "2027-01-10", "c1")]);
    let (es, _) = w.draft("2027-02");
    assert_eq!(
        amounts(&es, EntryKind::Adjustment),
        s(&[("a", "-10.00"), ("a", "10.00")])
    );
    assert_eq!(
        figures(&w, "2027-02"),
        f7(["0.00", "0.00", "0.00", "0.00", "0.00", "0.00", "0.00"])
    );

    // F2: November pays 20.00 (s1, s4); December's chargeback c1 -10.00
    // is written off; c2 (of s4, dated December) arrives in January and
    // is charged there, against s5's 20.00; February reinstates c2: 10.00
    // paid back, December's write-off (c1's) untouched
    let mut w = world(
        &held(0),
        &[
            partner("a", ""),
            sale("s1", "2026-11-02", "50"),
            sale("s4", "2026-11-03", "50"),
            chargeback("c1", "2026-12-05", "s1"),
        ],
    );
    w.run_close("2026-11");
    w.run_close("2026-12");
    w.add(&[
        chargeback("c2", "2026-12-06", "s4"),
        sale("s5", "2027-01-04", "100"),
    ]);
    w.run_close("2027-01");
    // February reinstates c2, which January booked (charged against s5's
    // 20.00): 10.00 paid back; December's write-off (c1's) untouched
    w.add(&[reinstate("w2", "2027-02-03", "c2")]);
    let (es, _) = w.draft("2027-02");
    assert!(
        !es.iter()
            .any(|e| e.reason.starts_with("writeoff_taken_back_")),
        "{es:?}"
    );
    assert_eq!(
        figures(&w, "2027-02"),
        f7(["0.00", "10.00", "0.00", "0.00", "0.00", "10.00", "0.00"])
    );
}

/// review27 F1: a late chargeback of a month that had nothing to charge it
/// from, written off by the month that booked (charged) it, then
/// reinstated: that month's write-off is taken back (it was paid twice).
#[test]
fn a_late_chargeback_written_off_where_it_was_charged_is_reinstated_once() {
    // November pays 10.00; December books nothing
    let mut w = world(
        &held(0),
        &[partner("a", ""), sale("s1", "2026-11-02", "50")],
    );
    w.run_close("2026-11");
    w.run_close("2026-12");
    // c1 (dated December) arrives in January: charged there, and written
    // off with January
    w.add(&[chargeback("c1", "2026-12-05", "s1")]);
    assert_eq!(
        figures(&w, "2027-01"),
        f7(["0.00", "0.00", "0.00", "0.00", "0.00", "0.00", "0.00"])
    );
    w.run_close("2027-01");
    // its reinstatement in February takes January's write-off back
    w.add(&[reinstate("w1", "2027-02-03", "c1")]);
    let (es, _) = w.draft("2027-02");
    let back: Vec<_> = es
        .iter()
        .filter(|e| e.reason.starts_with("writeoff_taken_back_"))
        .map(|e| (e.reason.clone(), e.amount.to_string()))
        .collect();
    assert_eq!(
        back,
        [(
            "writeoff_taken_back_2027-01".to_string(),
            "-10.00".to_string()
        )]
    );
    assert_eq!(
        figures(&w, "2027-02"),
        f7(["0.00", "10.00", "-10.00", "0.00", "0.00", "0.00", "0.00"])
    );
    w.run_close("2027-02");
    assert!(w.draft("2027-03").0.is_empty());
}

/// review28: a reinstatement gives back to the period whose ledger booked
/// its reversal. F1 a refund that came on time for a sale that came late
/// was booked by the later period (it took back an unrelated write-off);
/// F2 a reinstatement that came before its reversal, both booked by one
/// run, nets there (it took back an unrelated write-off); F3 a late
/// reversal reinstated no longer counts for its own period, whose
/// take-back is recomputed (the partner was paid twice).
#[test]
fn a_reinstatement_follows_where_its_reversal_was_booked() {
    // what each closed period paid, as its statement was closed
    let paid = |w: &World, ps: &[&str]| -> Vec<String> {
        ps.iter()
            .map(|p| {
                w.store
                    .conn
                    .query_row(
                        "SELECT payable FROM statements WHERE period = ?1 AND partner = 'a'",
                        [Period::parse(p).unwrap().key()],
                        |r| r.get::<_, String>(0),
                    )
                    .unwrap_or_else(|_| "-".into())
            })
            .collect()
    };
    // F1: r1 (refund of s1, dated December) comes before December's
    // close, s1 (November) after it: January books r1, against s1's late
    // 10.00; December's write-off is c0's, which stands
    let mut w = world(
        &held(0),
        &[
            partner("a", ""),
            sale("s0", "2026-11-02", "50"),
            refund("r1", "2026-12-03", "s1"),
            chargeback("c0", "2026-12-05", "s0"),
        ],
    );
    w.run_close("2026-11");
    w.run_close("2026-12");
    w.add(&[sale("s1", "2026-11-20", "50")]);
    w.run_close("2027-01");
    w.add(&[reinstate("w1", "2027-02-03", "r1")]);
    assert!(!w
        .draft("2027-02")
        .0
        .iter()
        .any(|e| e.reason.starts_with("writeoff_taken_back_")),);
    w.run_close("2027-02");
    assert_eq!(
        paid(&w, &["2026-11", "2026-12", "2027-01", "2027-02"]),
        ["10.00", "0.00", "0.00", "10.00"]
    );

    // F2: w1 (dated December) comes before r1, which comes after
    // December's close: January books both, they net there
    let mut w = world(
        &held(0),
        &[
            partner("a", ""),
            sale("s0", "2026-11-02", "50"),
            sale("s1", "2026-11-03", "50"),
            chargeback("c0", "2026-12-05", "s0"),
            reinstate("w1", "2026-12-28", "r1"),
            sale("s9", "2027-01-10", "50"),
        ],
    );
    w.run_close("2026-11");
    w.run_close("2026-12");
    w.add(&[refund("r1", "2026-12-20", "s1")]);
    w.run_close("2027-01");
    assert_eq!(
        paid(&w, &["2026-11", "2026-12", "2027-01"]),
        ["20.00", "0.00", "10.00"]
    );

    // F3: two half refunds of s1, the second late (charged by January
    // from s9), each reinstated later: December's 10.00 write-off is taken
    // back once r2 no longer counts for it
    let half = |id: &str, day: &str| {
        conv(
            id,
            day,
            "refund",
            &format!(",\"original_txn_id\":\"s1\"{}", usd("50.00")),
        )
    };
    let mut w = world(
        &held(0),
        &[
            partner("a", ""),
            sale("s1", "2026-11-02", "100"),
            half("r1", "2026-12-05"),
            sale("s9", "2027-01-10", "50"),
        ],
    );
    w.run_close("2026-11");
    w.run_close("2026-12");
    w.add(&[half("r2", "2026-12-06")]);
    w.run_close("2027-01");
    w.add(&[reinstate("w1", "2027-02-03", "r1")]);
    w.run_close("2027-02");
    w.add(&[reinstate("w2", "2027-03-03", "r2")]);
    w.run_close("2027-03");
    // in all 30.00, as on time (December -20.00 written off, January
    // 10.00, each reinstatement taking back 10.00)
    assert_eq!(
        paid(&w, &["2026-11", "2026-12", "2027-01", "2027-02", "2027-03"]),
        ["20.00", "0.00", "0.00", "10.00", "0.00"]
    );
}

/// The amounts of the entries taking back (or giving back) the write-off
/// of `period`.
fn taken_back_of(es: &[Entry], period: &str) -> Vec<String> {
    es.iter()
        .filter(|e| e.reason == format!("writeoff_taken_back_{period}"))
        .map(|e| e.amount.to_string())
        .collect()
}

/// A late fact restating a written-off month upwards pays the loss the
/// write-off forgave first, as it would have on time; one restating it
/// back down gives that back (review25 F3: the partner lost it); a late
/// loss is charged when it comes, and a later gain then pays it first.
#[test]
fn late_facts_of_a_written_off_month_pay_its_loss_first() {
    // November pays 10.00; December's chargeback -10.00 is written off
    let mut w = world(
        &held(0),
        &[
            partner("a", ""),
            sale("s1", "2026-11-02", "50"),
            chargeback("c1", "2026-12-05", "s1"),
        ],
    );
    w.run_close("2026-11");
    w.run_close("2026-12");
    assert_eq!(
        figures(&w, "2026-12"),
        f7(["0.00", "-10.00", "10.00", "0.00", "0.00", "0.00", "0.00"])
    );
    // s2 (6.00) of December arrives in January: on time December would
    // have been -4.00 written off, nothing paid: 6.00 taken back
    w.add(&[sale("s2", "2026-12-20", "30")]);
    let (es, _) = w.draft("2027-01");
    let back = taken_back_of(&es, "2026-12");
    assert_eq!(back, ["-6.00"], "{es:?}");
    assert_eq!(
        figures(&w, "2027-01"),
        f7(["0.00", "0.00", "0.00", "0.00", "0.00", "0.00", "0.00"])
    );
    w.run_close("2027-01");
    // s2 refunded (dated December) after January closed, and February's
    // s3 (10.00): s2 and its refund cancel out, December's 6.00 comes
    // back, February pays s3's 10.00 (on time: December -10.00 written
    // off, February 10.00)
    w.add(&[
        refund("r2", "2026-12-21", "s2"),
        sale("s3", "2027-02-03", "50"),
    ]);
    let (es, _) = w.draft("2027-02");
    let back = taken_back_of(&es, "2026-12");
    assert_eq!(back, ["6.00"], "{es:?}");
    assert_eq!(
        figures(&w, "2027-02"),
        f7(["10.00", "0.00", "0.00", "0.00", "0.00", "10.00", "0.00"])
    );
    // a rerun books the same; the next month nothing more
    let p = Period::parse("2027-02").unwrap();
    run(&mut w.store, &w.cfg, p).unwrap();
    close(&mut w.store, p).unwrap();
    let (es, _) = w.draft("2027-03");
    assert!(es.is_empty(), "{es:?}");

    // more comes back than was written off: the rest is paid
    let mut w = world(
        &held(0),
        &[
            partner("a", ""),
            sale("s1", "2026-11-02", "50"),
            chargeback("c1", "2026-12-05", "s1"),
        ],
    );
    w.run_close("2026-11");
    w.run_close("2026-12");
    w.add(&[sale("s2", "2026-12-20", "80")]);
    assert_eq!(
        figures(&w, "2027-01"),
        f7(["0.00", "0.00", "6.00", "0.00", "0.00", "6.00", "0.00"])
    );

    // a late loss first is charged when it comes (nothing was taken back
    // to give back); a late gain after it pays that loss first
    let mut w = world(
        &held(0),
        &[
            partner("a", ""),
            sale("s1", "2026-11-02", "50"),
            sale("s4", "2026-11-03", "25"),
            sale("s5", "2027-01-04", "100"),
            chargeback("c1", "2026-12-05", "s1"),
        ],
    );
    w.run_close("2026-11");
    w.run_close("2026-12");
    w.add(&[refund("r4", "2026-12-06", "s4")]);
    let (es, _) = w.draft("2027-01");
    assert!(
        !es.iter()
            .any(|e| e.reason.starts_with("writeoff_taken_back_")),
        "{es:?}"
    );
    assert_eq!(
        figures(&w, "2027-01"),
        f7(["20.00", "0.00", "-5.00", "0.00", "0.00", "15.00", "0.00"])
    );
    w.run_close("2027-01");
    // +8.00 late for December: given back in all -5.00 + 8.00 = 3.00,
    // taken back 3.00, 5.00 paid (on time: -10 -5 +8 = -7, written off)
    w.add(&[sale("s2", "2026-12-20", "40")]);
    let (es, _) = w.draft("2027-02");
    let back = taken_back_of(&es, "2026-12");
    assert_eq!(back, ["-3.00"], "{es:?}");
    assert_eq!(
        figures(&w, "2027-02"),
        f7(["0.00", "0.00", "5.00", "0.00", "0.00", "5.00", "0.00"])
    );
}
