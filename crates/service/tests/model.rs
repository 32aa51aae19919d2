//! Model files through the service with the real software provider: every header bit flip
//! (including the key slot, which only the provider's unwrap authenticates), key states, rotation
//! and rewrap, and the audit trail of every unwrap.

use hanzo_kms_core::weights::Header;
use hanzo_kms_core::{Config, KeyName, Separator};
use hanzo_kms_service::{DestroyMode, Kms, RequestCtx, Settings};
use hanzo_kms_weights::encrypt_to_vec;

async fn fresh() -> (tempfile::TempDir, Kms) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        data_dir: dir.path().to_path_buf(),
        config: Config::from_yaml("", "test", std::iter::empty::<(&str, &str)>()).unwrap(),
        master_key_env: None,
    };
    let (kms, _) = Kms::init(&settings).await.unwrap();
    (dir, kms)
}

fn name(s: &str) -> KeyName {
    KeyName::parse(s, Separator::default()).unwrap()
}

fn ctx() -> RequestCtx {
    RequestCtx::local()
}

async fn seal(kms: &Kms, key: &KeyName, plaintext: &[u8]) -> Vec<u8> {
    let (h, c) = kms
        .model_seal_header(&ctx(), key, b"meta", Some(4096))
        .await
        .unwrap();
    encrypt_to_vec(&h, &c, plaintext, 2).unwrap()
}

/// Decrypt through the service; the error text on failure.
async fn open(kms: &Kms, key: &KeyName, file: &[u8]) -> Result<Vec<u8>, String> {
    let (h, n) = Header::parse(file).map_err(|e| e.to_string())?;
    let c = kms
        .model_open_header(&ctx(), key, &h)
        .await
        .map_err(|e| e.to_string())?;
    let layout = h
        .layout((file.len() - n) as u64)
        .map_err(|e| e.to_string())?;
    let mut out = vec![0u8; layout.plaintext_len as usize];
    c.open_body(&file[n..], &mut out, 2)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[tokio::test]
async fn every_header_bit_flip_is_refused() {
    let (_d, kms) = fresh().await;
    let key = name("model:acme:gpt4");
    kms.create_key(&ctx(), &key, None, None).await.unwrap();
    let plain: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let file = seal(&kms, &key, &plain).await;
    assert_eq!(open(&kms, &key, &file).await.unwrap(), plain);
    let (_, hl) = Header::parse(&file).unwrap();
    for byte in 0..hl {
        for bit in 0..8 {
            let mut bad = file.clone();
            bad[byte] ^= 1 << bit;
            let e = open(&kms, &key, &bad).await.unwrap_err();
            let ok = e == "authentication failed"
                || (byte < 6 && e == "not a Hanzo KMS model file")
                || (byte == 6 && e.contains("format version"));
            assert!(ok, "header byte {byte} bit {bit}: {e}");
        }
    }
}

#[tokio::test]
async fn wrong_model_and_unusable_versions_are_opaque() {
    let (_d, kms) = fresh().await;
    let a = name("model:acme:gpt4");
    let b = name("model:acme:gpt5");
    kms.create_key(&ctx(), &a, None, None).await.unwrap();
    kms.create_key(&ctx(), &b, None, None).await.unwrap();
    let plain = vec![42u8; 10_000];
    let file = seal(&kms, &a, &plain).await;
    assert_eq!(
        open(&kms, &b, &file).await.unwrap_err(),
        "authentication failed"
    );
    let e = open(&kms, &name("model:acme:none"), &file)
        .await
        .unwrap_err();
    assert_eq!(e, "key model:acme:none not found");
    let e = open(&kms, &name("data:acme:gpt4"), &file)
        .await
        .unwrap_err();
    assert!(e.contains("is not a model key"), "{e}");

    // Rotate: the v1 file still opens; disabling or destroying v1 refuses it, opaquely.
    kms.rotate_key(&ctx(), &a).await.unwrap();
    assert_eq!(open(&kms, &a, &file).await.unwrap(), plain);
    kms.set_enabled(&ctx(), &a, Some(1), false).await.unwrap();
    assert_eq!(
        open(&kms, &a, &file).await.unwrap_err(),
        "authentication failed"
    );
    kms.set_enabled(&ctx(), &a, Some(1), true).await.unwrap();

    // Rewrap to v2 changes only the key slot; then v1 can be destroyed and the file still opens.
    let (h, hl) = Header::parse(&file).unwrap();
    let next = kms
        .model_rewrap_header(&ctx(), &h)
        .await
        .unwrap()
        .expect("v1 is not primary");
    assert_eq!(next.key_version, 2);
    assert_eq!(next.file_part(), h.file_part());
    assert_eq!(next.commitment, h.commitment);
    assert!(
        kms.model_rewrap_header(&ctx(), &next)
            .await
            .unwrap()
            .is_none()
    );
    let rewrapped = [next.encode().unwrap(), file[hl..].to_vec()].concat();
    kms.destroy(&ctx(), &a, Some(1), DestroyMode::Now)
        .await
        .unwrap();
    assert_eq!(
        open(&kms, &a, &file).await.unwrap_err(),
        "authentication failed"
    );
    assert_eq!(open(&kms, &a, &rewrapped).await.unwrap(), plain);
    // A whole disabled key refuses too.
    kms.set_enabled(&ctx(), &a, None, false).await.unwrap();
    assert_eq!(
        open(&kms, &a, &rewrapped).await.unwrap_err(),
        "authentication failed"
    );
    assert!(kms.model_seal_header(&ctx(), &a, b"", None).await.is_err());

    // Every unwrap is audited with key, version and outcome; refusals keep their real reason.
    let records = kms.audit_records(&ctx(), 0, 10_000).await.unwrap();
    let decrypts: Vec<_> = records
        .iter()
        .filter(|r| r.event.operation == "model.decrypt")
        .collect();
    assert!(
        decrypts
            .iter()
            .any(|r| r.event.outcome == "ok" && r.event.key_version == Some(1))
    );
    assert!(
        decrypts
            .iter()
            .any(|r| r.event.outcome == "ok" && r.event.key_version == Some(2))
    );
    assert!(
        decrypts
            .iter()
            .any(|r| r.event.outcome == "denied" && r.event.reason.as_deref() == Some("key_state"))
    );
    assert!(
        decrypts
            .iter()
            .any(|r| r.event.reason.as_deref() == Some("authentication_failed"))
    );
    assert!(
        records
            .iter()
            .any(|r| r.event.operation == "model.encrypt" && r.event.outcome == "ok")
    );
    assert!(kms.audit_verify(&ctx()).await.unwrap().is_ok());
}

#[tokio::test]
async fn same_key_different_files_do_not_mix() {
    let (_d, kms) = fresh().await;
    let key = name("model:acme:gpt4");
    kms.create_key(&ctx(), &key, None, None).await.unwrap();
    let f1 = seal(&kms, &key, &vec![1u8; 9000]).await;
    let f2 = seal(&kms, &key, &vec![2u8; 9000]).await;
    let (_, h1) = Header::parse(&f1).unwrap();
    let (_, h2) = Header::parse(&f2).unwrap();
    let seg = 4096 + 16;
    // A segment from file 2 in file 1.
    let mut mixed = f1.clone();
    mixed[h1 + seg..h1 + 2 * seg].copy_from_slice(&f2[h2 + seg..h2 + 2 * seg]);
    assert_eq!(
        open(&kms, &key, &mixed).await.unwrap_err(),
        "authentication failed"
    );
    // File 2's header on file 1's segments.
    let swapped = [f2[..h2].to_vec(), f1[h1..].to_vec()].concat();
    assert_eq!(
        open(&kms, &key, &swapped).await.unwrap_err(),
        "authentication failed"
    );
}
