//! What `keys show` and `keys list` report, in a shape fit for `--json`.

use serde::{Deserialize, Serialize};

use hanzo_kms_core::{Algorithm, KeyState, Origin, eth};
use hanzo_kms_store::StoredKey;

/// A key as reported to callers. Holds no secret material.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyInfo {
    pub name: String,
    pub purpose: String,
    pub customer: String,
    pub algorithm: String,
    /// `hsm-resident`, `hsm-wrapped` or `software` (DESIGN.md §2).
    pub origin: String,
    pub provider: String,
    pub state: String,
    pub primary_version: u32,
    /// `null` when the key does not rotate automatically.
    pub rotation_period_days: Option<i64>,
    pub created_at: i64,
    pub rotated_at: i64,
    /// When a scheduled destruction takes effect, or when the key was destroyed.
    pub destroy_at: Option<i64>,
    /// Whether the key is past its rotation period now.
    pub rotation_due: bool,
    pub versions: Vec<VersionInfo>,
}

/// One version as reported.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: u32,
    pub state: String,
    pub created_at: i64,
    /// Hex. secp256k1 and P-256: uncompressed SEC1; Ed25519: 32 bytes; ML-DSA-65: 1952 bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// secp256k1 only: the Ethereum address, EIP-55 checksummed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Hsm-wrapped keys of a PKCS#11 provider: the scheme that sealed this version
    /// (`aes-gcm`, `ecdh-p256` or `rsa-oaep`; docs/providers.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapping: Option<String>,
}

impl KeyInfo {
    pub fn from_stored(k: &StoredKey) -> Self {
        let m = &k.meta;
        let sealed_by_token = m.origin == Origin::HsmWrapped
            && hanzo_kms_pkcs11::PROFILES
                .iter()
                .any(|p| p.vendor.as_str() == m.provider);
        let sealed_by_yubihsm =
            m.origin == Origin::HsmWrapped && m.provider == hanzo_kms_yubihsm::PROVIDER_NAME;
        Self {
            name: m.name.to_string(),
            purpose: m.name.purpose().to_string(),
            customer: m.name.customer().to_owned(),
            algorithm: m.algorithm.to_string(),
            origin: m.origin.to_string(),
            provider: m.provider.clone(),
            state: m.state.to_string(),
            primary_version: m.primary_version,
            rotation_period_days: m.rotation_period_secs.map(|s| s / 86_400),
            created_at: m.created_at,
            rotated_at: m.rotated_at,
            destroy_at: m.destroy_at,
            rotation_due: m.rotation_due(crate::now_secs()),
            versions: k
                .versions
                .iter()
                .map(|v| {
                    let pk = v
                        .info
                        .public_key
                        .as_deref()
                        .filter(|_| v.info.state != KeyState::Destroyed);
                    VersionInfo {
                        version: v.info.version,
                        state: v.info.state.to_string(),
                        created_at: v.info.created_at,
                        public_key: pk.map(hex::encode),
                        address: pk
                            .filter(|_| m.algorithm == Algorithm::Secp256k1)
                            .and_then(|p| eth::address(p).ok())
                            .map(|a| eth::to_checksum(&a)),
                        wrapping: v.handle.as_ref().and_then(|h| {
                            if sealed_by_token {
                                hanzo_kms_pkcs11::wrapping_of(h).map(|w| w.to_string())
                            } else if sealed_by_yubihsm {
                                hanzo_kms_yubihsm::wrapping_of(h).map(str::to_owned)
                            } else {
                                None
                            }
                        }),
                    }
                })
                .collect(),
        }
    }

    /// The primary version's Ethereum address, for secp256k1 keys.
    pub fn address(&self) -> Option<&str> {
        self.versions
            .iter()
            .find(|v| v.version == self.primary_version)
            .and_then(|v| v.address.as_deref())
    }
}

/// A key's primary public key (`GET /v1/keys/{name}/public`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublicKeyInfo {
    pub key: String,
    pub version: u32,
    pub algorithm: String,
    /// Hex, `0x`-prefixed.
    pub public_key: String,
    /// secp256k1: the EIP-55 Ethereum address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[cfg(test)]
mod tests {
    use hanzo_kms_core::{KeyHandle, KeyMeta, KeyName, KeyVersion, Separator};
    use hanzo_kms_store::StoredVersion;

    use super::*;

    fn stored(provider: &str, origin: Origin, handle: Vec<u8>) -> StoredKey {
        StoredKey {
            meta: KeyMeta {
                name: KeyName::parse("poai:acme:m", Separator::default()).unwrap(),
                algorithm: Algorithm::MlDsa65,
                origin,
                provider: provider.into(),
                state: KeyState::Enabled,
                primary_version: 1,
                rotation_period_secs: None,
                created_at: 0,
                rotated_at: 0,
                destroy_at: None,
            },
            versions: vec![StoredVersion {
                info: KeyVersion {
                    version: 1,
                    state: KeyState::Enabled,
                    created_at: 0,
                    public_key: None,
                },
                handle: Some(KeyHandle::new(handle)),
            }],
        }
    }

    #[test]
    fn keys_show_names_the_yubihsm_wrap_data_scheme() {
        // 0x42 (wrapped) ‖ 0x15 (Wrap Data) ‖ wrap key id ‖ the rest.
        let sealed = [&[0x42u8, 0x15, 0x12, 0x34][..], &[7u8; 100]].concat();
        let shown = KeyInfo::from_stored(&stored(
            "yubihsm2-native",
            Origin::HsmWrapped,
            sealed.clone(),
        ));
        assert_eq!(
            shown.versions[0].wrapping.as_deref(),
            Some("yubihsm-wrap-data")
        );
        // Not read for another provider's handles.
        let other = KeyInfo::from_stored(&stored("software", Origin::Software, sealed));
        assert_eq!(other.versions[0].wrapping, None);
    }
}
