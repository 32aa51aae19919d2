//! The handle codec: what the store keeps for each key version (not secret).
//!
//! ```text
//! resident  = 0x11 ‖ CKA_ID(16) ‖ public key (SEC1 uncompressed, or 32-byte Ed25519; empty for AES)
//! aes-gcm   = 0x12 ‖ root id(16) ‖ iv(12; 16 for Luna in FIPS mode) ‖ AES-256-GCM(root KEK, iv, material, aad)
//! ecdh-p256 = 0x13 ‖ root id(16) ‖ E(65) ‖ nonce(12) ‖ AES-256-GCM(k, nonce, material, aad)
//! rsa-oaep  = 0x14 ‖ root id(16) ‖ C(modulus length) ‖ nonce(12) ‖ AES-256-GCM(k, nonce, material, aad)
//!             (0x15: the same with SHA-1 OAEP, where the device decrypts no SHA-256 OAEP)
//! ```
//!
//! The first byte records the scheme that sealed the value; the root id is SHA-256 of the
//! root's public key (ECDH, RSA) or of its fixed CKA_ID (AES-GCM), truncated to 16 bytes, so a
//! value sealed by another device's root is told apart before the device is asked. `aad` is
//! the sealing AAD of `hanzo_kms_crypto::seal` (name, version, algorithm); the ECDH and RSA
//! bodies are `hanzo_kms_crypto::hybrid`'s.

use hanzo_kms_core::config::WrappingScheme;
use hanzo_kms_core::{Error, ErrorKind, KeyHandle, KeyRef, Result};

pub(crate) const RESIDENT_V1: u8 = 0x11;
pub(crate) const ID_LEN: usize = 16;
pub(crate) const IV_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;

/// The tag byte of a value sealed with `scheme`.
pub(crate) fn tag(scheme: WrappingScheme) -> u8 {
    match scheme {
        WrappingScheme::AesGcm => 0x12,
        WrappingScheme::EcdhP256 => 0x13,
        WrappingScheme::RsaOaep => 0x14,
    }
}

/// `rsa-oaep` with SHA-1 OAEP, for devices that decrypt no other (SoftHSM2 2.6).
pub(crate) const RSA_OAEP_SHA1: u8 = 0x15;

fn scheme_of(tag: u8) -> Option<WrappingScheme> {
    match tag {
        0x12 => Some(WrappingScheme::AesGcm),
        0x13 => Some(WrappingScheme::EcdhP256),
        0x14 | RSA_OAEP_SHA1 => Some(WrappingScheme::RsaOaep),
        _ => None,
    }
}

/// The wrapping scheme that sealed a stored PKCS#11 handle (`None` for a resident key or a
/// handle that is not one of ours), for `keys show`.
pub fn wrapping_of(handle: &KeyHandle) -> Option<WrappingScheme> {
    let b = handle.as_bytes();
    b.first()
        .and_then(|t| scheme_of(*t))
        .filter(|_| b.len() > 1 + ID_LEN)
}

/// A sealed value.
pub(crate) struct Sealed<'a> {
    pub(crate) tag: u8,
    pub(crate) scheme: WrappingScheme,
    pub(crate) root: [u8; ID_LEN],
    pub(crate) body: &'a [u8],
}

impl<'a> Sealed<'a> {
    /// Parse sealed bytes (a handle, or the token's sealed MAC key).
    pub(crate) fn parse(b: &'a [u8]) -> Option<Self> {
        let scheme = scheme_of(*b.first()?)?;
        if b.len() <= 1 + ID_LEN {
            return None;
        }
        Some(Self {
            tag: b[0],
            scheme,
            root: b[1..1 + ID_LEN].try_into().ok()?,
            body: &b[1 + ID_LEN..],
        })
    }
}

/// A parsed handle.
pub(crate) enum Handle<'a> {
    Resident { id: [u8; ID_LEN], public: &'a [u8] },
    Wrapped(Sealed<'a>),
}

impl<'a> Handle<'a> {
    pub(crate) fn parse(key: &KeyRef<'a>) -> Result<Self> {
        let b = key.handle.as_bytes();
        let bad = || {
            Error::new(
                ErrorKind::Corrupt,
                format!(
                    "the stored handle of {} version {} is not a PKCS#11 handle (was it made by another provider?)",
                    key.name, key.version
                ),
            )
        };
        match b.first() {
            Some(&RESIDENT_V1) if b.len() > ID_LEN => {
                let id = b[1..1 + ID_LEN].try_into().map_err(|_| bad())?;
                Ok(Self::Resident {
                    id,
                    public: &b[1 + ID_LEN..],
                })
            }
            Some(_) => Sealed::parse(b).map(Self::Wrapped).ok_or_else(bad),
            None => Err(bad()),
        }
    }
}

/// `tag ‖ root id ‖ body`.
pub(crate) fn sealed_handle(tag: u8, root: &[u8; ID_LEN], body: &[u8]) -> KeyHandle {
    let mut blob = Vec::with_capacity(1 + ID_LEN + body.len());
    blob.push(tag);
    blob.extend_from_slice(root);
    blob.extend_from_slice(body);
    KeyHandle::new(blob)
}

pub(crate) fn resident_handle(id: &[u8; ID_LEN], public: &[u8]) -> KeyHandle {
    let mut b = Vec::with_capacity(1 + ID_LEN + public.len());
    b.push(RESIDENT_V1);
    b.extend_from_slice(id);
    b.extend_from_slice(public);
    KeyHandle::new(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_handles_round_trip_and_name_their_scheme() {
        for s in crate::scheme::ORDER {
            let h = sealed_handle(tag(s), &[9; ID_LEN], b"body");
            assert_eq!(wrapping_of(&h), Some(s));
            let p = Sealed::parse(h.as_bytes()).unwrap();
            assert_eq!((p.scheme, p.root, p.body), (s, [9; ID_LEN], &b"body"[..]));
            assert!(
                Sealed::parse(&h.as_bytes()[..1 + ID_LEN]).is_none(),
                "no body"
            );
        }
        assert_eq!(wrapping_of(&resident_handle(&[1; ID_LEN], b"pk")), None);
        let sha1 = sealed_handle(RSA_OAEP_SHA1, &[9; ID_LEN], b"body");
        assert_eq!(wrapping_of(&sha1), Some(WrappingScheme::RsaOaep));
        assert!(Sealed::parse(&[0x16; 40]).is_none());
    }
}
