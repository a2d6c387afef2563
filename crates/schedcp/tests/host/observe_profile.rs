//! `schedcp observe profile`: each allowlisted profiler against a real
//! command and a real process, through the real binary; bad input refused
//! with exit code 2; time, output and stubborn commands bounded.
//!
//! Needs root, `linux-perf` and `strace` (scripts/setup.sh installs them)
//! and, for perf-sched, a mounted tracefs.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `schedcp observe profile --json --quiet ARGS`, parsed; panics with the
/// whole output unless it printed a report and exited 0.
fn profile(args: &[&str]) -> Value {
    profile_with(&[], args)
}

fn profile_with(pre: &[&str], args: &[&str]) -> Value {
    let mut full: Vec<&str> = pre.to_vec();
    full.extend(["observe", "profile", "--json", "--quiet"]);
    full.extend_from_slice(args);
    let o = run(&full);
    assert_eq!(o.status.code(), Some(0), "schedcp {full:?}:\n{}", text(&o));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("schedcp {full:?} printed no JSON ({e}):\n{}", text(&o)))
}

fn refused(args: &[&str], needle: &str) {
    let mut full = vec!["observe", "profile", "--quiet"];
    full.extend_from_slice(args);
    let o = run(&full);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "schedcp {full:?}:\n{t}");
    assert!(
        t.contains(needle),
        "schedcp {full:?}: expected '{needle}' in:\n{t}"
    );
}

fn notes(v: &Value) -> Vec<String> {
    v["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

fn has_note(v: &Value, needle: &str) -> bool {
    notes(v).iter().any(|n| n.contains(needle))
}

fn no_cpu_pmu() -> bool {
    !["cpu", "cpu_core", "cpu_atom"]
        .iter()
        .any(|d| Path::new("/sys/bus/event_source/devices").join(d).exists())
}

/// A process that keeps a CPU busy, killed on drop.
struct Busy(Child);

impl Busy {
    fn spin() -> Busy {
        Busy::sh("while :; do :; done")
    }

    /// System calls without forking (`read` is a shell builtin): what the
    /// strace attach test needs. strace (6.1 here) can deadlock detaching
    /// from a process that is forking at that moment.
    fn syscalls() -> Busy {
        Busy::sh("while :; do read x < /proc/loadavg; done")
    }

    /// Forks and execs a lot: plenty of system calls and short tasks.
    fn forking() -> Busy {
        Busy::sh("while :; do cat /proc/loadavg >/dev/null; done")
    }

    fn sh(script: &str) -> Busy {
        let child = Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Busy(child)
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The private directory the profiler wrote into, from its `-o` argument.
fn private_dir(v: &Value) -> String {
    let cmd = v["profiler"]["commands"][0].as_str().unwrap();
    let out = cmd
        .split_whitespace()
        .skip_while(|w| *w != "-o")
        .nth(1)
        .unwrap();
    Path::new(out).parent().unwrap().display().to_string()
}

#[test]
fn perf_stat_counts_a_command() {
    let v = profile(&[
        "perf-stat",
        "--duration",
        "10",
        "--cmd",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done",
    ]);
    assert_eq!(v["tool"], "perf-stat");
    assert_eq!(v["target"]["argv"][0], "/usr/bin/sh");
    assert_eq!(v["window"]["ended"], "ended_early");
    assert_eq!(v["profiler"]["path"], "/usr/bin/perf");
    let s = &v["summary"]["perf_stat"];
    let task_clock = s["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["event"] == "task-clock")
        .unwrap();
    assert_eq!(task_clock["unit"], "ms");
    // Loose bounds: other work shares the machine's CPUs.
    assert!(task_clock["value"].as_f64().unwrap() > 1.0, "{s}");
    assert!(s["derived"]["cpus_utilized"].as_f64().unwrap() > 0.0, "{s}");
    assert!(s["derived"]["context_switches_per_s"].is_number(), "{s}");
    if no_cpu_pmu() {
        assert_eq!(
            s["unsupported"],
            serde_json::json!(["cycles", "instructions", "branches", "branch-misses"])
        );
        assert!(has_note(&v, "no hardware counters on this machine"), "{v}");
        assert!(s["derived"].get("ipc").is_none());
    } else {
        assert!(s["derived"]["ipc"].as_f64().unwrap() > 0.0, "{s}");
    }
    assert!(
        !Path::new(&private_dir(&v)).exists(),
        "private dir left behind"
    );
}

#[test]
fn perf_stat_counts_a_running_process() {
    let busy = Busy::spin();
    let v = profile(&["perf-stat", "--pid", &busy.pid(), "--duration", "1"]);
    assert_eq!(v["target"]["pid"].as_u64().unwrap().to_string(), busy.pid());
    assert_eq!(v["target"]["comm"], "sh");
    assert_eq!(v["window"]["ended"], "window_closed");
    let s = &v["summary"]["perf_stat"];
    assert_eq!(s["counted_s"], 1.0);
    // A spinning shell: on a CPU whenever it gets one.
    assert!(s["derived"]["cpus_utilized"].as_f64().unwrap() > 0.0, "{s}");
    assert!(s["not_counted"].as_array().unwrap().is_empty(), "{s}");
}

#[test]
fn perf_sched_reports_the_commands_delays() {
    let v = profile(&[
        "perf-sched",
        "--duration",
        "2",
        "--top",
        "5",
        "--cmd",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3; do (while :; do :; done) & done; wait",
    ]);
    // The command runs forever: stopped at the window.
    assert_eq!(v["window"]["ended"], "window_closed");
    let s = &v["summary"]["perf_sched"];
    assert!(s["tasks_seen"].as_u64().unwrap() >= 4, "{s}");
    assert!(s["total_switches"].as_u64().unwrap() > 0, "{s}");
    let t = &s["target"];
    // The shell and its three spinning subshells, on 2 CPUs: they wait.
    assert!(t["tasks"].as_u64().unwrap() >= 3, "{s}");
    assert!(t["max_delay_ms"].as_f64().unwrap() > 0.0, "{s}");
    let top = s["top_by_max_delay"].as_array().unwrap();
    assert!(!top.is_empty() && top.len() <= 5, "{s}");
    // Other work on the machine may own the top rows; the target's worst
    // task is one of the command's shells.
    assert!(t["worst_task"].as_str().unwrap().starts_with("sh:"), "{s}");
    let commands = v["profiler"]["commands"].as_array().unwrap();
    assert!(commands[1].as_str().unwrap().contains("sched latency"));
    // The recording went with the private directory.
    assert!(
        !Path::new(&private_dir(&v)).exists(),
        "recording left behind"
    );
    let elapsed = v["window"]["elapsed_s"].as_f64().unwrap();
    assert!(elapsed < 2.0 + 5.0, "{elapsed}");
}

#[test]
fn perf_sched_finds_a_process_and_its_children() {
    let busy = Busy::forking();
    let v = profile(&["perf-sched", "--pid", &busy.pid(), "--duration", "1"]);
    let t = &v["summary"]["perf_sched"]["target"];
    // The loop's cat children count as the target.
    assert!(t["tasks"].as_u64().unwrap() >= 2, "{v}");
    assert!(t["switches"].as_u64().unwrap() >= 2, "{v}");
}

#[test]
fn strace_counts_a_commands_system_calls() {
    let v = profile(&[
        "strace-summary",
        "--duration",
        "10",
        "--top",
        "100",
        "--cmd",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3; do cat /nonexistent 2>/dev/null; done; exit 3",
    ]);
    assert_eq!(v["window"]["ended"], "ended_early");
    assert!(has_note(&v, "the command exited with status 3"), "{v}");
    assert!(has_note(&v, "strace stops the target"), "{v}");
    let s = &v["summary"]["strace_summary"];
    let top = s["top"].as_array().unwrap();
    let execve = top.iter().find(|r| r["name"] == "execve").unwrap();
    // sh itself is exec'ed by strace, then three cats.
    assert_eq!(execve["calls"], 4, "{s}");
    let openat = top.iter().find(|r| r["name"] == "openat").unwrap();
    assert!(openat["errors"].as_u64().unwrap() >= 3, "{s}");
    assert!(s["total_calls"].as_u64().unwrap() > 50, "{s}");
}

#[test]
fn strace_attaches_to_a_process_and_detaches() {
    let mut busy = Busy::syscalls();
    let v = profile(&[
        "strace-summary",
        "--pid",
        &busy.pid(),
        "--duration",
        "1",
        "--top",
        "3",
    ]);
    assert_eq!(v["window"]["ended"], "window_closed");
    let s = &v["summary"]["strace_summary"];
    assert!(s["total_calls"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["top"].as_array().unwrap().len(), 3);
    // Detached, not killed: the process keeps running.
    assert!(
        busy.0.try_wait().unwrap().is_none(),
        "strace killed its target"
    );
}

#[test]
fn a_command_that_runs_forever_stops_at_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 1000", pidfile.display());
    let start = Instant::now();
    let v = profile(&[
        "perf-stat",
        "--duration",
        "1",
        "--cmd",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(v["window"]["ended"], "window_closed");
    assert!(has_note(&v, "still running when the window closed"), "{v}");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    assert!(
        !stat.contains("(sleep)"),
        "the command outlived its profile: {stat}"
    );
}

#[test]
fn a_command_ignoring_the_stop_is_killed_and_still_reported() {
    let start = Instant::now();
    let v = profile(&[
        "strace-summary",
        "--duration",
        "1",
        "--cmd",
        "--",
        "sh",
        "-c",
        "trap '' INT TERM; while :; do sleep 0.1; done",
    ]);
    // Window + 2 s grace for the command; the report survives.
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(v["window"]["ended"], "command_killed");
    assert!(has_note(&v, "ignored the profiler's stop signal"), "{v}");
    assert!(
        v["summary"]["strace_summary"]["total_calls"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn a_chatty_command_neither_blocks_nor_floods() {
    // 50 MB on stdout: the sandbox drains and drops it past the cap.
    let v = profile(&[
        "perf-stat",
        "--duration",
        "20",
        "--cmd",
        "--",
        "sh",
        "-c",
        "head -c 50000000 /dev/zero",
    ]);
    assert_eq!(v["window"]["ended"], "ended_early");
    let printed = serde_json::to_string(&v).unwrap();
    assert!(
        printed.len() < 10_000,
        "the report carries the command's output"
    );
}

#[test]
fn the_output_cap_truncates_the_analysis_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[observe]\nprofile_max_output_bytes = 1500\nprofile_max_duration_s = 3\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    // 40 short-lived processes: a latency table far longer than 1500 bytes.
    let v = profile_with(
        &["--config", config],
        &[
            "perf-sched",
            "--duration",
            "2",
            "--cmd",
            "--",
            "sh",
            "-c",
            "for i in $(seq 40); do /bin/true; done; sleep 0.2",
        ],
    );
    assert!(has_note(&v, "printed more than the output cap"), "{v}");
    assert!(v["summary"]["perf_sched"]["tasks_seen"].as_u64().unwrap() >= 1);
    // The configured maximum duration applies.
    let o = run(&[
        "--config",
        config,
        "observe",
        "profile",
        "perf-stat",
        "--pid",
        "1",
        "--duration",
        "4",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("between 1 and 3 seconds"), "{}", text(&o));
}

#[test]
fn human_output_is_a_summary() {
    let o = run(&[
        "observe",
        "profile",
        "--quiet",
        "strace-summary",
        "--duration",
        "5",
        "--top",
        "3",
        "--cmd",
        "--",
        "true",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.starts_with("strace-summary of `/usr/bin/true`"), "{t}");
    assert!(t.contains("system calls ("), "{t}");
    assert!(t.contains("notes:"), "{t}");
}

#[test]
fn bad_input_is_refused() {
    refused(
        &["perf-record", "--pid", "1", "--duration", "1"],
        "possible values: perf-stat, perf-sched, strace-summary",
    );
    refused(
        &["perf-stat", "--pid", "1", "--duration", "0"],
        "--duration must be between 1 and 120",
    );
    refused(
        &["perf-stat", "--pid", "1", "--duration", "99999999"],
        "--duration must be between 1 and 120",
    );
    // Beyond any pid_max.
    refused(
        &["perf-stat", "--pid", "99999999", "--duration", "1"],
        "no process with pid 99999999",
    );
    refused(
        &[
            "perf-stat",
            "--pid",
            "1",
            "--duration",
            "1",
            "--cmd",
            "--",
            "true",
        ],
        "cannot be used with",
    );
    refused(
        &["perf-stat", "--duration", "1"],
        "required arguments were not provided",
    );
    refused(&["perf-stat", "--duration", "1", "--cmd"], "<COMMAND>");
    refused(
        &[
            "perf-stat",
            "--duration",
            "1",
            "--cmd",
            "--",
            "/no/such/binary",
        ],
        "command `/no/such/binary` does not exist",
    );
    refused(
        &[
            "strace-summary",
            "--duration",
            "1",
            "--cmd",
            "--",
            "no-such-program-xyz",
        ],
        "not found in /usr/bin:/bin",
    );
    // Flags for the profiler itself are not accepted.
    refused(
        &["perf-stat", "--pid", "1", "--duration", "1", "-e", "cycles"],
        "unexpected argument",
    );
    refused(
        &["perf-stat", "--pid", "1", "--duration", "1", "--top", "0"],
        "0 is not in 1..=100",
    );
}

#[test]
fn process_targets_are_checked() {
    // kthreadd: a kernel thread makes no system calls.
    refused(
        &["strace-summary", "--pid", "2", "--duration", "1"],
        "kernel thread",
    );
    // A thread id is not a process id.
    let me = std::process::id();
    let _t = std::thread::spawn(|| std::thread::sleep(Duration::from_secs(3)));
    std::thread::sleep(Duration::from_millis(50));
    let tid = std::fs::read_dir(format!("/proc/{me}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&t| t != me)
        .unwrap();
    refused(
        &["perf-stat", "--pid", &tid.to_string(), "--duration", "1"],
        &format!("pass the process id: --pid {me}"),
    );
}
