//! A sched_ext scheduler that is its own program (the scx schedulers from
//! the Rust crate registry: `scx_bpfland`, `scx_lavd`, ...). It loads and attaches its BPF
//! itself; we start it, wait for the kernel to show it enabled, watch that
//! the process lives, and stop it the way it expects (SIGINT, which scx
//! schedulers handle by detaching and printing their exit record).
//!
//! Shared by the guest agent (dynamic trials in the lab micro-VM) and the
//! deploy service, so a binary is started and stopped the same way in both.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::sysfs;

/// How much of the scheduler's output is kept for reports (its tail).
const OUTPUT_TAIL_BYTES: u64 = 8 * 1024;

/// A running external scheduler process.
pub struct ExternalScheduler {
    child: Child,
    output: PathBuf,
    exited: Option<ExitStatus>,
}

/// The ELF kind of a scheduler artefact, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artefact {
    /// A relocatable BPF object (`ET_REL`, `EM_BPF`): loaded through struct_ops.
    BpfObject,
    /// An x86-64 executable that loads its own BPF (`ET_EXEC`/`ET_DYN`).
    Executable,
}

impl Artefact {
    /// Classify by the ELF header; `None` for anything else.
    pub fn of(bytes: &[u8]) -> Option<Artefact> {
        if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
            return None; // not a 64-bit little-endian ELF file
        }
        let e_type = u16::from_le_bytes([bytes[16], bytes[17]]);
        let e_machine = u16::from_le_bytes([bytes[18], bytes[19]]);
        const ET_REL: u16 = 1;
        const ET_EXEC: u16 = 2;
        const ET_DYN: u16 = 3;
        const EM_X86_64: u16 = 62;
        const EM_BPF: u16 = 247;
        match (e_type, e_machine) {
            (ET_REL, EM_BPF) => Some(Artefact::BpfObject),
            (ET_EXEC | ET_DYN, EM_X86_64) => Some(Artefact::Executable),
            _ => None,
        }
    }
}

impl ExternalScheduler {
    /// Start `binary` with `args`; its stdout and stderr go to `output`.
    /// The process gets its own process group so a stop signal reaches it
    /// and not us, and it dies with its parent (PR_SET_PDEATHSIG) so a
    /// crashed supervisor never leaves an unwatched scheduler attached.
    pub fn spawn(binary: &Path, args: &[String], output: &Path) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt;
        let log = File::create(output)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", output.display()))?;
        let err = log.try_clone()?;
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", binary.display()))?;
        Ok(ExternalScheduler {
            child,
            output: output.to_path_buf(),
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until the kernel shows a scheduler enabled, the process exits,
    /// or `timeout` passes. Loading includes the kernel verifier, which is
    /// slow under emulation; the caller picks the budget.
    pub fn wait_enabled(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(format!(
                    "the scheduler exited before attaching ({}): {}",
                    describe(status),
                    self.output_tail().trim()
                ));
            }
            if sysfs::state().as_deref() == Some("enabled") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "sched_ext state is '{}' {} ms after start, expected 'enabled'",
                    sysfs::state().unwrap_or_default(),
                    timeout.as_millis()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status, once the process has exited (never blocks).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// SIGINT, then SIGKILL if it has not exited within `grace`. Returns how
    /// it ended and whether it needed the SIGKILL.
    pub fn stop(&mut self, grace: Duration) -> (Option<ExitStatus>, bool) {
        if let Some(s) = self.exit_status() {
            return (Some(s), false);
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child, which we have not reaped.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(s) = self.exit_status() {
                return (Some(s), false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
        (self.exited, true)
    }

    /// The last few KiB the scheduler printed, without terminal colours.
    pub fn output_tail(&self) -> String {
        let Ok(mut f) = File::open(&self.output) else {
            return String::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(OUTPUT_TAIL_BYTES)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        strip_ansi(&String::from_utf8_lossy(&buf))
    }
}

impl Drop for ExternalScheduler {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Drop ANSI escape sequences (`ESC [ ... final-byte`): scx schedulers
/// colour their logs even when writing to a file.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// "exit code 1", "killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artefacts_are_told_apart_by_their_elf_header() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(Artefact::of(&me), Some(Artefact::Executable));
        let mut bpf = me[..64].to_vec();
        bpf[16..18].copy_from_slice(&1u16.to_le_bytes());
        bpf[18..20].copy_from_slice(&247u16.to_le_bytes());
        assert_eq!(Artefact::of(&bpf), Some(Artefact::BpfObject));
        assert_eq!(Artefact::of(b"#!/bin/sh\necho hi\n"), None);
        assert_eq!(Artefact::of(b""), None);
    }

    #[test]
    fn colours_are_stripped_from_output() {
        assert_eq!(
            strip_ansi("\x1b[0m\x1b[34m[INFO] \x1b[0mscheduler flags: 0x36"),
            "[INFO] scheduler flags: 0x36"
        );
    }

    #[test]
    fn a_process_that_ignores_sigint_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let args = vec![
            "-c".to_string(),
            "trap '' INT; echo started; sleep 30".to_string(),
        ];
        let mut p = ExternalScheduler::spawn(Path::new("/bin/sh"), &args, &out).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(p.exit_status().is_none());
        let t = Instant::now();
        let (status, killed) = p.stop(Duration::from_millis(300));
        assert!(killed);
        assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGKILL));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(p.output_tail().contains("started"));
    }

    #[test]
    fn sigint_stops_a_cooperative_process_and_an_early_exit_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let args = vec![
            "-c".to_string(),
            "trap 'exit 0' INT; while :; do sleep 0.05; done".to_string(),
        ];
        let mut p = ExternalScheduler::spawn(Path::new("/bin/sh"), &args, &out).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let (status, killed) = p.stop(Duration::from_secs(5));
        assert!(!killed);
        assert_eq!(status.and_then(|s| s.code()), Some(0));

        // On this host (no sched_ext) nothing ever shows enabled: an exit
        // before attach is reported with the program's own words.
        let args = vec![
            "-c".to_string(),
            "echo 'no sched_ext here' >&2; exit 3".to_string(),
        ];
        let mut p = ExternalScheduler::spawn(Path::new("/bin/sh"), &args, &out).unwrap();
        let e = p.wait_enabled(Duration::from_secs(5)).unwrap_err();
        assert!(
            e.contains("exit code 3") && e.contains("no sched_ext here"),
            "{e}"
        );
    }
}
