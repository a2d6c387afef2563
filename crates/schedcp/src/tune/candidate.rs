//! What the tuner can try: a knob change set or a scheduler (with its
//! tunables), why it is on the list, and where it can be trialled.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::knobs::Assignment;

/// One change to trial against the current configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A knob change set, applied and restored as one.
    Knobs { knobs: Vec<Assignment> },
    /// A sched_ext scheduler from the library (a built-in's name or a
    /// stored policy), with tunables `NAME=VALUE`.
    Scheduler {
        policy: String,
        #[serde(default)]
        tunables: Vec<String>,
    },
}

impl Change {
    /// `workload.nice=-5` / `scheduler latency (slice_us=500)`.
    pub fn describe(&self) -> String {
        match self {
            Change::Knobs { knobs } => knobs
                .iter()
                .map(|a| format!("{}={}", a.knob, a.value))
                .collect::<Vec<_>>()
                .join(", "),
            Change::Scheduler { policy, tunables } if tunables.is_empty() => {
                format!("scheduler {policy}")
            }
            Change::Scheduler { policy, tunables } => {
                format!("scheduler {policy} ({})", tunables.join(", "))
            }
        }
    }

    /// The same change with `knob`'s value (or tunable) set to `value`.
    pub fn with_value(&self, knob: &str, value: &str) -> Change {
        match self {
            Change::Knobs { knobs } => Change::Knobs {
                knobs: knobs
                    .iter()
                    .map(|a| {
                        let mut a = a.clone();
                        if a.knob == knob {
                            a.value = value.to_string();
                        }
                        a
                    })
                    .collect(),
            },
            Change::Scheduler { policy, tunables } => Change::Scheduler {
                policy: policy.clone(),
                tunables: tunables
                    .iter()
                    .map(|t| match t.split_once('=') {
                        Some((k, _)) if k == knob => format!("{k}={value}"),
                        _ => t.clone(),
                    })
                    .collect(),
            },
        }
    }

    /// A key that names the change whatever its numeric values, so that
    /// evidence about `read_ahead_kb=512` counts for `read_ahead_kb=1024`'s
    /// family too: `knobs:block.vda.read_ahead_kb` / `scheduler:latency`.
    pub fn family(&self) -> String {
        match self {
            Change::Knobs { knobs } => {
                let mut names: Vec<&str> = knobs.iter().map(|a| a.knob.as_str()).collect();
                names.sort();
                format!("knobs:{}", names.join("+"))
            }
            Change::Scheduler { policy, .. } => format!("scheduler:{policy}"),
        }
    }
}

/// Where a trial runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Venue {
    /// This machine, for real.
    Host,
    /// The lab micro-VM (emulated timing under TCG): evidence for the
    /// library, never applied to this machine.
    Lab,
}

impl Venue {
    pub fn as_str(self) -> &'static str {
        match self {
            Venue::Host => "host",
            Venue::Lab => "lab VM (emulated timing)",
        }
    }
}

/// A numeric dimension searched for the best value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Numeric {
    /// The knob (or scheduler tunable) whose value is searched.
    pub knob: String,
    /// Allowed values, ascending, inside the safe range.
    pub values: Vec<f64>,
    /// Search in log scale.
    pub log: bool,
}

/// Where a candidate came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A rule fired on the signature.
    Rule { rule: String },
    /// Handed in by an agent or operator.
    Agent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Candidate {
    pub change: Change,
    pub source: Source,
    /// The measured reason it is on the list.
    pub reason: String,
    /// Prior strength 0..1 from the rule (agents' candidates: 0.5).
    pub score: f64,
    /// What evidence from similar past workloads did to its rank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric: Option<Numeric>,
    pub venue: Venue,
}

/// What rules need to know about where candidates can run.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Knobs this machine allows, with their current values.
    pub host_knobs: BTreeMap<String, Option<String>>,
    /// Block devices with knobs, in catalogue order.
    pub devices: Vec<String>,
    /// The host kernel has sched_ext (scheduler trials run here).
    pub host_sched_ext: bool,
    /// The lab VM can run (a sched_ext kernel is cached).
    pub lab: bool,
    /// The workload profile per-workload knobs target (none: the workload
    /// is not a profile, and no per-workload knob is proposed).
    pub profile: Option<String>,
}

impl Context {
    /// Where knob assignments can be trialled: the host when it allows all
    /// of them, else the lab VM when they are all system-wide knobs (the VM
    /// has none of this machine's devices or processes).
    pub fn knob_venue(&self, knobs: &[Assignment]) -> Option<Venue> {
        if knobs.iter().all(|a| self.host_knobs.contains_key(&a.knob)) {
            return Some(Venue::Host);
        }
        let system = knobs.iter().all(|a| {
            crate::knobs::catalog::resolve(&a.knob)
                .map(|r| r.knob.scope == crate::knobs::catalog::Scope::System)
                .unwrap_or(false)
        });
        (system && self.lab).then_some(Venue::Lab)
    }

    pub fn scheduler_venue(&self) -> Option<Venue> {
        if self.host_sched_ext {
            Some(Venue::Host)
        } else {
            self.lab.then_some(Venue::Lab)
        }
    }

    /// The current value of a host knob, if it can be read.
    pub fn current(&self, knob: &str) -> Option<&str> {
        self.host_knobs.get(knob)?.as_deref()
    }
}
