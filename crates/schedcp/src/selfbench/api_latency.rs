//! Tool-call latency of the daemon: a real `schedcp serve` (in this
//! process, on a private socket and state directory), driven by N
//! concurrent MCP sessions over its socket, each making sequential
//! `tools/call`s. Latency is the client's: request written → response read,
//! so it includes the MCP framing, authentication, the rate limiter, the
//! audit append and the blocking-pool hop, not only the service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::api::client::Session;
use crate::api::server;
use crate::config::Config as SchedcpConfig;
use crate::error::Error;

pub struct Config {
    /// Concurrent sessions to measure, e.g. [1, 32].
    pub clients: Vec<usize>,
    /// Timed calls per cell (split over the sessions, at least 2 each).
    pub calls: usize,
    /// `observe_summary`'s sampling window.
    pub summary_window_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub tool: String,
    pub clients: usize,
    pub calls: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Interquartile range over the median: the spread.
    pub iqr_over_median: f64,
    pub calls_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cpus: usize,
    pub summary_window_ms: u64,
    pub cells: Vec<Cell>,
}

impl Report {
    pub fn render(&self) -> String {
        let mut s = format!(
            "MCP tool-call latency over the daemon's socket ({} CPUs; observe_summary window {} ms)\n{:<16} {:>7} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
            self.cpus, self.summary_window_ms, "tool", "clients", "calls", "errors", "p50 ms", "p99 ms", "max ms", "IQR/med", "calls/s"
        );
        for c in &self.cells {
            s.push_str(&format!(
                "{:<16} {:>7} {:>6} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8.1}\n",
                c.tool,
                c.clients,
                c.calls,
                c.errors,
                c.p50_ms,
                c.p99_ms,
                c.max_ms,
                c.iqr_over_median,
                c.calls_per_s
            ));
        }
        s
    }
}

/// The `q` quantile, NaN for no values (reports print it as such).
fn percentile(values: &[f64], q: f64) -> f64 {
    crate::compare::stats::quantile(values, q).unwrap_or(f64::NAN)
}

pub fn run(
    base: &SchedcpConfig,
    cfg: &Config,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, Error> {
    let daemon = super::private_daemon::PrivateDaemon::open(base, None)?;
    let (c, token, services) = (&daemon.cfg, daemon.token.clone(), daemon.services.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(e.into()))?;
    let stop = CancellationToken::new();
    let socket = c.api.socket.clone();
    let cells = rt.block_on(async {
        let server = tokio::spawn(server::serve(services.clone(), stop.clone()));
        let t = Instant::now();
        while !socket.exists() {
            if t.elapsed() > Duration::from_secs(10) {
                return Err(Error::Internal(anyhow::anyhow!(
                    "the daemon did not come up"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let tools: [(&'static str, Value); 2] = [
            (
                "observe_summary",
                json!({ "window_ms": cfg.summary_window_ms }),
            ),
            (
                "policy_search",
                json!({ "query": "low tail latency for a bursty web server", "limit": 5 }),
            ),
        ];
        let mut cells = Vec::new();
        for (tool, args) in tools {
            let tool: &'static str = tool;
            // Warm-up: open the pooled libraries and load the model.
            progress(&format!("{tool}: warming up"));
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            let warm = (0..cpus).map(|_| {
                let (socket, token, args) = (socket.clone(), token.clone(), args.clone());
                tokio::spawn(async move {
                    let mut s = Session::open(&socket, &token).await?;
                    s.request("tools/call", json!({ "name": tool, "arguments": args }))
                        .await
                })
            });
            for w in warm.collect::<Vec<_>>() {
                w.await
                    .map_err(|e| Error::Internal(e.into()))?
                    .map_err(Error::Internal)?;
            }
            for &n in &cfg.clients {
                progress(&format!("{tool}: {n} concurrent sessions"));
                let per = cfg.calls.div_ceil(n).max(2);
                let mut sessions = Vec::new();
                for _ in 0..n {
                    sessions.push(
                        Session::open(&socket, &token)
                            .await
                            .map_err(Error::Internal)?,
                    );
                }
                let start = Arc::new(tokio::sync::Barrier::new(n));
                let t0 = Instant::now();
                let tasks: Vec<_> = sessions
                    .into_iter()
                    .map(|mut s| {
                        let (args, start) = (args.clone(), start.clone());
                        tokio::spawn(async move {
                            start.wait().await;
                            let mut ms = Vec::with_capacity(per);
                            let mut errors = 0;
                            for _ in 0..per {
                                let t = Instant::now();
                                let r = s
                                    .request(
                                        "tools/call",
                                        json!({ "name": tool, "arguments": args }),
                                    )
                                    .await;
                                ms.push(t.elapsed().as_secs_f64() * 1e3);
                                if r.map_or(true, |v| v["isError"] == json!(true)) {
                                    errors += 1;
                                }
                            }
                            (ms, errors)
                        })
                    })
                    .collect();
                let mut all = Vec::new();
                let mut errors = 0;
                for t in tasks {
                    let (ms, e) = t.await.map_err(|e| Error::Internal(e.into()))?;
                    all.extend(ms);
                    errors += e;
                }
                let wall = t0.elapsed().as_secs_f64();
                all.sort_by(f64::total_cmp);
                let med = percentile(&all, 0.5);
                cells.push(Cell {
                    tool: tool.to_string(),
                    clients: n,
                    calls: all.len(),
                    errors,
                    p50_ms: med,
                    p99_ms: percentile(&all, 0.99),
                    max_ms: *all.last().unwrap_or(&f64::NAN),
                    iqr_over_median: (percentile(&all, 0.75) - percentile(&all, 0.25)) / med,
                    calls_per_s: all.len() as f64 / wall,
                });
            }
        }
        stop.cancel();
        let _ = server.await;
        Ok(cells)
    })?;
    Ok(Report {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        summary_window_ms: cfg.summary_window_ms,
        cells,
    })
}
