//! The pipeline (DESIGN.md §5), as one function every operation runs through.
//!
//! [`Kms::run`] takes an operation's descriptor ([`Operation`]), what the request names, and the
//! operation's own work, and runs the steps in one written order:
//!
//! 1. **authenticate**: the transport's job; the request arrives as a [`RequestCtx`] with its
//!    [`Principal`](crate::Principal);
//! 2. **tenant and permission**: the scope (all tenants or the caller's), the roles, and every
//!    key the request names (another tenant's key is answered like a missing one);
//! 3. **rate limit**: per tenant, per operation and, for a key of the caller's own tenant, per
//!    key. It runs before the key is read from the store: a refused request costs no database
//!    read, and a refusal says nothing about whether the key exists;
//! 4. **key state**: the key is loaded (tenant first) and checked against the operation's
//!    [`KeyPolicy`]; the version the work uses is checked by [`Call::version`];
//! 5. **the operation's work**: its replay guard and its provider call (signing calls the
//!    provider first and decides the replay in the transaction that records the signature:
//!    nothing leaves before that commit);
//! 6. **audit**: every request ends with its record. Work that commits a state change commits
//!    its record in the same transaction and proves it with a [`Receipt`]; other work's `ok`
//!    record is group-committed here before the result is returned; a refusal or failure is
//!    recorded with its error kind. If no record can be written, the request fails.
//!
//! Steps 3 and 4 swap DESIGN.md's order (state, then limit); docs/ARCHITECTURE.md says why.

use std::future::Future;
use std::pin::Pin;

use hanzo_kms_core::{Error, ErrorKind, KeyHandle, KeyName, KeyRef, Purpose, Result};
use hanzo_kms_store::{AuditEvent, StoredKey, WriteTx};

use crate::operation::{KeyArg, KeyPolicy, Operation, Roles, Scope};
use crate::{Kms, RequestCtx, auth, commit};

/// What a request names, for [`Kms::run`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target<'k> {
    /// The key a signed object claims (verification); it may not parse.
    Claimed(&'k str),
    /// One key.
    Key(&'k KeyName),
    /// Several keys (a keyspace); the first is the one the audit record names.
    Keys(&'k [KeyName]),
    /// No key; the record may name what the operation is about (`token:ID`).
    None(Option<&'k str>),
}

/// The operation's result and how its audit record is written.
pub(crate) enum Done<T> {
    /// The work committed its record itself, with its state change or its signature's replay
    /// record.
    Committed(T, Receipt),
    /// Record `ok` with a note (`not_due`: a scheduled change another writer made first), then
    /// answer.
    Noted(T, &'static str),
    /// Record `ok` (group-committed), then answer.
    Ok(T),
    /// A verification whose verdict is "not valid": record `invalid` with its reason.
    Invalid(T, &'static str),
    /// An answer that reports a failure it found (a broken audit chain): record `error` with
    /// the reason.
    Failed(T, &'static str),
}

/// Proof that the request's record is durable: made only by [`Call::commit`] and
/// [`Call::submit`].
pub(crate) struct Receipt(());

/// The operation's work, as [`Kms::run`] takes it.
pub(crate) type Work<'c, T> = Pin<Box<dyn Future<Output = Result<Done<T>>> + Send + 'c>>;

/// One request inside the pipeline: who asks, for what, and what the pipeline found.
pub(crate) struct Call<'a> {
    pub kms: &'a Kms,
    pub ctx: &'a RequestCtx,
    pub op: &'static Operation,
    /// The key the request names, when it names one that parses (and, when claimed, that the
    /// caller may see).
    pub name: Option<KeyName>,
    /// That key as stored, for operations that use, describe or verify it; `None` when a
    /// claimed key is missing or foreign.
    pub key: Option<StoredKey>,
    /// What the audit record names: the key as requested.
    label: Option<String>,
    /// The version the work used, for the audit record.
    version: Option<u32>,
    /// The operation name the record carries, when it is more specific than the descriptor's
    /// (`key.destroy.schedule`).
    recorded_as: Option<&'static str>,
}

impl<'a> Call<'a> {
    /// The loaded key; for operations whose policy loads one, it is there.
    pub fn key(&self) -> Result<&StoredKey> {
        self.key
            .as_ref()
            .ok_or_else(|| Error::internal(format!("{}: no key was loaded", self.op.name)))
    }

    /// The name of the requested key.
    pub fn name(&self) -> Result<&KeyName> {
        self.name
            .as_ref()
            .ok_or_else(|| Error::internal(format!("{}: no key was named", self.op.name)))
    }

    /// Step 4 for the version the work uses (the primary when `None`): it must exist, be
    /// enabled and have material. Recorded in the audit record either way.
    pub fn version(&mut self, version: Option<u32>) -> Result<(u32, KeyRef<'_>)> {
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| Error::internal(format!("{}: no key was loaded", self.op.name)))?;
        let v = version.unwrap_or(key.meta.primary_version);
        self.version = Some(v);
        let entry = key
            .version(v)
            .ok_or_else(|| version_not_found(&key.meta.name, v))?;
        entry.info.check_usable(&key.meta.name)?;
        let handle: &KeyHandle = entry.handle.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::KeyState,
                format!("version {v} of key {} has no material", key.meta.name),
            )
        })?;
        Ok((
            v,
            KeyRef {
                name: &key.meta.name,
                version: v,
                algorithm: key.meta.algorithm,
                handle,
            },
        ))
    }

    /// Name the version in the audit record without using it (administration).
    pub fn record_version(&mut self, version: Option<u32>) {
        self.version = version;
    }

    /// Name what the request is about in its record, once it is known (a new token's id).
    pub fn name_record(&mut self, about: String) {
        self.label = Some(about);
    }

    /// Record the request under a more specific name than its operation's.
    pub fn record_as(&mut self, operation: &'static str) {
        self.recorded_as = Some(operation);
    }

    /// The record of this request with `outcome`.
    pub fn event(&self, outcome: &str, reason: Option<&str>) -> AuditEvent {
        crate::audit_event(
            self.ctx,
            self.recorded_as.unwrap_or(self.op.name),
            self.label.clone(),
            self.version,
            outcome,
            reason,
        )
    }

    /// Commit a transaction with this request's `ok` record in it.
    pub async fn commit(&self, tx: WriteTx) -> Result<Receipt> {
        tx.commit(&[self.event("ok", None)]).await?;
        Ok(Receipt(()))
    }

    /// Commit a transaction with these records, which must all belong to this request (one per
    /// key a multi-key operation created).
    pub async fn commit_records(&self, tx: WriteTx, events: &[AuditEvent]) -> Result<Receipt> {
        debug_assert!(events.iter().all(|e| e.request_id == self.ctx.request_id));
        tx.commit(events).await?;
        Ok(Receipt(()))
    }

    /// [`commit_records`](Self::commit_records), returning the records as chained (their
    /// sequence numbers): for work that names its own record elsewhere (an export).
    pub async fn commit_events(
        &self,
        tx: WriteTx,
        events: &[AuditEvent],
    ) -> Result<(Vec<hanzo_kms_store::AuditRecord>, Receipt)> {
        debug_assert!(events.iter().all(|e| e.request_id == self.ctx.request_id));
        let records = tx.commit(events).await?;
        Ok((records, Receipt(())))
    }

    /// Hand a signature's replay records (step 5) to the group committer with this request's
    /// `ok` record: `nonces` are `(nonce, message digest)` for every message the signature
    /// covers, which can be accepted until `expires_at`; `record` is what an exact retry gets
    /// back, `consume` is `(attestation digest, settlement digest, the attestation's expiry)`
    /// for a settlement. The answer comes once they are durable.
    pub async fn submit(
        &self,
        key: String,
        nonces: Vec<(hanzo_kms_core::eip712::B32, [u8; 32])>,
        expires_at: i64,
        record: Vec<u8>,
        consume: Option<([u8; 32], [u8; 32], i64)>,
    ) -> Result<(commit::Outcome, Receipt)> {
        let records = commit::Records {
            key,
            nonces,
            expires_at,
            record,
            consume,
            event: self.event("ok", None),
        };
        let outcome = self.kms.committer().submit(records).await?;
        Ok((outcome, Receipt(())))
    }
}

impl Kms {
    /// A key a signed object claims, checked inside another request (a settlement's
    /// attestation) as [`Kms::run`] checks a claimed key: it must parse, have `purpose`, be the
    /// caller's tenant's and within its key patterns, and exist (`None` otherwise: the verdict
    /// `unknown_key`); a key that may not verify now is the key-state error.
    pub(crate) async fn claimed_key(
        &self,
        ctx: &RequestCtx,
        text: &str,
        purpose: Purpose,
    ) -> Result<Option<StoredKey>> {
        let Some(name) = self
            .parse_name(text)
            .ok()
            .filter(|n| n.purpose() == purpose)
        else {
            return Ok(None);
        };
        let Some(key) = self.visible_key(ctx, &name).await? else {
            return Ok(None);
        };
        check_verifiable(&key)?;
        Ok(Some(key))
    }

    /// Run one request of `op` through the pipeline (see the module docs). `work` is the
    /// operation's own part: it gets the [`Call`] with the checked principal and the loaded key.
    pub(crate) async fn run<'a, T>(
        &'a self,
        ctx: &'a RequestCtx,
        op: &'static Operation,
        target: Target<'_>,
        work: impl for<'c> FnOnce(&'c mut Call<'a>) -> Work<'c, T>,
    ) -> Result<T> {
        let mut call = Call {
            kms: self,
            ctx,
            op,
            name: None,
            key: None,
            label: label_of(target),
            version: None,
            recorded_as: None,
        };
        let r = async {
            self.admit(&mut call, target).await?;
            work(&mut call).await
        }
        .await;
        let result = async {
            match r {
                Ok(Done::Committed(v, Receipt(()))) => Ok(v),
                Ok(Done::Ok(v)) => {
                    self.audit_event_only(call.event("ok", None)).await?;
                    Ok(v)
                }
                Ok(Done::Noted(v, note)) => {
                    self.audit_event_only(call.event("ok", Some(note))).await?;
                    Ok(v)
                }
                Ok(Done::Invalid(v, reason)) => {
                    self.audit_event_only(call.event("invalid", Some(reason)))
                        .await?;
                    Ok(v)
                }
                Ok(Done::Failed(v, reason)) => {
                    self.audit_event_only(call.event("error", Some(reason)))
                        .await?;
                    Ok(v)
                }
                Err(e) => Err(self.refuse(&call, e).await),
            }
        }
        .await;
        self.audit_health.note(&result);
        result
    }

    /// Steps 2 to 4.
    async fn admit(&self, call: &mut Call<'_>, target: Target<'_>) -> Result<()> {
        let (op, ctx) = (call.op, call.ctx);
        let principal = &ctx.principal;
        if op.scope == Scope::AllTenants && principal.tenant.is_some() {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "{} is scoped to one tenant; {} spans all tenants",
                    principal.id, op.name
                ),
            ));
        }
        // The key the limiter may count against: only one of the caller's own tenant, so that
        // a request naming another tenant's key never touches that tenant's buckets.
        let mut limited = None;
        match (op.key, target) {
            (KeyArg::Named, Target::Key(name)) => {
                check_purpose(op, name)?;
                principal.authorize_op(op.roles, Some(name))?;
                check_system_key(op, principal, name)?;
                call.name = Some(name.clone());
                limited = call.name.clone();
            }
            (KeyArg::Several, Target::Keys(names)) => {
                principal.authorize_op(op.roles, None)?;
                for name in names {
                    check_purpose(op, name)?;
                    principal.authorize_op(op.roles, Some(name))?;
                    check_system_key(op, principal, name)?;
                }
                call.name = names.first().cloned();
            }
            (KeyArg::Claimed, Target::Claimed(text)) => {
                // The role is required whatever the object names; the key itself is only a
                // claim: one that does not parse, has another purpose, or is foreign or
                // missing, is the verdict `unknown_key`.
                principal.authorize_op(op.roles, None)?;
                let name = self
                    .parse_name(text)
                    .ok()
                    .filter(|n| op.purpose.is_none_or(|p| p == n.purpose()));
                if let Some(name) = name {
                    match principal.authorize_op(op.roles, Some(&name)) {
                        Ok(()) => {
                            limited = Some(name.clone());
                            call.name = Some(name);
                        }
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            // No key: an operation that names none, or a request whose key could not even be
            // read (the work then refuses it, and the record says why).
            (_, Target::None(_)) => principal.authorize_op(op.roles, None)?,
            _ => {
                return Err(Error::internal(format!(
                    "{}: the request names its key in a way the operation does not take",
                    op.name
                )));
            }
        }
        self.limiter.check(ctx, op, limited.as_ref())?;
        let load = matches!(
            op.policy,
            KeyPolicy::Use | KeyPolicy::Verify | KeyPolicy::Read
        ) && matches!(op.key, KeyArg::Named | KeyArg::Claimed);
        let Some(name) = call.name.as_ref().filter(|_| load) else {
            return Ok(());
        };
        let stored = self.store().load_key(name).await?;
        let stored = match (stored, op.key) {
            (Some(k), _) => k,
            (None, KeyArg::Claimed) => return Ok(()),
            (None, _) => return Err(auth::not_found(name)),
        };
        match op.policy {
            KeyPolicy::Use => stored.meta.check_usable()?,
            KeyPolicy::Verify => check_verifiable(&stored)?,
            KeyPolicy::Create | KeyPolicy::Manage | KeyPolicy::Read => {}
        }
        call.key = Some(stored);
        Ok(())
    }

    /// Record a refused or failed request, and return what its caller is told: its error, the
    /// opaque `authentication failed` for an opaque operation's key-state refusal, or the audit
    /// failure when even the record cannot be written.
    async fn refuse(&self, call: &Call<'_>, e: Error) -> Error {
        if e.kind() == ErrorKind::AuditFailure
            || (e.kind() == ErrorKind::Unavailable && self.store().unreachable())
        {
            // The store that holds the log is unreachable: no record can be written (fail
            // closed), and the caller may retry.
            return e;
        }
        let outcome = match e.kind() {
            ErrorKind::NotFound
            | ErrorKind::PermissionDenied
            | ErrorKind::Unauthenticated
            | ErrorKind::RateLimited
            | ErrorKind::KeyState => "denied",
            _ => "error",
        };
        if let Err(audit) = self
            .audit_event_only(call.event(outcome, Some(e.kind().code())))
            .await
        {
            return audit;
        }
        if call.op.opaque && e.kind() == ErrorKind::KeyState {
            return Error::authentication_failed();
        }
        e
    }
}

/// The text the audit record names for a target.
fn label_of(target: Target<'_>) -> Option<String> {
    match target {
        Target::Claimed(text) => Some(text.to_owned()),
        Target::Key(name) => Some(name.to_string()),
        Target::Keys(names) => names.first().map(KeyName::to_string),
        Target::None(about) => about.map(str::to_owned),
    }
}

/// A named key must have the operation's purpose. The refusal names the route that takes it.
fn check_purpose(op: &Operation, name: &KeyName) -> Result<()> {
    let Some(want) = op.purpose else {
        return Ok(());
    };
    if name.purpose() == want {
        return Ok(());
    }
    Err(Error::invalid(match (want, name.purpose()) {
        (Purpose::Api, Purpose::Poai) => format!(
            "{name} is a poai key: it signs only PoAI attestations (POST /v1/poai/sign); \
             general signing uses api: keys"
        ),
        (Purpose::Api, Purpose::Hmm) => format!(
            "{name} is an hmm key: it signs only settlements (POST /v1/hmm/sign); \
             general signing uses api: keys"
        ),
        (Purpose::Api, _) => format!(
            "{name} is not a signing key; general signing uses api: keys with a signing algorithm"
        ),
        (Purpose::Model, _) => {
            format!("{name} is not a model key; model files use model:customer:name keys")
        }
        (want, _) => format!("{name} is not a {want} key"),
    }))
}

/// [`KeyPolicy::Verify`] for the key as a whole.
pub(crate) fn check_verifiable(key: &StoredKey) -> Result<()> {
    use hanzo_kms_core::KeyState;
    match key.meta.state {
        KeyState::Enabled | KeyState::Destroyed => Ok(()),
        state => Err(Error::new(
            ErrorKind::KeyState,
            format!(
                "key {} is {state}; it verifies nothing until enabled",
                key.meta.name
            ),
        )),
    }
}

/// Whether `version` of a key may verify ([`KeyPolicy::Verify`]): not while it is disabled.
pub(crate) fn check_verifying_version(key: &StoredKey, version: u32) -> Result<()> {
    match key.version(version) {
        Some(v) if v.info.state == hanzo_kms_core::KeyState::Disabled => Err(Error::new(
            ErrorKind::KeyState,
            format!(
                "version {version} of key {} is disabled; it verifies nothing until enabled",
                key.meta.name
            ),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn version_not_found(name: &KeyName, v: u32) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("key {name} has no version {v}"),
    )
}

impl Roles {
    /// The roles as the refusal names them.
    pub fn describe(self) -> String {
        match self {
            Roles::All(r) => r
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" and "),
            Roles::Any(r) => r
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }
}

/// Keys of the tenant `system` are the service's own (`api:system:audit` signs the audit
/// checkpoints): a caller may describe them and verify under them, but only the service itself
/// (a `system:` principal, never a token or the CLI's operator) may create, use or change them.
/// Otherwise an all-tenant token with the sign role could sign a forged checkpoint.
fn check_system_key(op: &Operation, principal: &crate::Principal, name: &KeyName) -> Result<()> {
    let reads = matches!(op.policy, KeyPolicy::Read | KeyPolicy::Verify);
    if name.customer() == crate::tokens::SYSTEM_TENANT
        && !reads
        && !principal.id.starts_with("system:")
    {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "{name} is the service's own key ({} is refused for it): keys of the tenant '{}' \
                 are used only by the service",
                op.name,
                crate::tokens::SYSTEM_TENANT
            ),
        ));
    }
    Ok(())
}
