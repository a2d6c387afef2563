//! Issue 17, findings 1 and 3: the audit log against a flood of refused
//! callers, a store another process keeps busy, and a full disk — with a
//! real daemon, real HTTP and socket clients, and a real tmpfs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::Daemon;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// A REST call: status, JSON body (or null), Retry-After.
fn rest(
    d: &Daemon,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    let url = format!("{}/v1{path}", d.url());
    let a = agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let r = match method {
        "GET" => {
            let mut req = a.get(&url);
            if let Some(h) = &auth {
                req = req.header("Authorization", h);
            }
            req.call()
        }
        _ => {
            let mut req = a.post(&url).header("Content-Type", "application/json");
            if let Some(h) = &auth {
                req = req.header("Authorization", h);
            }
            req.send(body.unwrap_or(json!({})).to_string())
        }
    };
    let mut r = r.expect("the daemon answers");
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        retry,
    )
}

fn audit_lines(d: &Daemon) -> Vec<String> {
    let p = d.dir.path().join("state/audit.log");
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn verify(d: &Daemon) -> (Option<i32>, Value) {
    let out = d.cli(&["audit", "verify", "--json"]);
    (
        out.status.code(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
    )
}

/// MCP over the daemon's socket, by hand: handshake, initialize, one call.
fn socket_call(socket: &Path, token: &str, tool: &str) -> String {
    let s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    writeln!(w, "SCHEDCP-MCP/1 {token}").unwrap();
    r.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "OK", "handshake: {line}");
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}});
    writeln!(w, "{init}").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    writeln!(
        w,
        "{}",
        json!({"jsonrpc":"2.0","method":"notifications/initialized"})
    )
    .unwrap();
    let call =
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":tool,"arguments":{}}});
    // The daemon may close the connection while a too-long line is written.
    let _ = writeln!(w, "{call}");
    line.clear();
    let _ = r.read_line(&mut line);
    line
}

/// Finding 1: refusals before authentication are written a few times per
/// peer and summarised; a peer that keeps failing is slowed, not a good
/// token from the same address; refused socket users are counted the same
/// way; an unknown tool's name is bounded in the answer and the log.
#[test]
fn refused_callers_cannot_flood_the_audit_log() {
    let mut d = Daemon::start("");
    let good = d.token("good", "observe");
    let before = audit_lines(&d).len();

    // 300 requests with a wrong token from one address.
    let mut unauthorized = 0;
    let mut slowed = 0;
    for _ in 0..300 {
        let (status, body, retry) = rest(&d, "GET", "/system", Some("scp_000000000000_00"), None);
        match status {
            401 => unauthorized += 1,
            429 => {
                slowed += 1;
                assert!(retry.is_some(), "429 without Retry-After: {body}");
                assert!(
                    body["message"]
                        .as_str()
                        .unwrap()
                        .contains("failed authentication too often"),
                    "{body}"
                );
            }
            s => panic!("unexpected {s}: {body}"),
        }
    }
    assert!(
        unauthorized >= 5 && slowed > 0,
        "401s {unauthorized}, 429s {slowed}"
    );
    let added = audit_lines(&d).len() - before;
    assert!(
        added <= 10,
        "300 refused requests added {added} audit entries (expected a few and a summary later)"
    );
    // A good token from the same address is not slowed.
    let (status, body, _) = rest(&d, "GET", "/system", Some(&good), None);
    assert_eq!(status, 200, "{body}");

    // 100 connects by a uid that may not use the socket.
    std::fs::set_permissions(
        d.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let before = audit_lines(&d).len();
    let script = format!(
        "import socket\nfor _ in range(100):\n    s=socket.socket(socket.AF_UNIX)\n    s.connect({:?})\n    s.recv(4096)\n    s.close()\n",
        d.socket().display().to_string()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added = audit_lines(&d).len() - before;
    assert!(
        (1..=6).contains(&added),
        "100 refused socket connects added {added} audit entries"
    );

    // A 3 MB message line: the connection is closed before it is buffered
    // whole (the limit is api.max_request_bytes + 64 KiB, 320 KiB here).
    let answer = socket_call(&d.socket(), &good, &"x".repeat(3 << 20));
    assert_eq!(answer, "", "a 3 MB line was answered");
    // A 200 KB tool name: bounded in the answer and in the log.
    let answer = socket_call(&d.socket(), &good, &"x".repeat(200_000));
    assert!(
        answer.contains("no tool"),
        "{}",
        &answer[..answer.len().min(300)]
    );
    assert!(
        answer.len() < 4096,
        "the answer echoes the name: {} bytes",
        answer.len()
    );
    let longest = audit_lines(&d).iter().map(String::len).max().unwrap();
    assert!(longest < 4096, "an audit line of {longest} bytes");

    // At shutdown the summaries are written, and the chain verifies.
    d.stop();
    let summaries: Vec<Value> = audit_lines(&d)
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["call"] == "audit.refusals")
        .collect();
    let text = serde_json::to_string(&summaries).unwrap();
    assert!(
        text.contains("more 'unauthorized' refusals for 127.0.0.1"),
        "{text}"
    );
    assert!(text.contains("refusals for uid=65534"), "{text}");
    let (code, v) = verify(&d);
    assert_eq!(code, Some(0), "{v}");
}

/// Finding 3a: another process holds the store's write lock longer than
/// SQLite waits (10 s). Calls still answer, their entries are durable, the
/// head catches up afterwards, and no sequence number is used twice.
#[test]
fn a_busy_store_does_not_fork_the_audit_chain() {
    let d = Daemon::start("");
    let token = d.token("busy", "observe");
    assert_eq!(rest(&d, "GET", "/system", Some(&token), None).0, 200);
    let db = rusqlite::Connection::open(d.dir.path().join("state/schedcp.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let held = Instant::now();
    let mut answered = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let (status, body, _) = rest(&d, "GET", "/system", Some(&token), None);
        answered.push((status, t.elapsed().as_secs_f64(), body["message"].clone()));
    }
    std::thread::sleep(Duration::from_secs(12).saturating_sub(held.elapsed()));
    db.execute_batch("COMMIT").unwrap();
    assert!(
        answered.iter().all(|(s, _, _)| *s == 200),
        "calls while the store was busy: {answered:?}"
    );
    assert_eq!(rest(&d, "GET", "/system", Some(&token), None).0, 200);
    let (code, v) = verify(&d);
    assert_eq!(code, Some(0), "the chain forked: {v}");
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fill the filesystem of `dir` to the last byte.
fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![0u8; 64 << 10];
    let mut size = chunk.len();
    while size > 0 {
        match f.write(&chunk[..size]) {
            Ok(0) | Err(_) => size /= 2,
            Ok(_) => {}
        }
    }
    p
}

/// Findings 3b and 3c, and the disk-full test of finding 9: with the state
/// directory on a full 12 MiB tmpfs, calls fail with a clear error, an
/// action with effects is refused before it runs, unauthenticated callers
/// are told the disk is low; once space is freed the daemon answers again,
/// restarts cleanly, and the store and the chain check out.
#[test]
fn a_full_disk_gives_clear_errors_and_the_daemon_restarts_clean() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _tmpfs = Tmpfs::mount(&state, "12m");
    let mut d = Daemon::start_in(dir, "min_free_mib = 1");
    let token = d.token("full", "observe,deploy");
    assert_eq!(rest(&d, "GET", "/system", Some(&token), None).0, 200);
    let filler = fill(&state);

    let mut errors = Vec::new();
    // Within the token's burst (40): the refusals here are the disk's.
    for _ in 0..24 {
        let (status, body, _) = rest(&d, "GET", "/system", Some(&token), None);
        if status != 200 {
            errors.push((status, body["message"].as_str().unwrap_or("").to_string()));
        }
    }
    assert!(!errors.is_empty(), "a full disk never failed a call");
    for (status, m) in &errors {
        assert_eq!(*status, 500);
        assert!(
            m.contains("could not be audited") && m.contains("No space left on device"),
            "{m}"
        );
    }
    // An action with effects is refused before it runs.
    let (status, body, _) = rest(
        &d,
        "POST",
        "/deploy/rollback",
        Some(&token),
        Some(json!({"reason": "disk full test"})),
    );
    assert_eq!(status, 500, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("nothing was done"),
        "{body}"
    );
    // No valid token: told why, and nothing written.
    let (status, body, _) = rest(&d, "GET", "/system", None, None);
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["code"], "disk_low", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("api.min_free_mib"),
        "{body}"
    );

    std::fs::remove_file(&filler).unwrap();
    let (status, body, _) = rest(&d, "GET", "/system", Some(&token), None);
    assert_eq!(status, 200, "{body}");
    d.restart();
    assert_eq!(rest(&d, "GET", "/system", Some(&token), None).0, 200);
    let (code, v) = verify(&d);
    assert_eq!(code, Some(0), "{v}");
    let db = rusqlite::Connection::open(state.join("schedcp.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

/// Finding 2: root profilers from the observe scope are capped (one at a
/// time per token, `api.max_profilers` in all) and never pointed at pid 1,
/// the daemon, or — when the operator says so — other uids.
#[test]
fn observe_profilers_are_capped_and_targets_policed() {
    let d = Daemon::start("max_profilers = 2");
    let tokens: Vec<String> = (0..3)
        .map(|i| d.token(&format!("obs{i}"), "observe"))
        .collect();
    let mut target = std::process::Command::new("sleep")
        .arg("120")
        .uid(65534)
        .gid(65534)
        .spawn()
        .unwrap();
    let pid = target.id();
    let profile = |token: &str, pid: u32| {
        rest(
            &d,
            "POST",
            "/observe/profile",
            Some(token),
            Some(json!({"tool": "perf-stat", "pid": pid, "duration_s": 4})),
        )
    };
    // Same token twice, and a third token while two run: busy, with a retry time.
    let outcomes: Vec<(u16, Value, Option<String>)> = std::thread::scope(|s| {
        let calls: Vec<_> = [&tokens[0], &tokens[0], &tokens[1], &tokens[2]]
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let profile = &profile;
                s.spawn(move || {
                    std::thread::sleep(Duration::from_millis(300 * i as u64));
                    profile(t, pid)
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let statuses: Vec<u16> = outcomes.iter().map(|o| o.0).collect();
    assert_eq!(statuses, [200, 429, 200, 429], "{outcomes:?}");
    assert!(outcomes[1].1["message"]
        .as_str()
        .unwrap()
        .contains("one at a time per token"));
    assert!(outcomes[3].1["message"]
        .as_str()
        .unwrap()
        .contains("the limit is 2"));
    assert!(outcomes[3].2.is_some(), "busy without Retry-After");
    // Targets: pid 1, the daemon itself.
    let (status, body, _) = profile(&tokens[0], 1);
    assert_eq!(status, 403, "{body}");
    let (status, body, _) = profile(&tokens[0], d.child.id());
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("own daemon"),
        "{body}"
    );
    drop(d);
    // Only root's processes may be profiled: the uid-65534 one is refused.
    let d = Daemon::start("observe_uids = [0]");
    let t = d.token("obs", "observe");
    let (status, body, _) = rest(
        &d,
        "POST",
        "/observe/profile",
        Some(&t),
        Some(json!({"tool": "strace-summary", "pid": pid, "duration_s": 1})),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("api.observe_uids"),
        "{body}"
    );
    let _ = target.kill();
    let _ = target.wait();
}

/// Issue 17, finding 6: a propose token owns the policies it creates, and
/// what it may store is bounded; an admin token writes as the operator.
/// Before, any propose token could add versions to any agent's policy, and
/// nothing was counted.
#[test]
fn propose_tokens_own_their_policies_within_quotas() {
    let d = Daemon::start("[policies]\nquota_versions = 2\nquota_results = 1");
    let a = d.token("agent_a", "propose,observe");
    let b = d.token("agent_b", "propose,observe");
    let admin = d.token("operator", "admin");
    let fifo =
        std::fs::read_to_string(crate::common::repo_root().join("schedulers/fifo/main.bpf.c"))
            .unwrap();
    let add = |token: &str, name: &str, n: u32| {
        let meta = json!({
            "name": name, "ops_name": "schedcp_fifo",
            "description": "A global FIFO proposed by an agent, to test ownership.",
            "algorithm": "One shared first-in first-out queue.",
            "target_workloads": ["batch"], "limitations": [],
        });
        let source = format!("/* revision {n} */\n{fifo}");
        rest(
            &d,
            "POST",
            "/policies",
            Some(token),
            Some(json!({"meta": meta, "source": source})),
        )
    };
    let refused = |(status, body, _): (u16, Value, Option<String>), code: &str, needle: &str| {
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["code"], code, "{body}");
        let m = body["message"].as_str().unwrap();
        assert!(m.contains(needle), "{m}");
    };

    let (status, body, _) = add(&a, "qa_sched", 1);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["added"], "qa_sched@1");
    // Another agent may not version it.
    refused(add(&b, "qa_sched", 2), "forbidden", "belongs to API token");
    // Its owner may, up to its quota of versions.
    let (status, body, _) = add(&a, "qa_sched", 2);
    assert_eq!(
        (status, body["added"].as_str()),
        (200, Some("qa_sched@2")),
        "{body}"
    );
    refused(
        add(&a, "qa_other", 1),
        "quota_exceeded",
        "quota_versions = 2",
    );
    // The operator is not an agent: no ownership, no quota.
    let (status, body, _) = add(&admin, "qa_sched", 3);
    assert_eq!(
        (status, body["added"].as_str()),
        (200, Some("qa_sched@3")),
        "{body}"
    );

    let record = |token: &str| {
        let r = json!({
            "policy": "qa_sched@1", "workload": "batch", "metric": "runtime", "unit": "s",
            "direction": "lower", "value": 10.0, "verdict": "no_change",
        });
        rest(&d, "POST", "/policies/results", Some(token), Some(r))
    };
    assert_eq!(record(&a).0, 200);
    refused(record(&a), "quota_exceeded", "quota_results = 1");
    // Quotas are per token.
    assert_eq!(record(&b).0, 200);
}

fn job_state(d: &Daemon, token: &str, id: &str) -> Value {
    let (status, body, _) = rest(d, "GET", &format!("/jobs?id={id}"), Some(token), None);
    assert_eq!(status, 200, "{body}");
    body
}

/// Finding 7: one token cannot fill the job pool (a cap per token), a
/// running job can be cancelled and what it runs is killed at once, and a
/// canary longer than an hour needs the admin scope.
#[test]
fn jobs_are_capped_per_token_cancellable_and_long_canaries_need_admin() {
    let d = Daemon::start("");
    let o = d.cli(&[
        "observe", "workload", "add", "slow", "--cmd", "--json", "--", "sleep", "30",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let token = d.token("prop", "propose,observe");
    let start = || {
        rest(
            &d,
            "POST",
            "/observe/benchmark",
            Some(&token),
            Some(json!({"profile": "slow", "runs": 3})),
        )
    };
    let (status, first, _) = start();
    assert_eq!(status, 200, "{first}");
    let id = first["id"].as_str().unwrap().to_string();
    let (status, second, retry) = start();
    assert_eq!(status, 429, "{second}");
    assert!(
        second["message"]
            .as_str()
            .unwrap()
            .contains("api.max_jobs_per_token"),
        "{second}"
    );
    assert!(retry.is_some());

    let t = Instant::now();
    let (status, body, _) = rest(
        &d,
        "POST",
        "/jobs/cancel",
        Some(&token),
        Some(json!({"id": id})),
    );
    assert_eq!(status, 200, "{body}");
    loop {
        let s = job_state(&d, &token, &id);
        if s["state"] == "cancelled" {
            break;
        }
        assert_eq!(s["state"], "running", "{s}");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "not cancelled within 10 s: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The slot is free again; nothing of the job runs on.
    let (status, body, _) = start();
    assert_eq!(status, 200, "{body}");
    let id2 = body["id"].as_str().unwrap().to_string();
    assert_eq!(
        rest(
            &d,
            "POST",
            "/jobs/cancel",
            Some(&token),
            Some(json!({"id": id2}))
        )
        .0,
        200
    );
    // Another token cannot cancel it (or see it).
    let other = d.token("other", "observe");
    let (status, _, _) = rest(
        &d,
        "POST",
        "/jobs/cancel",
        Some(&other),
        Some(json!({"id": id})),
    );
    assert_eq!(status, 404);

    let deployer = d.token("dep", "deploy");
    let (status, body, _) = rest(
        &d,
        "POST",
        "/deploy",
        Some(&deployer),
        Some(json!({"knobs": [{"knob": "vm.swappiness", "value": "60"}], "canary_s": 7200})),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("needs the admin scope"),
        "{body}"
    );
}

/// Finding 9's load test, small: both doors, mixed calls, no error, a
/// flood that adds a handful of audit entries, the chain intact. (The
/// README's figures are `schedcp bench load` at 32 x 1000.)
#[test]
fn bench_load_runs_clean_on_both_doors() {
    let out = crate::common::schedcp()
        .args(["bench", "load", "--clients", "4", "--calls", "60", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    for d in r["doors"].as_array().unwrap() {
        assert_eq!(d["errors"], 0, "{r:#}");
        assert_eq!(d["calls"], 120, "{r:#}");
    }
    assert_eq!(r["audit_intact"], true);
    assert!(r["flood_requests"].as_u64().unwrap() > 50, "{r:#}");
    assert!(r["flood_audit_entries"].as_u64().unwrap() <= 10, "{r:#}");
}
