//! Tools of the observe service and of the machine itself.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::auth::Scope;
use crate::api::error::ApiError;
use crate::api::ops::{op, Ctx, Method, Op};
use crate::observe::scheduler::{self, SchedulerState};
use crate::observe::summary::{self, Summary};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoInput {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SystemInfo {
    pub schedcp_version: String,
    pub hostname: String,
    pub kernel_release: String,
    pub cpus: usize,
    /// What schedules this machine now, and whether sched_ext is available.
    pub scheduler: SchedulerState,
    /// Why schedulers cannot be attached here, when they cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sched_ext_unavailable: Option<String>,
    /// The micro-VM lab's sched_ext kernel (verify runs there), if fetched.
    pub lab_kernel: Option<String>,
    /// Services this daemon exposes.
    pub services: Vec<String>,
}

fn system_info(ctx: &Ctx<'_>, _: NoInput) -> Result<SystemInfo, ApiError> {
    let u = nix::sys::utsname::uname().map_err(|e| ApiError::internal(e.into()))?;
    let sched = scheduler::current();
    let unavailable = (sched.sched_ext == "unsupported").then(|| {
        "this kernel has no sched_ext (CONFIG_SCHED_CLASS_EXT): schedulers can be verified in the micro-VM lab but not attached here".to_string()
    });
    let lab = crate::lab::Lab::new(ctx.services.cfg.clone());
    Ok(SystemInfo {
        schedcp_version: env!("CARGO_PKG_VERSION").into(),
        hostname: u.nodename().to_string_lossy().into_owned(),
        kernel_release: u.release().to_string_lossy().into_owned(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        scheduler: sched,
        sched_ext_unavailable: unavailable,
        lab_kernel: lab.kernel().ok().map(|k| k.release),
        services: vec!["observe".into(), "policies".into(), "verify".into()],
    })
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SummaryInput {
    /// Sampling window in ms, 100..=10000 (default from the config, 1000).
    #[schemars(range(min = 100, max = 10000))]
    pub window_ms: Option<u64>,
    /// Token budget of the answer, 200..=8000 (default 400).
    #[schemars(range(min = 200, max = 8000))]
    pub budget_tokens: Option<usize>,
}

fn observe_summary(ctx: &Ctx<'_>, i: SummaryInput) -> Result<Summary, ApiError> {
    let window = i
        .window_ms
        .unwrap_or(ctx.services.cfg.observe.summary_window_ms);
    if !(100..=10_000).contains(&window) {
        return Err(ApiError::invalid("window_ms must be 100..=10000"));
    }
    let budget = i
        .budget_tokens
        .unwrap_or(ctx.services.cfg.observe.summary_budget_tokens);
    if !(summary::MIN_BUDGET..=summary::MAX_BUDGET).contains(&budget) {
        return Err(ApiError::invalid(format!(
            "budget_tokens must be {}..={}",
            summary::MIN_BUDGET,
            summary::MAX_BUDGET
        )));
    }
    summary::summary(Duration::from_millis(window), budget).map_err(|e| {
        let m = format!("{e:#}");
        // A budget this machine's smallest summary does not fit is the
        // caller's to raise, not a server fault.
        if m.contains("budget") {
            ApiError::invalid(m.replace("--budget", "budget_tokens"))
        } else {
            ApiError::internal(e)
        }
    })
}

pub fn ops() -> Vec<Op> {
    vec![
        op("system_info", Scope::Observe, Method::Get, "/system", true,
           "This machine: kernel release, CPUs, which scheduler runs now, whether sched_ext is available here, the lab's sched_ext kernel, and the services this daemon offers. Cheap; call it first.",
           system_info),
        op("observe_summary", Scope::Observe, Method::Get, "/observe/summary", true,
           "A compact (~400 tokens) picture of the machine's CPU scheduling over a short window: utilisation and its spread over CPUs, load, run-queue pressure (PSI), context-switch and wakeup rates, memory, the busiest tasks. The starting point for choosing a scheduler.",
           observe_summary),
    ]
}
