//! A tune's report for people: the final table (every candidate's pooled
//! interval, p-value and fate), the decision, what was applied and how to
//! undo it, and the charts written beside it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::chart::{self, ArmRuns, ProgressPoint, TrialRuns};
use super::{TuneReport, Venue};
use crate::compare::Verdict;
use crate::deploy::DeployState;
use crate::error::Error;

impl TuneReport {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\nworkload: {}", self.workload);
        let _ = writeln!(s, "signature: {}", self.signature.describe());
        if self.fired.is_empty() {
            let _ = writeln!(s, "rules: none fired");
        }
        for f in &self.fired {
            let _ = writeln!(s, "rule {}: {} — {}", f.rule, f.title, f.reason);
        }
        for u in &self.unplaced {
            let _ = writeln!(s, "  not trialled: {u}");
        }
        let _ = writeln!(
            s,
            "\n{:<44} {:<5} {:>5}  {:<30} {:>7}  fate",
            "candidate", "where", "runs", "improvement [95% CI]", "p"
        );
        for o in &self.outcomes {
            let label = o.candidate.change.describe();
            let venue = match o.candidate.venue {
                Venue::Host => "host",
                Venue::Lab => "lab*",
            };
            let (runs, imp, p) = match &o.ab {
                Some(ab) => (
                    ab.candidate.values.len().to_string(),
                    match (ab.improvement_pct, ab.improvement_ci_pct) {
                        (Some(i), Some(ci)) => {
                            format!("{i:+.1}% [{:+.1}, {:+.1}]", ci.low, ci.high)
                        }
                        (Some(i), None) => format!("{i:+.1}% (no interval)"),
                        _ => "-".into(),
                    },
                    ab.comparison
                        .p_value
                        .map_or("-".into(), |p| format!("{p:.3}")),
                ),
                None => ("0".into(), "-".into(), "-".into()),
            };
            let _ = writeln!(
                s,
                "{:<44} {:<5} {:>5}  {:<30} {:>7}  {}",
                truncate(&label, 44),
                venue,
                runs,
                imp,
                p,
                o.fate
            );
        }
        if self.outcomes.is_empty() {
            let _ = writeln!(s, "(no candidates: nothing to try)");
        }
        if self
            .outcomes
            .iter()
            .any(|o| o.candidate.venue == Venue::Lab)
        {
            let _ = writeln!(
                s,
                "* lab VM: emulated timing (TCG), on {} standing in for this workload; valid within its own comparison only, never applied to this host",
                self.lab_stand_in.as_deref().unwrap_or("a built-in workload")
            );
        }
        let _ = writeln!(
            s,
            "\n{} trial(s) in {:.0} s{}; minimum effect {}% (the interval's lower end must clear it)",
            self.trials_used,
            self.seconds,
            self.stopped
                .as_ref()
                .map(|w| format!(", stopped early: {w}"))
                .unwrap_or_default(),
            self.min_effect_pct
        );
        let _ = writeln!(s, "decision: {}", self.decision);
        match &self.applied {
            Some(d) => {
                let what = match d.state {
                    DeployState::Active => format!(
                        "ACTIVE after its canary (deployment #{}, {:.1} s from request)",
                        d.id,
                        d.timings.request_to_active_ms.unwrap_or(f64::NAN) / 1e3
                    ),
                    DeployState::RolledBack => format!(
                        "ROLLED BACK by the canary (deployment #{}): {}",
                        d.id,
                        d.reason.as_deref().unwrap_or("?")
                    ),
                    other => format!("ended {} (deployment #{})", other.as_str(), d.id),
                };
                let _ = writeln!(s, "applied: {what}");
            }
            None if self.winner.is_some() && self.winner_venue == Some(Venue::Host) => {
                let _ = writeln!(s, "applied: no (advice only)");
            }
            None => {}
        }
        if let Some(r) = &self.rollback {
            let _ = writeln!(s, "roll back: {r}");
        }
        for l in &self.library {
            let _ = writeln!(s, "library: {l}");
        }
        for c in &self.charts {
            let _ = writeln!(s, "chart: {c}");
        }
        let _ = writeln!(
            s,
            "session: {} (schedcp tune show {})",
            self.session, self.session
        );
        s
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// `improved +21.8% [+16.2, +28.2] p=0.029`: a verdict that fits a chart.
fn short(ab: &crate::compare::AbReport) -> String {
    match (
        ab.improvement_pct,
        ab.improvement_ci_pct,
        ab.comparison.p_value,
    ) {
        (Some(i), Some(ci), Some(p)) => format!(
            "{} {i:+.1}% [{:+.1}, {:+.1}] p={p:.3}",
            ab.verdict().as_str(),
            ci.low,
            ci.high
        ),
        _ => ab.verdict().as_str().to_string(),
    }
}

/// Write the charts of `r` into `dir`: each venue's runs (the host's and
/// the lab's measure different things, so they never share an axis) and
/// the search's progress. Returns their paths.
pub fn write_charts(dir: &Path, r: &TuneReport) -> Result<Vec<PathBuf>, Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Setup(format!("creating {}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for (venue, file) in [(Venue::Host, "runs.svg"), (Venue::Lab, "runs-lab.svg")] {
        let of: Vec<_> = r
            .outcomes
            .iter()
            .filter(|o| o.candidate.venue == venue)
            .filter_map(|o| Some((o, o.ab.as_ref()?)))
            .collect();
        let Some((_, first)) = of.first() else {
            continue;
        };
        let m = first.metric.clone();
        let trials: Vec<TrialRuns> = of
            .iter()
            .map(|(o, ab)| TrialRuns {
                candidate: ArmRuns {
                    label: o.candidate.change.describe(),
                    values: ab.candidate.values.clone(),
                },
                baseline: ArmRuns {
                    label: "current configuration".into(),
                    values: ab.baseline.values.clone(),
                },
                verdict: short(ab),
                outcome: match ab.verdict() {
                    Verdict::Improved => chart::Outcome::Improved,
                    Verdict::Regressed => chart::Outcome::Regressed,
                    _ => chart::Outcome::NoChange,
                },
                place: venue.as_str().into(),
            })
            .collect();
        let title = match venue {
            Venue::Host => format!(
                "schedcp tune — {} on this host: each candidate against the current configuration",
                r.workload
            ),
            Venue::Lab => format!(
                "schedcp tune — lab VM on {} (standing in for {})",
                r.lab_stand_in.as_deref().unwrap_or("a built-in workload"),
                r.workload
            ),
        };
        let svg = chart::distributions(
            &title,
            &m.name,
            &m.unit,
            m.direction == schedcp_proto::workload::Better::Lower,
            &trials,
        )
        .map_err(|e| Error::Internal(anyhow::anyhow!(e)))?;
        let p = dir.join(file);
        crate::host::fs::atomic_write(&p, svg.as_bytes(), Some(0o644))
            .map_err(|e| Error::Setup(format!("writing {}: {e}", p.display())))?;
        out.push(p);
    }
    let points: Vec<ProgressPoint> = r
        .trials
        .iter()
        .filter_map(|t| {
            let ci = t.ab.improvement_ci_pct?;
            Some(ProgressPoint {
                trial: t.n,
                label: format!("{} ({}, {})", t.candidate, t.stage, t.venue.as_str()),
                improvement_pct: t.ab.improvement_pct?,
                ci_low: ci.low,
                ci_high: ci.high,
            })
        })
        .collect();
    let svg = chart::progress(
        &format!("schedcp tune — {}: the search, trial by trial", r.workload),
        &points,
        r.min_effect_pct,
    )
    .map_err(|e| Error::Internal(anyhow::anyhow!(e)))?;
    let p = dir.join("progress.svg");
    crate::host::fs::atomic_write(&p, svg.as_bytes(), Some(0o644))
        .map_err(|e| Error::Setup(format!("writing {}: {e}", p.display())))?;
    out.push(p);
    Ok(out)
}
