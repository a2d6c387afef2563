//! `wakeup`: schbench-style wakeup latency. Each messenger thread owns a group
//! of workers; every round it stamps a request for each worker and wakes it
//! through a per-worker futex, the worker measures how long it took to get a
//! CPU, spins `work_us` of calibrated work, and reports back. The messenger
//! starts the next round once all of its workers are done. Hog threads spin
//! throughout, so the scheduler has to choose between them and the wakees.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use schedcp_proto::workload::{Better, Metric, WorkloadSpec};
use serde_json::json;

use super::spin::{spin, Spinner};
use super::stats::LogHistogram;
use super::sync::{futex_wait, futex_wake, join_all, spawn, Gate, OnExit};
use super::{count, ms, Report};

pub struct Params {
    messengers: usize,
    workers: usize,
    duration: Duration,
    work: Duration,
    hogs: usize,
}

impl Params {
    pub fn from_spec(spec: &WorkloadSpec) -> Self {
        Params {
            messengers: count(spec, "messengers"),
            workers: count(spec, "workers"),
            duration: Duration::from_millis(spec.int("duration_ms")),
            work: Duration::from_micros(spec.int("work_us")),
            hogs: count(spec, "hogs"),
        }
    }
}

/// Hogs check for the end of the run this often (in calibrated work).
const HOG_CHUNK: Duration = Duration::from_micros(100);

// `Slot::state` values.
const IDLE: u32 = 0;
const POSTED: u32 = 1;
const STOP: u32 = 2;

/// One worker's mailbox, on its own cache line so that workers' stores don't
/// bounce each other's lines and add to the latency being measured.
#[repr(align(64))]
#[derive(Default)]
struct Slot {
    state: AtomicU32,
    posted_ns: AtomicU64,
    latency_ns: AtomicU64,
}

/// Set in `Group::pending` when a worker dies, so its messenger fails rather
/// than wait for a completion that will never come. Changing the futex word
/// (instead of using a separate flag) means the messenger cannot miss it.
const BROKEN: u32 = 1 << 31;

/// A messenger's workers, and how many of them are still busy this round.
struct Group {
    slots: Vec<Slot>,
    pending: AtomicU32,
}

struct Shared {
    /// Origin of the timestamps passed from messengers to workers.
    epoch: Instant,
    gate: Gate,
    /// Tells hogs to stop.
    stop: AtomicBool,
    groups: Vec<Group>,
}

struct Outcome {
    per_messenger: Vec<LogHistogram>,
    elapsed: Duration,
    hog_chunks: Vec<u64>,
}

pub(super) fn run(params: &Params) -> Result<Report> {
    let spinner = Spinner::calibrate();
    let shared = Shared {
        epoch: Instant::now(),
        gate: Gate::new(),
        stop: AtomicBool::new(false),
        groups: (0..params.messengers)
            .map(|_| Group {
                slots: (0..params.workers).map(|_| Slot::default()).collect(),
                pending: AtomicU32::new(0),
            })
            .collect(),
    };
    let outcome = drive(&shared, params, &spinner)?;
    Ok(report(&spinner, &outcome))
}

/// Spawns every thread, runs for the configured duration, and joins them all.
fn drive(shared: &Shared, params: &Params, spinner: &Spinner) -> Result<Outcome> {
    let work_iters = spinner.iters_for(params.work);
    let hog_iters = spinner.iters_for(HOG_CHUNK).max(1);
    let duration = params.duration;
    thread::scope(|s| {
        // Whatever goes wrong below, every thread must be told to finish
        // before the scope joins them.
        let _shutdown = OnExit::new(|| shared.shutdown());
        let hogs = (0..params.hogs)
            .map(|i| spawn(s, format!("hog-{i}"), move || hog(shared, hog_iters)))
            .collect::<Result<Vec<_>>>()?;
        let (mut workers, mut messengers) = (Vec::new(), Vec::new());
        for (g, group) in shared.groups.iter().enumerate() {
            for (w, slot) in group.slots.iter().enumerate() {
                workers.push(spawn(s, format!("worker-{g}-{w}"), move || {
                    worker(shared, group, slot, work_iters)
                })?);
            }
            messengers.push(spawn(s, format!("messenger-{g}"), move || {
                messenger(shared, group, duration)
            })?);
        }
        shared
            .gate
            .await_arrivals(hogs.len() + workers.len() + messengers.len())?;
        let release = Instant::now();
        shared.gate.release()?;

        let per_messenger = join_all(messengers);
        let elapsed = release.elapsed();
        shared.shutdown();
        let workers = join_all(workers);
        let hog_chunks = join_all(hogs);
        // A dead worker is the root cause of its messenger's failure: report it first.
        workers?;
        let (per_messenger, hog_chunks) = (per_messenger?, hog_chunks?);
        Ok(Outcome {
            per_messenger,
            elapsed,
            hog_chunks,
        })
    })
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Ends every thread's loop; idempotent.
    fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.groups.iter().for_each(Group::stop_workers);
        self.gate.abort();
    }
}

impl Group {
    /// Stamps and wakes every worker. The stamp is taken right before that
    /// worker's wake, as schbench does, so it includes the wake syscall.
    fn post_round(&self, shared: &Shared) -> Result<()> {
        // Relaxed suffices: each worker reads `pending` only after its
        // Acquire load of the Release-stored POSTED below.
        if self
            .pending
            .swap(self.slots.len() as u32, Ordering::Relaxed)
            & BROKEN
            != 0
        {
            bail!("a worker died");
        }
        for slot in &self.slots {
            slot.posted_ns.store(shared.now_ns(), Ordering::Relaxed);
            slot.state.store(POSTED, Ordering::Release);
            futex_wake(&slot.state, 1).context("waking a worker")?;
        }
        Ok(())
    }

    /// Sleeps until every worker has completed this round's request.
    fn await_round(&self) -> Result<()> {
        loop {
            // Acquire pairs with the workers' decrements: their latencies are visible.
            let pending = self.pending.load(Ordering::Acquire);
            if pending == 0 {
                return Ok(());
            }
            if pending & BROKEN != 0 {
                bail!("a worker died mid-round");
            }
            futex_wait(&self.pending, pending).context("waiting for workers")?;
        }
    }

    /// A worker finished its request; the last one of the round wakes the messenger.
    fn complete_one(&self) -> Result<()> {
        if self.pending.fetch_sub(1, Ordering::Release) & !BROKEN == 1 {
            futex_wake(&self.pending, 1).context("waking the messenger")?;
        }
        Ok(())
    }

    fn break_round(&self) {
        self.pending.fetch_or(BROKEN, Ordering::Release);
        // Only EFAULT/EINVAL are possible, and this is already a failure path.
        let _ = futex_wake(&self.pending, 1);
    }

    fn stop_workers(&self) {
        for slot in &self.slots {
            slot.state.store(STOP, Ordering::Release);
            let _ = futex_wake(&slot.state, 1);
        }
    }
}

/// Runs rounds until the deadline (at least one), collecting its workers'
/// wakeup latencies in nanoseconds.
fn messenger(shared: &Shared, group: &Group, duration: Duration) -> Result<LogHistogram> {
    // The workers sleep until told otherwise: release them however this ends.
    let _stop_workers = OnExit::new(|| group.stop_workers());
    let mut latencies = LogHistogram::new();
    if !shared.gate.wait()? {
        return Ok(latencies);
    }
    let deadline = Instant::now() + duration;
    loop {
        group.post_round(shared)?;
        group.await_round()?;
        for slot in &group.slots {
            latencies.record(slot.latency_ns.load(Ordering::Relaxed));
        }
        if Instant::now() >= deadline {
            return Ok(latencies);
        }
    }
}

fn worker(shared: &Shared, group: &Group, slot: &Slot, work_iters: u64) -> Result<()> {
    // If this worker fails or panics, its messenger must not wait for it.
    let broken = OnExit::new(|| group.break_round());
    shared.gate.arrive()?;
    serve(shared, group, slot, work_iters)?;
    broken.disarm();
    Ok(())
}

fn serve(shared: &Shared, group: &Group, slot: &Slot, work_iters: u64) -> Result<()> {
    loop {
        match slot.state.load(Ordering::Acquire) {
            IDLE => futex_wait(&slot.state, IDLE).context("waiting for a request")?,
            POSTED => {
                let latency = shared
                    .now_ns()
                    .saturating_sub(slot.posted_ns.load(Ordering::Relaxed));
                // Fails only if STOP raced in; the next iteration exits.
                if slot
                    .state
                    .compare_exchange(POSTED, IDLE, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    spin(work_iters);
                    slot.latency_ns.store(latency, Ordering::Relaxed);
                    group.complete_one()?;
                }
            }
            _ => return Ok(()),
        }
    }
}

/// Spins until the run ends; returns how many chunks of work it got done.
fn hog(shared: &Shared, chunk_iters: u64) -> Result<u64> {
    if !shared.gate.wait()? {
        return Ok(0);
    }
    let mut chunks = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        spin(chunk_iters);
        chunks += 1;
    }
    Ok(chunks)
}

fn report(spinner: &Spinner, outcome: &Outcome) -> Report {
    let mut all = LogHistogram::new();
    outcome.per_messenger.iter().for_each(|h| all.merge(h));
    let us = |ns: u64| ns as f64 / 1e3;
    let latency =
        |name: &str, ns: Option<u64>| ns.map(|ns| Metric::new(name, us(ns), "us", Better::Lower));
    let requests = all.count() as f64;

    let mut metrics: Vec<Metric> = [
        latency("p99_wakeup_latency", all.percentile(0.99)),
        latency("p50_wakeup_latency", all.percentile(0.5)),
        latency("p999_wakeup_latency", all.percentile(0.999)),
        latency("max_wakeup_latency", all.max()),
    ]
    .into_iter()
    .flatten()
    .collect();
    metrics.push(Metric::new(
        "requests_per_s",
        requests / outcome.elapsed.as_secs_f64(),
        "requests/s",
        Better::Higher,
    ));
    metrics.push(Metric::new(
        "requests",
        requests,
        "requests",
        Better::Higher,
    ));

    let per_messenger: Vec<u64> = outcome
        .per_messenger
        .iter()
        .map(LogHistogram::count)
        .collect();
    let hog_work_ms: Vec<f64> = outcome
        .hog_chunks
        .iter()
        // Integer microseconds first, so 1013 chunks print as 101.3, not 101.30000000000001.
        .map(|&c| (c * HOG_CHUNK.as_micros() as u64) as f64 / 1e3)
        .collect();
    let detail = json!({
        "calibration": { "iters_per_ms": spinner.iters_per_ms() },
        "elapsed_ms": ms(outcome.elapsed),
        "mean_wakeup_latency_us": all.mean().map(|ns| ns / 1e3),
        "min_wakeup_latency_us": all.min().map(us),
        "requests_per_messenger": per_messenger,
        "hog_work_ms": hog_work_ms,
    });
    Report {
        primary: "p99_wakeup_latency",
        metrics,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{run_str, value};

    fn check(spec: &str, messengers: usize, hogs: usize) {
        let r = run_str(spec);
        assert_eq!(r.primary, "p99_wakeup_latency");
        let requests = value(&r, "requests");
        assert!(requests > 0.0 && value(&r, "requests_per_s") > 0.0);
        let lat = [
            "p50_wakeup_latency",
            "p99_wakeup_latency",
            "p999_wakeup_latency",
            "max_wakeup_latency",
        ]
        .map(|n| value(&r, n));
        assert!(
            lat.windows(2).all(|w| w[0] <= w[1]),
            "latencies not monotonic: {lat:?}"
        );

        let per_messenger = r.detail["requests_per_messenger"]
            .as_array()
            .expect("per-messenger counts");
        assert_eq!(per_messenger.len(), messengers);
        assert_eq!(
            per_messenger.iter().filter_map(|c| c.as_u64()).sum::<u64>() as f64,
            requests
        );
        assert_eq!(r.detail["hog_work_ms"].as_array().map(Vec::len), Some(hogs));
    }

    #[test]
    fn wakes_workers_with_hogs() {
        check(
            "wakeup:messengers=2,workers=3,duration_ms=150,work_us=50,hogs=1",
            2,
            1,
        );
    }

    #[test]
    fn runs_without_work_or_hogs() {
        check(
            "wakeup:messengers=1,workers=1,duration_ms=100,work_us=0,hogs=0",
            1,
            0,
        );
    }
}
