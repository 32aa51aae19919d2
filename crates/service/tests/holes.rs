//! Regressions for the holes a code review and a black-box attack found (issue 26), each
//! through the service over a real SQLite store: a test per hole, named after what must hold.

use std::sync::Arc;

use hanzo_kms_core::eip712::{Address, B32, HMMSettlement, PoAIAttestation, U256};
use hanzo_kms_core::{Config, ErrorKind, KeyName, Separator};
use hanzo_kms_service::ratelimit::ConfiguredLimiter;
use hanzo_kms_service::sign::Paid;
use hanzo_kms_service::{Kms, Principal, RequestCtx, Role, Settings};
use hanzo_kms_store::AuditRecord;

async fn fresh(yaml: &str) -> (tempfile::TempDir, Kms) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        data_dir: dir.path().to_path_buf(),
        config: config(yaml),
        master_key_env: None,
    };
    let (kms, _) = Kms::init(&settings).await.unwrap();
    (dir, kms)
}

fn config(yaml: &str) -> Config {
    Config::from_yaml(yaml, "test", std::iter::empty::<(&str, &str)>()).unwrap()
}

fn limited(kms: Kms, yaml: &str) -> (Kms, Arc<ConfiguredLimiter>) {
    let limiter = Arc::new(ConfiguredLimiter::new(&config(yaml).rate_limits).unwrap());
    (kms.with_limiter(limiter.clone()), limiter)
}

fn name(s: &str) -> KeyName {
    KeyName::parse(s, Separator::default()).unwrap()
}

fn local() -> RequestCtx {
    RequestCtx::local()
}

fn tenant(t: &str, id: &str, roles: &[Role]) -> RequestCtx {
    RequestCtx {
        request_id: format!("req-{id}"),
        principal: Principal {
            id: format!("token:{id}"),
            tenant: Some(t.into()),
            roles: roles.to_vec(),
            patterns: vec![],
        },
        peer: None,
    }
}

fn now() -> u64 {
    hanzo_kms_service::now_secs() as u64
}

fn att(node: &str) -> PoAIAttestation {
    PoAIAttestation {
        model_id: "m".into(),
        input_hash: B32([0x11; 32]),
        output_hash: B32([0x22; 32]),
        timestamp: now(),
        compute_time_ms: 5,
        node_id: node.into(),
        nonce: None,
    }
}

fn settlement(digest: B32, job: &str) -> HMMSettlement {
    HMMSettlement {
        job_id: job.into(),
        provider: Address::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").unwrap(),
        consumer: Address::parse("0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359").unwrap(),
        amount: U256::parse_decimal("1000").unwrap(),
        attestation_digest: digest,
        timestamp: now(),
        expiry: 0,
        nonce: None,
    }
}

/// The records of one request, by its id.
async fn records_of(kms: &Kms, request_id: &str) -> Vec<AuditRecord> {
    kms.audit_records(&local(), 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event.request_id == request_id)
        .collect()
}

// ---- item 1 -------------------------------------------------------------------------------

#[tokio::test]
async fn a_tenant_cannot_settle_and_so_cannot_block_another_tenants_attestation() {
    let (_d, kms) = fresh("").await;
    for t in ["acme", "beta"] {
        kms.create_keyspace(&local(), t, "m", true).await.unwrap();
    }
    let acme = tenant("acme", "acme", &[Role::Sign, Role::Verify]);
    let beta = tenant("beta", "beta", &[Role::Sign, Role::Verify]);
    let a = kms
        .sign_poai(&acme, &name("poai:acme:m"), att("n1"), now())
        .await
        .unwrap();
    // Beta names only acme's digest: refused, a settlement needs the attestation itself.
    let e = kms
        .sign_hmm(
            &beta,
            &name("hmm:beta:m"),
            settlement(a.digest, "grief"),
            None,
            now(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    // Beta carries acme's signed attestation: refused, it is another tenant's.
    let e = kms
        .sign_hmm(
            &beta,
            &name("hmm:beta:m"),
            settlement(a.digest, "grief"),
            Some(Paid::Attestation(&a)),
            now(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("tenant"), "{e}");
    // Even the all-tenant operator cannot pay acme's attestation with beta's key.
    assert!(
        kms.sign_hmm(
            &local(),
            &name("hmm:beta:m"),
            settlement(a.digest, "op"),
            Some(Paid::Attestation(&a)),
            now()
        )
        .await
        .is_err()
    );
    // Nothing was consumed: acme's own settlement goes through, once.
    let s = kms
        .sign_hmm(
            &acme,
            &name("hmm:acme:m"),
            settlement(a.digest, "real"),
            Some(Paid::Attestation(&a)),
            now(),
        )
        .await
        .unwrap();
    assert!(
        kms.verify_hmm(&acme, &s, Some(&a), now())
            .await
            .unwrap()
            .valid
    );
    let e = kms
        .sign_hmm(
            &acme,
            &name("hmm:acme:m"),
            settlement(a.digest, "again"),
            Some(Paid::Attestation(&a)),
            now(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Replayed);
}

#[tokio::test]
async fn a_batch_item_pays_for_a_settlement_once() {
    let (_d, kms) = fresh("").await;
    kms.create_keyspace(&local(), "acme", "m", true)
        .await
        .unwrap();
    let items = kms
        .sign_poai_batch(
            &local(),
            &name("poai:acme:m"),
            vec![att("a"), att("b")],
            now(),
        )
        .await
        .unwrap();
    let s = kms
        .sign_hmm(
            &local(),
            &name("hmm:acme:m"),
            settlement(items[1].digest, "j"),
            Some(Paid::Item(&items[1])),
            now(),
        )
        .await
        .unwrap();
    assert_eq!(s.settlement.attestation_digest, items[1].digest);
    // A tampered item does not pay.
    let mut bad = items[0].clone();
    bad.proof[0].left = !bad.proof[0].left;
    let e = kms
        .sign_hmm(
            &local(),
            &name("hmm:acme:m"),
            settlement(bad.digest, "k"),
            Some(Paid::Item(&bad)),
            now(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("bad_proof"), "{e}");
}

// ---- item 3 -------------------------------------------------------------------------------

#[tokio::test]
async fn a_hybrid_signature_stripped_of_its_pq_half_does_not_verify() {
    let (_d, kms) = fresh("kms:\n  hanzo:\n    poai_signing:\n      hybrid: true\n").await;
    kms.create_keyspace(&local(), "acme", "m", true)
        .await
        .unwrap();
    let key = name("poai:acme:m");
    let signed = kms
        .sign_poai(&local(), &key, att("n"), now())
        .await
        .unwrap();
    assert!(signed.pq.is_some());
    assert!(
        kms.verify_poai(&local(), &signed, now())
            .await
            .unwrap()
            .valid
    );
    let mut stripped = signed.clone();
    stripped.pq = None;
    let v = kms.verify_poai(&local(), &stripped, now()).await.unwrap();
    assert_eq!((v.valid, v.reason), (false, Some("pq_missing")));
    // `"pq": null` on the wire is refused when read: the API document types `pq` as an
    // object, so `null` is no way to leave it out.
    let mut json = serde_json::to_value(&signed).unwrap();
    json["pq"] = serde_json::Value::Null;
    let nulled = serde_json::from_value::<hanzo_kms_service::sign::SignedAttestation>(json);
    assert!(nulled.unwrap_err().to_string().contains("null"));
    // A settlement will not pay for the downgraded attestation.
    let e = kms
        .sign_hmm(
            &local(),
            &name("hmm:acme:m"),
            settlement(stripped.digest, "j"),
            Some(Paid::Attestation(&stripped)),
            now(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("pq_missing"), "{e}");
    // Batches carry the pq half too, and an item without it does not verify.
    let items = kms
        .sign_poai_batch(&local(), &key, vec![att("x"), att("y"), att("z")], now())
        .await
        .unwrap();
    for it in &items {
        assert!(it.pq.is_some(), "a hybrid batch item has its pq half");
        assert!(
            kms.verify_batch_item(&local(), it, now())
                .await
                .unwrap()
                .valid
        );
    }
    let mut item = items[0].clone();
    item.pq = None;
    assert_eq!(
        kms.verify_batch_item(&local(), &item, now())
            .await
            .unwrap()
            .reason,
        Some("pq_missing")
    );
    // The pq half of another key's pair is not this key's.
    let mut swapped = signed.clone();
    if let Some(pq) = swapped.pq.as_mut() {
        pq.key = "poai:acme:other-pq".into();
    }
    assert_eq!(
        kms.verify_poai(&local(), &swapped, now())
            .await
            .unwrap()
            .reason,
        Some("unknown_key")
    );
}

// ---- items 7 and 8 ------------------------------------------------------------------------

#[tokio::test]
async fn verifying_objects_that_name_another_tenants_key_spends_none_of_its_budget() {
    // The key's budget: its signature below, then two verifications.
    let yaml = "rate_limits:\n  per_key: {per_second: 1, burst: 3}\n";
    let (_d, kms) = fresh(yaml).await;
    let (kms, limiter) = limited(kms, yaml);
    for t in ["acme", "beta"] {
        kms.create_keyspace(&local(), t, "m", true).await.unwrap();
    }
    let signed = kms
        .sign_poai(&local(), &name("poai:acme:m"), att("n"), now())
        .await
        .unwrap();
    let rejected = limiter.rejected();
    let beta = tenant("beta", "beta", &[Role::Verify]);
    for _ in 0..20 {
        let v = kms.verify_poai(&beta, &signed, now()).await.unwrap();
        assert_eq!(v.reason, Some("unknown_key"));
    }
    assert_eq!(
        limiter.rejected(),
        rejected,
        "beta's verifications were limited per key"
    );
    // Acme's budget for its key is whole.
    let acme = tenant("acme", "acme", &[Role::Verify]);
    for _ in 0..2 {
        assert!(kms.verify_poai(&acme, &signed, now()).await.unwrap().valid);
    }
    assert_eq!(
        kms.verify_poai(&acme, &signed, now())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::RateLimited
    );
}

#[tokio::test]
async fn listing_keys_is_authorised_and_charged_once() {
    let yaml = "rate_limits:\n  per_operation:\n    key.list: {per_second: 1, burst: 2}\n";
    let (_d, kms) = fresh(yaml).await;
    let (kms, _) = limited(kms, yaml);
    // A verify-only token at its limit is told it is rate limited, not that it lacks encrypt.
    let verify_only = tenant("acme", "v", &[Role::Verify]);
    kms.list_keys(&verify_only, "").await.unwrap();
    kms.list_keys(&verify_only, "").await.unwrap();
    let e = kms.list_keys(&verify_only, "").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited, "{e}");
    // A token with both roles is charged once per listing (its own bucket: another tenant).
    let both = tenant("beta", "b", &[Role::Verify, Role::Encrypt]);
    kms.list_keys(&both, "").await.unwrap();
    kms.list_keys(&both, "").await.unwrap();
    assert_eq!(
        kms.list_keys(&both, "").await.unwrap_err().kind(),
        ErrorKind::RateLimited
    );
    // A token with neither role is refused for the role.
    let sign_only = tenant("gamma", "s", &[Role::Sign]);
    assert_eq!(
        kms.list_keys(&sign_only, "").await.unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
}

// ---- item 9 -------------------------------------------------------------------------------

#[tokio::test]
async fn every_request_leaves_one_record_with_its_true_outcome() {
    let (_d, kms) = fresh("").await;
    kms.create_keyspace(&local(), "acme", "m", true)
        .await
        .unwrap();
    kms.create_key(&local(), &name("data:acme:d"), None, None)
        .await
        .unwrap();
    let ctx = |id: &str| RequestCtx {
        request_id: id.into(),
        ..local()
    };
    // A settlement whose digest is not its attestation's.
    let a = kms
        .sign_poai(&local(), &name("poai:acme:m"), att("n"), now())
        .await
        .unwrap();
    let e = kms
        .sign_hmm(
            &ctx("mismatch"),
            &name("hmm:acme:m"),
            settlement(B32([9; 32]), "j"),
            Some(Paid::Attestation(&a)),
            now(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("attestation_digest"), "{e}");
    let r = records_of(&kms, "mismatch").await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (r[0].event.operation.as_str(), r[0].event.outcome.as_str()),
        ("hmm.sign", "error")
    );
    // Unwrapping something that is not a data key: refused, and the record says so (it used to
    // say ok, then fail).
    let not_a_key = kms
        .encrypt(&local(), &name("data:acme:d"), b"seven b", b"")
        .await
        .unwrap();
    let e = kms
        .unwrap_data_key(&ctx("unwrap"), &name("data:acme:d"), &not_a_key.text, b"")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthenticationFailed);
    let r = records_of(&kms, "unwrap").await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].event.outcome, "error");
    // A migration asked for by a tenant-scoped principal: refused, and on record.
    let target: Arc<dyn hanzo_kms_core::Provider> = Arc::new(
        hanzo_kms_software::SoftwareProvider::new(
            &hanzo_kms_software::SoftwareProvider::generate_master_key().unwrap(),
        )
        .unwrap(),
    );
    let mut scoped = tenant("acme", "mig", &[Role::Admin]);
    scoped.request_id = "migrate".into();
    let e = kms.migrate_to(&scoped, target, true).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let r = records_of(&kms, "migrate").await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (r[0].event.operation.as_str(), r[0].event.outcome.as_str()),
        ("key.migrate", "denied")
    );
    // A successful decryption: one `ok` record.
    kms.decrypt(&ctx("ok"), &name("data:acme:d"), &not_a_key.text, b"")
        .await
        .unwrap();
    let r = records_of(&kms, "ok").await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].event.outcome, "ok");
}

// ---- item 11 ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_rotate_a_due_key_once() {
    let (_d, kms) = fresh("").await;
    let k = name("data:acme:r");
    kms.create_key(&local(), &k, None, Some(1)).await.unwrap();
    let later = hanzo_kms_service::now_secs() + 2 * 86_400;
    let (a, b) = (kms.clone(), kms.clone());
    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { a.rotate_due(&local(), later).await }),
        tokio::spawn(async move { b.rotate_due(&local(), later).await }),
    );
    let outcomes: Vec<_> = ra
        .unwrap()
        .unwrap()
        .into_iter()
        .chain(rb.unwrap().unwrap())
        .collect();
    // The one that comes second finds the key rotated and does nothing; on a loaded machine its
    // transaction may instead wait for the first one's lock past the busy timeout and fail
    // (the next pass sees the key not due). Either way the key is rotated once.
    let rotated = outcomes.iter().filter(|o| o.result.is_ok()).count();
    assert_eq!(
        rotated, 1,
        "the key was rotated {rotated} times: {outcomes:?}"
    );
    for o in outcomes.iter().filter_map(|o| o.result.as_ref().err()) {
        assert_eq!(o.kind(), ErrorKind::Unavailable, "{o}");
    }
    let info = kms.show_key(&local(), &k).await.unwrap();
    assert_eq!(info.versions.len(), 2);
    // The scheduler that came second left a note, not a second version.
    let notes = kms
        .audit_records(&local(), 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event.operation == "key.rotate")
        .map(|r| (r.event.outcome, r.event.reason))
        .collect::<Vec<_>>();
    assert!(notes.len() <= 2, "{notes:?}");
    assert_eq!(
        notes.iter().filter(|(_, r)| r.is_none()).count(),
        1,
        "{notes:?}"
    );
}

// ---- item 14 ------------------------------------------------------------------------------

#[tokio::test]
async fn verification_refuses_a_disabled_key_and_accepts_a_destroyed_one() {
    let (_d, kms) = fresh("").await;
    kms.create_keyspace(&local(), "acme", "m", true)
        .await
        .unwrap();
    let key = name("poai:acme:m");
    let signed = kms
        .sign_poai(&local(), &key, att("n"), now())
        .await
        .unwrap();
    kms.set_enabled(&local(), &key, None, false).await.unwrap();
    let e = kms.verify_poai(&local(), &signed, now()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyState, "{e}");
    kms.set_enabled(&local(), &key, None, true).await.unwrap();
    // A disabled version verifies nothing; the key's other versions still do.
    kms.rotate_key(&local(), &key).await.unwrap();
    kms.set_enabled(&local(), &key, Some(1), false)
        .await
        .unwrap();
    assert_eq!(
        kms.verify_poai(&local(), &signed, now())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::KeyState
    );
    kms.set_enabled(&local(), &key, Some(1), true)
        .await
        .unwrap();
    // Destroyed: the material is gone, the public keys stay, and old signatures still verify.
    kms.destroy(&local(), &key, None, hanzo_kms_service::DestroyMode::Now)
        .await
        .unwrap();
    assert!(
        kms.verify_poai(&local(), &signed, now())
            .await
            .unwrap()
            .valid
    );
    assert_eq!(
        kms.sign_poai(&local(), &key, att("late"), now())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::KeyState
    );
}

// ---- role separation ----------------------------------------------------------------------

#[tokio::test]
async fn a_key_administrator_manages_keys_but_cannot_use_them() {
    let (_d, kms) = fresh("").await;
    let admin = tenant("acme", "keyadmin", &[Role::Manage]);
    let k = name("data:acme:x");
    kms.create_key(&admin, &k, None, None).await.unwrap();
    kms.rotate_key(&admin, &k).await.unwrap();
    kms.show_key(&admin, &k).await.unwrap();
    assert_eq!(kms.list_keys(&admin, "").await.unwrap().len(), 1);
    kms.create_keyspace(&admin, "acme", "m", true)
        .await
        .unwrap();
    for e in [
        kms.encrypt(&admin, &k, b"x", b"").await.unwrap_err(),
        kms.sign_poai(&admin, &name("poai:acme:m"), att("n"), now())
            .await
            .unwrap_err(),
        kms.model_data_key(&admin, &name("model:acme:m"), b"", None)
            .await
            .map(drop)
            .unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    }
    // It manages tokens with at most its own roles: it cannot mint itself a user.
    kms.create_token(&admin, "acme", &[Role::Manage], &[], "deputy")
        .await
        .unwrap();
    assert_eq!(
        kms.create_token(&admin, "acme", &[Role::Decrypt], &[], "")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
    // A key user cannot administer.
    let user = tenant("acme", "user", &[Role::Encrypt, Role::Decrypt]);
    assert_eq!(
        kms.rotate_key(&user, &k).await.unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
}

/// The partner lookup on every signature caches "no partner" (store `load_key_or_known_absent`),
/// but a partner created on this node is used at the very next signature, and a signature
/// stripped of it is then refused: the cached absence cannot open a downgrade.
#[tokio::test]
async fn a_partner_created_after_signatures_without_one_is_required_at_once() {
    let (_d, kms) = fresh("").await;
    let key = name("poai:acme:late");
    kms.create_key(&local(), &key, None, None).await.unwrap();
    let first = kms
        .sign_poai(&local(), &key, att("a"), now())
        .await
        .unwrap();
    assert!(first.pq.is_none());
    // Signed and verified again: the absence is now cached.
    assert!(
        kms.verify_poai(&local(), &first, now())
            .await
            .unwrap()
            .valid
    );
    kms.create_key(
        &local(),
        &name("poai:acme:late-pq"),
        Some(hanzo_kms_core::Algorithm::MlDsa65),
        None,
    )
    .await
    .unwrap();
    let second = kms
        .sign_poai(&local(), &key, att("b"), now())
        .await
        .unwrap();
    assert!(second.pq.is_some(), "the new partner signs at once");
    let mut stripped = second.clone();
    stripped.pq = None;
    let v = kms.verify_poai(&local(), &stripped, now()).await.unwrap();
    assert_eq!((v.valid, v.reason), (false, Some("pq_missing")));
}
