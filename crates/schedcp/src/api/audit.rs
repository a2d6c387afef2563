//! The audit log: one JSON line per API call, hash-chained.
//!
//! Each entry carries its sequence number, the previous entry's hash and its
//! own: SHA-256 over the previous hash and the entry's canonical JSON
//! without `hash`. Editing an entry breaks its hash, inserting or deleting
//! one breaks the sequence and the chain, and cutting entries off the end is
//! caught by the head (last sequence number and hash) that is also kept in
//! the SQLite store. Lines are appended with one `write` and `fdatasync`ed
//! before the head moves, so a crash leaves at most one entry the head does
//! not yet cover, or a torn last line that [`AuditLog::open`] cuts off (it
//! was never acknowledged).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::store::Store;

/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One call, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct Entry {
    pub seq: u64,
    pub at: String,
    /// Token id, or `-` when the call had no valid token.
    pub token: String,
    /// `mcp-http`, `mcp-socket`, `rest`.
    pub door: String,
    /// Who connected: `uid=0 pid=123` on the socket, the address on HTTP.
    pub peer: String,
    /// Tool name (MCP) or `METHOD /path` (REST).
    pub call: String,
    /// SHA-256 of the arguments as received.
    pub args_sha256: String,
    /// `ok`, or the error code (`unauthorized`, `forbidden`, `rate_limited`, ...).
    pub outcome: String,
    pub duration_ms: f64,
    pub prev: String,
    pub hash: String,
}

impl Entry {
    fn compute_hash(&self) -> String {
        let mut body = serde_json::to_value(self).expect("entry serialises");
        body.as_object_mut().expect("object").remove("hash");
        let mut h = Sha256::new();
        h.update(self.prev.as_bytes());
        h.update(b"\n");
        h.update(body.to_string().as_bytes());
        hex::encode(h.finalize())
    }
}

/// What to record about a call (the log fills in seq, time and hashes).
pub struct Record<'a> {
    pub token: &'a str,
    pub door: &'a str,
    pub peer: &'a str,
    pub call: &'a str,
    pub args: &'a [u8],
    pub outcome: &'a str,
    pub duration_ms: f64,
}

pub struct AuditLog {
    path: PathBuf,
    file: File,
    seq: u64,
    head: String,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("audit.log")
}

impl AuditLog {
    /// Open for appending, cutting off a torn last line.
    pub fn open(path: &Path) -> Result<AuditLog, Error> {
        let io = |what: &str, e: std::io::Error| {
            Error::Setup(format!("audit log {}: {what}: {e}", path.display()))
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| io("opening", e))?;
        let (mut seq, mut head, mut good_len) = (0, GENESIS.to_string(), 0u64);
        {
            let mut r = BufReader::new(&mut file);
            let mut line = String::new();
            let mut offset = 0u64;
            loop {
                line.clear();
                let n = r.read_line(&mut line).map_err(|e| io("reading", e))?;
                if n == 0 {
                    break;
                }
                offset += n as u64;
                if !line.ends_with('\n') {
                    break; // torn tail: never acknowledged
                }
                let e: Entry = serde_json::from_str(&line).map_err(|e| {
                    Error::Setup(format!(
                        "audit log {} is damaged at entry {}: {e}; run `schedcp audit verify`",
                        path.display(),
                        seq + 1
                    ))
                })?;
                seq = e.seq;
                head = e.hash;
                good_len = offset;
            }
        }
        let len = file.metadata().map_err(|e| io("reading", e))?.len();
        if len > good_len {
            tracing::warn!(
                "audit log {}: cutting off a torn last line ({} bytes)",
                path.display(),
                len - good_len
            );
            file.set_len(good_len).map_err(|e| io("repairing", e))?;
            file.seek(SeekFrom::End(0))
                .map_err(|e| io("repairing", e))?;
        }
        Ok(AuditLog {
            path: path.to_path_buf(),
            file,
            seq,
            head,
        })
    }

    /// Append one entry and move the head kept in `store`.
    pub fn append(&mut self, store: &mut Store, r: &Record<'_>) -> Result<Entry, Error> {
        let mut e = Entry {
            seq: self.seq + 1,
            at: crate::host::now_rfc3339(),
            token: r.token.to_string(),
            door: r.door.to_string(),
            peer: r.peer.to_string(),
            call: r.call.to_string(),
            args_sha256: hex::encode(Sha256::digest(r.args)),
            outcome: r.outcome.to_string(),
            duration_ms: (r.duration_ms * 1000.0).round() / 1000.0,
            prev: self.head.clone(),
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        let mut line = serde_json::to_string(&e).map_err(|e| Error::Internal(e.into()))?;
        line.push('\n');
        let io = |e: std::io::Error| {
            Error::Internal(anyhow::anyhow!(
                "appending to the audit log {}: {e}",
                self.path.display()
            ))
        };
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        store.write(|tx| {
            tx.execute(
                "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                params![e.seq as i64, e.hash],
            )
            .map_err(|e| Error::Internal(anyhow::anyhow!("moving the audit head: {e}")))
        })?;
        self.seq = e.seq;
        self.head = e.hash.clone();
        Ok(e)
    }
}

/// The result of checking a log.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Verification {
    pub entries: u64,
    pub ok: bool,
    /// Every problem found, first one first.
    pub problems: Vec<String>,
}

/// Check every entry's hash, the sequence, the chain, and the end against
/// the head in `store` (when given).
pub fn verify(path: &Path, store: Option<&Store>) -> Result<Verification, Error> {
    let file = File::open(path)
        .map_err(|e| Error::Input(format!("cannot read audit log {}: {e}", path.display())))?;
    let mut problems = Vec::new();
    let (mut prev, mut expect_seq, mut n) = (GENESIS.to_string(), 1u64, 0u64);
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::Input(format!("reading {}: {e}", path.display())))?;
        let lineno = i + 1;
        let e: Entry = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(err) => {
                problems.push(format!("line {lineno}: not an audit entry ({err})"));
                continue;
            }
        };
        n += 1;
        if e.seq != expect_seq {
            problems.push(format!(
                "line {lineno}: sequence {} where {expect_seq} was due (entries deleted or inserted)",
                e.seq
            ));
        }
        if e.prev != prev {
            problems.push(format!(
                "line {lineno} (seq {}): previous-hash link broken (an entry before it was changed, deleted or inserted)",
                e.seq
            ));
        }
        if e.compute_hash() != e.hash {
            problems.push(format!(
                "line {lineno} (seq {}): contents do not match its hash (the entry was edited)",
                e.seq
            ));
        }
        prev = e.hash.clone();
        expect_seq = e.seq + 1;
    }
    if let Some(store) = store {
        let head: Option<(i64, String)> = store
            .conn()
            .query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|e| Error::Internal(anyhow::anyhow!("reading the audit head: {e}")))?;
        if let Some((seq, hash)) = head {
            let last = expect_seq - 1;
            // The log may be one entry ahead (a crash between the two writes).
            if (last as i64) < seq {
                problems.push(format!(
                    "the log ends at seq {last} but the store's head is seq {seq}: entries were cut off the end"
                ));
            } else if last as i64 == seq && prev != hash {
                problems.push(format!(
                    "the last entry's hash differs from the store's head for seq {seq}"
                ));
            } else if last as i64 > seq + 1 {
                problems.push(format!(
                    "the log has {} entries the store's head (seq {seq}) never covered",
                    last as i64 - seq
                ));
            }
        }
    }
    Ok(Verification {
        entries: n,
        ok: problems.is_empty(),
        problems,
    })
}

/// The last `n` entries.
pub fn tail(path: &Path, n: usize) -> Result<Vec<Entry>, Error> {
    let file = File::open(path)
        .map_err(|e| Error::Input(format!("cannot read audit log {}: {e}", path.display())))?;
    let mut ring = std::collections::VecDeque::with_capacity(n.min(10_000));
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| Error::Input(format!("reading {}: {e}", path.display())))?;
        if let Ok(e) = serde_json::from_str::<Entry>(&line) {
            if ring.len() == n {
                ring.pop_front();
            }
            ring.push_back(e);
        }
    }
    Ok(ring.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(call: &str) -> Record<'_> {
        Record {
            token: "abc",
            door: "rest",
            peer: "test",
            call,
            args: b"{}",
            outcome: "ok",
            duration_ms: 1.5,
        }
    }

    fn write(lines: &[String], path: &Path) {
        std::fs::write(
            path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
    }

    #[test]
    fn a_clean_log_verifies_and_every_tampering_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let mut store = Store::open_in_memory().unwrap();
        let mut log = AuditLog::open(&p).unwrap();
        for i in 0..5 {
            log.append(&mut store, &rec(&format!("tool{i}"))).unwrap();
        }
        drop(log);
        let v = verify(&p, Some(&store)).unwrap();
        assert!(v.ok && v.entries == 5, "{v:?}");
        // Reopening continues the chain.
        let mut log = AuditLog::open(&p).unwrap();
        assert_eq!(log.append(&mut store, &rec("more")).unwrap().seq, 6);
        drop(log);
        let clean: Vec<String> = std::fs::read_to_string(&p)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();

        let mut edited = clean.clone();
        edited[2] = edited[2].replace("tool2", "toolX");
        write(&edited, &p);
        let v = verify(&p, Some(&store)).unwrap();
        assert!(
            !v.ok && v.problems[0].contains("seq 3") && v.problems[0].contains("edited"),
            "{v:?}"
        );

        let mut deleted = clean.clone();
        deleted.remove(1);
        write(&deleted, &p);
        let v = verify(&p, Some(&store)).unwrap();
        assert!(
            !v.ok && v.problems.iter().any(|x| x.contains("deleted")),
            "{v:?}"
        );

        let mut inserted = clean.clone();
        inserted.insert(3, clean[3].clone());
        write(&inserted, &p);
        assert!(!verify(&p, Some(&store)).unwrap().ok);

        write(&clean[..4], &p);
        let v = verify(&p, Some(&store)).unwrap();
        assert!(!v.ok && v.problems[0].contains("cut off the end"), "{v:?}");

        write(&clean, &p);
        assert!(verify(&p, Some(&store)).unwrap().ok);
        assert_eq!(
            tail(&p, 2)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            [5, 6]
        );
    }

    #[test]
    fn a_torn_last_line_is_cut_off_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let mut store = Store::open_in_memory().unwrap();
        let mut log = AuditLog::open(&p).unwrap();
        log.append(&mut store, &rec("a")).unwrap();
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"seq\":2,\"at\":\"2026").unwrap();
        drop(f);
        let mut log = AuditLog::open(&p).unwrap();
        assert_eq!(log.append(&mut store, &rec("b")).unwrap().seq, 2);
        assert!(verify(&p, Some(&store)).unwrap().ok);
    }
}
