//! The PKCS#11 handle codec: a stored handle as the provider parses it before each use (resident
//! or sealed, with its scheme), sealed values, `CKA_EC_POINT`s, and the failover layer's
//! composite handles around them.
//!
//! Invariants: nothing panics; what parses re-encodes to the same bytes; `wrapping_of` (what
//! `keys show` prints) agrees with the parser; an EC point parses to a point of the right size
//! that parses again, bare, to itself.
#![no_main]

use hanzo_kms_core::{Algorithm, KeyHandle, KeyName, KeyRef, Separator};
use hanzo_kms_pkcs11::fuzzing::{
    ParsedHandle, encode_handle, parse_ec_point, parse_handle, parse_sealed,
};
use hanzo_kms_pkcs11::wrapping_of;
use hanzo_kms_service::failover::composite;
use libfuzzer_sys::fuzz_target;

fn handle(name: &KeyName, bytes: &[u8]) {
    let h = KeyHandle::new(bytes.to_vec());
    let key = KeyRef {
        name,
        version: 1,
        algorithm: Algorithm::Secp256k1,
        handle: &h,
    };
    match parse_handle(&key) {
        Ok(p) => {
            assert_eq!(encode_handle(&p).as_bytes(), bytes);
            let scheme = match &p {
                ParsedHandle::Wrapped { scheme, .. } => Some(*scheme),
                ParsedHandle::Resident { .. } => None,
            };
            assert_eq!(wrapping_of(&h), scheme);
        }
        Err(e) => {
            assert!(e.to_string().contains("data:acme:fuzz"));
            assert_eq!(wrapping_of(&h), None);
        }
    }
    if let Some((tag, scheme, root, body)) = parse_sealed(bytes) {
        assert_eq!(Some(scheme), wrapping_of(&h));
        let again = ParsedHandle::Wrapped {
            tag,
            scheme,
            root,
            body,
        };
        assert_eq!(encode_handle(&again).as_bytes(), bytes);
    }
}

fuzz_target!(|data: &[u8]| {
    let name = KeyName::parse("data:acme:fuzz", Separator::new(':').unwrap()).unwrap();
    handle(&name, data);
    if let Some((primary, backup)) = composite::split(data) {
        assert_eq!(composite::join(primary, backup), data);
        handle(&name, primary);
        handle(&name, backup);
    }
    for alg in [Algorithm::Secp256k1, Algorithm::P256, Algorithm::Ed25519] {
        if let Some(p) = parse_ec_point(alg, data) {
            let want = if alg == Algorithm::Ed25519 { 32 } else { 65 };
            assert_eq!(p.len(), want);
            assert_eq!(parse_ec_point(alg, &p).as_ref(), Some(&p));
            let mut der = vec![0x04, want as u8];
            der.extend_from_slice(&p);
            assert_eq!(parse_ec_point(alg, &der), Some(p));
        }
    }
});
