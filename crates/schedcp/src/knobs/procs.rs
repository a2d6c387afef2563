//! Which processes belong to a workload: those whose command line is the
//! workload profile's command, and every descendant of one. Kernel
//! threads, pid 1 and schedcp itself never do.

use std::collections::{BTreeMap, BTreeSet};

/// Pids of the workload's processes, ascending.
pub fn of_workload(argv: &[String]) -> Vec<i32> {
    if argv.is_empty() {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    let mut parent: BTreeMap<i32, i32> = BTreeMap::new();
    let mut roots = BTreeSet::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == 1 || pid == me {
            continue;
        }
        if let Some(pp) = ppid(pid) {
            parent.insert(pid, pp);
        }
        if cmdline(pid).is_some_and(|c| matches(&c, argv)) {
            roots.insert(pid);
        }
    }
    let mut out: Vec<i32> = parent
        .keys()
        .copied()
        .filter(|&pid| {
            // Walk up at most 64 generations: a workload is not deeper.
            let mut p = pid;
            for _ in 0..64 {
                if roots.contains(&p) {
                    return true;
                }
                match parent.get(&p) {
                    Some(&pp) if pp > 1 && pp != me => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect();
    out.sort_unstable();
    out
}

/// Same program (by path or base name) with the same arguments.
fn matches(cmd: &[String], argv: &[String]) -> bool {
    if cmd.len() != argv.len() || cmd.is_empty() {
        return false;
    }
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    (cmd[0] == argv[0] || base(&cmd[0]) == base(&argv[0])) && cmd[1..] == argv[1..]
}

fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None; // kernel thread or zombie
    }
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_matching_takes_base_names() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(matches(&s(&["/bin/sleep", "5"]), &s(&["sleep", "5"])));
        assert!(!matches(&s(&["sleep", "6"]), &s(&["sleep", "5"])));
        assert!(!matches(&s(&["sleep"]), &s(&["sleep", "5"])));
    }
}
