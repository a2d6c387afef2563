//! `schedcp policy ...` through the real binary: the CLI door of the
//! repository, bad input refused with exit code 2 and a precise message.

use crate::common;

use std::path::Path;
use std::process::Output;

use serde_json::Value;

fn policy(state: &Path, args: &[&str]) -> Output {
    common::schedcp()
        .env("SCHEDCP_STATE", state)
        .arg("-q")
        .arg("policy")
        .args(args)
        .output()
        .expect("running schedcp")
}

fn ok_json(state: &Path, args: &[&str]) -> Value {
    let out = policy(state, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn refused(state: &Path, args: &[&str], want: &str) {
    let out = policy(state, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: {err} !~ {want}");
}

const META: &str = r#"name = "my_fifo"
ops_name = "my_fifo"
description = "A FIFO written by an agent."
algorithm = "One shared queue, served in arrival order."
target_workloads = ["batch"]
limitations = []
"#;
const SRC: &str = "SCX_OPS_DEFINE(my_fifo_ops, .name = \"my_fifo\");\n";

fn write_policy(dir: &Path, meta: &str, src: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("policy.toml"), meta).unwrap();
    std::fs::write(dir.join("main.bpf.c"), src).unwrap();
}

#[test]
fn add_search_show_history_export_import() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let p = tmp.path().join("my_fifo");
    write_policy(&p, META, SRC);
    let added = ok_json(&state, &["add", p.to_str().unwrap(), "--json"]);
    assert_eq!(added["added"], "my_fifo@1");
    assert_eq!(added["state"], "candidate");

    let list = ok_json(&state, &["list", "--state", "candidate", "--json"]);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "my_fifo"));

    let hits = ok_json(
        &state,
        &[
            "search",
            "jobs served strictly in arrival order",
            "--limit",
            "3",
            "--json",
        ],
    );
    let names: Vec<&str> = hits["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"my_fifo") || names.contains(&"fifo"),
        "{names:?}"
    );
    assert!(hits["hits"][0]["reason"].as_str().unwrap().contains('#'));

    let show = ok_json(&state, &["show", "my_fifo@1", "--source", "--json"]);
    assert_eq!(show["body"]["source"], SRC);
    let rec = ok_json(
        &state,
        &[
            "record-result",
            "my_fifo",
            "--workload",
            "short_jobs",
            "--metric",
            "makespan",
            "--unit",
            "ms",
            "--direction",
            "lower",
            "--value",
            "90",
            "--baseline",
            "100",
            "--p-value",
            "0.01",
            "--verdict",
            "improved",
            "--json",
        ],
    );
    assert!((rec["result"]["improvement_pct"].as_f64().unwrap() - 10.0).abs() < 1e-9);
    let hist = ok_json(&state, &["history", "my_fifo", "--json"]);
    assert_eq!(hist["results"].as_array().unwrap().len(), 1);

    let export = tmp.path().join("lib.json");
    let out = policy(&state, &["export", "--out", export.to_str().unwrap()]);
    assert!(out.status.success());
    let other = tmp.path().join("other");
    let imp = ok_json(&other, &["import", export.to_str().unwrap(), "--json"]);
    assert_eq!(imp["added"][0][1], "my_fifo@1");
    assert_eq!(imp["results"], 1);
    let again = ok_json(&other, &["import", export.to_str().unwrap(), "--json"]);
    assert!(again["added"].as_array().unwrap().is_empty());

    let text = std::fs::read_to_string(&export)
        .unwrap()
        .replace("A FIFO written by an agent.", "Tampered.");
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, text).unwrap();
    refused(
        &tmp.path().join("third"),
        &["import", bad.to_str().unwrap()],
        "content does not match its hash",
    );
    std::fs::write(&bad, "{\"not\": 1}").unwrap();
    refused(
        &other,
        &["import", bad.to_str().unwrap()],
        "is not a schedcp policy export",
    );
}

#[test]
fn bad_input_is_refused_precisely() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let dir = |n: &str| tmp.path().join(n);

    // (directory, policy.toml and main.bpf.c or None for no directory, expected error).
    type Case<'a> = (&'a str, Option<(String, &'a str)>, &'a str);
    let big = "x".repeat(300 * 1024);
    let cases: &[Case] = &[
        (
            "a",
            Some((
                META.replace("name = \"my_fifo\"", "name = \"../etc/x\""),
                SRC,
            )),
            "plain identifier",
        ),
        (
            "b",
            Some((
                META.replace("name = \"my_fifo\"", "name = \"my.fifo\""),
                SRC,
            )),
            "plain identifier",
        ),
        (
            "c",
            Some((
                META.replace("description = \"A FIFO written by an agent.\"\n", ""),
                SRC,
            )),
            "missing field `description`",
        ),
        (
            "d",
            Some((META.replace("[\"batch\"]", "42"), SRC)),
            "invalid type",
        ),
        (
            "e",
            Some((META.to_string(), &big)),
            "at most 262144 are accepted",
        ),
        (
            "f",
            Some((META.to_string(), "int main(void) { return 0; }")),
            "defines no scheduler",
        ),
        ("missing", None, "cannot read"),
    ];
    for (name, files, want) in cases {
        if let Some((meta, src)) = files {
            write_policy(&dir(name), meta, src);
        }
        refused(&state, &["add", dir(name).to_str().unwrap()], want);
    }
    write_policy(&dir("ok"), META, SRC);
    assert!(policy(&state, &["add", dir("ok").to_str().unwrap()])
        .status
        .success());
    refused(
        &state,
        &["add", dir("ok").to_str().unwrap()],
        "my_fifo@1 already has exactly this content",
    );

    refused(&state, &["show", "nope"], "no policy named 'nope'");
    refused(
        &state,
        &["show", "my_fifo@9"],
        "no version 9; its latest is 1",
    );
    refused(&state, &["show", "../x"], "not a policy name");
    refused(&state, &["search", " "], "the search query is empty");
    refused(
        &state,
        &["search", "x", "--limit", "500"],
        "limit must be 1..=50",
    );
    refused(
        &state,
        &["search", "x", "--state", "live"],
        "candidate, verified, deployed, promoted, retired",
    );
    refused(
        &state,
        &["retire", "my_fifo", "--reason", " "],
        "needs a reason",
    );
    refused(
        &state,
        &[
            "record-result",
            "my_fifo",
            "--workload",
            "w",
            "--metric",
            "makespan",
            "--unit",
            "ms",
            "--direction",
            "lower",
            "--value",
            "120",
            "--baseline",
            "100",
            "--verdict",
            "improved",
        ],
        "contradicts",
    );
    refused(
        &state,
        &[
            "record-result",
            "my_fifo",
            "--workload",
            "w",
            "--metric",
            "makespan",
            "--unit",
            "ms",
            "--direction",
            "sideways",
            "--value",
            "1",
            "--verdict",
            "no_change",
        ],
        "expected one of: lower, higher",
    );
}
