//! The daemon's state and the one path every call takes, whatever door it
//! came through: authenticate → rate limit → scope → size → (for an action
//! with effects, a `begun` entry) → run (on a blocking thread: the services
//! are synchronous) → audit. Refusals are audited per peer, a few one by
//! one and the rest summarised (`audit::Refusals`).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::Value;

use super::audit::{self, Auditor, Record, Refusals, Verdict};
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
    audit: Auditor,
    refusals: Refusals,
    /// When the free space was last looked at, and what it said.
    disk: Mutex<(Option<Instant>, Option<String>)>,
    /// Open libraries (each holds a SQLite connection and, once used, the
    /// embedding model); taken for one call and put back.
    libraries: Mutex<Pool>,
    library_freed: std::sync::Condvar,
    pub jobs: Jobs,
    /// Caps on root profilers and probes running at once.
    pub slots: super::slots::Slots,
    limiter: DefaultKeyedRateLimiter<String>,
    /// The deploy controller, once the daemon started it.
    deployer: std::sync::OnceLock<Arc<crate::deploy::Deployer>>,
}

/// How long a peer's refusals are counted before they are summarised.
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// A call that passed the door's checks.
struct Admitted {
    caller: TokenInfo,
    op: &'static str,
    args: Value,
    wait_s: f64,
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
        let audit = Auditor::start(
            &audit::path(&cfg.state_dir()),
            cfg.api.audit_segment_mib << 20,
            Store::open_in(&cfg.state_dir())?,
            Some(crate::verify::token::Keys::load_or_create(
                &cfg.state_dir(),
            )?),
        )?;
        let ops = tools::all();
        let by_name = ops.iter().enumerate().map(|(i, o)| (o.name, i)).collect();
        let quota = Quota::per_second(NonZeroU32::new(cfg.api.rate_per_s.max(1)).expect("nonzero"))
            .allow_burst(NonZeroU32::new(cfg.api.rate_burst.max(1)).expect("nonzero"));
        Ok(Arc::new(Services {
            jobs: Jobs::new(cfg.api.max_jobs, cfg.api.max_jobs_per_token),
            cfg,
            ops,
            by_name,
            store: Mutex::new(store),
            audit,
            refusals: Refusals::new(REFUSAL_WINDOW),
            slots: Default::default(),
            disk: Mutex::new((None, None)),
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
                let r = Record::call("-", "deploy", &peer, &call, detail.as_bytes(), "ok");
                if let Err(e) = s.audit.append(r) {
                    tracing::error!("audit: {call}: {e}");
                }
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

    /// A call that is not an operation (`tools/list`, a socket connect, a
    /// refused HTTP request): authenticate it, and audit it as any call.
    pub async fn note(
        self: &Arc<Self>,
        door: &str,
        peer: &str,
        token: Option<&str>,
        call: &str,
    ) -> Result<TokenInfo, ApiError> {
        let t = Instant::now();
        let who = self.admit_token(door, peer, token).await.and_then(|w| {
            self.limiter.check_key(&w.id).map(|_| w).map_err(|_| {
                let mut e = ApiError::new(
                    Code::RateLimited,
                    format!(
                        "token is over its rate limit ({} calls/s)",
                        self.cfg.api.rate_per_s
                    ),
                );
                e.retry_after_s = Some(1.0);
                e
            })
        });
        match &who {
            Ok(w) => {
                let r = Record::call(&w.id, door, peer, call, b"", "ok")
                    .took(t.elapsed().as_secs_f64() * 1e3);
                self.audit_async(r).await?;
            }
            Err(e) => self.refused(door, peer, "-", call, b"", e).await,
        }
        who
    }

    /// A peer refused before any token is looked at (the socket's peer
    /// check): audited like every refusal.
    pub async fn refuse_peer(self: &Arc<Self>, door: &str, peer: &str, why: &str) {
        let e = ApiError::new(Code::Forbidden, why);
        self.refused(door, peer, "-", "connect", b"", &e).await;
    }

    /// Authenticate, answering a peer that keeps failing with
    /// `rate_limited` (and a retry time), and refusing unauthenticated work
    /// when the disk is low.
    async fn admit_token(
        self: &Arc<Self>,
        door: &str,
        peer: &str,
        token: Option<&str>,
    ) -> Result<TokenInfo, ApiError> {
        let who = {
            let (s, t) = (self.clone(), token.map(str::to_string));
            tokio::task::spawn_blocking(move || s.authenticate(t.as_deref()))
                .await
                .map_err(|e| ApiError::internal(anyhow::anyhow!("authentication: {e}")))?
        };
        let Err(refusal) = who else { return who };
        if let Some(why) = self.disk_low() {
            return Err(ApiError::new(Code::DiskLow, why));
        }
        if let Some(wait) = self.refusals.auth_budget_spent(door, peer) {
            let mut e = ApiError::new(
                Code::RateLimited,
                format!(
                    "{} failed authentication too often; retry in {:.0} s ({})",
                    audit::peer_key(peer),
                    wait.as_secs_f64().ceil(),
                    refusal.message
                ),
            );
            e.retry_after_s = Some(wait.as_secs_f64().max(1.0));
            return Err(e);
        }
        Err(refusal)
    }

    /// Audit a refusal: one entry while the peer's window allows it, else
    /// counted into the window's summary. A refusal changes nothing, so one
    /// that cannot be written is logged, not turned into another error.
    async fn refused(
        self: &Arc<Self>,
        door: &str,
        peer: &str,
        token: &str,
        call: &str,
        args: &[u8],
        e: &ApiError,
    ) {
        let outcome = e.code.as_str();
        if self.refusals.note(door, peer, outcome, call) == Verdict::Counted
            || self.disk_low().is_some()
        {
            return;
        }
        let r = Record::call(token, door, peer, call, args, outcome);
        if let Err(err) = self.audit.append_async(r).await {
            tracing::error!("audit: a refusal ({outcome}) could not be written: {err}");
        }
    }

    /// Write the summaries of refusal windows that closed (all of them at
    /// shutdown).
    pub async fn flush_refusals(self: &Arc<Self>, all: bool) {
        for r in self.refusals.drain(all) {
            if let Err(e) = self.audit.append_async(r).await {
                tracing::error!("audit: a refusal summary could not be written: {e}");
            }
        }
    }

    async fn audit_async(&self, r: Record) -> Result<audit::Entry, ApiError> {
        self.audit.append_async(r).await.map_err(|e| {
            ApiError::new(
                Code::Internal,
                format!("the call could not be audited: {e}"),
            )
        })
    }

    /// Why the state directory's disk is too full for unauthenticated
    /// work, if it is (looked at most once a second).
    fn disk_low(&self) -> Option<String> {
        let min = self.cfg.api.min_free_mib;
        if min == 0 {
            return None;
        }
        let mut d = self.disk.lock().expect("disk lock");
        if d.0.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return d.1.clone();
        }
        let dir = self.cfg.state_dir();
        let low = nix::sys::statvfs::statvfs(&dir).ok().and_then(|v| {
            let free = v.blocks_available() * v.fragment_size();
            (free < min << 20).then(|| {
                format!(
                    "only {} MiB free on {} (api.min_free_mib is {min}): calls without a valid token are refused until space is freed",
                    free >> 20,
                    dir.display()
                )
            })
        });
        *d = (Some(Instant::now()), low.clone());
        low
    }

    /// Check the audit log and read its last `n` entries (between two of
    /// the writer's commits, so no half-written entry is seen).
    pub fn audit_report(
        &self,
        n: usize,
    ) -> Result<(audit::Verification, Vec<audit::Entry>), Error> {
        self.audit.report(n)
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
        let admitted = match self.admit(&call, &args_bytes).await {
            Ok(a) => a,
            Err((token_id, e)) => {
                self.refused(call.door, &call.peer, &token_id, call.op, &args_bytes, &e)
                    .await;
                return Err(e);
            }
        };
        let (caller, name) = (admitted.caller.clone(), admitted.op);
        let read_only = self.op(name).is_some_and(|o| o.read_only);
        let record = |outcome: &str| {
            Record::call(
                &caller.id,
                call.door,
                &call.peer,
                name,
                &args_bytes,
                outcome,
            )
        };
        // An action with effects leaves its trace before it starts: a crash
        // mid-action still shows it (`audit verify` lists it as open), and
        // an end that cannot be written does not hide that it ran.
        let begun = if read_only {
            None
        } else {
            let e = self
                .audit
                .append_async(record("begun"))
                .await
                .map_err(|e| {
                    ApiError::new(
                        Code::Internal,
                        format!("the call could not be audited, so nothing was done: {e}"),
                    )
                })?;
            Some(e.seq)
        };
        let result = self.run(admitted, progress).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        let end = record(outcome)
            .took(t.elapsed().as_secs_f64() * 1e3)
            .ending(begun);
        match (self.audit.append_async(end).await, begun) {
            (Ok(_), _) => result,
            (Err(e), Some(seq)) => {
                // It happened; saying otherwise would invite a retry of
                // an action that already took effect.
                tracing::error!(
                    "audit: the end of {name} (begun at seq {seq}) could not be written: {e}"
                );
                result
            }
            (Err(e), None) => Err(ApiError::new(
                Code::Internal,
                format!("the call could not be audited: {e}"),
            )),
        }
    }

    /// The door's checks, in order: token, rate, tool, scope, size. A
    /// refusal comes back with the token id it was made under (`-` if none).
    async fn admit(
        self: &Arc<Self>,
        call: &Call<'_>,
        args_bytes: &[u8],
    ) -> Result<Admitted, (String, ApiError)> {
        let caller = self
            .admit_token(call.door, &call.peer, call.token.as_deref())
            .await
            .map_err(|e| ("-".to_string(), e))?;
        let refuse = |e: ApiError| (caller.id.clone(), e);
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
            return Err(refuse(e));
        }
        let op = self.op(call.op).ok_or_else(|| {
            refuse(ApiError::new(
                Code::NotFound,
                format!(
                    "no tool '{}' (list them with tools/list or GET /v1/openapi.json)",
                    audit::bounded(call.op)
                ),
            ))
        })?;
        if !caller.allows(op.scope) {
            return Err(refuse(ApiError::new(
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
            )));
        }
        if args_bytes.len() > self.cfg.api.max_request_bytes {
            return Err(refuse(ApiError::new(
                Code::TooLarge,
                format!(
                    "arguments are {} bytes; the limit is {} (api.max_request_bytes)",
                    args_bytes.len(),
                    self.cfg.api.max_request_bytes
                ),
            )));
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
                .transpose()
                .map_err(refuse)?
                .unwrap_or(0.0)
        } else {
            0.0
        };
        Ok(Admitted {
            caller,
            op: op.name,
            args,
            wait_s,
        })
    }

    /// Run an admitted call on a blocking thread (and wait for its job if
    /// it asked to).
    async fn run(
        self: &Arc<Self>,
        a: Admitted,
        progress: Option<tokio::sync::mpsc::UnboundedSender<JobStatus>>,
    ) -> Result<Value, ApiError> {
        let Admitted {
            caller,
            op: name,
            args,
            wait_s,
        } = a;
        let owner = caller.id.clone();
        let admin = caller.allows(super::auth::Scope::Admin);
        let services = self.clone();
        let out = tokio::task::spawn_blocking(move || {
            let op = services.op(name).expect("admitted");
            let ctx = Ctx {
                services: &services,
                caller: &caller,
            };
            (op.run)(&ctx, args)
        })
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("the call's thread failed: {e}")))?;
        // Below the admin scope, what schedulers wrote (exit reasons and
        // messages: a channel for leaked memory and injected instructions)
        // is withheld; the kernel's exit kind and code remain.
        let mut out = out.map_err(|mut e| {
            if !admin {
                e.message = withhold(&e.message);
            }
            e
        })?;
        if !admin {
            withhold_in(&mut out);
        }
        if wait_s > 0.0 {
            let status: JobStatus = serde_json::from_value(out)
                .map_err(|e| ApiError::internal(anyhow::anyhow!("job status: {e}")))?;
            let done = self
                .wait_job(
                    &owner,
                    &status.id,
                    Duration::from_secs_f64(wait_s),
                    progress,
                )
                .await?;
            let mut done = serde_json::to_value(done).map_err(|e| ApiError::internal(e.into()))?;
            if !admin {
                withhold_in(&mut done);
            }
            return Ok(done);
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

fn withhold(s: &str) -> String {
    schedcp_proto::report::withhold_scheduler_text(s).into_owned()
}

/// Withhold scheduler-written text in every string of `v`.
fn withhold_in(v: &mut Value) {
    match v {
        Value::String(s) if s.contains(schedcp_proto::report::SCHEDULER_TEXT) => *s = withhold(s),
        Value::Array(a) => a.iter_mut().for_each(withhold_in),
        Value::Object(o) => o.values_mut().for_each(withhold_in),
        _ => {}
    }
}
