//! A full disk, for real: the data directory on a small tmpfs, filled while `hanzo-kms serve`
//! answers. Requests fail closed (503 `audit_failure`), `/readyz` says not ready and why,
//! `/metrics` counts the refusals and shows the free space, the log stays a few lines, a warning
//! is logged once when free space passes `storage.free_space_warning_mib`, and once space returns
//! the node is ready again by itself with its audit chain intact.
//!
//! Mounting a tmpfs needs root (CI runs the tests as root); elsewhere the test says it skipped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hanzo_kms_testkit::{SERVE_ARGS, Served};

/// A tmpfs mounted for the test; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| Self(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn cli(data: &Path) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("hanzo-kms"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HANZO_KMS") {
            c.env_remove(k);
        }
    }
    c.arg("--data-dir").arg(data);
    c
}

fn ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
fn http(base: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Fill the filesystem under `dir` with one file, to its last byte.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5a; 64 * 1024];
    loop {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    // Whatever part of a chunk fits.
    for _ in 0..64 {
        if f.write_all(&[0x5a; 512]).is_err() {
            break;
        }
    }
    path
}

#[test]
fn a_full_disk_fails_closed_is_visible_and_recovers_by_itself() {
    let root = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&root.path().join("mnt"), "32m") else {
        eprintln!("skipped: mounting a tmpfs needs root (mount -t tmpfs failed)");
        return;
    };
    let data = fs.0.join("data");
    ok(cli(&data).arg("init"));
    ok(cli(&data).args(["keys", "create", "data:acme:k"]));
    let token: serde_json::Value = serde_json::from_str(&ok(cli(&data).args([
        "--json", "tokens", "create", "--tenant", "acme", "--role", "encrypt",
    ])))
    .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();

    let mut serve = cli(&data);
    serve
        .args(SERVE_ARGS)
        .env("HANZO_KMS__STORAGE__FREE_SPACE_WARNING_MIB", "16");
    let node = Served::start(serve, true);
    let encrypt = || {
        http(
            &node.rest,
            "POST",
            "/v1/keys/data:acme:k/encrypt",
            &token,
            r#"{"plaintext":"aGVsbG8gd29ybGQ="}"#,
        )
    };
    assert_eq!(encrypt().0, 200);
    assert_eq!(http(&node.rest, "GET", "/readyz", "", "").0, 200);

    // The disk fills: requests fail closed, and keep failing.
    let filler = fill(&fs.0);
    let mut refused = 0;
    let mut answered = 0;
    for _ in 0..2000 {
        let (status, body) = encrypt();
        match status {
            503 => {
                assert!(body.contains("audit_failure"), "{body}");
                refused += 1;
            }
            200 => answered += 1,
            other => panic!("unexpected {other}: {body}"),
        }
        if refused >= 300 {
            break;
        }
    }
    assert!(
        refused >= 300,
        "a full disk refused only {refused} requests ({answered} answered)"
    );
    let (status, body) = http(&node.rest, "GET", "/readyz", "", "");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("audit_failing"), "{body}");
    let (_, metrics) = http(&node.rest, "GET", "/metrics", "", "");
    assert!(
        metric(&metrics, "hanzo_kms_audit_refused_total").unwrap() >= 300,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "hanzo_kms_audit_failing"), Some(1));
    assert!(metric(&metrics, "hanzo_kms_store_bytes").unwrap() > 0);
    assert!(metric(&metrics, "hanzo_kms_store_free_bytes").unwrap() < 1 << 20);

    // The storage watch (every 5 s) has seen the free space fall.
    let end = Instant::now() + Duration::from_secs(15);
    while !node.stderr().contains("running out of space") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(250));
    }

    // Space returns: the node is ready again by itself (its readiness probe writes a record),
    // and serves.
    std::fs::remove_file(&filler).unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http(&node.rest, "GET", "/readyz", "", "");
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < end,
            "still not ready 20 s after space returned: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(encrypt().0, 200);
    // The storage watch checks every 5 s.
    let end = Instant::now() + Duration::from_secs(15);
    while !node.stderr().contains("has space again") && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(250));
    }

    let log = node.stderr();
    let failures = log.lines().filter(|l| l.contains("request failed")).count();
    assert!(
        (1..=10).contains(&failures),
        "{refused} refusals logged as {failures} lines:\n{log}"
    );
    assert_eq!(
        log.matches("running out of space").count(),
        1,
        "the low-space warning, once:\n{log}"
    );
    assert!(log.contains("has space again"), "{log}");
    drop(node);

    let report: serde_json::Value =
        serde_json::from_str(&ok(cli(&data).args(["--json", "audit", "verify"]))).unwrap();
    assert_eq!(report["valid"], true, "{report}");
    assert!(report["records"].as_u64().unwrap() >= 2, "{report}");
    drop(fs);
}
