//! The one process supervisor: a child that leads its own process group,
//! waited for exactly, and killed as a group — at its deadline, when the
//! caller gives up, or when the handle is dropped — so that helpers it
//! forked (clang's `-cc1`, a shell's children, `make`'s compilers) never
//! outlive it.
//!
//! The leader is never reaped before the group is killed: while it is a
//! zombie its pid, which is also the group id, cannot be reused, so a
//! `killpg` can never hit an unrelated group.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// A child process and its process group.
pub struct Group {
    child: Child,
    pgid: Pid,
    status: Option<ExitStatus>,
    usage: Option<Usage>,
}

/// What the leader and every descendant it waited for used, as `wait4`
/// reports it when the leader is reaped: the workload's own totals, not
/// the machine's.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub user_s: f64,
    pub sys_s: f64,
    /// Peak resident set of the largest single process, KiB.
    pub max_rss_kib: u64,
    pub minor_faults: u64,
    pub major_faults: u64,
    /// Switches because a task blocked or slept (it waited for something).
    pub voluntary_switches: u64,
    /// Switches because a task was preempted (it wanted to keep running).
    pub involuntary_switches: u64,
    /// Block I/O, in 512-byte units (page-cache hits do not count).
    pub blocks_in: u64,
    pub blocks_out: u64,
}

impl Usage {
    fn from_rusage(r: &libc::rusage) -> Usage {
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let n = |v: libc::c_long| v.max(0) as u64;
        Usage {
            user_s: secs(r.ru_utime),
            sys_s: secs(r.ru_stime),
            max_rss_kib: n(r.ru_maxrss),
            minor_faults: n(r.ru_minflt),
            major_faults: n(r.ru_majflt),
            voluntary_switches: n(r.ru_nvcsw),
            involuntary_switches: n(r.ru_nivcsw),
            blocks_in: n(r.ru_inblock),
            blocks_out: n(r.ru_oublock),
        }
    }
}

impl Group {
    /// Start `cmd` as the leader of a new process group. With `pdeathsig`
    /// the child is SIGKILLed when the thread that started it dies (a
    /// daemon stopping mid-run leaves no VM or compiler behind). Whatever
    /// `pre_exec` hooks the caller set still run.
    pub fn spawn(cmd: &mut Command, pdeathsig: bool) -> std::io::Result<Group> {
        cmd.process_group(0);
        if pdeathsig {
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn()?;
        let pgid = Pid::from_raw(child.id() as i32);
        Ok(Group {
            child,
            pgid,
            status: None,
            usage: None,
        })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child, e.g. to take its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Whether the leader exited, without reaping it.
    pub fn leader_exited(&self) -> nix::Result<bool> {
        if self.status.is_some() {
            return Ok(true);
        }
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        Ok(!matches!(
            waitid(Id::Pid(self.pgid), flags)?,
            WaitStatus::StillAlive
        ))
    }

    /// Send `sig` to every process of the group.
    pub fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            let _ = killpg(self.pgid, sig);
        }
    }

    pub fn kill_all(&self) {
        self.signal(Signal::SIGKILL);
    }

    /// Block until the leader exits or `deadline` passes, without polling:
    /// the wait returns the moment the child exits (timings are exact, not
    /// rounded to a poll interval). At the deadline the group gets SIGINT
    /// and, `grace` later, SIGKILL (with a zero grace, SIGKILL at once).
    /// Then the rest of the group is killed and the leader reaped.
    /// `None`: the deadline passed.
    pub fn wait_until(&mut self, deadline: Instant, grace: Duration) -> Result<Option<ExitStatus>> {
        let pgid = self.pgid;
        let (exited_tx, exited_rx) = mpsc::channel::<()>();
        let job = super::interrupt::job_flag();
        let watchdog = thread::spawn(move || {
            // The deadline, or the API job this work is for cancelled
            // (looked at every 100 ms).
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let slice = if job.is_some() {
                    left.min(Duration::from_millis(100))
                } else {
                    left
                };
                match exited_rx.recv_timeout(slice) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return false,
                }
                let cancelled = job
                    .as_ref()
                    .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst));
                if cancelled || Instant::now() >= deadline {
                    break;
                }
            }
            if !grace.is_zero() {
                let _ = killpg(pgid, Signal::SIGINT);
                if !matches!(
                    exited_rx.recv_timeout(grace),
                    Err(mpsc::RecvTimeoutError::Timeout)
                ) {
                    return true;
                }
            }
            let _ = killpg(pgid, Signal::SIGKILL);
            true
        });
        let waited = loop {
            match waitid(Id::Pid(pgid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Err(Errno::EINTR) => continue,
                other => break other,
            }
        };
        let _ = exited_tx.send(());
        let fired = watchdog.join().unwrap_or(false);
        waited.context("waiting for a child process")?;
        let status = self.reap()?;
        Ok((!fired).then_some(status))
    }

    /// Wait until the leader exits, `deadline` passes, or `tick` (called
    /// every `every`) returns false; then kill the group and reap it.
    /// `None`: stopped by the deadline or by `tick`.
    pub fn poll_until(
        &mut self,
        deadline: Instant,
        every: Duration,
        tick: &mut dyn FnMut() -> bool,
    ) -> Result<Option<ExitStatus>> {
        loop {
            if !tick() || super::interrupt::job_cancelled() {
                self.reap()?;
                return Ok(None);
            }
            if self.leader_exited()? {
                return Ok(Some(self.reap()?));
            }
            if Instant::now() >= deadline {
                self.reap()?;
                return Ok(None);
            }
            thread::sleep(every);
        }
    }

    /// Kill what is left of the group, then reap the leader (with
    /// `wait4`, to keep its [`Usage`]).
    pub fn reap(&mut self) -> std::io::Result<ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        if let Some(s) = self.status {
            return Ok(s);
        }
        self.kill_all();
        let mut raw = 0;
        // SAFETY: an all-zero rusage is valid; wait4 fills it.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: valid pointers to locals; the pid is our unreaped child.
            let r = unsafe { libc::wait4(self.pgid.as_raw(), &mut raw, 0, &mut ru) };
            if r >= 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let status = ExitStatus::from_raw(raw);
        self.status = Some(status);
        self.usage = Some(Usage::from_rusage(&ru));
        Ok(status)
    }

    /// The reaped leader's [`Usage`] (none before [`Self::reap`]).
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

impl Drop for Group {
    /// On an early return or a panic nothing may outlive the supervision.
    fn drop(&mut self) {
        let _ = self.reap();
    }
}

pub struct Finished {
    /// `None` when the child was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Finished {
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Run `cmd` to completion or kill its group at `timeout`, capturing each
/// output stream up to `max_output` bytes (the rest is drained and dropped,
/// so a chatty child can neither block on a full pipe nor exhaust our
/// memory).
pub fn run_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
    max_output: usize,
) -> Result<Finished> {
    let start = Instant::now();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut group =
        Group::spawn(cmd, false).with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let out = drain(group.child_mut().stdout.take(), max_output);
    let err = drain(group.child_mut().stderr.take(), max_output);
    let status = group.wait_until(start + timeout, Duration::ZERO)?;
    Ok(Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    })
}

/// Read `src` to its end on a thread, keeping the first `max` bytes.
pub fn drain<R: Read + Send + 'static>(src: Option<R>, max: usize) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let Some(mut src) = src else {
            return String::new();
        };
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = src.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = max.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_at_deadline() {
        let f = run_with_timeout(
            Command::new("sleep").arg("5"),
            Duration::from_millis(200),
            1024,
        )
        .unwrap();
        assert!(f.timed_out());
        assert!(f.elapsed < Duration::from_secs(3));
    }

    #[test]
    fn kills_grandchildren_too() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("alive");
        let script = format!("(sleep 1; touch {}) & wait", marker.display());
        let f = run_with_timeout(
            Command::new("sh").args(["-c", &script]),
            Duration::from_millis(200),
            1024,
        )
        .unwrap();
        assert!(f.timed_out());
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            !marker.exists(),
            "the backgrounded grandchild survived the kill"
        );
    }

    #[test]
    fn caps_output() {
        let f = run_with_timeout(
            Command::new("sh").args(["-c", "yes | head -c 100000"]),
            Duration::from_secs(10),
            100,
        )
        .unwrap();
        assert!(f.success());
        assert_eq!(f.stdout.len(), 100);
    }

    #[test]
    fn leftovers_die_when_the_leader_exits() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("alive");
        let script = format!("(sleep 1; touch {}) & exit 0", marker.display());
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]);
        let mut g = Group::spawn(&mut cmd, false).unwrap();
        let st = g
            .wait_until(Instant::now() + Duration::from_secs(5), Duration::ZERO)
            .unwrap();
        assert!(st.unwrap().success());
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!marker.exists(), "a background job outlived its group");
    }

    #[test]
    fn the_grace_signal_lets_a_child_stop_cleanly() {
        // A shell that exits 7 on SIGINT: the grace path delivers it first.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap 'exit 7' INT; while :; do sleep 0.05; done"]);
        let mut g = Group::spawn(&mut cmd, false).unwrap();
        let t = Instant::now();
        let st = g
            .wait_until(
                Instant::now() + Duration::from_millis(300),
                Duration::from_secs(5),
            )
            .unwrap();
        assert!(st.is_none(), "the deadline passed");
        assert!(t.elapsed() < Duration::from_secs(4), "SIGINT was enough");
    }

    #[test]
    fn polling_stops_when_the_caller_says_so() {
        let mut cmd = Command::new("sleep");
        cmd.arg("10");
        let mut g = Group::spawn(&mut cmd, true).unwrap();
        let mut n = 0;
        let st = g
            .poll_until(
                Instant::now() + Duration::from_secs(10),
                Duration::from_millis(10),
                &mut || {
                    n += 1;
                    n < 3
                },
            )
            .unwrap();
        assert!(st.is_none());
        assert!(g.leader_exited().unwrap());
    }
}
