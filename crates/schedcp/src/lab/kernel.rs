//! The guest kernel: a Debian sid *cloud* kernel built with
//! `CONFIG_SCHED_CLASS_EXT=y`, fetched with a private apt state so the
//! host's own apt sources are never touched, and cached as
//! `<cache>/kernels/<release>/{vmlinuz,config,origin.json}`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// A cached guest kernel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelImage {
    pub release: String,
    pub vmlinuz: PathBuf,
    pub config: PathBuf,
    /// The Debian package it came from, e.g. `linux-binary-unsigned-7.2.13+deb14-cloud-amd64`.
    pub package: String,
    pub package_version: String,
}

/// Where fetched packages come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Origin {
    package: String,
    package_version: String,
}

const SCHED_EXT_CONFIG: &str = "CONFIG_SCHED_CLASS_EXT=y";

pub fn kernels_dir(cache: &Path) -> PathBuf {
    cache.join("kernels")
}

/// True if a kernel config enables sched_ext.
pub fn config_has_sched_ext(config: &str) -> bool {
    config.lines().any(|l| l.trim() == SCHED_EXT_CONFIG)
}

/// The newest cached kernel that really has sched_ext, if any.
pub fn cached(cache: &Path) -> Option<KernelImage> {
    let mut found: Vec<KernelImage> = std::fs::read_dir(kernels_dir(cache))
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| load_cached(&e.path()).ok())
        .collect();
    found.sort_by_key(|k| version_key(&k.release));
    found.pop()
}

fn load_cached(dir: &Path) -> Result<KernelImage> {
    let release = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("bad dir"))?
        .to_string();
    let vmlinuz = dir.join("vmlinuz");
    let config = dir.join("config");
    let text = std::fs::read_to_string(&config)?;
    if !config_has_sched_ext(&text) || !vmlinuz.is_file() {
        bail!("incomplete or not sched_ext");
    }
    let origin: Origin = serde_json::from_str(&std::fs::read_to_string(dir.join("origin.json"))?)?;
    Ok(KernelImage {
        release,
        vmlinuz,
        config,
        package: origin.package,
        package_version: origin.package_version,
    })
}

/// Numeric components of a version string, for ordering `7.2.13+deb14` after `7.2.9`.
pub fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// A private apt state under `<cache>/apt` that points at Debian sid only.
/// Every apt invocation gets these options, so the system's sources,
/// preferences and package status are never read or written.
struct PrivateApt {
    root: PathBuf,
}

impl PrivateApt {
    fn new(cache: &Path, mirror: &str) -> Result<Self> {
        let root = cache.join("apt");
        for d in ["etc", "lists/partial", "cache/archives/partial", "download"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        if !Path::new(keyring).exists() {
            bail!("{keyring} is missing; install Debian's debian-archive-keyring package");
        }
        std::fs::write(
            root.join("etc/sources.list"),
            format!("deb [signed-by={keyring}] {mirror} sid main\n"),
        )?;
        std::fs::write(root.join("status"), "")?;
        Ok(PrivateApt { root })
    }

    fn options(&self) -> Vec<String> {
        let r = |p: &str| self.root.join(p).display().to_string();
        vec![
            format!("-oDir::Etc::SourceList={}", r("etc/sources.list")),
            "-oDir::Etc::SourceParts=/dev/null".into(),
            format!("-oDir::State::Lists={}", r("lists")),
            format!("-oDir::Cache={}", r("cache")),
            "-oDir::Etc::Preferences=/dev/null".into(),
            "-oDir::Etc::PreferencesParts=/dev/null".into(),
            format!("-oDir::State::status={}", r("status")),
            "-oAPT::Architecture=amd64".into(),
            "-oAPT::Architectures=amd64".into(),
            // Downloads land in a root-owned private dir; apt's _apt sandbox user cannot write there.
            "-oAPT::Sandbox::User=root".into(),
        ]
    }

    fn run(&self, tool: &str, args: &[&str], cwd: Option<&Path>) -> Result<String> {
        let mut cmd = Command::new(tool);
        cmd.args(self.options()).args(args);
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        let out = cmd
            .output()
            .with_context(|| format!("running {tool} (is apt installed?)"))?;
        if !out.status.success() {
            bail!(
                "{tool} {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The Debian archive the host already uses (so local mirrors are respected),
/// from its apt sources; `override_mirror` wins when set.
pub fn debian_mirror(override_mirror: Option<&str>) -> Result<String> {
    if let Some(m) = override_mirror {
        return Ok(m.to_string());
    }
    let mut texts = Vec::new();
    for p in ["/etc/apt/sources.list"] {
        if let Ok(t) = std::fs::read_to_string(p) {
            texts.push(t);
        }
    }
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in rd.flatten() {
            if let Ok(t) = std::fs::read_to_string(e.path()) {
                texts.push(t);
            }
        }
    }
    texts
        .iter()
        .find_map(|t| mirror_from_sources(t))
        .ok_or_else(|| anyhow!("found no Debian archive in /etc/apt/sources.list*; set lab.debian_mirror in the config"))
}

/// First URI serving a plain Debian release suite (not -security/-updates),
/// from either one-line or deb822 sources.
pub fn mirror_from_sources(text: &str) -> Option<String> {
    let is_release = |suite: &str| !suite.contains('-') && !suite.contains('/');
    let mut uri: Option<String> = None;
    let mut suites: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim).chain(std::iter::once("")) {
        if line.is_empty() {
            if let Some(u) = uri.take() {
                if u.contains("/debian")
                    && !u.contains("security")
                    && suites.iter().any(|s| is_release(s))
                {
                    return Some(u);
                }
            }
            suites.clear();
            continue;
        }
        if let Some(rest) = line.strip_prefix("deb ") {
            let words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with('[') && !w.ends_with(']'))
                .collect();
            if let [u, suite, ..] = words[..] {
                if (u.ends_with("/debian") || u.ends_with("/debian/")) && is_release(suite) {
                    return Some(u.trim_end_matches('/').to_string());
                }
            }
        } else if let Some(u) = line.strip_prefix("URIs:") {
            uri = u
                .split_whitespace()
                .next()
                .map(|s| s.trim_end_matches('/').to_string());
        } else if let Some(s) = line.strip_prefix("Suites:") {
            suites = s.split_whitespace().map(String::from).collect();
        }
    }
    None
}

/// Fetch the newest sid cloud kernel whose config enables sched_ext into the
/// cache. `log` receives progress lines.
pub fn fetch(cache: &Path, mirror: &str, log: &dyn Fn(&str)) -> Result<KernelImage> {
    let apt = PrivateApt::new(cache, mirror)?;
    log(&format!(
        "updating a private apt state for Debian sid ({mirror})"
    ));
    apt.run("apt-get", &["-q", "update"], None)?;
    let listing = apt.run(
        "apt-cache",
        &["search", "--names-only", "cloud-amd64"],
        None,
    )?;
    let mut candidates = candidate_packages(&listing);
    if candidates.is_empty() {
        bail!("Debian sid lists no unsigned cloud-amd64 kernel package");
    }
    candidates.sort_by_key(|c| std::cmp::Reverse(version_key(&c.1)));
    for (package, release) in candidates.iter().take(3) {
        log(&format!("trying {package}"));
        match fetch_one(&apt, cache, package, release, log) {
            Ok(k) => return Ok(k),
            Err(e) => log(&format!("{package}: {e:#}")),
        }
    }
    bail!("none of the newest Debian sid cloud kernels has {SCHED_EXT_CONFIG}")
}

/// (package, release) pairs for the unsigned cloud kernel image packages,
/// under both the current (`linux-binary-unsigned-R-cloud-amd64`) and the
/// older (`linux-image-R-cloud-amd64-unsigned`) naming.
pub fn candidate_packages(apt_cache_search: &str) -> Vec<(String, String)> {
    apt_cache_search
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| {
            let rel = p
                .strip_prefix("linux-binary-unsigned-")
                .and_then(|r| r.strip_suffix("-cloud-amd64"))
                .or_else(|| {
                    p.strip_prefix("linux-image-")
                        .and_then(|r| r.strip_suffix("-cloud-amd64-unsigned"))
                })?;
            Some((p.to_string(), format!("{rel}-cloud-amd64")))
        })
        .collect()
}

fn fetch_one(
    apt: &PrivateApt,
    cache: &Path,
    package: &str,
    release: &str,
    log: &dyn Fn(&str),
) -> Result<KernelImage> {
    let dl = apt.root.join("download");
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    let show = apt.run("apt-cache", &["show", package], None)?;
    let version = field(&show, "Version").unwrap_or_default();
    // The config sits in the image package (older layout) or in linux-base-R (newer).
    let base = format!("linux-base-{release}");
    let mut to_get = vec![package.to_string()];
    if apt.run("apt-cache", &["show", &base], None).is_ok() {
        to_get.push(base);
    }
    let refs: Vec<&str> = to_get.iter().map(String::as_str).collect();
    log(&format!("downloading {}", refs.join(", ")));
    apt.run(
        "apt-get",
        &[&["-q", "download"][..], &refs].concat(),
        Some(&dl),
    )?;

    let tree = dl.join("tree");
    for deb in std::fs::read_dir(&dl)?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "deb"))
    {
        let st = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb.path())
            .arg(&tree)
            .status()?;
        if !st.success() {
            bail!("dpkg-deb -x {} failed", deb.path().display());
        }
    }
    let vmlinuz = find_file(&tree, &|n| n.starts_with("vmlinuz"))
        .ok_or_else(|| anyhow!("{package} holds no vmlinuz"))?;
    let config = find_file(&tree, &|n| n == "config" || n.starts_with("config-"))
        .ok_or_else(|| anyhow!("no kernel config found in {package} or linux-base-{release}"))?;
    let config_text = std::fs::read_to_string(&config)?;
    if !config_has_sched_ext(&config_text) {
        bail!("its config does not set {SCHED_EXT_CONFIG}");
    }
    let dest = kernels_dir(cache).join(release);
    let staging = kernels_dir(cache).join(format!(".{release}.partial"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    std::fs::copy(&vmlinuz, staging.join("vmlinuz"))?;
    std::fs::copy(&config, staging.join("config"))?;
    // The lab node's network driver; a failure here only costs the node.
    if let Err(e) = fetch_net_modules_into(apt, release, &dl, &staging.join(MODULES_DIR), log) {
        log(&format!(
            "network driver modules not cached ({e:#}); `schedcp lab node` will fetch them"
        ));
    }
    let origin = Origin {
        package: package.to_string(),
        package_version: version.clone(),
    };
    std::fs::write(
        staging.join("origin.json"),
        serde_json::to_vec_pretty(&origin)?,
    )?;
    // Rename last: a crash mid-fetch never leaves a half-populated kernel dir.
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&staging, &dest)?;
    let _ = std::fs::remove_dir_all(&dl);
    log(&format!(
        "cached {release} ({package} {version}) with sched_ext"
    ));
    load_cached(&dest)
}

/// Where a cached kernel keeps the modules the lab node loads.
const MODULES_DIR: &str = "modules";
/// virtio_net and what it needs, in load order. The cloud kernel builds the
/// virtio network driver as a module; the lab node loads these at boot.
pub const NET_MODULES: [&str; 3] = ["failover", "net_failover", "virtio_net"];

/// The cached network modules of `k`, in load order, if all are there.
pub fn net_modules(k: &KernelImage) -> Option<Vec<PathBuf>> {
    let dir = k.vmlinuz.parent()?.join(MODULES_DIR);
    NET_MODULES
        .iter()
        .map(|m| find_file(&dir, &|n| module_name(n) == Some(m)))
        .collect()
}

/// `virtio_net.ko.xz` → `virtio_net`.
fn module_name(file: &str) -> Option<&str> {
    file.split_once(".ko").map(|(stem, _)| stem)
}

/// Fetch the network modules for an already cached kernel (caches made
/// before the lab node existed have none).
pub fn fetch_net_modules(
    cache: &Path,
    mirror: &str,
    k: &KernelImage,
    log: &dyn Fn(&str),
) -> Result<Vec<PathBuf>> {
    let apt = PrivateApt::new(cache, mirror)?;
    log("updating the private apt state for Debian sid");
    apt.run("apt-get", &["-q", "update"], None)?;
    let dl = apt.root.join("download");
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    let dir = k
        .vmlinuz
        .parent()
        .ok_or_else(|| anyhow!("kernel has no directory"))?;
    let staging = dir.join(".modules.partial");
    let _ = std::fs::remove_dir_all(&staging);
    fetch_net_modules_into(&apt, &k.release, &dl, &staging, log)?;
    let _ = std::fs::remove_dir_all(dir.join(MODULES_DIR));
    std::fs::rename(&staging, dir.join(MODULES_DIR))?;
    let _ = std::fs::remove_dir_all(&dl);
    net_modules(k).ok_or_else(|| anyhow!("modules fetched but not found in the cache"))
}

fn fetch_net_modules_into(
    apt: &PrivateApt,
    release: &str,
    dl: &Path,
    dest: &Path,
    log: &dyn Fn(&str),
) -> Result<()> {
    let package = format!("linux-modules-{release}");
    log(&format!(
        "downloading {package} (network driver for the lab node)"
    ));
    let pkg_dir = dl.join("modules-pkg");
    std::fs::create_dir_all(&pkg_dir)?;
    apt.run("apt-get", &["-q", "download", &package], Some(&pkg_dir))?;
    let deb = std::fs::read_dir(&pkg_dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| anyhow!("apt-get download {package} left no .deb"))?;
    let tree = pkg_dir.join("tree");
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tree)
        .status()?;
    if !st.success() {
        bail!("dpkg-deb -x {} failed", deb.display());
    }
    std::fs::create_dir_all(dest)?;
    for m in NET_MODULES {
        let found = find_file(&tree, &|n| module_name(n) == Some(m))
            .ok_or_else(|| anyhow!("{package} has no {m} module"))?;
        let name = found
            .file_name()
            .ok_or_else(|| anyhow!("bad module path"))?;
        std::fs::copy(&found, dest.join(name))?;
    }
    let _ = std::fs::remove_dir_all(&pkg_dir);
    Ok(())
}

fn field(control: &str, name: &str) -> Option<String> {
    control.lines().find_map(|l| {
        l.strip_prefix(&format!("{name}: "))
            .map(|v| v.trim().to_string())
    })
}

fn find_file(dir: &Path, pred: &dyn Fn(&str) -> bool) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let ft = e.file_type().ok()?;
        if ft.is_dir() {
            if let Some(f) = find_file(&p, pred) {
                return Some(f);
            }
        } else if ft.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(pred) {
            return Some(p);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_source_formats() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                      Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_from_sources(deb822).as_deref(),
            Some("http://mirror.example/debian")
        );
        let oneline = "deb http://sec.example/debian-security bookworm-security main\ndeb [arch=amd64] http://m.example/debian/ bookworm main\n";
        assert_eq!(
            mirror_from_sources(oneline).as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(
            mirror_from_sources("deb https://other.example/apt cloud-sdk main\n"),
            None
        );
    }

    #[test]
    fn picks_kernel_packages_and_orders_versions() {
        let listing = "linux-binary-unsigned-7.2.13+deb14-cloud-amd64 - Linux\n\
                       linux-image-7.2.13+deb14-cloud-amd64-dbg - debug\n\
                       linux-image-6.12.9-cloud-amd64-unsigned - Linux\nlinux-image-cloud-amd64 - meta\n";
        let c = candidate_packages(listing);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].1, "7.2.13+deb14-cloud-amd64");
        assert!(version_key("7.2.13+deb14") > version_key("7.2.9+deb14"));
    }

    #[test]
    fn sched_ext_config_detection() {
        assert!(config_has_sched_ext(
            "CONFIG_X=y\nCONFIG_SCHED_CLASS_EXT=y\n"
        ));
        assert!(!config_has_sched_ext(
            "# CONFIG_SCHED_CLASS_EXT is not set\n"
        ));
    }
}
