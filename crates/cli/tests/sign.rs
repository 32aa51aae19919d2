//! `hanzo-kms poai …` and `hanzo-kms hmm …` as a real process.

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

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn attestation(node: &str) -> String {
    format!(
        r#"{{"model_id":"acme:gpt4","input_hash":"0x{}","output_hash":"0x{}","timestamp":{},"compute_time_ms":5,"node_id":"{node}"}}"#,
        "ab".repeat(32),
        "cd".repeat(32),
        now()
    )
}

#[test]
fn sign_verify_settle_and_batch() {
    let d = tempfile::tempdir().unwrap();
    kms(d.path()).arg("init").assert().success();
    kms(d.path())
        .args([
            "keyspace",
            "create",
            "--customer",
            "acme",
            "--model",
            "gpt4",
        ])
        .assert()
        .success();
    let att = write(d.path(), "att.json", &attestation("n1"));
    let out = kms(d.path())
        .args(["poai", "sign", "--key", "poai:acme:gpt4", "--in"])
        .arg(&att)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed: Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in ["attestation", "digest", "signature", "signer", "algorithm"] {
        assert!(signed.get(field).is_some(), "missing {field}");
    }
    assert_eq!(
        signed["attestation"]["nonce"].as_str().unwrap().len(),
        66,
        "a nonce was filled in"
    );
    let signed_path = write(d.path(), "signed.json", &signed.to_string());
    let v = kms(d.path())
        .args(["poai", "verify", "--in"])
        .arg(&signed_path)
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(0));
    assert_eq!(
        serde_json::from_slice::<Value>(&v.stdout).unwrap()["valid"],
        true
    );
    // A tampered copy: valid false, reason, exit 1.
    let mut bad = signed.clone();
    bad["attestation"]["compute_time_ms"] = 6.into();
    let bad_path = write(d.path(), "bad.json", &bad.to_string());
    let v = kms(d.path())
        .args(["poai", "verify", "--in"])
        .arg(&bad_path)
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(1));
    let verdict: Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(
        verdict,
        serde_json::json!({"valid": false, "reason": "digest_mismatch"})
    );

    let settlement = format!(
        r#"{{"job_id":"job-1","provider":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed","consumer":"0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359","amount":"1000","attestation_digest":"{}","timestamp":{}}}"#,
        signed["digest"].as_str().unwrap(),
        now()
    );
    let s = write(d.path(), "settlement.json", &settlement);
    let out = kms(d.path())
        .args(["hmm", "sign", "--key", "hmm:acme:gpt4", "--in"])
        .arg(&s)
        .arg("--attestation")
        .arg(&signed_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let settled = write(
        d.path(),
        "settled.json",
        &String::from_utf8(out.stdout).unwrap(),
    );
    kms(d.path())
        .args(["hmm", "verify", "--in"])
        .arg(&settled)
        .arg("--attestation")
        .arg(&signed_path)
        .assert()
        .success();
    let again = kms(d.path())
        .args(["hmm", "sign", "--key", "hmm:acme:gpt4", "--in"])
        .arg(&s)
        .arg("--attestation")
        .arg(&signed_path)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("was already settled"));

    let lines: String = (0..3)
        .map(|i| attestation(&format!("b{i}")) + "\n")
        .collect();
    let batch = write(d.path(), "atts.jsonl", &lines);
    let out = kms(d.path())
        .args(["poai", "sign-batch", "--key", "poai:acme:gpt4", "--in"])
        .arg(&batch)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let items: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(items.len(), 3);
    let item = write(d.path(), "item.json", items[1]);
    kms(d.path())
        .args(["poai", "verify-item", "--in"])
        .arg(&item)
        .assert()
        .success();
}

#[test]
fn bad_json_names_the_field() {
    let d = tempfile::tempdir().unwrap();
    kms(d.path()).arg("init").assert().success();
    kms(d.path())
        .args([
            "keyspace",
            "create",
            "--customer",
            "acme",
            "--model",
            "gpt4",
        ])
        .assert()
        .success();
    let cases = [
        ("poai", attestation("x").replace("\"node_id\"", "\"extra\":1,\"node_id\""), "unknown field `extra`"),
        ("poai", attestation("x").replace(&"ab".repeat(32), "abc"), "input_hash: expected 0x and 64 hex digits"),
        ("poai", attestation("x").replace(",\"compute_time_ms\":5", ""), "missing field `compute_time_ms`"),
        ("hmm", r#"{"job_id":"j","provider":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed","consumer":"0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359","amount":"-1","attestation_digest":"0x0000000000000000000000000000000000000000000000000000000000000001","timestamp":1}"#.to_owned(), "amount: '-1' is not a non-negative decimal integer"),
        ("hmm", r#"{"job_id":"j","provider":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD","consumer":"0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359","amount":"1","attestation_digest":"0x0000000000000000000000000000000000000000000000000000000000000001","timestamp":1}"#.to_owned(), "provider: '0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD' has a bad EIP-55 checksum"),
    ];
    for (cmd, text, want) in cases {
        let f = write(d.path(), "in.json", &text);
        let key = format!("{cmd}:acme:gpt4");
        let mut c = kms(d.path());
        c.args([cmd, "sign", "--key", &key, "--in"]).arg(&f);
        if cmd == "hmm" {
            // The settlement is read first: its error is the one reported.
            c.arg("--attestation").arg(&f);
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{want}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "want '{want}', got: {err}");
        assert!(out.stdout.is_empty());
    }
}
