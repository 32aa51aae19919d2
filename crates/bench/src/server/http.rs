//! The bench's HTTP/1.1 client and the servers' own counters.
//!
//! [`Conn`] is a small keep-alive HTTP/1.1 connection of our own, one request in flight at a
//! time, opened afresh when it has been idle near the server's timeout. [`commits`] reads the
//! group committer's and the store's counters from each node's `/metrics`, from which the
//! figures' commits, fsyncs and committer cycle per request are computed.

use std::time::{Duration, Instant};

use hanzo_kms_core::{Error, ErrorKind, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The group committer's and the store's counters from a node's `/metrics`.
#[derive(Clone, Copy, Default)]
pub(super) struct Counters {
    pub(super) requests: u64,
    pub(super) transactions: u64,
    /// WAL syncs (SQLite only).
    pub(super) fsyncs: Option<u64>,
    /// Checkpoints that copied WAL frames (SQLite only).
    pub(super) checkpoints: Option<u64>,
    /// The committer's seconds in its commit, sync, answer and checkpoint phases.
    pub(super) phases: Option<[f64; 4]>,
    /// The requests' seconds waiting for a batch to start, and to run again once answered
    /// (summed over requests).
    pub(super) waits: Option<[f64; 2]>,
}

/// [`Counters`] from every node's `/metrics`, summed, if the servers report them.
pub(super) async fn commits(addrs: &[String]) -> Result<Option<Counters>> {
    let add = |x: Option<u64>, y: Option<u64>| match (x, y) {
        (None, None) => None,
        (x, y) => Some(x.unwrap_or(0) + y.unwrap_or(0)),
    };
    let mut sum: Option<Counters> = None;
    for a in addrs {
        if let Some(c) = commits_of(a).await? {
            let s = sum.unwrap_or_default();
            sum = Some(Counters {
                requests: s.requests + c.requests,
                transactions: s.transactions + c.transactions,
                fsyncs: add(s.fsyncs, c.fsyncs),
                checkpoints: add(s.checkpoints, c.checkpoints),
                phases: add_each(s.phases, c.phases),
                waits: add_each(s.waits, c.waits),
            });
        }
    }
    Ok(sum)
}

/// Two nodes' figures summed element by element; a node that does not report them adds nothing.
fn add_each<const N: usize>(x: Option<[f64; N]>, y: Option<[f64; N]>) -> Option<[f64; N]> {
    match (x, y) {
        (Some(x), Some(y)) => Some(std::array::from_fn(|i| x[i] + y[i])),
        (x, y) => x.or(y),
    }
}

async fn commits_of(addr: &str) -> Result<Option<Counters>> {
    let mut c = Conn::open(addr).await?;
    c.call("GET", "/metrics", "", "").await?;
    let text = String::from_utf8_lossy(&c.last_body).to_string();
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let labelled = |metric: &str, label: &str, value: &str| {
        let name = format!("{metric}{{{label}=\"{value}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let phase = |p: &str| labelled("hanzo_kms_group_commit_seconds_total", "phase", p);
    let wait = |w: &str| {
        labelled(
            "hanzo_kms_group_commit_request_wait_seconds_total",
            "wait",
            w,
        )
    };
    Ok(get("hanzo_kms_group_commit_requests_total ")
        .zip(get("hanzo_kms_group_commit_transactions_total "))
        .map(|(requests, transactions)| Counters {
            requests,
            transactions,
            fsyncs: get("hanzo_kms_store_fsyncs_total "),
            checkpoints: get("hanzo_kms_store_checkpoints_total "),
            phases: ["commit", "sync", "answer"]
                .map(&phase)
                .into_iter()
                .collect::<Option<Vec<f64>>>()
                // A server before session 11 reports no checkpoint phase: 0 there.
                .map(|v| [v[0], v[1], v[2], phase("checkpoint").unwrap_or(0.0)]),
            // Reported since session 17.
            waits: wait("queue").zip(wait("wakeup")).map(|(q, w)| [q, w]),
        }))
}

/// One keep-alive HTTP/1.1 connection.
pub(super) struct Conn {
    r: BufReader<TcpStream>,
    host: String,
    pub(super) last_body: Vec<u8>,
    /// Signed batch items that settlements will pay for (the settle figure).
    pub(super) paid: Vec<serde_json::Value>,
    /// When the last answer was read: a connection idle for [`CONN_IDLE_LIMIT`] is opened
    /// afresh, before the server's idle timeout closes it under a request.
    last_used: Instant,
}

/// As the client crate's pool: below the server's idle timeout (`server.header_read_timeout_secs`,
/// 10 s by default), so that a slow open-loop figure does not send into a closed connection.
const CONN_IDLE_LIMIT: Duration = Duration::from_secs(5);

impl Conn {
    pub(super) async fn open(addr: &str) -> Result<Self> {
        let s = TcpStream::connect(addr).await.map_err(|e| {
            Error::new(ErrorKind::Unavailable, format!("connecting to {addr}")).with_source(e)
        })?;
        let _ = s.set_nodelay(true);
        Ok(Self {
            r: BufReader::new(s),
            host: addr.to_owned(),
            last_body: Vec::new(),
            paid: Vec::new(),
            last_used: Instant::now(),
        })
    }

    /// Send one request and read the whole response; returns the status.
    pub(super) async fn call(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> Result<u16> {
        let io = |e: std::io::Error| {
            Error::new(ErrorKind::Unavailable, "talking to the server").with_source(e)
        };
        if self.last_used.elapsed() >= CONN_IDLE_LIMIT {
            *self = Self::open(&self.host).await?;
        }
        let auth = if token.is_empty() {
            String::new()
        } else {
            format!("Authorization: Bearer {token}\r\n")
        };
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.r
            .get_mut()
            .write_all(req.as_bytes())
            .await
            .map_err(io)?;
        let mut line = String::new();
        self.r.read_line(&mut line).await.map_err(io)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                Error::new(ErrorKind::Unavailable, format!("bad status line {line:?}"))
            })?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.r.read_line(&mut line).await.map_err(io)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        self.last_body.resize(len, 0);
        self.r.read_exact(&mut self.last_body).await.map_err(io)?;
        self.last_used = Instant::now();
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_connection_is_opened_afresh_before_the_server_closes_it() {
        use tokio::io::AsyncWriteExt;
        // A server that answers one request per connection and then closes it, as the real one
        // closes a connection idle past its timeout.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut r = BufReader::new(s);
                let mut line = String::new();
                // The request line and headers; the test's requests have no body.
                while r.read_line(&mut line).await.unwrap() > 0 && line != "\r\n" {
                    line.clear();
                }
                let body = "{}";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                r.get_mut().write_all(resp.as_bytes()).await.unwrap();
            }
        });
        let mut c = Conn::open(&addr).await.unwrap();
        assert_eq!(c.call("GET", "/healthz", "", "").await.unwrap(), 200);
        assert_eq!(c.last_body, b"{}");
        // Idle past the limit: the next request goes out on a new connection and is answered.
        c.last_used = Instant::now()
            .checked_sub(CONN_IDLE_LIMIT)
            .expect("the clock is past the limit");
        assert_eq!(c.call("GET", "/healthz", "", "").await.unwrap(), 200);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(c.host, addr);
    }
}
