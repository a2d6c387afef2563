//! The kernel's side of the story: which BPF programs and maps are loaded
//! (to prove a probe left nothing behind), and the run-time statistics it
//! keeps per program (`kernel.bpf_stats_enabled`: run_cnt, run_time_ns), from
//! which a probe's cost per event is read.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use libbpf_rs::query::{MapInfoIter, ProgInfoIter};
use serde::Serialize;

use super::PREFIX;

/// One loaded program's identity and accumulated run statistics. The
/// counters only advance while statistics are enabled.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ProgStats {
    pub id: u32,
    pub name: String,
    pub run_cnt: u64,
    pub run_time_ns: u64,
    /// run_time_ns / run_cnt.
    pub ns_per_run: Option<f64>,
}

impl ProgStats {
    fn new(id: u32, name: String, run_cnt: u64, run_time_ns: u64) -> ProgStats {
        ProgStats {
            id,
            name,
            run_cnt,
            run_time_ns,
            ns_per_run: ratio(run_time_ns, run_cnt),
        }
    }
}

fn ratio(ns: u64, cnt: u64) -> Option<f64> {
    (cnt > 0).then(|| ns as f64 / cnt as f64)
}

/// Every program loaded in the kernel now, with its statistics.
pub fn programs() -> Vec<ProgStats> {
    ProgInfoIter::default()
        .map(|p| {
            ProgStats::new(
                p.id,
                p.name.to_string_lossy().into_owned(),
                p.run_cnt,
                p.run_time_ns,
            )
        })
        .collect()
}

/// The current statistics of the programs with these ids (those still
/// loaded).
pub fn programs_by_id(ids: &BTreeSet<u32>) -> Vec<ProgStats> {
    programs()
        .into_iter()
        .filter(|p| ids.contains(&p.id))
        .collect()
}

/// A set of programs' cost: totals, and the mean per event, where an event
/// is one program run (one tracepoint hit).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Cost {
    pub programs: Vec<ProgStats>,
    pub run_cnt: u64,
    pub run_time_ns: u64,
    /// Sum of run_time_ns over sum of run_cnt.
    pub ns_per_event: Option<f64>,
}

impl Cost {
    pub fn of(mut programs: Vec<ProgStats>) -> Cost {
        programs.sort_by(|a, b| a.name.cmp(&b.name));
        let run_cnt = programs.iter().map(|p| p.run_cnt).sum();
        let run_time_ns = programs.iter().map(|p| p.run_time_ns).sum();
        Cost {
            programs,
            run_cnt,
            run_time_ns,
            ns_per_event: ratio(run_time_ns, run_cnt),
        }
    }
}

/// Our programs and maps (names with the `scp_` prefix) the kernel holds.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Ours {
    pub programs: Vec<(u32, String)>,
    pub maps: Vec<(u32, String)>,
}

impl Ours {
    pub fn is_empty(&self) -> bool {
        self.programs.is_empty() && self.maps.is_empty()
    }
}

/// Everything named `scp_*` that is loaded now.
pub fn ours_loaded() -> Ours {
    let ours = |name: &std::ffi::OsStr| name.to_string_lossy().starts_with(PREFIX);
    Ours {
        programs: ProgInfoIter::default()
            .filter(|p| ours(&p.name))
            .map(|p| (p.id, p.name.to_string_lossy().into_owned()))
            .collect(),
        maps: MapInfoIter::default()
            .filter(|m| ours(&m.name))
            .map(|m| (m.id, m.name.to_string_lossy().into_owned()))
            .collect(),
    }
}

/// The kernel id of a loaded program.
pub fn prog_id(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: bpf_prog_info is plain integers; all-zero (padding included,
    // which the kernel checks) is the empty query.
    let mut info: libbpf_rs::libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut len = size_of_val(&info) as u32;
    // SAFETY: `info` is a writable bpf_prog_info of `len` bytes, and the
    // kernel writes at most `len` bytes into it.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len)
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(-rc));
    }
    Ok(info.id)
}

/// Keeps the kernel's BPF run-time statistics on while it lives.
///
/// This is the `BPF_ENABLE_STATS` command rather than a write to
/// `/proc/sys/kernel/bpf_stats_enabled`: the kernel counts the holders of
/// the returned fd, so statistics go back off (or stay on, if someone else
/// turned them on) when the last holder closes it, even if this process is
/// killed. A sysctl write would have to be restored by hand and would leak
/// on SIGKILL. Needs CAP_SYS_ADMIN.
pub struct StatsEnabled {
    _fd: OwnedFd,
}

impl StatsEnabled {
    pub fn new() -> io::Result<StatsEnabled> {
        // SAFETY: a plain syscall wrapper; it returns a new fd or -errno.
        let fd = unsafe {
            libbpf_rs::libbpf_sys::bpf_enable_stats(libbpf_rs::libbpf_sys::BPF_STATS_RUN_TIME)
        };
        if fd < 0 {
            return Err(io::Error::from_raw_os_error(-fd));
        }
        // SAFETY: the kernel just handed us this fd; nothing else owns it.
        Ok(StatsEnabled {
            _fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// What `kernel.bpf_stats_enabled` reads now (1 while any holder lives).
    pub fn sysctl() -> Option<bool> {
        std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .ok()
            .map(|v| v.trim() == "1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(name: &str, cnt: u64, ns: u64) -> ProgStats {
        ProgStats::new(1, name.into(), cnt, ns)
    }

    #[test]
    fn cost_per_event_weights_programs_by_their_runs() {
        // 1000 cheap runs and 10 costly ones: the mean is per run, not the
        // mean of the per-program means.
        let c = Cost::of(vec![prog("b", 1000, 50_000), prog("a", 10, 10_000)]);
        assert_eq!(c.run_cnt, 1010);
        assert_eq!(c.run_time_ns, 60_000);
        let per = c.ns_per_event.unwrap();
        assert!((per - 59.405).abs() < 0.01, "{per}");
        assert_eq!(c.programs[0].name, "a");
        assert_eq!(c.programs[1].ns_per_run, Some(50.0));
    }

    #[test]
    fn no_runs_no_cost() {
        assert_eq!(Cost::of(vec![prog("a", 0, 0)]).ns_per_event, None);
    }
}
