//! A seeded simulator: a month of mixed-model traffic from `settlement::sim`,
//! settled by the engine and by a deliberately simple reference model
//! written here from SPEC's text alone; the statements must agree to the cent.

use edge::record::{Kind, Record};
use rust_decimal::{Decimal, RoundingStrategy};
use settlement::import::import_records;
use settlement::period::Period;
use settlement::sim::{generate, GenConfig};
use std::collections::{BTreeMap, HashMap, HashSet};

const SIMPLE: &str = r#"currency = "USD"
[payout]
hold_days = 0
minimum = "50.00"
[[programs]]
id = "saas"
model = "affiliate"
window_days = 30
lifetime = true
overrides = ["10"]
  [[programs.rules]]
  event = "signup"
  fixed = "5.00"
  [[programs.rules]]
  event = "sale"
  percent = "20"
  [[programs.rules]]
  event = "sale"
  tier = "gold"
  percent = "30"
[[programs]]
id = "fx"
model = "affiliate"
window_days = 30
lifetime = true
  [[programs.rules]]
  event = "trade"
  per_lot = "8.00"
  [[programs.rules]]
  event = "ftd"
  fixed = "100.00"
[[programs]]
id = "prop"
model = "affiliate"
window_days = 30
  [[programs.rules]]
  event = "sale"
  percent = "15"
[[programs]]
id = "var"
model = "reseller"
window_days = 30
  [[programs.rules]]
  event = "sale"
  discount = "25"
[[programs]]
id = "tech"
model = "technology"
window_days = 60
lifetime = true
minimum_per_period = "50.00"
  [[programs.rules]]
  event = "revenue"
  percent = "15"
[[programs]]
id = "ref"
model = "referral"
deal_days = 90
  [[programs.rules]]
  event = "deal_won"
  percent = "10"
[[programs]]
id = "casino"
model = "affiliate"
window_days = 30
lifetime = true
negative_carryover = true
  [[programs.rules]]
  event = "revenue"
  percent = "30"
"#;

const DAY: i64 = 86_400_000;

/// Approved registrations: (registered at, id, partner).
type Deals = Vec<(i64, String, String)>;

fn r2(d: Decimal) -> Decimal {
    let mut x = d.round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven);
    if x.is_zero() {
        x.set_sign_positive(true);
    }
    x
}

struct P {
    program: String,
    parent: Option<String>,
    tier: String,
    history: Vec<(i64, String)>,
    email: Option<String>,
}

fn status_at(p: &P, ts: i64) -> Option<&str> {
    p.history
        .iter()
        .rev()
        .find(|(at, _)| *at <= ts)
        .map(|(_, s)| s.as_str())
}

#[derive(Default, Debug, Clone, PartialEq)]
struct Fig {
    earned: Decimal,
    reversed: Decimal,
    adjusted: Decimal,
    payable: Decimal,
    carried_out: Decimal,
}

/// The reference: straight from SPEC sections 4-5, for the SIMPLE programs.
fn reference(records: &[Record]) -> (BTreeMap<String, Fig>, BTreeMap<String, Decimal>) {
    let window = |p: &str| match p {
        "tech" => 60,
        _ => 30,
    };
    let lifetime = |p: &str| matches!(p, "saas" | "fx" | "tech" | "casino");
    let mut partners: HashMap<String, P> = HashMap::new();
    let mut coupons: HashMap<(String, String), String> = HashMap::new();
    let mut bots: HashSet<String> = HashSet::new();
    let mut deals: HashMap<(String, String), Deals> = HashMap::new();
    for r in records {
        match r.kind {
            Kind::Partner => {
                partners.insert(
                    r.id.clone().unwrap(),
                    P {
                        program: r.program.clone().unwrap(),
                        parent: r.parent.clone(),
                        tier: r.tier.clone().unwrap_or_default(),
                        history: r
                            .history
                            .iter()
                            .flatten()
                            .map(|h| (h.at.ms(), h.status.clone()))
                            .collect(),
                        email: r.email_hash.clone(),
                    },
                );
            }
            Kind::Coupon => {
                coupons.insert(
                    (r.program.clone().unwrap(), r.code.clone().unwrap()),
                    r.partner.clone().unwrap(),
                );
            }
            Kind::Click if r.bot == Some(true) => {
                if let Some(k) = &r.click_id {
                    bots.insert(k.clone());
                }
            }
            Kind::Deal if r.status.as_deref() == Some("approved") => deals
                .entry((r.program.clone().unwrap(), r.customer.clone().unwrap()))
                .or_default()
                .push((
                    r.ts.unwrap().ms(),
                    r.id.clone().unwrap(),
                    r.partner.clone().unwrap(),
                )),
            _ => {}
        }
    }
    for v in deals.values_mut() {
        v.sort();
    }
    let mut convs: Vec<&Record> = records
        .iter()
        .filter(|r| r.kind == Kind::Conversion)
        .collect();
    convs.sort_by(|a, b| (a.ts, &a.id).cmp(&(b.ts, &b.id)));
    let same = |partner: &str, prog: &str| partners.get(partner).is_none_or(|p| p.program == prog);

    let mut fig: BTreeMap<String, Fig> = BTreeMap::new();
    let mut invoices: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut locks: HashMap<(String, String), String> = HashMap::new();
    let mut earned_by_txn: HashMap<(String, String), Vec<(String, Decimal)>> = HashMap::new();
    let mut inv_by_txn: HashMap<(String, String), (String, Decimal)> = HashMap::new();
    let mut orig_amount: HashMap<(String, String), Decimal> = HashMap::new();
    let mut active: HashSet<String> = HashSet::new();
    let mut tech_earned: HashMap<String, Decimal> = HashMap::new();
    let mut refunds = Vec::new();
    for c in convs {
        let prog = c.program.clone().unwrap();
        let event = c.event.clone().unwrap();
        let ts = c.ts.unwrap().ms();
        if event == "refund" || event == "chargeback" {
            refunds.push(c);
            continue;
        }
        let customer = c.customer.clone();
        let mut partner: Option<String> = None;
        if lifetime(&prog) {
            if let Some(cu) = &customer {
                partner = locks.get(&(prog.clone(), cu.clone())).cloned();
            }
        }
        let mut bot_only = None;
        if partner.is_none() {
            if let (Some(_), Some(ct), Some(p)) = (&c.click_id, c.click_ts, &c.partner) {
                let age = ts - ct.ms();
                if age >= 0 && age <= window(&prog) * DAY && same(p, &prog) {
                    if bots.contains(c.click_id.as_ref().unwrap()) || c.bot == Some(true) {
                        bot_only = Some(p.clone());
                    } else {
                        partner = Some(p.clone());
                    }
                }
            }
        }
        if partner.is_none() {
            if let Some(code) = &c.coupon {
                if let Some(p) = coupons.get(&(prog.clone(), code.clone())) {
                    if same(p, &prog) {
                        partner = Some(p.clone());
                    }
                }
            }
        }
        if partner.is_none() {
            if let Some(cu) = &customer {
                for (dts, _, dp) in deals.get(&(prog.clone(), cu.clone())).into_iter().flatten() {
                    if *dts <= ts && ts - dts <= 90 * DAY && same(dp, &prog) {
                        partner = Some(dp.clone());
                        break;
                    }
                }
            }
        }
        let mut rejected = false;
        if partner.is_none() && bot_only.is_some() {
            partner = bot_only;
            rejected = true;
        }
        let Some(partner) = partner else { continue };
        let info = partners.get(&partner);
        if customer.as_deref() == Some(partner.as_str())
            || (c.email_hash.is_some()
                && info.is_some_and(|i| i.email.as_ref() == c.email_hash.as_ref()))
            || info.is_none()
            || status_at(info.unwrap(), ts) != Some("approved")
        {
            rejected = true;
        }
        if rejected {
            continue;
        }
        let info = info.unwrap();
        if let Some(cu) = &customer {
            if lifetime(&prog) {
                locks
                    .entry((prog.clone(), cu.clone()))
                    .or_insert(partner.clone());
            }
        }
        active.insert(partner.clone());
        let amount = c.amount.unwrap_or_default();
        let pct = |p: i64| r2(amount * Decimal::from(p) / Decimal::ONE_HUNDRED);
        let txn = (prog.clone(), c.txn_id.clone().unwrap());
        orig_amount.entry(txn.clone()).or_insert(amount);
        if prog == "var" {
            if event == "sale" {
                let due = r2(amount * Decimal::from(75) / Decimal::ONE_HUNDRED);
                *invoices.entry(partner.clone()).or_default() += due;
                inv_by_txn.entry(txn).or_insert((partner.clone(), due));
            }
            continue;
        }
        let comm = match (prog.as_str(), event.as_str()) {
            ("saas", "signup") => Decimal::new(500, 2),
            ("saas", "sale") => pct(if info.tier == "gold" { 30 } else { 20 }),
            ("fx", "trade") => r2(c.lots.unwrap_or_default() * Decimal::from(8)),
            ("fx", "ftd") => Decimal::new(10000, 2),
            ("prop", "sale") => pct(15),
            ("tech", "revenue") => pct(15),
            ("ref", "deal_won") => pct(10),
            ("casino", "revenue") => pct(30),
            _ => continue,
        };
        fig.entry(partner.clone()).or_default().earned += comm;
        if prog == "tech" {
            *tech_earned.entry(partner.clone()).or_default() += comm;
        }
        let list = earned_by_txn.entry(txn).or_default();
        if list.is_empty() {
            list.push((partner.clone(), comm));
            if prog == "saas" && !comm.is_zero() {
                if let Some(par) = &info.parent {
                    if let Some(pi) = partners.get(par) {
                        if pi.program == prog && status_at(pi, ts) == Some("approved") {
                            let o = r2(comm * Decimal::from(10) / Decimal::ONE_HUNDRED);
                            fig.entry(par.clone()).or_default().earned += o;
                            list.push((par.clone(), o));
                        }
                    }
                }
            }
        }
    }
    let mut used: HashMap<(String, String), Decimal> = HashMap::new();
    for r in refunds {
        let key = (
            r.program.clone().unwrap(),
            r.original_txn_id.clone().unwrap(),
        );
        let Some(orig) = orig_amount.get(&key) else {
            continue;
        };
        // cumulative refunded amount, capped at the original: multiply first,
        // divide last, so a tie at the cent is a true tie
        let orig = *orig;
        let a = match r.amount {
            Some(a) if !orig.is_zero() => a.max(Decimal::ZERO),
            _ => orig,
        };
        let before = used.get(&key).copied().unwrap_or_default();
        let after = (before + a).min(orig);
        if after <= before && !orig.is_zero() {
            continue;
        }
        used.insert(key.clone(), after);
        let part = |e: Decimal, x: Decimal| if orig.is_zero() { e } else { r2(e * x / orig) };
        for (p, e) in earned_by_txn.get(&key).into_iter().flatten() {
            if e.is_zero() {
                continue;
            }
            let claw = part(*e, after) - part(*e, before);
            fig.entry(p.clone()).or_default().reversed -= claw;
        }
        if let Some((p, due)) = inv_by_txn.get(&key) {
            *invoices.get_mut(p).unwrap() -= part(*due, after) - part(*due, before);
        }
    }
    for r in records.iter().filter(|r| r.kind == Kind::Mdf) {
        let p = r.partner.clone().unwrap();
        // a claim pays a partner of its program approved on its date
        let ok = partners.get(&p).is_some_and(|i| {
            Some(&i.program) == r.program.as_ref()
                && status_at(i, r.ts.unwrap().ms()) == Some("approved")
        });
        if ok {
            fig.entry(p).or_default().earned += r.amount.unwrap();
        }
    }
    for p in &active {
        if partners[p].program == "tech" {
            let got = tech_earned.get(p).copied().unwrap_or_default();
            if got < Decimal::from(50) {
                fig.entry(p.clone()).or_default().earned += Decimal::from(50) - got;
            }
        }
    }
    for (p, f) in fig.iter_mut() {
        let carry = partners[p].program == "casino";
        let balance = f.earned + f.reversed;
        if balance < Decimal::ZERO && !carry {
            f.adjusted = -balance;
        }
        let b = balance + f.adjusted;
        f.payable = if b > Decimal::ZERO && b >= Decimal::from(50) {
            b
        } else {
            Decimal::ZERO
        };
        f.carried_out = b - f.payable;
    }
    fig.retain(|_, f| *f != Fig::default());
    (fig, invoices)
}

/// The simulator's events for `g`, as records.
fn records(g: &GenConfig) -> Vec<Record> {
    let mut buf = Vec::new();
    generate(g, &mut buf).unwrap();
    String::from_utf8(buf)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn engine_agrees_with_the_reference_model() {
    for seed in [1u64, 2, 3] {
        let g = GenConfig {
            seed,
            events: 20_000,
            partners: 300,
            customers: 3_000,
            period: Period::parse("2026-11").unwrap(),
        };
        let records = records(&g);
        let (want, want_inv) = reference(&records);

        let dir = tempfile::tempdir().unwrap();
        let mut store = settlement::store::Store::open(&dir.path().join("s.db")).unwrap();
        import_records(&mut store, &records).unwrap();
        let cfg = settlement::config::parse(&dir.path().join("p.toml"), SIMPLE).unwrap();
        let (draft, _) = settlement::run::compute_draft(&store, &cfg, g.period).unwrap();
        let got: BTreeMap<String, Fig> = draft
            .statements
            .iter()
            .map(|s| {
                (
                    s.partner.clone(),
                    Fig {
                        earned: s.earned,
                        reversed: s.reversed,
                        adjusted: s.adjusted,
                        payable: s.payable,
                        carried_out: s.carried_out,
                    },
                )
            })
            .collect();
        assert!(
            want.len() > 50,
            "seed {seed}: the simulation is too small ({} partners)",
            want.len()
        );
        for (p, w) in &want {
            assert_eq!(got.get(p), Some(w), "seed {seed}, partner {p}");
        }
        assert_eq!(got.len(), want.len(), "seed {seed}");
        let mut inv: BTreeMap<String, Decimal> = BTreeMap::new();
        for l in &draft.invoices {
            *inv.entry(l.partner.clone()).or_default() += l.amount_due;
        }
        assert_eq!(inv, want_inv, "seed {seed}: invoices");
    }
}

/// The ledger `run` writes (entries put into words on one thread, inserted
/// on another, thousands at a time) holds the draft's entries in the
/// draft's order, over many batches.
#[test]
fn the_written_ledger_keeps_the_drafts_order() {
    let g = GenConfig {
        seed: 11,
        events: 40_000,
        partners: 300,
        customers: 3_000,
        period: Period::parse("2026-11").unwrap(),
    };
    let records = records(&g);
    let dir = tempfile::tempdir().unwrap();
    let mut store = settlement::store::Store::open(&dir.path().join("s.db")).unwrap();
    import_records(&mut store, &records).unwrap();
    let cfg = settlement::config::parse(&dir.path().join("p.toml"), SIMPLE).unwrap();
    settlement::run::run(&mut store, &cfg, g.period).unwrap();
    let (draft, _) = settlement::run::compute_draft(&store, &cfg, g.period).unwrap();
    let want: Vec<(String, String)> = draft
        .entries
        .iter()
        .map(|e| (e.id.clone(), e.calc.clone()))
        .collect();
    assert!(want.len() > 4 * 2048, "{} entries", want.len());
    use rusqlite::types::Value::Text;
    // pos, id, ..., calc (13th)
    let got: Vec<(String, String)> = settlement::ledger_blocks::all_rows(&store.conn)
        .unwrap()
        .into_iter()
        .map(|r| match (&r[1], &r[12]) {
            (Text(id), Text(calc)) => (id.clone(), calc.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the ledger's order differs from the draft's");
}
