//! The Hanzo KMS service: one implementation of every operation, behind one pipeline.
//!
//! Every operation, whether it arrives from the local CLI or (later) REST or gRPC, runs these
//! steps in this order (DESIGN.md §5):
//!
//! 1. **authenticate** — the caller arrives as a [`RequestCtx`] with a [`Principal`]; the
//!    transport authenticated it (the CLI: the local operator);
//! 2. **tenant and permission** — [`Principal::authorize`]; a foreign tenant's key is "not found";
//! 3. **key state and policy** — the key and the version must be enabled, the algorithm right;
//! 4. **rate limit** — [`RateLimiter`];
//! 5. **replay guard** — for signing (nonces are recorded before signing);
//! 6. **provider** — the only step that touches key material;
//! 7. **audit** — appended in the same transaction as the state change; if the append fails,
//!    the request fails and its result (a plaintext, a signature) is not returned.
//!
//! Denied and failed requests are audited too (outcome `denied` or `error`, with the error kind).

#![forbid(unsafe_code)]

pub mod auth;
pub mod backup;
pub mod bootstrap;
mod commit;
pub mod data;
pub mod failover;
mod info;
pub mod migrate;
pub mod model;
pub mod ratelimit;
pub mod raw;
pub mod sign;
pub mod tokens;

use std::sync::Arc;

use hanzo_kms_core::{
    Algorithm, Config, Error, ErrorKind, KeyMeta, KeyName, KeyRef, KeySpec, KeyState, KeyVersion,
    Provider, Purpose, Result, UnixTime,
};
use hanzo_kms_store::{AuditEvent, AuditRecord, AuditReport, Store, StoredKey, WriteTx};

pub use auth::{Principal, Role};
pub use bootstrap::{InitReport, MASTER_KEY_ENV, MasterKeySource, Settings};
pub use commit::CommitStats;
pub use info::{KeyInfo, VersionInfo};
pub use tokens::{ApiToken, TokenInfo};

/// Seconds in a day.
const DAY: i64 = 86_400;

/// Who is asking, and which request this is.
#[derive(Clone, Debug)]
pub struct RequestCtx {
    pub request_id: String,
    pub principal: Principal,
    pub peer: Option<String>,
}

impl RequestCtx {
    /// A request by the local operator (the CLI).
    pub fn local() -> Self {
        Self {
            request_id: uuid::Uuid::new_v4().to_string(),
            principal: Principal::local_operator(),
            peer: None,
        }
    }
}

/// Pipeline step 4. The CLI runs one command per process, so it uses [`Unlimited`]; the server
/// installs the limiter built from the `rate_limits` config section.
pub trait RateLimiter: Send + Sync {
    /// `Err` with [`ErrorKind::Unavailable`]-class "rate limited" when over a limit.
    fn check(&self, ctx: &RequestCtx, operation: &str, key: Option<&KeyName>) -> Result<()>;
}

/// No limits: for the one-shot local CLI.
#[derive(Debug, Default)]
pub struct Unlimited;

impl RateLimiter for Unlimited {
    fn check(&self, _: &RequestCtx, _: &str, _: Option<&KeyName>) -> Result<()> {
        Ok(())
    }
}

/// How `destroy` proceeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestroyMode {
    /// Destroy the material now.
    Now,
    /// Schedule destruction after this many seconds; `keys enable` cancels it.
    After(i64),
}

/// What `rotate --due` and `destroy --due` did to one key.
#[derive(Debug)]
pub struct DueOutcome {
    pub key: String,
    pub result: Result<KeyInfo>,
}

/// The service. Cheap to clone.
#[derive(Clone)]
pub struct Kms {
    store: Store,
    provider: Arc<dyn Provider>,
    config: Arc<Config>,
    limiter: Arc<dyn RateLimiter>,
    /// Started on first use, on the runtime of the first signing request.
    committer: Arc<std::sync::OnceLock<commit::GroupCommit>>,
    /// The EIP-712 domain, computed on first use.
    pub(crate) domain: Arc<std::sync::OnceLock<hanzo_kms_core::eip712::Domain>>,
    /// Signer labels already worked out, by public key.
    pub(crate) signers: Arc<sign::Signers>,
    /// The failover provider, when `kms.lux.failover` is on (also `provider`).
    failover: Option<Arc<failover::Failover>>,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kms")
            .field("store", &self.store.location())
            .field("provider", &self.provider.name())
            .finish_non_exhaustive()
    }
}

/// One request's audit context (pipeline step 7).
struct Op<'a> {
    ctx: &'a RequestCtx,
    operation: &'static str,
    key: Option<String>,
    version: Option<u32>,
}

impl Op<'_> {
    fn event(&self, outcome: &str, reason: Option<&str>) -> AuditEvent {
        audit_event(
            self.ctx,
            self.operation,
            self.key.clone(),
            self.version,
            outcome,
            reason,
        )
    }
}

/// Run an operation that makes key material in a provider on a task of its own, so that it ends
/// the same way whether or not its caller is still waiting. A request future is dropped when the
/// client disconnects or the server's request timeout fires; dropped between the provider's
/// `generate` and the commit, it would leave an HSM object no key record points to (the error
/// paths release it, but a dropped future runs no error path). On its own task the operation
/// either commits, or fails and releases what it made, and is audited either way.
async fn to_completion<T: Send + 'static>(
    op: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(op)
        .await
        .map_err(|_| Error::internal("a key operation's task stopped before it finished"))?
}

pub(crate) fn audit_event(
    ctx: &RequestCtx,
    operation: &str,
    key: Option<String>,
    version: Option<u32>,
    outcome: &str,
    reason: Option<&str>,
) -> AuditEvent {
    AuditEvent {
        time_ms: now_ms(),
        request_id: ctx.request_id.clone(),
        principal: ctx.principal.id.clone(),
        tenant: ctx.principal.tenant_label().to_owned(),
        operation: operation.to_owned(),
        key_name: key,
        key_version: version,
        outcome: outcome.to_owned(),
        reason: reason.map(str::to_owned),
        peer: ctx.peer.clone(),
    }
}

impl Kms {
    /// Initialise a new data directory and return the service on it.
    pub async fn init(settings: &Settings) -> Result<(Self, InitReport)> {
        let (report, store, provider) = bootstrap::init(settings).await?;
        Ok((Self::new(store, provider, settings.config.clone()), report))
    }

    /// Open an initialised data directory.
    pub async fn open(settings: &Settings) -> Result<Self> {
        let o = bootstrap::open(settings).await?;
        let mut kms = Self::new(o.store, o.provider, settings.config.clone());
        kms.failover = o.failover;
        Ok(kms)
    }

    pub fn new(store: Store, provider: Arc<dyn Provider>, config: Config) -> Self {
        Self {
            store,
            provider,
            config: Arc::new(config),
            limiter: Arc::new(Unlimited),
            committer: Arc::new(std::sync::OnceLock::new()),
            domain: Arc::new(std::sync::OnceLock::new()),
            signers: Arc::default(),
            failover: None,
        }
    }

    /// The failover provider, when `kms.lux.failover` is on.
    pub fn failover(&self) -> Option<&Arc<failover::Failover>> {
        self.failover.as_ref()
    }

    /// One health check of the failover primary (the server runs this every
    /// `health_check_interval`). A transition is logged and written to the audit log.
    pub async fn failover_check(&self) -> Option<failover::Transition> {
        let fo = self.failover.clone()?;
        let t = tokio::task::spawn_blocking(move || fo.check())
            .await
            .ok()??;
        let operation = match t.to {
            failover::Mode::FailedOver => "provider.failover",
            failover::Mode::Recovering { .. } => "provider.recovering",
            failover::Mode::Primary => "provider.failback",
        };
        match t.to {
            failover::Mode::FailedOver => tracing::error!(
                from = t.from.as_str(),
                to = t.to.as_str(),
                "failover: all traffic to the backup device: {}",
                t.reason
            ),
            _ => tracing::warn!(
                from = t.from.as_str(),
                to = t.to.as_str(),
                "failover: {}",
                t.reason
            ),
        }
        let ctx = RequestCtx::local();
        let event = audit_event(&ctx, operation, None, None, "ok", Some(&t.reason));
        let written = async {
            let tx = self.store.begin_write().await?;
            tx.commit(&[event]).await
        }
        .await;
        if let Err(e) = written {
            tracing::error!(error = %e, "failover: the transition could not be audited");
        }
        Some(t)
    }

    /// Replace the rate limiter (the server does this).
    pub fn with_limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Run a provider call. A hardware provider's call may wait (for a free session, or on the
    /// device): on a multi-threaded runtime it runs under `block_in_place`, so the worker's
    /// other requests move to another worker meanwhile. Software calls (microseconds) run inline.
    pub(crate) fn device<T>(&self, f: impl FnOnce(&dyn Provider) -> T) -> T {
        let p = self.provider.as_ref();
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if p.capabilities().hardware && multi {
            tokio::task::block_in_place(|| f(p))
        } else {
            f(p)
        }
    }

    pub(crate) fn committer(&self) -> &commit::GroupCommit {
        self.committer
            .get_or_init(|| commit::GroupCommit::start(self.store.clone()))
    }

    /// Whether the store answers (for `/readyz`).
    pub async fn store_ready(&self) -> Result<()> {
        self.store.meta("format").await.map(|_| ())
    }

    /// The provider's health (a PKCS#11 token's `C_GetTokenInfo` and login session), for
    /// `/readyz` and failover.
    pub fn provider_health(&self) -> hanzo_kms_core::Health {
        self.provider.health()
    }

    /// Signing requests and the transactions that recorded them (group commit): requests per
    /// transaction is the fsyncs saved.
    pub fn commit_stats(&self) -> Option<Arc<CommitStats>> {
        self.committer.get().map(|c| c.stats.clone())
    }

    /// How many times the store synced its SQLite WAL (`None` on PostgreSQL).
    pub fn store_fsyncs(&self) -> Option<u64> {
        self.store.fsyncs()
    }

    /// Checkpoint passes of the SQLite WAL that copied frames (`None` on PostgreSQL).
    pub fn store_checkpoints(&self) -> Option<u64> {
        self.store.checkpoints()
    }

    /// Close the store cleanly.
    pub async fn close(&self) {
        self.store.close().await;
    }

    /// Parse a key name with the configured separator.
    pub fn parse_name(&self, s: &str) -> Result<KeyName> {
        KeyName::parse(s, self.config.separator())
    }

    // ---- keys -------------------------------------------------------------------------------

    /// Create a key. `algorithm` defaults by purpose (model and data: aes-256-gcm; poai and hmm:
    /// the configured algorithm). `rotation_days` defaults to `key_rotation_days` for model keys
    /// and to never for others; `Some(0)` means never.
    ///
    /// It runs to its end even if the caller stops waiting (a task of its own: a request that is cancelled cannot leave it half done).
    pub async fn create_key(
        &self,
        ctx: &RequestCtx,
        name: &KeyName,
        algorithm: Option<Algorithm>,
        rotation_days: Option<u32>,
    ) -> Result<KeyInfo> {
        let (kms, ctx, name) = (self.clone(), ctx.clone(), name.clone());
        to_completion(async move {
            kms.create_key_now(&ctx, &name, algorithm, rotation_days)
                .await
        })
        .await
    }

    async fn create_key_now(
        &self,
        ctx: &RequestCtx,
        name: &KeyName,
        algorithm: Option<Algorithm>,
        rotation_days: Option<u32>,
    ) -> Result<KeyInfo> {
        let op = self.op(ctx, "key.create", Some(name));
        let r = async {
            self.admit(ctx, &op, Role::Admin, Some(name))?;
            let spec = self.plan_key(name, algorithm, rotation_days)?;
            let mut infos = self.create_keys(ctx, &[spec]).await?;
            infos
                .pop()
                .ok_or_else(|| Error::internal("no key was created"))
        }
        .await;
        self.close_op(&op, r).await
    }

    /// The spec's CreateModelKeyspace: `model:C:M` (aes-256-gcm) and, with `signing_keys`,
    /// `poai:C:M` and `hmm:C:M` with the configured algorithms. All or nothing, and run to its
    /// end even if the caller stops waiting (a task of its own: a request that is cancelled cannot leave it half done).
    pub async fn create_keyspace(
        &self,
        ctx: &RequestCtx,
        customer: &str,
        model: &str,
        signing_keys: bool,
    ) -> Result<Vec<KeyInfo>> {
        let (kms, ctx) = (self.clone(), ctx.clone());
        let (customer, model) = (customer.to_owned(), model.to_owned());
        to_completion(async move {
            kms.create_keyspace_now(&ctx, &customer, &model, signing_keys)
                .await
        })
        .await
    }

    async fn create_keyspace_now(
        &self,
        ctx: &RequestCtx,
        customer: &str,
        model: &str,
        signing_keys: bool,
    ) -> Result<Vec<KeyInfo>> {
        let sep = self.config.separator();
        let model_key = KeyName::new(Purpose::Model, customer, model, sep);
        let op = Op {
            ctx,
            operation: "keyspace.create",
            key: model_key.as_ref().ok().map(|n| n.to_string()),
            version: None,
        };
        let r = async {
            let model_key = model_key?;
            let mut names = vec![model_key.clone()];
            if signing_keys {
                names.push(model_key.with_purpose(Purpose::Poai));
                names.push(model_key.with_purpose(Purpose::Hmm));
            }
            for n in &names {
                self.admit(ctx, &op, Role::Admin, Some(n))?;
            }
            let mut specs = names
                .iter()
                .map(|n| self.plan_key(n, None, None))
                .collect::<Result<Vec<_>>>()?;
            let poai = &self.config.kms.hanzo.poai_signing;
            if signing_keys && poai.hybrid && poai.algorithm == Algorithm::Secp256k1 {
                let partner = sign::pq_partner(&model_key.with_purpose(Purpose::Poai))?;
                specs.push(self.plan_key(&partner, Some(Algorithm::MlDsa65), None)?);
            }
            self.create_keys(ctx, &specs).await
        }
        .await;
        self.close_op(&op, r).await
    }

    /// Keys whose names start with `prefix`, that the caller's tenant owns.
    pub async fn list_keys(&self, ctx: &RequestCtx, prefix: &str) -> Result<Vec<KeyInfo>> {
        let op = self.op(ctx, "key.list", None);
        let r = async {
            self.admit(ctx, &op, Role::Verify, None)
                .or_else(|_| self.admit(ctx, &op, Role::Encrypt, None))?;
            let keys = self
                .store
                .list_keys_of(ctx.principal.tenant.as_deref(), prefix)
                .await?;
            let infos: Vec<KeyInfo> = keys
                .iter()
                .filter(|k| ctx.principal.owns(&k.meta.name) && ctx.principal.may_see(&k.meta.name))
                .map(KeyInfo::from_stored)
                .collect();
            self.audit_only(&op, "ok").await?;
            Ok(infos)
        }
        .await;
        self.close_op(&op, r).await
    }

    /// One key with its versions and public keys.
    pub async fn show_key(&self, ctx: &RequestCtx, name: &KeyName) -> Result<KeyInfo> {
        let op = self.op(ctx, "key.show", Some(name));
        let r = async {
            ctx.principal
                .authorize(Role::Verify, Some(name))
                .or_else(|_| ctx.principal.authorize(Role::Encrypt, Some(name)))?;
            self.limiter.check(ctx, op.operation, Some(name))?;
            let key = self.load(ctx, name).await?;
            self.audit_only(&op, "ok").await?;
            Ok(KeyInfo::from_stored(&key))
        }
        .await;
        self.close_op(&op, r).await
    }

    /// Make a new primary version. Older versions still decrypt and verify. It runs to its end
    /// even if the caller stops waiting (a task of its own: a request that is cancelled cannot leave it half done).
    pub async fn rotate_key(&self, ctx: &RequestCtx, name: &KeyName) -> Result<KeyInfo> {
        let (kms, ctx, name) = (self.clone(), ctx.clone(), name.clone());
        to_completion(async move { kms.rotate_key_now(&ctx, &name).await }).await
    }

    async fn rotate_key_now(&self, ctx: &RequestCtx, name: &KeyName) -> Result<KeyInfo> {
        let mut op = self.op(ctx, "key.rotate", Some(name));
        let r = async {
            self.admit(ctx, &op, Role::Admin, Some(name))?;
            let mut tx = self.store.begin_write().await?;
            let mut key = self.load_in(&mut tx, ctx, name).await?;
            key.meta.check_usable()?;
            let version = key
                .versions
                .iter()
                .map(|v| v.info.version)
                .max()
                .unwrap_or(0)
                + 1;
            op.version = Some(version);
            let generated = self.generate(name, version, key.meta.algorithm)?;
            let now = now_secs();
            let info = KeyVersion {
                version,
                state: KeyState::Enabled,
                created_at: now,
                public_key: generated.public_key.as_ref().map(|p| p.bytes.clone()),
            };
            let committed: Result<()> = async {
                tx.insert_version(name, &info, self.provider.name(), &generated.handle)
                    .await?;
                key.meta.primary_version = version;
                key.meta.rotated_at = now;
                tx.update_key(&key.meta).await?;
                tx.commit(&[op.event("ok", None)]).await.map(|_| ())
            }
            .await;
            if let Err(e) = committed {
                let r = KeyRef {
                    name,
                    version,
                    algorithm: key.meta.algorithm,
                    handle: &generated.handle,
                };
                if let Err(d) = self.device(|p| p.destroy(&r)) {
                    tracing::warn!(key = %name, error = %d, "could not release uncommitted key material");
                }
                return Err(e);
            }
            key.versions
                .push(hanzo_kms_store::StoredVersion { info, handle: None });
            Ok(KeyInfo::from_stored(&key))
        }
        .await;
        self.close_op(&op, r).await
    }

    /// Rotate every enabled key past its rotation period at `now`. One failure does not stop
    /// the others; each key's outcome is reported.
    pub async fn rotate_due(&self, ctx: &RequestCtx, now: UnixTime) -> Result<Vec<DueOutcome>> {
        let keys = self.store.list_keys("").await?;
        let mut out = Vec::new();
        for k in keys
            .iter()
            .filter(|k| ctx.principal.owns(&k.meta.name) && k.meta.rotation_due(now))
        {
            out.push(DueOutcome {
                key: k.meta.name.to_string(),
                result: self.rotate_key(ctx, &k.meta.name).await,
            });
        }
        Ok(out)
    }

    /// Disable or enable a key, or one version of it. Enabling a key that is scheduled for
    /// destruction cancels the destruction.
    pub async fn set_enabled(
        &self,
        ctx: &RequestCtx,
        name: &KeyName,
        version: Option<u32>,
        enabled: bool,
    ) -> Result<KeyInfo> {
        let operation = if enabled { "key.enable" } else { "key.disable" };
        let mut op = self.op(ctx, operation, Some(name));
        op.version = version;
        let r = async {
            self.admit(ctx, &op, Role::Admin, Some(name))?;
            let mut tx = self.store.begin_write().await?;
            let mut key = self.load_in(&mut tx, ctx, name).await?;
            if key.meta.state == KeyState::Destroyed {
                return Err(state_error(format!("key {name} is destroyed; it cannot be enabled or disabled")));
            }
            match version {
                None => {
                    if !enabled && key.meta.state == KeyState::DestroyScheduled {
                        return Err(state_error(format!(
                            "key {name} is scheduled for destruction; `keys enable` cancels that first"
                        )));
                    }
                    key.meta.state = if enabled { KeyState::Enabled } else { KeyState::Disabled };
                    key.meta.destroy_at = None;
                    tx.update_key(&key.meta).await?;
                }
                Some(v) => {
                    let primary = key.meta.primary_version;
                    let entry = key
                        .versions
                        .iter_mut()
                        .find(|x| x.info.version == v)
                        .ok_or_else(|| version_not_found(name, v))?;
                    if entry.info.state == KeyState::Destroyed {
                        return Err(state_error(format!("version {v} of key {name} is destroyed")));
                    }
                    if !enabled && v == primary {
                        return Err(state_error(format!(
                            "version {v} is the primary version of {name}; rotate first, or disable the whole key"
                        )));
                    }
                    entry.info.state = if enabled { KeyState::Enabled } else { KeyState::Disabled };
                    tx.set_version_state(name, v, entry.info.state).await?;
                }
            }
            tx.commit(&[op.event("ok", None)]).await?;
            Ok(KeyInfo::from_stored(&key))
        }
        .await;
        self.close_op(&op, r).await
    }

    /// Destroy a key (all versions) or one non-primary version, now or after a delay.
    pub async fn destroy(
        &self,
        ctx: &RequestCtx,
        name: &KeyName,
        version: Option<u32>,
        mode: DestroyMode,
    ) -> Result<KeyInfo> {
        let mut op = self.op(ctx, "key.destroy", Some(name));
        op.version = version;
        let r = async {
            self.admit(ctx, &op, Role::Admin, Some(name))?;
            let mut tx = self.store.begin_write().await?;
            let mut key = self.load_in(&mut tx, ctx, name).await?;
            if key.meta.state == KeyState::Destroyed {
                return Err(state_error(format!("key {name} is already destroyed")));
            }
            let now = now_secs();
            let targets: Vec<u32> = match (version, mode) {
                (Some(_), DestroyMode::After(_)) => {
                    return Err(Error::invalid(
                        "a single version is destroyed immediately (--now); scheduling applies to whole keys",
                    ));
                }
                (Some(v), DestroyMode::Now) => {
                    let entry = key.version(v).ok_or_else(|| version_not_found(name, v))?;
                    if v == key.meta.primary_version {
                        return Err(state_error(format!(
                            "version {v} is the primary version of {name}; rotate first, or destroy the whole key"
                        )));
                    }
                    if entry.info.state == KeyState::Destroyed {
                        return Err(state_error(format!("version {v} of key {name} is already destroyed")));
                    }
                    vec![v]
                }
                (None, DestroyMode::After(delay)) => {
                    if delay <= 0 {
                        return Err(Error::invalid("the destruction delay must be positive; use --now to destroy immediately"));
                    }
                    key.meta.state = KeyState::DestroyScheduled;
                    key.meta.destroy_at = Some(now.saturating_add(delay));
                    tx.update_key(&key.meta).await?;
                    let mut ev = op.event("ok", None);
                    ev.operation = "key.destroy.schedule".into();
                    tx.commit(&[ev]).await?;
                    return Ok(KeyInfo::from_stored(&key));
                }
                (None, DestroyMode::Now) => key
                    .versions
                    .iter()
                    .filter(|v| v.info.state != KeyState::Destroyed)
                    .map(|v| v.info.version)
                    .collect(),
            };
            for v in &targets {
                tx.delete_material(name, *v).await?;
                tx.set_version_state(name, *v, KeyState::Destroyed).await?;
            }
            if version.is_none() {
                key.meta.state = KeyState::Destroyed;
                key.meta.destroy_at = Some(now);
                tx.update_key(&key.meta).await?;
            }
            tx.commit(&[op.event("ok", None)]).await?;
            // The store no longer references the material; now let the provider drop it. A
            // failure here leaves an orphan in the provider, never a dangling reference.
            for v in &targets {
                if let Some(h) = key.version(*v).and_then(|x| x.handle.clone()) {
                    let r = KeyRef { name, version: *v, algorithm: key.meta.algorithm, handle: &h };
                    if let Err(e) = self.device(|p| p.destroy(&r)) {
                        tracing::warn!(key = %name, version = v, error = %e, "provider did not destroy the material");
                    }
                }
            }
            for entry in key.versions.iter_mut().filter(|x| targets.contains(&x.info.version)) {
                entry.info.state = KeyState::Destroyed;
                entry.handle = None;
            }
            Ok(KeyInfo::from_stored(&key))
        }
        .await;
        self.close_op(&op, r).await
    }

    /// Carry out every scheduled destruction whose time has come.
    pub async fn destroy_due(&self, ctx: &RequestCtx, now: UnixTime) -> Result<Vec<DueOutcome>> {
        let keys = self.store.list_keys("").await?;
        let mut out = Vec::new();
        for k in keys.iter().filter(|k| {
            ctx.principal.owns(&k.meta.name)
                && k.meta.state == KeyState::DestroyScheduled
                && k.meta.destroy_at.is_some_and(|t| t <= now)
        }) {
            out.push(DueOutcome {
                key: k.meta.name.to_string(),
                result: self
                    .destroy(ctx, &k.meta.name, None, DestroyMode::Now)
                    .await,
            });
        }
        Ok(out)
    }

    // ---- audit --------------------------------------------------------------------------------

    /// Audit records after `after`, at most `limit`.
    pub async fn audit_records(
        &self,
        ctx: &RequestCtx,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        let op = self.op(ctx, "audit.list", None);
        let r = async {
            self.admit_audit(ctx, &op)?;
            let records = self.store.audit_records(after, limit).await?;
            self.audit_only(&op, "ok").await?;
            Ok(records)
        }
        .await;
        self.close_op(&op, r).await
    }

    /// Check the whole audit chain.
    pub async fn audit_verify(&self, ctx: &RequestCtx) -> Result<AuditReport> {
        let op = self.op(ctx, "audit.verify", None);
        let r = async {
            self.admit_audit(ctx, &op)?;
            // Verify first, then record that we did: the report covers the chain as it was found.
            let report = self.store.verify_audit().await?;
            let outcome = if report.is_ok() { "ok" } else { "error" };
            self.audit_only(&op, outcome).await?;
            Ok(report)
        }
        .await;
        self.close_op(&op, r).await
    }

    // ---- pipeline helpers ---------------------------------------------------------------------

    fn op<'a>(
        &self,
        ctx: &'a RequestCtx,
        operation: &'static str,
        key: Option<&KeyName>,
    ) -> Op<'a> {
        debug_assert!(
            ratelimit::OPERATIONS.contains(&operation),
            "{operation} is missing from ratelimit::OPERATIONS"
        );
        Op {
            ctx,
            operation,
            key: key.map(|k| k.to_string()),
            version: None,
        }
    }

    /// Steps 2 and 4: permission, then rate limit. (Step 3 needs the key and runs at its load.)
    fn admit(
        &self,
        ctx: &RequestCtx,
        op: &Op<'_>,
        role: Role,
        key: Option<&KeyName>,
    ) -> Result<()> {
        ctx.principal.authorize(role, key)?;
        self.limiter.check(ctx, op.operation, key)
    }

    fn admit_audit(&self, ctx: &RequestCtx, op: &Op<'_>) -> Result<()> {
        if ctx.principal.tenant.is_some() {
            // The chain spans all tenants; only an all-tenant principal may read it whole.
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "{} is scoped to one tenant; the audit log spans all tenants",
                    ctx.principal.id
                ),
            ));
        }
        self.admit(ctx, op, Role::Audit, None)
    }

    /// Load a key the caller may see; a foreign or missing key is "not found".
    async fn load(&self, ctx: &RequestCtx, name: &KeyName) -> Result<StoredKey> {
        match self.store.load_key(name).await? {
            Some(k) if ctx.principal.owns(name) => Ok(k),
            _ => Err(auth::not_found(name)),
        }
    }

    async fn load_in(
        &self,
        tx: &mut WriteTx,
        ctx: &RequestCtx,
        name: &KeyName,
    ) -> Result<StoredKey> {
        match tx.load_key(name).await? {
            Some(k) if ctx.principal.owns(name) => Ok(k),
            _ => Err(auth::not_found(name)),
        }
    }

    /// Step 7 for operations that change nothing: the record is its own transaction, and the
    /// result is returned only after it commits.
    /// Append one audit record for an operation that changes nothing else (encrypt, decrypt,
    /// show, …), durably, before the caller answers. It goes through the group committer, so
    /// concurrent requests share one transaction and one fsync.
    async fn audit_only(&self, op: &Op<'_>, outcome: &str) -> Result<()> {
        self.audit_event_only(op, outcome, None).await
    }

    /// [`Kms::audit_only`] with a reason (denials, refusals).
    async fn audit_event_only(
        &self,
        op: &Op<'_>,
        outcome: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        let records = commit::Records {
            key: String::new(),
            nonces: Vec::new(),
            record: Vec::new(),
            consume: None,
            event: op.event(outcome, reason),
        };
        self.committer()
            .submit(records)
            .await
            .map(|_| ())
            .map_err(audit_failure)
    }

    /// Record a request that was refused before it reached an operation: its body was not the
    /// JSON the route takes, a field was not base64, and so on (the API layer's own checks).
    /// The record is `denied` with the error's kind as the reason, like any refusal. Returns
    /// the audit failure if even that record cannot be written.
    pub async fn audit_refusal(
        &self,
        ctx: &RequestCtx,
        operation: &'static str,
        key: Option<String>,
        error: &Error,
    ) -> Result<()> {
        self.audit_api_layer(ctx, operation, key, "denied", error.kind().code())
            .await
    }

    /// Record a request that the API layer cut off at `server.request_timeout_secs`: outcome
    /// `error`, reason `timeout`, under the request's own id. If its operation had already
    /// handed its records to the store, those are in the log too, under the same id; this one
    /// says that the client got no answer from them. Returns the audit failure if the record
    /// cannot be written.
    pub async fn audit_timeout(
        &self,
        ctx: &RequestCtx,
        operation: &'static str,
        key: Option<String>,
    ) -> Result<()> {
        self.audit_api_layer(ctx, operation, key, "error", "timeout")
            .await
    }

    /// The record of a request the API layer ended itself, before or around its operation
    /// ([`Kms::audit_refusal`], [`Kms::audit_timeout`]).
    async fn audit_api_layer(
        &self,
        ctx: &RequestCtx,
        operation: &'static str,
        key: Option<String>,
        outcome: &str,
        reason: &str,
    ) -> Result<()> {
        let op = Op {
            ctx,
            operation,
            key,
            version: None,
        };
        self.audit_event_only(&op, outcome, Some(reason)).await
    }

    /// Record a failed or denied request, then return its error. If even that record cannot be
    /// written, the audit failure is what the caller sees.
    async fn close_op<T>(&self, op: &Op<'_>, r: Result<T>) -> Result<T> {
        match r {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == ErrorKind::AuditFailure => Err(e),
            // The store is unreachable: the record could not be written either (fail closed).
            Err(e) if e.kind() == ErrorKind::Unavailable && self.store.unreachable() => Err(e),
            Err(e) => {
                let outcome = match e.kind() {
                    ErrorKind::NotFound
                    | ErrorKind::PermissionDenied
                    | ErrorKind::Unauthenticated
                    | ErrorKind::RateLimited
                    | ErrorKind::KeyState => "denied",
                    _ => "error",
                };
                // A refusal changes nothing but the audit log: group-committed like any
                // audit-only record, so a flood of refused requests shares fsyncs.
                self.audit_event_only(op, outcome, Some(e.kind().code()))
                    .await?;
                Err(e)
            }
        }
    }

    /// Decide algorithm and rotation for a new key.
    fn plan_key(
        &self,
        name: &KeyName,
        algorithm: Option<Algorithm>,
        rotation_days: Option<u32>,
    ) -> Result<KeyPlan> {
        let h = &self.config.kms.hanzo;
        let algorithm = match (algorithm, name.purpose()) {
            (Some(a), _) => a,
            (None, Purpose::Model) => h.model_encryption.algorithm,
            (None, Purpose::Data) => Algorithm::Aes256Gcm,
            (None, Purpose::Poai) => h.poai_signing.algorithm,
            (None, Purpose::Hmm) => h.hmm_settlement.algorithm,
            (None, Purpose::Api) => {
                return Err(Error::invalid(format!(
                    "{name}: api keys need an explicit algorithm (--algorithm)"
                )));
            }
        };
        algorithm.check_purpose(name.purpose())?;
        if !self.provider.capabilities().algorithms.contains(&algorithm) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "provider {} cannot make {algorithm} keys",
                    self.provider.name()
                ),
            ));
        }
        let rotation_days = match (rotation_days, name.purpose()) {
            (Some(0), _) => None,
            (Some(d), _) => Some(d),
            (None, Purpose::Model) => Some(h.model_encryption.key_rotation_days),
            (None, _) => None,
        };
        Ok(KeyPlan {
            name: name.clone(),
            algorithm,
            rotation_period_secs: rotation_days.map(|d| i64::from(d) * DAY),
        })
    }

    /// Generate and store keys in one transaction, with one audit record each.
    async fn create_keys(&self, ctx: &RequestCtx, plans: &[KeyPlan]) -> Result<Vec<KeyInfo>> {
        // Refuse early, before any provider work, if a name is taken (or was ever used).
        for p in plans {
            if let Some(existing) = self.store.load_key(&p.name).await? {
                if ctx.principal.owns(&p.name) && existing.meta.state == KeyState::Destroyed {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!("key {} was destroyed; names are never reused", p.name),
                    ));
                }
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("key {} already exists", p.name),
                ));
            }
        }
        let mut made = Vec::with_capacity(plans.len());
        for p in plans {
            match self.generate(&p.name, 1, p.algorithm) {
                Ok(g) => made.push(g),
                Err(e) => {
                    // A later key failed (the device refused, or went away): release the ones
                    // already made, so nothing half-created stays in the provider.
                    self.release(&plans[..made.len()], &made);
                    return Err(e);
                }
            }
        }
        let now = now_secs();
        let mut keys = Vec::with_capacity(plans.len());
        let result: Result<()> = async {
            let mut tx = self.store.begin_write().await?;
            let mut events = Vec::with_capacity(plans.len());
            for (p, g) in plans.iter().zip(&made) {
                let meta = KeyMeta {
                    name: p.name.clone(),
                    algorithm: p.algorithm,
                    origin: g.origin,
                    provider: self.provider.name().to_owned(),
                    state: KeyState::Enabled,
                    primary_version: 1,
                    rotation_period_secs: p.rotation_period_secs,
                    created_at: now,
                    rotated_at: now,
                    destroy_at: None,
                };
                let version = KeyVersion {
                    version: 1,
                    state: KeyState::Enabled,
                    created_at: now,
                    public_key: g.public_key.as_ref().map(|k| k.bytes.clone()),
                };
                tx.insert_key(&meta).await?;
                tx.insert_version(&p.name, &version, self.provider.name(), &g.handle)
                    .await?;
                events.push(audit_event(
                    ctx,
                    "key.create",
                    Some(p.name.to_string()),
                    Some(1),
                    "ok",
                    None,
                ));
                keys.push(StoredKey {
                    meta,
                    versions: vec![hanzo_kms_store::StoredVersion {
                        info: version,
                        handle: None,
                    }],
                });
            }
            tx.commit(&events).await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            // Nothing was committed: release what the provider made.
            self.release(plans, &made);
            return Err(e);
        }
        Ok(keys.iter().map(KeyInfo::from_stored).collect())
    }

    /// Destroy freshly generated, never-committed key material (best effort: a failure here
    /// leaves an unreferenced object in an HSM, which is logged).
    fn release(&self, plans: &[KeyPlan], made: &[hanzo_kms_core::GeneratedKey]) {
        for (p, g) in plans.iter().zip(made) {
            let r = KeyRef {
                name: &p.name,
                version: 1,
                algorithm: p.algorithm,
                handle: &g.handle,
            };
            if let Err(e) = self.device(|p| p.destroy(&r)) {
                tracing::warn!(key = %p.name, error = %e, "could not release uncommitted key material");
            }
        }
    }

    fn generate(
        &self,
        name: &KeyName,
        version: u32,
        algorithm: Algorithm,
    ) -> Result<hanzo_kms_core::GeneratedKey> {
        let label = provider_label(&self.config, name, version);
        self.device(|p| {
            p.generate(&KeySpec {
                name,
                version,
                algorithm,
                label: &label,
            })
        })
    }

    /// Step 3 for use: the key, then the requested (or primary) version, must be enabled.
    fn usable_version(
        key: &StoredKey,
        version: Option<u32>,
    ) -> Result<(u32, &hanzo_kms_core::KeyHandle)> {
        key.meta.check_usable()?;
        let v = version.unwrap_or(key.meta.primary_version);
        let entry = key
            .version(v)
            .ok_or_else(|| version_not_found(&key.meta.name, v))?;
        entry.info.check_usable(&key.meta.name)?;
        let handle = entry.handle.as_ref().ok_or_else(|| {
            state_error(format!(
                "version {v} of key {} has no material",
                key.meta.name
            ))
        })?;
        Ok((v, handle))
    }
}

struct KeyPlan {
    name: KeyName,
    algorithm: Algorithm,
    rotation_period_secs: Option<i64>,
}

/// The provider-side label of a key version: the purpose's `key_prefix` from the config, then
/// `customer/name/vN`. Model, PoAI and HMM prefixes come from HIP-005's config; data and api keys
/// use `data/` and `api/`.
pub fn provider_label(config: &Config, name: &KeyName, version: u32) -> String {
    let h = &config.kms.hanzo;
    let prefix = match name.purpose() {
        Purpose::Model => h.model_encryption.key_prefix.as_str(),
        Purpose::Poai => h.poai_signing.key_prefix.as_str(),
        Purpose::Hmm => h.hmm_settlement.key_prefix.as_str(),
        Purpose::Data => "data/",
        Purpose::Api => "api/",
    };
    format!("{prefix}{}/{}/v{version}", name.customer(), name.name())
}

fn state_error(msg: String) -> Error {
    Error::new(ErrorKind::KeyState, msg)
}

fn version_not_found(name: &KeyName, v: u32) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("key {name} has no version {v}"),
    )
}

/// Destroy material a provider made for key versions that were never committed (a failed
/// restore or migration). Best effort: a failure leaves an unreferenced object in an HSM, and is
/// logged.
pub(crate) fn release_made(
    provider: &dyn Provider,
    made: &[(KeyName, u32, Algorithm, hanzo_kms_core::KeyHandle)],
) {
    for (name, version, algorithm, handle) in made {
        let r = KeyRef {
            name,
            version: *version,
            algorithm: *algorithm,
            handle,
        };
        if let Err(e) = provider.destroy(&r) {
            tracing::warn!(key = %name, error = %e, "could not release uncommitted key material");
        }
    }
}

/// A request whose audit record could not be written fails with `audit_failure`, except when
/// the store is unreachable: that stays `unavailable` (503 / UNAVAILABLE), which clients and
/// load balancers treat as retryable. Either way nothing was carried out.
pub(crate) fn audit_failure(e: Error) -> Error {
    if e.kind() == ErrorKind::AuditFailure || e.kind() == ErrorKind::Unavailable {
        e
    } else {
        Error::new(
            ErrorKind::AuditFailure,
            format!("the audit log could not be written, so the request was not carried out: {e}"),
        )
    }
}

pub fn now_secs() -> i64 {
    now_ms() / 1000
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
