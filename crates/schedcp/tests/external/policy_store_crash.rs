//! The policy store under crashes and concurrency: a writer killed with
//! SIGKILL mid-transaction leaves a consistent store (SQLite's
//! integrity_check, and every batch either wholly there or absent), and
//! concurrent readers and writers on one store all succeed (both backends;
//! PostgreSQL as in tests/policy_library.rs).

use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};
use schedcp::policies::model::{NewPolicy, SearchDoc, State};
use schedcp::policies::repo::sqlite::SqliteRepo;
use schedcp::policies::repo::{Insert, Repository};
use schedcp::selfbench::pg_scratch::Scratch;
use schedcp::selfbench::policy_search::corpus;
use schedcp::store::Store;

const BATCH: usize = 150;

/// Deterministic unit vectors: storage semantics, not embeddings, are under test here.
fn vector(i: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; 384];
    v[i % 384] = 0.6;
    v[(i * 7 + 1) % 384] += 0.8;
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn items(policies: &[NewPolicy], offset: usize) -> Vec<Insert<'_>> {
    policies
        .iter()
        .enumerate()
        .map(|(i, p)| Insert {
            policy: p,
            content_hash: p.content_hash(),
            state: State::Candidate,
            reason: "crash test".into(),
            created_at: None,
            doc: SearchDoc::new(&p.meta, &p.body),
            embedding: vector(offset + i),
            added_by: None,
        })
        .collect()
}

/// Distinct synthetic policies for batch `b` (names unique across batches).
fn batch(all: &[NewPolicy], b: usize) -> Vec<NewPolicy> {
    all.iter()
        .skip(16)
        .take(BATCH)
        .map(|p| {
            let mut p = p.clone();
            p.meta.name = format!("{}_b{b}", p.meta.name);
            p
        })
        .collect()
}

fn check_consistent(path: &std::path::Path, batch: usize) -> usize {
    let store = Store::open_at(path).unwrap();
    let c = store.conn();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let n = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
    let policies = n("SELECT count(*) FROM policies");
    assert_eq!(policies, n("SELECT count(*) FROM policy_versions"));
    assert!(policies <= n("SELECT count(*) FROM policy_transitions"));
    assert_eq!(policies, n("SELECT count(*) FROM policy_fts"));
    assert_eq!(policies, n("SELECT count(*) FROM policy_vec"));
    assert_eq!(policies as usize % batch, 0, "a batch was half written");
    let repo = SqliteRepo::new(store);
    // Still searchable after the crash.
    if policies > 0 {
        assert!(!repo.vector_search(&vector(3), None, 5).unwrap().is_empty());
        assert!(!repo
            .text_search(&["scheduler".into()], None, 5)
            .unwrap()
            .is_empty());
    }
    policies as usize
}

#[test]
fn a_writer_killed_mid_transaction_leaves_the_store_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedcp.db");
    drop(Store::open_at(&path).unwrap());
    let all = corpus(16 + BATCH).unwrap();
    let mut committed = 0;
    for round in 0..6 {
        // SAFETY: the child only uses what it builds after the fork and
        // leaves with _exit; it never returns into the test harness.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let mut repo = SqliteRepo::new(Store::open_at(&path).unwrap());
                for b in (round * 1000).. {
                    let policies = batch(&all, b);
                    if repo.insert_versions(&items(&policies, b)).is_err() {
                        unsafe { libc::_exit(1) };
                    }
                }
                unsafe { libc::_exit(0) };
            }
            ForkResult::Parent { child } => {
                std::thread::sleep(Duration::from_millis(150 + 170 * round as u64));
                kill(child, Signal::SIGKILL).unwrap();
                waitpid(child, None).unwrap();
            }
        }
        let now = check_consistent(&path, BATCH);
        assert!(now >= committed, "committed batches are never lost");
        committed = now;
    }
    assert!(
        committed > 0,
        "the writer committed something before the kills"
    );
}

fn pg() -> &'static Scratch {
    static PG: OnceLock<Scratch> = OnceLock::new();
    PG.get_or_init(|| {
        let url = std::env::var("SCHEDCP_TEST_PG_URL").expect(
            "SCHEDCP_TEST_PG_URL is not set: run `scripts/pg-test-server.sh start` and \
             `export SCHEDCP_TEST_PG_URL=$(scripts/pg-test-server.sh url)` (scripts/test.sh does both)",
        );
        Scratch::new(&url).expect("connecting to the test PostgreSQL")
    })
}

fn concurrent_readers_and_writers(open: &(dyn Fn() -> Box<dyn Repository> + Sync)) {
    let all = corpus(16 + BATCH).unwrap();
    const WRITERS: usize = 2;
    const BATCHES: usize = 4;
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let all = &all;
            s.spawn(move || {
                let mut repo = open();
                for b in 0..BATCHES {
                    let policies = batch(all, w * 100 + b);
                    repo.insert_versions(&items(&policies[..20], b)).unwrap();
                    let name = &policies[0].meta.name;
                    assert!(repo
                        .transition(name, 1, State::Candidate, State::Verified, "t")
                        .unwrap());
                }
            });
        }
        for _ in 0..2 {
            s.spawn(|| {
                let repo = open();
                for i in 0..40 {
                    repo.list(None).unwrap();
                    repo.vector_search(&vector(i), Some(State::Candidate), 5)
                        .unwrap();
                    repo.text_search(&["queue".into()], None, 5).unwrap();
                }
            });
        }
    });
    let repo = open();
    assert_eq!(repo.count().unwrap(), WRITERS * BATCHES * 20);
    assert_eq!(
        repo.list(Some(State::Verified)).unwrap().len(),
        WRITERS * BATCHES
    );
}

#[test]
fn concurrent_readers_and_writers_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedcp.db");
    drop(Store::open_at(&path).unwrap());
    concurrent_readers_and_writers(&|| Box::new(SqliteRepo::new(Store::open_at(&path).unwrap())));
    check_consistent(&path, 20);
}

#[test]
fn concurrent_readers_and_writers_postgres() {
    drop(pg().repo("conc").unwrap());
    concurrent_readers_and_writers(&|| pg().open("conc").unwrap());
}
