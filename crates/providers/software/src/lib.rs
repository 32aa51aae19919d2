//! The `software` provider: the embedded default.
//!
//! Keys are generated in process (aws-lc-rs; libsecp256k1 for secp256k1) and stored *sealed*:
//! AES-256-GCM under a sealing key derived from the master key. The sealed blob is the key's
//! [`KeyHandle`], so the store only ever holds ciphertext.
//!
//! ```text
//! seal_key        = HKDF-SHA256[salt = "hanzo-kms/software/v1", ikm = master](info = "seal", 32)
//! fingerprint_key = HKDF-SHA256[salt = "hanzo-kms/software/v1", ikm = master](info = "fingerprint", 32)
//! sealed          = 0x01 ‖ nonce(12) ‖ AES-256-GCM(seal_key, nonce, plaintext = material,
//!                     aad = "hanzo-kms/sealed/v1" ‖ 0x00 ‖ key name ‖ 0x00 ‖ u32be(version) ‖ algorithm)
//! mac_key         = HKDF-SHA256[salt = "hanzo-kms/software/v1", ikm = master](info = "mac", 32)
//! fingerprint     = HMAC-SHA256(fingerprint_key, store id)
//! mac(data)       = HMAC-SHA256(mac_key, data)                  (API token secrets)
//! ```
//!
//! Binding the key name, version and algorithm into the AAD means a sealed blob copied onto
//! another key's row in the database does not open.
//!
//! Material per algorithm: AES-256-GCM and secp256k1 keys are their 32 raw bytes; P-256,
//! Ed25519 and ML-DSA-65 keys are PKCS#8 documents.

#![forbid(unsafe_code)]

use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use aws_lc_rs::hmac;
use hanzo_kms_core::{
    Algorithm, Capabilities, Error, ErrorKind, GeneratedKey, Health, KeyHandle, KeyName, KeyRef,
    KeySpec, Origin, Provider, PublicKey, Result, SecretBytes, SecretKey32, Signature,
};
use hanzo_kms_crypto::aead::{self, AesGcmKey, NONCE};
use hanzo_kms_crypto::seal::{backup_open_key, backup_seal, material_aad};
use hanzo_kms_crypto::{material, rng};
use zeroize::Zeroizing;

/// Format byte of a sealed blob.
const SEALED_V1: u8 = 0x01;

/// The software provider.
pub struct SoftwareProvider {
    seal: AesGcmKey,
    fingerprint: hmac::Key,
    mac: hmac::Key,
    caps: Capabilities,
}

impl std::fmt::Debug for SoftwareProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareProvider").finish_non_exhaustive()
    }
}

struct Len32;
impl KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

impl SoftwareProvider {
    /// A provider whose keys are sealed under `master`.
    pub fn new(master: &SecretKey32) -> Result<Self> {
        let prk = Salt::new(HKDF_SHA256, b"hanzo-kms/software/v1").extract(master.expose());
        let derive = |info: &[u8]| -> Result<Zeroizing<[u8; 32]>> {
            let mut out = Zeroizing::new([0u8; 32]);
            prk.expand(&[info], Len32)
                .and_then(|okm| okm.fill(out.as_mut()))
                .map_err(|_| Error::internal("HKDF expansion failed"))?;
            Ok(out)
        };
        let seal = AesGcmKey::new(derive(b"seal")?.as_ref())?;
        let fingerprint = hmac::Key::new(hmac::HMAC_SHA256, derive(b"fingerprint")?.as_ref());
        let mac = hmac::Key::new(hmac::HMAC_SHA256, derive(b"mac")?.as_ref());
        Ok(Self {
            seal,
            fingerprint,
            mac,
            caps: Capabilities {
                algorithms: Algorithm::ALL.to_vec(),
                hardware: false,
                max_keys: None,
            },
        })
    }

    /// A new random master key.
    pub fn generate_master_key() -> Result<SecretKey32> {
        rng::key32()
    }

    fn seal_material(
        &self,
        name: &KeyName,
        version: u32,
        alg: Algorithm,
        material: &[u8],
    ) -> Result<KeyHandle> {
        let nonce = rng::nonce()?;
        let ct = self
            .seal
            .seal(&nonce, &material_aad(name, version, alg), material)?;
        let mut blob = Vec::with_capacity(1 + NONCE + ct.len());
        blob.push(SEALED_V1);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        Ok(KeyHandle::new(blob))
    }

    /// Seal new material (generated or imported) as the handle of `spec`.
    fn keep(
        &self,
        spec: &KeySpec<'_>,
        material: &SecretBytes,
        public: Option<Vec<u8>>,
    ) -> Result<GeneratedKey> {
        let handle =
            self.seal_material(spec.name, spec.version, spec.algorithm, material.expose())?;
        Ok(GeneratedKey {
            handle,
            public_key: public.map(|bytes| PublicKey {
                algorithm: spec.algorithm,
                bytes,
            }),
            origin: Origin::Software,
        })
    }

    /// Open a key's sealed material. A blob that does not open (wrong master key, another key's
    /// blob, tampering) is reported as corrupt material for that key, never with any bytes.
    fn unseal(&self, key: &KeyRef<'_>) -> Result<SecretBytes> {
        let blob = key.handle.as_bytes();
        let fail = || {
            Error::new(
                ErrorKind::Corrupt,
                format!(
                    "the sealed material of {} version {} does not open under this master key",
                    key.name, key.version
                ),
            )
        };
        if blob.len() < 1 + NONCE + aead::TAG || blob[0] != SEALED_V1 {
            return Err(fail());
        }
        self.seal
            .open(
                &blob[1..1 + NONCE],
                &material_aad(key.name, key.version, key.algorithm),
                &blob[1 + NONCE..],
            )
            .map_err(|_| fail())
    }

    fn aes_key(&self, key: &KeyRef<'_>) -> Result<AesGcmKey> {
        if key.algorithm != Algorithm::Aes256Gcm {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "key {} is {}, not an encryption key",
                    key.name, key.algorithm
                ),
            ));
        }
        AesGcmKey::new(self.unseal(key)?.expose())
    }
}

impl Provider for SoftwareProvider {
    fn name(&self) -> &str {
        "software"
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn generate(&self, spec: &KeySpec<'_>) -> Result<GeneratedKey> {
        let (material, public) = material::generate(spec.algorithm)?;
        self.keep(spec, &material, public)
    }

    fn public_key(&self, key: &KeyRef<'_>) -> Result<PublicKey> {
        let material = self.unseal(key)?;
        let bytes = material::public_key(key.algorithm, &material)?.ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!(
                    "key {} is {}; it has no public key",
                    key.name, key.algorithm
                ),
            )
        })?;
        Ok(PublicKey {
            algorithm: key.algorithm,
            bytes,
        })
    }

    fn encrypt(&self, key: &KeyRef<'_>, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let k = self.aes_key(key)?;
        let nonce = rng::nonce()?;
        let ct = k.seal(&nonce, aad, plaintext)?;
        let mut out = Vec::with_capacity(NONCE + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn decrypt(&self, key: &KeyRef<'_>, ciphertext: &[u8], aad: &[u8]) -> Result<SecretBytes> {
        let k = self.aes_key(key)?;
        if ciphertext.len() < NONCE + aead::TAG {
            return Err(Error::authentication_failed());
        }
        k.open(&ciphertext[..NONCE], aad, &ciphertext[NONCE..])
    }

    fn generate_data_key(&self, key: &KeyRef<'_>, aad: &[u8]) -> Result<(SecretKey32, Vec<u8>)> {
        let dek = Self::generate_master_key()?;
        let wrapped = self.encrypt(key, dek.expose(), aad)?;
        Ok((dek, wrapped))
    }

    fn sign(&self, key: &KeyRef<'_>, message: &[u8]) -> Result<Signature> {
        let material = self.unseal(key)?;
        material::sign(key.algorithm, &material, message).map(Signature)
    }

    fn sign_p256_digest(&self, key: &KeyRef<'_>, digest: &[u8; 32]) -> Result<Signature> {
        hanzo_kms_core::provider::require_p256(key)?;
        material::sign_p256_digest(&self.unseal(key)?, digest).map(Signature)
    }

    fn destroy(&self, _key: &KeyRef<'_>) -> Result<()> {
        // The material exists only as the sealed blob in the store; deleting that row (which the
        // service does in the same transaction) is the destruction.
        Ok(())
    }

    fn export_wrapped(&self, key: &KeyRef<'_>, kek: &SecretKey32, aad: &[u8]) -> Result<Vec<u8>> {
        backup_seal(kek, aad, self.unseal(key)?.expose())
    }

    fn import_wrapped(
        &self,
        spec: &KeySpec<'_>,
        kek: &SecretKey32,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<GeneratedKey> {
        let (material, public) = backup_open_key(spec, kek, aad, wrapped)?;
        self.keep(spec, &material, public)
    }

    fn health(&self) -> Health {
        Health::Ok
    }

    fn mac(&self, data: &[u8]) -> Result<[u8; 32]> {
        hmac::sign(&self.mac, data)
            .as_ref()
            .try_into()
            .map_err(|_| Error::internal("HMAC-SHA256 output is not 32 bytes"))
    }

    fn fingerprint(&self, context: &[u8]) -> Result<[u8; 32]> {
        let tag = hmac::sign(&self.fingerprint, context);
        tag.as_ref()
            .try_into()
            .map_err(|_| Error::internal("HMAC-SHA256 output is not 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hanzo_kms_core::Separator;

    fn provider(byte: u8) -> SoftwareProvider {
        SoftwareProvider::new(&SecretKey32::from_bytes([byte; 32])).unwrap()
    }

    fn name(s: &str) -> KeyName {
        KeyName::parse(s, Separator::default()).unwrap()
    }

    fn gen_key(p: &SoftwareProvider, n: &KeyName, alg: Algorithm) -> GeneratedKey {
        p.generate(&KeySpec {
            name: n,
            version: 1,
            algorithm: alg,
            label: "x",
        })
        .unwrap()
    }

    #[test]
    fn sealed_blob_is_bound_to_name_version_and_master_key() {
        let p = provider(1);
        let n = name("data:acme:k");
        let g = gen_key(&p, &n, Algorithm::Aes256Gcm);
        let r = KeyRef {
            name: &n,
            version: 1,
            algorithm: Algorithm::Aes256Gcm,
            handle: &g.handle,
        };
        let ct = p.encrypt(&r, b"secret", b"").unwrap();
        assert_eq!(p.decrypt(&r, &ct, b"").unwrap().expose(), b"secret");

        let other = name("data:acme:other");
        let moved = KeyRef { name: &other, ..r };
        assert_eq!(
            p.decrypt(&moved, &ct, b"").unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        let v2 = KeyRef { version: 2, ..r };
        assert_eq!(
            p.decrypt(&v2, &ct, b"").unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        let wrong_master = provider(2);
        let e = wrong_master.decrypt(&r, &ct, b"").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains("data:acme:k version 1"), "{e}");
    }

    #[test]
    fn data_keys_wrap_and_unwrap() {
        let p = provider(3);
        let n = name("model:acme:gpt4");
        let g = gen_key(&p, &n, Algorithm::Aes256Gcm);
        let r = KeyRef {
            name: &n,
            version: 1,
            algorithm: Algorithm::Aes256Gcm,
            handle: &g.handle,
        };
        let (dek, wrapped) = p.generate_data_key(&r, b"model=gpt4").unwrap();
        let back = p.unwrap_data_key(&r, &wrapped, b"model=gpt4").unwrap();
        assert!(dek.ct_eq(&back));
        assert_eq!(
            p.unwrap_data_key(&r, &wrapped, b"model=gpt5")
                .unwrap_err()
                .kind(),
            ErrorKind::AuthenticationFailed
        );
    }

    #[test]
    fn every_signing_algorithm_signs_and_verifies() {
        let p = provider(4);
        for alg in [
            Algorithm::Secp256k1,
            Algorithm::P256,
            Algorithm::Ed25519,
            Algorithm::MlDsa65,
        ] {
            let n = name("api:acme:signer");
            let g = gen_key(&p, &n, alg);
            let r = KeyRef {
                name: &n,
                version: 1,
                algorithm: alg,
                handle: &g.handle,
            };
            let pk = p.public_key(&r).unwrap();
            assert_eq!(Some(&pk), g.public_key.as_ref());
            let msg = [0x42u8; 32];
            let sig = p.sign(&r, &msg).unwrap();
            assert!(
                hanzo_kms_crypto::verify::verify(alg, &pk.bytes, &msg, &sig.0),
                "{alg}"
            );
            let mut other = msg;
            other[0] ^= 1;
            assert!(
                !hanzo_kms_crypto::verify::verify(alg, &pk.bytes, &other, &sig.0),
                "{alg}"
            );
        }
    }

    #[test]
    fn secp256k1_signature_is_low_s_with_eth_v() {
        let p = provider(5);
        let n = name("poai:acme:gpt4");
        let g = gen_key(&p, &n, Algorithm::Secp256k1);
        let r = KeyRef {
            name: &n,
            version: 1,
            algorithm: Algorithm::Secp256k1,
            handle: &g.handle,
        };
        for i in 0..64u8 {
            let sig = p.sign(&r, &[i; 32]).unwrap().0;
            assert_eq!(sig.len(), 65);
            assert!(sig[64] == 27 || sig[64] == 28);
            assert!(hanzo_kms_crypto::verify::is_low_s(&sig[32..64]));
        }
        assert_eq!(
            p.sign(&r, b"short").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }

    proptest::proptest! {
        #[test]
        fn sealed_blobs_round_trip_and_reject_any_flip(
            material in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            version in 1u32..1000,
            customer in "[a-z0-9][a-z0-9-]{0,20}",
            flip in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let p = provider(9);
            let n = KeyName::new(hanzo_kms_core::Purpose::Data, &customer, "k", Separator::default()).unwrap();
            let h = p.seal_material(&n, version, Algorithm::Aes256Gcm, &material).unwrap();
            let r = KeyRef { name: &n, version, algorithm: Algorithm::Aes256Gcm, handle: &h };
            let opened = p.unseal(&r).unwrap();
            proptest::prop_assert_eq!(opened.expose(), material.as_slice());
            let mut bad = h.as_bytes().to_vec();
            let i = flip.index(bad.len() * 8);
            bad[i / 8] ^= 1 << (i % 8);
            let bad = KeyHandle::new(bad);
            let r = KeyRef { handle: &bad, ..r };
            proptest::prop_assert_eq!(p.unseal(&r).unwrap_err().kind(), ErrorKind::Corrupt);
        }
    }

    #[test]
    fn fingerprint_depends_on_master_key_and_context() {
        assert_eq!(
            provider(1).fingerprint(b"s").unwrap(),
            provider(1).fingerprint(b"s").unwrap()
        );
        assert_ne!(
            provider(1).fingerprint(b"s").unwrap(),
            provider(2).fingerprint(b"s").unwrap()
        );
        assert_ne!(
            provider(1).fingerprint(b"s").unwrap(),
            provider(1).fingerprint(b"t").unwrap()
        );
    }
}
