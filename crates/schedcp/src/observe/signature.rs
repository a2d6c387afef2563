//! Workload signature: a compact, comparable description of what a
//! workload does, taken while it runs once.
//!
//! Sources, all cheap (counters the kernel already aggregates; nothing
//! streams per event to userspace):
//! - the workload's own totals from `wait4` ([`Usage`]): CPU time, voluntary
//!   (it blocked) and involuntary (it was preempted) switches, faults, RSS,
//!   block I/O — exactly its process tree, not the machine;
//! - the machine during the run: the runqlat eBPF probe (run-queue latency
//!   histogram, in-kernel), per-CPU perf software counters (switches,
//!   migrations), `/proc/schedstat` run-queue wait, PSI totals;
//! - a 100 ms sampler for the workload's peak task count and the machine's
//!   runnable tasks (`procs_running`).
//!
//! [`Signature::features`] scales everything to about 0..1 so that
//! [`Signature::similarity`] can find the most similar past workloads.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::probes::{self, Filter, ProbeKind, ProbeResult};
use super::sample::{self, Sampler, TaskDetail};
use crate::error::Error;
use crate::host::process::Usage;

/// Bumped when features change meaning: signatures of another version are
/// not compared.
pub const VERSION: u32 = 1;

/// What a workload does, per second of its wall time where it is a rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Signature {
    pub version: u32,
    pub wall_s: f64,
    pub cpus: usize,
    /// The share of the workload's behaviour that is CPU-bound, wakeup-heavy
    /// and I/O-bound (sums to 100).
    pub mix: Mix,
    /// CPUs the workload kept busy on average ((user + system) / wall).
    pub cpu_util: f64,
    /// System time as a share of its CPU time, %.
    pub sys_pct: f64,
    /// The workload's own switches: it blocked or slept (voluntary), it was
    /// preempted (involuntary).
    pub voluntary_switches_per_s: f64,
    pub involuntary_switches_per_s: f64,
    pub minor_faults_per_s: f64,
    pub major_faults_per_s: f64,
    pub max_rss_mib: f64,
    /// Block I/O of the workload (page-cache hits excluded).
    pub read_mib_per_s: f64,
    pub write_mib_per_s: f64,
    /// Most tasks (threads) of the workload seen at once.
    pub peak_tasks: u32,
    /// Machine: runnable tasks on average and at peak (`procs_running`).
    pub runnable_mean: f64,
    pub runnable_peak: u32,
    /// The workload's tasks that were runnable (running or waiting for a
    /// CPU), on average: how much CPU it wanted.
    pub workload_runnable_mean: f64,
    /// Runnable tasks that are not the workload's, on average: other work
    /// competing with it for the CPUs.
    pub others_runnable_mean: f64,
    /// Machine: share of task time spent waiting on a run queue, %.
    pub runq_wait_pct: Option<f64>,
    /// Machine: run-queue latency (runqlat probe), µs.
    pub runq_p50_us: Option<f64>,
    pub runq_p99_us: Option<f64>,
    /// Machine: all switches and migrations, per second.
    pub switches_per_s: Option<f64>,
    pub migrations_per_s: Option<f64>,
    /// Machine: PSI "some" over the run, % of wall time.
    pub psi_cpu_pct: Option<f64>,
    pub psi_mem_pct: Option<f64>,
    pub psi_io_pct: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Mix {
    pub cpu_pct: f64,
    pub wakeup_pct: f64,
    pub io_pct: f64,
}

impl Mix {
    /// The dominant kind: `cpu-bound`, `wakeup-heavy` or `io-bound`.
    pub fn class(&self) -> &'static str {
        if self.cpu_pct >= self.wakeup_pct && self.cpu_pct >= self.io_pct {
            "cpu-bound"
        } else if self.wakeup_pct >= self.io_pct {
            "wakeup-heavy"
        } else {
            "io-bound"
        }
    }
}

/// What [`take`]'s workload run reports back.
pub struct Ran<R> {
    pub output: R,
    /// `None` when the runner could not collect it (the signature then
    /// lacks the workload's own counters and says so through zeros).
    pub usage: Option<Usage>,
}

/// Run the workload once (`run`) and describe it. The probe and the
/// sampler are detached when this returns, on every path.
pub fn take<R>(run: impl FnOnce() -> Result<Ran<R>, Error>) -> Result<(Signature, R), Error> {
    let mut sampler = Sampler::new(TaskDetail::None);
    let before = sampler
        .snapshot()
        .map_err(|e| Error::Setup(format!("reading /proc for the signature: {e}")))?;
    let psi0 = Psi::read();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = Arc::new(Mutex::new(TaskPeaks::default()));
    let watcher = {
        let (stop, tasks) = (stop.clone(), tasks.clone());
        std::thread::Builder::new()
            .name("signature".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let s = sample_tasks();
                    tasks.lock().expect("task peaks").add(s);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .map_err(|e| Error::Internal(e.into()))?
    };
    let probed = probes::observe(ProbeKind::Runqlat, &Filter::default(), 1, |_| run());
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let (result, ran) = probed?;
    let ran = ran?;
    let wall = t0.elapsed().as_secs_f64().max(1e-3);
    let after = sampler
        .snapshot()
        .map_err(|e| Error::Setup(format!("reading /proc for the signature: {e}")))?;
    let psi1 = Psi::read();
    let ProbeResult::Runqlat(rq) = result else {
        return Err(Error::Internal(anyhow::anyhow!(
            "runqlat returned another result"
        )));
    };
    let window = sample::Window {
        a: before,
        b: after,
    };
    let (run_ns, wait_ns) =
        window
            .a
            .schedstat
            .iter()
            .zip(&window.b.schedstat)
            .fold((0u64, 0u64), |(r, w), (x, y)| {
                (
                    r + y.run_ns.saturating_sub(x.run_ns),
                    w + y.wait_ns.saturating_sub(x.wait_ns),
                )
            });
    let peaks = tasks.lock().expect("task peaks").clone();
    let u = ran.usage.unwrap_or_default();
    let per_s = |v: u64| v as f64 / wall;
    let cpu_s = u.user_s + u.sys_s;
    let psi = |f: fn(&Psi) -> Option<u64>| -> Option<f64> {
        let (a, b) = (f(psi0.as_ref()?)?, f(psi1.as_ref()?)?);
        Some((b.saturating_sub(a) as f64 / 1e4 / wall).min(100.0))
    };
    let mut sig = Signature {
        version: VERSION,
        wall_s: wall,
        cpus: sample::nr_cpus(),
        mix: Mix {
            cpu_pct: 0.0,
            wakeup_pct: 0.0,
            io_pct: 0.0,
        },
        cpu_util: cpu_s / wall,
        sys_pct: if cpu_s > 0.0 {
            100.0 * u.sys_s / cpu_s
        } else {
            0.0
        },
        voluntary_switches_per_s: per_s(u.voluntary_switches),
        involuntary_switches_per_s: per_s(u.involuntary_switches),
        minor_faults_per_s: per_s(u.minor_faults),
        major_faults_per_s: per_s(u.major_faults),
        max_rss_mib: u.max_rss_kib as f64 / 1024.0,
        read_mib_per_s: per_s(u.blocks_in) * 512.0 / 1048576.0,
        write_mib_per_s: per_s(u.blocks_out) * 512.0 / 1048576.0,
        peak_tasks: peaks.workload_tasks,
        runnable_mean: if peaks.samples > 0 {
            peaks.runnable_sum as f64 / peaks.samples as f64
        } else {
            0.0
        },
        runnable_peak: peaks.runnable_peak,
        workload_runnable_mean: if peaks.samples > 0 {
            peaks.workload_running_sum as f64 / peaks.samples as f64
        } else {
            0.0
        },
        others_runnable_mean: if peaks.samples > 0 {
            peaks.others_sum as f64 / peaks.samples as f64
        } else {
            0.0
        },
        runq_wait_pct: (run_ns + wait_ns > 0)
            .then(|| 100.0 * wait_ns as f64 / (run_ns + wait_ns) as f64),
        runq_p50_us: rq.p50_us,
        runq_p99_us: rq.p99_us,
        switches_per_s: window.rate(|s| &s.switches),
        migrations_per_s: window.rate(|s| &s.migrations),
        psi_cpu_pct: psi(|p| p.cpu),
        psi_mem_pct: psi(|p| p.mem),
        psi_io_pct: psi(|p| p.io),
    };
    sig.mix = mix(&sig);
    Ok((sig, ran.output))
}

/// The mix, from three scores in 0..1 (then normalised):
/// - CPU: how much CPU it used or wanted (the larger of CPUs busy and its
///   runnable tasks, so that CPU it waited for counts too) of what it
///   could use (`min(peak_tasks, cpus)`);
/// - wakeup: voluntary switches per CPU-second of its work on a log scale
///   (10 000 / s saturates): sleeping and waking is what it does;
/// - I/O: the largest of I/O pressure, block throughput (50 MiB/s
///   saturates) and major faults (500 / s saturates).
pub fn mix(s: &Signature) -> Mix {
    let usable = (s.peak_tasks.max(1) as f64).min(s.cpus.max(1) as f64);
    let c = (s.cpu_util.max(s.workload_runnable_mean) / usable).clamp(0.0, 1.0);
    let cpu_s = (s.cpu_util * s.wall_s).max(0.01);
    let vps = s.voluntary_switches_per_s * s.wall_s / cpu_s;
    let w = ((1.0 + vps).log10() / 4.0).clamp(0.0, 1.0);
    let i = (s.psi_io_pct.unwrap_or(0.0) / 100.0)
        .max((s.read_mib_per_s + s.write_mib_per_s) / 50.0)
        .max(s.major_faults_per_s / 500.0)
        .clamp(0.0, 1.0);
    let sum = c + w + i;
    if sum <= 0.0 {
        return Mix {
            cpu_pct: 100.0 / 3.0,
            wakeup_pct: 100.0 / 3.0,
            io_pct: 100.0 / 3.0,
        };
    }
    Mix {
        cpu_pct: 100.0 * c / sum,
        wakeup_pct: 100.0 * w / sum,
        io_pct: 100.0 * i / sum,
    }
}

/// `log10(1 + x) / decades`, clamped to 0..1: rates span decades.
fn lg(x: f64, decades: f64) -> f64 {
    ((1.0 + x.max(0.0)).log10() / decades).clamp(0.0, 1.0)
}

impl Signature {
    /// The comparable part, each feature scaled to 0..1.
    pub fn features(&self) -> Vec<f64> {
        let pct = |v: Option<f64>| (v.unwrap_or(0.0) / 100.0).clamp(0.0, 1.0);
        vec![
            self.mix.cpu_pct / 100.0,
            self.mix.wakeup_pct / 100.0,
            self.mix.io_pct / 100.0,
            (self.cpu_util / self.cpus.max(1) as f64).clamp(0.0, 1.0),
            lg(self.voluntary_switches_per_s, 5.0),
            lg(self.involuntary_switches_per_s, 5.0),
            lg(self.migrations_per_s.unwrap_or(0.0), 5.0),
            pct(self.runq_wait_pct),
            lg(self.runq_p99_us.unwrap_or(0.0), 6.0),
            pct(self.psi_cpu_pct),
            pct(self.psi_mem_pct),
            pct(self.psi_io_pct),
            ((1.0 + self.peak_tasks as f64).log2() / 10.0).clamp(0.0, 1.0),
            ((1.0 + self.max_rss_mib).log2() / 16.0).clamp(0.0, 1.0),
            lg(self.minor_faults_per_s, 6.0),
            lg(self.read_mib_per_s + self.write_mib_per_s, 3.0),
        ]
    }

    /// 1 for identical features, 0 for opposite ends of every one
    /// (1 − RMS distance). Other versions compare as 0.
    pub fn similarity(&self, other: &Signature) -> f64 {
        if self.version != other.version {
            return 0.0;
        }
        let (a, b) = (self.features(), other.features());
        let d2: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        1.0 - (d2 / a.len() as f64).sqrt()
    }

    /// One line a person reads.
    pub fn describe(&self) -> String {
        let opt = |v: Option<f64>, unit: &str| {
            v.map(|x| format!("{x:.0}{unit}"))
                .unwrap_or_else(|| "n/a".into())
        };
        format!(
            "{} (cpu {:.0}% · wakeup {:.0}% · io {:.0}%): {:.2} CPUs busy of {}, {} tasks at peak, {:.0} sleeps/s, {:.0} preemptions/s, run-queue wait {} (p99 {}), PSI cpu {}",
            self.mix.class(),
            self.mix.cpu_pct,
            self.mix.wakeup_pct,
            self.mix.io_pct,
            self.cpu_util,
            self.cpus,
            self.peak_tasks,
            self.voluntary_switches_per_s,
            self.involuntary_switches_per_s,
            opt(self.runq_wait_pct, "%"),
            opt(self.runq_p99_us, " µs"),
            opt(self.psi_cpu_pct, "%"),
        )
    }
}

#[derive(Debug, Clone, Default)]
struct TaskPeaks {
    workload_tasks: u32,
    workload_running_sum: u64,
    others_sum: u64,
    runnable_sum: u64,
    runnable_peak: u32,
    samples: u64,
}

impl TaskPeaks {
    fn add(&mut self, (workload, workload_running, runnable): (u32, u32, Option<u32>)) {
        self.workload_tasks = self.workload_tasks.max(workload);
        if let Some(r) = runnable {
            // The sampler itself is running while it reads.
            self.others_sum += r.saturating_sub(workload_running + 1) as u64;
            self.workload_running_sum += workload_running as u64;
            self.runnable_sum += r as u64;
            self.runnable_peak = self.runnable_peak.max(r);
            self.samples += 1;
        }
    }
}

/// Process groups this process started that are not the workload (a
/// demo's noisy neighbour): the task count leaves them out.
static NOT_WORKLOAD: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Leave the process group `pgid` out of workload task counts until
/// [`include_group`].
pub fn exclude_group(pgid: i32) {
    NOT_WORKLOAD.lock().expect("excluded groups").push(pgid);
}

pub fn include_group(pgid: i32) {
    NOT_WORKLOAD
        .lock()
        .expect("excluded groups")
        .retain(|g| *g != pgid);
}

/// Tasks in the process groups our children lead (the workload runs as
/// the leader of its own group), how many of them are runnable, and the
/// machine's runnable tasks.
fn sample_tasks() -> (u32, u32, Option<u32>) {
    let me = std::process::id() as i32;
    let excluded = NOT_WORKLOAD.lock().expect("excluded groups").clone();
    let mut groups = HashSet::new();
    let mut rows = Vec::new();
    if let Ok(all) = procfs::process::all_processes() {
        for p in all.flatten() {
            if let Ok(st) = p.stat() {
                if st.ppid == me && st.pgrp == st.pid && !excluded.contains(&st.pgrp) {
                    groups.insert(st.pgrp);
                }
                rows.push((p, st.pgrp, st.num_threads.max(0) as u32));
            }
        }
    }
    let mut workload = 0;
    let mut running = 0;
    for (p, _, n) in rows.iter().filter(|(_, g, _)| groups.contains(g)) {
        workload += n;
        if let Ok(tasks) = p.tasks() {
            running += tasks
                .flatten()
                .filter(|t| t.stat().is_ok_and(|s| s.state == 'R'))
                .count() as u32;
        }
    }
    let runnable = std::fs::read_to_string("/proc/stat").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("procs_running "))
            .and_then(|v| v.trim().parse().ok())
    });
    (workload, running, runnable)
}

/// PSI "some" totals (µs since boot) of cpu, memory and io.
struct Psi {
    cpu: Option<u64>,
    mem: Option<u64>,
    io: Option<u64>,
}

impl Psi {
    fn read() -> Option<Psi> {
        let one = |f: &str| -> Option<u64> {
            let text = std::fs::read_to_string(format!("/proc/pressure/{f}")).ok()?;
            let line = text.lines().find(|l| l.starts_with("some "))?;
            line.split_whitespace()
                .find_map(|f| f.strip_prefix("total="))?
                .parse()
                .ok()
        };
        let p = Psi {
            cpu: one("cpu"),
            mem: one("memory"),
            io: one("io"),
        };
        (p.cpu.is_some() || p.mem.is_some() || p.io.is_some()).then_some(p)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A signature with the given shape, for rules' tests.
    pub(crate) fn shaped(
        cpu_util: f64,
        tasks: u32,
        vol_per_s: f64,
        invol_per_s: f64,
        runq_wait_pct: f64,
    ) -> Signature {
        let mut s = Signature {
            version: VERSION,
            wall_s: 10.0,
            cpus: 2,
            mix: Mix {
                cpu_pct: 0.0,
                wakeup_pct: 0.0,
                io_pct: 0.0,
            },
            cpu_util,
            sys_pct: 10.0,
            voluntary_switches_per_s: vol_per_s,
            involuntary_switches_per_s: invol_per_s,
            minor_faults_per_s: 100.0,
            major_faults_per_s: 0.0,
            max_rss_mib: 20.0,
            read_mib_per_s: 0.0,
            write_mib_per_s: 0.0,
            peak_tasks: tasks,
            runnable_mean: cpu_util,
            runnable_peak: tasks,
            workload_runnable_mean: cpu_util,
            others_runnable_mean: 0.0,
            runq_wait_pct: Some(runq_wait_pct),
            runq_p50_us: Some(5.0),
            runq_p99_us: Some(100.0),
            switches_per_s: Some(vol_per_s + invol_per_s),
            migrations_per_s: Some(10.0),
            psi_cpu_pct: Some(runq_wait_pct),
            psi_mem_pct: Some(0.0),
            psi_io_pct: Some(0.0),
        };
        s.mix = mix(&s);
        s
    }

    #[test]
    fn a_spinning_thread_is_cpu_bound_and_a_ping_pong_is_wakeup_heavy() {
        let spin = shaped(1.0, 1, 2.0, 50.0, 1.0);
        assert_eq!(spin.mix.class(), "cpu-bound", "{:?}", spin.mix);
        let pp = shaped(0.3, 2, 40_000.0, 100.0, 5.0);
        assert_eq!(pp.mix.class(), "wakeup-heavy", "{:?}", pp.mix);
        let sum = pp.mix.cpu_pct + pp.mix.wakeup_pct + pp.mix.io_pct;
        assert!((sum - 100.0).abs() < 1e-9);
    }

    #[test]
    fn io_pressure_makes_a_workload_io_bound() {
        let mut s = shaped(0.1, 1, 300.0, 1.0, 0.0);
        s.read_mib_per_s = 80.0;
        s.psi_io_pct = Some(60.0);
        s.mix = mix(&s);
        assert_eq!(s.mix.class(), "io-bound", "{:?}", s.mix);
    }

    #[test]
    fn similarity_ranks_like_shapes_closer() {
        let a = shaped(1.9, 2, 5.0, 100.0, 2.0);
        let b = shaped(1.8, 2, 8.0, 120.0, 3.0);
        let c = shaped(0.3, 8, 30_000.0, 500.0, 40.0);
        assert!((a.similarity(&a) - 1.0).abs() < 1e-12);
        assert!(a.similarity(&b) > a.similarity(&c));
        assert!(a.similarity(&c) >= 0.0);
        let mut other = b.clone();
        other.version = VERSION + 1;
        assert_eq!(a.similarity(&other), 0.0);
    }

    /// A real run: a shell loop that forks and sleeps, on this machine.
    #[test]
    fn take_describes_a_real_run() {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "for i in 1 2 3 4 5; do sleep 0.02; done"]);
        let r = take(|| {
            let mut g = crate::host::process::Group::spawn(&mut cmd, false)
                .map_err(|e| Error::Internal(e.into()))?;
            let status = g
                .wait_until(Instant::now() + Duration::from_secs(30), Duration::ZERO)
                .map_err(Error::Internal)?;
            Ok(Ran {
                output: status.map(|s| s.success()),
                usage: g.usage(),
            })
        });
        // Needs root and BPF, like every probe test (CI runs as root).
        let (sig, out) = r.unwrap();
        assert_eq!(out, Some(true));
        assert!(sig.wall_s >= 0.1, "{sig:?}");
        assert!(sig.voluntary_switches_per_s > 0.0, "{sig:?}");
        assert!(sig.max_rss_mib > 0.0, "{sig:?}");
        assert!(!sig.describe().is_empty());
    }
}
