//! The daemon under load and under a flood (issue 17, finding 9): a real
//! `schedcp serve` in this process on a private socket, loopback HTTP and
//! state directory. Phase 1: N concurrent clients — half MCP sessions over
//! the socket, half REST over HTTP — each make M mixed read-only calls;
//! every error is counted, latency is reported per door. Phase 2: one
//! client's `system_info` latency alone, then while N clients flood the
//! doors with refused (wrong-token) requests: what a flood costs a normal
//! caller. Then the audit chain is verified and its size reported.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::api::client::Session;
use crate::api::{audit, server};
use crate::config::Config as SchedcpConfig;
use crate::error::Error;
use crate::store::Store;

pub struct Config {
    pub clients: usize,
    pub calls: usize,
}

/// Latency of one door's calls.
#[derive(Debug, Clone, Serialize)]
pub struct Door {
    pub door: String,
    pub calls: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cpus: usize,
    pub clients: usize,
    pub calls_per_client: usize,
    pub doors: Vec<Door>,
    pub wall_s: f64,
    pub calls_per_s: f64,
    /// `system_info` from one client, alone and during the flood.
    pub quiet: Door,
    pub flooded: Door,
    /// Refused requests the flood made, and audit entries it added.
    pub flood_requests: usize,
    pub flood_audit_entries: u64,
    pub audit_entries: u64,
    pub audit_intact: bool,
}

impl Report {
    pub fn render(&self) -> String {
        let mut s = format!(
            "daemon under load ({} CPUs): {} clients x {} mixed calls, half MCP over the socket, half REST\n{:<22} {:>7} {:>6} {:>9} {:>9} {:>9}\n",
            self.cpus, self.clients, self.calls_per_client, "door", "calls", "errors", "p50 ms", "p99 ms", "max ms"
        );
        for d in self.doors.iter().chain([&self.quiet, &self.flooded]) {
            s.push_str(&format!(
                "{:<22} {:>7} {:>6} {:>9.2} {:>9.2} {:>9.2}\n",
                d.door, d.calls, d.errors, d.p50_ms, d.p99_ms, d.max_ms
            ));
        }
        s.push_str(&format!(
            "throughput {:.0} calls/s over {:.1} s; flood: {} refused requests added {} audit entries; audit log {} entries, {}\n",
            self.calls_per_s,
            self.wall_s,
            self.flood_requests,
            self.flood_audit_entries,
            self.audit_entries,
            if self.audit_intact { "intact" } else { "NOT INTACT" }
        ));
        s
    }
}

fn door(name: &str, mut ms: Vec<f64>, errors: usize) -> Door {
    ms.sort_by(f64::total_cmp);
    let q = |p| crate::compare::stats::quantile(&ms, p).unwrap_or(f64::NAN);
    Door {
        door: name.to_string(),
        calls: ms.len(),
        errors,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: *ms.last().unwrap_or(&f64::NAN),
    }
}

/// The read-only calls clients cycle through.
const MIX: [(&str, &str); 4] = [
    ("system_info", "/system"),
    ("knob_list", "/knobs"),
    ("workload_profiles", "/observe/profiles"),
    ("deploy_history", "/deploy/history"),
];

fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// One REST GET: its latency and whether it succeeded.
fn rest_get(agent: &ureq::Agent, url: &str, token: &str) -> (f64, bool) {
    let t = Instant::now();
    let ok = agent
        .get(url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .is_ok_and(|mut r| r.status().as_u16() == 200 && r.body_mut().read_to_string().is_ok());
    (t.elapsed().as_secs_f64() * 1e3, ok)
}

pub fn run(
    base: &SchedcpConfig,
    cfg: &Config,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, Error> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::Internal(e.into()))?
        .port();
    let daemon = super::private_daemon::PrivateDaemon::open(base, Some(port))?;
    let (c, token, services) = (&daemon.cfg, daemon.token.clone(), daemon.services.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(e.into()))?;
    let stop = CancellationToken::new();
    let socket = c.api.socket.clone();
    let base_url = format!("http://127.0.0.1:{port}/v1");
    let log = audit::path(&c.state_dir());
    let count = |log: &std::path::Path| -> u64 {
        audit::segments(log)
            .unwrap_or_default()
            .iter()
            .map(|p| {
                std::fs::read(p).map_or(0, |b| b.iter().filter(|c| **c == b'\n').count() as u64)
            })
            .sum()
    };
    let server = rt.spawn(server::serve(services.clone(), stop.clone()));
    let t = Instant::now();
    while !socket.exists() || std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t.elapsed() > Duration::from_secs(10) {
            return Err(Error::Internal(anyhow::anyhow!(
                "the daemon did not come up"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // Phase 1: mixed load over both doors.
    progress(&format!("{} clients x {} calls", cfg.clients, cfg.calls));
    let socket_clients = cfg.clients.div_ceil(2);
    let http_clients = cfg.clients - socket_clients;
    let t0 = Instant::now();
    let mut sock_tasks = Vec::new();
    for _ in 0..socket_clients {
        let (socket, token, calls) = (socket.clone(), token.clone(), cfg.calls);
        sock_tasks.push(rt.spawn(async move {
            let mut ms = Vec::with_capacity(calls);
            let mut errors = 0;
            let mut s = match Session::open(&socket, &token).await {
                Ok(s) => s,
                Err(_) => return (ms, calls),
            };
            for i in 0..calls {
                let (tool, _) = MIX[i % MIX.len()];
                let t = Instant::now();
                let r = s
                    .request("tools/call", json!({ "name": tool, "arguments": {} }))
                    .await;
                ms.push(t.elapsed().as_secs_f64() * 1e3);
                if r.map_or(true, |v: Value| v["isError"] == json!(true)) {
                    errors += 1;
                }
            }
            (ms, errors)
        }));
    }
    let http_threads: Vec<_> = (0..http_clients)
        .map(|_| {
            let (url, token, calls) = (base_url.clone(), token.clone(), cfg.calls);
            std::thread::spawn(move || {
                let agent = http_agent();
                let mut ms = Vec::with_capacity(calls);
                let mut errors = 0;
                for i in 0..calls {
                    let (_, path) = MIX[i % MIX.len()];
                    let (t, ok) = rest_get(&agent, &format!("{url}{path}"), &token);
                    ms.push(t);
                    errors += usize::from(!ok);
                }
                (ms, errors)
            })
        })
        .collect();
    let (mut sock_ms, mut sock_err) = (Vec::new(), 0);
    for t in sock_tasks {
        let (ms, e) = rt.block_on(t).map_err(|e| Error::Internal(e.into()))?;
        sock_ms.extend(ms);
        sock_err += e;
    }
    let (mut http_ms, mut http_err) = (Vec::new(), 0);
    for t in http_threads {
        let (ms, e) = t
            .join()
            .map_err(|_| Error::Internal(anyhow::anyhow!("a client thread panicked")))?;
        http_ms.extend(ms);
        http_err += e;
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let total = sock_ms.len() + http_ms.len();

    // Phase 2: one caller, alone and during a flood of refused requests.
    progress("one caller, alone");
    let agent = http_agent();
    let probe = |n: usize| -> (Vec<f64>, usize) {
        let mut ms = Vec::new();
        let mut errors = 0;
        for _ in 0..n {
            let (t, ok) = rest_get(&agent, &format!("{base_url}/system"), &token);
            ms.push(t);
            errors += usize::from(!ok);
            std::thread::sleep(Duration::from_millis(10));
        }
        (ms, errors)
    };
    let (quiet_ms, quiet_err) = probe(100);
    progress(&format!(
        "one caller, during a flood from {} clients",
        cfg.clients
    ));
    let before = count(&log);
    let flooding = Arc::new(AtomicBool::new(true));
    let flood: Vec<_> = (0..cfg.clients)
        .map(|_| {
            let (url, flooding) = (base_url.clone(), flooding.clone());
            std::thread::spawn(move || {
                let agent = http_agent();
                let mut n = 0;
                while flooding.load(Ordering::Relaxed) {
                    let _ = rest_get(&agent, &format!("{url}/system"), "scp_000000000000_wrong");
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (flood_ms, flood_err) = probe(100);
    flooding.store(false, Ordering::Relaxed);
    let flood_requests: usize = flood.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    let flood_audit_entries = count(&log).saturating_sub(before + 100);

    stop.cancel();
    let _ = rt.block_on(server);
    let key = crate::verify::token::Keys::load_or_create(&c.state_dir())?.trusted();
    let v = audit::verify(&log, Some(&Store::open_in(&c.state_dir())?), Some(&key))?;
    Ok(Report {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        clients: cfg.clients,
        calls_per_client: cfg.calls,
        doors: vec![
            door("mcp-socket", sock_ms, sock_err),
            door("rest-http", http_ms, http_err),
        ],
        wall_s,
        calls_per_s: total as f64 / wall_s,
        quiet: door("system_info alone", quiet_ms, quiet_err),
        flooded: door("system_info in flood", flood_ms, flood_err),
        flood_requests,
        flood_audit_entries,
        audit_entries: v.entries,
        audit_intact: v.ok,
    })
}
