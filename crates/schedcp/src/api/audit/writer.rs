//! The audit writer: one thread owns the log and its own store connection,
//! and commits whatever is waiting as one batch (one write, one
//! `fdatasync`, one head update). Callers never do the I/O on an async
//! worker: they hand over a record and wait for its entry. Under a flood,
//! a normal call waits for one group commit, not for a queue of fsyncs.
//!
//! With the daemon's key, the writer also signs checkpoints: an
//! `audit.checkpoint` entry whose detail is a signed statement of the
//! sequence number and hash it follows. One is written at start, after
//! every [`checkpoint::EVERY`] entries, and after [`checkpoint::AFTER`]
//! with any new entry, so whoever holds the public key can tell a rewritten
//! history (the chain alone can be recomputed by anyone who can write the
//! file).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::params;
use tokio::sync::oneshot;

use super::checkpoint;
use super::entry::{Entry, Record};
use super::log::AuditLog;
use super::verify::{tail, verify, Verification};
use crate::error::Error;
use crate::store::Store;
use crate::verify::token::{Checkpoint, Keys};

/// Signs checkpoints, and knows how much is unsigned.
struct Signer {
    keys: Keys,
    since: u64,
    at: Instant,
}

/// Most records committed in one batch.
const MAX_BATCH: usize = 512;

/// How long the head update may wait for another writer of the store; the
/// head may lag (the chain covers the entries meanwhile), calls must not.
const HEAD_BUSY_TIMEOUT: Duration = Duration::from_millis(250);

type Report = (Verification, Vec<Entry>);

enum Req {
    Append {
        records: Vec<Record>,
        reply: oneshot::Sender<Result<Vec<Entry>, String>>,
    },
    Report {
        n: usize,
        reply: oneshot::Sender<Result<Report, Error>>,
    },
}

pub struct Auditor {
    tx: mpsc::Sender<Req>,
    path: PathBuf,
}

impl Auditor {
    /// Start the writer on the log at `path` (opened and repaired first; the
    /// repairs are recorded as the first entries it writes).
    /// `keys`: sign checkpoints with them (the daemon's token key).
    pub fn start(
        path: &Path,
        segment_bytes: u64,
        mut store: Store,
        keys: Option<Keys>,
    ) -> Result<Auditor, Error> {
        let mut log = AuditLog::open(path, segment_bytes)?;
        let _ = store.conn().busy_timeout(HEAD_BUSY_TIMEOUT);
        let repairs: Vec<Record> = std::mem::take(&mut log.repairs)
            .iter()
            .map(|what| {
                Record::call("-", "audit", "daemon", "audit.repair", b"", "ok").with_detail(what)
            })
            .collect();
        if !repairs.is_empty() {
            commit(&mut log, &mut store, repairs)
                .map_err(|e| Error::Setup(format!("recording the audit log's repair: {e}")))?;
        }
        let mut signer = keys.map(|keys| Signer {
            keys,
            since: log.head().0.min(1),
            at: Instant::now(),
        });
        checkpoint(&mut log, &mut store, &mut signer);
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("schedcp-audit".into())
            .spawn(move || run(log, store, signer, rx))
            .map_err(|e| Error::Setup(format!("starting the audit writer: {e}")))?;
        Ok(Auditor {
            tx,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, records: Vec<Record>) -> oneshot::Receiver<Result<Vec<Entry>, String>> {
        let (reply, rx) = oneshot::channel();
        // A send fails only once the writer is gone; the receiver then
        // reports it.
        let _ = self.tx.send(Req::Append { records, reply });
        rx
    }

    /// Append and wait until the entry is durable (from a thread that may
    /// block: not an async worker).
    pub fn append(&self, r: Record) -> Result<Entry, String> {
        one(self.send(vec![r]).blocking_recv())
    }

    /// Append and wait until the entry is durable, from async code.
    pub async fn append_async(&self, r: Record) -> Result<Entry, String> {
        one(self.send(vec![r]).await)
    }

    /// Check the log and read its last `n` entries between two commits, so
    /// no half-written batch is ever seen.
    pub fn report(&self, n: usize) -> Result<Report, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Req::Report { n, reply })
            .map_err(|_| Error::Internal(anyhow::anyhow!("the audit writer has stopped")))?;
        rx.blocking_recv()
            .map_err(|_| Error::Internal(anyhow::anyhow!("the audit writer has stopped")))?
    }
}

fn one(r: Result<Result<Vec<Entry>, String>, oneshot::error::RecvError>) -> Result<Entry, String> {
    match r {
        Ok(Ok(mut v)) if !v.is_empty() => Ok(v.remove(0)),
        Ok(Ok(_)) => Err("the audit writer returned no entry".into()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the audit writer has stopped".into()),
    }
}

/// Write a batch and move the head kept in the store. A head that cannot
/// move (the store busy, a full disk) lags; the entries stand.
fn commit(
    log: &mut AuditLog,
    store: &mut Store,
    records: Vec<Record>,
) -> Result<Vec<Entry>, Error> {
    let entries = log.append(records)?;
    if let Some(last) = entries.last() {
        let moved = store.write(|tx| {
            tx.execute(
                "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                params![last.seq as i64, last.hash],
            )
            .map_err(|e| anyhow::anyhow!("{e}"))
        });
        if let Err(e) = moved {
            tracing::warn!(
                "audit: the store's head stays behind seq {} for now: {e:#}",
                last.seq
            );
        }
    }
    Ok(entries)
}

/// Sign a checkpoint after the head, if anything is unsigned.
fn checkpoint(log: &mut AuditLog, store: &mut Store, signer: &mut Option<Signer>) {
    let Some(s) = signer.as_mut().filter(|s| s.since > 0) else {
        return;
    };
    let (seq, hash) = log.head();
    let signed = s.keys.sign_checkpoint(&Checkpoint {
        seq,
        hash: hash.to_string(),
    });
    let done = signed.and_then(|token| commit(log, store, vec![checkpoint::record(&token)]));
    match done {
        Ok(_) => {
            s.since = 0;
            s.at = Instant::now();
        }
        // The entries stand; the next commit tries again.
        Err(e) => tracing::warn!("audit: could not sign a checkpoint after seq {seq}: {e}"),
    }
}

fn run(mut log: AuditLog, mut store: Store, mut signer: Option<Signer>, rx: mpsc::Receiver<Req>) {
    loop {
        let wait = signer
            .as_ref()
            .filter(|s| s.since > 0)
            .map_or(Duration::from_secs(3600), |s| {
                checkpoint::AFTER.saturating_sub(s.at.elapsed())
            });
        let first = match rx.recv_timeout(wait) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                checkpoint(&mut log, &mut store, &mut signer);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut reqs = vec![first];
        let mut records = 0;
        while records < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => {
                    if let Req::Append { records: rs, .. } = &r {
                        records += rs.len();
                    }
                    reqs.push(r);
                }
                Err(_) => break,
            }
        }
        let mut all = Vec::new();
        let mut waiting = Vec::new();
        let mut reports = Vec::new();
        for r in reqs {
            match r {
                Req::Append { records, reply } => {
                    waiting.push((records.len(), reply));
                    all.extend(records);
                }
                Req::Report { n, reply } => reports.push((n, reply)),
            }
        }
        if !all.is_empty() {
            match commit(&mut log, &mut store, all) {
                Ok(mut entries) => {
                    if let Some(s) = signer.as_mut() {
                        s.since += entries.len() as u64;
                    }
                    for (k, reply) in waiting {
                        let rest = entries.split_off(k.min(entries.len()));
                        let _ = reply.send(Ok(std::mem::replace(&mut entries, rest)));
                    }
                }
                Err(e) => {
                    tracing::error!("audit: {e}");
                    for (_, reply) in waiting {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
        }
        if signer
            .as_ref()
            .is_some_and(|s| s.since >= checkpoint::EVERY || s.at.elapsed() >= checkpoint::AFTER)
        {
            checkpoint(&mut log, &mut store, &mut signer);
        }
        for (n, reply) in reports {
            let key = signer.as_ref().map(|s| s.keys.trusted());
            let r = verify(log.path(), Some(&store), key.as_ref())
                .and_then(|v| Ok((v, tail(log.path(), n)?)));
            let _ = reply.send(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::entry::GENESIS;
    use super::super::log::path as log_path;
    use super::*;

    fn records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record::call("t", "rest", "test", &format!("call{i}"), b"{}", "ok"))
            .collect()
    }

    /// What someone who can write the file but lacks the key can do:
    /// change entries and recompute the whole chain.
    fn rewrite(log: &Path, change: impl Fn(&mut Vec<Entry>)) {
        let text = std::fs::read_to_string(log).unwrap();
        let mut es: Vec<Entry> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        change(&mut es);
        let (mut prev, mut out) = (GENESIS.to_string(), String::new());
        for (i, e) in es.iter_mut().enumerate() {
            e.seq = i as u64 + 1;
            e.prev = prev;
            e.hash = e.compute_hash();
            prev = e.hash.clone();
            out += &serde_json::to_string(e).unwrap();
            out.push('\n');
        }
        std::fs::write(log, out).unwrap();
    }

    /// A log of `batches` batches of `n` entries, each followed by a
    /// checkpoint; the node's key.
    fn signed_log(dir: &Path, batches: &[usize]) -> (PathBuf, crate::verify::token::TrustedKey) {
        let keys = Keys::load_or_create(dir).unwrap();
        let key = keys.trusted();
        let p = log_path(dir);
        let mut store = Store::open_in(dir).unwrap();
        let mut log = AuditLog::open(&p, 64 << 20).unwrap();
        let mut signer = Some(Signer {
            keys,
            since: 0,
            at: Instant::now(),
        });
        for &n in batches {
            let es = commit(&mut log, &mut store, records(n)).unwrap();
            signer.as_mut().unwrap().since += es.len() as u64;
            checkpoint(&mut log, &mut store, &mut signer);
        }
        (p, key)
    }

    #[test]
    fn signed_checkpoints_catch_a_recomputed_history() {
        let dir = tempfile::tempdir().unwrap();
        let (p, key) = signed_log(dir.path(), &[100, 100, 100]);
        let v = verify(&p, None, Some(&key)).unwrap();
        assert!(v.ok, "{v:?}");
        assert_eq!((v.entries, v.checkpoints, v.unsigned_tail), (303, 3, 0));

        // The chain verifies after a rewrite; the signatures do not.
        rewrite(&p, |es| es[5].outcome = "forbidden".into());
        let unkeyed = verify(&p, None, None).unwrap();
        assert!(unkeyed.ok, "the chain alone cannot tell: {unkeyed:?}");
        let v = verify(&p, None, Some(&key)).unwrap();
        assert!(
            !v.ok && v.problems[0].contains("history was rewritten"),
            "{v:?}"
        );
    }

    #[test]
    fn a_checkpoint_from_another_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (p, key) = signed_log(dir.path(), &[10]);
        let other = tempfile::tempdir().unwrap();
        let forged = Keys::load_or_create(other.path())
            .unwrap()
            .sign_checkpoint(&Checkpoint {
                seq: 10,
                hash: "ab".repeat(32),
            })
            .unwrap();
        rewrite(&p, |es| es[10].detail = Some(forged.clone()));
        let v = verify(&p, None, Some(&key)).unwrap();
        assert!(
            !v.ok && v.problems[0].contains("checkpoint not signed by this node"),
            "{v:?}"
        );
    }

    #[test]
    fn removed_checkpoints_leave_a_gap_that_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        // The writer never leaves 1400 entries unsigned.
        let (p, key) = signed_log(dir.path(), &[10, 1400]);
        let v = verify(&p, None, Some(&key)).unwrap();
        assert!(
            !v.ok && v.problems[0].contains("checkpoints were removed"),
            "{v:?}"
        );
        // Nor an unsigned tail that long.
        rewrite(&p, |es| {
            es.pop();
        });
        let v = verify(&p, None, Some(&key)).unwrap();
        assert!(v.unsigned_tail == 1400 && !v.ok, "{v:?}");
    }
}
