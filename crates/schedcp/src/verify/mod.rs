//! verify — the execution verifier (sandboxed compile, static analysis of the
//! object, the real kernel verifier and trials in the lab micro-VM, signed
//! deployment tokens). Not built yet: see the verifier issue. It will drive
//! `crate::lab` for the kernel-verifier and dynamic stages.
