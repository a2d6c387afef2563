//! observe — the agent's senses, layered so that an LLM spends few tokens:
//! [`summary`] (one compact screen), [`detail`] (per-CPU, per-task,
//! histograms), [`probes`] (bounded eBPF probes aggregated in kernel maps),
//! [`profilers`] (perf/strace through a sandbox), and the feedback channel:
//! [`workload_profiles`] and their [`benchmark`] runs, judged by the one
//! comparison engine ([`crate::compare`]).

pub mod benchmark;
pub mod detail;
mod perf_counters;
pub mod probes;
pub mod profile_signatures;
pub mod profilers;
pub mod sample;
pub mod scheduler;
pub mod signature;
pub mod summary;
pub mod tokens;
pub mod workload_profiles;
