//! The `hanzo-kms` command line, run as a real process on a temporary data directory.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

/// A `hanzo-kms` command on `dir`, with no inherited HANZO_KMS settings.
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

fn json(c: &mut Command) -> Value {
    let out = c.arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{c:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Run, expect `code`, and return stderr; our own errors are exactly one line, never a panic.
fn fails(c: &mut Command, code: i32) -> String {
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{c:?}: stderr {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    stderr
}

fn one_line(stderr: &str) -> &str {
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    stderr.trim_end()
}

#[test]
fn the_cli_contract_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let init = json(kms(d.path()).arg("init"));
    assert_eq!(init["master_key"]["source"], "file");
    use std::os::unix::fs::PermissionsExt;
    for f in ["master.key", "kms.db"] {
        let mode = std::fs::metadata(d.path().join("data").join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let mode = std::fs::metadata(d.path().join("data"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    let ks = json(kms(d.path()).args([
        "keyspace",
        "create",
        "--customer",
        "acme",
        "--model",
        "gpt4",
    ]));
    assert_eq!(ks["keys"].as_array().unwrap().len(), 3);
    json(kms(d.path()).args(["keys", "create", "data:acme:users"]));
    json(kms(d.path()).args(["keys", "create", "api:acme:gw", "--algorithm", "ed25519"]));
    json(kms(d.path()).args(["keys", "create", "poai:acme:pq", "--algorithm", "ML-DSA-65"]));

    let list = json(kms(d.path()).args(["keys", "list", "--prefix", "poai:"]));
    let names: Vec<&str> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["poai:acme:gpt4", "poai:acme:pq"]);

    // keys show: origin, public key, and the EIP-55 address of that public key.
    let show = json(kms(d.path()).args(["keys", "show", "poai:acme:gpt4"]));
    assert_eq!(show["origin"], "software");
    assert_eq!(show["algorithm"], "secp256k1");
    let v1 = &show["versions"][0];
    let pk = hex::decode(v1["public_key"].as_str().unwrap()).unwrap();
    let addr = hanzo_kms_core::eth::to_checksum(&hanzo_kms_core::eth::address(&pk).unwrap());
    assert_eq!(v1["address"], addr.as_str());
    let human = kms(d.path())
        .args(["keys", "show", "poai:acme:gpt4"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains(&format!("address:          {addr}")));
    let pq = json(kms(d.path()).args(["keys", "show", "poai:acme:pq"]));
    assert_eq!(
        pq["versions"][0]["public_key"].as_str().unwrap().len(),
        2 * 1952
    );
    assert!(pq["versions"][0].get("address").is_none());

    // Model keys rotate every 90 days by default.
    let model = json(kms(d.path()).args(["keys", "show", "model:acme:gpt4"]));
    assert_eq!(model["rotation_period_days"], 90);

    // encrypt | decrypt, with the version in the output; survives rotation.
    let ct = kms(d.path())
        .args(["encrypt", "--key", "data:acme:users", "--aad", "t=1"])
        .write_stdin("hello weights")
        .output()
        .unwrap();
    assert!(ct.status.success());
    let ct = String::from_utf8(ct.stdout).unwrap();
    assert!(ct.starts_with("hkms:v1:"), "{ct}");
    let rot = json(kms(d.path()).args(["keys", "rotate", "data:acme:users"]));
    assert_eq!(rot["primary_version"], 2);
    let pt = kms(d.path())
        .args(["decrypt", "--key", "data:acme:users", "--aad", "t=1"])
        .write_stdin(ct.clone())
        .output()
        .unwrap();
    assert!(pt.status.success());
    assert_eq!(pt.stdout, b"hello weights");
    let pj = json(
        kms(d.path())
            .args(["decrypt", "--key", "data:acme:users", "--aad", "t=1"])
            .write_stdin(ct.clone()),
    );
    assert_eq!(pj["version"], 1);
    assert_eq!(pj["plaintext_base64"], "aGVsbG8gd2VpZ2h0cw==");
    let ej = json(
        kms(d.path())
            .args(["encrypt", "--key", "data:acme:users"])
            .write_stdin("x"),
    );
    assert_eq!(ej["version"], 2);

    // disable / enable / destroy
    json(kms(d.path()).args(["keys", "disable", "data:acme:users"]));
    let e = fails(
        kms(d.path())
            .args(["decrypt", "--key", "data:acme:users", "--aad", "t=1"])
            .write_stdin(ct.clone()),
        1,
    );
    assert_eq!(one_line(&e), "error: key data:acme:users is disabled");
    json(kms(d.path()).args(["keys", "enable", "data:acme:users"]));
    let sched = json(kms(d.path()).args(["keys", "destroy", "data:acme:users"]));
    assert_eq!(sched["state"], "destroy-scheduled");
    json(kms(d.path()).args(["keys", "enable", "data:acme:users"]));
    let gone = json(kms(d.path()).args(["keys", "destroy", "data:acme:users", "--now"]));
    assert_eq!(gone["state"], "destroyed");
    let e = fails(
        kms(d.path())
            .args(["decrypt", "--key", "data:acme:users", "--aad", "t=1"])
            .write_stdin(ct),
        1,
    );
    assert_eq!(one_line(&e), "error: key data:acme:users is destroyed");

    let due = json(kms(d.path()).args(["keys", "rotate", "--due"]));
    assert_eq!(due["failed"], 0);
    assert!(due["rotated"].as_array().unwrap().is_empty());

    let audit = json(kms(d.path()).args(["audit", "verify"]));
    assert_eq!(audit["valid"], true);
    assert!(audit["records"].as_u64().unwrap() > 15);
    let records = json(kms(d.path()).args(["audit", "list", "--limit", "1000"]));
    let ops: Vec<&str> = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    for op in [
        "store.init",
        "key.create",
        "key.rotate",
        "data.encrypt",
        "data.decrypt",
        "key.disable",
        "key.destroy",
    ] {
        assert!(ops.contains(&op), "no {op} in {ops:?}");
    }
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1_with_one_line() {
    let d = tempfile::tempdir().unwrap();
    kms(d.path()).arg("init").assert().success();
    let e = fails(kms(d.path()).args(["keys", "create", "gpt4"]), 2);
    assert!(
        one_line(&e).starts_with("error: invalid key name 'gpt4': expected purpose:customer:name"),
        "{e}"
    );
    let e = fails(
        kms(d.path()).args(["keys", "create", "weights:acme:gpt4"]),
        2,
    );
    assert!(one_line(&e).contains("unknown purpose 'weights'"), "{e}");
    let e = fails(
        kms(d.path()).args(["keys", "create", "data:acme:x", "--algorithm", "rsa"]),
        2,
    );
    assert!(one_line(&e).contains("unknown algorithm 'rsa'"), "{e}");
    let e = fails(
        kms(d.path()).args(["keys", "create", "model:acme:x", "--algorithm", "ed25519"]),
        1,
    );
    assert_eq!(
        one_line(&e),
        "error: algorithm ed25519 cannot be used for model keys; model keys use aes-256-gcm"
    );
    fails(kms(d.path()).args(["keys", "rotate"]), 2);
    fails(kms(d.path()).args(["keys", "nonsense"]), 2);
    fails(&mut kms(d.path()), 2);

    kms(d.path())
        .args(["keys", "create", "model:acme:x"])
        .assert()
        .success();
    let e = fails(kms(d.path()).args(["keys", "create", "model:acme:x"]), 1);
    assert_eq!(one_line(&e), "error: key model:acme:x already exists");
    let e = fails(kms(d.path()).args(["keys", "show", "model:acme:nope"]), 1);
    assert_eq!(one_line(&e), "error: key model:acme:nope not found");
    let e = fails(
        kms(d.path()).args(["--json", "keys", "show", "model:acme:nope"]),
        1,
    );
    let v: Value = serde_json::from_str(one_line(&e)).unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    let e = fails(kms(d.path()).arg("init"), 1);
    assert!(one_line(&e).contains("already initialised"), "{e}");

    let other = tempfile::tempdir().unwrap();
    let e = fails(kms(other.path()).args(["keys", "list"]), 1);
    assert!(one_line(&e).contains("run `hanzo-kms init` first"), "{e}");
}

/// Issue 26, "tokens that expire": `tokens create --ttl` sets `expires_at`, which `tokens list`
/// reports; a lifetime out of range is a usage error.
#[test]
fn tokens_take_a_lifetime() {
    let d = tempfile::tempdir().unwrap();
    kms(d.path()).arg("init").assert().success();
    let created = json(kms(d.path()).args([
        "tokens", "create", "--tenant", "acme", "--role", "verify", "--ttl", "30d",
    ]));
    let at = created["expires_at"].as_i64().expect("expires_at");
    let created_at = created["created_at"].as_i64().unwrap();
    assert!(
        (created_at + 30 * 86_400..=created_at + 30 * 86_400 + 2).contains(&at),
        "{created}"
    );
    let list = json(kms(d.path()).args(["tokens", "list"]));
    assert_eq!(list[0]["expires_at"], at, "{list}");
    let text = kms(d.path()).args(["tokens", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("active"));
    for bad in ["0", "0d", "11y", "3661d", "-5"] {
        let e = fails(
            kms(d.path())
                .args(["tokens", "create", "--tenant", "acme", "--role", "verify"])
                .arg(format!("--ttl={bad}")),
            2,
        );
        assert!(e.contains("--ttl"), "{bad}: {e}");
    }
}

/// Issue 27: the load generators left the deployed binary (they are `hanzo-kms-bench`, in
/// crates/bench); `hanzo-kms bench` is an unknown command, a usage error.
#[test]
fn the_deployed_binary_has_no_bench() {
    let d = tempfile::tempdir().unwrap();
    for args in [
        &["bench", "server"][..],
        &["bench", "sign", "--count", "1"][..],
    ] {
        let e = fails(kms(d.path()).args(args), 2);
        assert!(
            e.contains("unrecognized subcommand 'bench'"),
            "{args:?}: {e}"
        );
    }
    let help = kms(d.path()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(!help.contains("bench"), "{help}");
}

#[test]
fn tampered_or_foreign_ciphertext_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    kms(d.path()).arg("init").assert().success();
    kms(d.path())
        .args(["keys", "create", "data:acme:a"])
        .assert()
        .success();
    kms(d.path())
        .args(["keys", "create", "data:acme:b"])
        .assert()
        .success();
    let out = kms(d.path())
        .args(["encrypt", "--key", "data:acme:a"])
        .write_stdin("the plaintext")
        .output()
        .unwrap();
    let ct = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let (head, payload) = ct.rsplit_once(':').unwrap();
    let mut chars: Vec<char> = payload.chars().collect();
    chars[20] = if chars[20] == 'A' { 'B' } else { 'A' };
    let flipped = format!("{head}:{}", chars.iter().collect::<String>());
    for (key, input) in [
        ("data:acme:a", flipped.as_str()),
        ("data:acme:b", ct.as_str()),
    ] {
        let out = kms(d.path())
            .args(["decrypt", "--key", key])
            .write_stdin(input)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty(), "plaintext was written");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            "error: authentication failed"
        );
    }
    let e = fails(
        kms(d.path())
            .args(["decrypt", "--key", "data:acme:a"])
            .write_stdin("not a ciphertext"),
        1,
    );
    assert!(one_line(&e).contains("not a Hanzo KMS ciphertext"), "{e}");
}

#[test]
fn wrong_master_key_is_refused_and_nothing_changes() {
    let d = tempfile::tempdir().unwrap();
    kms(d.path()).arg("init").assert().success();
    kms(d.path())
        .args(["keys", "create", "data:acme:a"])
        .assert()
        .success();
    let db = d.path().join("data/kms.db");
    let before = std::fs::read(&db).unwrap();
    let e = fails(
        kms(d.path())
            .env("HANZO_KMS_MASTER_KEY", "42".repeat(32))
            .args(["keys", "create", "data:acme:b"]),
        1,
    );
    let line = one_line(&e);
    assert!(
        line.contains("the master key from $HANZO_KMS_MASTER_KEY does not match the store"),
        "{line}"
    );
    assert!(line.contains("nothing was changed"));
    assert!(!line.contains(&"42".repeat(32)));
    assert_eq!(std::fs::read(&db).unwrap(), before);
    let e = fails(
        kms(d.path())
            .env("HANZO_KMS_MASTER_KEY", "not-hex")
            .args(["keys", "list"]),
        1,
    );
    assert!(
        one_line(&e).contains("HANZO_KMS_MASTER_KEY: expected 64 hexadecimal characters"),
        "{e}"
    );
    assert!(!e.contains("not-hex"));
    // With the master key only in the environment, no file is written, and the key is needed.
    let d2 = tempfile::tempdir().unwrap();
    let key = "0123456789abcdef".repeat(4);
    let init = json(kms(d2.path()).env("HANZO_KMS_MASTER_KEY", &key).arg("init"));
    assert_eq!(init["master_key"]["source"], "env");
    assert!(!d2.path().join("data/master.key").exists());
    kms(d2.path())
        .env("HANZO_KMS_MASTER_KEY", &key)
        .args(["keys", "create", "data:x:y"])
        .assert()
        .success();
    let e = fails(kms(d2.path()).args(["keys", "list"]), 1);
    assert!(one_line(&e).contains("the master key is missing"), "{e}");
}

#[test]
fn corrupt_store_gives_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    kms(d.path()).arg("init").assert().success();
    let db = d.path().join("data/kms.db");
    let good = std::fs::read(&db).unwrap();
    std::fs::write(&db, &good[..good.len() / 3]).unwrap();
    let e = fails(kms(d.path()).args(["keys", "list"]), 1);
    assert!(
        one_line(&e).contains("corrupt")
            || e.contains("damaged")
            || e.contains("not a Hanzo KMS store"),
        "{e}"
    );
    std::fs::write(
        &db,
        b"this is not sqlite at all, just some text that is long enough",
    )
    .unwrap();
    let e = fails(kms(d.path()).args(["keys", "list"]), 1);
    assert!(
        one_line(&e).contains("corrupt, truncated or not a Hanzo KMS store"),
        "{e}"
    );
}

#[test]
fn config_check_loads_the_seed_and_names_bad_paths() {
    let d = tempfile::tempdir().unwrap();
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../core/tests/fixtures/hip005.yaml"
    );
    let out = kms(d.path())
        .args(["config", "check", seed])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("google-cloud-kms") && text.contains("hanzo-ai-prod"),
        "{text}"
    );

    let bad = d.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "kms:\n  hanzo:\n    poai_signing:\n      attestation_ttl: an hour\n",
    )
    .unwrap();
    let e = fails(kms(d.path()).args(["config", "check"]).arg(&bad), 1);
    assert!(
        one_line(&e).contains("kms.hanzo.poai_signing.attestation_ttl"),
        "{e}"
    );
    std::fs::write(
        &bad,
        "kms:\n  hanzo:\n    model_encryption:\n      algoritm: AES-256-GCM\n",
    )
    .unwrap();
    let e = fails(kms(d.path()).args(["config", "check"]).arg(&bad), 1);
    assert!(
        one_line(&e).contains("kms.hanzo.model_encryption.algoritm: unknown field"),
        "{e}"
    );
    // What `serve` would refuse at start, `config check` refuses too; and `serve` refuses it
    // before it initialises anything.
    std::fs::write(
        &bad,
        "rate_limits:\n  per_tenant: {per_second: 100, burst: 0}\n",
    )
    .unwrap();
    let e = fails(kms(d.path()).args(["config", "check"]).arg(&bad), 1);
    assert!(
        one_line(&e).contains("rate_limits.per_tenant: burst must be at least 1"),
        "{e}"
    );
    let e = fails(kms(d.path()).arg("--config").arg(&bad).arg("serve"), 1);
    assert!(one_line(&e).contains("burst must be at least 1"), "{e}");
    assert!(!d.path().join("data").exists());
    let missing = d.path().join("missing.pem");
    std::fs::write(
        &bad,
        format!(
            "server:\n  tls: {{cert_file: {0}, key_file: {0}}}\n",
            missing.display()
        ),
    )
    .unwrap();
    let e = fails(kms(d.path()).args(["config", "check"]).arg(&bad), 1);
    assert!(one_line(&e).contains("server.tls.cert_file"), "{e}");

    let secret = d.path().join("secret.yaml");
    std::fs::write(&secret, "kms:\n  lux:\n    provider: softhsm2\n    softhsm2:\n      pin: \"pin-0000-secret\"\nstorage:\n  url: postgres://kms:pw-secret@127.0.0.1/kms\n").unwrap();
    let out = kms(d.path())
        .args(["config", "check"])
        .arg(&secret)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(
        !all.contains("pin-0000-secret") && !all.contains("pw-secret"),
        "{all}"
    );
    let out = json(
        kms(d.path())
            .args(["config", "check"])
            .arg(&secret)
            .env("HANZO_KMS__KMS__HANZO__POAI_SIGNING__ATTESTATION_TTL", "60"),
    );
    assert_eq!(out["kms"]["hanzo"]["poai_signing"]["attestation_ttl"], 60);
    // The spec's sample names a credentials file this machine does not have: init refuses
    // with a clear message naming the service and the file, and writes nothing.
    let e = fails(kms(d.path()).arg("--config").arg(seed).arg("init"), 1);
    assert!(
        one_line(&e).contains("Google Cloud KMS")
            && one_line(&e).contains("/etc/kms/gcp-service-account.json"),
        "{e}"
    );
    assert!(!d.path().join("data/master.key").exists());
}

#[test]
fn demo_runs() {
    let d = tempfile::tempdir().unwrap();
    let v = json(kms(d.path()).arg("demo"));
    assert_eq!(v["ok"], true);
    assert!(v["audit_records"].as_u64().unwrap() >= 10);
    // It ends as the spec's complete inference flow does: an attestation signed and verified,
    // then a settlement that pays for it (and a second one refused).
    let steps: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(&steps[steps.len() - 2..], ["poai", "hmm"], "{steps:?}");

    let out = kms(d.path()).arg("demo").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "SignPoAI",
        "VerifyPoAI: valid",
        "VerifyHMMSettlement: valid",
        "a second settlement of the same attestation: ",
        "was already settled",
        "chain intact",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

#[test]
fn help_teaches_the_commands() {
    let out = Command::cargo_bin("hanzo-kms")
        .unwrap()
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "init",
        "keys",
        "keyspace",
        "encrypt",
        "decrypt",
        "audit",
        "--data-dir",
        "--json",
        "purpose:customer:name",
    ] {
        assert!(help.contains(word), "--help lacks {word}");
    }
}

/// A whole session with trace logging, then a search of every byte it printed (and of the audit
/// log) for the master key and for every key's material, unsealed from the store here by the
/// format documented in the software provider.
#[test]
fn no_secret_reaches_output_logs_or_audit() {
    let d = tempfile::tempdir().unwrap();
    let mut transcript = Vec::<u8>::new();
    let mut run = |args: &[&str], stdin: &str| -> Vec<u8> {
        let out = kms(d.path())
            .env("HANZO_KMS_LOG", "trace")
            .args(args)
            .write_stdin(stdin.to_owned())
            .output()
            .unwrap();
        transcript.extend_from_slice(&out.stdout);
        transcript.extend_from_slice(&out.stderr);
        out.stdout
    };
    run(&["init"], "");
    run(
        &[
            "keyspace",
            "create",
            "--customer",
            "acme",
            "--model",
            "gpt4",
        ],
        "",
    );
    run(&["keys", "create", "data:acme:d"], "");
    run(&["keys", "create", "api:acme:p", "--algorithm", "p256"], "");
    run(
        &["keys", "create", "api:acme:e", "--algorithm", "ed25519"],
        "",
    );
    run(
        &["keys", "create", "poai:acme:pq", "--algorithm", "ml-dsa-65"],
        "",
    );
    let ct = run(&["encrypt", "--key", "data:acme:d"], "payload");
    run(
        &["decrypt", "--key", "data:acme:d"],
        std::str::from_utf8(&ct).unwrap(),
    );
    run(&["keys", "rotate", "model:acme:gpt4"], "");
    for n in [
        "model:acme:gpt4",
        "poai:acme:gpt4",
        "hmm:acme:gpt4",
        "data:acme:d",
        "api:acme:p",
        "poai:acme:pq",
    ] {
        run(&["keys", "show", n], "");
        run(&["--json", "keys", "show", n], "");
    }
    run(&["--json", "keys", "list"], "");
    run(&["--json", "audit", "list", "--limit", "10000"], "");
    run(&["audit", "verify"], "");
    run(&["keys", "create", "data:acme:d"], ""); // an error path
    run(
        &["decrypt", "--key", "data:acme:d"],
        "hkms:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ); // another
    assert!(
        transcript.len() > 1000,
        "the session printed too little to be a meaningful scan"
    );

    let master_hex = std::fs::read_to_string(d.path().join("data/master.key"))
        .unwrap()
        .trim()
        .to_owned();
    let master = hex::decode(&master_hex).unwrap();
    let mut secrets = vec![
        master_hex.clone().into_bytes(),
        master_hex.to_uppercase().into_bytes(),
        master.clone(),
    ];
    let materials = unseal_all(&d.path().join("data/kms.db"), &master);
    assert_eq!(materials.len(), 8, "expected 8 key versions' material");
    use base64::Engine;
    for m in &materials {
        secrets.push(hex::encode(m).into_bytes());
        secrets.push(
            base64::engine::general_purpose::STANDARD
                .encode(m)
                .into_bytes(),
        );
        secrets.push(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(m)
                .into_bytes(),
        );
    }
    // Raw bytes: every 24-byte window of the material that is private, i.e. occurs in no public
    // key (PKCS#8 documents embed the public key) and in no other key's material (the ASN.1
    // headers they share).
    let publics = public_keys(&d.path().join("data/kms.db"));
    let mut private_windows = 0;
    for (i, m) in materials.iter().enumerate() {
        for w in m.windows(24) {
            let public = publics.iter().any(|p| find(p, w).is_some());
            let shared = materials
                .iter()
                .enumerate()
                .any(|(j, o)| j != i && find(o, w).is_some());
            if !public && !shared {
                secrets.push(w.to_vec());
                private_windows += 1;
            }
        }
    }
    assert!(
        private_windows > 8 * 8,
        "too few private windows ({private_windows}) to search for"
    );
    let audit_db = std::fs::read(d.path().join("data/kms.db")).unwrap();
    for s in &secrets {
        assert!(
            find(&transcript, s).is_none(),
            "a secret appeared in the CLI output"
        );
    }
    // The database holds sealed material only: no raw key bytes, no master key.
    for s in secrets.iter().filter(|s| s.len() >= 24) {
        assert!(
            find(&audit_db, s).is_none(),
            "a raw secret is stored in kms.db"
        );
    }
}

fn public_keys(db: &Path) -> Vec<Vec<u8>> {
    use sqlx::{Connection, Row};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query("SELECT public_key FROM key_versions WHERE public_key IS NOT NULL")
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<Vec<u8>, _>(0))
            .collect()
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Unseal every key version's material, following the sealed-blob format in the software
/// provider's docs: HKDF-SHA256 with salt "hanzo-kms/software/v1", info "seal"; AES-256-GCM;
/// AAD "hanzo-kms/sealed/v1\0" ‖ name ‖ 0x00 ‖ u32be(version) ‖ algorithm.
fn unseal_all(db: &Path, master: &[u8]) -> Vec<Vec<u8>> {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
    use sqlx::{Connection, Row};
    let prk = Salt::new(HKDF_SHA256, b"hanzo-kms/software/v1").extract(master);
    let mut seal = [0u8; 32];
    struct L;
    impl aws_lc_rs::hkdf::KeyType for L {
        fn len(&self) -> usize {
            32
        }
    }
    prk.expand(&[b"seal"], L).unwrap().fill(&mut seal).unwrap();
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &seal).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows = rt.block_on(async {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
        let rows = sqlx::query(
            "SELECT m.key_name, m.version, k.algorithm, m.handle FROM key_material m JOIN keys k ON k.name = m.key_name",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        rows.iter()
            .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1), r.get::<String, _>(2), r.get::<Vec<u8>, _>(3)))
            .collect::<Vec<_>>()
    });
    rows.into_iter()
        .map(|(name, version, alg, blob)| {
            assert_eq!(blob[0], 1);
            let mut aad = b"hanzo-kms/sealed/v1\0".to_vec();
            aad.extend_from_slice(name.as_bytes());
            aad.push(0);
            aad.extend_from_slice(&(version as u32).to_be_bytes());
            aad.extend_from_slice(alg.as_bytes());
            let mut buf = blob[13..].to_vec();
            let nonce = Nonce::try_assume_unique_for_key(&blob[1..13]).unwrap();
            let plain = key
                .open_in_place(nonce, Aad::from(aad), &mut buf)
                .expect("documented sealing format");
            plain.to_vec()
        })
        .collect()
}

/// `keys destroy --now` erases the sealed material from every file of the data directory: the
/// database, its WAL, and anything beside them (issue 26, item 10).
#[test]
fn destroyed_material_is_in_no_file_of_the_data_directory() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    json(kms(d.path()).arg("init"));
    for name in ["users", "orders", "logs"] {
        json(kms(d.path()).args(["keys", "create", &format!("data:acme:{name}")]));
    }
    let sealed = |key: &str| -> Vec<u8> {
        use sqlx::{Connection, Row};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let url = format!("sqlite://{}", data.join("kms.db").display());
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("SELECT handle FROM key_material WHERE key_name = $1")
                .bind(key)
                .fetch_one(&mut c)
                .await
                .unwrap()
                .get::<Vec<u8>, _>(0)
        })
    };
    let files_holding = |needle: &[u8]| -> Vec<String> {
        std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && find(&std::fs::read(p).unwrap(), needle).is_some())
            .map(|p| p.display().to_string())
            .collect()
    };
    let handles: Vec<Vec<u8>> = ["users", "orders", "logs"]
        .iter()
        .map(|n| sealed(&format!("data:acme:{n}")))
        .collect();
    assert!(handles.iter().all(|h| h.len() >= 32));
    assert!(
        handles.iter().all(|h| !files_holding(h).is_empty()),
        "the search finds live material"
    );

    // The newest key, then the oldest: neither leaves any 16 bytes of its material behind.
    for (name, h) in [("logs", &handles[2]), ("users", &handles[0])] {
        let key = format!("data:acme:{name}");
        let gone = json(kms(d.path()).args(["keys", "destroy", &key, "--now"]));
        assert_eq!(gone["state"], "destroyed");
        for piece in h.chunks_exact(16) {
            assert_eq!(files_holding(piece), Vec::<String>::new(), "{key}");
        }
    }
    // The remaining key kept its material and still works.
    assert_eq!(sealed("data:acme:orders"), handles[1]);
    let ct = kms(d.path())
        .args(["encrypt", "--key", "data:acme:orders"])
        .write_stdin("still here")
        .output()
        .unwrap();
    assert!(ct.status.success());
    let pt = kms(d.path())
        .args(["decrypt", "--key", "data:acme:orders"])
        .write_stdin(ct.stdout)
        .output()
        .unwrap();
    assert_eq!(pt.stdout, b"still here");
}
