//! Host capability checks: what schedcp can do on this machine and what to
//! install or fix for the rest.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::lab::{qemu, Lab};

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was found (a version, a path, a reason).
    pub detail: String,
    /// What to do when `ok` is false.
    pub fix: Option<String>,
    /// Whether schedcp's lab depends on this check.
    pub required_for_lab: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    pub host_kernel: String,
    pub checks: Vec<Check>,
    /// True when `schedcp lab run` can work here.
    pub lab_ready: bool,
    /// Which knob groups this machine allows (`schedcp knob list` for each knob).
    pub knobs: Vec<crate::knobs::discover::GroupSummary>,
}

fn check(name: &'static str, required_for_lab: bool, r: Result<String, (String, String)>) -> Check {
    match r {
        Ok(detail) => Check {
            name,
            ok: true,
            detail,
            fix: None,
            required_for_lab,
        },
        Err((detail, fix)) => Check {
            name,
            ok: false,
            detail,
            fix: Some(fix),
            required_for_lab,
        },
    }
}

pub fn run(lab: &Lab) -> DoctorReport {
    let cfg = lab.config();
    let checks = vec![
        check("host_sched_ext", false, host_sched_ext()),
        check("bpf", false, bpf_usable()),
        check("tracefs", false, tracefs()),
        check("kvm", false, kvm(lab)),
        check(
            "qemu",
            true,
            tool_version(
                &cfg.lab.qemu,
                &["--version"],
                "install qemu-system-x86 (scripts/setup.sh)",
            ),
        ),
        check("clang", true, clang(&cfg.lab.clang)),
        check("guest_kernel", true, guest_kernel(lab)),
        check(
            "guest_agent",
            true,
            lab.guest_agent()
                .map(|p| p.display().to_string())
                .map_err(|e| (e.to_string(), "cargo build --release --workspace".into())),
        ),
        check("cache_dir", true, cache_dir(lab.cache_dir())),
    ];
    let lab_ready = checks.iter().filter(|c| c.required_for_lab).all(|c| c.ok);
    DoctorReport {
        host_kernel: crate::host::kernel_release(),
        checks,
        lab_ready,
        knobs: crate::knobs::discover::groups(&crate::knobs::discover::list()),
    }
}

fn host_sched_ext() -> Result<String, (String, String)> {
    match std::fs::read_to_string("/sys/kernel/sched_ext/state") {
        Ok(s) => Ok(format!("yes (state: {})", s.trim())),
        Err(_) => Err((
            "no: this kernel lacks CONFIG_SCHED_CLASS_EXT".into(),
            "schedulers run in the lab micro-VM instead; to deploy on this host, boot a kernel with CONFIG_SCHED_CLASS_EXT=y".into(),
        )),
    }
}

/// Can we create a BPF map? That needs CAP_BPF (root) and a kernel with bpf().
fn bpf_usable() -> Result<String, (String, String)> {
    let mut attr = [0u8; 128];
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries.
    attr[0..4].copy_from_slice(&2u32.to_ne_bytes()); // BPF_MAP_TYPE_ARRAY
    attr[4..8].copy_from_slice(&4u32.to_ne_bytes());
    attr[8..12].copy_from_slice(&8u32.to_ne_bytes());
    attr[12..16].copy_from_slice(&1u32.to_ne_bytes());
    // SAFETY: bpf(BPF_MAP_CREATE=0, attr, size) reads `attr` only.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), attr.len()) };
    if fd >= 0 {
        // SAFETY: fd was just returned by the kernel and is owned here.
        unsafe { libc::close(fd as i32) };
        Ok("yes (created a BPF array map)".into())
    } else {
        let e = std::io::Error::last_os_error();
        Err((
            format!("no: bpf(BPF_MAP_CREATE) failed: {e}"),
            "run as root (CAP_BPF, CAP_PERFMON) on a kernel with CONFIG_BPF_SYSCALL".into(),
        ))
    }
}

fn tracefs() -> Result<String, (String, String)> {
    for p in [
        "/sys/kernel/tracing/events/sched",
        "/sys/kernel/debug/tracing/events/sched",
    ] {
        if Path::new(p).is_dir() {
            return Ok(format!(
                "mounted ({})",
                Path::new(p)
                    .parent()
                    .map(|x| x.display().to_string())
                    .unwrap_or_default()
            ));
        }
    }
    Err((
        "not mounted".into(),
        "mount -t tracefs nodev /sys/kernel/tracing".into(),
    ))
}

fn kvm(lab: &Lab) -> Result<String, (String, String)> {
    if let Err(e) = qemu::kvm_device_usable() {
        return Err((format!("no ({e})"), "the lab falls back to TCG (slower); for KVM, run on bare metal or enable nested virtualisation".into()));
    }
    match lab.kvm_runtime_status() {
        Some((true, _)) => Ok("yes (a lab VM ran under KVM)".into()),
        Some((false, reason)) => Err((
            format!(
                "/dev/kvm opens but a guest failed under KVM: {}",
                reason.unwrap_or_default()
            ),
            "the lab falls back to TCG automatically; nested KVM is not usable on this host".into(),
        )),
        None => Ok(
            "/dev/kvm opens (not yet proven by a lab run; the lab falls back to TCG if KVM fails)"
                .into(),
        ),
    }
}

fn tool_version(tool: &str, args: &[&str], fix: &str) -> Result<String, (String, String)> {
    match Command::new(tool).args(args).output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string()),
        Ok(o) => Err((
            format!(
                "{tool} failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            fix.into(),
        )),
        Err(e) => Err((format!("{tool}: {e}"), fix.into())),
    }
}

fn clang(clang: &str) -> Result<String, (String, String)> {
    let v = tool_version(clang, &["--version"], "install clang-19 (scripts/setup.sh)")?;
    let major: u32 = v
        .split("version ")
        .nth(1)
        .and_then(|r| r.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 18 {
        return Err((
            format!("{v}: the sched_ext headers need clang >= 18"),
            "install clang-19 and set lab.clang".into(),
        ));
    }
    Ok(v)
}

fn guest_kernel(lab: &Lab) -> Result<String, (String, String)> {
    match lab.kernel() {
        Ok(k) => Ok(format!(
            "{} ({} {}) with CONFIG_SCHED_CLASS_EXT=y",
            k.release, k.package, k.package_version
        )),
        Err(e) => Err((e.to_string(), "schedcp lab fetch-kernel".into())),
    }
}

fn cache_dir(dir: &Path) -> Result<String, (String, String)> {
    match std::fs::create_dir_all(dir).and_then(|_| tempfile::tempfile_in(dir)) {
        Ok(_) => Ok(format!("{} (writable)", dir.display())),
        Err(e) => Err((
            format!("{}: {e}", dir.display()),
            "set cache_dir in the config or SCHEDCP_CACHE to a writable directory".into(),
        )),
    }
}

impl DoctorReport {
    pub fn render(&self) -> String {
        let mut s = format!("host kernel {}\n", self.host_kernel);
        for c in &self.checks {
            s.push_str(&format!(
                "{} {:<14} {}\n",
                if c.ok { "ok  " } else { "MISS" },
                c.name,
                c.detail
            ));
            if let Some(f) = &c.fix {
                s.push_str(&format!("     {:<14} → {f}\n", ""));
            }
        }
        s.push_str(if self.lab_ready {
            "lab: ready\n"
        } else {
            "lab: not ready (fix the checks above)\n"
        });
        for g in &self.knobs {
            s.push_str(&format!(
                "knobs {:<9} {}/{} writable here{}\n",
                g.group.as_str(),
                g.available,
                g.total,
                if g.unavailable_because.is_empty() {
                    String::new()
                } else {
                    format!(" (not: {})", g.unavailable_because.join("; "))
                }
            ));
        }
        s
    }
}
