//! Benchmarks of schedcp's own machinery. (Workload benchmarks, which judge
//! schedulers, are the observe service's; these judge schedcp.)
//!
//! - [`probe_overhead`]: what the runqlat probe costs per event, against
//!   libbpf-tools' runqlat on the same workload in the same run.

pub mod hackbench;
pub mod probe_overhead;
pub mod reference;
mod tools;
