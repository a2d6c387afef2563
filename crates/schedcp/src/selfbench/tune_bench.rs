//! `schedcp bench tune`: the tuner judged on scenarios where a better
//! configuration is known to exist, and where none does. For each: did
//! tune find it, its improvement with interval, trials and minutes spent,
//! and that no regression was ever applied. Then what the numeric search
//! costs against a grid over the same space.

use serde::Serialize;

use crate::config::Config;
use crate::deploy::DeployState;
use crate::error::Error;
use crate::tune::engine::{self, Applier, TuneRequest};
use crate::tune::{apply, bayes, demo, Event, Venue};

pub struct Scenario {
    pub name: &'static str,
    /// Where its candidates run.
    pub place: &'static str,
    /// Which change families count as the better configuration (empty:
    /// none exists, and keeping the current configuration is right).
    pub expect: &'static [&'static str],
    pub why: &'static str,
    /// The bundled build-like workload with a neighbour, without one, or a
    /// built-in workload spec.
    pub workload: Workload,
}

#[derive(Clone, Copy)]
pub enum Workload {
    ContendedBuild,
    IdleBuild,
    Spec(&'static str),
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "contended-build",
        place: "host",
        expect: &["knobs:workload.nice", "knobs:workload.cpu_weight"],
        why: "the build shares 2 CPUs with one busy loop per CPU at equal weight; giving the build a larger weight (nice -5: 3121 against 1024) buys it CPU the neighbour had",
        workload: Workload::ContendedBuild,
    },
    Scenario {
        name: "idle-build",
        place: "host",
        expect: &[],
        why: "alone on the machine the build's own jobs share the CPUs; reweighting or reprioritising all of them together changes nobody's share",
        workload: Workload::IdleBuild,
    },
    Scenario {
        name: "pingpong-schedulers",
        place: "lab",
        expect: &["scheduler:vtime", "scheduler:latency"],
        why: "a wakeup-first scheduler beats the default on pingpong in this lab (vtime by +18% [+8.9, +79.2], p = 0.009, in `lab demo`'s comparison); either vtime or latency counts",
        workload: Workload::Spec("pingpong"),
    },
];

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub scenario: String,
    pub place: String,
    pub expected: Vec<String>,
    pub why: String,
    /// The winner's change, if any.
    pub winner: Option<String>,
    pub winner_where: Option<String>,
    /// Found the better configuration (or, where none exists, kept the current one).
    pub found: bool,
    /// The winner's improvement and interval, or the best candidate's.
    pub improvement: String,
    pub trials: usize,
    pub minutes: f64,
    /// The applied change's canary verdict, if one was applied.
    pub applied: Option<String>,
    /// A change was applied whose pooled verdict was not a proven improvement.
    pub regression_applied: bool,
    pub decision: String,
    pub session: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchCost {
    pub objective: String,
    pub trials: usize,
    pub bo_regret: f64,
    pub grid_regret: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenarios: Vec<ScenarioResult>,
    /// Mean simple regret of the Bayesian search and a coarse-to-fine grid
    /// at equal trials on noisy synthetic objectives (30 seeds each).
    pub search: Vec<SearchCost>,
    /// Lab timings are emulated (TCG).
    pub note: String,
}

impl Report {
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::from(
            "scenario              where  expected                          found  winner                         improvement [95% CI], p          trials  min   applied               regression applied\n",
        );
        for r in &self.scenarios {
            let _ = writeln!(
                s,
                "{:<21} {:<6} {:<33} {:<6} {:<30} {:<34} {:>6} {:>5.1} {:<21} {}",
                r.scenario,
                r.place,
                if r.expected.is_empty() {
                    "none (keep current)".to_string()
                } else {
                    r.expected.join(" | ")
                },
                if r.found { "yes" } else { "NO" },
                r.winner.as_deref().unwrap_or("(keep current)"),
                r.improvement,
                r.trials,
                r.minutes,
                r.applied.as_deref().unwrap_or("-"),
                if r.regression_applied { "YES" } else { "no" }
            );
        }
        let _ = writeln!(
            s,
            "\nsearch cost at equal trials (mean simple regret, lower is better; 30 noisy seeds):"
        );
        for c in &self.search {
            let _ = writeln!(
                s,
                "  {:<8} {:>2} trials: Bayesian {:.3}  grid {:.3}  ({:.1}x)",
                c.objective,
                c.trials,
                c.bo_regret,
                c.grid_regret,
                c.grid_regret / c.bo_regret.max(1e-9)
            );
        }
        let _ = writeln!(s, "{}", self.note);
        s
    }
}

pub fn run(
    cfg: &Config,
    only: &[String],
    trials: usize,
    on: &(dyn Fn(&str) + Sync),
) -> Result<Report, Error> {
    if let Some(bad) = only
        .iter()
        .find(|n| !SCENARIOS.iter().any(|s| s.name == n.as_str()))
    {
        return Err(Error::Input(format!(
            "unknown scenario '{bad}'; scenarios: {}",
            SCENARIOS
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut out = Vec::new();
    for sc in SCENARIOS
        .iter()
        .filter(|s| only.is_empty() || only.iter().any(|o| o == s.name))
    {
        on(&format!("scenario {}: {}", sc.name, sc.why));
        out.push(scenario(cfg, sc, trials, on)?);
    }
    let mut search = Vec::new();
    for (objective, n) in [
        ("peak1d", 6),
        ("peak1d", 8),
        ("ridge2d", 8),
        ("ridge2d", 12),
    ] {
        let (bo, grid) = bayes::regret_benchmark(objective, n, 30)
            .map_err(|e| Error::Internal(anyhow::anyhow!(e)))?;
        search.push(SearchCost {
            objective: objective.into(),
            trials: n,
            bo_regret: bo,
            grid_regret: grid,
        });
    }
    Ok(Report {
        scenarios: out,
        search,
        note: "lab (TCG) timings are emulated: valid within their own comparison only".into(),
    })
}

fn scenario(
    cfg: &Config,
    sc: &Scenario,
    trials: usize,
    on: &(dyn Fn(&str) + Sync),
) -> Result<ScenarioResult, Error> {
    let (workload, neighbour) = match sc.workload {
        Workload::ContendedBuild => (
            demo::profile(cfg)?,
            Some(demo::Neighbour::start(crate::observe::sample::nr_cpus())?),
        ),
        Workload::IdleBuild => (demo::profile(cfg)?, None),
        Workload::Spec(s) => (s.to_string(), None),
    };
    let mut req = TuneRequest::new(&workload);
    req.budget.trials = trials;
    req.apply = sc.place == "host";
    let applier = if req.apply {
        Some(apply::InProcess::start(cfg)?)
    } else {
        None
    };
    let t0 = std::time::Instant::now();
    let r = engine::run(
        cfg,
        &req,
        applier.as_ref().map(|a| a as &dyn Applier),
        &|e| match e {
            Event::TrialDone(t) => on(&format!(
                "  trial {} ({}): {}",
                t.n,
                t.venue.as_str(),
                t.ab.headline()
            )),
            Event::Decided(d) => on(&format!("  {d}")),
            _ => {}
        },
    )?;
    let mut applied = None;
    let mut regression_applied = false;
    if let Some(d) = &r.applied {
        applied = Some(d.state.as_str().to_string());
        let winner_proven = r
            .outcomes
            .iter()
            .find(|o| Some(&o.candidate.change) == r.winner.as_ref())
            .is_some_and(|o| {
                o.ab.as_ref()
                    .is_some_and(|ab| engine::proven(ab, req.criteria.min_effect_pct))
            });
        regression_applied = !winner_proven;
        if d.state == DeployState::Active {
            if let Some(a) = &applier {
                a.rollback("end of the bench scenario")?;
            }
        }
    }
    drop(neighbour);
    let winner_family = r.winner.as_ref().map(|c| c.family());
    let found = match (&winner_family, sc.expect.is_empty()) {
        (None, true) => true,
        (Some(f), false) => sc.expect.contains(&f.as_str()),
        // A lab winner where none should exist still counts against.
        _ => false,
    };
    let best = r
        .outcomes
        .iter()
        .filter(|o| r.winner.is_none() || Some(&o.candidate.change) == r.winner.as_ref())
        .filter_map(|o| o.ab.as_ref())
        .max_by(|a, b| {
            a.improvement_pct
                .unwrap_or(f64::NEG_INFINITY)
                .total_cmp(&b.improvement_pct.unwrap_or(f64::NEG_INFINITY))
        });
    let improvement = best
        .map(|ab| {
            match (
                ab.improvement_pct,
                ab.improvement_ci_pct,
                ab.comparison.p_value,
            ) {
                (Some(i), Some(ci), Some(p)) => {
                    format!("{i:+.1}% [{:+.1}, {:+.1}], p={p:.3}", ci.low, ci.high)
                }
                _ => "-".into(),
            }
        })
        .unwrap_or_else(|| "-".into());
    Ok(ScenarioResult {
        scenario: sc.name.into(),
        place: sc.place.into(),
        expected: sc.expect.iter().map(|s| s.to_string()).collect(),
        why: sc.why.into(),
        winner: r.winner.as_ref().map(|c| c.describe()),
        winner_where: r.winner_venue.map(|v| Venue::as_str(v).to_string()),
        found,
        improvement: if r.winner.is_none() && best.is_some() {
            format!("best tried: {improvement}")
        } else {
            improvement
        },
        trials: r.trials_used,
        minutes: t0.elapsed().as_secs_f64() / 60.0,
        applied,
        regression_applied,
        decision: r.decision,
        session: r.session,
    })
}
