//! The knob catalogue (`knobs/catalog.toml`): every kernel knob schedcp may
//! change, how it is read and written, its safe values, risk and evidence.
//! It is data, embedded in the binary; this module parses and checks it and
//! resolves a concrete knob name (`block.vda.read_ahead_kb`) to its entry.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::Error;

const CATALOG: &str = include_str!("../../../../knobs/catalog.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Fair,
    Memory,
    Block,
    Workload,
}

impl Group {
    pub const ALL: [Group; 4] = [Group::Fair, Group::Memory, Group::Block, Group::Workload];

    pub fn as_str(self) -> &'static str {
        match self {
            Group::Fair => "fair",
            Group::Memory => "memory",
            Group::Block => "block",
            Group::Workload => "workload",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One value for the whole machine.
    System,
    /// One value per block device (`{device}` in the name).
    Device,
    /// Applied to the processes of one workload profile, never machine-wide.
    Workload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// The whole file is the value (sysctls, sysfs, debugfs numbers).
    File,
    /// The file lists choices with the active one in `[..]` or `(..)`.
    Selector,
    /// One flag of debugfs `sched/features`, written `NAME` or `NO_NAME`.
    Feature,
    /// A per-thread attribute (nice, policy, slice, affinity).
    Task,
    /// A file of the cgroup CPU controller, in a cgroup schedcp owns.
    Cgroup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    Nice,
    Policy,
    Slice,
    Affinity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Type {
    Int,
    Bool,
    Enum,
    Cpulist,
    /// A CPU bandwidth limit: `max` or `QUOTA_US PERIOD_US`.
    Quota,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Low,
    Medium,
    High,
}

/// One catalogue entry, as the file has it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Knob {
    pub name: String,
    pub group: Group,
    pub scope: Scope,
    pub access: Access,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<Attribute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v2_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v1_file: Option<String>,
    #[serde(rename = "type")]
    pub ty: Type,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
    /// Int only: values must be a multiple of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_default: Option<String>,
    pub risk: Risk,
    pub kernels: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires: Option<String>,
    #[serde(default)]
    pub needs_numa: bool,
    pub affects: String,
    pub helps_when: String,
    pub hurts_when: String,
    pub evidence: String,
}

impl Knob {
    /// The safe values in one line: `1..=150 percent`, `always | never`,
    /// or the type.
    pub fn safe_values(&self) -> String {
        match (self.min, self.max, self.values.is_empty()) {
            (Some(lo), Some(hi), _) => format!(
                "{lo}..={hi}{}",
                self.unit
                    .as_deref()
                    .map(|u| format!(" {u}"))
                    .unwrap_or_default()
            ),
            (_, _, false) => self.values.join(" | "),
            _ => format!("{:?}", self.ty).to_lowercase(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    knob: Vec<Knob>,
}

/// The placeholder a device knob's name and path carry.
pub const DEVICE: &str = "{device}";

/// The catalogue, parsed and checked once.
pub fn all() -> &'static [Knob] {
    static CAT: OnceLock<Vec<Knob>> = OnceLock::new();
    CAT.get_or_init(|| parse(CATALOG).expect("knobs/catalog.toml is checked by its tests"))
}

fn parse(text: &str) -> anyhow::Result<Vec<Knob>> {
    let f: File = toml::from_str(text).map_err(|e| anyhow::anyhow!("knobs/catalog.toml: {e}"))?;
    let mut seen = std::collections::BTreeSet::new();
    for k in &f.knob {
        check(k).map_err(|e| anyhow::anyhow!("knobs/catalog.toml: {}: {e}", k.name))?;
        anyhow::ensure!(seen.insert(k.name.clone()), "duplicate knob {}", k.name);
    }
    Ok(f.knob)
}

/// The invariants the code relies on: each access kind has what it needs,
/// each type its bounds or values, and every path is one we may touch.
fn check(k: &Knob) -> anyhow::Result<()> {
    use anyhow::ensure;
    let has_path = k.path.is_some();
    match k.access {
        Access::File | Access::Selector | Access::Feature => {
            let p = k.path.as_deref().unwrap_or_default();
            ensure!(has_path, "access {:?} needs a path", k.access);
            ensure!(
                [
                    "/proc/sys/",
                    "/sys/kernel/mm/",
                    "/sys/kernel/debug/sched/",
                    "/sys/block/"
                ]
                .iter()
                .any(|root| p.starts_with(root))
                    && !p.contains(".."),
                "path {p} is outside the roots knobs may live under"
            );
            ensure!(
                (k.scope == Scope::Device) == p.contains(DEVICE),
                "a device knob's path (and only it) carries {DEVICE}"
            );
        }
        Access::Task => ensure!(
            k.attribute.is_some() && !has_path,
            "a task knob names an attribute and no path"
        ),
        Access::Cgroup => ensure!(
            k.v2_file.is_some() && !has_path,
            "a cgroup knob names its v2 file and no path"
        ),
    }
    ensure!(
        (k.access == Access::Feature) == k.feature.is_some(),
        "feature is given exactly for access = \"feature\""
    );
    ensure!(
        (k.scope == Scope::Workload) == matches!(k.access, Access::Task | Access::Cgroup),
        "workload scope goes with task or cgroup access"
    );
    ensure!(
        (k.scope == Scope::Device) == k.name.contains(DEVICE),
        "a device knob's name (and only it) carries {DEVICE}"
    );
    match k.ty {
        Type::Int => {
            let (Some(lo), Some(hi)) = (k.min, k.max) else {
                anyhow::bail!("an int knob needs min and max");
            };
            ensure!(lo <= hi, "min > max");
            ensure!(
                k.step.is_none_or(|s| s > 0 && lo % s == 0),
                "step must divide min"
            );
        }
        Type::Enum => ensure!(!k.values.is_empty(), "an enum knob needs values"),
        _ => ensure!(
            k.min.is_none() && k.max.is_none() && k.values.is_empty() && k.step.is_none(),
            "only int knobs have min/max and only enum knobs values"
        ),
    }
    Ok(())
}

/// A catalogue entry resolved for one concrete name.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub knob: &'static Knob,
    /// The concrete name (`block.vda.scheduler`).
    pub name: String,
    pub device: Option<String>,
}

impl Resolved {
    /// The file this knob is read and written through (file, selector,
    /// feature access).
    pub fn path(&self) -> Option<String> {
        let p = self.knob.path.as_deref()?;
        Some(match &self.device {
            Some(d) => p.replace(DEVICE, d),
            None => p.to_string(),
        })
    }
}

/// Find a knob by its concrete name. Unknown names get the nearest
/// catalogue names in the message.
pub fn resolve(name: &str) -> Result<Resolved, Error> {
    let name = name.trim();
    for k in all() {
        if k.scope != Scope::Device {
            if k.name == name {
                return Ok(Resolved {
                    knob: k,
                    name: name.into(),
                    device: None,
                });
            }
            continue;
        }
        let (pre, post) = k.name.split_once(DEVICE).expect("checked");
        if let Some(dev) = name
            .strip_prefix(pre)
            .and_then(|rest| rest.strip_suffix(post))
        {
            valid_device(dev)?;
            return Ok(Resolved {
                knob: k,
                name: name.into(),
                device: Some(dev.into()),
            });
        }
    }
    let near: Vec<&str> = all()
        .iter()
        .map(|k| k.name.as_str())
        .filter(|n| {
            let stem = name.split('.').next().unwrap_or(name);
            n.starts_with(stem) || n.contains(name.rsplit('.').next().unwrap_or(name))
        })
        .take(8)
        .collect();
    Err(Error::NotFound(if near.is_empty() {
        format!("unknown knob '{name}'; `schedcp knob list` shows the catalogue")
    } else {
        format!(
            "unknown knob '{name}'; similar: {}; `schedcp knob list` shows the catalogue",
            near.join(", ")
        )
    }))
}

/// A block device name as `/sys/block` has it: no path tricks.
fn valid_device(dev: &str) -> Result<(), Error> {
    let ok = !dev.is_empty()
        && dev.len() <= 32
        && dev
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == ':');
    if !ok {
        return Err(Error::Input(format!(
            "'{dev}' is not a block device name (letters, digits, '-', '_', ':'; as in /sys/block)"
        )));
    }
    Ok(())
}

/// The block devices a device knob can name here.
pub fn devices() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/block")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|d| valid_device(d).is_ok())
                // Loop and RAM disks are not I/O targets worth tuning.
                .filter(|d| !d.starts_with("loop") && !d.starts_with("ram"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_parses_and_covers_the_issue_list() {
        let names: Vec<&str> = all().iter().map(|k| k.name.as_str()).collect();
        for want in [
            "kernel.sched_autogroup_enabled",
            "kernel.sched_cfs_bandwidth_slice_us",
            "sched.base_slice_ns",
            "sched.migration_cost_ns",
            "sched.nr_migrate",
            "sched.preempt",
            "workload.nice",
            "workload.policy",
            "workload.slice_us",
            "workload.affinity",
            "workload.cpu_weight",
            "workload.cpu_idle",
            "workload.cpu_max",
            "thp.enabled",
            "thp.defrag",
            "vm.swappiness",
            "vm.dirty_ratio",
            "vm.dirty_background_ratio",
            "vm.dirty_expire_centisecs",
            "vm.vfs_cache_pressure",
            "kernel.numa_balancing",
            "block.{device}.scheduler",
            "block.{device}.read_ahead_kb",
            "block.{device}.nr_requests",
            "block.{device}.rq_affinity",
        ] {
            assert!(names.contains(&want), "catalogue lacks {want}");
        }
        assert!(all().iter().any(|k| k.access == Access::Feature));
    }

    #[test]
    fn names_resolve_with_devices_and_unknown_ones_say_so() {
        let r = resolve("block.vda.read_ahead_kb").unwrap();
        assert_eq!(r.device.as_deref(), Some("vda"));
        assert_eq!(r.path().unwrap(), "/sys/block/vda/queue/read_ahead_kb");
        assert!(resolve("block.../x.read_ahead_kb").is_err());
        let e = resolve("vm.swapiness").unwrap_err().to_string();
        assert!(e.contains("unknown knob 'vm.swapiness'"), "{e}");
        assert!(e.contains("vm.swappiness"), "{e}");
    }

    #[test]
    fn the_checker_refuses_paths_outside_the_roots() {
        let bad = r#"[[knob]]
name = "evil"
group = "memory"
scope = "system"
access = "file"
path = "/etc/shadow"
type = "int"
min = 0
max = 1
risk = "low"
kernels = "all"
affects = "x"
helps_when = "x"
hurts_when = "x"
evidence = "x"
"#;
        let e = parse(bad).unwrap_err().to_string();
        assert!(e.contains("outside the roots"), "{e}");
    }
}
