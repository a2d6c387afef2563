//! The knob journal: a change set applied outside a deployment (a trial) is
//! recorded with its snapshot *before its first write* and marked restored
//! after. If its owner dies in between (killed, crashed, the machine full),
//! the next schedcp that opens the store finds the row, sees the owner is
//! gone, and restores the snapshot. Deployments keep their change sets in
//! their own rows instead; the deploy controller reconciles those.

use rusqlite::params;

use super::change::Applied;
use crate::error::Error;
use crate::store::Store;

fn db(e: rusqlite::Error) -> Error {
    Error::Internal(anyhow::anyhow!("knob journal: {e}"))
}

/// This process, as the journal names owners: pid and start time, so a
/// reused pid is not mistaken for a live owner.
fn me() -> (i32, u64) {
    let pid = std::process::id() as i32;
    (pid, super::task::start_time(pid, pid).unwrap_or(0))
}

/// Journal `a` (before its first write). Returns the row id.
pub fn begin(store: &mut Store, purpose: &str, a: &Applied) -> Result<i64, Error> {
    let (pid, start) = me();
    let json = serde_json::to_string(a).map_err(|e| Error::Internal(e.into()))?;
    store.write(|tx| {
        tx.execute(
            "INSERT INTO knob_journal (purpose, owner_pid, owner_start, started_at, applied) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![purpose, pid, start as i64, crate::host::now_rfc3339(), json],
        )
        .map_err(db)?;
        Ok(tx.last_insert_rowid())
    })
}

/// Record the snapshot as it grows (threads picked up by a sweep).
pub fn save(store: &mut Store, id: i64, a: &Applied) -> Result<(), Error> {
    let json = serde_json::to_string(a).map_err(|e| Error::Internal(e.into()))?;
    store.write(|tx| {
        tx.execute(
            "UPDATE knob_journal SET applied = ?2 WHERE id = ?1",
            params![id, json],
        )
        .map_err(db)?;
        Ok(())
    })
}

/// Mark a row restored (or failed to restore, with why).
pub fn finish(store: &mut Store, id: i64, outcome: &str) -> Result<(), Error> {
    store.write(|tx| {
        tx.execute(
            "UPDATE knob_journal SET restored_at = ?2, outcome = ?3 WHERE id = ?1",
            params![id, crate::host::now_rfc3339(), outcome],
        )
        .map_err(db)?;
        Ok(())
    })
}

/// One orphan restored at start.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recovered {
    pub id: i64,
    pub purpose: String,
    pub knobs: String,
    pub outcome: String,
}

/// Restore every journalled change set whose owner is gone.
pub fn recover(store: &mut Store) -> Result<Vec<Recovered>, Error> {
    let rows: Vec<(i64, String, i32, i64, String)> = {
        let mut st = store
            .conn()
            .prepare(
                "SELECT id, purpose, owner_pid, owner_start, applied FROM knob_journal \
                 WHERE restored_at IS NULL ORDER BY id DESC",
            )
            .map_err(db)?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        rows
    };
    let mut out = Vec::new();
    for (id, purpose, pid, start, json) in rows {
        let alive = super::task::start_time(pid, pid).is_some_and(|s| s as i64 == start);
        if alive {
            continue;
        }
        let a: Applied = match serde_json::from_str(&json) {
            Ok(a) => a,
            Err(e) => {
                let outcome = format!("unreadable journal entry, not restored: {e}");
                finish(store, id, &outcome)?;
                out.push(Recovered {
                    id,
                    purpose,
                    knobs: String::new(),
                    outcome,
                });
                continue;
            }
        };
        let outcome = match a.restore() {
            Ok(()) => "restored after its owner died".to_string(),
            Err(e) => format!("restore after its owner died failed: {e}"),
        };
        tracing::warn!(
            "knob journal #{id} ({purpose}): {outcome}: {}",
            a.plan.describe()
        );
        finish(store, id, &outcome)?;
        out.push(Recovered {
            id,
            purpose,
            knobs: a.plan.describe(),
            outcome,
        });
    }
    Ok(out)
}
