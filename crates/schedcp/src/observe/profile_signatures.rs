//! A workload profile's signatures over time: what its workload does (the
//! CPU/wakeup/I-O mix, run-queue latency, switches, faults, I/O), taken by
//! every tune session and by `observe benchmark --signature` (in a warm-up
//! run that is not counted). The newest one is shown with the profile, so
//! a drift in what the workload does is visible next to its benchmarks.

use anyhow::Context;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::signature::Signature;
use crate::error::Error;
use crate::store::Store;

/// What took a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Taker {
    Benchmark,
    Tune,
}

impl Taker {
    fn as_str(self) -> &'static str {
        match self {
            Taker::Benchmark => "benchmark",
            Taker::Tune => "tune",
        }
    }
}

/// One stored signature of a profile.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ProfileSignature {
    pub id: i64,
    pub taken_at: String,
    /// `benchmark` or `tune`.
    pub source: String,
    /// Absent when it was written by another schedcp version in a shape
    /// this one cannot read.
    pub signature: Option<Signature>,
}

/// Keep `sig` with profile `profile_id`; returns its id.
pub fn record(
    store: &mut Store,
    profile_id: i64,
    taker: Taker,
    sig: &Signature,
) -> Result<i64, Error> {
    let json = serde_json::to_string(sig).map_err(|e| Error::Internal(e.into()))?;
    store.write(|tx| -> Result<i64, Error> {
        tx.execute(
            "INSERT INTO profile_signatures (profile_id, taken_at, source, signature)
             VALUES (?1, ?2, ?3, ?4)",
            params![profile_id, crate::host::now_rfc3339(), taker.as_str(), json],
        )
        .context("recording a profile signature")?;
        Ok(tx.last_insert_rowid())
    })
}

/// The newest signature of profile `profile_id`.
pub fn latest(store: &Store, profile_id: i64) -> Result<Option<ProfileSignature>, Error> {
    one(
        store,
        "WHERE profile_id = ?1 ORDER BY id DESC LIMIT 1",
        profile_id,
    )
}

/// The signature `id`.
pub fn get(store: &Store, id: i64) -> Result<Option<ProfileSignature>, Error> {
    one(store, "WHERE id = ?1", id)
}

fn one(store: &Store, filter: &str, key: i64) -> Result<Option<ProfileSignature>, Error> {
    Ok(store
        .conn()
        .query_row(
            &format!("SELECT id, taken_at, source, signature FROM profile_signatures {filter}"),
            [key],
            |r| {
                Ok(ProfileSignature {
                    id: r.get(0)?,
                    taken_at: r.get(1)?,
                    source: r.get(2)?,
                    signature: serde_json::from_str(&r.get::<_, String>(3)?).ok(),
                })
            },
        )
        .optional()
        .context("reading a profile signature")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::signature::tests::shaped;
    use crate::observe::workload_profiles::{self, NewProfile, Target};

    #[test]
    fn the_newest_signature_is_the_profiles_and_goes_with_it() {
        let mut store = Store::open_in_memory().unwrap();
        let p = workload_profiles::add(
            &mut store,
            NewProfile {
                name: "spin".into(),
                description: String::new(),
                target: Target::Command {
                    argv: vec!["true".into()],
                    cwd: None,
                    timeout_s: 10,
                },
                metric: None,
                direction: None,
            },
        )
        .unwrap();
        assert!(latest(&store, p.id).unwrap().is_none());
        let a = shaped(1.0, 1, 3.0, 300.0, 30.0);
        let b = shaped(0.2, 8, 40.0, 3000.0, 5.0);
        record(&mut store, p.id, Taker::Tune, &a).unwrap();
        let id = record(&mut store, p.id, Taker::Benchmark, &b).unwrap();
        let l = latest(&store, p.id).unwrap().unwrap();
        assert_eq!((l.id, l.source.as_str()), (id, "benchmark"));
        assert_eq!(l.signature.as_ref(), Some(&b));
        workload_profiles::remove(&mut store, "spin", true).unwrap();
        let left: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM profile_signatures", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0, "a removed profile's signatures go with it");
    }
}
