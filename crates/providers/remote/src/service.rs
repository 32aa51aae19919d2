//! The seam between the generic [`RemoteProvider`](crate::RemoteProvider) and one remote key
//! service: the handful of calls Hanzo KMS needs, named in our terms. A client implements
//! [`RemoteKms`] for its service (OpenBao Transit, AWS KMS, Google Cloud KMS); everything
//! else (handles, kms-wrapped keys and their cache, signature normalisation and checking,
//! envelope encryption, MACs, fingerprints) is written once in the provider.

use hanzo_kms_core::{Algorithm, Result, SecretBytes};

/// What a remote key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyUse {
    /// A symmetric key that encrypts and decrypts small values (data keys) with AAD.
    Aes,
    /// HMAC-SHA256.
    Hmac,
    /// A signing key of this algorithm (one the service [`RemoteKms::signs`]).
    Sign(Algorithm),
}

/// One remote key service, as the generic provider uses it. Implementations must be safe to
/// call from many threads, retry throttled calls themselves, and return errors that name the
/// service, the key (its remote id) and the cause, never a credential:
/// - a ciphertext that does not decrypt (wrong key, changed AAD, altered bytes) is
///   [`hanzo_kms_core::Error::authentication_failed`] and nothing more;
/// - a key of the wrong kind for the call is `Unsupported`;
/// - refused credentials are `Config`; an unreachable or failing service is `Unavailable`;
/// - a call still throttled after the retries is `RateLimited` with a `retry_after`.
pub trait RemoteKms: Send + Sync {
    /// The provider name the config and the store use (`openbao`, `aws-kms`,
    /// `google-cloud-kms`).
    fn service(&self) -> &'static str;

    /// The service's name as a human writes it, for errors and logs ("OpenBao", "AWS KMS",
    /// "Google Cloud KMS").
    fn display_name(&self) -> &'static str;

    /// Whether the service can hold and sign with keys of `alg` (per Hanzo KMS's encoding of
    /// `alg`: secp256k1 over a 32-byte digest, P-256 over SHA-256 of the message, Ed25519 over
    /// the message).
    fn signs(&self, alg: Algorithm) -> bool;

    /// Create a key for `usage`, named or described by `label`, and return its remote id.
    fn create_key(&self, usage: KeyUse, label: &str) -> Result<String>;

    /// The remote id of the root key named `label` (made by [`RemoteKms::create_root`]), or
    /// `None` if there is none.
    fn find_root(&self, label: &str) -> Result<Option<String>>;

    /// Create the root key `label` (idempotent: if another process made it meanwhile, return
    /// that one).
    fn create_root(&self, usage: KeyUse, label: &str) -> Result<String>;

    /// Encrypt a small value (at most 4 KiB) under the AES key `id`, bound to `aad`.
    fn encrypt(&self, id: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>>;

    /// Reverse [`RemoteKms::encrypt`].
    fn decrypt(&self, id: &str, ciphertext: &[u8], aad: &[u8]) -> Result<SecretBytes>;

    /// Sign with the key `id`. `input` is the 32-byte digest for secp256k1 and P-256 (the
    /// provider hashes P-256 messages with SHA-256), the message for Ed25519. Returns what the
    /// service returns: DER for ECDSA, 64 raw bytes for Ed25519.
    fn sign(&self, id: &str, alg: Algorithm, input: &[u8]) -> Result<Vec<u8>>;

    /// The public key of signing key `id`: uncompressed SEC1 for ECDSA, 32 bytes for Ed25519.
    fn public_key(&self, id: &str, alg: Algorithm) -> Result<Vec<u8>>;

    /// HMAC-SHA256 of `data` under the HMAC key `id`.
    fn mac(&self, id: &str, data: &[u8]) -> Result<[u8; 32]>;

    /// Destroy (or schedule the destruction of, where the service only schedules) key `id`.
    /// Idempotent: a key already gone or already scheduled is fine.
    fn destroy(&self, id: &str) -> Result<()>;

    /// Whether the service answers and accepts our credentials, reading the root key `id`.
    fn health(&self, root_id: &str) -> Result<()>;
}
