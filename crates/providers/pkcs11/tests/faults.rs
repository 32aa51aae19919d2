//! Bad configuration and faults on a real SoftHSM2 token: wrong PIN, missing module, wrong
//! token, a key deleted behind our back, sessions exhausted under load, and inspection of what
//! we created by an outside tool (OpenSC's `pkcs11-tool`).

use std::process::Command;
use std::sync::Arc;

use hanzo_kms_core::config::ProviderKind;
use hanzo_kms_core::{Algorithm, ErrorKind, KeyName, KeyRef, KeySpec, Provider, Separator};
use hanzo_kms_crypto::verify::verify;
use hanzo_kms_pkcs11::{Pkcs11Provider, Pkcs11Settings};
use hanzo_kms_testkit::softhsm::Token;

fn token(test: &str) -> Token {
    let label = format!("{test}-{}", std::process::id());
    Token::create(&label[label.len().saturating_sub(32)..]).unwrap_or_else(|e| {
        panic!("SoftHSM2 is needed for this test (apt-get install softhsm2 opensc): {e}")
    })
}

fn open(section: &hanzo_kms_core::config::Pkcs11Config) -> hanzo_kms_core::Result<Pkcs11Provider> {
    let s = Pkcs11Settings::from_config(ProviderKind::Softhsm2, Some(section))?;
    Pkcs11Provider::open(&s, true)
}

fn name(s: &str) -> KeyName {
    KeyName::parse(s, Separator::default()).unwrap()
}

fn pkcs11_tool(t: &Token, args: &[&str]) -> std::process::Output {
    Command::new("pkcs11-tool")
        .arg("--module")
        .arg(&t.module)
        .args(["--token-label", &t.label, "--login", "--pin", &t.user_pin])
        .args(args)
        .output()
        .expect("pkcs11-tool (OpenSC) is needed for this test: apt-get install opensc")
}

#[test]
fn wrong_pin_is_refused_without_echoing_it() {
    let t = token("wrong-pin");
    let dir = tempfile::tempdir().unwrap();
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, "not-the-pin-4711\n").unwrap();
    let mut c = t.section();
    c.pin = None;
    c.pin_file = Some(pin_file.clone());
    let e = open(&c).unwrap_err();
    let msg = format!("{e} {e:?}");
    assert_eq!(e.kind(), ErrorKind::Config, "{msg}");
    assert!(msg.contains("incorrect"), "{msg}");
    assert!(
        msg.contains(&pin_file.display().to_string()),
        "names where the PIN came from: {msg}"
    );
    assert!(!msg.contains("4711"), "the PIN leaked: {msg}");
    // The right PIN from the same file works: the failed attempt did not lock the token.
    std::fs::write(&pin_file, format!("{}\n", t.user_pin)).unwrap();
    open(&c).unwrap();
}

#[test]
fn missing_module_and_wrong_token_are_clear_errors() {
    let t = token("bad-config");
    let mut c = t.section();
    c.module = Some("/nonexistent/libsofthsm2.so".into());
    let e = open(&c).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let msg = e.to_string();
    assert!(
        msg.contains("/nonexistent/libsofthsm2.so") && msg.contains("apt-get install softhsm2"),
        "{msg}"
    );
    assert!(msg.contains("kms.lux.softhsm2.module"), "{msg}");

    let mut c = t.section();
    c.token_label = Some("no-such-token".into());
    let e = open(&c).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let msg = e.to_string();
    assert!(
        msg.contains("'no-such-token'") && msg.contains(&format!("'{}'", t.label)),
        "{msg}"
    );

    let mut c = t.section();
    c.pin = None;
    let e = open(&c).unwrap_err();
    assert!(e.to_string().contains("no PIN"), "{e}");
}

#[test]
fn a_key_deleted_outside_us_gives_a_clear_error_naming_it() {
    let t = token("deleted");
    let p = open(&t.section()).unwrap();
    let n = name("poai:acme:victim");
    let g = p
        .generate(&KeySpec {
            name: &n,
            version: 1,
            algorithm: Algorithm::Secp256k1,
            label: "poai:acme:victim/v1",
        })
        .unwrap();
    let r = KeyRef {
        name: &n,
        version: 1,
        algorithm: Algorithm::Secp256k1,
        handle: &g.handle,
    };
    p.sign(&r, &[1u8; 32]).unwrap();
    // Another process deletes the private key.
    let out = pkcs11_tool(
        &t,
        &[
            "--delete-object",
            "--type",
            "privkey",
            "--label",
            "poai:acme:victim/v1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = p.sign(&r, &[1u8; 32]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("poai:acme:victim") && msg.contains("version 1"),
        "{msg}"
    );
    assert!(msg.contains("deleted outside hanzo-kms"), "{msg}");
}

#[test]
fn exhausted_sessions_make_requests_wait_not_fail() {
    let t = token("exhausted");
    let mut c = t.section();
    c.max_sessions = Some(2);
    let p = Arc::new(open(&c).unwrap());
    let n = name("poai:acme:busy");
    let g = p
        .generate(&KeySpec {
            name: &n,
            version: 1,
            algorithm: Algorithm::Secp256k1,
            label: "busy",
        })
        .unwrap();
    let public = g.public_key.unwrap().bytes;
    let handle = g.handle;
    let threads: Vec<_> = (0..16u8)
        .map(|i| {
            let (p, n, handle, public) = (p.clone(), n.clone(), handle.clone(), public.clone());
            std::thread::spawn(move || {
                for j in 0..10u8 {
                    let r = KeyRef {
                        name: &n,
                        version: 1,
                        algorithm: Algorithm::Secp256k1,
                        handle: &handle,
                    };
                    let digest = [i ^ j.wrapping_mul(31); 32];
                    let sig = p.sign(&r, &digest).expect("a request waits for a session");
                    assert!(verify(Algorithm::Secp256k1, &public, &digest, &sig.0));
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let stats = p.pool_stats();
    assert!(stats.high_water <= 2, "{stats:?}");
    assert!(stats.open <= 2, "{stats:?}");
    assert!(
        stats.waits > 0,
        "16 threads on 2 sessions must have waited: {stats:?}"
    );
}

#[test]
fn pkcs11_tool_sees_our_keys_with_their_labels_and_they_are_not_extractable() {
    let t = token("inspect");
    let p = open(&t.section()).unwrap();
    let made = [
        ("model:acme:gpt4", Algorithm::Aes256Gcm),
        ("poai:acme:gpt4", Algorithm::Secp256k1),
        ("data:acme:p256", Algorithm::P256),
        ("api:acme:ed", Algorithm::Ed25519),
    ];
    for (key, alg) in made {
        let n = name(key);
        let label = format!("{key}/v1");
        p.generate(&KeySpec {
            name: &n,
            version: 1,
            algorithm: alg,
            label: &label,
        })
        .unwrap();
    }
    let out = pkcs11_tool(&t, &["--list-objects"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    // Split the listing into objects: each starts with "... Object;".
    let objects: Vec<String> =
        listing
            .split_inclusive('\n')
            .fold(Vec::<String>::new(), |mut acc, line| {
                if line.contains("Object;") || acc.is_empty() {
                    acc.push(String::new());
                }
                acc.last_mut().unwrap().push_str(line);
                acc
            });
    for (key, _) in made {
        let label = format!("{key}/v1");
        let secret: Vec<&String> = objects
            .iter()
            .filter(|o| {
                o.lines()
                    .any(|l| l.trim() == format!("label:      {label}"))
                    && (o.starts_with("Private Key Object") || o.starts_with("Secret Key Object"))
            })
            .collect();
        assert_eq!(secret.len(), 1, "{label} in:\n{listing}");
        let access = secret[0]
            .lines()
            .find(|l| l.trim_start().starts_with("Access:"))
            .unwrap_or_else(|| panic!("no Access line for {label}:\n{}", secret[0]));
        assert!(
            access.contains("sensitive") && access.contains("never extractable"),
            "{label}: {access}"
        );
        // Least privilege: an AES key only encrypts and decrypts, a private key only signs.
        let usage = secret[0]
            .lines()
            .find(|l| l.trim_start().starts_with("Usage:"))
            .unwrap_or_else(|| panic!("no Usage line for {label}:\n{}", secret[0]));
        let want = if key.starts_with("model:") {
            "encrypt, decrypt"
        } else {
            "sign"
        };
        assert_eq!(
            usage.trim_start().trim_start_matches("Usage:").trim(),
            want,
            "{label}"
        );
    }
    // The root keys are there too, equally protected.
    assert!(
        listing.contains("hanzo-kms/root/kek") && listing.contains("hanzo-kms/root/mac"),
        "{listing}"
    );
    // Reading a secret value out is refused by the token.
    let read = pkcs11_tool(
        &t,
        &[
            "--read-object",
            "--type",
            "secrkey",
            "--label",
            "model:acme:gpt4/v1",
        ],
    );
    assert!(
        !read.status.success(),
        "the AES key was readable: {}",
        String::from_utf8_lossy(&read.stdout)
    );
}
