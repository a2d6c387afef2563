//! When a KPI counts as breached: the circuit breaker's rules.
//!
//! Every rule compares a window measured under the new scheduler with the
//! baseline measured just before the switch. Latency rules need both a
//! ratio and an absolute floor: on an idle machine a p99 of 40 µs that
//! becomes 120 µs is a 3× "regression" nobody notices, and the runqlat
//! histogram is log2-bucketed, so one bucket is already a factor of two.

use serde::{Deserialize, Serialize};

use super::kpi::Kpis;
pub use crate::config::deploy::{Thresholds, NAMES};

/// One KPI outside its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Breach {
    pub kpi: String,
    pub baseline: f64,
    pub observed: f64,
    pub limit: String,
    /// Whether lower values of this KPI are better (for recording a result).
    pub lower_is_better: bool,
    pub unit: String,
}

impl Breach {
    pub fn describe(&self) -> String {
        format!(
            "{} {:.1} {} against a baseline of {:.1} ({})",
            self.kpi, self.observed, self.unit, self.baseline, self.limit
        )
    }
}

/// Every KPI of `window` that breaches `t` relative to `baseline`.
pub fn breaches(t: &Thresholds, baseline: &Kpis, window: &Kpis) -> Vec<Breach> {
    let mut out = Vec::new();
    let enough = baseline.runq_samples.min(window.runq_samples) >= t.runq_min_samples;
    if let (Some(b), Some(o), true) = (baseline.runq_p99_us, window.runq_p99_us, enough) {
        if o > b * t.runq_p99_ratio && o - b > t.runq_p99_min_increase_us {
            out.push(Breach {
                kpi: "runq_p99".into(),
                baseline: b,
                observed: o,
                limit: format!(
                    "more than {}x and {} µs above the baseline",
                    t.runq_p99_ratio, t.runq_p99_min_increase_us
                ),
                lower_is_better: true,
                unit: "µs".into(),
            });
        }
    }
    if let (Some(b), Some(o)) = (baseline.psi_cpu_some_pct, window.psi_cpu_some_pct) {
        if o - b > t.psi_cpu_some_increase_pct {
            out.push(Breach {
                kpi: "psi_cpu_some".into(),
                baseline: b,
                observed: o,
                limit: format!(
                    "more than {} percentage points above the baseline",
                    t.psi_cpu_some_increase_pct
                ),
                lower_is_better: true,
                unit: "%".into(),
            });
        }
    }
    if let Some(o) = window.nr_rejected {
        if o > t.nr_rejected_max {
            out.push(Breach {
                kpi: "nr_rejected".into(),
                baseline: baseline.nr_rejected.unwrap_or(0) as f64,
                observed: o as f64,
                limit: format!("at most {} per window", t.nr_rejected_max),
                lower_is_better: true,
                unit: "tasks".into(),
            });
        }
    }
    if let (Some(b), Some(o)) = (&baseline.workload, &window.workload) {
        if b.metric == o.metric && b.value.abs() > f64::EPSILON {
            let worse_pct = if o.better == "higher" {
                (b.value - o.value) / b.value * 100.0
            } else {
                (o.value - b.value) / b.value * 100.0
            };
            if worse_pct > t.workload_regression_pct {
                out.push(Breach {
                    kpi: format!("workload_{}", o.metric),
                    baseline: b.value,
                    observed: o.value,
                    limit: format!(
                        "{worse_pct:.0}% worse; at most {}% allowed",
                        t.workload_regression_pct
                    ),
                    lower_is_better: o.better != "higher",
                    unit: o.unit.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::kpi::WorkloadKpi;

    fn kpis(p99: f64, psi: f64, wl: f64) -> Kpis {
        Kpis {
            window_s: 5.0,
            runq_p99_us: Some(p99),
            runq_samples: 10_000,
            psi_cpu_some_pct: Some(psi),
            nr_rejected: Some(0),
            workload: Some(WorkloadKpi {
                what: "batch".into(),
                metric: "makespan".into(),
                unit: "ms".into(),
                better: "lower".into(),
                value: wl,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn latency_needs_both_ratio_and_floor() {
        let t = Thresholds::default();
        // 10x but only 360 µs more: noise on an idle machine.
        assert!(breaches(&t, &kpis(40.0, 5.0, 100.0), &kpis(400.0, 5.0, 100.0)).is_empty());
        let b = breaches(&t, &kpis(2_000.0, 5.0, 100.0), &kpis(64_000.0, 5.0, 100.0));
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].kpi, "runq_p99");
    }

    #[test]
    fn workload_direction_is_respected() {
        let t = Thresholds::default();
        let b = breaches(&t, &kpis(100.0, 5.0, 100.0), &kpis(100.0, 5.0, 140.0));
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(breaches(&t, &kpis(100.0, 5.0, 100.0), &kpis(100.0, 5.0, 60.0)).is_empty());
    }

    #[test]
    fn overrides_are_checked() {
        let mut t = Thresholds::default();
        t.set("workload_regression_pct=10").unwrap();
        assert_eq!(t.workload_regression_pct, 10.0);
        assert!(t.set("bogus=1").unwrap_err().to_string().contains("known:"));
        assert!(t.set("runq_p99_ratio=0.5").is_err());
        assert_eq!(t.runq_p99_ratio, 4.0, "a refused override changes nothing");
        assert!(t.set("nope").is_err());
        t.set("consecutive_windows=1").unwrap();
        assert_eq!(t.consecutive_windows, 1);
        assert!(t.set("consecutive_windows=1.5").is_err());
        assert!(t.set("consecutive_windows=0").is_err());
    }
}
