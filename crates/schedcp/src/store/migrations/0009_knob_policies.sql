-- policies: a knob change set is a library entry too (kind 'knobs', origin
-- 'tune': a tuner's proven winner, promoted by evidence like any policy), and a
-- result carries the signature of the workload it was measured on, so
-- evidence can be matched to similar workloads. SQLite cannot widen a
-- CHECK in place: the policies table is rebuilt with foreign keys deferred
-- to the commit, where every version finds its policy again by id.
PRAGMA defer_foreign_keys = ON;

CREATE TABLE policies_0008 AS SELECT * FROM policies;
DROP TABLE policies;
CREATE TABLE policies (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL CHECK (kind IN ('bpf', 'external', 'knobs')),
    origin       TEXT NOT NULL CHECK (origin IN ('builtin', 'external', 'agent', 'tune')),
    created_at   TEXT NOT NULL,
    latest_state TEXT
) STRICT;
INSERT INTO policies (id, name, kind, origin, created_at, latest_state)
SELECT id, name, kind, origin, created_at, latest_state FROM policies_0008;
DROP TABLE policies_0008;

-- JSON observe::signature::Signature of the measured workload, when known.
ALTER TABLE policy_results ADD COLUMN signature TEXT;

-- A workload profile's signatures over time: taken by `observe benchmark
-- --signature` (a warm-up run, not counted) and by every tune session.
CREATE TABLE profile_signatures (
    id         INTEGER PRIMARY KEY,
    profile_id INTEGER NOT NULL REFERENCES workload_profiles (id) ON DELETE CASCADE,
    taken_at   TEXT NOT NULL,
    source     TEXT NOT NULL CHECK (source IN ('benchmark', 'tune')),
    signature  TEXT NOT NULL
) STRICT;
CREATE INDEX profile_signatures_by_profile ON profile_signatures (profile_id, id);

-- The signature taken with a run-set (its warm-up run), when asked for.
ALTER TABLE benchmark_sets ADD COLUMN signature_id INTEGER REFERENCES profile_signatures (id);
