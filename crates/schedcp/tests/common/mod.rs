//! Helpers shared by the integration tests: run the real `schedcp` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use schedcp::api::client::Rest;
use schedcp::config::Config;
use schedcp::lab::Lab;
use schedcp::node::{Node, NodeOptions};

pub fn schedcp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_schedcp"))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn bad_scheduler(name: &str) -> String {
    repo_root()
        .join("tests/schedulers")
        .join(name)
        .display()
        .to_string()
}

pub fn run(args: &[&str]) -> Output {
    schedcp().args(args).output().expect("running schedcp")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `schedcp lab run ... --json`, parsed. Panics with the whole output when
/// stdout is not a JSON report.
pub fn lab_json(args: &[&str]) -> (i32, serde_json::Value) {
    let mut full = vec!["lab", "run", "--json", "--quiet"];
    full.extend_from_slice(args);
    let o = run(&full);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "schedcp {full:?} printed no JSON report ({e}):\n{}",
            text(&o)
        )
    });
    (o.status.code().unwrap_or(-1), v)
}

pub fn status(v: &serde_json::Value) -> &str {
    v["outcome"]["status"].as_str().unwrap_or("?")
}

/// `schedcp verify TARGET` with two quick runs a side, as JSON: the exit
/// code and the report. Panics with stderr when no report was printed.
pub fn verify_json(state: &Path, target: &str) -> (Option<i32>, serde_json::Value) {
    let out = schedcp()
        .env("SCHEDCP_STATE", state)
        .args([
            "-q",
            "verify",
            target,
            "--runs",
            "2",
            "--workloads",
            "pingpong:loops=100",
            "--json",
        ])
        .output()
        .expect("running schedcp");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{target}: no JSON report; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), v)
}

/// Boot a lab node running this build's schedcp as its daemon, with these
/// extra `[deploy]` config lines; it trusts `state`'s signing key.
pub fn start_node(state: &Path, config_extra: &str, lifetime: Duration) -> Node {
    let schedcp_bin = PathBuf::from(env!("CARGO_BIN_EXE_schedcp"));
    let mut cfg = Config {
        state_dir: Some(state.to_path_buf()),
        ..Config::default()
    };
    // This test process is not schedcp: point the lab at the agent beside it.
    cfg.lab.guest_agent = Some(schedcp_bin.with_file_name("schedcp-guest"));
    let t0 = Instant::now();
    let node = Node::start(
        &Lab::new(cfg),
        &NodeOptions {
            schedcp: Some(schedcp_bin),
            config_extra: config_extra.into(),
            lifetime,
            ..NodeOptions::default()
        },
        &|m| eprintln!("node: {m}"),
    )
    .expect("lab node boots and its daemon answers");
    eprintln!(
        "node ready in {:.1} s at {}",
        t0.elapsed().as_secs_f64(),
        node.url
    );
    node
}

pub fn deploy_status(node: &Rest) -> serde_json::Value {
    node.call("deploy_status", &serde_json::json!({}))
        .expect("deploy_status")
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn b64(path: &Path) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

/// `schedcp` against a private state directory, with an empty config so
/// that a host's /etc/schedcp/config.toml cannot redirect the store.
pub struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env::with_config("")
    }

    /// An environment whose config file holds `toml`.
    pub fn with_config(toml: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), toml).unwrap();
        Env { dir }
    }

    pub fn state(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        schedcp()
            // First: anything after a `--` in `args` belongs to a command.
            .arg("--quiet")
            .args(args)
            .env("SCHEDCP_STATE", self.state())
            .env("SCHEDCP_CONFIG", self.dir.path().join("config.toml"))
            .current_dir(self.dir.path())
            .output()
            .expect("running schedcp")
    }

    /// Run with `--json`; expect `code` and a JSON document on stdout.
    pub fn json(&self, args: &[&str], code: i32) -> serde_json::Value {
        let mut full = args.to_vec();
        full.push("--json");
        let o = self.run(&full);
        assert_eq!(
            o.status.code(),
            Some(code),
            "schedcp {full:?}:\n{}",
            text(&o)
        );
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("schedcp {full:?} printed no JSON ({e}):\n{}", text(&o)))
    }

    /// Expect failure with exit `code` and `needle` in the output.
    pub fn fails(&self, args: &[&str], code: i32, needle: &str) {
        let o = self.run(args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(code), "schedcp {args:?}:\n{t}");
        assert!(
            t.contains(needle),
            "schedcp {args:?}: expected '{needle}' in:\n{t}"
        );
    }
}

/// What a test tier needs before its tests can say anything; a missing
/// piece fails the tier's `prerequisites` test with how to set it up.
pub mod tier {
    use std::path::Path;

    fn on_path(program: &str) -> bool {
        schedcp::host::which(program).is_some()
    }

    /// Root, BPF, tracefs and the host tools observe and the compile use.
    pub fn host() -> Vec<String> {
        let mut missing = Vec::new();
        if !nix::unistd::geteuid().is_root() {
            missing.push(
                "root (BPF probes, perf, the compile jail): run the host tier as root".into(),
            );
        }
        if !Path::new("/sys/kernel/btf/vmlinux").exists() {
            missing.push("kernel BTF at /sys/kernel/btf/vmlinux".into());
        }
        if !Path::new("/sys/kernel/tracing/events").exists() {
            missing.push("tracefs: mount -t tracefs nodev /sys/kernel/tracing".into());
        }
        for tool in ["clang-19", "perf", "strace", "stress-ng"] {
            if !on_path(tool) {
                missing.push(format!("{tool}: run scripts/setup.sh"));
            }
        }
        missing
    }

    /// The host tier plus a cached sched_ext guest kernel and QEMU.
    pub fn lab() -> Vec<String> {
        let mut missing = host();
        let lab = schedcp::lab::Lab::new(schedcp::config::Config::default());
        if let Err(e) = lab.kernel() {
            missing.push(e.to_string());
        }
        if !on_path("qemu-system-x86_64") {
            missing.push("qemu-system-x86_64: run scripts/setup.sh".into());
        }
        missing
    }

    /// PostgreSQL + pgvector, the pinned API clients, the embedding model.
    pub fn external() -> Vec<String> {
        let mut missing = Vec::new();
        if std::env::var_os("SCHEDCP_TEST_PG_URL").is_none() {
            missing.push("SCHEDCP_TEST_PG_URL: run `scripts/pg-test-server.sh start` and `export SCHEDCP_TEST_PG_URL=$(scripts/pg-test-server.sh url)`".into());
        }
        let cfg = schedcp::config::Config::default();
        let model = schedcp::policies::embed::default_dir(&cfg.cache_dir());
        if !model.join("model.safetensors").is_file() {
            missing.push(format!(
                "the embedding model in {}: run scripts/fetch-model.sh",
                model.display()
            ));
        }
        let clients = super::repo_root().join("scripts/api-clients.sh");
        let ok = std::process::Command::new(&clients)
            .arg("paths")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            missing.push("the pinned MCP/REST test clients: run scripts/api-clients.sh".into());
        }
        missing
    }

    /// Panic with every missing piece of `tier`.
    pub fn require(tier: &str, missing: Vec<String>) {
        assert!(
            missing.is_empty(),
            "the {tier} tier cannot run here; set up:\n  - {}",
            missing.join("\n  - ")
        );
    }
}

/// A `schedcp serve` with its own state, socket and loopback HTTP port,
/// stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: std::process::Child,
    pub port: u16,
}

impl Daemon {
    pub fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("schedcp.sock")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        schedcp()
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env_remove("SCHEDCP_STATE")
            .output()
            .unwrap()
    }

    pub fn token(&self, name: &str, scopes: &str) -> String {
        let out = self.cli(&[
            "token", "create", "--name", name, "--scopes", scopes, "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    /// Start with `extra` appended to the `[api]` section.
    pub fn start(extra: &str) -> Daemon {
        Daemon::start_in(tempfile::tempdir().unwrap(), extra)
    }

    /// Start in `dir` (its `state` directory may already be a mount).
    pub fn start_in(dir: tempfile::TempDir, extra: &str) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = format!(
            "state_dir = \"{}\"\n[api]\nsocket = \"{}\"\nhttp = \"127.0.0.1:{port}\"\n{extra}\n",
            dir.path().join("state").display(),
            dir.path().join("schedcp.sock").display(),
        );
        std::fs::write(dir.path().join("config.toml"), cfg).unwrap();
        let child = Daemon::spawn(&dir.path().join("config.toml"));
        let d = Daemon { dir, child, port };
        d.wait_up();
        d
    }

    fn spawn(config: &std::path::Path) -> std::process::Child {
        schedcp()
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env_remove("SCHEDCP_STATE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap()
    }

    fn wait_up(&self) {
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || std::os::unix::net::UnixStream::connect(self.socket()).is_err()
        {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(30),
                "the daemon did not come up"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// A CLI call against this daemon, running in the background.
    pub fn cli_spawn(&self, args: &[&str]) -> std::process::Child {
        schedcp()
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env_remove("SCHEDCP_STATE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }

    /// SIGTERM, and wait up to 20 s for it to stop; whether it did.
    fn terminate(&mut self) -> bool {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }

    /// SIGTERM, and wait for it to stop (it must, within 20 s).
    pub fn stop(&mut self) {
        assert!(
            self.terminate(),
            "the daemon did not stop within 20 s of SIGTERM"
        );
    }

    /// Stop it cleanly and start it again on the same state.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Daemon::spawn(&self.config());
        self.wait_up();
    }

    /// SIGKILL the daemon (no cleanup of its own), then start it again on
    /// the same state, as after a crash.
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.socket());
        self.child = Daemon::spawn(&self.config());
        self.wait_up();
    }
}

impl Drop for Daemon {
    /// SIGTERM, and SIGKILL if it has not stopped within 20 s (a daemon that
    /// cannot stop must not hang the test run; the test has failed by then
    /// if it matters).
    fn drop(&mut self) {
        if self.terminate() {
            return;
        }
        eprintln!("the daemon did not stop within 20 s of SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            panic!("the daemon did not stop on SIGTERM");
        }
    }
}
