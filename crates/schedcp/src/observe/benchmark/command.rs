//! Timing one run of a host command, through the one supervisor
//! ([`crate::host::process::Group`]): the exit is awaited without polling
//! (a poll interval would quantize every wall time), the command runs in its
//! own process group, and the whole group is killed on timeout and after
//! exit, so e.g. `make`'s compilers never run into the next run.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::Signal;

use crate::error::Error;
use crate::host::process::Group;

/// How much of the command's stderr is kept (the end of it) to explain a failure.
const STDERR_TAIL_BYTES: usize = 4096;

/// How long to wait for stderr to close after the command's group is gone;
/// a daemonized grandchild that escaped the group may hold it open forever.
const STDERR_GRACE: Duration = Duration::from_secs(1);

/// One timed run.
#[derive(Debug)]
pub struct Timed {
    /// Start to exit of the command.
    pub wall: Duration,
    /// `Ok` when it exited 0; otherwise why it failed.
    pub outcome: Result<(), String>,
    /// What the command's process tree used.
    pub usage: Option<crate::host::process::Usage>,
}

/// Run `argv` (no shell) in `cwd`, stdout discarded, and time it. A run
/// that outlives `timeout` is killed and fails. `Err` only when the program
/// cannot be started at all.
pub fn time_command(
    argv: &[String],
    cwd: Option<&Path>,
    timeout: Duration,
) -> Result<Timed, Error> {
    time_command_with(argv, cwd, timeout, None)
}

/// [`time_command`], with a knob change set's per-workload attributes and
/// cgroup applied to the child before it execs (so everything it starts
/// inherits them).
pub fn time_command_with(
    argv: &[String],
    cwd: Option<&Path>,
    timeout: Duration,
    hook: Option<&crate::knobs::SpawnHook>,
) -> Result<Timed, Error> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::Input("the profile's command is empty".into()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        // Writing to /dev/null costs the least and the same every run.
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    if let Some(h) = hook {
        h.install(&mut cmd);
    }
    let start = Instant::now();
    let mut group = Group::spawn(&mut cmd, false).map_err(|e| {
        Error::Input(format!(
            "cannot start '{program}'{}: {e}",
            cwd.map(|d| format!(" in {}", d.display()))
                .unwrap_or_default()
        ))
    })?;
    let stderr = tail_reader(group.child_mut().stderr.take());
    let waited = group.wait_until(start + timeout, Duration::ZERO)?;
    let wall = start.elapsed();
    let (status, fired) = match waited {
        Some(st) => (st, false),
        None => (
            group.reap().context("reaping the benchmarked command")?,
            true,
        ),
    };
    let stderr = stderr.recv_timeout(STDERR_GRACE).unwrap_or_default();

    let outcome = if status.success() {
        Ok(())
    } else if fired && status.signal() == Some(Signal::SIGKILL as i32) {
        Err(format!(
            "timed out after {} s (killed)",
            timeout.as_secs_f64()
        ))
    } else {
        Err(failure(status, &stderr))
    };
    Ok(Timed {
        wall,
        outcome,
        usage: group.usage(),
    })
}

/// "exit status 2: <last line of stderr>".
fn failure(status: ExitStatus, stderr: &str) -> String {
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!(
            "killed by signal {}",
            Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.as_str().to_string())
        ),
        _ => status.to_string(),
    };
    match stderr.lines().rev().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) => format!("{how}: {line}"),
        None => how,
    }
}

/// Read `src` to its end on a thread, keeping the last
/// [`STDERR_TAIL_BYTES`]; the tail arrives on the returned channel.
fn tail_reader<R: Read + Send + 'static>(src: Option<R>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(mut src) = src {
            let mut buf = [0u8; 8192];
            while let Ok(n) = src.read(&mut buf) {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * STDERR_TAIL_BYTES {
                    kept.drain(..kept.len() - STDERR_TAIL_BYTES);
                }
            }
        }
        let start = kept.len().saturating_sub(STDERR_TAIL_BYTES);
        let _ = tx.send(String::from_utf8_lossy(&kept[start..]).into_owned());
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn times_a_successful_command_precisely() {
        // A 20 ms exit poll could never report less than 20 ms; the fastest
        // of a few 10 ms sleeps comes in well under that.
        let fastest = (0..5)
            .map(|_| {
                let t =
                    time_command(&argv(&["sleep", "0.01"]), None, Duration::from_secs(10)).unwrap();
                assert!(t.outcome.is_ok());
                assert!(t.wall >= Duration::from_millis(10), "{:?}", t.wall);
                t.wall
            })
            .min()
            .unwrap();
        assert!(fastest < Duration::from_millis(18), "{fastest:?}");
    }

    #[test]
    fn a_non_zero_exit_fails_with_the_last_stderr_line() {
        let t = time_command(
            &argv(&["sh", "-c", "echo first >&2; echo 'it broke' >&2; exit 3"]),
            None,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(t.outcome.unwrap_err(), "exit status 3: it broke");
    }

    #[test]
    fn a_timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        // The grandchild would create the marker after 1 s if not killed.
        let script = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let t = time_command(
            &argv(&["sh", "-c", &script]),
            None,
            Duration::from_millis(200),
        )
        .unwrap();
        assert_eq!(t.outcome.unwrap_err(), "timed out after 0.2 s (killed)");
        assert!(t.wall < Duration::from_secs(2), "{:?}", t.wall);
        thread::sleep(Duration::from_millis(1500));
        assert!(!marker.exists(), "a grandchild outlived the timeout");
    }

    #[test]
    fn leftovers_are_killed_after_exit() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("straggler");
        let script = format!("(sleep 1; touch {}) &", marker.display());
        let t = time_command(&argv(&["sh", "-c", &script]), None, Duration::from_secs(10)).unwrap();
        assert!(t.outcome.is_ok());
        assert!(
            t.wall < Duration::from_millis(900),
            "did not wait for the straggler"
        );
        thread::sleep(Duration::from_millis(1500));
        assert!(!marker.exists());
    }

    #[test]
    fn a_missing_program_is_an_input_error() {
        let e =
            time_command(&argv(&["/no/such/program"]), None, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, Error::Input(_)), "{e}");
        assert!(e.to_string().contains("cannot start '/no/such/program'"));
    }

    #[test]
    fn runs_in_the_given_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("here"), "").unwrap();
        let t = time_command(
            &argv(&["test", "-e", "here"]),
            Some(dir.path()),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(t.outcome.is_ok());
    }
}
