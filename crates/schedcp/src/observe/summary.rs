//! `observe summary`: the whole machine in one small, token-budgeted report.
//! Units are in the key names (`_pct`, `_per_s`, `_mib`, `_ms`); rates and
//! shares cover `window_s`, load is the kernel's 1/5/15-minute averages, PSI
//! is the kernel's 10-second average.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;

use super::sample::{
    cpu_shares, load, meminfo, nr_cpus, ticks_per_second, Sampler, TaskDetail, Window,
};
use super::scheduler::{self, SchedulerState};
use super::tokens;

/// Smallest and largest budgets accepted.
pub const MIN_BUDGET: usize = 200;
pub const MAX_BUDGET: usize = 8000;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Summary {
    pub window_s: f64,
    pub kernel: String,
    pub cpus: usize,
    pub scheduler: SchedulerState,
    pub cpu: CpuSummary,
    pub load: LoadSummary,
    pub rates: Rates,
    pub memory: Option<MemorySummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<Psi>,
    pub top_tasks: Vec<TopTask>,
    /// What was left out to fit the token budget.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub omitted: Vec<String>,
    /// What this kernel or these privileges cannot provide.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
    /// cl100k tokens of this report as compact JSON.
    pub tokens: usize,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CpuSummary {
    pub busy_pct: f64,
    pub user_pct: f64,
    pub system_pct: f64,
    pub iowait_pct: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_cpu: Option<PerCpuSpread>,
}

/// Per-core busy share, summarised: the spread says whether load is balanced.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PerCpuSpread {
    pub min_busy_pct: f64,
    pub max_busy_pct: f64,
    pub busiest_cpu: usize,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct LoadSummary {
    pub avg1: f64,
    pub avg5: f64,
    pub avg15: f64,
    /// Runnable tasks right now (running + queued), from /proc/stat.
    pub runnable: u32,
    pub blocked_io: u32,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Rates {
    pub ctx_switches_per_s: f64,
    /// From per-CPU perf software counters; null without CAP_PERFMON.
    pub migrations_per_s: Option<f64>,
    /// Average number of tasks waiting on run queues (Little's law over
    /// /proc/schedstat wait time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rq_waiting_avg: Option<f64>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct MemorySummary {
    pub total_mib: u64,
    pub available_mib: u64,
    pub used_pct: f64,
    pub swap_used_mib: u64,
}

/// Pressure stall information, % of time stalled (avg10).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Psi {
    pub cpu_some_pct: f64,
    pub memory_some_pct: f64,
    pub memory_full_pct: f64,
    pub io_some_pct: f64,
    pub io_full_pct: f64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TopTask {
    pub pid: i32,
    pub comm: String,
    /// Share of one CPU over the window (all threads of the process).
    pub cpu_pct: f64,
    /// Time its threads spent runnable but waiting for a CPU, ms per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms_per_s: Option<f64>,
}

fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn r2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Measure the machine over `window` and fit the result into `budget` tokens.
pub fn summary(window: Duration, budget: usize) -> Result<Summary> {
    if !(MIN_BUDGET..=MAX_BUDGET).contains(&budget) {
        bail!("token budget must be between {MIN_BUDGET} and {MAX_BUDGET}, got {budget}");
    }
    let mut sampler = Sampler::new(TaskDetail::Basic);
    let w = sampler.window(window)?;
    let mut s = build(&w, 5);
    note_gaps(&mut s);
    fit(&mut s, budget)?;
    Ok(s)
}

fn build(w: &Window, top: usize) -> Summary {
    let total = cpu_shares(&w.a.stat.total, &w.b.stat.total);
    let per: Vec<f64> =
        w.a.stat
            .cpu_time
            .iter()
            .zip(&w.b.stat.cpu_time)
            .map(|(a, b)| cpu_shares(a, b).busy_pct)
            .collect();
    let per_cpu = per
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, &max)| PerCpuSpread {
            min_busy_pct: r1(per.iter().copied().fold(f64::INFINITY, f64::min)),
            max_busy_pct: r1(max),
            busiest_cpu: i,
        });
    let secs = w.seconds();
    let wait_ns: Option<u64> = (!w.b.schedstat.is_empty()).then(|| {
        w.a.schedstat
            .iter()
            .zip(&w.b.schedstat)
            .map(|(a, b)| b.wait_ns.saturating_sub(a.wait_ns))
            .sum()
    });
    let l = load();
    Summary {
        window_s: r1(secs * 10.0) / 10.0,
        kernel: crate::host::kernel_release(),
        cpus: nr_cpus(),
        scheduler: scheduler::current(),
        cpu: CpuSummary {
            busy_pct: r1(total.busy_pct),
            user_pct: r1(total.user_pct),
            system_pct: r1(total.system_pct),
            iowait_pct: r1(total.iowait_pct),
            per_cpu,
        },
        load: LoadSummary {
            avg1: l.as_ref().map_or(0.0, |l| r2(l.one as f64)),
            avg5: l.as_ref().map_or(0.0, |l| r2(l.five as f64)),
            avg15: l.as_ref().map_or(0.0, |l| r2(l.fifteen as f64)),
            runnable: w.b.stat.procs_running.unwrap_or(0),
            blocked_io: w.b.stat.procs_blocked.unwrap_or(0),
        },
        rates: Rates {
            ctx_switches_per_s: r1(w.b.stat.ctxt.saturating_sub(w.a.stat.ctxt) as f64 / secs),
            migrations_per_s: w.rate(|s| &s.migrations).map(r1),
            rq_waiting_avg: wait_ns.map(|ns| (ns as f64 / 1e9 / secs * 100.0).round() / 100.0),
        },
        memory: meminfo().map(|m| {
            let avail = m.mem_available.unwrap_or(m.mem_free);
            MemorySummary {
                total_mib: m.mem_total >> 20,
                available_mib: avail >> 20,
                used_pct: r1(100.0 * (1.0 - avail as f64 / m.mem_total.max(1) as f64)),
                swap_used_mib: m.swap_total.saturating_sub(m.swap_free) >> 20,
            }
        }),
        psi: psi(),
        top_tasks: top_tasks(w, top),
        omitted: Vec::new(),
        unavailable: Vec::new(),
        tokens: 0,
    }
}

/// Say what could not be measured, rather than leaving a silent gap.
fn note_gaps(s: &mut Summary) {
    if s.rates.rq_waiting_avg.is_none() {
        s.unavailable
            .push("rq_waiting_avg (no CONFIG_SCHEDSTATS)".into());
    }
    if s.rates.migrations_per_s.is_none() {
        s.unavailable
            .push("migrations_per_s (needs CAP_PERFMON)".into());
    }
    if s.psi.is_none() {
        s.unavailable.push("psi (no /proc/pressure)".into());
    }
}

fn psi() -> Option<Psi> {
    use procfs::Current;
    let cpu = procfs::CpuPressure::current().ok()?;
    let mem = procfs::MemoryPressure::current().ok()?;
    let io = procfs::IoPressure::current().ok()?;
    Some(Psi {
        cpu_some_pct: r1(cpu.some.avg10 as f64),
        memory_some_pct: r1(mem.some.avg10 as f64),
        memory_full_pct: r1(mem.full.avg10 as f64),
        io_some_pct: r1(io.some.avg10 as f64),
        io_full_pct: r1(io.full.avg10 as f64),
    })
}

/// Processes by CPU use over the window (threads folded into their process).
pub fn top_tasks(w: &Window, n: usize) -> Vec<TopTask> {
    let tps = ticks_per_second();
    let secs = w.seconds();
    let mut by_proc: HashMap<i32, (String, u64, Option<u64>)> = HashMap::new();
    for (tid, b) in &w.b.tasks {
        let Some(a) = w.a.tasks.get(tid) else {
            continue;
        };
        let e = by_proc
            .entry(b.tgid)
            .or_insert_with(|| (String::new(), 0, None));
        if *tid == b.tgid || e.0.is_empty() {
            e.0 = b.comm.clone();
        }
        e.1 += b.cpu_ticks.saturating_sub(a.cpu_ticks);
        if let (Some(x), Some(y)) = (a.run_delay_ns, b.run_delay_ns) {
            *e.2.get_or_insert(0) += y.saturating_sub(x);
        }
    }
    let mut v: Vec<TopTask> = by_proc
        .into_iter()
        .filter(|(_, (_, ticks, _))| *ticks > 0)
        .map(|(pid, (comm, ticks, delay))| TopTask {
            pid,
            comm,
            cpu_pct: r1(ticks as f64 / tps / secs * 100.0),
            wait_ms_per_s: delay.map(|d| r1(d as f64 / 1e6 / secs)),
        })
        .collect();
    v.sort_by(|a, b| b.cpu_pct.total_cmp(&a.cpu_pct).then(a.pid.cmp(&b.pid)));
    v.truncate(n);
    v
}

fn measure(s: &mut Summary) -> usize {
    // The count includes the "tokens" field itself; iterate until stable.
    for _ in 0..3 {
        let n = tokens::count(&serde_json::to_string(s).unwrap_or_default());
        if n == s.tokens {
            break;
        }
        s.tokens = n;
    }
    s.tokens
}

/// Drop the least essential parts until the report fits `budget`.
fn fit(s: &mut Summary, budget: usize) -> Result<()> {
    type Shrink = fn(&mut Summary) -> Option<&'static str>;
    let steps: [Shrink; 7] = [
        |s| {
            (s.top_tasks.len() > 3)
                .then(|| s.top_tasks.truncate(3))
                .map(|_| "top_tasks beyond 3")
        },
        |s| {
            s.top_tasks
                .iter_mut()
                .any(|t| t.wait_ms_per_s.take().is_some())
                .then_some("top_tasks.wait_ms_per_s")
        },
        |s| s.psi.take().map(|_| "psi"),
        |s| s.cpu.per_cpu.take().map(|_| "cpu.per_cpu"),
        |s| {
            (s.top_tasks.len() > 1)
                .then(|| s.top_tasks.truncate(1))
                .map(|_| "top_tasks beyond 1")
        },
        |s| {
            s.rates
                .rq_waiting_avg
                .take()
                .map(|_| "rates.rq_waiting_avg")
        },
        |s| {
            (!s.top_tasks.is_empty())
                .then(|| s.top_tasks.clear())
                .map(|_| "top_tasks")
        },
    ];
    let mut i = 0;
    while measure(s) > budget {
        let Some(step) = steps.get(i) else {
            bail!(
                "the smallest summary is {} tokens, over the budget of {budget}; raise --budget",
                s.tokens
            );
        };
        if let Some(what) = step(s) {
            s.omitted.push(what.to_string());
        }
        i += 1;
    }
    Ok(())
}

impl Summary {
    pub fn render(&self) -> String {
        let mut o = format!(
            "{} CPUs, kernel {}, scheduler {} — window {:.1} s\n",
            self.cpus, self.kernel, self.scheduler.active, self.window_s
        );
        o.push_str(&format!(
            "cpu   busy {:.1}% (user {:.1}, sys {:.1}, iowait {:.1})",
            self.cpu.busy_pct, self.cpu.user_pct, self.cpu.system_pct, self.cpu.iowait_pct
        ));
        if let Some(p) = &self.cpu.per_cpu {
            o.push_str(&format!(
                "; per-CPU {:.1}..{:.1}% (busiest cpu{})",
                p.min_busy_pct, p.max_busy_pct, p.busiest_cpu
            ));
        }
        o.push_str(&format!(
            "\nload  {:.2} {:.2} {:.2}; runnable {}, blocked {}\nrates {:.0} ctx switches/s, {} migrations/s",
            self.load.avg1,
            self.load.avg5,
            self.load.avg15,
            self.load.runnable,
            self.load.blocked_io,
            self.rates.ctx_switches_per_s,
            self.rates.migrations_per_s.map_or("n/a".into(), |m| format!("{m:.0}"))
        ));
        if let Some(q) = self.rates.rq_waiting_avg {
            o.push_str(&format!(", {q:.2} tasks waiting on run queues (avg)"));
        }
        if let Some(m) = &self.memory {
            o.push_str(&format!(
                "\nmem   {} MiB available of {} ({:.1}% used), swap used {} MiB",
                m.available_mib, m.total_mib, m.used_pct, m.swap_used_mib
            ));
        }
        if let Some(p) = &self.psi {
            o.push_str(&format!(
                "\npsi   cpu {:.1}%, memory {:.1}/{:.1}%, io {:.1}/{:.1}% (some/full, avg10)",
                p.cpu_some_pct, p.memory_some_pct, p.memory_full_pct, p.io_some_pct, p.io_full_pct
            ));
        }
        for t in &self.top_tasks {
            o.push_str(&format!(
                "\ntop   {:>7} {:<16} {:>6.1}% cpu",
                t.pid, t.comm, t.cpu_pct
            ));
            if let Some(wt) = t.wait_ms_per_s {
                o.push_str(&format!(", waits {wt:.1} ms/s"));
            }
        }
        o.push_str(&format!("\n({} tokens as JSON", self.tokens));
        if !self.omitted.is_empty() {
            o.push_str(&format!("; omitted to fit: {}", self.omitted.join(", ")));
        }
        o.push_str(")\n");
        for u in &self.unavailable {
            o.push_str(&format!("n/a   {u}\n"));
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_default_budget_and_reports_units() {
        let s = summary(Duration::from_millis(300), 400).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(s.tokens <= 400, "{} tokens: {json}", s.tokens);
        assert_eq!(tokens::count(&json), s.tokens);
        assert!(s.cpus >= 1 && s.window_s > 0.0);
        assert!(json.contains("busy_pct") && json.contains("ctx_switches_per_s"));
    }

    #[test]
    fn shrinks_to_tight_budgets_and_refuses_impossible_ones() {
        // One sample, then the fitting on copies of it: a second live sample
        // could be smaller and need no shrinking at all.
        let full = summary(Duration::from_millis(100), MAX_BUDGET).unwrap();
        assert!(full.omitted.is_empty());
        let tight = full.tokens - 5;
        let mut s = full.clone();
        fit(&mut s, tight).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.tokens <= tight, "{} > {tight}", s.tokens);
        assert!(!s.omitted.is_empty());
        let mut tiny = full.clone();
        assert!(fit(&mut tiny, 5).is_err());
        assert!(summary(Duration::from_millis(10), 5).is_err());
    }
}
