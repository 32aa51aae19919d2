-- Replay records expire (issue 33): the second after which the message a record covers can no
-- longer be accepted (an attestation's timestamp + attestation_ttl, a settlement's expiry). The
-- scheduler deletes rows past it (plus storage.replay_grace_secs) in small batches. NULL: a row
-- written before this version, kept for good.
ALTER TABLE used_nonces ADD COLUMN expires_at BIGINT;
ALTER TABLE consumed_attestations ADD COLUMN expires_at BIGINT;
CREATE INDEX used_nonces_by_expiry ON used_nonces (expires_at);
CREATE INDEX consumed_attestations_by_expiry ON consumed_attestations (expires_at);
