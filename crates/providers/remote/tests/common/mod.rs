//! Helpers shared by the remote providers' tests (`mod common;` in each test file): how a
//! bad-input error must read, and how a provider is opened on a client.

#![allow(dead_code)] // each test file uses its own part of this module

use hanzo_kms_core::Error;
use hanzo_kms_core::config::RemoteTuning;
use hanzo_kms_remote::{RemoteKms, RemoteProvider, RemoteSettings};

/// `e` (its text and its Debug) names `service` as a person writes it ("AWS KMS", "OpenBao",
/// "Google Cloud KMS"), does not lead with the config identifier (`aws-kms`, ...), names each
/// of `parts`, and holds none of `secrets`.
pub fn assert_clear(e: &Error, service: &str, parts: &[&str], secrets: &[&str]) {
    let text = e.to_string();
    let debug = format!("{e:?}");
    assert!(text.contains(service), "{service:?} missing in: {text}");
    for id in ["aws-kms:", "openbao:", "google-cloud-kms:"] {
        assert!(
            !text.starts_with(id),
            "the config identifier names the service: {text}"
        );
    }
    for p in parts {
        assert!(text.contains(p), "{p:?} missing in: {text}");
    }
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(!text.contains(s), "a secret leaked: {text}");
        assert!(!debug.contains(s), "a secret leaked in Debug: {debug}");
    }
}

/// Open a provider on `client` with the section's tuning; `prefix` goes before the root
/// keys' labels, `create` makes them if missing.
pub fn open<S: RemoteKms>(
    client: S,
    tuning: &RemoteTuning,
    prefix: &str,
    create: bool,
) -> hanzo_kms_core::Result<RemoteProvider<S>> {
    RemoteProvider::open(
        client,
        &RemoteSettings {
            root_prefix: prefix.to_owned(),
            signing_keys: tuning.signing_keys,
            wrapped_key_cache: tuning.wrapped_key_cache,
        },
        create,
    )
}
