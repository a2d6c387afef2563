//! `schedcp verify ...`: the execution verifier and its deployment tokens.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::policies::model::PolicyRef;
use schedcp::policies::Library;
use schedcp::verify::pipeline::Options;
use schedcp::verify::report::VerifyReport;
use schedcp::verify::service;
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
               (kernel, correctness and performance share one VM; each candidate run loads afresh)
  correctness  no error exit or watchdog stall, every batch job completes, no starvation
               (equal-weight hogs ≥ 50% of an equal split, nice-5 hogs ≥ 5% of a nice-0 hog)
  performance  the workloads under the candidate and the kernel default, alternating in the same
               VM, judged by Mann-Whitney U (a significant regression is a warning)
  token        a PASETO v4.public token bound to the object, the report, the kernel and ops name
Reports of policy[@version] targets are kept with the version (`schedcp verify report`);
a pass moves a candidate to verified.
Exit codes: 0 passed, 4 a stage failed, 2 bad input, 3 setup missing.";

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, after_help = STAGES)]
pub struct VerifyArgs {
    #[command(subcommand)]
    pub command: Option<VerifyCommand>,
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
pub enum VerifyCommand {
    /// Deployment tokens: show what one claims, or check it against an object.
    #[command(subcommand)]
    Token(TokenAction),
    /// The verification reports kept with a repository version, newest first.
    Report {
        /// `policy[@version]` (the latest version without `@`).
        target: String,
        /// How many reports to show.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
        limit: u64,
        #[arg(long)]
        json: bool,
    },
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
    match a.command {
        Some(VerifyCommand::Token(t)) => return token_cmd(&cfg, t),
        Some(VerifyCommand::Report {
            target,
            limit,
            json,
        }) => return report_cmd(&cfg, &target, limit as usize, json),
        None => {}
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
        .map(|t| service::subject(&cfg, t))
        .collect::<Result<Vec<_>, _>>()?;
    let pb = output::spinner(quiet || a.json);
    let results = service::verify_all(&cfg, &subjects, &opts, a.jobs as usize, &|label, m| {
        pb.set_message(format!("{label}: {m}"))
    })?;
    pb.finish_and_clear();

    let mut code = exit::OK;
    let mut reports = Vec::new();
    for r in results {
        let r = r?;
        if !r.passed {
            code = exit::SCHEDULER;
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

fn report_cmd(cfg: &Config, target: &str, limit: usize, json: bool) -> Result<i32, Error> {
    let r: PolicyRef = target.parse().map_err(Error::Input)?;
    let lib = Library::open(cfg)?;
    let reports = lib.verify_reports(&r, limit)?;
    if json {
        output::json(&reports)?;
        return Ok(exit::OK);
    }
    if reports.is_empty() {
        println!("{target}: never verified (run `schedcp verify {target}`)");
        return Ok(exit::OK);
    }
    for k in &reports {
        match serde_json::from_value::<VerifyReport>(k.report.clone()) {
            Ok(v) => print!(
                "report #{} recorded {}\n{}",
                k.id,
                k.recorded_at,
                v.render()
            ),
            Err(_) => println!(
                "report #{} of {}@{} recorded {}: {} (sha256 {})",
                k.id,
                k.name,
                k.version,
                k.recorded_at,
                if k.passed { "PASSED" } else { "FAILED" },
                k.report_sha256
            ),
        }
    }
    Ok(exit::OK)
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
