//! sched_ext from userspace: loading an arbitrary scheduler object and
//! attaching it through struct_ops ([`loader`]), supervising a scheduler
//! that is its own program ([`process`]), and the kernel's sched_ext sysfs
//! state ([`sysfs`]).
//!
//! Shared by the guest agent (which attaches schedulers in the lab
//! micro-VM) and the daemon's deploy service (which attaches them on the
//! machine it manages), so both load objects exactly the same way.

pub mod loader;
pub mod process;
pub mod sysfs;

pub use loader::{load, LoadError, Scheduler};
pub use process::{Artefact, ExternalScheduler};
