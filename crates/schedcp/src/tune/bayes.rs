//! Bayesian optimisation of numeric tunables over a small discrete grid.
//!
//! A trial is expensive and noisy, so the tuner must learn the most from
//! each one. After a short space-filling design, every suggestion is the
//! unobserved grid point with the largest expected improvement (EI) under a
//! Gaussian process (GP) fitted to the trials so far:
//!
//! - coordinates are scaled to [0, 1] per dimension (after `ln` where the
//!   dimension is `log`), so one isotropic length-scale serves all dims;
//! - scores are standardised by their mean (the prior mean) and sd;
//! - kernel Matérn 5/2; signal variance and length-scale maximise the log
//!   marginal likelihood over a small fixed grid (no continuous optimiser,
//!   hence deterministic);
//! - each observation has its own noise variance `noise²` plus a jitter,
//!   so repeats at one point are weighed, not rejected;
//! - EI's incumbent is the best posterior mean at an observed point (the
//!   best raw score would chase lucky noise).
//!
//! No crate is used: the maintained GP/BO crates pull in BLAS or
//! ndarray-linalg and continuous optimisers, while our space is at most
//! 10 000 points and a few dozen observations, where a hand-written Cholesky
//! and an exhaustive EI scan are small, exact and deterministic.
//!
//! Observations whose point is off the grid are snapped, per dimension, to
//! the nearest allowed value (in log scale where `log`; beyond the ends, to
//! the end). Observations with a point of the wrong length, a NaN
//! coordinate or a non-finite score are ignored; a negative noise counts as
//! its absolute value, a non-finite one as 0.

use serde::Serialize;

/// One numeric dimension: the allowed values (already inside the knob's safe range), ascending.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dim {
    pub name: String,
    pub values: Vec<f64>,
    /// Search in log scale (values > 0).
    pub log: bool,
}

/// One trial's outcome at a point: `score` higher is better (improvement %),
/// `noise` its standard error (>= 0; e.g. CI half-width / 1.96).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    pub point: Vec<f64>,
    pub score: f64,
    pub noise: f64,
}

const MAX_DIMS: usize = 3;
const MAX_GRID_POINTS: usize = 10_000;
/// Unit-cube length-scales tried: from two steps of a 30-value grid to
/// nearly linear over the whole range.
const LENGTH_SCALES: [f64; 9] = [0.06, 0.09, 0.13, 0.19, 0.27, 0.4, 0.6, 0.9, 1.4];
/// Signal variances tried, in units of the scores' sample variance.
const SIGNAL_VARS: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];
/// Added to every standardised noise variance so that noiseless repeats
/// still factorise.
const JITTER: f64 = 1e-6;

/// The optimiser. Stateless between calls: every method takes the
/// observations so far, so the caller owns (and can persist) them.
#[derive(Debug, Clone)]
pub struct Bayes {
    dims: Vec<Dim>,
    lens: Vec<usize>,
    /// Unit coordinates of every grid point, row-major (last dim fastest).
    grid: Vec<Vec<f64>>,
}

/// A usable observation: (grid index, score, noise sd).
type Obs = (usize, f64, f64);

/// A fitted GP, in standardised units.
struct Gp {
    x: Vec<Vec<f64>>,
    chol: Vec<f64>,
    alpha: Vec<f64>,
    mean: f64,
    scale: f64,
    ell: f64,
    sf2: f64,
}

impl Bayes {
    /// Err with a precise message: no dims, more than 3 dims, a dim with < 2 values,
    /// unsorted/duplicate/non-finite values, log with values <= 0, more than 10_000 grid points.
    pub fn new(dims: Vec<Dim>) -> Result<Bayes, String> {
        let n = dims.len();
        if n == 0 {
            return Err("bayes: no dimensions given".into());
        }
        if n > MAX_DIMS {
            return Err(format!(
                "bayes: {n} dimensions given, at most {MAX_DIMS} supported"
            ));
        }
        for d in &dims {
            let bad = |what: String| Err(format!("bayes: dimension '{}' {what}", d.name));
            let v = &d.values;
            if v.len() < 2 {
                return bad(format!("has {} value(s), at least 2 needed", v.len()));
            }
            if let Some(x) = v.iter().find(|x| !x.is_finite()) {
                return bad(format!("has non-finite value {x}"));
            }
            if let Some(w) = v.windows(2).find(|w| w[0] >= w[1]) {
                let (a, b) = (w[0], w[1]);
                return bad(format!(
                    "values must be strictly ascending, no duplicates: {a} then {b}"
                ));
            }
            if d.log && v[0] <= 0.0 {
                return bad(format!("is log-scaled but has value {} <= 0", v[0]));
            }
            let span = transform(d, v[v.len() - 1]) - transform(d, v[0]);
            if !(span.is_finite() && span > 0.0) {
                return bad("spans a degenerate range".into());
            }
        }
        let lens: Vec<usize> = dims.iter().map(|d| d.values.len()).collect();
        let size = lens.iter().fold(1usize, |a, &l| a.saturating_mul(l));
        if size > MAX_GRID_POINTS {
            return Err(format!(
                "bayes: the grid has {size} points, at most {MAX_GRID_POINTS} supported"
            ));
        }
        let mut b = Bayes {
            dims,
            lens,
            grid: vec![],
        };
        b.grid = (0..size).map(|f| b.unit_point(&b.values_at(f))).collect();
        Ok(b)
    }

    pub fn dims(&self) -> &[Dim] {
        &self.dims
    }

    /// Distinct observed points before EI takes over: 2·d + 1 (3 in 1-D),
    /// at most the grid size.
    pub fn n_init(&self) -> usize {
        (2 * self.dims.len() + 1).min(self.grid.len())
    }

    /// The next grid point to try, not yet observed; None when every grid
    /// point is observed. Below `n_init()` distinct observed points: a greedy
    /// maximin design that also keeps off the box's faces (first the centre;
    /// in 1-D then 1/6 and 5/6 of the range). Afterwards the argmax of EI,
    /// ties to the first in row-major order; should EI vanish everywhere,
    /// the maximin point again. Deterministic.
    pub fn suggest(&self, seen: &[Observation]) -> Option<Vec<f64>> {
        let obs = self.usable(seen);
        let taken = self.taken(&obs);
        let distinct = taken.iter().filter(|t| **t).count();
        if distinct == self.grid.len() {
            return None;
        }
        if distinct >= self.n_init() {
            if let Some((f, ei)) = self.ei_argmax(&obs, &taken) {
                if ei > 0.0 {
                    return Some(self.values_at(f));
                }
            }
        }
        self.maximin(&taken).map(|f| self.values_at(f))
    }

    /// Posterior mean and sd of the true score at `point` (taken as is, not
    /// snapped) given `seen`. Without usable observations, or for a point of
    /// the wrong length: (0, +inf), i.e. nothing known.
    pub fn predict(&self, seen: &[Observation], point: &[f64]) -> (f64, f64) {
        match self.fit(&self.usable(seen)) {
            Some(gp) if point.len() == self.dims.len() => gp.predict(&self.unit_point(point)),
            _ => (0.0, f64::INFINITY),
        }
    }

    /// The largest EI over unobserved grid points, in score units: 0 when
    /// none is left, +inf without usable observations (nothing known yet).
    pub fn max_expected_improvement(&self, seen: &[Observation]) -> f64 {
        let obs = self.usable(seen);
        let taken = self.taken(&obs);
        if taken.iter().all(|t| *t) {
            return 0.0;
        }
        let ei = self.ei_argmax(&obs, &taken);
        ei.map_or(f64::INFINITY, |(_, ei)| ei)
    }

    /// The observed grid point with the best posterior mean (the one to
    /// recommend), or None without usable observations.
    pub fn best(&self, seen: &[Observation]) -> Option<Vec<f64>> {
        let obs = self.usable(seen);
        let gp = self.fit(&obs)?;
        let (f, _) = self.best_mean(&gp, &self.taken(&obs))?;
        Some(self.values_at(f))
    }

    /// The observed grid point with the best posterior mean, and that mean.
    fn best_mean(&self, gp: &Gp, taken: &[bool]) -> Option<(usize, f64)> {
        argmax(self.points(taken, true).map(|(f, u)| (f, gp.predict(u).0)))
    }

    fn ei_argmax(&self, obs: &[Obs], taken: &[bool]) -> Option<(usize, f64)> {
        let gp = self.fit(obs)?;
        let (_, incumbent) = self.best_mean(&gp, taken)?;
        let ei = |u: &[f64]| {
            let (mu, sd) = gp.predict(u);
            expected_improvement(mu, sd, incumbent)
        };
        argmax(self.points(taken, false).map(|(f, u)| (f, ei(u))))
    }

    /// The untaken point farthest from the taken ones and from its own
    /// mirror images across the faces (which keeps the design off the edges,
    /// where an optimum is rarer and the GP extrapolates anyway).
    fn maximin(&self, taken: &[bool]) -> Option<usize> {
        let picked: Vec<&Vec<f64>> = self.points(taken, true).map(|(_, u)| u).collect();
        let score = |u: &[f64]| {
            let edge = u.iter().fold(1.0, |s: f64, &c| s.min(2.0 * c.min(1.0 - c)));
            picked.iter().fold(edge, |s, t| s.min(dist2(u, t).sqrt()))
        };
        argmax(self.points(taken, false).map(|(f, u)| (f, score(u)))).map(|b| b.0)
    }

    /// Grid points (index, unit coordinates) that are, or are not, taken.
    fn points<'a>(
        &'a self,
        taken: &'a [bool],
        want: bool,
    ) -> impl Iterator<Item = (usize, &'a Vec<f64>)> {
        self.grid
            .iter()
            .enumerate()
            .filter(move |(f, _)| taken[*f] == want)
    }

    fn usable(&self, seen: &[Observation]) -> Vec<Obs> {
        let noise = |s: f64| if s.is_finite() { s.abs() } else { 0.0 };
        let ok = |o: &&Observation| o.score.is_finite();
        let snap = |o: &Observation| Some((self.snap(&o.point)?, o.score, noise(o.noise)));
        seen.iter().filter(ok).filter_map(snap).collect()
    }

    fn taken(&self, obs: &[Obs]) -> Vec<bool> {
        let mut taken = vec![false; self.grid.len()];
        for o in obs {
            taken[o.0] = true;
        }
        taken
    }

    /// Unit coordinates of a point (not clamped).
    fn unit_point(&self, point: &[f64]) -> Vec<f64> {
        let unit = |(d, &x): (&Dim, &f64)| {
            let (lo, hi) = (d.values[0], d.values[d.values.len() - 1]);
            (transform(d, x) - transform(d, lo)) / (transform(d, hi) - transform(d, lo))
        };
        self.dims.iter().zip(point).map(unit).collect()
    }

    /// Row-major index of the grid point nearest to `point`.
    fn snap(&self, point: &[f64]) -> Option<usize> {
        if point.len() != self.dims.len() || point.iter().any(|x| x.is_nan()) {
            return None;
        }
        let mut flat = 0;
        for (d, dim) in self.dims.iter().enumerate() {
            let t: Vec<f64> = dim.values.iter().map(|&x| transform(dim, x)).collect();
            // Below the smallest value (even <= 0, where ln fails) is nearest to it.
            let x = if dim.log {
                point[d].max(dim.values[0])
            } else {
                point[d]
            };
            let target = transform(dim, x).clamp(t[0], t[t.len() - 1]);
            let mut idx = 0;
            for (i, v) in t.iter().enumerate() {
                if (v - target).abs() < (t[idx] - target).abs() {
                    idx = i;
                }
            }
            flat = flat * self.lens[d] + idx;
        }
        Some(flat)
    }

    fn values_at(&self, flat: usize) -> Vec<f64> {
        let idx = unravel(&self.lens, flat).into_iter();
        let dims = self.dims.iter();
        dims.zip(idx).map(|(d, i)| d.values[i]).collect()
    }

    /// Fit by maximising the log marginal likelihood over the fixed
    /// hyperparameter grid (first best wins, so ties are deterministic).
    fn fit(&self, obs: &[Obs]) -> Option<Gp> {
        let n = obs.len();
        if n == 0 {
            return None;
        }
        let mean = obs.iter().map(|o| o.1).sum::<f64>() / n as f64;
        let sd = (obs.iter().map(|o| (o.1 - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        let rms_noise = (obs.iter().map(|o| o.2 * o.2).sum::<f64>() / n as f64).sqrt();
        // Equal scores say nothing of the scale: fall back to the noise, then 1.
        let scale = [sd, rms_noise].into_iter().find(|s| *s > 1e-12);
        let scale = scale.unwrap_or(1.0);
        let z: Vec<f64> = obs.iter().map(|o| (o.1 - mean) / scale).collect();
        let x: Vec<Vec<f64>> = obs.iter().map(|o| self.grid[o.0].clone()).collect();
        // (log marginal likelihood, (ell, sf2, Cholesky factor, alpha))
        let mut best = (f64::NEG_INFINITY, None);
        for ell in LENGTH_SCALES {
            for sf2 in SIGNAL_VARS {
                let mut k = vec![0.0; n * n];
                for i in 0..n {
                    for j in 0..n {
                        k[i * n + j] = matern52(dist2(&x[i], &x[j]), ell, sf2);
                    }
                    k[i * n + i] += (obs[i].2 / scale).powi(2) + JITTER;
                }
                let Some(chol) = cholesky_jittered(&k, n, sf2) else {
                    continue;
                };
                let alpha = back_solve(&chol, n, &forward_solve(&chol, n, &z));
                let logdet: f64 = (0..n).map(|i| chol[i * n + i].ln()).sum();
                let lml = -0.5 * dot(&z, &alpha) - logdet;
                if lml.is_finite() && lml > best.0 {
                    best = (lml, Some((ell, sf2, chol, alpha)));
                }
            }
        }
        let (ell, sf2, chol, alpha) = best.1?;
        Some(Gp {
            x,
            chol,
            alpha,
            mean,
            scale,
            ell,
            sf2,
        })
    }
}

impl Gp {
    /// Posterior mean and sd of the latent function, in score units.
    fn predict(&self, u: &[f64]) -> (f64, f64) {
        let (ell, sf2) = (self.ell, self.sf2);
        let k: Vec<f64> = self
            .x
            .iter()
            .map(|x| matern52(dist2(x, u), ell, sf2))
            .collect();
        let v = forward_solve(&self.chol, k.len(), &k);
        let sd = self.scale * (sf2 - dot(&v, &v)).max(0.0).sqrt();
        (self.mean + self.scale * dot(&k, &self.alpha), sd)
    }
}

/// The first item with the largest score (ties keep the earliest).
fn argmax(items: impl Iterator<Item = (usize, f64)>) -> Option<(usize, f64)> {
    let better = |b: Option<(usize, f64)>, (i, s): (usize, f64)| match b {
        Some((_, m)) if s.is_nan() || s <= m => b,
        _ => Some((i, s)),
    };
    items.fold(None, better)
}

fn transform(d: &Dim, x: f64) -> f64 {
    if d.log {
        x.ln()
    } else {
        x
    }
}

/// Per-dim indices of a row-major flat index.
fn unravel(lens: &[usize], mut flat: usize) -> Vec<usize> {
    let mut idx = vec![0; lens.len()];
    for d in (0..lens.len()).rev() {
        idx[d] = flat % lens[d];
        flat /= lens[d];
    }
    idx
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

fn matern52(r2: f64, ell: f64, sf2: f64) -> f64 {
    let s = (5.0 * r2).sqrt() / ell;
    sf2 * (1.0 + s + s * s / 3.0) * (-s).exp()
}

/// Lower Cholesky factor (row-major), None when not positive definite.
fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for j in 0..n {
        let d = a[j * n + j] - dot(&l[j * n..j * n + j], &l[j * n..j * n + j]);
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        l[j * n + j] = d.sqrt();
        for i in j + 1..n {
            let s = a[i * n + j] - dot(&l[i * n..i * n + j], &l[j * n..j * n + j]);
            l[i * n + j] = s / l[j * n + j];
        }
    }
    Some(l)
}

/// Cholesky, retried with growing diagonal jitter (relative to `base`)
/// when rounding makes a near-singular matrix indefinite.
fn cholesky_jittered(a: &[f64], n: usize, base: f64) -> Option<Vec<f64>> {
    [0.0, 1e-8, 1e-6, 1e-4, 1e-2].into_iter().find_map(|extra| {
        let mut m = a.to_vec();
        (0..n).for_each(|i| m[i * n + i] += extra * base);
        cholesky(&m, n)
    })
}

/// Solves L·v = b.
fn forward_solve(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut v = vec![0.0; n];
    for i in 0..n {
        v[i] = (b[i] - dot(&l[i * n..i * n + i], &v[..i])) / l[i * n + i];
    }
    v
}

/// Solves Lᵀ·x = v.
fn back_solve(l: &[f64], n: usize, v: &[f64]) -> Vec<f64> {
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (v[i] - s) / l[i * n + i];
    }
    x
}

/// EI for maximisation; clamped at 0 against rounding deep in the tail.
fn expected_improvement(mu: f64, sd: f64, incumbent: f64) -> f64 {
    if sd < 1e-300 {
        return (mu - incumbent).max(0.0);
    }
    let z = (mu - incumbent) / sd;
    let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (sd * (z * norm_cdf(z) + pdf)).max(0.0)
}

fn norm_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// erfc to ~1e-15 relative. For |x| < 2.5 the series
/// erf(x) = 2/√π·e^(−x²)·Σ 2ⁿx^(2n+1)/(2n+1)!!, whose terms are all of one
/// sign (no cancellation); beyond, Laplace's continued fraction, which keeps
/// full relative accuracy in the tail where EI lives (1 − erf loses it).
fn erfc(x: f64) -> f64 {
    let sqrt_pi = std::f64::consts::PI.sqrt();
    if x.is_nan() {
        f64::NAN
    } else if x <= -2.5 {
        2.0 - erfc(-x)
    } else if x < 2.5 {
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 * sum.abs() {
            term *= 2.0 * x * x / (2.0 * n + 3.0);
            sum += term;
            n += 1.0;
        }
        1.0 - 2.0 / sqrt_pi * (-x * x).exp() * sum
    } else {
        let t = (1..=60).rev().fold(x, |t, k| x + 0.5 * k as f64 / t);
        (-x * x).exp() / (sqrt_pi * t)
    }
}

/// The peer: every grid point in a fixed coarse-to-fine order. Per dim the
/// middle value is level 0, the two ends level 1, then the quarter points,
/// the eighths…; a point's level is the finest of its coordinates'. Within
/// a level points nearer the centre come first, then row-major: a 2-D grid
/// tries the centre, the edge midpoints, the corners, then the 5×5 lattice
/// from the inside out. Empty when `dims` or a dim is empty.
pub fn grid_order(dims: &[Dim]) -> Vec<Vec<f64>> {
    let lens: Vec<usize> = dims.iter().map(|d| d.values.len()).collect();
    if lens.is_empty() || lens.contains(&0) {
        return vec![];
    }
    let levels: Vec<Vec<usize>> = lens.iter().map(|&n| coarse_levels(n)).collect();
    let key = |flat: &usize| {
        let idx = unravel(&lens, *flat);
        let level = idx.iter().zip(&levels).map(|(&i, l)| l[i]).max();
        let off = |(&i, &n): (&usize, &usize)| (i as f64 / (n.max(2) - 1) as f64 - 0.5).powi(2);
        // Quantised so that mirror-image points tie exactly.
        let r2 = idx.iter().zip(&lens).map(off).sum::<f64>();
        (level, (r2 * 1e9).round() as u64, *flat)
    };
    let mut order: Vec<usize> = (0..lens.iter().product()).collect();
    order.sort_by_key(key);
    let point = |f| dims.iter().zip(unravel(&lens, f)).map(|(d, i)| d.values[i]);
    order.into_iter().map(|f| point(f).collect()).collect()
}

fn coarse_levels(n: usize) -> Vec<usize> {
    let mut level = vec![usize::MAX; n];
    level[n / 2] = 0;
    level[0] = level[0].min(1);
    level[n - 1] = level[n - 1].min(1);
    let (mut k, mut parts) = (2, 4);
    while level.contains(&usize::MAX) {
        for j in 0..=parts {
            let i = (j * (n - 1) + parts / 2) / parts;
            level[i] = level[i].min(k);
        }
        (k, parts) = (k + 1, parts * 2);
    }
    level
}

/// Tiny deterministic PRNG (xorshift64*) for the synthetic benchmark.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 spreads consecutive seeds and never yields a zero state.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        lo + (hi - lo) * bits as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(0.0, 1.0), self.uniform(0.0, 1.0));
        (-2.0 * (1.0 - u1).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

type Objective = Box<dyn Fn(&[f64]) -> f64>;

/// A synthetic objective drawn from `rng`: its dims and its true value as a
/// function of unit coordinates.
fn synthetic(objective: &str, rng: &mut Rng) -> Result<(Vec<Dim>, Objective), String> {
    // n values from lo to hi, evenly spaced (in log scale where `log`), rounded.
    let spaced = |name: &str, lo: f64, hi: f64, n: usize, log: bool| {
        let (t, name) = (|x: f64| if log { x.ln() } else { x }, name.to_string());
        let at = |i| t(lo) + (t(hi) - t(lo)) * i as f64 / (n - 1) as f64;
        let values = (0..n).map(|i| if log { at(i).exp() } else { at(i) }.round());
        Dim {
            name,
            values: values.collect(),
            log,
        }
    };
    let bump = |r2: f64| 10.0 * (-0.5 * r2).exp();
    match objective {
        "peak1d" => {
            let (c, w) = (rng.uniform(0.15, 0.85), rng.uniform(0.08, 0.2));
            let dims = vec![spaced("slice_us", 100.0, 100_000.0, 30, true)];
            let f = move |u: &[f64]| bump(((u[0] - c) / w).powi(2)) + 2.0 * (1.0 - u[0]);
            Ok((dims, Box::new(f)))
        }
        "ridge2d" => {
            let (cx, cy) = (rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8));
            let (sin, cos) = rng.uniform(0.0, std::f64::consts::PI).sin_cos();
            let dims = vec![
                spaced("read_ahead_kb", 16.0, 8192.0, 20, true),
                spaced("slice_us", 1000.0, 15_000.0, 15, false),
            ];
            let f = move |u: &[f64]| {
                let (dx, dy) = (u[0] - cx, u[1] - cy);
                let (along, across) = (dx * cos + dy * sin, dy * cos - dx * sin);
                bump((along / 0.35).powi(2) + (across / 0.1).powi(2))
            };
            Ok((dims, Box::new(f)))
        }
        _ => Err(format!(
            "bayes: unknown objective '{objective}': peak1d or ridge2d"
        )),
    }
}

/// Mean simple regret of BO and of the grid over `seeds` noisy runs of a
/// named synthetic objective, at `budget` evaluations: (bo_regret, grid_regret).
///
/// Seed s (0..seeds) draws a fresh objective and fresh Gaussian trial noise
/// (sd 1, reported as `noise`, on a peak of about 10 score units):
/// - "peak1d": a Gaussian bump (centre uniform in the middle 70 % of the
///   unit range, width 0.08–0.2) on a gentle slope, over 30 log-spaced
///   slices 100–100 000 µs;
/// - "ridge2d": a randomly rotated, elongated bump (widths 0.35 and 0.1,
///   centre uniform in the middle 60 %) over 20 log-spaced read_ahead_kb ×
///   15 linear slice_us values.
///
/// Regret is the grid's optimum minus the true value: for BO at the point
/// `best()` recommends; for the grid at the best *true* value among its
/// first `budget` points of `grid_order` (an oracle pick, favouring the grid).
pub fn regret_benchmark(objective: &str, budget: usize, seeds: u64) -> Result<(f64, f64), String> {
    if seeds == 0 || budget == 0 {
        return Err("bayes: budget and seeds must be at least 1".into());
    }
    let (mut bo, mut grid) = (0.0, 0.0);
    for seed in 0..seeds {
        let mut rng = Rng::new(seed);
        let (dims, f) = synthetic(objective, &mut rng)?;
        let bayes = Bayes::new(dims.clone())?;
        let truth: Vec<f64> = bayes.grid.iter().map(|u| f(u)).collect();
        let at = |p: &[f64]| bayes.snap(p).map_or(f64::NEG_INFINITY, |i| truth[i]);
        let optimum = truth.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let mut seen = Vec::new();
        while let Some(point) = bayes.suggest(&seen).filter(|_| seen.len() < budget) {
            let score = at(&point) + rng.normal();
            seen.push(obs(point, score, 1.0));
        }
        bo += optimum - bayes.best(&seen).map_or(f64::NEG_INFINITY, |p| at(&p));
        let tried = grid_order(&dims).into_iter().take(budget);
        grid += optimum - tried.map(|p| at(&p)).fold(f64::NEG_INFINITY, f64::max);
    }
    Ok((bo / seeds as f64, grid / seeds as f64))
}

fn obs(point: Vec<f64>, score: f64, noise: f64) -> Observation {
    Observation {
        point,
        score,
        noise,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dim(name: &str, values: &[f64], log: bool) -> Dim {
        let (name, values) = (name.to_string(), values.to_vec());
        Dim { name, values, log }
    }

    fn linear(n: usize) -> Vec<f64> {
        (1..=n).map(|i| 10.0 * i as f64).collect()
    }

    /// Runs BO without noise for `budget` trials of `f` (on actual values).
    fn run(b: &Bayes, f: impl Fn(&[f64]) -> f64, budget: usize) -> Vec<Observation> {
        let mut seen = Vec::new();
        while let Some(point) = b.suggest(&seen).filter(|_| seen.len() < budget) {
            let score = f(&point);
            seen.push(obs(point, score, 0.0));
        }
        seen
    }

    #[test]
    fn rejects_bad_dims() {
        let one = |values: &[f64], log| vec![dim("x", values, log)];
        let (d, big) = (dim("x", &[1.0, 2.0], false), dim("x", &linear(30), false));
        let cases = [
            vec![],
            vec![d.clone(); 4],
            one(&[1.0], false),
            one(&[2.0, 1.0], false),
            one(&[1.0, 1.0], false),
            one(&[1.0, f64::NAN], false),
            one(&[0.0, 4.0], true),
            vec![big.clone(), big.clone(), big],
        ];
        let got = cases.map(|dims| Bayes::new(dims).unwrap_err());
        let x = "bayes: dimension 'x'";
        let want = [
            "bayes: no dimensions given".to_string(),
            "bayes: 4 dimensions given, at most 3 supported".into(),
            format!("{x} has 1 value(s), at least 2 needed"),
            format!("{x} values must be strictly ascending, no duplicates: 2 then 1"),
            format!("{x} values must be strictly ascending, no duplicates: 1 then 1"),
            format!("{x} has non-finite value NaN"),
            format!("{x} is log-scaled but has value 0 <= 0"),
            "bayes: the grid has 27000 points, at most 10000 supported".into(),
        ];
        assert_eq!(got, want);
        assert!(Bayes::new(vec![d.clone(), d]).is_ok());
    }

    #[test]
    fn erfc_is_accurate_in_the_tails() {
        let cases = [
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (2.0, 0.004_677_734_981_047_266),
            (2.5, 4.069_520_174_449_59e-4),
            (3.0, 2.209_049_699_858_544e-5),
            (5.0, 1.537_459_794_428_035e-12),
            (-1.0, 1.842_700_792_949_715),
        ];
        for (x, want) in cases {
            let got = erfc(x);
            assert!(
                ((got - want) / want).abs() < 1e-12,
                "erfc({x}) = {got}, want {want}"
            );
        }
        assert!((norm_cdf(-1.959_963_984_540_054) - 0.025).abs() < 1e-14);
    }

    #[test]
    fn deterministic() {
        let dims = vec![
            dim("a", &linear(12), false),
            dim("b", &[1.0, 2.0, 4.0, 8.0, 16.0], true),
        ];
        let f = |p: &[f64]| -(p[0] - 70.0).powi(2) / 100.0 - (p[1].ln() - 1.5).powi(2);
        let first = run(&Bayes::new(dims.clone()).unwrap(), f, 15);
        assert_eq!(first, run(&Bayes::new(dims.clone()).unwrap(), f, 15));
        let (b, c) = (Bayes::new(dims.clone()).unwrap(), Bayes::new(dims).unwrap());
        let report = |b: &Bayes| {
            (
                b.predict(&first, &[55.0, 3.0]),
                b.max_expected_improvement(&first),
            )
        };
        assert_eq!(report(&b), report(&c));
    }

    #[test]
    fn never_repeats_and_exhausts() {
        let dims = vec![
            dim("a", &[1.0, 2.0, 3.0], false),
            dim("b", &[1.0, 10.0, 1e2, 1e3], true),
        ];
        let b = Bayes::new(dims).unwrap();
        let seen = run(&b, |p| p[0] * p[1].ln(), 100);
        assert_eq!(seen.len(), 12);
        for (i, o) in seen.iter().enumerate() {
            assert!(
                seen[..i].iter().all(|e| e.point != o.point),
                "repeated {:?}",
                o.point
            );
        }
        assert_eq!(b.suggest(&seen), None);
        assert_eq!(b.max_expected_improvement(&seen), 0.0);
        assert_eq!(b.max_expected_improvement(&[]), f64::INFINITY);
        assert_eq!(b.best(&[]), None);
    }

    #[test]
    fn snaps_off_grid_points() {
        let b = Bayes::new(vec![dim("ra", &[1.0, 2.0, 4.0, 8.0], true)]).unwrap();
        // 3 is nearer 4 than 2 in log scale; 1e9 snaps to 8, -1 to 1.
        let seen = [3.0, 1e9, -1.0].map(|x| obs(vec![x], x.clamp(0.0, 5.0), 0.1));
        assert_eq!(b.suggest(&seen), Some(vec![2.0]));
        assert_eq!(b.best(&seen), Some(vec![8.0]));
    }

    #[test]
    fn finds_an_inner_optimum_in_8() {
        let b = Bayes::new(vec![dim("x", &linear(30), false)]).unwrap();
        let f = |p: &[f64]| 20.0 * (-(p[0] - 187.0).powi(2) / (2.0 * 60.0 * 60.0)).exp() + 5.0;
        let top = linear(30).iter().map(|&x| f(&[x])).fold(f64::MIN, f64::max);
        let seen = run(&b, f, 8);
        let got = seen.iter().map(|o| o.score).fold(f64::MIN, f64::max);
        eprintln!("inner optimum: best of 8 = {got:.3}, optimum {top:.3}");
        assert!(got >= 0.95 * top, "best of 8 is {got}, optimum {top}");
        assert!(f(&b.best(&seen).unwrap()) >= 0.95 * top);
    }

    #[test]
    fn bo_beats_grid_at_equal_trials() {
        for objective in ["peak1d", "ridge2d"] {
            for budget in [8, 12] {
                let (bo, grid) = regret_benchmark(objective, budget, 30).unwrap();
                eprintln!("{objective}, {budget} trials, mean regret of 30 seeds: BO {bo:.3}, grid {grid:.3}");
                assert!(bo < grid, "{objective}/{budget}: BO {bo} vs grid {grid}");
            }
        }
        assert!(regret_benchmark("nope", 8, 1).is_err());
    }

    #[test]
    fn max_ei_shrinks_as_the_optimum_is_pinned() {
        let b = Bayes::new(vec![dim("slice", &linear(30), false)]).unwrap();
        let f = |p: &[f64]| 10.0 * (-(p[0] - 123.0).powi(2) / (2.0 * 50.0 * 50.0)).exp();
        let seen = run(&b, f, 12);
        let ei = |n: usize| b.max_expected_improvement(&seen[..n]);
        let eis: Vec<f64> = (3..=12).map(ei).collect();
        eprintln!("max EI after 3..=12 trials: {eis:.4?}");
        assert!(
            eis[9] < 0.01 * eis[0] && eis[9] < 0.01,
            "max EI did not shrink: {eis:?}"
        );
    }

    #[test]
    fn grid_order_is_coarse_to_fine_and_complete() {
        let order = grid_order(&[dim("a", &linear(5), false), dim("b", &linear(3), false)]);
        // Centre, the edge midpoints (row-major), then the corners.
        let head = [
            30.0, 20.0, 10.0, 20.0, 30.0, 10.0, 30.0, 30.0, 50.0, 20.0, 10.0, 10.0,
        ];
        assert_eq!(order[..6].concat(), head);
        let mut all = order.clone();
        all.sort_by(|x, y| x.partial_cmp(y).unwrap());
        all.dedup();
        assert_eq!((order.len(), all.len()), (15, 15));
    }
}
