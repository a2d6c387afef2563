//! Tools of the observe service and of the machine itself.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::sync::atomic::AtomicBool;

use crate::api::auth::Scope;
use crate::api::error::ApiError;
use crate::api::jobs::JobStatus;
use crate::api::ops::{op, Ctx, Method, Op};
use crate::observe::benchmark::{self, BenchProgress, BenchmarkRequest};
use crate::observe::detail::{self, Detail, TaskSort, Topic};
use crate::observe::probes::{self, Filter, ProbeKind, ProbeReport, ProbeRequest};
use crate::observe::profilers::{self, ProfileReport, ProfileRequest, Target, Tool};
use crate::observe::scheduler::{self, SchedulerState};
use crate::observe::summary::{self, Summary};
use crate::observe::workload_profiles::{self, WorkloadProfile};
use crate::store::Store;

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

/// Longest window an API caller may hold a probe or profiler attached.
const MAX_API_WINDOW_S: u64 = 30;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetailInput {
    /// `cpus` (per-CPU shares, switches, migrations, run-queue wait) or
    /// `tasks` (per-thread CPU, run delay, slices, migrations, switches).
    pub topic: Topic,
    /// Sampling window in ms, 100..=10000 (default 1000).
    #[schemars(range(min = 100, max = 10000))]
    pub window_ms: Option<u64>,
    /// Rows at most (tasks), 1..=500 (default 20).
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<usize>,
    /// Task order (default cpu).
    pub sort: Option<TaskSort>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DetailOutput {
    pub detail: Detail,
}

fn observe_detail(_: &Ctx<'_>, i: DetailInput) -> Result<DetailOutput, ApiError> {
    let window = i.window_ms.unwrap_or(1000);
    if !(100..=10_000).contains(&window) {
        return Err(ApiError::invalid("window_ms must be 100..=10000"));
    }
    let limit = i.limit.unwrap_or(20);
    if !(1..=detail::MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be 1..={}",
            detail::MAX_LIMIT
        )));
    }
    let d = detail::detail(
        i.topic,
        Duration::from_millis(window),
        limit,
        i.sort.unwrap_or(TaskSort::Cpu),
    )
    .map_err(|e| ApiError::invalid(format!("{e:#}")))?;
    Ok(DetailOutput { detail: d })
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeInput {
    /// runqlat (run-queue latency histogram), cputime (on-CPU time per
    /// task), schedevents (switches, wakeups, migrations per task).
    pub probe: ProbeKind,
    /// Seconds attached, 1..=30.
    #[schemars(range(min = 1, max = 30))]
    pub duration_s: u64,
    /// Only this process.
    pub pid: Option<u32>,
    /// Only tasks with this name (at most 15 bytes).
    pub comm: Option<String>,
    /// Rows of the top list, 1..=100 (default 10).
    #[schemars(range(min = 1, max = 100))]
    pub top: Option<usize>,
}

fn observe_probe(ctx: &Ctx<'_>, i: ProbeInput) -> Result<ProbeReport, ApiError> {
    if !(1..=MAX_API_WINDOW_S).contains(&i.duration_s) {
        return Err(ApiError::invalid(format!(
            "duration_s must be 1..={MAX_API_WINDOW_S}"
        )));
    }
    let top = i.top.unwrap_or(10);
    if !(1..=100).contains(&top) {
        return Err(ApiError::invalid("top must be 1..=100"));
    }
    let req = ProbeRequest {
        probe: i.probe,
        duration: Duration::from_secs(i.duration_s),
        filter: Filter {
            pid: i.pid,
            comm: i.comm,
        },
        top,
        cost: false,
    };
    if let Some(pid) = req.filter.pid {
        crate::api::targets::check(&ctx.services.cfg.api, pid)?;
    }
    let _slot = ctx.services.slots.take(
        "probe",
        &ctx.caller.id,
        ctx.services.cfg.api.max_probes,
        i.duration_s as f64,
    )?;
    let max = ctx.services.cfg.observe.probe_max_duration_s;
    Ok(probes::run(&req, max, &AtomicBool::new(false))?)
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileInput {
    /// perf-stat (counters), perf-sched (scheduler latency per task),
    /// strace-summary (syscall counts and time).
    pub tool: Tool,
    /// The running process to attach to (commands are not run for API callers).
    pub pid: u32,
    /// Seconds, 1..=30.
    #[schemars(range(min = 1, max = 30))]
    pub duration_s: u64,
}

fn observe_profile(ctx: &Ctx<'_>, i: ProfileInput) -> Result<ProfileReport, ApiError> {
    if !(1..=MAX_API_WINDOW_S).contains(&i.duration_s) {
        return Err(ApiError::invalid(format!(
            "duration_s must be 1..={MAX_API_WINDOW_S}"
        )));
    }
    crate::api::targets::check(&ctx.services.cfg.api, i.pid)?;
    let _slot = ctx.services.slots.take(
        "profiler",
        &ctx.caller.id,
        ctx.services.cfg.api.max_profilers,
        i.duration_s as f64,
    )?;
    let req = ProfileRequest::new(
        i.tool,
        Target::Pid(i.pid),
        Duration::from_secs(i.duration_s),
    );
    Ok(profilers::profile(&ctx.services.cfg.observe, &req)?)
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ProfilesOutput {
    /// Registered workload profiles (`schedcp observe workload add` registers them).
    pub profiles: Vec<WorkloadProfile>,
}

fn workload_profiles(ctx: &Ctx<'_>, _: NoInput) -> Result<ProfilesOutput, ApiError> {
    let store = Store::open_in(&ctx.services.cfg.state_dir())?;
    Ok(ProfilesOutput {
        profiles: workload_profiles::list(&store)?,
    })
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkInput {
    /// A registered workload profile (see workload_profiles).
    pub profile: String,
    /// Runs, 1..=100 (default 5).
    #[schemars(range(min = 1, max = 100))]
    pub runs: Option<u32>,
    /// A previous run-set of the same profile to compare against (its id).
    pub baseline: Option<i64>,
    /// Command profiles: first take the workload's signature in a warm-up run (probes attached, not counted), kept with the profile and the run-set (default false).
    pub signature: Option<bool>,
    /// Wait up to this many seconds for the result, with progress notifications (default 0).
    pub wait_seconds: Option<f64>,
}

fn observe_benchmark(ctx: &Ctx<'_>, i: BenchmarkInput) -> Result<JobStatus, ApiError> {
    let runs = i.runs.unwrap_or(5);
    if !(1..=benchmark::MAX_RUNS).contains(&runs) {
        return Err(ApiError::invalid(format!(
            "runs must be 1..={}",
            benchmark::MAX_RUNS
        )));
    }
    let cfg = ctx.services.cfg.clone();
    // Refuse an unknown profile now rather than in the job.
    workload_profiles::get(&Store::open_in(&cfg.state_dir())?, &i.profile)?;
    let mut req = BenchmarkRequest::new(i.profile.clone(), runs);
    req.baseline = i.baseline;
    req.signature = i.signature.unwrap_or(false);
    let title = format!("benchmark {} x{runs}", i.profile);
    ctx.services.jobs.spawn(
        &ctx.caller.id,
        title,
        crate::api::jobs::JobKind::Work,
        move |progress| {
            let mut store = Store::open_in(&cfg.state_dir())?;
            let lab = crate::lab::Lab::new(cfg.clone());
            let report = benchmark::run_benchmark(&mut store, Some(&lab), &req, &mut |p| {
                if let BenchProgress::Run { run, runs } = p {
                    progress.say(&format!("run {run}/{runs}"));
                }
            })?;
            serde_json::to_value(report).map_err(|e| ApiError::internal(e.into()))
        },
    )
}

pub fn ops() -> Vec<Op> {
    vec![
        op("system_info", Scope::Observe, Method::Get, "/system", true,
           "This machine: kernel release, CPUs, which scheduler runs now, whether sched_ext is available here, the lab's sched_ext kernel, and the services this daemon offers. Cheap; call it first.",
           system_info),
        op("observe_summary", Scope::Observe, Method::Get, "/observe/summary", true,
           "A compact (~400 tokens) picture of the machine's CPU scheduling over a short window: utilisation and its spread over CPUs, load, run-queue pressure (PSI), context-switch and wakeup rates, memory, the busiest tasks. The starting point for choosing a scheduler.",
           observe_summary),
        op("observe_detail", Scope::Observe, Method::Get, "/observe/detail", true,
           "What the summary condenses, one topic at a time: per-CPU (time shares, context switches, migrations, run-queue wait) or per-thread (CPU, run delay, average slice, migrations, switches), bounded by `limit`.",
           observe_detail),
        op("observe_probe", Scope::Observe, Method::Post, "/observe/probe", true,
           "Attach one of schedcp's eBPF probes to this machine's scheduler for up to 30 s: runqlat (run-queue latency histogram), cputime (on-CPU time per task) or schedevents (switches, wakeups, migrations per task), optionally for one pid or task name. Aggregated in the kernel; detached afterwards.",
           observe_probe),
        op("observe_profile", Scope::Observe, Method::Post, "/observe/profile", true,
           "Profile a running process for up to 30 s with perf stat, perf sched or strace -c, in a sandbox; returns a bounded summary. strace-summary attaches with ptrace (it stops the target at each syscall), and is part of the observe scope. Never pid 1, the daemon or anything it started; the operator may limit targets to uids (api.observe_uids) and cgroups (api.observe_cgroups). A few run at once (api.max_profilers), one per token: otherwise busy with a retry time.",
           observe_profile),
        op("workload_profiles", Scope::Observe, Method::Get, "/observe/profiles", true,
           "The registered workload profiles: what to run and which metric judges a scheduler on it (targets of observe_benchmark).",
           workload_profiles),
        op("observe_benchmark", Scope::Propose, Method::Post, "/observe/benchmark", false,
           "Run a registered workload profile N times and judge it against a baseline run-set (Mann-Whitney U, Hodges-Lehmann interval). A job: returns at once (poll job_status) or waits up to wait_seconds with progress notifications.",
           observe_benchmark).as_job(),
    ]
}
