//! The canary's workload on the host: a registered workload profile is run
//! and judged the way the profile says (its metric, its direction, its
//! working directory), inside a real KPI window (the runqlat probe attached,
//! PSI read). The deploy service runs exactly this code in every canary
//! window; only attaching needs the lab node. Needs root and BPF (as CI has).

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use schedcp::config::Config;
use schedcp::deploy::deployer::resolve_workload;
use schedcp::deploy::kpi;

fn config(state: &Path) -> Config {
    let mut cfg = Config {
        state_dir: Some(state.to_path_buf()),
        ..Config::default()
    };
    // This test process is not schedcp: the guest agent is beside the binary.
    cfg.deploy.workload_agent =
        Some(PathBuf::from(env!("CARGO_BIN_EXE_schedcp")).with_file_name("schedcp-guest"));
    cfg
}

fn add_profile(state: &Path, cwd: &Path, args: &[&str]) {
    let out = common::schedcp()
        .env("SCHEDCP_STATE", state)
        .current_dir(cwd)
        .args(["-q", "observe", "workload", "add"])
        .args(args)
        .output()
        .expect("running schedcp");
    assert!(out.status.success(), "{}", common::text(&out));
}

#[test]
fn a_lab_profile_is_judged_by_its_own_metric_and_direction() {
    let state = tempfile::tempdir().unwrap();
    let cfg = config(state.path());
    // Throughput, higher is better: not the workload's primary metric
    // (p99 wakeup latency, lower is better).
    add_profile(
        state.path(),
        state.path(),
        &[
            "rate",
            "--lab",
            "wakeup:duration_ms=500",
            "--metric",
            "requests_per_s",
        ],
    );
    let w = resolve_workload(&cfg, "rate").expect("the profile resolves");
    assert!(w.describe().contains("profile rate"), "{}", w.describe());
    let k = kpi::measure(Duration::from_secs(1), Some(&w)).expect("a KPI window");
    let m = k.workload.clone().expect("the workload ran");
    assert_eq!(m.metric, "requests_per_s");
    assert_eq!(m.better, "higher");
    assert!(m.value > 0.0, "{m:?}");
    // The window's own KPIs, from the real probe and PSI.
    assert!(k.runq_samples > 0, "{k:?}");
    assert!(k.runq_p99_us.is_some(), "{k:?}");
    assert!(k.psi_cpu_some_pct.is_some(), "{k:?}");

    // A bare spec is judged by the workload's primary metric.
    let w = resolve_workload(&cfg, "wakeup:duration_ms=300").unwrap();
    let m = w.run().unwrap();
    assert_eq!(m.metric, "p99_wakeup_latency");
    assert_eq!(m.better, "lower");

    // Neither a profile nor a spec: says where to look.
    let e = resolve_workload(&cfg, "no-such-thing")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("schedcp observe workload list") && e.contains("schedcp lab workloads"),
        "{e}"
    );
}

#[test]
fn a_command_profile_runs_in_its_working_directory() {
    let state = tempfile::tempdir().unwrap();
    let cfg = config(state.path());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("marker"), b"").unwrap();
    // Succeeds only where the marker is: the directory the profile was added in.
    add_profile(
        state.path(),
        dir.path(),
        &["here", "--cmd", "--", "test", "-f", "marker"],
    );
    let w = resolve_workload(&cfg, "here").unwrap();
    let m = w
        .run()
        .expect("the command runs in the profile's directory");
    assert_eq!(m.metric, "wall_time");
    assert_eq!(m.better, "lower");
}
