//! Format conversion between what devices return and our encodings: `CKA_EC_POINT` (DER or
//! bare) to SEC1 or Ed25519 public keys, and raw ECDSA r‖s to our secp256k1 r‖s‖v (low S, v
//! recovered against the public key, DESIGN.md §2 point 3).

use hanzo_kms_core::{Algorithm, Error, ErrorKind, KeyRef};

/// DER `OBJECT IDENTIFIER`s for `CKA_EC_PARAMS`.
pub(crate) const OID_SECP256K1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
pub(crate) const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub(crate) const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// Parse `CKA_EC_POINT`: a DER OCTET STRING around the point (some modules return it bare).
pub(crate) fn parse_ec_point(alg: Algorithm, der: &[u8]) -> Option<Vec<u8>> {
    let want = if alg == Algorithm::Ed25519 { 32 } else { 65 };
    let inner = match der {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() && rest.len() == want => rest,
        bare if bare.len() == want => bare,
        _ => return None,
    };
    if alg != Algorithm::Ed25519 && inner[0] != 0x04 {
        return None;
    }
    Some(inner.to_vec())
}

/// Turn a device's raw secp256k1 r‖s into our r‖s‖v: S normalised to the low half, v found by
/// recovering with both ids against the expected public key. `None` if it does not verify.
pub fn to_eth_signature(raw: &[u8], digest: &[u8; 32], public: &[u8]) -> Option<Vec<u8>> {
    let mut sig = secp256k1::ecdsa::Signature::from_compact(raw).ok()?;
    sig.normalize_s();
    let rs = sig.serialize_compact();
    let msg = secp256k1::Message::from_digest(*digest);
    let with_v = |v: u8| {
        let mut out = rs.to_vec();
        out.push(v);
        out
    };
    // Recovery id 0 first: if it yields our key, v = 27 and the signature is verified.
    let rec0 = secp256k1::ecdsa::RecoverableSignature::from_compact(
        &rs,
        secp256k1::ecdsa::RecoveryId::Zero,
    )
    .ok()?;
    if rec0
        .recover_ecdsa(msg)
        .is_ok_and(|pk| pk.serialize_uncompressed().as_slice() == public)
    {
        return Some(with_v(27));
    }
    // Otherwise a valid signature recovers with id 1 (ids 2 and 3 need r ≥ n, probability
    // ~2^-128). A plain verification (cheaper than a second recovery) tells valid from not.
    let pk = secp256k1::PublicKey::from_slice(public).ok()?;
    sig.verify(msg, &pk).ok()?;
    Some(with_v(28))
}

pub(crate) fn bad_signature_len(token: &str, key: &KeyRef<'_>, len: usize) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "token '{token}' returned a {len}-byte {} signature for {}; expected 64",
            key.algorithm, key.name
        ),
    )
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn ec_point_parsing_accepts_der_and_bare_points_only_of_the_right_size() {
        let mut point = vec![0x04];
        point.extend([7u8; 64]);
        let mut der = vec![0x04, 65];
        der.extend(&point);
        assert_eq!(
            parse_ec_point(Algorithm::Secp256k1, &der),
            Some(point.clone())
        );
        assert_eq!(parse_ec_point(Algorithm::P256, &point), Some(point.clone()));
        assert_eq!(parse_ec_point(Algorithm::Secp256k1, &der[..60]), None);
        let ed = [9u8; 32];
        let mut ed_der = vec![0x04, 32];
        ed_der.extend(ed);
        assert_eq!(
            parse_ec_point(Algorithm::Ed25519, &ed_der),
            Some(ed.to_vec())
        );
        let mut compressed = vec![0x04, 33, 0x02];
        compressed.extend([1u8; 32]);
        assert_eq!(parse_ec_point(Algorithm::Secp256k1, &compressed), None);
    }

    #[test]
    fn high_s_device_signatures_are_normalised_and_get_the_right_v() {
        // Sign in software, then flip S to the high half, as a device may return it.
        let sk = secp256k1::SecretKey::from_secret_bytes([0x42; 32]).unwrap();
        let pk = secp256k1::PublicKey::from_secret_key(&sk).serialize_uncompressed();
        for i in 0u8..8 {
            let digest = Sha256::digest([i]).into();
            let sig = secp256k1::ecdsa::RecoverableSignature::sign_ecdsa_recoverable(
                secp256k1::Message::from_digest(digest),
                &sk,
            )
            .to_standard();
            let low: [u8; 64] = sig.serialize_compact();
            let n = secp256k1::constants::CURVE_ORDER;
            let mut high = low;
            // s' = n - s, big-endian subtraction.
            let mut borrow = 0i16;
            for j in (0..32).rev() {
                let d = i16::from(n[j]) - i16::from(low[32 + j]) - borrow;
                high[32 + j] = d.rem_euclid(256) as u8;
                borrow = i16::from(d < 0);
            }
            for raw in [low, high] {
                let out = to_eth_signature(&raw, &digest, &pk).unwrap();
                assert_eq!(&out[..64], &low[..]);
                assert!(hanzo_kms_crypto::verify::is_low_s(&out[32..64]));
                assert_eq!(
                    hanzo_kms_crypto::verify::recover_secp256k1(&digest, &out),
                    Some(pk)
                );
            }
            let other = secp256k1::PublicKey::from_secret_key(
                &secp256k1::SecretKey::from_secret_bytes([0x43; 32]).unwrap(),
            )
            .serialize_uncompressed();
            assert_eq!(to_eth_signature(&low, &digest, &other), None);
        }
    }
}
