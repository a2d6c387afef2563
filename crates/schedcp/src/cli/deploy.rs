//! `schedcp deploy`: a client of the daemon that holds the deployed
//! scheduler — the local one over its socket, or another machine (a lab
//! node) over REST with `--url`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use schedcp::api::auth::{self, Scope};
use schedcp::api::client::{Rest, Session};
use schedcp::config::Config;
use schedcp::deploy::record::DeployEvent;
use schedcp::deploy::{self, DeployState, Deployment, Status};
use schedcp::error::{exit, Error};
use schedcp::store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::output::{Output, Report};

#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "\
The deploy service attaches only schedulers that carry a token from
`schedcp verify`. Before the switch it measures a KPI baseline; during the
canary it compares every window with it:
  runq_p99                 run-queue latency p99 (runqlat probe)
  psi_cpu_some             /proc/pressure/cpu
  nr_rejected              tasks sched_ext refused
  workload metric          with --workload (a profile name or a lab workload spec)
and it polls the scheduler's health (error exit, watchdog stall, ejection,
a dead scheduler process) every deploy.health_poll_ms. A health failure
rolls back to the last known-good scheduler (or the kernel default) at
once; a KPI breach does when it holds for consecutive_windows windows in a
row (one noisy window is not a regression). Thresholds (--kpi NAME=VALUE):
  runq_p99_ratio=4 runq_p99_min_increase_us=5000 runq_min_samples=2000
  psi_cpu_some_increase_pct=30 workload_regression_pct=25 nr_rejected_max=0
  consecutive_windows=2

External scx schedulers (`schedcp policy install-external scx_bpfland`, then
`schedcp verify scx_bpfland`) deploy the same way: the daemon runs the
verified binary as a supervised child, stops it with SIGINT, and restarts it
up to deploy.external_max_restarts times while active before rolling back.

Examples:
  schedcp verify vtime                       # prints a token; keeps the object
  schedcp deploy --token \"$(cat vtime.token)\" --canary 5m
  schedcp deploy --token-file vtime.token --workload batch --kpi workload_regression_pct=10
  schedcp deploy status
  schedcp deploy history --limit 5
  schedcp deploy rollback --reason \"p99 alarms on the web tier\"
  schedcp deploy status --url http://127.0.0.1:7433 --api-token $TOKEN   # a lab node
  schedcp deploy --token-file bpfland.token --object ~/.local/state/schedcp/verified/<sha256>.bin

Exit codes: 0 active (or done), 2 refused, 3 this kernel has no sched_ext /
no daemon, 4 the canary failed and the scheduler was rolled back."
)]
pub struct DeployArgs {
    #[command(subcommand)]
    pub command: Option<DeployCommand>,
    /// The deployment token from `schedcp verify`.
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Read the deployment token from this file.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The verified object (default: the one `verify` kept on the daemon's machine).
    #[arg(long, value_name = "FILE")]
    pub object: Option<PathBuf>,
    /// Canary length: seconds, or a duration like 90s, 5m, 1h30m (default: deploy.canary_s).
    #[arg(long, value_name = "DURATION", value_parser = parse_canary)]
    pub canary: Option<u64>,
    /// Threshold override, NAME=VALUE (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub kpi: Vec<String>,
    /// Workload run in each canary window: a workload profile or a lab workload spec.
    #[arg(long)]
    pub workload: Option<String>,
    /// A knob assignment applied with the change, NAME=VALUE (repeatable;
    /// `schedcp knob list`). Without a token the change is knobs only.
    #[arg(long = "knob", value_name = "NAME=VALUE")]
    pub knobs: Vec<String>,
    /// The workload profile whose processes get the `workload.*` knobs.
    #[arg(long, value_name = "PROFILE")]
    pub knob_workload: Option<String>,
    #[command(flatten)]
    pub remote: Remote,
}

#[derive(Debug, Args, Clone)]
pub struct Remote {
    /// A daemon over REST (e.g. a lab node) instead of the local socket.
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// API token for the daemon (default: $SCHEDCP_TOKEN; as root on the
    /// local socket, a 10-minute token is created and revoked afterwards).
    #[arg(long, global = true, env = "SCHEDCP_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// What runs now: sched_ext state, the current deployment, its last known-good.
    Status,
    /// Past deployments and every deploy event, newest first.
    History {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Roll the current deployment back to its last known-good now (also
    /// during a canary, which it ends).
    Rollback {
        /// Why (kept in the history and the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Revoke a deploy token on this node: admission and every re-attach
    /// refuse it from now on (its jti: `schedcp verify token-check`).
    RevokeToken {
        /// The token's id (32 hex digits).
        #[arg(long)]
        jti: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

pub fn run(cfg: Config, a: DeployArgs, out: Output) -> Result<i32, Error> {
    match a.command {
        Some(DeployCommand::Status) => status(&cfg, &a.remote, out),
        Some(DeployCommand::History { limit }) => history(&cfg, &a.remote, limit, out),
        Some(DeployCommand::Rollback { reason }) => rollback(&cfg, &a.remote, &reason, out),
        Some(DeployCommand::RevokeToken { jti, reason }) => {
            let mut store = Store::open_in(&cfg.state_dir())?;
            schedcp::deploy::gate::revoke(&mut store, &jti, &reason)?;
            if !out.quiet {
                eprintln!("deploy token {jti} revoked on this node");
            }
            Ok(exit::OK)
        }
        None => deploy_cmd(&cfg, &a, out),
    }
}

fn deploy_cmd(cfg: &Config, a: &DeployArgs, out: Output) -> Result<i32, Error> {
    let token = match (&a.token, &a.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| Error::Input(format!("reading {}: {e}", f.display())))?
                .trim()
                .to_string(),
        ),
        (None, None) if !a.knobs.is_empty() => None,
        (None, None) => {
            return Err(Error::Input(
                "give --token or --token-file (from `schedcp verify`), --knob NAME=VALUE, or a subcommand: status, history, rollback".into(),
            ))
        }
    };
    let knobs = a
        .knobs
        .iter()
        .map(|k| schedcp::knobs::Assignment::parse(k, a.knob_workload.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    deploy_change(cfg, &a.remote, token, knobs, a, out)
}

/// Deploy a change (scheduler, knobs, or both) through the daemon and wait
/// for its canary's verdict.
pub fn deploy_change(
    cfg: &Config,
    remote: &Remote,
    token: Option<String>,
    knobs: Vec<schedcp::knobs::Assignment>,
    a: &DeployArgs,
    out: Output,
) -> Result<i32, Error> {
    let object_base64 = a
        .object
        .as_ref()
        .map(|p| {
            std::fs::read(p)
                .map(|b| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.encode(b)
                })
                .map_err(|e| Error::Input(format!("reading {}: {e}", p.display())))
        })
        .transpose()?;
    if remote.url.is_none() {
        // Check here first: a machine without sched_ext, a bad or expired
        // token, a wrong object, a knob this machine refuses get a precise
        // answer without a daemon.
        if let Some(token) = &token {
            deploy::gate::admit(cfg, token, object_base64.as_deref())?;
        }
        if !knobs.is_empty() {
            schedcp::knobs::change::admit(&knobs, &|w| deploy::deployer::workload_binding(cfg, w))?;
        }
    }
    let canary = a.canary.unwrap_or(cfg.deploy.canary_s);
    let args = json!({
        "token": token,
        "knobs": (!knobs.is_empty()).then_some(&knobs),
        "object_base64": object_base64,
        "canary_s": a.canary,
        "kpi": a.kpi,
        "workload": a.workload,
        "wait_seconds": (canary + 600).min(3600),
    });
    let pb = out.spinner();
    pb.set_message(format!("deploying: baseline, switch, {canary} s canary"));
    let d = deploy_job(cfg, remote, args);
    pb.finish_and_clear();
    let d = d?;
    out.emit(&d)?;
    Ok(if d.state == DeployState::Active {
        exit::OK
    } else {
        exit::SCHEDULER
    })
}

fn status(cfg: &Config, remote: &Remote, out: Output) -> Result<i32, Error> {
    let s: Status = match &remote.url {
        Some(_) => serde_json::from_value(call(cfg, remote, "deploy_status", json!({}))?)
            .map_err(|e| Error::Internal(e.into()))?,
        None => deploy::deployer::status(cfg, false)?,
    };
    out.emit(&s)?;
    Ok(exit::OK)
}

impl Report for Status {
    fn render(&self) -> String {
        let mut s = format!(
            "sched_ext: {}{}\n",
            self.sched_ext_state
                .as_deref()
                .unwrap_or("not in this kernel"),
            self.kernel_ops
                .as_deref()
                .map(|o| format!(" ({o})"))
                .unwrap_or_default()
        );
        match &self.current {
            Some(d) => {
                let _ = writeln!(
                    s,
                    "deployment #{} {}: {} since {}",
                    d.id,
                    d.label(),
                    d.state.as_str(),
                    d.requested_at
                );
                let _ = writeln!(
                    s,
                    "rollback goes to: {}",
                    self.last_known_good.as_deref().unwrap_or("-")
                );
            }
            None => s.push_str("no deployment: the kernel's default scheduler runs\n"),
        }
        s
    }
}

/// `deploy history`: the daemon's deploy_history, or the local store's.
#[derive(Serialize, Deserialize)]
struct History {
    deployments: Vec<Deployment>,
    events: Vec<DeployEvent>,
}

impl Report for History {
    fn render(&self) -> String {
        let mut s = String::new();
        if self.deployments.is_empty() {
            s.push_str("no deployments yet\n");
        }
        for d in &self.deployments {
            let _ = writeln!(
                s,
                "#{:<4} {:<24} {:<11} {}  {}",
                d.id,
                d.label(),
                d.state.as_str(),
                d.requested_at,
                d.reason.as_deref().unwrap_or("")
            );
        }
        s
    }
}

fn history(cfg: &Config, remote: &Remote, limit: usize, out: Output) -> Result<i32, Error> {
    let h: History = match &remote.url {
        Some(_) => serde_json::from_value(call(
            cfg,
            remote,
            "deploy_history",
            json!({ "limit": limit }),
        )?)
        .map_err(|e| Error::Internal(e.into()))?,
        None => {
            let store = Store::open_in(&cfg.state_dir())?;
            History {
                deployments: deploy::record::list(&store, limit)?,
                events: deploy::record::events(&store, limit)?,
            }
        }
    };
    out.emit(&h)?;
    Ok(exit::OK)
}

/// Roll the current change back through the daemon.
pub fn rollback(cfg: &Config, remote: &Remote, reason: &str, out: Output) -> Result<i32, Error> {
    let d: Deployment = serde_json::from_value(call(
        cfg,
        remote,
        "deploy_rollback",
        json!({ "reason": reason }),
    )?)
    .map_err(|e| Error::Internal(e.into()))?;
    out.emit(&d)?;
    Ok(exit::OK)
}

/// A deployment: the outcome of deploy and rollback.
impl Report for Deployment {
    fn render(&self) -> String {
        let mut s = format!(
            "deployment #{} {}: {}\n",
            self.id,
            self.label(),
            self.state.as_str()
        );
        if let Some(k) = &self.knobs {
            for r in &k.released {
                let _ = writeln!(
                    s,
                    "  released to the operator: {} (schedcp wrote {}, found {})",
                    r.knob, r.expected, r.found
                );
            }
        }
        if let Some(r) = &self.reason {
            let _ = writeln!(s, "  {r}");
        }
        let t = &self.timings;
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0} ms"));
        let _ = writeln!(
            s,
            "  request→attached {}  request→active {}  breach→rollback {}",
            ms(t.request_to_attached_ms),
            ms(t.request_to_active_ms),
            ms(t.breach_to_rollback_ms)
        );
        s
    }
}

/// Run the daemon's deploy tool and wait for its verdict.
pub fn deploy_job(cfg: &Config, remote: &Remote, args: Value) -> Result<Deployment, Error> {
    let job = call(cfg, remote, "deploy", args)?;
    let result = match job["state"].as_str() {
        Some("succeeded") => job["result"].clone(),
        Some("failed") => {
            return Err(Error::Input(
                job["error"]
                    .as_str()
                    .unwrap_or("the deploy job failed")
                    .to_string(),
            ))
        }
        _ => {
            return Err(Error::Internal(anyhow::anyhow!(
            "the deploy did not finish in time; follow it with `schedcp deploy status` (job {})",
            job["id"].as_str().unwrap_or("?")
        )))
        }
    };
    serde_json::from_value(result).map_err(|e| Error::Internal(e.into()))
}

/// Call a tool of the daemon: REST with `--url`, else the local socket.
pub fn call(cfg: &Config, remote: &Remote, tool: &str, args: Value) -> Result<Value, Error> {
    if let Some(url) = &remote.url {
        let token = remote.api_token.clone().ok_or_else(|| {
            Error::Input("--url needs an API token (--api-token or $SCHEDCP_TOKEN)".into())
        })?;
        let rest = Rest::new(url, &token, Duration::from_secs(3700))?;
        return rest.call(tool, &args).map_err(Error::from);
    }
    let (token, temporary) = match &remote.api_token {
        Some(t) => (t.clone(), None),
        None if nix::unistd::geteuid().is_root() => {
            let mut store = Store::open_in(&cfg.state_dir())?;
            let (info, t) = auth::create(
                &mut store,
                "deploy-cli",
                &[Scope::Deploy, Scope::Observe],
                Some(Duration::from_secs(600)),
            )?;
            (t, Some(info.id))
        }
        None => {
            return Err(Error::Input(
                "no API token: set $SCHEDCP_TOKEN or --api-token (a token with scope deploy)"
                    .into(),
            ))
        }
    };
    let socket = cfg.api.socket.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(e.into()))?;
    let out = rt.block_on(async {
        let mut s = Session::open(&socket, &token).await.map_err(|e| {
            Error::Setup(format!(
                "cannot reach the schedcp daemon at {}: {e:#}; start it with `schedcp serve` (it holds deployed schedulers)",
                socket.display()
            ))
        })?;
        s.call(tool, args).await.map_err(Error::from)
    });
    if let Some(id) = temporary {
        if let Ok(mut store) = Store::open_in(&cfg.state_dir()) {
            let _ = auth::revoke(&mut store, &id);
        }
    }
    out
}

/// `--canary`: whole seconds, bare or as a human duration, within the
/// deploy service's bounds.
pub fn parse_canary(s: &str) -> Result<u64, String> {
    let max = deploy::MAX_CANARY_S;
    let secs = match s.trim().parse::<u64>() {
        Ok(n) => n,
        Err(_) => {
            let d = humantime::parse_duration(s.trim()).map_err(|e| {
                format!("'{s}' is not a duration ({e}); give seconds (90) or a duration (90s, 5m, 1h30m)")
            })?;
            if d.subsec_nanos() != 0 {
                return Err(format!("'{s}': the canary is set in whole seconds"));
            }
            d.as_secs()
        }
    };
    if !(1..=max).contains(&secs) {
        return Err(format!(
            "the canary must last 1 s to {} h, got {secs} s",
            max / 3600
        ));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::parse_canary;

    #[test]
    fn canary_takes_seconds_or_a_duration_within_bounds() {
        assert_eq!(parse_canary("90"), Ok(90));
        assert_eq!(parse_canary("90s"), Ok(90));
        assert_eq!(parse_canary("5m"), Ok(300));
        assert_eq!(parse_canary("1h30m"), Ok(5400));
        assert_eq!(parse_canary("24h"), Ok(86400));
        for bad in ["0", "0s", "25h", "1.5s", "1500ms", "soon", "-5", ""] {
            assert!(parse_canary(bad).is_err(), "{bad} must be refused");
        }
        assert!(parse_canary("soon").unwrap_err().contains("90s, 5m, 1h30m"));
        assert!(parse_canary("25h").unwrap_err().contains("1 s to 24 h"));
    }
}
