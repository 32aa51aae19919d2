//! The client against a real server on loopback, over gRPC and REST: the HIP-005 API, model
//! weights encrypted locally (the server sees only headers), errors read back as their kinds,
//! retries and timeouts, and the `inference_flow` example binary.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hanzo_kms_client::{Client, Protocol};
use hanzo_kms_core::ErrorKind;
use hanzo_kms_core::eip712::{B32, PoAIAttestation};

#[path = "../../server/tests/common/mod.rs"]
mod common;
use common::Running;

async fn start() -> Running {
    common::start("", |_| {}).await
}

/// A client of the running server, over `p`.
async fn client(r: &Running, p: Protocol, token: &str) -> Client {
    let addr = match p {
        Protocol::Grpc => r.grpc,
        Protocol::Rest => r.addr,
    };
    Client::builder(&format!("http://{addr}"), token)
        .protocol(p)
        .connect()
        .await
        .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hip005_api_works_the_same_over_grpc_and_rest() {
    let r = start().await;
    let grpc = client(&r, Protocol::Grpc, &r.admin).await;
    let rest = client(&r, Protocol::Rest, &r.admin).await;
    let keys = grpc.create_model_keyspace("acme", "gpt4").await.unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
    let again = rest
        .create_model_keyspace("acme", "gpt4")
        .await
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists);

    // Weights: encrypted over one transport, decrypted over the other.
    let weights: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let file = grpc
        .encrypt_model_weights("acme:gpt4", &weights, b"meta")
        .await
        .unwrap();
    assert!(file.len() > weights.len());
    assert_ne!(&file[file.len() - 1000..], &weights[weights.len() - 1000..]);
    let back = rest
        .decrypt_model_weights("model:acme:gpt4", &file)
        .await
        .unwrap();
    assert_eq!(back.as_slice(), weights.as_slice());

    // A flipped byte in a segment, or the file claimed for another model: authentication failed.
    let mut bad = file.clone();
    let n = bad.len();
    bad[n - 100] ^= 1;
    let e = grpc
        .decrypt_model_weights("acme:gpt4", &bad)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthenticationFailed, "{e}");
    grpc.create_model_keyspace("acme", "llama").await.unwrap();
    let e = rest
        .decrypt_model_weights("acme:llama", &file)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthenticationFailed, "{e}");

    // File form: the output appears whole; a failed decryption leaves nothing behind.
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("w.bin");
    std::fs::write(&plain, &weights).unwrap();
    let sealed = dir.path().join("w.hkms");
    grpc.encrypt_model_weights_file("acme:gpt4", &plain, &sealed, b"")
        .await
        .unwrap();
    let out = dir.path().join("w.out");
    let n = rest
        .decrypt_model_weights_file("acme:gpt4", &sealed, &out)
        .await
        .unwrap();
    assert_eq!(n as usize, weights.len());
    assert_eq!(std::fs::read(&out).unwrap(), weights);
    let mut cut = std::fs::read(&sealed).unwrap();
    cut.truncate(cut.len() - 17);
    std::fs::write(&sealed, &cut).unwrap();
    let out2 = dir.path().join("w2.out");
    let e = grpc
        .decrypt_model_weights_file("acme:gpt4", &sealed, &out2)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthenticationFailed, "{e}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !left
            .iter()
            .any(|n| n.starts_with("w2") || n.contains(".tmp")),
        "{left:?}"
    );

    // PoAI and HMM, signed over one transport and verified over the other.
    for (signer, verifier) in [(&grpc, &rest), (&rest, &grpc)] {
        let att = PoAIAttestation {
            model_id: "acme:gpt4".into(),
            input_hash: B32([1; 32]),
            output_hash: B32([2; 32]),
            timestamp: now(),
            compute_time_ms: 5,
            node_id: "n1".into(),
            nonce: None,
        };
        let signed = signer.sign_poai("poai:acme:gpt4", att).await.unwrap();
        assert!(verifier.verify_poai(&signed).await.unwrap().valid);
        // A retry of the same attestation (same nonce) returns the recorded signature.
        let again = signer
            .sign_poai("poai:acme:gpt4", signed.attestation.clone())
            .await
            .unwrap();
        assert_eq!(again.signature, signed.signature);
        let settlement = hanzo_kms_core::eip712::HMMSettlement {
            job_id: format!("job-{}", signed.signature.to_hex()),
            provider: hanzo_kms_core::eip712::Address([0x11; 20]),
            consumer: hanzo_kms_core::eip712::Address([0x22; 20]),
            amount: hanzo_kms_core::eip712::U256::parse_decimal("12345").unwrap(),
            attestation_digest: signed.digest,
            timestamp: now(),
            expiry: 0,
            nonce: None,
        };
        let s = signer
            .sign_hmm_settlement("hmm:acme:gpt4", settlement.clone(), &signed)
            .await
            .unwrap();
        let v = verifier
            .verify_hmm_settlement(&s, Some(&signed))
            .await
            .unwrap();
        assert!(v.valid, "{v:?}");
        let e = verifier
            .sign_hmm_settlement("hmm:acme:gpt4", settlement, &signed)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Replayed, "{e}");
    }

    // General crypto: data keys, small data, api: signing.
    let dk = rest
        .generate_data_key("model:acme:gpt4", b"ctx")
        .await
        .unwrap();
    let un = grpc
        .unwrap_data_key("model:acme:gpt4", &dk.ciphertext, b"ctx")
        .await
        .unwrap();
    assert_eq!(un.expose(), dk.plaintext.expose());
    let ct = grpc
        .encrypt("model:acme:gpt4", b"small", b"")
        .await
        .unwrap();
    assert_eq!(
        rest.decrypt("model:acme:gpt4", &ct, b"")
            .await
            .unwrap()
            .expose(),
        b"small"
    );
    grpc.create_key("api:acme:p", Some("p256")).await.unwrap();
    let sig = rest.sign("api:acme:p", b"m", false).await.unwrap();
    let raw = hex::decode(sig.signature.trim_start_matches("0x")).unwrap();
    assert!(grpc.verify("api:acme:p", b"m", &raw, false).await.unwrap());
    assert!(!rest.verify("api:acme:p", b"n", &raw, false).await.unwrap());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_back_as_their_kinds_on_both_transports() {
    let r = start().await;
    let admin = client(&r, Protocol::Grpc, &r.admin).await;
    admin.create_model_keyspace("acme", "gpt4").await.unwrap();
    for p in [Protocol::Grpc, Protocol::Rest] {
        let bad = client(&r, p, "hkms_0000000000000000_nope").await;
        let e = bad.get_key("model:acme:gpt4").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{p:?}: {e}");
        assert!(e.message().contains("(request "), "{e}");
        let e = client(&r, p, &r.admin)
            .await
            .get_key("model:acme:missing")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{p:?}: {e}");
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_retried_then_unavailable_and_writes_are_not_retried() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for p in [Protocol::Grpc, Protocol::Rest] {
        let c = Client::builder(&format!("http://127.0.0.1:{port}"), "hkms_x")
            .protocol(p)
            .retries(2)
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .unwrap();
        let t = Instant::now();
        let e = c.get_key("data:a:b").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{p:?}: {e}");
        // Two retries: back-off 100 ms + 200 ms.
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{p:?}: {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        let e = c.create_key("data:a:b", None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "create_key was retried"
        );
    }
    let bad = Client::builder("127.0.0.1:8201", "t")
        .connect()
        .await
        .unwrap_err();
    assert!(bad.message().contains("http://"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inference_flow_example_runs_against_a_server() {
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|d| d.join("examples").join("inference_flow"))
        .unwrap();
    assert!(
        example.exists(),
        "{} is missing: run this through `cargo test`, which builds the examples",
        example.display()
    );
    let r = start().await;
    for (p, addr) in [("grpc", r.grpc), ("rest", r.addr)] {
        let out = tokio::process::Command::new(&example)
            .env("HANZO_KMS_URL", format!("http://{addr}"))
            .env("HANZO_KMS_PROTOCOL", p)
            .env("HANZO_KMS_TOKEN", &r.admin)
            .env("HANZO_KMS_MODEL", format!("gpt4-{p}"))
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{p}: {stderr}");
        let settlement: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(settlement["algorithm"], "secp256k1", "{settlement}");
        assert!(stderr.contains("verifies: true"), "{stderr}");
        assert!(
            !stderr.contains(&r.admin) && !String::from_utf8_lossy(&out.stdout).contains(&r.admin)
        );
    }
    r.stop().await;
}
