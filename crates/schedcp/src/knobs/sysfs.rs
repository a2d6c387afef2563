//! System-wide and per-device knobs: files under /proc/sys, /sys and
//! debugfs, read and written as the catalogue says (whole value, selector,
//! or one `sched/features` flag).

use std::io::Write;

use super::catalog::{Access, Resolved};
use crate::error::Error;

/// The current value, in the catalogue's canonical spelling.
pub fn read(r: &Resolved) -> Result<String, Error> {
    let path = r.path().expect("file-backed knob");
    let text = std::fs::read_to_string(&path).map_err(|e| io_error("reading", &path, &e))?;
    match r.knob.access {
        Access::File => Ok(text.split_whitespace().collect::<Vec<_>>().join(" ")),
        Access::Selector => selected(&text).ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "{path} shows no selected value in `{}`",
                text.trim()
            ))
        }),
        Access::Feature => {
            let flag = r.knob.feature.as_deref().expect("checked");
            feature_state(&text, flag)
                .map(|on| if on { "1" } else { "0" }.into())
                .ok_or_else(|| {
                    Error::Input(format!(
                        "{}: this kernel's {path} has no flag {flag}",
                        r.name
                    ))
                })
        }
        Access::Task | Access::Cgroup => unreachable!("not a file knob"),
    }
}

/// Write a canonical value. No file is ever created: a knob that vanished
/// is an error, not a new file.
pub fn write(r: &Resolved, value: &str) -> Result<(), Error> {
    let path = r.path().expect("file-backed knob");
    let text = match r.knob.access {
        Access::Feature => {
            let flag = r.knob.feature.as_deref().expect("checked");
            if value == "1" {
                flag.to_string()
            } else {
                format!("NO_{flag}")
            }
        }
        _ => value.to_string(),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| io_error("opening", &path, &e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| io_error(&format!("writing '{text}' to"), &path, &e))
}

/// Whether this machine lets schedcp read and write the knob; the reason
/// when it does not. Opening for write writes nothing, but it is where
/// lockdown and permission refusals show.
pub fn probe(r: &Resolved) -> Result<String, String> {
    let path = r.path().expect("file-backed knob");
    if !std::path::Path::new(&path).exists() {
        return Err(format!("{path} does not exist on this kernel"));
    }
    let current = read(r).map_err(|e| e.to_string())?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| format!("{path} is not writable here: {e}"))?;
    Ok(current)
}

/// Every choice a selector file lists.
pub fn choices(r: &Resolved) -> Vec<String> {
    let text = r
        .path()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c| matches!(c, '[' | ']' | '(' | ')'))
                .to_string()
        })
        .collect()
}

/// The active choice of a selector file: `always [madvise] never` or
/// `none voluntary (full) lazy`.
pub fn selected(text: &str) -> Option<String> {
    text.split_whitespace().find_map(|w| {
        w.strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .or_else(|| w.strip_prefix('(').and_then(|s| s.strip_suffix(')')))
            .map(str::to_string)
    })
}

/// `Some(true)` for `FLAG`, `Some(false)` for `NO_FLAG`, `None` if the
/// kernel has no such flag.
pub fn feature_state(text: &str, flag: &str) -> Option<bool> {
    text.split_whitespace().find_map(|w| {
        if w == flag {
            Some(true)
        } else if w.strip_prefix("NO_") == Some(flag) {
            Some(false)
        } else {
            None
        }
    })
}

fn io_error(what: &str, path: &str, e: &std::io::Error) -> Error {
    let why = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (the kernel refuses it here: lockdown or permissions; trial it in the lab VM)"
        }
        Some(libc::EINVAL) => " (the kernel refused the value)",
        _ => "",
    };
    Error::Input(format!("{what} {path}: {e}{why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_features_parse() {
        assert_eq!(
            selected("always [madvise] never\n").as_deref(),
            Some("madvise")
        );
        assert_eq!(
            selected("none voluntary (full) lazy").as_deref(),
            Some("full")
        );
        assert_eq!(selected("none"), None);
        let f = "GENTLE_FAIR_SLEEPERS NO_RUN_TO_PARITY PLACE_LAG";
        assert_eq!(feature_state(f, "RUN_TO_PARITY"), Some(false));
        assert_eq!(feature_state(f, "PLACE_LAG"), Some(true));
        assert_eq!(feature_state(f, "NEXT_BUDDY"), None);
    }
}
