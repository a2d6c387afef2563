//! The lab *node*: a long-running micro-VM whose init starts the schedcp
//! daemon itself (the same binary as on the host) and keeps it running, so
//! the host can drive a real sched_ext machine over the daemon's API.
//!
//! The host writes a [`NodeSpec`] into the initramfs. The guest reports
//! [`NodeMessage`]s as JSON lines on the report port and takes one-line
//! commands ([`NodeCommand`]) on the control port.

use serde::{Deserialize, Serialize};

/// Path of the node description inside the initramfs. Its presence (instead
/// of a job) makes the guest agent run as a node.
pub const NODE_PATH: &str = "/schedcp/node.json";
/// Name of the virtio-serial port the host sends [`NodeCommand`]s on.
pub const CONTROL_PORT_NAME: &str = "org.schedcp.control.0";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Kernel modules to load, in order (`.ko` or `.ko.xz` paths in the
    /// initramfs): the cloud kernel builds virtio_net as a module.
    pub modules: Vec<String>,
    /// Network interface to configure, its IPv4 address and prefix length.
    pub interface: String,
    pub address: [u8; 4],
    pub prefix_len: u8,
    /// The daemon: program and arguments (`schedcp serve ...`).
    pub daemon: Vec<String>,
    /// Run once before the daemon first starts; its stdout (trimmed) is
    /// reported as [`NodeMessage::Setup`] (e.g. `schedcp token create`).
    pub setup: Vec<Vec<String>>,
    /// Environment for the daemon and the setup commands.
    pub env: Vec<(String, String)>,
    /// How often the daemon is restarted after it dies before init gives up.
    pub max_restarts: u32,
}

/// What the node tells the host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum NodeMessage {
    /// The network is up and the daemon is about to start.
    Booted {
        kernel_release: String,
        uptime_s: f64,
        nr_cpus: usize,
        sched_ext_state: Option<String>,
    },
    /// One setup command ran.
    Setup {
        index: usize,
        ok: bool,
        stdout: String,
        stderr: String,
    },
    DaemonStarted {
        pid: u32,
        uptime_s: f64,
        restarts: u32,
    },
    DaemonExited {
        pid: u32,
        /// Exit code, or the signal that killed it as a negative number.
        status: i32,
        uptime_s: f64,
    },
    /// Something init could not do; the node is unusable.
    Failed { error: String },
}

/// Commands on the control port, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCommand {
    /// SIGKILL the daemon (a crash, as far as it knows); init restarts it.
    KillDaemon,
    /// SIGKILL every process with this command name (`/proc/PID/comm`):
    /// fault injection, e.g. a supervised scheduler binary dying.
    KillProcess(String),
    /// Stop the daemon with SIGTERM and power off.
    PowerOff,
}

impl NodeCommand {
    pub fn to_line(&self) -> String {
        match self {
            NodeCommand::KillDaemon => "kill-daemon".into(),
            NodeCommand::KillProcess(comm) => format!("kill-process {comm}"),
            NodeCommand::PowerOff => "poweroff".into(),
        }
    }

    pub fn parse(line: &str) -> Option<NodeCommand> {
        match line.trim().split_once(' ') {
            Some(("kill-process", comm)) if !comm.trim().is_empty() => {
                Some(NodeCommand::KillProcess(comm.trim().to_string()))
            }
            Some(_) => None,
            None => match line.trim() {
                "kill-daemon" => Some(NodeCommand::KillDaemon),
                "poweroff" => Some(NodeCommand::PowerOff),
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_their_lines() {
        for c in [
            NodeCommand::KillDaemon,
            NodeCommand::KillProcess("scx_bpfland".into()),
            NodeCommand::PowerOff,
        ] {
            assert_eq!(NodeCommand::parse(&c.to_line()), Some(c));
        }
        assert_eq!(NodeCommand::parse("kill-process "), None);
        assert_eq!(NodeCommand::parse("reboot"), None);
    }
}
