//! `[policies]`: where the scheduler library lives and how it curates.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Significant improvements a deployed version needs before promotion.
pub const DEFAULT_MIN_IMPROVEMENTS: usize = 2;

/// `[policies]` in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoliciesConfig {
    /// `sqlite` (the embedded store in state_dir) or `postgres`.
    pub backend: Backend,
    /// Connection URL for `backend = "postgres"`, e.g.
    /// `postgresql://schedcp@db.internal/schedcp`.
    pub postgres_url: Option<String>,
    /// Where the all-MiniLM-L6-v2 files are; default `<cache_dir>/models/all-MiniLM-L6-v2`.
    pub model_dir: Option<PathBuf>,
    /// Significant deploy/tune improvements a deployed version needs to be promoted.
    pub promotion_min_improvements: usize,
    /// Per API token without the admin scope: policy versions it may add,
    /// MiB of their metadata and source, and results it may record.
    pub quota_versions: u64,
    pub quota_mib: u64,
    pub quota_results: u64,
    /// Verification reports kept per version: the newest this many, and the
    /// newest that passed.
    pub keep_verify_reports: usize,
}

impl Default for PoliciesConfig {
    fn default() -> Self {
        PoliciesConfig {
            backend: Backend::Sqlite,
            postgres_url: None,
            model_dir: None,
            promotion_min_improvements: DEFAULT_MIN_IMPROVEMENTS,
            quota_versions: 64,
            quota_mib: 16,
            quota_results: 1024,
            keep_verify_reports: 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl PoliciesConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.backend == Backend::Postgres && self.postgres_url.is_none() {
            anyhow::bail!("[policies] backend = \"postgres\" needs postgres_url");
        }
        if !(1..=100).contains(&self.promotion_min_improvements) {
            anyhow::bail!("[policies] promotion_min_improvements must be 1..=100");
        }
        for (key, v) in [
            ("quota_versions", self.quota_versions),
            ("quota_mib", self.quota_mib),
            ("quota_results", self.quota_results),
        ] {
            if !(1..=1_000_000).contains(&v) {
                anyhow::bail!("[policies] {key} = {v}: use 1..=1000000");
            }
        }
        if !(1..=1000).contains(&self.keep_verify_reports) {
            anyhow::bail!(
                "[policies] keep_verify_reports = {}: use 1..=1000",
                self.keep_verify_reports
            );
        }
        Ok(())
    }
}
