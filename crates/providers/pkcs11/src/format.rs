//! Format conversion between what devices return and our encodings: `CKA_EC_POINT` (DER or
//! bare) to SEC1 or Ed25519 public keys, and raw ECDSA r‖s to our secp256k1 r‖s‖v (low S, v
//! recovered against the public key, DESIGN.md §2 point 3).

use hanzo_kms_core::{Algorithm, Error, ErrorKind, KeyRef};

/// DER `OBJECT IDENTIFIER`s for `CKA_EC_PARAMS`.
pub(crate) use hanzo_kms_crypto::ecdsa::{OID_P256, OID_SECP256K1};
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

pub use hanzo_kms_crypto::ecdsa::to_eth_signature;

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
}
