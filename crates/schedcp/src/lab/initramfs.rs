//! The guest's root filesystem: a newc cpio archive holding the guest agent
//! as `/init`, the shared libraries it links, the kernel config libbpf reads
//! for Kconfig externs, and the job.
//!
//! newc is twelve hex fields and a name per entry; a crate would save little.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// An in-memory cpio (newc) archive under construction.
#[derive(Default)]
pub struct Initramfs {
    buf: Vec<u8>,
    dirs: BTreeSet<String>,
    ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

impl Initramfs {
    pub fn new() -> Self {
        let mut fs = Initramfs::default();
        for d in ["dev", "proc", "sys", "tmp", "boot", "schedcp"] {
            fs.mkdir_p(d);
        }
        // The kernel opens /dev/console for init's stdio before init can
        // mount devtmpfs; without this node the agent's stderr is lost.
        fs.entry("dev/console", S_IFCHR | 0o600, (5, 1), &[]);
        fs
    }

    pub fn add_file(&mut self, path: &str, mode: u32, data: &[u8]) {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.mkdir_p(parent);
        }
        self.entry(path, S_IFREG | mode, (0, 0), data);
    }

    pub fn add_host_file(&mut self, guest_path: &str, host_path: &Path, mode: u32) -> Result<()> {
        let data =
            std::fs::read(host_path).with_context(|| format!("reading {}", host_path.display()))?;
        self.add_file(guest_path, mode, &data);
        Ok(())
    }

    /// An empty directory (and its parents).
    pub fn add_dir(&mut self, path: &str) {
        self.mkdir_p(path.trim_start_matches('/'));
    }

    fn mkdir_p(&mut self, path: &str) {
        let mut cur = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(part);
            if self.dirs.insert(cur.clone()) {
                let c = cur.clone();
                self.entry(&c, S_IFDIR | 0o755, (0, 0), &[]);
            }
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so identical inputs give identical archives
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0, // check
        );
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad4();
        self.buf.extend_from_slice(data);
        self.pad4();
    }

    fn pad4(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }

    pub fn write_to(self, path: &Path) -> Result<()> {
        let data = self.finish();
        let mut f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        f.write_all(&data)?;
        Ok(())
    }
}

/// The dynamic libraries `binary` needs, as `ldd` resolves them on this host.
/// The guest runs the host's build of the agent, so the host's libraries are
/// exactly the right ones.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd (from Debian's libc-bin) to list the guest agent's libraries")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libelf.so.1 => /lib/x86_64-linux-gnu/libelf.so.1 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    if libs.is_empty() {
        bail!(
            "ldd found no libraries for {}; is it a dynamically linked x86_64 binary?",
            binary.display()
        );
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_is_well_formed_newc() {
        let mut fs = Initramfs::new();
        fs.add_file("/a/b/c.txt", 0o644, b"hello");
        let data = fs.finish();
        assert!(data.starts_with(b"070701"));
        assert_eq!(data.len() % 4, 0);
        let text = String::from_utf8_lossy(&data);
        for name in ["dev/console", "a/b\0", "a/b/c.txt\0", "TRAILER!!!\0"] {
            assert!(text.contains(name), "{name} missing");
        }
    }

    #[test]
    fn cpio_tool_reads_it_back() {
        let mut fs = Initramfs::new();
        fs.add_file("/x/y", 0o755, b"payload");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.cpio");
        fs.write_to(&path).unwrap();
        let out = Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(std::fs::File::open(&path).unwrap())
            .output();
        let out = out.expect("cpio is installed by scripts/setup.sh");
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.lines().any(|l| l == "x/y"), "{listing}");
    }

    #[test]
    fn finds_libc_of_a_host_binary() {
        let libs = shared_libraries(Path::new("/bin/ls")).unwrap();
        assert!(libs.iter().any(|l| l.to_string_lossy().contains("libc.so")));
    }
}
