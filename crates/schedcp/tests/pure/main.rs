//! Pure tier: no root, no VMs, no services — what a plain `cargo test` runs as any user.
//!
//! One test binary per tier (one link, not one per file). Run with
//! `scripts/test.sh` (every tier) or `cargo test`.

#[path = "../common/mod.rs"]
mod common;

mod fuzz;
mod observe_benchmark;
mod observe_summary;
