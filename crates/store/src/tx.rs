//! [`WriteTx`]: every state change, committed only together with its audit records.

use std::sync::atomic::Ordering;

use hanzo_kms_core::{
    Error, ErrorKind, KeyHandle, KeyMeta, KeyName, KeyState, KeyVersion, Origin, Result,
};
use sqlx::{Any, Row, Transaction};

use crate::error::{audit_error, db_error};
use crate::rows::parse_hash;
use crate::sql::{self, insert_audit, token_columns, update_head};
use crate::sqlite::Pending;
use crate::{AuditEvent, AuditRecord, Backend, Store, StoredKey, StoredToken, audit};

/// Audit records per INSERT statement (13 parameters each; SQLite allows 32766, PostgreSQL 65535).
const AUDIT_ROWS_PER_INSERT: usize = 256;

/// A write transaction that commits only together with its audit records.
pub struct WriteTx {
    pub(crate) tx: Transaction<'static, Any>,
    pub(crate) store: Store,
    pub(crate) head_seq: u64,
    pub(crate) head_hash: [u8; 32],
    /// Keys and tokens this transaction changed: dropped from the read cache at commit.
    touched_keys: Vec<String>,
    touched_tokens: Vec<String>,
    /// It deleted or replaced key material: the commit erases the old bytes from the files
    /// (see [`WriteTx::delete_material`]).
    erases_material: bool,
}

impl Store {
    /// Start a write transaction (see the crate docs).
    pub async fn begin_write(&self) -> Result<WriteTx> {
        if let Some(wal) = &self.wal {
            wal.check()?;
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| self.err(e, "starting a transaction"))?;
        self.unreachable.store(false, Ordering::Relaxed);
        let row = sqlx::query("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.err(e, "locking the audit chain"))?
            .ok_or_else(|| self.corrupt("the audit chain head is missing"))?;
        let (seq, hash) = self.head_of(&row)?;
        Ok(WriteTx {
            tx,
            store: self.clone(),
            head_seq: seq as u64,
            head_hash: parse_hash(&hash)
                .ok_or_else(|| self.corrupt("the audit chain head hash is malformed"))?,
            touched_keys: Vec::new(),
            touched_tokens: Vec::new(),
            erases_material: false,
        })
    }
}

impl WriteTx {
    /// Load a key inside this transaction (after the write lock is held).
    pub async fn load_key(&mut self, name: &KeyName) -> Result<Option<StoredKey>> {
        let store = self.store.clone();
        store.load_key_on(&mut self.tx, name).await
    }

    pub async fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        sqlx::query("INSERT INTO meta (k, v) VALUES ($1, $2)")
            .bind(key)
            .bind(value)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| self.store.err(e, &format!("writing store metadata {key}")))?;
        Ok(())
    }

    /// Read a `meta` value inside this transaction.
    pub async fn meta(&mut self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar::<Any, String>("SELECT v FROM meta WHERE k = $1")
            .bind(key)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(|e| self.store.err(e, &format!("reading store metadata {key}")))
    }

    /// Set a `meta` value, whether or not it exists.
    pub async fn put_meta(&mut self, key: &str, value: &str) -> Result<()> {
        sqlx::query("INSERT INTO meta (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = $2")
            .bind(key)
            .bind(value)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| self.store.err(e, &format!("writing store metadata {key}")))?;
        Ok(())
    }

    /// Change an existing `meta` value.
    pub async fn update_meta(&mut self, key: &str, value: &str) -> Result<()> {
        sqlx::query("UPDATE meta SET v = $2 WHERE k = $1")
            .bind(key)
            .bind(value)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| self.store.err(e, &format!("writing store metadata {key}")))?;
        Ok(())
    }

    /// Insert a new key. A duplicate name is [`ErrorKind::AlreadyExists`].
    pub async fn insert_key(&mut self, m: &KeyMeta) -> Result<()> {
        sqlx::query(concat!(
            "INSERT INTO keys (",
            sql::key_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(m.name.to_string())
        .bind(m.name.purpose().as_str())
        .bind(m.name.customer())
        .bind(m.name.name())
        .bind(m.algorithm.as_str())
        .bind(m.origin.as_str())
        .bind(m.provider.as_str())
        .bind(m.state.as_str())
        .bind(i64::from(m.primary_version))
        .bind(m.rotation_period_secs)
        .bind(m.created_at)
        .bind(m.rotated_at)
        .bind(m.destroy_at)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| match db_error(e, "") {
            x if x.kind() == ErrorKind::AlreadyExists => Error::new(
                ErrorKind::AlreadyExists,
                format!("key {} already exists", m.name),
            ),
            x => x.context(format!(
                "creating key {} (store {})",
                m.name, self.store.location
            )),
        })?;
        Ok(())
    }

    /// Update a key's mutable fields: state, primary version, rotation and destruction times.
    pub async fn update_key(&mut self, m: &KeyMeta) -> Result<()> {
        self.touched_keys.push(m.name.to_string());
        sqlx::query(
            "UPDATE keys SET state = $2, primary_version = $3, rotation_period_s = $4, rotated_at = $5, \
             destroy_at = $6 WHERE name = $1",
        )
        .bind(m.name.to_string())
        .bind(m.state.as_str())
        .bind(i64::from(m.primary_version))
        .bind(m.rotation_period_secs)
        .bind(m.rotated_at)
        .bind(m.destroy_at)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| self.store.err(e, &format!("updating key {}", m.name)))?;
        Ok(())
    }

    /// Move a key to another provider: its `provider` and `origin` (migration).
    pub async fn set_key_provider(
        &mut self,
        name: &KeyName,
        provider: &str,
        origin: Origin,
    ) -> Result<()> {
        self.touched_keys.push(name.to_string());
        sqlx::query("UPDATE keys SET provider = $2, origin = $3 WHERE name = $1")
            .bind(name.to_string())
            .bind(provider)
            .bind(origin.as_str())
            .execute(&mut *self.tx)
            .await
            .map_err(|e| self.store.err(e, &format!("moving key {name}")))?;
        Ok(())
    }

    /// Insert a version and its provider handle.
    pub async fn insert_version(
        &mut self,
        name: &KeyName,
        v: &KeyVersion,
        provider: &str,
        handle: &KeyHandle,
    ) -> Result<()> {
        let key = name.to_string();
        self.touched_keys.push(key.clone());
        sqlx::query("INSERT INTO key_versions (key_name, version, state, created_at, public_key) VALUES ($1, $2, $3, $4, $5)")
            .bind(&key)
            .bind(i64::from(v.version))
            .bind(v.state.as_str())
            .bind(v.created_at)
            .bind(v.public_key.clone())
            .execute(&mut *self.tx)
            .await
            .map_err(|e| self.store.err(e, &format!("adding version {} of {name}", v.version)))?;
        sqlx::query("INSERT INTO key_material (key_name, version, provider, handle) VALUES ($1, $2, $3, $4)")
            .bind(&key)
            .bind(i64::from(v.version))
            .bind(provider)
            .bind(handle.as_bytes().to_vec())
            .execute(&mut *self.tx)
            .await
            .map_err(|e| self.store.err(e, &format!("storing material of {name} version {}", v.version)))?;
        Ok(())
    }

    pub async fn set_version_state(
        &mut self,
        name: &KeyName,
        version: u32,
        state: KeyState,
    ) -> Result<()> {
        self.touched_keys.push(name.to_string());
        sqlx::query("UPDATE key_versions SET state = $3 WHERE key_name = $1 AND version = $2")
            .bind(name.to_string())
            .bind(i64::from(version))
            .bind(state.as_str())
            .execute(&mut *self.tx)
            .await
            .map_err(|e| {
                self.store
                    .err(e, &format!("updating {name} version {version}"))
            })?;
        Ok(())
    }

    /// Replace one version's material with a handle of another provider (migration). The old
    /// handle is erased from the store's files at commit, as [`delete_material`] does.
    ///
    /// [`delete_material`]: Self::delete_material
    pub async fn replace_material(
        &mut self,
        name: &KeyName,
        version: u32,
        provider: &str,
        handle: &KeyHandle,
    ) -> Result<()> {
        self.touched_keys.push(name.to_string());
        self.erases_material = true;
        let done = sqlx::query(
            "UPDATE key_material SET provider = $3, handle = $4 WHERE key_name = $1 AND version = $2",
        )
        .bind(name.to_string())
        .bind(i64::from(version))
        .bind(provider)
        .bind(handle.as_bytes().to_vec())
        .execute(&mut *self.tx)
        .await
        .map_err(|e| self.store.err(e, &format!("moving {name} version {version}")))?;
        if done.rows_affected() != 1 {
            return Err(self
                .store
                .corrupt(&format!("{name} version {version} has no material to move")));
        }
        Ok(())
    }

    /// Delete a version's material (its handle). The version row stays.
    ///
    /// The commit then erases the handle's bytes from every file of an SQLite store before it
    /// returns (see [`commit`](Self::commit)): deleting the row alone would leave them in the
    /// database's free space and in the WAL, where a copy of the data directory and the master
    /// key would bring the key back. The caller cannot forget to: it is part of the commit.
    pub async fn delete_material(&mut self, name: &KeyName, version: u32) -> Result<()> {
        self.touched_keys.push(name.to_string());
        self.erases_material = true;
        sqlx::query("DELETE FROM key_material WHERE key_name = $1 AND version = $2")
            .bind(name.to_string())
            .bind(i64::from(version))
            .execute(&mut *self.tx)
            .await
            .map_err(|e| {
                self.store
                    .err(e, &format!("deleting material of {name} version {version}"))
            })?;
        Ok(())
    }

    /// Store a new API token (its MAC, never the token).
    pub async fn insert_token(&mut self, t: &StoredToken) -> Result<()> {
        // The id may be remembered as unknown (a lookup before it existed).
        self.touched_tokens.push(t.id.clone());
        sqlx::query(concat!(
            "INSERT INTO api_tokens (",
            token_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&t.id)
        .bind(&t.tenant)
        .bind(t.roles.join(","))
        .bind(t.patterns.join(","))
        .bind(t.mac.clone())
        .bind(&t.description)
        .bind(t.created_at)
        .bind(&t.created_by)
        .bind(t.revoked_at)
        .bind(t.expires_at)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| db_error(e, "storing an API token"))?;
        Ok(())
    }

    /// Mark a token revoked at `now`; false if it does not exist or was already revoked.
    pub async fn revoke_token(&mut self, id: &str, now: i64) -> Result<bool> {
        self.touched_tokens.push(id.to_owned());
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| self.store.err(e, "revoking an API token"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Append `events` to the audit chain and commit everything at once, durably. Without at
    /// least one event the transaction is refused: no state change goes unaudited.
    ///
    /// A transaction that deleted or replaced key material returns only once the old bytes are
    /// gone from the SQLite store's files (database, WAL). If that last step fails, the commit
    /// stands and the error says so.
    pub async fn commit(self, events: &[AuditEvent]) -> Result<Vec<AuditRecord>> {
        let (records, pending) = self.commit_pending(events).await?;
        pending.durable().await?;
        Ok(records)
    }

    /// [`commit`](Self::commit) without waiting for the disk: the changes are visible to other
    /// transactions at once, and durable when the returned [`Pending`] says so. Nothing that
    /// depends on them may be acknowledged before that.
    pub async fn commit_pending(
        mut self,
        events: &[AuditEvent],
    ) -> Result<(Vec<AuditRecord>, Pending)> {
        if events.is_empty() {
            return Err(Error::internal(
                "a write transaction must carry an audit record",
            ));
        }
        if self.erases_material && self.store.backend == Backend::Sqlite {
            self.rewrite_material().await?;
        }
        let records = audit::chain_from(self.head_seq, self.head_hash, events);
        let (seq, prev) = records
            .last()
            .map_or((self.head_seq, self.head_hash), |r| (r.seq, r.hash));
        // Multi-row inserts: a group commit of hundreds of records costs a few statements, not
        // hundreds. The SQL text is built only from constant fragments and placeholders.
        for chunk in records.chunks(AUDIT_ROWS_PER_INSERT) {
            let mut text = String::from(insert_audit!());
            sql::values(&mut text, self.store.backend, chunk.len(), 13);
            let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
            for r in chunk {
                q = bind_audit(q, r);
            }
            q.execute(&mut *self.tx)
                .await
                .map_err(|x| audit_error(self.store.err(x, "appending to the audit log")))?;
        }
        sqlx::query(update_head!())
            .bind(seq as i64)
            .bind(hex::encode(prev))
            .execute(&mut *self.tx)
            .await
            .map_err(|x| audit_error(self.store.err(x, "advancing the audit chain head")))?;
        self.finish(records).await
    }

    /// Commit, then what follows a commit: the caches forget what changed, and removed key
    /// material is erased from the files.
    pub(crate) async fn finish(
        self,
        records: Vec<AuditRecord>,
    ) -> Result<(Vec<AuditRecord>, Pending)> {
        self.tx
            .commit()
            .await
            .map_err(|x| audit_error(self.store.err(x, "committing")))?;
        let pending = self.store.pending();
        self.store.keys.invalidate(&self.touched_keys);
        self.store.tokens.invalidate(&self.touched_tokens);
        if self.erases_material {
            self.store.scrub().await.map_err(|e| {
                Error::new(
                    e.kind(),
                    format!(
                        "the change was committed, but the key material it removed may remain in the store's write-ahead log until its next full checkpoint: {e}"
                    ),
                )
            })?;
        }
        Ok((records, pending))
    }

    /// Move every `key_material` row into freshly written pages (SQLite).
    ///
    /// `secure_delete` zeroes a deleted row where it lies and every page SQLite frees, but a page
    /// that SQLite rebalanced keeps stale copies of rows that moved away in its unused middle
    /// (`rebuildPage` does not clear it). Deleting every row frees all of the table's pages but
    /// its root, zeroed; writing the rows back fills pages that were zeroed when freed. The
    /// table holds one row per key version, so this costs little next to a destroy's audit
    /// record and WAL checkpoint.
    async fn rewrite_material(&mut self) -> Result<()> {
        let doing = "rewriting key material";
        let rows = sqlx::query("SELECT key_name, version, provider, handle FROM key_material")
            .fetch_all(&mut *self.tx)
            .await
            .map_err(|e| self.store.err(e, doing))?;
        sqlx::query("DELETE FROM key_material")
            .execute(&mut *self.tx)
            .await
            .map_err(|e| self.store.err(e, doing))?;
        const PER_INSERT: usize = 1000; // 4 parameters each
        for chunk in rows.chunks(PER_INSERT) {
            let mut text = String::from(
                "INSERT INTO key_material (key_name, version, provider, handle) VALUES ",
            );
            sql::values(&mut text, self.store.backend, chunk.len(), 4);
            let mut q = sqlx::query(sqlx::AssertSqlSafe(text));
            for r in chunk {
                let get = |e| self.store.err(e, doing);
                q = q
                    .bind(r.try_get::<String, _>(0).map_err(get)?)
                    .bind(r.try_get::<i64, _>(1).map_err(get)?)
                    .bind(r.try_get::<String, _>(2).map_err(get)?)
                    .bind(r.try_get::<Vec<u8>, _>(3).map_err(get)?);
            }
            q.execute(&mut *self.tx)
                .await
                .map_err(|e| self.store.err(e, doing))?;
        }
        Ok(())
    }
}

/// Bind one audit row's 13 columns, in [`crate::sql::audit_columns`] order.
pub(crate) fn bind_audit<'q>(
    q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    r: &AuditRecord,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    let e = &r.event;
    q.bind(r.seq as i64)
        .bind(e.time_ms)
        .bind(e.request_id.clone())
        .bind(e.principal.clone())
        .bind(e.tenant.clone())
        .bind(e.operation.clone())
        .bind(e.key_name.clone())
        .bind(e.key_version.map(i64::from))
        .bind(e.outcome.clone())
        .bind(e.reason.clone())
        .bind(e.peer.clone())
        .bind(e.detail.clone())
        .bind(r.hash.to_vec())
}
