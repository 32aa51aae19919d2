//! The PKCS#11 provider: one implementation on `cryptoki` for every HSM, with a capability
//! [`Profile`] per vendor (STYLE.md 4).
//!
//! # Keys
//! - **AES-256 keys** (model KEKs, data keys) are always *hsm-resident*: generated in the token with
//!   `CKA_TOKEN`, `CKA_SENSITIVE`, `!CKA_EXTRACTABLE`, and used there with `CKM_AES_GCM` to wrap
//!   data keys. The weights themselves never reach the device (DESIGN.md §2).
//! - **Signing keys** are *hsm-resident* when the profile has the algorithm (secp256k1 and P-256
//!   with `CKM_ECDSA`, Ed25519 with `CKM_EDDSA`), and *hsm-wrapped* otherwise (ML-DSA-65
//!   everywhere) or when `signing_keys: hsm-wrapped` asks for software speed: generated in
//!   software, stored in the database wrapped under the token's root KEK, and unwrapped into
//!   zeroizing memory for each use. `fallback: refuse` turns the first case into an error.
//!
//! # Handles (stored in the database; not secret)
//! ```text
//! resident = 0x11 ‖ CKA_ID(16) ‖ public key (SEC1 uncompressed, or 32-byte Ed25519; empty for AES)
//! wrapped  = 0x12 ‖ root KEK CKA_ID(16) ‖ iv(12) ‖ AES-256-GCM(root KEK, iv, material,
//!              aad = the software provider's sealing AAD: name, version, algorithm)
//! ```
//! Labels are the provider label the service passes (`key_prefix` + name + `/v` + version); the
//! `CKA_ID` is 16 random bytes fixed at generation, so two stores sharing a token never collide.
//!
//! # Root objects
//! `init` creates two objects per token, found by their fixed `CKA_ID`: the root KEK
//! (`hanzo-kms/root/kek`, AES-256) that wraps hsm-wrapped keys, and, where the profile has HMAC,
//! the root MAC key (`hanzo-kms/root/mac`, a 256-bit generic secret). The store's provider
//! fingerprint is `HMAC-SHA256(root MAC, "hanzo-kms/fingerprint/v1" ‖ 0x00 ‖ store id)`, so a data
//! directory opened against the wrong token is refused before anything changes.
//!
//! # Signatures
//! The device returns ECDSA as raw r‖s. For secp256k1 the provider normalises S to the low half
//! and finds v ∈ {27, 28} by recovering with both ids against the stored public key (DESIGN.md
//! §2 point 3), so HSM signatures are indistinguishable in form from software ones. P-256 signs
//! SHA-256(message) with `CKM_ECDSA`; Ed25519 signs the message with pure `CKM_EDDSA`.

#![forbid(unsafe_code)]

pub mod profile;
pub mod softhsm;

mod module;
mod pool;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use hanzo_kms_core::config::{Pkcs11Config, Pkcs11Fallback, ProviderKind, SigningKeys};
use hanzo_kms_core::{
    Algorithm, Capabilities, Error, ErrorKind, GeneratedKey, Health, KeyHandle, KeyRef, KeySpec,
    Origin, Provider, PublicKey, Result, SecretBytes, SecretKey32, Signature,
};
use hanzo_kms_crypto::rng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use pool::{PoolStats, WAIT_LIMIT};
pub use profile::{PROFILES, Profile};

const RESIDENT_V1: u8 = 0x11;
const WRAPPED_V1: u8 = 0x12;
const ID_LEN: usize = 16;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
const ROOT_KEK_ID: &[u8] = b"hanzo-kms/root/kek";
const ROOT_MAC_ID: &[u8] = b"hanzo-kms/root/mac";
/// Default size of the session pool.
pub const DEFAULT_MAX_SESSIONS: usize = 4;

/// DER `OBJECT IDENTIFIER`s for `CKA_EC_PARAMS`.
const OID_SECP256K1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// Where the PIN came from, for messages (never the PIN itself).
#[derive(Clone, Debug)]
enum PinSource {
    Config,
    Env(String),
    File(PathBuf),
}

impl fmt::Display for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config => f.write_str("the config's pin"),
            Self::Env(v) => write!(f, "${v}"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Everything [`Pkcs11Provider::open`] needs, resolved from a config section.
pub struct Pkcs11Settings {
    pub vendor: ProviderKind,
    pub module: PathBuf,
    pub token: TokenSelector,
    pin: AuthPin,
    pin_source: PinSource,
    pub user_type: UserType,
    pub max_sessions: usize,
    pub signing_keys: SigningKeys,
    pub fallback: Pkcs11Fallback,
    pub exportable: bool,
}

impl fmt::Debug for Pkcs11Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Settings")
            .field("vendor", &self.vendor)
            .field("module", &self.module)
            .field("token", &self.token)
            .field("pin", &format_args!("<from {}>", self.pin_source))
            .field("max_sessions", &self.max_sessions)
            .finish_non_exhaustive()
    }
}

/// Which token to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSelector {
    Label(String),
    Slot(u64),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label(l) => write!(f, "token '{l}'"),
            Self::Slot(s) => write!(f, "slot {s}"),
        }
    }
}

impl Pkcs11Settings {
    /// Resolve `kms.lux.<vendor>` (absent = all defaults). Reads the PIN from the environment
    /// variable or file the section names.
    pub fn from_config(vendor: ProviderKind, section: Option<&Pkcs11Config>) -> Result<Self> {
        let default = Pkcs11Config::default();
        let c = section.unwrap_or(&default);
        let path = format!("kms.lux.{vendor}");
        let profile = Profile::of(vendor).ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!("{vendor} is not a PKCS#11 provider"),
            )
        })?;
        let module = c
            .module
            .clone()
            .unwrap_or_else(|| PathBuf::from(profile.default_module));
        let token = match (&c.token_label, c.slot) {
            (Some(_), Some(_)) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{path}: set token_label or slot, not both"),
                ));
            }
            (Some(l), None) => TokenSelector::Label(l.clone()),
            (None, Some(s)) => TokenSelector::Slot(s),
            (None, None) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{path}: name the token with token_label (or slot)"),
                ));
            }
        };
        let (pin, pin_source) = match (&c.pin, &c.pin_env, &c.pin_file) {
            (Some(p), None, None) => (p.expose().to_owned(), PinSource::Config),
            (None, Some(var), None) => match std::env::var(var) {
                Ok(p) => (p, PinSource::Env(var.clone())),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!("{path}.pin_env names ${var}, which is not set"),
                    ));
                }
            },
            (None, None, Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    Error::new(
                        ErrorKind::Config,
                        format!("{path}.pin_file: cannot read {}", file.display()),
                    )
                    .with_source(e)
                })?;
                let pin = text.trim_end_matches(['\r', '\n']).to_owned();
                (pin, PinSource::File(file.clone()))
            }
            (None, None, None) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{path}: no PIN; set pin_env (recommended), pin_file or pin"),
                ));
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{path}: set only one of pin, pin_env and pin_file"),
                ));
            }
        };
        let user_type = match c.user_type.as_deref() {
            None | Some("user") => UserType::User,
            Some("so") => UserType::So,
            Some("crypto-user") => UserType::VendorExtension(0x8000_0001),
            Some(other) => {
                let n = other
                    .strip_prefix("0x")
                    .map(|h| u32::from_str_radix(h, 16))
                    .unwrap_or_else(|| other.parse());
                match n {
                    Ok(n) => UserType::VendorExtension(n),
                    Err(_) => {
                        return Err(Error::new(
                            ErrorKind::Config,
                            format!(
                                "{path}.user_type: '{other}' is not user, so, crypto-user or a number"
                            ),
                        ));
                    }
                }
            }
        };
        let max_sessions = match c.max_sessions {
            None => DEFAULT_MAX_SESSIONS,
            Some(0) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{path}.max_sessions must be at least 1"),
                ));
            }
            Some(n) => n as usize,
        };
        Ok(Self {
            vendor,
            module,
            token,
            pin: AuthPin::from(pin),
            pin_source,
            user_type,
            max_sessions,
            signing_keys: c.signing_keys,
            fallback: c.fallback,
            exportable: c.exportable,
        })
    }
}

/// A PKCS#11 token used as a Hanzo KMS provider.
pub struct Pkcs11Provider {
    vendor: ProviderKind,
    profile: &'static Profile,
    token_label: String,
    serial: String,
    ctx: Pkcs11,
    pool: pool::Pool,
    caps: Capabilities,
    /// Algorithms generated and used inside the device.
    resident: Vec<Algorithm>,
    signing_keys: SigningKeys,
    fallback: Pkcs11Fallback,
    /// AES keys are created extractable (wrapped only): `exportable` in the config.
    exportable: bool,
    /// Whether the token holds the root MAC key (profile and mechanisms have HMAC).
    has_mac: bool,
    /// Object handles by (class, CKA_ID), valid for one pool generation.
    objects: Mutex<ObjectCache>,
}

impl fmt::Debug for Pkcs11Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Provider")
            .field("vendor", &self.vendor)
            .field("token", &self.token_label)
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
        let (slot, token_label, serial) = find_token(&ctx, &settings.token, &settings.module)?;
        // Ask per mechanism (C_GetMechanismInfo) rather than for the whole list: the list holds
        // vendor mechanisms that cryptoki cannot name and logs as errors.
        let has = |m: MechanismType| ctx.get_mechanism_info(slot, m).is_ok();
        if !(profile.aes_gcm && has(MechanismType::AES_GCM) && has(MechanismType::AES_KEY_GEN)) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{vendor} token '{token_label}' offers no AES-256-GCM (CKM_AES_GCM) through PKCS#11; \
                     hanzo-kms keeps model KEKs and its root KEK in the device and needs it \
                     (see docs/providers.md)"
                ),
            ));
        }
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
        let roots = |id: &'static [u8], make: bool| -> Result<Option<ObjectHandle>> {
            find_or_make_root(&pool, id, make, &token_label)
        };
        roots(ROOT_KEK_ID, create_roots)?.ok_or_else(|| missing_root(&token_label))?;
        if hmac {
            roots(ROOT_MAC_ID, create_roots)?.ok_or_else(|| missing_root(&token_label))?;
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
        Ok(Self {
            vendor,
            profile,
            token_label,
            serial,
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
            has_mac: hmac,
            objects: Mutex::new(ObjectCache::default()),
        })
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

    /// The raw `C_Sign` loop the sign benchmark compares against: `iterations` calls of the
    /// device's own mechanism on `message` (the digest for ECDSA), on one pooled session, with no
    /// normalisation or recovery. Only for hsm-resident signing keys.
    pub fn bench_raw_sign(&self, key: &KeyRef<'_>, message: &[u8], iterations: u64) -> Result<()> {
        let Handle::Resident { id, .. } = Handle::parse(key)? else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("{} is not hsm-resident", key.name),
            ));
        };
        let object = self.object(key, ObjectClass::PRIVATE_KEY, &id)?;
        let digest;
        let (mechanism, data): (Mechanism<'_>, &[u8]) = match key.algorithm {
            Algorithm::Secp256k1 => (Mechanism::Ecdsa, message),
            Algorithm::P256 => {
                digest = Sha256::digest(message);
                (Mechanism::Ecdsa, &digest[..])
            }
            Algorithm::Ed25519 => (
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                message,
            ),
            other => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("{other} does not sign in the device"),
                ));
            }
        };
        self.pool
            .run(|s| {
                for _ in 0..iterations {
                    s.sign(&mechanism, object, data)?;
                }
                Ok(())
            })
            .map_err(|e| self.call_error(e, format!("signing with {}", key.name)))
    }

    fn call_error(&self, e: pool::PoolError, what: String) -> Error {
        pool_error_ctx(e, &self.token_label, what)
    }

    /// Find a key's object, by class and CKA_ID, through the cache.
    fn object(
        &self,
        key: &KeyRef<'_>,
        class: ObjectClass,
        id: &[u8; ID_LEN],
    ) -> Result<ObjectHandle> {
        let cache_key = (class_tag(class), *id);
        let generation = {
            let c = self.cache();
            if let Some(h) = c.map.get(&cache_key) {
                return Ok(*h);
            }
            c.generation
        };
        let found = self
            .pool
            .run(|s| {
                let found =
                    s.find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])?;
                if found.is_empty() && !logged_in(s)? {
                    // Private objects are invisible without a login, and C_FindObjects does not
                    // say so; ask the pool to log in again rather than report the key missing.
                    return Err(CkError::Pkcs11(
                        RvError::UserNotLoggedIn,
                        cryptoki::context::Function::FindObjects,
                    ));
                }
                Ok(found)
            })
            .map_err(|e| {
                self.call_error(
                    e,
                    format!("looking up {} version {}", key.name, key.version),
                )
            })?;
        let Some(h) = found.first().copied() else {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "key {} version {} is missing from token '{}' (CKA_ID {}); it was deleted outside \
                     hanzo-kms, or this store belongs to another token",
                    key.name,
                    key.version,
                    self.token_label,
                    hex::encode(id)
                ),
            ));
        };
        let mut c = self.cache();
        // Cache only if no recovery happened since the lookup began: a handle found in an older
        // generation may name another object now.
        if c.generation == generation {
            c.map.insert(cache_key, h);
        }
        Ok(h)
    }

    /// A root object's handle, found on `s` at most once per pool generation. A root that has
    /// vanished reads as `CKR_KEY_HANDLE_INVALID`.
    fn root(
        &self,
        s: &Session,
        which: &'static [u8],
    ) -> std::result::Result<ObjectHandle, CkError> {
        let cache_key = (3, root_id(which));
        let generation = {
            let c = self.cache();
            if let Some(h) = c.map.get(&cache_key) {
                return Ok(*h);
            }
            c.generation
        };
        let found = s.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Id(which.to_vec()),
        ])?;
        let h = found.first().copied().ok_or(CkError::Pkcs11(
            if logged_in(s)? {
                RvError::KeyHandleInvalid
            } else {
                RvError::UserNotLoggedIn
            },
            cryptoki::context::Function::FindObjects,
        ))?;
        let mut c = self.cache();
        // Cache only if no recovery happened since the lookup began: a handle found in an older
        // generation may name another object now.
        if c.generation == generation {
            c.map.insert(cache_key, h);
        }
        Ok(h)
    }

    /// The object cache, emptied first if the pool recovered since it was filled.
    fn cache(&self) -> std::sync::MutexGuard<'_, ObjectCache> {
        let generation = self.pool.generation();
        let mut c = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        if c.generation != generation {
            c.generation = generation;
            c.map.clear();
        }
        c
    }

    /// Run one operation on a key's object; if the cached handle went stale (the object was
    /// deleted or the pool recovered), look it up again once.
    fn with_object<T>(
        &self,
        key: &KeyRef<'_>,
        class: ObjectClass,
        id: &[u8; ID_LEN],
        what: &str,
        mut f: impl FnMut(&Session, ObjectHandle) -> std::result::Result<T, CkError>,
    ) -> std::result::Result<T, OpError> {
        for attempt in 0..2 {
            let h = self.object(key, class, id).map_err(OpError::Kms)?;
            match self.pool.run(|s| f(s, h)) {
                Err(pool::PoolError::Call(CkError::Pkcs11(
                    RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid,
                    _,
                ))) if attempt == 0 => {
                    self.cache().map.clear();
                }
                Err(pool::PoolError::Call(e)) => return Err(OpError::Module(e)),
                Err(other) => {
                    return Err(OpError::Kms(self.call_error(
                        other,
                        format!("{what} with {} version {}", key.name, key.version),
                    )));
                }
                Ok(v) => return Ok(v),
            }
        }
        Err(OpError::Kms(
            self.object(key, class, id).err().unwrap_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "{what} with {}: the token keeps invalidating the key's handle",
                        key.name
                    ),
                )
            }),
        ))
    }

    fn module_error(&self, e: OpError, what: String) -> Error {
        match e {
            OpError::Kms(e) => e,
            OpError::Module(e) => hsm_error(e, format!("{what} on token '{}'", self.token_label)),
        }
    }

    fn wrap_material(&self, key: &KeySpec<'_>, material: &[u8]) -> Result<KeyHandle> {
        let iv = random_iv()?;
        let aad = hanzo_kms_crypto::seal::material_aad(key.name, key.version, key.algorithm);
        let (iv, ct) = self
            .pool
            .run(|s| gcm_encrypt(s, self.root(s, ROOT_KEK_ID)?, &iv, &aad, material))
            .map_err(|e| self.call_error(e, format!("wrapping {} under the root KEK", key.name)))?;
        let mut blob = Vec::with_capacity(1 + ID_LEN + IV_LEN + ct.len());
        blob.push(WRAPPED_V1);
        blob.extend_from_slice(&root_id(ROOT_KEK_ID));
        blob.extend_from_slice(&iv);
        blob.extend_from_slice(&ct);
        Ok(KeyHandle::new(blob))
    }

    fn unwrap_material(&self, key: &KeyRef<'_>, iv: &[u8], ct: &[u8]) -> Result<SecretBytes> {
        let aad = hanzo_kms_crypto::seal::material_aad(key.name, key.version, key.algorithm);
        let corrupt = || {
            Error::new(
                ErrorKind::Corrupt,
                format!(
                    "the wrapped material of {} version {} does not open under the root KEK of token '{}'",
                    key.name, key.version, self.token_label
                ),
            )
        };
        match self
            .pool
            .run(|s| gcm_decrypt(s, self.root(s, ROOT_KEK_ID)?, iv, &aad, ct))
        {
            Ok(m) => Ok(m),
            Err(pool::PoolError::Call(e)) if self.is_bad_tag(&e) => Err(corrupt()),
            Err(e) => Err(self.call_error(e, format!("unwrapping {}", key.name))),
        }
    }

    /// A token AES key's template, without CKA_VALUE or CKA_VALUE_LEN: private, sensitive,
    /// extractable (wrapped only) just when `exportable`, for encryption and decryption.
    fn aes_template(&self, label: Vec<u8>, id: &[u8; ID_LEN]) -> Vec<Attribute> {
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

    fn not_exportable(&self, key: &KeyRef<'_>) -> Error {
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
    fn export_aes(
        &self,
        key: &KeyRef<'_>,
        id: &[u8; ID_LEN],
        kek: &SecretKey32,
        aad: &[u8],
    ) -> Result<Vec<u8>> {
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

    fn is_bad_tag(&self, e: &CkError) -> bool {
        match e {
            CkError::Pkcs11(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange, _) => {
                true
            }
            CkError::Pkcs11(RvError::GeneralError, _) => self.profile.gcm_bad_tag_is_general_error,
            _ => false,
        }
    }

    fn generate_resident(&self, spec: &KeySpec<'_>) -> Result<GeneratedKey> {
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

    fn generate_wrapped(&self, spec: &KeySpec<'_>) -> Result<GeneratedKey> {
        let (material, public) = hanzo_kms_crypto::material::generate(spec.algorithm)?;
        self.keep_wrapped(spec, &material, public)
    }

    /// Wrap new signing-key material (generated or imported) under the root KEK.
    fn keep_wrapped(
        &self,
        spec: &KeySpec<'_>,
        material: &SecretBytes,
        public: Option<Vec<u8>>,
    ) -> Result<GeneratedKey> {
        let handle = self.wrap_material(spec, material.expose())?;
        Ok(GeneratedKey {
            handle,
            public_key: public.map(|bytes| PublicKey {
                algorithm: spec.algorithm,
                bytes,
            }),
            origin: Origin::HsmWrapped,
        })
    }

    fn aes_object(&self, key: &KeyRef<'_>) -> Result<[u8; ID_LEN]> {
        if key.algorithm != Algorithm::Aes256Gcm {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("key {} is {}; it does not encrypt", key.name, key.algorithm),
            ));
        }
        match Handle::parse(key)? {
            Handle::Resident { id, .. } => Ok(id),
            Handle::Wrapped { .. } => Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "AES key {} has a wrapped handle; AES keys live in the token",
                    key.name
                ),
            )),
        }
    }

    fn sign_resident(
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
                let digest = Sha256::digest(message);
                let raw = self
                    .with_object(key, ObjectClass::PRIVATE_KEY, id, what, |s, h| {
                        s.sign(&Mechanism::Ecdsa, h, &digest)
                    })
                    .map_err(|e| self.module_error(e, format!("signing with {}", key.name)))?;
                if raw.len() != 64 {
                    return Err(bad_signature_len(&self.token_label, key, raw.len()));
                }
                Ok(raw)
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

impl Provider for Pkcs11Provider {
    fn name(&self) -> &str {
        self.vendor.as_str()
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn generate(&self, spec: &KeySpec<'_>) -> Result<GeneratedKey> {
        if spec.algorithm == Algorithm::Aes256Gcm {
            return self.generate_resident(spec);
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
            Handle::Wrapped { iv, ct } => {
                let material = self.unwrap_material(key, iv, ct)?;
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
        let id = self.aes_object(key)?;
        let iv = random_iv()?;
        let (iv, ct) = self
            .with_object(key, ObjectClass::SECRET_KEY, &id, "encrypting", |s, h| {
                gcm_encrypt(s, h, &iv, aad, plaintext)
            })
            .map_err(|e| self.module_error(e, format!("encrypting with {}", key.name)))?;
        let mut out = Vec::with_capacity(IV_LEN + ct.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn decrypt(&self, key: &KeyRef<'_>, ciphertext: &[u8], aad: &[u8]) -> Result<SecretBytes> {
        let id = self.aes_object(key)?;
        if ciphertext.len() < IV_LEN + TAG_LEN {
            return Err(Error::authentication_failed());
        }
        let (iv, ct) = ciphertext.split_at(IV_LEN);
        match self.with_object(key, ObjectClass::SECRET_KEY, &id, "decrypting", |s, h| {
            gcm_decrypt(s, h, iv, aad, ct)
        }) {
            Ok(p) => Ok(p),
            Err(OpError::Module(e)) if self.is_bad_tag(&e) => Err(Error::authentication_failed()),
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
            Handle::Wrapped { iv, ct } => {
                let material = self.unwrap_material(key, iv, ct)?;
                hanzo_kms_crypto::material::sign(key.algorithm, &material, message).map(Signature)
            }
        }
    }

    fn export_wrapped(&self, key: &KeyRef<'_>, kek: &SecretKey32, aad: &[u8]) -> Result<Vec<u8>> {
        match Handle::parse(key)? {
            Handle::Wrapped { iv, ct } => {
                let material = self.unwrap_material(key, iv, ct)?;
                hanzo_kms_crypto::seal::backup_seal(kek, aad, material.expose())
            }
            Handle::Resident { id, .. } if key.algorithm == Algorithm::Aes256Gcm => {
                self.export_aes(key, &id, kek, aad)
            }
            Handle::Resident { .. } => Err(self.not_exportable(key)),
        }
    }

    /// Signing keys come in hsm-wrapped (under this token's KEK); AES keys become token objects
    /// (sensitive, non-extractable), as keys generated here are.
    fn import_wrapped(
        &self,
        spec: &KeySpec<'_>,
        kek: &SecretKey32,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<GeneratedKey> {
        let material = hanzo_kms_crypto::seal::backup_open(kek, aad, wrapped)?;
        if spec.algorithm != Algorithm::Aes256Gcm {
            let public = hanzo_kms_crypto::material::public_key(spec.algorithm, &material)?;
            return self.keep_wrapped(spec, &material, public);
        }
        if material.len() != 32 {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("the AES material of {} is not 32 bytes", spec.name),
            ));
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
            // The material exists only wrapped in the store; deleting the row destroys it.
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

    /// The token answers, the login holds, and the root KEK is still there (a token that lost
    /// its objects is not healthy). After an outage, the pooled probe rebuilds the sessions and
    /// login and finds the token's slot afresh, so a recovered device passes again.
    fn health(&self) -> Health {
        let probe = |s: &Session| {
            let found = s.find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Id(ROOT_KEK_ID.to_vec()),
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
        let mut msg = b"hanzo-kms/mac/v1\0".to_vec();
        msg.extend_from_slice(data);
        let tag = if self.has_mac {
            self.pool
                .run(|s| s.sign(&Mechanism::Sha256Hmac, self.root(s, ROOT_MAC_ID)?, &msg))
                .map_err(|e| self.call_error(e, "computing an HMAC".into()))?
        } else {
            // No HMAC in the device: an unkeyed SHA-256. Token secrets carry 256 bits of
            // entropy, so this still stores nothing reversible (docs/providers.md).
            Sha256::digest(&msg).to_vec()
        };
        tag.as_slice()
            .try_into()
            .map_err(|_| Error::internal("HMAC-SHA256 output is not 32 bytes"))
    }

    fn fingerprint(&self, context: &[u8]) -> Result<[u8; 32]> {
        let mut msg = b"hanzo-kms/fingerprint/v1\0".to_vec();
        msg.extend_from_slice(context);
        let tag = if self.has_mac {
            self.pool
                .run(|s| s.sign(&Mechanism::Sha256Hmac, self.root(s, ROOT_MAC_ID)?, &msg))
                .map_err(|e| self.call_error(e, "computing the store fingerprint".into()))?
        } else {
            // Without HMAC in the device the fingerprint identifies the token (serial
            // number) rather than a secret in it; docs/providers.md says so.
            let mut h = Sha256::new();
            h.update(b"hanzo-kms/fingerprint/no-hmac/v1\0");
            h.update(self.serial.as_bytes());
            h.update([0]);
            h.update(&msg);
            h.finalize().to_vec()
        };
        tag.as_slice()
            .try_into()
            .map_err(|_| Error::internal("HMAC-SHA256 output is not 32 bytes"))
    }
}

#[derive(Default)]
struct ObjectCache {
    generation: u64,
    map: HashMap<(u8, [u8; ID_LEN]), ObjectHandle>,
}

/// An operation on a key's object failed: either already a Hanzo error (lookup, pool) or the
/// module's own answer, kept so the caller can read its code (a bad tag, say).
enum OpError {
    Kms(Error),
    Module(CkError),
}

/// A parsed handle.
enum Handle<'a> {
    Resident { id: [u8; ID_LEN], public: &'a [u8] },
    Wrapped { iv: &'a [u8], ct: &'a [u8] },
}

impl<'a> Handle<'a> {
    fn parse(key: &KeyRef<'a>) -> Result<Self> {
        let b = key.handle.as_bytes();
        let bad = || {
            Error::new(
                ErrorKind::Corrupt,
                format!(
                    "the stored handle of {} version {} is not a PKCS#11 handle (was it made by another provider?)",
                    key.name, key.version
                ),
            )
        };
        match b.first() {
            Some(&RESIDENT_V1) if b.len() > ID_LEN => {
                let id = b[1..1 + ID_LEN].try_into().map_err(|_| bad())?;
                Ok(Self::Resident {
                    id,
                    public: &b[1 + ID_LEN..],
                })
            }
            Some(&WRAPPED_V1) if b.len() >= 1 + ID_LEN + IV_LEN + TAG_LEN => {
                if b[1..1 + ID_LEN] != root_id(ROOT_KEK_ID) {
                    return Err(bad());
                }
                let rest = &b[1 + ID_LEN..];
                Ok(Self::Wrapped {
                    iv: &rest[..IV_LEN],
                    ct: &rest[IV_LEN..],
                })
            }
            _ => Err(bad()),
        }
    }
}

/// Wipe the key bytes (CKA_VALUE) a template carried into the module.
fn wipe_values(t: &mut [Attribute]) {
    for a in t {
        if let Attribute::Value(v) = a {
            zeroize::Zeroize::zeroize(v);
        }
    }
}

fn logged_in(s: &Session) -> std::result::Result<bool, CkError> {
    use cryptoki::session::SessionState;
    Ok(matches!(
        s.get_session_info()?.session_state(),
        SessionState::RoUser | SessionState::RwUser
    ))
}

fn resident_handle(id: &[u8; ID_LEN], public: &[u8]) -> KeyHandle {
    let mut b = Vec::with_capacity(1 + ID_LEN + public.len());
    b.push(RESIDENT_V1);
    b.extend_from_slice(id);
    b.extend_from_slice(public);
    KeyHandle::new(b)
}

/// The 16-byte form of a root object's CKA_ID as recorded in wrapped handles.
fn root_id(id: &[u8]) -> [u8; ID_LEN] {
    let d = Sha256::digest(id);
    let mut out = [0u8; ID_LEN];
    out.copy_from_slice(&d[..ID_LEN]);
    out
}

fn class_tag(c: ObjectClass) -> u8 {
    if c == ObjectClass::SECRET_KEY {
        0
    } else if c == ObjectClass::PRIVATE_KEY {
        1
    } else {
        2
    }
}

fn random_iv() -> Result<[u8; IV_LEN]> {
    let mut iv = [0u8; IV_LEN];
    rng::fill(&mut iv)?;
    Ok(iv)
}

fn gcm_encrypt(
    s: &Session,
    key: ObjectHandle,
    iv: &[u8; IV_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> std::result::Result<([u8; IV_LEN], Vec<u8>), CkError> {
    let mut iv = *iv;
    let params = GcmParams::new(&mut iv, aad, 128.into())?;
    let ct = s.encrypt(&Mechanism::AesGcm(params), key, plaintext)?;
    // A device that generates its own IV (AWS CloudHSM) writes it back into the parameters.
    Ok((iv, ct))
}

fn gcm_decrypt(
    s: &Session,
    key: ObjectHandle,
    iv: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> std::result::Result<SecretBytes, CkError> {
    let mut iv = iv.to_vec();
    let params = GcmParams::new(&mut iv, aad, 128.into())?;
    s.decrypt(&Mechanism::AesGcm(params), key, ct)
        .map(SecretBytes::new)
}

fn find_or_make_root(
    pool: &pool::Pool,
    id: &'static [u8],
    make: bool,
    token: &str,
) -> Result<Option<ObjectHandle>> {
    let found = pool
        .run(|s| {
            s.find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Id(id.to_vec()),
            ])
        })
        .map_err(|e| pool_error_ctx(e, token, "looking up the root keys".into()))?;
    if let Some(h) = found.first() {
        return Ok(Some(*h));
    }
    if !make {
        return Ok(None);
    }
    let (mechanism, key_type, usage) = if id == ROOT_KEK_ID {
        (
            Mechanism::AesKeyGen,
            KeyType::AES,
            usage(Usage::EncryptDecrypt),
        )
    } else {
        (
            Mechanism::GenericSecretKeyGen,
            KeyType::GENERIC_SECRET,
            usage(Usage::Mac),
        )
    };
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Label(id.to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    template.extend(usage);
    pool.run(|s| s.generate_key(&mechanism, &template))
        .map(Some)
        .map_err(|e| pool_error_ctx(e, token, "creating the root keys".into()))
}

/// What a secret key may do. Everything else is set false explicitly (least privilege: a key
/// that only wraps data keys cannot unwrap foreign keys into the token or derive new ones).
enum Usage {
    EncryptDecrypt,
    Mac,
}

fn usage(u: Usage) -> Vec<Attribute> {
    let (crypt, mac) = match u {
        Usage::EncryptDecrypt => (true, false),
        Usage::Mac => (false, true),
    };
    vec![
        Attribute::Encrypt(crypt),
        Attribute::Decrypt(crypt),
        Attribute::Sign(mac),
        Attribute::Verify(mac),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
    ]
}

fn missing_root(token: &str) -> Error {
    Error::new(
        ErrorKind::MasterKeyMismatch,
        format!(
            "token '{token}' holds no hanzo-kms root key (CKA_ID hanzo-kms/root/kek); this data directory \
             was initialised against another token, or the root key was deleted; nothing was changed"
        ),
    )
}

fn find_token(ctx: &Pkcs11, want: &TokenSelector, module: &Path) -> Result<(Slot, String, String)> {
    let _scan = module::SLOT_SCAN.lock().unwrap_or_else(|e| e.into_inner());
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| hsm_error(e, format!("listing the slots of {}", module.display())))?;
    let mut labels = Vec::new();
    for slot in slots {
        let info = match ctx.get_token_info(slot) {
            Ok(info) => info,
            Err(e) => {
                // One broken token must not hide the healthy one we are looking for.
                let rv = match &e {
                    CkError::Pkcs11(rv, _) => rv_name(*rv),
                    other => other.to_string(),
                };
                labels.push(format!("slot {} (unreadable: {rv})", slot.id()));
                continue;
            }
        };
        if !info.token_initialized() {
            continue;
        }
        let label = info.label().trim_end().to_owned();
        let serial = info.serial_number().trim_end().to_owned();
        let hit = match want {
            TokenSelector::Label(l) => *l == label,
            TokenSelector::Slot(s) => *s == slot.id(),
        };
        if hit {
            return Ok((slot, label, serial));
        }
        labels.push(format!("'{label}' (slot {})", slot.id()));
    }
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "{want} is not among the initialised tokens of {}: {}",
            module.display(),
            if labels.is_empty() {
                "there are none".to_owned()
            } else {
                labels.join(", ")
            }
        ),
    ))
}

/// Parse `CKA_EC_POINT`: a DER OCTET STRING around the point (some modules return it bare).
fn parse_ec_point(alg: Algorithm, der: &[u8]) -> Option<Vec<u8>> {
    let want = if alg == Algorithm::Ed25519 { 32 } else { 65 };
    let inner = match der {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() && rest.len() == want => rest,
        bare if bare.len() == want => bare,
        _ => return None,
    };
    if alg != Algorithm::Ed25519 && inner[0] != 0x04 {
        return None;
    }
    Some(inner.to_vec())
}

/// Turn a device's raw secp256k1 r‖s into our r‖s‖v: S normalised to the low half, v found by
/// recovering with both ids against the expected public key. `None` if it does not verify.
pub fn to_eth_signature(raw: &[u8], digest: &[u8; 32], public: &[u8]) -> Option<Vec<u8>> {
    let mut sig = secp256k1::ecdsa::Signature::from_compact(raw).ok()?;
    sig.normalize_s();
    let rs = sig.serialize_compact();
    let msg = secp256k1::Message::from_digest(*digest);
    let with_v = |v: u8| {
        let mut out = rs.to_vec();
        out.push(v);
        out
    };
    // Recovery id 0 first: if it yields our key, v = 27 and the signature is verified.
    let rec0 = secp256k1::ecdsa::RecoverableSignature::from_compact(
        &rs,
        secp256k1::ecdsa::RecoveryId::Zero,
    )
    .ok()?;
    if rec0
        .recover_ecdsa(msg)
        .is_ok_and(|pk| pk.serialize_uncompressed().as_slice() == public)
    {
        return Some(with_v(27));
    }
    // Otherwise a valid signature recovers with id 1 (ids 2 and 3 need r ≥ n, probability
    // ~2^-128). A plain verification (cheaper than a second recovery) tells valid from not.
    let pk = secp256k1::PublicKey::from_slice(public).ok()?;
    sig.verify(msg, &pk).ok()?;
    Some(with_v(28))
}

fn bad_signature_len(token: &str, key: &KeyRef<'_>, len: usize) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "token '{token}' returned a {len}-byte {} signature for {}; expected 64",
            key.algorithm, key.name
        ),
    )
}

/// A module error, with what we were doing. The module's own text is kept (it never contains a
/// PIN: PINs are never passed to calls that fail with messages we render).
fn hsm_error(e: CkError, what: String) -> Error {
    let kind = match &e {
        CkError::Pkcs11(rv, _) => match rv {
            RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::SessionCount
            | RvError::GeneralError
            | RvError::FunctionFailed => ErrorKind::Unavailable,
            RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::CurveNotSupported
            | RvError::FunctionNotSupported => ErrorKind::Unsupported,
            _ => ErrorKind::Unavailable,
        },
        _ => ErrorKind::Unavailable,
    };
    let code = match &e {
        CkError::Pkcs11(rv, f) => format!("{f}: {}", rv_name(*rv)),
        other => other.to_string(),
    };
    Error::new(kind, format!("{what}: the PKCS#11 module answered {code}")).with_source(e)
}

fn rv_name(rv: RvError) -> String {
    // RvError's Display is a paragraph of the spec; its Debug is the short name.
    format!("CKR_{}", to_snake_upper(&format!("{rv:?}")))
}

fn to_snake_upper(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn pool_error(e: pool::PoolError, token: &str, pin: Option<&PinSource>) -> Error {
    match e {
        pool::PoolError::Login(CkError::Pkcs11(RvError::PinIncorrect, _)) => Error::new(
            ErrorKind::Config,
            format!(
                "logging in to token '{token}' failed: the PIN from {} is incorrect",
                pin.map_or_else(|| "the config".to_owned(), |p| p.to_string())
            ),
        ),
        pool::PoolError::Login(CkError::Pkcs11(RvError::PinLocked, _)) => Error::new(
            ErrorKind::Config,
            format!("logging in to token '{token}' failed: the user PIN is locked"),
        ),
        pool::PoolError::Login(e) => hsm_error(e, format!("logging in to token '{token}'")),
        other => pool_error_ctx(other, token, "opening sessions".into()),
    }
}

fn pool_error_ctx(e: pool::PoolError, token: &str, what: String) -> Error {
    match e {
        pool::PoolError::Call(e) => hsm_error(e, format!("{what} on token '{token}'")),
        pool::PoolError::Login(e) => {
            hsm_error(e, format!("{what}: logging in again to token '{token}'"))
        }
        pool::PoolError::Exhausted => Error::new(
            ErrorKind::Unavailable,
            format!(
                "{what}: every session to token '{token}' stayed busy for {} s",
                WAIT_LIMIT.as_secs()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_parsing_accepts_der_and_bare_points_only_of_the_right_size() {
        let mut point = vec![0x04];
        point.extend([7u8; 64]);
        let mut der = vec![0x04, 65];
        der.extend(&point);
        assert_eq!(
            parse_ec_point(Algorithm::Secp256k1, &der),
            Some(point.clone())
        );
        assert_eq!(parse_ec_point(Algorithm::P256, &point), Some(point.clone()));
        assert_eq!(parse_ec_point(Algorithm::Secp256k1, &der[..60]), None);
        let ed = [9u8; 32];
        let mut ed_der = vec![0x04, 32];
        ed_der.extend(ed);
        assert_eq!(
            parse_ec_point(Algorithm::Ed25519, &ed_der),
            Some(ed.to_vec())
        );
        let mut compressed = vec![0x04, 33, 0x02];
        compressed.extend([1u8; 32]);
        assert_eq!(parse_ec_point(Algorithm::Secp256k1, &compressed), None);
    }

    #[test]
    fn high_s_device_signatures_are_normalised_and_get_the_right_v() {
        // Sign in software, then flip S to the high half, as a device may return it.
        let sk = secp256k1::SecretKey::from_secret_bytes([0x42; 32]).unwrap();
        let pk = secp256k1::PublicKey::from_secret_key(&sk).serialize_uncompressed();
        for i in 0u8..8 {
            let digest = Sha256::digest([i]).into();
            let sig = secp256k1::ecdsa::RecoverableSignature::sign_ecdsa_recoverable(
                secp256k1::Message::from_digest(digest),
                &sk,
            )
            .to_standard();
            let low: [u8; 64] = sig.serialize_compact();
            let n = secp256k1::constants::CURVE_ORDER;
            let mut high = low;
            // s' = n - s, big-endian subtraction.
            let mut borrow = 0i16;
            for j in (0..32).rev() {
                let d = i16::from(n[j]) - i16::from(low[32 + j]) - borrow;
                high[32 + j] = d.rem_euclid(256) as u8;
                borrow = i16::from(d < 0);
            }
            for raw in [low, high] {
                let out = to_eth_signature(&raw, &digest, &pk).unwrap();
                assert_eq!(&out[..64], &low[..]);
                assert!(hanzo_kms_crypto::verify::is_low_s(&out[32..64]));
                assert_eq!(
                    hanzo_kms_crypto::verify::recover_secp256k1(&digest, &out),
                    Some(pk)
                );
            }
            let other = secp256k1::PublicKey::from_secret_key(
                &secp256k1::SecretKey::from_secret_bytes([0x43; 32]).unwrap(),
            )
            .serialize_uncompressed();
            assert_eq!(to_eth_signature(&low, &digest, &other), None);
        }
    }

    #[test]
    fn module_errors_read_as_short_codes() {
        assert_eq!(rv_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            rv_name(RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
    }
}

#[cfg(test)]
mod recovery_tests {
    //! Session recovery on a real SoftHSM2 token. These live inside the crate because they
    //! reach the process's module context to break the sessions from outside the provider.
    use super::*;
    use hanzo_kms_core::{KeyName, Separator};

    fn provider(test: &str) -> (softhsm::Token, Pkcs11Provider) {
        let t = softhsm::Token::create(&format!("{test}-{}", std::process::id()))
            .unwrap_or_else(|e| panic!("SoftHSM2 is needed (apt-get install softhsm2): {e}"));
        let s = Pkcs11Settings::from_config(ProviderKind::Softhsm2, Some(&t.section())).unwrap();
        let p = Pkcs11Provider::open(&s, true).unwrap();
        (t, p)
    }

    #[test]
    fn signing_recovers_after_the_login_is_lost_and_after_c_finalize() {
        let (t, p) = provider("relogin");
        let n = KeyName::parse("poai:acme:r", Separator::default()).unwrap();
        let g = p
            .generate(&KeySpec {
                name: &n,
                version: 1,
                algorithm: Algorithm::Secp256k1,
                label: "r",
            })
            .unwrap();
        let r = KeyRef {
            name: &n,
            version: 1,
            algorithm: Algorithm::Secp256k1,
            handle: &g.handle,
        };
        p.sign(&r, &[3u8; 32]).unwrap();
        // Log the application out from a session of our own: every session loses the login,
        // and the next private-key call answers CKR_USER_NOT_LOGGED_IN.
        let ctx = module::load(&t.module, ProviderKind::Softhsm2).unwrap();
        let other = ctx.open_ro_session(p.pool.slot()).unwrap();
        other.logout().unwrap();
        drop(other);
        let sig = p
            .sign(&r, &[3u8; 32])
            .expect("the pool logs in again and retries");
        assert!(hanzo_kms_crypto::verify::verify(
            Algorithm::Secp256k1,
            &g.public_key.unwrap().bytes,
            &[3u8; 32],
            &sig.0
        ));
        assert_eq!(p.pool_stats().recoveries, 1);
        assert_eq!(p.health(), Health::Ok);

        // Now the module itself is finalised under the provider (another component of the
        // process calling C_Finalize): every session handle dies. The health check finds the
        // dead anchor session and rebuilds the pool itself (re-initialise, reopen, log in), so
        // a device that is back passes its check (failover relies on this); the next call
        // re-finds the objects and succeeds.
        // (One test function: a finalise would break any other test using the module meanwhile.)
        ctx.clone().finalize().unwrap();
        assert_eq!(p.health(), Health::Ok);
        assert_eq!(
            p.pool_stats().recoveries,
            2,
            "the health check recovered the pool"
        );
        let sig = p.sign(&r, &[4u8; 32]).expect("works after C_Finalize");
        assert!(hanzo_kms_crypto::verify::recover_secp256k1(&[4u8; 32], &sig.0).is_some());
        assert_eq!(p.pool_stats().recoveries, 2);
        assert_eq!(p.health(), Health::Ok);
        // The model-key path (object cache of another class) recovers as well.
        let a = p
            .generate(&KeySpec {
                name: &n,
                version: 2,
                algorithm: Algorithm::Aes256Gcm,
                label: "a",
            })
            .unwrap();
        let ar = KeyRef {
            name: &n,
            version: 2,
            algorithm: Algorithm::Aes256Gcm,
            handle: &a.handle,
        };
        let (dek, wrapped) = p.generate_data_key(&ar, b"x").unwrap();
        assert_eq!(
            p.unwrap_data_key(&ar, &wrapped, b"x").unwrap().expose(),
            dek.expose()
        );
    }
}
