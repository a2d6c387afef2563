-- policies: the latest version's state on the policy row as well, so that
-- a state-filtered text search tests the row it already joins instead of
-- looking up the latest version once per match. Kept in step with
-- policy_vec.state by every write that sets a latest version or its state.

ALTER TABLE policies ADD COLUMN latest_state TEXT;

UPDATE policies SET latest_state = (
    SELECT v.state FROM policy_versions v
    WHERE v.policy_id = policies.id
    ORDER BY v.version DESC LIMIT 1
);
