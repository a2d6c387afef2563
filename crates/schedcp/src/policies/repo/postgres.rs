//! Fleet backend: the policy repository in PostgreSQL, with pgvector for
//! vectors and a weighted `tsvector` for full text, so that many hosts share
//! one library.
//!
//! The tables mirror the embedded backend's (`store/migrations/0002_policies.sql`)
//! column for column, and every method mirrors [`super::sqlite::SqliteRepo`]'s
//! semantics: the same errors for a duplicate or a changed kind/origin, the
//! same version numbering, transitions as compare-and-set, the latest
//! version's text and vector indexed per policy. Timestamps are stored as the
//! same RFC 3339 text so that both backends hand back identical strings.
//!
//! Where the two differ, and why that is fine:
//! - Text ranking is `ts_rank_cd`: cover density over weighted lexemes
//!   (name and targets A, description B, algorithm and tunables C,
//!   limitations D). It is not BM25, which the embedded backend gets from
//!   FTS5: PostgreSQL has no BM25, and `ts_rank_cd` ignores how rare a term
//!   is across the library (BM25's IDF) and how long a document is. That is
//!   acceptable because no score leaves its retriever: [`super::super::Library`]
//!   fuses the text and vector retrievers by rank (reciprocal rank fusion),
//!   so only the order within one retriever matters, and the field weights
//!   keep the order that matters most (a term in the name beats one in the
//!   limitations). The English configuration also drops stop words, which
//!   FTS5's tokenizer keeps.
//! - Concurrency: SQLite serialises writers with one lock; here writers of
//!   one policy take turns on its `policies` row (`FOR NO KEY UPDATE`), which
//!   gives the duplicate check, version numbering and state compare-and-set
//!   the same guarantees while other policies are written in parallel.
//!
//! Connections are plain TCP (the `postgres` crate's `NoTls`): a URL that
//! demands TLS (`sslmode=require`) is refused at connect.
//!
//! The schema is applied at connect, idempotently: one transaction, under an
//! advisory lock so that processes starting together don't race, numbered in
//! `policy_schema` so that later versions can migrate it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use pgvector::Vector;
use postgres::error::SqlState;
use postgres::types::{FromSql, ToSql};
use postgres::{Client, NoTls, Row, Transaction};

use super::{db_err, now, DocRow, EmbedFn, Evidence, Hit, Insert, Repository, Usage, Workload};
use crate::bpf::meta::PolicyMeta;
use crate::error::Error;
use crate::policies::model::{
    Body, History, NewResult, NewVerifyReport, PolicyRef, PolicyResult, PolicySummary,
    PolicyVersion, SearchDoc, State, StoredVerifyReport, Transition,
};
use crate::policies::quota::Writer;

/// The schema, one migration per entry; entry `i` is schema version `i + 1`.
/// Never edit an applied entry: append a new one.
const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4];

const SCHEMA_V1: &str = r#"
CREATE TABLE policies (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    kind       text NOT NULL CHECK (kind IN ('bpf', 'external')),
    origin     text NOT NULL CHECK (origin IN ('builtin', 'external', 'agent')),
    created_at text NOT NULL
);

-- Immutable versions; `meta` and `body` are JSON text as in the embedded
-- store (text, not jsonb: they round-trip byte for byte). Only `state` changes.
CREATE TABLE policy_versions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    policy_id    bigint NOT NULL REFERENCES policies (id),
    version      integer NOT NULL CHECK (version > 0),
    content_hash text NOT NULL,
    meta         text NOT NULL,
    body         text NOT NULL,
    state        text NOT NULL
        CHECK (state IN ('candidate', 'verified', 'deployed', 'promoted', 'retired')),
    created_at   text NOT NULL,
    CONSTRAINT policy_versions_number UNIQUE (policy_id, version),
    CONSTRAINT policy_versions_content UNIQUE (policy_id, content_hash)
);

CREATE TABLE policy_transitions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version_id bigint NOT NULL REFERENCES policy_versions (id),
    from_state text,
    to_state   text NOT NULL,
    reason     text NOT NULL,
    at         text NOT NULL
);
CREATE INDEX policy_transitions_by_version ON policy_transitions (version_id, id);

CREATE TABLE result_workloads (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    text      text NOT NULL UNIQUE,
    embedding vector(384) NOT NULL
);

CREATE TABLE policy_results (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version_id      bigint NOT NULL REFERENCES policy_versions (id),
    workload_id     bigint NOT NULL REFERENCES result_workloads (id),
    workload        text NOT NULL,
    metric          text NOT NULL,
    unit            text NOT NULL,
    direction       text NOT NULL CHECK (direction IN ('lower', 'higher')),
    value           double precision NOT NULL,
    baseline        double precision,
    improvement_pct double precision,
    p_value         double precision,
    significant     boolean NOT NULL,
    verdict         text NOT NULL CHECK (verdict IN ('improved', 'regressed', 'no_change')),
    source          text NOT NULL CHECK (source IN ('manual', 'verify', 'deploy', 'tune')),
    environment     text NOT NULL,
    recorded_at     text NOT NULL
);
CREATE INDEX policy_results_by_version ON policy_results (version_id, id);
CREATE INDEX policy_results_by_workload ON policy_results (workload_id) WHERE significant;

-- What search sees of each policy: its latest version's text, vector and
-- state (the embedded store's policy_fts + policy_vec in one row).
CREATE TABLE policy_search (
    policy_id   bigint PRIMARY KEY REFERENCES policies (id),
    state       text NOT NULL,
    name        text NOT NULL,
    description text NOT NULL,
    algorithm   text NOT NULL,
    targets     text NOT NULL,
    limitations text NOT NULL,
    tunables    text NOT NULL,
    document    tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', name || ' ' || targets), 'A') ||
        setweight(to_tsvector('english', description), 'B') ||
        setweight(to_tsvector('english', algorithm || ' ' || tunables), 'C') ||
        setweight(to_tsvector('english', limitations), 'D')
    ) STORED,
    embedding   vector(384) NOT NULL
);
CREATE INDEX policy_search_document ON policy_search USING gin (document);
CREATE INDEX policy_search_embedding ON policy_search USING hnsw (embedding vector_cosine_ops);
CREATE INDEX policy_search_state ON policy_search (state);

-- Which embedding model the vectors came from (key 'model').
CREATE TABLE policy_index_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
"#;

/// Verification reports kept with the version they judged.
const SCHEMA_V2: &str = r#"
CREATE TABLE verify_reports (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version_id     bigint NOT NULL REFERENCES policy_versions (id),
    passed         boolean NOT NULL,
    report_sha256  text NOT NULL,
    object_sha256  text,
    kernel_release text,
    report         text NOT NULL,
    recorded_at    text NOT NULL
);
CREATE INDEX verify_reports_by_version ON verify_reports (version_id, id);
"#;

/// Knob change sets as library entries; a result's workload signature.
const SCHEMA_V3: &str = r#"
ALTER TABLE policies DROP CONSTRAINT policies_kind_check;
ALTER TABLE policies ADD CONSTRAINT policies_kind_check
    CHECK (kind IN ('bpf', 'external', 'knobs'));
ALTER TABLE policies DROP CONSTRAINT policies_origin_check;
ALTER TABLE policies ADD CONSTRAINT policies_origin_check
    CHECK (origin IN ('builtin', 'external', 'agent', 'tune'));
ALTER TABLE policy_results ADD COLUMN signature text;
"#;

/// Who wrote what (the embedded store's migration 0012): NULL is the
/// operator, otherwise the API token's id.
const SCHEMA_V4: &str = r#"
ALTER TABLE policies ADD COLUMN owner text;
ALTER TABLE policy_versions ADD COLUMN added_by text;
ALTER TABLE policy_results ADD COLUMN recorded_by text;
CREATE INDEX policy_versions_by_adder ON policy_versions (added_by) WHERE added_by IS NOT NULL;
CREATE INDEX policy_results_by_recorder ON policy_results (recorded_by) WHERE recorded_by IS NOT NULL;
"#;

/// Text terms are pruned by document frequency only above this many
/// matching policies (the embedded store's rule, see its `text_search`).
const PRUNE_MIN_DF: i64 = 500;

/// The oldest pgvector with iterative HNSW scans (see `vector_search`).
const MIN_PGVECTOR: (u32, u32) = (0, 8);

pub struct PostgresRepo {
    // The trait reads through `&self`, but a postgres client needs `&mut`
    // for every query; the repository is `Send`, not `Sync`, like the
    // SQLite one, so a RefCell suffices.
    client: RefCell<Client>,
    url: String,
}

impl PostgresRepo {
    /// Ranking reads every matching document, so a term found in most of
    /// the library costs a rank computation per policy while barely moving
    /// the order (its IDF is near zero). In a large library, terms in more
    /// than a quarter of it are dropped, keeping at least the rarest one.
    /// Terms matching nothing are dropped too.
    fn prune_common_terms(&self, terms: Vec<String>) -> Result<Vec<String>, Error> {
        let mut c = self.client.borrow_mut();
        let total: i64 = c
            .query_one("SELECT count(*) FROM policy_search", &[])
            .map_err(pg("text search"))
            .and_then(|r| col(&r, 0))?;
        if total <= PRUNE_MIN_DF {
            return Ok(terms);
        }
        let rows = c
            .query(
                "SELECT u.i, (SELECT count(*) FROM policy_search
                              WHERE document @@ phraseto_tsquery('english', u.t))
                 FROM unnest($1::text[]) WITH ORDINALITY AS u(t, i)",
                &[&terms],
            )
            .map_err(pg("text search"))?;
        let mut df: Vec<(i64, usize)> = Vec::with_capacity(terms.len());
        for r in &rows {
            let (i, n): (i64, i64) = (col(r, 0)?, col(r, 1)?);
            if n > 0 {
                df.push((n, (i - 1) as usize));
            }
        }
        df.sort();
        let cutoff = (total / 4).max(PRUNE_MIN_DF);
        Ok(df
            .iter()
            .enumerate()
            .filter(|(rank, (n, _))| *rank == 0 || *n <= cutoff)
            .map(|(_, (_, i))| terms[*i].clone())
            .collect())
    }

    /// Connect to `url` (`postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`
    /// or libpq's `key=value` form) and bring the schema up to date.
    pub fn connect(url: &str) -> Result<PostgresRepo, Error> {
        let shown = redact(url);
        let mut cfg = postgres::Config::from_str(url).map_err(|e| {
            Error::Setup(format!(
                "'{shown}' is not a PostgreSQL connection string ({}); expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
                describe(&e)
            ))
        })?;
        if cfg.get_connect_timeout().is_none() {
            // An unreachable host fails in seconds instead of hanging.
            cfg.connect_timeout(Duration::from_secs(10));
        }
        let mut client = cfg.connect(NoTls).map_err(|e| {
            Error::Setup(format!(
                "cannot connect to the policy database {shown}: {}; check that the server is running and reachable from here, that the database exists, and that the user may log in (password, pg_hba.conf; TLS is not supported)",
                describe(&e)
            ))
        })?;
        migrate(&mut client, &shown)?;
        Ok(PostgresRepo {
            client: RefCell::new(client),
            url: shown,
        })
    }

    /// The URL connected to, without its password.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// `url` with any password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    // URL form: scheme://user:password@host...
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let end = out[start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@').map(|i| start + i) {
            if let Some(colon) = out[start..at].find(':').map(|i| start + i) {
                out.replace_range(colon + 1..at, "***");
            }
        }
    }
    // `password=...` as a URL query parameter or in key=value form.
    let mut from = 0;
    while let Some(i) = out[from..].find("password=").map(|i| from + i) {
        let value = i + "password=".len();
        let rest = &out[value..];
        let len = if let Some(quoted) = rest.strip_prefix('\'') {
            quoted.find('\'').map_or(rest.len(), |j| j + 2)
        } else {
            rest.find(['&', ' ', '\t', '\n']).unwrap_or(rest.len())
        };
        out.replace_range(value..value + len, "***");
        from = value + 3;
    }
    out
}

/// A postgres error with what the server said (its `Display` alone is just
/// "db error").
fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.to_string().replace('\n', "; ");
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Map a postgres error to an internal error saying what was being done.
fn pg(what: &'static str) -> impl FnOnce(postgres::Error) -> Error {
    move |e| db_err(what, describe(&e))
}

fn setup_err(url: &str, e: &postgres::Error) -> Error {
    Error::Setup(format!(
        "cannot set up the policy schema in {url}: {}; the server needs the pgvector extension ({}.{} or newer), and the first connection a role that may CREATE EXTENSION vector and create tables",
        describe(e),
        MIN_PGVECTOR.0,
        MIN_PGVECTOR.1
    ))
}

fn migrate(client: &mut Client, url: &str) -> Result<(), Error> {
    let mut tx = client.transaction().map_err(|e| setup_err(url, &e))?;
    // Two processes connecting to a new database at once would both try to
    // create the extension and the tables; the second waits here instead
    // and then finds them. The lock ends with the transaction.
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('schedcp policy schema', 0));
         CREATE EXTENSION IF NOT EXISTS vector;",
    )
    .map_err(|e| setup_err(url, &e))?;
    let version: String = tx
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'",
            &[],
        )
        .and_then(|r| r.try_get(0))
        .map_err(|e| setup_err(url, &e))?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_PGVECTOR {
        return Err(Error::Setup(format!(
            "the policy database {url} has pgvector {version}; schedcp needs {}.{} or newer (iterative HNSW scans): upgrade pgvector on the server and run ALTER EXTENSION vector UPDATE",
            MIN_PGVECTOR.0, MIN_PGVECTOR.1
        )));
    }
    // Looked up rather than CREATE ... IF NOT EXISTS, which needs the right
    // to create in the schema even when the table is there: a role that may
    // only read and write can connect to a database set up by another. The
    // tables live in current_schema(), where the CREATEs below put them.
    let exists: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_tables
                 WHERE schemaname = current_schema() AND tablename = 'policy_schema')",
            &[],
        )
        .and_then(|r| r.try_get(0))
        .map_err(|e| setup_err(url, &e))?;
    if !exists {
        tx.batch_execute(
            "CREATE TABLE policy_schema (
                 version    integer PRIMARY KEY,
                 applied_at text NOT NULL
             )",
        )
        .map_err(|e| setup_err(url, &e))?;
    }
    let have: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM policy_schema", &[])
        .and_then(|r| r.try_get(0))
        .map_err(|e| setup_err(url, &e))?;
    let have = usize::try_from(have).unwrap_or(0);
    if have > MIGRATIONS.len() {
        return Err(Error::Setup(format!(
            "the policy database {url} has schema version {have}, newer than this schedcp knows ({}); upgrade schedcp",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(have) {
        tx.batch_execute(sql).map_err(|e| setup_err(url, &e))?;
        tx.execute(
            "INSERT INTO policy_schema (version, applied_at) VALUES ($1, $2)",
            &[&(i as i32 + 1), &now()],
        )
        .map_err(|e| setup_err(url, &e))?;
    }
    tx.commit().map_err(|e| setup_err(url, &e))
}

// ---- decoding rows ----

fn col<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> Result<T, Error> {
    r.try_get(i)
        .map_err(|e| db_err("decoding a row", describe(&e)))
}

fn enum_col<T: FromStr<Err = String>>(r: &Row, i: usize) -> Result<T, Error> {
    col::<String>(r, i)?
        .parse()
        .map_err(|e: String| db_err("decoding a row", e))
}

fn json_col<T: serde::de::DeserializeOwned>(r: &Row, i: usize) -> Result<T, Error> {
    serde_json::from_str(&col::<String>(r, i)?).map_err(|e| db_err("decoding a row", e))
}

fn version_col(r: &Row, i: usize) -> Result<u32, Error> {
    u32::try_from(col::<i32>(r, i)?).map_err(|e| db_err("decoding a row", e))
}

/// Versions are `integer` columns; numbering never gets near its limit.
/// The row id of `name@version`; an input error if there is none.
fn version_id(
    c: &mut impl postgres::GenericClient,
    name: &str,
    version: u32,
) -> Result<i64, Error> {
    c.query_opt(
        "SELECT v.id FROM policy_versions v JOIN policies p ON p.id = v.policy_id
         WHERE p.name = $1 AND v.version = $2",
        &[&name, &version_param(version)],
    )
    .map_err(pg("finding a version"))?
    .map(|row| col(&row, 0))
    .transpose()?
    .ok_or_else(|| Error::NotFound(format!("no policy version {name}@{version}")))
}

fn version_param(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

const VERSION_COLUMNS: &str =
    "p.name, v.version, p.origin, v.state, v.content_hash, v.created_at, v.meta, v.body";

fn version_row(r: &Row) -> Result<PolicyVersion, Error> {
    Ok(PolicyVersion {
        name: col(r, 0)?,
        version: version_col(r, 1)?,
        origin: enum_col(r, 2)?,
        state: enum_col(r, 3)?,
        content_hash: col(r, 4)?,
        created_at: col(r, 5)?,
        meta: json_col(r, 6)?,
        body: json_col(r, 7)?,
    })
}

/// Latest version of every policy, joined to its policy row.
const LATEST: &str = "policy_versions v JOIN policies p ON p.id = v.policy_id
     WHERE v.version = (SELECT max(version) FROM policy_versions WHERE policy_id = p.id)";

/// Columns: name, kind, origin, version, meta, state.
fn summary_row(r: &Row) -> Result<PolicySummary, Error> {
    let meta: PolicyMeta = json_col(r, 4)?;
    Ok(PolicySummary {
        name: col(r, 0)?,
        kind: enum_col(r, 1)?,
        origin: enum_col(r, 2)?,
        version: version_col(r, 3)?,
        state: enum_col(r, 5)?,
        description: meta.description,
        target_workloads: meta.target_workloads,
    })
}

const RESULT_COLUMNS: &str = "r.id, v.version, r.recorded_at, r.workload, w.text, r.metric, r.unit,
     r.direction, r.value, r.baseline, r.improvement_pct, r.p_value, r.significant, r.verdict,
     r.source, r.environment, r.signature";

fn result_row(r: &Row) -> Result<PolicyResult, Error> {
    Ok(PolicyResult {
        id: col(r, 0)?,
        version: version_col(r, 1)?,
        recorded_at: col(r, 2)?,
        result: NewResult {
            workload: col(r, 3)?,
            workload_description: col(r, 4)?,
            metric: col(r, 5)?,
            unit: col(r, 6)?,
            direction: enum_col(r, 7)?,
            value: col(r, 8)?,
            baseline: col(r, 9)?,
            improvement_pct: col(r, 10)?,
            p_value: col(r, 11)?,
            significant: col(r, 12)?,
            verdict: enum_col(r, 13)?,
            source: enum_col(r, 14)?,
            environment: col(r, 15)?,
            signature: super::signature_from_json(col(r, 16)?),
        },
    })
}

// ---- writing ----

fn index_policy(
    tx: &mut Transaction<'_>,
    policy_id: i64,
    doc: &SearchDoc,
    state: State,
    emb: &[f32],
) -> Result<(), postgres::Error> {
    tx.execute(
        "INSERT INTO policy_search (policy_id, state, name, description, algorithm, targets,
             limitations, tunables, embedding)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (policy_id) DO UPDATE SET
             state = excluded.state, name = excluded.name, description = excluded.description,
             algorithm = excluded.algorithm, targets = excluded.targets,
             limitations = excluded.limitations, tunables = excluded.tunables,
             embedding = excluded.embedding",
        &[
            &policy_id,
            &state.as_str(),
            &doc.name,
            &doc.description,
            &doc.algorithm,
            &doc.targets,
            &doc.limitations,
            &doc.tunables,
            &Vector::from(emb.to_vec()),
        ],
    )
    .map(drop)
}

fn duplicate(name: &str, version: u32, hash: &str) -> Error {
    Error::Input(format!(
        "{name}@{version} already has exactly this content (sha256 {}); nothing to add",
        &hash[..12.min(hash.len())]
    ))
}

/// Why inserting a batch failed.
enum InsertFailure {
    Refused(Error),
    /// Another writer committed the same content first: a unique violation
    /// that the row lock should make impossible, reported like the check.
    Raced {
        name: String,
        hash: String,
    },
}

impl From<Error> for InsertFailure {
    fn from(e: Error) -> Self {
        InsertFailure::Refused(e)
    }
}

/// A postgres error while inserting `it`, with unique violations mapped to
/// what the embedded backend says about the same case.
fn insert_err(e: postgres::Error, what: &'static str, it: &Insert<'_>) -> InsertFailure {
    let name = &it.policy.meta.name;
    match e.as_db_error().filter(|d| *d.code() == SqlState::UNIQUE_VIOLATION) {
        Some(d) if d.constraint() == Some("policy_versions_content") => InsertFailure::Raced {
            name: name.clone(),
            hash: it.content_hash.clone(),
        },
        Some(_) => InsertFailure::Refused(Error::Input(format!(
            "policy '{name}' was changed by another writer at the same time; nothing was added, try again"
        ))),
        None => InsertFailure::Refused(db_err(what, describe(&e))),
    }
}

/// What API token `by` has added and recorded, as `c` sees it.
fn usage_on(c: &mut impl postgres::GenericClient, by: &str) -> Result<Usage, Error> {
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM policy_versions WHERE added_by = $1),
                    (SELECT coalesce(sum(octet_length(meta) + octet_length(body)), 0)::bigint
                       FROM policy_versions WHERE added_by = $1),
                    (SELECT count(*) FROM policy_results WHERE recorded_by = $1)",
            &[&by],
        )
        .map_err(pg("counting what a token wrote"))?;
    let n = |i: usize| col::<i64>(&row, i).map(|v| v.max(0) as u64);
    Ok(Usage {
        versions: n(0)?,
        bytes: n(1)?,
        results: n(2)?,
    })
}

/// [`usage_on`] in `tx` after taking token `by`'s write lock, held to
/// commit: the token's concurrent writers take turns, and each reads (READ
/// COMMITTED, a snapshot per statement) what the one before committed. Two
/// 32-bit keys: a key space apart from the schema lock's 64-bit one.
fn usage_serialised(tx: &mut Transaction<'_>, by: &str) -> Result<Usage, Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('schedcp token quota'), hashtext($1))",
        &[&by],
    )
    .map_err(pg("waiting for the token's other writes"))?;
    usage_on(tx, by)
}

fn insert_one(tx: &mut Transaction<'_>, it: &Insert<'_>) -> Result<PolicyVersion, InsertFailure> {
    let p = it.policy;
    let name = &p.meta.name;
    let at = it.created_at.clone().unwrap_or_else(now);
    let kind = p.body.kind().as_str();
    let origin = p.origin.as_str();
    let added_by = it.added_by.map(|w| w.token);
    if let Some(w) = &it.added_by {
        let used = usage_serialised(tx, w.token)?;
        w.admit_version(&used, p.stored_bytes())?;
    }
    // Writers of one policy take turns on its row, held to commit: the
    // duplicate check and the version number below stay true until then.
    // Policies are never deleted, so if the INSERT finds that another
    // transaction created the row meanwhile, the next pass locks it.
    let policy_id: i64 = loop {
        if let Some(row) = tx
            .query_opt(
                "SELECT id, kind, origin, owner FROM policies WHERE name = $1 FOR NO KEY UPDATE",
                &[name],
            )
            .map_err(|e| insert_err(e, "looking up a policy", it))?
        {
            let (id, have_kind, have_origin, owner): (i64, String, String, Option<String>) =
                (col(&row, 0)?, col(&row, 1)?, col(&row, 2)?, col(&row, 3)?);
            if let Some(by) = &it.added_by {
                if owner.as_deref() != Some(by.token) {
                    return Err(super::not_owner(name, owner.as_deref(), by.token).into());
                }
            }
            if have_kind != kind || have_origin != origin {
                return Err(Error::Input(format!(
                    "policy '{name}' exists as a {have_kind} policy of origin {have_origin}; a new version must keep both (this one is {} / {}). Choose another name.",
                    p.body.kind(),
                    p.origin
                ))
                .into());
            }
            if let Some(r) = tx
                .query_opt(
                    "SELECT version FROM policy_versions WHERE policy_id = $1 AND content_hash = $2",
                    &[&id, &it.content_hash],
                )
                .map_err(|e| insert_err(e, "checking for a duplicate", it))?
            {
                return Err(duplicate(name, version_col(&r, 0)?, &it.content_hash).into());
            }
            break id;
        }
        if let Some(row) = tx
            .query_opt(
                "INSERT INTO policies (name, kind, origin, created_at, owner)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (name) DO NOTHING RETURNING id",
                &[name, &kind, &origin, &at, &added_by],
            )
            .map_err(|e| insert_err(e, "inserting a policy", it))?
        {
            break col(&row, 0)?;
        }
    };
    let version: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) + 1 FROM policy_versions WHERE policy_id = $1",
            &[&policy_id],
        )
        .map_err(|e| insert_err(e, "numbering a version", it))
        .and_then(|r| col(&r, 0).map_err(InsertFailure::from))?;
    let meta = serde_json::to_string(&p.meta).map_err(|e| db_err("encoding metadata", e))?;
    let body = serde_json::to_string(&p.body).map_err(|e| db_err("encoding the body", e))?;
    let version_id: i64 = tx
        .query_one(
            "INSERT INTO policy_versions (policy_id, version, content_hash, meta, body, state,
               created_at, added_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                &policy_id,
                &version,
                &it.content_hash,
                &meta,
                &body,
                &it.state.as_str(),
                &at,
                &added_by,
            ],
        )
        .map_err(|e| insert_err(e, "inserting a version", it))
        .and_then(|r| col(&r, 0).map_err(InsertFailure::from))?;
    tx.execute(
        "INSERT INTO policy_transitions (version_id, from_state, to_state, reason, at)
         VALUES ($1, NULL, $2, $3, $4)",
        &[&version_id, &it.state.as_str(), &it.reason, &at],
    )
    .map_err(|e| insert_err(e, "recording a transition", it))?;
    index_policy(tx, policy_id, &it.doc, it.state, &it.embedding)
        .map_err(|e| insert_err(e, "indexing a policy", it))?;
    Ok(PolicyVersion {
        name: name.clone(),
        version: version as u32,
        origin: p.origin,
        state: it.state,
        content_hash: it.content_hash.clone(),
        created_at: at,
        meta: p.meta.clone(),
        body: p.body.clone(),
    })
}

fn insert_all(
    client: &mut Client,
    items: &[Insert<'_>],
) -> Result<Vec<PolicyVersion>, InsertFailure> {
    let mut tx = client
        .transaction()
        .map_err(|e| InsertFailure::Refused(db_err("starting a transaction", describe(&e))))?;
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        out.push(insert_one(&mut tx, it)?);
    }
    tx.commit()
        .map_err(|e| InsertFailure::Refused(db_err("committing", describe(&e))))?;
    Ok(out)
}

impl Repository for PostgresRepo {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn insert_versions(&mut self, items: &[Insert<'_>]) -> Result<Vec<PolicyVersion>, Error> {
        let client = self.client.get_mut();
        match insert_all(client, items) {
            Ok(v) => Ok(v),
            Err(InsertFailure::Refused(e)) => Err(e),
            Err(InsertFailure::Raced { name, hash }) => {
                // The batch was rolled back; the winner has committed, so its
                // version number can be named as the check would have.
                let row = client
                    .query_opt(
                        "SELECT v.version FROM policy_versions v JOIN policies p ON p.id = v.policy_id
                         WHERE p.name = $1 AND v.content_hash = $2",
                        &[&name, &hash],
                    )
                    .map_err(pg("checking for a duplicate"))?;
                match row {
                    Some(r) => Err(duplicate(&name, version_col(&r, 0)?, &hash)),
                    None => Err(db_err("inserting a version", "unique violation on content")),
                }
            }
        }
    }

    fn get(&self, r: &PolicyRef) -> Result<Option<PolicyVersion>, Error> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM policy_versions v JOIN policies p ON p.id = v.policy_id
             WHERE p.name = $1 AND v.version = coalesce($2::integer,
                 (SELECT max(version) FROM policy_versions WHERE policy_id = p.id))"
        );
        let version = r.version.map(version_param);
        self.client
            .borrow_mut()
            .query_opt(&sql, &[&r.name, &version])
            .map_err(pg("reading a version"))?
            .map(|row| version_row(&row))
            .transpose()
    }

    fn list(&self, state: Option<State>) -> Result<Vec<PolicySummary>, Error> {
        // COLLATE "C": byte order, as SQLite sorts, whatever the database's locale.
        let sql = format!(
            "SELECT p.name, p.kind, p.origin, v.version, v.meta, v.state FROM {LATEST}
               AND ($1::text IS NULL OR v.state = $1) ORDER BY p.name COLLATE \"C\""
        );
        self.client
            .borrow_mut()
            .query(&sql, &[&state.map(State::as_str)])
            .map_err(pg("listing"))?
            .iter()
            .map(summary_row)
            .collect()
    }

    fn history(&self, name: &str) -> Result<Option<History>, Error> {
        let mut c = self.client.borrow_mut();
        // One snapshot for the three reads.
        let mut tx = c
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(pg("reading history"))?;
        let Some(head) = tx
            .query_opt(
                "SELECT id, kind, origin FROM policies WHERE name = $1",
                &[&name],
            )
            .map_err(pg("reading history"))?
        else {
            return Ok(None);
        };
        let id: i64 = col(&head, 0)?;
        let versions = tx
            .query(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM policy_versions v JOIN policies p ON p.id = v.policy_id
                     WHERE p.id = $1 ORDER BY v.version"
                ),
                &[&id],
            )
            .map_err(pg("reading history"))?
            .iter()
            .map(version_row)
            .collect::<Result<Vec<_>, _>>()?;
        let transitions = tx
            .query(
                "SELECT v.version, t.from_state, t.to_state, t.reason, t.at
                 FROM policy_transitions t JOIN policy_versions v ON v.id = t.version_id
                 WHERE v.policy_id = $1 ORDER BY t.id",
                &[&id],
            )
            .map_err(pg("reading history"))?
            .iter()
            .map(|r| {
                Ok(Transition {
                    version: version_col(r, 0)?,
                    from: col::<Option<String>>(r, 1)?
                        .map(|s| s.parse::<State>().map_err(|e| db_err("decoding a row", e)))
                        .transpose()?,
                    to: enum_col(r, 2)?,
                    reason: col(r, 3)?,
                    at: col(r, 4)?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let results = tx
            .query(
                &format!(
                    "SELECT {RESULT_COLUMNS} FROM policy_results r
                     JOIN policy_versions v ON v.id = r.version_id
                     JOIN result_workloads w ON w.id = r.workload_id
                     WHERE v.policy_id = $1 ORDER BY r.id"
                ),
                &[&id],
            )
            .map_err(pg("reading history"))?
            .iter()
            .map(result_row)
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().map_err(pg("reading history"))?;
        Ok(Some(History {
            name: name.to_string(),
            kind: enum_col(&head, 1)?,
            origin: enum_col(&head, 2)?,
            versions,
            transitions,
            results,
        }))
    }

    fn transition(
        &mut self,
        name: &str,
        version: u32,
        from: State,
        to: State,
        reason: &str,
    ) -> Result<bool, Error> {
        let mut tx = self
            .client
            .get_mut()
            .transaction()
            .map_err(pg("starting a transaction"))?;
        // The policy's row lock (see insert_one) orders this against other
        // transitions and new versions of the same policy: the state read
        // by the UPDATE and the latest version below hold until commit.
        let Some(p) = tx
            .query_opt(
                "SELECT id FROM policies WHERE name = $1 FOR NO KEY UPDATE",
                &[&name],
            )
            .map_err(pg("reading a state"))?
        else {
            return Ok(false);
        };
        let pid: i64 = col(&p, 0)?;
        let version = version_param(version);
        let Some(v) = tx
            .query_opt(
                "UPDATE policy_versions SET state = $1
                 WHERE policy_id = $2 AND version = $3 AND state = $4 RETURNING id",
                &[&to.as_str(), &pid, &version, &from.as_str()],
            )
            .map_err(pg("changing a state"))?
        else {
            return Ok(false);
        };
        let vid: i64 = col(&v, 0)?;
        tx.execute(
            "INSERT INTO policy_transitions (version_id, from_state, to_state, reason, at)
             VALUES ($1, $2, $3, $4, $5)",
            &[&vid, &from.as_str(), &to.as_str(), &reason, &now()],
        )
        .map_err(pg("changing a state"))?;
        tx.execute(
            "UPDATE policy_search SET state = $1 WHERE policy_id = $2
               AND $3 = (SELECT max(version) FROM policy_versions WHERE policy_id = $2)",
            &[&to.as_str(), &pid, &version],
        )
        .map_err(pg("updating the index"))?;
        tx.commit().map_err(pg("changing a state"))?;
        Ok(true)
    }

    fn insert_verify_report(
        &mut self,
        name: &str,
        version: u32,
        r: &NewVerifyReport,
        keep: usize,
    ) -> Result<StoredVerifyReport, Error> {
        let mut tx = self
            .client
            .get_mut()
            .transaction()
            .map_err(pg("starting a transaction"))?;
        let vid = version_id(&mut tx, name, version)?;
        let at = now();
        let id: i64 = tx
            .query_one(
                "INSERT INTO verify_reports (version_id, passed, report_sha256, object_sha256,
                   kernel_release, report, recorded_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &vid,
                    &r.passed,
                    &r.report_sha256,
                    &r.object_sha256,
                    &r.kernel_release,
                    &r.report.to_string(),
                    &at,
                ],
            )
            .map_err(pg("keeping a verify report"))
            .and_then(|row| col(&row, 0))?;
        tx.execute(
            "DELETE FROM verify_reports WHERE version_id = $1
               AND id NOT IN (SELECT id FROM verify_reports WHERE version_id = $1
                              ORDER BY id DESC LIMIT $2)
               AND id NOT IN (SELECT id FROM verify_reports
                              WHERE version_id = $1 AND passed
                              ORDER BY id DESC LIMIT 1)",
            &[&vid, &(keep.max(1) as i64)],
        )
        .map_err(pg("pruning old verify reports"))?;
        tx.commit().map_err(pg("keeping a verify report"))?;
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
    }

    fn verify_reports(
        &self,
        name: &str,
        version: u32,
        limit: usize,
    ) -> Result<Vec<StoredVerifyReport>, Error> {
        let rows = self
            .client
            .borrow_mut()
            .query(
                "SELECT r.id, r.passed, r.report_sha256, r.object_sha256, r.kernel_release,
                        r.recorded_at, r.report
                 FROM verify_reports r
                 JOIN policy_versions v ON v.id = r.version_id
                 JOIN policies p ON p.id = v.policy_id
                 WHERE p.name = $1 AND v.version = $2
                 ORDER BY r.id DESC LIMIT $3",
                &[
                    &name,
                    &version_param(version),
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )
            .map_err(pg("reading verify reports"))?;
        rows.iter()
            .map(|row| {
                let text: String = col(row, 6)?;
                Ok(StoredVerifyReport {
                    id: col(row, 0)?,
                    name: name.to_string(),
                    version,
                    passed: col(row, 1)?,
                    report_sha256: col(row, 2)?,
                    object_sha256: col(row, 3)?,
                    kernel_release: col(row, 4)?,
                    recorded_at: col(row, 5)?,
                    report: serde_json::from_str(&text)
                        .map_err(|e| db_err("decoding a verify report", e))?,
                })
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
        let mut tx = self
            .client
            .get_mut()
            .transaction()
            .map_err(pg("starting a transaction"))?;
        let vid = version_id(&mut tx, name, version)?;
        if let Some(w) = &recorded_by {
            w.admit_result(&usage_serialised(&mut tx, w.token)?)?;
        }
        let recorded_by = recorded_by.map(|w| w.token);
        // A concurrent insert of the same workload makes this wait for it and
        // then do nothing; the SELECT (a new snapshot) sees its row.
        tx.execute(
            "INSERT INTO result_workloads (text, embedding) VALUES ($1, $2)
             ON CONFLICT (text) DO NOTHING",
            &[
                &r.workload_description,
                &Vector::from(workload_embedding.to_vec()),
            ],
        )
        .map_err(pg("recording a workload"))?;
        let wid: i64 = tx
            .query_one(
                "SELECT id FROM result_workloads WHERE text = $1",
                &[&r.workload_description],
            )
            .map_err(pg("recording a workload"))
            .and_then(|row| col(&row, 0))?;
        let at = now();
        let id: i64 = tx
            .query_one(
                "INSERT INTO policy_results (version_id, workload_id, workload, metric, unit, direction,
                   value, baseline, improvement_pct, p_value, significant, verdict, source,
                   environment, recorded_at, signature, recorded_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                   $17)
                 RETURNING id",
                &[
                    &vid,
                    &wid,
                    &r.workload,
                    &r.metric,
                    &r.unit,
                    &r.direction.as_str(),
                    &r.value,
                    &r.baseline,
                    &r.improvement_pct,
                    &r.p_value,
                    &r.significant,
                    &r.verdict.as_str(),
                    &r.source.as_str(),
                    &r.environment,
                    &at,
                    &super::signature_json(r)?,
                    &recorded_by,
                ],
            )
            .map_err(pg("recording a result"))
            .and_then(|row| col(&row, 0))?;
        tx.commit().map_err(pg("recording a result"))?;
        Ok(PolicyResult {
            id,
            version,
            recorded_at: at,
            result: r.clone(),
        })
    }

    fn usage(&self, by: &str) -> Result<Usage, Error> {
        usage_on(&mut *self.client.borrow_mut(), by)
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
        // PostgreSQL text cannot hold NUL; no stored text has one either.
        let terms: Vec<String> = terms.iter().map(|t| t.replace('\0', " ")).collect();
        let terms = self.prune_common_terms(terms)?;
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        // Each term goes in as a bound parameter through phraseto_tsquery,
        // which never reads query syntax (& | ! : * quotes parentheses);
        // a term of several words becomes a phrase, as a quoted FTS5 term
        // does. `||` ORs the terms. A term of stop words only adds nothing.
        let query = (0..terms.len())
            .map(|i| format!("phraseto_tsquery('english', ${})", i + 3))
            .collect::<Vec<_>>()
            .join(" || ");
        let sql = format!(
            "WITH q AS (SELECT {query} AS query)
             SELECT p.name, ts_rank_cd(s.document, q.query) AS rank
             FROM policy_search s CROSS JOIN q JOIN policies p ON p.id = s.policy_id
             WHERE s.document @@ q.query AND ($1::text IS NULL OR s.state = $1)
             ORDER BY rank DESC, p.name COLLATE \"C\" LIMIT $2"
        );
        let state = state.map(State::as_str);
        let limit = i64::try_from(k).unwrap_or(i64::MAX);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&state, &limit];
        params.extend(terms.iter().map(|t| t as &(dyn ToSql + Sync)));
        self.client
            .borrow_mut()
            .query(&sql, &params)
            .map_err(pg("text search"))?
            .iter()
            .map(|r| {
                Ok(Hit {
                    name: col(r, 0)?,
                    score: f64::from(col::<f32>(r, 1)?),
                })
            })
            .collect()
    }

    fn vector_search(
        &self,
        query: &[f32],
        state: Option<State>,
        k: usize,
    ) -> Result<Vec<Hit>, Error> {
        let q = Vector::from(query.to_vec());
        let limit = i64::try_from(k).unwrap_or(i64::MAX);
        let mut c = self.client.borrow_mut();
        let rows = match state {
            // Filtered: exact. An HNSW scan filters after the index, and
            // even pgvector 0.8's iterative scan gives up after
            // hnsw.max_scan_tuples, so a selective state could come back
            // with fewer than k hits. A library is thousands of policies at
            // most, so scanning one state's vectors costs milliseconds, and
            // the ranking is then exactly the embedded backend's (sqlite-vec
            // is exact too). MATERIALIZED keeps the planner from ordering
            // through the approximate index.
            Some(s) => c
                .query(
                    "WITH candidates AS MATERIALIZED (
                         SELECT policy_id, embedding <=> $1 AS distance
                         FROM policy_search WHERE state = $2)
                     SELECT p.name, c.distance FROM candidates c
                     JOIN policies p ON p.id = c.policy_id
                     ORDER BY c.distance, p.name COLLATE \"C\" LIMIT $3",
                    &[&q, &s.as_str(), &limit],
                )
                .map_err(pg("vector search"))?,
            // Unfiltered: the HNSW index. The iterative scan goes on past
            // entries of rows since updated (every re-index and transition
            // leaves one until vacuum) so that k live rows come back, and
            // ef_search >= k lets the first pass find them; relaxed order
            // is re-sorted exactly outside the materialized CTE.
            None => {
                let mut tx = c.transaction().map_err(pg("vector search"))?;
                tx.batch_execute(&format!(
                    "SET LOCAL hnsw.ef_search = {}; SET LOCAL hnsw.iterative_scan = relaxed_order",
                    k.clamp(40, 1000)
                ))
                .map_err(pg("vector search"))?;
                let rows = tx
                    .query(
                        "WITH nearest AS MATERIALIZED (
                             SELECT policy_id, embedding <=> $1 AS distance
                             FROM policy_search ORDER BY distance LIMIT $2)
                         SELECT p.name, n.distance FROM nearest n
                         JOIN policies p ON p.id = n.policy_id
                         ORDER BY n.distance, p.name COLLATE \"C\"",
                        &[&q, &limit],
                    )
                    .map_err(pg("vector search"))?;
                tx.commit().map_err(pg("vector search"))?;
                rows
            }
        };
        rows.iter()
            .map(|r| {
                Ok(Hit {
                    name: col(r, 0)?,
                    // `<=>` is cosine distance; the trait wants similarity.
                    score: 1.0 - col::<f64>(r, 1)?,
                })
            })
            .collect()
    }

    fn workloads(&self) -> Result<Vec<Workload>, Error> {
        self.client
            .borrow_mut()
            .query(
                "SELECT id, text, embedding FROM result_workloads ORDER BY id",
                &[],
            )
            .map_err(pg("reading workloads"))?
            .iter()
            .map(|r| {
                Ok(Workload {
                    id: col(r, 0)?,
                    text: col(r, 1)?,
                    embedding: col::<Vector>(r, 2)?.to_vec(),
                })
            })
            .collect()
    }

    fn evidence(&self, workload_ids: &[i64], state: Option<State>) -> Result<Vec<Evidence>, Error> {
        if workload_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.client
            .borrow_mut()
            .query(
                "SELECT p.name, r.workload_id, r.workload, r.metric, r.verdict, r.improvement_pct, r.p_value
                 FROM policy_results r
                 JOIN policy_versions v ON v.id = r.version_id
                 JOIN policies p ON p.id = v.policy_id
                 WHERE r.significant AND r.verdict <> 'no_change'
                   AND r.workload_id = ANY ($1)
                   AND ($2::text IS NULL OR (SELECT state FROM policy_versions
                        WHERE policy_id = p.id ORDER BY version DESC LIMIT 1) = $2)
                 ORDER BY r.id",
                &[&workload_ids, &state.map(State::as_str)],
            )
            .map_err(pg("reading evidence"))?
            .iter()
            .map(|r| {
                Ok(Evidence {
                    name: col(r, 0)?,
                    workload_id: col(r, 1)?,
                    workload: col(r, 2)?,
                    metric: col(r, 3)?,
                    verdict: enum_col(r, 4)?,
                    improvement_pct: col(r, 5)?,
                    p_value: col(r, 6)?,
                })
            })
            .collect()
    }

    fn docs(&self, names: &[String]) -> Result<Vec<DocRow>, Error> {
        let sql = format!(
            "SELECT p.name, p.kind, p.origin, v.version, v.meta, v.state, v.body FROM {LATEST}
               AND p.name = ANY ($1)"
        );
        let mut by_name: HashMap<String, DocRow> = self
            .client
            .borrow_mut()
            .query(&sql, &[&names])
            .map_err(pg("reading policies"))?
            .iter()
            .map(|r| {
                let summary = summary_row(r)?;
                let meta: PolicyMeta = json_col(r, 4)?;
                let body: Body = json_col(r, 6)?;
                Ok((
                    summary.name.clone(),
                    DocRow {
                        summary,
                        doc: SearchDoc::new(&meta, &body),
                    },
                ))
            })
            .collect::<Result<_, Error>>()?;
        Ok(names.iter().filter_map(|n| by_name.remove(n)).collect())
    }

    fn index_model(&self) -> Result<Option<String>, Error> {
        self.client
            .borrow_mut()
            .query_opt(
                "SELECT value FROM policy_index_meta WHERE key = 'model'",
                &[],
            )
            .map_err(pg("reading the index model"))?
            .map(|r| col(&r, 0))
            .transpose()
    }

    fn reindex(&mut self, model: &str, embed: &mut EmbedFn<'_>) -> Result<(), Error> {
        let mut tx = self
            .client
            .get_mut()
            .transaction()
            .map_err(pg("starting a transaction"))?;
        // No vector may be written by the old model while the new one's
        // replace them: writers of either table wait (readers don't).
        tx.batch_execute("LOCK TABLE policy_search, result_workloads IN EXCLUSIVE MODE")
            .map_err(pg("locking the index"))?;
        let mut texts = Vec::new();
        let mut parsed = Vec::new();
        for r in tx
            .query(
                &format!("SELECT p.id, v.meta, v.body, v.state FROM {LATEST}"),
                &[],
            )
            .map_err(pg("reading policies"))?
        {
            let meta: PolicyMeta = json_col(&r, 1)?;
            let body: Body = json_col(&r, 2)?;
            let doc = SearchDoc::new(&meta, &body);
            texts.push(doc.embedding_text());
            parsed.push((col::<i64>(&r, 0)?, doc, enum_col::<State>(&r, 3)?));
        }
        let vectors = embed(&texts)?;
        if vectors.len() != parsed.len() {
            return Err(db_err(
                "indexing",
                format!("{} vectors for {} policies", vectors.len(), parsed.len()),
            ));
        }
        for ((id, doc, state), v) in parsed.iter().zip(&vectors) {
            index_policy(&mut tx, *id, doc, *state, v).map_err(pg("indexing"))?;
        }
        let workloads: Vec<(i64, String)> = tx
            .query("SELECT id, text FROM result_workloads ORDER BY id", &[])
            .map_err(pg("reading workloads"))?
            .iter()
            .map(|r| Ok((col(r, 0)?, col(r, 1)?)))
            .collect::<Result<_, Error>>()?;
        let texts: Vec<String> = workloads.iter().map(|w| w.1.clone()).collect();
        let vectors = embed(&texts)?;
        if vectors.len() != workloads.len() {
            return Err(db_err(
                "indexing workloads",
                format!(
                    "{} vectors for {} workloads",
                    vectors.len(),
                    workloads.len()
                ),
            ));
        }
        for ((id, _), v) in workloads.iter().zip(vectors) {
            tx.execute(
                "UPDATE result_workloads SET embedding = $1 WHERE id = $2",
                &[&Vector::from(v), id],
            )
            .map_err(pg("indexing workloads"))?;
        }
        tx.execute(
            "INSERT INTO policy_index_meta (key, value) VALUES ('model', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&model],
        )
        .map_err(pg("recording the index model"))?;
        tx.commit().map_err(pg("reindexing"))
    }

    /// The policy tables and their indexes (TOAST included), the nearest
    /// thing to the embedded store's file size.
    fn store_bytes(&self) -> Option<u64> {
        self.client
            .borrow_mut()
            .query_one(
                "SELECT sum(pg_total_relation_size(t))::bigint FROM unnest(ARRAY[
                     'policies', 'policy_versions', 'policy_transitions', 'result_workloads',
                     'policy_results', 'policy_search', 'policy_index_meta']::regclass[]) t",
                &[],
            )
            .and_then(|r| r.try_get::<_, i64>(0))
            .ok()
            .and_then(|b| u64::try_from(b).ok())
    }

    fn count(&self) -> Result<usize, Error> {
        let n: i64 = self
            .client
            .borrow_mut()
            .query_one("SELECT count(*) FROM policies", &[])
            .map_err(pg("counting"))
            .and_then(|r| col(&r, 0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgresql://schedcp:s3cr@t@db.example:5432/lib?sslmode=disable"),
            "postgresql://schedcp:***@db.example:5432/lib?sslmode=disable"
        );
        assert_eq!(
            redact("postgresql://schedcp@127.0.0.1:55432/schedcp_test"),
            "postgresql://schedcp@127.0.0.1:55432/schedcp_test"
        );
        assert_eq!(
            redact("postgres://h/db?user=u&password=pw&application_name=x"),
            "postgres://h/db?user=u&password=***&application_name=x"
        );
        assert_eq!(
            redact("host=h user=u password='a b' dbname=d"),
            "host=h user=u password=*** dbname=d"
        );
        assert_eq!(redact("host=h password=pw"), "host=h password=***");
    }
}
