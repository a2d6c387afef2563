//! One lab job: attach, run the workload, detach, collect the evidence.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use schedcp_proto::job::{GuestJob, SchedulerJob};
use schedcp_proto::report::{
    exit_kind_name, ExitInfo, GuestMessage, GuestReport, SchedulerOutcome, StepKind,
};
use schedcp_proto::{JOB_PATH, OBJECT_PATH};

use crate::channel::ReportChannel;
use crate::loader::{self, LoadError};
use crate::sched_ext::{self, StateMonitor};
use crate::{sys, workloads};

pub fn run_job(ch: &mut ReportChannel) -> GuestReport {
    let mut report = GuestReport {
        kernel_release: sys::kernel_release(),
        ..Default::default()
    };
    match read_job() {
        Ok(job) => execute(ch, &job, &mut report),
        Err(e) => report.error = Some(format!("{e:#}")),
    }
    report.kernel_messages = sys::sched_ext_kernel_messages();
    if let Some(s) = report.scheduler.as_mut() {
        if s.exit.is_none() {
            s.exit = exit_from_kernel_log(&report.kernel_messages);
        }
    }
    report
}

fn read_job() -> anyhow::Result<GuestJob> {
    let text = std::fs::read_to_string(JOB_PATH).with_context(|| format!("reading {JOB_PATH}"))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {JOB_PATH}"))
}

/// Times a step and tells the host about it as soon as it ends.
fn step<T>(
    ch: &mut ReportChannel,
    kind: StepKind,
    f: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    let result = f();
    let _ = ch.send(&GuestMessage::Step {
        step: kind,
        ok: result.is_ok(),
        elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
        uptime_s: sys::uptime_s(),
        detail: result.as_ref().err().cloned(),
    });
    result
}

fn execute(ch: &mut ReportChannel, job: &GuestJob, report: &mut GuestReport) {
    let Some(sched) = &job.scheduler else {
        report.boot_to_attach_s = Some(sys::uptime_s());
        run_workload(ch, job, report);
        return;
    };
    let state_timeout = Duration::from_millis(job.state_timeout_ms);
    let mut outcome = SchedulerOutcome {
        name: sched.name.clone(),
        ..Default::default()
    };
    let result = attach_run_detach(ch, job, sched, state_timeout, &mut outcome, report);
    if let Err(e) = result {
        report.error = Some(e);
    }
    report.scheduler = Some(outcome);
}

fn attach_run_detach(
    ch: &mut ReportChannel,
    job: &GuestJob,
    sched: &SchedulerJob,
    state_timeout: Duration,
    outcome: &mut SchedulerOutcome,
    report: &mut GuestReport,
) -> Result<(), String> {
    let loaded = step(ch, StepKind::Load, || {
        match loader::load(Path::new(OBJECT_PATH), &sched.rodata) {
            Ok(s) => Ok(s),
            Err(LoadError::Prepare(e)) => Err(format!("preparing the object failed: {e:#}")),
            Err(LoadError::Rejected { error, log }) => {
                outcome.verifier_log = Some(log);
                Err(format!(
                    "the kernel verifier rejected the scheduler: {error}"
                ))
            }
        }
    });
    let mut scheduler = loaded?;
    outcome.loaded = true;
    outcome.programs = scheduler.programs.clone();
    let names: Vec<&str> = sched.rodata.iter().map(|r| r.name.as_str()).collect();
    outcome.rodata_in_kernel = scheduler.rodata_values(&names);
    (outcome.scx_enums_filled, outcome.scx_enums_missing) = scheduler.scx_enums.clone();

    let monitor = StateMonitor::start(Vec::new());
    let attached = step(ch, StepKind::Attach, || {
        scheduler.attach().map_err(|e| format!("{e:#}"))?;
        if !sched_ext::wait_for_state("enabled", state_timeout) {
            return Err(format!(
                "sched_ext state is '{}' {} ms after attach, expected 'enabled'",
                sched_ext::state().unwrap_or_default(),
                state_timeout.as_millis()
            ));
        }
        Ok(())
    });
    monitor.sample();
    if let Err(e) = attached {
        // The attach may have failed in struct_ops validation: libbpf and the
        // kernel log say why.
        let log = loader::verifier_log::take();
        if !log.trim().is_empty() {
            outcome.verifier_log = Some(loader::verifier_log::trim(&log, 80));
        }
        outcome.state_transitions = monitor.finish();
        outcome.exit = scheduler.exit_info();
        return Err(e);
    }
    outcome.attached = true;
    outcome.ops_name = sched_ext::root_ops();
    report.boot_to_attach_s = Some(sys::uptime_s());

    run_workload(ch, job, report);
    outcome.survived_workload = sched_ext::state().as_deref() == Some("enabled")
        && sched_ext::root_ops() == outcome.ops_name;

    let detached = step(ch, StepKind::Detach, || {
        scheduler.detach();
        if sched_ext::wait_for_state("disabled", state_timeout) {
            Ok(())
        } else {
            Err(format!(
                "sched_ext state is still '{}' after detach",
                sched_ext::state().unwrap_or_default()
            ))
        }
    });
    outcome.detached_cleanly = detached.is_ok();
    outcome.state_transitions = monitor.finish();
    outcome.exit = scheduler.exit_info();
    detached
}

fn run_workload(ch: &mut ReportChannel, job: &GuestJob, report: &mut GuestReport) {
    let result = step(ch, StepKind::Workload, || {
        workloads::run(&job.workload).map_err(|e| format!("{e:#}"))
    });
    match result {
        Ok(r) => report.workload = Some(r),
        Err(e) => report.workload_error = Some(e),
    }
}

/// Without a `uei` record, the kernel's own message is the evidence:
/// `sched_ext: BPF scheduler "name" disabled (reason)` followed by the message.
fn exit_from_kernel_log(lines: &[String]) -> Option<ExitInfo> {
    let idx = lines
        .iter()
        .rposition(|l| l.contains("BPF scheduler") && l.contains("disabled ("))?;
    let line = &lines[idx];
    let reason = line
        .rsplit_once('(')
        .map(|(_, r)| r.trim_end_matches(')').to_string())
        .unwrap_or_default();
    let kind = if reason.contains("stall") {
        1026
    } else if reason.contains("runtime error") {
        1025
    } else if reason.contains("error") {
        1024
    } else if reason.contains("unregistered") {
        64
    } else {
        0
    };
    let message = lines.get(idx + 1).cloned().unwrap_or_default();
    Some(ExitInfo {
        kind,
        kind_name: exit_kind_name(kind).into(),
        exit_code: 0,
        reason,
        message,
        source: "kmsg".into(),
    })
}
