//! Sealed values: hsm-wrapped key material (signing keys generated or imported in software,
//! and AES keys on a token whose scheme is not `aes-gcm`) and the MAC key of a token without
//! HMAC, sealed under the token's root with its wrapping scheme (see `scheme`), and opened by
//! the token into zeroizing memory for each use or from the unwrapped-key cache.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cryptoki::error::{Error as CkError, RvError};
use hanzo_kms_core::{
    Algorithm, Error, ErrorKind, GeneratedKey, KeyHandle, KeyRef, KeySpec, Origin, PublicKey,
    Result, SecretBytes,
};
use hanzo_kms_crypto::hybrid;
use sha2::{Digest, Sha256};

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

/// At most this many unwrapped keys are kept; the least recently used goes first.
const CACHE_MAX: usize = 1024;

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
        let slot = cache_slot(&aad, key.handle.as_bytes());
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

/// Unwrapped key material kept in zeroizing memory for `ttl` after its last use, at most
/// [`CACHE_MAX`] entries. Keyed by a digest of the key's binding (name, version, algorithm)
/// and its sealed handle, so a copied handle under another name is not served.
pub(crate) struct UnwrapCache {
    ttl: Duration,
    map: Mutex<HashMap<[u8; 32], (SecretBytes, Instant)>>,
}

impl UnwrapCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, slot: &[u8; 32]) -> Option<SecretBytes> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match map.get_mut(slot) {
            Some((m, used)) if now.duration_since(*used) < self.ttl => {
                *used = now;
                Some(SecretBytes::new(m.expose().to_vec()))
            }
            Some(_) => {
                map.remove(slot);
                None
            }
            None => None,
        }
    }

    fn put(&self, slot: [u8; 32], material: &SecretBytes) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, (_, used)| now.duration_since(*used) < self.ttl);
        if map.len() >= CACHE_MAX
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(slot, (SecretBytes::new(material.expose().to_vec()), now));
    }

    /// Forget everything (a key was destroyed, or the provider is going away).
    pub(crate) fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

fn cache_slot(aad: &[u8], handle: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((aad.len() as u64).to_be_bytes());
    h.update(aad);
    h.update(handle);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_expires_evicts_and_can_be_off() {
        let c = UnwrapCache::new(Duration::from_millis(50));
        c.put([1; 32], &SecretBytes::new(vec![7; 32]));
        assert_eq!(c.get(&[1; 32]).unwrap().expose(), &[7; 32]);
        std::thread::sleep(Duration::from_millis(80));
        assert!(c.get(&[1; 32]).is_none(), "expired");
        let off = UnwrapCache::new(Duration::ZERO);
        off.put([1; 32], &SecretBytes::new(vec![7; 32]));
        assert!(off.get(&[1; 32]).is_none());
        let big = UnwrapCache::new(Duration::from_secs(60));
        for i in 0..=CACHE_MAX {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_be_bytes());
            big.put(k, &SecretBytes::new(vec![1]));
        }
        assert_eq!(big.map.lock().unwrap().len(), CACHE_MAX);
        assert!(big.get(&[0; 32]).is_none(), "the oldest went first");
    }

    #[test]
    fn cache_slots_bind_name_and_handle() {
        assert_ne!(cache_slot(b"a", b"h"), cache_slot(b"b", b"h"));
        assert_ne!(cache_slot(b"a", b"h"), cache_slot(b"a", b"i"));
        assert_ne!(cache_slot(b"ab", b"c"), cache_slot(b"a", b"bc"));
    }
}
