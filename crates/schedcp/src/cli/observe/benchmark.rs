//! `schedcp observe workload ...` and `schedcp observe benchmark`: the
//! feedback channel's CLI. Everything here parses arguments and prints; the
//! work is in `schedcp::observe::{profiles, benchmark, stats}`.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use schedcp::compare::stats::{
    Criteria, Method, Summary, Verdict, DEFAULT_ALPHA, DEFAULT_MIN_EFFECT_PCT,
};
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::lab::{Lab, Progress, SchedulerRef};
use schedcp::observe::benchmark::{
    self, BenchProgress, BenchmarkReport, BenchmarkRequest, History, MAX_RUNS,
};
use schedcp::observe::workload_profiles::{self, NewProfile, Removed, Target, WorkloadProfile};
use schedcp::store::Store;
use schedcp_proto::report::GuestMessage;
use schedcp_proto::workload::Better;
use serde::Serialize;

use super::super::output::{Output, Report};

#[derive(Debug, Subcommand)]
pub enum WorkloadCommand {
    /// Add a profile: a host command or a lab workload, and the metric to optimise.
    ///
    /// A command runs directly (no shell) and is timed wall-clock; a lab
    /// workload runs in the micro-VM and reports its own metrics (see
    /// `schedcp lab workloads`). Profiles cannot be edited, so that their
    /// benchmark history stays comparable: remove and re-add instead.
    ///
    /// Examples:
    ///   schedcp observe workload add build --cmd -- make -j2
    ///   schedcp observe workload add spin --cmd -- sh -c 'i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done'
    ///   schedcp observe workload add lat --lab wakeup:workers=8 --metric p99_wakeup_latency
    #[command(verbatim_doc_comment)]
    Add(AddArgs),
    /// List the workload profiles.
    List,
    /// Show one profile and its latest benchmark run-sets.
    Show { name: String },
    /// Remove a profile (with --force, also its benchmark history).
    Remove {
        name: String,
        /// Also delete the profile's benchmark run-sets.
        #[arg(long)]
        force: bool,
    },
    /// A profile's past benchmark run-sets, newest first (their ids are baselines).
    History {
        name: String,
        /// How many run-sets to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["cmd", "lab"])))]
pub struct AddArgs {
    /// Profile name: letters, digits, '_' and '-' (at most 64).
    name: String,
    /// Run the command given after `--` on the host; metric: wall_time (ms).
    #[arg(long)]
    cmd: bool,
    /// Run a built-in lab workload in the micro-VM: NAME[:key=value,...].
    #[arg(long, value_name = "SPEC")]
    lab: Option<String>,
    /// Metric to optimise (lab: one the workload reports; default: its primary metric).
    #[arg(long)]
    metric: Option<String>,
    /// Whether lower or higher is better (default: the metric's own).
    #[arg(long, value_enum)]
    direction: Option<Direction>,
    /// What the profile is for.
    #[arg(long, short, default_value = "")]
    description: String,
    /// Working directory of the command (default: the current directory).
    #[arg(long, value_name = "DIR", requires = "cmd")]
    cwd: Option<PathBuf>,
    /// Per-run limit of the command, in seconds; a run still going is killed and fails.
    #[arg(long, value_name = "S", requires = "cmd")]
    timeout: Option<u64>,
    /// The command and its arguments (after `--`).
    #[arg(last = true, value_name = "ARGV")]
    argv: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Direction {
    Lower,
    Higher,
}

impl From<Direction> for Better {
    fn from(d: Direction) -> Better {
        match d {
            Direction::Lower => Better::Lower,
            Direction::Higher => Better::Higher,
        }
    }
}

/// Run a workload profile N times; median, spread, and the verdict against a baseline.
///
/// Each run-set is recorded; `schedcp observe workload history NAME` lists
/// them, and any of their ids can be the --baseline of a later run. The
/// verdict comes from a two-sided Mann–Whitney U test (exact for up to 50
/// values in all) at --alpha, and a change smaller than --min-effect percent
/// counts as no change. With fewer than 4 runs a side nothing can be
/// significant at alpha 0.05, and the verdict says so.
///
/// Exit status: 0 when every run succeeded, 1 when some failed (the report
/// lists why), 2 for bad input, 3 for missing setup, 4 when a lab
/// profile's --policy does not compile.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct BenchmarkArgs {
    /// The workload profile to run.
    profile: String,
    /// How many times to run it.
    #[arg(long, short = 'n', default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RUNS)))]
    runs: u32,
    /// Compare with this earlier run-set of the same profile.
    #[arg(long, value_name = "ID")]
    baseline: Option<i64>,
    /// What is under test, recorded with the run-set (default: the host's
    /// scheduler for commands, the policy for lab profiles).
    #[arg(long)]
    label: Option<String>,
    /// Lab profiles: the scheduler to run under — `default`, a built-in name, or a .bpf.c path.
    #[arg(long)]
    policy: Option<String>,
    /// Significance level of the test.
    #[arg(long, default_value_t = DEFAULT_ALPHA)]
    alpha: f64,
    /// Smallest change of medians, in percent, that counts as a change.
    #[arg(long, value_name = "PCT", default_value_t = DEFAULT_MIN_EFFECT_PCT)]
    min_effect: f64,
    /// Command profiles: first take the workload's signature (its CPU /
    /// wakeup / I-O mix, run-queue latency, switches, faults, I/O) in a
    /// warm-up run with probes attached, not counted; kept with the profile
    /// and this run-set. Needs root (BPF probes).
    #[arg(long)]
    signature: bool,
}

pub fn run_workload(cfg: Config, c: WorkloadCommand, out: Output) -> Result<i32, Error> {
    let mut store = Store::open_in(&cfg.state_dir())?;
    match c {
        WorkloadCommand::Add(a) => return add(&mut store, a, out),
        WorkloadCommand::List => out.emit(&Profiles(workload_profiles::list(&store)?))?,
        WorkloadCommand::Show { name } => {
            out.emit(&Shown(benchmark::history(&store, &name, 5)?))?
        }
        WorkloadCommand::Remove { name, force } => {
            out.emit(&workload_profiles::remove(&mut store, &name, force)?)?
        }
        WorkloadCommand::History { name, limit } => out.emit(&RunSets {
            history: benchmark::history(&store, &name, limit)?,
            name,
        })?,
    }
    Ok(exit::OK)
}

/// `observe workload list`.
#[derive(Serialize)]
#[serde(transparent)]
struct Profiles(Vec<WorkloadProfile>);

impl Report for Profiles {
    fn render(&self) -> String {
        if self.0.is_empty() {
            return "no workload profiles; add one with `schedcp observe workload add`\n".into();
        }
        render_list(&self.0)
    }
}

/// `observe workload show`: the profile and its latest run-sets.
#[derive(Serialize)]
#[serde(transparent)]
struct Shown(History);

impl Report for Shown {
    fn render(&self) -> String {
        let mut s = render_profile(&self.0.profile);
        if let Some(p) = &self.0.signature {
            let _ = writeln!(
                s,
                "signature ({} at {}): {}",
                p.source,
                p.taken_at,
                p.signature
                    .as_ref()
                    .map_or("unreadable (another schedcp version)".into(), |x| x
                        .describe())
            );
        }
        if !self.0.entries.is_empty() {
            s.push_str("latest run-sets:\n");
            s.push_str(&render_history(&self.0));
        }
        s
    }
}

/// `observe workload remove`.
impl Report for Removed {
    fn render(&self) -> String {
        format!(
            "removed workload profile '{}'{}\n",
            self.profile.name,
            match self.run_sets {
                0 => String::new(),
                n => format!(" and its {n} benchmark run-set(s)"),
            }
        )
    }
}

/// `observe workload history`: the run-sets of profile `name`.
#[derive(Serialize)]
#[serde(transparent)]
struct RunSets {
    history: History,
    #[serde(skip)]
    name: String,
}

impl Report for RunSets {
    fn render(&self) -> String {
        if self.history.entries.is_empty() {
            return format!(
                "no benchmark run-sets of '{name}' yet; run `schedcp observe benchmark {name}`\n",
                name = self.name
            );
        }
        render_history(&self.history)
    }
}

/// `observe workload add`: the new profile.
#[derive(Serialize)]
#[serde(transparent)]
struct Added(WorkloadProfile);

impl Report for Added {
    fn render(&self) -> String {
        format!(
            "added workload profile '{}' (id {})\n{}",
            self.0.name,
            self.0.id,
            render_profile(&self.0)
        )
    }
}

impl Report for BenchmarkReport {
    fn render(&self) -> String {
        render_report(self)
    }
}

fn add(store: &mut Store, a: AddArgs, out: Output) -> Result<i32, Error> {
    let target = match (a.cmd, a.lab) {
        (true, _) => {
            if a.argv.is_empty() {
                return Err(Error::Input(
                    "--cmd needs the command after `--`, e.g. `--cmd -- make -j2`".into(),
                ));
            }
            let cwd = match a.cwd {
                Some(d) => d,
                // Record where the profile was made, so that a benchmark
                // started from anywhere (or by the daemon) runs the same thing.
                None => std::env::current_dir().map_err(|e| {
                    Error::Input(format!(
                        "cannot determine the current directory ({e}); pass --cwd"
                    ))
                })?,
            };
            Target::Command {
                argv: a.argv,
                cwd: Some(cwd),
                timeout_s: a
                    .timeout
                    .unwrap_or(workload_profiles::DEFAULT_COMMAND_TIMEOUT_S),
            }
        }
        (false, Some(spec)) => {
            if !a.argv.is_empty() {
                return Err(Error::Input(format!(
                    "a lab profile runs the workload '{spec}' in the micro-VM and takes no command after `--`"
                )));
            }
            Target::lab(&spec)?
        }
        // clap's required group rules this out.
        (false, None) => return Err(Error::Input("give --cmd -- ARGV... or --lab SPEC".into())),
    };
    let p = workload_profiles::add(
        store,
        NewProfile {
            name: a.name,
            description: a.description,
            target,
            metric: a.metric,
            direction: a.direction.map(Better::from),
        },
    )?;
    out.emit(&Added(p))?;
    Ok(exit::OK)
}

pub fn run_benchmark(cfg: Config, a: BenchmarkArgs, out: Output) -> Result<i32, Error> {
    let mut store = Store::open_in(&cfg.state_dir())?;
    let lab = Lab::new(cfg);
    let req = BenchmarkRequest {
        profile: a.profile,
        runs: a.runs,
        label: a.label,
        baseline: a.baseline,
        policy: a
            .policy
            .as_deref()
            .map_or(SchedulerRef::Default, SchedulerRef::parse),
        criteria: Criteria {
            alpha: a.alpha,
            min_effect_pct: a.min_effect,
        },
        signature: a.signature,
    };
    let pb = out.spinner();
    let mut current = String::new();
    let mut on_progress = |p: BenchProgress<'_>| {
        let msg = match p {
            BenchProgress::Run { run, runs } => {
                current = format!("run {run}/{runs}");
                current.clone()
            }
            BenchProgress::Lab(Progress::Phase(s)) => format!("{current}: {s}"),
            BenchProgress::Lab(Progress::Guest(GuestMessage::Step { step, ok, .. })) => {
                format!(
                    "{current}: {step:?} {}",
                    if *ok { "done" } else { "FAILED" }
                )
            }
            BenchProgress::Lab(Progress::Guest(_)) => return,
            BenchProgress::Done { sample, .. } => match (&sample.value, &sample.error) {
                (Some(v), _) => format!("{current}: {}", num(*v)),
                (None, Some(e)) => format!("{current} failed: {e}"),
                (None, None) => return,
            },
        };
        tracing::debug!("benchmark {}: {msg}", req.profile);
        pb.set_message(msg);
    };
    let r = benchmark::run_benchmark(&mut store, Some(&lab), &req, &mut on_progress);
    pb.finish_and_clear();
    let report = r?;
    out.emit(&report)?;
    Ok(if report.failures.is_empty() {
        exit::OK
    } else {
        exit::FAILURE
    })
}

/// A value with about four significant digits (metrics range from µs
/// latencies to minutes of build time).
fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn better(d: Better) -> &'static str {
    match d {
        Better::Lower => "lower is better",
        Better::Higher => "higher is better",
    }
}

fn render_list(list: &[WorkloadProfile]) -> String {
    let mut s = format!("{:<20} {:<30} {:<8} TARGET\n", "NAME", "METRIC", "BETTER");
    for p in list {
        let dir = match p.direction {
            Better::Lower => "lower",
            Better::Higher => "higher",
        };
        let _ = writeln!(
            s,
            "{:<20} {:<30} {:<8} {}",
            p.name,
            format!("{} ({})", p.metric, p.unit),
            dir,
            p.target.describe()
        );
    }
    s
}

fn render_profile(p: &WorkloadProfile) -> String {
    let mut s = format!("{} — {}\n", p.name, p.target.describe());
    if !p.description.is_empty() {
        let _ = writeln!(s, "  {}", p.description);
    }
    if let Target::Command { cwd, timeout_s, .. } = &p.target {
        let dir = cwd
            .as_ref()
            .map_or_else(|| "(the caller's)".into(), |d| d.display().to_string());
        let _ = writeln!(s, "  in {dir}, at most {timeout_s} s per run");
    }
    let _ = writeln!(
        s,
        "  metric {} in {}, {}; created {}",
        p.metric,
        p.unit,
        better(p.direction),
        p.created_at
    );
    s
}

fn spread(sum: &Option<Summary>) -> (String, String) {
    sum.as_ref()
        .map_or_else(|| ("-".into(), "-".into()), |s| (num(s.median), num(s.iqr)))
}

fn render_history(h: &History) -> String {
    let mut s = format!(
        "{:>5}  {:<24} {:<16} {:>4} {:>6} {:>10} {:>9} {:>8}\n",
        "ID",
        "STARTED",
        "LABEL",
        "RUNS",
        "FAILED",
        format!("MEDIAN {}", h.profile.unit),
        "IQR",
        "BASELINE"
    );
    for e in &h.entries {
        let (median, iqr) = spread(&e.summary);
        let _ = writeln!(
            s,
            "{:>5}  {:<24} {:<16} {:>4} {:>6} {:>10} {:>9} {:>8}",
            e.id,
            e.started_at,
            e.label,
            e.runs,
            e.failed,
            median,
            iqr,
            e.baseline_id.map_or_else(|| "-".into(), |b| b.to_string())
        );
    }
    s
}

fn render_report(r: &BenchmarkReport) -> String {
    let mut s = format!(
        "benchmark run-set {}: profile '{}' ({}), label {}\n",
        r.id, r.profile, r.target, r.label
    );
    let _ = writeln!(
        s,
        "  {} in {}, {}; {} runs, {} failed{}",
        r.metric,
        r.unit,
        better(r.direction),
        r.runs,
        r.failures.len(),
        r.lab
            .as_ref()
            .map(|l| format!("; VM under {} on {}", l.accel, l.kernel))
            .unwrap_or_default()
    );
    if let Some(sig) = &r.signature {
        let _ = writeln!(
            s,
            "  signature (warm-up run, not counted): {}",
            sig.describe()
        );
    }
    if let Some(m) = &r.summary {
        let _ = writeln!(
            s,
            "  median {}   IQR {} ({}..{})   MAD {}   min {}   max {}",
            num(m.median),
            num(m.iqr),
            num(m.q1),
            num(m.q3),
            num(m.mad),
            num(m.min),
            num(m.max)
        );
        let values: Vec<String> = r.values.iter().map(|v| num(*v)).collect();
        let _ = writeln!(s, "  values: {}", values.join(" "));
    }
    if let Some(b) = &r.baseline {
        let c = &b.comparison;
        let mut line = format!(
            "  against run-set {} ({}, {}):",
            b.id, b.label, b.started_at
        );
        if let (Some(bm), Some(cm)) = (c.baseline_median, c.candidate_median) {
            let _ = write!(line, " median {} → {}", num(bm), num(cm));
        }
        if let Some(pct) = c.change_pct {
            let _ = write!(line, ", change {pct:+.2}%");
        }
        if let Some(ci) = c.ci_pct {
            let _ = write!(
                line,
                " ({:.0}% CI {:+.2}%..{:+.2}%)",
                ci.level * 100.0,
                ci.low,
                ci.high
            );
        }
        if let (Some(p), Some(m)) = (c.p_value, c.method) {
            let how = match m {
                Method::Exact => "exact",
                Method::Normal => "normal approx.",
            };
            let _ = write!(line, ", p = {p:.4} (Mann–Whitney U, {how})");
        }
        let _ = writeln!(s, "{line}");
        let _ = writeln!(s, "  verdict: {} — {}", verdict_word(c.verdict), c.reason);
    }
    for w in &r.warnings {
        let _ = writeln!(s, "  warning: {w}");
    }
    for f in &r.failures {
        let _ = writeln!(s, "  run {} failed: {}", f.run, f.reason);
    }
    s
}

fn verdict_word(v: Verdict) -> String {
    v.as_str().to_uppercase()
}
