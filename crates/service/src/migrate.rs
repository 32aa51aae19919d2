//! `keys migrate --to PROVIDER`: move every key of the store to another provider, in place.
//!
//! Each version is exported wrapped under a one-time key that lives only in this process,
//! imported into the target, and the store's material rows, key origins and provider
//! fingerprint are switched in one transaction. A key that cannot leave its device stops the
//! migration before anything changes. API tokens are MACs under the old provider's key, so
//! they cannot move: the migration refuses while tokens are active unless told to revoke them.

use std::sync::Arc;

use hanzo_kms_core::{
    Algorithm, Error, ErrorKind, KeyHandle, KeyName, KeyRef, KeySpec, Origin, Provider, Result,
    SecretKey32,
};
use serde::Serialize;

use crate::operation as op;
use crate::pipeline::{Call, Done, Receipt, Target};
use crate::{Kms, RequestCtx, audit_event, provider_label};

/// One key's new origin and new handles by version.
type Moved = (KeyName, Origin, Vec<(u32, KeyHandle)>);

/// What a migration did.
#[derive(Debug, Serialize)]
pub struct MigrationReport {
    pub from: String,
    pub to: String,
    pub keys: usize,
    pub versions: usize,
    pub revoked_tokens: usize,
}

impl Kms {
    /// Move every key to `target` (see the module docs). On success the store belongs to the
    /// target provider: the config's `kms.lux.provider` must name it from now on.
    pub async fn migrate_to(
        &self,
        ctx: &RequestCtx,
        target: Arc<dyn Provider>,
        revoke_tokens: bool,
    ) -> Result<MigrationReport> {
        self.run(ctx, &op::KEY_MIGRATE, Target::None(None), |call| {
            Box::pin(async move {
                let (report, receipt) = call.kms.migrate_in(call, target, revoke_tokens).await?;
                Ok(Done::Committed(report, receipt))
            })
        })
        .await
    }

    async fn migrate_in(
        &self,
        call: &Call<'_>,
        target: Arc<dyn Provider>,
        revoke_tokens: bool,
    ) -> Result<(MigrationReport, Receipt)> {
        let ctx = call.ctx;
        let from = self.provider.name().to_owned();
        let to = target.name().to_owned();
        if from == to {
            return Err(Error::invalid(format!(
                "the store already uses provider {to}"
            )));
        }
        let active: Vec<_> = self
            .store
            .list_tokens(None)
            .await?
            .into_iter()
            .filter(|t| t.revoked_at.is_none())
            .collect();
        if !active.is_empty() && !revoke_tokens {
            return Err(Error::new(
                ErrorKind::KeyState,
                format!(
                    "{} API token(s) are active; they are MACs under {from}'s key and cannot move to {to}. \
                     Pass --revoke-tokens to revoke them in the same transaction (then create new ones); nothing was changed",
                    active.len()
                ),
            ));
        }
        let mut kek = zeroize::Zeroizing::new([0u8; 32]);
        hanzo_kms_crypto::rng::fill(kek.as_mut())?;
        let kek = SecretKey32::from_bytes(*kek);

        // Export and import everything first; the store changes only at the end.
        let mut moved: Vec<Moved> = Vec::new();
        let mut made: Vec<(KeyName, u32, Algorithm, KeyHandle)> = Vec::new();
        let mut refused = Vec::new();
        let result: Result<Receipt> = async {
            for listed in self.store.list_keys("").await? {
                let Some(key) = self.store.load_key(&listed.meta.name).await? else {
                    continue;
                };
                let m = &key.meta;
                let mut handles = Vec::new();
                let mut origin = m.origin;
                for v in &key.versions {
                    let Some(h) = &v.handle else { continue };
                    let r = KeyRef {
                        name: &m.name,
                        version: v.info.version,
                        algorithm: m.algorithm,
                        handle: h,
                    };
                    let aad =
                        hanzo_kms_crypto::seal::material_aad(&m.name, v.info.version, m.algorithm);
                    let sealed = match self.device(|p| p.export_wrapped(&r, &kek, &aad)) {
                        Ok(s) => s,
                        Err(e) if e.kind() == ErrorKind::Unsupported => {
                            refused.push(e.message().to_owned());
                            break;
                        }
                        Err(e) => return Err(e),
                    };
                    let label = provider_label(&self.config, &m.name, v.info.version);
                    let g = target.import_wrapped(
                        &KeySpec {
                            name: &m.name,
                            version: v.info.version,
                            algorithm: m.algorithm,
                            label: &label,
                        },
                        &kek,
                        &sealed,
                        &aad,
                    )?;
                    made.push((
                        m.name.clone(),
                        v.info.version,
                        m.algorithm,
                        g.handle.clone(),
                    ));
                    if let (Some(expected), Some(got)) = (&v.info.public_key, &g.public_key)
                        && expected != &got.bytes
                    {
                        return Err(Error::new(
                            ErrorKind::Corrupt,
                            format!(
                                "{} version {}: the migrated key does not match its public key",
                                m.name, v.info.version
                            ),
                        ));
                    }
                    origin = g.origin;
                    handles.push((v.info.version, g.handle));
                }
                moved.push((m.name.clone(), origin, handles));
            }
            if !refused.is_empty() {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{} key(s) cannot leave {from}, so nothing was migrated: {}",
                        refused.len(),
                        refused.join("; ")
                    ),
                ));
            }
            let store_id = self
                .store
                .meta("store_id")
                .await?
                .ok_or_else(|| Error::new(ErrorKind::Corrupt, "the store has no id"))?;
            let fingerprint = target.fingerprint(store_id.as_bytes())?;
            let mut tx = self.store.begin_write().await?;
            let mut events = Vec::new();
            let mut versions = 0;
            for (name, origin, handles) in &moved {
                tx.set_key_provider(name, &to, *origin).await?;
                for (v, h) in handles {
                    tx.replace_material(name, *v, &to, h).await?;
                    versions += 1;
                }
                events.push(audit_event(
                    ctx,
                    "key.migrate",
                    Some(name.to_string()),
                    None,
                    "ok",
                    Some(&format!("{from} -> {to}")),
                ));
            }
            let now = crate::now_secs();
            for t in &active {
                tx.revoke_token(&t.id, now).await?;
                events.push(audit_event(
                    ctx,
                    "token.revoke",
                    None,
                    None,
                    "ok",
                    Some(&format!("token {} revoked by the migration to {to}", t.id)),
                ));
            }
            tx.update_meta("provider", &to).await?;
            tx.update_meta("provider_fingerprint", &hex::encode(fingerprint))
                .await?;
            events.push(audit_event(
                ctx,
                "store.migrate",
                None,
                None,
                "ok",
                Some(&format!(
                    "{from} -> {to}: {} keys, {versions} versions",
                    moved.len()
                )),
            ));
            call.commit_records(tx, &events).await
        }
        .await;
        let receipt = match result {
            Ok(r) => r,
            Err(e) => {
                crate::release_made(target.as_ref(), &made);
                return Err(e);
            }
        };
        Ok((
            MigrationReport {
                from,
                to,
                keys: moved.len(),
                versions: moved.iter().map(|m| m.2.len()).sum(),
                revoked_tokens: active.len(),
            },
            receipt,
        ))
    }
}
