//! The native YubiHSM 2 [`Provider`]: key placement, device signatures normalised and checked,
//! hsm-wrapped keys sealed with Wrap Data and cached, MACs with an HMAC key in the device.
//!
//! | key | origin | where the material is |
//! |---|---|---|
//! | secp256k1, P-256, Ed25519 (default `signing_keys: hsm-resident`) | `hsm-resident` | an asymmetric key generated in the device (capability `sign-ecdsa` or `sign-eddsa` only, never `exportable-under-wrap`); DER answers normalised and verified here |
//! | AES-256 (model KEKs, `data:` keys) | `hsm-wrapped` | 32 random bytes sealed with Wrap Data; DEKs wrapped with AES-256-GCM in software under them (the device has no AES-GCM) |
//! | ML-DSA-65 (the device lacks it), every signing key with `signing_keys: hsm-wrapped`, every imported key | `hsm-wrapped` | generated in software, sealed with Wrap Data (aad = `material_aad`), opened by the device into zeroizing memory and cached for `wrapped_key_cache` |
//!
//! Root objects, made by `init` and found by label at every open: `hanzo-kms/root/wrap`
//! (wrap key, AES-256-CCM, `wrap-data` + `unwrap-data`) and `hanzo-kms/root/mac` (HMAC-SHA256
//! key, `sign-hmac`): token MACs `HMAC(root/mac, "hanzo-kms/mac/v1" ‖ 0 ‖ data)` and the store
//! fingerprint `HMAC(root/mac, "hanzo-kms/fingerprint/v1" ‖ 0 ‖ store id)`, computed in the device.

use hanzo_kms_core::config::SigningKeys;
use hanzo_kms_core::{
    Algorithm, Capabilities, Error, ErrorKind, GeneratedKey, Health, KeyRef, KeySpec, Origin,
    Provider, PublicKey, Result, SecretBytes, SecretKey32, Signature,
};
use hanzo_kms_crypto::aead::{AesGcmKey, NONCE, TAG};
use hanzo_kms_crypto::cache::{self, UnwrapCache};
use hanzo_kms_crypto::{ecdsa, material, rng, seal, verify};
use yubihsm::{Capability, Connector, HttpConfig, asymmetric, hmac, object, wrap};

use crate::device::Device;
use crate::handle::{self, Handle};
use crate::seal::Sealer;
use crate::settings::{SECTION, YubiHsmSettings};

/// The config's provider name.
pub const PROVIDER_NAME: &str = "yubihsm2-native";
/// Labels of the root objects.
pub const ROOT_WRAP_LABEL: &str = "hanzo-kms/root/wrap";
pub const ROOT_MAC_LABEL: &str = "hanzo-kms/root/mac";

const MAC_CONTEXT: &[u8] = b"hanzo-kms/mac/v1\0";
const FINGERPRINT_CONTEXT: &[u8] = b"hanzo-kms/fingerprint/v1\0";
const KEY_MATERIAL: &[u8] = b"key-material";

/// A [`Provider`] on a YubiHSM 2 through its own protocol.
pub struct YubiHsmProvider {
    device: Device,
    sealer: Sealer,
    mac_key: u16,
    caps: Capabilities,
    signing_keys: SigningKeys,
    unwrapped: UnwrapCache,
}

impl std::fmt::Debug for YubiHsmProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YubiHsmProvider")
            .field("connector_url", &self.device.connector_url())
            .field("scheme", &self.sealer.scheme())
            .finish_non_exhaustive()
    }
}

/// Which sealer an open uses (tests pick the test-only one).
pub(crate) enum SealKind {
    WrapData,
    #[cfg(test)]
    TestOnlyHmac,
}

impl YubiHsmProvider {
    /// Connect to yubihsm-connector at `connector_url`, log in, and find the root objects
    /// (with `create_roots`, as `init` does, make those missing). Errors name "YubiHSM 2", the
    /// config key and the cause.
    pub fn open(settings: &YubiHsmSettings, create_roots: bool) -> Result<Self> {
        let timeout_ms = u64::try_from(settings.timeout.as_millis()).unwrap_or(u64::MAX);
        let connector = Connector::http(&HttpConfig {
            addr: settings.host.clone(),
            port: settings.port,
            timeout_ms,
        });
        Self::open_on(connector, settings, create_roots, SealKind::WrapData)
    }

    pub(crate) fn open_on(
        connector: Connector,
        settings: &YubiHsmSettings,
        create_roots: bool,
        seal: SealKind,
    ) -> Result<Self> {
        let device = Device::open(connector, settings)?;
        let dev = &device;
        let root = |kind: object::Type, label: &str, what: &str, make: &dyn Fn() -> Result<u16>| {
            match dev.find(kind, label)? {
                Some(id) => Ok(id),
                None if create_roots => make(),
                None => Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "YubiHSM 2 at {} ({SECTION}.connector_url): the root object '{label}' ({what}) is not on the device \
                         or not visible to authentication key {} in domain {}: run `hanzo-kms init`, or this store \
                         was initialised against another device",
                        dev.connector_url(),
                        settings.auth_key_id,
                        settings.domain
                    ),
                )),
            }
        };
        let make_hmac = |label: &'static str, what: &'static str| {
            move || {
                dev.generate(object::Type::HmacKey, label, what, |c, id, l, d| {
                    c.generate_hmac_key(id, l, d, Capability::SIGN_HMAC, hmac::Algorithm::Sha256)
                })
            }
        };
        let mac_key = root(
            object::Type::HmacKey,
            ROOT_MAC_LABEL,
            "an HMAC-SHA256 key",
            &make_hmac(ROOT_MAC_LABEL, "the root MAC key"),
        )?;
        let wrap_key = root(
            object::Type::WrapKey,
            ROOT_WRAP_LABEL,
            "an AES-256-CCM wrap key",
            &|| {
                dev.generate(
                    object::Type::WrapKey,
                    ROOT_WRAP_LABEL,
                    "the root wrap key",
                    |c, id, l, d| {
                        c.generate_wrap_key(
                            id,
                            l,
                            d,
                            Capability::WRAP_DATA | Capability::UNWRAP_DATA,
                            Capability::empty(),
                            wrap::Algorithm::Aes256Ccm,
                        )
                    },
                )
            },
        )?;
        let sealer = match seal {
            SealKind::WrapData => Sealer::WrapData { key: wrap_key },
            #[cfg(test)]
            SealKind::TestOnlyHmac => {
                const LABEL: &str = "hanzo-kms/test-only/seal";
                let key = root(
                    object::Type::HmacKey,
                    LABEL,
                    "a test-only HMAC key",
                    &make_hmac(LABEL, "the test-only sealing key"),
                )?;
                Sealer::TestOnlyHmac { key }
            }
        };
        tracing::info!(
            connector = device.connector_url(),
            wrap_key,
            mac_key,
            scheme = sealer.scheme(),
            "YubiHSM 2 opened (native protocol)"
        );
        Ok(Self {
            device,
            sealer,
            mac_key,
            caps: Capabilities {
                algorithms: Algorithm::ALL.to_vec(),
                hardware: true,
                // 256 objects, two of them ours (roots) and one the authentication key.
                max_keys: Some(253),
            },
            signing_keys: settings.signing_keys,
            unwrapped: UnwrapCache::new(settings.wrapped_key_cache),
        })
    }

    /// yubihsm-connector's URL.
    pub fn connector_url(&self) -> &str {
        self.device.connector_url()
    }

    /// The sealing scheme's name (`yubihsm-wrap-data`).
    pub fn scheme(&self) -> &'static str {
        self.sealer.scheme()
    }

    /// Whether a new key of `alg` is generated in the device (else it is hsm-wrapped).
    pub fn resident(&self, alg: Algorithm) -> bool {
        self.signing_keys == SigningKeys::HsmResident && device_algorithm(alg).is_some()
    }

    fn keep_wrapped(
        &self,
        spec: &KeySpec<'_>,
        material: &SecretBytes,
        public: Option<Vec<u8>>,
    ) -> Result<GeneratedKey> {
        let aad = seal::material_aad(spec.name, spec.version, spec.algorithm);
        let sealed = self
            .sealer
            .seal(&self.device, KEY_MATERIAL, &aad, material.expose())
            .map_err(|e| e.context(format!("sealing {} version {}", spec.name, spec.version)))?;
        Ok(GeneratedKey {
            handle: handle::wrapped(&sealed),
            public_key: public.map(|bytes| PublicKey {
                algorithm: spec.algorithm,
                bytes,
            }),
            origin: Origin::HsmWrapped,
        })
    }

    /// The material of an hsm-wrapped key: from the cache, or opened by the device.
    fn material(&self, key: &KeyRef<'_>, sealed: &[u8]) -> Result<SecretBytes> {
        let aad = seal::material_aad(key.name, key.version, key.algorithm);
        let slot = cache::slot(&aad, key.handle.as_bytes());
        if let Some(m) = self.unwrapped.get(&slot) {
            return Ok(m);
        }
        let m = self
            .sealer
            .open(&self.device, KEY_MATERIAL, &aad, sealed)
            .map_err(|e| {
                if e.kind() == ErrorKind::AuthenticationFailed {
                    Error::new(
                        ErrorKind::Corrupt,
                        format!(
                            "the sealed material of {} version {} does not open on the YubiHSM 2 at {}: \
                             it was sealed for another key, by another device or scheme, or altered",
                            key.name,
                            key.version,
                            self.device.connector_url()
                        ),
                    )
                } else {
                    e.context(format!("opening {} version {}", key.name, key.version))
                }
            })?;
        self.unwrapped.put(slot, &m);
        Ok(m)
    }

    fn aes_key(&self, key: &KeyRef<'_>) -> Result<AesGcmKey> {
        if key.algorithm != Algorithm::Aes256Gcm {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "key {} is {}; it signs and does not encrypt",
                    key.name, key.algorithm
                ),
            ));
        }
        match Handle::parse(key)? {
            Handle::Wrapped { sealed } => {
                let m = self.material(key, sealed)?;
                AesGcmKey::new(m.expose())
            }
            Handle::Resident { .. } => Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{} version {} is an AES key with a device handle; AES keys are hsm-wrapped here",
                    key.name, key.version
                ),
            )),
        }
    }

    /// A device error about one key version, naming it and its object id.
    fn key_error(
        &self,
        key: &KeyRef<'_>,
        id: u16,
        doing: &str,
        e: yubihsm::client::Error,
    ) -> Error {
        let err = self.device.fail(doing, e);
        err.context(format!(
            "{} version {} (object 0x{id:04x})",
            key.name, key.version
        ))
    }

    /// A signature from the device, in our encoding and verified under the key's public key
    /// before it leaves.
    fn sign_resident(
        &self,
        key: &KeyRef<'_>,
        id: u16,
        public: &[u8],
        message: &[u8],
    ) -> Result<Vec<u8>> {
        let bad = |what: &str| self.bad_output(key, id, what);
        let client = self.device.client();
        let sig = match key.algorithm {
            Algorithm::Secp256k1 => {
                let digest: [u8; 32] = message.try_into().map_err(|_| {
                    Error::invalid(format!(
                        "secp256k1 signs a 32-byte digest, not {} bytes",
                        message.len()
                    ))
                })?;
                let der = client
                    .sign_ecdsa_prehash_raw(id, digest.to_vec())
                    .map_err(|e| self.key_error(key, id, "signing (ECDSA)", e))?;
                let raw = ecdsa::der_to_fixed(&der)
                    .ok_or_else(|| bad("a secp256k1 signature that is not DER"))?;
                ecdsa::to_eth_signature(&raw, &digest, public)
                    .ok_or_else(|| bad("a secp256k1 signature that does not verify"))?
            }
            Algorithm::P256 => {
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
                return self.sign_p256(key, id, public, digest.as_ref());
            }
            Algorithm::Ed25519 => client
                .sign_ed25519(id, message.to_vec())
                .map_err(|e| self.key_error(key, id, "signing (EdDSA)", e))?
                .to_bytes()
                .to_vec(),
            other => {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "{} is {other}, which cannot be hsm-resident on a YubiHSM 2",
                        key.name
                    ),
                ));
            }
        };
        if !verify::verify(key.algorithm, public, message, &sig) {
            return Err(bad(&format!(
                "a {} signature that does not verify",
                key.algorithm
            )));
        }
        Ok(sig)
    }

    /// The device answered a signing request for `key` (object `id`) with `what`.
    fn bad_output(&self, key: &KeyRef<'_>, id: u16, what: &str) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "YubiHSM 2 at {} returned {what} for {} version {} (object 0x{id:04x})",
                self.device.connector_url(),
                key.name,
                key.version
            ),
        )
    }

    /// P-256 over a 32-byte digest in the device: DER to fixed `r‖s`, verified.
    fn sign_p256(
        &self,
        key: &KeyRef<'_>,
        id: u16,
        public: &[u8],
        digest: &[u8],
    ) -> Result<Vec<u8>> {
        let bad = |what: &str| self.bad_output(key, id, what);
        let der = self
            .device
            .client()
            .sign_ecdsa_prehash_raw(id, digest.to_vec())
            .map_err(|e| self.key_error(key, id, "signing (ECDSA)", e))?;
        let sig = ecdsa::der_to_fixed(&der)
            .ok_or_else(|| bad("a P-256 signature that is not DER"))?
            .to_vec();
        let digest: &[u8; 32] = digest
            .try_into()
            .map_err(|_| Error::internal("a P-256 digest is 32 bytes"))?;
        if !verify::verify_p256_digest(public, digest, &sig) {
            return Err(bad("a p256 signature that does not verify"));
        }
        Ok(sig)
    }

    fn device_mac(&self, context: &[u8], data: &[u8]) -> Result<[u8; 32]> {
        let tag = self
            .device
            .client()
            .sign_hmac(self.mac_key, [context, data].concat())
            .map_err(|e| self.device.fail("HMAC with the root MAC key", e))?;
        tag.as_slice().try_into().map_err(|_| {
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "YubiHSM 2 at {} returned an HMAC-SHA256 tag of {} bytes",
                    self.device.connector_url(),
                    tag.len()
                ),
            )
        })
    }
}

/// The device's algorithm for a signing algorithm it holds, if it does.
fn device_algorithm(alg: Algorithm) -> Option<asymmetric::Algorithm> {
    match alg {
        Algorithm::Ed25519 => Some(asymmetric::Algorithm::Ed25519),
        Algorithm::P256 => Some(asymmetric::Algorithm::EcP256),
        Algorithm::Secp256k1 => Some(asymmetric::Algorithm::EcK256),
        _ => None,
    }
}

impl Provider for YubiHsmProvider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn generate(&self, spec: &KeySpec<'_>) -> Result<GeneratedKey> {
        let Some(dev_alg) =
            device_algorithm(spec.algorithm).filter(|_| self.resident(spec.algorithm))
        else {
            let (material, public) = material::generate(spec.algorithm)?;
            return self.keep_wrapped(spec, &material, public);
        };
        let what = format!("{} version {}", spec.name, spec.version);
        let eddsa = spec.algorithm == Algorithm::Ed25519;
        let id = self.device.generate(
            object::Type::AsymmetricKey,
            spec.label,
            &what,
            |c, id, l, d| {
                c.generate_asymmetric_key(id, l, d, Device::sign_capability(eddsa), dev_alg)
            },
        )?;
        let made = || -> Result<GeneratedKey> {
            let pk = self.device.client().get_public_key(id).map_err(|e| {
                self.device
                    .fail(&format!("reading the public key of {what}"), e)
            })?;
            let public = match (spec.algorithm, pk.bytes.len()) {
                (Algorithm::Ed25519, 32) => pk.bytes,
                (Algorithm::Secp256k1 | Algorithm::P256, 64) => [&[0x04][..], &pk.bytes].concat(),
                (_, n) => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!("YubiHSM 2 returned a {n}-byte public key for {what}"),
                    ));
                }
            };
            Ok(GeneratedKey {
                handle: handle::resident(id, &public),
                public_key: Some(PublicKey {
                    algorithm: spec.algorithm,
                    bytes: public,
                }),
                origin: Origin::HsmResident,
            })
        };
        made().inspect_err(|_| {
            // Leave no device key behind for a version that was never recorded.
            if let Err(e) = self.device.delete(id, object::Type::AsymmetricKey, &what) {
                tracing::warn!("YubiHSM 2: could not remove a half-made key: {e}");
            }
        })
    }

    fn public_key(&self, key: &KeyRef<'_>) -> Result<PublicKey> {
        let none = || {
            Error::new(
                ErrorKind::Unsupported,
                format!(
                    "key {} is {}; it has no public key",
                    key.name, key.algorithm
                ),
            )
        };
        if key.algorithm == Algorithm::Aes256Gcm {
            return Err(none());
        }
        let bytes = match Handle::parse(key)? {
            Handle::Resident { public, .. } => public.to_vec(),
            Handle::Wrapped { sealed } => {
                let m = self.material(key, sealed)?;
                material::public_key(key.algorithm, &m)?.ok_or_else(none)?
            }
        };
        Ok(PublicKey {
            algorithm: key.algorithm,
            bytes,
        })
    }

    fn encrypt(&self, key: &KeyRef<'_>, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let k = self.aes_key(key)?;
        let nonce = rng::nonce()?;
        Ok([nonce.as_slice(), &k.seal(&nonce, aad, plaintext)?].concat())
    }

    fn decrypt(&self, key: &KeyRef<'_>, ciphertext: &[u8], aad: &[u8]) -> Result<SecretBytes> {
        let k = self.aes_key(key)?;
        if ciphertext.len() < NONCE + TAG {
            return Err(Error::authentication_failed());
        }
        let (nonce, ct) = ciphertext.split_at(NONCE);
        k.open(nonce, aad, ct)
    }

    fn generate_data_key(&self, key: &KeyRef<'_>, aad: &[u8]) -> Result<(SecretKey32, Vec<u8>)> {
        let dek = rng::key32()?;
        let wrapped = self.wrap_data_key(key, &dek, aad)?;
        Ok((dek, wrapped))
    }

    fn sign(&self, key: &KeyRef<'_>, message: &[u8]) -> Result<Signature> {
        if key.algorithm == Algorithm::Aes256Gcm {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "key {} is aes-256-gcm; it encrypts and does not sign",
                    key.name
                ),
            ));
        }
        match Handle::parse(key)? {
            Handle::Resident { id, public } => {
                self.sign_resident(key, id, public, message).map(Signature)
            }
            Handle::Wrapped { sealed } => {
                let m = self.material(key, sealed)?;
                material::sign(key.algorithm, &m, message).map(Signature)
            }
        }
    }

    fn sign_p256_digest(&self, key: &KeyRef<'_>, digest: &[u8; 32]) -> Result<Signature> {
        hanzo_kms_core::provider::require_p256(key)?;
        match Handle::parse(key)? {
            Handle::Resident { id, public } => {
                self.sign_p256(key, id, public, digest).map(Signature)
            }
            Handle::Wrapped { sealed } => {
                let m = self.material(key, sealed)?;
                material::sign_p256_digest(&m, digest).map(Signature)
            }
        }
    }

    fn destroy(&self, key: &KeyRef<'_>) -> Result<()> {
        match Handle::parse(key)? {
            Handle::Resident { id, .. } => self.device.delete(
                id,
                object::Type::AsymmetricKey,
                &format!("{} version {}", key.name, key.version),
            ),
            Handle::Wrapped { .. } => {
                // The material exists only sealed in the store; nothing opened may outlive it.
                self.unwrapped.clear();
                Ok(())
            }
        }
    }

    fn health(&self) -> Health {
        match self.device.ping() {
            Ok(()) => Health::Ok,
            Err(e) => Health::Down(e.to_string()),
        }
    }

    fn mac(&self, data: &[u8]) -> Result<[u8; 32]> {
        self.device_mac(MAC_CONTEXT, data)
    }

    fn export_wrapped(&self, key: &KeyRef<'_>, kek: &SecretKey32, aad: &[u8]) -> Result<Vec<u8>> {
        match Handle::parse(key)? {
            Handle::Wrapped { sealed } => {
                let m = self.material(key, sealed)?;
                seal::backup_seal(kek, aad, m.expose())
            }
            Handle::Resident { id, .. } => Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "key {} version {} is hsm-resident in the YubiHSM 2 (object 0x{id:04x}) and never leaves it \
                     (only hsm-wrapped keys can be exported or migrated)",
                    key.name, key.version
                ),
            )),
        }
    }

    /// Every imported key becomes hsm-wrapped (sealed with Wrap Data).
    fn import_wrapped(
        &self,
        spec: &KeySpec<'_>,
        kek: &SecretKey32,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<GeneratedKey> {
        let (m, public) = seal::backup_open_key(spec, kek, aad, wrapped)?;
        self.keep_wrapped(spec, &m, public)
    }

    fn fingerprint(&self, context: &[u8]) -> Result<[u8; 32]> {
        self.device_mac(FINGERPRINT_CONTEXT, context)
    }
}
