//! Lab tier: boots the sched_ext micro-VM (the host tier's needs plus a cached guest kernel and QEMU).
//!
//! One test binary per tier (one link, not one per file). Run with
//! `scripts/test.sh` (every tier) or `cargo test --release --features schedcp/tier-lab`.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod deploy_external;
mod deploy_node;
mod knobs_lab;
mod lab_vm;
mod main_job;
mod observe_benchmark_lab;
mod tune_lab;
mod verify_pipeline;

#[test]
fn prerequisites() {
    common::tier::require("lab", common::tier::lab());
}
