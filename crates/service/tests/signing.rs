//! PoAI and HMM signing through the service with the real software provider.

use std::sync::Arc;

use hanzo_kms_core::eip712::{Address, B32, HMMSettlement, HexBytes, PoAIAttestation, U256};
use hanzo_kms_core::{Config, ErrorKind, KeyName, Separator};
use hanzo_kms_service::sign::{Paid, SignedAttestation, signer_of};
use hanzo_kms_service::{Kms, RequestCtx, Settings};

async fn fresh() -> (tempfile::TempDir, Kms) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        data_dir: dir.path().to_path_buf(),
        config: Config::from_yaml("", "test", std::iter::empty::<(&str, &str)>()).unwrap(),
        master_key_env: None,
    };
    let (kms, _) = Kms::init(&settings).await.unwrap();
    kms.create_keyspace(&ctx(), "acme", "gpt4", true)
        .await
        .unwrap();
    (dir, kms)
}

fn name(s: &str) -> KeyName {
    KeyName::parse(s, Separator::default()).unwrap()
}

fn ctx() -> RequestCtx {
    RequestCtx::local()
}

fn now() -> u64 {
    hanzo_kms_service::now_secs() as u64
}

fn att(ts: u64, node: &str, nonce: Option<[u8; 32]>) -> PoAIAttestation {
    PoAIAttestation {
        model_id: "acme:gpt4".into(),
        input_hash: B32([0x11; 32]),
        output_hash: B32([0x22; 32]),
        timestamp: ts,
        compute_time_ms: 1500,
        node_id: node.into(),
        nonce: nonce.map(B32),
    }
}

fn settlement(att_digest: B32, ts: u64, nonce: Option<[u8; 32]>) -> HMMSettlement {
    HMMSettlement {
        job_id: "job-42".into(),
        provider: Address::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").unwrap(),
        consumer: Address::parse("0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359").unwrap(),
        amount: U256::parse_decimal("1000000000000000000").unwrap(),
        attestation_digest: att_digest,
        timestamp: ts,
        expiry: 0,
        nonce: nonce.map(B32),
    }
}

#[tokio::test]
async fn signatures_recover_to_the_keys_address() {
    let (_d, kms) = fresh().await;
    let key = name("poai:acme:gpt4");
    let shown = kms.show_key(&ctx(), &key).await.unwrap();
    for i in 0..20u8 {
        let s = kms
            .sign_poai(&ctx(), &key, att(now(), &format!("n{i}"), None), now())
            .await
            .unwrap();
        assert_eq!(s.signature.0.len(), 65);
        assert!(s.signature.0[64] == 27 || s.signature.0[64] == 28);
        assert_eq!(Some(s.signer.as_str()), shown.address());
        // A second implementation of recovery (libsecp256k1 called directly, not our verify path).
        let recid =
            secp256k1::ecdsa::RecoveryId::try_from(i32::from(s.signature.0[64] - 27)).unwrap();
        let rs = secp256k1::ecdsa::RecoverableSignature::from_compact(&s.signature.0[..64], recid)
            .unwrap();
        let pk = rs
            .recover_ecdsa(secp256k1::Message::from_digest(s.digest.0))
            .unwrap();
        let addr = hanzo_kms_core::eth::to_checksum(
            &hanzo_kms_core::eth::address(&pk.serialize_uncompressed()).unwrap(),
        );
        assert_eq!(Some(addr.as_str()), shown.address());
        // Low S: normalising changes nothing.
        let mut plain = secp256k1::ecdsa::Signature::from_compact(&s.signature.0[..64]).unwrap();
        let before = plain.serialize_compact();
        plain.normalize_s();
        assert_eq!(plain.serialize_compact(), before);
        assert!(kms.verify_poai(&ctx(), &s, now()).await.unwrap().valid);
    }
}

#[tokio::test]
async fn ml_dsa_signatures_verify_with_fips204() {
    use fips204::ml_dsa_65;
    use fips204::traits::{SerDes, Verifier};
    let (_d, kms) = fresh().await;
    let key = name("poai:acme:pq");
    kms.create_key(&ctx(), &key, Some("ml-dsa-65".parse().unwrap()), None)
        .await
        .unwrap();
    let shown = kms.show_key(&ctx(), &key).await.unwrap();
    let pk_bytes = hex::decode(shown.versions[0].public_key.as_ref().unwrap()).unwrap();
    let pk = ml_dsa_65::PublicKey::try_from_bytes(pk_bytes.clone().try_into().unwrap()).unwrap();
    let s = kms
        .sign_poai(&ctx(), &key, att(now(), "pq", None), now())
        .await
        .unwrap();
    assert_eq!(s.signer, signer_of("ml-dsa-65".parse().unwrap(), &pk_bytes));
    let sig: [u8; ml_dsa_65::SIG_LEN] = s.signature.0.clone().try_into().unwrap();
    assert!(
        pk.verify(&s.digest.0, &sig, b""),
        "fips204 rejects our ML-DSA-65 signature"
    );
    let mut other = s.digest.0;
    other[0] ^= 1;
    assert!(!pk.verify(&other, &sig, b""));
    assert!(kms.verify_poai(&ctx(), &s, now()).await.unwrap().valid);
}

#[tokio::test]
async fn replay_rules() {
    let (_d, kms) = fresh().await;
    let key = name("poai:acme:gpt4");
    let t = now();
    let first = kms
        .sign_poai(&ctx(), &key, att(t, "a", Some([7; 32])), t)
        .await
        .unwrap();
    // The exact same message again: the first signature, unchanged.
    let again = kms
        .sign_poai(&ctx(), &key, att(t, "a", Some([7; 32])), t)
        .await
        .unwrap();
    assert_eq!(again, first);
    // Another message under the same nonce: refused.
    let e = kms
        .sign_poai(&ctx(), &key, att(t, "b", Some([7; 32])), t)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Replayed);
    assert!(
        e.to_string()
            .contains("already signed a different message with nonce 0x0707"),
        "{e}"
    );
    // The same nonce under another key is that key's own business.
    kms.create_key(&ctx(), &name("poai:acme:other"), None, None)
        .await
        .unwrap();
    assert!(
        kms.sign_poai(
            &ctx(),
            &name("poai:acme:other"),
            att(t, "b", Some([7; 32])),
            t
        )
        .await
        .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_attempts_with_one_nonce_one_wins() {
    let (_d, kms) = fresh().await;
    let kms = Arc::new(kms);
    let key = name("poai:acme:gpt4");
    let t = now();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (kms, key) = (kms.clone(), key.clone());
            tokio::spawn(async move {
                kms.sign_poai(&ctx(), &key, att(t, &format!("node-{i}"), Some([9; 32])), t)
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.kind(), ErrorKind::Replayed, "{e}"),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn verification_reasons() {
    let (_d, kms) = fresh().await;
    let key = name("poai:acme:gpt4");
    let t = now();
    let s = kms
        .sign_poai(&ctx(), &key, att(t, "a", None), t)
        .await
        .unwrap();
    let reason = |v: hanzo_kms_service::sign::Verdict| v.reason.unwrap_or("valid");
    assert_eq!(
        reason(kms.verify_poai(&ctx(), &s, t).await.unwrap()),
        "valid"
    );
    assert_eq!(
        reason(kms.verify_poai(&ctx(), &s, t + 3601).await.unwrap()),
        "expired"
    );
    assert_eq!(
        reason(kms.verify_poai(&ctx(), &s, t - 61).await.unwrap()),
        "not_yet_valid"
    );
    // Wrong v.
    let mut bad = s.clone();
    bad.signature.0[64] ^= 0x07; // 27 <-> 28
    assert_eq!(
        reason(kms.verify_poai(&ctx(), &bad, t).await.unwrap()),
        "bad_signature"
    );
    // High S: s' = n - s is the same signature in the other form, and must be refused.
    let mut high = s.clone();
    high.signature = HexBytes(negate_s(&s.signature.0));
    assert_eq!(
        reason(kms.verify_poai(&ctx(), &high, t).await.unwrap()),
        "bad_signature"
    );
    // Another key's signature.
    let other = kms
        .sign_poai(&ctx(), &name("poai:acme:gpt4"), att(t, "x", None), t)
        .await
        .unwrap();
    let mut forged = s.clone();
    kms.create_key(&ctx(), &name("poai:acme:k2"), None, None)
        .await
        .unwrap();
    let by_other = kms
        .sign_poai(&ctx(), &name("poai:acme:k2"), s.attestation.clone(), t)
        .await
        .unwrap();
    forged.signature = by_other.signature.clone();
    assert_eq!(
        reason(kms.verify_poai(&ctx(), &forged, t).await.unwrap()),
        "bad_signature"
    );
    // An edited message.
    let mut edited = other.clone();
    edited.attestation.compute_time_ms += 1;
    assert_eq!(
        reason(kms.verify_poai(&ctx(), &edited, t).await.unwrap()),
        "digest_mismatch"
    );
    edited.digest = B32(kms
        .domain()
        .unwrap()
        .digest(&edited.attestation.struct_hash().unwrap()));
    assert_eq!(
        reason(kms.verify_poai(&ctx(), &edited, t).await.unwrap()),
        "bad_signature"
    );
    // The labels beside the signature are checked too: a signature relabelled with another
    // version or algorithm is not the signature it claims to be.
    let mut relabelled = s.clone();
    relabelled.algorithm = "ml-dsa-65".into();
    assert_eq!(
        reason(kms.verify_poai(&ctx(), &relabelled, t).await.unwrap()),
        "bad_signature"
    );
    kms.rotate_key(&ctx(), &key).await.unwrap();
    let mut relabelled = s.clone();
    relabelled.version = 2;
    assert_eq!(
        reason(kms.verify_poai(&ctx(), &relabelled, t).await.unwrap()),
        "bad_signature"
    );
    // After the rotation, version 1's signature still verifies as version 1's, and a new
    // one is version 2's.
    assert_eq!(
        reason(kms.verify_poai(&ctx(), &s, t).await.unwrap()),
        "valid"
    );
    let s2 = kms
        .sign_poai(&ctx(), &key, att(t, "after-rotation", None), t)
        .await
        .unwrap();
    assert_eq!(s2.version, 2);
    assert_eq!(
        reason(kms.verify_poai(&ctx(), &s2, t).await.unwrap()),
        "valid"
    );
    let mut relabelled = s2.clone();
    relabelled.version = 1;
    assert_eq!(
        reason(kms.verify_poai(&ctx(), &relabelled, t).await.unwrap()),
        "bad_signature"
    );
    // Unknown and foreign keys.
    let mut unknown = s.clone();
    unknown.key = "poai:acme:nope".into();
    assert_eq!(
        reason(kms.verify_poai(&ctx(), &unknown, t).await.unwrap()),
        "unknown_key"
    );
    // Signing refuses stale and future timestamps, naming the field.
    let e = kms
        .sign_poai(&ctx(), &key, att(t - 4000, "old", None), t)
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("timestamp: "), "{e}");
    let e = kms
        .sign_poai(&ctx(), &key, att(t + 120, "new", None), t)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("in the future"), "{e}");
}

/// (r, s, v) → (r, n − s, v ^ 1): the high-S twin of a signature.
fn negate_s(sig: &[u8]) -> Vec<u8> {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36,
        0x41, 0x41,
    ];
    let s = &sig[32..64];
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        out[i] = (d + 256 * borrow) as u8;
    }
    let mut v = sig[..32].to_vec();
    v.extend_from_slice(&out);
    v.push(if sig[64] == 27 { 28 } else { 27 });
    v
}

#[tokio::test]
async fn a_settlement_consumes_its_attestation_once() {
    let (_d, kms) = fresh().await;
    let t = now();
    let a = kms
        .sign_poai(&ctx(), &name("poai:acme:gpt4"), att(t, "a", None), t)
        .await
        .unwrap();
    let hmm = name("hmm:acme:gpt4");
    let s = kms
        .sign_hmm(
            &ctx(),
            &hmm,
            settlement(a.digest, t, None),
            Some(Paid::Attestation(&a)),
            t,
        )
        .await
        .unwrap();
    assert_eq!(s.settlement.expiry, t + 86_400);
    let v = kms.verify_hmm(&ctx(), &s, Some(&a), t).await.unwrap();
    assert!(v.valid, "{v:?}");
    assert_eq!(
        kms.verify_hmm(&ctx(), &s, None, t + 86_401)
            .await
            .unwrap()
            .reason,
        Some("expired")
    );
    // A second settlement (new nonce, new job) for the same attestation: replayed.
    let mut second = settlement(a.digest, t, None);
    second.job_id = "job-43".into();
    let e = kms
        .sign_hmm(&ctx(), &hmm, second, Some(Paid::Attestation(&a)), t)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Replayed);
    // A settlement whose digest does not match the supplied attestation.
    let b = kms
        .sign_poai(&ctx(), &name("poai:acme:gpt4"), att(t, "b", None), t)
        .await
        .unwrap();
    let e = kms
        .sign_hmm(
            &ctx(),
            &hmm,
            settlement(a.digest, t, None),
            Some(Paid::Attestation(&b)),
            t,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("attestation_digest"), "{e}");
    let other: SignedAttestation = b.clone();
    assert_eq!(
        kms.verify_hmm(&ctx(), &s, Some(&other), t)
            .await
            .unwrap()
            .reason,
        Some("digest_mismatch")
    );
    // An expired settlement is not signed.
    let mut late = settlement(b.digest, t - 100_000, None);
    late.expiry = t - 10;
    assert!(
        kms.sign_hmm(&ctx(), &hmm, late, Some(Paid::Attestation(&b)), t)
            .await
            .unwrap_err()
            .to_string()
            .contains("expiry")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_settlements_of_one_attestation_one_wins() {
    let (_d, kms) = fresh().await;
    let kms = Arc::new(kms);
    let t = now();
    let a = kms
        .sign_poai(&ctx(), &name("poai:acme:gpt4"), att(t, "a", None), t)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (kms, a) = (kms.clone(), a.clone());
            tokio::spawn(async move {
                let mut s = settlement(a.digest, t, None);
                s.job_id = format!("job-{i}");
                kms.sign_hmm(
                    &ctx(),
                    &name("hmm:acme:gpt4"),
                    s,
                    Some(Paid::Attestation(&a)),
                    t,
                )
                .await
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.kind(), ErrorKind::Replayed, "{e}"),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn batch_items_verify_alone_and_tampering_fails() {
    let (_d, kms) = fresh().await;
    let key = name("poai:acme:gpt4");
    let t = now();
    let atts: Vec<_> = (0..5).map(|i| att(t, &format!("n{i}"), None)).collect();
    let items = kms.sign_poai_batch(&ctx(), &key, atts, t).await.unwrap();
    assert_eq!(items.len(), 5);
    for it in &items {
        assert!(kms.verify_batch_item(&ctx(), it, t).await.unwrap().valid);
    }
    let r = |v: hanzo_kms_service::sign::Verdict| v.reason.unwrap_or("valid");
    // A tampered proof path.
    let mut bad = items[2].clone();
    bad.proof[0].hash.0[0] ^= 1;
    assert_eq!(
        r(kms.verify_batch_item(&ctx(), &bad, t).await.unwrap()),
        "bad_proof"
    );
    let mut flipped = items[2].clone();
    flipped.proof[0].left = !flipped.proof[0].left;
    assert_eq!(
        r(kms.verify_batch_item(&ctx(), &flipped, t).await.unwrap()),
        "bad_proof"
    );
    // A proof for another batch.
    let other = kms
        .sign_poai_batch(
            &ctx(),
            &key,
            vec![att(t, "z1", None), att(t, "z2", None)],
            t,
        )
        .await
        .unwrap();
    let mut cross = items[0].clone();
    cross.batch = other[0].batch.clone();
    cross.batch_digest = other[0].batch_digest;
    cross.signature = other[0].signature.clone();
    assert_eq!(
        r(kms.verify_batch_item(&ctx(), &cross, t).await.unwrap()),
        "bad_proof"
    );
    // A batch item's nonce is used: signing the same nonce with another message is refused.
    let mut reuse = items[0].attestation.clone();
    reuse.node_id = "different".into();
    assert_eq!(
        kms.sign_poai(&ctx(), &key, reuse, t)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Replayed
    );
    assert_eq!(
        r(kms
            .verify_batch_item(&ctx(), &items[0], t + 7200)
            .await
            .unwrap()),
        "expired"
    );
}

#[tokio::test]
async fn hybrid_keyspaces_return_both_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        data_dir: dir.path().to_path_buf(),
        config: Config::from_yaml(
            "kms:\n  hanzo:\n    poai_signing:\n      hybrid: true\n",
            "test",
            std::iter::empty::<(&str, &str)>(),
        )
        .unwrap(),
        master_key_env: None,
    };
    let (kms, _) = Kms::init(&settings).await.unwrap();
    let keys = kms
        .create_keyspace(&ctx(), "acme", "gpt4", true)
        .await
        .unwrap();
    let names: Vec<_> = keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "model:acme:gpt4",
            "poai:acme:gpt4",
            "hmm:acme:gpt4",
            "poai:acme:gpt4-pq"
        ]
    );
    assert_eq!(keys[3].algorithm, "ml-dsa-65");
    let t = now();
    let s = kms
        .sign_poai(&ctx(), &name("poai:acme:gpt4"), att(t, "h", None), t)
        .await
        .unwrap();
    let pq =
        s.pq.clone()
            .expect("hybrid signing returns the ML-DSA-65 signature too");
    assert_eq!(pq.key, "poai:acme:gpt4-pq");
    assert_eq!(pq.algorithm, "ml-dsa-65");
    assert!(kms.verify_poai(&ctx(), &s, t).await.unwrap().valid);
    // Both halves must hold.
    let mut bad = s.clone();
    bad.pq.as_mut().unwrap().signature.0[100] ^= 1;
    assert_eq!(
        kms.verify_poai(&ctx(), &bad, t).await.unwrap().reason,
        Some("bad_signature")
    );
    let mut wrong_partner = s.clone();
    wrong_partner.pq.as_mut().unwrap().key = "poai:acme:other-pq".into();
    assert_eq!(
        kms.verify_poai(&ctx(), &wrong_partner, t)
            .await
            .unwrap()
            .reason,
        Some("unknown_key")
    );
    // A retry returns both first signatures.
    let again = kms
        .sign_poai(&ctx(), &name("poai:acme:gpt4"), s.attestation.clone(), t)
        .await
        .unwrap();
    assert_eq!(again, s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_batches_and_every_acknowledged_nonce_is_durable() {
    let (dir, kms) = fresh().await;
    let kms = Arc::new(kms);
    let key = name("poai:acme:gpt4");
    let t = now();
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let (kms, key) = (kms.clone(), key.clone());
            tokio::spawn(async move {
                let mut n = [0u8; 32];
                n[..4].copy_from_slice(&i.to_be_bytes());
                kms.sign_poai(&ctx(), &key, att(t, "g", Some(n)), t).await
            })
        })
        .collect();
    let mut signed = Vec::new();
    for task in tasks {
        signed.push(task.await.unwrap().unwrap());
    }
    let stats = kms.commit_stats().unwrap();
    let requests = stats.requests.load(std::sync::atomic::Ordering::Relaxed);
    let txs = stats
        .transactions
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(requests, 200);
    assert!(
        txs < requests,
        "no batching happened: {txs} transactions for {requests} requests"
    );
    // Every transaction spent time committing and waiting for its WAL sync; with 200 requests
    // at once, some waited for a batch in progress, and every answer took time to be picked up.
    for (phase, ns) in [
        ("commit", &stats.commit_nanos),
        ("sync", &stats.sync_nanos),
        ("queue", &stats.queue_nanos),
        ("wakeup", &stats.wakeup_nanos),
    ] {
        let ns = ns.load(std::sync::atomic::Ordering::Relaxed);
        assert!(ns > 0, "{phase}: {ns} ns");
    }
    kms.close().await;
    drop(kms);
    // After a restart every acknowledged nonce is still recorded: another message is refused.
    let settings = Settings {
        data_dir: dir.path().to_path_buf(),
        config: Config::from_yaml("", "test", std::iter::empty::<(&str, &str)>()).unwrap(),
        master_key_env: None,
    };
    let kms = Kms::open(&settings).await.unwrap();
    for s in signed.iter().step_by(17) {
        let mut other = s.attestation.clone();
        other.node_id = "changed".into();
        assert_eq!(
            kms.sign_poai(&ctx(), &key, other, t)
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::Replayed
        );
    }
    assert!(kms.audit_verify(&ctx()).await.unwrap().is_ok());
    let records = kms.audit_records(&ctx(), 0, 100_000).await.unwrap();
    assert_eq!(
        records
            .iter()
            .filter(|r| r.event.operation == "poai.sign" && r.event.outcome == "ok")
            .count(),
        200
    );
}

#[tokio::test]
async fn verification_counts_against_the_rate_limits_known_key_or_not() {
    let (_d, kms) = fresh().await;
    let key = name("poai:acme:gpt4");
    let s = kms
        .sign_poai(&ctx(), &key, att(now(), "n", None), now())
        .await
        .unwrap();
    let yaml = "rate_limits:\n  per_operation:\n    verify: {per_second: 1, burst: 3}\n";
    let config = Config::from_yaml(yaml, "test", std::iter::empty::<(&str, &str)>()).unwrap();
    let limiter = Arc::new(
        hanzo_kms_service::ratelimit::ConfiguredLimiter::new(&config.rate_limits).unwrap(),
    );
    let kms = kms.with_limiter(limiter.clone());
    assert!(kms.verify_poai(&ctx(), &s, now()).await.unwrap().valid);
    // A key that does not exist costs the same.
    let mut unknown = s.clone();
    unknown.key = "poai:acme:nothing".into();
    assert!(
        !kms.verify_poai(&ctx(), &unknown, now())
            .await
            .unwrap()
            .valid
    );
    assert!(kms.verify_poai(&ctx(), &s, now()).await.unwrap().valid);
    let e = kms.verify_poai(&ctx(), &s, now()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited, "{e}");
    assert_eq!(limiter.rejected(), 1);
    // Signing is another operation, with no limit here.
    kms.sign_poai(&ctx(), &key, att(now(), "n", None), now())
        .await
        .unwrap();
}
