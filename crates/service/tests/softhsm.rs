//! The whole service on a real SoftHSM2 token: init and open without a master key file,
//! keyspaces with HSM-resident KEKs and signing keys, model files whose data keys the token wraps,
//! PoAI signatures from the device that recover to `keys show`'s address, a wrong token refused,
//! and faults in the middle of an operation that leave nothing half-written.

use std::path::PathBuf;

use hanzo_kms_core::eip712::{B32, PoAIAttestation};
use hanzo_kms_core::weights::Header;
use hanzo_kms_core::{Config, ErrorKind, KeyName, Separator};
use hanzo_kms_service::{Kms, RequestCtx, Settings};
use hanzo_kms_testkit::softhsm::Token;
use hanzo_kms_weights::encrypt_to_vec;

fn token(test: &str) -> Token {
    let label = format!("{test}-{}", std::process::id());
    Token::create(&label[label.len().saturating_sub(32)..]).unwrap_or_else(|e| {
        panic!("SoftHSM2 is needed for this test (apt-get install softhsm2 opensc): {e}")
    })
}

fn settings(dir: &std::path::Path, yaml: &str) -> Settings {
    Settings {
        data_dir: dir.to_path_buf(),
        config: Config::from_yaml(yaml, "test", std::iter::empty::<(&str, &str)>()).unwrap(),
        master_key_env: None,
    }
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

/// The token's directory under SoftHSM2's token store (to break it on purpose).
fn token_dir(t: &Token) -> PathBuf {
    let conf = std::fs::read_to_string(std::env::var("SOFTHSM2_CONF").unwrap()).unwrap();
    let dir = conf
        .lines()
        .find_map(|l| l.strip_prefix("directories.tokendir = "))
        .unwrap()
        .trim()
        .to_owned();
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            std::fs::read(p.join("token.object"))
                .is_ok_and(|b| b.windows(t.label.len()).any(|w| w == t.label.as_bytes()))
        })
        .expect("the token's directory")
}

#[tokio::test]
async fn keyspace_model_files_and_poai_signatures_on_softhsm2() {
    let t = token("svc-flow");
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), &t.config_yaml(""));
    let (kms, report) = Kms::init(&s).await.unwrap();
    assert!(report.master_key.to_string().contains(&t.label));
    assert!(
        !dir.path().join("master.key").exists(),
        "an HSM store has no master key file"
    );
    let keys = kms
        .create_keyspace(&ctx(), "acme", "gpt4", true)
        .await
        .unwrap();
    for k in &keys {
        assert_eq!(k.origin, "hsm-resident", "{}", k.name);
        assert_eq!(k.provider, "softhsm2");
    }

    // A model file: the DEK is generated and wrapped by the token's KEK, the weights are
    // encrypted in process, and it decrypts after a reopen.
    let model = name("model:acme:gpt4");
    let plain: Vec<u8> = (0..50_000u32).map(|i| (i * 13) as u8).collect();
    let (h, c) = kms
        .model_seal_header(&ctx(), &model, b"", Some(4096))
        .await
        .unwrap();
    let file = encrypt_to_vec(&h, &c, &plain, 2).unwrap();

    // PoAI: the device signs; the signature recovers to the address `keys show` reports.
    let poai = name("poai:acme:gpt4");
    let shown = kms.show_key(&ctx(), &poai).await.unwrap();
    let mut sigs = Vec::new();
    for i in 0..8u8 {
        let att = PoAIAttestation {
            model_id: "acme:gpt4".into(),
            input_hash: B32([i; 32]),
            output_hash: B32([0x22; 32]),
            timestamp: now(),
            compute_time_ms: 10,
            node_id: format!("node-{i}"),
            nonce: None,
        };
        let signed = kms.sign_poai(&ctx(), &poai, att, now()).await.unwrap();
        assert_eq!(Some(signed.signer.as_str()), shown.address());
        assert_eq!(signed.signature.0.len(), 65);
        assert!(hanzo_kms_crypto::verify::is_low_s(
            &signed.signature.0[32..64]
        ));
        sigs.push(signed);
    }
    kms.close().await;
    drop(kms);

    let kms = Kms::open(&s).await.unwrap();
    let (parsed, n) = Header::parse(&file).unwrap();
    let opened = kms
        .model_open_header(&ctx(), &model, &parsed)
        .await
        .unwrap();
    let layout = parsed.layout((file.len() - n) as u64).unwrap();
    let mut out = vec![0u8; layout.plaintext_len as usize];
    opened.open_body(&file[n..], &mut out, 2).unwrap();
    assert_eq!(out, plain);
    for signed in &sigs {
        let v = kms.verify_poai(&ctx(), signed, now()).await.unwrap();
        assert!(v.valid, "{:?}", v.reason);
    }
    // Rotation makes a new resident version; the old one still decrypts.
    kms.rotate_key(&ctx(), &model).await.unwrap();
    let opened = kms
        .model_open_header(&ctx(), &model, &parsed)
        .await
        .unwrap();
    opened.open_body(&file[n..], &mut out, 2).unwrap();
    assert_eq!(out, plain);
    assert!(kms.audit_verify(&ctx()).await.unwrap().is_ok());
}

#[tokio::test]
async fn a_store_opened_against_another_token_is_refused_and_unchanged() {
    let a = token("svc-token-a");
    let b = token("svc-token-b");
    let dir = tempfile::tempdir().unwrap();
    let (kms, _) = Kms::init(&settings(dir.path(), &a.config_yaml("")))
        .await
        .unwrap();
    kms.create_key(&ctx(), &name("data:acme:x"), None, None)
        .await
        .unwrap();
    kms.close().await;
    drop(kms);
    let before = std::fs::read(dir.path().join("kms.db")).unwrap();
    let Err(e) = Kms::open(&settings(dir.path(), &b.config_yaml(""))).await else {
        panic!("opened against the wrong token");
    };
    assert_eq!(e.kind(), ErrorKind::MasterKeyMismatch, "{e}");
    assert!(e.to_string().contains(&b.label), "{e}");
    assert_eq!(std::fs::read(dir.path().join("kms.db")).unwrap(), before);
    // And the software provider cannot open it either: the store says softhsm2.
    let Err(e) = Kms::open(&settings(dir.path(), "")).await else {
        panic!("opened an HSM store with the software provider");
    };
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("softhsm2"), "{e}");
}

#[tokio::test]
async fn a_refusal_mid_keyspace_leaves_nothing_in_the_store_or_the_token() {
    let t = token("svc-midway");
    let dir = tempfile::tempdir().unwrap();
    // Hybrid keyspaces add an ML-DSA-65 partner, which SoftHSM2 lacks; with fallback: refuse
    // the fourth key fails after three were made in the token.
    let yaml =
        t.config_yaml("      fallback: refuse\n  hanzo:\n    poai_signing:\n      hybrid: true\n");
    let s = settings(dir.path(), &yaml);
    let (kms, _) = Kms::init(&s).await.unwrap();
    let e = kms
        .create_keyspace(&ctx(), "acme", "gpt4", true)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(kms.list_keys(&ctx(), "").await.unwrap().is_empty());
    // The three keys made before the refusal were destroyed again: only the roots remain.
    let out = std::process::Command::new("pkcs11-tool")
        .arg("--module")
        .arg(&t.module)
        .args([
            "--token-label",
            &t.label,
            "--login",
            "--pin",
            &t.user_pin,
            "--list-objects",
        ])
        .output()
        .expect("pkcs11-tool (apt-get install opensc)");
    let listing = String::from_utf8_lossy(&out.stdout);
    let objects = listing.lines().filter(|l| l.contains("Object;")).count();
    assert_eq!(objects, 2, "expected only the two root keys:\n{listing}");
}

#[tokio::test]
async fn the_token_vanishing_mid_session_fails_requests_cleanly_and_changes_nothing() {
    let t = token("svc-vanish");
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), &t.config_yaml(""));
    let (kms, _) = Kms::init(&s).await.unwrap();
    kms.create_key(&ctx(), &name("data:acme:before"), None, None)
        .await
        .unwrap();
    let listed = kms.list_keys(&ctx(), "").await.unwrap().len();
    assert_eq!(kms.provider_health(), hanzo_kms_core::Health::Ok);
    std::fs::remove_dir_all(token_dir(&t)).unwrap();
    assert!(matches!(
        kms.provider_health(),
        hanzo_kms_core::Health::Down(_)
    ));
    let e = kms
        .create_key(&ctx(), &name("data:acme:after"), None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Corrupt),
        "{:?}: {e}",
        e.kind()
    );
    assert!(!e.to_string().contains(&t.user_pin), "{e}");
    assert_eq!(kms.list_keys(&ctx(), "").await.unwrap().len(), listed);
    assert!(kms.audit_verify(&ctx()).await.unwrap().is_ok());
}
