//! `make bench` (edge part): the click route against a trivial static
//! redirect in the same worker, same run, same load generator; native
//! micro-benchmarks of click-id mint+verify and bot classification; the
//! release wasm size. Prints the figures and writes target/bench/edge.json.

use e2e::harness::{agent, root, send, Worker, ADMIN_TOKEN};
use edge::bot::{classify, Signals};
use edge::clickid::{mint, verify, ClickClaims};
use serde_json::json;
use std::hint::black_box;
use std::time::{Duration, Instant};

const UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: usize,
}

/// `clients` threads, each with a keep-alive connection, for `dur`.
fn load(url: &str, clients: usize, dur: Duration) -> Load {
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let url = url.to_string();
            std::thread::spawn(move || {
                let a = agent();
                let mut lat = Vec::new();
                let mut i = 0u64;
                while start.elapsed() < dur {
                    let t = Instant::now();
                    let (s, _, _) = send(
                        a.get(&url).set("User-Agent", &format!("{UA} c{c}.{i}")),
                        None,
                    );
                    assert_eq!(s, 302, "{url}");
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<f64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Load {
        rps: lat.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        requests: lat.len(),
    }
}

fn micro() -> (f64, f64) {
    let secret = b"bench-secret-0123456789";
    let n = 200_000u32;
    let t = Instant::now();
    for i in 0..n {
        let claims = ClickClaims {
            ts_ms: 1_800_000_000_000 + i64::from(i),
            nonce: i,
            program: 7,
            link: 9000 + i,
            partner: 42,
        };
        let id = mint(secret, black_box(&claims));
        let back = verify(&[secret], black_box(&id));
        assert!(back.is_ok());
    }
    let mint_verify_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);

    let agents = [
        UA,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "curl/8.5.0",
    ];
    // Build the matcher once, as the worker does per isolate.
    let _ = classify(&Signals {
        method: "GET",
        user_agent: Some(UA),
        purpose: None,
    });
    let n = 200_000usize;
    let t = Instant::now();
    for i in 0..n {
        let s = Signals {
            method: "GET",
            user_agent: Some(agents[i % agents.len()]),
            purpose: None,
        };
        black_box(classify(black_box(&s)));
    }
    let bot_classify_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    (mint_verify_us, bot_classify_us)
}

fn main() {
    let root = root();
    let wasm = root.join("edge/build/index_bg.wasm");
    let wasm_bytes = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
    let gz = std::process::Command::new("gzip")
        .arg("-9")
        .arg("-c")
        .arg(&wasm)
        .output()
        .expect("gzip");
    let wasm_gzip_bytes = gz.stdout.len();

    let (mint_verify_us, bot_classify_us) = micro();
    println!("click id mint+verify: {mint_verify_us:.2} us   bot classification: {bot_classify_us:.2} us");

    eprintln!("starting the worker in wrangler dev ...");
    let w = Worker::start();
    let put = |path: &str, body: serde_json::Value, method: &str| {
        let (s, b, _) = send(
            agent()
                .request(method, &w.url(path))
                .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
                .set("Content-Type", "application/json"),
            Some(&body.to_string()),
        );
        assert!(s < 300, "{path}: {s} {b}");
    };
    put(
        "/api/programs/bench",
        json!({"allowed_hosts": ["shop.example"]}),
        "PUT",
    );
    put(
        "/api/partners/bench-aff",
        json!({"program": "bench", "status": "approved"}),
        "PUT",
    );
    put(
        "/api/links",
        json!({"partner": "bench-aff", "program": "bench", "destination": "https://shop.example/?r={click_id}", "slug": "bench"}),
        "POST",
    );

    let clients: usize = std::env::var("BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let base_url = w.url("/__baseline");
    let click_url = w.url("/c/bench");
    // Warm up both, then alternate so drift hits both alike.
    load(&base_url, clients, Duration::from_secs(1));
    load(&click_url, clients, Duration::from_secs(1));
    let mut base = Vec::new();
    let mut click = Vec::new();
    for _ in 0..2 {
        base.push(load(&base_url, clients, Duration::from_secs(secs)));
        click.push(load(&click_url, clients, Duration::from_secs(secs)));
    }
    let agg = |v: &[Load]| Load {
        rps: v.iter().map(|l| l.rps).sum::<f64>() / v.len() as f64,
        p50_ms: v.iter().map(|l| l.p50_ms).sum::<f64>() / v.len() as f64,
        p99_ms: v.iter().map(|l| l.p99_ms).sum::<f64>() / v.len() as f64,
        requests: v.iter().map(|l| l.requests).sum(),
    };
    let (b, c) = (agg(&base), agg(&click));
    let click_rps_ratio = c.rps / b.rps;
    let click_p99_ratio = c.p99_ms / b.p99_ms;
    println!();
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10}",
        "route", "req/s", "p50 ms", "p99 ms", "requests"
    );
    println!(
        "{:<22} {:>10.0} {:>10.2} {:>10.2} {:>10}",
        "/__baseline (static)", b.rps, b.p50_ms, b.p99_ms, b.requests
    );
    println!(
        "{:<22} {:>10.0} {:>10.2} {:>10.2} {:>10}",
        "/c/{slug} (click)", c.rps, c.p50_ms, c.p99_ms, c.requests
    );
    println!();
    println!("click throughput ratio: {click_rps_ratio:.2}x the baseline (target >= 0.8)");
    println!("click p99 ratio:        {click_p99_ratio:.2}x the baseline (target <= 1.5)");
    println!("mint+verify:            {mint_verify_us:.2} us (target < 5)");
    println!("wasm:                   {wasm_bytes} bytes raw, {wasm_gzip_bytes} gzip (target < 1 MB raw)");

    let out = json!({
        "click_rps_ratio": click_rps_ratio,
        "click_p99_ratio": click_p99_ratio,
        "mint_verify_us": mint_verify_us,
        "bot_classify_us": bot_classify_us,
        "wasm_bytes": wasm_bytes,
        "wasm_gzip_bytes": wasm_gzip_bytes,
        "baseline_rps": b.rps,
        "click_rps": c.rps,
        "baseline_p99_ms": b.p99_ms,
        "click_p99_ms": c.p99_ms,
        "clients": clients,
        "seconds_per_run": secs,
    });
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("edge.json"),
        serde_json::to_string_pretty(&out).unwrap(),
    )
    .unwrap();
    println!("wrote target/bench/edge.json");
}
