//! Tools for the decision engine: recommend (observe: the workload's
//! signature and the rules' ranked candidates), tune (propose: a job that
//! trials the candidates — the rules', and the agent's own, schedulers
//! included — and reports every verdict; it applies nothing), and
//! tune_apply (deploy: a session's proven winner, through deploy with a
//! canary).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::auth::Scope;
use crate::api::error::{ApiError, Code};
use crate::api::jobs::JobStatus;
use crate::api::ops::{op, Ctx, Method, Op};
use crate::compare::Criteria;
use crate::deploy::DeployRequest;
use crate::knobs::Assignment;
use crate::observe::signature::Signature;
use crate::store::Store;
use crate::tune::candidate::Source;
use crate::tune::engine::{self, Budget, TuneRequest};
use crate::tune::rules::{self, Recommendation};
use crate::tune::{record, Candidate, Change, Event, Venue};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendInput {
    /// A workload profile or a built-in workload spec. It runs once, with probes attached.
    pub workload: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RecommendOutput {
    pub signature: Signature,
    /// One line for a person.
    pub summary: String,
    /// Rules that fired (with the measured reason) and the ranked candidates, reordered by evidence from similar past workloads.
    pub recommendation: Recommendation,
}

fn tune_recommend(ctx: &Ctx<'_>, i: RecommendInput) -> Result<RecommendOutput, ApiError> {
    let cfg = &ctx.services.cfg;
    let c = engine::context(cfg, &i.workload, true)?;
    let sig = engine::take_signature(cfg, &i.workload)?;
    let mut rec = rules::recommend(&sig, &c);
    let store = Store::open_in(&cfg.state_dir())?;
    record::reorder(&store, &sig, &mut rec.candidates)?;
    Ok(RecommendOutput {
        summary: sig.describe(),
        signature: sig,
        recommendation: rec,
    })
}

/// A candidate an agent hands in.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CandidateInput {
    /// A knob change set (knob_list names; workload.* knobs go to the tuned profile's processes).
    pub knobs: Option<Vec<Assignment>>,
    /// Or a knob set from the library by name (kind knobs, `knobs_…`: what an earlier tune proved; its workload knobs aim at this workload).
    pub knob_set: Option<String>,
    /// Or a scheduler: a built-in's or a library policy's name — your own after policy_add (trialled in the lab VM here: this host has no sched_ext).
    pub scheduler: Option<String>,
    /// The scheduler's tunables, NAME=VALUE.
    pub tunables: Option<Vec<String>>,
    /// Why the agent thinks it helps (kept with the verdict).
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TuneInput {
    /// A workload profile (per-workload knobs go to its processes) or a built-in workload spec.
    pub workload: String,
    /// Trials at most, 1..=200 (default 12).
    pub budget_trials: Option<usize>,
    /// Seconds at most, 10..=86400 (default 1800).
    pub budget_seconds: Option<u64>,
    /// Runs a side in a first trial, 4..=50 (default 4); later rounds add as many.
    pub runs: Option<usize>,
    /// Pooled runs a side at most per candidate (default 16).
    pub max_runs: Option<usize>,
    /// Significance level (default 0.05).
    pub alpha: Option<f64>,
    /// Minimum improvement in percent the interval's lower end must clear (default 2).
    pub min_effect_pct: Option<f64>,
    /// Candidates of your own, trialled with the rules' (at most 32).
    pub candidates: Option<Vec<CandidateInput>>,
    /// Use the rules (default true); false trials only your candidates.
    pub rules: Option<bool>,
    /// Allow lab VM trials (default true).
    pub lab: Option<bool>,
    /// Wait up to this many seconds for the verdict, with progress notifications (default 0).
    pub wait_seconds: Option<f64>,
}

fn candidate(
    cfg: &crate::config::Config,
    i: CandidateInput,
    workload: &str,
) -> Result<Candidate, ApiError> {
    let change = match (i.knobs, i.scheduler, i.knob_set) {
        (None, None, Some(name)) => crate::tune::library::knob_set_change(cfg, &name, workload)?,
        (Some(knobs), None, None) if !knobs.is_empty() => {
            let knobs = knobs
                .into_iter()
                .map(|mut a| {
                    if a.knob.starts_with("workload.") && a.workload.is_none() {
                        a.workload = Some(workload.to_string());
                    }
                    let r = crate::knobs::catalog::resolve(&a.knob)?;
                    crate::knobs::value::canonical(r.knob, &r.name, &a.value)?;
                    Ok(a)
                })
                .collect::<Result<Vec<_>, crate::error::Error>>()?;
            Change::Knobs { knobs }
        }
        (None, Some(policy), None) => {
            // A built-in or a library policy (yours: policy_add first); no files.
            if policy.ends_with(".c") || policy.contains('/') {
                return Err(ApiError::invalid(
                    "a scheduler candidate is a policy name: add your source with policy_add, then name it here",
                ));
            }
            if !crate::bpf::builtin::names().contains(&policy.as_str()) {
                let lib = crate::policies::Library::open(cfg)?;
                lib.get(&crate::policies::model::PolicyRef {
                    name: policy.clone(),
                    version: None,
                })?;
            }
            Change::Scheduler {
                policy,
                tunables: i.tunables.unwrap_or_default(),
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "a candidate is one of: knobs (a non-empty change set), knob_set (a library knob set's name), or scheduler",
            ))
        }
    };
    Ok(Candidate {
        change,
        source: Source::Agent,
        reason: i
            .reason
            .map(|r| r.chars().take(500).collect())
            .unwrap_or_else(|| "handed in by an agent".into()),
        score: 0.5,
        evidence: None,
        numeric: None,
        venue: Venue::Host,
    })
}

fn tune(ctx: &Ctx<'_>, i: TuneInput) -> Result<JobStatus, ApiError> {
    let mut req = TuneRequest::new(&i.workload);
    req.budget = Budget {
        trials: i.budget_trials.unwrap_or(req.budget.trials),
        seconds: i.budget_seconds.unwrap_or(req.budget.seconds),
    };
    req.runs = i.runs.unwrap_or(req.runs);
    req.max_runs = i.max_runs.unwrap_or(req.max_runs.max(req.runs));
    req.criteria = Criteria {
        alpha: i.alpha.unwrap_or(req.criteria.alpha),
        min_effect_pct: i.min_effect_pct.unwrap_or(req.criteria.min_effect_pct),
    };
    req.rules = i.rules.unwrap_or(true);
    req.lab = i.lab.unwrap_or(true);
    let given = i.candidates.unwrap_or_default();
    if given.len() > engine::MAX_CANDIDATES {
        return Err(ApiError::invalid(format!(
            "at most {} candidates, got {}",
            engine::MAX_CANDIDATES,
            given.len()
        )));
    }
    req.candidates = given
        .into_iter()
        .map(|c| candidate(&ctx.services.cfg, c, &i.workload))
        .collect::<Result<_, _>>()?;
    // Advice: a tune job never applies; tune_apply (deploy scope) does.
    req.apply = false;
    req.validate()?;
    crate::deploy::deployer::resolve_workload(&ctx.services.cfg, &req.workload)?;
    if ctx.services.deployer().is_ok_and(|d| d.is_busy()) {
        return Err(ApiError::new(
            Code::Busy,
            "a deploy or rollback is in progress: trials now would measure it; retry after it ends (deploy_status)",
        ));
    }
    let cfg = ctx.services.cfg.clone();
    let title = format!(
        "tune {} (at most {} trials, {} s)",
        req.workload, req.budget.trials, req.budget.seconds
    );
    ctx.services.jobs.spawn(
        &ctx.caller.id,
        title,
        crate::api::jobs::JobKind::Work,
        move |progress| {
            let on = |e: Event<'_>| match e {
                Event::Note(m) => progress.say(m),
                Event::Signature(s) => progress.say(&format!("signature: {}", s.describe())),
                Event::TrialStarted {
                    n, label, venue, ..
                } => progress.say(&format!("trial {n}: {label} ({})", venue.as_str())),
                Event::TrialDone(t) => progress.say(&format!("trial {}: {}", t.n, t.ab.headline())),
                Event::Decided(d) => progress.say(d),
                _ => {}
            };
            let r = engine::run(&cfg, &req, None, &on)?;
            serde_json::to_value(r).map_err(|e| ApiError::internal(e.into()))
        },
    )
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyInput {
    /// A finished tune session (its report's `session`) whose winner ran on this host.
    pub session: i64,
    /// Canary length in seconds (default: deploy.canary_s).
    #[schemars(range(min = 1, max = 86400))]
    pub canary_s: Option<u64>,
    /// Wait up to this many seconds for the canary's verdict (default 0).
    pub wait_seconds: Option<f64>,
}

fn tune_apply(ctx: &Ctx<'_>, i: ApplyInput) -> Result<JobStatus, ApiError> {
    let store = Store::open_in(&ctx.services.cfg.state_dir())?;
    let v = record::report(&store, i.session)?.ok_or_else(|| {
        ApiError::new(
            Code::NotFound,
            format!("no finished tune session {}", i.session),
        )
    })?;
    let r = &v["report"];
    let winner: Option<Change> = serde_json::from_value(r["winner"].clone()).unwrap_or(None);
    let venue: Option<Venue> = serde_json::from_value(r["winner_venue"].clone()).unwrap_or(None);
    let (Some(Change::Knobs { knobs }), Some(Venue::Host)) = (winner, venue) else {
        return Err(ApiError::invalid(format!(
            "session {} has no winner proven on this host to apply: {}",
            i.session,
            r["decision"].as_str().unwrap_or("no decision")
        )));
    };
    let workload = r["workload"].as_str().unwrap_or_default().to_string();
    let req = DeployRequest {
        token: None,
        knobs,
        object_base64: None,
        canary_s: i.canary_s,
        kpi: vec![],
        workload: Some(workload),
    };
    super::deploy::deploy_job(ctx, &req, &format!("apply tune session {}:", i.session))
}

pub fn ops() -> Vec<Op> {
    vec![
        op("tune_recommend", Scope::Observe, Method::Post, "/tune/recommend", false,
           "Run a workload once with probes attached and answer with its signature (CPU-bound / wakeup-heavy / I/O-bound mix, run-queue latency, switches, migrations, PSI, tasks, memory, I/O) and the decision engine's ranked candidate changes (knob sets and schedulers), each with the rule and the measured reason that fired it, reordered by what won or regressed on similar past workloads. Changes nothing.",
           tune_recommend),
        op("tune", Scope::Propose, Method::Post, "/tune", false,
           "Start a tune job: the rules' candidates plus your own (knob sets, or a scheduler with tunables) trialled against the current configuration within a budget — interleaved A/B trials judged with a Mann-Whitney test and a Hodges-Lehmann interval, successive halving with more runs for promising candidates, a Bayesian search over numeric knobs. Knob trials run on this host and are restored after each block; schedulers and knobs this host refuses run in the lab VM (emulated timing). Applies nothing: the report names a winner only when its interval clears the minimum effect; apply it with tune_apply.",
           tune).as_job(),
        op("tune_apply", Scope::Deploy, Method::Post, "/tune/apply", false,
           "Apply a tune session's proven winner (a knob change set trialled on this host) through deploy: baseline, apply, canary, automatic rollback to the snapshot on a KPI breach. A job.",
           tune_apply).as_job(),
    ]
}
