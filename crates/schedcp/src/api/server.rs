//! The daemon's listeners: the Unix socket (MCP over the stream, after a
//! one-line handshake that carries the token; peer credentials checked) and,
//! when configured, HTTP (MCP streamable HTTP at `/mcp`, REST at `/v1`).
//! Both stop on SIGINT/SIGTERM; in-flight HTTP requests are drained.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::mcp::McpHandler;
use super::rest;
use super::Services;
use crate::error::Error;

/// The first line a socket client sends: `SCHEDCP-MCP/1 <token>`.
pub const HANDSHAKE: &str = "SCHEDCP-MCP/1";

/// Serve until `stop` is cancelled.
pub async fn serve(services: Arc<Services>, stop: CancellationToken) -> Result<(), Error> {
    let socket = services.cfg.api.socket.clone();
    let unix = bind_socket(&socket)?;
    tracing::info!("listening on {}", socket.display());
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (services, stop) = (services.clone(), stop.clone());
        tasks.spawn(async move { accept_socket(unix, services, stop).await });
    }
    if let Some(addr) = services.cfg.api.http.clone() {
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| Error::Input(format!("api.http '{addr}': {e}")))?;
        if !addr.ip().is_loopback() {
            tracing::warn!(
                "HTTP on {addr}, which is not loopback: tokens travel in clear unless TLS is in front"
            );
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Setup(format!("cannot listen on {addr}: {e}")))?;
        tracing::info!("listening on http://{addr} (MCP at /mcp, REST at /v1)");
        let app = http_app(services.clone(), stop.clone());
        let stop = stop.clone();
        tasks.spawn(async move {
            let r = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
            if let Err(e) = r {
                tracing::error!("HTTP server: {e}");
            }
        });
    }
    {
        // Summaries of refusal floods are written when their window closes.
        let (services, stop) = (services.clone(), stop.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => services.flush_refusals(false).await,
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    services.flush_refusals(true).await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// The HTTP application: REST and MCP (the latter behind a token check, so a
/// refused client gets a plain 401 before any MCP session exists).
pub fn http_app(services: Arc<Services>, stop: CancellationToken) -> axum::Router {
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(stop.child_token())
        .with_sse_keep_alive(Some(Duration::from_secs(15)));
    let factory = {
        let services = services.clone();
        move || {
            Ok(McpHandler::new(
                services.clone(),
                "mcp-http",
                "http".into(),
                None,
            ))
        }
    };
    let mcp = StreamableHttpService::new(factory, Arc::new(LocalSessionManager::default()), config);
    let max = services.cfg.api.max_request_bytes;
    let mcp_routes = axum::Router::new()
        .nest_service("/mcp", mcp)
        .layer(middleware::from_fn_with_state(
            max + MCP_ENVELOPE_BYTES,
            limit_body,
        ))
        .layer(middleware::from_fn_with_state(
            services.clone(),
            require_token,
        ));
    let metrics = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(services.clone());
    rest::router(services)
        .merge(mcp_routes)
        .merge(metrics)
        .layer(axum::extract::DefaultBodyLimit::max(max))
}

/// Room for the JSON-RPC envelope around a tool call's arguments on /mcp:
/// arguments over `api.max_request_bytes` are refused by the one
/// argument check with a precise message the MCP client shows; only a
/// body far beyond it is cut off here, where the client sees just a 413.
const MCP_ENVELOPE_BYTES: usize = 64 * 1024;

/// rmcp's streamable-HTTP service reads the request body itself (with its
/// own 4 MiB cap), so axum's `DefaultBodyLimit` never reaches it: bound the
/// body here, in front of it — at once by its declared length, and while
/// it streams for a body without one.
async fn limit_body(State(max): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return super::error::ApiError::new(
            super::error::Code::TooLarge,
            format!(
                "the request body is {} bytes; the limit is {max} (api.max_request_bytes + 64 KiB for the MCP envelope)",
                declared.unwrap_or_default()
            ),
        )
        .into_response();
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::Body::new(http_body_util::Limited::new(body, max));
    next.run(Request::from_parts(parts, body)).await
}

/// Prometheus exposition: public only where the operator set
/// `api.metrics_public`; otherwise an observe token, like any read.
async fn metrics(
    State(services): State<Arc<Services>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let s = services.clone();
    let token = rest::bearer(&headers);
    let out = tokio::task::spawn_blocking(move || {
        if !s.cfg.api.metrics_public {
            let who = s.authenticate(token.as_deref())?;
            if !who.allows(super::auth::Scope::Observe) {
                return Err(super::error::ApiError::new(
                    super::error::Code::Forbidden,
                    "/metrics needs a token with the observe scope",
                ));
            }
        }
        super::metrics::render(&s.cfg).map_err(super::error::ApiError::from)
    })
    .await;
    match out {
        Ok(Ok(text)) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => super::error::ApiError::internal(anyhow::anyhow!("{e}")).into_response(),
    }
}

async fn require_token(
    State(services): State<Arc<Services>>,
    addr: ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let token = rest::bearer(req.headers());
    let valid = {
        let s = services.clone();
        let t = token.clone();
        tokio::task::spawn_blocking(move || s.authenticate(t.as_deref())).await
    };
    match valid {
        Ok(Ok(_)) => next.run(req).await,
        Ok(Err(_)) => {
            let call = format!("{} /mcp", req.method());
            let peer = rest::peer(&addr);
            match services
                .note("mcp-http", &peer, token.as_deref(), &call)
                .await
            {
                Err(e) => e.into_response(),
                Ok(_) => next.run(req).await,
            }
        }
        Err(e) => super::error::ApiError::internal(anyhow::anyhow!("{e}")).into_response(),
    }
}

/// The socket's directory must be ours and writable by no one else: in a
/// directory another user can write, they could swap the socket for a
/// symlink between bind and chmod, or plant their own.
fn check_socket_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::Setup(format!("cannot inspect {}: {e}", dir.display())))?;
    let me = nix::unistd::geteuid().as_raw();
    if !m.is_dir() {
        return Err(Error::Setup(format!(
            "the socket directory {} is not a directory (a symlink?); point api.socket elsewhere",
            dir.display()
        )));
    }
    if m.uid() != me || m.mode() & 0o022 != 0 {
        return Err(Error::Setup(format!(
            "the socket directory {} is owned by uid {} with mode {:o}; it must be owned by uid {me} and writable by no one else (chown/chmod it, or point api.socket elsewhere)",
            dir.display(),
            m.uid(),
            m.mode() & 0o7777
        )));
    }
    Ok(())
}

fn bind_socket(path: &Path) -> Result<UnixListener, Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Setup(format!("cannot create {}: {e}", dir.display())))?;
        check_socket_dir(dir)?;
    }
    if path.exists() {
        // A socket nobody answers on is left over from a crash.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::Setup(format!(
                "another schedcp daemon is listening on {}",
                path.display()
            )));
        }
        std::fs::remove_file(path)
            .map_err(|e| Error::Setup(format!("cannot remove stale {}: {e}", path.display())))?;
    }
    let l = UnixListener::bind(path)
        .map_err(|e| Error::Setup(format!("cannot listen on {}: {e}", path.display())))?;
    // Anyone may connect; the peer-credential check and the token decide.
    // The directory is ours alone (checked above), and the path is still
    // the socket we bound: never follow a symlink here.
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666));
    }
    Ok(l)
}

async fn accept_socket(l: UnixListener, services: Arc<Services>, stop: CancellationToken) {
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            c = l.accept() => c,
        };
        match conn {
            Ok((stream, _)) => {
                let (services, stop) = (services.clone(), stop.clone());
                tokio::spawn(async move {
                    if let Err(e) = socket_session(stream, services, stop).await {
                        tracing::debug!("socket session: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Whether this local user may use the socket at all.
fn peer_allowed(services: &Services, uid: u32, gid: u32) -> Result<(), String> {
    if uid == 0 {
        return Ok(());
    }
    let api = &services.cfg.api;
    let user = nix::unistd::User::from_uid(uid.into()).ok().flatten();
    if let Some(u) = &user {
        if api.socket_users.iter().any(|n| n == &u.name) {
            return Ok(());
        }
    }
    if let Some(gname) = &api.socket_group {
        if let Ok(Some(g)) = nix::unistd::Group::from_name(gname) {
            let member = user.as_ref().is_some_and(|u| g.mem.contains(&u.name));
            if g.gid.as_raw() == gid || member {
                return Ok(());
            }
        }
    }
    Err(format!(
        "uid {uid} may not use this socket; allow it with api.socket_users or api.socket_group in the daemon's config"
    ))
}

async fn socket_session(
    stream: UnixStream,
    services: Arc<Services>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let cred = stream.peer_cred()?;
    let peer = format!(
        "uid={} pid={}",
        cred.uid(),
        cred.pid().map_or_else(|| "?".into(), |p| p.to_string())
    );
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    if let Err(why) = peer_allowed(&services, cred.uid(), cred.gid()) {
        services.refuse_peer("mcp-socket", &peer, &why).await;
        write.write_all(format!("ERR {why}\n").as_bytes()).await?;
        return Ok(());
    }
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut limited = (&mut reader).take(4096);
        limited.read_line(&mut line).await
    })
    .await;
    let token = match (read, line.trim_end().split_once(' ')) {
        (Ok(Ok(_)), Some((HANDSHAKE, t))) => t.to_string(),
        _ => {
            write
                .write_all(format!("ERR expected '{HANDSHAKE} <token>' first\n").as_bytes())
                .await?;
            return Ok(());
        }
    };
    let who = services
        .note("mcp-socket", &peer, Some(&token), "connect")
        .await;
    if let Err(e) = who {
        write
            .write_all(format!("ERR {}\n", e.message).as_bytes())
            .await?;
        return Ok(());
    }
    write.write_all(b"OK\n").await?;
    let max_line = services.cfg.api.max_request_bytes + MCP_ENVELOPE_BYTES;
    let handler = McpHandler::new(services, "mcp-socket", peer, Some(token));
    let reader = super::line_limit::LineLimited::new(reader, max_line);
    let running = handler
        .serve_with_ct((reader, write), stop.child_token())
        .await?;
    running.waiting().await?;
    Ok(())
}

use tokio::io::AsyncReadExt as _;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_socket_directory_others_can_write_or_a_symlink_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let ours = t.path().join("ours");
        std::fs::create_dir(&ours).unwrap();
        std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o755)).unwrap();
        check_socket_dir(&ours).unwrap();
        std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_socket_dir(&ours).unwrap_err().to_string();
        assert!(e.contains("writable by no one else"), "{e}");
        let link = t.path().join("link");
        std::os::unix::fs::symlink("/tmp", &link).unwrap();
        let e = check_socket_dir(&link).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        // bind_socket refuses it before binding anything.
        assert!(bind_socket(&ours.join("s.sock")).is_err());
        assert!(!ours.join("s.sock").exists());
    }
}
