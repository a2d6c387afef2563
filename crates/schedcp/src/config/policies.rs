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
}

impl Default for PoliciesConfig {
    fn default() -> Self {
        PoliciesConfig {
            backend: Backend::Sqlite,
            postgres_url: None,
            model_dir: None,
            promotion_min_improvements: DEFAULT_MIN_IMPROVEMENTS,
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
        Ok(())
    }
}
