//! The sandboxed compile of untrusted scheduler sources: tricks that would
//! read host files are refused before clang runs (through the real binary,
//! with the documented exit code), bombs end at the sandbox's limits, a
//! trick the lexical check cannot see is harmless inside the sandbox, and
//! good schedulers still compile.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use schedcp::bpf::compile::{CompileError, Compiler};
use schedcp::bpf::jail::Limits;

fn bad(name: &str) -> String {
    repo_root()
        .join("tests/schedulers/bad")
        .join(name)
        .display()
        .to_string()
}

/// `schedcp lab run --policy FILE`: the compile happens before any VM boots.
fn lab_run(policy: &str) -> (Option<i32>, String, Duration) {
    let t = Instant::now();
    let o = run(&["lab", "run", "--policy", policy, "--workload", "batch"]);
    (o.status.code(), text(&o), t.elapsed())
}

/// Each refused corpus file: where the (first) refusal is and what it says.
const REFUSED: &[(&str, &str, &str)] = &[
    (
        "forbidden_include.bpf.c",
        "8:1: refused `#include <linux/sched.h>`",
        "'linux/sched.h' is not one of the bundled headers",
    ),
    (
        "include_dotdot.bpf.c",
        "8:1: refused `#include \"../../../../../../etc/passwd\"`",
        "'..' in an include path is not allowed",
    ),
    (
        "include_absolute.bpf.c",
        "8:1: refused `#include </etc/shadow>`",
        "absolute include paths are not allowed",
    ),
    (
        "has_include.bpf.c",
        "8:5: refused `__has_include`",
        "they probe the host file system",
    ),
    (
        "embed.bpf.c",
        "9:1: refused `#embed \"/etc/shadow\"`",
        "#embed is not allowed",
    ),
    (
        "incbin.bpf.c",
        "8:5: refused `\".pushsection .rodata.leak, \\\"a\\\"\\n\" \".incbin \\\"/etc/shadow\\\"\\n\" \".popsection\\n\"`",
        "the assembler directive .incbin reads a file into the object",
    ),
    (
        "computed_include.bpf.c",
        "9:1: refused `#include SECRET`",
        "computed includes (#include MACRO) are not allowed",
    ),
    (
        "pragma.bpf.c",
        "8:1: refused `#pragma GCC dependency \"/etc/shadow\"`",
        "allowed pragmas: once, unroll",
    ),
    (
        "obfuscated_include.bpf.c",
        "8:13: refused `%: include </etc/shadow>`",
        "absolute include paths are not allowed",
    ),
];

#[test]
fn tricks_are_refused_before_clang_with_exit_code_4() {
    for (file, at, reason) in REFUSED {
        let (code, out, took) = lab_run(&bad(file));
        assert_eq!(code, Some(4), "{file}:\n{out}");
        let stem = file.trim_end_matches(".bpf.c");
        assert!(
            out.contains(&format!(
                "schedcp: compile: {stem}.bpf.c was refused before compiling"
            )),
            "{file}:\n{out}"
        );
        assert!(
            out.contains(&format!("  {stem}.bpf.c:{at}")),
            "{file}: expected '{at}' in:\n{out}"
        );
        assert!(
            out.contains(reason),
            "{file}: expected '{reason}' in:\n{out}"
        );
        // Every reason says what is allowed instead.
        assert!(
            out.contains("<scx/common.bpf.h>") || out.contains("allowed") || out.contains("may"),
            "{file}:\n{out}"
        );
        assert!(took < Duration::from_secs(20), "{file} took {took:?}");
    }
    // Both pragmas of pragma.bpf.c are listed.
    let (_, out, _) = lab_run(&bad("pragma.bpf.c"));
    assert!(
        out.contains("pragma.bpf.c:9:1: refused `#pragma GCC system_header`"),
        "{out}"
    );
}

/// Refusal happens before clang is even looked at: a compiler that does
/// not exist is never reported.
#[test]
fn refusal_does_not_need_clang() {
    let cache = tempfile::tempdir().unwrap();
    let include = schedcp::bpf::include::include_dir(cache.path()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let c = Compiler::new("/nonexistent/clang", include);
    let src = std::fs::read_to_string(bad("embed.bpf.c")).unwrap();
    match c.compile("embed.bpf.c", &src, work.path()) {
        Err(CompileError::Refused { violations, .. }) => {
            assert_eq!(violations.len(), 1, "{violations:?}");
            assert_eq!((violations[0].line, violations[0].column), (9, 1));
        }
        other => panic!("{other:?}"),
    }
}

/// A trick the lexical check cannot see (the word `incbin` is pasted
/// together by the preprocessor) reaches clang, which runs in the sandbox:
/// its view has no /etc, so the read fails and nothing leaks.
#[test]
fn what_the_check_misses_the_sandbox_stops() {
    let (code, out, _) = lab_run(&bad("pasted_incbin.bpf.c"));
    assert_eq!(code, Some(4), "{out}");
    assert!(
        out.contains("pasted_incbin.bpf.c does not compile"),
        "{out}"
    );
    assert!(
        out.contains("Could not find incbin file '/etc/hostname'"),
        "{out}"
    );
}

/// The memory bomb ends at the default 1 GiB address-space limit, through
/// the binary, with the scheduler-failed exit code.
#[test]
fn memory_bomb_ends_at_the_memory_limit() {
    let (code, out, took) = lab_run(&bad("memory_bomb.bpf.c"));
    assert_eq!(code, Some(4), "{out}");
    assert!(
        out.contains(
            "compiling memory_bomb.bpf.c was stopped: clang ran out of memory under its \
             address-space limit of 1024 MiB (RLIMIT_AS)"
        ),
        "{out}"
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
}

struct Fixture {
    _cache: tempfile::TempDir,
    work: tempfile::TempDir,
    include: PathBuf,
}

fn fixture() -> Fixture {
    let cache = tempfile::tempdir().unwrap();
    let include = schedcp::bpf::include::include_dir(cache.path()).unwrap();
    Fixture {
        _cache: cache,
        work: tempfile::tempdir().unwrap(),
        include,
    }
}

/// The compile bomb ends at the CPU limit (set low here; 60 s by default),
/// and while it burns CPU its clang is inspected from outside: another
/// network namespace, uid nobody, no new privileges, no capabilities, a
/// root directory that is the sandbox.
#[test]
fn compile_bomb_ends_at_the_cpu_limit_in_an_isolated_clang() {
    let f = fixture();
    let limits = Limits {
        cpu_secs: 4,
        wall: Duration::from_secs(60),
        ..Limits::default()
    };
    let c = Compiler::new("clang-19", f.include.clone()).with_limits(limits);
    let src = std::fs::read_to_string(bad("compile_bomb.bpf.c")).unwrap();
    let work = f.work.path().to_path_buf();
    let compile = std::thread::spawn(move || {
        let t = Instant::now();
        (c.compile("compile_bomb.bpf.c", &src, &work), t.elapsed())
    });
    let seen = find_sandboxed_clang("compile_bomb.bpf.c", 4, Duration::from_secs(10));
    let (result, took) = compile.join().unwrap();
    match result {
        Err(CompileError::Limit { name, reason }) => {
            assert_eq!(name, "compile_bomb.bpf.c");
            assert_eq!(
                reason,
                "used up its CPU-time limit of 4 s (RLIMIT_CPU) and was killed"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(took < Duration::from_secs(20), "{took:?}");
    let msg = CompileError::Limit {
        name: "x.bpf.c".into(),
        reason: "r".into(),
    }
    .to_string();
    assert_eq!(msg, "compiling x.bpf.c was stopped: clang r");

    let Some(c) = seen else {
        panic!("never saw the sandboxed clang running")
    };
    assert_ne!(c.net_ns, own_net_ns(), "clang shares our network namespace");
    assert_eq!(c.interfaces, ["lo"]);
    assert!(
        c.status.contains("Uid:\t65534\t65534\t65534\t65534"),
        "{}",
        c.status
    );
    assert!(
        c.status.contains("Gid:\t65534\t65534\t65534\t65534"),
        "{}",
        c.status
    );
    let groups = c.status.lines().find(|l| l.starts_with("Groups:")).unwrap();
    assert_eq!(
        groups["Groups:".len()..].trim(),
        "",
        "supplementary groups kept"
    );
    assert!(c.status.contains("NoNewPrivs:\t1"), "{}", c.status);
    assert!(
        c.status.contains("CapEff:\t0000000000000000"),
        "{}",
        c.status
    );
    assert!(
        c.root.to_string_lossy().contains("schedcp-jail-"),
        "{:?}",
        c.root
    );
    assert_eq!(limit(&c.limits, "Max cpu time"), ["4", "4"], "{}", c.limits);
    assert_eq!(
        limit(&c.limits, "Max address space"),
        ["1073741824", "1073741824"]
    );
    assert_eq!(limit(&c.limits, "Max file size"), ["67108864", "67108864"]);
    assert_eq!(limit(&c.limits, "Max open files"), ["256", "256"]);
    assert_eq!(limit(&c.limits, "Max core file size"), ["0", "0"]);
}

/// The wall-clock deadline holds when the CPU limit does not bite first.
#[test]
fn compile_bomb_ends_at_the_wall_clock_deadline() {
    let f = fixture();
    let c = Compiler::new("clang-19", f.include.clone()).with_limits(Limits {
        wall: Duration::from_secs(2),
        ..Limits::default()
    });
    let src = std::fs::read_to_string(bad("compile_bomb.bpf.c")).unwrap();
    let t = Instant::now();
    match c.compile("compile_bomb.bpf.c", &src, f.work.path()) {
        Err(e @ CompileError::Timeout { .. }) => assert_eq!(
            e.to_string(),
            "compiling compile_bomb.bpf.c took longer than 2 s; clang was killed"
        ),
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(10));
}

/// Every built-in scheduler and the test corpus's valid ones compile in the
/// sandbox; the deliberately broken one still gets clang's diagnostics.
#[test]
fn good_schedulers_compile_in_the_sandbox() {
    let f = fixture();
    let c = Compiler::new("clang-19", f.include.clone());
    let root = repo_root();
    let mut sources: Vec<(String, PathBuf)> = std::fs::read_dir(root.join("schedulers"))
        .unwrap()
        .map(|e| e.unwrap().path().join("main.bpf.c"))
        .filter(|p| p.exists())
        .map(|p| {
            let n = p.parent().unwrap().file_name().unwrap().to_string_lossy();
            (format!("{n}.bpf.c"), p)
        })
        .collect();
    for t in ["global_dsq", "stall", "error_exit", "verifier_reject"] {
        let p = root.join(format!("tests/schedulers/{t}.bpf.c"));
        sources.push((format!("{t}.bpf.c"), p));
    }
    assert!(sources.len() >= 8);
    for (name, path) in &sources {
        let src = std::fs::read_to_string(path).unwrap();
        let obj = c
            .compile(name, &src, f.work.path())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(obj.path, f.work.path().join(format!("{name}.o")));
        let bytes = std::fs::read(&obj.path).unwrap();
        assert_eq!(&bytes[..4], b"\x7fELF");
        assert_eq!(bytes.len() as u64, obj.size_bytes);
    }
    // Median of five compiles of fifo, for the record.
    let fifo = std::fs::read_to_string(root.join("schedulers/fifo/main.bpf.c")).unwrap();
    let mut ms: Vec<f64> = (0..5)
        .map(|_| {
            c.compile("fifo.bpf.c", &fifo, f.work.path())
                .unwrap()
                .compile_ms
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    eprintln!(
        "sandboxed compile of fifo: median {:.0} ms of {ms:.0?}",
        ms[2]
    );

    let broken =
        std::fs::read_to_string(root.join("tests/schedulers/compile_error.bpf.c")).unwrap();
    match c.compile("compile_error.bpf.c", &broken, f.work.path()) {
        Err(e @ CompileError::Diagnostics { .. }) => assert!(
            e.to_string()
                .contains("compile_error.bpf.c:28:17: error: no member named 'no_such_field'"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
}

/// What /proc shows about a running sandboxed clang.
struct Seen {
    net_ns: PathBuf,
    interfaces: Vec<String>,
    status: String,
    root: PathBuf,
    limits: String,
}

fn own_net_ns() -> PathBuf {
    std::fs::read_link("/proc/self/ns/net").unwrap()
}

/// Soft and hard value of one row of /proc/<pid>/limits.
fn limit(limits: &str, row: &str) -> Vec<String> {
    limits
        .lines()
        .find(|l| l.starts_with(row))
        .map(|l| {
            l[row.len()..]
                .split_whitespace()
                .take(2)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Poll /proc for a clang compiling `source` whose root directory is a
/// schedcp sandbox and whose soft CPU limit is `cpu_secs` (other tests'
/// clangs may be running too).
fn find_sandboxed_clang(source: &str, cpu_secs: u64, within: Duration) -> Option<Seen> {
    let start = Instant::now();
    while start.elapsed() < within {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let pid = e.file_name().to_string_lossy().to_string();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let p = Path::new("/proc").join(&pid);
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            if !comm.starts_with("clang") {
                continue;
            }
            let Ok(root) = std::fs::read_link(p.join("root")) else {
                continue;
            };
            if !root.to_string_lossy().contains("schedcp-jail-") {
                continue;
            }
            let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
            if !read("cmdline").contains(source)
                || limit(&read("limits"), "Max cpu time").first() != Some(&cpu_secs.to_string())
            {
                continue;
            }
            let dev = read("net/dev");
            let seen = Seen {
                net_ns: std::fs::read_link(p.join("ns/net")).unwrap_or_default(),
                interfaces: dev
                    .lines()
                    .skip(2)
                    .filter_map(|l| l.split(':').next())
                    .map(|s| s.trim().to_string())
                    .collect(),
                status: read("status"),
                root,
                limits: read("limits"),
            };
            if !seen.status.is_empty() {
                return Some(seen);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}
