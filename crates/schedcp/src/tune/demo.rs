//! The main job's bundled workload: a build-like batch of CPU jobs (many
//! short compile-sized jobs and a few long link-sized ones, the lab's
//! `batch` workload run on this host by the guest agent) sharing the
//! machine with a noisy neighbour that keeps every CPU busy. It is the
//! everyday case a scheduler setting decides: who gets the CPU when two
//! jobs want it.

use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::Error;
use crate::host::process::Group;
use crate::observe::signature;
use crate::observe::workload_profiles::{self, NewProfile, Target};
use crate::store::Store;

/// The jobs: 24 of 20 ms and 2 of 250 ms of calibrated CPU work.
pub const SPEC: &str = "batch:short=24,long=2,short_ms=20,long_ms=250";

/// The command profile that runs [`SPEC`] through the guest agent on this
/// host (a command, so per-workload knobs follow its processes).
pub fn profile(cfg: &Config) -> Result<String, Error> {
    let agent = crate::host::locate_agent(
        cfg.deploy.workload_agent.as_deref(),
        "deploy.workload_agent",
    )?;
    let argv = vec![
        agent.display().to_string(),
        "workload".to_string(),
        SPEC.to_string(),
    ];
    command_profile(
        cfg,
        "tune-demo",
        format!(
            "schedcp tune's bundled workload: {SPEC} (a build-like batch of CPU jobs), run on this host next to a noisy neighbour"
        ),
        argv,
        None,
        120,
    )
}

/// A command profile named `PREFIX-<hash of its command line and
/// directory>`, added unless it exists: profiles are immutable, so another
/// command (or the agent at another path) gets another name.
pub fn command_profile(
    cfg: &Config,
    prefix: &str,
    description: String,
    argv: Vec<String>,
    cwd: Option<std::path::PathBuf>,
    timeout_s: u64,
) -> Result<String, Error> {
    let mut key = argv.join("\0");
    if let Some(d) = &cwd {
        key.push('\0');
        key.push_str(&d.display().to_string());
    }
    let name = format!(
        "{prefix}-{}",
        &hex::encode(Sha256::digest(key.as_bytes()))[..8]
    );
    let mut store = Store::open_in(&cfg.state_dir())?;
    if workload_profiles::get(&store, &name).is_err() {
        workload_profiles::add(
            &mut store,
            NewProfile {
                name: name.clone(),
                description,
                target: Target::Command {
                    argv,
                    cwd,
                    timeout_s,
                },
                metric: None,
                direction: None,
            },
        )?;
    }
    Ok(name)
}

/// CPU-bound neighbour processes, one per CPU, for as long as this lives
/// (killed as a group when dropped, and with this process if it dies).
pub struct Neighbour {
    group: Group,
}

impl Neighbour {
    pub fn start(cpus: usize) -> Result<Neighbour, Error> {
        // One shell that forks cpus − 1 busy loops and is one itself.
        let script = format!(
            "i=1; while [ $i -lt {} ]; do (while :; do :; done) & i=$((i+1)); done; while :; do :; done",
            cpus.max(1)
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let group = Group::spawn(&mut cmd, true)
            .map_err(|e| Error::Setup(format!("starting the neighbour: {e}")))?;
        signature::exclude_group(group.id() as i32);
        Ok(Neighbour { group })
    }

    pub fn describe(&self) -> String {
        "a noisy neighbour: one busy-looping process per CPU, at the default priority".into()
    }
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        let pgid = self.group.id() as i32;
        let _ = self.group.reap();
        signature::include_group(pgid);
    }
}
