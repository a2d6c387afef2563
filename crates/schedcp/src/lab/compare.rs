//! A scheduler against a baseline (usually the kernel default) on one
//! workload: alternate runs, then median, spread and relative change of the
//! workload's primary metric.

use serde::Serialize;

use schedcp_proto::workload::Better;

use super::report::{LabReport, Outcome};

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub policy: String,
    /// Primary-metric value of each completed run, in run order.
    pub values: Vec<f64>,
    pub median: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Outcomes of runs that did not complete.
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub workload: String,
    pub metric: String,
    pub unit: String,
    pub better: Option<Better>,
    pub baseline: Side,
    pub candidate: Side,
    /// Candidate median relative to the baseline median, in percent.
    pub change_pct: Option<f64>,
    /// Positive when the candidate is better (sign-adjusted for the metric's direction).
    pub improvement_pct: Option<f64>,
    pub accel: String,
}

pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn side(policy: &str, reports: &[LabReport]) -> Side {
    let mut values = Vec::new();
    let mut failures = Vec::new();
    for r in reports {
        match (
            &r.outcome,
            r.guest
                .as_ref()
                .and_then(|g| g.workload.as_ref())
                .and_then(|w| w.primary_metric()),
        ) {
            (Outcome::Completed, Some(m)) => values.push(m.value),
            (o, _) => failures.push(o.summary()),
        }
    }
    Side {
        policy: policy.into(),
        median: median(&values),
        min: values.iter().copied().reduce(f64::min),
        max: values.iter().copied().reduce(f64::max),
        values,
        failures,
    }
}

pub fn compare(
    baseline: &str,
    base_runs: &[LabReport],
    candidate: &str,
    cand_runs: &[LabReport],
) -> Comparison {
    let metric = base_runs.iter().chain(cand_runs).find_map(|r| {
        r.guest
            .as_ref()
            .and_then(|g| g.workload.as_ref())
            .and_then(|w| w.primary_metric().cloned())
    });
    let b = side(baseline, base_runs);
    let c = side(candidate, cand_runs);
    let change_pct = match (b.median, c.median) {
        (Some(b), Some(c)) if b != 0.0 => Some((c - b) / b * 100.0),
        _ => None,
    };
    let better = metric.as_ref().map(|m| m.better);
    let improvement_pct = change_pct
        .zip(better)
        .map(|(ch, bt)| if bt == Better::Lower { -ch } else { ch });
    Comparison {
        workload: base_runs
            .first()
            .or(cand_runs.first())
            .map(|r| r.workload.to_string())
            .unwrap_or_default(),
        metric: metric.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
        unit: metric.as_ref().map(|m| m.unit.clone()).unwrap_or_default(),
        better,
        baseline: b,
        candidate: c,
        change_pct,
        improvement_pct,
        accel: base_runs
            .iter()
            .chain(cand_runs)
            .next()
            .map(|r| r.accel.used.clone())
            .unwrap_or_default(),
    }
}

impl Comparison {
    pub fn render(&self) -> String {
        let fmt_side = |s: &Side| match (s.median, s.min, s.max) {
            (Some(m), Some(lo), Some(hi)) => format!(
                "median {m:.2} {} (min {lo:.2}, max {hi:.2}, n={})",
                self.unit,
                s.values.len()
            ),
            _ => "no completed runs".into(),
        };
        let mut out = format!(
            "workload {} — metric {} ({} is better), accel {}\n",
            self.workload,
            self.metric,
            match self.better {
                Some(Better::Lower) => "lower",
                Some(Better::Higher) => "higher",
                None => "?",
            },
            self.accel
        );
        out.push_str(&format!(
            "  {:<10} {}\n",
            self.baseline.policy,
            fmt_side(&self.baseline)
        ));
        out.push_str(&format!(
            "  {:<10} {}\n",
            self.candidate.policy,
            fmt_side(&self.candidate)
        ));
        if let Some(imp) = self.improvement_pct {
            out.push_str(&format!(
                "  → {} is {:.1}% {} than {} (medians of {} runs per side, one VM per run)\n",
                self.candidate.policy,
                imp.abs(),
                if imp >= 0.0 { "better" } else { "worse" },
                self.baseline.policy,
                self.baseline.values.len().min(self.candidate.values.len())
            ));
        }
        for f in self
            .baseline
            .failures
            .iter()
            .chain(&self.candidate.failures)
        {
            out.push_str(&format!("  ! {f}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
    }
}
