-- knobs: a deployment is now a change — a scheduler, a knob change set, or
-- both — so the scheduler columns become optional and the change set (its
-- plan, the snapshot of prior values, knobs released to an operator) is
-- kept as JSON beside them. SQLite cannot relax NOT NULL in place: the
-- table is rebuilt with foreign keys deferred to the commit, where every
-- event and the node's intent find their deployment again.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE deployments_0006 AS SELECT * FROM deployments;
DROP TABLE deployments;
CREATE TABLE deployments (
    id             INTEGER PRIMARY KEY,
    policy         TEXT,
    version        INTEGER,
    ops_name       TEXT,
    object_sha256  TEXT REFERENCES deploy_objects(sha256),
    token_jti      TEXT,
    kernel_release TEXT NOT NULL,
    previous_id    INTEGER REFERENCES deployments(id),
    state          TEXT NOT NULL CHECK (state IN ('canary', 'active', 'rolled_back', 'superseded')),
    requested_at   TEXT NOT NULL,
    ended_at       TEXT,
    reason         TEXT,
    request        TEXT NOT NULL,
    baseline       TEXT,
    windows        TEXT NOT NULL DEFAULT '[]',
    timings        TEXT NOT NULL DEFAULT '{}',
    knobs          TEXT,            -- JSON knobs::Applied, for a change with knobs
    CHECK (policy IS NOT NULL OR knobs IS NOT NULL),
    CHECK ((policy IS NULL) = (object_sha256 IS NULL))
) STRICT;
INSERT INTO deployments (id, policy, version, ops_name, object_sha256, token_jti,
    kernel_release, previous_id, state, requested_at, ended_at, reason, request,
    baseline, windows, timings)
SELECT id, policy, version, ops_name, object_sha256, token_jti, kernel_release,
    previous_id, state, requested_at, ended_at, reason, request, baseline,
    windows, timings FROM deployments_0006;
DROP TABLE deployments_0006;

-- Change sets applied outside a deployment (trials): journalled before the
-- first write, so that if their owner dies, the next schedcp restores them.
CREATE TABLE knob_journal (
    id          INTEGER PRIMARY KEY,
    purpose     TEXT NOT NULL,
    owner_pid   INTEGER NOT NULL,
    owner_start INTEGER NOT NULL,
    started_at  TEXT NOT NULL,
    applied     TEXT NOT NULL,      -- JSON knobs::Applied
    restored_at TEXT,
    outcome     TEXT
) STRICT;
