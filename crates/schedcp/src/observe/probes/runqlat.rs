//! The runqlat probe (bpf/probes/runqlat.bpf.c): run-queue latency as a
//! log2 histogram of microseconds, summed over CPUs after detach.

use std::fmt::Write as _;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;

use libbpf_rs::{MapCore, MapFlags};
use serde::Serialize;

use super::histogram::{self, Bucket};
use super::request::Filter;
use super::session::Attached;
use super::skel::{self, runqlat::*};
use crate::error::Error;

const NAME: &str = "runqlat";

/// Run-queue latency over the window. Latencies are in microseconds.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Runqlat {
    /// Latencies measured (switch-ins of a task whose enqueue was seen).
    pub count: u64,
    /// Enqueues not recorded (task storage could not be allocated).
    pub lost: u64,
    pub mean_us: Option<f64>,
    /// Exact.
    pub max_us: Option<f64>,
    /// Estimated from the histogram (within its slot's factor of two).
    pub p50_us: Option<f64>,
    pub p90_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub unit: &'static str,
    /// Non-empty log2 slots, bounds in `unit`.
    pub buckets: Vec<Bucket>,
}

/// Loads and attaches the probe, runs `during` while attached, detaches,
/// and reads the histogram.
pub(super) fn observe<R>(
    filter: &Filter,
    during: impl FnOnce(&Attached) -> R,
) -> Result<(Runqlat, R), Error> {
    let mut object = MaybeUninit::uninit();
    let mut probe = skel::open_load_attach::<ScpRunqlatSkelBuilder>(NAME, &mut object, |open| {
        skel::set_filter(open.maps.rodata_data.as_deref_mut(), filter)
    })?;
    let progs = &probe.progs;
    let attached = Attached::new(&[
        progs.scp_rq_wake.as_fd(),
        progs.scp_rq_wake_new.as_fd(),
        progs.scp_rq_switch.as_fd(),
    ])?;
    let out = during(&attached);
    // Detach before reading, so that the totals are final.
    probe.links = ScpRunqlatLinks::default();
    let hist = read_hist(&probe.maps.scp_rq_hist)?;
    Ok((summarize(&hist), out))
}

/// The per-CPU histograms, summed.
fn read_hist(map: &impl MapCore) -> Result<types::rq_hist, Error> {
    let per_cpu = map
        .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
        .map_err(|e| Error::Internal(anyhow::Error::new(e).context("reading scp_rq_hist")))?
        .unwrap_or_default();
    let mut total = types::rq_hist::default();
    for bytes in &per_cpu {
        let h: types::rq_hist = skel::from_bytes(bytes).ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "scp_rq_hist value is {} bytes",
                bytes.len()
            ))
        })?;
        for (t, s) in total.slots.iter_mut().zip(h.slots) {
            *t += s;
        }
        total.sum_ns += h.sum_ns;
        total.max_ns = total.max_ns.max(h.max_ns);
        total.lost += h.lost;
    }
    Ok(total)
}

fn summarize(h: &types::rq_hist) -> Runqlat {
    let count: u64 = h.slots.iter().sum();
    let us = |ns: u64| ns as f64 / 1000.0;
    Runqlat {
        count,
        lost: h.lost,
        mean_us: (count > 0).then(|| us(h.sum_ns) / count as f64),
        max_us: (count > 0).then(|| us(h.max_ns)),
        p50_us: histogram::percentile(&h.slots, 0.50),
        p90_us: histogram::percentile(&h.slots, 0.90),
        p99_us: histogram::percentile(&h.slots, 0.99),
        unit: "us",
        buckets: histogram::buckets(&h.slots),
    }
}

impl Runqlat {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let f = |v: Option<f64>| v.map_or("-".into(), fmt_us);
        let _ = writeln!(
            s,
            "{} latencies   mean {}   p50 ~{}   p90 ~{}   p99 ~{}   max {}",
            self.count,
            f(self.mean_us),
            f(self.p50_us),
            f(self.p90_us),
            f(self.p99_us),
            f(self.max_us)
        );
        if self.lost > 0 {
            let _ = writeln!(s, "{} enqueues lost (no task storage)", self.lost);
        }
        let peak = self.buckets.iter().map(|b| b.count).max().unwrap_or(0);
        if peak > 0 {
            let _ = writeln!(
                s,
                "{:>10} -> {:<10} {:>10}  distribution",
                "µs", "", "count"
            );
        }
        for b in &self.buckets {
            let bar = "*".repeat(((b.count * 40).div_ceil(peak)) as usize);
            let _ = writeln!(
                s,
                "{:>10} -> {:<10} {:>10}  |{bar:<40}|",
                b.low, b.high, b.count
            );
        }
        s
    }
}

/// A microsecond figure at a readable scale.
pub fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1_000_000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_a_histogram() {
        let mut h = types::rq_hist::default();
        h.slots[2] = 3; // 4..8 µs
        h.slots[10] = 1; // ~1 ms
        h.sum_ns = 3 * 5_000 + 1_500_000;
        h.max_ns = 1_500_000;
        let r = summarize(&h);
        assert_eq!(r.count, 4);
        assert_eq!(r.max_us, Some(1500.0));
        assert!((r.mean_us.unwrap() - 378.75).abs() < 1e-9);
        assert!((4.0..8.0).contains(&r.p50_us.unwrap()));
        assert!((1024.0..2048.0).contains(&r.p99_us.unwrap()));
        assert_eq!(r.buckets.len(), 2);
        assert!(r.render().contains("4 latencies"));
    }

    #[test]
    fn empty_summary_renders() {
        let r = summarize(&types::rq_hist::default());
        assert_eq!(r.count, 0);
        assert!(r.render().starts_with("0 latencies"));
    }
}
