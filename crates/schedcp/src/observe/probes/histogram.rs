//! Log2 histograms as the probes aggregate them in the kernel, and the
//! percentile estimates read off them.
//!
//! Slot `i` counts values in `[2^i, 2^(i+1))` (slot 0 also counts 0). A
//! percentile is estimated by linear interpolation inside the slot that
//! holds its rank, so it is good to within that slot's factor of two; the
//! exact maximum is reported beside it.

use serde::Serialize;

/// One non-empty slot: values in `[low, high]`, in the histogram's unit.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Bucket {
    pub low: u64,
    pub high: u64,
    pub count: u64,
}

/// The non-empty slots of `slots`, with their bounds.
pub fn buckets(slots: &[u64]) -> Vec<Bucket> {
    slots
        .iter()
        .enumerate()
        .filter(|(_, &count)| count > 0)
        .map(|(i, &count)| {
            let (low, high) = slot_bounds(i);
            Bucket {
                low,
                high: high - 1,
                count,
            }
        })
        .collect()
}

/// `[low, high)` of slot `i`.
fn slot_bounds(i: usize) -> (u64, u64) {
    let low = if i == 0 { 0 } else { 1u64 << i };
    (low, 1u64 << (i + 1))
}

/// The value below which a fraction `q` (0..=1) of the samples fall,
/// interpolated inside its slot; `None` for an empty histogram.
pub fn percentile(slots: &[u64], q: f64) -> Option<f64> {
    let total: u64 = slots.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &count) in slots.iter().enumerate() {
        if count == 0 {
            continue;
        }
        if (below + count) as f64 >= rank {
            let (low, high) = slot_bounds(i);
            let within = (rank - below as f64) / count as f64;
            return Some(low as f64 + within * (high - low) as f64);
        }
        below += count;
    }
    // Unreachable for q <= 1 (the last non-empty slot reaches `total`).
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_follow_log2_slots() {
        let mut slots = [0u64; 8];
        slots[0] = 3;
        slots[3] = 5;
        assert_eq!(
            buckets(&slots),
            vec![
                Bucket {
                    low: 0,
                    high: 1,
                    count: 3
                },
                Bucket {
                    low: 8,
                    high: 15,
                    count: 5
                },
            ]
        );
    }

    #[test]
    fn percentiles_interpolate_inside_the_slot() {
        // 100 samples in [16, 32): p50 is halfway through that slot.
        let mut slots = [0u64; 8];
        slots[4] = 100;
        assert_eq!(percentile(&slots, 0.5), Some(24.0));
        assert_eq!(percentile(&slots, 1.0), Some(32.0));
    }

    #[test]
    fn percentiles_pick_the_slot_holding_the_rank() {
        // 90 fast samples and 10 slow ones: p50 and p90 are fast, p99 slow.
        let mut slots = [0u64; 16];
        slots[1] = 90;
        slots[10] = 10;
        let p50 = percentile(&slots, 0.5).unwrap();
        let p90 = percentile(&slots, 0.9).unwrap();
        let p99 = percentile(&slots, 0.99).unwrap();
        assert!((2.0..4.0).contains(&p50), "{p50}");
        assert!((2.0..=4.0).contains(&p90), "{p90}");
        assert!((1024.0..2048.0).contains(&p99), "{p99}");
    }

    #[test]
    fn empty_histogram_has_no_percentiles() {
        assert_eq!(percentile(&[0; 4], 0.5), None);
        assert!(buckets(&[0; 4]).is_empty());
    }
}
