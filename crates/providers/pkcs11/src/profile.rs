//! Vendor capability profiles (STYLE.md 4): what each HSM does natively, over one PKCS#11
//! implementation. The table is also in docs/providers.md, with the source of each fact.
//!
//! A profile is a *claim*. At start the provider intersects it with the token's own mechanism
//! list (`C_GetMechanismList`), so a device that lacks a mechanism its profile claims is caught
//! before the first key is made. Curves cannot be read from the mechanism list, which is why the
//! profile is needed at all (Nitrokey HSM 2 has `CKM_ECDSA` but no secp256k1).

use cryptoki::mechanism::MechanismType as M;
use hanzo_kms_core::Algorithm;
use hanzo_kms_core::config::ProviderKind;

/// What one vendor's device can do natively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    pub vendor: ProviderKind,
    /// The module used when the config gives none.
    pub default_module: &'static str,
    /// Signing algorithms the device generates and uses in hardware.
    pub signing: &'static [Algorithm],
    /// `CKM_AES_GCM` through `C_Encrypt`/`C_Decrypt`: the first wrapping scheme (model KEKs and
    /// the root KEK are AES-256 keys used with GCM inside the device).
    pub aes_gcm: bool,
    /// `CKM_ECDH1_DERIVE` with `CKD_NULL` (the raw shared secret), which the `ecdh-p256` scheme
    /// needs. AWS CloudHSM derives only through an X9.63 KDF.
    pub ecdh_null_kdf: bool,
    /// `CKM_AES_KEY_WRAP_PAD` (RFC 5649).
    pub aes_kwp: bool,
    /// `CKM_SHA256_HMAC` with generic secret keys (token HMACs and the store fingerprint).
    pub hmac_sha256: bool,
    /// How many keys the device holds, if small.
    pub max_keys: Option<u32>,
    /// The module answers `CKR_GENERAL_ERROR` (not `CKR_ENCRYPTED_DATA_INVALID`) on a bad GCM tag.
    pub gcm_bad_tag_is_general_error: bool,
    /// The device generates the GCM IV itself and writes it back into `CK_GCM_PARAMS.pIv`
    /// (AWS CloudHSM); the provider reads the IV back after every encryption either way.
    pub gcm_device_iv: bool,
    /// What the vendor documents as offered through PKCS#11 (docs/providers-sources.md), as far
    /// as Hanzo KMS uses it; `None` is SoftHSM2 (everything). The per-vendor conformance runs
    /// restrict a SoftHSM2 token to this set.
    pub documented: Option<&'static [M]>,
}

use Algorithm::{Ed25519, P256, Secp256k1};

/// The profiles, one per PKCS#11 provider name.
pub const PROFILES: &[Profile] = &[
    Profile {
        vendor: ProviderKind::AwsCloudhsm,
        default_module: "/opt/cloudhsm/lib/libcloudhsm_pkcs11.so",
        signing: &[Secp256k1, P256],
        aes_gcm: true,
        ecdh_null_kdf: false,
        aes_kwp: false,
        hmac_sha256: true,
        max_keys: Some(3_300),
        gcm_bad_tag_is_general_error: false,
        gcm_device_iv: true,
        documented: Some(&[
            M::AES_KEY_GEN,
            M::AES_GCM,
            M::ECC_KEY_PAIR_GEN,
            M::ECDSA,
            M::ECDH1_DERIVE,
            M::RSA_PKCS_KEY_PAIR_GEN,
            M::RSA_PKCS_OAEP,
            M::GENERIC_SECRET_KEY_GEN,
            M::SHA256_HMAC,
        ]),
    },
    Profile {
        vendor: ProviderKind::Fortanix,
        default_module: "/opt/fortanix/pkcs11/fortanix_pkcs11.so",
        signing: &[Secp256k1, P256],
        aes_gcm: true,
        ecdh_null_kdf: true,
        aes_kwp: false,
        hmac_sha256: true,
        max_keys: None,
        gcm_bad_tag_is_general_error: false,
        gcm_device_iv: false,
        documented: Some(&[
            M::AES_KEY_GEN,
            M::AES_GCM,
            M::ECC_KEY_PAIR_GEN,
            M::ECDSA,
            M::RSA_PKCS_KEY_PAIR_GEN,
            M::RSA_PKCS_OAEP,
            M::GENERIC_SECRET_KEY_GEN,
            M::SHA256_HMAC,
        ]),
    },
    Profile {
        vendor: ProviderKind::Nitrokey,
        default_module: "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
        signing: &[Secp256k1, P256],
        aes_gcm: false,
        ecdh_null_kdf: true,
        aes_kwp: false,
        hmac_sha256: false,
        max_keys: Some(300),
        gcm_bad_tag_is_general_error: false,
        gcm_device_iv: false,
        documented: Some(&[
            M::ECC_KEY_PAIR_GEN,
            M::ECDSA,
            M::ECDH1_DERIVE,
            M::RSA_PKCS_KEY_PAIR_GEN,
            M::RSA_PKCS,
            M::RSA_PKCS_OAEP,
        ]),
    },
    Profile {
        vendor: ProviderKind::Softhsm2,
        default_module: "/usr/lib/softhsm/libsofthsm2.so",
        signing: &[Secp256k1, P256, Ed25519],
        aes_gcm: true,
        ecdh_null_kdf: true,
        aes_kwp: true,
        hmac_sha256: true,
        max_keys: None,
        gcm_bad_tag_is_general_error: true,
        gcm_device_iv: false,
        documented: None,
    },
    Profile {
        vendor: ProviderKind::ThalesLuna,
        default_module: "/usr/safenet/lunaclient/lib/libCryptoki2_64.so",
        signing: &[Secp256k1, P256, Ed25519],
        aes_gcm: true,
        ecdh_null_kdf: true,
        aes_kwp: false,
        hmac_sha256: true,
        max_keys: None,
        gcm_bad_tag_is_general_error: false,
        gcm_device_iv: false,
        documented: Some(&[
            M::AES_KEY_GEN,
            M::AES_GCM,
            M::ECC_KEY_PAIR_GEN,
            M::ECDSA,
            M::ECC_EDWARDS_KEY_PAIR_GEN,
            M::EDDSA,
            M::ECDH1_DERIVE,
            M::RSA_PKCS_KEY_PAIR_GEN,
            M::RSA_PKCS_OAEP,
            M::GENERIC_SECRET_KEY_GEN,
            M::SHA256_HMAC,
        ]),
    },
    Profile {
        vendor: ProviderKind::Yubihsm2,
        default_module: "/usr/lib/x86_64-linux-gnu/pkcs11/yubihsm_pkcs11.so",
        signing: &[Secp256k1, P256, Ed25519],
        aes_gcm: false,
        ecdh_null_kdf: true,
        aes_kwp: false,
        hmac_sha256: false,
        max_keys: Some(255),
        gcm_bad_tag_is_general_error: false,
        gcm_device_iv: false,
        documented: Some(&[
            M::AES_KEY_GEN,
            M::AES_ECB,
            M::AES_CBC,
            M::AES_CBC_PAD,
            M::ECC_KEY_PAIR_GEN,
            M::ECDSA,
            M::ECC_EDWARDS_KEY_PAIR_GEN,
            M::EDDSA,
            M::ECDH1_DERIVE,
            M::RSA_PKCS_KEY_PAIR_GEN,
            M::RSA_PKCS_OAEP,
            M::SHA256_HMAC,
        ]),
    },
    Profile {
        vendor: ProviderKind::Zymbit,
        default_module: "/usr/lib/libzk_pkcs11.so",
        signing: &[Secp256k1, P256, Ed25519],
        aes_gcm: false,
        ecdh_null_kdf: true,
        aes_kwp: false,
        hmac_sha256: false,
        max_keys: None,
        gcm_bad_tag_is_general_error: false,
        gcm_device_iv: false,
        documented: Some(&[M::ECC_KEY_PAIR_GEN, M::ECDSA, M::ECDH1_DERIVE]),
    },
];

impl Profile {
    /// The profile of a PKCS#11 provider kind; `None` for `software` and `google-cloud-kms`.
    pub fn of(vendor: ProviderKind) -> Option<&'static Profile> {
        PROFILES.iter().find(|p| p.vendor == vendor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pkcs11_kind_has_exactly_one_profile() {
        for kind in [
            ProviderKind::AwsCloudhsm,
            ProviderKind::AwsKms,
            ProviderKind::Fortanix,
            ProviderKind::GoogleCloudKms,
            ProviderKind::Nitrokey,
            ProviderKind::Openbao,
            ProviderKind::Software,
            ProviderKind::Softhsm2,
            ProviderKind::ThalesLuna,
            ProviderKind::Yubihsm2,
            ProviderKind::Zymbit,
        ] {
            let n = PROFILES.iter().filter(|p| p.vendor == kind).count();
            assert_eq!(n, usize::from(kind.is_pkcs11()), "{kind}");
        }
    }

    #[test]
    fn nitrokey_has_no_ed25519_and_yubihsm_holds_255_keys() {
        assert!(
            !Profile::of(ProviderKind::Nitrokey)
                .unwrap()
                .signing
                .contains(&Ed25519)
        );
        assert_eq!(
            Profile::of(ProviderKind::Yubihsm2).unwrap().max_keys,
            Some(255)
        );
    }
}
