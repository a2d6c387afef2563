//! Node mode: init of a long-running lab VM that runs the schedcp daemon
//! itself. Init loads the network driver, configures the interface QEMU's
//! user network forwards the host's port to, runs the setup commands (one
//! creates the host's API token), then starts the daemon and restarts it
//! whenever it dies, the way systemd's `Restart=always` would on a real
//! machine. The host can kill the daemon through the control port to prove
//! that deployments survive a crash.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use schedcp_proto::node::{NodeCommand, NodeMessage, NodeSpec, CONTROL_PORT_NAME, NODE_PATH};

use crate::channel::{find_port, ReportChannel};
use crate::sys;

pub fn is_node() -> bool {
    std::path::Path::new(NODE_PATH).exists()
}

/// Runs the node until the host powers it off; never returns.
pub fn run(ch: &mut ReportChannel) -> ! {
    if let Err(e) = run_inner(ch) {
        let _ = ch.send_json(&NodeMessage::Failed {
            error: format!("{e:#}"),
        });
        eprintln!("schedcp-guest node: {e:#}");
    }
    sys::power_off()
}

fn run_inner(ch: &mut ReportChannel) -> Result<()> {
    let text =
        std::fs::read_to_string(NODE_PATH).with_context(|| format!("reading {NODE_PATH}"))?;
    let spec: NodeSpec =
        serde_json::from_str(&text).with_context(|| format!("parsing {NODE_PATH}"))?;
    for m in &spec.modules {
        load_module(m)?;
    }
    configure_interface("lo", [127, 0, 0, 1], 8)?;
    wait_for_interface(&spec.interface, Duration::from_secs(10))?;
    configure_interface(&spec.interface, spec.address, spec.prefix_len)?;
    ch.send_json(&NodeMessage::Booted {
        kernel_release: sys::kernel_release(),
        uptime_s: sys::uptime_s(),
        nr_cpus: sys::nr_cpus(),
        sched_ext_state: schedcp_scx::sysfs::state(),
    })?;
    for (index, argv) in spec.setup.iter().enumerate() {
        let out = command(argv, &spec.env)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running setup command {}", argv.join(" ")))?;
        ch.send_json(&NodeMessage::Setup {
            index,
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })?;
    }
    supervise(ch, &spec)
}

fn command(argv: &[String], env: &[(String, String)]) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c.envs(env.iter().map(|(k, v)| (k, v)));
    c
}

/// Keep the daemon running; serve control commands meanwhile.
fn supervise(ch: &mut ReportChannel, spec: &NodeSpec) -> Result<()> {
    if spec.daemon.is_empty() {
        bail!("the node spec names no daemon to run");
    }
    let pid = Arc::new(AtomicU32::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<NodeCommand>();
    spawn_control_reader(tx)?;
    let mut restarts = 0;
    loop {
        let mut child = start_daemon(spec)?;
        pid.store(child.id(), Ordering::SeqCst);
        ch.send_json(&NodeMessage::DaemonStarted {
            pid: child.id(),
            uptime_s: sys::uptime_s(),
            restarts,
        })?;
        let status = wait_or_command(&mut child, &rx, &stopping);
        ch.send_json(&NodeMessage::DaemonExited {
            pid: child.id(),
            status,
            uptime_s: sys::uptime_s(),
        })?;
        if stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        restarts += 1;
        if restarts > spec.max_restarts {
            bail!(
                "the daemon died {restarts} times; giving up (max_restarts = {})",
                spec.max_restarts
            );
        }
        // Like systemd's RestartSec: do not spin on a daemon that dies at once.
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_daemon(spec: &NodeSpec) -> Result<Child> {
    // The daemon logs to the console, which the host keeps as a file.
    let console = File::options().write(true).open("/dev/console");
    let mut c = command(&spec.daemon, &spec.env);
    c.stdin(Stdio::null()).stdout(Stdio::null());
    match console {
        Ok(con) => c.stderr(con),
        Err(_) => c.stderr(Stdio::null()),
    };
    c.spawn()
        .with_context(|| format!("starting the daemon {}", spec.daemon.join(" ")))
}

/// Waits for the daemon to exit, acting on control commands meanwhile.
/// Returns the exit code, or minus the killing signal.
fn wait_or_command(
    child: &mut Child,
    rx: &mpsc::Receiver<NodeCommand>,
    stopping: &AtomicBool,
) -> i32 {
    let mut term_sent: Option<Instant> = None;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code().unwrap_or_else(|| -st.signal().unwrap_or(0));
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(NodeCommand::KillDaemon) => {
                let _ = child.kill();
            }
            Ok(NodeCommand::KillProcess(comm)) => kill_by_comm(&comm),
            Ok(NodeCommand::PowerOff) => {
                stopping.store(true, Ordering::SeqCst);
                // SIGTERM: the daemon detaches what it deployed and exits.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                term_sent = Some(Instant::now());
            }
            Err(_) => {}
        }
        if term_sent.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
            let _ = child.kill();
        }
    }
}

fn spawn_control_reader(tx: mpsc::Sender<NodeCommand>) -> Result<()> {
    let path = find_port(CONTROL_PORT_NAME)?;
    let port = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let mut reader = BufReader::new(port);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    // No host connected: the port reads EOF until one is.
                    Ok(0) => std::thread::sleep(Duration::from_millis(100)),
                    Ok(_) => {
                        if let Some(cmd) = NodeCommand::parse(&line) {
                            if tx.send(cmd).is_err() {
                                return;
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        })?;
    Ok(())
}

/// `finit_module(2)`; `.ko.xz` files are decompressed by the kernel itself
/// (CONFIG_MODULE_DECOMPRESS), so no userspace xz is needed.
fn load_module(path: &str) -> Result<()> {
    const MODULE_INIT_COMPRESSED_FILE: libc::c_int = 4;
    let file = File::open(path).with_context(|| format!("opening module {path}"))?;
    let flags = if path.ends_with(".xz") || path.ends_with(".zst") {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let params = CString::default();
    // SAFETY: a valid fd and a NUL-terminated parameter string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EEXIST) {
            bail!("loading kernel module {path}: {err}");
        }
    }
    Ok(())
}

fn wait_for_interface(name: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !std::path::Path::new(&format!("/sys/class/net/{name}")).exists() {
        if Instant::now() > deadline {
            bail!("network interface {name} did not appear within {timeout:?} (is the virtio-net device on QEMU's command line?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Address, netmask and IFF_UP through the classic SIOCSIF* ioctls; a
/// netlink library would be a large dependency for three calls.
fn configure_interface(name: &str, addr: [u8; 4], prefix_len: u8) -> Result<()> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is ours from here on and closed on drop.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mask = if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len.min(32)))
    };
    let ioctl = |req: libc::c_ulong, ifr: &mut libc::ifreq, what: &str| -> Result<()> {
        // SAFETY: ifr is a properly initialised ifreq for this request.
        if unsafe { libc::ioctl(sock.as_raw_fd(), req as _, ifr as *mut libc::ifreq) } < 0 {
            bail!("{what} on {name}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    };
    let mut ifr = new_ifreq(name)?;
    ifr.ifr_ifru.ifru_addr = sockaddr_in(addr);
    ioctl(libc::SIOCSIFADDR, &mut ifr, "setting the address")?;
    let mut ifr = new_ifreq(name)?;
    ifr.ifr_ifru.ifru_netmask = sockaddr_in(mask.to_be_bytes());
    ioctl(libc::SIOCSIFNETMASK, &mut ifr, "setting the netmask")?;
    let mut ifr = new_ifreq(name)?;
    ioctl(libc::SIOCGIFFLAGS, &mut ifr, "reading the flags")?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    unsafe { ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(libc::SIOCSIFFLAGS, &mut ifr, "bringing it up")
}

fn new_ifreq(name: &str) -> Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        bail!("invalid interface name {name:?}");
    }
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, b) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = b as libc::c_char;
    }
    Ok(ifr)
}

fn sockaddr_in(addr: [u8; 4]) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// SIGKILL every process whose `/proc/PID/comm` is `comm`.
fn kill_by_comm(comm: &str) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let name = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if name.trim() == comm {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
