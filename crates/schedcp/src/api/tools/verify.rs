//! Tools of the verify service: submit a repository version (a job), read
//! its kept reports, check a deployment token; and job status.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::auth::Scope;
use crate::api::error::ApiError;
use crate::api::jobs::JobStatus;
use crate::api::ops::{op, Ctx, Method, Op};
use crate::policies::model::PolicyRef;
use crate::verify::pipeline::Options;
use crate::verify::report::{StageVerdict, VerifyReport};
use crate::verify::service;
use crate::verify::token::{self, Claims, Expect, Keys};
use schedcp_proto::workload::WorkloadSpec;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitInput {
    /// A repository policy, `name` or `name@version` (add yours with policy_add first).
    pub policy: String,
    /// Workloads of the performance comparison (specs as `schedcp lab workloads` lists; default ["wakeup"]).
    pub workloads: Option<Vec<String>>,
    /// Runs per side, 2..=20 (default 4).
    #[schemars(range(min = 2, max = 20))]
    pub runs: Option<usize>,
    /// Wait up to this many seconds for the result, with progress notifications (default 0: return the job at once).
    pub wait_seconds: Option<f64>,
}

/// What a finished verification job returns (the whole report: verify_report).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct VerifyOutcome {
    pub policy: String,
    pub version: u32,
    pub passed: bool,
    pub stages: Vec<StageLine>,
    pub total_s: f64,
    pub kernel_release: Option<String>,
    pub object_sha256: Option<String>,
    /// The deployment token, when every stage passed.
    pub token: Option<String>,
    /// Fetch the full report (per-stage evidence) with verify_report.
    pub report_id: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct StageLine {
    pub name: String,
    pub verdict: StageVerdict,
    pub ms: f64,
    pub reasons: Vec<String>,
}

fn outcome(r: &VerifyReport, report_id: Option<i64>) -> VerifyOutcome {
    VerifyOutcome {
        policy: r.policy.clone(),
        version: r.version,
        passed: r.passed,
        stages: r
            .stages
            .iter()
            .map(|s| StageLine {
                name: s.name.clone(),
                verdict: s.verdict,
                ms: s.ms.round(),
                reasons: s.reasons.iter().take(8).cloned().collect(),
            })
            .collect(),
        total_s: r.total_s,
        kernel_release: r.kernel_release.clone(),
        object_sha256: r.object_sha256.clone(),
        token: r.token.clone(),
        report_id,
    }
}

fn submit(ctx: &Ctx<'_>, i: SubmitInput) -> Result<JobStatus, ApiError> {
    if i.policy.contains('/') || i.policy.ends_with(".c") {
        return Err(ApiError::invalid(
            "verify_submit takes a repository policy (name or name@version), not a path; add the source with policy_add first",
        ));
    }
    let workloads = i
        .workloads
        .unwrap_or_else(|| vec!["wakeup".into()])
        .iter()
        .map(|w| {
            w.parse::<WorkloadSpec>()
                .map_err(|e| ApiError::invalid(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cfg = ctx.services.cfg.clone();
    let opts = Options {
        workloads,
        runs: i.runs.unwrap_or(4),
        vcpus: cfg.lab.vcpus,
        mem_mib: cfg.lab.mem_mib,
        vm_timeout: Duration::from_secs(cfg.lab.timeout_s),
        token_ttl: Duration::from_secs(168 * 3600),
    };
    opts.validate()?;
    let subject = service::subject(&cfg, &i.policy)?;
    let title = format!("verify {}", subject.label);
    ctx.services.jobs.spawn(
        &ctx.caller.id,
        title,
        crate::api::jobs::JobKind::Work,
        move |progress| {
            let results =
                service::verify_all(&cfg, std::slice::from_ref(&subject), &opts, 1, &|_, m| {
                    progress.say(m)
                })?;
            let report = results.into_iter().next().expect("one subject")?;
            let lib = crate::policies::Library::open(&cfg)?;
            let kept = lib.verify_reports(
                &PolicyRef {
                    name: report.policy.clone(),
                    version: Some(report.version),
                },
                1,
            )?;
            let id = kept
                .first()
                .filter(|k| k.report_sha256 == report.digest())
                .map(|k| k.id);
            serde_json::to_value(outcome(&report, id)).map_err(|e| ApiError::internal(e.into()))
        },
    )
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobInput {
    /// The id verify_submit returned.
    pub id: String,
    /// Wait up to this many seconds for the job to end, with progress notifications (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_seconds: Option<f64>,
}

fn job_status(ctx: &Ctx<'_>, i: JobInput) -> Result<JobStatus, ApiError> {
    let admin = ctx.caller.allows(Scope::Admin);
    ctx.services.jobs.status(&ctx.caller.id, &i.id, admin)
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelInput {
    /// The job's id.
    pub id: String,
}

/// Stop a job: what it runs is killed; a deploy job is rolled back through
/// the deploy service's one rollback path (its canary pre-empted).
fn job_cancel(ctx: &Ctx<'_>, i: CancelInput) -> Result<JobStatus, ApiError> {
    let admin = ctx.caller.allows(Scope::Admin);
    let (kind, status) = ctx.services.jobs.cancel(&ctx.caller.id, &i.id, admin)?;
    if kind == crate::api::jobs::JobKind::Deploy {
        let why = format!("job {} cancelled by token {}", status.id, ctx.caller.id);
        if let Err(e) = ctx.services.deployer()?.rollback(&why) {
            tracing::warn!("job_cancel: {why}: {e}");
        }
    }
    Ok(status)
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportInput {
    /// `name` or `name@version`.
    pub policy: String,
    pub version: Option<u32>,
    /// Only this stage's full evidence (compile, static, kernel, correctness,
    /// performance, token); default: every stage, evidence omitted.
    pub stage: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ReportOutput {
    pub report_id: i64,
    pub recorded_at: String,
    pub outcome: VerifyOutcome,
    /// The requested stage's evidence (diagnostics, analysis, lab runs, statistics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_detail: Option<serde_json::Value>,
}

fn report(ctx: &Ctx<'_>, i: ReportInput) -> Result<ReportOutput, ApiError> {
    let r: PolicyRef = i.policy.parse().map_err(ApiError::invalid)?;
    let r = PolicyRef {
        version: i.version.or(r.version),
        ..r
    };
    let kept = ctx.services.with_library(|lib| lib.verify_reports(&r, 1))?;
    let k = kept.into_iter().next().ok_or_else(|| {
        ApiError::new(
            crate::api::error::Code::NotFound,
            format!("{} was never verified; run verify_submit", i.policy),
        )
    })?;
    let full: VerifyReport = serde_json::from_value(k.report.clone())
        .map_err(|e| ApiError::internal(anyhow::anyhow!("decoding report #{}: {e}", k.id)))?;
    let stage_detail = match &i.stage {
        None => None,
        Some(name) => Some(
            full.stages
                .iter()
                .find(|s| &s.name == name)
                .map(|s| s.detail.clone())
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "no stage '{name}'; stages: compile, static, kernel, correctness, performance, token"
                    ))
                })?,
        ),
    };
    Ok(ReportOutput {
        report_id: k.id,
        recorded_at: k.recorded_at,
        outcome: outcome(&full, Some(k.id)),
        stage_detail,
    })
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCheckInput {
    /// A deployment token (v4.public...) as verify returned it.
    pub token: String,
    /// The SHA-256 of the object it must be for (optional).
    pub object_sha256: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TokenCheckOutput {
    pub valid: bool,
    /// Why not, precisely, when not valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<Claims>,
}

fn token_check(ctx: &Ctx<'_>, i: TokenCheckInput) -> Result<TokenCheckOutput, ApiError> {
    if i.token.len() > 8192 {
        return Err(ApiError::invalid("token is longer than 8192 characters"));
    }
    let keys = Keys::load_or_create(&ctx.services.cfg.state_dir())?;
    let expect = Expect {
        object_sha256: i.object_sha256,
        kernel_release: None,
    };
    Ok(match keys.check(&i.token, &expect) {
        Ok(c) => TokenCheckOutput {
            valid: true,
            problem: None,
            claims: Some(c),
        },
        Err(e) => TokenCheckOutput {
            valid: false,
            problem: Some(e.to_string()),
            claims: token::decode_unverified(&i.token).ok().map(|(c, _)| c),
        },
    })
}

pub fn ops() -> Vec<Op> {
    vec![
        op("verify_submit", Scope::Propose, Method::Post, "/verify", false,
           "Verify a repository policy version: sandboxed compile, static analysis of the BPF object, the real kernel verifier, correctness and starvation trials and a performance comparison with the kernel default in a sched_ext micro-VM, then a signed deployment token. Takes ~20-60 s: returns a job at once (poll job_status) or waits up to wait_seconds with progress notifications. A pass moves a candidate to verified.",
           submit).as_job(),
        op("job_status", Scope::Observe, Method::Get, "/jobs", true,
           "Status of a job (verify_submit): state, latest progress message, and the result when it succeeded. wait_seconds waits for the end with progress notifications.",
           job_status).as_job(),
        op("job_cancel", Scope::Observe, Method::Post, "/jobs/cancel", false,
           "Cancel one of your jobs (an admin token: any job). What it runs — lab VMs, compiles, workloads — is killed and it ends as cancelled; a deploy job is rolled back at once (its canary pre-empted).",
           job_cancel),
        op("verify_report", Scope::Observe, Method::Get, "/verify/report", true,
           "The latest kept verification report of a policy version: every stage's verdict, time and reasons; with `stage`, that stage's full evidence (compiler diagnostics, verifier log, lab runs, statistics).",
           report),
        op("verify_token_check", Scope::Observe, Method::Post, "/verify/token/check", true,
           "Check a deployment token: signature (this machine's key), expiry and, with object_sha256, that it is for that object. Says precisely why a token is refused.",
           token_check),
    ]
}
