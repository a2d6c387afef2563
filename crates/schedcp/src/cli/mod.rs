//! The `schedcp` command line: argument parsing and output. Every command
//! calls a service's typed API; nothing here decides policy.

mod audit;
mod bench;
mod demo;
mod deploy;
mod doctor;
mod knob;
mod lab;
mod observe;
mod output;
mod policy;
mod serve;
mod token;
mod tune;
mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use schedcp::config::Config;
use schedcp::error::{exit, Error};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (internal error, or the guest reported a failure)
  2  bad input (unknown policy or workload, bad value, missing file)
  3  setup missing (no guest kernel, QEMU or clang: the message says how to fix it)
  4  the scheduler failed (does not compile, rejected by the verifier, or ejected by the kernel)
  5  the lab VM hit its wall-clock watchdog";

/// schedcp — observe a machine, find or write a better sched_ext CPU
/// scheduler, prove it safe in a micro-VM, deploy it, roll it back.
///
/// Start with `schedcp doctor` to see what this host can do, then
/// `schedcp tune`: the decision engine on a bundled workload, for real on
/// this host — signature, rules, trials, and only a proven winner applied
/// under a canary (then rolled back). `schedcp lab demo` compares the
/// built-in schedulers with the kernel's default inside a sched_ext micro-VM.
#[derive(Debug, Parser)]
#[command(name = "schedcp", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Configuration file (TOML). Default: $SCHEDCP_CONFIG, then /etc/schedcp/config.toml.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More logging (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr; no progress display.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Machine-readable output: one JSON document on stdout (progress and logs stay on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check what this host can do (sched_ext, BPF, tracefs, KVM, QEMU, clang, guest kernel) and how to fix what is missing.
    Doctor,
    /// The micro-VM lab: run sched_ext schedulers in a real sched_ext kernel under QEMU.
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Observe the machine: summary, detail, eBPF probes, profilers, workload benchmarks.
    #[command(subcommand)]
    Observe(observe::ObserveCommand),
    /// The scheduler policy library.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Verify a scheduler: sandboxed compile, static analysis, kernel verifier and trials in the micro-VM, signed token.
    Verify(verify::VerifyArgs),
    /// Deploy a verified scheduler under a canary with automatic rollback; status, history, rollback.
    Deploy(deploy::DeployArgs),
    /// The decision engine: signature → rules → trials → apply only a proven winner (no workload: the main job).
    Tune(tune::TuneArgs),
    /// Kernel knobs beyond sched_ext: catalogue, what this machine allows, read, trial, apply, roll back.
    #[command(subcommand)]
    Knob(knob::KnobCommand),
    /// The daemon: holds the services, serves MCP and REST to agents (root).
    Serve(serve::ServeArgs),
    /// MCP on stdio for an agent, forwarded to the daemon with your token (unprivileged).
    Mcp(serve::McpArgs),
    /// API tokens for agents: create, list, revoke (root).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// The audit log of API calls: verify its hash chain, show the last entries.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Benchmarks of schedcp itself (e.g. what its probes cost per event against libbpf-tools).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

pub fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

pub fn run(cli: Cli) -> i32 {
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return report_error(&Error::Input(format!("{e:#}"))),
    };
    let out = output::Output {
        json: cli.json,
        quiet: cli.quiet,
    };
    recover_knobs(&cfg, &cli.command);
    let result = match cli.command {
        Command::Doctor => doctor::run(cfg, out),
        Command::Lab(c) => lab::run(cfg, c, out),
        Command::Observe(c) => observe::run(cfg, c, out),
        Command::Policy(c) => policy::run(cfg, c, out),
        Command::Bench(c) => bench::run(cfg, c, out),
        Command::Verify(a) => verify::run(cfg, a, out),
        Command::Deploy(a) => deploy::run(cfg, a, out),
        Command::Knob(c) => knob::run(cfg, c, out),
        Command::Tune(a) => tune::run(cfg, a, out),
        Command::Serve(a) => serve::serve(cfg, a),
        Command::Mcp(a) => serve::mcp(cfg, a),
        Command::Token(c) => token::run(cfg, c, out),
        Command::Audit(c) => audit::run(cfg, c, out),
    };
    match result {
        Ok(code) => code,
        Err(e) => report_error(&e),
    }
}

/// A trial killed mid-way (SIGKILL, a crash, a full disk) left knobs
/// changed: the next schedcp run as root puts them back from the
/// journal's snapshot and says so. The daemon does this in its own
/// reconcile; entries whose owner still runs are left to it.
fn recover_knobs(cfg: &Config, command: &Command) {
    if matches!(command, Command::Serve(_) | Command::Mcp(_))
        || !nix::unistd::geteuid().is_root()
        || !cfg.state_dir().join(schedcp::store::DB_FILE).exists()
    {
        return;
    }
    let recovered = schedcp::store::Store::open_in(&cfg.state_dir())
        .and_then(|mut s| schedcp::knobs::journal::recover(&mut s));
    match recovered {
        Ok(rows) => {
            for r in rows {
                eprintln!(
                    "schedcp: restored knobs left by a killed {} (journal #{}): {} — {}",
                    r.purpose, r.id, r.knobs, r.outcome
                );
            }
        }
        Err(e) => eprintln!("schedcp: could not check the knob journal: {e}"),
    }
}

fn report_error(e: &Error) -> i32 {
    let kind = match e {
        Error::Input(_) => "invalid input",
        Error::NotFound(_) => "not found",
        Error::Forbidden(_) => "forbidden",
        Error::Quota(_) => "quota exceeded",
        Error::Setup(_) => "setup",
        Error::Compile(_) => "compile",
        Error::Internal(_) => "error",
    };
    eprintln!("schedcp: {kind}: {e:#}");
    if e.exit_code() == exit::OK {
        exit::FAILURE
    } else {
        e.exit_code()
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Cli;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn json_is_one_global_flag_before_or_after_the_subcommand() {
        let lines: &[&[&str]] = &[
            &["--json", "lab", "workloads"],
            &["lab", "workloads", "--json"],
            &["doctor", "--json"],
            &["-q", "lab", "demo", "--runs", "4", "--json"],
            &[
                "lab", "run", "--json", "--quiet", "-p", "vtime", "-w", "batch",
            ],
            &["observe", "summary", "--json", "--window-ms", "100"],
            &["observe", "probe", "--list", "--json"],
            &[
                "observe", "workload", "add", "x", "--cmd", "--json", "--", "true",
            ],
            &["policy", "show", "vtime@1", "--source", "--json"],
            &["verify", "report", "vtime", "--json"],
            &["verify", "token", "check", "t", "--json"],
            &["deploy", "status", "--json"],
            &["--json", "deploy", "status"],
            &["deploy", "--token", "t", "--json"],
            &[
                "token", "create", "--name", "a", "--scopes", "observe", "--json",
            ],
            &["audit", "tail", "-n", "5", "--json"],
            &["bench", "api", "--json"],
        ];
        for line in lines {
            let args = std::iter::once("schedcp").chain(line.iter().copied());
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert!(cli.json, "{line:?}");
        }
        assert!(!Cli::try_parse_from(["schedcp", "doctor"]).unwrap().json);
        // After `--`, `--json` belongs to the profiled command.
        let cli = Cli::try_parse_from([
            "schedcp", "observe", "workload", "add", "x", "--cmd", "--", "prog", "--json",
        ])
        .unwrap();
        assert!(!cli.json);
    }

    #[test]
    fn no_subcommand_declares_its_own_json() {
        fn walk(c: &clap::Command, path: &str) {
            for sc in c.get_subcommands() {
                let path = format!("{path} {}", sc.get_name());
                assert!(
                    sc.get_arguments().all(|a| a.get_long() != Some("json")),
                    "`{path}` declares its own --json"
                );
                walk(sc, &path);
            }
        }
        // Not built: global arguments are not yet copied into subcommands.
        walk(&Cli::command(), "schedcp");
    }

    #[test]
    fn the_top_level_help_mentions_json_once() {
        let help = Cli::command().render_long_help().to_string();
        assert_eq!(help.matches("--json").count(), 1, "{help}");
        assert!(help.contains("one JSON document on stdout"), "{help}");
    }
}
