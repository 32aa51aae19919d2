//! The server: its settings, its shared state, binding the listeners, serving REST and gRPC
//! until shutdown, and the background tasks (rotation scheduler, failover health checks, the
//! storage watch).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hanzo_kms_core::{Error, ErrorKind, Result};
use hanzo_kms_service::ratelimit::ConfiguredLimiter;
use hanzo_kms_service::{Kms, Principal, RequestCtx, Role, now_secs};

use crate::middleware::*;
use crate::{grpc, http, tls};

/// Server settings (from the config's `server` section).
#[derive(Clone, Debug)]
pub struct Options {
    pub rest_addr: String,
    /// The gRPC listener; `None` serves REST only.
    pub grpc_addr: Option<String>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// REST: how long a request's headers may take to arrive, and how long a keep-alive
    /// connection may sit idle (`server.header_read_timeout_secs`).
    pub header_read_timeout: Duration,
    /// How often the rotation scheduler runs; `None` disables it.
    pub scheduler_every: Option<Duration>,
    /// TLS for both listeners (`server.tls`); `None` serves plain HTTP.
    pub tls: Option<hanzo_kms_core::config::TlsConfig>,
}

impl Options {
    pub fn from_config(c: &hanzo_kms_core::Config) -> Self {
        Self {
            rest_addr: c.server.rest_addr.clone(),
            grpc_addr: Some(c.server.grpc_addr.clone()).filter(|a| !a.is_empty()),
            max_body_bytes: usize::try_from(c.server.max_body_bytes).unwrap_or(usize::MAX),
            // At most a day, like the header timeout (the shutdown grace adds 1.9 s to it).
            request_timeout: Duration::from_secs(c.server.request_timeout_secs.clamp(1, 86_400)),
            // At most a day: HTTP/2's keep-alive timer adds it to an instant.
            header_read_timeout: Duration::from_secs(
                c.server.header_read_timeout_secs.clamp(1, 86_400),
            ),
            scheduler_every: Some(Duration::from_secs(60)),
            tls: c.server.tls.clone(),
        }
    }
}

pub(crate) struct AppState {
    pub(crate) kms: Kms,
    pub(crate) limiter: Option<Arc<ConfiguredLimiter>>,
    /// Requests by route, then status.
    pub(crate) requests: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    pub(crate) timeouts: std::sync::atomic::AtomicU64,
}

pub(crate) type Shared = Arc<AppState>;

impl AppState {
    /// Count a request for `/metrics`.
    pub(crate) fn count(&self, route: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        // The route's name is copied only the first time it is counted.
        match requests.get_mut(route) {
            Some(by_status) => *by_status.entry(status).or_insert(0) += 1,
            None => {
                requests.insert(route.to_owned(), BTreeMap::from([(status, 1)]));
            }
        }
    }
}

/// A bound, not yet running server.
pub struct Server {
    listener: tokio::net::TcpListener,
    grpc: Option<tokio::net::TcpListener>,
    max_body_bytes: usize,
    request_timeout: Duration,
    /// How long a stopping server waits for requests in flight.
    grace: Duration,
    header_read_timeout: Duration,
    tls: Option<(tls::Pem, Arc<tokio_rustls::rustls::ServerConfig>)>,
    grpc_builder: tonic::transport::Server,
    app: Router,
    state: Shared,
    scheduler_every: Option<Duration>,
}

impl Server {
    /// Bind the REST listener. An address in use or invalid is a config error naming
    /// `server.rest_addr`.
    pub async fn bind(
        kms: Kms,
        limiter: Option<Arc<ConfiguredLimiter>>,
        opts: &Options,
    ) -> Result<Self> {
        // Read the TLS files first: a bad certificate stops the start before anything listens.
        let tls = opts.tls.as_ref().map(tls::load).transpose()?;
        // The request timeout is applied per RPC in `grpc::service` (VerifyAudit gets longer);
        // tonic still honours a client's own `grpc-timeout`.
        let mut grpc_builder = tonic::transport::Server::builder();
        if let Some((pem, _)) = &tls {
            let mut c = tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(&pem.cert, pem.key.as_slice()),
            );
            if let Some(ca) = &pem.client_ca {
                c = c.client_ca_root(tonic::transport::Certificate::from_pem(ca));
            }
            grpc_builder = grpc_builder
                .tls_config(c)
                .map_err(|e| Error::new(ErrorKind::Config, format!("server.tls: {e}")))?;
        }
        let listener = listen("server.rest_addr", &opts.rest_addr).await?;
        let grpc = match &opts.grpc_addr {
            Some(a) => Some(listen("server.grpc_addr", a).await?),
            None => None,
        };
        let state = Arc::new(AppState {
            kms,
            limiter,
            requests: Mutex::new(BTreeMap::new()),
            timeouts: Default::default(),
        });
        let app = crate::routes::router(state.clone(), opts.max_body_bytes, opts.request_timeout)?;
        Ok(Self {
            listener,
            grpc,
            max_body_bytes: opts.max_body_bytes,
            request_timeout: opts.request_timeout,
            // A request cut off at its timeout still writes that record (at most
            // TIMEOUT_AUDIT_LIMIT) and its answer.
            grace: opts.request_timeout + TIMEOUT_AUDIT_LIMIT + Duration::from_secs(1),
            header_read_timeout: opts.header_read_timeout,
            tls,
            grpc_builder,
            app,
            state,
            scheduler_every: opts.scheduler_every,
        })
    }

    /// The REST listener's address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::new(ErrorKind::Io, "reading the listen address").with_source(e))
    }

    /// Whether the listeners speak TLS (`https://`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The gRPC listener's address, if gRPC is served.
    pub fn grpc_addr(&self) -> Result<Option<SocketAddr>> {
        self.grpc
            .as_ref()
            .map(|l| {
                l.local_addr().map_err(|e| {
                    Error::new(ErrorKind::Io, "reading the listen address").with_source(e)
                })
            })
            .transpose()
    }

    /// Serve REST and gRPC until `shutdown` completes, then finish the requests in flight on
    /// both before returning.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let health_checks = self.state.kms.failover().map(|_| {
            let every = self
                .state
                .kms
                .config()
                .kms
                .lux
                .failover
                .health_check_interval
                .0;
            tokio::spawn(failover_checks(self.state.clone(), every))
        });
        let storage = Some(tokio::spawn(storage_watch(
            self.state.clone(),
            self.state.kms.config().storage.free_space_warning_mib,
        )));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop_tx = std::sync::Arc::new(stop_tx);
        let signal = stop_tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            let _ = signal.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let background = self.scheduler_every.map(|every| {
            tokio::spawn(scheduler(
                self.state.clone(),
                every,
                stopped(stop_rx.clone()),
            ))
        });
        let grpc_builder = self.grpc_builder;
        let grpc = self.grpc.map(|listener| {
            let svc = grpc::service(
                self.state.clone(),
                self.max_body_bytes,
                self.request_timeout,
            );
            let reflection = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(hanzo_kms_proto::v1::FILE_DESCRIPTOR_SET)
                .build_v1();
            let mut grpc_builder = grpc_builder;
            let builder = grpc_builder.add_service(svc);
            let stop = stopped(stop_rx.clone());
            tokio::spawn(async move {
                let router = match reflection {
                    Ok(r) => builder.add_service(r),
                    Err(e) => {
                        tracing::warn!(error = %e, "gRPC reflection is unavailable");
                        builder
                    }
                };
                router
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true)),
                        stop,
                    )
                    .await
                    .map_err(|e| Error::new(ErrorKind::Io, "serving gRPC").with_source(e))
            })
        });
        let app = self.app;
        let header_timeout = self.header_read_timeout;
        let grace_rx = stop_rx.clone();
        let serving = async move {
            match self.tls {
                Some((_, config)) => {
                    let listener = tls::TlsListener::new(self.listener, config)
                        .map_err(|e| Error::new(ErrorKind::Io, "starting TLS").with_source(e))?;
                    http::serve(listener, app, header_timeout, stopped(stop_rx)).await;
                }
                None => {
                    use axum::serve::ListenerExt;
                    let listener = self.listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    http::serve(listener, app, header_timeout, stopped(stop_rx)).await;
                }
            }
            match grpc {
                Some(t) => t
                    .await
                    .map_err(|e| Error::internal(format!("the gRPC server task failed: {e}")))
                    .and_then(|r| r),
                None => Ok(()),
            }
        };
        // Graceful, but bounded: after the signal, requests in flight get the request timeout
        // (plus 1.9 s: a timeout's audit record and answer) to finish; idle keep-alive
        // connections and clients that never close their HTTP/2 connection do not hold the
        // process up past that.
        let grace = self.grace;
        let deadline = async move {
            stopped(grace_rx).await;
            tokio::time::sleep(grace).await;
        };
        let r = tokio::select! {
            r = serving => r,
            () = deadline => {
                tracing::warn!(?grace, "shutdown: connections still open after the grace period were closed");
                Ok(())
            }
        };
        // Serving may also end without the signal (a listener that failed): stop the rest too.
        stop_tx.send_replace(true);
        // The scheduler finishes the pass it is in (an export half written would leave a file
        // no export record names) before the store closes; it has had the grace period already
        // (it stops at the signal, between passes), and gets SCHEDULER_STOP more. A pass that
        // takes longer is cut short: whatever it did commits whole or not at all.
        if let Some(mut b) = background
            && tokio::time::timeout(SCHEDULER_STOP, &mut b).await.is_err()
        {
            tracing::warn!(
                ?SCHEDULER_STOP,
                "shutdown: the scheduler's pass was still running and was cut short"
            );
            b.abort();
            let _ = tokio::time::timeout(ABORTED_STOP, b).await;
        }
        for b in [health_checks, storage].into_iter().flatten() {
            b.abort();
            // Gone before the store closes: an aborted task stops at its next await (a task
            // inside a provider call that does not return is left behind after ABORTED_STOP).
            let _ = tokio::time::timeout(ABORTED_STOP, b).await;
        }
        self.state.kms.close().await;
        r
    }
}

/// How long shutdown waits for the scheduler's pass in progress (an audit export of a
/// retention's records, a prune in batches) before cutting it short.
const SCHEDULER_STOP: Duration = Duration::from_secs(30);

/// How long shutdown waits for an aborted background task to stop before closing the store.
const ABORTED_STOP: Duration = Duration::from_secs(5);

pub(crate) async fn listen(setting: &str, addr: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("{setting} {addr}: cannot listen"),
        )
        .with_source(e)
    })
}

/// Failover health checks (`kms.lux.failover.health_check_interval`); transitions are logged
/// and audited by the service, and counted in `/metrics`.
pub(crate) async fn failover_checks(state: Shared, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        state.kms.failover_check().await;
    }
}

/// Every few seconds: the counted repeats of server errors go to the log
/// (`repeats::flush`), and, on SQLite, a warning is logged once when the free space on the
/// store's filesystem falls below `storage.free_space_warning_mib` (0: never), and a line when
/// it is back above (with 10 % hysteresis, so that it is not logged at every check near the line).
pub(crate) async fn storage_watch(state: Shared, warn_below_mib: u64) {
    let threshold = warn_below_mib.saturating_mul(1 << 20);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut low = false;
    loop {
        tick.tick().await;
        crate::repeats::flush();
        if threshold == 0 {
            continue;
        }
        let Some(usage) = state.kms.store_disk_usage() else {
            continue;
        };
        let Some(free) = usage.free_bytes else {
            continue;
        };
        if !low && free < threshold {
            low = true;
            tracing::warn!(
                free_mib = free >> 20,
                store_mib = usage.store_bytes >> 20,
                warn_below_mib,
                "the store's filesystem is running out of space: when it is full, every request fails (audit_failure) until space is freed"
            );
        } else if low && free >= threshold.saturating_add(threshold / 10) {
            low = false;
            // At the warning's level, so that a log at the default level shows both.
            tracing::warn!(
                free_mib = free >> 20,
                warn_below_mib,
                "the store's filesystem has space again"
            );
        }
    }
}

/// The rotation scheduler (`rotate --due`, `destroy --due`) and limiter housekeeping. Safe on
/// every node: rotation and destruction are transactions that re-check the key's state.
/// Stops at `stop`, between passes: a pass that started runs to its end.
pub(crate) async fn scheduler(
    state: Shared,
    every: Duration,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let mut tick = tokio::time::interval(every);
    let mut first_tick = true;
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => return,
            _ = tick.tick() => {}
        }
        let ctx = system_ctx();
        let now = now_secs();
        for (what, r) in [
            ("rotate", state.kms.rotate_due(&ctx, now).await),
            ("destroy", state.kms.destroy_due(&ctx, now).await),
        ] {
            match r {
                Ok(done) => {
                    for d in done {
                        match d.result {
                            Ok(_) => tracing::info!(key = %d.key, "scheduler: {what} done"),
                            Err(e) => {
                                tracing::warn!(key = %d.key, error = %e, "scheduler: {what} failed")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "scheduler: {what} pass failed"),
            }
        }
        // Replay records whose messages expired (docs/signing.md, "Replay records expire").
        match state
            .kms
            .prune_replay(u64::try_from(now).unwrap_or(0))
            .await
        {
            Ok(p) if !p.is_empty() => tracing::info!(
                nonces = p.nonces,
                consumed_attestations = p.consumed,
                "scheduler: expired replay records pruned"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "scheduler: pruning replay records failed"),
        }
        // Audit checkpoints, and with a retention, archives and prunes (docs/operations.md,
        // "Audit archives"). Not at the first tick: a node that just started is busy with its
        // first requests, and the first checkpoint makes the audit key (a key generation in the
        // provider, and a transaction).
        let audit = if first_tick {
            Ok(Default::default())
        } else {
            state.kms.audit_maintenance(now.saturating_mul(1000)).await
        };
        first_tick = false;
        match audit {
            Ok(m) => {
                if let Some(c) = &m.checkpoint {
                    tracing::debug!(seq = c.seq, "scheduler: audit checkpoint signed");
                }
                if let (Some(e), Some(p)) = (&m.export, &m.pruned) {
                    tracing::info!(
                        file = %e.file.display(),
                        first = e.first,
                        last = e.last,
                        pruned = p.deleted,
                        "scheduler: audit records archived and pruned"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "scheduler: audit checkpoint or archive failed"),
        }
        if let Some(l) = &state.limiter {
            l.forget_idle();
        }
        if let Err(e) = state.kms.record_unrecorded_refusals().await {
            tracing::warn!(error = %e, "scheduler: the count of refused requests was not recorded");
        }
        state.kms.auth_guard().forget_idle();
    }
}

pub(crate) fn system_ctx() -> RequestCtx {
    RequestCtx {
        request_id: uuid::Uuid::new_v4().to_string(),
        principal: Principal {
            id: "system:scheduler".into(),
            tenant: None,
            roles: vec![Role::Admin],
            patterns: Vec::new(),
        },
        peer: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_bounded_to_a_day() {
        let c = hanzo_kms_core::Config::from_yaml(
            "server:\n  request_timeout_secs: 18446744073709551615\n  header_read_timeout_secs: 18446744073709551615\n",
            "test",
            std::iter::empty::<(&str, &str)>(),
        )
        .unwrap();
        let o = Options::from_config(&c);
        let day = Duration::from_secs(86_400);
        assert_eq!((o.request_timeout, o.header_read_timeout), (day, day));
        // What the server adds to them does not overflow.
        let _ = o.request_timeout + Duration::from_secs(1);
        let _ = std::time::Instant::now() + o.header_read_timeout;
    }
}
