//! Long operations (verify) run as jobs: the call returns a job id at once,
//! the work runs on its own thread, and `job_status` reports progress and,
//! at the end, the result. Finished jobs are kept for an hour, at most
//! [`KEEP_FINISHED_MAX`] of them.
//!
//! Slots: work jobs (verify, tune, trials, benchmarks) share `api.max_jobs`
//! and each token may run `api.max_jobs_per_token` of them; a deploy has a
//! slot of its own, so verifications can never block a deploy. A job can be
//! cancelled (`job_cancel`): its thread's cancel flag is set, and the
//! process supervisor kills whatever the job runs (VMs, compiles,
//! workloads), so it ends promptly as `cancelled`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ApiError, Code};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// Which slots a job uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Verify, tune, trials, benchmarks: `api.max_jobs` shared,
    /// `api.max_jobs_per_token` each.
    Work,
    /// A deploy: its own slot, never taken by work.
    Deploy,
}

/// A job as reported.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobStatus {
    pub id: String,
    /// e.g. `verify vtime@1`.
    pub title: String,
    pub state: JobState,
    /// Steps reported so far (e.g. the verifier's stages).
    pub steps: u32,
    /// The latest progress message.
    pub message: String,
    pub elapsed_s: f64,
    /// The job's result once it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Job {
    owner: String,
    kind: JobKind,
    cancel: Arc<AtomicBool>,
    started: Instant,
    status: JobStatus,
    finished: Option<Instant>,
}

pub struct Jobs {
    max_running: usize,
    max_per_token: usize,
    jobs: Mutex<HashMap<String, Arc<Mutex<Job>>>>,
}

/// Handed to the work: report progress.
#[derive(Clone)]
pub struct Progress(Arc<Mutex<Job>>);

impl Progress {
    pub fn say(&self, message: &str) {
        let mut j = self.0.lock().expect("job lock");
        j.status.steps += 1;
        j.status.message = message.to_string();
    }
}

const KEEP_FINISHED: Duration = Duration::from_secs(3600);
/// Finished jobs kept at most (the oldest go first).
pub const KEEP_FINISHED_MAX: usize = 256;

impl Jobs {
    pub fn new(max_running: usize, max_per_token: usize) -> Jobs {
        Jobs {
            max_running,
            max_per_token,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    /// Forget finished jobs past their time, and the oldest past the cap.
    fn prune(jobs: &mut HashMap<String, Arc<Mutex<Job>>>) {
        jobs.retain(|_, j| {
            j.lock()
                .expect("job lock")
                .finished
                .is_none_or(|f| f.elapsed() < KEEP_FINISHED)
        });
        let mut finished: Vec<(Instant, String)> = jobs
            .iter()
            .filter_map(|(id, j)| {
                j.lock()
                    .expect("job lock")
                    .finished
                    .map(|f| (f, id.clone()))
            })
            .collect();
        if finished.len() > KEEP_FINISHED_MAX {
            finished.sort();
            for (_, id) in &finished[..finished.len() - KEEP_FINISHED_MAX] {
                jobs.remove(id);
            }
        }
    }

    /// Start `work` on its own thread, owned by token `owner`.
    pub fn spawn(
        &self,
        owner: &str,
        title: String,
        kind: JobKind,
        work: impl FnOnce(&Progress) -> Result<Value, ApiError> + Send + 'static,
    ) -> Result<JobStatus, ApiError> {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        Self::prune(&mut jobs);
        let running: Vec<(String, JobKind)> = jobs
            .values()
            .filter_map(|j| {
                let j = j.lock().expect("job lock");
                j.finished.is_none().then(|| (j.owner.clone(), j.kind))
            })
            .collect();
        let busy = |message: String| {
            let mut e = ApiError::new(Code::Busy, message);
            e.retry_after_s = Some(30.0);
            Err(e)
        };
        match kind {
            JobKind::Deploy => {
                if running.iter().any(|(_, k)| *k == JobKind::Deploy) {
                    return busy("a deploy job is running; see deploy_status".into());
                }
            }
            JobKind::Work => {
                let all = running.iter().filter(|(_, k)| *k == JobKind::Work).count();
                let mine = running
                    .iter()
                    .filter(|(o, k)| *k == JobKind::Work && o == owner)
                    .count();
                if mine >= self.max_per_token {
                    return busy(format!(
                        "token {owner} already runs {mine} job(s) (api.max_jobs_per_token is {}); wait for it with job_status or stop it with job_cancel",
                        self.max_per_token
                    ));
                }
                if all >= self.max_running {
                    return busy(format!(
                        "{all} jobs are running (the limit is {}); wait for one with job_status and retry",
                        self.max_running
                    ));
                }
            }
        }
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
        let id = format!("job_{}", hex::encode(raw));
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Arc::new(Mutex::new(Job {
            owner: owner.to_string(),
            kind,
            cancel: cancel.clone(),
            started: Instant::now(),
            status: JobStatus {
                id: id.clone(),
                title,
                state: JobState::Running,
                steps: 0,
                message: "queued".into(),
                elapsed_s: 0.0,
                result: None,
                error: None,
            },
            finished: None,
        }));
        jobs.insert(id.clone(), job.clone());
        drop(jobs);
        let progress = Progress(job.clone());
        std::thread::Builder::new()
            .name(format!("schedcp-{id}"))
            .spawn(move || {
                crate::host::interrupt::adopt(Some(cancel.clone()));
                let out =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&progress)))
                        .unwrap_or_else(|_| {
                            Err(ApiError::new(
                                Code::Internal,
                                "the job panicked; see the daemon log",
                            ))
                        });
                let mut j = job.lock().expect("job lock");
                j.finished = Some(Instant::now());
                if cancel.load(Ordering::SeqCst) {
                    j.status.state = JobState::Cancelled;
                    j.status.message = "cancelled".into();
                    if let Err(e) = out {
                        j.status.error = Some(e.to_string());
                    }
                    return;
                }
                match out {
                    Ok(v) => {
                        j.status.state = JobState::Succeeded;
                        j.status.message = "done".into();
                        j.status.result = Some(v);
                    }
                    Err(e) => {
                        j.status.state = JobState::Failed;
                        j.status.message = "failed".into();
                        j.status.error = Some(e.to_string());
                    }
                }
            })
            .map_err(|e| ApiError::internal(anyhow::anyhow!("starting a job thread: {e}")))?;
        self.status(owner, &id, true)
    }

    /// Ask a running job to stop; what it runs is killed and it ends as
    /// `cancelled`. Returns its kind (a deploy is also rolled back by the
    /// caller, through the deploy service's one rollback path).
    pub fn cancel(
        &self,
        owner: &str,
        id: &str,
        any_owner: bool,
    ) -> Result<(JobKind, JobStatus), ApiError> {
        let job = self.jobs.lock().expect("jobs lock").get(id).cloned();
        let job = job
            .filter(|j| any_owner || j.lock().expect("job lock").owner == owner)
            .ok_or_else(|| {
                ApiError::new(
                    Code::NotFound,
                    format!("no job '{}'", super::audit::bounded(id)),
                )
            })?;
        let kind = {
            let mut j = job.lock().expect("job lock");
            if j.finished.is_some() {
                return Err(ApiError::invalid(format!(
                    "job {id} already ended ({:?})",
                    j.status.state
                )));
            }
            j.cancel.store(true, Ordering::SeqCst);
            j.status.message = "cancelling".into();
            j.kind
        };
        Ok((kind, self.status(owner, id, any_owner)?))
    }

    /// A job's status. Only its owner (or an admin, `any_owner`) may see it.
    pub fn status(&self, owner: &str, id: &str, any_owner: bool) -> Result<JobStatus, ApiError> {
        let job = self.jobs.lock().expect("jobs lock").get(id).cloned();
        let not_found = || {
            ApiError::new(
                Code::NotFound,
                format!("no job '{id}' (jobs are kept for an hour after they end)"),
            )
        };
        let job = job.ok_or_else(not_found)?;
        let j = job.lock().expect("job lock");
        if j.owner != owner && !any_owner {
            return Err(not_found());
        }
        let mut s = j.status.clone();
        s.elapsed_s = j
            .finished
            .unwrap_or_else(Instant::now)
            .duration_since(j.started)
            .as_secs_f64();
        Ok(s)
    }
}
