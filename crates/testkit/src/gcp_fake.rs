//! The FAKE Google Cloud KMS server (`scripts/fake_gcp_kms.py`) as a child process of a test.
//!
//! No Google Cloud KMS emulator exists (DESIGN.md §7); every test that uses this says "fake"
//! in its name. The Python interpreter is `HANZO_KMS_GCP_FAKE_PYTHON`, else the virtualenv
//! `scripts/gcp-fake-venv.sh` makes (`<target>/gcp-venv`, with the `cryptography` package),
//! which this makes on first use.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running fake; killed when dropped.
pub struct FakeGcpKms {
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    /// The service-account key file the fake accepts (token_uri points at the fake).
    pub credentials: PathBuf,
    /// The same account with a key the fake does not know.
    pub wrong_credentials: PathBuf,
    pub project: String,
    pub location: String,
    pub key_ring: String,
}

impl FakeGcpKms {
    /// Start a fake with project `hanzo-ai-prod`, location `global` and key ring
    /// `hanzo-kms-keyring` (HIP-005's sample names).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Start a fake with extra command-line options (`--pending-ms`, `--token-ttl`, ...).
    pub fn start_with(extra: &[&str]) -> Self {
        let root = workspace_root();
        let python = python(&root);
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut child = Command::new(&python)
            .arg(root.join("scripts/fake_gcp_kms.py"))
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the fake Google Cloud KMS with {}: {e}",
                    python.display()
                )
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read the fake's first line");
        let info: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("the fake Google Cloud KMS did not start: {line:?}"));
        Self {
            child,
            endpoint: info["endpoint"].as_str().expect("endpoint").to_string(),
            credentials: dir.path().join("credentials.json"),
            wrong_credentials: dir.path().join("wrong-credentials.json"),
            dir,
            project: "hanzo-ai-prod".into(),
            location: "global".into(),
            key_ring: "hanzo-kms-keyring".into(),
        }
    }

    /// The fake's state directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Make the next `count` calls of `method` (`encrypt`, `decrypt`, `asymmetricSign`,
    /// `macSign`, `publicKey`, `create`, `get`, `destroy` or `*`) fail with `kind`: `crc` (a wrong
    /// CRC32C in the answer), `throttle` (429) or `unavailable` (503).
    pub fn inject(&self, kind: &str, method: &str, count: u32) {
        let body = serde_json::json!({"kind": kind, "method": method, "count": count}).to_string();
        self.http("POST", "/__fake/fault", &body);
    }

    /// How many calls of each method the fake has served.
    pub fn stats(&self) -> serde_json::Value {
        let text = self.http("GET", "/__fake/stats", "");
        serde_json::from_str(&text).expect("stats JSON")
    }

    fn http(&self, method: &str, path: &str, body: &str) -> String {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).expect("connect to the fake");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("write to the fake");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read from the fake");
        let (head, rest) = out.split_once("\r\n\r\n").expect("HTTP answer");
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "fake control call failed: {head}"
        );
        rest.to_string()
    }
}

impl Drop for FakeGcpKms {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn python(root: &Path) -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| make_python(root)).clone()
}

fn make_python(root: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("HANZO_KMS_GCP_FAKE_PYTHON") {
        return PathBuf::from(p);
    }
    let out = Command::new(root.join("scripts/gcp-fake-venv.sh"))
        .output()
        .expect("run scripts/gcp-fake-venv.sh");
    assert!(
        out.status.success(),
        "scripts/gcp-fake-venv.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).expect("path").trim())
}
