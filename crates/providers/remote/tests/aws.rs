//! The AWS KMS provider against LocalStack (localstack-core 4.13.1, started by
//! scripts/peers.sh, which exports HANZO_KMS_TEST_AWS_ENDPOINT). Without it each test prints
//! "skipped: peer not running" and passes; scripts/test.sh always starts the peer.
//! LocalStack accepts any credentials, so refused credentials cannot be tested here; missing
//! ones can.

use hanzo_kms_conformance::{make, name};
use hanzo_kms_core::config::{AwsKmsConfig, RemoteSigningKeys};
use hanzo_kms_core::{Algorithm, ErrorKind, Health, KeyRef, Origin, Provider};
use hanzo_kms_remote::{AwsKms, RemoteKms, RemoteProvider};

mod common;
use common::assert_clear;

/// The secret of [`test_env`]'s credentials, which no error may show.
const SECRET: &str = "test-secret-value";

fn peer() -> Option<String> {
    std::env::var("HANZO_KMS_TEST_AWS_ENDPOINT").ok()
}

fn section(endpoint: &str) -> AwsKmsConfig {
    AwsKmsConfig {
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.to_owned()),
        max_retries: Some(1),
        ..Default::default()
    }
}

fn test_env(n: &str) -> Option<String> {
    match n {
        "AWS_ACCESS_KEY_ID" => Some("test".into()),
        "AWS_SECRET_ACCESS_KEY" => Some("test-secret-value".into()),
        _ => None,
    }
}

fn open_with(
    c: &AwsKmsConfig,
    prefix: &str,
    create: bool,
) -> hanzo_kms_core::Result<RemoteProvider<AwsKms>> {
    common::open(
        AwsKms::from_config(c, &test_env)?,
        &c.tuning(),
        prefix,
        create,
    )
}

fn provider(test: &str) -> Option<RemoteProvider<AwsKms>> {
    let Some(endpoint) = peer() else {
        eprintln!(
            "skipped: peer not running (LocalStack; run scripts/peers.sh or scripts/test-remote.sh)"
        );
        return None;
    };
    Some(
        open_with(
            &section(&endpoint),
            &format!("t{}-{test}-", std::process::id()),
            true,
        )
        .unwrap(),
    )
}

macro_rules! conformance {
    ($($part:ident),*) => {
        mod conformance {
            $(
                #[test]
                fn $part() {
                    let Some(p) = super::provider(stringify!($part)) else { return };
                    hanzo_kms_conformance::$part(&p);
                }
            )*
        }
    };
}

conformance!(
    generate_sign_verify,
    wrap_unwrap,
    rotation,
    destroy,
    errors,
    model_weights,
    mac
);

#[test]
fn aws_keys_live_where_aws_kms_can_hold_them() {
    let Some(p) = provider("origins") else { return };
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
    let mut c = section(&peer().unwrap());
    c.signing_keys = Some(RemoteSigningKeys::KmsWrapped);
    let w = open_with(&c, &format!("t{}-origins-w-", std::process::id()), true).unwrap();
    assert_eq!(
        make(&w, "poai:acme:w", 1, Algorithm::Secp256k1).origin,
        Origin::KmsWrapped
    );
}

#[test]
fn aws_secp256k1_signatures_from_the_service_are_normalised_and_recover() {
    let Some(p) = provider("secp") else { return };
    let k = make(&p, "poai:acme:eth", 1, Algorithm::Secp256k1);
    assert_eq!(k.origin, Origin::KmsResident);
    let public = k.public.clone().unwrap();
    // About half of raw ECDSA signatures are high-S: 32 signatures cover both cases.
    for i in 0..32u8 {
        let digest = [i; 32];
        let sig = p.sign(&k.r(), &digest).unwrap().0;
        assert_eq!(sig.len(), 65);
        assert!(hanzo_kms_crypto::verify::is_low_s(&sig[32..64]));
        assert_eq!(
            hanzo_kms_crypto::verify::recover_secp256k1(&digest, &sig)
                .unwrap()
                .as_slice(),
            public.as_slice()
        );
    }
}

#[test]
fn aws_missing_credentials_are_a_config_error() {
    let e = AwsKms::from_config(&section("http://127.0.0.1:9"), &|n| match n {
        "AWS_SHARED_CREDENTIALS_FILE" => Some("/nonexistent/credentials".into()),
        "AWS_EC2_METADATA_DISABLED" => Some("true".into()),
        _ => None,
    })
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert_clear(
        &e,
        "AWS KMS",
        &[
            "no credentials",
            "/nonexistent/credentials",
            "no profile 'default'",
            "disabled",
        ],
        &[],
    );
    // No region anywhere: the config key to set is named.
    let e = AwsKms::from_config(&AwsKmsConfig::default(), &test_env).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert_clear(&e, "AWS KMS", &["kms.lux.aws-kms", "region"], &[SECRET]);
}

#[test]
fn aws_unreachable_endpoint_is_unavailable_naming_it_without_the_secret() {
    let mut c = section("http://127.0.0.1:9");
    c.connect_timeout = Some(hanzo_kms_core::config::Duration(
        std::time::Duration::from_millis(500),
    ));
    let e = open_with(&c, "t-down-", true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_clear(
        &e,
        "AWS KMS",
        &["127.0.0.1:9", "DescribeKey", "root-kek", "cannot reach"],
        &[SECRET],
    );
}

#[test]
fn aws_missing_root_is_refused_without_create() {
    let Some(endpoint) = peer() else {
        eprintln!("skipped: peer not running (LocalStack)");
        return;
    };
    let e = open_with(
        &section(&endpoint),
        &format!("t{}-never-", std::process::id()),
        false,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert_clear(&e, "AWS KMS", &["root-kek", "does not exist"], &[SECRET]);
}

#[test]
fn aws_bad_inputs_give_clear_errors() {
    let Some(p) = provider("bad") else { return };
    let k1 = make(&p, "model:acme:one", 1, Algorithm::Aes256Gcm);
    let k2 = make(&p, "model:acme:two", 1, Algorithm::Aes256Gcm);
    // Another key's ciphertext, a changed encryption context: authentication failed.
    let (_, w) = p.generate_data_key(&k1.r(), b"dek-aad").unwrap();
    assert_eq!(
        p.unwrap_data_key(&k2.r(), &w, b"dek-aad")
            .unwrap_err()
            .kind(),
        ErrorKind::AuthenticationFailed
    );
    assert_eq!(
        p.unwrap_data_key(&k1.r(), &w, b"dek-aaX")
            .unwrap_err()
            .kind(),
        ErrorKind::AuthenticationFailed
    );
    // A key of the wrong purpose: a signing key's id used as an AES key.
    let ec = make(&p, "poai:acme:ec", 1, Algorithm::P256);
    let as_aes = KeyRef {
        algorithm: Algorithm::Aes256Gcm,
        ..ec.r()
    };
    let e = p
        .wrap_data_key(
            &as_aes,
            &hanzo_kms_core::SecretKey32::from_bytes([1; 32]),
            b"a",
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert_clear(&e, "AWS KMS", &["poai:acme:ec"], &[SECRET]);
    // A key scheduled for deletion outside hanzo-kms: the error names the service and key.
    let gone = make(&p, "model:acme:gone", 1, Algorithm::Aes256Gcm);
    let id = common::remote_id(&gone);
    p.service().destroy(&id).unwrap();
    let e = p.generate_data_key(&gone.r(), b"a").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_clear(
        &e,
        "AWS KMS",
        &[&id, "model:acme:gone", "pending deletion"],
        &[SECRET],
    );
    p.destroy(&gone.r()).unwrap(); // idempotent
    // A key id that never existed.
    let nothing = hanzo_kms_core::KeyHandle::new({
        let id = b"00000000-0000-0000-0000-000000000000";
        [&[0x31, 0, id.len() as u8][..], id].concat()
    });
    let n = name("model:acme:none");
    let r = KeyRef {
        name: &n,
        version: 1,
        algorithm: Algorithm::Aes256Gcm,
        handle: &nothing,
    };
    let e = p.generate_data_key(&r, b"a").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_clear(
        &e,
        "AWS KMS",
        &["does not exist", "model:acme:none"],
        &[SECRET],
    );
}
