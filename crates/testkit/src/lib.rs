//! Test support: a real, throw-away PostgreSQL server for the HA tests, [`Served`], a
//! `hanzo-kms serve` process that a test starts, waits for and stops, throwaway SoftHSM2
//! tokens ([`softhsm`]) and the raw PKCS#11 signing loop of the HSM benchmark ([`pkcs11`]).
//!
//! [`Postgres::start`] runs `initdb` into a temporary directory and `pg_ctl start` on 127.0.0.1
//! and a free port (Debian's `postgresql` package; `scripts/test.sh` installs it). As root, the
//! server runs as the `postgres` user, since PostgreSQL refuses to run as root. Drop stops it
//! (`-m immediate`) and removes its files.
//!
//! The binaries are found in `HANZO_KMS_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.
//! Without them the test fails and says what to install: a test that needs PostgreSQL never
//! passes silently without it.

#![forbid(unsafe_code)]

pub mod gcp_fake;
pub mod pkcs11;
pub mod softhsm;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A PostgreSQL server of a test's own.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Postgres {
    /// Create and start a cluster with a superuser `kms` (trust authentication, loopback only).
    ///
    /// # Panics
    /// When PostgreSQL is not installed or does not start: this is test support.
    pub fn start() -> Self {
        let bin = find_bin().unwrap_or_else(|| {
            panic!(
                "PostgreSQL is needed for this test: install it (Debian: apt-get install -y postgresql) \
                 or point HANZO_KMS_PG_BIN at the directory holding initdb and pg_ctl"
            )
        });
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("hanzo-kms-pg-")
            .tempdir()
            .expect("creating a temporary directory");
        if as_postgres {
            chown_to_postgres(dir.path());
        }
        let mut pg = Self {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        let data = pg.data_dir();
        pg.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-A",
                "trust",
                "-U",
                "kms",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        // A port can be taken between probing and binding; try a few.
        for _ in 0..5 {
            pg.port = free_port();
            if pg.try_start() {
                return pg;
            }
        }
        panic!(
            "PostgreSQL did not start; its log:\n{}",
            std::fs::read_to_string(pg.log_path()).unwrap_or_default()
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://kms@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://kms@127.0.0.1:{}/{db}", self.port)
    }

    /// Create a database and return its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Run one SQL command in a database with psql; its standard output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let out = self.run(
            "psql",
            &[
                "-X",
                "-q",
                "-A",
                "-t",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "kms",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stop the server at once (`pg_ctl stop -m immediate`): to the clients, the database is gone.
    pub fn stop(&self) {
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &["stop", "-D", path_str(&data), "-m", "immediate", "-w"],
        );
    }

    /// Start the server again on the same port after [`stop`](Self::stop).
    ///
    /// # Panics
    /// When it does not start.
    pub fn restart(&self) {
        assert!(
            self.try_start(),
            "PostgreSQL did not restart; its log:\n{}",
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        );
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn try_start(&self) -> bool {
        let data = self.data_dir();
        let log = self.log_path();
        // Unix sockets go into the cluster's own directory; durability is not under test here
        // (the tests kill hanzo-kms nodes, not the database), so fsync is off for speed.
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            path_str(self.dir.path())
        );
        self.command(
            "pg_ctl",
            &[
                "start",
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-w",
                "-t",
                "30",
                "-o",
                &opts,
            ],
        )
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(program);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        c.args(args).current_dir(self.dir.path());
        c
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let out = self
            .command(program, args)
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .command(
                "pg_ctl",
                &["stop", "-D", path_str(&data), "-m", "immediate", "-w"],
            )
            .output();
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free port")
}

fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HANZO_KMS_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn chown_to_postgres(dir: &Path) {
    let ok = Command::new("chown")
        .arg("postgres")
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "chown postgres {}: running as root needs the postgres user (Debian's postgresql package creates it)",
        dir.display()
    );
}

/// A `hanzo-kms serve` process started by a test. Drop kills and reaps it.
pub struct Served {
    child: Option<std::process::Child>,
    /// `http://127.0.0.1:PORT` of the REST API, once listening.
    pub rest: String,
    /// `http://127.0.0.1:PORT` of the gRPC API, once listening.
    pub grpc: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Served {
    /// Spawn `cmd`, a `hanzo-kms … --json serve …` command, with its standard output piped.
    /// With `capture_stderr` its standard error is collected too (see [`Served::stderr`]);
    /// otherwise it goes wherever `cmd` says.
    ///
    /// # Panics
    /// When the process cannot be started: this is test support.
    pub fn spawn(mut cmd: Command, capture_stderr: bool) -> Self {
        cmd.stdout(std::process::Stdio::piped());
        if capture_stderr {
            cmd.stderr(std::process::Stdio::piped());
        }
        let child = cmd.spawn().expect("starting hanzo-kms serve");
        let mut served = Self {
            child: Some(child),
            rest: String::new(),
            grpc: String::new(),
            stderr: std::sync::Arc::default(),
        };
        if let Some(err) = served.child.as_mut().and_then(|c| c.stderr.take()) {
            let sink = served.stderr.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(err).lines().map_while(|l| l.ok()) {
                    let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        served
    }

    /// [`spawn`](Self::spawn), then [`wait_listening`](Self::wait_listening).
    pub fn start(cmd: Command, capture_stderr: bool) -> Self {
        let mut s = Self::spawn(cmd, capture_stderr);
        s.wait_listening();
        s
    }

    /// Wait for the JSON line with both addresses.
    ///
    /// # Panics
    /// When the process exits first (with its collected standard error).
    pub fn wait_listening(&mut self) {
        use std::io::BufRead;
        let out = self
            .child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .expect("serve's standard output is piped once");
        for line in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if let (Some(r), Some(g)) = (v["rest"].as_str(), v["grpc"].as_str()) {
                self.rest = r.to_owned();
                self.grpc = g.to_owned();
                return;
            }
        }
        let status = self.child.as_mut().map(|c| c.wait());
        panic!(
            "serve exited ({status:?}) before listening:\n{}",
            self.stderr()
        );
    }

    /// Standard error so far (with `capture_stderr`).
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (a graceful stop), and the exit status.
    ///
    /// # Panics
    /// When the process is already gone or cannot be signalled.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("serve is running");
        let ok = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM failed");
        c.wait().expect("reaping serve")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `--json serve` on free loopback ports for REST and gRPC: what [`Served`] expects to read.
pub const SERVE_ARGS: [&str; 6] = [
    "--json",
    "serve",
    "--rest-addr",
    "127.0.0.1:0",
    "--grpc-addr",
    "127.0.0.1:0",
];

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A PoAI attestation for model `acme:gpt4` from `node`, timestamped now, without a nonce.
pub fn attestation(node: &str) -> hanzo_kms_core::eip712::PoAIAttestation {
    hanzo_kms_core::eip712::PoAIAttestation {
        model_id: "acme:gpt4".into(),
        input_hash: hanzo_kms_core::eip712::B32([1; 32]),
        output_hash: hanzo_kms_core::eip712::B32([2; 32]),
        timestamp: now(),
        compute_time_ms: 5,
        node_id: node.into(),
        nonce: None,
    }
}
