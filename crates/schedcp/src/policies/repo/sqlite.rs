//! The embedded backend: the policy tables in schedcp's SQLite store, FTS5
//! (BM25) for text and a sqlite-vec `vec0` table for vectors, queried
//! through an exact in-memory copy ([`super::flat`]).

use std::cell::RefCell;
use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::flat::{self, FlatIndex};
use super::{db_err, now, DocRow, Evidence, Hit, Insert, Repository, Usage, Workload};
use crate::bpf::meta::PolicyMeta;
use crate::error::Error;
use crate::policies::model::{
    Body, History, NewResult, NewVerifyReport, PolicyRef, PolicyResult, PolicySummary,
    PolicyVersion, SearchDoc, State, StoredVerifyReport, Transition,
};
use crate::policies::quota::Writer;
use crate::store::Store;

/// Text terms are pruned by document frequency only above this many
/// matching policies: below it BM25 is cheap and every term counts.
const PRUNE_MIN_DF: i64 = 500;

pub struct SqliteRepo {
    store: Store,
    /// KNN answers from this exact copy of `policy_vec` (see [`flat`]).
    flat: RefCell<Option<FlatIndex>>,
}

impl SqliteRepo {
    pub fn new(store: Store) -> SqliteRepo {
        SqliteRepo {
            store,
            flat: RefCell::new(None),
        }
    }

    /// KNN by sqlite-vec's own `vec0` scan (what [`FlatIndex`] replaces on
    /// the query path; the benchmark measures both).
    fn vec0_search(
        &self,
        query: &[f32],
        state: Option<State>,
        k: usize,
    ) -> Result<Vec<Hit>, Error> {
        let c = self.store.conn();
        let blob = vec_blob(query);
        // Unit vectors: cosine similarity = 1 - (Euclidean distance)² / 2.
        let map = |r: &Row<'_>| {
            let d = r.get::<_, f64>(1)?;
            Ok(Hit {
                name: r.get(0)?,
                score: 1.0 - d * d / 2.0,
            })
        };
        // The state filter runs inside the KNN scan (a vec0 metadata column),
        // so k hits come back even when most rows are filtered out.
        let sql = format!(
            "SELECT p.name, x.distance FROM
               (SELECT policy_id, distance FROM policy_vec
                WHERE embedding MATCH ?1 AND k = ?2 {}) x
             JOIN policies p ON p.id = x.policy_id ORDER BY x.distance",
            if state.is_some() {
                "AND state = ?3"
            } else {
                ""
            }
        );
        let rows = c.prepare_cached(&sql).and_then(|mut st| match state {
            Some(s) => st
                .query_map(params![blob, k as i64, s.as_str()], map)?
                .collect::<Result<Vec<_>, _>>(),
            None => st
                .query_map(params![blob, k as i64], map)?
                .collect::<Result<Vec<_>, _>>(),
        });
        rows.map_err(|e| db_err("vector search", e))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// Vectors are stored as little-endian f32 blobs, sqlite-vec's format.
pub fn vec_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn blob_vec(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The row id of `name@version`; an input error if there is none.
fn version_id(c: &rusqlite::Connection, name: &str, version: u32) -> Result<i64, Error> {
    c.query_row(
        "SELECT v.id FROM policy_versions v JOIN policies p ON p.id = v.policy_id
         WHERE p.name = ?1 AND v.version = ?2",
        params![name, version],
        |r| r.get(0),
    )
    .optional()
    .map_err(|e| db_err("finding a version", e))?
    .ok_or_else(|| Error::NotFound(format!("no policy version {name}@{version}")))
}

fn parse<T: std::str::FromStr<Err = String>>(s: String) -> rusqlite::Result<T> {
    s.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

fn json<T: serde::de::DeserializeOwned>(s: String) -> rusqlite::Result<T> {
    serde_json::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

const VERSION_COLUMNS: &str =
    "p.name, v.version, p.origin, v.state, v.content_hash, v.created_at, v.meta, v.body";

fn version_row(r: &Row<'_>) -> rusqlite::Result<PolicyVersion> {
    Ok(PolicyVersion {
        name: r.get(0)?,
        version: r.get(1)?,
        origin: parse(r.get(2)?)?,
        state: parse(r.get(3)?)?,
        content_hash: r.get(4)?,
        created_at: r.get(5)?,
        meta: json(r.get(6)?)?,
        body: json(r.get(7)?)?,
    })
}

/// Latest version of every policy, joined to its policy row.
const LATEST: &str = "policy_versions v JOIN policies p ON p.id = v.policy_id
     WHERE v.version = (SELECT max(version) FROM policy_versions WHERE policy_id = p.id)";

fn summary_row(r: &Row<'_>) -> rusqlite::Result<PolicySummary> {
    let meta: PolicyMeta = json(r.get(4)?)?;
    Ok(PolicySummary {
        name: r.get(0)?,
        kind: parse(r.get(1)?)?,
        origin: parse(r.get(2)?)?,
        version: r.get(3)?,
        state: parse(r.get(5)?)?,
        description: meta.description,
        target_workloads: meta.target_workloads,
    })
}

fn result_row(r: &Row<'_>) -> rusqlite::Result<PolicyResult> {
    Ok(PolicyResult {
        id: r.get(0)?,
        version: r.get(1)?,
        recorded_at: r.get(2)?,
        result: NewResult {
            workload: r.get(3)?,
            workload_description: r.get(4)?,
            metric: r.get(5)?,
            unit: r.get(6)?,
            direction: parse(r.get(7)?)?,
            value: r.get(8)?,
            baseline: r.get(9)?,
            improvement_pct: r.get(10)?,
            p_value: r.get(11)?,
            significant: r.get(12)?,
            verdict: parse(r.get(13)?)?,
            source: parse(r.get(14)?)?,
            environment: r.get(15)?,
            signature: super::signature_from_json(r.get(16)?),
        },
    })
}

const RESULT_COLUMNS: &str = "r.id, v.version, r.recorded_at, r.workload, w.text, r.metric, r.unit,
     r.direction, r.value, r.baseline, r.improvement_pct, r.p_value, r.significant, r.verdict,
     r.source, r.environment, r.signature";

fn index_policy(
    tx: &Transaction<'_>,
    policy_id: i64,
    doc: &SearchDoc,
    state: State,
    emb: &[f32],
) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM policy_fts WHERE rowid = ?1", [policy_id])?;
    tx.execute(
        "INSERT INTO policy_fts (rowid, name, description, algorithm, targets, limitations, tunables)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            policy_id,
            doc.name,
            doc.description,
            doc.algorithm,
            doc.targets,
            doc.limitations,
            doc.tunables
        ],
    )?;
    tx.execute("DELETE FROM policy_vec WHERE policy_id = ?1", [policy_id])?;
    tx.execute(
        "INSERT INTO policy_vec (policy_id, state, embedding) VALUES (?1, ?2, ?3)",
        params![policy_id, state.as_str(), vec_blob(emb)],
    )?;
    tx.execute(
        "UPDATE policies SET latest_state = ?1 WHERE id = ?2",
        params![state.as_str(), policy_id],
    )?;
    Ok(())
}

/// What API token `by` has added and recorded, as `c` sees it.
fn usage_on(c: &Connection, by: &str) -> Result<Usage, Error> {
    let (versions, bytes, results): (i64, i64, i64) = c
        .query_row(
            "SELECT count(*),
                    coalesce(sum(length(CAST(meta AS BLOB)) + length(CAST(body AS BLOB))), 0),
                    (SELECT count(*) FROM policy_results WHERE recorded_by = ?1)
             FROM policy_versions WHERE added_by = ?1",
            [by],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(|e| db_err("counting what a token wrote", e))?;
    Ok(Usage {
        versions: versions as u64,
        bytes: bytes as u64,
        results: results as u64,
    })
}

fn insert_one(tx: &Transaction<'_>, it: &Insert<'_>) -> Result<PolicyVersion, Error> {
    let p = it.policy;
    let name = &p.meta.name;
    let at = it.created_at.clone().unwrap_or_else(now);
    let added_by = it.added_by.map(|w| w.token);
    // The write transaction is immediate: this token's other writers wait,
    // so the usage read here stays true to commit.
    if let Some(w) = &it.added_by {
        w.admit_version(&usage_on(tx, w.token)?, p.stored_bytes())?;
    }
    let existing: Option<(i64, String, String, Option<String>)> = tx
        .query_row(
            "SELECT id, kind, origin, owner FROM policies WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(|e| db_err("looking up a policy", e))?;
    let policy_id = match existing {
        Some((id, kind, origin, owner)) => {
            if let Some(by) = &it.added_by {
                if owner.as_deref() != Some(by.token) {
                    return Err(super::not_owner(name, owner.as_deref(), by.token));
                }
            }
            if kind != p.body.kind().as_str() || origin != p.origin.as_str() {
                return Err(Error::Input(format!(
                    "policy '{name}' exists as a {kind} policy of origin {origin}; a new version must keep both (this one is {} / {}). Choose another name.",
                    p.body.kind(),
                    p.origin
                )));
            }
            if let Some(v) = tx
                .query_row(
                    "SELECT version FROM policy_versions WHERE policy_id = ?1 AND content_hash = ?2",
                    params![id, it.content_hash],
                    |r| r.get::<_, u32>(0),
                )
                .optional()
                .map_err(|e| db_err("checking for a duplicate", e))?
            {
                return Err(Error::Input(format!(
                    "{name}@{v} already has exactly this content (sha256 {}); nothing to add",
                    &it.content_hash[..12]
                )));
            }
            id
        }
        None => {
            tx.execute(
                "INSERT INTO policies (name, kind, origin, created_at, owner)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    name,
                    p.body.kind().as_str(),
                    p.origin.as_str(),
                    at,
                    added_by
                ],
            )
            .map_err(|e| db_err("inserting a policy", e))?;
            tx.last_insert_rowid()
        }
    };
    let version: u32 = tx
        .query_row(
            "SELECT coalesce(max(version), 0) + 1 FROM policy_versions WHERE policy_id = ?1",
            [policy_id],
            |r| r.get(0),
        )
        .map_err(|e| db_err("numbering a version", e))?;
    let meta = serde_json::to_string(&p.meta).map_err(|e| db_err("encoding metadata", e))?;
    let body = serde_json::to_string(&p.body).map_err(|e| db_err("encoding the body", e))?;
    tx.execute(
        "INSERT INTO policy_versions (policy_id, version, content_hash, meta, body, state,
           created_at, added_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            policy_id,
            version,
            it.content_hash,
            meta,
            body,
            it.state.as_str(),
            at,
            added_by
        ],
    )
    .map_err(|e| db_err("inserting a version", e))?;
    let version_id = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO policy_transitions (version_id, from_state, to_state, reason, at)
         VALUES (?1, NULL, ?2, ?3, ?4)",
        params![version_id, it.state.as_str(), it.reason, at],
    )
    .map_err(|e| db_err("recording a transition", e))?;
    index_policy(tx, policy_id, &it.doc, it.state, &it.embedding)
        .map_err(|e| db_err("indexing a policy", e))?;
    Ok(PolicyVersion {
        name: name.clone(),
        version,
        origin: p.origin,
        state: it.state,
        content_hash: it.content_hash.clone(),
        created_at: at,
        meta: p.meta.clone(),
        body: p.body.clone(),
    })
}

impl Repository for SqliteRepo {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn insert_versions(&mut self, items: &[Insert<'_>]) -> Result<Vec<PolicyVersion>, Error> {
        self.store
            .write(|tx| -> Result<_, Error> { items.iter().map(|it| insert_one(tx, it)).collect() })
    }

    fn get(&self, r: &PolicyRef) -> Result<Option<PolicyVersion>, Error> {
        let c = self.store.conn();
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM policy_versions v JOIN policies p ON p.id = v.policy_id
             WHERE p.name = ?1 AND v.version = coalesce(?2,
                 (SELECT max(version) FROM policy_versions WHERE policy_id = p.id))"
        );
        c.query_row(&sql, params![r.name, r.version], version_row)
            .optional()
            .map_err(|e| db_err("reading a version", e))
    }

    fn list(&self, state: Option<State>) -> Result<Vec<PolicySummary>, Error> {
        let sql = format!(
            "SELECT p.name, p.kind, p.origin, v.version, v.meta, v.state FROM {LATEST}
               AND (?1 IS NULL OR v.state = ?1) ORDER BY p.name"
        );
        let c = self.store.conn();
        let mut st = c.prepare_cached(&sql).map_err(|e| db_err("listing", e))?;
        let rows = st
            .query_map([state.map(State::as_str)], summary_row)
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .map_err(|e| db_err("listing", e));
        rows
    }

    fn history(&self, name: &str) -> Result<Option<History>, Error> {
        let c = self.store.conn();
        let head: Option<(i64, String, String)> = c
            .query_row(
                "SELECT id, kind, origin FROM policies WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| db_err("reading history", e))?;
        let Some((id, kind, origin)) = head else {
            return Ok(None);
        };
        let read = || -> rusqlite::Result<History> {
            let versions = c
                .prepare(&format!(
                    "SELECT {VERSION_COLUMNS} FROM policy_versions v JOIN policies p ON p.id = v.policy_id
                     WHERE p.id = ?1 ORDER BY v.version"
                ))?
                .query_map([id], version_row)?
                .collect::<Result<Vec<_>, _>>()?;
            let transitions = c
                .prepare(
                    "SELECT v.version, t.from_state, t.to_state, t.reason, t.at
                     FROM policy_transitions t JOIN policy_versions v ON v.id = t.version_id
                     WHERE v.policy_id = ?1 ORDER BY t.id",
                )?
                .query_map([id], |r| {
                    Ok(Transition {
                        version: r.get(0)?,
                        from: r.get::<_, Option<String>>(1)?.map(parse).transpose()?,
                        to: parse(r.get(2)?)?,
                        reason: r.get(3)?,
                        at: r.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let results = c
                .prepare(&format!(
                    "SELECT {RESULT_COLUMNS} FROM policy_results r
                     JOIN policy_versions v ON v.id = r.version_id
                     JOIN result_workloads w ON w.id = r.workload_id
                     WHERE v.policy_id = ?1 ORDER BY r.id"
                ))?
                .query_map([id], result_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(History {
                name: name.to_string(),
                kind: parse(kind.clone())?,
                origin: parse(origin.clone())?,
                versions,
                transitions,
                results,
            })
        };
        read().map(Some).map_err(|e| db_err("reading history", e))
    }

    fn transition(
        &mut self,
        name: &str,
        version: u32,
        from: State,
        to: State,
        reason: &str,
    ) -> Result<bool, Error> {
        self.store.write(|tx| -> Result<bool, Error> {
            let row: Option<(i64, i64, u32)> = tx
                .query_row(
                    "SELECT v.id, p.id, (SELECT max(version) FROM policy_versions WHERE policy_id = p.id)
                     FROM policy_versions v JOIN policies p ON p.id = v.policy_id
                     WHERE p.name = ?1 AND v.version = ?2 AND v.state = ?3",
                    params![name, version, from.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(|e| db_err("reading a state", e))?;
            let Some((vid, pid, latest)) = row else {
                return Ok(false);
            };
            let at = now();
            tx.execute(
                "UPDATE policy_versions SET state = ?1 WHERE id = ?2",
                params![to.as_str(), vid],
            )
            .and_then(|_| {
                tx.execute(
                    "INSERT INTO policy_transitions (version_id, from_state, to_state, reason, at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![vid, from.as_str(), to.as_str(), reason, at],
                )
            })
            .map_err(|e| db_err("changing a state", e))?;
            if latest == version {
                tx.execute(
                    "UPDATE policy_vec SET state = ?1 WHERE policy_id = ?2",
                    params![to.as_str(), pid],
                )
                .and_then(|_| {
                    tx.execute(
                        "UPDATE policies SET latest_state = ?1 WHERE id = ?2",
                        params![to.as_str(), pid],
                    )
                })
                .map_err(|e| db_err("updating the index", e))?;
            }
            Ok(true)
        })
    }

    fn insert_verify_report(
        &mut self,
        name: &str,
        version: u32,
        r: &NewVerifyReport,
        keep: usize,
    ) -> Result<StoredVerifyReport, Error> {
        let report = r.report.to_string();
        self.store.write(|tx| -> Result<StoredVerifyReport, Error> {
            let vid = version_id(tx, name, version)?;
            let at = now();
            tx.execute(
                "INSERT INTO verify_reports (version_id, passed, report_sha256, object_sha256,
                   kernel_release, report, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    vid,
                    r.passed,
                    r.report_sha256,
                    r.object_sha256,
                    r.kernel_release,
                    report,
                    at
                ],
            )
            .map_err(|e| db_err("keeping a verify report", e))?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "DELETE FROM verify_reports WHERE version_id = ?1
                   AND id NOT IN (SELECT id FROM verify_reports WHERE version_id = ?1
                                  ORDER BY id DESC LIMIT ?2)
                   AND id NOT IN (SELECT id FROM verify_reports
                                  WHERE version_id = ?1 AND passed = 1
                                  ORDER BY id DESC LIMIT 1)",
                params![vid, keep.max(1) as i64],
            )
            .map_err(|e| db_err("pruning old verify reports", e))?;
            Ok(StoredVerifyReport {
                id,
                name: name.to_string(),
                version,
                passed: r.passed,
                report_sha256: r.report_sha256.clone(),
                object_sha256: r.object_sha256.clone(),
                kernel_release: r.kernel_release.clone(),
                recorded_at: at,
                report: r.report.clone(),
            })
        })
    }

    fn verify_reports(
        &self,
        name: &str,
        version: u32,
        limit: usize,
    ) -> Result<Vec<StoredVerifyReport>, Error> {
        let c = self.store.conn();
        let read = || -> rusqlite::Result<Vec<(StoredVerifyReport, String)>> {
            c.prepare(
                "SELECT r.id, r.passed, r.report_sha256, r.object_sha256, r.kernel_release,
                        r.recorded_at, r.report
                 FROM verify_reports r
                 JOIN policy_versions v ON v.id = r.version_id
                 JOIN policies p ON p.id = v.policy_id
                 WHERE p.name = ?1 AND v.version = ?2
                 ORDER BY r.id DESC LIMIT ?3",
            )?
            .query_map(params![name, version, limit as i64], |row| {
                Ok((
                    StoredVerifyReport {
                        id: row.get(0)?,
                        name: name.to_string(),
                        version,
                        passed: row.get(1)?,
                        report_sha256: row.get(2)?,
                        object_sha256: row.get(3)?,
                        kernel_release: row.get(4)?,
                        recorded_at: row.get(5)?,
                        report: serde_json::Value::Null,
                    },
                    row.get(6)?,
                ))
            })?
            .collect()
        };
        read()
            .map_err(|e| db_err("reading verify reports", e))?
            .into_iter()
            .map(|(mut r, text)| {
                r.report = serde_json::from_str(&text)
                    .map_err(|e| db_err("decoding a verify report", e))?;
                Ok(r)
            })
            .collect()
    }

    fn insert_result(
        &mut self,
        name: &str,
        version: u32,
        r: &NewResult,
        workload_embedding: &[f32],
        recorded_by: Option<Writer<'_>>,
    ) -> Result<PolicyResult, Error> {
        self.store.write(|tx| -> Result<PolicyResult, Error> {
            let vid = version_id(tx, name, version)?;
            if let Some(w) = &recorded_by {
                w.admit_result(&usage_on(tx, w.token)?)?;
            }
            tx.execute(
                "INSERT INTO result_workloads (text, embedding) VALUES (?1, ?2)
                 ON CONFLICT (text) DO NOTHING",
                params![r.workload_description, vec_blob(workload_embedding)],
            )
            .map_err(|e| db_err("recording a workload", e))?;
            let wid: i64 = tx
                .query_row(
                    "SELECT id FROM result_workloads WHERE text = ?1",
                    [&r.workload_description],
                    |r| r.get(0),
                )
                .map_err(|e| db_err("recording a workload", e))?;
            let at = now();
            tx.execute(
                "INSERT INTO policy_results (version_id, workload_id, workload, metric, unit, direction,
                   value, baseline, improvement_pct, p_value, significant, verdict, source,
                   environment, recorded_at, signature, recorded_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                   ?17)",
                params![
                    vid,
                    wid,
                    r.workload,
                    r.metric,
                    r.unit,
                    r.direction.as_str(),
                    r.value,
                    r.baseline,
                    r.improvement_pct,
                    r.p_value,
                    r.significant,
                    r.verdict.as_str(),
                    r.source.as_str(),
                    r.environment,
                    at,
                    super::signature_json(r)?,
                    recorded_by.map(|w| w.token)
                ],
            )
            .map_err(|e| db_err("recording a result", e))?;
            Ok(PolicyResult {
                id: tx.last_insert_rowid(),
                version,
                recorded_at: at,
                result: r.clone(),
            })
        })
    }

    fn usage(&self, by: &str) -> Result<Usage, Error> {
        usage_on(self.store.conn(), by)
    }

    fn text_search(
        &self,
        terms: &[String],
        state: Option<State>,
        k: usize,
    ) -> Result<Vec<Hit>, Error> {
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.store.conn();
        // Each term quoted: FTS5 syntax in a query is never interpreted.
        let quote = |t: &String| format!("\"{}\"", t.replace(['"', '\0'], ""));
        // BM25 reads every matching row's length, so a term found in most of
        // the library costs a lookup per policy while barely moving the
        // ranking (its IDF is near zero). In a large library, terms in more
        // than a quarter of it are dropped, keeping at least the rarest one.
        let total: i64 = c
            .query_row("SELECT count(*) FROM policies", [], |r| r.get(0))
            .map_err(|e| db_err("text search", e))?;
        let mut df: Vec<(i64, &String)> = Vec::with_capacity(terms.len());
        {
            let mut st = c
                .prepare_cached("SELECT count(*) FROM policy_fts WHERE policy_fts MATCH ?1")
                .map_err(|e| db_err("text search", e))?;
            for t in terms {
                let n: i64 = st
                    .query_row([quote(t)], |r| r.get(0))
                    .map_err(|e| db_err("text search", e))?;
                if n > 0 {
                    df.push((n, t));
                }
            }
        }
        df.sort();
        let cutoff = (total / 4).max(PRUNE_MIN_DF);
        let kept: Vec<String> = df
            .iter()
            .enumerate()
            .filter(|(i, (n, _))| *i == 0 || *n <= cutoff)
            .map(|(_, (_, t))| quote(t))
            .collect();
        if kept.is_empty() {
            return Ok(Vec::new());
        }
        let query = kept.join(" OR ");
        let sql = "SELECT p.name, bm25(policy_fts) AS rank FROM policy_fts
             JOIN policies p ON p.id = policy_fts.rowid
             WHERE policy_fts MATCH ?1 AND (?2 IS NULL OR p.latest_state = ?2)
             ORDER BY rank LIMIT ?3";
        let mut st = c
            .prepare_cached(sql)
            .map_err(|e| db_err("text search", e))?;
        let hits = st
            .query_map(params![query, state.map(State::as_str), k as i64], |r| {
                // FTS5's bm25() is negated so that ORDER BY ascends.
                Ok(Hit {
                    name: r.get(0)?,
                    score: -r.get::<_, f64>(1)?,
                })
            })
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .map_err(|e| db_err("text search", e));
        hits
    }

    fn vector_search(
        &self,
        query: &[f32],
        state: Option<State>,
        k: usize,
    ) -> Result<Vec<Hit>, Error> {
        let c = self.store.conn();
        let now = flat::stamp(c).map_err(|e| db_err("vector search", e))?;
        let mut cached = self.flat.borrow_mut();
        if cached.as_ref().is_none_or(|f| f.stamp != now) {
            let t = std::time::Instant::now();
            let idx = FlatIndex::load(c, crate::policies::embed::DIM, now)
                .map_err(|e| db_err("reading the vector index", e))?;
            tracing::debug!(
                "vector index: {} policies read in {:.1} ms",
                idx.len(),
                t.elapsed().as_secs_f64() * 1e3
            );
            *cached = Some(idx);
        }
        Ok(cached
            .as_ref()
            .map(|f| f.nearest(query, state, k))
            .unwrap_or_default())
    }

    fn native_vector_search(
        &self,
        query: &[f32],
        state: Option<State>,
        k: usize,
    ) -> Option<Result<Vec<Hit>, Error>> {
        Some(self.vec0_search(query, state, k))
    }

    fn workloads(&self) -> Result<Vec<Workload>, Error> {
        let c = self.store.conn();
        let mut st = c
            .prepare_cached("SELECT id, text, embedding FROM result_workloads ORDER BY id")
            .map_err(|e| db_err("reading workloads", e))?;
        let rows = st
            .query_map([], |r| {
                Ok(Workload {
                    id: r.get(0)?,
                    text: r.get(1)?,
                    embedding: blob_vec(&r.get::<_, Vec<u8>>(2)?),
                })
            })
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .map_err(|e| db_err("reading workloads", e));
        rows
    }

    fn evidence(&self, workload_ids: &[i64], state: Option<State>) -> Result<Vec<Evidence>, Error> {
        if workload_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(workload_ids).expect("ids serialise");
        let c = self.store.conn();
        let mut st = c
            .prepare_cached(
                "SELECT p.name, r.workload_id, r.workload, r.metric, r.verdict, r.improvement_pct, r.p_value
                 FROM policy_results r
                 JOIN policy_versions v ON v.id = r.version_id
                 JOIN policies p ON p.id = v.policy_id
                 WHERE r.significant = 1 AND r.verdict != 'no_change'
                   AND r.workload_id IN (SELECT value FROM json_each(?1))
                   AND (?2 IS NULL OR (SELECT state FROM policy_versions
                        WHERE policy_id = p.id ORDER BY version DESC LIMIT 1) = ?2)
                 ORDER BY r.id",
            )
            .map_err(|e| db_err("reading evidence", e))?;
        let rows = st
            .query_map(params![ids, state.map(State::as_str)], |r| {
                Ok(Evidence {
                    name: r.get(0)?,
                    workload_id: r.get(1)?,
                    workload: r.get(2)?,
                    metric: r.get(3)?,
                    verdict: parse(r.get(4)?)?,
                    improvement_pct: r.get(5)?,
                    p_value: r.get(6)?,
                })
            })
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .map_err(|e| db_err("reading evidence", e));
        rows
    }

    fn docs(&self, names: &[String]) -> Result<Vec<DocRow>, Error> {
        let c = self.store.conn();
        let names_json = serde_json::to_string(names).expect("names serialise");
        let sql = format!(
            "SELECT p.name, p.kind, p.origin, v.version, v.meta, v.state, v.body FROM {LATEST}
               AND p.name IN (SELECT value FROM json_each(?1))"
        );
        let mut st = c
            .prepare_cached(&sql)
            .map_err(|e| db_err("reading policies", e))?;
        let mut by_name: HashMap<String, DocRow> = st
            .query_map([names_json], |r| {
                let summary = summary_row(r)?;
                let meta: PolicyMeta = json(r.get(4)?)?;
                let body: Body = json(r.get(6)?)?;
                Ok(DocRow {
                    summary,
                    doc: SearchDoc::new(&meta, &body),
                })
            })
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .map_err(|e| db_err("reading policies", e))?
            .into_iter()
            .map(|d| (d.summary.name.clone(), d))
            .collect();
        Ok(names.iter().filter_map(|n| by_name.remove(n)).collect())
    }

    fn index_model(&self) -> Result<Option<String>, Error> {
        self.store
            .conn()
            .query_row(
                "SELECT value FROM policy_index_meta WHERE key = 'model'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| db_err("reading the index model", e))
    }

    fn reindex(&mut self, model: &str, embed: &mut super::EmbedFn<'_>) -> Result<(), Error> {
        self.store.write(|tx| -> Result<(), Error> {
            let docs: Vec<(i64, String, String, String)> = tx
                .prepare(&format!(
                    "SELECT p.id, v.meta, v.body, v.state FROM {LATEST}"
                ))
                .and_then(|mut st| {
                    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                        .collect()
                })
                .map_err(|e| db_err("reading policies", e))?;
            let mut texts = Vec::with_capacity(docs.len());
            let mut parsed = Vec::with_capacity(docs.len());
            for (id, meta, body, state) in docs {
                let meta: PolicyMeta =
                    serde_json::from_str(&meta).map_err(|e| db_err("decoding", e))?;
                let body: Body = serde_json::from_str(&body).map_err(|e| db_err("decoding", e))?;
                let doc = SearchDoc::new(&meta, &body);
                texts.push(doc.embedding_text());
                parsed.push((
                    id,
                    doc,
                    state.parse::<State>().map_err(|e| db_err("decoding", e))?,
                ));
            }
            let vectors = embed(&texts)?;
            for ((id, doc, state), v) in parsed.iter().zip(&vectors) {
                index_policy(tx, *id, doc, *state, v).map_err(|e| db_err("indexing", e))?;
            }
            let workloads: Vec<(i64, String)> = tx
                .prepare("SELECT id, text FROM result_workloads")
                .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
                .map_err(|e| db_err("reading workloads", e))?;
            let texts: Vec<String> = workloads.iter().map(|w| w.1.clone()).collect();
            for ((id, _), v) in workloads.iter().zip(embed(&texts)?) {
                tx.execute(
                    "UPDATE result_workloads SET embedding = ?1 WHERE id = ?2",
                    params![vec_blob(&v), id],
                )
                .map_err(|e| db_err("indexing workloads", e))?;
            }
            tx.execute(
                "INSERT INTO policy_index_meta (key, value) VALUES ('model', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [model],
            )
            .map_err(|e| db_err("recording the index model", e))?;
            Ok(())
        })
    }

    fn store_bytes(&self) -> Option<u64> {
        self.store
            .conn()
            .query_row(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                [],
                |r| r.get::<_, i64>(0),
            )
            .ok()
            .map(|b| b as u64)
    }

    fn count(&self) -> Result<usize, Error> {
        self.store
            .conn()
            .query_row("SELECT count(*) FROM policies", [], |r| r.get::<_, i64>(0))
            .map(|n| n as usize)
            .map_err(|e| db_err("counting", e))
    }
}
