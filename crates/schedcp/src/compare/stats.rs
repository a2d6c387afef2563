//! The statistics behind benchmark verdicts, so that an agent is not fooled
//! by run-to-run noise.
//!
//! - [`summarize`]: median, quartiles (IQR), median absolute deviation,
//!   min/max. Robust statistics: one slow run must not move the headline.
//! - [`mann_whitney`]: the two-sided Mann–Whitney U test (Wilcoxon rank
//!   sum). It assumes nothing about the shape of the distribution, which
//!   benchmark timings (skewed, occasionally bimodal) need. For a pooled
//!   sample of at most [`EXACT_MAX_N`] values the p-value comes from the
//!   exact permutation distribution of the rank sum, computed for the
//!   sample's own tie pattern (so it is exact with ties too); beyond that,
//!   from the normal approximation with tie and continuity corrections.
//! - [`hodges_lehmann`] and [`shift_interval`]: the shift estimate that goes
//!   with the test, and its distribution-free confidence interval (Moses),
//!   inverted from the same U distribution. Unlike a percentile bootstrap
//!   of medians, which under-covers at the 5 to 10 runs a side benchmarks
//!   have, its coverage is guaranteed at any sample size; it needs no
//!   random numbers; and it agrees with the test: without ties it excludes
//!   0 exactly when p < alpha.
//! - [`compare`]: all of the above turned into a direction-aware [`Verdict`].

use schedcp_proto::workload::Better;
use serde::Serialize;

/// Significance level unless the caller says otherwise.
pub const DEFAULT_ALPHA: f64 = 0.05;

/// Smallest relative change of medians (percent) that counts as a change.
///
/// With enough runs, a real but tiny difference (0.3% from a different
/// binary layout, say) becomes statistically significant. It is still not
/// worth deploying a scheduler for, so a significant change smaller than
/// this is reported as no significant change, and the reason says why.
/// Callers that want pure significance pass 0.
pub const DEFAULT_MIN_EFFECT_PCT: f64 = 1.0;

/// Largest pooled sample for which the exact distribution is computed. The
/// cost is O(N · n1 · N²) additions, about 3·10⁶ at 50; beyond that the
/// normal approximation is within a few thousandths of the exact p-value.
pub const EXACT_MAX_N: usize = 50;

/// Robust summary of one sample.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// First and third quartiles (linear interpolation between order statistics).
    pub q1: f64,
    pub q3: f64,
    pub iqr: f64,
    /// Median absolute deviation from the median (unscaled).
    pub mad: f64,
}

/// The finite values of `values`, sorted ascending.
fn sorted_finite(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Quantile `q` (0..=1) of ascending `sorted`, interpolating linearly between
/// order statistics (Hyndman & Fan type 7, as R and NumPy default to).
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    debug_assert!(!sorted.is_empty());
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Median of the finite values; `None` if there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    quantile(values, 0.5)
}

/// The `q` quantile (0 ≤ q ≤ 1) of the finite values, interpolating
/// linearly between order statistics (p50, p99 of latencies); `None` if
/// there are none. Order does not matter.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let v = sorted_finite(values);
    (!v.is_empty()).then(|| quantile_sorted(&v, q))
}

/// Summary of the finite values; `None` if there are none.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let v = sorted_finite(values);
    let (&min, &max) = (v.first()?, v.last()?);
    let median = quantile_sorted(&v, 0.5);
    let (q1, q3) = (quantile_sorted(&v, 0.25), quantile_sorted(&v, 0.75));
    let deviations: Vec<f64> = v.iter().map(|x| (x - median).abs()).collect();
    Some(Summary {
        n: v.len(),
        median,
        min,
        max,
        q1,
        q3,
        iqr: q3 - q1,
        mad: median_of(deviations),
    })
}

fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    quantile_sorted(&v, 0.5)
}

/// How a p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Exact permutation distribution of the rank sum (ties included).
    Exact,
    /// Normal approximation with tie and continuity corrections.
    Normal,
}

/// Result of a two-sided Mann–Whitney U test of `x` against `y`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct MannWhitney {
    /// Pairs (xᵢ, yⱼ) with yⱼ > xᵢ, ties counting ½. Ranges over 0..=n1·n2;
    /// n1·n2/2 means no tendency either way.
    pub u: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// The smallest p-value any arrangement of these values could produce.
    /// Above alpha, no outcome could be significant: the sample is too small
    /// (or too tied) to judge.
    pub min_p_value: f64,
    pub method: Method,
}

/// Two-sided Mann–Whitney U test; non-finite values are ignored. `None`
/// when either sample is empty.
pub fn mann_whitney(x: &[f64], y: &[f64]) -> Option<MannWhitney> {
    let x: Vec<f64> = x.iter().copied().filter(|v| v.is_finite()).collect();
    let y: Vec<f64> = y.iter().copied().filter(|v| v.is_finite()).collect();
    let (n1, n2) = (x.len(), y.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let ranks = Ranks::of(&x, &y);
    // U of y from its rank sum: R_y − n2(n2+1)/2, in doubled units.
    let u = (ranks.doubled_sum_y as f64 - (n2 * (n2 + 1)) as f64) / 2.0;
    let (p_value, min_p_value, method) = if n1 + n2 <= EXACT_MAX_N {
        let dist = RankSumDistribution::new(&ranks.doubled, n2);
        (
            dist.two_sided_p(ranks.doubled_sum_y),
            dist.min_two_sided_p(),
            Method::Exact,
        )
    } else {
        let p = |u: f64| normal_two_sided_p(u, n1, n2, ranks.tie_term);
        // The most extreme arrangement puts every y below every x.
        (p(u), p(0.0), Method::Normal)
    };
    Some(MannWhitney {
        u,
        p_value,
        min_p_value,
        method,
    })
}

/// Midranks of a pooled sample, doubled so that they are integers.
struct Ranks {
    /// Doubled midrank of every pooled value (x's and y's in sorted order;
    /// the distribution only needs the multiset).
    doubled: Vec<u64>,
    /// Sum of the doubled midranks of y.
    doubled_sum_y: u64,
    /// Σ (t³ − t) over groups of t tied values, for the variance correction.
    tie_term: f64,
}

impl Ranks {
    fn of(x: &[f64], y: &[f64]) -> Ranks {
        let mut pooled: Vec<(f64, bool)> = x
            .iter()
            .map(|&v| (v, false))
            .chain(y.iter().map(|&v| (v, true)))
            .collect();
        pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut doubled = Vec::with_capacity(pooled.len());
        let (mut doubled_sum_y, mut tie_term) = (0u64, 0.0);
        let mut start = 0;
        while start < pooled.len() {
            let end = pooled[start..]
                .iter()
                .position(|p| p.0 != pooled[start].0)
                .map_or(pooled.len(), |k| start + k);
            // 1-based positions start+1 ..= end share the midrank
            // (start+1+end)/2; doubled, that is start+1+end.
            let r2 = (start + 1 + end) as u64;
            let t = (end - start) as f64;
            tie_term += t * t * t - t;
            for p in &pooled[start..end] {
                doubled.push(r2);
                if p.1 {
                    doubled_sum_y += r2;
                }
            }
            start = end;
        }
        Ranks {
            doubled,
            doubled_sum_y,
            tie_term,
        }
    }
}

/// The permutation distribution of the (doubled) rank sum of a group of `k`
/// drawn from the pooled ranks: `counts[s]` arrangements give sum `s`.
struct RankSumDistribution {
    counts: Vec<f64>,
    total: f64,
}

impl RankSumDistribution {
    fn new(doubled_ranks: &[u64], k: usize) -> RankSumDistribution {
        let max_sum: usize = doubled_ranks.iter().map(|&r| r as usize).sum();
        // ways[j][s]: subsets of size j of the ranks seen so far summing to s.
        // Counts are f64: C(50, 25) ≈ 1.3·10¹⁴ is exact in a double, and only
        // ratios matter.
        let mut ways = vec![vec![0.0f64; max_sum + 1]; k + 1];
        ways[0][0] = 1.0;
        for (seen, &r) in doubled_ranks.iter().enumerate() {
            let r = r as usize;
            // Descending j so each rank is used at most once.
            for j in (1..=k.min(seen + 1)).rev() {
                let (lower, upper) = ways.split_at_mut(j);
                let (from, to) = (&lower[j - 1], &mut upper[0]);
                for s in (r..=max_sum).rev() {
                    to[s] += from[s - r];
                }
            }
        }
        let counts = ways.swap_remove(k);
        let total = counts.iter().sum();
        RankSumDistribution { counts, total }
    }

    /// P(S ≤ s) and P(S ≥ s).
    fn tails(&self, s: u64) -> (f64, f64) {
        let s = (s as usize).min(self.counts.len() - 1);
        let below: f64 = self.counts[..=s].iter().sum();
        let above: f64 = self.counts[s..].iter().sum();
        (below / self.total, above / self.total)
    }

    /// Twice the smaller tail, capped at 1 (the usual two-sided exact
    /// p-value; it equals the symmetric one when there are no ties).
    fn two_sided_p(&self, s: u64) -> f64 {
        let (lo, hi) = self.tails(s);
        (2.0 * lo.min(hi)).min(1.0)
    }

    fn min_two_sided_p(&self) -> f64 {
        let attainable = || {
            self.counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0.0)
                .map(|(s, _)| s as u64)
        };
        let (Some(lo), Some(hi)) = (attainable().next(), attainable().next_back()) else {
            return 1.0;
        };
        // Tail probabilities grow away from the extremes.
        self.two_sided_p(lo).min(self.two_sided_p(hi))
    }
}

/// Two-sided p-value of U under the normal approximation: mean n1·n2/2,
/// tie-corrected variance n1·n2/12 · ((N+1) − Σ(t³−t)/(N(N−1))), and a
/// continuity correction of ½.
fn normal_two_sided_p(u: f64, n1: usize, n2: usize, tie_term: f64) -> f64 {
    let (n1, n2) = (n1 as f64, n2 as f64);
    let n = n1 + n2;
    let mean = n1 * n2 / 2.0;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if var <= 0.0 {
        // Every value tied: no evidence of any difference.
        return 1.0;
    }
    let z = ((u - mean).abs() - 0.5).max(0.0) / var.sqrt();
    statrs::function::erf::erfc(z / std::f64::consts::SQRT_2).min(1.0)
}

/// Hodges–Lehmann estimate of the shift from `x` to `y`: the median of all
/// pairwise differences yⱼ − xᵢ. `None` when either sample is empty.
pub fn hodges_lehmann(x: &[f64], y: &[f64]) -> Option<f64> {
    let (x, y) = (sorted_finite(x), sorted_finite(y));
    let diffs: Vec<f64> = y
        .iter()
        .flat_map(|b| x.iter().map(move |a| b - a))
        .collect();
    (!diffs.is_empty()).then(|| median_of(diffs))
}

/// A confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
}

/// Distribution-free confidence interval at `level` for the shift from `x`
/// to `y` (Moses; Hollander & Wolfe, *Nonparametric Statistical Methods*,
/// §4.3): with the m = n1·n2 pairwise differences yⱼ − xᵢ in ascending
/// order D(1) ≤ … ≤ D(m), the interval is [D(C), D(m+1−C)], where C is the
/// largest integer with P(U ≤ C − 1) ≤ (1 − level)/2 under the null
/// distribution of U. Its coverage is at least `level` for continuous data.
/// `None` when the samples are too small for any interval at `level` (C
/// would be 0).
pub fn shift_interval(x: &[f64], y: &[f64], level: f64) -> Option<Interval> {
    let (x, y) = (sorted_finite(x), sorted_finite(y));
    let c = moses_rank(x.len(), y.len(), (1.0 - level) / 2.0)?;
    let mut diffs: Vec<f64> = y
        .iter()
        .flat_map(|b| x.iter().map(move |a| b - a))
        .collect();
    diffs.sort_by(f64::total_cmp);
    Some(Interval {
        low: diffs[c - 1],
        high: diffs[diffs.len() - c],
        level,
    })
}

/// C of [`shift_interval`]: from the exact tie-free distribution of U for
/// small samples, from its normal approximation beyond [`EXACT_MAX_N`].
fn moses_rank(n1: usize, n2: usize, tail: f64) -> Option<usize> {
    let (n, m) = (n1 + n2, n1 * n2);
    if n1 == 0 || n2 == 0 || !(tail > 0.0 && tail < 0.5) {
        return None;
    }
    let c = if n <= EXACT_MAX_N {
        let doubled: Vec<u64> = (1..=n as u64).map(|r| 2 * r).collect();
        let dist = RankSumDistribution::new(&doubled, n2);
        // U = u means a doubled rank sum of y of 2u + n2(n2+1).
        let offset = n2 * (n2 + 1);
        let mut below = 0.0;
        let mut c = 0;
        for u in 0..=m {
            below += dist.counts[2 * u + offset] / dist.total;
            // The epsilon keeps e.g. 1/20 ≤ (1 − 0.9)/2 true in floating point.
            if below > tail + 1e-12 {
                break;
            }
            c = u + 1;
        }
        c
    } else {
        let sigma = (m as f64 * (n as f64 + 1.0) / 12.0).sqrt();
        let z = std::f64::consts::SQRT_2 * statrs::function::erf::erfc_inv(2.0 * tail);
        (m as f64 / 2.0 - z * sigma).floor().max(0.0) as usize
    };
    (c >= 1 && c <= m.div_ceil(2)).then_some(c)
}

/// The judgement of a candidate sample against a baseline sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Significantly better in the metric's direction, by at least the minimum effect.
    Improved,
    /// Significantly worse in the metric's direction, by at least the minimum effect.
    Regressed,
    /// Within noise, or significant but smaller than the minimum effect.
    NoSignificantChange,
    /// Too few values for any outcome to be significant.
    InsufficientData,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Improved => "improved",
            Verdict::Regressed => "regressed",
            Verdict::NoSignificantChange => "no significant change",
            Verdict::InsufficientData => "insufficient data",
        }
    }
}

/// What counts as a change.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Criteria {
    /// Significance level of the two-sided test, in (0, 1).
    pub alpha: f64,
    /// Smallest |relative change of medians| in percent that counts; see
    /// [`DEFAULT_MIN_EFFECT_PCT`].
    pub min_effect_pct: f64,
}

impl Default for Criteria {
    fn default() -> Self {
        Criteria {
            alpha: DEFAULT_ALPHA,
            min_effect_pct: DEFAULT_MIN_EFFECT_PCT,
        }
    }
}

impl Criteria {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(format!(
                "alpha must be between 0 and 1 (exclusive), got {}",
                self.alpha
            ));
        }
        if !(self.min_effect_pct >= 0.0 && self.min_effect_pct.is_finite()) {
            return Err(format!(
                "the minimum effect must be a non-negative percentage, got {}",
                self.min_effect_pct
            ));
        }
        Ok(())
    }
}

/// A candidate sample judged against a baseline sample.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Comparison {
    pub verdict: Verdict,
    /// The verdict in words: the numbers that decided it.
    pub reason: String,
    #[schemars(with = "String")]
    pub direction: Better,
    pub alpha: f64,
    pub min_effect_pct: f64,
    pub baseline_n: usize,
    pub candidate_n: usize,
    pub baseline_median: Option<f64>,
    pub candidate_median: Option<f64>,
    /// Candidate median relative to the baseline median, in percent
    /// (positive: the candidate's value is larger). `None` when the baseline
    /// median is 0 or a side is empty.
    pub change_pct: Option<f64>,
    /// Hodges–Lehmann shift, candidate − baseline, in the metric's unit.
    pub shift: Option<f64>,
    /// Confidence interval of the shift at level 1 − alpha ([`shift_interval`]).
    pub shift_ci: Option<Interval>,
    /// `shift_ci` as a change relative to the baseline median, in percent:
    /// the plausible range of `change_pct`.
    pub ci_pct: Option<Interval>,
    /// Two-sided Mann–Whitney p-value.
    pub p_value: Option<f64>,
    pub u: Option<f64>,
    pub method: Option<Method>,
}

/// Judge `candidate` against `baseline` with the default criteria.
pub fn compare(baseline: &[f64], candidate: &[f64], direction: Better) -> Comparison {
    compare_with(baseline, candidate, direction, Criteria::default())
}

/// Judge `candidate` against `baseline`.
///
/// The verdict is `InsufficientData` when a side has fewer than 2 values or
/// when no arrangement of these values could reach `alpha`;
/// `NoSignificantChange` when p ≥ alpha, or when |change of medians| is
/// below the minimum effect; otherwise `Improved` or `Regressed` according
/// to the sign of the change and the metric's direction.
pub fn compare_with(
    baseline: &[f64],
    candidate: &[f64],
    direction: Better,
    criteria: Criteria,
) -> Comparison {
    let (b, c) = (sorted_finite(baseline), sorted_finite(candidate));
    let (bm, cm) = (median(&b), median(&c));
    let change_pct = match (bm, cm) {
        (Some(bm), Some(cm)) if bm != 0.0 => Some(100.0 * (cm - bm) / bm.abs()),
        _ => None,
    };
    let test = mann_whitney(&b, &c);
    let shift_ci = shift_interval(&b, &c, 1.0 - criteria.alpha);
    let ci_pct = match (shift_ci, bm) {
        (Some(i), Some(bm)) if bm != 0.0 => Some(Interval {
            low: 100.0 * i.low / bm.abs(),
            high: 100.0 * i.high / bm.abs(),
            level: i.level,
        }),
        _ => None,
    };
    let mut out = Comparison {
        verdict: Verdict::InsufficientData,
        reason: String::new(),
        direction,
        alpha: criteria.alpha,
        min_effect_pct: criteria.min_effect_pct,
        baseline_n: b.len(),
        candidate_n: c.len(),
        baseline_median: bm,
        candidate_median: cm,
        change_pct,
        shift: hodges_lehmann(&b, &c),
        shift_ci,
        ci_pct,
        p_value: test.map(|t| t.p_value),
        u: test.map(|t| t.u),
        method: test.map(|t| t.method),
    };
    (out.verdict, out.reason) = judge(&out, test, &b, &c, criteria);
    out
}

fn judge(
    cmp: &Comparison,
    test: Option<MannWhitney>,
    b: &[f64],
    c: &[f64],
    criteria: Criteria,
) -> (Verdict, String) {
    let alpha = criteria.alpha;
    let (Some(t), true) = (test, b.len() >= 2 && c.len() >= 2) else {
        return (
            Verdict::InsufficientData,
            format!(
                "need at least 2 values on each side to judge; the baseline has {}, the candidate {}",
                b.len(),
                c.len()
            ),
        );
    };
    // All values identical: nothing changed, whatever the sample size.
    if b.first() == b.last() && b.first() == c.first() && c.first() == c.last() {
        return (
            Verdict::NoSignificantChange,
            "every value on both sides is identical".into(),
        );
    }
    if t.min_p_value > alpha {
        return (
            Verdict::InsufficientData,
            format!(
                "with {} baseline and {} candidate values no outcome can reach significance (the smallest attainable p-value is {:.3}, above alpha {alpha}); use at least {} runs on each side",
                b.len(),
                c.len(),
                t.min_p_value,
                min_runs_per_side(alpha)
            ),
        );
    }
    let change = cmp.change_pct.map_or_else(
        || "change undefined (baseline median is 0)".into(),
        |p| format!("change {p:+.2}%"),
    );
    if t.p_value >= alpha {
        return (
            Verdict::NoSignificantChange,
            format!(
                "p = {:.3} ≥ alpha {alpha}: the difference ({change}) is within run-to-run noise",
                t.p_value
            ),
        );
    }
    if let Some(pct) = cmp.change_pct {
        if pct.abs() < criteria.min_effect_pct {
            return (
                Verdict::NoSignificantChange,
                format!(
                    "p = {:.3} < alpha {alpha}, but the {change} is below the minimum effect of {}%: detectable, not worth acting on",
                    t.p_value, criteria.min_effect_pct
                ),
            );
        }
    }
    // The sign of the change of medians; with a zero baseline median, the
    // sign of the Hodges–Lehmann shift.
    let rose = match (cmp.change_pct, cmp.shift) {
        (Some(p), _) if p != 0.0 => p > 0.0,
        (_, Some(s)) => s > 0.0,
        _ => t.u > (b.len() * c.len()) as f64 / 2.0,
    };
    let better = match cmp.direction {
        Better::Lower => !rose,
        Better::Higher => rose,
    };
    let dir = match cmp.direction {
        Better::Lower => "lower is better",
        Better::Higher => "higher is better",
    };
    (
        if better {
            Verdict::Improved
        } else {
            Verdict::Regressed
        },
        format!("p = {:.3} < alpha {alpha}; {change} ({dir})", t.p_value),
    )
}

/// Fewest runs per side (equal sizes, no ties) for which the exact two-sided
/// test can reach `alpha`: the smallest n with 2 / C(2n, n) ≤ alpha.
pub fn min_runs_per_side(alpha: f64) -> usize {
    let mut arrangements = 2.0f64; // C(2, 1)
    for n in 1..=EXACT_MAX_N {
        if 2.0 / arrangements <= alpha {
            return n;
        }
        // C(2n+2, n+1) = C(2n, n) · (2n+1)(2n+2) / (n+1)².
        let n = n as f64;
        arrangements *= (2.0 * n + 1.0) * (2.0 * n + 2.0) / ((n + 1.0) * (n + 1.0));
    }
    EXACT_MAX_N
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// SplitMix64 (Steele, Lea & Flood 2014): a tiny, well-mixed generator,
    /// so that the synthetic samples below are the same on every run.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn new(seed: u64) -> Self {
            SplitMix64(seed)
        }

        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Reference: enumerate every way to pick |y| of the pooled values and
    /// count rank sums, straight from the definition (midranks by counting).
    fn brute_force_p(x: &[f64], y: &[f64]) -> f64 {
        let pooled: Vec<f64> = x.iter().chain(y).copied().collect();
        let n = pooled.len();
        let rank = |v: f64| {
            let below = pooled.iter().filter(|&&p| p < v).count() as f64;
            let equal = pooled.iter().filter(|&&p| p == v).count() as f64;
            below + (equal + 1.0) / 2.0
        };
        let ranks: Vec<f64> = pooled.iter().map(|&v| rank(v)).collect();
        let observed: f64 = ranks[x.len()..].iter().sum();
        let (mut le, mut ge, mut total) = (0u64, 0u64, 0u64);
        for mask in 0u64..(1 << n) {
            if mask.count_ones() as usize != y.len() {
                continue;
            }
            let s: f64 = (0..n)
                .filter(|i| mask >> i & 1 == 1)
                .map(|i| ranks[i])
                .sum();
            total += 1;
            le += u64::from(s <= observed + 1e-9);
            ge += u64::from(s >= observed - 1e-9);
        }
        (2.0 * le.min(ge) as f64 / total as f64).min(1.0)
    }

    /// n values from a log-normal-ish timing distribution around `center`.
    fn timings(rng: &mut SplitMix64, n: usize, center: f64, noise: f64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                // Sum of uniforms: roughly normal, then skewed like timings.
                let z: f64 = (0..6).map(|_| rng.unit()).sum::<f64>() - 3.0;
                center * (noise * z).exp()
            })
            .collect()
    }

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // First outputs of Vigna's splitmix64.c seeded with 0.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn summary_statistics() {
        let s = summarize(&[7.0, 1.0, 3.0, 5.0, 9.0, f64::NAN]).unwrap();
        assert_eq!(s.n, 5);
        assert_eq!((s.min, s.median, s.max), (1.0, 5.0, 9.0));
        assert_eq!((s.q1, s.q3, s.iqr), (3.0, 7.0, 4.0));
        // |x − 5| = 4, 2, 0, 2, 4 → median 2.
        assert_eq!(s.mad, 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(summarize(&[]), None);
        let one = summarize(&[3.0]).unwrap();
        assert_eq!((one.iqr, one.mad), (0.0, 0.0));
    }

    #[test]
    fn exact_p_values_of_complete_separation() {
        // Every y above every x: p = 2 / C(n1+n2, n1).
        for (n, expected) in [(3, 2.0 / 20.0), (4, 2.0 / 70.0), (5, 2.0 / 252.0)] {
            let x: Vec<f64> = (0..n).map(f64::from).collect();
            let y: Vec<f64> = (0..n).map(|i| f64::from(i) + 100.0).collect();
            let t = mann_whitney(&x, &y).unwrap();
            assert_eq!(t.method, Method::Exact);
            assert!(close(t.p_value, expected, 1e-12), "n={n}: {}", t.p_value);
            assert_eq!(t.u, f64::from(n * n));
            assert!(close(t.min_p_value, expected, 1e-12));
        }
    }

    #[test]
    fn exact_p_values_match_published_critical_values() {
        // Two-sided alpha = 0.05 critical values of U for n1 = n2 (standard
        // Mann–Whitney tables): U ≤ crit is significant, crit + 1 is not.
        // The p-values at crit and crit + 1 are SciPy 1.17's
        // (mannwhitneyu(..., method='exact')).
        for (n, crit, p_crit, p_next) in [
            (
                5usize,
                2usize,
                0.031_746_031_746_031_74,
                0.055_555_555_555_555_55,
            ),
            (6, 5, 0.041_125_541_125_541_13, 0.064_935_064_935_064_93),
            (7, 8, 0.037_878_787_878_787_88, 0.053_030_303_030_303_03),
            (8, 13, 0.049_883_449_883_449_88, 0.064_957_264_957_264_95),
            (10, 23, 0.043_257_052_544_978_23, 0.052_425_902_271_103_5),
        ] {
            // y = 0..n shifted so that exactly `u` (x, y) pairs have y > x:
            // x takes the top n ranks except that the lowest y's swap in.
            let p_for_u = |u: usize| {
                // x = n..2n; y starts below every x (U = 0) and its top
                // values are raised past `step` x's each until U = u. The
                // j·10⁻³ keeps every value distinct (no ties).
                let x: Vec<f64> = (n..2 * n).map(|v| v as f64).collect();
                let mut y: Vec<f64> = (0..n).map(|v| v as f64).collect();
                let mut left = u;
                for j in (0..n).rev() {
                    let step = left.min(n);
                    y[j] = (n - 1 + step) as f64 + 0.5 + j as f64 * 1e-3;
                    left -= step;
                    if left == 0 {
                        break;
                    }
                }
                let t = mann_whitney(&x, &y).unwrap();
                assert_eq!(t.u, u as f64, "n={n} u={u}");
                t.p_value
            };
            assert!(close(p_for_u(crit), p_crit, 1e-12), "n={n} U={crit}");
            assert!(
                close(p_for_u(crit + 1), p_next, 1e-12),
                "n={n} U={}",
                crit + 1
            );
            assert!(p_crit <= 0.05 && p_next > 0.05);
        }
    }

    #[test]
    fn exact_p_values_match_enumeration_with_and_without_ties() {
        let cases: &[(&[f64], &[f64])] = &[
            (&[1.1, 2.3, 3.2, 4.8], &[2.0, 5.5, 6.1, 7.7, 8.0]),
            (&[1.0, 2.0, 2.0, 3.0, 5.0], &[2.0, 3.0, 3.0, 4.0, 6.0, 6.0]),
            (&[10.0, 10.0, 10.0], &[10.0, 11.0, 11.0, 12.0]),
            (
                &[5.0, 1.0, 4.0, 4.0, 2.0, 9.0],
                &[3.0, 4.0, 8.0, 7.0, 6.0, 8.0],
            ),
            (&[1.0, 2.0], &[3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]),
        ];
        for (x, y) in cases {
            let t = mann_whitney(x, y).unwrap();
            let reference = brute_force_p(x, y);
            assert!(
                close(t.p_value, reference, 1e-12),
                "{x:?} vs {y:?}: {} != {reference}",
                t.p_value
            );
        }
    }

    #[test]
    fn hand_computed_small_case() {
        // x = {1, 3}, y = {2, 4}: y's ranks are 2 and 4, R_y = 6, U = 6 − 3 = 3.
        // The C(4,2) = 6 possible rank pairs of y sum to 3, 4, 5, 5, 6, 7:
        // P(S ≥ 6) = 2/6, P(S ≤ 6) = 5/6, two-sided p = 2 · 2/6.
        let t = mann_whitney(&[1.0, 3.0], &[2.0, 4.0]).unwrap();
        assert_eq!(t.u, 3.0);
        assert!(close(t.p_value, 4.0 / 6.0, 1e-12));
    }

    #[test]
    fn p_values_match_scipy() {
        // scipy.stats.mannwhitneyu(y, x, alternative='two-sided'), SciPy 1.17.
        // Exact, no ties:
        let t = mann_whitney(&[1.1, 2.3, 3.2, 4.8], &[2.0, 5.5, 6.1, 7.7, 8.0]).unwrap();
        assert_eq!((t.u, t.method), (17.0, Method::Exact));
        assert!(close(t.p_value, 0.111_111_111_111_111_1, 1e-12));
        let x: Vec<f64> = (1..=10).map(f64::from).collect();
        let mut y: Vec<f64> = (11..=19).map(f64::from).collect();
        y.push(3.5);
        let t = mann_whitney(&x, &y).unwrap();
        assert_eq!(t.u, 93.0);
        assert!(close(t.p_value, 0.000_487_128_970_101_106_3, 1e-15));
        // method='asymptotic', use_continuity=True, with ties (60 values); statrs'
        // erfc and SciPy's normal survival function agree to ~1e-10:
        let x: Vec<f64> = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0]
            .into_iter()
            .chain((10..34).map(f64::from))
            .collect();
        let y: Vec<f64> = [2.0, 3.0, 3.0, 3.0]
            .into_iter()
            .chain((12..38).map(f64::from))
            .collect();
        let t = mann_whitney(&x, &y).unwrap();
        assert_eq!((t.u, t.method), (553.5, Method::Normal));
        assert!(
            close(t.p_value, 0.127_486_738_448_504_44, 1e-9),
            "{}",
            t.p_value
        );
    }

    #[test]
    fn normal_approximation_formula() {
        // By hand: n1 = n2 = 30, U = 300, no ties: σ² = 900/12·61 = 4575,
        // z = (|300 − 450| − 0.5)/√4575 = 2.210272, p = erfc(z/√2) = 0.0270863.
        assert!(close(
            normal_two_sided_p(300.0, 30, 30, 0.0),
            0.027_086_3,
            1e-6
        ));
        // One group of 10 ties (Σ t³−t = 990): σ² = 75·(61 − 990/3540),
        // z = 2.215356, p = 0.0267357.
        assert!(close(
            normal_two_sided_p(300.0, 30, 30, 990.0),
            0.026_735_7,
            1e-6
        ));
        // At the mean, and with every value tied: p = 1.
        assert_eq!(normal_two_sided_p(450.0, 30, 30, 0.0), 1.0);
        assert_eq!(
            normal_two_sided_p(450.0, 30, 30, 60.0f64.powi(3) - 60.0),
            1.0
        );
    }

    #[test]
    fn normal_approximation_is_used_for_large_samples_and_agrees_with_exact() {
        let mut rng = SplitMix64::new(7);
        let x = timings(&mut rng, 30, 100.0, 0.05);
        let y = timings(&mut rng, 30, 103.0, 0.05);
        let t = mann_whitney(&x, &y).unwrap();
        assert_eq!(t.method, Method::Normal);
        // Same data at the exact boundary: 25 + 25 values.
        let exact = mann_whitney(&x[..25], &y[..25]).unwrap();
        assert_eq!(exact.method, Method::Exact);
        let ranks = Ranks::of(&x[..25], &y[..25]);
        let approx = normal_two_sided_p(exact.u, 25, 25, ranks.tie_term);
        assert!(
            close(exact.p_value, approx, 0.01),
            "exact {} vs normal {approx}",
            exact.p_value
        );
    }

    #[test]
    fn hodges_lehmann_shift() {
        // Pairwise differences of {1,2,3} → {11,12,13}: 8..=12, median 10.
        assert_eq!(
            hodges_lehmann(&[1.0, 2.0, 3.0], &[11.0, 12.0, 13.0]),
            Some(10.0)
        );
        assert_eq!(hodges_lehmann(&[], &[1.0]), None);
    }

    #[test]
    fn shift_interval_by_hand() {
        // x = 1..=5, y = 11..=15: the 25 differences are 6 (×1), 7 (×2),
        // 8 (×3), 9 (×4), 10 (×5), 11 (×4), 12 (×3), 13 (×2), 14 (×1).
        // n1 = n2 = 5 at 95%: P(U ≤ 2) = 4/252 ≤ 0.025 < P(U ≤ 3) = 7/252,
        // so C = 3 and the interval is [D(3), D(23)] = [7, 13].
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [11.0, 12.0, 13.0, 14.0, 15.0];
        let i = shift_interval(&x, &y, 0.95).unwrap();
        assert_eq!((i.low, i.high), (7.0, 13.0));
        assert_eq!(hodges_lehmann(&x, &y), Some(10.0));
        // From the critical values checked above (U ≤ 13 for 8 + 8, U ≤ 23
        // for 10 + 10 at two-sided 0.05): C = 14 and C = 24.
        assert_eq!(moses_rank(8, 8, 0.025), Some(14));
        assert_eq!(moses_rank(10, 10, 0.025), Some(24));
        // 3 a side: even [D(1), D(9)] covers only 90%, so there is none at 95%.
        assert_eq!(
            shift_interval(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], 0.95),
            None
        );
        assert!(shift_interval(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], 0.9).is_some());
    }

    #[test]
    fn shift_interval_normal_approximation_meets_the_exact_one() {
        // At the boundary (25 + 25) the two ways to find C nearly agree.
        let exact = moses_rank(25, 25, 0.025).unwrap() as f64;
        let m = 625.0;
        let approx = m / 2.0 - 1.959_964 * (m * 51.0 / 12.0f64).sqrt();
        assert!((exact - approx).abs() <= 1.0, "{exact} vs {approx}");
        assert_eq!(moses_rank(30, 30, 0.025), Some(317)); // 450 − 1.96·67.64
    }

    #[test]
    fn shift_interval_covers_the_true_shift_at_its_level() {
        // 1000 samples of 6 + 6 with a true shift of +5: the 95% interval
        // must contain 5 in at least ~95% of them (it is conservative).
        let mut rng = SplitMix64::new(5);
        let covered = (0..1000)
            .filter(|_| {
                let x: Vec<f64> = (0..6).map(|_| 100.0 + 10.0 * rng.unit()).collect();
                let y: Vec<f64> = (0..6).map(|_| 105.0 + 10.0 * rng.unit()).collect();
                let i = shift_interval(&x, &y, 0.95).unwrap();
                i.low <= 5.0 && 5.0 <= i.high
            })
            .count();
        assert!(covered >= 940, "{covered}/1000");
    }

    #[test]
    fn shift_interval_agrees_with_the_test() {
        // Without ties, the interval excludes 0 exactly when p < alpha.
        let mut rng = SplitMix64::new(17);
        let mut significant = 0;
        for trial in 0..500 {
            let n1 = 4 + (rng.next_u64() % 7) as usize;
            let n2 = 4 + (rng.next_u64() % 7) as usize;
            let shift = 3.0 * rng.unit();
            let x: Vec<f64> = (0..n1).map(|_| 10.0 * rng.unit()).collect();
            let y: Vec<f64> = (0..n2).map(|_| shift + 10.0 * rng.unit()).collect();
            let p = mann_whitney(&x, &y).unwrap().p_value;
            let ci = shift_interval(&x, &y, 0.95).unwrap();
            let excludes_zero = ci.low > 0.0 || ci.high < 0.0;
            assert_eq!(excludes_zero, p < 0.05, "trial {trial}: p = {p}, {ci:?}");
            significant += usize::from(excludes_zero);
        }
        // Both outcomes were exercised.
        assert!((50..450).contains(&significant), "{significant}");
    }

    #[test]
    fn identical_distributions_are_no_significant_change() {
        let mut rng = SplitMix64::new(1);
        let x = timings(&mut rng, 10, 250.0, 0.04);
        let y = timings(&mut rng, 10, 250.0, 0.04);
        let c = compare(&x, &y, Better::Lower);
        assert_eq!(c.verdict, Verdict::NoSignificantChange, "{}", c.reason);
        // And the very same sample against itself.
        let c = compare(&x, &x, Better::Lower);
        assert_eq!(c.verdict, Verdict::NoSignificantChange);
        assert_eq!(c.p_value, Some(1.0));
        assert_eq!(c.change_pct, Some(0.0));
    }

    #[test]
    fn false_positive_rate_is_at_most_alpha() {
        // 1000 comparisons of two samples from one distribution: the share
        // called significant must not exceed alpha (plus binomial slack:
        // sd = √(0.05·0.95/1000) ≈ 0.007).
        let mut rng = SplitMix64::new(2024);
        let crit = Criteria {
            alpha: 0.05,
            min_effect_pct: 0.0,
        };
        let trials = 1000;
        let flagged = (0..trials)
            .filter(|_| {
                let x = timings(&mut rng, 8, 50.0, 0.1);
                let y = timings(&mut rng, 8, 50.0, 0.1);
                compare_with(&x, &y, Better::Lower, crit).verdict != Verdict::NoSignificantChange
            })
            .count();
        assert!(
            flagged as f64 / trials as f64 <= 0.065,
            "{flagged}/{trials}"
        );
    }

    #[test]
    fn a_clear_shift_is_detected_in_the_right_direction() {
        let mut rng = SplitMix64::new(3);
        let base = timings(&mut rng, 10, 100.0, 0.03);
        let faster = timings(&mut rng, 10, 85.0, 0.03);
        let slower = timings(&mut rng, 10, 115.0, 0.03);

        // Lower is better (time, latency).
        let c = compare(&base, &faster, Better::Lower);
        assert_eq!(c.verdict, Verdict::Improved, "{}", c.reason);
        assert!(c.change_pct.unwrap() < -10.0);
        assert!(c.shift.unwrap() < 0.0);
        assert!(c.p_value.unwrap() < 0.001);
        assert_eq!(
            compare(&base, &slower, Better::Lower).verdict,
            Verdict::Regressed
        );

        // Higher is better (throughput): the same numbers flip.
        assert_eq!(
            compare(&base, &faster, Better::Higher).verdict,
            Verdict::Regressed
        );
        assert_eq!(
            compare(&base, &slower, Better::Higher).verdict,
            Verdict::Improved
        );
    }

    #[test]
    fn power_against_a_ten_percent_shift() {
        // 10 runs a side with 3% noise must catch a 10% change nearly always.
        let mut rng = SplitMix64::new(99);
        let detected = (0..200)
            .filter(|_| {
                let x = timings(&mut rng, 10, 100.0, 0.03);
                let y = timings(&mut rng, 10, 90.0, 0.03);
                compare(&x, &y, Better::Lower).verdict == Verdict::Improved
            })
            .count();
        assert!(detected >= 195, "{detected}/200");
    }

    #[test]
    fn significant_but_negligible_is_no_change() {
        // Perfectly separated but only 0.5% apart.
        let x: Vec<f64> = (0..8).map(|i| 1000.0 + f64::from(i) * 0.1).collect();
        let y: Vec<f64> = x.iter().map(|v| v * 1.005).collect();
        let c = compare(&x, &y, Better::Lower);
        assert!(c.p_value.unwrap() < 0.01);
        assert_eq!(c.verdict, Verdict::NoSignificantChange);
        assert!(c.reason.contains("minimum effect"), "{}", c.reason);
        // With the guard off, it is a regression.
        let c = compare_with(
            &x,
            &y,
            Better::Lower,
            Criteria {
                alpha: 0.05,
                min_effect_pct: 0.0,
            },
        );
        assert_eq!(c.verdict, Verdict::Regressed);
    }

    #[test]
    fn too_few_values_is_insufficient_data() {
        // One value a side.
        let c = compare(&[1.0], &[2.0], Better::Lower);
        assert_eq!(c.verdict, Verdict::InsufficientData);
        // Empty.
        assert_eq!(
            compare(&[], &[1.0, 2.0], Better::Lower).verdict,
            Verdict::InsufficientData
        );
        // 3 vs 3, perfectly separated and 10× apart: the best possible
        // p-value is 0.1, so it still cannot be called.
        let c = compare(&[1.0, 1.1, 1.2], &[10.0, 11.0, 12.0], Better::Lower);
        assert_eq!(c.verdict, Verdict::InsufficientData);
        assert!(c.reason.contains("at least 4 runs"), "{}", c.reason);
        // 4 vs 4 can.
        let c = compare(
            &[1.0, 1.1, 1.2, 1.3],
            &[10.0, 11.0, 12.0, 13.0],
            Better::Lower,
        );
        assert_eq!(c.verdict, Verdict::Regressed);
    }

    #[test]
    fn ties_are_handled() {
        // Heavily tied integer metric (e.g. a count): identical → no change.
        let c = compare(&[5.0; 6], &[5.0; 6], Better::Higher);
        assert_eq!(c.verdict, Verdict::NoSignificantChange);
        // Ties that limit the attainable p-value: {1,1,1,1} vs {1,1,1,2}.
        let t = mann_whitney(&[1.0; 4], &[1.0, 1.0, 1.0, 2.0]).unwrap();
        assert!(close(t.p_value, 1.0, 1e-12));
        // Ties across groups, clear separation otherwise.
        let c = compare(
            &[10.0, 10.0, 11.0, 11.0, 12.0, 12.0],
            &[12.0, 14.0, 14.0, 15.0, 15.0, 16.0],
            Better::Higher,
        );
        assert_eq!(c.verdict, Verdict::Improved, "{}", c.reason);
    }

    #[test]
    fn min_runs_per_side_follows_alpha() {
        assert_eq!(min_runs_per_side(0.05), 4); // 2/70 = 0.029
        assert_eq!(min_runs_per_side(0.01), 5); // 2/252 = 0.0079
        assert_eq!(min_runs_per_side(0.2), 3); // 2/20 = 0.1
    }

    #[test]
    fn criteria_are_validated() {
        assert!(Criteria::default().validate().is_ok());
        for (alpha, min) in [(0.0, 1.0), (1.0, 1.0), (f64::NAN, 1.0), (0.05, -1.0)] {
            let c = Criteria {
                alpha,
                min_effect_pct: min,
            };
            assert!(c.validate().is_err(), "{alpha} {min}");
        }
    }
}
