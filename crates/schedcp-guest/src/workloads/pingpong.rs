//! `pingpong`: hackbench-style message passing. Each group has `pairs` sender
//! and `pairs` receiver threads; every sender writes `loops` messages to every
//! receiver of its group, over one pipe or socketpair per receiver. Threads
//! block and wake constantly, so wakeup placement dominates the total time.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use schedcp_proto::workload::{Better, Metric, WorkloadSpec};
use serde_json::json;

use super::sync::{join_all, spawn, Gate, OnExit};
use super::{count, ms, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Pipe,
    Socket,
}

pub struct Params {
    groups: usize,
    pairs: usize,
    loops: u64,
    size: usize,
    transport: Transport,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Pipe => "pipe",
            Transport::Socket => "socket",
        }
    }
}

impl Params {
    pub fn from_spec(spec: &WorkloadSpec) -> Self {
        Params {
            groups: count(spec, "groups"),
            pairs: count(spec, "pairs"),
            loops: spec.int("loops"),
            size: count(spec, "size"),
            // The spec only admits "pipe" and "socket".
            transport: if spec.choice("transport") == "socket" {
                Transport::Socket
            } else {
                Transport::Pipe
            },
        }
    }

    fn messages(&self) -> u64 {
        (self.groups * self.pairs * self.pairs) as u64 * self.loops
    }

    /// Two descriptors per receiver.
    fn fds(&self) -> u64 {
        (self.groups * self.pairs * 2) as u64
    }
}

/// Headroom for descriptors the process already has open.
const FD_HEADROOM: u64 = 64;

/// One receiver's channel. `File` is used purely as an owned descriptor with
/// read(2)/write(2), which lets pipes and sockets share one code path.
struct Channel {
    rx: File,
    tx: File,
}

impl Channel {
    fn open(transport: Transport) -> io::Result<Channel> {
        let (rx, tx): (OwnedFd, OwnedFd) = match transport {
            Transport::Pipe => {
                let (r, w) = io::pipe()?;
                (r.into(), w.into())
            }
            Transport::Socket => {
                let (a, b) = UnixStream::pair()?;
                (a.into(), b.into())
            }
        };
        Ok(Channel {
            rx: rx.into(),
            tx: tx.into(),
        })
    }
}

pub(super) fn run(params: &Params) -> Result<Report> {
    // Pipes are atomic up to PIPE_BUF, so concurrent senders never interleave
    // within a message. (The receivers only count bytes, so this is about
    // realism, not correctness.) The spec caps `size` at 4096 already.
    if params.size > libc::PIPE_BUF {
        bail!(
            "message size {} exceeds PIPE_BUF ({})",
            params.size,
            libc::PIPE_BUF
        );
    }
    ensure_fd_limit(params.fds() + FD_HEADROOM)?;
    let groups = (0..params.groups)
        .map(|g| {
            (0..params.pairs)
                .map(|r| {
                    Channel::open(params.transport)
                        .with_context(|| format!("opening channel {r} of group {g}"))
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let total = exchange(params, groups)?;
    Ok(report(params, total))
}

/// Runs every group's senders and receivers; returns the time from release
/// until the last receiver had all its messages.
fn exchange(params: &Params, groups: Vec<Vec<Channel>>) -> Result<Duration> {
    let gate = Gate::new();
    let expected = params.pairs as u64 * params.loops;
    thread::scope(|s| {
        let _abort = OnExit::new(|| gate.abort());
        let (mut receivers, mut senders) = (Vec::new(), Vec::new());
        for (g, channels) in groups.into_iter().enumerate() {
            // Each receiver owns its read end and the group's senders share the
            // write ends, so a thread that dies closes its descriptors and
            // its peers see EOF or EPIPE instead of blocking forever.
            let mut txs = Vec::with_capacity(channels.len());
            for (r, Channel { rx, tx }) in channels.into_iter().enumerate() {
                txs.push(Arc::new(tx));
                let gate = &gate;
                receivers.push(spawn(s, format!("recv-{g}-{r}"), move || {
                    receive(gate, rx, expected, params.size)
                })?);
            }
            for i in 0..params.pairs {
                let (gate, txs) = (&gate, txs.clone());
                senders.push(spawn(s, format!("send-{g}-{i}"), move || {
                    send(gate, &txs, params.loops, params.size)
                })?);
            }
        }
        gate.await_arrivals(receivers.len() + senders.len())?;
        let release = Instant::now();
        gate.release()?;
        let sent = join_all(senders);
        let received = join_all(receivers);
        sent?;
        let last = received?.into_iter().max().unwrap_or(release);
        Ok(last.saturating_duration_since(release))
    })
}

fn send(gate: &Gate, txs: &[Arc<File>], loops: u64, size: usize) -> Result<()> {
    let message = vec![0x5a_u8; size];
    if !gate.wait()? {
        bail!("aborted before the start");
    }
    for i in 0..loops {
        for (r, tx) in txs.iter().enumerate() {
            (&**tx)
                .write_all(&message)
                .with_context(|| format!("sending message {i} to receiver {r}"))?;
        }
    }
    Ok(())
}

/// Reads `messages` whole messages (a read may return part of one) and
/// returns when the last one arrived.
fn receive(gate: &Gate, mut rx: File, messages: u64, size: usize) -> Result<Instant> {
    let mut buf = vec![0u8; size];
    if !gate.wait()? {
        bail!("aborted before the start");
    }
    for i in 0..messages {
        rx.read_exact(&mut buf)
            .with_context(|| format!("receiving message {i} of {messages}"))?;
    }
    Ok(Instant::now())
}

/// Raises RLIMIT_NOFILE to at least `needed` if it is lower. The default soft
/// limit (1024) is too low for large runs; the guest runs as root, so it may
/// raise the hard limit as well.
fn ensure_fd_limit(needed: u64) -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    let raised = libc::rlimit {
        rlim_cur: needed,
        rlim_max: limit.rlim_max.max(needed),
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let current = limit.rlim_cur;
        return Err(io::Error::last_os_error()).with_context(|| {
            format!("need about {needed} file descriptors; RLIMIT_NOFILE is {current} and cannot be raised")
        });
    }
    Ok(())
}

fn report(params: &Params, total: Duration) -> Report {
    let messages = params.messages() as f64;
    // A zero duration is possible only on a coarse clock; report no rate then.
    let rate = (total > Duration::ZERO).then(|| messages / total.as_secs_f64());
    let mut metrics = vec![
        Metric::new("total_time", ms(total), "ms", Better::Lower),
        Metric::new("messages", messages, "messages", Better::Higher),
    ];
    metrics.extend(rate.map(|r| Metric::new("messages_per_s", r, "messages/s", Better::Higher)));
    let detail = json!({
        "transport": params.transport.name(),
        "bytes": params.messages() * params.size as u64,
        "fds": params.fds(),
    });
    Report {
        primary: "total_time",
        metrics,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{run_str, value};

    fn check(spec: &str, messages: f64) {
        let r = run_str(spec);
        assert_eq!(r.primary, "total_time");
        assert_eq!(value(&r, "messages"), messages);
        assert!(value(&r, "total_time") > 0.0);
        assert!(value(&r, "messages_per_s") > 0.0);
    }

    #[test]
    fn pipes_deliver_every_message() {
        check(
            "pingpong:groups=2,pairs=3,loops=100,size=100,transport=pipe",
            (2 * 3 * 3 * 100) as f64,
        );
    }

    #[test]
    fn sockets_deliver_every_message() {
        check(
            "pingpong:groups=2,pairs=3,loops=100,size=100,transport=socket",
            (2 * 3 * 3 * 100) as f64,
        );
    }

    /// Enough bytes per receiver to fill a pipe several times over, with
    /// messages of PIPE_BUF size, so senders really block on full pipes.
    #[test]
    fn survives_full_pipes_and_large_messages() {
        check(
            "pingpong:groups=1,pairs=2,loops=200,size=4096,transport=pipe",
            (2 * 2 * 200) as f64,
        );
        check(
            "pingpong:groups=1,pairs=2,loops=200,size=4096,transport=socket",
            (2 * 2 * 200) as f64,
        );
    }
}
