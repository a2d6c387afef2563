//! Conformance of the policy repository's storage backends: the same cases,
//! at the `Repository` trait, on the embedded SQLite store and on PostgreSQL
//! with pgvector. They check storage semantics, not embeddings: vectors are
//! unit vectors along axes.
//!
//! PostgreSQL is a real server: `scripts/pg-test-server.sh start`, then
//! `export SCHEDCP_TEST_PG_URL=$(scripts/pg-test-server.sh url)`. Without
//! that variable the PostgreSQL half fails; it never skips. Each PostgreSQL
//! case gets a database of its own (dropped afterwards), so cases run in
//! parallel and each one also exercises schema creation from scratch.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use schedcp::bpf::meta::PolicyMeta;
use schedcp::error::Error;
use schedcp::policies::model::{
    Body, Direction, ExternalFlag, ExternalSpec, NewPolicy, NewResult, NewVerifyReport, Origin,
    PolicyRef, ResultSource, ResultVerdict, SearchDoc, State,
};
use schedcp::policies::repo::postgres::PostgresRepo;
use schedcp::policies::repo::sqlite::SqliteRepo;
use schedcp::policies::repo::{Hit, Insert, Repository};
use schedcp::policies::{WriteLimits, Writer};
use schedcp::store::Store;

const DIM: usize = 384;

// ---- backends ----

enum Storage {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        admin_url: String,
        url: String,
        db: String,
    },
}

/// A repository on a fresh, empty store, and what keeps that store alive.
struct Backend {
    repo: Box<dyn Repository>,
    storage: Storage,
}

impl Backend {
    /// Another connection to the same store (for concurrency cases).
    fn open_again(&self) -> Box<dyn Repository> {
        match &self.storage {
            Storage::Sqlite { path, .. } => {
                Box::new(SqliteRepo::new(Store::open_at(path).unwrap()))
            }
            Storage::Postgres { url, .. } => Box::new(PostgresRepo::connect(url).unwrap()),
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Storage::Postgres { admin_url, db, .. } = self {
            // FORCE: a case that panicked may still hold connections.
            if let Ok(mut admin) = ::postgres::Client::connect(admin_url, ::postgres::NoTls) {
                let _ =
                    admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"));
            }
        }
    }
}

fn sqlite_backend() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedcp.db");
    let repo = Box::new(SqliteRepo::new(Store::open_at(&path).unwrap()));
    Backend {
        repo,
        storage: Storage::Sqlite { _dir: dir, path },
    }
}

fn pg_url() -> String {
    std::env::var("SCHEDCP_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "SCHEDCP_TEST_PG_URL is not set, so the PostgreSQL backend cannot be tested: run \
             `scripts/pg-test-server.sh start` and \
             `export SCHEDCP_TEST_PG_URL=$(scripts/pg-test-server.sh url)`"
        )
    })
}

/// `url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let authority = url.find("://").map(|i| i + 3).expect("a postgresql:// URL");
    let path = url[authority..]
        .find('/')
        .map_or(url.len(), |i| authority + i);
    let query = url[path..].find('?').map_or(url.len(), |i| path + i);
    format!("{}/{db}{}", &url[..path], &url[query..])
}

/// A new database on the test server, for one case.
fn fresh_pg_database(case: &str) -> (String, String, String) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let admin_url = pg_url();
    let mut tag: String = case
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    tag.truncate(28);
    let db = format!(
        "schedcp_t_{tag}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = ::postgres::Client::connect(&admin_url, ::postgres::NoTls)
        .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL at {admin_url}: {e:?}; is it running (scripts/pg-test-server.sh start)?"));
    admin
        .batch_execute(&format!("CREATE DATABASE \"{db}\""))
        .unwrap_or_else(|e| panic!("creating database {db}: {e:?}"));
    let url = with_database(&admin_url, &db);
    (admin_url, url, db)
}

fn pg_backend(case: &str) -> Backend {
    let (admin_url, url, db) = fresh_pg_database(case);
    let storage = Storage::Postgres {
        admin_url,
        url: url.clone(),
        db,
    };
    let repo = Box::new(PostgresRepo::connect(&url).unwrap_or_else(|e| panic!("{e}")));
    Backend { repo, storage }
}

// ---- data ----

fn axis(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[i] = 1.0;
    v
}

/// A unit vector with these weights on these axes.
fn mix(parts: &[(usize, f32)]) -> Vec<f32> {
    let mut v = vec![0.0f32; DIM];
    for &(i, w) in parts {
        v[i] = w;
    }
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn meta(name: &str, description: &str) -> PolicyMeta {
    PolicyMeta {
        name: name.into(),
        ops_name: format!("{name}_ops"),
        description: description.into(),
        algorithm: "One shared queue; an idle CPU takes the head.".into(),
        target_workloads: vec!["batch".into()],
        limitations: vec!["none known".into()],
        tunables: vec![],
    }
}

fn bpf(name: &str, description: &str) -> NewPolicy {
    NewPolicy {
        meta: meta(name, description),
        origin: Origin::Agent,
        body: Body::Bpf {
            source: format!("SCX_OPS_DEFINE({name}_ops, .name = \"{name}_ops\");"),
        },
    }
}

fn external(name: &str) -> NewPolicy {
    NewPolicy {
        meta: meta(name, "an external scheduler"),
        origin: Origin::External,
        body: Body::External(ExternalSpec {
            crate_name: "scx_demo".into(),
            version: "1.0.0".into(),
            binary: "scx_demo".into(),
            flags: vec![ExternalFlag {
                flag: "--slice-us".into(),
                kind: "int".into(),
                default: Some("20000".into()),
                values: vec![],
                doc: "time slice in microseconds".into(),
            }],
        }),
    }
}

fn item(p: &NewPolicy, state: State, embedding: Vec<f32>) -> Insert<'_> {
    Insert {
        policy: p,
        content_hash: p.content_hash(),
        state,
        reason: format!("added ({})", p.origin),
        created_at: None,
        doc: SearchDoc::new(&p.meta, &p.body),
        embedding,
        added_by: None,
    }
}

fn add(repo: &mut dyn Repository, p: &NewPolicy, state: State, embedding: Vec<f32>) -> u32 {
    repo.insert_versions(&[item(p, state, embedding)]).unwrap()[0].version
}

fn result(workload: &str, desc: &str, verdict: ResultVerdict, significant: bool) -> NewResult {
    NewResult {
        signature: None,
        workload: workload.into(),
        workload_description: desc.into(),
        metric: "p99_wakeup_latency".into(),
        unit: "us".into(),
        direction: Direction::Lower,
        value: 80.0,
        baseline: Some(100.0),
        improvement_pct: Some(20.0),
        p_value: Some(0.001),
        significant,
        verdict,
        source: ResultSource::Verify,
        environment: "lab kernel 6.12".into(),
    }
}

fn input_err<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::Input(m) | Error::NotFound(m)) => m,
        other => panic!("expected an input error, got {other:?}"),
    }
}

fn names(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.name.as_str()).collect()
}

fn pref(s: &str) -> PolicyRef {
    s.parse().unwrap()
}

// ---- the cases, each run on both backends ----

fn insert_and_get(mut b: Backend) {
    let repo = b.repo.as_mut();
    let v1 = bpf("vtime", "weighted virtual time");
    let mut v2 = v1.clone();
    v2.meta.description = "weighted virtual time, now with a longer slice".into();
    let got = repo
        .insert_versions(&[item(&v1, State::Candidate, axis(0))])
        .unwrap();
    assert_eq!((got[0].name.as_str(), got[0].version), ("vtime", 1));
    assert_eq!(got[0].content_hash, v1.content_hash());
    let got2 = repo
        .insert_versions(&[item(&v2, State::Verified, axis(1))])
        .unwrap();
    assert_eq!(got2[0].version, 2);

    let latest = repo.get(&pref("vtime")).unwrap().unwrap();
    assert_eq!(latest.version, 2);
    assert_eq!(latest.state, State::Verified);
    assert_eq!(latest.meta.description, v2.meta.description);
    assert_eq!(latest.content_hash, got2[0].content_hash);
    assert_eq!(latest.created_at, got2[0].created_at);
    let first = repo.get(&pref("vtime@1")).unwrap().unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(first.state, State::Candidate);
    assert_eq!(first.body, v1.body);
    assert_eq!(first.meta.description, v1.meta.description);
    assert_eq!(first.origin, Origin::Agent);
    assert!(repo.get(&pref("vtime@3")).unwrap().is_none());
    assert!(repo.get(&pref("nothing")).unwrap().is_none());

    // An import keeps its timestamp; an external body round-trips whole.
    let x = external("scx_demo");
    let mut it = item(&x, State::Promoted, axis(2));
    it.created_at = Some("2024-05-06T07:08:09.123Z".into());
    repo.insert_versions(&[it]).unwrap();
    let got = repo.get(&pref("scx_demo")).unwrap().unwrap();
    assert_eq!(got.created_at, "2024-05-06T07:08:09.123Z");
    assert_eq!(got.body, x.body);
    assert_eq!(got.origin, Origin::External);
    let h = repo.history("scx_demo").unwrap().unwrap();
    assert_eq!(h.transitions[0].at, "2024-05-06T07:08:09.123Z");

    // docs: in the order asked, unknown names skipped, latest version's text.
    let docs = repo
        .docs(&["scx_demo".into(), "missing".into(), "vtime".into()])
        .unwrap();
    let got: Vec<&str> = docs.iter().map(|d| d.summary.name.as_str()).collect();
    assert_eq!(got, ["scx_demo", "vtime"]);
    assert_eq!(docs[1].summary.version, 2);
    assert_eq!(docs[1].doc, SearchDoc::new(&v2.meta, &v2.body));
    assert_eq!(docs[0].doc, SearchDoc::new(&x.meta, &x.body));
    assert!(docs[0].doc.tunables.contains("--slice-us"));

    // A knob set (kind knobs, origin tune) round-trips, and a result keeps
    // the signature of the workload it was measured on.
    let k = NewPolicy {
        meta: meta("knobs_0123456789ab", "a proven knob set"),
        origin: Origin::Tune,
        body: Body::Knobs(schedcp::policies::model::KnobSet {
            knobs: vec![schedcp::knobs::Assignment {
                knob: "workload.nice".into(),
                value: "-5".into(),
                workload: Some("build".into()),
            }],
        }),
    };
    add(repo, &k, State::Verified, axis(3));
    let got = repo.get(&pref("knobs_0123456789ab")).unwrap().unwrap();
    assert_eq!(
        (got.body.clone(), got.origin),
        (k.body.clone(), Origin::Tune)
    );
    let sig: schedcp::observe::signature::Signature = serde_json::from_value(serde_json::json!({
        "version": 1, "wall_s": 2.0, "cpus": 2,
        "mix": {"cpu_pct": 90.0, "wakeup_pct": 8.0, "io_pct": 2.0},
        "cpu_util": 1.8, "sys_pct": 3.0, "voluntary_switches_per_s": 40.0,
        "involuntary_switches_per_s": 300.0, "minor_faults_per_s": 10.0,
        "major_faults_per_s": 0.0, "max_rss_mib": 12.0, "read_mib_per_s": 0.0,
        "write_mib_per_s": 0.0, "peak_tasks": 27, "runnable_mean": 3.0,
        "runnable_peak": 6, "workload_runnable_mean": 2.0, "others_runnable_mean": 1.0,
        "runq_wait_pct": null, "runq_p50_us": 100.0, "runq_p99_us": 2000.0,
        "switches_per_s": 900.0, "migrations_per_s": 30.0, "psi_cpu_pct": 40.0,
        "psi_mem_pct": 0.0, "psi_io_pct": 0.0
    }))
    .unwrap();
    let mut r = result("build", "a build", ResultVerdict::Improved, true);
    r.source = ResultSource::Tune;
    r.signature = Some(sig.clone());
    repo.insert_result("knobs_0123456789ab", 1, &r, &axis(3), None)
        .unwrap();
    let h = repo.history("knobs_0123456789ab").unwrap().unwrap();
    assert_eq!(h.kind, schedcp::policies::model::Kind::Knobs);
    assert_eq!(h.results[0].result.signature.as_ref(), Some(&sig));
}

fn duplicate_content_refused(mut b: Backend) {
    let repo = b.repo.as_mut();
    let p = bpf("dup", "first");
    let mut p2 = p.clone();
    p2.meta.description = "second".into();
    add(repo, &p, State::Candidate, axis(0));
    add(repo, &p2, State::Candidate, axis(0));
    // Same content as version 1, even after version 2 exists.
    let msg = input_err(repo.insert_versions(&[item(&p, State::Candidate, axis(0))]));
    assert_eq!(
        msg,
        format!(
            "dup@1 already has exactly this content (sha256 {}); nothing to add",
            &p.content_hash()[..12]
        )
    );
    assert_eq!(repo.history("dup").unwrap().unwrap().versions.len(), 2);
}

fn origin_or_kind_mismatch_refused(mut b: Backend) {
    let repo = b.repo.as_mut();
    add(
        repo,
        &bpf("owned", "agent-written"),
        State::Candidate,
        axis(0),
    );

    let mut builtin = bpf("owned", "claims to be built in");
    builtin.origin = Origin::Builtin;
    let msg = input_err(repo.insert_versions(&[item(&builtin, State::Candidate, axis(0))]));
    assert_eq!(
        msg,
        "policy 'owned' exists as a bpf policy of origin agent; a new version must keep both (this one is bpf / builtin). Choose another name."
    );

    let mut ext = external("owned");
    ext.origin = Origin::Agent;
    let msg = input_err(repo.insert_versions(&[item(&ext, State::Candidate, axis(0))]));
    assert_eq!(
        msg,
        "policy 'owned' exists as a bpf policy of origin agent; a new version must keep both (this one is external / agent). Choose another name."
    );
    assert_eq!(repo.history("owned").unwrap().unwrap().versions.len(), 1);
}

fn list_by_state(mut b: Backend) {
    let repo = b.repo.as_mut();
    // Byte order: uppercase before lowercase, '2' before '_'.
    for (i, n) in ["beta_2", "Zed", "beta2", "alpha"].iter().enumerate() {
        add(
            repo,
            &bpf(n, &format!("policy {n}")),
            State::Candidate,
            axis(i),
        );
    }
    assert!(repo
        .transition("alpha", 1, State::Candidate, State::Verified, "ok")
        .unwrap());
    // beta2's latest version is a new candidate; its verified v1 no longer counts.
    assert!(repo
        .transition("beta2", 1, State::Candidate, State::Verified, "ok")
        .unwrap());
    let mut v2 = bpf("beta2", "policy beta2, revised");
    v2.meta.target_workloads = vec!["web".into()];
    add(repo, &v2, State::Candidate, axis(9));

    let all = repo.list(None).unwrap();
    let got: Vec<(&str, u32, State)> = all
        .iter()
        .map(|s| (s.name.as_str(), s.version, s.state))
        .collect();
    assert_eq!(
        got,
        [
            ("Zed", 1, State::Candidate),
            ("alpha", 1, State::Verified),
            ("beta2", 2, State::Candidate),
            ("beta_2", 1, State::Candidate),
        ]
    );
    let beta2 = &all[2];
    assert_eq!(beta2.description, "policy beta2, revised");
    assert_eq!(beta2.target_workloads, ["web"]);
    assert_eq!(beta2.origin, Origin::Agent);
    assert_eq!(beta2.kind, schedcp::policies::model::Kind::Bpf);

    let verified: Vec<String> = repo
        .list(Some(State::Verified))
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(verified, ["alpha"]);
    assert!(repo.list(Some(State::Retired)).unwrap().is_empty());
}

fn transition_is_compare_and_set(mut b: Backend) {
    let repo = b.repo.as_mut();
    add(repo, &bpf("cas", "x"), State::Candidate, axis(0));
    assert!(repo
        .transition(
            "cas",
            1,
            State::Candidate,
            State::Verified,
            "verified on lab"
        )
        .unwrap());
    // A second mover that still believes it is a candidate loses.
    assert!(!repo
        .transition("cas", 1, State::Candidate, State::Retired, "stale")
        .unwrap());
    assert!(repo
        .transition("cas", 1, State::Verified, State::Deployed, "deployed")
        .unwrap());
    assert!(!repo
        .transition(
            "cas",
            2,
            State::Candidate,
            State::Verified,
            "no such version"
        )
        .unwrap());
    assert!(!repo
        .transition(
            "nope",
            1,
            State::Candidate,
            State::Verified,
            "no such policy"
        )
        .unwrap());
    assert_eq!(
        repo.get(&pref("cas")).unwrap().unwrap().state,
        State::Deployed
    );

    let h = repo.history("cas").unwrap().unwrap();
    let t: Vec<(u32, Option<State>, State, &str)> = h
        .transitions
        .iter()
        .map(|t| (t.version, t.from, t.to, t.reason.as_str()))
        .collect();
    assert_eq!(
        t,
        [
            (1, None, State::Candidate, "added (agent)"),
            (
                1,
                Some(State::Candidate),
                State::Verified,
                "verified on lab"
            ),
            (1, Some(State::Verified), State::Deployed, "deployed"),
        ]
    );

    // Moving an older version leaves search's state (the latest's) alone.
    let mut v2 = bpf("cas", "revised");
    v2.meta.algorithm = "different".into();
    add(repo, &v2, State::Candidate, axis(0));
    assert!(repo
        .transition("cas", 1, State::Deployed, State::Retired, "superseded")
        .unwrap());
    assert_eq!(
        names(
            &repo
                .vector_search(&axis(0), Some(State::Candidate), 5)
                .unwrap()
        ),
        ["cas"]
    );
    assert!(repo
        .vector_search(&axis(0), Some(State::Retired), 5)
        .unwrap()
        .is_empty());
    // Moving the latest moves it.
    assert!(repo
        .transition("cas", 2, State::Candidate, State::Verified, "ok")
        .unwrap());
    assert_eq!(
        names(
            &repo
                .vector_search(&axis(0), Some(State::Verified), 5)
                .unwrap()
        ),
        ["cas"]
    );
    assert_eq!(
        names(
            &repo
                .text_search(&["revised".into()], Some(State::Verified), 5)
                .unwrap()
        ),
        ["cas"]
    );
    assert!(repo
        .text_search(&["revised".into()], Some(State::Candidate), 5)
        .unwrap()
        .is_empty());
}

fn concurrent_writers_take_turns(b: Backend) {
    // Two connections insert the same new policy at once: one wins, the
    // other is told it is a duplicate, whichever order the store picks.
    let p = bpf("race", "x");
    let outcomes: Vec<Result<u32, Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let mut repo = b.open_again();
                let p = &p;
                s.spawn(move || {
                    repo.insert_versions(&[item(p, State::Candidate, axis(0))])
                        .map(|v| v[0].version)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(ok, 1, "{outcomes:?}");
    for o in outcomes {
        match o {
            Ok(v) => assert_eq!(v, 1),
            Err(Error::Input(m)) => assert!(
                m.starts_with("race@1 already has exactly this content"),
                "{m}"
            ),
            Err(e) => panic!("{e:?}"),
        }
    }
    // Two movers from the same state: exactly one succeeds.
    let moved: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = [State::Verified, State::Retired]
            .into_iter()
            .map(|to| {
                let mut repo = b.open_again();
                s.spawn(move || {
                    repo.transition("race", 1, State::Candidate, to, "race")
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(moved.iter().filter(|m| **m).count(), 1, "{moved:?}");
    assert_eq!(
        b.repo.history("race").unwrap().unwrap().transitions.len(),
        2
    );
}

fn vector_search_orders_by_similarity(mut b: Backend) {
    let repo = b.repo.as_mut();
    let policies: Vec<NewPolicy> = ["near", "closer", "far", "other"]
        .iter()
        .map(|n| bpf(n, n))
        .collect();
    let vectors = [
        mix(&[(0, 0.8), (1, 0.6)]),
        mix(&[(0, 0.95), (1, 0.05)]),
        mix(&[(0, 0.1), (1, 1.0)]),
        axis(2),
    ];
    let items: Vec<Insert<'_>> = policies
        .iter()
        .zip(vectors)
        .map(|(p, v)| item(p, State::Candidate, v))
        .collect();
    repo.insert_versions(&items).unwrap();
    let hits = repo.vector_search(&axis(0), None, 3).unwrap();
    assert_eq!(names(&hits), ["closer", "near", "far"]);
    let cos_closer = 0.95 / (0.95f64 * 0.95 + 0.05 * 0.05).sqrt();
    assert!((hits[0].score - cos_closer).abs() < 1e-5, "{hits:?}");
    assert!((hits[1].score - 0.8).abs() < 1e-5, "{hits:?}");
    assert!(
        (hits[2].score - 0.1 / 1.01f64.sqrt()).abs() < 1e-5,
        "{hits:?}"
    );
    assert_eq!(repo.vector_search(&axis(0), None, 10).unwrap().len(), 4);
    assert!(repo.vector_search(&axis(0), None, 0).unwrap().is_empty());

    // Many candidates crowd the query; three verified ones lie far from it.
    // The filter still yields k hits, in order.
    let crowd: Vec<NewPolicy> = (0..60)
        .map(|i| bpf(&format!("crowd{i:02}"), "crowd"))
        .collect();
    let items: Vec<Insert<'_>> = crowd
        .iter()
        .enumerate()
        .map(|(i, p)| {
            item(
                p,
                State::Candidate,
                mix(&[(3, 1.0), (10 + i, 0.01 * (i + 1) as f32)]),
            )
        })
        .collect();
    repo.insert_versions(&items).unwrap();
    for (n, w) in [("v_a", 0.3), ("v_b", 0.2), ("v_c", 0.1)] {
        add(
            repo,
            &bpf(n, n),
            State::Candidate,
            mix(&[(3, w), (200, 1.0)]),
        );
        assert!(repo
            .transition(n, 1, State::Candidate, State::Verified, "ok")
            .unwrap());
    }
    let hits = repo
        .vector_search(&axis(3), Some(State::Verified), 3)
        .unwrap();
    assert_eq!(names(&hits), ["v_a", "v_b", "v_c"]);
    assert_eq!(
        repo.vector_search(&axis(3), Some(State::Verified), 2)
            .unwrap()
            .len(),
        2
    );
    // Unfiltered, k beyond the index's default candidate list (40).
    let hits = repo.vector_search(&axis(3), None, 50).unwrap();
    assert_eq!(hits.len(), 50);
    let expected: Vec<String> = (0..50).map(|i| format!("crowd{i:02}")).collect();
    assert_eq!(
        names(&hits),
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
}

fn doc_policy(name: &str, description: &str, limitations: &str) -> NewPolicy {
    let mut p = bpf(name, description);
    p.meta.algorithm = "round robin".into();
    p.meta.target_workloads = vec![];
    p.meta.limitations = vec![limitations.into()];
    p
}

fn text_search_ranks_names_first(mut b: Backend) {
    let repo = b.repo.as_mut();
    let named = doc_policy("latency_guard", "keeps queues short", "none");
    let mentioned = doc_policy(
        "plain_fifo",
        "first in first out",
        "latency grows under load",
    );
    let unrelated = doc_policy("unrelated", "throughput for batch jobs", "none");
    for (i, p) in [&mentioned, &named, &unrelated].into_iter().enumerate() {
        add(repo, p, State::Candidate, axis(i));
    }
    let hits = repo.text_search(&["latency".into()], None, 10).unwrap();
    assert_eq!(names(&hits), ["latency_guard", "plain_fifo"]);
    assert!(hits[0].score > hits[1].score, "{hits:?}");
    // Terms are OR-ed.
    let hits = repo
        .text_search(&["latency".into(), "throughput".into()], None, 10)
        .unwrap();
    assert_eq!(hits.len(), 3, "{hits:?}");
    assert_eq!(
        repo.text_search(&["latency".into()], None, 1)
            .unwrap()
            .len(),
        1
    );
    assert!(repo.text_search(&[], None, 10).unwrap().is_empty());
    assert!(repo
        .text_search(&["zyzzyva".into()], None, 10)
        .unwrap()
        .is_empty());
    assert!(repo
        .text_search(&["latency".into()], Some(State::Verified), 10)
        .unwrap()
        .is_empty());
    assert!(repo
        .transition("plain_fifo", 1, State::Candidate, State::Verified, "ok")
        .unwrap());
    assert_eq!(
        names(
            &repo
                .text_search(&["latency".into()], Some(State::Verified), 10)
                .unwrap()
        ),
        ["plain_fifo"]
    );
}

fn text_search_never_interprets_syntax(mut b: Backend) {
    let repo = b.repo.as_mut();
    add(
        repo,
        &doc_policy("first", "alpha beta", "none"),
        State::Candidate,
        axis(0),
    );
    add(
        repo,
        &doc_policy("second", "gamma beta", "none"),
        State::Candidate,
        axis(1),
    );
    let nasty = [
        "\"",
        "\"alpha",
        "sched*",
        "*",
        "or",
        "OR",
        "and",
        "not",
        "near(",
        "NEAR(alpha beta)",
        "near/2",
        "a:b",
        "alpha:*",
        "x&y",
        "!z",
        "|",
        "'",
        "''",
        "\\",
        "(",
        ")",
        "()",
        "-",
        "^",
        "+",
        "{",
        "}",
        "[",
        "]",
        "<->",
        "<2>",
        "alpha:a",
        "col:alpha",
        "",
        " ",
    ];
    for t in nasty {
        repo.text_search(&[t.to_string()], None, 10)
            .unwrap_or_else(|e| panic!("term {t:?}: {e}"));
    }
    let all: Vec<String> = nasty.iter().map(|t| t.to_string()).collect();
    repo.text_search(&all, Some(State::Candidate), 10).unwrap();

    let search = |terms: &[&str]| -> Vec<String> {
        let terms: Vec<String> = terms.iter().map(|t| t.to_string()).collect();
        let mut n: Vec<String> = repo
            .text_search(&terms, None, 10)
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect();
        n.sort();
        n
    };
    // Negation is not read: "!beta" and "-beta" look for beta.
    assert_eq!(search(&["!beta"]), ["first", "second"]);
    assert_eq!(search(&["-beta"]), ["first", "second"]);
    // A term with OR in it is one phrase, not a disjunction.
    assert!(search(&["alpha or gamma"]).is_empty());
    // `*` is no prefix operator.
    assert!(search(&["bet*"]).is_empty());
    assert!(search(&["bet:*"]).is_empty());
    // NEAR( is a word, not a proximity group.
    assert!(search(&["near(alpha beta)"]).is_empty());
    // A column filter is not read either.
    assert!(search(&["description:gamma"]).is_empty());
    assert_eq!(search(&["gamma"]), ["second"]);
}

fn results_history_and_evidence(mut b: Backend) {
    let repo = b.repo.as_mut();
    add(repo, &bpf("p", "p"), State::Candidate, axis(0));
    add(repo, &bpf("q", "q"), State::Candidate, axis(1));
    let web = axis(5);
    let r1 = repo
        .insert_result(
            "p",
            1,
            &result("web", "web serving", ResultVerdict::Improved, true),
            &web,
            None,
        )
        .unwrap();
    let mut regressed = result("web", "web serving", ResultVerdict::Regressed, true);
    regressed.improvement_pct = Some(-12.5);
    regressed.baseline = None;
    regressed.p_value = None;
    let r2 = repo.insert_result("p", 1, &regressed, &web, None).unwrap();
    repo.insert_result(
        "p",
        1,
        &result("web", "web serving", ResultVerdict::NoChange, true),
        &web,
        None,
    )
    .unwrap();
    repo.insert_result(
        "p",
        1,
        &result("web", "web serving", ResultVerdict::Improved, false),
        &web,
        None,
    )
    .unwrap();
    repo.insert_result(
        "q",
        1,
        &result("batch", "batch compile", ResultVerdict::Improved, true),
        &axis(6),
        None,
    )
    .unwrap();
    assert!(r2.id > r1.id);
    assert_eq!(r1.version, 1);
    assert_eq!(
        input_err(repo.insert_result(
            "p",
            9,
            &result("web", "web serving", ResultVerdict::Improved, true),
            &web,
            None
        )),
        "no policy version p@9"
    );

    // One workload per description, embedded once.
    let w = repo.workloads().unwrap();
    assert_eq!(w.len(), 2);
    assert_eq!(w[0].text, "web serving");
    assert_eq!(w[0].embedding, web);
    assert_eq!(w[1].text, "batch compile");
    assert_eq!(w[1].embedding, axis(6));
    let (web_id, batch_id) = (w[0].id, w[1].id);

    let ev = repo.evidence(&[web_id], None).unwrap();
    let got: Vec<(&str, ResultVerdict, Option<f64>)> = ev
        .iter()
        .map(|e| (e.name.as_str(), e.verdict, e.improvement_pct))
        .collect();
    assert_eq!(
        got,
        [
            ("p", ResultVerdict::Improved, Some(20.0)),
            ("p", ResultVerdict::Regressed, Some(-12.5))
        ]
    );
    assert_eq!(ev[0].workload_id, web_id);
    assert_eq!(ev[0].workload, "web");
    assert_eq!(ev[0].metric, "p99_wakeup_latency");
    assert_eq!(ev[0].p_value, Some(0.001));
    assert_eq!(ev[1].p_value, None);
    assert_eq!(repo.evidence(&[web_id, batch_id], None).unwrap().len(), 3);
    assert_eq!(names_of(&repo.evidence(&[batch_id], None).unwrap()), ["q"]);
    assert!(repo.evidence(&[], None).unwrap().is_empty());
    assert!(repo
        .evidence(&[web_id + batch_id + 1000], None)
        .unwrap()
        .is_empty());
    // The state filter is the policy's latest version's.
    assert!(repo
        .evidence(&[web_id, batch_id], Some(State::Verified))
        .unwrap()
        .is_empty());
    assert!(repo
        .transition("p", 1, State::Candidate, State::Verified, "ok")
        .unwrap());
    assert_eq!(
        names_of(
            &repo
                .evidence(&[web_id, batch_id], Some(State::Verified))
                .unwrap()
        ),
        ["p", "p"]
    );

    let h = repo.history("p").unwrap().unwrap();
    assert_eq!(h.name, "p");
    assert_eq!(h.versions.len(), 1);
    assert_eq!(h.results.len(), 4);
    assert_eq!(h.results[0].id, r1.id);
    assert_eq!(h.results[0].recorded_at, r1.recorded_at);
    let back = &h.results[1];
    assert_eq!(back.id, r2.id);
    assert_eq!(back.result.workload_description, "web serving");
    assert_eq!(back.result.verdict, ResultVerdict::Regressed);
    assert_eq!(back.result.baseline, None);
    assert_eq!(back.result.improvement_pct, Some(-12.5));
    assert_eq!(back.result.direction, Direction::Lower);
    assert_eq!(back.result.source, ResultSource::Verify);
    assert_eq!(back.result.environment, "lab kernel 6.12");
    assert!(back.result.significant);
    assert!(!h.results[3].result.significant);
    assert!(repo.history("nothing").unwrap().is_none());
}

fn names_of(ev: &[schedcp::policies::repo::Evidence]) -> Vec<&str> {
    ev.iter().map(|e| e.name.as_str()).collect()
}

fn reindex_replaces_vectors(mut b: Backend) {
    let repo = b.repo.as_mut();
    let one = bpf("one", "the first policy");
    let two = bpf("two", "the second policy");
    add(repo, &one, State::Candidate, axis(0));
    add(repo, &two, State::Verified, axis(1));
    repo.insert_result(
        "one",
        1,
        &result("w", "a workload", ResultVerdict::Improved, true),
        &axis(2),
        None,
    )
    .unwrap();
    assert_eq!(repo.index_model().unwrap(), None);

    let mut seen: Vec<Vec<String>> = Vec::new();
    repo.reindex("model-a", &mut |texts: &[String]| {
        seen.push(texts.to_vec());
        Ok(texts
            .iter()
            .map(|t| {
                if t.contains("first") {
                    axis(10)
                } else if t.contains("second") {
                    axis(11)
                } else {
                    axis(12)
                }
            })
            .collect())
    })
    .unwrap();
    assert_eq!(repo.index_model().unwrap().as_deref(), Some("model-a"));
    let mut policy_texts = seen[0].clone();
    policy_texts.sort();
    let mut expected = vec![
        SearchDoc::new(&one.meta, &one.body).embedding_text(),
        SearchDoc::new(&two.meta, &two.body).embedding_text(),
    ];
    expected.sort();
    assert_eq!(policy_texts, expected);
    assert_eq!(seen[1], ["a workload"]);

    let hits = repo.vector_search(&axis(10), None, 1).unwrap();
    assert_eq!(names(&hits), ["one"]);
    assert!((hits[0].score - 1.0).abs() < 1e-5);
    // States survive the re-index.
    assert_eq!(
        names(
            &repo
                .vector_search(&axis(11), Some(State::Verified), 5)
                .unwrap()
        ),
        ["two"]
    );
    assert!(repo
        .vector_search(&axis(0), None, 2)
        .unwrap()
        .iter()
        .all(|h| h.score.abs() < 1e-5));
    assert_eq!(repo.workloads().unwrap()[0].embedding, axis(12));
    // Text search still finds them.
    assert_eq!(
        names(&repo.text_search(&["second".into()], None, 5).unwrap()),
        ["two"]
    );

    // A failing embedder changes nothing.
    let e = repo.reindex("model-b", &mut |_| Err(Error::Setup("no model".into())));
    assert!(matches!(e, Err(Error::Setup(_))));
    assert_eq!(repo.index_model().unwrap().as_deref(), Some("model-a"));
    assert_eq!(
        names(&repo.vector_search(&axis(10), None, 1).unwrap()),
        ["one"]
    );
}

fn count_policies(mut b: Backend) {
    let repo = b.repo.as_mut();
    assert_eq!(repo.count().unwrap(), 0);
    add(repo, &bpf("a", "a"), State::Candidate, axis(0));
    add(repo, &bpf("b", "b"), State::Candidate, axis(1));
    add(repo, &bpf("b", "b, again"), State::Candidate, axis(1));
    add(repo, &external("c"), State::Candidate, axis(2));
    assert_eq!(repo.count().unwrap(), 3);
}

fn batch_is_atomic(mut b: Backend) {
    let repo = b.repo.as_mut();
    let existing = bpf("existing", "already here");
    add(repo, &existing, State::Candidate, axis(0));
    let fresh = bpf("freshly_added", "quokka");
    let fresh_v2 = {
        let mut p = bpf("existing", "a new version");
        p.meta.algorithm = "new".into();
        p
    };
    let batch = [
        item(&fresh, State::Candidate, axis(1)),
        item(&fresh_v2, State::Candidate, axis(2)),
        item(&existing, State::Candidate, axis(0)),
    ];
    let msg = input_err(repo.insert_versions(&batch));
    assert!(
        msg.starts_with("existing@1 already has exactly this content"),
        "{msg}"
    );
    assert_eq!(repo.count().unwrap(), 1);
    assert!(repo.get(&pref("freshly_added")).unwrap().is_none());
    assert_eq!(repo.get(&pref("existing")).unwrap().unwrap().version, 1);
    assert!(repo
        .text_search(&["quokka".into()], None, 5)
        .unwrap()
        .is_empty());
    assert_eq!(
        names(&repo.vector_search(&axis(1), None, 5).unwrap()),
        ["existing"]
    );
    assert_eq!(repo.list(None).unwrap().len(), 1);
    assert_eq!(
        repo.history("existing").unwrap().unwrap().transitions.len(),
        1
    );

    // The same content twice in one batch: the second is the duplicate.
    let twice = [
        item(&fresh, State::Candidate, axis(1)),
        item(&fresh, State::Candidate, axis(1)),
    ];
    let msg = input_err(repo.insert_versions(&twice));
    assert!(
        msg.starts_with("freshly_added@1 already has exactly this content"),
        "{msg}"
    );
    assert_eq!(repo.count().unwrap(), 1);

    // And the batch goes in once it is valid.
    let ok = [
        item(&fresh, State::Candidate, axis(1)),
        item(&fresh_v2, State::Candidate, axis(2)),
    ];
    let added = repo.insert_versions(&ok).unwrap();
    assert_eq!(
        added.iter().map(|v| v.id()).collect::<Vec<_>>(),
        ["freshly_added@1", "existing@2"]
    );
    assert_eq!(repo.count().unwrap(), 2);
}

/// Searches see every committed write at once: this connection's own and
/// another connection's (the embedded store answers KNN from an in-memory
/// copy that must notice both), including state changes under a filter.
fn searches_see_writes_at_once(mut b: Backend) {
    let mut other = b.open_again();
    let first = bpf("first", "the first policy");
    add(b.repo.as_mut(), &first, State::Candidate, axis(0));
    assert_eq!(
        names(&b.repo.vector_search(&axis(0), None, 5).unwrap()),
        ["first"]
    );

    let second = bpf("second", "written elsewhere");
    add(other.as_mut(), &second, State::Candidate, axis(1));
    let hits = b.repo.vector_search(&axis(1), None, 1).unwrap();
    assert_eq!(names(&hits), ["second"], "another connection's insert");

    assert!(other
        .transition("second", 1, State::Candidate, State::Verified, "test")
        .unwrap());
    let verified = b
        .repo
        .vector_search(&axis(1), Some(State::Verified), 5)
        .unwrap();
    assert_eq!(
        names(&verified),
        ["second"],
        "another connection's transition"
    );
    let words = vec!["elsewhere".to_string()];
    assert_eq!(
        names(
            &b.repo
                .text_search(&words, Some(State::Verified), 5)
                .unwrap()
        ),
        ["second"]
    );
    assert!(b
        .repo
        .text_search(&words, Some(State::Candidate), 5)
        .unwrap()
        .is_empty());

    let third = bpf("third", "written here");
    add(b.repo.as_mut(), &third, State::Candidate, axis(2));
    assert_eq!(
        names(
            &b.repo
                .vector_search(&axis(2), Some(State::Candidate), 1)
                .unwrap()
        ),
        ["third"],
        "this connection's own insert"
    );
}

/// Issue 17, finding 6: a token owns the policies it creates, its writes
/// are counted for its quotas, and old verify reports are pruned.
fn ownership_usage_and_report_pruning(mut b: Backend) {
    let repo = b.repo.as_mut();
    let mine = bpf("mine", "a token's own scheduler");
    let mut by_a = item(&mine, State::Candidate, axis(0));
    by_a.added_by = Some(writer("token_a"));
    repo.insert_versions(&[by_a]).unwrap();

    // Another token may not add a version to it; the operator may.
    let mut v2 = mine.clone();
    v2.body = Body::Bpf {
        source: "/* v2 */".into(),
    };
    let mut by_b = item(&v2, State::Candidate, axis(0));
    by_b.added_by = Some(writer("token_b"));
    match repo.insert_versions(&[by_b]) {
        Err(Error::Forbidden(m)) => assert!(
            m.contains("'mine' belongs to API token token_a") && m.contains("token_b"),
            "{m}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(repo.history("mine").unwrap().unwrap().versions.len(), 1);
    let mut by_a2 = item(&v2, State::Candidate, axis(0));
    by_a2.added_by = Some(writer("token_a"));
    assert_eq!(repo.insert_versions(&[by_a2]).unwrap()[0].version, 2);
    // A token may not add to what the operator created either.
    add(
        repo,
        &bpf("operators", "the operator's"),
        State::Verified,
        axis(1),
    );
    let mut v = bpf("operators", "the operator's");
    v.body = Body::Bpf {
        source: "/* mine now */".into(),
    };
    let mut sneaky = item(&v, State::Candidate, axis(1));
    sneaky.added_by = Some(writer("token_a"));
    assert!(matches!(
        repo.insert_versions(&[sneaky]),
        Err(Error::Forbidden(m)) if m.contains("belongs to the operator")
    ));

    // Usage counts what each token wrote, in stored bytes.
    repo.insert_result(
        "mine",
        1,
        &result("w", "a workload", ResultVerdict::NoChange, false),
        &axis(2),
        Some(writer("token_a")),
    )
    .unwrap();
    let a = repo.usage("token_a").unwrap();
    assert_eq!((a.versions, a.results), (2, 1));
    let expected: u64 = [&mine, &v2].iter().map(|p| p.stored_bytes()).sum();
    assert_eq!(a.bytes, expected);
    assert_eq!(repo.usage("token_b").unwrap(), Default::default());

    // Of 6 reports, keep 2: the newest two, and the newest that passed.
    for i in 0..6 {
        let r = NewVerifyReport {
            passed: i == 1,
            report_sha256: format!("{i:064}"),
            object_sha256: None,
            kernel_release: None,
            report: serde_json::json!({ "n": i }),
        };
        repo.insert_verify_report("mine", 1, &r, 2).unwrap();
    }
    let kept: Vec<String> = repo
        .verify_reports("mine", 1, 100)
        .unwrap()
        .into_iter()
        .map(|r| r.report_sha256[63..].to_string())
        .collect();
    assert_eq!(kept, ["5", "4", "1"]);
}

/// A token writing under the default limits.
fn writer(token: &str) -> Writer<'_> {
    Writer::new(token, WriteLimits::default())
}

/// Issue 17, finding 6: one token's concurrent writers, each on its own
/// connection, take turns on its quota: exactly the quota is admitted, as
/// many times as it is tried, the rest refused as quota_exceeded.
fn quotas_hold_under_concurrent_writers(b: Backend) {
    const WRITERS: usize = 4;
    const EACH: usize = 3;
    let limits = WriteLimits {
        quota_versions: 5,
        quota_results: 3,
        ..WriteLimits::default()
    };
    let host = bpf("host", "the operator's, for results");
    let mut repos: Vec<_> = (0..WRITERS).map(|_| b.open_again()).collect();
    repos[0]
        .insert_versions(&[item(&host, State::Verified, axis(0))])
        .unwrap();
    let barrier = std::sync::Barrier::new(WRITERS);
    let outcomes: Vec<(usize, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = repos
            .iter_mut()
            .enumerate()
            .map(|(i, repo)| {
                let barrier = &barrier;
                s.spawn(move || {
                    let w = Writer::new("token_q", limits);
                    barrier.wait();
                    let (mut versions, mut results) = (0, 0);
                    for j in 0..EACH {
                        let p = bpf(&format!("q_{i}_{j}"), "a token's own scheduler");
                        let mut it = item(&p, State::Candidate, axis(1));
                        it.added_by = Some(w);
                        match repo.insert_versions(&[it]) {
                            Ok(_) => versions += 1,
                            Err(Error::Quota(m)) => {
                                assert!(m.contains("quota_versions = 5"), "{m}")
                            }
                            Err(e) => panic!("writer {i}: {e}"),
                        }
                        let r = result("w", "a workload", ResultVerdict::NoChange, false);
                        match repo.insert_result("host", 1, &r, &axis(2), Some(w)) {
                            Ok(_) => results += 1,
                            Err(Error::Quota(m)) => assert!(m.contains("quota_results = 3"), "{m}"),
                            Err(e) => panic!("writer {i}: {e}"),
                        }
                    }
                    (versions, results)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let versions: usize = outcomes.iter().map(|o| o.0).sum();
    let results: usize = outcomes.iter().map(|o| o.1).sum();
    assert_eq!((versions, results), (5, 3), "{outcomes:?}");
    let used = repos[0].usage("token_q").unwrap();
    assert_eq!((used.versions, used.results), (5, 3));
}

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $case() { super::$case(super::sqlite_backend()) } )*
        }
        mod postgres {
            $( #[test] fn $case() { super::$case(super::pg_backend(stringify!($case))) } )*
        }
    };
}

on_both_backends!(
    insert_and_get,
    ownership_usage_and_report_pruning,
    quotas_hold_under_concurrent_writers,
    duplicate_content_refused,
    origin_or_kind_mismatch_refused,
    list_by_state,
    transition_is_compare_and_set,
    concurrent_writers_take_turns,
    vector_search_orders_by_similarity,
    text_search_ranks_names_first,
    text_search_never_interprets_syntax,
    results_history_and_evidence,
    reindex_replaces_vectors,
    count_policies,
    batch_is_atomic,
    searches_see_writes_at_once,
);

// ---- PostgreSQL only: connecting and the schema ----

#[test]
fn postgres_schema_is_applied_once_even_by_racing_connections() {
    let (admin_url, url, db) = fresh_pg_database("schema_race");
    let _cleanup = Storage::Postgres {
        admin_url,
        url: url.clone(),
        db,
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| PostgresRepo::connect(&url).map(drop)))
            .collect();
        for h in handles {
            h.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
        }
    });
    let mut repo = PostgresRepo::connect(&url).unwrap();
    add(&mut repo, &bpf("after", "x"), State::Candidate, axis(0));
    drop(repo);
    // Reconnecting finds the schema and the data.
    let repo = PostgresRepo::connect(&url).unwrap();
    assert_eq!(repo.count().unwrap(), 1);
    assert_eq!(repo.backend(), "postgres");
    let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let versions: Vec<i32> = c
        .query("SELECT version FROM policy_schema ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);

    // A database written by a newer schedcp is refused, not misread.
    c.batch_execute("INSERT INTO policy_schema VALUES (99, 'later')")
        .unwrap();
    let Err(Error::Setup(msg)) = PostgresRepo::connect(&url) else {
        panic!("a newer schema must be a setup error")
    };
    assert!(
        msg.contains("schema version 99") && msg.contains("upgrade schedcp"),
        "{msg}"
    );
}

/// A login role, dropped afterwards.
struct Role {
    admin_url: String,
    name: String,
}

impl Drop for Role {
    fn drop(&mut self) {
        if let Ok(mut admin) = ::postgres::Client::connect(&self.admin_url, ::postgres::NoTls) {
            let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS {}", self.name));
        }
    }
}

/// `url` with its user replaced by `user`.
fn with_user(url: &str, user: &str) -> String {
    let start = url.find("://").map(|i| i + 3).expect("a postgresql:// URL");
    let at = url[start..]
        .find('@')
        .map(|i| start + i)
        .expect("a user in the URL");
    format!("{}{user}{}", &url[..start], &url[at..])
}

#[test]
fn postgres_a_role_that_may_only_read_and_write_can_use_a_set_up_database() {
    let (admin_url, url, db) = fresh_pg_database("least_privilege");
    let role = Role {
        admin_url: admin_url.clone(),
        name: format!("schedcp_t_rw_{}", std::process::id()),
    };
    // Declared after the role, so dropped first: the grants go with it.
    let _cleanup = Storage::Postgres {
        admin_url: admin_url.clone(),
        url: url.clone(),
        db,
    };
    let rw_url = with_user(&url, &role.name);
    let mut admin = ::postgres::Client::connect(&admin_url, ::postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("CREATE ROLE {} LOGIN", role.name))
        .unwrap();
    // Before the schema exists it cannot create it (no CREATE on public).
    let Err(Error::Setup(msg)) = PostgresRepo::connect(&rw_url) else {
        panic!("a role that may not create the schema must get a setup error")
    };
    assert!(msg.contains("cannot set up the policy schema"), "{msg}");

    drop(PostgresRepo::connect(&url).unwrap());
    let mut owner = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    owner
        .batch_execute(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {0};
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {0};",
            role.name
        ))
        .unwrap();
    drop(owner);
    let mut repo = PostgresRepo::connect(&rw_url).unwrap_or_else(|e| panic!("{e}"));
    add(
        &mut repo,
        &bpf("rw", "written by a plain role"),
        State::Candidate,
        axis(0),
    );
    assert!(repo
        .transition("rw", 1, State::Candidate, State::Verified, "ok")
        .unwrap());
    repo.insert_result(
        "rw",
        1,
        &result("w", "a workload", ResultVerdict::Improved, true),
        &axis(1),
        None,
    )
    .unwrap();
    repo.reindex("m", &mut |texts: &[String]| {
        Ok(texts.iter().map(|_| axis(2)).collect())
    })
    .unwrap();
    assert_eq!(
        names(&repo.vector_search(&axis(2), None, 5).unwrap()),
        ["rw"]
    );
    assert!(repo.store_bytes().unwrap() > 0);
}

#[test]
fn postgres_connection_failure_is_a_setup_error_without_the_password() {
    // Port 1 on loopback: nothing listens, the refusal is immediate.
    let e = PostgresRepo::connect("postgresql://someone:hunter2@127.0.0.1:1/library")
        .err()
        .expect("nothing listens on port 1");
    let Error::Setup(msg) = e else {
        panic!("expected a setup error, got {e:?}")
    };
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(
        msg.contains("postgresql://someone:***@127.0.0.1:1/library"),
        "{msg}"
    );
    assert!(msg.contains("check that the server is running"), "{msg}");

    let e = PostgresRepo::connect("postgresql://u:pw@127.0.0.1:notaport/db")
        .err()
        .expect("a bad port");
    let Error::Setup(msg) = e else {
        panic!("expected a setup error, got {e:?}")
    };
    assert!(!msg.contains(":pw@"), "{msg}");

    // A database that does not exist, on the real server.
    let url = with_database(&pg_url(), "schedcp_no_such_database");
    let Err(Error::Setup(msg)) = PostgresRepo::connect(&url) else {
        panic!("connecting to a missing database must fail with a setup error")
    };
    assert!(msg.contains("schedcp_no_such_database"), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
}
