//! Booting the micro-VM: QEMU's command line, the accelerator choice with a
//! fallback from KVM to TCG, the wall-clock watchdog, and reading the guest's
//! report port while it runs.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use schedcp_proto::REPORT_PORT_NAME;
use serde::Serialize;

use crate::config::{Clock, TcgThreads};
use crate::host::process::Group;

/// The accelerator a VM actually ran with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    Kvm,
    Tcg,
}

impl Accelerator {
    pub fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

pub struct VmSpec<'a> {
    pub qemu: &'a str,
    pub tcg_threads: TcgThreads,
    /// The guest clock under TCG (ignored under KVM).
    pub clock: Clock,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub vcpus: u32,
    pub mem_mib: u32,
    pub accel: Accelerator,
    pub report_path: PathBuf,
    pub console_path: PathBuf,
    pub timeout: Duration,
    /// More devices (the lab node's network and control port).
    pub extra_args: Vec<String>,
}

#[derive(Debug)]
pub struct VmExit {
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    /// Set when KVM was asked for but could not run this guest.
    pub kvm_failure: Option<String>,
    pub elapsed: Duration,
    pub stderr: String,
    /// QEMU was stopped because the guest wrote more than
    /// [`MAX_GUEST_OUTPUT_BYTES`] to its console or report port.
    pub output_limit: bool,
}

/// The most a guest may write to one of its files (console log, report
/// port): RLIMIT_FSIZE on QEMU, so a flooding guest cannot fill the disk.
pub const MAX_GUEST_OUTPUT_BYTES: u64 = 64 << 20;

impl VmSpec<'_> {
    fn command(&self) -> Command {
        let mut c = Command::new(self.qemu);
        let (accel, cpu) = match (self.accel, self.tcg_threads) {
            (Accelerator::Kvm, _) => ("kvm", "host"),
            (Accelerator::Tcg, TcgThreads::Single) => ("tcg,thread=single", "max"),
            (Accelerator::Tcg, TcgThreads::Multi) => ("tcg,thread=multi", "max"),
        };
        c.args(["-M", "pc", "-accel", accel, "-cpu", cpu])
            .args([
                "-smp",
                &self.vcpus.to_string(),
                "-m",
                &self.mem_mib.to_string(),
            ])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(self.kernel)
            .arg("-initrd")
            .arg(self.initrd)
            // panic=-1 turns a guest panic into a reboot, which -no-reboot turns into an exit.
            .args([
                "-append",
                "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init",
            ])
            .arg("-serial")
            .arg(format!("file:{}", self.console_path.display()))
            .args(["-device", "virtio-serial-pci"])
            .arg("-chardev")
            .arg(format!(
                "file,id=report,path={}",
                self.report_path.display()
            ))
            .args([
                "-device",
                &format!("virtserialport,chardev=report,name={REPORT_PORT_NAME}"),
            ])
            .args(&self.extra_args)
            // A guest that escapes into QEMU meets a seccomp filter (no
            // obsolete or resource-control syscalls, no spawning) ...
            .args([
                "-sandbox",
                "on,obsolete=deny,spawn=deny,resourcecontrol=deny",
            ]);
        // ... and, when we are root, no root: QEMU drops to `nobody` once its
        // files, sockets and /dev/kvm are open. (`elevateprivileges=deny`
        // would forbid that very drop; after it, set*id cannot go back.)
        if nix::unistd::geteuid().is_root() {
            c.args(["-runas", "nobody"]);
        }
        if self.accel == Accelerator::Tcg {
            c.args(self.clock.qemu_args());
        }
        c
    }
}

/// Boot the VM and wait for it to power off, to fail, or to hit the
/// watchdog. Every complete report line is handed to `on_message` as it
/// arrives, so callers can show progress.
pub fn boot<M: serde::de::DeserializeOwned>(
    spec: &VmSpec<'_>,
    on_message: &mut dyn FnMut(M),
) -> Result<VmExit> {
    std::fs::write(&spec.report_path, b"")?;
    let start = Instant::now();
    let mut cmd = spec.command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: MAX_GUEST_OUTPUT_BYTES as libc::rlim_t,
                rlim_max: MAX_GUEST_OUTPUT_BYTES as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // If the thread waiting for this VM dies (the daemon stops mid-verify),
    // the VM dies with it instead of running on unsupervised.
    let mut vm = Group::spawn(&mut cmd, true).with_context(|| {
        format!(
            "starting {} (install qemu-system-x86: scripts/setup.sh)",
            spec.qemu
        )
    })?;
    let stderr = collect_stderr(vm.child_mut());
    let mut reader = ReportReader::new(&spec.report_path);
    let mut kvm_failure = None;
    let status = vm.poll_until(start + spec.timeout, Duration::from_millis(25), &mut || {
        reader.poll(on_message);
        if spec.accel == Accelerator::Kvm {
            let err = stderr.lock().map(|s| s.clone()).unwrap_or_default();
            // QEMU does not exit on a KVM internal error: the vCPU just stops.
            if let Some(line) = err.lines().find(|l| {
                l.contains("KVM internal error") || l.contains("failed to initialize kvm")
            }) {
                kvm_failure = Some(line.trim().to_string());
                return false;
            }
        }
        true
    })?;
    reader.poll(on_message);
    let stderr = stderr.lock().map(|s| s.clone()).unwrap_or_default();
    if kvm_failure.is_none()
        && spec.accel == Accelerator::Kvm
        && status.is_some_and(|s| !s.success())
    {
        kvm_failure = stderr
            .lines()
            .find(|l| l.to_lowercase().contains("kvm"))
            .map(|l| l.trim().to_string());
    }
    let output_limit = status.is_some_and(|s| s.signal() == Some(libc::SIGXFSZ));
    Ok(VmExit {
        timed_out: status.is_none() && kvm_failure.is_none(),
        output_limit,
        status,
        kvm_failure,
        elapsed: start.elapsed(),
        stderr,
    })
}

fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    if let Some(mut err) = child.stderr.take() {
        let buf = buf.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                if let Ok(mut b) = buf.lock() {
                    if b.len() < 64 << 10 {
                        b.push_str(&String::from_utf8_lossy(&chunk[..n]));
                    }
                }
            }
        });
    }
    buf
}

/// Follows the report file QEMU appends to, yielding whole JSON lines.
struct ReportReader {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl ReportReader {
    fn new(path: &Path) -> Self {
        ReportReader {
            path: path.to_path_buf(),
            offset: 0,
            partial: String::new(),
        }
    }

    fn poll<M: serde::de::DeserializeOwned>(&mut self, on_message: &mut dyn FnMut(M)) {
        let Ok(mut f) = File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut reader = BufReader::new(f);
        let mut line = String::new();
        while let Ok(n) = reader.read_line(&mut line) {
            if n == 0 {
                break;
            }
            self.offset += n as u64;
            self.partial.push_str(&line);
            line.clear();
            if self.partial.ends_with('\n') {
                let text = std::mem::take(&mut self.partial);
                match serde_json::from_str::<M>(text.trim()) {
                    Ok(msg) => on_message(msg),
                    Err(e) => {
                        tracing::warn!("unparseable report line from guest: {e}: {}", text.trim())
                    }
                }
            }
        }
    }
}

/// Whether /dev/kvm can be opened for a VM at all (a cheap first check; a
/// nested KVM can still fail at run time, which [`boot`] detects).
pub fn kvm_device_usable() -> Result<(), String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("/dev/kvm: {e}")),
    }
}

/// The first line of a guest kernel crash in the console log, if any.
pub fn kernel_crash(console_log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(console_log).ok()?;
    let markers = ["Kernel panic", "Oops:", "BUG:", "general protection fault"];
    let line = text
        .lines()
        .find(|l| markers.iter().any(|m| l.contains(m)))?;
    // Drop the "[    9.81] " timestamp.
    Some(
        line.split_once("] ")
            .map_or(line, |(_, rest)| rest)
            .trim()
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_first_crash_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, "[    1.0] ok\n[    9.818996] Oops: int3: 0000 [#1] SMP NOPTI\n[    9.82] Kernel panic - not syncing\n").unwrap();
        assert_eq!(
            super::kernel_crash(&log).as_deref(),
            Some("Oops: int3: 0000 [#1] SMP NOPTI")
        );
        std::fs::write(&log, "[    1.0] all fine\n").unwrap();
        assert_eq!(super::kernel_crash(&log), None);
    }
}
