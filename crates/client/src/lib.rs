//! Rust client for Hanzo KMS, with the API HIP-005 names.
//!
//! ```no_run
//! # async fn demo() -> hanzo_kms_core::Result<()> {
//! use hanzo_kms_client::Client;
//! let kms = Client::builder("http://127.0.0.1:8201", "hkms_…").connect().await?;
//! kms.create_model_keyspace("acme", "gpt4").await?;
//! let sealed = kms.encrypt_model_weights("acme:gpt4", b"weights", b"{}").await?;
//! let weights = kms.decrypt_model_weights("acme:gpt4", &sealed).await?;
//! # Ok(()) }
//! ```
//!
//! - **Transports.** gRPC by default (`http://host:8201`); REST with
//!   [`ClientBuilder::rest`] (`http://host:8200`). Both reach the same pipeline and return the
//!   same types and errors: the server's error kind comes back as the [`Error`]'s kind.
//! - **Model weights never cross the network.** `encrypt_model_weights` asks the server for a
//!   fresh model-file header and its data key (wrapped inside the KMS under the model's key),
//!   then encrypts locally with the streaming AES-256-GCM format (docs/format.md);
//!   `decrypt_model_weights` sends only the header to get the data key back. Files written here
//!   are byte-compatible with `hanzo-kms model encrypt/decrypt`.
//! - **Retries and timeouts.** Every call has a deadline ([`ClientBuilder::timeout`], default
//!   30 s). Calls that are safe to repeat — reads, verifications, decryptions, and signatures
//!   whose nonce the client fixed before the first attempt (the server answers a repeated nonce
//!   with the signature it recorded) — are retried on `unavailable` with exponential back-off
//!   ([`ClientBuilder::retries`], default 3). Key creation, rotation and token changes are not.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod call;
mod rest;
mod transport;

use std::time::Duration;

use hanzo_kms_core::eip712::B32;
use hanzo_kms_core::{Error, Result, SecretKey32};
use serde::{Deserialize, Serialize};
use tonic::transport::Endpoint;
use zeroize::Zeroizing;

pub use hanzo_kms_core::signed::{BatchItem, SignedAttestation, SignedSettlement};
pub use hanzo_kms_proto::v1::PublicKey as PublicKeyInfo;
pub use hanzo_kms_proto::v1::{KeyInfo, TokenInfo};
pub use transport::Client;

use transport::Transport;

/// A verification answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the signature verified and every check passed.
    pub valid: bool,
    /// When invalid: bad_proof, bad_signature, digest_mismatch, expired, not_yet_valid,
    /// replayed or unknown_key.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A general-purpose signature (`api:` keys).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The key that signed.
    pub key: String,
    /// The key version that signed.
    pub version: u32,
    /// secp256k1, p256, ed25519 or ml-dsa-65.
    pub algorithm: String,
    /// `0x`-hex.
    pub signature: String,
    /// Who signed: the EIP-55 address for secp256k1, else `0x` + keccak256(public key).
    pub signer: String,
}

/// A data key from [`Client::generate_data_key`]: use `plaintext`, store `ciphertext`.
pub struct DataKey {
    /// The key that wrapped it.
    pub key: String,
    /// The key version that wrapped it.
    pub version: u32,
    /// The data key itself: use it, never store it (wiped on drop).
    pub plaintext: SecretKey32,
    /// `hkms:vN:…`; [`Client::unwrap_data_key`] turns it back into the plaintext.
    pub ciphertext: String,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("key", &self.key)
            .field("version", &self.version)
            .field("ciphertext", &self.ciphertext)
            .finish_non_exhaustive()
    }
}

/// Which API the client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC (`http://host:8201`), the default.
    Grpc,
    /// REST and JSON (`http://host:8200`).
    Rest,
}

/// Settings for a [`Client`].
pub struct ClientBuilder {
    url: String,
    tls: rest::TlsFiles,
    token: Zeroizing<String>,
    protocol: Protocol,
    timeout: Duration,
    retries: u32,
    threads: usize,
}

impl ClientBuilder {
    /// Speak REST (`http://host:8200`) instead of gRPC.
    pub fn rest(mut self) -> Self {
        self.protocol = Protocol::Rest;
        self
    }

    /// Speak `p`.
    pub fn protocol(mut self, p: Protocol) -> Self {
        self.protocol = p;
        self
    }

    /// The deadline of each attempt of each call (default 30 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// How many times an idempotent call is retried on `unavailable` (default 3).
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// Trust only this CA (PEM) for an `https://` server, instead of the system's roots.
    pub fn tls_ca_pem(mut self, pem: Vec<u8>) -> Self {
        self.tls.ca = Some(pem);
        self
    }

    /// Present this client certificate chain and key (PEM) to a server that asks for one
    /// (mutual TLS, `server.tls.client_ca_file`).
    pub fn tls_identity(mut self, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        self.tls.identity = Some((cert_pem, Zeroizing::new(key_pem)));
        self
    }

    /// Threads for local model-weight encryption (default: all cores).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Build the client. No connection is made until the first call, so a server that is not
    /// up yet is an `unavailable` error of that call (retried where safe), not of this one.
    pub async fn connect(self) -> Result<Client> {
        let url = self.url.trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::invalid(format!(
                "server URL '{url}': expected http://host:port (TLS: https://)"
            )));
        }
        let https = url.starts_with("https://");
        let transport = match self.protocol {
            Protocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(url.clone())
                    .map_err(|e| Error::invalid(format!("server URL '{url}': {e}")))?
                    .timeout(self.timeout)
                    .connect_timeout(self.timeout.min(Duration::from_secs(10)))
                    .tcp_nodelay(true);
                if https {
                    let mut tls = tonic::transport::ClientTlsConfig::new();
                    tls = match &self.tls.ca {
                        Some(ca) => tls.ca_certificate(tonic::transport::Certificate::from_pem(ca)),
                        None => tls.with_native_roots(),
                    };
                    if let Some((cert, key)) = &self.tls.identity {
                        tls = tls
                            .identity(tonic::transport::Identity::from_pem(cert, key.as_slice()));
                    }
                    endpoint = endpoint
                        .tls_config(tls)
                        .map_err(|e| Error::invalid(format!("TLS settings: {e}")))?;
                }
                Transport::Grpc(endpoint.connect_lazy())
            }
            Protocol::Rest => Transport::Rest(Box::new(rest::Rest::new(&url, &self.tls)?)),
        };
        Ok(Client {
            url,
            transport,
            token: self.token,
            timeout: self.timeout,
            retries: self.retries,
            threads: self.threads,
        })
    }
}

impl Client {
    /// A client for the server at `url` with the bearer token `token`.
    pub fn builder(url: &str, token: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_owned(),
            tls: rest::TlsFiles::default(),
            token: Zeroizing::new(token.trim().to_owned()),
            protocol: Protocol::Grpc,
            timeout: Duration::from_secs(30),
            retries: 3,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// A fresh nonce that sorts by time: the time in nanoseconds since the Unix epoch (16 bytes,
/// big-endian), then 16 random bytes. The client fills these into attestations and settlements
/// that have no nonce; use it for your own too.
///
/// The server records every `(key, nonce)` it signs under, for good. Nonces that sort by time
/// land at the end of that index instead of at random places, and the server records them much
/// faster: a gRPC batch of 256 ran at 64k attestations/s against 41k with random nonces
/// (docs/signing.md). They stay unique: 128 random bits per nanosecond.
pub fn time_ordered_nonce() -> Result<B32> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| Error::internal("the system clock is before 1970"))?
        .as_nanos();
    let mut n = [0u8; 32];
    n[..16].copy_from_slice(&nanos.to_be_bytes());
    aws_lc_rs::rand::fill(&mut n[16..]).map_err(|_| Error::internal("random generator failed"))?;
    Ok(B32(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hanzo_kms_core::ErrorKind;
    use tonic::metadata::MetadataValue;
    use transport::{from_status, path_seg};

    #[test]
    fn nonces_sort_by_time_and_do_not_repeat() {
        let ns: Vec<B32> = (0..1000).map(|_| time_ordered_nonce().unwrap()).collect();
        for w in ns.windows(2) {
            // The clock part never goes back; within one nanosecond the random part differs.
            assert!(
                w[0].0[..16] <= w[1].0[..16],
                "{:?} then {:?}",
                w[0].0,
                w[1].0
            );
            assert_ne!(w[0].0, w[1].0);
        }
        let mut tails: Vec<&[u8]> = ns.iter().map(|n| &n.0[16..]).collect();
        tails.sort();
        tails.dedup();
        assert_eq!(tails.len(), ns.len(), "the random halves repeat");
        // The clock part is the time now, in nanoseconds.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let first = u128::from_be_bytes(ns[0].0[..16].try_into().unwrap());
        assert!(
            first <= now && now - first < 60_000_000_000,
            "{first} vs {now}"
        );
    }

    #[test]
    fn model_names_and_path_segments() {
        assert_eq!(api::model_key_name("acme:gpt4"), "model:acme:gpt4");
        assert_eq!(api::model_key_name("model:acme:gpt4"), "model:acme:gpt4");
        assert_eq!(path_seg("model:acme:gpt4"), "model:acme:gpt4");
        assert_eq!(path_seg("a b/c?"), "a%20b%2Fc%3F");
    }

    #[test]
    fn grpc_statuses_read_back_as_exact_error_kinds() {
        let mut s = tonic::Status::invalid_argument("authentication failed");
        s.metadata_mut().insert(
            "x-error-code",
            MetadataValue::from_static("authentication_failed"),
        );
        assert_eq!(from_status(s, "u").kind(), ErrorKind::AuthenticationFailed);
        let mut s = tonic::Status::resource_exhausted("slow down");
        s.metadata_mut()
            .insert("retry-after", MetadataValue::from_static("3"));
        let e = from_status(s, "u");
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        let e = from_status(
            tonic::Status::unavailable("tcp connect error"),
            "http://h:1",
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(
            e.message(),
            "cannot reach the server at http://h:1 (tcp connect error)"
        );
    }

    #[test]
    fn a_data_key_debug_shows_no_key() {
        let k = DataKey {
            key: "data:a:b".into(),
            version: 1,
            plaintext: SecretKey32::from_slice(&[0xAB; 32]).unwrap(),
            ciphertext: "hkms:v1:x".into(),
        };
        let d = format!("{k:?}");
        assert!(
            !d.contains("171") && !d.to_lowercase().contains("abab"),
            "{d}"
        );
    }
}
