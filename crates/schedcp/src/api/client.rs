//! Calling a schedcp daemon's tools from Rust: over REST (`--url`, e.g. a
//! lab node or another machine) or over the local socket (MCP, what the
//! CLI uses to reach the daemon that holds the deployed scheduler).
//!
//! Routes come from the same operation registry the daemon serves, so a
//! tool's name is all a caller needs.

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::jobs::{JobState, JobStatus};
use super::ops::Method;
use super::server::HANDSHAKE;
use super::tools::deploy::{DeployInput, RollbackInput};
use crate::deploy::Deployment;
use crate::error::Error;

/// A failed call: the daemon's error code (or `transport`) and message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} ({code})")]
pub struct CallError {
    pub code: String,
    pub message: String,
    /// HTTP status over REST, the JSON-RPC code over MCP.
    pub status: i64,
}

impl From<CallError> for Error {
    fn from(e: CallError) -> Error {
        match e.code.as_str() {
            "not_found" => Error::NotFound(e.message),
            "invalid_input" | "forbidden" | "unauthorized" | "too_large" | "tool_error" => {
                Error::Input(e.message)
            }
            "setup" => Error::Setup(e.message),
            _ => Error::Internal(anyhow::anyhow!("{e}")),
        }
    }
}

fn transport(e: impl std::fmt::Display) -> CallError {
    CallError {
        code: "transport".into(),
        message: e.to_string(),
        status: 0,
    }
}

/// REST client for one daemon.
pub struct Rest {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Rest {
    /// `base` like `http://127.0.0.1:7433`; `timeout` bounds every call.
    pub fn new(base: &str, token: &str, timeout: Duration) -> Result<Rest, Error> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(Error::Input(format!(
                "--url {base}: only http:// is supported (the daemon serves plain HTTP; put TLS in front)"
            )));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Ok(Rest {
            base,
            token: token.to_string(),
            agent,
        })
    }

    /// Call tool `name` with `args`.
    pub fn call(&self, name: &str, args: &Value) -> Result<Value, CallError> {
        let op = super::tools::all()
            .into_iter()
            .find(|o| o.name == name)
            .ok_or_else(|| transport(format!("no tool '{name}' in this schedcp")))?;
        let url = format!("{}/v1{}", self.base, op.path);
        let auth = format!("Bearer {}", self.token);
        let resp = match op.method {
            Method::Get => {
                let mut req = self.agent.get(&url).header("Authorization", &auth);
                if let Some(obj) = args.as_object() {
                    for (k, v) in obj {
                        let v = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        req = req.query(k, &v);
                    }
                }
                req.call()
            }
            Method::Post => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(args),
        };
        let mut resp = resp.map_err(transport)?;
        let status = resp.status().as_u16();
        let body: Value = resp.body_mut().read_json().map_err(transport)?;
        if status >= 400 {
            return Err(CallError {
                code: body["code"].as_str().unwrap_or("error").to_string(),
                message: body["message"].as_str().unwrap_or("").to_string(),
                status: status as i64,
            });
        }
        Ok(body)
    }
}

/// Typed calls: the registry's own input and output types on both ends, so
/// a renamed field breaks the build, not a remote caller at run time.
impl Rest {
    /// Call tool `name` with a typed input; decode the typed output.
    pub fn call_typed<I: Serialize, O: DeserializeOwned>(
        &self,
        name: &str,
        input: &I,
    ) -> Result<O, CallError> {
        let args = serde_json::to_value(input).map_err(transport)?;
        let out = self.call(name, &args)?;
        serde_json::from_value(out)
            .map_err(|e| transport(format!("{name}: unexpected answer shape: {e}")))
    }

    /// A job tool whose input waits (`wait_seconds`): the job's typed result,
    /// or its failure as an error.
    pub fn call_job<I: Serialize, O: DeserializeOwned>(
        &self,
        name: &str,
        input: &I,
    ) -> Result<O, CallError> {
        let job: JobStatus = self.call_typed(name, input)?;
        match (job.state, job.result) {
            (JobState::Succeeded, Some(r)) => serde_json::from_value(r)
                .map_err(|e| transport(format!("{name}: unexpected result shape: {e}"))),
            (state, _) => Err(CallError {
                code: "job_failed".into(),
                message: format!(
                    "{} ended {state:?}: {}",
                    job.title,
                    job.error.unwrap_or(job.message)
                ),
                status: 0,
            }),
        }
    }

    /// `deploy`, waiting for the verdict.
    pub fn deploy(&self, input: &DeployInput) -> Result<Deployment, CallError> {
        self.call_job("deploy", input)
    }

    /// `deploy_rollback`.
    pub fn deploy_rollback(&self, reason: &str) -> Result<Deployment, CallError> {
        self.call_typed(
            "deploy_rollback",
            &RollbackInput {
                reason: reason.into(),
            },
        )
    }
}

/// One MCP session over the daemon's Unix socket, newline-delimited JSON-RPC.
pub struct Session {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    next_id: u64,
}

impl Session {
    pub async fn open(socket: &Path, token: &str) -> anyhow::Result<Session> {
        let (r, mut w) = UnixStream::connect(socket).await?.into_split();
        let mut reader = BufReader::new(r);
        w.write_all(format!("{HANDSHAKE} {token}\n").as_bytes())
            .await?;
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        anyhow::ensure!(line.trim() == "OK", "handshake refused: {}", line.trim());
        let mut s = Session {
            reader,
            writer: w,
            next_id: 0,
        };
        s.request(
            "initialize",
            json!({ "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": { "name": "schedcp-cli", "version": env!("CARGO_PKG_VERSION") } }),
        )
        .await?;
        s.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await?;
        Ok(s)
    }

    async fn send(&mut self, v: &Value) -> anyhow::Result<()> {
        let mut text = v.to_string();
        text.push('\n');
        self.writer.write_all(text.as_bytes()).await?;
        Ok(())
    }

    /// A JSON-RPC request; notifications in between (progress) are skipped.
    pub async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .await?;
        let mut line = String::new();
        loop {
            line.clear();
            anyhow::ensure!(
                self.reader.read_line(&mut line).await? > 0,
                "session closed"
            );
            let v: Value = serde_json::from_str(&line)?;
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    anyhow::bail!("{e}");
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// `tools/call`: the structured result, or the tool's error.
    pub async fn call(&mut self, name: &str, args: Value) -> Result<Value, CallError> {
        let r = self
            .request("tools/call", json!({ "name": name, "arguments": args }))
            .await
            .map_err(|e| {
                let text = e.to_string();
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                CallError {
                    code: "refused".into(),
                    message: v["message"].as_str().unwrap_or(&text).to_string(),
                    status: v["code"].as_i64().unwrap_or(0),
                }
            })?;
        if r["isError"].as_bool() == Some(true) {
            let text = r["content"][0]["text"].as_str().unwrap_or("").to_string();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(CallError {
                code: v["code"].as_str().unwrap_or("tool_error").to_string(),
                message: v["message"].as_str().unwrap_or(&text).to_string(),
                status: 0,
            });
        }
        Ok(r["structuredContent"].clone())
    }
}
