//! The OpenBao Transit provider against a real OpenBao server (`bao server -dev`, started by
//! scripts/peers.sh, which exports HANZO_KMS_TEST_OPENBAO_ADDR and _TOKEN). Without them each
//! test prints "skipped: peer not running" and passes; scripts/test.sh always starts the peer.

use hanzo_kms_conformance::{make, name};
use hanzo_kms_core::config::{ConfigSecret, OpenBaoConfig, RemoteSigningKeys};
use hanzo_kms_core::{Algorithm, ErrorKind, Health, KeyRef, Origin, Provider};
use hanzo_kms_remote::{OpenBao, RemoteKms, RemoteProvider};

mod common;
use common::assert_clear;

fn peer() -> Option<(String, String)> {
    let addr = std::env::var("HANZO_KMS_TEST_OPENBAO_ADDR").ok()?;
    let token = std::env::var("HANZO_KMS_TEST_OPENBAO_TOKEN").ok()?;
    Some((addr, token))
}

fn section(addr: &str, token: &str) -> OpenBaoConfig {
    OpenBaoConfig {
        address: Some(addr.to_owned()),
        token: Some(ConfigSecret::new(token)),
        max_retries: Some(1),
        ..Default::default()
    }
}

fn open_with(
    c: &OpenBaoConfig,
    prefix: &str,
    create: bool,
) -> hanzo_kms_core::Result<RemoteProvider<OpenBao>> {
    common::open(
        OpenBao::from_config(c, &|_| None)?,
        &c.tuning(),
        prefix,
        create,
    )
}

fn provider(test: &str) -> Option<RemoteProvider<OpenBao>> {
    let Some((addr, token)) = peer() else {
        eprintln!(
            "skipped: peer not running (OpenBao; run scripts/peers.sh or scripts/test-remote.sh)"
        );
        return None;
    };
    Some(
        open_with(
            &section(&addr, &token),
            &format!("t{}.{test}.", std::process::id()),
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
fn openbao_keys_live_where_transit_can_hold_them() {
    let Some(p) = provider("origins") else { return };
    for (alg, want) in [
        (Algorithm::Aes256Gcm, Origin::KmsResident),
        (Algorithm::P256, Origin::KmsResident),
        (Algorithm::Ed25519, Origin::KmsResident),
        (Algorithm::Secp256k1, Origin::KmsWrapped),
        (Algorithm::MlDsa65, Origin::KmsWrapped),
    ] {
        assert_eq!(make(&p, "poai:acme:o", 1, alg).origin, want, "{alg}");
    }
    assert_eq!(p.health(), Health::Ok);
    // signing_keys: kms-wrapped keeps every signing key at software speed; AES stays remote.
    let (addr, token) = peer().unwrap();
    let mut c = section(&addr, &token);
    c.signing_keys = Some(RemoteSigningKeys::KmsWrapped);
    let w = open_with(&c, &format!("t{}.origins-w.", std::process::id()), true).unwrap();
    assert_eq!(
        make(&w, "poai:acme:w", 1, Algorithm::P256).origin,
        Origin::KmsWrapped
    );
    assert_eq!(
        make(&w, "model:acme:w", 1, Algorithm::Aes256Gcm).origin,
        Origin::KmsResident
    );
}

#[test]
fn openbao_wrong_token_is_a_config_error_that_does_not_echo_it() {
    let Some((addr, _)) = peer() else {
        eprintln!("skipped: peer not running (OpenBao)");
        return;
    };
    let e = open_with(&section(&addr, "s.wrong-token-value"), "t.wrong.", true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert_clear(
        &e,
        "OpenBao",
        &["permission denied", &addr, "root-kek"],
        &["s.wrong-token-value", "wrong-token-value"],
    );
}

#[test]
fn openbao_unreachable_server_is_unavailable_naming_it() {
    // A closed loopback port: no peer needed.
    let mut c = section("http://127.0.0.1:9", "x");
    c.max_retries = Some(1);
    c.connect_timeout = Some(hanzo_kms_core::config::Duration(
        std::time::Duration::from_millis(500),
    ));
    let t = std::time::Instant::now();
    let e = open_with(&c, "t.down.", true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_clear(
        &e,
        "OpenBao",
        &["127.0.0.1:9", "2 attempts", "cannot reach"],
        &[],
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn openbao_missing_root_is_refused_without_create() {
    let Some((addr, token)) = peer() else {
        eprintln!("skipped: peer not running (OpenBao)");
        return;
    };
    let e = open_with(
        &section(&addr, &token),
        &format!("t{}.never-made.", std::process::id()),
        false,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    assert_clear(&e, "OpenBao", &["root-kek", "does not exist"], &[&token]);
}

#[test]
fn openbao_bad_inputs_give_clear_errors() {
    let Some(p) = provider("bad") else { return };
    let k1 = make(&p, "model:acme:one", 1, Algorithm::Aes256Gcm);
    let k2 = make(&p, "model:acme:two", 1, Algorithm::Aes256Gcm);
    // A data key wrapped under one key does not unwrap under another, nor with another AAD.
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
    assert_clear(&e, "OpenBao", &["poai:acme:ec"], &[]);
    // A key deleted outside hanzo-kms: the error names the service and the key.
    let gone = make(&p, "model:acme:gone", 1, Algorithm::Aes256Gcm);
    let id = common::remote_id(&gone);
    p.service().destroy(&id).unwrap();
    let e = p.generate_data_key(&gone.r(), b"a").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_clear(
        &e,
        "OpenBao",
        &[&id, "does not exist", "model:acme:gone"],
        &[],
    );
    // Destroying it again is fine (idempotent).
    p.destroy(&gone.r()).unwrap();
}

#[test]
fn openbao_kms_wrapped_keys_are_cached_and_move_out_and_back() {
    let Some(p) = provider("move") else { return };
    let k = make(&p, "poai:acme:pq", 1, Algorithm::Secp256k1);
    let sig = p.sign(&k.r(), &[9; 32]).unwrap();
    assert!(hanzo_kms_crypto::verify::verify(
        Algorithm::Secp256k1,
        k.public.as_ref().unwrap(),
        &[9; 32],
        &sig.0
    ));
    // Export under a backup key and import as a new version: same public key, still kms-wrapped.
    let kek = hanzo_kms_core::SecretKey32::from_bytes([3; 32]);
    let sealed = p.export_wrapped(&k.r(), &kek, b"bundle").unwrap();
    let n = name("poai:acme:pq2");
    let g = p
        .import_wrapped(
            &hanzo_kms_core::KeySpec {
                name: &n,
                version: 1,
                algorithm: Algorithm::Secp256k1,
                label: "poai/acme/pq2/v1",
            },
            &kek,
            &sealed,
            b"bundle",
        )
        .unwrap();
    assert_eq!(g.origin, Origin::KmsWrapped);
    assert_eq!(g.public_key.unwrap().bytes, k.public.clone().unwrap());
    // A kms-resident key cannot leave the service, and says so.
    let aes = make(&p, "model:acme:stay", 1, Algorithm::Aes256Gcm);
    let e = p.export_wrapped(&aes.r(), &kek, b"bundle").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert_clear(
        &e,
        "OpenBao",
        &["model:acme:stay", "kms-resident", "cannot leave"],
        &[],
    );
}
