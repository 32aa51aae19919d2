//! HIP-005's "complete AI inference flow" against a running `hanzo-kms serve`.
//!
//! ```text
//! hanzo-kms serve &                                   # prints where admin.token is
//! HANZO_KMS_TOKEN=$(cat hanzo-kms-data/admin.token) \
//!     cargo run -p hanzo-kms-client --example inference_flow
//! ```
//!
//! Environment: `HANZO_KMS_URL` (default `http://127.0.0.1:8201`, gRPC; set
//! `HANZO_KMS_PROTOCOL=rest` with `http://127.0.0.1:8200` for REST), `HANZO_KMS_TOKEN` or
//! `HANZO_KMS_TOKEN_FILE`, and `HANZO_KMS_CUSTOMER` / `HANZO_KMS_MODEL` (default acme / gpt4).
//! Prints the settlement to submit on chain as JSON on stdout; progress goes to stderr.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use hanzo_kms_client::{Client, Protocol};
use hanzo_kms_core::eip712::{Address, B32, HMMSettlement, PoAIAttestation, U256, keccak256};
use hanzo_kms_core::{ErrorKind, Result};

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inference_flow: {e}");
            ExitCode::FAILURE
        }
    }
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn token() -> Result<String> {
    if let Ok(t) = std::env::var("HANZO_KMS_TOKEN") {
        return Ok(t);
    }
    let path = std::env::var("HANZO_KMS_TOKEN_FILE").map_err(|_| {
        hanzo_kms_core::Error::invalid("set HANZO_KMS_TOKEN or HANZO_KMS_TOKEN_FILE")
    })?;
    std::fs::read_to_string(&path).map_err(|e| {
        hanzo_kms_core::Error::new(ErrorKind::Io, format!("reading {path}")).with_source(e)
    })
}

async fn run() -> Result<()> {
    let protocol = match env("HANZO_KMS_PROTOCOL", "grpc").as_str() {
        "rest" => Protocol::Rest,
        _ => Protocol::Grpc,
    };
    let kms = Client::builder(&env("HANZO_KMS_URL", "http://127.0.0.1:8201"), &token()?)
        .protocol(protocol)
        .connect()
        .await?;
    let customer = env("HANZO_KMS_CUSTOMER", "acme");
    let model = env("HANZO_KMS_MODEL", "gpt4");
    let model_id = format!("{customer}:{model}");

    // 0. The model's keyspace (once per model): its encryption key and signing keys.
    match kms.create_model_keyspace(&customer, &model).await {
        Ok(keys) => eprintln!("created keyspace: {} keys", keys.len()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => eprintln!("keyspace exists"),
        Err(e) => return Err(e),
    }
    // The publisher encrypts the weights locally; only the data key's wrap touches the KMS.
    let weights: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let encrypted = kms
        .encrypt_model_weights(&model_id, &weights, br#"{"format":"demo"}"#)
        .await?;
    eprintln!(
        "encrypted {} bytes of weights into {} bytes",
        weights.len(),
        encrypted.len()
    );

    // 1. Load the encrypted model weights.
    let loaded = kms.decrypt_model_weights(&model_id, &encrypted).await?;
    if loaded.as_slice() != weights.as_slice() {
        return Err(hanzo_kms_core::Error::internal(
            "the decrypted weights differ from the originals",
        ));
    }
    eprintln!("1. decrypted the weights ({} bytes)", loaded.len());

    // 2. Run inference (here: a hash stands in for the model).
    let input = b"What is the capital of France?";
    let output = keccak256(&[loaded.as_slice(), input].concat());
    eprintln!("2. ran inference (a hash stands in for the model)");

    // 3. A PoAI attestation, signed by the KMS.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let signed = kms
        .sign_poai(
            &format!("poai:{model_id}"),
            PoAIAttestation {
                model_id: model_id.clone(),
                input_hash: B32(keccak256(input)),
                output_hash: B32(output),
                timestamp: now,
                compute_time_ms: 42,
                node_id: "node-1".into(),
                nonce: None,
            },
        )
        .await?;
    let verdict = kms.verify_poai(&signed).await?;
    eprintln!(
        "3. attestation signed by {} (verifies: {})",
        signed.signer, verdict.valid
    );

    // 4. The HMM settlement for that attestation, signed by the KMS (once per attestation).
    let settlement = kms
        .sign_hmm_settlement(
            &format!("hmm:{model_id}"),
            HMMSettlement {
                job_id: format!("job-{now}"),
                provider: Address::parse("0x1111111111111111111111111111111111111111")
                    .map_err(hanzo_kms_core::Error::invalid)?,
                consumer: Address::parse("0x2222222222222222222222222222222222222222")
                    .map_err(hanzo_kms_core::Error::invalid)?,
                amount: U256::parse_decimal("1500000000000000")
                    .map_err(hanzo_kms_core::Error::invalid)?,
                attestation_digest: signed.digest,
                timestamp: now,
                expiry: 0,
                nonce: None,
            },
            &signed,
        )
        .await?;
    let verdict = kms
        .verify_hmm_settlement(&settlement, Some(&signed))
        .await?;
    eprintln!(
        "4. settlement signed by {} (verifies: {})",
        settlement.signer, verdict.valid
    );

    // 5. Submit on chain: the EIP-712 digest and the 65-byte signature are what a contract checks.
    println!(
        "{}",
        serde_json::to_string_pretty(&settlement)
            .map_err(|e| hanzo_kms_core::Error::internal(e.to_string()))?
    );
    Ok(())
}
