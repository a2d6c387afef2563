//! Issue 17, finding 9: SIGKILL of the daemon at random points of a
//! change-set deploy and of a policy write, N times each. After every
//! kill and restart: the store's integrity check passes, the audit chain
//! verifies, and the node is on its last known-good (the knob is the value
//! of whatever deployment is active, else the host's own).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{self, Daemon};
use crate::knobs::Host;

/// A small deterministic generator, seeded from the clock and printed, so
/// a failing sequence of kill points can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn seed() -> u64 {
    std::env::var("SCHEDCP_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn consistent(d: &Daemon, what: &str) {
    let db = rusqlite::Connection::open(d.dir.path().join("state/schedcp.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "{what}: store integrity");
    let out = d.cli(&["audit", "verify", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{what}: audit chain: {v:#}");
}

fn swappiness() -> String {
    std::fs::read_to_string("/proc/sys/vm/swappiness")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn sigkill_at_random_points_leaves_the_node_consistent() {
    let host = Host::hold();
    let seed = seed();
    eprintln!("fault seed {seed} (SCHEDCP_FAULT_SEED replays it)");
    let mut rng = Lcg(seed);
    let mut d =
        Daemon::start("\n[deploy]\nwindow_s = 1\nactive_check_s = 0\nhealth_poll_ms = 50\n");
    let original = swappiness();
    let started = Instant::now();
    // Change sets: admission, baseline, switch, canary windows, promotion.
    for i in 0..6 {
        let value = if swappiness() == "37" { "23" } else { "37" };
        let mut apply = d.cli_spawn(&[
            "knob",
            "apply",
            &format!("vm.swappiness={value}"),
            "--canary",
            "2",
        ]);
        let at = rng.below(3500);
        std::thread::sleep(Duration::from_millis(at));
        d.crash_and_restart();
        let _ = apply.kill();
        let _ = apply.wait();
        let what = format!("change set {i}, killed at {at} ms");
        consistent(&d, &what);
        let status: Value =
            serde_json::from_slice(&d.cli(&["deploy", "status", "--json"]).stdout).unwrap();
        let now = swappiness();
        match status["current"].as_object() {
            // The node runs its last known-good: the active change's value.
            Some(c) => {
                assert_eq!(c["state"], "active", "{what}: {status:#}");
                assert!(
                    c["knobs"].to_string().contains(&format!("\"{now}\"")),
                    "{what}: swappiness {now} is not the active change's: {status:#}"
                );
            }
            // Nothing active: the host's own value, nothing left changed.
            None => assert_eq!(now, original, "{what}: a knob changed that nothing tracks"),
        }
    }
    // Go back to the host's own value before the policy writes. A rollback
    // goes to the last known-good, which is the previous change set when
    // more than one was promoted, so roll back until nothing is current.
    let mut steps = Vec::new();
    loop {
        let status: Value =
            serde_json::from_slice(&d.cli(&["deploy", "status", "--json"]).stdout).unwrap();
        if status["current"].is_null() {
            break;
        }
        assert!(
            steps.len() < 6,
            "still current after 6 rollbacks: {steps:#?}"
        );
        let out = d.cli(&["deploy", "rollback", "--reason", "fault test done"]);
        assert!(
            out.status.success(),
            "rollback of {}: {}",
            status["current"],
            String::from_utf8_lossy(&out.stderr)
        );
        steps.push(format!("#{} -> {}", status["current"]["id"], swappiness()));
    }
    assert_eq!(
        swappiness(),
        original,
        "the host's own value after rolling back: {steps:?}"
    );
    eprintln!("rolled back to the host's own value: {steps:?}");
    // Policy writes through the API.
    let token = d.token("faults", "propose,observe");
    let source =
        std::fs::read_to_string(common::repo_root().join("schedulers/vtime/main.bpf.c")).unwrap();
    for i in 0..4 {
        let name = format!("fault_{i}");
        let body = json!({"meta": {
            "name": name, "ops_name": "schedcp_vtime",
            "description": "A fair scheduler written while the daemon is killed.",
            "algorithm": "Weighted virtual time.", "target_workloads": ["mixed"], "limitations": [],
        }, "source": source});
        let url = format!("{}/v1/policies", d.url());
        let t = token.clone();
        let writer = std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            agent
                .post(&url)
                .header("Authorization", &format!("Bearer {t}"))
                .header("Content-Type", "application/json")
                .send(body.to_string())
                .map(|r| r.status().as_u16())
        });
        let at = rng.below(2500);
        std::thread::sleep(Duration::from_millis(at));
        d.crash_and_restart();
        let answered = writer.join().unwrap();
        let what = format!("policy write {i}, killed at {at} ms (answered: {answered:?})");
        consistent(&d, &what);
        // All or nothing: an answered 200 means the version is there.
        let shown = d.cli(&["policy", "show", &name, "--json"]);
        if matches!(answered, Ok(200)) {
            assert!(shown.status.success(), "{what}: acknowledged, then lost");
        }
    }
    eprintln!(
        "fault test: 6 change-set kills and 4 policy-write kills in {:.1} s, all consistent",
        started.elapsed().as_secs_f64()
    );
    drop(d);
    host.unchanged();
}
