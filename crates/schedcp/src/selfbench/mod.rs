//! Benchmarks of schedcp's own machinery. (Workload benchmarks, which judge
//! schedulers, are the observe service's; these judge schedcp.)
//!
//! - [`probe_overhead`]: what the runqlat probe costs per event, against
//!   libbpf-tools' runqlat on the same workload in the same run.
//! - [`policy_search`]: policy search latency per backend and size, and
//!   search quality against substring matching.
//! - [`api_latency`]: MCP tool-call latency of the daemon under concurrent sessions.
//! - [`api_load`]: the daemon under mixed load on both doors and under a refusal flood.
//! - [`canary_overhead`]: what a deploy canary's KPI window costs the workload.
//! - [`tune_bench`]: the tuner on scenarios with and without a better configuration.

pub mod api_latency;
pub mod api_load;
pub mod canary_overhead;
pub mod hackbench;
pub mod pg_scratch;
pub mod policy_search;
mod private_daemon;
pub mod probe_overhead;
pub mod reference;
mod tools;
pub mod tune_bench;
