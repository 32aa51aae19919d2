//! Hanzo KMS storage: one sqlx code path over SQLite (the embedded default) and PostgreSQL (HA).
//!
//! Every query is written once, with `$n` placeholders, and runs on both engines through sqlx's
//! `Any` driver. Only the migration files differ (BLOB vs BYTEA).
//!
//! Every state change goes through a [`WriteTx`], which can only be committed together with its
//! audit records: [`WriteTx::commit`] appends them to the hash chain in the same transaction. A
//! write transaction starts by updating the single-row chain head, which takes the write lock
//! first (SQLite) or the row lock (PostgreSQL), so concurrent writers queue and the audit chain
//! never forks.

#![forbid(unsafe_code)]

pub mod audit;
pub mod batch;
pub mod cache;
mod durable;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hanzo_kms_core::{
    Algorithm, Error, ErrorKind, KeyHandle, KeyMeta, KeyName, KeyState, KeyVersion, Origin,
    Purpose, Result, Separator,
};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Connection, Row, Transaction};

pub use audit::{AuditEvent, AuditRecord, AuditReport};
pub use batch::{BatchQuery, BatchReads, BatchWriter, BatchWrites, ConsumeRow};
pub use durable::Pending;

/// The store's format marker, written at init.
pub const STORE_FORMAT: &str = "hanzo-kms-store/1";

/// Migrations, in order: (version, SQLite text, PostgreSQL text).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        include_str!("../migrations/sqlite/0001_init.sql"),
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        include_str!("../migrations/sqlite/0002_consumed.sql"),
        include_str!("../migrations/postgres/0002_consumed.sql"),
    ),
    (
        3,
        include_str!("../migrations/sqlite/0003_tokens.sql"),
        include_str!("../migrations/postgres/0003_tokens.sql"),
    ),
];

/// The PostgreSQL advisory lock taken while migrating ("hanzo-km" in ASCII).
const MIGRATION_LOCK: i64 = 0x68616e7a6f2d6b6d;

/// Which engine a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A key with its versions.
#[derive(Clone, Debug)]
pub struct StoredKey {
    pub meta: KeyMeta,
    pub versions: Vec<StoredVersion>,
}

/// One API token as stored: never the token itself, only a MAC of its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredToken {
    pub id: String,
    pub tenant: String,
    /// Role names, in order.
    pub roles: Vec<String>,
    /// Key-name patterns (`model:acme:*`); empty means every key of the tenant.
    pub patterns: Vec<String>,
    pub mac: Vec<u8>,
    pub description: String,
    pub created_at: i64,
    pub created_by: String,
    pub revoked_at: Option<i64>,
}

impl StoredToken {
    fn from_row(r: &sqlx::any::AnyRow) -> std::result::Result<Self, sqlx::Error> {
        let split = |s: String| -> Vec<String> {
            s.split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        };
        Ok(Self {
            id: r.try_get("id")?,
            tenant: r.try_get("tenant")?,
            roles: split(r.try_get("roles")?),
            patterns: split(r.try_get("patterns")?),
            mac: r.try_get("mac")?,
            description: r.try_get("description")?,
            created_at: r.try_get("created_at")?,
            created_by: r.try_get("created_by")?,
            revoked_at: r.try_get("revoked_at")?,
        })
    }
}

/// One nonce record for [`WriteTx::insert_nonces`].
#[derive(Clone, Copy, Debug)]
pub struct NonceRow<'a> {
    pub key: &'a str,
    pub nonce: &'a [u8],
    pub digest: &'a [u8],
    pub signature: Option<&'a [u8]>,
}

/// Audit records per INSERT statement (13 parameters each; SQLite allows 32766, PostgreSQL 65535).
const AUDIT_ROWS_PER_INSERT: usize = 256;

/// The columns of `api_tokens`, as a literal (sqlx takes only literal SQL).
macro_rules! token_columns {
    () => {
        "id, tenant, roles, patterns, mac, description, created_at, created_by, revoked_at"
    };
}

impl StoredKey {
    pub fn version(&self, v: u32) -> Option<&StoredVersion> {
        self.versions.iter().find(|x| x.info.version == v)
    }

    pub fn primary(&self) -> Option<&StoredVersion> {
        self.version(self.meta.primary_version)
    }
}

/// One version, with its provider handle unless destroyed.
#[derive(Clone, Debug)]
pub struct StoredVersion {
    pub info: KeyVersion,
    pub handle: Option<KeyHandle>,
}

/// A connection pool to the store.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    separator: Separator,
    location: String,
    keys: Arc<cache::Cache<StoredKey>>,
    tokens: Arc<cache::Cache<StoredToken>>,
    /// Set when the last store operation found the database unreachable; cleared by the next
    /// transaction that starts. See [`Store::unreachable`].
    unreachable: Arc<std::sync::atomic::AtomicBool>,
    /// SQLite: makes commits durable by syncing the WAL (see [`durable`]).
    wal: Option<Arc<durable::WalSync>>,
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
            (Backend::Postgres, url.to_owned(), redacted)
        } else {
            return Err(Error::new(
                ErrorKind::Config,
                "storage.url must be sqlite:PATH or postgres://…",
            ));
        };
        // One direct connection first: a corrupt file or an unreachable server then reports its
        // own error at once, instead of a pool time-out after retries.
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
        let wal = (backend == Backend::Sqlite).then(|| Arc::new(durable::WalSync::new(&location)));
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

    /// Placeholder `n` (1-based) for SQL built with many parameters: `$n` on PostgreSQL, `?` on
    /// SQLite. SQLite looks a named parameter up by a linear scan of all names, so thousands of
    /// `$n` in one multi-row statement cost O(n²) (measured: 30 % of the CPU of a batch of
    /// 256 signatures); anonymous `?` are numbered in order and cost nothing to bind.
    fn placeholder(&self, n: usize) -> String {
        match self.backend {
            Backend::Sqlite => "?".to_owned(),
            _ => format!("${n}"),
        }
    }

    /// Where the store is (a path, or the URL with its password redacted).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Close the pool, letting SQLite checkpoint its WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the schema exists at all (false for a fresh, empty database).
    pub async fn is_initialized(&self) -> Result<bool> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'meta'"
            }
        };
        let n: i64 = sqlx::query_scalar::<Any, i64>(sql)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e, "reading the schema"))?;
        Ok(n > 0)
    }

    /// Apply pending migrations. Refuses a store newer than this binary.
    pub async fn migrate(&self) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| self.err(e, "migrating"))?;
        if self.backend == Backend::Postgres {
            // Nodes starting together on one database migrate one at a time; the lock ends
            // with the transaction. (SQLite's write lock does the same.)
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e, "migrating"))?;
        }
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e, "migrating"))?;
        let current: i64 =
            sqlx::query_scalar::<Any, i64>("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.err(e, "migrating"))?;
        let newest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        if current > newest {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "the store at {} has schema version {current}, newer than this hanzo-kms understands ({newest}); upgrade hanzo-kms",
                    self.location
                ),
            ));
        }
        for (version, sqlite, postgres) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            let sql = match self.backend {
                Backend::Sqlite => *sqlite,
                Backend::Postgres => *postgres,
            };
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e, &format!("applying migration {version}")))?;
            sqlx::query("INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(now_secs())
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e, "migrating"))?;
        }
        tx.commit().await.map_err(|e| self.err(e, "migrating"))?;
        self.pending().durable().await
    }

    /// A ticket for a commit that has just returned.
    fn pending(&self) -> Pending {
        match &self.wal {
            Some(wal) => wal.committed(),
            None => Pending::done(),
        }
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
        if hit.is_some() {
            return Ok(hit);
        }
        let t = self.token_uncached(id).await?;
        if let Some(t) = &t {
            self.tokens.put(id, t.clone(), generation);
        }
        Ok(t)
    }

    async fn token_uncached(&self, id: &str) -> Result<Option<StoredToken>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            token_columns!(),
            " FROM api_tokens WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.err(e, "reading an API token"))?;
        row.as_ref()
            .map(StoredToken::from_row)
            .transpose()
            .map_err(|e| self.err(e, "reading an API token"))
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
        self.unreachable
            .store(false, std::sync::atomic::Ordering::Relaxed);
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
        })
    }

    /// Load a key with its versions and handles (through the read cache: see [`cache`]).
    pub async fn load_key(&self, name: &KeyName) -> Result<Option<StoredKey>> {
        let k = name.to_string();
        let (hit, generation) = self.keys.get(&k);
        if hit.is_some() {
            return Ok(hit);
        }
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| self.err(e, "reading a key"))?;
        let loaded = load_key_on(self, &mut conn, name).await?;
        if let Some(key) = &loaded {
            self.keys.put(&k, key.clone(), generation);
        }
        Ok(loaded)
    }

    /// Keys whose name starts with `prefix`, ordered by name, without handles.
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<StoredKey>> {
        let pattern = format!("{}%", like_escape(prefix));
        let rows = sqlx::query(key_select("name LIKE $1 ESCAPE '\\' ORDER BY name"))
            .bind(pattern)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e, "listing keys"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let meta = self.key_from_row(&row)?;
            let versions = sqlx::query(
                "SELECT version, state, created_at, public_key FROM key_versions WHERE key_name = $1 ORDER BY version",
            )
            .bind(meta.name.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e, "listing key versions"))?
            .iter()
            .map(|r| self.version_from_row(r).map(|info| StoredVersion { info, handle: None }))
            .collect::<Result<Vec<_>>>()?;
            out.push(StoredKey { meta, versions });
        }
        Ok(out)
    }

    /// Audit records with `seq > after`, oldest first, at most `limit`.
    pub async fn audit_records(&self, after: u64, limit: u32) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT seq, time_ms, request_id, principal, tenant, operation, key_name, key_version, \
             outcome, reason, peer, prev_hash, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        // Sequence numbers are positive i64s: a position past i64::MAX is past every record
        // (a plain cast would wrap it to a negative number, the start of the log).
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e, "reading the audit log"))?;
        rows.iter().map(|r| self.audit_from_row(r)).collect()
    }

    /// Recompute the whole chain and compare it with the stored hashes and the chain head.
    ///
    /// Every record is checked, then the head is read. A live server may append meanwhile: a
    /// head past the last record checked sends the check on to the new records, so appends are
    /// never taken for records deleted from the end, and a head behind the records (rewound or
    /// reset) is reported.
    pub async fn verify_audit(&self) -> Result<AuditReport> {
        let mut expected_seq = 1u64;
        let mut prev = [0u8; 32];
        loop {
            loop {
                let batch = self.audit_records(expected_seq - 1, 1000).await?;
                if batch.is_empty() {
                    break;
                }
                for r in &batch {
                    let fail = |what: &str| AuditReport {
                        records: expected_seq - 1,
                        problem: Some((r.seq, what.to_owned())),
                        head: prev,
                    };
                    if r.seq != expected_seq {
                        return Ok(fail(&format!(
                            "expected record {expected_seq} but found {}: a record was deleted or reordered",
                            r.seq
                        )));
                    }
                    if r.prev_hash != prev {
                        return Ok(fail(
                            "its previous-hash does not match the record before it",
                        ));
                    }
                    if audit::chain_hash(&prev, r.seq, &r.event) != r.hash {
                        return Ok(fail(
                            "its contents do not match its hash: the record was edited",
                        ));
                    }
                    prev = r.hash;
                    expected_seq += 1;
                }
            }
            let records = expected_seq - 1;
            let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.err(e, "reading the audit chain head"))?
                .ok_or_else(|| self.corrupt("the audit chain head is missing"))?;
            let (head_seq, head_hash) = self.head_of(&row)?;
            let problem = |at: u64, what: String| AuditReport {
                records,
                problem: Some((at, what)),
                head: prev,
            };
            match u64::try_from(head_seq) {
                // Appended while the log was read: check those too.
                Ok(h) if h > records => {
                    // A head past records that never appear is a cut end: the next pass finds
                    // no new record and reports it.
                    let more = self.audit_records(records, 1).await?;
                    if more.is_empty() {
                        return Ok(problem(
                            records + 1,
                            format!(
                                "the chain head says {h} records but the log ends at {records}: records were deleted from the end"
                            ),
                        ));
                    }
                    continue;
                }
                Ok(h) if h == records => {
                    if parse_hash(&head_hash) != Some(prev) {
                        return Ok(problem(
                            records,
                            "the chain head's hash does not match the last record: the log's end was replaced"
                                .to_owned(),
                        ));
                    }
                    return Ok(AuditReport {
                        records,
                        problem: None,
                        head: prev,
                    });
                }
                _ => {
                    return Ok(problem(
                        records,
                        format!(
                            "the chain head says {head_seq} records but the log holds {records}: the head was rewound"
                        ),
                    ));
                }
            }
        }
    }

    /// The `(seq, hash)` of an `audit_head` row.
    fn head_of(&self, row: &AnyRow) -> Result<(i64, String)> {
        let e = |e| self.err(e, "reading the audit chain head");
        Ok((row.try_get(0).map_err(e)?, row.try_get(1).map_err(e)?))
    }

    fn err(&self, e: sqlx::Error, doing: &str) -> Error {
        let e = db_error(e, &format!("{doing} (store {})", self.location));
        if e.kind() == ErrorKind::Unavailable {
            self.unreachable
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        e
    }

    /// Whether the database was unreachable at the last attempt (PostgreSQL down or cut off).
    /// A request that failed for that reason cannot be audited either, so the service does not
    /// spend another connection time-out trying.
    pub fn unreachable(&self) -> bool {
        self.unreachable.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn corrupt(&self, what: &str) -> Error {
        damaged(&self.location, what)
    }

    fn key_from_row(&self, row: &AnyRow) -> Result<KeyMeta> {
        let get_s = |c: &str| -> Result<String> {
            row.try_get::<String, _>(c)
                .map_err(|e| self.err(e, "reading a key"))
        };
        let get_i = |c: &str| -> Result<i64> {
            row.try_get::<i64, _>(c)
                .map_err(|e| self.err(e, "reading a key"))
        };
        let get_oi = |c: &str| -> Result<Option<i64>> {
            row.try_get::<Option<i64>, _>(c)
                .map_err(|e| self.err(e, "reading a key"))
        };
        let bad = |what: &str, e: Error| self.corrupt(&format!("{what}: {}", e.message()));
        let purpose = Purpose::from_str(&get_s("purpose")?).map_err(|e| bad("key purpose", e))?;
        let name = KeyName::new(
            purpose,
            &get_s("customer")?,
            &get_s("short_name")?,
            self.separator,
        )
        .map_err(|e| bad("key name", e))?;
        Ok(KeyMeta {
            algorithm: Algorithm::from_str(&get_s("algorithm")?)
                .map_err(|e| bad("key algorithm", e))?,
            origin: Origin::from_str(&get_s("origin")?).map_err(|e| bad("key origin", e))?,
            provider: get_s("provider")?,
            state: KeyState::from_str(&get_s("state")?).map_err(|e| bad("key state", e))?,
            primary_version: u32::try_from(get_i("primary_version")?)
                .map_err(|_| self.corrupt("bad primary version"))?,
            rotation_period_secs: get_oi("rotation_period_s")?,
            created_at: get_i("created_at")?,
            rotated_at: get_i("rotated_at")?,
            destroy_at: get_oi("destroy_at")?,
            name,
        })
    }

    fn version_from_row(&self, row: &AnyRow) -> Result<KeyVersion> {
        let e = |e| self.err(e, "reading a key version");
        Ok(KeyVersion {
            version: u32::try_from(row.try_get::<i64, _>("version").map_err(e)?)
                .map_err(|_| self.corrupt("bad version number"))?,
            state: KeyState::from_str(&row.try_get::<String, _>("state").map_err(e)?)
                .map_err(|x| self.corrupt(&format!("version state: {}", x.message())))?,
            created_at: row.try_get("created_at").map_err(e)?,
            public_key: row.try_get::<Option<Vec<u8>>, _>("public_key").map_err(e)?,
        })
    }

    fn audit_from_row(&self, row: &AnyRow) -> Result<AuditRecord> {
        let e = |e| self.err(e, "reading an audit record");
        let seq: i64 = row.try_get("seq").map_err(e)?;
        let version: Option<i64> = row.try_get("key_version").map_err(e)?;
        let hash_of = |c: &str| -> Result<[u8; 32]> {
            let s: String = row.try_get(c).map_err(e)?;
            parse_hash(&s)
                .ok_or_else(|| self.corrupt(&format!("audit record {seq} has a malformed {c}")))
        };
        Ok(AuditRecord {
            seq: seq as u64,
            event: AuditEvent {
                time_ms: row.try_get("time_ms").map_err(e)?,
                request_id: row.try_get("request_id").map_err(e)?,
                principal: row.try_get("principal").map_err(e)?,
                tenant: row.try_get("tenant").map_err(e)?,
                operation: row.try_get("operation").map_err(e)?,
                key_name: row.try_get("key_name").map_err(e)?,
                key_version: version.and_then(|v| u32::try_from(v).ok()),
                outcome: row.try_get("outcome").map_err(e)?,
                reason: row.try_get("reason").map_err(e)?,
                peer: row.try_get("peer").map_err(e)?,
            },
            prev_hash: hash_of("prev_hash")?,
            hash: hash_of("hash")?,
        })
    }
}

const KEY_COLUMNS: &str = "name, purpose, customer, short_name, algorithm, origin, provider, state, \
     primary_version, rotation_period_s, created_at, rotated_at, destroy_at";

fn key_select(filter: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM keys WHERE {filter}"))
}

async fn load_key_on(
    store: &Store,
    conn: &mut sqlx::AnyConnection,
    name: &KeyName,
) -> Result<Option<StoredKey>> {
    let Some(row) = sqlx::query(key_select("name = $1"))
        .bind(name.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| store.err(e, &format!("reading key {name}")))?
    else {
        return Ok(None);
    };
    let meta = store.key_from_row(&row)?;
    let rows = sqlx::query(
        "SELECT v.version, v.state, v.created_at, v.public_key, m.handle FROM key_versions v \
         LEFT JOIN key_material m ON m.key_name = v.key_name AND m.version = v.version \
         WHERE v.key_name = $1 ORDER BY v.version",
    )
    .bind(name.to_string())
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| store.err(e, &format!("reading versions of {name}")))?;
    let mut versions = Vec::with_capacity(rows.len());
    for r in &rows {
        let info = store.version_from_row(r)?;
        let handle: Option<Vec<u8>> = r
            .try_get("handle")
            .map_err(|e| store.err(e, "reading key material"))?;
        versions.push(StoredVersion {
            info,
            handle: handle.map(KeyHandle::new),
        });
    }
    Ok(Some(StoredKey { meta, versions }))
}

/// A write transaction that commits only together with its audit records.
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    store: Store,
    head_seq: u64,
    head_hash: [u8; 32],
    /// Keys and tokens this transaction changed: dropped from the read cache at commit.
    touched_keys: Vec<String>,
    touched_tokens: Vec<String>,
}

impl WriteTx {
    /// Load a key inside this transaction (after the write lock is held).
    pub async fn load_key(&mut self, name: &KeyName) -> Result<Option<StoredKey>> {
        let store = self.store.clone();
        load_key_on(&store, &mut self.tx, name).await
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

    /// Insert a new key. A duplicate name is [`ErrorKind::AlreadyExists`].
    pub async fn insert_key(&mut self, m: &KeyMeta) -> Result<()> {
        sqlx::query(
            "INSERT INTO keys (name, purpose, customer, short_name, algorithm, origin, provider, state, \
             primary_version, rotation_period_s, created_at, rotated_at, destroy_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
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
            x if x.kind() == ErrorKind::AlreadyExists => {
                Error::new(ErrorKind::AlreadyExists, format!("key {} already exists", m.name))
            }
            x => x.context(format!("creating key {} (store {})", m.name, self.store.location)),
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

    /// Replace one version's material with a handle of another provider (migration).
    pub async fn replace_material(
        &mut self,
        name: &KeyName,
        version: u32,
        provider: &str,
        handle: &KeyHandle,
    ) -> Result<()> {
        self.touched_keys.push(name.to_string());
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

    /// Delete a version's material (its handle). The version row stays.
    pub async fn delete_material(&mut self, name: &KeyName, version: u32) -> Result<()> {
        self.touched_keys.push(name.to_string());
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
        sqlx::query(concat!(
            "INSERT INTO api_tokens (",
            token_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
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

    /// The message digest and signature recorded for `(key, nonce)`, if any.
    pub async fn nonce_record(
        &mut self,
        key: &str,
        nonce: &[u8],
    ) -> Result<Option<(Vec<u8>, Option<Vec<u8>>)>> {
        let row = sqlx::query(
            "SELECT message_digest, signature FROM used_nonces WHERE key_name = $1 AND nonce = $2",
        )
        .bind(key)
        .bind(nonce.to_vec())
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(|e| self.store.err(e, "reading the replay guard"))?;
        match row {
            None => Ok(None),
            Some(r) => {
                let d: Vec<u8> = r
                    .try_get(0)
                    .map_err(|e| self.store.err(e, "reading the replay guard"))?;
                let s: Option<Vec<u8>> = r
                    .try_get(1)
                    .map_err(|e| self.store.err(e, "reading the replay guard"))?;
                Ok(Some((d, s)))
            }
        }
    }

    /// Record many `(key, nonce, digest, signature)` at once (multi-row inserts). A duplicate
    /// fails the statement, like [`WriteTx::insert_nonce`].
    pub async fn insert_nonces(&mut self, rows: &[NonceRow<'_>], now: i64) -> Result<()> {
        const PER_INSERT: usize = 1000; // 5 parameters each
        for chunk in rows.chunks(PER_INSERT) {
            let mut sql = String::from(
                "INSERT INTO used_nonces (key_name, nonce, message_digest, signature, created_at) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 5;
                if i > 0 {
                    sql.push_str(", ");
                }
                let ph = |k| self.store.placeholder(b + k);
                sql.push_str(&format!(
                    "({}, {}, {}, {}, {})",
                    ph(1),
                    ph(2),
                    ph(3),
                    ph(4),
                    ph(5)
                ));
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(r.key.to_owned())
                    .bind(r.nonce.to_vec())
                    .bind(r.digest.to_vec())
                    .bind(r.signature.map(<[u8]>::to_vec))
                    .bind(now);
            }
            q.execute(&mut *self.tx)
                .await
                .map_err(|e| db_error(e, "recording nonces"))?;
        }
        Ok(())
    }

    /// [`WriteTx::nonce_record`] for many `(key, nonce)` pairs at once (a few statements for a
    /// whole group commit): the pairs found, with their message digest and signature record.
    pub async fn nonce_records(&mut self, pairs: &[(&str, &[u8])]) -> Result<batch::NonceRecords> {
        const PER_SELECT: usize = 400; // 2 parameters each
        let mut found = std::collections::HashMap::new();
        for chunk in pairs.chunks(PER_SELECT) {
            let mut sql = String::from(
                "SELECT key_name, nonce, message_digest, signature FROM used_nonces WHERE ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(" OR ");
                }
                sql.push_str(&format!(
                    "(key_name = ${} AND nonce = ${})",
                    2 * i + 1,
                    2 * i + 2
                ));
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (k, n) in chunk {
                q = q.bind(k.to_string()).bind(n.to_vec());
            }
            let rows = q
                .fetch_all(&mut *self.tx)
                .await
                .map_err(|e| self.store.err(e, "reading the replay guard"))?;
            for r in rows {
                let get = |e| self.store.err(e, "reading the replay guard");
                let k: String = r.try_get(0).map_err(get)?;
                let n: Vec<u8> = r.try_get(1).map_err(get)?;
                let d: Vec<u8> = r.try_get(2).map_err(get)?;
                let sig: Option<Vec<u8>> = r.try_get(3).map_err(get)?;
                found.insert((k, n), (d, sig));
            }
        }
        Ok(found)
    }

    /// Record that `key` signs `digest` under `nonce`. A second record for the same key and
    /// nonce is [`ErrorKind::AlreadyExists`].
    pub async fn insert_nonce(
        &mut self,
        key: &str,
        nonce: &[u8],
        digest: &[u8],
        signature: Option<&[u8]>,
        now: i64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO used_nonces (key_name, nonce, message_digest, signature, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(key)
            .bind(nonce.to_vec())
            .bind(digest.to_vec())
            .bind(signature.map(<[u8]>::to_vec))
            .bind(now)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| db_error(e, "recording a nonce"))?;
        Ok(())
    }

    /// Whether an attestation was already paid for. (Checked before inserting, because a failed
    /// insert aborts a PostgreSQL transaction; the audit-head lock makes the pair race-free.)
    pub async fn attestation_consumed(&mut self, attestation: &[u8]) -> Result<bool> {
        let n: i64 = sqlx::query_scalar::<Any, i64>(
            "SELECT COUNT(*) FROM consumed_attestations WHERE attestation_digest = $1",
        )
        .bind(attestation.to_vec())
        .fetch_one(&mut *self.tx)
        .await
        .map_err(|e| self.store.err(e, "reading consumed attestations"))?;
        Ok(n > 0)
    }

    /// [`WriteTx::attestation_consumed`] for many digests at once: the ones already consumed.
    pub async fn consumed_attestations(
        &mut self,
        digests: &[&[u8]],
    ) -> Result<std::collections::HashSet<Vec<u8>>> {
        const PER_SELECT: usize = 500;
        let mut found = std::collections::HashSet::new();
        for chunk in digests.chunks(PER_SELECT) {
            let mut sql = String::from(
                "SELECT attestation_digest FROM consumed_attestations WHERE attestation_digest IN (",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&self.store.placeholder(i + 1));
            }
            sql.push(')');
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for d in chunk {
                q = q.bind(d.to_vec());
            }
            let rows = q
                .fetch_all(&mut *self.tx)
                .await
                .map_err(|e| self.store.err(e, "reading consumed attestations"))?;
            for r in rows {
                let d: Vec<u8> = r
                    .try_get(0)
                    .map_err(|e| self.store.err(e, "reading consumed attestations"))?;
                found.insert(d);
            }
        }
        Ok(found)
    }

    /// Mark an attestation as paid for. A second time is [`ErrorKind::AlreadyExists`].
    pub async fn consume_attestation(
        &mut self,
        attestation: &[u8],
        settlement_key: &str,
        settlement: &[u8],
        now: i64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO consumed_attestations (attestation_digest, settlement_key, settlement_digest, created_at) VALUES ($1, $2, $3, $4)")
            .bind(attestation.to_vec())
            .bind(settlement_key)
            .bind(settlement.to_vec())
            .bind(now)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| db_error(e, "consuming an attestation"))?;
        Ok(())
    }

    /// Append `events` to the audit chain and commit everything at once, durably. Without at
    /// least one event the transaction is refused: no state change goes unaudited.
    pub async fn commit(self, events: &[AuditEvent]) -> Result<Vec<AuditRecord>> {
        let (records, pending) = self.commit_pending(events).await?;
        pending.durable().await?;
        Ok(records)
    }

    /// [`commit`](Self::commit) without waiting for the disk: the changes are visible to other
    /// transactions at once, and durable when the returned [`Pending`] says so. Nothing that
    /// depends on them may be acknowledged before that (see the `durable` module).
    pub async fn commit_pending(
        mut self,
        events: &[AuditEvent],
    ) -> Result<(Vec<AuditRecord>, Pending)> {
        if events.is_empty() {
            return Err(Error::internal(
                "a write transaction must carry an audit record",
            ));
        }
        let records = audit::chain_from(self.head_seq, self.head_hash, events);
        let (seq, prev) = records
            .last()
            .map_or((self.head_seq, self.head_hash), |r| (r.seq, r.hash));
        // Multi-row inserts: a group commit of hundreds of records costs a few statements, not
        // hundreds. The SQL text is built only from constant fragments and placeholders.
        for chunk in records.chunks(AUDIT_ROWS_PER_INSERT) {
            let mut sql = String::from(
                "INSERT INTO audit_log (seq, time_ms, request_id, principal, tenant, operation, key_name, \
                 key_version, outcome, reason, peer, prev_hash, hash) VALUES ",
            );
            for (i, _) in chunk.iter().enumerate() {
                let b = i * 13;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                for k in 1..=13 {
                    if k > 1 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&self.store.placeholder(b + k));
                }
                sql.push(')');
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                let e = &r.event;
                q = q
                    .bind(r.seq as i64)
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
                    .bind(hex::encode(r.prev_hash))
                    .bind(hex::encode(r.hash));
            }
            q.execute(&mut *self.tx)
                .await
                .map_err(|x| audit_error(self.store.err(x, "appending to the audit log")))?;
        }
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq as i64)
            .bind(hex::encode(prev))
            .execute(&mut *self.tx)
            .await
            .map_err(|x| audit_error(self.store.err(x, "advancing the audit chain head")))?;
        self.tx
            .commit()
            .await
            .map_err(|x| audit_error(self.store.err(x, "committing")))?;
        let pending = self.store.pending();
        self.store.keys.invalidate(&self.touched_keys);
        self.store.tokens.invalidate(&self.touched_tokens);
        Ok((records, pending))
    }
}

/// Per-connection settings.
async fn prepare_connection(
    backend: Backend,
    conn: &mut sqlx::AnyConnection,
) -> Result<(), sqlx::Error> {
    if backend == Backend::Sqlite {
        // NORMAL: a COMMIT does not wait for the disk; the store syncs the WAL itself before
        // a commit counts (see `durable`), so a committed transaction (a nonce record, an audit
        // record) still survives power loss, and one sync serves many commits. WAL lets
        // readers proceed during a write. The first query also reads the file header, so a
        // file that is not a database fails here.
        sqlx::raw_sql(batch::SQLITE_PRAGMAS)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn audit_error(e: Error) -> Error {
    // An unreachable store stays `unavailable` (retryable); the request fails either way.
    let kind = match e.kind() {
        ErrorKind::Unavailable => ErrorKind::Unavailable,
        _ => ErrorKind::AuditFailure,
    };
    Error::new(
        kind,
        format!("the audit log could not be written, so the request was not carried out: {e}"),
    )
}

/// Map a database error to an error kind by its code, never by its text.
fn db_error(e: sqlx::Error, doing: &str) -> Error {
    let kind = match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => ErrorKind::AlreadyExists,
        sqlx::Error::Database(d) => {
            // SQLite primary result codes: 11 SQLITE_CORRUPT, 26 SQLITE_NOTADB; 14 CANTOPEN;
            // 5/6 BUSY/LOCKED. PostgreSQL SQLSTATE classes 08 (connection) and 57 (shutdown).
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.parse::<i64>().ok().map(|c| c & 0xff) {
                Some(11 | 26) => ErrorKind::Corrupt,
                Some(5 | 6 | 14) => ErrorKind::Unavailable,
                _ if code.starts_with("08") || code.starts_with("57") => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    store_error(kind, doing, e)
}

/// A store error of `kind` while `doing`, keeping the driver's error as its source.
fn store_error(
    kind: ErrorKind,
    doing: &str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    let msg = match kind {
        ErrorKind::Corrupt => {
            format!("{doing}: the database is corrupt, truncated or not a Hanzo KMS store")
        }
        _ => doing.to_owned(),
    };
    Error::new(kind, msg).with_source(source)
}

/// The store at `location` holds something this code never writes: `what` says what.
pub(crate) fn damaged(location: &str, what: &str) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("the store at {location} is damaged: {what}"),
    )
}

fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
