//! Signed checkpoints: how often the writer signs one, what one looks like
//! in the log, and how long an unsigned stretch may honestly be.

use std::time::Duration;

use super::entry::Record;

/// The `call` of a checkpoint entry; its `detail` is the signed statement.
pub const CALL: &str = "audit.checkpoint";

/// Entries between signed checkpoints, at most (plus one batch).
pub const EVERY: u64 = 256;

/// How long new entries wait for a checkpoint, at most.
pub const AFTER: Duration = Duration::from_secs(60);

/// Entries that may lie between two signed checkpoints: [`EVERY`] plus
/// what one batch can add. More means checkpoints were removed.
pub const MAX_UNSIGNED: u64 = EVERY + 1024;

/// The entry carrying `signed` (a `v4.public` PASETO from
/// `verify::token::Keys::sign_checkpoint`).
pub fn record(signed: &str) -> Record {
    Record::call("-", "audit", "daemon", CALL, b"", "ok").with_detail(signed)
}
