//! `fairness`: CPU hogs that stay runnable for a fixed time — `hogs` at
//! nice 0 and `niced` at nice 5 — and how much CPU each one got. A fair
//! scheduler gives the equal-weight hogs equal shares; one that starves a
//! class of tasks leaves some hog with nothing. The verifier judges
//! `min_share_pct` and `niced_min_share_pct`.
//!
//! CPU time is read from outside each thread (`/proc/self/task/<tid>/schedstat`)
//! when the window closes, so a hog that never got a CPU is measured as
//! such instead of hanging the run: hogs that have not finished a grace
//! period after the window are counted as starved and left behind (the
//! guest powers off after the report).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use schedcp_proto::workload::{Better, Metric, WorkloadSpec};
use serde::Serialize;
use serde_json::json;

use super::spin::spin;
use super::sync::Gate;
use super::{count, ms, Report};

/// Nice value of the lower-weight class (weight ≈ 335 vs 1024 at nice 0).
const NICE: i32 = 5;
/// How long after the window a hog may take to notice it closed.
const GRACE: Duration = Duration::from_millis(500);

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
    tid: i32,
    nice: i32,
    cpu_ms: f64,
    finished: bool,
}

struct Shared {
    gate: Gate,
    until: OnceLock<Instant>,
}

struct Slot {
    tid: AtomicI32,
    done: AtomicBool,
    /// The hog's own CPU time over the window, set when it finishes (its
    /// /proc entry is gone once the thread exits).
    cpu_ns: AtomicU64,
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

fn set_own_nice(nice: i32) -> Result<()> {
    // SAFETY: setpriority on our own thread id only.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, gettid() as libc::id_t, nice) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setting nice");
    }
    Ok(())
}

/// Nanoseconds `tid` has spent on a CPU (first field of its schedstat).
fn cpu_ns(tid: i32) -> Result<u64> {
    let path = format!("/proc/self/task/{tid}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("parsing {path}"))
}

fn hog(shared: &Shared, slot: &Slot, nice: i32) -> Result<()> {
    slot.tid.store(gettid(), Ordering::Release);
    set_own_nice(nice)?;
    if !shared.gate.wait()? {
        bail!("aborted before the start");
    }
    let start = cpu_ns(slot.tid.load(Ordering::Acquire))?;
    let end = *shared.until.get().context("release time unset")?;
    while Instant::now() < end {
        // ~50 µs of work between clock checks.
        spin(20_000);
    }
    let used = cpu_ns(slot.tid.load(Ordering::Acquire))?.saturating_sub(start);
    slot.cpu_ns.store(used, Ordering::Release);
    slot.done.store(true, Ordering::Release);
    Ok(())
}

pub(super) fn run(params: &Params) -> Result<Report> {
    let shared = Arc::new(Shared {
        gate: Gate::new(),
        until: OnceLock::new(),
    });
    let nices: Vec<i32> = std::iter::repeat_n(0, params.hogs)
        .chain(std::iter::repeat_n(NICE, params.niced))
        .collect();
    let slots: Vec<Arc<Slot>> = nices
        .iter()
        .map(|_| {
            Arc::new(Slot {
                tid: AtomicI32::new(0),
                done: AtomicBool::new(false),
                cpu_ns: AtomicU64::new(0),
            })
        })
        .collect();
    for (i, (&nice, slot)) in nices.iter().zip(&slots).enumerate() {
        let (mine, slot) = (Arc::clone(&shared), Arc::clone(slot));
        // Detached on purpose: a starved hog must not be able to hang the run.
        let spawned = thread::Builder::new()
            .name(format!("hog-{i}"))
            .spawn(move || {
                if let Err(e) = hog(&mine, &slot, nice) {
                    eprintln!("fairness hog failed: {e:#}");
                }
            });
        if let Err(e) = spawned {
            shared.gate.abort();
            bail!("spawning hog {i}: {e}");
        }
    }
    shared.gate.await_arrivals(slots.len())?;
    let tids: Vec<i32> = slots
        .iter()
        .map(|s| s.tid.load(Ordering::Acquire))
        .collect();
    let before: Vec<u64> = tids.iter().map(|&t| cpu_ns(t)).collect::<Result<_>>()?;
    let _ = shared.until.set(Instant::now() + params.duration);
    shared.gate.release()?;
    thread::sleep(params.duration);
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline && !slots.iter().all(|s| s.done.load(Ordering::Acquire)) {
        thread::sleep(Duration::from_millis(10));
    }
    let hogs: Vec<Hog> = tids
        .iter()
        .zip(&before)
        .zip(nices.iter().zip(&slots))
        .map(|((&tid, &b), (&nice, slot))| {
            let finished = slot.done.load(Ordering::Acquire);
            // A finished hog measured itself; a starved one is read from outside.
            let used = if finished {
                slot.cpu_ns.load(Ordering::Acquire)
            } else {
                cpu_ns(tid).unwrap_or(b).saturating_sub(b)
            };
            Hog {
                tid,
                nice,
                cpu_ms: used as f64 / 1e6,
                finished,
            }
        })
        .collect();
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
    let unfinished = hogs.iter().filter(|h| !h.finished).count();
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
        Metric::new(
            "unfinished_hogs",
            unfinished as f64,
            "threads",
            Better::Lower,
        ),
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
        assert_eq!(value(&r, "unfinished_hogs"), 0.0);
        assert!(r.metric("niced_min_share_pct").is_some());
        assert_eq!(r.detail["hogs"].as_array().unwrap().len(), 3);
    }
}
