//! One conformance suite, run against every provider (STYLE.md 12): the software provider, the
//! PKCS#11 provider on real SoftHSM2 tokens (one per vendor profile), the failover provider, and
//! every remote provider. A provider is done when it passes this.
//!
//! Each function takes `&dyn Provider` and asserts only what the provider contract
//! ([`hanzo_kms_core::Provider`]) promises: keys sign and verify under their public keys,
//! secp256k1 signatures are 65 bytes with low S and v ∈ {27, 28} and recover to the key, data keys
//! wrap and unwrap with their AAD and nothing else, old versions keep working after rotation,
//! destruction is idempotent, errors have the promised kinds and name the key, model files
//! encrypt under a provider-wrapped data key, and the MAC is keyed. The suite asserts with
//! `assert!` and panics on failure: it is test support, never linked into a deployed binary.
//!
//! A provider crate runs it with one line in a test file:
//!
//! ```ignore
//! hanzo_kms_conformance::conformance_tests!(|part: &str| my_provider(part));
//! ```
//!
//! The closure gets the part's name, for providers whose tests need distinct resources (a
//! SoftHSM2 token per test, say).

#![forbid(unsafe_code)]
// Test support: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hanzo_kms_core::{
    Algorithm, ErrorKind, KeyHandle, KeyName, KeyRef, KeySpec, Origin, Provider, Separator,
};
use hanzo_kms_crypto::verify::{is_low_s, recover_secp256k1, verify};
use sha2::Digest;

/// Every part of the suite, in order.
pub fn run_all(p: &dyn Provider) {
    generate_sign_verify(p);
    wrap_unwrap(p);
    rotation(p);
    destroy(p);
    errors(p);
    model_weights(p);
    mac(p);
}

/// One `#[test]` per part of the suite, each on a provider made afresh by `$make`, a closure that
/// takes the part's name and returns a provider.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            generate_sign_verify, wrap_unwrap, rotation, destroy, errors, model_weights, mac);
    };
    (@each $make:expr; $($part:ident),*) => {
        $(
            #[test]
            fn $part() {
                let p = ($make)(stringify!($part));
                $crate::$part(&p);
            }
        )*
    };
}

pub fn name(s: &str) -> KeyName {
    KeyName::parse(s, Separator::default()).unwrap()
}

pub struct Made {
    /// The key's name.
    pub name: KeyName,
    pub version: u32,
    pub algorithm: Algorithm,
    pub handle: KeyHandle,
    pub public: Option<Vec<u8>>,
    pub origin: Origin,
}

impl Made {
    /// The reference a provider call takes.
    pub fn r(&self) -> KeyRef<'_> {
        KeyRef {
            name: &self.name,
            version: self.version,
            algorithm: self.algorithm,
            handle: &self.handle,
        }
    }
}

/// Generate `key` version `version` with `algorithm`, or fail the test naming the provider.
pub fn make(p: &dyn Provider, key: &str, version: u32, algorithm: Algorithm) -> Made {
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

/// A message for `alg`: a 32-byte digest for secp256k1, bytes for the others.
pub fn message_for(alg: Algorithm, seed: u8) -> Vec<u8> {
    match alg {
        Algorithm::Secp256k1 => vec![seed; 32],
        _ => format!("message {seed}").into_bytes(),
    }
}

/// The signing algorithms the provider says it has.
pub fn signing_algorithms(p: &dyn Provider) -> Vec<Algorithm> {
    p.capabilities()
        .algorithms
        .iter()
        .copied()
        .filter(|a| *a != Algorithm::Aes256Gcm)
        .collect()
}

pub fn generate_sign_verify(p: &dyn Provider) {
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
            // A caller's SHA-256 digest (AWS KMS's MessageType DIGEST): P-256 signs it, and the
            // signature is the one over the message; every other algorithm refuses.
            let digest: [u8; 32] = sha2::Sha256::digest(&msg).into();
            match p.sign_p256_digest(&k.r(), &digest) {
                Ok(s) if alg == Algorithm::P256 => {
                    assert!(
                        verify(alg, &public, &msg, &s.0),
                        "{}: p256 digest signature does not verify over the message",
                        p.name()
                    );
                    assert!(hanzo_kms_crypto::verify::verify_p256_digest(
                        &public, &digest, &s.0
                    ));
                }
                Err(e) if alg == Algorithm::P256 => {
                    panic!("{}: p256 cannot sign a digest: {e}", p.name())
                }
                Ok(_) => panic!("{}: {alg} signed a digest as if p256", p.name()),
                Err(_) => {}
            }
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

pub fn wrap_unwrap(p: &dyn Provider) {
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

pub fn rotation(p: &dyn Provider) {
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

pub fn destroy(p: &dyn Provider) {
    for alg in [
        Algorithm::Aes256Gcm,
        Algorithm::Secp256k1,
        Algorithm::MlDsa65,
    ] {
        let k = make(p, "data:acme:gone", 1, alg);
        p.destroy(&k.r()).unwrap();
        p.destroy(&k.r()).unwrap(); // idempotent
        if p.capabilities().hardware
            && matches!(k.origin, Origin::HsmResident | Origin::KmsResident)
        {
            // The material is gone from the device: use fails and names the key.
            let e = match alg {
                Algorithm::Aes256Gcm => p.encrypt(&k.r(), b"x", b"").unwrap_err(),
                _ => p.sign(&k.r(), &[1u8; 32]).unwrap_err(),
            };
            assert!(e.to_string().contains("data:acme:gone"), "{e}");
        }
    }
}

pub fn errors(p: &dyn Provider) {
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

pub fn model_weights(p: &dyn Provider) {
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

pub fn mac(p: &dyn Provider) {
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
