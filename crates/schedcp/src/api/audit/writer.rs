//! The audit writer: one thread owns the log and its own store connection,
//! and commits whatever is waiting as one batch (one write, one
//! `fdatasync`, one head update). Callers never do the I/O on an async
//! worker: they hand over a record and wait for its entry. Under a flood,
//! a normal call waits for one group commit, not for a queue of fsyncs.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::params;
use tokio::sync::oneshot;

use super::entry::{Entry, Record};
use super::log::AuditLog;
use super::verify::{tail, verify, Verification};
use crate::error::Error;
use crate::store::Store;

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
    pub fn start(path: &Path, segment_bytes: u64, mut store: Store) -> Result<Auditor, Error> {
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
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("schedcp-audit".into())
            .spawn(move || run(log, store, rx))
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

fn run(mut log: AuditLog, mut store: Store, rx: mpsc::Receiver<Req>) {
    while let Ok(first) = rx.recv() {
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
        for (n, reply) in reports {
            let r = verify(log.path(), Some(&store)).and_then(|v| Ok((v, tail(log.path(), n)?)));
            let _ = reply.send(r);
        }
    }
}
