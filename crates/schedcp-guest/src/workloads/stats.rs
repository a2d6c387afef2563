//! Percentiles: exact ones over a small sample, and a log-linear histogram for
//! the millions of samples a wakeup run produces.

/// The nearest-rank percentile of `sorted` (ascending); `p` is a fraction in
/// `0.0..=1.0`. Nearest-rank always returns an observed value, so a p99 is a
/// latency some request really saw.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let rank = nearest_rank(sorted.len() as u64, p)?;
    sorted.get(usize::try_from(rank - 1).ok()?).copied()
}

pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// 1-based rank of the `p` percentile among `n` samples.
fn nearest_rank(n: u64, p: f64) -> Option<u64> {
    if n == 0 {
        return None;
    }
    // The epsilon absorbs float error: 0.99 * 100 must be rank 99, not 100.
    let rank = (p.clamp(0.0, 1.0) * n as f64 - 1e-9).ceil() as u64;
    Some(rank.clamp(1, n))
}

/// Values below `2^SUB_BITS` get a bucket each; above that every power of two
/// is split into `2^SUB_BITS` buckets, so a bucket's midpoint is within
/// 1/256 (0.4%) of any value in it.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;

/// A log-linear histogram of `u64` samples (HdrHistogram's idea, minus the
/// configurability). Memory grows with the largest value recorded, at most
/// ~60 KiB for the full `u64` range.
#[derive(Debug, Clone, Default)]
pub struct LogHistogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl LogHistogram {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, value: u64) {
        let i = bucket_index(value);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.min = if self.total == 0 {
            value
        } else {
            self.min.min(value)
        };
        self.max = self.max.max(value);
        self.total += 1;
        self.sum += u128::from(value);
    }

    pub fn merge(&mut self, other: &LogHistogram) {
        if other.total == 0 {
            return;
        }
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.min = if self.total == 0 {
            other.min
        } else {
            self.min.min(other.min)
        };
        self.max = self.max.max(other.max);
        self.total += other.total;
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn min(&self) -> Option<u64> {
        (self.total > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum as f64 / self.total as f64)
    }

    /// Nearest-rank percentile, reported as the midpoint of the bucket that
    /// holds it, clamped to the exact observed min/max. The clamp keeps the
    /// answer monotonic in `p` and exact when every sample is equal; the top
    /// rank is the exact maximum.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        let rank = nearest_rank(self.total, p)?;
        if rank == self.total {
            return Some(self.max);
        }
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bucket_bounds(i);
                return Some((lo + (hi - lo) / 2).clamp(self.min, self.max));
            }
        }
        // Unreachable while `total` equals the sum of `counts`.
        Some(self.max)
    }
}

fn bucket_index(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let msb = u64::BITS - 1 - value.leading_zeros();
    let shift = msb - SUB_BITS;
    // `value >> shift` lies in SUB..2*SUB: the top SUB_BITS+1 bits.
    (((shift + 1) as usize) << SUB_BITS) + ((value >> shift) - SUB) as usize
}

/// Inclusive range of values that land in bucket `index`.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB {
        return (index, index);
    }
    let shift = (index >> SUB_BITS) - 1;
    let lo = (SUB + (index & (SUB - 1))) << shift;
    (lo, lo + ((1u64 << shift) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_known_inputs() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 0.5), Some(5.0));
        assert_eq!(percentile(&v, 0.9), Some(9.0));
        assert_eq!(percentile(&v, 0.91), Some(10.0));
        assert_eq!(percentile(&v, 1.0), Some(10.0));
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 0.99), Some(99.0));
        assert_eq!(percentile(&[7.0], 0.999), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(mean(&[1.0, 2.0, 6.0]), Some(3.0));
        assert_eq!(mean(&[]), None);
    }

    #[test]
    fn buckets_are_contiguous() {
        let mut last = 0;
        for v in 0..70_000 {
            let i = bucket_index(v);
            assert!(i == last || i == last + 1, "gap before bucket {i}");
            last = i;
        }
    }

    #[test]
    fn buckets_contain_their_values_within_precision() {
        let powers = (0..64).flat_map(|b| [(1u64 << b) - 1, 1 << b, (1 << b) + 1]);
        for v in (0..70_000).chain(powers).chain([u64::MAX]) {
            let i = bucket_index(v);
            let (lo, hi) = bucket_bounds(i);
            assert!(lo <= v && v <= hi, "{v} not in bucket {i} = {lo}..={hi}");
            assert!(
                (hi - lo) as f64 <= lo as f64 / SUB as f64,
                "bucket {i} too wide"
            );
        }
        assert_eq!(
            bucket_index(u64::MAX),
            (64 - SUB_BITS as usize + 1) * SUB as usize - 1
        );
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = LogHistogram::new();
        (0..=100).for_each(|v| h.record(v));
        assert_eq!(h.count(), 101);
        assert_eq!(h.percentile(0.5), Some(50));
        assert_eq!(h.percentile(0.99), Some(99));
        assert_eq!(h.percentile(1.0), Some(100));
        assert_eq!(h.min(), Some(0));
        assert_eq!(h.mean(), Some(50.0));
    }

    #[test]
    fn large_values_within_one_percent() {
        let mut h = LogHistogram::new();
        (1..=100_000u64).for_each(|v| h.record(v * 1000));
        for (p, exact) in [
            (0.5, 50_000_000.0),
            (0.99, 99_000_000.0),
            (0.999, 99_900_000.0),
        ] {
            let got = h.percentile(p).unwrap() as f64;
            assert!((got - exact).abs() / exact < 0.01, "p{p}: {got} vs {exact}");
        }
        assert_eq!(h.percentile(1.0), Some(100_000_000));
        assert_eq!(h.max(), Some(100_000_000));
    }

    #[test]
    fn merge_equals_recording_everything() {
        let (mut a, mut b, mut all) = (
            LogHistogram::new(),
            LogHistogram::new(),
            LogHistogram::new(),
        );
        for v in (0..5000u64).map(|i| i * i) {
            if v % 3 == 0 { &mut a } else { &mut b }.record(v);
            all.record(v);
        }
        a.merge(&b);
        a.merge(&LogHistogram::new());
        assert_eq!(
            (a.count(), a.min(), a.max(), a.mean()),
            (all.count(), all.min(), all.max(), all.mean())
        );
        for p in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(a.percentile(p), all.percentile(p));
        }
    }

    #[test]
    fn empty_histogram_has_no_percentiles() {
        let h = LogHistogram::new();
        assert_eq!((h.percentile(0.5), h.max(), h.mean()), (None, None, None));
    }
}
