//! Fuzzing (issue 17, finding 9): the parsers that take hostile input must
//! answer every input with a value or an error — never a panic, a hang or
//! an unbounded message. Each target runs its checked-in corpus
//! (`tests/data/fuzz/<target>/`) and then generated inputs: random ones
//! and mutations of the corpus. Cases per target: `SCHEDCP_FUZZ_CASES`
//! (default 5000: a few seconds, the CI budget). The ELF and BTF readers are fuzzed inside
//! the library (`verify::analyze::fuzz`), seeded with the BPF objects the
//! build compiles.

use std::path::PathBuf;
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunConfig, TestRunner};

fn cases() -> u32 {
    std::env::var("SCHEDCP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

fn corpus(target: &str) -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
        .collect()
}

/// Inputs: corpus entries, each mutated (a slice replaced by random text,
/// or cut), and free random text over the characters that matter.
fn inputs(seeds: Vec<String>, alphabet: &'static str) -> impl Strategy<Value = String> {
    let free = proptest::collection::vec(
        proptest::sample::select(alphabet.chars().collect::<Vec<_>>()),
        0..300,
    )
    .prop_map(|v| v.into_iter().collect::<String>());
    let mutated = (
        proptest::sample::select(seeds),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        "\\PC{0,40}",
    )
        .prop_map(|(s, a, b, insert)| {
            let chars: Vec<char> = s.chars().collect();
            let (i, j) = (a.index(chars.len() + 1), b.index(chars.len() + 1));
            let (i, j) = (i.min(j), i.max(j));
            chars[..i]
                .iter()
                .chain(insert.chars().collect::<Vec<_>>().iter())
                .chain(chars[j..].iter())
                .collect()
        });
    prop_oneof![free, mutated]
}

/// Run `check` on the corpus, then on generated inputs; report the figure.
fn fuzz(target: &str, alphabet: &'static str, check: impl Fn(&str) -> Result<(), String>) {
    let seeds = corpus(target);
    let t = Instant::now();
    for s in &seeds {
        check(s).unwrap_or_else(|e| panic!("{target} corpus: {e}"));
    }
    let mut runner = TestRunner::new(RunConfig {
        cases: cases(),
        failure_persistence: None,
        ..RunConfig::default()
    });
    runner
        .run(&inputs(seeds.clone(), alphabet), |s| {
            check(&s).map_err(TestCaseError::fail)
        })
        .unwrap_or_else(|e| panic!("{target}: {e}"));
    eprintln!(
        "fuzz {target}: {} corpus + {} generated inputs in {:.2} s",
        seeds.len(),
        cases(),
        t.elapsed().as_secs_f64()
    );
}

/// Error messages stay bounded whatever the input.
fn bounded(what: &str, msg: &str, input: &str) -> Result<(), String> {
    if msg.len() > 2 * input.len() + 600 {
        return Err(format!(
            "{what}: a {}-byte message for a {}-byte input",
            msg.len(),
            input.len()
        ));
    }
    Ok(())
}

#[test]
fn include_scanner() {
    let allow = schedcp::bpf::includes::Allowlist::new(["scx/common.bpf.h", "vmlinux.h"]);
    for bad in corpus("includes")
        .iter()
        .filter(|s| !s.contains("scx/common.bpf.h"))
    {
        assert!(
            !schedcp::bpf::includes::check(bad, &allow).is_empty(),
            "not flagged: {bad:?}"
        );
    }
    fuzz(
        "includes",
        "#include<>\"./\\\n ?=scx/common.bpf.h_abc()*/ asm.incbin embed pragma",
        |s| {
            let _ = schedcp::bpf::includes::check(s, &allow);
            Ok(())
        },
    );
}

#[test]
fn config() {
    fuzz(
        "config",
        "[]=.\"'\n abcdefgilmnoprstuvwxyz_0123456789-+e",
        |s| {
            if let Err(e) = schedcp::config::Config::parse(s) {
                bounded("config", &format!("{e:#}"), s)?;
            }
            Ok(())
        },
    );
}

#[test]
fn workload_spec() {
    fuzz(
        "workload",
        ":=,-_ abcdefghijklmnopqrstuvwxyz0123456789",
        |s| {
            if let Err(e) = s.parse::<schedcp_proto::workload::WorkloadSpec>() {
                bounded("workload spec", &e.to_string(), s)?;
            }
            Ok(())
        },
    );
}

#[test]
fn api_inputs() {
    let ops = schedcp::api::tools::all();
    fuzz(
        "api",
        "{}[]:,\"\\ 0123456789.-+eE truefalsnu_abcdxyz",
        |s| {
            let json: serde_json::Value = match serde_json::from_str(s) {
                Ok(v) => v,
                Err(_) => serde_json::Value::String(s.to_string()),
            };
            for op in &ops {
                let _ = (op.check_input)(json.clone());
                let _ = (op.from_query)(s);
            }
            Ok(())
        },
    );
}
