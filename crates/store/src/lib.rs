//! Hanzo KMS storage over SQLite (the embedded default) and PostgreSQL (HA).
//!
//! Every state change goes through a [`WriteTx`], which can only be committed together with its
//! audit records: [`WriteTx::commit`] appends them to the hash chain in the same transaction. A
//! write transaction starts by updating the single-row chain head, which takes the write lock
//! first (SQLite) or the row lock (PostgreSQL), so concurrent writers queue and the audit chain
//! never forks.
//!
//! Queries are written once, with `$n` placeholders (`sql` holds the text that two paths share),
//! and run on both engines through sqlx's `Any` driver. SQLite adds a second path for its hot
//! loop: the group committer runs on a rusqlite connection of its own ([`BatchWriter`]), and the
//! WAL's syncs and checkpoints are the store's own (`sqlite`). The migration files differ only in
//! BLOB vs BYTEA.
//!
//! | module | holds |
//! |---|---|
//! | `store` | [`Store`]: connecting, and every read outside a write transaction |
//! | `tx` | [`WriteTx`]: every state change, and its commit |
//! | `batch` | the group committer's transaction through sqlx |
//! | `rows` | the stored rows as Rust values |
//! | `migrate` | schema migrations |
//! | `prune` | deleting replay records whose messages expired |
//! | `error` | one classifier for both drivers' errors |
//! | `sql` | SQL text shared by the sqlx and rusqlite paths |
//! | [`audit`] | the hash chain, and reading and checking it |
//! | [`cache`] | the short-lived read cache of keys and tokens |
//! | `sqlite` | SQLite's three connections, its WAL syncs and its checkpoints |

#![forbid(unsafe_code)]

pub mod audit;
mod batch;
pub mod cache;
mod error;
mod migrate;
mod prune;
mod rows;
mod sql;
mod sqlite;
mod store;
mod tx;

pub use audit::{AuditEvent, AuditRecord, AuditReport};
pub use batch::{BatchQuery, BatchReads, BatchWrites, ConsumeRow, NonceRecords};
pub use prune::Pruned;
pub use rows::{AuditColumns, NonceRow, StoredKey, StoredToken, StoredVersion, parse_hash};
pub use sqlite::{BatchWriter, Pending};
pub use store::{DiskUsage, Store};
pub use tx::WriteTx;

/// The store's format marker, written at init.
pub const STORE_FORMAT: &str = "hanzo-kms-store/1";

/// Which engine a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}
