//! The conformance suite once per vendor profile, each on a SoftHSM2 token restricted to the
//! mechanisms that vendor documents (`Profile::documented`): no AES at all for Nitrokey, no GCM
//! for YubiHSM 2, ECDSA and ECDH only for Zymbit, no `CKD_NULL` ECDH for AWS CloudHSM (the
//! profile says so). Then the same suite with each asymmetric scheme forced on a plain token,
//! and the faults of the schemes: a device that fits none, values offered to another scheme or
//! root, truncated and off-curve ephemeral keys, RSA ciphertexts of the wrong length.

use hanzo_kms_conformance::{make, name};
use hanzo_kms_core::config::{Pkcs11Config, ProviderKind, WrappingScheme};
use hanzo_kms_core::{Algorithm, ErrorKind, KeyHandle, KeyRef, KeySpec, Origin, Provider};
use hanzo_kms_pkcs11::{Pkcs11Provider, Pkcs11Settings, wrapping_of};
use hanzo_kms_testkit::softhsm::Token;

fn token(test: &str) -> Token {
    let label = format!("{test}-{}", std::process::id());
    Token::create(&label[label.len().saturating_sub(32)..]).unwrap_or_else(|e| {
        panic!("SoftHSM2 is needed for this test (apt-get install softhsm2 opensc): {e}")
    })
}

fn open(vendor: ProviderKind, c: &Pkcs11Config) -> hanzo_kms_core::Result<Pkcs11Provider> {
    Pkcs11Provider::open(&Pkcs11Settings::from_config(vendor, Some(c))?, true)
}

/// A provider for `vendor` on a fresh token restricted to the vendor's mechanisms, with
/// `wrapping` forced if given.
fn vendor(
    tag: &str,
    vendor: ProviderKind,
    wrapping: Option<WrappingScheme>,
    test: &str,
) -> Pkcs11Provider {
    // Labels are unique per test: a token found by another test's label has another PIN.
    let t = token(&format!("{tag}-{}", &test[..test.len().min(12)]));
    let mut c = t.vendor_section(vendor);
    c.wrapping = wrapping;
    let p = open(vendor, &c).unwrap_or_else(|e| panic!("{vendor} on SoftHSM2: {e}"));
    if let Some(w) = wrapping {
        assert_eq!(p.wrapping(), w);
    }
    p
}

macro_rules! vendor_suite {
    ($module:ident, $tag:literal, $kind:expr, $wrapping:expr, $scheme:expr) => {
        mod $module {
            use super::*;

            hanzo_kms_conformance::conformance_tests!(|part: &str| vendor(
                $tag, $kind, $wrapping, part
            ));

            #[test]
            fn chooses_its_scheme_and_seals_with_it() {
                let p = vendor($tag, $kind, $wrapping, "scheme");
                assert_eq!(p.wrapping(), $scheme);
                let aes = make(&p, "model:acme:s", 1, Algorithm::Aes256Gcm);
                let pq = make(&p, "poai:acme:pq", 1, Algorithm::MlDsa65);
                assert_eq!(wrapping_of(&pq.handle), Some($scheme));
                if $scheme == WrappingScheme::AesGcm {
                    assert_eq!(aes.origin, Origin::HsmResident);
                } else {
                    assert_eq!(aes.origin, Origin::HsmWrapped);
                    assert_eq!(wrapping_of(&aes.handle), Some($scheme));
                }
            }
        }
    };
}

vendor_suite!(
    nitrokey,
    "nk",
    ProviderKind::Nitrokey,
    None,
    WrappingScheme::EcdhP256
);
vendor_suite!(
    yubihsm2,
    "yh",
    ProviderKind::Yubihsm2,
    None,
    WrappingScheme::EcdhP256
);
vendor_suite!(
    zymbit,
    "zy",
    ProviderKind::Zymbit,
    None,
    WrappingScheme::EcdhP256
);
vendor_suite!(
    aws_cloudhsm,
    "aws",
    ProviderKind::AwsCloudhsm,
    None,
    WrappingScheme::AesGcm
);
vendor_suite!(
    thales_luna,
    "luna",
    ProviderKind::ThalesLuna,
    None,
    WrappingScheme::AesGcm
);
vendor_suite!(
    fortanix,
    "ftx",
    ProviderKind::Fortanix,
    None,
    WrappingScheme::AesGcm
);
vendor_suite!(
    nitrokey_rsa,
    "nkrsa",
    ProviderKind::Nitrokey,
    Some(WrappingScheme::RsaOaep),
    WrappingScheme::RsaOaep
);
vendor_suite!(
    cloudhsm_without_gcm,
    "awsrsa",
    ProviderKind::AwsCloudhsm,
    Some(WrappingScheme::RsaOaep),
    WrappingScheme::RsaOaep
);

#[test]
fn nitrokey_resident_keys_and_no_secret_key_in_the_token() {
    let t = token("nk-objects");
    let p = open(
        ProviderKind::Nitrokey,
        &t.vendor_section(ProviderKind::Nitrokey),
    )
    .unwrap();
    assert_eq!(
        make(&p, "poai:acme:k", 1, Algorithm::Secp256k1).origin,
        Origin::HsmResident
    );
    assert_eq!(
        make(&p, "poai:acme:p", 1, Algorithm::P256).origin,
        Origin::HsmResident
    );
    // No Ed25519 on a Nitrokey: wrapped.
    assert_eq!(
        make(&p, "poai:acme:e", 1, Algorithm::Ed25519).origin,
        Origin::HsmWrapped
    );
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
        .expect("pkcs11-tool (OpenSC) is needed: apt-get install opensc");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        !listing.contains("Secret Key Object"),
        "no AES on a Nitrokey:\n{listing}"
    );
    assert!(listing.contains("hanzo-kms/root/ecdh"), "{listing}");
    assert!(listing.contains("hanzo-kms/root/mac-sealed"), "{listing}");
}

#[test]
fn a_device_that_fits_no_scheme_is_refused_with_what_it_lacks() {
    let t = token("no-scheme");
    let mut c = t.section();
    c.mechanisms = Some(hanzo_kms_core::config::MechanismFilter {
        allow: Some(vec!["CKM_EC_KEY_PAIR_GEN".into(), "CKM_ECDSA".into()]),
        deny: vec![],
    });
    let e = open(ProviderKind::Zymbit, &c).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    let msg = e.to_string();
    for want in [
        "CKM_AES_GCM",
        "CKM_ECDH1_DERIVE",
        "CKM_RSA_PKCS_OAEP",
        "zymbit",
    ] {
        assert!(msg.contains(want), "{want} in {msg}");
    }
    // A forced scheme the device cannot do names what it lacks.
    let mut c = t.vendor_section(ProviderKind::Nitrokey);
    c.wrapping = Some(WrappingScheme::AesGcm);
    let e = open(ProviderKind::Nitrokey, &c).unwrap_err();
    assert!(
        e.to_string().contains("aes-gcm needs CKM_AES_KEY_GEN"),
        "{e}"
    );
}

/// Sealed values under the wrong scheme, another root, or with broken device input do not
/// open: the stored value is reported corrupt (naming the key), with the cryptographic answer,
/// `authentication failed`, as its source; and the provider stays usable.
#[test]
fn sealed_values_offered_to_another_scheme_or_root_or_broken_do_not_open() {
    let mk =
        |w: WrappingScheme, test: &str| vendor("sealed", ProviderKind::Softhsm2, Some(w), test);
    let (ecdh, rsa, gcm) = (
        mk(WrappingScheme::EcdhP256, "x-ecdh"),
        mk(WrappingScheme::RsaOaep, "x-rsa"),
        mk(WrappingScheme::AesGcm, "x-gcm"),
    );
    let ecdh2 = mk(WrappingScheme::EcdhP256, "x-ecdh2");
    let n = name("poai:acme:x");
    let spec = KeySpec {
        name: &n,
        version: 1,
        algorithm: Algorithm::Ed25519,
        label: "x",
    };
    let sign = |p: &Pkcs11Provider, h: &KeyHandle| {
        p.sign(
            &KeyRef {
                name: &n,
                version: 1,
                algorithm: Algorithm::Ed25519,
                handle: h,
            },
            b"m",
        )
    };
    let mut handles = Vec::new();
    for p in [&ecdh, &rsa] {
        let h = make_wrapped(p, &spec);
        sign(p, &h).expect("its own value opens");
        handles.push(h);
    }
    let auth = |r: hanzo_kms_core::Result<hanzo_kms_core::Signature>, what: &str| {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{what}: {e}");
        assert!(
            e.to_string().contains("poai:acme:x version 1"),
            "{what}: {e}"
        );
        assert!(e.to_string().contains("does not open"), "{what}: {e}");
        let source = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<hanzo_kms_core::Error>())
            .map(|s| s.kind());
        assert_eq!(
            source,
            Some(ErrorKind::AuthenticationFailed),
            "{what}: {e:?}"
        );
    };
    // Another scheme, another device's root.
    auth(sign(&rsa, &handles[0]), "ecdh value on rsa");
    auth(sign(&ecdh, &handles[1]), "rsa value on ecdh");
    auth(sign(&ecdh2, &handles[0]), "ecdh value on another ecdh root");
    auth(sign(&gcm, &handles[0]), "ecdh value on gcm");
    // Truncated ephemeral key, a point not on the curve, a wrong RSA ciphertext length.
    let e = handles[0].as_bytes();
    auth(
        sign(&ecdh, &KeyHandle::new(e[..1 + 16 + 40].to_vec())),
        "truncated E",
    );
    let mut off = e.to_vec();
    off[1 + 16 + 64] ^= 0x01;
    auth(sign(&ecdh, &KeyHandle::new(off)), "E off the curve");
    let r = handles[1].as_bytes();
    let mut short = r[..1 + 16 + 200].to_vec();
    short.extend_from_slice(&r[1 + 16 + 384..]);
    auth(
        sign(&rsa, &KeyHandle::new(short)),
        "RSA ciphertext too short",
    );
    let mut flipped = r.to_vec();
    flipped[1 + 16 + 10] ^= 0x01;
    auth(
        sign(&rsa, &KeyHandle::new(flipped)),
        "RSA ciphertext altered",
    );
    // Still usable afterwards.
    sign(&ecdh, &handles[0]).unwrap();
    sign(&rsa, &handles[1]).unwrap();
}

fn make_wrapped(p: &Pkcs11Provider, spec: &KeySpec<'_>) -> KeyHandle {
    let g = p.generate(spec).unwrap();
    // Ed25519 is resident on SoftHSM2: import it wrapped instead, through the backup path.
    if g.origin == Origin::HsmWrapped {
        return g.handle;
    }
    let (material, _) = hanzo_kms_crypto::material::generate(spec.algorithm).unwrap();
    let kek = hanzo_kms_crypto::rng::key32().unwrap();
    let sealed = hanzo_kms_crypto::seal::backup_seal(&kek, b"aad", material.expose()).unwrap();
    let g = p.import_wrapped(spec, &kek, &sealed, b"aad").unwrap();
    assert_eq!(g.origin, Origin::HsmWrapped);
    g.handle
}

#[test]
fn each_token_without_hmac_keeps_its_own_sealed_mac_key() {
    // Two Nitrokey-like tokens: each has its own sealed MAC key, so their fingerprints differ
    // (a store opened against the wrong token is refused by its fingerprint).
    let (a, b) = (token("mac-a"), token("mac-b"));
    let pa = open(
        ProviderKind::Nitrokey,
        &a.vendor_section(ProviderKind::Nitrokey),
    )
    .unwrap();
    let pb = open(
        ProviderKind::Nitrokey,
        &b.vendor_section(ProviderKind::Nitrokey),
    )
    .unwrap();
    assert_ne!(
        pa.fingerprint(b"store").unwrap(),
        pb.fingerprint(b"store").unwrap()
    );
    assert_eq!(
        pa.fingerprint(b"store").unwrap(),
        pa.fingerprint(b"store").unwrap()
    );
    assert_ne!(pa.mac(b"x").unwrap(), pa.fingerprint(b"x").unwrap());
    // Reopening finds the same key.
    let again = open(
        ProviderKind::Nitrokey,
        &a.vendor_section(ProviderKind::Nitrokey),
    )
    .unwrap();
    assert_eq!(
        again.fingerprint(b"store").unwrap(),
        pa.fingerprint(b"store").unwrap()
    );
}
