//! Knob values: parsed, checked against the catalogue's safe range, and put
//! in one canonical spelling, so a value read back from the kernel compares
//! equal to the value written.

use super::catalog::{Knob, Type};
use crate::error::Error;

/// The canonical form of `raw` for `knob`, or a refusal that says what is
/// allowed.
pub fn canonical(knob: &Knob, name: &str, raw: &str) -> Result<String, Error> {
    let v = raw.trim();
    let bad = |why: String| Err(Error::Input(format!("{name}={raw}: {why}")));
    if v.is_empty() || v.len() > 256 || v.chars().any(|c| c.is_control()) {
        return bad("a value is 1..256 printable characters".into());
    }
    match knob.ty {
        Type::Int => {
            let (lo, hi) = (knob.min.unwrap_or(i64::MIN), knob.max.unwrap_or(i64::MAX));
            let Ok(n) = v.parse::<i64>() else {
                return bad(format!("not an integer; the safe range is {lo}..={hi}"));
            };
            if !(lo..=hi).contains(&n) {
                return bad(format!(
                    "outside the safe range {lo}..={hi}{}",
                    knob.unit
                        .as_deref()
                        .map(|u| format!(" {u}"))
                        .unwrap_or_default()
                ));
            }
            if let Some(step) = knob.step.filter(|s| n % s != 0) {
                return bad(format!(
                    "must be a multiple of {step} (the kernel keeps it in units of {step})"
                ));
            }
            Ok(n.to_string())
        }
        Type::Bool => match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "on" | "yes" => Ok("1".into()),
            "0" | "false" | "off" | "no" => Ok("0".into()),
            _ => bad("not a boolean (0/1, true/false, on/off)".into()),
        },
        Type::Enum => {
            if knob.values.iter().any(|a| a == v) {
                Ok(v.into())
            } else {
                bad(format!("not one of {}", knob.values.join(", ")))
            }
        }
        Type::Cpulist => {
            let cpus = parse_cpulist(v).map_err(|e| Error::Input(format!("{name}={raw}: {e}")))?;
            let online = online_cpus();
            if let Some(c) = cpus.iter().find(|c| !online.contains(c)) {
                return bad(format!(
                    "CPU {c} is not online here (online: {})",
                    format_cpulist(&online)
                ));
            }
            Ok(format_cpulist(&cpus))
        }
        Type::Quota => {
            if v == "max" {
                return Ok("max".into());
            }
            let parts: Vec<&str> = v.split_whitespace().collect();
            let (Some(q), Some(p)) = (
                parts.first().and_then(|s| s.parse::<u64>().ok()),
                parts.get(1).and_then(|s| s.parse::<u64>().ok()),
            ) else {
                return bad(
                    "a quota is `max` or `QUOTA_US PERIOD_US` (e.g. `50000 100000` for half a CPU)"
                        .into(),
                );
            };
            if parts.len() != 2 || !(1000..=1_000_000).contains(&p) {
                return bad("the period must be 1000..=1000000 µs".into());
            }
            // Below 10% of one CPU a workload is starved rather than tuned.
            if q < p / 10 || q > p * online_cpus().len().max(1) as u64 {
                return bad(format!(
                    "the quota must be between a tenth of the period ({}) and all CPUs ({})",
                    p / 10,
                    p * online_cpus().len().max(1) as u64
                ));
            }
            Ok(format!("{q} {p}"))
        }
    }
}

/// Whether a value read back equals the canonical one written.
pub fn same(knob: &Knob, a: &str, b: &str) -> bool {
    match knob.ty {
        Type::Int => a.trim().parse::<i64>().ok() == b.trim().parse::<i64>().ok(),
        Type::Cpulist => parse_cpulist(a).ok() == parse_cpulist(b).ok(),
        _ => a.trim() == b.trim(),
    }
}

/// `0-3,6` → [0,1,2,3,6], sorted, deduplicated.
pub fn parse_cpulist(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) else {
            return Err(format!(
                "'{part}' is not a CPU number or range (e.g. 0-3,6)"
            ));
        };
        if a > b || b >= 4096 {
            return Err(format!("'{part}' is not a valid CPU range"));
        }
        out.extend(a..=b);
    }
    if out.is_empty() {
        return Err("an empty CPU list would leave the workload nowhere to run".into());
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

pub fn format_cpulist(cpus: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        while i + 1 < cpus.len() && cpus[i + 1] == cpus[i] + 1 {
            i += 1;
        }
        parts.push(if start == cpus[i] {
            start.to_string()
        } else {
            format!("{start}-{}", cpus[i])
        });
        i += 1;
    }
    parts.join(",")
}

pub fn online_cpus() -> Vec<usize> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpulist(&s).ok())
        .unwrap_or_else(|| {
            (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knobs::catalog::resolve;

    #[test]
    fn values_are_checked_and_canonical() {
        let k = resolve("vm.swappiness").unwrap().knob;
        assert_eq!(canonical(k, "vm.swappiness", " 10 ").unwrap(), "10");
        let e = canonical(k, "vm.swappiness", "100000")
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the safe range"), "{e}");
        assert!(canonical(k, "vm.swappiness", "ten").is_err());
        let b = resolve("kernel.sched_autogroup_enabled").unwrap().knob;
        assert_eq!(canonical(b, "x", "off").unwrap(), "0");
        let t = resolve("thp.enabled").unwrap().knob;
        assert!(canonical(t, "thp.enabled", "sometimes").is_err());
        assert_eq!(canonical(t, "thp.enabled", "never").unwrap(), "never");
        let q = resolve("workload.cpu_max").unwrap().knob;
        assert_eq!(canonical(q, "q", "max").unwrap(), "max");
        assert_eq!(canonical(q, "q", "50000  100000").unwrap(), "50000 100000");
        assert!(canonical(q, "q", "1 100000").is_err());
        assert!(canonical(k, "vm.swappiness", "1\n2").is_err());
    }

    #[test]
    fn cpulists_round_trip() {
        assert_eq!(parse_cpulist("0-2,5,3").unwrap(), vec![0, 1, 2, 3, 5]);
        assert_eq!(format_cpulist(&[0, 1, 2, 3, 5, 7, 8]), "0-3,5,7-8");
        assert!(parse_cpulist("3-1").is_err());
        assert!(parse_cpulist("").is_err());
    }
}
