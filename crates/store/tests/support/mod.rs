//! What the store's tests share.

/// SQLite: turn a schema-8 store back into the schema-7 shape an older hanzo-kms wrote: audit
/// hashes as hex text, each record's previous hash stored in its row (the oldest held one's
/// from the chain's base), `seq` not the rowid, no base in `audit_head`.
pub const DOWNGRADE_TO_7: &str = "
    CREATE TABLE audit_log_v7 (
        seq BIGINT PRIMARY KEY, time_ms BIGINT NOT NULL, request_id TEXT NOT NULL,
        principal TEXT NOT NULL, tenant TEXT NOT NULL, operation TEXT NOT NULL, key_name TEXT,
        key_version BIGINT, outcome TEXT NOT NULL, reason TEXT, peer TEXT,
        prev_hash TEXT NOT NULL, hash TEXT NOT NULL, detail TEXT);
    INSERT INTO audit_log_v7
    SELECT a.seq, a.time_ms, a.request_id, a.principal, a.tenant, a.operation, a.key_name,
           a.key_version, a.outcome, a.reason, a.peer,
           COALESCE((SELECT lower(hex(p.hash)) FROM audit_log p WHERE p.seq = a.seq - 1),
                    (SELECT base_hash FROM audit_head)),
           lower(hex(a.hash)), a.detail
    FROM audit_log a;
    DROP TABLE audit_log;
    ALTER TABLE audit_log_v7 RENAME TO audit_log;
    CREATE INDEX audit_log_checkpoints ON audit_log (seq) WHERE operation = 'audit.checkpoint';
    CREATE INDEX audit_log_exports ON audit_log (seq) WHERE operation = 'audit.export';
    ALTER TABLE audit_head DROP COLUMN base_seq;
    ALTER TABLE audit_head DROP COLUMN base_hash;
    DELETE FROM schema_version WHERE version >= 8;
";
