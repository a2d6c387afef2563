//! REST under `/v1`: one route per operation (GET takes its input as a
//! query string, POST as a JSON body), the OpenAPI document at
//! `/v1/openapi.json`, errors as `{code, message}` with the HTTP status of
//! their code (and `Retry-After` on 429).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, MethodFilter};
use axum::{Json, Router};
use serde_json::Value;

use super::error::{ApiError, Code};
use super::ops::Method;
use super::services::Call;
use super::Services;

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = self.retry_after_s;
        let mut r = (status, Json(self)).into_response();
        if let Some(s) = retry {
            if let Ok(v) = HeaderValue::from_str(&format!("{}", s.ceil().max(1.0) as u64)) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

pub fn peer(addr: &ConnectInfo<SocketAddr>) -> String {
    addr.0.to_string()
}

async fn handle(
    services: Arc<Services>,
    name: &'static str,
    method: Method,
    addr: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Option<String>,
    body: Bytes,
) -> Response {
    let args = match method {
        Method::Get => {
            let op = services.op(name).expect("registered");
            match (op.from_query)(query.as_deref().unwrap_or("")) {
                Ok(v) => v,
                Err(e) => {
                    return ApiError::invalid(format!("invalid query for {name}: {e}"))
                        .into_response()
                }
            }
        }
        Method::Post if body.iter().all(u8::is_ascii_whitespace) => {
            Value::Object(Default::default())
        }
        Method::Post => match serde_json::from_slice::<Value>(&body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return ApiError::invalid("the request body must be a JSON object").into_response()
            }
            Err(e) => {
                return ApiError::invalid(format!("the request body is not JSON: {e}"))
                    .into_response()
            }
        },
    };
    let call = Call {
        door: "rest",
        peer: peer(&addr),
        token: bearer(&headers),
        op: name,
        args,
    };
    match services.call(call, None).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn openapi(State(services): State<Arc<Services>>) -> Response {
    Json(super::openapi::document(&services)).into_response()
}

async fn not_found() -> Response {
    ApiError::new(
        Code::NotFound,
        "no such endpoint; the API is described at /v1/openapi.json",
    )
    .into_response()
}

/// The `/v1` routes.
pub fn router(services: Arc<Services>) -> Router {
    let mut by_path: BTreeMap<&'static str, Vec<(Method, &'static str)>> = BTreeMap::new();
    for op in services.ops() {
        by_path
            .entry(op.path)
            .or_default()
            .push((op.method, op.name));
    }
    let mut r = Router::new().route("/v1/openapi.json", get(openapi));
    for (path, ops) in by_path {
        let mut mr = axum::routing::MethodRouter::new();
        for (method, name) in ops {
            let filter = match method {
                Method::Get => MethodFilter::GET,
                Method::Post => MethodFilter::POST,
            };
            mr = mr.merge(on(
                filter,
                move |State(s): State<Arc<Services>>,
                      addr: ConnectInfo<SocketAddr>,
                      headers: HeaderMap,
                      RawQuery(q): RawQuery,
                      body: Bytes| async move {
                    handle(s, name, method, addr, headers, q, body).await
                },
            ));
        }
        r = r.route(&format!("/v1{path}"), mr);
    }
    r.fallback(not_found).with_state(services)
}
