//! `hanzo-kms model …` as a real process.

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

fn setup() -> tempfile::TempDir {
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
            "--no-signing-keys",
        ])
        .assert()
        .success();
    d
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A small safetensors file: (bytes, name → (start, end) absolute).
fn safetensors() -> (Vec<u8>, Vec<(String, usize, usize)>) {
    let specs = [("a.weight", 3000usize), ("b.bias", 10), ("c.weight", 9000)];
    let mut header = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    let mut data = Vec::new();
    let mut ranges = Vec::new();
    for (name, n) in specs {
        let start = data.len();
        data.extend((0..n * 4).map(|i| (i * 13 + n) as u8));
        header.push_str(&format!(
            ",\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{n}],\"data_offsets\":[{start},{}]}}",
            data.len()
        ));
        ranges.push((name.to_owned(), start, data.len()));
    }
    header.push('}');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    let base = file.len();
    file.extend_from_slice(&data);
    (
        file,
        ranges
            .into_iter()
            .map(|(n, s, e)| (n, s + base, e + base))
            .collect(),
    )
}

#[test]
fn round_trips_and_reports() {
    let d = setup();
    for size in [0usize, 1, 4095, 4096, 4097, 70_000] {
        let input = d.path().join(format!("w{size}.bin"));
        let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        std::fs::write(&input, &data).unwrap();
        let enc = d.path().join(format!("w{size}.enc"));
        let out = kms(d.path())
            .args([
                "--json",
                "model",
                "encrypt",
                "--model",
                "acme:gpt4",
                "--segment-size",
                "4KiB",
                "--in",
            ])
            .arg(&input)
            .arg("--out")
            .arg(&enc)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stderr.is_empty(), "no progress bar or noise when piped");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["plaintext_bytes"], size as u64);
        assert_eq!(v["version"], 1);
        assert!(v["peak_rss_bytes"].as_u64().unwrap() > 0);
        let dec = d.path().join(format!("w{size}.dec"));
        kms(d.path())
            .args(["model", "decrypt", "--model", "model:acme:gpt4", "--in"])
            .arg(&enc)
            .arg("--out")
            .arg(&dec)
            .assert()
            .success();
        assert_eq!(std::fs::read(&dec).unwrap(), data, "size {size}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dec).unwrap().permissions().mode() & 0o777,
            0o600,
            "plaintext output is owner-only"
        );
    }
    let inspect: Value = serde_json::from_slice(
        &kms(d.path())
            .args(["--json", "model", "inspect", "--in"])
            .arg(d.path().join("w70000.enc"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(inspect["key"], "model:acme:gpt4");
    assert_eq!(inspect["model_id"], "acme:gpt4");
    assert_eq!(inspect["segments"], 18);
    assert_eq!(inspect["plaintext_bytes"], 70_000);
    assert!(inspect.get("wrapped_dek").is_none());
}

#[test]
fn failed_decryption_leaves_no_output() {
    let d = setup();
    let input = d.path().join("w.bin");
    std::fs::write(&input, vec![7u8; 20_000]).unwrap();
    let enc = d.path().join("w.enc");
    kms(d.path())
        .args([
            "model",
            "encrypt",
            "--model",
            "acme:gpt4",
            "--segment-size",
            "4KiB",
            "--in",
        ])
        .arg(&input)
        .arg("--out")
        .arg(&enc)
        .assert()
        .success();
    let good = std::fs::read(&enc).unwrap();
    let out = d.path().join("out.bin");
    std::fs::write(&out, b"previous contents").unwrap();
    let before = entries(d.path());
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut flipped = good.clone();
    flipped[good.len() - 5000] ^= 0x10;
    cases.push(("bit flip in a late segment", flipped));
    let mut header_flip = good.clone();
    header_flip[40] ^= 1;
    cases.push(("bit flip in the header", header_flip));
    cases.push(("truncated", good[..good.len() - 100].to_vec()));
    cases.push(("extended", [good.clone(), vec![0; 3]].concat()));
    for (what, bytes) in cases {
        std::fs::write(&enc, &bytes).unwrap();
        let o = kms(d.path())
            .args(["model", "decrypt", "--model", "acme:gpt4", "--in"])
            .arg(&enc)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{what}");
        assert_eq!(
            String::from_utf8_lossy(&o.stderr).trim(),
            "error: authentication failed",
            "{what}"
        );
        assert_eq!(
            std::fs::read(&out).unwrap(),
            b"previous contents",
            "{what}: output was touched"
        );
        assert_eq!(
            entries(d.path()),
            before,
            "{what}: a temporary file was left behind"
        );
    }
    // Another model's key: same opaque answer.
    std::fs::write(&enc, &good).unwrap();
    kms(d.path())
        .args(["keys", "create", "model:acme:other"])
        .assert()
        .success();
    let o = kms(d.path())
        .args(["model", "decrypt", "--model", "acme:other", "--in"])
        .arg(&enc)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "error: authentication failed"
    );
    // Not our format at all.
    let o = kms(d.path())
        .args(["model", "decrypt", "--model", "acme:gpt4", "--in"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a Hanzo KMS model file"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"previous contents");
}

#[test]
fn rewrap_rewrites_only_the_header() {
    let d = setup();
    let input = d.path().join("w.bin");
    std::fs::write(&input, vec![3u8; 50_000]).unwrap();
    let enc = d.path().join("w.enc");
    kms(d.path())
        .args(["model", "encrypt", "--model", "acme:gpt4", "--in"])
        .arg(&input)
        .arg("--out")
        .arg(&enc)
        .assert()
        .success();
    let before = std::fs::read(&enc).unwrap();
    kms(d.path())
        .args(["keys", "rotate", "model:acme:gpt4"])
        .assert()
        .success();
    let v: Value = serde_json::from_slice(
        &kms(d.path())
            .args(["--json", "model", "rewrap", "--in"])
            .arg(&enc)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(v["rewrapped"], true);
    assert_eq!(v["version"], 2);
    let after = std::fs::read(&enc).unwrap();
    assert_eq!(before.len(), after.len());
    let body = 50_000 + 16; // one 1 MiB segment holds it all
    assert_eq!(
        before[before.len() - body..],
        after[after.len() - body..],
        "segments changed"
    );
    assert_ne!(before, after);
    let dec = d.path().join("w.dec");
    kms(d.path())
        .args(["model", "decrypt", "--model", "acme:gpt4", "--in"])
        .arg(&enc)
        .arg("--out")
        .arg(&dec)
        .assert()
        .success();
    assert_eq!(std::fs::read(&dec).unwrap(), vec![3u8; 50_000]);
}

#[test]
fn tensors_are_listed_and_extracted_alone() {
    let d = setup();
    let (st, ranges) = safetensors();
    let input = d.path().join("m.safetensors");
    std::fs::write(&input, &st).unwrap();
    let enc = d.path().join("m.enc");
    kms(d.path())
        .args([
            "model",
            "encrypt",
            "--model",
            "acme:gpt4",
            "--segment-size",
            "4KiB",
            "--in",
        ])
        .arg(&input)
        .arg("--out")
        .arg(&enc)
        .assert()
        .success();
    let v: Value = serde_json::from_slice(
        &kms(d.path())
            .args(["--json", "model", "tensors", "--model", "acme:gpt4", "--in"])
            .arg(&enc)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let names: Vec<&str> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.weight", "b.bias", "c.weight"]);
    assert_eq!(v["segments"], 12);
    assert_eq!(
        v["segments_decrypted"], 2,
        "listing reads the header segment, and the final one that authenticates the length"
    );
    assert_eq!(v["metadata"]["format"], "pt");
    for (name, start, end) in &ranges {
        let out = d.path().join(format!("{name}.bin"));
        kms(d.path())
            .args([
                "model",
                "decrypt",
                "--model",
                "acme:gpt4",
                "--tensor",
                name,
                "--in",
            ])
            .arg(&enc)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        assert_eq!(std::fs::read(&out).unwrap(), &st[*start..*end], "{name}");
    }
    let o = kms(d.path())
        .args([
            "model",
            "decrypt",
            "--model",
            "acme:gpt4",
            "--tensor",
            "nope",
            "--in",
        ])
        .arg(&enc)
        .arg("--out")
        .arg(d.path().join("x"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no tensor 'nope' (3 tensors"));
    assert!(!d.path().join("x").exists());
}

#[test]
fn output_where_o_direct_is_refused_falls_back() {
    // tmpfs refuses O_DIRECT; the writer must fall back to the page cache and lose nothing.
    let shm = Path::new("/dev/shm");
    assert!(
        shm.is_dir(),
        "this test needs /dev/shm (tmpfs), present on every Debian system"
    );
    let d = setup();
    let input = d.path().join("w.bin");
    let data: Vec<u8> = (0..3_000_001u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    let out_dir = tempfile::tempdir_in(shm).unwrap();
    let enc = out_dir.path().join("w.enc");
    let dec = out_dir.path().join("w.dec");
    kms(d.path())
        .args(["model", "encrypt", "--model", "acme:gpt4", "--in"])
        .arg(&input)
        .arg("--out")
        .arg(&enc)
        .assert()
        .success();
    kms(d.path())
        .args(["model", "decrypt", "--model", "acme:gpt4", "--in"])
        .arg(&enc)
        .arg("--out")
        .arg(&dec)
        .assert()
        .success();
    assert_eq!(std::fs::read(&dec).unwrap(), data);
}
