//! `fairness`: CPU hogs that stay runnable for a fixed time — `hogs` at
//! nice 0 and `niced` at nice 5 — and how much CPU each one got. A fair
//! scheduler gives the equal-weight hogs equal shares; one that starves a
//! class of tasks leaves some hog (often the niced ones) with almost
//! nothing. The verifier judges `min_share_pct` and `niced_min_share_pct`.
//!
//! CPU time comes from each thread's own CPU clock, so it counts what the
//! scheduler gave the thread, whatever else ran.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use schedcp_proto::workload::{Better, Metric, WorkloadSpec};
use serde::Serialize;
use serde_json::json;

use super::spin::spin;
use super::sync::{join_all, spawn, Gate, OnExit};
use super::{count, ms, Report};

/// Nice value of the lower-weight class (weight ≈ 335 vs 1024 at nice 0).
const NICE: i32 = 5;

pub struct Params {
    hogs: usize,
    niced: usize,
    duration: Duration,
}

impl Params {
    pub fn from_spec(spec: &WorkloadSpec) -> Self {
        Params {
            hogs: count(spec, "hogs"),
            niced: count(spec, "niced"),
            duration: Duration::from_millis(spec.int("duration_ms")),
        }
    }
}

#[derive(Debug, Serialize)]
struct Hog {
    nice: i32,
    cpu_ms: f64,
}

fn thread_cpu_time() -> Result<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Err(std::io::Error::last_os_error()).context("reading the thread CPU clock");
    }
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

fn set_own_nice(nice: i32) -> Result<()> {
    // SAFETY: gettid has no preconditions; setpriority on our own tid only.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setting nice");
    }
    Ok(())
}

fn hog(gate: &Gate, nice: i32, until: &std::sync::OnceLock<Instant>) -> Result<Hog> {
    set_own_nice(nice)?;
    if !gate.wait()? {
        bail!("aborted before the start");
    }
    let start_cpu = thread_cpu_time()?;
    let end = *until.get().context("release time unset")?;
    while Instant::now() < end {
        // ~50 µs of work between clock checks.
        spin(20_000);
    }
    Ok(Hog {
        nice,
        cpu_ms: ms(thread_cpu_time()? - start_cpu),
    })
}

pub(super) fn run(params: &Params) -> Result<Report> {
    let gate = Gate::new();
    let until = std::sync::OnceLock::new();
    let nices: Vec<i32> = std::iter::repeat_n(0, params.hogs)
        .chain(std::iter::repeat_n(NICE, params.niced))
        .collect();
    let hogs: Vec<Hog> = thread::scope(|s| {
        let _abort = OnExit::new(|| gate.abort());
        let (gate, until) = (&gate, &until);
        let handles = nices
            .iter()
            .enumerate()
            .map(|(i, &nice)| spawn(s, format!("hog-{i}"), move || hog(gate, nice, until)))
            .collect::<Result<Vec<_>>>()?;
        gate.await_arrivals(handles.len())?;
        let _ = until.set(Instant::now() + params.duration);
        gate.release()?;
        join_all(handles)
    })?;
    Ok(report(params, hogs))
}

fn report(params: &Params, hogs: Vec<Hog>) -> Report {
    let total: f64 = hogs.iter().map(|h| h.cpu_ms).sum();
    let equal: Vec<f64> = hogs
        .iter()
        .filter(|h| h.nice == 0)
        .map(|h| h.cpu_ms)
        .collect();
    let niced: Vec<f64> = hogs
        .iter()
        .filter(|h| h.nice != 0)
        .map(|h| h.cpu_ms)
        .collect();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    // Share of what an equal split among the equal-weight hogs would give.
    let share = |v: &[f64], of: f64| if of > 0.0 { 100.0 * min(v) / of } else { 0.0 };
    let equal_mean = mean(&equal);
    let mut metrics = vec![
        Metric::new(
            "min_share_pct",
            share(&equal, equal_mean),
            "%",
            Better::Higher,
        ),
        Metric::new("total_cpu_ms", total, "ms", Better::Higher),
        Metric::new("hog_cpu_ms_mean", equal_mean, "ms", Better::Higher),
        Metric::new("hog_cpu_ms_min", min(&equal), "ms", Better::Higher),
    ];
    if !niced.is_empty() {
        // Against the nice-0 mean: a nice-5 hog should get roughly a third.
        metrics.push(Metric::new(
            "niced_min_share_pct",
            share(&niced, equal_mean),
            "%",
            Better::Higher,
        ));
    }
    Report {
        primary: "min_share_pct",
        metrics,
        detail: json!({
            "duration_ms": ms(params.duration),
            "nice_of_niced": NICE,
            "hogs": hogs,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{run_str, value};

    #[test]
    fn equal_hogs_get_comparable_shares() {
        let r = run_str("fairness:hogs=2,niced=1,duration_ms=300");
        assert!(value(&r, "total_cpu_ms") > 0.0);
        assert!(value(&r, "min_share_pct") > 0.0);
        assert!(r.metric("niced_min_share_pct").is_some());
        assert_eq!(r.detail["hogs"].as_array().unwrap().len(), 3);
    }
}
