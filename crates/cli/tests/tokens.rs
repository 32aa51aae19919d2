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
