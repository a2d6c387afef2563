//! Turning the caller's target into one a profiler may be pointed at: a
//! live user-space-visible process, or a command whose program exists.
//!
//! A pid is checked here and then handed to the profiler by number: should
//! the process exit in those milliseconds and its number be reused (which
//! takes the kernel cycling through all of `pid_max`), the profiler would
//! attach to the newcomer. The report names the comm seen at check time.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::sandbox::SANDBOX_PATH;
use super::Tool;
use crate::error::Error;

/// What to profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A running process (a process id, not a thread id).
    Pid(u32),
    /// A command line to run under the profiler; the first word is a program
    /// name (looked up in `/usr/bin:/bin`) or a path. It runs with schedcp's
    /// credentials, in the sandbox's private directory (with
    /// [`COMMAND_SCRATCH_BYTES`](super::COMMAND_SCRATCH_BYTES) of room), with
    /// only `PATH=/usr/bin:/bin`, `LANG=C` and `HOME` set.
    Command(Vec<String>),
}

/// Bounds on a `--cmd` command line (the kernel's own limit is far higher;
/// these keep reports and error messages small).
const MAX_ARGS: usize = 256;
const MAX_ARG_BYTES: usize = 4096;

/// `PF_KTHREAD` in the flags field of `/proc/<pid>/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// A target that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    Pid {
        pid: u32,
        comm: String,
    },
    /// `argv[0]` is the resolved absolute path of the program.
    Command {
        argv: Vec<String>,
    },
}

pub fn check(target: &Target, tool: Tool) -> Result<Checked, Error> {
    match target {
        Target::Pid(pid) => check_pid(*pid, tool),
        Target::Command(argv) => check_command(argv),
    }
}

fn check_pid(pid: u32, tool: Tool) -> Result<Checked, Error> {
    if pid == 0 {
        return Err(Error::Input(
            "--pid must be a process id (1 or more), got 0".into(),
        ));
    }
    if pid == std::process::id() {
        return Err(Error::Input(format!(
            "pid {pid} is schedcp itself; profile another process"
        )));
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|_| Error::Input(format!("no process with pid {pid}")))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let comm = field("Name").unwrap_or("?").to_string();
    if let Some(tgid) = field("Tgid").and_then(|t| t.parse::<u32>().ok()) {
        if tgid != pid {
            return Err(Error::Input(format!(
                "{pid} is a thread of process {tgid} ({comm}); pass the process id: --pid {tgid}"
            )));
        }
    }
    if field("State").is_some_and(|s| s.starts_with('Z')) {
        return Err(Error::Input(format!(
            "pid {pid} ({comm}) has exited (zombie); nothing left to profile"
        )));
    }
    if tool == Tool::StraceSummary && is_kernel_thread(pid) {
        return Err(Error::Input(format!(
            "pid {pid} ({comm}) is a kernel thread: it makes no system calls strace could \
             trace; perf-stat and perf-sched can observe it"
        )));
    }
    Ok(Checked::Pid { pid, comm })
}

fn is_kernel_thread(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_flags(&s))
        .is_some_and(|f| f & PF_KTHREAD != 0)
}

/// Field 9 (flags) of `/proc/<pid>/stat`, counted after the `)` that ends
/// the command name (which may itself contain spaces and parentheses).
fn stat_flags(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(6)?.parse().ok()
}

fn check_command(argv: &[String]) -> Result<Checked, Error> {
    let Some(program) = argv.first() else {
        return Err(Error::Input(
            "--cmd needs a command after it, e.g. `--cmd -- sleep 5`".into(),
        ));
    };
    if argv.len() > MAX_ARGS {
        return Err(Error::Input(format!(
            "the command has {} arguments; at most {MAX_ARGS} are accepted",
            argv.len()
        )));
    }
    if let Some(a) = argv.iter().find(|a| a.len() > MAX_ARG_BYTES) {
        return Err(Error::Input(format!(
            "a command argument is {} bytes long; at most {MAX_ARG_BYTES} are accepted",
            a.len()
        )));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(Error::Input(
            "command arguments cannot contain NUL bytes".into(),
        ));
    }
    let resolved = resolve_program(program)?;
    let mut argv = argv.to_vec();
    argv[0] = resolved.display().to_string();
    Ok(Checked::Command { argv })
}

/// An absolute path to an executable regular file: `program` itself if it
/// names a path (relative ones against our working directory, since the
/// profiler runs elsewhere), else the first match in [`SANDBOX_PATH`].
fn resolve_program(program: &str) -> Result<PathBuf, Error> {
    if program.is_empty() {
        return Err(Error::Input("the command's program name is empty".into()));
    }
    if program.contains('/') {
        let path = std::path::absolute(program)
            .map_err(|e| Error::Input(format!("command `{program}`: {e}")))?;
        return match executable(&path) {
            Ok(()) => Ok(path),
            Err(why) => Err(Error::Input(format!("command `{program}` {why}"))),
        };
    }
    SANDBOX_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| executable(p).is_ok())
        .ok_or_else(|| {
            Error::Input(format!(
                "command `{program}` not found in {SANDBOX_PATH} (the profiler's PATH); \
                 give its absolute path"
            ))
        })
}

/// `Err` says why `path` cannot be run.
fn executable(path: &Path) -> Result<(), &'static str> {
    let meta = std::fs::metadata(path).map_err(|_| "does not exist")?;
    if !meta.is_file() {
        return Err("is not a regular file");
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("is not executable");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input_err(r: Result<Checked, Error>) -> String {
        match r {
            Err(Error::Input(m)) => m,
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn pids_are_checked() {
        assert!(input_err(check(&Target::Pid(0), Tool::PerfStat)).contains("got 0"));
        let me = std::process::id();
        assert!(input_err(check(&Target::Pid(me), Tool::PerfStat)).contains("schedcp itself"));
        // Pids are bounded by pid_max (at most 2^22), so this never exists.
        assert!(input_err(check(&Target::Pid(u32::MAX - 1), Tool::PerfStat)).contains("no process"));
        let Checked::Pid { comm, .. } = check(&Target::Pid(1), Tool::PerfStat).unwrap() else {
            panic!("pid 1 is a process")
        };
        assert!(!comm.is_empty());
    }

    #[test]
    fn threads_are_refused_with_their_process() {
        let t = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(2)));
        let me = std::process::id();
        let tid = std::fs::read_dir(format!("/proc/{me}/task"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|&t| t != me)
            .unwrap();
        let e = input_err(check(&Target::Pid(tid), Tool::PerfStat));
        assert!(e.contains(&format!("--pid {me}")), "{e}");
        t.join().unwrap();
    }

    #[test]
    fn strace_refuses_kernel_threads() {
        // kthreadd is pid 2 on every Linux system with a normal pid namespace.
        if is_kernel_thread(2) {
            let e = input_err(check(&Target::Pid(2), Tool::StraceSummary));
            assert!(e.contains("kernel thread"), "{e}");
            check(&Target::Pid(2), Tool::PerfStat).unwrap();
        }
    }

    #[test]
    fn commands_are_resolved() {
        let c = check(
            &Target::Command(vec!["sleep".into(), "1".into()]),
            Tool::PerfStat,
        )
        .unwrap();
        let Checked::Command { argv } = c else {
            panic!()
        };
        assert!(
            argv[0].ends_with("/sleep") && argv[0].starts_with('/'),
            "{argv:?}"
        );
        assert_eq!(argv[1], "1");
    }

    #[test]
    fn bad_commands_are_refused() {
        let cmd = |v: &[&str]| Target::Command(v.iter().map(|s| s.to_string()).collect());
        assert!(input_err(check(&cmd(&[]), Tool::PerfStat)).contains("needs a command"));
        assert!(
            input_err(check(&cmd(&["no-such-program-xyz"]), Tool::PerfStat)).contains("not found")
        );
        assert!(
            input_err(check(&cmd(&["/no/such/prog"]), Tool::PerfStat)).contains("does not exist")
        );
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("data");
        std::fs::write(&plain, "not a program").unwrap();
        let plain = plain.to_str().unwrap();
        assert!(input_err(check(&cmd(&[plain]), Tool::PerfStat)).contains("not executable"));
        assert!(
            input_err(check(&cmd(&["/usr/bin"]), Tool::PerfStat)).contains("not a regular file")
        );
        assert!(input_err(check(&cmd(&["sleep", "a\0b"]), Tool::PerfStat)).contains("NUL"));
        let long = "x".repeat(MAX_ARG_BYTES + 1);
        assert!(input_err(check(&cmd(&["sleep", &long]), Tool::PerfStat)).contains("bytes long"));
    }

    #[test]
    fn flags_field() {
        let stat = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0";
        assert_eq!(stat_flags(stat), Some(2_129_984));
        assert!(stat_flags(stat).unwrap() & PF_KTHREAD != 0);
    }
}
