//! How a profiler child runs.
//!
//! Each profile gets a [`Sandbox`]: a private, initially empty directory
//! (mode 0700, removed on drop) that is the child's working directory, its
//! `$HOME` and the only place its output files go. [`Sandbox::run`] then
//! starts one fixed profiler command line in it and supervises it:
//!
//! - **Environment**: cleared, except `PATH=/usr/bin:/bin`, `LANG=C` (stable,
//!   parseable output) and `HOME=<the private directory>` (perf writes its
//!   build-id cache under `$HOME/.debug` and reads `$HOME/.perfconfig`; both
//!   stay inside the directory).
//! - **stdin** is `/dev/null`; **stdout and stderr** are pipes drained by
//!   this thread with `poll(2)` and kept up to a byte cap each (the rest is
//!   read and dropped), so a chatty child never blocks on a full pipe and
//!   never grows our memory. No reader threads: nothing is left behind when
//!   a descendant that escaped the process group keeps a pipe open.
//! - **Process group**: the child leads a new group; everything it starts
//!   (perf's or strace's workload) inherits the group. When the child exits,
//!   the whole group gets SIGKILL *before* the child is reaped, so the group
//!   id cannot have been recycled for an unrelated group.
//! - **Time**: at the end of the window the child is asked to stop — it
//!   either stops itself (`perf stat --timeout`) or its group gets SIGINT,
//!   as from Ctrl-C, on which perf and strace stop their command and write
//!   their report. [`GRACE_FOR_COMMAND`] later, if the profiler is still
//!   waiting for its command (which ignored the stop), the rest of the group
//!   is killed so the profiler can still report; [`GRACE_FOR_PROFILER`] after
//!   that, the whole group is killed. Hard wall-clock bound: window + both
//!   graces.
//! - **Disk**: the private directory is measured periodically; past its cap
//!   the group is killed.
//! - **`pre_exec`** (in the child, between fork and exec): `PR_SET_PDEATHSIG`
//!   = SIGKILL (the child dies with the thread that supervises it — which
//!   is the thread that spawned it, so it does not fire early),
//!   `PR_SET_NO_NEW_PRIVS` (no setuid/file-capability gains through exec),
//!   `RLIMIT_CORE` = 0 (no core files with profiled memory in them), and a
//!   hard `RLIMIT_NOFILE` bound (the soft limit is kept; perf raises its soft
//!   limit up to the hard one when it needs one descriptor per event per CPU
//!   or thread).
//!
//! What this does **not** protect against:
//! - It is not an isolation boundary. The child runs with schedcp's own
//!   credentials (root, for perf and ptrace), in the host's namespaces and
//!   file system. A `--cmd` target is arbitrary code chosen by the caller and
//!   runs as schedcp's user; the API layer must reserve it for callers trusted
//!   to run commands (the allowlist bounds the *profiler's* flags and binary,
//!   not what the profiled command does).
//! - CPU, memory and process counts of the profiled command are not limited
//!   (that needs a cgroup); only time, captured output and the directory are.
//! - A descendant that leaves the process group (`setsid`, `setpgid`) escapes
//!   the final kill; we merely stop reading its output.
//! - Files the command writes outside the private directory stay written.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use nix::sys::signal::Signal;
use serde::Serialize;

use crate::error::Error;
use crate::host::process::Group;

/// `PATH` inside the sandbox (and for resolving a `--cmd` program name).
pub const SANDBOX_PATH: &str = "/usr/bin:/bin";

/// How long the profiler may take, after the window, to stop the profiled
/// command itself before we kill the command.
pub const GRACE_FOR_COMMAND: Duration = Duration::from_secs(2);
/// How long the profiler may take, after the command is gone, to write its
/// report before we kill the whole group.
pub const GRACE_FOR_PROFILER: Duration = Duration::from_secs(3);

/// Poll period: bounds how late a deadline is noticed.
const TICK: Duration = Duration::from_millis(20);
/// How often the private directory is measured (a directory walk).
const DISK_CHECK_EVERY: Duration = Duration::from_millis(250);
/// Hard ceiling for RLIMIT_NOFILE: perf needs one descriptor per event per
/// CPU (system-wide) or per thread (`-p`): 8 events × 2000 threads fit.
const NOFILE_CEILING: libc::rlim_t = 16_384;

/// How the profiler learns that the window is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// It has its own timer (`perf stat --timeout`) or ends on its own
    /// (post-processing a recording).
    Itself,
    /// We send SIGINT to its process group, as Ctrl-C would; perf record
    /// and strace then stop their command and write their report.
    Interrupt,
}

/// How a supervised run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The profiler exited before the window closed: the command finished,
    /// or the profiled process exited.
    EndedEarly,
    /// The window closed and the profiler stopped as asked.
    WindowClosed,
    /// The profiled command ignored the profiler's stop signal and was
    /// killed (SIGKILL) so that the profiler could still report.
    CommandKilled,
    /// The profiler did not stop in time; the whole group was killed.
    ProfilerKilled,
    /// The private directory outgrew its cap; the whole group was killed.
    DiskCapExceeded,
}

/// One profiler command line and its limits.
pub struct Spec<'a> {
    pub program: &'a Path,
    pub args: Vec<OsString>,
    /// How long the profile window lasts, from the spawn.
    pub window: Duration,
    pub stop: Stop,
    /// Cap on each of stdout and stderr.
    pub max_output: usize,
    /// Cap on the private directory's size.
    pub max_dir_bytes: u64,
}

/// A stream kept up to a cap.
#[derive(Debug, Default)]
pub struct Captured {
    pub text: String,
    /// Bytes produced beyond the cap (read and dropped).
    pub dropped: u64,
}

impl Captured {
    /// The last `n` non-empty lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self
            .text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        lines[lines.len().saturating_sub(n)..].join("; ")
    }
}

pub struct Run {
    /// The profiler's pid (also its process group id).
    pub pid: u32,
    pub status: ExitStatus,
    pub stdout: Captured,
    pub stderr: Captured,
    pub elapsed: Duration,
    pub ending: Ending,
}

/// A private working directory for one profile; removed on drop.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Result<Sandbox, Error> {
        let dir = tempfile::Builder::new()
            .prefix("schedcp-profile-")
            .tempdir()
            .context("creating the profiler's private directory")?;
        Ok(Sandbox { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A file inside the private directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Read a file the profiler wrote, keeping at most `max` bytes.
    /// `Ok(None)` when the profiler did not write it.
    pub fn read_capped(&self, name: &str, max: usize) -> Result<Option<Captured>, Error> {
        let path = self.file(name);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(anyhow!(e)
                    .context(format!("opening {}", path.display()))
                    .into())
            }
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut kept = Vec::new();
        file.take(max as u64)
            .read_to_end(&mut kept)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(Captured {
            dropped: len.saturating_sub(kept.len() as u64),
            text: String::from_utf8_lossy(&kept).into_owned(),
        }))
    }

    /// Run `spec` to completion under the limits described in the module
    /// documentation.
    pub fn run(&self, spec: &Spec<'_>) -> Result<Run, Error> {
        let mut cmd = Command::new(spec.program);
        cmd.args(&spec.args)
            .current_dir(self.path())
            .env_clear()
            .env("PATH", SANDBOX_PATH)
            .env("LANG", "C")
            .env("HOME", self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let parent = std::process::id() as libc::pid_t;
        let nofile = nofile_limits();
        // SAFETY: `confine` only makes raw system calls (prctl, getppid,
        // setrlimit) and builds io::Error from errno; it neither allocates nor
        // takes locks, so it is safe between fork and exec.
        unsafe {
            cmd.pre_exec(move || confine(parent, nofile));
        }
        let start = Instant::now();
        let mut group = Group::spawn(&mut cmd, false)
            .with_context(|| format!("starting {}", spec.program.display()))?;
        let mut out = Drain::new(
            group.child_mut().stdout.take().map(OwnedFd::from),
            spec.max_output,
        )?;
        let mut err = Drain::new(
            group.child_mut().stderr.take().map(OwnedFd::from),
            spec.max_output,
        )?;

        let window_end = start + spec.window;
        let mut stage = Stage::Running;
        let mut forced: Option<Ending> = None;
        let mut next_disk_check = start + DISK_CHECK_EVERY;
        loop {
            pump(&mut [&mut out, &mut err], TICK).context("reading the profiler's output")?;
            if group.leader_exited().context("waiting for the profiler")? {
                break;
            }
            let now = Instant::now();
            if now >= next_disk_check {
                next_disk_check = now + DISK_CHECK_EVERY;
                if forced.is_none() && dir_bytes(self.path(), 4) > spec.max_dir_bytes {
                    group.kill_all();
                    forced = Some(Ending::DiskCapExceeded);
                    stage = Stage::Killed;
                }
            }
            stage = match stage {
                Stage::Running if now >= window_end => {
                    if spec.stop == Stop::Interrupt {
                        group.signal(Signal::SIGINT);
                    }
                    Stage::Stopping(now + GRACE_FOR_COMMAND)
                }
                Stage::Stopping(at) if now >= at => {
                    if kill_command_if_waited_for(&group) {
                        forced = Some(Ending::CommandKilled);
                    }
                    Stage::CommandGone(now + GRACE_FOR_PROFILER)
                }
                Stage::CommandGone(at) if now >= at => {
                    group.kill_all();
                    forced = Some(Ending::ProfilerKilled);
                    Stage::Killed
                }
                s => s,
            };
        }
        let ended = Instant::now();
        let status = group.reap().context("reaping the profiler")?;
        // Whatever the group wrote before it died is still in the pipes.
        out.read_available()
            .context("reading the profiler's output")?;
        err.read_available()
            .context("reading the profiler's output")?;
        let ending = forced.unwrap_or(if ended < window_end {
            Ending::EndedEarly
        } else {
            Ending::WindowClosed
        });
        Ok(Run {
            pid: group.id(),
            status,
            stdout: out.finish(),
            stderr: err.finish(),
            elapsed: ended - start,
            ending,
        })
    }
}

/// Where the supervision loop is after the window closed.
#[derive(Clone, Copy)]
enum Stage {
    Running,
    /// Asked to stop; at `.0` the command gets killed.
    Stopping(Instant),
    /// Command killed; at `.0` everything gets killed.
    CommandGone(Instant),
    Killed,
}

/// Runs in the child between fork and exec; see the module documentation.
fn confine(parent: libc::pid_t, nofile: libc::rlimit) -> io::Result<()> {
    fn check(rc: libc::c_int) -> io::Result<()> {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    // SAFETY: plain system calls on our own process with valid arguments.
    unsafe {
        check(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ))?;
        // The parent may have died between fork and prctl: then nobody would
        // ever deliver the death signal.
        if libc::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        check(libc::setrlimit(libc::RLIMIT_CORE, &no_core))?;
        check(libc::setrlimit(libc::RLIMIT_NOFILE, &nofile))?;
    }
    Ok(())
}

/// Hard limit: at most [`NOFILE_CEILING`] and never above ours; the soft
/// limit stays what it is (lowered only if above the new hard limit).
fn nofile_limits() -> libc::rlimit {
    let mut cur = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: NOFILE_CEILING,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur);
    }
    let hard = cur.rlim_max.min(NOFILE_CEILING);
    libc::rlimit {
        rlim_cur: cur.rlim_cur.min(hard),
        rlim_max: hard,
    }
}

/// If the profiler (the group's leader) still has a live child — the
/// profiled command it is waiting for — SIGKILL every process of the group
/// but the leader (the command and whatever it started) and return true.
/// Without such a child the profiler is merely slow, and the command's
/// leftovers (orphaned background jobs) die with the group later.
fn kill_command_if_waited_for(group: &Group) -> bool {
    let leader = group.id() as i32;
    let members: Vec<Member> = group_members(leader)
        .into_iter()
        .filter(|m| m.pid != leader)
        .collect();
    if !members.iter().any(|m| m.ppid == leader) {
        return false;
    }
    for m in members {
        kill_if_in_group(m.pid, leader);
    }
    true
}

/// A live process, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    pid: i32,
    ppid: i32,
    pgrp: i32,
}

/// Live processes (not threads, not zombies) whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<Member> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(live)
        .filter(|m| m.pgrp == pgid)
        .collect()
}

/// `pid` unless it is gone or a zombie (dead already: its parent just has
/// not reaped it).
fn live(pid: i32) -> Option<Member> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (state, ppid, pgrp) = parse_stat(&stat)?;
    (state != "Z").then_some(Member { pid, ppid, pgrp })
}

fn live_group_of(pid: i32) -> Option<i32> {
    live(pid).map(|m| m.pgrp)
}

/// Fields 3 (state), 4 (parent) and 5 (process group) of
/// `/proc/<pid>/stat`; the command name (field 2) may contain spaces and
/// parentheses, so count from the last `)`.
fn parse_stat(stat: &str) -> Option<(&str, i32, i32)> {
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// SIGKILL `pid` if it is still in group `pgid`. Through a pidfd: the pid
/// seen in /proc may have exited and been reused since, and the pidfd pins
/// the process we re-check before signalling.
fn kill_if_in_group(pid: i32, pgid: i32) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` is a freshly opened descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    if live_group_of(pid) != Some(pgid) {
        return false;
    }
    // SAFETY: valid pidfd, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0
}

/// Apparent size of the files under `dir`, `depth` levels deep.
fn dir_bytes(dir: &Path, depth: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            if depth > 0 {
                total += dir_bytes(&e.path(), depth - 1);
            }
        } else {
            total += meta.len();
        }
    }
    total
}

/// One output pipe, read without blocking and kept up to a cap.
struct Drain {
    src: Option<File>,
    kept: Vec<u8>,
    dropped: u64,
    cap: usize,
}

impl Drain {
    fn new(fd: Option<OwnedFd>, cap: usize) -> Result<Drain, Error> {
        if let Some(fd) = &fd {
            set_nonblocking(fd.as_raw_fd()).context("setting up the profiler's output pipe")?;
        }
        Ok(Drain {
            src: fd.map(File::from),
            kept: Vec::new(),
            dropped: 0,
            cap,
        })
    }

    /// Read what is there now; closes the source at end of file.
    fn read_available(&mut self) -> io::Result<()> {
        let Some(src) = self.src.as_mut() else {
            return Ok(());
        };
        let mut buf = [0u8; 16 * 1024];
        loop {
            match src.read(&mut buf) {
                Ok(0) => {
                    self.src = None;
                    return Ok(());
                }
                Ok(n) => {
                    let room = self.cap.saturating_sub(self.kept.len()).min(n);
                    self.kept.extend_from_slice(&buf[..room]);
                    self.dropped += (n - room) as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn finish(self) -> Captured {
        Captured {
            text: String::from_utf8_lossy(&self.kept).into_owned(),
            dropped: self.dropped,
        }
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Wait up to `timeout` for output on the open drains and read it. Doubles
/// as the supervision loop's sleep.
fn pump(drains: &mut [&mut Drain], timeout: Duration) -> io::Result<()> {
    let mut fds: Vec<libc::pollfd> = drains
        .iter()
        .filter_map(|d| d.src.as_ref())
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    if fds.is_empty() {
        std::thread::sleep(timeout);
        return Ok(());
    }
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(())
        } else {
            Err(e)
        };
    }
    for d in drains.iter_mut() {
        d.read_available()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(program: &'a Path, args: &[&str], window_ms: u64, stop: Stop) -> Spec<'a> {
        Spec {
            program,
            args: args.iter().map(OsString::from).collect(),
            window: Duration::from_millis(window_ms),
            stop,
            max_output: 1000,
            max_dir_bytes: 1 << 20,
        }
    }

    const SH: &str = "/bin/sh";

    #[test]
    fn environment_is_cleared_and_directory_private() {
        let sb = Sandbox::new().unwrap();
        let r = sb
            .run(&spec(
                Path::new(SH),
                &["-c", "env; pwd"],
                5000,
                Stop::Itself,
            ))
            .unwrap();
        assert_eq!(r.ending, Ending::EndedEarly);
        let mut env: Vec<&str> = r
            .stdout
            .text
            .lines()
            .filter(|l| l.contains('='))
            .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="))
            .collect();
        env.sort();
        let home = format!("HOME={}", sb.path().display());
        assert_eq!(env, [home.as_str(), "LANG=C", "PATH=/usr/bin:/bin"]);
        assert!(r.stdout.text.contains(&sb.path().display().to_string()));
    }

    #[test]
    fn confinement_applies() {
        let sb = Sandbox::new().unwrap();
        let r = sb
            .run(&spec(
                Path::new(SH),
                &["-c", "grep NoNewPrivs /proc/self/status; ulimit -c; cut -d' ' -f5 /proc/$$/stat; echo $$"],
                5000,
                Stop::Itself,
            ))
            .unwrap();
        let lines: Vec<&str> = r.stdout.text.lines().map(str::trim).collect();
        assert_eq!(lines[0], "NoNewPrivs:\t1");
        assert_eq!(lines[1], "0");
        // Leader of its own group.
        assert_eq!(lines[2], lines[3]);
        assert_eq!(lines[3], r.pid.to_string());
    }

    #[test]
    fn output_is_capped_and_drained() {
        let sb = Sandbox::new().unwrap();
        let r = sb
            .run(&spec(
                Path::new(SH),
                &[
                    "-c",
                    "head -c 3000000 /dev/zero | tr '\\0' x; echo done >&2",
                ],
                10_000,
                Stop::Itself,
            ))
            .unwrap();
        assert_eq!(
            r.ending,
            Ending::EndedEarly,
            "a full pipe must not block the child"
        );
        assert_eq!(r.stdout.text.len(), 1000);
        assert_eq!(r.stdout.dropped, 3_000_000 - 1000);
        assert_eq!(r.stderr.text, "done\n");
    }

    #[test]
    fn interrupt_stops_at_the_window() {
        let sb = Sandbox::new().unwrap();
        let r = sb
            .run(&spec(
                Path::new(SH),
                &[
                    "-c",
                    "trap 'echo stopped; exit 0' INT; while :; do sleep 0.05; done",
                ],
                300,
                Stop::Interrupt,
            ))
            .unwrap();
        assert_eq!(r.ending, Ending::WindowClosed);
        assert!(r.stdout.text.contains("stopped"));
        assert!(r.elapsed < Duration::from_secs(2), "{:?}", r.elapsed);
    }

    #[test]
    fn a_command_ignoring_the_stop_is_killed_and_the_leader_reports() {
        // The leader waits for its child, like perf and strace do; the child
        // ignores SIGINT and SIGTERM.
        let sb = Sandbox::new().unwrap();
        let script = "trap 'echo leader-stopping' INT; \
                      sh -c 'trap \"\" INT TERM; while :; do sleep 0.05; done' & \
                      wait $!; wait $!; echo leader-reports";
        let r = sb
            .run(&spec(Path::new(SH), &["-c", script], 200, Stop::Interrupt))
            .unwrap();
        assert_eq!(r.ending, Ending::CommandKilled);
        assert!(
            r.stdout.text.contains("leader-reports"),
            "{}",
            r.stdout.text
        );
        assert!(
            r.elapsed < Duration::from_millis(200) + GRACE_FOR_COMMAND + Duration::from_secs(1)
        );
    }

    #[test]
    fn a_hung_profiler_is_killed_with_its_group() {
        let sb = Sandbox::new().unwrap();
        let pidfile = sb.file("bg.pid");
        let script = format!(
            "trap '' INT; sleep 60 & echo $! > {}; while :; do sleep 0.05; done",
            pidfile.display()
        );
        let r = sb
            .run(&spec(Path::new(SH), &["-c", &script], 100, Stop::Interrupt))
            .unwrap();
        // The background sleep, the leader's child, counts as the command
        // and dies first; the leader ignores everything and dies at the end.
        assert_eq!(r.ending, Ending::ProfilerKilled);
        assert!(left_group(&pidfile, r.pid), "background sleep survived");
        let bound = Duration::from_millis(100) + GRACE_FOR_COMMAND + GRACE_FOR_PROFILER;
        assert!(
            r.elapsed < bound + Duration::from_secs(1),
            "{:?}",
            r.elapsed
        );
    }

    #[test]
    fn leftovers_die_with_the_leader() {
        let sb = Sandbox::new().unwrap();
        let pidfile = sb.file("bg.pid");
        let script = format!("sleep 60 & echo $! > {}", pidfile.display());
        let r = sb
            .run(&spec(Path::new(SH), &["-c", &script], 5000, Stop::Itself))
            .unwrap();
        assert_eq!(r.ending, Ending::EndedEarly);
        assert!(left_group(&pidfile, r.pid), "background sleep survived");
    }

    /// Whether the process whose pid is in `pidfile` is out of group `pgid`
    /// (dead) within two seconds; once killed, init still has to reap it.
    fn left_group(pidfile: &Path, pgid: u32) -> bool {
        let pid: i32 = std::fs::read_to_string(pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            live_group_of(pid) != Some(pgid as i32)
        })
    }

    #[test]
    fn disk_cap_is_enforced() {
        let sb = Sandbox::new().unwrap();
        let mut s = spec(
            Path::new(SH),
            &["-c", "while :; do head -c 100000 /dev/zero >> big; done"],
            10_000,
            Stop::Itself,
        );
        s.max_dir_bytes = 1_000_000;
        let r = sb.run(&s).unwrap();
        assert_eq!(r.ending, Ending::DiskCapExceeded);
        assert!(r.elapsed < Duration::from_secs(5));
    }

    #[test]
    fn reads_files_with_a_cap() {
        let sb = Sandbox::new().unwrap();
        std::fs::write(sb.file("f"), "0123456789").unwrap();
        let c = sb.read_capped("f", 4).unwrap().unwrap();
        assert_eq!((c.text.as_str(), c.dropped), ("0123", 6));
        assert!(sb.read_capped("missing", 4).unwrap().is_none());
    }

    #[test]
    fn stat_parsing_survives_odd_names() {
        let stat = "123 (a) b (c) Z 1 456 456 0 -1 4194560 0 0";
        assert_eq!(parse_stat(stat), Some(("Z", 1, 456)));
    }
}
