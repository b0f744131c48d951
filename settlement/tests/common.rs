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
