//! Knobs this host refuses (debugfs `sched/`), trialled in the lab VM: the
//! guest writes the set before each candidate run, reads it back, and puts
//! the kernel's values back after it; the host is never touched.

use crate::common;

#[test]
fn host_refused_fair_knobs_are_trialled_in_the_lab_vm() {
    let e = common::Env::new();
    // auto: this host refuses debugfs sched/, so the trial goes to the lab.
    let v = e.json(
        &[
            "knob",
            "trial",
            "sched.base_slice_ns=3000000",
            "sched.features.RUN_TO_PARITY=0",
            "--workload",
            "pingpong:loops=200",
            "--runs",
            "4",
        ],
        0,
    );
    assert_eq!(v["place"], "lab VM", "{v:#}");
    let ab = &v["ab"];
    assert_eq!(ab["setting"]["emulated"], true, "{v:#}");
    // Every run ran, the candidate's with the knobs written and read back.
    for arm in ["baseline", "candidate"] {
        assert_eq!(ab[arm]["values"].as_array().unwrap().len(), 4, "{v:#}");
        assert!(ab[arm]["failures"].as_array().unwrap().is_empty(), "{v:#}");
    }
    assert!(ab["comparison"]["verdict"].is_string(), "{v:#}");
    assert!(
        ab["candidate"]["label"]
            .as_str()
            .unwrap()
            .contains("sched.features.RUN_TO_PARITY=NO_RUN_TO_PARITY"),
        "{v:#}"
    );

    // A value the guest kernel refuses (7.x offers only full and lazy
    // preemption) fails the trial with the kernel's answer, not a verdict.
    let o = e.run(&[
        "knob",
        "trial",
        "sched.preempt=none",
        "--where",
        "lab",
        "--workload",
        "pingpong:loops=200",
        "--runs",
        "4",
    ]);
    let t = common::text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("sched.preempt") && t.contains("Invalid argument"),
        "{t}"
    );

    // The lab has no block devices or workload processes of this machine.
    e.fails(
        &[
            "knob",
            "trial",
            "block.vda.read_ahead_kb=64",
            "--where",
            "lab",
            "--workload",
            "pingpong",
        ],
        2,
        "no block devices",
    );
    e.fails(
        &[
            "knob",
            "trial",
            "vm.swappiness=10",
            "--where",
            "lab",
            "--workload",
            "my-profile",
        ],
        2,
        "built-in workload spec",
    );
}
