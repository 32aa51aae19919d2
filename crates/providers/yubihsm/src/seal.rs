//! Sealing what the provider keeps outside the device (hsm-wrapped signing keys and AES keys)
//! with the device's own AEAD, **Wrap Data** (AES-CCM under a wrap key that never leaves it).
//!
//! Wrap Data takes no associated data, so it seals a fresh content key, never the material
//! itself, and the material is sealed in software under a key derived from that content key
//! with the binding (`aad`) and the purpose, as the `rsa-oaep` scheme of the PKCS#11 provider
//! does:
//!
//! ```text
//! wrap-data = 0x15 ‖ u16be(wrap key id) ‖ W(61) ‖ nonce(12) ‖ AES-256-GCM(k, nonce, material, aad) ‖ tag(16)
//!             cek = 32 random bytes
//!             W = Wrap Data(root wrap key, cek) = ccm nonce(13) ‖ AES-256-CCM(cek) ‖ mac(16)
//!             k = HKDF-SHA256[salt "hanzo-kms/wrap/yubihsm-wrap-data/v1", info purpose ‖ 0 ‖ aad](cek, 32)
//! ```
//!
//! What passes through host memory: cek (per value, zeroized after use) and the material; the
//! wrap key never does. Opening is one Unwrap Data in the device. A value sealed under another
//! scheme or another wrap key id, of the wrong length, or altered anywhere is refused as
//! `authentication failed` (the device's refusal of an altered W included).
//!
//! **Tested only against Yubico's documentation:** the `yubihsm` crate's MockHsm has no Wrap
//! Data, so [`Sealer::WrapData`] has not run against a device or the mock here. Its software
//! half and the W framing are tested with a stand-in that follows the documented command
//! (`wrap_data_documented_*` tests). The provider's own tests seal through
//! `Sealer::TestOnlyHmac`, which exists only in test builds (below).

use hanzo_kms_core::{Error, Result, SecretBytes};
use hanzo_kms_crypto::aead::{AesGcmKey, NONCE, TAG};
use hanzo_kms_crypto::{hkdf, rng};
use zeroize::Zeroizing;

use crate::device::Device;

/// First byte of a value sealed with Wrap Data.
pub(crate) const WRAP_DATA: u8 = 0x15;
/// Its name, for `keys show` and logs.
pub(crate) const WRAP_DATA_SCHEME: &str = "yubihsm-wrap-data";
/// Wrap Data's answer for a 32-byte content key: CCM nonce (13) ‖ ciphertext (32) ‖ MAC (16).
const WRAPPED_CEK: usize = 13 + 32 + 16;
const WRAP_DATA_SALT: &[u8] = b"hanzo-kms/wrap/yubihsm-wrap-data/v1";

/// How the device seals values.
pub(crate) enum Sealer {
    /// Wrap Data under the root wrap key `key` (object id). Only this exists outside tests.
    WrapData { key: u16 },
    /// TEST ONLY (compiled into test builds only): the content key is
    /// `HMAC-SHA256(device HMAC key, "hanzo-kms/test-only-seal/v1" ‖ 0 ‖ salt)`, computed in the
    /// MockHsm, which has HMAC but no Wrap Data. It lets the tests run every other path of the
    /// provider (AES keys, hsm-wrapped keys, model files) against the mock:
    /// `0xf5 ‖ u16be(hmac key id) ‖ salt(32) ‖ nonce(12) ‖ AES-256-GCM(k, …)`.
    #[cfg(test)]
    TestOnlyHmac { key: u16 },
}

#[cfg(test)]
const TEST_ONLY_HMAC: u8 = 0xf5;
#[cfg(test)]
const TEST_ONLY_SALT: &[u8] = b"hanzo-kms/test-only-seal/v1";

impl Sealer {
    /// The scheme's name, for `keys show` and logs.
    pub(crate) fn scheme(&self) -> &'static str {
        match self {
            Self::WrapData { .. } => WRAP_DATA_SCHEME,
            #[cfg(test)]
            Self::TestOnlyHmac { .. } => "test-only-hmac",
        }
    }

    pub(crate) fn seal(
        &self,
        device: &Device,
        purpose: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let mut cek = Zeroizing::new([0u8; 32]);
        match self {
            Self::WrapData { key } => {
                rng::fill(cek.as_mut())?;
                let w: Vec<u8> = device
                    .client()
                    .wrap_data(*key, cek.to_vec())
                    .map_err(|e| device.fail("sealing with Wrap Data", e))?
                    .into_vec();
                if w.len() != WRAPPED_CEK {
                    return Err(Error::new(
                        hanzo_kms_core::ErrorKind::Unavailable,
                        format!(
                            "YubiHSM 2 at {}: Wrap Data returned {} bytes for a 32-byte key, not {WRAPPED_CEK}",
                            device.connector_url(),
                            w.len()
                        ),
                    ));
                }
                seal_around(WRAP_DATA, *key, &w, &cek, purpose, aad, plaintext)
            }
            #[cfg(test)]
            Self::TestOnlyHmac { key } => {
                let salt = rng::bytes32()?;
                cek.copy_from_slice(&test_only_cek(device, *key, &salt)?);
                seal_around(TEST_ONLY_HMAC, *key, &salt, &cek, purpose, aad, plaintext)
            }
        }
    }

    /// Open a sealed value; anything that is not a value this sealer made is `authentication
    /// failed` (a connector that does not answer stays `unavailable`).
    pub(crate) fn open(
        &self,
        device: &Device,
        purpose: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<SecretBytes> {
        match self {
            Self::WrapData { key } => {
                let parts = split(sealed, WRAP_DATA, *key, WRAPPED_CEK)?;
                let message = yubihsm::wrap::Message::from_vec(parts.input.to_vec())
                    .map_err(|_| Error::authentication_failed())?;
                let cek = match device.client().unwrap_data(*key, message) {
                    Ok(c) => Zeroizing::new(c),
                    // The device refusing W (its CCM tag) is an altered value, nothing more.
                    Err(e) if crate::device::is_refusal(&e) => {
                        tracing::debug!("YubiHSM 2 Unwrap Data refused a sealed value: {e}");
                        return Err(Error::authentication_failed());
                    }
                    Err(e) => return Err(device.fail("opening with Unwrap Data", e)),
                };
                open_around(&cek, purpose, aad, &parts)
            }
            #[cfg(test)]
            Self::TestOnlyHmac { key } => {
                let parts = split(sealed, TEST_ONLY_HMAC, *key, 32)?;
                let cek = test_only_cek(device, *key, parts.input)?;
                open_around(&cek, purpose, aad, &parts)
            }
        }
    }
}

#[cfg(test)]
fn test_only_cek(device: &Device, key: u16, salt: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let msg = [TEST_ONLY_SALT, &[0], salt].concat();
    let tag = device
        .client()
        .sign_hmac(key, msg)
        .map_err(|e| device.fail("deriving a test-only sealing key", e))?;
    Ok(Zeroizing::new(tag.into_vec()))
}

/// A sealed value split into its parts (nothing secret).
pub(crate) struct Parts<'a> {
    /// What the device opens: W (Wrap Data) or the salt (test only).
    pub(crate) input: &'a [u8],
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

/// `tag ‖ u16be(key) ‖ input ‖ nonce ‖ AES-256-GCM(k, nonce, plaintext, aad)`.
pub(crate) fn seal_around(
    tag: u8,
    key: u16,
    input: &[u8],
    cek: &[u8; 32],
    purpose: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let k = derive(cek, purpose, aad)?;
    let nonce = rng::nonce()?;
    let ct = AesGcmKey::new(k.as_ref())?.seal(&nonce, aad, plaintext)?;
    let mut out = Vec::with_capacity(3 + input.len() + NONCE + ct.len());
    out.push(tag);
    out.extend_from_slice(&key.to_be_bytes());
    out.extend_from_slice(input);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Split a value sealed by scheme `tag` under device key `key`; anything else is
/// `authentication failed`.
pub(crate) fn split(sealed: &[u8], tag: u8, key: u16, input_len: usize) -> Result<Parts<'_>> {
    let [t, h, l, rest @ ..] = sealed else {
        return Err(Error::authentication_failed());
    };
    if *t != tag || u16::from_be_bytes([*h, *l]) != key || rest.len() < input_len + NONCE + TAG {
        return Err(Error::authentication_failed());
    }
    let (input, rest) = rest.split_at(input_len);
    let (nonce, ciphertext) = rest.split_at(NONCE);
    Ok(Parts {
        input,
        nonce,
        ciphertext,
    })
}

/// Open the software half with the content key the device returned.
pub(crate) fn open_around(
    cek: &[u8],
    purpose: &[u8],
    aad: &[u8],
    parts: &Parts<'_>,
) -> Result<SecretBytes> {
    if cek.len() != 32 {
        return Err(Error::authentication_failed());
    }
    let k = derive(cek, purpose, aad)?;
    AesGcmKey::new(k.as_ref())?.open(parts.nonce, aad, parts.ciphertext)
}

fn derive(cek: &[u8], purpose: &[u8], aad: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let mut k = Zeroizing::new([0u8; 32]);
    hkdf::sha256(WRAP_DATA_SALT, cek, &[purpose, &[0], aad], k.as_mut())?;
    Ok(k)
}

#[cfg(test)]
mod tests {
    use ccm::aead::{Aead, KeyInit};
    use hanzo_kms_core::ErrorKind;

    use super::*;

    /// Wrap Data as Yubico documents it (Commands/Wrap_Data): AES-CCM under the wrap key with a
    /// 13-byte nonce and a 16-byte MAC, the answer `nonce ‖ ciphertext ‖ mac`. A stand-in for
    /// the device, written from the documentation: NOT a device.
    type Ccm = ccm::Ccm<aes::Aes256, ccm::consts::U16, ccm::consts::U13>;

    fn wrap_data_documented(wrap_key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
        let nonce = [7u8; 13];
        let ct = Ccm::new_from_slice(wrap_key)
            .unwrap()
            .encrypt((&nonce).into(), plaintext)
            .unwrap();
        [nonce.as_slice(), &ct].concat()
    }

    fn unwrap_data_documented(wrap_key: &[u8; 32], w: &[u8]) -> Option<Vec<u8>> {
        let (nonce, ct) = w.split_at(13);
        let nonce: [u8; 13] = nonce.try_into().unwrap();
        Ccm::new_from_slice(wrap_key)
            .unwrap()
            .decrypt((&nonce).into(), ct)
            .ok()
    }

    #[test]
    fn wrap_data_documented_format_round_trips_and_every_tamper_fails() {
        let wrap_key = [0x42u8; 32];
        let cek = [0x11u8; 32];
        let w = wrap_data_documented(&wrap_key, &cek);
        assert_eq!(w.len(), WRAPPED_CEK, "Wrap Data of 32 bytes is 61 bytes");
        // The crate's message type splits it as the device's answer.
        let m = yubihsm::wrap::Message::from_vec(w.clone()).unwrap();
        assert_eq!(m.ciphertext.len(), 48);
        let sealed = seal_around(
            WRAP_DATA,
            0x1234,
            &w,
            &cek,
            b"key-material",
            b"aad",
            b"material",
        )
        .unwrap();
        let open = |s: &[u8], purpose: &[u8], aad: &[u8]| -> Result<SecretBytes> {
            let parts = split(s, WRAP_DATA, 0x1234, WRAPPED_CEK)?;
            let cek = unwrap_data_documented(&wrap_key, parts.input)
                .ok_or_else(Error::authentication_failed)?;
            open_around(&cek, purpose, aad, &parts)
        };
        assert_eq!(
            open(&sealed, b"key-material", b"aad").unwrap().expose(),
            b"material"
        );
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            let e = open(&t, b"key-material", b"aad").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::AuthenticationFailed, "byte {i}");
        }
        assert!(open(&sealed, b"mac-key", b"aad").is_err());
        assert!(open(&sealed, b"key-material", b"other").is_err());
        assert!(open(&sealed[..sealed.len() - 1], b"key-material", b"aad").is_err());
        assert!(open(&sealed[..60], b"key-material", b"aad").is_err());
        // Another wrap key id, or another scheme's first byte: refused before the device.
        assert!(split(&sealed, WRAP_DATA, 0x1235, WRAPPED_CEK).is_err());
        assert!(split(&sealed, 0xf5, 0x1234, WRAPPED_CEK).is_err());
    }
}
