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
