//! `make demo`: the whole product on this machine. Starts the real worker in
//! workerd, creates a demo company running every partner model, replays a
//! month of traffic through the real HTTP routes, pulls it with the real
//! `settlement` binary, runs and closes the period, writes the report and
//! prints a summary.

use e2e::harness::{agent, root, send, Options, Worker, ADMIN_TOKEN, EXPORT_TOKEN};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const PERIOD: &str = "2026-10";
/// 2026-10-01T00:00:00Z in ms.
const MONTH_START: i64 = 1_790_812_800_000;
const DAY: i64 = 86_400_000;
const TOKEN: &str = "demo-postback-token-0001";
/// The SaaS program's Stripe endpoint signing secret (`stripe_secrets`).
const STRIPE_SECRET: &str = "whsec_demo_0123456789abcdefABCDEF";
/// The shop's Shopify webhook signing key (`shopify_secrets`).
const SHOPIFY_SECRET: &str = "shpss_demo_0123456789abcdef0123";

const BROWSERS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
];
const BOTS: &[&str] = &[
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "python-requests/2.32.3",
];

/// A small deterministic generator (xorshift64*): same seed, same month.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    fn money(&mut self, lo: u64, hi: u64) -> String {
        let cents = lo * 100 + self.below((hi - lo) * 100 + 1);
        format!("{}.{:02}", cents / 100, cents % 100)
    }
}

struct Partner {
    id: &'static str,
    program: &'static str,
    tier: Option<&'static str>,
    parent: Option<&'static str>,
    email: &'static str,
}

const PARTNERS: &[Partner] = &[
    Partner {
        id: "aff-ana",
        program: "saas-aff",
        tier: Some("gold"),
        parent: None,
        email: "ana@reviews.example",
    },
    Partner {
        id: "aff-ben",
        program: "saas-aff",
        tier: Some("silver"),
        parent: None,
        email: "ben@devblog.example",
    },
    Partner {
        id: "aff-cleo",
        program: "saas-aff",
        tier: Some("silver"),
        parent: None,
        email: "cleo@newsletter.example",
    },
    Partner {
        id: "aff-dev",
        program: "saas-aff",
        tier: Some("gold"),
        parent: None,
        email: "dev@tutorials.example",
    },
    Partner {
        id: "ref-north",
        program: "referral",
        tier: None,
        parent: None,
        email: "deals@north-consult.example",
    },
    Partner {
        id: "ref-south",
        program: "referral",
        tier: None,
        parent: None,
        email: "hello@south-partners.example",
    },
    Partner {
        id: "res-acme",
        program: "reseller",
        tier: None,
        parent: None,
        email: "orders@acme-it.example",
    },
    Partner {
        id: "res-byte",
        program: "reseller",
        tier: None,
        parent: None,
        email: "sales@bytehouse.example",
    },
    Partner {
        id: "tech-zap",
        program: "tech",
        tier: None,
        parent: None,
        email: "partners@zapflow.example",
    },
    Partner {
        id: "ib-master",
        program: "fx-ib",
        tier: None,
        parent: None,
        email: "desk@master-ib.example",
    },
    Partner {
        id: "ib-sub1",
        program: "fx-ib",
        tier: None,
        parent: Some("ib-master"),
        email: "sub1@ib.example",
    },
    Partner {
        id: "ib-sub2",
        program: "fx-ib",
        tier: None,
        parent: Some("ib-master"),
        email: "sub2@ib.example",
    },
    Partner {
        id: "cas-stream",
        program: "casino",
        tier: None,
        parent: None,
        email: "bizdev@streamer.example",
    },
    Partner {
        id: "cas-portal",
        program: "casino",
        tier: None,
        parent: None,
        email: "ads@slots-portal.example",
    },
    Partner {
        id: "prop-kol",
        program: "prop",
        tier: None,
        parent: None,
        email: "kol@trading-tips.example",
    },
    Partner {
        id: "prop-yt",
        program: "prop",
        tier: None,
        parent: None,
        email: "yt@funded-channel.example",
    },
];

fn model_of(program: &str) -> &'static str {
    match program {
        "referral" => "referral",
        "reseller" => "reseller",
        "tech" => "technology",
        _ => "affiliate",
    }
}

fn host_of(program: &str) -> &'static str {
    match program {
        "saas-aff" | "tech" => "app.example",
        "referral" => "www.example",
        "reseller" => "shop.example",
        "fx-ib" => "broker.example",
        "casino" => "casino.example",
        _ => "propfirm.example",
    }
}

/// What arrived through the providers' webhooks (each answered `recorded`).
#[derive(Default)]
struct Via {
    stripe_sales: usize,
    stripe_refunds: usize,
    shopify_sales: usize,
    shopify_refunds: usize,
}

struct Demo {
    w: Worker,
    clock: i64,
}

impl Demo {
    fn call(
        &self,
        method: &str,
        path: &str,
        auth: &str,
        body: Option<Value>,
        clock: i64,
    ) -> (u16, Value) {
        let req = agent()
            .request(method, &self.w.url(path))
            .set("Authorization", &format!("Bearer {auth}"))
            .set("Content-Type", "application/json")
            .set("X-Ptrack-Clock", &clock.to_string());
        let body = body.map(|b| b.to_string());
        let (s, t, _) = send(req, body.as_deref());
        (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
    }

    /// A Stripe event as Stripe sends it: `Stripe-Signature: t=,v1=` over
    /// `t.body` with the endpoint secret (signed now: Stripe's tolerance is
    /// against the real clock; the event's own time is its `created`).
    fn stripe(&self, id: &str, kind: &str, created_ms: i64, object: Value) -> Value {
        let body = json!({"id": id, "object": "event", "api_version": "2024-06-20",
            "created": created_ms / 1000, "data": {"object": object}, "livemode": false,
            "pending_webhooks": 1, "type": kind})
        .to_string();
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let sig = format!(
            "t={t},v1={}",
            edge::auth::sign(STRIPE_SECRET, t, body.as_bytes())
        );
        let req = agent()
            .post(&self.w.url("/integrations/stripe/saas-aff"))
            .set("Content-Type", "application/json; charset=utf-8")
            .set("Stripe-Signature", &sig);
        let (s, t, _) = send(req, Some(&body));
        let b: Value = serde_json::from_str(&t).unwrap_or(Value::String(t));
        assert!(
            s == 200 && b["status"] == "recorded",
            "stripe {kind}: {s} {b}"
        );
        b
    }

    /// A Shopify webhook: `X-Shopify-Hmac-Sha256` = base64 HMAC-SHA256 of
    /// the body with the shop's key.
    fn shopify(&self, topic: &str, webhook_id: &str, body: Value) -> Value {
        let body = body.to_string();
        let req = agent()
            .post(&self.w.url("/integrations/shopify/reseller"))
            .set("Content-Type", "application/json")
            .set("X-Shopify-Topic", topic)
            .set(
                "X-Shopify-Hmac-Sha256",
                &edge::shopify::sign(SHOPIFY_SECRET, body.as_bytes()),
            )
            .set("X-Shopify-Shop-Domain", "demo-shop.myshopify.com")
            .set("X-Shopify-Webhook-Id", webhook_id)
            .set("X-Shopify-API-Version", "2025-01");
        let (s, t, _) = send(req, Some(&body));
        let b: Value = serde_json::from_str(&t).unwrap_or(Value::String(t));
        assert!(
            s == 200 && b["status"] == "recorded",
            "shopify {topic}: {s} {b}"
        );
        b
    }

    fn admin(&self, method: &str, path: &str, body: Value) -> Value {
        let (s, b) = self.call(method, path, ADMIN_TOKEN, Some(body), self.clock);
        assert!(s < 300, "{method} {path}: {s} {b}");
        b
    }
}

fn step(n: usize, total: usize, what: &str) {
    println!("\x1b[1m[{n}/{total}]\x1b[0m {what}");
}

fn run(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("run settlement");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        panic!(
            "settlement {} failed ({}):\n{}\n{}",
            args.join(" "),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
}

fn main() {
    let started = Instant::now();
    let root = root();
    let out_dir = root.join("demo-out");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();
    let settlement = root.join("target/release/settlement");
    assert!(
        settlement.exists(),
        "build settlement first: cargo build --release -p settlement"
    );
    const STEPS: usize = 6;

    step(
        1,
        STEPS,
        "starting the edge worker in workerd (wrangler dev, local D1 and KV)",
    );
    let mut opts = Options {
        state: Some(out_dir.join("state")),
        ..Options::default()
    };
    opts.vars.push(("ALLOW_TEST_CLOCK".into(), "1".into()));
    let demo = Demo {
        w: Worker::start_with(opts),
        clock: MONTH_START - DAY,
    };
    println!("      worker at {}", demo.w.base);

    step(
        2,
        STEPS,
        "creating the demo company: 7 programs, 16 partners, their links and coupons",
    );
    let mut programs = BTreeMap::new();
    for p in PARTNERS {
        programs.entry(p.program).or_insert_with(Vec::new).push(p);
    }
    for program in programs.keys() {
        let mut settings = json!({
            "cookie_days": 30, "postback_tokens": [TOKEN], "allowed_hosts": [host_of(program)],
        });
        if *program == "saas-aff" {
            settings["tiers"] = json!(["silver", "gold"]);
            settings["pixel"] = json!(true);
            settings["cookie_days"] = json!(60);
            // Sales arrive as Stripe webhooks.
            settings["stripe_secrets"] = json!([STRIPE_SECRET]);
        }
        if *program == "reseller" {
            // The shop's orders and refunds arrive as Shopify webhooks.
            settings["shopify_secrets"] = json!([SHOPIFY_SECRET]);
        }
        demo.admin("PUT", &format!("/api/programs/{program}"), settings);
    }
    let mut slugs: BTreeMap<&str, String> = BTreeMap::new();
    for p in PARTNERS {
        let mut body = json!({"program": p.program, "name": p.id, "email": p.email, "status": "approved", "currency": "USD"});
        if let Some(t) = p.tier {
            body["tier"] = json!(t);
        }
        if let Some(parent) = p.parent {
            body["parent"] = json!(parent);
        }
        demo.admin("PUT", &format!("/api/partners/{}", p.id), body);
        let link = demo.admin(
            "POST",
            "/api/links",
            json!({"partner": p.id, "program": p.program, "slug": format!("{}-main", p.id),
                   "destination": format!("https://{}/?ref={{click_id}}&utm_source={{partner}}&c={{sub1}}", host_of(p.program))}),
        );
        slugs.insert(p.id, link["slug"].as_str().unwrap().to_string());
    }
    for (code, partner, program) in [
        ("KOL15", "prop-kol", "prop"),
        ("FUNDED15", "prop-yt", "prop"),
        // Shopify discount codes of the resellers.
        ("ACME10", "res-acme", "reseller"),
        ("BYTE10", "res-byte", "reseller"),
    ] {
        demo.admin(
            "PUT",
            &format!("/api/coupons/{code}"),
            json!({"partner": partner, "program": program}),
        );
    }

    // Partner keys (shown once) for the partners who use the portal API.
    let mut keys: BTreeMap<&str, String> = BTreeMap::new();
    for id in ["ref-north", "ref-south", "tech-zap"] {
        let k = demo.admin("POST", &format!("/api/partners/{id}/keys"), json!({}));
        keys.insert(id, k["key"].as_str().unwrap().to_string());
    }
    demo.admin(
        "PUT",
        "/api/mdf/budgets/tech-zap-2026-q4",
        json!({"program": "tech", "partner": "tech-zap", "quarter": "2026-Q4", "amount": "2000.00", "currency": "USD"}),
    );

    step(3, STEPS, &format!("replaying {PERIOD}: clicks (bots mixed in), Stripe and Shopify webhooks, postbacks, refunds, chargebacks, trades"));
    let mut rng = Rng(0x005e_ed20_2610);
    // (partner, clock, user agent, sub1)
    let mut clicks: Vec<(&'static str, i64, String, String)> = Vec::new();
    let weights: BTreeMap<&str, u64> = [
        ("aff-ana", 60),
        ("aff-ben", 35),
        ("aff-cleo", 25),
        ("aff-dev", 45),
        ("ref-north", 8),
        ("ref-south", 6),
        ("res-acme", 10),
        ("res-byte", 7),
        ("tech-zap", 12),
        ("ib-master", 20),
        ("ib-sub1", 15),
        ("ib-sub2", 12),
        ("cas-stream", 30),
        ("cas-portal", 25),
        ("prop-kol", 6),
        ("prop-yt", 6),
    ]
    .into_iter()
    .collect();
    for day in 0..31 {
        for p in PARTNERS {
            let n = weights[p.id] / 3 + rng.below(weights[p.id] * 2 / 3);
            for _ in 0..n {
                let t = MONTH_START + day * DAY + rng.below(DAY as u64) as i64;
                let ua = if rng.chance(8) {
                    BOTS[rng.below(BOTS.len() as u64) as usize].to_string()
                } else {
                    format!(
                        "{} v{}",
                        BROWSERS[rng.below(BROWSERS.len() as u64) as usize],
                        rng.below(5000)
                    )
                };
                let sub = ["newsletter", "youtube", "blog", "search", "social"]
                    [rng.below(5) as usize]
                    .to_string();
                clicks.push((p.id, t, ua, sub));
            }
        }
    }
    let total = clicks.len();
    let results: Arc<Mutex<Vec<(usize, String, bool)>>> = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let clicks = Arc::new(clicks);
    let slugs = Arc::new(slugs);
    let base = demo.w.base.clone();
    let handles: Vec<_> = (0..12)
        .map(|_| {
            let (results, next, clicks, slugs, base) = (
                results.clone(),
                next.clone(),
                clicks.clone(),
                slugs.clone(),
                base.clone(),
            );
            std::thread::spawn(move || {
                let a = agent();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((partner, t, ua, sub)) = clicks.get(i) else {
                        break;
                    };
                    let url = format!("{base}/c/{}?sub1={sub}", slugs[partner]);
                    let (s, _, head) = send(
                        a.get(&url)
                            .set("User-Agent", ua)
                            .set("X-Ptrack-Clock", &t.to_string()),
                        None,
                    );
                    assert_eq!(s, 302);
                    let loc = head.header("Location").unwrap_or_default();
                    let cid = url::Url::parse(loc)
                        .ok()
                        .and_then(|u| {
                            u.query_pairs()
                                .find(|(k, _)| k == "ref")
                                .map(|(_, v)| v.into_owned())
                        })
                        .unwrap_or_default();
                    let human = !BOTS.contains(&ua.as_str());
                    results.lock().unwrap().push((i, cid, human));
                    if i % 1000 == 999 {
                        eprint!("\r      clicks {}/{}", i + 1, clicks.len());
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    eprintln!("\r      clicks {total}/{total}");
    let mut clicked = results.lock().unwrap().clone();
    clicked.sort();

    // Conversions from a share of the human clicks, a few hours later.
    let pb = |body: Value, t: i64| -> (u16, Value) {
        let (s, b) = demo.call("POST", "/postback", TOKEN, Some(body), t);
        assert!(s == 200 || s == 409, "postback answered {s}: {b}");
        (s, b)
    };
    let mut conversions = 0usize;
    let mut via = Via::default();
    let mut shop_rng = Rng(0x0005_4091_f7ee);
    let mut n_txn = 0u64;
    let mut txn = |prefix: &str| {
        n_txn += 1;
        format!("{prefix}-{n_txn:05}")
    };
    for (i, cid, human) in &clicked {
        let (partner, t, _, _) = &clicks[*i];
        let p = PARTNERS.iter().find(|p| p.id == *partner).unwrap();
        if !human {
            continue;
        }
        let later = |rng: &mut Rng, max_h: u64| {
            (*t + 600_000 + rng.below(max_h * 3_600_000) as i64).min(MONTH_START + 31 * DAY - 1)
        };
        let customer = format!("cust-{i:05}");
        match p.program {
            "saas-aff" if rng.chance(12) => {
                let ts = later(&mut rng, 6);
                pb(
                    json!({"program": "saas-aff", "event": "signup", "txn_id": txn("SU"), "click_id": cid, "customer": customer}),
                    ts,
                );
                conversions += 1;
                if rng.chance(45) {
                    // $29.00, $79.00 or $199.00, in cents as Stripe counts.
                    let cents = [2900, 7900, 19900][rng.below(3) as usize];
                    let sale_txn = txn("INV");
                    let ts2 = later(&mut rng, 48);
                    let pi = format!("pi_{sale_txn}");
                    // Monthly plans are Stripe subscriptions (the click id in the
                    // subscription's metadata reaches every invoice); annual
                    // plans are one-time Checkout payments (the click id as
                    // client_reference_id).
                    let invoice = rng.chance(50).then(|| format!("in_{sale_txn}"));
                    match &invoice {
                        Some(inv) => demo.stripe(
                            &format!("evt_{sale_txn}"),
                            "invoice.paid",
                            ts2,
                            json!({"id": inv, "object": "invoice", "amount_due": cents,
                                   "amount_paid": cents, "billing_reason": "subscription_create",
                                   "charge": format!("ch_{sale_txn}"), "currency": "usd",
                                   "customer": customer, "paid": true, "payment_intent": pi,
                                   "status": "paid", "subscription": format!("sub_{sale_txn}"),
                                   "subscription_details": {"metadata": {"click_id": cid}}}),
                        ),
                        None => demo.stripe(
                            &format!("evt_{sale_txn}"),
                            "checkout.session.completed",
                            ts2,
                            json!({"id": format!("cs_{sale_txn}"), "object": "checkout.session",
                                   "amount_subtotal": cents, "amount_total": cents,
                                   "client_reference_id": cid, "currency": "usd",
                                   "customer": customer, "invoice": null, "metadata": {},
                                   "mode": "payment", "payment_intent": pi,
                                   "payment_status": "paid", "status": "complete"}),
                        ),
                    };
                    conversions += 1;
                    via.stripe_sales += 1;
                    if rng.chance(6) {
                        // Refunded in the Dashboard: charge.refunded names the
                        // payment (and the invoice of a subscription).
                        demo.stripe(
                            &format!("evt_{}", txn("RF")),
                            "charge.refunded",
                            later(&mut rng, 200),
                            json!({"id": format!("ch_{sale_txn}"), "object": "charge",
                                   "amount": cents, "amount_captured": cents,
                                   "amount_refunded": cents, "currency": "usd",
                                   "customer": customer, "invoice": invoice,
                                   "payment_intent": pi, "refunded": true}),
                        );
                        conversions += 1;
                        via.stripe_refunds += 1;
                    }
                }
            }
            "reseller" if rng.chance(25) => {
                // The reseller's order in the Shopify store, paid: orders/paid.
                // The theme kept the click id as the cart attribute pt_click;
                // every fourth order instead carries the reseller's discount code.
                let po = txn("PO");
                let order_id =
                    5_830_000_000_000u64 + po.trim_start_matches("PO-").parse::<u64>().unwrap_or(0);
                let amount = rng.money(400, 2500);
                let ts = later(&mut rng, 24);
                let at = edge::time::Timestamp(ts).to_string();
                let mut order = json!({"id": order_id,
                    "admin_graphql_api_id": format!("gid://shopify/Order/{order_id}"),
                    "name": format!("#{}", 1000 + via.shopify_sales), "currency": "USD",
                    "financial_status": "paid", "total_price": amount, "subtotal_price": amount,
                    "total_tax": "0.00", "created_at": at, "processed_at": at, "test": false,
                    "customer": {"id": 7_210_000_000_000u64 + *i as u64},
                    "landing_site": "/", "note_attributes": [], "discount_codes": []});
                if via.shopify_sales % 4 == 3 {
                    let code = if p.id == "res-acme" {
                        "ACME10"
                    } else {
                        "BYTE10"
                    };
                    order["discount_codes"] =
                        json!([{"code": code, "amount": "0.00", "type": "percentage"}]);
                } else {
                    order["note_attributes"] = json!([{"name": "pt_click", "value": cid}]);
                }
                demo.shopify("orders/paid", &format!("wh-order-{order_id}"), order);
                conversions += 1;
                via.shopify_sales += 1;
                // Some orders are refunded in part (refunds/create); a
                // separate generator, so the rest of the month is unchanged.
                if shop_rng.chance(15) {
                    let refund_id = 9_110_000_000u64 + order_id % 1_000_000;
                    let part = shop_rng.money(50, 300);
                    let rt =
                        (ts + (1 + shop_rng.below(6) as i64) * DAY).min(MONTH_START + 31 * DAY - 1);
                    let rat = edge::time::Timestamp(rt).to_string();
                    demo.shopify(
                        "refunds/create",
                        &format!("wh-refund-{refund_id}"),
                        json!({"id": refund_id, "order_id": order_id, "created_at": rat,
                               "processed_at": rat, "note": "damaged in transit", "restock": false,
                               "refund_line_items": [],
                               "transactions": [{"id": refund_id + 1, "order_id": order_id,
                                 "kind": "refund", "gateway": "shopify_payments",
                                 "status": "success", "amount": part, "currency": "USD"}]}),
                    );
                    conversions += 1;
                    via.shopify_refunds += 1;
                }
            }
            "tech" if rng.chance(20) => {
                pb(
                    json!({"program": "tech", "event": "sale", "txn_id": txn("TS"), "click_id": cid, "customer": customer, "amount": rng.money(20, 120), "currency": "USD"}),
                    later(&mut rng, 24),
                );
                conversions += 1;
            }
            "fx-ib" if rng.chance(18) => {
                let acct = format!("acct-{i:05}");
                pb(
                    json!({"program": "fx-ib", "event": "ftd", "txn_id": txn("FTD"), "click_id": cid, "customer": acct, "amount": rng.money(100, 2000), "currency": "USD"}),
                    later(&mut rng, 12),
                );
                conversions += 1;
                for _ in 0..(1 + rng.below(6)) {
                    let lots = format!("{}.{}", rng.below(4), 1 + rng.below(9));
                    let inst = ["EURUSD", "GBPUSD", "XAUUSD", "USDJPY"][rng.below(4) as usize];
                    pb(
                        json!({"program": "fx-ib", "event": "trade", "txn_id": txn("TR"), "click_id": cid, "customer": acct, "lots": lots, "instrument": inst}),
                        later(&mut rng, 200),
                    );
                    conversions += 1;
                }
            }
            "casino" if rng.chance(15) => {
                let player = format!("player-{i:05}");
                pb(
                    json!({"program": "casino", "event": "ftd", "txn_id": txn("DEP"), "click_id": cid, "customer": player, "amount": rng.money(20, 300), "currency": "EUR"}),
                    later(&mut rng, 6),
                );
                let ngr = if rng.chance(30) {
                    format!("-{}", rng.money(10, 200))
                } else {
                    rng.money(5, 400)
                };
                pb(
                    json!({"program": "casino", "event": "revenue", "txn_id": txn("NGR"), "click_id": cid, "customer": player, "amount": ngr, "currency": "EUR"}),
                    later(&mut rng, 300),
                );
                conversions += 2;
            }
            _ => {}
        }
    }
    // Referral partners register their deals in the portal API; the operator
    // decides; won deals are reported by customer only, and settlement
    // attributes them through the approved registration.
    let (mut deals_approved, mut deal_conflicts) = (0usize, 0usize);
    for d in 0..24i64 {
        let partner = if d % 3 == 0 { "ref-south" } else { "ref-north" };
        let day = MONTH_START + d * DAY + rng.below(DAY as u64 / 2) as i64;
        let customer = format!("acct-enterprise-{d:02}");
        let (s, deal) = demo.call(
            "POST",
            "/partner/v1/deals",
            &keys[partner],
            Some(json!({"program": "referral", "customer": customer, "company": format!("Enterprise {d:02} Ltd"),
                        "domain": format!("enterprise{d:02}.example"), "value": rng.money(5000, 40000), "currency": "USD",
                        "expected_close": "2026-12-15"})),
            day,
        );
        assert_eq!(s, 201, "deal registration: {deal}");
        // Another partner trying to register the same customer is refused, naming nobody.
        if d % 5 == 0 {
            let other = if partner == "ref-north" {
                "ref-south"
            } else {
                "ref-north"
            };
            let (s, b) = demo.call("POST", "/partner/v1/deals", &keys[other],
                Some(json!({"program": "referral", "customer": customer, "company": "Same customer"})), day + 3_600_000);
            assert_eq!((s, b["status"].as_str()), (409, Some("conflict")));
            deal_conflicts += 1;
        }
        let approve = !rng.chance(20);
        let decision = if approve { "approve" } else { "reject" };
        let id = deal["id"].as_str().unwrap();
        let (s, b) = demo.call(
            "POST",
            &format!("/api/deals/{id}/decision"),
            ADMIN_TOKEN,
            Some(json!({"decision": decision, "reason": "checked against the CRM"})),
            day + 7_200_000,
        );
        assert!(s < 300, "deal decision: {b}");
        if approve {
            deals_approved += 1;
            if rng.chance(75) {
                let won = (day + (2 + rng.below(5) as i64) * DAY).min(MONTH_START + 31 * DAY - 1);
                pb(
                    json!({"program": "referral", "event": "deal_won", "txn_id": txn("DW"), "customer": customer}),
                    won,
                );
                pb(
                    json!({"program": "referral", "event": "sale", "txn_id": txn("CT"), "customer": customer,
                          "amount": rng.money(3000, 12000), "currency": "USD"}),
                    won + 3_600_000,
                );
                conversions += 2;
            }
        }
    }
    println!("      {deals_approved} deal registrations approved, {deal_conflicts} duplicate registrations refused");

    // The technology partner runs a webinar on market-development funds.
    let day = MONTH_START + 4 * DAY;
    let (s, req) = demo.call("POST", "/partner/v1/mdf", &keys["tech-zap"],
        Some(json!({"program": "tech", "activity": "Integration webinar series", "amount": "1200.00", "currency": "USD"})), day);
    assert_eq!(s, 201, "MDF request: {req}");
    let mdf = req["id"].as_str().unwrap().to_string();
    let (s, b) = demo.call(
        "POST",
        &format!("/api/mdf/{mdf}/decision"),
        ADMIN_TOKEN,
        Some(json!({"decision": "approve", "reason": "fits the Q4 plan"})),
        day + DAY,
    );
    assert!(s < 300, "MDF decision: {b}");
    let (s, b) = demo.call("POST", &format!("/partner/v1/mdf/{mdf}/claim"), &keys["tech-zap"],
        Some(json!({"amount": "950.00", "proof_url": "https://zapflow.example/invoices/webinar-oct.pdf"})), day + 12 * DAY);
    assert!(s < 300, "MDF claim: {b}");
    let (s, b) = demo.call(
        "POST",
        &format!("/api/mdf/{mdf}/claim-decision"),
        ADMIN_TOKEN,
        Some(json!({"decision": "approve", "reason": "invoice checked"})),
        day + 13 * DAY,
    );
    assert!(s < 300, "MDF claim decision: {b}");
    println!("      MDF: 1200.00 approved for tech-zap, claim of 950.00 paid through settlement");

    // Prop-firm challenges bought with coupons (no click at all).
    for d in 0..31 {
        for _ in 0..rng.below(4) {
            let code = if rng.chance(55) { "KOL15" } else { "FUNDED15" };
            let price = ["99.00", "199.00", "349.00"][rng.below(3) as usize];
            let t = MONTH_START + d * DAY + rng.below(DAY as u64) as i64;
            let id = txn("CH");
            pb(
                json!({"program": "prop", "event": "sale", "txn_id": id, "coupon": code, "customer": format!("trader-{d}-{}", rng.below(1000)), "amount": price, "currency": "USD"}),
                t,
            );
            conversions += 1;
            if rng.chance(7) {
                pb(
                    json!({"program": "prop", "event": "chargeback", "txn_id": txn("CB"), "original_txn_id": id, "amount": price, "currency": "USD"}),
                    (t + 5 * DAY).min(MONTH_START + 31 * DAY - 1),
                );
                conversions += 1;
            }
        }
    }
    // A self-referral (the partner's own email) and an unattributed sale.
    pb(
        json!({"program": "saas-aff", "event": "signup", "txn_id": "SELF-1", "coupon": null, "customer": "aff-ben", "email": "ben@devblog.example"}),
        MONTH_START + 10 * DAY,
    );
    pb(
        json!({"program": "saas-aff", "event": "sale", "txn_id": "ORGANIC-1", "customer": "walk-in", "amount": "79.00", "currency": "USD"}),
        MONTH_START + 11 * DAY,
    );
    conversions += 2;
    println!("      {total} clicks, {conversions} conversions sent");

    // Every acknowledged click must reach the export (they are written in batches).
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n = count_clicks(&demo.w);
        if n >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {total} clicks reached the export"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }

    step(
        4,
        STEPS,
        "settlement pull: the export API into settlement.db",
    );
    let db = out_dir.join("settlement.db");
    let db_s = db.display().to_string();
    let edge = demo.w.base.clone();
    run(
        &settlement,
        &[
            "--db",
            &db_s,
            "pull",
            "--edge",
            &edge,
            "--token",
            EXPORT_TOKEN,
        ],
    );

    step(
        5,
        STEPS,
        &format!("settlement run, close and report for {PERIOD}"),
    );
    let config = root
        .join("examples/demo/programs.toml")
        .display()
        .to_string();
    run(
        &settlement,
        &[
            "--db", &db_s, "run", "--config", &config, "--period", PERIOD,
        ],
    );
    run(&settlement, &["--db", &db_s, "close", "--period", PERIOD]);
    let report_dir = out_dir.join("report");
    let report_s = report_dir.display().to_string();
    run(
        &settlement,
        &[
            "--db", &db_s, "report", "--period", PERIOD, "--out", &report_s,
        ],
    );

    step(6, STEPS, "summary");
    let mut demo = demo;
    demo.w.stop();
    summary(&report_dir, total, conversions, &via, started);
}

fn count_clicks(w: &Worker) -> usize {
    let mut after = 0u64;
    let mut n = 0;
    loop {
        let (s, body, head) = send(
            agent()
                .get(&w.url(&format!("/export/v1/events?after={after}&limit=5000")))
                .set("Authorization", &format!("Bearer {EXPORT_TOKEN}")),
            None,
        );
        assert_eq!(s, 200);
        n += body
            .lines()
            .filter(|l| l.contains("\"type\":\"click\""))
            .count();
        let next: u64 = head
            .header("X-Next-Cursor")
            .and_then(|c| c.parse().ok())
            .unwrap_or(after);
        if next == after {
            return n;
        }
        after = next;
    }
}

fn read_csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            headers
                .iter()
                .map(str::to_string)
                .zip(rec.unwrap().iter().map(str::to_string))
                .collect()
        })
        .collect()
}

fn summary(report: &Path, clicks: usize, conversions: usize, via: &Via, started: Instant) {
    let statements = read_csv(&report.join("statements.csv"));
    let payouts = read_csv(&report.join("payouts.csv"));
    let dec = |s: &str| s.parse::<rust_decimal::Decimal>().unwrap_or_default();
    let mut by_model: BTreeMap<&str, rust_decimal::Decimal> = BTreeMap::new();
    for s in &statements {
        *by_model.entry(model_of(&s["program"])).or_default() += dec(&s["earned"]);
    }
    println!();
    println!("  clicks sent        {clicks:>10}");
    println!("  conversions sent   {conversions:>10}");
    println!(
        "    sales via Stripe   {:>8}   (+{} charge.refunded)",
        via.stripe_sales, via.stripe_refunds
    );
    println!(
        "    sales via Shopify  {:>8}   (+{} refunds/create)",
        via.shopify_sales, via.shopify_refunds
    );
    println!("  statements         {:>10}", statements.len());
    println!();
    println!("  earned by model");
    for (m, v) in &by_model {
        println!("    {m:<14} {v:>12} USD");
    }
    let total: rust_decimal::Decimal = payouts.iter().map(|p| dec(&p["amount"])).sum();
    println!();
    println!(
        "  payouts            {:>10} partners, {total} USD",
        payouts.len()
    );
    let mut top: Vec<&BTreeMap<String, String>> = statements.iter().collect();
    top.sort_by(|a, b| {
        dec(&b["earned"])
            .cmp(&dec(&a["earned"]))
            .then(a["partner"].cmp(&b["partner"]))
    });
    println!("  top partners");
    for s in top.iter().take(5) {
        println!(
            "    {:<12} {:<10} {:>12} {}",
            s["partner"], s["program"], s["earned"], s["currency"]
        );
    }
    println!();
    println!("  report: {}", report.join("report.html").display());
    println!("  done in {:.0} s", started.elapsed().as_secs_f64());
}
