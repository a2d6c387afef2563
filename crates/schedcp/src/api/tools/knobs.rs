//! Tools for kernel knobs: the catalogue and what this machine allows
//! (observe), one knob's value (observe), a trial of a change set against
//! the current settings (propose; a job). Applying goes through `deploy`
//! with `knobs` (deploy scope), rolling back through `deploy_rollback`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::auth::Scope;
use crate::api::error::{ApiError, Code};
use crate::api::jobs::JobStatus;
use crate::api::ops::{op, Ctx, Method, Op};
use crate::compare::{Criteria, Side};
use crate::knobs::discover::{self, Availability, GroupSummary};
use crate::knobs::{catalog, Assignment};
use crate::tune::trial::{self, TrialRequest};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListInput {
    /// Only this group: fair, memory, block or workload.
    pub group: Option<String>,
    /// Only knobs this machine allows (default false).
    pub available_only: Option<bool>,
    /// Include each knob's full catalogue entry (evidence, risk, ranges; default false: names, state and values only).
    pub detail: Option<bool>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct KnobState {
    pub name: String,
    pub group: String,
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Safe values: `lo..=hi`, the choices, or the type.
    pub safe: String,
    pub risk: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<catalog::Knob>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOutput {
    pub groups: Vec<GroupSummary>,
    pub knobs: Vec<KnobState>,
}

fn state(a: Availability, detail: bool) -> KnobState {
    KnobState {
        name: a.name,
        group: a.group.as_str().into(),
        available: a.available,
        reason: a.reason,
        current: a.current,
        safe: a.knob.safe_values(),
        risk: format!("{:?}", a.knob.risk).to_lowercase(),
        entry: detail.then_some(a.knob),
    }
}

fn knob_list(_: &Ctx<'_>, i: ListInput) -> Result<ListOutput, ApiError> {
    if let Some(g) = &i.group {
        if !catalog::Group::ALL.iter().any(|x| x.as_str() == g) {
            return Err(ApiError::invalid(format!(
                "unknown group '{}'; groups: fair, memory, block, workload",
                g.chars().take(40).collect::<String>()
            )));
        }
    }
    let all = discover::list();
    let groups = discover::groups(&all);
    let detail = i.detail.unwrap_or(false);
    Ok(ListOutput {
        groups,
        knobs: all
            .into_iter()
            .filter(|a| i.group.as_deref().is_none_or(|g| a.group.as_str() == g))
            .filter(|a| !i.available_only.unwrap_or(false) || a.available)
            .map(|a| state(a, detail))
            .collect(),
    })
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadInput {
    /// A knob name from knob_list (`vm.swappiness`, `block.vda.read_ahead_kb`, `workload.nice`).
    pub knob: String,
    /// For workload.* knobs: the workload profile.
    pub workload: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ReadOutput {
    pub knob: String,
    pub value: String,
    /// The full catalogue entry: what it affects, when it helps, risk, evidence.
    pub entry: catalog::Knob,
}

fn knob_read(ctx: &Ctx<'_>, i: ReadInput) -> Result<ReadOutput, ApiError> {
    let r = catalog::resolve(&i.knob)?;
    let value = match &i.workload {
        Some(w) => {
            let b = crate::deploy::deployer::workload_binding(&ctx.services.cfg, w)?;
            crate::knobs::change::read_workload(&r, &b)?
        }
        None => discover::read(&i.knob)?,
    };
    Ok(ReadOutput {
        knob: r.name,
        value,
        entry: r.knob.clone(),
    })
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrialInput {
    /// The change set: [{"knob": "vm.swappiness", "value": "10"}, {"knob": "workload.nice", "value": "5", "workload": "build"}].
    pub knobs: Vec<Assignment>,
    /// The workload measured: a workload profile (workload.* knobs go to its processes) or a built-in workload spec.
    pub workload: String,
    /// Runs a side, 4..=50 (default 6), interleaved ABBA after a warm-up run a side.
    #[schemars(range(min = 4, max = 50))]
    pub runs: Option<usize>,
    /// Significance level (default 0.05).
    pub alpha: Option<f64>,
    /// Smallest change of medians in percent that counts (default from the engine).
    pub min_effect_pct: Option<f64>,
    /// Where: host, lab (the sched_ext micro-VM, for knobs this host refuses; a built-in workload spec; emulated timing) or auto (default: the host when it allows every knob).
    pub place: Option<String>,
    /// Wait up to this many seconds for the verdict, with progress notifications (default 0).
    pub wait_seconds: Option<f64>,
}

fn knob_trial(ctx: &Ctx<'_>, i: TrialInput) -> Result<JobStatus, ApiError> {
    let mut criteria = Criteria::default();
    if let Some(a) = i.alpha {
        criteria.alpha = a;
    }
    if let Some(m) = i.min_effect_pct {
        criteria.min_effect_pct = m;
    }
    criteria.validate().map_err(ApiError::invalid)?;
    let req = TrialRequest {
        knobs: i.knobs,
        workload: i.workload,
        runs: i.runs.unwrap_or(6),
        criteria,
    };
    let cfg = ctx.services.cfg.clone();
    let place = match i.place.as_deref() {
        Some(p) => p.parse().map_err(ApiError::from)?,
        None => trial::Place::Auto,
    };
    if trial::choose_place(&req, place)? == trial::Place::Lab {
        let (writes, spec) = trial::admit_lab(&req)?;
        let title = format!("knob trial in the lab VM ({} runs a side)", req.runs);
        return ctx.services.jobs.spawn(
            &ctx.caller.id,
            title,
            crate::api::jobs::JobKind::Work,
            move |progress| {
                let mut n = 0;
                let r = trial::run_lab(&cfg, writes, spec, &req, &mut |p| {
                    if let crate::lab::Progress::Guest(schedcp_proto::report::GuestMessage::Run {
                        ..
                    }) = p
                    {
                        n += 1;
                        progress.say(&format!("lab VM: run {n} finished"));
                    }
                })?;
                serde_json::to_value(r).map_err(|e| ApiError::internal(e.into()))
            },
        );
    }
    // Refusals answer the call itself, before a job exists.
    let (plan, workload) = trial::admit(&cfg, &req)?;
    if ctx.services.deployer().is_ok_and(|d| d.is_busy()) {
        return Err(ApiError::new(
            Code::Busy,
            "a deploy or rollback is in progress: a trial now would measure it; retry after it ends (deploy_status)",
        ));
    }
    let title = format!("knob trial {}", plan.describe());
    ctx.services.jobs.spawn(
        &ctx.caller.id,
        title,
        crate::api::jobs::JobKind::Work,
        move |progress| {
            let on = |n: usize, of: usize, side: Side, r: Result<f64, &str>| {
                let who = if side == Side::Baseline {
                    "current"
                } else {
                    "candidate"
                };
                progress.say(&match r {
                    Ok(v) => format!("run {n}/{of} ({who}): {v:.2}"),
                    Err(e) => format!("run {n}/{of} ({who}) failed: {e}"),
                });
            };
            let r = trial::run_host(&cfg, plan, &workload, &req, &on)?;
            serde_json::to_value(r).map_err(|e| ApiError::internal(e.into()))
        },
    )
}

pub fn ops() -> Vec<Op> {
    vec![
        op("knob_list", Scope::Observe, Method::Get, "/knobs", true,
           "The kernel knobs schedcp can change beyond sched_ext — fair scheduler (sysctls, debugfs sched/ and its features), per-workload nice/policy/slice/affinity and cgroup CPU control, THP and vm.*, block I/O per device — with what this machine allows (and why not), current values, safe ranges and risk. detail=true adds each knob's evidence.",
           knob_list),
        op("knob_read", Scope::Observe, Method::Get, "/knobs/read", true,
           "One knob's current value with its catalogue entry (what it affects, when it helps or hurts, evidence). workload.* knobs need the workload profile.",
           knob_read),
        op("knob_trial", Scope::Propose, Method::Post, "/knobs/trial", false,
           "A/B a knob change set against the current settings on this machine with a workload: interleaved ABBA runs, the change applied and restored around each candidate block, judged with a Mann-Whitney test and a Hodges-Lehmann interval. The machine is restored afterwards, also when a run fails or the daemon dies. A job. To apply a winner, call deploy with knobs (deploy scope): canary, breaker, rollback.",
           knob_trial).as_job(),
    ]
}
