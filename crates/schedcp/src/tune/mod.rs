//! tune — the built-in decision engine. Today: the main job
//! ([`main_job`]), which compares the built-in schedulers with the kernel
//! default through the one comparison engine, keeps only a significant
//! winner, verifies it and deploys it under a canary on a target the
//! caller provides. The rule-based and learning tiers build on it.

pub mod main_job;
pub mod trial;
