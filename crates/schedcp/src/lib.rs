//! schedcp: a control plane through which AI agents and schedcp's own tuner
//! observe a Linux machine, find or write a better sched_ext CPU scheduler,
//! prove it safe, deploy it, and roll it back when it hurts.
//!
//! Services (each a module with a typed API that the CLI, MCP and REST call):
//! [`observe`], [`policies`], [`verify`], [`deploy`], [`tune`]; the doors in
//! [`api`]; the sched_ext micro-VM in [`lab`]; scheduler compilation in [`bpf`].

// The layers, bottom to top, are listed in `layers.rs`: a module uses only
// modules below it, and its test fails on an upward or cyclic `use`.
pub mod api;
pub mod bpf;
pub mod compare;
pub mod config;
pub mod deploy;
pub mod doctor;
pub mod error;
pub mod host;
pub mod knobs;
pub mod lab;
pub mod node;
pub mod observe;
pub mod policies;
pub mod selfbench;
pub mod store;
pub mod tune;
pub mod verify;

#[cfg(test)]
mod layers;
