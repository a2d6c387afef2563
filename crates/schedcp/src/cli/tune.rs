//! `schedcp tune`: the decision engine ([`schedcp::tune::engine`]) from
//! the command line — on a workload profile, on a command, or (with
//! neither) on the bundled workload, which is schedcp's main job.

use std::sync::Mutex;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use schedcp::compare::Criteria;
use schedcp::config::Config;
use schedcp::deploy::{DeployState, Deployment};
use schedcp::error::{exit, Error};
use schedcp::knobs::Assignment;
use schedcp::observe::workload_profiles;
use schedcp::store::Store;
use schedcp::tune::engine::{self, Applier, Budget, TuneRequest};
use schedcp::tune::{apply, demo, record, report, Candidate, Change, Event, Venue};
use serde_json::json;

use super::deploy::Remote;
use super::output::{Output, Report};

const AFTER_HELP: &str = "\
Examples:
  schedcp tune                          the main job: the bundled workload (a build-like batch of
                                        CPU jobs next to a noisy neighbour), tuned for real on this
                                        host, the winner applied under a canary, then rolled back
  schedcp tune mybuild --advice         recommend and trial, apply nothing
  schedcp tune mybuild --trials 20 --budget 45m
  schedcp tune -- make -j4              tune a command (it becomes profile cmd-<hash>)
  schedcp tune mybuild --candidate workload.nice=-5 --candidate vm.swappiness=10,vm.dirty_ratio=40
  schedcp tune mybuild --scheduler latency --no-rules
  schedcp tune show 12                  a past session's report

Each trial is an interleaved A/B against the current configuration (one warm-up a side), judged
by the comparison engine; a change is applied only when its improvement is significant and the
lower end of its 95% interval clears --min-effect. Knob trials run on this host and restore every
value after each block, on failure, on Ctrl-C, and (from the journal) at the next start after a
kill. Schedulers and knobs this host refuses are trialled in the lab VM (emulated timing), as
evidence; they are never applied here.";

#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct TuneArgs {
    /// A workload profile (`schedcp observe workload list`), `show ID` for a
    /// past session, or nothing for the bundled workload.
    #[arg(value_name = "PROFILE")]
    target: Vec<String>,
    /// A command to tune (after `--`; no shell): registered as profile cmd-<hash>.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
    /// Recommend and trial, apply nothing.
    #[arg(long)]
    advice: bool,
    /// Only the signature and the rules' candidates: no trials.
    #[arg(long, conflicts_with = "advice")]
    recommend: bool,
    /// Trial budget (one trial: one interleaved A/B block of one candidate).
    #[arg(long, default_value_t = 12, value_name = "N")]
    trials: usize,
    /// Time budget: seconds or a duration (90s, 30m, 2h).
    #[arg(long, default_value = "30m", value_name = "DURATION", value_parser = super::deploy::parse_canary)]
    budget: u64,
    /// Runs a side in a candidate's first trial (each further round adds as many).
    #[arg(long, default_value_t = 4)]
    runs: usize,
    /// Pooled runs a side at most per candidate.
    #[arg(long, default_value_t = 16)]
    max_runs: usize,
    /// Runs a side in a lab trial.
    #[arg(long, default_value_t = 6)]
    lab_runs: usize,
    /// The smallest improvement (%) worth applying: the interval's lower end must clear it.
    #[arg(long, default_value_t = engine::MIN_EFFECT_PCT)]
    min_effect: f64,
    /// Significance level.
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// A knob change set to trial too: NAME=VALUE[,NAME=VALUE…], or a
    /// library knob set by name (`knobs_…`, what an earlier tune proved;
    /// its workload knobs aim at this workload). Repeatable.
    #[arg(long, value_name = "SET")]
    candidate: Vec<String>,
    /// A scheduler to trial too: NAME[:TUNABLE=VALUE,…] (repeatable; in the lab here).
    #[arg(long, value_name = "POLICY")]
    scheduler: Vec<String>,
    /// Only the candidates handed in with --candidate / --scheduler.
    #[arg(long)]
    no_rules: bool,
    /// No trials in the lab VM.
    #[arg(long)]
    no_lab: bool,
    /// Canary of the applied change: seconds or a duration.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = super::deploy::parse_canary)]
    canary: u64,
    #[command(flatten)]
    remote: Remote,
}

pub fn run(cfg: Config, a: TuneArgs, out: Output) -> Result<i32, Error> {
    if a.target.first().map(String::as_str) == Some("show") {
        return show(&cfg, &a, out);
    }
    if a.target.len() > 1 {
        return Err(Error::Input(format!(
            "one workload profile at a time, got {}: {}",
            a.target.len(),
            a.target.join(" ")
        )));
    }
    if !a.target.is_empty() && !a.command.is_empty() {
        return Err(Error::Input(
            "give a profile or a command after --, not both".into(),
        ));
    }
    // Trials write kernel settings: root only, checked before anything.
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Input(
            "tune trials write kernel settings: run it as root (or through the daemon's tune tool)"
                .into(),
        ));
    }
    let bundled = a.target.is_empty() && a.command.is_empty();
    let workload = match (a.target.first(), bundled) {
        (Some(p), _) => p.clone(),
        (None, false) => command_profile(&cfg, &a.command)?,
        (None, true) => demo::profile(&cfg)?,
    };
    let req = request(&cfg, &a, &workload)?;
    req.validate()?;
    // The bundled workload shares the machine with its neighbour for the
    // whole job: signature, trials and canary.
    let neighbour = if bundled {
        let n = demo::Neighbour::start(schedcp::observe::sample::nr_cpus())?;
        if out.streams_text() && !out.quiet {
            eprintln!(
                "bundled workload: {} ({}), next to {}",
                workload,
                demo::SPEC,
                n.describe()
            );
        }
        Some(n)
    } else {
        None
    };
    if a.recommend {
        return recommend(&cfg, &req, out);
    }
    // Where a winner goes: the daemon when one answers; for the bundled
    // workload without a daemon, a controller in this process.
    let daemon = (!a.advice)
        .then(|| Daemon::probe(&cfg, &a.remote))
        .flatten();
    let in_process = match (&daemon, a.advice, bundled) {
        (None, false, true) => Some(apply::InProcess::start(&cfg)?),
        (None, false, false) => {
            return Err(Error::Input(format!(
                "no daemon answers on {} to apply a winner under its canary: start it (`schedcp serve`, or `systemctl start schedcp`), or run with --advice to apply nothing",
                cfg.api.socket.display()
            )))
        }
        _ => None,
    };
    let applier: Option<&dyn Applier> = match (&daemon, &in_process) {
        (Some(d), _) => Some(d),
        (None, Some(p)) => Some(p),
        _ => None,
    };
    schedcp::host::interrupt::install();
    let ui = Ui::new(out, req.budget.trials);
    let r = engine::run(&cfg, &req, applier, &|e| ui.event(e));
    ui.finish();
    let mut r = r?;
    let dir = cfg.state_dir().join("tune").join(r.session.to_string());
    match report::write_charts(&dir, &r) {
        Ok(paths) => r.charts = paths.iter().map(|p| p.display().to_string()).collect(),
        Err(e) => tracing::warn!("charts not written: {e}"),
    }
    // The bundled workload has no life after the job: put the machine back.
    if let (Some(p), Some(d)) = (&in_process, &r.applied) {
        if d.state == DeployState::Active {
            let rb = p.rollback("end of the main job: the bundled workload is a demonstration")?;
            r.rollback = Some(format!(
                "rolled back at the end of the main job (deployment #{} is {}: every prior value restored); for your own workload, `schedcp tune PROFILE` with the daemon running keeps the winner, and `schedcp knob rollback --reason …` undoes it",
                rb.id,
                rb.state.as_str()
            ));
        }
    }
    drop(neighbour);
    if let Err(e) = std::fs::write(
        dir.join("report.json"),
        serde_json::to_vec_pretty(&r).unwrap_or_default(),
    ) {
        tracing::warn!("report.json not written: {e}");
    }
    out.emit(&r)?;
    if r.stopped.as_deref() == Some("interrupted") {
        eprintln!("schedcp: interrupted: nothing applied; every knob a trial changed was restored");
    }
    Ok(match &r.applied {
        Some(d) if d.state == DeployState::RolledBack => exit::SCHEDULER,
        _ if r.stopped.as_deref() == Some("interrupted") => exit::FAILURE,
        _ => exit::OK,
    })
}

fn request(cfg: &Config, a: &TuneArgs, workload: &str) -> Result<TuneRequest, Error> {
    let mut req = TuneRequest::new(workload);
    req.budget = Budget {
        trials: a.trials,
        seconds: a.budget,
    };
    req.apply = !a.advice;
    req.criteria = Criteria {
        alpha: a.alpha,
        min_effect_pct: a.min_effect,
    };
    req.runs = a.runs;
    req.max_runs = a.max_runs;
    req.lab_runs = a.lab_runs;
    req.rules = !a.no_rules;
    req.lab = !a.no_lab;
    req.canary_s = a.canary;
    for set in &a.candidate {
        // No '=': a knob set from the library, by name.
        if !set.contains('=') {
            let change = schedcp::tune::library::knob_set_change(cfg, set.trim(), workload)?;
            req.candidates.push(handed_in(change));
            continue;
        }
        let knobs = set
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|k| Assignment::parse(k, Some(workload)))
            .collect::<Result<Vec<_>, _>>()?;
        if knobs.is_empty() {
            return Err(Error::Input(format!(
                "--candidate '{set}' has no assignment"
            )));
        }
        // Admission's checks now, so a typo fails before the signature run.
        for k in &knobs {
            let r = schedcp::knobs::catalog::resolve(&k.knob)?;
            schedcp::knobs::value::canonical(r.knob, &r.name, &k.value)?;
        }
        req.candidates.push(handed_in(Change::Knobs { knobs }));
    }
    for s in &a.scheduler {
        let (policy, tunables) = match s.split_once(':') {
            Some((p, t)) => (
                p.to_string(),
                t.split(',').map(str::to_string).collect::<Vec<_>>(),
            ),
            None => (s.clone(), vec![]),
        };
        if !schedcp::bpf::builtin::names().contains(&policy.as_str()) && !policy.ends_with(".c") {
            let known = schedcp::policies::Library::open(cfg).and_then(|l| {
                l.get(&schedcp::policies::model::PolicyRef {
                    name: policy.clone(),
                    version: None,
                })
            });
            if known.is_err() {
                return Err(Error::Input(format!(
                    "--scheduler '{policy}': not a built-in scheduler ({}), a library policy (`schedcp policy list`) nor a .c file",
                    schedcp::bpf::builtin::names().join(", ")
                )));
            }
        }
        req.candidates
            .push(handed_in(Change::Scheduler { policy, tunables }));
    }
    Ok(req)
}

fn handed_in(change: Change) -> Candidate {
    Candidate {
        change,
        source: schedcp::tune::candidate::Source::Agent,
        reason: "handed in".into(),
        score: 0.5,
        evidence: None,
        numeric: None,
        venue: Venue::Host,
    }
}

/// `-- COMMAND…` as a profile named by its command line and directory.
fn command_profile(cfg: &Config, argv: &[String]) -> Result<String, Error> {
    demo::command_profile(
        cfg,
        "cmd",
        format!("registered by schedcp tune: {}", argv.join(" ")),
        argv.to_vec(),
        std::env::current_dir().ok(),
        workload_profiles::DEFAULT_COMMAND_TIMEOUT_S,
    )
}

/// `--recommend`: the signature and the ranked candidates, no trials.
fn recommend(cfg: &Config, req: &TuneRequest, out: Output) -> Result<i32, Error> {
    let ctx = engine::context(cfg, &req.workload, req.lab)?;
    let pb = out.spinner();
    pb.set_message("taking the workload's signature (one run, probes attached)");
    let sig = engine::take_signature(cfg, &req.workload);
    pb.finish_and_clear();
    let sig = sig?;
    let mut rec = schedcp::tune::rules::recommend(&sig, &ctx);
    let store = Store::open_in(&cfg.state_dir())?;
    record::reorder(&store, &sig, &mut rec.candidates)?;
    out.emit(&Recommended {
        workload: req.workload.clone(),
        signature: sig,
        recommendation: rec,
    })?;
    Ok(exit::OK)
}

#[derive(serde::Serialize)]
struct Recommended {
    workload: String,
    signature: schedcp::observe::signature::Signature,
    recommendation: schedcp::tune::rules::Recommendation,
}

impl Report for Recommended {
    fn render(&self) -> String {
        let mut s = format!(
            "workload: {}\nsignature: {}\n",
            self.workload,
            self.signature.describe()
        );
        for f in &self.recommendation.fired {
            s.push_str(&format!("rule {}: {} — {}\n", f.rule, f.title, f.reason));
        }
        if self.recommendation.fired.is_empty() {
            s.push_str("no rule fired: nothing in this signature points at a change\n");
        }
        for (i, c) in self.recommendation.candidates.iter().enumerate() {
            s.push_str(&format!(
                "{:>2}. {:<44} {:<26} score {:.2}{}\n",
                i + 1,
                c.change.describe(),
                c.venue.as_str(),
                c.score,
                c.evidence
                    .as_ref()
                    .map(|e| format!(" — {e}"))
                    .unwrap_or_default()
            ));
        }
        for u in &self.recommendation.unplaced {
            s.push_str(&format!("    not trialled: {u}\n"));
        }
        s
    }
}

fn show(cfg: &Config, a: &TuneArgs, out: Output) -> Result<i32, Error> {
    let store = Store::open_in(&cfg.state_dir())?;
    let Some(id) = a.target.get(1) else {
        out.emit(&Sessions(record::sessions(&store, 20)?))?;
        return Ok(exit::OK);
    };
    let id: i64 = id
        .parse()
        .map_err(|_| Error::Input(format!("'{id}' is not a session number")))?;
    let v = record::report(&store, id)?
        .ok_or_else(|| Error::NotFound(format!("no finished tune session {id}")))?;
    out.emit(&Stored(v))?;
    Ok(exit::OK)
}

/// A stored session: its report, and the text it rendered when it ended.
#[derive(serde::Serialize)]
struct Stored(serde_json::Value);

impl Report for Stored {
    fn render(&self) -> String {
        self.0["text"].as_str().unwrap_or_default().to_string()
    }
}

#[derive(serde::Serialize)]
struct Sessions(Vec<record::SessionRow>);

impl Report for Sessions {
    fn render(&self) -> String {
        let mut s = String::new();
        if self.0.is_empty() {
            s.push_str("no tune sessions yet\n");
        }
        for v in &self.0 {
            s.push_str(&format!(
                "#{:<4} {}  {:<7} {:<24} {}\n",
                v.session,
                v.started_at,
                v.mode,
                v.workload,
                v.decision.as_deref().unwrap_or("(unfinished)")
            ));
        }
        s
    }
}

/// The daemon as a deploy target.
struct Daemon<'a> {
    cfg: &'a Config,
    remote: &'a Remote,
}

impl<'a> Daemon<'a> {
    /// The daemon, if one answers.
    fn probe(cfg: &'a Config, remote: &'a Remote) -> Option<Daemon<'a>> {
        super::deploy::call(cfg, remote, "deploy_status", json!({}))
            .ok()
            .map(|_| Daemon { cfg, remote })
    }
}

impl Applier for Daemon<'_> {
    fn describe(&self) -> String {
        match &self.remote.url {
            Some(u) => format!("the daemon at {u}"),
            None => format!("the daemon on {}", self.cfg.api.socket.display()),
        }
    }

    fn apply(
        &self,
        knobs: Vec<Assignment>,
        canary_s: u64,
        workload: &str,
    ) -> Result<Deployment, Error> {
        super::deploy::deploy_job(
            self.cfg,
            self.remote,
            json!({
                "knobs": knobs,
                "canary_s": canary_s,
                "workload": workload,
                "wait_seconds": (canary_s + 600).min(3600),
            }),
        )
    }
}

/// Progress on stderr: a bar of trials, a line per finished trial.
struct Ui {
    bar: ProgressBar,
    text: bool,
    trials: Mutex<usize>,
}

impl Ui {
    fn new(out: Output, budget: usize) -> Ui {
        let text = out.streams_text() && !out.quiet;
        let bar = if text {
            let b = ProgressBar::new(budget as u64);
            b.set_style(
                ProgressStyle::with_template("{bar:24} {pos}/{len} trials [{elapsed}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.enable_steady_tick(std::time::Duration::from_millis(200));
            b
        } else {
            ProgressBar::hidden()
        };
        Ui {
            bar,
            text,
            trials: Mutex::new(0),
        }
    }

    fn line(&self, s: &str) {
        if self.text {
            self.bar.suspend(|| eprintln!("{s}"));
        }
        tracing::debug!("{s}");
    }

    fn event(&self, e: Event<'_>) {
        match e {
            Event::Note(m) => self.bar.set_message(m.to_string()),
            Event::Signature(s) => self.line(&format!("signature: {}", s.describe())),
            Event::Recommended(r) => {
                for f in &r.fired {
                    self.line(&format!("rule {} fired: {}", f.rule, f.reason));
                }
                self.line(&format!(
                    "{} candidate(s): {}",
                    r.candidates.len(),
                    r.candidates
                        .iter()
                        .map(|c| format!("{} ({})", c.change.describe(), c.venue.as_str()))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
            Event::TrialStarted {
                n,
                label,
                venue,
                runs,
                stage,
                ..
            } => self.bar.set_message(format!(
                "trial {n}: {label} on the {} ({stage}, {runs} runs a side)",
                venue.as_str()
            )),
            Event::Run { n, i, total, .. } => {
                self.bar.set_message(format!("trial {n}: run {i}/{total}"))
            }
            Event::TrialDone(t) => {
                *self.trials.lock().expect("ui") += 1;
                self.bar.inc(1);
                self.line(&format!(
                    "trial {} ({}, {}): {}",
                    t.n,
                    t.stage,
                    t.venue.as_str(),
                    t.ab.headline()
                ));
            }
            Event::Dropped { label, why } => self.line(&format!("  {label}: {why}")),
            Event::Decided(d) => self.line(&format!("decision: {d}")),
            Event::Applied(d) => self.line(&format!(
                "deployment #{}: {}{}",
                d.id,
                d.state.as_str(),
                d.reason
                    .as_ref()
                    .map(|r| format!(" — {r}"))
                    .unwrap_or_default()
            )),
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
