//! System-wide software counters (context switches, CPU migrations) per CPU,
//! read through perf_event_open. The kernel counts these exactly and cheaply;
//! /proc offers context switches but no system-wide migration count.

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};

const PERF_TYPE_SOFTWARE: u32 = 1;
/// From <linux/perf_event.h>; not exported by the libc crate.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
pub const PERF_COUNT_SW_CONTEXT_SWITCHES: u64 = 3;
pub const PERF_COUNT_SW_CPU_MIGRATIONS: u64 = 4;

/// `struct perf_event_attr`, as far as we set it (the kernel accepts the
/// size we pass and zero-fills the rest).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
}

/// One counter per online CPU for one software event.
pub struct CpuCounters {
    fds: Vec<Option<File>>,
}

impl CpuCounters {
    /// Open `config` on every CPU. CPUs where opening fails (offline, or no
    /// CAP_PERFMON) read as `None`.
    pub fn open(config: u64, nr_cpus: usize) -> CpuCounters {
        let fds = (0..nr_cpus)
            .map(|cpu| open_one(config, cpu as i32))
            .collect();
        CpuCounters { fds }
    }

    /// Current count per CPU.
    pub fn read(&mut self) -> Vec<Option<u64>> {
        self.fds
            .iter_mut()
            .map(|f| {
                let f = f.as_mut()?;
                let mut buf = [0u8; 8];
                f.read_exact(&mut buf).ok()?;
                Some(u64::from_ne_bytes(buf))
            })
            .collect()
    }
}

fn open_one(config: u64, cpu: i32) -> Option<File> {
    let attr = PerfEventAttr {
        type_: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config,
        ..Default::default()
    };
    // SAFETY: perf_event_open(attr, pid=-1 (all tasks), cpu, group_fd=-1, flags=CLOEXEC)
    // reads `attr` only; a non-negative return is a new fd we own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1,
            cpu,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Some(File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(
        not(feature = "tier-host"),
        ignore = "host tier: perf_event_open needs root or CAP_PERFMON (scripts/test.sh runs it)"
    )]
    fn context_switches_count_up() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut c = CpuCounters::open(PERF_COUNT_SW_CONTEXT_SWITCHES, cpus);
        assert!(
            c.read().iter().any(Option::is_some),
            "perf_event_open for software events needs root / CAP_PERFMON"
        );
        let total = |v: Vec<Option<u64>>| v.into_iter().flatten().sum::<u64>();
        let a = total(c.read());
        // Each sleep blocks this thread: at least one switch apiece.
        for _ in 0..50 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let b = total(c.read());
        assert!(b >= a + 50, "{a} -> {b}");
    }
}
