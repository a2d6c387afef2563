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

/// A deploy request that passed admission.
pub struct Prepared {
    pub admitted: Box<Admitted>,
    pub plan: CanaryPlan,
    pub(super) workload: Option<Workload>,
    pub(super) received: Instant,
    pub(super) admission_ms: f64,
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
