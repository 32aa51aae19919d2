//! `hanzo-kms poai …` and `hanzo-kms hmm …`.

use std::path::Path;
use std::process::ExitCode;

use hanzo_kms_core::eip712::{HMMSettlement, PoAIAttestation, from_json};
use hanzo_kms_core::{Error, ErrorKind, Result};
use hanzo_kms_service::sign::{BatchItem, SignedAttestation, SignedSettlement, Verdict};
use hanzo_kms_service::{Kms, RequestCtx};
use serde::Serialize;

use crate::args::{HmmCommand, PoaiCommand};
use crate::output::Out;

fn now() -> u64 {
    hanzo_kms_service::now_secs().max(0) as u64
}

fn read(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| io(path, e))?;
    if meta.len() > 64 << 20 {
        return Err(Error::invalid(format!(
            "{} is larger than 64 MiB",
            path.display()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| io(path, e))
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("reading {}", path.display())).with_source(e)
}

fn print<T: Serialize>(out: &Out, v: &T) {
    out.json(&serde_json::to_value(v).unwrap_or_default());
}

fn verdict(out: &Out, v: &Verdict) -> ExitCode {
    print(out, v);
    if v.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub async fn poai(kms: &Kms, cmd: &PoaiCommand, out: &Out) -> Result<ExitCode> {
    let ctx = RequestCtx::local();
    match cmd {
        PoaiCommand::Sign { key, input } => {
            let key = kms.parse_name(key)?;
            let att: PoAIAttestation = from_json("attestation", &read(input)?)?;
            let signed = kms.sign_poai(&ctx, &key, att, now()).await?;
            print(out, &signed);
        }
        PoaiCommand::Verify { input } => {
            let signed: SignedAttestation = from_json("signed attestation", &read(input)?)?;
            return Ok(verdict(out, &kms.verify_poai(&ctx, &signed, now()).await?));
        }
        PoaiCommand::SignBatch { key, input } => {
            let key = kms.parse_name(key)?;
            let text = read(input)?;
            let mut atts = Vec::new();
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                atts.push(from_json::<PoAIAttestation>(
                    &format!("line {}", i + 1),
                    line,
                )?);
            }
            for item in kms.sign_poai_batch(&ctx, &key, atts, now()).await? {
                print(out, &item);
            }
        }
        PoaiCommand::VerifyItem { input } => {
            let item: BatchItem = from_json("batch item", &read(input)?)?;
            return Ok(verdict(
                out,
                &kms.verify_batch_item(&ctx, &item, now()).await?,
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn hmm(kms: &Kms, cmd: &HmmCommand, out: &Out) -> Result<ExitCode> {
    let ctx = RequestCtx::local();
    let attestation = |p: &Option<std::path::PathBuf>| -> Result<Option<SignedAttestation>> {
        p.as_deref()
            .map(|p| read(p).and_then(|t| from_json("attestation", &t)))
            .transpose()
    };
    match cmd {
        HmmCommand::Sign {
            key,
            input,
            attestation: att,
        } => {
            let key = kms.parse_name(key)?;
            let s: HMMSettlement = from_json("settlement", &read(input)?)?;
            let a = attestation(att)?;
            let signed = kms.sign_hmm(&ctx, &key, s, a.as_ref(), now()).await?;
            print(out, &signed);
        }
        HmmCommand::Verify {
            input,
            attestation: att,
        } => {
            let s: SignedSettlement = from_json("signed settlement", &read(input)?)?;
            let a = attestation(att)?;
            return Ok(verdict(
                out,
                &kms.verify_hmm(&ctx, &s, a.as_ref(), now()).await?,
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}
