//! Kernel knobs for one run: each write's prior value is read, the new one
//! written and read back, and after the run everything goes back in the
//! same order (a selector such as an I/O scheduler first, as the host
//! ordered them). A knob the kernel refuses fails the run, with the reason.

use schedcp_proto::job::{KnobKind, KnobWrite};

/// What to write back after the run.
pub struct Applied {
    prior: Vec<(KnobWrite, String)>,
}

fn read(w: &KnobWrite) -> Result<String, String> {
    let text = std::fs::read_to_string(&w.path)
        .map_err(|e| format!("{}: reading {}: {e}", w.knob, w.path))?;
    match &w.kind {
        KnobKind::File => Ok(text.split_whitespace().collect::<Vec<_>>().join(" ")),
        KnobKind::Selector => text
            .split_whitespace()
            .find_map(|t| {
                t.strip_prefix('[')
                    .and_then(|s| s.strip_suffix(']'))
                    .or_else(|| t.strip_prefix('(').and_then(|s| s.strip_suffix(')')))
            })
            .map(str::to_string)
            .ok_or_else(|| format!("{}: {} shows no selected value", w.knob, w.path)),
        KnobKind::Feature { flag } => text
            .split_whitespace()
            .find(|t| *t == flag || t.strip_prefix("NO_") == Some(flag))
            .map(str::to_string)
            .ok_or_else(|| format!("{}: this kernel has no sched feature {flag}", w.knob)),
    }
}

fn write(w: &KnobWrite, value: &str) -> Result<(), String> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&w.path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| format!("{}: writing '{value}' to {}: {e}", w.knob, w.path))
}

/// Apply a set; on any failure, put back what was written and say why.
pub fn apply(set: &[KnobWrite]) -> Result<Applied, String> {
    let mut a = Applied { prior: Vec::new() };
    for w in set {
        let step = read(w).and_then(|prior| {
            a.prior.push((w.clone(), prior));
            write(w, &w.value)?;
            let back = read(w)?;
            let same = match &w.kind {
                KnobKind::File => back
                    .parse::<i64>()
                    .ok()
                    .zip(w.value.trim().parse::<i64>().ok())
                    .map_or(back == w.value.trim(), |(x, y)| x == y),
                _ => back == w.value,
            };
            if same {
                Ok(())
            } else {
                Err(format!(
                    "{}: wrote '{}' but it reads back '{back}'",
                    w.knob, w.value
                ))
            }
        });
        if let Err(e) = step {
            let undo = a.restore();
            return Err(match undo {
                Ok(()) => e,
                Err(u) => format!("{e}; restoring also failed: {u}"),
            });
        }
    }
    Ok(a)
}

impl Applied {
    /// Everything back, in write order; goes on past a failure.
    pub fn restore(&mut self) -> Result<(), String> {
        let errors: Vec<String> = self
            .prior
            .drain(..)
            .filter_map(|(w, v)| write(&w, &v).err())
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("schedcp-guest-knobs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn w(dir: &std::path::Path, name: &str, value: &str) -> KnobWrite {
        KnobWrite {
            knob: name.into(),
            path: dir.join(name).display().to_string(),
            kind: KnobKind::File,
            value: value.into(),
        }
    }

    #[test]
    fn a_set_is_applied_read_back_and_restored() {
        let d = dir("apply");
        std::fs::write(d.join("n"), "60").unwrap();
        let mut a = apply(&[w(&d, "n", "10")]).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("n")).unwrap().trim(), "10");
        a.restore().unwrap();
        assert_eq!(std::fs::read_to_string(d.join("n")).unwrap().trim(), "60");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_failing_write_undoes_the_ones_before_it() {
        let d = dir("undo");
        std::fs::write(d.join("n"), "60").unwrap();
        let e = apply(&[w(&d, "n", "10"), w(&d, "missing", "1")])
            .err()
            .unwrap();
        assert!(e.contains("missing"), "{e}");
        assert_eq!(std::fs::read_to_string(d.join("n")).unwrap().trim(), "60");
        let _ = std::fs::remove_dir_all(d);
    }
}
