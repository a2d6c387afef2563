//! The README's main command, `schedcp lab demo`, end to end with one run
//! per side: four comparisons in the micro-VM, the best scheduler verified,
//! deployed on a lab node under a canary, and rolled back.

mod common;

use serde_json::Value;

#[test]
fn the_demo_compares_verifies_deploys_and_rolls_back() {
    let state = tempfile::tempdir().unwrap();
    let out = common::schedcp()
        .env("SCHEDCP_STATE", state.path())
        .args(["-q", "lab", "demo", "--runs", "1", "--json"])
        .output()
        .expect("running schedcp lab demo");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", common::text(&out)));
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));

    let comparisons = v["comparisons"].as_array().unwrap();
    assert_eq!(comparisons.len(), 4, "{v:#}");
    for c in comparisons {
        assert_eq!(c["baseline"]["policy"], "default", "{c:#}");
        assert_eq!(
            c["candidate"]["values"].as_array().unwrap().len(),
            1,
            "{c:#}"
        );
    }

    let d = &v["deploy"];
    assert_eq!(d["verify"]["passed"], true, "{d:#}");
    let best = comparisons
        .iter()
        .max_by(|a, b| {
            let k = |c: &Value| c["improvement_pct"].as_f64().unwrap_or(f64::NEG_INFINITY);
            k(a).total_cmp(&k(b))
        })
        .unwrap();
    assert_eq!(
        d["policy"], best["candidate"]["policy"],
        "the best one is deployed"
    );
    let dep = &d["deployment"];
    match dep["state"].as_str() {
        // Passed its canary: the demo rolls it back by hand.
        Some("active") => {
            assert_eq!(d["rollback"]["state"], "rolled_back", "{d:#}");
            assert!(
                d["rollback"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("manual rollback"),
                "{d:#}"
            );
        }
        // The breaker judged the canary: a KPI breach, never an attach or health failure.
        Some("rolled_back") => assert!(
            dep["reason"].as_str().unwrap().contains("KPI breach"),
            "{dep:#}"
        ),
        other => panic!("deployment in state {other:?}: {dep:#}"),
    }
    assert!(
        dep["timings"]["switch_ms"].as_f64().unwrap() > 0.0,
        "{dep:#}"
    );
}
