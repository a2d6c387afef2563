//! The feedback channel end to end through the real binary: workload
//! profiles, benchmark run-sets persisted in the store, the verdict of a
//! repeated no-change run, and bad input. Each test has its own state
//! directory.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use serde_json::Value;

/// A command whose duration hardly depends on host load (the tests run
/// beside CPU-heavy micro-VM tests): its two run-sets are draws from one
/// distribution, and any residual difference is far below the 1% minimum
/// effect.
const STEADY: &[&str] = &["sleep", "0.3"];

fn add_command(env: &Env, name: &str, argv: &[&str]) -> Value {
    let mut args = vec!["observe", "workload", "add", name, "--cmd", "--json", "--"];
    args.extend_from_slice(argv);
    let o = env.run(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn repeated_no_change_run_says_no_significant_change() {
    let env = Env::new();
    let p = add_command(&env, "steady", STEADY);
    assert_eq!(p["name"], "steady");
    assert_eq!(p["metric"], "wall_time");
    assert_eq!(p["direction"], "lower");
    assert_eq!(p["target"]["kind"], "command");
    assert_eq!(p["target"]["argv"], serde_json::json!(STEADY));

    let first = env.json(&["observe", "benchmark", "steady", "--runs", "5"], 0);
    assert_eq!(first["values"].as_array().unwrap().len(), 5);
    assert!(
        first["summary"]["median"].as_f64().unwrap() >= 300.0,
        "{first:#}"
    );
    assert!(first["baseline"].is_null());
    let first_id = first["id"].as_i64().unwrap();

    let id = first_id.to_string();
    let second = env.json(
        &[
            "observe",
            "benchmark",
            "steady",
            "--runs",
            "5",
            "--baseline",
            &id,
        ],
        0,
    );
    let b = &second["baseline"];
    assert_eq!(b["id"].as_i64(), Some(first_id));
    assert_eq!(b["verdict"], "no_significant_change", "{second:#}");
    assert_eq!(b["method"], "exact");
    assert!(b["p_value"].as_f64().is_some());
    assert!(b["change_pct"].as_f64().unwrap().abs() < 5.0, "{b:#}");
    assert!(b["ci_pct"]["low"].as_f64().is_some());

    // Persisted: the history lists both, newest first, with the baseline.
    let h = env.json(&["observe", "workload", "history", "steady"], 0);
    let entries = h["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["id"], second["id"]);
    assert_eq!(entries[0]["baseline_id"].as_i64(), Some(first_id));
    assert_eq!(entries[1]["runs"], 5);

    // The store is one private SQLite file.
    assert!(env.state().join("schedcp.db").is_file());
    let mode = std::fs::metadata(env.state()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);

    // The text report states the verdict in words.
    let o = env.run(&[
        "observe",
        "benchmark",
        "steady",
        "--runs",
        "4",
        "--baseline",
        &id,
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("verdict: NO SIGNIFICANT CHANGE"), "{t}");
    assert!(t.contains("Mann–Whitney U"), "{t}");
}

#[test]
fn profiles_list_show_and_remove() {
    let env = Env::new();
    // CPU work through a shell, given as argv (no shell of ours in between).
    add_command(
        &env,
        "spin",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
        ],
    );
    let lat = env.json(
        &[
            "observe",
            "workload",
            "add",
            "lat",
            "--lab",
            "wakeup:workers=8",
            "--metric",
            "requests_per_s",
        ],
        0,
    );
    assert_eq!(lat["direction"], "higher", "from the metric");
    assert!(lat["target"]["workload"]
        .as_str()
        .unwrap()
        .contains("workers=8"));

    let list = env.json(&["observe", "workload", "list"], 0);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lat", "spin"]);

    let r = env.json(&["observe", "benchmark", "spin", "--runs", "3"], 0);
    assert_eq!(r["values"].as_array().unwrap().len(), 3);
    let show = env.json(&["observe", "workload", "show", "spin"], 0);
    assert_eq!(show["profile"]["name"], "spin");
    assert_eq!(show["entries"].as_array().unwrap().len(), 1);

    // History is not deleted by accident.
    env.fails(
        &["observe", "workload", "remove", "spin"],
        2,
        "has 1 benchmark run-set(s); pass --force",
    );
    let removed = env.json(&["observe", "workload", "remove", "spin", "--force"], 0);
    assert_eq!(removed["run_sets"], 1);
    env.fails(
        &["observe", "workload", "show", "spin"],
        2,
        "no workload profile named 'spin'",
    );
}

#[test]
fn failed_runs_are_reported_and_exit_1() {
    let env = Env::new();
    add_command(
        &env,
        "broken",
        &["sh", "-c", "echo 'no input file' >&2; exit 4"],
    );
    let o = env.run(&["observe", "benchmark", "broken", "--runs", "2", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["values"].as_array().unwrap().len(), 0);
    let failures = r["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0]["reason"], "exit status 4: no input file");
    // Recorded all the same.
    let h = env.json(&["observe", "workload", "history", "broken"], 0);
    assert_eq!(h["entries"][0]["failed"], 2);
}

#[test]
fn bad_input_is_refused_precisely() {
    let env = Env::new();
    add_command(&env, "a", &["true"]);
    add_command(&env, "b", &["true"]);
    let other = env.json(&["observe", "benchmark", "b", "--runs", "1"], 0);
    let other_id = other["id"].as_i64().unwrap().to_string();

    env.fails(
        &["observe", "benchmark", "nope"],
        2,
        "no workload profile named 'nope'",
    );
    env.fails(
        &["observe", "workload", "add", "a", "--cmd", "--", "true"],
        2,
        "a workload profile named 'a' already exists",
    );
    env.fails(
        &["observe", "benchmark", "a", "--runs", "0"],
        2,
        "0 is not in 1..=100",
    );
    env.fails(
        &["observe", "benchmark", "a", "--runs", "101"],
        2,
        "101 is not in 1..=100",
    );
    env.fails(
        &["observe", "benchmark", "a", "--baseline", "4242"],
        2,
        "no benchmark run-set with id 4242",
    );
    env.fails(
        &["observe", "benchmark", "a", "--baseline", &other_id],
        2,
        "is a benchmark of profile 'b', not 'a'",
    );
    env.fails(
        &[
            "observe", "workload", "add", "w", "--lab", "wakeup", "--metric", "makespan",
        ],
        2,
        "workload 'wakeup' does not report a metric 'makespan'; it reports: p99_wakeup_latency",
    );
    env.fails(
        &["observe", "workload", "add", "w", "--lab", "bogus"],
        2,
        "unknown workload 'bogus'",
    );
    env.fails(
        &[
            "observe", "workload", "add", "bad name", "--cmd", "--", "true",
        ],
        2,
        "invalid profile name 'bad name'",
    );
    env.fails(
        &["observe", "workload", "add", "c", "--cmd"],
        2,
        "--cmd needs the command after `--`",
    );
    env.fails(
        &[
            "observe",
            "workload",
            "add",
            "c",
            "--cmd",
            "--",
            "no-such-program-xyz",
        ],
        2,
        "program 'no-such-program-xyz' not found on $PATH",
    );
    env.fails(
        &[
            "observe",
            "workload",
            "add",
            "c",
            "--cmd",
            "--metric",
            "p99_wakeup_latency",
            "--",
            "true",
        ],
        2,
        "wall_time only",
    );
    env.fails(
        &["observe", "benchmark", "a", "--policy", "fifo"],
        2,
        "lab profiles only",
    );
    env.fails(
        &["observe", "benchmark", "a", "--alpha", "1.5"],
        2,
        "alpha must be between 0 and 1",
    );
    // Nothing above recorded a run-set for 'a'.
    let h = env.json(&["observe", "workload", "history", "a"], 0);
    assert!(h["entries"].as_array().unwrap().is_empty());
}

#[test]
fn an_unusable_state_dir_is_a_setup_error() {
    let env = Env::new();
    // A regular file where the state directory should be.
    std::fs::write(env.state(), "").unwrap();
    assert!(Path::new(&env.state()).is_file());
    env.fails(
        &["observe", "workload", "list"],
        3,
        "cannot create the state directory",
    );
}
