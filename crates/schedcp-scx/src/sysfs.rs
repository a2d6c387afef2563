//! The kernel's sched_ext sysfs interface (`/sys/kernel/sched_ext`).

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use schedcp_proto::report::StateSample;

const DIR: &str = "/sys/kernel/sched_ext";
const STATE: &str = "/sys/kernel/sched_ext/state";
const ROOT_OPS: &str = "/sys/kernel/sched_ext/root/ops";
const NR_REJECTED: &str = "/sys/kernel/sched_ext/nr_rejected";

/// Whether the running kernel has sched_ext at all (`CONFIG_SCHED_CLASS_EXT`).
pub fn available() -> bool {
    std::path::Path::new(DIR).is_dir()
}

/// Tasks the kernel refused to move to the sched_ext class since boot
/// (e.g. because a scheduler rejected their policy).
pub fn nr_rejected() -> Option<u64> {
    fs::read_to_string(NR_REJECTED).ok()?.trim().parse().ok()
}

/// Seconds since the kernel booted.
pub fn uptime_s() -> f64 {
    fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

pub fn state() -> Option<String> {
    fs::read_to_string(STATE).ok().map(|s| s.trim().to_string())
}

/// Name of the attached scheduler's ops, if one is attached.
pub fn root_ops() -> Option<String> {
    fs::read_to_string(ROOT_OPS)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Poll until the state equals `want` or `timeout` passes.
pub fn wait_for_state(want: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if state().as_deref() == Some(want) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Samples the state in the background and keeps the distinct transitions,
/// so a scheduler the kernel ejects mid-workload shows up in the report.
pub struct StateMonitor {
    samples: Arc<Mutex<Vec<StateSample>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl StateMonitor {
    pub fn start(samples: Vec<StateSample>) -> Self {
        let samples = Arc::new(Mutex::new(samples));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::Builder::new()
                .name("scx-state".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        record(&samples);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
                .ok()
        };
        StateMonitor {
            samples,
            stop,
            handle,
        }
    }

    /// Take one more sample now (e.g. right after attach or detach).
    pub fn sample(&self) {
        record(&self.samples);
    }

    pub fn finish(mut self) -> Vec<StateSample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        record(&self.samples);
        let samples = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        samples
    }
}

fn record(samples: &Mutex<Vec<StateSample>>) {
    let Some(now) = state() else { return };
    let Ok(mut s) = samples.lock() else { return };
    if s.last().map(|l| l.state.as_str()) != Some(now.as_str()) {
        s.push(StateSample {
            uptime_s: uptime_s(),
            state: now,
        });
    }
}
