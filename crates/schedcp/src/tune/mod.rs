//! tune — the decision engine: the self-optimising loop without an LLM.
//!
//! workload signature ([`crate::observe::signature`]) → explainable
//! [`rules`] → candidates reordered by evidence from similar past
//! workloads ([`record`]) → trials within a budget ([`engine`]: successive
//! halving with adaptive run counts, then a Bayesian search ([`bayes`])
//! over a numeric knob) → only a proven winner is applied, through deploy
//! with a canary → every trial and verdict recorded, so the next tune of a
//! similar workload starts from what worked. [`trial`] is the building
//! block (an interleaved A/B of one change set, host or lab); [`chart`]
//! draws the report. [`main_job`] is the lab-only comparison of the
//! built-in schedulers (`schedcp lab demo`).

pub mod apply;
pub mod bayes;
pub mod candidate;
pub mod chart;
pub mod continuous;
pub mod demo;
pub mod engine;
pub mod library;
pub mod main_job;
pub mod record;
pub mod report;
pub mod rules;
pub mod trial;

use serde::Serialize;

pub use candidate::{Candidate, Change, Venue};
pub use engine::{Applier, Budget, Outcome, TrialRecord, TuneRequest};

use crate::compare::Side;
use crate::deploy::Deployment;
use crate::observe::signature::Signature;

/// What happens, as it happens: the CLI draws progress from these, the
/// API turns them into job progress.
pub enum Event<'a> {
    Note(&'a str),
    Signature(&'a Signature),
    Recommended(&'a rules::Recommendation),
    TrialStarted {
        n: usize,
        budget: usize,
        label: &'a str,
        venue: Venue,
        runs: usize,
        stage: &'a str,
    },
    /// Run `i` of `total` of trial `n` finished.
    Run {
        n: usize,
        i: usize,
        total: usize,
        side: Side,
        value: Result<f64, &'a str>,
    },
    TrialDone(&'a TrialRecord),
    Dropped {
        label: &'a str,
        why: &'a str,
    },
    Decided(&'a str),
    Applied(&'a Deployment),
}

/// A whole tune: what was measured, tried, decided and applied.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TuneReport {
    /// The session's id in the store (`schedcp tune show ID`).
    pub session: i64,
    pub workload: String,
    pub signature: Signature,
    /// The rules that fired, with the measured reason.
    pub fired: Vec<rules::Fired>,
    /// Proposals no venue could trial, with why.
    pub unplaced: Vec<String>,
    /// The built-in workload lab trials ran in its place.
    pub lab_stand_in: Option<String>,
    /// Every candidate's pooled verdict and fate, in rank order.
    pub outcomes: Vec<Outcome>,
    /// Every trial in the order run.
    pub trials: Vec<TrialRecord>,
    /// Why the search stopped early, if it did (budget, interrupt).
    pub stopped: Option<String>,
    pub winner: Option<Change>,
    pub winner_venue: Option<Venue>,
    pub decision: String,
    /// The deployment of the winner, when applied.
    pub applied: Option<Deployment>,
    /// How to undo what was applied.
    pub rollback: Option<String>,
    pub min_effect_pct: f64,
    pub trials_used: usize,
    pub seconds: f64,
    /// SVG charts written for this report.
    pub charts: Vec<String>,
    /// What the policy library got: scheduler results, knob sets proven
    /// here (entries with results), their lifecycle moves.
    pub library: Vec<String>,
}
