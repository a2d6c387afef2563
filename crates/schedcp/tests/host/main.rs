//! Host tier: root, BPF probes, perf and strace, clang in the compile jail.
//!
//! One test binary per tier (one link, not one per file). Run with
//! `scripts/test.sh` (every tier) or `cargo test --release --features schedcp/tier-host`.

#[path = "../common/mod.rs"]
mod common;

mod api_hardening;
mod deploy_readmit;
mod deploy_workload;
mod faults;
mod knobs;
mod observe_probes;
mod observe_profile;
mod tune;
mod verify_analyze;
mod verify_compile;

#[test]
fn prerequisites() {
    common::tier::require("host", common::tier::host());
}
