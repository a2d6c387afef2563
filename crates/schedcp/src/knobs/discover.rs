//! What this machine really allows. Every knob is probed once here (does
//! it exist, can it be read, can it be opened for writing) so a refusal
//! happens at admission, never half-way through an apply. On these
//! machines debugfs `sched/` answers EPERM to both: those knobs are
//! reported unavailable here and trialled in the lab VM instead.

use serde::{Deserialize, Serialize};

use super::catalog::{self, Access, Attribute, Group, Knob, Resolved, Scope};
use super::cgroup::{self, Hierarchy};
use super::sysfs;
use crate::error::Error;

/// Facts every probe needs, read once.
#[derive(Debug, Clone)]
pub struct Machine {
    pub kernel: String,
    pub numa_nodes: usize,
    pub cgroup: Option<Hierarchy>,
}

impl Machine {
    pub fn detect() -> Machine {
        mount_debugfs();
        let numa_nodes = std::fs::read_dir("/sys/devices/system/node")
            .map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        n.starts_with("node") && n[4..].parse::<u32>().is_ok()
                    })
                    .count()
            })
            .unwrap_or(1)
            .max(1);
        Machine {
            kernel: crate::host::kernel_release(),
            numa_nodes,
            cgroup: cgroup::hierarchy(),
        }
    }
}

/// debugfs is where the fair scheduler's knobs live; mount it if nothing
/// has (it is a pseudo filesystem: mounting it changes no setting).
fn mount_debugfs() {
    let p = std::path::Path::new("/sys/kernel/debug");
    if p.join("sched").exists() || !p.is_dir() {
        return;
    }
    let _ = nix::mount::mount(
        Some("debugfs"),
        p,
        Some("debugfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    );
}

/// `(major, minor)` of a release string such as `6.18.44-fc` or `7.2`.
fn version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// `Ok(current value)` when schedcp can change `r` here, else why not.
pub fn usable(m: &Machine, r: &Resolved) -> Result<Option<String>, String> {
    let k = r.knob;
    if k.needs_numa && m.numa_nodes < 2 {
        return Err(format!(
            "meaningful only with more than one NUMA node; this machine has {}",
            m.numa_nodes
        ));
    }
    match k.access {
        Access::File | Access::Selector | Access::Feature => {
            if let Some(dev) = &r.device {
                if !std::path::Path::new("/sys/block").join(dev).exists() {
                    return Err(format!(
                        "no block device '{dev}' here (devices: {})",
                        catalog::devices().join(", ")
                    ));
                }
            }
            sysfs::probe(r).map(Some)
        }
        Access::Task => {
            if k.attribute == Some(Attribute::Slice) {
                let have = version(&m.kernel);
                if have.is_none_or(|v| v < (6, 12)) {
                    return Err(format!(
                        "a per-task fair slice needs Linux 6.12 or newer; this kernel is {}",
                        m.kernel
                    ));
                }
            }
            Ok(None)
        }
        Access::Cgroup => {
            let h = m.cgroup.as_ref().ok_or(
                "no cgroup CPU controller is mounted (neither cgroup v2 with cpu nor a v1 cpu hierarchy)",
            )?;
            let f = cgroup::file_for(
                h,
                k.v2_file.as_deref().unwrap_or_default(),
                k.v1_file.as_deref(),
            )
            .ok_or_else(|| {
                format!(
                    "cgroup v1 has no equivalent of {} (only v1 is mounted with cpu here)",
                    k.v2_file.as_deref().unwrap_or_default()
                )
            })?;
            if !cgroup::offers(h, f) {
                return Err(format!(
                    "the cpu controller at {} has no {f} (kernel option missing)",
                    h.root.display()
                ));
            }
            Ok(None)
        }
    }
}

/// One catalogue entry as it stands on this machine.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Availability {
    /// Concrete name (device knobs once per device here).
    pub name: String,
    pub group: Group,
    pub scope: Scope,
    pub available: bool,
    /// Why not, when unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The current value (system and device knobs that can be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    pub knob: Knob,
}

/// Every knob, device knobs expanded per device.
pub fn list() -> Vec<Availability> {
    let m = Machine::detect();
    let devs = catalog::devices();
    let mut out = Vec::new();
    for k in catalog::all() {
        let names: Vec<String> = match (k.scope, devs.is_empty()) {
            (Scope::Device, false) => devs
                .iter()
                .map(|d| k.name.replace(catalog::DEVICE, d))
                .collect(),
            _ => vec![k.name.clone()],
        };
        for name in names {
            out.push(match catalog::resolve(&name) {
                Ok(r) => availability(&m, &r),
                // `{device}` itself: this machine has no block device.
                Err(_) => Availability {
                    name,
                    group: k.group,
                    scope: k.scope,
                    available: false,
                    reason: Some("no block device here".into()),
                    current: None,
                    knob: k.clone(),
                },
            });
        }
    }
    out
}

/// One knob as it stands here.
pub fn one(name: &str) -> Result<Availability, Error> {
    Ok(availability(&Machine::detect(), &catalog::resolve(name)?))
}

fn availability(m: &Machine, r: &Resolved) -> Availability {
    let got = usable(m, r);
    Availability {
        name: r.name.clone(),
        group: r.knob.group,
        scope: r.knob.scope,
        available: got.is_ok(),
        reason: got.as_ref().err().cloned(),
        current: got.ok().flatten(),
        knob: r.knob.clone(),
    }
}

/// Per group: how many knobs this machine allows, and why the others not.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GroupSummary {
    pub group: Group,
    pub available: usize,
    pub total: usize,
    /// Distinct reasons for the unavailable ones.
    pub unavailable_because: Vec<String>,
}

pub fn groups(list: &[Availability]) -> Vec<GroupSummary> {
    Group::ALL
        .iter()
        .map(|&g| {
            let of: Vec<&Availability> = list.iter().filter(|a| a.group == g).collect();
            let mut why: Vec<String> = of
                .iter()
                .filter_map(|a| a.reason.as_deref())
                .map(generalise)
                .collect();
            why.sort();
            why.dedup();
            GroupSummary {
                group: g,
                available: of.iter().filter(|a| a.available).count(),
                total: of.len(),
                unavailable_because: why,
            }
        })
        .collect()
}

/// Reasons without the per-file path, so a group's summary stays short.
fn generalise(reason: &str) -> String {
    match reason.split_once(": ") {
        Some((path, why)) if path.contains("/sys/kernel/debug/") => {
            format!("debugfs sched/: {why}")
        }
        _ => reason.to_string(),
    }
}

/// Read one knob: system and device knobs from the kernel.
pub fn read(name: &str) -> Result<String, Error> {
    let r = catalog::resolve(name)?;
    if r.knob.scope == Scope::Workload {
        return Err(Error::Input(format!(
            "{name} is per workload: read it with --workload PROFILE"
        )));
    }
    let m = Machine::detect();
    usable(&m, &r)
        .map_err(|why| Error::Input(format!("{name} is unavailable here: {why}")))?
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("{name}: no value")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(version("6.18.44-fc-v1272"), Some((6, 18)));
        assert_eq!(version("7.2.13+deb14-cloud-amd64"), Some((7, 2)));
        assert_eq!(version("x"), None);
    }
}
