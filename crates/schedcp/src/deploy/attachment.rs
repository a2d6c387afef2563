//! What the deploy controller holds attached, and its health: a BPF object
//! whose struct_ops link we own, or an external scheduler program we
//! supervise (it owns its link; stopping it detaches).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use schedcp_scx::{sysfs, ExternalScheduler};

use super::record::{Deployment, SchedulerChange};
use super::DeployConfig;
use crate::config::Config;
use crate::error::Error;

/// How long attach and detach may take to show in sysfs.
pub const STATE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the controller holds attached.
pub struct Held {
    pub deployment_id: i64,
    pub ops_name: String,
    pub attachment: Attachment,
}

/// A BPF object whose struct_ops link we own, or a scheduler program we
/// supervise (it owns its link; stopping it detaches).
pub enum Attachment {
    Object(schedcp_scx::Scheduler),
    Process {
        process: ExternalScheduler,
        binary: PathBuf,
        log: PathBuf,
        restarts: u32,
    },
}

/// What a health check found.
pub enum Health {
    Ok,
    /// The scheduler process died and was restarted (the message says how).
    Restarted(String),
    /// Trip the breaker, for this reason.
    Failed(String),
}

impl Held {
    /// Is what we hold still healthy? A dead scheduler process is
    /// restarted while active, up to `cfg.external_max_restarts` times.
    pub fn check(&mut self, cfg: &DeployConfig, in_canary: bool) -> Health {
        let max_restarts = cfg.external_max_restarts;
        let start_timeout = Duration::from_secs(cfg.external_start_s);
        let h = self;
        // A dead scheduler process: restart it while active (bounded), or trip.
        let mut died = None;
        if let Attachment::Process {
            process,
            binary,
            log,
            restarts,
        } = &mut h.attachment
        {
            // A dying process releases its struct_ops link before it is a
            // zombie: the kernel shows 'disabling' (then 'disabled') while
            // the exit still runs, and the unregistration waits for the
            // disable work, which takes seconds on an emulated CPU. Wait
            // for the exit as long as a state change may take, so a death
            // is a death (and the restart bound applies); the kernel runs
            // its default scheduler meanwhile, so waiting costs nothing.
            let mut exited = process.exit_status();
            if exited.is_none() && sysfs::state().as_deref() != Some("enabled") {
                let until = Instant::now() + STATE_TIMEOUT;
                while exited.is_none() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(10));
                    exited = process.exit_status();
                }
            }
            if let Some(status) = exited {
                let what = format!(
                    "the scheduler process exited ({}): {}",
                    schedcp_scx::process::describe(status),
                    last_lines(&process.output_tail(), 3)
                );
                if !in_canary && *restarts < max_restarts {
                    sysfs::wait_for_state("disabled", STATE_TIMEOUT);
                    let restarted = ExternalScheduler::spawn(binary, &[], log)
                        .map_err(|e| format!("{e:#}"))
                        .and_then(|mut p| p.wait_enabled(start_timeout).map(|_| p));
                    match restarted {
                        Ok(p) => {
                            *process = p;
                            *restarts += 1;
                            let n = *restarts;
                            h.ops_name = sysfs::root_ops().unwrap_or_default();
                            return Health::Restarted(format!(
                                "{what}; restarted ({n} of at most {max_restarts})"
                            ));
                        }
                        Err(e) => died = Some(format!("{what}; the restart failed: {e}")),
                    }
                } else {
                    died = Some(if in_canary {
                        format!("{what} during the canary")
                    } else {
                        format!("{what}; restarted {max_restarts} times already")
                    });
                }
            }
        }
        let mut state = sysfs::state().unwrap_or_default();
        let ops = sysfs::root_ops();
        let exit = match &h.attachment {
            Attachment::Object(s) => {
                // The kernel leaves 'enabled' before ops.exit() writes the
                // exit record, and reaches 'disabled' after. Wait for it (the
                // rollback waits for 'disabled' anyway), so the reason given
                // is the kernel's own: the error message, or the stall.
                let mut exit = s.exit_info();
                let until = Instant::now() + STATE_TIMEOUT;
                while exit.is_none()
                    && !matches!(state.as_str(), "enabled" | "disabled")
                    && Instant::now() < until
                {
                    std::thread::sleep(Duration::from_millis(5));
                    exit = s.exit_info();
                    state = sysfs::state().unwrap_or_default();
                }
                exit
            }
            Attachment::Process { .. } => None,
        };
        let problem = if died.is_some() {
            died
        } else if let Some(exit) = exit {
            // Scheduler-written text is untrusted: bounded, masked, marked.
            Some(format!("the scheduler exited: {}", exit.describe()))
        } else if state != "enabled" {
            Some(format!(
                "sched_ext state is '{state}', not 'enabled': the kernel ejected the scheduler (error exit or watchdog stall)"
            ))
        } else if ops.as_deref() != Some(h.ops_name.as_str()) {
            Some(format!(
                "the kernel now runs '{}', not '{}'",
                ops.unwrap_or_default(),
                h.ops_name
            ))
        } else {
            None
        };
        match problem {
            Some(why) => Health::Failed(why),
            None => Health::Ok,
        }
    }
}

/// Load a BPF object and attach it through struct_ops; the link lives as
/// long as the returned attachment.
pub fn attach_object(bytes: &[u8]) -> Result<Attachment, Error> {
    let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.into()))?;
    let path = dir.path().join("scheduler.bpf.o");
    std::fs::write(&path, bytes).map_err(|e| Error::Internal(e.into()))?;
    let mut sched = schedcp_scx::load(&path, &[]).map_err(|e| match e {
        schedcp_scx::LoadError::Prepare(e) => Error::Input(format!("preparing the object: {e:#}")),
        schedcp_scx::LoadError::Rejected { error, log } => {
            Error::Input(format!("the kernel refused the object: {error}\n{log}"))
        }
    })?;
    sched
        .attach()
        .map_err(|e| Error::Input(format!("attaching: {e:#}")))?;
    if !sysfs::wait_for_state("enabled", STATE_TIMEOUT) {
        return Err(Error::Input(format!(
            "attached, but sched_ext state is '{}' after {STATE_TIMEOUT:?}",
            sysfs::state().unwrap_or_default()
        )));
    }
    Ok(Attachment::Object(sched))
}

/// Start an external scheduler binary under supervision. The binary is
/// written (0700, by hash) under the state dir, so what runs is exactly
/// what the token was checked against; its output goes to a per-deployment log.
pub fn start_binary(
    cfg: &Config,
    d: &Deployment,
    s: &SchedulerChange,
    bytes: &[u8],
) -> Result<Attachment, Error> {
    let dir = cfg.state_dir().join("deploy");
    let io = |what: &str, e: std::io::Error| Error::Setup(format!("{what}: {e}"));
    // bin/<sha256>/<policy>: by hash, under the name `ps` shows.
    let bin_dir = dir.join("bin").join(&s.object_sha256);
    std::fs::create_dir_all(&bin_dir)
        .and_then(|_| std::fs::create_dir_all(dir.join("logs")))
        .map_err(|e| io(&format!("creating {}", dir.display()), e))?;
    let name = crate::host::safe_file_name(&s.policy);
    let binary = bin_dir.join(if name.is_empty() {
        "scheduler".into()
    } else {
        name
    });
    let intact = std::fs::read(&binary).map(|b| b == bytes).unwrap_or(false);
    if !intact {
        crate::host::fs::atomic_write(&binary, bytes, Some(0o700))
            .map_err(|e| io(&format!("writing {}", binary.display()), e))?;
    }
    let log = dir.join("logs").join(format!("{}.log", d.id));
    let mut process =
        ExternalScheduler::spawn(&binary, &[], &log).map_err(|e| Error::Input(format!("{e:#}")))?;
    process
        .wait_enabled(Duration::from_secs(cfg.deploy.external_start_s))
        .map_err(Error::Input)?;
    Ok(Attachment::Process {
        process,
        binary,
        log,
        restarts: 0,
    })
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
