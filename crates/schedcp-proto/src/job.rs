//! What the host asks the guest to do.

use serde::{Deserialize, Serialize};

use crate::workload::WorkloadSpec;

/// One lab boot: optionally attach a scheduler, run one workload, detach;
/// then any further runs of the plan in the same boot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestJob {
    /// `None` runs the workload on the kernel's default scheduler.
    pub scheduler: Option<SchedulerJob>,
    pub workload: WorkloadSpec,
    /// Runs after the main one, in order, in the same VM. A run with the
    /// scheduler loads a fresh instance of the object, attaches, runs and
    /// detaches, so no BPF state carries over between runs. The plan stops
    /// at the first run whose scheduler gets into trouble.
    #[serde(default)]
    pub then: Vec<PlannedRun>,
    /// More schedulers for planned runs ([`PlannedRun::other`]), so two
    /// schedulers can be compared in one boot. Each names its artefact.
    #[serde(default)]
    pub others: Vec<SchedulerJob>,
    /// Kernel knob settings for runs ([`PlannedRun::knobs`], [`GuestJob::knobs`]):
    /// each set is written before its run and the prior values put back
    /// after it, so knobs the host refuses can be trialled in the lab.
    #[serde(default)]
    pub knob_sets: Vec<Vec<KnobWrite>>,
    /// The knob set (index into `knob_sets`) for the main run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knobs: Option<usize>,
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
    /// How the scheduler is started: our loader on a BPF object, or a
    /// scheduler program that loads itself.
    #[serde(default)]
    pub runner: Runner,
    /// Where the object or binary is in the guest; default
    /// [`crate::OBJECT_PATH`] or [`crate::BINARY_PATH`] by runner.
    #[serde(default)]
    pub artefact: Option<String>,
}

impl SchedulerJob {
    /// The guest path of this scheduler's object or binary.
    pub fn artefact_path(&self) -> &str {
        match (&self.artefact, &self.runner) {
            (Some(p), _) => p,
            (None, Runner::Object) => crate::OBJECT_PATH,
            (None, Runner::Binary { .. }) => crate::BINARY_PATH,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Runner {
    /// `OBJECT_PATH`, loaded and attached through struct_ops by the agent.
    #[default]
    Object,
    /// `BINARY_PATH`, an scx scheduler binary run as a supervised process
    /// with these arguments and stopped with SIGINT.
    Binary {
        args: Vec<String>,
        /// How long loading (the kernel verifier included) may take.
        start_timeout_ms: u64,
    },
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

/// One further workload run in the same boot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlannedRun {
    pub workload: WorkloadSpec,
    /// Under a scheduler (`true`) or the kernel's default (`false`).
    pub scheduler: bool,
    /// With `scheduler`: which of [`GuestJob::others`] runs, instead of the
    /// job's own scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<usize>,
    /// The knob set (index into [`GuestJob::knob_sets`]) in force for this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knobs: Option<usize>,
}

/// One kernel file to set for a run. The host resolved it from its knob
/// catalogue and checked the value; the guest writes what it is given.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KnobWrite {
    /// The catalogue name, for reports.
    pub knob: String,
    /// Under /proc/sys, /sys or /sys/kernel/debug.
    pub path: String,
    pub kind: KnobKind,
    /// What is written (for a feature flag: `NAME` or `NO_NAME`).
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KnobKind {
    /// The whole file is the value.
    File,
    /// The file lists choices with the active one in `[..]` or `(..)`.
    Selector,
    /// One flag of `sched/features`.
    Feature { flag: String },
}
