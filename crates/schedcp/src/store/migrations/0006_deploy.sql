-- deploy: every deployment with its state, its KPI baseline and timings;
-- every state transition; the objects deployed (so the last known-good can
-- be re-attached after a crash without the verifier's files); and the
-- node's intent: which deployment should be attached (NULL: the kernel's
-- default scheduler).

CREATE TABLE deploy_objects (
    sha256 TEXT PRIMARY KEY,
    bytes  BLOB NOT NULL
) STRICT;

CREATE TABLE deployments (
    id             INTEGER PRIMARY KEY,
    policy         TEXT NOT NULL,
    version        INTEGER NOT NULL,
    ops_name       TEXT NOT NULL,
    object_sha256  TEXT NOT NULL REFERENCES deploy_objects(sha256),
    token_jti      TEXT NOT NULL,
    kernel_release TEXT NOT NULL,
    previous_id    INTEGER REFERENCES deployments(id),
    state          TEXT NOT NULL CHECK (state IN ('canary', 'active', 'rolled_back', 'superseded')),
    requested_at   TEXT NOT NULL,
    ended_at       TEXT,
    reason         TEXT,
    request        TEXT NOT NULL,   -- JSON: canary length, thresholds, workload
    baseline       TEXT,            -- JSON Kpis
    windows        TEXT NOT NULL DEFAULT '[]',  -- JSON [Kpis] under this scheduler
    timings        TEXT NOT NULL DEFAULT '{}'   -- JSON Timings
) STRICT;

CREATE TABLE deploy_events (
    id            INTEGER PRIMARY KEY,
    deployment_id INTEGER REFERENCES deployments(id),
    at            TEXT NOT NULL,
    event         TEXT NOT NULL,
    detail        TEXT NOT NULL
) STRICT;

CREATE TABLE deploy_node (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    current_id INTEGER REFERENCES deployments(id),
    updated_at TEXT NOT NULL
) STRICT;
