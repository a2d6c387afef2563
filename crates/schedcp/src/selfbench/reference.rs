//! libbpf-tools' runqlat (Debian libbpf-tools) as the reference: started as
//! a child process, its programs found in the kernel's list, stopped with
//! SIGINT as a user would.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use libbpf_rs::query::LinkInfoIter;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::tools;
use crate::error::Error;
use crate::observe::probes::bpf_stats::{self, Cost};

/// runqlat's programs as the kernel names them (15 characters kept): the
/// tp_btf flavour it uses where BTF tracepoints work, and the raw_tp one.
const PROGRAM_NAMES: &[&str] = &[
    "sched_wakeup",
    "sched_wakeup_ne",
    "sched_switch",
    "handle_sched_wa",
    "handle_sched_sw",
];
/// It attaches one flavour of wakeup, wakeup_new and switch.
const PROGRAMS: usize = 3;
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where runqlat is, or a setup error naming its package.
pub fn locate() -> Result<PathBuf, Error> {
    tools::find("runqlat", "libbpf-tools")
}

/// A running runqlat whose programs are attached.
pub struct Runqlat {
    child: Child,
    prog_ids: BTreeSet<u32>,
}

impl Runqlat {
    /// Starts `path` and waits until its three programs are loaded and
    /// attached (each has a link).
    pub fn start(path: &std::path::Path) -> Result<Runqlat, Error> {
        let before: BTreeSet<u32> = bpf_stats::programs().iter().map(|p| p.id).collect();
        // One summary after 99 s, or at SIGINT, which is what we send.
        let child = Command::new(path)
            .args(["99", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::Internal(
                    anyhow::Error::new(e).context(format!("starting {}", path.display())),
                )
            })?;
        let mut me = Runqlat {
            child,
            prog_ids: BTreeSet::new(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = me.child.try_wait().map_err(internal)? {
                return Err(Error::Internal(anyhow::anyhow!(
                    "{} exited ({status}) before attaching: {}",
                    path.display(),
                    me.stderr()
                )));
            }
            let ids: BTreeSet<u32> = bpf_stats::programs()
                .into_iter()
                .filter(|p| !before.contains(&p.id) && PROGRAM_NAMES.contains(&p.name.as_str()))
                .map(|p| p.id)
                .collect();
            let linked: BTreeSet<u32> = LinkInfoIter::default().map(|l| l.prog_id).collect();
            if ids.len() == PROGRAMS && ids.is_subset(&linked) {
                me.prog_ids = ids;
                return Ok(me);
            }
            if Instant::now() > deadline {
                return Err(Error::Internal(anyhow::anyhow!(
                    "{} did not attach its {PROGRAMS} programs within {} s (found {} of them)",
                    path.display(),
                    READY_TIMEOUT.as_secs(),
                    ids.len()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its programs' statistics so far.
    pub fn cost(&self) -> Cost {
        Cost::of(bpf_stats::programs_by_id(&self.prog_ids))
    }

    /// SIGINT, as Ctrl-C would, and wait for it to print and exit.
    pub fn stop(mut self) -> Result<(), Error> {
        let pid = Pid::from_raw(self.child.id() as i32);
        kill(pid, Signal::SIGINT).map_err(internal)?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().map_err(internal)? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(Error::Internal(anyhow::anyhow!(
                        "runqlat exited with {status}: {}",
                        self.stderr()
                    )))
                };
            }
            if Instant::now() > deadline {
                return Err(Error::Internal(anyhow::anyhow!(
                    "runqlat did not exit within {} s of SIGINT",
                    STOP_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s.trim().to_string()
    }
}

impl Drop for Runqlat {
    /// On error paths: never leave it running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Internal(anyhow::Error::new(e))
}
