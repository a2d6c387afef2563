//! Knobs on this machine, for real: sysctls, THP, readahead and the I/O
//! scheduler on a real block device, nice/policy/slice/affinity on real
//! processes, the cgroup CPU controller here (v1 on these machines); trials
//! through the comparison engine; change sets under the deploy daemon's
//! canary, breaker, crash reconciliation and operator back-off.
//!
//! Every test holds [`Host`], which snapshots every host value the tests
//! may touch and writes it back when dropped — also when the test panics.
//! The tests run one at a time (they share the machine's knobs).

use crate::common::{self, Daemon};

use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

use schedcp::knobs::change::{self, Assignment, WorkloadBinding};
use schedcp::knobs::{catalog, sysfs, Applied};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

/// The first real block device (not loop/ram) with an I/O scheduler file.
fn dev() -> String {
    catalog::devices()
        .into_iter()
        .find(|d| std::path::Path::new(&format!("/sys/block/{d}/queue/scheduler")).exists())
        .expect("a block device with a queue (vda on these machines)")
}

fn watched() -> Vec<String> {
    let d = dev();
    [
        "vm.swappiness",
        "vm.dirty_background_ratio",
        "vm.vfs_cache_pressure",
        "kernel.sched_autogroup_enabled",
        "thp.enabled",
        "thp.defrag",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("block.{d}.read_ahead_kb"),
        format!("block.{d}.scheduler"),
        format!("block.{d}.nr_requests"),
    ])
    .collect()
}

fn read(name: &str) -> String {
    sysfs::read(&catalog::resolve(name).unwrap()).unwrap()
}

/// The host's values, put back on drop (panic included).
pub(crate) struct Host {
    saved: Vec<(String, String)>,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Host {
    pub(crate) fn hold() -> Host {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        Host {
            saved: watched()
                .into_iter()
                .map(|k| {
                    let v = read(&k);
                    (k, v)
                })
                .collect(),
            _serial: serial,
        }
    }

    pub(crate) fn unchanged(&self) {
        for (k, v) in &self.saved {
            assert_eq!(&read(k), v, "{k} changed");
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for (k, v) in &self.saved {
            let r = catalog::resolve(k).unwrap();
            if read(k) != *v {
                let _ = sysfs::write(&r, v);
            }
        }
        // No test cgroup outlives its test.
        for root in ["/sys/fs/cgroup/cpu/schedcp", "/sys/fs/cgroup/schedcp"] {
            if let Ok(rd) = std::fs::read_dir(root) {
                for e in rd.flatten().filter(|e| e.path().is_dir()) {
                    let procs =
                        std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
                    for p in procs.lines() {
                        let _ =
                            std::fs::write(format!("{}/../../cgroup.procs", e.path().display()), p);
                    }
                    let _ = std::fs::remove_dir(e.path());
                }
                let _ = std::fs::remove_dir(root);
            }
        }
    }
}

/// Another value inside the knob's safe range and the kernel's choices.
fn other(name: &str, now: &str) -> String {
    let r = catalog::resolve(name).unwrap();
    let k = r.knob;
    match (k.min, k.max) {
        (Some(lo), Some(hi)) => {
            let n: i64 = now.parse().unwrap();
            let d = 7 * k.step.unwrap_or(1);
            let v = if n + d <= hi { n + d } else { (n - d).max(lo) };
            v.to_string()
        }
        _ if k.access == catalog::Access::Selector => {
            let choices = sysfs::choices(&r);
            choices
                .into_iter()
                .find(|c| c != now && k.values.contains(c))
                .unwrap_or_else(|| now.to_string())
        }
        _ => {
            if now == "1" {
                "0".into()
            } else {
                "1".into()
            }
        }
    }
}

fn no_workload(w: &str) -> Result<WorkloadBinding, schedcp::error::Error> {
    Err(schedcp::error::Error::NotFound(format!("no workload {w}")))
}

#[test]
fn real_writes_are_read_back_and_restored() {
    let host = Host::hold();
    let set: Vec<Assignment> = watched()
        .into_iter()
        .map(|k| {
            // Under another I/O scheduler the queue may hold fewer requests.
            let v = if k.ends_with("nr_requests") {
                "64".into()
            } else {
                other(&k, &read(&k))
            };
            Assignment {
                knob: k,
                value: v,
                workload: None,
            }
        })
        .collect();
    let plan = change::admit(&set, &no_workload).expect("every watched knob is writable here");
    // The snapshot is persisted before the first write: at that moment
    // every value is still the host's own.
    let mut persisted = Vec::new();
    let mut persist = |a: &Applied| {
        if persisted.is_empty() {
            for (k, v) in &host.saved {
                assert_eq!(
                    &read(k),
                    v,
                    "{k} was written before the snapshot was persisted"
                );
            }
        }
        persisted.push(a.clone());
        Ok(())
    };
    let applied = Applied::apply(plan, &mut persist).unwrap();
    assert!(!persisted.is_empty());
    for a in &set {
        let want = schedcp::knobs::value::canonical(
            catalog::resolve(&a.knob).unwrap().knob,
            &a.knob,
            &a.value,
        )
        .unwrap();
        assert_eq!(read(&a.knob), want, "{} in force", a.knob);
    }
    assert!(applied.drift().is_empty(), "{:?}", applied.drift());
    // An operator's hand shows as drift.
    let swappiness = catalog::resolve("vm.swappiness").unwrap();
    sysfs::write(&swappiness, "42").unwrap();
    let d = applied.drift();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].knob, "vm.swappiness");
    assert_eq!(d[0].found, "42");
    applied.restore().unwrap();
    host.unchanged();
}

#[test]
fn a_write_the_kernel_refuses_undoes_everything_before_it() {
    let host = Host::hold();
    // Memory knobs are written before block knobs; the kernel refuses more
    // requests than the device's queue depth (virtio: 256), a value inside
    // the catalogue's range that only the write can find out.
    let d = dev();
    let set = vec![
        Assignment {
            knob: "vm.swappiness".into(),
            value: other("vm.swappiness", &read("vm.swappiness")),
            workload: None,
        },
        Assignment {
            knob: format!("block.{d}.nr_requests"),
            value: "4096".into(),
            workload: None,
        },
    ];
    let plan = change::admit(&set, &no_workload).unwrap();
    let mut persist = |_: &Applied| Ok(());
    let e = Applied::apply(plan, &mut persist).unwrap_err().to_string();
    assert!(e.contains("nr_requests") && e.contains("restored"), "{e}");
    host.unchanged();
}

/// A process with a unique command line, killed on drop.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sleeper(secs: &str) -> Proc {
    Proc(Command::new("sleep").arg(secs).spawn().unwrap())
}

fn stat_nice(pid: u32) -> i64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    s[s.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(16)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn per_workload_knobs_follow_the_workload_and_go_back() {
    let _host = Host::hold();
    let argv = vec!["sleep".to_string(), "297.25".to_string()];
    let first = sleeper("297.25");
    let bystander = sleeper("296.5");
    let bind = |w: &str| {
        Ok(WorkloadBinding {
            name: w.into(),
            argv: argv.clone(),
        })
    };
    let set: Vec<Assignment> = [
        ("workload.nice", "7"),
        ("workload.policy", "batch"),
        ("workload.slice_us", "1500"),
        ("workload.affinity", "0"),
        ("workload.cpu_weight", "50"),
        ("workload.cpu_max", "50000 100000"),
    ]
    .iter()
    .map(|(k, v)| Assignment {
        knob: k.to_string(),
        value: v.to_string(),
        workload: Some("sleepers".into()),
    })
    .collect();
    let plan = change::admit(&set, &bind).unwrap();
    let mut persist = |_: &Applied| Ok(());
    let mut applied = Applied::apply(plan, &mut persist).unwrap();
    let pid = first.0.id() as i32;
    let attr = |pid: i32, a| schedcp::knobs::task::read(pid, a).unwrap();
    use schedcp::knobs::catalog::Attribute;
    assert_eq!(stat_nice(first.0.id()), 7);
    assert_eq!(attr(pid, Attribute::Policy), "batch");
    assert_eq!(attr(pid, Attribute::Slice), "1500");
    assert_eq!(attr(pid, Attribute::Affinity), "0");
    let h = schedcp::knobs::cgroup::hierarchy().unwrap();
    let cg = schedcp::knobs::cgroup::current(&h, pid).unwrap();
    assert_eq!(cg, "/schedcp/sleepers");
    assert_eq!(
        schedcp::knobs::cgroup::read(
            &h,
            "sleepers",
            schedcp::knobs::cgroup::file_for(&h, "cpu.weight", Some("cpu.shares")).unwrap()
        )
        .unwrap(),
        "50"
    );
    // Not the machine: another process keeps its own.
    assert_eq!(stat_nice(bystander.0.id()), 0);
    // A process of the workload started later gets it too, from the sweep...
    // (The daemon sweeps each second; a process that has just exec'd shows
    // its command line only once the kernel has set up its arguments.)
    let later = sleeper("297.25");
    common::wait_for(
        "the sweep to pick up a new process",
        Duration::from_secs(5),
        || {
            applied.sweep(&mut persist).unwrap();
            stat_nice(later.0.id()) == 7
        },
    );
    // ... and one schedcp starts gets it before its first instruction.
    let hook = applied.spawn_hook("sleepers").unwrap().unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "cat /proc/self/stat; cat /proc/self/cgroup"])
        .stdout(std::process::Stdio::piped());
    hook.install(&mut cmd);
    let out = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
    let stat = out.lines().next().unwrap();
    let nice: i64 = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(16)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(nice, 7, "{out}");
    assert!(out.contains("/schedcp/sleepers"), "{out}");
    applied.restore().unwrap();
    for p in [&first, &later] {
        let pid = p.0.id() as i32;
        assert_eq!(stat_nice(p.0.id()), 0);
        assert_eq!(attr(pid, Attribute::Policy), "other");
        assert_ne!(
            schedcp::knobs::cgroup::current(&h, pid).unwrap(),
            "/schedcp/sleepers"
        );
    }
    assert!(
        !schedcp::knobs::cgroup::dir(&h, "sleepers").exists(),
        "the cgroup is removed"
    );
}

fn env() -> common::Env {
    common::Env::new()
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let host = Host::hold();
    let e = env();
    for (args, needle) in [
        (
            vec![
                "knob",
                "trial",
                "vm.swappiness=100000",
                "--workload",
                "batch:short=10",
            ],
            "outside the safe range",
        ),
        (
            vec![
                "knob",
                "trial",
                "vm.swapiness=10",
                "--workload",
                "batch:short=10",
            ],
            "unknown knob 'vm.swapiness'",
        ),
        (
            vec![
                "knob",
                "trial",
                "/proc/sys/vm/swappiness=10",
                "--workload",
                "batch:short=10",
            ],
            "unknown knob",
        ),
        (
            vec![
                "knob",
                "trial",
                "sched.base_slice_ns=3000000",
                "--where",
                "host",
                "--workload",
                "batch:short=10",
            ],
            "unavailable here",
        ),
        (
            vec![
                "knob",
                "trial",
                "thp.enabled=sometimes",
                "--workload",
                "batch:short=10",
            ],
            "not one of",
        ),
        (
            vec![
                "knob",
                "trial",
                "block.../../etc.read_ahead_kb=1",
                "--workload",
                "batch:short=10",
            ],
            "not a block device name",
        ),
        (
            vec![
                "knob",
                "trial",
                "workload.nice=5",
                "--workload",
                "batch:short=10",
            ],
            "no workload profile",
        ),
        (
            vec!["knob", "apply", "vm.swappiness=10", "vm.swappiness=11"],
            "assigned twice",
        ),
        (
            vec!["deploy", "--knob", "vm.swappiness=1000"],
            "outside the safe range",
        ),
        (
            vec!["knob", "read", "sched.base_slice_ns"],
            "unavailable here",
        ),
        (vec!["knob", "show", "no.such"], "unknown knob"),
    ] {
        e.fails(&args, 2, needle);
    }
    host.unchanged();
    // Every refusal of one set is listed, and none of its knobs moved.
    let o = e.run(&[
        "knob",
        "trial",
        "vm.swappiness=3",
        "vm.dirty_ratio=1000",
        "nope=1",
        "--workload",
        "batch:short=10",
    ]);
    let t = common::text(&o);
    assert!(
        t.contains("nothing was changed") && t.contains("vm.dirty_ratio") && t.contains("'nope'"),
        "{t}"
    );
    host.unchanged();
}

fn spin_profile(e: &common::Env, name: &str, loops: u32) {
    let script = format!("i=0; while [ $i -lt {loops} ]; do i=$((i+1)); done");
    let o = e.run(&[
        "observe", "workload", "add", name, "--cmd", "--", "sh", "-c", &script,
    ]);
    assert!(o.status.success(), "{}", common::text(&o));
}

#[test]
fn a_trial_finds_a_real_effect_and_restores_the_host() {
    let host = Host::hold();
    let e = env();
    spin_profile(&e, "spin", 150_000);
    // A quarter of one CPU for a CPU-bound shell loop: several times slower.
    let v = e.json(
        &[
            "knob",
            "trial",
            "workload.cpu_max=25000 100000",
            "--workload",
            "spin",
            "--runs",
            "4",
        ],
        0,
    );
    let ab = &v["ab"];
    assert_eq!(ab["comparison"]["verdict"], "regressed", "{v:#}");
    assert!(ab["improvement_pct"].as_f64().unwrap() < -50.0, "{v:#}");
    assert_eq!(v["restored"], true);
    assert_eq!(ab["setting"]["place"], "host");
    let h = schedcp::knobs::cgroup::hierarchy().unwrap();
    assert!(!schedcp::knobs::cgroup::dir(&h, "spin").exists());
    // A system knob trial runs to a verdict and restores it, whatever it is.
    let v = e.json(
        &[
            "knob",
            "trial",
            "vm.swappiness=30",
            "--workload",
            "spin",
            "--runs",
            "4",
        ],
        0,
    );
    assert!(v["ab"]["comparison"]["verdict"].is_string(), "{v:#}");
    host.unchanged();
}

fn daemon() -> Daemon {
    Daemon::start("\n[deploy]\nwindow_s = 1\nactive_check_s = 0\nhealth_poll_ms = 50\n")
}

fn status(d: &Daemon) -> Value {
    let o = d.cli(&["deploy", "status", "--json"]);
    assert!(o.status.success(), "{}", common::text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn history(d: &Daemon) -> Value {
    let o = d.cli(&["deploy", "history", "--json", "--limit", "50"]);
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn change_sets_under_the_deploy_daemon() {
    let host = Host::hold();
    let d = daemon();
    let swap0 = read("vm.swappiness");
    let vfs0 = read("vm.vfs_cache_pressure");
    let swap1 = other("vm.swappiness", &swap0);
    let vfs1 = other("vm.vfs_cache_pressure", &vfs0);

    // 1. A change set that passes its canary becomes active.
    let t = std::time::Instant::now();
    let o = d.cli(&[
        "knob",
        "apply",
        &format!("vm.swappiness={swap1}"),
        &format!("vm.vfs_cache_pressure={vfs1}"),
        "--canary",
        "2",
        // Other test tiers load this machine meanwhile: the passive KPIs
        // must not decide this case, which is about the mechanism.
        "--kpi",
        "psi_cpu_some_increase_pct=100",
        "--kpi",
        "runq_p99_ratio=1000",
        "--json",
    ]);
    let apply_to_active = t.elapsed();
    assert!(o.status.success(), "{}", common::text(&o));
    let dep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(dep["state"], "active", "{dep:#}");
    assert_eq!(read("vm.swappiness"), swap1);
    eprintln!(
        "KNOB TIMINGS apply→active {:.0} ms (request_to_active {} ms, switch {} ms)",
        apply_to_active.as_secs_f64() * 1e3,
        dep["timings"]["request_to_active_ms"],
        dep["timings"]["switch_ms"]
    );
    // /metrics: an observe token is needed; with one, the managed values.
    let url = format!("{}/metrics", d.url());
    let anon = http_get(&url, None);
    assert_eq!(anon.0, 401, "{}", anon.1);
    let tok = d.token("scrape", "observe");
    let (code, body) = http_get(&url, Some(&tok));
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(&format!(
            "schedcp_knob_managed{{knob=\"vm.swappiness\",id=\"{}\"}} {swap1}",
            dep["id"]
        )),
        "{body}"
    );
    assert!(
        body.contains("schedcp_deployments{state=\"active\"} 1"),
        "{body}"
    );

    // 2. The operator changes a managed knob by hand: schedcp backs off.
    let swap_op = other("vm.swappiness", &swap1);
    sysfs::write(&catalog::resolve("vm.swappiness").unwrap(), &swap_op).unwrap();
    common::wait_for("operator_override", Duration::from_secs(10), || {
        history(&d)["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "operator_override")
    });
    // A rollback restores what schedcp still manages, never the operator's knob.
    let o = d.cli(&["knob", "rollback", "--reason", "test", "--json"]);
    assert!(o.status.success(), "{}", common::text(&o));
    assert_eq!(read("vm.vfs_cache_pressure"), vfs0, "restored");
    assert_eq!(read("vm.swappiness"), swap_op, "the operator's value stays");
    sysfs::write(&catalog::resolve("vm.swappiness").unwrap(), &swap0).unwrap();
    assert!(status(&d)["current"].is_null());

    // 3. A change that makes the workload measurably worse is rolled back,
    // every value restored.
    spin_profile_cfg(&d, "spin", 100_000);
    let t = std::time::Instant::now();
    let o = d.cli(&[
        "knob",
        "apply",
        "workload.cpu_max=20000 100000",
        &format!("vm.swappiness={swap1}"),
        "--workload",
        "spin",
        "--canary",
        "4",
        "--canary-workload",
        "spin",
        "--kpi",
        "workload_regression_pct=50",
        "--kpi",
        "psi_cpu_some_increase_pct=100",
        "--kpi",
        "runq_p99_ratio=1000",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", common::text(&o));
    let dep: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(dep["state"], "rolled_back", "{dep:#}");
    assert!(
        dep["reason"].as_str().unwrap().contains("workload"),
        "{dep:#}"
    );
    eprintln!(
        "KNOB TIMINGS regression: request→rolled back {:.0} ms, breach→restored {} ms",
        t.elapsed().as_secs_f64() * 1e3,
        dep["timings"]["breach_to_rollback_ms"]
    );
    assert_eq!(read("vm.swappiness"), swap0);
    let h = schedcp::knobs::cgroup::hierarchy().unwrap();
    assert!(!schedcp::knobs::cgroup::dir(&h, "spin").exists());
    let m = http_get(&url, Some(&tok)).1;
    assert!(m.contains("schedcp_breaker_trips_total 1"), "{m}");
    host.unchanged();
}

fn spin_profile_cfg(d: &Daemon, name: &str, loops: u32) {
    let script = format!("i=0; while [ $i -lt {loops} ]; do i=$((i+1)); done");
    let o = d.cli(&[
        "observe", "workload", "add", name, "--cmd", "--", "sh", "-c", &script,
    ]);
    assert!(o.status.success(), "{}", common::text(&o));
}

/// `knob apply` of another vm.swappiness under a 120 s canary, running in
/// the background once the knob is written; the value before it.
fn swappiness_in_a_long_canary(d: &Daemon) -> (String, Child) {
    let swap0 = read("vm.swappiness");
    let swap1 = other("vm.swappiness", &swap0);
    let apply = d.cli_spawn(&[
        "knob",
        "apply",
        &format!("vm.swappiness={swap1}"),
        "--canary",
        "120",
    ]);
    common::wait_for(
        "the canary to apply the knob",
        Duration::from_secs(30),
        || read("vm.swappiness") == swap1,
    );
    (swap0, apply)
}

#[test]
fn a_daemon_killed_mid_canary_restores_the_knobs_at_restart() {
    let host = Host::hold();
    let mut d = daemon();
    let (swap0, mut apply) = swappiness_in_a_long_canary(&d);
    d.crash_and_restart();
    let _ = apply.kill();
    let _ = apply.wait();
    assert_eq!(read("vm.swappiness"), swap0, "restored at the restart");
    let h = history(&d);
    let dep = &h["deployments"][0];
    assert_eq!(dep["state"], "rolled_back", "{h:#}");
    assert!(
        dep["reason"]
            .as_str()
            .unwrap()
            .contains("stopped during the canary"),
        "{dep:#}"
    );
    // The deploy call began and never ended: its trace is in the audit
    // log, listed as an open action (issue 17, finding 3).
    let v: Value = serde_json::from_slice(&d.cli(&["audit", "verify", "--json"]).stdout).unwrap();
    assert_eq!(v["ok"], true, "{v:#}");
    assert!(
        v["open_actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().contains(" deploy by token")),
        "{v:#}"
    );
    host.unchanged();
}

/// Issue 17, finding 7: an operator's rollback pre-empts a canary in
/// progress (120 s here) through the one rollback path, at once.
#[test]
fn a_rollback_pre_empts_a_running_canary() {
    let host = Host::hold();
    let d = daemon();
    let (swap0, mut apply) = swappiness_in_a_long_canary(&d);
    let t = std::time::Instant::now();
    let out = d.cli(&["deploy", "rollback", "--reason", "operator stop", "--json"]);
    assert!(out.status.success(), "{}", common::text(&out));
    let took = t.elapsed();
    assert_eq!(read("vm.swappiness"), swap0, "restored by the rollback");
    let rolled: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rolled["state"], "rolled_back", "{rolled:#}");
    assert!(
        rolled["reason"]
            .as_str()
            .unwrap()
            .contains("manual rollback: operator stop"),
        "{rolled:#}"
    );
    // The deploy that was waiting for its canary answers too.
    let st = apply.wait().unwrap();
    assert!(!st.success(), "the pre-empted deploy reports its rollback");
    assert!(took < Duration::from_secs(30), "the rollback took {took:?}");
    host.unchanged();
}

fn http_get(url: &str, token: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.call().expect("GET /metrics");
    let code = resp.status().as_u16();
    (code, resp.body_mut().read_to_string().unwrap())
}
