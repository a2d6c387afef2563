//! Two snapshots of the machine a window apart, and the rates between them.
//! Everything summary and detail report comes from one [`Window`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use procfs::{Current, CurrentSI};

use super::perf_counters::{
    CpuCounters, PERF_COUNT_SW_CONTEXT_SWITCHES, PERF_COUNT_SW_CPU_MIGRATIONS,
};

/// Per-task counters at one instant.
#[derive(Debug, Clone)]
pub struct TaskSample {
    pub tgid: i32,
    pub comm: String,
    pub state: char,
    /// user + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// From /proc/<pid>/task/<tid>/schedstat (ns); absent without CONFIG_SCHEDSTATS.
    pub run_ns: Option<u64>,
    pub run_delay_ns: Option<u64>,
    pub timeslices: Option<u64>,
    /// From /proc/<pid>/task/<tid>/sched (only with [`TaskDetail::Full`]).
    pub migrations: Option<u64>,
    pub voluntary_switches: Option<u64>,
    pub involuntary_switches: Option<u64>,
}

/// How much to read per task: the sched file is the expensive part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskDetail {
    None,
    Basic,
    Full,
}

/// Per-CPU counters from /proc/schedstat (ns of running and of waiting on the
/// run queue, summed over the tasks that ran there, and timeslices).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSchedstat {
    pub run_ns: u64,
    pub wait_ns: u64,
    pub timeslices: u64,
}

pub struct Snapshot {
    at: Instant,
    pub stat: procfs::KernelStats,
    /// Keyed by thread id.
    pub tasks: HashMap<i32, TaskSample>,
    pub schedstat: Vec<CpuSchedstat>,
    pub migrations: Vec<Option<u64>>,
    pub switches: Vec<Option<u64>>,
}

/// Counters kept open across both snapshots.
pub struct Sampler {
    migrations: CpuCounters,
    switches: CpuCounters,
    tasks: TaskDetail,
}

impl Sampler {
    pub fn new(tasks: TaskDetail) -> Sampler {
        let cpus = nr_cpus();
        Sampler {
            migrations: CpuCounters::open(PERF_COUNT_SW_CPU_MIGRATIONS, cpus),
            switches: CpuCounters::open(PERF_COUNT_SW_CONTEXT_SWITCHES, cpus),
            tasks,
        }
    }

    pub fn snapshot(&mut self) -> Result<Snapshot> {
        Ok(Snapshot {
            at: Instant::now(),
            stat: procfs::KernelStats::current().context("reading /proc/stat")?,
            tasks: if self.tasks == TaskDetail::None {
                HashMap::new()
            } else {
                read_tasks(self.tasks == TaskDetail::Full)
            },
            schedstat: read_cpu_schedstat(),
            migrations: self.migrations.read(),
            switches: self.switches.read(),
        })
    }

    /// Sample, wait `window`, sample again.
    pub fn window(&mut self, window: Duration) -> Result<Window> {
        let a = self.snapshot()?;
        std::thread::sleep(window);
        let b = self.snapshot()?;
        Ok(Window { a, b })
    }
}

pub fn nr_cpus() -> usize {
    procfs::KernelStats::current()
        .map(|s| s.cpu_time.len())
        .unwrap_or(1)
        .max(1)
}

pub struct Window {
    pub a: Snapshot,
    pub b: Snapshot,
}

impl Window {
    pub fn seconds(&self) -> f64 {
        (self.b.at - self.a.at).as_secs_f64()
    }

    /// Per-second rate of a per-CPU counter summed over CPUs; `None` when
    /// the counter could not be opened.
    pub fn rate(&self, pick: fn(&Snapshot) -> &Vec<Option<u64>>) -> Option<f64> {
        let (a, b) = (pick(&self.a), pick(&self.b));
        let mut total = None;
        for (x, y) in a.iter().zip(b) {
            if let (Some(x), Some(y)) = (x, y) {
                *total.get_or_insert(0u64) += y.saturating_sub(*x);
            }
        }
        total.map(|t| t as f64 / self.seconds())
    }

    /// Per-CPU rates of a per-CPU counter.
    pub fn per_cpu_rate(&self, pick: fn(&Snapshot) -> &Vec<Option<u64>>) -> Vec<Option<f64>> {
        let secs = self.seconds();
        pick(&self.a)
            .iter()
            .zip(pick(&self.b))
            .map(|(x, y)| Some(y.as_ref()?.saturating_sub(*x.as_ref()?) as f64 / secs))
            .collect()
    }
}

/// CPU time shares over the window, in percent of that CPU (or of all CPUs).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, schemars::JsonSchema)]
pub struct CpuShares {
    pub busy_pct: f64,
    pub user_pct: f64,
    pub system_pct: f64,
    pub iowait_pct: f64,
    pub irq_pct: f64,
    pub steal_pct: f64,
}

pub fn cpu_shares(a: &procfs::CpuTime, b: &procfs::CpuTime) -> CpuShares {
    let d = |x: u64, y: u64| y.saturating_sub(x) as f64;
    let o = |v: Option<u64>| v.unwrap_or(0);
    let user = d(a.user + a.nice, b.user + b.nice);
    let system = d(a.system, b.system);
    let idle = d(a.idle, b.idle);
    let iowait = d(o(a.iowait), o(b.iowait));
    let irq = d(o(a.irq) + o(a.softirq), o(b.irq) + o(b.softirq));
    let steal = d(o(a.steal), o(b.steal));
    let total = user + system + idle + iowait + irq + steal;
    if total <= 0.0 {
        return CpuShares::default();
    }
    let pct = |v: f64| v / total * 100.0;
    CpuShares {
        busy_pct: pct(user + system + irq + steal),
        user_pct: pct(user),
        system_pct: pct(system),
        iowait_pct: pct(iowait),
        irq_pct: pct(irq),
        steal_pct: pct(steal),
    }
}

fn read_tasks(full: bool) -> HashMap<i32, TaskSample> {
    let mut out = HashMap::new();
    let Ok(procs) = procfs::process::all_processes() else {
        return out;
    };
    for p in procs.flatten() {
        let Ok(tasks) = p.tasks() else { continue };
        for t in tasks.flatten() {
            // Tasks can exit between listing and reading: skip them.
            let Ok(st) = t.stat() else { continue };
            let ss = t.schedstat().ok();
            let sched = if full {
                read_sched_file(t.pid, t.tid)
            } else {
                HashMap::new()
            };
            out.insert(
                t.tid,
                TaskSample {
                    tgid: t.pid,
                    comm: st.comm.clone(),
                    state: st.state,
                    cpu_ticks: st.utime + st.stime,
                    run_ns: ss.as_ref().map(|s| s.sum_exec_runtime),
                    run_delay_ns: ss.as_ref().map(|s| s.run_delay),
                    timeslices: ss.as_ref().map(|s| s.pcount),
                    migrations: sched.get("se.nr_migrations").copied(),
                    voluntary_switches: sched.get("nr_voluntary_switches").copied(),
                    involuntary_switches: sched.get("nr_involuntary_switches").copied(),
                },
            );
        }
    }
    out
}

/// Integer fields of /proc/<pid>/task/<tid>/sched (`name : value` lines).
fn read_sched_file(pid: i32, tid: i32) -> HashMap<String, u64> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/sched")) else {
        return HashMap::new();
    };
    parse_sched_file(&text)
}

pub fn parse_sched_file(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// `cpuN f1 .. f9` lines of /proc/schedstat (version 15+): fields 7, 8, 9 are
/// running ns, waiting ns and timeslices.
fn read_cpu_schedstat() -> Vec<CpuSchedstat> {
    let Ok(text) = std::fs::read_to_string("/proc/schedstat") else {
        return Vec::new();
    };
    parse_cpu_schedstat(&text)
}

pub fn parse_cpu_schedstat(text: &str) -> Vec<CpuSchedstat> {
    text.lines()
        .filter(|l| l.starts_with("cpu"))
        .filter_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            Some(CpuSchedstat {
                run_ns: *f.get(6)?,
                wait_ns: *f.get(7)?,
                timeslices: *f.get(8)?,
            })
        })
        .collect()
}

/// Loads and memory are instantaneous; read once.
pub fn load() -> Option<procfs::LoadAverage> {
    procfs::LoadAverage::current().ok()
}

pub fn meminfo() -> Option<procfs::Meminfo> {
    procfs::Meminfo::current().ok()
}

pub fn ticks_per_second() -> f64 {
    procfs::ticks_per_second() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schedstat_cpu_lines() {
        let text = "version 17\ntimestamp 4295\ncpu0 0 0 0 0 0 0 1000 200 30\ndomain0 3 1 2 3\ncpu1 0 0 0 0 0 0 5 6 7\n";
        let v = parse_cpu_schedstat(text);
        assert_eq!(v.len(), 2);
        assert_eq!(
            (v[0].run_ns, v[0].wait_ns, v[0].timeslices),
            (1000, 200, 30)
        );
    }

    #[test]
    fn parses_sched_file() {
        let text = "x (1, #threads: 1)\n---------\nse.nr_migrations   :   42\nnr_voluntary_switches  :  7\nse.load.weight : 1048576\npolicy : 0\nse.avg.util_avg : 3.5\n";
        let m = parse_sched_file(text);
        assert_eq!(m.get("se.nr_migrations"), Some(&42));
        assert_eq!(m.get("nr_voluntary_switches"), Some(&7));
        assert!(!m.contains_key("se.avg.util_avg"));
    }

    #[test]
    fn a_window_measures_this_machine() {
        let mut s = Sampler::new(TaskDetail::Full);
        let w = s.window(Duration::from_millis(200)).unwrap();
        assert!(w.seconds() >= 0.19);
        assert!(!w.b.tasks.is_empty());
        let me = std::process::id() as i32;
        let mine = w.b.tasks.values().find(|t| t.tgid == me).unwrap();
        assert!(
            mine.voluntary_switches.is_some(),
            "sched file fields missing: {mine:?}"
        );
        let shares = cpu_shares(&w.a.stat.total, &w.b.stat.total);
        assert!((0.0..=100.0).contains(&shares.busy_pct));
    }
}
