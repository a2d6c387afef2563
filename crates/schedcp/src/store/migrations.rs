//! Versioned schema migrations.
//!
//! The schema version is SQLite's `PRAGMA user_version`: the number of
//! entries of [`MIGRATIONS`] applied so far. It lives in the database header,
//! so it changes in the same transaction as the schema it describes; a
//! crash mid-migration leaves the old schema and the old version.
//!
//! To change the schema, append one line to [`MIGRATIONS`] (usually with its
//! SQL in `migrations/NNNN_<service>.sql`). Never edit, reorder or remove an
//! entry that has shipped: databases in the field have already applied it.

use anyhow::Context;
use rusqlite::Transaction;

/// One schema change.
pub struct Migration {
    /// What the change is for; shown in errors.
    pub name: &'static str,
    /// One or more SQL statements.
    pub sql: &'static str,
}

/// Every migration, oldest first. Migration `i` takes the schema from
/// version `i` to `i + 1`.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001 observe: workload profiles and benchmark history",
        sql: include_str!("migrations/0001_observe.sql"),
    },
    Migration {
        name: "0002 policies: library, lifecycle, results, search indexes",
        sql: include_str!("migrations/0002_policies.sql"),
    },
    Migration {
        name: "0003 verify: reports kept with the policy version",
        sql: include_str!("migrations/0003_verify_reports.sql"),
    },
    Migration {
        name: "0004 policies: latest state on the policy row (filtered text search)",
        sql: include_str!("migrations/0004_policy_state.sql"),
    },
    Migration {
        name: "0005 api: hashed tokens, audit log head",
        sql: include_str!("migrations/0005_api.sql"),
    },
    Migration {
        name: "0006 deploy: deployments, their events and objects, the node's intent",
        sql: include_str!("migrations/0006_deploy.sql"),
    },
    Migration {
        name:
            "0007 knobs: a deployment is a change (scheduler, knob set, or both); the knob journal",
        sql: include_str!("migrations/0007_knobs.sql"),
    },
    Migration {
        name: "0008 tune: sessions with their signatures, trials, candidate verdicts",
        sql: include_str!("migrations/0008_tune.sql"),
    },
    Migration {
        name: "0009 policies: knob sets as library entries; signatures with results and profiles",
        sql: include_str!("migrations/0009_knob_policies.sql"),
    },
    Migration {
        name: "0010 deploy: the verifier's token kept for re-admission at re-attach",
        sql: include_str!("migrations/0010_deploy_token.sql"),
    },
    Migration {
        name: "0011 deploy: revoked deploy tokens",
        sql: include_str!("migrations/0011_revoked_deploy_tokens.sql"),
    },
    Migration {
        name: "0012 policies: owners of policies, who added versions and recorded results",
        sql: include_str!("migrations/0012_policy_owners.sql"),
    },
];

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub from: u32,
    pub to: u32,
    /// The database is at a version beyond `migrations` (written by a newer
    /// schedcp); nothing was changed.
    pub newer_than_known: bool,
}

/// Bring the schema up to date inside `tx`. The caller commits; with the
/// write lock already held, two processes opening a fresh store cannot both
/// apply the same migration.
pub fn apply(tx: &Transaction<'_>, migrations: &[Migration]) -> anyhow::Result<Applied> {
    let from = super::user_version(tx)?;
    let known = u32::try_from(migrations.len()).context("too many migrations")?;
    if from > known {
        return Ok(Applied {
            from,
            to: from,
            newer_than_known: true,
        });
    }
    for (version, m) in (from..).zip(&migrations[from as usize..]) {
        tx.execute_batch(m.sql)
            .with_context(|| format!("applying schema migration {}", m.name))?;
        // PRAGMA takes no bound parameters; `version + 1` is an integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", version + 1))
            .with_context(|| format!("recording schema migration {}", m.name))?;
    }
    Ok(Applied {
        from,
        to: known,
        newer_than_known: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    const TWO: &[Migration] = &[
        Migration {
            name: "a",
            sql: "CREATE TABLE a (x INTEGER);",
        },
        Migration {
            name: "b",
            sql: "CREATE TABLE b (y INTEGER); INSERT INTO b VALUES (1);",
        },
    ];

    fn run(conn: &mut Connection, m: &[Migration]) -> anyhow::Result<Applied> {
        let tx = conn.transaction()?;
        let r = apply(&tx, m)?;
        tx.commit()?;
        Ok(r)
    }

    #[test]
    fn applies_in_order_and_is_idempotent() {
        let mut c = Connection::open_in_memory().unwrap();
        let first = run(&mut c, &TWO[..1]).unwrap();
        assert_eq!((first.from, first.to), (0, 1));
        let second = run(&mut c, TWO).unwrap();
        assert_eq!((second.from, second.to), (1, 2));
        let again = run(&mut c, TWO).unwrap();
        assert_eq!((again.from, again.to), (2, 2));
        // Migration b ran exactly once.
        let rows: i64 = c
            .query_row("SELECT count(*) FROM b", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn a_failing_migration_changes_nothing() {
        let mut c = Connection::open_in_memory().unwrap();
        let broken = [
            Migration {
                name: "good",
                sql: "CREATE TABLE good (x INTEGER);",
            },
            Migration {
                name: "broken",
                sql: "CREATE TABLE nope (;",
            },
        ];
        let e = run(&mut c, &broken).unwrap_err();
        assert!(format!("{e:#}").contains("applying schema migration broken"));
        assert_eq!(super::super::user_version(&c).unwrap(), 0);
        let tables: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'good'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0, "the whole batch rolled back");
    }

    #[test]
    fn newer_database_is_left_alone() {
        let mut c = Connection::open_in_memory().unwrap();
        c.execute_batch("PRAGMA user_version = 7").unwrap();
        let r = run(&mut c, TWO).unwrap();
        assert!(r.newer_than_known);
        assert_eq!(super::super::user_version(&c).unwrap(), 7);
    }

    #[test]
    fn shipped_migrations_have_distinct_names_and_sql() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert!(!m.sql.trim().is_empty(), "{}", m.name);
            assert!(
                MIGRATIONS[..i].iter().all(|o| o.name != m.name),
                "duplicate migration name {}",
                m.name
            );
        }
    }
}
