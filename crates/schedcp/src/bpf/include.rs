//! The BPF header bundle embedded at build time (see build.rs), unpacked on
//! first use into `<cache>/bpf-include/<hash>/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

static BUNDLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bpf-include.tar"));

/// The directory holding `scx/`, `bpf/`, `vmlinux/vmlinux.h`, ...; unpacked
/// atomically so a concurrent or interrupted run never sees half a tree.
pub fn include_dir(cache: &Path) -> Result<PathBuf> {
    let hash = hex::encode(&Sha256::digest(BUNDLE)[..8]);
    let root = cache.join("bpf-include");
    let dir = root.join(&hash);
    if dir.join("scx/common.bpf.h").exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let staging = tempfile::tempdir_in(&root)?;
    tar::Archive::new(BUNDLE)
        .unpack(staging.path())
        .context("unpacking the BPF header bundle")?;
    let staged = staging.keep();
    if std::fs::rename(&staged, &dir).is_err() {
        // Another run won the race; its copy is identical.
        let _ = std::fs::remove_dir_all(&staged);
    }
    Ok(dir)
}

/// The `-I` flags for a tree returned by [`include_dir`].
pub fn include_flags(dir: &Path) -> Vec<String> {
    ["", "vmlinux", "bpf-compat"]
        .iter()
        .map(|sub| {
            format!(
                "-I{}",
                if sub.is_empty() {
                    dir.to_path_buf()
                } else {
                    dir.join(sub)
                }
                .display()
            )
        })
        .collect()
}
