//! The host probes for real: each test runs `schedcp observe probe` (the
//! real binary, real BPF programs on this kernel) against a workload it
//! starts itself, and checks what came back and that the kernel holds none
//! of our programs or maps afterwards. Needs root and BPF (as CI has).

use crate::common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{run, schedcp, text};
use schedcp::observe::probes::bpf_stats::{ours_loaded, Ours};
use serde_json::Value;

/// One probe at a time: the leak check reads the kernel's global lists, and
/// BPF statistics are global too.
static KERNEL: Mutex<()> = Mutex::new(());

fn exclusive() -> MutexGuard<'static, ()> {
    KERNEL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The workload's thread name, and so its comm.
const WORKLOAD_COMM: &str = "scp-pingpong";

/// Two threads of this process handing a token back and forth: every hand-off
/// is a wakeup and a context switch.
struct PingPong {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl PingPong {
    fn start() -> PingPong {
        let stop = Arc::new(AtomicBool::new(false));
        let (to_b, from_a) = mpsc::channel::<u64>();
        let (to_a, from_b) = mpsc::channel::<u64>();
        let spawn =
            |name: &str, rx: mpsc::Receiver<u64>, tx: mpsc::Sender<u64>, stop: Arc<AtomicBool>| {
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || {
                        while let Ok(n) = rx.recv() {
                            if stop.load(Ordering::Relaxed) || tx.send(n + 1).is_err() {
                                break;
                            }
                        }
                    })
                    .unwrap()
            };
        let a = spawn(WORKLOAD_COMM, from_b, to_b.clone(), stop.clone());
        let b = spawn(WORKLOAD_COMM, from_a, to_a, stop.clone());
        to_b.send(0).unwrap();
        PingPong {
            stop,
            threads: vec![a, b],
        }
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The kernel frees a detached tracing program after an RCU grace period,
/// so give it a moment before calling anything left a leak.
fn assert_nothing_left() {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left: Ours = ours_loaded();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = ours_loaded();
    }
    assert!(left.is_empty(), "left loaded in the kernel: {left:?}");
}

/// `schedcp observe probe ARGS --json --quiet` against the ping-pong
/// workload; its exit code and report.
fn probe_json(args: &[&str]) -> Value {
    assert_nothing_left();
    let _work = PingPong::start();
    let mut full = vec!["observe", "probe", "--json", "--quiet"];
    full.extend_from_slice(args);
    let o = run(&full);
    assert_eq!(o.status.code(), Some(0), "schedcp {full:?}:\n{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("schedcp {full:?} printed no JSON ({e}):\n{}", text(&o)));
    assert_nothing_left();
    v
}

fn me() -> String {
    std::process::id().to_string()
}

#[test]
fn list_describes_each_probe_and_its_cost() {
    let o = run(&["observe", "probe", "--list", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["runqlat", "cputime", "schedevents"]);
    for p in v.as_array().unwrap() {
        assert!(!p["tracepoints"].as_array().unwrap().is_empty(), "{p}");
        assert!(
            p["cost"]["measured_ns_per_event"].as_f64().unwrap() > 0.0,
            "{p}"
        );
    }
    let human = run(&["observe", "probe", "--list"]);
    assert!(text(&human).contains("sched_switch"), "{}", text(&human));
}

#[test]
fn runqlat_measures_a_workload_and_detaches() {
    let _k = exclusive();
    let v = probe_json(&["runqlat", "--duration", "1", "--pid", &me()]);
    assert_eq!(v["probe"], "runqlat");
    assert_eq!(
        v["filter"]["pid"].as_u64(),
        Some(u64::from(std::process::id()))
    );
    let r = &v["result"];
    let count = r["count"].as_u64().unwrap();
    assert!(
        count > 100,
        "the ping-pong should queue hundreds of times: {v}"
    );
    assert_eq!(v["events"].as_u64(), Some(count));
    assert_eq!(r["unit"], "us");
    let bucketed: u64 = r["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(bucketed, count, "{v}");
    let (p50, p99, max) = (
        r["p50_us"].as_f64().unwrap(),
        r["p99_us"].as_f64().unwrap(),
        r["max_us"].as_f64().unwrap(),
    );
    assert!(p50 <= p99, "{v}");
    // p99 is a bucket estimate, at most the top of the max's bucket.
    assert!(p99 <= 2.0 * max.max(1.0), "{v}");
    assert!(v["duration_s"].as_f64().unwrap() >= 1.0, "{v}");
    assert_eq!(v["interrupted"], false);
}

#[test]
fn runqlat_by_comm_and_with_its_own_cost() {
    let _k = exclusive();
    let before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap();
    let v = probe_json(&["runqlat", "-d", "1", "--comm", WORKLOAD_COMM, "--cost"]);
    assert!(v["result"]["count"].as_u64().unwrap() > 100, "{v}");
    let cost = &v["cost"];
    let progs: Vec<&str> = cost["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(progs, ["scp_rq_switch", "scp_rq_wake", "scp_rq_wake_new"]);
    assert!(cost["run_cnt"].as_u64().unwrap() > 0, "{v}");
    assert!(cost["ns_per_event"].as_f64().unwrap() > 0.0, "{v}");
    // Statistics were on only while the probe held them.
    let after = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap();
    assert_eq!(before, after);
}

#[test]
fn cputime_by_pid_sees_only_that_process() {
    let _k = exclusive();
    let v = probe_json(&["cputime", "-d", "1", "--pid", &me(), "--top", "50"]);
    let r = &v["result"];
    let top = r["top"].as_array().unwrap();
    assert!(!top.is_empty(), "{v}");
    for t in top {
        assert_eq!(
            t["tgid"].as_u64(),
            Some(u64::from(std::process::id())),
            "{t}"
        );
    }
    let pingers: Vec<&Value> = top.iter().filter(|t| t["comm"] == WORKLOAD_COMM).collect();
    assert_eq!(pingers.len(), 2, "both ping-pong threads: {v}");
    for t in pingers {
        assert!(t["switches"].as_u64().unwrap() > 100, "{t}");
        let (on, off) = (
            t["on_cpu_ms"].as_f64().unwrap(),
            t["off_cpu_ms"].as_f64().unwrap(),
        );
        assert!(on > 0.0 && off > 0.0, "{t}");
        // Both threads lived through the window: on + off covers it.
        let window = r["window_ms"].as_f64().unwrap();
        assert!(
            (on + off - window).abs() < 0.05 * window,
            "{t} vs {window} ms"
        );
    }
}

/// Runs `program` `n` times, a little after the probe has attached.
fn spawn_later(program: std::path::PathBuf, n: usize) -> JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        for _ in 0..n {
            let st = Command::new(&program)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
        }
    })
}

#[test]
fn schedevents_by_pid_counts_this_process() {
    let _k = exclusive();
    let spawner = spawn_later("true".into(), 5);
    let v = probe_json(&["schedevents", "-d", "2", "--pid", &me()]);
    spawner.join().unwrap();
    let top = v["result"]["top"].as_array().unwrap();
    assert_eq!(top.len(), 1, "only this process: {v}");
    let mine = &top[0];
    assert_eq!(mine["tgid"].as_u64(), Some(u64::from(std::process::id())));
    assert!(mine["switches"].as_u64().unwrap() > 100, "{mine}");
    assert!(mine["wakeups"].as_u64().unwrap() > 100, "{mine}");
    assert!(
        mine["involuntary"].as_u64() <= mine["switches"].as_u64(),
        "{mine}"
    );
    // Each `true` was forked from this process.
    assert!(mine["forks"].as_u64().unwrap() >= 5, "{mine}");
    assert_eq!(v["result"]["totals"], {
        let mut t = mine.clone();
        let t = t.as_object_mut().unwrap();
        for k in ["tgid", "comm", "total"] {
            t.remove(k);
        }
        Value::Object(t.clone())
    });
}

#[test]
fn schedevents_by_comm_sees_execs() {
    let _k = exclusive();
    // A program whose name after exec is ours alone.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("scp-exec-true");
    std::fs::copy("/bin/true", &exe).unwrap();
    let spawner = spawn_later(exe, 5);
    let v = probe_json(&["schedevents", "-d", "2", "--comm", "scp-exec-true"]);
    spawner.join().unwrap();
    let r = &v["result"];
    assert_eq!(r["processes"].as_u64(), Some(5), "{v}");
    for p in r["top"].as_array().unwrap() {
        assert_eq!(p["comm"], "scp-exec-true", "{p}");
        assert_eq!(p["execs"].as_u64(), Some(1), "{p}");
    }
    assert_eq!(r["totals"]["execs"].as_u64(), Some(5), "{v}");
}

#[test]
fn ctrl_c_stops_early_and_still_reports() {
    let _k = exclusive();
    assert_nothing_left();
    let _work = PingPong::start();
    let child = schedcp()
        .args([
            "observe",
            "probe",
            "runqlat",
            "--duration",
            "60",
            "--json",
            "--quiet",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once its programs are in the kernel (which also shows the
    // leak check below can see them).
    let deadline = Instant::now() + Duration::from_secs(10);
    while ours_loaded().programs.len() < 3 {
        assert!(Instant::now() < deadline, "the probe never attached");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        t.elapsed()
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["interrupted"], true, "{v}");
    assert!(v["duration_s"].as_f64().unwrap() < 10.0, "{v}");
    assert!(v["result"]["count"].as_u64().unwrap() > 0, "{v}");
    assert_nothing_left();
}

#[test]
fn bad_arguments_are_refused_before_anything_loads() {
    let _k = exclusive();
    assert_nothing_left();
    let cases: &[(&[&str], &str)] = &[
        (
            &["runqlat", "--duration", "0"],
            "--duration must be between 1 and",
        ),
        (
            &["runqlat", "--duration", "100000"],
            "--duration must be between 1 and",
        ),
        (&["runqlen"], "unknown probe 'runqlen'"),
        // Above the kernel's pid limit (2^22), so never a live process.
        (
            &["cputime", "--pid", "4194305"],
            "no process with pid 4194305",
        ),
        (
            &["schedevents", "--pid", "1", "--comm", "x"],
            "cannot be used with",
        ),
        (
            &["runqlat", "--comm", "a-name-too-long-for-comm"],
            "1 to 15 bytes",
        ),
        (&["runqlat", "--top", "0"], "--top must be between"),
        (&[], "required"),
    ];
    for (args, want) in cases {
        let mut full = vec!["observe", "probe"];
        full.extend_from_slice(args);
        let o = run(&full);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{full:?}: {out}");
        assert!(out.contains(want), "{full:?}: expected {want:?} in:\n{out}");
    }
    // A thread id is not a process id.
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        tx.send(nix::unistd::gettid().as_raw()).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    });
    let tid = rx.recv().unwrap().to_string();
    let o = run(&["observe", "probe", "runqlat", "--pid", &tid]);
    t.join().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is a thread of process"), "{}", text(&o));
    assert_nothing_left();
}

#[test]
fn overhead_benchmark_measures_both_sides() {
    use schedcp::selfbench::probe_overhead::{run, Config};
    let _k = exclusive();
    let cfg = Config {
        runs: 1,
        hackbench_groups: 1,
        hackbench_loops: 200,
        all_probes: false,
    };
    let r = run(&cfg, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    for side in [&r.ours, &r.reference] {
        assert_eq!(side.samples.len(), 1, "{side:?}");
        let cost = &side.samples[0].cost;
        assert_eq!(cost.programs.len(), 3, "{side:?}");
        assert!(cost.run_cnt > 1000, "{side:?}");
        assert!(side.median_ns_per_event > 0.0, "{side:?}");
    }
    assert!(r.ratio.is_finite() && r.ratio > 0.0, "{r:?}");
    assert!(r.render().contains("ratio schedcp/libbpf-tools"));
    assert_nothing_left();
}

/// `observe benchmark --signature`: a warm-up run with the probes attached
/// (not a sample) describes the workload; the signature is kept with the
/// profile and the run-set, and a lab profile is refused with why.
#[test]
fn benchmark_signature_is_kept_with_the_profile() {
    let _k = exclusive();
    let env = common::Env::new();
    let o = env.run(&[
        "observe",
        "workload",
        "add",
        "forks",
        "--cmd",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8; do sleep 0.02; done",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = env.json(
        &[
            "observe",
            "benchmark",
            "forks",
            "--runs",
            "3",
            "--signature",
        ],
        0,
    );
    assert_eq!(
        r["values"].as_array().unwrap().len(),
        3,
        "the warm-up is not a sample"
    );
    let sig = &r["signature"];
    assert!(sig["wall_s"].as_f64().unwrap() >= 0.16, "{sig:#}");
    assert!(
        sig["voluntary_switches_per_s"].as_f64().unwrap() > 0.0,
        "{sig:#}"
    );
    assert_eq!(sig["mix"]["io_pct"].as_f64().map(|x| x >= 0.0), Some(true));
    let shown = env.json(&["observe", "workload", "show", "forks"], 0);
    assert_eq!(shown["signature"]["source"], "benchmark");
    assert_eq!(&shown["signature"]["signature"], sig);
    assert_eq!(
        shown["entries"][0]["signature_id"],
        shown["signature"]["id"]
    );
    assert_nothing_left();

    let o = env.run(&["observe", "workload", "add", "lat", "--lab", "wakeup"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = env.run(&["observe", "benchmark", "lat", "--runs", "1", "--signature"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("command profiles only"), "{}", text(&o));
}
