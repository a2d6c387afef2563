//! What a caller asks of a probe, and the checks it must pass before
//! anything is loaded into the kernel.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::catalog::ProbeKind;
use crate::error::Error;

/// Longest comm the kernel keeps (TASK_COMM_LEN minus the NUL).
pub const MAX_COMM_LEN: usize = 15;
/// Most rows a report lists (top tasks or processes).
pub const MAX_TOP: usize = 1000;

/// Which tasks a probe counts. Applied in the kernel: the filter is in the
/// probe's `.rodata`, so tasks it excludes cost a comparison, not a map
/// update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Filter {
    /// Only the threads of this process (a tgid).
    pub pid: Option<u32>,
    /// Only tasks with exactly this comm.
    pub comm: Option<String>,
}

impl Filter {
    /// The comm as the kernel stores it (zero-padded to 16 bytes), as the two
    /// little-endian words probe.h compares.
    pub fn comm_words(&self) -> [u64; 2] {
        let mut bytes = [0u8; 16];
        if let Some(c) = &self.comm {
            let n = c.len().min(MAX_COMM_LEN);
            bytes[..n].copy_from_slice(&c.as_bytes()[..n]);
        }
        let (lo, hi) = bytes.split_at(8);
        [
            u64::from_le_bytes(lo.try_into().unwrap_or_default()),
            u64::from_le_bytes(hi.try_into().unwrap_or_default()),
        ]
    }

    pub fn validate(&self) -> Result<(), Error> {
        self.validate_in(Path::new("/proc"))
    }

    fn validate_in(&self, proc: &Path) -> Result<(), Error> {
        if self.pid.is_some() && self.comm.is_some() {
            return Err(Error::Input(
                "--pid and --comm are exclusive: filter by one or the other".into(),
            ));
        }
        if let Some(pid) = self.pid {
            check_process(proc, pid)?;
        }
        if let Some(comm) = &self.comm {
            if comm.is_empty() || comm.len() > MAX_COMM_LEN || comm.contains('\0') {
                return Err(Error::Input(format!(
                    "--comm must be 1 to {MAX_COMM_LEN} bytes without NUL (the kernel keeps \
                     {MAX_COMM_LEN} bytes of a task's name), got {} bytes: {comm:?}",
                    comm.len()
                )));
            }
        }
        Ok(())
    }

    /// "pid 1234", "comm nginx" or "all tasks".
    pub fn describe(&self) -> String {
        match (&self.pid, &self.comm) {
            (Some(p), _) => format!("pid {p}"),
            (_, Some(c)) => format!("comm {c}"),
            _ => "all tasks".into(),
        }
    }
}

/// `pid` must name a live process, and be its tgid rather than one of its
/// threads: the probes filter on the process.
fn check_process(proc: &Path, pid: u32) -> Result<(), Error> {
    if pid == 0 {
        return Err(Error::Input(
            "--pid 0 is the idle task, not a process".into(),
        ));
    }
    let status = proc.join(pid.to_string()).join("status");
    let text = std::fs::read_to_string(&status).map_err(|_| {
        Error::Input(format!(
            "no process with pid {pid} (nothing at {})",
            status.display()
        ))
    })?;
    let tgid = text
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    match tgid {
        Some(t) if t != pid => Err(Error::Input(format!(
            "{pid} is a thread of process {t}; --pid takes a process id (tgid)"
        ))),
        _ => Ok(()),
    }
}

/// A bounded probe run.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    pub probe: ProbeKind,
    pub duration: Duration,
    pub filter: Filter,
    /// Rows in the report's top list (cputime, schedevents).
    pub top: usize,
    /// Also measure the probe's own cost (turns on the kernel's BPF run-time
    /// statistics for the window, which slows every BPF program a little).
    pub cost: bool,
}

impl ProbeRequest {
    /// Checks everything that can be checked before loading: a duration of
    /// 1 s to `max_duration_s`, the filter, the size of the top list.
    pub fn validate(&self, max_duration_s: u64) -> Result<(), Error> {
        check_duration(self.duration, max_duration_s)?;
        if !(1..=MAX_TOP).contains(&self.top) {
            return Err(Error::Input(format!(
                "--top must be between 1 and {MAX_TOP}, got {}",
                self.top
            )));
        }
        self.filter.validate()
    }
}

fn check_duration(d: Duration, max_s: u64) -> Result<(), Error> {
    let max = Duration::from_secs(max_s);
    if d < Duration::from_secs(1) || d > max {
        return Err(Error::Input(format!(
            "--duration must be between 1 and {max_s} seconds (observe.probe_max_duration_s), \
             got {} s: a probe stays attached only for a bounded time",
            d.as_secs_f64()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(duration_s: u64, filter: Filter) -> ProbeRequest {
        ProbeRequest {
            probe: ProbeKind::Runqlat,
            duration: Duration::from_secs(duration_s),
            filter,
            top: 10,
            cost: false,
        }
    }

    #[test]
    fn duration_is_bounded() {
        let e = req(0, Filter::default()).validate(300).unwrap_err();
        assert!(e.to_string().contains("between 1 and 300"), "{e}");
        assert!(req(301, Filter::default()).validate(300).is_err());
        req(1, Filter::default()).validate(300).unwrap();
        req(300, Filter::default()).validate(300).unwrap();
    }

    #[test]
    fn comm_is_checked_and_packed_like_the_kernel() {
        let long = Filter {
            comm: Some("a-very-long-name".into()),
            ..Filter::default()
        };
        assert!(long
            .validate()
            .unwrap_err()
            .to_string()
            .contains("1 to 15 bytes"));
        let f = Filter {
            comm: Some("hackbench".into()),
            ..Filter::default()
        };
        f.validate().unwrap();
        let w = f.comm_words();
        assert_eq!(&w[0].to_le_bytes(), b"hackbenc");
        assert_eq!(w[1].to_le_bytes(), [b'h', 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn pid_and_comm_are_exclusive() {
        let f = Filter {
            pid: Some(std::process::id()),
            comm: Some("x".into()),
        };
        assert!(f.validate().unwrap_err().to_string().contains("exclusive"));
    }

    #[test]
    fn pid_must_be_a_live_process_not_a_thread() {
        let proc = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(proc.path().join("42")).unwrap();
        std::fs::write(proc.path().join("42/status"), "Name:\tx\nTgid:\t40\n").unwrap();
        std::fs::create_dir_all(proc.path().join("40")).unwrap();
        std::fs::write(proc.path().join("40/status"), "Name:\tx\nTgid:\t40\n").unwrap();
        let check = |pid| {
            Filter {
                pid: Some(pid),
                comm: None,
            }
            .validate_in(proc.path())
        };
        check(40).unwrap();
        assert!(check(42)
            .unwrap_err()
            .to_string()
            .contains("thread of process 40"));
        assert!(check(7)
            .unwrap_err()
            .to_string()
            .contains("no process with pid 7"));
        assert!(check(0).is_err());
    }
}
