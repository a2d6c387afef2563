//! A `schedcp serve` for a benchmark: in this process, on a private state
//! directory and socket (and, if asked, a loopback HTTP port), with the
//! per-token limiter out of the way, and one observe token.

use std::sync::Arc;

use crate::api::auth::{self, Scope};
use crate::api::Services;
use crate::config::Config;
use crate::error::Error;
use crate::store::Store;

pub struct PrivateDaemon {
    /// Holds the state directory and socket; removed when dropped.
    _dir: tempfile::TempDir,
    pub cfg: Config,
    pub token: String,
    pub services: Arc<Services>,
}

impl PrivateDaemon {
    pub fn open(base: &Config, http_port: Option<u16>) -> Result<PrivateDaemon, Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.into()))?;
        let mut cfg = base.clone();
        cfg.state_dir = Some(dir.path().join("state"));
        cfg.api.socket = dir.path().join("bench.sock");
        cfg.api.http = http_port.map(|p| format!("127.0.0.1:{p}"));
        // The limiter is not what is measured.
        cfg.api.rate_per_s = 1_000_000;
        cfg.api.rate_burst = 1_000_000;
        let mut store = Store::open_in(&cfg.state_dir())?;
        let (_, token) = auth::create(&mut store, "bench", &[Scope::Observe], None)?;
        drop(store);
        let services = Services::open(cfg.clone())?;
        Ok(PrivateDaemon {
            _dir: dir,
            cfg,
            token,
            services,
        })
    }
}
