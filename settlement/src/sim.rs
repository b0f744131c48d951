//! A deterministic generator of mixed-model partner traffic: the programs of
//! every model, their partners and coupons, and a stream of clicks,
//! conversions, refunds, deal registrations and MDF claims. Used by the
//! simulator test, the crash test and the benchmark; same seed, same bytes.

use crate::period::{Period, DAY_MS};
use std::io::{self, Write};

/// SplitMix64: small, fast, deterministic.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Debug)]
pub struct GenConfig {
    pub seed: u64,
    pub events: u64,
    pub partners: u64,
    pub customers: u64,
    pub period: Period,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 42,
            events: 10_000,
            partners: 100,
            customers: 5_000,
            period: Period {
                year: 2026,
                month: 11,
            },
        }
    }
}

/// The programs the generator's traffic is for, one per model (and the
/// regulated verticals), as a programs.toml.
pub const PROGRAMS: &str = r#"currency = "USD"
rounding = "half_even"

[payout]
hold_days = 7
minimum = "50.00"

[[programs]]
id = "saas"
model = "affiliate"
window_days = 30
lifetime = true
overrides = ["10", "5"]

  [[programs.rules]]
  event = "signup"
  fixed = "5.00"
  cap = 200

  [[programs.rules]]
  event = "sale"
  percent = "20"
  months = 12

  [[programs.rules]]
  event = "sale"
  tier = "gold"
  months = 12
  percent = "30"

[[programs]]
id = "fx"
model = "affiliate"
window_days = 30
lifetime = true
overrides = ["20"]

  [[programs.rules]]
  event = "trade"
  ladder = { metric = "lots", mode = "marginal", steps = [
    { from = "0", per_lot = "8.00" }, { from = "100", per_lot = "10.00" } ] }

  [[programs.rules]]
  event = "ftd"
  first_only = true
  min_amount = "100"
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

pub const PROGRAM_IDS: [&str; 7] = ["saas", "fx", "prop", "var", "tech", "ref", "casino"];

/// Partner `i`: its id and program.
pub fn partner_of(i: u64) -> (String, &'static str) {
    (
        format!("pa{i}"),
        PROGRAM_IDS[(i % PROGRAM_IDS.len() as u64) as usize],
    )
}

fn ts(ms: i64) -> String {
    edge::time::Timestamp(ms).to_string()
}

fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

struct Recent<T: Clone> {
    buf: Vec<T>,
    next: usize,
}

impl<T: Clone> Recent<T> {
    fn new(cap: usize) -> Self {
        Recent {
            buf: Vec::with_capacity(cap),
            next: 0,
        }
    }
    fn push(&mut self, t: T) {
        if self.buf.len() < self.buf.capacity() {
            self.buf.push(t);
        } else {
            self.buf[self.next] = t;
            self.next = (self.next + 1) % self.buf.len();
        }
    }
    fn pick(&self, rng: &mut Rng) -> Option<&T> {
        (!self.buf.is_empty()).then(|| &self.buf[rng.below(self.buf.len() as u64) as usize])
    }
}

/// Writes the registry (partner and coupon lines) and `g.events` event lines.
/// Returns the number of lines written.
pub fn generate<W: Write>(g: &GenConfig, out: &mut W) -> io::Result<u64> {
    let mut rng = Rng::new(g.seed);
    let mut lines = 0;
    let np = g.partners.max(PROGRAM_IDS.len() as u64);
    for i in 0..np {
        let (id, prog) = partner_of(i);
        let tier = if rng.chance(10) { "gold" } else { "silver" };
        // parents: an earlier partner of the same program
        let parent = if i >= 14 && rng.chance(30) && matches!(prog, "saas" | "fx") {
            format!(",\"parent\":\"pa{}\"", i - 7 * (1 + rng.below(i / 7 - 1)))
        } else {
            String::new()
        };
        let (status, history) = if rng.chance(3) {
            (
                "suspended",
                format!(
                    r#"[{{"status":"approved","at":"2026-01-01T00:00:00.000Z"}},{{"status":"suspended","at":"{}"}}]"#,
                    ts(g.period.start_ms() + rng.below(28) as i64 * DAY_MS)
                ),
            )
        } else {
            (
                "approved",
                r#"[{"status":"approved","at":"2026-01-01T00:00:00.000Z"}]"#.to_string(),
            )
        };
        writeln!(
            out,
            r#"{{"type":"partner","id":"{id}","program":"{prog}","tier":"{tier}"{parent},"status":"{status}","history":{history},"currency":"USD","email_hash":"eh_{id}","updated_at":"2026-01-01T00:00:00.000Z"}}"#
        )?;
        lines += 1;
        if prog == "prop" || prog == "var" {
            writeln!(
                out,
                r#"{{"type":"coupon","code":"C{i}","partner":"{id}","program":"{prog}","created_at":"2026-01-01T00:00:00.000Z"}}"#
            )?;
            lines += 1;
        }
    }
    let start = g.period.start_ms();
    let span = g.period.end_ms() - start - 1;
    let mut clicks: Recent<(u64, i64, u64)> = Recent::new(4096);
    let mut sales: Recent<(u64, &'static str, u64)> = Recent::new(4096);
    let mut deals: Recent<u64> = Recent::new(4096);
    let n = g.events.max(1);
    for i in 0..g.events {
        let t = start + (span as i128 * i as i128 / n as i128) as i64;
        let seq = i + 1;
        let r = rng.below(100);
        if r < 40 {
            let p = rng.below(np);
            let (pid, prog) = partner_of(p);
            let bot = rng.chance(2);
            writeln!(
                out,
                r#"{{"seq":{seq},"id":"ev{seq:010}","type":"click","ts":"{}","program":"{prog}","partner":"{pid}","click_id":"k{seq}","bot":{bot}}}"#,
                ts(t)
            )?;
            clicks.push((seq, t, p));
        } else if r < 92 {
            let customer = rng.below(g.customers.max(1));
            // evidence: a recent click (70%), a coupon, or none
            let ev = rng.below(100);
            let (prog, evidence) = if ev < 70 {
                match clicks.pick(&mut rng) {
                    Some(&(k, kt, pidx)) => {
                        let (pid, prog) = partner_of(pidx);
                        (
                            prog,
                            format!(
                                r#","partner":"{pid}","click_id":"k{k}","click_ts":"{}""#,
                                ts(kt)
                            ),
                        )
                    }
                    None => ("saas", String::new()),
                }
            } else if ev < 85 {
                let p = rng.below(np);
                let (pid, prog) = partner_of(p);
                if prog == "prop" || prog == "var" {
                    (prog, format!(r#","coupon":"C{p}""#))
                } else {
                    (prog, format!(r#","partner":"{pid}""#))
                }
            } else {
                (
                    PROGRAM_IDS[rng.below(PROGRAM_IDS.len() as u64) as usize],
                    String::new(),
                )
            };
            let cents = 1000 + rng.below(49_000);
            let (event, fields) = match prog {
                "saas" => {
                    if rng.chance(40) {
                        ("signup", String::new())
                    } else {
                        (
                            "sale",
                            format!(r#","amount":"{}","currency":"USD""#, money(cents)),
                        )
                    }
                }
                "fx" => {
                    if rng.chance(20) {
                        (
                            "ftd",
                            format!(r#","amount":"{}","currency":"USD""#, money(cents)),
                        )
                    } else {
                        (
                            "trade",
                            format!(
                                r#","lots":"{}.{}","instrument":"EURUSD""#,
                                rng.below(20),
                                rng.below(10)
                            ),
                        )
                    }
                }
                "prop" | "var" => (
                    "sale",
                    format!(r#","amount":"{}","currency":"USD""#, money(cents)),
                ),
                "tech" => (
                    "revenue",
                    format!(r#","amount":"{}","currency":"USD""#, money(cents)),
                ),
                "ref" => (
                    "deal_won",
                    format!(r#","amount":"{}","currency":"USD""#, money(cents * 10)),
                ),
                _ => {
                    let sign = if rng.chance(30) { "-" } else { "" };
                    (
                        "revenue",
                        format!(r#","amount":"{sign}{}","currency":"USD""#, money(cents)),
                    )
                }
            };
            let customer = if prog == "ref" {
                deals.pick(&mut rng).copied().unwrap_or(customer)
            } else {
                customer
            };
            // a few self-referrals by email
            let email = if rng.chance(1) {
                let (pid, _) = partner_of(rng.below(np));
                format!(r#","email_hash":"eh_{pid}""#)
            } else {
                String::new()
            };
            writeln!(
                out,
                r#"{{"seq":{seq},"id":"ev{seq:010}","type":"conversion","ts":"{}","program":"{prog}"{evidence},"event":"{event}","txn_id":"t{seq:010}"{fields},"customer":"cu{customer}"{email},"source":"postback"}}"#,
                ts(t)
            )?;
            if fields.contains("amount") && !fields.contains("\"-") {
                sales.push((seq, prog, cents));
            }
        } else if r < 95 {
            if let Some(&(s, prog, cents)) = sales.pick(&mut rng) {
                let amount = match rng.below(3) {
                    0 => String::new(),
                    1 => format!(r#","amount":"{}","currency":"USD""#, money(cents / 2)),
                    _ => format!(r#","amount":"{}","currency":"USD""#, money(cents)),
                };
                let event = if rng.chance(80) {
                    "refund"
                } else {
                    "chargeback"
                };
                writeln!(
                    out,
                    r#"{{"seq":{seq},"id":"ev{seq:010}","type":"conversion","ts":"{}","program":"{prog}","event":"{event}","txn_id":"r{seq:010}","original_txn_id":"t{s:010}"{amount}}}"#,
                    ts(t)
                )?;
            } else {
                writeln!(
                    out,
                    r#"{{"seq":{seq},"id":"ev{seq:010}","type":"click","ts":"{}","bot":true}}"#,
                    ts(t)
                )?;
            }
        } else if r < 98 {
            let k = rng.below(np / 7 + 1);
            let (pid, prog) = partner_of(k * 7 + 5); // "ref" partners
            let customer = rng.below(g.customers.max(1));
            let status = if rng.chance(80) {
                "approved"
            } else {
                "pending"
            };
            writeln!(
                out,
                r#"{{"seq":{seq},"id":"ev{seq:010}","type":"deal","ts":"{}","program":"{prog}","partner":"{pid}","customer":"cu{customer}","status":"{status}"}}"#,
                ts(t)
            )?;
            deals.push(customer);
        } else {
            let (pid, prog) = partner_of(rng.below(np));
            writeln!(
                out,
                r#"{{"seq":{seq},"id":"ev{seq:010}","type":"mdf","ts":"{}","program":"{prog}","partner":"{pid}","amount":"{}","currency":"USD"}}"#,
                ts(t),
                money(10_000 + rng.below(40_000))
            )?;
        }
        lines += 1;
    }
    Ok(lines)
}

/// For the crate's tests: `events` generated records (the default
/// config's other knobs) and their config.
#[cfg(test)]
pub(crate) fn records(events: u64) -> (GenConfig, Vec<edge::record::Record>) {
    let g = GenConfig {
        events,
        ..GenConfig::default()
    };
    let mut text = Vec::new();
    generate(&g, &mut text).expect("generated into memory");
    let records = std::str::from_utf8(&text)
        .expect("generated text is UTF-8")
        .lines()
        .map(|l| crate::import::parse_line(l).expect("a generated line parses"))
        .collect();
    (g, records)
}

/// For the crate's tests: the registry and the first `early` records, then
/// the later conversions alone (facts that arrive late for a period).
#[cfg(test)]
pub(crate) fn split_late(
    records: Vec<edge::record::Record>,
    early: usize,
) -> (Vec<edge::record::Record>, Vec<edge::record::Record>) {
    let (a, b): (Vec<_>, Vec<_>) = records
        .into_iter()
        .enumerate()
        .partition(|(i, r)| *i < early || !matches!(r.kind, edge::record::Kind::Conversion));
    (
        a.into_iter().map(|x| x.1).collect(),
        b.into_iter().map(|x| x.1).collect(),
    )
}
