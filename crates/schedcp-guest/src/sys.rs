//! The bits of an init process: mounts, clocks, kernel log, power-off.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};

/// Mount the pseudo filesystems the loader and the workloads need.
/// libbpf wants bpffs for struct_ops links and tracefs is where the kernel
/// exposes sched_ext tracepoints; neither exists until init mounts them.
pub fn mount_pseudo_filesystems() -> Result<()> {
    let mounts: [(&str, &str, &str); 6] = [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("bpf", "/sys/fs/bpf", "bpf"),
        ("tracefs", "/sys/kernel/tracing", "tracefs"),
        ("tmpfs", "/tmp", "tmpfs"),
    ];
    for (src, target, fstype) in mounts {
        fs::create_dir_all(target).with_context(|| format!("creating {target}"))?;
        mount(
            Some(src),
            target,
            Some(fstype),
            MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mounting {fstype} on {target}"))?;
    }
    // debugfs holds the fair scheduler's knobs (`sched/`), which knob
    // trials write; a kernel without it fails those trials, not the boot.
    let _ = mount(
        Some("debugfs"),
        "/sys/kernel/debug",
        Some("debugfs"),
        MsFlags::empty(),
        None::<&str>,
    );
    Ok(())
}

pub use schedcp_scx::sysfs::uptime_s;

pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn nr_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Kernel log lines mentioning sched_ext, read non-blockingly from /dev/kmsg.
pub fn sched_ext_kernel_messages() -> Vec<String> {
    let Ok(file) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // Each read() returns one record; EAGAIN ends the log. A record looks like
    // "6,123,456789,-;sched_ext: ..." with continuation lines starting with ' '.
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = line
                    .split_once(';')
                    .map_or(line.as_str(), |(_, t)| t)
                    .trim_end();
                if text.contains("sched_ext") || text.contains("scx_") {
                    out.push(text.to_string());
                }
            }
        }
    }
    out
}

/// Power the VM off. QEMU runs with -no-reboot, so this ends the VM.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // Only reachable when not PID 1 (e.g. running the agent on a dev box).
    std::process::exit(0)
}

pub fn is_init() -> bool {
    std::process::id() == 1
}
