//! Sealed values: hsm-wrapped key material (signing keys generated or imported in software,
//! and AES keys on a token whose scheme is not `aes-gcm`) and the MAC key of a token without
//! HMAC, sealed under the token's root with its wrapping scheme (see `scheme`), and opened by
//! the token into zeroizing memory for each use or from the unwrapped-key cache.

use cryptoki::error::{Error as CkError, RvError};
use hanzo_kms_core::{
    Algorithm, Error, ErrorKind, GeneratedKey, KeyHandle, KeyRef, KeySpec, Origin, PublicKey,
    Result, SecretBytes,
};
use hanzo_kms_crypto::hybrid;

use crate::Pkcs11Provider;
use crate::error::is_bad_tag;
use crate::gcm::{gcm_decrypt, gcm_encrypt, random_iv};
use crate::handle::{Sealed, sealed_handle};
use crate::objects::logged_in;
use crate::pool;
use crate::scheme::{RootPublic, ecdh_derive, root_class, root_object_id, rsa_decrypt};

/// What a sealed value is, bound into its key derivation (ECDH, RSA) so one kind can never be
/// opened as another.
pub(crate) const KEY_MATERIAL: &[u8] = b"key-material";
pub(crate) const MAC_KEY: &[u8] = b"mac-key";

impl Pkcs11Provider {
    /// Seal `plaintext` under this token's root: the bytes of a sealed handle.
    pub(crate) fn seal(&self, purpose: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<KeyHandle> {
        let body = match &self.root {
            RootPublic::None => {
                let iv = random_iv()?;
                let (iv, ct) = self
                    .pool
                    .run(|s| {
                        let root =
                            self.root(s, root_class(self.scheme), root_object_id(self.scheme))?;
                        gcm_encrypt(s, root, &iv, aad, plaintext, self.fips_mode)
                    })
                    .map_err(|e| self.call_error(e, "sealing under the root KEK".into()))?;
                [iv.as_slice(), &ct].concat()
            }
            RootPublic::Ecdh(point) => hybrid::ecdh_seal(point, purpose, aad, plaintext)?,
            RootPublic::Rsa(key, hash) => hybrid::rsa_seal(key, *hash, purpose, aad, plaintext)?,
        };
        Ok(sealed_handle(self.root.tag(), &self.root_id, &body))
    }

    /// Open a sealed value. A value sealed under another scheme or another device's root,
    /// or one that does not open, is `authentication failed` (and logged with the reason).
    pub(crate) fn unseal(
        &self,
        sealed: &Sealed<'_>,
        purpose: &[u8],
        aad: &[u8],
        what: &str,
    ) -> Result<SecretBytes> {
        if sealed.tag != self.root.tag() || sealed.root != self.root_id {
            tracing::warn!(
                token = %self.token_label,
                sealed_with = %sealed.scheme,
                token_scheme = %self.scheme,
                same_root = sealed.root == self.root_id,
                "{what}: sealed under another scheme or another device's root"
            );
            return Err(Error::authentication_failed());
        }
        let root = |s: &cryptoki::session::Session| {
            self.root(s, root_class(self.scheme), root_object_id(self.scheme))
        };
        // A cached root handle that no longer works: look it up afresh next time, and if the
        // login is gone (private objects vanish without it) let the pool log in again.
        let stale = |s: &cryptoki::session::Session, e: CkError| -> CkError {
            match e {
                CkError::Pkcs11(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid, f) => {
                    self.cache().map.clear();
                    match logged_in(s) {
                        Ok(false) => CkError::Pkcs11(RvError::UserNotLoggedIn, f),
                        _ => CkError::Pkcs11(RvError::KeyHandleInvalid, f),
                    }
                }
                other => other,
            }
        };
        let device_failed = |e: pool::PoolError| match e {
            pool::PoolError::Call(e) if is_bad_tag(self.bad_tag_general, &e) => {
                Error::authentication_failed()
            }
            other => self.call_error(other, what.to_owned()),
        };
        match &self.root {
            RootPublic::None => {
                let iv_len = crate::gcm::iv_len(self.fips_mode);
                if sealed.body.len() < iv_len + crate::handle::TAG_LEN {
                    return Err(Error::authentication_failed());
                }
                let (iv, ct) = sealed.body.split_at(iv_len);
                self.pool
                    .run(|s| gcm_decrypt(s, root(s)?, iv, aad, ct).map_err(|e| stale(s, e)))
                    .map_err(device_failed)
            }
            RootPublic::Ecdh(point) => {
                let parts = hybrid::ecdh_parse(sealed.body)?;
                let z = self
                    .pool
                    .run(|s| ecdh_derive(s, root(s)?, parts.device_input).map_err(|e| stale(s, e)))
                    .map_err(device_failed)?;
                hybrid::ecdh_open(z.expose(), point, purpose, aad, &parts)
            }
            RootPublic::Rsa(key, hash) => {
                let parts = hybrid::rsa_parse(sealed.body, key.ciphertext_len())?;
                let cek = self
                    .pool
                    .run(|s| {
                        rsa_decrypt(s, root(s)?, *hash, parts.device_input).map_err(|e| stale(s, e))
                    })
                    .map_err(device_failed)?;
                hybrid::rsa_open(cek.expose(), purpose, aad, &parts)
            }
        }
    }

    /// Seal new key material (generated or imported) as an hsm-wrapped key.
    pub(crate) fn keep_wrapped(
        &self,
        spec: &KeySpec<'_>,
        material: &SecretBytes,
        public: Option<Vec<u8>>,
    ) -> Result<GeneratedKey> {
        let aad = hanzo_kms_crypto::seal::material_aad(spec.name, spec.version, spec.algorithm);
        let handle = self.seal(KEY_MATERIAL, &aad, material.expose())?;
        Ok(GeneratedKey {
            handle,
            public_key: public.map(|bytes| PublicKey {
                algorithm: spec.algorithm,
                bytes,
            }),
            origin: Origin::HsmWrapped,
        })
    }

    pub(crate) fn generate_wrapped(&self, spec: &KeySpec<'_>) -> Result<GeneratedKey> {
        let (material, public) = if spec.algorithm == Algorithm::Aes256Gcm {
            (
                SecretBytes::new(hanzo_kms_crypto::rng::key32()?.expose().to_vec()),
                None,
            )
        } else {
            hanzo_kms_crypto::material::generate(spec.algorithm)?
        };
        self.keep_wrapped(spec, &material, public)
    }

    /// The material of an hsm-wrapped key, from the cache or opened by the token.
    pub(crate) fn unwrap_material(
        &self,
        key: &KeyRef<'_>,
        sealed: &Sealed<'_>,
    ) -> Result<SecretBytes> {
        let aad = hanzo_kms_crypto::seal::material_aad(key.name, key.version, key.algorithm);
        let slot = hanzo_kms_crypto::cache::slot(&aad, key.handle.as_bytes());
        if let Some(m) = self.unwrapped.get(&slot) {
            return Ok(m);
        }
        let what = format!("unwrapping {} version {}", key.name, key.version);
        let material = self.unseal(sealed, KEY_MATERIAL, &aad, &what).map_err(|e| {
            if e.kind() == ErrorKind::AuthenticationFailed {
                // A stored value that does not open is a corrupt store entry (the provider
                // contract); the cryptographic answer stays its source.
                Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "the sealed material of {} version {} ({}) does not open under the {} root of token '{}': \
                         it was sealed by another device or scheme, or altered",
                        key.name, key.version, sealed.scheme, self.scheme, self.token_label
                    ),
                )
                .with_source(e)
            } else {
                e
            }
        })?;
        self.unwrapped.put(slot, &material);
        Ok(material)
    }
}
