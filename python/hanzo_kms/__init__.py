"""Hanzo KMS for Python: load encrypted model weights straight into NumPy or PyTorch, and the
HIP-005 client API.

- :mod:`hanzo_kms.safetensors`: ``safe_open``, ``load_file`` and ``save_file`` on encrypted
  ``.safetensors`` files, shaped like the ``safetensors`` package's API.
- :class:`Client`: ``create_model_keyspace``, ``encrypt_model_weights``,
  ``decrypt_model_weights``, ``sign_poai``, ``verify_poai``, ``sign_hmm_settlement``, and
  encryption, data keys, keys, tokens and audit, over the server's REST API.
- :mod:`hanzo_kms.errors`: one exception class per error code, each carrying ``code``,
  ``message`` and ``request_id``.
"""

from . import errors, safetensors
from .client import Client, model_key_name, time_ordered_nonce
from .errors import (
    AlreadyExists,
    AuditFailure,
    AuthenticationFailed,
    ConfigError,
    Corrupt,
    InternalError,
    InvalidArgument,
    IoError,
    KeyState,
    KmsError,
    MasterKeyMismatch,
    NotFound,
    NotInitialized,
    PermissionDenied,
    RateLimited,
    Replayed,
    Unauthenticated,
    Unavailable,
    Unsupported,
)

__all__ = [
    "Client",
    "errors",
    "safetensors",
    "model_key_name",
    "time_ordered_nonce",
    "AlreadyExists",
    "AuditFailure",
    "AuthenticationFailed",
    "ConfigError",
    "Corrupt",
    "InternalError",
    "InvalidArgument",
    "IoError",
    "KeyState",
    "KmsError",
    "MasterKeyMismatch",
    "NotFound",
    "NotInitialized",
    "PermissionDenied",
    "RateLimited",
    "Replayed",
    "Unauthenticated",
    "Unavailable",
    "Unsupported",
]
__version__ = "0.1.0"
