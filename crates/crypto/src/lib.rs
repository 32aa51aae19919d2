//! The cryptographic primitives of Hanzo KMS, in one place, with no I/O and no key storage.
//!
//! Every provider, the service, the server and the tools call these rather than aws-lc-rs or
//! libsecp256k1 directly, so that each primitive has one implementation and one set of tests
//! (Wycheproof AES-GCM, the secp256k1 and ML-DSA vectors):
//!
//! | module | what |
//! |---|---|
//! | [`rng`] | the system CSPRNG |
//! | [`aead`] | AES-256-GCM with 96-bit nonces and 128-bit tags |
//! | [`material`] | key material per [`Algorithm`](hanzo_kms_core::Algorithm): generate, public key, sign |
//! | [`secp`] | secp256k1 signing on blinded per-thread contexts (libsecp256k1) |
//! | [`verify`] | signature verification for every algorithm, low-S, public-key recovery |
//! | [`seal`] | the AAD that binds material to its key, backup sealing, AES key wrap with padding |
//! | [`hkdf`] | HKDF-SHA256 |
//! | [`ecdh`] | ECDH on P-256 (ephemeral keys against a device's static key) |
//! | [`rsa`] | RSA-OAEP-SHA256 encryption to a device's public key |
//! | [`hybrid`] | sealing to a device-held key: ECDH or RSA-OAEP, then AES-256-GCM |
//! | [`mac`] | HMAC-SHA256 |
//! | [`ecdsa`] | DER and raw ECDSA signatures to our encodings (secp256k1 r‖s‖v, low S) |
//! | [`cache`] | the bounded cache of unwrapped hsm-wrapped and kms-wrapped key material |
//!
//! A provider is a thin layer over these: where the key material lives (sealed under a master
//! key, wrapped under an HSM's key, or inside a device) is the provider's business; what is done
//! with material in process is this crate's.

#![forbid(unsafe_code)]

pub mod aead;
pub mod cache;
pub mod ecdh;
pub mod ecdsa;
pub mod hkdf;
pub mod hybrid;
pub mod mac;
pub mod material;
pub mod rng;
pub mod rsa;
pub mod seal;
pub mod secp;
pub mod verify;
