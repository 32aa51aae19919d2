//! A server on loopback ports (REST and gRPC) for the server's and the client's tests: a fresh
//! data directory, an all-tenant admin token, the configured rate limits. The client crate's
//! tests include this file too (`#[path]`), so there is one way to start a test server.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hanzo_kms_core::{Config, Result};
use hanzo_kms_server::{Options, Server};
use hanzo_kms_service::ratelimit::ConfiguredLimiter;
use hanzo_kms_service::{Kms, RequestCtx, Role, Settings};

/// A server bound on loopback ports, with its data in `data_dir`, configured by `yaml` and then
/// `tweak`, and the admin token. Binding errors are returned (the TLS tests expect some).
pub async fn bind(
    data_dir: &Path,
    yaml: &str,
    tweak: impl FnOnce(&mut Options),
) -> Result<(Server, String)> {
    let config = Config::from_yaml(yaml, "test", std::iter::empty::<(&str, &str)>())?;
    let settings = Settings {
        data_dir: data_dir.to_path_buf(),
        config: config.clone(),
        master_key_env: None,
    };
    let (kms, _) = Kms::init(&settings).await?;
    let (_, admin) = kms
        .create_token(&RequestCtx::local(), "*", &[Role::Admin], &[], "test admin")
        .await?;
    let limiter = Arc::new(ConfiguredLimiter::new(&config.rate_limits)?);
    let guard = Arc::new(hanzo_kms_service::guard::AuthGuard::new(
        &config.auth.failures_per_peer,
    )?);
    let kms = kms.with_limiter(limiter.clone()).with_auth_guard(guard);
    let mut opts = Options::from_config(&config);
    opts.rest_addr = "127.0.0.1:0".into();
    opts.grpc_addr = Some("127.0.0.1:0".into());
    opts.scheduler_every = None;
    tweak(&mut opts);
    let server = Server::bind(kms, Some(limiter), &opts).await?;
    Ok((server, admin.expose().to_owned()))
}

/// A running server (see [`start`]).
pub struct Running {
    pub addr: SocketAddr,
    /// The gRPC listener.
    pub grpc: SocketAddr,
    pub admin: String,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// [`bind`] in a fresh temporary directory, then serve until [`Running::stop`].
pub async fn start(yaml: &str, tweak: impl FnOnce(&mut Options)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = bind(dir.path(), yaml, tweak).await.unwrap();
    let addr = server.local_addr().unwrap();
    let grpc = server.grpc_addr().unwrap().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        grpc,
        admin,
        dir,
        stop: Some(tx),
        task: Some(task),
    }
}
