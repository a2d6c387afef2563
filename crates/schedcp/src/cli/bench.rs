//! `schedcp bench ...`: benchmarks of schedcp itself.

use clap::{Args, Subcommand};
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::selfbench::canary_overhead;
use schedcp::selfbench::probe_overhead::{self, MAX_RUNS};

use super::output::{Output, Report};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Per-event cost of the runqlat probe against libbpf-tools' runqlat, same workload, same run.
    ///
    /// Turns on the kernel's BPF run-time statistics for the duration, then
    /// for each run attaches one side, runs hackbench (Debian rt-tests) to
    /// completion and reads run_time_ns / run_cnt of that side's programs,
    /// detaches, and does the same for the other side (/usr/sbin/runqlat
    /// from Debian libbpf-tools, stopped with SIGINT). The order alternates
    /// between runs. Reports the median, range and spread of ns per event
    /// for both, their ratio, and whether ours is under 150 ns and no worse
    /// than runqlat. Needs root.
    ///
    /// Examples:
    ///   schedcp bench probe-overhead
    ///   schedcp bench probe-overhead --runs 9 --all --json
    #[command(verbatim_doc_comment)]
    ProbeOverhead(ProbeOverheadArgs),
    /// Policy search latency (p50/p99 at each size, per backend) and quality against substring matching.
    ///
    /// Builds a fresh store per size holding the shipped library plus
    /// synthetic policies (all embedded for real with all-MiniLM-L6-v2),
    /// times searches with the query embedding excluded (embedding time is
    /// reported apart), and scores top-1/top-3 on a labelled query set
    /// against a substring match over names and descriptions. With
    /// --postgres-url the same runs on PostgreSQL + pgvector, in a scratch
    /// schema that is dropped afterwards.
    ///
    /// Examples:
    ///   schedcp bench policy-search
    ///   schedcp bench policy-search --sizes 100,1000 --searches 400 --json
    ///   schedcp bench policy-search --postgres-url postgresql://user@127.0.0.1:55432/db
    #[command(verbatim_doc_comment)]
    PolicySearch(PolicySearchArgs),
    /// MCP tool-call latency of the daemon (observe_summary, policy_search) with concurrent sessions.
    ///
    /// Starts the daemon in this process on a private socket and state
    /// directory, opens N MCP sessions over the socket at once, and has each
    /// make sequential tools/call requests. Reports p50/p99/max, the spread
    /// (IQR over median) and throughput per tool and N. Latency is the
    /// client's, so it includes framing, authentication, the audit append
    /// and the hop to a blocking thread, not only the service.
    ///
    /// Examples:
    ///   schedcp bench api
    ///   schedcp bench api --clients 1,8,32 --calls 256 --json
    #[command(verbatim_doc_comment)]
    Api(ApiArgs),
    /// The daemon under load and under a flood of refused requests.
    ///
    /// Starts the daemon in this process on a private socket, loopback HTTP
    /// port and state directory. N clients — half MCP sessions over the
    /// socket, half REST over HTTP — each make M mixed read-only calls
    /// (system_info, knob_list, workload_profiles, deploy_history); every
    /// error is counted and p50/p99 reported per door. Then one caller's
    /// system_info latency alone and while N clients flood the doors with
    /// wrong-token requests, and how many audit entries the flood added.
    /// The audit chain is verified at the end. Exit 1 on any error.
    ///
    /// Examples:
    ///   schedcp bench load
    ///   schedcp bench load --clients 32 --calls 1000 --json
    #[command(verbatim_doc_comment)]
    Load(LoadArgs),
    /// What a deploy canary costs the workload it watches.
    ///
    /// Runs a lab workload on this host N times bare and N times inside a
    /// canary KPI window (the runqlat probe attached, PSI and nr_rejected
    /// read around it: the deploy controller's own code path), alternating
    /// the order, and reports both sides' median, range and spread, the
    /// ratio, the overhead in percent and a Mann-Whitney p-value. Needs
    /// root (BPF). Needs no sched_ext: the canary's cost is the probe's.
    ///
    /// Examples:
    ///   schedcp bench canary-overhead
    ///   schedcp bench canary-overhead --workload pingpong:loops=2000 --runs 9 --json
    #[command(verbatim_doc_comment)]
    CanaryOverhead(CanaryOverheadArgs),
    /// The tuner judged: scenarios where a better configuration is known to exist, and where none does.
    ///
    /// For each scenario, a whole `schedcp tune` (host scenarios apply the
    /// winner under a canary through an in-process deploy controller, then
    /// roll it back): whether it found the better configuration (or kept the
    /// current one where none exists), the improvement with its interval,
    /// trials and minutes spent, and whether a regression was ever applied.
    /// Then the numeric search's cost against a grid at equal trials. Needs
    /// root; lab scenarios need the lab kernel (lab timing is emulated).
    ///
    /// Examples:
    ///   schedcp bench tune
    ///   schedcp bench tune --scenarios contended-build,idle-build --trials 8 --json
    #[command(verbatim_doc_comment)]
    Tune(TuneBenchArgs),
}

#[derive(Debug, Args)]
pub struct TuneBenchArgs {
    /// Only these scenarios (comma-separated): contended-build, idle-build, pingpong-schedulers.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Trial budget per scenario.
    #[arg(long, default_value_t = 10)]
    trials: usize,
}

#[derive(Debug, Args)]
pub struct CanaryOverheadArgs {
    /// A lab workload spec (`schedcp lab workloads`).
    #[arg(long, default_value = "wakeup:duration_ms=2000")]
    workload: schedcp_proto::workload::WorkloadSpec,
    /// Runs per side.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(2..=canary_overhead::MAX_RUNS as i64))]
    runs: u32,
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Concurrent sessions to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,32",
          value_parser = clap::value_parser!(u32).range(1..=256))]
    clients: Vec<u32>,
    /// Timed calls per tool and client count (split over the sessions).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(8..=100_000))]
    calls: u32,
    /// observe_summary's sampling window (its latency is mostly this).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=10_000))]
    summary_window_ms: u64,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Concurrent clients (half on the socket, half on HTTP).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(2..=256))]
    clients: u32,
    /// Calls per client.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    calls: u32,
}

#[derive(Debug, Args)]
pub struct PolicySearchArgs {
    /// Library sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    sizes: Vec<u32>,
    /// Timed searches per size and backend.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(20..=100_000))]
    searches: u32,
    /// Also measure PostgreSQL + pgvector at this URL.
    #[arg(long, value_name = "URL")]
    postgres_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct ProbeOverheadArgs {
    /// Runs (each measures both sides once).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=MAX_RUNS as i64))]
    runs: u32,
    /// hackbench groups (-g); 20 processes each.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    groups: u32,
    /// hackbench loops (-l): messages per sender and receiver.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    loops: u32,
    /// Also measure the library's other probes (cputime, schedevents) on the same workload.
    #[arg(long)]
    all: bool,
}

pub fn run(cfg: Config, cmd: BenchCommand, out: Output) -> Result<i32, Error> {
    match cmd {
        BenchCommand::ProbeOverhead(a) => probe_overhead_cmd(a, out),
        BenchCommand::PolicySearch(a) => policy_search_cmd(&cfg, a, out),
        BenchCommand::Api(a) => api_cmd(&cfg, a, out),
        BenchCommand::Load(a) => load_cmd(&cfg, a, out),
        BenchCommand::CanaryOverhead(a) => canary_overhead_cmd(&cfg, a, out),
        BenchCommand::Tune(a) => tune_cmd(&cfg, a, out),
    }
}

fn tune_cmd(cfg: &Config, a: TuneBenchArgs, out: Output) -> Result<i32, Error> {
    use schedcp::selfbench::tune_bench;
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Input(
            "bench tune trials write kernel settings: run it as root".into(),
        ));
    }
    schedcp::host::interrupt::install();
    let pb = out.spinner();
    let on = |m: &str| {
        tracing::info!("{m}");
        if m.starts_with("scenario") {
            pb.suspend(|| eprintln!("{m}"));
        }
        pb.set_message(m.to_string());
    };
    let report = tune_bench::run(cfg, &a.scenarios, a.trials, &on);
    pb.finish_and_clear();
    print_report(out, &report?)
}

fn canary_overhead_cmd(cfg: &Config, a: CanaryOverheadArgs, out: Output) -> Result<i32, Error> {
    let agent = schedcp::host::locate_agent(
        cfg.deploy.workload_agent.as_deref(),
        "deploy.workload_agent",
    )?;
    let bench = canary_overhead::Config {
        agent,
        workload: a.workload,
        runs: a.runs,
    };
    let report = with_progress(out, |p| canary_overhead::run(&bench, p))?;
    print_report(out, &report)
}

fn api_cmd(cfg: &Config, a: ApiArgs, out: Output) -> Result<i32, Error> {
    use schedcp::selfbench::api_latency;
    let bench = api_latency::Config {
        clients: a.clients.iter().map(|c| *c as usize).collect(),
        calls: a.calls as usize,
        summary_window_ms: a.summary_window_ms,
    };
    let report = with_progress(out, |p| api_latency::run(cfg, &bench, p))?;
    print_report(out, &report)
}

fn load_cmd(cfg: &Config, a: LoadArgs, out: Output) -> Result<i32, Error> {
    use schedcp::selfbench::api_load;
    let bench = api_load::Config {
        clients: a.clients as usize,
        calls: a.calls as usize,
    };
    let report = with_progress(out, |p| api_load::run(cfg, &bench, p))?;
    let clean = report.doors.iter().all(|d| d.errors == 0) && report.audit_intact;
    print_report(out, &report)?;
    Ok(if clean { exit::OK } else { exit::FAILURE })
}

fn probe_overhead_cmd(a: ProbeOverheadArgs, out: Output) -> Result<i32, Error> {
    let cfg = probe_overhead::Config {
        runs: a.runs,
        hackbench_groups: a.groups,
        hackbench_loops: a.loops,
        all_probes: a.all,
    };
    let report = with_progress(out, |p| probe_overhead::run(&cfg, p))?;
    print_report(out, &report)
}

fn policy_search_cmd(cfg: &Config, a: PolicySearchArgs, out: Output) -> Result<i32, Error> {
    use schedcp::policies::repo::{sqlite::SqliteRepo, Repository};
    use schedcp::selfbench::policy_search;
    use schedcp::store::Store;

    let pg = a
        .postgres_url
        .as_deref()
        .map(schedcp::selfbench::pg_scratch::Scratch::new)
        .transpose()?;
    let scratch = tempfile::tempdir().map_err(|e| Error::Internal(e.into()))?;
    let dir = scratch.path().to_path_buf();
    let mut sqlite = move |tag: &str| -> Result<Box<dyn Repository>, Error> {
        let store = Store::open_at(&dir.join(format!("{tag}.db")))?;
        Ok(Box::new(SqliteRepo::new(store)))
    };
    let mut backends: Vec<(&str, Box<policy_search::RepoFactory<'_>>)> =
        vec![("sqlite", Box::new(&mut sqlite))];
    let mut pg_factory;
    if let Some(pg) = &pg {
        pg_factory = |tag: &str| pg.repo(tag);
        backends.push(("postgres", Box::new(&mut pg_factory)));
    }
    let bench_cfg = policy_search::Config {
        cache_dir: cfg.cache_dir(),
        sizes: a.sizes.iter().map(|s| *s as usize).collect(),
        searches: a.searches as usize,
        model_dir: cfg
            .policies
            .model_dir
            .clone()
            .unwrap_or_else(|| schedcp::policies::embed::default_dir(&cfg.cache_dir())),
    };
    let report = with_progress(out, |p| policy_search::run(&bench_cfg, &mut backends, p));
    drop(backends);
    print_report(out, &report?)
}

/// Run a benchmark behind a spinner that shows (and logs) its progress.
fn with_progress<T>(out: Output, work: impl FnOnce(&mut dyn FnMut(&str)) -> T) -> T {
    let pb = out.spinner();
    let result = work(&mut |msg| {
        tracing::debug!("{msg}");
        pb.set_message(msg.to_string());
    });
    pb.finish_and_clear();
    result
}

/// A benchmark's report, through the one output path.
fn print_report(out: Output, report: &impl Report) -> Result<i32, Error> {
    out.emit(report)?;
    Ok(exit::OK)
}
