//! What a caller holds while a probe is attached, and the bounded wait.

use std::collections::BTreeSet;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::bpf_stats::{self, Cost, ProgStats};
use crate::error::Error;

/// A probe's programs, live in the kernel. Only handed out inside
/// [`super::observe`]'s window: the probe detaches when the window's closure
/// returns, whatever it returns.
#[derive(Debug)]
pub struct Attached {
    prog_ids: BTreeSet<u32>,
}

impl Attached {
    pub(super) fn new(progs: &[BorrowedFd<'_>]) -> Result<Attached, Error> {
        let prog_ids = progs
            .iter()
            .map(|fd| bpf_stats::prog_id(*fd))
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::Internal(anyhow::Error::new(e).context("reading a probe's id")))?;
        Ok(Attached { prog_ids })
    }

    /// The kernel's run statistics for each of the probe's programs so far
    /// (they only advance while BPF statistics are enabled).
    pub fn program_stats(&self) -> Vec<ProgStats> {
        bpf_stats::programs_by_id(&self.prog_ids)
    }

    pub fn cost(&self) -> Cost {
        Cost::of(self.program_stats())
    }
}

/// Sleeps until `duration` has passed or `stop` is set; true if stopped
/// early.
pub fn wait(duration: Duration, stop: &AtomicBool) -> bool {
    // Polled rather than signalled: the flag is set from a signal handler,
    // which can do nothing but store to it.
    const TICK: Duration = Duration::from_millis(50);
    let deadline = Instant::now() + duration;
    loop {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(TICK.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_ends_at_the_deadline_or_when_stopped() {
        let stop = AtomicBool::new(false);
        let t = Instant::now();
        assert!(!wait(Duration::from_millis(120), &stop));
        assert!(t.elapsed() >= Duration::from_millis(120));
        stop.store(true, Ordering::SeqCst);
        let t = Instant::now();
        assert!(wait(Duration::from_secs(30), &stop));
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
