//! One error type for the whole service, with a machine-readable [`ErrorKind`].
//!
//! Transport layers (CLI exit codes, HTTP and gRPC status) map errors by *kind*, in one `match`,
//! never by the text of a message (STYLE.md 6). Messages are written for operators: they name the
//! key, the file or the config path, and never contain secret material. Cryptographic failures are
//! deliberately opaque (STYLE.md 7): a failed decryption says only "authentication failed".

use std::fmt;

/// What went wrong, in terms a caller can act on.
///
/// Variants are in alphabetical order. The `code()` strings are a stable contract (they appear in
/// `--json` output, audit records and, later, REST error bodies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The object already exists (duplicate create).
    AlreadyExists,
    /// The audit log could not be appended; the request was not carried out (fail-closed).
    AuditFailure,
    /// A ciphertext, tag or signature did not verify. Deliberately says nothing more.
    AuthenticationFailed,
    /// The configuration is invalid.
    Config,
    /// The store is corrupt, truncated, or not a Hanzo KMS store.
    Corrupt,
    /// Something unexpected inside the service. The message is generic.
    Internal,
    /// The request is malformed: a bad name, an unknown algorithm, bad input encoding.
    InvalidArgument,
    /// Local I/O failed (files in the data directory, stdin/stdout).
    Io,
    /// The key exists but its state forbids the operation (disabled, destroyed, ...).
    KeyState,
    /// The master key (or provider identity) does not match the store.
    MasterKeyMismatch,
    /// The store has not been initialised.
    NotInitialized,
    /// The key (or object) does not exist, or the caller may not know that it exists.
    NotFound,
    /// The caller is authenticated but lacks the role for this operation.
    PermissionDenied,
    /// A nonce or attestation was already used for something else.
    Replayed,
    /// A rate limit is exceeded; [`Error::retry_after`] says when to try again.
    RateLimited,
    /// A provider (HSM, cloud KMS) or the store could not be reached.
    Unavailable,
    /// The caller is not authenticated.
    Unauthenticated,
    /// The operation is not supported by this key, algorithm or provider.
    Unsupported,
}

impl ErrorKind {
    /// A stable, snake_case code for machine consumers.
    /// The kind whose [`ErrorKind::code`] is `code` (what a client reads back from an error
    /// body or the gRPC `x-error-code` metadata).
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "already_exists" => Self::AlreadyExists,
            "audit_failure" => Self::AuditFailure,
            "authentication_failed" => Self::AuthenticationFailed,
            "config" => Self::Config,
            "corrupt" => Self::Corrupt,
            "internal" => Self::Internal,
            "invalid_argument" => Self::InvalidArgument,
            "io" => Self::Io,
            "key_state" => Self::KeyState,
            "master_key_mismatch" => Self::MasterKeyMismatch,
            "not_initialized" => Self::NotInitialized,
            "not_found" => Self::NotFound,
            "permission_denied" => Self::PermissionDenied,
            "rate_limited" => Self::RateLimited,
            "replayed" => Self::Replayed,
            "unavailable" => Self::Unavailable,
            "unauthenticated" => Self::Unauthenticated,
            "unsupported" => Self::Unsupported,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::AlreadyExists => "already_exists",
            Self::AuditFailure => "audit_failure",
            Self::AuthenticationFailed => "authentication_failed",
            Self::Config => "config",
            Self::Corrupt => "corrupt",
            Self::Internal => "internal",
            Self::InvalidArgument => "invalid_argument",
            Self::Io => "io",
            Self::KeyState => "key_state",
            Self::MasterKeyMismatch => "master_key_mismatch",
            Self::NotInitialized => "not_initialized",
            Self::NotFound => "not_found",
            Self::PermissionDenied => "permission_denied",
            Self::RateLimited => "rate_limited",
            Self::Replayed => "replayed",
            Self::Unavailable => "unavailable",
            Self::Unauthenticated => "unauthenticated",
            Self::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The error type of every Hanzo KMS crate.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    retry_after: Option<std::time::Duration>,
}

/// Shorthand used throughout the workspace.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with an operator-facing message. The message must not contain secrets.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
            retry_after: None,
        }
    }

    /// A rate-limit error that may be retried after `wait`.
    pub fn rate_limited(message: impl Into<String>, wait: std::time::Duration) -> Self {
        let mut e = Self::new(ErrorKind::RateLimited, message);
        e.retry_after = Some(wait);
        e
    }

    /// When a [`ErrorKind::RateLimited`] request may be retried (HTTP `Retry-After`).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after
    }

    /// Keep `source` as the cause. Its text is shown to operators, so only attach errors whose
    /// `Display` is free of secrets (I/O, SQL, parse errors).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The one opaque error for every failed decryption or unwrap (STYLE.md 7).
    pub fn authentication_failed() -> Self {
        Self::new(ErrorKind::AuthenticationFailed, "authentication failed")
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the chain of causes.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefix the message with context, keeping kind and source.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    /// The message, followed by the chain of causes: `message: cause: cause`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let mut next = self
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static));
        while let Some(cause) = next {
            write!(f, ": {cause}")?;
            next = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source.as_ref().map(|s| s.to_string()))
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_its_kind() {
        use ErrorKind::*;
        let all = [
            AlreadyExists,
            AuditFailure,
            AuthenticationFailed,
            Config,
            Corrupt,
            Internal,
            InvalidArgument,
            Io,
            KeyState,
            MasterKeyMismatch,
            NotInitialized,
            NotFound,
            PermissionDenied,
            RateLimited,
            Replayed,
            Unavailable,
            Unauthenticated,
            Unsupported,
        ];
        for k in all {
            assert_eq!(ErrorKind::from_code(k.code()), Some(k));
        }
        assert_eq!(ErrorKind::from_code("nonsense"), None);
    }

    #[test]
    fn display_includes_cause_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Error::new(ErrorKind::Io, "reading /x/master.key").with_source(io);
        assert_eq!(e.to_string(), "reading /x/master.key: no such file");
        assert_eq!(e.kind(), ErrorKind::Io);
    }

    #[test]
    fn authentication_failure_is_opaque() {
        let e = Error::authentication_failed();
        assert_eq!(e.to_string(), "authentication failed");
        assert_eq!(e.kind().code(), "authentication_failed");
    }
}
