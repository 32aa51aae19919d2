//! Sealing to a private key that stays in a device: the software halves of the `ecdh-p256` and
//! `rsa-oaep` wrapping schemes (docs/providers.md, "Wrapping schemes"). The caller asks the
//! device for the per-value secret when opening; everything else happens here.
//!
//! ```text
//! ecdh-p256:  E ‖ nonce(12) ‖ AES-256-GCM(k, nonce, plaintext, aad)
//!             E = ephemeral P-256 public key (65 bytes); z = x(e · R), R the device's key
//!             k = HKDF-SHA256[salt = "hanzo-kms/wrap/ecdh-p256/v1",
//!                             info = E ‖ R ‖ purpose ‖ 0x00 ‖ aad](z, 32)
//! rsa-oaep:   C ‖ nonce(12) ‖ AES-256-GCM(k, nonce, plaintext, aad)
//!             C = RSAES-OAEP(R, cek) with SHA-256 (SHA-1 where the device decrypts no other),
//!             cek 32 random bytes, |C| = the modulus length
//!             k = HKDF-SHA256[salt = "hanzo-kms/wrap/rsa-oaep/v1",
//!                             info = purpose ‖ 0x00 ‖ aad](cek, 32)
//! ```
//!
//! `aad` is the caller's binding of the value to its key (name, version, algorithm); `purpose`
//! says what the value is (key material, a MAC key), so one can never open as the other. What
//! passes through host memory on opening is z (ECDH) or cek (RSA), and the plaintext; the
//! device's private key never does.

use hanzo_kms_core::{Error, Result, SecretBytes};
use zeroize::Zeroizing;

use crate::aead::{AesGcmKey, NONCE, TAG};
use crate::{ecdh, hkdf, rng, rsa};

const ECDH_SALT: &[u8] = b"hanzo-kms/wrap/ecdh-p256/v1";
const RSA_SALT: &[u8] = b"hanzo-kms/wrap/rsa-oaep/v1";

/// A sealed value split into the part the device needs and the rest (nothing secret).
#[derive(Debug)]
pub struct Parts<'a> {
    /// The ephemeral public key (ECDH) or the RSA ciphertext of the content key.
    pub device_input: &'a [u8],
    pub nonce: &'a [u8],
    pub ciphertext: &'a [u8],
}

/// Seal `plaintext` to the device's P-256 public key `root`.
pub fn ecdh_seal(root: &[u8], purpose: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let (eph, z) = ecdh::ephemeral(root)?;
    let key = derive(ECDH_SALT, z.expose(), &[&eph, root, purpose, &[0], aad])?;
    seal_with(&key, eph, aad, plaintext)
}

/// Split an ECDH-sealed value, refusing (as authentication failed) a short value or an
/// ephemeral key that is not a point on the curve, before the device sees it.
pub fn ecdh_parse(sealed: &[u8]) -> Result<Parts<'_>> {
    if sealed.len() < ecdh::POINT_LEN + NONCE + TAG {
        return Err(Error::authentication_failed());
    }
    let (eph, rest) = sealed.split_at(ecdh::POINT_LEN);
    if !ecdh::is_valid_point(eph) {
        return Err(Error::authentication_failed());
    }
    let (nonce, ciphertext) = rest.split_at(NONCE);
    Ok(Parts {
        device_input: eph,
        nonce,
        ciphertext,
    })
}

/// Open an ECDH-sealed value with the shared secret the device derived from `parts.device_input`.
pub fn ecdh_open(
    z: &[u8],
    root: &[u8],
    purpose: &[u8],
    aad: &[u8],
    parts: &Parts<'_>,
) -> Result<SecretBytes> {
    let key = derive(
        ECDH_SALT,
        z,
        &[parts.device_input, root, purpose, &[0], aad],
    )?;
    AesGcmKey::new(key.as_ref())?.open(parts.nonce, aad, parts.ciphertext)
}

/// Seal `plaintext` to the device's RSA public key.
pub fn rsa_seal(
    root: &rsa::OaepKey,
    hash: rsa::OaepHash,
    purpose: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let mut cek = Zeroizing::new([0u8; 32]);
    rng::fill(cek.as_mut())?;
    let wrapped = root.encrypt(hash, cek.as_ref())?;
    let key = derive(RSA_SALT, cek.as_ref(), &[purpose, &[0], aad])?;
    seal_with(&key, wrapped, aad, plaintext)
}

/// Split an RSA-sealed value whose content key is encrypted under a `modulus_len`-byte key;
/// a value of the wrong length is refused as authentication failed.
pub fn rsa_parse(sealed: &[u8], modulus_len: usize) -> Result<Parts<'_>> {
    if sealed.len() < modulus_len + NONCE + TAG {
        return Err(Error::authentication_failed());
    }
    let (c, rest) = sealed.split_at(modulus_len);
    let (nonce, ciphertext) = rest.split_at(NONCE);
    Ok(Parts {
        device_input: c,
        nonce,
        ciphertext,
    })
}

/// Open an RSA-sealed value with the content key the device decrypted.
pub fn rsa_open(cek: &[u8], purpose: &[u8], aad: &[u8], parts: &Parts<'_>) -> Result<SecretBytes> {
    if cek.len() != 32 {
        return Err(Error::authentication_failed());
    }
    let key = derive(RSA_SALT, cek, &[purpose, &[0], aad])?;
    AesGcmKey::new(key.as_ref())?.open(parts.nonce, aad, parts.ciphertext)
}

fn derive(salt: &[u8], ikm: &[u8], info: &[&[u8]]) -> Result<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf::sha256(salt, ikm, info, key.as_mut())?;
    Ok(key)
}

fn seal_with(key: &[u8; 32], head: Vec<u8>, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let nonce = rng::nonce()?;
    let ct = AesGcmKey::new(key)?.seal(&nonce, aad, plaintext)?;
    let mut out = head;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rsa::{
        KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey,
    };

    use super::*;

    /// A device stand-in: a P-256 scalar in software.
    fn ecdh_device() -> ([u8; 32], Vec<u8>) {
        let mut d = [0u8; 32];
        d[31] = 7;
        d[0] = 0x3a;
        let public = ecdh::public_of(&d).unwrap();
        (d, public)
    }

    fn ecdh_open_as_device(
        d: &[u8],
        root: &[u8],
        purpose: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<SecretBytes> {
        let parts = ecdh_parse(sealed)?;
        let z = ecdh::agree_scalar(d, parts.device_input)?;
        ecdh_open(z.expose(), root, purpose, aad, &parts)
    }

    #[test]
    fn ecdh_round_trip_and_every_tamper_fails() {
        let (d, root) = ecdh_device();
        let sealed = ecdh_seal(&root, b"key-material", b"aad", b"the material").unwrap();
        assert_eq!(sealed.len(), 65 + 12 + 12 + 16);
        let opened = ecdh_open_as_device(&d, &root, b"key-material", b"aad", &sealed).unwrap();
        assert_eq!(opened.expose(), b"the material");
        // Two seals of the same value differ (fresh ephemeral key and nonce).
        assert_ne!(
            sealed,
            ecdh_seal(&root, b"key-material", b"aad", b"the material").unwrap()
        );
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            let e = ecdh_open_as_device(&d, &root, b"key-material", b"aad", &t);
            assert!(e.is_err(), "byte {i} flipped still opens");
        }
        for (purpose, aad) in [(&b"mac-key"[..], &b"aad"[..]), (b"key-material", b"other")] {
            let e = ecdh_open_as_device(&d, &root, purpose, aad, &sealed).unwrap_err();
            assert_eq!(e.kind(), hanzo_kms_core::ErrorKind::AuthenticationFailed);
        }
        let e = ecdh_parse(&sealed[..70]).unwrap_err();
        assert_eq!(e.kind(), hanzo_kms_core::ErrorKind::AuthenticationFailed);
    }

    #[test]
    fn ecdh_points_off_the_curve_are_refused_before_the_device() {
        let (_, root) = ecdh_device();
        let mut sealed = ecdh_seal(&root, b"p", b"a", b"x").unwrap();
        // y + 1: no longer on the curve.
        sealed[64] ^= 0x01;
        assert!(ecdh_parse(&sealed).is_err());
        let mut bad_root = root.clone();
        bad_root[64] ^= 0x01;
        assert!(ecdh_seal(&bad_root, b"p", b"a", b"x").is_err());
        assert!(!ecdh::is_valid_point(&root[..33]));
    }

    #[test]
    fn rsa_round_trip_wrong_length_and_tampering() {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let public = private.public_key();
        let spki =
            aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(&public)
                .unwrap();
        let key = rsa::OaepKey::from_der(spki.as_ref()).unwrap();
        let device = OaepPrivateDecryptingKey::new(private).unwrap();
        let open = |sealed: &[u8], purpose: &[u8]| -> Result<SecretBytes> {
            let parts = rsa_parse(sealed, key.ciphertext_len())?;
            let mut cek = vec![0u8; 256];
            let cek = device
                .decrypt(&OAEP_SHA256_MGF1SHA256, parts.device_input, &mut cek, None)
                .map_err(|_| Error::authentication_failed())?
                .to_vec();
            rsa_open(&cek, purpose, b"aad", &parts)
        };
        let sealed = rsa_seal(
            &key,
            rsa::OaepHash::Sha256,
            b"key-material",
            b"aad",
            b"material",
        )
        .unwrap();
        assert_eq!(
            open(&sealed, b"key-material").unwrap().expose(),
            b"material"
        );
        assert!(open(&sealed, b"mac-key").is_err());
        assert!(open(&sealed[..255], b"key-material").is_err());
        for i in (0..sealed.len()).step_by(7) {
            let mut t = sealed.clone();
            t[i] ^= 0x80;
            assert!(open(&t, b"key-material").is_err(), "byte {i}");
        }
    }
}
