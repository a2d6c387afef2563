//! `schedcp tune` with a scheduler an agent wrote: added to the library,
//! handed in as a candidate, trialled in the lab VM against the kernel's
//! default on the workload (emulated timing, said so), and its verdict
//! recorded as a result of that policy for search and promotion.

use crate::common::{self, Env};

#[test]
fn an_agents_own_scheduler_is_trialled_in_the_lab_and_its_verdict_recorded() {
    let e = Env::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::repo_root().join("schedulers/fifo/main.bpf.c"),
        dir.path().join("main.bpf.c"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        "name = \"agent_fifo\"\nops_name = \"schedcp_fifo\"\n\
         description = \"One shared FIFO queue, as an agent's candidate.\"\n\
         algorithm = \"Global FIFO dispatch.\"\n\
         target_workloads = [\"batch\"]\nlimitations = []\n",
    )
    .unwrap();
    let added = e.run(&["policy", "add", dir.path().to_str().unwrap()]);
    assert!(added.status.success(), "{}", common::text(&added));
    let o = e.run(&[
        "--json",
        "tune",
        "pingpong:loops=300",
        "--advice",
        "--no-rules",
        "--scheduler",
        "agent_fifo",
        "--trials",
        "1",
        "--lab-runs",
        "4",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let out = &r["outcomes"][0];
    assert_eq!(out["candidate"]["venue"], "lab", "{r:#}");
    assert_eq!(out["candidate"]["change"]["policy"], "agent_fifo");
    let t = &r["trials"][0];
    assert_eq!(t["ab"]["setting"]["emulated"], true, "{t:#}");
    for arm in ["baseline", "candidate"] {
        assert_eq!(t["ab"][arm]["values"].as_array().unwrap().len(), 4, "{t:#}");
    }
    // A lab verdict is never applied to this host.
    assert!(r["applied"].is_null());
    assert!(
        r["library"][0]
            .as_str()
            .unwrap_or_default()
            .starts_with("agent_fifo: result #"),
        "{:#}",
        r["library"]
    );
    let h = e.json(&["policy", "history", "agent_fifo"], 0);
    let results = h["results"].as_array().unwrap();
    assert!(
        results.iter().any(|x| x["source"] == "tune"),
        "{:#}",
        h["results"]
    );
}
