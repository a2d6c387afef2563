//! Deployment state in the embedded store. Every change is one
//! transaction, written *before* the kernel is touched where that matters
//! (a canary row exists before its scheduler attaches), so a crash at any
//! point leaves a record the next start can reconcile.

use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::kpi::Kpis;
use super::thresholds::Thresholds;
use crate::error::Error;
use crate::store::Store;

/// Lifecycle of one deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeployState {
    /// Attached, KPIs under watch; not yet trusted.
    Canary,
    /// Passed its canary (or was restored as last known-good): what the node runs.
    Active,
    /// Detached by the breaker or by a manual rollback.
    RolledBack,
    /// Replaced by a newer deployment that passed its canary.
    Superseded,
}

impl DeployState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployState::Canary => "canary",
            DeployState::Active => "active",
            DeployState::RolledBack => "rolled_back",
            DeployState::Superseded => "superseded",
        }
    }

    fn parse(s: &str) -> Result<DeployState, Error> {
        Ok(match s {
            "canary" => DeployState::Canary,
            "active" => DeployState::Active,
            "rolled_back" => DeployState::RolledBack,
            "superseded" => DeployState::Superseded,
            other => {
                return Err(Error::Internal(anyhow::anyhow!(
                    "unknown deployment state '{other}' in the store"
                )))
            }
        })
    }
}

/// What the deploy request asked for, kept with the deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CanaryPlan {
    pub canary_s: u64,
    pub window_s: u64,
    pub thresholds: Thresholds,
    /// The workload run in every window, if any.
    pub workload: Option<String>,
}

/// Measured durations of one deployment, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Timings {
    /// Request received → token, object and kernel checked.
    pub admission_ms: Option<f64>,
    /// Baseline KPI window before the switch.
    pub baseline_ms: Option<f64>,
    /// Detach of the previous scheduler + load + attach + state `enabled`.
    pub switch_ms: Option<f64>,
    /// Request received → scheduler attached.
    pub request_to_attached_ms: Option<f64>,
    /// Request received → canary passed (state `active`).
    pub request_to_active_ms: Option<f64>,
    /// Breach detected → previous scheduler (or the default) in place.
    pub breach_to_rollback_ms: Option<f64>,
}

/// The scheduler part of a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SchedulerChange {
    pub policy: String,
    pub version: u32,
    pub ops_name: String,
    pub object_sha256: String,
    pub token_jti: String,
}

impl SchedulerChange {
    pub fn label(&self) -> String {
        format!("{}@{}", self.policy, self.version)
    }
}

/// One change to the node: a scheduler, a knob change set, or both.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Deployment {
    pub id: i64,
    /// The scheduler this change attaches (none: the scheduler stays as it was).
    #[serde(flatten)]
    pub scheduler: Option<SchedulerChange>,
    /// The knob change set this change applies: its plan, the prior values
    /// (restored on rollback), and knobs released to an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knobs: Option<crate::knobs::Applied>,
    pub kernel_release: String,
    /// The deployment that was active when this one started: its last
    /// known-good, and where a rollback returns to (none: the kernel default).
    pub previous_id: Option<i64>,
    pub state: DeployState,
    pub requested_at: String,
    pub ended_at: Option<String>,
    pub reason: Option<String>,
    pub plan: CanaryPlan,
    pub baseline: Option<Kpis>,
    pub windows: Vec<Kpis>,
    pub timings: Timings,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeployEvent {
    pub id: i64,
    pub deployment_id: Option<i64>,
    pub at: String,
    pub event: String,
    pub detail: String,
}

impl Deployment {
    /// `vtime@3`, `knobs vm.swappiness=10`, or both.
    pub fn label(&self) -> String {
        let knobs = self
            .knobs
            .as_ref()
            .map(|k| format!("knobs {}", k.plan.describe()));
        match (&self.scheduler, knobs) {
            (Some(s), Some(k)) => format!("{} + {k}", s.label()),
            (Some(s), None) => s.label(),
            (None, Some(k)) => k,
            (None, None) => "nothing".into(),
        }
    }
}

/// The scheduler of a deployment about to be recorded.
pub struct NewScheduler<'a> {
    pub policy: &'a str,
    pub version: u32,
    pub ops_name: &'a str,
    pub object: &'a [u8],
    pub token_jti: &'a str,
    /// The verifier's token, kept for re-admission at a re-attach.
    pub token: &'a str,
}

/// A deployment about to be recorded.
pub struct NewDeployment<'a> {
    pub scheduler: Option<NewScheduler<'a>>,
    /// The admitted plan, kept (with an empty snapshot) before any write.
    pub knobs: Option<&'a crate::knobs::Applied>,
    pub kernel_release: &'a str,
    pub previous_id: Option<i64>,
    pub plan: &'a CanaryPlan,
    pub baseline: Option<&'a Kpis>,
}

pub use crate::host::now_rfc3339 as now;

fn json<T: Serialize>(v: &T) -> Result<String, Error> {
    serde_json::to_string(v).map_err(|e| Error::Internal(e.into()))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

const COLUMNS: &str = "id, policy, version, ops_name, object_sha256, token_jti, kernel_release, \
     previous_id, state, requested_at, ended_at, reason, request, baseline, windows, timings, knobs";

fn row(r: &Row<'_>) -> rusqlite::Result<(Deployment, String)> {
    let state: String = r.get(8)?;
    let baseline: Option<String> = r.get(13)?;
    let knobs: Option<String> = r.get(16)?;
    let policy: Option<String> = r.get(1)?;
    let scheduler = match policy {
        Some(policy) => Some(SchedulerChange {
            policy,
            version: r.get(2)?,
            ops_name: r.get(3)?,
            object_sha256: r.get(4)?,
            token_jti: r.get(5)?,
        }),
        None => None,
    };
    Ok((
        Deployment {
            id: r.get(0)?,
            scheduler,
            knobs: knobs.as_deref().map(from_json).transpose()?,
            kernel_release: r.get(6)?,
            previous_id: r.get(7)?,
            state: DeployState::Canary,
            requested_at: r.get(9)?,
            ended_at: r.get(10)?,
            reason: r.get(11)?,
            plan: from_json(&r.get::<_, String>(12)?)?,
            baseline: baseline.as_deref().map(from_json).transpose()?,
            windows: from_json(&r.get::<_, String>(14)?)?,
            timings: from_json(&r.get::<_, String>(15)?)?,
        },
        state,
    ))
}

fn finish((mut d, state): (Deployment, String)) -> Result<Deployment, Error> {
    d.state = DeployState::parse(&state)?;
    Ok(d)
}

fn db(e: rusqlite::Error) -> Error {
    Error::Internal(anyhow::anyhow!("deployment store: {e}"))
}

/// Record a new canary deployment and make it the node's intent, in one
/// transaction. Returns its id.
pub fn insert_canary(store: &mut Store, d: &NewDeployment<'_>) -> Result<i64, Error> {
    let sha = d
        .scheduler
        .as_ref()
        .map(|s| hex::encode(Sha256::digest(s.object)));
    let plan = json(d.plan)?;
    let baseline = d.baseline.map(json).transpose()?;
    let knobs = d.knobs.map(json).transpose()?;
    let what = match (&d.scheduler, &sha, d.knobs) {
        (Some(s), Some(sha), k) => format!(
            "{}@{} ({}){}",
            s.policy,
            s.version,
            &sha[..12],
            k.map(|k| format!(" with knobs {}", k.plan.describe()))
                .unwrap_or_default()
        ),
        (_, _, Some(k)) => format!("knobs {}", k.plan.describe()),
        _ => {
            return Err(Error::Input(
                "a change needs a scheduler, knobs, or both".into(),
            ))
        }
    };
    store.write(|tx| {
        if let (Some(s), Some(sha)) = (&d.scheduler, &sha) {
            tx.execute(
                "INSERT OR IGNORE INTO deploy_objects (sha256, bytes) VALUES (?1, ?2)",
                params![sha, s.object],
            )
            .map_err(db)?;
        }
        let s = d.scheduler.as_ref();
        tx.execute(
            "INSERT INTO deployments (policy, version, ops_name, object_sha256, token_jti, \
             kernel_release, previous_id, state, requested_at, request, baseline, knobs, token) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'canary', ?8, ?9, ?10, ?11, ?12)",
            params![
                s.map(|s| s.policy),
                s.map(|s| s.version),
                s.map(|s| s.ops_name),
                sha,
                s.map(|s| s.token_jti),
                d.kernel_release,
                d.previous_id,
                now(),
                plan,
                baseline,
                knobs,
                s.map(|s| s.token)
            ],
        )
        .map_err(db)?;
        let id = tx.last_insert_rowid();
        set_current_tx(tx, Some(id))?;
        event_tx(
            tx,
            Some(id),
            "canary_started",
            &format!(
                "{what} going on as a canary; last known-good: {}",
                d.previous_id
                    .map_or("the kernel default".to_string(), |p| format!(
                        "deployment #{p}"
                    ))
            ),
        )?;
        Ok::<_, Error>(id)
    })
}

/// Keep a change set's state (its snapshot as it grows, released knobs).
pub fn save_knobs(store: &mut Store, id: i64, k: &crate::knobs::Applied) -> Result<(), Error> {
    let k = json(k)?;
    store.write(|tx| {
        tx.execute(
            "UPDATE deployments SET knobs = ?2 WHERE id = ?1",
            params![id, k],
        )
        .map_err(db)?;
        Ok(())
    })
}

/// The deployments whose effects are in force now, newest first: the
/// current one, then each predecessor it superseded (a superseded
/// change's knobs stay set under its successor).
pub fn in_force(store: &Store) -> Result<Vec<Deployment>, Error> {
    let mut out = Vec::new();
    let mut next = current(store)?;
    while let Some(d) = next {
        if out.len() > 1000 {
            break; // a cycle could only come from an edited store
        }
        let prev = match d.previous_id {
            Some(p) => get(store, p)?.filter(|p| p.state == DeployState::Superseded),
            None => None,
        };
        out.push(d);
        next = prev;
    }
    Ok(out)
}

fn set_current_tx(tx: &rusqlite::Transaction<'_>, id: Option<i64>) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO deploy_node (id, current_id, updated_at) VALUES (1, ?1, ?2) \
         ON CONFLICT (id) DO UPDATE SET current_id = excluded.current_id, updated_at = excluded.updated_at",
        params![id, now()],
    )
    .map_err(db)?;
    Ok(())
}

fn event_tx(
    tx: &rusqlite::Transaction<'_>,
    id: Option<i64>,
    event: &str,
    detail: &str,
) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO deploy_events (deployment_id, at, event, detail) VALUES (?1, ?2, ?3, ?4)",
        params![id, now(), event, detail],
    )
    .map_err(db)?;
    Ok(())
}

/// Append an event that changes no state.
pub fn event(store: &mut Store, id: Option<i64>, event: &str, detail: &str) -> Result<(), Error> {
    store.write(|tx| event_tx(tx, id, event, detail))
}

/// Move deployment `id` to `state`, set the node's intent to `current`,
/// and log `event` — one transaction.
pub fn transition(
    store: &mut Store,
    id: i64,
    state: DeployState,
    current: Option<i64>,
    event: &str,
    reason: &str,
) -> Result<(), Error> {
    let ended = matches!(state, DeployState::RolledBack | DeployState::Superseded);
    store.write(|tx| {
        tx.execute(
            "UPDATE deployments SET state = ?2, reason = ?3, \
             ended_at = CASE WHEN ?4 THEN ?5 ELSE NULL END WHERE id = ?1",
            params![id, state.as_str(), reason, ended, now()],
        )
        .map_err(db)?;
        set_current_tx(tx, current)?;
        event_tx(tx, Some(id), event, reason)
    })
}

pub fn save_measurements(
    store: &mut Store,
    id: i64,
    windows: &[Kpis],
    timings: &Timings,
) -> Result<(), Error> {
    let (w, t) = (json(&windows)?, json(timings)?);
    store.write(|tx| {
        tx.execute(
            "UPDATE deployments SET windows = ?2, timings = ?3 WHERE id = ?1",
            params![id, w, t],
        )
        .map_err(db)?;
        Ok(())
    })
}

/// The verifier's token kept with deployment `id` (none: no scheduler, or
/// recorded before tokens were kept). Not part of [`Deployment`], which
/// observe-scope callers read.
pub fn token(store: &Store, id: i64) -> Result<Option<String>, Error> {
    store
        .conn()
        .query_row("SELECT token FROM deployments WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()
        .map_err(db)
        .map(Option::flatten)
}

pub fn get(store: &Store, id: i64) -> Result<Option<Deployment>, Error> {
    store
        .conn()
        .query_row(
            &format!("SELECT {COLUMNS} FROM deployments WHERE id = ?1"),
            [id],
            row,
        )
        .optional()
        .map_err(db)?
        .map(finish)
        .transpose()
}

/// The deployment the node should be running (`None`: the kernel default).
pub fn current(store: &Store) -> Result<Option<Deployment>, Error> {
    let id: Option<i64> = store
        .conn()
        .query_row("SELECT current_id FROM deploy_node WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(db)?
        .flatten();
    match id {
        Some(id) => get(store, id),
        None => Ok(None),
    }
}

/// Newest first.
pub fn list(store: &Store, limit: usize) -> Result<Vec<Deployment>, Error> {
    let mut st = store
        .conn()
        .prepare(&format!(
            "SELECT {COLUMNS} FROM deployments ORDER BY id DESC LIMIT ?1"
        ))
        .map_err(db)?;
    let rows = st
        .query_map([limit as i64], row)
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db)?;
    rows.into_iter().map(finish).collect()
}

/// Newest first.
pub fn events(store: &Store, limit: usize) -> Result<Vec<DeployEvent>, Error> {
    let mut st = store
        .conn()
        .prepare(
            "SELECT id, deployment_id, at, event, detail FROM deploy_events ORDER BY id DESC LIMIT ?1",
        )
        .map_err(db)?;
    let rows = st
        .query_map([limit as i64], |r| {
            Ok(DeployEvent {
                id: r.get(0)?,
                deployment_id: r.get(1)?,
                at: r.get(2)?,
                event: r.get(3)?,
                detail: r.get(4)?,
            })
        })
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db)?;
    Ok(rows)
}

/// The object bytes of a deployment, re-hashed: a store edited behind our
/// back is refused rather than attached.
pub fn object(store: &Store, sha256: &str) -> Result<Vec<u8>, Error> {
    let bytes: Vec<u8> = store
        .conn()
        .query_row(
            "SELECT bytes FROM deploy_objects WHERE sha256 = ?1",
            [sha256],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?
        .ok_or_else(|| {
            Error::Internal(anyhow::anyhow!("object {sha256} missing from the store"))
        })?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != sha256 {
        return Err(Error::Internal(anyhow::anyhow!(
            "stored object {sha256} now hashes to {actual}; refusing to attach it"
        )));
    }
    Ok(bytes)
}
