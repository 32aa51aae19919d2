//! ECDSA signatures as devices and key services return them, turned into our encodings
//! (DESIGN.md §2 point 3): DER `SEQUENCE { r INTEGER, s INTEGER }` (AWS KMS, Google Cloud KMS,
//! Transit with `marshaling_algorithm=asn1`) or raw `r‖s` (PKCS#11) to fixed 64-byte `r‖s`,
//! and secp256k1 `r‖s` to our `r‖s‖v` with low S and v recovered against the public key.

/// Parse a DER ECDSA signature over a 256-bit curve into fixed `r‖s` (64 bytes). Strict:
/// definite short lengths, minimal positive INTEGERs of at most 32 significant bytes, nothing
/// after the sequence. `None` for anything else.
pub fn der_to_fixed(der: &[u8]) -> Option<[u8; 64]> {
    let body = match der {
        [0x30, len, rest @ ..] if usize::from(*len) == rest.len() && *len < 0x80 => rest,
        _ => return None,
    };
    let (r, rest) = der_integer(body)?;
    let (s, rest) = der_integer(rest)?;
    if !rest.is_empty() {
        return None;
    }
    let mut out = [0u8; 64];
    out[32 - r.len()..32].copy_from_slice(r);
    out[64 - s.len()..].copy_from_slice(s);
    Some(out)
}

/// One DER INTEGER: its magnitude without the sign byte, and what follows it.
fn der_integer(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let [0x02, len, rest @ ..] = b else {
        return None;
    };
    let len = usize::from(*len);
    if len == 0 || len > 33 || rest.len() < len {
        return None;
    }
    let (int, after) = rest.split_at(len);
    if int[0] & 0x80 != 0 {
        return None; // negative
    }
    let mag = if int[0] == 0 {
        // A leading zero is allowed only before a byte with its top bit set (minimal encoding).
        if int.len() == 1 || int[1] & 0x80 == 0 {
            return None;
        }
        &int[1..]
    } else {
        int
    };
    if mag.len() > 32 {
        return None;
    }
    Some((mag, after))
}

/// Turn a raw secp256k1 `r‖s` from a device or service into our `r‖s‖v`: S normalised to the
/// low half, v found by recovering with both ids against the expected public key (uncompressed
/// SEC1). `None` if it does not verify under that key.
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

/// The uncompressed SEC1 point of a DER `SubjectPublicKeyInfo` for an EC key on the curve whose
/// DER OID bytes are `curve_oid` (what AWS KMS `GetPublicKey` and Transit's PEM hold). `None`
/// if the structure is not exactly `SEQUENCE { SEQUENCE { id-ecPublicKey, curve }, BIT STRING
/// 0x00 ‖ 0x04 ‖ X ‖ Y }`.
pub fn spki_ec_point(der: &[u8], curve_oid: &[u8]) -> Option<[u8; 65]> {
    const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let [0x30, len, rest @ ..] = der else {
        return None;
    };
    if usize::from(*len) != rest.len() {
        return None;
    }
    let [0x30, alg_len, rest @ ..] = rest else {
        return None;
    };
    let alg_len = usize::from(*alg_len);
    if rest.len() < alg_len {
        return None;
    }
    let (alg, rest) = rest.split_at(alg_len);
    if alg != [EC_PUBLIC_KEY, curve_oid].concat().as_slice() {
        return None;
    }
    let [0x03, 66, 0x00, point @ ..] = rest else {
        return None;
    };
    let point: [u8; 65] = point.try_into().ok()?;
    (point[0] == 0x04).then_some(point)
}

/// DER `OBJECT IDENTIFIER`s of the curves, as they appear in `SubjectPublicKeyInfo`.
pub const OID_SECP256K1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
pub const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

#[cfg(test)]
mod tests {
    use super::*;

    fn der_of(r: &[u8], s: &[u8]) -> Vec<u8> {
        let int = |v: &[u8]| {
            let mut v: Vec<u8> = v.iter().copied().skip_while(|b| *b == 0).collect();
            if v.first().is_none_or(|b| b & 0x80 != 0) {
                v.insert(0, 0);
            }
            let mut out = vec![0x02, v.len() as u8];
            out.extend(v);
            out
        };
        let body = [int(r), int(s)].concat();
        let mut out = vec![0x30, body.len() as u8];
        out.extend(body);
        out
    }

    #[test]
    fn der_signatures_parse_to_fixed_and_bad_ones_are_refused() {
        let r = [0x80u8; 32]; // top bit set: needs the sign byte
        let mut s = [0u8; 32];
        s[31] = 5; // short: left-padded
        let der = der_of(&r, &s);
        let fixed = der_to_fixed(&der).unwrap();
        assert_eq!(&fixed[..32], &r);
        assert_eq!(&fixed[32..], &s);
        // Trailing bytes, a wrong outer length, a negative or non-minimal integer: refused.
        assert!(der_to_fixed(&[der.clone(), vec![0]].concat()).is_none());
        let mut bad = der.clone();
        bad[1] += 1;
        assert!(der_to_fixed(&bad).is_none());
        assert!(der_to_fixed(&[0x30, 6, 0x02, 1, 0x80, 0x02, 1, 1]).is_none());
        assert!(der_to_fixed(&[0x30, 7, 0x02, 2, 0x00, 0x01, 0x02, 1, 1]).is_none());
        assert!(der_to_fixed(&[]).is_none());
        // 33 significant bytes do not fit a 256-bit curve.
        assert!(der_to_fixed(&der_of(&[0x01; 33], &s)).is_none());
    }

    #[test]
    fn high_s_signatures_are_normalised_and_get_the_right_v() {
        // Sign in software, then flip S to the high half, as a device may return it.
        let sk = secp256k1::SecretKey::from_secret_bytes([0x42; 32]).unwrap();
        let pk = secp256k1::PublicKey::from_secret_key(&sk).serialize_uncompressed();
        for i in 0u8..8 {
            let digest: [u8; 32] = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &[i])
                .as_ref()
                .try_into()
                .unwrap();
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
                assert!(crate::verify::is_low_s(&out[32..64]));
                assert_eq!(crate::verify::recover_secp256k1(&digest, &out), Some(pk));
                // The same through DER, as a key service returns it.
                let via_der = der_to_fixed(&der_of(&raw[..32], &raw[32..])).unwrap();
                assert_eq!(via_der, raw);
            }
            let other = secp256k1::PublicKey::from_secret_key(
                &secp256k1::SecretKey::from_secret_bytes([0x43; 32]).unwrap(),
            )
            .serialize_uncompressed();
            assert_eq!(to_eth_signature(&low, &digest, &other), None);
        }
    }

    #[test]
    fn spki_points_are_read_for_the_named_curve_only() {
        // The SubjectPublicKeyInfo of a P-256 key as Transit printed it (PEM body).
        let der = base64_decode(
            "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE7ggy9DH+kmOMRMDS5N7vCtUFeNHcf+YYWdWrXqo54UIjWGiUzr4ttSOD9ejnVcjACjd9kubKhMP7GX+ELe+MAg==",
        );
        let point = spki_ec_point(&der, OID_P256).unwrap();
        assert_eq!(point[0], 0x04);
        assert_eq!(point[1], 0xee);
        assert!(spki_ec_point(&der, OID_SECP256K1).is_none());
        assert!(spki_ec_point(&der[..der.len() - 1], OID_P256).is_none());
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in s.bytes().filter(|c| *c != b'=') {
            acc = (acc << 6) | A.iter().position(|a| *a == c).unwrap() as u32;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }
}
