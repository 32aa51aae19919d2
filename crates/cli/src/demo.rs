//! `hanzo-kms demo`: the spec's flow over what this build can do, in a throwaway data directory,
//! through the same service (and pipeline) as every other command.

use std::process::ExitCode;

use hanzo_kms_core::{Config, Error, ErrorKind, Result};
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

    let report = kms.audit_verify(&ctx).await?;
    say(format!(
        "8. audit: {} hash-chained records, chain {}",
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
