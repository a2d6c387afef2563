//! observe — the agent's senses, layered so that an LLM spends few tokens:
//! [`summary`] (one compact screen), [`detail`] (per-CPU, per-task,
//! histograms), [`probes`] (bounded eBPF probes aggregated in kernel maps),
//! [`profile`] (perf/strace through a sandbox), and the feedback channel:
//! workload [`profiles`] and [`benchmark`] runs judged by [`stats`].

pub mod benchmark;
pub mod detail;
mod perf_counters;
pub mod probes;
pub mod profile;
pub mod profiles;
pub mod sample;
pub mod scheduler;
pub mod summary;
pub mod tokens;
