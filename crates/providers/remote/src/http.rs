//! A small blocking HTTP client for the service clients: ureq 3 over rustls with aws-lc-rs
//! (the TLS stack the server already uses) and the platform's trust store; timeouts; retries
//! with exponential backoff and jitter on throttling and unavailability. A call still throttled
//! after its retries ends as [`ErrorKind::RateLimited`] with a `retry_after` (the service's
//! `Retry-After`, else the next backoff delay), so the server answers 429 + `Retry-After`; one
//! still failing or unreachable ends as [`ErrorKind::Unavailable`].
//!
//! The [`Provider`](hanzo_kms_core::Provider) trait is synchronous, so the client is too: a
//! blocking client needs no async runtime inside a provider call (which the server makes from
//! its async workers, where a nested runtime would panic).

use std::sync::Arc;
use std::time::Duration;

use hanzo_kms_core::config::RemoteTuning;
use hanzo_kms_core::{Error, ErrorKind, Result};
use zeroize::Zeroizing;

/// First backoff delay; doubled per retry up to [`BACKOFF_MAX`], with up to 50 % jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// An answer: status and body (wiped when dropped: it may hold a plaintext).
pub struct Reply {
    pub status: u16,
    pub body: Zeroizing<Vec<u8>>,
}

impl Reply {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// What a client thinks of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Use it (success or an error the caller maps).
    Done,
    /// Unavailable or a transient failure: try again after a backoff, if retries are left;
    /// then the call is `Unavailable`.
    Retry,
    /// Throttled (HTTP 429, `ThrottlingException`, `RESOURCE_EXHAUSTED`): try again after a
    /// backoff, if retries are left; then the call is `RateLimited`.
    Throttled,
}

/// One HTTP client per provider.
pub struct Http {
    agent: ureq::Agent,
    service: &'static str,
    max_retries: u32,
}

impl Http {
    pub fn new(service: &'static str, tuning: &RemoteTuning) -> Self {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Per phase, not `timeout_global`: with a global (or per-call) timeout ureq made each
            // call cost about 0.3 to 2.5 ms more on loopback (remote_bench, release: a DEK wrap
            // on OpenBao took 1.5 to 2.9 ms through the provider against 0.7 ms bare, and 3.3 ms
            // bare with the same timeouts set). Each phase is bounded by `timeout`.
            .timeout_connect(Some(tuning.connect_timeout))
            .timeout_send_request(Some(tuning.timeout))
            .timeout_send_body(Some(tuning.timeout))
            .timeout_recv_response(Some(tuning.timeout))
            .timeout_recv_body(Some(tuning.timeout))
            .tls_config(tls)
            .build()
            .into();
        Self {
            agent,
            service,
            max_retries: tuning.max_retries,
        }
    }

    /// Send the request `build` makes (called again for each retry, so a signature can be
    /// made afresh), retrying while `judge` says so or the transport fails. `what` describes
    /// the call for errors (service, operation, key; never a credential).
    pub fn send(
        &self,
        what: &dyn Fn() -> String,
        build: &dyn Fn() -> Result<ureq::http::Request<Vec<u8>>>,
        judge: &dyn Fn(&Reply) -> Verdict,
    ) -> Result<Reply> {
        let mut delay = BACKOFF_FIRST;
        let mut attempt = 0u32;
        loop {
            let req = build()?;
            let outcome = self.agent.run(req);
            let retry_left = attempt < self.max_retries;
            match outcome {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    let body = resp
                        .into_body()
                        .with_config()
                        .limit(16 << 20)
                        .read_to_vec()
                        .map_err(|e| self.transport(what, &e.to_string(), attempt))?;
                    let reply = Reply {
                        status,
                        body: Zeroizing::new(body),
                    };
                    let verdict = judge(&reply);
                    if verdict == Verdict::Done {
                        return Ok(reply);
                    }
                    if !retry_left {
                        let tries = attempt + 1;
                        let what = what();
                        if verdict == Verdict::Throttled {
                            // The service's own hint, else the delay the next retry would wait.
                            let wait = retry_after.unwrap_or(delay).max(Duration::from_secs(1));
                            return Err(Error::rate_limited(
                                format!(
                                    "{}: {what}: still throttled (HTTP {status}) after {tries} attempts; \
                                     the service's request quota is exhausted, try again in {} s",
                                    self.service,
                                    wait.as_secs_f64().ceil()
                                ),
                                wait,
                            ));
                        }
                        return Err(Error::new(
                            ErrorKind::Unavailable,
                            format!(
                                "{}: {what}: still unavailable (HTTP {status}) after {tries} attempts",
                                self.service,
                            ),
                        ));
                    }
                    tracing::debug!(
                        service = self.service,
                        status,
                        attempt,
                        "retrying: {}",
                        what()
                    );
                    if let Some(hint) = retry_after {
                        // Honour the service's hint, within our own backoff bound.
                        delay = delay.max(hint.min(BACKOFF_MAX));
                    }
                }
                Err(e) => {
                    if !retry_left {
                        return Err(self.transport(what, &e.to_string(), attempt));
                    }
                    tracing::debug!(
                        service = self.service,
                        attempt,
                        "retrying after {e}: {}",
                        what()
                    );
                }
            }
            std::thread::sleep(jitter(delay));
            delay = (delay * 2).min(BACKOFF_MAX);
            attempt += 1;
        }
    }

    fn transport(&self, what: &dyn Fn() -> String, cause: &str, attempt: u32) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "{}: {}: cannot reach the service ({cause}) after {} attempt{}",
                self.service,
                what(),
                attempt + 1,
                if attempt == 0 { "" } else { "s" }
            ),
        )
    }
}

/// A `Retry-After` value in seconds (RFC 9110 §10.2.3 delay-seconds; an HTTP-date is ignored,
/// and the backoff applies). Capped at an hour.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}

/// `d` plus up to 50 % of it, at random.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 1];
    let _ = hanzo_kms_crypto::rng::fill(&mut b);
    d + d * u32::from(b[0]) / 512
}

/// The error text of a JSON error body, for messages (`errors` of Vault, `message` of AWS).
pub fn error_text(reply: &Reply) -> String {
    let text = reply.json().and_then(|v| {
        if let Some(list) = v.get("errors").and_then(|e| e.as_array()) {
            let parts: Vec<_> = list.iter().filter_map(|e| e.as_str()).collect();
            return Some(parts.join("; ").replace('\n', " ").replace('\t', ""));
        }
        v.get("message")
            .or_else(|| v.get("Message"))
            .and_then(|m| m.as_str())
            .map(str::to_owned)
    });
    let text = text.unwrap_or_else(|| String::from_utf8_lossy(&reply.body).into_owned());
    let text = text.trim();
    // Keep messages short; a service error body is not a place for anything secret, but an
    // HTML error page is not worth quoting in full.
    text.chars().take(300).collect()
}
