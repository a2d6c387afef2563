//! Lab workload specifications (`name[:key=value,...]`) and their results.
//!
//! The schema lives here, not in the guest, so the host rejects a bad spec
//! before it spends seconds booting a VM.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The built-in workloads the guest agent can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Many short CPU-bound jobs plus a few long ones; metric: makespan.
    Batch,
    /// schbench-style message/worker wakeups; metric: p99 wakeup latency.
    Wakeup,
    /// hackbench-style pipe/socket ping-pong groups; metric: total time.
    Pingpong,
    /// Equal-weight CPU hogs plus lower-weight ones; metric: the smallest
    /// share any equal-weight hog got (starvation and fairness check).
    Fairness,
}

impl WorkloadKind {
    pub const ALL: [WorkloadKind; 4] = [Self::Batch, Self::Wakeup, Self::Pingpong, Self::Fairness];

    pub fn name(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::Wakeup => "wakeup",
            Self::Pingpong => "pingpong",
            Self::Fairness => "fairness",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Self::Batch => "many short CPU-bound jobs plus a few long ones, all released at once; reports makespan and per-job completion times",
            Self::Wakeup => "message threads wake worker threads (schbench style); reports p50/p99/p99.9 wakeup latency and requests/s",
            Self::Pingpong => "groups of senders and receivers exchanging messages over pipes or sockets (hackbench style); reports total time",
            Self::Fairness => "equal-weight CPU hog threads plus lower-weight (niced) ones, all runnable for a fixed time; reports each one's CPU time and the smallest share of the fair share any equal-weight hog got (starvation check)",
        }
    }

    /// Parameters this workload accepts, with defaults and bounds.
    pub fn params(self) -> &'static [ParamSpec] {
        match self {
            Self::Batch => BATCH_PARAMS,
            Self::Wakeup => WAKEUP_PARAMS,
            Self::Pingpong => PINGPONG_PARAMS,
            Self::Fairness => FAIRNESS_PARAMS,
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One accepted parameter.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub kind: ParamKind,
    pub doc: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub enum ParamKind {
    Int {
        default: u64,
        min: u64,
        max: u64,
    },
    Choice {
        default: &'static str,
        choices: &'static [&'static str],
    },
}

const BATCH_PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "short",
        kind: ParamKind::Int {
            default: 32,
            min: 0,
            max: 4096,
        },
        doc: "number of short jobs",
    },
    ParamSpec {
        name: "long",
        kind: ParamKind::Int {
            default: 2,
            min: 0,
            max: 256,
        },
        doc: "number of long jobs",
    },
    ParamSpec {
        name: "short_ms",
        kind: ParamKind::Int {
            default: 20,
            min: 1,
            max: 60_000,
        },
        doc: "CPU work per short job, in milliseconds of calibrated spinning",
    },
    ParamSpec {
        name: "long_ms",
        kind: ParamKind::Int {
            default: 400,
            min: 1,
            max: 600_000,
        },
        doc: "CPU work per long job, in milliseconds of calibrated spinning",
    },
];

const WAKEUP_PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "messengers",
        kind: ParamKind::Int {
            default: 2,
            min: 1,
            max: 64,
        },
        doc: "message threads",
    },
    ParamSpec {
        name: "workers",
        kind: ParamKind::Int {
            default: 4,
            min: 1,
            max: 256,
        },
        doc: "worker threads per message thread",
    },
    ParamSpec {
        name: "duration_ms",
        kind: ParamKind::Int {
            default: 3000,
            min: 100,
            max: 600_000,
        },
        doc: "how long to run",
    },
    ParamSpec {
        name: "work_us",
        kind: ParamKind::Int {
            default: 100,
            min: 0,
            max: 1_000_000,
        },
        doc: "CPU work a worker does per request",
    },
    ParamSpec {
        name: "hogs",
        kind: ParamKind::Int {
            default: 1,
            min: 0,
            max: 64,
        },
        doc: "background CPU hog threads competing with the workers",
    },
];

const FAIRNESS_PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "hogs",
        kind: ParamKind::Int {
            default: 4,
            min: 1,
            max: 256,
        },
        doc: "equal-weight (nice 0) CPU hog threads",
    },
    ParamSpec {
        name: "niced",
        kind: ParamKind::Int {
            default: 1,
            min: 0,
            max: 64,
        },
        doc: "lower-weight CPU hog threads at nice 5 (a class a scheduler might starve)",
    },
    ParamSpec {
        name: "duration_ms",
        kind: ParamKind::Int {
            default: 2000,
            min: 100,
            max: 600_000,
        },
        doc: "how long every hog stays runnable",
    },
];

const PINGPONG_PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "groups",
        kind: ParamKind::Int {
            default: 2,
            min: 1,
            max: 64,
        },
        doc: "independent groups",
    },
    ParamSpec {
        name: "pairs",
        kind: ParamKind::Int {
            default: 5,
            min: 1,
            max: 64,
        },
        doc: "sender/receiver pairs per group (every sender talks to every receiver of its group)",
    },
    ParamSpec {
        name: "loops",
        kind: ParamKind::Int {
            default: 1000,
            min: 1,
            max: 1_000_000,
        },
        doc: "messages each sender sends to each receiver",
    },
    ParamSpec {
        name: "size",
        kind: ParamKind::Int {
            default: 100,
            min: 1,
            max: 4096,
        },
        doc: "message size in bytes",
    },
    ParamSpec {
        name: "transport",
        kind: ParamKind::Choice {
            default: "pipe",
            choices: &["pipe", "socket"],
        },
        doc: "pipe or unix socketpair",
    },
];

/// A parsed, validated workload spec with every parameter resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    pub kind: WorkloadKind,
    /// Every parameter of `kind`, defaults filled in.
    pub params: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("unknown workload '{0}'; choose one of: batch, wakeup, pingpong, fairness")]
    UnknownWorkload(String),
    #[error("workload '{workload}' has no parameter '{param}'; it accepts: {accepted}")]
    UnknownParam {
        workload: String,
        param: String,
        accepted: String,
    },
    #[error("parameter '{0}' is malformed; write key=value (e.g. batch:short=64,long=4)")]
    Malformed(String),
    #[error(
        "parameter '{param}' of '{workload}' must be an integer in {min}..={max}, got '{value}'"
    )]
    OutOfRange {
        workload: String,
        param: String,
        value: String,
        min: u64,
        max: u64,
    },
    #[error("parameter '{param}' of '{workload}' must be one of {choices}, got '{value}'")]
    BadChoice {
        workload: String,
        param: String,
        value: String,
        choices: String,
    },
    #[error("parameter '{0}' is given twice")]
    Duplicate(String),
}

impl FromStr for WorkloadSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, rest) = match s.split_once(':') {
            Some((n, r)) => (n.trim(), Some(r)),
            None => (s.trim(), None),
        };
        let kind = WorkloadKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| SpecError::UnknownWorkload(name.to_string()))?;
        let mut given = BTreeMap::new();
        for item in rest
            .into_iter()
            .flat_map(|r| r.split(','))
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| SpecError::Malformed(item.to_string()))?;
            let (k, v) = (k.trim().replace('-', "_"), v.trim().to_string());
            if k.is_empty() || v.is_empty() {
                return Err(SpecError::Malformed(item.to_string()));
            }
            if given.insert(k.clone(), v).is_some() {
                return Err(SpecError::Duplicate(k));
            }
        }
        let mut params = BTreeMap::new();
        for p in kind.params() {
            let value = given.remove(p.name);
            let resolved = match (p.kind, value) {
                (ParamKind::Int { default, .. }, None) => default.to_string(),
                (ParamKind::Int { min, max, .. }, Some(v)) => match v.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => n.to_string(),
                    _ => {
                        return Err(SpecError::OutOfRange {
                            workload: kind.name().into(),
                            param: p.name.into(),
                            value: v,
                            min,
                            max,
                        })
                    }
                },
                (ParamKind::Choice { default, .. }, None) => default.to_string(),
                (ParamKind::Choice { choices, .. }, Some(v)) => {
                    if !choices.contains(&v.as_str()) {
                        return Err(SpecError::BadChoice {
                            workload: kind.name().into(),
                            param: p.name.into(),
                            value: v,
                            choices: choices.join(", "),
                        });
                    }
                    v
                }
            };
            params.insert(p.name.to_string(), resolved);
        }
        if let Some(param) = given.into_keys().next() {
            return Err(SpecError::UnknownParam {
                workload: kind.name().into(),
                param,
                accepted: kind
                    .params()
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(WorkloadSpec { kind, params })
    }
}

impl fmt::Display for WorkloadSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        let mut sep = ':';
        for (k, v) in &self.params {
            write!(f, "{sep}{k}={v}")?;
            sep = ',';
        }
        Ok(())
    }
}

impl WorkloadSpec {
    /// An integer parameter; the spec was validated at parse time.
    pub fn int(&self, name: &str) -> u64 {
        self.params
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("workload spec lacks integer parameter {name}"))
    }

    /// A choice parameter; the spec was validated at parse time.
    pub fn choice(&self, name: &str) -> &str {
        self.params
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("workload spec lacks parameter {name}"))
    }
}

/// Whether a smaller or larger value of a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub better: Better,
}

impl Metric {
    pub fn new(name: &str, value: f64, unit: &str, better: Better) -> Self {
        Metric {
            name: name.into(),
            value,
            unit: unit.into(),
            better,
        }
    }
}

/// What a workload run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadResult {
    pub spec: WorkloadSpec,
    /// The metric this workload is judged by (batch: makespan, wakeup: p99
    /// latency, pingpong: total time). Also present in `metrics`.
    pub primary: String,
    pub metrics: Vec<Metric>,
    /// Workload-specific detail (per-job completion times, ...).
    pub detail: serde_json::Value,
}

impl WorkloadResult {
    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }

    pub fn primary_metric(&self) -> Option<&Metric> {
        self.metric(&self.primary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in() {
        let s: WorkloadSpec = "batch".parse().unwrap();
        assert_eq!(s.int("short"), 32);
        assert_eq!(s.to_string().parse::<WorkloadSpec>().unwrap(), s);
    }

    #[test]
    fn overrides_and_dashes() {
        let s: WorkloadSpec = "pingpong:groups=3,transport=socket,size=64"
            .parse()
            .unwrap();
        assert_eq!(s.int("groups"), 3);
        assert_eq!(s.choice("transport"), "socket");
        let s: WorkloadSpec = "batch:short-ms=5".parse().unwrap();
        assert_eq!(s.int("short_ms"), 5);
    }

    #[test]
    fn errors_are_precise() {
        assert_eq!(
            "nope".parse::<WorkloadSpec>().unwrap_err(),
            SpecError::UnknownWorkload("nope".into())
        );
        assert!(matches!(
            "batch:bogus=1".parse::<WorkloadSpec>(),
            Err(SpecError::UnknownParam { .. })
        ));
        assert!(matches!(
            "batch:short=-1".parse::<WorkloadSpec>(),
            Err(SpecError::OutOfRange { .. })
        ));
        assert!(matches!(
            "batch:short=99999".parse::<WorkloadSpec>(),
            Err(SpecError::OutOfRange { .. })
        ));
        assert!(matches!(
            "batch:short".parse::<WorkloadSpec>(),
            Err(SpecError::Malformed(_))
        ));
        assert!(matches!(
            "batch:short=1,short=2".parse::<WorkloadSpec>(),
            Err(SpecError::Duplicate(_))
        ));
        assert!(matches!(
            "pingpong:transport=udp".parse::<WorkloadSpec>(),
            Err(SpecError::BadChoice { .. })
        ));
    }
}
