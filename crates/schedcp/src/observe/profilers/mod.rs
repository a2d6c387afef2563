//! Sandboxed profiling: run one of three allowlisted profilers against a
//! process or a command for a bounded time and return a parsed summary.
//!
//! - [`Tool::PerfStat`]: `perf stat` with a fixed software + hardware event
//!   list; counts, derived rates and IPC, and which events this machine
//!   cannot count.
//! - [`Tool::PerfSched`]: `perf sched record` (system-wide) then
//!   `perf sched latency`; the tasks with the worst scheduling delay, and the
//!   target's own tasks together.
//! - [`Tool::StraceSummary`]: `strace -c -f`; the system calls that took the
//!   most time, with call and error counts.
//!
//! The caller picks only the tool, the target and the duration (and how many
//! rows to keep). Binaries come from fixed paths ([`binaries`]), each tool's
//! command line is a fixed template plus the validated pid or command
//! ([`target`]), and every child runs through the [`sandbox`] (private
//! directory, cleared environment, time/output/disk bounds, process-group
//! kill). What the machine cannot do is reported in `notes`, not as an
//! obscure failure.

mod binaries;
pub mod perf_sched;
pub mod perf_stat;
mod sandbox;
pub mod strace;
mod target;

use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use anyhow::anyhow;
use serde::{Deserialize, Serialize};

pub use binaries::Binary;
pub use sandbox::Ending;
pub use target::Target;

use crate::config::ObserveConfig;
use crate::error::Error;
use sandbox::{Run, Sandbox, GRACE_FOR_COMMAND, GRACE_FOR_PROFILER};
use target::Checked;

/// Room a `--cmd` target gets in its working directory (the sandbox's
/// private directory) beyond the profiler's own files; past it the run is
/// killed.
pub const COMMAND_SCRATCH_BYTES: u64 = 64 << 20;

/// Rows kept in a summary's top lists unless asked otherwise.
pub const DEFAULT_TOP: usize = 10;
/// Most rows a top list may have (bounds the report's size).
pub const MAX_TOP: usize = 100;

/// The allowlisted profilers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Tool {
    /// `perf stat`: task clock, context switches, migrations, page faults,
    /// and cycles/instructions/branches where the machine has counters.
    PerfStat,
    /// `perf sched record` + `perf sched latency`: scheduling delay per task.
    PerfSched,
    /// `strace -c -f`: system call counts, errors and time.
    StraceSummary,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::PerfStat => "perf-stat",
            Tool::PerfSched => "perf-sched",
            Tool::StraceSummary => "strace-summary",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProfileRequest {
    pub tool: Tool,
    pub target: Target,
    /// The profile window: 1 s to `observe.profile_max_duration_s`. A
    /// command still running when it closes is stopped.
    pub duration: Duration,
    /// Rows per top list, 1 to [`MAX_TOP`].
    pub top: usize,
}

impl ProfileRequest {
    pub fn new(tool: Tool, target: Target, duration: Duration) -> ProfileRequest {
        ProfileRequest {
            tool,
            target,
            duration,
            top: DEFAULT_TOP,
        }
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ProfileReport {
    pub tool: Tool,
    pub target: TargetInfo,
    pub window: Window,
    pub profiler: Profiler,
    pub summary: Summary,
    /// Capability gaps, truncation, and how the run ended when that matters.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetInfo {
    Pid {
        pid: u32,
        comm: String,
    },
    /// `argv[0]` is the resolved path of the program that ran.
    Command {
        argv: Vec<String>,
    },
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Window {
    pub requested_s: f64,
    /// From the profiler's start to its exit.
    pub elapsed_s: f64,
    pub ended: Ending,
}

/// Which binary ran and exactly how.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Profiler {
    #[serde(flatten)]
    pub binary: Binary,
    /// Every command line run, in order (a recording and its analysis).
    pub commands: Vec<String>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Summary {
    PerfStat(perf_stat::PerfStatSummary),
    PerfSched(perf_sched::PerfSchedSummary),
    StraceSummary(strace::StraceSummary),
}

/// Run the profile `req` asks for, within the limits of `cfg`.
pub fn profile(cfg: &ObserveConfig, req: &ProfileRequest) -> Result<ProfileReport, Error> {
    let window = check_window(req.duration, cfg.profile_max_duration_s)?;
    if !(1..=MAX_TOP).contains(&req.top) {
        return Err(Error::Input(format!(
            "--top must be between 1 and {MAX_TOP}, got {}",
            req.top
        )));
    }
    let target = target::check(&req.target, req.tool)?;
    let sandbox = Sandbox::new()?;
    let job = Job {
        target: &target,
        window,
        top: req.top,
        max_output: cfg.profile_max_output_bytes,
        sandbox: &sandbox,
    };
    let done = match req.tool {
        Tool::PerfStat => perf_stat::profile(&job)?,
        Tool::PerfSched => perf_sched::profile(&job)?,
        Tool::StraceSummary => strace::profile(&job)?,
    };
    let mut notes = ending_notes(&target, window, &done.main);
    notes.extend(done.notes);
    Ok(ProfileReport {
        tool: req.tool,
        target: match target {
            Checked::Pid { pid, comm } => TargetInfo::Pid { pid, comm },
            Checked::Command { argv } => TargetInfo::Command { argv },
        },
        window: Window {
            requested_s: window.as_secs_f64(),
            elapsed_s: round3(done.main.elapsed.as_secs_f64()),
            ended: done.main.ending,
        },
        profiler: Profiler {
            binary: done.binary,
            commands: done.commands,
        },
        summary: done.summary,
        notes,
    })
}

fn check_window(d: Duration, max_s: u64) -> Result<Duration, Error> {
    let max = Duration::from_secs(max_s);
    if d < Duration::from_secs(1) || d > max {
        return Err(Error::Input(format!(
            "--duration must be between 1 and {max_s} seconds \
             (observe.profile_max_duration_s), got {}",
            d.as_secs_f64()
        )));
    }
    Ok(d)
}

/// What a tool module gets: a checked target, the window, the limits, and a
/// private sandbox directory.
pub(crate) struct Job<'a> {
    pub target: &'a Checked,
    pub window: Duration,
    pub top: usize,
    pub max_output: usize,
    pub sandbox: &'a Sandbox,
}

/// What a tool module returns.
pub(crate) struct ToolRun {
    pub summary: Summary,
    pub binary: Binary,
    pub commands: Vec<String>,
    /// The windowed run (not the post-processing).
    pub main: Run,
    pub notes: Vec<String>,
}

/// How the run ended, said once for all tools.
fn ending_notes(target: &Checked, window: Duration, run: &Run) -> Vec<String> {
    let elapsed = run.elapsed.as_secs_f64();
    let mut notes = Vec::new();
    match (run.ending, target) {
        (Ending::EndedEarly, Checked::Command { .. }) => {
            notes.push(format!(
                "the command finished after {elapsed:.2} s, before the {} s window closed",
                window.as_secs_f64()
            ));
            // perf and strace exit with their command's status.
            if let Some(code) = run.status.code().filter(|&c| c != 0) {
                notes.push(format!("the command exited with status {code}"));
            }
        }
        (Ending::EndedEarly, Checked::Pid { pid, .. }) => {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                notes.push(format!(
                    "the profiler stopped after {elapsed:.2} s, before the window closed"
                ));
            } else {
                notes.push(format!(
                    "pid {pid} exited after about {elapsed:.2} s, before the window closed"
                ));
            }
        }
        (Ending::WindowClosed, Checked::Command { .. }) => notes.push(
            "the command was still running when the window closed; the profiler stopped it".into(),
        ),
        (Ending::WindowClosed, Checked::Pid { .. }) => {}
        (Ending::CommandKilled, _) => notes.push(format!(
            "the command ignored the profiler's stop signal and was killed (SIGKILL) {} s \
             after the window closed",
            GRACE_FOR_COMMAND.as_secs()
        )),
        (Ending::ProfilerKilled, _) => notes.push(format!(
            "the profiler did not stop within {} s of the window closing and was killed; \
             the summary may be incomplete",
            (GRACE_FOR_COMMAND + GRACE_FOR_PROFILER).as_secs()
        )),
        (Ending::DiskCapExceeded, _) => notes.push(
            "the profiler's output outgrew its disk cap and it was killed; the summary may be \
             incomplete"
                .into(),
        ),
    }
    notes
}

/// The error for a profiler that left no report to parse.
pub(crate) fn no_report(what: &str, run: &Run) -> Error {
    let why = match run.ending {
        Ending::ProfilerKilled => format!(
            "did not stop within {} s after the window closed and was killed",
            (GRACE_FOR_COMMAND + GRACE_FOR_PROFILER).as_secs()
        ),
        Ending::DiskCapExceeded => "outgrew its disk cap and was killed".into(),
        _ => match (run.status.code(), run.status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            (None, None) => "ended".into(),
        },
    };
    let said = run.stderr.tail(4);
    if said.is_empty() {
        Error::Internal(anyhow!("{what} wrote no report: it {why}"))
    } else {
        Error::Internal(anyhow!("{what} wrote no report: it {why}; it said: {said}"))
    }
}

/// A command line as one readable string (arguments with spaces quoted).
pub(crate) fn command_line(program: &std::path::Path, args: &[std::ffi::OsString]) -> String {
    std::iter::once(program.as_os_str())
        .chain(args.iter().map(|a| a.as_os_str()))
        .map(|a| quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `a` as a shell word: as is when safe, else in single quotes.
fn quote(a: &str) -> String {
    if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"\\$`;&|<>()*?[]#~".contains(c))
    {
        format!("'{}'", a.replace('\'', r"'\''"))
    } else {
        a.to_string()
    }
}

/// The target's part of a profiler command line: `-p PID` or `-- argv…`.
pub(crate) fn target_args(target: &Checked) -> Vec<std::ffi::OsString> {
    match target {
        Checked::Pid { pid, .. } => vec!["-p".into(), pid.to_string().into()],
        Checked::Command { argv } => std::iter::once("--".into())
            .chain(argv.iter().map(Into::into))
            .collect(),
    }
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl ProfileReport {
    /// Human-readable text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let target = match &self.target {
            TargetInfo::Pid { pid, comm } => format!("pid {pid} ({comm})"),
            TargetInfo::Command { argv } => {
                let words: Vec<String> = argv.iter().map(|a| quote(a)).collect();
                format!("`{}`", words.join(" "))
            }
        };
        let _ = writeln!(
            s,
            "{} of {target}: {} s window, ran {:.2} s ({})",
            self.tool.name(),
            self.window.requested_s,
            self.window.elapsed_s,
            ending_label(self.window.ended)
        );
        let _ = writeln!(
            s,
            "profiler: {} ({})",
            self.profiler.binary.path.display(),
            self.profiler.binary.version
        );
        s.push('\n');
        match &self.summary {
            Summary::PerfStat(x) => x.render(&mut s),
            Summary::PerfSched(x) => x.render(&mut s),
            Summary::StraceSummary(x) => x.render(&mut s),
        }
        if !self.notes.is_empty() {
            s.push_str("\nnotes:\n");
            for n in &self.notes {
                let _ = writeln!(s, "  - {n}");
            }
        }
        s
    }
}

fn ending_label(e: Ending) -> &'static str {
    match e {
        Ending::EndedEarly => "ended early",
        Ending::WindowClosed => "stopped at the end of the window",
        Ending::CommandKilled => "command killed after ignoring the stop",
        Ending::ProfilerKilled => "profiler killed",
        Ending::DiskCapExceeded => "disk cap exceeded",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounds() {
        assert!(check_window(Duration::ZERO, 120).is_err());
        assert!(check_window(Duration::from_millis(999), 120).is_err());
        assert!(check_window(Duration::from_secs(121), 120).is_err());
        check_window(Duration::from_secs(1), 120).unwrap();
        check_window(Duration::from_secs(120), 120).unwrap();
    }

    #[test]
    fn tool_names_match_the_cli() {
        use clap::ValueEnum;
        for t in Tool::value_variants() {
            let pv = t.to_possible_value().unwrap();
            assert_eq!(pv.get_name(), t.name());
            assert_eq!(serde_json::to_value(t).unwrap(), t.name());
        }
    }

    #[test]
    fn command_lines_quote_what_needs_it() {
        let args: Vec<std::ffi::OsString> = vec!["-c".into(), "echo 'hi'".into(), "".into()];
        assert_eq!(
            command_line(std::path::Path::new("/bin/sh"), &args),
            r"/bin/sh -c 'echo '\''hi'\''' ''"
        );
    }
}
