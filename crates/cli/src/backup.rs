//! `hanzo-kms backup create|restore` (the bundle itself is in `hanzo_kms_service::backup`).

use std::path::{Path, PathBuf};

use hanzo_kms_core::{Error, ErrorKind, Result};
use hanzo_kms_service::backup::{self, Protection, Unlock};
use hanzo_kms_service::{Kms, RequestCtx, Settings};
use serde_json::json;
use zeroize::Zeroizing;

use crate::args::BackupCommand;
use crate::atomic::AtomicOutput;
use crate::output::Out;

/// The environment variable that may carry the backup passphrase.
pub const PASSPHRASE_ENV: &str = "HANZO_KMS_BACKUP_PASSPHRASE";

fn passphrase(file: Option<&Path>) -> Result<Zeroizing<String>> {
    let text = match file {
        Some(f) => Zeroizing::new(std::fs::read_to_string(f).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("reading the passphrase file {}", f.display()),
            )
            .with_source(e)
        })?),
        None => match std::env::var(PASSPHRASE_ENV) {
            Ok(v) if !v.is_empty() => Zeroizing::new(v),
            _ => {
                return Err(Error::invalid(format!(
                    "no backup secret: give --passphrase-file FILE, set {PASSPHRASE_ENV}, or split the key with --shares N --threshold T"
                )));
            }
        },
    };
    // The first line, without its line ending (a file written by `echo` ends in a newline).
    let first = text.lines().next().unwrap_or("");
    Ok(Zeroizing::new(first.to_owned()))
}

fn share_path(out: &Path, index: u8) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(format!(".share-{index}"));
    PathBuf::from(s)
}

fn write_all_or_nothing(files: &[(PathBuf, &[u8])]) -> Result<()> {
    for (path, _) in files {
        if path.exists() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "{} exists; choose another --out or move it away (nothing was written)",
                    path.display()
                ),
            ));
        }
    }
    let mut staged = Vec::with_capacity(files.len());
    for (path, bytes) in files {
        let o = AtomicOutput::create(path, true)?;
        std::io::Write::write_all(&mut o.file(), bytes).map_err(|e| {
            Error::new(ErrorKind::Io, format!("writing {}", path.display())).with_source(e)
        })?;
        staged.push((path.clone(), o));
    }
    let mut done: Vec<PathBuf> = Vec::new();
    for (path, o) in staged {
        if let Err(e) = o.commit() {
            for p in &done {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        done.push(path);
    }
    Ok(())
}

pub async fn run(settings: &Settings, cmd: &BackupCommand, out: &Out) -> Result<()> {
    let ctx = RequestCtx::local();
    match cmd {
        BackupCommand::Create {
            out: dest,
            passphrase_file,
            shares,
            threshold,
            skip_unexportable,
        } => {
            let protection = match (shares, threshold) {
                (Some(n), Some(t)) => Protection::Shamir {
                    shares: *n,
                    threshold: *t,
                },
                _ => Protection::Passphrase(passphrase(passphrase_file.as_deref())?),
            };
            let kms = Kms::open(settings).await?;
            let made = kms
                .backup_create(&ctx, &protection, *skip_unexportable)
                .await;
            kms.close().await;
            let (bundle, skipped) = made?;
            let mut files: Vec<(PathBuf, &[u8])> = vec![(dest.clone(), &bundle.bytes)];
            for (i, text) in &bundle.shares {
                files.push((share_path(dest, *i), text.as_bytes()));
            }
            write_all_or_nothing(&files)?;
            let share_files: Vec<String> = bundle
                .shares
                .iter()
                .map(|(i, _)| share_path(dest, *i).display().to_string())
                .collect();
            if out.json {
                out.json(&json!({
                    "bundle": dest.display().to_string(),
                    "bundle_id": bundle.id,
                    "keys": bundle.keys,
                    "versions": bundle.versions,
                    "shares": share_files,
                    "skipped": skipped,
                }));
            } else {
                out.line(format!(
                    "wrote {} (bundle {}): {} keys, {} versions",
                    dest.display(),
                    bundle.id,
                    bundle.keys,
                    bundle.versions
                ));
                for f in &share_files {
                    out.line(format!("  share: {f}"));
                }
                for s in &skipped {
                    out.line(format!("  left out: {s}"));
                }
            }
        }
        BackupCommand::Restore {
            input,
            passphrase_file,
            shares,
            merge,
        } => {
            let bytes = std::fs::read(input).map_err(|e| {
                Error::new(ErrorKind::Io, format!("reading {}", input.display())).with_source(e)
            })?;
            let unlock = if shares.is_empty() {
                Unlock::Passphrase(passphrase(passphrase_file.as_deref())?)
            } else {
                let mut files = Vec::with_capacity(shares.len());
                for f in shares {
                    let text = Zeroizing::new(std::fs::read_to_string(f).map_err(|e| {
                        Error::new(ErrorKind::Io, format!("reading {}", f.display())).with_source(e)
                    })?);
                    files.push((f.display().to_string(), text));
                }
                Unlock::Shares(files)
            };
            // Open (authenticate and decrypt) the bundle before touching the data directory.
            let opened = backup::open_bundle(&bytes, &unlock)?;
            let kms = match Kms::open(settings).await {
                Ok(k) => k,
                Err(e) if e.kind() == ErrorKind::NotInitialized => {
                    let (k, report) = Kms::init(settings).await?;
                    if !out.json {
                        out.init(&report);
                    }
                    k
                }
                Err(e) => return Err(e),
            };
            let r = kms.backup_restore(&ctx, &opened, *merge).await;
            kms.close().await;
            let report = r?;
            if out.json {
                out.json(&json!({
                    "bundle_id": report.bundle_id,
                    "restored": report.restored,
                    "already_present": report.already_present,
                }));
            } else {
                out.line(format!(
                    "restored {} keys from bundle {} ({} already present)",
                    report.restored.len(),
                    report.bundle_id,
                    report.already_present.len()
                ));
                for k in &report.restored {
                    out.line(format!("  {k}"));
                }
            }
        }
    }
    Ok(())
}
