//! Checking the log: every hash, the sequence and the chain across all
//! segments, the end against the store's head, and what is still open.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use rusqlite::OptionalExtension;
use schemars::JsonSchema;
use serde::Serialize;

use super::checkpoint::{self, EVERY as CHECKPOINT_EVERY, MAX_UNSIGNED};
use super::entry::{Entry, GENESIS};
use super::log::{quarantines, segments};
use crate::error::Error;
use crate::store::Store;
use crate::verify::token::TrustedKey;

/// The result of checking a log.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Verification {
    pub entries: u64,
    /// No tampering found (`problems` is empty).
    pub ok: bool,
    /// Every sign of tampering, first one first.
    pub problems: Vec<String>,
    /// Sealed segments plus the current one.
    pub segments: usize,
    /// Not tampering, but worth knowing: repairs after a crash or a full
    /// disk (with where the bytes went), a head that lags.
    pub notes: Vec<String>,
    /// Actions with effects that began and have no end on record: still
    /// running, or the daemon stopped mid-action.
    pub open_actions: Vec<String>,
    /// Checkpoints whose signature verified with the node's key (none
    /// checked without a key).
    pub checkpoints: u64,
    /// Entries after the last signed checkpoint: covered by the chain only.
    pub unsigned_tail: u64,
}

fn read_segment(
    path: &Path,
    mut each: impl FnMut(usize, Result<Entry, String>),
) -> Result<(), Error> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::Input(format!("cannot read audit log {}: {e}", path.display())))?;
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(|e| Error::Input(format!("reading {}: {e}", path.display())))?;
        each(
            i + 1,
            serde_json::from_slice(&line).map_err(|e| e.to_string()),
        );
    }
    Ok(())
}

/// Check every segment of the log at `log`, the end against the head in
/// `store`, and the signed checkpoints against `key` (each when given).
pub fn verify(
    log: &Path,
    store: Option<&Store>,
    key: Option<&TrustedKey>,
) -> Result<Verification, Error> {
    let segs = segments(log)?;
    if segs.is_empty() {
        return Err(Error::Input(format!(
            "no audit log at {} (the daemon writes it once it serves)",
            log.display()
        )));
    }
    let head: Option<(i64, String)> = match store {
        Some(s) => s
            .conn()
            .query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|e| Error::Internal(anyhow::anyhow!("reading the audit head: {e}")))?,
        None => None,
    };
    let mut v = Verification {
        segments: segs.len(),
        ..Verification::default()
    };
    let (mut prev, mut expect_seq) = (GENESIS.to_string(), 1u64);
    let mut open: BTreeMap<u64, String> = BTreeMap::new();
    let mut head_seen = false;
    // Sequence number of the last signed checkpoint (0: none yet).
    let mut signed_at = 0u64;
    for seg in &segs {
        let name = seg
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().to_string());
        read_segment(seg, |lineno, e| {
            let e = match e {
                Ok(e) => e,
                Err(err) => {
                    v.problems
                        .push(format!("{name} line {lineno}: not an audit entry ({err})"));
                    return;
                }
            };
            v.entries += 1;
            if e.seq != expect_seq {
                v.problems.push(format!(
                    "{name} line {lineno}: sequence {} where {expect_seq} was due (entries deleted or inserted)",
                    e.seq
                ));
            }
            if e.prev != prev {
                v.problems.push(format!(
                    "{name} line {lineno} (seq {}): previous-hash link broken (an entry before it was changed, deleted or inserted)",
                    e.seq
                ));
            }
            if e.compute_hash() != e.hash {
                v.problems.push(format!(
                    "{name} line {lineno} (seq {}): contents do not match its hash (the entry was edited)",
                    e.seq
                ));
            }
            if let Some((hseq, hhash)) = &head {
                if e.seq as i64 == *hseq {
                    head_seen = true;
                    if &e.hash != hhash {
                        v.problems.push(format!(
                            "seq {hseq}: the entry differs from the store's head (it was replaced)"
                        ));
                    }
                }
            }
            if e.outcome == "begun" {
                open.insert(
                    e.seq,
                    format!("seq {} {} by token {} at {}", e.seq, e.call, e.token, e.at),
                );
            }
            if let Some(of) = e.of {
                open.remove(&of);
            }
            if let Some(key) = key.filter(|_| e.call == checkpoint::CALL) {
                match key.open_checkpoint(e.detail.as_deref().unwrap_or("")) {
                    Ok(c) if c.seq + 1 == e.seq && c.hash == e.prev => {
                        if signed_at > 0 && e.seq - signed_at > MAX_UNSIGNED {
                            v.problems.push(format!(
                                "seq {signed_at}..{}: no signed checkpoint over {} entries, though \
                                 the daemon signs one every {CHECKPOINT_EVERY} (checkpoints were removed)",
                                e.seq,
                                e.seq - signed_at
                            ));
                        } else if signed_at == 0 && e.seq > MAX_UNSIGNED {
                            v.notes.push(format!(
                                "seq 1..{}: before the first signed checkpoint (written by an older \
                                 schedcp, or checkpoints were removed)",
                                e.seq
                            ));
                        }
                        v.checkpoints += 1;
                        signed_at = e.seq;
                    }
                    Ok(c) => v.problems.push(format!(
                        "seq {}: the checkpoint signs seq {} with hash {}…, but the chain before it \
                         differs (history was rewritten after it was signed)",
                        e.seq,
                        c.seq,
                        &c.hash[..c.hash.len().min(12)]
                    )),
                    Err(why) => v.problems.push(format!(
                        "seq {}: checkpoint not signed by this node: {why}",
                        e.seq
                    )),
                }
            }
            if e.call == "audit.repair" {
                v.notes.push(format!(
                    "seq {} at {}: repaired: {}",
                    e.seq,
                    e.at,
                    e.detail.as_deref().unwrap_or("")
                ));
            }
            prev = e.hash.clone();
            expect_seq = e.seq + 1;
        })?;
    }
    let last = expect_seq - 1;
    if let Some((hseq, _)) = head {
        if (last as i64) < hseq {
            v.problems.push(format!(
                "the log ends at seq {last} but the store's head is seq {hseq}: entries were cut off the end"
            ));
        } else if !head_seen && hseq > 0 {
            v.problems.push(format!(
                "the store's head is seq {hseq}, which is not in the log"
            ));
        } else if last as i64 > hseq + 1 {
            // A head update failed (the store was busy) after the entries
            // were durable; the next append moves it.
            v.notes.push(format!(
                "the store's head (seq {hseq}) lags the log's end (seq {last}); entries after it are covered by the chain only"
            ));
        }
    }
    for q in quarantines(log) {
        let size = std::fs::metadata(&q).map_or(0, |m| m.len());
        v.notes
            .push(format!("quarantined bytes: {} ({size} bytes)", q.display()));
    }
    v.open_actions = open.into_values().collect();
    if key.is_some() {
        v.unsigned_tail = last - signed_at;
        if signed_at > 0 && v.unsigned_tail > MAX_UNSIGNED {
            v.problems.push(format!(
                "the last {} entries carry no signed checkpoint, though the daemon signs one every \
                 {CHECKPOINT_EVERY} (checkpoints were removed)",
                v.unsigned_tail
            ));
        }
    }
    v.ok = v.problems.is_empty();
    Ok(v)
}

/// The last `n` entries over all segments, oldest first.
pub fn tail(log: &Path, n: usize) -> Result<Vec<Entry>, Error> {
    let mut out: Vec<Entry> = Vec::new();
    for seg in segments(log)?.iter().rev() {
        if out.len() >= n {
            break;
        }
        let mut these = Vec::new();
        read_segment(seg, |_, e| {
            if let Ok(e) = e {
                these.push(e);
            }
        })?;
        let want = n - out.len();
        let skip = these.len().saturating_sub(want);
        these.drain(..skip);
        these.append(&mut out);
        out = these;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::entry::Record;
    use super::super::log::{path, AuditLog};
    use super::*;

    fn rec(call: &str) -> Record {
        Record::call("abc", "rest", "test", call, b"{}", "ok").took(1.5)
    }

    fn set_head(store: &mut Store, e: &Entry) {
        store
            .write(|tx| {
                tx.execute(
                    "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                    rusqlite::params![e.seq as i64, e.hash],
                )
                .map_err(|e| anyhow::anyhow!("{e}"))
            })
            .unwrap();
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
        let mut log = AuditLog::open(&p, 1 << 20).unwrap();
        for i in 0..5 {
            let e = log.append(vec![rec(&format!("tool{i}"))]).unwrap();
            set_head(&mut store, &e[0]);
        }
        drop(log);
        let v = verify(&p, Some(&store), None).unwrap();
        assert!(v.ok && v.entries == 5, "{v:?}");
        let mut log = AuditLog::open(&p, 1 << 20).unwrap();
        let e = log.append(vec![rec("more")]).unwrap();
        assert_eq!(e[0].seq, 6);
        set_head(&mut store, &e[0]);
        drop(log);
        let clean: Vec<String> = std::fs::read_to_string(&p)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();

        let mut edited = clean.clone();
        edited[2] = edited[2].replace("tool2", "toolX");
        write(&edited, &p);
        let v = verify(&p, Some(&store), None).unwrap();
        assert!(
            !v.ok && v.problems[0].contains("seq 3") && v.problems[0].contains("edited"),
            "{v:?}"
        );

        let mut deleted = clean.clone();
        deleted.remove(1);
        write(&deleted, &p);
        let v = verify(&p, Some(&store), None).unwrap();
        assert!(
            !v.ok && v.problems.iter().any(|x| x.contains("deleted")),
            "{v:?}"
        );

        let mut inserted = clean.clone();
        inserted.insert(3, clean[3].clone());
        write(&inserted, &p);
        assert!(!verify(&p, Some(&store), None).unwrap().ok);

        write(&clean[..4], &p);
        let v = verify(&p, Some(&store), None).unwrap();
        assert!(!v.ok && v.problems[0].contains("cut off the end"), "{v:?}");

        write(&clean, &p);
        assert!(verify(&p, Some(&store), None).unwrap().ok);
        assert_eq!(
            tail(&p, 2)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            [5, 6]
        );
    }

    /// Finding 3a: the entry is durable, the head cannot move (the store is
    /// busy): the next entry takes the next number, and the log verifies.
    #[test]
    fn a_head_that_could_not_move_does_not_fork_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let mut store = Store::open_in_memory().unwrap();
        let mut log = AuditLog::open(&p, 1 << 20).unwrap();
        let e1 = log.append(vec![rec("a")]).unwrap();
        set_head(&mut store, &e1[0]);
        // Entries 2 and 3 land; their head updates "fail" (not made).
        let e = log.append(vec![rec("b")]).unwrap();
        assert_eq!(e[0].seq, 2);
        assert_eq!(log.append(vec![rec("c")]).unwrap()[0].seq, 3);
        let v = verify(&p, Some(&store), None).unwrap();
        assert!(v.ok, "{v:?}");
        assert!(v.notes.iter().any(|n| n.contains("lags")), "{v:?}");
    }

    #[test]
    fn tail_and_verify_span_sealed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let mut store = Store::open_in_memory().unwrap();
        let mut log = AuditLog::open(&p, 4096).unwrap();
        for i in 0..60 {
            let e = log.append(vec![rec(&format!("call{i}"))]).unwrap();
            set_head(&mut store, &e[0]);
        }
        let v = verify(&p, Some(&store), None).unwrap();
        assert!(v.ok && v.entries == 60 && v.segments >= 3, "{v:?}");
        let t = tail(&p, 25).unwrap();
        assert_eq!(t.len(), 25);
        assert_eq!(t[0].seq, 36);
        assert_eq!(t[24].seq, 60);
        // Deleting a sealed segment is caught.
        let segs = segments(&p).unwrap();
        std::fs::remove_file(&segs[1]).unwrap();
        assert!(!verify(&p, Some(&store), None).unwrap().ok);
    }
}
