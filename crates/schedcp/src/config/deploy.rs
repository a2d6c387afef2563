//! `[deploy]`: canary and breaker defaults, trusted verifier keys, and the
//! KPI thresholds a canary is judged by.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Largest canary: long enough for any realistic soak, short enough that a
/// forgotten request does not hold the node for days.
pub const MAX_CANARY_S: u64 = 24 * 3600;
/// Largest BPF object accepted for deployment.
pub const MAX_OBJECT_BYTES: usize = 4 << 20;
/// Largest external scheduler binary accepted for deployment.
pub const MAX_BINARY_BYTES: usize = 32 << 20;

/// `[deploy]` in the config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// Canary length when the request does not give one, seconds.
    pub canary_s: u64,
    /// One KPI window, seconds (without a workload; with one, a window is
    /// one run of it).
    pub window_s: u64,
    /// Once active, measure a passive KPI window (no workload) this often,
    /// seconds; 0 turns active monitoring of KPIs off (health is still
    /// polled).
    pub active_check_s: u64,
    /// How often the scheduler's health (sched_ext state, exit record,
    /// process) is polled, milliseconds: the bound on detection time.
    pub health_poll_ms: u64,
    /// Default thresholds; a request can override each.
    pub thresholds: Thresholds,
    /// Public keys (PASERK `k4.public.…`) of other machines whose tokens
    /// this one accepts, e.g. the lab host that verifies for a fleet.
    pub trusted_keys: Vec<String>,
    /// Default workload for canary windows: a workload profile's name or a
    /// built-in lab workload spec; none means passive KPIs only.
    pub workload: Option<String>,
    /// The guest agent binary, which runs built-in workloads; default:
    /// next to the schedcp binary.
    pub workload_agent: Option<PathBuf>,
    /// How long an external scheduler binary may take from start to
    /// `enabled`, seconds.
    pub external_start_s: u64,
    /// How often an active external scheduler whose process died is
    /// restarted before the breaker rolls it back (never during a canary).
    pub external_max_restarts: u32,
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            canary_s: 60,
            window_s: 5,
            active_check_s: 60,
            health_poll_ms: 50,
            thresholds: Thresholds::default(),
            trusted_keys: Vec::new(),
            workload: None,
            workload_agent: None,
            external_start_s: 60,
            external_max_restarts: 2,
        }
    }
}

impl DeployConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1..=MAX_CANARY_S).contains(&self.canary_s) {
            anyhow::bail!("deploy.canary_s must be 1..={MAX_CANARY_S}");
        }
        if !(1..=600).contains(&self.window_s) {
            anyhow::bail!("deploy.window_s must be 1..=600");
        }
        if !(10..=5000).contains(&self.health_poll_ms) {
            anyhow::bail!("deploy.health_poll_ms must be 10..=5000");
        }
        if !(1..=600).contains(&self.external_start_s) {
            anyhow::bail!("deploy.external_start_s must be 1..=600");
        }
        if self.external_max_restarts > 100 {
            anyhow::bail!("deploy.external_max_restarts must be 0..=100");
        }
        self.thresholds
            .validate()
            .map_err(|e| anyhow::anyhow!("deploy.thresholds: {e}"))?;
        for k in &self.trusted_keys {
            // The same parse the deploy gate does when it admits a token.
            pasetors::keys::AsymmetricPublicKey::<pasetors::version4::V4>::try_from(k.trim())
                .map_err(|_| {
                    anyhow::anyhow!(
                        "deploy.trusted_keys: {:?} is not a k4.public PASERK (the content of another machine's token public key file)",
                        k.get(..24).unwrap_or(k)
                    )
                })?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Breach when run-queue p99 exceeds the baseline's by this factor ...
    pub runq_p99_ratio: f64,
    /// ... and by at least this many microseconds.
    pub runq_p99_min_increase_us: f64,
    /// Judge run-queue p99 only over windows with at least this many
    /// samples on both sides: on an idle machine the p99 of a few hundred
    /// wakeups is a handful of outliers, not a KPI.
    pub runq_min_samples: u64,
    /// Breach when PSI cpu "some" rises by more than this many percentage points.
    pub psi_cpu_some_increase_pct: f64,
    /// Breach when the workload's metric is worse than the baseline's by more than this percent.
    pub workload_regression_pct: f64,
    /// Breach when more than this many tasks are rejected by sched_ext in a window.
    pub nr_rejected_max: u64,
    /// Trip the breaker when KPIs breach in this many consecutive windows:
    /// one noisy window is not a regression. Health failures (error exit,
    /// watchdog, a dead loader) trip at once regardless.
    pub consecutive_windows: u32,
}

impl Default for Thresholds {
    /// Safe defaults: loose enough that a sound scheduler on a noisy machine
    /// passes, tight enough that one which starves tasks does not.
    fn default() -> Self {
        Thresholds {
            runq_p99_ratio: 4.0,
            runq_p99_min_increase_us: 5_000.0,
            runq_min_samples: 2_000,
            psi_cpu_some_increase_pct: 30.0,
            workload_regression_pct: 25.0,
            nr_rejected_max: 0,
            consecutive_windows: 2,
        }
    }
}

/// The names `--kpi NAME=VALUE` accepts.
pub const NAMES: &[&str] = &[
    "runq_p99_ratio",
    "runq_p99_min_increase_us",
    "runq_min_samples",
    "psi_cpu_some_increase_pct",
    "workload_regression_pct",
    "nr_rejected_max",
    "consecutive_windows",
];

impl Thresholds {
    /// Apply one `NAME=VALUE` override; a refused one changes nothing.
    pub fn set(&mut self, spec: &str) -> Result<(), Error> {
        let mut next = self.clone();
        next.apply(spec)?;
        next.validate()?;
        *self = next;
        Ok(())
    }

    fn apply(&mut self, spec: &str) -> Result<(), Error> {
        let (name, value) = spec.split_once('=').ok_or_else(|| {
            Error::Input(format!(
                "KPI threshold '{spec}' is not NAME=VALUE; names: {}",
                NAMES.join(", ")
            ))
        })?;
        let v: f64 = value.trim().parse().map_err(|_| {
            Error::Input(format!("KPI threshold {name}: '{value}' is not a number"))
        })?;
        let name = name.trim();
        match name {
            "runq_p99_ratio" => self.runq_p99_ratio = v,
            "runq_p99_min_increase_us" => self.runq_p99_min_increase_us = v,
            "runq_min_samples" => self.runq_min_samples = v as u64,
            "psi_cpu_some_increase_pct" => self.psi_cpu_some_increase_pct = v,
            "workload_regression_pct" => self.workload_regression_pct = v,
            "nr_rejected_max" => self.nr_rejected_max = v as u64,
            "consecutive_windows" => {
                if v.fract() != 0.0 || !(1.0..=10.0).contains(&v) {
                    return Err(Error::Input(format!(
                        "consecutive_windows must be a whole number 1..=10, got {value}"
                    )));
                }
                self.consecutive_windows = v as u32
            }
            other => {
                return Err(Error::Input(format!(
                    "unknown KPI threshold '{other}'; known: {}",
                    NAMES.join(", ")
                )))
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: String| Err(Error::Input(what));
        if !(self.runq_p99_ratio.is_finite() && (1.0..=1000.0).contains(&self.runq_p99_ratio)) {
            return bad(format!(
                "runq_p99_ratio must be between 1 and 1000, got {}",
                self.runq_p99_ratio
            ));
        }
        if !(self.runq_p99_min_increase_us.is_finite()
            && (0.0..=60e6).contains(&self.runq_p99_min_increase_us))
        {
            return bad(format!(
                "runq_p99_min_increase_us must be between 0 and 60000000, got {}",
                self.runq_p99_min_increase_us
            ));
        }
        if !(self.psi_cpu_some_increase_pct.is_finite()
            && (0.0..=100.0).contains(&self.psi_cpu_some_increase_pct))
        {
            return bad(format!(
                "psi_cpu_some_increase_pct must be between 0 and 100, got {}",
                self.psi_cpu_some_increase_pct
            ));
        }
        if !(self.workload_regression_pct.is_finite()
            && (0.0..=1000.0).contains(&self.workload_regression_pct))
        {
            return bad(format!(
                "workload_regression_pct must be between 0 and 1000, got {}",
                self.workload_regression_pct
            ));
        }
        if !(1..=10).contains(&self.consecutive_windows) {
            return bad(format!(
                "consecutive_windows must be 1..=10, got {}",
                self.consecutive_windows
            ));
        }
        Ok(())
    }
}
