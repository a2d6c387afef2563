-- deploy: keep the verifier's token with a deployment that attaches a
-- scheduler, so that putting it back on without a canary (a daemon
-- restart, a reboot, a rollback to it as the last known-good) checks it
-- again as admission would now: its expiry, that its key is still
-- trusted, and that it was issued for this object on this kernel.
-- Deployments recorded before this have none: they are not re-attached.
ALTER TABLE deployments ADD COLUMN token TEXT;
