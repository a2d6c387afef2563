//! Static analysis of real objects: the built-in schedulers must pass with
//! the expected callbacks and ops names, and each bad fixture in
//! tests/schedulers/static/ must fail with its stable finding code.
//! Needs clang-19 (scripts/setup.sh); no kernel, no root-only features.

use std::path::{Path, PathBuf};

use schedcp::bpf::compile::Compiler;
use schedcp::verify::analyze::{analyze, Analysis, Limits, Location, Severity};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Compile `rel` (relative to the repository) like the verifier does and
/// analyse the object with the default limits.
fn analyse(rel: &str) -> Analysis {
    let cache = schedcp::config::Config::default().cache_dir();
    let include = schedcp::bpf::include::include_dir(&cache).expect("header bundle");
    let compiler = Compiler::new("clang-19", include);
    let source = std::fs::read_to_string(repo_root().join(rel)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // schedulers/<name>/main.bpf.c compiles as <name>.bpf.c.
    let path = Path::new(rel);
    let name = match path.file_name().unwrap().to_str().unwrap() {
        "main.bpf.c" => format!(
            "{}.bpf.c",
            path.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
        ),
        other => other.to_string(),
    };
    let obj = compiler
        .compile(&name, &source, dir.path())
        .unwrap_or_else(|e| panic!("compiling {rel}: {e}"));
    let a =
        analyze(&obj.path, &Limits::default()).unwrap_or_else(|e| panic!("analysing {rel}: {e}"));
    // SCHEDCP_ANALYZE_DUMP=1 prints every analysis, to eyeball the report.
    if std::env::var_os("SCHEDCP_ANALYZE_DUMP").is_some() {
        eprintln!("{rel}:\n{}", serde_json::to_string_pretty(&a).unwrap());
    }
    a
}

fn codes(a: &Analysis, severity: Severity) -> Vec<&str> {
    a.findings
        .iter()
        .filter(|f| f.severity == severity)
        .map(|f| f.code.as_str())
        .collect()
}

fn dump(a: &Analysis) -> String {
    serde_json::to_string_pretty(&a.findings).unwrap()
}

#[test]
fn builtin_schedulers_pass() {
    let cases: &[(&str, &[&str])] = &[
        (
            "fifo",
            &["select_cpu", "enqueue", "dispatch", "init", "exit"],
        ),
        (
            "vtime",
            &[
                "select_cpu",
                "enqueue",
                "dispatch",
                "runnable",
                "running",
                "stopping",
            ],
        ),
        ("latency", &["select_cpu", "enqueue", "dispatch"]),
        ("batch", &["select_cpu", "enqueue", "dispatch"]),
    ];
    for (name, callbacks) in cases {
        let a = analyse(&format!("schedulers/{name}/main.bpf.c"));
        assert!(a.passed(), "{name} has errors: {}", dump(&a));
        let ops = a.ops.as_ref().expect("ops");
        assert_eq!(ops.name, format!("schedcp_{name}"));
        assert_eq!(ops.struct_type, "sched_ext_ops");
        assert!(ops.timeout_ms <= 30_000);
        for cb in *callbacks {
            let prog = ops
                .callbacks
                .get(*cb)
                .unwrap_or_else(|| panic!("{name}: ops.{cb} not set: {:?}", ops.callbacks));
            let p = a.program(prog).expect("program of callback");
            assert_eq!(p.callback.as_deref(), Some(*cb));
            assert!(p.insns > 0 && p.overhead_ns > 0.0);
        }
        // Every scx_bpf_* call is resolved to its kernel name.
        let enqueue = a.program(&ops.callbacks["enqueue"]).unwrap();
        assert!(
            enqueue
                .kfuncs
                .iter()
                .any(|k| k.name.starts_with("scx_bpf_dsq_insert")
                    || k.name == "__scx_bpf_dsq_insert_vtime"),
            "{name}: {:?}",
            enqueue.kfuncs
        );
        assert!(a.total_map_bytes > 0 && a.total_map_bytes < 64 << 20);
        eprintln!(
            "{name}: analysed in {:.2} ms, {} programs, {} maps, warnings {:?}",
            a.analysis_ms,
            a.programs.len(),
            a.maps.len(),
            codes(&a, Severity::Warning)
        );
    }
}

#[test]
fn global_dsq_fixture_passes() {
    let a = analyse("tests/schedulers/global_dsq.bpf.c");
    assert!(a.passed(), "{}", dump(&a));
    let ops = a.ops.unwrap();
    assert_eq!(ops.name, "schedcp_global_dsq");
    assert_eq!(ops.timeout_ms, 0);
    assert_eq!(
        ops.callbacks.keys().collect::<Vec<_>>(),
        ["enqueue", "exit"]
    );
}

#[test]
fn forbidden_helpers_are_errors() {
    let a = analyse("tests/schedulers/static/forbidden_helpers.bpf.c");
    assert!(!a.passed());
    for (prog, helper) in [
        ("fh_enqueue", "bpf_probe_write_user"),
        ("fh_running", "bpf_send_signal"),
        ("fh_stopping", "bpf_override_return"),
        ("fh_tick", "bpf_probe_read_kernel"),
    ] {
        let f = a
            .findings
            .iter()
            .find(|f| f.code == "forbidden_helper" && f.location == Location::Program(prog.into()))
            .unwrap_or_else(|| panic!("no forbidden_helper for {prog}: {}", dump(&a)));
        assert_eq!(f.severity, Severity::Error);
        assert!(f.message.contains(helper), "{}", f.message);
    }
}

/// Issue 17, finding 5: a verified scheduler must not be able to copy kernel
/// memory or pointers into its exit text. The fixture passed before the exit
/// exception was narrowed to the exit info's own strings.
#[test]
fn exit_text_leaks_are_errors() {
    let a = analyse("tests/schedulers/static/exit_text_leak.bpf.c");
    assert!(!a.passed());
    let at = |code: &str, prog: &str| -> Vec<String> {
        a.findings
            .iter()
            .filter(|f| f.code == code && f.location == Location::Program(prog.into()))
            .map(|f| f.message.clone())
            .collect()
    };
    // The three UEI_RECORD copies pass; the two other reads do not.
    let exit = at("forbidden_helper", "le_exit");
    assert_eq!(exit.len(), 2, "{}", dump(&a));
    assert!(
        exit.iter()
            .any(|m| m.contains("field `bt` of `struct scx_exit_info`")),
        "{exit:?}"
    );
    assert!(
        exit.iter()
            .any(|m| m.contains("an address the analysis cannot trace")),
        "{exit:?}"
    );
    let enqueue = at("unsafe_format", "le_enqueue");
    assert!(
        enqueue.len() == 1 && enqueue[0].contains("`%s`") && enqueue[0].contains("init is %s"),
        "{}",
        dump(&a)
    );
    let running = at("unsafe_format", "le_running");
    assert!(
        running.len() == 1 && running[0].contains("`%p`"),
        "{}",
        dump(&a)
    );
    let unreached: Vec<_> = a
        .findings
        .iter()
        .filter(|f| f.code == "forbidden_unreached_code")
        .collect();
    assert!(
        unreached.len() == 1
            && unreached[0].severity == Severity::Error
            && unreached[0].message.contains("le_unused_reader")
            && unreached[0].message.contains("bpf_probe_read_kernel,"),
        "{}",
        dump(&a)
    );
}

#[test]
fn giant_map_is_an_error() {
    let a = analyse("tests/schedulers/static/giant_map.bpf.c");
    let f = a
        .findings
        .iter()
        .find(|f| f.code == "map_too_large")
        .unwrap_or_else(|| panic!("{}", dump(&a)));
    assert_eq!(f.location, Location::Map("giant".into()));
    let m = a.maps.iter().find(|m| m.name == "giant").unwrap();
    assert_eq!(m.max_entries, 1 << 30);
    assert_eq!(m.estimated_bytes, 8 << 30);
    assert!(codes(&a, Severity::Error).contains(&"maps_too_large"));
}

#[test]
fn bad_timeout_is_an_error() {
    let a = analyse("tests/schedulers/static/bad_timeout.bpf.c");
    assert_eq!(a.ops.as_ref().unwrap().timeout_ms, 60_000);
    assert_eq!(
        codes(&a, Severity::Error),
        ["timeout_out_of_range"],
        "{}",
        dump(&a)
    );
}

#[test]
fn bad_name_is_an_error() {
    let a = analyse("tests/schedulers/static/bad_name.bpf.c");
    assert_eq!(a.ops.as_ref().unwrap().name, "bad name!");
    assert_eq!(codes(&a, Severity::Error), ["bad_ops_name"], "{}", dump(&a));
}

#[test]
fn missing_struct_ops_is_an_error() {
    let a = analyse("tests/schedulers/static/no_struct_ops.bpf.c");
    assert!(a.ops.is_none());
    let errors = codes(&a, Severity::Error);
    assert!(errors.contains(&"no_struct_ops"), "{}", dump(&a));
    assert!(errors.contains(&"unexpected_program"), "{}", dump(&a));
}

#[test]
fn unknown_and_forbidden_kfuncs_are_errors() {
    let a = analyse("tests/schedulers/static/unknown_kfunc.bpf.c");
    let has = |code: &str, prog: &str, text: &str| {
        a.findings.iter().any(|f| {
            f.code == code
                && f.location == Location::Program(prog.into())
                && f.message.contains(text)
        })
    };
    assert!(
        has("unknown_kfunc", "uk_enqueue", "bpf_foo"),
        "{}",
        dump(&a)
    );
    assert!(
        has("forbidden_kfunc", "uk_running", "bpf_rdonly_cast"),
        "{}",
        dump(&a)
    );
    assert!(
        has("kernel_variable_access", "uk_running", "bpf_prog_active"),
        "{}",
        dump(&a)
    );
}

#[test]
fn loops_are_reported_and_classified() {
    let a = analyse("tests/schedulers/static/loops.bpf.c");
    assert!(a.passed(), "{}", dump(&a));
    let d = a.program("loops_dispatch").unwrap();
    let bounds: Vec<Option<&str>> = d.back_edges.iter().map(|e| e.bound.as_deref()).collect();
    assert!(bounds.contains(&None), "{:?}", d.back_edges);
    assert!(
        bounds.contains(&Some("open-coded iterator")),
        "{:?}",
        d.back_edges
    );
    assert!(
        bounds.contains(&Some("bpf_loop callback")),
        "{:?}",
        d.back_edges
    );
    assert_eq!(d.callbacks, ["visit"]);
    let loop_warnings: Vec<_> = a
        .findings
        .iter()
        .filter(|f| f.code == "unbounded_loop_suspect")
        .collect();
    // One warning for the one plain loop, however many back-edges close it.
    assert_eq!(loop_warnings.len(), 1, "{}", dump(&a));
    assert_eq!(
        loop_warnings[0].location,
        Location::Program("loops_dispatch".into())
    );
    // Loops outside hot callbacks are reported but not warned about.
    assert!(!a.program("loops_init").unwrap().back_edges.is_empty());
}

#[test]
fn damaged_objects_are_refused_not_crashed() {
    let cache = schedcp::config::Config::default().cache_dir();
    let include = schedcp::bpf::include::include_dir(&cache).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source =
        std::fs::read_to_string(repo_root().join("tests/schedulers/global_dsq.bpf.c")).unwrap();
    let obj = Compiler::new("clang-19", include)
        .compile("global_dsq.bpf.c", &source, dir.path())
        .unwrap();
    let good = std::fs::read(&obj.path).unwrap();
    let bad = dir.path().join("bad.o");

    // Not a file, not ELF, truncated.
    assert!(analyze(&dir.path().join("missing.o"), &Limits::default()).is_err());
    std::fs::write(&bad, b"#!/bin/sh\necho hi\n").unwrap();
    assert!(analyze(&bad, &Limits::default()).is_err());
    for len in [16, 64, good.len() / 2, good.len() - 1] {
        std::fs::write(&bad, &good[..len]).unwrap();
        let _ = analyze(&bad, &Limits::default());
    }
    // Oversized objects are refused before they are read.
    let tiny = Limits {
        max_object_bytes: 1024,
        ..Limits::default()
    };
    let e = analyze(&obj.path, &tiny).unwrap_err().to_string();
    assert!(e.contains("limit"), "{e}");
}
