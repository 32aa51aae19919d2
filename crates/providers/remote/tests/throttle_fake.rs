//! Throttling and retries against a fake HTTP server on loopback (no real service throttles on
//! demand): a server that answers 429 a given number of times before answering, counting the
//! requests it got. The names say "fake" as the house rules ask.

use std::time::Duration;

use hanzo_kms_core::ErrorKind;
use hanzo_kms_core::config::{ConfigSecret, OpenBaoConfig};
use hanzo_kms_remote::{OpenBao, RemoteKms};

mod common;
use common::{FakeHttp, json};

/// Serve `throttled` 429s, then 200 `{"data":{}}` to every request (tests/common's `FakeHttp`
/// records the requests).
fn fake_server(throttled: usize) -> FakeHttp {
    fake_server_answering(throttled, "429 Too Many Requests", None)
}

/// Serve `failing` answers of `status` (with `Retry-After: retry_after` when given), then 200.
fn fake_server_answering(
    failing: usize,
    status: &'static str,
    retry_after: Option<u32>,
) -> FakeHttp {
    FakeHttp::start(move |_, n| {
        if n < failing {
            let mut a = json(status, r#"{"errors":["rate limit quota exceeded"]}"#);
            if let Some(s) = retry_after {
                a.1.push(("Retry-After".into(), s.to_string()));
            }
            a
        } else {
            json("200 OK", r#"{"data":{}}"#)
        }
    })
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
    let fake = fake_server(2);
    let started = std::time::Instant::now();
    let found = client(&fake.url, 3).find_root("root-kek").unwrap();
    assert!(found.is_some());
    assert_eq!(fake.requests().len(), 3, "two 429s, then the answer");
    // Backoff: 100 ms then 200 ms at least (plus jitter).
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
}

#[test]
fn fake_server_throttled_past_the_retries_is_rate_limited_naming_the_service() {
    let fake = fake_server(usize::MAX);
    let e = client(&fake.url, 2).find_root("root-kek").unwrap_err();
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
    assert_eq!(fake.requests().len(), 3);
}

#[test]
fn fake_server_retry_after_of_the_service_is_passed_on() {
    let fake = fake_server_answering(usize::MAX, "429 Too Many Requests", Some(17));
    let e = client(&fake.url, 1).find_root("root-kek").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited, "{e}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(17)));
    assert_eq!(fake.requests().len(), 2);
}

#[test]
fn fake_server_unavailable_past_the_retries_stays_unavailable() {
    let fake = fake_server_answering(usize::MAX, "503 Service Unavailable", Some(5));
    let e = client(&fake.url, 1).find_root("root-kek").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_eq!(e.retry_after(), None);
    assert!(e.to_string().contains("HTTP 503"), "{e}");
    assert_eq!(fake.requests().len(), 2);
    // Nobody listening: unavailable too.
    let e = client("http://127.0.0.1:9", 0)
        .find_root("root-kek")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
}

/// A fake server that accepts connections and reads requests but never answers: the call is cut
/// off by `timeout` (per phase since the HTTP client stopped using a whole-call timeout), not
/// left hanging.
#[test]
fn fake_server_that_never_answers_is_cut_off_by_the_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s); // keep it open, say nothing
        }
    });
    let c = OpenBao::from_config(
        &OpenBaoConfig {
            address: Some(addr),
            token: Some(ConfigSecret::new("fake-token")),
            max_retries: Some(0),
            timeout: Some(hanzo_kms_core::config::Duration(Duration::from_millis(400))),
            ..Default::default()
        },
        &|_| None,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let e = c.find_root("root-kek").unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(5),
        "cut off after {took:?}"
    );
    assert!(e.to_string().contains("OpenBao"), "{e}");
}
