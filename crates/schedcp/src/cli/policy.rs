//! `schedcp policy ...`: the scheduler policy repository.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use schedcp::bpf::meta::PolicyMeta;
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::policies::model::{
    Body, Direction, NewPolicy, NewResult, Origin, PolicyRef, ResultSource, ResultVerdict, State,
};
use schedcp::policies::search::SearchQuery;
use schedcp::policies::transfer::Export;
use schedcp::policies::{external, validate, Library};

use super::output;

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
        #[arg(long)]
        json: bool,
    },
    /// Show one policy version: metadata, tunables or flags, and (with --source) its BPF C.
    Show {
        /// NAME or NAME@VERSION (default: latest).
        policy: PolicyRef,
        #[arg(long)]
        source: bool,
        #[arg(long)]
        json: bool,
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
        #[arg(long)]
        json: bool,
    },
    /// A policy's versions, lifecycle transitions and recorded results.
    History {
        name: String,
        #[arg(long)]
        json: bool,
    },
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
        #[arg(long)]
        json: bool,
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
        #[arg(long)]
        json: bool,
    },
    /// Write the whole library (versions, states, results) as JSON.
    Export {
        /// Output file (default: stdout).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Import a library written by `export` (content hashes are checked first).
    Import {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
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
    #[arg(long)]
    json: bool,
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
    #[arg(long)]
    json: bool,
}

fn parse_state(s: &str) -> Result<State, String> {
    s.parse()
}

pub fn run(cfg: Config, cmd: PolicyCommand, quiet: bool) -> Result<i32, Error> {
    let pb = output::spinner(quiet);
    pb.set_message("opening the policy library");
    let lib = Library::open(&cfg);
    pb.finish_and_clear();
    let mut lib = lib?;
    match cmd {
        PolicyCommand::List { state, json } => {
            let all = lib.list(state)?;
            if json {
                output::json(&all)?;
            } else {
                for p in &all {
                    println!(
                        "{:<14} v{:<3} {:<9} {:<8} {}",
                        p.name,
                        p.version,
                        p.state,
                        p.origin,
                        first_sentence(&p.description)
                    );
                }
            }
        }
        PolicyCommand::Show {
            policy,
            source,
            json,
        } => show(&cfg, &lib, &policy, source, json)?,
        PolicyCommand::Add(a) => {
            let p = read_new_policy(&a)?;
            let v = lib.add(p)?;
            if a.json {
                output::json(&serde_json::json!({
                    "added": v.id(), "state": v.state, "content_hash": v.content_hash,
                }))?;
            } else {
                println!(
                    "added {} as {} (sha256 {})",
                    v.id(),
                    v.state,
                    &v.content_hash[..12]
                );
            }
        }
        PolicyCommand::Search {
            query,
            limit,
            state,
            json,
        } => {
            let r = lib.search(&SearchQuery {
                text: query,
                limit,
                state,
            })?;
            if json {
                output::json(&r)?;
            } else {
                for h in &r.hits {
                    println!(
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
                if r.hits.is_empty() {
                    println!("no policy matches");
                }
                println!(
                    "({} backend; embedding {:.1} ms, search {:.1} ms)",
                    r.backend, r.embed_ms, r.search_ms
                );
            }
        }
        PolicyCommand::History { name, json } => {
            let h = lib.history(&name)?;
            if json {
                output::json(&h)?;
            } else {
                println!("{} ({} policy, origin {})", h.name, h.kind, h.origin);
                for v in &h.versions {
                    println!(
                        "  v{} {} sha256 {} created {}",
                        v.version,
                        v.state,
                        &v.content_hash[..12],
                        v.created_at
                    );
                }
                for t in &h.transitions {
                    let from = t.from.map_or("new".to_string(), |s| s.to_string());
                    println!("  {} v{} {from} → {}: {}", t.at, t.version, t.to, t.reason);
                }
                for r in &h.results {
                    let x = &r.result;
                    println!(
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
            }
        }
        PolicyCommand::RecordResult(a) => {
            let environment = a
                .environment
                .unwrap_or_else(|| format!("host {}", schedcp::host::kernel_release()));
            let res = NewResult {
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
            let rec = lib.record_result(&a.policy, res)?;
            if a.json {
                output::json(&rec)?;
            } else {
                println!(
                    "recorded result #{} for {}@{}",
                    rec.result.id, a.policy.name, rec.result.version
                );
                if let Some(t) = &rec.transition {
                    println!("{}", t.reason);
                }
            }
        }
        PolicyCommand::Retire {
            policy,
            reason,
            json,
        } => {
            let v = lib.transition(&policy, State::Retired, &reason)?;
            if json {
                output::json(&serde_json::json!({"retired": v.id()}))?;
            } else {
                println!("retired {}", v.id());
            }
        }
        PolicyCommand::InstallExternal { name, force, json } => {
            let pb = output::spinner(quiet || json);
            pb.set_message(format!("installing {name} with cargo"));
            let m = external::install(&cfg, &lib, &name, force, &mut |line| {
                pb.set_message(line.to_string())
            });
            pb.finish_and_clear();
            let m = m?;
            if json {
                output::json(&m)?;
            } else {
                println!(
                    "{} {} {} {}
  binary {} ({} bytes)
  sha256 {}
  built by {}{}
next: schedcp verify {}",
                    if m.already {
                        "already installed:"
                    } else {
                        "installed:"
                    },
                    m.policy,
                    m.crate_name,
                    m.crate_version,
                    m.binary.display(),
                    m.size_bytes,
                    m.sha256,
                    m.rustc,
                    if m.already {
                        String::new()
                    } else {
                        format!(" in {:.0} s", m.build_s)
                    },
                    m.policy
                );
            }
        }
        PolicyCommand::Export { out } => {
            let e = lib.export()?;
            let text = serde_json::to_string_pretty(&e).map_err(|e| Error::Internal(e.into()))?;
            match out {
                Some(path) => write_atomically(&path, text.as_bytes())?,
                None => println!("{text}"),
            }
        }
        PolicyCommand::Import { file, json } => {
            let text = read_bounded(&file, 256 * 1024 * 1024)?;
            let e: Export = serde_json::from_str(&text).map_err(|e| {
                Error::Input(format!(
                    "{} is not a schedcp policy export: {e}",
                    file.display()
                ))
            })?;
            let r = lib.import(&e, &file.display().to_string())?;
            if json {
                output::json(&r)?;
            } else {
                for (old, new) in &r.added {
                    println!("added {new} (from {old})");
                }
                println!(
                    "{} versions added, {} already present, {} results imported",
                    r.added.len(),
                    r.unchanged.len(),
                    r.results
                );
            }
        }
    }
    Ok(exit::OK)
}

fn show(cfg: &Config, lib: &Library, r: &PolicyRef, source: bool, json: bool) -> Result<(), Error> {
    let v = lib.get(r)?;
    let pinned = PolicyRef {
        name: v.name.clone(),
        version: Some(v.version),
    };
    let last_verify = lib.verify_reports(&pinned, 1)?.into_iter().next();
    if json {
        let mut val = serde_json::to_value(&v).map_err(|e| Error::Internal(e.into()))?;
        if !source {
            if let Some(b) = val.get_mut("body").and_then(|b| b.as_object_mut()) {
                b.remove("source");
            }
        }
        val["last_verify"] = serde_json::json!(last_verify.map(|k| serde_json::json!({
            "id": k.id, "passed": k.passed, "recorded_at": k.recorded_at,
            "report_sha256": k.report_sha256, "kernel_release": k.kernel_release,
        })));
        return output::json(&val);
    }
    let m = &v.meta;
    println!(
        "{} ({} {}, {}, ops {}, sha256 {})\n\n{}\n\nalgorithm: {}\ntargets: {}",
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
        println!("limitation: {l}");
    }
    for t in &m.tunables {
        let range = match (t.min, t.max) {
            (Some(a), Some(b)) => format!(" [{a}..={b}]"),
            _ => String::new(),
        };
        println!(
            "tunable {} ({:?}, default {}{range}): {}",
            t.name, t.kind, t.default, t.doc
        );
    }
    match &v.body {
        Body::External(x) => {
            match external::installed(cfg, x) {
                Ok(Some(m)) => println!(
                    "installed: {} (sha256 {}…, {} bytes, {} by {})",
                    m.binary.display(),
                    &m.sha256[..16],
                    m.size_bytes,
                    m.installed_at,
                    m.rustc
                ),
                Ok(None) => println!(
                    "not installed: `schedcp policy install-external {}` (cargo install {}@{} --locked)",
                    v.name, x.crate_name, x.version
                ),
                Err(e) => println!("install: {e}"),
            }
            for f in &x.flags {
                let d = f
                    .default
                    .as_deref()
                    .map(|d| format!(", default {d}"))
                    .unwrap_or_default();
                println!("flag {} ({}{d}): {}", f.flag, f.kind, f.doc);
            }
        }
        Body::Bpf { .. } => {}
    }
    match last_verify {
        Some(k) => println!(
            "last verify: {} at {} on {} (report #{}, `schedcp verify report {}`)",
            if k.passed { "passed" } else { "FAILED" },
            k.recorded_at,
            k.kernel_release.as_deref().unwrap_or("?"),
            k.id,
            v.id()
        ),
        None if matches!(v.body, Body::Bpf { .. }) => {
            println!("last verify: never (`schedcp verify {}`)", v.id())
        }
        None => {}
    }
    if let Body::Bpf { source: s } = &v.body {
        if source {
            println!("\n{s}");
        }
    }
    Ok(())
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
