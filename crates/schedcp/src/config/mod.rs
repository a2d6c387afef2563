//! schedcp's TOML configuration: where the cache lives and how the lab runs.
//!
//! Looked up in order: `--config FILE`, `$SCHEDCP_CONFIG`,
//! `/etc/schedcp/config.toml`; built-in defaults otherwise. Unknown keys are
//! errors, so a typo never silently falls back to a default.

pub mod deploy;
pub mod policies;
pub mod tune;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub const SYSTEM_CONFIG: &str = "/etc/schedcp/config.toml";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Kernels, headers, initramfs pieces and lab runs. Default:
    /// `$SCHEDCP_CACHE`, else `$XDG_CACHE_HOME/schedcp`, else `~/.cache/schedcp`.
    pub cache_dir: Option<PathBuf>,
    /// Durable state: the SQLite store (workload profiles, benchmark history,
    /// policies). Default: `$SCHEDCP_STATE`, else `/var/lib/schedcp` as root,
    /// else `$XDG_STATE_HOME/schedcp` or `~/.local/state/schedcp`.
    pub state_dir: Option<PathBuf>,
    pub lab: LabConfig,
    pub observe: ObserveConfig,
    pub policies: policies::PoliciesConfig,
    pub api: ApiConfig,
    pub deploy: deploy::DeployConfig,
    pub tune: tune::TuneConfig,
}

/// `schedcp serve`: where the daemon listens and what it allows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// The Unix socket agents reach the daemon on (`schedcp mcp` connects here).
    pub socket: PathBuf,
    /// Local users, besides root, allowed to connect to the socket (peer
    /// credentials are checked); a token is still required.
    pub socket_users: Vec<String>,
    /// Members of this group may connect too.
    pub socket_group: Option<String>,
    /// Serve MCP (`/mcp`) and REST (`/v1`) over HTTP on this address.
    pub http: Option<String>,
    /// Allow `http` to bind a non-loopback address (plain HTTP: tokens travel
    /// in clear; put TLS in front). Off by default.
    pub allow_remote_http: bool,
    /// Sustained calls per second per token, and the burst above it.
    pub rate_per_s: u32,
    pub rate_burst: u32,
    /// Work jobs (verify, tune, trials, benchmarks) at once, over all
    /// tokens; a deploy has a slot of its own besides.
    pub max_jobs: usize,
    /// Work jobs one token may run at once.
    pub max_jobs_per_token: usize,
    /// Profilers (perf, strace) and probes the API runs at once, each
    /// kind; one at a time per token besides.
    pub max_profilers: usize,
    pub max_probes: usize,
    /// API callers may profile or probe only processes of these uids
    /// (empty: any uid) ...
    pub observe_uids: Vec<u32>,
    /// ... and only in cgroups whose path starts with one of these (empty:
    /// any). pid 1, the daemon and everything it started are never targets.
    pub observe_cgroups: Vec<String>,
    /// Largest request body (and MCP message) accepted, bytes.
    pub max_request_bytes: usize,
    /// Serve `/metrics` on the HTTP listener without a token (Prometheus
    /// scrapers often cannot send one). Off: an observe token is required.
    pub metrics_public: bool,
    /// The audit log's current segment is sealed (kept, chained on) once it
    /// reaches this size, MiB.
    pub audit_segment_mib: u64,
    /// Below this much free space on the state directory's filesystem, MiB,
    /// calls without a valid token are refused (`disk_low`) and refusals are
    /// only counted, so the disk left is kept for the audit log and the
    /// deploy state. 0: never.
    pub min_free_mib: u64,
}

impl ApiConfig {
    pub fn validate(&self) -> Result<()> {
        if self.rate_per_s == 0 || self.rate_burst == 0 {
            bail!("api.rate_per_s and api.rate_burst must be at least 1");
        }
        if !(1..=16).contains(&self.max_jobs) {
            bail!("api.max_jobs must be 1..=16");
        }
        if !(1..=16).contains(&self.max_profilers) || !(1..=16).contains(&self.max_probes) {
            bail!("api.max_profilers and api.max_probes must be 1..=16");
        }
        if let Some(c) = self.observe_cgroups.iter().find(|c| !c.starts_with('/')) {
            bail!("api.observe_cgroups: '{c}' must be a cgroup path starting with /");
        }
        if !(1..=self.max_jobs).contains(&self.max_jobs_per_token) {
            bail!(
                "api.max_jobs_per_token must be 1..=api.max_jobs ({})",
                self.max_jobs
            );
        }
        if !(4096..=64 << 20).contains(&self.max_request_bytes) {
            bail!("api.max_request_bytes must be 4 KiB..=64 MiB");
        }
        if !(1..=4096).contains(&self.audit_segment_mib) {
            bail!("api.audit_segment_mib must be 1..=4096");
        }
        if let Some(h) = &self.http {
            let addr: std::net::SocketAddr = h
                .parse()
                .with_context(|| format!("api.http '{h}' is not an address like 127.0.0.1:7433"))?;
            if !addr.ip().is_loopback() && !self.allow_remote_http {
                bail!("api.http {h} is not a loopback address; set api.allow_remote_http = true to allow it (plain HTTP: put TLS in front)");
            }
        }
        Ok(())
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: PathBuf::from("/run/schedcp/schedcp.sock"),
            socket_users: Vec::new(),
            socket_group: None,
            http: None,
            allow_remote_http: false,
            metrics_public: false,
            rate_per_s: 20,
            rate_burst: 40,
            max_jobs: 2,
            max_jobs_per_token: 1,
            max_profilers: 2,
            max_probes: 2,
            observe_uids: Vec::new(),
            observe_cgroups: Vec::new(),
            max_request_bytes: 256 * 1024,
            audit_segment_mib: 64,
            min_free_mib: 64,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObserveConfig {
    /// Token budget of `observe summary` as JSON (cl100k tokens).
    pub summary_budget_tokens: usize,
    /// Sampling window of `observe summary` / `detail`, in milliseconds.
    pub summary_window_ms: u64,
    /// Longest a probe may stay attached.
    pub probe_max_duration_s: u64,
    /// Longest a profiler may run.
    pub profile_max_duration_s: u64,
    /// Cap on a profiler's captured output, in bytes.
    pub profile_max_output_bytes: usize,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        ObserveConfig {
            summary_budget_tokens: 400,
            summary_window_ms: 1000,
            probe_max_duration_s: 300,
            profile_max_duration_s: 120,
            profile_max_output_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabConfig {
    pub qemu: String,
    pub clang: String,
    /// `auto` tries KVM and falls back to TCG; `kvm` or `tcg` forces one.
    pub accel: Accel,
    /// TCG threading. `single` (default) runs all vCPUs on one host thread:
    /// with multi-threaded TCG, QEMU 7.2 occasionally lets a vCPU run stale
    /// code while the guest live-patches static keys (sched_ext flips several
    /// on attach and detach), and the guest dies with "Oops: int3".
    pub tcg_threads: TcgThreads,
    pub vcpus: u32,
    pub mem_mib: u32,
    /// Wall-clock limit for one VM run, boot to power-off.
    pub timeout_s: u64,
    /// Where the guest agent binary is; default: next to the `schedcp` binary.
    pub guest_agent: Option<PathBuf>,
    /// Debian archive to fetch the sid kernel from; default: the one in the
    /// host's apt sources.
    pub debian_mirror: Option<String>,
    /// Keep the run directory (console log, initramfs) of successful runs too.
    pub keep_runs: bool,
    /// The guest's clock under TCG: `native` (QEMU's default, host time) or
    /// `icount:N` (`-icount shift=N,sleep=off`: guest time advances 2^N ns
    /// per emulated instruction, so a run's timing depends on the work done,
    /// not on what else the host is doing). Ignored under KVM. Either way
    /// lab timings are emulated, not what real hardware would see; the
    /// README's lab-timing table says how each clock spreads.
    pub clock: Clock,
}

/// The guest clock model under TCG; see [`LabConfig::clock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    Native,
    Icount { shift: u8 },
}

impl Clock {
    /// Largest `shift` QEMU accepts (one instruction = 2^10 ns).
    pub const MAX_SHIFT: u8 = 10;

    pub fn name(self) -> String {
        match self {
            Clock::Native => "native".into(),
            Clock::Icount { shift } => format!("icount:{shift}"),
        }
    }

    /// The QEMU arguments for this clock under TCG.
    pub fn qemu_args(self) -> Vec<String> {
        match self {
            Clock::Native => Vec::new(),
            Clock::Icount { shift } => vec!["-icount".into(), format!("shift={shift},sleep=off")],
        }
    }
}

impl std::str::FromStr for Clock {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Clock, String> {
        let bad = || {
            format!(
                "lab clock {s:?}: expected `native` or `icount:N` with N in 0..={}",
                Clock::MAX_SHIFT
            )
        };
        match s.trim() {
            "native" => Ok(Clock::Native),
            other => {
                let shift: u8 = other
                    .strip_prefix("icount:")
                    .ok_or_else(bad)?
                    .parse()
                    .map_err(|_| bad())?;
                if shift > Clock::MAX_SHIFT {
                    return Err(bad());
                }
                Ok(Clock::Icount { shift })
            }
        }
    }
}

impl Serialize for Clock {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Clock {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Clock, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The lab's default guest clock, chosen by measurement (README, "Lab
/// timings"): with icount:2 the run-to-run spread (IQR/median, 6 runs in
/// one boot) was 0.1% on batch and 0.4-0.7% on pingpong under vtime,
/// against 7-42% with the native clock, and verdicts agreed across
/// replicates where the native clock's flipped.
pub const DEFAULT_CLOCK: Clock = Clock::Icount { shift: 2 };

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcgThreads {
    Single,
    Multi,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            qemu: "qemu-system-x86_64".into(),
            clang: "clang-19".into(),
            accel: Accel::Auto,
            tcg_threads: TcgThreads::Single,
            vcpus: 2,
            mem_mib: 1024,
            timeout_s: 180,
            guest_agent: None,
            debian_mirror: None,
            keep_runs: false,
            clock: DEFAULT_CLOCK,
        }
    }
}

impl Config {
    /// Load the configuration `explicit` names, or the first one that exists.
    pub fn load(explicit: Option<&Path>) -> Result<Config> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => std::env::var_os("SCHEDCP_CONFIG")
                .map(PathBuf::from)
                .or_else(|| Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists())),
        };
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// A configuration from TOML text, checked.
    pub fn parse(text: &str) -> Result<Config> {
        let cfg: Config = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        self.lab.validate()?;
        self.policies.validate()?;
        self.api.validate()?;
        self.deploy.validate()?;
        self.tune.validate()
    }

    pub fn state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        if let Some(d) = std::env::var_os("SCHEDCP_STATE") {
            return PathBuf::from(d);
        }
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/schedcp");
        }
        if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
            return PathBuf::from(d).join("schedcp");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        home.join(".local/state/schedcp")
    }

    pub fn cache_dir(&self) -> PathBuf {
        if let Some(d) = &self.cache_dir {
            return d.clone();
        }
        if let Some(d) = std::env::var_os("SCHEDCP_CACHE") {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            return PathBuf::from(d).join("schedcp");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".cache/schedcp")
    }
}

/// Bounds on VM sizes; outside them QEMU either refuses or the host suffers.
pub const MAX_VCPUS: u32 = 64;
pub const MIN_MEM_MIB: u32 = 256;
pub const MAX_MEM_MIB: u32 = 64 * 1024;
pub const MAX_TIMEOUT_S: u64 = 24 * 3600;

impl LabConfig {
    pub fn validate(&self) -> Result<()> {
        check_vm_size(self.vcpus, self.mem_mib, self.timeout_s)
    }
}

pub fn check_vm_size(vcpus: u32, mem_mib: u32, timeout_s: u64) -> Result<()> {
    if !(1..=MAX_VCPUS).contains(&vcpus) {
        bail!("vcpus must be between 1 and {MAX_VCPUS}, got {vcpus}");
    }
    if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&mem_mib) {
        bail!("memory must be between {MIN_MEM_MIB} and {MAX_MEM_MIB} MiB, got {mem_mib} (the guest kernel and initramfs need at least {MIN_MEM_MIB} MiB)");
    }
    if !(1..=MAX_TIMEOUT_S).contains(&timeout_s) {
        bail!("timeout must be between 1 and {MAX_TIMEOUT_S} seconds, got {timeout_s}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors() {
        let e = toml::from_str::<Config>("[lab]\nvcpu = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `vcpu`"), "{e}");
    }

    #[test]
    fn sizes_are_checked() {
        assert!(check_vm_size(0, 512, 10).is_err());
        assert!(check_vm_size(2, 16, 10)
            .unwrap_err()
            .to_string()
            .contains("at least"));
        assert!(check_vm_size(2, 512, 0).is_err());
        check_vm_size(2, 512, 10).unwrap();
    }
}
