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
use hanzo_kms_core::{Error, ErrorKind, KeyName, KeyRef, Purpose, Result, SecretKey32};
use hanzo_kms_weights::{Draft, FileCipher, dek_aad};

use crate::{Kms, RequestCtx, Role};

/// The model id bound into files encrypted under `key`.
pub fn model_id_of(key: &KeyName) -> String {
    format!(
        "{}{}{}",
        key.customer(),
        key.separator().as_char(),
        key.name()
    )
}

/// A model file's caller learns nothing about key state: a disabled, destroyed or scheduled
/// version is the same opaque "authentication failed" as tampering. The audit record, written
/// before this mapping, keeps the real reason.
fn opaque_key_state(e: Error) -> Error {
    match e.kind() {
        ErrorKind::KeyState => Error::authentication_failed(),
        _ => e,
    }
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
        let mut op = self.op(ctx, "model.encrypt", Some(key));
        let r = async {
            require_model_key(key)?;
            self.admit(ctx, &op, Role::Encrypt, Some(key))?;
            let stored = self.load(ctx, key).await?;
            let (version, handle) = Self::usable_version(&stored, None)?;
            op.version = Some(version);
            let kref = KeyRef {
                name: key,
                version,
                algorithm: stored.meta.algorithm,
                handle,
            };
            let draft = Draft::new(&model_id_of(key), metadata, segment_size)?;
            let name = key.to_string();
            let (dek, wrapped) =
                self.device(|p| p.generate_data_key(&kref, &draft.dek_aad(&name, version)))?;
            let (header, _) = draft.finish(&name, version, wrapped, &dek)?;
            self.audit_only(&op, "ok").await?;
            Ok((header, dek))
        }
        .await;
        self.close_op(&op, r).await
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
        let mut op = self.op(ctx, "model.decrypt", Some(key));
        op.version = Some(header.key_version);
        let r = async {
            require_model_key(key)?;
            self.admit(ctx, &op, Role::Decrypt, Some(key))?;
            let stored = self.load(ctx, key).await?;
            if header.key_name != key.to_string() || stored.version(header.key_version).is_none() {
                return Err(Error::authentication_failed());
            }
            let (version, handle) = Self::usable_version(&stored, Some(header.key_version))?;
            let kref = KeyRef {
                name: key,
                version,
                algorithm: stored.meta.algorithm,
                handle,
            };
            let dek =
                self.device(|p| p.unwrap_data_key(&kref, &header.wrapped_dek, &dek_aad(header)))?;
            // The commitment and the model id are checked before the key is handed out.
            FileCipher::open(header, &dek, Some(&model_id_of(key)))?;
            self.audit_only(&op, "ok").await?;
            Ok(dek)
        }
        .await;
        self.close_op(&op, r).await.map_err(opaque_key_state)
    }

    /// Rewrap a file's data key to the primary version of its key. Returns the new header, or
    /// `None` if the file is already on the primary version. Segments are untouched: the new
    /// header has the same file part and commitment.
    pub async fn model_rewrap_header(
        &self,
        ctx: &RequestCtx,
        header: &Header,
    ) -> Result<Option<Header>> {
        let key = self
            .parse_name(&header.key_name)
            .map_err(|_| Error::authentication_failed());
        let mut op = crate::Op {
            ctx,
            operation: "model.rewrap",
            key: key.as_ref().ok().map(|k| k.to_string()),
            version: Some(header.key_version),
        };
        let r = async {
            let key = key?;
            require_model_key(&key)?;
            self.admit(ctx, &op, Role::Decrypt, Some(&key))?;
            ctx.principal.authorize(Role::Encrypt, Some(&key))?;
            let stored = self.load(ctx, &key).await?;
            if stored.version(header.key_version).is_none() {
                return Err(Error::authentication_failed());
            }
            let (old, old_handle) = Self::usable_version(&stored, Some(header.key_version))?;
            let (new, new_handle) = Self::usable_version(&stored, None)?;
            if old == new {
                self.audit_only(&op, "ok").await?;
                return Ok(None);
            }
            let alg = stored.meta.algorithm;
            let old_ref = KeyRef {
                name: &key,
                version: old,
                algorithm: alg,
                handle: old_handle,
            };
            let dek = self
                .device(|p| p.unwrap_data_key(&old_ref, &header.wrapped_dek, &dek_aad(header)))?;
            FileCipher::open(header, &dek, Some(&model_id_of(&key)))?;
            let mut next = header.clone();
            next.key_version = new;
            let new_ref = KeyRef {
                name: &key,
                version: new,
                algorithm: alg,
                handle: new_handle,
            };
            next.wrapped_dek = self.device(|p| p.wrap_data_key(&new_ref, &dek, &dek_aad(&next)))?;
            op.version = Some(new);
            self.audit_only(&op, "ok").await?;
            Ok(Some(next))
        }
        .await;
        self.close_op(&op, r).await.map_err(opaque_key_state)
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
