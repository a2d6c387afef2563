//! deploy — attaches only schedulers that carry a verifier's token, watches
//! them through a canary window, and rolls back the moment they hurt.
//!
//! - [`gate`]: admission. Token signature and expiry, object hash, sched_ext
//!   on this kernel, kernel release: all checked before anything changes.
//! - [`kpi`] and [`thresholds`]: what is measured in each window and when a
//!   value counts as a breach.
//! - [`deployer`]: the handle the daemon, API and CLI call; admission
//!   before anything changes, one deploy or rollback at a time.
//! - [`controller`]: one thread that owns the attached scheduler (the
//!   struct_ops link lives in the daemon, not in a detached child), polls
//!   its health, trips the circuit breaker and reconciles after a restart;
//!   `canary` is its window-by-window canary and passive checks.
//! - [`record`]: the deployments, their events and objects in the store,
//!   written before the kernel is touched, so [`controller`] can reconcile
//!   after a crash.
//! - `attachment`: what is attached and its health check.
//! - `learn`: each verdict as a result in the policy repository.
//!
//! What attaches is a BPF object (loaded by `schedcp-scx`, its struct_ops
//! link held by the daemon) or an external scx scheduler binary (a
//! supervised child, stopped with SIGINT); the breaker treats both alike.
//!
//! Every transition is also audited (through the API's audit log for
//! calls) and recorded in the policy repository as a `deploy` result.

mod attachment;
mod canary;
pub mod controller;
pub mod deployer;
pub mod gate;
pub mod kpi;
mod learn;
pub mod record;
pub mod thresholds;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use deployer::Deployer;
pub use record::{DeployEvent, DeployState, Deployment, Timings};
pub use thresholds::Thresholds;

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
            crate::verify::token::TrustedKey::from_paserk(k)
                .map_err(|e| anyhow::anyhow!("deploy.trusted_keys: {e}"))?;
        }
        Ok(())
    }
}

/// A deploy request as every door (CLI, MCP, REST) takes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The deployment token `verify` issued (`v4.public.…`).
    pub token: String,
    /// The BPF object (or, for an external scheduler, its binary), base64.
    /// Without it, what the verifier kept on this machine under the
    /// token's hash is used.
    #[serde(default)]
    pub object_base64: Option<String>,
    /// Canary length, seconds (default: deploy.canary_s).
    #[serde(default)]
    #[schemars(range(min = 1, max = 86400))]
    pub canary_s: Option<u64>,
    /// Threshold overrides, `NAME=VALUE` (see `schedcp deploy --help`).
    #[serde(default)]
    pub kpi: Vec<String>,
    /// Workload run in each canary window: a workload profile's name or a
    /// built-in lab workload spec (`batch:short=40`). Default: deploy.workload.
    #[serde(default)]
    pub workload: Option<String>,
}

/// What `status` reports.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Status {
    /// `/sys/kernel/sched_ext/state`, or none without sched_ext.
    pub sched_ext_state: Option<String>,
    /// The attached scheduler's ops name, as the kernel shows it.
    pub kernel_ops: Option<String>,
    /// The deployment the node runs (none: the kernel's default scheduler).
    pub current: Option<Deployment>,
    /// Where a rollback would go: the current deployment's last known-good.
    pub last_known_good: Option<String>,
    /// True while a deploy or rollback is in progress.
    pub busy: bool,
}

pub(crate) fn decode_object(b64: &str) -> Result<Vec<u8>, Error> {
    use base64::Engine as _;
    if b64.len() > MAX_BINARY_BYTES * 4 / 3 + 8 {
        return Err(Error::Input(format!(
            "object_base64 is {} bytes; BPF objects up to {MAX_OBJECT_BYTES} bytes and scheduler binaries up to {MAX_BINARY_BYTES} bytes are accepted",
            b64.len()
        )));
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| Error::Input(format!("object_base64 is not valid base64: {e}")))
}
