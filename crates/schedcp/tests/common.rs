//! Helpers shared by the integration tests: run the real `schedcp` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use schedcp::api::client::Rest;
use schedcp::config::Config;
use schedcp::lab::Lab;
use schedcp::node::{Node, NodeOptions};

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

/// `schedcp verify TARGET` with two quick runs a side, as JSON: the exit
/// code and the report. Panics with stderr when no report was printed.
pub fn verify_json(state: &Path, target: &str) -> (Option<i32>, serde_json::Value) {
    let out = schedcp()
        .env("SCHEDCP_STATE", state)
        .args([
            "-q",
            "verify",
            target,
            "--runs",
            "2",
            "--workloads",
            "pingpong:loops=100",
            "--json",
        ])
        .output()
        .expect("running schedcp");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{target}: no JSON report; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

/// Boot a lab node running this build's schedcp as its daemon, with these
/// extra `[deploy]` config lines; it trusts `state`'s signing key.
pub fn start_node(state: &Path, config_extra: &str, lifetime: Duration) -> Node {
    let schedcp_bin = PathBuf::from(env!("CARGO_BIN_EXE_schedcp"));
    let mut cfg = Config {
        state_dir: Some(state.to_path_buf()),
        ..Config::default()
    };
    // This test process is not schedcp: point the lab at the agent beside it.
    cfg.lab.guest_agent = Some(schedcp_bin.with_file_name("schedcp-guest"));
    let t0 = Instant::now();
    let node = Node::start(
        &Lab::new(cfg),
        &NodeOptions {
            schedcp: Some(schedcp_bin),
            config_extra: config_extra.into(),
            lifetime,
            ..NodeOptions::default()
        },
        &|m| eprintln!("node: {m}"),
    )
    .expect("lab node boots and its daemon answers");
    eprintln!(
        "node ready in {:.1} s at {}",
        t0.elapsed().as_secs_f64(),
        node.url
    );
    node
}

pub fn deploy_status(node: &Rest) -> serde_json::Value {
    node.call("deploy_status", &serde_json::json!({}))
        .expect("deploy_status")
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn b64(path: &Path) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}
