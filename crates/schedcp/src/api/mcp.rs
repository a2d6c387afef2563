//! MCP: the operation registry as MCP tools, through the official SDK
//! (rmcp). The same handler serves streamable HTTP (token per request, from
//! `Authorization`) and the daemon's socket (token given once, up front).
//!
//! Refusals at the door (no or bad token, missing scope, rate limit, oversize
//! arguments) are JSON-RPC errors with the API's code in `data`; failures of
//! the work itself (bad values, unknown policy, a busy lab) are tool results
//! with `isError: true`, whose text the model reads.

use std::sync::Arc;

use axum::http::request::Parts;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
    Implementation, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;

use super::error::{ApiError, Code};
use super::jobs::JobStatus;
use super::services::Call;
use super::Services;

const INSTRUCTIONS: &str = "schedcp controls this machine's Linux CPU scheduler (sched_ext). \
Typical flow: system_info and observe_summary to see the workload; policy_search to find \
schedulers that fit it; policy_show for one; policy_add to propose your own (BPF C); \
verify_submit to prove it safe in a micro-VM (a job: job_status); verify_report for evidence. \
Nothing unverified can ever be deployed.";

#[derive(Clone)]
pub struct McpHandler {
    services: Arc<Services>,
    door: &'static str,
    peer: String,
    /// Fixed for a socket connection; `None` on HTTP (read per request).
    token: Option<String>,
}

impl McpHandler {
    pub fn new(
        services: Arc<Services>,
        door: &'static str,
        peer: String,
        token: Option<String>,
    ) -> McpHandler {
        McpHandler {
            services,
            door,
            peer,
            token,
        }
    }

    fn token(&self, ctx: &RequestContext<RoleServer>) -> Option<String> {
        self.token.clone().or_else(|| {
            let parts = ctx.extensions.get::<Parts>()?;
            super::rest::bearer(&parts.headers)
        })
    }

    fn tools(&self) -> Vec<Tool> {
        self.services
            .ops()
            .iter()
            .map(|op| {
                let mut description = op.description.to_string();
                description.push_str(&format!(" [scope: {}]", op.scope));
                Tool::new(op.name, description, op.input_schema.clone())
                    .with_raw_output_schema(op.output_schema.clone())
                    .with_annotations(
                        ToolAnnotations::new()
                            .read_only(op.read_only)
                            .destructive(false),
                    )
            })
            .collect()
    }
}

fn refusal(e: &ApiError) -> ErrorData {
    ErrorData::new(
        ErrorCode(e.code.jsonrpc()),
        e.message.clone(),
        serde_json::to_value(e).ok(),
    )
}

impl ServerHandler for McpHandler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("schedcp", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let token = self.token(&ctx);
        self.services
            .note(self.door, &self.peer, token.as_deref(), "tools/list")
            .await
            .map_err(|e| refusal(&e))?;
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let token = self.token(&ctx);
        let args = request
            .arguments
            .map(Value::Object)
            .unwrap_or_else(|| Value::Object(Default::default()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<JobStatus>();
        let forward = ctx.meta.get_progress_token().map(|pt| {
            let peer = ctx.peer.clone();
            tokio::spawn(async move {
                while let Some(s) = rx.recv().await {
                    let p = ProgressNotificationParam::new(pt.clone(), f64::from(s.steps))
                        .with_message(format!("{}: {}", s.title, s.message));
                    if peer.notify_progress(p).await.is_err() {
                        break;
                    }
                }
            })
        });
        let call = Call {
            door: self.door,
            peer: self.peer.clone(),
            token,
            op: &request.name,
            args,
        };
        let out = self.services.call(call, Some(tx)).await;
        if let Some(f) = forward {
            let _ = f.await;
        }
        match out {
            Ok(v) => Ok(CallToolResult::structured(v).into()),
            Err(e) => match e.code {
                Code::Unauthorized
                | Code::Forbidden
                | Code::RateLimited
                | Code::TooLarge
                | Code::Internal => Err(refusal(&e)),
                Code::NotFound if self.services.op(&request.name).is_none() => Err(refusal(&e)),
                _ => Ok(CallToolResult::error(vec![ContentBlock::text(
                    serde_json::to_string(&e).unwrap_or_else(|_| e.to_string()),
                )])
                .into()),
            },
        }
    }
}
