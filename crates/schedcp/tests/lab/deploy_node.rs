//! Deployment end to end on a lab node: a micro-VM with the sched_ext kernel
//! whose init runs the schedcp daemon (this build's binary), driven from the
//! host over REST exactly as an operator or agent would.
//!
//! The host verifies four schedulers (a sound one, one that funnels every
//! task onto CPU 0, one that calls scx_bpf_error() 15 s after attach, one
//! that stops running user tasks 15 s after attach); all four pass
//! verification and get tokens. On the node: refusals (object mismatch,
//! expired token, untrusted key), the sound one becomes active, the latent
//! error, the watchdog stall and the KPI regression are rolled back to it, a
//! daemon killed mid-canary comes back on the last known-good, an active one
//! is re-attached after a crash, a manual rollback returns to the default,
//! and the node's audit log holds every transition, its chain intact across
//! the crashes.

use crate::common;

use common::{b64, deploy_status, wait_for};

use std::path::{Path, PathBuf};
use std::time::Duration;

use schedcp::api::client::Rest;
use schedcp::verify::token::{self, Binding, Keys};
use serde_json::{json, Value};

struct Verified {
    token: String,
    object: PathBuf,
    sha256: String,
}

fn verify(state: &Path, target: &str) -> Verified {
    let (_, v) = common::verify_json(state, target);
    let r = if v.is_array() { v[0].clone() } else { v };
    assert_eq!(r["passed"], true, "{target} must verify: {r:#}");
    let sha256 = r["object_sha256"].as_str().unwrap().to_string();
    Verified {
        token: r["token"].as_str().unwrap().to_string(),
        object: state.join("verified").join(format!("{sha256}.bpf.o")),
        sha256,
    }
}

fn deploy_args(v: &Verified, object: &Path, extra: Value) -> Value {
    let mut a = json!({ "token": v.token, "object_base64": b64(object) });
    for (k, x) in extra.as_object().unwrap() {
        a[k] = x.clone();
    }
    a
}

/// Deploy and wait for the verdict; returns the deployment.
fn deploy(node: &Rest, v: &Verified, extra: Value) -> Value {
    let mut args = deploy_args(v, &v.object, extra);
    args["wait_seconds"] = json!(600);
    let job = node.call("deploy", &args).expect("deploy accepted");
    assert_eq!(job["state"], "succeeded", "deploy job: {job:#}");
    job["result"].clone()
}

fn refused(node: &Rest, args: Value, want: &str) {
    let e = node.call("deploy", &args).expect_err("must be refused");
    assert_eq!(e.status, 400, "{e}");
    assert!(
        e.message.contains(want),
        "expected '{want}' in: {}",
        e.message
    );
}

#[test]
fn deploy_canary_breaker_and_rollback_on_a_lab_node() {
    let state = tempfile::tempdir().unwrap();
    let root = common::repo_root();
    let sched = |n: &str| {
        root.join("tests/schedulers/deploy")
            .join(n)
            .display()
            .to_string()
    };
    let good = verify(state.path(), "fifo");
    let one_cpu = verify(state.path(), &sched("one_cpu.bpf.c"));
    let fail_later = verify(state.path(), &sched("fail_later.bpf.c"));
    let stall_later = verify(state.path(), &sched("stall_later.bpf.c"));

    // Short windows keep the test short; passive checks while active are
    // exercised by the canary windows already.
    let node = common::start_node(
        state.path(),
        "window_s = 3\nactive_check_s = 0\n",
        Duration::from_secs(1500),
    );
    let api = node.client(Duration::from_secs(700)).unwrap();
    assert_eq!(deploy_status(&api)["sched_ext_state"], "disabled");
    qemu_is_confined(&node.url);

    // Refusals: nothing changes on the node.
    refused(
        &api,
        deploy_args(&good, &one_cpu.object, json!({})),
        "token is for object",
    );
    let keys = Keys::load_or_create(state.path()).unwrap();
    let (claims, _) = token::decode_unverified(&good.token).unwrap();
    let binding = Binding {
        policy: claims.policy.clone(),
        version: claims.version,
        object_sha256: claims.object_sha256.clone(),
        report_sha256: claims.report_sha256.clone(),
        kernel_release: claims.kernel_release.clone(),
        ops_name: claims.ops_name.clone(),
        sched_ext: true,
    };
    let expired = keys
        .issue_at(
            &binding,
            token::MIN_TTL,
            chrono::Utc::now() - chrono::Duration::hours(2),
        )
        .unwrap();
    let expired = Verified {
        token: expired,
        object: good.object.clone(),
        sha256: good.sha256.clone(),
    };
    refused(
        &api,
        deploy_args(&expired, &good.object, json!({})),
        "token expired",
    );
    let stranger = tempfile::tempdir().unwrap();
    let foreign = Keys::load_or_create(stranger.path())
        .unwrap()
        .issue(&binding, token::DEFAULT_TTL)
        .unwrap();
    let foreign = Verified {
        token: foreign,
        object: good.object.clone(),
        sha256: good.sha256.clone(),
    };
    refused(
        &api,
        deploy_args(&foreign, &good.object, json!({})),
        "another schedcp key",
    );
    let bad_kpi = deploy_args(
        &good,
        &good.object,
        json!({ "kpi": ["runq_p99_ratio=zero"] }),
    );
    refused(&api, bad_kpi, "not a number");
    assert!(
        deploy_status(&api)["current"].is_null(),
        "a refusal changed the node"
    );

    // 1. The sound scheduler deploys and becomes active. A global FIFO
    //    trades wakeup latency for simplicity (its p99 is 20-70% worse than
    //    the kernel's EEVDF in this VM, run to run); the operator accepts
    //    up to 150%. The default (25%) is what the regression below faces.
    let d1 = deploy(
        &api,
        &good,
        json!({ "canary_s": 8, "workload": "wakeup:duration_ms=2000",
                "kpi": ["workload_regression_pct=150"] }),
    );
    eprintln!("fifo deployment: {d1:#}");
    assert_eq!(d1["state"], "active", "{d1:#}");
    let s = deploy_status(&api);
    assert_eq!(s["kernel_ops"], "schedcp_fifo", "{s:#}");
    assert_eq!(s["current"]["id"], d1["id"]);
    assert!(d1["timings"]["request_to_active_ms"].as_f64().unwrap() > 0.0);
    // Curation learns: the node's library moves fifo@1 to deployed with a deploy result.
    wait_for(
        "fifo's deploy result in the node's library",
        Duration::from_secs(240),
        || {
            let h = api
                .call("policy_history", &json!({ "name": "fifo" }))
                .unwrap();
            h["results"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x["source"] == "deploy"))
        },
    );
    let shown = api.call("policy_show", &json!({ "name": "fifo" })).unwrap();
    assert_eq!(shown["policy"]["state"], "deployed", "{shown:#}");

    // 2. A latent bug: scx_bpf_error() 15 s after attach. The breaker rolls
    //    back to the last known-good (fifo), which is attached again.
    let d2 = deploy(&api, &fail_later, json!({ "canary_s": 45 }));
    eprintln!("fail_later deployment: {d2:#}");
    assert_eq!(d2["state"], "rolled_back", "{d2:#}");
    let why = d2["reason"].as_str().unwrap();
    assert!(
        why.contains("fail_later: deliberate error"),
        "the reason quotes the scheduler's own error: {why}"
    );
    assert!(d2["timings"]["breach_to_rollback_ms"].as_f64().is_some());
    let s = deploy_status(&api);
    assert_eq!(
        s["kernel_ops"], "schedcp_fifo",
        "last known-good restored: {s:#}"
    );
    assert_eq!(s["current"]["id"], d1["id"]);

    // 2b. A latent stall: 15 s after attach no user task runs, the daemon
    //     included. The kernel's watchdog ejects the scheduler (timeout
    //     5 s); the daemon, running again under the kernel default, sees the
    //     stall exit and restores fifo.
    let d_stall = deploy(&api, &stall_later, json!({ "canary_s": 60 }));
    eprintln!("stall_later deployment: {d_stall:#}");
    assert_eq!(d_stall["state"], "rolled_back", "{d_stall:#}");
    let why = d_stall["reason"].as_str().unwrap();
    assert!(
        why.contains("runnable task stall") || why.contains("failed to run"),
        "the reason quotes the kernel's stall exit: {why}"
    );
    assert_eq!(deploy_status(&api)["kernel_ops"], "schedcp_fifo");

    // 3. A KPI regression: everything funnelled onto CPU 0. Rolled back.
    let d3 = deploy(
        &api,
        &one_cpu,
        json!({ "canary_s": 20, "workload": "wakeup:duration_ms=2000" }),
    );
    eprintln!("one_cpu deployment: {d3:#}");
    assert_eq!(d3["state"], "rolled_back", "{d3:#}");
    assert!(
        d3["reason"].as_str().unwrap().contains("KPI breach"),
        "{d3:#}"
    );
    assert_eq!(deploy_status(&api)["kernel_ops"], "schedcp_fifo");

    // 4. The daemon dies mid-canary: after the restart the node runs the
    //    last known-good and the interrupted canary is rolled back.
    let mut args = deploy_args(&fail_later, &fail_later.object, json!({ "canary_s": 120 }));
    args["wait_seconds"] = json!(0);
    let job = api.call("deploy", &args).unwrap();
    assert_eq!(job["state"], "running", "{job:#}");
    wait_for("the canary to attach", Duration::from_secs(120), || {
        deploy_status(&api)["kernel_ops"] == "test_fail_later"
    });
    let canary_id = deploy_status(&api)["current"]["id"].clone();
    node.kill_daemon(Duration::from_secs(120))
        .expect("the daemon restarts");
    let s = deploy_status(&api);
    assert_eq!(s["kernel_ops"], "schedcp_fifo", "after the crash: {s:#}");
    assert_eq!(s["current"]["id"], d1["id"], "{s:#}");
    let h = api.call("deploy_history", &json!({ "limit": 50 })).unwrap();
    let interrupted = h["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == canary_id)
        .unwrap()
        .clone();
    assert_eq!(interrupted["state"], "rolled_back", "{interrupted:#}");
    assert!(
        interrupted["reason"]
            .as_str()
            .unwrap()
            .contains("daemon stopped during the canary"),
        "{interrupted:#}"
    );

    // 5. A crash while active: the active deployment is re-attached.
    node.kill_daemon(Duration::from_secs(120))
        .expect("the daemon restarts");
    let s = deploy_status(&api);
    assert_eq!(s["kernel_ops"], "schedcp_fifo", "{s:#}");
    let h = api.call("deploy_history", &json!({ "limit": 50 })).unwrap();
    assert!(
        h["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "reattached"),
        "{h:#}"
    );

    // 6. Manual rollback: fifo had no predecessor, so the default returns.
    let d = api
        .call("deploy_rollback", &json!({ "reason": "end of the test" }))
        .unwrap();
    assert_eq!(d["state"], "rolled_back");
    let s = deploy_status(&api);
    assert!(s["current"].is_null(), "{s:#}");
    assert_eq!(s["sched_ext_state"], "disabled", "{s:#}");
    let e = api
        .call("deploy_rollback", &json!({ "reason": "again" }))
        .unwrap_err();
    assert!(e.message.contains("nothing is deployed"), "{e}");

    // 7. The audit log: every transition is there, the chain intact
    //    although the daemon was SIGKILLed twice.
    let audit = api
        .call("audit", &json!({ "limit": 10000 }))
        .expect("audit");
    assert_eq!(
        audit["verification"]["ok"], true,
        "{:#}",
        audit["verification"]
    );
    let calls: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["call"].as_str().unwrap())
        .collect();
    for want in [
        "deploy.canary_started",
        "deploy.active",
        "deploy.rolled_back",
        "deploy.reattached",
    ] {
        assert!(
            calls.contains(&want),
            "{want} missing from the audit log: {calls:?}"
        );
    }
    let rolled_back = calls.iter().filter(|c| **c == "deploy.rolled_back").count();
    assert!(
        rolled_back >= 5,
        "5 rollbacks happened, {rolled_back} audited: {calls:?}"
    );
    let e = api
        .call("audit", &json!({ "limit": 0 }))
        .expect_err("limit 0 is refused");
    assert!(e.message.contains("limit must be"), "{e}");

    // The figures the deploy service is judged by.
    eprintln!(
        "DEPLOY TIMINGS: fifo request→active {:.0} ms (switch {:.0} ms); fail_later breach→rollback {:.0} ms; stall_later breach→rollback {:.0} ms; one_cpu breach→rollback {:.0} ms",
        d1["timings"]["request_to_active_ms"].as_f64().unwrap_or(f64::NAN),
        d1["timings"]["switch_ms"].as_f64().unwrap_or(f64::NAN),
        d2["timings"]["breach_to_rollback_ms"].as_f64().unwrap_or(f64::NAN),
        d_stall["timings"]["breach_to_rollback_ms"].as_f64().unwrap_or(f64::NAN),
        d3["timings"]["breach_to_rollback_ms"].as_f64().unwrap_or(f64::NAN),
    );
}

#[test]
fn deploy_on_a_kernel_without_sched_ext_says_so() {
    // The host kernel here has no sched_ext: admission must say exactly that.
    if Path::new("/sys/kernel/sched_ext").exists() {
        panic!("this test expects a host kernel without sched_ext; this one has it");
    }
    let state = tempfile::tempdir().unwrap();
    let good = verify(state.path(), "fifo");
    let out = common::schedcp()
        .env("SCHEDCP_STATE", state.path())
        .args(["deploy", "--token", &good.token])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", common::text(&out));
    assert!(
        common::text(&out).contains("has no sched_ext"),
        "{}",
        common::text(&out)
    );
    // A tampered token is refused before anything else.
    let mut bad = good.token.clone();
    bad.pop();
    bad.push(if good.token.ends_with('A') { 'B' } else { 'A' });
    let out = common::schedcp()
        .env("SCHEDCP_STATE", state.path())
        .args(["deploy", "--token", &bad])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
}

/// The node's QEMU (a child of this process) runs as `nobody` under a
/// seccomp filter, with its file size capped (issue 17, finding 8). Other
/// tests of this process run QEMU too: the node's is the one forwarding
/// its port.
fn qemu_is_confined(url: &str) {
    let me = std::process::id().to_string();
    let port = url.rsplit(':').next().unwrap();
    let forward = format!("hostfwd=tcp:127.0.0.1:{port}-");
    let mut seen = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        if !comm.ends_with("(qemu-system-x86") || rest.split(' ').nth(1) != Some(me.as_str()) {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(&forward) {
            continue;
        }
        let status = std::fs::read_to_string(e.path().join("status")).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(str::trim)
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(field("Uid:"), "65534\t65534\t65534\t65534", "{status}");
        assert_eq!(field("Seccomp:"), "2", "{status}");
        let limits = std::fs::read_to_string(e.path().join("limits")).unwrap();
        let fsize = limits
            .lines()
            .find(|l| l.starts_with("Max file size"))
            .unwrap();
        assert!(fsize.contains(&(64u64 << 20).to_string()), "{fsize}");
        seen += 1;
    }
    assert_eq!(seen, 1, "one QEMU forwarding {port}");
}
