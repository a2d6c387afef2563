//! Per-thread scheduling attributes: nice, policy (SCHED_OTHER, BATCH,
//! IDLE), the fair scheduler's per-task slice (`sched_setattr`
//! `sched_runtime`, Linux ≥ 6.12) and CPU affinity.
//!
//! Every attribute is per thread in Linux and inherited across fork and
//! exec, so setting it on a workload's threads, or on a child before it
//! execs, covers everything the workload starts later. Real-time and
//! deadline threads are never touched: demoting one is not a tuning
//! decision schedcp may take.

use serde::{Deserialize, Serialize};

use super::catalog::Attribute;
use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    Other,
    Batch,
    Idle,
}

impl Policy {
    fn raw(self) -> i32 {
        match self {
            Policy::Other => libc::SCHED_OTHER,
            Policy::Batch => libc::SCHED_BATCH,
            Policy::Idle => libc::SCHED_IDLE,
        }
    }

    fn from_raw(p: i32) -> Option<Policy> {
        match p & !libc::SCHED_RESET_ON_FORK {
            libc::SCHED_OTHER => Some(Policy::Other),
            libc::SCHED_BATCH => Some(Policy::Batch),
            libc::SCHED_IDLE => Some(Policy::Idle),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "other" => Some(Policy::Other),
            "batch" => Some(Policy::Batch),
            "idle" => Some(Policy::Idle),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Other => "other",
            Policy::Batch => "batch",
            Policy::Idle => "idle",
        }
    }
}

/// The task attributes of one change set, ready to apply (values already
/// checked against the catalogue).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TaskSettings {
    pub nice: Option<i32>,
    pub policy: Option<Policy>,
    pub slice_us: Option<u64>,
    pub affinity: Option<Vec<usize>>,
}

impl TaskSettings {
    pub fn is_empty(&self) -> bool {
        *self == TaskSettings::default()
    }

    /// Take one checked assignment.
    pub fn set(&mut self, attr: Attribute, canonical: &str) {
        match attr {
            Attribute::Nice => self.nice = canonical.parse().ok(),
            Attribute::Policy => self.policy = Policy::parse(canonical),
            Attribute::Slice => self.slice_us = canonical.parse().ok(),
            Attribute::Affinity => self.affinity = super::value::parse_cpulist(canonical).ok(),
        }
    }
}

/// One thread's attributes before schedcp changed them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Prior {
    pub tid: i32,
    /// Start time in clock ticks since boot (`/proc/TID/stat` field 22):
    /// a reused tid is another thread and is left alone.
    pub start: u64,
    pub nice: i32,
    pub policy: Policy,
    /// The slice the kernel reported, ns; `None`: it was the default.
    pub slice_ns: Option<u64>,
    pub affinity: Vec<usize>,
}

/// `struct sched_attr` (include/uapi/linux/sched/types.h), with the
/// utilisation clamps so that the size matches SCHED_ATTR_SIZE_VER1.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

fn getattr(tid: i32) -> std::io::Result<SchedAttr> {
    let mut a = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        ..Default::default()
    };
    // SAFETY: `a` is a valid, writable sched_attr of the size we pass.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid,
            &mut a as *mut SchedAttr,
            std::mem::size_of::<SchedAttr>() as u32,
            0u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(a)
}

/// The whole setattr in one call, so nice, policy and slice change together.
/// Async-signal-safe: also used between fork and exec.
fn setattr(tid: i32, policy: i32, nice: i32, runtime_ns: u64) -> std::io::Result<()> {
    let a = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: policy as u32,
        sched_nice: nice,
        sched_runtime: runtime_ns,
        ..Default::default()
    };
    // SAFETY: `a` is a valid sched_attr with its size set.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &a as *const SchedAttr, 0u32) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn get_affinity(tid: i32) -> std::io::Result<Vec<usize>> {
    // SAFETY: zeroed cpu_set_t is valid; the kernel writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET stays in bounds
    // because CPU lists are checked below 4096 > CPU_SETSIZE is excluded.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

fn set_affinity_raw(tid: i32, set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The slice a thread with the default reports: what our own thread says.
fn default_slice_ns() -> Option<u64> {
    getattr(0).ok().map(|a| a.sched_runtime)
}

/// Start time of a thread, or `None` if it is gone.
pub fn start_time(pid: i32, tid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    // Fields after the command name, which may itself hold spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The threads of a process.
pub fn threads(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Snapshot one thread; `None` for real-time/deadline threads (left alone)
/// or a thread that is gone.
pub fn snapshot(pid: i32, tid: i32) -> Option<Prior> {
    let start = start_time(pid, tid)?;
    let a = getattr(tid).ok()?;
    let policy = Policy::from_raw(a.sched_policy as i32)?;
    let default = default_slice_ns();
    Some(Prior {
        tid,
        start,
        nice: a.sched_nice,
        policy,
        slice_ns: (Some(a.sched_runtime) != default).then_some(a.sched_runtime),
        affinity: get_affinity(tid).ok()?,
    })
}

/// Apply `s` to one thread whose prior state is `p`.
pub fn apply(p: &Prior, s: &TaskSettings) -> Result<(), Error> {
    let tid = p.tid;
    let fail = |what: &str, e: std::io::Error| {
        Error::Input(format!("setting {what} of thread {tid}: {e}"))
    };
    if s.nice.is_some() || s.policy.is_some() || s.slice_us.is_some() {
        let policy = s.policy.unwrap_or(p.policy).raw();
        let nice = s.nice.unwrap_or(p.nice);
        let runtime = s.slice_us.map(|us| us * 1000).or(p.slice_ns).unwrap_or(0);
        setattr(tid, policy, nice, runtime).map_err(|e| fail("nice/policy/slice", e))?;
    }
    if let Some(cpus) = &s.affinity {
        set_affinity_raw(tid, &cpu_set(cpus)).map_err(|e| fail("affinity", e))?;
    }
    Ok(())
}

/// Put a thread back as it was, if it is still the same thread.
pub fn restore(pid: i32, p: &Prior) -> Result<(), Error> {
    if start_time(pid, p.tid) != Some(p.start) {
        return Ok(()); // gone (or its tid reused): nothing of ours remains
    }
    setattr(p.tid, p.policy.raw(), p.nice, p.slice_ns.unwrap_or(0))
        .map_err(|e| Error::Input(format!("restoring thread {}: {e}", p.tid)))?;
    set_affinity_raw(p.tid, &cpu_set(&p.affinity))
        .map_err(|e| Error::Input(format!("restoring the affinity of thread {}: {e}", p.tid)))
}

/// Read one attribute of a thread in canonical form (for `knob read`
/// against a process and for read-back).
pub fn read(tid: i32, attr: Attribute) -> Result<String, Error> {
    let a = getattr(tid).map_err(|e| Error::Input(format!("thread {tid}: {e}")))?;
    Ok(match attr {
        Attribute::Nice => a.sched_nice.to_string(),
        Attribute::Policy => Policy::from_raw(a.sched_policy as i32).map_or_else(
            || format!("policy {}", a.sched_policy),
            |p| p.as_str().into(),
        ),
        Attribute::Slice => (a.sched_runtime / 1000).to_string(),
        Attribute::Affinity => super::value::format_cpulist(
            &get_affinity(tid).map_err(|e| Error::Input(format!("thread {tid}: {e}")))?,
        ),
    })
}

/// What a child applies to itself between fork and exec: everything
/// precomputed, so the hook only makes system calls.
#[derive(Clone)]
pub struct SelfApply {
    attr: Option<(i32, i32, u64)>,
    affinity: Option<libc::cpu_set_t>,
}

impl SelfApply {
    /// From settings, with this process's own values filling what the
    /// change set leaves alone.
    pub fn new(s: &TaskSettings) -> SelfApply {
        let own = getattr(0).ok();
        let attr = (s.nice.is_some() || s.policy.is_some() || s.slice_us.is_some()).then(|| {
            let policy = s
                .policy
                .map(Policy::raw)
                .unwrap_or_else(|| own.map_or(libc::SCHED_OTHER, |a| a.sched_policy as i32));
            let nice = s.nice.unwrap_or_else(|| own.map_or(0, |a| a.sched_nice));
            (policy, nice, s.slice_us.map_or(0, |us| us * 1000))
        });
        SelfApply {
            attr,
            affinity: s.affinity.as_deref().map(cpu_set),
        }
    }

    /// Run in the child after fork: async-signal-safe (system calls only).
    pub fn apply(&self) -> std::io::Result<()> {
        if let Some((policy, nice, runtime)) = self.attr {
            setattr(0, policy, nice, runtime)?;
        }
        if let Some(set) = &self.affinity {
            set_affinity_raw(0, set)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sched_attr_has_the_kernel_size() {
        // SCHED_ATTR_SIZE_VER1 = 56.
        assert_eq!(std::mem::size_of::<SchedAttr>(), 56);
    }

    #[test]
    fn own_thread_snapshot_reads() {
        let pid = std::process::id() as i32;
        let p = snapshot(pid, pid).expect("own thread");
        assert!(!p.affinity.is_empty());
        assert!((-20..=19).contains(&p.nice));
    }
}
