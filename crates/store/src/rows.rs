//! The store's rows as Rust values, and how they are read from a sqlx row.
//!
//! A stored value that this code never writes (an unknown state, a malformed hash) is reported
//! as [`ErrorKind::Corrupt`](hanzo_kms_core::ErrorKind::Corrupt), naming what was wrong.

use std::str::FromStr;

use hanzo_kms_core::{
    Algorithm, Error, KeyHandle, KeyMeta, KeyName, KeyState, KeyVersion, Origin, Purpose, Result,
};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{AuditEvent, AuditRecord, Store};

/// A key with its versions.
#[derive(Clone, Debug)]
pub struct StoredKey {
    pub meta: KeyMeta,
    pub versions: Vec<StoredVersion>,
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
    /// The second since the epoch from which the token is refused; `None`: until revoked.
    pub expires_at: Option<i64>,
}

impl StoredToken {
    pub(crate) fn from_row(r: &AnyRow) -> std::result::Result<Self, sqlx::Error> {
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
            expires_at: r.try_get("expires_at")?,
        })
    }
}

/// One nonce record of a group commit.
#[derive(Clone, Copy, Debug)]
pub struct NonceRow<'a> {
    pub key: &'a str,
    pub nonce: &'a [u8],
    pub digest: &'a [u8],
    pub signature: Option<&'a [u8]>,
    /// Seconds since the epoch after which the message can no longer be accepted, so the record
    /// may be pruned (docs/signing.md, "Replay records expire").
    pub expires_at: i64,
}

impl Store {
    /// A `keys` row (its columns named as in [`crate::sql::key_columns`]).
    pub(crate) fn key_from_row(&self, row: &AnyRow) -> Result<KeyMeta> {
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

    /// A `key_versions` row (`version, state, created_at, public_key`, the middle two named
    /// as `cols` says).
    pub(crate) fn version_from_row(
        &self,
        row: &AnyRow,
        cols: VersionColumns,
    ) -> Result<KeyVersion> {
        let e = |e| self.err(e, "reading a key version");
        Ok(KeyVersion {
            version: u32::try_from(row.try_get::<i64, _>("version").map_err(e)?)
                .map_err(|_| self.corrupt("bad version number"))?,
            state: KeyState::from_str(&row.try_get::<String, _>(cols.state).map_err(e)?)
                .map_err(|x| self.corrupt(&format!("version state: {}", x.message())))?,
            created_at: row.try_get(cols.created_at).map_err(e)?,
            public_key: row.try_get::<Option<Vec<u8>>, _>("public_key").map_err(e)?,
        })
    }

    /// An `audit_log` row (its columns named as in [`crate::sql::audit_columns`]) that follows
    /// the record whose hash is `prev`.
    pub(crate) fn audit_from_row(&self, row: &AnyRow, prev: [u8; 32]) -> Result<AuditRecord> {
        let e = |e| self.err(e, "reading an audit record");
        let columns = AuditColumns {
            seq: row.try_get("seq").map_err(e)?,
            time_ms: row.try_get("time_ms").map_err(e)?,
            request_id: row.try_get("request_id").map_err(e)?,
            principal: row.try_get("principal").map_err(e)?,
            tenant: row.try_get("tenant").map_err(e)?,
            operation: row.try_get("operation").map_err(e)?,
            key_name: row.try_get("key_name").map_err(e)?,
            key_version: row.try_get("key_version").map_err(e)?,
            outcome: row.try_get("outcome").map_err(e)?,
            reason: row.try_get("reason").map_err(e)?,
            peer: row.try_get("peer").map_err(e)?,
            detail: row.try_get("detail").map_err(e)?,
            hash: row.try_get("hash").map_err(e)?,
        };
        columns
            .into_record(prev)
            .map_err(|what| self.corrupt(&what))
    }

    /// The `(seq, hash)` of an `audit_head` row.
    pub(crate) fn head_of(&self, row: &AnyRow) -> Result<(i64, String)> {
        let e = |e| self.err(e, "reading the audit chain head");
        Ok((row.try_get(0).map_err(e)?, row.try_get(1).map_err(e)?))
    }
}

/// The names of a version's `state` and `created_at` in a result row: a row that joins a key
/// with its versions renames them, since `keys` has columns of the same names.
#[derive(Clone, Copy, Debug)]
pub(crate) struct VersionColumns {
    pub state: &'static str,
    pub created_at: &'static str,
}

/// A `key_versions` row's own column names.
pub(crate) const VERSION_COLUMNS: VersionColumns = VersionColumns {
    state: "state",
    created_at: "created_at",
};

/// A hash stored as 64 hex digits.
pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// An `audit_log` row as the database returns it, before it is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditColumns {
    pub seq: i64,
    pub time_ms: i64,
    pub request_id: String,
    pub principal: String,
    pub tenant: String,
    pub operation: String,
    pub key_name: Option<String>,
    pub key_version: Option<i64>,
    pub outcome: String,
    pub reason: Option<String>,
    pub peer: Option<String>,
    pub detail: Option<String>,
    /// 32 bytes (schema 8).
    pub hash: Vec<u8>,
}

impl AuditColumns {
    /// The record, following the record whose hash is `prev` (the row before it: the previous
    /// hash is not stored), or what is malformed in the row (a hash that is not 32 bytes).
    pub fn into_record(self, prev: [u8; 32]) -> std::result::Result<AuditRecord, String> {
        let seq = self.seq;
        let hash = <[u8; 32]>::try_from(self.hash.as_slice())
            .map_err(|_| format!("audit record {seq} has a malformed hash"))?;
        Ok(AuditRecord {
            seq: seq as u64,
            prev_hash: prev,
            hash,
            event: AuditEvent {
                time_ms: self.time_ms,
                request_id: self.request_id,
                principal: self.principal,
                tenant: self.tenant,
                operation: self.operation,
                key_name: self.key_name,
                key_version: self.key_version.and_then(|v| u32::try_from(v).ok()),
                outcome: self.outcome,
                reason: self.reason,
                peer: self.peer,
                detail: self.detail,
            },
        })
    }
}
