//! Helpers shared by the integration tests: run the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_settlement"))
}

pub fn settlement(db: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--db")
        .arg(db)
        .arg("--quiet")
        .args(args)
        .output()
        .expect("run settlement")
}

/// Runs and asserts the exit code; returns stdout.
pub fn ok(db: &Path, args: &[&str]) -> String {
    let o = settlement(db, args);
    assert!(
        o.status.success(),
        "settlement {args:?} failed ({:?}):\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8")
}

pub fn code(db: &Path, args: &[&str]) -> (i32, String) {
    let o = settlement(db, args);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `settlement report --period PERIOD --out OUT [EXTRA...]`, asserted to
/// succeed; returns stdout.
pub fn report(db: &Path, period: &str, out: &Path, extra: &[&str]) -> String {
    let out = out.to_str().expect("utf-8 path");
    let mut args = vec!["report", "--period", period, "--out", out];
    args.extend_from_slice(extra);
    ok(db, &args)
}

/// `settlement nightly --config CONFIG --now NOW` with `env` set; the
/// caller checks the outcome.
pub fn nightly(db: &Path, config: &Path, now: &str, env: &[(&str, &str)]) -> Output {
    Command::new(bin())
        .arg("--db")
        .arg(db)
        .arg("--quiet")
        .arg("nightly")
        .arg("--config")
        .arg(config)
        .args(["--now", now])
        .envs(env.iter().copied())
        .output()
        .expect("run settlement nightly")
}

/// A request as the tests' local HTTP servers read it.
pub struct Request {
    /// The request target: path and query.
    pub path: String,
    /// The Authorization header's value, or "".
    pub auth: String,
    /// `Content-Length` bytes of body.
    pub body: Vec<u8>,
}

/// Reads one request from `conn`; `None` when not even its first line could
/// be read.
pub fn read_request(conn: &std::net::TcpStream) -> Option<Request> {
    use std::io::{BufRead, Read};
    let mut rd = std::io::BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    rd.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (mut auth, mut len) = (String::new(), 0usize);
    loop {
        let mut h = String::new();
        if rd.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("authorization:") {
            auth = h["authorization:".len()..].trim().to_string();
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    let _ = rd.read_exact(&mut body);
    Some(Request { path, auth, body })
}
