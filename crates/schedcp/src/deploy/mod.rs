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
pub mod command;
pub mod controller;
pub mod deployer;
pub mod gate;
pub mod kpi;
mod learn;
pub mod record;
pub mod thresholds;

use serde::{Deserialize, Serialize};

pub use crate::config::deploy::{
    DeployConfig, Thresholds, MAX_BINARY_BYTES, MAX_CANARY_S, MAX_OBJECT_BYTES,
};
pub use command::{EventSink, Progress};
pub use deployer::Deployer;
pub use record::{DeployEvent, DeployState, Deployment, Timings};

use crate::error::Error;

/// A deploy request as every door (CLI, MCP, REST) takes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The deployment token `verify` issued (`v4.public.…`), for a change
    /// that attaches a scheduler.
    #[serde(default)]
    pub token: Option<String>,
    /// Knob assignments applied with the change (see `schedcp knob list`).
    #[serde(default)]
    pub knobs: Vec<crate::knobs::Assignment>,
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
