//! `schedcp bench ...`: benchmarks of schedcp itself.

use clap::{Args, Subcommand};
use schedcp::bench::probe_overhead::{self, MAX_RUNS};
use schedcp::config::Config;
use schedcp::error::{exit, Error};

use super::output;

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
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(_cfg: Config, cmd: BenchCommand, quiet: bool) -> Result<i32, Error> {
    match cmd {
        BenchCommand::ProbeOverhead(a) => probe_overhead_cmd(a, quiet),
    }
}

fn probe_overhead_cmd(a: ProbeOverheadArgs, quiet: bool) -> Result<i32, Error> {
    let cfg = probe_overhead::Config {
        runs: a.runs,
        hackbench_groups: a.groups,
        hackbench_loops: a.loops,
        all_probes: a.all,
    };
    let pb = output::spinner(quiet || a.json);
    let report = probe_overhead::run(&cfg, &mut |msg| {
        tracing::debug!("{msg}");
        pb.set_message(msg.to_string());
    });
    pb.finish_and_clear();
    let report = report?;
    if a.json {
        output::json(&report)?;
    } else {
        print!("{}", report.render());
    }
    Ok(exit::OK)
}
