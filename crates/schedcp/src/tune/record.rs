//! The tuner's memory in the store: sessions with their signatures, every
//! trial, each candidate's pooled verdict; and the evidence the next tune
//! of a similar workload reads from them.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::candidate::{Candidate, Change, Venue};
use crate::compare::AbReport;
use crate::error::Error;
use crate::observe::signature::Signature;
use crate::store::Store;

fn db(e: impl std::fmt::Display) -> Error {
    Error::Internal(anyhow::anyhow!("tune store: {e}"))
}

fn json(v: &impl Serialize) -> Result<String, Error> {
    serde_json::to_string(v).map_err(|e| Error::Internal(e.into()))
}

fn venue_str(v: Venue) -> &'static str {
    match v {
        Venue::Host => "host",
        Venue::Lab => "lab",
    }
}

/// Open a session (before the first trial).
pub fn begin(
    store: &mut Store,
    workload: &str,
    apply: bool,
    sig: &Signature,
) -> Result<i64, Error> {
    let sig = json(sig)?;
    store.write(|tx| {
        tx.execute(
            "INSERT INTO tune_sessions (started_at, workload, mode, signature) VALUES (?1, ?2, ?3, ?4)",
            params![
                crate::host::now_rfc3339(),
                workload,
                if apply { "apply" } else { "advice" },
                sig
            ],
        )
        .map_err(db)?;
        Ok(tx.last_insert_rowid())
    })
}

/// One trial as it finishes.
pub fn trial(
    store: &mut Store,
    session: i64,
    change: &Change,
    t: &super::TrialRecord,
) -> Result<(), Error> {
    let (n, venue, stage, runs, ab) = (t.n, t.venue, t.stage.as_str(), t.runs, &t.ab);
    let (change_json, report) = (json(change)?, json(ab)?);
    let ci = ab.improvement_ci_pct;
    store.write(|tx| {
        tx.execute(
            "INSERT INTO tune_trials (session_id, n, family, change, venue, stage, runs, \
             improvement_pct, ci_low, ci_high, p_value, verdict, report, recorded_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                session,
                n as i64,
                change.family(),
                change_json,
                venue_str(venue),
                stage,
                runs as i64,
                ab.improvement_pct,
                ci.map(|i| i.low),
                ci.map(|i| i.high),
                ab.comparison.p_value,
                ab.verdict().as_str(),
                report,
                crate::host::now_rfc3339()
            ],
        )
        .map_err(db)?;
        Ok(())
    })
}

/// A candidate's pooled verdict at the end of a session.
pub fn verdict(
    store: &mut Store,
    session: i64,
    change: &Change,
    venue: Venue,
    ab: &AbReport,
) -> Result<(), Error> {
    let change_json = json(change)?;
    let ci = ab.improvement_ci_pct;
    store.write(|tx| {
        tx.execute(
            "INSERT INTO tune_verdicts (session_id, family, change, venue, verdict, \
             improvement_pct, ci_low, ci_high, p_value, runs) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                session,
                change.family(),
                change_json,
                venue_str(venue),
                ab.verdict().as_str(),
                ab.improvement_pct,
                ci.map(|i| i.low),
                ci.map(|i| i.high),
                ab.comparison.p_value,
                ab.candidate.values.len() as i64
            ],
        )
        .map_err(db)?;
        Ok(())
    })
}

/// Close a session with its decision and report.
pub fn finish(
    store: &mut Store,
    session: i64,
    decision: &str,
    winner: Option<&Change>,
    deployment_id: Option<i64>,
    report: &impl Serialize,
) -> Result<(), Error> {
    let winner = winner.map(json).transpose()?;
    let report = json(report)?;
    store.write(|tx| {
        tx.execute(
            "UPDATE tune_sessions SET finished_at = ?2, decision = ?3, winner = ?4, \
             deployment_id = ?5, report = ?6 WHERE id = ?1",
            params![
                session,
                crate::host::now_rfc3339(),
                decision,
                winner,
                deployment_id,
                report
            ],
        )
        .map_err(db)?;
        Ok(())
    })
}

/// A past session's stored report, as JSON.
pub fn report(store: &Store, session: i64) -> Result<Option<serde_json::Value>, Error> {
    let text: Option<Option<String>> = store
        .conn()
        .query_row(
            "SELECT report FROM tune_sessions WHERE id = ?1",
            params![session],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?;
    text.flatten()
        .map(|t| serde_json::from_str(&t).map_err(db))
        .transpose()
}

/// A past session, for lists.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRow {
    pub session: i64,
    pub started_at: String,
    pub workload: String,
    pub mode: String,
    /// None while it runs (or if it was killed).
    pub decision: Option<String>,
}

/// Past sessions, newest first.
pub fn sessions(store: &Store, limit: usize) -> Result<Vec<SessionRow>, Error> {
    let mut st = store
        .conn()
        .prepare(
            "SELECT id, started_at, workload, mode, decision FROM tune_sessions \
             ORDER BY id DESC LIMIT ?1",
        )
        .map_err(db)?;
    let rows = st
        .query_map(params![limit as i64], |r| {
            Ok(SessionRow {
                session: r.get(0)?,
                started_at: r.get(1)?,
                workload: r.get(2)?,
                mode: r.get(3)?,
                decision: r.get(4)?,
            })
        })
        .map_err(db)?;
    rows.collect::<Result<_, _>>().map_err(db)
}

/// The last finished session on `workload`: its signature, the median of
/// its first trial's baseline (the metric as it was), whether that metric
/// is lower-is-better, and when it applied a change (if it did).
pub struct LastSession {
    pub session: i64,
    pub signature: Signature,
    pub baseline_median: Option<f64>,
    pub lower_is_better: bool,
}

pub fn last_session(store: &Store, workload: &str) -> Result<Option<LastSession>, Error> {
    let row: Option<(i64, String, Option<String>)> = store
        .conn()
        .query_row(
            "SELECT id, signature, report FROM tune_sessions \
             WHERE workload = ?1 AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1",
            params![workload],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(db)?;
    let Some((session, sig, report)) = row else {
        return Ok(None);
    };
    let signature: Signature = serde_json::from_str(&sig).map_err(db)?;
    let report: serde_json::Value = report
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(db)?
        .unwrap_or_default();
    let first = &report["report"]["trials"][0]["ab"];
    Ok(Some(LastSession {
        session,
        signature,
        baseline_median: first["baseline"]["summary"]["median"].as_f64(),
        lower_is_better: first["metric"]["direction"].as_str() != Some("higher"),
    }))
}

/// When a tune of `workload` last applied a change (RFC 3339).
pub fn last_applied_at(store: &Store, workload: &str) -> Result<Option<String>, Error> {
    store
        .conn()
        .query_row(
            "SELECT finished_at FROM tune_sessions WHERE workload = ?1 AND deployment_id IS NOT NULL \
             ORDER BY id DESC LIMIT 1",
            params![workload],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)
        .map(Option::flatten)
}

/// Sessions this similar (0..1) or more count as evidence.
pub const SIMILAR: f64 = 0.85;

/// What the library says about a change family on similar workloads.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Prior {
    /// Similarity-weighted wins minus regressions (no-change counts a
    /// little against: it was tried and did nothing).
    pub weight: f64,
    pub wins: usize,
    pub regressions: usize,
    pub no_change: usize,
    /// The most similar session's verdict on it, for the reason shown.
    pub nearest: Option<(f64, String)>,
}

/// Evidence for `family` from past sessions whose signature is at least
/// [`SIMILAR`] to `sig` (lab verdicts count half: emulated timing).
pub fn prior(store: &Store, sig: &Signature, family: &str) -> Result<Prior, Error> {
    let mut st = store
        .conn()
        .prepare(
            "SELECT s.signature, v.verdict, v.venue, v.improvement_pct, v.ci_low, v.ci_high, s.id \
             FROM tune_verdicts v JOIN tune_sessions s ON s.id = v.session_id \
             WHERE v.family = ?1",
        )
        .map_err(db)?;
    let rows = st
        .query_map(params![family], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<f64>>(3)?,
                r.get::<_, Option<f64>>(4)?,
                r.get::<_, Option<f64>>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })
        .map_err(db)?;
    let mut p = Prior::default();
    for row in rows {
        let (sig_json, verdict, venue, imp, lo, hi, session) = row.map_err(db)?;
        let Ok(past) = serde_json::from_str::<Signature>(&sig_json) else {
            continue;
        };
        let sim = sig.similarity(&past);
        if sim < SIMILAR {
            continue;
        }
        let w = sim * if venue == "lab" { 0.5 } else { 1.0 };
        match verdict.as_str() {
            "improved" => {
                p.wins += 1;
                p.weight += w;
            }
            "regressed" => {
                p.regressions += 1;
                p.weight -= w;
            }
            _ => {
                p.no_change += 1;
                p.weight -= 0.2 * w;
            }
        }
        if p.nearest.as_ref().is_none_or(|(s, _)| sim > *s) {
            let effect = match (imp, lo, hi) {
                (Some(i), Some(l), Some(h)) => format!(" {i:+.1}% [{l:+.1}, {h:+.1}]"),
                _ => String::new(),
            };
            p.nearest = Some((
                sim,
                format!(
                    "{verdict}{effect} in session {session} ({venue}, similarity {:.2})",
                    sim
                ),
            ));
        }
    }
    Ok(p)
}

/// Reorder candidates by evidence: what won on similar signatures moves
/// up, what regressed there sinks. Each candidate says what moved it.
pub fn reorder(store: &Store, sig: &Signature, cands: &mut [Candidate]) -> Result<(), Error> {
    for c in cands.iter_mut() {
        let p = prior(store, sig, &c.change.family())?;
        if p.wins + p.regressions + p.no_change == 0 {
            continue;
        }
        let before = c.score;
        c.score = (c.score + 0.5 * p.weight).max(0.0);
        c.evidence = Some(format!(
            "{} win(s), {} regression(s), {} without effect on similar workloads; nearest: {}; score {before:.2} → {:.2}",
            p.wins,
            p.regressions,
            p.no_change,
            p.nearest.map(|(_, s)| s).unwrap_or_default(),
            c.score
        ));
    }
    super::rules::rank(cands);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{Arm, Criteria, Metric, Setting};
    use crate::knobs::Assignment;
    use crate::observe::signature::tests::shaped;
    use crate::tune::candidate::Source;

    fn ab(base: &[f64], cand: &[f64]) -> AbReport {
        AbReport::new(
            "w",
            Metric {
                name: "wall_time".into(),
                unit: "ms".into(),
                direction: schedcp_proto::workload::Better::Lower,
            },
            Arm::new("current", base.to_vec(), vec![]),
            Arm::new("cand", cand.to_vec(), vec![]),
            vec![],
            Setting::host("test"),
            Criteria::default(),
        )
    }

    fn cand(knob: &str, value: &str, score: f64) -> Candidate {
        Candidate {
            change: Change::Knobs {
                knobs: vec![Assignment {
                    knob: knob.into(),
                    value: value.into(),
                    workload: None,
                }],
            },
            source: Source::Agent,
            reason: "test".into(),
            score,
            evidence: None,
            numeric: None,
            venue: Venue::Host,
        }
    }

    #[test]
    fn wins_on_similar_workloads_move_a_candidate_up_and_regressions_sink_it() {
        let mut store = Store::open_in_memory().unwrap();
        let spin = shaped(1.0, 1, 3.0, 300.0, 30.0);
        let s = begin(&mut store, "w", false, &spin).unwrap();
        let better = ab(
            &[100.0, 101.0, 102.0, 99.0, 100.5, 101.5],
            &[80.0, 81.0, 79.0, 80.5, 81.5, 79.5],
        );
        let worse = ab(
            &[100.0, 101.0, 102.0, 99.0, 100.5, 101.5],
            &[130.0, 131.0, 129.0, 130.5, 131.5, 129.5],
        );
        let a = cand("vm.swappiness", "10", 0.2);
        let b = cand("vm.dirty_ratio", "40", 0.9);
        verdict(&mut store, s, &a.change, Venue::Host, &better).unwrap();
        verdict(&mut store, s, &b.change, Venue::Host, &worse).unwrap();
        finish(&mut store, s, "d", Some(&a.change), None, &"r").unwrap();

        // A similar workload: the winner comes first.
        let mut cands = vec![b.clone(), a.clone()];
        reorder(&store, &shaped(0.95, 1, 4.0, 280.0, 28.0), &mut cands).unwrap();
        assert_eq!(cands[0].change, a.change, "{cands:?}");
        assert!(cands[0].evidence.as_ref().unwrap().contains("1 win(s)"));
        assert!(cands[1]
            .evidence
            .as_ref()
            .unwrap()
            .contains("1 regression(s)"));

        // A different workload: no evidence applies, the rules' order stands.
        let mut cands = vec![b.clone(), a.clone()];
        reorder(&store, &shaped(0.2, 16, 40_000.0, 5.0, 0.0), &mut cands).unwrap();
        assert_eq!(cands[0].change, b.change);
        assert!(cands[0].evidence.is_none());
        assert_eq!(sessions(&store, 5).unwrap().len(), 1);
        assert_eq!(report(&store, s).unwrap(), Some(serde_json::json!("r")));
    }
}
