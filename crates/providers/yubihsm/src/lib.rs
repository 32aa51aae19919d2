//! A native YubiHSM 2 provider (`kms.lux.provider: yubihsm2-native`): the device's own protocol
//! through the `yubihsm` crate and yubihsm-connector (HTTP), for sites without
//! yubihsm_pkcs11. The same device through PKCS#11 is the `yubihsm2` provider
//! (`hanzo-kms-pkcs11`).
//!
//! - `settings`: the config section, checked; the password interpolated and zeroized.
//! - `device`: the session and the one mapping of device errors to ours.
//! - `seal`: Wrap Data (AES-CCM in the device) around a content key, AES-256-GCM in software.
//! - `provider`: key placement, signatures normalised and verified, MACs in the device.
//! - `handle`: what the store keeps per key version.
//!
//! What was tested with what (the MockHsm of the `yubihsm` crate; Yubico's documentation for
//! Wrap Data) is in docs/providers.md, "Native YubiHSM 2".

#![forbid(unsafe_code)]

mod device;
mod handle;
mod provider;
mod seal;
mod settings;

pub use handle::wrapping_of;
pub use provider::{PROVIDER_NAME, ROOT_MAC_LABEL, ROOT_WRAP_LABEL, YubiHsmProvider};
pub use settings::{
    DEFAULT_CONNECTOR_URL, DEFAULT_TIMEOUT, DEFAULT_WRAPPED_KEY_CACHE, YubiHsmSettings,
};

#[cfg(test)]
mod tests;
