//! `schedcp verify ...`: the execution verifier and its deployment tokens.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::policies::model::{Body, PolicyRef, State};
use schedcp::policies::Library;
use schedcp::verify::pipeline::{self, Options, Subject};
use schedcp::verify::report::VerifyReport;
use schedcp::verify::token::{self, Expect, Keys};
use schedcp_proto::workload::WorkloadSpec;
use sha2::{Digest, Sha256};

use super::output;

const STAGES: &str = "\
Stages, in order (each gates the next):
  compile      clang -target bpf in a sandbox (no network, own empty dir, nobody, CPU/memory/output limits);
               #include only of the bundled sched_ext headers
  static       the object: programs, instruction counts, helpers and kfuncs against an allowlist,
               map sizes, one sched_ext_ops with a valid name and timeout_ms, hot-path cost estimate
  kernel       the real kernel verifier, attach and detach in the sched_ext micro-VM
  correctness  no error exit or watchdog stall, every batch job completes, no starvation
               (equal-weight hogs ≥ 50% of an equal split, nice-5 hogs ≥ 5% of a nice-0 hog)
  performance  the workloads under the candidate and the kernel default, alternating, judged by
               Mann-Whitney U (a significant regression is a warning)
  token        a PASETO v4.public token bound to the object, the report, the kernel and ops name
Exit codes: 0 passed, 4 a stage failed, 2 bad input, 3 setup missing.";

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, after_help = STAGES)]
pub struct VerifyArgs {
    #[command(subcommand)]
    pub token: Option<TokenCommand>,
    /// Schedulers to verify: `file.bpf.c` paths or `policy[@version]` from the library.
    pub targets: Vec<String>,
    /// Workloads of the performance comparison (comma-separated specs, see `schedcp lab workloads`).
    #[arg(long, value_delimiter = ';', default_value = "wakeup")]
    pub workloads: Vec<String>,
    /// Runs per side in the performance comparison.
    #[arg(long, default_value_t = 4)]
    pub runs: usize,
    /// Candidates verified at once, each in its own VMs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub jobs: u32,
    /// Token lifetime in hours.
    #[arg(long, default_value_t = 168)]
    pub ttl_hours: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Deployment tokens: show what one claims, or check it against an object.
    #[command(subcommand)]
    Token(TokenAction),
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Decode a token and show its claims (and whether this machine's key signed it).
    Show {
        token: String,
        #[arg(long)]
        json: bool,
    },
    /// Check a token: signature, expiry, and (with --object) that it is for these bytes.
    Check {
        token: String,
        /// The BPF object (or, for a verified object, its sha256 in the store) the token must be for.
        #[arg(long)]
        object: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cfg: Config, a: VerifyArgs, quiet: bool) -> Result<i32, Error> {
    if let Some(TokenCommand::Token(t)) = a.token {
        return token_cmd(&cfg, t);
    }
    if a.targets.is_empty() {
        return Err(Error::Input(
            "name what to verify: a .bpf.c file or a policy[@version] (see `schedcp verify --help`)".into(),
        ));
    }
    let workloads = a
        .workloads
        .iter()
        .map(|w| {
            w.parse::<WorkloadSpec>()
                .map_err(|e| Error::Input(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ttl = Duration::from_secs(a.ttl_hours.saturating_mul(3600));
    if !(token::MIN_TTL..=token::MAX_TTL).contains(&ttl) {
        return Err(Error::Input(format!(
            "--ttl-hours must be 1..={}",
            token::MAX_TTL.as_secs() / 3600
        )));
    }
    let opts = Options {
        workloads,
        runs: a.runs,
        vcpus: cfg.lab.vcpus,
        mem_mib: cfg.lab.mem_mib,
        vm_timeout: Duration::from_secs(cfg.lab.timeout_s),
        token_ttl: ttl,
    };
    opts.validate()?;
    let subjects = a
        .targets
        .iter()
        .map(|t| subject(&cfg, t))
        .collect::<Result<Vec<_>, _>>()?;
    let store = pipeline::object_store(&cfg);
    std::fs::create_dir_all(&store)
        .map_err(|e| Error::Setup(format!("cannot create {}: {e}", store.display())))?;

    let pb = output::spinner(quiet || a.json);
    let pb_ref = &pb;
    let mut pending = subjects.iter().collect::<Vec<_>>();
    pending.reverse();
    let queue = std::sync::Mutex::new(pending);
    let results: Vec<Result<VerifyReport, Error>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..a.jobs.min(subjects.len() as u32))
            .map(|_| {
                let (queue, cfg, opts, store) = (&queue, &cfg, &opts, &store);
                s.spawn(move || {
                    let mut out = Vec::new();
                    while let Some(sub) = queue.lock().expect("not poisoned").pop() {
                        let work = tempfile::tempdir().map_err(|e| Error::Internal(e.into()));
                        let r = work.and_then(|w| {
                            let r = pipeline::verify(cfg, sub, opts, w.path(), &mut |m: &str| {
                                pb_ref.set_message(format!("{}: {m}", sub.label));
                            })?;
                            keep(store, w.path(), &r)?;
                            Ok(r)
                        });
                        out.push((sub.label.clone(), r));
                    }
                    out
                })
            })
            .collect();
        let mut all: Vec<(String, Result<VerifyReport, Error>)> = workers
            .into_iter()
            .flat_map(|w| w.join().expect("verify worker"))
            .collect();
        all.sort_by_key(|(label, _)| subjects.iter().position(|s| &s.label == label));
        all.into_iter().map(|(_, r)| r).collect()
    });
    pb.finish_and_clear();

    let mut code = exit::OK;
    let mut reports = Vec::new();
    for (sub, r) in subjects.iter().zip(results) {
        let r = r?;
        if !r.passed {
            code = exit::SCHEDULER;
        } else if sub.version > 0 {
            promote_to_verified(&cfg, sub, &r)?;
        }
        reports.push(r);
    }
    if a.json {
        if reports.len() == 1 {
            output::json(&reports[0])?;
        } else {
            output::json(&reports)?;
        }
    } else {
        for r in &reports {
            print!("{}", r.render());
        }
    }
    Ok(code)
}

/// Keep the object and the report under the state dir, by object hash.
fn keep(store: &std::path::Path, work: &std::path::Path, r: &VerifyReport) -> Result<(), Error> {
    let Some(sha) = &r.object_sha256 else {
        return Ok(());
    };
    let io =
        |e: std::io::Error| Error::Internal(anyhow::anyhow!("keeping the verified object: {e}"));
    for entry in std::fs::read_dir(work).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.extension().is_some_and(|e| e == "o") {
            std::fs::copy(&p, store.join(format!("{sha}.bpf.o"))).map_err(io)?;
        }
    }
    let json = serde_json::to_vec_pretty(r).map_err(|e| Error::Internal(e.into()))?;
    std::fs::write(store.join(format!("{sha}.report.json")), json).map_err(io)
}

fn subject(cfg: &Config, target: &str) -> Result<Subject, Error> {
    let looks_like_file = target.contains('/') || target.ends_with(".c");
    if looks_like_file {
        let path = PathBuf::from(target);
        let meta = std::fs::metadata(&path)
            .map_err(|e| Error::Input(format!("cannot read {}: {e}", path.display())))?;
        if !meta.is_file() || meta.len() > schedcp::bpf::compile::MAX_SOURCE_BYTES as u64 {
            return Err(Error::Input(format!(
                "{} must be a regular file of at most {} bytes",
                path.display(),
                schedcp::bpf::compile::MAX_SOURCE_BYTES
            )));
        }
        let source = std::fs::read_to_string(&path)
            .map_err(|e| Error::Input(format!("cannot read {} as UTF-8: {e}", path.display())))?;
        let mut stem = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("scheduler")
            .trim_end_matches(".c")
            .trim_end_matches(".bpf");
        // schedulers/<name>/main.bpf.c: the directory names the policy.
        if stem == "main" {
            stem = path
                .parent()
                .and_then(|d| d.file_name())
                .and_then(|n| n.to_str())
                .unwrap_or(stem);
        }
        let policy: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        return Ok(Subject {
            policy,
            version: 0,
            label: target.into(),
            source,
        });
    }
    let r: PolicyRef = target.parse().map_err(Error::Input)?;
    let lib = Library::open(cfg)?;
    let v = lib.get(&r)?;
    let label = v.id();
    let Body::Bpf { source } = v.body else {
        return Err(Error::Input(format!(
            "{label} is an external scheduler binary; it is verified by its trial in the micro-VM when deployed, not compiled here"
        )));
    };
    Ok(Subject {
        policy: v.name,
        version: v.version,
        label,
        source,
    })
}

fn promote_to_verified(cfg: &Config, sub: &Subject, r: &VerifyReport) -> Result<(), Error> {
    let mut lib = Library::open(cfg)?;
    let pref = PolicyRef {
        name: sub.policy.clone(),
        version: Some(sub.version),
    };
    if lib.get(&pref)?.state == State::Candidate {
        lib.transition(
            &pref,
            State::Verified,
            &format!(
                "schedcp verify passed (report sha256 {})",
                &r.digest()[..16]
            ),
        )?;
    }
    Ok(())
}

fn token_cmd(cfg: &Config, t: TokenAction) -> Result<i32, Error> {
    match t {
        TokenAction::Show { token, json } => {
            let (claims, kid) = token::decode_unverified(&token)?;
            let keys = Keys::load_or_create(&cfg.state_dir())?;
            let verdict = keys
                .check(&token, &Expect::default())
                .map(|_| ())
                .map_err(|e| e.to_string());
            if json {
                output::json(&serde_json::json!({
                    "claims": claims, "kid": kid, "ours": keys.kid(),
                    "valid": verdict.is_ok(), "problem": verdict.err(),
                }))?;
            } else {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&claims).map_err(|e| Error::Internal(e.into()))?
                );
                match verdict {
                    Ok(()) => println!("valid: signed by this machine's key {}", keys.kid()),
                    Err(e) => println!("NOT valid here: {e}"),
                }
            }
            Ok(exit::OK)
        }
        TokenAction::Check {
            token,
            object,
            json,
        } => {
            let keys = Keys::load_or_create(&cfg.state_dir())?;
            let object_sha256 = match object {
                Some(p) => {
                    let bytes = std::fs::read(&p)
                        .map_err(|e| Error::Input(format!("cannot read {}: {e}", p.display())))?;
                    Some(hex::encode(Sha256::digest(&bytes)))
                }
                None => None,
            };
            let expect = Expect {
                object_sha256,
                kernel_release: None,
            };
            match keys.check(&token, &expect) {
                Ok(claims) => {
                    if json {
                        output::json(&serde_json::json!({"valid": true, "claims": claims}))?;
                    } else {
                        println!(
                            "valid: {}@{} object {} until {}",
                            claims.policy,
                            claims.version,
                            &claims.object_sha256[..16],
                            claims.exp
                        );
                    }
                    Ok(exit::OK)
                }
                Err(e) => {
                    if json {
                        output::json(
                            &serde_json::json!({"valid": false, "problem": e.to_string()}),
                        )?;
                    } else {
                        eprintln!("schedcp: invalid token: {e}");
                    }
                    Ok(exit::USAGE)
                }
            }
        }
    }
}
