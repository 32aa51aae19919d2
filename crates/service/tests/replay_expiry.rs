//! Replay records that expire (docs/signing.md, "Replay records expire"): what is pruned can no
//! longer be replayed, what is still needed is kept, a larger attestation_ttl revives nothing,
//! and pruning runs in bounded, audited batches.

mod common;

use common::{ctx, settings};
use hanzo_kms_core::eip712::{Address, B32, HMMSettlement, PoAIAttestation, U256};
use hanzo_kms_core::{ErrorKind, KeyName, Separator};
use hanzo_kms_service::Kms;
use hanzo_kms_service::replay::PRUNE_BATCH;
use hanzo_kms_service::sign::{Paid, SignedAttestation, SignedSettlement};

async fn fresh(yaml: &str) -> (tempfile::TempDir, Kms) {
    let (dir, kms) = common::init(yaml).await;
    kms.create_keyspace(&ctx(), "acme", "gpt4", true)
        .await
        .unwrap();
    (dir, kms)
}

fn name(s: &str) -> KeyName {
    KeyName::parse(s, Separator::default()).unwrap()
}

fn now() -> u64 {
    hanzo_kms_service::now_secs() as u64
}

fn att(ts: u64, node: &str, nonce: [u8; 32]) -> PoAIAttestation {
    PoAIAttestation {
        model_id: "acme:gpt4".into(),
        input_hash: B32([0x11; 32]),
        output_hash: B32([0x22; 32]),
        timestamp: ts,
        compute_time_ms: 1500,
        node_id: node.into(),
        nonce: Some(B32(nonce)),
    }
}

fn settlement(att_digest: B32, ts: u64, job: &str, nonce: [u8; 32]) -> HMMSettlement {
    HMMSettlement {
        job_id: job.into(),
        provider: Address::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").unwrap(),
        consumer: Address::parse("0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359").unwrap(),
        amount: U256::parse_decimal("1000000000000000000").unwrap(),
        attestation_digest: att_digest,
        timestamp: ts,
        expiry: 0,
        nonce: Some(B32(nonce)),
    }
}

/// Settle `a` with `hmm:acme:gpt4` at `at`, as job `job` under `nonce`.
async fn settle(
    kms: &Kms,
    a: &SignedAttestation,
    at: u64,
    job: &str,
    nonce: [u8; 32],
) -> hanzo_kms_core::Result<SignedSettlement> {
    kms.sign_hmm(
        &ctx(),
        &name("hmm:acme:gpt4"),
        settlement(a.digest, at, job, nonce),
        Some(Paid::Attestation(a)),
        at,
    )
    .await
}

async fn prune_records(kms: &Kms) -> Vec<String> {
    kms.audit_records(&ctx(), 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event.operation == "store.prune")
        .map(|r| r.event.reason.unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn pruned_records_cannot_be_replayed_and_live_ones_are_kept() {
    let (_d, kms) = fresh("").await;
    prune_and_replay(&kms).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_records_cannot_be_replayed_on_postgresql() {
    let pg = hanzo_kms_testkit::Postgres::start();
    let url = pg.create_database("replay");
    let (_d, kms) = fresh(&format!("storage:\n  url: {url}\n")).await;
    prune_and_replay(&kms).await;
    drop(kms);
    let url = pg.create_database("floor");
    ttl_floor(&format!("storage:\n  url: {url}\n")).await;
}

async fn prune_and_replay(kms: &Kms) {
    // attestation_ttl 3600 and settlement_expiry 86400 (the defaults); grace 600.
    let poai = name("poai:acme:gpt4");
    let t = now();
    let a = kms
        .sign_poai(&ctx(), &poai, att(t, "a", [1; 32]), t)
        .await
        .unwrap();
    let s = settle(kms, &a, t, "job-1", [2; 32]).await.unwrap();
    // A second attestation, signed later: still live when the first one's records go.
    let later = t + 2000;
    let b = kms
        .sign_poai(&ctx(), &poai, att(later, "b", [3; 32]), later)
        .await
        .unwrap();
    assert_eq!(kms.replay_record_counts().await.unwrap(), (3, 1));

    // Before a's window and the grace have passed, nothing goes.
    let p = kms.prune_replay(t + 3600 + 600).await.unwrap();
    assert!(p.is_empty(), "{p:?}");
    assert!(prune_records(kms).await.is_empty());

    // Past them: a's nonce and its consumption go; b's nonce and the settlement's stay.
    let at = t + 3600 + 601;
    let p = kms.prune_replay(at).await.unwrap();
    assert_eq!((p.nonces, p.consumed), (1, 1));
    assert_eq!(kms.replay_record_counts().await.unwrap(), (2, 0));
    assert_eq!(prune_records(kms).await.len(), 1);

    // What went can no longer be replayed: a is expired everywhere, so it can be neither
    // settled again nor signed again under its nonce with its timestamp.
    assert_eq!(
        kms.verify_poai(&ctx(), &a, at).await.unwrap().reason,
        Some("expired")
    );
    let e = settle(kms, &a, at, "job-2", [4; 32]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("not valid (expired)"), "{e}");
    let mut other = att(t, "a-forged", [1; 32]);
    other.output_hash = B32([0x99; 32]);
    let e = kms.sign_poai(&ctx(), &poai, other, at).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

    // What stays still guards: b's nonce refuses another message, b's settlement nonce too.
    let mut forged = att(later, "b-forged", [3; 32]);
    forged.output_hash = B32([0x98; 32]);
    let e = kms.sign_poai(&ctx(), &poai, forged, at).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Replayed, "{e}");
    let e = settle(kms, &b, at, "job-3", [2; 32]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Replayed, "{e}");
    // ... and b settles once (its consumption is recorded with b's own expiry).
    settle(kms, &b, at, "job-4", [5; 32]).await.unwrap();
    let e = settle(kms, &b, at, "job-5", [6; 32]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Replayed, "{e}");

    // The settlement's nonce lives until the settlement expires (+ grace), then goes.
    kms.prune_replay(t + 86_400 + 600).await.unwrap();
    assert!(kms.replay_record_counts().await.unwrap().0 >= 1);
    assert_eq!(
        kms.verify_hmm(&ctx(), &s, None, t + 86_401)
            .await
            .unwrap()
            .reason,
        Some("expired")
    );
    let far = t + 10 * 86_400;
    kms.prune_replay(far).await.unwrap();
    assert_eq!(kms.replay_record_counts().await.unwrap(), (0, 0));
    // Pruning kept the audit chain whole.
    assert!(kms.audit_verify(&ctx()).await.unwrap().is_ok());
}

#[tokio::test]
async fn a_larger_attestation_ttl_revives_no_pruned_attestation() {
    ttl_floor("").await;
}

/// `storage` is the YAML of the store to use ("" for SQLite in the data directory).
async fn ttl_floor(storage: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (kms, _) = Kms::init(&settings(dir.path(), storage)).await.unwrap();
    kms.create_keyspace(&ctx(), "acme", "gpt4", true)
        .await
        .unwrap();
    let poai = name("poai:acme:gpt4");
    // Signed and settled 5,000 s ago (the service takes the time it is given), pruned 800 s ago.
    let t = now() - 5000;
    let a = kms
        .sign_poai(&ctx(), &poai, att(t, "a", [1; 32]), t)
        .await
        .unwrap();
    settle(&kms, &a, t, "job-1", [2; 32]).await.unwrap();
    let p = kms.prune_replay(t + 4201).await.unwrap();
    assert_eq!(p.consumed, 1);
    assert_eq!(kms.replay_floor(), 0);
    drop(kms);

    // Reopened with a day's ttl, a would verify again (t + 86400 is ahead) and could be
    // settled twice, since its consumption is gone. The floor refuses it.
    let wide =
        format!("{storage}kms:\n  hanzo:\n    poai_signing:\n      attestation_ttl: 86400\n");
    let kms = Kms::open(&settings(dir.path(), &wide)).await.unwrap();
    let n = now();
    assert!(
        kms.replay_floor() >= n - 3600 - 5 && kms.replay_floor() <= n - 3600,
        "floor {} at {n}",
        kms.replay_floor()
    );
    assert_eq!(
        kms.verify_poai(&ctx(), &a, n).await.unwrap().reason,
        Some("expired")
    );
    let e = settle(&kms, &a, n, "job-2", [3; 32]).await.unwrap_err();
    assert!(e.to_string().contains("not valid (expired)"), "{e}");
    // A new attestation gets the day-long window.
    let fresh = kms
        .sign_poai(&ctx(), &poai, att(n, "new", [4; 32]), n)
        .await
        .unwrap();
    assert!(
        kms.verify_poai(&ctx(), &fresh, n + 80_000)
            .await
            .unwrap()
            .valid
    );
    let changes: Vec<String> = kms
        .audit_records(&ctx(), 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event.operation == "store.replay_window")
        .map(|r| r.event.reason.unwrap_or_default())
        .collect();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(changes[0].contains("3600 -> 86400"), "{changes:?}");
    drop(kms);
    // Opened again with the same ttl: nothing is written, the floor is read back.
    let kms = Kms::open(&settings(dir.path(), &wide)).await.unwrap();
    assert!(kms.replay_floor() >= n - 3600 - 5);
    let records = kms.audit_records(&ctx(), 0, 10_000).await.unwrap();
    assert_eq!(
        records
            .iter()
            .filter(|r| r.event.operation == "store.replay_window")
            .count(),
        1
    );
}

/// `(pages, free pages)` of the SQLite store in `dir`, as a reader sees it now (WAL included).
fn pages(dir: &std::path::Path) -> (i64, i64) {
    let c = rusqlite::Connection::open(dir.join("kms.db")).unwrap();
    let get = |p: &str| -> i64 { c.query_row(p, [], |r| r.get(0)).unwrap() };
    (get("PRAGMA page_count"), get("PRAGMA freelist_count"))
}

async fn sign_many(kms: &Kms, t: u64, from: usize, n: usize) {
    let atts: Vec<_> = (from..from + n)
        .map(|i| {
            let mut nonce = [0u8; 32];
            nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
            att(t, "n", nonce)
        })
        .collect();
    for chunk in atts.chunks(1000) {
        kms.sign_poai_batch(&ctx(), &name("poai:acme:gpt4"), chunk.to_vec(), t)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn pruning_goes_in_bounded_audited_batches_and_its_pages_are_reused() {
    let (dir, kms) = fresh("").await;
    let t = now();
    let n = 2 * PRUNE_BATCH as usize + 500;
    let (before, _) = pages(dir.path());
    sign_many(&kms, t, 0, n).await;
    let (after_first, _) = pages(dir.path());
    assert_eq!(kms.replay_record_counts().await.unwrap(), (n as u64, 0));
    // A grace of 600 s: records of attestations at t go after t + 3600 + 600.
    let p = kms.prune_replay(t + 4201).await.unwrap();
    assert_eq!(p.nonces, n as u64);
    let reasons = prune_records(&kms).await;
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].starts_with(&format!("{PRUNE_BATCH} nonce records")));
    assert!(reasons[2].starts_with("500 nonce records"), "{reasons:?}");
    assert!(kms.audit_verify(&ctx()).await.unwrap().is_ok());
    // The pages the records held are free, and the next records take them: the store grows by
    // a fraction of what the first records took (their audit records are new; the rest reuses).
    let (_, free) = pages(dir.path());
    assert!(free > 0, "nothing was freed");
    sign_many(&kms, t, n, n).await;
    let (after_second, _) = pages(dir.path());
    let (first, second) = (after_first - before, after_second - after_first);
    eprintln!("{n} records: {first} pages; {free} freed by pruning; the next {n}: {second} pages");
    assert!(
        second * 4 < first,
        "the first {n} records took {first} pages, the next {n} {second} more"
    );
}

#[tokio::test]
async fn pruning_can_be_turned_off() {
    let (_d, kms) = fresh("storage:\n  prune_replay_records: false\n").await;
    let t = now();
    kms.sign_poai(&ctx(), &name("poai:acme:gpt4"), att(t, "a", [1; 32]), t)
        .await
        .unwrap();
    assert!(kms.prune_replay(t + 100_000).await.unwrap().is_empty());
    assert_eq!(kms.replay_record_counts().await.unwrap(), (1, 0));
}
