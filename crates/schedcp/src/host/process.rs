//! Running a child process with a wall-clock limit and bounded output.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

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

/// Run `cmd` to completion or kill it after `timeout`. The child leads its
/// own process group and the whole group is killed at the deadline, so
/// helpers it forked (clang's `-cc1`, a shell's children) die with it. Each output stream is
/// capped at `max_output` bytes (the rest is drained and dropped, so a chatty
/// child can neither block on a full pipe nor exhaust our memory).
pub fn run_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
    max_output: usize,
) -> Result<Finished> {
    let start = Instant::now();
    // SAFETY: setpgid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setpgid(0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let out = drain(child.stdout.take(), max_output);
    let err = drain(child.stderr.take(), max_output);
    let status = wait_deadline(&mut child, start + timeout)?;
    Ok(Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    })
}

/// Wait for `child` until `deadline`; kill its group then. `None` means killed.
fn wait_deadline(child: &mut Child, deadline: Instant) -> Result<Option<ExitStatus>> {
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            kill_group(child);
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL the child's process group (it is its own group leader when
/// started by [`run_with_timeout`]), then reap the child.
fn kill_group(child: &mut Child) {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: plain syscall on a pid we spawned; a negative pid addresses the group.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.kill();
    let _ = child.wait();
}

fn drain<R: Read + Send + 'static>(src: Option<R>, max: usize) -> thread::JoinHandle<String> {
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
}
