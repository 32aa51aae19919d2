//! The gRPC API over real sockets with the generated client: the same operations as REST, the
//! same refusals (missing/bad token, wrong role, foreign tenant as missing), malformed protobuf,
//! message limits, rate limits as RESOURCE_EXHAUSTED, and server reflection.

use hanzo_kms_proto::v1 as pb;
use pb::kms_client::KmsClient;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

mod common;
use common::start;

async fn client(addr: std::net::SocketAddr) -> KmsClient<Channel> {
    KmsClient::connect(format!("http://{addr}")).await.unwrap()
}

/// A client for any method path, with no generated stubs.
async fn raw_client(addr: std::net::SocketAddr) -> tonic::client::Grpc<Channel> {
    tonic::client::Grpc::new(
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

fn with_token<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    r
}

/// The request id a refusal carries in its metadata.
fn request_id(s: &tonic::Status) -> String {
    s.metadata()
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .unwrap()
        .to_owned()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn attestation(i: u64) -> pb::PoAiAttestation {
    pb::PoAiAttestation {
        model_id: "acme:gpt4".into(),
        input_hash: format!("0x{:064x}", i + 1),
        output_hash: format!("0x{:064x}", i + 2),
        timestamp: now(),
        compute_time_ms: 12,
        node_id: "node-1".into(),
        nonce: None,
    }
}

#[tokio::test]
async fn the_operations_work_over_grpc_and_match_rest() {
    let r = start("", |_| {}).await;
    let mut c = client(r.grpc).await;
    let t = r.admin.as_str();

    let keys = c
        .create_model_keyspace(with_token(
            t,
            pb::CreateModelKeyspaceRequest {
                customer: "acme".into(),
                model: "gpt4".into(),
                signing_keys: None,
            },
        ))
        .await
        .unwrap();
    assert!(keys.metadata().get("x-request-id").is_some());
    let names: Vec<String> = keys.into_inner().keys.into_iter().map(|k| k.name).collect();
    assert!(names.contains(&"model:acme:gpt4".to_owned()), "{names:?}");

    // Small data round trip; the ciphertext is the REST form and decrypts there too.
    let e = c
        .encrypt(with_token(
            t,
            pb::EncryptRequest {
                key: "model:acme:gpt4".into(),
                plaintext: b"hello".to_vec(),
                aad: b"ctx".to_vec(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(e.ciphertext.starts_with("hkms:v1:"), "{}", e.ciphertext);
    let d = c
        .decrypt(with_token(
            t,
            pb::DecryptRequest {
                key: "model:acme:gpt4".into(),
                ciphertext: e.ciphertext.clone(),
                aad: b"ctx".to_vec(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.plaintext, b"hello");
    let wrong_aad = c
        .decrypt(with_token(
            t,
            pb::DecryptRequest {
                key: "model:acme:gpt4".into(),
                ciphertext: e.ciphertext,
                aad: b"other".to_vec(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong_aad.code(), Code::InvalidArgument);
    assert_eq!(wrong_aad.message(), "authentication failed");

    // PoAI: sign, verify, tamper; the signer is the key's address.
    let signed = c
        .sign_poai(with_token(
            t,
            pb::SignPoaiRequest {
                key: "poai:acme:gpt4".into(),
                attestation: Some(attestation(1)),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let public = c
        .get_public_key(with_token(
            t,
            pb::KeyRequest {
                name: "poai:acme:gpt4".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(Some(signed.signer.clone()), public.address);
    assert_eq!(signed.signature.len(), 2 + 130);
    let v = c
        .verify_poai(with_token(t, signed.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid, "{v:?}");
    let mut tampered = signed.clone();
    tampered.attestation.as_mut().unwrap().compute_time_ms += 1;
    let v = c
        .verify_poai(with_token(t, tampered))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (v.valid, v.reason.as_deref()),
        (false, Some("digest_mismatch"))
    );

    // A batch under one Merkle root; every item verifies on its own.
    let batch = c
        .sign_poai_batch(with_token(
            t,
            pb::SignPoaiBatchRequest {
                key: "poai:acme:gpt4".into(),
                attestations: (10..42).map(attestation).collect(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.items.len(), 32);
    for item in [&batch.items[0], &batch.items[17], &batch.items[31]] {
        let v = c
            .verify_poai_batch_item(with_token(t, item.clone()))
            .await
            .unwrap()
            .into_inner();
        assert!(v.valid, "{v:?}");
    }

    // A settlement for the attestation, once; the second is ABORTED (replayed).
    let settlement = pb::HmmSettlement {
        job_id: "job-1".into(),
        provider: format!("0x{}", "11".repeat(20)),
        consumer: format!("0x{}", "22".repeat(20)),
        amount: "1000000000000000000".into(),
        attestation_digest: signed.digest.clone(),
        timestamp: now(),
        expiry: 0,
        nonce: None,
    };
    let hmm = c
        .sign_hmm_settlement(with_token(
            t,
            pb::SignHmmSettlementRequest {
                key: "hmm:acme:gpt4".into(),
                settlement: Some(settlement.clone()),
                attestation: Some(signed.clone()),
                attestation_item: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let v = c
        .verify_hmm_settlement(with_token(
            t,
            pb::VerifyHmmSettlementRequest {
                signed: Some(hmm),
                attestation: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid, "{v:?}");
    let again = c
        .sign_hmm_settlement(with_token(
            t,
            pb::SignHmmSettlementRequest {
                key: "hmm:acme:gpt4".into(),
                settlement: Some(pb::HmmSettlement {
                    job_id: "job-2".into(),
                    ..settlement
                }),
                attestation: Some(signed),
                attestation_item: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::Aborted, "{again:?}");

    // General signing in batches with an api: key.
    c.create_key(with_token(
        t,
        pb::CreateKeyRequest {
            name: "api:acme:ed".into(),
            algorithm: "ed25519".into(),
            rotation_days: None,
        },
    ))
    .await
    .unwrap();
    let sigs = c
        .sign_batch(with_token(
            t,
            pb::SignBatchRequest {
                key: "api:acme:ed".into(),
                messages: vec![b"a".to_vec(), b"b".to_vec()],
                prehashed: false,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .signatures;
    let raw = |s: &str| hex::decode(s.trim_start_matches("0x")).unwrap();
    let v = c
        .verify_batch(with_token(
            t,
            pb::VerifyBatchRequest {
                key: "api:acme:ed".into(),
                items: vec![
                    pb::VerifyItem {
                        message: b"a".to_vec(),
                        signature: raw(&sigs[0].signature),
                    },
                    pb::VerifyItem {
                        message: b"a".to_vec(),
                        signature: raw(&sigs[1].signature),
                    },
                ],
                prehashed: false,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .verdicts;
    assert_eq!(
        v.iter().map(|v| (v.valid, v.version)).collect::<Vec<_>>(),
        vec![(true, Some(1)), (false, None)]
    );

    // The audit chain holds every call and verifies.
    let report = c
        .verify_audit(with_token(t, pb::Empty {}))
        .await
        .unwrap()
        .into_inner();
    assert!(report.valid && report.records > 10, "{report:?}");
    assert_eq!(
        report.from, 1,
        "nothing was pruned: the check starts at record 1"
    );
    let records = c
        .list_audit(with_token(t, pb::ListAuditRequest { after: 0, limit: 0 }))
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(records.iter().any(|r| {
        r.operation == "poai.sign_batch"
            && r.outcome == "ok"
            && r.peer
                .as_deref()
                .is_some_and(|p| p.starts_with("127.0.0.1:"))
    }));
    r.stop().await;
}

#[tokio::test]
async fn grpc_refuses_missing_bad_and_revoked_tokens_wrong_roles_and_foreign_keys() {
    let r = start("", |_| {}).await;
    let mut c = client(r.grpc).await;
    let admin = r.admin.as_str();
    c.create_model_keyspace(with_token(
        admin,
        pb::CreateModelKeyspaceRequest {
            customer: "acme".into(),
            model: "gpt4".into(),
            signing_keys: Some(false),
        },
    ))
    .await
    .unwrap();
    let token = |tenant: &str, roles: &[&str]| pb::CreateTokenRequest {
        tenant: tenant.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        patterns: vec![],
        description: String::new(),
        ttl_secs: None,
    };
    let revoked = c
        .create_token(with_token(admin, token("acme", &["admin"])))
        .await
        .unwrap()
        .into_inner();
    c.revoke_token(with_token(
        admin,
        pb::RevokeTokenRequest {
            id: revoked.info.clone().unwrap().id,
        },
    ))
    .await
    .unwrap();
    let enc = || pb::EncryptRequest {
        key: "model:acme:gpt4".into(),
        plaintext: b"x".to_vec(),
        aad: vec![],
    };
    let no_token = c.encrypt(tonic::Request::new(enc())).await.unwrap_err();
    let bad = c.encrypt(with_token("hkms_nope", enc())).await.unwrap_err();
    let rev = c
        .encrypt(with_token(&revoked.token, enc()))
        .await
        .unwrap_err();
    for s in [&no_token, &bad, &rev] {
        assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
        assert_eq!(s.message(), no_token.message());
        assert!(s.metadata().get("x-request-id").is_some());
    }

    // Wrong role: PERMISSION_DENIED. Foreign tenant: NOT_FOUND, the same as a missing key.
    let verify_only = c
        .create_token(with_token(admin, token("acme", &["verify"])))
        .await
        .unwrap()
        .into_inner()
        .token
        .clone();
    let denied = c
        .encrypt(with_token(&verify_only, enc()))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let globex = c
        .create_token(with_token(admin, token("globex", &["encrypt"])))
        .await
        .unwrap()
        .into_inner()
        .token
        .clone();
    let foreign = c.encrypt(with_token(&globex, enc())).await.unwrap_err();
    let missing = c
        .encrypt(with_token(
            &globex,
            pb::EncryptRequest {
                key: "model:acme:nothing".into(),
                plaintext: b"x".to_vec(),
                aad: Vec::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        foreign.message().replace("gpt4", "X"),
        missing.message().replace("nothing", "X")
    );
    r.stop().await;
}

#[tokio::test]
async fn malformed_protobuf_oversized_messages_and_rate_limits_are_refused_cleanly() {
    let r = start(
        "rate_limits:\n  per_tenant: {per_second: 1, burst: 4}\n",
        |o| o.max_body_bytes = 4096,
    )
    .await;
    let mut c = client(r.grpc).await;
    let t = r.admin.as_str();

    // Malformed protobuf: bytes that are not a ListAuditRequest (field 1 is a varint there; this
    // sends it length-delimited). tonic refuses it before the RPC body runs (with INTERNAL);
    // the server answers INVALID_ARGUMENT, as REST answers 400 for a body that does not parse.
    let raw = raw_client(r.grpc).await;
    let not_a_message = |token: &str| {
        let req = with_token(
            token,
            pb::DecryptResponse {
                plaintext: b"not a varint".to_vec(),
            },
        );
        let mut raw = raw.clone();
        async move {
            raw.ready().await.unwrap();
            let r: tonic::Result<tonic::Response<pb::AuditRecords>> = raw
                .unary(
                    req,
                    "/hanzo.kms.v1.Kms/ListAudit".parse().unwrap(),
                    tonic_prost::ProstCodec::default(),
                )
                .await;
            r.unwrap_err()
        }
    };
    let e = not_a_message(t).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("does not decode"), "{e:?}");
    let malformed_id = request_id(&e);
    // Without a valid token the answer is the authentication error, as on REST.
    let e = not_a_message("hkms_not-a-token").await;
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // Oversized: over server.max_body_bytes. INVALID_ARGUMENT (tonic's own answer would be
    // OUT_OF_RANGE), with REST's code for a 413.
    let big = c
        .encrypt(with_token(
            t,
            pb::EncryptRequest {
                key: "data:acme:x".into(),
                plaintext: vec![0; 8192],
                aad: vec![],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(big.code(), Code::InvalidArgument, "{big:?}");
    assert!(big.message().contains("max_body_bytes"), "{big:?}");
    assert_eq!(
        big.metadata().get("x-error-code").unwrap(),
        "payload_too_large"
    );
    let oversized_id = request_id(&big);

    // Bad hex in an EIP-712 field names the field.
    let bad = c
        .sign_poai(with_token(
            t,
            pb::SignPoaiRequest {
                key: "poai:acme:gpt4".into(),
                attestation: Some(pb::PoAiAttestation {
                    input_hash: "0xzz".into(),
                    ..attestation(1)
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("input_hash"), "{bad:?}");
    // That refusal, made by the gRPC layer before the service saw the request, is audited
    // under the RPC's operation, with the request id the error carried.
    let id = request_id(&bad);
    let records = c
        .list_audit(with_token(
            t,
            pb::ListAuditRequest {
                after: 0,
                limit: 1000,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .records;
    let refusal = records
        .iter()
        .find(|r| r.request_id == id)
        .unwrap_or_else(|| panic!("no audit record for {id}: {records:#?}"));
    assert_eq!(refusal.operation, "poai.sign");
    assert_eq!(refusal.outcome, "denied");
    assert_eq!(refusal.reason.as_deref(), Some("invalid_argument"));
    // So are the two that tonic refused before any RPC body ran, under their RPC's operation.
    for (id, operation) in [
        (&malformed_id, "audit.list"),
        (&oversized_id, "data.encrypt"),
    ] {
        let refusal = records
            .iter()
            .find(|r| &r.request_id == id)
            .unwrap_or_else(|| panic!("no audit record for {id}: {records:#?}"));
        assert_eq!(refusal.operation, operation);
        assert_eq!(refusal.outcome, "denied");
        assert_eq!(refusal.reason.as_deref(), Some("invalid_argument"));
        assert!(!refusal.principal.is_empty(), "{refusal:?}");
        assert!(refusal.peer.is_some(), "{refusal:?}");
    }
    // The refusal without a valid token is not (an unauthenticated request never is).
    assert_eq!(
        records
            .iter()
            .filter(|r| r.operation == "audit.list" && r.outcome == "denied")
            .count(),
        1
    );

    // Rate limit (per tenant; the all-tenant admin is not a tenant): RESOURCE_EXHAUSTED with
    // retry-after.
    c.create_key(with_token(
        t,
        pb::CreateKeyRequest {
            name: "data:acme:x".into(),
            algorithm: String::new(),
            rotation_days: None,
        },
    ))
    .await
    .unwrap();
    let acme = c
        .create_token(with_token(
            t,
            pb::CreateTokenRequest {
                tenant: "acme".into(),
                roles: vec!["encrypt".into()],
                patterns: vec![],
                description: String::new(),
                ttl_secs: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .token
        .clone();
    let mut limited = None;
    for _ in 0..8 {
        let req = pb::EncryptRequest {
            key: "data:acme:x".into(),
            plaintext: b"x".to_vec(),
            aad: vec![],
        };
        if let Err(s) = c.encrypt(with_token(&acme, req)).await {
            limited = Some(s);
            break;
        }
    }
    let s = limited.expect("the burst of 4 was not enforced");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(s.metadata().get("retry-after").is_some());
    r.stop().await;
}

#[tokio::test]
async fn server_reflection_lists_the_kms_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let r = start("", |_| {}).await;
    let channel = Channel::from_shared(format!("http://{}", r.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = c
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer: {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"hanzo.kms.v1.Kms".to_owned()), "{names:?}");
    r.stop().await;
}

/// Every RPC of the service, called with an empty message: (name, the call's status).
async fn every_rpc(c: &mut KmsClient<Channel>, token: Option<&str>) -> Vec<(&'static str, Code)> {
    fn r<T>(token: Option<&str>, m: T) -> tonic::Request<T> {
        match token {
            Some(t) => with_token(t, m),
            None => tonic::Request::new(m),
        }
    }
    fn code<T>(x: Result<tonic::Response<T>, tonic::Status>) -> Code {
        x.map(|_| Code::Ok).unwrap_or_else(|s| s.code())
    }
    let t = token;
    vec![
        (
            "CreateKey",
            code(c.create_key(r(t, Default::default())).await),
        ),
        (
            "ListKeys",
            code(c.list_keys(r(t, Default::default())).await),
        ),
        ("GetKey", code(c.get_key(r(t, Default::default())).await)),
        (
            "RotateKey",
            code(c.rotate_key(r(t, Default::default())).await),
        ),
        (
            "GetPublicKey",
            code(c.get_public_key(r(t, Default::default())).await),
        ),
        (
            "CreateModelKeyspace",
            code(c.create_model_keyspace(r(t, Default::default())).await),
        ),
        ("Encrypt", code(c.encrypt(r(t, Default::default())).await)),
        ("Decrypt", code(c.decrypt(r(t, Default::default())).await)),
        (
            "GenerateDataKey",
            code(c.generate_data_key(r(t, Default::default())).await),
        ),
        (
            "UnwrapDataKey",
            code(c.unwrap_data_key(r(t, Default::default())).await),
        ),
        (
            "GenerateModelKey",
            code(c.generate_model_key(r(t, Default::default())).await),
        ),
        (
            "UnwrapModelKey",
            code(c.unwrap_model_key(r(t, Default::default())).await),
        ),
        ("Sign", code(c.sign(r(t, Default::default())).await)),
        (
            "SignBatch",
            code(c.sign_batch(r(t, Default::default())).await),
        ),
        ("Verify", code(c.verify(r(t, Default::default())).await)),
        (
            "VerifyBatch",
            code(c.verify_batch(r(t, Default::default())).await),
        ),
        (
            "SignPoai",
            code(c.sign_poai(r(t, Default::default())).await),
        ),
        (
            "VerifyPoai",
            code(c.verify_poai(r(t, Default::default())).await),
        ),
        (
            "SignPoaiBatch",
            code(c.sign_poai_batch(r(t, Default::default())).await),
        ),
        (
            "VerifyPoaiBatchItem",
            code(c.verify_poai_batch_item(r(t, Default::default())).await),
        ),
        (
            "SignHmmSettlement",
            code(c.sign_hmm_settlement(r(t, Default::default())).await),
        ),
        (
            "VerifyHmmSettlement",
            code(c.verify_hmm_settlement(r(t, Default::default())).await),
        ),
        (
            "ListAudit",
            code(c.list_audit(r(t, Default::default())).await),
        ),
        (
            "VerifyAudit",
            code(c.verify_audit(r(t, pb::Empty {})).await),
        ),
        (
            "CreateToken",
            code(c.create_token(r(t, Default::default())).await),
        ),
        ("ListTokens", code(c.list_tokens(r(t, pb::Empty {})).await)),
        (
            "RevokeToken",
            code(c.revoke_token(r(t, Default::default())).await),
        ),
    ]
}

#[tokio::test]
async fn every_rpc_refuses_a_missing_or_bad_token_and_an_unknown_method_is_unimplemented() {
    let r = start("", |_| {}).await;
    let mut c = client(r.grpc).await;
    for token in [None, Some("hkms_bad"), Some("hkms_0000000000000000_x")] {
        let answers = every_rpc(&mut c, token).await;
        assert_eq!(answers.len(), 27, "every RPC of kms.proto is listed");
        for (rpc, code) in answers {
            assert_eq!(code, Code::Unauthenticated, "{rpc} with {token:?}");
        }
    }
    // With the admin token the same empty messages are refused for what they are, never
    // answered as if they were something else: no RPC returns OK for an empty request except
    // the listings.
    for (rpc, code) in every_rpc(&mut c, Some(&r.admin)).await {
        let listing = matches!(rpc, "ListKeys" | "ListAudit" | "VerifyAudit" | "ListTokens");
        assert_eq!(code == Code::Ok, listing, "{rpc}: {code:?}");
        assert_ne!(code, Code::Internal, "{rpc}");
    }
    // An unknown method: UNIMPLEMENTED.
    let mut raw = raw_client(r.grpc).await;
    raw.ready().await.unwrap();
    let e = raw
        .unary::<pb::Empty, pb::Empty, _>(
            with_token(&r.admin, pb::Empty {}),
            "/hanzo.kms.v1.Kms/NoSuchMethod".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    r.stop().await;
}

#[tokio::test]
async fn a_stopping_server_does_not_wait_forever_for_a_client_that_keeps_its_connection() {
    use tokio::io::AsyncWriteExt;
    let r = start("", |o| {
        o.request_timeout = std::time::Duration::from_millis(500)
    })
    .await;
    // An HTTP/2 client that says hello and then never reads or writes again (what a client whose
    // runtime stopped polling looks like from the server).
    let mut idle = tokio::net::TcpStream::connect(r.grpc).await.unwrap();
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut c = client(r.grpc).await;
    c.list_keys(with_token(&r.admin, pb::ListKeysRequest::default()))
        .await
        .unwrap();
    // The grace period (request timeout + 1.9 s) bounds the wait.
    let t = std::time::Instant::now();
    tokio::time::timeout(std::time::Duration::from_secs(10), r.stop())
        .await
        .expect("the server did not stop within 10 s");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
    drop((c, idle));
}

#[tokio::test]
async fn a_slow_rpc_is_cut_off_by_the_request_timeout_but_verify_audit_is_not() {
    let r = start("", |o| {
        o.request_timeout = std::time::Duration::from_millis(500)
    })
    .await;
    let mut raw = raw_client(r.grpc).await;
    // A request whose message never comes: the RPC waits for it.
    let never = || {
        let mut req = tonic::Request::new(tokio_stream::pending::<pb::Empty>());
        req.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {}", r.admin)).unwrap(),
        );
        req
    };
    raw.ready().await.unwrap();
    let t = std::time::Instant::now();
    let e = raw
        .client_streaming::<_, pb::Empty, pb::Empty, _>(
            never(),
            "/hanzo.kms.v1.Kms/ListTokens".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Cancelled, "{e:?}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "{t:?}");
    // Audited under the request id it was answered with: `error`, reason `timeout`.
    let id = e.metadata().get("x-request-id").unwrap().to_str().unwrap();
    assert_eq!(e.metadata().get("x-error-code").unwrap(), "timeout");
    let mut c = client(r.grpc).await;
    let records = c
        .list_audit(with_token(
            &r.admin,
            pb::ListAuditRequest { after: 0, limit: 0 },
        ))
        .await
        .unwrap()
        .into_inner()
        .records;
    let cut: Vec<_> = records.iter().filter(|x| x.request_id == id).collect();
    assert_eq!(cut.len(), 1, "{records:#?}");
    assert_eq!(
        (
            cut[0].operation.as_str(),
            cut[0].outcome.as_str(),
            cut[0].reason.as_deref()
        ),
        ("token.list", "error", Some("timeout")),
        "{records:#?}"
    );
    // VerifyAudit reads the whole log and gets the longer bound (10 minutes), as on REST.
    raw.ready().await.unwrap();
    let waited = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        raw.client_streaming::<_, pb::Empty, pb::Empty, _>(
            never(),
            "/hanzo.kms.v1.Kms/VerifyAudit".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        ),
    )
    .await;
    assert!(waited.is_err(), "VerifyAudit was cut off: {waited:?}");
    // Counted with REST's timeouts.
    let metrics = http_get(r.addr, "/metrics").await;
    assert!(
        metrics.contains("hanzo_kms_request_timeouts_total 1\n"),
        "{metrics}"
    );
    r.stop().await;
}

/// A plain HTTP/1.1 GET, without a client crate.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    raw
}
