//! `hanzo-kms serve` as a real process, and the CLI's commands against it with `--server`
//! (gRPC and REST): the same results as offline, the first-start init, graceful SIGTERM, and
//! clear refusals for commands that only run on the data directory.

use std::path::Path;
use std::process::Stdio;

use assert_cmd::Command;
use hanzo_kms_testkit::{SERVE_ARGS, Served};
use serde_json::Value;

fn clean(c: &mut std::process::Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("HANZO_KMS") {
            c.env_remove(k);
        }
    }
}

/// `hanzo-kms` with no inherited HANZO_KMS settings.
fn bare() -> Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("hanzo-kms"));
    clean(&mut c);
    Command::from_std(c)
}

/// Start `serve` on DIR/data; with `log`, at debug level with stderr (the logs) written there.
fn start_logging(dir: &Path, log: Option<&Path>) -> Served {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("hanzo-kms"));
    clean(&mut c);
    match log {
        Some(path) => {
            c.env("HANZO_KMS_LOG", "debug")
                .stderr(std::fs::File::create(path).unwrap());
        }
        None => {
            c.stderr(Stdio::null());
        }
    }
    c.arg("--data-dir").arg(dir.join("data")).args(SERVE_ARGS);
    Served::start(c, false)
}

fn kms(dir: &Path, server: &str, protocol: &str) -> Command {
    let mut c = Command::cargo_bin("hanzo-kms").unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("HANZO_KMS") {
            c.env_remove(k);
        }
    }
    c.arg("--server")
        .arg(server)
        .arg("--protocol")
        .arg(protocol)
        .arg("--token-file")
        .arg(dir.join("data").join("admin.token"))
        // No data directory is touched: point it somewhere empty.
        .arg("--data-dir")
        .arg(dir.join("nowhere"));
    c
}

fn json(c: &mut Command) -> Value {
    let out = c.arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_cli_works_against_a_server_over_grpc_and_rest() {
    let d = tempfile::tempdir().unwrap();
    let served = start_logging(d.path(), None);
    let (grpc, rest) = (served.grpc.clone(), served.rest.clone());

    let keys = json(kms(d.path(), &grpc, "grpc").args([
        "keyspace",
        "create",
        "--customer",
        "acme",
        "--model",
        "gpt4",
    ]));
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(3), "{keys}");
    let shown = json(kms(d.path(), &rest, "rest").args(["keys", "show", "poai:acme:gpt4"]));
    assert_eq!(shown["algorithm"], "secp256k1");
    let address = shown["versions"][0]["address"].as_str().unwrap().to_owned();

    // Small data: encrypted over gRPC, decrypted over REST.
    let ct = kms(d.path(), &grpc, "grpc")
        .args(["encrypt", "--key", "model:acme:gpt4"])
        .write_stdin("secret payload")
        .output()
        .unwrap();
    assert!(ct.status.success());
    let pt = kms(d.path(), &rest, "rest")
        .args(["decrypt", "--key", "model:acme:gpt4"])
        .write_stdin(ct.stdout)
        .output()
        .unwrap();
    assert_eq!(pt.stdout, b"secret payload");

    // A model file: encrypted by the client process, decrypted over the other protocol.
    let weights: Vec<u8> = (0..2_500_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(d.path().join("w.bin"), &weights).unwrap();
    for (p, url) in [("grpc", &grpc), ("rest", &rest)] {
        let enc = d.path().join(format!("w.{p}.hkms"));
        let dec = d.path().join(format!("w.{p}.out"));
        kms(d.path(), url, p)
            .args(["model", "encrypt", "--model", "acme:gpt4", "--in"])
            .arg(d.path().join("w.bin"))
            .arg("--out")
            .arg(&enc)
            .assert()
            .success();
        let other = if p == "grpc" {
            (&rest, "rest")
        } else {
            (&grpc, "grpc")
        };
        kms(d.path(), other.0, other.1)
            .args(["model", "decrypt", "--model", "acme:gpt4", "--in"])
            .arg(&enc)
            .arg("--out")
            .arg(&dec)
            .assert()
            .success();
        assert_eq!(std::fs::read(&dec).unwrap(), weights, "{p}");
    }

    // PoAI sign over gRPC, verify over REST; the signer is the key's address.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let att = format!(
        r#"{{"model_id":"acme:gpt4","input_hash":"0x{:064x}","output_hash":"0x{:064x}","timestamp":{now},"compute_time_ms":9,"node_id":"n1"}}"#,
        1, 2
    );
    std::fs::write(d.path().join("att.json"), att).unwrap();
    let signed = kms(d.path(), &grpc, "grpc")
        .args(["poai", "sign", "--key", "poai:acme:gpt4", "--in"])
        .arg(d.path().join("att.json"))
        .output()
        .unwrap();
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let s: Value = serde_json::from_slice(&signed.stdout).unwrap();
    assert_eq!(s["signer"].as_str(), Some(address.as_str()));
    std::fs::write(d.path().join("signed.json"), &signed.stdout).unwrap();
    let v = json(
        kms(d.path(), &rest, "rest")
            .args(["poai", "verify", "--in"])
            .arg(d.path().join("signed.json")),
    );
    assert_eq!(v["valid"], true);

    // Tokens online: a narrower token sees only its tenant.
    let created = json(kms(d.path(), &grpc, "grpc").args([
        "tokens", "create", "--tenant", "globex", "--role", "encrypt",
    ]));
    let globex = created["token"].as_str().unwrap().to_owned();
    let mut c = Command::cargo_bin("hanzo-kms").unwrap();
    let out = c
        .args(["--server", &grpc, "--token", &globex, "--data-dir"])
        .arg(d.path().join("nowhere"))
        .args(["encrypt", "--key", "model:acme:gpt4"])
        .write_stdin("x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not found"), "{err}");
    let id = created["id"].as_str().unwrap();
    json(kms(d.path(), &rest, "rest").args(["tokens", "revoke", id]));
    let listed = json(kms(d.path(), &rest, "rest").args(["tokens", "list"]));
    assert!(listed.to_string().contains("revoked_at"));

    // Commands that only run on the data directory say so (usage error), and touch nothing.
    for args in [
        vec!["keys", "destroy", "data:acme:x", "--now"],
        vec!["audit", "verify"],
        vec!["keys", "rotate", "--due"],
    ] {
        let out = kms(d.path(), &grpc, "grpc").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("data directory"), "{args:?}: {err}");
    }
    assert!(!d.path().join("nowhere").exists());

    // Each protocol pointed at the other's address: the error says which address it was.
    for (url, protocol, says) in [
        (&grpc, "rest", "is this the gRPC address?"),
        (&rest, "grpc", "is this the REST address?"),
    ] {
        let out = kms(d.path(), url, protocol)
            .args(["keys", "list"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{protocol} at {url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{protocol} at {url}: {err}");
    }

    // A server that is gone: a clear, retried "unavailable".
    let status = served.terminate();
    assert!(
        status.success(),
        "serve did not stop cleanly on SIGTERM: {status:?}"
    );
    let out = kms(d.path(), &grpc, "grpc")
        .args(["keys", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach the server at {grpc}")),
        "{err}"
    );
}

#[test]
fn a_session_over_grpc_and_rest_leaks_no_secret_into_logs_audit_outputs_or_the_store() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("serve.log");
    let served = start_logging(d.path(), Some(&log));
    let (grpc, rest) = (served.grpc.clone(), served.rest.clone());
    let admin = std::fs::read_to_string(d.path().join("data").join("admin.token")).unwrap();
    let admin = admin.trim().to_owned();
    let said = std::cell::RefCell::new(String::new());
    let run = |c: &mut Command, stdin: Option<&[u8]>| {
        if let Some(i) = stdin {
            c.write_stdin(i.to_vec());
        }
        let out = c.output().unwrap();
        said.borrow_mut()
            .push_str(&String::from_utf8_lossy(&out.stdout));
        said.borrow_mut()
            .push_str(&String::from_utf8_lossy(&out.stderr));
        out
    };
    run(
        kms(d.path(), &grpc, "grpc").args([
            "keyspace",
            "create",
            "--customer",
            "acme",
            "--model",
            "m",
        ]),
        None,
    );
    let created = run(
        kms(d.path(), &rest, "rest").args([
            "--json", "tokens", "create", "--tenant", "acme", "--role", "admin",
        ]),
        None,
    );
    let tenant: Value = serde_json::from_slice(&created.stdout).unwrap();
    let tenant_token = tenant["token"].as_str().unwrap().to_owned();
    // `tokens create` shows the new token once, on purpose; from here on nothing may.
    said.borrow_mut().clear();
    // A data key through the client: its plaintext is the secret to look for.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dek = rt.block_on(async {
        let c = hanzo_kms_client::Client::builder(&grpc, &tenant_token)
            .connect()
            .await
            .unwrap();
        let dk = c.generate_data_key("model:acme:m", b"").await.unwrap();
        let back = c
            .unwrap_data_key("model:acme:m", &dk.ciphertext, b"")
            .await
            .unwrap();
        assert_eq!(back.expose(), dk.plaintext.expose());
        // Failures on purpose: a bad ciphertext, a foreign key, a bad token.
        assert!(
            c.decrypt("model:acme:m", "hkms:v1:AAAA", b"")
                .await
                .is_err()
        );
        assert!(c.get_key("model:globex:x").await.is_err());
        dk.plaintext.expose().to_vec()
    });
    std::fs::write(d.path().join("w.bin"), vec![7u8; 300_000]).unwrap();
    for (p, url) in [("grpc", &grpc), ("rest", &rest)] {
        run(
            kms(d.path(), url, p)
                .args(["model", "encrypt", "--model", "acme:m", "--in"])
                .arg(d.path().join("w.bin"))
                .arg("--out")
                .arg(d.path().join(format!("w.{p}"))),
            None,
        );
        run(
            kms(d.path(), url, p).args(["encrypt", "--key", "model:acme:m"]),
            Some(b"x"),
        );
        let mut bad = Command::cargo_bin("hanzo-kms").unwrap();
        run(
            bad.args([
                "--server",
                url,
                "--protocol",
                p,
                "--token",
                "hkms_0000000000000000_wrong",
            ])
            .args(["keys", "list"]),
            None,
        );
    }
    // The client's connection closes with its runtime; a server also stops without that, after
    // its grace period.
    drop(rt);
    let status = served.terminate();
    assert!(status.success());
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains("DEBUG") || logs.contains("debug"),
        "no debug logs were captured"
    );
    assert!(!logs.contains('\u{1b}'), "colour codes in a log file");
    // gRPC answers with a data key: tonic's buffer was wiped after each was sent.
    let wiped: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("wiped the encoded answer of a secret-bearing RPC"))
        .collect();
    assert!(wiped.len() >= 3, "{wiped:?}");
    assert!(wiped.iter().all(|l| l.contains("unwiped=0")), "{wiped:?}");
    let db = std::fs::read(d.path().join("data").join("kms.db")).unwrap();
    let wal = std::fs::read(d.path().join("data").join("kms.db-wal")).unwrap_or_default();
    let master = std::fs::read_to_string(d.path().join("data").join("master.key")).unwrap();
    let master = master.trim().to_owned();
    let b64 = |b: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let said = said.borrow().clone();
    let texts = [("logs", logs.as_str()), ("CLI output", said.as_str())];
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("admin token secret", admin.as_bytes()[22..].to_vec()),
        (
            "tenant token secret",
            tenant_token.as_bytes()[22..].to_vec(),
        ),
        ("master key (hex)", master.as_bytes().to_vec()),
        ("data key (base64)", b64(&dek).into_bytes()),
        ("data key (hex)", hex(&dek).into_bytes()),
        ("data key (raw)", dek.clone()),
    ];
    for (what, secret) in &secrets {
        for (place, text) in texts {
            assert!(
                !text
                    .as_bytes()
                    .windows(secret.len())
                    .any(|w| w == secret.as_slice()),
                "{what} leaked into the {place}"
            );
        }
        for (place, bytes) in [("store", &db), ("store WAL", &wal)] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_slice()),
                "{what} is in the {place}"
            );
        }
    }
}

/// HANZO_KMS_SERVER, exported for the other commands (as the README's tour does), does not stop
/// `init` or `serve`, which only ever work on the data directory; `--server` on their command
/// line is still refused. An empty HANZO_KMS_SERVER counts as unset.
#[test]
fn init_and_serve_ignore_a_server_named_in_the_environment() {
    let d = tempfile::tempdir().unwrap();
    // Nothing listens on port 9 (discard): a command that used it would fail to connect.
    let elsewhere = "http://127.0.0.1:9";

    let mut init = bare();
    let out = init
        .env("HANZO_KMS_SERVER", elsewhere)
        .arg("--data-dir")
        .arg(d.path().join("initialised"))
        .arg("init")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.path().join("initialised").join("kms.db").exists());

    // `serve` on an empty directory initialises it itself and writes the first admin token.

    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("hanzo-kms"));
    clean(&mut c);
    c.env("HANZO_KMS_SERVER", elsewhere)
        .stderr(Stdio::null())
        .arg("--data-dir")
        .arg(d.path().join("data"))
        .args(SERVE_ARGS);
    let served = Served::start(c, false);

    // The other commands do use the server from the environment.
    let mut list = bare();
    let keys = json(
        list.env("HANZO_KMS_SERVER", &served.grpc)
            .arg("--token-file")
            .arg(d.path().join("data").join("admin.token"))
            .arg("--data-dir")
            .arg(d.path().join("nowhere"))
            .args(["keys", "list"]),
    );
    assert!(keys["keys"].is_array(), "{keys}");
    assert!(!d.path().join("nowhere").exists());

    // An empty HANZO_KMS_SERVER is unset: the command runs on the data directory, no token asked.
    let mut offline = bare();
    let keys = json(
        offline
            .env("HANZO_KMS_SERVER", "")
            .arg("--data-dir")
            .arg(d.path().join("data"))
            .args(["keys", "list"]),
    );
    assert!(keys["keys"].is_array(), "{keys}");

    // `--server` on init's own command line is a usage error that touches nothing.
    let mut explicit = bare();
    let out = explicit
        .args(["--server", elsewhere, "--data-dir"])
        .arg(d.path().join("other"))
        .arg("init")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("data directory"), "{err}");
    assert!(!d.path().join("other").exists());

    let status = served.terminate();
    assert!(status.success(), "serve did not stop cleanly: {status:?}");
}

#[test]
fn serve_names_its_addresses_https_when_tls_is_on() {
    use std::io::BufRead;
    let d = tempfile::tempdir().unwrap();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(d.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(d.path().join("key.pem"), signing_key.serialize_pem()).unwrap();
    let config = d.path().join("kms.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  tls: {{cert_file: {}, key_file: {}}}\n",
            d.path().join("cert.pem").display(),
            d.path().join("key.pem").display()
        ),
    )
    .unwrap();
    for json in [true, false] {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("hanzo-kms"));
        clean(&mut c);
        c.arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(d.path().join("data"))
            .args(&SERVE_ARGS[usize::from(!json)..])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        // The first start prints where init wrote its files first.
        let line = lines
            .by_ref()
            .map(Result::unwrap)
            .find(|l| l.contains("127.0.0.1:"))
            .expect("serve printed no address");
        let _ = child.kill();
        let _ = child.wait();
        if json {
            let v: Value = serde_json::from_str(&line).unwrap();
            assert!(v["rest"].as_str().unwrap().starts_with("https://"), "{v}");
            assert!(v["grpc"].as_str().unwrap().starts_with("https://"), "{v}");
        } else {
            assert!(line.starts_with("listening on https://"), "{line}");
            assert!(!line.contains("http://"), "{line}");
        }
    }
}
