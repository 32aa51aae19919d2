//! `hanzo-kms poai calldata` and `hmm calldata` on docs/signing.md's worked vectors, against call
//! data encoded by an independent ABI encoder (tests/data/calldata_vectors.txt, from ethers). The
//! contract tests (contracts/test/flow.test.mjs) send such call data to the contracts on an EVM.

use std::path::Path;

use assert_cmd::Command;
use serde_json::{Value, json};

const SIGNER: &str = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23";
const ATTESTATION_DIGEST: &str =
    "0x123c552b857a3d32544f8e4e21f494bcb0702fef4727ecf826533f384492bab0";
const ATTESTATION_SIGNATURE: &str = "0xd16b673080f02855c921a3c172e19ed080568b71b8de6b69aeac51260dc8caf46e72fdacaa1f2e5cb111c0fb364b1424a1fadf3cf2afc537398e4f10b9d56a291c";

fn vectors() -> std::collections::HashMap<String, String> {
    let text = include_str!("data/calldata_vectors.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

fn h(c: char) -> String {
    format!("0x{}", c.to_string().repeat(64))
}

fn attestation() -> Value {
    json!({"model_id": "acme:gpt4", "input_hash": h('1'), "output_hash": h('2'), "timestamp": 1795000000u64,
           "compute_time_ms": 1500, "node_id": "node-1", "nonce": h('3')})
}

fn signed_attestation() -> Value {
    json!({"attestation": attestation(), "digest": ATTESTATION_DIGEST, "signature": ATTESTATION_SIGNATURE,
           "signer": SIGNER, "algorithm": "secp256k1", "key": "poai:acme:gpt4", "version": 1})
}

fn signed_settlement() -> Value {
    json!({"settlement": {"job_id": "job-42", "provider": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
             "consumer": "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359", "amount": "1000000000000000000",
             "attestation_digest": ATTESTATION_DIGEST, "timestamp": 1795000100u64, "expiry": 1795086500u64, "nonce": h('4')},
           "digest": "0xe9f2e72fa34c149ffa54b97e2ec2d2cc96904f2f3d5eb0635e1b99f3f875a8a7",
           "signature": "0x17c0ac8c587baef17f35a4bcf0cccf05a4b3acf83826443f0cdcd43c5b7ace9c4ff863bf81fb0ce9b8d0288d8560a488af5c76b77251a7fd618cb481f94a03091b",
           "signer": SIGNER, "algorithm": "secp256k1", "key": "hmm:acme:gpt4", "version": 1})
}

fn batch_item() -> Value {
    json!({"batch": {"root": "0x3e5a12f7fc377cb59ab73a07b02ac8491eab26231e64e27fb42a40b97ea64911", "count": 2, "timestamp": 1795000200u64},
           "batch_digest": "0xd60041b47fe08583a283d42e79a03d64893784527ed61740ae6463d7409c160c",
           "signature": "0x7cbd9daddd50cdb31fc03f392e94b940c3641d5b2d5b2c407d8a3a7c7a4eccb5080cc2f2bd9282d61e4b0071cf1cbe6d9239d65569a9e70957a245e646fd60c51c",
           "signer": SIGNER, "algorithm": "secp256k1", "key": "poai:acme:gpt4", "version": 1,
           "attestation": attestation(), "digest": ATTESTATION_DIGEST, "index": 0,
           "proof": [{"hash": "0x54a93beb5bae68580261d066d0ae963a726a9b2ed948dbcd17f29005516a1da4", "left": false}]})
}

/// The CLI with a data directory that does not exist: these commands must not need one.
fn kms(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("hanzo-kms").unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("HANZO_KMS") {
            c.env_remove(k);
        }
    }
    c.arg("--data-dir").arg(dir.join("no-such-data-dir"));
    c
}

fn write(dir: &Path, name: &str, v: &Value) -> String {
    let p = dir.join(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p.display().to_string()
}

fn stdout(dir: &Path, args: &[&str]) -> String {
    let out = kms(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn calldata_matches_an_independent_encoder() {
    let v = vectors();
    let d = tempfile::tempdir().unwrap();
    let att = write(d.path(), "att.json", &signed_attestation());
    let set = write(d.path(), "set.json", &signed_settlement());
    let item = write(d.path(), "item.json", &batch_item());
    assert_eq!(
        stdout(d.path(), &["poai", "calldata", "--in", &att]),
        v["record"]
    );
    assert_eq!(
        stdout(d.path(), &["poai", "calldata", "--verify", "--in", &item]),
        v["verifyitem"]
    );
    assert_eq!(
        stdout(
            d.path(),
            &["hmm", "calldata", "--in", &set, "--attestation", &att]
        ),
        v["settlewith"]
    );
    assert_eq!(
        stdout(d.path(), &["hmm", "calldata", "--in", &set]),
        v["settle"]
    );
    let j: Value = serde_json::from_str(&stdout(
        d.path(),
        &["--json", "hmm", "calldata", "--in", &set],
    ))
    .unwrap();
    assert_eq!(
        j["function"],
        "settle((string,address,address,uint256,bytes32,uint64,uint64,bytes32),bytes)"
    );
    assert_eq!(j["calldata"], v["settle"].as_str());
    assert!(!d.path().join("no-such-data-dir").exists());
}

#[test]
fn calldata_refusals() {
    let d = tempfile::tempdir().unwrap();
    let mut pq = signed_attestation();
    pq["algorithm"] = json!("ml-dsa-65");
    let pq = write(d.path(), "pq.json", &pq);
    let out = kms(d.path())
        .args(["poai", "calldata", "--in", &pq])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be verified on chain"), "{err}");
    assert!(out.stdout.is_empty());

    // An attestation that is not the one the settlement pays for.
    let mut other = signed_attestation();
    other["digest"] = json!(h('9'));
    let other = write(d.path(), "other.json", &other);
    let set = write(d.path(), "set.json", &signed_settlement());
    let out = kms(d.path())
        .args(["hmm", "calldata", "--in", &set, "--attestation", &other])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("attestation_digest"));

    // Not a signed object at all.
    let junk = write(d.path(), "junk.json", &json!({"hello": 1}));
    let out = kms(d.path())
        .args(["--json", "poai", "calldata", "--in", &junk])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("neither a `poai sign` output nor a `poai sign-batch` line")
    );
    // --attestation and --item together are a usage error.
    let out = kms(d.path())
        .args([
            "hmm",
            "calldata",
            "--in",
            &set,
            "--attestation",
            &other,
            "--item",
            &other,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
