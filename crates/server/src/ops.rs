//! The few operations whose glue is more than one `Kms` call, written once for REST and gRPC.

use hanzo_kms_core::weights::Header;
use hanzo_kms_core::{Error, ErrorKind, KeyName, Result, SecretBytes, SecretKey32};
use hanzo_kms_service::data::DataCiphertext;
use hanzo_kms_service::{Kms, RequestCtx};
use serde::Serialize;

/// A key's primary public key.
#[derive(Debug, Serialize)]
pub struct PublicKeyInfo {
    pub key: String,
    pub version: u32,
    pub algorithm: String,
    pub public_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A model file's header and its data key, for a client that encrypts or decrypts the weights
/// itself.
pub struct ModelKey {
    pub header: Vec<u8>,
    pub dek: SecretKey32,
    pub key: String,
    pub version: u32,
}

/// 32 random bytes, returned in the clear and encrypted under `name` (the same `hkms:vN:` form
/// as `encrypt`, so [`unwrap_data_key`] is a decrypt that insists on 32 bytes).
pub async fn data_key(
    kms: &Kms,
    ctx: &RequestCtx,
    name: &KeyName,
    aad: &[u8],
) -> Result<(DataCiphertext, SecretKey32)> {
    let dek = hanzo_kms_crypto::rng::key32()?;
    let c = kms.encrypt(ctx, name, dek.expose(), aad).await?;
    Ok((c, dek))
}

/// Decrypt a data key; anything but 32 bytes is "authentication failed".
pub async fn unwrap_data_key(
    kms: &Kms,
    ctx: &RequestCtx,
    name: &KeyName,
    ciphertext: &str,
    aad: &[u8],
) -> Result<SecretBytes> {
    let p = kms.decrypt(ctx, name, ciphertext, aad).await?;
    if p.expose().len() != 32 {
        return Err(Error::authentication_failed());
    }
    Ok(p)
}

pub async fn public_key(kms: &Kms, ctx: &RequestCtx, name: &KeyName) -> Result<PublicKeyInfo> {
    let info = kms.show_key(ctx, name).await?;
    let v = info
        .versions
        .iter()
        .find(|v| v.version == info.primary_version)
        .filter(|v| v.public_key.is_some())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!("key {name} has no public key"),
            )
        })?;
    Ok(PublicKeyInfo {
        key: info.name.clone(),
        version: v.version,
        algorithm: info.algorithm.clone(),
        public_key: v.public_key.clone().unwrap_or_default(),
        address: v.address.clone(),
    })
}

/// A new model-file header under `name`'s primary version, with its data key.
pub async fn model_key(
    kms: &Kms,
    ctx: &RequestCtx,
    name: &KeyName,
    metadata: &[u8],
    segment_size: Option<u32>,
) -> Result<ModelKey> {
    let (header, dek) = kms
        .model_data_key(ctx, name, metadata, segment_size)
        .await?;
    Ok(ModelKey {
        header: header.encode()?,
        dek,
        key: header.key_name,
        version: header.key_version,
    })
}

/// The data key of an existing model-file header (`header` is its encoded form, optionally
/// followed by more of the file).
pub async fn model_unwrap(
    kms: &Kms,
    ctx: &RequestCtx,
    name: &KeyName,
    header: &[u8],
) -> Result<ModelKey> {
    let (parsed, len) = Header::parse(header)?;
    let dek = kms.model_unwrap_key(ctx, name, &parsed).await?;
    Ok(ModelKey {
        header: header[..len].to_vec(),
        dek,
        key: parsed.key_name,
        version: parsed.key_version,
    })
}
