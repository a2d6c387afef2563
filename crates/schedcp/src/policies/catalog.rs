//! The catalogue of production sched_ext schedulers from the scx project
//! (`schedulers/external/catalog.toml`), embedded in the binary and imported
//! into the repository as external policies.

use serde::Deserialize;

use super::model::{Body, ExternalFlag, ExternalSpec, NewPolicy, Origin};
use crate::bpf::meta::PolicyMeta;

const CATALOG: &str = include_str!("../../../../schedulers/external/catalog.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    scheduler: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    #[serde(rename = "crate")]
    crate_name: String,
    version: String,
    binary: String,
    ops_name: Option<String>,
    description: String,
    algorithm: String,
    target_workloads: Vec<String>,
    limitations: Vec<String>,
    #[serde(default)]
    flags: Vec<ExternalFlag>,
}

/// Every catalogue entry as a policy to import. Errors are build bugs,
/// caught by the tests.
pub fn all() -> anyhow::Result<Vec<NewPolicy>> {
    let file: File = toml::from_str(CATALOG)
        .map_err(|e| anyhow::anyhow!("schedulers/external/catalog.toml: {e}"))?;
    Ok(file
        .scheduler
        .into_iter()
        .map(|e| NewPolicy {
            meta: PolicyMeta {
                // The kernel shows an ops name; where the catalogue could
                // not confirm it, the crate name stands in.
                ops_name: e.ops_name.unwrap_or_else(|| e.name.clone()),
                name: e.name,
                description: e.description,
                algorithm: e.algorithm,
                target_workloads: e.target_workloads,
                limitations: e.limitations,
                tunables: Vec::new(),
            },
            origin: Origin::External,
            body: Body::External(ExternalSpec {
                crate_name: e.crate_name,
                version: e.version,
                binary: e.binary,
                flags: e.flags,
            }),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_valid_and_covers_the_main_schedulers() {
        let all = all().unwrap();
        for p in &all {
            crate::policies::validate::new_policy(p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.meta.name));
        }
        let names: Vec<&str> = all.iter().map(|p| p.meta.name.as_str()).collect();
        for want in [
            "scx_bpfland",
            "scx_lavd",
            "scx_rusty",
            "scx_cosmos",
            "scx_flash",
            "scx_p2dq",
            "scx_layered",
            "scx_rustland",
        ] {
            assert!(names.contains(&want), "missing {want}");
        }
    }
}
