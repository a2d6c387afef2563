//! The host's account of one lab run, and how it is judged.

use std::path::PathBuf;

use schedcp_proto::report::{GuestReport, RunRecord, StepKind};
use schedcp_proto::workload::WorkloadSpec;
use serde::Serialize;

use crate::bpf::compile::CompiledObject;

#[derive(Debug, Clone, Serialize)]
pub struct LabReport {
    /// `default`, a built-in policy name, or a file path.
    pub policy: String,
    pub workload: WorkloadSpec,
    pub kernel_release: String,
    pub accel: AccelReport,
    pub vcpus: u32,
    pub mem_mib: u32,
    pub outcome: Outcome,
    pub timings: Timings,
    pub object: Option<CompiledObject>,
    pub steps: Vec<StepRecord>,
    /// Everything the guest reported; absent if it never got that far.
    pub guest: Option<GuestReport>,
    /// The planned runs after the main one that finished, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<RunRecord>,
    /// Kept for failed runs (and with `lab.keep_runs`).
    pub run_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccelReport {
    /// `kvm` or `tcg`: what the VM actually ran on.
    pub used: String,
    /// Why KVM was not used, when it was not.
    pub kvm_unavailable: Option<String>,
    /// The guest clock: `native` or `icount:N` under TCG, `host` under KVM.
    #[serde(default)]
    pub clock: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub compile_ms: Option<f64>,
    pub initramfs_ms: f64,
    /// Guest uptime when the agent said hello (kernel boot to userspace).
    pub boot_to_agent_s: Option<f64>,
    /// Guest uptime when the scheduler was attached.
    pub boot_to_attach_s: Option<f64>,
    pub workload_ms: Option<f64>,
    /// QEMU start to exit, as the host saw it.
    pub vm_wall_s: f64,
    pub total_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub step: StepKind,
    pub ok: bool,
    pub elapsed_ms: f64,
    pub detail: Option<String>,
}

/// The verdict of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Attached (if any), ran the workload, detached cleanly.
    Completed,
    /// The kernel verifier refused to load the scheduler.
    Rejected { reason: String },
    /// The kernel ejected the scheduler (error exit or watchdog stall).
    SchedulerError {
        kind: String,
        reason: String,
        message: String,
    },
    /// The guest reported another failure, or no report at all.
    Failed { reason: String },
    /// The guest kernel crashed (panic, oops, BUG) before the guest finished.
    KernelCrash { first_line: String },
    /// The VM hit the wall-clock watchdog and was killed.
    TimedOut { after_s: u64 },
}

impl Outcome {
    /// Process exit code for `schedcp lab run` (documented in its --help).
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Completed => 0,
            Outcome::Failed { .. } | Outcome::KernelCrash { .. } => 1,
            Outcome::Rejected { .. } | Outcome::SchedulerError { .. } => 4,
            Outcome::TimedOut { .. } => 5,
        }
    }

    pub fn summary(&self) -> String {
        match self {
            Outcome::Completed => "completed".into(),
            Outcome::Rejected { reason } => format!("rejected by the kernel verifier: {reason}"),
            Outcome::SchedulerError {
                kind,
                reason,
                message,
            } => {
                format!(
                    "scheduler ejected by the kernel ({kind}: {reason}){}",
                    if message.is_empty() {
                        String::new()
                    } else {
                        format!(": {message}")
                    }
                )
            }
            Outcome::Failed { reason } => format!("failed: {reason}"),
            Outcome::KernelCrash { first_line } => {
                format!("the guest kernel crashed: {first_line} (console log in the run directory)")
            }
            Outcome::TimedOut { after_s } => {
                format!("VM watchdog: no power-off within {after_s} s; the VM was killed")
            }
        }
    }
}

/// Judge a finished run from what the guest reported.
pub fn judge(
    guest: Option<&GuestReport>,
    timed_out: Option<u64>,
    kernel_crash: Option<String>,
) -> Outcome {
    if let (None, Some(first_line)) = (guest, kernel_crash) {
        return Outcome::KernelCrash { first_line };
    }
    if let Some(after_s) = timed_out {
        return Outcome::TimedOut { after_s };
    }
    let Some(g) = guest else {
        return Outcome::Failed {
            reason: "the guest sent no final report (see the console log in the run directory)"
                .into(),
        };
    };
    if let Some(s) = &g.scheduler {
        if s.verifier_log.is_some() && !s.loaded {
            return Outcome::Rejected {
                reason: g.error.clone().unwrap_or_default(),
            };
        }
        if let Some(exit) = s.exit.as_ref().filter(|e| e.is_error()) {
            return Outcome::SchedulerError {
                kind: exit.kind_name.clone(),
                reason: schedcp_proto::report::scheduler_text(&exit.reason),
                message: schedcp_proto::report::scheduler_text(&exit.message),
            };
        }
    }
    if let Some(e) = &g.error {
        return Outcome::Failed { reason: e.clone() };
    }
    if let Some(e) = &g.workload_error {
        return Outcome::Failed {
            reason: format!("workload: {e}"),
        };
    }
    if let Some(s) = &g.scheduler {
        if !s.survived_workload {
            return Outcome::Failed {
                reason: "the scheduler was no longer attached when the workload finished".into(),
            };
        }
    }
    Outcome::Completed
}

impl LabReport {
    /// A human-readable rendering.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let t = &self.timings;
        s.push_str(&format!(
            "policy     {}\nworkload   {}\n",
            self.policy, self.workload
        ));
        s.push_str(&format!(
            "vm         {} vCPU, {} MiB, {} ({}), kernel {}\n",
            self.vcpus,
            self.mem_mib,
            self.accel.used,
            self.accel
                .kvm_unavailable
                .as_deref()
                .map_or("KVM used".to_string(), |r| format!("KVM unavailable: {r}")),
            self.kernel_release
        ));
        s.push_str(&format!("outcome    {}\n", self.outcome.summary()));
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.2} {unit}"));
        s.push_str(&format!(
            "timings    compile {}, boot→agent {}, boot→attach {}, workload {}, vm {:.2} s, total {:.2} s\n",
            opt(t.compile_ms, "ms"),
            opt(t.boot_to_agent_s, "s"),
            opt(t.boot_to_attach_s, "s"),
            opt(t.workload_ms, "ms"),
            t.vm_wall_s,
            t.total_s
        ));
        if let Some(g) = &self.guest {
            if let Some(sch) = &g.scheduler {
                let states: Vec<&str> = sch
                    .state_transitions
                    .iter()
                    .map(|x| x.state.as_str())
                    .collect();
                s.push_str(&format!(
                    "scheduler  ops {} | states {} | detached cleanly: {}\n",
                    sch.ops_name.as_deref().unwrap_or("-"),
                    if states.is_empty() {
                        "-".into()
                    } else {
                        states.join(" → ")
                    },
                    sch.detached_cleanly
                ));
                if sch.loaded {
                    s.push_str(&format!(
                        "constants  {} SCX_* filled from kernel BTF",
                        sch.scx_enums_filled
                    ));
                    if !sch.scx_enums_missing.is_empty() {
                        s.push_str(&format!(
                            "; not in this kernel (left 0): {}",
                            sch.scx_enums_missing.join(", ")
                        ));
                    }
                    s.push('\n');
                }
                if let Some(e) = &sch.exit {
                    s.push_str(&format!("exit       {} from {}\n", e.describe(), e.source));
                }
                if let Some(log) = &sch.verifier_log {
                    s.push_str("verifier log (trimmed):\n");
                    for l in log.lines() {
                        s.push_str(&format!("  | {l}\n"));
                    }
                }
            }
            if let Some(w) = &g.workload {
                s.push_str("metrics\n");
                for m in &w.metrics {
                    let star = if m.name == w.primary { "*" } else { " " };
                    s.push_str(&format!(
                        "  {star} {:<24} {:>12.2} {}\n",
                        m.name, m.value, m.unit
                    ));
                }
            }
            if !g.kernel_messages.is_empty() {
                s.push_str("kernel (sched_ext)\n");
                for l in g.kernel_messages.iter().take(20) {
                    s.push_str(&format!("  {l}\n"));
                }
            }
        }
        if let Some(d) = &self.run_dir {
            s.push_str(&format!("run dir    {}\n", d.display()));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schedcp_proto::report::{ExitInfo, SchedulerOutcome};

    fn guest_with(s: SchedulerOutcome) -> GuestReport {
        GuestReport {
            scheduler: Some(s),
            ..Default::default()
        }
    }

    #[test]
    fn verdicts() {
        assert!(matches!(
            judge(None, None, Some("Oops: int3".into())),
            Outcome::KernelCrash { .. }
        ));
        assert_eq!(judge(None, Some(9), None), Outcome::TimedOut { after_s: 9 });
        assert!(matches!(judge(None, None, None), Outcome::Failed { .. }));

        let rejected = SchedulerOutcome {
            verifier_log: Some("R0 invalid mem access".into()),
            ..Default::default()
        };
        assert!(matches!(
            judge(Some(&guest_with(rejected)), None, None),
            Outcome::Rejected { .. }
        ));

        let exit = ExitInfo {
            kind: 1026,
            kind_name: "SCX_EXIT_ERROR_STALL".into(),
            exit_code: 0,
            reason: "runnable task stall".into(),
            message: "x failed to run".into(),
            source: "uei".into(),
        };
        let ejected = SchedulerOutcome {
            loaded: true,
            attached: true,
            exit: Some(exit),
            ..Default::default()
        };
        assert!(matches!(
            judge(Some(&guest_with(ejected)), None, None),
            Outcome::SchedulerError { .. }
        ));

        let gone = SchedulerOutcome {
            loaded: true,
            attached: true,
            survived_workload: false,
            ..Default::default()
        };
        assert!(matches!(
            judge(Some(&guest_with(gone)), None, None),
            Outcome::Failed { .. }
        ));
    }

    #[test]
    fn exit_codes_are_distinct_per_class() {
        assert_eq!(Outcome::Completed.exit_code(), 0);
        assert_eq!(Outcome::TimedOut { after_s: 1 }.exit_code(), 5);
        assert_eq!(
            Outcome::Rejected {
                reason: String::new()
            }
            .exit_code(),
            4
        );
    }
}
