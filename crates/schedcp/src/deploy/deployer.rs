//! The deploy service's handle: what the daemon, the API and the CLI call.
//! It checks a request completely (admission) before anything changes, then
//! hands it to the controller thread and waits for the verdict. One deploy
//! or rollback at a time; refusals answer at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use schedcp_scx::sysfs;

use super::command::{Command, EventSink, Prepared, Progress};
use super::controller::Controller;
use super::kpi::{Runner, Workload};
use super::record::{self, CanaryPlan, Deployment};
use super::{DeployRequest, Status};
use crate::config::Config;
use crate::error::Error;
use crate::store::Store;

/// The handle the daemon keeps. Cloneable through `Arc`.
pub struct Deployer {
    cfg: Config,
    tx: Mutex<Sender<Command>>,
    busy: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Deployer {
    /// Open the store, reconcile the kernel with it, and start the
    /// controller thread.
    pub fn start(cfg: Config, sink: Option<EventSink>) -> Result<Arc<Deployer>, Error> {
        let store = Store::open_in(&cfg.state_dir())?;
        let (tx, rx) = mpsc::channel();
        let busy = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let cfg = cfg.clone();
            std::thread::Builder::new()
                .name("deploy".into())
                .spawn(move || {
                    let mut c = Controller::new(cfg, store, sink);
                    let _ = ready_tx.send(c.reconcile());
                    c.run(rx);
                })
                .map_err(|e| Error::Internal(e.into()))?
        };
        ready_rx.recv().map_err(|_| {
            Error::Internal(anyhow::anyhow!("the deploy controller died at start"))
        })??;
        Ok(Arc::new(Deployer {
            cfg,
            tx: Mutex::new(tx),
            busy,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Admit and deploy; returns when the canary passed or was rolled back.
    pub fn deploy(&self, req: &DeployRequest, progress: Progress) -> Result<Deployment, Error> {
        let prepared = self.admit(req)?;
        self.execute(prepared, progress)
    }

    /// Every check of a deploy request, before anything changes: canary
    /// length, thresholds, workload, token, object, kernel. Callers that run
    /// the deploy as a job call this first so refusals come back at once.
    pub fn admit(&self, req: &DeployRequest) -> Result<Prepared, Error> {
        let received = Instant::now();
        let d = &self.cfg.deploy;
        let canary_s = req.canary_s.unwrap_or(d.canary_s);
        if !(1..=super::MAX_CANARY_S).contains(&canary_s) {
            return Err(Error::Input(format!(
                "canary must be 1..={} seconds, got {canary_s}",
                super::MAX_CANARY_S
            )));
        }
        let mut thresholds = d.thresholds.clone();
        for k in &req.kpi {
            thresholds.set(k)?;
        }
        let workload_name = req.workload.clone().or_else(|| d.workload.clone());
        let workload = workload_name
            .as_deref()
            .map(|w| resolve_workload(&self.cfg, w))
            .transpose()?;
        let token = req
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        if token.is_none() && req.knobs.is_empty() {
            return Err(Error::Input(
                "a change needs a scheduler (its verifier token), knob assignments, or both".into(),
            ));
        }
        if token.is_none() && req.object_base64.is_some() {
            return Err(Error::Input(
                "an object without a token: give the verifier's token for it".into(),
            ));
        }
        // Knobs first: their checks are cheap and touch nothing.
        let knobs = if req.knobs.is_empty() {
            None
        } else {
            Some(crate::knobs::change::admit(&req.knobs, &|w| {
                workload_binding(&self.cfg, w)
            })?)
        };
        let admitted = token
            .map(|t| super::gate::admit(&self.cfg, t, req.object_base64.as_deref()))
            .transpose()?;
        let plan = CanaryPlan {
            canary_s,
            window_s: d.window_s,
            thresholds,
            workload: workload.as_ref().map(Workload::describe),
        };
        Ok(Prepared {
            admission_ms: received.elapsed().as_secs_f64() * 1e3,
            admitted: admitted.map(Box::new),
            knobs,
            plan,
            workload,
            received,
        })
    }

    /// Run an admitted deploy: baseline, switch, canary, verdict.
    pub fn execute(&self, p: Prepared, progress: Progress) -> Result<Deployment, Error> {
        if self.busy.swap(true, Ordering::SeqCst) {
            return Err(Error::Input(
                "another deploy or rollback is in progress; wait for it (schedcp deploy status)"
                    .into(),
            ));
        }
        let (reply, rx) = mpsc::channel();
        let sent = self.tx.lock().expect("deploy tx").send(Command::Deploy {
            prepared: Box::new(p),
            progress,
            reply,
        });
        self.wait(sent.is_ok(), rx)
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }

    /// Roll the current deployment back to its last known-good — at any
    /// time: a canary in progress is pre-empted through the same rollback
    /// path (its deploy answers "rolled back"), and a deploy still
    /// measuring its baseline is cancelled before it changes anything. The
    /// controller thread runs one command at a time, so nothing races.
    pub fn rollback(&self, reason: &str) -> Result<Deployment, Error> {
        let (reply, rx) = mpsc::channel();
        let sent = self.tx.lock().expect("deploy tx").send(Command::Rollback {
            reason: reason.to_string(),
            reply,
        });
        Self::answer(sent.is_ok(), rx)
    }

    fn wait(
        &self,
        sent: bool,
        rx: Receiver<Result<Deployment, Error>>,
    ) -> Result<Deployment, Error> {
        let out = Self::answer(sent, rx);
        self.busy.store(false, Ordering::SeqCst);
        out
    }

    fn answer(sent: bool, rx: Receiver<Result<Deployment, Error>>) -> Result<Deployment, Error> {
        if sent {
            rx.recv().unwrap_or_else(|_| {
                Err(Error::Internal(anyhow::anyhow!(
                    "the deploy controller stopped before answering"
                )))
            })
        } else {
            Err(Error::Internal(anyhow::anyhow!(
                "the deploy controller is not running"
            )))
        }
    }

    pub fn status(&self) -> Result<Status, Error> {
        status(&self.cfg, self.busy.load(Ordering::SeqCst))
    }

    /// Detach everything and stop the thread (daemon shutdown). The
    /// deployment stays current in the store, so the next start re-attaches it.
    pub fn stop(&self) {
        let _ = self.tx.lock().expect("deploy tx").send(Command::Stop);
        if let Some(h) = self.thread.lock().expect("deploy thread").take() {
            let _ = h.join();
        }
    }
}

/// Status from the store and sysfs (no daemon needed: `schedcp deploy status`).
pub fn status(cfg: &Config, busy: bool) -> Result<Status, Error> {
    let store = Store::open_in(&cfg.state_dir())?;
    let current = record::current(&store)?;
    let last_known_good = current.as_ref().map(|c| match c.previous_id {
        Some(p) => format!("deployment #{p}"),
        None => "the kernel default scheduler".into(),
    });
    Ok(Status {
        sched_ext_state: sysfs::state(),
        kernel_ops: sysfs::root_ops(),
        current,
        last_known_good,
        busy,
    })
}

/// The command line of a workload profile, which per-workload knobs follow.
pub fn workload_binding(cfg: &Config, name: &str) -> Result<crate::knobs::WorkloadBinding, Error> {
    use crate::observe::workload_profiles::{self, Target};
    let store = Store::open_in(&cfg.state_dir())?;
    let p = workload_profiles::get(&store, name).map_err(|_| {
        Error::NotFound(format!(
            "no workload profile '{name}': per-workload knobs follow a profile's processes (`schedcp observe workload add`)"
        ))
    })?;
    match p.target {
        Target::Command { argv, .. } => Ok(crate::knobs::WorkloadBinding {
            name: p.name,
            argv,
        }),
        Target::Lab { .. } => Err(Error::Input(format!(
            "workload profile '{name}' runs a built-in lab workload, which has no processes of its own on this machine to apply knobs to; use a command profile"
        ))),
    }
}

/// A workload name: a registered profile (its target, metric and
/// direction), else a built-in lab workload spec (its primary metric).
pub fn resolve_workload(cfg: &Config, name: &str) -> Result<Workload, Error> {
    use crate::observe::workload_profiles::{self, Target};
    let store = Store::open_in(&cfg.state_dir())?;
    let profile = workload_profiles::get(&store, name).ok();
    let target = match &profile {
        Some(p) => p.target.clone(),
        None => Target::lab(name).map_err(|_| {
            Error::Input(format!(
                "workload '{name}' is neither a workload profile (`schedcp observe workload list`) nor a built-in workload spec (`schedcp lab workloads`)"
            ))
        })?,
    };
    let runner = match target {
        Target::Command {
            argv,
            cwd,
            timeout_s,
        } => Runner::Command {
            argv,
            cwd,
            timeout: Duration::from_secs(timeout_s),
        },
        Target::Lab { workload } => {
            let agent = crate::host::locate_agent(
                cfg.deploy.workload_agent.as_deref(),
                "deploy.workload_agent",
            )?;
            Runner::Lab {
                agent,
                spec: workload,
            }
        }
    };
    Ok(match profile {
        // A command's metric is its wall time whatever the profile's name for it.
        Some(p) => Workload {
            metric: matches!(runner, Runner::Lab { .. }).then_some(p.metric),
            better: Some(p.direction),
            profile: Some(p.name),
            runner,
        },
        None => Workload {
            runner,
            metric: None,
            better: None,
            profile: None,
        },
    })
}
