-- verify: every verification report of a repository version, kept whole
-- beside the version it judged (the object and token refer to it by hash).

CREATE TABLE verify_reports (
    id             INTEGER PRIMARY KEY,
    version_id     INTEGER NOT NULL REFERENCES policy_versions (id),
    passed         INTEGER NOT NULL CHECK (passed IN (0, 1)),
    report_sha256  TEXT NOT NULL,
    object_sha256  TEXT,
    kernel_release TEXT,
    report         TEXT NOT NULL,
    recorded_at    TEXT NOT NULL
) STRICT;

CREATE INDEX verify_reports_by_version ON verify_reports (version_id, id);
