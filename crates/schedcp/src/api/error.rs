//! Errors at the API doors: a stable code, an HTTP status, a precise message.

use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    Unauthorized,
    Forbidden,
    InvalidInput,
    NotFound,
    TooLarge,
    RateLimited,
    Busy,
    /// A per-token quota ([policies] quota_*) is used up.
    QuotaExceeded,
    /// The state directory's disk is below `api.min_free_mib`.
    DiskLow,
    Setup,
    Internal,
}

impl Code {
    pub fn http_status(self) -> u16 {
        match self {
            Code::Unauthorized => 401,
            Code::Forbidden | Code::QuotaExceeded => 403,
            Code::InvalidInput => 400,
            Code::NotFound => 404,
            Code::TooLarge => 413,
            Code::RateLimited | Code::Busy => 429,
            Code::DiskLow => 507,
            Code::Setup => 503,
            Code::Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::InvalidInput => "invalid_input",
            Code::NotFound => "not_found",
            Code::TooLarge => "too_large",
            Code::RateLimited => "rate_limited",
            Code::Busy => "busy",
            Code::QuotaExceeded => "quota_exceeded",
            Code::DiskLow => "disk_low",
            Code::Setup => "setup",
            Code::Internal => "internal",
        }
    }

    /// JSON-RPC error code for MCP (the standard ones where they fit).
    pub fn jsonrpc(self) -> i32 {
        match self {
            Code::InvalidInput | Code::TooLarge => -32602,
            Code::Internal => -32603,
            Code::NotFound => -32002,
            Code::Unauthorized => -32001,
            Code::Forbidden => -32003,
            Code::RateLimited | Code::Busy => -32029,
            Code::Setup => -32004,
            Code::DiskLow => -32005,
            Code::QuotaExceeded => -32006,
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// For `rate_limited` and `busy`: when to try again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<f64>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::InvalidInput, message)
    }

    pub fn internal(e: anyhow::Error) -> ApiError {
        tracing::error!("internal error: {e:#}");
        ApiError::new(Code::Internal, format!("internal error: {e:#}"))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match e {
            Error::NotFound(m) => ApiError::new(Code::NotFound, m),
            Error::Input(m) | Error::Compile(m) => ApiError::new(Code::InvalidInput, m),
            Error::Setup(m) => ApiError::new(Code::Setup, m),
            Error::Forbidden(m) => ApiError::new(Code::Forbidden, m),
            Error::Quota(m) => ApiError::new(Code::QuotaExceeded, m),
            Error::Internal(e) => ApiError::internal(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_decides_the_status_not_the_wording() {
        let nf = ApiError::from(Error::NotFound("whatever the words".into()));
        assert_eq!(nf.code.http_status(), 404);
        // Input that merely mentions "no policy" stays a 400.
        let bad = ApiError::from(Error::Input("no policy may be named like that".into()));
        assert_eq!(bad.code.http_status(), 400);
    }
}
