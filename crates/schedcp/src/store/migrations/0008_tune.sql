-- The tuner's memory: every session with the workload's signature, every
-- trial, and each candidate's final verdict — what the next tune of a
-- similar workload reads to decide what to try first.
CREATE TABLE tune_sessions (
    id            INTEGER PRIMARY KEY,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    workload      TEXT NOT NULL,
    mode          TEXT NOT NULL CHECK (mode IN ('advice', 'apply')),
    signature     TEXT NOT NULL,      -- JSON observe::signature::Signature
    decision      TEXT,
    winner        TEXT,               -- JSON tune::Change
    deployment_id INTEGER,
    report        TEXT                -- JSON tune::TuneReport, at the end
) STRICT;

CREATE TABLE tune_trials (
    id              INTEGER PRIMARY KEY,
    session_id      INTEGER NOT NULL REFERENCES tune_sessions(id),
    n               INTEGER NOT NULL,
    family          TEXT NOT NULL,
    change          TEXT NOT NULL,    -- JSON tune::Change
    venue           TEXT NOT NULL CHECK (venue IN ('host', 'lab')),
    stage           TEXT NOT NULL,
    runs            INTEGER NOT NULL, -- a side, in this trial
    improvement_pct REAL,
    ci_low          REAL,
    ci_high         REAL,
    p_value         REAL,
    verdict         TEXT NOT NULL,
    report          TEXT NOT NULL,    -- JSON compare::AbReport
    recorded_at     TEXT NOT NULL
) STRICT;
CREATE INDEX tune_trials_session ON tune_trials(session_id);

-- One row per candidate and session: its pooled runs' verdict.
CREATE TABLE tune_verdicts (
    id              INTEGER PRIMARY KEY,
    session_id      INTEGER NOT NULL REFERENCES tune_sessions(id),
    family          TEXT NOT NULL,
    change          TEXT NOT NULL,
    venue           TEXT NOT NULL CHECK (venue IN ('host', 'lab')),
    verdict         TEXT NOT NULL,
    improvement_pct REAL,
    ci_low          REAL,
    ci_high         REAL,
    p_value         REAL,
    runs            INTEGER NOT NULL
) STRICT;
CREATE INDEX tune_verdicts_family ON tune_verdicts(family);
