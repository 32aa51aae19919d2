//! Data encryption and data keys.

use hanzo_kms_core::{Result, SecretBytes, SecretKey32};

use crate::call::{Decrypt, Encrypt, GenerateDataKey, UnwrapDataKey};
use crate::transport::{Answer, b64_field, key32, take_key32, text_field, u32_field};
use crate::{Client, DataKey};

impl Client {
    /// Encrypt a small plaintext (at most the server's body limit) under a `data:` or `model:`
    /// key; returns the `hkms:vN:…` ciphertext.
    pub async fn encrypt(&self, key: &str, plaintext: &[u8], aad: &[u8]) -> Result<String> {
        let v = self
            .call_json(&Encrypt {
                key,
                plaintext,
                aad,
            })
            .await?;
        text_field(&v, "ciphertext")
    }

    /// Decrypt what [`Client::encrypt`] returned, with the same `aad`; the plaintext is wiped on
    /// drop.
    pub async fn decrypt(&self, key: &str, ciphertext: &str, aad: &[u8]) -> Result<SecretBytes> {
        let call = Decrypt {
            key,
            ciphertext,
            aad,
        };
        Ok(match self.call(&call).await? {
            Answer::Grpc(mut m) => SecretBytes::new(std::mem::take(&mut m.plaintext)),
            Answer::Rest(v) => SecretBytes::new(b64_field(&v, "plaintext")?.to_vec()),
        })
    }

    /// A fresh 256-bit data key, in the clear and wrapped under `key`.
    pub async fn generate_data_key(&self, key: &str, aad: &[u8]) -> Result<DataKey> {
        match self.call(&GenerateDataKey { key, aad }).await? {
            Answer::Grpc(mut m) => Ok(DataKey {
                plaintext: take_key32(&mut m.plaintext)?,
                key: std::mem::take(&mut m.key),
                version: m.version,
                ciphertext: std::mem::take(&mut m.ciphertext),
            }),
            Answer::Rest(v) => Ok(DataKey {
                key: text_field(&v, "key")?,
                version: u32_field(&v, "version")?,
                plaintext: key32(&b64_field(&v, "plaintext")?)?,
                ciphertext: text_field(&v, "ciphertext")?,
            }),
        }
    }

    /// The plaintext of a [`DataKey::ciphertext`], given the same `aad` as
    /// [`Client::generate_data_key`].
    pub async fn unwrap_data_key(
        &self,
        key: &str,
        ciphertext: &str,
        aad: &[u8],
    ) -> Result<SecretKey32> {
        let call = UnwrapDataKey(Decrypt {
            key,
            ciphertext,
            aad,
        });
        match self.call(&call).await? {
            Answer::Grpc(mut m) => take_key32(&mut m.plaintext),
            Answer::Rest(v) => key32(&b64_field(&v, "plaintext")?),
        }
    }
}
