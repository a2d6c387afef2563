//! The cgroup CPU controller for per-workload knobs: one cgroup per
//! workload, `schedcp/<workload>`, created by schedcp, holding only that
//! workload's processes (children inherit it), removed on restore.
//!
//! cgroup v2 is used when its hierarchy has the `cpu` controller; else the
//! v1 `cpu` hierarchy (as on these machines, where cgroup2 is mounted at
//! /sys/fs/cgroup/unified with no controllers). Values are spoken in v2
//! units and converted for v1.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Hierarchy {
    pub root: PathBuf,
    pub v2: bool,
}

/// The CPU controller's hierarchy on this machine, if any.
pub fn hierarchy() -> Option<Hierarchy> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mut v1 = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(dir), Some(fs), Some(opts)) = (f.get(1), f.get(2), f.get(3)) else {
            continue;
        };
        if *fs == "cgroup2" {
            let ctl = std::fs::read_to_string(Path::new(dir).join("cgroup.controllers"))
                .unwrap_or_default();
            if ctl.split_whitespace().any(|c| c == "cpu") {
                return Some(Hierarchy {
                    root: PathBuf::from(dir),
                    v2: true,
                });
            }
        } else if *fs == "cgroup" && opts.split(',').any(|o| o == "cpu") {
            v1 = Some(Hierarchy {
                root: PathBuf::from(dir),
                v2: false,
            });
        }
    }
    v1
}

/// The file a knob uses in this hierarchy, if it has one.
pub fn file_for<'a>(h: &Hierarchy, v2_file: &'a str, v1_file: Option<&'a str>) -> Option<&'a str> {
    if h.v2 {
        Some(v2_file)
    } else {
        v1_file
    }
}

/// Whether the hierarchy offers `file` to a child cgroup: v1 shows every
/// cpu file at the root too; v2 shows them only in children, so the
/// controller being present is what counts (uclamp needs its kernel option).
pub fn offers(h: &Hierarchy, file: &str) -> bool {
    if h.v2 {
        !file.starts_with("cpu.uclamp")
            || Path::new("/proc/sys/kernel/sched_util_clamp_min").exists()
    } else {
        h.root.join(file).exists()
    }
}

/// `schedcp/<workload>` in the hierarchy.
pub fn dir(h: &Hierarchy, workload: &str) -> PathBuf {
    h.root
        .join("schedcp")
        .join(crate::host::safe_file_name(workload))
}

/// Create the workload's cgroup (and, on v2, delegate the cpu controller
/// down to it). Returns whether it was created now.
pub fn ensure(h: &Hierarchy, workload: &str) -> Result<bool, Error> {
    let d = dir(h, workload);
    if d.is_dir() {
        return Ok(false);
    }
    if h.v2 {
        enable_cpu(&h.root)?;
        std::fs::create_dir_all(d.parent().expect("has parent"))
            .map_err(|e| io("creating", &d, e))?;
        enable_cpu(d.parent().expect("has parent"))?;
    }
    std::fs::create_dir_all(&d).map_err(|e| io("creating", &d, e))?;
    Ok(true)
}

fn enable_cpu(dir: &Path) -> Result<(), Error> {
    let ctl = dir.join("cgroup.subtree_control");
    let now = std::fs::read_to_string(&ctl).unwrap_or_default();
    if now.split_whitespace().any(|c| c == "cpu") {
        return Ok(());
    }
    std::fs::write(&ctl, "+cpu").map_err(|e| io("enabling cpu in", &ctl, e))
}

/// Write a knob's canonical (v2-unit) value into the workload's cgroup.
pub fn write(h: &Hierarchy, workload: &str, file: &str, canonical: &str) -> Result<(), Error> {
    let d = dir(h, workload);
    for (f, v) in to_files(h, file, canonical) {
        let p = d.join(&f);
        std::fs::write(&p, &v).map_err(|e| io(&format!("writing '{v}' to"), &p, e))?;
    }
    Ok(())
}

/// Read a knob's value back, in canonical v2 units.
pub fn read(h: &Hierarchy, workload: &str, file: &str) -> Result<String, Error> {
    let d = dir(h, workload);
    let get = |f: &str| -> Result<String, Error> {
        let p = d.join(f);
        std::fs::read_to_string(&p)
            .map(|s| s.trim().to_string())
            .map_err(|e| io("reading", &p, e))
    };
    Ok(match (h.v2, file) {
        (false, "cpu.shares") => {
            let shares: u64 = get(file)?.parse().unwrap_or(1024);
            (shares * 100).div_ceil(1024).clamp(1, 10000).to_string()
        }
        (false, "cpu.cfs_quota_us") => {
            let q: i64 = get("cpu.cfs_quota_us")?.parse().unwrap_or(-1);
            let p = get("cpu.cfs_period_us")?;
            if q < 0 {
                "max".into()
            } else {
                format!("{q} {p}")
            }
        }
        (true, "cpu.max") => {
            let v = get(file)?;
            if v.starts_with("max") {
                "max".into()
            } else {
                v
            }
        }
        (_, f) if f.starts_with("cpu.uclamp") => {
            let v = get(f)?;
            if v == "max" {
                "100".into()
            } else {
                v.parse::<f64>()
                    .map_or(v, |x| format!("{}", x.round() as i64))
            }
        }
        _ => get(file)?,
    })
}

/// v2 units to the files and values of this hierarchy.
fn to_files(h: &Hierarchy, file: &str, v: &str) -> Vec<(String, String)> {
    match (h.v2, file) {
        // v2 weight 100 is v1's 1024 shares.
        (false, "cpu.shares") => {
            let w: u64 = v.parse().unwrap_or(100);
            vec![(file.into(), (w * 1024 / 100).clamp(2, 262_144).to_string())]
        }
        (false, "cpu.cfs_quota_us") => match v.split_once(' ') {
            Some((q, p)) => vec![
                ("cpu.cfs_period_us".into(), p.into()),
                ("cpu.cfs_quota_us".into(), q.into()),
            ],
            None => vec![("cpu.cfs_quota_us".into(), "-1".into())],
        },
        _ => vec![(file.into(), v.into())],
    }
}

/// Move a process (all its threads) into the workload's cgroup. Returns
/// the cgroup it was in (relative to the hierarchy root), to go back to.
pub fn join(h: &Hierarchy, workload: &str, pid: i32) -> Result<String, Error> {
    let from = current(h, pid).unwrap_or_else(|| "/".into());
    let p = dir(h, workload).join("cgroup.procs");
    std::fs::write(&p, pid.to_string()).map_err(|e| io(&format!("moving {pid} into"), &p, e))?;
    Ok(from)
}

/// The cgroup of `pid` in this hierarchy, relative to its root.
pub fn current(h: &Hierarchy, pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
        let hit = if h.v2 {
            ctl.is_empty()
        } else {
            ctl.split(',').any(|c| c == "cpu")
        };
        hit.then(|| path.to_string())
    })
}

/// A pre-opened `cgroup.procs` of the workload's cgroup: a child writes
/// "0" to it between fork and exec to join (async-signal-safe).
pub fn procs_file(h: &Hierarchy, workload: &str) -> Result<std::fs::File, Error> {
    let p = dir(h, workload).join("cgroup.procs");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .map_err(|e| io("opening", &p, e))
}

/// Empty the workload's cgroup: each process back where it came from
/// (`origins`: pid → path), else to the root; then remove it.
pub fn remove(h: &Hierarchy, workload: &str, origins: &[(i32, String)]) -> Result<(), Error> {
    let d = dir(h, workload);
    if !d.is_dir() {
        return Ok(());
    }
    let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let back = origins
            .iter()
            .find(|(p, _)| *p == pid)
            .map(|(_, path)| h.root.join(path.trim_start_matches('/')))
            .filter(|p| p.join("cgroup.procs").exists() && !p.starts_with(h.root.join("schedcp")))
            .unwrap_or_else(|| h.root.clone());
        // A process that exits meanwhile is fine; anything else is not.
        if let Err(e) = std::fs::write(back.join("cgroup.procs"), pid.to_string()) {
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(io(&format!("moving {pid} back to"), &back, e));
            }
        }
    }
    // The kernel may still be tearing down exited tasks: retry briefly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(&d) {
            Ok(()) => break,
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(io("removing", &d, e)),
        }
    }
    // The parent is ours too; it goes once empty (others may still use it).
    let _ = std::fs::remove_dir(d.parent().expect("has parent"));
    Ok(())
}

fn io(what: &str, p: &Path, e: std::io::Error) -> Error {
    Error::Input(format!("{what} {}: {e}", p.display()))
}
