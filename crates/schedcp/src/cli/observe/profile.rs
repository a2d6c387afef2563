//! `schedcp observe profile`: one allowlisted profiler, through the sandbox.

use std::time::Duration;

use clap::{ArgGroup, Args};
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::observe::profilers::{self, ProfileRequest, Target, Tool, MAX_TOP};

use super::super::output::Output;

/// Run perf stat, perf sched or strace -c against a process or a command for
/// a bounded time, and print a parsed summary.
///
/// Only these three tools, with fixed flags, from fixed paths. The window
/// is bounded by observe.profile_max_duration_s; a command still running
/// when it closes is stopped. Capabilities the machine lacks (hardware
/// counters, tracefs, ptrace) are reported, not hidden.
///
/// Examples:
///   schedcp observe profile perf-stat --pid 1234 --duration 5
///   schedcp observe profile perf-sched --duration 3 --cmd -- stress-ng --cpu 4 -t 10
///   schedcp observe profile strace-summary --pid 1234 --duration 2 --top 5 --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment, group(ArgGroup::new("target").required(true).args(["pid", "cmd"])))]
pub struct ProfileArgs {
    /// The profiler.
    #[arg(value_enum)]
    tool: Tool,
    /// Profile this running process (a process id, not a thread id).
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// Run the command given after `--` under the profiler: `--cmd -- prog args…`.
    #[arg(long, requires = "command")]
    cmd: bool,
    /// The command for --cmd.
    #[arg(last = true, value_name = "COMMAND", requires = "cmd")]
    command: Vec<String>,
    /// Length of the profile window in seconds.
    #[arg(long, value_name = "S")]
    duration: u64,
    /// Rows per top list.
    #[arg(long, default_value_t = profilers::DEFAULT_TOP as u16,
          value_parser = clap::value_parser!(u16).range(1..=MAX_TOP as i64))]
    top: u16,
}

pub fn run(cfg: Config, a: ProfileArgs, out: Output) -> Result<i32, Error> {
    let target = match a.pid {
        Some(pid) => Target::Pid(pid),
        None => Target::Command(a.command),
    };
    let req = ProfileRequest {
        tool: a.tool,
        target,
        duration: Duration::from_secs(a.duration),
        top: usize::from(a.top),
    };
    let pb = out.spinner();
    pb.set_message(format!("{} for {} s", a.tool.name(), a.duration));
    let report = profilers::profile(&cfg.observe, &req);
    pb.finish_and_clear();
    let report = report?;
    out.emit(&report)?;
    Ok(exit::OK)
}
