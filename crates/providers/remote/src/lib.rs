//! Providers on remote key services (DESIGN.md §8): OpenBao/Vault Transit, AWS KMS and Google
//! Cloud KMS, with clients written here, and the generic [`RemoteProvider`] they all use.
//!
//! - [`RemoteKms`] (`service`): the calls one service must offer; each client implements it.
//! - [`RemoteProvider`] (`provider`): the [`Provider`](hanzo_kms_core::Provider) on top:
//!   model and data KEKs in the service (each DEK wrapped there with its `dek_aad` bound),
//!   signing keys in the service where it signs the algorithm and kms-wrapped otherwise,
//!   signatures normalised and verified before they leave, token MACs and the store
//!   fingerprint under an HMAC key in the service.
//! - `handle`: what the store keeps per key version.
//!
//! See docs/providers.md for what lives where in each service, limits and failure behaviour.

#![forbid(unsafe_code)]

pub mod aws;
pub mod aws_credentials;
mod aws_process;
mod aws_profile;
mod aws_sts;
pub mod gcp;
mod handle;
mod http;
pub mod openbao;
mod provider;
mod service;
pub mod sigv4;

pub use aws::AwsKms;
pub use gcp::GcpKms;
pub use openbao::OpenBao;
pub use provider::{RemoteProvider, RemoteSettings};
pub use service::{KeyUse, RemoteKms};

/// The AWS credential chain's parsers of outside input, for the fuzz target in `fuzz/` (not an
/// API: hidden from the docs and free to change). Each function runs the crate's own code.
#[doc(hidden)]
pub mod fuzzing {
    use crate::aws_process;
    use crate::aws_profile;
    use crate::aws_sts;
    use crate::http::Reply;

    /// The path errors of [`shared_file`] name.
    pub const PATH: &str = "/fuzz/aws/config";

    /// A section: kind (`"profile"`, `"sso-session"`, `"other"`), name, and its keys.
    pub type Section = (String, String, Vec<String>);

    /// Parse `text` as the shared config file (`config`) or credentials file.
    pub fn shared_file(text: &str, config: bool) -> Result<Vec<Section>, String> {
        aws_profile::parse_sections(text, std::path::Path::new(PATH), config)
            .map(|all| {
                all.into_iter()
                    .map(|(kind, name, keys)| {
                        (kind.as_str().to_owned(), name, keys.into_keys().collect())
                    })
                    .collect()
            })
            .map_err(|e| e.message().to_owned())
    }

    /// Read an STS answer: the access key id, secret, session token and expiration.
    pub fn sts_answer(status: u16, body: &[u8]) -> Result<[String; 4], String> {
        let reply = Reply {
            status,
            body: zeroize::Zeroizing::new(body.to_vec()),
        };
        aws_sts::answer("AssumeRole at fuzz", &reply)
            .map(|i| {
                [
                    i.creds.access_key_id.clone(),
                    i.creds.secret_access_key.expose().to_owned(),
                    i.creds
                        .session_token
                        .as_ref()
                        .map(|t| t.expose().to_owned())
                        .unwrap_or_default(),
                    i.expiration,
                ]
            })
            .map_err(|e| e.message().to_owned())
    }

    /// Read a `credential_process` output: the access key id, whether a session token was
    /// given, and the expiration.
    pub fn process_output(stdout: &[u8]) -> Result<(String, bool, Option<String>), String> {
        aws_process::parse(stdout).map(|p| {
            (
                p.creds.access_key_id.clone(),
                p.creds.session_token.is_some(),
                p.expiration,
            )
        })
    }

    /// Split a `credential_process` command into words.
    pub fn split_command(command: &str) -> Result<Vec<String>, &'static str> {
        aws_process::split(command).map(|w| w.to_vec())
    }
}
