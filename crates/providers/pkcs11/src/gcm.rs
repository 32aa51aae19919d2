//! AES-256-GCM in the device: model KEKs and the root KEK of the `aes-gcm` scheme.
//!
//! Three IV conventions exist. Most devices take the caller's 12-byte IV. AWS CloudHSM makes
//! its own and writes it back into `CK_GCM_PARAMS.pIv` (read back after every encryption).
//! Thales Luna with the FIPS policy on makes a 16-byte IV and returns it after the ciphertext
//! and tag (`fips_mode: true`); [`split_fips_output`] takes it off. The stored form is always
//! `iv ‖ ciphertext ‖ tag`, with a 16-byte IV in FIPS mode.

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use hanzo_kms_core::{Result, SecretBytes};
use hanzo_kms_crypto::rng;

use crate::handle::{IV_LEN, TAG_LEN};

/// The IV length Luna makes in FIPS mode.
pub(crate) const FIPS_IV_LEN: usize = 16;

/// The stored IV length.
pub(crate) fn iv_len(fips_mode: bool) -> usize {
    if fips_mode { FIPS_IV_LEN } else { IV_LEN }
}

pub(crate) fn random_iv() -> Result<[u8; IV_LEN]> {
    let mut iv = [0u8; IV_LEN];
    rng::fill(&mut iv)?;
    Ok(iv)
}

/// Encrypt in the device: `(iv, ciphertext ‖ tag)`, the IV as the device used it.
pub(crate) fn gcm_encrypt(
    s: &Session,
    key: ObjectHandle,
    iv: &[u8; IV_LEN],
    aad: &[u8],
    plaintext: &[u8],
    fips_mode: bool,
) -> std::result::Result<(Vec<u8>, Vec<u8>), CkError> {
    if fips_mode {
        // The HSM ignores the IV buffer's contents and appends the IV it made.
        let mut iv = [0u8; FIPS_IV_LEN];
        let params = GcmParams::new(&mut iv, aad, 128.into())?;
        let out = s.encrypt(&Mechanism::AesGcm(params), key, plaintext)?;
        return split_fips_output(out).ok_or(CkError::Pkcs11(
            cryptoki::error::RvError::EncryptedDataLenRange,
            cryptoki::context::Function::Encrypt,
        ));
    }
    let mut iv = *iv;
    let params = GcmParams::new(&mut iv, aad, 128.into())?;
    let ct = s.encrypt(&Mechanism::AesGcm(params), key, plaintext)?;
    // A device that generates its own IV (AWS CloudHSM) writes it back into the parameters.
    Ok((iv.to_vec(), ct))
}

pub(crate) fn gcm_decrypt(
    s: &Session,
    key: ObjectHandle,
    iv: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> std::result::Result<SecretBytes, CkError> {
    let mut iv = iv.to_vec();
    let params = GcmParams::new(&mut iv, aad, 128.into())?;
    s.decrypt(&Mechanism::AesGcm(params), key, ct)
        .map(SecretBytes::new)
}

/// Luna FIPS mode's output `ciphertext ‖ tag ‖ iv(16)` as `(iv, ciphertext ‖ tag)`; `None`
/// if it is too short to hold a tag and an IV.
pub(crate) fn split_fips_output(mut out: Vec<u8>) -> Option<(Vec<u8>, Vec<u8>)> {
    if out.len() < TAG_LEN + FIPS_IV_LEN {
        return None;
    }
    let iv = out.split_off(out.len() - FIPS_IV_LEN);
    Some((iv, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the vendor's description only (no Luna here): the last 16 bytes are the IV.
    #[test]
    fn luna_fips_output_is_split_into_iv_and_ciphertext() {
        let mut out = b"ciphertext".to_vec();
        out.extend([0xaa; TAG_LEN]);
        out.extend([0x11; FIPS_IV_LEN]);
        let (iv, ct) = split_fips_output(out).unwrap();
        assert_eq!(iv, [0x11; FIPS_IV_LEN]);
        assert_eq!(&ct[..10], b"ciphertext");
        assert_eq!(ct.len(), 10 + TAG_LEN);
        assert!(split_fips_output(vec![0; TAG_LEN + FIPS_IV_LEN - 1]).is_none());
        assert_eq!(iv_len(true), 16);
        assert_eq!(iv_len(false), 12);
    }
}
