//! `observe summary` and `observe detail` through the real binary.

use crate::common;

use common::*;

#[test]
fn summary_fits_its_default_budget() {
    let start = std::time::Instant::now();
    let o = run(&["observe", "summary", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tokens = v["tokens"].as_u64().unwrap();
    assert!(tokens > 50 && tokens <= 400, "{tokens}");
    assert!(v["window_s"].as_f64().unwrap() > 0.5);
    assert!(
        v["scheduler"]["active"]
            .as_str()
            .unwrap()
            .contains("kernel default")
            || v["scheduler"]["sched_ext"] == "enabled"
    );
    assert!(start.elapsed().as_secs() < 10);
}

#[test]
fn summary_honours_a_custom_budget_and_window() {
    let o = run(&[
        "observe",
        "summary",
        "--json",
        "--budget",
        "230",
        "--window-ms",
        "200",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["tokens"].as_u64().unwrap() <= 230, "{v}");
}

#[test]
fn bad_summary_and_detail_arguments_are_refused() {
    for (args, needle) in [
        (
            &["observe", "summary", "--budget", "50"][..],
            "--budget must be between 200",
        ),
        (
            &["observe", "summary", "--window-ms", "0"][..],
            "window must be between 10",
        ),
        (
            &["observe", "detail", "tasks", "--limit", "0"][..],
            "--limit must be between 1",
        ),
        (&["observe", "detail", "bogus"][..], "invalid value 'bogus'"),
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(needle), "{args:?}: {}", text(&o));
    }
}

#[test]
fn detail_topics_report_rows() {
    let o = run(&[
        "observe",
        "detail",
        "tasks",
        "--limit",
        "3",
        "--sort",
        "switches",
        "--window-ms",
        "300",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["topic"], "tasks");
    assert!(v["tasks"].as_array().unwrap().len() <= 3);
    let o = run(&["observe", "detail", "cpus", "--json", "--window-ms", "200"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!v["cpus"].as_array().unwrap().is_empty());
}
