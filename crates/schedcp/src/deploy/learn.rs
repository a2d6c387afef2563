//! What curation learns from a deployment: a passed canary's measurements
//! and a tripped breaker become results in the policy repository
//! (`source = deploy`), and a pass moves the version to `deployed`.

use schedcp_proto::workload::Better;

use super::kpi::Kpis;
use super::record::{self, Deployment};
use super::thresholds::Breach;
use crate::compare::{AbReport, Arm, Criteria, Metric, Setting};
use crate::config::Config;
use crate::error::Error;
use crate::policies::model::{Direction, NewResult, PolicyRef, ResultSource, ResultVerdict, State};
use crate::policies::Library;
use crate::store::Store;

/// What tripped the breaker.
pub(super) enum Trip {
    Kpi(Vec<Breach>),
    Health,
}

/// A passed canary as a result, judged by the one comparison engine: the
/// workload metric (or run-queue p99) of every canary window against the
/// baseline window. One baseline window can never make a change
/// significant, so a canary's result is evidence for search (its p-value
/// and change recorded), never a verdict: a canary guards, it does not
/// prove.
pub(super) fn canary_result(d: &Deployment, ab: &AbReport) -> NewResult {
    let lower = ab.metric.direction == Better::Lower;
    NewResult {
        signature: None,
        // Result workloads are identifiers; the description says which load ran.
        workload: "deploy_canary".into(),
        workload_description: format!(
            "canary of {} on {} under {}",
            d.label(),
            d.kernel_release,
            ab.subject
        ),
        metric: ab.metric.name.clone(),
        unit: ab.metric.unit.clone(),
        direction: direction(lower),
        value: ab
            .candidate
            .summary
            .as_ref()
            .map_or(ab.baseline.values.first().copied().unwrap_or(0.0), |s| {
                s.median
            }),
        baseline: ab.baseline.values.first().copied(),
        improvement_pct: Some(ab.improvement_pct.unwrap_or(0.0)),
        p_value: ab.comparison.p_value,
        significant: false,
        verdict: ResultVerdict::NoChange,
        source: ResultSource::Deploy,
        environment: format!("deploy canary on {}", d.kernel_release),
    }
}

/// The canary as an A/B: the baseline window against the canary windows.
pub(super) fn canary_summary(d: &Deployment, base: Option<&Kpis>, windows: &[Kpis]) -> AbReport {
    let workload = base.and_then(|b| b.workload.clone());
    let (metric, what, b, c): (Metric, String, Vec<f64>, Vec<f64>) = match workload {
        Some(w) if windows.iter().any(|x| x.workload.is_some()) => (
            Metric {
                name: w.metric.clone(),
                unit: w.unit.clone(),
                direction: if w.better == "higher" {
                    Better::Higher
                } else {
                    Better::Lower
                },
            },
            w.what.clone(),
            vec![w.value],
            windows
                .iter()
                .filter_map(|x| x.workload.as_ref().map(|v| v.value))
                .collect(),
        ),
        _ => (
            Metric {
                name: "runq_p99".into(),
                unit: "us".into(),
                direction: Better::Lower,
            },
            "this machine's own load".into(),
            base.and_then(|b| b.runq_p99_us).into_iter().collect(),
            windows.iter().filter_map(|w| w.runq_p99_us).collect(),
        ),
    };
    AbReport::new(
        what,
        metric,
        Arm::new("before (baseline window)", b, vec![]),
        Arm::new(format!("{} (canary windows)", d.label()), c, vec![]),
        Vec::new(),
        Setting::host("baseline window, then canary windows (not interleaved)"),
        Criteria::default(),
    )
}

/// A tripped breaker as a result: the first breached KPI, or a failure count.
pub(super) fn trip_result(d: &Deployment, trip: Option<&Trip>) -> NewResult {
    let (metric, unit, lower, value, baseline) = match trip {
        Some(Trip::Kpi(b)) if !b.is_empty() => {
            let b = &b[0];
            (
                b.kpi.clone(),
                b.unit.clone(),
                b.lower_is_better,
                b.observed,
                b.baseline,
            )
        }
        _ => (
            "scheduler_failures".to_string(),
            "count".to_string(),
            true,
            1.0,
            0.0,
        ),
    };
    // From no failures to one: a full regression.
    let change = improvement_pct(value, baseline, lower).unwrap_or(-100.0);
    NewResult {
        signature: None,
        workload: "deploy_breaker".into(),
        workload_description: format!(
            "production deployment on {} tripped the circuit breaker",
            d.kernel_release
        ),
        metric,
        unit,
        direction: direction(lower),
        value,
        baseline: Some(baseline),
        improvement_pct: Some(change),
        p_value: None,
        // A breach of a safety limit or a crash is decisive.
        significant: true,
        verdict: ResultVerdict::Regressed,
        source: ResultSource::Deploy,
        environment: format!("deploy on {}", d.kernel_release),
    }
}

/// Into the policy repository, so curation learns from deployments. A
/// version this machine's library does not hold is noted, not fatal. A
/// change without a scheduler has no policy version to record against:
/// its verdict stays in the deploy history and the audit log.
/// Runs on its own thread: opening the library may load the embedding
/// model, and the controller must keep polling health meanwhile. The
/// thread runs at the lowest priority (nice 19), and the controller does
/// not measure a new baseline until it is done: embedding a result is
/// seconds of CPU on every core (measured on a lab node: the daemon at
/// 191% CPU right after a rollback), which would otherwise load the next
/// deployment's baseline and canary windows.
pub(super) fn record(
    cfg: &Config,
    d: &Deployment,
    res: NewResult,
    passed: bool,
) -> Option<std::thread::JoinHandle<()>> {
    let s = d.scheduler.clone()?;
    let cfg = cfg.clone();
    let d = d.clone();
    let spawned = std::thread::Builder::new()
        .name("deploy-curation".into())
        .spawn(move || {
            // SAFETY: plain syscalls on this thread's own id.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, 19);
            }
            let pref = PolicyRef {
                name: s.policy.clone(),
                version: Some(s.version),
            };
            let outcome = (|| -> Result<String, Error> {
                let mut lib = Library::open(&cfg)?;
                let v = lib.get(&pref)?;
                if passed {
                    let why = format!("deployment #{} passed its canary", d.id);
                    if v.state == State::Candidate {
                        lib.transition(
                            &pref,
                            State::Verified,
                            &format!("deploy token {} from the verifier", s.token_jti),
                        )?;
                    }
                    if matches!(v.state, State::Candidate | State::Verified) {
                        lib.transition(&pref, State::Deployed, &why)?;
                    }
                }
                let rec = lib.record_result(&pref, res)?;
                Ok(format!("result #{} recorded for {}", rec.result.id, v.id()))
            })();
            let (event, detail) = match outcome {
                Ok(msg) => ("policy_result", msg),
                Err(e) => ("policy_result_skipped", format!("{}: {e}", s.label())),
            };
            tracing::info!(deployment = d.id, "deploy {event}: {detail}");
            if let Ok(mut store) = Store::open_in(&cfg.state_dir()) {
                let _ = record::event(&mut store, Some(d.id), event, &detail);
            }
        });
    spawned
        .map_err(|e| tracing::error!("recording the deploy result: {e}"))
        .ok()
}

/// How much better `value` is than `baseline`, in percent of the baseline
/// (positive is better, whichever way the metric points); none for a zero
/// baseline.
fn improvement_pct(value: f64, baseline: f64, lower_is_better: bool) -> Option<f64> {
    (baseline.abs() > f64::EPSILON).then(|| {
        let raw = (value - baseline) / baseline * 100.0;
        if lower_is_better {
            -raw
        } else {
            raw
        }
    })
}

fn direction(lower_is_better: bool) -> Direction {
    if lower_is_better {
        Direction::Lower
    } else {
        Direction::Higher
    }
}
