//! `strace -c`: system-call counts, errors and time, never arguments.
//!
//! Command line: `strace -c -f -qq -o <dir>/strace.txt` then `-p PID` or
//! `-- COMMAND…`. `-f` follows threads and children; `-qq` drops attach and
//! exit chatter; `-o` keeps the table apart from the command's own stderr.
//! strace has no timer: it gets SIGINT at the end of the window, on which it
//! detaches from (or, for a command it started, kills) its tracees and
//! writes the table.

use std::ffi::OsString;
use std::fmt::Write as _;

use serde::Serialize;

use super::sandbox::{Ending, Spec, Stop};
use super::target::Checked;
use super::{
    binaries, command_line, no_report, round3, target_args, Job, Summary, ToolRun,
    COMMAND_SCRATCH_BYTES,
};
use crate::error::Error;

const OUT: &str = "strace.txt";

#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct StraceSummary {
    /// Distinct system calls made.
    pub syscalls_seen: usize,
    pub total_calls: u64,
    pub total_errors: u64,
    /// Time spent in system calls, as strace measured it.
    pub total_seconds: f64,
    /// The system calls with the most time, then the most calls.
    pub top: Vec<SyscallStat>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct SyscallStat {
    pub name: String,
    pub calls: u64,
    pub errors: u64,
    pub seconds: f64,
    pub usecs_per_call: u64,
    pub time_pct: f64,
}

pub(super) fn profile(job: &Job<'_>) -> Result<ToolRun, Error> {
    let strace = binaries::strace()?;
    let out = job.sandbox.file(OUT);
    let mut args: Vec<OsString> = vec![
        "-c".into(),
        "-f".into(),
        "-qq".into(),
        "-o".into(),
        out.into(),
    ];
    args.extend(target_args(job.target));
    let spec = Spec {
        program: &strace.path,
        args,
        window: job.window,
        stop: Stop::Interrupt,
        max_output: job.max_output,
        // strace's table (read back up to the output cap), and the
        // command's scratch room.
        max_dir_bytes: job.max_output as u64 + COMMAND_SCRATCH_BYTES,
    };
    let commands = vec![command_line(spec.program, &spec.args)];
    let run = job.sandbox.run(&spec)?;
    let table = job.sandbox.read_capped(OUT, job.max_output)?;
    let Some(rows) = table.as_ref().and_then(|t| parse(&t.text)) else {
        return Err(
            attach_error(job.target, &run.stderr.text).unwrap_or_else(|| {
                let e = no_report("strace", &run);
                if run.ending == Ending::ProfilerKilled && matches!(job.target, Checked::Pid { .. })
                {
                    // strace -f can deadlock detaching from a process that is
                    // forking at that moment (a vfork child stays attached);
                    // strace fixed this upstream in late 2023, after 6.1.
                    Error::Internal(anyhow::anyhow!(
                        "{e}. strace can hang detaching from a process that forks at that \
                         moment; a newer strace fixes this, or profile it with perf-stat"
                    ))
                } else {
                    e
                }
            }),
        );
    };
    let mut notes = vec![
        "strace stops the target at every system call, so it runs slower while traced and \
         `seconds` are inflated: compare counts and shares, not absolute times"
            .to_string(),
    ];
    if rows.is_empty() {
        notes.push(
            "no system calls in the window (the target was idle or blocked in one long call)"
                .into(),
        );
    }
    let summary = summarize(rows, job.top);
    Ok(ToolRun {
        summary: Summary::StraceSummary(summary),
        binary: strace,
        commands,
        main: run,
        notes,
    })
}

/// strace's attach failures as errors that say what is wrong.
fn attach_error(target: &Checked, stderr: &str) -> Option<Error> {
    let Checked::Pid { pid, .. } = target else {
        return None;
    };
    if !stderr.contains("attach:") {
        return None;
    }
    if stderr.contains("No such process") {
        return Some(Error::Input(format!(
            "pid {pid} exited before strace could attach"
        )));
    }
    if stderr.contains("Operation not permitted") {
        return Some(Error::Setup(format!(
            "strace may not attach to pid {pid}: ptrace is not permitted here (a Yama \
             ptrace_scope of 3, a seccomp filter, or a container without CAP_SYS_PTRACE)"
        )));
    }
    None
}

/// Parse strace's `-c` table into its rows; `None` when there is no table
/// (strace failed before writing one).
///
/// ```text
/// % time     seconds  usecs/call     calls    errors syscall
/// ------ ----------- ----------- --------- --------- ----------------
///  44.44    0.000144          10        14         7 wait4
///   0.00    0.000000           0        34           read
/// ------ ----------- ----------- --------- --------- ----------------
/// 100.00    0.000324           0      1067       157 total
/// ```
///
/// The errors column is blank when a call never failed. A target running
/// several personalities (32- and 64-bit calls) gets one table each; their
/// rows are merged by name.
pub fn parse(text: &str) -> Option<Vec<SyscallStat>> {
    if !text.lines().any(|l| l.trim_start().starts_with("% time")) {
        return None;
    }
    let mut rows: Vec<SyscallStat> = Vec::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let (pct, secs, usecs, calls, errors, name) = match w.as_slice() {
            [p, s, u, c, e, n] => (p, s, u, c, Some(e), n),
            [p, s, u, c, n] => (p, s, u, c, None, n),
            _ => continue,
        };
        if *name == "total" {
            continue;
        }
        let parsed = (|| {
            Some(SyscallStat {
                name: name.to_string(),
                time_pct: pct.parse().ok()?,
                seconds: secs.parse().ok()?,
                usecs_per_call: usecs.parse().ok()?,
                calls: calls.parse().ok()?,
                errors: match errors {
                    Some(e) => e.parse().ok()?,
                    None => 0,
                },
            })
        })();
        let Some(row) = parsed else { continue };
        match rows.iter_mut().find(|r| r.name == row.name) {
            Some(r) => {
                r.calls += row.calls;
                r.errors += row.errors;
                r.seconds += row.seconds;
                r.time_pct += row.time_pct;
            }
            None => rows.push(row),
        }
    }
    Some(rows)
}

pub fn summarize(mut rows: Vec<SyscallStat>, top: usize) -> StraceSummary {
    let total_seconds: f64 = rows.iter().map(|r| r.seconds).sum();
    let summary = StraceSummary {
        syscalls_seen: rows.len(),
        total_calls: rows.iter().map(|r| r.calls).sum(),
        total_errors: rows.iter().map(|r| r.errors).sum(),
        total_seconds: (total_seconds * 1e6).round() / 1e6,
        top: Vec::new(),
    };
    rows.sort_by(|a, b| {
        b.seconds
            .total_cmp(&a.seconds)
            .then(b.calls.cmp(&a.calls))
            .then(a.name.cmp(&b.name))
    });
    rows.truncate(top);
    for r in &mut rows {
        r.time_pct = round3(r.time_pct);
    }
    StraceSummary {
        top: rows,
        ..summary
    }
}

impl StraceSummary {
    pub fn render(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "  {} system calls ({} distinct), {} failed, {:.6} s in system calls",
            self.total_calls, self.syscalls_seen, self.total_errors, self.total_seconds
        );
        if self.top.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "\n  {:<20} {:>10} {:>8} {:>11} {:>10} {:>7}",
            "syscall", "calls", "errors", "seconds", "usecs/call", "% time"
        );
        for r in &self.top {
            let _ = writeln!(
                s,
                "  {:<20} {:>10} {:>8} {:>11.6} {:>10} {:>7.2}",
                r.name, r.calls, r.errors, r.seconds, r.usecs_per_call, r.time_pct
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `strace -c -f -qq -o FILE -- sh -c '<ls, cat of a missing file, sleep>'`
    /// on this project's VM (strace 6.1).
    const CMD: &str = include_str!("testdata/strace_cmd.txt");
    /// `strace -c -f -qq -o FILE -p <a shell loop running cat>`, stopped by
    /// SIGINT after a second.
    const PID: &str = include_str!("testdata/strace_pid.txt");

    #[test]
    fn parses_a_command_table() {
        let rows = parse(CMD).unwrap();
        assert_eq!(rows.len(), 37);
        let wait4 = rows.iter().find(|r| r.name == "wait4").unwrap();
        assert_eq!(
            *wait4,
            SyscallStat {
                name: "wait4".into(),
                calls: 14,
                errors: 7,
                seconds: 0.000144,
                usecs_per_call: 10,
                time_pct: 44.44,
            }
        );
        let read = rows.iter().find(|r| r.name == "read").unwrap();
        assert_eq!((read.calls, read.errors), (34, 0));
        let s = summarize(rows, 5);
        assert_eq!(s.syscalls_seen, 37);
        // strace's own total line: 1067 calls, 157 errors, 0.000324 s.
        assert_eq!((s.total_calls, s.total_errors), (1067, 157));
        assert_eq!(s.total_seconds, 0.000324);
        let names: Vec<&str> = s.top.iter().map(|r| r.name.as_str()).collect();
        // By time, then (all zero) by calls.
        assert_eq!(
            names,
            ["wait4", "vfork", "rt_sigreturn", "rt_sigprocmask", "openat"]
        );
    }

    #[test]
    fn parses_a_pid_table() {
        let s = summarize(parse(PID).unwrap(), 3);
        assert_eq!((s.total_calls, s.total_errors), (34541, 3895));
        assert_eq!(s.top[0].name, "wait4");
        assert_eq!(s.top[1].name, "openat");
        assert_eq!(s.top[1].errors, 3375);
    }

    #[test]
    fn personalities_merge() {
        let text = "% time     seconds  usecs/call     calls    errors syscall\n\
                    ------ ----------- ----------- --------- --------- ----------------\n\
                    100.00    0.000010          10         1           read\n\
                    System call usage summary for 32 bit mode:\n\
                    % time     seconds  usecs/call     calls    errors syscall\n\
                    100.00    0.000020          10         2         1 read\n";
        let rows = parse(text).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].calls, rows[0].errors), (3, 1));
    }

    #[test]
    fn no_table_is_none() {
        assert!(parse("").is_none());
        assert!(
            parse("strace: attach: ptrace(PTRACE_SEIZE, 2): Operation not permitted\n").is_none()
        );
        let empty = "% time     seconds  usecs/call     calls    errors syscall\n\
                     ------ ----------- ----------- --------- --------- ----------------\n\
                     100.00    0.000000           0         0           total\n";
        assert_eq!(parse(empty), Some(vec![]));
    }
}
