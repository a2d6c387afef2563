//! The KPIs a deployment is judged by, measured over one window: run-queue
//! latency (the observe service's runqlat probe), PSI cpu pressure, tasks
//! sched_ext refused (`nr_rejected`), and optionally the metric of a
//! workload run during the window.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use schedcp_proto::workload::{Better, WorkloadResult, WorkloadSpec};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::host::process::{drain, Group, Usage};
use crate::observe::probes::{self, Filter, ProbeKind, ProbeResult};

/// One window's measurements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Kpis {
    pub window_s: f64,
    /// Run-queue latency percentiles (µs), from the runqlat probe's log2
    /// histogram (each within its slot's factor of two).
    pub runq_p50_us: Option<f64>,
    pub runq_p99_us: Option<f64>,
    pub runq_samples: u64,
    /// Share of the window in which some runnable task waited for a CPU
    /// (`/proc/pressure/cpu` "some"), in percent.
    pub psi_cpu_some_pct: Option<f64>,
    /// Tasks sched_ext refused during the window.
    pub nr_rejected: Option<u64>,
    /// The workload's metric, if one ran.
    pub workload: Option<WorkloadKpi>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkloadKpi {
    /// What ran: a lab workload spec or a profile's command line.
    pub what: String,
    pub metric: String,
    pub unit: String,
    /// `lower` or `higher` is better.
    pub better: String,
    pub value: f64,
}

/// What runs during a window to load the machine, and which of its
/// metrics the canary judges.
#[derive(Debug, Clone)]
pub struct Workload {
    pub runner: Runner,
    /// The metric that counts: one the lab workload reports, by name
    /// (default: its primary metric). A command's metric is its wall time.
    pub metric: Option<String>,
    /// Which way is better (default: the metric's own).
    pub better: Option<Better>,
    /// The workload profile this came from, if any.
    pub profile: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Runner {
    /// A built-in lab workload, run by the guest agent binary in its
    /// standalone mode (`schedcp-guest workload SPEC`).
    Lab { agent: PathBuf, spec: WorkloadSpec },
    /// A program, run directly (no shell); its wall-clock time is the metric.
    Command {
        argv: Vec<String>,
        cwd: Option<PathBuf>,
        timeout: Duration,
    },
}

impl Workload {
    /// A built-in lab workload judged by its primary metric.
    pub fn lab(agent: PathBuf, spec: WorkloadSpec) -> Self {
        Workload {
            runner: Runner::Lab { agent, spec },
            metric: None,
            better: None,
            profile: None,
        }
    }

    pub fn describe(&self) -> String {
        let what = match &self.runner {
            Runner::Lab { spec, .. } => spec.to_string(),
            Runner::Command { argv, .. } => argv.join(" "),
        };
        let metric = self.metric.as_deref().unwrap_or("primary metric");
        match &self.profile {
            Some(p) => format!("profile {p}: {what} ({metric})"),
            None => what,
        }
    }

    pub fn run(&self) -> Result<WorkloadKpi, Error> {
        self.run_with(None)
    }

    /// One run, a command workload's child under `hook` (per-workload knobs).
    pub fn run_with(&self, hook: Option<&crate::knobs::SpawnHook>) -> Result<WorkloadKpi, Error> {
        Ok(self.run_measured(hook)?.0)
    }

    /// [`Self::run_with`], with what the workload's process tree used.
    pub fn run_measured(
        &self,
        hook: Option<&crate::knobs::SpawnHook>,
    ) -> Result<(WorkloadKpi, Option<Usage>), Error> {
        let (mut kpi, usage) = match &self.runner {
            Runner::Lab { agent, spec } => run_lab(agent, spec, self.metric.as_deref(), hook)?,
            Runner::Command { argv, cwd, timeout } => {
                run_command(argv, cwd.as_deref(), *timeout, hook)?
            }
        };
        if let Some(b) = self.better {
            kpi.better = better_name(b).into();
        }
        Ok((kpi, usage))
    }
}

fn better_name(b: Better) -> &'static str {
    match b {
        Better::Lower => "lower",
        Better::Higher => "higher",
    }
}

/// A built-in workload run on this machine never takes longer than this.
const LAB_WORKLOAD_TIMEOUT: Duration = Duration::from_secs(600);

fn run_lab(
    agent: &Path,
    spec: &WorkloadSpec,
    metric: Option<&str>,
    hook: Option<&crate::knobs::SpawnHook>,
) -> Result<(WorkloadKpi, Option<Usage>), Error> {
    let mut cmd = Command::new(agent);
    cmd.arg("workload")
        .arg(spec.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(h) = hook {
        h.install(&mut cmd);
    }
    let mut group = Group::spawn(&mut cmd, true)
        .map_err(|e| Error::Setup(format!("running {}: {e}", agent.display())))?;
    let stdout = drain(group.child_mut().stdout.take(), 1 << 20);
    let stderr = drain(group.child_mut().stderr.take(), 64 << 10);
    let status = group
        .wait_until(Instant::now() + LAB_WORKLOAD_TIMEOUT, Duration::ZERO)
        .map_err(Error::Internal)?;
    let (stdout, stderr) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    match status {
        None => {
            return Err(Error::Internal(anyhow::anyhow!(
                "workload {spec} timed out after {} s (killed)",
                LAB_WORKLOAD_TIMEOUT.as_secs()
            )))
        }
        Some(st) if !st.success() => {
            return Err(Error::Internal(anyhow::anyhow!(
                "workload {spec} failed: {}",
                stderr.trim()
            )))
        }
        Some(_) => {}
    }
    let r: WorkloadResult = serde_json::from_str(&stdout)
        .map_err(|e| Error::Internal(anyhow::anyhow!("workload {spec} output: {e}")))?;
    let m = match metric {
        Some(name) => r.metric(name).ok_or_else(|| {
            Error::Input(format!(
                "workload {spec} reports no metric '{name}'; it reports: {}",
                r.metrics
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?,
        None => r.primary_metric().ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "workload {spec} reported no primary metric"
            ))
        })?,
    };
    Ok((
        WorkloadKpi {
            what: spec.to_string(),
            metric: m.name.clone(),
            unit: m.unit.clone(),
            better: better_name(m.better).into(),
            value: m.value,
        },
        group.usage(),
    ))
}

fn run_command(
    argv: &[String],
    cwd: Option<&Path>,
    timeout: Duration,
    hook: Option<&crate::knobs::SpawnHook>,
) -> Result<(WorkloadKpi, Option<Usage>), Error> {
    // The same timed run as a workload benchmark: exact wall time, the
    // command's whole process group killed at the deadline.
    let timed = crate::observe::benchmark::command::time_command_with(argv, cwd, timeout, hook)?;
    timed
        .outcome
        .map_err(|why| Error::Internal(anyhow::anyhow!("{}: {why}", argv.join(" "))))?;
    Ok((
        WorkloadKpi {
            what: argv.join(" "),
            metric: "wall_time".into(),
            unit: "ms".into(),
            better: "lower".into(),
            value: timed.wall.as_secs_f64() * 1e3,
        },
        timed.usage,
    ))
}

/// Measures one window: the runqlat probe stays attached while the
/// workload runs (or, without one, for `window`).
pub fn measure(window: Duration, workload: Option<&Workload>) -> Result<Kpis, Error> {
    measure_with(window, workload, None)
}

/// [`measure`], the workload's child under a change set's spawn hook.
pub fn measure_with(
    window: Duration,
    workload: Option<&Workload>,
    hook: Option<&crate::knobs::SpawnHook>,
) -> Result<Kpis, Error> {
    let psi0 = psi_cpu_some_total_us();
    let rej0 = schedcp_scx::sysfs::nr_rejected();
    let t0 = Instant::now();
    let (result, wl) = probes::observe(
        ProbeKind::Runqlat,
        &Filter::default(),
        1,
        |_| match workload {
            Some(w) => Some(w.run_with(hook)),
            None => {
                std::thread::sleep(window);
                None
            }
        },
    )?;
    let elapsed = t0.elapsed();
    let psi1 = psi_cpu_some_total_us();
    let rej1 = schedcp_scx::sysfs::nr_rejected();
    let ProbeResult::Runqlat(rq) = result else {
        return Err(Error::Internal(anyhow::anyhow!(
            "runqlat returned another result"
        )));
    };
    Ok(Kpis {
        window_s: elapsed.as_secs_f64(),
        runq_p50_us: rq.p50_us,
        runq_p99_us: rq.p99_us,
        runq_samples: rq.count,
        psi_cpu_some_pct: match (psi0, psi1) {
            (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 / 1e4 / elapsed.as_secs_f64()),
            _ => None,
        },
        nr_rejected: match (rej0, rej1) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
        workload: wl.transpose()?,
    })
}

/// `some total=` of /proc/pressure/cpu: microseconds since boot.
fn psi_cpu_some_total_us() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}
