//! Bad input at the command line: each case gets a precise message and the
//! documented exit code, before any VM boots.

use crate::common;

use common::*;

fn assert_fails(args: &[&str], code: i32, needle: &str) {
    let o = run(args);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(code), "schedcp {args:?}:\n{t}");
    assert!(
        t.contains(needle),
        "schedcp {args:?}: expected '{needle}' in:\n{t}"
    );
}

#[test]
fn unknown_policy() {
    assert_fails(
        &["lab", "run", "--policy", "nosuch", "--workload", "batch"],
        2,
        "unknown policy 'nosuch'; built-in policies: batch, fifo, latency, vtime",
    );
}

#[test]
fn unknown_workload_and_params() {
    assert_fails(
        &["lab", "run", "--policy", "fifo", "--workload", "bogus"],
        2,
        "unknown workload 'bogus'",
    );
    assert_fails(
        &[
            "lab",
            "run",
            "--policy",
            "fifo",
            "--workload",
            "batch:nope=1",
        ],
        2,
        "has no parameter 'nope'",
    );
    assert_fails(
        &[
            "lab",
            "run",
            "--policy",
            "fifo",
            "--workload",
            "batch:short=-3",
        ],
        2,
        "must be an integer in 0..=4096",
    );
}

#[test]
fn missing_source_file() {
    assert_fails(
        &[
            "lab",
            "run",
            "--policy",
            "/nonexistent/x.bpf.c",
            "--workload",
            "batch",
        ],
        2,
        "cannot read scheduler source /nonexistent/x.bpf.c",
    );
}

#[test]
fn impossible_vm_sizes() {
    assert_fails(
        &[
            "lab",
            "run",
            "--policy",
            "fifo",
            "--workload",
            "batch",
            "--vcpus",
            "0",
        ],
        2,
        "vcpus must be between 1 and 64",
    );
    assert_fails(
        &[
            "lab",
            "run",
            "--policy",
            "fifo",
            "--workload",
            "batch",
            "--mem",
            "16",
        ],
        2,
        "memory must be between 256",
    );
    assert_fails(
        &[
            "lab",
            "run",
            "--policy",
            "fifo",
            "--workload",
            "batch",
            "--timeout",
            "0",
        ],
        2,
        "timeout must be between",
    );
}

#[test]
fn bad_tunables() {
    assert_fails(
        &[
            "lab",
            "run",
            "--policy",
            "vtime",
            "--set",
            "slice_us=5",
            "--workload",
            "batch",
        ],
        2,
        "tunable 'slice_us' must be in",
    );
    assert_fails(
        &[
            "lab",
            "run",
            "--policy",
            "vtime",
            "--set",
            "nope=5",
            "--workload",
            "batch",
        ],
        2,
        "has no tunable 'nope'",
    );
    assert_fails(
        &[
            "lab",
            "run",
            "--policy",
            "default",
            "--set",
            "slice_us=5000",
            "--workload",
            "batch",
        ],
        2,
        "'default' has none",
    );
}

#[test]
fn source_that_does_not_compile_shows_clang_diagnostics() {
    assert_fails(
        &[
            "lab",
            "run",
            "--policy",
            &bad_scheduler("compile_error.bpf.c"),
            "--workload",
            "batch",
        ],
        4,
        "compile_error.bpf.c:28:17: error: no member named 'no_such_field'",
    );
}

#[test]
fn missing_kernel_says_how_to_set_up() {
    let empty = tempfile::tempdir().unwrap();
    let o = schedcp()
        .env("SCHEDCP_CACHE", empty.path())
        .args(["lab", "run", "--policy", "fifo", "--workload", "batch"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("schedcp lab fetch-kernel"),
        "{}",
        text(&o)
    );
}

#[test]
fn missing_qemu_says_how_to_set_up() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[lab]\nqemu = \"/nonexistent/qemu-system-x86_64\"\n").unwrap();
    let o = run(&[
        "--config",
        cfg.to_str().unwrap(),
        "lab",
        "run",
        "--policy",
        "fifo",
        "--workload",
        "batch",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("install qemu-system-x86"), "{}", text(&o));
}

#[test]
fn config_typos_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[lab]\nvcpu = 4\n").unwrap();
    assert_fails(
        &["--config", cfg.to_str().unwrap(), "doctor"],
        2,
        "unknown field `vcpu`",
    );
}

#[test]
fn doctor_json_reports_every_check() {
    let o = run(&["doctor", "--json"]);
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for want in [
        "host_sched_ext",
        "bpf",
        "tracefs",
        "kvm",
        "qemu",
        "clang",
        "guest_kernel",
        "guest_agent",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for c in v["checks"].as_array().unwrap() {
        if c["ok"] == false {
            assert!(
                c["fix"].as_str().is_some_and(|f| !f.is_empty()),
                "a failed check must say how to fix it: {c}"
            );
        }
    }
    // The test setup installs everything the lab needs.
    assert_eq!(v["lab_ready"], true, "{v:#}");
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn workloads_and_policies_list_as_json() {
    let o = run(&["lab", "workloads", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, ["batch", "wakeup", "pingpong", "fairness"], "{v:#}");
    // The policy library lives in the state dir: a private one, not the system's.
    let state = tempfile::tempdir().unwrap();
    let o = common::schedcp()
        .env("SCHEDCP_STATE", state.path())
        .args(["policy", "list", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v.as_array().unwrap().len() >= 4);
}

#[test]
fn a_guest_agent_from_another_build_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("schedcp-guest");
    std::fs::write(&agent, "#!/bin/sh\necho 0000000000000000\n").unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!("[lab]\nguest_agent = {:?}\n", agent.display().to_string()),
    )
    .unwrap();
    let o = run(&[
        "--config",
        cfg.to_str().unwrap(),
        "lab",
        "run",
        "--policy",
        "fifo",
        "--workload",
        "batch",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("it is from another build"),
        "{}",
        text(&o)
    );
}
