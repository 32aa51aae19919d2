//! `hanzo-kms-bench model`: model-weight encryption throughput against references measured in
//! the same run on the same machine (these machines are shared, so ratios matter, not absolutes).
//!
//! - in memory: our `seal_body`/`open_body` on pre-allocated buffers vs raw aws-lc-rs
//!   AES-256-GCM sealing the same buffer in place in 1 MiB chunks on the same threads, and vs
//!   `openssl speed -evp aes-256-gcm -multi <threads> -bytes 1048576`;
//! - file to file: `hanzo-kms model encrypt|decrypt` as child processes (the real CLI path: key
//!   unwrap through the pipeline, temp file, fsync, rename) vs `cp` followed by `sync` of the copy;
//!   the children report their peak RSS. The `hanzo-kms` binary is the one beside this one (as
//!   cargo builds both into one directory), else the first on `PATH`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use hanzo_kms_core::weights::Layout;
use hanzo_kms_core::{Config, Error, ErrorKind, Result, SecretKey32};
use hanzo_kms_service::{Kms, RequestCtx, Settings};
use hanzo_kms_weights::{Draft, default_threads};
use serde_json::{Value, json};

use crate::args::parse_size;
use crate::output::Out;

/// The options of `model`, as given.
pub struct ModelSettings<'a> {
    pub size: &'a str,
    pub file_size: &'a str,
    pub dir: Option<&'a Path>,
    pub segment_size: &'a str,
    pub threads: Option<usize>,
    pub repeat: u32,
}

pub async fn run(m: ModelSettings<'_>, out: &Out) -> Result<ExitCode> {
    let ModelSettings {
        size,
        file_size,
        dir,
        segment_size,
        threads,
        repeat,
    } = m;
    let size = parse_size(size).map_err(Error::invalid)?;
    let file_size = parse_size(file_size).map_err(Error::invalid)?;
    let seg = u32::try_from(parse_size(segment_size).map_err(Error::invalid)?)
        .map_err(|_| Error::invalid("segment size too large"))?;
    let threads = threads.filter(|t| *t > 0).unwrap_or_else(default_threads);
    let repeat = repeat.max(1);
    let say = |s: String| {
        if !out.json {
            out.line(s);
        }
    };
    say(format!(
        "bench model: {} in memory, {} file to file, segment {seg} B, {threads} threads, best of {repeat}",
        human(size),
        human(file_size)
    ));

    // ---- in memory ----
    let mut plain = vec![0u8; size as usize];
    fill_pattern(&mut plain);
    let dek = SecretKey32::from_bytes([7u8; 32]);
    let draft = Draft::with_randomness("bench:weights", b"", Some(seg), [1; 32], [2; 7])?;
    let (_, cipher) = draft.finish("model:bench:weights", 1, vec![0; 60], &dek)?;
    let layout = Layout::for_plaintext(seg, size);
    // Pre-allocated and pre-faulted (written once), so no timed run pays for first touches.
    let mut body = vec![0xa5u8; layout.body_len() as usize];
    let mut back = vec![0xa5u8; size as usize];
    let mut raw_buf = plain.clone();
    // Interleaved repetitions, so that drift in the machine's load hits every figure alike.
    let (mut raw, mut enc, mut dec, mut cached) =
        (f64::INFINITY, f64::INFINITY, f64::INFINITY, f64::INFINITY);
    for _ in 0..repeat {
        raw = raw.min(raw_aws_lc(&mut raw_buf, threads)?);
        enc = enc.min(time(|| cipher.seal_body(&plain, &mut body, threads))?);
        dec = dec.min(time(|| cipher.open_body(&body, &mut back, threads))?);
        cached = cached.min(raw_aws_lc_cached(size, threads)?);
    }
    drop(raw_buf);
    if back != plain {
        return Err(Error::internal(
            "the benchmark's decryption did not reproduce the plaintext",
        ));
    }
    drop((body, back));
    let openssl = openssl_speed(threads);
    let gbps = |secs: f64| size as f64 / secs / 1e9;
    say(format!(
        "  raw aws-lc-rs AES-256-GCM seal   {:6.2} GB/s  (the same {} buffer, in place, 1 MiB chunks)",
        gbps(raw),
        human(size)
    ));
    say(format!(
        "  raw aws-lc-rs, one 1 MiB buffer  {:6.2} GB/s  (cache-resident, as openssl speed measures)",
        gbps(cached)
    ));
    say(format!(
        "  ours encrypt (in memory)         {:6.2} GB/s  = {:.0}% of raw",
        gbps(enc),
        100.0 * raw / enc
    ));
    say(format!(
        "  ours decrypt (in memory)         {:6.2} GB/s  = {:.0}% of raw",
        gbps(dec),
        100.0 * raw / dec
    ));
    match openssl {
        Some(o) => say(format!(
            "  openssl speed -multi {threads}           {:6.2} GB/s  ours/openssl: encrypt {:.2}x, decrypt {:.2}x",
            o / 1e9,
            gbps(enc) * 1e9 / o,
            gbps(dec) * 1e9 / o
        )),
        None => say("  openssl speed: not available".into()),
    }
    let mut report = json!({
        "size_bytes": size,
        "segment_size": seg,
        "threads": threads,
        "in_memory": {
            "raw_aws_lc_gbps": gbps(raw),
            "raw_aws_lc_cached_gbps": gbps(cached),
            "encrypt_gbps": gbps(enc),
            "decrypt_gbps": gbps(dec),
            "encrypt_vs_raw": raw / enc,
            "decrypt_vs_raw": raw / dec,
            "openssl_gbps": openssl.map(|o| o / 1e9),
        },
    });
    drop(plain);

    // ---- file to file ----
    if file_size > 0 {
        let base = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let mut suffix = [0u8; 6];
        hanzo_kms_crypto::rng::fill(&mut suffix)?;
        let work = base.join(format!("hanzo-kms-bench-{}", hex::encode(suffix)));
        let result = files(&work, file_size, repeat, out).await;
        let _ = std::fs::remove_dir_all(&work);
        report["files"] = result?;
    }
    if out.json {
        out.json(&report);
    }
    Ok(ExitCode::SUCCESS)
}

async fn files(work: &Path, size: u64, repeat: u32, out: &Out) -> Result<Value> {
    let say = |s: String| {
        if !out.json {
            out.line(s);
        }
    };
    std::fs::create_dir_all(work).map_err(|e| io("creating", work, e))?;
    let data = work.join("data");
    let settings = Settings {
        data_dir: data.clone(),
        config: Config::from_yaml("", "defaults", std::iter::empty::<(&str, &str)>())?,
        master_key_env: None,
    };
    let (kms, _) = Kms::init(&settings).await?;
    kms.create_keyspace(&RequestCtx::local(), "bench", "weights", false)
        .await?;
    kms.close().await;

    let input = work.join("weights.bin");
    write_input(&input, size)?;
    let copy = work.join("copy.bin");
    let enc_path = work.join("weights.enc");
    let dec_path = work.join("weights.dec");
    // Every timed run starts from the same state: earlier outputs removed and everything
    // written back (a global `sync`), so no run pays for another's dirty pages. Runs are
    // interleaved so that drift in the machine's load hits all three alike.
    // Every timed run starts from the same state: earlier outputs removed, everything written
    // back (a global `sync`), and the run's input dropped from the page cache (GNU dd
    // `iflag=nocache count=0`), so every run reads cold, as a model file read once would.
    // Runs are interleaved so that drift in the machine's load hits all three alike.
    let clean = |remove: &[&Path], input: &Path| -> Result<()> {
        for p in remove {
            let _ = std::fs::remove_file(p);
        }
        command("sync", &[])?;
        let mut arg = std::ffi::OsString::from("if=");
        arg.push(input.as_os_str());
        command(
            "dd",
            &[
                &arg,
                "iflag=nocache".as_ref(),
                "count=0".as_ref(),
                "status=none".as_ref(),
            ],
        )
    };
    let (mut cp, mut enc, mut dec) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    let (mut enc_rss, mut dec_rss) = (0u64, 0u64);
    for _ in 0..repeat {
        clean(&[&copy], &input)?;
        let t = Instant::now();
        command("cp", &[input.as_os_str(), copy.as_os_str()])?;
        command("sync", &[copy.as_os_str()])?;
        cp = cp.min(t.elapsed().as_secs_f64());
        clean(&[&copy, &enc_path], &input)?;
        let (s, v) = child(
            &data,
            &["model", "encrypt", "--model", "bench:weights", "--quiet"],
            &input,
            &enc_path,
        )?;
        enc = enc.min(s);
        enc_rss = enc_rss.max(v["peak_rss_bytes"].as_u64().unwrap_or(0));
        clean(&[&dec_path], &enc_path)?;
        let (s, v) = child(
            &data,
            &["model", "decrypt", "--model", "bench:weights", "--quiet"],
            &enc_path,
            &dec_path,
        )?;
        dec = dec.min(s);
        dec_rss = dec_rss.max(v["peak_rss_bytes"].as_u64().unwrap_or(0));
    }
    let same = std::fs::metadata(&dec_path).map(|m| m.len()).ok() == Some(size);
    if !same {
        return Err(Error::internal(
            "the decrypted file differs in size from the input",
        ));
    }
    let gbps = |secs: f64| size as f64 / secs / 1e9;
    say(format!(
        "  cp + sync                        {:6.2} GB/s  ({cp:.2} s)",
        gbps(cp)
    ));
    say(format!(
        "  model encrypt file to file       {:6.2} GB/s  ({enc:.2} s) = {:.2}x cp+sync, peak RSS {}",
        gbps(enc),
        enc / cp,
        human(enc_rss)
    ));
    say(format!(
        "  model decrypt file to file       {:6.2} GB/s  ({dec:.2} s) = {:.2}x cp+sync, peak RSS {}",
        gbps(dec),
        dec / cp,
        human(dec_rss)
    ));
    Ok(json!({
        "size_bytes": size,
        "cp_sync_seconds": cp,
        "encrypt_seconds": enc,
        "decrypt_seconds": dec,
        "encrypt_vs_cp_sync": enc / cp,
        "decrypt_vs_cp_sync": dec / cp,
        "encrypt_peak_rss_bytes": enc_rss,
        "decrypt_peak_rss_bytes": dec_rss,
    }))
}

/// The `hanzo-kms` binary: the one in this binary's directory, else `hanzo-kms` on `PATH`.
fn kms_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("hanzo-kms")))
        .filter(|kms| kms.is_file())
        .unwrap_or_else(|| PathBuf::from("hanzo-kms"))
}

/// Run `hanzo-kms --data-dir DATA --json ARGS --in IN --out OUT`; wall-clock seconds and its JSON.
fn child(data: &Path, args: &[&str], input: &Path, output: &Path) -> Result<(f64, Value)> {
    let exe = kms_binary();
    let t = Instant::now();
    let o = Command::new(&exe)
        .arg("--data-dir")
        .arg(data)
        .arg("--json")
        .args(args)
        .arg("--in")
        .arg(input)
        .arg("--out")
        .arg(output)
        .env_remove("HANZO_KMS_MASTER_KEY")
        .output()
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "running {} (build it with `cargo build -p hanzo-kms-cli`, or give --file-size 0)",
                    exe.display()
                ),
            )
            .with_source(e)
        })?;
    let secs = t.elapsed().as_secs_f64();
    if !o.status.success() {
        return Err(Error::internal(format!(
            "hanzo-kms {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    let v: Value = serde_json::from_slice(&o.stdout)
        .map_err(|_| Error::internal("hanzo-kms printed no JSON"))?;
    Ok((secs, v))
}

fn command(prog: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
    let s = Command::new(prog)
        .args(args)
        .status()
        .map_err(|e| Error::new(ErrorKind::Io, format!("running {prog}")).with_source(e))?;
    if s.success() {
        Ok(())
    } else {
        Err(Error::internal(format!("{prog} failed")))
    }
}

/// Raw aws-lc-rs on one cache-resident 1 MiB buffer per thread, `size` bytes in all: the
/// cipher's compute speed without memory traffic (what `openssl speed -bytes 1048576` measures).
fn raw_aws_lc_cached(size: u64, threads: usize) -> Result<f64> {
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &[9u8; 32]).map_err(|_| Error::internal("key"))?,
    );
    let per_thread = size.div_ceil(threads as u64).div_ceil(1 << 20);
    let t = Instant::now();
    std::thread::scope(|s| {
        for w in 0..threads {
            let key = &key;
            s.spawn(move || {
                let mut buf = vec![0x5au8; 1 << 20];
                for i in 0..per_thread {
                    let mut n = [0u8; 12];
                    n[..4].copy_from_slice(&(w as u32).to_be_bytes());
                    n[4..12].copy_from_slice(&i.to_be_bytes());
                    let _ = key.seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(n),
                        Aad::empty(),
                        &mut buf,
                    );
                }
            });
        }
    });
    Ok(t.elapsed().as_secs_f64())
}

/// Raw aws-lc-rs: seal the buffer in place in 1 MiB chunks, split across threads.
fn raw_aws_lc(buf: &mut [u8], threads: usize) -> Result<f64> {
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &[9u8; 32]).map_err(|_| Error::internal("key"))?,
    );
    let per = buf.len().div_ceil(threads).div_ceil(1 << 20) * (1 << 20);
    let t = Instant::now();
    std::thread::scope(|s| {
        for (w, part) in buf.chunks_mut(per.max(1)).enumerate() {
            let key = &key;
            s.spawn(move || {
                for (i, chunk) in part.chunks_mut(1 << 20).enumerate() {
                    let mut n = [0u8; 12];
                    n[..4].copy_from_slice(&(w as u32).to_be_bytes());
                    n[4..12].copy_from_slice(&(i as u64).to_be_bytes());
                    let _ = key.seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(n),
                        Aad::empty(),
                        chunk,
                    );
                }
            });
        }
    });
    Ok(t.elapsed().as_secs_f64())
}

/// `openssl speed` in bytes per second, if openssl is installed.
fn openssl_speed(threads: usize) -> Option<f64> {
    let o = Command::new("openssl")
        .args([
            "speed",
            "-evp",
            "aes-256-gcm",
            "-multi",
            &threads.to_string(),
            "-bytes",
            "1048576",
            "-seconds",
            "3",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&o.stdout);
    let last = text
        .lines()
        .rev()
        .find(|l| l.to_ascii_lowercase().starts_with("aes-256-gcm"))?;
    let k = last.split_whitespace().last()?.strip_suffix('k')?;
    k.parse::<f64>().ok().map(|v| v * 1000.0)
}

fn time(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

/// Cheap non-constant bytes (xorshift), so no layer can shortcut on zeros.
fn fill_pattern(buf: &mut [u8]) {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn write_input(path: &PathBuf, size: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| io("creating", path, e))?;
    let mut chunk = vec![0u8; 8 << 20];
    fill_pattern(&mut chunk);
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])
            .map_err(|e| io("writing", path, e))?;
        chunk.rotate_left(1);
        left -= n as u64;
    }
    f.sync_all().map_err(|e| io("syncing", path, e))
}

fn io(doing: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("{doing} {}", path.display())).with_source(e)
}

fn human(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{b} B"),
    }
}
