//! Model-weight envelope encryption through the pipeline (HIP-005 EncryptModelWeights and
//! DecryptModelWeights).
//!
//! The service only makes and opens headers: it generates a per-file data key under the model's
//! key (`model:customer:name`) and wraps it, or unwraps it after checking the caller, the key
//! state and the version. The weights themselves are encrypted by `hanzo-kms-weights` in the
//! caller's process with the returned [`FileCipher`]; they never reach the provider.
//!
//! The model id in a file is `customer<sep>name` of its model key (`acme:gpt4`). Every unwrap is
//! audited as `model.decrypt` with key and version, allowed or denied.

use hanzo_kms_core::weights::Header;
use hanzo_kms_core::{Error, ErrorKind, KeyName, Purpose, Result, SecretKey32};
use hanzo_kms_weights::{Draft, FileCipher, dek_aad};

use crate::operation as op;
use crate::pipeline::{Call, Done, Target};
use crate::{Kms, RequestCtx};

/// The model id bound into files encrypted under `key`.
pub fn model_id_of(key: &KeyName) -> String {
    format!(
        "{}{}{}",
        key.customer(),
        key.separator().as_char(),
        key.name()
    )
}

fn require_model_key(key: &KeyName) -> Result<()> {
    if key.purpose() == Purpose::Model {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{key} is not a model key; model files use model:customer:name keys"
        )))
    }
}

/// A model file's header in its encoded form and its data key, for a client that encrypts or
/// decrypts the weights itself (the REST and gRPC answers).
pub struct ModelKey {
    /// The encoded header (`docs/format.md`).
    pub header: Vec<u8>,
    pub dek: SecretKey32,
    /// The key that wraps the data key, and its version.
    pub key: String,
    pub version: u32,
}

impl Kms {
    /// Start encrypting a model file: a fresh header whose data key is generated and wrapped by
    /// the provider under the primary version of `key`, and the cipher for its segments.
    pub async fn model_seal_header(
        &self,
        ctx: &RequestCtx,
        key: &KeyName,
        metadata: &[u8],
        segment_size: Option<u32>,
    ) -> Result<(Header, FileCipher)> {
        let (header, dek) = self
            .model_data_key(ctx, key, metadata, segment_size)
            .await?;
        let cipher = FileCipher::open(&header, &dek, None)?;
        Ok((header, cipher))
    }

    /// [`Kms::model_seal_header`] for a remote client that encrypts the weights itself: the
    /// header and its data key in the clear (which the server then forgets). The client builds
    /// the cipher with [`FileCipher::open`], which checks the key against the header's commitment.
    pub async fn model_data_key(
        &self,
        ctx: &RequestCtx,
        key: &KeyName,
        metadata: &[u8],
        segment_size: Option<u32>,
    ) -> Result<(Header, SecretKey32)> {
        self.run(ctx, &op::MODEL_ENCRYPT, Target::Key(key), |call| {
            Box::pin(async move {
                let kms = call.kms;
                let draft = Draft::new(&model_id_of(call.name()?), metadata, segment_size)?;
                let (version, kref) = call.version(None)?;
                let name = kref.name.to_string();
                let (dek, wrapped) =
                    kms.device(|p| p.generate_data_key(&kref, &draft.dek_aad(&name, version)))?;
                let (header, _) = draft.finish(&name, version, wrapped, &dek)?;
                Ok(Done::Ok((header, dek)))
            })
        })
        .await
    }

    /// [`Kms::model_data_key`] with the header encoded, as the APIs answer it.
    pub async fn model_key(
        &self,
        ctx: &RequestCtx,
        key: &KeyName,
        metadata: &[u8],
        segment_size: Option<u32>,
    ) -> Result<ModelKey> {
        let (header, dek) = self
            .model_data_key(ctx, key, metadata, segment_size)
            .await?;
        Ok(ModelKey {
            header: header.encode()?,
            dek,
            key: header.key_name,
            version: header.key_version,
        })
    }

    /// Start decrypting a model file that must belong to `key`: checks the caller, the key and
    /// the header's version, unwraps the data key, and checks the key commitment and model id.
    ///
    /// A file for another model, a tampered header, a wrong key, or a disabled, destroyed or
    /// missing key version all give the caller the one opaque "authentication failed"; the audit
    /// record keeps the real reason. A missing key or a denied caller are reported as such.
    pub async fn model_open_header(
        &self,
        ctx: &RequestCtx,
        key: &KeyName,
        header: &Header,
    ) -> Result<FileCipher> {
        let dek = self.model_unwrap_key(ctx, key, header).await?;
        FileCipher::open(header, &dek, Some(&model_id_of(key)))
    }

    /// [`Kms::model_open_header`] for a remote client: the checked data key itself.
    pub async fn model_unwrap_key(
        &self,
        ctx: &RequestCtx,
        key: &KeyName,
        header: &Header,
    ) -> Result<SecretKey32> {
        self.run(ctx, &op::MODEL_DECRYPT, Target::Key(key), |call| {
            Box::pin(async move { Ok(Done::Ok(call.kms.model_unwrap_in(call, header)?)) })
        })
        .await
    }

    /// [`Kms::model_unwrap_key`] for an encoded header (optionally followed by more of the file),
    /// as the APIs take it. A header that does not parse is refused and recorded like any other
    /// refusal of the operation.
    pub async fn model_unwrap(
        &self,
        ctx: &RequestCtx,
        key: &KeyName,
        header: &[u8],
    ) -> Result<ModelKey> {
        self.run(ctx, &op::MODEL_DECRYPT, Target::Key(key), |call| {
            Box::pin(async move {
                let (parsed, len) = Header::parse(header)?;
                let dek = call.kms.model_unwrap_in(call, &parsed)?;
                Ok(Done::Ok(ModelKey {
                    header: header[..len].to_vec(),
                    dek,
                    key: parsed.key_name,
                    version: parsed.key_version,
                }))
            })
        })
        .await
    }

    fn model_unwrap_in(&self, call: &mut Call<'_>, header: &Header) -> Result<SecretKey32> {
        call.record_version(Some(header.key_version));
        let key = call.name()?.clone();
        if header.key_name != key.to_string() || call.key()?.version(header.key_version).is_none() {
            return Err(Error::authentication_failed());
        }
        let (_, kref) = call.version(Some(header.key_version))?;
        let dek =
            self.device(|p| p.unwrap_data_key(&kref, &header.wrapped_dek, &dek_aad(header)))?;
        // The commitment and the model id are checked before the key is handed out.
        FileCipher::open(header, &dek, Some(&model_id_of(&key)))?;
        Ok(dek)
    }

    /// Rewrap a file's data key to the primary version of its key. Returns the new header, or
    /// `None` if the file is already on the primary version. Segments are untouched: the new
    /// header has the same file part and commitment.
    pub async fn model_rewrap_header(
        &self,
        ctx: &RequestCtx,
        header: &Header,
    ) -> Result<Option<Header>> {
        let Ok(key) = self.parse_name(&header.key_name) else {
            // Not a key name at all: nothing to authorise against; recorded under the name the
            // header carries.
            return self
                .run(
                    ctx,
                    &op::MODEL_REWRAP,
                    Target::None(Some(&header.key_name)),
                    |_| Box::pin(async { Err(Error::authentication_failed()) }),
                )
                .await;
        };
        let key = &key;
        self.run(ctx, &op::MODEL_REWRAP, Target::Key(key), |call| {
            Box::pin(async move {
                let kms = call.kms;
                call.record_version(Some(header.key_version));
                let stored = call.key()?;
                if stored.version(header.key_version).is_none() {
                    return Err(Error::authentication_failed());
                }
                let primary = stored.meta.primary_version;
                let dek = {
                    let (_, old) = call.version(Some(header.key_version))?;
                    kms.device(|p| p.unwrap_data_key(&old, &header.wrapped_dek, &dek_aad(header)))?
                };
                FileCipher::open(header, &dek, Some(&model_id_of(key)))?;
                if header.key_version == primary {
                    return Ok(Done::Ok(None));
                }
                let mut next = header.clone();
                next.key_version = primary;
                let (_, new) = call.version(None)?;
                next.wrapped_dek = kms.device(|p| p.wrap_data_key(&new, &dek, &dek_aad(&next)))?;
                Ok(Done::Ok(Some(next)))
            })
        })
        .await
    }
}

/// Map a model argument to its key: `customer:model` or a full `model:customer:model` name.
pub fn model_key(kms: &Kms, arg: &str) -> Result<KeyName> {
    model_key_with(kms.config().separator(), arg)
}

/// [`model_key`] with an explicit namespace separator (a client talking to a server).
pub fn model_key_with(sep: hanzo_kms_core::Separator, arg: &str) -> Result<KeyName> {
    if let Ok(k) = KeyName::parse(arg, sep) {
        require_model_key(&k)?;
        return Ok(k);
    }
    let c = sep.as_char();
    match arg.split_once(c) {
        Some((customer, model)) if !model.contains(c) => {
            KeyName::new(Purpose::Model, customer, model, sep)
        }
        _ => Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "--model takes customer{c}model or model{c}customer{c}model, not '{}'",
                arg.escape_default()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hanzo_kms_core::Separator;

    #[test]
    fn model_ids() {
        let k = KeyName::parse("model:acme:gpt4", Separator::default()).unwrap();
        assert_eq!(model_id_of(&k), "acme:gpt4");
        let k = KeyName::parse("model/acme/llama-3.1", Separator::new('/').unwrap()).unwrap();
        assert_eq!(model_id_of(&k), "acme/llama-3.1");
    }
}
