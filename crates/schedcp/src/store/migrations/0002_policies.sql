-- policies: the scheduler library, its lifecycle, results and search indexes.

CREATE TABLE policies (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL CHECK (kind IN ('bpf', 'external')),
    origin     TEXT NOT NULL CHECK (origin IN ('builtin', 'external', 'agent')),
    created_at TEXT NOT NULL
) STRICT;

-- Immutable versions. `meta` is the PolicyMeta as JSON; `body` the BPF
-- source or external spec as JSON. Only `state` ever changes.
CREATE TABLE policy_versions (
    id           INTEGER PRIMARY KEY,
    policy_id    INTEGER NOT NULL REFERENCES policies (id),
    version      INTEGER NOT NULL CHECK (version > 0),
    content_hash TEXT NOT NULL,
    meta         TEXT NOT NULL,
    body         TEXT NOT NULL,
    state        TEXT NOT NULL
        CHECK (state IN ('candidate', 'verified', 'deployed', 'promoted', 'retired')),
    created_at   TEXT NOT NULL,
    UNIQUE (policy_id, version),
    UNIQUE (policy_id, content_hash)
) STRICT;

CREATE TABLE policy_transitions (
    id         INTEGER PRIMARY KEY,
    version_id INTEGER NOT NULL REFERENCES policy_versions (id),
    from_state TEXT,
    to_state   TEXT NOT NULL,
    reason     TEXT NOT NULL,
    at         TEXT NOT NULL
) STRICT;

CREATE INDEX policy_transitions_by_version ON policy_transitions (version_id, id);

-- Workloads results were measured on, embedded once each so that search
-- can match a query against them cheaply.
CREATE TABLE result_workloads (
    id        INTEGER PRIMARY KEY,
    text      TEXT NOT NULL UNIQUE,
    embedding BLOB NOT NULL
) STRICT;

CREATE TABLE policy_results (
    id              INTEGER PRIMARY KEY,
    version_id      INTEGER NOT NULL REFERENCES policy_versions (id),
    workload_id     INTEGER NOT NULL REFERENCES result_workloads (id),
    workload        TEXT NOT NULL,
    metric          TEXT NOT NULL,
    unit            TEXT NOT NULL,
    direction       TEXT NOT NULL CHECK (direction IN ('lower', 'higher')),
    value           REAL NOT NULL,
    baseline        REAL,
    improvement_pct REAL,
    p_value         REAL,
    significant     INTEGER NOT NULL CHECK (significant IN (0, 1)),
    verdict         TEXT NOT NULL CHECK (verdict IN ('improved', 'regressed', 'no_change')),
    source          TEXT NOT NULL CHECK (source IN ('manual', 'verify', 'deploy', 'tune')),
    environment     TEXT NOT NULL,
    recorded_at     TEXT NOT NULL
) STRICT;

CREATE INDEX policy_results_by_version ON policy_results (version_id, id);
CREATE INDEX policy_results_by_workload ON policy_results (workload_id) WHERE significant = 1;

-- Full text over each policy's latest version; rowid = policies.id.
CREATE VIRTUAL TABLE policy_fts USING fts5 (
    name, description, algorithm, targets, limitations, tunables,
    tokenize = 'porter unicode61'
);

-- One embedding per policy (latest version), exact KNN in sqlite-vec.
-- Embeddings are L2-normalised, so Euclidean distance ranks exactly as
-- cosine does (cos = 1 - d²/2) and takes one accumulator per dimension
-- instead of three. `state` mirrors the latest version's state so that the
-- KNN scan filters inside the index.
CREATE VIRTUAL TABLE policy_vec USING vec0 (
    policy_id INTEGER PRIMARY KEY,
    state TEXT,
    embedding float[384] distance_metric=l2
);

-- Which embedding model the vectors came from (key 'model').
CREATE TABLE policy_index_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
