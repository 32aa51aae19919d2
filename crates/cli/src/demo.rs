//! `hanzo-kms demo`: the spec's complete AI inference flow (keyspace, model weights, data keys,
//! then a PoAI attestation and the HMM settlement that pays for it), in a throwaway data
//! directory, through the same service (and pipeline) as every other command.

use std::process::ExitCode;

use hanzo_kms_core::eip712::{Address, B32, HMMSettlement, PoAIAttestation, U256, keccak256};
use hanzo_kms_core::{Config, Error, ErrorKind, Result};
use hanzo_kms_service::sign::{Paid, Verdict};
use hanzo_kms_service::{Kms, RequestCtx, Settings};

use crate::output::Out;

pub async fn run(out: &Out) -> Result<ExitCode> {
    let mut suffix = [0u8; 6];
    hanzo_kms_crypto::rng::fill(&mut suffix)?;
    let dir = std::env::temp_dir().join(format!("hanzo-kms-demo-{}", hex::encode(suffix)));
    let result = walk(&dir, out).await;
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|()| ExitCode::SUCCESS)
}

async fn walk(dir: &std::path::Path, out: &Out) -> Result<()> {
    let say = |s: String| {
        if !out.json {
            out.line(s);
        }
    };
    let mut steps = Vec::new();
    let settings = Settings {
        data_dir: dir.to_path_buf(),
        config: Config::from_yaml("", "defaults", std::iter::empty::<(&str, &str)>())?,
        master_key_env: None,
    };
    let (kms, _) = Kms::init(&settings).await?;
    say(format!(
        "1. init: a fresh data directory at {} (removed at the end)",
        dir.display()
    ));
    steps.push("init");

    let ctx = RequestCtx::local();
    let keys = kms.create_keyspace(&ctx, "acme", "gpt4", true).await?;
    say("2. CreateModelKeyspace(acme, gpt4):".into());
    for k in &keys {
        let extra = k
            .address()
            .map(|a| format!(", signer address {a}"))
            .unwrap_or_default();
        say(format!(
            "     {} ({}, origin {}{extra})",
            k.name, k.algorithm, k.origin
        ));
    }
    steps.push("keyspace");

    // EncryptModelWeights / DecryptModelWeights, through the pipeline: the model key wraps a
    // fresh data key per file, and the weights are encrypted here, in this process.
    let model = kms.parse_name("model:acme:gpt4")?;
    let weights: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (header, cipher) = kms.model_seal_header(&ctx, &model, b"", None).await?;
    let file = hanzo_kms_weights::encrypt_to_vec(&header, &cipher, &weights, 2)?;
    let (parsed, header_len) = hanzo_kms_core::weights::Header::parse(&file)?;
    let opener = kms.model_open_header(&ctx, &model, &parsed).await?;
    let mut back = vec![0u8; weights.len()];
    opener.open_body(&file[header_len..], &mut back, 2)?;
    if back != weights {
        return Err(Error::new(
            ErrorKind::Internal,
            "the decrypted weights differ",
        ));
    }
    say(format!(
        "3. EncryptModelWeights: 3 MB of weights -> {} bytes under model:acme:gpt4 v{} (a fresh data key,\n     wrapped by the model key; the weights never reach the provider); DecryptModelWeights restores them",
        file.len(),
        header.key_version
    ));
    steps.push("datakey");

    let data = kms.parse_name("data:acme:training-set")?;
    kms.create_key(&ctx, &data, None, None).await?;
    let ct = kms
        .encrypt(&ctx, &data, b"user record 42", b"tenant=acme")
        .await?;
    say(format!(
        "4. data encryption: 'user record 42' -> {}",
        ct.text
    ));
    kms.rotate_key(&ctx, &data).await?;
    let plain = kms.decrypt(&ctx, &data, &ct.text, b"tenant=acme").await?;
    say(format!(
        "5. rotated data:acme:training-set to version 2; the version-1 ciphertext still decrypts: '{}'",
        String::from_utf8_lossy(plain.expose())
    ));
    steps.push("rotate");

    let wrong = kms.decrypt(&ctx, &data, &ct.text, b"tenant=globex").await;
    say(format!(
        "6. the same ciphertext with another AAD: {}",
        wrong
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "accepted (BUG)".into())
    ));
    kms.set_enabled(&ctx, &data, None, false).await?;
    let disabled = kms.decrypt(&ctx, &data, &ct.text, b"tenant=acme").await;
    say(format!(
        "7. after `keys disable`: {}",
        disabled
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "accepted (BUG)".into())
    ));
    steps.push("refusals");

    // The spec's "complete AI inference flow" ends on chain: the inference is attested, the
    // attestation verified, and the compute paid for by a settlement that consumes it.
    let now = u64::try_from(hanzo_kms_service::now_secs()).unwrap_or(0);
    let poai = kms.parse_name("poai:acme:gpt4")?;
    let attestation = PoAIAttestation {
        model_id: "acme:gpt4".into(),
        input_hash: B32(keccak256(b"prompt: what is a key hierarchy?")),
        output_hash: B32(keccak256(b"completion: keys that wrap keys")),
        timestamp: now,
        compute_time_ms: 42,
        node_id: "demo-node-1".into(),
        nonce: None,
    };
    let signed = kms.sign_poai(&ctx, &poai, attestation, now).await?;
    say(format!(
        "8. SignPoAI: attestation of an inference on acme:gpt4, EIP-712 digest {}\n     signed by {} ({}): {}…",
        hex0x(&signed.digest.0),
        signed.signer,
        signed.algorithm,
        &hex0x(&signed.signature.0)[..18]
    ));
    let verdict = kms.verify_poai(&ctx, &signed, now).await?;
    say(format!("9. VerifyPoAI: {}", verdict_text(&verdict)));
    steps.push("poai");

    let hmm = kms.parse_name("hmm:acme:gpt4")?;
    let settlement = HMMSettlement {
        job_id: "demo-job-1".into(),
        provider: Address(address_bytes(0x11)),
        consumer: Address(address_bytes(0x22)),
        amount: U256::parse_decimal("1250000000000000").map_err(Error::invalid)?,
        attestation_digest: signed.digest,
        timestamp: now,
        expiry: 0,
        nonce: None,
    };
    let settled = kms
        .sign_hmm(
            &ctx,
            &hmm,
            settlement.clone(),
            Some(Paid::Attestation(&signed)),
            now,
        )
        .await?;
    let verdict = kms.verify_hmm(&ctx, &settled, Some(&signed), now).await?;
    say(format!(
        "10. SignHMMSettlement: job demo-job-1 pays 0.00125 ETH for that attestation, signed by {};\n     VerifyHMMSettlement: {}",
        settled.signer,
        verdict_text(&verdict)
    ));
    let again = kms
        .sign_hmm(
            &ctx,
            &hmm,
            settlement,
            Some(Paid::Attestation(&signed)),
            now,
        )
        .await;
    say(format!(
        "11. a second settlement of the same attestation: {}",
        again
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "accepted (BUG)".into())
    ));
    steps.push("hmm");

    let report = kms.audit_verify(&ctx).await?;
    say(format!(
        "12. audit: {} hash-chained records, chain {}",
        report.records,
        if report.is_ok() { "intact" } else { "BROKEN" }
    ));
    kms.close().await;
    if out.json {
        out.json(&serde_json::json!({"ok": report.is_ok(), "steps": steps, "audit_records": report.records}));
    }
    if !report.is_ok() {
        return Err(Error::new(
            ErrorKind::Corrupt,
            "the demo's audit chain did not verify",
        ));
    }
    Ok(())
}

fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

/// A recognisable example address: twenty times `byte`.
fn address_bytes(byte: u8) -> [u8; 20] {
    [byte; 20]
}

fn verdict_text(v: &Verdict) -> String {
    if v.valid {
        "valid".into()
    } else {
        format!("NOT valid ({})", v.reason.unwrap_or("no reason"))
    }
}
