//! The report channel: JSON lines on a dedicated virtio-serial port.
//!
//! The console is for humans and kernel noise; reports travel on their own
//! port so the host never has to scrape text.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use schedcp_proto::report::GuestMessage;

pub struct ReportChannel {
    port: File,
}

impl ReportChannel {
    /// Find the port by the name QEMU gave it (`virtserialport,name=...`).
    pub fn open(name: &str) -> Result<Self> {
        let path = find_port(name)?;
        let port = OpenOptions::new()
            .write(true)
            .open(&path)
            .with_context(|| format!("opening report port {}", path.display()))?;
        Ok(ReportChannel { port })
    }

    pub fn send(&mut self, msg: &GuestMessage) -> Result<()> {
        self.send_json(msg)
    }

    pub fn send_json<T: serde::Serialize>(&mut self, msg: &T) -> Result<()> {
        let mut line = serde_json::to_vec(msg)?;
        line.push(b'\n');
        self.port
            .write_all(&line)
            .context("writing to report port")?;
        self.port.flush()?;
        Ok(())
    }
}

pub fn find_port(name: &str) -> Result<PathBuf> {
    let dir = "/sys/class/virtio-ports";
    for entry in fs::read_dir(dir).with_context(|| format!("listing {dir}"))? {
        let entry = entry?;
        let port_name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if port_name.trim() == name {
            return Ok(PathBuf::from("/dev").join(entry.file_name()));
        }
    }
    bail!("no virtio-serial port named {name} (is -device virtserialport,name={name} on the QEMU command line?)")
}
