//! The Hanzo KMS service: one implementation of every operation, behind one pipeline.
//!
//! Every operation, whether it arrives from the local CLI, REST or gRPC, is described once in
//! [`operation`] and runs through the pipeline (`Kms::run`, pipeline.rs; DESIGN.md §5): authenticate (the
//! transport's part), tenant and permission, rate limit, key state, the operation's own work
//! (replay guard, provider), and its audit record. Where each operation lives:
//!
//! | file | operations |
//! |---|---|
//! | `keys.rs` | create, keyspace, list, show, rotate, enable, disable, destroy, scheduled ones |
//! | `data.rs` | encrypt, decrypt, data keys |
//! | `model.rs` | model-file headers: new data key, unwrap, rewrap |
//! | `sign.rs`, `verify.rs` | PoAI attestations, batches, HMM settlements |
//! | `raw.rs` | general signing and verification with `api:` keys |
//! | `tokens.rs` | API tokens and authentication |
//! | `audit.rs` | the audit log |
//! | `backup.rs`, `migrate.rs` | backup bundles, moving a store to another provider |

#![forbid(unsafe_code)]

pub mod archive;
mod audit;
pub mod auth;
pub mod backup;
pub mod bootstrap;
mod commit;
pub mod data;
pub mod failover;
pub mod guard;
pub mod health;
mod info;
mod keys;
pub mod migrate;
pub mod model;
pub mod operation;
mod pipeline;
pub mod ratelimit;
pub mod raw;
pub mod replay;
pub mod sign;
pub mod tokens;
mod verify;

use std::sync::Arc;

use hanzo_kms_core::{
    Algorithm, Capabilities, Config, Error, ErrorKind, KeyName, KeyRef, Provider, Purpose, Result,
};
use hanzo_kms_store::{AuditEvent, Store};

pub use auth::{Principal, Role};
pub use bootstrap::{InitReport, MASTER_KEY_ENV, MasterKeySource, Settings, load_config};
pub use commit::CommitStats;
pub use info::{KeyInfo, PublicKeyInfo, VersionInfo};
pub use tokens::{ApiToken, MAX_TOKEN_TTL_SECS, TokenInfo};

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

/// The pipeline's rate limit. The CLI runs one command per process, so it uses [`Unlimited`];
/// the server installs the limiter built from the `rate_limits` config section.
pub trait RateLimiter: Send + Sync {
    /// `Err` of kind [`ErrorKind::RateLimited`], with the time to wait, when over a limit.
    /// `key` is given only when it is the caller's own tenant's.
    fn check(
        &self,
        ctx: &RequestCtx,
        op: &operation::Operation,
        key: Option<&KeyName>,
    ) -> Result<()>;
}

/// No limits: for the one-shot local CLI.
#[derive(Debug, Default)]
pub struct Unlimited;

impl RateLimiter for Unlimited {
    fn check(&self, _: &RequestCtx, _: &operation::Operation, _: Option<&KeyName>) -> Result<()> {
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
    /// Failed authentications per client address (the server installs it from `auth`).
    guard: Arc<guard::AuthGuard>,
    /// Started on first use, on the runtime of the first signing request.
    committer: Arc<std::sync::OnceLock<commit::GroupCommit>>,
    /// The EIP-712 domain, computed on first use.
    pub(crate) domain: Arc<std::sync::OnceLock<hanzo_kms_core::eip712::Domain>>,
    /// Signer labels already worked out, by public key.
    pub(crate) signers: Arc<sign::Signers>,
    /// The failover provider, when `kms.lux.failover` is on (also `provider`).
    failover: Option<Arc<failover::Failover>>,
    /// Whether audit records can be written (`/readyz`, `/metrics`).
    audit_health: Arc<health::AuditHealth>,
    /// The oldest attestation timestamp accepted whatever the ttl (see [`replay`]).
    replay_floor: Arc<std::sync::atomic::AtomicU64>,
    /// Audit key versions whose possession the provider proved, by SHA-256 of (version, stored
    /// public key, handle): a version is proved once per process, not at every check
    /// ([`archive`]); a changed public key or handle is a new entry, proved afresh. (An HSM
    /// object removed under an unchanged handle is then noticed at the next checkpoint's
    /// signature, which fails, not by verification.)
    pub(crate) audit_proven: Arc<std::sync::Mutex<std::collections::HashSet<[u8; 32]>>>,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kms")
            .field("store", &self.store.location())
            .field("provider", &self.provider.name())
            .finish_non_exhaustive()
    }
}

/// Run an operation that makes key material in a provider on a task of its own, so that it ends
/// the same way whether or not its caller is still waiting. A request future is dropped when the
/// client disconnects or the server's request timeout fires; dropped between the provider's
/// `generate` and the commit, it would leave an HSM object no key record points to (the error
/// paths release it, but a dropped future runs no error path). On its own task the operation
/// either commits, or fails and releases what it made, and is audited either way.
pub(crate) async fn to_completion<T: Send + 'static>(
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
        detail: None,
    }
}

impl Kms {
    /// Initialise a new data directory and return the service on it.
    pub async fn init(settings: &Settings) -> Result<(Self, InitReport)> {
        let (report, store, provider) = bootstrap::init(settings).await?;
        // A new store has no replay floor (init recorded its attestation_ttl; crate::replay).
        Ok((Self::new(store, provider, settings.config.clone()), report))
    }

    /// Open an initialised data directory.
    pub async fn open(settings: &Settings) -> Result<Self> {
        let o = bootstrap::open(settings).await?;
        let mut kms = Self::new(o.store, o.provider, settings.config.clone());
        kms.failover = o.failover;
        kms.prepare_replay(u64::try_from(now_secs()).unwrap_or(0))
            .await?;
        Ok(kms)
    }

    pub fn new(store: Store, provider: Arc<dyn Provider>, config: Config) -> Self {
        Self {
            store,
            provider,
            config: Arc::new(config),
            limiter: Arc::new(Unlimited),
            guard: Arc::new(guard::AuthGuard::off()),
            committer: Arc::new(std::sync::OnceLock::new()),
            domain: Arc::new(std::sync::OnceLock::new()),
            signers: Arc::default(),
            failover: None,
            audit_health: Arc::default(),
            replay_floor: Arc::default(),
            audit_proven: Arc::default(),
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

    /// Replace the failed-authentication guard (the server does this, from `auth`).
    pub fn with_auth_guard(mut self, guard: Arc<guard::AuthGuard>) -> Self {
        self.guard = guard;
        self
    }

    /// The failed-authentication guard, for its counters.
    pub fn auth_guard(&self) -> &guard::AuthGuard {
        &self.guard
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

    /// The provider's config name.
    pub(crate) fn provider_name(&self) -> &str {
        self.provider.name()
    }

    /// What the provider can do.
    pub(crate) fn capabilities(&self) -> &Capabilities {
        self.provider.capabilities()
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

    /// What the store takes on disk and the space left (SQLite; `None` on PostgreSQL).
    pub fn store_disk_usage(&self) -> Option<hanzo_kms_store::DiskUsage> {
        self.store.disk_usage()
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

    /// The key a model route names: the full key name (`model:acme:gpt4`), or the model id the
    /// CLI and the file's `model_id` use (`acme:gpt4`). A full name of another purpose parses
    /// as such, and the operation refuses it for its purpose.
    pub fn parse_model_name(&self, s: &str) -> Result<KeyName> {
        crate::model::model_key(self, s).or_else(|_| self.parse_name(s))
    }
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
