//! One audit entry: what it holds, how it is hashed, and the bounds every
//! caller-supplied string is cut to before it is written.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest `call` or `peer` kept in an entry; a tool name is chosen by the
/// caller, and an unknown one must not make a 3 MB line.
pub const MAX_FIELD: usize = 96;

/// One call, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Entry {
    pub seq: u64,
    pub at: String,
    /// Token id, or `-` when the call had no valid token.
    pub token: String,
    /// `mcp-http`, `mcp-socket`, `rest`, `deploy`, `audit`.
    pub door: String,
    /// Who connected: `uid=0 pid=123` on the socket, the address on HTTP.
    pub peer: String,
    /// Tool name (MCP) or `METHOD /path` (REST); `audit.*` for the log's own
    /// entries (summaries of refusals, repairs, checkpoints).
    pub call: String,
    /// SHA-256 of the arguments as received.
    pub args_sha256: String,
    /// `ok`, `begun` (an action with effects is about to run), or the error
    /// code (`unauthorized`, `forbidden`, `rate_limited`, ...).
    pub outcome: String,
    pub duration_ms: f64,
    /// For the end of an action: the sequence number of its `begun` entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<u64>,
    /// For the log's own entries: what happened, in words (bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub prev: String,
    pub hash: String,
}

impl Entry {
    pub(super) fn compute_hash(&self) -> String {
        let mut body = serde_json::to_value(self).expect("entry serialises");
        body.as_object_mut().expect("object").remove("hash");
        let mut h = Sha256::new();
        h.update(self.prev.as_bytes());
        h.update(b"\n");
        h.update(body.to_string().as_bytes());
        hex::encode(h.finalize())
    }
}

/// What to record about a call (the log fills in seq, time and hashes).
#[derive(Debug, Clone)]
pub struct Record {
    pub token: String,
    pub door: String,
    pub peer: String,
    pub call: String,
    pub args_sha256: String,
    pub outcome: String,
    pub duration_ms: f64,
    pub of: Option<u64>,
    pub detail: Option<String>,
}

impl Record {
    /// A call at a door; `call` and `peer` are bounded here, once.
    pub fn call(
        token: &str,
        door: &str,
        peer: &str,
        call: &str,
        args: &[u8],
        outcome: &str,
    ) -> Record {
        Record {
            token: bounded(token),
            door: bounded(door),
            peer: bounded(peer),
            call: bounded(call),
            args_sha256: hex::encode(Sha256::digest(args)),
            outcome: bounded(outcome),
            duration_ms: 0.0,
            of: None,
            detail: None,
        }
    }

    pub fn took(mut self, ms: f64) -> Record {
        self.duration_ms = (ms * 1000.0).round() / 1000.0;
        self
    }

    pub fn ending(mut self, begun: Option<u64>) -> Record {
        self.of = begun;
        self
    }

    pub fn with_detail(mut self, detail: &str) -> Record {
        self.detail = Some(bounded_to(detail, 1024));
        self
    }

    pub(super) fn into_entry(self, seq: u64, prev: &str) -> Entry {
        let mut e = Entry {
            seq,
            at: crate::host::now_rfc3339(),
            token: self.token,
            door: self.door,
            peer: self.peer,
            call: self.call,
            args_sha256: self.args_sha256,
            outcome: self.outcome,
            duration_ms: self.duration_ms,
            of: self.of,
            detail: self.detail,
            prev: prev.to_string(),
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        e
    }
}

/// `s` cut to [`MAX_FIELD`] characters, control characters escaped; a cut
/// says how long the original was, so nothing is silently shortened.
pub fn bounded(s: &str) -> String {
    bounded_to(s, MAX_FIELD)
}

fn bounded_to(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .take(max)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if s.chars().nth(max).is_some() {
        format!("{clean}…({} bytes)", s.len())
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_strings_are_bounded_and_escaped() {
        assert_eq!(bounded("system_info"), "system_info");
        let huge = "x".repeat(3_000_000);
        let b = bounded(&huge);
        assert!(b.len() < 200 && b.ends_with("…(3000000 bytes)"), "{b}");
        assert_eq!(bounded("a\nb\u{1b}[2J"), "a\\nb\\u{1b}[2J");
    }
}
