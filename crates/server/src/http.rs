//! The REST listener's connection loop: hyper's server (HTTP/1.1, and HTTP/2 with prior
//! knowledge, as `axum::serve` had it) with a header-read timeout, and a graceful shutdown.
//!
//! `axum::serve` gives hyper no timer, so it has no header-read timeout: a client that sends its
//! headers a byte at a time (slowloris) holds a connection, and a shutdown, for as long as it
//! likes. Here hyper counts `server.header_read_timeout_secs` from the moment it starts waiting
//! for a request head, which on a keep-alive connection is the end of the previous response: the
//! same setting is the idle timeout. On shutdown, idle connections close at once and busy ones
//! after their response.
//!
//! hyper's timer does not cover the bytes before that: hyper-util reads up to the first 24 bytes
//! of a connection to tell HTTP/2's preface from an HTTP/1 request line, and waits for them as
//! long as the client likes. [`Detecting`] gives that phase the same deadline, so a connection
//! that sends nothing, or part of the HTTP/2 preface, is closed too. An HTTP/2 connection is
//! pinged after `header_timeout` without frames and closed if the ping is not answered within
//! `header_timeout`: a dead or stalled peer goes, a live client may keep its connection idle, as
//! gRPC clients do.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
    L::Io: Unpin,
{
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(header_timeout)
        .keep_alive_timeout(header_timeout);
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
            http.serve_connection(TokioIo::new(Detecting::new(io, header_timeout)), service)
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

/// HTTP/2's connection preface. hyper-util reads a connection as HTTP/2 if it begins with these
/// bytes, and as HTTP/1 from the first byte that differs.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection whose reads fail with `TimedOut` if the protocol cannot be told within a
/// deadline: until its bytes differ from [`H2_PREFACE`] or hold all of it, which is when
/// hyper-util decides and hyper's own timers take over. After that it is the connection itself.
struct Detecting<I> {
    io: I,
    /// `None` once the protocol is known.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// How many bytes of the preface the connection has matched so far.
    matched: usize,
}

impl<I> Detecting<I> {
    fn new(io: I, within: Duration) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
            matched: 0,
        }
    }

    /// Account for `read`, the bytes a read just returned.
    fn saw(&mut self, read: &[u8]) {
        let rest = &H2_PREFACE[self.matched..];
        let n = read.len().min(rest.len());
        if read[..n] != rest[..n] || self.matched + n == H2_PREFACE.len() {
            self.deadline = None;
        } else {
            self.matched += n;
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Detecting<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.deadline.is_none() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = buf.filled();
                if filled.len() > before {
                    this.saw(&filled[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no HTTP request or HTTP/2 preface within the header read timeout",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Detecting<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detecting() -> Detecting<tokio::io::Empty> {
        Detecting::new(tokio::io::empty(), Duration::from_secs(60))
    }

    #[tokio::test]
    async fn the_deadline_ends_when_the_protocol_is_known() {
        // An HTTP/1 request line differs from the preface at its first byte.
        let mut d = detecting();
        d.saw(b"G");
        assert!(d.deadline.is_none());

        // The preface in pieces: armed until all 24 bytes are in.
        let mut d = detecting();
        d.saw(&H2_PREFACE[..3]);
        d.saw(&H2_PREFACE[3..16]);
        assert!(d.deadline.is_some());
        assert_eq!(d.matched, 16);
        d.saw(&H2_PREFACE[16..]);
        assert!(d.deadline.is_none());

        // The preface, then more in the same read.
        let mut d = detecting();
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(b"\0\0\0\x04");
        d.saw(&more);
        assert!(d.deadline.is_none());

        // Part of the preface, then a byte that differs: HTTP/1 (hyper answers it with 400).
        let mut d = detecting();
        d.saw(b"PRI * HTTP/2");
        assert!(d.deadline.is_some());
        d.saw(b".1\r\n");
        assert!(d.deadline.is_none());
    }
}
