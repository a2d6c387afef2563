//! The fixed probe library: what each probe measures, what it hooks, what it
//! keeps in the kernel, and what it costs.

use std::fmt;

use serde::Serialize;

use crate::error::Error;

/// A probe of the library.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Runqlat,
    Cputime,
    Schedevents,
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 3] = [
        ProbeKind::Runqlat,
        ProbeKind::Cputime,
        ProbeKind::Schedevents,
    ];

    pub fn name(self) -> &'static str {
        self.info().name
    }

    pub fn info(self) -> &'static ProbeInfo {
        match self {
            ProbeKind::Runqlat => &RUNQLAT,
            ProbeKind::Cputime => &CPUTIME,
            ProbeKind::Schedevents => &SCHEDEVENTS,
        }
    }

    /// The probe called `name`, or an input error listing the library.
    pub fn parse(name: &str) -> Result<ProbeKind, Error> {
        ProbeKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = ProbeKind::ALL.iter().map(|k| k.name()).collect();
                Error::Input(format!(
                    "unknown probe '{name}'; the library has: {} (see `schedcp observe probe --list`)",
                    names.join(", ")
                ))
            })
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What `observe probe --list` says about a probe.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ProbeInfo {
    pub name: &'static str,
    pub measures: &'static str,
    pub output: &'static str,
    /// Kernel tracepoints hooked (as BTF-typed raw tracepoints, `tp_btf`).
    pub tracepoints: &'static [&'static str],
    /// BPF programs it loads (the names `bpftool prog` shows).
    pub programs: &'static [&'static str],
    pub maps: &'static [MapDesc],
    pub cost: CostDesc,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct MapDesc {
    pub name: &'static str,
    pub kind: &'static str,
    pub bound: &'static str,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CostDesc {
    /// What each event costs, in kernel work.
    pub per_event: &'static str,
    /// Mean BPF run time per event (run_time_ns / run_cnt over the probe's
    /// programs), measured with `schedcp bench probe-overhead --all`.
    pub measured_ns_per_event: f64,
    /// Where and how that figure was measured.
    pub measured_on: &'static str,
}

const MEASURED_ON: &str =
    "schedcp's development host (2 vCPUs, Linux 6.18, hackbench -g 4 -l 2000), \
     median of 5 runs of `schedcp bench probe-overhead --all`; expect other figures elsewhere";

static RUNQLAT: ProbeInfo = ProbeInfo {
    name: "runqlat",
    measures: "run-queue latency: time from a task becoming runnable (wakeup, new task, or \
               preemption while runnable) to running on a CPU",
    output: "log2 histogram in µs; p50/p90/p99 estimates, exact mean and max, sample count",
    tracepoints: &["sched_wakeup", "sched_wakeup_new", "sched_switch"],
    programs: &["scp_rq_wake", "scp_rq_wake_new", "scp_rq_switch"],
    maps: &[
        MapDesc {
            name: "scp_rq_start",
            kind: "array indexed by pid (low 16 bits): pid tag and enqueue timestamp",
            bound: "65536 × 8 B = 512 KiB",
        },
        MapDesc {
            name: "scp_rq_hist",
            kind: "per-CPU array (histogram)",
            bound: "1 entry of 35 u64 per CPU",
        },
    ],
    cost: CostDesc {
        per_event: "wakeup: a clock read and one array store; switch: a clock read, two array \
                    slots and a per-CPU histogram bump (no hashing, locks or atomics)",
        measured_ns_per_event: 77.0,
        measured_on: MEASURED_ON,
    },
};

static CPUTIME: ProbeInfo = ProbeInfo {
    name: "cputime",
    measures: "per-task on-CPU and off-CPU (sleeping or waiting to run) time within the window, \
               switches in and involuntary switches out",
    output: "top tasks by on-CPU time: pid, tgid, comm, on/off-CPU ms, switches",
    tracepoints: &["sched_switch"],
    programs: &["scp_cpu_switch"],
    maps: &[MapDesc {
        name: "scp_cpu_tasks",
        kind: "hash by pid",
        bound: "10240 tasks; more are counted as dropped",
    }],
    cost: CostDesc {
        per_event: "switch: one clock read and two hash lookups (prev and next); an insert the \
                    first time a task is seen",
        measured_ns_per_event: 120.0,
        measured_on: MEASURED_ON,
    },
};

static SCHEDEVENTS: ProbeInfo = ProbeInfo {
    name: "schedevents",
    measures: "per-process (tgid) counts of context switches (and how many were involuntary), \
               wakeups, new-task wakeups, migrations, forks and execs",
    output: "totals and the top processes by event count",
    tracepoints: &[
        "sched_switch",
        "sched_wakeup",
        "sched_wakeup_new",
        "sched_migrate_task",
        "sched_process_fork",
        "sched_process_exec",
    ],
    programs: &[
        "scp_ev_switch",
        "scp_ev_wake",
        "scp_ev_wake_new",
        "scp_ev_migrate",
        "scp_ev_fork",
        "scp_ev_exec",
    ],
    maps: &[
        MapDesc {
            name: "scp_ev_counts",
            kind: "per-CPU hash by tgid (counters)",
            bound: "10240 processes; more are counted as dropped",
        },
        MapDesc {
            name: "scp_ev_comm",
            kind: "hash by tgid (process name)",
            bound: "10240 processes",
        },
    ],
    cost: CostDesc {
        per_event: "one per-CPU hash lookup and increment (no atomics); an insert and a name \
                    copy the first time a process is seen",
        measured_ns_per_event: 90.0,
        measured_on: MEASURED_ON,
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in ProbeKind::ALL {
            assert_eq!(ProbeKind::parse(k.name()).unwrap(), k);
        }
    }

    #[test]
    fn unknown_probe_lists_the_library() {
        let e = ProbeKind::parse("runqlen").unwrap_err().to_string();
        assert!(e.contains("unknown probe 'runqlen'"), "{e}");
        assert!(e.contains("runqlat, cputime, schedevents"), "{e}");
    }

    #[test]
    fn kernel_names_fit_and_carry_the_prefix() {
        // The kernel keeps 15 characters of a name; the leak check and the
        // overhead benchmark find our programs and maps by the prefix.
        for k in ProbeKind::ALL {
            let info = k.info();
            for name in info
                .programs
                .iter()
                .chain(info.maps.iter().map(|m| &m.name))
            {
                assert!(name.len() <= 15, "{name} is longer than 15");
                assert!(name.starts_with(super::super::PREFIX), "{name}");
            }
        }
    }
}
