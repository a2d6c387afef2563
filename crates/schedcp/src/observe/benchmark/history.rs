//! Benchmark run-sets in the store: one row per `benchmark` invocation, one
//! sample row per run (a value, or the reason there is none).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use crate::error::Error;
use crate::store::Store;

/// One run of a set.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Sample {
    /// The metric's value; `None` when the run failed.
    pub value: Option<f64>,
    /// Why the run produced no value.
    pub error: Option<String>,
    /// How long the run took, start to end, whatever it measured.
    pub elapsed_ms: f64,
}

impl Sample {
    pub fn ok(value: f64, elapsed_ms: f64) -> Sample {
        Sample {
            value: Some(value),
            error: None,
            elapsed_ms,
        }
    }

    pub fn failed(reason: impl Into<String>, elapsed_ms: f64) -> Sample {
        Sample {
            value: None,
            error: Some(reason.into()),
            elapsed_ms,
        }
    }
}

/// Where a lab run-set ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct LabEnv {
    /// Guest kernel release.
    pub kernel: String,
    /// `kvm` or `tcg` (comma-separated if runs differed).
    pub accel: String,
}

/// A run-set to record.
#[derive(Debug, Clone)]
pub struct NewRunSet {
    pub profile_id: i64,
    pub started: SystemTime,
    pub finished: SystemTime,
    pub label: String,
    pub host_kernel: String,
    pub lab: Option<LabEnv>,
    pub baseline_id: Option<i64>,
    /// The profile signature taken in this set's warm-up run, if asked for.
    pub signature_id: Option<i64>,
    pub samples: Vec<Sample>,
}

/// A recorded run-set.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RunSet {
    pub id: i64,
    pub profile_id: i64,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub finished_at: String,
    pub label: String,
    pub host_kernel: String,
    pub lab: Option<LabEnv>,
    pub baseline_id: Option<i64>,
    pub signature_id: Option<i64>,
    pub samples: Vec<Sample>,
}

impl RunSet {
    /// Values of the runs that produced one, in run order.
    pub fn values(&self) -> Vec<f64> {
        self.samples.iter().filter_map(|s| s.value).collect()
    }

    pub fn failures(&self) -> usize {
        self.samples.iter().filter(|s| s.value.is_none()).count()
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Record a run-set and all its samples in one transaction.
pub fn insert(store: &mut Store, set: &NewRunSet) -> Result<i64, Error> {
    if set.samples.is_empty() {
        return Err(Error::Internal(anyhow!("a run-set needs at least one run")));
    }
    let runs = i64::try_from(set.samples.len()).context("too many runs")?;
    store
        .write(|tx| -> anyhow::Result<i64> {
            tx.execute(
                "INSERT INTO benchmark_sets
               (profile_id, started_at, finished_at, label, host_kernel,
                lab_kernel, lab_accel, runs, baseline_id, signature_id)
             VALUES (?1, strftime('%Y-%m-%dT%H:%M:%fZ', ?2, 'unixepoch'),
                     strftime('%Y-%m-%dT%H:%M:%fZ', ?3, 'unixepoch'),
                     ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    set.profile_id,
                    unix_seconds(set.started),
                    unix_seconds(set.finished),
                    set.label,
                    set.host_kernel,
                    set.lab.as_ref().map(|l| &l.kernel),
                    set.lab.as_ref().map(|l| &l.accel),
                    runs,
                    set.baseline_id,
                    set.signature_id,
                ],
            )
            .context("recording the benchmark run-set")?;
            let id = tx.last_insert_rowid();
            let mut stmt = tx.prepare(
                "INSERT INTO benchmark_samples (set_id, seq, value, error, elapsed_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (seq, s) in (0i64..).zip(&set.samples) {
                stmt.execute(params![id, seq, s.value, s.error, s.elapsed_ms])
                    .with_context(|| format!("recording run {} of the benchmark", seq + 1))?;
            }
            Ok(id)
        })
        .map_err(Error::Internal)
}

const SELECT: &str = "SELECT id, profile_id, started_at, finished_at, label, host_kernel,
                             lab_kernel, lab_accel, baseline_id, signature_id
                      FROM benchmark_sets";

fn from_row(r: &Row<'_>) -> rusqlite::Result<RunSet> {
    let lab = match (
        r.get::<_, Option<String>>(6)?,
        r.get::<_, Option<String>>(7)?,
    ) {
        (Some(kernel), Some(accel)) => Some(LabEnv { kernel, accel }),
        _ => None,
    };
    Ok(RunSet {
        id: r.get(0)?,
        profile_id: r.get(1)?,
        started_at: r.get(2)?,
        finished_at: r.get(3)?,
        label: r.get(4)?,
        host_kernel: r.get(5)?,
        lab,
        baseline_id: r.get(8)?,
        signature_id: r.get(9)?,
        samples: Vec::new(),
    })
}

fn with_samples(conn: &Connection, mut set: RunSet) -> anyhow::Result<RunSet> {
    let mut stmt = conn.prepare_cached(
        "SELECT value, error, elapsed_ms FROM benchmark_samples WHERE set_id = ?1 ORDER BY seq",
    )?;
    set.samples = stmt
        .query_map([set.id], |r| {
            Ok(Sample {
                value: r.get(0)?,
                error: r.get(1)?,
                elapsed_ms: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(set)
}

/// The run-set `id`, if it exists.
pub fn load(conn: &Connection, id: i64) -> Result<Option<RunSet>, Error> {
    let set = conn
        .query_row(&format!("{SELECT} WHERE id = ?1"), [id], from_row)
        .optional()
        .with_context(|| format!("reading benchmark run-set {id}"))?;
    Ok(set
        .map(|s| with_samples(conn, s))
        .transpose()
        .with_context(|| format!("reading the runs of benchmark run-set {id}"))?)
}

/// The newest `limit` run-sets of a profile, newest first.
pub fn for_profile(conn: &Connection, profile_id: i64, limit: u32) -> Result<Vec<RunSet>, Error> {
    let read = || -> anyhow::Result<Vec<RunSet>> {
        let mut stmt = conn.prepare(&format!(
            "{SELECT} WHERE profile_id = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let sets = stmt
            .query_map(params![profile_id, limit], from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        sets.into_iter().map(|s| with_samples(conn, s)).collect()
    };
    Ok(read().context("reading benchmark history")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::workload_profiles::{self, NewProfile, Target};
    use std::time::Duration;

    fn profile(store: &mut Store, name: &str) -> i64 {
        workload_profiles::add(
            store,
            NewProfile {
                name: name.into(),
                description: String::new(),
                target: Target::lab("batch").unwrap(),
                metric: None,
                direction: None,
            },
        )
        .unwrap()
        .id
    }

    fn new_set(profile_id: i64, samples: Vec<Sample>) -> NewRunSet {
        NewRunSet {
            profile_id,
            started: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
            finished: UNIX_EPOCH + Duration::from_secs(1_700_000_100),
            label: "default".into(),
            host_kernel: "6.1.0-test".into(),
            lab: Some(LabEnv {
                kernel: "6.12-sid".into(),
                accel: "tcg".into(),
            }),
            baseline_id: None,
            signature_id: None,
            samples,
        }
    }

    #[test]
    fn round_trip() {
        let mut s = Store::open_in_memory().unwrap();
        let p = profile(&mut s, "b");
        let samples = vec![
            Sample::ok(10.5, 11.0),
            Sample::failed("timed out", 60_000.0),
            Sample::ok(9.5, 10.0),
        ];
        let id = insert(&mut s, &new_set(p, samples.clone())).unwrap();
        let set = load(s.conn(), id).unwrap().unwrap();
        assert_eq!(set.samples, samples);
        assert_eq!(set.values(), [10.5, 9.5]);
        assert_eq!(set.failures(), 1);
        assert_eq!(set.started_at, "2023-11-14T22:13:20.250Z");
        assert_eq!(set.lab.unwrap().accel, "tcg");
        assert!(load(s.conn(), id + 1).unwrap().is_none());
    }

    #[test]
    fn history_is_per_profile_and_newest_first() {
        let mut s = Store::open_in_memory().unwrap();
        let (a, b) = (profile(&mut s, "a"), profile(&mut s, "b"));
        let ids: Vec<i64> = (0..3)
            .map(|i| insert(&mut s, &new_set(a, vec![Sample::ok(f64::from(i), 1.0)])).unwrap())
            .collect();
        insert(&mut s, &new_set(b, vec![Sample::ok(1.0, 1.0)])).unwrap();
        let h: Vec<i64> = for_profile(s.conn(), a, 2)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(h, [ids[2], ids[1]]);
    }

    #[test]
    fn a_bad_sample_records_nothing() {
        let mut s = Store::open_in_memory().unwrap();
        let p = profile(&mut s, "b");
        // Neither value nor error violates the samples table's CHECK.
        let bad = Sample {
            value: None,
            error: None,
            elapsed_ms: 1.0,
        };
        let e = insert(&mut s, &new_set(p, vec![Sample::ok(1.0, 1.0), bad])).unwrap_err();
        assert!(format!("{e:#}").contains("recording run 2"), "{e:#}");
        assert!(for_profile(s.conn(), p, 10).unwrap().is_empty());
    }
}
