//! `schedcp verify` end to end: a corpus of bad schedulers, each rejected at
//! the right stage with the right reason, and good ones that pass and get a
//! token `verify token check` accepts. Boots the sched_ext micro-VM (needs
//! scripts/setup.sh); without it these fail, they do not skip.

use crate::common;

use common::verify_json as verify;

use serde_json::Value;

fn stage<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

/// `target` fails at `stage_name`, with `reason` in that stage's reasons,
/// and every later stage is skipped.
fn rejected_at(target: &str, stage_name: &str, reason: &str) {
    let state = tempfile::tempdir().unwrap();
    let (code, r) = verify(state.path(), target);
    assert_eq!(code, Some(4), "{target}: {r:#}");
    assert_eq!(r["passed"], false);
    assert!(r["token"].is_null());
    let st = stage(&r, stage_name);
    assert_eq!(st["verdict"], "fail", "{target}: {st:#}");
    let reasons = st["reasons"].to_string();
    assert!(reasons.contains(reason), "{target}: {reasons} !~ {reason}");
    let stages = r["stages"].as_array().unwrap();
    let at = stages.iter().position(|s| s["name"] == stage_name).unwrap();
    for later in &stages[at + 1..] {
        assert_eq!(later["verdict"], "skipped", "{target}: {later:#}");
    }
}

fn corpus(path: &str) -> String {
    common::repo_root().join(path).display().to_string()
}

#[test]
fn forbidden_include_is_refused_at_compile() {
    rejected_at(
        &corpus("tests/schedulers/bad/forbidden_include.bpf.c"),
        "compile",
        "include",
    );
}

#[test]
fn compile_bomb_is_stopped_at_compile() {
    rejected_at(
        &corpus("tests/schedulers/bad/compile_bomb.bpf.c"),
        "compile",
        "",
    );
}

#[test]
fn forbidden_helper_fails_static_analysis() {
    rejected_at(
        &corpus("tests/schedulers/static/forbidden_helpers.bpf.c"),
        "static",
        "forbidden_helper",
    );
}

#[test]
fn giant_map_fails_static_analysis() {
    rejected_at(
        &corpus("tests/schedulers/static/giant_map.bpf.c"),
        "static",
        "map_too_large",
    );
}

#[test]
fn out_of_range_timeout_fails_static_analysis() {
    rejected_at(
        &corpus("tests/schedulers/static/bad_timeout.bpf.c"),
        "static",
        "timeout_out_of_range",
    );
}

#[test]
fn unbounded_loop_is_rejected_by_the_kernel_verifier() {
    rejected_at(
        &corpus("tests/schedulers/runtime/unbounded_loop.bpf.c"),
        "kernel",
        "the kernel verifier rejected",
    );
}

#[test]
fn verifier_rejection_carries_the_log() {
    rejected_at(
        &corpus("tests/schedulers/verifier_reject.bpf.c"),
        "kernel",
        "rejected",
    );
}

#[test]
fn a_scheduler_that_stalls_is_caught() {
    rejected_at(
        &corpus("tests/schedulers/stall.bpf.c"),
        "correctness",
        "SCX_EXIT_ERROR_STALL",
    );
}

#[test]
fn a_scheduler_that_dispatches_nothing_is_caught() {
    rejected_at(
        &corpus("tests/schedulers/runtime/dispatch_nothing.bpf.c"),
        "correctness",
        "SCX_EXIT_ERROR_STALL",
    );
}

#[test]
fn a_scheduler_that_starves_a_class_is_caught() {
    rejected_at(
        &corpus("tests/schedulers/runtime/starve_niced.bpf.c"),
        "correctness",
        "starvation",
    );
}

#[test]
fn a_scheduler_calling_scx_bpf_error_is_caught() {
    rejected_at(
        &corpus("tests/schedulers/error_exit.bpf.c"),
        "correctness",
        "SCX_EXIT_ERROR_BPF",
    );
}

/// A good scheduler, entered as an agent's candidate: it passes, its report
/// is kept with the version (which becomes `verified`), and the token checks.
#[test]
fn a_good_scheduler_passes_and_its_token_checks() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("agent_vtime");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        corpus("schedulers/vtime/main.bpf.c"),
        dir.join("main.bpf.c"),
    )
    .unwrap();
    std::fs::write(
        dir.join("policy.toml"),
        "name = \"agent_vtime\"\nops_name = \"schedcp_vtime\"\n\
         description = \"Weighted virtual time, as an agent's candidate.\"\n\
         algorithm = \"Per-task vtime in one shared DSQ.\"\n\
         target_workloads = [\"mixed\"]\nlimitations = []\n",
    )
    .unwrap();
    let cli = |args: &[&str]| {
        common::schedcp()
            .env("SCHEDCP_STATE", state.path())
            .args(args)
            .output()
            .unwrap()
    };
    let added = cli(&["-q", "policy", "add", dir.to_str().unwrap()]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let (code, r) = verify(state.path(), "agent_vtime");
    assert_eq!(code, Some(0), "{r:#}");
    assert_eq!(r["passed"], true);
    assert_eq!(r["policy"], "agent_vtime");
    for s in r["stages"].as_array().unwrap() {
        assert!(s["verdict"] == "pass" || s["verdict"] == "warn", "{s:#}");
    }
    // The comparison ran in one VM: two runs per side.
    let perf = &stage(&r, "performance")["detail"];
    assert_eq!(perf["same_vm"], true, "{perf:#}");
    let cmp = &perf["comparisons"][0];
    // In the comparison engine's shape: every run's value per side, ABBA order.
    assert_eq!(
        cmp["baseline"]["values"].as_array().unwrap().len(),
        2,
        "{cmp:#}"
    );
    assert_eq!(
        cmp["candidate"]["values"].as_array().unwrap().len(),
        2,
        "{cmp:#}"
    );
    assert_eq!(cmp["order"].as_array().unwrap().len(), 4, "{cmp:#}");
    // The report is kept with the version, which is now verified.
    let kept = cli(&["verify", "report", "agent_vtime", "--json"]);
    assert!(kept.status.success());
    let kept: Value = serde_json::from_slice(&kept.stdout).unwrap();
    assert_eq!(kept[0]["passed"], true, "{kept:#}");
    assert_eq!(kept[0]["report"]["token"], r["token"]);
    let shown = cli(&["policy", "show", "agent_vtime", "--json"]);
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["state"], "verified", "{shown:#}");
    assert_eq!(shown["last_verify"]["passed"], true);
    let token = r["token"].as_str().unwrap();
    let sha = r["object_sha256"].as_str().unwrap();
    let object = state.path().join("verified").join(format!("{sha}.bpf.o"));
    assert!(object.exists(), "the verified object is kept");
    let check = |args: &[&str]| {
        common::schedcp()
            .env("SCHEDCP_STATE", state.path())
            .args(args)
            .output()
            .unwrap()
    };
    let ok = check(&[
        "verify",
        "token",
        "check",
        token,
        "--object",
        object.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let v: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["claims"]["ops_name"], "schedcp_vtime");
    assert_eq!(
        v["claims"]["report_sha256"], kept[0]["report_sha256"],
        "the token binds the kept report"
    );

    // Another object: refused, saying whose token it is.
    let other = state.path().join("other.o");
    std::fs::write(&other, b"not the verified object").unwrap();
    let bad = check(&[
        "verify",
        "token",
        "check",
        token,
        "--object",
        other.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("token is for object sha256"));
    // A tampered token: refused.
    let mut t: Vec<char> = token.chars().collect();
    let i = 30;
    t[i] = if t[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = t.into_iter().collect();
    let bad = check(&["verify", "token", "check", &tampered]);
    assert_eq!(bad.status.code(), Some(2));
    // Another machine's key: refused as foreign.
    let elsewhere = tempfile::tempdir().unwrap();
    let foreign = common::schedcp()
        .env("SCHEDCP_STATE", elsewhere.path())
        .args(["verify", "token", "check", token])
        .output()
        .unwrap();
    assert_eq!(foreign.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&foreign.stderr).contains("another schedcp key"),
        "{}",
        String::from_utf8_lossy(&foreign.stderr)
    );
}

#[test]
fn bad_arguments_are_refused() {
    let state = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        common::schedcp()
            .env("SCHEDCP_STATE", state.path())
            .args(args)
            .output()
            .unwrap()
    };
    for (args, want) in [
        (vec!["verify"], "name what to verify"),
        (vec!["verify", "/no/such.bpf.c"], "cannot read"),
        (vec!["verify", "no_such_policy"], "no policy named"),
        (vec!["verify", "x.bpf.c", "--runs", "1"], "--runs must be"),
        (
            vec!["verify", "x.bpf.c", "--workloads", "nope"],
            "unknown workload",
        ),
        (vec!["verify", "token", "check", "v3.local.xyz"], "v3.local"),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
