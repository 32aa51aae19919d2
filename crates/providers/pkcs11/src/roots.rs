//! Root objects: what `init` makes in every token, found by fixed `CKA_ID`s (and labels).
//!
//! - The wrapping root of the token's scheme (see `scheme`): the root KEK
//!   (`hanzo-kms/root/kek`, AES-256), or the key pair `hanzo-kms/root/ecdh` (P-256) or
//!   `hanzo-kms/root/rsa` (RSA-3072). It seals hsm-wrapped keys.
//! - Where the profile and the token have HMAC, the root MAC key (`hanzo-kms/root/mac`, a
//!   256-bit generic secret) keys token MACs and the store fingerprint in the device.
//! - Otherwise the MAC key is 32 random bytes sealed under the wrapping root (purpose
//!   `mac-key`, AAD `hanzo-kms/root-mac/v1`) and kept in the token as the private data object
//!   `hanzo-kms/root/mac-sealed`; the token opens it once at start and the MACs are computed in
//!   software. Either way a token MAC is `HMAC-SHA256(mac key, "hanzo-kms/mac/v1" ‖ 0x00 ‖ data)`
//!   and the store fingerprint `HMAC-SHA256(mac key, "hanzo-kms/fingerprint/v1" ‖ 0x00 ‖ store
//!   id)`, so a data directory opened against the wrong token is refused before anything changes.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hanzo_kms_core::config::WrappingScheme;
use hanzo_kms_core::{Error, ErrorKind, Result, SecretKey32};
use sha2::{Digest, Sha256};

use crate::error::pool_error_ctx;
use crate::handle::{ID_LEN, Sealed};
use crate::objects::{class_tag, logged_in};
use crate::scheme::{
    RootPublic, read_root_public, root_object_id, root_pair_templates, rsa_decrypt,
};
use crate::wrapped::MAC_KEY;
use crate::{Pkcs11Provider, pool};
use hanzo_kms_crypto::rsa::{OaepHash, OaepKey};

pub(crate) const ROOT_KEK_ID: &[u8] = b"hanzo-kms/root/kek";
pub(crate) const ROOT_MAC_ID: &[u8] = b"hanzo-kms/root/mac";
const SEALED_MAC_LABEL: &[u8] = b"hanzo-kms/root/mac-sealed";
const SEALED_MAC_AAD: &[u8] = b"hanzo-kms/root-mac/v1";

impl Pkcs11Provider {
    /// A root object's handle, found on `s` at most once per pool generation. A root that has
    /// vanished reads as `CKR_KEY_HANDLE_INVALID`.
    pub(crate) fn root(
        &self,
        s: &Session,
        class: ObjectClass,
        which: &'static [u8],
    ) -> std::result::Result<ObjectHandle, CkError> {
        let cache_key = (3 + class_tag(class), root_id(which));
        let generation = {
            let c = self.cache();
            if let Some(h) = c.map.get(&cache_key) {
                return Ok(*h);
            }
            c.generation
        };
        let found = s.find_objects(&[Attribute::Class(class), Attribute::Id(which.to_vec())])?;
        let h = found.first().copied().ok_or(CkError::Pkcs11(
            if logged_in(s)? {
                RvError::KeyHandleInvalid
            } else {
                RvError::UserNotLoggedIn
            },
            cryptoki::context::Function::FindObjects,
        ))?;
        let mut c = self.cache();
        // Cache only if no recovery happened since the lookup began: a handle found in an older
        // generation may name another object now.
        if c.generation == generation {
            c.map.insert(cache_key, h);
        }
        Ok(h)
    }

    /// `Provider::mac`: `HMAC-SHA256(mac key, "hanzo-kms/mac/v1" ‖ 0 ‖ data)`.
    pub(crate) fn token_mac(&self, data: &[u8]) -> Result<[u8; 32]> {
        self.keyed(b"hanzo-kms/mac/v1\0", data, "computing an HMAC")
    }

    /// `Provider::fingerprint`: `HMAC-SHA256(mac key, "hanzo-kms/fingerprint/v1" ‖ 0 ‖ context)`.
    pub(crate) fn store_fingerprint(&self, context: &[u8]) -> Result<[u8; 32]> {
        self.keyed(
            b"hanzo-kms/fingerprint/v1\0",
            context,
            "computing the store fingerprint",
        )
    }

    fn keyed(&self, prefix: &[u8], data: &[u8], what: &str) -> Result<[u8; 32]> {
        if let Some(key) = &self.mac_key {
            return Ok(hanzo_kms_crypto::mac::hmac_sha256(
                key.expose(),
                &[prefix, data],
            ));
        }
        let msg = [prefix, data].concat();
        let tag = self
            .pool
            .run(|s| {
                let root = self.root(s, ObjectClass::SECRET_KEY, ROOT_MAC_ID)?;
                s.sign(&Mechanism::Sha256Hmac, root, &msg)
            })
            .map_err(|e| self.call_error(e, what.to_owned()))?;
        tag.as_slice()
            .try_into()
            .map_err(|_| Error::internal("HMAC-SHA256 output is not 32 bytes"))
    }

    /// The sealed MAC key of a token without HMAC: found (or, with `make`, created) and
    /// opened by the token. `None` when it is missing and `make` is false.
    pub(crate) fn open_sealed_mac(&self, make: bool) -> Result<Option<SecretKey32>> {
        let token = &self.token_label;
        let find = [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Label(SEALED_MAC_LABEL.to_vec()),
        ];
        let stored = self
            .pool
            .run(|s| {
                let Some(h) = s.find_objects(&find)?.first().copied() else {
                    return Ok(None);
                };
                let value = s.get_attributes(h, &[AttributeType::Value])?;
                Ok(value.into_iter().find_map(|a| match a {
                    Attribute::Value(v) => Some(v),
                    _ => None,
                }))
            })
            .map_err(|e| pool_error_ctx(e, token, "reading the sealed MAC key".into()))?;
        let sealed = match stored {
            Some(v) => v,
            None if !make => return Ok(None),
            None => {
                let key = hanzo_kms_crypto::rng::key32()?;
                let sealed = self.seal(MAC_KEY, SEALED_MAC_AAD, key.expose())?;
                let object = [
                    Attribute::Class(ObjectClass::DATA),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Label(SEALED_MAC_LABEL.to_vec()),
                    Attribute::Application(b"hanzo-kms".to_vec()),
                    Attribute::Value(sealed.as_bytes().to_vec()),
                ];
                self.pool
                    .run(|s| s.create_object(&object))
                    .map_err(|e| pool_error_ctx(e, token, "storing the sealed MAC key".into()))?;
                sealed.as_bytes().to_vec()
            }
        };
        let parsed = Sealed::parse(&sealed).ok_or_else(|| {
            Error::new(
                ErrorKind::Corrupt,
                format!(
                    "token '{token}': the object hanzo-kms/root/mac-sealed is not a sealed key"
                ),
            )
        })?;
        let key = self
            .unseal(&parsed, MAC_KEY, SEALED_MAC_AAD, "opening the token's MAC key")
            .map_err(|e| {
                if e.kind() == ErrorKind::AuthenticationFailed {
                    Error::new(
                        ErrorKind::MasterKeyMismatch,
                        format!(
                            "token '{token}': its sealed MAC key does not open under its {} root; \
                             the root was replaced or the token's mechanisms changed; nothing was changed",
                            self.scheme
                        ),
                    )
                } else {
                    e
                }
            })?;
        SecretKey32::from_slice(key.expose()).map(Some)
    }
}

/// The 16-byte digest of a root's identity (a fixed CKA_ID, or a public key) recorded in
/// sealed values.
pub(crate) fn root_id(bytes: &[u8]) -> [u8; ID_LEN] {
    let d = Sha256::digest(bytes);
    let mut out = [0u8; ID_LEN];
    out.copy_from_slice(&d[..ID_LEN]);
    out
}

/// Find (or, with `make`, create) the wrapping root of `scheme`: its public part and the id
/// sealed values record. `None` when it is missing and `make` is false.
pub(crate) fn open_root(
    pool: &pool::Pool,
    scheme: WrappingScheme,
    make: bool,
    token: &str,
) -> Result<Option<(RootPublic, [u8; ID_LEN])>> {
    let ctx = |what: &str| {
        let what = what.to_owned();
        move |e| pool_error_ctx(e, token, what)
    };
    if scheme == WrappingScheme::AesGcm {
        return Ok(find_or_make_secret(pool, ROOT_KEK_ID, make, token)?
            .map(|_| (RootPublic::None, root_id(ROOT_KEK_ID))));
    }
    let id = root_object_id(scheme);
    let find = |class: ObjectClass| {
        pool.run(|s| s.find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())]))
            .map(|f| f.first().copied())
    };
    let mut private = find(ObjectClass::PRIVATE_KEY).map_err(ctx("looking up the root keys"))?;
    let mut public = find(ObjectClass::PUBLIC_KEY).map_err(ctx("looking up the root keys"))?;
    match (private, public) {
        (None, None) if !make => return Ok(None),
        (None, None) => {
            let (mechanism, pub_t, priv_t) = root_pair_templates(scheme, id)
                .ok_or_else(|| Error::internal("no key pair for the aes-gcm scheme"))?;
            let (p, k) = pool
                .run(|s| s.generate_key_pair(&mechanism, &pub_t, &priv_t))
                .map_err(ctx("creating the root keys"))?;
            (public, private) = (Some(p), Some(k));
        }
        (Some(_), Some(_)) => {}
        _ => {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "token '{token}' holds only one half of the key pair {}; it was deleted outside hanzo-kms",
                    String::from_utf8_lossy(id)
                ),
            ));
        }
    }
    let (Some(public), Some(private)) = (public, private) else {
        return Err(Error::internal("a root key vanished"));
    };
    let read = pool
        .run(|s| read_root_public(s, scheme, public))
        .map_err(ctx("reading the root public key"))?;
    let (root, bytes) = read.ok_or_else(|| {
        Error::new(
            ErrorKind::Unavailable,
            format!("token '{token}' returned a {scheme} root public key hanzo-kms cannot read"),
        )
    })?;
    let root = match root {
        RootPublic::Rsa(key, _) => {
            let hash = oaep_hash(pool, private, &key, token)?;
            RootPublic::Rsa(key, hash)
        }
        other => other,
    };
    Ok(Some((root, root_id(&bytes))))
}

/// The OAEP hash the device decrypts: SHA-256 if it takes it, else SHA-1 (SoftHSM2 2.6 takes
/// only SHA-1), found by decrypting a random value sealed in software.
fn oaep_hash(
    pool: &pool::Pool,
    private: ObjectHandle,
    key: &OaepKey,
    token: &str,
) -> Result<OaepHash> {
    let probe = hanzo_kms_crypto::rng::bytes32()?;
    let mut refusals = Vec::new();
    for hash in [OaepHash::Sha256, OaepHash::Sha1] {
        let c = key.encrypt(hash, &probe)?;
        match pool.run(|s| rsa_decrypt(s, private, hash, &c)) {
            Ok(p) if p.expose() == probe => return Ok(hash),
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("token '{token}' decrypted an RSA-OAEP test value wrongly"),
                ));
            }
            Err(pool::PoolError::Call(e)) => refusals.push(format!("{hash:?}: {e}")),
            Err(e) => return Err(pool_error_ctx(e, token, "testing RSA-OAEP".into())),
        }
    }
    Err(Error::new(
        ErrorKind::Unsupported,
        format!(
            "token '{token}' decrypts RSA-OAEP with neither SHA-256 nor SHA-1 ({})",
            refusals.join("; ")
        ),
    ))
}

/// Find (or, with `make`, create) a root secret key: the root KEK or the root MAC key.
pub(crate) fn find_or_make_secret(
    pool: &pool::Pool,
    id: &'static [u8],
    make: bool,
    token: &str,
) -> Result<Option<ObjectHandle>> {
    let found = pool
        .run(|s| {
            s.find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Id(id.to_vec()),
            ])
        })
        .map_err(|e| pool_error_ctx(e, token, "looking up the root keys".into()))?;
    if let Some(h) = found.first() {
        return Ok(Some(*h));
    }
    if !make {
        return Ok(None);
    }
    let (mechanism, key_type, usage) = if id == ROOT_KEK_ID {
        (
            Mechanism::AesKeyGen,
            KeyType::AES,
            usage(Usage::EncryptDecrypt),
        )
    } else {
        (
            Mechanism::GenericSecretKeyGen,
            KeyType::GENERIC_SECRET,
            usage(Usage::Mac),
        )
    };
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Label(id.to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    template.extend(usage);
    pool.run(|s| s.generate_key(&mechanism, &template))
        .map(Some)
        .map_err(|e| pool_error_ctx(e, token, "creating the root keys".into()))
}

/// What a secret key may do. Everything else is set false explicitly (least privilege: a key
/// that only wraps data keys cannot unwrap foreign keys into the token or derive new ones).
pub(crate) enum Usage {
    EncryptDecrypt,
    Mac,
}

pub(crate) fn usage(u: Usage) -> Vec<Attribute> {
    let (crypt, mac) = match u {
        Usage::EncryptDecrypt => (true, false),
        Usage::Mac => (false, true),
    };
    vec![
        Attribute::Encrypt(crypt),
        Attribute::Decrypt(crypt),
        Attribute::Sign(mac),
        Attribute::Verify(mac),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ]
}

/// A root object (`id`) is missing from the token.
pub(crate) fn missing_root(token: &str, id: &[u8]) -> Error {
    Error::new(
        ErrorKind::MasterKeyMismatch,
        format!(
            "token '{token}' holds no hanzo-kms root key (CKA_ID {}); this data directory \
             was initialised against another token, with other wrapping, or the root key was \
             deleted; nothing was changed",
            String::from_utf8_lossy(id)
        ),
    )
}
