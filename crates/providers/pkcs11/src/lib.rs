//! The PKCS#11 provider: one implementation on `cryptoki` for every HSM, with a capability
//! [`Profile`] per vendor (STYLE.md 4).
//!
//! # Keys
//! - **AES-256 keys** (model KEKs, data keys) are *hsm-resident* on a token with AES-GCM:
//!   generated in the token with `CKA_TOKEN` and `CKA_SENSITIVE`, and used there with
//!   `CKM_AES_GCM` to wrap data keys. They are `!CKA_EXTRACTABLE` unless the config's
//!   `exportable` asks for keys that may leave the token wrapped (for backups and migration).
//!   On a token without AES-GCM they are *hsm-wrapped*: 32 random bytes sealed under the
//!   token's root with its wrapping scheme, and data keys are wrapped with AES-256-GCM in
//!   software under the unwrapped key. The weights never reach the device (DESIGN.md §2).
//! - **Signing keys** are *hsm-resident* when the profile has the algorithm (secp256k1 and P-256
//!   with `CKM_ECDSA`, Ed25519 with `CKM_EDDSA`; never extractable), and *hsm-wrapped* otherwise
//!   (ML-DSA-65 everywhere) or when `signing_keys: hsm-wrapped` asks for software speed:
//!   generated in software, stored in the database sealed under the token's root, and
//!   unwrapped into zeroizing memory for each use. `fallback: refuse` turns the first case into
//!   an error.
//!
//! Labels are the provider label the service passes (`key_prefix` + name + `/v` + version); the
//! `CKA_ID` is 16 random bytes fixed at generation, so two stores sharing a token never collide.
//!
//! # Where things are
//! - [`settings`]: a config section resolved into [`Pkcs11Settings`];
//! - `provider`: opening a token and the [`Provider`](hanzo_kms_core::Provider) implementation;
//! - `resident` and `wrapped`: the two key origins; `scheme`: how a token seals what it keeps
//!   outside itself (AES-GCM in the device, ECDH P-256, RSA-OAEP); `gcm`: AES-GCM in the device;
//! - [`mechanisms`]: the config's allow/deny list of mechanisms;
//! - `handle`: the handle codec (what the store keeps per key version);
//! - `roots`: the root KEK, the root MAC key and the store fingerprint;
//! - `objects`: finding token objects through a handle cache;
//! - `format`: EC points and device signatures to our encodings;
//! - `error`: `CKR_*` codes and pool failures to error kinds;
//! - [`module`], `pool`, [`profile`]: the module registry, the session pool, vendor profiles.

#![forbid(unsafe_code)]

pub mod mechanisms;
pub mod module;
pub mod profile;
pub mod settings;

mod error;
mod format;
mod gcm;
mod handle;
mod objects;
mod pool;
mod provider;
mod resident;
mod roots;
mod scheme;
mod wrapped;

pub use format::to_eth_signature;
pub use handle::wrapping_of;
pub use mechanisms::MechanismSet;
pub use pool::{PoolStats, WAIT_LIMIT};
pub use profile::{PROFILES, Profile};
pub use provider::Pkcs11Provider;
pub use settings::{
    DEFAULT_MAX_SESSIONS, DEFAULT_WRAPPED_KEY_CACHE, Pkcs11Settings, TokenSelector,
};

/// The handle codec and the `CKA_EC_POINT` parser, for the fuzz targets in `fuzz/` (not an API:
/// hidden from the docs and free to change). Each function runs the provider's own code.
#[doc(hidden)]
pub mod fuzzing {
    use hanzo_kms_core::config::WrappingScheme;
    use hanzo_kms_core::{Algorithm, KeyHandle, KeyRef, Result};

    use crate::handle::{self, Handle, ID_LEN, Sealed};

    /// A parsed handle, with what it borrowed copied out.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum ParsedHandle {
        Resident {
            id: [u8; ID_LEN],
            public: Vec<u8>,
        },
        Wrapped {
            tag: u8,
            scheme: WrappingScheme,
            root: [u8; ID_LEN],
            body: Vec<u8>,
        },
    }

    /// Parse a stored handle as the provider does before each use of a key.
    pub fn parse_handle(key: &KeyRef<'_>) -> Result<ParsedHandle> {
        Ok(match Handle::parse(key)? {
            Handle::Resident { id, public } => ParsedHandle::Resident {
                id,
                public: public.to_vec(),
            },
            Handle::Wrapped(s) => ParsedHandle::Wrapped {
                tag: s.tag,
                scheme: s.scheme,
                root: s.root,
                body: s.body.to_vec(),
            },
        })
    }

    /// Parse sealed bytes (a handle, or the token's sealed MAC key): `(tag, scheme, root, body)`.
    pub fn parse_sealed(b: &[u8]) -> Option<(u8, WrappingScheme, [u8; ID_LEN], Vec<u8>)> {
        Sealed::parse(b).map(|s| (s.tag, s.scheme, s.root, s.body.to_vec()))
    }

    /// Encode a handle as the provider writes it.
    pub fn encode_handle(h: &ParsedHandle) -> KeyHandle {
        match h {
            ParsedHandle::Resident { id, public } => handle::resident_handle(id, public),
            ParsedHandle::Wrapped {
                tag, root, body, ..
            } => handle::sealed_handle(*tag, root, body),
        }
    }

    /// `CKA_EC_POINT` (DER or bare) as a SEC1 or Ed25519 public key.
    pub fn parse_ec_point(alg: Algorithm, der: &[u8]) -> Option<Vec<u8>> {
        crate::format::parse_ec_point(alg, der)
    }
}
