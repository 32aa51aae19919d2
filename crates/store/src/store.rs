//! [`Store`]: the connection pool, and every read outside a write transaction.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hanzo_kms_core::{Error, ErrorKind, KeyHandle, KeyName, Result, Separator};
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Connection, Row};

use crate::error::{damaged, db_error};
use crate::sql::{self, key_columns, token_columns};
use crate::sqlite::{self, Pending, WalSync};
use crate::{Backend, StoredKey, StoredToken, StoredVersion, cache};

/// What a SQLite store takes on disk and what is left ([`Store::disk_usage`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskUsage {
    pub store_bytes: u64,
    pub free_bytes: Option<u64>,
}

/// A connection pool to the store.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    pub(crate) separator: Separator,
    pub(crate) location: String,
    pub(crate) keys: Arc<cache::Cache<Option<StoredKey>>>,
    /// Tokens by id, and ids that have no token: a lookup of an unknown id is answered from
    /// memory like a known one, so the time of a 401 does not tell whether the id exists.
    pub(crate) tokens: Arc<cache::Cache<Option<StoredToken>>>,
    /// Set when the last store operation found the database unreachable; cleared by the next
    /// transaction that starts. See [`Store::unreachable`].
    pub(crate) unreachable: Arc<AtomicBool>,
    /// SQLite: makes commits durable by syncing the WAL, and runs its checkpoints (see
    /// [`crate::sqlite`]).
    pub(crate) wal: Option<Arc<WalSync>>,
}

impl Store {
    /// The default SQLite file inside a data directory.
    pub fn sqlite_url(data_dir: &Path) -> String {
        format!("sqlite://{}", data_dir.join("kms.db").display())
    }

    /// Connect. With `create`, a missing SQLite file is created (for `init`); without it, a
    /// missing file is [`ErrorKind::NotInitialized`].
    pub async fn connect(url: &str, separator: Separator, create: bool) -> Result<Self> {
        Self::connect_with(url, separator, create, 16).await
    }

    /// [`connect`](Self::connect) with a pool of `max_connections` (PostgreSQL; SQLite uses 4).
    pub async fn connect_with(
        url: &str,
        separator: Separator,
        create: bool,
        max_connections: u32,
    ) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (backend, conn_url, location) = if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let exists = Path::new(path).exists();
            if !exists && !create {
                return Err(Error::new(
                    ErrorKind::NotInitialized,
                    format!("no Hanzo KMS store at {path}; run `hanzo-kms init` first"),
                ));
            }
            let mode = if create { "rwc" } else { "rw" };
            (
                Backend::Sqlite,
                format!("sqlite://{path}?mode={mode}"),
                path.to_owned(),
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let redacted = hanzo_kms_core::config::StorageUrl::new(url).redacted();
            // sqlx keeps its own parsed copy of the password in the pool's connect options
            // for as long as the pool lives; our copies are wiped (docs/operations.md).
            (Backend::Postgres, url.to_owned(), redacted)
        } else {
            return Err(Error::new(
                ErrorKind::Config,
                "storage.url must be sqlite:PATH or postgres://…",
            ));
        };
        // One direct connection first: a corrupt file or an unreachable server then reports its
        // own error at once, instead of a pool time-out after retries.
        let conn_url = zeroize::Zeroizing::new(conn_url);
        let mut probe = sqlx::AnyConnection::connect(&conn_url)
            .await
            .map_err(|e| db_error(e, &format!("opening the store at {location}")))?;
        prepare_connection(backend, &mut probe)
            .await
            .map_err(|e| db_error(e, &format!("opening the store at {location}")))?;
        let _ = probe.close().await;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite {
                4
            } else {
                max_connections.max(1)
            })
            // SQLite waits out a long writer; an unreachable PostgreSQL fails the request
            // sooner, so a load balancer or client can react.
            .acquire_timeout(Duration::from_secs(if backend == Backend::Sqlite {
                10
            } else {
                5
            }))
            .after_connect(move |conn, _meta| Box::pin(prepare_connection(backend, conn)))
            .connect(&conn_url)
            .await
            .map_err(|e| db_error(e, &format!("opening the store at {location}")))?;
        let wal = (backend == Backend::Sqlite).then(|| Arc::new(WalSync::new(&location)));
        Ok(Self {
            pool,
            backend,
            separator,
            location,
            wal,
            keys: Arc::new(cache::Cache::new()),
            tokens: Arc::new(cache::Cache::new()),
            unreachable: Arc::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where the store is (a path, or the URL with its password redacted).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Close the pool, letting SQLite checkpoint its WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// How many times the store synced its SQLite WAL to disk (`None` on PostgreSQL, whose
    /// server syncs at each commit).
    pub fn fsyncs(&self) -> Option<u64> {
        self.wal.as_ref().map(|w| w.syncs())
    }

    /// Checkpoint passes that copied the SQLite WAL into the database (`None` on PostgreSQL).
    /// Each synced the WAL, and the database too when it caught up with the WAL's end.
    pub fn checkpoints(&self) -> Option<u64> {
        self.wal.as_ref().map(|w| w.checkpoints())
    }

    /// The bytes a SQLite store takes on disk (the database, its WAL and shared-memory files) and
    /// the space left on its filesystem for an unprivileged writer (`None` if that cannot be
    /// read). `None` on PostgreSQL, whose files are the database server's.
    pub fn disk_usage(&self) -> Option<DiskUsage> {
        if self.backend != Backend::Sqlite {
            return None;
        }
        let store_bytes = ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", self.location)).ok())
            .map(|m| m.len())
            .sum();
        let dir = Path::new(&self.location)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let free_bytes = rustix::fs::statvfs(dir)
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize));
        Some(DiskUsage {
            store_bytes,
            free_bytes,
        })
    }

    /// Whether the database was unreachable at the last attempt (PostgreSQL down or cut off).
    /// A request that failed for that reason cannot be audited either, so the service does not
    /// spend another connection time-out trying.
    pub fn unreachable(&self) -> bool {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// Read a `meta` value.
    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar::<Any, String>("SELECT v FROM meta WHERE k = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.err(e, "reading store metadata"))
    }

    /// One API token by id (through the read cache: see [`cache`]).
    pub async fn token(&self, id: &str) -> Result<Option<StoredToken>> {
        let (hit, generation) = self.tokens.get(id);
        if let Some(known) = hit {
            return Ok(known);
        }
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e, "reading an API token"))?;
        let t = row
            .as_ref()
            .map(StoredToken::from_row)
            .transpose()
            .map_err(|e| self.err(e, "reading an API token"))?;
        self.tokens.put(id, t.clone(), generation);
        Ok(t)
    }

    /// API tokens, of one tenant or of all, oldest first.
    pub async fn list_tokens(&self, tenant: Option<&str>) -> Result<Vec<StoredToken>> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query(concat!(
                    "SELECT ",
                    token_columns!(),
                    " FROM api_tokens WHERE tenant = $1 ORDER BY created_at, id"
                ))
                .bind(t)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    token_columns!(),
                    " FROM api_tokens ORDER BY created_at, id"
                ))
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(|e| self.err(e, "listing API tokens"))?;
        rows.iter()
            .map(StoredToken::from_row)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e, "listing API tokens"))
    }

    /// Load a key with its versions and handles (through the read cache: see [`cache`]).
    pub async fn load_key(&self, name: &KeyName) -> Result<Option<StoredKey>> {
        self.load_key_cached(name, false).await
    }

    /// [`load_key`](Self::load_key) for a key that usually does not exist (a signing key's
    /// post-quantum partner, looked up on every signature and verification): its absence is
    /// cached too, for [`cache::TTL`] at most. A key created through this process is seen at
    /// once (its commit invalidates the entry); one created on another node sharing the database,
    /// within the TTL.
    pub async fn load_key_or_known_absent(&self, name: &KeyName) -> Result<Option<StoredKey>> {
        self.load_key_cached(name, true).await
    }

    async fn load_key_cached(
        &self,
        name: &KeyName,
        remember_absent: bool,
    ) -> Result<Option<StoredKey>> {
        let k = name.to_string();
        let (hit, generation) = self.keys.get(&k);
        match hit {
            Some(Some(key)) => return Ok(Some(key)),
            Some(None) if remember_absent => return Ok(None),
            _ => {}
        }
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| self.err(e, "reading a key"))?;
        let loaded = self.load_key_on(&mut conn, name).await?;
        if loaded.is_some() || remember_absent {
            self.keys.put(&k, loaded.clone(), generation);
        }
        Ok(loaded)
    }

    /// Every tenant's keys whose name starts with `prefix`: [`list_keys_of`](Self::list_keys_of)
    /// for the all-tenant operator (backups, migration, the destruction scheduler).
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<StoredKey>> {
        self.list_keys_of(None, prefix).await
    }

    /// The keys of `tenant` (every tenant's with `None`) whose name starts with `prefix`,
    /// ordered by name, with their versions and without handles.
    ///
    /// The tenant is part of the query, a range of the `(customer, name)` index: what a listing
    /// reads, and so how long it takes, depends on that tenant's keys only. A prefix alone
    /// would not do: names are `purpose:customer:name`, so another tenant's keys can share it.
    pub async fn list_keys_of(&self, tenant: Option<&str>, prefix: &str) -> Result<Vec<StoredKey>> {
        let pattern = format!("{}%", sql::like_escape(prefix));
        let rows = match tenant {
            Some(t) => {
                sqlx::query(LIST_KEYS_OF_TENANT)
                    .bind(t)
                    .bind(pattern)
                    .fetch_all(&self.pool)
                    .await
            }
            None => {
                sqlx::query(LIST_KEYS)
                    .bind(pattern)
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(|e| self.err(e, "listing keys"))?;
        // One row per version, ordered by key name: a key's rows are adjacent.
        let mut out: Vec<StoredKey> = Vec::new();
        for row in &rows {
            let name: String = row
                .try_get("name")
                .map_err(|e| self.err(e, "listing keys"))?;
            let same = out.last().is_some_and(|k| k.meta.name.to_string() == name);
            if !same {
                out.push(StoredKey {
                    meta: self.key_from_row(row)?,
                    versions: Vec::new(),
                });
            }
            let version: Option<i64> = row
                .try_get("version")
                .map_err(|e| self.err(e, "listing key versions"))?;
            if version.is_some()
                && let Some(key) = out.last_mut()
            {
                key.versions.push(StoredVersion {
                    info: self.version_from_row(row, VERSION_COLUMNS_OF_LISTING)?,
                    handle: None,
                });
            }
        }
        Ok(out)
    }

    /// Load a key on `conn` (the pool's, or a write transaction's).
    pub(crate) async fn load_key_on(
        &self,
        conn: &mut sqlx::AnyConnection,
        name: &KeyName,
    ) -> Result<Option<StoredKey>> {
        let Some(row) = sqlx::query(concat!(
            "SELECT ",
            key_columns!(),
            " FROM keys WHERE name = $1"
        ))
        .bind(name.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| self.err(e, &format!("reading key {name}")))?
        else {
            return Ok(None);
        };
        let meta = self.key_from_row(&row)?;
        let rows = sqlx::query(
            "SELECT v.version, v.state, v.created_at, v.public_key, m.handle FROM key_versions v \
             LEFT JOIN key_material m ON m.key_name = v.key_name AND m.version = v.version \
             WHERE v.key_name = $1 ORDER BY v.version",
        )
        .bind(name.to_string())
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| self.err(e, &format!("reading versions of {name}")))?;
        let mut versions = Vec::with_capacity(rows.len());
        for r in &rows {
            let info = self.version_from_row(r, crate::rows::VERSION_COLUMNS)?;
            let handle: Option<Vec<u8>> = r
                .try_get("handle")
                .map_err(|e| self.err(e, "reading key material"))?;
            versions.push(StoredVersion {
                info,
                handle: handle.map(KeyHandle::new),
            });
        }
        Ok(Some(StoredKey { meta, versions }))
    }

    /// A ticket for a commit that has just returned.
    pub(crate) fn pending(&self) -> Pending {
        match &self.wal {
            Some(wal) => wal.committed(),
            None => Pending::done(),
        }
    }

    /// Erase what was deleted from every file of an SQLite store: checkpoint the whole WAL into
    /// the database, whose pages the deleting transaction overwrote (`secure_delete`), and cut
    /// the WAL to nothing, so no older copy of a page survives in it. On PostgreSQL it does
    /// nothing: see docs/operations.md for what erasing takes there.
    pub(crate) async fn scrub(&self) -> Result<()> {
        let Some(wal) = &self.wal else {
            return Ok(());
        };
        let wal = wal.clone();
        tokio::task::spawn_blocking(move || wal.scrub())
            .await
            .map_err(|_| Error::internal("the scrub task stopped"))?
    }

    /// A sqlx error while `doing`; remembers an unreachable database.
    pub(crate) fn err(&self, e: sqlx::Error, doing: &str) -> Error {
        let e = db_error(e, &format!("{doing} (store {})", self.location));
        if e.kind() == ErrorKind::Unavailable {
            self.unreachable.store(true, Ordering::Relaxed);
        }
        e
    }

    pub(crate) fn corrupt(&self, what: &str) -> Error {
        damaged(&self.location, what)
    }
}

/// A tenant's keys with a name prefix (`$1` tenant, `$2` LIKE pattern), one row per version.
/// The filter on `customer` is what keeps another tenant's keys out of the scan: see
/// [`Store::list_keys_of`].
pub(crate) const LIST_KEYS_OF_TENANT: &str = concat!(
    "SELECT k.name, k.purpose, k.customer, k.short_name, k.algorithm, k.origin, k.provider, ",
    "k.state, k.primary_version, k.rotation_period_s, k.created_at, k.rotated_at, k.destroy_at, ",
    "v.version, v.state AS version_state, v.created_at AS version_created_at, v.public_key ",
    "FROM keys k LEFT JOIN key_versions v ON v.key_name = k.name ",
    "WHERE k.customer = $1 AND k.name LIKE $2 ESCAPE '\\' ORDER BY k.name, v.version"
);

/// Every tenant's keys with a name prefix (`$1` LIKE pattern), one row per version.
const LIST_KEYS: &str = concat!(
    "SELECT k.name, k.purpose, k.customer, k.short_name, k.algorithm, k.origin, k.provider, ",
    "k.state, k.primary_version, k.rotation_period_s, k.created_at, k.rotated_at, k.destroy_at, ",
    "v.version, v.state AS version_state, v.created_at AS version_created_at, v.public_key ",
    "FROM keys k LEFT JOIN key_versions v ON v.key_name = k.name ",
    "WHERE k.name LIKE $1 ESCAPE '\\' ORDER BY k.name, v.version"
);

/// Where a listing row holds its version's columns.
const VERSION_COLUMNS_OF_LISTING: crate::rows::VersionColumns = crate::rows::VersionColumns {
    state: "version_state",
    created_at: "version_created_at",
};

/// Per-connection settings.
async fn prepare_connection(
    backend: Backend,
    conn: &mut sqlx::AnyConnection,
) -> Result<(), sqlx::Error> {
    if backend == Backend::Sqlite {
        // The first query also reads the file header, so a file that is not a database fails
        // here.
        sqlx::raw_sql(sqlite::POOL_PRAGMAS)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use hanzo_kms_core::{Algorithm, KeyMeta, KeyState, KeyVersion, Origin, Purpose};

    use super::*;
    use crate::AuditEvent;

    async fn store(dir: &Path) -> Store {
        let s = Store::connect(&Store::sqlite_url(dir), Separator::default(), true)
            .await
            .unwrap();
        s.migrate().await.unwrap();
        s
    }

    /// Create `count` keys of `tenant` named `data:TENANT:PREFIXn`, each with one version.
    async fn keys(s: &Store, tenant: &str, prefix: &str, count: usize) {
        let mut tx = s.begin_write().await.unwrap();
        for i in 0..count {
            let name =
                KeyName::new(Purpose::Data, tenant, &format!("{prefix}{i}"), s.separator).unwrap();
            tx.insert_key(&KeyMeta {
                name: name.clone(),
                algorithm: Algorithm::Aes256Gcm,
                origin: Origin::Software,
                provider: "software".into(),
                state: KeyState::Enabled,
                primary_version: 1,
                rotation_period_secs: None,
                created_at: 1,
                rotated_at: 1,
                destroy_at: None,
            })
            .await
            .unwrap();
            let v = KeyVersion {
                version: 1,
                state: KeyState::Enabled,
                created_at: 2,
                public_key: Some(vec![7; 4]),
            };
            tx.insert_version(&name, &v, "software", &KeyHandle::new(vec![1; 8]))
                .await
                .unwrap();
        }
        let ev = AuditEvent {
            time_ms: 1,
            request_id: "r".into(),
            principal: "local:test".into(),
            tenant: "*".into(),
            operation: "key.create".into(),
            key_name: None,
            key_version: None,
            outcome: "ok".into(),
            reason: None,
            peer: None,
            detail: None,
        };
        tx.commit(&[ev]).await.unwrap();
    }

    /// SQLite's count of virtual-machine steps for one run of the tenant listing, and its rows:
    /// what the query reads, independent of timing.
    fn steps_of_listing(db: &Path, tenant: &str, pattern: &str) -> (i32, usize) {
        let c = rusqlite::Connection::open(db).unwrap();
        let mut st = c.prepare(LIST_KEYS_OF_TENANT).unwrap();
        let rows = st.query_map((tenant, pattern), |_| Ok(())).unwrap().count();
        (st.get_status(rusqlite::StatementStatus::VmStep), rows)
    }

    /// A listing by one tenant reads none of another tenant's keys that match its prefix, so
    /// its cost tells nothing about them: the same number of steps with 10 or 2,000 of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tenant_listing_reads_no_other_tenant_keys() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kms.db");
        let s = store(dir.path()).await;
        keys(&s, "beta", "own", 3).await;
        keys(&s, "acme", "k", 10).await;

        // What the method returns: the tenant's own keys only, with their versions.
        let beta = s.list_keys_of(Some("beta"), "").await.unwrap();
        let names: Vec<String> = beta.iter().map(|k| k.meta.name.to_string()).collect();
        assert_eq!(
            names,
            ["data:beta:own0", "data:beta:own1", "data:beta:own2"]
        );
        assert!(beta.iter().all(|k| k.versions.len() == 1
            && k.versions[0].info.created_at == 2
            && k.versions[0].info.public_key.as_deref() == Some(&[7; 4][..])
            && k.versions[0].handle.is_none()));
        assert!(
            s.list_keys_of(Some("beta"), "data:acme:")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.list_keys_of(Some("acme"), "data:acme:k1")
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(s.list_keys("").await.unwrap().len(), 13);
        // The prefix is literal: `_` and `%` match only themselves.
        assert!(
            s.list_keys_of(Some("acme"), "data:acme:_")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(s.list_keys_of(None, "%").await.unwrap().is_empty());

        let few = steps_of_listing(&db, "beta", "data:acme:%");
        assert_eq!(few.1, 0);
        keys(&s, "acme", "m", 1990).await;
        let many = steps_of_listing(&db, "beta", "data:acme:%");
        assert_eq!(
            few, many,
            "tenant beta's listing read tenant acme's keys (VM steps with 10 and 2,000 of them)"
        );
        // The measure sees rows read: listing acme's own keys, or all tenants', costs more.
        assert!(steps_of_listing(&db, "acme", "data:acme:%").0 > many.0 * 100);

        // The plan is a search of the tenant's range of the (customer, name) index.
        let c = rusqlite::Connection::open(&db).unwrap();
        let plan: Vec<String> = c
            .prepare(&format!("EXPLAIN QUERY PLAN {LIST_KEYS_OF_TENANT}"))
            .unwrap()
            .query_map(("beta", "data:acme:%"), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX keys_customer_name (customer=?")),
            "{plan:?}"
        );
    }

    /// On PostgreSQL too, the tenant listing is a search of the `(customer, name)` index, and
    /// answers the same as on SQLite. (PostgreSQL needs no erasing in the store: destroying
    /// deletes the row, and the rest is the database's; docs/operations.md.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tenant_listing_on_postgres_searches_the_tenant_index() {
        let pg = hanzo_kms_testkit::Postgres::start();
        let s = Store::connect(&pg.create_database("listing"), Separator::default(), true)
            .await
            .unwrap();
        s.migrate().await.unwrap();
        s.migrate().await.unwrap();
        keys(&s, "beta", "own", 3).await;
        keys(&s, "acme", "k", 2000).await;
        sqlx::raw_sql("ANALYZE keys")
            .execute(&s.pool)
            .await
            .unwrap();
        let names: Vec<String> = s
            .list_keys_of(Some("beta"), "")
            .await
            .unwrap()
            .iter()
            .map(|k| k.meta.name.to_string())
            .collect();
        assert_eq!(
            names,
            ["data:beta:own0", "data:beta:own1", "data:beta:own2"]
        );
        assert!(
            s.list_keys_of(Some("beta"), "data:acme:")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.list_keys_of(Some("acme"), "data:acme:k19")
                .await
                .unwrap()
                .len(),
            111
        );
        let plan: Vec<String> = sqlx::query_scalar::<Any, String>(sqlx::AssertSqlSafe(format!(
            "EXPLAIN {}",
            LIST_KEYS_OF_TENANT
                .replace("$1", "'beta'")
                .replace("$2", "'data:acme:%'")
        )))
        .fetch_all(&s.pool)
        .await
        .unwrap();
        assert!(
            plan.iter().any(|l| l.contains("keys_customer_name")),
            "{plan:#?}"
        );
        assert!(
            !plan.iter().any(|l| l.contains("Seq Scan on keys")),
            "{plan:#?}"
        );
        // Erasing is SQLite's: here a destroy deletes the row and commits.
        let name = KeyName::new(Purpose::Data, "beta", "own0", s.separator).unwrap();
        let mut tx = s.begin_write().await.unwrap();
        tx.delete_material(&name, 1).await.unwrap();
        tx.commit(&[crate::audit::tests::ev("key.destroy")])
            .await
            .unwrap();
        let key = s.load_key(&name).await.unwrap().unwrap();
        assert!(key.versions[0].handle.is_none());
    }
}
