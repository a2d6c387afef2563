//! `schedcp observe probe`: run one probe of the library for a bounded time,
//! or describe the library.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::observe::probes::{self, Filter, ProbeInfo, ProbeKind, ProbeRequest};
use serde::Serialize;

use super::super::output::{Output, Report};

/// Attach an eBPF probe for a bounded time; it aggregates in kernel maps and
/// reports once, after detaching.
///
/// Examples:
///   schedcp observe probe --list
///   schedcp observe probe runqlat --duration 10
///   schedcp observe probe cputime --pid 1234 --top 5 --json
///   schedcp observe probe schedevents --comm nginx --cost
///
/// Ctrl-C (or SIGTERM) stops early and still reports what was aggregated.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ProbeArgs {
    /// The probe: runqlat, cputime or schedevents (see --list).
    #[arg(required_unless_present = "list", value_name = "NAME")]
    name: Option<String>,
    /// Describe each probe: what it measures, its tracepoints, maps and cost.
    #[arg(long, conflicts_with_all = ["name", "pid", "comm", "cost"])]
    list: bool,
    /// Seconds to stay attached (1 to observe.probe_max_duration_s).
    #[arg(long, short, value_name = "S", default_value_t = 5)]
    duration: u64,
    /// Only the threads of this process (its tgid).
    #[arg(long, conflicts_with = "comm")]
    pid: Option<u32>,
    /// Only tasks with exactly this name (at most 15 bytes, as the kernel keeps it).
    #[arg(long)]
    comm: Option<String>,
    /// Rows in the top list (cputime, schedevents).
    #[arg(long, value_name = "N", default_value_t = 10)]
    top: usize,
    /// Also report the probe's own cost per event (turns on the kernel's BPF
    /// run-time statistics while attached).
    #[arg(long)]
    cost: bool,
}

pub fn run(cfg: Config, a: ProbeArgs, out: Output) -> Result<i32, Error> {
    if a.list {
        out.emit(&Catalog(ProbeKind::ALL.iter().map(|k| k.info()).collect()))?;
        return Ok(exit::OK);
    }
    let name = a
        .name
        .as_deref()
        .ok_or_else(|| Error::Input("name a probe, or pass --list".into()))?;
    let req = ProbeRequest {
        probe: ProbeKind::parse(name)?,
        duration: Duration::from_secs(a.duration),
        filter: Filter {
            pid: a.pid,
            comm: a.comm,
        },
        top: a.top,
        cost: a.cost,
    };
    let max = cfg.observe.probe_max_duration_s;
    // Checked before the spinner starts, so that bad input fails cleanly.
    req.validate(max)?;

    let _signals = StopOnSignal::install()?;
    let pb = out.spinner();
    pb.set_message(format!(
        "{} attached for {} s (Ctrl-C stops early)",
        req.probe, a.duration
    ));
    let report = probes::run(&req, max, &STOP);
    pb.finish_and_clear();
    out.emit(&report?)?;
    Ok(exit::OK)
}

/// `observe probe --list`: the probe library.
#[derive(Serialize)]
#[serde(transparent)]
struct Catalog(Vec<&'static ProbeInfo>);

impl Report for Catalog {
    fn render(&self) -> String {
        let mut s = String::new();
        for p in &self.0 {
            let _ = writeln!(s, "{} — {}", p.name, p.measures);
            let _ = writeln!(s, "    output:      {}", p.output);
            let _ = writeln!(s, "    tracepoints: {}", p.tracepoints.join(", "));
            let _ = writeln!(s, "    programs:    {}", p.programs.join(", "));
            for m in p.maps {
                let _ = writeln!(s, "    map:         {} ({}; {})", m.name, m.kind, m.bound);
            }
            let _ = writeln!(s, "    cost:        {}", p.cost.per_event);
            let _ = writeln!(
                s,
                "    measured:    {:.0} ns/event on {}",
                p.cost.measured_ns_per_event, p.cost.measured_on
            );
            s.push('\n');
        }
        s
    }
}

/// Set by SIGINT/SIGTERM while a probe is attached.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a request to stop early (so the probe still
/// detaches and reports), and puts the previous handlers back when dropped.
struct StopOnSignal {
    previous: Vec<(Signal, SigAction)>,
}

impl StopOnSignal {
    fn install() -> Result<StopOnSignal, Error> {
        let action = SigAction::new(
            SigHandler::Handler(on_stop_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut guard = StopOnSignal {
            previous: Vec::new(),
        };
        for sig in [Signal::SIGINT, Signal::SIGTERM] {
            // SAFETY: the handler only stores to an atomic, which is
            // async-signal-safe.
            let old = unsafe { signal::sigaction(sig, &action) }.map_err(|e| {
                Error::Internal(
                    anyhow::Error::new(e).context(format!("installing a {sig} handler")),
                )
            })?;
            guard.previous.push((sig, old));
        }
        Ok(guard)
    }
}

impl Drop for StopOnSignal {
    fn drop(&mut self) {
        for (sig, old) in self.previous.drain(..) {
            // SAFETY: restores the handler that was installed before ours.
            if let Err(e) = unsafe { signal::sigaction(sig, &old) } {
                tracing::warn!("restoring the {sig} handler: {e}");
            }
        }
    }
}
