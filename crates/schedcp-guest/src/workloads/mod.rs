//! Built-in lab workloads: small, self-contained programs whose results depend
//! on scheduling decisions, run in the micro-VM to compare schedulers.
//!
//! - `batch`: CPU-bound jobs released at once; judged by makespan.
//! - `wakeup`: schbench-style message/worker wakeups; judged by p99 latency.
//! - `pingpong`: hackbench-style pipe/socket traffic; judged by total time.
//! - `fairness`: equal- and lower-weight CPU hogs; judged by the smallest share.
//!
//! All threads of a run are scoped to it and joined before it returns; a
//! failing thread turns into an error, never a hang.

mod batch;
mod fairness;
mod pingpong;
mod spin;
mod stats;
mod sync;
mod wakeup;

use std::time::Duration;

use anyhow::{Context, Result};
use schedcp_proto::workload::{Metric, WorkloadKind, WorkloadResult, WorkloadSpec};

/// What a workload measured, before it is tied to its spec.
struct Report {
    primary: &'static str,
    metrics: Vec<Metric>,
    detail: serde_json::Value,
}

/// Runs `spec` to completion on the calling thread (plus the threads it
/// spawns) and reports its metrics.
pub fn run(spec: &WorkloadSpec) -> Result<WorkloadResult> {
    let report = match spec.kind {
        WorkloadKind::Batch => batch::run(&batch::Params::from_spec(spec)),
        WorkloadKind::Wakeup => wakeup::run(&wakeup::Params::from_spec(spec)),
        WorkloadKind::Pingpong => pingpong::run(&pingpong::Params::from_spec(spec)),
        WorkloadKind::Fairness => fairness::run(&fairness::Params::from_spec(spec)),
    }
    .with_context(|| format!("running workload {spec}"))?;
    debug_assert!(
        report.metrics.iter().any(|m| m.name == report.primary),
        "{} lacks its primary metric",
        spec.kind
    );
    Ok(WorkloadResult {
        spec: spec.clone(),
        primary: report.primary.to_owned(),
        metrics: report.metrics,
        detail: report.detail,
    })
}

/// An integer parameter as a count. Spec validation bounds every parameter
/// well below `u32::MAX`, so the cast cannot truncate.
fn count(spec: &WorkloadSpec, name: &str) -> usize {
    spec.int(name) as usize
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a spec string end to end and checks what every workload promises.
    pub(super) fn run_str(spec: &str) -> WorkloadResult {
        let spec: WorkloadSpec = spec.parse().expect("valid spec");
        let result = run(&spec).expect("workload runs");
        assert_eq!(result.spec, spec);
        assert!(
            result.primary_metric().is_some(),
            "primary metric {} missing",
            result.primary
        );
        for m in &result.metrics {
            assert!(
                m.value.is_finite() && m.value >= 0.0,
                "{} = {}",
                m.name,
                m.value
            );
        }
        result
    }

    pub(super) fn value(result: &WorkloadResult, name: &str) -> f64 {
        result
            .metric(name)
            .unwrap_or_else(|| panic!("metric {name} missing"))
            .value
    }
}
