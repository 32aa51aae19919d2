//! `hanzo-kms-bench` run as a real process. The figures are recorded in docs/benchmarks.md and
//! never asserted: these tests check that each bench starts, measures what it says and reports
//! every field, and that bad numbers are usage errors.

use std::process::{Command, Output};

use serde_json::Value;

/// A `hanzo-kms-bench` command with no inherited HANZO_KMS settings.
fn bench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hanzo-kms-bench"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HANZO_KMS") {
            c.env_remove(k);
        }
    }
    c
}

fn json(args: &[&str]) -> Value {
    let out = bench().arg("--json").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Run, expect `code`, and return stderr; never a panic.
fn fails(c: &mut Command, code: i32) -> String {
    let out: Output = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{c:?}: stderr {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    stderr
}

/// The subcommands `hanzo-kms bench` had, with their options.
#[test]
fn help_lists_the_benches_and_their_options() {
    let out = bench().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Measure throughput against reference implementations on this machine"),
        "{help}"
    );
    for sub in ["server", "model", "sign"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub} in {help}"
        );
    }
    for (sub, options) in [
        (
            "server",
            &[
                "--url",
                "--grpc-url",
                "--concurrency",
                "--seconds",
                "--batch",
                "--rate",
                "--warmup",
                "--ordered-nonces",
                "--disk-dir",
                "--prefill",
                "--token",
                "--token-file",
                "--json",
            ][..],
        ),
        (
            "model",
            &[
                "--size",
                "--file-size",
                "--dir",
                "--segment-size",
                "--threads",
                "--repeat",
            ][..],
        ),
        (
            "sign",
            &[
                "--seconds",
                "--threads",
                "--concurrency",
                "--provider",
                "--count",
                "--config",
            ][..],
        ),
    ] {
        let out = bench().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub}");
        let help = String::from_utf8_lossy(&out.stdout);
        for o in options {
            assert!(help.contains(o), "{sub} {o} in {help}");
        }
    }
}

/// Issue 26 item 15: `bench server --seconds -1` panicked (a negative Duration). Every number a
/// bench takes is checked by the argument parser: a usage error (exit 2), never a panic.
#[test]
fn bench_numbers_out_of_range_are_usage_errors() {
    for (args, says) in [
        (
            &["server", "--seconds", "-1"][..],
            "unexpected argument '-1'",
        ),
        (&["server", "--seconds=-1"][..], "out of range"),
        (&["server", "--seconds", "0"][..], "out of range"),
        (&["server", "--seconds", "NaN"][..], "not a finite number"),
        (&["server", "--seconds", "inf"][..], "not a finite number"),
        (&["server", "--seconds", "1e300"][..], "out of range"),
        (&["server", "--rate=-5"][..], "out of range"),
        (&["server", "--warmup=-0.5"][..], "out of range"),
        (&["server", "--concurrency", "0"][..], "not a count"),
        (&["server", "--batch", "0"][..], "not a count"),
        (&["sign", "--seconds=-3"][..], "out of range"),
        (&["sign", "--threads", "0"][..], "not a count"),
        (&["model", "--repeat", "0"][..], "0 is not in 1..=1000"),
    ] {
        let e = fails(bench().args(args), 2);
        assert!(e.contains(says), "{args:?}: {e}");
    }
}

#[test]
fn bench_server_runs_and_reports_its_figures() {
    // A smoke test of the benchmark tool itself (figures are recorded in docs/benchmarks.md,
    // never asserted): it must start, drive both routes, and report every field.
    let probe = tempfile::tempdir().unwrap();
    let v = json(&[
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
    ]);
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
        // only the generator's threads are counted is the `server::load` unit test.
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
    let out = bench()
        .args(["server", "--url", url, "--token-file"])
        .arg(&token_file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("required arguments"), "{err}");
    assert!(err.contains("connecting to 127.0.0.1:9"), "{err}");
    let out = bench().args(["server", "--url", url]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains("--url needs a token: --token-file FILE, HANZO_KMS_TOKEN or --token"),
        "{err}"
    );
}

/// `sign --count N` runs exactly N signatures per path and reports both per-signature times.
#[test]
fn sign_count_reports_both_paths() {
    let v = json(&["sign", "--count", "200"]);
    assert_eq!(v["count"], 200, "{v}");
    for path in ["raw_us", "ours_us"] {
        assert!(v[path].as_f64().unwrap() > 0.0, "{path} in {v}");
    }
}

/// `model` in memory only (--file-size 0): our cipher against raw aws-lc-rs, and the decryption
/// reproduced the plaintext (else it fails).
#[test]
fn model_in_memory_reports_its_figures() {
    let v = json(&[
        "model",
        "--size",
        "2MiB",
        "--file-size",
        "0",
        "--repeat",
        "1",
        "--threads",
        "2",
    ]);
    assert_eq!(v["size_bytes"], 2 << 20, "{v}");
    assert_eq!(v["segment_size"], 1 << 20, "{v}");
    assert_eq!(v["threads"], 2, "{v}");
    for f in [
        "raw_aws_lc_gbps",
        "raw_aws_lc_cached_gbps",
        "encrypt_gbps",
        "decrypt_gbps",
    ] {
        assert!(v["in_memory"][f].as_f64().unwrap() > 0.0, "{f} in {v}");
    }
    assert!(v.get("files").is_none(), "{v}");
}
