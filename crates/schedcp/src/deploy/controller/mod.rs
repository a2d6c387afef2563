//! The deploy controller: one thread that owns whatever schedcp has
//! attached, so the struct_ops link lives exactly as long as the daemon.
//!
//! The thread wakes every `health_poll_ms` to check the attached scheduler
//! (sched_ext state, the ops name the kernel shows, the scheduler's own
//! exit record) and to collect KPI windows, which are measured on a helper
//! thread so that health polling never waits for one (the canary's steps
//! are in `canary.rs`). A breach of any kind goes through one path,
//! [`Controller::roll_back`], which puts the deployment's last known-good
//! back (or leaves the kernel default) and records how long that took.
//!
//! The store is written before the kernel is touched: a canary row exists
//! before its scheduler attaches. If the daemon dies, the kernel drops the
//! struct_ops link with the process, and [`Controller::reconcile`] at the
//! next start rolls an interrupted canary back and re-attaches the last
//! known-good.

mod canary;
mod knobs;

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use schedcp_scx::{sysfs, Artefact};

use super::attachment::{self, Health, Held};
use super::command::{Command, EventSink, Prepared};
use super::gate;
use super::kpi::Kpis;
use super::learn::{self, Trip};
use super::record::{self, DeployState, Deployment, Timings};
use crate::config::Config;
use crate::error::Error;
use crate::store::Store;

use attachment::STATE_TIMEOUT;
use canary::{InFlight, Measuring};

pub(in crate::deploy) struct Controller {
    pub(in crate::deploy) cfg: Config,
    pub(in crate::deploy) store: Store,
    pub(in crate::deploy) sink: Option<EventSink>,
    pub(in crate::deploy) held: Option<Held>,
    pub(in crate::deploy) inflight: Option<InFlight>,
    pub(in crate::deploy) measuring: Option<Measuring>,
    /// Baseline of the active deployment, for passive checks once active.
    pub(in crate::deploy) active_baseline: Option<Kpis>,
    /// Consecutive passive windows with a breach while active.
    pub(in crate::deploy) active_streak: u32,
    pub(in crate::deploy) next_active_check: Option<Instant>,
    /// Curation threads still recording results ([`learn::record`]).
    pub(in crate::deploy) curation: Vec<std::thread::JoinHandle<()>>,
    /// When managed knobs are next checked for an operator's hand and
    /// workloads swept for new processes.
    pub(in crate::deploy) next_knob_check: Instant,
}

/// The longest a new deployment's baseline waits for curation work.
const CURATION_WAIT: Duration = Duration::from_secs(120);

impl Controller {
    pub(in crate::deploy) fn new(cfg: Config, store: Store, sink: Option<EventSink>) -> Self {
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
            curation: Vec::new(),
            next_knob_check: Instant::now(),
        }
    }

    pub(in crate::deploy) fn event(&mut self, id: Option<i64>, event: &str, detail: &str) {
        tracing::info!(deployment = id, "deploy {event}: {detail}");
        if let Err(e) = record::event(&mut self.store, id, event, detail) {
            tracing::error!("recording deploy event: {e}");
        }
        if let Some(sink) = &self.sink {
            sink(id, event, detail);
        }
    }

    pub(in crate::deploy) fn transition(
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

    /// Make the kernel match the store after a (re)start: trials whose
    /// owner died are restored, an interrupted canary is rolled back (its
    /// knobs restored, the last known-good scheduler re-attached), and the
    /// changes in force are checked: knobs lost to a reboot are written
    /// again, knobs an operator changed meanwhile are released.
    pub(in crate::deploy) fn reconcile(&mut self) -> Result<(), Error> {
        for r in crate::knobs::journal::recover(&mut self.store)? {
            self.event(
                None,
                "trial_restored",
                &format!(
                    "knob journal #{} ({}: {}): {}",
                    r.id, r.purpose, r.knobs, r.outcome
                ),
            );
        }
        let current = record::current(&self.store)?;
        let foreign = sysfs::state().as_deref() == Some("enabled");
        if foreign {
            let ops = sysfs::root_ops().unwrap_or_default();
            self.event(
                current.as_ref().map(|c| c.id),
                "foreign_scheduler",
                &format!("at start the kernel already runs sched_ext scheduler '{ops}', which schedcp does not hold; leaving it alone and attaching nothing"),
            );
        }
        let Some(d) = current else {
            return Ok(());
        };
        match d.state {
            DeployState::Canary => {
                let why = format!(
                    "the daemon stopped during the canary of deployment #{} ({}); its verdict is unknown, so it does not stay",
                    d.id,
                    d.label()
                );
                self.roll_back(&d, &why, Instant::now(), None);
            }
            DeployState::Active => {
                self.reconcile_knobs();
                let source = self.scheduler_source(Some(d.id));
                let attached = match (&source, foreign) {
                    (Some(s), false) => self.reattach(s).map(|()| Some(s.label())),
                    _ => Ok(None),
                };
                match attached {
                    Ok(what) => {
                        if let Some(what) = what {
                            self.event(
                                Some(d.id),
                                "reattached",
                                &format!("{what} re-attached after a daemon restart (it is the last known-good)"),
                            );
                        }
                        self.active_baseline = d.baseline.clone();
                        self.active_streak = 0;
                        self.schedule_active_check();
                    }
                    Err(e) => {
                        let why = format!("could not re-attach after a restart: {e}");
                        self.roll_back(&d, &why, Instant::now(), None);
                    }
                }
            }
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

    /// The deployment whose scheduler runs when `from` is in force: `from`
    /// itself if it attached one, else the nearest predecessor still in
    /// force that did (a knob-only change keeps the scheduler it found).
    pub(in crate::deploy) fn scheduler_source(&self, from: Option<i64>) -> Option<Deployment> {
        let mut next = from;
        for _ in 0..1000 {
            let d = record::get(&self.store, next?).ok().flatten()?;
            if d.scheduler.is_some() {
                return Some(d);
            }
            next = d.previous_id;
        }
        None
    }

    pub(in crate::deploy) fn run(&mut self, rx: Receiver<Command>) {
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
            self.check_knobs();
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
                prepared,
                progress,
                reply,
            } => {
                let label = prepared.label();
                let Prepared {
                    admitted,
                    knobs,
                    plan,
                    workload,
                    received,
                    admission_ms,
                } = *prepared;
                progress(&format!("admitted {label}: measuring the baseline"));
                let timings = Timings {
                    admission_ms: Some(admission_ms),
                    ..Default::default()
                };
                self.inflight = Some(InFlight {
                    id: None,
                    admitted,
                    knobs,
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
                    label,
                });
                // A passive check in progress measures the old scheduler
                // only; drop it. The baseline starts from the poll loop
                // once the daemon's own curation work is done.
                self.measuring = None;
                self.start_window_if_due();
            }
            Command::Rollback { reason, reply } => {
                let why = format!("manual rollback: {reason}");
                // A deploy still measuring its baseline has changed nothing:
                // stop it. One in its canary is the current deployment, and
                // the one rollback path below ends it and answers it.
                if self.inflight.as_ref().is_some_and(|i| i.id.is_none()) {
                    let inf = self.inflight.take().expect("checked above");
                    self.measuring = None;
                    let note = format!("{} cancelled before anything changed: {why}", inf.label);
                    (inf.progress)(&note);
                    let _ = inf.reply.send(Err(Error::Input(note.clone())));
                    self.event(None, "cancelled", &note);
                }
                let out = match record::current(&self.store) {
                    Ok(Some(d)) => {
                        let t = Instant::now();
                        self.roll_back(&d, &why, t, None);
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
                // Every change in force down to the one that attached the
                // failing scheduler goes: a knob change on top of it does
                // not make it healthy.
                let holder = h.deployment_id;
                for _ in 0..1000 {
                    let Ok(Some(d)) = record::current(&self.store) else {
                        break;
                    };
                    let last = d.id == holder || d.scheduler.is_some();
                    self.roll_back(&d, &why, detected, Some(Trip::Health));
                    if last {
                        break;
                    }
                }
            }
        }
    }

    /// Load `d`'s object and attach it (or start its scheduler binary); on
    /// success we hold it.
    pub(in crate::deploy) fn attach(&mut self, d: &Deployment) -> Result<(), Error> {
        let Some(s) = &d.scheduler else {
            return Ok(());
        };
        let bytes = record::object(&self.store, &s.object_sha256)?;
        let attachment = if Artefact::of(&bytes) == Some(Artefact::Executable) {
            attachment::start_binary(&self.cfg, d, s, &bytes)?
        } else {
            attachment::attach_object(&bytes)?
        };
        self.held = Some(Held {
            deployment_id: d.id,
            ops_name: sysfs::root_ops().unwrap_or_else(|| s.ops_name.clone()),
            attachment,
        });
        Ok(())
    }

    /// Put a scheduler that was admitted once back on without a canary (a
    /// restart, a reboot, a rollback to the last known-good): only if
    /// admission would take it now ([`gate::readmit`]); otherwise the
    /// caller leaves the kernel default running and records why.
    pub(in crate::deploy) fn reattach(&mut self, d: &Deployment) -> Result<(), Error> {
        if let Some(s) = &d.scheduler {
            let token = record::token(&self.store, d.id)?;
            gate::readmit(
                &self.cfg,
                &d.kernel_release,
                &s.object_sha256,
                token.as_deref(),
            )?;
        }
        self.attach(d)
    }

    /// The one rollback path: detach `d`, restore its last known-good (or
    /// the default), record everything, answer a waiting deploy.
    pub(in crate::deploy) fn roll_back(
        &mut self,
        d: &Deployment,
        why: &str,
        detected: Instant,
        trip: Option<Trip>,
    ) {
        self.measuring = None;
        // The knobs first: the snapshot as last persisted (with what the
        // sweeps added and without what an operator took over).
        let stored = record::get(&self.store, d.id).ok().flatten();
        let knobs_note = match stored.as_ref().and_then(|f| f.knobs.as_ref()) {
            Some(k) => match k.restore() {
                Ok(()) => format!("; knobs restored ({})", k.plan.describe()),
                Err(e) => {
                    self.event(Some(d.id), "restore_failed", &e.to_string());
                    format!("; restoring knobs failed: {e}")
                }
            },
            None => String::new(),
        };
        let previous = d
            .previous_id
            .and_then(|p| record::get(&self.store, p).ok().flatten());
        if d.previous_id.is_some() && previous.is_none() {
            self.event(
                d.previous_id,
                "restore_failed",
                "last known-good missing from the store",
            );
        }
        // The scheduler only if this change attached one: detach by
        // dropping the link, wait for the kernel to let go, then re-attach
        // the scheduler the last known-good ran.
        let mut sched_note = String::new();
        if d.scheduler.is_some() {
            if let Some(h) = self.held.take() {
                drop(h);
                sysfs::wait_for_state("disabled", STATE_TIMEOUT);
            }
            match self.scheduler_source(d.previous_id) {
                Some(src) => match self.reattach(&src) {
                    Ok(()) => sched_note = format!("; scheduler {} re-attached", src.label()),
                    Err(e) => {
                        self.event(
                            Some(src.id),
                            "restore_failed",
                            &format!("could not re-attach the last known-good scheduler: {e}; running the kernel default"),
                        );
                        sched_note = "; the kernel default scheduler runs".into();
                    }
                },
                None => sched_note = "; the kernel default scheduler runs".into(),
            }
        }
        let restored = previous;
        let elapsed_ms = detected.elapsed().as_secs_f64() * 1e3;
        let target = restored.as_ref().map(|p| p.id);
        let to = match &restored {
            Some(p) => format!(
                "deployment #{} ({}){sched_note}{knobs_note}",
                p.id,
                p.label()
            ),
            None => format!("the kernel defaults{sched_note}{knobs_note}"),
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
    pub(in crate::deploy) fn record_policy_result(
        &mut self,
        d: &Deployment,
        inf: &InFlight,
        trip: Option<&Trip>,
    ) {
        let res = match trip {
            Some(_) => learn::trip_result(d, trip),
            None => {
                let ab = learn::canary_summary(d, inf.baseline.as_ref(), &inf.windows);
                self.event(Some(d.id), "canary_summary", &ab.headline());
                learn::canary_result(d, &ab)
            }
        };
        self.curation
            .extend(learn::record(&self.cfg, d, res, trip.is_none()));
    }

    fn record_trip_result(&mut self, d: &Deployment, trip: Option<&Trip>) {
        self.curation.extend(learn::record(
            &self.cfg,
            d,
            learn::trip_result(d, trip),
            false,
        ));
    }

    /// Whether the daemon's own curation work (recording results) is done,
    /// or has had [`CURATION_WAIT`] since `since`: a baseline measured
    /// while it runs would measure schedcp, not the machine.
    pub(in crate::deploy) fn curation_settled(&mut self, since: Instant) -> bool {
        self.curation.retain(|h| !h.is_finished());
        self.curation.is_empty() || since.elapsed() >= CURATION_WAIT
    }
}
