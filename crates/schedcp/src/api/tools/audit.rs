//! The audit log over the API: the hash chain checked, and the last
//! entries (every call, and every deploy transition the controller made).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::audit::{Entry, Verification};
use crate::api::auth::Scope;
use crate::api::error::ApiError;
use crate::api::ops::{op, Ctx, Method, Op};

const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditInput {
    /// How many of the newest entries to return (default 50, max 10000).
    #[schemars(range(min = 1, max = 10000))]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditOutput {
    /// The whole log checked: every hash, the sequence, the chain, and the end against the store's head.
    pub verification: Verification,
    /// Oldest first.
    pub entries: Vec<Entry>,
}

fn audit(ctx: &Ctx<'_>, i: AuditInput) -> Result<AuditOutput, ApiError> {
    let limit = i.limit.unwrap_or(50);
    if !(1..=MAX_ENTRIES).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be 1..={MAX_ENTRIES}, got {limit}"
        )));
    }
    let (verification, entries) = ctx.services.audit_report(limit)?;
    Ok(AuditOutput {
        verification,
        entries,
    })
}

pub fn ops() -> Vec<Op> {
    vec![op(
        "audit",
        Scope::Admin,
        Method::Get,
        "/audit",
        true,
        "The daemon's hash-chained audit log: every API call (token id, door, peer, tool, SHA-256 of the arguments, outcome) and every deploy transition (call deploy.<event>, peer deployment #N). Checks the whole chain and returns the newest entries, oldest first. Admin scope: it names tokens and peers.",
        audit,
    )]
}
