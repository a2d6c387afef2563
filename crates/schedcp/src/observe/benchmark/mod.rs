//! The feedback channel: run a workload profile N times, record the
//! run-set, and judge it against a baseline run-set of the same profile.
//! verify, deploy and tune measure through [`run_benchmark`] and judge
//! through [`crate::compare::stats::compare`], so every stage applies the
//! same statistics.

pub mod command;
pub mod history;

use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use schedcp_proto::workload::{Better, WorkloadSpec};
use serde::Serialize;

use crate::compare::stats::{self, Comparison, Criteria, Summary};
use crate::compare::{AbReport, Arm, Metric, Setting};
use crate::error::Error;
use crate::lab::report::Outcome;
use crate::lab::{self, Lab, LabRequest, SchedulerRef};
use crate::observe::profile_signatures;
use crate::observe::workload_profiles::{self, Target, WorkloadProfile};
use crate::store::Store;
pub use history::{LabEnv, RunSet, Sample};

/// Most runs one benchmark may ask for.
pub const MAX_RUNS: u32 = 100;
pub const MAX_LABEL_LEN: usize = 128;

/// What to benchmark, and how to judge it.
#[derive(Debug, Clone)]
pub struct BenchmarkRequest {
    /// Profile name.
    pub profile: String,
    /// 1..=[`MAX_RUNS`].
    pub runs: u32,
    /// What is under test, recorded with the run-set. Default: for a lab
    /// profile the policy's label; for a command, the scheduler running on
    /// the host (`default` without sched_ext).
    pub label: Option<String>,
    /// A run-set of the same profile to compare against.
    pub baseline: Option<i64>,
    /// The scheduler a lab profile runs under (`Default`: the kernel's own).
    /// Command profiles run on the host as it is and take only `Default`.
    pub policy: SchedulerRef,
    pub criteria: Criteria,
    /// Command profiles: take the workload's signature in a warm-up run
    /// first (probes attached; not counted) and keep it with the profile
    /// and this run-set. Needs what the probes need (root, BPF).
    pub signature: bool,
}

impl BenchmarkRequest {
    pub fn new(profile: impl Into<String>, runs: u32) -> Self {
        BenchmarkRequest {
            profile: profile.into(),
            runs,
            label: None,
            baseline: None,
            policy: SchedulerRef::Default,
            criteria: Criteria::default(),
            signature: false,
        }
    }
}

/// Progress of a benchmark, for a display or a log.
pub enum BenchProgress<'a> {
    /// Run `run` (1-based) of `runs` is starting.
    Run { run: u32, runs: u32 },
    /// What the lab is doing inside a lab run.
    Lab(lab::Progress<'a>),
    /// Run `run` ended.
    Done {
        run: u32,
        runs: u32,
        sample: &'a Sample,
    },
}

/// Where [`run_benchmark`] reports progress.
pub type ProgressFn<'a> = dyn FnMut(BenchProgress<'_>) + 'a;

/// A failed run.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Failure {
    /// 1-based.
    pub run: u32,
    pub reason: String,
}

/// A run-set and, with a baseline, its verdict.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BenchmarkReport {
    /// Run-set id; pass it as a later benchmark's baseline.
    pub id: i64,
    pub profile: String,
    /// The command line or lab workload.
    pub target: String,
    pub label: String,
    pub metric: String,
    pub unit: String,
    #[schemars(with = "String")]
    pub direction: Better,
    pub started_at: String,
    pub host_kernel: String,
    pub lab: Option<LabEnv>,
    /// Runs attempted.
    pub runs: u32,
    /// Metric values of the runs that succeeded, in run order.
    pub values: Vec<f64>,
    pub failures: Vec<Failure>,
    /// Median and spread of `values`; absent when every run failed.
    pub summary: Option<Summary>,
    pub baseline: Option<BaselineReport>,
    /// The workload's signature, from this run-set's warm-up run.
    pub signature: Option<crate::observe::signature::Signature>,
    /// Reasons to distrust the comparison (different kernel, accelerator, failures).
    pub warnings: Vec<String>,
}

/// The baseline run-set and the verdict against it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BaselineReport {
    pub id: i64,
    pub label: String,
    pub started_at: String,
    /// The verdict, also inside `ab` (kept flat here for existing callers).
    #[serde(flatten)]
    pub comparison: Comparison,
    /// The comparison in the shape every A/B in schedcp reports: both
    /// sides' values, the setting (stored history, not interleaved), the
    /// improvement with its interval.
    pub ab: AbReport,
}

/// Run `req.profile` `req.runs` times, record the run-set, and report it
/// (compared with `req.baseline` if given). `lab` is needed for lab
/// profiles only.
///
/// The baseline is checked before anything runs. Failed runs (non-zero
/// exit, timeout, a lab run that did not complete or lacks the metric) are
/// recorded and reported, not errors; missing setup (no guest kernel, a
/// scheduler that does not compile) is an error and records nothing.
pub fn run_benchmark(
    store: &mut Store,
    lab: Option<&Lab>,
    req: &BenchmarkRequest,
    progress: &mut ProgressFn<'_>,
) -> Result<BenchmarkReport, Error> {
    if !(1..=MAX_RUNS).contains(&req.runs) {
        return Err(Error::Input(format!(
            "runs must be between 1 and {MAX_RUNS}, got {}",
            req.runs
        )));
    }
    req.criteria.validate().map_err(Error::Input)?;
    let profile = workload_profiles::get(store, &req.profile)?;
    let baseline = req
        .baseline
        .map(|id| baseline_set(store, &profile, id))
        .transpose()?;
    let label = match &req.label {
        Some(l) => validate_label(l)?,
        None => default_label(&profile, &req.policy),
    };

    let started = SystemTime::now();
    let mut signature_id = None;
    let (samples, lab_env) = match &profile.target {
        Target::Command {
            argv,
            cwd,
            timeout_s,
        } => {
            if req.policy != SchedulerRef::Default {
                return Err(Error::Input(format!(
                    "profile '{}' runs a command on the host, which runs whatever scheduler the host has; a policy applies to lab profiles only (to record what the host ran, use a label)",
                    profile.name
                )));
            }
            let timeout = Duration::from_secs(*timeout_s);
            if req.signature {
                signature_id = Some(warm_up_signature(
                    store,
                    &profile,
                    argv,
                    cwd.as_deref(),
                    timeout,
                )?);
            }
            let samples = repeat(req.runs, progress, &mut |_| {
                let t = command::time_command(argv, cwd.as_deref(), timeout)?;
                let ms = t.wall.as_secs_f64() * 1e3;
                Ok(match t.outcome {
                    Ok(()) => Sample::ok(ms, ms),
                    Err(reason) => Sample::failed(reason, ms),
                })
            })?;
            (samples, None)
        }
        Target::Lab { .. } if req.signature => {
            return Err(Error::Input(format!(
                "profile '{}' runs in the lab VM: a signature describes a workload on this host (command profiles only)",
                profile.name
            )))
        }
        Target::Lab { workload } => {
            let lab = lab.ok_or_else(|| {
                Error::Internal(anyhow!(
                    "benchmarking lab profile '{}' needs the lab",
                    profile.name
                ))
            })?;
            let (samples, env) = run_lab(
                lab,
                workload,
                &req.policy,
                &profile.metric,
                req.runs,
                progress,
            )?;
            (samples, Some(env))
        }
    };
    let id = history::insert(
        store,
        &history::NewRunSet {
            profile_id: profile.id,
            started,
            finished: SystemTime::now(),
            label,
            host_kernel: crate::host::kernel_release(),
            lab: lab_env,
            baseline_id: baseline.as_ref().map(|b| b.id),
            signature_id,
            samples,
        },
    )?;
    report(store, id, req.baseline, req.criteria)
}

/// The report of the recorded run-set `id`, compared with run-set
/// `baseline` (same profile) if given.
pub fn report(
    store: &Store,
    id: i64,
    baseline: Option<i64>,
    criteria: Criteria,
) -> Result<BenchmarkReport, Error> {
    let set = history::load(store.conn(), id)?
        .ok_or_else(|| Error::NotFound(format!("no benchmark run-set with id {id}")))?;
    let profile = workload_profiles::get_by_id(store.conn(), set.profile_id)?
        .ok_or_else(|| Error::Internal(anyhow!("run-set {id} refers to a missing profile")))?;
    let baseline = baseline
        .map(|b| baseline_set(store, &profile, b))
        .transpose()?;
    let values = set.values();
    let failures: Vec<Failure> = (1u32..)
        .zip(&set.samples)
        .filter_map(|(run, s)| {
            s.error.as_ref().map(|reason| Failure {
                run,
                reason: reason.clone(),
            })
        })
        .collect();
    let mut warnings = Vec::new();
    if !failures.is_empty() {
        warnings.push(format!(
            "{} of {} runs failed; the statistics use the {} that succeeded",
            failures.len(),
            set.samples.len(),
            values.len()
        ));
    }
    let baseline = baseline.map(|b| {
        warnings.extend(environment_warnings(&b, &set));
        let failed = |s: &RunSet| -> Vec<String> {
            s.samples
                .iter()
                .zip(1..)
                .filter_map(|(x, run)| x.error.as_ref().map(|e| format!("run {run}: {e}")))
                .collect()
        };
        let design = "against a stored run-set (not interleaved)";
        let setting = match &set.lab {
            Some(env) => Setting::lab("lab VM", design, &env.accel, "not recorded"),
            None => Setting::host(design),
        };
        let ab = AbReport::new(
            profile.name.clone(),
            Metric {
                name: profile.metric.clone(),
                unit: profile.unit.clone(),
                direction: profile.direction,
            },
            Arm::new(
                format!("run-set {} ({})", b.id, b.label),
                b.values(),
                failed(&b),
            ),
            Arm::new(
                format!("run-set {} ({})", set.id, set.label),
                values.clone(),
                failed(&set),
            ),
            Vec::new(),
            setting,
            criteria,
        );
        BaselineReport {
            id: b.id,
            label: b.label.clone(),
            started_at: b.started_at.clone(),
            comparison: ab.comparison.clone(),
            ab,
        }
    });
    Ok(BenchmarkReport {
        id: set.id,
        target: profile.target.describe(),
        profile: profile.name,
        label: set.label,
        metric: profile.metric,
        unit: profile.unit,
        direction: profile.direction,
        started_at: set.started_at,
        host_kernel: set.host_kernel,
        lab: set.lab,
        runs: u32::try_from(set.samples.len()).unwrap_or(u32::MAX),
        summary: stats::summarize(&values),
        values,
        failures,
        baseline,
        signature: set
            .signature_id
            .map(|id| profile_signatures::get(store, id))
            .transpose()?
            .flatten()
            .and_then(|s| s.signature),
        warnings,
    })
}

/// One run of the command with the signature's probes attached, before
/// the measured runs (its time is not a sample): kept with the profile.
fn warm_up_signature(
    store: &mut Store,
    profile: &WorkloadProfile,
    argv: &[String],
    cwd: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<i64, Error> {
    let (sig, ()) = crate::observe::signature::take(|| {
        let t = command::time_command(argv, cwd, timeout)?;
        t.outcome.map_err(|why| {
            Error::Input(format!(
                "the warm-up run for the signature failed, so nothing was measured: {why}"
            ))
        })?;
        Ok(crate::observe::signature::Ran {
            output: (),
            usage: t.usage,
        })
    })?;
    profile_signatures::record(
        store,
        profile.id,
        profile_signatures::Taker::Benchmark,
        &sig,
    )
}

/// One run-set in a profile's history.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct HistoryEntry {
    pub id: i64,
    pub started_at: String,
    pub label: String,
    pub runs: usize,
    pub failed: usize,
    pub summary: Option<Summary>,
    pub baseline_id: Option<i64>,
    pub host_kernel: String,
    pub lab: Option<LabEnv>,
    /// The signature taken with this run-set, if one was.
    pub signature_id: Option<i64>,
}

/// A profile and its newest run-sets.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct History {
    pub profile: WorkloadProfile,
    /// Its newest signature (tune or `benchmark --signature`).
    pub signature: Option<profile_signatures::ProfileSignature>,
    /// Newest first.
    pub entries: Vec<HistoryEntry>,
}

/// The newest `limit` run-sets of profile `name`.
pub fn history(store: &Store, name: &str, limit: u32) -> Result<History, Error> {
    let profile = workload_profiles::get(store, name)?;
    let entries = history::for_profile(store.conn(), profile.id, limit)?
        .into_iter()
        .map(|s| HistoryEntry {
            id: s.id,
            summary: stats::summarize(&s.values()),
            runs: s.samples.len(),
            failed: s.failures(),
            started_at: s.started_at,
            label: s.label,
            baseline_id: s.baseline_id,
            host_kernel: s.host_kernel,
            lab: s.lab,
            signature_id: s.signature_id,
        })
        .collect();
    let signature = profile_signatures::latest(store, profile.id)?;
    Ok(History {
        profile,
        signature,
        entries,
    })
}

/// Run `once` for runs 1..=`runs`, reporting progress. An `Err` from `once`
/// (the command cannot even start) ends the benchmark.
fn repeat(
    runs: u32,
    progress: &mut ProgressFn<'_>,
    once: &mut dyn FnMut(&mut ProgressFn<'_>) -> Result<Sample, Error>,
) -> Result<Vec<Sample>, Error> {
    let mut samples = Vec::with_capacity(runs as usize);
    for run in 1..=runs {
        progress(BenchProgress::Run { run, runs });
        let sample = once(progress)?;
        progress(BenchProgress::Done {
            run,
            runs,
            sample: &sample,
        });
        samples.push(sample);
    }
    Ok(samples)
}

/// Run a lab workload `runs` times under `policy` and take `metric` from
/// each report.
fn run_lab(
    lab: &Lab,
    workload: &WorkloadSpec,
    policy: &SchedulerRef,
    metric: &str,
    runs: u32,
    progress: &mut ProgressFn<'_>,
) -> Result<(Vec<Sample>, LabEnv), Error> {
    let cfg = &lab.config().lab;
    let req = LabRequest {
        policy: policy.clone(),
        tunables: Vec::new(),
        workload: workload.clone(),
        then: Vec::new(),
        others: Vec::new(),
        vcpus: cfg.vcpus,
        mem_mib: cfg.mem_mib,
        timeout: Duration::from_secs(cfg.timeout_s),
        knob_sets: Vec::new(),
        knobs: None,
        accel: cfg.accel,
    };
    let (mut kernels, mut accels) = (Vec::new(), Vec::new());
    let samples = repeat(runs, progress, &mut |progress| {
        let r = match lab.run(&req, &mut |p| progress(BenchProgress::Lab(p))) {
            Ok(r) => r,
            // An internal failure of one VM run (a QEMU hiccup) costs that
            // run; missing setup or a scheduler that does not compile would
            // fail every run the same way, so it ends the benchmark.
            Err(Error::Internal(e)) => {
                return Ok(Sample::failed(format!("lab run failed: {e:#}"), 0.0));
            }
            Err(e) => return Err(e),
        };
        let elapsed_ms = r.timings.total_s * 1e3;
        for (seen, this) in [
            (&mut kernels, &r.kernel_release),
            (&mut accels, &r.accel.used),
        ] {
            if !seen.contains(this) {
                seen.push(this.clone());
            }
        }
        let value = r
            .guest
            .as_ref()
            .and_then(|g| g.workload.as_ref())
            .and_then(|w| w.metric(metric))
            .map(|m| m.value);
        Ok(match (&r.outcome, value) {
            (Outcome::Completed, Some(v)) => Sample::ok(v, elapsed_ms),
            (Outcome::Completed, None) => Sample::failed(
                format!("the workload completed but reported no '{metric}'"),
                elapsed_ms,
            ),
            (o, _) => Sample::failed(o.summary(), elapsed_ms),
        })
    })?;
    Ok((
        samples,
        LabEnv {
            kernel: kernels.join(","),
            accel: accels.join(","),
        },
    ))
}

/// The run-set `id` as a baseline for `profile`.
fn baseline_set(store: &Store, profile: &WorkloadProfile, id: i64) -> Result<RunSet, Error> {
    let set = history::load(store.conn(), id)?.ok_or_else(|| {
        Error::Input(format!(
            "no benchmark run-set with id {id}; `schedcp observe workload history {}` lists this profile's run-sets",
            profile.name
        ))
    })?;
    if set.profile_id != profile.id {
        let other = workload_profiles::get_by_id(store.conn(), set.profile_id)?.map_or_else(
            || format!("#{}", set.profile_id),
            |p| format!("'{}'", p.name),
        );
        return Err(Error::Input(format!(
            "run-set {id} is a benchmark of profile {other}, not '{}'; a baseline must be a run-set of the same profile",
            profile.name
        )));
    }
    Ok(set)
}

/// Differences between where the baseline and the candidate ran that can
/// explain a difference on their own.
fn environment_warnings(baseline: &RunSet, candidate: &RunSet) -> Vec<String> {
    let mut w = Vec::new();
    if baseline.host_kernel != candidate.host_kernel {
        w.push(format!(
            "the baseline ran on host kernel {}, this run-set on {}",
            baseline.host_kernel, candidate.host_kernel
        ));
    }
    if let (Some(b), Some(c)) = (&baseline.lab, &candidate.lab) {
        if b.accel != c.accel {
            w.push(format!(
                "the baseline's VMs ran under {}, this run-set's under {}: emulated and virtualized timings are not comparable",
                b.accel, c.accel
            ));
        }
        if b.kernel != c.kernel {
            w.push(format!(
                "the baseline's guest kernel was {}, this run-set's {}",
                b.kernel, c.kernel
            ));
        }
    }
    if baseline.failures() > 0 {
        w.push(format!(
            "{} of the baseline's {} runs failed",
            baseline.failures(),
            baseline.samples.len()
        ));
    }
    w
}

fn validate_label(label: &str) -> Result<String, Error> {
    let label = label.trim();
    if label.is_empty()
        || label.chars().count() > MAX_LABEL_LEN
        || label.chars().any(char::is_control)
    {
        return Err(Error::Input(format!(
            "invalid label '{label}': it must be 1 to {MAX_LABEL_LEN} printable characters"
        )));
    }
    Ok(label.to_string())
}

fn default_label(profile: &WorkloadProfile, policy: &SchedulerRef) -> String {
    match profile.target {
        Target::Command { .. } => host_scheduler(),
        Target::Lab { .. } => policy.label(),
    }
}

/// The scheduler the host runs: the attached sched_ext scheduler's name, or
/// `default` for the kernel's own (also on kernels without sched_ext).
fn host_scheduler() -> String {
    let read = |f: &str| std::fs::read_to_string(format!("/sys/kernel/sched_ext/{f}"));
    match read("state") {
        Ok(state) if state.trim() == "enabled" => read("root/ops")
            .ok()
            .map(|ops| ops.trim().to_string())
            .filter(|ops| !ops.is_empty())
            .unwrap_or_else(|| "sched_ext".into()),
        _ => "default".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::stats::Verdict;
    use crate::observe::workload_profiles::NewProfile;

    fn store_with(name: &str, argv: &[&str]) -> Store {
        let mut s = Store::open_in_memory().unwrap();
        workload_profiles::add(
            &mut s,
            NewProfile {
                name: name.into(),
                description: String::new(),
                target: Target::Command {
                    argv: argv.iter().map(|a| a.to_string()).collect(),
                    cwd: None,
                    timeout_s: 10,
                },
                metric: None,
                direction: None,
            },
        )
        .unwrap();
        s
    }

    fn quiet(_: BenchProgress<'_>) {}

    fn input_error<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
        match r {
            Err(Error::Input(m) | Error::NotFound(m)) => m,
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn a_command_benchmark_is_recorded_and_reported() {
        let mut s = store_with("t", &["true"]);
        let r = run_benchmark(&mut s, None, &BenchmarkRequest::new("t", 3), &mut quiet).unwrap();
        assert_eq!((r.runs, r.values.len()), (3, 3));
        assert!(r.failures.is_empty() && r.warnings.is_empty());
        assert_eq!((r.metric.as_str(), r.unit.as_str()), ("wall_time", "ms"));
        assert_eq!(r.label, "default", "no sched_ext on the host");
        assert!(r.summary.unwrap().median > 0.0);
        assert!(r.baseline.is_none());
        let h = history(&s, "t", 10).unwrap();
        assert_eq!(h.entries.len(), 1);
        assert_eq!(h.entries[0].id, r.id);
    }

    #[test]
    fn failed_runs_are_recorded_not_errors() {
        let mut s = store_with("f", &["sh", "-c", "echo nope >&2; exit 1"]);
        let r = run_benchmark(&mut s, None, &BenchmarkRequest::new("f", 2), &mut quiet).unwrap();
        assert!(r.values.is_empty() && r.summary.is_none());
        assert_eq!(
            r.failures,
            [1, 2].map(|run| Failure {
                run,
                reason: "exit status 1: nope".into()
            })
        );
        assert!(r.warnings[0].contains("2 of 2 runs failed"));
    }

    #[test]
    fn the_same_command_against_itself_is_no_significant_change() {
        // A sleep, not CPU work: its duration barely depends on what else
        // the (shared, 2-core) test host is doing, so the two run-sets are
        // draws from one distribution; whatever residual difference the
        // test could detect stays under the 1% minimum effect.
        let mut s = store_with("same", &["sleep", "0.3"]);
        let first =
            run_benchmark(&mut s, None, &BenchmarkRequest::new("same", 5), &mut quiet).unwrap();
        let mut req = BenchmarkRequest::new("same", 5);
        req.baseline = Some(first.id);
        req.label = Some("again".into());
        let second = run_benchmark(&mut s, None, &req, &mut quiet).unwrap();
        assert_eq!(second.label, "again");
        let b = second.baseline.unwrap();
        assert_eq!((b.id, b.label.as_str()), (first.id, "default"));
        let c = &b.comparison;
        assert_eq!(c.verdict, Verdict::NoSignificantChange, "{c:?}");
        assert!(c.p_value.is_some() && c.ci_pct.is_some(), "{c:?}");
        // The baseline is remembered with the run-set.
        let h = history(&s, "same", 10).unwrap();
        assert_eq!(h.entries[0].baseline_id, Some(first.id));
    }

    #[test]
    fn bad_requests_are_input_errors_and_record_nothing() {
        let mut s = store_with("a", &["true"]);
        workload_profiles::add(
            &mut s,
            NewProfile {
                name: "b".into(),
                description: String::new(),
                target: Target::Command {
                    argv: vec!["true".into()],
                    cwd: None,
                    timeout_s: 10,
                },
                metric: None,
                direction: None,
            },
        )
        .unwrap();
        let other =
            run_benchmark(&mut s, None, &BenchmarkRequest::new("b", 1), &mut quiet).unwrap();

        let m = input_error(run_benchmark(
            &mut s,
            None,
            &BenchmarkRequest::new("a", 0),
            &mut quiet,
        ));
        assert!(m.contains("runs must be between 1 and 100, got 0"), "{m}");
        let m = input_error(run_benchmark(
            &mut s,
            None,
            &BenchmarkRequest::new("nope", 1),
            &mut quiet,
        ));
        assert!(m.contains("no workload profile named 'nope'"), "{m}");

        let mut req = BenchmarkRequest::new("a", 1);
        req.baseline = Some(9999);
        let m = input_error(run_benchmark(&mut s, None, &req, &mut quiet));
        assert!(m.contains("no benchmark run-set with id 9999"), "{m}");
        req.baseline = Some(other.id);
        let m = input_error(run_benchmark(&mut s, None, &req, &mut quiet));
        assert!(m.contains("profile 'b', not 'a'"), "{m}");

        let mut req = BenchmarkRequest::new("a", 1);
        req.policy = SchedulerRef::Builtin("fifo".into());
        let m = input_error(run_benchmark(&mut s, None, &req, &mut quiet));
        assert!(m.contains("lab profiles only"), "{m}");

        let mut req = BenchmarkRequest::new("a", 1);
        req.label = Some("  ".into());
        assert!(
            input_error(run_benchmark(&mut s, None, &req, &mut quiet)).contains("invalid label")
        );

        let mut req = BenchmarkRequest::new("a", 1);
        req.criteria.alpha = 2.0;
        assert!(input_error(run_benchmark(&mut s, None, &req, &mut quiet)).contains("alpha"));

        assert!(history(&s, "a", 10).unwrap().entries.is_empty());
    }

    #[test]
    fn environment_differences_are_flagged() {
        let set = |kernel: &str, accel: &str| RunSet {
            id: 1,
            profile_id: 1,
            started_at: String::new(),
            finished_at: String::new(),
            label: "default".into(),
            host_kernel: kernel.into(),
            lab: Some(LabEnv {
                kernel: "g".into(),
                accel: accel.into(),
            }),
            baseline_id: None,
            signature_id: None,
            samples: vec![Sample::ok(1.0, 1.0)],
        };
        assert!(environment_warnings(&set("a", "kvm"), &set("a", "kvm")).is_empty());
        let w = environment_warnings(&set("a", "kvm"), &set("b", "tcg"));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[1].contains("not comparable"));
    }
}
