//! The first tier of the decision engine: explainable rules, signature →
//! ranked candidate changes, each with the measured reason that fired it.
//!
//! Like `tuned`'s recommend, but decided from what the workload did, not
//! from process names. Every rule documents its evidence (the kernel
//! mechanism the change acts through); whether it helps *this* workload is
//! what the trials are for — a rule only decides what is worth trying.

use super::candidate::{Candidate, Change, Context, Numeric, Source, Venue};
use crate::knobs::Assignment;
use crate::observe::signature::Signature;

/// One rule: when it fires, what it proposes, and why that can help.
pub struct Rule {
    pub id: &'static str,
    pub title: &'static str,
    /// The mechanism and the sources for it.
    pub evidence: &'static str,
    /// Fires with a strength in 0..1 and the measured reason, or not.
    fire: fn(&Signature) -> Option<(f64, String)>,
    propose: fn(&Signature, &Context) -> Vec<Proposal>,
}

/// A change a rule proposes, before placement.
struct Proposal {
    change: Change,
    numeric: Option<Numeric>,
    /// Relative weight among the rule's proposals.
    weight: f64,
}

fn knobs(profile: Option<&str>, pairs: &[(&str, &str)]) -> Change {
    Change::Knobs {
        knobs: pairs
            .iter()
            .map(|(k, v)| Assignment {
                knob: k.to_string(),
                value: v.to_string(),
                workload: k
                    .starts_with("workload.")
                    .then(|| profile.map(str::to_string))
                    .flatten(),
            })
            .collect(),
    }
}

fn p(change: Change, weight: f64) -> Proposal {
    Proposal {
        change,
        numeric: None,
        weight,
    }
}

fn searched(change: Change, knob: &str, values: &[f64], log: bool, weight: f64) -> Proposal {
    Proposal {
        change,
        numeric: Some(Numeric {
            knob: knob.into(),
            values: values.to_vec(),
            log,
        }),
        weight,
    }
}

fn scheduler(policy: &str) -> Change {
    Change::Scheduler {
        policy: policy.into(),
        tunables: vec![],
    }
}

/// Per-task slices the search may pick, µs (the kernel clamps 100..100000).
const SLICES_US: &[f64] = &[
    100.0, 200.0, 300.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0, 7500.0, 10000.0,
    15000.0, 20000.0, 30000.0, 50000.0,
];

/// Read-ahead windows, KiB.
const READ_AHEAD_KB: &[f64] = &[128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0];

/// Base slices for the lab's fair scheduler, ns.
const BASE_SLICES_NS: &[f64] = &[
    300000.0, 500000.0, 750000.0, 1000000.0, 1500000.0, 2000000.0, 3000000.0, 4000000.0, 6000000.0,
    8000000.0, 12000000.0, 16000000.0,
];

/// Migration costs, ns.
const MIGRATION_COST_NS: &[f64] = &[
    50000.0, 100000.0, 250000.0, 500000.0, 1000000.0, 2000000.0, 5000000.0,
];

pub const RULES: &[Rule] = &[
    Rule {
        id: "cpu-contention",
        title: "Other work competes with the workload for CPU: raise its share",
        evidence: "Under contention the fair scheduler divides a CPU by weight (kernel/sched/core.c sched_prio_to_weight[]: nice 0 = 1024, nice -5 = 3121); a v1 cpu.shares / v2 cpu.weight scales the workload's group the same way (Documentation/admin-guide/cgroup-v2.rst 'cpu.weight'). The signature counts runnable tasks that are not the workload's: when they are there and the workload is preempted and CPU pressure (PSI) or run-queue wait is high, a larger weight buys it their CPU time. When the workload only competes with itself, reweighting all of its tasks changes nobody's share, so the rule stays silent.",
        fire: |s| {
            let psi = s.psi_cpu_pct.unwrap_or(0.0);
            let wait = s.runq_wait_pct.unwrap_or(0.0);
            // At least one CPU's worth of other runnable work, or half the
            // machine's on larger ones: less is sampling noise (tasks
            // starting and ending between the two reads).
            let others = s.others_runnable_mean >= (0.5 * s.cpus as f64).max(1.0);
            let pressed = psi >= 20.0 || wait >= 10.0;
            let preempted = s.involuntary_switches_per_s >= 50.0;
            (others && pressed && preempted).then(|| {
                (
                    (psi.max(wait) / 50.0).clamp(0.3, 1.0),
                    format!(
                        "{:.1} runnable tasks of other work on average next to it on {} CPUs, CPU pressure {psi:.0}% (≥ 20%){}, {:.0} preemptions/s of the workload",
                        s.others_runnable_mean,
                        s.cpus,
                        s.runq_wait_pct
                            .map(|w| format!(", run-queue wait {w:.0}%"))
                            .unwrap_or_default(),
                        s.involuntary_switches_per_s
                    ),
                )
            })
        },
        propose: |_, c| {
            let w = c.profile.as_deref();
            vec![
                p(knobs(w, &[("workload.nice", "-5")]), 1.0),
                p(knobs(w, &[("workload.cpu_weight", "400")]), 0.8),
            ]
        },
    },
    Rule {
        id: "cpu-bound-throughput",
        title: "CPU-bound and rarely sleeps: fewer preemptions, longer slices",
        evidence: "SCHED_BATCH tasks never wakeup-preempt (sched(7); kernel/sched/fair.c check_preempt_wakeup_fair()), and a longer EEVDF request (sched_setattr sched_runtime, 6.12+; kernel/sched/fair.c update_deadline()) means fewer switches and warmer caches for work that only computes. The batch scheduler in the library does the same with long sched_ext slices.",
        fire: |s| {
            let per_cpu_s = s.voluntary_switches_per_s / s.cpu_util.max(0.01);
            (s.mix.cpu_pct >= 60.0 && per_cpu_s < 500.0).then(|| {
                (
                    (s.mix.cpu_pct / 100.0).clamp(0.3, 1.0) * 0.8,
                    format!(
                        "cpu-bound share {:.0}% (≥ 60%), {:.0} sleeps per CPU-second (< 500)",
                        s.mix.cpu_pct, per_cpu_s
                    ),
                )
            })
        },
        propose: |_, c| {
            let w = c.profile.as_deref();
            vec![
                p(knobs(w, &[("workload.policy", "batch")]), 1.0),
                searched(
                    knobs(w, &[("workload.slice_us", "10000")]),
                    "workload.slice_us",
                    &SLICES_US[5..],
                    true,
                    0.8,
                ),
                searched(
                    knobs(None, &[("sched.base_slice_ns", "6000000")]),
                    "sched.base_slice_ns",
                    BASE_SLICES_NS,
                    true,
                    0.5,
                ),
                p(scheduler("batch"), 0.5),
            ]
        },
    },
    Rule {
        id: "wakeup-latency",
        title: "Wakeup-heavy: short slices and a latency-first scheduler",
        evidence: "A task that sleeps and wakes thousands of times a second pays the run-queue wait on every wakeup; a shorter EEVDF request gives it an earlier virtual deadline, so it is picked sooner (Documentation/scheduler/sched-eevdf.rst; kernel/sched/fair.c PREEMPT_SHORT), and the library's latency scheduler dispatches wakers first.",
        fire: |s| {
            (s.mix.wakeup_pct >= 40.0 && s.voluntary_switches_per_s >= 1000.0).then(|| {
                (
                    (s.mix.wakeup_pct / 100.0).clamp(0.3, 1.0),
                    format!(
                        "wakeup share {:.0}% (≥ 40%), {:.0} sleeps/s (≥ 1000), run-queue p99 {}",
                        s.mix.wakeup_pct,
                        s.voluntary_switches_per_s,
                        s.runq_p99_us
                            .map(|v| format!("{v:.0} µs"))
                            .unwrap_or_else(|| "-".into())
                    ),
                )
            })
        },
        propose: |_, c| {
            let w = c.profile.as_deref();
            vec![
                searched(
                    knobs(w, &[("workload.slice_us", "500")]),
                    "workload.slice_us",
                    &SLICES_US[..9],
                    true,
                    1.0,
                ),
                p(scheduler("latency"), 0.7),
                p(scheduler("vtime"), 0.6),
                searched(
                    knobs(None, &[("sched.base_slice_ns", "1000000")]),
                    "sched.base_slice_ns",
                    BASE_SLICES_NS,
                    true,
                    0.4,
                ),
            ]
        },
    },
    Rule {
        id: "migration-heavy",
        title: "Tasks migrate often: make migration look more expensive",
        evidence: "The load balancer treats a task that ran within sched.migration_cost_ns as cache-hot and avoids moving it (kernel/sched/fair.c task_hot()); raising it keeps caches warm when migrations are a large share of switches.",
        fire: |s| {
            let (m, sw) = (s.migrations_per_s?, s.switches_per_s?);
            (sw > 100.0 && m / sw >= 0.2).then(|| {
                (
                    (m / sw).clamp(0.3, 0.8),
                    format!(
                        "{m:.0} migrations/s against {sw:.0} switches/s ({:.0}% ≥ 20%)",
                        100.0 * m / sw
                    ),
                )
            })
        },
        propose: |_, _| {
            vec![searched(
                knobs(None, &[("sched.migration_cost_ns", "2000000")]),
                "sched.migration_cost_ns",
                MIGRATION_COST_NS,
                true,
                1.0,
            )]
        },
    },
    Rule {
        id: "sequential-reads",
        title: "Reads from a block device: a larger read-ahead window",
        evidence: "Read-ahead turns sequential misses into large requests before they are needed (mm/readahead.c; Documentation/ABI/stable/sysfs-block 'read_ahead_kb'); workload block reads (wait4 ru_inblock, page-cache hits excluded) show the device is read.",
        fire: |s| {
            (s.read_mib_per_s >= 5.0).then(|| {
                (
                    (s.read_mib_per_s / 100.0).clamp(0.3, 1.0),
                    format!(
                        "{:.1} MiB/s read from block devices (≥ 5)",
                        s.read_mib_per_s
                    ),
                )
            })
        },
        propose: |_, c| {
            c.devices
                .iter()
                .take(1)
                .map(|d| {
                    let name = format!("block.{d}.read_ahead_kb");
                    searched(
                        knobs(None, &[(name.as_str(), "1024")]),
                        &name,
                        READ_AHEAD_KB,
                        true,
                        1.0,
                    )
                })
                .collect()
        },
    },
    Rule {
        id: "io-scheduler",
        title: "I/O-bound with I/O pressure: try the other I/O schedulers",
        evidence: "mq-deadline bounds request latency with per-direction deadlines; none skips scheduling for fast devices (Documentation/block/deadline-iosched.rst, block/mq-deadline.c). I/O pressure (PSI io 'some') measures time lost waiting for the device.",
        fire: |s| {
            let psi = s.psi_io_pct.unwrap_or(0.0);
            (s.mix.io_pct >= 40.0 && psi >= 10.0).then(|| {
                (
                    (psi / 50.0).clamp(0.3, 1.0),
                    format!(
                        "io share {:.0}% (≥ 40%), I/O pressure {psi:.0}% (≥ 10%)",
                        s.mix.io_pct
                    ),
                )
            })
        },
        propose: |_, c| {
            let Some(d) = c.devices.first() else {
                return vec![];
            };
            let name = format!("block.{d}.scheduler");
            ["none", "mq-deadline"]
                .iter()
                .filter(|v| c.current(&name) != Some(**v))
                .map(|v| p(knobs(None, &[(name.as_str(), v)]), 1.0))
                .collect()
        },
    },
    Rule {
        id: "dirty-writeback",
        title: "Writes a lot: start background writeback earlier",
        evidence: "Dirty pages above vm.dirty_background_ratio start background writeback; above vm.dirty_ratio the writer itself is throttled (mm/page-writeback.c balance_dirty_pages(); Documentation/admin-guide/sysctl/vm.rst). Earlier background writeback smooths bursts into steady I/O.",
        fire: |s| {
            (s.write_mib_per_s >= 5.0).then(|| {
                (
                    (s.write_mib_per_s / 100.0).clamp(0.3, 1.0),
                    format!("{:.1} MiB/s written (≥ 5)", s.write_mib_per_s),
                )
            })
        },
        propose: |_, _| {
            vec![
                p(knobs(None, &[("vm.dirty_background_ratio", "5")]), 1.0),
                p(
                    knobs(
                        None,
                        &[("vm.dirty_background_ratio", "5"), ("vm.dirty_ratio", "40")],
                    ),
                    0.8,
                ),
            ]
        },
    },
    Rule {
        id: "fault-heavy",
        title: "Large and page-fault heavy: transparent huge pages",
        evidence: "A 2 MiB huge page replaces 512 base-page faults and TLB entries (Documentation/admin-guide/mm/transhuge.rst); many minor faults on a large resident set are the cost THP removes.",
        fire: |s| {
            (s.minor_faults_per_s >= 20_000.0 && s.max_rss_mib >= 256.0).then(|| {
                (
                    0.6,
                    format!(
                        "{:.0} minor faults/s (≥ 20000) with {:.0} MiB resident (≥ 256)",
                        s.minor_faults_per_s, s.max_rss_mib
                    ),
                )
            })
        },
        propose: |_, c| {
            ["always", "madvise"]
                .iter()
                .filter(|v| c.current("thp.enabled").is_none_or(|cur| cur != **v))
                .map(|v| p(knobs(None, &[("thp.enabled", v)]), 1.0))
                .collect()
        },
    },
    Rule {
        id: "memory-pressure",
        title: "Memory pressure: keep the working set, reclaim caches first",
        evidence: "vm.swappiness weighs anonymous against file reclaim; lower values reclaim page cache before swapping the working set (mm/vmscan.c get_scan_count(); Documentation/admin-guide/sysctl/vm.rst). PSI memory 'some' measures time lost to reclaim.",
        fire: |s| {
            let psi = s.psi_mem_pct.unwrap_or(0.0);
            (psi >= 5.0).then(|| {
                (
                    (psi / 30.0).clamp(0.3, 1.0),
                    format!("memory pressure {psi:.0}% (≥ 5%)"),
                )
            })
        },
        propose: |_, _| {
            vec![
                p(knobs(None, &[("vm.swappiness", "10")]), 1.0),
                p(knobs(None, &[("vm.vfs_cache_pressure", "50")]), 0.6),
            ]
        },
    },
];

/// A rule that fired, for reports.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct Fired {
    pub rule: String,
    pub title: String,
    pub reason: String,
    pub strength: f64,
}

/// What the rules recommend, and what they proposed but could not place
/// (a knob neither this machine nor the lab allows), with why.
#[derive(Debug, Clone, Default, serde::Serialize, schemars::JsonSchema)]
pub struct Recommendation {
    pub fired: Vec<Fired>,
    pub candidates: Vec<Candidate>,
    pub unplaced: Vec<String>,
}

/// Every rule against `sig`; candidates ranked by strength × weight, the
/// same change proposed twice kept once (with the stronger reason).
pub fn recommend(sig: &Signature, ctx: &Context) -> Recommendation {
    let mut out = Recommendation::default();
    for r in RULES {
        let Some((strength, reason)) = (r.fire)(sig) else {
            continue;
        };
        out.fired.push(Fired {
            rule: r.id.into(),
            title: r.title.into(),
            reason: reason.clone(),
            strength,
        });
        for prop in (r.propose)(sig, ctx) {
            let venue = match &prop.change {
                Change::Knobs { knobs } => {
                    if knobs
                        .iter()
                        .any(|a| a.knob.starts_with("workload.") && a.workload.is_none())
                    {
                        out.unplaced.push(format!(
                            "{} ({}): per-workload knobs need a workload profile",
                            prop.change.describe(),
                            r.id
                        ));
                        continue;
                    }
                    ctx.knob_venue(knobs)
                }
                Change::Scheduler { .. } => ctx.scheduler_venue(),
            };
            let Some(venue) = venue else {
                out.unplaced.push(format!(
                    "{} ({}): {}",
                    prop.change.describe(),
                    r.id,
                    match prop.change {
                        Change::Knobs { .. } =>
                            "this machine does not allow it and the lab cannot trial it",
                        Change::Scheduler { .. } => "no sched_ext here and no lab kernel cached",
                    }
                ));
                continue;
            };
            let score = strength * prop.weight;
            if let Some(prev) = out.candidates.iter_mut().find(|c| c.change == prop.change) {
                if score > prev.score {
                    prev.score = score;
                    prev.reason = reason.clone();
                    prev.source = Source::Rule { rule: r.id.into() };
                }
                continue;
            }
            out.candidates.push(Candidate {
                change: prop.change,
                source: Source::Rule { rule: r.id.into() },
                reason: reason.clone(),
                score,
                evidence: None,
                numeric: prop.numeric,
                venue,
            });
        }
    }
    rank(&mut out.candidates);
    out
}

/// Best first; host trials before lab ones at equal score (they can be
/// applied here).
pub fn rank(c: &mut [Candidate]) {
    c.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then((a.venue != Venue::Host).cmp(&(b.venue != Venue::Host)))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::signature::tests::shaped;
    use std::collections::BTreeMap;

    fn host() -> Context {
        let mut k = BTreeMap::new();
        for (n, v) in [
            ("workload.nice", None),
            ("workload.policy", None),
            ("workload.slice_us", None),
            ("workload.cpu_weight", None),
            ("vm.swappiness", Some("60")),
            ("vm.vfs_cache_pressure", Some("100")),
            ("vm.dirty_ratio", Some("20")),
            ("vm.dirty_background_ratio", Some("10")),
            ("thp.enabled", Some("madvise")),
            ("block.vda.read_ahead_kb", Some("128")),
            ("block.vda.scheduler", Some("mq-deadline")),
        ] {
            k.insert(n.to_string(), v.map(str::to_string));
        }
        Context {
            host_knobs: k,
            devices: vec!["vda".into()],
            host_sched_ext: false,
            lab: true,
            profile: Some("app".into()),
        }
    }

    fn fired(r: &Recommendation) -> Vec<&str> {
        r.fired.iter().map(|f| f.rule.as_str()).collect()
    }

    fn has(r: &Recommendation, what: &str, venue: Venue) -> bool {
        r.candidates
            .iter()
            .any(|c| c.change.describe() == what && c.venue == venue)
    }

    #[test]
    fn contention_proposes_a_larger_share_on_the_host() {
        // One spinning thread, two neighbours: waits a third of the time.
        let mut s = shaped(0.66, 1, 3.0, 400.0, 33.0);
        s.runnable_mean = 3.0;
        s.others_runnable_mean = 2.0;
        let r = recommend(&s, &host());
        assert!(fired(&r).contains(&"cpu-contention"), "{:?}", r.fired);
        assert_eq!(r.candidates[0].change.describe(), "workload.nice=-5");
        assert_eq!(r.candidates[0].venue, Venue::Host);
        assert!(r.candidates[0]
            .reason
            .contains("2.0 runnable tasks of other work"));
        assert!(has(&r, "workload.cpu_weight=400", Venue::Host));
        // The same pressure from its own threads alone: reweighting them all
        // changes nothing, and the rule stays silent.
        s.others_runnable_mean = 0.1;
        s.peak_tasks = 3;
        let r = recommend(&s, &host());
        assert!(!fired(&r).contains(&"cpu-contention"), "{:?}", r.fired);
    }

    #[test]
    fn an_idle_machine_fires_no_contention_rule() {
        let s = shaped(1.0, 1, 3.0, 20.0, 0.5);
        let r = recommend(&s, &host());
        assert!(!fired(&r).contains(&"cpu-contention"), "{:?}", r.fired);
        // But a lone spinner is CPU-bound.
        assert!(fired(&r).contains(&"cpu-bound-throughput"));
        assert!(has(&r, "workload.policy=batch", Venue::Host));
        // The base slice is refused here, so it goes to the lab.
        assert!(has(&r, "sched.base_slice_ns=6000000", Venue::Lab));
        assert!(has(&r, "scheduler batch", Venue::Lab));
        let slice = r
            .candidates
            .iter()
            .find(|c| c.change.describe().starts_with("workload.slice_us"))
            .unwrap();
        assert_eq!(slice.numeric.as_ref().unwrap().knob, "workload.slice_us");
    }

    #[test]
    fn wakeup_heavy_proposes_short_slices_and_latency_schedulers() {
        let s = shaped(0.4, 4, 30_000.0, 200.0, 4.0);
        let r = recommend(&s, &host());
        assert_eq!(fired(&r), vec!["wakeup-latency"]);
        assert!(has(&r, "workload.slice_us=500", Venue::Host));
        assert!(has(&r, "scheduler latency", Venue::Lab));
        // Host trials rank before lab ones.
        assert_eq!(r.candidates[0].venue, Venue::Host);
    }

    #[test]
    fn io_rules_fire_on_block_reads_and_io_pressure() {
        let mut s = shaped(0.1, 1, 800.0, 5.0, 0.0);
        s.read_mib_per_s = 60.0;
        s.psi_io_pct = Some(40.0);
        s.mix = crate::observe::signature::mix(&s);
        let r = recommend(&s, &host());
        assert!(fired(&r).contains(&"sequential-reads"), "{:?}", r.fired);
        assert!(fired(&r).contains(&"io-scheduler"), "{:?}", r.fired);
        assert!(has(&r, "block.vda.read_ahead_kb=1024", Venue::Host));
        // The current scheduler is not proposed again.
        assert!(has(&r, "block.vda.scheduler=none", Venue::Host));
        assert!(!has(&r, "block.vda.scheduler=mq-deadline", Venue::Host));
    }

    #[test]
    fn memory_and_writeback_rules() {
        let mut s = shaped(0.5, 2, 100.0, 10.0, 1.0);
        s.write_mib_per_s = 20.0;
        s.psi_mem_pct = Some(12.0);
        s.minor_faults_per_s = 50_000.0;
        s.max_rss_mib = 1024.0;
        let r = recommend(&s, &host());
        for rule in ["dirty-writeback", "memory-pressure", "fault-heavy"] {
            assert!(fired(&r).contains(&rule), "{rule}: {:?}", r.fired);
        }
        assert!(has(&r, "thp.enabled=always", Venue::Host));
        assert!(!has(&r, "thp.enabled=madvise", Venue::Host));
        assert!(has(&r, "vm.swappiness=10", Venue::Host));
    }

    #[test]
    fn without_a_profile_or_a_lab_candidates_are_unplaced_with_why() {
        let mut ctx = host();
        ctx.profile = None;
        ctx.lab = false;
        let s = shaped(1.0, 1, 3.0, 20.0, 0.5);
        let r = recommend(&s, &ctx);
        assert!(r.candidates.is_empty(), "{:?}", r.candidates);
        assert!(r
            .unplaced
            .iter()
            .any(|u| u.contains("need a workload profile")));
        assert!(r.unplaced.iter().any(|u| u.contains("no lab kernel")));
    }

    #[test]
    fn every_rule_is_documented_and_its_knobs_are_in_the_catalogue() {
        let mut ids = std::collections::HashSet::new();
        let everything = {
            let mut s = shaped(0.5, 2, 5000.0, 500.0, 30.0);
            s.runnable_mean = 4.0;
            s.others_runnable_mean = 2.0;
            s.read_mib_per_s = 50.0;
            s.write_mib_per_s = 50.0;
            s.psi_io_pct = Some(50.0);
            s.psi_mem_pct = Some(50.0);
            s.max_rss_mib = 2048.0;
            s.minor_faults_per_s = 1e5;
            s
        };
        for r in RULES {
            assert!(ids.insert(r.id), "duplicate rule {}", r.id);
            assert!(r.evidence.len() > 80, "{} needs its evidence", r.id);
            for prop in (r.propose)(&everything, &host()) {
                if let Change::Knobs { knobs } = &prop.change {
                    for a in knobs {
                        let k = crate::knobs::catalog::resolve(&a.knob)
                            .unwrap_or_else(|e| panic!("{}: {e}", r.id));
                        crate::knobs::value::canonical(k.knob, &k.name, &a.value)
                            .unwrap_or_else(|e| panic!("{}: {e}", r.id));
                    }
                }
                if let Some(n) = &prop.numeric {
                    let k = crate::knobs::catalog::resolve(&n.knob).unwrap();
                    for v in &n.values {
                        crate::knobs::value::canonical(k.knob, &k.name, &format!("{v}"))
                            .unwrap_or_else(|e| panic!("{}: {v}: {e}", r.id));
                    }
                }
            }
        }
    }
}
