//! The partner portal and the operator console in real headless Chromium
//! (Debian's `chromium` and `chromium-driver`, `edge/setup-browser.sh`),
//! driven over the W3C WebDriver protocol by a small synchronous client: a
//! partner signs in with its key, registers a deal and requests MDF; the
//! operator approves both in the console; the partner sees the result and
//! claims the funds. Screenshots go to target/screenshots/.

use e2e::harness::{agent, free_port, root, send, Worker, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver and one browser session; both stopped on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn find_binary(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|n| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {n}"))
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|n| n.to_string())
}

/// chromedriver on a fresh port, answering. A port picked free can be taken
/// by another process before chromedriver binds it (the tests run side by
/// side): chromedriver then exits, and it starts again on another.
fn start_chromedriver(chromedriver: &str) -> (u16, std::process::Child) {
    for _ in 0..5 {
        let port = free_port();
        let mut driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        // a short probe: whatever took the port may accept and never answer
        let probe = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build();
        let start = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            if driver.try_wait().ok().flatten().is_some() {
                eprintln!("chromedriver exited (port {port} taken?); starting it again");
                break;
            }
            if probe
                .get(&format!("http://127.0.0.1:{port}/status"))
                .call()
                .is_ok()
            {
                return (port, driver);
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
        }
    }
    panic!("chromedriver exited five times without answering");
}

impl Browser {
    fn start() -> Browser {
        let chromium = find_binary(&["chromium", "chromium-browser"])
            .expect("chromium is not installed: run edge/setup-browser.sh");
        let chromedriver = find_binary(&["chromedriver"])
            .expect("chromedriver is not installed: run edge/setup-browser.sh");
        let chromium_path = String::from_utf8(
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {chromium}"))
                .output()
                .expect("locate chromium")
                .stdout,
        )
        .expect("utf-8 path")
        .trim()
        .to_string();
        let (port, driver) = start_chromedriver(&chromedriver);
        let base = format!("http://127.0.0.1:{port}");
        let profile =
            std::env::temp_dir().join(format!("ptrack-chromium-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&profile).expect("profile dir");
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium_path, "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,1500",
                format!("--user-data-dir={}", profile.display())]}}}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            _profile: TempDir(profile),
        };
        let v = b.cmd("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        b
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let req = agent()
            .request(method, &url)
            .set("Content-Type", "application/json");
        let (s, text, _) = send(req, body.map(|b| b.to_string()).as_deref());
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(s, 200, "webdriver {method} {path}: {text}");
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})));
    }

    fn find_all(&self, css: &str) -> Vec<String> {
        self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
    }

    /// Waits for an element to exist.
    fn find(&self, css: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(e) = self.find_all(css).into_iter().next() {
                return e;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let url = self.cmd("GET", "/url", None);
                let html = self.js("return document.documentElement.outerHTML");
                panic!("no element {css} at {url}: {html}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn fill(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        );
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    fn text(&self, css: &str) -> String {
        match self.find_all(css).first() {
            Some(e) => self
                .cmd("GET", &format!("/element/{e}/text"), None)
                .as_str()
                .unwrap_or("")
                .to_string(),
            None => String::new(),
        }
    }

    fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Waits until the text of `css` contains `want`.
    fn wait_text(&self, css: &str, want: &str) {
        let start = Instant::now();
        loop {
            let t = self.text(css);
            if t.contains(want) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{css} never showed {want:?}; it shows {t:?}"
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn screenshot(&self, name: &str) {
        use base64::Engine;
        let png = self.cmd("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or(""))
            .expect("base64 screenshot");
        let dir = root().join("target/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), bytes).expect("write screenshot");
    }

    /// A full-page screenshot: the window grows to the document first.
    fn full_screenshot(&self, name: &str) {
        let h = self
            .js("return Math.ceil(document.documentElement.scrollHeight)")
            .as_u64()
            .unwrap_or(1500)
            .clamp(600, 6000);
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": 1280, "height": h + 120})),
        );
        self.screenshot(name);
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": 1280, "height": 1500})),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = send(
                agent().delete(&format!("{}/session/{}", self.base, self.session)),
                None,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn ok(r: (u16, Value)) -> Value {
    assert!((200..300).contains(&r.0), "{}", r.1);
    r.1
}

#[test]
fn partner_registers_a_deal_and_requests_mdf_operator_approves_in_the_console() {
    let w = Worker::start();
    // A program with tiers, a gold partner with a key, a budget, an asset,
    // a link with traffic, and a statement.
    ok(w.admin(
        "PUT",
        "/api/programs/acme",
        json!({"name": "Acme Cloud partners",
        "allowed_hosts": ["shop.example"], "tiers": ["silver", "gold", "platinum"], "deal_days": 90,
        "currency": "USD"}),
    ));
    ok(w.admin("PUT",
        "/api/partners/northwind",
        json!({"program": "acme", "name": "Northwind Digital",
        "email": "team@northwind.example", "tier": "gold", "status": "approved", "currency": "USD"}),
    ));
    ok(w.admin(
        "PUT",
        "/api/partners/northwind/crm",
        json!({"manager": "Mia Chen", "tags": ["emea"],
        "company": "Northwind Digital GmbH"}),
    ));
    let key = ok(w.admin("POST", "/api/partners/northwind/keys", json!({})))["key"]
        .as_str()
        .unwrap()
        .to_string();
    let quarter = edge::deal::quarter_of(edge::time::Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    ));
    ok(w.admin(
        "PUT",
        "/api/mdf/budgets/acme-gold",
        json!({"program": "acme", "tier": "gold",
        "quarter": quarter, "amount": "5000.00", "currency": "USD"}),
    ));
    ok(w.admin(
        "PUT",
        "/api/assets/launch-banner",
        json!({"program": "acme", "title": "Launch banner 728x90",
        "kind": "banner", "url": "https://shop.example/launch", "min_tier": "silver"}),
    ));
    ok(w.admin(
        "PUT",
        "/api/assets/gold-deck",
        json!({"program": "acme", "title": "Gold partner pitch deck",
        "kind": "pdf", "url": "https://files.example/gold-deck.pdf", "min_tier": "gold"}),
    ));
    let link = ok(w.admin(
        "POST",
        "/api/links",
        json!({"partner": "northwind", "program": "acme",
        "destination": "https://shop.example/?ref={click_id}"}),
    ));
    let slug = link["slug"].as_str().unwrap().to_string();
    for i in 0..5 {
        let ua = format!("Mozilla/5.0 (X11; Linux x86_64) Firefox/133.{i}");
        send(
            agent()
                .get(&w.url(&format!("/c/{slug}")))
                .set("User-Agent", &ua),
            None,
        );
    }
    ok(w.admin("POST",
        "/api/statements",
        json!([{"period": "2026-10", "partner": "northwind",
        "program": "acme", "currency": "USD", "earned": "1250.00", "reversed": "-50.00", "adjusted": "0.00",
        "carried_in": "0.00", "pending": "200.00", "payable": "1000.00", "carried_out": "200.00"}]),
    ));
    // An application whose name is markup: shown as text, never parsed.
    let (s, _, _) = send(
        agent()
            .post(&w.url("/partner/v1/apply"))
            .set("Content-Type", "application/json"),
        Some(
            &json!({"program": "acme", "name": "<img src=x onerror=\"document.title='pwned'\">Eve",
            "email": "eve@example.com", "company": "<b>Eve Media</b>"})
            .to_string(),
        ),
    );
    assert_eq!(s, 201);

    let b = Browser::start();
    // The partner signs in.
    b.go(&w.url("/portal"));
    b.find("#signin input[name=key]");
    b.screenshot("portal-1-sign-in");
    b.fill("#signin input[name=key]", &key);
    b.click("#signin button");
    b.wait_text("#profile", "Your partnership");
    b.wait_text("#profile", "gold");
    b.wait_text("#profile", "Mia Chen");
    b.wait_text("#assets", "Gold partner pitch deck");
    b.wait_text("#statements", "1000.00");
    b.wait_text("#numbers", "Clicks");

    // Registers a deal and requests MDF.
    b.fill("#deal-form input[name=customer]", "acct_contoso");
    b.fill("#deal-form input[name=company]", "Contoso Ltd");
    b.fill("#deal-form input[name=domain]", "contoso.example");
    b.fill("#deal-form input[name=value]", "48000.00");
    b.click("#deal-form button");
    b.wait_text("#status", "Deal registered");
    b.wait_text("#deals", "Contoso Ltd");
    b.wait_text("#deals", "pending");
    b.fill("#mdf-form input[name=activity]", "Contoso launch webinar");
    b.fill("#mdf-form input[name=amount]", "1500.00");
    b.click("#mdf-form button");
    b.wait_text("#status", "MDF requested");
    b.wait_text("#mdf", "Contoso launch webinar");
    b.wait_text("#mdf", "requested");
    b.full_screenshot("portal-2-deal-and-mdf-requested");

    // The operator approves both in the console (same origin, own token).
    b.go(&w.url("/admin"));
    b.fill("#signin input[name=key]", ADMIN_TOKEN);
    b.click("#signin button");
    b.wait_text("#deals", "acct_contoso");
    b.wait_text("#requests", "Contoso launch webinar");
    b.wait_text("#applications", "<img src=x");
    assert_eq!(
        b.js("return document.querySelectorAll('#applications img, #applications b').length"),
        json!(0)
    );
    assert_ne!(b.js("return document.title"), json!("pwned"));
    b.full_screenshot("admin-1-queues");
    b.fill(
        "#deals input[name=reason]",
        "first registration, fits the territory",
    );
    b.click("#deals button.approve");
    b.wait_text("#status", "Approved");
    b.wait_text("#deals", "No deals waiting");
    b.click("#requests button.approve");
    b.wait_text("#requests", "No MDF requests waiting");
    b.wait_text("#budgets", "3500.00");

    // The partner sees both approved, and claims the funds.
    b.go(&w.url("/portal"));
    b.wait_text("#deals", "approved");
    b.wait_text("#mdf", "approved");
    b.fill(
        "#mdf form[id^=claim-] input[name=proof_url]",
        "https://files.example/webinar-invoice.pdf",
    );
    b.click("#mdf form[id^=claim-] button");
    b.wait_text("#status", "Claim sent");
    b.wait_text("#mdf", "claimed");
    b.full_screenshot("portal-3-approved-and-claimed");

    // The operator approves the claim; the partner sees it approved.
    b.go(&w.url("/admin"));
    b.wait_text("#claims", "Contoso launch webinar");
    b.click("#claims button.approve");
    b.wait_text("#claims", "No claims waiting");
    b.full_screenshot("admin-2-after-decisions");
    b.go(&w.url("/portal"));
    b.wait_text("#mdf", "1500.00");
    let mdf_text = b.text("#mdf");
    assert_eq!(mdf_text.matches("approved").count(), 2, "{mdf_text}");
    b.full_screenshot("portal-4-claim-approved");

    // The key lives in sessionStorage only; signing out forgets it.
    assert_eq!(b.js("return localStorage.length"), json!(0));
    b.click("#signout");
    assert_eq!(
        b.js("return sessionStorage.getItem('ptrack.partner_key')"),
        Value::Null
    );
    b.wait_text("#status", "Signed out");

    // What the partner did reached the export as deal and mdf records.
    let (s, body, _) = send(
        agent()
            .get(&w.url("/export/v1/events?after=0&limit=5000"))
            .set(
                "Authorization",
                &format!("Bearer {}", e2e::harness::EXPORT_TOKEN),
            ),
        None,
    );
    assert_eq!(s, 200);
    let kinds: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "deal" || e["type"] == "mdf")
        .collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert!(kinds
        .iter()
        .any(|e| e["type"] == "deal" && e["customer"] == "acct_contoso"));
    assert!(kinds
        .iter()
        .any(|e| e["type"] == "mdf" && e["amount"] == "1500.00"));
}
