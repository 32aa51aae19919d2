//! The group committer's transaction: the replay-guard reads for a whole batch of signing
//! requests, a decision the caller makes from them without I/O, and that decision's writes with
//! their audit records, all in one transaction.
//!
//! Two implementations run the same steps on the same tables, with the same SQL text
//! ([`crate::sql`]):
//!
//! - [`Store::commit_batch`], through sqlx, for PostgreSQL (and SQLite when no dedicated writer
//!   runs), with multi-row statements;
//! - [`BatchWriter::commit_batch`](crate::BatchWriter::commit_batch), on SQLite, through the
//!   committer's own connection on its own thread, with cached one-row statements. sqlx runs
//!   every SQLite connection on a worker thread and hands each statement to it and its result
//!   back: two thread wake-ups per statement, which the committer, the hot path of every signing
//!   request, avoids (see [`crate::sqlite`]).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use hanzo_kms_core::Result;
use sqlx::Row;

use crate::sql::{self, insert_audit, insert_consumed, insert_nonce};
use crate::sqlite::Pending;
use crate::{AuditEvent, NonceRow, Store, WriteTx};

/// Recorded nonces: `(key, nonce)` → (message digest, stored signature record).
pub type NonceRecords = HashMap<(String, Vec<u8>), (Vec<u8>, Option<Vec<u8>>)>;

/// What a batch's transaction found before deciding.
#[derive(Debug, Default)]
pub struct BatchReads {
    /// `(key, nonce)` → (message digest, stored signature record), for the pairs asked about
    /// that are recorded.
    pub nonces: NonceRecords,
    /// The attestation digests asked about that a settlement already consumed.
    pub consumed: HashSet<Vec<u8>>,
}

/// A settlement consuming an attestation.
#[derive(Clone, Copy, Debug)]
pub struct ConsumeRow<'a> {
    pub attestation: &'a [u8],
    pub settlement_key: &'a str,
    pub settlement: &'a [u8],
    /// When the attestation stops verifying (its timestamp + attestation_ttl).
    pub expires_at: i64,
}

/// What a batch's transaction writes. With no events it writes nothing.
#[derive(Debug, Default)]
pub struct BatchWrites<'a> {
    pub nonces: Vec<NonceRow<'a>>,
    pub consumed: Vec<ConsumeRow<'a>>,
    /// Borrowed from the requests where the record is theirs as it is (the committer copies
    /// none on its path).
    pub events: Vec<Cow<'a, AuditEvent>>,
}

/// What a batch asks about.
#[derive(Clone, Copy, Debug)]
pub struct BatchQuery<'q> {
    /// `(key, nonce)` pairs.
    pub nonces: &'q [(&'q str, &'q [u8])],
    /// Attestation digests.
    pub attestations: &'q [&'q [u8]],
    /// Seconds since the epoch, for `created_at`.
    pub now: i64,
}

impl Store {
    /// Run one group-commit batch through sqlx. `decide` sees what is stored and returns what
    /// to write, with a result for the caller. Returns the commit to wait for before any answer
    /// goes out (`None` when nothing was written).
    pub async fn commit_batch<'a, T>(
        &self,
        q: BatchQuery<'_>,
        decide: impl FnOnce(&BatchReads) -> (BatchWrites<'a>, T),
    ) -> Result<(T, Option<Pending>)> {
        let mut tx = self.begin_write().await?;
        let reads = BatchReads {
            nonces: if q.nonces.is_empty() {
                HashMap::new()
            } else {
                tx.nonce_records(q.nonces).await?
            },
            consumed: if q.attestations.is_empty() {
                HashSet::new()
            } else {
                tx.consumed_attestations(q.attestations).await?
            },
        };
        let (writes, out) = decide(&reads);
        if writes.events.is_empty() {
            return Ok((out, None));
        }
        let events: Vec<AuditEvent> = writes.events.into_iter().map(Cow::into_owned).collect();
        let (_, pending) = tx
            .commit_writes(&writes.nonces, &writes.consumed, &events, q.now)
            .await?;
        Ok((out, Some(pending)))
    }
}

/// PostgreSQL's limit of bound parameters in one statement.
const PG_MAX_PARAMS: usize = 65_535;

impl WriteTx {
    /// A batch's replay records and audit records, then the commit. On PostgreSQL, when the
    /// batch fits one statement, the inserts and the head's advance are one statement of
    /// data-modifying `WITH` parts: one round trip instead of three or more, while this
    /// transaction holds the chain's head (docs/benchmarks.md, "PostgreSQL round trips"). The
    /// tables' uniqueness still decides replays: a duplicate fails the statement as before.
    pub(crate) async fn commit_writes(
        mut self,
        nonces: &[NonceRow<'_>],
        consumed: &[ConsumeRow<'_>],
        events: &[AuditEvent],
        now: i64,
    ) -> Result<(Vec<crate::AuditRecord>, Pending)> {
        let params = nonces.len() * 6 + consumed.len() * 5 + events.len() * 13 + 2;
        if self.store.backend != crate::Backend::Postgres
            || events.is_empty()
            || params > PG_MAX_PARAMS
        {
            self.consume_attestations(consumed, now).await?;
            self.insert_nonces(nonces, now).await?;
            return self.commit_pending(events).await;
        }
        let records = crate::audit::chain_from(self.head_seq, self.head_hash, events);
        let (seq, head) = records
            .last()
            .map_or((self.head_seq, self.head_hash), |r| (r.seq, r.hash));
        let backend = self.store.backend;
        let mut text = String::from("WITH ");
        let mut next = 1;
        if !consumed.is_empty() {
            text.push_str(concat!("c AS (", insert_consumed!()));
            sql::values_from(&mut text, backend, consumed.len(), 5, next);
            text.push_str("), ");
            next += consumed.len() * 5;
        }
        if !nonces.is_empty() {
            text.push_str(concat!("n AS (", insert_nonce!()));
            sql::values_from(&mut text, backend, nonces.len(), 6, next);
            text.push_str("), ");
            next += nonces.len() * 6;
        }
        text.push_str(concat!("a AS (", insert_audit!()));
        sql::values_from(&mut text, backend, records.len(), 13, next);
        next += records.len() * 13;
        text.push_str(") UPDATE audit_head SET seq = ");
        sql::placeholder(&mut text, backend, next);
        text.push_str(", hash = ");
        sql::placeholder(&mut text, backend, next + 1);
        text.push_str(" WHERE id = 1");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
        for c in consumed {
            q = bind_consumed(q, c, now);
        }
        for r in nonces {
            q = bind_nonce(q, r, now);
        }
        for r in &records {
            q = crate::tx::bind_audit(q, r);
        }
        q = q.bind(seq as i64).bind(hex::encode(head));
        if let Err(x) = q.execute(&mut *self.tx).await {
            // A replay record already there is a duplicate (as from the separate inserts); any
            // other failure, the audit record's included, means the audit was not written.
            let audit_row = matches!(&x, sqlx::Error::Database(d)
                if d.constraint().is_some_and(|c| c.starts_with("audit_")));
            let e = crate::error::db_error(x, "recording replay records and audit records");
            return Err(
                if e.kind() == hanzo_kms_core::ErrorKind::AlreadyExists && !audit_row {
                    e
                } else {
                    crate::error::audit_error(e)
                },
            );
        }
        self.finish(records).await
    }
}

impl WriteTx {
    /// The recorded digest and signature of many `(key, nonce)` pairs at once (a few
    /// statements for a whole group commit): the pairs found.
    pub(crate) async fn nonce_records(&mut self, pairs: &[(&str, &[u8])]) -> Result<NonceRecords> {
        const PER_SELECT: usize = 400; // 2 parameters each
        let backend = self.store.backend;
        let mut found = HashMap::new();
        for chunk in pairs.chunks(PER_SELECT) {
            let mut text = String::from(
                "SELECT key_name, nonce, message_digest, signature FROM used_nonces WHERE ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    text.push_str(" OR ");
                }
                text.push_str("(key_name = ");
                sql::placeholder(&mut text, backend, 2 * i + 1);
                text.push_str(" AND nonce = ");
                sql::placeholder(&mut text, backend, 2 * i + 2);
                text.push(')');
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
            for (k, n) in chunk {
                q = q.bind(k.to_string()).bind(n.to_vec());
            }
            let rows = q
                .fetch_all(&mut *self.tx)
                .await
                .map_err(|e| self.store.err(e, "reading the replay guard"))?;
            for r in rows {
                let get = |e| self.store.err(e, "reading the replay guard");
                let k: String = r.try_get(0).map_err(get)?;
                let n: Vec<u8> = r.try_get(1).map_err(get)?;
                let d: Vec<u8> = r.try_get(2).map_err(get)?;
                let sig: Option<Vec<u8>> = r.try_get(3).map_err(get)?;
                found.insert((k, n), (d, sig));
            }
        }
        Ok(found)
    }

    /// Of `digests`, the attestations a settlement already consumed.
    pub(crate) async fn consumed_attestations(
        &mut self,
        digests: &[&[u8]],
    ) -> Result<HashSet<Vec<u8>>> {
        const PER_SELECT: usize = 500;
        let mut found = HashSet::new();
        for chunk in digests.chunks(PER_SELECT) {
            let mut text = String::from(
                "SELECT attestation_digest FROM consumed_attestations WHERE attestation_digest IN (",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    text.push_str(", ");
                }
                sql::placeholder(&mut text, self.store.backend, i + 1);
            }
            text.push(')');
            let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
            for d in chunk {
                q = q.bind(d.to_vec());
            }
            let rows = q
                .fetch_all(&mut *self.tx)
                .await
                .map_err(|e| self.store.err(e, "reading consumed attestations"))?;
            for r in rows {
                let d: Vec<u8> = r
                    .try_get(0)
                    .map_err(|e| self.store.err(e, "reading consumed attestations"))?;
                found.insert(d);
            }
        }
        Ok(found)
    }

    /// Record many `(key, nonce, digest, signature)` at once (multi-row inserts). A recorded
    /// `(key, nonce)` fails the statement with [`ErrorKind::AlreadyExists`].
    ///
    /// [`ErrorKind::AlreadyExists`]: hanzo_kms_core::ErrorKind::AlreadyExists
    pub(crate) async fn insert_nonces(&mut self, rows: &[NonceRow<'_>], now: i64) -> Result<()> {
        const PER_INSERT: usize = 1000; // 6 parameters each
        for chunk in rows.chunks(PER_INSERT) {
            let mut text = String::from(insert_nonce!());
            sql::values(&mut text, self.store.backend, chunk.len(), 6);
            let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
            for r in chunk {
                q = bind_nonce(q, r, now);
            }
            q.execute(&mut *self.tx)
                .await
                .map_err(|e| crate::error::db_error(e, "recording nonces"))?;
        }
        Ok(())
    }

    /// Mark attestations as paid for. One consumed before is [`ErrorKind::AlreadyExists`].
    ///
    /// [`ErrorKind::AlreadyExists`]: hanzo_kms_core::ErrorKind::AlreadyExists
    pub(crate) async fn consume_attestations(
        &mut self,
        rows: &[ConsumeRow<'_>],
        now: i64,
    ) -> Result<()> {
        for c in rows {
            bind_consumed(
                sqlx::query(concat!(insert_consumed!(), "($1, $2, $3, $4, $5)")),
                c,
                now,
            )
            .execute(&mut *self.tx)
            .await
            .map_err(|e| crate::error::db_error(e, "consuming an attestation"))?;
        }
        Ok(())
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Bind one `used_nonces` row's 6 columns, in [`insert_nonce!`]'s order.
fn bind_nonce<'q>(q: AnyQuery<'q>, r: &NonceRow<'_>, now: i64) -> AnyQuery<'q> {
    q.bind(r.key.to_owned())
        .bind(r.nonce.to_vec())
        .bind(r.digest.to_vec())
        .bind(r.signature.map(<[u8]>::to_vec))
        .bind(now)
        .bind(r.expires_at)
}

/// Bind one `consumed_attestations` row's 5 columns, in [`insert_consumed!`]'s order.
fn bind_consumed<'q>(q: AnyQuery<'q>, c: &ConsumeRow<'_>, now: i64) -> AnyQuery<'q> {
    q.bind(c.attestation.to_vec())
        .bind(c.settlement_key.to_owned())
        .bind(c.settlement.to_vec())
        .bind(now)
        .bind(c.expires_at)
}
