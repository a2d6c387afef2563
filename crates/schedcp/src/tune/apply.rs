//! Deploy targets for a proven winner. The daemon is the usual one (the
//! CLI passes it); [`InProcess`] runs the deploy controller inside this
//! process, for the main job when no daemon runs: the same admission,
//! canary, breaker and rollback, held only while this process lives.

use std::sync::Arc;

use super::engine::Applier;
use crate::config::Config;
use crate::deploy::deployer::Deployer;
use crate::deploy::{DeployRequest, Deployment};
use crate::error::Error;
use crate::knobs::Assignment;

pub struct InProcess {
    deployer: Arc<Deployer>,
    /// Started here (stopped on drop), or the daemon's own.
    owned: bool,
}

impl InProcess {
    /// Start the controller (it reconciles the store first, like the
    /// daemon does at start).
    pub fn start(cfg: &Config) -> Result<InProcess, Error> {
        Ok(InProcess {
            deployer: Deployer::start(cfg.clone(), None)?,
            owned: true,
        })
    }

    /// The daemon's running controller (continuous mode): not stopped on drop.
    pub fn shared(deployer: Arc<Deployer>) -> InProcess {
        InProcess {
            deployer,
            owned: false,
        }
    }

    pub fn rollback(&self, reason: &str) -> Result<Deployment, Error> {
        self.deployer.rollback(reason)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if self.owned {
            self.deployer.stop();
        }
    }
}

impl Applier for InProcess {
    fn describe(&self) -> String {
        if self.owned {
            "an in-process deploy controller".into()
        } else {
            "the daemon's deploy controller".into()
        }
    }

    fn apply(
        &self,
        knobs: Vec<Assignment>,
        canary_s: u64,
        workload: &str,
    ) -> Result<Deployment, Error> {
        let req = DeployRequest {
            token: None,
            knobs,
            object_base64: None,
            canary_s: Some(canary_s),
            kpi: vec![],
            workload: Some(workload.to_string()),
        };
        self.deployer.deploy(&req, Box::new(|_| {}))
    }
}
