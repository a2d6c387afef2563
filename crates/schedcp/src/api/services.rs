//! The daemon's state and the one path every call takes, whatever door it
//! came through: authenticate → rate limit → scope → size → run (on a
//! blocking thread: the services are synchronous) → audit.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::Value;

use super::audit::{self, AuditLog, Record};
use super::auth::{self, TokenInfo};
use super::error::{ApiError, Code};
use super::jobs::{JobState, JobStatus, Jobs};
use super::ops::{Ctx, Op};
use super::tools;
use crate::config::Config;
use crate::error::Error;
use crate::policies::Library;
use crate::store::Store;

/// Open libraries, and how many exist (free or in use).
#[derive(Default)]
struct Pool {
    free: Vec<Library>,
    open: usize,
}

pub struct Services {
    pub cfg: Config,
    ops: Vec<Op>,
    by_name: HashMap<&'static str, usize>,
    store: Mutex<Store>,
    audit: Mutex<AuditLog>,
    /// Open libraries (each holds a SQLite connection and, once used, the
    /// embedding model); taken for one call and put back.
    libraries: Mutex<Pool>,
    library_freed: std::sync::Condvar,
    pub jobs: Jobs,
    limiter: DefaultKeyedRateLimiter<String>,
    /// The deploy controller, once the daemon started it.
    deployer: std::sync::OnceLock<Arc<crate::deploy::Deployer>>,
}

/// One call at a door.
pub struct Call<'a> {
    /// `mcp-http`, `mcp-socket`, `rest`.
    pub door: &'a str,
    pub peer: String,
    pub token: Option<String>,
    pub op: &'a str,
    pub args: Value,
}

impl Services {
    pub fn open(cfg: Config) -> Result<Arc<Services>, Error> {
        let store = Store::open_in(&cfg.state_dir())?;
        let audit = AuditLog::open(&audit::path(&cfg.state_dir()))?;
        let ops = tools::all();
        let by_name = ops.iter().enumerate().map(|(i, o)| (o.name, i)).collect();
        let quota = Quota::per_second(NonZeroU32::new(cfg.api.rate_per_s.max(1)).expect("nonzero"))
            .allow_burst(NonZeroU32::new(cfg.api.rate_burst.max(1)).expect("nonzero"));
        Ok(Arc::new(Services {
            jobs: Jobs::new(cfg.api.max_jobs),
            cfg,
            ops,
            by_name,
            store: Mutex::new(store),
            audit: Mutex::new(audit),
            libraries: Mutex::new(Pool::default()),
            library_freed: std::sync::Condvar::new(),
            limiter: RateLimiter::keyed(quota),
            deployer: std::sync::OnceLock::new(),
        }))
    }

    /// Start the deploy controller (reconciling the kernel with the store)
    /// and audit every deployment event it makes.
    pub fn start_deploy(self: &Arc<Self>) -> Result<(), Error> {
        let weak = Arc::downgrade(self);
        let sink: crate::deploy::EventSink = Box::new(move |id, event, detail| {
            if let Some(s) = weak.upgrade() {
                let peer = id.map_or("node".to_string(), |i| format!("deployment #{i}"));
                let call = format!("deploy.{event}");
                let _ = s.audit(&Record {
                    token: "-",
                    door: "deploy",
                    peer: &peer,
                    call: &call,
                    args: detail.as_bytes(),
                    outcome: "ok",
                    duration_ms: 0.0,
                });
            }
        });
        let d = crate::deploy::Deployer::start(self.cfg.clone(), Some(sink))?;
        let _ = self.deployer.set(d);
        Ok(())
    }

    /// Stop the deploy controller (daemon shutdown).
    pub fn stop_deploy(&self) {
        if let Some(d) = self.deployer.get() {
            d.stop();
        }
    }

    pub fn deployer(&self) -> Result<Arc<crate::deploy::Deployer>, ApiError> {
        self.deployer.get().cloned().ok_or_else(|| {
            ApiError::new(
                Code::Setup,
                "the deploy service is not running in this daemon",
            )
        })
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn op(&self, name: &str) -> Option<&Op> {
        self.by_name.get(name).map(|i| &self.ops[*i])
    }

    /// Run `f` with a library from the pool. At most one library per CPU
    /// exists (each holds the embedding model, and the work is CPU-bound);
    /// a call that finds none free waits for one.
    pub fn with_library<T>(
        &self,
        f: impl FnOnce(&mut Library) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut lib = self.take_library()?;
        let out = f(&mut lib);
        self.libraries.lock().expect("pool lock").free.push(lib);
        self.library_freed.notify_one();
        out
    }

    fn take_library(&self) -> Result<Library, Error> {
        let cap = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut pool = self.libraries.lock().expect("pool lock");
        loop {
            if let Some(l) = pool.free.pop() {
                return Ok(l);
            }
            if pool.open < cap {
                pool.open += 1;
                drop(pool);
                let opened = Library::open(&self.cfg);
                if opened.is_err() {
                    self.libraries.lock().expect("pool lock").open -= 1;
                    self.library_freed.notify_one();
                }
                return opened;
            }
            pool = self.library_freed.wait(pool).expect("pool lock");
        }
    }

    pub fn authenticate(&self, token: Option<&str>) -> Result<TokenInfo, ApiError> {
        let store = self.store.lock().expect("store lock");
        auth::authenticate(&store, token)
            .map_err(|e| ApiError::new(Code::Unauthorized, e.to_string()))
    }

    /// A call that is not an operation (e.g. `tools/list`, a refused HTTP
    /// request): authenticate and audit it.
    pub fn note(
        &self,
        door: &str,
        peer: &str,
        token: Option<&str>,
        call: &str,
    ) -> Result<TokenInfo, ApiError> {
        let t = Instant::now();
        let who = self.authenticate(token);
        let outcome = match &who {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        let id = who.as_ref().map_or("-", |w| w.id.as_str()).to_string();
        self.audit(&Record {
            token: &id,
            door,
            peer,
            call,
            args: b"",
            outcome,
            duration_ms: t.elapsed().as_secs_f64() * 1e3,
        })?;
        who
    }

    fn audit(&self, record: &Record<'_>) -> Result<(), ApiError> {
        let mut store = self.store.lock().expect("store lock");
        self.audit
            .lock()
            .expect("audit lock")
            .append(&mut store, record)
            .map(|_| ())
            .map_err(|e| {
                // Refuse to answer what cannot be audited.
                tracing::error!("audit: {e}");
                ApiError::new(
                    Code::Internal,
                    format!("the call could not be audited: {e}"),
                )
            })
    }

    /// Check the audit log and read its last `n` entries, holding the same
    /// locks as an append (store, then log) so no half-written entry is seen.
    pub fn audit_report(
        &self,
        n: usize,
    ) -> Result<(audit::Verification, Vec<audit::Entry>), Error> {
        let store = self.store.lock().expect("store lock");
        let _log = self.audit.lock().expect("audit lock");
        let path = audit::path(&self.cfg.state_dir());
        Ok((audit::verify(&path, Some(&store))?, audit::tail(&path, n)?))
    }

    /// Every call goes through here. `progress` receives job updates while
    /// the call waits for a job (`wait_seconds`).
    pub async fn call(
        self: &Arc<Self>,
        call: Call<'_>,
        progress: Option<tokio::sync::mpsc::UnboundedSender<JobStatus>>,
    ) -> Result<Value, ApiError> {
        let t = Instant::now();
        let args_bytes = serde_json::to_vec(&call.args).unwrap_or_default();
        let mut token_id = "-".to_string();
        let result = self
            .call_inner(&call, &args_bytes, &mut token_id, progress)
            .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        let record = Record {
            token: &token_id,
            door: call.door,
            peer: &call.peer,
            call: call.op,
            args: &args_bytes,
            outcome,
            duration_ms: t.elapsed().as_secs_f64() * 1e3,
        };
        self.audit(&record)?;
        result
    }

    async fn call_inner(
        self: &Arc<Self>,
        call: &Call<'_>,
        args_bytes: &[u8],
        token_id: &mut String,
        progress: Option<tokio::sync::mpsc::UnboundedSender<JobStatus>>,
    ) -> Result<Value, ApiError> {
        let caller = self.authenticate(call.token.as_deref())?;
        *token_id = caller.id.clone();
        if let Err(not_until) = self.limiter.check_key(&caller.id) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            let mut e = ApiError::new(
                Code::RateLimited,
                format!(
                    "token {} is over its rate limit ({} calls/s, burst {}); retry in {:.2} s",
                    caller.id,
                    self.cfg.api.rate_per_s,
                    self.cfg.api.rate_burst,
                    wait.as_secs_f64()
                ),
            );
            e.retry_after_s = Some(wait.as_secs_f64().max(0.01));
            return Err(e);
        }
        let op = self.op(call.op).ok_or_else(|| {
            ApiError::new(
                Code::NotFound,
                format!(
                    "no tool '{}' (list them with tools/list or GET /v1/openapi.json)",
                    call.op
                ),
            )
        })?;
        if !caller.allows(op.scope) {
            return Err(ApiError::new(
                Code::Forbidden,
                format!(
                    "{} needs scope '{}'; token {} has {}",
                    op.name,
                    op.scope,
                    caller.id,
                    caller
                        .scopes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if args_bytes.len() > self.cfg.api.max_request_bytes {
            return Err(ApiError::new(
                Code::TooLarge,
                format!(
                    "arguments are {} bytes; the limit is {} (api.max_request_bytes)",
                    args_bytes.len(),
                    self.cfg.api.max_request_bytes
                ),
            ));
        }
        let mut args = call.args.clone();
        if args.is_null() {
            args = Value::Object(Default::default());
        }
        let wait_s = if op.job {
            args.as_object_mut()
                .and_then(|o| o.remove("wait_seconds"))
                // A GET query serializes an absent wait as null.
                .filter(|w| !w.is_null())
                .map(|w| {
                    w.as_f64()
                        .filter(|w| (0.0..=3600.0).contains(w))
                        .ok_or_else(|| {
                            ApiError::invalid("wait_seconds must be a number in 0..=3600")
                        })
                })
                .transpose()?
                .unwrap_or(0.0)
        } else {
            0.0
        };
        let services = self.clone();
        let name = op.name;
        let out = tokio::task::spawn_blocking(move || {
            let op = services.op(name).expect("looked up above");
            let ctx = Ctx {
                services: &services,
                caller: &caller,
            };
            (op.run)(&ctx, args)
        })
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("the call's thread failed: {e}")))??;
        if wait_s > 0.0 {
            let status: JobStatus = serde_json::from_value(out)
                .map_err(|e| ApiError::internal(anyhow::anyhow!("job status: {e}")))?;
            let owner = token_id.clone();
            let done = self
                .wait_job(
                    &owner,
                    &status.id,
                    Duration::from_secs_f64(wait_s),
                    progress,
                )
                .await?;
            return serde_json::to_value(done).map_err(|e| ApiError::internal(e.into()));
        }
        Ok(out)
    }

    /// Wait for a job to end (or `max` to pass), reporting each change.
    pub async fn wait_job(
        &self,
        owner: &str,
        id: &str,
        max: Duration,
        progress: Option<tokio::sync::mpsc::UnboundedSender<JobStatus>>,
    ) -> Result<JobStatus, ApiError> {
        let deadline = Instant::now() + max;
        let mut seen = u32::MAX;
        loop {
            let s = self.jobs.status(owner, id, false)?;
            if s.steps != seen {
                seen = s.steps;
                if let Some(p) = &progress {
                    let _ = p.send(s.clone());
                }
            }
            if s.state != JobState::Running || Instant::now() >= deadline {
                return Ok(s);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
