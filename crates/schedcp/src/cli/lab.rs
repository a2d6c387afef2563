use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use schedcp::bpf::meta::parse_assignment;
use schedcp::compare::Criteria;
use schedcp::config::{Accel, Config};
use schedcp::error::{exit, Error};
use schedcp::lab::compare::{CompareRequest, Contender, LabComparison};
use schedcp::lab::kernel::{self, KernelImage};
use schedcp::lab::report::LabReport;
use schedcp::lab::{Lab, LabRequest, Progress, SchedulerRef};
use schedcp_proto::report::GuestMessage;
use schedcp_proto::workload::{ParamKind, WorkloadKind, WorkloadSpec};
use serde::Serialize;

use super::output::{Output, Report};

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Run one workload in a fresh micro-VM, on a scheduler or on the kernel default.
    ///
    /// Compiles the scheduler, boots the cached sched_ext kernel with the guest
    /// agent as init, attaches the scheduler through struct_ops, runs the
    /// workload, detaches, and prints what the guest reported: timings, state
    /// transitions, metrics, the verifier log if the kernel refused the
    /// scheduler, and its exit info if the kernel ejected it.
    ///
    /// Examples:
    ///   schedcp lab run --policy vtime --workload batch
    ///   schedcp lab run --policy ./my.bpf.c --workload wakeup:workers=8,duration_ms=2000
    ///   schedcp lab run --policy latency --set slice_us=1000 --workload pingpong --json
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Compare a scheduler against a baseline (default: the kernel's scheduler) over several runs.
    Compare(CompareArgs),
    /// The main job on embedded defaults: every built-in scheduler against the kernel default on
    /// its target workload, then the best one verified and deployed on a lab node under a canary,
    /// and rolled back.
    Demo(super::demo::DemoArgs),
    /// Fetch the newest Debian sid cloud kernel with sched_ext into the cache (idempotent).
    FetchKernel {
        /// Fetch again even if a kernel is cached.
        #[arg(long)]
        refresh: bool,
    },
    /// Boot a lab node: a long-running micro-VM with the sched_ext kernel whose
    /// init runs this schedcp's daemon, reachable from this host over REST and
    /// MCP on a loopback port. Use it to try `schedcp deploy --url` on a real
    /// sched_ext kernel when this machine has none. Runs until Ctrl-C.
    ///
    /// The node trusts tokens signed by this machine's verifier key, so
    /// objects verified here deploy there.
    ///
    /// Examples:
    ///   schedcp lab node                 # prints URL and an API token, then waits
    ///   schedcp lab node --json          # {"url": ..., "token": ...} on one line
    #[command(verbatim_doc_comment)]
    Node {
        /// Virtual CPUs.
        #[arg(long, default_value_t = 2)]
        vcpus: u32,
        /// Guest memory in MiB (the initramfs carries schedcp and the embedding model).
        #[arg(long, default_value_t = 2048)]
        mem_mib: u32,
    },
    /// List the built-in workloads and their parameters.
    Workloads,
}

#[derive(Debug, Args, Clone)]
pub struct VmArgs {
    /// Workload spec: NAME[:key=value,...]; see `schedcp lab workloads`.
    #[arg(long, short, value_parser = parse_workload)]
    workload: WorkloadSpec,
    /// Virtual CPUs (default from config: 2).
    #[arg(long)]
    vcpus: Option<u32>,
    /// Guest memory in MiB (default from config: 1024).
    #[arg(long, value_name = "MIB")]
    mem: Option<u32>,
    /// Wall-clock limit per VM, in seconds (default from config: 180).
    #[arg(long, value_name = "S")]
    timeout: Option<u64>,
    /// Accelerator: auto tries KVM and falls back to TCG.
    #[arg(long, value_enum)]
    accel: Option<Accel>,
    /// Keep the run directory (initramfs, console log, raw report).
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// `default` (the kernel's scheduler), a built-in policy name, or a path to a .bpf.c file.
    #[arg(long, short)]
    policy: String,
    /// Set a tunable of a built-in policy: NAME=VALUE (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_assignment)]
    set: Vec<(String, String)>,
    #[command(flatten)]
    vm: VmArgs,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The candidate: a built-in policy name or a .bpf.c path.
    #[arg(long, short)]
    policy: String,
    /// What to compare against.
    #[arg(long, default_value = "default")]
    baseline: String,
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_assignment)]
    set: Vec<(String, String)>,
    /// Runs per side, interleaved ABBA in one VM boot after a warm-up run
    /// of the candidate. At least 4 for the test to reach p < 0.05; under
    /// TCG, effects of 20-40% typically need 6-10.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(2..=50))]
    runs: u32,
    /// Significance level of the test (two-sided).
    #[arg(long, default_value_t = schedcp::compare::stats::DEFAULT_ALPHA)]
    alpha: f64,
    /// Smallest change of medians, in percent, that counts as a change.
    #[arg(long, default_value_t = schedcp::compare::stats::DEFAULT_MIN_EFFECT_PCT)]
    min_effect: f64,
    #[command(flatten)]
    vm: VmArgs,
}

fn parse_workload(s: &str) -> Result<WorkloadSpec, String> {
    s.parse()
        .map_err(|e: schedcp_proto::workload::SpecError| e.to_string())
}

pub fn run(cfg: Config, cmd: LabCommand, out: Output) -> Result<i32, Error> {
    match cmd {
        LabCommand::Run(a) => run_one(cfg, a, out),
        LabCommand::Compare(a) => run_compare(cfg, a, out),
        LabCommand::Demo(a) => super::demo::run(cfg, a, out),
        LabCommand::FetchKernel { refresh } => fetch_kernel(cfg, refresh, out),
        LabCommand::Workloads => {
            out.emit(&workloads())?;
            Ok(exit::OK)
        }
        LabCommand::Node { vcpus, mem_mib } => node(cfg, vcpus, mem_mib, out),
    }
}

/// `lab node`: where the node is and how to reach it.
#[derive(Serialize)]
struct NodeUp {
    kernel_release: String,
    run_dir: PathBuf,
    token: String,
    url: String,
}

impl Report for NodeUp {
    fn render(&self) -> String {
        let mut s = format!("lab node up: kernel {} (sched_ext)\n", self.kernel_release);
        let _ = writeln!(s, "  REST  {}/v1   MCP  {}/mcp", self.url, self.url);
        let _ = writeln!(s, "  token {}", self.token);
        let _ = writeln!(
            s,
            "  console log {}",
            self.run_dir.join("console.log").display()
        );
        let _ = writeln!(
            s,
            "try:  schedcp deploy status --url {} --api-token <token>",
            self.url
        );
        s.push_str("Ctrl-C stops the node.\n");
        s
    }
}

fn node(cfg: Config, vcpus: u32, mem_mib: u32, out: Output) -> Result<i32, Error> {
    schedcp::config::check_vm_size(vcpus, mem_mib, 60)
        .map_err(|e| Error::Input(format!("{e:#}")))?;
    let lab = Lab::new(cfg);
    let pb = out.spinner();
    let opts = schedcp::node::NodeOptions {
        vcpus,
        mem_mib,
        lifetime: Duration::from_secs(schedcp::config::MAX_TIMEOUT_S),
        ..Default::default()
    };
    pb.set_message("booting the lab node");
    let node = schedcp::node::Node::start(&lab, &opts, &|m| {
        tracing::info!("{m}");
        pb.set_message(m.to_string());
    })?;
    pb.finish_and_clear();
    out.emit_compact(&NodeUp {
        kernel_release: node.kernel_release.clone(),
        run_dir: node.run_dir.clone(),
        token: node.token.clone(),
        url: node.url.clone(),
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(e.into()))?;
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    drop(node);
    Ok(exit::OK)
}

fn request(cfg: &Config, policy: &str, set: Vec<(String, String)>, vm: &VmArgs) -> LabRequest {
    LabRequest {
        policy: SchedulerRef::parse(policy),
        tunables: set,
        workload: vm.workload.clone(),
        then: Vec::new(),
        others: Vec::new(),
        vcpus: vm.vcpus.unwrap_or(cfg.lab.vcpus),
        mem_mib: vm.mem.unwrap_or(cfg.lab.mem_mib),
        timeout: Duration::from_secs(vm.timeout.unwrap_or(cfg.lab.timeout_s)),
        knob_sets: Vec::new(),
        knobs: None,
        accel: vm.accel.unwrap_or(cfg.lab.accel),
    }
}

fn lab_with(mut cfg: Config, keep: bool) -> Lab {
    cfg.lab.keep_runs |= keep;
    Lab::new(cfg)
}

/// Run with a spinner that follows the guest's steps.
fn run_with_progress(
    lab: &Lab,
    req: &LabRequest,
    out: Output,
    label: &str,
) -> Result<LabReport, Error> {
    let pb = out.spinner();
    let mut on_progress = |p: Progress<'_>| {
        let msg = describe_progress(&p);
        tracing::debug!("{label}: {msg}");
        pb.set_message(format!("{label}: {msg}"));
    };
    let r = lab.run(req, &mut on_progress);
    pb.finish_and_clear();
    r
}

/// A lab progress event in words, for a spinner.
fn describe_progress(p: &Progress<'_>) -> String {
    match p {
        Progress::Phase(s) => s.to_string(),
        Progress::Guest(GuestMessage::Hello { uptime_s, .. }) => {
            format!("guest agent up at {uptime_s:.2} s")
        }
        Progress::Guest(GuestMessage::Step {
            step,
            ok,
            elapsed_ms,
            ..
        }) => {
            format!(
                "{step:?} {} ({elapsed_ms:.0} ms)",
                if *ok { "done" } else { "FAILED" }
            )
        }
        Progress::Guest(GuestMessage::Run { index, .. }) => {
            format!("planned run {} finished", index + 1)
        }
        Progress::Guest(GuestMessage::Done(_)) => "guest finished; powering off".into(),
    }
}

fn run_one(cfg: Config, a: RunArgs, out: Output) -> Result<i32, Error> {
    let req = request(&cfg, &a.policy, a.set, &a.vm);
    let lab = lab_with(cfg, a.vm.keep);
    let report = run_with_progress(&lab, &req, out, &req.policy.label())?;
    out.emit(&report)?;
    Ok(report.outcome.exit_code())
}

fn run_compare(cfg: Config, a: CompareArgs, out: Output) -> Result<i32, Error> {
    let criteria = Criteria {
        alpha: a.alpha,
        min_effect_pct: a.min_effect,
    };
    criteria.validate().map_err(Error::Input)?;
    let req = CompareRequest {
        baseline: Contender {
            policy: SchedulerRef::parse(&a.baseline),
            tunables: Vec::new(),
            knobs: Vec::new(),
        },
        candidate: Contender {
            policy: SchedulerRef::parse(&a.policy),
            tunables: a.set,
            knobs: Vec::new(),
        },
        workload: a.vm.workload.clone(),
        runs: a.runs as usize,
        criteria,
        vcpus: a.vm.vcpus.unwrap_or(cfg.lab.vcpus),
        mem_mib: a.vm.mem.unwrap_or(cfg.lab.mem_mib),
        run_timeout: Duration::from_secs(a.vm.timeout.unwrap_or(cfg.lab.timeout_s)),
        accel: a.vm.accel.unwrap_or(cfg.lab.accel),
    };
    let lab = lab_with(cfg, a.vm.keep);
    let label = format!("{} vs {}", req.candidate.label(), req.baseline.label());
    let pb = out.spinner();
    let total = 2 + 2 * req.runs;
    let mut done = 0usize;
    let cmp = lab.compare(&req, &mut |p| {
        let msg = match p {
            Progress::Guest(GuestMessage::Run { .. }) => {
                done += 1;
                format!("run {} of {total} finished", done + 1)
            }
            other => describe_progress(&other),
        };
        pb.set_message(format!("{label}: {msg}"));
    });
    pb.finish_and_clear();
    let cmp = cmp?;
    out.emit(&cmp)?;
    let failed = !cmp.ab.baseline.failures.is_empty() || !cmp.ab.candidate.failures.is_empty();
    Ok(if failed { exit::SCHEDULER } else { exit::OK })
}

/// The JSON document is the comparison with its boot; the text, the judged A/B.
impl Report for LabComparison {
    fn render(&self) -> String {
        self.ab.render()
    }
}

/// `lab fetch-kernel`: the guest kernel in the cache.
#[derive(Serialize)]
#[serde(transparent)]
struct Kernel {
    image: KernelImage,
    /// Downloaded now, rather than found in the cache.
    #[serde(skip)]
    fetched: bool,
}

impl Report for Kernel {
    fn render(&self) -> String {
        let k = &self.image;
        format!(
            "{}: {} ({} {}) at {}\n",
            if self.fetched { "fetched" } else { "cached" },
            k.release,
            k.package,
            k.package_version,
            k.vmlinuz.display()
        )
    }
}

fn fetch_kernel(cfg: Config, refresh: bool, out: Output) -> Result<i32, Error> {
    let lab = Lab::new(cfg);
    let cache = lab.cache_dir().to_path_buf();
    if !refresh {
        if let Some(image) = kernel::cached(&cache) {
            out.emit_unless_quiet(&Kernel {
                image,
                fetched: false,
            })?;
            return Ok(exit::OK);
        }
    }
    let mirror = kernel::debian_mirror(lab.config().lab.debian_mirror.as_deref())
        .map_err(|e| Error::Setup(format!("{e:#}")))?;
    let pb = out.spinner();
    let image = kernel::fetch(&cache, &mirror, &|m| {
        tracing::info!("{m}");
        pb.set_message(m.to_string());
    })
    .map_err(|e| Error::Setup(format!("fetching the sched_ext guest kernel failed: {e:#}")))?;
    pb.finish_and_clear();
    out.emit_unless_quiet(&Kernel {
        image,
        fetched: true,
    })?;
    Ok(exit::OK)
}

#[derive(Serialize)]
struct WorkloadInfo {
    name: &'static str,
    description: &'static str,
    params: Vec<ParamInfo>,
}

#[derive(Serialize)]
struct ParamInfo {
    name: &'static str,
    default: String,
    range: String,
    doc: &'static str,
}

/// `lab workloads`.
#[derive(Serialize)]
#[serde(transparent)]
struct Workloads(Vec<WorkloadInfo>);

impl Report for Workloads {
    fn render(&self) -> String {
        let mut s = String::new();
        for w in &self.0 {
            let _ = writeln!(s, "{} — {}", w.name, w.description);
            for p in &w.params {
                let _ = writeln!(
                    s,
                    "    {:<12} default {:<6} {:<16} {}",
                    p.name, p.default, p.range, p.doc
                );
            }
        }
        s.push_str("\nSpec syntax: NAME[:key=value,...], e.g. batch:short=64,long=4\n");
        s
    }
}

fn workloads() -> Workloads {
    let list: Vec<WorkloadInfo> = WorkloadKind::ALL
        .iter()
        .map(|k| WorkloadInfo {
            name: k.name(),
            description: k.description(),
            params: k
                .params()
                .iter()
                .map(|p| match p.kind {
                    ParamKind::Int { default, min, max } => ParamInfo {
                        name: p.name,
                        default: default.to_string(),
                        range: format!("{min}..={max}"),
                        doc: p.doc,
                    },
                    ParamKind::Choice { default, choices } => ParamInfo {
                        name: p.name,
                        default: default.into(),
                        range: choices.join("|"),
                        doc: p.doc,
                    },
                })
                .collect(),
        })
        .collect();
    Workloads(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_is_one_compact_document_or_instructions() {
        let n = NodeUp {
            kernel_release: "6.12.0-cloud-amd64".into(),
            run_dir: PathBuf::from("/tmp/run"),
            token: "scp_x".into(),
            url: "http://127.0.0.1:7433".into(),
        };
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            serde_json::json!({
                "url": n.url, "token": n.token, "kernel_release": n.kernel_release,
                "run_dir": n.run_dir,
            })
            .to_string()
        );
        assert_eq!(
            n.render(),
            "lab node up: kernel 6.12.0-cloud-amd64 (sched_ext)
  REST  http://127.0.0.1:7433/v1   MCP  http://127.0.0.1:7433/mcp
  token scp_x
  console log /tmp/run/console.log
try:  schedcp deploy status --url http://127.0.0.1:7433 --api-token <token>
Ctrl-C stops the node.
"
        );
    }

    #[test]
    fn workloads_list_every_workload_then_the_syntax() {
        let w = workloads();
        let json = serde_json::to_value(&w).unwrap();
        assert_eq!(json.as_array().unwrap().len(), WorkloadKind::ALL.len());
        assert!(w
            .render()
            .ends_with("\nSpec syntax: NAME[:key=value,...], e.g. batch:short=64,long=4\n"));
    }
}
