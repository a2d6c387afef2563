//! Policy metadata (`policy.toml`) and tunable validation.

use anyhow::{bail, Context, Result};
use schedcp_proto::job::{RodataScalar, RodataValue};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyMeta {
    pub name: String,
    /// `sched_ext_ops.name`; the kernel reports it in /sys/kernel/sched_ext/root/ops.
    pub ops_name: String,
    pub description: String,
    pub algorithm: String,
    pub target_workloads: Vec<String>,
    pub limitations: Vec<String>,
    #[serde(default)]
    pub tunables: Vec<Tunable>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tunable {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: TunableKind,
    #[schemars(with = "serde_json::Value")]
    pub default: toml::Value,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub doc: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TunableKind {
    Int,
    Bool,
}

/// A plain identifier: what names of policies and tunables must be.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

impl PolicyMeta {
    pub fn parse(text: &str) -> Result<PolicyMeta> {
        let meta: PolicyMeta = toml::from_str(text)?;
        meta.validate()?;
        Ok(meta)
    }

    pub fn validate(&self) -> Result<()> {
        if !is_identifier(&self.name) {
            bail!(
                "policy name '{}' must be a plain identifier (letters, digits, _)",
                self.name
            );
        }
        if self.ops_name.is_empty() || self.ops_name.len() >= 128 {
            bail!("ops_name must be 1..127 characters");
        }
        for t in &self.tunables {
            if !is_identifier(&t.name) {
                bail!("tunable name '{}' must be a plain identifier", t.name);
            }
            match t.kind {
                TunableKind::Int => {
                    let (Some(min), Some(max)) = (t.min, t.max) else {
                        bail!("int tunable '{}' needs min and max", t.name);
                    };
                    let d = t.default.as_integer().with_context(|| {
                        format!("tunable '{}': default must be an integer", t.name)
                    })?;
                    if !(min <= d && d <= max) {
                        bail!("tunable '{}': default {d} is outside {min}..={max}", t.name);
                    }
                }
                TunableKind::Bool => {
                    t.default.as_bool().with_context(|| {
                        format!("tunable '{}': default must be true or false", t.name)
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Turn `name=value` overrides into rodata values, checking names, types
    /// and ranges against the metadata.
    pub fn resolve_tunables(&self, overrides: &[(String, String)]) -> Result<Vec<RodataValue>> {
        let mut out = Vec::new();
        for (name, value) in overrides {
            let t = self
                .tunables
                .iter()
                .find(|t| &t.name == name)
                .with_context(|| {
                    let known: Vec<&str> = self.tunables.iter().map(|t| t.name.as_str()).collect();
                    format!(
                        "policy '{}' has no tunable '{name}'; it has: {}",
                        self.name,
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    )
                })?;
            let scalar = match t.kind {
                TunableKind::Bool => RodataScalar::Bool(match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => bail!("tunable '{name}' is a bool; use true or false, not '{value}'"),
                }),
                TunableKind::Int => {
                    let v: i64 = value.parse().with_context(|| {
                        format!("tunable '{name}' must be an integer, got '{value}'")
                    })?;
                    let (min, max) = (t.min.unwrap_or(i64::MIN), t.max.unwrap_or(i64::MAX));
                    if !(min..=max).contains(&v) {
                        bail!("tunable '{name}' must be in {min}..={max}, got {v}");
                    }
                    RodataScalar::Int(v)
                }
            };
            out.push(RodataValue {
                name: name.clone(),
                value: scalar,
            });
        }
        Ok(out)
    }
}

/// Parse `name=value` as given on the command line.
pub fn parse_assignment(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not name=value"))?;
    if !is_identifier(k.trim()) || v.trim().is_empty() {
        return Err(format!("'{s}' is not name=value"));
    }
    Ok((k.trim().to_string(), v.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = r#"
name = "x"
ops_name = "schedcp_x"
description = "d"
algorithm = "a"
target_workloads = ["batch"]
limitations = []
[[tunables]]
name = "slice_us"
type = "int"
default = 5000
min = 100
max = 100000
doc = "slice"
[[tunables]]
name = "fifo"
type = "bool"
default = false
doc = "b"
"#;

    #[test]
    fn tunables_validate() {
        let m = PolicyMeta::parse(META).unwrap();
        let v = m
            .resolve_tunables(&[
                ("slice_us".into(), "200".into()),
                ("fifo".into(), "true".into()),
            ])
            .unwrap();
        assert_eq!(v[0].value, RodataScalar::Int(200));
        assert_eq!(v[1].value, RodataScalar::Bool(true));
        assert!(m
            .resolve_tunables(&[("slice_us".into(), "50".into())])
            .unwrap_err()
            .to_string()
            .contains("100..=100000"));
        assert!(m
            .resolve_tunables(&[("nope".into(), "1".into())])
            .unwrap_err()
            .to_string()
            .contains("has no tunable"));
        assert!(m
            .resolve_tunables(&[("fifo".into(), "yes".into())])
            .is_err());
    }

    #[test]
    fn bad_metadata_is_refused() {
        assert!(PolicyMeta::parse(&META.replace("name = \"x\"", "name = \"../x\"")).is_err());
        assert!(PolicyMeta::parse(&META.replace("default = 5000", "default = 5")).is_err());
        assert!(PolicyMeta::parse(&format!("{META}\nbogus = 1")).is_err());
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("vtime_2"));
        for bad in ["", "a b", "a.b", "a/b", "9x", "-x"] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }
}
