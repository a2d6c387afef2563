//! What a canary costs the workload it watches: the same workload run bare
//! and inside a canary KPI window (the runqlat probe attached, PSI and
//! `nr_rejected` read around it — exactly [`kpi::measure`], the deploy
//! controller's code path), alternating which goes first, in one run.
//! Health polling (a sysfs read every `health_poll_ms`) is not in the
//! window; it costs microseconds per poll.

use std::path::PathBuf;
use std::time::Duration;

use schedcp_proto::workload::WorkloadSpec;
use serde::Serialize;

use crate::compare::stats::{self, Summary};
use crate::deploy::kpi::{self, Workload, WorkloadKpi};
use crate::error::Error;

pub const MAX_RUNS: u32 = 50;

pub struct Config {
    /// The guest agent binary, which runs lab workloads on this host.
    pub agent: PathBuf,
    pub workload: WorkloadSpec,
    /// Runs per side.
    pub runs: u32,
}

#[derive(Debug, Serialize)]
pub struct Side {
    pub values: Vec<f64>,
    pub summary: Option<Summary>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub workload: String,
    pub metric: String,
    pub unit: String,
    /// `lower` or `higher` is better.
    pub better: String,
    pub bare: Side,
    pub canary: Side,
    /// Canary median over bare median.
    pub ratio: Option<f64>,
    /// How much worse the workload is under the canary, percent (negative:
    /// no measurable cost, within noise).
    pub overhead_pct: Option<f64>,
    /// Mann-Whitney p-value of canary against bare.
    pub p_value: Option<f64>,
    /// runqlat events per canary window (what the probe processed).
    pub probe_events_median: Option<f64>,
}

pub fn run(cfg: &Config, progress: &mut dyn FnMut(&str)) -> Result<Report, Error> {
    if !(2..=MAX_RUNS).contains(&cfg.runs) {
        return Err(Error::Input(format!("runs must be 2..={MAX_RUNS}")));
    }
    let w = Workload::lab(cfg.agent.clone(), cfg.workload.clone());
    let mut bare = Vec::new();
    let mut canary = Vec::new();
    let mut events = Vec::new();
    let mut meta: Option<WorkloadKpi> = None;
    for i in 0..cfg.runs {
        // Alternate the order so drift hits both sides alike.
        let order = if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for under_canary in order {
            progress(&format!(
                "run {}/{}: {}",
                i + 1,
                cfg.runs,
                if under_canary {
                    "in a canary window"
                } else {
                    "bare"
                }
            ));
            let k = if under_canary {
                let k = kpi::measure(Duration::ZERO, Some(&w))?;
                events.push(k.runq_samples as f64);
                k.workload.ok_or_else(|| {
                    Error::Internal(anyhow::anyhow!("the canary window ran no workload"))
                })?
            } else {
                w.run()?
            };
            if under_canary {
                canary.push(k.value);
            } else {
                bare.push(k.value);
            }
            meta.get_or_insert(k);
        }
    }
    let m = meta.expect("at least two runs");
    let (b, c) = (stats::median(&bare), stats::median(&canary));
    let ratio = match (b, c) {
        (Some(b), Some(c)) if b != 0.0 => Some(c / b),
        _ => None,
    };
    let higher_better = m.better == "higher";
    let overhead_pct = ratio.map(|r| {
        if higher_better {
            (1.0 / r - 1.0) * 100.0
        } else {
            (r - 1.0) * 100.0
        }
    });
    Ok(Report {
        workload: m.what,
        metric: m.metric,
        unit: m.unit,
        better: m.better,
        p_value: stats::mann_whitney(&bare, &canary).map(|t| t.p_value),
        bare: Side {
            summary: stats::summarize(&bare),
            values: bare,
        },
        canary: Side {
            summary: stats::summarize(&canary),
            values: canary,
        },
        ratio,
        overhead_pct,
        probe_events_median: stats::median(&events),
    })
}

impl Report {
    pub fn render(&self) -> String {
        let side = |name: &str, s: &Side| match &s.summary {
            Some(x) => format!(
                "  {name:<7} median {:>10.1} {}  range {:.1}..{:.1}  IQR/median {:.1}%  (n={})\n",
                x.median,
                self.unit,
                x.min,
                x.max,
                if x.median != 0.0 {
                    x.iqr / x.median * 100.0
                } else {
                    0.0
                },
                x.n
            ),
            None => format!("  {name:<7} no values\n"),
        };
        let mut out = format!(
            "canary overhead on {} ({}, {} is better)\n",
            self.workload, self.metric, self.better
        );
        out += &side("bare", &self.bare);
        out += &side("canary", &self.canary);
        out += &format!(
            "  canary/bare ratio {}  overhead {}  Mann-Whitney p {}  runqlat events per window {}\n",
            fmt(self.ratio, 3, ""),
            fmt(self.overhead_pct, 1, "%"),
            fmt(self.p_value, 3, ""),
            fmt(self.probe_events_median, 0, ""),
        );
        out
    }
}

fn fmt(v: Option<f64>, digits: usize, unit: &str) -> String {
    v.map(|x| format!("{x:.digits$}{unit}"))
        .unwrap_or_else(|| "n/a".into())
}
