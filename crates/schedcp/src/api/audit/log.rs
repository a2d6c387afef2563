//! The log on disk: segments of JSON lines and the one append protocol.
//!
//! The current segment is `audit.log`; when it passes the segment size it is
//! sealed as `audit.d/<first seq>-<last seq>.log` and a new one begins. The
//! chain runs on across segments: the first entry of a segment links to the
//! last of the one before.
//!
//! **Append protocol.** A batch of entries is one `write` of whole lines,
//! then `fdatasync`, and only then are they acknowledged and the in-memory
//! head moved. Each failure point has one recovery:
//! - the write or the sync fails (a full disk, an I/O error): the file is
//!   cut back to its last acknowledged length at once, and, should that cut
//!   fail too, before the next append; no fragment is ever followed by a
//!   new entry, and the sequence is not consumed;
//! - the process dies mid-write: [`AuditLog::open`] finds the torn or
//!   unparseable bytes, moves them to `audit.d/quarantine-<ms>.bin`, keeps
//!   every whole entry, and reports the repair (the daemon records it as an
//!   `audit.repair` entry and `audit verify` lists it);
//! - moving the store's head fails after the entry is durable: the entry
//!   stands and the sequence moves on (the head lags, and catches up at the
//!   next append; see `writer`), so no sequence number is used twice.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::entry::{Entry, Record, GENESIS};
use crate::error::Error;
use crate::host::fs::{atomic_write, sync_dir};

/// The current segment under a state directory.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("audit.log")
}

/// Where sealed segments and quarantined bytes go, beside `log`.
pub fn sealed_dir(log: &Path) -> PathBuf {
    log.with_file_name("audit.d")
}

/// Sealed segments, oldest first, then the current one (if it exists).
pub fn segments(log: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut sealed: Vec<(u64, PathBuf)> = Vec::new();
    let dir = sealed_dir(log);
    match std::fs::read_dir(&dir) {
        Ok(rd) => {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if let Some(first) = name
                    .strip_suffix(".log")
                    .and_then(|s| s.split_once('-'))
                    .and_then(|(a, _)| a.parse::<u64>().ok())
                {
                    sealed.push((first, e.path()));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::Input(format!("cannot list {}: {e}", dir.display()))),
    }
    sealed.sort();
    let mut all: Vec<PathBuf> = sealed.into_iter().map(|(_, p)| p).collect();
    if log.exists() {
        all.push(log.to_path_buf());
    }
    Ok(all)
}

/// Quarantine files beside `log`, oldest first.
pub fn quarantines(log: &Path) -> Vec<PathBuf> {
    let mut q: Vec<PathBuf> = std::fs::read_dir(sealed_dir(log))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("quarantine-"))
                })
                .collect()
        })
        .unwrap_or_default();
    q.sort();
    q
}

pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// Bytes of the current segment that are acknowledged entries.
    len: u64,
    /// A failed write may have left bytes past `len` that could not be cut
    /// off yet: cut them before writing anything else.
    dirty: bool,
    seq: u64,
    head: String,
    /// Sequence number of the current segment's first entry.
    first: Option<u64>,
    segment_bytes: u64,
    /// What opening had to repair, in words (recorded by the caller).
    pub repairs: Vec<String>,
}

/// The entries of a segment's bytes, and the bytes that are not entries.
struct Scan {
    good: Vec<u8>,
    junk: Vec<u8>,
    fragments: usize,
    last: Option<Entry>,
    first: Option<u64>,
}

fn scan(bytes: &[u8]) -> Scan {
    let mut s = Scan {
        good: Vec::with_capacity(bytes.len()),
        junk: Vec::new(),
        fragments: 0,
        last: None,
        first: None,
    };
    let mut rest = bytes;
    while !rest.is_empty() {
        let (line, next, whole) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..], true),
            None => (rest, &rest[rest.len()..], false),
        };
        rest = next;
        // A fragment left by a cut-short write may sit in front of a whole
        // entry (by code older than this protocol): keep the entry.
        let start = if whole { find_entry_start(line) } else { None };
        match start {
            Some(at) => {
                let e: Entry =
                    serde_json::from_slice(&line[at..]).expect("checked by find_entry_start");
                if at > 0 {
                    s.junk.extend_from_slice(&line[..at]);
                    s.junk.push(b'\n');
                    s.fragments += 1;
                }
                s.good.extend_from_slice(&line[at..]);
                s.good.push(b'\n');
                s.first.get_or_insert(e.seq);
                s.last = Some(e);
            }
            None => {
                s.junk.extend_from_slice(line);
                if whole {
                    s.junk.push(b'\n');
                }
                s.fragments += 1;
            }
        }
    }
    s
}

/// Where a whole entry begins in `line`: at 0, or after a fragment.
fn find_entry_start(line: &[u8]) -> Option<usize> {
    if serde_json::from_slice::<Entry>(line).is_ok() {
        return Some(0);
    }
    let pat = b"{\"seq\":";
    (1..line.len().saturating_sub(pat.len()))
        .rev()
        .filter(|i| line[*i..].starts_with(pat))
        .find(|i| serde_json::from_slice::<Entry>(&line[*i..]).is_ok())
}

/// The last entry of a sealed segment.
fn last_entry(path: &Path) -> Result<Option<Entry>, Error> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Setup(format!("audit log {}: reading: {e}", path.display())))?;
    Ok(scan(&bytes).last)
}

impl AuditLog {
    /// Open the current segment for appending, repairing what a crash or a
    /// full disk left (see the module's protocol).
    pub fn open(path: &Path, segment_bytes: u64) -> Result<AuditLog, Error> {
        let io = |what: &str, e: std::io::Error| {
            Error::Setup(format!("audit log {}: {what}: {e}", path.display()))
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| io("opening", e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io("reading", e))?;
        let s = scan(&bytes);
        let mut repairs = Vec::new();
        if !s.junk.is_empty() {
            let dir = sealed_dir(path);
            std::fs::create_dir_all(&dir).map_err(|e| io("creating audit.d", e))?;
            let q = dir.join(format!(
                "quarantine-{}.bin",
                chrono::Utc::now().timestamp_millis()
            ));
            atomic_write(&q, &s.junk, Some(0o600)).map_err(|e| io("quarantining", e))?;
            atomic_write(path, &s.good, Some(0o600)).map_err(|e| io("repairing", e))?;
            file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(path)
                .map_err(|e| io("reopening", e))?;
            let what = format!(
                "moved {} bytes in {} fragment(s) that were not whole entries (a write cut short by a crash or a full disk) to {}; every whole entry was kept",
                s.junk.len(),
                s.fragments,
                q.display()
            );
            tracing::warn!("audit log {}: {what}", path.display());
            repairs.push(what);
        }
        let (seq, head) = match &s.last {
            Some(e) => (e.seq, e.hash.clone()),
            None => match segments(path)?.into_iter().rev().find(|p| p != path) {
                Some(sealed) => last_entry(&sealed)?
                    .map(|e| (e.seq, e.hash))
                    .unwrap_or((0, GENESIS.to_string())),
                None => (0, GENESIS.to_string()),
            },
        };
        Ok(AuditLog {
            path: path.to_path_buf(),
            file,
            len: s.good.len() as u64,
            dirty: false,
            seq,
            head,
            first: s.first,
            segment_bytes: segment_bytes.max(4096),
            repairs,
        })
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last entry's sequence number and hash (0 and [`GENESIS`] when empty).
    pub fn head(&self) -> (u64, &str) {
        (self.seq, &self.head)
    }

    /// Append `records` as one durable write; all of them or none.
    pub fn append(&mut self, records: Vec<Record>) -> Result<Vec<Entry>, Error> {
        let fail = |what: &str, e: std::io::Error| {
            Error::Internal(anyhow::anyhow!(
                "{what} the audit log {}: {e}",
                self.path.display()
            ))
        };
        if self.dirty {
            self.file
                .set_len(self.len)
                .map_err(|e| fail("cutting a failed write off", e))?;
            self.dirty = false;
        }
        let (mut seq, mut head) = (self.seq, self.head.clone());
        let mut buf = Vec::new();
        let mut entries = Vec::with_capacity(records.len());
        for r in records {
            seq += 1;
            let e = r.into_entry(seq, &head);
            head = e.hash.clone();
            serde_json::to_writer(&mut buf, &e).map_err(|e| Error::Internal(e.into()))?;
            buf.push(b'\n');
            entries.push(e);
        }
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Nothing of this batch was acknowledged: take it back now, so
            // no fragment is ever followed by a later entry.
            self.dirty = true;
            if self.file.set_len(self.len).is_ok() {
                self.dirty = false;
            }
            return Err(fail("appending to", e));
        }
        self.len += buf.len() as u64;
        self.seq = seq;
        self.head = head;
        if let Some(e) = entries.first() {
            self.first.get_or_insert(e.seq);
        }
        if self.len >= self.segment_bytes {
            if let Err(e) = self.seal() {
                // The entries are durable; sealing is tried again next time.
                tracing::warn!(
                    "audit log {}: sealing the segment: {e}",
                    self.path.display()
                );
            }
        }
        Ok(entries)
    }

    /// Seal the current segment and begin a new one.
    fn seal(&mut self) -> std::io::Result<()> {
        let dir = sealed_dir(&self.path);
        std::fs::create_dir_all(&dir)?;
        let first = self.first.unwrap_or(self.seq);
        let sealed = dir.join(format!("{first:012}-{:012}.log", self.seq));
        std::fs::rename(&self.path, &sealed)?;
        sync_dir(&dir)?;
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)?;
        if let Some(parent) = self.path.parent() {
            sync_dir(parent)?;
        }
        self.file = file;
        self.len = 0;
        self.first = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(call: &str) -> Record {
        Record::call("abc", "rest", "test", call, b"{}", "ok").took(1.5)
    }

    #[test]
    fn fragments_are_quarantined_and_whole_entries_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let mut log = AuditLog::open(&p, 1 << 20).unwrap();
        log.append(vec![rec("a")]).unwrap();
        drop(log);
        // A write cut short by a full disk, then (old code) a whole entry
        // appended after it, then a torn tail.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"seq\":2,\"at\":\"20").unwrap();
        drop(f);
        let mut log = AuditLog::open(&p, 1 << 20).unwrap();
        assert_eq!(log.repairs.len(), 1, "{:?}", log.repairs);
        let e = log.append(vec![rec("b"), rec("c")]).unwrap();
        assert_eq!(e.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(quarantines(&p).len(), 1);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn segments_seal_and_the_chain_runs_across_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let mut log = AuditLog::open(&p, 4096).unwrap();
        for i in 0..40 {
            log.append(vec![rec(&format!("call{i}"))]).unwrap();
        }
        drop(log);
        let segs = segments(&p).unwrap();
        assert!(segs.len() >= 3, "{segs:?}");
        // Reopening with an empty current segment continues from the last
        // sealed one.
        let mut log = AuditLog::open(&p, 4096).unwrap();
        assert_eq!(log.append(vec![rec("next")]).unwrap()[0].seq, 41);
    }
}
