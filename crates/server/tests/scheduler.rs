//! The server's scheduler prunes expired replay records by itself (docs/signing.md, "Replay
//! records expire"): a running server, a one-second attestation_ttl, no grace, and a scheduler
//! tick of 200 ms.

use std::time::{Duration, Instant};

use hanzo_kms_core::eip712::{B32, PoAIAttestation};
use hanzo_kms_core::{Config, KeyName, Separator};
use hanzo_kms_service::{Kms, RequestCtx, Settings};

mod common;
use common::start;

const YAML: &str = "kms:\n  hanzo:\n    poai_signing:\n      attestation_ttl: 1\nstorage:\n  replay_grace_secs: 0\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_prunes_expired_replay_records() {
    let server = start(YAML, |o| {
        o.scheduler_every = Some(Duration::from_millis(200));
    })
    .await;
    // A second service on the same SQLite store signs (SQLite takes writers from several
    // processes and connections; the server's scheduler sees what it wrote).
    let settings = Settings {
        data_dir: server.dir.path().to_path_buf(),
        config: Config::from_yaml(YAML, "test", std::iter::empty::<(&str, &str)>()).unwrap(),
        master_key_env: None,
    };
    let kms = Kms::open(&settings).await.unwrap();
    let ctx = RequestCtx::local();
    kms.create_keyspace(&ctx, "acme", "gpt4", true)
        .await
        .unwrap();
    let key = KeyName::parse("poai:acme:gpt4", Separator::default()).unwrap();
    let now = hanzo_kms_service::now_secs() as u64;
    for i in 0..3u8 {
        let att = PoAIAttestation {
            model_id: "acme:gpt4".into(),
            input_hash: B32([0x11; 32]),
            output_hash: B32([0x22; 32]),
            timestamp: now,
            compute_time_ms: 1,
            node_id: format!("n{i}"),
            nonce: Some(B32([i; 32])),
        };
        kms.sign_poai(&ctx, &key, att, now).await.unwrap();
    }
    assert_eq!(kms.replay_record_counts().await.unwrap(), (3, 0));
    // Expired at now + 1; pruned by the first tick after that second has passed.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if kms.replay_record_counts().await.unwrap() == (0, 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduler did not prune the expired records"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pruned: Vec<_> = kms
        .audit_records(&ctx, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event.operation == "store.prune")
        .collect();
    assert_eq!(pruned.len(), 1, "one pruning transaction");
    assert_eq!(pruned[0].event.principal, "system:scheduler");
    assert!(
        pruned[0]
            .event
            .reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("3 nonce records"),
        "{:?}",
        pruned[0].event.reason
    );
    assert!(kms.audit_verify(&ctx).await.unwrap().is_ok());
    server.stop().await;
}

/// The scheduler signs audit checkpoints by itself (docs/operations.md, "Audit archives"), from
/// its second tick on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_signs_audit_checkpoints() {
    let server = start("", |o| {
        o.scheduler_every = Some(Duration::from_millis(200));
    })
    .await;
    let settings = Settings {
        data_dir: server.dir.path().to_path_buf(),
        config: Config::default(),
        master_key_env: None,
    };
    let kms = Kms::open(&settings).await.unwrap();
    let ctx = RequestCtx::local();
    let deadline = Instant::now() + Duration::from_secs(15);
    let checkpoint = loop {
        let found = kms
            .audit_records(&ctx, 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.event.operation == "audit.checkpoint" && r.event.outcome == "ok");
        if let Some(r) = found {
            break r;
        }
        assert!(Instant::now() < deadline, "no checkpoint was signed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(checkpoint.event.principal, "system:scheduler");
    assert_eq!(
        checkpoint.event.key_name.as_deref(),
        Some("api:system:audit")
    );
    assert!(kms.audit_verify(&ctx).await.unwrap().is_ok());
}
