-- Audit archival (issue 33, docs/operations.md "Audit archives"): a record may carry a detail,
-- JSON that its hash covers (a checkpoint's signed head, an export's range and file hash).
-- NULL for every other record, and for every record written before this version: those hash
-- exactly as before. The two partial indexes find checkpoints and exports without a scan.
ALTER TABLE audit_log ADD COLUMN detail TEXT;
CREATE INDEX audit_log_checkpoints ON audit_log (seq) WHERE operation = 'audit.checkpoint';
CREATE INDEX audit_log_exports ON audit_log (seq) WHERE operation = 'audit.export';
