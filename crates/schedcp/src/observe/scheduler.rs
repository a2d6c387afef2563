//! Which CPU scheduler the machine is running right now.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SchedulerState {
    /// `enabled`, `disabled`, `enabling`, `disabling`, or `unsupported`
    /// (kernel without CONFIG_SCHED_CLASS_EXT).
    pub sched_ext: String,
    /// `sched_ext_ops.name` of the attached scheduler.
    pub ops: Option<String>,
    /// What runs SCHED_NORMAL tasks, in words.
    pub active: String,
}

pub fn current() -> SchedulerState {
    let state = std::fs::read_to_string("/sys/kernel/sched_ext/state")
        .ok()
        .map(|s| s.trim().to_string());
    let ops = std::fs::read_to_string("/sys/kernel/sched_ext/root/ops")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let default = kernel_default_name();
    let active = match (state.as_deref(), &ops) {
        (Some("enabled"), Some(o)) => format!("{o} (sched_ext)"),
        _ => format!("{default} (kernel default)"),
    };
    SchedulerState {
        sched_ext: state.unwrap_or_else(|| "unsupported".into()),
        ops,
        active,
    }
}

/// EEVDF replaced CFS as the fair class in Linux 6.6.
fn kernel_default_name() -> &'static str {
    let release = crate::host::kernel_release();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next()) {
        (Some(maj), Some(min)) if (maj, min) >= (6, 6) => "EEVDF",
        (Some(_), Some(_)) => "CFS",
        _ => "fair class",
    }
}
