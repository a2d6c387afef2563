//! End-to-end lab tests: each boots the real sched_ext kernel in QEMU with the
//! real guest agent. They need `scripts/setup.sh` to have run (guest kernel
//! in the cache, QEMU, clang-19); without it they fail, they do not skip.

use crate::common;

use common::*;

/// Small but real parameters so a TCG VM finishes each in a few seconds.
const WORKLOADS: &[&str] = &[
    "batch:short=12,long=2,short_ms=10,long_ms=150",
    "wakeup:duration_ms=800",
    "pingpong:groups=2,pairs=3,loops=300",
];

fn assert_completed_run(policy: &str, workload: &str) {
    let (code, v) = lab_json(&["--policy", policy, "--workload", workload]);
    assert_eq!(status(&v), "completed", "{policy} on {workload}: {v:#}");
    assert_eq!(code, 0);
    let w = &v["guest"]["workload"];
    let primary = w["primary"].as_str().unwrap();
    let metric = w["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == primary)
        .unwrap();
    assert!(
        metric["value"].as_f64().unwrap() > 0.0,
        "{policy}/{workload}: {metric}"
    );
    assert!(["kvm", "tcg"].contains(&v["accel"]["used"].as_str().unwrap()));
    if policy != "default" {
        let s = &v["guest"]["scheduler"];
        assert_eq!(s["ops_name"], format!("schedcp_{policy}"), "{v:#}");
        assert_eq!(s["attached"], true);
        assert_eq!(s["survived_workload"], true);
        assert_eq!(s["detached_cleanly"], true);
        let states: Vec<&str> = s["state_transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["state"].as_str().unwrap())
            .collect();
        assert!(
            states.contains(&"enabled") && states.last() == Some(&"disabled"),
            "{states:?}"
        );
        assert_eq!(
            s["exit"]["kind_name"], "SCX_EXIT_UNREG",
            "clean detach is an unregister: {}",
            s["exit"]
        );
        assert!(v["timings"]["boot_to_attach_s"].as_f64().unwrap() > 0.0);
    } else {
        assert!(v["guest"]["scheduler"].is_null());
    }
}

#[test]
fn default_scheduler_runs_every_workload() {
    for w in WORKLOADS {
        assert_completed_run("default", w);
    }
}

#[test]
fn fifo_runs_every_workload() {
    for w in WORKLOADS {
        assert_completed_run("fifo", w);
    }
}

#[test]
fn vtime_runs_every_workload() {
    for w in WORKLOADS {
        assert_completed_run("vtime", w);
    }
}

#[test]
fn latency_runs_every_workload() {
    for w in WORKLOADS {
        assert_completed_run("latency", w);
    }
}

#[test]
fn batch_runs_every_workload() {
    for w in WORKLOADS {
        assert_completed_run("batch", w);
    }
}

#[test]
fn tunables_reach_the_scheduler() {
    // The values the programs see are read back from the loaded .rodata map
    // inside the guest: this proves the whole path, not just the CLI parsing.
    let (code, v) = lab_json(&[
        "--policy",
        "batch",
        "--set",
        "slice_us=1000",
        "--set",
        "longest_first=true",
        "--workload",
        WORKLOADS[0],
    ]);
    assert_eq!((code, status(&v)), (0, "completed"), "{v:#}");
    let seen = &v["guest"]["scheduler"]["rodata_in_kernel"];
    assert_eq!(
        seen,
        &serde_json::json!([["slice_us", 1000], ["longest_first", 1]]),
        "{v:#}"
    );
}

#[test]
fn scx_constants_are_filled_from_kernel_btf() {
    // Inserts into SCX_DSQ_GLOBAL: only works if __SCX_DSQ_GLOBAL was filled.
    let (code, v) = lab_json(&[
        "--policy",
        &bad_scheduler("global_dsq.bpf.c"),
        "--workload",
        WORKLOADS[0],
    ]);
    assert_eq!((code, status(&v)), (0, "completed"), "{v:#}");
    let s = &v["guest"]["scheduler"];
    assert!(s["scx_enums_filled"].as_u64().unwrap() > 20, "{s}");
    assert_eq!(s["ops_name"], "schedcp_global_dsq");
}

#[test]
fn verifier_rejection_is_reported_with_the_log() {
    let (code, v) = lab_json(&[
        "--policy",
        &bad_scheduler("verifier_reject.bpf.c"),
        "--workload",
        "batch:short=2,long=0",
    ]);
    assert_eq!(status(&v), "rejected", "{v:#}");
    assert_eq!(code, 4);
    let log = v["guest"]["scheduler"]["verifier_log"].as_str().unwrap();
    assert!(
        log.contains("invalid mem access 'map_value_or_null'"),
        "{log}"
    );
    assert_eq!(v["guest"]["scheduler"]["attached"], false);
}

#[test]
fn stalling_scheduler_is_ejected_by_the_kernel_watchdog() {
    let (code, v) = lab_json(&[
        "--policy",
        &bad_scheduler("stall.bpf.c"),
        "--workload",
        "wakeup:duration_ms=6000",
    ]);
    assert_eq!(status(&v), "scheduler_error", "{v:#}");
    assert_eq!(code, 4);
    assert_eq!(v["outcome"]["kind"], "SCX_EXIT_ERROR_STALL");
    assert!(
        v["outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("failed to run for"),
        "{v:#}"
    );
    let kmsg = v["guest"]["kernel_messages"].to_string();
    assert!(kmsg.contains("runnable task stall"), "{kmsg}");
    // The workload still finished: once the kernel ejects the scheduler its tasks fall back to the default class.
    assert!(
        v["guest"]["workload"]["metrics"].is_array(),
        "the workload after the ejection: {:#}",
        v["guest"]["workload"]
    );
}

#[test]
fn scx_bpf_error_exit_is_reported() {
    let (code, v) = lab_json(&[
        "--policy",
        &bad_scheduler("error_exit.bpf.c"),
        "--workload",
        "wakeup:duration_ms=3000",
    ]);
    assert_eq!((code, status(&v)), (4, "scheduler_error"), "{v:#}");
    assert_eq!(v["outcome"]["kind"], "SCX_EXIT_ERROR_BPF");
    assert!(
        v["outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("deliberate error after 100 enqueues"),
        "{v:#}"
    );
    assert_eq!(v["guest"]["scheduler"]["exit"]["source"], "uei");
}

#[test]
fn vm_watchdog_kills_a_hung_guest() {
    let start = std::time::Instant::now();
    let (code, v) = lab_json(&[
        "--policy",
        "fifo",
        "--workload",
        "wakeup:duration_ms=600000",
        "--timeout",
        "15",
    ]);
    assert_eq!((code, status(&v)), (5, "timed_out"), "{v:#}");
    assert_eq!(v["outcome"]["after_s"], 15);
    assert!(
        start.elapsed().as_secs() < 60,
        "watchdog too slow: {:?}",
        start.elapsed()
    );
    // The run directory is kept with the console log for post-mortems.
    let dir = v["run_dir"].as_str().unwrap();
    assert!(std::path::Path::new(dir).join("console.log").exists());
}
