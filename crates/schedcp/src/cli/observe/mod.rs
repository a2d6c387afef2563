//! `schedcp observe ...`: the observe service's CLI.

mod benchmark;
mod probe;
mod profile;
mod summary;

use clap::Subcommand;
use schedcp::config::Config;
use schedcp::error::Error;

#[derive(Debug, Subcommand)]
pub enum ObserveCommand {
    /// One compact report of the machine, sized for an LLM's context (default ~400 tokens as JSON).
    Summary(summary::SummaryArgs),
    /// More than the summary on one topic: per-CPU, per-task schedstats, or a histogram.
    Detail(summary::DetailArgs),
    /// Attach an eBPF probe from the fixed library for a bounded time; `--list` describes them.
    Probe(probe::ProbeArgs),
    /// Run an allowlisted profiler (perf stat, perf sched, strace -c) through a sandbox.
    Profile(profile::ProfileArgs),
    /// Workload profiles: what to run and which metric to optimise.
    #[command(subcommand)]
    Workload(benchmark::WorkloadCommand),
    /// Run a workload profile N times; median, spread, and significance against a baseline.
    Benchmark(benchmark::BenchmarkArgs),
}

pub fn run(cfg: Config, cmd: ObserveCommand, quiet: bool) -> Result<i32, Error> {
    match cmd {
        ObserveCommand::Summary(a) => summary::run_summary(cfg, a),
        ObserveCommand::Detail(a) => summary::run_detail(cfg, a),
        ObserveCommand::Probe(a) => probe::run(cfg, a, quiet),
        ObserveCommand::Profile(a) => profile::run(cfg, a, quiet),
        ObserveCommand::Workload(c) => benchmark::run_workload(cfg, c),
        ObserveCommand::Benchmark(a) => benchmark::run_benchmark(cfg, a, quiet),
    }
}
