//! Change sets: knob assignments, system-wide and per workload, admitted,
//! applied and restored as one.
//!
//! - [`admit`] checks everything before anything changes: the knob is in
//!   the catalogue, exists and is writable here, the value is in its safe
//!   range. Every refusal is listed; a refused set changes nothing.
//! - [`Applied::apply`] snapshots the prior values, hands the snapshot to
//!   the caller to persist *before the first write*, writes in a defined
//!   order (fair, memory, block; then workloads), reads each value back, and
//!   on any failure restores everything already written.
//! - [`Applied::restore`] puts the snapshot back, in reverse order, except
//!   knobs an operator took over ([`Applied::release`]).

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;

use serde::{Deserialize, Serialize};

use super::catalog::{self, Access, Attribute, Resolved, Scope};
use super::cgroup::{self, Hierarchy};
use super::discover::{self, Machine};
use super::task::{self, Prior, SelfApply, TaskSettings};
use super::{sysfs, value};
use crate::error::Error;

/// Most assignments in one change set.
pub const MAX_ASSIGNMENTS: usize = 64;

/// One knob assignment as every door takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// A catalogue name (`vm.swappiness`, `block.vda.read_ahead_kb`,
    /// `workload.nice`).
    pub knob: String,
    pub value: String,
    /// For `workload.*` knobs: the workload profile whose processes get it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
}

impl Assignment {
    /// `NAME=VALUE` as the CLI writes it.
    pub fn parse(spec: &str, workload: Option<&str>) -> Result<Assignment, Error> {
        let (k, v) = spec.split_once('=').ok_or_else(|| {
            Error::Input(format!(
                "'{spec}' is not NAME=VALUE (e.g. vm.swappiness=10, workload.nice=5)"
            ))
        })?;
        let knob = k.trim().to_string();
        Ok(Assignment {
            workload: knob
                .starts_with("workload.")
                .then(|| workload.map(str::to_string))
                .flatten(),
            knob,
            value: v.trim().to_string(),
        })
    }
}

/// A workload a change set targets: its profile's name and command line
/// (the processes whose argv matches it, and their descendants, are its
/// processes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkloadBinding {
    pub name: String,
    pub argv: Vec<String>,
}

/// One system-wide or per-device knob with its checked value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Planned {
    pub knob: String,
    pub value: String,
}

/// One cgroup knob of a workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CgroupPlanned {
    pub knob: String,
    /// The file in this machine's hierarchy.
    pub file: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkloadPlan {
    pub binding: WorkloadBinding,
    pub task: TaskSettings,
    /// Task knob names with their values, for reports.
    pub task_knobs: Vec<Planned>,
    pub cgroup: Vec<CgroupPlanned>,
}

/// An admitted change set: checked values in write order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Plan {
    pub system: Vec<Planned>,
    pub workloads: Vec<WorkloadPlan>,
    pub cgroup: Option<Hierarchy>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.system.is_empty() && self.workloads.is_empty()
    }

    /// `vm.swappiness=10, workload.nice=5 (web)`.
    pub fn describe(&self) -> String {
        self.managed()
            .iter()
            .map(|p| match p.knob.split_once('@') {
                Some((k, w)) => format!("{k}={} ({w})", p.value),
                None => format!("{}={}", p.knob, p.value),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every knob this plan manages with the value it writes (workload
    /// knobs named `NAME@PROFILE`).
    pub fn managed(&self) -> Vec<Planned> {
        let mut v = self.system.clone();
        for w in &self.workloads {
            let cg = w.cgroup.iter().map(|c| (&c.knob, &c.value));
            for (k, val) in w.task_knobs.iter().map(|p| (&p.knob, &p.value)).chain(cg) {
                v.push(Planned {
                    knob: format!("{k}@{}", w.binding.name),
                    value: val.clone(),
                });
            }
        }
        v
    }

    /// Every knob name this plan manages.
    pub fn knob_names(&self) -> Vec<String> {
        self.managed().into_iter().map(|p| p.knob).collect()
    }
}

/// The defined write order: fair, memory, block; within a group the
/// selectors first, because switching one resets others (a new I/O
/// scheduler puts nr_requests back to its default); then by name.
pub fn write_order(r: &Resolved) -> (u8, bool, String) {
    (
        r.knob.group as u8,
        r.knob.access != Access::Selector,
        r.name.clone(),
    )
}

/// Check a change set completely. `bind` resolves a workload profile name
/// to its command line (the caller owns the profiles).
pub fn admit(
    set: &[Assignment],
    bind: &dyn Fn(&str) -> Result<WorkloadBinding, Error>,
) -> Result<Plan, Error> {
    if set.is_empty() {
        return Err(Error::Input(
            "an empty change set changes nothing; give NAME=VALUE assignments".into(),
        ));
    }
    if set.len() > MAX_ASSIGNMENTS {
        return Err(Error::Input(format!(
            "a change set holds at most {MAX_ASSIGNMENTS} assignments, got {}",
            set.len()
        )));
    }
    let machine = Machine::detect();
    let mut refusals = Vec::new();
    let mut system: Vec<(Resolved, String)> = Vec::new();
    let mut per_workload: BTreeMap<String, Vec<(Resolved, String)>> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for a in set {
        let r = match catalog::resolve(&a.knob) {
            Ok(r) => r,
            Err(e) => {
                refusals.push(e.to_string());
                continue;
            }
        };
        let key = (r.name.clone(), a.workload.clone());
        if !seen.insert(key) {
            refusals.push(format!("{} is assigned twice", r.name));
            continue;
        }
        let v = match value::canonical(r.knob, &r.name, &a.value) {
            Ok(v) => v,
            Err(e) => {
                refusals.push(e.to_string());
                continue;
            }
        };
        if let Err(why) = discover::usable(&machine, &r) {
            refusals.push(format!("{} is unavailable here: {why}", r.name));
            continue;
        }
        // A selector takes only the choices this kernel lists (a preemption
        // model or I/O scheduler it was built without is refused here).
        if r.knob.access == Access::Selector {
            let listed = sysfs::choices(&r);
            if !listed.contains(&v) {
                refusals.push(format!(
                    "{}={v}: this kernel offers only {}",
                    r.name,
                    listed.join(", ")
                ));
                continue;
            }
        }
        match (r.knob.scope, &a.workload) {
            (Scope::Workload, None) => refusals.push(format!(
                "{} applies to one workload's processes, never the whole machine: name the workload profile (--workload PROFILE, or \"workload\" in the API)",
                r.name
            )),
            (Scope::Workload, Some(w)) => per_workload.entry(w.clone()).or_default().push((r, v)),
            (_, Some(_)) => refusals.push(format!(
                "{} is system-wide; it takes no workload",
                r.name
            )),
            (_, None) => system.push((r, v)),
        }
    }
    let mut workloads = Vec::new();
    for (name, knobs) in per_workload {
        let binding = match bind(&name) {
            Ok(b) => b,
            Err(e) => {
                refusals.push(e.to_string());
                continue;
            }
        };
        let mut w = WorkloadPlan {
            binding,
            task: TaskSettings::default(),
            task_knobs: Vec::new(),
            cgroup: Vec::new(),
        };
        for (r, v) in knobs {
            match r.knob.access {
                Access::Task => {
                    w.task.set(r.knob.attribute.expect("checked"), &v);
                    w.task_knobs.push(Planned {
                        knob: r.name,
                        value: v,
                    });
                }
                _ => {
                    let h = machine.cgroup.as_ref().expect("usable checked it");
                    let file = cgroup::file_for(
                        h,
                        r.knob.v2_file.as_deref().expect("checked"),
                        r.knob.v1_file.as_deref(),
                    )
                    .expect("usable checked it");
                    w.cgroup.push(CgroupPlanned {
                        knob: r.name,
                        file: file.into(),
                        value: v,
                    });
                }
            }
        }
        workloads.push(w);
    }
    if !refusals.is_empty() {
        return Err(Error::Input(format!(
            "change set refused, nothing was changed:\n  - {}",
            refusals.join("\n  - ")
        )));
    }
    system.sort_by_key(|a| write_order(&a.0));
    Ok(Plan {
        system: system
            .into_iter()
            .map(|(r, v)| Planned {
                knob: r.name,
                value: v,
            })
            .collect(),
        workloads,
        cgroup: machine.cgroup,
    })
}

/// What was there before: enough to put everything back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Snapshot {
    /// Prior values of the system knobs, in write order.
    pub system: Vec<Planned>,
    pub workloads: Vec<WorkloadSnapshot>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkloadSnapshot {
    pub workload: String,
    /// Whether schedcp created the workload's cgroup (then restore removes it).
    pub cgroup_created: bool,
    /// Prior values of cgroup files when the cgroup already existed.
    pub cgroup_prior: Vec<Planned>,
    /// Where each moved process was (pid, cgroup path).
    pub origins: Vec<(i32, String)>,
    /// Prior attributes of each thread changed (pid, thread).
    pub threads: Vec<(i32, Prior)>,
}

/// A change set in force: its plan, its snapshot, and the knobs an
/// operator took over.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Applied {
    pub plan: Plan,
    pub snapshot: Snapshot,
    /// Knobs schedcp no longer manages (the operator changed them), with why.
    #[serde(default)]
    pub released: Vec<Released>,
    /// The boot it was applied in ([`super::boot_id`]).
    #[serde(default)]
    pub boot_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Released {
    pub knob: String,
    pub expected: String,
    pub found: String,
    pub at: String,
}

/// A managed knob whose value is no longer what schedcp wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Drift {
    pub knob: String,
    pub expected: String,
    pub found: String,
}

/// Persists the snapshot: called before the first write and after every
/// change to it. An error stops the apply before anything (more) changes.
pub type Persist<'a> = &'a mut dyn FnMut(&Applied) -> Result<(), Error>;

impl Applied {
    /// Apply `plan` as described in the module docs.
    pub fn apply(plan: Plan, persist: Persist<'_>) -> Result<Applied, Error> {
        let mut system = Vec::new();
        for p in &plan.system {
            let r = catalog::resolve(&p.knob)?;
            system.push(Planned {
                knob: p.knob.clone(),
                value: sysfs::read(&r)?,
            });
        }
        let mut a = Applied {
            plan,
            snapshot: Snapshot {
                system,
                workloads: Vec::new(),
            },
            released: Vec::new(),
            boot_id: super::boot_id(),
        };
        persist(&a)?;
        if let Err(e) = a.write_all(persist) {
            let undo = a.restore();
            let _ = persist(&a);
            return Err(match undo {
                Ok(()) => Error::Input(format!("{e}; everything already written was restored")),
                Err(u) => Error::Internal(anyhow::anyhow!(
                    "{e}; restoring what was already written also failed: {u}"
                )),
            });
        }
        Ok(a)
    }

    fn write_all(&mut self, persist: Persist<'_>) -> Result<(), Error> {
        self.write_system()?;
        for w in self.plan.workloads.clone() {
            let mut snap = WorkloadSnapshot {
                workload: w.binding.name.clone(),
                ..Default::default()
            };
            if let (Some(h), false) = (&self.plan.cgroup, w.cgroup.is_empty()) {
                let existed = cgroup::dir(h, &w.binding.name).is_dir();
                if existed {
                    for c in &w.cgroup {
                        snap.cgroup_prior.push(Planned {
                            knob: c.file.clone(),
                            value: cgroup::read(h, &w.binding.name, &c.file)?,
                        });
                    }
                }
                snap.cgroup_created = !existed;
            }
            self.snapshot.workloads.push(snap);
            persist(self)?;
            self.write_cgroup(&w)?;
        }
        self.sweep(persist)?;
        Ok(())
    }

    fn is_released(&self, knob: &str) -> bool {
        self.released.iter().any(|r| r.knob == knob)
    }

    /// The system knobs in write order, each read back.
    fn write_system(&self) -> Result<(), Error> {
        for p in self
            .plan
            .system
            .iter()
            .filter(|p| !self.is_released(&p.knob))
        {
            let r = catalog::resolve(&p.knob)?;
            sysfs::write(&r, &p.value)?;
            let back = sysfs::read(&r)?;
            if !value::same(r.knob, &back, &p.value) {
                return Err(Error::Input(format!(
                    "{} was written as {} but reads back as {back}",
                    p.knob, p.value
                )));
            }
        }
        Ok(())
    }

    /// A workload's cgroup, created if need be, its knobs each read back.
    fn write_cgroup(&self, w: &WorkloadPlan) -> Result<(), Error> {
        let (Some(h), false) = (&self.plan.cgroup, w.cgroup.is_empty()) else {
            return Ok(());
        };
        cgroup::ensure(h, &w.binding.name)?;
        for c in &w.cgroup {
            if self.is_released(&format!("{}@{}", c.knob, w.binding.name)) {
                continue;
            }
            cgroup::write(h, &w.binding.name, &c.file, &c.value)?;
            let back = cgroup::read(h, &w.binding.name, &c.file)?;
            let r = catalog::resolve(&c.knob)?;
            if !value::same(r.knob, &back, &c.value) {
                return Err(Error::Input(format!(
                    "{} ({}) was written as {} but reads back as {back}",
                    c.knob, c.file, c.value
                )));
            }
        }
        Ok(())
    }

    /// Bring the workloads' processes under the change set: every process
    /// whose command line matches a workload (and its descendants) joins
    /// its cgroup and gets its task attributes. Threads already handled
    /// are skipped. Returns how many threads were newly changed.
    pub fn sweep(&mut self, persist: Persist<'_>) -> Result<usize, Error> {
        let mut changed = 0;
        for i in 0..self.plan.workloads.len() {
            let w = self.plan.workloads[i].clone();
            let pids = super::procs::of_workload(&w.binding.argv);
            for pid in pids {
                let snap = &mut self.snapshot.workloads[i];
                if let (Some(h), false) = (&self.plan.cgroup, w.cgroup.is_empty()) {
                    let ours = cgroup::dir(h, &w.binding.name);
                    let inside = cgroup::current(h, pid)
                        .is_some_and(|c| h.root.join(c.trim_start_matches('/')) == ours);
                    if !inside && !snap.origins.iter().any(|(p, _)| *p == pid) {
                        match cgroup::join(h, &w.binding.name, pid) {
                            Ok(from) => snap.origins.push((pid, from)),
                            Err(_) if !std::path::Path::new(&format!("/proc/{pid}")).exists() => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                if w.task.is_empty() {
                    continue;
                }
                for tid in task::threads(pid) {
                    let known = self.snapshot.workloads[i]
                        .threads
                        .iter()
                        .any(|(_, p)| p.tid == tid && task::start_time(pid, tid) == Some(p.start));
                    if known {
                        continue;
                    }
                    let Some(prior) = task::snapshot(pid, tid) else {
                        continue;
                    };
                    self.snapshot.workloads[i]
                        .threads
                        .push((pid, prior.clone()));
                    persist(self)?;
                    match task::apply(&prior, &w.task) {
                        Ok(()) => changed += 1,
                        // A thread that exits meanwhile is not a failure.
                        Err(_) if task::start_time(pid, tid).is_none() => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        if changed > 0 {
            persist(self)?;
        }
        Ok(changed)
    }

    /// Put every prior value back, skipping released knobs: workloads
    /// first, then system knobs in write order (a selector such as the I/O
    /// scheduler goes back before the values it resets).
    /// Goes on past a failure and reports all of them.
    pub fn restore(&self) -> Result<(), Error> {
        let mut failures = Vec::new();
        for w in self.snapshot.workloads.iter().rev() {
            for (pid, p) in w.threads.iter().rev() {
                if let Err(e) = task::restore(*pid, p) {
                    failures.push(e.to_string());
                }
            }
            let Some(h) = &self.plan.cgroup else { continue };
            if w.cgroup_created {
                if let Err(e) = cgroup::remove(h, &w.workload, &w.origins) {
                    failures.push(e.to_string());
                }
            } else {
                for p in &w.cgroup_prior {
                    if let Err(e) = cgroup::write(h, &w.workload, &p.knob, &p.value) {
                        failures.push(e.to_string());
                    }
                }
            }
        }
        for p in &self.snapshot.system {
            if self.is_released(&p.knob) {
                continue;
            }
            let r = match catalog::resolve(&p.knob) {
                Ok(r) => r,
                Err(e) => {
                    failures.push(e.to_string());
                    continue;
                }
            };
            // Only what this change set wrote, or may have written.
            if let Err(e) = sysfs::write(&r, &p.value) {
                failures.push(e.to_string());
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Internal(anyhow::anyhow!(
                "restoring the knobs: {}",
                failures.join("; ")
            )))
        }
    }

    /// Managed system and cgroup knobs whose value is no longer ours.
    pub fn drift(&self) -> Vec<Drift> {
        let mut out = Vec::new();
        for p in &self.plan.system {
            if self.is_released(&p.knob) {
                continue;
            }
            let Ok(r) = catalog::resolve(&p.knob) else {
                continue;
            };
            match sysfs::read(&r) {
                Ok(v) if value::same(r.knob, &v, &p.value) => {}
                Ok(v) => out.push(Drift {
                    knob: p.knob.clone(),
                    expected: p.value.clone(),
                    found: v,
                }),
                Err(e) => out.push(Drift {
                    knob: p.knob.clone(),
                    expected: p.value.clone(),
                    found: format!("unreadable: {e}"),
                }),
            }
        }
        if let Some(h) = &self.plan.cgroup {
            for w in &self.plan.workloads {
                for c in &w.cgroup {
                    let name = format!("{}@{}", c.knob, w.binding.name);
                    if self.is_released(&name) {
                        continue;
                    }
                    let found = cgroup::read(h, &w.binding.name, &c.file)
                        .unwrap_or_else(|e| format!("unreadable: {e}"));
                    let same = catalog::resolve(&c.knob)
                        .is_ok_and(|r| value::same(r.knob, &found, &c.value));
                    if !same {
                        out.push(Drift {
                            knob: name,
                            expected: c.value.clone(),
                            found,
                        });
                    }
                }
            }
        }
        out
    }

    /// Stop managing a knob an operator changed: never written again, not
    /// even by a rollback.
    pub fn release(&mut self, d: &Drift) {
        self.released.push(Released {
            knob: d.knob.clone(),
            expected: d.expected.clone(),
            found: d.found.clone(),
            at: crate::host::now_rfc3339(),
        });
    }

    /// Write the plan again where the kernel lost it (after a reboot):
    /// the snapshot stays the one taken before the first apply.
    pub fn reapply(&mut self, persist: Persist<'_>) -> Result<(), Error> {
        self.write_system()?;
        for w in &self.plan.workloads {
            self.write_cgroup(w)?;
        }
        // Processes of before the reboot are gone; forget them.
        for w in &mut self.snapshot.workloads {
            w.threads.clear();
            w.origins.clear();
        }
        persist(self)?;
        self.sweep(persist)?;
        Ok(())
    }

    /// What a workload's child applies to itself between fork and exec, so
    /// a workload schedcp starts is under the change set from its first
    /// instruction.
    pub fn spawn_hook(&self, workload: &str) -> Result<Option<SpawnHook>, Error> {
        let Some(w) = self
            .plan
            .workloads
            .iter()
            .find(|w| w.binding.name == workload)
        else {
            return Ok(None);
        };
        let procs = match (&self.plan.cgroup, w.cgroup.is_empty()) {
            (Some(h), false) => Some(std::sync::Arc::new(cgroup::procs_file(h, workload)?)),
            _ => None,
        };
        Ok(Some(SpawnHook {
            task: SelfApply::new(&w.task),
            procs,
        }))
    }
}

/// See [`Applied::spawn_hook`].
#[derive(Clone)]
pub struct SpawnHook {
    task: SelfApply,
    procs: Option<std::sync::Arc<std::fs::File>>,
}

impl SpawnHook {
    /// Install on a command before it is spawned.
    pub fn install(&self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let task = self.task.clone();
        let fd = self.procs.as_ref().map(|f| f.as_raw_fd());
        // SAFETY: the hook makes only async-signal-safe system calls
        // (write, sched_setattr, sched_setaffinity) on precomputed data.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = fd {
                    let zero = b"0";
                    if libc::write(fd, zero.as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                task.apply()
            });
        }
    }
}

/// What `knob read` returns for a workload knob: its value in the
/// workload's cgroup, or of the workload's first matching process.
pub fn read_workload(r: &Resolved, binding: &WorkloadBinding) -> Result<String, Error> {
    match r.knob.access {
        Access::Cgroup => {
            let h = cgroup::hierarchy()
                .ok_or_else(|| Error::Input("no cgroup CPU controller is mounted".into()))?;
            if !cgroup::dir(&h, &binding.name).is_dir() {
                return Err(Error::NotFound(format!(
                    "workload {} has no schedcp cgroup: no change set manages it",
                    binding.name
                )));
            }
            let f = cgroup::file_for(
                &h,
                r.knob.v2_file.as_deref().unwrap_or_default(),
                r.knob.v1_file.as_deref(),
            )
            .ok_or_else(|| Error::Input(format!("{} has no file in this hierarchy", r.name)))?;
            cgroup::read(&h, &binding.name, f)
        }
        _ => {
            let pid = super::procs::of_workload(&binding.argv)
                .into_iter()
                .next()
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "no process of workload {} ({}) is running",
                        binding.name,
                        binding.argv.join(" ")
                    ))
                })?;
            task::read(pid, r.knob.attribute.unwrap_or(Attribute::Nice))
        }
    }
}
