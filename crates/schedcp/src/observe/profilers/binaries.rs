//! Where the profilers come from: fixed absolute paths only, never `$PATH`
//! and never a path from the caller, and only root-owned files that no one
//! else can write (schedcp runs them as root).
//!
//! Debian packaging: bookworm's `linux-perf` installs the real perf binary
//! as `/usr/bin/perf` (diverting `linux-base`'s version wrapper to
//! `/usr/bin/perf.wrapper`). Older releases shipped `/usr/bin/perf` as a
//! shell wrapper that execs `perf_<major.minor>` of the *running* kernel and
//! refuses ("perf not found for kernel X") on kernels Debian did not build —
//! like this host's. So: `/usr/bin/perf` if it is an ELF binary, else the
//! newest `/usr/bin/perf_<version>`, and the report says which one ran.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use crate::error::Error;
use crate::host::process::run_with_timeout;

const PERF: &str = "/usr/bin/perf";
const STRACE: &str = "/usr/bin/strace";

/// A profiler binary that may be run.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Binary {
    pub path: PathBuf,
    /// Its own version line, e.g. `perf version 6.1.187`.
    pub version: String,
    /// Why this file rather than the default path, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen_because: Option<String>,
}

pub fn perf() -> Result<Binary, Error> {
    let default = Path::new(PERF);
    if !default.exists() {
        return Err(Error::Setup(format!(
            "perf is not installed ({PERF} is missing): apt-get install linux-perf"
        )));
    }
    let (path, chosen_because) = if is_elf(default) {
        (default.to_path_buf(), None)
    } else {
        let versioned = newest_versioned_perf(Path::new("/usr/bin")).ok_or_else(|| {
            Error::Setup(format!(
                "{PERF} is Debian's version wrapper, which runs only a perf built for the \
                 running kernel ({}), and no /usr/bin/perf_<version> binary is installed: \
                 apt-get install linux-perf",
                kernel_release()
            ))
        })?;
        let why = format!(
            "{PERF} is Debian's version wrapper (it runs only a perf built for the running \
             kernel {}); used the newest installed versioned binary",
            kernel_release()
        );
        (versioned, Some(why))
    };
    trusted(&path)?;
    let version = version_line(&path, "--version")?;
    Ok(Binary {
        path,
        version,
        chosen_because,
    })
}

pub fn strace() -> Result<Binary, Error> {
    let path = PathBuf::from(STRACE);
    if !path.exists() {
        return Err(Error::Setup(format!(
            "strace is not installed ({STRACE} is missing): apt-get install strace"
        )));
    }
    trusted(&path)?;
    let version = version_line(&path, "-V")?;
    Ok(Binary {
        path,
        version,
        chosen_because: None,
    })
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// The `perf_<major>.<minor>` ELF binary in `dir` with the highest version.
fn newest_versioned_perf(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = parse_version(name.strip_prefix("perf_")?)?;
            Some((version, e.path()))
        })
        .filter(|(_, p)| is_elf(p))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, p)| p)
}

/// `6.1` → `[6, 1]`; `None` unless every dot-separated part is a number.
fn parse_version(s: &str) -> Option<Vec<u32>> {
    s.split('.').map(|p| p.parse().ok()).collect()
}

/// Refuse a binary that someone other than root could have replaced.
fn trusted(path: &Path) -> Result<(), Error> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Setup(format!("cannot inspect {}: {e}", path.display())))?;
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(Error::Setup(format!(
            "refusing to run {}: it must be owned by root and writable by no one else \
             (owner uid {}, mode {:o})",
            path.display(),
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

fn version_line(path: &Path, flag: &str) -> Result<String, Error> {
    let mut cmd = Command::new(path);
    cmd.arg(flag).env_clear().env("LANG", "C");
    let run = run_with_timeout(&mut cmd, Duration::from_secs(10), 4096)
        .map_err(|e| Error::Setup(format!("{} does not run: {e:#}", path.display())))?;
    let line = run
        .stdout
        .lines()
        .chain(run.stderr.lines())
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string();
    if !run.success() {
        return Err(Error::Setup(format!(
            "{} {flag} failed: {line}",
            path.display()
        )));
    }
    Ok(line)
}

pub use crate::host::kernel_release;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        assert!(parse_version("6.10") > parse_version("6.9"));
        assert_eq!(parse_version("5.10"), Some(vec![5, 10]));
        assert_eq!(parse_version("6.1-rc"), None);
    }

    #[test]
    fn finds_the_newest_versioned_elf() {
        let dir = tempfile::tempdir().unwrap();
        let elf = std::fs::read("/proc/self/exe").unwrap();
        std::fs::write(dir.path().join("perf_5.10"), &elf).unwrap();
        std::fs::write(dir.path().join("perf_6.1"), &elf).unwrap();
        std::fs::write(dir.path().join("perf_6.9"), b"#!/bin/sh\n").unwrap();
        std::fs::write(dir.path().join("perf_x"), &elf).unwrap();
        let best = newest_versioned_perf(dir.path()).unwrap();
        assert_eq!(best.file_name().unwrap(), "perf_6.1");
    }

    #[test]
    fn script_wrappers_are_not_elf() {
        let dir = tempfile::tempdir().unwrap();
        let wrapper = dir.path().join("perf");
        std::fs::write(&wrapper, b"#!/bin/sh\nexec perf_$(uname -r) \"$@\"\n").unwrap();
        assert!(!is_elf(&wrapper));
        assert!(is_elf(Path::new("/proc/self/exe")));
    }

    #[test]
    fn writable_binaries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tool");
        std::fs::write(&f, b"").unwrap();
        let mut perm = std::fs::metadata(&f).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o777);
        std::fs::set_permissions(&f, perm).unwrap();
        assert!(matches!(trusted(&f), Err(Error::Setup(m)) if m.contains("writable")));
    }
}
