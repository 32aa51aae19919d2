//! The AES-256-GCM primitive every software path uses: 96-bit nonces and 128-bit tags only.
//!
//! This is the single place where Hanzo KMS seals and opens small values in process (sealed key
//! material, data ciphertexts of the software provider, backup bundles, hsm-wrapped keys), so
//! the Wycheproof vectors (tests/wycheproof_aes_gcm.rs) exercise exactly that code.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use hanzo_kms_core::{Error, Result, SecretBytes};

/// Nonce length in bytes.
pub const NONCE: usize = NONCE_LEN;
/// Tag length in bytes.
pub const TAG: usize = 16;

/// An AES-256-GCM key ready for use.
pub struct AesGcmKey(LessSafeKey);

impl AesGcmKey {
    /// A key from 32 bytes. Any other length is refused.
    pub fn new(key: &[u8]) -> Result<Self> {
        let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| {
            Error::invalid(format!("an AES-256 key is 32 bytes, not {}", key.len()))
        })?;
        Ok(Self(LessSafeKey::new(unbound)))
    }

    /// `ciphertext ‖ tag` of `plaintext` under `nonce` and `aad`.
    pub fn seal(&self, nonce: &[u8; NONCE], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plaintext.len() + TAG);
        out.extend_from_slice(plaintext);
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut out,
            )
            .map_err(|_| Error::internal("AES-GCM seal failed"))?;
        Ok(out)
    }

    /// Open `ciphertext ‖ tag`. Every failure is the one opaque `authentication failed`.
    pub fn open(&self, nonce: &[u8], aad: &[u8], ciphertext_and_tag: &[u8]) -> Result<SecretBytes> {
        let nonce: [u8; NONCE] = nonce
            .try_into()
            .map_err(|_| Error::authentication_failed())?;
        if ciphertext_and_tag.len() < TAG {
            return Err(Error::authentication_failed());
        }
        // SecretBytes zeroizes whatever it holds on drop, including a failed open's bytes.
        let mut buf = SecretBytes::new(ciphertext_and_tag.to_vec());
        let len = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                buf.expose_mut(),
            )
            .map_err(|_| Error::authentication_failed())?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let k = AesGcmKey::new(&[7u8; 32]).unwrap();
        let n = [1u8; 12];
        let ct = k.seal(&n, b"aad", b"hello").unwrap();
        assert_eq!(k.open(&n, b"aad", &ct).unwrap().expose(), b"hello");
        for i in 0..ct.len() * 8 {
            let mut bad = ct.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert_eq!(
                k.open(&n, b"aad", &bad).unwrap_err().to_string(),
                "authentication failed"
            );
        }
        assert!(k.open(&n, b"aaD", &ct).is_err());
        assert!(k.open(&[2u8; 12], b"aad", &ct).is_err());
        assert!(k.open(&n, b"aad", &ct[..10]).is_err());
        assert!(k.open(&n[..11], b"aad", &ct).is_err());
        assert!(AesGcmKey::new(&[0u8; 16]).is_err());
    }
}
