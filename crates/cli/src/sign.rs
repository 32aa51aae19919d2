//! `hanzo-kms poai …` and `hanzo-kms hmm …`.

use std::path::Path;
use std::process::ExitCode;

use hanzo_kms_core::eip712::{HMMSettlement, PoAIAttestation, from_json};
use hanzo_kms_core::signed::{BatchItem, SignedAttestation, SignedSettlement};
use hanzo_kms_core::{Error, ErrorKind, Result};
use serde::Serialize;

use crate::args::{HmmCommand, PoaiCommand};
use crate::backend::{Backend, Verdict};
use crate::calldata::{self, Paying};
use crate::output::Out;

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

pub async fn poai(b: &Backend<'_>, cmd: &PoaiCommand, out: &Out) -> Result<ExitCode> {
    match cmd {
        PoaiCommand::Sign { key, input } => {
            b.check_name(key)?;
            let att: PoAIAttestation = from_json("attestation", &read(input)?)?;
            let signed = b.sign_poai(key, att).await?;
            print(out, &signed);
        }
        PoaiCommand::Verify { input } => {
            let signed: SignedAttestation = from_json("signed attestation", &read(input)?)?;
            return Ok(verdict(out, &b.verify_poai(&signed).await?));
        }
        PoaiCommand::SignBatch { key, input } => {
            b.check_name(key)?;
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
            for item in b.sign_poai_batch(key, atts).await? {
                print(out, &item);
            }
        }
        PoaiCommand::VerifyItem { input } => {
            let item: BatchItem = from_json("batch item", &read(input)?)?;
            return Ok(verdict(out, &b.verify_batch_item(&item).await?));
        }
        PoaiCommand::Calldata { .. } => {
            offline(&Offline::Poai(cmd), out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a settlement pays for, as read from `--attestation`.
pub enum PaidFile {
    Attestation(SignedAttestation),
    Item(BatchItem),
}

/// A signed attestation, or a batch item (it has a `batch`), from a file.
fn paid_file(path: &Path) -> Result<PaidFile> {
    let text = read(path)?;
    let is_item = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .is_some_and(|v| v.get("batch").is_some());
    Ok(if is_item {
        PaidFile::Item(from_json("attestation (batch item)", &text)?)
    } else {
        PaidFile::Attestation(from_json("attestation", &text)?)
    })
}

/// A command that may need no backend: `poai calldata` and `hmm calldata` (main.rs runs them
/// before opening one).
pub enum Offline<'a> {
    Poai(&'a PoaiCommand),
    Hmm(&'a HmmCommand),
}

/// Runs `cmd` if it needs no backend, and says whether it did.
pub fn offline(cmd: &Offline<'_>, out: &Out) -> Result<bool> {
    let call = match cmd {
        Offline::Poai(PoaiCommand::Calldata { input, verify }) => {
            let text = read(input)?;
            // A `poai sign` output or a `poai sign-batch` line: both refuse unknown fields, so
            // the one that parses is the one it is.
            match from_json::<SignedAttestation>("signed attestation", &text) {
                Ok(signed) => calldata::attestation(&signed, *verify)?,
                Err(as_signed) => match from_json::<BatchItem>("batch item", &text) {
                    Ok(item) => calldata::batch_item(&item, *verify)?,
                    Err(_) => {
                        return Err(Error::invalid(format!(
                            "{}: neither a `poai sign` output nor a `poai sign-batch` line ({as_signed})",
                            input.display()
                        )));
                    }
                },
            }
        }
        Offline::Hmm(HmmCommand::Calldata {
            input,
            attestation,
            item,
        }) => {
            let s: SignedSettlement = from_json("signed settlement", &read(input)?)?;
            let a: Option<SignedAttestation> = attestation
                .as_deref()
                .map(|p| read(p).and_then(|t| from_json("attestation", &t)))
                .transpose()?;
            let i: Option<BatchItem> = item
                .as_deref()
                .map(|p| read(p).and_then(|t| from_json("batch item", &t)))
                .transpose()?;
            let paying = match (&a, &i) {
                (Some(a), _) => Paying::Attestation(a),
                (None, Some(i)) => Paying::Item(i),
                (None, None) => Paying::Recorded,
            };
            calldata::settlement(&s, paying)?
        }
        _ => return Ok(false),
    };
    let data = format!("0x{}", hex::encode(&call.data));
    if out.json {
        out.json(&serde_json::json!({"function": call.function, "calldata": data}));
    } else {
        out.line(data);
    }
    Ok(true)
}

pub async fn hmm(b: &Backend<'_>, cmd: &HmmCommand, out: &Out) -> Result<ExitCode> {
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
            b.check_name(key)?;
            let s: HMMSettlement = from_json("settlement", &read(input)?)?;
            let paid = paid_file(att)?;
            let signed = b.sign_hmm(key, s, &paid).await?;
            print(out, &signed);
        }
        HmmCommand::Verify {
            input,
            attestation: att,
        } => {
            let s: SignedSettlement = from_json("signed settlement", &read(input)?)?;
            let a = attestation(att)?;
            return Ok(verdict(out, &b.verify_hmm(&s, a.as_ref()).await?));
        }
        HmmCommand::Calldata { .. } => {
            offline(&Offline::Hmm(cmd), out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
