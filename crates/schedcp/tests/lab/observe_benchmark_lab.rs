//! A workload profile that runs a lab workload: benchmarked in the micro-VM.

use crate::common::Env;

/// Boots the micro-VM twice.
#[test]
fn lab_profile_benchmark_in_the_micro_vm() {
    let env = Env::new();
    env.json(
        &[
            "observe",
            "workload",
            "add",
            "pp",
            "--lab",
            "pingpong:groups=2,pairs=3,loops=300",
            "--metric",
            "messages_per_s",
        ],
        0,
    );
    let r = env.json(&["observe", "benchmark", "pp", "--runs", "2"], 0);
    assert_eq!(r["values"].as_array().unwrap().len(), 2, "{r:#}");
    assert!(r["values"][0].as_f64().unwrap() > 0.0);
    assert_eq!(r["unit"], "messages/s");
    assert_eq!(r["direction"], "higher");
    assert_eq!(r["label"], "default");
    assert!(
        ["kvm", "tcg"].contains(&r["lab"]["accel"].as_str().unwrap()),
        "{r:#}"
    );
    assert!(!r["lab"]["kernel"].as_str().unwrap().is_empty());
}
