//! One lab job: attach, run the workload, detach, collect the evidence;
//! then the job's further planned runs in the same boot.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use schedcp_proto::job::{GuestJob, Runner, SchedulerJob};
use schedcp_proto::report::{
    exit_kind_name, ExitInfo, GuestMessage, GuestReport, RunRecord, SchedulerOutcome, StepKind,
};
use schedcp_proto::workload::{WorkloadResult, WorkloadSpec};
use schedcp_proto::JOB_PATH;

use crate::channel::ReportChannel;
use crate::{knobs, sys, workloads};
use schedcp_scx::loader::{self, LoadError};
use schedcp_scx::sysfs::{self as sched_ext, StateMonitor};
use schedcp_scx::ExternalScheduler;

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

/// Apply knob set `index` of the job for one run.
fn knobs_for(job: &GuestJob, index: Option<usize>) -> Result<Option<knobs::Applied>, String> {
    let Some(i) = index else { return Ok(None) };
    let set = job
        .knob_sets
        .get(i)
        .ok_or_else(|| format!("the job has no knob set {i}"))?;
    knobs::apply(set).map(Some)
}

/// Put a run's knobs back; a failure becomes the run's error.
fn restore_knobs(applied: Option<knobs::Applied>, error: &mut Option<String>) {
    if let Some(mut a) = applied {
        if let Err(e) = a.restore() {
            error.get_or_insert(format!("restoring knobs after the run: {e}"));
        }
    }
}

fn execute(ch: &mut ReportChannel, job: &GuestJob, report: &mut GuestReport) {
    let main_knobs = match knobs_for(job, job.knobs) {
        Ok(a) => a,
        Err(e) => {
            report.error = Some(e);
            return;
        }
    };
    let Some(sched) = &job.scheduler else {
        report.boot_to_attach_s = Some(sys::uptime_s());
        (report.workload, report.workload_error) = split(run_workload(ch, &job.workload));
        restore_knobs(main_knobs, &mut report.error);
        if report.error.is_none() {
            run_plan(ch, job, None, Duration::ZERO);
        }
        return;
    };
    let state_timeout = Duration::from_millis(job.state_timeout_ms);
    let mut outcome = SchedulerOutcome {
        name: sched.name.clone(),
        ..Default::default()
    };
    let mut workload = None;
    let result = attach_run_detach(
        ch,
        &job.workload,
        sched,
        state_timeout,
        &mut outcome,
        &mut workload,
    );
    let mut knob_error = None;
    restore_knobs(main_knobs, &mut knob_error);
    let result = match knob_error {
        Some(e) => result.and(Err(e)),
        None => result,
    };
    if outcome.attached {
        report.boot_to_attach_s = outcome.attached_at_s;
    }
    if let Some(w) = workload {
        (report.workload, report.workload_error) = split(w);
    }
    let healthy = result.is_ok()
        && outcome.survived_workload
        && !outcome.exit.as_ref().is_some_and(|x| x.is_error());
    if let Err(e) = result {
        report.error = Some(e);
    }
    report.scheduler = Some(outcome);
    if healthy {
        run_plan(ch, job, Some(sched), state_timeout);
    }
}

/// The job's further runs, in order; stops at the first scheduler in trouble.
fn run_plan(
    ch: &mut ReportChannel,
    job: &GuestJob,
    sched: Option<&SchedulerJob>,
    state_timeout: Duration,
) {
    for (index, planned) in job.then.iter().enumerate() {
        let started = Instant::now();
        let mut record = RunRecord {
            scheduler: planned.scheduler,
            other: planned.other,
            elapsed_ms: 0.0,
            workload: None,
            workload_error: None,
            outcome: None,
            error: None,
        };
        let sched = match planned.other {
            Some(i) => job.others.get(i),
            None => sched,
        };
        let knobs = match knobs_for(job, planned.knobs) {
            Ok(a) => a,
            Err(e) => {
                record.error = Some(e);
                let _ = ch.send(&GuestMessage::Run {
                    index,
                    record: Box::new(record),
                });
                break;
            }
        };
        if let (true, None) = (planned.scheduler, sched) {
            record.error = Some("the job has no scheduler for this run".into());
        } else if let (true, Some(sched)) = (planned.scheduler, sched) {
            let mut outcome = SchedulerOutcome {
                name: sched.name.clone(),
                ..Default::default()
            };
            let mut workload = None;
            if let Err(e) = attach_run_detach(
                ch,
                &planned.workload,
                sched,
                state_timeout,
                &mut outcome,
                &mut workload,
            ) {
                record.error = Some(e);
            }
            if let Some(w) = workload {
                (record.workload, record.workload_error) = split(w);
            }
            record.outcome = Some(outcome);
        } else {
            (record.workload, record.workload_error) = split(run_workload(ch, &planned.workload));
        }
        restore_knobs(knobs, &mut record.error);
        record.elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        let stop = record.trouble().is_some();
        let _ = ch.send(&GuestMessage::Run {
            index,
            record: Box::new(record),
        });
        if stop {
            break;
        }
    }
}

fn split(r: Result<WorkloadResult, String>) -> (Option<WorkloadResult>, Option<String>) {
    match r {
        Ok(w) => (Some(w), None),
        Err(e) => (None, Some(e)),
    }
}

/// Load a fresh instance of the object, attach, run `workload`, detach.
/// `workload` is set once the workload ran (whatever its result).
fn attach_run_detach(
    ch: &mut ReportChannel,
    spec: &WorkloadSpec,
    sched: &SchedulerJob,
    state_timeout: Duration,
    outcome: &mut SchedulerOutcome,
    workload: &mut Option<Result<WorkloadResult, String>>,
) -> Result<(), String> {
    // Kernel messages of earlier runs in this boot are not this run's evidence.
    let kmsg_seen = sys::sched_ext_kernel_messages().len();
    let exit_from_kmsg = || {
        let lines = sys::sched_ext_kernel_messages();
        exit_from_kernel_log(lines.get(kmsg_seen..).unwrap_or_default())
    };
    if let Runner::Binary {
        args,
        start_timeout_ms,
    } = &sched.runner
    {
        let start_timeout = Duration::from_millis(*start_timeout_ms);
        return binary_run_detach(
            ch,
            spec,
            Path::new(sched.artefact_path()),
            args,
            start_timeout,
            state_timeout,
            outcome,
            workload,
            &exit_from_kmsg,
        );
    }
    let loaded = step(ch, StepKind::Load, || {
        match loader::load(Path::new(sched.artefact_path()), &sched.rodata) {
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
        outcome.exit = scheduler.exit_info().or_else(exit_from_kmsg);
        return Err(e);
    }
    outcome.attached = true;
    outcome.attached_at_s = Some(sys::uptime_s());
    outcome.ops_name = sched_ext::root_ops();

    *workload = Some(run_workload(ch, spec));
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
    outcome.exit = scheduler.exit_info().or_else(exit_from_kmsg);
    detached
}

/// The same trial for a scheduler that is its own program: start it (its
/// load and the kernel verifier happen inside), wait for `enabled`, run the
/// workload, stop it with SIGINT and wait for `disabled`.
#[allow(clippy::too_many_arguments)]
fn binary_run_detach(
    ch: &mut ReportChannel,
    spec: &WorkloadSpec,
    binary: &Path,
    args: &[String],
    start_timeout: Duration,
    state_timeout: Duration,
    outcome: &mut SchedulerOutcome,
    workload: &mut Option<Result<WorkloadResult, String>>,
    exit_from_kmsg: &dyn Fn() -> Option<ExitInfo>,
) -> Result<(), String> {
    let monitor = StateMonitor::start(Vec::new());
    let mut process = step(ch, StepKind::Load, || {
        ExternalScheduler::spawn(binary, args, Path::new("/tmp/scheduler.out"))
            .map_err(|e| format!("{e:#}"))
    })?;
    outcome.loaded = true;
    let attached = step(ch, StepKind::Attach, || process.wait_enabled(start_timeout));
    monitor.sample();
    if let Err(e) = attached {
        outcome.verifier_log = Some(process.output_tail());
        process.stop(state_timeout);
        outcome.state_transitions = monitor.finish();
        outcome.exit = exit_from_kmsg();
        return Err(e);
    }
    outcome.attached = true;
    outcome.attached_at_s = Some(sys::uptime_s());
    outcome.ops_name = sched_ext::root_ops();

    *workload = Some(run_workload(ch, spec));
    outcome.survived_workload = sched_ext::state().as_deref() == Some("enabled")
        && sched_ext::root_ops() == outcome.ops_name
        && process.exit_status().is_none();

    let detached = step(ch, StepKind::Detach, || {
        let (status, killed) = process.stop(state_timeout);
        if killed {
            return Err(format!(
                "the scheduler ignored SIGINT for {} ms and was killed",
                state_timeout.as_millis()
            ));
        }
        if !sched_ext::wait_for_state("disabled", state_timeout) {
            return Err(format!(
                "sched_ext state is still '{}' after the scheduler exited",
                sched_ext::state().unwrap_or_default()
            ));
        }
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => Err(format!(
                "the scheduler exited with {} on SIGINT: {}",
                schedcp_scx::process::describe(s),
                tail_lines(&process.output_tail(), 5)
            )),
            None => Err("the scheduler's exit status is unknown".into()),
        }
    });
    outcome.detached_cleanly = detached.is_ok();
    outcome.state_transitions = monitor.finish();
    outcome.exit = exit_from_kmsg();
    detached
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

fn run_workload(ch: &mut ReportChannel, spec: &WorkloadSpec) -> Result<WorkloadResult, String> {
    step(ch, StepKind::Workload, || {
        workloads::run(spec).map_err(|e| format!("{e:#}"))
    })
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
