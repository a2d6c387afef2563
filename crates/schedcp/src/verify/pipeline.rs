//! The verification pipeline: every stage in order, each gating the next.
//!
//! 1. `compile`: clang in the sandbox (see [`crate::bpf::compile`]).
//! 2. `static`: analysis of the object ([`super::analyze`]).
//! 3. `kernel`: the real kernel verifier, attach and detach, inside the
//!    sched_ext micro-VM, running the `fairness` correctness workload.
//! 4. `correctness`: every task of a `batch` workload completes, no
//!    sched_ext error exit or watchdog stall, and no starvation: each
//!    equal-weight hog gets at least [`MIN_SHARE_PCT`] of an equal split and
//!    each nice-5 hog at least [`MIN_NICED_SHARE_PCT`] of a nice-0 hog's CPU.
//! 5. `performance`: the requested workloads under the candidate and under
//!    the kernel's default scheduler, alternating, judged by the observe
//!    service's statistics (Mann-Whitney U, Hodges-Lehmann interval). A
//!    significant regression is a warning: safety gates deployment,
//!    performance is evidence.
//! 6. `token`: a signed deployment token bound to the object, the report,
//!    the kernel it was verified on and the ops name.
//!
//! An external scheduler (an scx binary from the catalogue, installed with
//! `schedcp policy install-external`) has no source to compile or object
//! to analyse: its first stage is `install` (the pinned binary and its
//! hash), `static` is skipped, and its verification is the dynamic trial —
//! stages 3–5 run the binary itself in the micro-VM, started by the guest
//! and stopped with SIGINT, and the token binds the binary's hash.
//!
//! Stages 3–5 share one VM (boot ≈ 2.5 s under TCG): the guest runs the
//! whole plan in one boot and loads a fresh scheduler instance for each
//! candidate run, so no BPF state leaks from one run into the next, and
//! candidate and default are compared on the same (emulated) machine.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use schedcp_proto::job::{PlannedRun, Runner};
use schedcp_proto::report::{GuestMessage, RunRecord, StepKind};
use schedcp_proto::workload::WorkloadSpec;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::analyze;
use super::report::{Stage, StageVerdict, VerifyReport};
use super::token::{Binding, Keys};
use crate::bpf::compile::{CompileError, CompiledObject, Compiler};
use crate::compare::{AbReport, Arm, Criteria, Metric, Setting, Side, Verdict};
use crate::config::Config;
use crate::error::Error;
use crate::lab::report::{LabReport, Outcome};
use crate::lab::{Lab, LabRequest, Progress, SchedulerRef};
use crate::policies::external::Installed;

/// Smallest share of an equal split any equal-weight hog may get.
pub const MIN_SHARE_PCT: f64 = 50.0;
/// Smallest share of a nice-0 hog's CPU a nice-5 hog may get (fair: ~33%).
pub const MIN_NICED_SHARE_PCT: f64 = 5.0;
pub const MAX_RUNS: usize = 20;

/// What to verify.
#[derive(Debug, Clone)]
pub struct Subject {
    /// For reports and tokens: a policy name or the file stem.
    pub policy: String,
    /// Repository version, 0 for an ad-hoc file.
    pub version: u32,
    /// How the subject was named on the command line.
    pub label: String,
    /// The scheduler source; for an external binary, its catalogue spec.
    pub source: String,
    /// Set for an external scheduler: the installed binary to trial.
    pub binary: Option<Installed>,
}

/// How long an external scheduler may take to load and attach in the VM
/// (its BPF goes through the kernel verifier, slow under TCG).
const BINARY_START_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, Clone)]
pub struct Options {
    pub workloads: Vec<WorkloadSpec>,
    /// Runs per side in the performance comparison.
    pub runs: usize,
    pub vcpus: u32,
    pub mem_mib: u32,
    pub vm_timeout: Duration,
    pub token_ttl: Duration,
}

impl Options {
    pub fn validate(&self) -> Result<(), Error> {
        if self.workloads.is_empty() || self.workloads.len() > 8 {
            return Err(Error::Input("give 1 to 8 --workloads".into()));
        }
        if !(2..=MAX_RUNS).contains(&self.runs) {
            return Err(Error::Input(format!(
                "--runs must be 2..={MAX_RUNS} (the significance test needs at least 2 per side)"
            )));
        }
        crate::config::check_vm_size(self.vcpus, self.mem_mib, self.vm_timeout.as_secs())
            .map_err(|e| Error::Input(format!("{e:#}")))
    }
}

struct Ctx<'a> {
    cfg: &'a Config,
    lab: Lab,
    opts: &'a Options,
    stages: Vec<Stage>,
    progress: &'a mut (dyn FnMut(&str) + Send),
}

impl Ctx<'_> {
    fn push(
        &mut self,
        name: &str,
        ms: f64,
        verdict: StageVerdict,
        reasons: Vec<String>,
        detail: serde_json::Value,
    ) -> bool {
        self.stages.push(Stage {
            name: name.into(),
            verdict,
            ms,
            reasons,
            detail,
        });
        verdict != StageVerdict::Fail
    }

    /// One VM: `workload` under `object`, then `then` in the same boot.
    fn lab_run(
        &mut self,
        object: &SchedulerRef,
        workload: &WorkloadSpec,
        then: Vec<PlannedRun>,
    ) -> Result<LabReport, Error> {
        // The watchdog covers the whole plan: one run's budget per run.
        let runs = 1 + then.len() as u32;
        let req = LabRequest {
            policy: object.clone(),
            tunables: Vec::new(),
            workload: workload.clone(),
            then,
            others: Vec::new(),
            vcpus: self.opts.vcpus,
            mem_mib: self.opts.mem_mib,
            timeout: self.opts.vm_timeout * runs,
            knob_sets: Vec::new(),
            knobs: None,
            accel: self.cfg.lab.accel,
        };
        let total = runs;
        let label = format!("{} on {workload}", object.label());
        (self.progress)(&format!(
            "lab: {label}, then {} more runs in the same VM",
            total - 1
        ));
        let progress = &mut *self.progress;
        self.lab.run(&req, &mut |p| {
            if let Progress::Guest(GuestMessage::Run { index, record }) = p {
                let side = if record.scheduler {
                    "candidate"
                } else {
                    "default"
                };
                progress(&format!("lab: run {}/{total} ({side}) done", index + 2));
            }
        })
    }
}

fn since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn lab_summary(r: &LabReport) -> serde_json::Value {
    let g = r.guest.as_ref();
    json!({
        "workload": r.workload.to_string(),
        "outcome": r.outcome,
        "metrics": g.and_then(|g| g.workload.as_ref()).map(|w| &w.metrics),
        "exit": g.and_then(|g| g.scheduler.as_ref()).and_then(|s| s.exit.as_ref()),
        "verifier_log": g.and_then(|g| g.scheduler.as_ref()).and_then(|s| s.verifier_log.as_ref()),
        "ops_name": g.and_then(|g| g.scheduler.as_ref()).and_then(|s| s.ops_name.as_ref()),
        "timings": r.timings,
        "kernel_messages": g.map(|g| &g.kernel_messages),
    })
}

fn record_summary(r: &RunRecord) -> serde_json::Value {
    json!({
        "scheduler": r.scheduler,
        "elapsed_ms": r.elapsed_ms,
        "metrics": r.workload.as_ref().map(|w| &w.metrics),
        "workload_error": r.workload_error,
        "error": r.error,
        "exit": r.outcome.as_ref().and_then(|s| s.exit.as_ref()),
    })
}

fn record_metric(r: &RunRecord, name: &str) -> Option<f64> {
    r.workload.as_ref()?.metric(name).map(|m| m.value)
}

fn metric(r: &LabReport, name: &str) -> Option<f64> {
    r.guest
        .as_ref()?
        .workload
        .as_ref()?
        .metric(name)
        .map(|m| m.value)
}

/// A run that ended with the scheduler in trouble, in words; `None` if fine.
fn trouble(r: &LabReport) -> Option<String> {
    if r.outcome != Outcome::Completed {
        return Some(r.outcome.summary());
    }
    let s = r.guest.as_ref()?.scheduler.as_ref()?;
    if !s.survived_workload {
        return Some("the scheduler was no longer attached when the workload finished".into());
    }
    if !s.detached_cleanly {
        return Some("the scheduler did not detach cleanly".into());
    }
    None
}

/// Verify `subject`; `workdir` receives the object (kept for deployment).
pub fn verify(
    cfg: &Config,
    subject: &Subject,
    opts: &Options,
    workdir: &Path,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<VerifyReport, Error> {
    opts.validate()?;
    let started = Instant::now();
    let mut ctx = Ctx {
        cfg,
        lab: Lab::new(cfg.clone()),
        opts,
        stages: Vec::new(),
        progress,
    };
    let mut report = VerifyReport {
        subject: subject.label.clone(),
        policy: subject.policy.clone(),
        version: subject.version,
        source_sha256: hex::encode(Sha256::digest(subject.source.as_bytes())),
        object_sha256: None,
        ops_name: None,
        kernel_release: None,
        accel: None,
        stages: Vec::new(),
        passed: false,
        total_s: 0.0,
        token: None,
    };
    let names = [
        if subject.binary.is_some() {
            "install"
        } else {
            "compile"
        },
        "static",
        "kernel",
        "correctness",
        "performance",
        "token",
    ];
    let ok = run_stages(&mut ctx, subject, workdir, &mut report)?;
    let done = ctx.stages.len();
    for n in &names[done..] {
        ctx.stages.push(Stage {
            name: (*n).into(),
            verdict: StageVerdict::Skipped,
            ms: 0.0,
            reasons: vec!["an earlier stage failed".into()],
            detail: serde_json::Value::Null,
        });
    }
    report.stages = std::mem::take(&mut ctx.stages);
    report.passed = ok;
    report.total_s = started.elapsed().as_secs_f64();
    Ok(report)
}

fn run_stages(
    ctx: &mut Ctx<'_>,
    subject: &Subject,
    workdir: &Path,
    report: &mut VerifyReport,
) -> Result<bool, Error> {
    let Some((object, runner)) = (match &subject.binary {
        Some(installed) => install_stage(ctx, installed, workdir, report)?,
        None => compile_stages(ctx, subject, workdir, report)?,
    }) else {
        return Ok(false);
    };
    let candidate = SchedulerRef::Object {
        name: subject.policy.clone(),
        path: object.path.clone(),
        sha256: object.sha256.clone(),
        runner,
    };

    // 3–5 run in one VM: the fairness trial under the candidate (its load
    // and attach are the kernel stage), then the batch completion trial, then
    // the performance comparison. Each candidate run loads a fresh instance,
    // and the guest stops the plan at the first run in trouble.
    let fairness: WorkloadSpec = "fairness:hogs=4,niced=2,duration_ms=2000"
        .parse()
        .expect("valid spec");
    let batch: WorkloadSpec = "batch:short=24,long=2,short_ms=10,long_ms=200"
        .parse()
        .expect("valid spec");
    let workloads = ctx.opts.workloads.clone();
    let mut plan = vec![PlannedRun {
        workload: batch,
        scheduler: true,
        other: None,
        knobs: None,
    }];
    // (workload index, is the candidate) of each performance run, in plan order.
    let mut slots = Vec::new();
    for (wi, w) in workloads.iter().enumerate() {
        for side in crate::compare::abba(ctx.opts.runs) {
            let is_cand = side == crate::compare::Side::Candidate;
            plan.push(PlannedRun {
                workload: w.clone(),
                scheduler: is_cand,
                other: None,
                knobs: None,
            });
            slots.push((wi, is_cand));
        }
    }
    let run = ctx.lab_run(&candidate, &fairness, plan)?;
    report.kernel_release = Some(run.kernel_release.clone());
    report.accel = Some(run.accel.used.clone());
    let detail = lab_summary(&run);
    let kernel_ms = run.timings.initramfs_ms
        + run
            .timings
            .boot_to_attach_s
            .unwrap_or(run.timings.vm_wall_s)
            * 1e3;
    match &run.outcome {
        Outcome::Rejected { reason } => {
            let log = run
                .guest
                .as_ref()
                .and_then(|g| g.scheduler.as_ref())
                .and_then(|s| s.verifier_log.clone())
                .unwrap_or_default();
            let tail: Vec<String> = log
                .lines()
                .rev()
                .take(12)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .map(str::to_string)
                .collect();
            let mut reasons = vec![format!("the kernel verifier rejected it: {reason}")];
            reasons.extend(tail);
            ctx.push("kernel", kernel_ms, StageVerdict::Fail, reasons, detail);
            return Ok(false);
        }
        Outcome::Failed { .. } | Outcome::KernelCrash { .. } | Outcome::TimedOut { .. }
            if run
                .guest
                .as_ref()
                .and_then(|g| g.scheduler.as_ref())
                .is_none_or(|s| !s.attached) =>
        {
            ctx.push(
                "kernel",
                kernel_ms,
                StageVerdict::Fail,
                vec![run.outcome.summary()],
                detail,
            );
            return Ok(false);
        }
        _ => {}
    }
    let ops = run
        .guest
        .as_ref()
        .and_then(|g| g.scheduler.as_ref())
        .and_then(|s| s.ops_name.clone());
    ctx.push(
        "kernel",
        kernel_ms,
        StageVerdict::Pass,
        vec![format!(
            "loaded and attached on {} ({}); root/ops = {}",
            run.kernel_release,
            run.accel.used,
            ops.as_deref().unwrap_or("?")
        )],
        json!({ "boot_to_attach_s": run.timings.boot_to_attach_s }),
    );

    // 4. Correctness: the fairness run, then a batch that must finish.
    let mut correctness_ms = run
        .steps
        .iter()
        .skip_while(|s| s.step != StepKind::Workload)
        .take(2)
        .map(|s| s.elapsed_ms)
        .sum::<f64>();
    let mut reasons = Vec::new();
    let mut failed = false;
    if let Some(why) = trouble(&run) {
        failed = true;
        reasons.push(format!("fairness run: {why}"));
    } else {
        let share = metric(&run, "min_share_pct").unwrap_or(0.0);
        let niced = metric(&run, "niced_min_share_pct").unwrap_or(0.0);
        if share < MIN_SHARE_PCT {
            failed = true;
            reasons.push(format!("starvation: an equal-weight hog got {share:.1}% of an equal split (minimum {MIN_SHARE_PCT}%)"));
        }
        if niced < MIN_NICED_SHARE_PCT {
            failed = true;
            reasons.push(format!("starvation: a nice-5 hog got {niced:.1}% of a nice-0 hog's CPU (minimum {MIN_NICED_SHARE_PCT}%)"));
        }
        if !failed {
            reasons.push(format!(
                "fairness: min share {share:.1}%, nice-5 share {niced:.1}%"
            ));
        }
    }
    let mut runs = vec![detail];
    if !failed {
        match run.then.first() {
            None => {
                failed = true;
                reasons.push(format!(
                    "batch run: did not finish ({})",
                    run.outcome.summary()
                ));
            }
            Some(b) => {
                correctness_ms += b.elapsed_ms;
                if let Some(why) = b.trouble() {
                    failed = true;
                    reasons.push(format!("batch run: {why}"));
                } else if let Some(e) = &b.workload_error {
                    failed = true;
                    reasons.push(format!("batch run: not every job completed: {e}"));
                } else {
                    reasons.push(format!(
                        "batch: all 26 jobs completed, makespan {:.0} ms",
                        record_metric(b, "makespan").unwrap_or(f64::NAN)
                    ));
                }
                runs.push(record_summary(b));
            }
        }
    }
    let verdict = if failed {
        StageVerdict::Fail
    } else {
        StageVerdict::Pass
    };
    if !ctx.push(
        "correctness",
        correctness_ms,
        verdict,
        reasons,
        json!({ "runs": runs }),
    ) {
        return Ok(false);
    }

    // 5. Performance against the kernel's default scheduler, same VM.
    let perf = run.then.get(1..).unwrap_or_default();
    let performance_ms = perf.iter().map(|r| r.elapsed_ms).sum::<f64>();
    if perf.len() < slots.len() {
        // Either the last record is the run in trouble, or the VM ended
        // (watchdog, crash) during the run after it.
        let (failed, why) = match perf.last().map(|r| (r, r.trouble())) {
            Some((r, Some(why))) => (perf.len() - 1, (why, record_summary(r))),
            _ => (perf.len(), (run.outcome.summary(), lab_summary(&run))),
        };
        let (wi, is_cand) = slots[failed];
        ctx.push(
            "performance",
            performance_ms,
            StageVerdict::Fail,
            vec![format!(
                "{}: run {} of {} ({}) did not finish: {}",
                workloads[wi],
                failed + 1,
                slots.len(),
                if is_cand { "candidate" } else { "default" },
                why.0
            )],
            why.1,
        );
        return Ok(false);
    }
    let mut reasons = Vec::new();
    let mut comparisons = Vec::new();
    let mut warn = false;
    for (wi, w) in workloads.iter().enumerate() {
        let (mut base, mut cand) = (Vec::new(), Vec::new());
        let mut metric = None;
        let mut order = Vec::new();
        for (r, _) in perf.iter().zip(&slots).filter(|(_, (i, _))| *i == wi) {
            order.push(if r.scheduler {
                Side::Candidate
            } else {
                Side::Baseline
            });
            if let Some(m) = r.workload.as_ref().and_then(|w| w.primary_metric()) {
                metric = Some(Metric {
                    name: m.name.clone(),
                    unit: m.unit.clone(),
                    direction: m.better,
                });
                if r.scheduler {
                    cand.push(m.value)
                } else {
                    base.push(m.value)
                }
            }
        }
        let Some(metric) = metric else {
            reasons.push(format!("{w}: no run produced its metric"));
            warn = true;
            continue;
        };
        let ab = AbReport::new(
            w.to_string(),
            metric,
            Arm::new("default", base, vec![]),
            Arm::new(subject.policy.clone(), cand, vec![]),
            order,
            Setting::lab(
                "lab VM",
                "interleaved ABBA in one boot",
                &run.accel.used,
                &run.accel.clock,
            ),
            Criteria::default(),
        );
        if ab.verdict() == Verdict::Regressed {
            warn = true;
        }
        reasons.push(format!("{w}: {} — {}", ab.headline(), ab.comparison.reason));
        comparisons.push(ab);
    }
    let verdict = if warn {
        StageVerdict::Warn
    } else {
        StageVerdict::Pass
    };
    ctx.push(
        "performance",
        performance_ms,
        verdict,
        reasons,
        json!({ "same_vm": true, "comparisons": comparisons, "vm_wall_s": run.timings.vm_wall_s }),
    );

    // 6. Token: binds the object, this report (minus the token) and the kernel.
    let t = Instant::now();
    report.stages = ctx.stages.clone();
    let keys = Keys::load_or_create(&ctx.cfg.state_dir())?;
    let binding = Binding {
        policy: subject.policy.clone(),
        version: subject.version,
        object_sha256: object.sha256.clone(),
        report_sha256: report.digest(),
        kernel_release: report.kernel_release.clone().unwrap_or_default(),
        ops_name: ops.or(report.ops_name.clone()).unwrap_or_default(),
        sched_ext: true,
    };
    let token = keys.issue(&binding, ctx.opts.token_ttl)?;
    report.token = Some(token);
    ctx.push(
        "token",
        since(t),
        StageVerdict::Pass,
        vec![format!(
            "signed with key {}, valid {} h",
            keys.kid(),
            ctx.opts.token_ttl.as_secs() / 3600
        )],
        json!({ "report_sha256": binding.report_sha256 }),
    );
    Ok(true)
}

/// Stages 1–2 for a source: sandboxed compile, static analysis. `None`
/// when a stage failed (it is in the report).
fn compile_stages(
    ctx: &mut Ctx<'_>,
    subject: &Subject,
    workdir: &Path,
    report: &mut VerifyReport,
) -> Result<Option<(CompiledObject, Runner)>, Error> {
    // 1. Sandboxed compile.
    (ctx.progress)("compiling in the sandbox");
    let t = Instant::now();
    let include_dir =
        crate::bpf::include::include_dir(&ctx.cfg.cache_dir()).map_err(Error::Internal)?;
    let compiler = Compiler::new(ctx.cfg.lab.clang.clone(), include_dir);
    let file = format!("{}.bpf.c", subject.policy);
    let object = match compiler.compile(&file, &subject.source, workdir) {
        Ok(o) => o,
        Err(CompileError::Tool(e)) => return Err(Error::Setup(format!("{e:#}"))),
        Err(e) => {
            let detail = match &e {
                CompileError::Diagnostics { diagnostics, .. } => {
                    json!({ "diagnostics": diagnostics })
                }
                _ => serde_json::Value::Null,
            };
            ctx.push(
                "compile",
                since(t),
                StageVerdict::Fail,
                vec![e.to_string()],
                detail,
            );
            return Ok(None);
        }
    };
    report.object_sha256 = Some(object.sha256.clone());
    ctx.push(
        "compile",
        since(t),
        StageVerdict::Pass,
        vec![format!(
            "{} bytes, sha256 {}",
            object.size_bytes,
            &object.sha256[..16]
        )],
        json!({ "object": object }),
    );

    // 2. Static analysis.
    (ctx.progress)("static analysis");
    let t = Instant::now();
    let analysis = analyze::analyze(&object.path, &analyze::Limits::default())?;
    let reasons: Vec<String> = analysis
        .findings
        .iter()
        .map(|f| {
            let severity = match f.severity {
                analyze::Severity::Error => "error",
                analyze::Severity::Warning => "warning",
            };
            format!("{severity} {}: {}", f.code, f.message)
        })
        .collect();
    let verdict = if !analysis.passed() {
        StageVerdict::Fail
    } else if analysis.findings.is_empty() {
        StageVerdict::Pass
    } else {
        StageVerdict::Warn
    };
    report.ops_name = analysis.ops.as_ref().map(|o| o.name.clone());
    let detail = serde_json::to_value(&analysis).unwrap_or_default();
    if !ctx.push("static", since(t), verdict, reasons, detail) {
        return Ok(None);
    }
    Ok(Some((object, Runner::Object)))
}

/// Stage 1 for an external scheduler: the pinned, installed binary, copied
/// into the work directory (so it is kept by hash with the report).
fn install_stage(
    ctx: &mut Ctx<'_>,
    installed: &Installed,
    workdir: &Path,
    report: &mut VerifyReport,
) -> Result<Option<(CompiledObject, Runner)>, Error> {
    let t = Instant::now();
    let bytes = std::fs::read(&installed.binary).map_err(|e| {
        Error::Setup(format!(
            "reading {}: {e}; install it again with `schedcp policy install-external {} --force`",
            installed.binary.display(),
            installed.policy
        ))
    })?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    if sha256 != installed.sha256 {
        ctx.push(
            "install",
            since(t),
            StageVerdict::Fail,
            vec![format!(
                "{} changed since it was installed (sha256 {sha256}, recorded {})",
                installed.binary.display(),
                installed.sha256
            )],
            serde_json::Value::Null,
        );
        return Ok(None);
    }
    let path = workdir.join(format!("{}.bin", installed.policy));
    std::fs::write(&path, &bytes).map_err(|e| Error::Internal(e.into()))?;
    report.object_sha256 = Some(sha256.clone());
    ctx.push(
        "install",
        since(t),
        StageVerdict::Pass,
        vec![format!(
            "{} {} ({} bytes, sha256 {}), built by {}",
            installed.crate_name,
            installed.crate_version,
            bytes.len(),
            &sha256[..16],
            installed.rustc
        )],
        serde_json::to_value(installed).unwrap_or_default(),
    );
    ctx.push(
        "static",
        0.0,
        StageVerdict::Skipped,
        vec!["a prebuilt scheduler program: its BPF is embedded in the binary and checked by the kernel verifier when it loads (next stage)".into()],
        serde_json::Value::Null,
    );
    let object = CompiledObject {
        path,
        sha256,
        size_bytes: bytes.len() as u64,
        compile_ms: 0.0,
    };
    let runner = Runner::Binary {
        args: Vec::new(),
        start_timeout_ms: BINARY_START_TIMEOUT.as_millis() as u64,
    };
    Ok(Some((object, runner)))
}

/// Where verified objects are kept: `<state>/verified/<object sha256>.bpf.o`,
/// so a token can later be checked against the bytes it was issued for.
pub fn object_store(cfg: &Config) -> PathBuf {
    cfg.state_dir().join("verified")
}
