//! Bundles the BPF headers schedcp compiles schedulers against into the
//! binary, so `schedcp` is self-contained: sched_ext headers and an x86
//! vmlinux.h from the scx_cargo crate, and libbpf's BPF headers from
//! libbpf-sys. At run time they are unpacked once into the cache.

use std::env;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // scx_cargo unpacks its header tree into $OUT_DIR/scx_utils-bpf_h when a
    // builder is created; that is its supported way to hand them out. It wants
    // a clang >= 18 to exist, which schedcp needs at run time anyway.
    if env::var_os("BPF_CLANG").is_none() {
        env::set_var("BPF_CLANG", "clang-19");
    }
    scx_cargo::BpfBuilder::new().context("scx_cargo needs clang >= 18 (run scripts/setup.sh)")?;
    let scx = out.join("scx_utils-bpf_h");
    let libbpf = PathBuf::from(
        env::var("DEP_BPF_INCLUDE").context("libbpf-sys did not export its include dir")?,
    );

    let tar_path = out.join("bpf-include.tar");
    let mut ar = tar::Builder::new(File::create(&tar_path)?);
    ar.follow_symlinks(true);
    for dir in ["scx", "lib", "bpf-compat"] {
        ar.append_dir_all(dir, scx.join(dir))?;
    }
    for file in [
        "bpf_arena_common.bpf.h",
        "bpf_atomic.h",
        "bpf_experimental.h",
        "bpf_arena_spin_lock.h",
    ] {
        let p = scx.join(file);
        if p.exists() {
            ar.append_path_with_name(&p, file)?;
        }
    }
    // Only the x86 vmlinux.h: the lab guest is x86_64.
    ar.append_path_with_name(scx.join("arch/x86/vmlinux.h"), "vmlinux/vmlinux.h")?;
    for h in [
        "bpf_helpers.h",
        "bpf_helper_defs.h",
        "bpf_tracing.h",
        "bpf_core_read.h",
        "bpf_endian.h",
    ] {
        ar.append_path_with_name(libbpf.join("bpf").join(h), Path::new("bpf").join(h))?;
    }
    ar.finish()?;

    build_probe_skeletons(&out, &scx, &libbpf)?;
    embed_builtin_policies(&out)
}

/// Compiles each host probe `bpf/probes/<name>.bpf.c` and generates its
/// libbpf-rs skeleton as `$OUT_DIR/probes/<name>.skel.rs`, against the same
/// x86 vmlinux.h and libbpf headers as above.
///
/// The object is named `scp_<name>`: libbpf prefixes the internal maps
/// (`.rodata`, `.bss`) with the object's name, so every program and map a
/// probe loads carries the `scp_` prefix (see bpf/probes/probe.h).
fn build_probe_skeletons(out: &Path, scx: &Path, libbpf: &Path) -> Result<()> {
    let src_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?)
        .join("../../bpf/probes")
        .canonicalize()
        .context("bpf/probes is missing")?;
    println!("cargo:rerun-if-changed={}", src_dir.display());
    let dst_dir = out.join("probes");
    std::fs::create_dir_all(&dst_dir)?;
    let clang = env::var("BPF_CLANG").unwrap_or_else(|_| "clang-19".into());
    let includes = [
        format!("-I{}", scx.join("arch/x86").display()),
        format!("-I{}", libbpf.display()),
        format!("-I{}", src_dir.display()),
    ];
    for entry in std::fs::read_dir(&src_dir)? {
        let path = entry?.path();
        println!("cargo:rerun-if-changed={}", path.display());
        let Some(name) = path
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.strip_suffix(".bpf.c"))
        else {
            continue;
        };
        libbpf_cargo::SkeletonBuilder::new()
            .source(&path)
            .obj(dst_dir.join(format!("scp_{name}.bpf.o")))
            .clang(&clang)
            .clang_args(includes.iter().chain(&["-Wall".to_string()]))
            .build_and_generate(dst_dir.join(format!("{name}.skel.rs")))
            .with_context(|| format!("building probe {}", path.display()))?;
    }
    Ok(())
}

/// Embeds every `schedulers/<name>/{policy.toml,main.bpf.c}` so the built-in
/// library ships inside the binary.
fn embed_builtin_policies(out: &Path) -> Result<()> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?)
        .join("../../schedulers")
        .canonicalize()?;
    println!("cargo:rerun-if-changed={}", root.display());
    let mut names: Vec<_> = std::fs::read_dir(&root)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("policy.toml").exists() && e.path().join("main.bpf.c").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut src = String::from("/// (name, policy.toml, main.bpf.c) of each built-in policy.\npub const BUILTIN: &[(&str, &str, &str)] = &[\n");
    for n in &names {
        let dir = root.join(n);
        for f in ["policy.toml", "main.bpf.c"] {
            println!("cargo:rerun-if-changed={}", dir.join(f).display());
        }
        src.push_str(&format!(
            "    ({n:?}, include_str!({:?}), include_str!({:?})),\n",
            dir.join("policy.toml"),
            dir.join("main.bpf.c")
        ));
    }
    src.push_str("];\n");
    std::fs::write(out.join("builtin_policies.rs"), src)?;
    Ok(())
}
