//! Tools of the policies service: search, list, show, history, add a
//! candidate, record a result.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::auth::Scope;
use crate::api::error::ApiError;
use crate::api::ops::{op, Ctx, Method, Op};
use crate::bpf::meta::PolicyMeta;
use crate::policies::model::{
    Body, Direction, NewPolicy, NewResult, Origin, PolicyRef, PolicySummary, PolicyVersion,
    ResultSource, ResultVerdict, State, StoredVerifyReport, Transition,
};
use crate::policies::search::{SearchQuery, SearchResults};
use crate::policies::Recorded;

fn pref(name: &str, version: Option<u32>) -> Result<PolicyRef, ApiError> {
    let r: PolicyRef = name.parse().map_err(ApiError::invalid)?;
    Ok(PolicyRef {
        name: r.name,
        version: version.or(r.version),
    })
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchInput {
    /// What the workload needs or what the scheduler should do, in words
    /// (e.g. "low tail latency for a web server under bursty load").
    #[schemars(length(min = 1, max = 1000))]
    pub query: String,
    /// Hits to return, 1..=50 (default 5).
    #[schemars(range(min = 1, max = 50))]
    pub limit: Option<usize>,
    /// Only policies whose latest version is in this state.
    pub state: Option<State>,
}

fn search(ctx: &Ctx<'_>, i: SearchInput) -> Result<SearchResults, ApiError> {
    let q = SearchQuery {
        text: i.query,
        limit: i.limit.unwrap_or(5),
        state: i.state,
    };
    Ok(ctx.services.with_library(|lib| lib.search(&q))?)
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListInput {
    pub state: Option<State>,
    /// Skip this many (paging; default 0).
    pub offset: Option<usize>,
    /// At most this many, 1..=200 (default 50).
    #[schemars(range(min = 1, max = 200))]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListOutput {
    pub total: usize,
    pub policies: Vec<PolicySummary>,
    /// Pass as `offset` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
}

fn list(ctx: &Ctx<'_>, i: ListInput) -> Result<ListOutput, ApiError> {
    let limit = i.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid("limit must be 1..=200"));
    }
    let all = ctx.services.with_library(|lib| lib.list(i.state))?;
    let offset = i.offset.unwrap_or(0).min(all.len());
    let end = (offset + limit).min(all.len());
    Ok(ListOutput {
        total: all.len(),
        next_offset: (end < all.len()).then_some(end),
        policies: all[offset..end].to_vec(),
    })
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShowInput {
    /// Policy name, optionally `name@version`.
    pub name: String,
    /// A version (default: the latest).
    pub version: Option<u32>,
    /// Include the BPF C source (can be tens of kB; default false).
    pub include_source: Option<bool>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ShowOutput {
    pub policy: PolicyVersion,
    /// The latest verification of this version, if any (full report: verify_report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_verify: Option<VerifySummary>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct VerifySummary {
    pub report_id: i64,
    pub passed: bool,
    pub recorded_at: String,
    pub kernel_release: Option<String>,
}

impl From<&StoredVerifyReport> for VerifySummary {
    fn from(k: &StoredVerifyReport) -> Self {
        VerifySummary {
            report_id: k.id,
            passed: k.passed,
            recorded_at: k.recorded_at.clone(),
            kernel_release: k.kernel_release.clone(),
        }
    }
}

fn show(ctx: &Ctx<'_>, i: ShowInput) -> Result<ShowOutput, ApiError> {
    let r = pref(&i.name, i.version)?;
    let (mut v, last) = ctx.services.with_library(|lib| {
        let v = lib.get(&r)?;
        let pinned = PolicyRef {
            name: v.name.clone(),
            version: Some(v.version),
        };
        let last = lib.verify_reports(&pinned, 1)?.into_iter().next();
        Ok((v, last))
    })?;
    if !i.include_source.unwrap_or(false) {
        if let Body::Bpf { source } = &mut v.body {
            *source = format!("({} bytes; pass include_source: true)", source.len());
        }
    }
    Ok(ShowOutput {
        policy: v,
        last_verify: last.as_ref().map(VerifySummary::from),
    })
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryInput {
    pub name: String,
    /// Newest entries to return of each list, 1..=200 (default 20).
    #[schemars(range(min = 1, max = 200))]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct HistoryOutput {
    pub name: String,
    /// (version, state, content hash, created) of every version.
    pub versions: Vec<VersionLine>,
    /// Newest last.
    pub transitions: Vec<Transition>,
    /// Newest last.
    pub results: Vec<crate::policies::model::PolicyResult>,
    pub omitted_transitions: usize,
    pub omitted_results: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct VersionLine {
    pub version: u32,
    pub state: State,
    pub content_hash: String,
    pub created_at: String,
}

fn history(ctx: &Ctx<'_>, i: HistoryInput) -> Result<HistoryOutput, ApiError> {
    let limit = i.limit.unwrap_or(20);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid("limit must be 1..=200"));
    }
    let r = pref(&i.name, None)?;
    let h = ctx.services.with_library(|lib| lib.history(&r.name))?;
    let tail = |n: usize| n.saturating_sub(limit);
    let (ot, or) = (tail(h.transitions.len()), tail(h.results.len()));
    Ok(HistoryOutput {
        name: h.name,
        versions: h
            .versions
            .iter()
            .map(|v| VersionLine {
                version: v.version,
                state: v.state,
                content_hash: v.content_hash.clone(),
                created_at: v.created_at.clone(),
            })
            .collect(),
        transitions: h.transitions[ot..].to_vec(),
        results: h.results[or..].to_vec(),
        omitted_transitions: ot,
        omitted_results: or,
    })
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddInput {
    /// Metadata, as in a policy.toml: name (a plain identifier), ops_name,
    /// description, algorithm, target_workloads, limitations, tunables.
    pub meta: PolicyMeta,
    /// The scheduler's BPF C source (sched_ext; includes limited to the
    /// bundled headers, e.g. `#include <scx/common.bpf.h>`).
    pub source: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AddOutput {
    /// `name@version`.
    pub added: String,
    pub state: State,
    pub content_hash: String,
    /// What to do next.
    pub next: String,
}

fn add(ctx: &Ctx<'_>, i: AddInput) -> Result<AddOutput, ApiError> {
    let p = NewPolicy {
        meta: i.meta,
        origin: Origin::Agent,
        body: Body::Bpf { source: i.source },
    };
    let v = ctx
        .services
        .with_library(|lib| lib.add_as(p, ctx.author()))?;
    Ok(AddOutput {
        next: format!("verify it: verify_submit {{\"policy\": \"{}\"}}", v.id()),
        added: v.id(),
        state: v.state,
        content_hash: v.content_hash,
    })
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordInput {
    /// `name` or `name@version`.
    pub policy: String,
    /// The workload profile's name.
    pub workload: String,
    /// The workload in words (matched against later searches; default: the name).
    pub workload_description: Option<String>,
    pub metric: String,
    pub unit: String,
    pub direction: Direction,
    pub value: f64,
    pub baseline: Option<f64>,
    pub p_value: Option<f64>,
    /// improved, regressed or no_change (improved/regressed claim significance).
    pub verdict: ResultVerdict,
    /// Where it was measured (default: "reported through the API").
    pub environment: Option<String>,
}

fn record(ctx: &Ctx<'_>, i: RecordInput) -> Result<Recorded, ApiError> {
    let r = pref(&i.policy, None)?;
    let res = NewResult {
        signature: None,
        workload_description: i.workload_description.unwrap_or_else(|| i.workload.clone()),
        workload: i.workload,
        metric: i.metric,
        unit: i.unit,
        direction: i.direction,
        value: i.value,
        baseline: i.baseline,
        improvement_pct: None,
        p_value: i.p_value,
        significant: i.verdict != ResultVerdict::NoChange,
        verdict: i.verdict,
        // Agents report manual results: they never promote on their own.
        source: ResultSource::Manual,
        environment: i
            .environment
            .unwrap_or_else(|| format!("reported through the API by token {}", ctx.caller.id)),
    };
    Ok(ctx
        .services
        .with_library(|lib| lib.record_result_as(&r, res, ctx.author()))?)
}

pub fn ops() -> Vec<Op> {
    vec![
        op("policy_search", Scope::Observe, Method::Post, "/policies/search", true,
           "Find schedulers for a workload or behaviour described in words. Hybrid ranking: sentence embeddings + BM25 full text + measured results on similar workloads, fused by reciprocal rank. Each hit carries a score and the reason it matched. Start here before writing a scheduler.",
           search),
        op("policy_list", Scope::Observe, Method::Get, "/policies", true,
           "List the policy library (latest version of each policy), optionally by lifecycle state, paged.",
           list),
        op("policy_show", Scope::Observe, Method::Get, "/policies/show", true,
           "One policy version: metadata (algorithm, targets, limitations, tunables), state, and its last verification. The source is omitted unless include_source is true.",
           show),
        op("policy_history", Scope::Observe, Method::Get, "/policies/history", true,
           "A policy's versions, lifecycle transitions and measured results (newest `limit` of each).",
           history),
        op("policy_add", Scope::Propose, Method::Post, "/policies", false,
           "Add a scheduler you wrote as a new candidate version (BPF C source + metadata). It cannot be deployed until verify_submit passes; it is never promoted without measured evidence. Your token owns the policies it creates: only it (or an admin) adds their later versions. Each token has quotas ([policies] quota_versions, quota_mib): over them the call is refused with quota_exceeded.",
           add),
        op("policy_record_result", Scope::Propose, Method::Post, "/policies/results", false,
           "Record a measured result of a policy version on a workload (metric, value, baseline, verdict). Results feed search ranking; reported results never promote a policy by themselves. Counted against the token's quota ([policies] quota_results).",
           record),
    ]
}
