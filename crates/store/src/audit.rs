//! The hash-chained audit log.
//!
//! ```text
//! hash_0 = 32 zero bytes
//! hash_n = SHA-256(hash_{n-1} ‖ canonical(record_n))
//! canonical(r) = "hanzo-kms/audit/v1" ‖ u64be(seq) ‖ i64be(time_ms) ‖ str(request_id) ‖ str(principal)
//!              ‖ str(tenant) ‖ str(operation) ‖ opt_str(key_name) ‖ opt_u64be(key_version)
//!              ‖ str(outcome) ‖ opt_str(reason) ‖ opt_str(peer) [‖ str(detail)]
//! str(s)      = u32be(len(s)) ‖ utf8(s)
//! opt_str(s)  = 0x00 if absent, else 0x01 ‖ str(s);   opt_u64be likewise
//! ```
//!
//! `detail` (schema 7) is appended only when the record has one: a record without it encodes
//! exactly as before, and since every field before it is length-prefixed, the two forms cannot
//! be confused. Checkpoints and exports carry theirs there (docs/audit-archive.md).
//!
//! Editing, deleting, inserting or reordering any record breaks the chain at that record; deleting
//! the newest records is caught by the chain head (`audit_head`), which is updated in the same
//! transaction as every append.

use hanzo_kms_core::Result;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::Store;
use crate::sql::{audit_columns, select_head};

/// What happened, before it is numbered and chained. Holds no secret material by construction:
/// there is no field for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub time_ms: i64,
    pub request_id: String,
    pub principal: String,
    pub tenant: String,
    pub operation: String,
    pub key_name: Option<String>,
    pub key_version: Option<u32>,
    /// `ok`, `denied` or `error`.
    pub outcome: String,
    /// For a denial or error: the error kind code.
    pub reason: Option<String>,
    pub peer: Option<String>,
    /// Structured data the record carries, as JSON text, covered by its hash: a checkpoint's
    /// signed head, an export's range and file hash. `None` for a request's record.
    pub detail: Option<String>,
}

/// A stored, chained record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: u64,
    pub event: AuditEvent,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl AuditRecord {
    pub fn to_json(&self) -> serde_json::Value {
        let e = &self.event;
        json!({
            "seq": self.seq,
            "time_ms": e.time_ms,
            "request_id": e.request_id,
            "principal": e.principal,
            "tenant": e.tenant,
            "operation": e.operation,
            "key": e.key_name,
            "version": e.key_version,
            "outcome": e.outcome,
            "reason": e.reason,
            "peer": e.peer,
            "detail": e.detail,
            "prev_hash": hex::encode(self.prev_hash),
            "hash": hex::encode(self.hash),
        })
    }
}

impl AuditRecord {
    /// The record [`to_json`](Self::to_json) wrote (an archive's line), checked only for its
    /// shape: whether it belongs to its chain is [`check_link`]'s question.
    pub fn from_json(v: &serde_json::Value) -> std::result::Result<Self, String> {
        let seq = v["seq"].as_u64().ok_or("no seq")?;
        let what = |field: &str| format!("record {seq}: {field} is missing or malformed");
        let text = |field: &str| -> std::result::Result<String, String> {
            v[field]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| what(field))
        };
        let opt_text = |field: &str| -> std::result::Result<Option<String>, String> {
            match &v[field] {
                serde_json::Value::Null => Ok(None),
                serde_json::Value::String(s) => Ok(Some(s.clone())),
                _ => Err(what(field)),
            }
        };
        let hash = |field: &str| -> std::result::Result<[u8; 32], String> {
            v[field]
                .as_str()
                .and_then(crate::rows::parse_hash)
                .ok_or_else(|| what(field))
        };
        let key_version = match &v["version"] {
            serde_json::Value::Null => None,
            n => Some(
                n.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| what("version"))?,
            ),
        };
        Ok(Self {
            seq,
            event: AuditEvent {
                time_ms: v["time_ms"].as_i64().ok_or_else(|| what("time_ms"))?,
                request_id: text("request_id")?,
                principal: text("principal")?,
                tenant: text("tenant")?,
                operation: text("operation")?,
                key_name: opt_text("key")?,
                key_version,
                outcome: text("outcome")?,
                reason: opt_text("reason")?,
                peer: opt_text("peer")?,
                detail: opt_text("detail")?,
            },
            prev_hash: hash("prev_hash")?,
            hash: hash("hash")?,
        })
    }
}

/// The canonical byte encoding of a record (see the module docs).
pub fn canonical(seq: u64, e: &AuditEvent) -> Vec<u8> {
    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    fn opt(out: &mut Vec<u8>, v: Option<&str>) {
        match v {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                s(out, v);
            }
        }
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"hanzo-kms/audit/v1");
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&e.time_ms.to_be_bytes());
    s(&mut out, &e.request_id);
    s(&mut out, &e.principal);
    s(&mut out, &e.tenant);
    s(&mut out, &e.operation);
    opt(&mut out, e.key_name.as_deref());
    match e.key_version {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&u64::from(v).to_be_bytes());
        }
    }
    s(&mut out, &e.outcome);
    opt(&mut out, e.reason.as_deref());
    opt(&mut out, e.peer.as_deref());
    if let Some(detail) = &e.detail {
        s(&mut out, detail);
    }
    out
}

/// `SHA-256(prev ‖ canonical(seq, e))`.
/// `events` chained after the record `seq` whose hash is `prev`: records `seq + 1`, ….
pub fn chain_from(seq: u64, prev: [u8; 32], events: &[AuditEvent]) -> Vec<AuditRecord> {
    let (mut seq, mut prev) = (seq, prev);
    events
        .iter()
        .map(|e| {
            seq += 1;
            let hash = chain_hash(&prev, seq, e);
            let r = AuditRecord {
                seq,
                event: e.clone(),
                prev_hash: prev,
                hash,
            };
            prev = hash;
            r
        })
        .collect()
}

/// The hashes of `events` chained after the record `seq` whose hash is `prev`: what
/// [`chain_from`] computes, without copying the events (the group committer's path).
pub fn chain_hashes<E: std::borrow::Borrow<AuditEvent>>(
    prev: [u8; 32],
    seq: u64,
    events: &[E],
) -> Vec<[u8; 32]> {
    let mut prev = prev;
    events
        .iter()
        .zip(seq + 1..)
        .map(|(e, seq)| {
            prev = chain_hash(&prev, seq, e.borrow());
            prev
        })
        .collect()
}

pub fn chain_hash(prev: &[u8; 32], seq: u64, e: &AuditEvent) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical(seq, e));
    h.finalize().into()
}

/// Check one stored record against the chain so far: it must be record `expected_seq`, follow
/// the record whose hash is `prev`, and hash to what it says. `Err` says what is wrong.
pub fn check_link(
    expected_seq: u64,
    prev: &[u8; 32],
    r: &AuditRecord,
) -> std::result::Result<(), String> {
    if r.seq != expected_seq {
        return Err(format!(
            "expected record {expected_seq} but found {}: a record was deleted or reordered",
            r.seq
        ));
    }
    if r.prev_hash != *prev {
        return Err("its previous-hash does not match the record before it".to_owned());
    }
    if chain_hash(prev, r.seq, &r.event) != r.hash {
        return Err("its contents do not match its hash: the record was edited".to_owned());
    }
    Ok(())
}

/// The result of checking the whole chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    /// The first record checked: 1, or the oldest retained record once older ones were
    /// exported and pruned.
    pub from: u64,
    /// Records checked.
    pub records: u64,
    /// The first problem found, if any: `(seq, what)`.
    pub problem: Option<(u64, String)>,
    /// Hash of the newest record (the chain head).
    pub head: [u8; 32],
}

impl AuditReport {
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }

    /// The report as `audit verify --json` and `GET /v1/audit/verify` print it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "valid": self.is_ok(),
            "from": self.from,
            "records": self.records,
            "head": hex::encode(self.head),
            "problem": self.problem.as_ref().map(|(seq, what)| serde_json::json!({"seq": seq, "reason": what})),
        })
    }
}

impl Store {
    /// Audit records with `seq > after`, oldest first, at most `limit`.
    ///
    /// One statement reads them with the record before the first (or, when the store holds
    /// none, the chain's base), so each record's previous hash comes from the same snapshot:
    /// a prune committing meanwhile cannot pair a record with the wrong one.
    pub async fn audit_records(&self, after: u64, limit: u32) -> Result<Vec<AuditRecord>> {
        // Sequence numbers are positive i64s: a position past i64::MAX is past every record
        // (a plain cast would wrap it to a negative number, the start of the log).
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = sqlx::query(concat!(
            "SELECT ",
            audit_columns!(),
            ", (SELECT base_hash FROM audit_head WHERE id = 1) AS base FROM audit_log \
             WHERE seq >= COALESCE((SELECT MAX(seq) FROM audit_log WHERE seq <= $1), 0) \
             ORDER BY seq LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e, "reading the audit log"))?;
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let mut prev = self.base_of(first)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let r = self.audit_from_row(row, prev)?;
            prev = r.hash;
            if r.seq as i64 > after {
                out.push(r);
            }
        }
        out.truncate(limit as usize);
        Ok(out)
    }

    /// The `base` column of a row read with the chain's base hash beside it.
    fn base_of(&self, row: &sqlx::any::AnyRow) -> Result<[u8; 32]> {
        let base: String = row
            .try_get("base")
            .map_err(|e| self.err(e, "reading the audit chain head"))?;
        crate::rows::parse_hash(&base)
            .ok_or_else(|| self.corrupt("the audit chain base hash is malformed"))
    }

    /// The chain's base and the oldest record held, read together: `(base seq, base hash,
    /// oldest)`. A prune moves the base and deletes in one transaction, so the oldest record
    /// held is `base + 1` (or there is none); anything else means the log was altered.
    pub async fn audit_bounds(&self) -> Result<(u64, [u8; 32], Option<u64>)> {
        let row = self
            .head_row(
                "SELECT base_seq, base_hash, (SELECT MIN(seq) FROM audit_log) AS oldest \
                 FROM audit_head WHERE id = 1",
            )
            .await?;
        let (seq, hash) = self.pair_of(&row, "base")?;
        let oldest: Option<i64> = row
            .try_get(2)
            .map_err(|e| self.err(e, "reading the audit log"))?;
        Ok((seq, hash, oldest.map(|o| u64::try_from(o).unwrap_or(0))))
    }

    /// The record before the oldest one held: `(seq, hash)`, `(0, zeros)` until records were
    /// exported and pruned. Each prune moves it in the transaction that deletes.
    pub async fn audit_base(&self) -> Result<(u64, [u8; 32])> {
        let (seq, hash, _) = self.audit_bounds().await?;
        Ok((seq, hash))
    }

    /// The `audit_head` row as `sql` reads it.
    async fn head_row(&self, sql: &'static str) -> Result<sqlx::any::AnyRow> {
        sqlx::query(sql)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e, "reading the audit chain head"))?
            .ok_or_else(|| self.corrupt("the audit chain head is missing"))
    }

    /// Columns 0 and 1 of an `audit_head` row: a sequence number and a hex hash (the head's or
    /// the base's: `what` names it in errors).
    fn pair_of(&self, row: &sqlx::any::AnyRow, what: &str) -> Result<(u64, [u8; 32])> {
        let (seq, hash) = self.head_of(row)?;
        Ok((
            u64::try_from(seq)
                .map_err(|_| self.corrupt(&format!("the audit chain {what} is negative")))?,
            crate::rows::parse_hash(&hash).ok_or_else(|| {
                self.corrupt(&format!("the audit chain {what} hash is malformed"))
            })?,
        ))
    }

    /// Recompute the whole chain and compare it with the stored hashes and the chain head.
    ///
    /// Every record is checked, then the head is read. A live server may append meanwhile: a
    /// head past the last record checked sends the check on to the new records, so appends are
    /// never taken for records deleted from the end, and a head behind the records (rewound or
    /// reset) is reported.
    pub async fn verify_audit(&self) -> Result<AuditReport> {
        self.verify_audit_from(1, [0; 32]).await
    }

    /// [`verify_audit`](Self::verify_audit) from record `first`, which must follow a record
    /// whose hash is `prev`: the chain after a signed checkpoint, once the records before it
    /// were exported and pruned. Nothing before `first` is read.
    pub async fn verify_audit_from(&self, first: u64, prev: [u8; 32]) -> Result<AuditReport> {
        let first = first.max(1);
        let mut expected_seq = first;
        let mut prev = prev;
        loop {
            match self.walk(expected_seq, prev).await? {
                Walked::To(next, hash) => (expected_seq, prev) = (next, hash),
                Walked::Broken { at, what, before } => {
                    return Ok(AuditReport {
                        from: first,
                        records: before - first,
                        problem: Some((at, what)),
                        head: prev,
                    });
                }
            }
            let last = expected_seq - 1;
            let records = expected_seq - first;
            let row = sqlx::query(select_head!())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.err(e, "reading the audit chain head"))?
                .ok_or_else(|| self.corrupt("the audit chain head is missing"))?;
            let (head_seq, head_hash) = self.head_of(&row)?;
            let problem = |at: u64, what: String| AuditReport {
                from: first,
                records,
                problem: Some((at, what)),
                head: prev,
            };
            match u64::try_from(head_seq) {
                // Appended while the log was read: check those too.
                Ok(h) if h > last => {
                    // A head past records that never appear is a cut end: the next pass finds
                    // no new record and reports it.
                    let more = self.audit_records(last, 1).await?;
                    if more.is_empty() {
                        return Ok(problem(
                            last + 1,
                            format!(
                                "the chain head says {h} records but the log ends at {last}: records were deleted from the end"
                            ),
                        ));
                    }
                    continue;
                }
                Ok(h) if h == last => {
                    if crate::rows::parse_hash(&head_hash) != Some(prev) {
                        return Ok(problem(
                            last,
                            "the chain head's hash does not match the last record: the log's end was replaced"
                                .to_owned(),
                        ));
                    }
                    return Ok(AuditReport {
                        from: first,
                        records,
                        problem: None,
                        head: prev,
                    });
                }
                _ => {
                    return Ok(problem(
                        last,
                        format!(
                            "the chain head says {head_seq} records but the log ends at {last}: the head was rewound"
                        ),
                    ));
                }
            }
        }
    }
}

/// Where a walk along the chain stopped.
enum Walked {
    /// At the end: the next seq expected and the last hash.
    To(u64, [u8; 32]),
    /// At a bad record `at`; `before` is the seq the walk expected there.
    Broken { at: u64, what: String, before: u64 },
}

impl Store {
    /// Check the records from `expected` on, each against the one before (the first against
    /// `prev`), up to the last one stored.
    ///
    /// On SQLite this reads through a rusqlite connection of its own, opened read-only for the
    /// walk (a fourth connection beside the three of [`crate::sqlite`]): the sqlx path decodes
    /// rows several times slower, and verification is bound by reading rows, not by hashing
    /// (docs/benchmarks.md, "The audit log on disk"). WAL mode lets it read while the committer
    /// writes.
    async fn walk(&self, expected: u64, prev: [u8; 32]) -> Result<Walked> {
        if self.backend == crate::Backend::Sqlite {
            let db = std::path::PathBuf::from(&self.location);
            let location = self.location.clone();
            return tokio::task::spawn_blocking(move || walk_sqlite(&db, expected, prev))
                .await
                .map_err(|e| {
                    hanzo_kms_core::Error::internal(format!("the audit walk stopped: {e}"))
                })?
                .map_err(|e| {
                    crate::error::sqlite_error(e, &format!("reading the audit log of {location}"))
                });
        }
        let (mut expected, mut prev) = (expected, prev);
        loop {
            let batch = self.audit_records(expected - 1, 1000).await?;
            if batch.is_empty() {
                return Ok(Walked::To(expected, prev));
            }
            for r in &batch {
                if let Some(broken) = step(&mut expected, &mut prev, r) {
                    return Ok(broken);
                }
            }
        }
    }

    /// The oldest record the store still holds (`None`: an empty log). 1 until records were
    /// exported and pruned.
    pub async fn audit_oldest(&self) -> Result<Option<u64>> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM audit_log")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e, "reading the audit log"))?;
        Ok(seq.and_then(|s| u64::try_from(s).ok()))
    }

    /// Record `seq`, if the store holds it.
    pub async fn audit_record(&self, seq: u64) -> Result<Option<AuditRecord>> {
        let Some(after) = seq.checked_sub(1) else {
            return Ok(None);
        };
        let mut records = self.audit_records(after, 1).await?;
        Ok(records.pop().filter(|r| r.seq == seq))
    }

    /// Every retained record of one `operation` that carries a detail and succeeded, oldest
    /// first: the checkpoints or the exports (each has an index of its own, schema 7; a failed
    /// attempt's record, outcome `error` and no detail, is not one). There is one checkpoint per
    /// interval, so these are few.
    pub async fn audit_marks(&self, operation: &str) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            audit_columns!(),
            ", (SELECT p.hash FROM audit_log p WHERE p.seq < audit_log.seq ORDER BY p.seq DESC \
             LIMIT 1) AS prev, (SELECT base_hash FROM audit_head WHERE id = 1) AS base \
             FROM audit_log WHERE operation = $1 AND outcome = 'ok' AND detail IS NOT NULL \
             ORDER BY seq"
        ))
        .bind(operation.to_owned())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e, "reading the audit log"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let prev: Option<Vec<u8>> = row
                .try_get("prev")
                .map_err(|e| self.err(e, "reading an audit record"))?;
            let prev = match prev {
                Some(h) => <[u8; 32]>::try_from(h.as_slice())
                    .map_err(|_| self.corrupt("an audit record has a malformed hash"))?,
                None => self.base_of(row)?,
            };
            out.push(self.audit_from_row(row, prev)?);
        }
        Ok(out)
    }

    /// The chain head as stored: `(seq, hash)` of the newest record.
    pub async fn audit_head(&self) -> Result<(u64, [u8; 32])> {
        let row = self.head_row(select_head!()).await?;
        self.pair_of(&row, "head")
    }
}

impl crate::WriteTx {
    /// Delete the records `first..=last` (those the store holds), for a prune after an export,
    /// and move the chain's base to record `last`: records leave from the start of the log
    /// only, so `first` must be at most the record after the base, and record `last` must be
    /// held. A range the base already passed (another prune got there first) deletes nothing.
    /// The caller bounds the range so one transaction stays short; returns the rows deleted.
    pub async fn delete_audit(&mut self, first: u64, last: u64) -> Result<u64> {
        let bound = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let err = |e| self.store.err(e, "pruning the audit log");
        let base: i64 = sqlx::query_scalar("SELECT base_seq FROM audit_head WHERE id = 1")
            .fetch_one(&mut *self.tx)
            .await
            .map_err(err)?;
        let base = u64::try_from(base).unwrap_or(0);
        if last <= base {
            return Ok(0);
        }
        if first > base.saturating_add(1) {
            return Err(hanzo_kms_core::Error::invalid(format!(
                "records {}..{} come before {first}..{last}: the audit log is pruned from its start",
                base + 1,
                first - 1
            )));
        }
        let hash: Option<Vec<u8>> = sqlx::query_scalar("SELECT hash FROM audit_log WHERE seq = $1")
            .bind(bound(last))
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(err)?;
        let hash = hash
            .and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
            .ok_or_else(|| {
                self.store.corrupt(&format!(
                    "audit record {last}, the end of a prune, is missing or malformed"
                ))
            })?;
        let deleted = sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
            .bind(bound(last))
            .execute(&mut *self.tx)
            .await
            .map_err(err)?
            .rows_affected();
        sqlx::query("UPDATE audit_head SET base_seq = $1, base_hash = $2 WHERE id = 1")
            .bind(bound(last))
            .bind(hex::encode(hash))
            .execute(&mut *self.tx)
            .await
            .map_err(err)?;
        Ok(deleted)
    }
}

/// One step of a walk: `r` must be record `expected`, after the record whose hash is `prev`;
/// then both move past it. `Some` says where the chain breaks.
fn step(expected: &mut u64, prev: &mut [u8; 32], r: &AuditRecord) -> Option<Walked> {
    if let Err(what) = check_link(*expected, prev, r) {
        return Some(Walked::Broken {
            at: r.seq,
            what,
            before: *expected,
        });
    }
    *prev = r.hash;
    *expected += 1;
    None
}

/// [`Store::walk`] on SQLite: one read transaction, rows decoded straight from rusqlite.
fn walk_sqlite(db: &std::path::Path, expected: u64, prev: [u8; 32]) -> rusqlite::Result<Walked> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mut q = conn.prepare(concat!(
        "SELECT ",
        audit_columns!(),
        " FROM audit_log WHERE seq >= ?1 ORDER BY seq"
    ))?;
    let mut rows = q.query([i64::try_from(expected).unwrap_or(i64::MAX)])?;
    let (mut expected, mut prev) = (expected, prev);
    while let Some(row) = rows.next()? {
        let columns = crate::AuditColumns {
            seq: row.get(0)?,
            time_ms: row.get(1)?,
            request_id: row.get(2)?,
            principal: row.get(3)?,
            tenant: row.get(4)?,
            operation: row.get(5)?,
            key_name: row.get(6)?,
            key_version: row.get(7)?,
            outcome: row.get(8)?,
            reason: row.get(9)?,
            peer: row.get(10)?,
            detail: row.get(11)?,
            // Not a blob (someone wrote text there): a malformed hash, reported as such.
            hash: match row.get_ref(12)? {
                rusqlite::types::ValueRef::Blob(b) => b.to_vec(),
                _ => Vec::new(),
            },
        };
        let seq = columns.seq;
        // The previous hash is not stored: each row is checked against the chain so far.
        let r = match columns.into_record(prev) {
            Ok(r) => r,
            Err(what) => {
                return Ok(Walked::Broken {
                    at: u64::try_from(seq).unwrap_or(0),
                    what,
                    before: expected,
                });
            }
        };
        if let Some(broken) = step(&mut expected, &mut prev, &r) {
            return Ok(broken);
        }
    }
    Ok(Walked::To(expected, prev))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An event for tests (also used by `batch`'s).
    pub(crate) fn ev(op: &str) -> AuditEvent {
        AuditEvent {
            time_ms: 1,
            request_id: "r".into(),
            principal: "p".into(),
            tenant: "t".into(),
            operation: op.into(),
            key_name: None,
            key_version: None,
            outcome: "ok".into(),
            reason: None,
            peer: None,
            detail: None,
        }
    }

    #[test]
    fn canonical_is_unambiguous() {
        // Moving a byte between adjacent fields changes the encoding.
        let mut a = ev("ab");
        a.tenant = "t".into();
        let mut b = ev("b");
        b.tenant = "ta".into();
        assert_ne!(canonical(1, &a), canonical(1, &b));
        // Absent and empty differ.
        let mut c = ev("x");
        c.key_name = Some(String::new());
        assert_ne!(canonical(1, &c), canonical(1, &ev("x")));
        assert_ne!(
            chain_hash(&[0; 32], 1, &ev("x")),
            chain_hash(&[0; 32], 2, &ev("x"))
        );
    }

    #[test]
    fn a_link_is_checked_for_its_seq_previous_hash_and_hash() {
        let chain = chain_from(0, [0; 32], &[ev("a"), ev("b")]);
        check_link(1, &[0; 32], &chain[0]).unwrap();
        check_link(2, &chain[0].hash, &chain[1]).unwrap();
        let e = check_link(1, &[0; 32], &chain[1]).unwrap_err();
        assert!(e.contains("expected record 1 but found 2"), "{e}");
        let e = check_link(2, &[0; 32], &chain[1]).unwrap_err();
        assert!(e.contains("previous-hash"), "{e}");
        let mut edited = chain[1].clone();
        edited.event.outcome = "denied".into();
        let e = check_link(2, &chain[0].hash, &edited).unwrap_err();
        assert!(e.contains("edited"), "{e}");
    }

    #[test]
    fn a_row_becomes_a_record_only_with_a_32_byte_hash() {
        let r = &chain_from(0, [0; 32], &[ev("a")])[0];
        let row = crate::AuditColumns {
            seq: 1,
            time_ms: 1,
            request_id: "r".into(),
            principal: "p".into(),
            tenant: "t".into(),
            operation: "a".into(),
            key_name: None,
            key_version: None,
            outcome: "ok".into(),
            reason: None,
            peer: None,
            detail: None,
            hash: r.hash.to_vec(),
        };
        assert_eq!(&row.clone().into_record([0; 32]).unwrap(), r);
        for hash in [
            vec![],
            r.hash[..31].to_vec(),
            [r.hash.as_slice(), &[0]].concat(),
        ] {
            let bad = crate::AuditColumns {
                hash,
                ..row.clone()
            };
            let e = bad.into_record([0; 32]).unwrap_err();
            assert_eq!(e, "audit record 1 has a malformed hash");
        }
    }
}
