//! `hanzo-kms` as a real process on a SoftHSM2 token: init, keyspace, `keys show` origins, model
//! files and PoAI signatures, with the PIN coming from an environment variable and never printed.

use std::path::Path;

use assert_cmd::Command;
use hanzo_kms_testkit::softhsm::Token;
use serde_json::Value;

fn kms(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("hanzo-kms").unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("HANZO_KMS") {
            c.env_remove(k);
        }
    }
    c.arg("--data-dir").arg(dir.join("data"));
    c.arg("--config").arg(dir.join("kms.yaml"));
    c.env("TEST_HSM_PIN", PIN.with(|p| p.borrow().clone()));
    c
}

thread_local! {
    static PIN: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn run(dir: &Path, args: &[&str]) -> (Value, String) {
    let out = kms(dir).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{args:?}: {stderr}");
    let v = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (v, stdout + &stderr)
}

#[test]
fn init_keyspace_model_and_poai_on_softhsm2() {
    let label = format!("cli-{}", std::process::id());
    let t = Token::create(&label).unwrap_or_else(|e| {
        panic!("SoftHSM2 is needed for this test (apt-get install softhsm2 opensc): {e}")
    });
    PIN.with(|p| *p.borrow_mut() = t.user_pin.clone());
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("kms.yaml"),
        format!(
            "kms:\n  lux:\n    provider: softhsm2\n    softhsm2:\n      module: {}\n      token_label: {}\n      pin_env: TEST_HSM_PIN\n      max_sessions: 2\n",
            t.module.display(),
            t.label
        ),
    )
    .unwrap();
    let mut transcript = String::new();
    let (_, out) = run(d.path(), &["init"]);
    assert!(
        out.contains(&format!("softhsm2 token '{}'", t.label)),
        "{out}"
    );
    assert!(!d.path().join("data/master.key").exists());
    transcript += &out;
    let (_, out) = run(
        d.path(),
        &[
            "--json",
            "keyspace",
            "create",
            "--customer",
            "acme",
            "--model",
            "gpt4",
        ],
    );
    transcript += &out;
    let (show, out) = run(d.path(), &["--json", "keys", "show", "poai:acme:gpt4"]);
    transcript += &out;
    assert_eq!(show["origin"], "hsm-resident");
    assert_eq!(show["provider"], "softhsm2");
    let address = show["versions"][0]["address"].as_str().unwrap().to_owned();
    let (model, _) = run(d.path(), &["--json", "keys", "show", "model:acme:gpt4"]);
    assert_eq!(model["origin"], "hsm-resident");

    // A model file round trip: the token wraps the DEK, the weights stay in process.
    let input = d.path().join("w.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    let enc = d.path().join("w.enc");
    let dec = d.path().join("w.dec");
    let (s_in, s_enc, s_dec) = (
        input.to_str().unwrap(),
        enc.to_str().unwrap(),
        dec.to_str().unwrap(),
    );
    transcript += &run(
        d.path(),
        &[
            "model",
            "encrypt",
            "--model",
            "acme:gpt4",
            "--in",
            s_in,
            "--out",
            s_enc,
        ],
    )
    .1;
    transcript += &run(
        d.path(),
        &[
            "model",
            "decrypt",
            "--model",
            "acme:gpt4",
            "--in",
            s_enc,
            "--out",
            s_dec,
        ],
    )
    .1;
    assert_eq!(std::fs::read(&dec).unwrap(), data);

    // PoAI signed in the device; verify exits 0 and the signer is keys show's address.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let att = d.path().join("att.json");
    std::fs::write(&att, format!(
        "{{\"model_id\":\"acme:gpt4\",\"input_hash\":\"0x{:064x}\",\"output_hash\":\"0x{:064x}\",\"timestamp\":{now},\"compute_time_ms\":5,\"node_id\":\"n1\"}}",
        1, 2
    )).unwrap();
    let (signed, out) = run(
        d.path(),
        &[
            "poai",
            "sign",
            "--key",
            "poai:acme:gpt4",
            "--in",
            att.to_str().unwrap(),
        ],
    );
    transcript += &out;
    assert_eq!(signed["signer"], address.as_str());
    let signed_file = d.path().join("signed.json");
    std::fs::write(&signed_file, signed.to_string()).unwrap();
    let (verdict, _) = run(
        d.path(),
        &["poai", "verify", "--in", signed_file.to_str().unwrap()],
    );
    assert_eq!(verdict["valid"], true);
    let (audit, _) = run(d.path(), &["--json", "audit", "verify"]);
    assert_eq!(audit["valid"], true, "{audit}");

    // The PIN never appears in anything we printed, nor in the store.
    assert!(
        !transcript.contains(&t.user_pin),
        "the PIN leaked:\n{transcript}"
    );
    let db = std::fs::read(d.path().join("data/kms.db")).unwrap();
    assert!(
        !db.windows(t.user_pin.len())
            .any(|w| w == t.user_pin.as_bytes())
    );

    // A wrong PIN: a clear error that does not echo it.
    PIN.with(|p| *p.borrow_mut() = "wrong-pin-31337".into());
    let out = kms(d.path()).args(["keys", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a failed operation");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("incorrect") && err.contains("$TEST_HSM_PIN"),
        "{err}"
    );
    assert!(!err.contains("31337"), "{err}");
}
