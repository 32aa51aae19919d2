//! Signature verification for every algorithm, from public key bytes alone.
//!
//! secp256k1 verification is strict: the signature must be 65 bytes r‖s‖v with low S and
//! v ∈ {27, 28}, and the key recovered with v must be the expected key.

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ED25519, ML_DSA_65, UnparsedPublicKey};
use hanzo_kms_core::Algorithm;

/// Half the secp256k1 group order, big-endian: S above this is "high".
const SECP256K1_HALF_N: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

/// Whether a 32-byte big-endian S is at most n/2.
pub fn is_low_s(s: &[u8]) -> bool {
    s.len() == 32 && s <= &SECP256K1_HALF_N[..]
}

/// Verify `signature` over `message` (for secp256k1: the 32-byte digest) with `public_key`.
pub fn verify(alg: Algorithm, public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    match alg {
        Algorithm::Aes256Gcm => false,
        Algorithm::Secp256k1 => {
            recover_secp256k1(message, signature).is_some_and(|pk| pk.as_slice() == public_key)
        }
        Algorithm::P256 => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_key)
            .verify(message, signature)
            .is_ok(),
        Algorithm::Ed25519 => UnparsedPublicKey::new(&ED25519, public_key)
            .verify(message, signature)
            .is_ok(),
        Algorithm::MlDsa65 => UnparsedPublicKey::new(&ML_DSA_65, public_key)
            .verify(message, signature)
            .is_ok(),
    }
}

/// Verify a P-256 signature (r‖s) over a caller's SHA-256 digest (see
/// [`crate::material::sign_p256_digest`]).
pub fn verify_p256_digest(public_key: &[u8], digest: &[u8; 32], signature: &[u8]) -> bool {
    let Ok(digest) =
        aws_lc_rs::digest::Digest::import_less_safe(digest, &aws_lc_rs::digest::SHA256)
    else {
        return false;
    };
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_key)
        .verify_digest(&digest, signature)
        .is_ok()
}

/// Recover the uncompressed public key from a 65-byte r‖s‖v signature over a 32-byte digest.
/// Refuses high S and any v other than 27 or 28.
pub fn recover_secp256k1(digest: &[u8], signature: &[u8]) -> Option<[u8; 65]> {
    let digest: [u8; 32] = digest.try_into().ok()?;
    if signature.len() != 65 || !is_low_s(&signature[32..64]) {
        return None;
    }
    let recid = match signature[64] {
        27 => secp256k1::ecdsa::RecoveryId::Zero,
        28 => secp256k1::ecdsa::RecoveryId::One,
        _ => return None,
    };
    let sig = secp256k1::ecdsa::RecoverableSignature::from_compact(&signature[..64], recid).ok()?;
    let pk = sig
        .recover_ecdsa(secp256k1::Message::from_digest(digest))
        .ok()?;
    Some(pk.serialize_uncompressed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_n_boundary() {
        assert!(is_low_s(&SECP256K1_HALF_N));
        let mut above = SECP256K1_HALF_N;
        above[31] += 1;
        assert!(!is_low_s(&above));
        assert!(!is_low_s(&[0u8; 31]));
    }
}
