"""Exceptions: one class per error code of the server's JSON API.

Every error is a :class:`KmsError` carrying ``code`` (the API's ``error.code``, e.g.
``"not_found"``), ``message`` and, when the server answered, ``request_id`` (quote it to the
operator: the audit log records the request under that id) and the HTTP ``status``.
Catch a subclass to act on one kind::

    try:
        f = safe_open(path, framework="np", model="acme:gpt4", client=kms)
    except hanzo_kms.PermissionDenied:
        ...  # the token lacks the decrypt role
    except hanzo_kms.AuthenticationFailed:
        ...  # wrong model, tampered or truncated file: deliberately says no more
"""

from __future__ import annotations

from typing import Dict, Optional, Type


class KmsError(Exception):
    """A Hanzo KMS error: ``code``, ``message``, ``request_id`` (or None), ``status`` (or None)."""

    code: str = "internal"

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        request_id: Optional[str] = None,
        status: Optional[int] = None,
        retry_after: Optional[int] = None,
    ) -> None:
        if code is not None:
            self.code = code
        self.message = message
        self.request_id = request_id
        self.status = status
        self.retry_after = retry_after
        text = f"{self.code}: {message}"
        if request_id:
            text += f" (request {request_id})"
        super().__init__(text)


class AlreadyExists(KmsError):
    """The object already exists (a duplicate create)."""

    code = "already_exists"


class AuditFailure(KmsError):
    """The audit log could not be appended, so the request was not carried out."""

    code = "audit_failure"


class AuthenticationFailed(KmsError):
    """A ciphertext, tag or signature did not verify. Deliberately says nothing more."""

    code = "authentication_failed"


class ConfigError(KmsError):
    """The server's configuration is invalid."""

    code = "config"


class Corrupt(KmsError):
    """The server's store is corrupt."""

    code = "corrupt"


class InternalError(KmsError):
    """Something unexpected; the message is generic."""

    code = "internal"


class InvalidArgument(KmsError, ValueError):
    """The request is malformed: a bad name, bad encoding, a file that is not a model file."""

    code = "invalid_argument"


class IoError(KmsError, OSError):
    """Local I/O failed (reading or writing a model file)."""

    code = "io"


class KeyState(KmsError):
    """The key exists but its state forbids the operation (disabled, destroyed, revoked token)."""

    code = "key_state"


class MasterKeyMismatch(KmsError):
    """The master key does not match the store."""

    code = "master_key_mismatch"


class NotInitialized(KmsError):
    """The store has not been initialised."""

    code = "not_initialized"


class NotFound(KmsError, LookupError):
    """The key does not exist, or belongs to another tenant (which looks the same)."""

    code = "not_found"


class PermissionDenied(KmsError, PermissionError):
    """The token lacks the role (encrypt, decrypt, sign, ...) or the key pattern."""

    code = "permission_denied"


class RateLimited(KmsError):
    """A rate limit is exceeded; ``retry_after`` says how many seconds to wait."""

    code = "rate_limited"


class Replayed(KmsError):
    """A nonce or attestation was already used."""

    code = "replayed"


class Unauthenticated(KmsError):
    """No token, or a token the server does not know (or revoked)."""

    code = "unauthenticated"


class Unavailable(KmsError, ConnectionError):
    """The server, its store or its provider could not be reached."""

    code = "unavailable"


class Unsupported(KmsError):
    """The operation is not supported by this key, algorithm or provider."""

    code = "unsupported"


_BY_CODE: Dict[str, Type[KmsError]] = {
    cls.code: cls
    for cls in (
        AlreadyExists,
        AuditFailure,
        AuthenticationFailed,
        ConfigError,
        Corrupt,
        InternalError,
        InvalidArgument,
        IoError,
        KeyState,
        MasterKeyMismatch,
        NotInitialized,
        NotFound,
        PermissionDenied,
        RateLimited,
        Replayed,
        Unauthenticated,
        Unavailable,
        Unsupported,
    )
}

_BY_STATUS: Dict[int, str] = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    408: "unavailable",
    409: "key_state",
    413: "invalid_argument",
    429: "rate_limited",
    502: "unavailable",
    503: "unavailable",
    504: "unavailable",
}


def from_code(
    code: str,
    message: str,
    request_id: Optional[str] = None,
    status: Optional[int] = None,
    retry_after: Optional[int] = None,
) -> KmsError:
    """The exception for an error ``code`` (an unknown code gives a plain :class:`KmsError`)."""
    cls = _BY_CODE.get(code, KmsError)
    return cls(message, code=code, request_id=request_id, status=status, retry_after=retry_after)


def from_status(status: int) -> str:
    """The error code for an HTTP status whose body was not our JSON error."""
    return _BY_STATUS.get(status, "internal")
