//! Starts the real worker in `wrangler dev` (real workerd, local D1 and KV) on
//! a free port with a fresh state directory, for end-to-end tests, the demo and
//! the benchmarks.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const EXPORT_TOKEN: &str = "test-export-token";
pub const CLICK_SECRET: &str = "test-click-secret-0123456789abcdef";
pub const CLICK_SECRET_PREVIOUS: &str = "test-previous-secret-fedcba9876543210";
pub const VISITOR_SALT: &str = "test-visitor-salt";
pub const EMAIL_SALT: &str = "test-email-salt";

/// The repository root (the workspace).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// A running `wrangler dev`. Stopped (with workerd) on drop, and by a watchdog
/// when the test process exits without dropping it.
pub struct Worker {
    pub base: String,
    pub port: u16,
    pub state: PathBuf,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

pub struct Options {
    pub state: Option<PathBuf>,
    pub vars: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            state: None,
            vars: vec![
                ("ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
                ("EXPORT_TOKEN".into(), EXPORT_TOKEN.into()),
                ("CLICK_SECRET".into(), CLICK_SECRET.into()),
                ("CLICK_SECRET_PREVIOUS".into(), CLICK_SECRET_PREVIOUS.into()),
                ("VISITOR_SALT".into(), VISITOR_SALT.into()),
                ("EMAIL_SALT".into(), EMAIL_SALT.into()),
            ],
        }
    }
}

fn wrangler(root: &Path) -> Command {
    let mut cmd = Command::new(root.join("node_modules/.bin/wrangler"));
    cmd.current_dir(root)
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .env("NO_COLOR", "1")
        .env("CI", "1");
    cmd
}

/// Applies `migrations/` to a local D1 state directory.
pub fn migrate(state: &Path) {
    let root = root();
    let out = wrangler(&root)
        .args(["d1", "migrations", "apply", "DB", "--local", "--persist-to"])
        .arg(state)
        .output()
        .expect("run wrangler d1 migrations apply");
    assert!(
        out.status.success(),
        "migrations failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Worker {
    pub fn start() -> Worker {
        Worker::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Worker {
        let root = root();
        let wasm = root.join("edge/build/index_bg.wasm");
        assert!(
            wasm.exists(),
            "{} is missing: build the worker first (make build-edge)",
            wasm.display()
        );
        let state = opts.state.unwrap_or_else(|| {
            let dir = root.join("target/e2e-state").join(format!(
                "{}-{}",
                std::process::id(),
                free_port()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create state dir");
            dir
        });
        migrate(&state);
        // a port picked free can be taken by another process before wrangler
        // binds it (the tests run side by side): then wrangler exits at once
        // saying so, and it starts again on other ports
        let mut attempt = 0;
        loop {
            attempt += 1;
            let worker = Worker::spawn(&root, &state, &opts.vars);
            match worker.wait_ready(Self::start_timeout()) {
                Ok(()) => return worker,
                Err(log) if attempt < 5 => {
                    eprintln!("wrangler dev lost its port ({log}); starting it again");
                }
                Err(log) => panic!("wrangler dev lost its port five times; its output:\n{log}"),
            }
        }
    }

    /// wrangler builds the worker on every start; on a loaded machine that
    /// can take minutes (PTRACK_START_TIMEOUT seconds, default 180).
    fn start_timeout() -> Duration {
        let secs = std::env::var("PTRACK_START_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(180);
        Duration::from_secs(secs)
    }

    /// `wrangler dev` over `state` on two fresh ports, not yet answering.
    fn spawn(root: &Path, state: &Path, vars: &[(String, String)]) -> Worker {
        let port = free_port();
        let inspector = free_port();
        let mut args: Vec<String> = vec![
            "dev".into(),
            "--ip".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--inspector-port".into(),
            inspector.to_string(),
            "--persist-to".into(),
            state.display().to_string(),
            "--show-interactive-dev-session=false".into(),
            "--log-level".into(),
            "warn".into(),
        ];
        for (k, v) in vars {
            args.push("--var".into());
            args.push(format!("{k}:{v}"));
        }
        // The watchdog stops wrangler when this process goes away, so a
        // panicking test never leaves a workerd behind.
        let script = format!(
            "\"$0\" \"$@\" & w=$!; trap 'kill $w 2>/dev/null; exit' TERM INT; \
             while kill -0 {pid} 2>/dev/null && kill -0 $w 2>/dev/null; do sleep 0.5; done; \
             kill $w 2>/dev/null; wait $w",
            pid = std::process::id()
        );
        let mut child = Command::new("sh");
        child
            .arg("-c")
            .arg(script)
            .arg(root.join("node_modules/.bin/wrangler"))
            .args(&args)
            .current_dir(root)
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = child.spawn().expect("spawn wrangler dev");
        let log = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var_os("PTRACK_WORKER_LOG").is_some() {
                        eprintln!("[wrangler] {line}");
                    }
                    if let Ok(mut l) = log.lock() {
                        l.push(line);
                    }
                }
            });
        }
        Worker {
            base: format!("http://127.0.0.1:{port}"),
            port,
            state: state.to_path_buf(),
            child,
            log,
        }
    }

    /// Waits until the worker answers; `Err(the line)` when wrangler
    /// reported one of its ports taken (it exits then), to start again.
    fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(5))
            .build();
        loop {
            if let Ok(r) = agent.get(&format!("{}/healthz", self.base)).call() {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            let taken = self.log.lock().ok().and_then(|l| {
                l.iter()
                    .find(|line| line.contains("Address already in use"))
                    .cloned()
            });
            if let Some(line) = taken {
                return Err(line);
            }
            if start.elapsed() > timeout {
                panic!(
                    "wrangler dev did not answer within {timeout:?}; its output:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// An operator API call (`Authorization: Bearer ADMIN_TOKEN`, a JSON
    /// body): the status and the JSON answer (a string when not JSON).
    pub fn admin(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let req = agent()
            .request(method, &self.url(path))
            .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
            .set("Content-Type", "application/json");
        let (status, text, _) = send(req, Some(&body.to_string()));
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, v)
    }

    /// A request with an optional bearer token, an optional JSON body and
    /// an optional test clock (`X-Ptrack-Clock`, ms): the status and the
    /// JSON answer (a string when not JSON).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&serde_json::Value>,
        clock: Option<i64>,
    ) -> (u16, serde_json::Value) {
        let mut req = agent().request(method, &self.url(path));
        if let Some(a) = auth {
            req = req.set("Authorization", &format!("Bearer {a}"));
        }
        if let Some(c) = clock {
            req = req.set("X-Ptrack-Clock", &c.to_string());
        }
        let text = body.map(serde_json::Value::to_string);
        if text.is_some() {
            req = req.set("Content-Type", "application/json");
        }
        let (s, t, _) = send(req, text.as_deref());
        (s, json_or_text(&t))
    }

    /// Every exported event, following the export cursor to its end; checks
    /// that each page's cursor is its last record's `seq`.
    pub fn export_all(&self) -> Vec<serde_json::Value> {
        let mut after = 0u64;
        let mut out = Vec::new();
        loop {
            let (s, body, head) = send(
                agent()
                    .get(&self.url(&format!("/export/v1/events?after={after}&limit=5000")))
                    .set("Authorization", &format!("Bearer {EXPORT_TOKEN}")),
                None,
            );
            assert_eq!(s, 200, "export: {body}");
            let next: u64 = head
                .header("X-Next-Cursor")
                .and_then(|c| c.parse().ok())
                .expect("X-Next-Cursor");
            let lines: Vec<serde_json::Value> = body
                .lines()
                .map(|l| serde_json::from_str(l).expect("an export line is JSON"))
                .collect();
            let Some(last) = lines.last() else {
                assert_eq!(next, after, "an empty page keeps the cursor");
                return out;
            };
            assert_eq!(
                last["seq"].as_u64(),
                Some(next),
                "the cursor is the last seq"
            );
            out.extend(lines);
            after = next;
        }
    }

    /// Kills the worker's workerd the hard way, as a crash or an OOM kill
    /// would: SIGKILL to workerd's process group (or to each workerd process
    /// when it shares this test's group), no chance to flush anything. Then
    /// stops what is left of wrangler. Returns how many workerd processes
    /// were killed.
    pub fn kill_workerd(&mut self) -> usize {
        let own_pgid = proc_stat(std::process::id()).map(|s| s.1);
        let mut killed = 0;
        for pid in descendants(self.child.id()) {
            let Some((comm, pgid)) = proc_stat(pid) else {
                continue;
            };
            if comm != "workerd" {
                continue;
            }
            let target = if Some(pgid) != own_pgid && pgid > 1 {
                format!("-{pgid}")
            } else {
                pid.to_string()
            };
            let ok = Command::new("kill")
                .args(["-KILL", "--", &target])
                .status()
                .is_ok_and(|s| s.success());
            killed += usize::from(ok);
        }
        self.stop();
        killed
    }

    /// Stops the worker (SIGTERM to the watchdog, which stops wrangler and workerd).
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// (comm, pgid) of a process, from /proc/<pid>/stat.
fn proc_stat(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    // state ppid pgrp ...
    let pgid = rest.get(2)?.parse().ok()?;
    Some((comm, pgid))
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    stat.get(close + 2..)?.split(' ').nth(1)?.parse().ok()
}

/// Every process below `root` (children, grandchildren, ...).
fn descendants(root: u32) -> Vec<u32> {
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(all.iter().copied().filter(|c| parent_of(*c) == Some(p)));
        i += 1;
    }
    out.remove(0);
    out
}

/// A JSON answer, or the text itself as a JSON string when it is not JSON.
pub fn json_or_text(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::String(text.to_string()))
}

/// Seconds since the epoch, by the machine's clock.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs() as i64
}

/// Polls `f` every 100 ms until it gives a value; fails the test naming
/// `what` after `secs` seconds.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The release `settlement` binary (`make test` builds it before these
/// tests) with `--quiet`, `args` and `envs`; the erasure secret and admin
/// token of the caller's environment are not passed on.
pub fn settlement(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let bin = root().join("target/release/settlement");
    assert!(
        bin.exists(),
        "build it first: cargo build --release -p settlement"
    );
    let mut cmd = Command::new(bin);
    cmd.arg("--quiet")
        .args(args)
        .env_remove("ERASURE_SECRET")
        .env_remove("SETTLEMENT_ADMIN_TOKEN");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run settlement")
}

/// [`settlement`] that must succeed: its stdout and stderr.
pub fn settlement_ok(args: &[&str], envs: &[(&str, &str)]) -> (String, String) {
    let out = settlement(args, envs);
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "settlement {args:?}: {o}\n{e}");
    (o, e)
}

/// The rows of a CSV file after its header.
pub fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(path).expect("a CSV file");
    r.records()
        .map(|x| x.expect("a CSV row").iter().map(str::to_string).collect())
        .collect()
}

/// An HTTP agent that does not follow redirects (tests look at the 302 itself).
pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(30))
        .build()
}

/// Status and body of a request, whatever the status.
pub fn send(req: ureq::Request, body: Option<&str>) -> (u16, String, ureq::Response) {
    let res = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    match res {
        Ok(r) => {
            let status = r.status();
            let clone = clone_head(&r);
            let text = r.into_string().unwrap_or_default();
            (status, text, clone)
        }
        Err(ureq::Error::Status(code, r)) => {
            let clone = clone_head(&r);
            (code, r.into_string().unwrap_or_default(), clone)
        }
        Err(e) => panic!("request failed: {e}"),
    }
}

fn clone_head(r: &ureq::Response) -> ureq::Response {
    let mut raw = format!("HTTP/1.1 {} {}\r\n", r.status(), r.status_text());
    for name in r.headers_names() {
        for value in r.all(&name) {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    raw.push_str("\r\n");
    raw.parse().expect("rebuild response head")
}

/// Reads one HTTP/1.1 request from a test's local receiver: its headers
/// (names lower-cased) and its body (by `Content-Length`); `None` when the
/// connection closed before a request line.
pub fn read_request(
    stream: &std::net::TcpStream,
) -> Option<(std::collections::HashMap<String, String>, String)> {
    use std::io::Read;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut headers = std::collections::HashMap::new();
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = reader.read_exact(&mut body);
    Some((headers, String::from_utf8_lossy(&body).into_owned()))
}
