//! Audit archival: signed checkpoints, exports, prunes, and the checks that tie them together
//! (docs/audit-archive.md has the file format, docs/operations.md "Audit archives" the operator's
//! view).
//!
//! - A **checkpoint** is a record (`audit.checkpoint`) whose detail says "record `seq` of store
//!   `store` hashes to `hash`", signed with the store's audit key (`api:system:audit`, P-256,
//!   in the provider: the HSM where there is one). It pins everything up to `seq`: the chain's
//!   hashes make any change before it show at `seq`.
//! - An **export** writes the records from the oldest retained one up to a checkpoint's `seq` to a
//!   file that verifies alone (the records, the checkpoint, the public key), then appends an
//!   `audit.export` record naming the range and the file's SHA-256.
//! - A **prune** deletes an exported range, given the file (whose hash must match an export
//!   record), in batches, each with an `audit.prune` record.
//! - **Verification** starts at the oldest retained record. If that is not record 1, a retained
//!   export record must cover the records before it, and the walk must meet that export's
//!   checkpoint. Every retained checkpoint must carry a good signature and match the record it
//!   names. Archives given to it are checked alone, against each other, against the export
//!   records that name them and against the store: a changed, dropped or unexported range shows.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};

use hanzo_kms_core::{Algorithm, Error, ErrorKind, KeyName, KeyRef, Purpose, Result};
use hanzo_kms_store::{AuditRecord, AuditReport, StoredKey, audit};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::operation as op;
use crate::pipeline::Done;
use crate::pipeline::Target;
use crate::{Kms, RequestCtx, now_ms};

/// The operation name of a checkpoint record.
pub const CHECKPOINT: &str = "audit.checkpoint";
/// The operation name of an export record.
pub const EXPORT: &str = "audit.export";
/// The operation name of a prune record.
pub const PRUNE: &str = "audit.prune";
/// The first line of every archive names this format.
pub const ARCHIVE_FORMAT: &str = "hanzo-kms-audit-archive/v1";
/// What a checkpoint's signature covers starts with this.
const CHECKPOINT_CONTEXT: &[u8] = b"hanzo-kms audit checkpoint v1";
/// Records one pruning transaction deletes at most: the group committer waits for the write
/// lock meanwhile, so this stays a few milliseconds of work.
pub const PRUNE_BATCH: u64 = 5_000;
/// Records [`Kms::has_activity`] reads at most.
const ACTIVITY_SCAN: usize = 10_000;
/// The audit key's algorithm: every provider kind signs it (software, PKCS#11, remote KMSs).
const AUDIT_KEY_ALGORITHM: Algorithm = Algorithm::P256;

/// A signed statement: record `seq` of store `store` hashes to `hash`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The store's id (`meta store_id`).
    pub store: String,
    /// The record it pins.
    pub seq: u64,
    /// That record's hash.
    pub hash: [u8; 32],
    /// When it was signed (ms since the epoch).
    pub time_ms: i64,
    /// The audit key and version that signed it.
    pub key: String,
    pub version: u32,
    /// ECDSA P-256 over SHA-256 of [`Checkpoint::message`], r‖s.
    pub signature: Vec<u8>,
}

impl Checkpoint {
    /// What the signature covers: `"hanzo-kms audit checkpoint v1" ‖ u32be(len(store)) ‖ store
    /// ‖ u32be(writer = 0) ‖ u64be(seq) ‖ hash ‖ i64be(time_ms)`. The writer field is 0: one
    /// chain per store today (docs/design/audit-chains.md keeps room for one per writer).
    pub fn message(store: &str, seq: u64, hash: &[u8; 32], time_ms: i64) -> Vec<u8> {
        let mut m = Vec::with_capacity(CHECKPOINT_CONTEXT.len() + store.len() + 56);
        m.extend_from_slice(CHECKPOINT_CONTEXT);
        m.extend_from_slice(&(store.len() as u32).to_be_bytes());
        m.extend_from_slice(store.as_bytes());
        m.extend_from_slice(&0u32.to_be_bytes());
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(hash);
        m.extend_from_slice(&time_ms.to_be_bytes());
        m
    }

    /// Whether the signature verifies under `public_key` (SEC1 P-256).
    pub fn verifies(&self, public_key: &[u8]) -> bool {
        let m = Self::message(&self.store, self.seq, &self.hash, self.time_ms);
        hanzo_kms_crypto::verify::verify(AUDIT_KEY_ALGORITHM, public_key, &m, &self.signature)
    }

    /// The detail a checkpoint record carries (the key and version are the record's own
    /// fields).
    fn detail(&self) -> String {
        json!({
            "store": self.store,
            "seq": self.seq,
            "hash": hex::encode(self.hash),
            "time_ms": self.time_ms,
            "signature": hex::encode(&self.signature),
        })
        .to_string()
    }

    /// The checkpoint a record carries; `Err` says what is malformed.
    pub fn from_record(r: &AuditRecord) -> std::result::Result<Self, String> {
        let e = &r.event;
        let bad = |what: &str| format!("checkpoint record {}: {what}", r.seq);
        let d: Value = serde_json::from_str(e.detail.as_deref().ok_or_else(|| bad("no detail"))?)
            .map_err(|_| bad("its detail is not JSON"))?;
        Self::from_json(&d, e.key_name.clone(), e.key_version).map_err(|w| bad(&w))
    }

    fn from_json(
        d: &Value,
        key: Option<String>,
        version: Option<u32>,
    ) -> std::result::Result<Self, String> {
        Ok(Self {
            store: d["store"].as_str().ok_or("no store id")?.to_owned(),
            seq: d["seq"].as_u64().ok_or("no seq")?,
            hash: d["hash"]
                .as_str()
                .and_then(hanzo_kms_store::parse_hash)
                .ok_or("no hash")?,
            time_ms: d["time_ms"].as_i64().ok_or("no time")?,
            key: key.ok_or("no key")?,
            version: version.ok_or("no key version")?,
            signature: d["signature"]
                .as_str()
                .and_then(|s| hex::decode(s).ok())
                .ok_or("no signature")?,
        })
    }

    fn to_json(&self) -> Value {
        let mut v: Value = serde_json::from_str(&self.detail()).unwrap_or(Value::Null);
        v["key"] = json!(self.key);
        v["version"] = json!(self.version);
        v
    }
}

/// What an export record says: records `first..=last` went to a file with this SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportMark {
    /// The export record's own seq.
    pub at: u64,
    pub first: u64,
    pub last: u64,
    pub sha256: [u8; 32],
    /// The file's name when it was written (no directory).
    pub file: String,
    /// The hash of record `last` (what the archive's checkpoint pins).
    pub hash: [u8; 32],
    /// The audit key and version that signed [`ExportMark::message`], and the signature: an
    /// export record is evidence only when signed, or whoever can write the store could
    /// append one to make a deletion look like an archived prune.
    pub key: String,
    pub version: u32,
    pub signature: Vec<u8>,
}

/// What an export record's signature starts with.
const EXPORT_CONTEXT: &[u8] = b"hanzo-kms audit export v1";

impl ExportMark {
    /// What the signature covers: `"hanzo-kms audit export v1" ‖ u32be(len(store)) ‖ store ‖
    /// u64be(first) ‖ u64be(last) ‖ sha256 ‖ hash`.
    pub fn message(
        store: &str,
        first: u64,
        last: u64,
        sha256: &[u8; 32],
        hash: &[u8; 32],
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(EXPORT_CONTEXT.len() + store.len() + 84);
        m.extend_from_slice(EXPORT_CONTEXT);
        m.extend_from_slice(&(store.len() as u32).to_be_bytes());
        m.extend_from_slice(store.as_bytes());
        m.extend_from_slice(&first.to_be_bytes());
        m.extend_from_slice(&last.to_be_bytes());
        m.extend_from_slice(sha256);
        m.extend_from_slice(hash);
        m
    }

    /// Whether its signature verifies for `store` under one of `keys`.
    pub fn verifies(&self, store: &str, keys: &HashMap<(String, u32), Vec<u8>>) -> bool {
        let m = Self::message(store, self.first, self.last, &self.sha256, &self.hash);
        keys.get(&(self.key.clone(), self.version))
            .is_some_and(|pk| {
                hanzo_kms_crypto::verify::verify(AUDIT_KEY_ALGORITHM, pk, &m, &self.signature)
            })
    }

    fn detail(
        first: u64,
        last: u64,
        sha256: &[u8; 32],
        file: &str,
        hash: &[u8; 32],
        signature: &[u8],
    ) -> String {
        json!({
            "first": first,
            "last": last,
            "sha256": hex::encode(sha256),
            "file": file,
            "hash": hex::encode(hash),
            "signature": hex::encode(signature),
        })
        .to_string()
    }

    /// The export an `audit.export` record names.
    pub fn from_record(r: &AuditRecord) -> std::result::Result<Self, String> {
        let bad = |what: &str| format!("export record {}: {what}", r.seq);
        let d: Value =
            serde_json::from_str(r.event.detail.as_deref().ok_or_else(|| bad("no detail"))?)
                .map_err(|_| bad("its detail is not JSON"))?;
        let first = d["first"].as_u64().ok_or_else(|| bad("no first"))?;
        let last = d["last"].as_u64().ok_or_else(|| bad("no last"))?;
        if !valid_range(first, last) {
            return Err(bad(&format!(
                "its range {first}..{last} is not one of records"
            )));
        }
        Ok(Self {
            at: r.seq,
            first,
            last,
            sha256: d["sha256"]
                .as_str()
                .and_then(hanzo_kms_store::parse_hash)
                .ok_or_else(|| bad("no sha256"))?,
            file: d["file"].as_str().unwrap_or_default().to_owned(),
            hash: d["hash"]
                .as_str()
                .and_then(hanzo_kms_store::parse_hash)
                .ok_or_else(|| bad("no hash"))?,
            key: r.event.key_name.clone().ok_or_else(|| bad("no key"))?,
            version: r.event.key_version.ok_or_else(|| bad("no key version"))?,
            signature: d["signature"]
                .as_str()
                .and_then(|s| hex::decode(s).ok())
                .ok_or_else(|| bad("no signature"))?,
        })
    }
}

/// Which records an export takes: up to the newest checkpoint that satisfies the bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportBound {
    /// Records with a smaller seq.
    Seq(u64),
    /// Records older than this time (ms since the epoch): a checkpoint signed before it.
    TimeMs(i64),
    /// Up to the newest checkpoint.
    Newest,
}

/// Where an export goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportTo {
    /// This file.
    File(PathBuf),
    /// A file in this directory named `audit-<store id>-<first>-<last>.jsonl`.
    Dir(PathBuf),
}

/// What one pass of [`Kms::audit_maintenance`] did.
#[derive(Clone, Debug, Default)]
pub struct Maintenance {
    pub checkpoint: Option<Checkpoint>,
    pub export: Option<ExportSummary>,
    pub pruned: Option<PruneSummary>,
}

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSummary {
    pub file: PathBuf,
    pub first: u64,
    pub last: u64,
    pub bytes: u64,
    pub sha256: [u8; 32],
    /// The seq of the `audit.export` record.
    pub export_record: u64,
}

impl ExportSummary {
    pub fn to_json(&self) -> Value {
        json!({
            "file": self.file.display().to_string(),
            "first": self.first,
            "last": self.last,
            "records": self.last + 1 - self.first,
            "bytes": self.bytes,
            "sha256": hex::encode(self.sha256),
            "export_record": self.export_record,
        })
    }
}

/// What a prune deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneSummary {
    /// The range the archive holds.
    pub first: u64,
    pub last: u64,
    /// Records deleted now (0 when an earlier prune had deleted them).
    pub deleted: u64,
    /// Transactions it took.
    pub batches: u64,
}

impl PruneSummary {
    pub fn to_json(&self) -> Value {
        json!({"first": self.first, "last": self.last, "deleted": self.deleted, "batches": self.batches})
    }
}

/// One archive file, read and checked alone.
#[derive(Clone, Debug)]
pub struct Archive {
    pub path: PathBuf,
    pub store: String,
    pub first: u64,
    pub last: u64,
    /// The hash of the record before `first` (zeros when `first` is 1).
    pub prev_hash: [u8; 32],
    pub checkpoint: Checkpoint,
    pub public_key: Vec<u8>,
    pub sha256: [u8; 32],
    /// The export records among its records.
    pub exports: Vec<ExportMark>,
}

/// The result of checking archives (with or without the store).
#[derive(Clone, Debug, Default)]
pub struct ArchiveReport {
    pub archives: Vec<Value>,
    pub problems: Vec<String>,
}

impl ArchiveReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn to_json(&self) -> Value {
        json!({"valid": self.is_ok(), "archives": self.archives, "problems": self.problems})
    }
}

/// How `audit verify` reads the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Start at the newest good checkpoint instead of the oldest retained record (the
    /// checkpoints' signatures are still all checked).
    pub since_checkpoint: bool,
}

impl Kms {
    /// The store's audit key: `api:system:audit`.
    pub fn audit_key_name(&self) -> Result<KeyName> {
        KeyName::new(Purpose::Api, "system", "audit", self.config().separator())
    }

    /// The audit key, created (P-256, never rotated by schedule) the first time it is needed.
    async fn audit_key(&self) -> Result<StoredKey> {
        let name = self.audit_key_name()?;
        if let Some(key) = self.store().load_key(&name).await? {
            if key.meta.algorithm != AUDIT_KEY_ALGORITHM {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "{name} is a {} key, not {AUDIT_KEY_ALGORITHM}: it was not made by the service; \
                         no checkpoint can be signed until it is gone",
                        key.meta.algorithm
                    ),
                ));
            }
            return Ok(key);
        }
        let ctx = system_admin("system:audit");
        match self
            .create_key(&ctx, &name, Some(AUDIT_KEY_ALGORITHM), Some(0))
            .await
        {
            Ok(_) => {}
            // Another node made it first.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.context("creating the audit key api:system:audit")),
        }
        self.store()
            .load_key(&name)
            .await?
            .ok_or_else(|| Error::internal("the audit key was created but cannot be read"))
    }

    /// The retained export records whose signature verifies, oldest first.
    async fn signed_exports(
        &self,
        store: &str,
        keys: &HashMap<(String, u32), Vec<u8>>,
    ) -> Result<Vec<ExportMark>> {
        Ok(self
            .store()
            .audit_marks(EXPORT)
            .await?
            .iter()
            .filter_map(|r| ExportMark::from_record(r).ok())
            .filter(|m| m.verifies(store, keys))
            .collect())
    }

    /// The retained checkpoints that are well-formed, of this store and well signed, with
    /// their record's seq, oldest first.
    async fn signed_checkpoints(
        &self,
        store: &str,
        keys: &HashMap<(String, u32), Vec<u8>>,
    ) -> Result<Vec<(u64, Checkpoint)>> {
        let marks = self.store().audit_marks(CHECKPOINT).await?;
        Ok(good_checkpoints(&marks, store, keys))
    }

    /// The public keys of the audit key's versions: what checkpoints verify under. A stored
    /// public key counts only when the provider proves it holds its private key (it signs a
    /// fresh challenge through the stored handle): someone who can write the store could put
    /// their own key there and sign their own checkpoints. [`Self::audit_keys`] also returns
    /// a version that fails, or that has no material or public key.
    async fn audit_public_keys(&self) -> Result<HashMap<(String, u32), Vec<u8>>> {
        Ok(self.audit_keys().await?.0)
    }

    async fn audit_keys(&self) -> Result<(HashMap<(String, u32), Vec<u8>>, Vec<u32>)> {
        let name = self.audit_key_name()?;
        let mut out = HashMap::new();
        let mut altered = Vec::new();
        let Some(key) = self.store().load_key(&name).await? else {
            return Ok((out, altered));
        };
        if key.meta.algorithm != AUDIT_KEY_ALGORITHM {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{name} is a {} key, not {}: it was not made by the service",
                    key.meta.algorithm, AUDIT_KEY_ALGORITHM
                ),
            ));
        }
        for v in &key.versions {
            // The service never destroys the audit key, so every version has its material and
            // its public key. One without either was put there by someone else.
            let (Some(stored), Some(handle)) = (&v.info.public_key, &v.handle) else {
                altered.push(v.info.version);
                continue;
            };
            let proof_id: [u8; 32] = {
                let mut h = Sha256::new();
                h.update(v.info.version.to_be_bytes());
                h.update((stored.len() as u64).to_be_bytes());
                h.update(stored);
                h.update(handle.as_bytes());
                h.finalize().into()
            };
            if self.proven(&proof_id) {
                out.insert((name.to_string(), v.info.version), stored.clone());
                continue;
            }
            let kref = KeyRef {
                name: &key.meta.name,
                version: v.info.version,
                algorithm: key.meta.algorithm,
                handle,
            };
            // Proof of possession: the provider signs a fresh challenge through the stored
            // handle, and it must verify under the stored public key. An HSM's handle carries
            // the public key too (a store column): comparing the two would prove nothing.
            let mut challenge = b"hanzo-kms audit key possession v1".to_vec();
            challenge.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            let signature = self.device(|p| p.sign(&kref, &challenge))?;
            if hanzo_kms_crypto::verify::verify(
                AUDIT_KEY_ALGORITHM,
                stored,
                &challenge,
                &signature.0,
            ) {
                if let Ok(mut proven) = self.audit_proven.lock() {
                    proven.insert(proof_id);
                }
                out.insert((name.to_string(), v.info.version), stored.clone());
            } else {
                altered.push(v.info.version);
            }
        }
        Ok((out, altered))
    }

    /// Whether this process already proved possession of the version `proof_id` names.
    fn proven(&self, proof_id: &[u8; 32]) -> bool {
        self.audit_proven
            .lock()
            .map(|p| p.contains(proof_id))
            .unwrap_or(false)
    }

    async fn store_id(&self) -> Result<String> {
        self.store()
            .meta("store_id")
            .await?
            .ok_or_else(|| Error::new(ErrorKind::Corrupt, "the store has no store_id"))
    }

    /// Sign `message` with the audit key's primary version: `(version, r‖s)`.
    fn audit_sign(&self, key: &StoredKey, message: &[u8]) -> Result<(u32, Vec<u8>)> {
        let v = key.meta.primary_version;
        let entry = key.version(v).ok_or_else(|| {
            Error::new(ErrorKind::KeyState, "the audit key has no primary version")
        })?;
        entry.info.check_usable(&key.meta.name)?;
        let handle = entry
            .handle
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::KeyState, "the audit key has no material"))?;
        let kref = KeyRef {
            name: &key.meta.name,
            version: v,
            algorithm: key.meta.algorithm,
            handle,
        };
        Ok((v, self.device(|p| p.sign(&kref, message))?.0))
    }

    /// Sign the chain as it stands: append an `audit.checkpoint` record that pins the newest
    /// record with the audit key's signature. The scheduler calls it every
    /// `audit.checkpoint_interval_secs`; `hanzo-kms audit checkpoint` on demand.
    pub async fn audit_checkpoint(&self, ctx: &RequestCtx) -> Result<Checkpoint> {
        let key = self.audit_key().await?;
        let store = self.store_id().await?;
        self.run(ctx, &op::AUDIT_CHECKPOINT, Target::None(None), |call| {
            Box::pin(async move {
                let kms = call.kms;
                // The head as it is now; records appended meanwhile come after it, and the
                // checkpoint record itself lands after them.
                let (seq, hash) = kms.store().audit_head().await?;
                let time_ms = now_ms();
                let message = Checkpoint::message(&store, seq, &hash, time_ms);
                let (v, signature) = kms.audit_sign(&key, &message)?;
                let checkpoint = Checkpoint {
                    store,
                    seq,
                    hash,
                    time_ms,
                    key: key.meta.name.to_string(),
                    version: v,
                    signature,
                };
                call.name_record(checkpoint.key.clone());
                call.record_version(Some(v));
                let mut event = call.event("ok", None);
                event.detail = Some(checkpoint.detail());
                let tx = kms.store().begin_write().await?;
                let receipt = call.commit_records(tx, &[event]).await?;
                Ok(Done::Committed(checkpoint, receipt))
            })
        })
        .await
    }

    /// The scheduler's audit housekeeping (every tick of `serve`): a checkpoint when
    /// `audit.checkpoint_interval_secs` passed since the newest one and records came after it,
    /// or `audit.checkpoint_every_records` came;
    /// with `audit.retention_secs`, an export of the records older than that (up to the newest
    /// checkpoint before the bound) into `audit.archive_dir`, then their prune.
    pub async fn audit_maintenance(&self, now_ms: i64) -> Result<Maintenance> {
        let cfg = &self.config().audit;
        let mut done = Maintenance::default();
        if cfg.checkpoint_interval_secs > 0 {
            let interval = i64::try_from(cfg.checkpoint_interval_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX);
            let newest = self.store().audit_marks(CHECKPOINT).await?.pop();
            let (head, _) = self.store().audit_head().await?;
            let every = cfg.checkpoint_every_records;
            let due = match &newest {
                None => head > 0,
                Some(r) => {
                    (now_ms.saturating_sub(r.event.time_ms) >= interval
                        || (every > 0 && head.saturating_sub(r.seq) >= every))
                        && self.has_activity(r.seq, head).await?
                }
            };
            if due {
                done.checkpoint = Some(
                    self.audit_checkpoint(&system_admin("system:scheduler"))
                        .await?,
                );
            }
        }
        if let (Some(retention), Some(dir)) = (cfg.retention_secs, &cfg.archive_dir) {
            let bound = now_ms
                .saturating_sub(i64::try_from(retention.saturating_mul(1000)).unwrap_or(i64::MAX));
            let ctx = system_admin("system:scheduler");
            let (store, keys) = (self.store_id().await?, self.audit_public_keys().await?);
            // An export whose prune did not finish (an error, a restart): finish it first, so
            // that no second archive overlaps it.
            if let Some(oldest) = self.store().audit_oldest().await? {
                let unfinished = self
                    .signed_exports(&store, &keys)
                    .await?
                    .into_iter()
                    .find(|m| m.first <= oldest && oldest <= m.last);
                if let Some(m) = unfinished {
                    // The name only: the record's `file` is not signed.
                    let name = Path::new(&m.file).file_name().unwrap_or_default();
                    let file = dir.join(name);
                    if !file.exists() {
                        return Err(Error::new(
                            ErrorKind::NotFound,
                            format!(
                                "records {}..{} were exported to {}, which is not in audit.archive_dir: they stay in the store until it is back",
                                m.first,
                                m.last,
                                file.display()
                            ),
                        ));
                    }
                    if !self
                        .signed_checkpoints(&store, &keys)
                        .await?
                        .iter()
                        .any(|(_, c)| c.seq >= m.at)
                    {
                        done.checkpoint = Some(self.audit_checkpoint(&ctx).await?);
                    }
                    done.pruned = Some(self.audit_prune(&ctx, &file).await?);
                    return Ok(done);
                }
            }
            let plan = self
                .export_plan(ExportBound::TimeMs(bound), &store, &keys)
                .await?;
            // Nothing old enough ends at a checkpoint yet, or only archival's own records do.
            if let Some((oldest, c)) = plan
                && self.has_activity(oldest.saturating_sub(1), c.seq).await?
            {
                let bound = ExportBound::Seq(c.seq.saturating_add(1));
                let to = ExportTo::Dir(dir.clone());
                let export = self.audit_export(&ctx, bound, &to).await?;
                done.pruned = Some(self.audit_prune(&ctx, &export.file).await?);
                done.export = Some(export);
            }
        }
        Ok(done)
    }

    /// Write the records from the oldest retained one up to the newest checkpoint that
    /// satisfies `bound` to `out` (a new file: an existing one is never replaced), then append
    /// an `audit.export` record naming the range and the file's SHA-256. The file is complete
    /// and synced before the record is written; on any error no file is left.
    pub async fn audit_export(
        &self,
        ctx: &RequestCtx,
        bound: ExportBound,
        to: &ExportTo,
    ) -> Result<ExportSummary> {
        let summary = self.export_records(ctx, bound, to).await?;
        // The export record itself under a signature at once: until a checkpoint pins it, it
        // is in the chain's unsigned end, where whoever can write the store could forge one.
        // `audit verify` and `audit prune` accept only a pinned export.
        let store = self.store_id().await?;
        let keys = self.audit_public_keys().await?;
        let checkpoints = self.signed_checkpoints(&store, &keys).await?;
        if !checkpoints
            .iter()
            .any(|(_, c)| c.seq >= summary.export_record)
        {
            self.audit_checkpoint(ctx).await?;
        }
        Ok(summary)
    }

    /// What an export with `bound` would take: the oldest retained record and the newest good
    /// checkpoint at or after it that satisfies the bound (`None`: no such checkpoint).
    async fn export_plan(
        &self,
        bound: ExportBound,
        store: &str,
        keys: &HashMap<(String, u32), Vec<u8>>,
    ) -> Result<Option<(u64, Checkpoint)>> {
        let Some(oldest) = self.store().audit_oldest().await? else {
            return Ok(None);
        };
        let checkpoints = self.signed_checkpoints(store, keys).await?;
        Ok(checkpoints
            .iter()
            .rev()
            .filter(|(_, c)| c.seq >= oldest)
            .find(|(_, c)| match bound {
                ExportBound::Seq(n) => c.seq < n,
                ExportBound::TimeMs(t) => c.time_ms <= t,
                ExportBound::Newest => true,
            })
            .map(|(_, c)| (oldest, c.clone())))
    }

    /// Whether records `after + 1..=upto` hold anything but archival's own records
    /// (checkpoints, exports, prunes). Reads at most [`ACTIVITY_SCAN`] records: past that, yes.
    /// Keeps an idle node from checkpointing and archiving its own housekeeping forever.
    async fn has_activity(&self, after: u64, upto: u64) -> Result<bool> {
        let mut at = after;
        let mut read = 0;
        while at < upto && read < ACTIVITY_SCAN {
            let page = self.store().audit_records(at, 200).await?;
            let Some(last) = page.last() else {
                return Ok(false);
            };
            for r in page.iter().take_while(|r| r.seq <= upto) {
                if ![CHECKPOINT, EXPORT, PRUNE].contains(&r.event.operation.as_str()) {
                    return Ok(true);
                }
            }
            read += page.len();
            at = last.seq;
        }
        Ok(read >= ACTIVITY_SCAN)
    }

    async fn export_records(
        &self,
        ctx: &RequestCtx,
        bound: ExportBound,
        to: &ExportTo,
    ) -> Result<ExportSummary> {
        let store = self.store_id().await?;
        let keys = self.audit_public_keys().await?;
        let audit_key = self.audit_key().await?;
        let to = to.clone();
        self.run(ctx, &op::AUDIT_EXPORT, Target::None(None), |call| {
            Box::pin(async move {
                let kms = call.kms;
                let plan = kms.export_plan(bound, &store, &keys).await?;
                let (oldest, checkpoint) = plan.ok_or_else(|| {
                    Error::new(
                        ErrorKind::NotFound,
                        "no signed checkpoint ends a range to export (it must pin a record the \
                         store still holds, before the bound): checkpoints come every \
                         audit.checkpoint_interval_secs, or run `hanzo-kms audit checkpoint`",
                    )
                })?;
                let public_key = keys
                    .get(&(checkpoint.key.clone(), checkpoint.version))
                    .cloned()
                    .unwrap_or_default();
                let out = match to {
                    ExportTo::File(f) => f,
                    ExportTo::Dir(d) => {
                        // The store id is hex from `init`; nothing else reaches a file name.
                        let id: String = store.chars().filter(char::is_ascii_alphanumeric).collect();
                        d.join(format!("audit-{id}-{oldest:012}-{:012}.jsonl", checkpoint.seq))
                    }
                };
                let exports = kms.signed_exports(&store, &keys).await?;
                if let Ok(a) = read_archive(&out) {
                    // A retry (the scheduler's, after a failed prune) finds its own export.
                    let mark = exports
                        .iter()
                        .find(|m| m.sha256 == a.sha256 && (m.first, m.last) == (a.first, a.last));
                    if let Some(m) = mark
                        && (m.first, m.last) == (oldest, checkpoint.seq)
                    {
                        let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
                        return Ok(Done::Noted(
                            ExportSummary {
                                file: out.clone(),
                                first: m.first,
                                last: m.last,
                                bytes,
                                sha256: m.sha256,
                                export_record: m.at,
                            },
                            "already_exported",
                        ));
                    }
                }
                if out.exists() {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!("{} exists: an archive is never overwritten", out.display()),
                    ));
                }
                // Archives never overlap: records already exported leave the store (prune)
                // before the next export starts after them.
                if let Some(m) = exports.iter().filter(|m| m.last >= oldest).max_by_key(|m| m.last) {
                    return Err(Error::invalid(format!(
                        "records {}..{} were exported to {} (export record {}) and are still in the store: \
                         prune them first (`hanzo-kms audit prune --archive {}`), so that archives do not overlap",
                        m.first, m.last, m.file, m.at, m.file
                    )));
                }
                let (bytes, sha256) =
                    write_archive(kms, &out, &store, oldest, &checkpoint, &public_key).await?;
                let file = out
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let message =
                    ExportMark::message(&store, oldest, checkpoint.seq, &sha256, &checkpoint.hash);
                let signed = kms.audit_sign(&audit_key, &message);
                let (version, signature) = match signed {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = std::fs::remove_file(&out);
                        return Err(e);
                    }
                };
                call.name_record(audit_key.meta.name.to_string());
                call.record_version(Some(version));
                let mut event = call.event("ok", None);
                event.detail = Some(ExportMark::detail(
                    oldest,
                    checkpoint.seq,
                    &sha256,
                    &file,
                    &checkpoint.hash,
                    &signature,
                ));
                let committed = match kms.store().begin_write().await {
                    Ok(tx) => {
                        // Under the chain's write lock: another node may have exported the same
                        // records meanwhile. Archives must not overlap.
                        match kms.signed_exports(&store, &keys).await {
                            Ok(marks) => {
                                let overlap = marks.into_iter().find(|m| m.last >= oldest);
                                match overlap {
                                    Some(m) => Err(Error::new(
                                        ErrorKind::AlreadyExists,
                                        format!(
                                            "records {}..{} were exported meanwhile (export record {}, {}): this export is dropped",
                                            m.first, m.last, m.at, m.file
                                        ),
                                    )),
                                    None => call.commit_events(tx, &[event]).await,
                                }
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                let (records, receipt) = match committed {
                    Ok(done) => done,
                    Err(e) => {
                        // Without its record the file is not an export: leave none.
                        let _ = std::fs::remove_file(&out);
                        return Err(e);
                    }
                };
                let export_record = records.last().map_or(0, |r| r.seq);
                Ok(Done::Committed(
                    ExportSummary {
                        file: out.clone(),
                        first: oldest,
                        last: checkpoint.seq,
                        bytes,
                        sha256,
                        export_record,
                    },
                    receipt,
                ))
            })
        })
        .await
    }

    /// Delete the records that the archive at `archive` holds, once it is confirmed: the file
    /// must verify alone, under the store's audit key, and an export record must name its
    /// SHA-256. Batches of [`PRUNE_BATCH`], each with an `audit.prune` record.
    pub async fn audit_prune(&self, ctx: &RequestCtx, archive: &Path) -> Result<PruneSummary> {
        let store = self.store_id().await?;
        let keys = self.audit_public_keys().await?;
        let archive = archive.to_path_buf();
        self.run(ctx, &op::AUDIT_PRUNE, Target::None(None), |call| {
            Box::pin(async move {
                let kms = call.kms;
                let a = read_archive(&archive)
                    .map_err(|what| Error::invalid(format!("{}: {what}", archive.display())))?;
                if a.store != store {
                    return Err(Error::invalid(format!(
                        "{}: the archive is of store {}, not this one ({store})",
                        archive.display(),
                        a.store
                    )));
                }
                if keys.get(&(a.checkpoint.key.clone(), a.checkpoint.version)) != Some(&a.public_key) {
                    return Err(Error::invalid(format!(
                        "{}: its checkpoint is not signed by this store's audit key",
                        archive.display()
                    )));
                }
                let mark = kms
                    .signed_exports(&store, &keys)
                    .await?
                    .into_iter()
                    .find(|m| m.sha256 == a.sha256 && m.first == a.first && m.last == a.last)
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "{}: no export record of this store names this file (sha256 {}): only an exported archive can be pruned",
                            archive.display(),
                            hex::encode(a.sha256)
                        ))
                    })?;
                let checkpoints = kms.signed_checkpoints(&store, &keys).await?;
                if !checkpoints.iter().any(|(_, c)| c.seq >= mark.at) {
                    return Err(Error::invalid(format!(
                        "the export record of {} (record {}) is not under a signed checkpoint yet: run `hanzo-kms audit checkpoint`, then prune",
                        archive.display(),
                        mark.at
                    )));
                }
                // The store's records must be the ones archived (pinned by the same checkpoint):
                // never delete records that differ from their archive.
                match kms.store().audit_record(mark.last).await? {
                    Some(r) if r.hash != a.checkpoint.hash => {
                        return Err(Error::new(
                            ErrorKind::Corrupt,
                            format!(
                                "the store's record {} is not the one {} holds: nothing pruned; run `hanzo-kms audit verify`",
                                mark.last,
                                archive.display()
                            ),
                        ));
                    }
                    _ => {}
                }
                let mut summary = PruneSummary {
                    first: mark.first,
                    last: mark.last,
                    ..PruneSummary::default()
                };
                let oldest = kms.store().audit_oldest().await?.unwrap_or(u64::MAX);
                if oldest < mark.first {
                    return Err(Error::invalid(format!(
                        "records {oldest}..{} come before this archive: prune the archive that holds them first",
                        mark.first - 1
                    )));
                }
                let mut from = oldest;
                let mut receipt = None;
                while from <= mark.last {
                    let to = mark.last.min(from + PRUNE_BATCH - 1);
                    let mut tx = kms.store().begin_write().await?;
                    let deleted = tx.delete_audit(from, to).await?;
                    let mut event = call.event("ok", None);
                    event.detail = Some(
                        json!({"first": from, "last": to, "deleted": deleted, "export": mark.at})
                            .to_string(),
                    );
                    receipt = Some(call.commit_events(tx, &[event]).await?.1);
                    summary.deleted += deleted;
                    summary.batches += 1;
                    from = to + 1;
                    tokio::task::yield_now().await;
                }
                Ok(match receipt {
                    Some(receipt) => Done::Committed(summary, receipt),
                    None => Done::Noted(summary, "already_pruned"),
                })
            })
        })
        .await
    }

    /// Check the audit log from its oldest retained record (or its newest checkpoint), every
    /// retained checkpoint's signature, and that an export covers whatever was pruned.
    pub(crate) async fn verify_retained(&self, opts: VerifyOptions) -> Result<AuditReport> {
        // A prune running meanwhile moves the oldest record under the walk: a problem found
        // while the oldest record changed is checked again from the new start.
        let mut tries = 0;
        loop {
            let before = self.store().audit_base().await?.0;
            let report = self.verify_retained_once(opts).await?;
            tries += 1;
            if report.is_ok() || tries == 3 || self.store().audit_base().await?.0 == before {
                return Ok(report);
            }
        }
    }

    async fn verify_retained_once(&self, opts: VerifyOptions) -> Result<AuditReport> {
        let s = self.store();
        let store = self.store_id().await?;
        // One proof of possession per key version for the whole check (it signs in the
        // provider): the keys and the versions that failed it.
        let (keys, altered) = self.audit_keys().await?;
        // The walk starts after the record the prunes left as the chain's base: records
        // deleted from the start without a prune are found missing.
        let (base, base_hash, held) = s.audit_bounds().await?;
        let oldest = base.saturating_add(1);
        let problem = |at: u64, what: String| AuditReport {
            from: oldest,
            records: 0,
            problem: Some((at, what)),
            head: [0; 32],
        };
        // Records at or before the base were pruned: one the store still holds there was put
        // back, or the base was moved over records to hide them from the walk.
        if let Some(h) = held
            && h <= base
        {
            return Ok(problem(
                h,
                format!(
                    "the store holds record {h}, but its records up to {base} were pruned: records were inserted, or the chain's base was moved over them"
                ),
            ));
        }
        if let Some(v) = altered.first() {
            return Ok(problem(
                oldest,
                format!(
                    "the audit key's version {v} is not one its provider holds (no material, or a public key the provider cannot sign for): the store was altered"
                ),
            ));
        }
        // Every retained checkpoint must be well-formed, of this store and well signed.
        let mut pins = BTreeMap::new();
        for r in s.audit_marks(CHECKPOINT).await? {
            match check_checkpoint(&r, &store, &keys) {
                Ok(c) => {
                    pins.insert(c.seq, c.hash);
                }
                Err(what) => return Ok(problem(r.seq, what)),
            }
        }
        let (mut first, mut prev) = (oldest, base_hash);
        if oldest > 1 {
            // Records before `oldest` are gone: an export must cover them, and its checkpoint
            // (at or after oldest − 1) must be met by the walk.
            let exports: Vec<ExportMark> = s
                .audit_marks(EXPORT)
                .await?
                .iter()
                .filter_map(|r| ExportMark::from_record(r).ok())
                .collect();
            let covering = |m: &&ExportMark| m.first <= oldest && oldest - 1 <= m.last;
            let signed = exports
                .iter()
                .filter(covering)
                .find(|m| m.verifies(&store, &keys));
            if signed.is_none()
                && let Some(m) = exports.iter().find(covering)
            {
                return Ok(problem(
                    m.at,
                    format!(
                        "the export record of records {}..{} is not signed by the audit key: it was forged to hide a deletion, or altered",
                        m.first, m.last
                    ),
                ));
            }
            let Some(mark) = signed else {
                return Ok(problem(
                    oldest,
                    format!(
                        "records 1..{} are gone but no export record covers them: they were pruned without an export, or deleted",
                        oldest - 1
                    ),
                ));
            };
            if pins.range(mark.at..).next().is_none() {
                return Ok(problem(
                    mark.at,
                    format!(
                        "the export record of records {}..{} is under no signed checkpoint: it may have been forged to hide a prune",
                        mark.first, mark.last
                    ),
                ));
            }
            match pins.get(&mark.last) {
                None => {
                    return Ok(problem(
                        mark.at,
                        format!(
                            "the export of records {}..{} has no signed checkpoint at {} in the store",
                            mark.first, mark.last, mark.last
                        ),
                    ));
                }
                Some(h) if mark.last == oldest - 1 && *h != prev => {
                    return Ok(problem(
                        oldest,
                        format!(
                            "record {oldest} does not follow the checkpoint of record {}: the start of the log was replaced",
                            oldest - 1
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        if opts.since_checkpoint
            && let Some((&seq, &hash)) = pins.range(oldest..).next_back()
        {
            (first, prev) = (seq + 1, hash);
        }
        let report = s.verify_audit_from(first, prev).await?;
        if report.problem.is_some() {
            return Ok(report);
        }
        // The walk saw the records from `first` on: each checkpoint in that range must name a
        // record that hashes to what it signed.
        for (&seq, hash) in pins.range(first..) {
            match s.audit_record(seq).await? {
                Some(r) if r.hash == *hash => {}
                Some(_) => {
                    return Ok(AuditReport {
                        problem: Some((
                            seq,
                            format!("record {seq} does not hash to what its checkpoint signed"),
                        )),
                        ..report
                    });
                }
                None => {
                    return Ok(AuditReport {
                        problem: Some((
                            seq,
                            format!("record {seq}, which a checkpoint signed, is missing"),
                        )),
                        ..report
                    });
                }
            }
        }
        Ok(report)
    }

    /// Check archive files: each alone (its chain, its checkpoint's signature), against each
    /// other (they must link), against the export records that name them, and, with
    /// `with_store`, against this store's audit key and its oldest retained record. An export
    /// record whose range is older than what the store holds and that no given file matches is
    /// a missing archive.
    pub async fn audit_verify_archives(
        &self,
        ctx: &RequestCtx,
        files: &[PathBuf],
    ) -> Result<ArchiveReport> {
        let files = files.to_vec();
        self.run(ctx, &op::AUDIT_VERIFY, Target::None(None), |call| {
            Box::pin(async move {
                let kms = call.kms;
                let store = kms.store_id().await?;
                let keys = kms.audit_public_keys().await?;
                let oldest = kms.store().audit_oldest().await?.unwrap_or(1);
                let first_prev = kms
                    .store()
                    .audit_record(oldest)
                    .await?
                    .map(|r| r.prev_hash);
                let exports: Vec<ExportMark> = kms
                    .store()
                    .audit_marks(EXPORT)
                    .await?
                    .iter()
                    .filter_map(|r| ExportMark::from_record(r).ok())
                    .collect();
                let link = StoreLink {
                    store,
                    keys,
                    oldest,
                    first_prev,
                    exports,
                };
                let (mut report, archives) = check_archives_read(&files, Some(&link));
                // Where the store still holds an archive's records, they must be the same.
                for a in &archives {
                    if a.last >= oldest {
                        match kms.store().audit_record(a.last).await? {
                            Some(r) if r.hash == a.checkpoint.hash => {}
                            _ => report.problems.push(format!(
                                "{}: the store's record {} is not the one the archive's checkpoint signed",
                                a.path.display(),
                                a.last
                            )),
                        }
                    }
                    if a.first > oldest {
                        match kms.store().audit_record(a.first - 1).await? {
                            Some(r) if r.hash == a.prev_hash => {}
                            _ => report.problems.push(format!(
                                "{}: it does not continue the store's record {}",
                                a.path.display(),
                                a.first - 1
                            )),
                        }
                    }
                }
                Ok(if report.is_ok() {
                    Done::Ok(report)
                } else {
                    Done::Failed(report, "archive_broken")
                })
            })
        })
        .await
    }
}

/// What the store tells about the archives that lead to it.
pub struct StoreLink {
    pub store: String,
    pub keys: HashMap<(String, u32), Vec<u8>>,
    pub oldest: u64,
    /// The previous-hash of the oldest retained record.
    pub first_prev: Option<[u8; 32]>,
    pub exports: Vec<ExportMark>,
}

/// Check archives alone (no store: `hanzo-kms audit verify-archive`), or with what the store
/// says. See [`Kms::audit_verify_archives`].
pub fn check_archives(files: &[PathBuf], store: Option<&StoreLink>) -> ArchiveReport {
    check_archives_read(files, store).0
}

/// [`check_archives`], also returning the archives that could be read, oldest first.
fn check_archives_read(
    files: &[PathBuf],
    store: Option<&StoreLink>,
) -> (ArchiveReport, Vec<Archive>) {
    let mut report = ArchiveReport::default();
    let mut archives = Vec::new();
    for f in files {
        match read_archive(f) {
            Ok(a) => {
                report.archives.push(json!({
                    "file": f.display().to_string(),
                    "first": a.first,
                    "last": a.last,
                    "records": a.last + 1 - a.first,
                    "sha256": hex::encode(a.sha256),
                }));
                archives.push(a);
            }
            Err(what) => report.problems.push(format!("{}: {what}", f.display())),
        }
    }
    archives.sort_by_key(|a| a.first);
    // One store, one key set.
    if let Some(first) = archives.first() {
        for a in &archives {
            if a.store != first.store {
                report.problems.push(format!(
                    "{}: of store {}, but {} is of store {}",
                    a.path.display(),
                    a.store,
                    first.path.display(),
                    first.store
                ));
            }
        }
    }
    if let Some(link) = store {
        for a in &archives {
            if a.store != link.store {
                report.problems.push(format!(
                    "{}: of store {}, not this store ({})",
                    a.path.display(),
                    a.store,
                    link.store
                ));
            } else if link
                .keys
                .get(&(a.checkpoint.key.clone(), a.checkpoint.version))
                != Some(&a.public_key)
            {
                report.problems.push(format!(
                    "{}: its checkpoint is signed by {} v{}, whose public key is not this store's",
                    a.path.display(),
                    a.checkpoint.key,
                    a.checkpoint.version
                ));
            }
        }
    } else if let Some(first) = archives.first() {
        for a in &archives {
            if a.public_key != first.public_key {
                report.problems.push(format!(
                    "{}: signed under another public key than {}",
                    a.path.display(),
                    first.path.display()
                ));
            }
        }
    }
    // Consecutive archives link: no gap, no overlap, the hash carried over.
    for w in archives.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if b.first != a.last + 1 {
            report.problems.push(format!(
                "{} ends at record {} but {} starts at {}: {}",
                a.path.display(),
                a.last,
                b.path.display(),
                b.first,
                if b.first > a.last + 1 {
                    format!(
                        "records {}..{} are missing (an archive was dropped)",
                        a.last + 1,
                        b.first - 1
                    )
                } else {
                    "they overlap".to_owned()
                }
            ));
        } else if b.prev_hash != a.checkpoint.hash {
            report.problems.push(format!(
                "{} does not continue the chain of {}",
                b.path.display(),
                a.path.display()
            ));
        }
    }
    // The newest archive leads to the store's oldest retained record.
    if let (Some(link), Some(last)) = (store, archives.last()) {
        if link.oldest == last.last + 1 {
            if link.first_prev != Some(last.checkpoint.hash) {
                report.problems.push(format!(
                    "the store's oldest record {} does not continue the chain of {}",
                    link.oldest,
                    last.path.display()
                ));
            }
        } else if link.oldest > last.last + 1 {
            report.problems.push(format!(
                "records {}..{} are in no archive given (the store starts at {})",
                last.last + 1,
                link.oldest - 1,
                link.oldest
            ));
        }
    }
    // Every export record seen (the store's and the archives' own) names a file: a range the
    // store no longer holds must be among the archives given, with the same hash.
    let given: HashMap<[u8; 32], &Archive> = archives.iter().map(|a| (a.sha256, a)).collect();
    let mut named: Vec<&ExportMark> = archives.iter().flat_map(|a| a.exports.iter()).collect();
    if let Some(link) = store {
        named.extend(link.exports.iter());
    }
    // Only a signed export record is evidence: the store's keys, or (alone) the archives'.
    let (store_id, keys) = match store {
        Some(l) => (l.store.clone(), l.keys.clone()),
        None => (
            archives
                .first()
                .map(|a| a.store.clone())
                .unwrap_or_default(),
            archives
                .iter()
                .map(|a| {
                    (
                        (a.checkpoint.key.clone(), a.checkpoint.version),
                        a.public_key.clone(),
                    )
                })
                .collect(),
        ),
    };
    named.retain(|m| {
        let good = m.verifies(&store_id, &keys);
        if !good {
            report.problems.push(format!(
                "the export record at {} (records {}..{}) is not signed by the audit key: forged or altered",
                m.at, m.first, m.last
            ));
        }
        good
    });
    let held_from = store.map_or(u64::MAX, |l| l.oldest);
    let mut seen = std::collections::HashSet::new();
    for m in named {
        if !seen.insert(m.sha256) {
            continue;
        }
        let pruned = m.first < held_from;
        match given.get(&m.sha256) {
            Some(a) if a.first != m.first || a.last != m.last => report.problems.push(format!(
                "{}: the export record at {} says records {}..{}, the file holds {}..{}",
                a.path.display(),
                m.at,
                m.first,
                m.last,
                a.first,
                a.last
            )),
            Some(_) => {}
            None if pruned => report.problems.push(format!(
                "the archive of records {}..{} ({}, sha256 {}), named by the export record at {}, is not among those given{}",
                m.first,
                m.last,
                m.file,
                hex::encode(m.sha256),
                m.at,
                if archives.iter().any(|a| a.first <= m.first && m.last <= a.last) {
                    ": a file with those records was given, but its contents differ"
                } else {
                    ""
                }
            )),
            None => {}
        }
    }
    // A given file that no export record names (when the records that would name it are
    // at hand) was not written by an export of this chain, or was altered.
    for a in &archives {
        let named_somewhere = archives
            .iter()
            .any(|b| b.exports.iter().any(|m| m.sha256 == a.sha256))
            || store.is_some_and(|l| l.exports.iter().any(|m| m.sha256 == a.sha256));
        // Alone, a newer archive need not hold the record that named an older one (under a
        // retention, it is written long after): only a record naming the same range with
        // another hash says the file is not the one exported.
        let could_be_named = store.is_some() || named_by_range(&archives, a.first, a.last);
        if could_be_named && !named_somewhere {
            report.problems.push(format!(
                "{}: no export record names this file (sha256 {}): it was altered, or is not an export of this store",
                a.path.display(),
                hex::encode(a.sha256)
            ));
        }
    }
    (report, archives)
}

/// Whether an export record among the archives' names the range `first..=last`.
fn named_by_range(archives: &[Archive], first: u64, last: u64) -> bool {
    archives
        .iter()
        .flat_map(|b| b.exports.iter())
        .any(|m| (m.first, m.last) == (first, last))
}

/// The retained checkpoints that are well-formed, of this store and well signed, with their
/// record's seq, oldest first.
fn good_checkpoints(
    records: &[AuditRecord],
    store: &str,
    keys: &HashMap<(String, u32), Vec<u8>>,
) -> Vec<(u64, Checkpoint)> {
    records
        .iter()
        .filter_map(|r| check_checkpoint(r, store, keys).ok().map(|c| (r.seq, c)))
        .collect()
}

/// A checkpoint record's checkpoint, or why it is not a good one.
fn check_checkpoint(
    r: &AuditRecord,
    store: &str,
    keys: &HashMap<(String, u32), Vec<u8>>,
) -> std::result::Result<Checkpoint, String> {
    let c = Checkpoint::from_record(r)?;
    if c.store != store {
        return Err(format!(
            "checkpoint record {}: it names store {}, not this one",
            r.seq, c.store
        ));
    }
    if c.seq >= r.seq {
        return Err(format!(
            "checkpoint record {}: it pins record {}, which is not before it",
            r.seq, c.seq
        ));
    }
    let pk = keys.get(&(c.key.clone(), c.version)).ok_or_else(|| {
        format!(
            "checkpoint record {}: signed by {} v{}, which has no public key in this store",
            r.seq, c.key, c.version
        )
    })?;
    if !c.verifies(pk) {
        return Err(format!(
            "checkpoint record {}: its signature does not verify under {} v{}: it was forged or altered",
            r.seq, c.key, c.version
        ));
    }
    Ok(c)
}

/// Write an archive of records `first..=checkpoint.seq` to `out`, atomically (a temporary file
/// beside it, synced, then linked in under its name: an existing file is never replaced).
/// Returns its size and SHA-256.
async fn write_archive(
    kms: &Kms,
    out: &Path,
    store: &str,
    first: u64,
    checkpoint: &Checkpoint,
    public_key: &[u8],
) -> Result<(u64, [u8; 32])> {
    if out.exists() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("{} exists: an archive is never overwritten", out.display()),
        ));
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{} is not a file name", out.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let io = |what: &str, e: std::io::Error| {
        Error::new(ErrorKind::Io, format!("{what} {}: {e}", out.display()))
    };
    let result = async {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io("creating", e))?;
        let mut w = HashingWriter::new(std::io::BufWriter::new(file));
        let prev = kms
            .store()
            .audit_record(first)
            .await?
            .map(|r| r.prev_hash)
            .ok_or_else(|| Error::internal("the oldest record vanished during the export"))?;
        let header = json!({
            "format": ARCHIVE_FORMAT,
            "store": store,
            "first": first,
            "last": checkpoint.seq,
            "prev_hash": hex::encode(prev),
        });
        writeln!(w, "{header}").map_err(|e| io("writing", e))?;
        let (mut expected, mut hash) = (first, prev);
        while expected <= checkpoint.seq {
            let page = kms.store().audit_records(expected - 1, 1000).await?;
            match page.first() {
                None => break,
                Some(r) if r.seq != expected => {
                    return Err(Error::new(
                        ErrorKind::Corrupt,
                        format!(
                            "record {expected} is missing from the store (the next is {}): nothing exported; run `hanzo-kms audit verify`",
                            r.seq
                        ),
                    ));
                }
                Some(_) => {}
            }
            for r in page.iter().take_while(|r| r.seq <= checkpoint.seq) {
                audit::check_link(expected, &hash, r).map_err(|what| {
                    Error::new(
                        ErrorKind::Corrupt,
                        format!("the audit chain is broken at record {}: {what}; run `hanzo-kms audit verify`", r.seq),
                    )
                })?;
                writeln!(w, "{}", r.to_json()).map_err(|e| io("writing", e))?;
                hash = r.hash;
                expected += 1;
            }
        }
        if expected != checkpoint.seq + 1 || hash != checkpoint.hash {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "the records up to {} do not hash to what their checkpoint signed; run `hanzo-kms audit verify`",
                    checkpoint.seq
                ),
            ));
        }
        let trailer = json!({
            "checkpoint": checkpoint.to_json(),
            "algorithm": AUDIT_KEY_ALGORITHM.as_str(),
            "public_key": hex::encode(public_key),
        });
        writeln!(w, "{trailer}").map_err(|e| io("writing", e))?;
        let (bytes, sha256, inner) = w.finish();
        let file = inner
            .into_inner()
            .map_err(|e| io("writing", e.into_error()))?;
        file.sync_all().map_err(|e| io("syncing", e))?;
        std::fs::hard_link(&tmp, out).map_err(|e| io("naming", e))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok((bytes, sha256))
    }
    .await;
    let _ = std::fs::remove_file(&tmp);
    result
}

/// A writer that counts and hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: std::io::Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn finish(self) -> (u64, [u8; 32], W) {
        (self.bytes, self.hasher.finalize().into(), self.inner)
    }
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Read an archive and check it alone: its format, its records' chain from its previous-hash,
/// that the chain ends at its checkpoint, and the checkpoint's signature under the public key it
/// carries. `Err` says what is wrong.
pub fn read_archive(path: &Path) -> std::result::Result<Archive, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    parse_archive_from(path, std::io::BufReader::new(file))
}

/// [`read_archive`] on bytes already read (`path` only names the archive).
pub fn parse_archive(path: &Path, bytes: &[u8]) -> std::result::Result<Archive, String> {
    parse_archive_from(path, bytes)
}

/// The longest line an archive may have: a record is a few hundred bytes.
const MAX_LINE: u64 = 1 << 20;

/// Lines of an archive, read one at a time (an archive may hold millions of records: it is
/// never held in memory whole), with the SHA-256 of every byte read.
struct Lines<R> {
    reader: R,
    hasher: Sha256,
    buf: Vec<u8>,
}

impl<R: std::io::BufRead> Lines<R> {
    /// The next line without its `\n` (`None` at the end).
    fn next_line(&mut self) -> std::result::Result<Option<String>, String> {
        self.buf.clear();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| format!("cannot read it: {e}"))?;
        if n == 0 {
            return Ok(None);
        }
        if n as u64 == MAX_LINE && !self.buf.ends_with(b"\n") {
            return Err(format!(
                "a line is longer than {MAX_LINE} bytes: not an archive's"
            ));
        }
        self.hasher.update(&self.buf);
        let line = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        String::from_utf8(line.to_vec())
            .map(Some)
            .map_err(|_| "it is not UTF-8 text".to_owned())
    }
}

fn parse_archive_from(
    path: &Path,
    reader: impl std::io::BufRead,
) -> std::result::Result<Archive, String> {
    let mut lines = Lines {
        reader,
        hasher: Sha256::new(),
        buf: Vec::new(),
    };
    let header: Value = lines
        .next_line()?
        .and_then(|l| serde_json::from_str(&l).ok())
        .ok_or("it does not start with an archive header")?;
    if header["format"].as_str() != Some(ARCHIVE_FORMAT) {
        return Err(format!("it is not a {ARCHIVE_FORMAT} file"));
    }
    let store = header["store"]
        .as_str()
        .ok_or("its header has no store")?
        .to_owned();
    let first = header["first"].as_u64().ok_or("its header has no first")?;
    let last = header["last"].as_u64().ok_or("its header has no last")?;
    let prev_hash = header["prev_hash"]
        .as_str()
        .and_then(hanzo_kms_store::parse_hash)
        .ok_or("its header has no prev_hash")?;
    if !valid_range(first, last) {
        return Err(format!(
            "its header's range {first}..{last} is not one of records"
        ));
    }
    if first == 1 && prev_hash != [0; 32] {
        return Err("it starts at record 1 but not from the chain's zero hash".to_owned());
    }
    // Every line but the last is a record; the last is the checkpoint. One line of look-ahead.
    let (mut expected, mut hash) = (first, prev_hash);
    let mut exports = Vec::new();
    let mut pending = lines
        .next_line()?
        .ok_or("it has no records and no checkpoint")?;
    while let Some(next) = lines.next_line()? {
        let line = std::mem::replace(&mut pending, next);
        if expected > last {
            return Err(format!(
                "it holds records past {last}, the last its header names"
            ));
        }
        let v: Value = serde_json::from_str(&line)
            .map_err(|_| format!("the line after record {} is not JSON", expected - 1))?;
        let r = AuditRecord::from_json(&v)?;
        audit::check_link(expected, &hash, &r)
            .map_err(|what| format!("record {}: {what}", r.seq))?;
        if r.event.operation == EXPORT
            && let Ok(m) = ExportMark::from_record(&r)
        {
            exports.push(m);
        }
        hash = r.hash;
        expected += 1;
    }
    let trailer: Value =
        serde_json::from_str(&pending).map_err(|_| "its last line is not its checkpoint")?;
    let sha256: [u8; 32] = lines.hasher.finalize().into();
    let cp = &trailer["checkpoint"];
    let version = cp["version"].as_u64().and_then(|v| u32::try_from(v).ok());
    let checkpoint = Checkpoint::from_json(cp, cp["key"].as_str().map(str::to_owned), version)
        .map_err(|w| format!("its checkpoint is malformed: {w}"))?;
    let public_key = trailer["public_key"]
        .as_str()
        .and_then(|s| hex::decode(s).ok())
        .ok_or("its checkpoint has no public key")?;
    if expected != last + 1 {
        return Err(format!(
            "its header says records {first}..{last} but it holds {first}..{}: records were removed",
            expected - 1
        ));
    }
    if checkpoint.seq != last || checkpoint.hash != hash {
        return Err("its records do not end at its checkpoint: the chain was altered".to_owned());
    }
    if checkpoint.store != store {
        return Err("its checkpoint names another store than its header".to_owned());
    }
    if !checkpoint.verifies(&public_key) {
        return Err(
            "its checkpoint's signature does not verify: it was forged or altered".to_owned(),
        );
    }
    Ok(Archive {
        path: path.to_path_buf(),
        store,
        first,
        last,
        prev_hash,
        checkpoint,
        public_key,
        sha256,
        exports,
    })
}

/// Whether `first..=last` can be a range of stored records: sequence numbers run from 1 and are
/// stored as positive i64s. Every range read from outside is checked with this first, so the
/// arithmetic on it (`last + 1`) cannot overflow.
fn valid_range(first: u64, last: u64) -> bool {
    first >= 1 && first <= last && last < i64::MAX as u64
}

/// A system principal with every right, for the service's own audited work (the scheduler's
/// checkpoints, the audit key's creation).
pub(crate) fn system_admin(id: &str) -> RequestCtx {
    RequestCtx {
        principal: crate::Principal {
            id: id.to_owned(),
            ..crate::Principal::local_operator()
        },
        ..RequestCtx::local()
    }
}

/// An audit event for tests of archives (chain position and hash are the store's).
#[cfg(test)]
fn event(op: &str) -> hanzo_kms_store::AuditEvent {
    hanzo_kms_store::AuditEvent {
        time_ms: 1,
        request_id: "r".into(),
        principal: "p".into(),
        tenant: "*".into(),
        operation: op.into(),
        key_name: None,
        key_version: None,
        outcome: "ok".into(),
        reason: None,
        peer: None,
        detail: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_through_its_archive_line() {
        let mut e = event("audit.export");
        e.detail = Some(ExportMark::detail(
            1, 9, &[7; 32], "a.jsonl", &[8; 32], &[9; 64],
        ));
        e.key_name = Some("api:system:audit".into());
        e.key_version = Some(1);
        let r = &audit::chain_from(0, [0; 32], &[e])[0];
        let back = AuditRecord::from_json(&r.to_json()).unwrap();
        assert_eq!(&back, r);
        let m = ExportMark::from_record(&back).unwrap();
        assert_eq!((m.first, m.last, m.sha256, m.at), (1, 9, [7; 32], 1));
    }

    #[test]
    fn the_checkpoint_message_binds_every_field() {
        let base = Checkpoint::message("s", 5, &[1; 32], 10);
        assert_ne!(base, Checkpoint::message("t", 5, &[1; 32], 10));
        assert_ne!(base, Checkpoint::message("s", 6, &[1; 32], 10));
        assert_ne!(base, Checkpoint::message("s", 5, &[2; 32], 10));
        assert_ne!(base, Checkpoint::message("s", 5, &[1; 32], 11));
        assert!(base.starts_with(CHECKPOINT_CONTEXT));
    }
}
