//! The audit log: one JSON line per API call, hash-chained, in segments.
//!
//! Each entry carries its sequence number, the previous entry's hash and its
//! own: SHA-256 over the previous hash and the entry's canonical JSON
//! without `hash`. Editing an entry breaks its hash, inserting or deleting
//! one breaks the sequence and the chain, and cutting entries off the end is
//! caught by the head (last sequence number and hash) also kept in the
//! SQLite store. `log` holds the append protocol and its recovery,
//! `writer` the thread that commits in batches and signs checkpoints with
//! the daemon's key (`checkpoint`), `refusals` what keeps refused callers
//! from flooding it, `verify` the check.

mod checkpoint;
mod entry;
mod log;
mod refusals;
mod verify;
mod writer;

pub use entry::{bounded, Entry, Record, GENESIS};
pub use log::{path, segments, AuditLog};
pub use refusals::{peer_key, Refusals, Verdict};
pub use verify::{tail, verify, Verification};
pub use writer::Auditor;
