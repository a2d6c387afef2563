//! The main job on embedded defaults, end to end:
//!
//! 1. every built-in scheduler against the kernel default on the workload
//!    it was written for, both sides in one lab boot, judged by the one
//!    comparison engine;
//! 2. the winner — only a significant improvement qualifies, the largest
//!    guaranteed gain (lower end of its interval) wins — is verified (every
//!    stage, a signed token);
//! 3. it is deployed on a [`DeployTarget`] (the CLI passes a lab node: a
//!    micro-VM whose daemon is this schedcp) under a canary running that
//!    workload, and rolled back by hand at the end.
//!
//! Without a significant winner the job says "keep the kernel default" and
//! shows the evidence; nothing is verified or deployed.

use std::time::Duration;

use serde::Serialize;

use crate::compare::{self, AbReport, Criteria};
use crate::config::Config;
use crate::deploy::{DeployState, Deployment};
use crate::error::Error;
use crate::lab::compare::{CompareRequest, Contender};
use crate::lab::{Lab, Progress as LabProgress, SchedulerRef};
use crate::verify::pipeline::{object_store, Options};
use crate::verify::report::VerifyReport;
use crate::verify::{service, token};

/// Each built-in scheduler on the workload it was written for.
pub const PAIRS: &[(&str, &str)] = &[
    ("batch", "batch"),
    ("latency", "wakeup"),
    ("vtime", "pingpong"),
    ("fifo", "batch"),
];

/// The canary of the deployment: short; the target judges it in windows.
pub const CANARY_S: u64 = 10;

/// Runs a side in the winner's verification: enough for the test to speak.
const VERIFY_RUNS: usize = 4;

/// Where a verified winner is deployed (the CLI passes a lab node; this
/// layer does not start one).
pub trait DeployTarget {
    /// `lab node (kernel …)`.
    fn describe(&self) -> String;
    /// Deploy under a canary and wait for the verdict.
    fn deploy(
        &self,
        token: &str,
        object: &[u8],
        canary_s: u64,
        workload: &str,
    ) -> Result<Deployment, Error>;
    fn rollback(&self, reason: &str) -> Result<Deployment, Error>;
}

#[derive(Debug, Clone)]
pub struct MainJobOptions {
    /// Runs a side in each comparison.
    pub runs: usize,
    /// Stop after the comparisons.
    pub deploy: bool,
    pub criteria: Criteria,
}

/// Starts the deploy target when a winner needs one; gets a progress sink.
pub type StartTarget<'a> = dyn Fn(&dyn Fn(&str)) -> Result<Box<dyn DeployTarget>, Error> + 'a;

/// What happened, as it happens: the CLI renders these.
pub enum Step<'a> {
    /// Work under way (for a spinner).
    Progress(&'a str),
    Compared(&'a AbReport),
    Decided(&'a str),
    Verified(&'a VerifyReport),
    TargetUp {
        what: &'a str,
        boot_s: f64,
    },
    Deployed(&'a Deployment),
    RolledBack(&'a Deployment),
}

#[derive(Debug, Clone, Serialize)]
pub struct MainJobReport {
    /// One per built-in scheduler, in [`PAIRS`] order.
    pub comparisons: Vec<AbReport>,
    /// The significant winner's scheduler, if any.
    pub winner: Option<String>,
    /// The decision in words, with its evidence.
    pub decision: String,
    /// Absent without a winner, or when asked to stop after comparing.
    pub deploy: Option<MainJobDeploy>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MainJobDeploy {
    pub policy: String,
    pub workload: String,
    pub verify: VerifyReport,
    /// Where it was deployed (`lab node (kernel …)`).
    pub target: Option<String>,
    pub target_boot_s: Option<f64>,
    /// The deployment's verdict: active after its canary, or rolled back.
    pub deployment: Option<Deployment>,
    /// The manual rollback that ends the job when the canary passed.
    pub rollback: Option<Deployment>,
}

impl MainJobReport {
    /// Every comparison ran all its runs, and what was deployed behaved.
    pub fn clean(&self) -> bool {
        self.comparisons
            .iter()
            .all(|c| c.baseline.failures.is_empty() && c.candidate.failures.is_empty())
    }
}

/// Run the main job. `target` starts the deploy target when a winner needs
/// one.
pub fn run(
    cfg: &Config,
    opts: &MainJobOptions,
    target: &StartTarget<'_>,
    on: &(dyn Fn(Step<'_>) + Sync),
) -> Result<MainJobReport, Error> {
    let lab = Lab::new(cfg.clone());
    let mut comparisons = Vec::new();
    for (policy, workload) in PAIRS {
        let req = CompareRequest {
            baseline: Contender {
                policy: SchedulerRef::Default,
                tunables: vec![],
                knobs: vec![],
            },
            candidate: Contender {
                policy: SchedulerRef::Builtin(policy.to_string()),
                tunables: vec![],
                knobs: vec![],
            },
            workload: workload
                .parse()
                .map_err(|e: schedcp_proto::workload::SpecError| Error::Internal(e.into()))?,
            runs: opts.runs,
            criteria: opts.criteria,
            vcpus: cfg.lab.vcpus,
            mem_mib: cfg.lab.mem_mib,
            run_timeout: Duration::from_secs(cfg.lab.timeout_s),
            accel: cfg.lab.accel,
        };
        let mut done = 0usize;
        let total = 2 + 2 * opts.runs;
        let cmp = lab.compare(&req, &mut |p| match p {
            LabProgress::Phase(m) => on(Step::Progress(&format!("{policy} vs default: {m}"))),
            LabProgress::Guest(schedcp_proto::report::GuestMessage::Run { .. }) => {
                done += 1;
                on(Step::Progress(&format!(
                    "{policy} vs default on {workload}: run {} of {total}",
                    done + 1
                )))
            }
            LabProgress::Guest(_) => {}
        })?;
        on(Step::Compared(&cmp.ab));
        comparisons.push(cmp.ab);
    }
    let winner = compare::best(&comparisons).cloned();
    let decision = match &winner {
        Some(w) => format!(
            "{} is the significant winner ({}): verify it, then deploy it",
            w.candidate.label,
            w.headline()
        ),
        None => "keep the kernel default: no built-in scheduler improved significantly on its workload (every verdict and interval is above)".into(),
    };
    on(Step::Decided(&decision));
    let mut report = MainJobReport {
        comparisons,
        winner: winner.as_ref().map(|w| w.candidate.label.clone()),
        decision,
        deploy: None,
    };
    if let (Some(w), true) = (winner, opts.deploy) {
        report.deploy = Some(verify_and_deploy(cfg, &w, target, on)?);
    }
    Ok(report)
}

fn verify_and_deploy(
    cfg: &Config,
    w: &AbReport,
    target: &StartTarget<'_>,
    on: &(dyn Fn(Step<'_>) + Sync),
) -> Result<MainJobDeploy, Error> {
    let policy = w.candidate.label.clone();
    let opts = Options {
        workloads: vec![w
            .subject
            .parse()
            .map_err(|e: schedcp_proto::workload::SpecError| Error::Internal(e.into()))?],
        runs: VERIFY_RUNS,
        vcpus: cfg.lab.vcpus,
        mem_mib: cfg.lab.mem_mib,
        vm_timeout: Duration::from_secs(cfg.lab.timeout_s),
        token_ttl: token::DEFAULT_TTL,
    };
    let subject = service::subject(cfg, &policy)?;
    let verify = service::verify_all(cfg, &[subject], &opts, 1, &|_, m| {
        on(Step::Progress(&format!("verify {policy}: {m}")))
    })?
    .pop()
    .expect("one subject, one result")?;
    on(Step::Verified(&verify));
    let mut out = MainJobDeploy {
        policy: policy.clone(),
        workload: w.subject.clone(),
        verify,
        target: None,
        target_boot_s: None,
        deployment: None,
        rollback: None,
    };
    let (Some(tok), Some(sha)) = (out.verify.token.clone(), out.verify.object_sha256.clone())
    else {
        on(Step::Decided(
            "not verified, so not deployed: a scheduler without a token never attaches",
        ));
        return Ok(out);
    };
    let object = std::fs::read(object_store(cfg).join(format!("{sha}.bpf.o")))
        .map_err(|e| Error::Setup(format!("reading the verified object: {e}")))?;
    let t = std::time::Instant::now();
    let node = target(&|m| on(Step::Progress(m)))?;
    let what = node.describe();
    out.target_boot_s = Some(t.elapsed().as_secs_f64());
    on(Step::TargetUp {
        what: &what,
        boot_s: t.elapsed().as_secs_f64(),
    });
    out.target = Some(what);
    on(Step::Progress(&format!(
        "deploying {policy}: baseline, switch, {CANARY_S} s canary running {}",
        w.subject
    )));
    let d = node.deploy(&tok, &object, CANARY_S, &w.subject)?;
    on(Step::Deployed(&d));
    if d.state == DeployState::Active {
        let r = node.rollback("end of the main job")?;
        on(Step::RolledBack(&r));
        out.rollback = Some(r);
    }
    out.deployment = Some(d);
    Ok(out)
}
