//! The README's main command, `schedcp lab demo`, end to end: four
//! comparisons, each in one micro-VM boot and judged by the comparison
//! engine; a winner only when its improvement is significant, then verified,
//! deployed on a lab node under a canary and rolled back; otherwise the
//! kernel default is kept and nothing is deployed.

use crate::common;

use serde_json::Value;

const RUNS: usize = 4;

#[test]
fn the_demo_compares_and_acts_only_on_a_significant_winner() {
    let state = tempfile::tempdir().unwrap();
    let out = common::schedcp()
        .env("SCHEDCP_STATE", state.path())
        .args(["-q", "lab", "demo", "--runs", &RUNS.to_string(), "--json"])
        .output()
        .expect("running schedcp lab demo");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", common::text(&out)));
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));

    let comparisons = v["comparisons"].as_array().unwrap();
    assert_eq!(comparisons.len(), 4, "{v:#}");
    for c in comparisons {
        assert_eq!(c["baseline"]["label"], "default", "{c:#}");
        for side in ["baseline", "candidate"] {
            assert_eq!(c[side]["values"].as_array().unwrap().len(), RUNS, "{c:#}");
        }
        // Interleaved ABBA in one boot, and the clock it ran on is named.
        assert_eq!(c["order"].as_array().unwrap().len(), 2 * RUNS, "{c:#}");
        assert_eq!(c["setting"]["design"], "interleaved ABBA in one boot");
        assert!(
            c["setting"]["vm"].as_str().unwrap().contains("clock"),
            "{c:#}"
        );
        // Every verdict carries its p-value and interval.
        assert!(c["comparison"]["p_value"].as_f64().is_some(), "{c:#}");
        assert!(c["improvement_ci_pct"]["low"].as_f64().is_some(), "{c:#}");
    }

    let significant: Vec<&Value> = comparisons
        .iter()
        .filter(|c| c["comparison"]["verdict"] == "improved")
        .collect();
    match v["winner"].as_str() {
        None => {
            assert!(
                significant.is_empty(),
                "a significant improvement was not picked: {v:#}"
            );
            assert!(v["deploy"].is_null(), "deployed without a winner: {v:#}");
            assert!(
                v["decision"]
                    .as_str()
                    .unwrap()
                    .contains("keep the kernel default"),
                "{v:#}"
            );
        }
        Some(w) => {
            // The winner is the significant improvement with the largest
            // lower bound of its interval.
            let best = significant
                .iter()
                .max_by(|a, b| {
                    let k = |c: &Value| c["improvement_ci_pct"]["low"].as_f64().unwrap();
                    k(a).total_cmp(&k(b))
                })
                .expect("a winner without a significant improvement");
            assert_eq!(best["candidate"]["label"], w, "{v:#}");
            let d = &v["deploy"];
            assert_eq!(d["verify"]["passed"], true, "{d:#}");
            assert_eq!(d["policy"], w, "the winner is deployed");
            let dep = &d["deployment"];
            match dep["state"].as_str() {
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
                // The breaker judged the canary: a KPI breach, never an
                // attach or health failure.
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
    }
}
