//! `schedcp serve` (the daemon) and `schedcp mcp` (the stdio bridge an agent launches).

use std::path::PathBuf;

use clap::Args;
use schedcp::api::server::{self, HANDSHAKE};
use schedcp::api::Services;
use schedcp::config::Config;
use schedcp::error::{exit, Error};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  schedcp serve                                  # socket only (api.socket)
  schedcp serve --http 127.0.0.1:7433            # and MCP at /mcp, REST at /v1
  curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:7433/v1/system

Agents need a token: `schedcp token create --name agent --scopes observe,propose`.
Every call is appended to the hash-chained audit log (`schedcp audit verify`).
Stops on SIGINT/SIGTERM, draining in-flight requests. Runs as root (it reads
kernel state and will attach schedulers); agents connect unprivileged.")]
pub struct ServeArgs {
    /// Also serve HTTP on this address (loopback unless api.allow_remote_http).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// The Unix socket (default: api.socket, /run/schedcp/schedcp.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

pub fn serve(mut cfg: Config, a: ServeArgs) -> Result<i32, Error> {
    if let Some(h) = a.http {
        cfg.api.http = Some(h);
    }
    if let Some(s) = a.socket {
        cfg.api.socket = s;
    }
    cfg.api
        .validate()
        .map_err(|e| Error::Input(format!("{e:#}")))?;
    let continuous_cfg = cfg.tune.continuous.clone();
    let services = Services::open(cfg)?;
    services.start_deploy()?;
    // Continuous tuning, when configured: a thread on the deploy controller.
    let continuous = match continuous_cfg {
        Some(cc) => Some(schedcp::tune::continuous::Continuous::start(
            services.cfg.clone(),
            cc,
            services
                .deployer()
                .map_err(|e| Error::Internal(anyhow::anyhow!("{e}")))?,
            Box::new(|line: &str| tracing::info!("{line}")),
        )?),
        None => None,
    };
    let rt = runtime()?;
    rt.block_on(async move {
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            tracing::info!("stopping");
            s.cancel();
        });
        let out = server::serve(services.clone(), stop).await;
        // The tuner first (it may be waiting on deploy), then deploy:
        // detach what it holds and record it before the process ends.
        drop(continuous);
        services.stop_deploy();
        out
    })?;
    Ok(exit::OK)
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(anyhow::anyhow!("starting the async runtime: {e}")))
}

#[derive(Debug, Args)]
#[command(after_help = "\
Speaks MCP on stdin/stdout and forwards everything to the schedcp daemon's
socket with your token. It needs no privilege. Claude Code:

  claude mcp add schedcp --env SCHEDCP_TOKEN=scp_... -- schedcp mcp

Exit codes: 0 the client closed the session, 2 no token, 3 the daemon is not
running or refused the token (the reason is printed on stderr).")]
pub struct McpArgs {
    /// The daemon's socket (default: api.socket).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// API token (prefer the environment: it does not show in `ps`).
    #[arg(long, env = "SCHEDCP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub fn mcp(cfg: Config, a: McpArgs) -> Result<i32, Error> {
    let socket = a.socket.unwrap_or(cfg.api.socket);
    let token = a.token.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
        Error::Input(
            "no API token: set SCHEDCP_TOKEN (create one with `schedcp token create`)".into(),
        )
    })?;
    if token.contains(['\n', '\r', ' ']) {
        return Err(Error::Input("the API token contains whitespace".into()));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(e.into()))?;
    rt.block_on(async move {
        let stream = tokio::net::UnixStream::connect(&socket).await.map_err(|e| {
            Error::Setup(format!(
                "cannot reach the schedcp daemon at {}: {e}; start it with `schedcp serve` (or systemctl start schedcp)",
                socket.display()
            ))
        })?;
        let (read, mut write) = stream.into_split();
        let mut reader = tokio::io::BufReader::new(read);
        write
            .write_all(format!("{HANDSHAKE} {token}\n").as_bytes())
            .await
            .map_err(|e| Error::Setup(format!("talking to the daemon: {e}")))?;
        let mut answer = String::new();
        reader
            .read_line(&mut answer)
            .await
            .map_err(|e| Error::Setup(format!("talking to the daemon: {e}")))?;
        match answer.trim_end() {
            "OK" => {}
            other => {
                return Err(Error::Setup(format!(
                    "the schedcp daemon refused the connection: {}",
                    other.strip_prefix("ERR ").unwrap_or(other)
                )))
            }
        }
        // A byte pipe: the MCP session is the agent's with the daemon.
        let up = async {
            let mut stdin = tokio::io::stdin();
            let r = tokio::io::copy(&mut stdin, &mut write).await;
            let _ = write.shutdown().await;
            r
        };
        let down = async {
            let mut stdout = tokio::io::stdout();
            let r = tokio::io::copy(&mut reader, &mut stdout).await;
            let _ = stdout.flush().await;
            r
        };
        tokio::select! {
            _ = up => {},
            _ = down => {},
        }
        Ok::<_, Error>(())
    })?;
    Ok(exit::OK)
}
