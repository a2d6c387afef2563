//! Fingerprints the protocol sources so host and guest can tell whether they
//! were built from the same definition of the report channel.

use std::path::Path;

fn main() {
    let mut files: Vec<_> = std::fs::read_dir("src")
        .expect("src dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    // FNV-1a: no dependency needed for a fingerprint that is not a security boundary.
    let mut h: u64 = 0xcbf29ce484222325;
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = Path::new(f)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for b in name
            .bytes()
            .chain(std::fs::read(f).expect("read proto source"))
        {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    println!("cargo:rustc-env=SCHEDCP_PROTOCOL_FINGERPRINT={h:016x}");
}
