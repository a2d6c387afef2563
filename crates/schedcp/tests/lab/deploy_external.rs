//! An external production scheduler end to end: scx_bpfland from the Rust crate registry,
//! installed pinned by `schedcp policy install-external`, verified by its
//! dynamic trial in the micro-VM (the binary itself, started by the guest
//! and stopped with SIGINT), then deployed to a lab node as a supervised
//! binary under the same canary and breaker as a BPF object: a killed
//! process is restarted, up to the bound, then rolled back; a manual
//! rollback stops it with SIGINT.
//!
//! `scripts/setup.sh` installs scx_bpfland into the cache, so here the
//! install finds it intact; on a machine without that cache this test
//! builds it (several minutes).

use crate::common;

use common::{b64, deploy_status, wait_for};

use std::path::PathBuf;
use std::time::Duration;

use schedcp::api::client::Rest;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn events(node: &Rest) -> Vec<Value> {
    let h = node
        .call("deploy_history", &json!({ "limit": 50 }))
        .expect("deploy_history");
    h["events"].as_array().cloned().unwrap_or_default()
}

fn ops_is_bpfland(s: &Value) -> bool {
    s["kernel_ops"]
        .as_str()
        .is_some_and(|o| o.starts_with("bpfland_"))
}

#[test]
fn scx_bpfland_installs_verifies_and_deploys_as_a_supervised_binary() {
    let state = tempfile::tempdir().unwrap();
    let schedcp = |args: &[&str]| {
        common::schedcp()
            .env("SCHEDCP_STATE", state.path())
            .args(args)
            .output()
            .unwrap()
    };

    // 1. Install, pinned to the catalogue's version.
    let out = schedcp(&["-q", "policy", "install-external", "scx_bpfland", "--json"]);
    assert!(out.status.success(), "{}", common::text(&out));
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["crate"], "scx_bpfland");
    assert_eq!(m["crate_version"], "1.1.4");
    let binary = PathBuf::from(m["binary"].as_str().unwrap());
    let sha = hex::encode(Sha256::digest(std::fs::read(&binary).unwrap()));
    assert_eq!(
        m["sha256"],
        sha.as_str(),
        "the manifest's hash is the binary's"
    );
    let out = schedcp(&["policy", "install-external", "fifo"]);
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
    assert!(
        common::text(&out).contains("not an external scheduler"),
        "{}",
        common::text(&out)
    );

    // 2. Verify: its trial in the micro-VM is its verification.
    let out = schedcp(&[
        "-q",
        "verify",
        "scx_bpfland",
        "--runs",
        "2",
        "--workloads",
        "pingpong:loops=100",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no JSON report: {}", common::text(&out)));
    let r = if v.is_array() { v[0].clone() } else { v };
    assert_eq!(r["passed"], true, "scx_bpfland must verify: {r:#}");
    let stages = r["stages"].as_array().unwrap();
    assert_eq!(stages[0]["name"], "install", "{r:#}");
    assert_eq!(stages[1]["name"], "static");
    assert_eq!(stages[1]["verdict"], "skipped");
    assert!(
        stages[2]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("bpfland_"),
        "the kernel stage names what attached: {r:#}"
    );
    assert_eq!(r["object_sha256"], sha.as_str());
    let token = r["token"].as_str().unwrap().to_string();
    let kept = state.path().join("verified").join(format!("{sha}.bin"));
    assert!(kept.is_file(), "the verified binary is kept by hash");

    // 3. Deploy to a lab node as a supervised binary.
    let node = common::start_node(
        state.path(),
        "window_s = 3\nactive_check_s = 0\nexternal_max_restarts = 1\n",
        Duration::from_secs(1200),
    );
    let api = node.client(Duration::from_secs(700)).unwrap();
    let deploy = |canary_s: u64| {
        let job = api
            .call(
                "deploy",
                // This test is about supervising an external binary; the KPI
                // breaker is deploy_node's. Two TCG VMs on two cores swing
                // PSI by tens of points, so the KPI limits are set out of reach.
                &json!({ "token": token, "object_base64": b64(&kept),
                         "canary_s": canary_s, "wait_seconds": 600,
                         "kpi": ["psi_cpu_some_increase_pct=100", "runq_p99_ratio=1000",
                                 "runq_p99_min_increase_us=60000000"] }),
            )
            .expect("deploy accepted");
        assert_eq!(job["state"], "succeeded", "deploy job: {job:#}");
        job["result"].clone()
    };
    let d = deploy(8);
    eprintln!("scx_bpfland deployment: {d:#}");
    assert_eq!(d["state"], "active", "{d:#}");
    let s = deploy_status(&api);
    assert!(ops_is_bpfland(&s), "{s:#}");

    // 4. The process dies: restarted once (the bound here), then rolled back.
    node.kill_process("scx_bpfland").unwrap();
    wait_for("a restart", Duration::from_secs(120), || {
        events(&api).iter().any(|e| e["event"] == "restarted")
    });
    let s = deploy_status(&api);
    assert!(ops_is_bpfland(&s), "running again after the restart: {s:#}");
    assert_eq!(s["current"]["id"], d["id"]);
    node.kill_process("scx_bpfland").unwrap();
    wait_for("the rollback", Duration::from_secs(120), || {
        deploy_status(&api)["current"].is_null()
    });
    let s = deploy_status(&api);
    assert_eq!(s["sched_ext_state"], "disabled", "{s:#}");
    let h = api.call("deploy_history", &json!({ "limit": 10 })).unwrap();
    let ended = h["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == d["id"])
        .unwrap()
        .clone();
    assert_eq!(ended["state"], "rolled_back", "{ended:#}");
    assert!(
        ended["reason"]
            .as_str()
            .unwrap()
            .contains("restarted 1 times already"),
        "{ended:#}"
    );

    // 5. Deployed again, then a manual rollback stops it with SIGINT.
    let before = api
        .call("observe_summary", &json!({ "window_ms": 2000 }))
        .unwrap_or_default();
    eprintln!("node before the second deployment: {before:#}");
    let d2 = deploy(5);
    assert_eq!(
        d2["state"], "active",
        "{d2:#}\nthe node just before (observe_summary): {before:#}"
    );
    let back = api
        .call("deploy_rollback", &json!({ "reason": "end of the test" }))
        .unwrap();
    assert_eq!(back["state"], "rolled_back", "{back:#}");
    let s = deploy_status(&api);
    assert_eq!(s["sched_ext_state"], "disabled", "{s:#}");
    eprintln!(
        "EXTERNAL TIMINGS: request→active {:.0} ms (switch {:.0} ms); process death→rollback {:.0} ms",
        d["timings"]["request_to_active_ms"].as_f64().unwrap_or(f64::NAN),
        d["timings"]["switch_ms"].as_f64().unwrap_or(f64::NAN),
        ended["timings"]["breach_to_rollback_ms"]
            .as_f64()
            .unwrap_or(f64::NAN),
    );
}
