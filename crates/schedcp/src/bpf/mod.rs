//! Scheduler packages to BPF objects, safely: the built-in packages
//! (`schedulers/<name>/{main.bpf.c,policy.toml}`) and their metadata, the
//! header bundle schedcp ships, the include allowlist, and clang run inside
//! the compile jail. (Loading happens in the guest agent or the daemon.)

pub mod builtin;
pub mod compile;
pub mod include;
pub mod includes;
pub mod jail;
pub mod meta;
