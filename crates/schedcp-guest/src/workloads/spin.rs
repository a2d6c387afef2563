//! Calibrated CPU work. Jobs spin a fixed number of loop iterations rather than
//! for a wall-clock time, so "20 ms of work" is the same work under every
//! scheduler and a job that waits for a CPU finishes later instead of
//! silently doing less.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// A calibration trial must run at least this long for the clock (and a
/// frequency ramp-up) not to dominate it.
const MIN_TRIAL: Duration = Duration::from_millis(2);
const TRIALS: usize = 7;

/// How many [`spin`] iterations this machine does per millisecond.
#[derive(Debug, Clone, Copy)]
pub struct Spinner {
    iters_per_ms: f64,
}

impl Spinner {
    /// Measures single-threaded speed as the best of several trials:
    /// preemption or an interrupt can only make a trial look slower.
    pub fn calibrate() -> Spinner {
        // Doubling up to MIN_TRIAL also warms the CPU up before the real trials.
        let mut iters = 1_000u64;
        while timed(iters) < MIN_TRIAL {
            iters *= 2;
        }
        let best = (0..TRIALS).map(|_| timed(iters)).min().unwrap_or(MIN_TRIAL);
        let best_ms = best.max(Duration::from_nanos(1)).as_secs_f64() * 1e3;
        Spinner {
            iters_per_ms: iters as f64 / best_ms,
        }
    }

    pub fn iters_per_ms(&self) -> f64 {
        self.iters_per_ms
    }

    /// Iterations that take `work` on an otherwise idle CPU.
    pub fn iters_for(&self, work: Duration) -> u64 {
        (self.iters_per_ms * work.as_secs_f64() * 1e3).round() as u64
    }
}

fn timed(iters: u64) -> Duration {
    let start = Instant::now();
    spin(iters);
    start.elapsed()
}

/// Burns CPU for `iters` iterations of a dependent multiply-add chain.
///
/// Never inlined, so calibration and every caller run the same machine code.
#[inline(never)]
pub fn spin(iters: u64) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..iters {
        // black_box makes each step opaque: the loop can be neither
        // vectorised nor folded into a closed form.
        x = black_box(
            x.wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407),
        );
    }
    black_box(x);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_is_sane() {
        let s = Spinner::calibrate();
        assert!(s.iters_per_ms().is_finite() && s.iters_per_ms() > 0.0);
        assert_eq!(s.iters_for(Duration::ZERO), 0);
        let ten_ms = s.iters_for(Duration::from_millis(10));
        assert!(ten_ms > 0);
        // Work scales linearly with the requested time.
        let hundred_ms = s.iters_for(Duration::from_millis(100)) as f64;
        assert!((hundred_ms / ten_ms as f64 - 10.0).abs() < 0.01);
    }
}
