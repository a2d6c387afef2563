//! verify — the execution verifier: sandboxed compile ([`includes`],
//! [`sandbox`], run by [`crate::bpf::compile`]), static analysis of the
//! object ([`analyze`]), the real kernel verifier and trials in the lab
//! micro-VM, judged by the observe service's statistics ([`pipeline`]), and
//! signed deployment tokens ([`token`]). The [`report`] records every stage;
//! [`service`] is the entry point callers use.
pub mod analyze;
pub mod pipeline;
pub mod report;
pub mod service;
pub mod token;
