//! The group committer's connection: [`BatchWriter`] runs a whole batch on SQLite without
//! sqlx's worker thread (see the [module docs](super)).

use hanzo_kms_core::Result;
use hanzo_kms_core::eip712::hex32;

use super::wal::{Pending, WalSync};
use crate::error::{audit_error, damaged, sqlite_error};
use crate::rows::parse_hash;
use crate::sql::{
    insert_audit, insert_consumed, insert_nonce, select_consumed, select_head, select_nonce,
    update_head,
};
use crate::{AuditEvent, BatchQuery, BatchReads, BatchWrites, Store, audit};

/// Group commits on SQLite on a connection of their own, from one thread that may block.
pub struct BatchWriter {
    pub(super) conn: rusqlite::Connection,
    pub(super) wal: std::sync::Arc<WalSync>,
    pub(super) location: String,
    /// See [`BatchWriter::bound_wal`].
    pub(super) wal_limit: u64,
}

impl std::fmt::Debug for BatchWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchWriter")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The group committer's connection on SQLite (`None` on PostgreSQL). Use it from one
    /// thread that may block.
    pub fn batch_writer(&self) -> Result<Option<BatchWriter>> {
        let Some(wal) = &self.wal else {
            return Ok(None);
        };
        let conn = super::open(std::path::Path::new(&self.location))
            .map_err(|e| sqlite_error(e, &format!("opening the store at {}", self.location)))?;
        Ok(Some(BatchWriter {
            conn,
            wal: wal.clone(),
            location: self.location.clone(),
            wal_limit: super::checkpoint::WAL_LIMIT_BYTES,
        }))
    }
}

impl BatchWriter {
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
            .prepare_cached(select_head!())
            .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(fail("reading the audit chain head"))?;
        let head = parse_hash(&hash)
            .ok_or_else(|| damaged(location, "the audit chain head hash is malformed"))?;
        let mut reads = BatchReads::default();
        {
            let mut s = tx
                .prepare_cached(select_nonce!())
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
                .prepare_cached(select_consumed!())
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
                .prepare_cached(concat!(insert_consumed!(), "($1, $2, $3, $4, $5)"))
                .map_err(fail("consuming an attestation"))?;
            for c in &writes.consumed {
                s.execute(rusqlite::params![
                    c.attestation,
                    c.settlement_key,
                    c.settlement,
                    q.now,
                    c.expires_at
                ])
                .map_err(fail("consuming an attestation"))?;
            }
            let mut s = tx
                .prepare_cached(concat!(insert_nonce!(), "($1, $2, $3, $4, $5, $6)"))
                .map_err(fail("recording nonces"))?;
            for r in &writes.nonces {
                s.execute(rusqlite::params![
                    r.key,
                    r.nonce,
                    r.digest,
                    r.signature,
                    q.now,
                    r.expires_at
                ])
                .map_err(fail("recording nonces"))?;
            }
            let hashes = audit::chain_hashes(head, seq as u64, &writes.events);
            let mut s = tx
                .prepare_cached(concat!(
                    insert_audit!(),
                    "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                ))
                .map_err(fail("appending to the audit log"))
                .map_err(audit_error)?;
            for ((e, hash), seq) in writes.events.iter().zip(&hashes).zip(seq + 1..) {
                let e: &AuditEvent = e;
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
                    e.detail,
                    hash.as_slice(),
                ])
                .map_err(fail("appending to the audit log"))
                .map_err(audit_error)?;
            }
            if let Some(last) = hashes.last() {
                let mut last_hex = [0u8; 64];
                let last_seq = seq + hashes.len() as i64;
                tx.prepare_cached(update_head!())
                    .and_then(|mut s| {
                        s.execute(rusqlite::params![last_seq, hex32(last, &mut last_hex)])
                    })
                    .map_err(fail("advancing the audit chain head"))
                    .map_err(audit_error)?;
            }
        }
        tx.commit()
            .map_err(fail("committing"))
            .map_err(audit_error)?;
        Ok((out, Some(self.wal.committed())))
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use hanzo_kms_core::{ErrorKind, Separator};

    use super::*;
    use crate::sqlite::checkpoint::{CHECKPOINT_BYTES, passive_pass};
    use crate::{ConsumeRow, NonceRow};

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
        let copied = passive_pass(&other).unwrap().unwrap();
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
            <= CHECKPOINT_BYTES
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
                        expires_at: i64::MAX,
                    }],
                    consumed: vec![ConsumeRow {
                        attestation: &att,
                        settlement_key: "hmm:t:k",
                        settlement: &[3; 32],
                        expires_at: i64::MAX,
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
                        expires_at: i64::MAX,
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
            <= CHECKPOINT_BYTES
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
