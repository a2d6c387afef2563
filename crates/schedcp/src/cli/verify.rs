//! `schedcp verify ...`: the execution verifier and its deployment tokens.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use schedcp::policies::model::{PolicyRef, StoredVerifyReport};
use schedcp::policies::Library;
use schedcp::verify::pipeline::Options;
use schedcp::verify::report::VerifyReport;
use schedcp::verify::service;
use schedcp::verify::token::{self, Claims, Expect, Keys};
use schedcp_proto::workload::WorkloadSpec;
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::output::{Output, Report};

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
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Decode a token and show its claims (and whether this machine's key signed it).
    Show { token: String },
    /// Check a token: signature, expiry, and (with --object) that it is for these bytes.
    Check {
        token: String,
        /// The BPF object (or, for a verified object, its sha256 in the store) the token must be for.
        #[arg(long)]
        object: Option<PathBuf>,
    },
}

pub fn run(cfg: Config, a: VerifyArgs, out: Output) -> Result<i32, Error> {
    match a.command {
        Some(VerifyCommand::Token(t)) => return token_cmd(&cfg, t, out),
        Some(VerifyCommand::Report { target, limit }) => {
            return report_cmd(&cfg, &target, limit as usize, out)
        }
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
    let pb = out.spinner();
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
    out.emit(&Verified(reports))?;
    Ok(code)
}

/// The reports of one `verify` run: one report alone, or the list of them.
struct Verified(Vec<VerifyReport>);

impl Serialize for Verified {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            all => all.serialize(s),
        }
    }
}

impl Report for Verified {
    fn render(&self) -> String {
        self.0.iter().map(VerifyReport::render).collect()
    }
}

/// `verify report`: the kept reports of `target`, newest first.
#[derive(Serialize)]
#[serde(transparent)]
struct Kept {
    reports: Vec<StoredVerifyReport>,
    #[serde(skip)]
    target: String,
}

impl Report for Kept {
    fn render(&self) -> String {
        if self.reports.is_empty() {
            return format!(
                "{t}: never verified (run `schedcp verify {t}`)\n",
                t = self.target
            );
        }
        let mut s = String::new();
        for k in &self.reports {
            match serde_json::from_value::<VerifyReport>(k.report.clone()) {
                Ok(v) => {
                    let _ = write!(
                        s,
                        "report #{} recorded {}\n{}",
                        k.id,
                        k.recorded_at,
                        v.render()
                    );
                }
                Err(_) => {
                    let _ = writeln!(
                        s,
                        "report #{} of {}@{} recorded {}: {} (sha256 {})",
                        k.id,
                        k.name,
                        k.version,
                        k.recorded_at,
                        if k.passed { "PASSED" } else { "FAILED" },
                        k.report_sha256
                    );
                }
            }
        }
        s
    }
}

fn report_cmd(cfg: &Config, target: &str, limit: usize, out: Output) -> Result<i32, Error> {
    let r: PolicyRef = target.parse().map_err(Error::Input)?;
    let lib = Library::open(cfg)?;
    out.emit(&Kept {
        reports: lib.verify_reports(&r, limit)?,
        target: target.to_string(),
    })?;
    Ok(exit::OK)
}

/// `verify token show`: what a token claims, and whether it is valid here.
#[derive(Serialize)]
struct Shown {
    claims: Claims,
    kid: Option<String>,
    ours: String,
    problem: Option<String>,
    valid: bool,
}

impl Report for Shown {
    fn render(&self) -> String {
        let claims = serde_json::to_string_pretty(&self.claims)
            .unwrap_or_else(|e| format!("(the claims do not serialize: {e})"));
        match &self.problem {
            None => format!(
                "{claims}\nvalid: signed by this machine's key {}\n",
                self.ours
            ),
            Some(e) => format!("{claims}\nNOT valid here: {e}\n"),
        }
    }
}

/// `verify token check`: valid with its claims, or the problem.
#[derive(Serialize)]
struct Checked {
    #[serde(skip_serializing_if = "Option::is_none")]
    claims: Option<Claims>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
    valid: bool,
}

impl Report for Checked {
    fn render(&self) -> String {
        match &self.claims {
            Some(c) => format!(
                "valid: {}@{} object {} until {}\n",
                c.policy,
                c.version,
                &c.object_sha256[..16],
                c.exp
            ),
            None => String::new(),
        }
    }

    fn notice(&self) -> Option<String> {
        self.problem
            .as_ref()
            .map(|e| format!("schedcp: invalid token: {e}"))
    }
}

fn token_cmd(cfg: &Config, t: TokenAction, out: Output) -> Result<i32, Error> {
    match t {
        TokenAction::Show { token } => {
            let (claims, kid) = token::decode_unverified(&token)?;
            let keys = Keys::load_or_create(&cfg.state_dir())?;
            let verdict = keys.check(&token, &Expect::default());
            out.emit(&Shown {
                claims,
                kid,
                ours: keys.kid().to_string(),
                valid: verdict.is_ok(),
                problem: verdict.err().map(|e| e.to_string()),
            })?;
            Ok(exit::OK)
        }
        TokenAction::Check { token, object } => {
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
            let checked = match keys.check(&token, &expect) {
                Ok(claims) => Checked {
                    claims: Some(claims),
                    problem: None,
                    valid: true,
                },
                Err(e) => Checked {
                    claims: None,
                    problem: Some(e.to_string()),
                    valid: false,
                },
            };
            out.emit(&checked)?;
            Ok(if checked.valid { exit::OK } else { exit::USAGE })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_token_is_a_document_or_a_line_on_stderr() {
        let c = Checked {
            claims: None,
            problem: Some("expired".into()),
            valid: false,
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::json!({ "valid": false, "problem": "expired" })
        );
        assert_eq!(c.render(), "");
        assert_eq!(c.notice().unwrap(), "schedcp: invalid token: expired");
    }

    #[test]
    fn one_report_alone_several_as_a_list() {
        assert_eq!(
            serde_json::to_value(Verified(Vec::new())).unwrap(),
            serde_json::json!([])
        );
    }

    #[test]
    fn kept_reports_serialize_as_the_list() {
        let k = Kept {
            reports: Vec::new(),
            target: "vtime@2".into(),
        };
        assert_eq!(serde_json::to_value(&k).unwrap(), serde_json::json!([]));
        assert_eq!(
            k.render(),
            "vtime@2: never verified (run `schedcp verify vtime@2`)\n"
        );
    }
}
