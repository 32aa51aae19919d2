//! `hanzo-kms backup create|restore` as a real process: round trips through a destroyed data
//! directory (passphrase and Shamir), migration software → SoftHSM2 → software, and every
//! refusal (wrong passphrase, too few or foreign shares, a tampered bundle, a newer format, a
//! non-empty store, conflicts, keys that cannot leave their HSM), each leaving nothing written.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use hanzo_kms_testkit::softhsm::Token;
use serde_json::Value;

const PASSPHRASE: &str = "correct horse battery staple";

/// A data directory with an optional config file.
struct Dir {
    data: PathBuf,
    config: Option<PathBuf>,
    pin: Option<String>,
}

impl Dir {
    fn software(root: &Path, name: &str) -> Self {
        Self {
            data: root.join(name),
            config: None,
            pin: None,
        }
    }

    fn softhsm(root: &Path, name: &str, t: &Token, exportable: bool) -> Self {
        let config = root.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "kms:\n  lux:\n    provider: softhsm2\n    softhsm2:\n      module: {}\n      token_label: {}\n      pin_env: TEST_HSM_PIN\n      max_sessions: 2\n      exportable: {exportable}\n",
                t.module.display(),
                t.label
            ),
        )
        .unwrap();
        Self {
            data: root.join(name),
            config: Some(config),
            pin: Some(t.user_pin.clone()),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("hanzo-kms").unwrap();
        for (k, _) in std::env::vars() {
            if k.starts_with("HANZO_KMS") {
                c.env_remove(k);
            }
        }
        c.arg("--data-dir").arg(&self.data);
        if let Some(cfg) = &self.config {
            c.arg("--config").arg(cfg);
        }
        if let Some(pin) = &self.pin {
            c.env("TEST_HSM_PIN", pin);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Run, require success, parse `--json` output.
    fn ok(&self, args: &[&str]) -> Value {
        let out = self.cmd().arg("--json").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Keys of three algorithms, a rotation, a model file and a PoAI signature.
struct Made {
    weights: Vec<u8>,
    model_file: PathBuf,
    signed: PathBuf,
    addresses: (String, String),
}

fn populate(d: &Dir, root: &Path) -> Made {
    d.ok(&[
        "keyspace",
        "create",
        "--customer",
        "acme",
        "--model",
        "gpt4",
    ]);
    d.ok(&["keys", "create", "api:acme:ed", "--algorithm", "ed25519"]);
    // A file under version 1 of the model key, then a rotation: both versions must survive.
    let weights: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let plain = root.join("weights.bin");
    std::fs::write(&plain, &weights).unwrap();
    let model_file = root.join("weights.hkms");
    d.ok(&[
        "model",
        "encrypt",
        "--model",
        "acme:gpt4",
        "--in",
        s(&plain),
        "--out",
        s(&model_file),
    ]);
    d.ok(&["keys", "rotate", "model:acme:gpt4"]);
    let att = root.join("att.json");
    std::fs::write(
        &att,
        format!(
            r#"{{"model_id":"acme:gpt4","input_hash":"0x{}","output_hash":"0x{}","timestamp":{},"compute_time_ms":5,"node_id":"n1"}}"#,
            "ab".repeat(32),
            "cd".repeat(32),
            now()
        ),
    )
    .unwrap();
    let signed = d.ok(&["poai", "sign", "--key", "poai:acme:gpt4", "--in", s(&att)]);
    let signed_path = root.join("signed.json");
    std::fs::write(&signed_path, signed.to_string()).unwrap();
    Made {
        weights,
        model_file,
        signed: signed_path,
        addresses: addresses(d),
    }
}

fn addresses(d: &Dir) -> (String, String) {
    let a = |k: &str| {
        d.ok(&["keys", "show", k])["versions"][0]["address"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    (a("poai:acme:gpt4"), a("hmm:acme:gpt4"))
}

/// The old model file still decrypts, the old signature still verifies, and the addresses are
/// the same.
fn check_restored(d: &Dir, made: &Made, root: &Path, tag: &str) {
    let out = root.join(format!("decrypted-{tag}.bin"));
    d.ok(&[
        "model",
        "decrypt",
        "--model",
        "acme:gpt4",
        "--in",
        s(&made.model_file),
        "--out",
        s(&out),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), made.weights, "{tag}");
    let v = d.ok(&["poai", "verify", "--in", s(&made.signed)]);
    assert_eq!(v["valid"], true, "{tag}: {v}");
    assert_eq!(addresses(d), made.addresses, "{tag}");
    let shown = d.ok(&["keys", "show", "model:acme:gpt4"]);
    assert_eq!(shown["versions"].as_array().map(Vec::len), Some(2), "{tag}");
    let audit = d.ok(&["audit", "verify"]);
    assert_eq!(audit["valid"], true, "{tag}: {audit}");
}

#[test]
fn passphrase_round_trip_through_a_destroyed_data_directory_and_refusals() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let a = Dir::software(r, "a");
    a.ok(&["init"]);
    let made = populate(&a, r);
    let pass = r.join("pass");
    std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    let bundle = r.join("kms.bundle");
    let created = a.ok(&[
        "backup",
        "create",
        "--out",
        s(&bundle),
        "--passphrase-file",
        s(&pass),
    ]);
    assert_eq!(created["keys"], 4, "{created}");
    assert_eq!(created["versions"], 5, "{created}");
    // The bundle holds no key bytes in the clear: its header is JSON, the rest is ciphertext.
    let bytes = std::fs::read(&bundle).unwrap();
    let header: Value =
        serde_json::from_slice(&bytes[..bytes.iter().position(|&b| b == b'\n').unwrap()]).unwrap();
    assert_eq!(header["format"], "hanzo-kms-backup");
    assert_eq!(header["protection"]["kdf"], "argon2id");
    assert!(!String::from_utf8_lossy(&bytes).contains("model:acme"));
    // An existing --out is never overwritten.
    let again = a.run(&[
        "backup",
        "create",
        "--out",
        s(&bundle),
        "--passphrase-file",
        s(&pass),
    ]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));
    assert_eq!(std::fs::read(&bundle).unwrap(), bytes);

    std::fs::remove_dir_all(&a.data).unwrap();
    let b = Dir::software(r, "b");

    // A wrong passphrase: a clear error, and the data directory is not even created.
    let wrong = r.join("wrong");
    std::fs::write(&wrong, "incorrect horse\n").unwrap();
    let o = b.run(&[
        "backup",
        "restore",
        "--in",
        s(&bundle),
        "--passphrase-file",
        s(&wrong),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("wrong passphrase or shares"),
        "{}",
        stderr(&o)
    );
    assert!(!b.data.exists());

    // Tampered anywhere (a payload byte, a header byte): refused as a whole, nothing written.
    for (what, at) in [("payload", bytes.len() - 20), ("header", 30)] {
        let mut t = bytes.clone();
        t[at] ^= 0x01;
        let tampered = r.join(format!("tampered-{what}.bundle"));
        std::fs::write(&tampered, &t).unwrap();
        let o = b.run(&[
            "backup",
            "restore",
            "--in",
            s(&tampered),
            "--passphrase-file",
            s(&pass),
        ]);
        assert_eq!(o.status.code(), Some(1), "{what}");
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
        assert!(!b.data.exists(), "{what}");
    }

    // A newer format version is refused, naming both versions.
    let line_end = bytes.iter().position(|&b| b == b'\n').unwrap();
    let newer_header = String::from_utf8(bytes[..line_end].to_vec())
        .unwrap()
        .replace("\"version\":1", "\"version\":2");
    let mut newer = newer_header.into_bytes();
    newer.extend_from_slice(&bytes[line_end..]);
    let newer_path = r.join("newer.bundle");
    std::fs::write(&newer_path, &newer).unwrap();
    let o = b.run(&[
        "backup",
        "restore",
        "--in",
        s(&newer_path),
        "--passphrase-file",
        s(&pass),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("version 2") && e.contains("version 1"), "{e}");
    assert!(!b.data.exists());

    // The right passphrase (from the environment this time) into a fresh directory.
    let restored = b
        .cmd()
        .env("HANZO_KMS_BACKUP_PASSPHRASE", PASSPHRASE)
        .args(["--json", "backup", "restore", "--in", s(&bundle)])
        .output()
        .unwrap();
    assert!(restored.status.success(), "{}", stderr(&restored));
    let report: Value = serde_json::from_slice(&restored.stdout).unwrap();
    assert_eq!(report["restored"].as_array().map(Vec::len), Some(4));
    check_restored(&b, &made, r, "passphrase");

    // Restoring twice changes nothing.
    let twice = b.ok(&[
        "backup",
        "restore",
        "--in",
        s(&bundle),
        "--passphrase-file",
        s(&pass),
    ]);
    assert_eq!(twice["restored"].as_array().map(Vec::len), Some(0));
    assert_eq!(twice["already_present"].as_array().map(Vec::len), Some(4));
    check_restored(&b, &made, r, "twice");

    // A store with other keys: refused, naming them, unless --merge.
    let c = Dir::software(r, "c");
    c.ok(&["init"]);
    c.ok(&["keys", "create", "data:other:x"]);
    let o = c.run(&[
        "backup",
        "restore",
        "--in",
        s(&bundle),
        "--passphrase-file",
        s(&pass),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("data:other:x") && stderr(&o).contains("--merge"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        c.ok(&["keys", "list"])["keys"].as_array().map(Vec::len),
        Some(1),
        "nothing was restored"
    );
    let merged = c.ok(&[
        "backup",
        "restore",
        "--in",
        s(&bundle),
        "--passphrase-file",
        s(&pass),
        "--merge",
    ]);
    assert_eq!(merged["restored"].as_array().map(Vec::len), Some(4));
    check_restored(&c, &made, r, "merge");

    // A key of the same name with other contents is a conflict: listed, nothing restored.
    let d = Dir::software(r, "d");
    d.ok(&["init"]);
    d.ok(&["keys", "create", "api:acme:ed", "--algorithm", "ed25519"]);
    let o = d.run(&[
        "backup",
        "restore",
        "--in",
        s(&bundle),
        "--passphrase-file",
        s(&pass),
        "--merge",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("api:acme:ed") && stderr(&o).contains("nothing was restored"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        d.ok(&["keys", "list"])["keys"].as_array().map(Vec::len),
        Some(1)
    );
}

#[test]
fn shamir_shares_restore_only_at_the_threshold() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let a = Dir::software(r, "a");
    a.ok(&["init"]);
    let made = populate(&a, r);
    let bundle = r.join("split.bundle");
    let created = a.ok(&[
        "backup",
        "create",
        "--out",
        s(&bundle),
        "--shares",
        "5",
        "--threshold",
        "3",
    ]);
    let shares: Vec<String> = created["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(shares.len(), 5);
    for (i, f) in shares.iter().enumerate() {
        assert_eq!(f, &format!("{}.share-{}", bundle.display(), i + 1));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // Another bundle's shares, to mix in.
    let other = r.join("other.bundle");
    a.ok(&[
        "backup",
        "create",
        "--out",
        s(&other),
        "--shares",
        "3",
        "--threshold",
        "2",
    ]);
    std::fs::remove_dir_all(&a.data).unwrap();
    let b = Dir::software(r, "b");
    let restore = |files: &[&str]| {
        let mut args = vec!["backup", "restore", "--in", s(&bundle)];
        for f in files {
            args.push("--share");
            args.push(f);
        }
        b.run(&args)
    };
    // Two shares (or one given twice) are below the threshold: nothing is restored or created.
    for set in [
        vec![shares[0].as_str(), shares[3].as_str()],
        vec![shares[0].as_str(), shares[0].as_str(), shares[1].as_str()],
    ] {
        let o = restore(&set);
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("needs 3") && stderr(&o).contains("nothing was restored"),
            "{}",
            stderr(&o)
        );
        assert!(!b.data.exists());
    }
    // A share of another bundle is named as such.
    let foreign = format!("{}.share-1", other.display());
    let o = restore(&[&shares[0], &shares[1], &foreign]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not of this bundle"), "{}", stderr(&o));
    assert!(!b.data.exists());
    // A passphrase for a split bundle says what it needs.
    let o = b
        .cmd()
        .env("HANZO_KMS_BACKUP_PASSPHRASE", PASSPHRASE)
        .args(["backup", "restore", "--in", s(&bundle)])
        .output()
        .unwrap();
    assert!(stderr(&o).contains("--share"), "{}", stderr(&o));
    // Any three shares restore.
    let o = restore(&[&shares[4], &shares[1], &shares[2]]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_restored(&b, &made, r, "shamir");
}

#[test]
fn migration_software_to_softhsm2_and_back_keeps_every_file_and_signature() {
    let label = format!("bk-{}", std::process::id());
    let t = Token::create(&label).unwrap_or_else(|e| {
        panic!("SoftHSM2 is needed for this test (apt-get install softhsm2 opensc): {e}")
    });
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let pass = r.join("pass");
    std::fs::write(&pass, PASSPHRASE).unwrap();
    let sw = Dir::software(r, "sw");
    sw.ok(&["init"]);
    let made = populate(&sw, r);
    let to_hsm = r.join("to-hsm.bundle");
    sw.ok(&[
        "backup",
        "create",
        "--out",
        s(&to_hsm),
        "--passphrase-file",
        s(&pass),
    ]);

    // Into SoftHSM2: AES keys become token objects, signing keys hsm-wrapped under its KEK.
    let hsm = Dir::softhsm(r, "hsm", &t, true);
    hsm.ok(&["init"]);
    hsm.ok(&[
        "backup",
        "restore",
        "--in",
        s(&to_hsm),
        "--passphrase-file",
        s(&pass),
    ]);
    check_restored(&hsm, &made, r, "softhsm2");
    let model = hsm.ok(&["keys", "show", "model:acme:gpt4"]);
    assert_eq!(model["origin"], "hsm-resident", "{model}");
    assert_eq!(model["provider"], "softhsm2", "{model}");
    let poai = hsm.ok(&["keys", "show", "poai:acme:gpt4"]);
    assert_eq!(poai["origin"], "hsm-wrapped", "{poai}");

    // And back out to software.
    let back = r.join("back.bundle");
    hsm.ok(&[
        "backup",
        "create",
        "--out",
        s(&back),
        "--passphrase-file",
        s(&pass),
    ]);
    let sw2 = Dir::software(r, "sw2");
    sw2.ok(&[
        "backup",
        "restore",
        "--in",
        s(&back),
        "--passphrase-file",
        s(&pass),
    ]);
    check_restored(&sw2, &made, r, "back to software");
    assert_eq!(
        sw2.ok(&["keys", "show", "model:acme:gpt4"])["origin"],
        "software"
    );

    // A token whose AES keys are not exportable: the backup names the key and writes nothing;
    // --skip-unexportable backs the rest up and lists what it left out.
    let t2 = Token::create(&format!("bk2-{}", std::process::id())).unwrap();
    let locked = Dir::softhsm(r, "locked", &t2, false);
    locked.ok(&["init"]);
    locked.ok(&[
        "keyspace",
        "create",
        "--customer",
        "acme",
        "--model",
        "gpt4",
    ]);
    let refused = r.join("refused.bundle");
    let o = locked.run(&[
        "backup",
        "create",
        "--out",
        s(&refused),
        "--passphrase-file",
        s(&pass),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("model:acme:gpt4") && e.contains("not extractable"),
        "{e}"
    );
    assert!(!refused.exists());
    let partial = locked.ok(&[
        "backup",
        "create",
        "--out",
        s(&refused),
        "--passphrase-file",
        s(&pass),
        "--skip-unexportable",
    ]);
    let skipped = partial["skipped"].as_array().unwrap();
    assert!(
        skipped
            .iter()
            .any(|v| v.as_str().unwrap().contains("model:acme:gpt4")),
        "{partial}"
    );
    // Its signing keys were generated inside the token too (hsm-resident): all three stay out.
    assert_eq!(skipped.len(), 3, "{partial}");
    assert_eq!(partial["keys"], 0, "{partial}");
}

#[test]
fn keys_migrate_moves_the_store_to_softhsm2_and_back_in_place() {
    let t = Token::create(&format!("mig-{}", std::process::id())).unwrap_or_else(|e| {
        panic!("SoftHSM2 is needed for this test (apt-get install softhsm2 opensc): {e}")
    });
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let mut d = Dir::softhsm(r, "d", &t, true);
    let config = d.config.clone().unwrap();
    let with_provider = |p: &str| {
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("provider:") {
                    format!("    provider: {p}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&config, text + "\n").unwrap();
    };
    with_provider("software");
    d.ok(&["init"]);
    let made = populate(&d, r);
    d.ok(&["tokens", "create", "--tenant", "acme", "--role", "sign"]);

    // Active tokens cannot move: refused, and nothing changed.
    let o = d.run(&["keys", "migrate", "--to", "softhsm2"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--revoke-tokens"), "{}", stderr(&o));
    assert_eq!(
        d.ok(&["keys", "show", "model:acme:gpt4"])["provider"],
        "software"
    );

    let report = d.ok(&["keys", "migrate", "--to", "softhsm2", "--revoke-tokens"]);
    assert_eq!(report["keys"], 4, "{report}");
    assert_eq!(report["versions"], 5, "{report}");
    assert_eq!(report["revoked_tokens"], 1, "{report}");
    // The store now belongs to the token: the old config is refused, naming both.
    let o = d.run(&["keys", "list"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("softhsm2"), "{}", stderr(&o));
    with_provider("softhsm2");
    check_restored(&d, &made, r, "migrated to softhsm2");
    assert_eq!(
        d.ok(&["keys", "show", "model:acme:gpt4"])["origin"],
        "hsm-resident"
    );
    let tokens = d.ok(&["tokens", "list"]);
    assert!(
        tokens.to_string().contains("revoked"),
        "the token was revoked: {tokens}"
    );

    // And back to software, under the data directory's master key.
    d.ok(&["keys", "migrate", "--to", "software"]);
    with_provider("software");
    d.pin = None;
    check_restored(&d, &made, r, "migrated back to software");
    assert_eq!(
        d.ok(&["keys", "show", "model:acme:gpt4"])["origin"],
        "software"
    );
}
