//! Replay records that expire (docs/signing.md, "Replay records expire"): a nonce record or a
//! consumed attestation is needed only while the message it covers can still be accepted. Each
//! row carries that moment (`expires_at`); [`WriteTx::prune_replay`] deletes a bounded number of
//! rows past a horizon, so a pass over millions of rows is many short transactions that the
//! group committer interleaves with, never one long one that stalls it.

use hanzo_kms_core::Result;
use sqlx::Any;

use crate::{Store, WriteTx};

/// What one pruning transaction deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Nonce records deleted.
    pub nonces: u64,
    /// Consumed-attestation records deleted.
    pub consumed: u64,
}

impl Pruned {
    /// Whether nothing was deleted.
    pub fn is_empty(&self) -> bool {
        self.nonces == 0 && self.consumed == 0
    }
}

impl WriteTx {
    /// Delete at most `limit` nonce records and at most `limit` consumed-attestation records
    /// whose `expires_at` is before `before` (seconds since the epoch). Rows written before
    /// schema version 6 have none and are kept. Uses the expiry indexes, so a transaction costs
    /// in proportion to `limit`, not to the table.
    pub async fn prune_replay(&mut self, before: i64, limit: i64) -> Result<Pruned> {
        let nonces = sqlx::query(
            "DELETE FROM used_nonces WHERE (key_name, nonce) IN \
             (SELECT key_name, nonce FROM used_nonces WHERE expires_at < $1 LIMIT $2)",
        )
        .bind(before)
        .bind(limit)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| self.store.err(e, "pruning expired nonce records"))?
        .rows_affected();
        let consumed = sqlx::query(
            "DELETE FROM consumed_attestations WHERE attestation_digest IN \
             (SELECT attestation_digest FROM consumed_attestations WHERE expires_at < $1 LIMIT $2)",
        )
        .bind(before)
        .bind(limit)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| self.store.err(e, "pruning expired consumed attestations"))?
        .rows_affected();
        Ok(Pruned { nonces, consumed })
    }
}

impl Store {
    /// How many nonce records and consumed attestations the store holds. Counts every row: for
    /// tests and reports, not for a request's path.
    pub async fn replay_record_counts(&self) -> Result<(u64, u64)> {
        let count = |table: &'static str| async move {
            sqlx::query_scalar::<Any, i64>(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM {table}"
            )))
            .fetch_one(&self.pool)
            .await
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| self.err(e, "counting replay records"))
        };
        Ok((
            count("used_nonces").await?,
            count("consumed_attestations").await?,
        ))
    }
}
