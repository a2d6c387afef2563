//! `[tune]`: the decision engine's continuous mode in the daemon.

use serde::{Deserialize, Serialize};

/// `[tune]` in the config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TuneConfig {
    /// Continuous mode: off unless a profile is named.
    pub continuous: Option<ContinuousConfig>,
}

/// `[tune.continuous]`: the daemon samples `profile` every `interval_s`;
/// when its signature drifts from the last tune's or its metric degrades,
/// it re-tunes within budget and applies a proven winner through deploy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContinuousConfig {
    /// The workload profile to keep tuned.
    pub profile: String,
    /// Seconds between samples (one run of the workload each).
    pub interval_s: u64,
    /// At most one applied change per this many seconds.
    pub min_change_interval_s: u64,
    /// Re-tune when the metric is this much worse (%) than the last tune's
    /// baseline, even without drift.
    pub degrade_pct: f64,
    /// Budget of each re-tune.
    pub budget_trials: usize,
    pub budget_s: u64,
    /// Canary of an applied change, seconds.
    pub canary_s: u64,
    /// Also trial schedulers and refused knobs in the lab VM (evidence for
    /// the library; never applied here).
    pub lab: bool,
}

impl Default for ContinuousConfig {
    fn default() -> Self {
        ContinuousConfig {
            profile: String::new(),
            interval_s: 3600,
            min_change_interval_s: 6 * 3600,
            degrade_pct: 10.0,
            budget_trials: 8,
            budget_s: 900,
            canary_s: 30,
            lab: true,
        }
    }
}

impl TuneConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        let Some(c) = &self.continuous else {
            return Ok(());
        };
        if c.profile.trim().is_empty() {
            anyhow::bail!("[tune.continuous] needs profile = \"<workload profile>\"");
        }
        if !(5..=7 * 24 * 3600).contains(&c.interval_s) {
            anyhow::bail!(
                "[tune.continuous] interval_s must be 5..=604800, got {}",
                c.interval_s
            );
        }
        if !(c.degrade_pct > 0.0 && c.degrade_pct.is_finite()) {
            anyhow::bail!(
                "[tune.continuous] degrade_pct must be a positive percentage, got {}",
                c.degrade_pct
            );
        }
        if !(1..=200).contains(&c.budget_trials) || !(10..=24 * 3600).contains(&c.budget_s) {
            anyhow::bail!(
                "[tune.continuous] budget_trials must be 1..=200 and budget_s 10..=86400"
            );
        }
        if !(1..=3600).contains(&c.canary_s) {
            anyhow::bail!(
                "[tune.continuous] canary_s must be 1..=3600, got {}",
                c.canary_s
            );
        }
        Ok(())
    }
}
