//! The whole service on a token without AES-GCM or HMAC (a SoftHSM2 token restricted to the
//! Nitrokey HSM 2's documented mechanisms, so the `ecdh-p256` scheme): a store opened against
//! another such token is refused by the sealed MAC key's fingerprint and still opens unchanged on
//! its own, and the
//! token vanishing mid-session fails requests cleanly, as on the AES-GCM path.

use std::path::PathBuf;

use hanzo_kms_core::config::ProviderKind;
use hanzo_kms_core::{Config, ErrorKind, KeyName, Separator};
use hanzo_kms_service::{Kms, RequestCtx, Settings};
use hanzo_kms_testkit::softhsm::Token;

fn token(test: &str) -> Token {
    let label = format!("{test}-{}", std::process::id());
    Token::create(&label[label.len().saturating_sub(32)..]).unwrap_or_else(|e| {
        panic!("SoftHSM2 is needed for this test (apt-get install softhsm2 opensc): {e}")
    })
}

/// `kms.lux.nitrokey` on this SoftHSM2 token, restricted to the Nitrokey's mechanisms; no
/// unwrapped-key cache, so every use asks the token.
fn nitrokey_yaml(t: &Token) -> String {
    let allow = t
        .vendor_mechanisms(ProviderKind::Nitrokey)
        .expect("the nitrokey profile lists its mechanisms")
        .join(", ");
    format!(
        "kms:\n  lux:\n    provider: nitrokey\n    nitrokey:\n      module: {}\n      token_label: {}\n      pin: \"{}\"\n      wrapped_key_cache: 0\n      mechanisms: {{allow: [{allow}]}}\n",
        t.module.display(),
        t.label,
        t.user_pin
    )
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

/// The token's directory under SoftHSM2's token store (to break it on purpose).
fn token_dir(t: &Token) -> PathBuf {
    t.directory().expect("the token's directory")
}

#[tokio::test]
async fn a_store_opened_against_another_ecdh_token_is_refused_and_unchanged() {
    let a = token("wrap-a");
    let b = token("wrap-b");
    let dir = tempfile::tempdir().unwrap();
    let (kms, _) = Kms::init(&settings(dir.path(), &nitrokey_yaml(&a)))
        .await
        .unwrap();
    kms.create_key(&ctx(), &name("data:acme:x"), None, None)
        .await
        .unwrap();
    let ct = kms
        .encrypt(&ctx(), &name("data:acme:x"), b"secret", b"aad")
        .await
        .unwrap();
    kms.close().await;
    drop(kms);
    let Err(e) = Kms::open(&settings(dir.path(), &nitrokey_yaml(&b))).await else {
        panic!("opened against the wrong token");
    };
    assert_eq!(e.kind(), ErrorKind::MasterKeyMismatch, "{e}");
    // Against its own token it opens unchanged (one key, an intact audit chain), and the
    // sealed data key still decrypts.
    let kms = Kms::open(&settings(dir.path(), &nitrokey_yaml(&a)))
        .await
        .unwrap();
    assert_eq!(kms.list_keys(&ctx(), "").await.unwrap().len(), 1);
    assert!(kms.audit_verify(&ctx()).await.unwrap().is_ok());
    let pt = kms
        .decrypt(&ctx(), &name("data:acme:x"), &ct.text, b"aad")
        .await
        .unwrap();
    assert_eq!(pt.expose(), b"secret");
}

#[tokio::test]
async fn the_ecdh_token_vanishing_mid_session_fails_requests_cleanly_and_changes_nothing() {
    let t = token("wrap-vanish");
    let dir = tempfile::tempdir().unwrap();
    let (kms, _) = Kms::init(&settings(dir.path(), &nitrokey_yaml(&t)))
        .await
        .unwrap();
    let key = name("data:acme:before");
    kms.create_key(&ctx(), &key, None, None).await.unwrap();
    let ct = kms.encrypt(&ctx(), &key, b"x", b"").await.unwrap();
    let listed = kms.list_keys(&ctx(), "").await.unwrap().len();
    assert_eq!(kms.provider_health(), hanzo_kms_core::Health::Ok);
    std::fs::remove_dir_all(token_dir(&t)).unwrap();
    assert!(matches!(
        kms.provider_health(),
        hanzo_kms_core::Health::Down(_)
    ));
    // Opening the sealed key needs the device: refused, with the PIN nowhere in the error.
    for e in [
        kms.encrypt(&ctx(), &key, b"y", b"").await.unwrap_err(),
        kms.decrypt(&ctx(), &key, &ct.text, b"")
            .await
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert!(
            matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Corrupt),
            "{:?}: {e}",
            e.kind()
        );
        assert!(!e.to_string().contains(&t.user_pin), "{e}");
    }
    assert_eq!(kms.list_keys(&ctx(), "").await.unwrap().len(), listed);
    assert!(kms.audit_verify(&ctx()).await.unwrap().is_ok());
}
