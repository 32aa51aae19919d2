//! The Google Cloud KMS provider against the FAKE server `scripts/fake_gcp_kms.py` (no Google
//! Cloud KMS emulator exists, DESIGN.md §7; docs/providers.md says what the fake checks). The
//! fake does real cryptography; it runs from the Python virtualenv `scripts/gcp-fake-venv.sh`
//! makes. Every test here says "fake" in its name: the shared conformance suite, where keys
//! live, and every bad input the issue names, each error naming "Google Cloud KMS", the key and
//! the cause, with no secret in it.

use std::sync::OnceLock;

use hanzo_kms_conformance::make;
use hanzo_kms_core::config::{Duration, GcpProtectionLevel, GoogleCloudKmsConfig};
use hanzo_kms_core::{Algorithm, Error, ErrorKind, Health, KeyRef, Origin, Provider, SecretKey32};
use hanzo_kms_crypto::verify::verify;
use hanzo_kms_remote::{GcpKms, RemoteKms, RemoteProvider};
use hanzo_kms_testkit::gcp_fake::FakeGcpKms;

mod common;
use common::remote_id;

/// One fake for the tests that inject no faults (it exits with this process).
fn shared() -> &'static FakeGcpKms {
    static FAKE: OnceLock<FakeGcpKms> = OnceLock::new();
    FAKE.get_or_init(FakeGcpKms::start)
}

fn section(fake: &FakeGcpKms) -> GoogleCloudKmsConfig {
    GoogleCloudKmsConfig {
        project_id: fake.project.clone(),
        location: fake.location.clone(),
        key_ring: fake.key_ring.clone(),
        credentials: fake.credentials.clone(),
        endpoint: Some(fake.endpoint.clone()),
        max_retries: Some(2),
        ..Default::default()
    }
}

fn open_with(
    c: &GoogleCloudKmsConfig,
    prefix: &str,
    create: bool,
) -> hanzo_kms_core::Result<RemoteProvider<GcpKms>> {
    let client = GcpKms::from_config(c)?;
    client.check_key_ring()?;
    common::open(client, &c.tuning(), prefix, create)
}

fn provider_on(fake: &FakeGcpKms, test: &str) -> RemoteProvider<GcpKms> {
    open_with(&section(fake), &format!("t-{test}-"), true).unwrap()
}

fn provider(test: &str) -> RemoteProvider<GcpKms> {
    provider_on(shared(), test)
}

/// `e` names the service and each of `parts`, and holds no secret of the fake's credentials.
fn assert_clear(e: &Error, fake: &FakeGcpKms, parts: &[&str]) {
    common::assert_clear(e, "Google Cloud KMS", parts, &[]);
    let m = e.to_string();
    for file in [&fake.credentials, &fake.wrong_credentials] {
        let creds: serde_json::Value =
            serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let pem = creds["private_key"].as_str().unwrap();
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!m.contains(line), "a key line leaked: {m}");
        }
    }
    assert!(!m.contains("ya29."), "an access token leaked: {m}");
    assert!(
        !format!("{e:?}").contains("ya29."),
        "an access token leaked: {e:?}"
    );
}

mod fake_gcp_conformance {
    hanzo_kms_conformance::conformance_tests!(|part: &str| super::provider(part));
}

#[test]
fn fake_gcp_keys_live_where_cloud_kms_can_hold_them() {
    let p = provider("origins");
    for (alg, want) in [
        (Algorithm::Aes256Gcm, Origin::KmsResident),
        (Algorithm::Secp256k1, Origin::KmsResident),
        (Algorithm::P256, Origin::KmsResident),
        (Algorithm::Ed25519, Origin::KmsWrapped),
        (Algorithm::MlDsa65, Origin::KmsWrapped),
    ] {
        assert_eq!(make(&p, "poai:acme:o", 1, alg).origin, want, "{alg}");
    }
    assert_eq!(p.health(), Health::Ok);
    // At protection level SOFTWARE, Cloud KMS has no secp256k1: such keys are kms-wrapped,
    // P-256 stays in the service.
    let mut c = section(shared());
    c.protection_level = Some(GcpProtectionLevel::Software);
    let s = open_with(&c, "t-origins-sw-", true).unwrap();
    let k = make(&s, "poai:acme:sw", 1, Algorithm::Secp256k1);
    assert_eq!(k.origin, Origin::KmsWrapped);
    assert_eq!(
        make(&s, "poai:acme:sw", 2, Algorithm::P256).origin,
        Origin::KmsResident
    );
    let sig = s.sign(&k.r(), &[5; 32]).unwrap();
    assert!(verify(
        Algorithm::Secp256k1,
        k.public.as_ref().unwrap(),
        &[5; 32],
        &sig.0
    ));
}

/// A secp256k1 signature made in the (fake) HSM comes back DER; the provider returns the
/// 65-byte r‖s‖v with low S, and our verifier and recovery accept it (eth-account does too,
/// through the binary: scripts/test-gcp.sh).
#[test]
fn fake_gcp_secp256k1_signatures_are_normalised_and_verify() {
    let p = provider("secp");
    let k = make(&p, "poai:acme:k1", 1, Algorithm::Secp256k1);
    let public = k.public.clone().unwrap();
    assert_eq!(public.len(), 65);
    for i in 0..16u8 {
        let digest = [i; 32];
        let sig = p.sign(&k.r(), &digest).unwrap();
        assert_eq!(sig.0.len(), 65);
        assert!(hanzo_kms_crypto::verify::is_low_s(&sig.0[32..64]));
        assert!(matches!(sig.0[64], 27 | 28));
        assert!(verify(Algorithm::Secp256k1, &public, &digest, &sig.0));
        assert_eq!(
            hanzo_kms_crypto::verify::recover_secp256k1(&digest, &sig.0)
                .unwrap()
                .to_vec(),
            public
        );
    }
    let stats = shared().stats();
    assert!(stats["asymmetricSign"].as_u64().unwrap() >= 16, "{stats}");
}

#[test]
fn fake_gcp_wrong_credentials_are_a_config_error_naming_the_account() {
    let fake = shared();
    let mut c = section(fake);
    c.credentials = fake.wrong_credentials.clone();
    let e = open_with(&c, "t-wrong-", true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert_clear(
        &e,
        fake,
        &[
            "token endpoint",
            "iam.gserviceaccount.com",
            "Invalid JWT Signature",
        ],
    );
    // Not a key file at all.
    let bad = fake.dir().join("not-a-key.json");
    std::fs::write(
        &bad,
        r#"{"type": "authorized_user", "refresh_token": "1//secret-refresh"}"#,
    )
    .unwrap();
    c.credentials = bad.clone();
    let e = GcpKms::from_config(&c).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert_clear(&e, fake, &[bad.to_str().unwrap(), "service_account"]);
    assert!(!e.to_string().contains("secret-refresh"), "{e}");
    c.credentials = fake.dir().join("missing.json");
    let e = GcpKms::from_config(&c).unwrap_err();
    assert_clear(&e, fake, &["missing.json", "cannot read"]);
}

#[test]
fn fake_gcp_unreachable_endpoint_is_unavailable_naming_it() {
    let fake = shared();
    let mut c = section(fake);
    c.endpoint = Some("http://127.0.0.1:9".into());
    c.max_retries = Some(1);
    c.connect_timeout = Some(Duration(std::time::Duration::from_millis(500)));
    let t = std::time::Instant::now();
    let e = open_with(&c, "t-down-", true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_clear(&e, fake, &["127.0.0.1:9", "GetKeyRing", "2 attempts"]);
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    // Plain http to anything but loopback is refused before any call.
    c.endpoint = Some("http://kms.example.com".into());
    let e = GcpKms::from_config(&c).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
}

#[test]
fn fake_gcp_missing_key_ring_is_not_found_naming_it() {
    let fake = shared();
    let mut c = section(fake);
    c.key_ring = "no-such-ring".into();
    let e = open_with(&c, "t-ring-", true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_clear(&e, fake, &["keyRings/no-such-ring", "not found"]);
    // Without create, a missing root key is refused, naming it.
    let e = open_with(&section(fake), "t-never-made-", false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert_clear(&e, fake, &["root-kek", "another Google Cloud KMS account"]);
}

#[test]
fn fake_gcp_bad_ciphertexts_and_wrong_purposes_give_clear_errors() {
    let fake = shared();
    let p = provider("bad");
    let k1 = make(&p, "model:acme:one", 1, Algorithm::Aes256Gcm);
    let k2 = make(&p, "model:acme:two", 1, Algorithm::Aes256Gcm);
    // A data key wrapped under one key does not unwrap under another, nor with another AAD,
    // nor altered: authentication failed and nothing more.
    let (dek, w) = p.generate_data_key(&k1.r(), b"dek-aad").unwrap();
    assert_eq!(
        p.unwrap_data_key(&k1.r(), &w, b"dek-aad").unwrap().expose(),
        dek.expose()
    );
    for (key, wrapped, aad) in [
        (&k2, w.clone(), &b"dek-aad"[..]),
        (&k1, w.clone(), &b"dek-aaX"[..]),
        (
            &k1,
            {
                let mut x = w.clone();
                let n = x.len();
                x[n - 1] ^= 1;
                x
            },
            &b"dek-aad"[..],
        ),
    ] {
        let e = p.unwrap_data_key(&key.r(), &wrapped, aad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AuthenticationFailed, "{e}");
    }
    // A key of the wrong purpose: a signing key version used as a KEK, a KEK used to sign.
    let ec = make(&p, "poai:acme:ec", 1, Algorithm::P256);
    let as_aes = KeyRef {
        algorithm: Algorithm::Aes256Gcm,
        ..ec.r()
    };
    let e = p
        .wrap_data_key(&as_aes, &SecretKey32::from_bytes([1; 32]), b"a")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert_clear(&e, fake, &[&remote_id(&ec), "purpose ASYMMETRIC_SIGN"]);
    let kek = remote_id(&k1);
    let e = p
        .service()
        .sign(&kek, Algorithm::P256, &[0; 32])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert_clear(&e, fake, &[&kek, "ENCRYPT_DECRYPT"]);
    let e = p
        .service()
        .mac(&format!("{kek}/cryptoKeyVersions/1"), b"x")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert_clear(&e, fake, &[&kek, "MAC"]);
    // A key destroyed outside hanzo-kms: the error names the key version and its state.
    let gone = make(&p, "model:acme:gone", 1, Algorithm::Aes256Gcm);
    let id = remote_id(&gone);
    p.service().destroy(&id).unwrap();
    let e = p.generate_data_key(&gone.r(), b"a").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyState, "{e}");
    assert_clear(&e, fake, &[&id, "DESTROY_SCHEDULED"]);
    // Destroying again is fine (idempotent), and so is a key that never existed.
    p.destroy(&gone.r()).unwrap();
    p.service()
        .destroy(&format!("{}/cryptoKeys/never-made", p.service().key_ring()))
        .unwrap();
    // Over the service's limit (8 KiB plaintext + AAD for HSM keys): refused before the call.
    let e = p
        .service()
        .encrypt(&kek, &[0; 8000], &[0; 500])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert_clear(&e, fake, &[&kek, "8 KiB"]);
}

#[test]
fn fake_gcp_crc32c_mismatch_is_retried_then_refused() {
    let fake = FakeGcpKms::start();
    let p = provider_on(&fake, "crc");
    let k = make(&p, "model:acme:crc", 1, Algorithm::Aes256Gcm);
    let s = make(&p, "poai:acme:crc", 1, Algorithm::Secp256k1);
    // One corrupted answer per call: retried, and the result is right.
    let (dek, w) = p.generate_data_key(&k.r(), b"aad").unwrap();
    fake.inject("crc", "decrypt", 1);
    assert_eq!(
        p.unwrap_data_key(&k.r(), &w, b"aad").unwrap().expose(),
        dek.expose()
    );
    fake.inject("crc", "asymmetricSign", 1);
    let sig = p.sign(&s.r(), &[3; 32]).unwrap();
    assert!(verify(
        Algorithm::Secp256k1,
        s.public.as_ref().unwrap(),
        &[3; 32],
        &sig.0
    ));
    let mac = p.mac(b"token").unwrap();
    fake.inject("crc", "macSign", 1);
    assert_eq!(p.mac(b"token").unwrap(), mac);
    // Every answer corrupted: the call fails, naming the key and the check.
    for (method, call) in [
        (
            "encrypt",
            Box::new(|| p.generate_data_key(&k.r(), b"aad").map(|_| ())) as Box<dyn Fn() -> _>,
        ),
        (
            "decrypt",
            Box::new(|| p.unwrap_data_key(&k.r(), &w, b"aad").map(|_| ())),
        ),
        (
            "asymmetricSign",
            Box::new(|| p.sign(&s.r(), &[4; 32]).map(|_| ())),
        ),
        ("macSign", Box::new(|| p.mac(b"token").map(|_| ()))),
    ] {
        fake.inject("crc", method, 3);
        let e = call().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{method}: {e}");
        assert_clear(&e, &fake, &["integrity check", "Crc32c does not match"]);
    }
    let stats = fake.stats();
    assert!(stats["decrypt"].as_u64().unwrap() >= 5, "{stats}");
}

#[test]
fn fake_gcp_throttling_is_retried_with_backoff() {
    let fake = FakeGcpKms::start();
    let p = provider_on(&fake, "throttle");
    let k = make(&p, "model:acme:t", 1, Algorithm::Aes256Gcm);
    fake.inject("throttle", "encrypt", 2);
    let before = fake.stats()["encrypt"].as_u64().unwrap_or(0);
    p.generate_data_key(&k.r(), b"a").unwrap();
    assert_eq!(fake.stats()["encrypt"].as_u64().unwrap(), before + 3);
    fake.inject("unavailable", "encrypt", 9);
    let e = p.generate_data_key(&k.r(), b"a").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_eq!(e.retry_after(), None);
    assert_clear(
        &e,
        &fake,
        &["Encrypt", &remote_id(&k), "HTTP 503", "3 attempts"],
    );
}

#[test]
fn fake_gcp_throttled_past_the_retries_is_rate_limited() {
    let fake = FakeGcpKms::start();
    let p = provider_on(&fake, "quota");
    let k = make(&p, "model:acme:q", 1, Algorithm::Aes256Gcm);
    fake.inject("throttle", "encrypt", 9);
    let e = p.generate_data_key(&k.r(), b"a").unwrap_err();
    // RESOURCE_EXHAUSTED to the end: the caller is told to slow down (429 + Retry-After at the
    // server), not that the service is down.
    assert_eq!(e.kind(), ErrorKind::RateLimited, "{e}");
    assert!(
        e.retry_after()
            .is_some_and(|w| w >= std::time::Duration::from_secs(1))
    );
    assert_clear(
        &e,
        &fake,
        &[
            "Encrypt",
            &remote_id(&k),
            "HTTP 429",
            "3 attempts",
            "model:acme:q",
        ],
    );
}

#[test]
fn fake_gcp_access_token_is_cached_and_renewed() {
    // Tokens that live 6 s: renewed after half their life (3 s), never per call.
    let fake = FakeGcpKms::start_with(&["--token-ttl", "6"]);
    let p = provider_on(&fake, "tokens");
    let opened = std::time::Instant::now();
    let after_open = fake.stats()["token"].as_u64().unwrap();
    for _ in 0..10 {
        p.mac(b"x").unwrap();
    }
    assert!(
        opened.elapsed() < std::time::Duration::from_secs(3),
        "too slow to tell"
    );
    assert_eq!(fake.stats()["token"].as_u64().unwrap(), after_open);
    std::thread::sleep(std::time::Duration::from_millis(3200).saturating_sub(opened.elapsed()));
    p.mac(b"x").unwrap();
    assert_eq!(fake.stats()["token"].as_u64().unwrap(), after_open + 1);
    assert_eq!(RemoteKms::service(p.service()), "google-cloud-kms");
    assert_eq!(p.service().display_name(), "Google Cloud KMS");
    // The client's Debug shows no token.
    assert!(!format!("{:?}", p.service()).contains("ya29."));
}
