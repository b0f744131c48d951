//! Exactly once under concurrency and abuse, in real workerd: concurrent
//! duplicate postbacks, clicks from many clients, a barrage of malformed
//! requests, and the KV-miss fallback to D1.

use e2e::harness::{agent, send, Options, Worker, EXPORT_TOKEN};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const TOKEN: &str = "postback-token-0123456789";
const UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

fn setup(w: &Worker, prefix: &str) -> (String, String) {
    let program = format!("{prefix}-prog");
    let partner = format!("{prefix}-aff");
    assert_eq!(
        w.admin(
            "PUT",
            &format!("/api/programs/{program}"),
            json!({"postback_tokens": [TOKEN], "allowed_hosts": ["shop.example"]})
        )
        .0,
        200
    );
    assert!(
        w.admin(
            "PUT",
            &format!("/api/partners/{partner}"),
            json!({"program": program, "status": "approved"})
        )
        .0 < 300
    );
    let (s, b) = w.admin("POST",
        "/api/links",
        json!({"partner": partner, "program": program, "destination": "https://shop.example/?r={click_id}"}),
    );
    assert_eq!(s, 201, "{b}");
    (program, b["slug"].as_str().unwrap().to_string())
}

#[test]
fn concurrency_and_abuse() {
    let w = Worker::start();

    // 200 concurrent identical postbacks: one recorded, 199 duplicates.
    let (program, slug) = setup(&w, "dup");
    let barrier = Arc::new(Barrier::new(200));
    let url = w.url("/postback");
    let body = json!({"program": program, "event": "sale", "txn_id": "SAME-1", "amount": "10.00", "currency": "USD"}).to_string();
    let handles: Vec<_> = (0..200)
        .map(|_| {
            let (b, url, body) = (barrier.clone(), url.clone(), body.clone());
            std::thread::spawn(move || {
                b.wait();
                let (s, text, _) = send(
                    agent()
                        .post(&url)
                        .set("Authorization", &format!("Bearer {TOKEN}"))
                        .set("Content-Type", "application/json"),
                    Some(&body),
                );
                (s, serde_json::from_str::<Value>(&text).unwrap())
            })
        })
        .collect();
    let results: Vec<(u16, Value)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    let recorded = results
        .iter()
        .filter(|(_, v)| v["status"] == "recorded")
        .count();
    let dups = results
        .iter()
        .filter(|(_, v)| v["status"] == "duplicate")
        .count();
    assert_eq!((recorded, dups), (1, 199));
    let ids: HashSet<&str> = results
        .iter()
        .map(|(_, v)| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "every answer names the one recorded event");

    // 1,000 clicks from 16 concurrent clients: 1,000 click records, strictly
    // increasing seq, each acknowledged click id exported exactly once.
    let clients = 16;
    let per = 1000 / clients;
    let extra = 1000 - per * clients;
    let click_url = w.url(&format!("/c/{slug}"));
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let url = click_url.clone();
            let n = per + usize::from(c < extra);
            std::thread::spawn(move || {
                let a = agent();
                (0..n)
                    .map(|i| {
                        let (s, _, head) = send(
                            a.get(&url)
                                .set("User-Agent", &format!("{UA} client/{c}.{i}")),
                            None,
                        );
                        assert_eq!(s, 302);
                        let loc = head.header("Location").unwrap().to_string();
                        loc.rsplit_once("r=").unwrap().1.to_string()
                    })
                    .collect::<Vec<String>>()
            })
        })
        .collect();
    let acked: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(acked.len(), 1000);
    let start = Instant::now();
    let clicks = loop {
        let all = w.export_all();
        let clicks: Vec<Value> = all
            .into_iter()
            .filter(|e| e["type"] == "click" && e["link"] == slug.as_str())
            .collect();
        if clicks.len() >= 1000 || start.elapsed() > Duration::from_secs(30) {
            break clicks;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(clicks.len(), 1000);
    let seqs: Vec<u64> = clicks.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|p| p[0] < p[1]),
        "seq strictly increasing"
    );
    let exported: HashSet<&str> = clicks
        .iter()
        .map(|e| e["click_id"].as_str().unwrap())
        .collect();
    assert_eq!(exported.len(), 1000);
    assert!(
        acked.iter().all(|c| exported.contains(c.as_str())),
        "an acknowledged click is missing"
    );
    assert!(
        clicks.iter().all(|e| e["unique"] == true),
        "distinct visitors are unique"
    );

    // A barrage of malformed requests, then the worker still redirects.
    let addr = format!("127.0.0.1:{}", w.port);
    let raw_requests: Vec<Vec<u8>> = vec![
        b"GET /c/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        b"POST /postback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 6\r\nConnection: close\r\n\r\n\xff\xfe{\x00}".to_vec(),
        format!("GET /c/{slug} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "a".repeat(60_000)).into_bytes(),
        b"GARBAGE\r\n\r\n".to_vec(),
    ];
    for raw in &raw_requests {
        if let Ok(mut s) = TcpStream::connect(&addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(raw);
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
        }
    }
    let pb = |body: &str, ct: &str| {
        send(
            agent()
                .post(&w.url("/postback"))
                .set("Authorization", &format!("Bearer {TOKEN}"))
                .set("Content-Type", ct),
            Some(body),
        )
        .0
    };
    let p = &program;
    let bodies = [
        (r#"{"program":"#.to_string(), "application/json"),
        (json!({"program": p, "event": "sale", "txn_id": "M1", "amount": "1".repeat(1000), "currency": "USD"}).to_string(), "application/json"),
        (json!({"program": p, "event": "sale", "txn_id": "M2", "amount": "-1.00", "currency": "USD"}).to_string(), "application/json"),
        (json!({"program": p, "event": "sale", "txn_id": "M3", "amount": "NaN", "currency": "USD"}).to_string(), "application/json"),
        (json!({"program": p, "event": "sale", "txn_id": "M4", "amount": "Infinity", "currency": "USD"}).to_string(), "application/json"),
        (json!({"program": p, "event": "sale", "txn_id": "M5", "amount": 1e308, "currency": "USD"}).to_string(), "application/json"),
        (json!([1, 2, 3]).to_string(), "application/json"),
        ("program=%ZZ&&&==&event".to_string(), "application/x-www-form-urlencoded"),
        ("x".repeat(20_000), "text/plain"),
        (format!("{{\"program\":\"{p}\",\"txn_id\":\"{}\"}}", "\\u0000".repeat(100)), "application/json"),
    ];
    for (body, ct) in &bodies {
        let s = pb(body, ct);
        assert!(
            matches!(s, 401 | 413 | 422),
            "{s} for {}",
            &body[..body.len().min(60)]
        );
    }
    for path in [
        "/c/%00",
        "/c/..%2F..%2Fetc",
        "/pixel?program=%FF",
        "/export/v1/events?after=-1",
        "/postback?program=",
    ] {
        let (s, _, _) = send(
            agent()
                .get(&w.url(path))
                .set("Authorization", &format!("Bearer {EXPORT_TOKEN}")),
            None,
        );
        assert!(s < 500, "{path} answered {s}");
    }
    let (s, _, _) = send(
        agent()
            .get(&w.url("/export/v1/events?after=abc"))
            .set("Authorization", &format!("Bearer {EXPORT_TOKEN}")),
        None,
    );
    assert_eq!(s, 400);
    let (s, _, head) = send(agent().get(&click_url).set("User-Agent", UA), None);
    assert_eq!(s, 302, "the worker still redirects after the barrage");
    assert!(head
        .header("Location")
        .unwrap()
        .starts_with("https://shop.example/?r="));
    let log = w.log_text();
    assert!(!log.contains("panicked"), "the worker panicked:\n{log}");
}

#[test]
fn kv_miss_falls_back_to_d1_and_refills() {
    let mut w = Worker::start();
    let (_, slug) = setup(&w, "kvmiss");
    let state = w.state.clone();
    w.stop();
    // Lose every KV entry; D1 keeps the registry.
    let kv_dir = state.join("v3/kv");
    assert!(kv_dir.exists(), "no KV state under {}", kv_dir.display());
    std::fs::remove_dir_all(&kv_dir).unwrap();
    let w = Worker::start_with(Options {
        state: Some(state.clone()),
        ..Options::default()
    });
    let (s, _, head) = send(
        agent()
            .get(&w.url(&format!("/c/{slug}")))
            .set("User-Agent", UA),
        None,
    );
    assert_eq!(s, 302);
    assert!(head
        .header("Location")
        .unwrap()
        .starts_with("https://shop.example/?r="));
    assert!(kv_dir.exists(), "KV was refilled");
}
