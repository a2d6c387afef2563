//! External tier: PostgreSQL + pgvector, the pinned MCP/REST clients, the embedding model.
//!
//! One test binary per tier (one link, not one per file). Run with
//! `scripts/test.sh` (every tier) or `cargo test --release --features schedcp/tier-external`.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod embed_reference;
mod policy_backends;
mod policy_cli;
mod policy_library;
mod policy_store_crash;

#[test]
fn prerequisites() {
    common::tier::require("external", common::tier::external());
}
