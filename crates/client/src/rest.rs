//! The REST transport: JSON over HTTP/1.1 with keep-alive (hyper's pooled client).

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value;

use hanzo_kms_core::{Error, ErrorKind, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

/// TLS material for an `https://` server: a CA to trust instead of the system's roots, and a
/// client identity for mutual TLS (PEM).
#[derive(Default)]
pub(crate) struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    pub identity: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
}

#[derive(Clone)]
pub(crate) struct Rest {
    base: String,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("TLS settings: {what}: {e}"))
}

/// A rustls client config on aws-lc-rs from [`TlsFiles`].
fn client_config(tls: &TlsFiles) -> Result<rustls::ClientConfig> {
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca {
        Some(pem) => {
            for c in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(c.map_err(|e| tls_error("CA", e))?)
                    .map_err(|e| tls_error("CA", e))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("protocol versions", e))?
        .with_root_certificates(roots);
    match &tls.identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| tls_error("client certificate", e))?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|_| tls_error("client key", "no PEM private key"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error("client identity", e))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// How long an idle keep-alive connection stays in the pool.
const POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

impl Rest {
    pub(crate) fn new(base: &str, tls: &TlsFiles) -> Result<Self> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_config(tls)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            base: base.to_owned(),
            // Idle connections are dropped before the server's idle timeout
            // (server.header_read_timeout_secs, 10 s by default) could close one under a request.
            http: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE)
                .pool_timer(TokioTimer::new())
                .build(connector),
        })
    }

    /// One request; a non-2xx answer becomes the error its body describes.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| Error::internal(format!("bad HTTP method {method}")))?;
        // Wiped once sent: an encrypt request carries a plaintext.
        let bytes = match body {
            Some(v) => hanzo_kms_core::secret::secret_json(v)
                .map_err(|e| Error::internal(format!("encoding a request: {e}")))?,
            None => Zeroizing::new(Vec::new()),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_owner(bytes)))
            .map_err(|e| Error::invalid(format!("building the request for {path}: {e}")))?;
        let resp = self.http.request(req).await.map_err(|e| {
            // An HTTP/2-only peer (the gRPC listener) sends its SETTINGS frame at once, which
            // hyper reads either as a message nobody asked for or as a bad status line.
            let mut chain = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                chain.push_str(&format!(": {s}"));
                src = s.source();
            }
            let hint = if chain.contains("invalid HTTP version")
                || chain.contains("received unexpected message")
            {
                " (it did not answer HTTP/1.1: is this the gRPC address? REST listens on \
                 server.rest_addr, 127.0.0.1:8200 by default; or use the gRPC protocol)"
            } else {
                ""
            };
            Error::new(
                ErrorKind::Unavailable,
                format!("cannot reach the server at {}{hint}", self.base),
            )
            .with_source(e)
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Unavailable, "reading the server's answer").with_source(e)
            })?
            .to_bytes();
        let json: Result<Value> = serde_json::from_slice(&body).map_err(|_| {
            Error::new(
                kind_of_status(status),
                format!("the server answered {status} without a JSON body"),
            )
        });
        // The answer may carry a secret. Its bytes are wiped here when this is their last
        // handle (an answer read in several pieces was joined into a buffer of its own); one
        // that still shares hyper's read buffer is not ours to wipe.
        if let Ok(mut b) = body.try_into_mut() {
            zeroize::Zeroize::zeroize(&mut b[..]);
        }
        let json = json?;
        if status.is_success() {
            return Ok(json);
        }
        let err = &json["error"];
        let kind = err["code"]
            .as_str()
            .and_then(ErrorKind::from_code)
            .unwrap_or_else(|| kind_of_status(status));
        let message = err["message"].as_str().unwrap_or("request failed");
        let message = match err["request_id"].as_str() {
            Some(id) => format!("{message} (request {id})"),
            None => message.to_owned(),
        };
        Err(match retry_after {
            Some(s) if kind == ErrorKind::RateLimited => {
                Error::rate_limited(message, std::time::Duration::from_secs(s))
            }
            _ => Error::new(kind, message),
        })
    }
}

fn kind_of_status(s: StatusCode) -> ErrorKind {
    match s.as_u16() {
        400 | 413 => ErrorKind::InvalidArgument,
        401 => ErrorKind::Unauthenticated,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::KeyState,
        429 => ErrorKind::RateLimited,
        408 | 502..=504 => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}
