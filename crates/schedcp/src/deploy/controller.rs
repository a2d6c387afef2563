//! The deploy controller: one thread that owns whatever schedcp has
//! attached, so the struct_ops link lives exactly as long as the daemon.
//!
//! The thread wakes every `health_poll_ms` to check the attached scheduler
//! (sched_ext state, the ops name the kernel shows, the scheduler's own
//! exit record) and to collect KPI windows, which are measured on a helper
//! thread so that health polling never waits for a window. A breach of any
//! kind goes through one path, [`Controller::roll_back`], which puts the
//! deployment's last known-good back (or leaves the kernel default) and
//! records how long that took.
//!
//! The store is written before the kernel is touched: a canary row exists
//! before its scheduler attaches. If the daemon dies, the kernel drops the
//! struct_ops link with the process, and [`Controller::reconcile`] at the
//! next start rolls an interrupted canary back and re-attaches the last
//! known-good.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use schedcp_scx::{sysfs, Artefact};

use super::attachment::{self, Health, Held};
use super::gate::Admitted;
use super::kpi::{self, Kpis, Workload};
use super::learn::{self, Trip};
use super::record::{self, CanaryPlan, DeployState, Deployment, NewDeployment, Timings};
use super::thresholds::{breaches, Breach};
use super::{DeployRequest, Status};
use crate::config::Config;
use crate::error::Error;
use crate::store::Store;

use attachment::STATE_TIMEOUT;

/// Called for every deployment event (the daemon appends them to its
/// audit log).
pub type EventSink = Box<dyn Fn(Option<i64>, &str, &str) + Send>;

/// A message about a deploy in progress, for progress bars and job status.
pub type Progress = Box<dyn Fn(&str) + Send>;

enum Command {
    Deploy {
        admitted: Box<Admitted>,
        plan: CanaryPlan,
        workload: Option<Workload>,
        received: Instant,
        admission_ms: f64,
        progress: Progress,
        reply: Sender<Result<Deployment, Error>>,
    },
    Rollback {
        reason: String,
        reply: Sender<Result<Deployment, Error>>,
    },
    Stop,
}

/// A deploy request that passed admission.
pub struct Prepared {
    pub admitted: Box<Admitted>,
    pub plan: CanaryPlan,
    workload: Option<Workload>,
    received: Instant,
    admission_ms: f64,
}

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
        let store = Store::open(&cfg)?;
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
        let admitted = super::gate::admit(&self.cfg, &req.token, req.object_base64.as_deref())?;
        let plan = CanaryPlan {
            canary_s,
            window_s: d.window_s,
            thresholds,
            workload: workload.as_ref().map(Workload::describe),
        };
        Ok(Prepared {
            admission_ms: received.elapsed().as_secs_f64() * 1e3,
            admitted: Box::new(admitted),
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
            admitted: p.admitted,
            plan: p.plan,
            workload: p.workload,
            received: p.received,
            admission_ms: p.admission_ms,
            progress,
            reply,
        });
        self.wait(sent.is_ok(), rx)
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
    }

    /// Roll the current deployment back to its last known-good.
    pub fn rollback(&self, reason: &str) -> Result<Deployment, Error> {
        if self.busy.swap(true, Ordering::SeqCst) {
            return Err(Error::Input(
                "a deploy is in progress; a rollback now would race it — wait, or let its canary decide"
                    .into(),
            ));
        }
        let (reply, rx) = mpsc::channel();
        let sent = self.tx.lock().expect("deploy tx").send(Command::Rollback {
            reason: reason.to_string(),
            reply,
        });
        self.wait(sent.is_ok(), rx)
    }

    fn wait(
        &self,
        sent: bool,
        rx: Receiver<Result<Deployment, Error>>,
    ) -> Result<Deployment, Error> {
        let out = if sent {
            rx.recv().unwrap_or_else(|_| {
                Err(Error::Internal(anyhow::anyhow!(
                    "the deploy controller stopped before answering"
                )))
            })
        } else {
            Err(Error::Internal(anyhow::anyhow!(
                "the deploy controller is not running"
            )))
        };
        self.busy.store(false, Ordering::SeqCst);
        out
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
    let store = Store::open(cfg)?;
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

/// A workload name: a registered profile, else a built-in lab workload spec.
fn resolve_workload(cfg: &Config, name: &str) -> Result<Workload, Error> {
    use crate::observe::profiles::{self, Target};
    let store = Store::open(cfg)?;
    let target = match profiles::get(&store, name) {
        Ok(p) => p.target,
        Err(_) => Target::lab(name).map_err(|_| {
            Error::Input(format!(
                "workload '{name}' is neither a workload profile (`schedcp observe profile list`) nor a built-in workload spec (`schedcp lab workloads`)"
            ))
        })?,
    };
    Ok(match target {
        Target::Command {
            argv, timeout_s, ..
        } => Workload::Command {
            argv,
            timeout: Duration::from_secs(timeout_s),
        },
        Target::Lab { workload } => {
            let agent = match &cfg.deploy.workload_agent {
                Some(p) => p.clone(),
                None => std::env::current_exe()
                    .map_err(|e| Error::Setup(format!("locating the schedcp binary: {e}")))?
                    .with_file_name("schedcp-guest"),
            };
            if !agent.is_file() {
                return Err(Error::Setup(format!(
                    "built-in workloads need the guest agent binary; {} is missing (set deploy.workload_agent)",
                    agent.display()
                )));
            }
            Workload::Lab {
                agent,
                spec: workload,
            }
        }
    })
}

/// Why a window is being measured.
enum Purpose {
    Baseline,
    Canary,
    Active,
}

struct Measuring {
    purpose: Purpose,
    rx: Receiver<Result<Kpis, Error>>,
}

/// A deploy between request and verdict.
struct InFlight {
    id: Option<i64>,
    admitted: Box<Admitted>,
    plan: CanaryPlan,
    workload: Option<Workload>,
    received: Instant,
    progress: Progress,
    reply: Sender<Result<Deployment, Error>>,
    baseline: Option<Kpis>,
    windows: Vec<Kpis>,
    /// Consecutive canary windows with a KPI breach so far.
    breach_streak: u32,
    timings: Timings,
    canary_until: Option<Instant>,
}

struct Controller {
    cfg: Config,
    store: Store,
    sink: Option<EventSink>,
    held: Option<Held>,
    inflight: Option<InFlight>,
    measuring: Option<Measuring>,
    /// Baseline of the active deployment, for passive checks once active.
    active_baseline: Option<Kpis>,
    /// Consecutive passive windows with a breach while active.
    active_streak: u32,
    next_active_check: Option<Instant>,
}

impl Controller {
    fn new(cfg: Config, store: Store, sink: Option<EventSink>) -> Self {
        Controller {
            cfg,
            store,
            sink,
            held: None,
            inflight: None,
            measuring: None,
            active_baseline: None,
            active_streak: 0,
            next_active_check: None,
        }
    }

    fn event(&mut self, id: Option<i64>, event: &str, detail: &str) {
        tracing::info!(deployment = id, "deploy {event}: {detail}");
        if let Err(e) = record::event(&mut self.store, id, event, detail) {
            tracing::error!("recording deploy event: {e}");
        }
        if let Some(sink) = &self.sink {
            sink(id, event, detail);
        }
    }

    fn transition(
        &mut self,
        id: i64,
        to: DeployState,
        current: Option<i64>,
        event: &str,
        why: &str,
    ) {
        tracing::info!(deployment = id, "deploy {event}: {why}");
        if let Err(e) = record::transition(&mut self.store, id, to, current, event, why) {
            tracing::error!("recording deploy transition: {e}");
        }
        if let Some(sink) = &self.sink {
            sink(Some(id), event, why);
        }
    }

    /// Make the kernel match the store after a (re)start.
    fn reconcile(&mut self) -> Result<(), Error> {
        let current = record::current(&self.store)?;
        if sysfs::state().as_deref() == Some("enabled") {
            let ops = sysfs::root_ops().unwrap_or_default();
            self.event(
                current.as_ref().map(|c| c.id),
                "foreign_scheduler",
                &format!("at start the kernel already runs sched_ext scheduler '{ops}', which schedcp does not hold; leaving it alone and attaching nothing"),
            );
            return Ok(());
        }
        let Some(d) = current else {
            return Ok(());
        };
        match d.state {
            DeployState::Canary => {
                let why = format!(
                    "the daemon stopped during the canary of deployment #{} ({}@{}); its verdict is unknown, so it does not stay",
                    d.id, d.policy, d.version
                );
                self.roll_back(&d, &why, Instant::now(), None);
            }
            DeployState::Active => match self.attach(&d) {
                Ok(()) => {
                    self.event(
                        Some(d.id),
                        "reattached",
                        &format!(
                            "{}@{} re-attached after a daemon restart (it is the last known-good)",
                            d.policy, d.version
                        ),
                    );
                    self.active_baseline = d.baseline.clone();
                    self.active_streak = 0;
                    self.schedule_active_check();
                }
                Err(e) => {
                    let why = format!("could not re-attach after a restart: {e}");
                    self.roll_back(&d, &why, Instant::now(), None);
                }
            },
            _ => {
                // The intent points at an ended deployment: a crash between
                // two writes cannot do this (they share a transaction), so
                // say so and run the default.
                self.event(
                    Some(d.id),
                    "inconsistent",
                    &format!(
                        "node intent points at {} deployment #{}; running the kernel default",
                        d.state.as_str(),
                        d.id
                    ),
                );
            }
        }
        Ok(())
    }

    fn run(&mut self, rx: Receiver<Command>) {
        let poll = Duration::from_millis(self.cfg.deploy.health_poll_ms);
        loop {
            match rx.recv_timeout(poll) {
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    self.shutdown();
                    return;
                }
                Ok(cmd) => self.command(cmd),
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.check_health();
            self.collect_window();
            self.start_window_if_due();
        }
    }

    fn shutdown(&mut self) {
        if let Some(inf) = self.inflight.take() {
            let _ = inf.reply.send(Err(Error::Internal(anyhow::anyhow!(
                "the daemon is stopping"
            ))));
            if let Some(id) = inf.id {
                // Leave it current in canary: the next start rolls it back.
                self.event(
                    Some(id),
                    "interrupted",
                    "the daemon stopped during the canary",
                );
            }
        }
        if let Some(h) = self.held.take() {
            self.event(
                Some(h.deployment_id),
                "detached",
                "the daemon is stopping; the scheduler detaches with it and is re-attached at the next start",
            );
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Deploy {
                admitted,
                plan,
                workload,
                received,
                admission_ms,
                progress,
                reply,
            } => {
                progress(&format!(
                    "admitted {}@{} (object {}…): measuring the baseline",
                    admitted.claims.policy,
                    admitted.claims.version,
                    &admitted.object_sha256[..12]
                ));
                let timings = Timings {
                    admission_ms: Some(admission_ms),
                    ..Default::default()
                };
                self.inflight = Some(InFlight {
                    id: None,
                    admitted,
                    plan,
                    workload,
                    received,
                    progress,
                    reply,
                    baseline: None,
                    windows: Vec::new(),
                    breach_streak: 0,
                    timings,
                    canary_until: None,
                });
                // A passive check in progress measures the old scheduler
                // only; drop it and measure the baseline afresh.
                self.measuring = None;
                self.start_window(Purpose::Baseline);
            }
            Command::Rollback { reason, reply } => {
                let out = match record::current(&self.store) {
                    Ok(Some(d)) => {
                        let t = Instant::now();
                        self.roll_back(&d, &format!("manual rollback: {reason}"), t, None);
                        record::get(&self.store, d.id).and_then(|o| {
                            o.ok_or_else(|| Error::Internal(anyhow::anyhow!("deployment vanished")))
                        })
                    }
                    Ok(None) => Err(Error::Input(
                        "nothing is deployed: the kernel's default scheduler is running".into(),
                    )),
                    Err(e) => Err(e),
                };
                let _ = reply.send(out);
            }
            Command::Stop => {}
        }
    }

    fn start_window(&mut self, purpose: Purpose) {
        let window = Duration::from_secs(self.cfg.deploy.window_s);
        // Active checks are passive: no workload on a production machine.
        let workload = match purpose {
            Purpose::Active => None,
            _ => self.inflight.as_ref().and_then(|i| i.workload.clone()),
        };
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("deploy-kpi".into())
            .spawn(move || {
                let _ = tx.send(kpi::measure(window, workload.as_ref()));
            });
        match spawned {
            Ok(_) => self.measuring = Some(Measuring { purpose, rx }),
            Err(e) => tracing::error!("starting a KPI window: {e}"),
        }
    }

    fn start_window_if_due(&mut self) {
        if self.measuring.is_some() {
            return;
        }
        if let Some(inf) = &self.inflight {
            if inf.id.is_some() {
                self.start_window(Purpose::Canary);
            }
            return;
        }
        if self.held.is_some() && self.next_active_check.is_some_and(|t| Instant::now() >= t) {
            self.start_window(Purpose::Active);
        }
    }

    fn schedule_active_check(&mut self) {
        let every = self.cfg.deploy.active_check_s;
        self.next_active_check = (every > 0).then(|| Instant::now() + Duration::from_secs(every));
    }

    fn collect_window(&mut self) {
        let Some(m) = &self.measuring else { return };
        let result = match m.rx.try_recv() {
            Ok(r) => r,
            Err(mpsc::TryRecvError::Empty) => return,
            Err(mpsc::TryRecvError::Disconnected) => Err(Error::Internal(anyhow::anyhow!(
                "the KPI window thread died"
            ))),
        };
        let Some(m) = self.measuring.take() else {
            return;
        };
        match m.purpose {
            Purpose::Baseline => self.after_baseline(result),
            Purpose::Canary => self.after_canary_window(result),
            Purpose::Active => self.after_active_window(result),
        }
    }

    fn after_baseline(&mut self, result: Result<Kpis, Error>) {
        let Some(mut inf) = self.inflight.take() else {
            return;
        };
        let baseline = match result {
            Ok(k) => k,
            Err(e) => {
                let _ = inf.reply.send(Err(Error::Internal(anyhow::anyhow!(
                    "measuring the baseline failed, nothing was changed: {e}"
                ))));
                return;
            }
        };
        inf.timings.baseline_ms = Some(baseline.window_s * 1e3);
        let previous = record::current(&self.store)
            .ok()
            .flatten()
            .filter(|d| d.state == DeployState::Active);
        let a = &inf.admitted;
        let new = NewDeployment {
            policy: &a.claims.policy,
            version: a.claims.version,
            ops_name: &a.claims.ops_name,
            object: &a.object,
            token_jti: &a.claims.jti,
            kernel_release: &a.kernel_release,
            previous_id: previous.as_ref().map(|p| p.id),
            plan: &inf.plan,
            baseline: Some(&baseline),
        };
        let id = match record::insert_canary(&mut self.store, &new) {
            Ok(id) => id,
            Err(e) => {
                let _ = inf.reply.send(Err(e));
                return;
            }
        };
        if let Some(sink) = &self.sink {
            sink(
                Some(id),
                "canary_started",
                &format!("{}@{}", a.claims.policy, a.claims.version),
            );
        }
        inf.id = Some(id);
        inf.baseline = Some(baseline);
        // The switch: the previous scheduler goes, the candidate comes.
        let t = Instant::now();
        self.held = None;
        let attached = record::get(&self.store, id)
            .and_then(|d| d.ok_or_else(|| Error::Internal(anyhow::anyhow!("deployment vanished"))))
            .and_then(|d| self.attach(&d).map(|_| d));
        inf.timings.switch_ms = Some(t.elapsed().as_secs_f64() * 1e3);
        inf.timings.request_to_attached_ms = Some(inf.received.elapsed().as_secs_f64() * 1e3);
        match attached {
            Ok(_) => {
                (inf.progress)(&format!(
                    "attached in {:.0} ms; canary for {} s",
                    inf.timings.switch_ms.unwrap_or(0.0),
                    inf.plan.canary_s
                ));
                inf.canary_until = Some(Instant::now() + Duration::from_secs(inf.plan.canary_s));
                self.inflight = Some(inf);
            }
            Err(e) => {
                let d = record::get(&self.store, id).ok().flatten();
                self.inflight = Some(inf);
                if let Some(d) = d {
                    self.roll_back(
                        &d,
                        &format!("attach failed: {e}"),
                        Instant::now(),
                        Some(Trip::Health),
                    );
                }
            }
        }
    }

    fn after_canary_window(&mut self, result: Result<Kpis, Error>) {
        let Some(inf) = self.inflight.as_mut() else {
            return;
        };
        let Some(id) = inf.id else { return };
        let window = match result {
            Ok(k) => k,
            Err(e) => {
                // A window that cannot be measured is not evidence of health.
                let why = format!("a canary KPI window failed: {e}");
                if let Ok(Some(d)) = record::get(&self.store, id) {
                    self.roll_back(&d, &why, Instant::now(), Some(Trip::Health));
                }
                return;
            }
        };
        let detected = Instant::now();
        let found = breaches(
            &inf.plan.thresholds,
            inf.baseline.as_ref().unwrap_or(&Kpis::default()),
            &window,
        );
        inf.windows.push(window);
        let n = inf.windows.len();
        let _ = record::save_measurements(&mut self.store, id, &inf.windows, &inf.timings);
        if !found.is_empty() {
            inf.breach_streak += 1;
            let needed = inf.plan.thresholds.consecutive_windows;
            let what = found
                .iter()
                .map(Breach::describe)
                .collect::<Vec<_>>()
                .join("; ");
            if inf.breach_streak < needed {
                // Not yet a verdict: the canary runs on (past its end if
                // need be) until the streak trips or a clean window ends it.
                let note = format!(
                    "canary window {n}: {what} ({} of {needed} consecutive windows to trip)",
                    inf.breach_streak
                );
                (inf.progress)(&note);
                self.event(Some(id), "kpi_warning", &note);
                return;
            }
            let why = format!(
                "KPI breach in {needed} consecutive canary windows (last: window {n}): {what}"
            );
            if let Ok(Some(d)) = record::get(&self.store, id) {
                self.roll_back(&d, &why, detected, Some(Trip::Kpi(found)));
            }
            return;
        }
        inf.breach_streak = 0;
        (inf.progress)(&format!(
            "canary window {n}: every KPI within its threshold"
        ));
        if inf.canary_until.is_some_and(|t| Instant::now() >= t) {
            self.promote(id);
        }
    }

    fn after_active_window(&mut self, result: Result<Kpis, Error>) {
        self.schedule_active_check();
        let (Ok(window), Some(base), Some(h)) = (result, self.active_baseline.clone(), &self.held)
        else {
            return;
        };
        let id = h.deployment_id;
        let mut t = record::get(&self.store, id)
            .ok()
            .flatten()
            .map(|d| d.plan.thresholds)
            .unwrap_or_default();
        // Passive windows run no workload: only the passive KPIs compare.
        t.workload_regression_pct = f64::INFINITY;
        let found = breaches(&t, &base, &window);
        if found.is_empty() {
            self.active_streak = 0;
            return;
        }
        self.active_streak += 1;
        if self.active_streak < t.consecutive_windows {
            let note = format!(
                "passive window while active: {} ({} of {} consecutive windows to trip)",
                found
                    .iter()
                    .map(Breach::describe)
                    .collect::<Vec<_>>()
                    .join("; "),
                self.active_streak,
                t.consecutive_windows
            );
            self.event(Some(id), "kpi_warning", &note);
            return;
        }
        self.active_streak = 0;
        let why = format!(
            "KPI breach in {} consecutive windows while active: {}",
            t.consecutive_windows,
            found
                .iter()
                .map(Breach::describe)
                .collect::<Vec<_>>()
                .join("; ")
        );
        if let Ok(Some(d)) = record::get(&self.store, id) {
            self.roll_back(&d, &why, Instant::now(), Some(Trip::Kpi(found)));
        }
    }

    /// The canary passed: the deployment becomes active, its predecessor superseded.
    fn promote(&mut self, id: i64) {
        let Some(mut inf) = self.inflight.take() else {
            return;
        };
        inf.timings.request_to_active_ms = Some(inf.received.elapsed().as_secs_f64() * 1e3);
        let _ = record::save_measurements(&mut self.store, id, &inf.windows, &inf.timings);
        let d = record::get(&self.store, id).ok().flatten();
        if let Some(prev) = d.as_ref().and_then(|d| d.previous_id) {
            self.transition(
                prev,
                DeployState::Superseded,
                Some(id),
                "superseded",
                &format!("deployment #{id} passed its canary"),
            );
        }
        self.transition(
            id,
            DeployState::Active,
            Some(id),
            "active",
            &format!(
                "canary passed: {} windows, every KPI within its threshold",
                inf.windows.len()
            ),
        );
        self.active_baseline = inf.baseline.clone();
        self.active_streak = 0;
        self.schedule_active_check();
        if let Some(d) = &d {
            self.record_policy_result(d, &inf, None);
        }
        (inf.progress)("canary passed: active");
        let out = record::get(&self.store, id)
            .and_then(|o| o.ok_or_else(|| Error::Internal(anyhow::anyhow!("deployment vanished"))));
        let _ = inf.reply.send(out);
    }

    /// Health of what we hold: still enabled, still ours, no exit record,
    /// its process (if any) alive or restarted within the bound.
    fn check_health(&mut self) {
        let in_canary = self.inflight.is_some();
        let Some(h) = &mut self.held else { return };
        let detected = Instant::now();
        match h.check(&self.cfg.deploy, in_canary) {
            Health::Ok => {}
            Health::Restarted(what) => {
                let id = h.deployment_id;
                self.event(Some(id), "restarted", &what);
            }
            Health::Failed(why) => {
                let id = h.deployment_id;
                if let Ok(Some(d)) = record::get(&self.store, id) {
                    self.roll_back(&d, &why, detected, Some(Trip::Health));
                }
            }
        }
    }

    /// Load `d`'s object and attach it (or start its scheduler binary); on
    /// success we hold it.
    fn attach(&mut self, d: &Deployment) -> Result<(), Error> {
        let bytes = record::object(&self.store, &d.object_sha256)?;
        let attachment = if Artefact::of(&bytes) == Some(Artefact::Executable) {
            attachment::start_binary(&self.cfg, d, &bytes)?
        } else {
            attachment::attach_object(&bytes)?
        };
        self.held = Some(Held {
            deployment_id: d.id,
            ops_name: sysfs::root_ops().unwrap_or_else(|| d.ops_name.clone()),
            attachment,
        });
        Ok(())
    }

    /// The one rollback path: detach `d`, restore its last known-good (or
    /// the default), record everything, answer a waiting deploy.
    fn roll_back(&mut self, d: &Deployment, why: &str, detected: Instant, trip: Option<Trip>) {
        self.measuring = None;
        // Detach by dropping the link; wait for the kernel to let go.
        if let Some(h) = self.held.take() {
            drop(h);
            sysfs::wait_for_state("disabled", STATE_TIMEOUT);
        }
        let mut restored = None;
        if let Some(prev_id) = d.previous_id {
            match record::get(&self.store, prev_id) {
                Ok(Some(prev)) => match self.attach(&prev) {
                    Ok(()) => restored = Some(prev),
                    Err(e) => self.event(
                        Some(prev_id),
                        "restore_failed",
                        &format!("could not re-attach the last known-good: {e}; running the kernel default"),
                    ),
                },
                _ => self.event(Some(prev_id), "restore_failed", "last known-good missing from the store"),
            }
        }
        let elapsed_ms = detected.elapsed().as_secs_f64() * 1e3;
        let target = restored.as_ref().map(|p| p.id);
        let to = match &restored {
            Some(p) => format!("deployment #{} ({}@{})", p.id, p.policy, p.version),
            None => "the kernel default scheduler".into(),
        };
        self.transition(
            d.id,
            DeployState::RolledBack,
            target,
            "rolled_back",
            &format!("{why}; rolled back to {to} in {elapsed_ms:.0} ms"),
        );
        if let Some(p) = &restored {
            if p.state != DeployState::Active {
                self.transition(
                    p.id,
                    DeployState::Active,
                    Some(p.id),
                    "restored",
                    &format!("restored by the rollback of deployment #{}", d.id),
                );
            }
            self.active_baseline = p.baseline.clone();
            self.active_streak = 0;
            self.schedule_active_check();
        } else {
            self.next_active_check = None;
        }
        // Timings and the reply belong to the in-flight deploy if this was it.
        let inflight = self
            .inflight
            .take_if(|i| i.id == Some(d.id) || i.id.is_none());
        let mut timings = inflight
            .as_ref()
            .map(|i| i.timings.clone())
            .unwrap_or_else(|| d.timings.clone());
        timings.breach_to_rollback_ms = Some(elapsed_ms);
        let windows = inflight
            .as_ref()
            .map(|i| i.windows.clone())
            .unwrap_or_else(|| d.windows.clone());
        let _ = record::save_measurements(&mut self.store, d.id, &windows, &timings);
        if let Some(inf) = &inflight {
            (inf.progress)(&format!("rolled back to {to}: {why}"));
        }
        if trip.is_some() {
            let fresh = record::get(&self.store, d.id)
                .ok()
                .flatten()
                .unwrap_or_else(|| d.clone());
            match &inflight {
                Some(inf) => self.record_policy_result(&fresh, inf, trip.as_ref()),
                None => self.record_trip_result(&fresh, trip.as_ref()),
            }
        }
        if let Some(inf) = inflight {
            let out = record::get(&self.store, d.id).and_then(|o| {
                o.ok_or_else(|| Error::Internal(anyhow::anyhow!("deployment vanished")))
            });
            let _ = inf.reply.send(out);
        }
    }

    /// Into the policy repository: the canary's evidence, or the trip.
    fn record_policy_result(&mut self, d: &Deployment, inf: &InFlight, trip: Option<&Trip>) {
        let res = match trip {
            Some(_) => learn::trip_result(d, trip),
            None => learn::canary_result(d, inf.baseline.as_ref(), &inf.windows),
        };
        learn::record(&self.cfg, d, res, trip.is_none());
    }

    fn record_trip_result(&mut self, d: &Deployment, trip: Option<&Trip>) {
        learn::record(&self.cfg, d, learn::trip_result(d, trip), false);
    }
}
