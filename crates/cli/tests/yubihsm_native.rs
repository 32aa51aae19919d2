//! `provider: yubihsm2-native` through the binary, without a device: no YubiHSM 2 or
//! yubihsm-connector can be had here (DESIGN.md §7), so these tests cover what is reachable
//! without one: the config section, a connector that does not answer, a missing password.
//! The provider itself runs against the `yubihsm` crate's MockHsm in its own crate's tests.

use std::net::TcpListener;
use std::path::Path;

use assert_cmd::Command;

fn kms(dir: &Path, config: &str) -> Command {
    let path = dir.join("kms.yaml");
    std::fs::write(&path, config).unwrap();
    let mut c = Command::cargo_bin("hanzo-kms").unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("HANZO_KMS") {
            c.env_remove(k);
        }
    }
    c.arg("--config")
        .arg(path)
        .arg("--data-dir")
        .arg(dir.join("data"));
    c
}

fn fails(c: &mut Command) -> String {
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{c:?}: stderr {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn init_against_a_connector_that_does_not_answer_fails_cleanly_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "kms:\n  lux:\n    provider: yubihsm2-native\n    yubihsm2-native:\n      connector_url: http://127.0.0.1:{port}\n      auth_key_id: 1\n      password: ${{HANZO_TEST_YUBIHSM_PASSWORD}}\n      timeout: 2s\n"
    );
    let stderr = fails(
        kms(d.path(), &config)
            .env("HANZO_TEST_YUBIHSM_PASSWORD", "correct-horse-battery")
            .arg("init"),
    );
    assert!(
        stderr.contains("YubiHSM 2")
            && stderr.contains(&format!("http://127.0.0.1:{port}"))
            && stderr.contains("kms.lux.yubihsm2-native.connector_url")
            && stderr.contains("does not answer"),
        "{stderr}"
    );
    assert!(!stderr.contains("correct-horse-battery"), "{stderr}");
    // Nothing half-written: no store was left behind.
    assert!(!d.path().join("data/kms.db").exists());
    assert!(!d.path().join("data/master.key").exists());
}

#[test]
fn a_missing_password_or_variable_is_a_config_error_naming_the_key() {
    let d = tempfile::tempdir().unwrap();
    let stderr = fails(kms(
        d.path(),
        "kms:\n  lux:\n    provider: yubihsm2-native\n    yubihsm2-native:\n      connector_url: http://127.0.0.1:12345\n",
    )
    .arg("init"));
    assert!(
        stderr.contains("YubiHSM 2")
            && stderr.contains("kms.lux.yubihsm2-native.password is required"),
        "{stderr}"
    );
    let stderr = fails(
        kms(
            d.path(),
            "kms:\n  lux:\n    provider: yubihsm2-native\n    yubihsm2-native:\n      password: ${HANZO_TEST_SURELY_UNSET_YUBI}\n",
        )
        .env_remove("HANZO_TEST_SURELY_UNSET_YUBI")
        .arg("init"),
    );
    assert!(
        stderr.contains("kms.lux.yubihsm2-native.password")
            && stderr.contains("HANZO_TEST_SURELY_UNSET_YUBI"),
        "{stderr}"
    );
    let stderr = fails(
        kms(
            d.path(),
            "kms:\n  lux:\n    provider: yubihsm2-native\n    yubihsm2-native:\n      password: x\n      pin: y\n",
        )
        .arg("init"),
    );
    assert!(stderr.contains("kms.lux.yubihsm2-native.pin"), "{stderr}");
}
