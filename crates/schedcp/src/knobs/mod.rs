//! knobs — the actuators beyond sched_ext: fair-scheduler parameters,
//! per-workload task attributes and cgroup CPU control, memory and block
//! I/O settings, from the catalogue in `knobs/catalog.toml`.
//!
//! - [`catalog`]: the embedded catalogue and name resolution.
//! - [`discover`]: what this machine allows, with the reason for each knob
//!   it does not (probed at admission, never discovered at apply time).
//! - [`value`]: safe ranges and canonical values.
//! - [`change`]: change sets — admission, apply with snapshot, read-back
//!   and undo on failure, restore, operator drift, workload sweeps.
//! - [`sysfs`], [`task`], [`cgroup`], [`procs`]: how each kind of knob is
//!   read and written, and which processes are a workload's.
//! - [`journal`]: crash safety for change sets applied outside a
//!   deployment.
//!
//! Deploy puts change sets under its canary and breaker; trials (in
//! `tune`) A/B them against the current settings.

pub mod catalog;
pub mod cgroup;
pub mod change;
pub mod discover;
pub mod journal;
pub mod procs;
pub mod sysfs;
pub mod task;
pub mod value;

pub use change::{Applied, Assignment, Drift, Plan, SpawnHook, WorkloadBinding};

/// This boot's id: a change set applied in another boot is gone from the
/// kernel and must be written again, not mistaken for an operator's change.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
