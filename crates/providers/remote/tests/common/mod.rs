//! Helpers shared by the remote providers' tests (`mod common;` in each test file): how a
//! bad-input error must read, and how a provider is opened on a client.

#![allow(dead_code)] // each test file uses its own part of this module

use hanzo_kms_core::Error;
use hanzo_kms_core::config::RemoteTuning;
use hanzo_kms_remote::{RemoteKms, RemoteProvider, RemoteSettings};

/// `e` (its text and its Debug) names `service` as a person writes it ("AWS KMS", "OpenBao",
/// "Google Cloud KMS"), does not lead with the config identifier (`aws-kms`, ...), names each
/// of `parts`, and holds none of `secrets`.
pub fn assert_clear(e: &Error, service: &str, parts: &[&str], secrets: &[&str]) {
    let text = e.to_string();
    let debug = format!("{e:?}");
    assert!(text.contains(service), "{service:?} missing in: {text}");
    for id in ["aws-kms:", "openbao:", "google-cloud-kms:"] {
        assert!(
            !text.starts_with(id),
            "the config identifier names the service: {text}"
        );
    }
    for p in parts {
        assert!(text.contains(p), "{p:?} missing in: {text}");
    }
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        assert!(!text.contains(s), "a secret leaked: {text}");
        assert!(!debug.contains(s), "a secret leaked in Debug: {debug}");
    }
}

/// The remote id in a kms-resident handle (`0x31 ‖ u16be(len) ‖ id ‖ public`).
pub fn remote_id(made: &hanzo_kms_conformance::Made) -> String {
    let b = made.handle.as_bytes();
    assert_eq!(b[0], 0x31, "not a kms-resident handle");
    let len = usize::from(u16::from_be_bytes([b[1], b[2]]));
    String::from_utf8(b[3..3 + len].to_vec()).unwrap()
}

/// Open a provider on `client` with the section's tuning; `prefix` goes before the root
/// keys' labels, `create` makes them if missing.
pub fn open<S: RemoteKms>(
    client: S,
    tuning: &RemoteTuning,
    prefix: &str,
    create: bool,
) -> hanzo_kms_core::Result<RemoteProvider<S>> {
    RemoteProvider::open(
        client,
        &RemoteSettings {
            root_prefix: prefix.to_owned(),
            signing_keys: tuning.signing_keys,
            wrapped_key_cache: tuning.wrapped_key_cache,
        },
        create,
    )
}

/// One request a [`FakeHttp`] got: method, path (with query), headers (names lower-cased)
/// and body.
#[derive(Clone, Debug)]
pub struct FakeRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl FakeRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a [`FakeHttp`] handler answers: status line ("200 OK"), extra headers, body.
pub type FakeAnswer = (&'static str, Vec<(String, String)>, String);

/// A tiny HTTP/1.1 server on loopback for the tests that need a FAKE peer (a throttling
/// service, a container credentials endpoint, an instance metadata service): each request is
/// recorded and answered by `handler`; one connection per request.
pub struct FakeHttp {
    pub url: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<FakeRequest>>>,
}

impl FakeHttp {
    pub fn start(
        handler: impl Fn(&FakeRequest, usize) -> FakeAnswer + Send + Sync + 'static,
    ) -> Self {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).unwrap_or(0) == 0 {
                    continue;
                }
                let mut parts = first.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let path = parts.next().unwrap_or_default().to_owned();
                let mut headers = Vec::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((n, v)) = line.split_once(':') {
                        let (n, v) = (n.trim().to_ascii_lowercase(), v.trim().to_owned());
                        if n == "content-length" {
                            len = v.parse().unwrap_or(0);
                        }
                        headers.push((n, v));
                    }
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                let req = FakeRequest {
                    method,
                    path,
                    headers,
                    body,
                };
                let n = {
                    let mut all = seen.lock().unwrap();
                    all.push(req.clone());
                    all.len() - 1
                };
                let (status, extra, body) = handler(&req, n);
                let mut head = format!("HTTP/1.1 {status}\r\n");
                for (k, v) in extra {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                let _ = write!(
                    stream,
                    "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { url, requests }
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<FakeRequest> {
        self.requests.lock().unwrap().clone()
    }
}

/// A JSON answer with `status`.
pub fn json(status: &'static str, body: impl Into<String>) -> FakeAnswer {
    (
        status,
        vec![("Content-Type".into(), "application/json".into())],
        body.into(),
    )
}
