//! The lab node: a long-running micro-VM with the sched_ext kernel whose
//! init runs `schedcp serve` — the same binary as on the host — so the host
//! can deploy to a real sched_ext machine over the daemon's own API.
//!
//! - Network: QEMU user networking, restricted (the guest reaches nothing
//!   outside), with one forward from a loopback port of the host to the
//!   daemon's HTTP listener in the guest. The cloud kernel builds virtio_net
//!   as a module: init loads the cached module files.
//! - Control: a virtio-serial port backed by a Unix socket on the host;
//!   `kill-daemon` SIGKILLs the daemon (init restarts it), `poweroff` stops.
//! - Trust: the node's daemon accepts tokens signed by this host's verifier
//!   key (`deploy.trusted_keys`), and its setup creates an API token for the
//!   host, reported back over the report port.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use schedcp_proto::node::{NodeCommand, NodeMessage, NodeSpec, CONTROL_PORT_NAME, NODE_PATH};

use crate::api::client::Rest;
use crate::error::Error;
use crate::lab::initramfs::{self, Initramfs};
use crate::lab::qemu::{self, Accelerator, VmSpec};
use crate::lab::{kernel, Lab};
use crate::verify::token::Keys;

/// The daemon's port inside the guest.
const GUEST_PORT: u16 = 7433;
const GUEST_ADDR: [u8; 4] = [10, 0, 2, 15];
const NODE_CONFIG: &str = "/etc/schedcp/config.toml";
const NODE_CACHE: &str = "/var/cache/schedcp";

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The schedcp binary to run inside (default: this process's binary).
    pub schedcp: Option<PathBuf>,
    pub vcpus: u32,
    pub mem_mib: u32,
    /// More keys of the node daemon's `[deploy]` table (TOML lines).
    pub config_extra: String,
    /// Wall-clock limit for the whole VM.
    pub lifetime: Duration,
    /// How long boot → daemon answering may take.
    pub ready_timeout: Duration,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            schedcp: None,
            vcpus: 2,
            mem_mib: 2048,
            config_extra: String::new(),
            lifetime: Duration::from_secs(3600),
            ready_timeout: Duration::from_secs(300),
        }
    }
}

/// A running node. Dropping it powers the VM off.
pub struct Node {
    /// `http://127.0.0.1:PORT`: the node daemon's REST and MCP.
    pub url: String,
    /// An API token of the node's daemon with every scope.
    pub token: String,
    pub run_dir: PathBuf,
    pub kernel_release: String,
    accelerator: Accelerator,
    events: Arc<Mutex<Vec<NodeMessage>>>,
    control: PathBuf,
    vm: Option<JoinHandle<anyhow::Result<qemu::VmExit>>>,
}

impl Node {
    pub fn start(lab: &Lab, opts: &NodeOptions, log: &dyn Fn(&str)) -> Result<Node, Error> {
        let kernel = lab.kernel()?;
        let modules = match kernel::net_modules(&kernel) {
            Some(m) => m,
            None => {
                let mirror = kernel::debian_mirror(lab.config().lab.debian_mirror.as_deref())
                    .map_err(|e| Error::Setup(format!("{e:#}")))?;
                kernel::fetch_net_modules(lab.cache_dir(), &mirror, &kernel, log).map_err(|e| {
                    Error::Setup(format!("fetching the node's network driver: {e:#}"))
                })?
            }
        };
        let agent = lab.guest_agent()?;
        let schedcp = match &opts.schedcp {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(|e| Error::Setup(format!("locating the schedcp binary: {e}")))?,
        };
        let model_dir = crate::policies::embed::default_dir(lab.cache_dir());
        if !model_dir.is_dir() {
            return Err(Error::Setup(format!(
                "no embedding model in {} (the node's policy library needs it); run scripts/fetch-model.sh",
                model_dir.display()
            )));
        }
        let keys = Keys::load_or_create(&lab.config().state_dir())?;
        let port = free_port()?;
        // The port is this process's own, so two nodes started by one
        // process within a second still get their own directories.
        let run_dir = lab.cache_dir().join("nodes").join(format!(
            "{}-{}-{port}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S"),
            std::process::id()
        ));
        std::fs::create_dir_all(&run_dir)
            .map_err(|e| Error::Setup(format!("creating {}: {e}", run_dir.display())))?;
        let initrd = run_dir.join("initramfs.cpio");
        let spec = NodeSpec {
            modules: modules
                .iter()
                .map(|m| format!("/lib/modules/{}", file_name(m)))
                .collect(),
            interface: "eth0".into(),
            address: GUEST_ADDR,
            prefix_len: 24,
            daemon: vec![
                "/usr/bin/schedcp".into(),
                "--config".into(),
                NODE_CONFIG.into(),
                "serve".into(),
            ],
            setup: vec![vec![
                "/usr/bin/schedcp".into(),
                "--config".into(),
                NODE_CONFIG.into(),
                "token".into(),
                "create".into(),
                "--name".into(),
                "lab-host".into(),
                "--scopes".into(),
                "admin".into(),
            ]],
            env: vec![
                ("HOME".into(), "/root".into()),
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("RUST_LOG".into(), "info".into()),
            ],
            max_restarts: 20,
        };
        let config = format!(
            "cache_dir = \"{NODE_CACHE}\"\nstate_dir = \"/var/lib/schedcp\"\n\n\
             [api]\nsocket = \"/run/schedcp/schedcp.sock\"\nhttp = \"0.0.0.0:{GUEST_PORT}\"\n\
             # QEMU's user network delivers the host's connections from 10.0.2.2.\n\
             allow_remote_http = true\nrate_per_s = 100\nrate_burst = 200\nmax_request_bytes = 50331648\n\n\
             [deploy]\ntrusted_keys = [\"{}\"]\nworkload_agent = \"/usr/bin/schedcp-guest\"\n{}\n",
            keys.public_paserk(),
            opts.config_extra
        );
        log("seeding the node's policy library on the host");
        let seed = seed_store(lab, &run_dir)?;
        build_initramfs(
            &agent, &schedcp, &kernel, &modules, &model_dir, &seed, &spec, &config, &initrd,
        )
        .map_err(|e| Error::Setup(format!("building the node's initramfs: {e:#}")))?;

        let control = run_dir.join("control.sock");
        let extra_args = vec![
            "-netdev".into(),
            format!(
                "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-{}.{}.{}.{}:{GUEST_PORT}",
                GUEST_ADDR[0], GUEST_ADDR[1], GUEST_ADDR[2], GUEST_ADDR[3]
            ),
            "-device".into(),
            "virtio-net-pci,netdev=n0".into(),
            "-chardev".into(),
            format!(
                "socket,id=ctl,path={},server=on,wait=off",
                control.display()
            ),
            "-device".into(),
            format!("virtserialport,chardev=ctl,name={CONTROL_PORT_NAME}"),
        ];
        let mut accel = lab.accelerator()?;
        loop {
            let events = Arc::new(Mutex::new(Vec::new()));
            let vm = spawn_vm(
                lab,
                &kernel.vmlinuz,
                &initrd,
                &run_dir,
                opts,
                accel,
                extra_args.clone(),
                events.clone(),
            )?;
            let mut node = Node {
                url: format!("http://127.0.0.1:{port}"),
                token: String::new(),
                run_dir: run_dir.clone(),
                kernel_release: kernel.release.clone(),
                accelerator: accel,
                events,
                control: control.clone(),
                vm: Some(vm),
            };
            match node.wait_ready(opts.ready_timeout, log) {
                Ok(()) => return Ok(node),
                Err(Boot::Kvm(reason)) if accel == Accelerator::Kvm => {
                    log(&format!("KVM failed ({reason}); booting the node with TCG"));
                    lab.remember_kvm(false, Some(reason));
                    accel = Accelerator::Tcg;
                }
                Err(Boot::Kvm(reason)) => return Err(Error::Setup(reason)),
                Err(Boot::Failed(e)) => return Err(e),
            }
        }
    }

    /// The accelerator the node runs with.
    pub fn accelerator(&self) -> Accelerator {
        self.accelerator
    }

    /// Everything the node reported so far.
    pub fn events(&self) -> Vec<NodeMessage> {
        self.events.lock().expect("node events").clone()
    }

    fn vm_exited(&self) -> bool {
        self.vm.as_ref().is_none_or(|h| h.is_finished())
    }

    fn wait_ready(&mut self, timeout: Duration, log: &dyn Fn(&str)) -> Result<(), Boot> {
        let deadline = Instant::now() + timeout;
        let mut said_booted = false;
        loop {
            for e in self.events() {
                match e {
                    NodeMessage::Booted { uptime_s, .. } if !said_booted => {
                        log(&format!(
                            "node booted in {uptime_s:.1} s (guest uptime); network up"
                        ));
                        said_booted = true;
                    }
                    NodeMessage::Setup {
                        ok: true, stdout, ..
                    } if self.token.is_empty() => {
                        self.token = stdout.lines().last().unwrap_or("").trim().to_string();
                    }
                    NodeMessage::Setup {
                        ok: false, stderr, ..
                    } => {
                        return Err(Boot::Failed(
                            self.failed(&format!("node setup failed: {stderr}")),
                        ));
                    }
                    NodeMessage::Failed { error } => {
                        return Err(Boot::Failed(
                            self.failed(&format!("node init failed: {error}")),
                        ));
                    }
                    _ => {}
                }
            }
            if !self.token.is_empty() && self.daemon_answers() {
                log(&format!("node daemon answering at {}", self.url));
                return Ok(());
            }
            if self.vm_exited() {
                let why = match self.vm.take().map(|h| h.join()) {
                    Some(Ok(Ok(exit))) if exit.kvm_failure.is_some() => {
                        return Err(Boot::Kvm(exit.kvm_failure.unwrap_or_default()))
                    }
                    Some(Ok(Ok(exit))) => format!(
                        "the node VM exited during boot ({:?}): {}",
                        exit.status,
                        exit.stderr.trim()
                    ),
                    Some(Ok(Err(e))) => format!("the node VM could not start: {e:#}"),
                    _ => "the node VM exited during boot".into(),
                };
                return Err(Boot::Failed(self.failed(&why)));
            }
            if Instant::now() > deadline {
                return Err(Boot::Failed(
                    self.failed(&format!("the node was not ready within {timeout:?}")),
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn daemon_answers(&self) -> bool {
        Rest::new(&self.url, &self.token, Duration::from_secs(5))
            .and_then(|c| {
                c.call("system_info", &serde_json::json!({}))
                    .map_err(Into::into)
            })
            .is_ok()
    }

    fn failed(&self, what: &str) -> Error {
        let console = std::fs::read_to_string(self.run_dir.join("console.log")).unwrap_or_default();
        let tail: Vec<&str> = console.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Error::Setup(format!(
            "{what}\nlast console lines ({}):\n{}",
            self.run_dir.join("console.log").display(),
            tail.join("\n")
        ))
    }

    /// A REST client for the node's daemon.
    pub fn client(&self, timeout: Duration) -> Result<Rest, Error> {
        Rest::new(&self.url, &self.token, timeout)
    }

    fn control(&self, cmd: NodeCommand) -> Result<(), Error> {
        let mut s = UnixStream::connect(&self.control).map_err(|e| {
            Error::Internal(anyhow::anyhow!(
                "connecting to the node's control port: {e}"
            ))
        })?;
        s.write_all(format!("{}\n", cmd.to_line()).as_bytes())
            .map_err(|e| Error::Internal(e.into()))?;
        Ok(())
    }

    /// SIGKILL the node's daemon (a crash as far as it knows) and wait
    /// until init has restarted it and it answers again.
    pub fn kill_daemon(&self, timeout: Duration) -> Result<(), Error> {
        let started_before = self.daemon_starts();
        self.control(NodeCommand::KillDaemon)?;
        let deadline = Instant::now() + timeout;
        while self.daemon_starts() <= started_before || !self.daemon_answers() {
            if Instant::now() > deadline {
                return Err(self.failed("the node daemon did not come back after a kill"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// SIGKILL every process named `comm` on the node (fault injection).
    pub fn kill_process(&self, comm: &str) -> Result<(), Error> {
        if comm.is_empty() || comm.len() > 15 || comm.contains(char::is_whitespace) {
            return Err(Error::Input(format!(
                "'{comm}' is not a process command name (1-15 characters, no spaces)"
            )));
        }
        self.control(NodeCommand::KillProcess(comm.to_string()))
    }

    /// How many times the daemon has been started.
    pub fn daemon_starts(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, NodeMessage::DaemonStarted { .. }))
            .count()
    }

    /// Power the node off: the daemon gets SIGTERM first.
    pub fn shutdown(&mut self) {
        let _ = self.control(NodeCommand::PowerOff);
        if let Some(h) = self.vm.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if h.is_finished() {
                let _ = h.join();
            }
            // Otherwise the VM thread's QEMU dies with this process
            // (PR_SET_PDEATHSIG on its supervising thread).
        }
    }

    pub fn console_log(&self) -> String {
        std::fs::read_to_string(self.run_dir.join("console.log")).unwrap_or_default()
    }
}

/// Why a boot did not give a ready node.
enum Boot {
    /// KVM could not run the guest: retry with TCG.
    Kvm(String),
    Failed(Error),
}

#[allow(clippy::too_many_arguments)]
fn spawn_vm(
    lab: &Lab,
    vmlinuz: &Path,
    initrd: &Path,
    run_dir: &Path,
    opts: &NodeOptions,
    accel: Accelerator,
    extra_args: Vec<String>,
    events: Arc<Mutex<Vec<NodeMessage>>>,
) -> Result<JoinHandle<anyhow::Result<qemu::VmExit>>, Error> {
    let cfg = lab.config().lab.clone();
    let (kernel_path, initrd, run_dir) = (
        vmlinuz.to_path_buf(),
        initrd.to_path_buf(),
        run_dir.to_path_buf(),
    );
    let (vcpus, mem_mib, timeout) = (opts.vcpus, opts.mem_mib, opts.lifetime);
    std::thread::Builder::new()
        .name("lab-node".into())
        .spawn(move || {
            let spec = VmSpec {
                qemu: &cfg.qemu,
                tcg_threads: cfg.tcg_threads,
                // A node serves a daemon on wall-clock time: with icount's
                // sleep=off an idle guest would race ahead of the host.
                clock: crate::config::Clock::Native,
                kernel: &kernel_path,
                initrd: &initrd,
                vcpus,
                mem_mib,
                accel,
                report_path: run_dir.join("report.jsonl"),
                console_path: run_dir.join("console.log"),
                timeout,
                extra_args,
            };
            qemu::boot(&spec, &mut |m: NodeMessage| {
                tracing::debug!("node: {m:?}");
                events.lock().expect("node events").push(m);
            })
        })
        .map_err(|e| Error::Internal(e.into()))
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A copy of `binary` without debug sections next to `near` when `strip`
/// is installed: the release build keeps line tables, which would double
/// the initramfs the guest has to unpack.
fn stripped(binary: &Path, near: &Path) -> anyhow::Result<PathBuf> {
    let dest = near.with_file_name("schedcp.stripped");
    let ok = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&dest)
        .arg(binary)
        .status()
        .is_ok_and(|s| s.success());
    Ok(if ok { dest } else { binary.to_path_buf() })
}

fn free_port() -> Result<u16, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Setup(format!("finding a free loopback port: {e}")))?;
    Ok(l.local_addr()
        .map_err(|e| Error::Internal(e.into()))?
        .port())
}

/// The node's store with its policy library already imported. Importing
/// embeds every built-in and catalogue policy with the sentence model,
/// which takes seconds here and many minutes under TCG; the files are the
/// same either way, so the host does it once and the node starts with them.
fn seed_store(lab: &Lab, run_dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let dir = run_dir.join("seed");
    let mut cfg = lab.config().clone();
    cfg.state_dir = Some(dir.clone());
    cfg.policies.backend = crate::policies::Backend::Sqlite;
    drop(crate::policies::Library::open(&cfg)?);
    let db = dir.join(crate::store::DB_FILE);
    let mut files = vec![db.clone()];
    // A WAL left behind by another reader is part of the database.
    let wal = db.with_extension("db-wal");
    if wal.metadata().is_ok_and(|m| m.len() > 0) {
        files.push(wal);
    }
    Ok(files)
}

#[allow(clippy::too_many_arguments)]
fn build_initramfs(
    agent: &Path,
    schedcp: &Path,
    kernel: &kernel::KernelImage,
    modules: &[PathBuf],
    model_dir: &Path,
    seed: &[PathBuf],
    spec: &NodeSpec,
    config: &str,
    out: &Path,
) -> anyhow::Result<()> {
    let mut fs = Initramfs::new();
    fs.add_host_file("/init", agent, 0o755)?;
    fs.add_host_file("/usr/bin/schedcp-guest", agent, 0o755)?;
    fs.add_host_file("/usr/bin/schedcp", &stripped(schedcp, out)?, 0o755)?;
    let mut libs = initramfs::shared_libraries(agent)?;
    libs.extend(initramfs::shared_libraries(schedcp)?);
    libs.sort();
    libs.dedup();
    for lib in libs {
        fs.add_host_file(&lib.display().to_string(), &lib, 0o755)?;
    }
    fs.add_host_file(
        &format!("/boot/config-{}", kernel.release),
        &kernel.config,
        0o644,
    )?;
    for m in modules {
        fs.add_host_file(&format!("/lib/modules/{}", file_name(m)), m, 0o644)?;
    }
    let guest_model = Path::new(NODE_CACHE).join(
        model_dir
            .strip_prefix(
                model_dir
                    .parent()
                    .and_then(Path::parent)
                    .unwrap_or(model_dir),
            )
            .unwrap_or(model_dir),
    );
    for e in std::fs::read_dir(model_dir)?.flatten() {
        if e.file_type()?.is_file() {
            let dest = guest_model.join(e.file_name());
            fs.add_host_file(&dest.display().to_string(), &e.path(), 0o644)?;
        }
    }
    for f in seed {
        fs.add_host_file(
            &Path::new("/var/lib/schedcp")
                .join(file_name(f))
                .display()
                .to_string(),
            f,
            0o600,
        )?;
    }
    fs.add_file(NODE_CONFIG, 0o600, config.as_bytes());
    fs.add_file(NODE_PATH, 0o644, &serde_json::to_vec_pretty(spec)?);
    for d in ["/var/lib/schedcp", "/run/schedcp", "/root", "/etc/schedcp"] {
        fs.add_dir(d);
    }
    fs.write_to(out)
}

/// A lab node as a deploy target of the main job: deploys and rolls back
/// over the node daemon's REST API with the registry's typed calls, as an
/// agent on another machine would.
pub struct NodeTarget {
    node: Node,
    api: Rest,
}

impl NodeTarget {
    /// Boot a node for the main job (3 s KPI windows, a 30 min lifetime).
    pub fn start(lab: &Lab, log: &dyn Fn(&str)) -> Result<NodeTarget, Error> {
        let node = Node::start(
            lab,
            &NodeOptions {
                config_extra: "window_s = 3\n".into(),
                lifetime: Duration::from_secs(1800),
                ..NodeOptions::default()
            },
            log,
        )?;
        let api = node.client(Duration::from_secs(900))?;
        Ok(NodeTarget { node, api })
    }
}

impl crate::tune::main_job::DeployTarget for NodeTarget {
    fn describe(&self) -> String {
        format!("lab node (kernel {}, sched_ext)", self.node.kernel_release)
    }

    fn deploy(
        &self,
        token: &str,
        object: &[u8],
        canary_s: u64,
        workload: &str,
    ) -> Result<crate::deploy::Deployment, Error> {
        use base64::Engine as _;
        let input = crate::api::tools::deploy::DeployInput {
            token: Some(token.into()),
            knobs: None,
            object_base64: Some(base64::engine::general_purpose::STANDARD.encode(object)),
            canary_s: Some(canary_s),
            kpi: None,
            workload: Some(workload.into()),
            wait_seconds: Some(600.0),
        };
        Ok(self.api.deploy(&input)?)
    }

    fn rollback(&self, reason: &str) -> Result<crate::deploy::Deployment, Error> {
        Ok(self.api.deploy_rollback(reason)?)
    }
}
