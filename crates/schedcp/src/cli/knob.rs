//! `schedcp knob`: the knob catalogue and what this machine allows; read a
//! knob; trial a change set against the current settings; apply one
//! through the deploy daemon (canary, breaker, rollback); roll back.

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use schedcp::compare::{Criteria, Side};
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::knobs::catalog::{self, Group};
use schedcp::knobs::discover::{self, Availability};
use schedcp::knobs::Assignment;
use schedcp::tune::trial::{self, TrialReport, TrialRequest};
use serde::Serialize;

use super::deploy::{DeployArgs, Remote};
use super::output::{Output, Report};

#[derive(Debug, Subcommand)]
#[command(after_help = "\
A knob is one kernel setting from the catalogue (knobs/catalog.toml): fair
scheduler (sysctls, debugfs sched/ and its features), per-workload task
attributes and cgroup CPU control, memory (THP, vm.*), block I/O per device.
Each has a safe range, a risk class and the evidence for when it helps.

Examples:
  schedcp knob list --available             # what this machine allows
  schedcp knob show vm.dirty_ratio
  schedcp knob read block.vda.read_ahead_kb
  schedcp knob trial vm.swappiness=10 --workload mybuild --runs 8
  schedcp knob trial workload.policy=batch workload.nice=5 --workload mybuild
  schedcp knob apply thp.enabled=madvise --canary 2m --canary-workload mybuild
  schedcp knob rollback --reason \"latency alarms\"

Per-workload knobs (workload.*) go to the processes of one workload profile
(its command line, and everything they start), never to the whole machine.

Exit codes: 0 done (a trial: judged, whatever the verdict), 2 refused,
4 an applied change failed its canary and was rolled back.")]
pub enum KnobCommand {
    /// The catalogue, with what this machine allows and why not.
    List(ListArgs),
    /// One knob in full: access, safe values, risk, evidence.
    Show { name: String },
    /// A knob's current value (per-workload knobs: of the workload's cgroup or first process).
    Read {
        name: String,
        #[arg(long, value_name = "PROFILE")]
        workload: Option<String>,
    },
    /// A/B a change set against the current settings with a workload, interleaved; the machine is restored after.
    Trial(TrialArgs),
    /// Apply a change set through the daemon: baseline, apply, canary, automatic rollback.
    Apply(ApplyArgs),
    /// Roll the current change back to its last known-good (same as `schedcp deploy rollback`).
    Rollback {
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this group: fair, memory, block, workload.
    #[arg(long)]
    group: Option<String>,
    /// Only knobs this machine allows.
    #[arg(long)]
    available: bool,
}

#[derive(Debug, Args)]
pub struct TrialArgs {
    /// Assignments NAME=VALUE.
    #[arg(required = true, value_name = "NAME=VALUE")]
    knobs: Vec<String>,
    /// The workload measured: a workload profile (its processes get the
    /// workload.* knobs) or a built-in workload spec (`schedcp lab workloads`).
    #[arg(long)]
    workload: String,
    /// Runs a side, interleaved ABBA after one warm-up run a side.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(4..=50))]
    runs: u32,
    /// Significance level of the test (two-sided).
    #[arg(long, default_value_t = schedcp::compare::stats::DEFAULT_ALPHA)]
    alpha: f64,
    /// Smallest change of medians, in percent, that counts as a change.
    #[arg(long, default_value_t = schedcp::compare::stats::DEFAULT_MIN_EFFECT_PCT)]
    min_effect: f64,
    /// Where: `host`, `lab` (the sched_ext micro-VM: for knobs this host
    /// refuses; a built-in workload spec; emulated timing) or `auto` (the
    /// host when it allows every knob, else the lab).
    #[arg(long = "where", value_name = "PLACE", default_value = "auto")]
    place: String,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Assignments NAME=VALUE.
    #[arg(required = true, value_name = "NAME=VALUE")]
    knobs: Vec<String>,
    /// The workload profile whose processes get the workload.* knobs.
    #[arg(long, value_name = "PROFILE")]
    workload: Option<String>,
    /// Canary length: seconds or a duration (90s, 5m; default deploy.canary_s).
    #[arg(long, value_name = "DURATION", value_parser = super::deploy::parse_canary)]
    canary: Option<u64>,
    /// Workload run in each canary window (profile or lab workload spec).
    #[arg(long, value_name = "WORKLOAD")]
    canary_workload: Option<String>,
    /// Threshold override, NAME=VALUE (see `schedcp deploy --help`).
    #[arg(long, value_name = "NAME=VALUE")]
    kpi: Vec<String>,
    #[command(flatten)]
    remote: Remote,
}

pub fn run(cfg: Config, c: KnobCommand, out: Output) -> Result<i32, Error> {
    match c {
        KnobCommand::List(a) => list(a, out),
        KnobCommand::Show { name } => {
            let a = discover::one(&name)?;
            out.emit(&Shown(a))?;
            Ok(exit::OK)
        }
        KnobCommand::Read { name, workload } => {
            let value = match &workload {
                Some(w) => {
                    let r = catalog::resolve(&name)?;
                    let b = schedcp::deploy::deployer::workload_binding(&cfg, w)?;
                    schedcp::knobs::change::read_workload(&r, &b)?
                }
                None => discover::read(&name)?,
            };
            out.emit(&Read {
                knob: name,
                workload,
                value,
            })?;
            Ok(exit::OK)
        }
        KnobCommand::Trial(a) => run_trial(&cfg, a, out),
        KnobCommand::Apply(a) => {
            let knobs = a
                .knobs
                .iter()
                .map(|k| Assignment::parse(k, a.workload.as_deref()))
                .collect::<Result<Vec<_>, _>>()?;
            let args = DeployArgs {
                command: None,
                token: None,
                token_file: None,
                object: None,
                canary: a.canary,
                kpi: a.kpi,
                workload: a.canary_workload,
                knobs: a.knobs,
                knob_workload: a.workload,
                remote: a.remote.clone(),
            };
            super::deploy::deploy_change(&cfg, &a.remote, None, knobs, &args, out)
        }
        KnobCommand::Rollback { reason, remote } => {
            super::deploy::rollback(&cfg, &remote, &reason, out)
        }
    }
}

fn list(a: ListArgs, out: Output) -> Result<i32, Error> {
    let group = a
        .group
        .as_deref()
        .map(|g| {
            Group::ALL
                .into_iter()
                .find(|x| x.as_str() == g)
                .ok_or_else(|| {
                    Error::Input(format!(
                        "unknown group '{g}'; groups: fair, memory, block, workload"
                    ))
                })
        })
        .transpose()?;
    let all = discover::list();
    let groups = discover::groups(&all);
    let knobs: Vec<Availability> = all
        .into_iter()
        .filter(|k| group.is_none_or(|g| k.group == g))
        .filter(|k| !a.available || k.available)
        .collect();
    out.emit(&Listing { groups, knobs })?;
    Ok(exit::OK)
}

#[derive(Serialize)]
struct Listing {
    groups: Vec<discover::GroupSummary>,
    knobs: Vec<Availability>,
}

impl Report for Listing {
    fn render(&self) -> String {
        let mut s = String::new();
        for k in &self.knobs {
            let state = match (&k.available, &k.current, &k.reason) {
                (true, Some(v), _) => format!("= {v}"),
                (true, None, _) => "available".into(),
                (false, _, Some(r)) => format!("unavailable: {r}"),
                (false, _, None) => "unavailable".into(),
            };
            let _ = writeln!(
                s,
                "{:<38} {:<8} {:<6} {}",
                k.name,
                k.group.as_str(),
                format!("{:?}", k.knob.risk).to_lowercase(),
                state
            );
        }
        s.push('\n');
        for g in &self.groups {
            let _ = writeln!(
                s,
                "{:<9} {}/{} available here{}",
                g.group.as_str(),
                g.available,
                g.total,
                if g.unavailable_because.is_empty() {
                    String::new()
                } else {
                    format!("; not: {}", g.unavailable_because.join("; "))
                }
            );
        }
        s
    }
}

#[derive(Serialize)]
struct Shown(Availability);

impl Report for Shown {
    fn render(&self) -> String {
        let a = &self.0;
        let k = &a.knob;
        let mut s = format!(
            "{}  ({}, {:?} scope, {:?} risk)\n",
            a.name,
            k.group.as_str(),
            k.scope,
            k.risk
        );
        let values = k.safe_values();
        let _ = writeln!(s, "  safe values  {values}");
        if let Some(p) = &k.path {
            let _ = writeln!(s, "  path         {p}");
        }
        let _ = writeln!(s, "  kernels      {}", k.kernels);
        let _ = writeln!(
            s,
            "  here         {}",
            if a.available {
                a.current
                    .as_deref()
                    .map_or("available".to_string(), |v| format!("available, now {v}"))
            } else {
                format!("unavailable: {}", a.reason.as_deref().unwrap_or("-"))
            }
        );
        for (h, t) in [
            ("affects", &k.affects),
            ("helps when", &k.helps_when),
            ("hurts when", &k.hurts_when),
            ("evidence", &k.evidence),
        ] {
            let _ = writeln!(s, "  {h:<12} {t}");
        }
        s
    }
}

#[derive(Serialize)]
struct Read {
    knob: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    workload: Option<String>,
    value: String,
}

impl Report for Read {
    fn render(&self) -> String {
        format!("{}\n", self.value)
    }
}

fn run_trial(cfg: &Config, a: TrialArgs, out: Output) -> Result<i32, Error> {
    let criteria = Criteria {
        alpha: a.alpha,
        min_effect_pct: a.min_effect,
    };
    criteria.validate().map_err(Error::Input)?;
    let knobs = a
        .knobs
        .iter()
        .map(|k| Assignment::parse(k, Some(&a.workload)))
        .collect::<Result<Vec<_>, _>>()?;
    let req = TrialRequest {
        knobs,
        workload: a.workload.clone(),
        runs: a.runs as usize,
        criteria,
    };
    if trial::choose_place(&req, a.place.parse()?)? == trial::Place::Lab {
        return run_lab_trial(cfg, &req, out);
    }
    // Knob trials change this machine: root only, checked before anything.
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Input(
            "a knob trial writes kernel settings: run it as root (or through the daemon's knob_trial tool)".into(),
        ));
    }
    let (plan, workload) = trial::admit(cfg, &req)?;
    // Ctrl-C ends the trial between runs, and everything is put back.
    schedcp::host::interrupt::install();
    let pb = out.spinner();
    pb.set_message(format!("trial of {}: warming up", plan.describe()));
    let on = |i: usize, n: usize, side: Side, r: Result<f64, &str>| {
        let who = match side {
            Side::Baseline => "current",
            Side::Candidate => "candidate",
        };
        pb.set_message(match r {
            Ok(v) => format!("run {i}/{n} ({who}): {v:.2}"),
            Err(e) => format!("run {i}/{n} ({who}) failed: {e}"),
        });
    };
    let r = trial::run_host(cfg, plan, &workload, &req, &on);
    pb.finish_and_clear();
    let r = r?;
    out.emit(&r)?;
    Ok(if r.restored { exit::OK } else { exit::FAILURE })
}

fn run_lab_trial(cfg: &Config, req: &TrialRequest, out: Output) -> Result<i32, Error> {
    let (writes, spec) = trial::admit_lab(req)?;
    let pb = out.spinner();
    let total = 2 + 2 * req.runs;
    let mut done = 0usize;
    let r = trial::run_lab(cfg, writes, spec, req, &mut |p| {
        if let schedcp::lab::Progress::Guest(schedcp_proto::report::GuestMessage::Run { .. }) = p {
            done += 1;
            pb.set_message(format!("lab VM: run {} of {total} finished", done + 1));
        } else if let schedcp::lab::Progress::Phase(ph) = p {
            pb.set_message(format!("lab VM: {ph}"));
        }
    });
    pb.finish_and_clear();
    let r = r?;
    out.emit(&r)?;
    // A run the guest kernel refused is a failure, not a verdict.
    let failed = !r.ab.baseline.failures.is_empty() || !r.ab.candidate.failures.is_empty();
    Ok(if failed { exit::FAILURE } else { exit::OK })
}

/// The judged A/B with the restore outcome.
impl Report for TrialReport {
    fn render(&self) -> String {
        let mut s = self.ab.render();
        let _ = writeln!(
            s,
            "{}",
            if self.place != "host" {
                "this machine was not touched: the knobs were set inside the lab VM".to_string()
            } else if self.restored {
                "every knob is back to its prior value".to_string()
            } else {
                format!(
                    "RESTORE FAILED: {}",
                    self.restore_error.as_deref().unwrap_or("-")
                )
            }
        );
        s
    }
}
