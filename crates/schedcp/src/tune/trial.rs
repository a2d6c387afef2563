//! Knob trials: an A/B of a change set against the current settings, on
//! this machine, with a workload, through the one comparison engine.
//!
//! The runs interleave (ABBA): before each candidate block the change set
//! is applied (journalled before its first write), after it the prior
//! values go back. The host is restored when the trial ends, when a run
//! fails, when the trial is interrupted (Ctrl-C / SIGTERM, checked between
//! runs), and — through the journal — at the next start of any schedcp
//! after a kill. This is the building block the tuner uses.
//!
//! Knobs this machine refuses (debugfs `sched/` here) are trialled in the
//! lab VM instead ([`run_lab`]): both sides in one boot of the sched_ext
//! kernel, the guest writing the set before each candidate run and putting
//! it back after; the host is never touched.

use serde::Serialize;

use crate::compare::{abba, AbReport, Arm, Criteria, Metric, Setting, Side};
use crate::config::Config;
use crate::deploy::deployer::{resolve_workload, workload_binding};
use crate::deploy::kpi::Workload;
use crate::error::Error;
use crate::knobs::{self, journal, Applied, Assignment, Plan};
use crate::store::Store;
use schedcp_proto::job::{KnobKind, KnobWrite};
use schedcp_proto::workload::WorkloadSpec;

/// Runs a side: at least 4, the fewest with which the test can reach
/// p < 0.05; at most 50.
pub const MAX_RUNS: usize = 50;

#[derive(Debug, Clone)]
pub struct TrialRequest {
    pub knobs: Vec<Assignment>,
    /// A workload profile's name or a built-in lab workload spec.
    pub workload: String,
    /// Runs a side (after one warm-up run a side).
    pub runs: usize,
    pub criteria: Criteria,
}

/// Where a trial runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    Host,
    /// The lab micro-VM (the sched_ext kernel): timings are emulated.
    Lab,
    /// The host when it allows every knob, else the lab VM.
    Auto,
}

impl std::str::FromStr for Place {
    type Err = Error;
    fn from_str(s: &str) -> Result<Place, Error> {
        match s {
            "host" => Ok(Place::Host),
            "lab" => Ok(Place::Lab),
            "auto" => Ok(Place::Auto),
            _ => Err(Error::Input(format!(
                "'{s}' is not a trial place: host, lab or auto"
            ))),
        }
    }
}

/// `auto` decided: the host unless one of the knobs is unavailable here
/// (then the lab VM, which has the fair scheduler's debugfs knobs).
pub fn choose_place(req: &TrialRequest, place: Place) -> Result<Place, Error> {
    if place != Place::Auto {
        return Ok(place);
    }
    let m = knobs::discover::Machine::detect();
    for a in &req.knobs {
        // An unknown name is admission's to report, with the others.
        let Ok(r) = knobs::catalog::resolve(&a.knob) else {
            continue;
        };
        if knobs::discover::usable(&m, &r).is_err() {
            return Ok(Place::Lab);
        }
    }
    Ok(Place::Host)
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TrialReport {
    /// The change set as admitted.
    pub knobs: String,
    /// Where it ran: `host` or `lab VM` (emulated timing).
    pub place: String,
    pub ab: AbReport,
    /// Every prior value was written back (false only with a restore error,
    /// which is in `restore_error`).
    pub restored: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_error: Option<String>,
}

/// Progress: run `i` of `n` on `side` finished with `value` (or failed).
pub type OnRun<'a> = &'a (dyn Fn(usize, usize, Side, Result<f64, &str>) + Sync);

/// Check a trial completely before anything changes.
pub fn admit(cfg: &Config, req: &TrialRequest) -> Result<(Plan, Workload), Error> {
    if !(4..=MAX_RUNS).contains(&req.runs) {
        return Err(Error::Input(format!(
            "runs must be 4..={MAX_RUNS} a side, got {}",
            req.runs
        )));
    }
    let plan = knobs::change::admit(&req.knobs, &|w| workload_binding(cfg, w))?;
    let workload = resolve_workload(cfg, &req.workload)?;
    for w in &plan.workloads {
        if workload.profile.as_deref() != Some(w.binding.name.as_str()) {
            return Err(Error::Input(format!(
                "per-workload knobs target profile '{}', but the trial runs '{}': a trial measures the workload whose processes get them",
                w.binding.name, req.workload
            )));
        }
    }
    Ok((plan, workload))
}

/// Run an admitted trial on this machine.
pub fn run_host(
    cfg: &Config,
    plan: Plan,
    workload: &Workload,
    req: &TrialRequest,
    on: OnRun<'_>,
) -> Result<TrialReport, Error> {
    // One trial at a time in this process: two would measure each other.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE
        .try_lock()
        .map_err(|_| Error::Input("another knob trial is running; retry when it ends".into()))?;
    let mut store = Store::open_in(&cfg.state_dir())?;
    // A trial killed earlier left its knobs: put them back first.
    journal::recover(&mut store)?;
    let mut side = Candidate::new(plan.clone(), store);
    let result = interleave(&mut side, workload, req, on);
    let restore = side.restore_now();
    let (values, failures, order) = result?;
    let label = format!("with {}", plan.describe());
    let first = values
        .iter()
        .find_map(|(_, v)| v.as_ref().ok())
        .ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "every run of {} failed: {}",
                workload.describe(),
                failures.first().map(String::as_str).unwrap_or("no run")
            ))
        })?
        .clone();
    let metric = Metric {
        name: first.metric.clone(),
        unit: first.unit.clone(),
        direction: if first.better == "higher" {
            schedcp_proto::workload::Better::Higher
        } else {
            schedcp_proto::workload::Better::Lower
        },
    };
    let pick = |want: Side| -> (Vec<f64>, Vec<String>) {
        let mut v = Vec::new();
        let mut f = Vec::new();
        for (s, r) in &values {
            if *s == want {
                match r {
                    Ok(k) => v.push(k.value),
                    Err(e) => f.push(e.clone()),
                }
            }
        }
        (v, f)
    };
    let (bv, bf) = pick(Side::Baseline);
    let (cv, cf) = pick(Side::Candidate);
    let ab = AbReport::new(
        workload.describe(),
        metric,
        Arm::new("current settings", bv, bf),
        Arm::new(label, cv, cf),
        order,
        Setting::host("interleaved ABBA; the change set applied for each candidate block and restored after it"),
        req.criteria,
    );
    Ok(TrialReport {
        knobs: plan.describe(),
        place: "host".into(),
        ab,
        restored: restore.is_ok(),
        restore_error: restore.err().map(|e| e.to_string()),
    })
}

type Runs = Vec<(Side, Result<crate::deploy::kpi::WorkloadKpi, String>)>;

fn interleave(
    side: &mut Candidate,
    workload: &Workload,
    req: &TrialRequest,
    on: OnRun<'_>,
) -> Result<(Runs, Vec<String>, Vec<Side>), Error> {
    let order = abba(req.runs);
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    // One warm-up run a side: the first run after a change is an outlier
    // (caches, page cache, frequency).
    let warm = [Side::Baseline, Side::Candidate];
    let plan: Vec<(bool, Side)> = warm
        .iter()
        .map(|s| (true, *s))
        .chain(order.iter().map(|s| (false, *s)))
        .collect();
    let total = order.len();
    let mut i = 0;
    for (warmup, s) in plan {
        if crate::host::interrupt::requested() {
            return Err(Error::Input(
                "the trial was interrupted; every knob is being restored".into(),
            ));
        }
        let hook = side.set(s)?;
        let r = workload.run_with(hook.as_ref()).map_err(|e| e.to_string());
        if warmup {
            continue;
        }
        i += 1;
        on(
            i,
            total,
            s,
            r.as_ref().map(|k| k.value).map_err(String::as_str),
        );
        if let Err(e) = &r {
            failures.push(e.clone());
        }
        runs.push((s, r));
    }
    Ok((runs, failures, order))
}

/// The change set's state during a trial: applied for candidate runs,
/// restored for baseline runs and at the end, journalled throughout.
struct Candidate {
    plan: Plan,
    store: Store,
    applied: Option<(Applied, i64)>,
}

impl Candidate {
    fn new(plan: Plan, store: Store) -> Candidate {
        Candidate {
            plan,
            store,
            applied: None,
        }
    }

    /// Put the machine on `side`; for the candidate, what its workload's
    /// child applies to itself.
    fn set(&mut self, side: Side) -> Result<Option<knobs::SpawnHook>, Error> {
        match side {
            Side::Baseline => {
                self.restore_now()?;
                Ok(None)
            }
            Side::Candidate => {
                if self.applied.is_none() {
                    let mut id = None;
                    let store = &mut self.store;
                    let mut persist = |a: &Applied| -> Result<(), Error> {
                        match id {
                            None => id = Some(journal::begin(store, "trial", a)?),
                            Some(i) => journal::save(store, i, a)?,
                        }
                        Ok(())
                    };
                    let a = Applied::apply(self.plan.clone(), &mut persist);
                    let id = id.expect("persist runs before the first write");
                    match a {
                        Ok(a) => self.applied = Some((a, id)),
                        Err(e) => {
                            let _ = journal::finish(&mut self.store, id, "apply failed; undone");
                            return Err(e);
                        }
                    }
                }
                let (a, _) = self.applied.as_ref().expect("just applied");
                match a.plan.workloads.first() {
                    Some(w) => a.spawn_hook(&w.binding.name),
                    None => Ok(None),
                }
            }
        }
    }

    fn restore_now(&mut self) -> Result<(), Error> {
        let Some((a, id)) = self.applied.take() else {
            return Ok(());
        };
        let r = a.restore();
        let outcome = match &r {
            Ok(()) => "restored".to_string(),
            Err(e) => format!("restore failed: {e}"),
        };
        journal::finish(&mut self.store, id, &outcome)?;
        r
    }
}

impl Drop for Candidate {
    /// A panic or early return still puts the machine back.
    fn drop(&mut self) {
        if let Err(e) = self.restore_now() {
            tracing::error!("restoring knobs after a trial: {e}");
        }
    }
}

/// A knob trial in the lab VM, checked before anything boots: system-wide
/// knobs only (the VM has neither the workload's processes nor this
/// machine's block devices), values in their safe ranges, a built-in
/// workload spec. Availability is the guest kernel's to decide: a knob it
/// refuses fails the trial with the kernel's reason.
pub fn admit_lab(req: &TrialRequest) -> Result<(Vec<KnobWrite>, WorkloadSpec), Error> {
    if !(4..=MAX_RUNS).contains(&req.runs) {
        return Err(Error::Input(format!(
            "runs must be 4..={MAX_RUNS} a side, got {}",
            req.runs
        )));
    }
    if req.knobs.is_empty() {
        return Err(Error::Input("an empty change set changes nothing".into()));
    }
    let workload: WorkloadSpec = req.workload.parse().map_err(|e| {
        Error::Input(format!(
            "a lab trial runs a built-in workload spec (`schedcp lab workloads`), not '{}': {e}",
            req.workload
        ))
    })?;
    let mut refusals = Vec::new();
    let mut writes = Vec::new();
    for a in &req.knobs {
        let r = match knobs::catalog::resolve(&a.knob) {
            Ok(r) => r,
            Err(e) => {
                refusals.push(e.to_string());
                continue;
            }
        };
        if r.knob.scope != knobs::catalog::Scope::System {
            refusals.push(format!(
                "{} is not system-wide: the lab VM has no {} to apply it to; trial it on the host",
                r.name,
                if r.knob.scope == knobs::catalog::Scope::Device {
                    "block devices"
                } else {
                    "workload processes"
                }
            ));
            continue;
        }
        match knobs::value::canonical(r.knob, &r.name, &a.value) {
            Ok(v) => writes.push((r, v)),
            Err(e) => refusals.push(e.to_string()),
        }
    }
    if !refusals.is_empty() {
        return Err(Error::Input(format!(
            "change set refused, nothing was run:\n  - {}",
            refusals.join("\n  - ")
        )));
    }
    writes.sort_by_key(|(r, _)| knobs::change::write_order(r));
    Ok((
        writes
            .into_iter()
            .map(|(r, v)| {
                let path = r.path().expect("system knobs have a file");
                let (kind, value) = match r.knob.access {
                    knobs::catalog::Access::Feature => {
                        let flag = r.knob.feature.clone().expect("checked by the catalogue");
                        let value = if v == "1" {
                            flag.clone()
                        } else {
                            format!("NO_{flag}")
                        };
                        (KnobKind::Feature { flag }, value)
                    }
                    knobs::catalog::Access::Selector => (KnobKind::Selector, v),
                    _ => (KnobKind::File, v),
                };
                KnobWrite {
                    knob: r.name,
                    path,
                    kind,
                    value,
                }
            })
            .collect(),
        workload,
    ))
}

/// Run an admitted lab trial: the kernel's settings against the change
/// set, one boot, ABBA.
pub fn run_lab(
    cfg: &Config,
    writes: Vec<KnobWrite>,
    workload: WorkloadSpec,
    req: &TrialRequest,
    progress: &mut dyn FnMut(crate::lab::Progress<'_>),
) -> Result<TrialReport, Error> {
    use crate::lab::compare::{CompareRequest, Contender};
    use crate::lab::{Lab, SchedulerRef};
    let describe = writes
        .iter()
        .map(|w| format!("{}={}", w.knob, w.value))
        .collect::<Vec<_>>()
        .join(", ");
    let creq = CompareRequest {
        baseline: Contender {
            policy: SchedulerRef::Default,
            tunables: Vec::new(),
            knobs: Vec::new(),
        },
        candidate: Contender {
            policy: SchedulerRef::Default,
            tunables: Vec::new(),
            knobs: writes,
        },
        workload,
        runs: req.runs,
        criteria: req.criteria,
        vcpus: cfg.lab.vcpus,
        mem_mib: cfg.lab.mem_mib,
        run_timeout: std::time::Duration::from_secs(cfg.lab.timeout_s),
        accel: cfg.lab.accel,
    };
    let cmp = Lab::new(cfg.clone()).compare(&creq, progress)?;
    Ok(TrialReport {
        knobs: describe,
        place: "lab VM".into(),
        ab: cmp.ab,
        // The VM is gone; this machine was never changed.
        restored: true,
        restore_error: None,
    })
}
