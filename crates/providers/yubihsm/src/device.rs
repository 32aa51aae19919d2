//! The device: one authenticated session over a connector (the `yubihsm` crate's [`Client`],
//! which reopens a closed session with the same credentials), the few commands Hanzo KMS uses,
//! and the one place device errors become ours: each names "YubiHSM 2", the connector, the
//! config key that would fix it, and the cause; none carries the password.

use std::error::Error as _;

use hanzo_kms_core::{Error, ErrorKind, Result};
use yubihsm::object::{self, Label};
use yubihsm::{Capability, Client, Connector, Credentials, Domain};

use crate::settings::{SECTION, YubiHsmSettings};

/// How many random object ids to try for a new object (ids are 16 bits; 0 and 0xffff are never
/// used) before giving up.
const MAX_ID_TRIES: usize = 16;

/// A connected, authenticated device.
pub(crate) struct Device {
    client: Client,
    connector_url: String,
    auth_key_id: u16,
    domain: Domain,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("connector_url", &self.connector_url)
            .field("auth_key_id", &self.auth_key_id)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Open a session through `connector` with the section's authentication key.
    pub(crate) fn open(connector: Connector, s: &YubiHsmSettings) -> Result<Self> {
        let credentials = Credentials::from_password(s.auth_key_id, s.password());
        let device = Self {
            // `Client::create` does not connect; `connect` below opens the session.
            client: Client::create(connector, credentials).map_err(|e| {
                Error::new(
                    ErrorKind::Internal,
                    format!("YubiHSM 2: creating the client failed: {}", chain(&e)),
                )
            })?,
            connector_url: s.connector_url.clone(),
            auth_key_id: s.auth_key_id,
            domain: Domain::at(usize::from(s.domain)).map_err(|_| {
                Error::new(
                    ErrorKind::Config,
                    format!("YubiHSM 2: {SECTION}.domain {} is not 1-16", s.domain),
                )
            })?,
        };
        device
            .client
            .connect()
            .map_err(|e| device.fail("opening a session", e))?;
        Ok(device)
    }

    pub(crate) fn connector_url(&self) -> &str {
        &self.connector_url
    }

    pub(crate) fn ping(&self) -> Result<()> {
        self.client
            .ping()
            .map(|_| ())
            .map_err(|e| self.fail("health check (echo)", e))
    }

    /// The id of the object of `kind` labelled `label`, if there is one.
    pub(crate) fn find(&self, kind: object::Type, label: &str) -> Result<Option<u16>> {
        let filters = [
            object::Filter::Type(kind),
            object::Filter::Label(self.label(label)),
        ];
        let found = self
            .client
            .list_objects(&filters)
            .map_err(|e| self.fail(&format!("looking for '{label}'"), e))?;
        Ok(found.first().map(|entry| entry.object_id))
    }

    /// Generate an object with a fresh id: `make(id, label, domain)` is the generate command.
    /// Ids are drawn at random and checked free first (the device would refuse a taken one).
    pub(crate) fn generate(
        &self,
        kind: object::Type,
        label: &str,
        what: &str,
        make: impl Fn(&Client, u16, Label, Domain) -> std::result::Result<u16, yubihsm::client::Error>,
    ) -> Result<u16> {
        for _ in 0..MAX_ID_TRIES {
            let mut b = [0u8; 2];
            hanzo_kms_crypto::rng::fill(&mut b)?;
            let id = u16::from_be_bytes(b);
            if id == 0 || id == u16::MAX {
                continue;
            }
            match self.client.get_object_info(id, kind) {
                Ok(_) => continue,
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(self.fail(&format!("choosing an id for {what}"), e)),
            }
            match make(&self.client, id, self.label(label), self.domain) {
                Ok(id) => return Ok(id),
                // Another client took the id between the check and the command: draw again.
                Err(e) if e.device_error() == Some(yubihsm::device::ErrorKind::ObjectExists) => {}
                Err(e) if e.device_error() == Some(yubihsm::device::ErrorKind::StorageFailed) => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "YubiHSM 2 at {}: generating {what}: the device's storage is full (256 objects at most); \
                             destroy keys or set {SECTION}.signing_keys: hsm-wrapped",
                            self.connector_url
                        ),
                    ));
                }
                Err(e) => return Err(self.fail(&format!("generating {what}"), e)),
            }
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "YubiHSM 2 at {}: no free object id found for {what} after {MAX_ID_TRIES} tries (the device holds at most 256 objects)",
                self.connector_url
            ),
        ))
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Delete object `id` of `kind`; one already gone is fine.
    pub(crate) fn delete(&self, id: u16, kind: object::Type, what: &str) -> Result<()> {
        match self.client.delete_object(id, kind) {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.fail(&format!("deleting {what} (object 0x{id:04x})"), e)),
        }
    }

    /// The capabilities every key Hanzo KMS generates for signing gets (never exportable).
    pub(crate) fn sign_capability(eddsa: bool) -> Capability {
        if eddsa {
            Capability::SIGN_EDDSA
        } else {
            Capability::SIGN_ECDSA
        }
    }

    /// A label of at most 40 bytes (the device's limit), cut on a character boundary.
    fn label(&self, label: &str) -> Label {
        let mut end = label.len().min(object::LABEL_SIZE);
        while !label.is_char_boundary(end) {
            end -= 1;
        }
        Label::from_bytes(&label.as_bytes()[..end]).unwrap_or_default()
    }

    /// A device error as ours: a connector that does not answer is `Unavailable`; a refused
    /// login `Config` naming `auth_key_id` and `password`; a missing object `NotFound`.
    pub(crate) fn fail(&self, doing: &str, e: yubihsm::client::Error) -> Error {
        let cause = chain(&e);
        let at = format!(
            "YubiHSM 2 at {} ({SECTION}.connector_url)",
            self.connector_url
        );
        if is_connector_error(&e) {
            return Error::new(
                ErrorKind::Unavailable,
                format!(
                    "{at}: {doing}: the connector does not answer (is yubihsm-connector running and reachable there?): {cause}"
                ),
            );
        }
        if matches!(e.kind(), yubihsm::client::ErrorKind::AuthenticationError)
            || e.device_error() == Some(yubihsm::device::ErrorKind::AuthenticationFailed)
        {
            return Error::new(
                ErrorKind::Config,
                format!(
                    "{at}: {doing}: authentication key {} ({SECTION}.auth_key_id) refused the password \
                     ({SECTION}.password): the password is wrong or there is no such key: {cause}",
                    self.auth_key_id
                ),
            );
        }
        if is_not_found(&e) {
            return Error::new(
                ErrorKind::NotFound,
                format!("{at}: {doing}: no such object: {cause}"),
            );
        }
        if e.device_error() == Some(yubihsm::device::ErrorKind::InsufficientPermissions) {
            return Error::new(
                ErrorKind::Config,
                format!(
                    "{at}: {doing}: authentication key {} ({SECTION}.auth_key_id) lacks the capability or domain: {cause}",
                    self.auth_key_id
                ),
            );
        }
        Error::new(ErrorKind::Unavailable, format!("{at}: {doing}: {cause}"))
    }
}

pub(crate) fn is_not_found(e: &yubihsm::client::Error) -> bool {
    e.device_error() == Some(yubihsm::device::ErrorKind::ObjectNotFound)
}

/// The device answered and refused the command's data (not the session, not the connector):
/// for Unwrap Data, an altered or foreign value.
pub(crate) fn is_refusal(e: &yubihsm::client::Error) -> bool {
    !is_connector_error(e)
        && !matches!(e.kind(), yubihsm::client::ErrorKind::AuthenticationError)
        && e.device_error().is_some_and(|d| {
            !matches!(
                d,
                yubihsm::device::ErrorKind::AuthenticationFailed
                    | yubihsm::device::ErrorKind::InsufficientPermissions
                    | yubihsm::device::ErrorKind::ObjectNotFound
            )
        })
}

fn is_connector_error(e: &yubihsm::client::Error) -> bool {
    if matches!(e.kind(), yubihsm::client::ErrorKind::ConnectorError) {
        return true;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if s.downcast_ref::<yubihsm::connector::Error>().is_some() {
            return true;
        }
        source = s.source();
    }
    false
}

/// An error and its sources, as one line (none of them holds a secret: the crate's errors
/// describe protocol states, never key or password bytes). The crate's `Display` already
/// appends each source (`kind: source`); a segment repeated by two layers is written once.
fn chain(e: &dyn std::error::Error) -> String {
    let text = e.to_string();
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    parts.join(": ")
}
