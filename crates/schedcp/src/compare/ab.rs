//! An A/B comparison as every part of schedcp reports it: which runs ran in
//! which order, every run's value, and the one judgement ([`stats`]) — the
//! relative change with its confidence interval, the p-value and a verdict.
//!
//! Runs are interleaved ABBA (A B B A A B B A …): a linear drift of the
//! machine (thermal, a neighbour's load, a cache warming up) then hits both
//! sides alike, which plain alternation (A B A B) does not guarantee, and
//! running one side after the other confounds the drift with the effect.

use schedcp_proto::workload::Better;
use serde::{Deserialize, Serialize};

use super::stats::{self, Comparison, Criteria, Interval, Summary, Verdict};

/// Which side of an A/B a run belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Baseline,
    Candidate,
}

/// The ABBA run order for `runs` runs a side: A B B A, repeated; an odd
/// count ends with a half block.
pub fn abba(runs: usize) -> Vec<Side> {
    use Side::{Baseline as A, Candidate as B};
    (0..runs)
        .flat_map(|i| if i % 2 == 0 { [A, B] } else { [B, A] })
        .collect()
}

/// What is measured and which way is better.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Metric {
    pub name: String,
    pub unit: String,
    #[schemars(with = "String")]
    pub direction: Better,
}

/// One side's evidence: every completed run's value, in run order.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Arm {
    /// What ran: a scheduler, a configuration, a stored run.
    pub label: String,
    pub values: Vec<f64>,
    pub summary: Option<Summary>,
    /// Runs that produced no value, and why.
    pub failures: Vec<String>,
}

impl Arm {
    pub fn new(label: impl Into<String>, values: Vec<f64>, failures: Vec<String>) -> Arm {
        Arm {
            label: label.into(),
            summary: stats::summarize(&values),
            values,
            failures,
        }
    }
}

/// Where the runs ran and how far their timings can be trusted.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Setting {
    /// `host`, `lab VM`, `lab node`, …
    pub place: String,
    /// `interleaved ABBA in one boot`, `interleaved ABBA`, `against stored history`.
    pub design: String,
    /// The lab's accelerator and clock (`tcg, clock icount:4`), if a VM ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// True when timings come from an emulated CPU (TCG): they rank
    /// configurations within this run only and are not what real hardware
    /// would see.
    pub emulated: bool,
}

impl Setting {
    pub fn host(design: &str) -> Setting {
        Setting {
            place: "host".into(),
            design: design.into(),
            vm: None,
            emulated: false,
        }
    }

    /// A lab VM run with accelerator `accel` (`kvm`/`tcg`) and `clock`.
    pub fn lab(place: &str, design: &str, accel: &str, clock: &str) -> Setting {
        Setting {
            place: place.into(),
            design: design.into(),
            vm: Some(format!("{accel}, clock {clock}")),
            emulated: accel != "kvm",
        }
    }

    pub fn describe(&self) -> String {
        let mut s = format!("{}, {}", self.place, self.design);
        if let Some(vm) = &self.vm {
            s.push_str(&format!(" ({vm})"));
        }
        if self.emulated {
            s.push_str("; emulated timing (TCG): valid within this comparison only");
        }
        s
    }
}

/// A judged A/B: the shape `lab compare`, verify's performance stage,
/// `observe benchmark`, the deploy canary and the tuner all report.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct AbReport {
    /// What ran on both sides (a workload, a profile).
    pub subject: String,
    pub metric: Metric,
    pub baseline: Arm,
    pub candidate: Arm,
    /// The run order (empty when the baseline is stored history).
    pub order: Vec<Side>,
    pub setting: Setting,
    /// Candidate against baseline: change, interval, p-value, verdict.
    pub comparison: Comparison,
    /// The change as an improvement, positive when the candidate is better
    /// in the metric's direction (percent of the baseline median).
    pub improvement_pct: Option<f64>,
    /// The confidence interval of `improvement_pct`.
    pub improvement_ci_pct: Option<Interval>,
}

impl AbReport {
    pub fn new(
        subject: impl Into<String>,
        metric: Metric,
        baseline: Arm,
        candidate: Arm,
        order: Vec<Side>,
        setting: Setting,
        criteria: Criteria,
    ) -> AbReport {
        let comparison = stats::compare_with(
            &baseline.values,
            &candidate.values,
            metric.direction,
            criteria,
        );
        let flip = metric.direction == Better::Lower;
        let improvement_pct = comparison.change_pct.map(|c| if flip { -c } else { c });
        let improvement_ci_pct = comparison.ci_pct.map(|i| {
            if flip {
                Interval {
                    low: -i.high,
                    high: -i.low,
                    level: i.level,
                }
            } else {
                i
            }
        });
        AbReport {
            subject: subject.into(),
            metric,
            baseline,
            candidate,
            order,
            setting,
            comparison,
            improvement_pct,
            improvement_ci_pct,
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.comparison.verdict
    }

    /// Significantly better, by at least the minimum effect.
    pub fn improved(&self) -> bool {
        self.verdict() == Verdict::Improved
    }

    /// The lower end of the improvement's interval: how much better the
    /// candidate is at least, at the interval's level.
    pub fn guaranteed_improvement_pct(&self) -> Option<f64> {
        self.improvement_ci_pct.map(|i| i.low)
    }

    /// One line: label, verdict, improvement with interval and p.
    pub fn headline(&self) -> String {
        // An improvement is only ever shown with its interval; without one
        // the median change is shown as just that.
        let effect = match (
            self.improvement_pct,
            self.improvement_ci_pct,
            self.comparison.change_pct,
        ) {
            (Some(p), Some(ci), _) => format!(
                "improvement {p:+.1}% [{:+.1}%, {:+.1}%] ({:.0}% CI)",
                ci.low,
                ci.high,
                ci.level * 100.0
            ),
            (_, None, Some(c)) => format!("median change {c:+.1}%, no interval (too few runs)"),
            _ => "no change measurable".into(),
        };
        let p = self
            .comparison
            .p_value
            .map_or_else(|| "p = n/a".into(), |p| format!("p = {p:.3}"));
        format!(
            "{} vs {}: {} — {effect}, {p}",
            self.candidate.label,
            self.baseline.label,
            self.verdict().as_str()
        )
    }

    /// The report for people: both sides, the judgement and its reason.
    pub fn render(&self) -> String {
        let m = &self.metric;
        let mut out = format!(
            "{} — {} ({}, {} is better)\n  {}\n",
            self.subject,
            m.name,
            m.unit,
            match m.direction {
                Better::Lower => "lower",
                Better::Higher => "higher",
            },
            self.setting.describe()
        );
        for arm in [&self.baseline, &self.candidate] {
            let line = match &arm.summary {
                Some(s) => format!(
                    "median {:.2} (IQR {:.2}–{:.2}, min {:.2}, max {:.2}, n={})",
                    s.median, s.q1, s.q3, s.min, s.max, s.n
                ),
                None => "no completed runs".into(),
            };
            out.push_str(&format!("  {:<12} {line}\n", arm.label));
            for f in &arm.failures {
                out.push_str(&format!("  {:<12} ! {f}\n", ""));
            }
        }
        out.push_str(&format!("  → {}\n", self.headline()));
        out.push_str(&format!("    {}\n", self.comparison.reason));
        out
    }
}

/// The candidate to keep among `reports`: only a significant improvement
/// qualifies, and among those the one whose interval's lower end (the
/// improvement it has at least) is largest. `None`: keep the baseline.
pub fn best<'a, I>(reports: I) -> Option<&'a AbReport>
where
    I: IntoIterator<Item = &'a AbReport>,
{
    reports.into_iter().filter(|r| r.improved()).max_by(|a, b| {
        let key = |r: &AbReport| r.guaranteed_improvement_pct().unwrap_or(f64::NEG_INFINITY);
        key(a).total_cmp(&key(b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(direction: Better) -> Metric {
        Metric {
            name: "makespan".into(),
            unit: "ms".into(),
            direction,
        }
    }

    fn report(base: &[f64], cand: &[f64], direction: Better) -> AbReport {
        AbReport::new(
            "batch",
            metric(direction),
            Arm::new("default", base.to_vec(), vec![]),
            Arm::new("vtime", cand.to_vec(), vec![]),
            abba(base.len()),
            Setting::lab("lab VM", "interleaved ABBA in one boot", "tcg", "native"),
            Criteria::default(),
        )
    }

    #[test]
    fn abba_balances_positions() {
        use Side::{Baseline as A, Candidate as B};
        assert_eq!(abba(4), [A, B, B, A, A, B, B, A]);
        assert_eq!(abba(3), [A, B, B, A, A, B]);
        // Mean position of each side is equal for an even count: a linear
        // drift adds the same to both.
        let o = abba(8);
        let pos = |s| -> usize {
            o.iter()
                .enumerate()
                .filter(|(_, x)| **x == s)
                .map(|(i, _)| i)
                .sum()
        };
        assert_eq!(pos(A), pos(B));
    }

    #[test]
    fn a_clear_improvement_has_a_positive_interval() {
        let r = report(
            &[100.0, 102.0, 98.0, 101.0, 99.0, 103.0, 97.0, 100.5],
            &[80.0, 82.0, 79.0, 81.0, 78.0, 83.0, 80.5, 79.5],
            Better::Lower,
        );
        assert!(r.improved(), "{}", r.render());
        let ci = r.improvement_ci_pct.unwrap();
        assert!(ci.low > 0.0 && ci.high > ci.low, "{ci:?}");
        assert!((r.improvement_pct.unwrap() - 20.0).abs() < 1.0);
        assert!(r.headline().contains("improved"), "{}", r.headline());
        assert!(r.render().contains("emulated timing"), "{}", r.render());
    }

    #[test]
    fn higher_is_better_keeps_the_sign() {
        let r = report(
            &[10.0, 11.0, 10.5, 9.5, 10.2, 10.8],
            &[15.0, 16.0, 15.5, 14.5, 15.2, 15.8],
            Better::Higher,
        );
        assert!(r.improved());
        assert!(r.improvement_pct.unwrap() > 40.0);
        assert!(r.improvement_ci_pct.unwrap().low > 0.0);
    }

    #[test]
    fn overlapping_samples_win_nothing() {
        let noisy = report(
            &[447.0, 724.0, 512.0, 600.0, 480.0, 650.0],
            &[430.0, 700.0, 520.0, 610.0, 470.0, 690.0],
            Better::Lower,
        );
        assert_eq!(noisy.verdict(), Verdict::NoSignificantChange);
        let ci = noisy.improvement_ci_pct.unwrap();
        assert!(ci.low < 0.0 && ci.high > 0.0, "{ci:?}");
        let clear = report(
            &[100.0, 102.0, 98.0, 101.0, 99.0, 103.0],
            &[80.0, 82.0, 79.0, 81.0, 78.0, 83.0],
            Better::Lower,
        );
        let small = report(
            &[100.0, 102.0, 98.0, 101.0, 99.0, 103.0],
            &[90.0, 92.0, 89.0, 91.0, 88.0, 93.0],
            Better::Lower,
        );
        // Only significant improvements compete; the larger sure gain wins.
        assert_eq!(best([&noisy]), None);
        assert_eq!(best([&noisy, &small, &clear]).unwrap(), &clear);
    }

    #[test]
    fn too_few_runs_is_said_plainly() {
        let r = report(&[100.0, 90.0], &[50.0, 40.0], Better::Lower);
        assert_eq!(r.verdict(), Verdict::InsufficientData);
        assert!(best([&r]).is_none());
    }
}
