//! The group committer's transaction: the replay-guard reads for a whole batch of signing
//! requests, a decision the caller makes from them without I/O, and that decision's writes with
//! their audit records, all in one transaction.
//!
//! Two implementations run the same steps on the same tables:
//!
//! - [`Store::commit_batch`], through sqlx, for PostgreSQL (and SQLite when no dedicated writer
//!   runs);
//! - [`BatchWriter::commit_batch`], on SQLite, through a connection of its own on the
//!   committer's own thread. sqlx runs every SQLite connection on a worker thread and hands
//!   each statement to it and its result back: two thread wake-ups per statement, seven
//!   statements per batch. On two cores those hand-offs were a third of the server's CPU and
//!   most of the batch's latency (perf: `flume::signal::SyncSignal::fire` → `futex_wake`, and
//!   `finish_task_switch`). The writer runs the whole batch without one.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hanzo_kms_core::eip712::hex32;
use hanzo_kms_core::{Error, ErrorKind, Result};

use crate::durable::{Pending, WalSync};
use crate::{AuditEvent, NonceRow, Store, audit};

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
        for c in &writes.consumed {
            tx.consume_attestation(c.attestation, c.settlement_key, c.settlement, q.now)
                .await?;
        }
        tx.insert_nonces(&writes.nonces, q.now).await?;
        let events: Vec<AuditEvent> = writes.events.into_iter().map(Cow::into_owned).collect();
        let (_, pending) = tx.commit_pending(&events).await?;
        Ok((out, Some(pending)))
    }

    /// A dedicated writer for group commits on SQLite (`None` on PostgreSQL). It holds a
    /// connection of its own; use it from one thread that may block.
    pub fn batch_writer(&self) -> Result<Option<BatchWriter>> {
        let Some(wal) = &self.wal else {
            return Ok(None);
        };
        let fail = |e: rusqlite::Error| {
            sqlite_error(e, &format!("opening the store at {}", self.location))
        };
        let conn = rusqlite::Connection::open_with_flags(
            &self.location,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(fail)?;
        // The same settings as the pool's connections (see `prepare_connection`).
        conn.execute_batch(SQLITE_PRAGMAS).map_err(fail)?;
        Ok(Some(BatchWriter {
            conn,
            wal: wal.clone(),
            location: self.location.clone(),
            wal_limit: crate::durable::WAL_LIMIT_BYTES,
        }))
    }
}

/// Per-connection settings of every SQLite connection. NORMAL: a COMMIT does not wait for the
/// disk; the store syncs the WAL itself before a commit counts. No automatic checkpoints: the
/// store runs them in the background. A WAL that was reset is cut back to 64 MiB. See
/// [`crate::durable`].
///
/// The page cache stays at SQLite's default (2 MiB). A larger one for the group committer's
/// connection was measured and made signing slower (128 MiB on a store of 2,000,000 nonces:
/// 705–811 µs per commit against 216–286 µs). The profile points at the trim of the page cache
/// that ends every write transaction, a scan that grows with the cache (docs/benchmarks.md,
/// session 10).
pub(crate) const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0; \
     PRAGMA journal_size_limit = 67108864;";

/// Group commits on SQLite without sqlx's worker thread. See the module docs.
pub struct BatchWriter {
    conn: rusqlite::Connection,
    wal: Arc<WalSync>,
    location: String,
    /// See [`BatchWriter::bound_wal`].
    wal_limit: u64,
}

impl std::fmt::Debug for BatchWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchWriter")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl BatchWriter {
    /// Keep the WAL bounded under sustained load: when it has grown past
    /// `WAL_LIMIT_BYTES` (512 MiB), checkpoint all of it on this connection and cut the
    /// file to nothing (`PRAGMA wal_checkpoint(TRUNCATE)`, which syncs the database before it
    /// lets go of the WAL). The caller is the only regular writer, so nothing is appended
    /// meanwhile and the checkpoint catches up; the batches waiting behind it wait for the disk.
    /// Returns `None` when the WAL is within its limit, else whether the checkpoint completed (one
    /// blocked by a reader for the whole busy timeout is tried again after a later batch).
    pub fn bound_wal(&mut self) -> Result<Option<bool>> {
        // As the last sync found it: the committer calls this right after its own sync.
        let len = self.wal.wal_len();
        if len <= self.wal_limit {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        // (A completed TRUNCATE reports 0 for both of its frame counts.)
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .map_err(|e| {
                sqlite_error(
                    e,
                    &format!("checkpointing the WAL (store {})", self.location),
                )
            })?;
        tracing::info!(
            store = %self.location,
            wal_bytes = len,
            completed = busy == 0,
            ms = started.elapsed().as_millis() as u64,
            "the WAL outgrew its limit; writes waited for a full checkpoint"
        );
        if busy == 0 {
            self.wal.count_full_checkpoint();
            self.wal.wal_cut();
        }
        Ok(Some(busy == 0))
    }

    /// Finish the background checkpoint pass that ended since the last call, if one did: a
    /// PASSIVE pass on this connection, between two batches, so nothing is appended meanwhile.
    /// It copies what was committed while the background pass ran (that pass copied the rest
    /// and synced the database), and completes; the next transaction then starts the WAL over
    /// from its beginning. Without it, under load, no pass reaches the WAL's end and the WAL
    /// only grows (see the `durable` module). Returns whether a pass ran.
    pub fn catch_up(&mut self) -> Result<bool> {
        if !self.wal.take_catch_up() {
            return Ok(false);
        }
        let now = crate::durable::passive_pass(&self.conn).map_err(|e| {
            sqlite_error(
                e,
                &format!("checkpointing the WAL (store {})", self.location),
            )
        })?;
        if let Some(now) = now {
            self.wal.record_pass(now);
        }
        Ok(true)
    }

    /// [`Store::commit_batch`] on this writer's connection. It blocks (on the database's write
    /// lock, and on the statements themselves); it never waits for the disk.
    pub fn commit_batch<'a, T>(
        &mut self,
        q: BatchQuery<'_>,
        decide: impl FnOnce(&BatchReads) -> (BatchWrites<'a>, T),
    ) -> Result<(T, Option<Pending>)> {
        self.wal.check()?;
        // Messages are built only on failure: this runs for every statement of every batch.
        let location = &self.location;
        let fail = |doing: &'static str| {
            move |e: rusqlite::Error| sqlite_error(e, &format!("{doing} (store {location})"))
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(fail("starting a transaction"))?;
        let (seq, hash): (i64, String) = tx
            .prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 1")
            .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(fail("reading the audit chain head"))?;
        let head = crate::parse_hash(&hash)
            .ok_or_else(|| crate::damaged(location, "the audit chain head hash is malformed"))?;
        let mut reads = BatchReads::default();
        {
            let mut s = tx
                .prepare_cached(
                    "SELECT message_digest, signature FROM used_nonces WHERE key_name = ?1 AND nonce = ?2",
                )
                .map_err(fail("reading the replay guard"))?;
            for (key, nonce) in q.nonces {
                let mut rows = s
                    .query(rusqlite::params![key, nonce])
                    .map_err(fail("reading the replay guard"))?;
                if let Some(r) = rows.next().map_err(fail("reading the replay guard"))? {
                    let d: Vec<u8> = r.get(0).map_err(fail("reading the replay guard"))?;
                    let sig: Option<Vec<u8>> =
                        r.get(1).map_err(fail("reading the replay guard"))?;
                    reads
                        .nonces
                        .insert(((*key).to_owned(), nonce.to_vec()), (d, sig));
                }
            }
            let mut s = tx
                .prepare_cached("SELECT 1 FROM consumed_attestations WHERE attestation_digest = ?1")
                .map_err(fail("reading consumed attestations"))?;
            for a in q.attestations {
                if s.exists([a])
                    .map_err(fail("reading consumed attestations"))?
                {
                    reads.consumed.insert(a.to_vec());
                }
            }
        }
        let (writes, out) = decide(&reads);
        if writes.events.is_empty() {
            // Nothing to write: the transaction ends without a commit.
            return Ok((out, None));
        }
        {
            let mut s = tx
                .prepare_cached("INSERT INTO consumed_attestations (attestation_digest, settlement_key, settlement_digest, created_at) VALUES (?1, ?2, ?3, ?4)")
                .map_err(fail("consuming an attestation"))?;
            for c in &writes.consumed {
                s.execute(rusqlite::params![
                    c.attestation,
                    c.settlement_key,
                    c.settlement,
                    q.now
                ])
                .map_err(fail("consuming an attestation"))?;
            }
            let mut s = tx
                .prepare_cached("INSERT INTO used_nonces (key_name, nonce, message_digest, signature, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
                .map_err(fail("recording nonces"))?;
            for r in &writes.nonces {
                s.execute(rusqlite::params![
                    r.key,
                    r.nonce,
                    r.digest,
                    r.signature,
                    q.now
                ])
                .map_err(fail("recording nonces"))?;
            }
            let hashes = audit::chain_hashes(head, seq as u64, &writes.events);
            let mut s = tx
                .prepare_cached(concat!(
                    "INSERT INTO audit_log (seq, time_ms, request_id, principal, tenant, operation, key_name, ",
                    "key_version, outcome, reason, peer, prev_hash, hash) ",
                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                ))
                .map_err(fail("appending to the audit log"))
                .map_err(crate::audit_error)?;
            let mut prev = head;
            for ((e, hash), seq) in writes.events.iter().zip(&hashes).zip(seq + 1..) {
                let e: &AuditEvent = e;
                let (mut prev_hex, mut hash_hex) = ([0u8; 64], [0u8; 64]);
                s.execute(rusqlite::params![
                    seq,
                    e.time_ms,
                    e.request_id,
                    e.principal,
                    e.tenant,
                    e.operation,
                    e.key_name,
                    e.key_version.map(i64::from),
                    e.outcome,
                    e.reason,
                    e.peer,
                    hex32(&prev, &mut prev_hex),
                    hex32(hash, &mut hash_hex),
                ])
                .map_err(fail("appending to the audit log"))
                .map_err(crate::audit_error)?;
                prev = *hash;
            }
            if let Some(last) = hashes.last() {
                let mut last_hex = [0u8; 64];
                let last_seq = seq + hashes.len() as i64;
                tx.prepare_cached("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1")
                    .and_then(|mut s| {
                        s.execute(rusqlite::params![last_seq, hex32(last, &mut last_hex)])
                    })
                    .map_err(fail("advancing the audit chain head"))
                    .map_err(crate::audit_error)?;
            }
        }
        tx.commit()
            .map_err(fail("committing"))
            .map_err(crate::audit_error)?;
        Ok((out, Some(self.wal.committed())))
    }
}

/// A rusqlite error as ours, with the same kinds as `db_error` gives sqlx's.
fn sqlite_error(e: rusqlite::Error, doing: &str) -> Error {
    let kind = match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            // SQLITE_CONSTRAINT_PRIMARYKEY and SQLITE_CONSTRAINT_UNIQUE (not foreign keys).
            rusqlite::ErrorCode::ConstraintViolation if matches!(f.extended_code, 1555 | 2067) => {
                ErrorKind::AlreadyExists
            }
            rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase => {
                ErrorKind::Corrupt
            }
            rusqlite::ErrorCode::DatabaseBusy
            | rusqlite::ErrorCode::DatabaseLocked
            | rusqlite::ErrorCode::CannotOpen => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        },
        _ => ErrorKind::Internal,
    };
    crate::store_error(kind, doing, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    use hanzo_kms_core::Separator;

    fn event(op: &str) -> AuditEvent {
        AuditEvent {
            key_name: Some("poai:t:k".into()),
            key_version: Some(1),
            ..crate::audit::tests::ev(op)
        }
    }

    async fn store(dir: &std::path::Path) -> Store {
        let s = Store::connect(&Store::sqlite_url(dir), Separator::default(), true)
            .await
            .unwrap();
        s.migrate().await.unwrap();
        s
    }

    /// Commit one audit event through the writer and wait until it is on disk.
    async fn one_event(w: &mut BatchWriter, q: BatchQuery<'_>) {
        let (_, p) = tokio::task::block_in_place(|| {
            w.commit_batch(q, |_| {
                let writes = BatchWrites {
                    events: vec![Cow::Owned(event("data.encrypt"))],
                    ..BatchWrites::default()
                };
                (writes, ())
            })
        })
        .unwrap();
        p.unwrap().durable().await.unwrap();
    }

    /// The WAL header's checkpoint sequence number: SQLite adds one each time the WAL starts over
    /// from its beginning.
    fn wal_restarts(dir: &std::path::Path) -> u32 {
        let wal = std::fs::read(dir.join("kms.db-wal")).unwrap();
        u32::from_be_bytes([wal[12], wal[13], wal[14], wal[15]])
    }

    /// Commit `n` audit events through the writer without waiting for the disk (no sync, so no
    /// background pass starts).
    fn commit_unsynced(w: &mut BatchWriter, n: usize) {
        let q = BatchQuery {
            nonces: &[],
            attestations: &[],
            now: 1,
        };
        let (_, p) = w
            .commit_batch(q, |_| {
                let writes = BatchWrites {
                    events: (0..n).map(|_| Cow::Owned(event("data.encrypt"))).collect(),
                    ..BatchWrites::default()
                };
                (writes, ())
            })
            .unwrap();
        assert!(p.is_some());
    }

    /// A pass that started before the writer's last commits cannot complete, so the WAL never
    /// starts over; the writer's own pass between two batches copies the rest and completes, and
    /// its next transaction starts the WAL over. A background pass hands over to the writer
    /// after copying frames, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_finishes_a_background_pass_and_the_wal_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        let mut w = s.batch_writer().unwrap().expect("SQLite has a writer");
        let other = rusqlite::Connection::open(dir.path().join("kms.db")).unwrap();
        assert!(
            !tokio::task::block_in_place(|| w.catch_up()).unwrap(),
            "no background pass yet"
        );

        // The WAL starts over only at a transaction that finds all of it copied. Here a pass
        // elsewhere copies all of it, the writer's next commit starts the WAL over, and the
        // commits after that append: no pass has copied them.
        tokio::task::block_in_place(|| commit_unsynced(&mut w, 500));
        let copied = crate::durable::passive_pass(&other).unwrap().unwrap();
        assert_eq!(copied.log, copied.done, "nothing else was writing");
        tokio::task::block_in_place(|| commit_unsynced(&mut w, 500));
        let restarts = wal_restarts(dir.path());
        tokio::task::block_in_place(|| commit_unsynced(&mut w, 1));
        assert_eq!(
            wal_restarts(dir.path()),
            restarts,
            "appended, not started over"
        );
        // The writer's pass finishes the job (here handed over by hand: see below for the
        // background pass's hand-over), and its next transaction starts the WAL over.
        w.wal.checkpointer_hand_over();
        let passes = s.checkpoints().unwrap();
        assert!(tokio::task::block_in_place(|| w.catch_up()).unwrap());
        assert_eq!(s.checkpoints(), Some(passes + 1), "it copied frames");
        assert!(
            !tokio::task::block_in_place(|| w.catch_up()).unwrap(),
            "once per hand-over"
        );
        tokio::task::block_in_place(|| commit_unsynced(&mut w, 1));
        assert_eq!(wal_restarts(dir.path()), restarts + 1, "started over");

        // A real background pass: past CHECKPOINT_BYTES a sync starts one; it copies frames,
        // syncs the database and hands over to the writer.
        let q = BatchQuery {
            nonces: &[],
            attestations: &[],
            now: 1,
        };
        let mut grown = 0;
        while std::fs::metadata(dir.path().join("kms.db-wal"))
            .unwrap()
            .len()
            <= crate::durable::CHECKPOINT_BYTES
        {
            tokio::task::block_in_place(|| commit_unsynced(&mut w, 2000));
            grown += 1;
        }
        one_event(&mut w, q).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !tokio::task::block_in_place(|| w.catch_up()).unwrap() {
            assert!(
                std::time::Instant::now() < deadline,
                "no background pass handed over"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Nothing was lost on the way, and the chain verifies.
        let report = s.verify_audit().await.unwrap();
        assert!(report.problem.is_none(), "{:?}", report.problem);
        assert_eq!(
            s.audit_records(0, 1_000_000).await.unwrap().len(),
            1002 + 2000 * grown + 1
        );
    }

    /// Both implementations read what the other wrote, extend one audit chain, and refuse a
    /// duplicate nonce whole; a large WAL is checkpointed in the background,
    /// and one past its limit by the writer itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writer_and_pool_share_one_chain_and_the_wal_is_checkpointed() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path()).await;
        let mut w = s.batch_writer().unwrap().expect("SQLite has a writer");
        let nonce = [7u8; 32];
        let att = [9u8; 32];
        let pairs = [("poai:t:k", &nonce[..])];
        let atts = [&att[..]];
        let q = |now| BatchQuery {
            nonces: &pairs,
            attestations: &atts,
            now,
        };
        // The writer records a nonce and consumes an attestation.
        let ((), p) = tokio::task::block_in_place(|| {
            w.commit_batch(q(1), |reads| {
                assert!(reads.nonces.is_empty() && reads.consumed.is_empty());
                let writes = BatchWrites {
                    nonces: vec![NonceRow {
                        key: "poai:t:k",
                        nonce: &nonce,
                        digest: &[1; 32],
                        signature: Some(&[2; 69]),
                    }],
                    consumed: vec![ConsumeRow {
                        attestation: &att,
                        settlement_key: "hmm:t:k",
                        settlement: &[3; 32],
                    }],
                    events: vec![Cow::Owned(event("poai.sign"))],
                };
                (writes, ())
            })
        })
        .unwrap();
        p.expect("it wrote").durable().await.unwrap();
        // The pool's path sees both, and writes nothing when told so.
        let (seen, p) = s
            .commit_batch(q(2), |reads| {
                (
                    BatchWrites::default(),
                    (
                        reads
                            .nonces
                            .get(&("poai:t:k".to_owned(), nonce.to_vec()))
                            .cloned(),
                        reads.consumed.contains(&att[..]),
                    ),
                )
            })
            .await
            .unwrap();
        assert!(p.is_none());
        assert_eq!(seen, (Some((vec![1; 32], Some(vec![2; 69]))), true));
        // A duplicate nonce fails the writer's whole batch: its audit record is not written.
        let dup = tokio::task::block_in_place(|| {
            w.commit_batch(q(3), |_| {
                let writes = BatchWrites {
                    nonces: vec![NonceRow {
                        key: "poai:t:k",
                        nonce: &nonce,
                        digest: &[4; 32],
                        signature: None,
                    }],
                    consumed: vec![],
                    events: vec![Cow::Owned(event("poai.sign"))],
                };
                (writes, ())
            })
        });
        assert_eq!(dup.unwrap_err().kind(), ErrorKind::AlreadyExists);
        // The pool's path appends after the writer's record; the chain verifies.
        let (_, p) = s
            .commit_batch(q(4), |_| {
                let writes = BatchWrites {
                    events: vec![Cow::Owned(event("data.encrypt"))],
                    ..BatchWrites::default()
                };
                (writes, ())
            })
            .await
            .unwrap();
        p.unwrap().durable().await.unwrap();
        let report = s.verify_audit().await.unwrap();
        assert!(report.problem.is_none(), "{:?}", report.problem);
        let ops: Vec<String> = s
            .audit_records(0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.event.operation)
            .collect();
        assert_eq!(ops, ["poai.sign", "data.encrypt"]);

        // Past CHECKPOINT_BYTES of WAL, a sync starts a background checkpoint: the database
        // file grows while the writer keeps going.
        let db = dir.path().join("kms.db");
        let before = std::fs::metadata(&db).unwrap().len();
        let events: Vec<AuditEvent> = (0..2000).map(|_| event("data.encrypt")).collect();
        let mut synced = 0;
        while std::fs::metadata(dir.path().join("kms.db-wal"))
            .unwrap()
            .len()
            <= crate::durable::CHECKPOINT_BYTES
        {
            let (_, p) = tokio::task::block_in_place(|| {
                w.commit_batch(q(5), |_| {
                    let writes = BatchWrites {
                        events: events.iter().map(Cow::Borrowed).collect(),
                        ..BatchWrites::default()
                    };
                    (writes, ())
                })
            })
            .unwrap();
            p.unwrap().durable().await.unwrap();
            synced += 1;
            assert!(synced < 100, "the WAL does not grow");
        }
        // One more sync notices the size.
        one_event(&mut w, q(6)).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::metadata(&db).unwrap().len() <= before || s.checkpoints() == Some(0) {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint copied the WAL into the database"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(s.fsyncs().unwrap() >= synced);
        assert!(s.verify_audit().await.unwrap().problem.is_none());

        // Past its limit the writer checkpoints the whole WAL itself and cuts it to nothing;
        // below the limit it does not.
        let wal = dir.path().join("kms.db-wal");
        let grown = std::fs::metadata(&wal).unwrap().len();
        w.wal_limit = grown + 1;
        assert_eq!(tokio::task::block_in_place(|| w.bound_wal()).unwrap(), None);
        w.wal_limit = grown - 1;
        let passes = s.checkpoints().unwrap();
        assert_eq!(
            tokio::task::block_in_place(|| w.bound_wal()).unwrap(),
            Some(true)
        );
        assert_eq!(
            s.checkpoints(),
            Some(passes + 1),
            "the writer's checkpoint counts"
        );
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        // Until the next sync, the writer knows the WAL is empty and does not checkpoint again.
        assert_eq!(tokio::task::block_in_place(|| w.bound_wal()).unwrap(), None);
        // The writer goes on, and nothing was lost.
        one_event(&mut w, q(7)).await;
        let report = s.verify_audit().await.unwrap();
        assert!(report.problem.is_none(), "{:?}", report.problem);
        assert_eq!(
            s.audit_records(0, 1_000_000).await.unwrap().len(),
            2 + 2000 * synced as usize + 2
        );
    }
}
