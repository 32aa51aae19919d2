//! SQL text shared by the sqlx path (SQLite and PostgreSQL) and the rusqlite path (SQLite's
//! group committer): each table's statements are written once.
//!
//! They are macros that expand to string literals, so a statement can be `concat!`ed into one
//! `&'static str` at compile time (sqlx takes only literal SQL, and the committer's prepared
//! statement cache is keyed by the text). Placeholders are `$n`, numbered in the order they
//! appear: PostgreSQL needs `$n`, sqlx maps `$n` on SQLite by its number, and rusqlite binds by
//! position, which is the same order.

use crate::Backend;

/// The columns of `keys`, in the order [`crate::rows`] reads them by name.
macro_rules! key_columns {
    () => {
        "name, purpose, customer, short_name, algorithm, origin, provider, state, \
         primary_version, rotation_period_s, created_at, rotated_at, destroy_at"
    };
}

/// The columns of `api_tokens`.
macro_rules! token_columns {
    () => {
        "id, tenant, roles, patterns, mac, description, created_at, created_by, revoked_at, \
         expires_at"
    };
}

/// The columns of `audit_log`, in the order both writers bind them (13). A record's previous
/// hash is not stored: it is the previous row's `hash` (or, for the oldest row held,
/// `audit_head.base_hash`).
macro_rules! audit_columns {
    () => {
        "seq, time_ms, request_id, principal, tenant, operation, key_name, key_version, \
         outcome, reason, peer, detail, hash"
    };
}

/// `INSERT INTO audit_log (…) VALUES `, to be followed by row tuples.
macro_rules! insert_audit {
    () => {
        concat!(
            "INSERT INTO audit_log (",
            $crate::sql::audit_columns!(),
            ") VALUES "
        )
    };
}

/// `INSERT INTO used_nonces (…) VALUES `, to be followed by row tuples (6 columns).
macro_rules! insert_nonce {
    () => {
        "INSERT INTO used_nonces (key_name, nonce, message_digest, signature, created_at, \
         expires_at) VALUES "
    };
}

/// `INSERT INTO consumed_attestations (…) VALUES `, to be followed by row tuples (5 columns).
macro_rules! insert_consumed {
    () => {
        "INSERT INTO consumed_attestations (attestation_digest, settlement_key, settlement_digest, \
         created_at, expires_at) VALUES "
    };
}

/// The chain head, read without locking it.
macro_rules! select_head {
    () => {
        "SELECT seq, hash FROM audit_head WHERE id = 1"
    };
}

/// Advance the chain head to `($1, $2)` = (seq, hex hash).
macro_rules! update_head {
    () => {
        "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1"
    };
}

/// The recorded digest and signature of one `(key, nonce)` = `($1, $2)`.
macro_rules! select_nonce {
    () => {
        "SELECT message_digest, signature FROM used_nonces WHERE key_name = $1 AND nonce = $2"
    };
}

/// Whether the attestation digest `$1` was consumed.
macro_rules! select_consumed {
    () => {
        "SELECT 1 FROM consumed_attestations WHERE attestation_digest = $1"
    };
}

/// Append `VALUES` tuples for a multi-row statement on `backend`: `rows` tuples of `columns`
/// placeholders each.
pub(crate) fn values(sql: &mut String, backend: Backend, rows: usize, columns: usize) {
    values_from(sql, backend, rows, columns, 1);
}

/// [`values`] whose placeholders start at `first` (1-based): for a statement that binds other
/// parameters before these.
pub(crate) fn values_from(
    sql: &mut String,
    backend: Backend,
    rows: usize,
    columns: usize,
    first: usize,
) {
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for k in 1..=columns {
            if k > 1 {
                sql.push_str(", ");
            }
            placeholder(sql, backend, first - 1 + i * columns + k);
        }
        sql.push(')');
    }
}

/// Append placeholder `n` (1-based) for SQL built with many parameters: `$n` on PostgreSQL, `?`
/// on SQLite. SQLite looks a named parameter up by a linear scan of all names, so thousands of
/// `$n` in one multi-row statement cost O(n²) to prepare (30 % of the CPU of a batch of 256
/// signatures); anonymous `?` are numbered in order and cost nothing to bind.
pub(crate) fn placeholder(sql: &mut String, backend: Backend, n: usize) {
    use std::fmt::Write;
    match backend {
        Backend::Sqlite => sql.push('?'),
        // Writing to a String cannot fail.
        Backend::Postgres => {
            let _ = write!(sql, "${n}");
        }
    }
}

/// `s` as a LIKE pattern that matches itself literally (with `ESCAPE '\'`).
pub(crate) fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

pub(crate) use {
    audit_columns, insert_audit, insert_consumed, insert_nonce, key_columns, select_consumed,
    select_head, select_nonce, token_columns, update_head,
};
