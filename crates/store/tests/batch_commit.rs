//! The group committer's transaction through sqlx (`Store::commit_batch`), on PostgreSQL, where
//! a batch's replay records, audit records and the head's advance go in one statement, and on
//! SQLite, where they are separate statements: the same results. A duplicate replay record fails
//! the whole batch and writes nothing; a batch too large for one statement takes the separate
//! statements.

use std::borrow::Cow;

use hanzo_kms_core::{ErrorKind, Separator};
use hanzo_kms_store::{AuditEvent, BatchQuery, BatchWrites, ConsumeRow, NonceRow, Store};

fn event(i: usize) -> AuditEvent {
    AuditEvent {
        time_ms: 1_700_000_000_000,
        request_id: format!("r{i}"),
        principal: "token:t".into(),
        tenant: "acme".into(),
        operation: "poai.sign".into(),
        key_name: Some("poai:acme:m".into()),
        key_version: Some(1),
        outcome: "ok".into(),
        reason: None,
        peer: None,
        detail: None,
    }
}

fn nonce(i: usize) -> Vec<u8> {
    let mut n = vec![0u8; 32];
    n[..8].copy_from_slice(&(i as u64).to_be_bytes());
    n
}

fn nonces_of(numbers: &[usize]) -> Vec<Vec<u8>> {
    numbers.iter().map(|&i| nonce(i)).collect()
}

fn pairs_of(nonces: &[Vec<u8>]) -> Vec<(&str, &[u8])> {
    nonces
        .iter()
        .map(|n| ("poai:acme:m", n.as_slice()))
        .collect()
}

/// Commit `nonces` (by number), `consumed` attestation digests and `events` audit records in one
/// batch; the batch's reads of the same nonces and digests come back too.
async fn batch(
    s: &Store,
    nonces: &[usize],
    consumed: &[&[u8]],
    events: usize,
) -> hanzo_kms_core::Result<(usize, usize)> {
    let values = nonces_of(nonces);
    let pairs = pairs_of(&values);
    let q = BatchQuery {
        nonces: &pairs,
        attestations: consumed,
        now: 1_700_000_000,
    };
    let (found, pending) = s
        .commit_batch(q, |reads| {
            let writes = BatchWrites {
                nonces: values
                    .iter()
                    .map(|n| NonceRow {
                        key: "poai:acme:m",
                        nonce: n,
                        digest: &n[..8],
                        signature: Some(&n[..4]),
                        expires_at: 1_700_003_600,
                    })
                    .collect(),
                consumed: consumed
                    .iter()
                    .map(|d| ConsumeRow {
                        attestation: d,
                        settlement_key: "hmm:acme:s",
                        settlement: d,
                        expires_at: 1_700_086_400,
                    })
                    .collect(),
                events: (0..events).map(|i| Cow::Owned(event(i))).collect(),
            };
            (writes, (reads.nonces.len(), reads.consumed.len()))
        })
        .await?;
    if let Some(p) = pending {
        p.durable().await?;
    }
    Ok(found)
}

/// What is recorded of `nonces` and `consumed`: a batch that writes nothing, reading them.
async fn recorded(s: &Store, nonces: &[usize], consumed: &[&[u8]]) -> (usize, usize) {
    let values = nonces_of(nonces);
    let pairs = pairs_of(&values);
    let q = BatchQuery {
        nonces: &pairs,
        attestations: consumed,
        now: 1,
    };
    let (found, pending) = s
        .commit_batch(q, |reads| {
            (
                BatchWrites::default(),
                (reads.nonces.len(), reads.consumed.len()),
            )
        })
        .await
        .unwrap();
    assert!(pending.is_none(), "a batch without events writes nothing");
    found
}

async fn same_results(s: &Store) {
    let (a, b): (&[u8], &[u8]) = (b"attestation-a", b"attestation-b");
    assert_eq!(batch(s, &[1, 2, 3], &[a], 3).await.unwrap(), (0, 0));
    assert_eq!(recorded(s, &[1, 2, 3, 4], &[a, b]).await, (3, 1));
    let head = s.audit_head().await.unwrap();
    assert_eq!(head.0, 3);

    // A nonce recorded before fails the batch whole: the new nonce, the new attestation and
    // the audit records are not written, and the head stays.
    let e = batch(s, &[4, 2], &[b], 2).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    let e = batch(s, &[5], &[a], 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert_eq!(recorded(s, &[4, 5], &[b]).await, (0, 0));
    assert_eq!(s.audit_head().await.unwrap(), head);

    // Too many parameters for one PostgreSQL statement (6 per nonce, 13 per record): the
    // separate statements, with the same result.
    let many: Vec<usize> = (100..7_100).collect();
    assert_eq!(batch(s, &many, &[b], 3_000).await.unwrap(), (0, 0));
    assert_eq!(recorded(s, &many, &[b]).await, (7_000, 1));
    assert_eq!(s.audit_head().await.unwrap().0, 3_003);
    let report = s.verify_audit().await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.records, 3_003);
    let records = s.audit_records(0, 10).await.unwrap();
    assert_eq!(records[0].event, event(0));
    assert_eq!(records[3].prev_hash, records[2].hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_commits_whole_or_not_at_all_on_postgresql() {
    let pg = hanzo_kms_testkit::Postgres::start();
    let url = pg.create_database("batch");
    let s = Store::connect(&url, Separator::default(), true)
        .await
        .unwrap();
    s.migrate().await.unwrap();
    same_results(&s).await;
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_commits_whole_or_not_at_all_on_sqlite_through_sqlx() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::connect(&Store::sqlite_url(dir.path()), Separator::default(), true)
        .await
        .unwrap();
    s.migrate().await.unwrap();
    same_results(&s).await;
    s.close().await;
}
