//! A scheduler goes back on without a canary (daemon restart, reboot,
//! rollback to the last known-good) only if admission would take it now
//! (issue 17, finding 4): the kernel it was admitted on, its token
//! unexpired and signed by a key this node still trusts, for this object
//! on this kernel. Each case leaves an active deployment in the store of a
//! stopped daemon, starts it, and reads why it did not re-attach.

use crate::common::Daemon;
use schedcp::deploy::record::{self, CanaryPlan, DeployState, NewDeployment, NewScheduler};
use schedcp::store::Store;
use schedcp::verify::token::{Binding, Keys};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;

const OBJECT: &[u8] = b"\x7fELF a scheduler object as deployed";

fn token(keys_dir: &std::path::Path, kernel: &str) -> String {
    Keys::load_or_create(keys_dir)
        .unwrap()
        .issue(
            &Binding {
                policy: "vtime".into(),
                version: 1,
                object_sha256: hex::encode(Sha256::digest(OBJECT)),
                report_sha256: "0".repeat(64),
                kernel_release: kernel.into(),
                ops_name: "vtime_ops".into(),
                sched_ext: true,
            },
            Duration::from_secs(3600),
        )
        .unwrap()
}

/// Stop `d`, leave an active scheduler deployment admitted on `kernel`
/// with `token` (none: not kept), start `d` again; the deployment after
/// the daemon's reconcile.
fn restart_with(d: &mut Daemon, kernel: &str, token: Option<&str>) -> Value {
    let _ = d.child.kill();
    let _ = d.child.wait();
    let state = d.dir.path().join("state");
    let mut store = Store::open_in(&state).unwrap();
    let id = record::insert_canary(
        &mut store,
        &NewDeployment {
            scheduler: Some(NewScheduler {
                policy: "vtime",
                version: 1,
                ops_name: "vtime_ops",
                object: OBJECT,
                token_jti: "jti",
                token: token.unwrap_or(""),
            }),
            knobs: None,
            kernel_release: kernel,
            previous_id: None,
            plan: &CanaryPlan {
                canary_s: 5,
                window_s: 1,
                thresholds: Default::default(),
                workload: None,
            },
            baseline: None,
        },
    )
    .unwrap();
    if token.is_none() {
        // As a deployment recorded before tokens were kept.
        store
            .conn()
            .execute("UPDATE deployments SET token = NULL WHERE id = ?1", [id])
            .unwrap();
    }
    record::transition(
        &mut store,
        id,
        DeployState::Active,
        Some(id),
        "canary_passed",
        "test",
    )
    .unwrap();
    drop(store);
    d.crash_and_restart();
    let o = d.cli(&["deploy", "history", "--json", "--limit", "50"]);
    let h: Value = serde_json::from_slice(&o.stdout).unwrap();
    let dep = h["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id)
        .unwrap()
        .clone();
    let s = d.cli(&["deploy", "status", "--json"]);
    let s: Value = serde_json::from_slice(&s.stdout).unwrap();
    assert!(s["current"].is_null(), "the kernel default runs: {s:#}");
    dep
}

fn reason(dep: &Value) -> &str {
    assert_eq!(dep["state"], "rolled_back", "{dep:#}");
    dep["reason"].as_str().unwrap()
}

#[test]
fn a_scheduler_is_not_put_back_unless_admission_would_take_it_now() {
    let mut d = Daemon::start("");
    let kernel = schedcp::host::kernel_release();
    let own = d.dir.path().join("state");

    // Admitted on another kernel (an upgrade since): not re-attached.
    let dep = restart_with(&mut d, "4.19.0-old", Some(&token(&own, "4.19.0-old")));
    assert!(
        reason(&dep).contains("admitted on kernel 4.19.0-old and this is"),
        "{dep:#}"
    );

    // Its token signed by a key this node does not trust (or no longer).
    let stranger = tempfile::tempdir().unwrap();
    let dep = restart_with(&mut d, &kernel, Some(&token(stranger.path(), &kernel)));
    assert!(
        reason(&dep).contains("deploy token no longer checks out"),
        "{dep:#}"
    );

    // Recorded by an older schedcp, with no token kept.
    let dep = restart_with(&mut d, &kernel, None);
    assert!(reason(&dep).contains("was not kept"), "{dep:#}");

    // A token that still checks out passes re-admission; the attach is
    // then what fails here (this host has no sched_ext), and says so.
    let dep = restart_with(&mut d, &kernel, Some(&token(&own, &kernel)));
    let why = reason(&dep);
    assert!(
        why.contains("could not re-attach after a restart"),
        "{dep:#}"
    );
    assert!(
        !why.contains("token") && !why.contains("admitted on"),
        "{dep:#}"
    );

    // The same kind of token, revoked by the operator: refused
    // (issue 17, finding 8).
    let t = token(&own, &kernel);
    let (claims, _) = schedcp::verify::token::decode_unverified(&t).unwrap();
    let out = d.cli(&[
        "deploy",
        "revoke-token",
        "--jti",
        &claims.jti,
        "--reason",
        "leaked",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = d.cli(&["deploy", "revoke-token", "--jti", "nothex", "--reason", "x"]);
    assert_eq!(bad.status.code(), Some(2));
    let dep = restart_with(&mut d, &kernel, Some(&t));
    assert!(
        reason(&dep).contains(&format!("deploy token {} was revoked", claims.jti))
            && reason(&dep).contains("leaked"),
        "{dep:#}"
    );

    // A good token for a version retired since it was issued: refused, at
    // re-attach as at admission (issue 17, finding 8).
    let out = d.cli(&["policy", "retire", "vtime@1", "--reason", "found wanting"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dep = restart_with(&mut d, &kernel, Some(&token(&own, &kernel)));
    assert!(
        reason(&dep).contains("vtime@1 has been retired since its token was issued"),
        "{dep:#}"
    );
}
