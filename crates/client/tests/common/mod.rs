//! A server bound on loopback ports (REST and gRPC) for the client tests: a fresh data directory
//! under `dir`, an all-tenant admin token, optional TLS. Binding errors are returned (the TLS
//! tests expect some).

use std::path::Path;

use hanzo_kms_core::config::TlsConfig;
use hanzo_kms_core::{Config, Result};
use hanzo_kms_server::{Options, Server};
use hanzo_kms_service::{Kms, RequestCtx, Role, Settings};

/// The bound server and the admin token.
pub async fn bind(dir: &Path, tls: Option<TlsConfig>) -> Result<(Server, String)> {
    let config = Config::from_yaml("", "test", std::iter::empty::<(&str, &str)>())?;
    let settings = Settings {
        data_dir: dir.join("data"),
        config: config.clone(),
        master_key_env: None,
    };
    let (kms, _) = Kms::init(&settings).await?;
    let (_, admin) = kms
        .create_token(&RequestCtx::local(), "*", &[Role::Admin], &[], "test")
        .await?;
    let mut opts = Options::from_config(&config);
    opts.rest_addr = "127.0.0.1:0".into();
    opts.grpc_addr = Some("127.0.0.1:0".into());
    opts.scheduler_every = None;
    opts.tls = tls;
    Ok((
        Server::bind(kms, None, &opts).await?,
        admin.expose().to_owned(),
    ))
}
