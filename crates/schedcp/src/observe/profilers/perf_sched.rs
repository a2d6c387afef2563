//! `perf sched`: a system-wide recording of scheduler events for the
//! window, analysed into scheduling delay per task.
//!
//! 1. `perf sched record -o <dir>/sched.data --max-size 64M -N -B [-- COMMAND…]`
//!    until SIGINT at the end of the window. System-wide even for a pid: a
//!    task's delay is caused by whatever else wants its CPU. `-N -B`: no
//!    build-id collection or cache, which the analysis does not need.
//! 2. `perf sched latency -i … --pids -s max`: per task (thread), runtime,
//!    switches, average and maximum delay between becoming runnable and
//!    running.
//! 3. `perf sched timehist -i … -s`: per task its process and parent, which
//!    tells the target's tasks (the pid's threads, the command's processes,
//!    and their descendants) from the rest.
//!
//! The recording stays in the sandbox directory and goes with it.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::sandbox::{Captured, Ending, Run, Spec, Stop};
use super::target::Checked;
use super::{
    binaries, command_line, no_report, round3, Job, Summary, ToolRun, COMMAND_SCRATCH_BYTES,
};
use crate::error::Error;

const RECORD: &str = "sched.data";
/// perf stops recording past this size. It checks after flushing its per-CPU
/// ring buffers (`-m 1024` pages = 4 MiB each), so the file can exceed it by
/// that much per CPU; the sandbox's disk cap allows for it.
const MAX_RECORD_MIB: u64 = 64;
const RING_MIB_PER_CPU: u64 = 4;
/// Bound on each analysis pass over a recording of at most that size.
const ANALYSIS_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct PerfSchedSummary {
    /// Tasks (threads) that were scheduled in the window, system-wide.
    pub tasks_seen: usize,
    pub total_switches: u64,
    pub total_runtime_ms: f64,
    /// The target's tasks together; `None` when none ran in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetLatency>,
    /// Tasks with the longest single scheduling delay (runnable → running).
    pub top_by_max_delay: Vec<TaskLatency>,
    /// Tasks with the longest average scheduling delay.
    pub top_by_avg_delay: Vec<TaskLatency>,
    /// Size of the recording analysed.
    pub record_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TaskLatency {
    pub comm: String,
    pub tid: u32,
    pub runtime_ms: f64,
    pub switches: u64,
    pub avg_delay_ms: f64,
    pub max_delay_ms: f64,
    /// One of the target's tasks.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub target: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TargetLatency {
    pub tasks: usize,
    pub switches: u64,
    pub runtime_ms: f64,
    /// Per-task averages weighted by their switch counts.
    pub avg_delay_ms: f64,
    pub max_delay_ms: f64,
    /// `comm:tid` of the task that had `max_delay_ms`.
    pub worst_task: String,
}

pub(super) fn profile(job: &Job<'_>) -> Result<ToolRun, Error> {
    check_tracefs()?;
    let perf = binaries::perf()?;
    let record = job.sandbox.file(RECORD);
    let mut args: Vec<OsString> = vec![
        "sched".into(),
        "record".into(),
        "-o".into(),
        record.clone().into(),
        "--max-size".into(),
        format!("{MAX_RECORD_MIB}M").into(),
        "-N".into(),
        "-B".into(),
    ];
    if let Checked::Command { argv } = job.target {
        args.push("--".into());
        args.extend(argv.iter().map(OsString::from));
    }
    let cpus = cpu_count();
    let spec = Spec {
        program: &perf.path,
        args,
        window: job.window,
        stop: Stop::Interrupt,
        max_output: job.max_output,
        max_dir_bytes: ((MAX_RECORD_MIB + RING_MIB_PER_CPU * cpus) << 20) + COMMAND_SCRATCH_BYTES,
    };
    let mut commands = vec![command_line(spec.program, &spec.args)];
    let run = job.sandbox.run(&spec)?;
    let record_bytes = std::fs::metadata(&record).map(|m| m.len()).unwrap_or(0);
    if record_bytes == 0 {
        return Err(no_report("perf sched record", &run));
    }
    let mut notes = Vec::new();
    if run.stderr.text.contains("size limit reached") {
        notes.push(format!(
            "the recording hit its {MAX_RECORD_MIB} MiB cap and stopped before the window \
             closed; the figures cover only its first part"
        ));
    }

    let analyse = |args: &[&str]| -> Result<(Run, String), Error> {
        let mut full: Vec<OsString> = vec!["sched".into()];
        full.extend(args.iter().map(OsString::from));
        full.extend(["-i".into(), record.clone().into()]);
        let spec = Spec {
            program: &perf.path,
            args: full,
            window: ANALYSIS_TIMEOUT,
            stop: Stop::Itself,
            max_output: job.max_output,
            // The recording is in the directory; analysis adds little.
            max_dir_bytes: record_bytes + (16 << 20),
        };
        let line = command_line(spec.program, &spec.args);
        Ok((job.sandbox.run(&spec)?, line))
    };

    let (lat_run, line) = analyse(&["latency", "--pids", "-s", "max"])?;
    commands.push(line);
    let table = parse_latency(&lat_run.stdout.text);
    if table.rows.is_empty() && table.total_switches.is_none() {
        return Err(no_report("perf sched latency", &lat_run));
    }
    note_truncation(&mut notes, "perf sched latency", &lat_run.stdout);

    let (th_run, line) = analyse(&["timehist", "-s"])?;
    commands.push(line);
    let parents = parse_timehist(&th_run.stdout.text);
    let roots = match job.target {
        Checked::Pid { pid, .. } => Roots::Process(*pid),
        Checked::Command { .. } => Roots::ChildrenOf(run.pid),
    };
    let target_tids = if parents.is_empty() {
        notes.push(format!(
            "could not attribute tasks to the target: perf sched timehist gave no task list{}",
            tail_suffix(&th_run.stderr)
        ));
        HashSet::new()
    } else {
        note_truncation(&mut notes, "perf sched timehist", &th_run.stdout);
        target_tids(&parents, roots)
    };

    let summary = summarize(&table, &target_tids, job.top, record_bytes);
    if summary.target.is_none() && !parents.is_empty() {
        notes.push(match job.target {
            Checked::Pid { pid, .. } => format!(
                "pid {pid} was not scheduled during the window (it slept throughout), so it \
                 had no scheduling delay"
            ),
            Checked::Command { .. } => {
                "the command's tasks did not show in the recording (it ended too soon)".into()
            }
        });
    }
    notes.extend(perf_warnings(&table.infos, &perf.version));
    if run.ending == Ending::DiskCapExceeded {
        notes.push("the recording outgrew the disk cap and was cut short".into());
    }
    Ok(ToolRun {
        summary: Summary::PerfSched(summary),
        binary: perf,
        commands,
        main: run,
        notes,
    })
}

/// perf sched reads the `sched:` tracepoints' formats from tracefs.
fn check_tracefs() -> Result<(), Error> {
    let found = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|t| Path::new(t).join("events/sched/sched_switch").exists());
    if found {
        Ok(())
    } else {
        Err(Error::Setup(
            "perf sched needs the kernel's sched tracepoints, but tracefs is not mounted: \
             mount -t tracefs nodev /sys/kernel/tracing"
                .into(),
        ))
    }
}

/// Configured CPUs: an upper bound on the online ones perf records from.
fn cpu_count() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    u64::try_from(n).unwrap_or(1).max(1)
}

fn note_truncation(notes: &mut Vec<String>, what: &str, out: &Captured) {
    if out.dropped > 0 {
        notes.push(format!(
            "{what} printed more than the output cap ({} bytes dropped); the summary covers \
             the rows before the cut",
            out.dropped
        ));
    }
}

fn tail_suffix(err: &Captured) -> String {
    let t = err.tail(2);
    if t.is_empty() {
        String::new()
    } else {
        format!(" ({t})")
    }
}

/// perf's own `INFO:` lines (lost events, tasks whose state perf lost track
/// of), with what they mean for the figures.
fn perf_warnings(infos: &[String], perf_version: &str) -> Vec<String> {
    if infos.is_empty() {
        return Vec::new();
    }
    let mut note = format!(
        "perf sched latency warned: {}; per-task delays are approximate",
        infos.join("; ")
    );
    let kernel = binaries::kernel_release();
    if let (Some(p), Some(k)) = (major_minor(perf_version), major_minor(&kernel)) {
        if p < k {
            let _ = write!(
                note,
                " (perf {}.{} is older than the running kernel {}.{}, which may add to \
                 this)",
                p.0, p.1, k.0, k.1
            );
        }
    }
    vec![note]
}

/// The first `major.minor` in `s` ("perf version 6.1.187" → (6, 1)).
fn major_minor(s: &str) -> Option<(u32, u32)> {
    s.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find_map(|w| {
            let mut it = w.split('.');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
}

/// One row of `perf sched latency --pids`.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyRow {
    pub comm: String,
    pub tid: u32,
    pub runtime_ms: f64,
    pub switches: u64,
    pub avg_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Default, PartialEq)]
pub struct LatencyTable {
    pub rows: Vec<LatencyRow>,
    pub total_runtime_ms: Option<f64>,
    pub total_switches: Option<u64>,
    /// perf's `INFO:` lines, without the prefix.
    pub infos: Vec<String>,
}

/// Parse `perf sched latency --pids` output:
///
/// ```text
///   sh:13246              |     82.297 ms |       24 | avg:  11.236 ms | max:  24.034 ms | max start: …
///   TOTAL:                |   1130.008 ms |      253 |
///   INFO: 50.000% context switch bugs (2 out of 4)
/// ```
///
/// The task column is `comm:tid` and comm may contain `:` and spaces, so
/// the tid is what follows the last `:`. Rows merged per command (`comm:(N)`,
/// without `--pids`) have no tid and are skipped.
pub fn parse_latency(text: &str) -> LatencyTable {
    let mut t = LatencyTable::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(info) = line.strip_prefix("INFO:") {
            t.infos.push(info.trim().to_string());
            continue;
        }
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        if cols.len() < 3 {
            continue;
        }
        if cols[0] == "TOTAL:" {
            t.total_runtime_ms = first_number(cols[1]);
            t.total_switches = cols[2].parse().ok();
            continue;
        }
        if cols.len() < 5 {
            continue;
        }
        let Some((comm, tid)) = cols[0].rsplit_once(':') else {
            continue;
        };
        let parsed = (|| {
            Some(LatencyRow {
                comm: comm.to_string(),
                tid: tid.parse().ok()?,
                runtime_ms: first_number(cols[1])?,
                switches: cols[2].parse().ok()?,
                avg_ms: first_number(cols[3].strip_prefix("avg:")?)?,
                max_ms: first_number(cols[4].strip_prefix("max:")?)?,
            })
        })();
        if let Some(row) = parsed {
            t.rows.push(row);
        }
    }
    t
}

fn first_number(s: &str) -> Option<f64> {
    s.split_whitespace().next()?.parse().ok()
}

/// A task in `perf sched timehist -s`: its thread, process and parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskParent {
    pub tid: u32,
    pub pid: u32,
    pub parent: u32,
}

/// Parse the task rows of `perf sched timehist -s` (the runtime summary and
/// the terminated tasks):
///
/// ```text
///        lto cgu.00[13241/13201]   13201         63      358.531  …  0
///                      sh[13246]   13244         24       82.337  …  0
/// ```
///
/// `comm[tid/pid]` (a thread) or `comm[pid]`, then the parent and seven
/// numbers. comm may contain spaces and brackets: the ids are in the last
/// `[…]` of everything before the eight numeric columns.
pub fn parse_timehist(text: &str) -> Vec<TaskParent> {
    let mut tasks = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 9 {
            continue;
        }
        let (name, nums) = words.split_at(words.len() - 8);
        if nums.iter().any(|n| n.parse::<f64>().is_err()) {
            continue;
        }
        let name = name.join(" ");
        let Some(ids) = name
            .rsplit_once('[')
            .and_then(|(_, ids)| ids.strip_suffix(']'))
        else {
            continue;
        };
        let (tid, pid) = match ids.split_once('/') {
            Some((t, p)) => (t.parse().ok(), p.parse().ok()),
            None => (ids.parse().ok(), ids.parse().ok()),
        };
        if let (Some(tid), Some(pid), Ok(parent)) = (tid, pid, nums[0].parse()) {
            tasks.push(TaskParent { tid, pid, parent });
        }
    }
    tasks
}

/// Where the target's tasks start.
#[derive(Debug, Clone, Copy)]
pub enum Roots {
    /// The threads of this process.
    Process(u32),
    /// What this process (perf, running the command) started, except its
    /// own threads.
    ChildrenOf(u32),
}

/// The target's tasks: the roots, then, repeatedly, any task in a target
/// process or whose parent is a target task or process.
pub fn target_tids(tasks: &[TaskParent], roots: Roots) -> HashSet<u32> {
    let (mut tids, mut pids) = (HashSet::new(), HashSet::new());
    let excluded = match roots {
        Roots::Process(p) => {
            pids.insert(p);
            tids.insert(p);
            None
        }
        Roots::ChildrenOf(leader) => {
            for t in tasks
                .iter()
                .filter(|t| t.parent == leader && t.pid != leader)
            {
                tids.insert(t.tid);
                pids.insert(t.pid);
            }
            Some(leader)
        }
    };
    loop {
        let mut grew = false;
        for t in tasks {
            let in_target =
                pids.contains(&t.pid) || tids.contains(&t.parent) || pids.contains(&t.parent);
            if in_target && Some(t.pid) != excluded && tids.insert(t.tid) {
                pids.insert(t.pid);
                grew = true;
            }
        }
        if !grew {
            return tids;
        }
    }
}

pub fn summarize(
    table: &LatencyTable,
    target: &HashSet<u32>,
    top: usize,
    record_bytes: u64,
) -> PerfSchedSummary {
    let tasks: Vec<TaskLatency> = table
        .rows
        .iter()
        .map(|r| TaskLatency {
            comm: r.comm.clone(),
            tid: r.tid,
            runtime_ms: r.runtime_ms,
            switches: r.switches,
            avg_delay_ms: r.avg_ms,
            max_delay_ms: r.max_ms,
            target: target.contains(&r.tid),
        })
        .collect();
    let ranked = |key: fn(&TaskLatency) -> f64| {
        let mut v: Vec<&TaskLatency> = tasks.iter().filter(|t| key(t) > 0.0).collect();
        v.sort_by(|a, b| key(b).total_cmp(&key(a)).then(b.switches.cmp(&a.switches)));
        v.into_iter().take(top).cloned().collect::<Vec<_>>()
    };
    PerfSchedSummary {
        tasks_seen: tasks.len(),
        total_switches: table
            .total_switches
            .unwrap_or_else(|| tasks.iter().map(|t| t.switches).sum()),
        total_runtime_ms: table
            .total_runtime_ms
            .unwrap_or_else(|| round3(tasks.iter().map(|t| t.runtime_ms).sum())),
        target: target_latency(&tasks),
        top_by_max_delay: ranked(|t| t.max_delay_ms),
        top_by_avg_delay: ranked(|t| t.avg_delay_ms),
        record_bytes,
    }
}

fn target_latency(tasks: &[TaskLatency]) -> Option<TargetLatency> {
    let mine: Vec<&TaskLatency> = tasks.iter().filter(|t| t.target).collect();
    let worst = mine
        .iter()
        .max_by(|a, b| a.max_delay_ms.total_cmp(&b.max_delay_ms))?;
    let switches: u64 = mine.iter().map(|t| t.switches).sum();
    let weighted: f64 = mine
        .iter()
        .map(|t| t.avg_delay_ms * t.switches as f64)
        .sum();
    Some(TargetLatency {
        tasks: mine.len(),
        switches,
        runtime_ms: round3(mine.iter().map(|t| t.runtime_ms).sum()),
        avg_delay_ms: if switches > 0 {
            round3(weighted / switches as f64)
        } else {
            0.0
        },
        max_delay_ms: worst.max_delay_ms,
        worst_task: format!("{}:{}", worst.comm, worst.tid),
    })
}

impl PerfSchedSummary {
    pub fn render(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "  system-wide: {} tasks, {} switches, {:.1} ms on CPU ({:.1} MiB recorded)",
            self.tasks_seen,
            self.total_switches,
            self.total_runtime_ms,
            self.record_bytes as f64 / (1 << 20) as f64
        );
        if let Some(t) = &self.target {
            let _ = writeln!(
                s,
                "  target: {} tasks, {} switches, {:.1} ms on CPU, delay avg {:.3} ms, max \
                 {:.3} ms ({})",
                t.tasks, t.switches, t.runtime_ms, t.avg_delay_ms, t.max_delay_ms, t.worst_task
            );
        }
        render_table(s, "worst single delay", &self.top_by_max_delay);
        render_table(s, "worst average delay", &self.top_by_avg_delay);
    }
}

fn render_table(s: &mut String, title: &str, rows: &[TaskLatency]) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n  {title}:\n  {:<24} {:>8} {:>12} {:>9} {:>13} {:>13}",
        "task", "tid", "runtime ms", "switches", "avg delay ms", "max delay ms"
    );
    for r in rows {
        let mark = if r.target { " *" } else { "" };
        let _ = writeln!(
            s,
            "  {:<24} {:>8} {:>12.3} {:>9} {:>13.3} {:>13.3}{mark}",
            r.comm, r.tid, r.runtime_ms, r.switches, r.avg_delay_ms, r.max_delay_ms
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured on this project's VM (perf 6.1, kernel 6.18): a busy loop
    // (sh 13242) competing with `perf sched record -- sh -c '<3 busy
    // subshells>; sleep 0.2'` (perf is 13243, its command sh 13244, which
    // forked sh 13246-13248 and sleep 13249), while rustc built elsewhere.
    const LATENCY: &str = include_str!("testdata/perf_sched_latency.txt");
    const TIMEHIST: &str = include_str!("testdata/perf_sched_timehist.txt");

    #[test]
    fn parses_latency() {
        let t = parse_latency(LATENCY);
        assert_eq!(t.rows.len(), 21);
        assert_eq!(
            t.rows[0],
            LatencyRow {
                comm: "sh".into(),
                tid: 13246,
                runtime_ms: 82.297,
                switches: 24,
                avg_ms: 11.236,
                max_ms: 24.034,
            }
        );
        // A comm with a space, and one with a colon.
        assert!(t
            .rows
            .iter()
            .any(|r| r.comm == "lto cgu.00" && r.tid == 13241));
        assert!(t
            .rows
            .iter()
            .any(|r| r.comm == "memfd:sealed-91" && r.tid == 15054));
        // The nameless kernel task `:74:74`.
        assert!(t.rows.iter().any(|r| r.comm == ":74" && r.tid == 74));
        assert_eq!(t.total_runtime_ms, Some(1130.008));
        assert_eq!(t.total_switches, Some(253));
        assert_eq!(t.infos, ["50.000% context switch bugs (2 out of 4)"]);
    }

    #[test]
    fn parses_timehist_parents() {
        let p = parse_timehist(TIMEHIST);
        assert_eq!(p.len(), 20);
        let find = |tid| p.iter().find(|t| t.tid == tid).copied().unwrap();
        assert_eq!(
            find(13241),
            TaskParent {
                tid: 13241,
                pid: 13201,
                parent: 13201
            }
        );
        assert_eq!(
            find(13244),
            TaskParent {
                tid: 13244,
                pid: 13244,
                parent: 13243
            }
        );
        assert_eq!(find(13249).parent, 13244);
    }

    #[test]
    fn the_commands_tasks_are_found_from_perf() {
        let tids = target_tids(&parse_timehist(TIMEHIST), Roots::ChildrenOf(13243));
        let mut v: Vec<u32> = tids.into_iter().collect();
        v.sort();
        assert_eq!(v, [13244, 13246, 13247, 13248, 13249]);
    }

    #[test]
    fn a_process_target_takes_its_threads() {
        let tids = target_tids(&parse_timehist(TIMEHIST), Roots::Process(13201));
        let mut v: Vec<u32> = tids.into_iter().collect();
        v.sort();
        assert_eq!(v, [13201, 13240, 13241]);
    }

    #[test]
    fn summary_ranks_and_aggregates() {
        let table = parse_latency(LATENCY);
        let tids = target_tids(&parse_timehist(TIMEHIST), Roots::ChildrenOf(13243));
        let s = summarize(&table, &tids, 3, 1000);
        assert_eq!(s.tasks_seen, 21);
        assert_eq!(s.total_switches, 253);
        let max: Vec<u32> = s.top_by_max_delay.iter().map(|t| t.tid).collect();
        assert_eq!(max, [13246, 13248, 13247]);
        let avg: Vec<u32> = s.top_by_avg_delay.iter().map(|t| t.tid).collect();
        assert_eq!(avg, [13247, 13246, 13248]);
        assert!(s.top_by_max_delay.iter().all(|t| t.target));
        let t = s.target.unwrap();
        assert_eq!(t.tasks, 5);
        assert_eq!(t.switches, 24 + 23 + 21 + 2 + 1);
        assert_eq!(t.max_delay_ms, 24.034);
        assert_eq!(t.worst_task, "sh:13246");
        // Weighted: (24·11.236 + 23·10.963 + 21·11.706 + 2·9.245 + 1·0.003) / 71
        assert_eq!(t.avg_delay_ms, 11.072);
    }

    #[test]
    fn zero_delay_tasks_are_not_ranked() {
        let s = summarize(&parse_latency(LATENCY), &HashSet::new(), 100, 0);
        assert!(s.top_by_max_delay.iter().all(|t| t.max_delay_ms > 0.0));
        assert_eq!(s.top_by_max_delay.len(), 9);
        assert!(s.target.is_none());
    }

    #[test]
    fn versions() {
        assert_eq!(major_minor("perf version 6.1.187"), Some((6, 1)));
        assert_eq!(major_minor("6.18.44-fc-v669"), Some((6, 18)));
    }
}
