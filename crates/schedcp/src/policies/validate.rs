//! What `add` accepts. Every entry point (CLI, MCP, REST, import) goes
//! through here, and every refusal says what is wrong and what is allowed.

use super::model::{Body, ExternalSpec, KnobSet, NewPolicy};
use crate::bpf::meta::{is_identifier, PolicyMeta};
use crate::error::Error;

pub const MAX_SOURCE_BYTES: usize = 256 * 1024;
pub const MAX_DESCRIPTION: usize = 2_000;
pub const MAX_ALGORITHM: usize = 8_000;
pub const MAX_TARGETS: usize = 16;
pub const MAX_LIMITATIONS: usize = 32;
pub const MAX_LIMITATION: usize = 1_000;
pub const MAX_TUNABLES: usize = 64;
pub const MAX_DOC: usize = 1_000;
pub const MAX_FLAGS: usize = 64;

fn bad(msg: String) -> Error {
    Error::Input(msg)
}

fn bounded(field: &str, s: &str, max: usize) -> Result<(), Error> {
    if s.trim().is_empty() {
        return Err(bad(format!("{field} is required and must not be empty")));
    }
    if s.chars().count() > max {
        return Err(bad(format!(
            "{field} is {} characters; at most {max} are allowed",
            s.chars().count()
        )));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(bad(format!("{field} contains control characters")));
    }
    Ok(())
}

/// A workload tag: lowercase words joined by '-', like "interactive" or "hybrid-cpu".
pub fn is_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.split('-').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

pub fn meta(m: &PolicyMeta) -> Result<(), Error> {
    m.validate().map_err(|e| bad(format!("{e:#}")))?;
    if !m
        .ops_name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(bad(format!(
            "ops_name '{}' may contain only letters, digits and _ (the kernel shows it in /sys/kernel/sched_ext/root/ops)",
            m.ops_name
        )));
    }
    bounded("description", &m.description, MAX_DESCRIPTION)?;
    bounded("algorithm", &m.algorithm, MAX_ALGORITHM)?;
    if m.target_workloads.is_empty() || m.target_workloads.len() > MAX_TARGETS {
        return Err(bad(format!(
            "target_workloads must list 1 to {MAX_TARGETS} workload tags (e.g. [\"latency\", \"interactive\"]); it has {}",
            m.target_workloads.len()
        )));
    }
    if let Some(t) = m.target_workloads.iter().find(|t| !is_tag(t)) {
        return Err(bad(format!(
            "target workload '{t}' is not a tag: lowercase letters and digits, words joined by '-', at most 32 characters"
        )));
    }
    if m.limitations.len() > MAX_LIMITATIONS {
        return Err(bad(format!(
            "at most {MAX_LIMITATIONS} limitations are allowed"
        )));
    }
    for l in &m.limitations {
        bounded("a limitation", l, MAX_LIMITATION)?;
    }
    if m.tunables.len() > MAX_TUNABLES {
        return Err(bad(format!("at most {MAX_TUNABLES} tunables are allowed")));
    }
    for t in &m.tunables {
        bounded(&format!("tunable '{}' doc", t.name), &t.doc, MAX_DOC)?;
    }
    let mut names: Vec<&str> = m.tunables.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(bad(format!("tunable '{}' is declared twice", w[0])));
    }
    Ok(())
}

pub fn source(src: &str) -> Result<(), Error> {
    if src.len() > MAX_SOURCE_BYTES {
        return Err(bad(format!(
            "the BPF source is {} bytes; at most {MAX_SOURCE_BYTES} are allowed",
            src.len()
        )));
    }
    if src.trim().is_empty() {
        return Err(bad("the BPF source is empty".into()));
    }
    if src.contains('\0') {
        return Err(bad("the BPF source contains NUL bytes".into()));
    }
    if !(src.contains("SCX_OPS_DEFINE") || src.contains("struct sched_ext_ops")) {
        return Err(bad(
            "the BPF source defines no scheduler: it needs a `struct sched_ext_ops` (usually through SCX_OPS_DEFINE(...))"
                .into(),
        ));
    }
    Ok(())
}

pub fn external(x: &ExternalSpec) -> Result<(), Error> {
    let crate_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !crate_ok(&x.crate_name) {
        return Err(bad(format!("crate '{}' is not a crate name", x.crate_name)));
    }
    if !crate_ok(&x.binary) {
        return Err(bad(format!(
            "binary '{}' must be a plain program name, not a path",
            x.binary
        )));
    }
    if x.version.is_empty()
        || !x
            .version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'+')
    {
        return Err(bad(format!(
            "version '{}' is not a crate version",
            x.version
        )));
    }
    if x.flags.len() > MAX_FLAGS {
        return Err(bad(format!("at most {MAX_FLAGS} flags are allowed")));
    }
    for f in &x.flags {
        let name = f.flag.strip_prefix("--").unwrap_or("");
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(bad(format!(
                "flag '{}' must be a long option like --slice-us",
                f.flag
            )));
        }
        if !matches!(
            f.kind.as_str(),
            "int" | "bool" | "string" | "enum" | "float"
        ) {
            return Err(bad(format!(
                "flag {}: type '{}' is not one of int, float, bool, string, enum",
                f.flag, f.kind
            )));
        }
        bounded(&format!("flag {} doc", f.flag), &f.doc, MAX_DOC)?;
    }
    Ok(())
}

/// Everything about a policy to add.
pub fn new_policy(p: &NewPolicy) -> Result<(), Error> {
    if !is_identifier(&p.meta.name) {
        return Err(bad(format!(
            "policy name '{}' must be a plain identifier: letters, digits and _, starting with a letter, at most 64 (no paths, spaces or dots)",
            p.meta.name
        )));
    }
    meta(&p.meta)?;
    match &p.body {
        Body::Bpf { source: s } => source(s),
        Body::External(x) => external(x),
        Body::Knobs(k) => knob_set(k),
    }
}

/// A knob set as a library entry: every name in the catalogue, every value
/// within its safe range, a workload for per-workload knobs and only for
/// them. Whether this machine offers each knob is deploy's admission check,
/// not the library's: the library is shared between machines.
pub fn knob_set(k: &KnobSet) -> Result<(), Error> {
    use crate::knobs::{catalog, change::MAX_ASSIGNMENTS, value};
    if k.knobs.is_empty() || k.knobs.len() > MAX_ASSIGNMENTS {
        return Err(bad(format!(
            "a knob set holds 1 to {MAX_ASSIGNMENTS} assignments; this one has {}",
            k.knobs.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for a in &k.knobs {
        let r = catalog::resolve(&a.knob).map_err(|e| bad(e.to_string()))?;
        value::canonical(r.knob, &r.name, &a.value).map_err(|e| bad(e.to_string()))?;
        let per_workload = r.knob.scope == catalog::Scope::Workload;
        match (&a.workload, per_workload) {
            (None, true) => {
                return Err(bad(format!(
                    "{} applies to one workload's processes: name its workload profile",
                    r.name
                )))
            }
            (Some(w), false) => {
                return Err(bad(format!(
                    "{} is machine-wide; it takes no workload (got '{w}')",
                    r.name
                )))
            }
            (Some(w), true) => crate::observe::workload_profiles::validate_name(w)?,
            _ => {}
        }
        if !seen.insert((r.name.clone(), a.workload.clone())) {
            return Err(bad(format!("{} is assigned twice", r.name)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::model::Origin;

    fn policy() -> NewPolicy {
        let meta = PolicyMeta::parse(
            r#"name = "x"
ops_name = "x_ops"
description = "d"
algorithm = "a"
target_workloads = ["batch", "hybrid-cpu"]
limitations = []"#,
        )
        .unwrap();
        NewPolicy {
            meta,
            origin: Origin::Agent,
            body: Body::Bpf {
                source: "SCX_OPS_DEFINE(x_ops, .name = \"x_ops\");".into(),
            },
        }
    }

    fn refused(p: &NewPolicy, want: &str) {
        let e = new_policy(p).unwrap_err();
        assert!(matches!(e, Error::Input(_)), "{e}");
        assert!(e.to_string().contains(want), "{e} !~ {want}");
    }

    #[test]
    fn a_good_policy_passes() {
        new_policy(&policy()).unwrap();
    }

    #[test]
    fn knob_sets_are_checked_against_the_catalogue() {
        use crate::knobs::Assignment;
        let a = |k: &str, v: &str, w: Option<&str>| Assignment {
            knob: k.into(),
            value: v.into(),
            workload: w.map(str::to_string),
        };
        let with = |knobs: Vec<Assignment>| {
            let mut p = policy();
            p.body = Body::Knobs(KnobSet { knobs });
            p
        };
        new_policy(&with(vec![
            a("vm.swappiness", "10", None),
            a("workload.nice", "-5", Some("build")),
        ]))
        .unwrap();
        refused(&with(vec![]), "1 to 64");
        refused(&with(vec![a("vm.nope", "1", None)]), "vm.nope");
        refused(
            &with(vec![a("vm.swappiness", "1000", None)]),
            "vm.swappiness",
        );
        refused(
            &with(vec![a("workload.nice", "-5", None)]),
            "name its workload profile",
        );
        refused(
            &with(vec![a("vm.swappiness", "10", Some("w"))]),
            "machine-wide",
        );
        refused(
            &with(vec![a("workload.nice", "-5", Some("../x"))]),
            "invalid profile name",
        );
        refused(
            &with(vec![
                a("vm.swappiness", "10", None),
                a("vm.swappiness", "20", None),
            ]),
            "assigned twice",
        );
    }

    #[test]
    fn each_violation_is_named() {
        for name in ["../x", "a b", "a.b", "", "9a"] {
            let mut p = policy();
            p.meta.name = name.into();
            refused(&p, "plain identifier");
        }
        let mut p = policy();
        p.meta.description = " ".into();
        refused(&p, "description is required");
        let mut p = policy();
        p.meta.algorithm = "x".repeat(MAX_ALGORITHM + 1);
        refused(&p, "at most 8000");
        let mut p = policy();
        p.meta.target_workloads = vec![];
        refused(&p, "1 to 16");
        let mut p = policy();
        p.meta.target_workloads = vec!["Low Latency".into()];
        refused(&p, "is not a tag");
        let mut p = policy();
        p.meta.ops_name = "x/ops".into();
        refused(&p, "ops_name");
        let mut p = policy();
        p.body = Body::Bpf {
            source: "x".repeat(MAX_SOURCE_BYTES + 1),
        };
        refused(&p, "at most 262144");
        let mut p = policy();
        p.body = Body::Bpf {
            source: "int main;".into(),
        };
        refused(&p, "defines no scheduler");
        let mut p = policy();
        p.body = Body::External(ExternalSpec {
            crate_name: "scx_x".into(),
            version: "1.0.0".into(),
            binary: "/usr/bin/x".into(),
            flags: vec![],
        });
        refused(&p, "not a path");
    }
}
