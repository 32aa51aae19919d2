//! TLS for both listeners (config `server.tls`): rustls on aws-lc-rs, TLS 1.2 and 1.3, the
//! certificate chain and key from PEM files, and mutual TLS when `client_ca_file` is set
//! (clients without a certificate signed by that CA are refused in the handshake).
//!
//! REST: a listener that completes handshakes off the accept loop (a slow or silent client
//! cannot hold up others; a handshake has 10 s) and hands axum finished TLS streams.
//! gRPC: tonic's own rustls support, from the same PEM files.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hanzo_kms_core::config::TlsConfig;
use hanzo_kms_core::{Error, ErrorKind, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn config_error(what: &str, path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Config,
        format!("server.tls.{what} {}: {detail}", path.display()),
    )
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| config_error(what, path, e))
}

fn certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| config_error(what, path, format!("not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(config_error(what, path, "holds no CERTIFICATE block"));
    }
    Ok(certs)
}

/// The PEM files of `server.tls`, checked: (certificate chain, private key, client CA). The
/// key's PEM is wiped when this is dropped.
pub struct Pem {
    pub cert: Vec<u8>,
    pub key: zeroize::Zeroizing<Vec<u8>>,
    pub client_ca: Option<Vec<u8>>,
}

/// Read and check the files; errors name the setting and file, never the key's bytes.
pub fn load(tls: &TlsConfig) -> Result<(Pem, Arc<rustls::ServerConfig>)> {
    let chain = certs("cert_file", &tls.cert_file)?;
    let key_pem = zeroize::Zeroizing::new(read("key_file", &tls.key_file)?);
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        config_error(
            "key_file",
            &tls.key_file,
            "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS setup: {e}")))?;
    let (builder, client_ca) = match &tls.client_ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs("client_ca_file", path)? {
                roots
                    .add(c)
                    .map_err(|e| config_error("client_ca_file", path, e))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| config_error("client_ca_file", path, e))?;
            (
                builder.with_client_cert_verifier(verifier),
                Some(read("client_ca_file", path)?),
            )
        }
        None => (builder.with_no_client_auth(), None),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        config_error(
            "key_file",
            &tls.key_file,
            format!("does not match cert_file ({e})"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let cert = read("cert_file", &tls.cert_file)?;
    Ok((
        Pem {
            cert,
            key: key_pem,
            client_ca,
        },
        Arc::new(config),
    ))
}

/// A TCP listener that yields finished TLS connections.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait and go on.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { rx, local, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task is gone (only when the listener is dropped): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
