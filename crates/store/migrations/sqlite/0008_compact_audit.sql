-- Compact audit rows (issue 33, docs/design/audit-chains.md "Compact rows"): the hash as 32
-- bytes instead of 64 hex digits, no stored previous hash (it is the previous row's hash), and
-- `seq` as the table's rowid (`INTEGER PRIMARY KEY`: no separate index). The canonical form and
-- the hashes do not change: every record verifies as before.
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

CREATE TABLE audit_log_v8 (
    seq         INTEGER PRIMARY KEY,
    time_ms     BIGINT NOT NULL,
    request_id  TEXT NOT NULL,
    principal   TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    operation   TEXT NOT NULL,
    key_name    TEXT,
    key_version BIGINT,
    outcome     TEXT NOT NULL,
    reason      TEXT,
    peer        TEXT,
    detail      TEXT,
    hash        BLOB NOT NULL CHECK (typeof(hash) = 'blob' AND length(hash) = 32)
);
INSERT INTO audit_log_v8 (seq, time_ms, request_id, principal, tenant, operation, key_name,
                          key_version, outcome, reason, peer, detail, hash)
SELECT seq, time_ms, request_id, principal, tenant, operation, key_name, key_version, outcome,
       reason, peer, detail, unhex(hash)
FROM audit_log ORDER BY seq;
DROP TABLE audit_log;
ALTER TABLE audit_log_v8 RENAME TO audit_log;
CREATE INDEX audit_log_checkpoints ON audit_log (seq) WHERE operation = 'audit.checkpoint';
CREATE INDEX audit_log_exports ON audit_log (seq) WHERE operation = 'audit.export';
