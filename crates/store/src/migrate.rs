//! Schema migrations, applied in code at open (without sqlx's macros, which cost about 30 s of
//! clean build). The files for the two engines differ only in BLOB vs BYTEA.

use hanzo_kms_core::{Error, ErrorKind, Result};
use sqlx::Any;

use crate::{Backend, Store};

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
    (
        4,
        include_str!("../migrations/sqlite/0004_keys_by_tenant.sql"),
        include_str!("../migrations/postgres/0004_keys_by_tenant.sql"),
    ),
    (
        5,
        include_str!("../migrations/sqlite/0005_token_expiry.sql"),
        include_str!("../migrations/postgres/0005_token_expiry.sql"),
    ),
    (
        6,
        include_str!("../migrations/sqlite/0006_replay_expiry.sql"),
        include_str!("../migrations/postgres/0006_replay_expiry.sql"),
    ),
    (
        7,
        include_str!("../migrations/sqlite/0007_audit_archive.sql"),
        include_str!("../migrations/postgres/0007_audit_archive.sql"),
    ),
    (
        8,
        include_str!("../migrations/sqlite/0008_compact_audit.sql"),
        include_str!("../migrations/postgres/0008_compact_audit.sql"),
    ),
];

/// The first schema version whose SQLite stores were always written with `secure_delete`. An
/// older store may hold destroyed key material in its free pages, so it is vacuumed once when it
/// is migrated past this version.
const SECURE_DELETE_SINCE: i64 = 4;

/// The migration that converts the audit log's hex hashes to bytes.
const COMPACT_AUDIT: i64 = 8;

/// The PostgreSQL advisory lock taken while migrating ("hanzo-km" in ASCII).
const MIGRATION_LOCK: i64 = 0x68616e7a6f2d6b6d;

impl Store {
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
            if *version == COMPACT_AUDIT {
                self.check_hex_hashes(&mut tx).await?;
            }
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
        self.pending().durable().await?;
        if self.backend == Backend::Sqlite && (1..SECURE_DELETE_SINCE).contains(&current) {
            self.vacuum_once().await?;
        }
        Ok(())
    }

    /// Before schema 8 converts the audit log's hex hashes to bytes: every one must be 64 hex
    /// digits (as every version wrote them). One that is not was written by someone else; the
    /// conversion would fail on it with a bare constraint error, so name the record instead
    /// (the previous version of hanzo-kms can still open the store and `audit verify` it).
    async fn check_hex_hashes(&self, tx: &mut sqlx::Transaction<'_, Any>) -> Result<()> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT MIN(seq) FROM audit_log WHERE length(hash) <> 64 OR unhex(hash) IS NULL \
                 OR seq = (SELECT MIN(seq) FROM audit_log) \
                    AND (length(prev_hash) <> 64 OR unhex(prev_hash) IS NULL)"
            }
            Backend::Postgres => {
                "SELECT MIN(seq) FROM audit_log WHERE hash !~ '^[0-9a-fA-F]{64}$' \
                 OR seq = (SELECT MIN(seq) FROM audit_log) AND prev_hash !~ '^[0-9a-fA-F]{64}$'"
            }
        };
        let bad: Option<i64> = sqlx::query_scalar::<Any, Option<i64>>(sql)
            .fetch_one(&mut **tx)
            .await
            .map_err(|e| self.err(e, "checking the audit log before migration 8"))?;
        match bad {
            None => Ok(()),
            Some(seq) => Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "the store at {}: audit record {seq} has a hash that is not 64 hex digits, so the audit log cannot be converted to schema 8; the store was altered (the previous hanzo-kms can open it and run `audit verify`)",
                    self.location
                ),
            )),
        }
    }

    /// Rewrite an SQLite store written without `secure_delete`, so that nothing deleted before
    /// (destroyed key material above all) survives in its free pages or its WAL. Runs once, when
    /// such a store is migrated; it takes about as long as copying the file.
    async fn vacuum_once(&self) -> Result<()> {
        let started = std::time::Instant::now();
        tracing::info!(store = %self.location, "erasing deleted content left by an earlier version (VACUUM, once)");
        sqlx::raw_sql("VACUUM")
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e, "erasing deleted content (VACUUM)"))?;
        self.scrub().await?;
        tracing::info!(store = %self.location, ms = started.elapsed().as_millis() as u64, "deleted content erased");
        Ok(())
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
