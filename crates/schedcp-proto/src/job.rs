//! What the host asks the guest to do.

use serde::{Deserialize, Serialize};

use crate::workload::WorkloadSpec;

/// One lab run: optionally attach a scheduler, run one workload, detach.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestJob {
    /// `None` runs the workload on the kernel's default scheduler.
    pub scheduler: Option<SchedulerJob>,
    pub workload: WorkloadSpec,
    /// How long the guest waits for `/sys/kernel/sched_ext/state` to change
    /// after attach/detach before it reports a failure.
    pub state_timeout_ms: u64,
}

/// A compiled BPF object to load and attach through struct_ops.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchedulerJob {
    /// Human name, used in reports.
    pub name: String,
    /// SHA-256 of the object file, echoed back so the host can tie the report to it.
    pub object_sha256: String,
    /// Values written into `.rodata` variables before load (tunables).
    pub rodata: Vec<RodataValue>,
}

/// A `const volatile` global set before load.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RodataValue {
    pub name: String,
    pub value: RodataScalar,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum RodataScalar {
    Bool(bool),
    Int(i64),
}
