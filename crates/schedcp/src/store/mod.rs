//! The embedded store: one SQLite file, `<state_dir>/schedcp.db`, holding
//! everything schedcp must remember across runs (workload profiles and
//! benchmark history now; the policy library later).
//!
//! Connection settings, and why:
//! - WAL journal: readers (an agent listing history) never block the writer
//!   (a benchmark recording its run-set), and a crash mid-write leaves the
//!   last committed state intact.
//! - `synchronous = FULL`: every commit is fsynced, so a record that was
//!   reported as saved survives a power loss. NORMAL would only risk the
//!   latest transactions, but those are exactly the ones that matter here (a
//!   benchmark that took half an hour; later, deploy's last-known-good
//!   scheduler), and schedcp commits rarely, so the extra fsync costs nothing
//!   measurable.
//! - Foreign keys on (SQLite leaves them off per connection by default).
//! - A busy timeout, so two schedcp processes wait for each other instead of
//!   failing with "database is locked".
//!
//! Schema changes go through [`migrations::MIGRATIONS`]; see there.

pub mod migrations;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::error::Error;

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "schedcp.db";

/// How long a connection waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// An open, migrated store.
pub struct Store {
    conn: Connection,
    path: Option<PathBuf>,
}

impl Store {
    /// Open (creating if needed) the store in `state_dir` (the configured
    /// state directory, `Config::state_dir`).
    pub fn open_in(state_dir: &Path) -> Result<Store, Error> {
        create_private_dir(state_dir)?;
        Store::open_at(&state_dir.join(DB_FILE))
    }

    /// Open (creating if needed) the database file at `path`; its directory must exist.
    pub fn open_at(path: &Path) -> Result<Store, Error> {
        register_extensions();
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| {
            Error::Setup(format!(
                "cannot open the state database {}: {e}; set state_dir in the config or $SCHEDCP_STATE to a writable directory",
                path.display()
            ))
        })?;
        let mut store = Store {
            conn,
            path: Some(path.to_path_buf()),
        };
        store.configure(true).map_err(|e| {
            Error::Setup(format!(
                "cannot use the state database {}: {e:#}",
                path.display()
            ))
        })?;
        store.migrate()?;
        Ok(store)
    }

    /// A private in-memory store (tests, dry runs).
    pub fn open_in_memory() -> Result<Store, Error> {
        register_extensions();
        let conn = Connection::open_in_memory()
            .map_err(|e| Error::Internal(anyhow!("opening an in-memory database: {e}")))?;
        let mut store = Store { conn, path: None };
        store.configure(false).map_err(Error::Internal)?;
        store.migrate()?;
        Ok(store)
    }

    /// The database file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The connection, for reads. Writes go through [`Store::write`].
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Run `f` in one write transaction: committed if `f` returns `Ok`,
    /// rolled back (nothing written) if it returns `Err`.
    ///
    /// The transaction is `IMMEDIATE`: it takes the write lock up front, so
    /// reads inside `f` (a uniqueness check, say) see the state that the
    /// writes apply to, and a concurrent writer waits instead of failing
    /// half-way with SQLITE_BUSY.
    pub fn write<T, E>(&mut self, f: impl FnOnce(&Transaction<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<anyhow::Error>,
    {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("starting a write transaction")?;
        // On Err, dropping `tx` rolls it back.
        let value = f(&tx)?;
        tx.commit().context("committing a write transaction")?;
        Ok(value)
    }

    /// The schema version: how many migrations have been applied.
    pub fn schema_version(&self) -> Result<u32, Error> {
        user_version(&self.conn).map_err(Error::Internal)
    }

    fn configure(&mut self, on_disk: bool) -> anyhow::Result<()> {
        let c = &self.conn;
        c.busy_timeout(BUSY_TIMEOUT)?;
        if on_disk {
            let mode: String =
                c.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(anyhow!(
                    "SQLite refused WAL journal mode (still '{mode}'); is the file on a filesystem without shared-memory support?"
                ));
            }
        }
        c.pragma_update(None, "synchronous", "FULL")?;
        c.pragma_update(None, "foreign_keys", true)?;
        let fk: bool = c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
        if !fk {
            return Err(anyhow!("this SQLite build does not enforce foreign keys"));
        }
        Ok(())
    }

    /// Apply every pending migration in one transaction.
    fn migrate(&mut self) -> Result<(), Error> {
        let location = self.path.as_ref().map_or_else(
            || "in-memory database".to_string(),
            |p| p.display().to_string(),
        );
        let applied = self.write(|tx| migrations::apply(tx, migrations::MIGRATIONS))?;
        if applied.newer_than_known {
            return Err(Error::Setup(format!(
                "the state database {location} has schema version {}, newer than this schedcp knows ({}); it was written by a newer schedcp — upgrade schedcp, or point state_dir elsewhere",
                applied.from,
                migrations::MIGRATIONS.len()
            )));
        }
        if applied.to > applied.from {
            tracing::info!(
                "migrated {location} from schema version {} to {}",
                applied.from,
                applied.to
            );
        }
        Ok(())
    }
}

/// Make sqlite-vec's `vec0` tables and `vec_*` functions available on every
/// connection opened from now on (the policy index needs them, and so does
/// any migration that touches it). Compiled in; nothing is loaded from disk.
fn register_extensions() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        type EntryPoint = unsafe extern "C" fn(
            *mut rusqlite::ffi::sqlite3,
            *mut *mut std::os::raw::c_char,
            *const rusqlite::ffi::sqlite3_api_routines,
        ) -> std::os::raw::c_int;
        // SAFETY: sqlite-vec declares its entry point without arguments, but
        // it is the standard extension entry point with the signature above;
        // SQLite calls it once per new connection.
        unsafe {
            let entry: EntryPoint = std::mem::transmute::<unsafe extern "C" fn(), EntryPoint>(
                sqlite_vec::sqlite3_vec_init,
            );
            rusqlite::ffi::sqlite3_auto_extension(Some(entry));
        }
    });
}

fn user_version(conn: &Connection) -> anyhow::Result<u32> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    u32::try_from(v).map_err(|_| anyhow!("invalid schema version {v}"))
}

/// Create `dir` (and missing parents) readable by its owner only: the store
/// records what was run on this machine and, later, deployment state.
/// An existing directory is left as it is.
fn create_private_dir(dir: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            Error::Setup(format!(
                "cannot create the state directory {}: {e}; set state_dir in the config or $SCHEDCP_STATE to a writable directory",
                dir.display()
            ))
        })
}

/// Whether `e` is SQLite's unique-constraint violation.
pub fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn count(store: &Store, table: &str) -> i64 {
        store
            .conn()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    fn insert_profile(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<usize> {
        tx.execute(
            "INSERT INTO workload_profiles
               (name, description, target_kind, workload, metric, unit, direction, created_at)
             VALUES (?1, '', 'lab', 'batch', 'makespan', 'ms', 'lower', '2025-01-01T00:00:00Z')",
            [name],
        )
    }

    #[test]
    fn fresh_store_is_fully_migrated_with_its_settings() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b/state");
        let store = Store::open_in(&state).unwrap();
        assert_eq!(
            store.schema_version().unwrap() as usize,
            migrations::MIGRATIONS.len()
        );
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let c = store.conn();
        let journal: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
        let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(sync, 2, "FULL");
        let fk: i64 = c
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
    }

    #[test]
    fn reopening_persists_and_does_not_migrate_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let mut s = Store::open_at(&path).unwrap();
            s.write(|tx| insert_profile(tx, "kept").map_err(anyhow::Error::from))
                .unwrap();
        }
        let s = Store::open_at(&path).unwrap();
        assert_eq!(count(&s, "workload_profiles"), 1);
        assert_eq!(
            s.schema_version().unwrap() as usize,
            migrations::MIGRATIONS.len()
        );
    }

    #[test]
    fn a_failing_write_leaves_nothing() {
        let mut s = Store::open_in_memory().unwrap();
        let r: anyhow::Result<()> = s.write(|tx| {
            insert_profile(tx, "first")?;
            // Same name again: the UNIQUE constraint fails the second insert.
            insert_profile(tx, "first")?;
            Ok(())
        });
        let e = r.unwrap_err();
        let sqlite = e.downcast_ref::<rusqlite::Error>().unwrap();
        assert!(is_unique_violation(sqlite), "{e:#}");
        assert_eq!(count(&s, "workload_profiles"), 0);

        // An error from the closure itself rolls back too.
        let r: anyhow::Result<()> = s.write(|tx| {
            insert_profile(tx, "second")?;
            Err(anyhow!("caller changed its mind"))
        });
        assert!(r.is_err());
        assert_eq!(count(&s, "workload_profiles"), 0);
    }

    #[test]
    fn foreign_keys_are_enforced() {
        let mut s = Store::open_in_memory().unwrap();
        let r: anyhow::Result<usize> = s.write(|tx| {
            Ok(tx.execute(
                "INSERT INTO benchmark_sets (profile_id, started_at, finished_at, label, host_kernel, runs)
                 VALUES (42, 'x', 'x', 'default', 'k', 1)",
                [],
            )?)
        });
        assert!(r.unwrap_err().to_string().contains("FOREIGN KEY"));
    }

    /// 0009 rebuilds `policies` (a wider CHECK): a library written before
    /// it keeps every policy, version, transition and result, and its
    /// foreign keys still hold.
    #[test]
    fn a_library_from_before_knob_sets_survives_the_rebuild() {
        drop(Store::open_in_memory().unwrap()); // registers sqlite-vec
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let mut c = Connection::open(&path).unwrap();
            c.pragma_update(None, "foreign_keys", true).unwrap();
            let tx = c.transaction().unwrap();
            migrations::apply(&tx, &migrations::MIGRATIONS[..8]).unwrap();
            tx.execute_batch(
                "INSERT INTO policies (id, name, kind, origin, created_at, latest_state)
                   VALUES (7, 'vtime', 'bpf', 'builtin', 't', 'verified');
                 INSERT INTO policy_versions (id, policy_id, version, content_hash, meta, body, state, created_at)
                   VALUES (3, 7, 1, 'h', '{}', '{}', 'verified', 't');
                 INSERT INTO policy_transitions (version_id, from_state, to_state, reason, at)
                   VALUES (3, NULL, 'verified', 'r', 't');
                 INSERT INTO result_workloads (id, text, embedding) VALUES (1, 'w', x'00');
                 INSERT INTO policy_results (version_id, workload_id, workload, metric, unit, direction,
                   value, significant, verdict, source, environment, recorded_at)
                   VALUES (3, 1, 'w', 'm', 'ms', 'lower', 1.0, 0, 'no_change', 'manual', 'e', 't');",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let mut s = Store::open_at(&path).unwrap();
        assert_eq!(
            s.schema_version().unwrap() as usize,
            migrations::MIGRATIONS.len()
        );
        let kept: (String, String) = s
            .conn()
            .query_row(
                "SELECT p.name, p.latest_state FROM policies p JOIN policy_versions v ON v.policy_id = p.id",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(kept, ("vtime".into(), "verified".into()));
        assert_eq!(count(&s, "policy_transitions"), 1);
        assert_eq!(count(&s, "policy_results"), 1);
        let broken: i64 = s
            .conn()
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(broken, 0);
        s.write(|tx| {
            tx.execute(
                "INSERT INTO policies (name, kind, origin, created_at) VALUES ('knobs_x', 'knobs', 'tune', 't')",
                [],
            )
            .map_err(anyhow::Error::from)
        })
        .unwrap();
        let r: anyhow::Result<usize> = s.write(|tx| {
            Ok(tx.execute(
                "INSERT INTO policies (name, kind, origin, created_at) VALUES ('y', 'shell', 'agent', 't')",
                [],
            )?)
        });
        assert!(r.unwrap_err().to_string().contains("CHECK"));
    }

    #[test]
    fn a_database_from_a_newer_schedcp_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        drop(Store::open_at(&path).unwrap());
        let future = migrations::MIGRATIONS.len() + 5;
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", future)
            .unwrap();
        let e = Store::open_at(&path).err().unwrap();
        assert!(matches!(e, Error::Setup(_)));
        assert!(
            e.to_string()
                .contains(&format!("schema version {future}, newer")),
            "{e}"
        );
    }

    #[test]
    fn unwritable_state_dir_is_a_setup_error() {
        let e = Store::open_in(Path::new("/proc/schedcp-cannot-exist"))
            .err()
            .unwrap();
        assert!(matches!(e, Error::Setup(_)), "{e}");
        assert!(e.to_string().contains("state directory"), "{e}");
    }
}
