//! What a tune leaves in the policy library, so that search ranks by it,
//! the next tune of a similar workload starts from it, and promotion acts
//! on it: every scheduler verdict as a result of its policy, and every knob
//! set proven on this host as a library entry of its own (kind `knobs`,
//! origin `tune`) with its results. Each result carries the session's
//! workload signature.
//!
//! A knob set's lifecycle follows the library's: it enters `verified` when
//! a tune proves it (admitted by this machine's catalogue checks, its
//! interval clear of the minimum effect), becomes `deployed` when deploy
//! applies it and its canary passes, and is promoted by the curation rule
//! once it has enough significant improvements measured by tune or deploy.
//! A later tune that finds it regressed records that, and curation demotes.

use schedcp_proto::workload::Better;
use sha2::{Digest, Sha256};

use super::candidate::{Candidate, Change, Venue};
use super::TuneReport;
use crate::bpf::meta::PolicyMeta;
use crate::compare::{AbReport, Verdict};
use crate::config::Config;
use crate::deploy::record::DeployState;
use crate::error::Error;
use crate::knobs::Assignment;
use crate::policies::model::{
    Body, Direction, KnobSet, NewPolicy, NewResult, Origin, PolicyRef, ResultSource, ResultVerdict,
    State,
};
use crate::policies::Library;

/// The library name of a knob set: `knobs_` and a hash of its assignments
/// (order-independent), so the same set found again is the same entry.
pub fn knob_set_name(knobs: &[Assignment]) -> String {
    let mut lines: Vec<String> = knobs
        .iter()
        .map(|a| {
            format!(
                "{}={}@{}",
                a.knob.trim(),
                a.value.trim(),
                a.workload.as_deref().unwrap_or("")
            )
        })
        .collect();
    lines.sort();
    let hash = Sha256::digest(lines.join("\n").as_bytes());
    format!("knobs_{}", &hex::encode(hash)[..12])
}

/// A library knob set as a candidate change for `workload`: its per-workload
/// knobs are aimed at `workload`'s processes (what worked for a similar
/// workload, tried on this one).
pub fn knob_set_change(cfg: &Config, name: &str, workload: &str) -> Result<Change, Error> {
    let lib = Library::open(cfg)?;
    let v = lib.get(&name.parse::<PolicyRef>().map_err(Error::Input)?)?;
    let Body::Knobs(set) = v.body else {
        return Err(Error::Input(format!(
            "{} is a {} policy, not a knob set; hand a scheduler in with --scheduler",
            v.id(),
            v.body.kind()
        )));
    };
    Ok(Change::Knobs {
        knobs: set
            .knobs
            .into_iter()
            .map(|mut a| {
                if a.workload.is_some() {
                    a.workload = Some(workload.to_string());
                }
                a
            })
            .collect(),
    })
}

/// Record the tune's verdicts in the library. Returns what was recorded,
/// one line each.
pub fn record(cfg: &Config, r: &TuneReport) -> Result<Vec<String>, Error> {
    let mut lib: Option<Library> = None;
    let open = |lib: &mut Option<Library>| -> Result<(), Error> {
        if lib.is_none() {
            *lib = Some(Library::open(cfg)?);
        }
        Ok(())
    };
    let mut out = Vec::new();
    for o in &r.outcomes {
        let Some(ab) = &o.ab else { continue };
        if ab.candidate.summary.is_none() || ab.baseline.summary.is_none() {
            continue;
        }
        match &o.candidate.change {
            Change::Scheduler { policy, .. } => {
                if policy.ends_with(".c") {
                    continue; // a file, not a library policy
                }
                open(&mut lib)?;
                let lib = lib.as_mut().expect("opened");
                out.push(scheduler_result(lib, r, &o.candidate, ab, policy)?);
            }
            // Lab timings are emulated: knob sets become entries only from
            // what this host measured.
            Change::Knobs { knobs } if o.candidate.venue == Venue::Host => {
                let name = knob_set_name(knobs);
                open(&mut lib)?;
                let lib = lib.as_mut().expect("opened");
                let known = lib
                    .get(&PolicyRef {
                        name: name.clone(),
                        version: None,
                    })
                    .is_ok();
                if !o.proven && !known {
                    continue; // its verdict stays in the tune record
                }
                out.extend(knob_set(lib, r, &o.candidate, ab, knobs, &name, known)?);
            }
            Change::Knobs { .. } => {}
        }
    }
    Ok(out)
}

fn scheduler_result(
    lib: &mut Library,
    r: &TuneReport,
    c: &Candidate,
    ab: &AbReport,
    policy: &str,
) -> Result<String, Error> {
    let stand_in = r.lab_stand_in.as_deref().unwrap_or("lab");
    let workload = stand_in.split(':').next().unwrap_or("lab").to_string();
    let res = result(
        r,
        c,
        ab,
        workload,
        format!(
            "tune session {}: {stand_in} standing in for {} ({})",
            r.session,
            r.workload,
            r.signature.mix.class()
        ),
    );
    let rec = lib.record_result(
        &PolicyRef {
            name: policy.to_string(),
            version: None,
        },
        res,
    )?;
    Ok(format!(
        "{policy}: result #{} ({}){}",
        rec.result.id,
        ab.verdict().as_str(),
        rec.transition
            .map(|t| format!(", now {}", t.to.as_str()))
            .unwrap_or_default()
    ))
}

/// A host knob set's verdict: a new entry when first proven, a result
/// always, `deployed` once the tune applied it and its canary passed.
fn knob_set(
    lib: &mut Library,
    r: &TuneReport,
    c: &Candidate,
    ab: &AbReport,
    knobs: &[Assignment],
    name: &str,
    known: bool,
) -> Result<Vec<String>, Error> {
    let pref = PolicyRef {
        name: name.to_string(),
        version: None,
    };
    let set = KnobSet {
        knobs: knobs.to_vec(),
    };
    let mut lines = Vec::new();
    if !known {
        let v = lib.add(NewPolicy {
            meta: knob_set_meta(r, &set, name),
            origin: Origin::Tune,
            body: Body::Knobs(set.clone()),
        })?;
        lines.push(format!("{name}: added ({})", set.describe()));
        let why = format!(
            "admitted on {} by the knob catalogue's checks and proven by tune session {}: {}",
            crate::host::kernel_release(),
            r.session,
            ab.headline()
        );
        lib.transition(&pref, State::Verified, &cap(&why))?;
        debug_assert_eq!(v.state, State::Candidate);
    }
    let res = result(
        r,
        c,
        ab,
        r.workload.clone(),
        format!(
            "tune session {} on {} ({}): {}",
            r.session,
            r.workload,
            r.signature.mix.class(),
            set.describe()
        ),
    );
    let rec = lib.record_result(&pref, res)?;
    lines.push(format!(
        "{name}: result #{} ({}){}",
        rec.result.id,
        ab.verdict().as_str(),
        rec.transition
            .map(|t| format!(", now {}", t.to.as_str()))
            .unwrap_or_default()
    ));
    // Applied by this tune and past its canary: deployed. The canary passing
    // is the same evidence deploy's own curation uses for schedulers.
    let applied_here = r
        .applied
        .as_ref()
        .filter(|d| d.state == DeployState::Active && r.winner.as_ref() == Some(&c.change));
    if let Some(d) = applied_here {
        let v = lib.get(&pref)?;
        if v.state == State::Verified {
            lib.transition(
                &pref,
                State::Deployed,
                &format!("deployment #{} passed its canary", d.id),
            )?;
            lines.push(format!("{name}: now deployed (deployment #{})", d.id));
        }
    }
    Ok(lines)
}

fn knob_set_meta(r: &TuneReport, set: &KnobSet, name: &str) -> PolicyMeta {
    let class = r.signature.mix.class();
    PolicyMeta {
        name: name.to_string(),
        // Not a sched_ext scheduler: no ops name in the kernel to match.
        ops_name: "knob_set".into(),
        description: cap(&format!(
            "Knob change set {}, found and proven by schedcp tune on the {class} workload '{}' ({} CPUs, kernel {}).",
            set.describe(),
            r.workload,
            r.signature.cpus,
            crate::host::kernel_release()
        )),
        algorithm: "Applied by deploy as one change set: each value written in a defined order and read back, the prior values kept and restored on rollback or any failure; per-workload knobs follow the workload's processes and their children.".into(),
        target_workloads: vec![class.to_string()],
        limitations: vec![
            "Proven on one machine and workload; similar workloads may differ: trial it again (schedcp tune --candidate NAME).".into(),
            "Per-workload knobs need a workload profile to aim at.".into(),
        ],
        tunables: vec![],
    }
}

/// The verdict as a library result, with the session's signature.
fn result(
    r: &TuneReport,
    c: &Candidate,
    ab: &AbReport,
    workload: String,
    description: String,
) -> NewResult {
    let (cs, bs) = (
        ab.candidate.summary.as_ref().expect("checked"),
        ab.baseline.summary.as_ref().expect("checked"),
    );
    let verdict = match ab.verdict() {
        Verdict::Improved => ResultVerdict::Improved,
        Verdict::Regressed => ResultVerdict::Regressed,
        _ => ResultVerdict::NoChange,
    };
    NewResult {
        signature: Some(r.signature.clone()),
        workload,
        workload_description: description.chars().take(500).collect(),
        metric: ab.metric.name.clone(),
        unit: ab.metric.unit.clone(),
        direction: if ab.metric.direction == Better::Lower {
            Direction::Lower
        } else {
            Direction::Higher
        },
        value: cs.median,
        baseline: Some(bs.median),
        improvement_pct: ab.improvement_pct,
        p_value: ab.comparison.p_value,
        significant: verdict != ResultVerdict::NoChange,
        verdict,
        source: ResultSource::Tune,
        environment: format!("{} ({})", c.venue.as_str(), ab.setting.describe())
            .chars()
            .take(200)
            .collect(),
    }
}

fn cap(s: &str) -> String {
    s.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(knob: &str, value: &str, workload: Option<&str>) -> Assignment {
        Assignment {
            knob: knob.into(),
            value: value.into(),
            workload: workload.map(str::to_string),
        }
    }

    #[test]
    fn a_knob_sets_name_is_its_content_whatever_the_order() {
        let x = knob_set_name(&[
            a("vm.swappiness", "10", None),
            a("workload.nice", "-5", Some("b")),
        ]);
        let y = knob_set_name(&[
            a("workload.nice", "-5", Some("b")),
            a("vm.swappiness", "10", None),
        ]);
        assert_eq!(x, y);
        assert!(x.starts_with("knobs_") && x.len() == 18, "{x}");
        assert!(crate::bpf::meta::is_identifier(&x));
        assert_ne!(x, knob_set_name(&[a("vm.swappiness", "20", None)]));
        assert_ne!(
            knob_set_name(&[a("workload.nice", "-5", Some("b"))]),
            knob_set_name(&[a("workload.nice", "-5", Some("c"))])
        );
    }
}
