//! Host helpers, the bottom layer: processes with deadlines, durable file
//! writes, the running kernel, program lookup, timestamps. Nothing here knows
//! about schedulers, the lab or the services above.

pub mod fs;
pub mod interrupt;
pub mod process;

use std::path::{Path, PathBuf};

use crate::error::Error;

/// The running kernel's release (`uname -r`); empty if uname fails.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Resolve a program name on `$PATH`, or accept a path to an existing
/// executable file.
pub fn which(program: &str) -> Option<PathBuf> {
    which::which(program).ok()
}

/// Resolve a bare program name in the directories of `paths` (a `PATH`-style
/// list), executables only.
pub fn which_in(program: &str, paths: &std::ffi::OsStr) -> Option<PathBuf> {
    which::which_in(program, Some(paths), "/").ok()
}

/// `name` as a file name: letters, digits, `_` and `-` kept, the rest `_`.
pub fn safe_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Now, as RFC 3339 UTC with milliseconds: the one timestamp format every
/// store, log and record writes, so that text order is time order.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The guest agent binary: `configured` (the config key `key`), else
/// `schedcp-guest` beside this binary. It must exist.
pub fn locate_agent(configured: Option<&Path>, key: &str) -> Result<PathBuf, Error> {
    let path = match configured {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .map_err(|e| Error::Setup(format!("cannot locate the schedcp binary: {e}")))?
            .with_file_name("schedcp-guest"),
    };
    if !path.is_file() {
        return Err(Error::Setup(format!(
            "guest agent {} not found; build it with `cargo build --release --workspace` or set {key}",
            path.display()
        )));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_keep_only_safe_characters() {
        assert_eq!(safe_file_name("scx_lavd-1"), "scx_lavd-1");
        assert_eq!(safe_file_name("../etc/passwd"), "___etc_passwd");
    }

    #[test]
    fn which_finds_programs_and_refuses_missing_ones() {
        assert!(which("sh").is_some());
        assert!(which("/bin/sh").is_some());
        assert!(which("schedcp-no-such-program").is_none());
        assert!(which("/nonexistent/sh").is_none());
    }

    #[test]
    fn timestamps_sort_as_text() {
        let a = now_rfc3339();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = now_rfc3339();
        assert!(a < b && a.ends_with('Z'), "{a} {b}");
    }
}
