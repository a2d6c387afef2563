//! `schedcp observe ...`: the observe service's CLI.

mod benchmark;
mod probe;
mod profile;
mod summary;

use clap::Subcommand;
use schedcp::config::Config;
use schedcp::error::Error;

use super::output::Output;

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

pub fn run(cfg: Config, cmd: ObserveCommand, out: Output) -> Result<i32, Error> {
    match cmd {
        ObserveCommand::Summary(a) => summary::run_summary(cfg, a, out),
        ObserveCommand::Detail(a) => summary::run_detail(cfg, a, out),
        ObserveCommand::Probe(a) => probe::run(cfg, a, out),
        ObserveCommand::Profile(a) => profile::run(cfg, a, out),
        ObserveCommand::Workload(c) => benchmark::run_workload(cfg, c, out),
        ObserveCommand::Benchmark(a) => benchmark::run_benchmark(cfg, a, out),
    }
}
