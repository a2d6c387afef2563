//! The policy repository's data model: what a policy is, its immutable
//! versions, lifecycle states, and the measured results that flow back.
//! Plain data shared by every backend and every door (CLI, MCP, REST).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bpf::meta::PolicyMeta;

/// How a policy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// BPF C compiled and loaded by schedcp.
    Bpf,
    /// A scheduler binary (e.g. an scx scheduler from the Rust crate registry) that
    /// schedcp runs and supervises.
    External,
    /// A knob change set (fair-scheduler, memory, block or per-workload
    /// knobs), applied by deploy like any change: a tuner's proven winner.
    Knobs,
}

/// Where a policy came from. Agent-written policies are never trusted
/// beyond what their measured results show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Builtin,
    External,
    Agent,
    /// Found and proven by schedcp's own tuner (a knob set).
    Tune,
}

/// Lifecycle of a version: candidate → verified → deployed → promoted, or
/// retired from any state. See [`super::curation`] for who moves it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Candidate,
    Verified,
    Deployed,
    Promoted,
    Retired,
}

/// Which part of schedcp measured a result. Only results schedcp measured
/// itself (verify, deploy, tune) count as evidence for promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResultSource {
    Manual,
    Verify,
    Deploy,
    Tune,
}

/// Whether a result shows the policy helped, hurt, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResultVerdict {
    Improved,
    Regressed,
    NoChange,
}

/// Metric direction: which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Lower,
    Higher,
}

macro_rules! str_enum {
    ($t:ty, $what:literal, $($v:ident = $s:literal),+) => {
        impl $t {
            pub const ALL: &'static [$t] = &[$(<$t>::$v),+];
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),+ }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok(<$t>::$v),)+
                    _ => Err(format!(
                        concat!("unknown ", $what, " '{}'; expected one of: {}"),
                        s,
                        [$($s),+].join(", ")
                    )),
                }
            }
        }
    };
}

str_enum!(
    Kind,
    "policy kind",
    Bpf = "bpf",
    External = "external",
    Knobs = "knobs"
);
str_enum!(
    Origin,
    "origin",
    Builtin = "builtin",
    External = "external",
    Agent = "agent",
    Tune = "tune"
);
str_enum!(
    State,
    "state",
    Candidate = "candidate",
    Verified = "verified",
    Deployed = "deployed",
    Promoted = "promoted",
    Retired = "retired"
);
str_enum!(
    ResultSource,
    "result source",
    Manual = "manual",
    Verify = "verify",
    Deploy = "deploy",
    Tune = "tune"
);
str_enum!(
    ResultVerdict,
    "verdict",
    Improved = "improved",
    Regressed = "regressed",
    NoChange = "no_change"
);
str_enum!(Direction, "direction", Lower = "lower", Higher = "higher");

/// One flag of an external scheduler binary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalFlag {
    pub flag: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    pub doc: String,
}

/// How to get and run an external scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalSpec {
    /// The crate (Rust crate registry) that ships it.
    #[serde(rename = "crate")]
    pub crate_name: String,
    /// The crate version the catalogue entry describes.
    pub version: String,
    /// The installed binary's name.
    pub binary: String,
    #[serde(default)]
    pub flags: Vec<ExternalFlag>,
}

/// The body of a version: what is hashed and never changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Body {
    Bpf { source: String },
    External(ExternalSpec),
    Knobs(KnobSet),
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Bpf { .. } => Kind::Bpf,
            Body::External(_) => Kind::External,
            Body::Knobs(_) => Kind::Knobs,
        }
    }
}

/// A knob change set as a library entry: the assignments deploy applies
/// and restores as one (per-workload knobs name their workload profile).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KnobSet {
    pub knobs: Vec<crate::knobs::Assignment>,
}

impl KnobSet {
    /// `vm.swappiness=10, workload.nice=-5 (build)`.
    pub fn describe(&self) -> String {
        self.knobs
            .iter()
            .map(|a| match &a.workload {
                Some(w) => format!("{}={} ({w})", a.knob, a.value),
                None => format!("{}={}", a.knob, a.value),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What `add` takes: a new policy, or a new version of an existing one.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NewPolicy {
    pub meta: PolicyMeta,
    pub origin: Origin,
    pub body: Body,
}

impl NewPolicy {
    /// SHA-256 over the canonical JSON of metadata and body: two versions
    /// with the same hash are the same policy, byte for byte.
    pub fn content_hash(&self) -> String {
        content_hash(&self.meta, &self.body)
    }

    /// Bytes its metadata and body take as stored (JSON), for quotas.
    pub fn stored_bytes(&self) -> u64 {
        let len = |v: serde_json::Result<String>| v.map_or(0, |s| s.len() as u64);
        len(serde_json::to_string(&self.meta)) + len(serde_json::to_string(&self.body))
    }
}

pub fn content_hash(meta: &PolicyMeta, body: &Body) -> String {
    // serde_json writes struct fields in declaration order: canonical enough
    // for one schema version, and the hash is recomputed on import.
    let canonical = serde_json::to_vec(&(meta, body)).expect("policy serialises");
    hex::encode(Sha256::digest(canonical))
}

/// One stored version.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PolicyVersion {
    pub name: String,
    pub version: u32,
    pub origin: Origin,
    pub state: State,
    pub content_hash: String,
    pub created_at: String,
    pub meta: PolicyMeta,
    pub body: Body,
}

impl PolicyVersion {
    /// `name@version`, how the CLI and reports refer to it.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// One line of `policy list`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PolicySummary {
    pub name: String,
    pub kind: Kind,
    pub origin: Origin,
    /// The latest version.
    pub version: u32,
    pub state: State,
    pub description: String,
    pub target_workloads: Vec<String>,
}

/// A lifecycle transition, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Transition {
    pub version: u32,
    pub from: Option<State>,
    pub to: State,
    pub reason: String,
    pub at: String,
}

/// A measured result to record against a version.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NewResult {
    /// The workload profile's name.
    pub workload: String,
    /// What the workload is, in words: matched against search queries so
    /// that results on similar workloads count. Defaults to the name.
    pub workload_description: String,
    pub metric: String,
    pub unit: String,
    pub direction: Direction,
    pub value: f64,
    pub baseline: Option<f64>,
    /// Improvement in percent, positive = better whatever the direction.
    pub improvement_pct: Option<f64>,
    pub p_value: Option<f64>,
    pub significant: bool,
    pub verdict: ResultVerdict,
    pub source: ResultSource,
    /// Where it was measured (host or lab kernel, accelerator, machine).
    pub environment: String,
    /// The measured workload's signature, when schedcp took one (tune
    /// results, and deployments tune applied): how evidence is matched to
    /// similar workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::observe::signature::Signature>,
}

/// A recorded result.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PolicyResult {
    pub id: i64,
    pub version: u32,
    pub recorded_at: String,
    #[serde(flatten)]
    pub result: NewResult,
}

/// Everything about one policy: versions, transitions, results.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct History {
    pub name: String,
    pub kind: Kind,
    pub origin: Origin,
    pub versions: Vec<PolicyVersion>,
    pub transitions: Vec<Transition>,
    pub results: Vec<PolicyResult>,
}

/// A verification report to keep with the version it judged.
#[derive(Debug, Clone)]
pub struct NewVerifyReport {
    pub passed: bool,
    /// SHA-256 of the report (the digest a deployment token binds).
    pub report_sha256: String,
    pub object_sha256: Option<String>,
    pub kernel_release: Option<String>,
    /// The whole report as JSON.
    pub report: serde_json::Value,
}

/// A kept verification report.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StoredVerifyReport {
    pub id: i64,
    pub name: String,
    pub version: u32,
    pub passed: bool,
    pub report_sha256: String,
    pub object_sha256: Option<String>,
    pub kernel_release: Option<String>,
    pub recorded_at: String,
    pub report: serde_json::Value,
}

/// The text fields search indexes, for the latest version of a policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchDoc {
    pub name: String,
    pub description: String,
    pub algorithm: String,
    pub targets: String,
    pub limitations: String,
    pub tunables: String,
}

impl SearchDoc {
    pub fn new(meta: &PolicyMeta, body: &Body) -> SearchDoc {
        let mut tunables: Vec<String> = meta
            .tunables
            .iter()
            .map(|t| format!("{}: {}", t.name, t.doc))
            .collect();
        match body {
            Body::External(x) => {
                tunables.extend(x.flags.iter().map(|f| format!("{}: {}", f.flag, f.doc)))
            }
            Body::Knobs(k) => tunables.push(k.describe()),
            Body::Bpf { .. } => {}
        }
        SearchDoc {
            name: meta.name.clone(),
            description: meta.description.clone(),
            algorithm: meta.algorithm.clone(),
            targets: meta.target_workloads.join(" "),
            limitations: meta.limitations.join(" "),
            tunables: tunables.join(" "),
        }
    }

    /// The passage embedded for semantic search. MiniLM reads at most 256
    /// word pieces, so the most telling fields come first.
    pub fn embedding_text(&self) -> String {
        format!(
            "{}: {} Suited to: {}. {}",
            self.name.replace('_', " "),
            self.description,
            self.targets,
            self.algorithm
        )
    }

    /// (field name, text) pairs, for explaining matches.
    pub fn fields(&self) -> [(&'static str, &str); 6] {
        [
            ("name", &self.name),
            ("description", &self.description),
            ("algorithm", &self.algorithm),
            ("targets", &self.targets),
            ("limitations", &self.limitations),
            ("tunables", &self.tunables),
        ]
    }
}

/// `name` or `name@version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    pub name: String,
    pub version: Option<u32>,
}

impl FromStr for PolicyRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, version) = match s.split_once('@') {
            Some((n, v)) => (
                n,
                Some(v.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| {
                    format!("'{s}': the version after @ must be a positive integer")
                })?),
            ),
            None => (s, None),
        };
        if !crate::bpf::meta::is_identifier(name) {
            return Err(format!(
                "'{name}' is not a policy name (plain identifier: letters, digits, _)"
            ));
        }
        Ok(PolicyRef {
            name: name.to_string(),
            version,
        })
    }
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(v) => write!(f, "{}@{v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_and_name_the_choices() {
        for s in State::ALL {
            assert_eq!(s.as_str().parse::<State>().unwrap(), *s);
        }
        let e = "live".parse::<State>().unwrap_err();
        assert!(
            e.contains("candidate, verified, deployed, promoted, retired"),
            "{e}"
        );
    }

    #[test]
    fn policy_refs() {
        assert_eq!(
            "vtime@3".parse::<PolicyRef>().unwrap(),
            PolicyRef {
                name: "vtime".into(),
                version: Some(3)
            }
        );
        assert_eq!("vtime".parse::<PolicyRef>().unwrap().version, None);
        for bad in ["vtime@0", "vtime@x", "../x", "a b@1", "@1"] {
            assert!(bad.parse::<PolicyRef>().is_err(), "{bad}");
        }
    }
}
