-- Compact audit rows (issue 33, docs/design/audit-chains.md "Compact rows"): the hash as 32
-- bytes instead of 64 hex digits and no stored previous hash (it is the previous row's hash).
-- The canonical form and the hashes do not change: every record verifies as before.
--
-- The previous hash of the oldest record held is kept once, in `audit_head.base_seq` /
-- `base_hash`: the record before the oldest held one (0 and zeros while nothing was pruned),
-- moved forward by every prune in the same transaction as its delete.
ALTER TABLE audit_head ADD COLUMN base_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE audit_head ADD COLUMN base_hash TEXT NOT NULL
    DEFAULT '0000000000000000000000000000000000000000000000000000000000000000';
UPDATE audit_head SET
    base_seq = COALESCE((SELECT MIN(seq) - 1 FROM audit_log), seq),
    base_hash = COALESCE((SELECT prev_hash FROM audit_log ORDER BY seq LIMIT 1), hash);
ALTER TABLE audit_log DROP COLUMN prev_hash;
ALTER TABLE audit_log ALTER COLUMN hash TYPE BYTEA USING decode(hash, 'hex');
ALTER TABLE audit_log ADD CONSTRAINT audit_log_hash_length CHECK (length(hash) = 32);
