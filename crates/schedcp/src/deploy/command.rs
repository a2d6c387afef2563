//! What the deployer handle sends the controller thread, and the callbacks
//! that carry progress and events back out.

use std::sync::mpsc::Sender;
use std::time::Instant;

use super::gate::Admitted;
use super::kpi::Workload;
use super::record::{CanaryPlan, Deployment};
use crate::error::Error;

/// Called for every deployment event (the daemon appends them to its
/// audit log).
pub type EventSink = Box<dyn Fn(Option<i64>, &str, &str) + Send>;

/// A message about a deploy in progress, for progress bars and job status.
pub type Progress = Box<dyn Fn(&str) + Send>;

/// A deploy request that passed admission: a scheduler, a knob change
/// set, or both.
pub struct Prepared {
    pub admitted: Option<Box<Admitted>>,
    pub knobs: Option<crate::knobs::Plan>,
    pub plan: CanaryPlan,
    pub(super) workload: Option<Workload>,
    pub(super) received: Instant,
    pub(super) admission_ms: f64,
}

impl Prepared {
    /// `vtime@3`, `knobs vm.swappiness=10`, or both.
    pub fn label(&self) -> String {
        let s = self
            .admitted
            .as_ref()
            .map(|a| format!("{}@{}", a.claims.policy, a.claims.version));
        let k = self
            .knobs
            .as_ref()
            .map(|k| format!("knobs {}", k.describe()));
        match (s, k) {
            (Some(s), Some(k)) => format!("{s} + {k}"),
            (Some(s), None) => s,
            (None, Some(k)) => k,
            (None, None) => "nothing".into(),
        }
    }
}

/// What the handle asks of the controller thread.
pub(super) enum Command {
    Deploy {
        prepared: Box<Prepared>,
        progress: Progress,
        reply: Sender<Result<Deployment, Error>>,
    },
    Rollback {
        reason: String,
        reply: Sender<Result<Deployment, Error>>,
    },
    Stop,
}
