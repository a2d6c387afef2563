//! Helpers shared by the integration tests: run the real `schedcp` binary.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn schedcp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_schedcp"))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn bad_scheduler(name: &str) -> String {
    repo_root()
        .join("tests/schedulers")
        .join(name)
        .display()
        .to_string()
}

pub fn run(args: &[&str]) -> Output {
    schedcp().args(args).output().expect("running schedcp")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `schedcp lab run ... --json`, parsed. Panics with the whole output when
/// stdout is not a JSON report.
pub fn lab_json(args: &[&str]) -> (i32, serde_json::Value) {
    let mut full = vec!["lab", "run", "--json", "--quiet"];
    full.extend_from_slice(args);
    let o = run(&full);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "schedcp {full:?} printed no JSON report ({e}):\n{}",
            text(&o)
        )
    });
    (o.status.code().unwrap_or(-1), v)
}

pub fn status(v: &serde_json::Value) -> &str {
    v["outcome"]["status"].as_str().unwrap_or("?")
}
