//! `schedcp tune` on this machine, for real: the bundled workload (a
//! build-like batch next to a noisy neighbour) tuned, the proven winner
//! applied under a canary and rolled back; a change that does nothing
//! kept out; bad input refused before anything changes; Ctrl-C and
//! SIGKILL mid-trial leave the host restored (the kill at the next start).
//!
//! Every test holds the knob tests' [`Host`] guard: the machine's values
//! are snapshotted and written back, also when a test fails.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{self, Daemon, Env};
use crate::knobs::Host;
use serde_json::Value;

fn agent() -> String {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_schedcp"))
        .with_file_name("schedcp-guest")
        .display()
        .to_string()
}

fn tune_json(env: &Env, args: &[&str], code: i32) -> Value {
    // --json before any `--`: after it, everything is the command's.
    let mut full = vec!["--json", "tune"];
    full.extend_from_slice(args);
    let o = env.run(&full);
    assert_eq!(
        o.status.code(),
        Some(code),
        "{full:?}:\n{}",
        common::text(&o)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}", common::text(&o)))
}

/// The journal has no change set left unrestored.
fn journal_clean(env: &Env) {
    let store = schedcp::store::Store::open_in(&env.state()).unwrap();
    let open: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM knob_journal WHERE restored_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(open, 0, "a trial's change set was left unrestored");
}

#[test]
fn a_change_that_does_nothing_is_kept_out() {
    let host = Host::hold();
    let env = Env::new();
    let agent = agent();
    let r = tune_json(
        &env,
        &[
            "--advice",
            "--no-rules",
            "--no-lab",
            "--candidate",
            "vm.vfs_cache_pressure=120",
            "--trials",
            "2",
            "--",
            &agent,
            "workload",
            "batch:short=8,long=1,short_ms=10,long_ms=60",
        ],
        0,
    );
    assert!(r["winner"].is_null(), "{:#}", r["outcomes"]);
    assert!(
        r["decision"]
            .as_str()
            .unwrap()
            .starts_with("keep the current configuration"),
        "{}",
        r["decision"]
    );
    assert!(r["applied"].is_null());
    assert!(r["workload"].as_str().unwrap().starts_with("cmd-"));
    let o = &r["outcomes"][0];
    assert!(
        o["ab"]["candidate"]["values"].as_array().unwrap().len() >= 4,
        "{o:#}"
    );
    journal_clean(&env);
    host.unchanged();
}

#[test]
fn bad_input_is_refused_before_anything_changes() {
    let host = Host::hold();
    let env = Env::new();
    let agent = agent();
    for (args, needle) in [
        (vec!["tune", "--trials", "0"], "trial budget must be"),
        (vec!["tune", "--runs", "2"], "runs must be 4"),
        (vec!["tune", "--budget", "5s"], "time budget must be"),
        (vec!["tune", "--min-effect=-1"], "minimum effect"),
        (
            vec!["tune", "--candidate", "no.such.knob=1"],
            "no.such.knob",
        ),
        (
            vec!["tune", "--candidate", "vm.swappiness=500"],
            "vm.swappiness",
        ),
        (
            vec!["tune", "--scheduler", "nosuch"],
            "not a built-in scheduler",
        ),
        (
            vec!["tune", "no-such-profile", "--advice"],
            "neither a workload profile",
        ),
        (vec!["tune", "a", "b"], "one workload profile at a time"),
        (vec!["tune", "show", "999"], "no finished tune session 999"),
    ] {
        env.fails(&args, 2, needle);
    }
    // A workload that fails: a clear error, nothing tried or applied.
    env.fails(
        &["tune", "--advice", "--", &agent, "workload", "nosuch"],
        2,
        "the workload failed before anything was changed",
    );
    let store = schedcp::store::Store::open_in(&env.state()).unwrap();
    let trials: i64 = store
        .conn()
        .query_row("SELECT count(*) FROM tune_trials", [], |r| r.get(0))
        .unwrap();
    assert_eq!(trials, 0);
    host.unchanged();
}

/// Start a trial of `vm.swappiness=value` and wait until its candidate
/// block has written it.
fn trial_running(env: &Env, value: &str) -> std::process::Child {
    let state = env.state();
    let child = common::schedcp()
        .args([
            "--quiet",
            "tune",
            "--advice",
            "--no-rules",
            "--no-lab",
            "--runs",
            "12",
            "--candidate",
            &format!("vm.swappiness={value}"),
            "--",
            "sleep",
            "0.2",
        ])
        .env("SCHEDCP_STATE", &state)
        .env("SCHEDCP_CONFIG", "/dev/null")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::fs::read_to_string("/proc/sys/vm/swappiness")
        .unwrap()
        .trim()
        != value
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the trial never applied its candidate"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn ctrl_c_restores_at_once_and_a_kill_is_restored_at_the_next_start() {
    let host = Host::hold();
    let env = Env::new();
    let before = std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap();
    let value = if before.trim() == "31" { "33" } else { "31" };

    // Ctrl-C: the trial ends between runs and puts everything back.
    let mut c = trial_running(&env, value);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let t = Instant::now();
    let status = c.wait().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "Ctrl-C took {:?}",
        t.elapsed()
    );
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut c.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap(),
        before
    );
    journal_clean(&env);

    // SIGKILL: nothing runs to restore, so the value stays until the next
    // schedcp start, which restores it from the journal and says so.
    let mut c = trial_running(&env, value);
    c.kill().unwrap();
    c.wait().unwrap();
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/swappiness")
            .unwrap()
            .trim(),
        value
    );
    let o = common::schedcp()
        .args(["tune", "show"])
        .env("SCHEDCP_STATE", env.state())
        .env("SCHEDCP_CONFIG", "/dev/null")
        .output()
        .unwrap();
    let t = common::text(&o);
    assert!(t.contains("restored knobs left by a killed trial"), "{t}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap(),
        before
    );
    journal_clean(&env);
    host.unchanged();
}

/// The tests that must see a significant effect on this host. Other tests'
/// load (compile bombs, VMs) is noise they cannot see through, so
/// `scripts/test.sh` runs them after the rest, one at a time (filter
/// `::quiet::`).
mod quiet {
    use super::*;

    #[test]
    fn the_main_job_proves_applies_and_rolls_back_a_winner_on_a_contended_build() {
        let host = Host::hold();
        // The contended build on this host is bimodal: a run takes ~0.8 s
        // or ~1.6 s (6 of 16 unchanged runs in one session). Two slow canary windows in a row then
        // breach the default 25 % with nothing wrong; the breaker itself is
        // tested in `knobs`. Here it trips only past that mode.
        // Each session is one experiment on a noisy host: one that honestly
        // keeps the current configuration is checked for that honesty, and
        // the experiment repeated on a fresh state, at most three times.
        let mut attempt = 0;
        let (env, r) = loop {
            attempt += 1;
            let env = Env::with_config("[deploy.thresholds]\nworkload_regression_pct = 150\n");
            // Twice the default trial budget: with that tail, 4 runs a side
            // often leave nice -5's improvement unproven. Halving stops as
            // soon as one is proven that nothing left can beat.
            let r = tune_json(&env, &["--trials", "24", "--no-lab", "--canary", "6s"], 0);
            if r["winner"]["knobs"][0]["knob"].is_string() {
                break (env, r);
            }
            let outcomes = r["outcomes"].as_array().unwrap();
            assert!(outcomes.iter().all(|o| o["proven"] == false), "{r:#}");
            assert!(r["applied"].is_null(), "{:#}", r["applied"]);
            journal_clean(&env);
            assert!(attempt < 3, "no winner in 3 sessions: {}", r["decision"]);
        };
        // The contention rule fired on what the signature measured.
        let fired: Vec<&str> = r["fired"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["rule"].as_str().unwrap())
            .collect();
        assert!(fired.contains(&"cpu-contention"), "{:#}", r["fired"]);
        assert!(r["signature"]["others_runnable_mean"].as_f64().unwrap() >= 1.0);
        // A winner only with an interval that clears the minimum effect.
        let winner = r["winner"]["knobs"][0]["knob"].as_str();
        assert!(winner.is_some(), "no winner: {}", r["decision"]);
        let won = r["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["candidate"]["change"] == r["winner"])
            .unwrap();
        let low = won["ab"]["improvement_ci_pct"]["low"].as_f64().unwrap();
        assert!(low >= r["min_effect_pct"].as_f64().unwrap(), "{won:#}");
        assert!(won["ab"]["comparison"]["p_value"].as_f64().unwrap() < 0.05);
        assert_eq!(r["winner_venue"], "host");
        // Applied under its canary, then rolled back at the end of the job.
        assert_eq!(r["applied"]["state"], "active", "{:#}", r["applied"]);
        assert!(
            r["rollback"].as_str().unwrap().contains("rolled back"),
            "{}",
            r["rollback"]
        );
        assert!(r["trials_used"].as_u64().unwrap() <= 24);
        for c in r["charts"].as_array().unwrap() {
            let svg = std::fs::read_to_string(c.as_str().unwrap()).unwrap();
            assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{c}");
        }
        // Recorded: the session's report can be shown again.
        let shown = env.run(&["tune", "show", &r["session"].to_string()]);
        assert!(
            common::text(&shown).contains("decision:"),
            "{}",
            common::text(&shown)
        );
        let st = env.json(&["deploy", "history"], 0);
        assert_eq!(st["deployments"][0]["state"], "rolled_back", "{st:#}");

        // The winning knob set is a library entry: proven (verified), applied
        // past its canary (deployed), its result carrying the signature.
        let lines: Vec<&str> = r["library"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        let name = lines
            .iter()
            .find_map(|l| l.split_once(": added"))
            .map(|(n, _)| n.to_string())
            .unwrap_or_else(|| panic!("no knob set added to the library: {lines:#?}"));
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{name}: now deployed"))),
            "{lines:#?}"
        );
        let h = env.json(&["policy", "history", &name], 0);
        assert_eq!(h["kind"], "knobs");
        assert_eq!(h["origin"], "tune");
        assert_eq!(h["versions"][0]["state"], "deployed", "{h:#}");
        let res = &h["results"][0];
        assert_eq!(
            (res["source"].as_str(), res["verdict"].as_str()),
            (Some("tune"), Some("improved")),
            "{res:#}"
        );
        assert_eq!(
            res["signature"], r["signature"],
            "the result carries the session's signature"
        );
        // The profile keeps the signature too.
        let w = env.json(
            &[
                "observe",
                "workload",
                "show",
                r["workload"].as_str().unwrap(),
            ],
            0,
        );
        assert_eq!(w["signature"]["source"], "tune", "{w:#}");
        assert_eq!(w["signature"]["signature"], r["signature"]);

        // The next tune starts from it: handed back by name, trialled again,
        // its verdict recorded against the same entry (two significant wins
        // while deployed promote it; anything else leaves it deployed).
        let again = tune_json(
            &env,
            &[
                "--advice",
                "--no-rules",
                "--no-lab",
                "--candidate",
                &name,
                "--trials",
                "1",
            ],
            0,
        );
        let o = &again["outcomes"][0];
        assert_eq!(o["candidate"]["change"], r["winner"], "{o:#}");
        let h = env.json(&["policy", "history", &name], 0);
        let results = h["results"].as_array().unwrap();
        assert_eq!(results.len(), 2, "{h:#}");
        let proven_again = results[1]["verdict"] == "improved";
        assert_eq!(
            h["versions"][0]["state"],
            if proven_again { "promoted" } else { "deployed" },
            "{h:#}"
        );
        journal_clean(&env);
        host.unchanged();
    }

    #[test]
    fn continuous_mode_tunes_once_applies_through_the_daemon_and_holds_back_after() {
        let host = Host::hold();
        // The neighbour the bundled workload shares the machine with.
        let neighbour = Neighbour(
            std::process::Command::new("sh")
                .args(["-c", "(while :; do :; done) & while :; do :; done"])
                .process_group(0)
                .spawn()
                .unwrap(),
        );
        let d = Daemon::start(
            "\n[deploy]\nwindow_s = 1\nactive_check_s = 0\nhealth_poll_ms = 50\n\
             [tune.continuous]\nprofile = \"contended\"\ninterval_s = 5\nbudget_trials = 6\n\
             budget_s = 300\ncanary_s = 4\nmin_change_interval_s = 3600\nlab = false\n",
        );
        let o = d.cli(&[
            "observe",
            "workload",
            "add",
            "contended",
            "--cmd",
            "--",
            &agent(),
            "workload",
            schedcp::tune::demo::SPEC,
        ]);
        assert!(o.status.success(), "{}", common::text(&o));
        let history = || -> Value {
            let o = d.cli(&["deploy", "history", "--json"]);
            serde_json::from_slice(&o.stdout).unwrap()
        };
        // Longer than the tuner's budget (300 s) plus its canary: under the
        // load of other tests the trials take the whole budget.
        common::wait_for(
            "continuous mode to apply a change",
            Duration::from_secs(420),
            || {
                history()["deployments"]
                    .as_array()
                    .is_some_and(|v| !v.is_empty())
            },
        );
        common::wait_for("its canary to end", Duration::from_secs(60), || {
            history()["deployments"][0]["state"] != "canary"
        });
        let h = history();
        let dep = &h["deployments"][0];
        assert_eq!(dep["state"], "active", "{h:#}");
        assert_eq!(
            dep["knobs"]["plan"]["workloads"][0]["binding"]["name"], "contended",
            "{dep:#}"
        );
        // The next passes see no drift (or the rate bound): no second change.
        std::thread::sleep(Duration::from_secs(20));
        assert_eq!(
            history()["deployments"].as_array().unwrap().len(),
            1,
            "{:#}",
            history()
        );
        let o = d.cli(&["knob", "rollback", "--reason", "end of the test"]);
        assert!(o.status.success(), "{}", common::text(&o));
        drop(neighbour);
        drop(d);
        host.unchanged();
    }

    /// The busy neighbour's process group, killed on drop, also when the test
    /// fails, so that it cannot load the tests after it.
    struct Neighbour(std::process::Child);
    impl Drop for Neighbour {
        fn drop(&mut self) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.0.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = self.0.wait();
        }
    }
}
