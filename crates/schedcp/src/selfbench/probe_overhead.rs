//! What schedcp's runqlat probe costs per event, against libbpf-tools'
//! runqlat, on the same workload in the same run.
//!
//! The kernel's BPF statistics (BPF_ENABLE_STATS) time every run of every
//! program; a probe's cost per event is the sum of its programs' run time
//! over the sum of their runs. Each run attaches one side, runs hackbench to
//! completion, reads that side's programs, and detaches; then the other
//! side. The order alternates between runs so that drift on a shared
//! machine falls on both sides alike. The run times include the statistics'
//! own clock reads, which both sides pay equally.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::hackbench::Hackbench;
use super::reference;
use crate::error::Error;
use crate::observe::probes::bpf_stats::{Cost, StatsEnabled};
use crate::observe::probes::{self, Filter, ProbeKind};

/// The absolute target for our probe, ns per event.
pub const TARGET_NS: f64 = 150.0;
pub const MAX_RUNS: u32 = 50;

#[derive(Debug, Clone)]
pub struct Config {
    pub runs: u32,
    pub hackbench_groups: u32,
    pub hackbench_loops: u32,
    /// Also measure the other probes of the library (no reference for them).
    pub all_probes: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            runs: 5,
            hackbench_groups: 4,
            hackbench_loops: 2000,
            all_probes: false,
        }
    }
}

/// One side's measurement in one run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub run: u32,
    /// Measured first or second within its run.
    pub position: u32,
    pub workload_s: f64,
    pub cost: Cost,
}

/// One side over all runs.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub name: String,
    pub median_ns_per_event: f64,
    pub min_ns_per_event: f64,
    pub max_ns_per_event: f64,
    /// (max - min) / median, in percent.
    pub spread_pct: f64,
    pub samples: Vec<Sample>,
}

impl Side {
    fn new(name: &str, samples: Vec<Sample>) -> Result<Side, Error> {
        let mut per: Vec<f64> = samples
            .iter()
            .map(|s| {
                s.cost.ns_per_event.ok_or_else(|| {
                    Error::Internal(anyhow::anyhow!(
                        "{name} ran no programs in run {}: are BPF statistics working?",
                        s.run
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        per.sort_by(f64::total_cmp);
        let median = median(&per);
        let (min, max) = (per[0], per[per.len() - 1]);
        Ok(Side {
            name: name.into(),
            median_ns_per_event: median,
            min_ns_per_event: min,
            max_ns_per_event: max,
            spread_pct: 100.0 * (max - min) / median,
            samples,
        })
    }
}

/// Median of the values (NaN for none).
fn median(values: &[f64]) -> f64 {
    crate::compare::stats::median(values).unwrap_or(f64::NAN)
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: String,
    pub runs: u32,
    pub ours: Side,
    pub reference: Side,
    /// ours / reference, medians.
    pub ratio: f64,
    pub target_ns: f64,
    /// Our median is under the absolute target.
    pub under_target: bool,
    /// Our median is no more than the reference's.
    pub no_worse_than_reference: bool,
    /// The library's other probes on the same workload (with `all_probes`).
    pub other_probes: Vec<Side>,
}

/// Runs the benchmark; `progress` hears what it is doing.
pub fn run(cfg: &Config, progress: &mut dyn FnMut(&str)) -> Result<Report, Error> {
    if !(1..=MAX_RUNS).contains(&cfg.runs) {
        return Err(Error::Input(format!(
            "--runs must be between 1 and {MAX_RUNS}, got {}",
            cfg.runs
        )));
    }
    let hackbench = Hackbench::new(cfg.hackbench_groups, cfg.hackbench_loops)?;
    let runqlat = reference::locate()?;
    let _stats = StatsEnabled::new().map_err(|e| {
        Error::Setup(format!(
            "turning on the kernel's BPF statistics failed ({e}): the benchmark needs root \
             (CAP_SYS_ADMIN and CAP_BPF)"
        ))
    })?;

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut others: Vec<(ProbeKind, Vec<Sample>)> = Vec::new();
    for run in 1..=cfg.runs {
        let ours_first = run % 2 == 1;
        for position in 1..=2 {
            if (position == 1) == ours_first {
                progress(&format!("run {run}/{}: schedcp runqlat", cfg.runs));
                let (workload, cost) = measure_ours(ProbeKind::Runqlat, &hackbench)?;
                ours.push(sample(run, position, workload, cost));
            } else {
                progress(&format!("run {run}/{}: libbpf-tools runqlat", cfg.runs));
                let rq = reference::Runqlat::start(&runqlat)?;
                let workload = hackbench.run()?;
                let cost = rq.cost();
                rq.stop()?;
                theirs.push(sample(run, position, workload, cost));
            }
        }
        if cfg.all_probes {
            for (i, probe) in [ProbeKind::Cputime, ProbeKind::Schedevents]
                .into_iter()
                .enumerate()
            {
                progress(&format!("run {run}/{}: schedcp {probe}", cfg.runs));
                let (workload, cost) = measure_ours(probe, &hackbench)?;
                if others.len() <= i {
                    others.push((probe, Vec::new()));
                }
                others[i].1.push(sample(run, 3 + i as u32, workload, cost));
            }
        }
    }

    let ours = Side::new("schedcp runqlat", ours)?;
    let reference = Side::new("libbpf-tools runqlat", theirs)?;
    let ratio = ours.median_ns_per_event / reference.median_ns_per_event;
    Ok(Report {
        workload: hackbench.command_line(),
        runs: cfg.runs,
        under_target: ours.median_ns_per_event < TARGET_NS,
        no_worse_than_reference: ours.median_ns_per_event <= reference.median_ns_per_event,
        ratio,
        target_ns: TARGET_NS,
        ours,
        reference,
        other_probes: others
            .into_iter()
            .map(|(p, s)| Side::new(&format!("schedcp {p}"), s))
            .collect::<Result<_, _>>()?,
    })
}

fn sample(run: u32, position: u32, workload: Duration, cost: Cost) -> Sample {
    Sample {
        run,
        position,
        workload_s: workload.as_secs_f64(),
        cost,
    }
}

/// One of our probes, unfiltered, attached for one hackbench run.
fn measure_ours(probe: ProbeKind, hackbench: &Hackbench) -> Result<(Duration, Cost), Error> {
    let (_, measured) = probes::observe(probe, &Filter::default(), 1, |live| {
        hackbench.run().map(|t| (t, live.cost()))
    })?;
    measured
}

impl Report {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "probe overhead: {} runs of `{}`, BPF run time per event (median, min..max, spread)",
            self.runs, self.workload
        );
        for side in std::iter::once(&self.ours)
            .chain(std::iter::once(&self.reference))
            .chain(&self.other_probes)
        {
            let _ = writeln!(
                s,
                "  {:<22} {:>7.1} ns/event   ({:.1}..{:.1}, {:.0}%)",
                side.name,
                side.median_ns_per_event,
                side.min_ns_per_event,
                side.max_ns_per_event,
                side.spread_pct
            );
        }
        let _ = writeln!(
            s,
            "  ratio schedcp/libbpf-tools: {:.2}   under {:.0} ns: {}   no worse than runqlat: {}",
            self.ratio,
            self.target_ns,
            yes_no(self.under_target),
            yes_no(self.no_worse_than_reference)
        );
        let _ = writeln!(
            s,
            "per program (median ns/run over runs, events in the last run):"
        );
        for side in [&self.ours, &self.reference] {
            for (name, ns, runs) in per_program(side) {
                let _ = writeln!(
                    s,
                    "  {:<22} {:<16} {:>7.1} ns/run {:>10} runs",
                    side.name, name, ns, runs
                );
            }
        }
        s
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "NO"
    }
}

/// (program, median ns/run, runs in the last sample) for each of a side's
/// programs.
fn per_program(side: &Side) -> Vec<(String, f64, u64)> {
    let Some(last) = side.samples.last() else {
        return Vec::new();
    };
    last.cost
        .programs
        .iter()
        .map(|p| {
            let mut per: Vec<f64> = side
                .samples
                .iter()
                .filter_map(|s| s.cost.programs.iter().find(|q| q.name == p.name))
                .filter_map(|q| q.ns_per_run)
                .collect();
            per.sort_by(f64::total_cmp);
            let med = if per.is_empty() {
                f64::NAN
            } else {
                median(&per)
            };
            (p.name.clone(), med, p.run_cnt)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::probes::bpf_stats::ProgStats;

    fn sample_with(run: u32, cnt: u64, ns: u64) -> Sample {
        Sample {
            run,
            position: 1,
            workload_s: 1.0,
            cost: Cost::of(vec![ProgStats {
                id: 1,
                name: "p".into(),
                run_cnt: cnt,
                run_time_ns: ns,
                ns_per_run: Some(ns as f64 / cnt as f64),
            }]),
        }
    }

    #[test]
    fn side_reports_median_and_spread() {
        let side = Side::new(
            "x",
            vec![
                sample_with(1, 100, 10_000),
                sample_with(2, 100, 12_000),
                sample_with(3, 100, 8_000),
            ],
        )
        .unwrap();
        assert_eq!(side.median_ns_per_event, 100.0);
        assert_eq!(side.min_ns_per_event, 80.0);
        assert_eq!(side.max_ns_per_event, 120.0);
        assert!((side.spread_pct - 40.0).abs() < 1e-9);
        assert_eq!(per_program(&side), vec![("p".to_string(), 100.0, 100)]);
    }

    #[test]
    fn a_side_without_runs_is_an_error() {
        assert!(Side::new("x", vec![sample_with(1, 0, 0)]).is_err());
    }

    #[test]
    fn even_median() {
        assert_eq!(median(&[1.0, 2.0, 3.0, 4.0]), 2.5);
    }
}
