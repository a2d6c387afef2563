//! The decision engine's loop: signature → ranked candidates (rules, then
//! evidence from similar past workloads, then the caller's own) → trials
//! within a budget (successive halving with adaptive run counts, then a
//! Bayesian search over a numeric knob) → a verdict that applies a change
//! only when its improvement is significant and clears the minimum effect.
//!
//! Every trial is an interleaved A/B against the current configuration
//! through the one comparison engine; runs of the same candidate pool
//! across rounds (each round is itself interleaved, so slow drift hits
//! both sides alike). Host trials carry the actuator's guarantees: the
//! change set is journalled before its first write and restored after each
//! candidate block, on failure, on Ctrl-C, and after a kill at the next
//! start. Lab trials never touch this machine.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::bayes::{Bayes, Dim, Observation};
use super::candidate::{Candidate, Change, Context, Source, Venue};
use super::rules;
use super::trial::{self, TrialRequest};
use super::{record, Event, TuneReport};
use crate::compare::{AbReport, Arm, Criteria, Metric, Setting, Side};
use crate::config::Config;
use crate::deploy::kpi::Runner;
use crate::deploy::{DeployState, Deployment};
use crate::error::Error;
use crate::knobs::Assignment;
use crate::observe::signature::{self, Signature};
use crate::store::Store;

/// A significant improvement must also be at least this large (the lower
/// end of its interval, not the median) before tune applies it. 2 %: on
/// these machines two runs of the same configuration differ by about 1 %
/// at the median (`knob trial vm.swappiness=30`: +0.1 % [−1.2, +1.7]), so
/// an interval that clears 2 % is beyond run-to-run noise, and a change
/// that buys less is not worth a kernel setting someone must remember.
pub const MIN_EFFECT_PCT: f64 = 2.0;

/// Budget limits accepted from callers.
pub const MAX_TRIALS: usize = 200;
pub const MAX_BUDGET_S: u64 = 24 * 3600;
pub const MAX_CANDIDATES: usize = 32;

/// Stop the numeric search when no point is expected to add this much (%).
const EI_STOP_PCT: f64 = 0.5;
/// At most this many search trials per numeric knob.
const MAX_SEARCH_TRIALS: usize = 6;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Budget {
    /// Trials at most (a trial: one interleaved A/B block of one candidate).
    pub trials: usize,
    /// Wall time at most, seconds (a running trial finishes first).
    pub seconds: u64,
}

#[derive(Debug, Clone)]
pub struct TuneRequest {
    /// A workload profile's name or a built-in lab workload spec.
    pub workload: String,
    pub budget: Budget,
    /// Apply a proven winner through deploy (else advice: apply nothing).
    pub apply: bool,
    pub criteria: Criteria,
    /// Runs a side in a candidate's first trial; each further round adds as
    /// many (after one warm-up a side).
    pub runs: usize,
    /// Pooled runs a side at most for one candidate.
    pub max_runs: usize,
    /// Runs a side in a lab trial (one boot each).
    pub lab_runs: usize,
    /// Candidates handed in (by an agent or operator), trialled after the
    /// rules' unless `rules` is false.
    pub candidates: Vec<Candidate>,
    pub rules: bool,
    /// Allow trials in the lab VM.
    pub lab: bool,
    /// The canary of an applied change, seconds.
    pub canary_s: u64,
    /// Set by the caller to stop after the running trial (daemon shutdown).
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl TuneRequest {
    pub fn new(workload: &str) -> TuneRequest {
        TuneRequest {
            workload: workload.into(),
            budget: Budget {
                trials: 12,
                seconds: 1800,
            },
            apply: false,
            criteria: Criteria {
                alpha: crate::compare::stats::DEFAULT_ALPHA,
                min_effect_pct: MIN_EFFECT_PCT,
            },
            runs: 4,
            max_runs: 16,
            lab_runs: 6,
            candidates: vec![],
            rules: true,
            lab: true,
            canary_s: 10,
            cancel: None,
        }
    }

    /// Every bound, with what to do instead.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Input(m));
        if !(1..=MAX_TRIALS).contains(&self.budget.trials) {
            return bad(format!(
                "the trial budget must be 1..={MAX_TRIALS}, got {}",
                self.budget.trials
            ));
        }
        if !(10..=MAX_BUDGET_S).contains(&self.budget.seconds) {
            return bad(format!(
                "the time budget must be 10 s..{} h, got {} s",
                MAX_BUDGET_S / 3600,
                self.budget.seconds
            ));
        }
        self.criteria.validate().map_err(Error::Input)?;
        if !(4..=trial::MAX_RUNS).contains(&self.runs) {
            return bad(format!(
                "runs must be 4..={} a side (fewer can never reach p < 0.05), got {}",
                trial::MAX_RUNS,
                self.runs
            ));
        }
        if self.max_runs < self.runs || self.max_runs > trial::MAX_RUNS {
            return bad(format!(
                "max runs must be {}..={} a side, got {}",
                self.runs,
                trial::MAX_RUNS,
                self.max_runs
            ));
        }
        if !(4..=20).contains(&self.lab_runs) {
            return bad(format!(
                "lab runs must be 4..=20 a side, got {}",
                self.lab_runs
            ));
        }
        if !(1..=crate::deploy::MAX_CANARY_S).contains(&self.canary_s) {
            return bad(format!(
                "the canary must be 1..={} s, got {}",
                crate::deploy::MAX_CANARY_S,
                self.canary_s
            ));
        }
        if self.candidates.len() > MAX_CANDIDATES {
            return bad(format!(
                "at most {MAX_CANDIDATES} candidates, got {}",
                self.candidates.len()
            ));
        }
        if !self.rules && self.candidates.is_empty() {
            return bad("with the rules off, hand in at least one candidate".into());
        }
        Ok(())
    }
}

/// Where a proven host winner goes: deploy, under a canary (the caller
/// passes the daemon, or an in-process deployer).
pub trait Applier {
    /// `the local daemon`, `an in-process deployer`.
    fn describe(&self) -> String;
    fn apply(
        &self,
        knobs: Vec<Assignment>,
        canary_s: u64,
        workload: &str,
    ) -> Result<Deployment, Error>;
}

/// One trial as it happened.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TrialRecord {
    /// 1-based, in the order run.
    pub n: usize,
    pub candidate: String,
    pub venue: Venue,
    /// `halving round K`, `search`, `confirm`.
    pub stage: String,
    pub runs: usize,
    pub seconds: f64,
    /// This trial's own A/B (not pooled).
    pub ab: AbReport,
}

/// A candidate's end: its pooled A/B and what became of it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Outcome {
    pub candidate: Candidate,
    /// All its runs pooled, judged once.
    pub ab: Option<AbReport>,
    /// `proven`, `dropped after round K: …`, `not tried: budget`, …
    pub fate: String,
    pub proven: bool,
}

/// A change's pooled runs.
#[derive(Debug, Clone, Default)]
struct Pool {
    base: Vec<f64>,
    cand: Vec<f64>,
    base_fail: Vec<String>,
    cand_fail: Vec<String>,
    order: Vec<Side>,
    metric: Option<Metric>,
    subject: String,
    setting: Option<Setting>,
}

impl Pool {
    fn add(&mut self, ab: &AbReport) {
        self.base.extend(&ab.baseline.values);
        self.cand.extend(&ab.candidate.values);
        self.base_fail.extend(ab.baseline.failures.iter().cloned());
        self.cand_fail.extend(ab.candidate.failures.iter().cloned());
        self.order.extend(&ab.order);
        self.metric = Some(ab.metric.clone());
        self.subject = ab.subject.clone();
        self.setting = Some(ab.setting.clone());
    }

    fn ab(&self, label: &str, criteria: Criteria) -> Option<AbReport> {
        Some(AbReport::new(
            self.subject.clone(),
            self.metric.clone()?,
            Arm::new(
                "current configuration",
                self.base.clone(),
                self.base_fail.clone(),
            ),
            Arm::new(label, self.cand.clone(), self.cand_fail.clone()),
            self.order.clone(),
            self.setting.clone()?,
            criteria,
        ))
    }
}

/// Proven: significant, and the interval's lower end clears the minimum
/// effect (the improvement is at least that large at 95 %).
pub fn proven(ab: &AbReport, min_effect_pct: f64) -> bool {
    ab.improved()
        && ab
            .guaranteed_improvement_pct()
            .is_some_and(|low| low >= min_effect_pct)
}

/// Cannot reach the minimum effect even at the top of its interval, or
/// significantly worse.
fn hopeless(ab: &AbReport, min_effect_pct: f64) -> Option<String> {
    if ab.verdict() == crate::compare::Verdict::Regressed {
        return Some("regressed".into());
    }
    match ab.improvement_ci_pct {
        Some(ci) if ci.high < min_effect_pct => Some(format!(
            "cannot reach the minimum effect ({min_effect_pct}%): its interval tops out at {:+.1}%",
            ci.high
        )),
        _ => None,
    }
}

/// The loop's state.
struct Session<'a> {
    cfg: &'a Config,
    req: &'a TuneRequest,
    store: Store,
    session: i64,
    started: Instant,
    trials: Vec<TrialRecord>,
    /// Per candidate key (its change's description): pooled runs.
    pools: BTreeMap<String, (Pool, Venue)>,
    lab_spec: Option<String>,
    on: &'a (dyn Fn(Event<'_>) + Sync),
    /// Seconds the last trial of each venue took (for the time budget).
    last_s: BTreeMap<&'static str, f64>,
    stopped: Option<String>,
}

impl Session<'_> {
    fn left_trials(&self) -> usize {
        self.req.budget.trials.saturating_sub(self.trials.len())
    }

    /// Whether another trial of `venue` fits the budget; records why not.
    fn can_run(&mut self, venue: Venue) -> bool {
        if self.stopped.is_some() {
            return false;
        }
        if crate::host::interrupt::requested() {
            self.stopped = Some("interrupted".into());
            return false;
        }
        if self
            .req
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        {
            self.stopped = Some("cancelled".into());
            return false;
        }
        if self.left_trials() == 0 {
            self.stopped = Some(format!("trial budget ({}) spent", self.req.budget.trials));
            return false;
        }
        let key = venue_key(venue);
        let next = self.last_s.get(key).copied().unwrap_or(0.0);
        let elapsed = self.started.elapsed().as_secs_f64();
        if elapsed + next > self.req.budget.seconds as f64 {
            self.stopped = Some(format!(
                "time budget ({} s) spent: {elapsed:.0} s used, a {} trial takes about {next:.0} s",
                self.req.budget.seconds,
                venue.as_str()
            ));
            return false;
        }
        true
    }

    /// One trial of `change` with `runs` a side; pools it. `Err` only for
    /// what must end the session (interrupt); a failing candidate comes
    /// back as `Ok(None)` with why in `fate`.
    fn run(
        &mut self,
        change: &Change,
        venue: Venue,
        runs: usize,
        stage: &str,
    ) -> Result<Result<AbReport, String>, Error> {
        let n = self.trials.len() + 1;
        let label = change.describe();
        (self.on)(Event::TrialStarted {
            n,
            budget: self.req.budget.trials,
            label: &label,
            venue,
            runs,
            stage,
        });
        let t0 = Instant::now();
        let r = match venue {
            Venue::Host => self.host_trial(change, runs, n),
            Venue::Lab => self.lab_trial(change, runs, n),
        };
        let secs = t0.elapsed().as_secs_f64();
        self.last_s.insert(venue_key(venue), secs);
        let ab = match r {
            Ok(ab) => ab,
            Err(e) if crate::host::interrupt::requested() => {
                self.stopped = Some("interrupted".into());
                return Err(e);
            }
            Err(e) => return Ok(Err(e.to_string())),
        };
        let (pool, _) = self
            .pools
            .entry(label.clone())
            .or_insert_with(|| (Pool::default(), venue));
        pool.add(&ab);
        let rec = TrialRecord {
            n,
            candidate: label,
            venue,
            stage: stage.into(),
            runs,
            seconds: secs,
            ab: ab.clone(),
        };
        record::trial(&mut self.store, self.session, change, &rec)?;
        (self.on)(Event::TrialDone(&rec));
        self.trials.push(rec);
        Ok(Ok(ab))
    }

    fn host_trial(&self, change: &Change, runs: usize, n: usize) -> Result<AbReport, Error> {
        let Change::Knobs { knobs } = change else {
            return Err(Error::Input(
                "scheduler trials on this host need sched_ext; they run in the lab".into(),
            ));
        };
        let treq = TrialRequest {
            knobs: knobs.clone(),
            workload: self.req.workload.clone(),
            runs,
            criteria: self.req.criteria,
        };
        let (plan, workload) = trial::admit(self.cfg, &treq)?;
        let on = self.on;
        let r = trial::run_host(self.cfg, plan, &workload, &treq, &|i, total, side, v| {
            on(Event::Run {
                n,
                i,
                total,
                side,
                value: v,
            })
        })?;
        if let Some(e) = r.restore_error {
            return Err(Error::Internal(anyhow::anyhow!(
                "the trial could not restore every knob: {e}"
            )));
        }
        Ok(r.ab)
    }

    fn lab_trial(&self, change: &Change, runs: usize, n: usize) -> Result<AbReport, Error> {
        let spec = self.lab_spec.clone().ok_or_else(|| {
            Error::Input("no lab workload stands in for this workload (it is I/O-bound)".into())
        })?;
        let on = self.on;
        let mut done = 0usize;
        let total = 2 * runs;
        let mut progress = |p: crate::lab::Progress<'_>| match p {
            crate::lab::Progress::Guest(schedcp_proto::report::GuestMessage::Run { .. }) => {
                done += 1;
                // The first run a side is the warm-up.
                if done > 2 {
                    on(Event::Run {
                        n,
                        i: done - 2,
                        total,
                        side: Side::Baseline,
                        value: Ok(f64::NAN),
                    })
                }
            }
            crate::lab::Progress::Phase(m) => on(Event::Note(m)),
            _ => {}
        };
        match change {
            Change::Knobs { knobs } => {
                let treq = TrialRequest {
                    knobs: knobs.clone(),
                    workload: spec,
                    runs,
                    criteria: self.req.criteria,
                };
                let (writes, workload) = trial::admit_lab(&treq)?;
                Ok(trial::run_lab(self.cfg, writes, workload, &treq, &mut progress)?.ab)
            }
            Change::Scheduler { policy, tunables } => {
                use crate::lab::compare::{CompareRequest, Contender};
                use crate::lab::SchedulerRef;
                let tunables = tunables
                    .iter()
                    .map(|t| {
                        t.split_once('=')
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .ok_or_else(|| Error::Input(format!("tunable '{t}' is not NAME=VALUE")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let creq =
                    CompareRequest {
                        baseline: Contender {
                            policy: SchedulerRef::Default,
                            tunables: vec![],
                            knobs: vec![],
                        },
                        candidate: Contender {
                            policy: scheduler_ref(self.cfg, policy)?,
                            tunables,
                            knobs: vec![],
                        },
                        workload: spec.parse().map_err(
                            |e: schedcp_proto::workload::SpecError| Error::Input(e.to_string()),
                        )?,
                        runs,
                        criteria: self.req.criteria,
                        vcpus: self.cfg.lab.vcpus,
                        mem_mib: self.cfg.lab.mem_mib,
                        run_timeout: Duration::from_secs(self.cfg.lab.timeout_s),
                        accel: self.cfg.lab.accel,
                    };
                Ok(crate::lab::Lab::new(self.cfg.clone())
                    .compare(&creq, &mut progress)?
                    .ab)
            }
        }
    }

    fn pooled(&self, c: &Candidate) -> Option<AbReport> {
        let label = c.change.describe();
        self.pools
            .get(&label)
            .and_then(|(p, _)| p.ab(&label, self.req.criteria))
    }

    fn runs_for(&self, venue: Venue) -> usize {
        match venue {
            Venue::Host => self.req.runs,
            Venue::Lab => self.req.lab_runs,
        }
    }
}

/// A scheduler candidate as the lab runs it: a built-in, a `.c` file, or a
/// BPF policy from the library (an agent's own, say), whose source the lab
/// compiles in its jail like any other.
pub fn scheduler_ref(cfg: &Config, policy: &str) -> Result<crate::lab::SchedulerRef, Error> {
    use crate::lab::SchedulerRef;
    use crate::policies::model::{Body, PolicyRef};
    if crate::bpf::builtin::names().contains(&policy) {
        return Ok(SchedulerRef::Builtin(policy.into()));
    }
    if policy.ends_with(".c") {
        return Ok(SchedulerRef::File(policy.into()));
    }
    let v = crate::policies::Library::open(cfg)?.get(&PolicyRef {
        name: policy.into(),
        version: None,
    })?;
    match v.body {
        Body::Bpf { source } => {
            let dir = cfg.state_dir().join("tune").join("src");
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::Setup(format!("creating {}: {e}", dir.display())))?;
            let path = dir.join(format!(
                "{}-{}.bpf.c",
                crate::host::safe_file_name(&v.name),
                v.version
            ));
            crate::host::fs::atomic_write(&path, source.as_bytes(), Some(0o600))
                .map_err(|e| Error::Setup(format!("writing {}: {e}", path.display())))?;
            Ok(SchedulerRef::File(path))
        }
        Body::External(_) => Err(Error::Input(format!(
            "{policy} is an external scheduler binary: trial it with verify (`schedcp verify {policy}`), which runs it in the lab"
        ))),
        Body::Knobs(_) => Err(Error::Input(format!(
            "{policy} is a knob set, not a scheduler: hand it in as a candidate (`--candidate {policy}`)"
        ))),
    }
}

fn venue_key(v: Venue) -> &'static str {
    match v {
        Venue::Host => "host",
        Venue::Lab => "lab",
    }
}

/// What the machine allows, for the rules.
pub fn context(cfg: &Config, workload: &str, lab: bool) -> Result<Context, Error> {
    let mut host_knobs = BTreeMap::new();
    for a in crate::knobs::discover::list() {
        if a.available {
            host_knobs.insert(a.name, a.current);
        }
    }
    let store = Store::open_in(&cfg.state_dir())?;
    let profile = crate::observe::workload_profiles::get(&store, workload)
        .ok()
        .map(|p| p.name);
    let lab = lab && crate::lab::kernel::cached(&cfg.cache_dir()).is_some();
    Ok(Context {
        host_knobs,
        devices: crate::knobs::catalog::devices(),
        // Scheduler trials on a sched_ext host are not built yet: they run
        // in the lab either way, and say so.
        host_sched_ext: false,
        lab,
        profile,
    })
}

/// The built-in lab workload that stands in for `workload` in lab trials:
/// itself when it is one, else the one of the same class.
pub fn lab_stand_in(cfg: &Config, workload: &str, sig: &Signature) -> Option<String> {
    if let Ok(w) = crate::deploy::deployer::resolve_workload(cfg, workload) {
        if let Runner::Lab { spec, .. } = &w.runner {
            return Some(spec.to_string());
        }
    }
    match sig.mix.class() {
        "cpu-bound" => Some("batch".into()),
        "wakeup-heavy" => Some("wakeup".into()),
        _ => None,
    }
}

/// Take the signature: one run of the workload as it is now.
pub fn take_signature(cfg: &Config, workload: &str) -> Result<Signature, Error> {
    Ok(sample(cfg, workload)?.0)
}

/// The signature and the workload's metric from that same run.
pub fn sample(
    cfg: &Config,
    workload: &str,
) -> Result<(Signature, crate::deploy::kpi::WorkloadKpi), Error> {
    let w = crate::deploy::deployer::resolve_workload(cfg, workload)?;
    signature::take(|| {
        let (kpi, usage) = w.run_measured(None).map_err(|e| {
            Error::Input(format!(
                "the workload failed before anything was changed, so there is nothing to tune: {e}"
            ))
        })?;
        Ok(signature::Ran { output: kpi, usage })
    })
}

/// Run a whole tune. `apply` is used only when the request applies and a
/// host candidate is proven.
pub fn run(
    cfg: &Config,
    req: &TuneRequest,
    applier: Option<&dyn Applier>,
    on: &(dyn Fn(Event<'_>) + Sync),
) -> Result<TuneReport, Error> {
    req.validate()?;
    if req.apply && applier.is_none() {
        return Err(Error::Input(
            "applying needs a deploy target (the daemon); run as advice instead".into(),
        ));
    }
    let started = Instant::now();
    let mut store = Store::open_in(&cfg.state_dir())?;
    // A trial killed earlier left its knobs: put them back, and say so.
    for r in crate::knobs::journal::recover(&mut store)? {
        on(Event::Note(&format!(
            "restored knobs left by a killed {} ({}): {}",
            r.purpose, r.knobs, r.outcome
        )));
    }
    let ctx = context(cfg, &req.workload, req.lab)?;
    if ctx.profile.is_none() {
        // Not a profile: it must at least be a lab spec; resolve says which.
        crate::deploy::deployer::resolve_workload(cfg, &req.workload)?;
    }
    on(Event::Note(
        "taking the workload's signature (one run, probes attached)",
    ));
    let sig = take_signature(cfg, &req.workload)?;
    on(Event::Signature(&sig));
    // The profile keeps its signatures over time (shown with its history).
    if let Some(name) = &ctx.profile {
        let p = crate::observe::workload_profiles::get(&store, name)?;
        crate::observe::profile_signatures::record(
            &mut store,
            p.id,
            crate::observe::profile_signatures::Taker::Tune,
            &sig,
        )?;
    }

    let mut rec = if req.rules {
        rules::recommend(&sig, &ctx)
    } else {
        rules::Recommendation::default()
    };
    for c in &req.candidates {
        let mut c = c.clone();
        c.source = Source::Agent;
        if rec.candidates.iter().any(|x| x.change == c.change) {
            continue;
        }
        c.venue = match &c.change {
            Change::Knobs { knobs } => match ctx.knob_venue(knobs) {
                Some(v) => v,
                None => {
                    rec.unplaced.push(format!(
                        "{} (handed in): this machine does not allow it and the lab cannot trial it",
                        c.change.describe()
                    ));
                    continue;
                }
            },
            Change::Scheduler { .. } => match ctx.scheduler_venue() {
                Some(v) => v,
                None => {
                    rec.unplaced.push(format!(
                        "{} (handed in): no sched_ext here and no lab kernel cached",
                        c.change.describe()
                    ));
                    continue;
                }
            },
        };
        rec.candidates.push(c);
    }
    // A knob a deployment manages is the deploy controller's: a trial
    // writing it would look like an operator override and fight it.
    let managed = managed_knobs(&store)?;
    rec.candidates.retain(|c| {
        let Change::Knobs { knobs } = &c.change else {
            return true;
        };
        let clash = knobs.iter().find_map(|a| {
            managed
                .iter()
                .find(|(k, w, _)| *k == a.knob && (w.is_none() || *w == a.workload))
        });
        if let Some((k, _, id)) = clash {
            rec.unplaced.push(format!(
                "{}: {k} is managed by deployment #{id}; roll it back first to trial it",
                c.change.describe()
            ));
        }
        clash.is_none()
    });
    record::reorder(&store, &sig, &mut rec.candidates)?;
    on(Event::Recommended(&rec));

    let session = record::begin(&mut store, &req.workload, req.apply, &sig)?;
    let lab_spec = lab_stand_in(cfg, &req.workload, &sig);
    let mut s = Session {
        cfg,
        req,
        store,
        session,
        started,
        trials: Vec::new(),
        pools: BTreeMap::new(),
        lab_spec,
        on,
        last_s: BTreeMap::new(),
        stopped: None,
    };
    let mut outcomes: Vec<Outcome> = rec
        .candidates
        .iter()
        .map(|c| Outcome {
            candidate: c.clone(),
            ab: None,
            fate: "not tried: the budget ran out first".into(),
            proven: false,
        })
        .collect();
    let result = halving(&mut s, &mut outcomes).and_then(|_| search(&mut s, &mut outcomes));
    let interrupted = match result {
        Ok(()) => false,
        Err(e) if s.stopped.as_deref() == Some("interrupted") => {
            on(Event::Note(&format!("{e}")));
            true
        }
        Err(e) => return Err(e),
    };
    for o in &mut outcomes {
        o.ab = s.pooled(&o.candidate);
        if let Some(ab) = &o.ab {
            record::verdict(
                &mut s.store,
                session,
                &o.candidate.change,
                o.candidate.venue,
                ab,
            )?;
        }
    }
    let cancelled = s.stopped.as_deref() == Some("cancelled");
    let decision = decide(&outcomes, req, interrupted || cancelled);
    on(Event::Decided(&decision.text));
    let mut applied = None;
    if let (Some(w), false) = (&decision.winner, interrupted || cancelled) {
        if req.apply && w.candidate.venue == Venue::Host {
            if let (Change::Knobs { knobs }, Some(a)) = (&w.candidate.change, applier) {
                on(Event::Note(&format!(
                    "applying {} through {} with a {} s canary",
                    w.candidate.change.describe(),
                    a.describe(),
                    req.canary_s
                )));
                let d = a.apply(knobs.clone(), req.canary_s, &req.workload)?;
                on(Event::Applied(&d));
                applied = Some(d);
            }
        }
    }
    let rollback = applied.as_ref().and_then(|d| {
        (d.state == DeployState::Active).then(|| {
            "schedcp knob rollback --reason '…' (or schedcp deploy rollback): restores every prior value".to_string()
        })
    });
    let mut report = TuneReport {
        session,
        workload: req.workload.clone(),
        signature: sig,
        fired: rec.fired.clone(),
        unplaced: rec.unplaced.clone(),
        lab_stand_in: s.lab_spec.clone(),
        outcomes,
        trials: s.trials.clone(),
        stopped: s.stopped.clone(),
        winner: decision.winner.as_ref().map(|w| w.candidate.change.clone()),
        winner_venue: decision.winner.as_ref().map(|w| w.candidate.venue),
        decision: decision.text.clone(),
        applied,
        rollback,
        min_effect_pct: req.criteria.min_effect_pct,
        trials_used: s.trials.len(),
        seconds: started.elapsed().as_secs_f64(),
        charts: vec![],
        library: vec![],
    };
    // Verdicts go to the library (best effort: the tune's own record is
    // the store's, kept either way).
    match super::library::record(cfg, &report) {
        Ok(lines) => report.library = lines,
        Err(e) => report
            .library
            .push(format!("not recorded in the policy library: {e}")),
    }
    record::finish(
        &mut s.store,
        session,
        &report.decision,
        report.winner.as_ref(),
        report.applied.as_ref().map(|d| d.id),
        &serde_json::json!({ "report": &report, "text": report.render() }),
    )?;
    Ok(report)
}

/// Knobs the changes in force manage: name, the workload for per-workload
/// ones, and the deployment.
fn managed_knobs(store: &Store) -> Result<Vec<(String, Option<String>, i64)>, Error> {
    let mut out = Vec::new();
    for d in crate::deploy::record::in_force(store)? {
        let Some(a) = &d.knobs else { continue };
        for p in &a.plan.system {
            out.push((p.knob.clone(), None, d.id));
        }
        for w in &a.plan.workloads {
            let names = w
                .task_knobs
                .iter()
                .map(|t| t.knob.clone())
                .chain(w.cgroup.iter().map(|c| c.knob.clone()));
            for k in names {
                out.push((k, Some(w.binding.name.clone()), d.id));
            }
        }
    }
    Ok(out)
}

/// How an undecided candidate ranks for the next halving round: first
/// those already significantly better (only their interval has to tighten
/// to prove them), then by point estimate. The point estimate alone once
/// dropped a significant +22 % (4 runs a side, tight) behind candidates
/// whose noisy medians happened to be higher, and the budget ran out on
/// them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rank {
    significant: bool,
    improvement_pct: f64,
}

impl Rank {
    fn of(ab: &AbReport) -> Rank {
        Rank {
            significant: ab.improved(),
            improvement_pct: ab.improvement_pct.unwrap_or(f64::NEG_INFINITY),
        }
    }

    fn cmp(&self, other: &Rank) -> std::cmp::Ordering {
        self.significant
            .cmp(&other.significant)
            .then(self.improvement_pct.total_cmp(&other.improvement_pct))
    }
}

/// Successive halving: every candidate gets a first trial; after each
/// round the hopeless drop, and the better half (by [`Rank`]) goes on with
/// more runs pooled, in that order, until one is proven and nothing left
/// can beat it, the runs reach the cap, or the budget is spent.
fn halving(s: &mut Session<'_>, outcomes: &mut [Outcome]) -> Result<(), Error> {
    let min = s.req.criteria.min_effect_pct;
    let mut alive: Vec<usize> = (0..outcomes.len()).collect();
    let mut round = 1;
    while !alive.is_empty() {
        let stage = format!("halving round {round}");
        for &i in &alive {
            let venue = outcomes[i].candidate.venue;
            if !s.can_run(venue) {
                break;
            }
            let pooled = s
                .pooled(&outcomes[i].candidate)
                .map_or(0, |ab| ab.candidate.values.len());
            let cap = match venue {
                Venue::Host => s.req.max_runs,
                Venue::Lab => 2 * s.req.lab_runs,
            };
            if pooled >= cap {
                continue;
            }
            let runs = s.runs_for(venue).min(cap - pooled).max(4);
            let change = outcomes[i].candidate.change.clone();
            if let Err(why) = s.run(&change, venue, runs, &stage)? {
                outcomes[i].fate = format!("failed in round {round}: {why}");
            }
        }
        // Judge the round.
        let mut next = Vec::new();
        for &i in &alive {
            if outcomes[i].fate.starts_with("failed") {
                continue;
            }
            let Some(ab) = s.pooled(&outcomes[i].candidate) else {
                continue;
            };
            if !ab.candidate.failures.is_empty() && ab.baseline.failures.is_empty() {
                outcomes[i].fate = format!(
                    "dropped after round {round}: the workload failed under it ({})",
                    ab.candidate.failures[0]
                );
                continue;
            }
            if let Some(why) = hopeless(&ab, min) {
                outcomes[i].fate = format!("dropped after round {round}: {why}");
                (s.on)(Event::Dropped {
                    label: &outcomes[i].candidate.change.describe(),
                    why: &outcomes[i].fate,
                });
                continue;
            }
            outcomes[i].proven = proven(&ab, min);
            outcomes[i].fate = if outcomes[i].proven {
                format!("proven after round {round}")
            } else {
                format!(
                    "inconclusive after round {round}: its interval still spans the minimum effect"
                )
            };
            next.push((i, ab));
        }
        if s.stopped.is_some() {
            return Ok(());
        }
        // Proven ones that nothing left can beat end the search.
        let best_low = next
            .iter()
            .filter(|(i, _)| outcomes[*i].proven)
            .filter_map(|(_, ab)| ab.guaranteed_improvement_pct())
            .fold(f64::NEG_INFINITY, f64::max);
        if best_low.is_finite() {
            next.retain(|(i, ab)| {
                let keep = outcomes[*i].proven
                    || ab.improvement_ci_pct.is_some_and(|ci| ci.high > best_low);
                if !keep {
                    outcomes[*i].fate = format!(
                        "dropped after round {round}: cannot beat the proven best (at least {best_low:+.1}%)"
                    );
                }
                keep
            });
        }
        // Those still undecided: the better half goes on.
        let mut open: Vec<(usize, Rank)> = next
            .iter()
            .filter(|(i, _)| !outcomes[*i].proven)
            .map(|(i, ab)| (*i, Rank::of(ab)))
            .collect();
        open.sort_by(|a, b| b.1.cmp(&a.1));
        let keep = open.len().div_ceil(2);
        for (i, _) in open.iter().skip(keep) {
            outcomes[*i].fate = format!(
                "dropped after round {round}: in the weaker half ({})",
                s.pooled(&outcomes[*i].candidate)
                    .map(|ab| ab.headline())
                    .unwrap_or_default()
            );
        }
        let before = alive.len();
        alive = open.iter().take(keep).map(|(i, _)| *i).collect();
        // Proven ones get no more runs; at the cap, nothing more to learn.
        alive.retain(|&i| {
            let venue = outcomes[i].candidate.venue;
            let cap = match venue {
                Venue::Host => s.req.max_runs,
                Venue::Lab => 2 * s.req.lab_runs,
            };
            let n = s
                .pooled(&outcomes[i].candidate)
                .map_or(0, |ab| ab.candidate.values.len());
            if n >= cap {
                outcomes[i].fate = format!("no significant change after {n} runs a side (the cap)");
                false
            } else {
                true
            }
        });
        if alive.is_empty() || (alive.len() == before && round > 8) {
            break;
        }
        round += 1;
    }
    Ok(())
}

/// A value as a knob takes it: integers without a fraction.
fn value_str(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The numeric search: for the best candidate that has a numeric knob and
/// is not worse than the current configuration, Bayesian optimisation over
/// the knob's grid, each point a short trial; the best point by the
/// model's mean is then confirmed with the full run count.
fn search(s: &mut Session<'_>, outcomes: &mut Vec<Outcome>) -> Result<(), Error> {
    let min = s.req.criteria.min_effect_pct;
    let pick = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.candidate.numeric.is_some())
        // Dropped ones cannot beat what is left (or regressed, or failed).
        .filter(|(_, o)| !o.fate.starts_with("dropped") && !o.fate.starts_with("failed"))
        .filter_map(|(i, o)| Some((i, s.pooled(&o.candidate)?)))
        .filter(|(_, ab)| hopeless(ab, min).is_none() && ab.improvement_pct.unwrap_or(0.0) > 0.0)
        .max_by(|a, b| {
            a.1.improvement_pct
                .unwrap_or(0.0)
                .total_cmp(&b.1.improvement_pct.unwrap_or(0.0))
        })
        .map(|(i, _)| i);
    let Some(i) = pick else {
        return Ok(());
    };
    let base = outcomes[i].candidate.clone();
    let num = base.numeric.clone().expect("filtered");
    let bayes = Bayes::new(vec![Dim {
        name: num.knob.clone(),
        values: num.values.clone(),
        log: num.log,
    }])
    .map_err(|e| Error::Internal(anyhow::anyhow!("{e}")))?;
    let value_of = |c: &Change| -> Option<f64> {
        match c {
            Change::Knobs { knobs } => knobs
                .iter()
                .find(|a| a.knob == num.knob)
                .and_then(|a| a.value.parse().ok()),
            Change::Scheduler { tunables, .. } => tunables.iter().find_map(|t| {
                let (k, v) = t.split_once('=')?;
                (k == num.knob).then(|| v.parse().ok()).flatten()
            }),
        }
    };
    let obs = |ab: &AbReport, v: f64| -> Option<Observation> {
        let ci = ab.improvement_ci_pct?;
        Some(Observation {
            point: vec![v],
            score: ab.improvement_pct?,
            noise: (ci.high - ci.low) / (2.0 * 1.96),
        })
    };
    let mut seen: Vec<Observation> = Vec::new();
    if let (Some(v), Some(ab)) = (value_of(&base.change), s.pooled(&base)) {
        seen.extend(obs(&ab, v));
    }
    let venue = base.venue;
    let mut tried = 0;
    while tried < MAX_SEARCH_TRIALS && s.can_run(venue) {
        if seen.len() >= bayes.n_init() && bayes.max_expected_improvement(&seen) < EI_STOP_PCT {
            (s.on)(Event::Note(&format!(
                "search on {}: stopped, no value is expected to add {EI_STOP_PCT}%",
                num.knob
            )));
            break;
        }
        let Some(point) = bayes.suggest(&seen) else {
            break;
        };
        let change = base.change.with_value(&num.knob, &value_str(point[0]));
        tried += 1;
        let runs = s.runs_for(venue);
        match s.run(&change, venue, runs, "search")? {
            Ok(ab) => seen.extend(obs(&ab, point[0])),
            Err(why) => {
                (s.on)(Event::Dropped {
                    label: &change.describe(),
                    why: &why,
                });
                seen.push(Observation {
                    point,
                    score: -100.0,
                    noise: 1.0,
                });
            }
        }
    }
    // The model's best value, confirmed with the full run count.
    let Some(best) = bayes.best(&seen) else {
        return Ok(());
    };
    let change = base.change.with_value(&num.knob, &value_str(best[0]));
    if change == base.change {
        return Ok(());
    }
    let mut cand = base.clone();
    cand.change = change.clone();
    cand.reason = format!(
        "{}; {} = {} chosen by the search over {} values",
        base.reason,
        num.knob,
        value_str(best[0]),
        num.values.len()
    );
    cand.numeric = None;
    let cap = match venue {
        Venue::Host => s.req.max_runs,
        Venue::Lab => 2 * s.req.lab_runs,
    };
    loop {
        let n = s.pooled(&cand).map_or(0, |ab| ab.candidate.values.len());
        if n >= cap || !s.can_run(venue) {
            break;
        }
        let runs = s.runs_for(venue).min(cap - n).max(4);
        if let Err(why) = s.run(&change, venue, runs, "confirm")? {
            outcomes.push(Outcome {
                candidate: cand,
                ab: None,
                fate: format!("failed to confirm: {why}"),
                proven: false,
            });
            return Ok(());
        }
        if s.pooled(&cand).is_some_and(|ab| proven(&ab, min)) {
            break;
        }
    }
    let ab = s.pooled(&cand);
    let is_proven = ab.as_ref().is_some_and(|ab| proven(ab, min));
    if let Some(o) = outcomes.iter_mut().find(|o| o.candidate.change == change) {
        o.proven = is_proven;
        o.fate = if is_proven {
            "proven after the search's confirmation".into()
        } else {
            "not proven after the search's confirmation".into()
        };
        return Ok(());
    }
    outcomes.push(Outcome {
        candidate: cand,
        ab,
        fate: if is_proven {
            "proven after the search's confirmation".into()
        } else {
            "not proven after the search's confirmation".into()
        },
        proven: is_proven,
    });
    Ok(())
}

struct Decision {
    winner: Option<Outcome>,
    text: String,
}

/// The proven candidate with the largest guaranteed improvement; host
/// candidates first (only they can be applied here).
fn decide(outcomes: &[Outcome], req: &TuneRequest, interrupted: bool) -> Decision {
    let min = req.criteria.min_effect_pct;
    let best = |venue: Venue| {
        outcomes
            .iter()
            .filter(|o| o.candidate.venue == venue)
            .filter(|o| o.ab.as_ref().is_some_and(|ab| proven(ab, min)))
            .max_by(|a, b| {
                let k = |o: &Outcome| {
                    o.ab.as_ref()
                        .and_then(|ab| ab.guaranteed_improvement_pct())
                        .unwrap_or(f64::NEG_INFINITY)
                };
                k(a).total_cmp(&k(b))
            })
    };
    if interrupted {
        return Decision {
            winner: None,
            text: "interrupted: nothing applied; every knob a trial changed was restored".into(),
        };
    }
    let host = best(Venue::Host);
    let lab = best(Venue::Lab);
    let lab_note = lab
        .map(|o| {
            format!(
                " In the lab VM (emulated timing), {} improved ({}); it cannot be applied to this host (its kernel refuses those knobs or has no sched_ext), and it is recorded for hosts that can.",
                o.candidate.change.describe(),
                o.ab.as_ref().map(|ab| ab.headline()).unwrap_or_default()
            )
        })
        .unwrap_or_default();
    match host {
        Some(o) => {
            let ab = o.ab.as_ref().expect("proven has an A/B");
            let verb = if req.apply { "apply it" } else { "advice only: nothing applied" };
            Decision {
                winner: Some(o.clone()),
                text: format!(
                    "{} is better: {} (at least {:+.1}% ≥ the {min}% minimum effect); {verb}.{lab_note}",
                    o.candidate.change.describe(),
                    ab.headline(),
                    ab.guaranteed_improvement_pct().unwrap_or(0.0)
                ),
            }
        }
        None => Decision {
            winner: lab.cloned(),
            text: format!(
                "keep the current configuration: no change tried on this host improved significantly by at least {min}% (every candidate's interval and verdict is in the table).{lab_note}"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ab(base: &[f64], cand: &[f64]) -> AbReport {
        AbReport::new(
            "w",
            Metric {
                name: "wall_time".into(),
                unit: "ms".into(),
                direction: schedcp_proto::workload::Better::Lower,
            },
            Arm::new("current", base.to_vec(), vec![]),
            Arm::new("cand", cand.to_vec(), vec![]),
            vec![],
            Setting::host("test"),
            Criteria {
                alpha: 0.05,
                min_effect_pct: MIN_EFFECT_PCT,
            },
        )
    }

    const BASE: [f64; 8] = [100.0, 101.0, 99.5, 100.5, 102.0, 98.5, 100.2, 101.1];

    #[test]
    fn proven_needs_the_interval_to_clear_the_minimum_effect() {
        // ~20 % faster, tight: proven.
        let fast: Vec<f64> = BASE.iter().map(|v| v * 0.8).collect();
        assert!(proven(&ab(&BASE, &fast), MIN_EFFECT_PCT));
        // ~1.5 % faster: may be significant, but its interval cannot clear 2 %.
        let slight: Vec<f64> = BASE.iter().map(|v| v * 0.985).collect();
        let r = ab(&BASE, &slight);
        assert!(!proven(&r, MIN_EFFECT_PCT));
        // Same values: hopeless (cannot reach 2 %).
        assert!(hopeless(&ab(&BASE, &BASE), MIN_EFFECT_PCT).is_some());
        // Clearly worse: hopeless, as a regression.
        let slow: Vec<f64> = BASE.iter().map(|v| v * 1.3).collect();
        assert!(hopeless(&ab(&BASE, &slow), MIN_EFFECT_PCT)
            .unwrap()
            .starts_with("regressed"));
    }

    #[test]
    fn a_significant_improvement_outranks_noisy_higher_medians() {
        // As seen on this host: significant at 4 runs a side, not yet proven.
        let base = [925.1, 813.9, 690.3, 759.9];
        let tight = ab(&base, &[683.9, 621.5, 597.2, 598.9]);
        assert!(tight.improved() && !proven(&tight, MIN_EFFECT_PCT));
        // A higher median improvement, but its runs span the baseline's.
        let noisy = ab(&base, &[400.0, 1300.0, 560.0, 610.0]);
        assert!(!noisy.improved());
        assert!(noisy.improvement_pct.unwrap() > tight.improvement_pct.unwrap());
        let (t, n) = (Rank::of(&tight), Rank::of(&noisy));
        assert_eq!(t.cmp(&n), std::cmp::Ordering::Greater);
        // Among equals in significance, the point estimate decides.
        let slight = ab(&base, &[900.0, 800.0, 700.0, 750.0]);
        assert_eq!(n.cmp(&Rank::of(&slight)), std::cmp::Ordering::Greater);
    }

    #[test]
    fn pooling_two_rounds_judges_all_runs() {
        let mut p = Pool::default();
        p.add(&ab(&BASE[..4], &[80.0, 81.0, 79.0, 80.5]));
        p.add(&ab(&BASE[4..], &[80.2, 80.9, 79.4, 80.1]));
        let r = p.ab("x", Criteria::default()).unwrap();
        assert_eq!(r.candidate.values.len(), 8);
        assert_eq!(r.baseline.values.len(), 8);
        assert!(r.improved());
    }

    #[test]
    fn requests_are_validated_with_precise_messages() {
        let mut r = TuneRequest::new("w");
        r.validate().unwrap();
        r.budget.trials = 0;
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("trial budget"));
        r = TuneRequest::new("w");
        r.runs = 2;
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("runs must be 4"));
        r = TuneRequest::new("w");
        r.budget.seconds = 1;
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("time budget"));
        r = TuneRequest::new("w");
        r.rules = false;
        assert!(r.validate().unwrap_err().to_string().contains("hand in"));
        r = TuneRequest::new("w");
        r.criteria.min_effect_pct = -1.0;
        assert!(r.validate().is_err());
    }

    #[test]
    fn values_print_as_knobs_take_them() {
        assert_eq!(value_str(1024.0), "1024");
        assert_eq!(value_str(0.5), "0.5");
    }
}
