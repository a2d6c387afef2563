//! `schedcp policy ...`: the scheduler policy repository.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use schedcp::bpf::meta::PolicyMeta;
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::policies::model::{
    Body, Direction, History, NewPolicy, NewResult, Origin, PolicyRef, PolicySummary,
    PolicyVersion, ResultSource, ResultVerdict, State, StoredVerifyReport,
};
use schedcp::policies::search::{SearchQuery, SearchResults};
use schedcp::policies::transfer::{Export, ImportReport};
use schedcp::policies::{external, validate, Library, Recorded};
use serde::{Serialize, Serializer};

use super::output::{Output, Report};

const LIFECYCLE: &str = "\
Lifecycle: candidate → verified (passed `schedcp verify`) → deployed → promoted, or retired.
Promotion rule: a deployed version is promoted after 2 significant improvements
measured by schedcp's deploy or tune (config: policies.promotion_min_improvements),
counted since its last significant regression; a significant regression measured
by schedcp demotes a promoted version to deployed. Results recorded by hand
(source manual) inform search but never promote.";

#[derive(Debug, Subcommand)]
#[command(after_help = LIFECYCLE)]
pub enum PolicyCommand {
    /// List the library: every policy's latest version and state.
    List {
        /// Only policies whose latest version is in this state.
        #[arg(long, value_parser = parse_state)]
        state: Option<State>,
    },
    /// Show one policy version: metadata, tunables or flags, and (with --source) its BPF C.
    Show {
        /// NAME or NAME@VERSION (default: latest).
        policy: PolicyRef,
        #[arg(long)]
        source: bool,
    },
    /// Add an agent-written policy (or a new version of one) as a candidate.
    ///
    /// Takes a directory with policy.toml and main.bpf.c (the layout of
    /// schedulers/<name>/), or --meta and --source files. The name must be a
    /// plain identifier; identical content to an existing version is refused.
    ///
    /// Examples:
    ///   schedcp policy add ./my_sched/
    ///   schedcp policy add --meta my.toml --source my.bpf.c --json
    #[command(verbatim_doc_comment)]
    Add(AddArgs),
    /// Find policies by what you need, in plain words (semantic + full text + measured results).
    ///
    /// Examples:
    ///   schedcp policy search "low latency for an interactive desktop under load"
    ///   schedcp policy search "throughput for batch compile jobs" --limit 3 --json
    ///   schedcp policy search "fair sharing between containers" --state verified
    #[command(verbatim_doc_comment)]
    Search {
        query: String,
        #[arg(long, default_value_t = 5)]
        limit: usize,
        #[arg(long, value_parser = parse_state)]
        state: Option<State>,
    },
    /// A policy's versions, lifecycle transitions and recorded results.
    History { name: String },
    /// Record a measured result against a policy version (curation may promote or demote it).
    ///
    /// The verdict says whether the change against the baseline was
    /// significant and which way; improvement % is computed from value and
    /// baseline with the metric's direction.
    ///
    /// Example:
    ///   schedcp policy record-result vtime@1 --workload batch_heavy --metric makespan \
    ///     --unit ms --direction lower --value 812 --baseline 905 --p-value 0.004 --verdict improved
    #[command(verbatim_doc_comment)]
    RecordResult(RecordArgs),
    /// Retire a version: it stays in history but is no longer offered.
    Retire {
        /// NAME@VERSION (or NAME for the latest).
        policy: PolicyRef,
        #[arg(long)]
        reason: String,
    },
    /// Install an external scx scheduler from the catalogue, pinned.
    ///
    /// Runs `cargo install <crate>@<catalogue version> --locked` into
    /// schedcp's cache (<cache>/external/<crate>-<version>/), stripped, and
    /// records the binary's SHA-256, the crate version and the toolchain.
    /// Needs cargo (Rust >= 1.91), clang with the BPF target and libclang;
    /// a first build takes several minutes. It runs third-party build
    /// scripts as you: an operator's action, not offered to agents.
    /// Then `schedcp verify NAME` trials the binary in the micro-VM and
    /// issues the token `schedcp deploy` needs.
    ///
    /// Examples:
    ///   schedcp policy install-external scx_bpfland
    ///   schedcp policy install-external scx_lavd --force --json
    #[command(verbatim_doc_comment)]
    InstallExternal {
        /// An external policy of the library (`schedcp policy list`, origin external).
        name: String,
        /// Build and install again even if an intact install exists.
        #[arg(long)]
        force: bool,
    },
    /// Write the whole library (versions, states, results) as JSON.
    Export {
        /// Output file (default: stdout).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Import a library written by `export` (content hashes are checked first).
    Import { file: PathBuf },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Directory holding policy.toml and main.bpf.c.
    #[arg(conflicts_with_all = ["meta", "source"], required_unless_present_all = ["meta", "source"])]
    dir: Option<PathBuf>,
    /// Metadata file (policy.toml format).
    #[arg(long, requires = "source")]
    meta: Option<PathBuf>,
    /// BPF C source file.
    #[arg(long, requires = "meta")]
    source: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// NAME or NAME@VERSION (default: latest).
    policy: PolicyRef,
    /// Workload profile name (see `schedcp observe profiles`).
    #[arg(long)]
    workload: String,
    /// What the workload is, in words (search matches queries against it). Default: the name.
    #[arg(long, default_value = "")]
    workload_description: String,
    #[arg(long)]
    metric: String,
    #[arg(long)]
    unit: String,
    #[arg(long, value_parser = |s: &str| s.parse::<Direction>())]
    direction: Direction,
    #[arg(long, allow_negative_numbers = true)]
    value: f64,
    #[arg(long, allow_negative_numbers = true)]
    baseline: Option<f64>,
    #[arg(long)]
    p_value: Option<f64>,
    /// improved | regressed | no_change (improved and regressed mean significant).
    #[arg(long, value_parser = |s: &str| s.parse::<ResultVerdict>())]
    verdict: ResultVerdict,
    /// Who measured it: manual (default), verify, deploy, tune.
    #[arg(long, default_value = "manual", value_parser = |s: &str| s.parse::<ResultSource>())]
    source: ResultSource,
    /// Where it was measured (default: this host's kernel).
    #[arg(long)]
    environment: Option<String>,
}

fn parse_state(s: &str) -> Result<State, String> {
    s.parse()
}

pub fn run(cfg: Config, cmd: PolicyCommand, out: Output) -> Result<i32, Error> {
    let pb = out.spinner();
    pb.set_message("opening the policy library");
    let lib = Library::open(&cfg);
    pb.finish_and_clear();
    let mut lib = lib?;
    match cmd {
        PolicyCommand::List { state } => out.emit(&Listed(lib.list(state)?))?,
        PolicyCommand::Show { policy, source } => {
            let version = lib.get(&policy)?;
            let pinned = PolicyRef {
                name: version.name.clone(),
                version: Some(version.version),
            };
            let last_verify = lib.verify_reports(&pinned, 1)?.into_iter().next();
            out.emit(&Shown {
                cfg: &cfg,
                version,
                last_verify,
                source,
            })?;
        }
        PolicyCommand::Add(a) => {
            let v = lib.add(read_new_policy(&a)?)?;
            out.emit(&Added {
                added: v.id(),
                content_hash: v.content_hash,
                state: v.state,
            })?;
        }
        PolicyCommand::Search {
            query,
            limit,
            state,
        } => out.emit(&lib.search(&SearchQuery {
            text: query,
            limit,
            state,
        })?)?,
        PolicyCommand::History { name } => out.emit(&lib.history(&name)?)?,
        PolicyCommand::RecordResult(a) => {
            let environment = a
                .environment
                .unwrap_or_else(|| format!("host {}", schedcp::host::kernel_release()));
            let res = NewResult {
                signature: None,
                workload: a.workload,
                workload_description: a.workload_description,
                metric: a.metric,
                unit: a.unit,
                direction: a.direction,
                value: a.value,
                baseline: a.baseline,
                improvement_pct: None,
                p_value: a.p_value,
                significant: a.verdict != ResultVerdict::NoChange,
                verdict: a.verdict,
                source: a.source,
                environment,
            };
            out.emit(&ResultRecorded {
                recorded: lib.record_result(&a.policy, res)?,
                name: a.policy.name,
            })?;
        }
        PolicyCommand::Retire { policy, reason } => {
            let v = lib.transition(&policy, State::Retired, &reason)?;
            out.emit(&Retired { retired: v.id() })?;
        }
        PolicyCommand::InstallExternal { name, force } => {
            let pb = out.spinner();
            pb.set_message(format!("installing {name} with cargo"));
            let m = external::install(&cfg, &lib, &name, force, &mut |line| {
                pb.set_message(line.to_string())
            });
            pb.finish_and_clear();
            out.emit(&m?)?;
        }
        PolicyCommand::Export { out: file } => {
            // The export is a JSON document with or without --json.
            let e = lib.export()?;
            let text = serde_json::to_string_pretty(&e).map_err(|e| Error::Internal(e.into()))?;
            match file {
                Some(path) => write_atomically(&path, text.as_bytes())?,
                None => println!("{text}"),
            }
        }
        PolicyCommand::Import { file } => {
            let text = read_bounded(&file, 256 * 1024 * 1024)?;
            let e: Export = serde_json::from_str(&text).map_err(|e| {
                Error::Input(format!(
                    "{} is not a schedcp policy export: {e}",
                    file.display()
                ))
            })?;
            out.emit(&lib.import(&e, &file.display().to_string())?)?;
        }
    }
    Ok(exit::OK)
}

/// `policy list`: each policy's latest version.
#[derive(Serialize)]
#[serde(transparent)]
struct Listed(Vec<PolicySummary>);

impl Report for Listed {
    fn render(&self) -> String {
        let mut s = String::new();
        for p in &self.0 {
            let _ = writeln!(
                s,
                "{:<14} v{:<3} {:<9} {:<8} {}",
                p.name,
                p.version,
                p.state,
                p.origin,
                first_sentence(&p.description)
            );
        }
        s
    }
}

/// `policy add`: the new version.
#[derive(Serialize)]
struct Added {
    added: String,
    content_hash: String,
    state: State,
}

impl Report for Added {
    fn render(&self) -> String {
        format!(
            "added {} as {} (sha256 {})\n",
            self.added,
            self.state,
            &self.content_hash[..12]
        )
    }
}

impl Report for SearchResults {
    fn render(&self) -> String {
        let mut s = String::new();
        for h in &self.hits {
            let _ = writeln!(
                s,
                "{}. {}@{} [{} {}] score {:.4}\n   {}\n   why: {}",
                h.rank,
                h.name,
                h.version,
                h.origin,
                h.state,
                h.score,
                first_sentence(&h.description),
                h.reason
            );
        }
        if self.hits.is_empty() {
            s.push_str("no policy matches\n");
        }
        let _ = writeln!(
            s,
            "({} backend; embedding {:.1} ms, search {:.1} ms)",
            self.backend, self.embed_ms, self.search_ms
        );
        s
    }
}

impl Report for History {
    fn render(&self) -> String {
        let mut s = format!(
            "{} ({} policy, origin {})\n",
            self.name, self.kind, self.origin
        );
        for v in &self.versions {
            let _ = writeln!(
                s,
                "  v{} {} sha256 {} created {}",
                v.version,
                v.state,
                &v.content_hash[..12],
                v.created_at
            );
        }
        for t in &self.transitions {
            let from = t.from.map_or("new".to_string(), |s| s.to_string());
            let _ = writeln!(
                s,
                "  {} v{} {from} → {}: {}",
                t.at, t.version, t.to, t.reason
            );
        }
        for r in &self.results {
            let x = &r.result;
            let _ = writeln!(
                s,
                "  result #{} v{} {} {}={} {} vs {:?} ({:+.1}%) {} [{}] {}",
                r.id,
                r.version,
                x.workload,
                x.metric,
                x.value,
                x.unit,
                x.baseline,
                x.improvement_pct.unwrap_or(f64::NAN),
                x.verdict,
                x.source,
                r.recorded_at
            );
        }
        s
    }
}

/// `policy record-result`: the result, and what curation did with it.
#[derive(Serialize)]
#[serde(transparent)]
struct ResultRecorded {
    recorded: Recorded,
    /// The policy's name as given.
    #[serde(skip)]
    name: String,
}

impl Report for ResultRecorded {
    fn render(&self) -> String {
        let rec = &self.recorded;
        let mut s = format!(
            "recorded result #{} for {}@{}\n",
            rec.result.id, self.name, rec.result.version
        );
        if let Some(t) = &rec.transition {
            let _ = writeln!(s, "{}", t.reason);
        }
        s
    }
}

/// `policy retire`.
#[derive(Serialize)]
struct Retired {
    retired: String,
}

impl Report for Retired {
    fn render(&self) -> String {
        format!("retired {}\n", self.retired)
    }
}

/// `policy install-external`: the install, new or found.
impl Report for external::Installed {
    fn render(&self) -> String {
        format!(
            "{} {} {} {}
  binary {} ({} bytes)
  sha256 {}
  built by {}{}
next: schedcp verify {}
",
            if self.already {
                "already installed:"
            } else {
                "installed:"
            },
            self.policy,
            self.crate_name,
            self.crate_version,
            self.binary.display(),
            self.size_bytes,
            self.sha256,
            self.rustc,
            if self.already {
                String::new()
            } else {
                format!(" in {:.0} s", self.build_s)
            },
            self.policy
        )
    }
}

impl Report for ImportReport {
    fn render(&self) -> String {
        let mut s = String::new();
        for (old, new) in &self.added {
            let _ = writeln!(s, "added {new} (from {old})");
        }
        let _ = writeln!(
            s,
            "{} versions added, {} already present, {} results imported",
            self.added.len(),
            self.unchanged.len(),
            self.results
        );
        s
    }
}

/// `policy show`: one version, its source only with --source, and its
/// last verification.
struct Shown<'a> {
    /// Where external installs are (the text checks the install).
    cfg: &'a Config,
    version: PolicyVersion,
    last_verify: Option<StoredVerifyReport>,
    source: bool,
}

impl Serialize for Shown<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let mut val = serde_json::to_value(&self.version).map_err(S::Error::custom)?;
        if !self.source {
            if let Some(b) = val.get_mut("body").and_then(|b| b.as_object_mut()) {
                b.remove("source");
            }
        }
        val["last_verify"] =
            serde_json::json!(self.last_verify.as_ref().map(|k| serde_json::json!({
                "id": k.id, "passed": k.passed, "recorded_at": k.recorded_at,
                "report_sha256": k.report_sha256, "kernel_release": k.kernel_release,
            })));
        val.serialize(s)
    }
}

impl Report for Shown<'_> {
    fn render(&self) -> String {
        let v = &self.version;
        let m = &v.meta;
        let mut s = format!(
            "{} ({} {}, {}, ops {}, sha256 {})\n\n{}\n\nalgorithm: {}\ntargets: {}\n",
            v.id(),
            v.origin,
            v.body.kind(),
            v.state,
            m.ops_name,
            &v.content_hash[..12],
            m.description,
            m.algorithm,
            m.target_workloads.join(", ")
        );
        for l in &m.limitations {
            let _ = writeln!(s, "limitation: {l}");
        }
        for t in &m.tunables {
            let range = match (t.min, t.max) {
                (Some(a), Some(b)) => format!(" [{a}..={b}]"),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "tunable {} ({:?}, default {}{range}): {}",
                t.name, t.kind, t.default, t.doc
            );
        }
        match &v.body {
            Body::External(x) => {
                let _ = match external::installed(self.cfg, x) {
                    Ok(Some(m)) => writeln!(
                        s,
                        "installed: {} (sha256 {}…, {} bytes, {} by {})",
                        m.binary.display(),
                        &m.sha256[..16],
                        m.size_bytes,
                        m.installed_at,
                        m.rustc
                    ),
                    Ok(None) => writeln!(
                        s,
                        "not installed: `schedcp policy install-external {}` (cargo install {}@{} --locked)",
                        v.name, x.crate_name, x.version
                    ),
                    Err(e) => writeln!(s, "install: {e}"),
                };
                for f in &x.flags {
                    let d = f
                        .default
                        .as_deref()
                        .map(|d| format!(", default {d}"))
                        .unwrap_or_default();
                    let _ = writeln!(s, "flag {} ({}{d}): {}", f.flag, f.kind, f.doc);
                }
            }
            Body::Knobs(k) => {
                for a in &k.knobs {
                    let w = a
                        .workload
                        .as_deref()
                        .map(|w| format!(" (workload {w})"))
                        .unwrap_or_default();
                    let _ = writeln!(s, "knob {} = {}{w}", a.knob, a.value);
                }
                let _ = writeln!(
                    s,
                    "trial it on a workload: `schedcp tune PROFILE --candidate {}`",
                    v.name
                );
            }
            Body::Bpf { .. } => {}
        }
        match &self.last_verify {
            Some(k) => {
                let _ = writeln!(
                    s,
                    "last verify: {} at {} on {} (report #{}, `schedcp verify report {}`)",
                    if k.passed { "passed" } else { "FAILED" },
                    k.recorded_at,
                    k.kernel_release.as_deref().unwrap_or("?"),
                    k.id,
                    v.id()
                );
            }
            None if matches!(v.body, Body::Bpf { .. }) => {
                let _ = writeln!(s, "last verify: never (`schedcp verify {}`)", v.id());
            }
            None => {}
        }
        if let Body::Bpf { source } = &v.body {
            if self.source {
                let _ = writeln!(s, "\n{source}");
            }
        }
        s
    }
}

fn first_sentence(s: &str) -> &str {
    match s.find(". ") {
        Some(i) if i < 160 => &s[..=i],
        _ => s,
    }
}

fn read_bounded(path: &Path, max: u64) -> Result<String, Error> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Input(format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(Error::Input(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.len() > max {
        return Err(Error::Input(format!(
            "{} is {} bytes; at most {max} are accepted",
            path.display(),
            meta.len()
        )));
    }
    std::fs::read_to_string(path)
        .map_err(|e| Error::Input(format!("cannot read {} as UTF-8 text: {e}", path.display())))
}

fn read_new_policy(a: &AddArgs) -> Result<NewPolicy, Error> {
    let (meta_path, src_path) = match (&a.dir, &a.meta, &a.source) {
        (Some(d), _, _) => (d.join("policy.toml"), d.join("main.bpf.c")),
        (None, Some(m), Some(s)) => (m.clone(), s.clone()),
        _ => {
            return Err(Error::Input(
                "give a directory, or both --meta and --source".into(),
            ))
        }
    };
    // Read at most a little over the limit, so the size error is precise.
    let source = read_bounded(&src_path, validate::MAX_SOURCE_BYTES as u64)?;
    let meta_text = read_bounded(&meta_path, 256 * 1024)?;
    let meta = PolicyMeta::parse(&meta_text)
        .map_err(|e| Error::Input(format!("{}: {e:#}", meta_path.display())))?;
    Ok(NewPolicy {
        meta,
        origin: Origin::Agent,
        body: Body::Bpf { source },
    })
}

/// The one durable write ([`schedcp::host::fs::atomic_write`]): a crash or
/// a full disk leaves the old file or the complete new one, never half.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), Error> {
    schedcp::host::fs::atomic_write(path, data, None)
        .map_err(|e| Error::Input(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_retire_keep_their_documents() {
        let a = Added {
            added: "my_fifo@1".into(),
            content_hash: "0123456789abcdef".into(),
            state: State::Candidate,
        };
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({
                "added": "my_fifo@1", "state": State::Candidate, "content_hash": "0123456789abcdef",
            })
        );
        assert_eq!(
            a.render(),
            format!(
                "added my_fifo@1 as {} (sha256 0123456789ab)\n",
                State::Candidate
            )
        );
        let r = Retired {
            retired: "my_fifo@1".into(),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({ "retired": "my_fifo@1" })
        );
        assert_eq!(r.render(), "retired my_fifo@1\n");
    }
}
