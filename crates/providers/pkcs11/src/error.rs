//! Error mapping: PKCS#11 return values (`CKR_*`) and session-pool failures to our error kinds,
//! with what we were doing and the module's short code, never a PIN.

use cryptoki::error::{Error as CkError, RvError};
use hanzo_kms_core::{Error, ErrorKind};

use crate::pool::{self, WAIT_LIMIT};
use crate::settings::PinSource;

/// A module error, with what we were doing. The module's own text is kept (it never contains a
/// PIN: PINs are never passed to calls that fail with messages we render).
pub(crate) fn hsm_error(e: CkError, what: String) -> Error {
    let kind = match &e {
        CkError::Pkcs11(rv, _) => match rv {
            RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::SessionCount
            | RvError::GeneralError
            | RvError::FunctionFailed => ErrorKind::Unavailable,
            RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::CurveNotSupported
            | RvError::FunctionNotSupported => ErrorKind::Unsupported,
            _ => ErrorKind::Unavailable,
        },
        _ => ErrorKind::Unavailable,
    };
    let code = match &e {
        CkError::Pkcs11(rv, f) => format!("{f}: {}", rv_name(*rv)),
        other => other.to_string(),
    };
    Error::new(kind, format!("{what}: the PKCS#11 module answered {code}")).with_source(e)
}

pub(crate) fn rv_name(rv: RvError) -> String {
    // RvError's Display is a paragraph of the spec; its Debug is the short name.
    format!("CKR_{}", to_snake_upper(&format!("{rv:?}")))
}

pub(crate) fn to_snake_upper(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

pub(crate) fn pool_error(e: pool::PoolError, token: &str, pin: Option<&PinSource>) -> Error {
    match e {
        pool::PoolError::Login(CkError::Pkcs11(RvError::PinIncorrect, _)) => Error::new(
            ErrorKind::Config,
            format!(
                "logging in to token '{token}' failed: the PIN from {} is incorrect",
                pin.map_or_else(|| "the config".to_owned(), |p| p.to_string())
            ),
        ),
        pool::PoolError::Login(CkError::Pkcs11(RvError::PinLocked, _)) => Error::new(
            ErrorKind::Config,
            format!("logging in to token '{token}' failed: the user PIN is locked"),
        ),
        pool::PoolError::Login(e) => hsm_error(e, format!("logging in to token '{token}'")),
        other => pool_error_ctx(other, token, "opening sessions".into()),
    }
}

pub(crate) fn pool_error_ctx(e: pool::PoolError, token: &str, what: String) -> Error {
    match e {
        pool::PoolError::Call(e) => hsm_error(e, format!("{what} on token '{token}'")),
        pool::PoolError::Login(e) => {
            hsm_error(e, format!("{what}: logging in again to token '{token}'"))
        }
        pool::PoolError::Exhausted => Error::new(
            ErrorKind::Unavailable,
            format!(
                "{what}: every session to token '{token}' stayed busy for {} s",
                WAIT_LIMIT.as_secs()
            ),
        ),
    }
}

/// Whether the module's answer means a sealed value did not open (a GCM tag that does not
/// verify, an RSA-OAEP ciphertext that does not decrypt, an ECDH point the device refuses).
/// `general_error` is the module's quirk of answering `CKR_GENERAL_ERROR` for it.
pub(crate) fn is_bad_tag(general_error: bool, e: &CkError) -> bool {
    match e {
        CkError::Pkcs11(
            RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::DataInvalid
            | RvError::DataLenRange
            | RvError::MechanismParamInvalid
            | RvError::DomainParamsInvalid,
            _,
        ) => true,
        CkError::Pkcs11(RvError::GeneralError, _) => general_error,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_errors_read_as_short_codes() {
        assert_eq!(rv_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            rv_name(RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
    }
}
