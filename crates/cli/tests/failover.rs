//! Provider failover on two real SoftHSM2 tokens: the backup is a clone of the primary (what an
//! HSM HA group or a cloned partition gives), a `hanzo-kms serve` process runs with
//! `kms.lux.failover`, and the primary's token is taken away under load and given back.
//! Fewer than 0.1 % of requests may fail, signatures stay valid under the same address, and
//! the transitions show in `/metrics` and in the audit log.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hanzo_kms_client::Client;
use hanzo_kms_testkit::softhsm::Token;
use hanzo_kms_testkit::{SERVE_ARGS, Served, attestation as att};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `hanzo-kms serve` on `data` with `config`; the token's PIN comes from the environment.
fn start_node(data: &Path, config: &Path, pin: &str) -> Served {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("hanzo-kms"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HANZO_KMS") {
            c.env_remove(k);
        }
    }
    c.env("TEST_HSM_PIN", pin)
        .env("HANZO_KMS_LOG", "warn")
        .arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(config)
        .args(SERVE_ARGS)
        .stderr(Stdio::null());
    Served::start(c, false)
}

/// A plain HTTP/1.1 GET (for /metrics and /v1/audit).
async fn get(base: &str, path: &str, token: &str) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn mode(metrics: &str) -> Option<String> {
    metrics
        .lines()
        .find(|l| l.starts_with("hanzo_kms_failover_mode{") && l.ends_with(" 1"))
        .and_then(|l| l.split('"').nth(1))
        .map(str::to_owned)
}

async fn wait_for_mode(node: &Served, token: &str, want: &str, within: Duration) {
    let start = Instant::now();
    loop {
        let m = get(&node.rest, "/metrics", token).await;
        if mode(&m).as_deref() == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < within,
            "failover mode did not become {want} within {within:?}; metrics:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn section(t: &Token) -> String {
    format!(
        "      module: {}\n      token_label: {}\n      pin_env: TEST_HSM_PIN\n      max_sessions: 4\n      exportable: true\n",
        t.module.display(),
        t.label
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_cloned_softhsm2_token_and_back_under_load() {
    let primary = Token::create(&format!("fo-p-{}", std::process::id())).unwrap_or_else(|e| {
        panic!("SoftHSM2 is needed for this test (apt-get install softhsm2 opensc): {e}")
    });
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let plain = root.path().join("plain.yaml");
    std::fs::write(
        &plain,
        format!(
            "kms:\n  lux:\n    provider: softhsm2\n    softhsm2:\n{}",
            section(&primary)
        ),
    )
    .unwrap();
    // The first start initialises the data directory on the primary; make the keys there.
    let node = start_node(&data, &plain, &primary.user_pin);
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let token = token.trim().to_owned();
    let c = Client::builder(&node.grpc, &token).connect().await.unwrap();
    c.create_model_keyspace("acme", "gpt4").await.unwrap();
    drop(c);
    assert!(node.terminate().success());

    // The backup: a clone of the primary, as an HSM HA group member would be.
    let backup = primary
        .clone_as(&format!("fo-b-{}", std::process::id()))
        .unwrap();
    let with_failover = root.path().join("failover.yaml");
    std::fs::write(
        &with_failover,
        format!(
            "kms:\n  lux:\n    provider: softhsm2\n    softhsm2:\n{}    failover:\n      enabled: true\n      health_check_interval: 100ms\n      failure_threshold: 3\n      backup:\n{}",
            section(&primary),
            section(&backup).replace("      ", "        ")
        ),
    )
    .unwrap();
    let node = start_node(&data, &with_failover, &primary.user_pin);
    let c = Client::builder(&node.grpc, &token)
        .retries(0)
        .connect()
        .await
        .unwrap();
    wait_for_mode(&node, &token, "primary", Duration::from_secs(5)).await;
    let first = c.sign_poai("poai:acme:gpt4", att("before")).await.unwrap();
    let signer = first.signer;
    // A key made while failover is on is put on both devices.
    c.create_key("data:acme:late", None).await.unwrap();
    // A signing key generated inside the primary (hsm-resident) cannot be copied to the backup:
    // refused, saying which setting would allow it; nothing is left behind.
    let e = c
        .create_key("api:acme:resident", Some("secp256k1"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("signing_keys: hsm-wrapped"), "{e}");
    assert!(c.get_key("api:acme:resident").await.is_err());

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..4u32 {
        let (c, stop, ok, failed) = (c.clone(), stop.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut signed = Vec::new();
            let mut errors = Vec::new();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let r: Result<(), hanzo_kms_core::Error> = async {
                    match n % 3 {
                        0 => {
                            let s = c
                                .sign_poai("poai:acme:gpt4", att(&format!("t{i}-{n}")))
                                .await?;
                            if n.is_multiple_of(10) {
                                signed.push(s);
                            }
                        }
                        1 => {
                            let ct = c.encrypt("model:acme:gpt4", b"weights", b"").await?;
                            let pt = c.decrypt("model:acme:gpt4", &ct, b"").await?;
                            assert_eq!(pt.expose(), b"weights");
                        }
                        _ => {
                            let ct = c.encrypt("data:acme:late", b"late", b"").await?;
                            c.decrypt("data:acme:late", &ct, b"").await?;
                        }
                    }
                    Ok(())
                }
                .await;
                match r {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        errors.push(e.to_string());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            (signed, errors)
        }));
    }

    tokio::time::sleep(Duration::from_millis(800)).await;
    // The primary loses its keys: every object file of its token (root keys included) goes,
    // as when an HSM partition is wiped or deactivated; the token itself still answers.
    let dir = primary.directory().unwrap();
    let aside = root.path().join("primary-token-aside");
    copy_dir(&dir, &aside);
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".object") && name != "token.object" {
            std::fs::remove_file(&p).unwrap();
        }
    }
    bump_generation(&dir);
    wait_for_mode(&node, &token, "failed-over", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    // New keys wait for the primary: they could not be put on both devices.
    let e = c.create_key("data:acme:paused", None).await.unwrap_err();
    assert_eq!(e.kind(), hanzo_kms_core::ErrorKind::Unavailable, "{e}");
    // Give the keys back (as new files, which SoftHSM2 loads as it finds them): traffic ramps
    // back to the primary.
    for (i, e) in std::fs::read_dir(&aside).unwrap().enumerate() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".object") && name != "token.object" {
            let fresh = format!("00000000-0000-4000-8000-{i:012}.object");
            std::fs::copy(&p, dir.join(fresh)).unwrap();
        }
    }
    bump_generation(&dir);
    wait_for_mode(&node, &token, "primary", Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);

    let mut signed = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let (s, e) = t.await.unwrap();
        signed.extend(s);
        errors.extend(e);
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("failover under load: {ok} requests succeeded, {failed} failed");
    assert!(ok > 100, "too little load ran: {ok}");
    assert!(
        failed * 1000 <= ok + failed,
        "{failed} of {} requests failed (more than 0.1 %): {errors:?}",
        ok + failed
    );
    // Every signature, made on either device, verifies under the same address.
    assert!(!signed.is_empty());
    for s in &signed {
        assert_eq!(s.signer, signer);
        assert!(c.verify_poai(s).await.unwrap().valid);
    }
    let metrics = get(&node.rest, "/metrics", &token).await;
    assert!(metrics.contains("hanzo_kms_failovers_total 1"), "{metrics}");
    assert!(metrics.contains("hanzo_kms_failbacks_total 1"), "{metrics}");
    // The transitions are in the audit log, in order (read page by page).
    let mut ops = Vec::new();
    let mut after = 0u64;
    loop {
        let page = get(
            &node.rest,
            &format!("/v1/audit?after={after}&limit=1000"),
            &token,
        )
        .await;
        let body = page.split("\r\n\r\n").nth(1).unwrap_or("[]");
        let records: Vec<Value> =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {page}"));
        let Some(last) = records.last() else { break };
        after = last["seq"].as_u64().unwrap();
        let full = records.len() == 1000;
        ops.extend(
            records
                .iter()
                .filter_map(|r| r["operation"].as_str())
                .filter(|o| o.starts_with("provider."))
                .map(str::to_owned),
        );
        // Each read is audited too: stop at the first short page.
        if !full {
            break;
        }
    }
    assert_eq!(
        ops,
        [
            "provider.failover",
            "provider.recovering",
            "provider.failback"
        ],
        "transitions in the audit log"
    );
    let verify = get(&node.rest, "/v1/audit/verify", &token).await;
    assert!(verify.contains("\"valid\":true"), "{verify}");
    assert!(node.terminate().success());
}

/// SoftHSM2 rereads a token's objects when the token's generation counter moves.
fn bump_generation(dir: &Path) {
    let path = dir.join("generation");
    let old = std::fs::read(&path).unwrap();
    let n = u64::from_be_bytes(old[..8].try_into().unwrap()) + 1000;
    std::fs::write(&path, n.to_be_bytes()).unwrap();
}

fn copy_dir(from: &Path, to: &PathBuf) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}
