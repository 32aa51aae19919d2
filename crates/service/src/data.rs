//! General data encryption (HIP-005 "Data Encryption": user data, training sets): small payloads
//! sealed directly under an AES-256-GCM key.
//!
//! Ciphertext text form: `hkms:v<version>:<base64url, no padding, of nonce(12) ‖ ciphertext ‖ tag(16)>`.
//! The key version is in the clear so that a rotated key still finds the right version.
//!
//! ```text
//! aad = "hanzo-kms/data/v1" ‖ 0x00 ‖ key name ‖ 0x00 ‖ u32be(version) ‖ user aad
//! ```
//!
//! Binding the key name and version means a ciphertext cannot be replayed under another key or
//! relabelled with another version. Large data (model weights) uses envelope encryption instead.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hanzo_kms_core::{Error, ErrorKind, KeyName, Result, SecretBytes, SecretKey32};

use crate::operation as op;
use crate::pipeline::{Call, Done, Target};
use crate::{Kms, RequestCtx};

/// The largest plaintext `encrypt` takes.
pub const MAX_DATA_LEN: usize = 4 << 20;

/// The prefix of the text form.
pub const PREFIX: &str = "hkms:v";

/// An encrypted payload and the key version that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataCiphertext {
    pub key: String,
    pub version: u32,
    /// `hkms:vN:…`
    pub text: String,
}

/// The AAD for a data ciphertext (see the module docs).
pub fn data_aad(name: &KeyName, version: u32, user_aad: &[u8]) -> Vec<u8> {
    let name = name.to_string();
    let mut aad = Vec::with_capacity(32 + name.len() + user_aad.len());
    aad.extend_from_slice(b"hanzo-kms/data/v1\0");
    aad.extend_from_slice(name.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad.extend_from_slice(user_aad);
    aad
}

/// Split `hkms:vN:payload` into the version and the raw bytes.
pub fn parse_ciphertext(text: &str) -> Result<(u32, Vec<u8>)> {
    let bad = || Error::invalid("not a Hanzo KMS ciphertext: expected hkms:v<version>:<base64url>");
    let rest = text.trim().strip_prefix(PREFIX).ok_or_else(bad)?;
    let (version, payload) = rest.split_once(':').ok_or_else(bad)?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let version: u32 = version.parse().map_err(|_| bad())?;
    if version == 0 {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| bad())?;
    Ok((version, bytes))
}

impl Kms {
    /// Encrypt a small payload under the primary version of an AES key.
    pub async fn encrypt(
        &self,
        ctx: &RequestCtx,
        name: &KeyName,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<DataCiphertext> {
        self.run(ctx, &op::DATA_ENCRYPT, Target::Key(name), |call| {
            Box::pin(async move { Ok(Done::Ok(call.kms.encrypt_in(call, plaintext, aad)?)) })
        })
        .await
    }

    /// A fresh 256-bit data key, in the clear and encrypted under `name` in the same
    /// `hkms:vN:` form as [`Kms::encrypt`] (so [`Kms::unwrap_data_key`] is a decryption that
    /// insists on 32 bytes). Audited as `data.encrypt`.
    pub async fn generate_data_key(
        &self,
        ctx: &RequestCtx,
        name: &KeyName,
        aad: &[u8],
    ) -> Result<(DataCiphertext, SecretKey32)> {
        self.run(ctx, &op::DATA_ENCRYPT, Target::Key(name), |call| {
            Box::pin(async move {
                let dek = hanzo_kms_crypto::rng::key32()?;
                let c = call.kms.encrypt_in(call, dek.expose(), aad)?;
                Ok(Done::Ok((c, dek)))
            })
        })
        .await
    }

    /// Decrypt a payload made by [`Kms::encrypt`] with the same key and AAD. Every
    /// cryptographic failure is the one opaque "authentication failed".
    pub async fn decrypt(
        &self,
        ctx: &RequestCtx,
        name: &KeyName,
        text: &str,
        aad: &[u8],
    ) -> Result<SecretBytes> {
        self.run(ctx, &op::DATA_DECRYPT, Target::Key(name), |call| {
            Box::pin(async move { Ok(Done::Ok(call.kms.decrypt_in(call, text, aad)?)) })
        })
        .await
    }

    /// Decrypt a data key made by [`Kms::generate_data_key`]: anything but 32 bytes is
    /// "authentication failed", decided before the request's record is written.
    pub async fn unwrap_data_key(
        &self,
        ctx: &RequestCtx,
        name: &KeyName,
        text: &str,
        aad: &[u8],
    ) -> Result<SecretKey32> {
        self.run(ctx, &op::DATA_DECRYPT, Target::Key(name), |call| {
            Box::pin(async move {
                let plain = call.kms.decrypt_in(call, text, aad)?;
                let key = SecretKey32::from_slice(plain.expose())
                    .map_err(|_| Error::authentication_failed())?;
                Ok(Done::Ok(key))
            })
        })
        .await
    }

    fn encrypt_in(
        &self,
        call: &mut Call<'_>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<DataCiphertext> {
        if plaintext.len() > MAX_DATA_LEN {
            return Err(Error::invalid(format!(
                "encrypt takes at most {MAX_DATA_LEN} bytes; got {}. Large files use envelope encryption",
                plaintext.len()
            )));
        }
        require_aes(&call.key()?.meta)?;
        let (version, kref) = call.version(None)?;
        let ct =
            self.device(|p| p.encrypt(&kref, plaintext, &data_aad(kref.name, version, aad)))?;
        Ok(DataCiphertext {
            key: kref.name.to_string(),
            version,
            text: format!("{PREFIX}{version}:{}", URL_SAFE_NO_PAD.encode(ct)),
        })
    }

    fn decrypt_in(&self, call: &mut Call<'_>, text: &str, aad: &[u8]) -> Result<SecretBytes> {
        let (version, bytes) = parse_ciphertext(text)?;
        call.record_version(Some(version));
        require_aes(&call.key()?.meta)?;
        let (version, kref) = call.version(Some(version))?;
        self.device(|p| p.decrypt(&kref, &bytes, &data_aad(kref.name, version, aad)))
    }
}

fn require_aes(meta: &hanzo_kms_core::KeyMeta) -> Result<()> {
    if meta.algorithm.is_symmetric() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "key {} is {}; encryption needs an aes-256-gcm key",
                meta.name, meta.algorithm
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_well_formed_ciphertexts() {
        assert_eq!(
            parse_ciphertext("hkms:v3:AAEC").unwrap(),
            (3, vec![0, 1, 2])
        );
        for bad in [
            "",
            "hkms:v:AAEC",
            "hkms:v0:AAEC",
            "hkms:vx:AAEC",
            "hkms:v1",
            "vault:v1:AAEC",
            "hkms:v1:***",
            "hkms:v+1:AA",
        ] {
            let e = parse_ciphertext(bad).unwrap_err();
            assert!(
                e.to_string().starts_with("not a Hanzo KMS ciphertext"),
                "{bad}: {e}"
            );
        }
    }
}
