//! Continuous mode: the daemon keeps one workload profile tuned. Every
//! interval it runs the workload once with probes attached; when the
//! signature drifts from the last tune's (similarity below
//! [`record::SIMILAR`]) or the metric is worse than that tune's baseline
//! by more than `degrade_pct`, it re-tunes within budget and applies a
//! proven winner through the daemon's deploy controller. At most one
//! change is in flight (a pass is skipped while a deploy runs), and at most
//! one change is applied per `min_change_interval_s`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::apply::InProcess;
use super::engine::{self, Budget, TuneRequest};
use super::record;
use crate::config::tune::ContinuousConfig;
use crate::config::Config;
use crate::deploy::deployer::Deployer;
use crate::error::Error;
use crate::store::Store;

/// The running loop; stopped (and joined) when dropped.
pub struct Continuous {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Continuous {
    /// Start the loop on the daemon's deploy controller; `log` gets one
    /// line per pass (the daemon audits and logs them).
    pub fn start(
        cfg: Config,
        cc: ContinuousConfig,
        deployer: Arc<Deployer>,
        log: Box<dyn Fn(&str) + Send>,
    ) -> Result<Continuous, Error> {
        // Said at start, not only in every pass (the profile may be added later).
        if let Err(e) = crate::deploy::deployer::workload_binding(&cfg, &cc.profile) {
            log(&format!("tune continuous ({}): {e}", cc.profile));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tune-continuous".into())
            .spawn(move || {
                let applier = InProcess::shared(deployer.clone());
                while !s.load(Ordering::Relaxed) {
                    let line = match pass(&cfg, &cc, &deployer, &applier, &s) {
                        Ok(l) => l,
                        Err(e) => format!("pass failed: {e}"),
                    };
                    log(&format!("tune continuous ({}): {line}", cc.profile));
                    // Sleep the interval, waking for a stop.
                    for _ in 0..cc.interval_s * 10 {
                        if s.load(Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
            .map_err(|e| Error::Internal(e.into()))?;
        Ok(Continuous {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Continuous {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Why a pass re-tunes, or `None`: the last tune still describes the
/// workload and its metric holds.
pub fn trigger(
    sig: &crate::observe::signature::Signature,
    value: f64,
    last: Option<&record::LastSession>,
    degrade_pct: f64,
) -> Option<String> {
    let Some(last) = last else {
        return Some("never tuned".into());
    };
    let sim = sig.similarity(&last.signature);
    if sim < record::SIMILAR {
        return Some(format!(
            "the signature drifted (similarity {sim:.2} to session {} < {})",
            last.session,
            record::SIMILAR
        ));
    }
    let base = last.baseline_median?;
    let worse_pct = if last.lower_is_better {
        100.0 * (value - base) / base
    } else {
        100.0 * (base - value) / base
    };
    (worse_pct > degrade_pct).then(|| {
        format!(
            "the metric degraded {worse_pct:.1}% against session {}'s baseline (> {degrade_pct}%)",
            last.session
        )
    })
}

/// One pass: sample, decide whether to re-tune, maybe re-tune.
fn pass(
    cfg: &Config,
    cc: &ContinuousConfig,
    deployer: &Deployer,
    applier: &InProcess,
    stop: &Arc<AtomicBool>,
) -> Result<String, Error> {
    if deployer.is_busy() {
        return Ok("a deploy is in flight: skipped (one change at a time)".into());
    }
    let (sig, kpi) = engine::sample(cfg, &cc.profile)?;
    let store = Store::open_in(&cfg.state_dir())?;
    let last = record::last_session(&store, &cc.profile)?;
    let Some(why) = trigger(&sig, kpi.value, last.as_ref(), cc.degrade_pct) else {
        return Ok(format!(
            "no drift and no degradation ({} {:.1} {}): nothing to do",
            kpi.metric, kpi.value, kpi.unit
        ));
    };
    if let Some(at) = record::last_applied_at(&store, &cc.profile)? {
        let since = chrono::DateTime::parse_from_rfc3339(&at)
            .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
            .unwrap_or(i64::MAX);
        if since >= 0 && (since as u64) < cc.min_change_interval_s {
            return Ok(format!(
                "{why}, but a change was applied {since} s ago and the rate bound allows one per {} s: skipped",
                cc.min_change_interval_s
            ));
        }
    }
    if stop.load(Ordering::Relaxed) {
        return Ok("stopping".into());
    }
    let mut req = TuneRequest::new(&cc.profile);
    req.apply = true;
    req.budget = Budget {
        trials: cc.budget_trials,
        seconds: cc.budget_s,
    };
    req.canary_s = cc.canary_s;
    req.lab = cc.lab;
    req.cancel = Some(stop.clone());
    let r = engine::run(cfg, &req, Some(applier), &|_| {})?;
    Ok(format!(
        "re-tuned because {why}: session {}: {}{}",
        r.session,
        r.decision,
        r.applied
            .as_ref()
            .map(|d| format!(" — deployment #{} {}", d.id, d.state.as_str()))
            .unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::signature::tests::shaped;

    fn last(sig: crate::observe::signature::Signature) -> record::LastSession {
        record::LastSession {
            session: 7,
            signature: sig,
            baseline_median: Some(1000.0),
            lower_is_better: true,
        }
    }

    #[test]
    fn re_tunes_on_first_sight_drift_or_degradation_only() {
        let a = shaped(1.0, 2, 50.0, 300.0, 10.0);
        assert_eq!(trigger(&a, 1000.0, None, 10.0).unwrap(), "never tuned");
        let l = last(a.clone());
        // The same workload, its metric within 10 %: nothing to do.
        assert!(trigger(&a, 1050.0, Some(&l), 10.0).is_none());
        // 20 % slower: degraded.
        assert!(trigger(&a, 1200.0, Some(&l), 10.0)
            .unwrap()
            .contains("degraded 20.0%"));
        // Another kind of workload: drifted.
        let b = shaped(0.2, 16, 40_000.0, 10.0, 0.0);
        assert!(trigger(&b, 1000.0, Some(&l), 10.0)
            .unwrap()
            .contains("drifted"));
    }
}
