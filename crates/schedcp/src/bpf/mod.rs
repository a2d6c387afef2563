//! Turning scheduler sources into BPF objects: the header bundle schedcp
//! ships and the clang invocation. (Loading happens in the guest agent.)

pub mod compile;
pub mod include;
