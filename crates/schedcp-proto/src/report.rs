//! What the guest tells the host, one JSON object per line.

use serde::{Deserialize, Serialize};

use crate::workload::WorkloadResult;

/// One line on the report channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GuestMessage {
    /// First message: the guest agent is running.
    Hello {
        kernel_release: String,
        /// Seconds since the guest kernel booted (from /proc/uptime).
        uptime_s: f64,
        nr_cpus: usize,
        sched_ext_state: Option<String>,
    },
    /// A step finished (or failed); `elapsed_ms` is that step's own duration.
    Step {
        step: StepKind,
        ok: bool,
        elapsed_ms: f64,
        uptime_s: f64,
        detail: Option<String>,
    },
    /// A planned run (`GuestJob::then[index]`) finished. Sent as each one
    /// ends, so a VM killed by the watchdog later still leaves the evidence.
    Run {
        index: usize,
        record: Box<RunRecord>,
    },
    /// The final report; always the last message when the guest got that far.
    Done(Box<GuestReport>),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Open,
    Load,
    Attach,
    Workload,
    Detach,
}

/// Everything the host needs to judge a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GuestReport {
    pub kernel_release: String,
    /// Seconds from guest kernel start to the moment the scheduler was
    /// attached (or, without a scheduler, to the workload start).
    pub boot_to_attach_s: Option<f64>,
    pub scheduler: Option<SchedulerOutcome>,
    pub workload: Option<WorkloadResult>,
    /// Workload error (e.g. it could not spawn threads).
    pub workload_error: Option<String>,
    /// Kernel log lines mentioning sched_ext, in order.
    pub kernel_messages: Vec<String>,
    /// A failure that ended the run early (load refused, attach failed, ...).
    pub error: Option<String>,
}

/// What happened in one planned run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub scheduler: bool,
    /// Which of the job's other schedulers ran ([`crate::job::PlannedRun::other`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<usize>,
    /// The whole run: load, attach, workload and detach.
    pub elapsed_ms: f64,
    pub workload: Option<WorkloadResult>,
    pub workload_error: Option<String>,
    /// The scheduler instance of this run (planned runs with `scheduler`).
    pub outcome: Option<SchedulerOutcome>,
    /// Load/attach/detach failure of this run.
    pub error: Option<String>,
}

impl RunRecord {
    /// Why this run's scheduler is not fit to continue, if it is not.
    pub fn trouble(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(e.clone());
        }
        let s = self.outcome.as_ref()?;
        if let Some(x) = s.exit.as_ref().filter(|x| x.is_error()) {
            return Some(format!("{}: {} {}", x.kind_name, x.reason, x.message));
        }
        if !s.survived_workload {
            return Some("the scheduler was no longer attached when the workload finished".into());
        }
        if !s.detached_cleanly {
            return Some("the scheduler did not detach cleanly".into());
        }
        None
    }
}

/// The life of the scheduler inside the guest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SchedulerOutcome {
    pub name: String,
    /// `sched_ext_ops.name` as reported by `/sys/kernel/sched_ext/root/ops`.
    pub ops_name: Option<String>,
    pub loaded: bool,
    pub attached: bool,
    /// Guest uptime when the attach took effect.
    #[serde(default)]
    pub attached_at_s: Option<f64>,
    /// `/sys/kernel/sched_ext/state` observed over the run, deduplicated.
    pub state_transitions: Vec<StateSample>,
    /// True if the scheduler was still attached when the workload finished.
    pub survived_workload: bool,
    pub detached_cleanly: bool,
    /// The kernel verifier's log when the load was rejected (trimmed).
    pub verifier_log: Option<String>,
    /// Exit info recorded by the scheduler (`UEI_RECORD`) or derived from the kernel log.
    pub exit: Option<ExitInfo>,
    /// `__SCX_*` constants the loader filled from the kernel's BTF.
    pub scx_enums_filled: usize,
    /// `SCX_*` names the headers use but the running kernel does not define
    /// (they stay 0; a scheduler using one will misbehave on this kernel).
    pub scx_enums_missing: Vec<String>,
    /// Tunables as read back from the loaded `.rodata` map (zero-extended).
    pub rodata_in_kernel: Vec<(String, u64)>,
    /// Programs in the object with their instruction counts, as loaded.
    pub programs: Vec<ProgramInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateSample {
    pub uptime_s: f64,
    pub state: String,
}

/// sched_ext exit information (`struct scx_exit_info` as copied by `UEI_RECORD`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExitInfo {
    pub kind: i64,
    /// Symbolic name of `kind` (e.g. `SCX_EXIT_ERROR_STALL`).
    pub kind_name: String,
    pub exit_code: i64,
    pub reason: String,
    pub message: String,
    /// Where this came from: `uei` (the scheduler's own record) or `kmsg`.
    pub source: String,
}

impl ExitInfo {
    /// True for the kinds the kernel uses when it ejects a misbehaving scheduler.
    pub fn is_error(&self) -> bool {
        self.kind >= 1024
    }
}

/// Names for `enum scx_exit_kind` values.
pub fn exit_kind_name(kind: i64) -> &'static str {
    match kind {
        0 => "SCX_EXIT_NONE",
        1 => "SCX_EXIT_DONE",
        64 => "SCX_EXIT_UNREG",
        65 => "SCX_EXIT_UNREG_BPF",
        66 => "SCX_EXIT_UNREG_KERN",
        67 => "SCX_EXIT_SYSRQ",
        1024 => "SCX_EXIT_ERROR",
        1025 => "SCX_EXIT_ERROR_BPF",
        1026 => "SCX_EXIT_ERROR_STALL",
        _ => "SCX_EXIT_UNKNOWN",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProgramInfo {
    pub name: String,
    pub section: String,
    pub insns: usize,
}
