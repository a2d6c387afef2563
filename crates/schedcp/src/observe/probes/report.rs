//! What a probe run returns, as data (serde) and as text.

use std::fmt::Write as _;

use serde::Serialize;

use super::bpf_stats::Cost;
use super::catalog::ProbeKind;
use super::cputime::Cputime;
use super::request::Filter;
use super::runqlat::Runqlat;
use super::schedevents::Schedevents;

/// One bounded probe run.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ProbeReport {
    pub probe: ProbeKind,
    pub requested_s: u64,
    /// How long the probe was attached.
    pub duration_s: f64,
    /// Stopped early (SIGINT/SIGTERM); the result covers the time attached.
    pub interrupted: bool,
    pub filter: Filter,
    /// Events the probe aggregated: latencies (runqlat), switch-ins
    /// (cputime), events counted (schedevents).
    pub events: u64,
    pub result: ProbeResult,
    /// The probe's own cost, when asked for (`--cost`).
    pub cost: Option<Cost>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ProbeResult {
    Runqlat(Runqlat),
    Cputime(Cputime),
    Schedevents(Schedevents),
}

impl ProbeResult {
    pub fn events(&self) -> u64 {
        match self {
            ProbeResult::Runqlat(r) => r.count,
            ProbeResult::Cputime(c) => c.switches,
            ProbeResult::Schedevents(s) => s.totals.total(),
        }
    }

    pub fn render(&self) -> String {
        match self {
            ProbeResult::Runqlat(r) => r.render(),
            ProbeResult::Cputime(c) => c.render(),
            ProbeResult::Schedevents(s) => s.render(),
        }
    }
}

impl ProbeReport {
    pub fn render(&self) -> String {
        let mut s = format!(
            "{}: {} for {:.1} s{}\n",
            self.probe,
            self.filter.describe(),
            self.duration_s,
            if self.interrupted {
                format!(" (interrupted; {} s requested)", self.requested_s)
            } else {
                String::new()
            }
        );
        s.push_str(&self.result.render());
        if let Some(cost) = &self.cost {
            s.push_str(&render_cost(cost));
        }
        s
    }
}

/// The per-program cost table.
pub fn render_cost(cost: &Cost) -> String {
    let mut s = String::new();
    let ns = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    let _ = writeln!(
        s,
        "cost: {} ns/event over {} events ({} ns of BPF run time)",
        ns(cost.ns_per_event),
        cost.run_cnt,
        cost.run_time_ns
    );
    for p in &cost.programs {
        let _ = writeln!(
            s,
            "  {:<16} {:>12} runs {:>10} ns/run",
            p.name,
            p.run_cnt,
            ns(p.ns_per_run)
        );
    }
    s
}
