//! Two schedulers (or a scheduler and the kernel default) on one workload,
//! in **one VM boot**: a warm-up run of each side (the first run after boot
//! is an outlier — measured 36% slower on batch under icount:2 — and the
//! candidate's warm-up also proves it loads and attaches; neither value is
//! counted), then runs interleaved ABBA, each scheduler run on a freshly
//! loaded instance. Both sides share the
//! boot, the page cache and the host's noise, and the one comparison engine
//! ([`crate::compare`]) judges the values.

use std::time::Duration;

use schedcp_proto::job::{KnobWrite, PlannedRun};
use schedcp_proto::report::RunRecord;
use schedcp_proto::workload::WorkloadSpec;

use super::report::{LabReport, Outcome};
use super::{Lab, LabRequest, Progress, SchedulerRef};
use crate::compare::{abba, AbReport, Arm, Criteria, Metric, Setting, Side};
use crate::config::Accel;
use crate::error::Error;

/// The most runs a side: beyond this, one boot is an hour of TCG.
pub const MAX_RUNS: usize = 50;

/// Planned runs before the measured ones: the warm-up of the side that is
/// not the job's main scheduler.
const WARMUPS_PLANNED: usize = 1;

/// A scheduler, its tunables and kernel knob settings, as one side of a
/// comparison.
#[derive(Debug, Clone)]
pub struct Contender {
    pub policy: SchedulerRef,
    pub tunables: Vec<(String, String)>,
    /// Kernel knobs set for this side's runs (and put back after each).
    pub knobs: Vec<KnobWrite>,
}

impl Contender {
    pub fn label(&self) -> String {
        let mut l = self.policy.label();
        if !self.tunables.is_empty() {
            let sets: Vec<String> = self
                .tunables
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            l.push_str(&format!("[{}]", sets.join(",")));
        }
        if !self.knobs.is_empty() {
            let sets: Vec<String> = self
                .knobs
                .iter()
                .map(|k| format!("{}={}", k.knob, k.value))
                .collect();
            l.push_str(&format!(" with {}", sets.join(", ")));
        }
        l
    }
}

#[derive(Debug, Clone)]
pub struct CompareRequest {
    pub baseline: Contender,
    pub candidate: Contender,
    pub workload: WorkloadSpec,
    /// Runs a side (besides the warm-up).
    pub runs: usize,
    pub criteria: Criteria,
    pub vcpus: u32,
    pub mem_mib: u32,
    /// Wall-clock limit for one run; the VM's limit is derived from it.
    pub run_timeout: Duration,
    pub accel: Accel,
}

/// A lab comparison: the judged A/B and the boot it ran in.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LabComparison {
    pub ab: AbReport,
    /// The boot: kernel, accelerator and clock, timings, the warm-up run.
    pub lab: LabReport,
}

/// Where each side runs in the guest: no scheduler, the job's own, or the
/// job's first other.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    Default,
    Main,
    Other,
}

impl Lab {
    /// Compare `req.candidate` against `req.baseline` in one boot.
    pub fn compare(
        &self,
        req: &CompareRequest,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<LabComparison, Error> {
        if !(2..=MAX_RUNS).contains(&req.runs) {
            return Err(Error::Input(format!(
                "runs must be between 2 and {MAX_RUNS} a side, got {} (one run a side can never be significant)",
                req.runs
            )));
        }
        let (b_default, c_default) = (
            req.baseline.policy == SchedulerRef::Default,
            req.candidate.policy == SchedulerRef::Default,
        );
        if b_default && c_default && req.baseline.knobs == req.candidate.knobs {
            return Err(Error::Input(
                "both sides are the kernel default with the same knobs: there is nothing to compare".into(),
            ));
        }
        // The job's own scheduler is the candidate's when it has one: the
        // warm-up then attaches the candidate first.
        let (main, mut others, slot_b, slot_c) = match (b_default, c_default) {
            (_, false) => (
                &req.candidate,
                vec![],
                if b_default {
                    Slot::Default
                } else {
                    Slot::Other
                },
                Slot::Main,
            ),
            (false, true) => (&req.baseline, vec![], Slot::Main, Slot::Default),
            // Knobs only: the baseline's run is the job's main one.
            (true, true) => (&req.baseline, vec![], Slot::Main, Slot::Default),
        };
        if slot_b == Slot::Other {
            others.push((req.baseline.policy.clone(), req.baseline.tunables.clone()));
        }
        let order = abba(req.runs);
        // Each side's knobs are one set in the job; a side without knobs
        // runs on the kernel's own settings.
        let mut knob_sets = Vec::new();
        let mut set_of = |c: &Contender| {
            (!c.knobs.is_empty()).then(|| {
                knob_sets.push(c.knobs.clone());
                knob_sets.len() - 1
            })
        };
        let (knobs_b, knobs_c) = (set_of(&req.baseline), set_of(&req.candidate));
        // Without any scheduler the job's main run is the kernel default's.
        let sched_main = !(b_default && c_default);
        let planned = |slot: Slot, knobs: Option<usize>| PlannedRun {
            workload: req.workload.clone(),
            scheduler: slot == Slot::Other || (slot == Slot::Main && sched_main),
            other: (slot == Slot::Other).then_some(0),
            knobs,
        };
        // The main run warms up the job's own side; the first planned run
        // warms up the other side.
        let (main_knobs, other_side) = if slot_c == Slot::Main {
            (knobs_c, (slot_b, knobs_b))
        } else {
            (knobs_b, (slot_c, knobs_c))
        };
        let then: Vec<PlannedRun> = std::iter::once(planned(other_side.0, other_side.1))
            .chain(order.iter().map(|side| match side {
                Side::Baseline => planned(slot_b, knobs_b),
                Side::Candidate => planned(slot_c, knobs_c),
            }))
            .collect();
        // Boot and the warm-ups, then every planned run, each within its limit.
        let runs = 2 + order.len() as u32;
        let timeout = Duration::from_secs(60) + req.run_timeout * runs;
        let lab_req = LabRequest {
            policy: main.policy.clone(),
            tunables: main.tunables.clone(),
            workload: req.workload.clone(),
            then,
            others,
            knob_sets,
            knobs: main_knobs,
            vcpus: req.vcpus,
            mem_mib: req.mem_mib,
            timeout,
            accel: req.accel,
        };
        let lab = self.run(&lab_req, progress)?;
        // The first planned run warms up the side that is not the job's own.
        let warm_side = if slot_c == Slot::Main {
            Side::Baseline
        } else {
            Side::Candidate
        };
        let ab = judge(req, &order, warm_side, &lab);
        Ok(LabComparison { ab, lab })
    }
}

/// Turn the boot's planned runs into the two arms and judge them.
fn judge(req: &CompareRequest, order: &[Side], warm_side: Side, lab: &LabReport) -> AbReport {
    let (mut base, mut cand) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    // The warm-ups: the job's main run, then the first planned run.
    let warmup_failed = lab.outcome != Outcome::Completed && lab.then.len() <= WARMUPS_PLANNED;
    if warmup_failed {
        cand.1
            .push(format!("warm-up run: {}", lab.outcome.summary()));
    }
    // A planned warm-up in trouble stops the plan: its reason is the story.
    if let Some(Err(why)) = lab.then.first().map(value_of) {
        let arm = match warm_side {
            Side::Baseline => &mut base,
            Side::Candidate => &mut cand,
        };
        arm.1.push(format!("warm-up run: {why}"));
    }
    let measured = lab.then.get(WARMUPS_PLANNED..).unwrap_or_default();
    let mut metric = lab
        .guest
        .as_ref()
        .and_then(|g| g.workload.as_ref())
        .and_then(|w| w.primary_metric().cloned());
    for (i, side) in order.iter().enumerate() {
        let arm = match side {
            Side::Baseline => &mut base,
            Side::Candidate => &mut cand,
        };
        match measured.get(i) {
            Some(r) => match value_of(r) {
                Ok(m) => {
                    arm.0.push(m.value);
                    metric.get_or_insert(m);
                }
                Err(why) => arm.1.push(format!("run {}: {why}", i + 1)),
            },
            None if !warmup_failed => arm.1.push(format!(
                "run {}: not run (the plan stopped: {})",
                i + 1,
                lab.outcome.summary()
            )),
            None => {}
        }
    }
    let metric = match metric {
        Some(m) => Metric {
            name: m.name,
            unit: m.unit,
            direction: m.better,
        },
        None => Metric {
            name: req.workload.kind.name().to_string(),
            unit: String::new(),
            direction: schedcp_proto::workload::Better::Lower,
        },
    };
    AbReport::new(
        req.workload.to_string(),
        metric,
        Arm::new(req.baseline.label(), base.0, base.1),
        Arm::new(req.candidate.label(), cand.0, cand.1),
        order.to_vec(),
        Setting::lab(
            "lab VM",
            "interleaved ABBA in one boot",
            &lab.accel.used,
            &lab.accel.clock,
        ),
        req.criteria,
    )
}

fn value_of(r: &RunRecord) -> Result<schedcp_proto::workload::Metric, String> {
    if let Some(why) = r.trouble() {
        return Err(why);
    }
    if let Some(e) = &r.workload_error {
        return Err(e.clone());
    }
    r.workload
        .as_ref()
        .and_then(|w| w.primary_metric().cloned())
        .ok_or_else(|| "the workload reported no metric".into())
}
