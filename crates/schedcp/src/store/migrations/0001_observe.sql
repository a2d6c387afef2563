-- observe: workload profiles and their benchmark history.

-- What to run and which metric to optimise. A profile is never edited in
-- place (remove and re-add), so the history recorded against it stays
-- comparable.
CREATE TABLE workload_profiles (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    description TEXT    NOT NULL,
    -- 'command': argv (JSON array), cwd, timeout_s; 'lab': workload (spec).
    target_kind TEXT    NOT NULL CHECK (target_kind IN ('command', 'lab')),
    argv        TEXT,
    cwd         TEXT,
    timeout_s   INTEGER,
    workload    TEXT,
    metric      TEXT    NOT NULL,
    unit        TEXT    NOT NULL,
    direction   TEXT    NOT NULL CHECK (direction IN ('lower', 'higher')),
    created_at  TEXT    NOT NULL,
    CHECK ((target_kind = 'command') = (argv IS NOT NULL AND timeout_s IS NOT NULL)),
    CHECK ((target_kind = 'lab') = (workload IS NOT NULL))
) STRICT;

-- One `observe benchmark` invocation: N runs of a profile under one label.
CREATE TABLE benchmark_sets (
    id           INTEGER PRIMARY KEY,
    profile_id   INTEGER NOT NULL REFERENCES workload_profiles (id),
    started_at   TEXT    NOT NULL,
    finished_at  TEXT    NOT NULL,
    -- What was under test: a scheduler name, or 'default' for the kernel's.
    label        TEXT    NOT NULL,
    host_kernel  TEXT    NOT NULL,
    -- Lab targets only: the guest kernel release and accelerator (kvm/tcg).
    lab_kernel   TEXT,
    lab_accel    TEXT,
    runs         INTEGER NOT NULL CHECK (runs > 0),
    -- The run-set this one was compared against when it was taken.
    baseline_id  INTEGER REFERENCES benchmark_sets (id) ON DELETE SET NULL
) STRICT;

CREATE INDEX benchmark_sets_by_profile ON benchmark_sets (profile_id, id);

-- One run of a set: a metric value, or the reason there is none.
CREATE TABLE benchmark_samples (
    set_id     INTEGER NOT NULL REFERENCES benchmark_sets (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL CHECK (seq >= 0),
    value      REAL,
    error      TEXT,
    elapsed_ms REAL    NOT NULL,
    PRIMARY KEY (set_id, seq),
    CHECK ((value IS NULL) <> (error IS NULL))
) STRICT;
