//! Binding and wrapping key material: the AAD that ties sealed material to its key, the
//! backup seal every provider's export uses, and AES key wrap with padding (RFC 5649) for
//! material that PKCS#11 devices export.
//!
//! ```text
//! material_aad   = "hanzo-kms/sealed/v1" ‖ 0x00 ‖ key name ‖ 0x00 ‖ u32be(version) ‖ algorithm
//! backup_seal    = nonce(12) ‖ AES-256-GCM(kek, nonce, material, aad) ‖ tag(16)
//! ```

use hanzo_kms_core::{Algorithm, Error, KeyName, Result, SecretBytes, SecretKey32};
use zeroize::Zeroizing;

use crate::aead::{self, AesGcmKey, NONCE};
use crate::rng;

/// Seal key material for a backup bundle: `nonce ‖ AES-256-GCM(kek, aad, material) ‖ tag`
/// (docs/backup.md). Shared by every provider's [`Provider::export_wrapped`](hanzo_kms_core::Provider::export_wrapped).
pub fn backup_seal(kek: &SecretKey32, aad: &[u8], material: &[u8]) -> Result<Vec<u8>> {
    let k = AesGcmKey::new(kek.expose())?;
    let nonce = rng::nonce()?;
    let ct = k.seal(&nonce, aad, material)?;
    let mut out = Vec::with_capacity(NONCE + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Open what [`backup_seal`] made. Any failure is `authentication failed`.
pub fn backup_open(kek: &SecretKey32, aad: &[u8], sealed: &[u8]) -> Result<SecretBytes> {
    if sealed.len() < NONCE + aead::TAG {
        return Err(Error::authentication_failed());
    }
    AesGcmKey::new(kek.expose())?
        .open(&sealed[..NONCE], aad, &sealed[NONCE..])
        .map_err(|_| Error::authentication_failed())
}

/// Open a key that `Provider::export_wrapped` sealed into a backup, for `import_wrapped`: its
/// material (an AES key must be 32 bytes: [`ErrorKind::Corrupt`] otherwise) and its public key
/// (`None` for AES). Any failure to open is `authentication failed`.
///
/// [`ErrorKind::Corrupt`]: hanzo_kms_core::ErrorKind::Corrupt
pub fn backup_open_key(
    spec: &hanzo_kms_core::KeySpec<'_>,
    kek: &SecretKey32,
    aad: &[u8],
    sealed: &[u8],
) -> Result<(SecretBytes, Option<Vec<u8>>)> {
    let m = backup_open(kek, aad, sealed)?;
    if spec.algorithm == hanzo_kms_core::Algorithm::Aes256Gcm && m.len() != 32 {
        return Err(Error::new(
            hanzo_kms_core::ErrorKind::Corrupt,
            format!("the AES material of {} is not 32 bytes", spec.name),
        ));
    }
    let public = crate::material::public_key(spec.algorithm, &m)?;
    Ok((m, public))
}

/// Undo AES key wrap with padding (RFC 5649, what PKCS#11's CKM_AES_KEY_WRAP_PAD makes) under
/// an AES-256 key. Any failure is `authentication failed`.
pub fn kwp_unwrap(kek: &SecretKey32, wrapped: &[u8]) -> Result<SecretBytes> {
    use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrapPadded};
    let k = AesKek::new(&AES_256, kek.expose()).map_err(|_| Error::authentication_failed())?;
    let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
    let n = k
        .unwrap_with_padding(wrapped, &mut out)
        .map_err(|_| Error::authentication_failed())?
        .len();
    out.truncate(n);
    Ok(SecretBytes::new(std::mem::take(&mut *out)))
}

/// The AAD that binds sealed or wrapped material to its key name, version and algorithm.
pub fn material_aad(name: &KeyName, version: u32, alg: Algorithm) -> Vec<u8> {
    let name = name.to_string();
    let mut aad = Vec::with_capacity(64 + name.len());
    aad.extend_from_slice(b"hanzo-kms/sealed/v1\0");
    aad.extend_from_slice(name.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad.extend_from_slice(alg.as_str().as_bytes());
    aad
}
