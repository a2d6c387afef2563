//! Refusals at the doors, kept from flooding the log: per peer (the uid on
//! the socket, the address on HTTP) and kind of refusal, the first few in a
//! window are written one entry each, the rest are counted and written as
//! one `audit.refusals` summary when the window closes. The same counts
//! give a peer that keeps failing authentication a budget: past it, its
//! unauthenticated requests are answered `rate_limited` with a retry time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::entry::Record;

/// Refusals per peer and kind written one entry each, per window.
pub const WRITTEN_PER_WINDOW: u32 = 5;
/// Failed authentications per peer per window before the peer is slowed.
pub const AUTH_FAILURES_PER_WINDOW: u32 = 30;

struct Count {
    since: Instant,
    door: String,
    peer: String,
    outcome: String,
    /// Refusals in this window, written or not.
    seen: u64,
    /// A few of the calls counted, bounded, for the summary.
    calls: Vec<String>,
}

pub struct Refusals {
    window: Duration,
    counts: Mutex<HashMap<(String, String, String), Count>>,
}

/// What to do with a refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it as its own entry.
    Write,
    /// Counted; it goes into the window's summary.
    Counted,
}

/// The part of a peer that identifies who it is: `uid=N` on the socket
/// (not the pid, which a flood changes at will), the IP on HTTP (not the port).
pub fn peer_key(peer: &str) -> String {
    if let Some(uid) = peer.split_whitespace().find(|w| w.starts_with("uid=")) {
        return uid.to_string();
    }
    match peer.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().to_string(),
        Err(_) => super::entry::bounded(peer),
    }
}

impl Refusals {
    pub fn new(window: Duration) -> Refusals {
        Refusals {
            window,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Count a refusal; whether to write it as its own entry.
    pub fn note(&self, door: &str, peer: &str, outcome: &str, call: &str) -> Verdict {
        let key = (door.to_string(), peer_key(peer), outcome.to_string());
        let mut counts = self.counts.lock().expect("refusals lock");
        let c = counts.entry(key.clone()).or_insert_with(|| Count {
            since: Instant::now(),
            door: key.0.clone(),
            peer: key.1.clone(),
            outcome: key.2.clone(),
            seen: 0,
            calls: Vec::new(),
        });
        c.seen += 1;
        if c.seen <= u64::from(WRITTEN_PER_WINDOW) {
            return Verdict::Write;
        }
        if c.calls.len() < 3 {
            let b = super::entry::bounded(call);
            if !c.calls.contains(&b) {
                c.calls.push(b);
            }
        }
        Verdict::Counted
    }

    /// When a peer that failed authentication too often may try again.
    pub fn auth_budget_spent(&self, door: &str, peer: &str) -> Option<Duration> {
        let counts = self.counts.lock().expect("refusals lock");
        let c = counts.get(&(door.to_string(), peer_key(peer), "unauthorized".to_string()))?;
        (c.seen >= u64::from(AUTH_FAILURES_PER_WINDOW))
            .then(|| self.window.saturating_sub(c.since.elapsed()))
    }

    /// Summaries of the windows that have closed (all of them if `all`),
    /// for refusals that were counted and not written.
    pub fn drain(&self, all: bool) -> Vec<Record> {
        let mut counts = self.counts.lock().expect("refusals lock");
        let mut out = Vec::new();
        counts.retain(|_, c| {
            let closed = all || c.since.elapsed() >= self.window;
            if !closed {
                return true;
            }
            let unwritten = c.seen.saturating_sub(u64::from(WRITTEN_PER_WINDOW));
            if unwritten > 0 {
                let detail = format!(
                    "{} more '{}' refusals for {} at {} in {:.0} s than were written one by one (the first {WRITTEN_PER_WINDOW} were); calls such as: {}",
                    unwritten,
                    c.outcome,
                    c.peer,
                    c.door,
                    c.since.elapsed().as_secs_f64(),
                    c.calls.join(", ")
                );
                out.push(
                    Record::call("-", &c.door, &c.peer, "audit.refusals", b"", &c.outcome)
                        .with_detail(&detail),
                );
            }
            false
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_written_a_few_times_then_summarised_per_peer() {
        let r = Refusals::new(Duration::from_secs(60));
        let verdicts: Vec<Verdict> = (0..300)
            .map(|i| {
                r.note(
                    "rest",
                    &format!("127.0.0.1:{}", 40000 + i),
                    "unauthorized",
                    "GET /v1/system",
                )
            })
            .collect();
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Write).count(),
            WRITTEN_PER_WINDOW as usize
        );
        // Another uid is another peer; another pid of the same uid is not.
        assert_eq!(
            r.note("mcp-socket", "uid=1000 pid=1", "unauthorized", "connect"),
            Verdict::Write
        );
        assert!(r.auth_budget_spent("rest", "127.0.0.1:1").is_some());
        assert!(r
            .auth_budget_spent("mcp-socket", "uid=1000 pid=9")
            .is_none());
        assert!(r.drain(false).is_empty(), "the window is still open");
        let s = r.drain(true);
        assert_eq!(s.len(), 1);
        assert!(s[0]
            .detail
            .as_deref()
            .unwrap()
            .starts_with("295 more 'unauthorized' refusals for 127.0.0.1"));
    }
}
