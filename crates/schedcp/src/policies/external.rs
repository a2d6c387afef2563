//! Installing the catalogue's external schedulers (scx binaries published
//! on the Rust crate registry) into schedcp's cache, explicitly and pinned: `cargo install
//! <crate>@<catalogue version> --locked` into
//! `<cache>/external/<crate>-<version>/`, stripped so the bytes that are
//! verified, hashed into a token and deployed are small and fixed. An
//! install manifest beside the binary records what was built, from what,
//! with which toolchain.
//!
//! Installing runs third-party build scripts, so it is an operator action
//! (CLI, as the invoking user), never an agent's: no API tool reaches it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model::{Body, ExternalSpec, PolicyRef, PolicyVersion};
use super::Library;
use crate::config::Config;
use crate::error::Error;

const MANIFEST: &str = "schedcp-install.json";
/// Where Debian's clang-19 keeps libclang (bindgen in scx_utils' build
/// needs it) and an unversioned `clang` (scx_cargo calls `clang`).
const LLVM_DIR: &str = "/usr/lib/llvm-19";

/// What an install produced; also the manifest's contents.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Installed {
    /// The library policy (`scx_bpfland`) and version it was installed for.
    pub policy: String,
    pub policy_version: u32,
    #[serde(rename = "crate")]
    pub crate_name: String,
    pub crate_version: String,
    pub binary: PathBuf,
    pub sha256: String,
    pub size_bytes: u64,
    /// `rustc -V` of the toolchain that built it.
    pub rustc: String,
    pub installed_at: String,
    /// Build time; 0 when it was already installed.
    pub build_s: f64,
    /// True when this call found it installed and built nothing.
    #[serde(default)]
    pub already: bool,
}

/// `<cache>/external`.
pub fn root(cfg: &Config) -> PathBuf {
    cfg.cache_dir().join("external")
}

fn install_dir(cfg: &Config, spec: &ExternalSpec) -> PathBuf {
    root(cfg).join(format!("{}-{}", spec.crate_name, spec.version))
}

/// The library version of an external policy, or a precise refusal.
pub fn policy(lib: &Library, name: &str) -> Result<(PolicyVersion, ExternalSpec), Error> {
    let r: PolicyRef = name.parse().map_err(Error::Input)?;
    let v = lib.get(&r)?;
    match &v.body {
        Body::External(spec) => {
            let spec = spec.clone();
            Ok((v, spec))
        }
        _ => Err(Error::Input(format!(
            "{} is not an external scheduler: it is built from source by schedcp (`schedcp verify {}`); `schedcp policy list` shows each policy's origin",
            v.id(),
            v.name
        ))),
    }
}

/// The install for `spec`, if present and intact (the manifest's hash
/// matches the binary on disk).
pub fn installed(cfg: &Config, spec: &ExternalSpec) -> Result<Option<Installed>, Error> {
    let dir = install_dir(cfg, spec);
    let Ok(text) = std::fs::read_to_string(dir.join(MANIFEST)) else {
        return Ok(None);
    };
    let m: Installed = serde_json::from_str(&text).map_err(|e| {
        Error::Setup(format!(
            "{} is unreadable ({e}); remove {} and install again",
            dir.join(MANIFEST).display(),
            dir.display()
        ))
    })?;
    let actual = sha256_file(&m.binary)?;
    if actual != m.sha256 {
        return Err(Error::Setup(format!(
            "{} changed since it was installed (sha256 {actual}, recorded {}); install it again with `schedcp policy install-external {} --force`",
            m.binary.display(),
            m.sha256,
            m.policy
        )));
    }
    Ok(Some(m))
}

/// Install `name` (a library policy with an external body), or report the
/// existing install. `progress` gets cargo's status lines.
pub fn install(
    cfg: &Config,
    lib: &Library,
    name: &str,
    force: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Installed, Error> {
    let (v, spec) = policy(lib, name)?;
    if !force {
        if let Some(mut m) = installed(cfg, &spec)? {
            m.already = true;
            m.build_s = 0.0;
            return Ok(m);
        }
    }
    let cargo = crate::host::which("cargo").ok_or_else(|| {
        Error::Setup(
            "installing an external scheduler builds it with cargo, which is not on PATH; install a Rust toolchain (rustup, Rust >= 1.91)".into(),
        )
    })?;
    let dir = install_dir(cfg, &spec);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Setup(format!("creating {}: {e}", dir.display())))?;
    let mut cmd = Command::new(&cargo);
    cmd.args(["install", "--locked", "--force", "--root"])
        .arg(&dir)
        .arg(format!("{}@{}", spec.crate_name, spec.version))
        .args(["--bin", &spec.binary])
        // Builds of all versions share one target dir: a new version only
        // rebuilds what changed.
        .env("CARGO_TARGET_DIR", root(cfg).join("target"))
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_TERM_COLOR", "never")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if Path::new(LLVM_DIR).join("bin/clang").exists() {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{LLVM_DIR}/bin:{path}"));
        if std::env::var_os("LIBCLANG_PATH").is_none() {
            cmd.env("LIBCLANG_PATH", format!("{LLVM_DIR}/lib"));
        }
    }
    let t = Instant::now();
    // Its own group, and it dies with us: an interrupted install leaves no
    // rustc behind.
    let mut child = crate::host::process::Group::spawn(&mut cmd, true)
        .map_err(|e| Error::Setup(format!("running {}: {e}", cargo.display())))?;
    let mut tail: Vec<String> = Vec::new();
    if let Some(err) = child.child_mut().stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let l = line.trim();
            if l.starts_with("Compiling")
                || l.starts_with("Downloaded")
                || l.starts_with("Installing")
            {
                progress(l);
            }
            tail.push(line);
            if tail.len() > 40 {
                tail.remove(0);
            }
        }
    }
    // A build of a scx scheduler takes minutes; one that takes hours is stuck.
    let status = child
        .wait_until(t + Duration::from_secs(2 * 3600), Duration::from_secs(5))
        .map_err(|e| Error::Internal(anyhow::anyhow!("waiting for cargo: {e}")))?
        .ok_or_else(|| Error::Setup("cargo install ran for 2 hours and was stopped".into()))?;
    if !status.success() {
        return Err(Error::Setup(format!(
            "cargo install {}@{} failed ({status}); it needs clang with the BPF target, libclang, libelf and zlib headers (scripts/setup.sh installs them). Its last lines:\n{}",
            spec.crate_name,
            spec.version,
            tail.join("\n")
        )));
    }
    let binary = dir.join("bin").join(&spec.binary);
    let meta = std::fs::metadata(&binary).map_err(|e| {
        Error::Internal(anyhow::anyhow!(
            "cargo install succeeded but {} is missing: {e}",
            binary.display()
        ))
    })?;
    let m = Installed {
        policy: v.name.clone(),
        policy_version: v.version,
        crate_name: spec.crate_name.clone(),
        crate_version: spec.version.clone(),
        sha256: sha256_file(&binary)?,
        binary,
        size_bytes: meta.len(),
        rustc: tool_version("rustc"),
        installed_at: crate::host::now_rfc3339(),
        build_s: t.elapsed().as_secs_f64(),
        already: false,
    };
    crate::host::fs::atomic_write(
        &dir.join(MANIFEST),
        &serde_json::to_vec_pretty(&m).map_err(|e| Error::Internal(e.into()))?,
        None,
    )
    .map_err(|e| {
        Error::Setup(format!(
            "writing the install manifest in {}: {e}",
            dir.display()
        ))
    })?;
    Ok(m)
}

pub fn sha256_file(path: &Path) -> Result<String, Error> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Setup(format!("reading {}: {e}", path.display())))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

fn tool_version(tool: &str) -> String {
    Command::new(tool)
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
