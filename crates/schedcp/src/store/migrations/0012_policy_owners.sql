-- policies: who wrote what, for ownership and per-token quotas. NULL is the
-- operator (built-ins, the CLI, imports, admin tokens); otherwise the id of
-- the API token that did it.
ALTER TABLE policies ADD COLUMN owner TEXT;
ALTER TABLE policy_versions ADD COLUMN added_by TEXT;
ALTER TABLE policy_results ADD COLUMN recorded_by TEXT;
CREATE INDEX policy_versions_by_adder ON policy_versions (added_by) WHERE added_by IS NOT NULL;
CREATE INDEX policy_results_by_recorder ON policy_results (recorded_by) WHERE recorded_by IS NOT NULL;
