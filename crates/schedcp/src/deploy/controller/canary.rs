//! The canary, as the controller thread runs it: a baseline window before
//! the switch, KPI windows after it (each measured on a helper thread, so
//! health polling never waits), the breach streak that trips the breaker,
//! promotion when the canary ends clean, and passive windows once active.

use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use super::Controller;
use crate::deploy::command::Progress;
use crate::deploy::gate::Admitted;
use crate::deploy::kpi::{self, Kpis, Workload};
use crate::deploy::learn::Trip;
use crate::deploy::record::{
    self, CanaryPlan, DeployState, Deployment, NewDeployment, NewScheduler, Timings,
};
use crate::deploy::thresholds::{breaches, Breach};
use crate::error::Error;
use crate::knobs::Applied;

/// Why a window is being measured.
pub(in crate::deploy) enum Purpose {
    Baseline,
    Canary,
    Active,
}

pub(in crate::deploy) struct Measuring {
    pub(in crate::deploy) purpose: Purpose,
    pub(in crate::deploy) rx: Receiver<Result<Kpis, Error>>,
}

/// A deploy between request and verdict.
pub(in crate::deploy) struct InFlight {
    pub(in crate::deploy) id: Option<i64>,
    pub(in crate::deploy) admitted: Option<Box<Admitted>>,
    pub(in crate::deploy) knobs: Option<crate::knobs::Plan>,
    pub(in crate::deploy) plan: CanaryPlan,
    pub(in crate::deploy) workload: Option<Workload>,
    pub(in crate::deploy) received: Instant,
    pub(in crate::deploy) progress: Progress,
    pub(in crate::deploy) reply: Sender<Result<Deployment, Error>>,
    pub(in crate::deploy) baseline: Option<Kpis>,
    pub(in crate::deploy) windows: Vec<Kpis>,
    /// Consecutive canary windows with a KPI breach so far.
    pub(in crate::deploy) breach_streak: u32,
    pub(in crate::deploy) timings: Timings,
    pub(in crate::deploy) canary_until: Option<Instant>,
    /// What the change is, for messages.
    pub(in crate::deploy) label: String,
}

impl Controller {
    pub(in crate::deploy) fn start_window(&mut self, purpose: Purpose) {
        let window = Duration::from_secs(self.cfg.deploy.window_s);
        // Active checks are passive: no workload on a production machine.
        let workload = match purpose {
            Purpose::Active => None,
            _ => self.inflight.as_ref().and_then(|i| i.workload.clone()),
        };
        // A workload whose processes a change set in force manages starts
        // under it, as its own processes on this machine would.
        let hook = workload
            .as_ref()
            .and_then(|w| w.profile.clone())
            .and_then(|p| self.spawn_hook(&p));
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("deploy-kpi".into())
            .spawn(move || {
                let _ = tx.send(kpi::measure_with(window, workload.as_ref(), hook.as_ref()));
            });
        match spawned {
            Ok(_) => self.measuring = Some(Measuring { purpose, rx }),
            Err(e) => tracing::error!("starting a KPI window: {e}"),
        }
    }

    pub(in crate::deploy) fn start_window_if_due(&mut self) {
        if self.measuring.is_some() {
            return;
        }
        if let Some(inf) = &self.inflight {
            let (attached, since) = (inf.id.is_some(), inf.received);
            if attached {
                self.start_window(Purpose::Canary);
            } else if inf.baseline.is_none() && self.curation_settled(since) {
                self.start_window(Purpose::Baseline);
            }
            return;
        }
        if self.held.is_some() && self.next_active_check.is_some_and(|t| Instant::now() >= t) {
            self.start_window(Purpose::Active);
        }
    }

    pub(in crate::deploy) fn schedule_active_check(&mut self) {
        let every = self.cfg.deploy.active_check_s;
        self.next_active_check = (every > 0).then(|| Instant::now() + Duration::from_secs(every));
    }

    pub(in crate::deploy) fn collect_window(&mut self) {
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
        let kernel_release = crate::host::kernel_release();
        let planned = inf.knobs.clone().map(|plan| Applied {
            plan,
            ..Default::default()
        });
        let new = NewDeployment {
            scheduler: inf.admitted.as_ref().map(|a| NewScheduler {
                policy: &a.claims.policy,
                version: a.claims.version,
                ops_name: &a.claims.ops_name,
                object: &a.object,
                token_jti: &a.claims.jti,
                token: &a.token,
            }),
            knobs: planned.as_ref(),
            kernel_release: &kernel_release,
            previous_id: previous.as_ref().map(|p| p.id),
            plan: &inf.plan,
            baseline: Some(&baseline),
        };
        let label = inf.label.clone();
        let id = match record::insert_canary(&mut self.store, &new) {
            Ok(id) => id,
            Err(e) => {
                let _ = inf.reply.send(Err(e));
                return;
            }
        };
        if let Some(sink) = &self.sink {
            sink(Some(id), "canary_started", &label);
        }
        inf.id = Some(id);
        inf.baseline = Some(baseline);
        // The switch: knobs first (each written, read back, undone on
        // failure), then the previous scheduler goes and the candidate comes.
        let t = Instant::now();
        let knobs = match inf.knobs.clone() {
            Some(plan) => {
                let store = &mut self.store;
                let mut persist = |a: &Applied| record::save_knobs(store, id, a);
                Applied::apply(plan, &mut persist).map(|_| ())
            }
            None => Ok(()),
        };
        let attached = knobs.and_then(|()| {
            if inf.admitted.is_none() {
                return Ok(());
            }
            self.held = None;
            record::get(&self.store, id)
                .and_then(|d| {
                    d.ok_or_else(|| Error::Internal(anyhow::anyhow!("deployment vanished")))
                })
                .and_then(|d| self.attach(&d))
        });
        inf.timings.switch_ms = Some(t.elapsed().as_secs_f64() * 1e3);
        inf.timings.request_to_attached_ms = Some(inf.received.elapsed().as_secs_f64() * 1e3);
        match attached {
            Ok(_) => {
                (inf.progress)(&format!(
                    "{label} in force after {:.0} ms; canary for {} s",
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
                        &format!("applying the change failed: {e}"),
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
}
