-- deploy: deploy tokens an operator revoked (by their jti). Admission and
-- every re-attach refuse a revoked token, whatever its expiry.
CREATE TABLE revoked_deploy_tokens (
    jti        TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    revoked_at TEXT NOT NULL
) STRICT;
