//! Host eBPF probes from a fixed library, attached for a bounded time and
//! aggregated in kernel maps: nothing streams per event to userspace; the
//! maps are read once, after detach.
//!
//! - [`ProbeKind::Runqlat`]: run-queue latency histogram (wakeup → on-CPU).
//! - [`ProbeKind::Cputime`]: per-task on-CPU and off-CPU time.
//! - [`ProbeKind::Schedevents`]: per-process switch / wakeup / migrate /
//!   fork / exec counts.
//!
//! The BPF side is `bpf/probes/*.bpf.c`, built into skeletons by build.rs.
//! Everything a probe loads is named `scp_*` ([`PREFIX`]), so the kernel's
//! program and map lists show whose it is ([`bpf_stats::ours_loaded`]).
//! A probe detaches on every path: the skeleton and its links are dropped
//! when [`observe`] returns, and the kernel frees them with the process if
//! it dies first.

pub mod bpf_stats;
pub mod catalog;
pub mod cputime;
pub mod histogram;
pub mod report;
pub mod request;
pub mod runqlat;
pub mod schedevents;
pub mod session;
mod skel;

use std::sync::atomic::AtomicBool;
use std::time::Instant;

pub use catalog::{ProbeInfo, ProbeKind};
pub use report::{ProbeReport, ProbeResult};
pub use request::{Filter, ProbeRequest};
pub use session::Attached;

use crate::error::Error;

/// Prefix of every program and map name the probes load.
pub const PREFIX: &str = "scp_";

/// Loads and attaches `probe` with `filter`, calls `during` while it is
/// attached, then detaches and reads what it aggregated (keeping the `top`
/// rows where the probe ranks tasks or processes).
///
/// The caller bounds the window: `during` should return. Checks of the
/// request are the caller's too ([`ProbeRequest::validate`]).
pub fn observe<R>(
    probe: ProbeKind,
    filter: &Filter,
    top: usize,
    during: impl FnOnce(&Attached) -> R,
) -> Result<(ProbeResult, R), Error> {
    skel::route_libbpf_log();
    Ok(match probe {
        ProbeKind::Runqlat => {
            let (r, out) = runqlat::observe(filter, during)?;
            (ProbeResult::Runqlat(r), out)
        }
        ProbeKind::Cputime => {
            let (r, out) = cputime::observe(filter, top, during)?;
            (ProbeResult::Cputime(r), out)
        }
        ProbeKind::Schedevents => {
            let (r, out) = schedevents::observe(filter, top, during)?;
            (ProbeResult::Schedevents(r), out)
        }
    })
}

/// Runs the probe `req` asks for, for its duration or until `stop` is set
/// (by a signal handler, say), and reports what it saw.
pub fn run(
    req: &ProbeRequest,
    max_duration_s: u64,
    stop: &AtomicBool,
) -> Result<ProbeReport, Error> {
    req.validate(max_duration_s)?;
    // Statistics must be on before the programs first run to count them all.
    let stats = req
        .cost
        .then(bpf_stats::StatsEnabled::new)
        .transpose()
        .map_err(|e| {
            Error::Setup(format!(
                "--cost needs the kernel's BPF statistics (BPF_ENABLE_STATS, CAP_SYS_ADMIN): {e}"
            ))
        })?;
    let (result, (interrupted, elapsed, cost)) =
        observe(req.probe, &req.filter, req.top, |live| {
            let t0 = Instant::now();
            let interrupted = session::wait(req.duration, stop);
            let cost = stats.as_ref().map(|_| live.cost());
            (interrupted, t0.elapsed(), cost)
        })?;
    drop(stats);
    Ok(ProbeReport {
        probe: req.probe,
        requested_s: req.duration.as_secs(),
        duration_s: elapsed.as_secs_f64(),
        interrupted,
        filter: req.filter.clone(),
        events: result.events(),
        result,
        cost,
    })
}
