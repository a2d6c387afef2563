//! The built-in scheduler library, embedded from `schedulers/<name>/`.

use anyhow::{bail, Result};

use super::meta::PolicyMeta;

include!(concat!(env!("OUT_DIR"), "/builtin_policies.rs"));

/// A built-in policy: its metadata and BPF C source.
#[derive(Debug, Clone)]
pub struct BuiltinPolicy {
    pub meta: PolicyMeta,
    pub source: &'static str,
}

/// Every built-in policy; metadata errors are build bugs, caught by tests.
pub fn all() -> Result<Vec<BuiltinPolicy>> {
    BUILTIN
        .iter()
        .map(|(name, meta, source)| {
            let meta = PolicyMeta::parse(meta)
                .map_err(|e| anyhow::anyhow!("built-in policy {name}: {e:#}"))?;
            Ok(BuiltinPolicy { meta, source })
        })
        .collect()
}

pub fn names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _, _)| *n).collect()
}

pub fn get(name: &str) -> Result<BuiltinPolicy> {
    match all()?.into_iter().find(|p| p.meta.name == name) {
        Some(p) => Ok(p),
        None => bail!("unknown policy '{name}'; built-in policies: {}, or give a path to a .bpf.c file, or 'default' for the kernel's scheduler", names().join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_is_complete_and_consistent() {
        let all = all().unwrap();
        let names: Vec<_> = all.iter().map(|p| p.meta.name.as_str()).collect();
        for want in ["fifo", "vtime", "latency", "batch"] {
            assert!(names.contains(&want), "missing {want}");
        }
        for p in &all {
            assert_eq!(p.meta.ops_name, format!("schedcp_{}", p.meta.name));
            assert!(
                p.source.contains("UEI_RECORD"),
                "{} must record exit info",
                p.meta.name
            );
            for t in &p.meta.tunables {
                let c_default = c_tunable_default(p.source, &t.name).unwrap_or_else(|| {
                    panic!(
                        "{}: tunable {} is not a const volatile global with an initialiser",
                        p.meta.name, t.name
                    )
                });
                let toml_default = t
                    .default
                    .as_integer()
                    .map(|i| i.to_string())
                    .or_else(|| t.default.as_bool().map(|b| b.to_string()));
                assert_eq!(
                    Some(c_default),
                    toml_default,
                    "{}: default of {} differs between C and policy.toml",
                    p.meta.name,
                    t.name
                );
            }
        }
    }

    /// The initialiser of `const volatile <type> <name> = <value>;`.
    fn c_tunable_default(source: &str, name: &str) -> Option<String> {
        source.lines().map(str::trim).find_map(|l| {
            let rest = l.strip_prefix("const volatile ")?;
            let (decl, value) = rest.split_once('=')?;
            (decl.split_whitespace().last()? == name)
                .then(|| value.split(';').next().unwrap_or("").trim().to_string())
        })
    }
}
