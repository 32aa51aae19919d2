//! The REST listener's connection loop: hyper's server (HTTP/1.1, and HTTP/2 with prior
//! knowledge, as `axum::serve` had it) with a header-read timeout, and a graceful shutdown.
//!
//! `axum::serve` gives hyper no timer, so it has no header-read timeout: a client that sends its
//! headers a byte at a time (slowloris) holds a connection, and a shutdown, for as long as it
//! likes. Here hyper counts `server.header_read_timeout_secs` from the moment it starts waiting
//! for a request head, which on a keep-alive connection is the end of the previous response: the
//! same setting is the idle timeout. On shutdown, idle connections close at once and busy ones
//! after their response.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tower_service::Service;

/// Serve `app` on `listener` until `stop` completes, then wait for the connections to finish.
/// Every request carries the peer's address as [`ConnectInfo`].
pub(crate) async fn serve<L>(
    mut listener: L,
    app: Router,
    header_timeout: Duration,
    stop: impl Future<Output = ()>,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (io, peer) = tokio::select! {
            c = listener.accept() => c,
            () = &mut stop => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().call(req)
        });
        let conn = graceful.watch(
            http.serve_connection(TokioIo::new(io), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            // A client that hung up, sent garbage or was too slow with its headers.
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
