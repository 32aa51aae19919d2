//! Key lifecycle: create (one key or a model keyspace), list, show, rotate, enable, disable and
//! destroy, and the scheduled rotations and destructions.
//!
//! Operations that change keys commit the change and its audit record in one transaction. What a
//! provider generated for a change that does not commit is destroyed again, and the operations
//! that make key material run on a task of their own ([`to_completion`]), so a request that is
//! cancelled cannot leave material no key record points to.

use hanzo_kms_core::{
    Algorithm, Error, ErrorKind, KeyMeta, KeyName, KeyRef, KeySpec, KeyState, KeyVersion, Purpose,
    Result, UnixTime,
};
use hanzo_kms_store::{StoredKey, StoredVersion, WriteTx};

use crate::operation as op;
use crate::pipeline::{Call, Done, Receipt, Target, version_not_found};
use crate::{
    DAY, DestroyMode, DueOutcome, KeyInfo, Kms, PublicKeyInfo, RequestCtx, now_secs,
    provider_label, sign, to_completion,
};

impl Kms {
    /// Create a key. `algorithm` defaults by purpose (model and data: aes-256-gcm; poai and hmm:
    /// the configured algorithm). `rotation_days` defaults to `key_rotation_days` for model keys
    /// and to never for others; `Some(0)` means never. It runs to its end even if the caller stops
    /// waiting.
    pub async fn create_key(
        &self,
        ctx: &RequestCtx,
        name: &KeyName,
        algorithm: Option<Algorithm>,
        rotation_days: Option<u32>,
    ) -> Result<KeyInfo> {
        let (kms, ctx, name) = (self.clone(), ctx.clone(), name.clone());
        to_completion(async move {
            kms.run(&ctx, &op::KEY_CREATE, Target::Key(&name), |call| {
                Box::pin(async move {
                    let plan = call.kms.plan_key(call.name()?, algorithm, rotation_days)?;
                    let (mut infos, receipt) = call.kms.create_keys(call, &[plan]).await?;
                    let info = infos
                        .pop()
                        .ok_or_else(|| Error::internal("no key was created"))?;
                    Ok(Done::Committed(info, receipt))
                })
            })
            .await
        })
        .await
    }

    /// The spec's CreateModelKeyspace: `model:C:M` (aes-256-gcm) and, with `signing_keys`,
    /// `poai:C:M` and `hmm:C:M` with the configured algorithms (and in hybrid mode the ML-DSA-65
    /// partner `poai:C:M-pq`). All or nothing, and run to its end even if the caller stops
    /// waiting.
    pub async fn create_keyspace(
        &self,
        ctx: &RequestCtx,
        customer: &str,
        model: &str,
        signing_keys: bool,
    ) -> Result<Vec<KeyInfo>> {
        let model_key = KeyName::new(Purpose::Model, customer, model, self.config().separator());
        let (kms, ctx) = (self.clone(), ctx.clone());
        to_completion(async move {
            let model_key = match model_key {
                Ok(k) => k,
                // A name that cannot be formed is refused (and recorded) by the pipeline's
                // caller-side check: record it under the keyspace operation with no key.
                Err(e) => {
                    return kms
                        .run(&ctx, &op::KEYSPACE_CREATE, Target::Keys(&[]), |_| {
                            Box::pin(async move { Err(e) })
                        })
                        .await;
                }
            };
            let mut names = vec![model_key.clone()];
            if signing_keys {
                names.push(model_key.with_purpose(Purpose::Poai));
                names.push(model_key.with_purpose(Purpose::Hmm));
            }
            let poai = &kms.config().kms.hanzo.poai_signing;
            let hybrid = signing_keys && poai.hybrid && poai.algorithm == Algorithm::Secp256k1;
            if hybrid {
                match sign::pq_partner(&model_key.with_purpose(Purpose::Poai)) {
                    Ok(partner) => names.push(partner),
                    Err(e) => {
                        return kms
                            .run(&ctx, &op::KEYSPACE_CREATE, Target::Keys(&names), |_| {
                                Box::pin(async move { Err(e) })
                            })
                            .await;
                    }
                }
            }
            let names = &names;
            kms.run(&ctx, &op::KEYSPACE_CREATE, Target::Keys(names), |call| {
                Box::pin(async move {
                    let mut plans = Vec::with_capacity(names.len());
                    for (i, n) in names.iter().enumerate() {
                        let algorithm = (hybrid && i == 3).then_some(Algorithm::MlDsa65);
                        plans.push(call.kms.plan_key(n, algorithm, None)?);
                    }
                    let (infos, receipt) = call.kms.create_keys(call, &plans).await?;
                    Ok(Done::Committed(infos, receipt))
                })
            })
            .await
        })
        .await
    }

    /// Keys whose names start with `prefix`, of the caller's tenant (and, for a token limited
    /// to key patterns, matching them).
    pub async fn list_keys(&self, ctx: &RequestCtx, prefix: &str) -> Result<Vec<KeyInfo>> {
        self.run(ctx, &op::KEY_LIST, Target::None(None), |call| {
            Box::pin(async move {
                let principal = &call.ctx.principal;
                let keys = call
                    .kms
                    .store()
                    .list_keys_of(principal.tenant.as_deref(), prefix)
                    .await?;
                let infos = keys
                    .iter()
                    .filter(|k| principal.owns(&k.meta.name) && principal.may_see(&k.meta.name))
                    .map(KeyInfo::from_stored)
                    .collect();
                Ok(Done::Ok(infos))
            })
        })
        .await
    }

    /// One key with its versions and public keys.
    pub async fn show_key(&self, ctx: &RequestCtx, name: &KeyName) -> Result<KeyInfo> {
        self.run(ctx, &op::KEY_SHOW, Target::Key(name), |call| {
            Box::pin(async move { Ok(Done::Ok(KeyInfo::from_stored(call.key()?))) })
        })
        .await
    }

    /// The primary version's public key (a signing key's).
    pub async fn public_key(&self, ctx: &RequestCtx, name: &KeyName) -> Result<PublicKeyInfo> {
        self.run(ctx, &op::KEY_SHOW, Target::Key(name), |call| {
            Box::pin(async move {
                let info = KeyInfo::from_stored(call.key()?);
                let v = info
                    .versions
                    .iter()
                    .find(|v| v.version == info.primary_version)
                    .filter(|v| v.public_key.is_some())
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::Unsupported,
                            format!("key {name} has no public key"),
                        )
                    })?;
                Ok(Done::Ok(PublicKeyInfo {
                    key: info.name.clone(),
                    version: v.version,
                    algorithm: info.algorithm.clone(),
                    public_key: v.public_key.clone().unwrap_or_default(),
                    address: v.address.clone(),
                }))
            })
        })
        .await
    }

    /// Make a new primary version. Older versions still decrypt and verify. It runs to its end
    /// even if the caller stops waiting.
    pub async fn rotate_key(&self, ctx: &RequestCtx, name: &KeyName) -> Result<KeyInfo> {
        let info = self.rotate_key_when(ctx, name, None).await?;
        info.ok_or_else(|| Error::internal("a rotation that was not due-checked did nothing"))
    }

    /// Rotate every enabled key past its rotation period at `now`. One failure does not stop
    /// the others; each key's outcome is reported. A key that another node rotated meanwhile is
    /// left alone: the period is checked again inside the rotating transaction.
    pub async fn rotate_due(&self, ctx: &RequestCtx, now: UnixTime) -> Result<Vec<DueOutcome>> {
        let keys = self
            .store()
            .list_keys_of(ctx.principal.tenant.as_deref(), "")
            .await?;
        let mut out = Vec::new();
        for k in keys
            .iter()
            .filter(|k| ctx.principal.owns(&k.meta.name) && k.meta.rotation_due(now))
        {
            let seen = (now, k.meta.primary_version);
            match self.rotate_key_when(ctx, &k.meta.name, Some(seen)).await {
                Ok(None) => {}
                result => out.push(DueOutcome {
                    key: k.meta.name.to_string(),
                    result: result.and_then(|i| {
                        i.ok_or_else(|| Error::internal("a due rotation returned nothing"))
                    }),
                }),
            }
        }
        Ok(out)
    }

    /// Rotate `name`; with `due` (a time and the primary version seen when the key was
    /// listed), only if, when the transaction reads the key, no writer has rotated it since and
    /// it is still due at that time (`None` otherwise).
    async fn rotate_key_when(
        &self,
        ctx: &RequestCtx,
        name: &KeyName,
        due: Option<(UnixTime, u32)>,
    ) -> Result<Option<KeyInfo>> {
        let (kms, ctx, name) = (self.clone(), ctx.clone(), name.clone());
        to_completion(async move {
            kms.run(&ctx, &op::KEY_ROTATE, Target::Key(&name), |call| {
                Box::pin(async move { call.kms.rotate_in(call, due).await })
            })
            .await
        })
        .await
    }

    async fn rotate_in(
        &self,
        call: &mut Call<'_>,
        due: Option<(UnixTime, u32)>,
    ) -> Result<Done<Option<KeyInfo>>> {
        let name = call.name()?.clone();
        let mut tx = self.store().begin_write().await?;
        let mut key = self.load_in(&mut tx, call.ctx, &name).await?;
        if let Some((now, seen)) = due
            && (key.meta.primary_version != seen || !key.meta.rotation_due(now))
        {
            // Another writer rotated it (or changed its state) since the key was listed.
            return Ok(Done::Noted(None, "not_due"));
        }
        key.meta.check_usable()?;
        let version = key
            .versions
            .iter()
            .map(|v| v.info.version)
            .max()
            .unwrap_or(0)
            + 1;
        call.record_version(Some(version));
        let generated = self.generate(&name, version, key.meta.algorithm)?;
        let now = now_secs();
        let info = KeyVersion {
            version,
            state: KeyState::Enabled,
            created_at: now,
            public_key: generated.public_key.as_ref().map(|p| p.bytes.clone()),
        };
        let committed: Result<Receipt> = async {
            tx.insert_version(&name, &info, self.provider_name(), &generated.handle)
                .await?;
            key.meta.primary_version = version;
            // A due rotation happens at the scheduler's time (the clock in production; a test's
            // later time must not leave the key due again for the next scheduler).
            key.meta.rotated_at = due.map_or(now, |(at, _)| at.max(now));
            tx.update_key(&key.meta).await?;
            call.commit(tx).await
        }
        .await;
        let receipt = match committed {
            Ok(r) => r,
            Err(e) => {
                let r = KeyRef {
                    name: &name,
                    version,
                    algorithm: key.meta.algorithm,
                    handle: &generated.handle,
                };
                if let Err(d) = self.device(|p| p.destroy(&r)) {
                    tracing::warn!(key = %name, error = %d, "could not release uncommitted key material");
                }
                return Err(e);
            }
        };
        key.versions.push(StoredVersion { info, handle: None });
        Ok(Done::Committed(Some(KeyInfo::from_stored(&key)), receipt))
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
        let operation = if enabled {
            &op::KEY_ENABLE
        } else {
            &op::KEY_DISABLE
        };
        self.run(ctx, operation, Target::Key(name), |call| {
            Box::pin(async move {
                call.record_version(version);
                let kms = call.kms;
                let mut tx = kms.store().begin_write().await?;
                let mut key = kms.load_in(&mut tx, call.ctx, name).await?;
                if key.meta.state == KeyState::Destroyed {
                    return Err(state_error(format!(
                        "key {name} is destroyed; it cannot be enabled or disabled"
                    )));
                }
                match version {
                    None => {
                        if !enabled && key.meta.state == KeyState::DestroyScheduled {
                            return Err(state_error(format!(
                                "key {name} is scheduled for destruction; `keys enable` cancels that first"
                            )));
                        }
                        key.meta.state = if enabled {
                            KeyState::Enabled
                        } else {
                            KeyState::Disabled
                        };
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
                            return Err(state_error(format!(
                                "version {v} of key {name} is destroyed"
                            )));
                        }
                        if !enabled && v == primary {
                            return Err(state_error(format!(
                                "version {v} is the primary version of {name}; rotate first, or disable the whole key"
                            )));
                        }
                        entry.info.state = if enabled {
                            KeyState::Enabled
                        } else {
                            KeyState::Disabled
                        };
                        tx.set_version_state(name, v, entry.info.state).await?;
                    }
                }
                let receipt = call.commit(tx).await?;
                Ok(Done::Committed(KeyInfo::from_stored(&key), receipt))
            })
        })
        .await
    }

    /// Destroy a key (all versions) or one non-primary version, now or after a delay.
    pub async fn destroy(
        &self,
        ctx: &RequestCtx,
        name: &KeyName,
        version: Option<u32>,
        mode: DestroyMode,
    ) -> Result<KeyInfo> {
        let info = self.destroy_when(ctx, name, version, mode, None).await?;
        info.ok_or_else(|| Error::internal("a destruction that was not due-checked did nothing"))
    }

    /// Carry out every scheduled destruction whose time has come. A key whose destruction was
    /// cancelled meanwhile (`keys enable`, on any node) is left alone: the schedule is checked
    /// again inside the destroying transaction.
    pub async fn destroy_due(&self, ctx: &RequestCtx, now: UnixTime) -> Result<Vec<DueOutcome>> {
        let keys = self
            .store()
            .list_keys_of(ctx.principal.tenant.as_deref(), "")
            .await?;
        let mut out = Vec::new();
        for k in keys.iter().filter(|k| {
            ctx.principal.owns(&k.meta.name)
                && k.meta.state == KeyState::DestroyScheduled
                && k.meta.destroy_at.is_some_and(|t| t <= now)
        }) {
            match self
                .destroy_when(ctx, &k.meta.name, None, DestroyMode::Now, Some(now))
                .await
            {
                Ok(None) => {}
                result => out.push(DueOutcome {
                    key: k.meta.name.to_string(),
                    result: result.and_then(|i| {
                        i.ok_or_else(|| Error::internal("a due destruction returned nothing"))
                    }),
                }),
            }
        }
        Ok(out)
    }

    async fn destroy_when(
        &self,
        ctx: &RequestCtx,
        name: &KeyName,
        version: Option<u32>,
        mode: DestroyMode,
        due: Option<UnixTime>,
    ) -> Result<Option<KeyInfo>> {
        self.run(ctx, &op::KEY_DESTROY, Target::Key(name), |call| {
            Box::pin(async move { call.kms.destroy_in(call, version, mode, due).await })
        })
        .await
    }

    async fn destroy_in(
        &self,
        call: &mut Call<'_>,
        version: Option<u32>,
        mode: DestroyMode,
        due: Option<UnixTime>,
    ) -> Result<Done<Option<KeyInfo>>> {
        call.record_version(version);
        let name = call.name()?.clone();
        let mut tx = self.store().begin_write().await?;
        let mut key = self.load_in(&mut tx, call.ctx, &name).await?;
        if let Some(now) = due
            && !(key.meta.state == KeyState::DestroyScheduled
                && key.meta.destroy_at.is_some_and(|t| t <= now))
        {
            return Ok(Done::Noted(None, "not_due"));
        }
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
                let entry = key.version(v).ok_or_else(|| version_not_found(&name, v))?;
                if v == key.meta.primary_version {
                    return Err(state_error(format!(
                        "version {v} is the primary version of {name}; rotate first, or destroy the whole key"
                    )));
                }
                if entry.info.state == KeyState::Destroyed {
                    return Err(state_error(format!(
                        "version {v} of key {name} is already destroyed"
                    )));
                }
                vec![v]
            }
            (None, DestroyMode::After(delay)) => {
                if delay <= 0 {
                    return Err(Error::invalid(
                        "the destruction delay must be positive; use --now to destroy immediately",
                    ));
                }
                key.meta.state = KeyState::DestroyScheduled;
                key.meta.destroy_at = Some(now.saturating_add(delay));
                tx.update_key(&key.meta).await?;
                call.record_as("key.destroy.schedule");
                let receipt = call.commit(tx).await?;
                return Ok(Done::Committed(Some(KeyInfo::from_stored(&key)), receipt));
            }
            (None, DestroyMode::Now) => key
                .versions
                .iter()
                .filter(|v| v.info.state != KeyState::Destroyed)
                .map(|v| v.info.version)
                .collect(),
        };
        for v in &targets {
            tx.delete_material(&name, *v).await?;
            tx.set_version_state(&name, *v, KeyState::Destroyed).await?;
        }
        if version.is_none() {
            key.meta.state = KeyState::Destroyed;
            key.meta.destroy_at = Some(now);
            tx.update_key(&key.meta).await?;
        }
        let receipt = call.commit(tx).await?;
        // The store no longer references the material; now let the provider drop it. A
        // failure here leaves an orphan in the provider, never a dangling reference.
        for v in &targets {
            if let Some(h) = key.version(*v).and_then(|x| x.handle.clone()) {
                let r = KeyRef {
                    name: &name,
                    version: *v,
                    algorithm: key.meta.algorithm,
                    handle: &h,
                };
                if let Err(e) = self.device(|p| p.destroy(&r)) {
                    tracing::warn!(key = %name, version = v, error = %e, "provider did not destroy the material");
                }
            }
        }
        for entry in key
            .versions
            .iter_mut()
            .filter(|x| targets.contains(&x.info.version))
        {
            entry.info.state = KeyState::Destroyed;
            entry.handle = None;
        }
        Ok(Done::Committed(Some(KeyInfo::from_stored(&key)), receipt))
    }

    /// A key the caller may see, read inside a write transaction (foreign = missing).
    pub(crate) async fn load_in(
        &self,
        tx: &mut WriteTx,
        ctx: &RequestCtx,
        name: &KeyName,
    ) -> Result<StoredKey> {
        match tx.load_key(name).await? {
            Some(k) if ctx.principal.owns(name) => Ok(k),
            _ => Err(crate::auth::not_found(name)),
        }
    }

    /// Decide algorithm and rotation for a new key.
    fn plan_key(
        &self,
        name: &KeyName,
        algorithm: Option<Algorithm>,
        rotation_days: Option<u32>,
    ) -> Result<KeyPlan> {
        let h = &self.config().kms.hanzo;
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
        if !self.capabilities().algorithms.contains(&algorithm) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "provider {} cannot make {algorithm} keys",
                    self.provider_name()
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

    /// Generate and store keys in one transaction, with one audit record each (all under the
    /// request's id).
    async fn create_keys(
        &self,
        call: &Call<'_>,
        plans: &[KeyPlan],
    ) -> Result<(Vec<KeyInfo>, Receipt)> {
        let ctx = call.ctx;
        // Refuse early, before any provider work, if a name is taken (or was ever used).
        for p in plans {
            if let Some(existing) = self.store().load_key(&p.name).await? {
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
        let result: Result<Receipt> = async {
            let mut tx = self.store().begin_write().await?;
            let mut events = Vec::with_capacity(plans.len());
            for (p, g) in plans.iter().zip(&made) {
                let meta = KeyMeta {
                    name: p.name.clone(),
                    algorithm: p.algorithm,
                    origin: g.origin,
                    provider: self.provider_name().to_owned(),
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
                tx.insert_version(&p.name, &version, self.provider_name(), &g.handle)
                    .await?;
                events.push(crate::audit_event(
                    ctx,
                    op::KEY_CREATE.name,
                    Some(p.name.to_string()),
                    Some(1),
                    "ok",
                    None,
                ));
                keys.push(StoredKey {
                    meta,
                    versions: vec![StoredVersion {
                        info: version,
                        handle: None,
                    }],
                });
            }
            call.commit_records(tx, &events).await
        }
        .await;
        match result {
            Ok(receipt) => Ok((keys.iter().map(KeyInfo::from_stored).collect(), receipt)),
            Err(e) => {
                // Nothing was committed: release what the provider made.
                self.release(plans, &made);
                Err(e)
            }
        }
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

    pub(crate) fn generate(
        &self,
        name: &KeyName,
        version: u32,
        algorithm: Algorithm,
    ) -> Result<hanzo_kms_core::GeneratedKey> {
        let label = provider_label(self.config(), name, version);
        self.device(|p| {
            p.generate(&KeySpec {
                name,
                version,
                algorithm,
                label: &label,
            })
        })
    }
}

struct KeyPlan {
    name: KeyName,
    algorithm: Algorithm,
    rotation_period_secs: Option<i64>,
}

pub(crate) fn state_error(msg: String) -> Error {
    Error::new(ErrorKind::KeyState, msg)
}
