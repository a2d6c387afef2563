//! Running an untrusted-input tool (clang on an agent's scheduler source) in
//! a restricted child.
//!
//! A [`Jail`] is a fresh private directory holding the child's whole
//! file system view:
//!
//! ```text
//! <tmp>/schedcp-jail-XXXX/        0700, never visible to the child
//!   root/                            the child's `/`
//!     usr/  (bin lib lib64 sbin)     read-only bind mounts of the host's
//!                                    (or the host's usr-merge symlinks)
//!     etc/ld.so.cache                read-only bind
//!     dev/null dev/zero dev/urandom  read-only binds
//!     work/                          the child's working directory: inputs
//!                                    (copied in, read-only), and
//!       out/                         the only directory it can write
//! ```
//!
//! [`Jail::run`] starts one command there through
//! [`crate::host::process::run_with_timeout`] (own process group, killed at the
//! wall-clock deadline; output capped) after these steps in the child,
//! between fork and exec:
//!
//! 1. when not root: a new user namespace mapping only the caller's own
//!    uid and gid, so the next steps work without privileges;
//! 2. a new **network namespace** (only a loopback interface, down: no
//!    connection anywhere, not even to abstract unix sockets of the host)
//!    and a new mount namespace, all mounts made private;
//! 3. the bind mounts above, remounted read-only (and `root/` and `work/`
//!    bound read-only onto themselves, `out/` writable: file modes alone
//!    would not stop a non-root caller's child, which owns the inputs),
//!    then `chroot` into `root/` and `chdir /work`: the host's `/etc`,
//!    `/root`, `/home`, `/proc`, `/tmp`, the schedcp cache — none exist for
//!    the child. This is what makes the compile safe even against
//!    preprocessor tricks the include check cannot see (macro-pasted
//!    `_Pragma`, `.incbin`);
//! 4. when root: supplementary groups dropped, gid and uid set to `nobody`
//!    (65534), so the child holds no capability and owns nothing but `out/`;
//! 5. `PR_SET_NO_NEW_PRIVS`, and `PR_SET_PDEATHSIG` = SIGKILL (set after
//!    the uid change, which clears it);
//! 6. rlimits: CPU seconds (soft = hard: SIGKILL at the limit — LLVM
//!    catches SIGXCPU in its crash-recovery context and turns it into an
//!    ordinary "fatal error", which would hide why it stopped), address
//!    space, file size, open files, no core dumps;
//! 7. every inherited descriptor above stderr marked close-on-exec.
//!
//! The environment is cleared but for `PATH=/usr/bin:/bin` and `LANG=C`.
//! If any step fails the command does not run, and the error names the
//! step (e.g. "unshare(CLONE_NEWNET) failed: Operation not permitted").
//!
//! Not covered: the child can read what is under `/usr` (public software).
//! It shares the host's PID namespace: it sees no `/proc`, and as `nobody`
//! it can signal nothing of ours, but a non-root caller's child keeps the
//! caller's uid and could signal the caller's processes by number (clang
//! runs no code of the source, so only a compromised compiler could).
//! Threads and memory are bounded per process by the rlimits, not by a
//! cgroup.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::host::process::run_with_timeout;

/// `PATH` inside the sandbox.
pub const SANDBOX_PATH: &str = "/usr/bin:/bin";
/// The uid and gid a root caller's child runs as.
pub const NOBODY: u32 = 65534;

/// Host directories mirrored read-only into the child's view (as bind
/// mounts, or as the same symlink on a usr-merged host).
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32",
];
/// Host files mirrored read-only: the dynamic loader's cache.
const SYSTEM_FILES: &[&str] = &["/etc/ld.so.cache"];
/// Device nodes mirrored (they hold no data; many tools open /dev/null).
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/urandom"];

/// What the child may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Wall-clock deadline; the process group is killed then.
    pub wall: Duration,
    /// RLIMIT_CPU, seconds (soft and hard: SIGKILL at the limit).
    pub cpu_secs: u64,
    /// RLIMIT_AS: address space, bytes.
    pub memory_bytes: u64,
    /// RLIMIT_FSIZE: the largest file it may write, bytes.
    pub file_bytes: u64,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
    /// Cap on each of stdout and stderr as captured.
    pub max_output: usize,
}

impl Default for Limits {
    /// Sized for clang on a sched_ext scheduler. A built-in one takes
    /// about 0.5 s of CPU, 160 MiB resident and under 400 MiB of address
    /// space, and yields a 0.8 MiB object (mostly BTF from vmlinux.h).
    /// The CPU limit leaves two orders of magnitude for bigger schedulers
    /// and slow hosts; the wall deadline is twice that, for a loaded host;
    /// 1 GiB of address space and 64 MiB per file are generous for any
    /// real scheduler, yet stop a bomb within seconds.
    fn default() -> Limits {
        Limits {
            wall: Duration::from_secs(120),
            cpu_secs: 60,
            memory_bytes: 1 << 30,
            file_bytes: 64 << 20,
            open_files: 256,
            max_output: 256 << 10,
        }
    }
}

/// How the child's run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ending {
    /// It exited by itself with this status.
    Exited { code: i32 },
    /// Still running at the wall-clock deadline; its group was killed.
    Deadline { secs: f64 },
    /// Killed at the CPU-time limit.
    CpuLimit { secs: u64 },
    /// An allocation failed under RLIMIT_AS.
    MemoryLimit { bytes: u64 },
    /// SIGXFSZ, or EFBIG reported, under RLIMIT_FSIZE.
    FileSizeLimit { bytes: u64 },
    /// Killed by another signal (a crash, or the kernel's OOM killer).
    Signal { signal: i32 },
}

impl Ending {
    /// Ended by one of the rlimits (not by the deadline).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            Ending::CpuLimit { .. } | Ending::MemoryLimit { .. } | Ending::FileSizeLimit { .. }
        )
    }

    /// A sentence fragment whose subject is the program, e.g. "used up its
    /// CPU-time limit of 60 s (RLIMIT_CPU) and was killed".
    pub fn reason(&self) -> String {
        match self {
            Ending::Exited { code } => format!("exited with status {code}"),
            Ending::Deadline { secs } => format!(
                "was still running at its wall-clock deadline of {secs:.0} s; its process group was killed"
            ),
            Ending::CpuLimit { secs } => format!(
                "used up its CPU-time limit of {secs} s (RLIMIT_CPU) and was killed"
            ),
            Ending::MemoryLimit { bytes } => format!(
                "ran out of memory under its address-space limit of {} MiB (RLIMIT_AS)",
                bytes >> 20
            ),
            Ending::FileSizeLimit { bytes } => format!(
                "tried to write a file larger than its limit of {} MiB (RLIMIT_FSIZE) and was stopped",
                bytes >> 20
            ),
            Ending::Signal { signal } => {
                format!("was killed by signal {signal} ({})", signal_name(*signal))
            }
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGKILL => "SIGKILL; the kernel's OOM killer?",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => "signal",
    }
}

/// The result of [`Jail::run`].
#[derive(Debug)]
pub struct Outcome {
    /// `None` when killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub ending: Ending,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.ending == Ending::Exited { code: 0 }
    }
}

/// A bind mount in the child's view.
struct Bind {
    /// Host path.
    src: PathBuf,
    /// Mount point, a host path under `root`.
    dst: PathBuf,
    kind: BindKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindKind {
    /// A host directory or file, read-only.
    System,
    /// A device node, read-only (but usable: no `nodev`).
    Device,
    /// A sandbox directory over itself, read-only.
    ReadOnlySelf,
    /// `out/` over itself, writable.
    WritableSelf,
}

/// A private directory and file system view for one untrusted job; removed
/// on drop. See the module documentation.
pub struct Jail {
    dir: tempfile::TempDir,
    root: PathBuf,
    binds: Vec<Bind>,
    as_root: bool,
}

impl Jail {
    pub fn new() -> Result<Jail> {
        let dir = tempfile::Builder::new()
            .prefix("schedcp-jail-")
            .tempdir()
            .context("creating the sandbox directory")?;
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        let root = dir.path().join("root");
        let mut sb = Jail {
            root: root.clone(),
            dir,
            binds: Vec::new(),
            as_root,
        };
        mkdir(&root, 0o755)?;
        // First, so that every later mount lands on top of it.
        sb.binds.push(Bind {
            src: root.clone(),
            dst: root.clone(),
            kind: BindKind::ReadOnlySelf,
        });
        for d in SYSTEM_DIRS {
            sb.mirror(Path::new(d))?;
        }
        for f in SYSTEM_FILES.iter().chain(DEVICES) {
            let src = Path::new(f);
            if src.exists() {
                let kind = if DEVICES.contains(f) {
                    BindKind::Device
                } else {
                    BindKind::System
                };
                sb.bind(src, kind)?;
            }
        }
        mkdir(&sb.work_dir(), 0o755)?;
        let out = sb.out_dir();
        mkdir(&out, 0o700)?;
        if as_root {
            std::os::unix::fs::chown(&out, Some(NOBODY), Some(NOBODY))
                .with_context(|| format!("handing {} to nobody", out.display()))?;
        }
        let work = sb.work_dir();
        sb.binds.push(Bind {
            src: work.clone(),
            dst: work,
            kind: BindKind::ReadOnlySelf,
        });
        sb.binds.push(Bind {
            src: out.clone(),
            dst: out,
            kind: BindKind::WritableSelf,
        });
        Ok(sb)
    }

    /// The host path of the child's working directory (`/work` inside).
    pub fn work_dir(&self) -> PathBuf {
        self.root.join("work")
    }

    /// The host path of `out/`, the one directory the child can write.
    pub fn out_dir(&self) -> PathBuf {
        self.work_dir().join("out")
    }

    /// Put a read-only file at `rel` (relative to the working directory).
    pub fn add_file(&self, rel: &str, contents: &[u8]) -> Result<PathBuf> {
        let path = self.work_dir().join(checked_rel(rel)?);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))?;
        Ok(path)
    }

    /// Copy the directory tree `src` to `rel` (relative to the working
    /// directory), read-only. Only directories and regular files are
    /// copied: a symlink in the source could point anywhere on the host.
    pub fn add_tree(&self, rel: &str, src: &Path) -> Result<()> {
        let dst = self.work_dir().join(checked_rel(rel)?);
        copy_tree(src, &dst)
            .with_context(|| format!("copying {} into the sandbox as {rel}", src.display()))
    }

    /// Make the host directory `dir` visible, read-only, at the same path
    /// in the child's view (for a tool installed outside `/usr`).
    pub fn expose(&mut self, dir: &Path) -> Result<()> {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        if !dir.is_dir() {
            bail!("{} is not a directory", dir.display());
        }
        if self.visible(&dir) {
            return Ok(());
        }
        self.bind(&dir, BindKind::System)
    }

    /// Whether the canonical host path `p` exists in the child's view.
    pub fn visible(&self, p: &Path) -> bool {
        self.binds
            .iter()
            .any(|b| b.kind == BindKind::System && p.starts_with(&b.src))
    }

    /// Read `rel` (relative to the working directory) as the child left
    /// it: a regular file with one link, at most `max` bytes. Each path
    /// component is opened without following symlinks, so a child that
    /// plants a link cannot make us read a host file.
    pub fn read_output(&self, rel: &str, max: u64) -> Result<Vec<u8>> {
        let rel = checked_rel(rel)?;
        let mut fd = open_nofollow(None, self.dir.path(), true)?;
        let mut parts: Vec<&OsStr> = vec![OsStr::new("root"), OsStr::new("work")];
        parts.extend(rel.components().map(|c| c.as_os_str()));
        let last = parts.len() - 1;
        for (k, part) in parts.iter().enumerate() {
            fd = open_nofollow(Some(&fd), Path::new(part), k < last)
                .with_context(|| format!("opening {} in the sandbox", rel.display()))?;
        }
        let file = File::from(fd);
        let meta = file.metadata()?;
        if !meta.is_file() || meta.nlink() != 1 {
            bail!(
                "{} in the sandbox is not a plain file (a link or special file was planted)",
                rel.display()
            );
        }
        if meta.len() > max {
            bail!(
                "{} in the sandbox is {} bytes; the limit is {max}",
                rel.display(),
                meta.len()
            );
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(max).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Run `program` with `args` in the sandbox under `limits`.
    ///
    /// `program` is resolved on the host (a bare name through our `PATH`)
    /// and must lie inside the child's view. Paths in `args` should be
    /// relative to the working directory.
    pub fn run<I, S>(&self, program: &Path, args: I, limits: &Limits) -> Result<Outcome>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let resolved = resolve(program)?;
        let exe = resolved
            .canonicalize()
            .with_context(|| format!("resolving {}", resolved.display()))?;
        if !self.visible(&exe) {
            bail!(
                "{} ({}) is outside the sandbox's file system view (/usr and the system \
                 library directories); install it there or expose its directory",
                program.display(),
                exe.display()
            );
        }
        let plan = ChildPlan::new(self, limits)?;
        let report = ReportPipe::new()?;
        let report_fd = report.write.as_raw_fd();

        let mut cmd = Command::new(&exe);
        // argv[0] as asked for: some tools pick their mode from it.
        cmd.arg0(resolved.file_name().unwrap_or(exe.as_os_str()))
            .args(args)
            .env_clear()
            .env("PATH", SANDBOX_PATH)
            .env("LANG", "C");
        // SAFETY: `enter` makes only async-signal-safe system calls on data
        // prepared before the fork (no allocation, no locks); see ChildPlan.
        unsafe {
            cmd.pre_exec(move || plan.enter(report_fd));
        }
        let done = run_with_timeout(&mut cmd, limits.wall, limits.max_output);
        drop(cmd);
        let done = match done {
            Ok(d) => d,
            Err(e) => return Err(report.explain(e)),
        };
        let ending = classify(done.status, &done.stderr, done.elapsed, limits);
        Ok(Outcome {
            status: done.status,
            stdout: done.stdout,
            stderr: done.stderr,
            elapsed: done.elapsed,
            ending,
        })
    }

    /// Mirror host directory `d`: the same symlink, or a read-only bind.
    fn mirror(&mut self, d: &Path) -> Result<()> {
        let Ok(meta) = std::fs::symlink_metadata(d) else {
            return Ok(());
        };
        let dst = self.in_root(d);
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(d)?;
            std::os::unix::fs::symlink(&target, &dst)
                .with_context(|| format!("mirroring the symlink {}", d.display()))?;
            Ok(())
        } else if meta.is_dir() {
            self.bind(d, BindKind::System)
        } else {
            Ok(())
        }
    }

    /// Create the mount point for `src` and record the bind.
    fn bind(&mut self, src: &Path, kind: BindKind) -> Result<()> {
        let dst = self.in_root(src);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if src.is_dir() {
            std::fs::create_dir_all(&dst)?;
        } else {
            File::create(&dst).with_context(|| format!("creating {}", dst.display()))?;
        }
        self.binds.push(Bind {
            src: src.to_path_buf(),
            dst,
            kind,
        });
        Ok(())
    }

    /// `root` + an absolute host path.
    fn in_root(&self, p: &Path) -> PathBuf {
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }
}

/// A relative path without `..`, `.` or a root.
fn checked_rel(rel: &str) -> Result<PathBuf> {
    let p = PathBuf::from(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("'{rel}' is not a plain relative path");
    }
    Ok(p)
}

fn mkdir(p: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir(p).with_context(|| format!("creating {}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755))?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let to = dst.join(entry.file_name());
        if ty.is_dir() {
            copy_tree(&entry.path(), &to)?;
        } else if ty.is_file() {
            std::fs::copy(entry.path(), &to)?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o444))?;
        }
    }
    Ok(())
}

/// `program` as an absolute path: as given, or found in our `PATH`.
fn resolve(program: &Path) -> Result<PathBuf> {
    if program.components().count() > 1 || program.is_absolute() {
        if !program.is_absolute() {
            bail!(
                "{}: give a bare name or an absolute path",
                program.display()
            );
        }
        return Ok(program.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from(SANDBOX_PATH));
    program
        .to_str()
        .and_then(|name| crate::host::which_in(name, &path))
        .filter(|p| p.is_absolute())
        .ok_or_else(|| anyhow!("{} not found in PATH", program.display()))
}

fn open_nofollow(dir: Option<&OwnedFd>, name: &Path, directory: bool) -> Result<OwnedFd> {
    let c = CString::new(name.as_os_str().as_bytes())?;
    let mut flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    if directory {
        flags |= libc::O_DIRECTORY;
    }
    let base = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: valid C string and flags; the result is a new descriptor or -1.
    let fd = unsafe { libc::openat(base, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("opening {}", name.display()));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Signs (lower case) in the stderr of a tool whose allocation failed:
/// LLVM, C++, strerror(ENOMEM), bash's xmalloc, bison-style parsers.
const OUT_OF_MEMORY: &[&str] = &[
    "out of memory",
    "cannot allocate",
    "bad_alloc",
    "allocation failed",
    "memory exhausted",
];

fn classify(
    status: Option<ExitStatus>,
    stderr: &str,
    elapsed: Duration,
    limits: &Limits,
) -> Ending {
    let Some(status) = status else {
        return Ending::Deadline {
            secs: limits.wall.as_secs_f64(),
        };
    };
    let lower = stderr.to_ascii_lowercase();
    let oom = OUT_OF_MEMORY.iter().any(|m| lower.contains(m));
    let cpu = Ending::CpuLimit {
        secs: limits.cpu_secs,
    };
    let fsize = Ending::FileSizeLimit {
        bytes: limits.file_bytes,
    };
    let memory = Ending::MemoryLimit {
        bytes: limits.memory_bytes,
    };
    if let Some(signal) = status.signal() {
        return match signal {
            libc::SIGXCPU => cpu,
            libc::SIGXFSZ => fsize,
            // The CPU limit. A single-threaded tool's CPU time cannot
            // outrun wall time, so a SIGKILL before the limit's worth of
            // wall time is someone else's (the kernel's OOM killer).
            libc::SIGKILL if elapsed.as_secs_f64() + 0.05 >= limits.cpu_secs as f64 => cpu,
            _ if oom => memory,
            _ => Ending::Signal { signal },
        };
    }
    let code = status.code().unwrap_or(-1);
    // A tool that handles SIGXFSZ sees EFBIG and reports it; a shell
    // reports the signal that killed its child.
    if code != 0 && (lower.contains("file too large") || lower.contains("file size limit exceeded"))
    {
        fsize
    } else if code != 0 && lower.contains("cpu time limit exceeded") {
        cpu
    } else if code != 0 && oom {
        memory
    } else {
        Ending::Exited { code }
    }
}

/// Steps of [`ChildPlan::enter`], reported back by index when one fails.
const STEPS: &[&str] = &[
    "unshare(CLONE_NEWUSER)",
    "writing /proc/self/setgroups",
    "writing /proc/self/uid_map",
    "writing /proc/self/gid_map",
    "unshare(CLONE_NEWNET)",
    "unshare(CLONE_NEWNS)",
    "making all mounts private",
    "bind-mounting a directory into the sandbox",
    "remounting a bind mount with restrictions",
    "chroot into the sandbox",
    "chdir /work",
    "setgroups([])",
    "setresgid(nobody)",
    "setresuid(nobody)",
    "prctl(PR_SET_NO_NEW_PRIVS)",
    "prctl(PR_SET_PDEATHSIG)",
    "checking that the parent is alive",
    "setrlimit(RLIMIT_CPU)",
    "setrlimit(RLIMIT_AS)",
    "setrlimit(RLIMIT_FSIZE)",
    "setrlimit(RLIMIT_NOFILE)",
    "setrlimit(RLIMIT_CORE)",
];

/// Why each step may fail, when it is not obvious.
fn hint(step: &str) -> &'static str {
    if step.starts_with("unshare") || step.contains("mount") || step.starts_with("writing /proc") {
        "; isolating a compile needs root (CAP_SYS_ADMIN), or unprivileged user namespaces \
         (kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0) for other users"
    } else {
        ""
    }
}

/// Everything the child needs after the fork, prepared before it: between
/// fork and exec in a multi-threaded program only async-signal-safe calls
/// are allowed (no allocation).
struct ChildPlan {
    /// `None` when root: no user namespace needed.
    userns: Option<UserNs>,
    private_root: CString,
    binds: Vec<(CString, CString, libc::c_ulong)>,
    root: CString,
    work: CString,
    drop_to_nobody: bool,
    parent: libc::pid_t,
    rlimits: [(libc::__rlimit_resource_t, libc::rlimit); 5],
}

struct UserNs {
    setgroups: CString,
    uid_map_path: CString,
    gid_map_path: CString,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| anyhow!("NUL in path {}", p.display()))
}

impl ChildPlan {
    fn new(sb: &Jail, limits: &Limits) -> Result<ChildPlan> {
        let userns = if sb.as_root {
            None
        } else {
            // SAFETY: getuid/getgid have no preconditions.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            Some(UserNs {
                setgroups: CString::new("/proc/self/setgroups")?,
                uid_map_path: CString::new("/proc/self/uid_map")?,
                gid_map_path: CString::new("/proc/self/gid_map")?,
                uid_map: format!("{uid} {uid} 1\n").into_bytes(),
                gid_map: format!("{gid} {gid} 1\n").into_bytes(),
            })
        };
        let mut binds = Vec::new();
        for b in &sb.binds {
            // Keep the source mount's flags: inside a user namespace a
            // remount may not clear nosuid/nodev/noexec/atime flags it
            // inherited (they are locked), and we only add restrictions.
            let mut flags =
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | mount_flags(&b.src)?;
            flags |= match b.kind {
                BindKind::System => libc::MS_RDONLY | libc::MS_NODEV,
                BindKind::Device => libc::MS_RDONLY,
                BindKind::ReadOnlySelf => libc::MS_RDONLY | libc::MS_NODEV | libc::MS_NOEXEC,
                BindKind::WritableSelf => libc::MS_NODEV | libc::MS_NOEXEC,
            };
            binds.push((cstr(&b.src)?, cstr(&b.dst)?, flags));
        }
        let lim = |cur: u64, max: u64| libc::rlimit {
            rlim_cur: cur as libc::rlim_t,
            rlim_max: max as libc::rlim_t,
        };
        Ok(ChildPlan {
            userns,
            private_root: CString::new("/")?,
            binds,
            root: cstr(&sb.root)?,
            work: CString::new("/work")?,
            drop_to_nobody: sb.as_root,
            parent: std::process::id() as libc::pid_t,
            rlimits: [
                (libc::RLIMIT_CPU, lim(limits.cpu_secs, limits.cpu_secs)),
                (
                    libc::RLIMIT_AS,
                    lim(limits.memory_bytes, limits.memory_bytes),
                ),
                (
                    libc::RLIMIT_FSIZE,
                    lim(limits.file_bytes, limits.file_bytes),
                ),
                (
                    libc::RLIMIT_NOFILE,
                    lim(limits.open_files, limits.open_files),
                ),
                (libc::RLIMIT_CORE, lim(0, 0)),
            ],
        })
    }

    /// Runs in the child. On failure writes the failed step's index to
    /// `report` and returns the errno (which `spawn` hands to the parent).
    fn enter(&self, report: RawFd) -> io::Result<()> {
        let mut step = 0u8;
        let r = self.steps(&mut step);
        if r.is_err() {
            // SAFETY: write(2) of one byte from a valid buffer.
            unsafe { libc::write(report, (&step as *const u8).cast(), 1) };
        }
        r
    }

    fn steps(&self, step: &mut u8) -> io::Result<()> {
        fn check(rc: libc::c_int) -> io::Result<()> {
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
        // Position in STEPS; kept in step with the list above.
        let mut at = |k: u8| *step = k;
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY (whole block): raw system calls with valid, pre-built
        // arguments on this single-threaded child.
        unsafe {
            if let Some(ns) = &self.userns {
                at(0);
                check(libc::unshare(libc::CLONE_NEWUSER))?;
                at(1);
                write_file(&ns.setgroups, b"deny")?;
                at(2);
                write_file(&ns.uid_map_path, &ns.uid_map)?;
                at(3);
                write_file(&ns.gid_map_path, &ns.gid_map)?;
            }
            at(4);
            check(libc::unshare(libc::CLONE_NEWNET))?;
            at(5);
            check(libc::unshare(libc::CLONE_NEWNS))?;
            at(6);
            check(libc::mount(
                null,
                self.private_root.as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (src, dst, flags) in &self.binds {
                at(7);
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                at(8);
                check(libc::mount(
                    null,
                    dst.as_ptr(),
                    null,
                    *flags,
                    std::ptr::null(),
                ))?;
            }
            at(9);
            check(libc::chroot(self.root.as_ptr()))?;
            at(10);
            check(libc::chdir(self.work.as_ptr()))?;
            if self.drop_to_nobody {
                at(11);
                check(libc::setgroups(0, std::ptr::null()))?;
                at(12);
                check(libc::setresgid(NOBODY, NOBODY, NOBODY))?;
                at(13);
                check(libc::setresuid(NOBODY, NOBODY, NOBODY))?;
            }
            at(14);
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            at(15);
            check(libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ))?;
            at(16);
            // The parent may have died before PDEATHSIG was set.
            if libc::getppid() != self.parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            for (k, (resource, limit)) in self.rlimits.iter().enumerate() {
                at(17 + k as u8);
                check(libc::setrlimit(*resource, limit))?;
            }
            // Descriptors some other thread of ours opened without
            // O_CLOEXEC must not reach the tool. Best effort: needs 5.11.
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
        }
        Ok(())
    }
}

/// open/write/close, for /proc/self/*_map in the child.
///
/// # Safety
/// Only async-signal-safe calls; `path` is a valid C string.
unsafe fn write_file(path: &CString, data: &[u8]) -> io::Result<()> {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = libc::write(fd, data.as_ptr().cast(), data.len());
    let err = io::Error::last_os_error();
    libc::close(fd);
    if n != data.len() as isize {
        return Err(err);
    }
    Ok(())
}

/// The flags of the mount holding `p`, as `MS_*` bits worth preserving.
fn mount_flags(p: &Path) -> Result<libc::c_ulong> {
    let c = cstr(p)?;
    // SAFETY: statvfs fills the struct we pass.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("statvfs {}", p.display()));
    }
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    Ok(flags)
}

/// A close-on-exec, non-blocking pipe on which the child reports which
/// setup step failed.
struct ReportPipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl ReportPipe {
    fn new() -> Result<ReportPipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into `fds`.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error()).context("creating a pipe");
        }
        // SAFETY: two fresh descriptors nobody else owns.
        unsafe {
            Ok(ReportPipe {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            })
        }
    }

    /// Turn a failed spawn into "the sandbox could not be set up: STEP
    /// failed: ERRNO", when the child said which step.
    fn explain(self, e: anyhow::Error) -> anyhow::Error {
        drop(self.write);
        let mut step = [0u8; 1];
        // SAFETY: read(2) into a one-byte buffer.
        let n = unsafe { libc::read(self.read.as_raw_fd(), step.as_mut_ptr().cast(), 1) };
        if n != 1 {
            return e;
        }
        let Some(name) = STEPS.get(step[0] as usize) else {
            return e;
        };
        let errno = e
            .chain()
            .find_map(|c| c.downcast_ref::<io::Error>())
            .map(|io| io.to_string())
            .unwrap_or_else(|| format!("{e:#}"));
        anyhow!(
            "the sandbox could not be set up: {name} failed: {errno}{}",
            hint(name)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    fn sh(sb: &Jail, script: &str, limits: &Limits) -> Outcome {
        sb.run(Path::new("sh"), ["-c", script], limits).unwrap()
    }

    fn quick() -> Limits {
        Limits {
            wall: Duration::from_secs(20),
            ..Limits::default()
        }
    }

    #[test]
    fn the_child_is_nobody_in_a_bare_view_without_network() {
        let sb = Jail::new().unwrap();
        let script = "id -u; id -g; id -G; pwd; ls /; ls /root 2>&1; cat /etc/passwd 2>&1; \
                      ls /proc 2>&1; env | sort; ulimit -c; ulimit -n; ulimit -t; ulimit -f; \
                      ulimit -v; touch x 2>&1; echo hi > out/y && cat out/y";
        let o = sh(&sb, script, &quick());
        assert!(o.success(), "{o:?}");
        let lines: Vec<&str> = o.stdout.lines().collect();
        // SAFETY: plain getters.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        // Root's child becomes nobody; anyone else's keeps its ids.
        let (uid, gid) = if uid == 0 {
            (NOBODY, NOBODY)
        } else {
            (uid, gid)
        };
        let ids = [uid.to_string(), gid.to_string(), gid.to_string()];
        assert_eq!(&lines[..3], ids, "{}", o.stdout);
        assert_eq!(lines[3], "/work");
        let rest = o.stdout.lines().skip(4).collect::<Vec<_>>().join("\n");
        // Only the mirrored system directories, the devices and the work dir.
        for name in ["usr", "work", "dev", "etc"] {
            assert!(rest.contains(name), "{rest}");
        }
        for gone in ["/root", "/etc/passwd", "/proc"] {
            assert!(
                rest.lines()
                    .any(|l| l.contains(gone) && l.contains("No such file or directory")),
                "{gone} visible:\n{rest}"
            );
        }
        assert!(
            rest.contains("LANG=C\nPATH=/usr/bin:/bin\nPWD=/work"),
            "{rest}"
        );
        let limits = Limits::default();
        for want in [
            "0".to_string(),
            limits.open_files.to_string(),
            limits.cpu_secs.to_string(),
            (limits.file_bytes / 512).to_string(),
            (limits.memory_bytes / 1024).to_string(),
        ] {
            assert!(
                rest.lines().any(|l| l == want),
                "no ulimit {want} in:\n{rest}"
            );
        }
        assert!(
            rest.contains("touch: cannot touch 'x': Read-only file system"),
            "{rest}"
        );
        assert!(rest.ends_with("hi"), "{rest}");
    }

    #[test]
    fn network_namespace_has_only_a_loopback_that_is_down() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sb = Jail::new().unwrap();
        let sb = std::sync::Arc::new(sb);
        let runner = {
            let sb = sb.clone();
            std::thread::spawn(move || {
                let script = format!(
                    "echo $$ > out/pid; sleep 1; \
                     (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>&1 && echo CONNECTED"
                );
                sb.run(Path::new("bash"), ["-c", script.as_str()], &quick())
                    .unwrap()
            })
        };
        // Inspect the child from outside while it sleeps.
        let pid_file = sb.out_dir().join("pid");
        let start = Instant::now();
        let pid = loop {
            if let Ok(s) = std::fs::read_to_string(&pid_file) {
                if s.ends_with('\n') {
                    break s.trim().to_string();
                }
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no pid file");
            std::thread::sleep(Duration::from_millis(20));
        };
        let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).unwrap();
        let child_ns = ns(&pid);
        assert_ne!(
            child_ns,
            ns("self"),
            "the child shares our network namespace"
        );
        let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
        let ifaces: Vec<&str> = dev
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .collect();
        assert_eq!(ifaces, ["lo"], "{dev}");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
        assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
        let o = runner.join().unwrap();
        assert!(!o.stdout.contains("CONNECTED"), "{o:?}");
        assert!(o.stdout.contains("Network is unreachable"), "{o:?}");
    }

    #[test]
    fn deadline_kills_the_group() {
        let sb = Jail::new().unwrap();
        let limits = Limits {
            wall: Duration::from_millis(500),
            ..Limits::default()
        };
        let o = sh(&sb, "sleep 30 & sleep 30", &limits);
        assert!(matches!(o.ending, Ending::Deadline { .. }), "{o:?}");
        assert!(o.elapsed < Duration::from_secs(5));
        assert!(o.ending.reason().contains("wall-clock deadline"));
    }

    #[test]
    fn cpu_limit() {
        let sb = Jail::new().unwrap();
        let limits = Limits {
            cpu_secs: 1,
            ..quick()
        };
        let o = sh(&sb, "while :; do :; done", &limits);
        assert_eq!(o.ending, Ending::CpuLimit { secs: 1 }, "{o:?}");
        assert!(o.ending.is_limit());
        assert!(o.ending.reason().contains("CPU-time limit of 1 s"));
    }

    #[test]
    fn file_size_limit() {
        let sb = Jail::new().unwrap();
        let limits = Limits {
            file_bytes: 1 << 20,
            ..quick()
        };
        let o = sh(&sb, "exec head -c 5000000 /dev/zero > out/big", &limits);
        assert_eq!(o.ending, Ending::FileSizeLimit { bytes: 1 << 20 }, "{o:?}");
        assert_eq!(
            std::fs::metadata(sb.out_dir().join("big")).unwrap().len(),
            1 << 20
        );
    }

    #[test]
    fn memory_limit() {
        let sb = Jail::new().unwrap();
        let limits = Limits {
            memory_bytes: 64 << 20,
            ..quick()
        };
        // A shell string doubling until allocation fails.
        let o = sb
            .run(
                Path::new("bash"),
                ["-c", "x=y; while :; do x=$x$x; done"],
                &limits,
            )
            .unwrap();
        assert_eq!(o.ending, Ending::MemoryLimit { bytes: 64 << 20 }, "{o:?}");
    }

    #[test]
    fn inputs_are_read_only_and_outputs_read_safely() {
        let sb = Jail::new().unwrap();
        sb.add_file("in.txt", b"input").unwrap();
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir(tree.path().join("sub")).unwrap();
        std::fs::write(tree.path().join("sub/h.h"), "h").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tree.path().join("link")).unwrap();
        sb.add_tree("inc", tree.path()).unwrap();
        let o = sh(
            &sb,
            "cat in.txt inc/sub/h.h; ls inc; echo x >> in.txt 2>&1; echo x > inc/new 2>&1; \
             echo obj > out/a.o; ln -s /etc/passwd out/link; ln out/a.o out/hard",
            &quick(),
        );
        assert!(o.stdout.starts_with("inputh"), "{o:?}");
        assert!(!o.stdout.contains("link"), "the symlink was copied: {o:?}");
        assert_eq!(
            o.stderr.matches("Read-only file system").count()
                + o.stderr.matches("Permission denied").count(),
            2,
            "inputs are writable: {o:?}"
        );
        assert!(sb.read_output("in.txt", 100).is_ok());
        let err = sb.read_output("out/link", 100).unwrap_err();
        assert!(format!("{err:#}").contains("opening"), "{err:#}");
        let err = sb.read_output("out/a.o", 100).unwrap_err();
        assert!(format!("{err:#}").contains("not a plain file"), "{err:#}");
        assert!(sb.read_output("../root/work/in.txt", 100).is_err());
        std::fs::remove_file(sb.out_dir().join("hard")).unwrap();
        assert_eq!(sb.read_output("out/a.o", 100).unwrap(), b"obj\n");
        assert!(sb.read_output("out/a.o", 2).is_err());
    }

    #[test]
    fn programs_outside_the_view_are_refused() {
        let sb = Jail::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("tool");
        std::fs::copy("/bin/true", &prog).unwrap();
        let err = sb.run(&prog, ["x"], &quick()).unwrap_err();
        assert!(
            format!("{err:#}").contains("outside the sandbox"),
            "{err:#}"
        );
        let mut sb = sb;
        // Exposed: visible at the same path (readable by nobody: 0755 dirs).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        sb.expose(dir.path()).unwrap();
        let o = sb.run(&prog, ["x"], &quick()).unwrap();
        assert!(o.success(), "{o:?}");
    }

    #[test]
    fn classification() {
        let l = Limits::default();
        let st = |raw: i32| Some(ExitStatus::from_raw(raw));
        let d = Duration::from_secs(1);
        assert_eq!(classify(st(0), "", d, &l), Ending::Exited { code: 0 });
        assert_eq!(
            classify(st(1 << 8), "error", d, &l),
            Ending::Exited { code: 1 }
        );
        assert_eq!(
            classify(
                st(libc::SIGABRT),
                "LLVM ERROR: out of memory\nAllocation failed",
                d,
                &l
            ),
            Ending::MemoryLimit {
                bytes: l.memory_bytes
            }
        );
        assert_eq!(
            classify(st(libc::SIGKILL), "", d, &l),
            Ending::Signal { signal: 9 }
        );
        assert_eq!(
            classify(
                st(libc::SIGKILL),
                "",
                Duration::from_secs(l.cpu_secs + 2),
                &l
            ),
            Ending::CpuLimit { secs: l.cpu_secs }
        );
        assert_eq!(
            classify(
                st(1 << 8),
                "error: IO failure on output stream: File too large",
                d,
                &l
            ),
            Ending::FileSizeLimit {
                bytes: l.file_bytes
            }
        );
        assert_eq!(
            classify(st(153 << 8), "sh: File size limit exceeded", d, &l),
            Ending::FileSizeLimit {
                bytes: l.file_bytes
            }
        );
        assert_eq!(
            classify(st(152 << 8), "CPU time limit exceeded", d, &l),
            Ending::CpuLimit { secs: l.cpu_secs }
        );
        assert!(matches!(classify(None, "", d, &l), Ending::Deadline { .. }));
    }

    #[test]
    fn setup_failures_name_the_step() {
        let pipe = ReportPipe::new().unwrap();
        let step = 4u8;
        // SAFETY: one byte into our own pipe.
        unsafe { libc::write(pipe.write.as_raw_fd(), (&step as *const u8).cast(), 1) };
        let e = anyhow::Error::from(io::Error::from_raw_os_error(libc::EPERM))
            .context("starting clang");
        let msg = format!("{:#}", pipe.explain(e));
        assert!(
            msg.starts_with("the sandbox could not be set up: unshare(CLONE_NEWNET) failed: Operation not permitted"),
            "{msg}"
        );
        assert!(msg.contains("needs root"), "{msg}");
    }
}
