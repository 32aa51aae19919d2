//! Wrapping schemes: how a token seals what Hanzo KMS keeps outside it (hsm-wrapped key
//! material, model KEKs on a device without AES-GCM, the MAC key of a device without HMAC).
//!
//! One scheme is chosen per token at start, from the profile and the token's mechanisms, in
//! this order (or as `wrapping` in the config says):
//!
//! | scheme | root object in the token | seal | open |
//! |---|---|---|---|
//! | `aes-gcm` | `hanzo-kms/root/kek`, AES-256 | `C_Encrypt(CKM_AES_GCM)` | `C_Decrypt(CKM_AES_GCM)` |
//! | `ecdh-p256` | `hanzo-kms/root/ecdh`, P-256 key pair (derive only) | ECDH with an ephemeral key, HKDF-SHA256, AES-256-GCM, all in software | `C_DeriveKey(CKM_ECDH1_DERIVE, CKD_NULL)` with the ephemeral public key, then HKDF and AES-GCM in software |
//! | `rsa-oaep` | `hanzo-kms/root/rsa`, RSA-3072 key pair (decrypt only) | RSA-OAEP-SHA256 of a content key and AES-256-GCM, in software | `C_Decrypt(CKM_RSA_PKCS_OAEP)` of the content key, then AES-GCM in software |
//!
//! The root's private key never leaves the device in any scheme. What passes through host
//! memory: for `aes-gcm` the plaintext only; for `ecdh-p256` the per-value shared secret and
//! the plaintext; for `rsa-oaep` the per-value content key and the plaintext (the formats are
//! in `hanzo_kms_crypto::hybrid`).

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hanzo_kms_core::config::WrappingScheme;
use hanzo_kms_core::{Algorithm, SecretBytes};
use hanzo_kms_crypto::rsa::{OaepHash, OaepKey, public_key_der};

use crate::format::{OID_P256, parse_ec_point};
use crate::profile::Profile;

/// The order in which schemes are tried.
pub(crate) const ORDER: [WrappingScheme; 3] = [
    WrappingScheme::AesGcm,
    WrappingScheme::EcdhP256,
    WrappingScheme::RsaOaep,
];

/// RSA root keys are 3072 bits (128-bit security, as AES-256 and P-256 give here).
pub(crate) const RSA_BITS: u64 = 3072;

/// What a scheme needs that the profile or the token lacks; empty when it can be used.
pub(crate) fn missing(
    scheme: WrappingScheme,
    profile: &Profile,
    has: &dyn Fn(MechanismType) -> bool,
) -> Vec<String> {
    let need: &[MechanismType] = match scheme {
        WrappingScheme::AesGcm => &[MechanismType::AES_KEY_GEN, MechanismType::AES_GCM],
        WrappingScheme::EcdhP256 => &[MechanismType::ECC_KEY_PAIR_GEN, MechanismType::ECDH1_DERIVE],
        WrappingScheme::RsaOaep => &[
            MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            MechanismType::RSA_PKCS_OAEP,
        ],
    };
    let mut lacks: Vec<String> = need
        .iter()
        .filter(|m| !has(**m))
        .map(ToString::to_string)
        .collect();
    match scheme {
        WrappingScheme::AesGcm if !profile.aes_gcm => {
            lacks.push(format!("AES-GCM in the {} profile", profile.vendor));
        }
        WrappingScheme::EcdhP256 if !profile.ecdh_null_kdf => {
            lacks.push("ECDH with CKD_NULL (the device derives only through a KDF)".into());
        }
        _ => {}
    }
    lacks
}

/// The scheme to use: `requested`, or the first of [`ORDER`] the device can do. The error
/// lists, per scheme, what is missing.
pub(crate) fn choose(
    requested: Option<WrappingScheme>,
    profile: &Profile,
    has: &dyn Fn(MechanismType) -> bool,
) -> Result<WrappingScheme, String> {
    let candidates: &[WrappingScheme] = match &requested {
        Some(r) => std::slice::from_ref(r),
        None => &ORDER,
    };
    let mut why = Vec::new();
    for s in candidates {
        let lacks = missing(*s, profile, has);
        if lacks.is_empty() {
            return Ok(*s);
        }
        why.push(format!("{s} needs {}", lacks.join(", ")));
    }
    Err(why.join("; "))
}

/// The CKA_ID (and label) of a scheme's root object.
pub(crate) fn root_object_id(scheme: WrappingScheme) -> &'static [u8] {
    match scheme {
        WrappingScheme::AesGcm => crate::roots::ROOT_KEK_ID,
        WrappingScheme::EcdhP256 => b"hanzo-kms/root/ecdh",
        WrappingScheme::RsaOaep => b"hanzo-kms/root/rsa",
    }
}

/// The object class of a scheme's root (the private half for key pairs).
pub(crate) fn root_class(scheme: WrappingScheme) -> ObjectClass {
    match scheme {
        WrappingScheme::AesGcm => ObjectClass::SECRET_KEY,
        WrappingScheme::EcdhP256 | WrappingScheme::RsaOaep => ObjectClass::PRIVATE_KEY,
    }
}

/// The public half of an asymmetric root, read once at start.
pub(crate) enum RootPublic {
    /// `aes-gcm`: nothing public.
    None,
    Ecdh(Vec<u8>),
    /// The key, and the OAEP hash the device decrypts (found at start: SHA-256 where the
    /// device takes it, else SHA-1).
    Rsa(OaepKey, OaepHash),
}

impl RootPublic {
    /// The first byte of the values this root seals.
    pub(crate) fn tag(&self) -> u8 {
        match self {
            Self::None => crate::handle::tag(WrappingScheme::AesGcm),
            Self::Ecdh(_) => crate::handle::tag(WrappingScheme::EcdhP256),
            Self::Rsa(_, OaepHash::Sha256) => crate::handle::tag(WrappingScheme::RsaOaep),
            Self::Rsa(_, OaepHash::Sha1) => crate::handle::RSA_OAEP_SHA1,
        }
    }
}

/// Templates for a new asymmetric root: (mechanism, public, private).
pub(crate) fn root_pair_templates(
    scheme: WrappingScheme,
    id: &[u8],
) -> Option<(Mechanism<'static>, Vec<Attribute>, Vec<Attribute>)> {
    let common = |private: bool| {
        vec![
            Attribute::Token(true),
            Attribute::Private(private),
            Attribute::Label(id.to_vec()),
            Attribute::Id(id.to_vec()),
        ]
    };
    let mut public = common(false);
    let mut private = common(true);
    private.extend([
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(false),
        Attribute::Unwrap(false),
    ]);
    public.extend([
        Attribute::Verify(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
    ]);
    match scheme {
        WrappingScheme::AesGcm => None,
        WrappingScheme::EcdhP256 => {
            public.extend([
                Attribute::EcParams(OID_P256.to_vec()),
                Attribute::Encrypt(false),
            ]);
            private.extend([Attribute::Derive(true), Attribute::Decrypt(false)]);
            Some((Mechanism::EccKeyPairGen, public, private))
        }
        WrappingScheme::RsaOaep => {
            public.extend([
                Attribute::ModulusBits(RSA_BITS.into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                Attribute::Encrypt(true),
            ]);
            private.extend([Attribute::Derive(false), Attribute::Decrypt(true)]);
            Some((Mechanism::RsaPkcsKeyPairGen, public, private))
        }
    }
}

/// Read an asymmetric root's public key from its public object: (the key, the bytes its id
/// is computed over). `None` if the token's answer cannot be read.
pub(crate) fn read_root_public(
    s: &Session,
    scheme: WrappingScheme,
    public: ObjectHandle,
) -> Result<Option<(RootPublic, Vec<u8>)>, CkError> {
    match scheme {
        WrappingScheme::AesGcm => Ok(Some((RootPublic::None, crate::roots::ROOT_KEK_ID.to_vec()))),
        WrappingScheme::EcdhP256 => {
            let attrs = s.get_attributes(public, &[AttributeType::EcPoint])?;
            let point = attrs.into_iter().find_map(|a| match a {
                Attribute::EcPoint(p) => parse_ec_point(Algorithm::P256, &p),
                _ => None,
            });
            Ok(point
                .filter(|p| hanzo_kms_crypto::ecdh::is_valid_point(p))
                .map(|p| (RootPublic::Ecdh(p.clone()), p)))
        }
        WrappingScheme::RsaOaep => {
            let attrs = s.get_attributes(
                public,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )?;
            let (mut n, mut e) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    _ => {}
                }
            }
            let (Some(n), Some(e)) = (n, e) else {
                return Ok(None);
            };
            let spki = public_key_der(&n, &e);
            Ok(OaepKey::from_der(&spki)
                .ok()
                .map(|k| (RootPublic::Rsa(k, OaepHash::Sha256), spki)))
        }
    }
}

/// `C_DeriveKey(CKM_ECDH1_DERIVE, CKD_NULL)` of the root with `peer`, read out as the shared
/// secret: a session object that is destroyed again at once.
pub(crate) fn ecdh_derive(
    s: &Session,
    root: ObjectHandle,
    peer: &[u8],
) -> Result<SecretBytes, CkError> {
    let params = Ecdh1DeriveParams::new(EcKdf::null(), peer);
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::ValueLen(32.into()),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ];
    let derived = s.derive_key(&Mechanism::Ecdh1Derive(params), root, &template)?;
    let value = s.get_attributes(derived, &[AttributeType::Value]);
    let _ = s.destroy_object(derived);
    let mut secret = None;
    for a in value? {
        if let Attribute::Value(mut v) = a {
            secret = Some(SecretBytes::new(v.clone()));
            zeroize::Zeroize::zeroize(&mut v);
        }
    }
    secret.ok_or(CkError::Pkcs11(
        cryptoki::error::RvError::AttributeValueInvalid,
        cryptoki::context::Function::GetAttributeValue,
    ))
}

/// `C_Decrypt(CKM_RSA_PKCS_OAEP, hash, MGF1-hash)` with the root.
pub(crate) fn rsa_decrypt(
    s: &Session,
    root: ObjectHandle,
    hash: OaepHash,
    ciphertext: &[u8],
) -> Result<SecretBytes, CkError> {
    let params = match hash {
        OaepHash::Sha256 => PkcsOaepParams::new(
            MechanismType::SHA256,
            PkcsMgfType::MGF1_SHA256,
            PkcsOaepSource::empty(),
        ),
        OaepHash::Sha1 => PkcsOaepParams::new(
            MechanismType::SHA1,
            PkcsMgfType::MGF1_SHA1,
            PkcsOaepSource::empty(),
        ),
    };
    s.decrypt(&Mechanism::RsaPkcsOaep(params), root, ciphertext)
        .map(SecretBytes::new)
}

#[cfg(test)]
mod tests {
    use hanzo_kms_core::config::ProviderKind;

    use super::*;

    fn documented(vendor: ProviderKind) -> impl Fn(MechanismType) -> bool {
        let p = Profile::of(vendor).unwrap();
        move |m| p.documented.is_none_or(|d| d.contains(&m))
    }

    #[test]
    fn every_vendor_has_a_scheme_and_the_expected_one() {
        for (vendor, want) in [
            (ProviderKind::AwsCloudhsm, WrappingScheme::AesGcm),
            (ProviderKind::Fortanix, WrappingScheme::AesGcm),
            (ProviderKind::Nitrokey, WrappingScheme::EcdhP256),
            (ProviderKind::Softhsm2, WrappingScheme::AesGcm),
            (ProviderKind::ThalesLuna, WrappingScheme::AesGcm),
            (ProviderKind::Yubihsm2, WrappingScheme::EcdhP256),
            (ProviderKind::Zymbit, WrappingScheme::EcdhP256),
        ] {
            let p = Profile::of(vendor).unwrap();
            assert_eq!(choose(None, p, &documented(vendor)), Ok(want), "{vendor}");
        }
    }

    #[test]
    fn cloudhsm_without_gcm_skips_ecdh_for_want_of_ckd_null() {
        let p = Profile::of(ProviderKind::AwsCloudhsm).unwrap();
        let has = documented(ProviderKind::AwsCloudhsm);
        let no_gcm = |m: MechanismType| m != MechanismType::AES_GCM && has(m);
        assert_eq!(choose(None, p, &no_gcm), Ok(WrappingScheme::RsaOaep));
        let e = choose(Some(WrappingScheme::EcdhP256), p, &no_gcm).unwrap_err();
        assert!(e.contains("CKD_NULL"), "{e}");
    }

    #[test]
    fn a_device_that_fits_no_scheme_is_told_what_it_lacks() {
        let p = Profile::of(ProviderKind::Zymbit).unwrap();
        let only_ecdsa = |m: MechanismType| m == MechanismType::ECDSA;
        let e = choose(None, p, &only_ecdsa).unwrap_err();
        for want in [
            "CKM_AES_GCM",
            "CKM_ECDH1_DERIVE",
            "CKM_RSA_PKCS_OAEP",
            "aes-gcm",
            "rsa-oaep",
        ] {
            assert!(e.contains(want), "{want} in {e}");
        }
    }
}
