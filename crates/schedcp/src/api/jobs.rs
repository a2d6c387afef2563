//! Long operations (verify) run as jobs: the call returns a job id at once,
//! the work runs on its own thread, and `job_status` reports progress and,
//! at the end, the result. Finished jobs are kept for an hour.

use std::collections::HashMap;
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
    started: Instant,
    status: JobStatus,
    finished: Option<Instant>,
}

pub struct Jobs {
    max_running: usize,
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

impl Jobs {
    pub fn new(max_running: usize) -> Jobs {
        Jobs {
            max_running,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    /// Start `work` on its own thread, owned by token `owner`.
    pub fn spawn(
        &self,
        owner: &str,
        title: String,
        work: impl FnOnce(&Progress) -> Result<Value, ApiError> + Send + 'static,
    ) -> Result<JobStatus, ApiError> {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        jobs.retain(|_, j| {
            j.lock()
                .expect("job lock")
                .finished
                .is_none_or(|f| f.elapsed() < KEEP_FINISHED)
        });
        let running = jobs
            .values()
            .filter(|j| j.lock().expect("job lock").finished.is_none())
            .count();
        if running >= self.max_running {
            let mut e = ApiError::new(
                Code::Busy,
                format!(
                    "{running} jobs are running (the limit is {}); wait for one with job_status and retry",
                    self.max_running
                ),
            );
            e.retry_after_s = Some(30.0);
            return Err(e);
        }
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
        let id = format!("job_{}", hex::encode(raw));
        let job = Arc::new(Mutex::new(Job {
            owner: owner.to_string(),
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
