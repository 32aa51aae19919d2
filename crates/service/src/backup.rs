//! Backup bundles: every key's metadata and versions, with the material of each version sealed
//! by its provider under a backup key (docs/backup.md has the bytes).
//!
//! The backup key comes from a passphrase (argon2id) or is random and split with Shamir
//! (blahaj); from it, HKDF derives one key for the material and one for the bundle. The bundle's
//! payload is AES-256-GCM under the bundle key with the header as AAD, so a change anywhere
//! refuses the whole bundle. Restoring re-imports each version into the store's own provider
//! (which may differ from the one that made the bundle), in one transaction.

use std::collections::BTreeSet;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hanzo_kms_core::{
    Algorithm, Error, ErrorKind, KeyHandle, KeyMeta, KeyName, KeyRef, KeySpec, KeyState,
    KeyVersion, Origin, Result, SecretKey32,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::operation as op;
use crate::pipeline::{Call, Done, Receipt, Target};
use crate::{Kms, RequestCtx, audit_event, provider_label};

/// The bundle format this build writes and the newest it reads.
pub const BUNDLE_VERSION: u32 = 1;
const BUNDLE_FORMAT: &str = "hanzo-kms-backup";
const SHARE_FORMAT: &str = "hanzo-kms-backup-share";
/// argon2id cost for new bundles: 64 MiB, 3 passes, 1 lane (OWASP's first recommendation).
const ARGON2_M_KIB: u32 = 64 * 1024;
const ARGON2_T: u32 = 3;
const ARGON2_P: u32 = 1;
/// The most a bundle may ask for on restore (a hostile header must not exhaust memory).
const ARGON2_MAX_M_KIB: u32 = 1024 * 1024;
const ARGON2_MAX_T: u32 = 16;

/// How the backup key is protected.
pub enum Protection {
    /// A passphrase stretched with argon2id.
    Passphrase(Zeroizing<String>),
    /// A random key split into `shares` Shamir shares, any `threshold` of which recover it.
    Shamir { shares: u8, threshold: u8 },
}

/// What restoring needs: the passphrase, or share files' contents.
pub enum Unlock {
    Passphrase(Zeroizing<String>),
    Shares(Vec<(String, Zeroizing<String>)>),
}

/// A written bundle: its bytes, and the share files' contents when split.
pub struct Bundle {
    pub bytes: Vec<u8>,
    pub id: String,
    /// `(index, share file contents)`, for `FILE.share-<index>`.
    pub shares: Vec<(u8, Zeroizing<String>)>,
    pub keys: usize,
    pub versions: usize,
}

/// The bundle's first line (the AAD of its payload).
#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    bundle_id: String,
    created_at: i64,
    source_store: String,
    source_provider: String,
    keys: usize,
    protection: HeaderProtection,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum HeaderProtection {
    Passphrase {
        kdf: String,
        salt: String,
        m_cost_kib: u32,
        t_cost: u32,
        p_cost: u32,
    },
    Shamir {
        shares: u8,
        threshold: u8,
    },
}

#[derive(Serialize, Deserialize)]
struct ShareFile {
    format: String,
    version: u32,
    bundle_id: String,
    threshold: u8,
    index: u8,
    share: String,
}

/// A share's hex is a piece of the backup key: wiped when the file's value is dropped (blahaj
/// wipes its own `Share`s).
impl Drop for ShareFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.share);
    }
}

/// The encrypted payload.
#[derive(Serialize, Deserialize)]
struct Payload {
    keys: Vec<BundleKey>,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct BundleKey {
    pub name: String,
    pub algorithm: String,
    pub origin: String,
    pub provider: String,
    pub state: String,
    pub primary_version: u32,
    pub rotation_period_s: Option<i64>,
    pub created_at: i64,
    pub rotated_at: i64,
    pub destroy_at: Option<i64>,
    pub versions: Vec<BundleVersion>,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct BundleVersion {
    pub version: u32,
    pub state: String,
    pub created_at: i64,
    pub public_key: Option<String>,
    /// The material sealed under the material key; absent for destroyed versions.
    pub material: Option<String>,
}

/// An opened (authenticated and decrypted) bundle, ready to restore.
pub struct OpenedBundle {
    pub id: String,
    pub source_store: String,
    pub source_provider: String,
    keys: Vec<BundleKey>,
    material_key: SecretKey32,
}

impl OpenedBundle {
    pub fn key_names(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.name.clone()).collect()
    }
}

/// What a restore did.
#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub bundle_id: String,
    pub restored: Vec<String>,
    /// Keys the store already held exactly as in the bundle (a second restore changes nothing).
    pub already_present: Vec<String>,
}

fn bad_bundle(what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!("not a Hanzo KMS backup bundle: {what}"),
    )
}

fn wrong_secret() -> Error {
    Error::new(
        ErrorKind::AuthenticationFailed,
        "the bundle does not open: wrong passphrase or shares, or the bundle was altered; nothing was restored",
    )
}

fn derive(root: &[u8], bundle_id: &str, purpose: &str) -> Result<SecretKey32> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(bundle_id.as_bytes()), root);
    let mut out = Zeroizing::new([0u8; 32]);
    hk.expand(
        format!("hanzo-kms backup v1 {purpose}").as_bytes(),
        out.as_mut(),
    )
    .map_err(|_| Error::internal("HKDF output length"))?;
    Ok(SecretKey32::from_bytes(*out))
}

fn stretch(passphrase: &str, salt: &[u8], m: u32, t: u32, p: u32) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(m, t, p, Some(32))
        .map_err(|e| Error::invalid(format!("argon2id parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(passphrase.as_bytes(), salt, out.as_mut())
        .map_err(|e| Error::invalid(format!("argon2id: {e}")))?;
    Ok(out)
}

/// The AAD of one version's sealed material: bundle id, then the sealing AAD of the version.
fn material_aad(bundle_id: &str, name: &KeyName, version: u32, alg: Algorithm) -> Vec<u8> {
    let mut aad = b"hanzo-kms/backup/v1\0".to_vec();
    aad.extend_from_slice(bundle_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&hanzo_kms_crypto::seal::material_aad(name, version, alg));
    aad
}

fn check_passphrase(p: &str) -> Result<()> {
    if p.trim().is_empty() {
        return Err(Error::invalid("the backup passphrase is empty"));
    }
    Ok(())
}

impl Kms {
    /// Write a bundle of every key. Keys that cannot leave their device are listed in one
    /// error (nothing is written), unless `skip_unexportable`, which leaves them out.
    pub async fn backup_create(
        &self,
        ctx: &RequestCtx,
        protection: &Protection,
        skip_unexportable: bool,
    ) -> Result<(Bundle, Vec<String>)> {
        self.run(ctx, &op::BACKUP_CREATE, Target::None(None), |call| {
            Box::pin(async move {
                let kms = call.kms;
                let (bundle, skipped) = kms.backup_build(protection, skip_unexportable).await?;
                // The backup is on record before anyone holds it.
                let tx = kms.store.begin_write().await?;
                let note = format!(
                    "bundle {} with {} keys, {} left out",
                    bundle.id,
                    bundle.keys,
                    skipped.len()
                );
                let receipt = call
                    .commit_records(tx, &[call.event("ok", Some(&note))])
                    .await?;
                Ok(Done::Committed((bundle, skipped), receipt))
            })
        })
        .await
    }

    async fn backup_build(
        &self,
        protection: &Protection,
        skip_unexportable: bool,
    ) -> Result<(Bundle, Vec<String>)> {
        let mut id = [0u8; 16];
        hanzo_kms_crypto::rng::fill(&mut id)?;
        let bundle_id = hex::encode(id);
        let (root, header_protection, splits) = match protection {
            Protection::Passphrase(p) => {
                check_passphrase(p)?;
                let mut salt = [0u8; 16];
                hanzo_kms_crypto::rng::fill(&mut salt)?;
                let root = stretch(p, &salt, ARGON2_M_KIB, ARGON2_T, ARGON2_P)?;
                (
                    root,
                    HeaderProtection::Passphrase {
                        kdf: "argon2id".into(),
                        salt: B64.encode(salt),
                        m_cost_kib: ARGON2_M_KIB,
                        t_cost: ARGON2_T,
                        p_cost: ARGON2_P,
                    },
                    None,
                )
            }
            Protection::Shamir { shares, threshold } => {
                if *threshold < 2 || threshold > shares {
                    return Err(Error::invalid(format!(
                        "--threshold {threshold} with --shares {shares}: the threshold must be at least 2 and at most the number of shares"
                    )));
                }
                let mut root = Zeroizing::new([0u8; 32]);
                hanzo_kms_crypto::rng::fill(root.as_mut())?;
                (
                    root,
                    HeaderProtection::Shamir {
                        shares: *shares,
                        threshold: *threshold,
                    },
                    Some((*shares, *threshold)),
                )
            }
        };
        let material_key = derive(root.as_ref(), &bundle_id, "material")?;
        let bundle_key = derive(root.as_ref(), &bundle_id, "bundle")?;

        let mut keys = Vec::new();
        let mut unexportable = Vec::new();
        let mut versions = 0;
        for listed in self.store.list_keys("").await? {
            // The service's own keys (the audit key) never leave the store: whoever held a
            // bundle's passphrase could sign audit checkpoints with them.
            if listed.meta.name.customer() == crate::tokens::SYSTEM_TENANT {
                continue;
            }
            let Some(stored) = self.store.load_key(&listed.meta.name).await? else {
                continue;
            };
            let m = &stored.meta;
            let mut out = Vec::with_capacity(stored.versions.len());
            let mut refused = None;
            for v in &stored.versions {
                let material = match &v.handle {
                    Some(h) => {
                        let r = KeyRef {
                            name: &m.name,
                            version: v.info.version,
                            algorithm: m.algorithm,
                            handle: h,
                        };
                        let aad = material_aad(&bundle_id, &m.name, v.info.version, m.algorithm);
                        match self.device(|p| p.export_wrapped(&r, &material_key, &aad)) {
                            Ok(sealed) => Some(B64.encode(sealed)),
                            Err(e) if e.kind() == ErrorKind::Unsupported => {
                                refused = Some(e.message().to_owned());
                                break;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    None => None,
                };
                out.push(BundleVersion {
                    version: v.info.version,
                    state: v.info.state.as_str().to_owned(),
                    created_at: v.info.created_at,
                    public_key: v.info.public_key.as_ref().map(|k| B64.encode(k)),
                    material,
                });
            }
            if let Some(reason) = refused {
                unexportable.push(reason);
                continue;
            }
            versions += out.len();
            keys.push(BundleKey {
                name: m.name.to_string(),
                algorithm: m.algorithm.as_str().to_owned(),
                origin: m.origin.as_str().to_owned(),
                provider: m.provider.clone(),
                state: m.state.as_str().to_owned(),
                primary_version: m.primary_version,
                rotation_period_s: m.rotation_period_secs,
                created_at: m.created_at,
                rotated_at: m.rotated_at,
                destroy_at: m.destroy_at,
                versions: out,
            });
        }
        if !unexportable.is_empty() && !skip_unexportable {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{} key(s) cannot be exported, so no bundle was written (pass --skip-unexportable to back up the rest): {}",
                    unexportable.len(),
                    unexportable.join("; ")
                ),
            ));
        }
        let header = Header {
            format: BUNDLE_FORMAT.into(),
            version: BUNDLE_VERSION,
            bundle_id: bundle_id.clone(),
            created_at: crate::now_secs(),
            source_store: self.store.meta("store_id").await?.unwrap_or_default(),
            source_provider: self.provider.name().to_owned(),
            keys: keys.len(),
            protection: header_protection,
        };
        let line = serde_json::to_string(&header)
            .map_err(|e| Error::internal(format!("encoding the bundle header: {e}")))?;
        let payload = Zeroizing::new(
            serde_json::to_vec(&Payload { keys })
                .map_err(|e| Error::internal(format!("encoding the bundle: {e}")))?,
        );
        let sealed = hanzo_kms_crypto::seal::backup_seal(&bundle_key, line.as_bytes(), &payload)?;
        let mut bytes = Vec::with_capacity(line.len() + 1 + sealed.len());
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(&sealed);

        let mut shares = Vec::new();
        if let Some((n, t)) = splits {
            let dealer = blahaj::Sharks(t).dealer(root.as_ref());
            for share in dealer.take(usize::from(n)) {
                let raw = Zeroizing::new(Vec::from(&share));
                let index = raw.first().copied().unwrap_or(0);
                let file = ShareFile {
                    format: SHARE_FORMAT.into(),
                    version: BUNDLE_VERSION,
                    bundle_id: bundle_id.clone(),
                    threshold: t,
                    index,
                    share: hex::encode(&raw[..]),
                };
                // Measured, then written into a buffer of its exact size (a growing buffer
                // frees its old allocation unwiped).
                let bytes = hanzo_kms_core::secret::secret_json_pretty(&file)
                    .map_err(|e| Error::internal(format!("encoding a share: {e}")))?;
                let text = Zeroizing::new(
                    String::from_utf8(bytes.to_vec())
                        .map_err(|_| Error::internal("a share is not UTF-8"))?,
                );
                shares.push((index, text));
            }
        }
        Ok((
            Bundle {
                bytes,
                id: bundle_id,
                shares,
                keys: header.keys,
                versions,
            },
            unexportable,
        ))
    }

    /// Restore an opened bundle into this store, re-importing every version into this store's
    /// provider, in one transaction. Keys already present exactly as in the bundle are skipped
    /// (so restoring twice changes nothing); a store holding other keys is refused unless
    /// `merge`; a key present with different contents is a conflict, and conflicts refuse the
    /// whole restore, listed.
    pub async fn backup_restore(
        &self,
        ctx: &RequestCtx,
        bundle: &OpenedBundle,
        merge: bool,
    ) -> Result<RestoreReport> {
        self.run(ctx, &op::BACKUP_RESTORE, Target::None(None), |call| {
            Box::pin(async move {
                let (report, receipt) = call.kms.restore_inner(call, bundle, merge).await?;
                Ok(Done::Committed(report, receipt))
            })
        })
        .await
    }

    async fn restore_inner(
        &self,
        call: &Call<'_>,
        bundle: &OpenedBundle,
        merge: bool,
    ) -> Result<(RestoreReport, Receipt)> {
        let ctx = call.ctx;
        let sep = self.config.separator();
        let mut todo = Vec::new();
        let mut present = Vec::new();
        let mut conflicts = Vec::new();
        let in_bundle: BTreeSet<&str> = bundle.keys.iter().map(|k| k.name.as_str()).collect();
        for k in &bundle.keys {
            let name = KeyName::parse(&k.name, sep)
                .map_err(|e| bad_bundle(format!("key name {}: {}", k.name, e.message())))?;
            if name.customer() == crate::tokens::SYSTEM_TENANT {
                return Err(bad_bundle(format!(
                    "it holds {name}, a key of the reserved tenant '{}' (the service's own keys are never backed up); nothing was restored",
                    crate::tokens::SYSTEM_TENANT
                )));
            }
            match self.store.load_key(&name).await? {
                None => todo.push((name, k)),
                Some(existing) => match same_key(&existing, k) {
                    true => present.push(k.name.clone()),
                    false => conflicts.push(k.name.clone()),
                },
            }
        }
        if !conflicts.is_empty() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "{} key(s) in the bundle already exist here with different versions or material; nothing was restored: {}",
                    conflicts.len(),
                    conflicts.join(", ")
                ),
            ));
        }
        let others: Vec<String> = self
            .store
            .list_keys("")
            .await?
            .into_iter()
            .map(|k| k.meta.name.to_string())
            .filter(|n| !in_bundle.contains(n.as_str()))
            .collect();
        if !others.is_empty() && !merge {
            let shown: Vec<&str> = others.iter().take(10).map(String::as_str).collect();
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "the store is not empty: it holds {} key(s) that are not in the bundle ({}{}); \
                     pass --merge to add the bundle's keys to them; nothing was restored",
                    others.len(),
                    shown.join(", "),
                    if others.len() > shown.len() {
                        ", …"
                    } else {
                        ""
                    }
                ),
            ));
        }

        // Import every version into this provider, then commit all rows at once; on any
        // failure, release what the provider made.
        let mut made: Vec<(KeyName, u32, Algorithm, KeyHandle)> = Vec::new();
        let result: Result<(Vec<String>, Receipt)> = async {
            let mut rows = Vec::new();
            for (name, k) in &todo {
                let algorithm = Algorithm::from_str(&k.algorithm)
                    .map_err(|e| bad_bundle(format!("{}: {}", k.name, e.message())))?;
                algorithm.check_purpose(name.purpose())?;
                let mut origin = Origin::from_str(&k.origin)
                    .map_err(|e| bad_bundle(format!("{}: {}", k.name, e.message())))?;
                let mut versions = Vec::new();
                for v in &k.versions {
                    let info = KeyVersion {
                        version: v.version,
                        state: KeyState::from_str(&v.state)
                            .map_err(|e| bad_bundle(format!("{}: {}", k.name, e.message())))?,
                        created_at: v.created_at,
                        public_key: v
                            .public_key
                            .as_ref()
                            .map(|p| B64.decode(p))
                            .transpose()
                            .map_err(|_| bad_bundle(format!("{}: public key", k.name)))?,
                    };
                    let handle = match &v.material {
                        None => None,
                        Some(m) => {
                            let sealed = B64
                                .decode(m)
                                .map_err(|_| bad_bundle(format!("{}: material", k.name)))?;
                            let label = provider_label(&self.config, name, v.version);
                            let aad = material_aad(&bundle.id, name, v.version, algorithm);
                            let g = self.device(|p| {
                                p.import_wrapped(
                                    &KeySpec {
                                        name,
                                        version: v.version,
                                        algorithm,
                                        label: &label,
                                    },
                                    &bundle.material_key,
                                    &sealed,
                                    &aad,
                                )
                            })?;
                            made.push((name.clone(), v.version, algorithm, g.handle.clone()));
                            if let (Some(expected), Some(got)) = (&info.public_key, &g.public_key)
                                && expected != &got.bytes
                            {
                                return Err(Error::new(
                                    ErrorKind::Corrupt,
                                    format!(
                                        "{} version {}: the restored material does not match the recorded public key",
                                        k.name, v.version
                                    ),
                                ));
                            }
                            origin = g.origin;
                            Some(g.handle)
                        }
                    };
                    versions.push((info, handle));
                }
                let meta = KeyMeta {
                    name: name.clone(),
                    algorithm,
                    origin,
                    provider: self.provider.name().to_owned(),
                    state: KeyState::from_str(&k.state)
                        .map_err(|e| bad_bundle(format!("{}: {}", k.name, e.message())))?,
                    primary_version: k.primary_version,
                    rotation_period_secs: k.rotation_period_s,
                    created_at: k.created_at,
                    rotated_at: k.rotated_at,
                    destroy_at: k.destroy_at,
                };
                rows.push((meta, versions));
            }
            let mut tx = self.store.begin_write().await?;
            let mut events = Vec::new();
            for (meta, versions) in &rows {
                tx.insert_key(meta).await?;
                for (info, handle) in versions {
                    match handle {
                        Some(h) => {
                            tx.insert_version(&meta.name, info, self.provider.name(), h)
                                .await?
                        }
                        None => {
                            // A destroyed version keeps its row and loses its material.
                            tx.insert_version(
                                &meta.name,
                                info,
                                self.provider.name(),
                                &KeyHandle::new(Vec::new()),
                            )
                            .await?;
                            tx.delete_material(&meta.name, info.version).await?;
                        }
                    }
                }
                events.push(audit_event(
                    ctx,
                    "backup.restore",
                    Some(meta.name.to_string()),
                    Some(meta.primary_version),
                    "ok",
                    Some(&format!("bundle {}", bundle.id)),
                ));
            }
            if events.is_empty() {
                events.push(audit_event(
                    ctx,
                    "backup.restore",
                    None,
                    None,
                    "ok",
                    Some(&format!("bundle {}: every key already present", bundle.id)),
                ));
            }
            let receipt = call.commit_records(tx, &events).await?;
            Ok((
                rows.iter().map(|(m, _)| m.name.to_string()).collect(),
                receipt,
            ))
        }
        .await;
        match result {
            Ok((restored, receipt)) => Ok((
                RestoreReport {
                    bundle_id: bundle.id.clone(),
                    restored,
                    already_present: present,
                },
                receipt,
            )),
            Err(e) => {
                self.device(|p| crate::release_made(p, &made));
                Err(e)
            }
        }
    }
}

/// Whether a stored key is the bundle's key: same algorithm, same version numbers, and the same
/// public keys (for AES keys, the same creation times: their material cannot be compared
/// without opening it).
fn same_key(existing: &hanzo_kms_store::StoredKey, k: &BundleKey) -> bool {
    if existing.meta.algorithm.as_str() != k.algorithm
        || existing.versions.len() != k.versions.len()
    {
        return false;
    }
    existing.versions.iter().zip(&k.versions).all(|(e, b)| {
        e.info.version == b.version
            && e.info.created_at == b.created_at
            && e.info.public_key.as_ref().map(|p| B64.encode(p)) == b.public_key
    })
}

/// Parse and open a bundle: check its format and version, recover the backup key from the
/// passphrase or shares, and authenticate and decrypt the whole payload. Nothing is written.
pub fn open_bundle(bytes: &[u8], unlock: &Unlock) -> Result<OpenedBundle> {
    let split = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad_bundle("no header line"))?;
    let line = &bytes[..split];
    let sealed = &bytes[split + 1..];
    let raw: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| bad_bundle(format!("header: {e}")))?;
    if raw.get("format").and_then(|f| f.as_str()) != Some(BUNDLE_FORMAT) {
        return Err(bad_bundle("the header does not name the format"));
    }
    let version = raw.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
    if version > u64::from(BUNDLE_VERSION) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "the bundle has format version {version}, newer than this hanzo-kms reads (version {BUNDLE_VERSION}); restore it with a newer hanzo-kms"
            ),
        ));
    }
    if version != u64::from(BUNDLE_VERSION) {
        return Err(bad_bundle(format!("unknown format version {version}")));
    }
    let header: Header =
        serde_json::from_value(raw).map_err(|e| bad_bundle(format!("header: {e}")))?;
    let root: Zeroizing<[u8; 32]> = match (&header.protection, unlock) {
        (
            HeaderProtection::Passphrase {
                kdf,
                salt,
                m_cost_kib,
                t_cost,
                p_cost,
            },
            Unlock::Passphrase(p),
        ) => {
            check_passphrase(p)?;
            if kdf != "argon2id" {
                return Err(bad_bundle(format!("unknown key derivation {kdf}")));
            }
            if *m_cost_kib > ARGON2_MAX_M_KIB || *t_cost > ARGON2_MAX_T || *p_cost > 16 {
                return Err(bad_bundle("argon2id costs beyond what hanzo-kms accepts"));
            }
            let salt = B64
                .decode(salt)
                .map_err(|_| bad_bundle("the salt is not base64"))?;
            stretch(p, &salt, *m_cost_kib, *t_cost, *p_cost)?
        }
        (HeaderProtection::Shamir { threshold, .. }, Unlock::Shares(files)) => {
            recover(&header.bundle_id, *threshold, files)?
        }
        (HeaderProtection::Passphrase { .. }, Unlock::Shares(_)) => {
            return Err(Error::invalid(
                "this bundle is protected by a passphrase, not shares: give --passphrase-file or HANZO_KMS_BACKUP_PASSPHRASE",
            ));
        }
        (HeaderProtection::Shamir { threshold, .. }, Unlock::Passphrase(_)) => {
            return Err(Error::invalid(format!(
                "this bundle's key is split into shares: give at least {threshold} with --share FILE"
            )));
        }
    };
    let material_key = derive(root.as_ref(), &header.bundle_id, "material")?;
    let bundle_key = derive(root.as_ref(), &header.bundle_id, "bundle")?;
    let payload = hanzo_kms_crypto::seal::backup_open(&bundle_key, line, sealed)
        .map_err(|_| wrong_secret())?;
    let payload: Payload = serde_json::from_slice(payload.expose())
        .map_err(|e| bad_bundle(format!("payload: {e}")))?;
    Ok(OpenedBundle {
        id: header.bundle_id,
        source_store: header.source_store,
        source_provider: header.source_provider,
        keys: payload.keys,
        material_key,
    })
}

fn recover(
    bundle_id: &str,
    threshold: u8,
    files: &[(String, Zeroizing<String>)],
) -> Result<Zeroizing<[u8; 32]>> {
    let mut shares = Vec::new();
    let mut seen = BTreeSet::new();
    for (path, text) in files {
        let f: ShareFile = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("{path} is not a Hanzo KMS backup share: {e}")))?;
        if f.format != SHARE_FORMAT {
            return Err(Error::invalid(format!(
                "{path} is not a Hanzo KMS backup share"
            )));
        }
        if f.bundle_id != bundle_id {
            return Err(Error::invalid(format!(
                "{path} is a share of bundle {}, not of this bundle ({bundle_id})",
                f.bundle_id
            )));
        }
        let raw = Zeroizing::new(
            hex::decode(&f.share)
                .map_err(|_| Error::invalid(format!("{path}: the share is not hex")))?,
        );
        let share = blahaj::Share::try_from(&raw[..])
            .map_err(|e| Error::invalid(format!("{path}: {e}")))?;
        if seen.insert(f.index) {
            shares.push(share);
        }
    }
    if seen.len() < usize::from(threshold) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "{} distinct share(s) given, but this bundle needs {threshold}; nothing was restored",
                seen.len()
            ),
        ));
    }
    let secret = Zeroizing::new(
        blahaj::Sharks(threshold)
            .recover(&shares)
            .map_err(|e| Error::invalid(format!("recovering the backup key: {e}")))?,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    if secret.len() != 32 {
        return Err(wrong_secret());
    }
    out.copy_from_slice(&secret);
    Ok(out)
}
