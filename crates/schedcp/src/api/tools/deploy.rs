//! Tools of the deploy service: deploy a verified object under a canary (a
//! job), read the node's status and history, roll back.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::auth::Scope;
use crate::api::error::ApiError;
use crate::api::jobs::JobStatus;
use crate::api::ops::{op, Ctx, Method, Op};
use crate::deploy::{self, DeployEvent, DeployRequest, Deployment, Status};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployInput {
    /// The deployment token verify issued (v4.public...), for a change that attaches a scheduler.
    pub token: Option<String>,
    /// Knob assignments applied with the change, e.g. [{"knob":"vm.swappiness","value":"10"}, {"knob":"workload.nice","value":"5","workload":"web"}] (see knob_list). A change is a scheduler, knobs, or both.
    pub knobs: Option<Vec<crate::knobs::Assignment>>,
    /// The verified BPF object, base64 (default: the object this machine's verifier kept under the token's hash).
    pub object_base64: Option<String>,
    /// Canary length in seconds (default from the daemon's config).
    #[schemars(range(min = 1, max = 86400))]
    pub canary_s: Option<u64>,
    /// Threshold overrides as NAME=VALUE: runq_p99_ratio, runq_p99_min_increase_us, runq_min_samples, psi_cpu_some_increase_pct, workload_regression_pct, nr_rejected_max, consecutive_windows.
    pub kpi: Option<Vec<String>>,
    /// Workload run in every canary window: a workload profile's name or a built-in lab workload spec.
    pub workload: Option<String>,
    /// Wait up to this many seconds for the verdict, with progress notifications (default 0: return the job at once).
    pub wait_seconds: Option<f64>,
}

fn deploy(ctx: &Ctx<'_>, i: DeployInput) -> Result<JobStatus, ApiError> {
    let req = DeployRequest {
        token: i.token,
        object_base64: i.object_base64,
        canary_s: i.canary_s,
        kpi: i.kpi.unwrap_or_default(),
        knobs: i.knobs.unwrap_or_default(),
        workload: i.workload,
    };
    deploy_job(ctx, &req, "deploy")
}

/// Canaries longer than this need an admin token.
pub const LONG_CANARY_S: u64 = 3600;

/// Admit `req` (refusals — token, object, kernel, knobs — answer the call
/// itself, not the job), then run it as a job titled `what <change>`.
pub(super) fn deploy_job(
    ctx: &Ctx<'_>,
    req: &DeployRequest,
    what: &str,
) -> Result<JobStatus, ApiError> {
    let canary_s = req.canary_s.unwrap_or(ctx.services.cfg.deploy.canary_s);
    if canary_s > LONG_CANARY_S && !ctx.caller.allows(Scope::Admin) {
        return Err(ApiError::new(
            crate::api::error::Code::Forbidden,
            format!(
                "a canary of {canary_s} s is longer than {LONG_CANARY_S} s and needs the admin scope (a long canary holds the node; an operator ends it with deploy_rollback)"
            ),
        ));
    }
    let deployer = ctx.services.deployer()?;
    let prepared = deployer.admit(req)?;
    if deployer.is_busy() {
        return Err(ApiError::new(
            crate::api::error::Code::Busy,
            "another deploy or rollback is in progress; see deploy_status",
        ));
    }
    let title = format!("{what} {}", prepared.label());
    ctx.services.jobs.spawn(
        &ctx.caller.id,
        title,
        crate::api::jobs::JobKind::Deploy,
        move |progress| {
            let p = progress.clone();
            let d = deployer.execute(prepared, Box::new(move |m| p.say(m)))?;
            serde_json::to_value(d).map_err(|e| ApiError::internal(e.into()))
        },
    )
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoInput {}

fn status(ctx: &Ctx<'_>, _: NoInput) -> Result<Status, ApiError> {
    Ok(ctx.services.deployer()?.status()?)
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryInput {
    /// Newest first; at most this many deployments and events (default 20, max 500).
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct HistoryOutput {
    pub deployments: Vec<Deployment>,
    pub events: Vec<DeployEvent>,
}

fn history(ctx: &Ctx<'_>, i: HistoryInput) -> Result<HistoryOutput, ApiError> {
    let limit = i.limit.unwrap_or(20);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit must be 1..=500"));
    }
    let store = crate::store::Store::open_in(&ctx.services.cfg.state_dir())?;
    Ok(HistoryOutput {
        deployments: deploy::record::list(&store, limit)?,
        events: deploy::record::events(&store, limit)?,
    })
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackInput {
    /// Why (kept in the history and the audit log; 1..=500 characters).
    pub reason: String,
}

fn rollback(ctx: &Ctx<'_>, i: RollbackInput) -> Result<Deployment, ApiError> {
    let reason = i.reason.trim();
    if reason.is_empty() || reason.len() > 500 {
        return Err(ApiError::invalid("reason must be 1..=500 characters"));
    }
    Ok(ctx.services.deployer()?.rollback(reason)?)
}

pub fn ops() -> Vec<Op> {
    vec![
        op("deploy", Scope::Deploy, Method::Post, "/deploy", false,
           "Deploy a change — a verified scheduler (token), a knob change set (knobs; see knob_list), or both. For a scheduler: checks the token (signature, expiry, object hash, this kernel, sched_ext), measures a KPI baseline, attaches through struct_ops, and watches run-queue latency, PSI cpu, nr_rejected, the scheduler's health and optionally a workload's metric for the canary window. Any breach rolls back to the last known-good at once. A job: returns at once or waits wait_seconds; the result is the deployment (state active or rolled_back, with timings).",
           deploy).as_job(),
        op("deploy_status", Scope::Observe, Method::Get, "/deploy/status", true,
           "What the node runs: sched_ext state, the kernel's ops name, the current deployment (canary or active) and where a rollback would go.",
           status),
        op("deploy_history", Scope::Observe, Method::Get, "/deploy/history", true,
           "Past deployments (state, reason, KPI baseline and windows, timings) and every deploy event (canary started, active, breach, rollback, restore), newest first.",
           history),
        op("deploy_rollback", Scope::Deploy, Method::Post, "/deploy/rollback", false,
           "Roll the current deployment back to its last known-good (or the kernel default) now — also during a canary, which it ends (the deploy answers rolled_back); a deploy still measuring its baseline is cancelled before it changes anything.",
           rollback),
    ]
}
