//! hackbench (Debian rt-tests): groups of processes passing messages over
//! sockets, which is wakeups and context switches as fast as the machine
//! goes — the events the scheduler probes pay for.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::tools;
use crate::error::Error;

#[derive(Debug, Clone, Serialize)]
pub struct Hackbench {
    #[serde(skip)]
    path: PathBuf,
    /// Groups of 20 processes (10 senders, 10 receivers).
    pub groups: u32,
    /// Messages each sender sends to each receiver.
    pub loops: u32,
}

impl Hackbench {
    pub fn new(groups: u32, loops: u32) -> Result<Hackbench, Error> {
        Ok(Hackbench {
            path: tools::find("hackbench", "rt-tests")?,
            groups,
            loops,
        })
    }

    pub fn command_line(&self) -> String {
        format!("hackbench -g {} -l {}", self.groups, self.loops)
    }

    /// Runs it to completion; its wall time.
    pub fn run(&self) -> Result<Duration, Error> {
        let t0 = Instant::now();
        let out = Command::new(&self.path)
            .args([
                "-g",
                &self.groups.to_string(),
                "-l",
                &self.loops.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| {
                Error::Internal(
                    anyhow::Error::new(e).context(format!("running {}", self.path.display())),
                )
            })?;
        if !out.status.success() {
            return Err(Error::Internal(anyhow::anyhow!(
                "{} failed ({}): {}",
                self.command_line(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(t0.elapsed())
    }
}
