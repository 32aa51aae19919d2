//! Store errors: one classifier for both drivers.
//!
//! A database error gets its [`ErrorKind`] from its code, never from its text. SQLite reports the
//! same extended result codes through sqlx and through rusqlite (the group committer's and the
//! checkpointer's connections), so both go through [`sqlite_kind`]; PostgreSQL's SQLSTATE goes
//! through [`postgres_kind`].

use hanzo_kms_core::{Error, ErrorKind};

/// A sqlx error as ours, while `doing`.
pub(crate) fn db_error(e: sqlx::Error, doing: &str) -> Error {
    let kind = match &e {
        // sqlx reports SQLite's extended result code, in decimal, and PostgreSQL's SQLSTATE.
        sqlx::Error::Database(d) => match d.code() {
            None => ErrorKind::Internal,
            Some(c) if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
                c.parse::<i32>().map_or(ErrorKind::Internal, sqlite_kind)
            }
            Some(c) => postgres_kind(&c),
        },
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    store_error(kind, doing, e)
}

/// A rusqlite error as ours, while `doing`.
pub(crate) fn sqlite_error(e: rusqlite::Error, doing: &str) -> Error {
    let kind = match &e {
        rusqlite::Error::SqliteFailure(f, _) => sqlite_kind(f.extended_code),
        _ => ErrorKind::Internal,
    };
    store_error(kind, doing, e)
}

/// The kind of a SQLite extended result code.
fn sqlite_kind(extended: i32) -> ErrorKind {
    match extended {
        // SQLITE_CONSTRAINT_PRIMARYKEY and SQLITE_CONSTRAINT_UNIQUE (not foreign keys).
        1555 | 2067 => ErrorKind::AlreadyExists,
        // By primary code: 11 SQLITE_CORRUPT, 26 SQLITE_NOTADB; 5 SQLITE_BUSY, 6 SQLITE_LOCKED,
        // 14 SQLITE_CANTOPEN.
        _ => match extended & 0xff {
            11 | 26 => ErrorKind::Corrupt,
            5 | 6 | 14 => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        },
    }
}

/// The kind of a PostgreSQL SQLSTATE.
fn postgres_kind(sqlstate: &str) -> ErrorKind {
    match sqlstate {
        // unique_violation
        "23505" => ErrorKind::AlreadyExists,
        // Class 08: connection exception; class 57: operator intervention (shutdown).
        s if s.starts_with("08") || s.starts_with("57") => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}

/// A store error of `kind` while `doing`, keeping the driver's error as its source.
pub(crate) fn store_error(
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

/// An error while appending to the audit chain: the request was not carried out.
pub(crate) fn audit_error(e: Error) -> Error {
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

/// The store at `location` holds something this code never writes: `what` says what.
pub(crate) fn damaged(location: &str, what: &str) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("the store at {location} is damaged: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_codes_map_by_their_primary_code_and_unique_constraints() {
        assert_eq!(sqlite_kind(1555), ErrorKind::AlreadyExists);
        assert_eq!(sqlite_kind(2067), ErrorKind::AlreadyExists);
        // SQLITE_CONSTRAINT_FOREIGNKEY is a bug of ours, not a duplicate.
        assert_eq!(sqlite_kind(787), ErrorKind::Internal);
        assert_eq!(sqlite_kind(11), ErrorKind::Corrupt);
        assert_eq!(sqlite_kind(26), ErrorKind::Corrupt);
        // SQLITE_BUSY_SNAPSHOT (517), SQLITE_LOCKED_SHAREDCACHE (262), SQLITE_CANTOPEN (14).
        for code in [5, 517, 6, 262, 14] {
            assert_eq!(sqlite_kind(code), ErrorKind::Unavailable, "{code}");
        }
        assert_eq!(sqlite_kind(1), ErrorKind::Internal);
    }

    #[test]
    fn postgres_states_map_by_class() {
        assert_eq!(postgres_kind("23505"), ErrorKind::AlreadyExists);
        assert_eq!(postgres_kind("08006"), ErrorKind::Unavailable);
        assert_eq!(postgres_kind("57P01"), ErrorKind::Unavailable);
        assert_eq!(postgres_kind("23503"), ErrorKind::Internal);
        assert_eq!(postgres_kind("XX001"), ErrorKind::Internal);
    }
}
