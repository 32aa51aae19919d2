//! Hsm-resident keys: AES-256 keys and signing key pairs generated and used inside the token,
//! and the export of an AES key made `exportable`.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use hanzo_kms_core::{
    Algorithm, Error, ErrorKind, GeneratedKey, KeyRef, KeySpec, Origin, PublicKey, Result,
    SecretKey32,
};
use hanzo_kms_crypto::rng;
use sha2::{Digest, Sha256};

use crate::Pkcs11Provider;
use crate::format::{
    OID_ED25519, OID_P256, OID_SECP256K1, bad_signature_len, parse_ec_point, to_eth_signature,
};
use crate::handle::{Handle, ID_LEN, resident_handle};
use crate::objects::{OpError, wipe_values};
use crate::roots::{Usage, usage};

impl Pkcs11Provider {
    /// A token AES key's template, without CKA_VALUE or CKA_VALUE_LEN: private, sensitive,
    /// extractable (wrapped only) just when `exportable`, for encryption and decryption.
    pub(crate) fn aes_template(&self, label: Vec<u8>, id: &[u8; ID_LEN]) -> Vec<Attribute> {
        let mut t = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(self.exportable),
            Attribute::Label(label),
            Attribute::Id(id.to_vec()),
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
        ];
        t.extend(usage(Usage::EncryptDecrypt));
        t
    }

    pub(crate) fn not_exportable(&self, key: &KeyRef<'_>) -> Error {
        Error::new(
            ErrorKind::Unsupported,
            format!(
                "key {} version {} is hsm-resident on {} token '{}' and not extractable, so it \
                 cannot be exported; clone it with the device's own tools under a wrapping key \
                 both devices share, or rotate to a new key (AES keys made with \
                 kms.lux.{}.exportable: true can be exported)",
                key.name, key.version, self.vendor, self.token_label, self.vendor
            ),
        )
    }

    /// Export an AES key object made extractable (`exportable: true`): the backup KEK goes into
    /// the token as a session object, C_WrapKey wraps the key under it with AES key wrap with
    /// padding (RFC 5649), the session object is destroyed, and the result is unwrapped here
    /// only to be sealed again in the bundle's format.
    pub(crate) fn export_aes(
        &self,
        key: &KeyRef<'_>,
        id: &[u8; ID_LEN],
        kek: &SecretKey32,
        aad: &[u8],
    ) -> Result<Vec<u8>> {
        if !self.kwp {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "key {} version {} cannot be exported: token '{}' offers no CKM_AES_KEY_WRAP_PAD",
                    key.name, key.version, self.token_label
                ),
            ));
        }
        let wrapped = self.with_object(key, ObjectClass::SECRET_KEY, id, "exporting", |s, h| {
            let mut t = [
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Wrap(true),
                Attribute::Value(kek.expose().to_vec()),
            ];
            let made = s.create_object(&t);
            wipe_values(&mut t);
            let wrapping = made?;
            let r = s.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, h);
            let _ = s.destroy_object(wrapping);
            r
        });
        let wrapped = match wrapped {
            Ok(w) => w,
            Err(OpError::Module(CkError::Pkcs11(RvError::KeyUnextractable, _))) => {
                return Err(self.not_exportable(key));
            }
            Err(e) => return Err(self.module_error(e, format!("exporting {}", key.name))),
        };
        let material = hanzo_kms_crypto::seal::kwp_unwrap(kek, &wrapped).map_err(|_| {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "token '{}' returned a wrapped key for {} that does not unwrap",
                    self.token_label, key.name
                ),
            )
        })?;
        hanzo_kms_crypto::seal::backup_seal(kek, aad, material.expose())
    }

    pub(crate) fn generate_resident(&self, spec: &KeySpec<'_>) -> Result<GeneratedKey> {
        let mut id = [0u8; ID_LEN];
        rng::fill(&mut id)?;
        let label = spec.label.as_bytes().to_vec();
        let what = || {
            format!(
                "generating {} version {} ({})",
                spec.name, spec.version, spec.algorithm
            )
        };
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Label(label.clone()),
            Attribute::Id(id.to_vec()),
        ];
        if spec.algorithm == Algorithm::Aes256Gcm {
            let mut t = self.aes_template(label, &id);
            t.push(Attribute::ValueLen(32.into()));
            self.pool
                .run(|s| s.generate_key(&Mechanism::AesKeyGen, &t))
                .map_err(|e| self.call_error(e, what()))?;
            return Ok(GeneratedKey {
                handle: resident_handle(&id, &[]),
                public_key: None,
                origin: Origin::HsmResident,
            });
        }
        let (mechanism, params) = match spec.algorithm {
            Algorithm::Secp256k1 => (Mechanism::EccKeyPairGen, OID_SECP256K1),
            Algorithm::P256 => (Mechanism::EccKeyPairGen, OID_P256),
            Algorithm::Ed25519 => (Mechanism::EccEdwardsKeyPairGen, OID_ED25519),
            other => {
                return Err(Error::internal(format!(
                    "{other} is not an HSM signing algorithm"
                )));
            }
        };
        let public = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::Derive(false),
            Attribute::EcParams(params.to_vec()),
            Attribute::Label(label),
            Attribute::Id(id.to_vec()),
        ];
        let mut private = private.to_vec();
        private.extend([
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ]);
        let (pub_h, priv_h) = self
            .pool
            .run(|s| s.generate_key_pair(&mechanism, &public, &private))
            .map_err(|e| self.call_error(e, what()))?;
        let point = self
            .pool
            .run(|s| s.get_attributes(pub_h, &[AttributeType::EcPoint]))
            .map_err(|e| self.call_error(e, what()));
        let public_key = point.and_then(|attrs| {
            attrs
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(p) => Some(p),
                    _ => None,
                })
                .and_then(|p| parse_ec_point(spec.algorithm, &p))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "{}: token '{}' returned a public key hanzo-kms cannot read",
                            what(),
                            self.token_label
                        ),
                    )
                })
        });
        let public_key = match public_key {
            Ok(p) => p,
            Err(e) => {
                // Leave nothing half-made in the token.
                let _ = self.pool.run(|s| {
                    s.destroy_object(priv_h)?;
                    s.destroy_object(pub_h)
                });
                return Err(e);
            }
        };
        Ok(GeneratedKey {
            handle: resident_handle(&id, &public_key),
            public_key: Some(PublicKey {
                algorithm: spec.algorithm,
                bytes: public_key,
            }),
            origin: Origin::HsmResident,
        })
    }

    /// An AES key's parsed handle: a token object (`aes-gcm` scheme) or sealed material.
    pub(crate) fn aes_key<'a>(&self, key: &KeyRef<'a>) -> Result<Handle<'a>> {
        if key.algorithm != Algorithm::Aes256Gcm {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("key {} is {}; it does not encrypt", key.name, key.algorithm),
            ));
        }
        Handle::parse(key)
    }

    /// ECDSA over a SHA-256 digest with a resident P-256 key: `CKM_ECDSA` signs the digest as
    /// given.
    pub(crate) fn sign_p256_digest_resident(
        &self,
        key: &KeyRef<'_>,
        id: &[u8; ID_LEN],
        digest: &[u8; 32],
    ) -> Result<Vec<u8>> {
        let raw = self
            .with_object(key, ObjectClass::PRIVATE_KEY, id, "signing", |s, h| {
                s.sign(&Mechanism::Ecdsa, h, digest)
            })
            .map_err(|e| self.module_error(e, format!("signing with {}", key.name)))?;
        if raw.len() != 64 {
            return Err(bad_signature_len(&self.token_label, key, raw.len()));
        }
        Ok(raw)
    }

    pub(crate) fn sign_resident(
        &self,
        key: &KeyRef<'_>,
        id: &[u8; ID_LEN],
        public: &[u8],
        message: &[u8],
    ) -> Result<Vec<u8>> {
        let what = "signing";
        match key.algorithm {
            Algorithm::Secp256k1 => {
                let digest: [u8; 32] = message.try_into().map_err(|_| {
                    Error::invalid(format!(
                        "secp256k1 signs a 32-byte digest, not {} bytes",
                        message.len()
                    ))
                })?;
                let raw = self
                    .with_object(key, ObjectClass::PRIVATE_KEY, id, what, |s, h| {
                        s.sign(&Mechanism::Ecdsa, h, &digest)
                    })
                    .map_err(|e| self.module_error(e, format!("signing with {}", key.name)))?;
                to_eth_signature(&raw, &digest, public).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "token '{}' returned a secp256k1 signature for {} that does not verify under the key's public key",
                            self.token_label, key.name
                        ),
                    )
                })
            }
            Algorithm::P256 => {
                self.sign_p256_digest_resident(key, id, &Sha256::digest(message).into())
            }
            Algorithm::Ed25519 => {
                let raw = self
                    .with_object(key, ObjectClass::PRIVATE_KEY, id, what, |s, h| {
                        s.sign(
                            &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                            h,
                            message,
                        )
                    })
                    .map_err(|e| self.module_error(e, format!("signing with {}", key.name)))?;
                if raw.len() != 64 {
                    return Err(bad_signature_len(&self.token_label, key, raw.len()));
                }
                Ok(raw)
            }
            Algorithm::Aes256Gcm => Err(Error::new(
                ErrorKind::Unsupported,
                "aes-256-gcm keys encrypt; they do not sign",
            )),
            Algorithm::MlDsa65 => Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "ML-DSA-65 key {} has a resident handle; no token holds ML-DSA",
                    key.name
                ),
            )),
        }
    }
}
