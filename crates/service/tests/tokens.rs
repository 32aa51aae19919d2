//! API tokens and rate limits through the service: creation, authentication, roles, patterns,
//! tenants, revocation, and that nothing secret is stored or logged.

use std::sync::Arc;

use hanzo_kms_core::{Config, ErrorKind, KeyName, Separator};
use hanzo_kms_service::ratelimit::ConfiguredLimiter;
use hanzo_kms_service::{Kms, RequestCtx, Role, Settings};

async fn fresh(yaml: &str) -> (tempfile::TempDir, Kms) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        data_dir: dir.path().to_path_buf(),
        config: Config::from_yaml(yaml, "test", std::iter::empty::<(&str, &str)>()).unwrap(),
        master_key_env: None,
    };
    let (kms, _) = Kms::init(&settings).await.unwrap();
    (dir, kms)
}

fn local() -> RequestCtx {
    RequestCtx::local()
}

fn name(s: &str) -> KeyName {
    KeyName::parse(s, Separator::default()).unwrap()
}

#[tokio::test]
async fn a_token_authenticates_as_its_tenant_with_its_roles_and_patterns() {
    let (dir, kms) = fresh("").await;
    kms.create_keyspace(&local(), "acme", "gpt4", true)
        .await
        .unwrap();
    kms.create_keyspace(&local(), "globex", "llama", true)
        .await
        .unwrap();
    let (info, token) = kms
        .create_token(
            &local(),
            "acme",
            &[Role::Encrypt, Role::Decrypt],
            &["data:acme:*".into()],
            "ci",
        )
        .await
        .unwrap();
    assert!(token.expose().starts_with("hkms_"));
    assert!(
        !format!("{token:?}").contains(&token.expose()[5..]),
        "Debug leaks the token"
    );
    let ctx = kms
        .authenticate(token.expose(), Some("127.0.0.1:1".into()))
        .await
        .unwrap();
    assert_eq!(ctx.principal.tenant.as_deref(), Some("acme"));
    assert_eq!(ctx.principal.id, format!("token:{}", info.id));
    // Allowed: its pattern, its role.
    kms.create_key(&local(), &name("data:acme:notes"), None, None)
        .await
        .unwrap();
    let ct = kms
        .encrypt(&ctx, &name("data:acme:notes"), b"hi", b"")
        .await
        .unwrap();
    assert_eq!(
        kms.decrypt(&ctx, &name("data:acme:notes"), &ct.text, b"")
            .await
            .unwrap()
            .expose(),
        b"hi"
    );
    // Refused: a role it lacks (rotate needs admin), a key outside its pattern.
    let e = kms
        .rotate_key(&ctx, &name("data:acme:notes"))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let e = kms
        .model_seal_header(&ctx, &name("model:acme:gpt4"), b"", None)
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    // A foreign tenant's key looks exactly like a missing one.
    let foreign = kms
        .show_key(&ctx, &name("model:globex:llama"))
        .await
        .err()
        .unwrap();
    let missing = kms
        .show_key(&ctx, &name("data:acme:nope"))
        .await
        .err()
        .unwrap();
    assert_eq!(foreign.kind(), missing.kind());
    assert_eq!(
        foreign.to_string().replace("model:globex:llama", "model:X"),
        missing.to_string().replace("data:acme:nope", "model:X")
    );
    // Nothing secret in the store: the token's secret part appears nowhere in kms.db.
    kms.close().await;
    // The secret is everything after "hkms_" + 16 hex + "_" (it may itself contain '_').
    let secret = token.expose()[22..].to_owned();
    for f in ["kms.db", "kms.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.path().join(f)) {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{f}"
            );
        }
    }
}

#[tokio::test]
async fn bad_unknown_tampered_and_revoked_tokens_all_get_the_same_answer() {
    let (_d, kms) = fresh("").await;
    let (info, token) = kms
        .create_token(&local(), "acme", &[Role::Admin], &[], "")
        .await
        .unwrap();
    let t = token.expose();
    let mut tampered = t.to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let unknown = format!("hkms_{}_{}", "0".repeat(16), &t[22..]);
    let mut answers = Vec::new();
    for bad in ["", "Bearer", "hkms_", "hkms_zz_zz", &unknown, &tampered] {
        let e = kms.authenticate(bad, None).await.unwrap_err();
        answers.push((e.kind(), e.to_string()));
    }
    kms.revoke_token(&local(), &info.id).await.unwrap();
    let e = kms.authenticate(t, None).await.unwrap_err();
    answers.push((e.kind(), e.to_string()));
    for a in &answers {
        assert_eq!(a, &answers[0]);
    }
    assert_eq!(answers[0].0, ErrorKind::Unauthenticated);
    // The reasons are in the audit log, without the token.
    let records = kms.audit_records(&local(), 0, 1000).await.unwrap();
    let text = format!("{records:?}");
    assert!(
        text.contains("revoked token") && text.contains("wrong token secret"),
        "{text}"
    );
    assert!(
        !text.contains(&t[22..]),
        "the audit log holds the token secret"
    );
    // Revoking twice is an error, not a silent success.
    assert!(kms.revoke_token(&local(), &info.id).await.is_err());
}

/// Issue 26, "tokens that expire": a token made with a lifetime works until it passes, then gets
/// the same answer as a revoked one, and the refusal is audited as `expired token`. Lifetimes
/// outside 1 s to 10 years are refused, and a token without one keeps working.
#[tokio::test]
async fn a_token_with_a_lifetime_is_refused_after_it_and_audited() {
    let (_d, kms) = fresh("").await;
    let (info, token) = kms
        .create_token_for(&local(), "acme", &[Role::Verify], &[], "short", Some(1))
        .await
        .unwrap();
    let now = hanzo_kms_service::now_secs();
    let at = info.expires_at.expect("expires_at is reported");
    assert!((now..=now + 2).contains(&at), "{at} vs {now}");
    let (forever, lasting) = kms
        .create_token(&local(), "acme", &[Role::Verify], &[], "lasting")
        .await
        .unwrap();
    assert_eq!(forever.expires_at, None);
    kms.authenticate(token.expose(), None).await.unwrap();
    // Past its second (the store keeps whole seconds).
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let e = kms.authenticate(token.expose(), None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    let revoked_like = kms.authenticate("hkms_zz_zz", None).await.unwrap_err();
    assert_eq!(e.to_string(), revoked_like.to_string());
    kms.authenticate(lasting.expose(), None).await.unwrap();
    let records = kms.audit_records(&local(), 0, 1000).await.unwrap();
    assert!(format!("{records:?}").contains("expired token"));
    let listed = kms.list_tokens(&local()).await.unwrap();
    let l = listed.iter().find(|t| t.id == info.id).unwrap();
    assert_eq!(l.expires_at, Some(at));
    for bad in [0, hanzo_kms_service::MAX_TOKEN_TTL_SECS + 1] {
        let e = kms
            .create_token_for(&local(), "acme", &[Role::Verify], &[], "", Some(bad))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}: {e}");
        assert!(e.to_string().contains("lifetime"), "{e}");
    }
}

#[tokio::test]
async fn tenant_admins_manage_only_their_own_tenant() {
    let (_d, kms) = fresh("").await;
    let (_, admin) = kms
        .create_token(&local(), "acme", &[Role::Admin], &[], "")
        .await
        .unwrap();
    let (g, _) = kms
        .create_token(&local(), "globex", &[Role::Sign], &[], "")
        .await
        .unwrap();
    let acme = kms.authenticate(admin.expose(), None).await.unwrap();
    // Own tenant: fine. Another tenant: refused. Foreign token ids look missing.
    kms.create_token(&acme, "acme", &[Role::Decrypt], &[], "")
        .await
        .unwrap();
    let e = kms
        .create_token(&acme, "globex", &[Role::Decrypt], &[], "")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    let e = kms.revoke_token(&acme, &g.id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let listed = kms.list_tokens(&acme).await.unwrap();
    assert!(listed.iter().all(|t| t.tenant == "acme"));
    assert_eq!(kms.list_tokens(&local()).await.unwrap().len(), 3);
    // A non-admin cannot mint tokens, and nobody grants a role they lack.
    let (_, signer) = kms
        .create_token(&local(), "acme", &[Role::Sign], &[], "")
        .await
        .unwrap();
    let signer = kms.authenticate(signer.expose(), None).await.unwrap();
    assert_eq!(
        kms.create_token(&signer, "acme", &[Role::Sign], &[], "")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
    // Patterns must stay inside the tenant.
    let e = kms
        .create_token(
            &local(),
            "acme",
            &[Role::Decrypt],
            &["model:globex:*".into()],
            "",
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("must be 'acme'"), "{e}");
}

#[tokio::test]
async fn the_configured_limiter_refuses_with_retry_after_and_audits_the_denial() {
    let yaml = "rate_limits:\n  per_tenant: {per_second: 1, burst: 2}\n";
    let (_d, kms) = fresh(yaml).await;
    let config = Config::from_yaml(yaml, "test", std::iter::empty::<(&str, &str)>()).unwrap();
    let limiter = Arc::new(ConfiguredLimiter::new(&config.rate_limits).unwrap());
    let kms = kms.with_limiter(limiter.clone());
    kms.create_key(&local(), &name("data:acme:x"), None, None)
        .await
        .unwrap();
    let (_, token) = kms
        .create_token(&local(), "acme", &[Role::Encrypt], &[], "")
        .await
        .unwrap();
    let ctx = kms.authenticate(token.expose(), None).await.unwrap();
    let k = name("data:acme:x");
    kms.encrypt(&ctx, &k, b"1", b"").await.unwrap();
    kms.encrypt(&ctx, &k, b"2", b"").await.unwrap();
    let e = kms.encrypt(&ctx, &k, b"3", b"").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert!(e.retry_after().is_some());
    assert_eq!(limiter.rejected(), 1);
    let records = kms.audit_records(&local(), 0, 1000).await.unwrap();
    let last = records.last().unwrap();
    assert_eq!(last.event.outcome, "denied");
    assert_eq!(last.event.reason.as_deref(), Some("rate_limited"));
}

#[tokio::test]
async fn a_pattern_limited_admin_cannot_mint_a_broader_token_and_lists_only_its_keys() {
    let (_d, kms) = fresh("").await;
    for k in ["model:acme:team1-a", "model:acme:team2-b"] {
        kms.create_key(&local(), &name(k), None, None)
            .await
            .unwrap();
    }
    let (_, t) = kms
        .create_token(
            &local(),
            "acme",
            &[Role::Admin],
            &["model:acme:team1-*".into()],
            "",
        )
        .await
        .unwrap();
    let limited = kms.authenticate(t.expose(), None).await.unwrap();
    for patterns in [
        vec![],
        vec!["model:acme:*".to_owned()],
        vec!["*:acme:*".to_owned()],
    ] {
        let e = kms
            .create_token(&limited, "acme", &[Role::Decrypt], &patterns, "")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{patterns:?}: {e}");
    }
    kms.create_token(
        &limited,
        "acme",
        &[Role::Decrypt],
        &["model:acme:team1-*".into()],
        "",
    )
    .await
    .unwrap();
    let listed = kms.list_keys(&limited, "").await.unwrap();
    let names: Vec<&str> = listed.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["model:acme:team1-a"]);
}

#[tokio::test]
async fn the_audit_role_is_only_for_all_tenant_tokens() {
    let (_d, kms) = fresh("").await;
    let e = kms
        .create_token(&local(), "acme", &[Role::Sign, Role::Audit], &[], "")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("--tenant '*'"), "{e}");
    assert!(kms.list_tokens(&local()).await.unwrap().is_empty());
    let (_, t) = kms
        .create_token(&local(), "*", &[Role::Audit], &[], "auditor")
        .await
        .unwrap();
    let auditor = kms.authenticate(t.expose(), None).await.unwrap();
    kms.audit_records(&auditor, 0, 10).await.unwrap();
    assert!(kms.audit_verify(&auditor).await.unwrap().is_ok());
}

#[tokio::test]
async fn token_patterns_are_bounded_in_number_and_length() {
    let (_d, kms) = fresh("").await;
    let many: Vec<String> = (0..33).map(|i| format!("model:acme:m{i}-*")).collect();
    let e = kms
        .create_token(&local(), "acme", &[Role::Decrypt], &many, "")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("at most 32 key patterns"), "{e}");
    kms.create_token(&local(), "acme", &[Role::Decrypt], &many[..32], "")
        .await
        .unwrap();
    let long = format!("model:acme:{}", "*".repeat(380));
    let e = kms
        .create_token(&local(), "acme", &[Role::Decrypt], &[long], "")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("at most 386 characters"), "{e}");
    // Nothing was created by the refusals: the one token made is the only one.
    assert_eq!(kms.list_tokens(&local()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_batch_naming_one_nonce_twice_is_refused_alone() {
    use hanzo_kms_core::eip712::{B32, PoAIAttestation};
    let (_d, kms) = fresh("").await;
    kms.create_keyspace(&local(), "acme", "gpt4", true)
        .await
        .unwrap();
    let now = hanzo_kms_service::now_secs() as u64;
    let att = |i: u8| PoAIAttestation {
        model_id: "acme:gpt4".into(),
        input_hash: B32([i; 32]),
        output_hash: B32([2; 32]),
        timestamp: now,
        compute_time_ms: 1,
        node_id: "n".into(),
        nonce: Some(B32([7; 32])),
    };
    let key = name("poai:acme:gpt4");
    let e = kms
        .sign_poai_batch(&local(), &key, vec![att(1), att(2)], now)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("appears twice"), "{e}");
    // The service keeps working: a normal signature goes through afterwards.
    kms.sign_poai(&local(), &key, att(3), now).await.unwrap();
}
