//! The provider seam: what a key store (software, PKCS#11 HSM, cloud KMS) must do.
//!
//! The trait is small and object-safe, and it hands out *handles*, never key bytes (STYLE.md 3).
//! A [`KeyHandle`] is whatever the provider needs to find the key again: for the software
//! provider it is the key sealed under the master key; for an HSM it is the object's label/id.
//! Either way it is safe to store in the database.
//!
//! Bulk data never passes through a provider: model weights are encrypted in-process under a data
//! key (DEK) that the provider only generates-and-wraps or unwraps (DESIGN.md §2).

use std::fmt;

use crate::algorithm::Algorithm;
use crate::error::Result;
use crate::key::Origin;
use crate::name::KeyName;
use crate::secret::{SecretBytes, SecretKey32};

/// Opaque provider reference to one key version. Not secret by contract: either ciphertext
/// (sealed/wrapped material) or a reference into an HSM.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyHandle(Vec<u8>);

impl KeyHandle {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for KeyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyHandle")
            .field("len", &self.0.len())
            .finish_non_exhaustive()
    }
}

/// A public key. Encodings: secp256k1 and P-256 are uncompressed SEC1 (65 bytes), Ed25519 is
/// the raw 32 bytes, ML-DSA-65 is the raw 1952-byte FIPS 204 encoding.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PublicKey {
    pub algorithm: Algorithm,
    pub bytes: Vec<u8>,
}

/// A signature in the algorithm's wire form (see [`Algorithm`]).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Signature(pub Vec<u8>);

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct KeySpec<'a> {
    pub name: &'a KeyName,
    pub version: u32,
    pub algorithm: Algorithm,
    /// The provider-side label: the config's `key_prefix` plus name and version
    /// (see docs/ARCHITECTURE.md, "Names inside providers").
    pub label: &'a str,
}

/// A freshly generated key version.
#[derive(Debug)]
pub struct GeneratedKey {
    pub handle: KeyHandle,
    pub public_key: Option<PublicKey>,
    pub origin: Origin,
}

/// One stored key version, as passed back to the provider to use it.
#[derive(Clone, Copy, Debug)]
pub struct KeyRef<'a> {
    pub name: &'a KeyName,
    pub version: u32,
    pub algorithm: Algorithm,
    pub handle: &'a KeyHandle,
}

/// What a provider can do natively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Algorithms the provider can generate and use.
    pub algorithms: Vec<Algorithm>,
    /// Whether keys live in hardware (affects the reported origin).
    pub hardware: bool,
    /// Largest number of keys the device can hold, if limited.
    pub max_keys: Option<u32>,
}

/// The provider's health, for `/readyz` and failover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Down(String),
    Ok,
}

/// For [`Provider::sign_p256_digest`]: refuse a key that is not P-256, naming it.
pub fn require_p256(key: &KeyRef<'_>) -> Result<()> {
    if key.algorithm == Algorithm::P256 {
        return Ok(());
    }
    Err(crate::Error::invalid(format!(
        "key {} is {}: only p256 keys sign a caller's digest",
        key.name, key.algorithm
    )))
}

/// A key store that generates keys and uses them by handle.
///
/// Implementations must be safe to call from many threads. Every method that fails on bad
/// ciphertext returns [`crate::Error::authentication_failed`] and nothing more specific.
pub trait Provider: Send + Sync {
    /// The provider's config name (`software`, `softhsm2`, ...).
    fn name(&self) -> &str;

    fn capabilities(&self) -> &Capabilities;

    /// Generate a new key version.
    fn generate(&self, spec: &KeySpec<'_>) -> Result<GeneratedKey>;

    /// The public key of a signing key version.
    fn public_key(&self, key: &KeyRef<'_>) -> Result<PublicKey>;

    /// AEAD-encrypt a small plaintext under an AES key. The result is self-contained
    /// (the provider chooses and includes the nonce) and bound to `aad`.
    fn encrypt(&self, key: &KeyRef<'_>, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>>;

    /// Reverse [`Provider::encrypt`]. Any failure is `authentication failed`.
    fn decrypt(&self, key: &KeyRef<'_>, ciphertext: &[u8], aad: &[u8]) -> Result<SecretBytes>;

    /// Generate a random 256-bit data key and return it with its wrapped form under `key`.
    fn generate_data_key(&self, key: &KeyRef<'_>, aad: &[u8]) -> Result<(SecretKey32, Vec<u8>)>;

    /// Wrap an existing data key (for rewrapping a file to a new key version).
    fn wrap_data_key(&self, key: &KeyRef<'_>, dek: &SecretKey32, aad: &[u8]) -> Result<Vec<u8>> {
        self.encrypt(key, dek.expose(), aad)
    }

    /// Unwrap a data key made by [`Provider::generate_data_key`].
    fn unwrap_data_key(&self, key: &KeyRef<'_>, wrapped: &[u8], aad: &[u8]) -> Result<SecretKey32> {
        let plain = self.decrypt(key, wrapped, aad)?;
        SecretKey32::from_slice(plain.expose()).map_err(|_| crate::Error::authentication_failed())
    }

    /// Sign. For secp256k1 `message` must be the 32-byte digest; for the other algorithms it is
    /// the message itself (see [`Algorithm`]).
    fn sign(&self, key: &KeyRef<'_>, message: &[u8]) -> Result<Signature>;

    /// Sign a caller's SHA-256 digest with a P-256 key (ECDSA, 64 bytes r‖s), as AWS KMS's
    /// MessageType DIGEST and Vault Transit's `prehashed` do. Only P-256: secp256k1's
    /// [`Provider::sign`] already takes a digest, and Ed25519 and ML-DSA-65 sign messages only.
    fn sign_p256_digest(&self, key: &KeyRef<'_>, digest: &[u8; 32]) -> Result<Signature> {
        let _ = digest;
        Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            format!(
                "provider {} cannot sign a digest with key {} version {}",
                self.name(),
                key.name,
                key.version
            ),
        ))
    }

    /// Destroy the material of one key version. Idempotent.
    fn destroy(&self, key: &KeyRef<'_>) -> Result<()>;

    fn health(&self) -> Health;

    /// HMAC-SHA256 of `data` under a key the provider holds, for values that must be checkable
    /// but never stored in the clear (API token secrets). An HSM keeps that key inside the device
    /// where it can (DESIGN.md §5: "HSM-backed API keys").
    fn mac(&self, data: &[u8]) -> Result<[u8; 32]>;

    /// Export one key version for a backup bundle: its material sealed with AES-256-GCM under
    /// `kek` and bound to `aad` (see docs/backup.md). The key bytes never leave the provider
    /// unsealed. A key that cannot leave its device (an HSM key generated non-extractable) is
    /// [`crate::ErrorKind::Unsupported`], with a message naming the key.
    fn export_wrapped(&self, key: &KeyRef<'_>, kek: &SecretKey32, aad: &[u8]) -> Result<Vec<u8>> {
        let _ = (kek, aad);
        Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            format!(
                "key {} version {} cannot be exported from provider {}",
                key.name,
                key.version,
                self.name()
            ),
        ))
    }

    /// Take in one key version exported by [`Provider::export_wrapped`] (by this or any other
    /// provider) and return its new handle. A `wrapped` value that does not open under `kek`
    /// and `aad` is `authentication failed`.
    fn import_wrapped(
        &self,
        spec: &KeySpec<'_>,
        kek: &SecretKey32,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<GeneratedKey> {
        let _ = (kek, wrapped, aad);
        Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            format!(
                "provider {} cannot import keys ({} version {})",
                self.name(),
                spec.name,
                spec.version
            ),
        ))
    }

    /// A value that identifies this provider's secret state (the master key, the HSM's KEK) for a
    /// store, bound to `context` (the store id). Recorded at `init` and compared on every open,
    /// so that a wrong master key is refused before anything is changed.
    fn fingerprint(&self, context: &[u8]) -> Result<[u8; 32]>;
}
