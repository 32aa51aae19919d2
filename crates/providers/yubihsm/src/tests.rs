//! The provider against the `yubihsm` crate's MockHsm (in process; feature `mockhsm`, which
//! this crate enables for its tests only and which refuses release builds).
//!
//! The MockHsm serves sessions and authentication, asymmetric key generation, ECDSA
//! (P-256, secp256k1), Ed25519, HMAC, object listing and deletion. It has **no Wrap Data**
//! (it panics on the command), so every provider built here seals through the TEST-ONLY
//! sealer (`Sealer::TestOnlyHmac`: a content key from HMAC in the mock), never through Wrap
//! Data; the Wrap Data format is tested against Yubico's documentation in `seal.rs`
//! (`wrap_data_documented_*`), and nothing here has run on a real YubiHSM 2.
//!
//! A real connector is used for the bad-connector tests (a closed port on loopback).

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use hanzo_kms_conformance::{make, name};
use hanzo_kms_core::config::{ConfigSecret, SigningKeys, YubiHsmNativeConfig};
use hanzo_kms_core::{Algorithm, ErrorKind, KeyRef, KeySpec, Origin, Provider};
use hanzo_kms_crypto::verify::{is_low_s, recover_secp256k1, verify};
use yubihsm::Connector;

use crate::provider::SealKind;
use crate::{YubiHsmProvider, YubiHsmSettings};

const MOCK_PASSWORD: &str = "password"; // the MockHsm's authentication key 1

fn settings(tweak: impl FnOnce(&mut YubiHsmNativeConfig)) -> YubiHsmSettings {
    let mut c = YubiHsmNativeConfig {
        password: Some(ConfigSecret::new(MOCK_PASSWORD)),
        ..Default::default()
    };
    tweak(&mut c);
    YubiHsmSettings::from_config(Some(&c)).unwrap()
}

/// A provider on `hsm` (a MockHsm connector; clones share one device), sealing through the
/// TEST-ONLY HMAC sealer.
fn on_mock(
    hsm: &Connector,
    s: &YubiHsmSettings,
    create: bool,
) -> hanzo_kms_core::Result<YubiHsmProvider> {
    YubiHsmProvider::open_on(hsm.clone(), s, create, SealKind::TestOnlyHmac)
}

fn mock_provider() -> YubiHsmProvider {
    on_mock(&Connector::mockhsm(), &settings(|_| {}), true).unwrap()
}

/// The shared conformance suite on a fresh MockHsm per part. Its AES keys, hsm-wrapped keys and
/// model files seal through the TEST-ONLY sealer (the MockHsm has no Wrap Data).
mod mockhsm_test_only_seal_conformance {
    hanzo_kms_conformance::conformance_tests!(|_part: &str| super::mock_provider());
}

#[test]
fn mockhsm_keys_have_the_origin_the_device_and_config_give() {
    let p = mock_provider();
    for (alg, origin) in [
        (Algorithm::Secp256k1, Origin::HsmResident),
        (Algorithm::P256, Origin::HsmResident),
        (Algorithm::Ed25519, Origin::HsmResident),
        (Algorithm::MlDsa65, Origin::HsmWrapped),
        (Algorithm::Aes256Gcm, Origin::HsmWrapped),
    ] {
        assert_eq!(make(&p, "poai:acme:o", 1, alg).origin, origin, "{alg}");
    }
    let wrapped = on_mock(
        &Connector::mockhsm(),
        &settings(|c| c.signing_keys = SigningKeys::HsmWrapped),
        true,
    )
    .unwrap();
    for alg in [Algorithm::Secp256k1, Algorithm::P256, Algorithm::Ed25519] {
        let k = make(&wrapped, "poai:acme:w", 1, alg);
        assert_eq!(k.origin, Origin::HsmWrapped, "{alg}");
        let m = hanzo_kms_conformance::message_for(alg, 3);
        let sig = wrapped.sign(&k.r(), &m).unwrap();
        assert!(verify(alg, k.public.as_ref().unwrap(), &m, &sig.0));
    }
}

#[test]
fn mockhsm_secp256k1_signatures_are_low_s_with_v_and_recover_to_the_key() {
    let p = mock_provider();
    let k = make(&p, "poai:acme:k1", 1, Algorithm::Secp256k1);
    let public = k.public.clone().unwrap();
    // The MockHsm signs with a random nonce and does not normalise S: about half its answers
    // are high-S, so 48 signatures exercise the normalisation.
    for i in 0..48u8 {
        let digest = [i.wrapping_mul(37).wrapping_add(1); 32];
        let sig = p.sign(&k.r(), &digest).unwrap().0;
        assert_eq!(sig.len(), 65);
        assert!(is_low_s(&sig[32..64]), "signature {i} is high-S");
        assert!(matches!(sig[64], 27 | 28));
        assert_eq!(recover_secp256k1(&digest, &sig).unwrap().as_slice(), public);
    }
}

/// An EIP-712 PoAI digest signed by a MockHsm-resident secp256k1 key, recovered by eth-account
/// (an independent implementation) to the key's address.
#[test]
fn mockhsm_poai_signature_recovers_with_eth_account() {
    use hanzo_kms_core::eip712::{B32, Domain, PoAIAttestation};
    let p = mock_provider();
    let k = make(&p, "poai:acme:gpt4", 1, Algorithm::Secp256k1);
    let address = hanzo_kms_core::eth::address(k.public.as_ref().unwrap()).unwrap();
    let attestation = PoAIAttestation {
        model_id: "acme:gpt4".into(),
        input_hash: B32([1; 32]),
        output_hash: B32([2; 32]),
        timestamp: 1_765_000_000,
        compute_time_ms: 5,
        node_id: "node-1".into(),
        nonce: Some(B32([9; 32])),
    };
    let digest = Domain::new(96369, None).digest(&attestation.struct_hash().unwrap());
    let mut recovered = Vec::new();
    for _ in 0..4 {
        let sig = p.sign(&k.r(), &digest).unwrap().0;
        recovered.push(eth_account_recover(&digest, &sig));
    }
    for r in recovered {
        assert_eq!(r.to_lowercase(), format!("0x{}", hex(&address)));
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn eth_account_recover(digest: &[u8; 32], sig: &[u8]) -> String {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../target/interop-venv/bin/python");
    assert!(
        python.exists(),
        "the eth-account venv is missing: run scripts/test.sh (it makes target/interop-venv)"
    );
    let out = Command::new(python)
        .args([
            "-c",
            "import sys; from eth_account import Account; \
             print(Account._recover_hash(bytes.fromhex(sys.argv[1]), signature=bytes.fromhex(sys.argv[2])))",
            &hex(digest),
            &hex(sig),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "eth-account: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn mockhsm_p256_digest_signing_and_ed25519_are_verified() {
    let p = mock_provider();
    let k = make(&p, "api:acme:p", 1, Algorithm::P256);
    let digest = [5u8; 32];
    let sig = p.sign_p256_digest(&k.r(), &digest).unwrap().0;
    assert!(hanzo_kms_crypto::verify::verify_p256_digest(
        k.public.as_ref().unwrap(),
        &digest,
        &sig
    ));
    let e = make(&p, "api:acme:e", 1, Algorithm::Ed25519);
    let sig = p.sign(&e.r(), b"a message").unwrap().0;
    assert_eq!(sig.len(), 64);
    assert!(verify(
        Algorithm::Ed25519,
        e.public.as_ref().unwrap(),
        b"a message",
        &sig
    ));
}

#[test]
fn mockhsm_reopen_finds_the_roots_and_a_new_device_is_refused() {
    let hsm = Connector::mockhsm();
    let s = settings(|_| {});
    let first = on_mock(&hsm, &s, true).unwrap();
    let aes = make(&first, "model:acme:m", 1, Algorithm::Aes256Gcm);
    let pq = make(&first, "poai:acme:pq", 1, Algorithm::MlDsa65);
    let fp = first.fingerprint(b"store").unwrap();
    let ct = first.encrypt(&aes.r(), b"hello", b"aad").unwrap();
    drop(first);

    // The same device, roots not made again: same fingerprint, the sealed keys open.
    let again = on_mock(&hsm, &s, false).unwrap();
    assert_eq!(again.fingerprint(b"store").unwrap(), fp);
    assert_eq!(
        again.decrypt(&aes.r(), &ct, b"aad").unwrap().expose(),
        b"hello"
    );
    let m = hanzo_kms_conformance::message_for(Algorithm::MlDsa65, 1);
    assert!(again.sign(&pq.r(), &m).is_ok());

    // A fresh device without `init`: refused, naming YubiHSM 2 and the missing root.
    let e = on_mock(&Connector::mockhsm(), &s, false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let msg = e.to_string();
    assert!(
        msg.contains("YubiHSM 2") && msg.contains("hanzo-kms/root/"),
        "{msg}"
    );

    // Another device (initialised): its fingerprint differs and our sealed keys do not open.
    let other = on_mock(&Connector::mockhsm(), &s, true).unwrap();
    assert_ne!(other.fingerprint(b"store").unwrap(), fp);
    let e = other.decrypt(&aes.r(), &ct, b"aad").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("model:acme:m"), "{e}");
}

#[test]
fn mockhsm_wrong_password_is_a_config_error_that_never_shows_it() {
    let hsm = Connector::mockhsm();
    let s = settings(|c| c.password = Some(ConfigSecret::new("not-the-Pa55word")));
    let e = on_mock(&hsm, &s, true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("YubiHSM 2")
            && msg.contains("kms.lux.yubihsm2-native.auth_key_id")
            && msg.contains("kms.lux.yubihsm2-native.password")
            && msg.contains("authentication key 1"),
        "{msg}"
    );
    assert!(!msg.contains("not-the-Pa55word"), "{msg}");
    assert!(!format!("{e:?}").contains("not-the-Pa55word"));
    assert!(!format!("{s:?}").contains("not-the-Pa55word"));
    // (An authentication key id the device lacks cannot be tried here: the MockHsm panics on
    // it. A real device answers with an authentication failure, which takes the same path.)
}

#[test]
fn a_connector_that_does_not_answer_is_unavailable_naming_it() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let s = settings(|c| {
        c.connector_url = Some(url.clone());
        c.timeout = Some(hanzo_kms_core::config::Duration(Duration::from_secs(2)));
    });
    let started = Instant::now();
    let e = YubiHsmProvider::open(&s, true).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("YubiHSM 2")
            && msg.contains(&url)
            && msg.contains("kms.lux.yubihsm2-native.connector_url")
            && msg.contains("does not answer"),
        "{msg}"
    );
    assert!(!msg.contains(MOCK_PASSWORD), "{msg}");
}

#[test]
fn an_http_server_that_is_not_a_connector_is_unavailable_naming_it() {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        // Answer every request of the first few connections with a 404, as a web server would.
        for stream in listener.incoming().take(4) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let url = format!("http://127.0.0.1:{port}");
    let s = settings(|c| c.connector_url = Some(url.clone()));
    let e = YubiHsmProvider::open(&s, true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("YubiHSM 2") && msg.contains(&url), "{msg}");
    drop(server);
}

#[test]
fn mockhsm_a_key_deleted_on_the_device_is_named_and_destroy_removes_it() {
    let hsm = Connector::mockhsm();
    let p = on_mock(&hsm, &settings(|_| {}), true).unwrap();
    let k = make(&p, "poai:acme:del", 1, Algorithm::Secp256k1);
    let crate::handle::Handle::Resident { id, .. } = crate::handle::Handle::parse(&k.r()).unwrap()
    else {
        panic!("a secp256k1 key is hsm-resident by default");
    };
    // Deleted outside hanzo-kms (another client on the same device).
    let outside = yubihsm::Client::open(
        hsm.clone(),
        yubihsm::Credentials::from_password(1, MOCK_PASSWORD.as_bytes()),
        true,
    )
    .unwrap();
    outside
        .delete_object(id, yubihsm::object::Type::AsymmetricKey)
        .unwrap();
    let e = p.sign(&k.r(), &[1u8; 32]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("poai:acme:del")
            && msg.contains(&format!("0x{id:04x}"))
            && msg.contains("YubiHSM 2"),
        "{msg}"
    );
    // Destroy is idempotent on a key already gone.
    p.destroy(&k.r()).unwrap();

    // Destroy removes a resident key from the device.
    let k2 = make(&p, "poai:acme:del2", 1, Algorithm::P256);
    let crate::handle::Handle::Resident { id: id2, .. } =
        crate::handle::Handle::parse(&k2.r()).unwrap()
    else {
        panic!("P-256 is hsm-resident by default");
    };
    p.destroy(&k2.r()).unwrap();
    let gone = outside.get_object_info(id2, yubihsm::object::Type::AsymmetricKey);
    assert!(gone.is_err_and(|e| crate::device::is_not_found(&e)));
}

#[test]
fn mockhsm_resident_keys_cannot_be_exported_and_imports_become_wrapped() {
    let p = mock_provider();
    let kek = hanzo_kms_crypto::rng::key32().unwrap();
    let k = make(&p, "poai:acme:x", 1, Algorithm::Secp256k1);
    let e = p.export_wrapped(&k.r(), &kek, b"aad").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("poai:acme:x"), "{e}");

    // An hsm-wrapped key leaves sealed for a backup, and comes back (into another device)
    // hsm-wrapped with the same public key.
    let pq = make(&p, "poai:acme:pq", 1, Algorithm::MlDsa65);
    let bundle = p.export_wrapped(&pq.r(), &kek, b"aad").unwrap();
    let other = mock_provider();
    let n = name("poai:acme:pq");
    let spec = KeySpec {
        name: &n,
        version: 1,
        algorithm: Algorithm::MlDsa65,
        label: "poai:acme:pq/v1",
    };
    let back = other.import_wrapped(&spec, &kek, &bundle, b"aad").unwrap();
    assert_eq!(back.origin, Origin::HsmWrapped);
    assert_eq!(back.public_key.unwrap().bytes, pq.public.clone().unwrap());
    let r = KeyRef {
        name: &n,
        version: 1,
        algorithm: Algorithm::MlDsa65,
        handle: &back.handle,
    };
    let m = hanzo_kms_conformance::message_for(Algorithm::MlDsa65, 2);
    let sig = other.sign(&r, &m).unwrap();
    assert!(verify(
        Algorithm::MlDsa65,
        pq.public.as_ref().unwrap(),
        &m,
        &sig.0
    ));
    assert!(
        other
            .import_wrapped(&spec, &kek, &bundle, b"other aad")
            .is_err()
    );
}

#[test]
fn mockhsm_health_and_debug() {
    let p = mock_provider();
    assert_eq!(p.health(), hanzo_kms_core::Health::Ok);
    let dbg = format!("{p:?}");
    assert!(
        dbg.contains("test-only-hmac") && !dbg.contains(MOCK_PASSWORD),
        "{dbg}"
    );
    assert_eq!(p.name(), "yubihsm2-native");
}
