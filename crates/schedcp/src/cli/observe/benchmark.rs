use clap::{Args, Subcommand};
use schedcp::config::Config;
use schedcp::error::Error;

#[derive(Debug, Subcommand)]
pub enum WorkloadCommand {
    /// (not built yet)
    List,
}
#[derive(Debug, Args)]
pub struct BenchmarkArgs {}

pub fn run_workload(_cfg: Config, _c: WorkloadCommand) -> Result<i32, Error> {
    Err(Error::Input("not built yet".into()))
}
pub fn run_benchmark(_cfg: Config, _a: BenchmarkArgs, _quiet: bool) -> Result<i32, Error> {
    Err(Error::Input("not built yet".into()))
}
