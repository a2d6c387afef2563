//! The policy repository's service API, the same suite on both backends:
//! the embedded SQLite store and PostgreSQL + pgvector (a real server:
//! `scripts/pg-test-server.sh start`, then
//! `export SCHEDCP_TEST_PG_URL=$(scripts/pg-test-server.sh url)`; without it
//! the PostgreSQL half fails, it does not skip). Real embeddings throughout
//! (the model from scripts/fetch-model.sh).

use std::path::PathBuf;
use std::sync::OnceLock;

use schedcp::bpf::meta::PolicyMeta;
use schedcp::config::Config;
use schedcp::policies::embed;
use schedcp::policies::model::{
    Body, Direction, NewPolicy, NewResult, NewVerifyReport, Origin, PolicyRef, ResultSource,
    ResultVerdict, State,
};
use schedcp::policies::repo::sqlite::SqliteRepo;
use schedcp::policies::repo::Repository;
use schedcp::policies::search::SearchQuery;
use schedcp::policies::Library;
use schedcp::selfbench::pg_scratch::Scratch;
use schedcp::store::Store;

fn model_dir() -> PathBuf {
    embed::default_dir(&Config::default().cache_dir())
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

/// A fresh, seeded library on `backend`; the tempdir keeps SQLite's file alive.
fn library(backend: &str, tag: &str) -> (Library, Option<tempfile::TempDir>) {
    let (repo, dir): (Box<dyn Repository>, _) = match backend {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open_at(&dir.path().join("schedcp.db")).unwrap();
            (Box::new(SqliteRepo::new(store)), Some(dir))
        }
        "postgres" => (pg().repo(&format!("lib{tag}")).unwrap(), None),
        _ => unreachable!(),
    };
    let mut lib = Library::with_repo(repo, model_dir(), 2);
    lib.seed().unwrap();
    (lib, dir)
}

fn agent_policy(name: &str, description: &str, targets: &[&str]) -> NewPolicy {
    NewPolicy {
        meta: PolicyMeta {
            name: name.into(),
            ops_name: format!("{name}_ops"),
            description: description.into(),
            algorithm: "Tasks go to one shared queue; a CPU that needs work takes the head.".into(),
            target_workloads: targets.iter().map(|t| t.to_string()).collect(),
            limitations: vec![],
            tunables: vec![],
        },
        origin: Origin::Agent,
        body: Body::Bpf {
            source: format!("SCX_OPS_DEFINE({name}_ops, .name = \"{name}_ops\");"),
        },
    }
}

fn result(workload: &str, desc: &str, verdict: ResultVerdict, source: ResultSource) -> NewResult {
    let (value, baseline) = match verdict {
        ResultVerdict::Improved => (80.0, 100.0),
        ResultVerdict::Regressed => (120.0, 100.0),
        ResultVerdict::NoChange => (100.0, 100.0),
    };
    NewResult {
        signature: None,
        workload: workload.into(),
        workload_description: desc.into(),
        metric: "p99_latency".into(),
        unit: "ms".into(),
        direction: Direction::Lower,
        value,
        baseline: Some(baseline),
        improvement_pct: None,
        p_value: Some(if verdict == ResultVerdict::NoChange {
            0.6
        } else {
            0.002
        }),
        significant: verdict != ResultVerdict::NoChange,
        verdict,
        source,
        environment: "test".into(),
    }
}

fn r(s: &str) -> PolicyRef {
    s.parse().unwrap()
}

fn seeding_imports_the_library_once(backend: &str) {
    let (mut lib, _d) = library(backend, "seed");
    let all = lib.list(None).unwrap();
    let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
    for want in [
        "fifo",
        "vtime",
        "latency",
        "batch",
        "scx_bpfland",
        "scx_lavd",
        "scx_rusty",
    ] {
        assert!(names.contains(&want), "{backend}: missing {want}");
    }
    let fifo = lib.get(&r("fifo")).unwrap();
    assert_eq!(
        (fifo.version, fifo.state, fifo.origin),
        (1, State::Verified, Origin::Builtin)
    );
    assert_eq!(lib.get(&r("scx_lavd")).unwrap().state, State::Candidate);
    assert!(
        lib.seed().unwrap().is_empty(),
        "{backend}: seeding twice adds nothing"
    );
    assert_eq!(lib.list(None).unwrap().len(), all.len());
}

fn versions_are_immutable_and_numbered(backend: &str) {
    let (mut lib, _d) = library(backend, "ver");
    let v1 = lib
        .add(agent_policy("mine", "A first try.", &["batch"]))
        .unwrap();
    assert_eq!((v1.version, v1.state), (1, State::Candidate));
    let e = lib
        .add(agent_policy("mine", "A first try.", &["batch"]))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("mine@1 already has exactly this content"),
        "{backend}: {e}"
    );
    let v2 = lib
        .add(agent_policy("mine", "A second try.", &["batch"]))
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_ne!(v1.content_hash, v2.content_hash);
    assert_eq!(
        lib.get(&r("mine@1")).unwrap().meta.description,
        "A first try."
    );
    assert_eq!(lib.get(&r("mine")).unwrap().version, 2);
    let e = lib.get(&r("mine@7")).unwrap_err().to_string();
    assert!(e.contains("no version 7; its latest is 2"), "{e}");
    let e = lib.get(&r("nope")).unwrap_err().to_string();
    assert!(e.contains("no policy named 'nope'"), "{e}");
    // An agent cannot add a version of a built-in.
    let mut fake = agent_policy("vtime", "Better vtime.", &["fairness"]);
    fake.origin = Origin::Agent;
    let e = lib.add(fake).unwrap_err().to_string();
    assert!(
        e.contains("exists as a bpf policy of origin builtin"),
        "{backend}: {e}"
    );
}

fn search_finds_by_meaning_and_filters_by_state(backend: &str) {
    let (mut lib, _d) = library(backend, "search");
    let q = |text: &str, state| SearchQuery {
        text: text.into(),
        limit: 3,
        state,
    };
    let hits = lib
        .search(&q("finish many short jobs quickly, shortest first", None))
        .unwrap();
    assert_eq!(hits.hits[0].name, "batch", "{backend}: {:?}", hits.hits);
    assert!(
        hits.hits[0].reason.contains("semantic"),
        "{}",
        hits.hits[0].reason
    );
    let top3: Vec<String> = lib
        .search(&q(
            "responsive games while compiling in the background",
            None,
        ))
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert!(
        top3.iter()
            .any(|n| ["scx_lavd", "scx_bpfland", "latency"].contains(&n.as_str())),
        "{backend}: {top3:?}"
    );
    // Only verified: no scx catalogue entry (they are candidates).
    let v = lib
        .search(&q("responsive games", Some(State::Verified)))
        .unwrap();
    assert!(!v.hits.is_empty());
    assert!(
        v.hits.iter().all(|h| h.state == State::Verified),
        "{backend}: {:?}",
        v.hits
    );
    // Query syntax is just words.
    lib.search(&q("\"latency\" OR NEAR(x y) * : & ! -", None))
        .unwrap();
}

fn results_on_similar_workloads_lift_a_policy(backend: &str) {
    let (mut lib, _d) = library(backend, "evid");
    let query = SearchQuery {
        text: "tail latency of a web server handling many small requests".into(),
        limit: 16,
        state: None,
    };
    // The policy that ranks last for this query before any evidence.
    let before = lib.search(&query).unwrap().hits;
    let target = before.last().unwrap().name.clone();
    let rank = |lib: &mut Library| {
        lib.search(&query)
            .unwrap()
            .hits
            .iter()
            .position(|h| h.name == target)
            .map(|p| p + 1)
    };
    let before = before.len();
    for _ in 0..2 {
        lib.record_result(
            &r(&target),
            result(
                "web_requests",
                "web server serving many small HTTP requests",
                ResultVerdict::Improved,
                ResultSource::Tune,
            ),
        )
        .unwrap();
    }
    let after = rank(&mut lib).unwrap();
    assert!(
        after < before,
        "{backend}: {target} rank {before} → {after}"
    );
    let hits = lib.search(&query).unwrap();
    let hit = hits.hits.iter().find(|h| h.name == target).unwrap();
    assert!(
        hit.evidence[0].contains("improved p99_latency by 20.0% on 'web_requests'"),
        "{:?}",
        hit.evidence
    );
    // Evidence on an unrelated workload does not count.
    let unrelated = SearchQuery {
        text: "compress video files in batch overnight".into(),
        limit: 16,
        state: None,
    };
    let h = lib.search(&unrelated).unwrap();
    assert!(
        h.hits.iter().all(|h| h.evidence.is_empty()),
        "{backend}: {:?}",
        h.hits
    );
}

fn curation_promotes_on_evidence_and_demotes(backend: &str) {
    let (mut lib, _d) = library(backend, "cur");
    lib.add(agent_policy("cand", "Agent scheduler.", &["latency"]))
        .unwrap();
    // Hand-recorded wins never promote, whatever the state.
    for _ in 0..3 {
        let rec = lib
            .record_result(
                &r("cand"),
                result(
                    "w",
                    "a workload",
                    ResultVerdict::Improved,
                    ResultSource::Manual,
                ),
            )
            .unwrap();
        assert!(rec.transition.is_none());
    }
    let e = lib
        .transition(&r("cand"), State::Promoted, "trust me")
        .unwrap_err()
        .to_string();
    assert!(e.contains("promoted only by evidence"), "{e}");
    let e = lib
        .transition(&r("cand"), State::Deployed, "skip")
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot become deployed"), "{e}");
    lib.transition(&r("cand"), State::Verified, "verify passed")
        .unwrap();
    lib.transition(&r("cand"), State::Deployed, "canary passed")
        .unwrap();
    let one = lib
        .record_result(
            &r("cand"),
            result(
                "w",
                "a workload",
                ResultVerdict::Improved,
                ResultSource::Deploy,
            ),
        )
        .unwrap();
    assert!(one.transition.is_none());
    let two = lib
        .record_result(
            &r("cand"),
            result(
                "w",
                "a workload",
                ResultVerdict::Improved,
                ResultSource::Deploy,
            ),
        )
        .unwrap();
    assert_eq!(two.transition.unwrap().to, State::Promoted, "{backend}");
    assert_eq!(lib.get(&r("cand")).unwrap().state, State::Promoted);
    let bad = lib
        .record_result(
            &r("cand"),
            result(
                "w",
                "a workload",
                ResultVerdict::Regressed,
                ResultSource::Deploy,
            ),
        )
        .unwrap();
    assert_eq!(bad.transition.unwrap().to, State::Deployed, "{backend}");
    let h = lib.history("cand").unwrap();
    let path: Vec<State> = h.transitions.iter().map(|t| t.to).collect();
    assert_eq!(
        path,
        [
            State::Candidate,
            State::Verified,
            State::Deployed,
            State::Promoted,
            State::Deployed
        ],
        "{backend}"
    );
    assert_eq!(h.results.len(), 6);
    // A verdict that contradicts the numbers is refused.
    let mut lie = result(
        "w",
        "a workload",
        ResultVerdict::Improved,
        ResultSource::Deploy,
    );
    lie.value = 150.0;
    let e = lib.record_result(&r("cand"), lie).unwrap_err().to_string();
    assert!(e.contains("contradicts"), "{e}");
    lib.transition(&r("cand"), State::Retired, "superseded")
        .unwrap();
    assert!(lib.transition(&r("cand"), State::Retired, "again").is_err());
}

fn export_import_round_trips(backend: &str) {
    let (mut lib, _d) = library(backend, "exp");
    lib.add(agent_policy("mine", "Mine.", &["batch"])).unwrap();
    lib.add(agent_policy("mine", "Mine, v2.", &["batch"]))
        .unwrap();
    lib.record_result(
        &r("mine@1"),
        result(
            "w",
            "some workload",
            ResultVerdict::Improved,
            ResultSource::Manual,
        ),
    )
    .unwrap();
    lib.transition(&r("mine@2"), State::Retired, "bad idea")
        .unwrap();
    let export = lib.export().unwrap();

    let (mut other, _d2) = library(backend, "imp");
    let rep = other.import(&export, "test").unwrap();
    assert_eq!(
        rep.added,
        vec![
            ("mine@1".into(), "mine@1".into()),
            ("mine@2".into(), "mine@2".into())
        ]
    );
    assert_eq!(rep.results, 1);
    let (a, b) = (lib.history("mine").unwrap(), other.history("mine").unwrap());
    let key = |h: &schedcp::policies::model::History| {
        h.versions
            .iter()
            .map(|v| (v.version, v.content_hash.clone(), v.state))
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&a), key(&b), "{backend}");
    assert_eq!(b.results[0].result.value, a.results[0].result.value);
    // Importing again changes nothing.
    let again = other.import(&export, "test").unwrap();
    assert!(again.added.is_empty());
    // A tampered document is refused whole.
    let mut bad = export.clone();
    let mine = bad.policies.iter_mut().find(|p| p.name == "mine").unwrap();
    mine.versions[0].meta.description = "Tampered.".into();
    let (mut third, _d3) = library(backend, "tamp");
    let e = third.import(&bad, "bad.json").unwrap_err().to_string();
    assert!(e.contains("content does not match its hash"), "{e}");
    assert!(third.get(&r("mine")).is_err(), "nothing imported");
}

fn verify_reports_are_kept_with_the_version(backend: &str) {
    let (mut lib, _d) = library(backend, "vrep");
    lib.add(agent_policy("mine", "A first try.", &["batch"]))
        .unwrap();
    let report = |passed: bool, n: u32| NewVerifyReport {
        passed,
        report_sha256: format!("{n:064x}"),
        object_sha256: Some("ab".repeat(32)),
        kernel_release: Some("7.2.13+deb14-cloud-amd64".into()),
        report: serde_json::json!({ "passed": passed, "stages": [{ "name": "compile", "n": n }] }),
    };
    // A failing report is kept, and the candidate stays a candidate.
    let (k1, moved) = lib
        .record_verify_report(&r("mine@1"), &report(false, 1))
        .unwrap();
    assert!(moved.is_none());
    assert_eq!(lib.get(&r("mine@1")).unwrap().state, State::Candidate);
    // A passing one moves it to verified, and the transition names the report.
    let (k2, moved) = lib
        .record_verify_report(&r("mine"), &report(true, 2))
        .unwrap();
    assert!(k2.id > k1.id);
    assert_eq!(moved.unwrap().state, State::Verified);
    let h = lib.history("mine").unwrap();
    let last = h.transitions.last().unwrap();
    assert!(
        last.reason.contains(&format!("report #{}", k2.id)),
        "{backend}: {}",
        last.reason
    );
    // Newest first, whole, byte-for-byte the JSON that went in.
    let kept = lib.verify_reports(&r("mine@1"), 10).unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!((kept[0].id, kept[0].passed), (k2.id, true));
    assert_eq!(kept[0].report, report(true, 2).report);
    assert_eq!(kept[1].report_sha256, format!("{:064x}", 1));
    assert_eq!(lib.verify_reports(&r("mine"), 1).unwrap().len(), 1);
    // A second pass of a verified version is kept but moves nothing.
    let (_, moved) = lib
        .record_verify_report(&r("mine@1"), &report(true, 3))
        .unwrap();
    assert!(moved.is_none());
    // Another version has its own (no) reports.
    lib.add(agent_policy("mine", "A second try.", &["batch"]))
        .unwrap();
    assert!(lib.verify_reports(&r("mine@2"), 10).unwrap().is_empty());
    let e = lib
        .record_verify_report(&r("mine@9"), &report(true, 4))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no version 9"), "{backend}: {e}");
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name("sqlite"); } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name("postgres"); } )*
        }
    };
}

on_both_backends!(
    seeding_imports_the_library_once,
    versions_are_immutable_and_numbered,
    search_finds_by_meaning_and_filters_by_state,
    results_on_similar_workloads_lift_a_policy,
    curation_promotes_on_evidence_and_demotes,
    export_import_round_trips,
    verify_reports_are_kept_with_the_version,
);
