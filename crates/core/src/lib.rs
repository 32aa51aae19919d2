//! Hanzo KMS core: key names and the key model, configuration, errors and the provider seam.
//!
//! This crate does no I/O. Everything else depends on it; it depends on nothing vendor-specific.

#![forbid(unsafe_code)]

pub mod algorithm;
pub mod config;
pub mod eip712;
pub mod error;
pub mod eth;
pub mod key;
pub mod merkle;
pub mod name;
pub mod provider;
pub mod secret;
pub mod signed;
pub mod weights;

pub use algorithm::Algorithm;
pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use key::{KeyMeta, KeyState, KeyVersion, Origin, UnixTime};
pub use name::{KeyName, Purpose, Separator};
pub use provider::{
    Capabilities, GeneratedKey, Health, KeyHandle, KeyRef, KeySpec, Provider, PublicKey, Signature,
};
pub use secret::{SecretBytes, SecretKey32};
