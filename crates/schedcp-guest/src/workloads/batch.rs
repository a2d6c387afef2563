//! `batch`: many short CPU-bound jobs and a few long ones, one thread each,
//! released at once. Every job has a fixed amount of work, so the only thing
//! that changes between schedulers is the order the CPUs work through them.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use schedcp_proto::workload::{Better, Metric, WorkloadSpec};
use serde::Serialize;
use serde_json::json;

use super::spin::{spin, Spinner};
use super::stats::{mean, percentile};
use super::sync::{join_all, spawn, Gate, OnExit};
use super::{count, ms, Report};

pub struct Params {
    short: usize,
    long: usize,
    short_work: Duration,
    long_work: Duration,
}

impl Params {
    pub fn from_spec(spec: &WorkloadSpec) -> Self {
        Params {
            short: count(spec, "short"),
            long: count(spec, "long"),
            short_work: Duration::from_millis(spec.int("short_ms")),
            long_work: Duration::from_millis(spec.int("long_ms")),
        }
    }

    /// Long jobs come first: they reach the start gate first, which is the
    /// convoy case a run-to-completion FIFO handles worst, and the one a
    /// scheduler that favours short jobs should win.
    fn jobs(&self) -> Vec<Job> {
        let long = (0..self.long).map(|_| Job {
            kind: JobKind::Long,
            work: self.long_work,
        });
        let short = (0..self.short).map(|_| Job {
            kind: JobKind::Short,
            work: self.short_work,
        });
        long.chain(short).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum JobKind {
    Short,
    Long,
}

#[derive(Debug, Clone, Copy)]
struct Job {
    kind: JobKind,
    work: Duration,
}

#[derive(Debug, Serialize)]
struct JobResult {
    kind: JobKind,
    work_ms: f64,
    completion_ms: f64,
}

pub(super) fn run(params: &Params) -> Result<Report> {
    let jobs = params.jobs();
    if jobs.is_empty() {
        bail!("batch with short=0 and long=0 has no jobs to run");
    }
    let spinner = Spinner::calibrate();
    let completions = run_jobs(&spinner, &jobs)?;
    let results: Vec<JobResult> = jobs
        .iter()
        .zip(completions)
        .map(|(job, done)| JobResult {
            kind: job.kind,
            work_ms: ms(job.work),
            completion_ms: ms(done),
        })
        .collect();
    Ok(report(&spinner, results))
}

/// Runs every job on its own thread and returns each one's completion time,
/// measured from the moment the gate opened.
fn run_jobs(spinner: &Spinner, jobs: &[Job]) -> Result<Vec<Duration>> {
    let gate = Gate::new();
    thread::scope(|s| {
        // If spawning fails part-way, the threads already waiting must leave.
        let _abort = OnExit::new(|| gate.abort());
        let gate = &gate;
        let handles = jobs
            .iter()
            .enumerate()
            .map(|(i, job)| {
                let iters = spinner.iters_for(job.work);
                spawn(s, format!("batch-{i}"), move || run_job(gate, iters))
            })
            .collect::<Result<Vec<_>>>()?;
        gate.await_arrivals(handles.len())?;
        let release = Instant::now();
        gate.release()?;
        let finished = join_all(handles)?;
        Ok(finished
            .into_iter()
            .map(|at| at.saturating_duration_since(release))
            .collect())
    })
}

fn run_job(gate: &Gate, iters: u64) -> Result<Instant> {
    if !gate.wait()? {
        bail!("aborted before the start");
    }
    spin(iters);
    Ok(Instant::now())
}

fn report(spinner: &Spinner, jobs: Vec<JobResult>) -> Report {
    let completions = |kind: Option<JobKind>| -> Vec<f64> {
        let mut v: Vec<f64> = jobs
            .iter()
            .filter(|j| kind.is_none_or(|k| j.kind == k))
            .map(|j| j.completion_ms)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (all, short, long) = (
        completions(None),
        completions(Some(JobKind::Short)),
        completions(Some(JobKind::Long)),
    );
    let lower_ms = |name: &str, value: f64| Metric::new(name, value, "ms", Better::Lower);

    let mut metrics = Vec::new();
    // `all` is non-empty: `run` refuses a batch without jobs.
    metrics.extend(all.last().map(|&max| lower_ms("makespan", max)));
    metrics.extend(mean(&all).map(|v| lower_ms("mean_completion", v)));
    metrics.extend(mean(&short).map(|v| lower_ms("short_mean_completion", v)));
    metrics.extend(percentile(&short, 0.9).map(|v| lower_ms("short_p90_completion", v)));
    metrics.extend(mean(&long).map(|v| lower_ms("long_mean_completion", v)));
    metrics.push(Metric::new(
        "jobs",
        jobs.len() as f64,
        "jobs",
        Better::Higher,
    ));

    let detail = json!({
        "calibration": { "iters_per_ms": spinner.iters_per_ms() },
        "jobs": jobs,
    });
    Report {
        primary: "makespan",
        metrics,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{run_str, value};

    #[test]
    fn runs_short_and_long_jobs() {
        let r = run_str("batch:short=6,long=2,short_ms=3,long_ms=12");
        assert_eq!(r.primary, "makespan");
        assert_eq!(value(&r, "jobs"), 8.0);
        let makespan = value(&r, "makespan");
        assert!(makespan > 0.0);
        for name in [
            "mean_completion",
            "short_mean_completion",
            "short_p90_completion",
            "long_mean_completion",
        ] {
            let v = value(&r, name);
            assert!(
                v > 0.0 && v <= makespan,
                "{name} = {v}, makespan {makespan}"
            );
        }

        let jobs = r.detail["jobs"].as_array().expect("per-job detail");
        assert_eq!(jobs.len(), 8);
        assert_eq!(jobs.iter().filter(|j| j["kind"] == "long").count(), 2);
        assert!(jobs
            .iter()
            .all(|j| j["completion_ms"].as_f64().is_some_and(|c| c > 0.0)));
        assert!(r.detail["calibration"]["iters_per_ms"]
            .as_f64()
            .is_some_and(|c| c > 0.0));
    }

    #[test]
    fn a_class_without_jobs_has_no_metrics() {
        let r = run_str("batch:short=3,long=0,short_ms=2");
        assert_eq!(value(&r, "jobs"), 3.0);
        assert!(r.metric("long_mean_completion").is_none());
        let r = run_str("batch:short=0,long=1,long_ms=2");
        assert!(
            r.metric("short_mean_completion").is_none()
                && r.metric("short_p90_completion").is_none()
        );
        assert!(value(&r, "long_mean_completion") > 0.0);
    }

    #[test]
    fn refuses_an_empty_batch() {
        let spec = "batch:short=0,long=0".parse().unwrap();
        assert!(super::super::run(&spec).is_err());
    }
}
