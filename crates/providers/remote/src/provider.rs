//! The generic provider over one [`RemoteKms`]: key placement, kms-wrapped keys and their
//! cache, envelope encryption, signature normalisation and checking, MACs and fingerprints.
//!
//! | key | origin | where the material is |
//! |---|---|---|
//! | AES-256 (model KEKs, `data:` keys) | `kms-resident` | a symmetric key in the service; each DEK is wrapped there with the DEK's `dek_aad` bound |
//! | AES-256 imported (restore, migrate) | `kms-wrapped` | 32 bytes wrapped under the root KEK; DEKs wrapped in software |
//! | a signing algorithm the service signs | `kms-resident` | a key pair in the service; DER answers normalised and verified here |
//! | any other signing algorithm (ML-DSA-65 always), or `signing_keys: kms-wrapped` | `kms-wrapped` | generated in software, wrapped under the root KEK with `material_aad`, unwrapped by the service into zeroizing memory and cached for `wrapped_key_cache` |
//!
//! Root keys, made at `init` and found by name at every open: `<prefix>root-kek` (AES, wraps
//! kms-wrapped material) and `<prefix>root-mac` (HMAC-SHA256: token MACs and the store
//! fingerprint, so a store refuses to open against another account's or server's keys).

use std::time::Duration;

use hanzo_kms_core::config::RemoteSigningKeys;
use hanzo_kms_core::{
    Algorithm, Capabilities, Error, ErrorKind, GeneratedKey, Health, KeyRef, KeySpec, Origin,
    Provider, PublicKey, Result, SecretBytes, SecretKey32, Signature,
};
use hanzo_kms_crypto::aead::{AesGcmKey, NONCE, TAG};
use hanzo_kms_crypto::cache::{self, UnwrapCache};
use hanzo_kms_crypto::{ecdsa, material, rng, seal, verify};

use crate::handle::{self, Handle};
use crate::service::{KeyUse, RemoteKms};

/// Version byte of a general ciphertext (`encrypt`) under a kms-resident AES key:
/// `0x01 ‖ u16be(len) ‖ service ciphertext of a fresh DEK ‖ nonce(12) ‖ AES-256-GCM(DEK, nonce,
/// plaintext, aad) ‖ tag(16)`; the DEK is bound to `aad` in the service too.
const ENVELOPE_V1: u8 = 0x01;

/// Domain separation of the root MAC key's two uses.
const MAC_CONTEXT: &[u8] = b"hanzo-kms/mac/v1\0";
const FINGERPRINT_CONTEXT: &[u8] = b"hanzo-kms/fingerprint/v1\0";

/// How a remote provider is set up, from its config section.
#[derive(Clone, Debug)]
pub struct RemoteSettings {
    /// Put before `root-kek` and `root-mac` in the root keys' labels (the client adds its own
    /// `key_prefix` to every name; this separates sets of roots under one prefix, as tests do).
    pub root_prefix: String,
    pub signing_keys: RemoteSigningKeys,
    /// How long an unwrapped kms-wrapped key stays in memory after its last use.
    pub wrapped_key_cache: Duration,
}

/// A [`Provider`] on a remote key service.
pub struct RemoteProvider<S> {
    service: S,
    caps: Capabilities,
    root_kek: String,
    root_mac: String,
    signing_keys: RemoteSigningKeys,
    unwrapped: UnwrapCache,
}

impl<S: RemoteKms> std::fmt::Debug for RemoteProvider<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteProvider")
            .field("service", &self.service.service())
            .field("root_kek", &self.root_kek)
            .finish_non_exhaustive()
    }
}

impl<S: RemoteKms> RemoteProvider<S> {
    /// Find the root keys in the service (with `create_roots`, make those missing). Fails
    /// with `Config` when a root key is missing and may not be made, naming it.
    pub fn open(service: S, settings: &RemoteSettings, create_roots: bool) -> Result<Self> {
        let root = |usage: KeyUse, suffix: &str| -> Result<String> {
            let label = format!("{}{suffix}", settings.root_prefix);
            match service.find_root(&label)? {
                Some(id) => Ok(id),
                None if create_roots => service.create_root(usage, &label),
                None => Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "{}: the root key '{label}' does not exist; this store was initialised against \
                         another {} account, server or key_prefix, or the key was deleted there",
                        service.display_name(),
                        service.display_name()
                    ),
                )),
            }
        };
        let root_kek = root(KeyUse::Aes, "root-kek")?;
        let root_mac = root(KeyUse::Hmac, "root-mac")?;
        tracing::info!(service = service.display_name(), %root_kek, "remote key service opened");
        Ok(Self {
            caps: Capabilities {
                algorithms: Algorithm::ALL.to_vec(),
                hardware: true,
                max_keys: None,
            },
            service,
            root_kek,
            root_mac,
            signing_keys: settings.signing_keys,
            unwrapped: UnwrapCache::new(settings.wrapped_key_cache),
        })
    }

    /// The client of the service.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// The remote id of the root KEK.
    pub fn root_kek(&self) -> &str {
        &self.root_kek
    }

    /// Whether a new key of `alg` lives in the service (else it is kms-wrapped).
    pub fn resident(&self, alg: Algorithm) -> bool {
        alg == Algorithm::Aes256Gcm
            || (self.signing_keys == RemoteSigningKeys::KmsResident && self.service.signs(alg))
    }

    /// The service's name for messages ("AWS KMS"; [`Provider::name`] is the config's).
    fn name(&self) -> &'static str {
        self.service.display_name()
    }

    /// Wrap software-made material under the root KEK: a kms-wrapped key.
    fn keep_wrapped(
        &self,
        spec: &KeySpec<'_>,
        material: &SecretBytes,
        public: Option<Vec<u8>>,
    ) -> Result<GeneratedKey> {
        let aad = seal::material_aad(spec.name, spec.version, spec.algorithm);
        let wrapped = self
            .service
            .encrypt(&self.root_kek, material.expose(), &aad)
            .map_err(|e| e.context(format!("wrapping {} version {}", spec.name, spec.version)))?;
        Ok(GeneratedKey {
            handle: handle::wrapped(&self.root_kek, &wrapped),
            public_key: public.map(|bytes| PublicKey {
                algorithm: spec.algorithm,
                bytes,
            }),
            origin: Origin::KmsWrapped,
        })
    }

    /// The material of a kms-wrapped key: from the cache, or unwrapped by the service.
    fn material(&self, key: &KeyRef<'_>, kek: &str, wrapped: &[u8]) -> Result<SecretBytes> {
        let aad = seal::material_aad(key.name, key.version, key.algorithm);
        let slot = cache::slot(&aad, key.handle.as_bytes());
        if let Some(m) = self.unwrapped.get(&slot) {
            return Ok(m);
        }
        let m = self.service.decrypt(kek, wrapped, &aad).map_err(|e| {
            if e.kind() == ErrorKind::AuthenticationFailed {
                Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "the wrapped material of {} version {} does not open under {} key {kek}: \
                         it was wrapped for another key or altered",
                        key.name,
                        key.version,
                        self.name()
                    ),
                )
                .with_source(e)
            } else {
                e.context(format!("unwrapping {} version {}", key.name, key.version))
            }
        })?;
        self.unwrapped.put(slot, &m);
        Ok(m)
    }

    fn not_aes(&self, key: &KeyRef<'_>) -> Error {
        Error::new(
            ErrorKind::Unsupported,
            format!(
                "key {} is {}; it signs and does not encrypt",
                key.name, key.algorithm
            ),
        )
    }

    /// The AES material of an imported (kms-wrapped) AES key, or the remote id of a resident one.
    fn aes_key<'h>(&self, key: &KeyRef<'h>) -> Result<AesKey<'h>> {
        if key.algorithm != Algorithm::Aes256Gcm {
            return Err(self.not_aes(key));
        }
        Ok(match Handle::parse(key, self.name())? {
            Handle::Resident { id, .. } => AesKey::Remote(id),
            Handle::Wrapped { kek, wrapped } => {
                let m = self.material(key, kek, wrapped)?;
                AesKey::Local(AesGcmKey::new(m.expose())?)
            }
        })
    }

    /// A signature from the service, in our encoding and verified under the key's public key
    /// before it leaves (DESIGN.md §8).
    fn sign_resident(
        &self,
        key: &KeyRef<'_>,
        id: &str,
        public: &[u8],
        message: &[u8],
    ) -> Result<Vec<u8>> {
        let bad = |what: &str| {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "{} returned {what} for {} version {} (key {id})",
                    self.name(),
                    key.name,
                    key.version
                ),
            )
        };
        let sig = match key.algorithm {
            Algorithm::Secp256k1 => {
                let digest: [u8; 32] = message.try_into().map_err(|_| {
                    Error::invalid(format!(
                        "secp256k1 signs a 32-byte digest, not {} bytes",
                        message.len()
                    ))
                })?;
                let der = self.service.sign(id, key.algorithm, &digest)?;
                let raw = ecdsa::der_to_fixed(&der)
                    .ok_or_else(|| bad("a secp256k1 signature that is not DER"))?;
                ecdsa::to_eth_signature(&raw, &digest, public)
                    .ok_or_else(|| bad("a secp256k1 signature that does not verify"))?
            }
            Algorithm::P256 => {
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
                let der = self.service.sign(id, key.algorithm, digest.as_ref())?;
                ecdsa::der_to_fixed(&der)
                    .ok_or_else(|| bad("a P-256 signature that is not DER"))?
                    .to_vec()
            }
            Algorithm::Ed25519 => self.service.sign(id, key.algorithm, message)?,
            other => {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("{} is {other}, which cannot be kms-resident", key.name),
                ));
            }
        };
        if !verify::verify(key.algorithm, public, message, &sig) {
            return Err(bad(&format!(
                "a {} signature that does not verify",
                key.algorithm
            )));
        }
        Ok(sig)
    }
}

/// Name the key in a service error (`model:acme:gpt4 version 2: openbao: …`); a failed
/// decryption stays the one opaque `authentication failed`.
fn about(key: &KeyRef<'_>) -> impl Fn(Error) -> Error {
    move |e| {
        if e.kind() == ErrorKind::AuthenticationFailed {
            e
        } else {
            e.context(format!("{} version {}", key.name, key.version))
        }
    }
}

enum AesKey<'h> {
    Local(AesGcmKey),
    Remote(&'h str),
}

impl<S: RemoteKms> Provider for RemoteProvider<S> {
    fn name(&self) -> &str {
        self.service.service()
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn generate(&self, spec: &KeySpec<'_>) -> Result<GeneratedKey> {
        if !self.resident(spec.algorithm) {
            let (material, public) = material::generate(spec.algorithm)?;
            return self.keep_wrapped(spec, &material, public);
        }
        let usage = match spec.algorithm {
            Algorithm::Aes256Gcm => KeyUse::Aes,
            alg => KeyUse::Sign(alg),
        };
        let id = self.service.create_key(usage, spec.label)?;
        let made = || -> Result<GeneratedKey> {
            if id.len() > usize::from(u16::MAX) {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("{} returned a key id of {} bytes", self.name(), id.len()),
                ));
            }
            if spec.algorithm == Algorithm::Aes256Gcm {
                return Ok(GeneratedKey {
                    handle: handle::resident(&id, &[]),
                    public_key: None,
                    origin: Origin::KmsResident,
                });
            }
            let public = self.service.public_key(&id, spec.algorithm)?;
            Ok(GeneratedKey {
                handle: handle::resident(&id, &public),
                public_key: Some(PublicKey {
                    algorithm: spec.algorithm,
                    bytes: public,
                }),
                origin: Origin::KmsResident,
            })
        };
        made().inspect_err(|_| {
            // Leave no remote key behind for a version that was never recorded.
            if let Err(e) = self.service.destroy(&id) {
                tracing::warn!(service = self.name(), key = %id, "could not remove a half-made key: {e}");
            }
        })
    }

    fn public_key(&self, key: &KeyRef<'_>) -> Result<PublicKey> {
        let bytes = match Handle::parse(key, self.name())? {
            Handle::Resident { public, .. } if !public.is_empty() => public.to_vec(),
            Handle::Resident { .. } => None.ok_or_else(|| {
                Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "key {} is {}; it has no public key",
                        key.name, key.algorithm
                    ),
                )
            })?,
            Handle::Wrapped { kek, wrapped } => {
                let m = self.material(key, kek, wrapped)?;
                material::public_key(key.algorithm, &m)?.ok_or_else(|| {
                    Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "key {} is {}; it has no public key",
                            key.name, key.algorithm
                        ),
                    )
                })?
            }
        };
        Ok(PublicKey {
            algorithm: key.algorithm,
            bytes,
        })
    }

    fn encrypt(&self, key: &KeyRef<'_>, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let nonce = rng::nonce()?;
        match self.aes_key(key)? {
            AesKey::Local(k) => Ok([nonce.as_slice(), &k.seal(&nonce, aad, plaintext)?].concat()),
            AesKey::Remote(id) => {
                // Envelope: a service call wraps a fresh DEK (any plaintext size fits, and the
                // service's 4 KiB limit does not apply); the plaintext is sealed here.
                let dek = rng::key32()?;
                let wrapped = self
                    .service
                    .encrypt(id, dek.expose(), aad)
                    .map_err(about(key))?;
                let len = u16::try_from(wrapped.len()).map_err(|_| {
                    Error::internal(format!("{} returned an oversized ciphertext", self.name()))
                })?;
                let ct = AesGcmKey::new(dek.expose())?.seal(&nonce, aad, plaintext)?;
                let mut out = Vec::with_capacity(3 + wrapped.len() + NONCE + ct.len());
                out.push(ENVELOPE_V1);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&wrapped);
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&ct);
                Ok(out)
            }
        }
    }

    fn decrypt(&self, key: &KeyRef<'_>, ciphertext: &[u8], aad: &[u8]) -> Result<SecretBytes> {
        match self.aes_key(key)? {
            AesKey::Local(k) => {
                if ciphertext.len() < NONCE + TAG {
                    return Err(Error::authentication_failed());
                }
                let (nonce, ct) = ciphertext.split_at(NONCE);
                k.open(nonce, aad, ct)
            }
            AesKey::Remote(id) => {
                let [ENVELOPE_V1, h, l, rest @ ..] = ciphertext else {
                    return Err(Error::authentication_failed());
                };
                let len = usize::from(u16::from_be_bytes([*h, *l]));
                if rest.len() < len + NONCE + TAG {
                    return Err(Error::authentication_failed());
                }
                let (wrapped, rest) = rest.split_at(len);
                let dek = self.service.decrypt(id, wrapped, aad).map_err(about(key))?;
                let (nonce, ct) = rest.split_at(NONCE);
                AesGcmKey::new(dek.expose())
                    .map_err(|_| Error::authentication_failed())?
                    .open(nonce, aad, ct)
            }
        }
    }

    fn generate_data_key(&self, key: &KeyRef<'_>, aad: &[u8]) -> Result<(SecretKey32, Vec<u8>)> {
        let dek = rng::key32()?;
        let wrapped = self.wrap_data_key(key, &dek, aad)?;
        Ok((dek, wrapped))
    }

    /// A kms-resident KEK wraps the DEK in the service with `aad` (the file's `dek_aad`) bound
    /// as AAD or encryption context; the wrapped form is the service's ciphertext as it is.
    fn wrap_data_key(&self, key: &KeyRef<'_>, dek: &SecretKey32, aad: &[u8]) -> Result<Vec<u8>> {
        match self.aes_key(key)? {
            AesKey::Local(k) => {
                let nonce = rng::nonce()?;
                Ok([nonce.as_slice(), &k.seal(&nonce, aad, dek.expose())?].concat())
            }
            AesKey::Remote(id) => self
                .service
                .encrypt(id, dek.expose(), aad)
                .map_err(about(key)),
        }
    }

    fn unwrap_data_key(&self, key: &KeyRef<'_>, wrapped: &[u8], aad: &[u8]) -> Result<SecretKey32> {
        let plain = match self.aes_key(key)? {
            AesKey::Local(k) => {
                if wrapped.len() < NONCE + TAG {
                    return Err(Error::authentication_failed());
                }
                let (nonce, ct) = wrapped.split_at(NONCE);
                k.open(nonce, aad, ct)?
            }
            AesKey::Remote(id) => self.service.decrypt(id, wrapped, aad).map_err(about(key))?,
        };
        SecretKey32::from_slice(plain.expose()).map_err(|_| Error::authentication_failed())
    }

    fn sign(&self, key: &KeyRef<'_>, message: &[u8]) -> Result<Signature> {
        if key.algorithm == Algorithm::Aes256Gcm {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "key {} is aes-256-gcm; it encrypts and does not sign",
                    key.name
                ),
            ));
        }
        match Handle::parse(key, self.name())? {
            Handle::Resident { id, public } => self
                .sign_resident(key, id, public, message)
                .map(Signature)
                .map_err(about(key)),
            Handle::Wrapped { kek, wrapped } => {
                let m = self.material(key, kek, wrapped)?;
                material::sign(key.algorithm, &m, message).map(Signature)
            }
        }
    }

    fn sign_p256_digest(&self, key: &KeyRef<'_>, digest: &[u8; 32]) -> Result<Signature> {
        hanzo_kms_core::provider::require_p256(key)?;
        match Handle::parse(key, self.name())? {
            Handle::Resident { id, public } => {
                let der = self
                    .service
                    .sign(id, key.algorithm, digest)
                    .map_err(about(key))?;
                let bad = |what: &str| {
                    Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "{} returned {what} for {} version {} (key {id})",
                            self.name(),
                            key.name,
                            key.version
                        ),
                    )
                };
                let sig = ecdsa::der_to_fixed(&der)
                    .ok_or_else(|| bad("a P-256 signature that is not DER"))?
                    .to_vec();
                if !verify::verify_p256_digest(public, digest, &sig) {
                    return Err(bad("a p256 signature that does not verify"));
                }
                Ok(Signature(sig))
            }
            Handle::Wrapped { kek, wrapped } => {
                let m = self.material(key, kek, wrapped)?;
                material::sign_p256_digest(&m, digest).map(Signature)
            }
        }
    }

    fn destroy(&self, key: &KeyRef<'_>) -> Result<()> {
        match Handle::parse(key, self.name())? {
            Handle::Resident { id, .. } => self
                .service
                .destroy(id)
                .map_err(|e| e.context(format!("destroying {} version {}", key.name, key.version))),
            Handle::Wrapped { .. } => {
                // The material exists only wrapped in the store; deleting the row destroys it,
                // and nothing unwrapped may outlive it here.
                self.unwrapped.clear();
                Ok(())
            }
        }
    }

    fn health(&self) -> Health {
        match self.service.health(&self.root_kek) {
            Ok(()) => Health::Ok,
            Err(e) => Health::Down(e.to_string()),
        }
    }

    fn mac(&self, data: &[u8]) -> Result<[u8; 32]> {
        self.service
            .mac(&self.root_mac, &[MAC_CONTEXT, data].concat())
    }

    fn export_wrapped(&self, key: &KeyRef<'_>, kek: &SecretKey32, aad: &[u8]) -> Result<Vec<u8>> {
        match Handle::parse(key, self.name())? {
            Handle::Wrapped {
                kek: remote,
                wrapped,
            } => {
                let m = self.material(key, remote, wrapped)?;
                seal::backup_seal(kek, aad, m.expose())
            }
            Handle::Resident { .. } => Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "key {} version {} is kms-resident in {}: its material cannot leave the service \
                     (only kms-wrapped keys can be exported or migrated)",
                    key.name,
                    key.version,
                    self.name()
                ),
            )),
        }
    }

    /// Every imported key becomes kms-wrapped: its material wrapped under the root KEK (AES
    /// keys too, which then wrap DEKs in software). The services' own import protocols
    /// (AWS ImportKeyMaterial, Transit BYOK) are not used.
    fn import_wrapped(
        &self,
        spec: &KeySpec<'_>,
        kek: &SecretKey32,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<GeneratedKey> {
        let (m, public) = seal::backup_open_key(spec, kek, aad, wrapped)?;
        self.keep_wrapped(spec, &m, public)
    }

    fn fingerprint(&self, context: &[u8]) -> Result<[u8; 32]> {
        self.service
            .mac(&self.root_mac, &[FINGERPRINT_CONTEXT, context].concat())
    }
}
