//! Types shared by the schedcp host and the guest agent that runs as `/init`
//! inside the lab micro-VM.
//!
//! The host writes a [`job::GuestJob`] into the initramfs; the guest streams
//! [`report::GuestMessage`]s back as JSON lines over a dedicated virtio-serial
//! port. Keeping both ends on these types means a protocol change is a compile
//! error on both sides, not a parse failure at run time.

pub mod job;
pub mod node;
pub mod report;
pub mod workload;

/// Fingerprint of this crate's sources. A host refuses a guest agent built
/// from a different protocol (a stale binary) before booting anything.
pub const PROTOCOL_FINGERPRINT: &str = env!("SCHEDCP_PROTOCOL_FINGERPRINT");

/// Argument that makes the guest agent print [`PROTOCOL_FINGERPRINT`] and exit.
pub const PROTOCOL_FLAG: &str = "--protocol-fingerprint";

/// Name of the virtio-serial port the guest reports on.
pub const REPORT_PORT_NAME: &str = "org.schedcp.report.0";
/// Path of the job description inside the initramfs.
pub const JOB_PATH: &str = "/schedcp/job.json";
/// Path of the scheduler object inside the initramfs.
pub const OBJECT_PATH: &str = "/schedcp/scheduler.bpf.o";
/// Path of an external scheduler binary inside the initramfs.
pub const BINARY_PATH: &str = "/schedcp/scheduler.bin";
