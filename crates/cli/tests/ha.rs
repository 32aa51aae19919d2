//! High availability on a real PostgreSQL 15 (started by the test, see `hanzo-kms-testkit`):
//! three `hanzo-kms serve` processes on one database share keys, tokens, the replay guard and one
//! audit chain; a node killed with SIGKILL mid-load loses no acknowledged key; the newest audit
//! records deleted after several nodes wrote are found; PostgreSQL down at start is retried;
//! PostgreSQL lost mid-request fails the request cleanly and the node recovers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hanzo_kms_client::Client;
use hanzo_kms_core::ErrorKind;
use hanzo_kms_core::eip712::{Address, B32, HMMSettlement, U256};
use hanzo_kms_testkit::{Postgres, SERVE_ARGS, Served, attestation, now};
use serde_json::Value;

fn clean(c: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("HANZO_KMS") {
            c.env_remove(k);
        }
    }
}

/// One node's data directory: a config naming the shared database, and (for every node after
/// the first) a copy of the first node's master key.
fn node_dir(
    root: &Path,
    name: &str,
    url: &str,
    extra: &str,
    master_from: Option<&Path>,
) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        format!("storage:\n  url: {url}\n{extra}"),
    )
    .unwrap();
    if let Some(from) = master_from {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.join("master.key");
        std::fs::copy(from.join("master.key"), &key).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir
}

fn cli(dir: &Path) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("hanzo-kms"));
    clean(&mut c);
    c.arg("--data-dir")
        .arg(dir)
        .arg("--config")
        .arg(dir.join("config.yaml"));
    c
}

/// A `hanzo-kms serve` process on a node's data directory (standard error collected).
type Node = Served;

fn serve_cmd(dir: &Path) -> Command {
    let mut c = cli(dir);
    c.args(SERVE_ARGS);
    c
}

fn start_node(dir: &Path) -> Node {
    Served::start(serve_cmd(dir), true)
}

async fn client(node: &Node, token_dir: &Path) -> Client {
    let token = std::fs::read_to_string(token_dir.join("admin.token")).unwrap();
    Client::builder(&node.grpc, token.trim())
        .retries(0)
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .unwrap()
}

fn settlement(job: &str, digest: B32) -> HMMSettlement {
    HMMSettlement {
        job_id: job.into(),
        provider: Address([0x11; 20]),
        consumer: Address([0x22; 20]),
        amount: U256::parse_decimal("12345").unwrap(),
        attestation_digest: digest,
        timestamp: now(),
        expiry: 0,
        nonce: None,
    }
}

/// `hanzo-kms audit verify --json` run on a node's data directory (straight on PostgreSQL),
/// which must find the log intact.
fn audit_verify(dir: &Path) -> Value {
    let (ok, report) = audit_verify_status(dir);
    assert!(ok, "audit verify: {report}");
    report
}

/// `hanzo-kms audit verify --json`: whether it exited 0, and its report.
fn audit_verify_status(dir: &Path) -> (bool, Value) {
    let out = cli(dir)
        .args(["--json", "audit", "verify"])
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "audit verify printed no report: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// Three nodes on one database: node A initialises it on its first start; nodes B and C get A's
/// master key and serve the same keys. Returns A's data directory (its admin token).
fn three_nodes(pg: &Postgres, root: &Path) -> (PathBuf, Node, Node, Node) {
    let url = pg.create_database("kms");
    let a_dir = node_dir(root, "a", &url, "", None);
    let a = start_node(&a_dir);
    let b = start_node(&node_dir(root, "b", &url, "", Some(&a_dir)));
    let c = start_node(&node_dir(root, "c", &url, "", Some(&a_dir)));
    (a_dir, a, b, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_keys_tokens_the_replay_guard_and_one_audit_chain() {
    let pg = Postgres::start();
    let root = tempfile::tempdir().unwrap();
    let (a_dir, a, b, c) = three_nodes(&pg, root.path());
    let ca = client(&a, &a_dir).await;
    let cb = client(&b, &a_dir).await;
    let cc = client(&c, &a_dir).await;
    let clients = [ca.clone(), cb.clone(), cc.clone()];

    // A key created on node A is used on node B, and the other way round.
    ca.create_model_keyspace("acme", "gpt4").await.unwrap();
    let signed = cb
        .sign_poai("poai:acme:gpt4", attestation("n1"))
        .await
        .unwrap();
    assert!(ca.verify_poai(&signed).await.unwrap().valid);
    let ct = cb.encrypt("model:acme:gpt4", b"shared", b"").await.unwrap();
    assert_eq!(
        ca.decrypt("model:acme:gpt4", &ct, b"")
            .await
            .unwrap()
            .expose(),
        b"shared"
    );
    let weights: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let sealed = ca
        .encrypt_model_weights("model:acme:gpt4", &weights, b"ha")
        .await
        .unwrap();
    assert_eq!(
        &cb.decrypt_model_weights("model:acme:gpt4", &sealed)
            .await
            .unwrap()[..],
        &weights[..]
    );

    // A token made on A works on B and C at once; revoked on A, both refuse it within the 1 s
    // cache.
    let (info, secret) = ca
        .create_token("acme", &["sign".into()], &[], "ha test")
        .await
        .unwrap();
    let mut with_token = Vec::new();
    for node in [&b, &c] {
        let t = Client::builder(&node.grpc, &secret)
            .retries(0)
            .connect()
            .await
            .unwrap();
        t.sign_poai("poai:acme:gpt4", attestation("n2"))
            .await
            .unwrap();
        with_token.push(t);
    }
    ca.revoke_token(&info.id).await.unwrap();
    let revoked = Instant::now();
    for (node, t) in ["B", "C"].iter().zip(&with_token) {
        loop {
            match t.sign_poai("poai:acme:gpt4", attestation("n3")).await {
                Err(e) if e.kind() == ErrorKind::Unauthenticated => break,
                Ok(_) | Err(_) => {
                    assert!(
                        revoked.elapsed() < Duration::from_secs(3),
                        "node {node} still accepts a token revoked on node A after 3 s"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    // 16 concurrent settlements of one attestation, spread over the three nodes: exactly one
    // wins.
    let att = ca
        .sign_poai("poai:acme:gpt4", attestation("race"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let c = clients[i % 3].clone();
        let att = att.clone();
        tasks.push(tokio::spawn(async move {
            c.sign_hmm_settlement(
                "hmm:acme:gpt4",
                settlement(&format!("job-{i}"), att.digest),
                &att,
            )
            .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(e) => assert_eq!(e.kind(), ErrorKind::Replayed, "{e}"),
        }
    }
    assert_eq!(wins, 1, "one attestation must settle exactly once");

    // A 3 × 6-client mixed load; every request succeeds and the audit chain still verifies.
    let before = audit_verify(&a_dir)["records"].as_u64().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..18 {
        let c = clients[i % 3].clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match n % 4 {
                    0 => {
                        c.create_key(&format!("api:load:k{i}-{n}"), Some("ed25519"))
                            .await
                            .unwrap();
                    }
                    1 => {
                        let s = c
                            .sign_poai("poai:acme:gpt4", attestation(&format!("l{i}")))
                            .await
                            .unwrap();
                        let a2 = s.clone();
                        c.sign_hmm_settlement(
                            "hmm:acme:gpt4",
                            settlement(&format!("load-{i}-{n}"), a2.digest),
                            &a2,
                        )
                        .await
                        .unwrap();
                        done += 1;
                    }
                    2 => {
                        let ct = c.encrypt("model:acme:gpt4", b"x", b"").await.unwrap();
                        c.decrypt("model:acme:gpt4", &ct, b"").await.unwrap();
                        done += 1;
                    }
                    _ => {
                        c.get_key("poai:acme:gpt4").await.unwrap();
                    }
                }
                done += 1;
            }
            done
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut requests = 0;
    for t in tasks {
        requests += t.await.unwrap();
    }
    let report = audit_verify(&a_dir);
    assert_eq!(report["valid"], Value::Bool(true), "{report}");
    let records = report["records"].as_u64().unwrap();
    assert!(
        records >= before + requests,
        "{requests} requests but only {} new audit records",
        records - before
    );
    drop((a, b, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_load_loses_no_acknowledged_key() {
    let pg = Postgres::start();
    let root = tempfile::tempdir().unwrap();
    let (a_dir, mut a, b, c) = three_nodes(&pg, root.path());
    let ca = client(&a, &a_dir).await;
    let cb = client(&b, &a_dir).await;
    let cc = client(&c, &a_dir).await;
    ca.create_model_keyspace("acme", "gpt4").await.unwrap();

    // 6 clients per node create keys and sign; each records what the server acknowledged.
    // (`on_b`: on a node that stays up, B or C.)
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..18 {
        let on_b = i % 3 != 0;
        let c = match i % 3 {
            0 => ca.clone(),
            1 => cb.clone(),
            _ => cc.clone(),
        };
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failures = 0u32;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let name = format!("api:kill:k{i}-{n}");
                match c.create_key(&name, Some("ed25519")).await {
                    Ok(_) => acked.push(name),
                    Err(e) => {
                        assert!(!on_b, "node B or C failed while A was killed: {e}");
                        failures += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                if on_b {
                    c.sign_poai("poai:acme:gpt4", attestation("b"))
                        .await
                        .unwrap();
                }
            }
            (on_b, acked, failures)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let (mut acked_a, mut acked_b, mut failed_a) = (0, 0, 0);
    for t in tasks {
        let (on_b, keys, failures) = t.await.unwrap();
        if on_b {
            acked_b += keys.len();
        } else {
            acked_a += keys.len();
            failed_a += failures;
        }
        acked.extend(keys);
    }
    assert!(acked_a > 0 && acked_b > 0, "load ran on the nodes");
    assert!(failed_a > 0, "the killed node's clients saw it go");
    for name in &acked {
        cb.get_key(name)
            .await
            .unwrap_or_else(|e| panic!("acknowledged key {name} is lost: {e}"));
    }
    let report = audit_verify(&a_dir);
    assert_eq!(report["valid"], Value::Bool(true), "{report}");
    drop((b, c));
}

/// Several nodes write for a while; then the newest audit records, those of the node that wrote
/// last, are deleted from the database: `audit verify` says so, from any node's data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_records_deleted_after_several_nodes_wrote_are_found() {
    let pg = Postgres::start();
    let root = tempfile::tempdir().unwrap();
    let (a_dir, a, b, c) = three_nodes(&pg, root.path());
    let clients = [
        client(&a, &a_dir).await,
        client(&b, &a_dir).await,
        client(&c, &a_dir).await,
    ];
    clients[0]
        .create_model_keyspace("acme", "gpt4")
        .await
        .unwrap();
    for round in 0..5 {
        for (i, c) in clients.iter().enumerate() {
            c.sign_poai("poai:acme:gpt4", attestation(&format!("r{round}-{i}")))
                .await
                .unwrap();
        }
    }
    // The last node writes a few more, alone.
    for k in 0..3 {
        clients[2]
            .sign_poai("poai:acme:gpt4", attestation(&format!("last-{k}")))
            .await
            .unwrap();
    }
    drop((a, b, c));
    assert_eq!(audit_verify(&a_dir)["valid"], Value::Bool(true));
    pg.psql(
        "kms",
        "DELETE FROM audit_log WHERE seq > (SELECT MAX(seq) - 3 FROM audit_log)",
    );
    let (ok, report) = audit_verify_status(&a_dir);
    assert!(!ok, "a broken log must fail the command: {report}");
    assert_eq!(report["valid"], Value::Bool(false), "{report}");
    let reason = report["problem"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("deleted from the end"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_at_start_is_retried_with_back_off_until_it_returns() {
    let pg = Postgres::start();
    let root = tempfile::tempdir().unwrap();
    let url = pg.create_database("kms");
    let dir = node_dir(root.path(), "a", &url, "  connect_timeout_secs: 60\n", None);
    // The first start initialises the database and writes the admin token.
    start_node(&dir).kill();
    pg.stop();

    // With a short budget the node gives up, says why and exits non-zero.
    let short = node_dir(
        root.path(),
        "short",
        &url,
        "  connect_timeout_secs: 1\n",
        Some(&dir),
    );
    let out = cli(&short).args(["keys", "list"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("storage unreachable, retrying"), "{err}");
    assert!(err.contains("gave up after"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // With the default budget it keeps retrying, and serves once PostgreSQL is back.
    let mut node = Served::spawn(serve_cmd(&dir), true);
    let waiting = Instant::now();
    while !node.stderr().contains("storage unreachable, retrying") {
        assert!(
            waiting.elapsed() < Duration::from_secs(20),
            "no retry logged"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(800));
    pg.restart();
    node.wait_listening();
    let c = client(&node, &dir).await;
    c.create_key("api:acme:after", Some("ed25519"))
        .await
        .unwrap();
    assert!(
        node.stderr().matches("storage unreachable").count() >= 2,
        "backed off and retried more than once:\n{}",
        node.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_mid_request_fails_cleanly_and_the_node_recovers() {
    let pg = Postgres::start();
    let root = tempfile::tempdir().unwrap();
    let url = pg.create_database("kms");
    let dir = node_dir(root.path(), "a", &url, "", None);
    let node = start_node(&dir);
    let c = client(&node, &dir).await;
    c.create_model_keyspace("acme", "gpt4").await.unwrap();

    pg.stop();
    let started = Instant::now();
    let e = c
        .create_key("api:acme:lost", Some("ed25519"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let e = c
        .sign_poai("poai:acme:gpt4", attestation("lost"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "failing took {:?}",
        started.elapsed()
    );

    pg.restart();
    // The node reconnects by itself; nothing of the failed create was kept.
    let back = Instant::now();
    loop {
        match c.get_key("api:acme:lost").await {
            Err(e) if e.kind() == ErrorKind::NotFound => break,
            other => {
                assert!(
                    back.elapsed() < Duration::from_secs(15),
                    "not recovered: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    c.create_key("api:acme:lost", Some("ed25519"))
        .await
        .unwrap();
    let signed = c
        .sign_poai("poai:acme:gpt4", attestation("back"))
        .await
        .unwrap();
    assert!(c.verify_poai(&signed).await.unwrap().valid);
    let report = audit_verify(&dir);
    assert_eq!(report["valid"], Value::Bool(true), "{report}");
    assert!(!node.stderr().contains("panicked"), "{}", node.stderr());
}
