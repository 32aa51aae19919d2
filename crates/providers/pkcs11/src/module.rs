//! Loading a PKCS#11 module once per process, and finding a token in it.
//!
//! `C_Initialize` and `C_Finalize` are process-wide in the PKCS#11 C API: a module can be
//! initialised once, and every provider in the process that uses it must share that context.
//! This registry mirrors the C library's own global state; it is the one process-wide value in
//! Hanzo KMS, and it holds nothing but loaded modules.
//!
//! [`load`] and [`SLOT_SCAN`] are public for test support only (crates/testkit makes throwaway
//! SoftHSM2 tokens and breaks sessions from outside a provider): code in the same process that
//! talks to a module must share its context and its slot-scan lock. Nothing else is public.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::slot::Slot;
use hanzo_kms_core::config::ProviderKind;
use hanzo_kms_core::{Error, ErrorKind, Result};

use crate::error::{hsm_error, rv_name};
use crate::settings::TokenSelector;

static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

/// Held while listing slots or initialising tokens. SoftHSM2 2.6 rescans its token directory on
/// `C_GetSlotList`, and two threads rescanning at once can abort the process (an assertion in
/// its `SlotManager::insertToken`); slot enumeration is rare, so it is simply serialised.
pub static SLOT_SCAN: Mutex<()> = Mutex::new(());

/// The initialised context of the module at `path`, loading it on first use.
pub fn load(path: &Path, vendor: ProviderKind) -> Result<Pkcs11> {
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(ctx) = modules.get(path) {
        return Ok(ctx.clone());
    }
    if !path.exists() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "the PKCS#11 module {} does not exist; {} (or set kms.lux.{vendor}.module)",
                path.display(),
                install_hint(vendor)
            ),
        ));
    }
    let ctx = Pkcs11::new(path).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!(
                "{} is not a loadable PKCS#11 module ({e}); check kms.lux.{vendor}.module",
                path.display()
            ),
        )
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "initialising the PKCS#11 module {} failed: {e}",
                    path.display()
                ),
            ));
        }
    }
    modules.insert(path.to_owned(), ctx.clone());
    Ok(ctx)
}

fn install_hint(vendor: ProviderKind) -> &'static str {
    match vendor {
        ProviderKind::Softhsm2 => "install it with `apt-get install softhsm2`",
        ProviderKind::Nitrokey => "install OpenSC with `apt-get install opensc`",
        ProviderKind::Yubihsm2 => "install the YubiHSM SDK (yubihsm-shell) from Yubico",
        ProviderKind::ThalesLuna => "install the Luna client from Thales",
        ProviderKind::AwsCloudhsm => "install the CloudHSM PKCS#11 client (SDK 5) from AWS",
        ProviderKind::Fortanix => "install the Fortanix DSM PKCS#11 library",
        ProviderKind::Zymbit => "install Zymbit's zkpkcs11 package",
        ProviderKind::AwsKms
        | ProviderKind::GoogleCloudKms
        | ProviderKind::Openbao
        | ProviderKind::Software
        | ProviderKind::Yubihsm2Native => "it is not a PKCS#11 provider",
    }
}

pub(crate) fn find_token(
    ctx: &Pkcs11,
    want: &TokenSelector,
    module: &Path,
) -> Result<(Slot, String, String)> {
    let _scan = SLOT_SCAN.lock().unwrap_or_else(|e| e.into_inner());
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| hsm_error(e, format!("listing the slots of {}", module.display())))?;
    let mut labels = Vec::new();
    for slot in slots {
        let info = match ctx.get_token_info(slot) {
            Ok(info) => info,
            Err(e) => {
                // One broken token must not hide the healthy one we are looking for.
                let rv = match &e {
                    CkError::Pkcs11(rv, _) => rv_name(*rv),
                    other => other.to_string(),
                };
                labels.push(format!("slot {} (unreadable: {rv})", slot.id()));
                continue;
            }
        };
        if !info.token_initialized() {
            continue;
        }
        let label = info.label().trim_end().to_owned();
        let serial = info.serial_number().trim_end().to_owned();
        let hit = match want {
            TokenSelector::Label(l) => *l == label,
            TokenSelector::Slot(s) => *s == slot.id(),
        };
        if hit {
            return Ok((slot, label, serial));
        }
        labels.push(format!("'{label}' (slot {})", slot.id()));
    }
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "{want} is not among the initialised tokens of {}: {}",
            module.display(),
            if labels.is_empty() {
                "there are none".to_owned()
            } else {
                labels.join(", ")
            }
        ),
    ))
}
