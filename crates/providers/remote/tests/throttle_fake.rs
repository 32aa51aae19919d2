//! Throttling and retries against a fake HTTP server on loopback (no real service throttles on
//! demand): a server that answers 429 a given number of times before answering, counting the
//! requests it got. The names say "fake" as the house rules ask.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hanzo_kms_core::ErrorKind;
use hanzo_kms_core::config::{ConfigSecret, OpenBaoConfig};
use hanzo_kms_remote::{OpenBao, RemoteKms};

/// Serve `throttled` 429s, then 200 `{"data":{}}` to every request; returns the address and
/// the request counter.
fn fake_server(throttled: usize) -> (String, Arc<AtomicUsize>) {
    fake_server_answering(throttled, "429 Too Many Requests", None)
}

/// Serve `failing` answers of `status` (with `Retry-After: retry_after` when given), then 200.
fn fake_server_answering(
    failing: usize,
    status: &'static str,
    retry_after: Option<u32>,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let n = count.fetch_add(1, Ordering::SeqCst);
            let (status, body, extra) = if n < failing {
                (
                    status,
                    r#"{"errors":["rate limit quota exceeded"]}"#,
                    retry_after.map_or(String::new(), |s| format!("Retry-After: {s}\r\n")),
                )
            } else {
                ("200 OK", r#"{"data":{}}"#, String::new())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, seen)
}

fn client(addr: &str, retries: u32) -> OpenBao {
    OpenBao::from_config(
        &OpenBaoConfig {
            address: Some(addr.to_owned()),
            token: Some(ConfigSecret::new("fake-token")),
            max_retries: Some(retries),
            ..Default::default()
        },
        &|_| None,
    )
    .unwrap()
}

#[test]
fn fake_server_throttled_calls_are_retried_with_backoff_until_they_pass() {
    let (addr, seen) = fake_server(2);
    let started = std::time::Instant::now();
    let found = client(&addr, 3).find_root("root-kek").unwrap();
    assert!(found.is_some());
    assert_eq!(seen.load(Ordering::SeqCst), 3, "two 429s, then the answer");
    // Backoff: 100 ms then 200 ms at least (plus jitter).
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
}

#[test]
fn fake_server_throttled_past_the_retries_is_rate_limited_naming_the_service() {
    let (addr, seen) = fake_server(usize::MAX);
    let e = client(&addr, 2).find_root("root-kek").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited, "{e}");
    // No Retry-After from the service: our next backoff delay, at least a second.
    let wait = e
        .retry_after()
        .expect("a rate-limited error says when to retry");
    assert!(
        wait >= Duration::from_secs(1) && wait <= Duration::from_secs(3),
        "{wait:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("OpenBao") && text.contains("HTTP 429") && text.contains("3 attempts"),
        "{text}"
    );
    assert!(text.contains("root-kek"), "{text}");
    assert!(!text.contains("fake-token"), "{text}");
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[test]
fn fake_server_retry_after_of_the_service_is_passed_on() {
    let (addr, seen) = fake_server_answering(usize::MAX, "429 Too Many Requests", Some(17));
    let e = client(&addr, 1).find_root("root-kek").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited, "{e}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(17)));
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[test]
fn fake_server_unavailable_past_the_retries_stays_unavailable() {
    let (addr, seen) = fake_server_answering(usize::MAX, "503 Service Unavailable", Some(5));
    let e = client(&addr, 1).find_root("root-kek").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_eq!(e.retry_after(), None);
    assert!(e.to_string().contains("HTTP 503"), "{e}");
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    // Nobody listening: unavailable too.
    let e = client("http://127.0.0.1:9", 0)
        .find_root("root-kek")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
}
