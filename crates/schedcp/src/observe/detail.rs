//! `observe detail <topic>`: what the summary condenses, one topic at a time.
//! Bounded by `limit` so that even detail stays affordable for an LLM.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;

use super::sample::{cpu_shares, ticks_per_second, CpuShares, Sampler, TaskDetail, Window};

pub const MAX_LIMIT: usize = 500;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    serde::Deserialize,
    clap::ValueEnum,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// Per-CPU time shares, context switches, migrations and run-queue wait.
    Cpus,
    /// Per-thread schedstats: CPU, run delay, timeslices, migrations, switches.
    Tasks,
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    serde::Deserialize,
    clap::ValueEnum,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TaskSort {
    Cpu,
    Wait,
    Migrations,
    Switches,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(tag = "topic", rename_all = "snake_case")]
pub enum Detail {
    Cpus {
        window_s: f64,
        cpus: Vec<CpuDetail>,
    },
    Tasks {
        window_s: f64,
        sort: TaskSort,
        shown: usize,
        total: usize,
        tasks: Vec<TaskDetailRow>,
    },
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CpuDetail {
    pub cpu: usize,
    #[serde(flatten)]
    pub shares: CpuShares,
    pub ctx_switches_per_s: Option<f64>,
    pub migrations_per_s: Option<f64>,
    /// Time tasks spent waiting on this CPU's run queue, ms per second.
    pub rq_wait_ms_per_s: Option<f64>,
    pub timeslices_per_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TaskDetailRow {
    pub tid: i32,
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub cpu_pct: f64,
    /// Runnable-but-waiting time, ms per second (schedstats run_delay).
    pub wait_ms_per_s: Option<f64>,
    /// Mean time on CPU per timeslice, µs.
    pub avg_slice_us: Option<f64>,
    pub migrations_per_s: Option<f64>,
    pub voluntary_switches_per_s: Option<f64>,
    pub involuntary_switches_per_s: Option<f64>,
}

pub fn detail(topic: Topic, window: Duration, limit: usize, sort: TaskSort) -> Result<Detail> {
    if limit == 0 || limit > MAX_LIMIT {
        bail!("limit must be between 1 and {MAX_LIMIT}, got {limit}");
    }
    let mut sampler = Sampler::new(if topic == Topic::Tasks {
        TaskDetail::Full
    } else {
        TaskDetail::None
    });
    let w = sampler.window(window)?;
    Ok(match topic {
        Topic::Cpus => Detail::Cpus {
            window_s: round(w.seconds(), 2),
            cpus: cpus(&w).into_iter().take(limit).collect(),
        },
        Topic::Tasks => {
            let mut all = tasks(&w);
            let total = all.len();
            let key = |t: &TaskDetailRow| match sort {
                TaskSort::Cpu => t.cpu_pct,
                TaskSort::Wait => t.wait_ms_per_s.unwrap_or(0.0),
                TaskSort::Migrations => t.migrations_per_s.unwrap_or(0.0),
                TaskSort::Switches => {
                    t.voluntary_switches_per_s.unwrap_or(0.0)
                        + t.involuntary_switches_per_s.unwrap_or(0.0)
                }
            };
            all.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.tid.cmp(&b.tid)));
            all.truncate(limit);
            Detail::Tasks {
                window_s: round(w.seconds(), 2),
                sort,
                shown: all.len(),
                total,
                tasks: all,
            }
        }
    })
}

fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

fn cpus(w: &Window) -> Vec<CpuDetail> {
    let secs = w.seconds();
    let switches = w.per_cpu_rate(|s| &s.switches);
    let migrations = w.per_cpu_rate(|s| &s.migrations);
    w.a.stat
        .cpu_time
        .iter()
        .zip(&w.b.stat.cpu_time)
        .enumerate()
        .map(|(i, (a, b))| {
            let sched = w.a.schedstat.get(i).zip(w.b.schedstat.get(i));
            let mut shares = cpu_shares(a, b);
            for v in [
                &mut shares.busy_pct,
                &mut shares.user_pct,
                &mut shares.system_pct,
                &mut shares.iowait_pct,
                &mut shares.irq_pct,
                &mut shares.steal_pct,
            ] {
                *v = round(*v, 1);
            }
            CpuDetail {
                cpu: i,
                shares,
                ctx_switches_per_s: switches.get(i).copied().flatten().map(|v| round(v, 1)),
                migrations_per_s: migrations.get(i).copied().flatten().map(|v| round(v, 1)),
                rq_wait_ms_per_s: sched.map(|(x, y)| {
                    round(y.wait_ns.saturating_sub(x.wait_ns) as f64 / 1e6 / secs, 2)
                }),
                timeslices_per_s: sched.map(|(x, y)| {
                    round(y.timeslices.saturating_sub(x.timeslices) as f64 / secs, 1)
                }),
            }
        })
        .collect()
}

fn tasks(w: &Window) -> Vec<TaskDetailRow> {
    let secs = w.seconds();
    let tps = ticks_per_second();
    let per_s =
        |a: Option<u64>, b: Option<u64>| Some(round(b?.saturating_sub(a?) as f64 / secs, 1));
    let index: HashMap<i32, _> = w.a.tasks.iter().map(|(k, v)| (*k, v)).collect();
    w.b.tasks
        .iter()
        .filter_map(|(tid, b)| {
            let a = index.get(tid)?;
            let slices = b.timeslices?.checked_sub(a.timeslices?);
            let ran = b.run_ns?.checked_sub(a.run_ns?);
            Some(TaskDetailRow {
                tid: *tid,
                pid: b.tgid,
                comm: b.comm.clone(),
                state: b.state,
                cpu_pct: round(
                    b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / tps / secs * 100.0,
                    1,
                ),
                wait_ms_per_s: b
                    .run_delay_ns
                    .zip(a.run_delay_ns)
                    .map(|(y, x)| round(y.saturating_sub(x) as f64 / 1e6 / secs, 2)),
                avg_slice_us: match (ran, slices) {
                    (Some(r), Some(n)) if n > 0 => Some(round(r as f64 / n as f64 / 1e3, 1)),
                    _ => None,
                },
                migrations_per_s: per_s(a.migrations, b.migrations),
                voluntary_switches_per_s: per_s(a.voluntary_switches, b.voluntary_switches),
                involuntary_switches_per_s: per_s(a.involuntary_switches, b.involuntary_switches),
            })
        })
        .collect()
}

impl Detail {
    pub fn render(&self) -> String {
        let mut o = String::new();
        match self {
            Detail::Cpus { window_s, cpus } => {
                o.push_str(&format!("per-CPU over {window_s:.2} s\ncpu  busy%  user%  sys%  iowait%  irq%   ctxsw/s  migr/s  rq-wait ms/s  slices/s\n"));
                for c in cpus {
                    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
                    o.push_str(&format!(
                        "{:<4} {:>5.1}  {:>5.1}  {:>4.1}  {:>7.1}  {:>4.1}  {:>8}  {:>6}  {:>12}  {:>8}\n",
                        c.cpu, c.shares.busy_pct, c.shares.user_pct, c.shares.system_pct, c.shares.iowait_pct, c.shares.irq_pct,
                        f(c.ctx_switches_per_s), f(c.migrations_per_s), f(c.rq_wait_ms_per_s), f(c.timeslices_per_s)
                    ));
                }
            }
            Detail::Tasks {
                window_s,
                sort,
                shown,
                total,
                tasks,
            } => {
                o.push_str(&format!(
                    "{shown} of {total} threads by {sort:?} over {window_s:.2} s\n"
                ));
                o.push_str("    tid     pid comm             st   cpu%  wait ms/s  slice µs  migr/s  vol/s  invol/s\n");
                for t in tasks {
                    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
                    o.push_str(&format!(
                        "{:>7} {:>7} {:<16} {}  {:>5.1}  {:>9}  {:>8}  {:>6}  {:>5}  {:>7}\n",
                        t.tid,
                        t.pid,
                        t.comm,
                        t.state,
                        t.cpu_pct,
                        f(t.wait_ms_per_s),
                        f(t.avg_slice_us),
                        f(t.migrations_per_s),
                        f(t.voluntary_switches_per_s),
                        f(t.involuntary_switches_per_s)
                    ));
                }
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_topic_has_one_row_per_cpu() {
        let Detail::Cpus { cpus, .. } =
            detail(Topic::Cpus, Duration::from_millis(200), 64, TaskSort::Cpu).unwrap()
        else {
            panic!()
        };
        assert_eq!(cpus.len(), super::super::sample::nr_cpus().min(64));
        assert!(cpus
            .iter()
            .all(|c| (0.0..=100.0).contains(&c.shares.busy_pct)));
    }

    #[test]
    fn tasks_topic_sees_a_busy_thread() {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let h = std::thread::spawn(move || {
            let mut x = 0u64;
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        });
        let d = detail(Topic::Tasks, Duration::from_millis(400), 5, TaskSort::Cpu).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().unwrap();
        let Detail::Tasks { tasks, total, .. } = d else {
            panic!()
        };
        assert!(total >= tasks.len() && tasks.len() <= 5);
        let me = std::process::id() as i32;
        assert!(
            tasks.iter().any(|t| t.pid == me && t.cpu_pct > 20.0),
            "{tasks:#?}"
        );
    }

    #[test]
    fn limits_are_checked() {
        assert!(detail(Topic::Cpus, Duration::from_millis(1), 0, TaskSort::Cpu).is_err());
        assert!(detail(
            Topic::Cpus,
            Duration::from_millis(1),
            MAX_LIMIT + 1,
            TaskSort::Cpu
        )
        .is_err());
    }
}
