//! The provider: opening a token (module, slot, login, root objects, what the device can do)
//! and the [`Provider`] implementation over the resident and wrapped key paths.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hanzo_kms_core::config::{Pkcs11Fallback, ProviderKind, SigningKeys, WrappingScheme};
use hanzo_kms_core::{
    Algorithm, Capabilities, Error, ErrorKind, GeneratedKey, Health, KeyRef, KeySpec, Origin,
    Provider, PublicKey, Result, SecretBytes, SecretKey32, Signature,
};
use hanzo_kms_crypto::rng;
use zeroize::Zeroizing;

use crate::error::{hsm_error, is_bad_tag, pool_error, pool_error_ctx};
use crate::gcm::{gcm_decrypt, gcm_encrypt, iv_len, random_iv};
use crate::handle::{Handle, ID_LEN, TAG_LEN, resident_handle};
use crate::module::{self, find_token};
use crate::objects::{ObjectCache, OpError, logged_in, wipe_values};
use crate::profile::Profile;
use crate::roots::{ROOT_MAC_ID, find_or_make_secret, missing_root, open_root};
use crate::scheme::{self, RootPublic, root_class, root_object_id};
use crate::settings::Pkcs11Settings;
use crate::{PoolStats, pool};
use hanzo_kms_crypto::cache::UnwrapCache;

/// A PKCS#11 token used as a Hanzo KMS provider.
pub struct Pkcs11Provider {
    pub(crate) vendor: ProviderKind,
    pub(crate) profile: &'static Profile,
    pub(crate) token_label: String,
    pub(crate) module: PathBuf,
    pub(crate) ctx: Pkcs11,
    pub(crate) pool: pool::Pool,
    pub(crate) caps: Capabilities,
    /// Algorithms generated and used inside the device.
    pub(crate) resident: Vec<Algorithm>,
    pub(crate) signing_keys: SigningKeys,
    pub(crate) fallback: Pkcs11Fallback,
    /// New AES keys may leave the token wrapped (`CKA_EXTRACTABLE`, still sensitive):
    /// `exportable` in the config.
    pub(crate) exportable: bool,
    /// Without HMAC in the device: the MAC key, sealed in the token and opened at start
    /// (`None`: the device computes MACs with the root MAC key).
    pub(crate) mac_key: Option<hanzo_kms_core::SecretKey32>,
    /// How this token seals values kept outside it, and its root's public part and id.
    pub(crate) scheme: WrappingScheme,
    pub(crate) root: RootPublic,
    pub(crate) root_id: [u8; ID_LEN],
    /// Unwrapped hsm-wrapped keys, for `wrapped_key_cache`.
    pub(crate) unwrapped: UnwrapCache,
    /// `CKM_AES_KEY_WRAP_PAD` may be used (exporting AES keys made `exportable`).
    pub(crate) kwp: bool,
    /// A bad GCM tag reads as `CKR_GENERAL_ERROR` (the profile says so, or the module is
    /// SoftHSM2, whatever profile a test restricts it to).
    pub(crate) bad_tag_general: bool,
    /// Thales Luna FIPS mode: the device makes 16-byte GCM IVs.
    pub(crate) fips_mode: bool,
    /// Object handles by (class, CKA_ID), valid for one pool generation.
    pub(crate) objects: Mutex<ObjectCache>,
}

impl fmt::Debug for Pkcs11Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Provider")
            .field("vendor", &self.vendor)
            .field("token", &self.token_label)
            .field("wrapping", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Provider {
    /// Load the module, find the token, log in, and find (or, with `create_roots`, make) the root
    /// objects. Every failure names the module, token or config path, never the PIN.
    pub fn open(settings: &Pkcs11Settings, create_roots: bool) -> Result<Self> {
        let vendor = settings.vendor;
        let profile = Profile::of(vendor).ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!("{vendor} has no PKCS#11 profile"),
            )
        })?;
        let ctx = module::load(&settings.module, vendor)?;
        let (slot, token_label, _serial) = find_token(&ctx, &settings.token, &settings.module)?;
        // Ask per mechanism (C_GetMechanismInfo) rather than for the whole list: the list holds
        // vendor mechanisms that cryptoki cannot name and logs as errors. The config's
        // `mechanisms` filter comes first: what it leaves out is never used.
        let has = |m: MechanismType| {
            settings.mechanisms.permits(m) && ctx.get_mechanism_info(slot, m).is_ok()
        };
        let scheme = scheme::choose(settings.wrapping, profile, &has).map_err(|why| {
            Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{vendor} token '{token_label}' fits no wrapping scheme hanzo-kms can use: {why} \
                     (see docs/providers.md, \"Wrapping schemes\")"
                ),
            )
        })?;
        let software = ctx
            .get_library_info()
            .is_ok_and(|i| i.manufacturer_id().contains("SoftHSM"));
        let resident: Vec<Algorithm> = profile
            .signing
            .iter()
            .copied()
            .filter(|a| match a {
                Algorithm::Ed25519 => {
                    has(MechanismType::ECC_EDWARDS_KEY_PAIR_GEN) && has(MechanismType::EDDSA)
                }
                _ => has(MechanismType::ECC_KEY_PAIR_GEN) && has(MechanismType::ECDSA),
            })
            .collect();
        for a in profile.signing.iter().filter(|a| !resident.contains(a)) {
            tracing::warn!(%vendor, token = %token_label, algorithm = %a,
                "the profile claims this algorithm but the token lists no mechanism for it");
        }
        let hmac = profile.hmac_sha256
            && has(MechanismType::SHA256_HMAC)
            && has(MechanismType::GENERIC_SECRET_KEY_GEN);
        let (want, module_path) = (settings.token.clone(), settings.module.clone());
        let locate: pool::Locate = Box::new(move |ctx: &Pkcs11| {
            find_token(ctx, &want, &module_path)
                .ok()
                .map(|(slot, _, _)| slot)
        });
        let pool = pool::Pool::new(
            ctx.clone(),
            slot,
            locate,
            settings.pin.clone(),
            settings.user_type,
            settings.max_sessions,
        )
        .map_err(|e| pool_error(e, &token_label, Some(&settings.pin_source)))?;
        let (root, root_id) = open_root(&pool, scheme, create_roots, &token_label)?
            .ok_or_else(|| missing_root(&token_label, root_object_id(scheme)))?;
        if hmac {
            let found: Option<ObjectHandle> =
                find_or_make_secret(&pool, ROOT_MAC_ID, create_roots, &token_label)?;
            found.ok_or_else(|| missing_root(&token_label, ROOT_MAC_ID))?;
        }
        let mut algorithms = vec![Algorithm::Aes256Gcm];
        for a in Algorithm::ALL.iter() {
            if *a == Algorithm::Aes256Gcm {
                continue;
            }
            if resident.contains(a)
                || settings.fallback == Pkcs11Fallback::Wrap
                || settings.signing_keys == SigningKeys::HsmWrapped
            {
                algorithms.push(*a);
            }
        }
        let kwp = has(MechanismType::AES_KEY_WRAP_PAD);
        let mut p = Self {
            vendor,
            profile,
            token_label,
            module: settings.module.clone(),
            ctx,
            pool,
            caps: Capabilities {
                algorithms,
                hardware: true,
                max_keys: profile.max_keys,
            },
            resident,
            signing_keys: settings.signing_keys,
            fallback: settings.fallback,
            exportable: settings.exportable,
            mac_key: None,
            scheme,
            root,
            root_id,
            unwrapped: UnwrapCache::new(settings.wrapped_key_cache),
            kwp,
            bad_tag_general: profile.gcm_bad_tag_is_general_error || software,
            fips_mode: settings.fips_mode,
            objects: Mutex::new(ObjectCache::default()),
        };
        if !hmac {
            p.mac_key = Some(
                p.open_sealed_mac(create_roots)?
                    .ok_or_else(|| missing_root(&p.token_label, b"hanzo-kms/root/mac-sealed"))?,
            );
        }
        tracing::info!(%vendor, token = %p.token_label, wrapping = %scheme, hmac,
            "PKCS#11 token opened");
        Ok(p)
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.token_label
    }

    /// The vendor profile in force.
    pub fn profile(&self) -> &'static Profile {
        self.profile
    }

    /// Session pool counters.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// The size of the session pool.
    pub fn max_sessions(&self) -> usize {
        self.pool.max_sessions()
    }

    /// The wrapping scheme this token seals with.
    pub fn wrapping(&self) -> WrappingScheme {
        self.scheme
    }

    /// The PKCS#11 module this provider loaded (test support opens its own sessions on it).
    pub fn module(&self) -> &Path {
        &self.module
    }

    pub(crate) fn call_error(&self, e: pool::PoolError, what: String) -> Error {
        pool_error_ctx(e, &self.token_label, what)
    }

    pub(crate) fn module_error(&self, e: OpError, what: String) -> Error {
        match e {
            OpError::Kms(e) => e,
            OpError::Module(e) => hsm_error(e, format!("{what} on token '{}'", self.token_label)),
        }
    }
}

impl Provider for Pkcs11Provider {
    fn name(&self) -> &str {
        self.vendor.as_str()
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn generate(&self, spec: &KeySpec<'_>) -> Result<GeneratedKey> {
        if spec.algorithm == Algorithm::Aes256Gcm {
            // A device without AES-GCM keeps AES keys sealed under its root instead.
            return if self.scheme == WrappingScheme::AesGcm {
                self.generate_resident(spec)
            } else {
                self.generate_wrapped(spec)
            };
        }
        let native = self.resident.contains(&spec.algorithm);
        match (native, self.signing_keys, self.fallback) {
            (true, SigningKeys::HsmResident, _) => self.generate_resident(spec),
            (_, SigningKeys::HsmWrapped, _) | (false, _, Pkcs11Fallback::Wrap) => {
                self.generate_wrapped(spec)
            }
            (false, SigningKeys::HsmResident, Pkcs11Fallback::Refuse) => Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{} token '{}' cannot hold {} keys, and kms.lux.{}.fallback is refuse \
                     (set it to wrap to keep such keys wrapped under the token's KEK)",
                    self.vendor, self.token_label, spec.algorithm, self.vendor
                ),
            )),
        }
    }

    fn public_key(&self, key: &KeyRef<'_>) -> Result<PublicKey> {
        let bytes = match Handle::parse(key)? {
            Handle::Resident { public, .. } if !public.is_empty() => public.to_vec(),
            Handle::Resident { .. } => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "key {} is {}; it has no public key",
                        key.name, key.algorithm
                    ),
                ));
            }
            Handle::Wrapped(sealed) => {
                let material = self.unwrap_material(key, &sealed)?;
                hanzo_kms_crypto::material::public_key(key.algorithm, &material)?.ok_or_else(
                    || {
                        Error::new(
                            ErrorKind::Unsupported,
                            format!("key {} has no public key", key.name),
                        )
                    },
                )?
            }
        };
        Ok(PublicKey {
            algorithm: key.algorithm,
            bytes,
        })
    }

    fn encrypt(&self, key: &KeyRef<'_>, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let id = match self.aes_key(key)? {
            Handle::Resident { id, .. } => id,
            Handle::Wrapped(sealed) => {
                let kek = self.unwrap_material(key, &sealed)?;
                let nonce = hanzo_kms_crypto::rng::nonce()?;
                let ct = hanzo_kms_crypto::aead::AesGcmKey::new(kek.expose())?
                    .seal(&nonce, aad, plaintext)?;
                return Ok([nonce.as_slice(), &ct].concat());
            }
        };
        let iv = random_iv()?;
        let (iv, ct) = self
            .with_object(key, ObjectClass::SECRET_KEY, &id, "encrypting", |s, h| {
                gcm_encrypt(s, h, &iv, aad, plaintext, self.fips_mode)
            })
            .map_err(|e| self.module_error(e, format!("encrypting with {}", key.name)))?;
        let mut out = Vec::with_capacity(iv.len() + ct.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn decrypt(&self, key: &KeyRef<'_>, ciphertext: &[u8], aad: &[u8]) -> Result<SecretBytes> {
        let id = match self.aes_key(key)? {
            Handle::Resident { id, .. } => id,
            Handle::Wrapped(sealed) => {
                if ciphertext.len() < hanzo_kms_crypto::aead::NONCE + TAG_LEN {
                    return Err(Error::authentication_failed());
                }
                let kek = self.unwrap_material(key, &sealed)?;
                let (nonce, ct) = ciphertext.split_at(hanzo_kms_crypto::aead::NONCE);
                return hanzo_kms_crypto::aead::AesGcmKey::new(kek.expose())?.open(nonce, aad, ct);
            }
        };
        let iv_len = iv_len(self.fips_mode);
        if ciphertext.len() < iv_len + TAG_LEN {
            return Err(Error::authentication_failed());
        }
        let (iv, ct) = ciphertext.split_at(iv_len);
        match self.with_object(key, ObjectClass::SECRET_KEY, &id, "decrypting", |s, h| {
            gcm_decrypt(s, h, iv, aad, ct)
        }) {
            Ok(p) => Ok(p),
            Err(OpError::Module(e)) if is_bad_tag(self.bad_tag_general, &e) => {
                Err(Error::authentication_failed())
            }
            Err(e) => Err(self.module_error(e, format!("decrypting with {}", key.name))),
        }
    }

    fn generate_data_key(&self, key: &KeyRef<'_>, aad: &[u8]) -> Result<(SecretKey32, Vec<u8>)> {
        let mut dek = Zeroizing::new([0u8; 32]);
        rng::fill(dek.as_mut())?;
        let dek = SecretKey32::from_bytes(*dek);
        let wrapped = self.encrypt(key, dek.expose(), aad)?;
        Ok((dek, wrapped))
    }

    fn sign(&self, key: &KeyRef<'_>, message: &[u8]) -> Result<Signature> {
        match Handle::parse(key)? {
            Handle::Resident { id, public } => {
                self.sign_resident(key, &id, public, message).map(Signature)
            }
            Handle::Wrapped(sealed) => {
                let material = self.unwrap_material(key, &sealed)?;
                hanzo_kms_crypto::material::sign(key.algorithm, &material, message).map(Signature)
            }
        }
    }

    fn sign_p256_digest(&self, key: &KeyRef<'_>, digest: &[u8; 32]) -> Result<Signature> {
        hanzo_kms_core::provider::require_p256(key)?;
        match Handle::parse(key)? {
            Handle::Resident { id, .. } => self
                .sign_p256_digest_resident(key, &id, digest)
                .map(Signature),
            Handle::Wrapped(sealed) => {
                let material = self.unwrap_material(key, &sealed)?;
                hanzo_kms_crypto::material::sign_p256_digest(&material, digest).map(Signature)
            }
        }
    }

    fn export_wrapped(&self, key: &KeyRef<'_>, kek: &SecretKey32, aad: &[u8]) -> Result<Vec<u8>> {
        match Handle::parse(key)? {
            Handle::Wrapped(sealed) => {
                let material = self.unwrap_material(key, &sealed)?;
                hanzo_kms_crypto::seal::backup_seal(kek, aad, material.expose())
            }
            Handle::Resident { id, .. } if key.algorithm == Algorithm::Aes256Gcm => {
                self.export_aes(key, &id, kek, aad)
            }
            Handle::Resident { .. } => Err(self.not_exportable(key)),
        }
    }

    /// Signing keys come in hsm-wrapped (sealed under this token's root); AES keys become token
    /// objects made as generated ones are (sensitive; extractable, wrapped only, just with
    /// `exportable`), or sealed like signing keys where the scheme is not `aes-gcm`.
    fn import_wrapped(
        &self,
        spec: &KeySpec<'_>,
        kek: &SecretKey32,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<GeneratedKey> {
        let (material, public) = hanzo_kms_crypto::seal::backup_open_key(spec, kek, aad, wrapped)?;
        if spec.algorithm != Algorithm::Aes256Gcm {
            return self.keep_wrapped(spec, &material, public);
        }
        if self.scheme != WrappingScheme::AesGcm {
            return self.keep_wrapped(spec, &material, None);
        }
        let mut id = [0u8; ID_LEN];
        rng::fill(&mut id)?;
        let mut t = self.aes_template(spec.label.as_bytes().to_vec(), &id);
        t.push(Attribute::Value(material.expose().to_vec()));
        let created = self.pool.run(|s| s.create_object(&t));
        wipe_values(&mut t);
        created.map_err(|e| {
            self.call_error(
                e,
                format!("importing {} version {}", spec.name, spec.version),
            )
        })?;
        Ok(GeneratedKey {
            handle: resident_handle(&id, &[]),
            public_key: None,
            origin: Origin::HsmResident,
        })
    }

    fn destroy(&self, key: &KeyRef<'_>) -> Result<()> {
        let Handle::Resident { id, .. } = Handle::parse(key)? else {
            // The material exists only sealed in the store; deleting the row destroys it, and
            // nothing unwrapped may outlive it here.
            self.unwrapped.clear();
            return Ok(());
        };
        let classes: &[ObjectClass] = if key.algorithm == Algorithm::Aes256Gcm {
            &[ObjectClass::SECRET_KEY]
        } else {
            &[ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY]
        };
        for class in classes {
            self.pool
                .run(|s| {
                    for h in
                        s.find_objects(&[Attribute::Class(*class), Attribute::Id(id.to_vec())])?
                    {
                        s.destroy_object(h)?;
                    }
                    Ok(())
                })
                .map_err(|e| {
                    self.call_error(
                        e,
                        format!("destroying {} version {}", key.name, key.version),
                    )
                })?;
        }
        self.cache().map.retain(|(_, i), _| i != &id);
        Ok(())
    }

    /// The token answers, the login holds, and the wrapping root is still there (a token that
    /// lost its objects is not healthy). After an outage, the pooled probe rebuilds the sessions and
    /// login and finds the token's slot afresh, so a recovered device passes again.
    fn health(&self) -> Health {
        let probe = |s: &Session| {
            let found = s.find_objects(&[
                Attribute::Class(root_class(self.scheme)),
                Attribute::Id(root_object_id(self.scheme).to_vec()),
            ])?;
            if !found.is_empty() {
                return Ok(());
            }
            Err(CkError::Pkcs11(
                if logged_in(s)? {
                    RvError::KeyHandleInvalid
                } else {
                    RvError::UserNotLoggedIn
                },
                cryptoki::context::Function::FindObjects,
            ))
        };
        let first = self
            .ctx
            .get_token_info(self.pool.slot())
            .and_then(|_| self.pool.anchor_alive());
        match (first, self.pool.run(probe)) {
            (_, Ok(())) => Health::Ok,
            (Err(e), Err(_)) => Health::Down(format!("token '{}': {e}", self.token_label)),
            (Ok(()), Err(e)) => Health::Down(format!(
                "token '{}': its root key is missing ({e:?})",
                self.token_label
            )),
        }
    }

    fn mac(&self, data: &[u8]) -> Result<[u8; 32]> {
        self.token_mac(data)
    }

    fn fingerprint(&self, context: &[u8]) -> Result<[u8; 32]> {
        self.store_fingerprint(context)
    }
}
