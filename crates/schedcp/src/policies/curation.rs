//! Curation: which lifecycle moves are allowed, and when evidence promotes
//! or demotes a version.
//!
//! ```text
//!  candidate ──verify──► verified ──deploy──► deployed ──evidence──► promoted
//!      │                    │                    ▲ │                    │
//!      │                    │                    │ └──────────┐         │
//!      └────────────────────┴──► retired ◄───────┴── demoted ◄┘◄────────┘
//! ```
//!
//! - **Promotion rule**: a `deployed` version is promoted when, since its
//!   last significant regression, it has at least `min_improvements`
//!   (default 2) significant improvements measured by schedcp itself in
//!   production or trials (result source `deploy` or `tune`). Results an
//!   operator or agent records by hand (`manual`) and in-VM verification
//!   results (`verify`) inform search but never promote: an agent cannot
//!   talk its own policy into production.
//! - **Demotion rule**: a significant regression measured by schedcp
//!   (`verify`, `deploy` or `tune`) demotes a `promoted` version back to
//!   `deployed`, where it must earn promotion again.
//! - `retired` is terminal for a version; publish a new version instead.

use super::model::{PolicyResult, ResultSource, ResultVerdict, State};

pub use crate::config::policies::DEFAULT_MIN_IMPROVEMENTS;

/// Whether `from → to` is a move anyone may request (the promotion and
/// demotion moves happen only through [`after_result`]).
pub fn allowed(from: State, to: State) -> Result<(), String> {
    use State::*;
    let ok = matches!(
        (from, to),
        (Candidate, Verified) | (Verified, Deployed) | (Promoted, Deployed)
    ) || (to == Retired && from != Retired);
    if ok {
        Ok(())
    } else if to == Promoted {
        Err(format!(
            "a version is promoted only by evidence: it must be deployed and have {DEFAULT_MIN_IMPROVEMENTS} significant improvements measured by deploy or tune (see `schedcp policy --help`)"
        ))
    } else {
        Err(format!("a {from} version cannot become {to}; allowed: candidate→verified→deployed, promoted→deployed, any→retired"))
    }
}

fn measured_by_schedcp(s: ResultSource) -> bool {
    matches!(
        s,
        ResultSource::Verify | ResultSource::Deploy | ResultSource::Tune
    )
}

fn counts_for_promotion(s: ResultSource) -> bool {
    matches!(s, ResultSource::Deploy | ResultSource::Tune)
}

/// The move (if any) that `results` (all of one version, oldest first)
/// call for, given its `state`; with the reason to record.
pub fn after_result(
    state: State,
    results: &[PolicyResult],
    min_improvements: usize,
) -> Option<(State, String)> {
    let last = results.last()?;
    let r = &last.result;
    if state == State::Promoted
        && r.significant
        && r.verdict == ResultVerdict::Regressed
        && measured_by_schedcp(r.source)
    {
        return Some((
            State::Deployed,
            format!(
                "demoted: significant regression of {} on '{}' ({} result #{})",
                r.metric, r.workload, r.source, last.id
            ),
        ));
    }
    if state != State::Deployed {
        return None;
    }
    let since_regression = results.iter().rev().take_while(|x| {
        !(x.result.significant
            && x.result.verdict == ResultVerdict::Regressed
            && measured_by_schedcp(x.result.source))
    });
    let wins: Vec<&PolicyResult> = since_regression
        .filter(|x| {
            x.result.significant
                && x.result.verdict == ResultVerdict::Improved
                && counts_for_promotion(x.result.source)
        })
        .collect();
    (wins.len() >= min_improvements).then(|| {
        let ids: Vec<String> = wins.iter().rev().map(|w| format!("#{}", w.id)).collect();
        (
            State::Promoted,
            format!(
                "promoted: {} significant improvements measured by deploy/tune since the last regression (results {})",
                wins.len(),
                ids.join(", ")
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::model::{Direction, NewResult};

    fn res(
        id: i64,
        verdict: ResultVerdict,
        significant: bool,
        source: ResultSource,
    ) -> PolicyResult {
        PolicyResult {
            id,
            version: 1,
            recorded_at: String::new(),
            result: NewResult {
                signature: None,
                workload: "w".into(),
                workload_description: "w".into(),
                metric: "makespan".into(),
                unit: "ms".into(),
                direction: Direction::Lower,
                value: 1.0,
                baseline: Some(1.1),
                improvement_pct: Some(9.0),
                p_value: Some(0.01),
                significant,
                verdict,
                source,
                environment: "test".into(),
            },
        }
    }

    use ResultSource::*;
    use ResultVerdict::*;

    #[test]
    fn promotion_needs_enough_measured_wins_while_deployed() {
        let two = [res(1, Improved, true, Deploy), res(2, Improved, true, Tune)];
        assert_eq!(
            after_result(State::Deployed, &two, 2).unwrap().0,
            State::Promoted
        );
        // Not deployed yet: no promotion, whatever the evidence.
        assert!(after_result(State::Verified, &two, 2).is_none());
        assert!(after_result(State::Candidate, &two, 2).is_none());
        // Manual and verify results never count.
        let weak = [
            res(1, Improved, true, Manual),
            res(2, Improved, true, Verify),
            res(3, Improved, true, Deploy),
        ];
        assert!(after_result(State::Deployed, &weak, 2).is_none());
        // Not significant: no.
        let ns = [
            res(1, Improved, false, Deploy),
            res(2, Improved, true, Deploy),
        ];
        assert!(after_result(State::Deployed, &ns, 2).is_none());
        // A regression resets the count.
        let reset = [
            res(1, Improved, true, Deploy),
            res(2, Regressed, true, Deploy),
            res(3, Improved, true, Deploy),
        ];
        assert!(after_result(State::Deployed, &reset, 2).is_none());
    }

    #[test]
    fn significant_measured_regression_demotes() {
        let r = [res(1, Regressed, true, Deploy)];
        assert_eq!(
            after_result(State::Promoted, &r, 2).unwrap().0,
            State::Deployed
        );
        assert!(after_result(State::Promoted, &[res(1, Regressed, false, Deploy)], 2).is_none());
        assert!(after_result(State::Promoted, &[res(1, Regressed, true, Manual)], 2).is_none());
    }

    #[test]
    fn moves() {
        assert!(allowed(State::Candidate, State::Verified).is_ok());
        assert!(allowed(State::Candidate, State::Retired).is_ok());
        assert!(allowed(State::Candidate, State::Promoted)
            .unwrap_err()
            .contains("only by evidence"));
        assert!(allowed(State::Retired, State::Candidate).is_err());
        assert!(allowed(State::Candidate, State::Deployed).is_err());
    }
}
