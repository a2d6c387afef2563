//! `perf stat` with a fixed event list, its CSV output parsed into counts,
//! rates and IPC.
//!
//! Command line: `perf stat -x , -o <dir>/stat.csv --timeout <ms> -e <EVENTS>`
//! then `-p PID` or `-- COMMAND…`. perf's own timer ends the window (with a
//! command, perf sends it SIGTERM then); the report goes to a file in the
//! sandbox so it never mixes with the command's output.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::sandbox::{Ending, Spec, Stop};
use super::target::Checked;
use super::{
    binaries, command_line, no_report, round3, target_args, Job, Summary, ToolRun,
    COMMAND_SCRATCH_BYTES,
};
use crate::error::Error;

/// Software events first (always countable), then the hardware ones.
pub const EVENTS: [&str; 8] = [
    "task-clock",
    "context-switches",
    "cpu-migrations",
    "page-faults",
    "cycles",
    "instructions",
    "branches",
    "branch-misses",
];
const HARDWARE: [&str; 4] = ["cycles", "instructions", "branches", "branch-misses"];
const OUT: &str = "stat.csv";

#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct PerfStatSummary {
    /// Counted events, in [`EVENTS`] order.
    pub counters: Vec<Counter>,
    /// Events this machine cannot count (perf: `<not supported>`).
    pub unsupported: Vec<String>,
    /// Events that never ran (perf: `<not counted>`), usually because the
    /// target was not on a CPU during the window.
    pub not_counted: Vec<String>,
    pub derived: Derived,
    /// Wall-clock seconds the rates are per.
    pub counted_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Counter {
    pub event: String,
    pub value: f64,
    pub unit: Unit,
    /// Share of the window the counter was live when below 100: perf
    /// multiplexed the hardware and scaled the count up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_pct: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Milliseconds of CPU time (task-clock).
    Ms,
    Count,
}

/// Figures computed from the counters; absent when an input is missing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Derived {
    /// task-clock over wall-clock time: average CPUs busy with the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus_utilized: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_switches_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_migrations_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_faults_per_s: Option<f64>,
    /// Instructions per cycle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipc: Option<f64>,
    /// Cycles per second of task-clock, in GHz.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ghz: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_miss_pct: Option<f64>,
}

pub(super) fn profile(job: &Job<'_>) -> Result<ToolRun, Error> {
    let perf = binaries::perf()?;
    let out = job.sandbox.file(OUT);
    let mut args: Vec<std::ffi::OsString> = vec![
        "stat".into(),
        "-x".into(),
        ",".into(),
        "-o".into(),
        out.into(),
        "--timeout".into(),
        job.window.as_millis().to_string().into(),
        "-e".into(),
        EVENTS.join(",").into(),
    ];
    args.extend(target_args(job.target));
    let spec = Spec {
        program: &perf.path,
        args,
        window: job.window,
        stop: Stop::Itself,
        max_output: job.max_output,
        // perf stat writes a few hundred bytes (read back up to the output
        // cap); the rest is the command's scratch room.
        max_dir_bytes: job.max_output as u64 + COMMAND_SCRATCH_BYTES,
    };
    let commands = vec![command_line(spec.program, &spec.args)];
    let run = job.sandbox.run(&spec)?;
    let csv = job.sandbox.read_capped(OUT, job.max_output)?;
    let mut summary = csv.as_ref().map(|c| parse(&c.text)).unwrap_or_default();
    if summary.counters.is_empty()
        && summary.unsupported.is_empty()
        && summary.not_counted.is_empty()
    {
        return Err(denied(&run.stderr.text).unwrap_or_else(|| no_report("perf stat", &run)));
    }
    // perf's window is exactly the requested one when it ran to its timer
    // on a pid; otherwise (command ended, or startup counted) our clock.
    let counted = match (job.target, run.ending) {
        (Checked::Pid { .. }, Ending::WindowClosed) => job.window,
        _ => run.elapsed,
    };
    summary.counted_s = round3(counted.as_secs_f64());
    summary.derived = derive(&summary.counters, counted.as_secs_f64());
    let notes = notes(
        &summary,
        has_cpu_pmu(Path::new("/sys/bus/event_source/devices")),
    );
    Ok(ToolRun {
        summary: Summary::PerfStat(summary),
        binary: perf,
        commands,
        main: run,
        notes,
    })
}

/// perf's complaint when the kernel refuses performance events, as a setup
/// error that says what to change.
fn denied(stderr: &str) -> Option<Error> {
    if !(stderr.contains("perf_event_paranoid") || stderr.contains("Permission denied")) {
        return None;
    }
    let level = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    Some(Error::Setup(format!(
        "the kernel refused perf's performance events (kernel.perf_event_paranoid = {level}): \
         run schedcp as root or with CAP_PERFMON"
    )))
}

/// Parse `perf stat -x ,` output: `value,unit,event,run-time,running%,…`
/// per line; `#` comments and blank lines are skipped, as are lines that do
/// not have the shape (perf's warnings).
pub fn parse(csv: &str) -> PerfStatSummary {
    let mut s = PerfStatSummary::default();
    for line in csv.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 3 {
            continue;
        }
        let event = base_event(f[2]);
        if event.is_empty() {
            continue;
        }
        match f[0] {
            "<not supported>" => push_unique(&mut s.unsupported, event),
            "<not counted>" => push_unique(&mut s.not_counted, event),
            v => {
                let Ok(value) = v.parse::<f64>() else {
                    continue;
                };
                let unit = if f[1] == "msec" {
                    Unit::Ms
                } else {
                    Unit::Count
                };
                let running_pct = f
                    .get(4)
                    .and_then(|p| p.parse::<f64>().ok())
                    .filter(|&p| p < 100.0);
                // Hybrid CPUs report an event once per PMU (cpu_core,
                // cpu_atom): the task's total is the sum.
                match s.counters.iter_mut().find(|c| c.event == event) {
                    Some(c) => c.value += value,
                    None => s.counters.push(Counter {
                        event,
                        value,
                        unit,
                        running_pct,
                    }),
                }
            }
        }
    }
    // An event counted on one PMU is counted, whatever the other said.
    let counted: Vec<String> = s.counters.iter().map(|c| c.event.clone()).collect();
    s.unsupported.retain(|e| !counted.contains(e));
    s.not_counted.retain(|e| !counted.contains(e));
    s
}

/// `cpu_core/cycles/` → `cycles`; `cycles:u` → `cycles`.
fn base_event(raw: &str) -> String {
    let raw = raw.trim();
    let name = match raw.split('/').collect::<Vec<_>>().as_slice() {
        [_pmu, ev, ..] if !ev.is_empty() => *ev,
        _ => raw,
    };
    name.split(':').next().unwrap_or(name).to_string()
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

pub fn derive(counters: &[Counter], wall_s: f64) -> Derived {
    let get = |name: &str| counters.iter().find(|c| c.event == name).map(|c| c.value);
    let per_s = |name: &str| {
        get(name)
            .filter(|_| wall_s > 0.0)
            .map(|v| round3(v / wall_s))
    };
    let task_ms = get("task-clock");
    let cycles = get("cycles").filter(|&c| c > 0.0);
    Derived {
        cpus_utilized: task_ms
            .filter(|_| wall_s > 0.0)
            .map(|ms| round3(ms / 1000.0 / wall_s)),
        context_switches_per_s: per_s("context-switches"),
        cpu_migrations_per_s: per_s("cpu-migrations"),
        page_faults_per_s: per_s("page-faults"),
        ipc: get("instructions").zip(cycles).map(|(i, c)| round3(i / c)),
        ghz: cycles
            .zip(task_ms.filter(|&ms| ms > 0.0))
            .map(|(c, ms)| round3(c / (ms / 1000.0) / 1e9)),
        branch_miss_pct: get("branch-misses")
            .zip(get("branches").filter(|&b| b > 0.0))
            .map(|(m, b)| round3(100.0 * m / b)),
    }
}

/// Whether the kernel registered a CPU PMU (`cpu`, or `cpu_core`/`cpu_atom`
/// on hybrid parts) under `devices`: without one there are no hardware
/// counters at all.
fn has_cpu_pmu(devices: &Path) -> bool {
    ["cpu", "cpu_core", "cpu_atom"]
        .iter()
        .any(|d| devices.join(d).exists())
}

fn notes(s: &PerfStatSummary, cpu_pmu: bool) -> Vec<String> {
    let mut notes = Vec::new();
    let hw_missing: Vec<&str> = HARDWARE
        .iter()
        .copied()
        .filter(|e| s.unsupported.iter().any(|u| u == e))
        .collect();
    if hw_missing.len() == HARDWARE.len() {
        let why = if cpu_pmu {
            "perf could not open them"
        } else {
            "the kernel registered no CPU PMU under /sys/bus/event_source/devices, usual in a \
             VM whose hypervisor does not expose one"
        };
        notes.push(format!(
            "no hardware counters on this machine: {} are not supported; {why}. IPC, GHz and \
             branch-miss rate are unavailable; the software counters are exact",
            hw_missing.join(", ")
        ));
    } else if !s.unsupported.is_empty() {
        notes.push(format!(
            "not supported on this machine: {}",
            s.unsupported.join(", ")
        ));
    }
    if !s.not_counted.is_empty() {
        notes.push(format!(
            "not counted: {} (the counters never ran; the target was probably not on a CPU \
             during the window)",
            s.not_counted.join(", ")
        ));
    }
    let scaled: Vec<String> = s
        .counters
        .iter()
        .filter_map(|c| Some(format!("{} ({:.1}%)", c.event, c.running_pct?)))
        .collect();
    if !scaled.is_empty() {
        notes.push(format!(
            "counts scaled from part of the window (more events than hardware counters, perf \
             multiplexed them): {}",
            scaled.join(", ")
        ));
    }
    notes
}

impl PerfStatSummary {
    pub fn render(&self, s: &mut String) {
        for c in &self.counters {
            let value = match c.unit {
                Unit::Ms => format!("{:.2} ms", c.value),
                Unit::Count => format!("{:.0}", c.value),
            };
            let _ = writeln!(s, "  {:<18} {value:>16}", c.event);
        }
        let d = &self.derived;
        let mut derived = Vec::new();
        let mut add = |label: &str, v: Option<f64>| {
            if let Some(v) = v {
                derived.push(format!("{label} {v}"));
            }
        };
        add("CPUs utilized", d.cpus_utilized);
        add("context switches/s", d.context_switches_per_s);
        add("migrations/s", d.cpu_migrations_per_s);
        add("page faults/s", d.page_faults_per_s);
        add("IPC", d.ipc);
        add("GHz", d.ghz);
        add("branch miss %", d.branch_miss_pct);
        if !derived.is_empty() {
            let _ = writeln!(s, "  over {} s: {}", self.counted_s, derived.join(", "));
        }
        if !self.unsupported.is_empty() {
            let _ = writeln!(s, "  unsupported: {}", self.unsupported.join(", "));
        }
        if !self.not_counted.is_empty() {
            let _ = writeln!(s, "  not counted: {}", self.not_counted.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `perf stat -x, -o FILE --timeout 1000 -e <EVENTS> -- sh -c <loop>` on
    /// this project's VM (perf 6.1, kernel 6.18, no PMU).
    const CMD: &str = include_str!("testdata/perf_stat_cmd.csv");
    /// The same with `-p` on a `sleep 30` that never ran in the window.
    const IDLE: &str = include_str!("testdata/perf_stat_pid_idle.csv");

    #[test]
    fn parses_a_real_run_without_hardware_counters() {
        let s = parse(CMD);
        let names: Vec<&str> = s.counters.iter().map(|c| c.event.as_str()).collect();
        assert_eq!(names, EVENTS[..4]);
        assert_eq!(s.counters[0].value, 155.62);
        assert_eq!(s.counters[0].unit, Unit::Ms);
        assert_eq!(s.counters[1].value, 24.0);
        assert_eq!(s.counters[3].value, 65.0);
        assert!(s.counters.iter().all(|c| c.running_pct.is_none()));
        assert_eq!(s.unsupported, HARDWARE);
        assert!(s.not_counted.is_empty());

        let d = derive(&s.counters, 0.2);
        assert_eq!(d.cpus_utilized, Some(0.778));
        assert_eq!(d.context_switches_per_s, Some(120.0));
        assert_eq!(d.ipc, None);

        let n = notes(&s, false);
        assert_eq!(n.len(), 1);
        assert!(
            n[0].starts_with("no hardware counters on this machine"),
            "{n:?}"
        );
        assert!(n[0].contains("no CPU PMU"));
    }

    #[test]
    fn an_idle_target_is_not_counted() {
        let s = parse(IDLE);
        assert!(s.counters.is_empty());
        assert_eq!(s.not_counted, EVENTS[..4]);
        assert_eq!(s.unsupported, HARDWARE);
        let n = notes(&s, false);
        assert!(
            n.iter().any(|n| n.starts_with("not counted: task-clock")),
            "{n:?}"
        );
    }

    #[test]
    fn derives_ipc_and_scaling_when_counters_exist() {
        // The format perf prints on a machine with a PMU (values made up).
        let csv = "1000.00,msec,task-clock,1000000000,100.00,1.000,CPUs utilized\n\
                   3000000000,,cycles,500000000,50.00,3.000,GHz\n\
                   6000000000,,instructions,500000000,50.00,2.00,insn per cycle\n\
                   1000000,,cpu_core/branches/,1000000000,100.00,,\n\
                   1000000,,cpu_atom/branches/,1000000000,100.00,,\n\
                   20000,,branch-misses:u,1000000000,100.00,1.00,of all branches\n";
        let s = parse(csv);
        let d = derive(&s.counters, 2.0);
        assert_eq!(d.ipc, Some(2.0));
        assert_eq!(d.ghz, Some(3.0));
        assert_eq!(d.cpus_utilized, Some(0.5));
        assert_eq!(d.branch_miss_pct, Some(1.0));
        let n = notes(&s, true);
        assert_eq!(n.len(), 1, "{n:?}");
        assert!(n[0].contains("cycles (50.0%)"), "{n:?}");
    }

    #[test]
    fn event_names_are_normalized() {
        assert_eq!(base_event("cycles:u"), "cycles");
        assert_eq!(base_event("cpu_core/cycles/"), "cycles");
        assert_eq!(base_event("task-clock"), "task-clock");
    }

    #[test]
    fn garbage_yields_nothing() {
        let s = parse("Problems finding threads of monitor\n\n Usage: perf stat\n");
        assert!(s.counters.is_empty() && s.unsupported.is_empty());
    }
}
