//! `hanzo-kms tokens …` as a real process, offline on the data directory.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

fn kms(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("hanzo-kms").unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("HANZO_KMS") {
            c.env_remove(k);
        }
    }
    c.arg("--data-dir").arg(dir.join("data"));
    c
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let out = kms(dir).arg("--json").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn create_list_revoke() {
    let d = tempfile::tempdir().unwrap();
    kms(d.path()).arg("init").assert().success();
    let created = json(
        d.path(),
        &[
            "tokens",
            "create",
            "--tenant",
            "acme",
            "--role",
            "decrypt",
            "--role",
            "encrypt",
            "--keys",
            "model:acme:*",
            "--description",
            "inference nodes",
        ],
    );
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with(&format!("hkms_{id}_")));
    assert_eq!(created["roles"], serde_json::json!(["decrypt", "encrypt"]));
    assert_eq!(created["patterns"], serde_json::json!(["model:acme:*"]));

    let listed = json(d.path(), &["tokens", "list"]);
    let text = listed.to_string();
    assert!(text.contains(&id) && text.contains("inference nodes"));
    assert!(!text.contains(&token[22..]), "list shows the secret");

    let human = kms(d.path()).args(["tokens", "list"]).output().unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("active") && human.contains("model:acme:*"),
        "{human}"
    );

    let revoked = json(d.path(), &["tokens", "revoke", &id]);
    assert!(revoked["revoked_at"].as_i64().is_some());
    let human = kms(d.path()).args(["tokens", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains("revoked"));

    // Bad input: an unknown role is a clear error; a pattern outside the tenant is refused.
    let out = kms(d.path())
        .args(["tokens", "create", "--tenant", "acme", "--role", "root"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("'root' is not a role"));
    let out = kms(d.path())
        .args([
            "tokens",
            "create",
            "--tenant",
            "acme",
            "--role",
            "sign",
            "--keys",
            "poai:globex:*",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be 'acme'"));
    // And nothing of the token is in the store or the audit log.
    let audit = json(d.path(), &["audit", "list"]).to_string();
    assert!(audit.contains("token.create") && !audit.contains(&token[22..]));
    let db = std::fs::read(d.path().join("data/kms.db")).unwrap();
    assert!(
        !db.windows(token.len() - 22)
            .any(|w| w == &token.as_bytes()[22..])
    );
}

#[test]
fn bench_server_runs_and_reports_its_figures() {
    // A smoke test of the benchmark tool itself (figures are recorded in docs/benchmarks.md,
    // never asserted): it must start, drive both routes, and report every field.
    let d = tempfile::tempdir().unwrap();
    let probe = tempfile::tempdir().unwrap();
    let v = json(
        d.path(),
        &[
            "bench",
            "server",
            "--seconds",
            "0.3",
            "--concurrency",
            "2",
            "--rate",
            "200",
            "--warmup",
            "0.2",
            "--disk-dir",
            probe.path().to_str().unwrap(),
            "--prefill",
            "3000",
        ],
    );
    // --prefill signed its nonce records (three calls of 1,024) before the figures.
    assert_eq!(v["prefill"]["nonces"], 3000, "{v}");
    assert!(v["prefill"]["seconds"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(
        v["prefill"]["settle_seconds"], 2.0,
        "the shortest pause: {v}"
    );
    for route in [
        "poai_sign",
        "grpc_poai_sign",
        "encrypt_1kib",
        "poai_sign@200/s",
        "encrypt_1kib@200/s",
    ] {
        let r = &v["results"][route];
        assert!(r["requests"].as_u64().unwrap() > 0, "{v}");
        for f in [
            "requests_per_s",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "commits_per_request",
            "fsyncs_per_request",
            "checkpoints_per_request",
        ] {
            assert!(r[f].as_f64().is_some(), "{route}.{f} in {v}");
        }
        // The committer's share of the wall time, and its cycle per transaction.
        let busy = r["committer_busy"].as_f64().unwrap();
        assert!(0.0 < busy && busy < 1.5, "{route}: {busy} in {v}");
        assert!(
            r["commit_us_per_transaction"].as_f64().unwrap() > 0.0,
            "{v}"
        );
        assert!(r["sync_us_per_transaction"].as_f64().unwrap() > 0.0, "{v}");
        assert!(
            r["checkpoint_us_per_transaction"].as_f64().unwrap() >= 0.0,
            "{v}"
        );
        // A request's waits on the committer: for its batch (none, if it came first to an idle
        // committer), and for its answer to be picked up, which always takes some time.
        assert!(r["queue_us_per_request"].as_f64().unwrap() >= 0.0, "{v}");
        assert!(r["wakeup_us_per_request"].as_f64().unwrap() > 0.0, "{v}");
        // The load generator's own CPU per request, where the kernel reports a thread's CPU
        // time (Linux): more than nothing, and no more than every core's wall time per request
        // (twice that, for the warm-up's requests and where the window's ends fall). That
        // only the generator's threads are counted is `bench_server`'s unit test.
        if cfg!(target_os = "linux") {
            let generator = r["generator_cpu_us_per_request"].as_f64().unwrap();
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let wall_us = 1e6 / r["requests_per_s"].as_f64().unwrap();
            assert!(
                0.0 < generator && generator < 2.0 * cores * wall_us,
                "{route}: {generator} µs against {wall_us} µs on {cores} cores in {v}"
            );
        }
        // How late the bench sent its requests is reported for the open-loop figures only.
        let late = r["sent_after_due_p99_ms"].as_f64();
        assert_eq!(late.is_some(), route.contains('@'), "{route} in {v}");
        assert!(late.is_none_or(|l| l >= 0.0), "{route} in {v}");
    }
    // The pacer hands out each due time once and stops at the deadline: 200/s for 0.3 s is
    // 60 requests (one either way for where the warm-up's end falls), sent or, on a server
    // that fell far behind, counted as never sent.
    for route in ["poai_sign@200/s", "encrypt_1kib@200/s"] {
        let r = &v["results"][route];
        let n = r["requests"].as_u64().unwrap() + r["unsent"].as_u64().unwrap();
        assert!((59..=61).contains(&n), "{route}: {n} requests in {v}");
    }
    // The disk reference, at the start and at the end: at least 100 syncs each.
    for when in ["before", "after"] {
        let d = &v["reference"]["disk_fdatasync_4kib"][when];
        let (p50, p99) = (d["p50_ms"].as_f64().unwrap(), d["p99_ms"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p99, "{when}: {d}");
        assert!(d["syncs"].as_u64().unwrap() >= 100, "{when}: {d}");
    }
    assert_eq!(
        v["reference"]["disk_fdatasync_4kib"]["dir"],
        probe.path().to_str().unwrap()
    );
    // The probe's file is gone: --disk-dir is left as it was.
    assert_eq!(std::fs::read_dir(probe.path()).unwrap().count(), 0);
}

#[test]
fn bench_server_takes_its_token_like_every_remote_command() {
    let d = tempfile::tempdir().unwrap();
    // Nothing listens on port 9 of loopback: the bench fails on connecting, after it took the
    // token (it once required its own --token and refused --token-file at parsing).
    let token_file = d.path().join("admin.token");
    std::fs::write(&token_file, "hkms_0000000000000000_x\n").unwrap();
    let url = "http://127.0.0.1:9";
    let out = kms(d.path())
        .args(["bench", "server", "--url", url, "--token-file"])
        .arg(&token_file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("required arguments"), "{err}");
    assert!(err.contains("connecting to 127.0.0.1:9"), "{err}");
    let out = kms(d.path())
        .args(["bench", "server", "--url", url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains("--url needs a token: --token-file FILE, HANZO_KMS_TOKEN or --token"),
        "{err}"
    );
}
