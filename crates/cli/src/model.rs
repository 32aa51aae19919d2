//! `hanzo-kms model …`: model-weight files through the service pipeline.

use std::fs::File;
use std::io::{IsTerminal, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

use hanzo_kms_core::weights::{Header, Layout};
use hanzo_kms_core::{Error, ErrorKind, Result};
use hanzo_kms_service::RequestCtx;
use hanzo_kms_weights::{
    DecryptingReader, decrypt_stream, default_threads, encrypt_stream, safetensors,
};
use serde_json::{Value, json};

use crate::args::{ModelCommand, RunArgs, parse_size};
use crate::atomic::AtomicOutput;
use crate::backend::Backend;
use crate::output::Out;

/// Show a progress bar above this size, on a terminal only.
const PROGRESS_MIN: u64 = 64 << 20;

/// `model inspect` needs no store; everything else does.
pub fn needs_store(cmd: &ModelCommand) -> bool {
    !matches!(cmd, ModelCommand::Inspect { .. })
}

pub fn inspect(input: &Path, out: &Out) -> Result<()> {
    let mut f = open(input)?;
    let (header, header_len) = read_header(&mut f, input)?;
    let size = f.metadata().map_err(|e| io("reading", input, e))?.len();
    let layout = header.layout(size - header_len as u64);
    let mut v = json!({
        "file": input.display().to_string(),
        "key": header.key_name,
        "version": header.key_version,
        "model_id": header.model_id,
        "segment_size": header.segment_size,
        "header_bytes": header_len,
        "file_bytes": size,
        "wrapped_dek_bytes": header.wrapped_dek.len(),
        "metadata": String::from_utf8(header.metadata.clone()).ok(),
    });
    match layout {
        Ok(l) => {
            v["segments"] = json!(l.segments);
            v["plaintext_bytes"] = json!(l.plaintext_len);
        }
        Err(_) => {
            v["problem"] = json!("the file length fits no complete file: truncated or extended")
        }
    }
    if out.json {
        out.json(&v);
    } else {
        out.line(format!("file:          {}", input.display()));
        out.line(format!(
            "key:           {} version {}",
            header.key_name, header.key_version
        ));
        out.line(format!("model:         {}", header.model_id));
        out.line(format!("segment size:  {} bytes", header.segment_size));
        if let Ok(l) = layout {
            out.line(format!("segments:      {}", l.segments));
            out.line(format!("plaintext:     {} bytes", l.plaintext_len));
        } else {
            out.line("problem:       the file length fits no complete file: truncated or extended");
        }
        out.line(format!("file:          {size} bytes (header {header_len})"));
        if !header.metadata.is_empty() {
            match std::str::from_utf8(&header.metadata) {
                Ok(t) => out.line(format!("metadata:      {t}")),
                Err(_) => out.line(format!(
                    "metadata:      {} bytes (binary)",
                    header.metadata.len()
                )),
            }
        }
    }
    Ok(())
}

pub async fn run(b: &Backend<'_>, cmd: &ModelCommand, out: &Out) -> Result<()> {
    match cmd {
        ModelCommand::Encrypt {
            model,
            input,
            out: dest,
            metadata,
            segment_size,
            run,
        } => {
            let key = b.model_key(model)?;
            let seg = parse_size(segment_size).map_err(Error::invalid)?;
            let seg = u32::try_from(seg).map_err(|_| Error::invalid("segment size too large"))?;
            let src = open(input)?;
            let size = src.metadata().map_err(|e| io("reading", input, e))?.len();
            let started = Instant::now();
            let (header, cipher) = b
                .model_seal(
                    &key,
                    metadata.as_deref().unwrap_or("").as_bytes(),
                    Some(seg),
                )
                .await?;
            let head = header.encode()?;
            let output = AtomicOutput::create(dest, false)?;
            let mut sink = output.bulk_writer();
            let bar = progress(size, run, out);
            let plain = encrypt_stream(&cipher, &head, src, &mut sink, threads(run), &|n| {
                bar.set_position(n)
            })?;
            sink.finish().map_err(|e| io("writing", dest, e))?;
            bar.finish_and_clear();
            output.commit()?;
            report(
                out,
                "encrypted",
                dest,
                &header,
                plain,
                started,
                &key.to_string(),
            );
        }
        ModelCommand::Decrypt {
            model,
            input,
            out: dest,
            tensor,
            run,
        } => {
            let key = b.model_key(model)?;
            let mut src = open(input)?;
            let started = Instant::now();
            let (header, header_len) = read_header(&mut src, input)?;
            let cipher = b.model_open(&key, &header).await?;
            let output = AtomicOutput::create(dest, true)?;
            let plain = match tensor {
                None => {
                    let size = src.metadata().map_err(|e| io("reading", input, e))?.len();
                    let bar = progress(size, run, out);
                    src.seek(SeekFrom::Start(header_len as u64))
                        .map_err(|e| io("reading", input, e))?;
                    let mut sink = output.bulk_writer();
                    let n = decrypt_stream(&cipher, src, &mut sink, threads(run), &|n| {
                        bar.set_position(n)
                    })?;
                    sink.finish().map_err(|e| io("writing", dest, e))?;
                    bar.finish_and_clear();
                    n
                }
                Some(name) => {
                    let mut reader = DecryptingReader::new(
                        src,
                        &header,
                        header_len as u64,
                        cipher,
                        threads(run),
                    )?;
                    let (tensors, _) = safetensors::read_index(&mut reader)?;
                    let t = tensors.iter().find(|t| &t.name == name).ok_or_else(|| {
                        Error::new(
                            ErrorKind::NotFound,
                            format!(
                                "{} has no tensor '{name}' ({} tensors; see `model tensors`)",
                                input.display(),
                                tensors.len()
                            ),
                        )
                    })?;
                    let mut w = output.bulk_writer();
                    let mut at = t.start;
                    while at < t.end {
                        let n = (t.end - at).min(16 << 20);
                        let chunk = reader.read_range(at, n)?;
                        w.write_all(&chunk).map_err(|e| io("writing", dest, e))?;
                        at += n;
                    }
                    w.finish().map_err(|e| io("writing", dest, e))?;
                    t.end - t.start
                }
            };
            output.commit()?;
            let verb = match tensor {
                Some(name) => format!("wrote tensor {name} to"),
                None => "decrypted".to_owned(),
            };
            report(out, &verb, dest, &header, plain, started, &key.to_string());
        }
        ModelCommand::Rewrap { input, out: dest } => {
            let mut src = open(input)?;
            let (header, header_len) = read_header(&mut src, input)?;
            let kms = b.local("model rewrap")?;
            let Some(next) = kms
                .model_rewrap_header(&RequestCtx::local(), &header)
                .await?
            else {
                if out.json {
                    out.json(&json!({"file": input.display().to_string(), "key": header.key_name, "version": header.key_version, "rewrapped": false}));
                } else {
                    out.line(format!(
                        "{} is already on the primary version ({} v{})",
                        input.display(),
                        header.key_name,
                        header.key_version
                    ));
                }
                return Ok(());
            };
            let dest = dest.as_deref().unwrap_or(input);
            let output = AtomicOutput::create(dest, false)?;
            let mut w = output.file();
            w.write_all(&next.encode()?)
                .map_err(|e| io("writing", dest, e))?;
            src.seek(SeekFrom::Start(header_len as u64))
                .map_err(|e| io("reading", input, e))?;
            std::io::copy(&mut src, &mut w).map_err(|e| io("copying segments of", input, e))?;
            output.commit()?;
            if out.json {
                out.json(&json!({"file": dest.display().to_string(), "key": next.key_name, "from_version": header.key_version, "version": next.key_version, "rewrapped": true}));
            } else {
                out.line(format!(
                    "rewrapped {} from {} v{} to v{} (segments unchanged)",
                    dest.display(),
                    next.key_name,
                    header.key_version,
                    next.key_version
                ));
            }
        }
        ModelCommand::Tensors { model, input } => {
            let key = b.model_key(model)?;
            let mut src = open(input)?;
            let (header, header_len) = read_header(&mut src, input)?;
            let cipher = b.model_open(&key, &header).await?;
            let mut reader =
                DecryptingReader::new(src, &header, header_len as u64, cipher, default_threads())?;
            let (tensors, metadata) = safetensors::read_index(&mut reader)?;
            let segments = reader.segments_decrypted();
            if out.json {
                let list: Vec<Value> = tensors
                    .iter()
                    .map(|t| json!({"name": t.name, "dtype": t.dtype, "shape": t.shape, "start": t.start, "end": t.end, "bytes": t.end - t.start}))
                    .collect();
                out.json(&json!({"tensors": list, "metadata": metadata, "segments_decrypted": segments, "segments": reader.layout().segments}));
            } else {
                let w = tensors
                    .iter()
                    .map(|t| t.name.len())
                    .max()
                    .unwrap_or(4)
                    .max(4);
                out.line(format!(
                    "{:w$}  {:6}  {:20}  {:>14}",
                    "NAME", "DTYPE", "SHAPE", "BYTES"
                ));
                for t in &tensors {
                    out.line(format!(
                        "{:w$}  {:6}  {:20}  {:>14}",
                        t.name,
                        t.dtype,
                        format!("{:?}", t.shape),
                        t.end - t.start
                    ));
                }
                out.line(format!(
                    "({}; decrypted {segments} of {})",
                    count(tensors.len() as u64, "tensor"),
                    count(reader.layout().segments, "segment")
                ));
            }
        }
        ModelCommand::Inspect { input } => inspect(input, out)?,
    }
    Ok(())
}

fn threads(run: &RunArgs) -> usize {
    run.threads
        .filter(|t| *t > 0)
        .unwrap_or_else(default_threads)
}

fn progress(size: u64, run: &RunArgs, out: &Out) -> indicatif::ProgressBar {
    if run.quiet || out.json || size < PROGRESS_MIN || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(size);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn report(
    out: &Out,
    verb: &str,
    dest: &Path,
    header: &Header,
    plaintext: u64,
    started: Instant,
    key: &str,
) {
    let secs = started.elapsed().as_secs_f64();
    let layout = Layout::for_plaintext(header.segment_size, plaintext);
    let rss = peak_rss_bytes();
    if out.json {
        out.json(&json!({
            "file": dest.display().to_string(),
            "key": key,
            "version": header.key_version,
            "model_id": header.model_id,
            "plaintext_bytes": plaintext,
            "segments": layout.segments,
            "segment_size": header.segment_size,
            "seconds": secs,
            "peak_rss_bytes": rss,
        }));
    } else {
        out.line(format!(
            "{verb} {} ({plaintext} bytes, {}) with {key} v{} in {secs:.2} s",
            dest.display(),
            count(layout.segments, "segment"),
            header.key_version
        ));
    }
}

/// `1 segment`, `3 segments`.
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// This process's peak resident set size, from /proc/self/status (VmHWM).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| io("opening", path, e))
}

fn io(doing: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("{doing} {}", path.display())).with_source(e)
}

/// Read and parse the header at the start of `f`; returns it and its length.
pub fn read_header(f: &mut File, path: &Path) -> Result<(Header, usize)> {
    match hanzo_kms_weights::read_header(f) {
        Ok((h, n, _)) => Ok((h, n)),
        Err(e) if e.kind() == ErrorKind::AuthenticationFailed => Err(e),
        Err(e) => Err(e.context(path.display())),
    }
}
