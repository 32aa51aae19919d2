//! `hanzo-kms-bench`: the load generators and benchmarks of Hanzo KMS, measured against
//! reference implementations in the same run on the same machine (docs/benchmarks.md).
//!
//! They live in a binary of their own so that the deployed `hanzo-kms` holds no load generator
//! and no test-token code (`sign --provider softhsm2` makes throwaway SoftHSM2 tokens through
//! hanzo-kms-testkit). Subcommands: `server` (the REST and gRPC API under load, [`server`]),
//! `model` (model-weight encryption, [`model`]), `sign` (PoAI signing, [`sign`]; with
//! `--provider`, a PKCS#11 token, [`hsm`]).
//!
//! Exit codes: 0 success, 1 a failed measurement, 2 a usage error (from the argument parser).
//! A failure prints one line on stderr (with `--json`, a JSON object).

#![forbid(unsafe_code)]

/// The `hanzo-kms` binary's allocator (crates/cli/src/main.rs), so that `server` measures its
/// in-process server as it is deployed: mimalloc without transparent huge pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod args;
mod hsm;
mod model;
mod output;
mod server;
mod sign;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use hanzo_kms_core::{Error, ErrorKind, Result};

use crate::args::{BenchCommand, Cli};
use crate::output::Out;

fn main() -> ExitCode {
    install_panic_hook();
    let cli = Cli::parse();
    init_tracing();
    let out = Out::new(cli.json);
    // The server benchmark runs a server in this process (or drives one) on every core; the
    // others measure on threads of their own.
    let mut builder = match cli.command {
        BenchCommand::Server { .. } => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            out.error(
                &Error::new(ErrorKind::Internal, "starting the async runtime").with_source(e),
            );
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(&cli, &out)) {
        Ok(code) => code,
        Err(e) => {
            out.error(&e);
            ExitCode::from(1)
        }
    }
}

async fn run(cli: &Cli, out: &Out) -> Result<ExitCode> {
    match &cli.command {
        BenchCommand::Server {
            url,
            grpc_url,
            concurrency,
            seconds,
            batch,
            rate,
            warmup,
            ordered_nonces,
            disk_dir,
            prefill,
        } => {
            // Only a bench against a running server needs a token; the others leave the token
            // file unread.
            let token = if url.is_empty() {
                None
            } else {
                api_token(cli.token.as_ref(), cli.token_file.as_deref())?
            };
            server::run(
                server::LoadSettings {
                    urls: url,
                    grpc_url: grpc_url.as_deref(),
                    token: token.as_deref().map(|t| t.trim()),
                    concurrency: *concurrency,
                    seconds: *seconds,
                    batch: *batch,
                    rate: *rate,
                    warmup: *warmup,
                    ordered_nonces: *ordered_nonces,
                    disk_dir: disk_dir.as_deref(),
                    prefill: *prefill,
                },
                out,
            )
            .await
        }
        BenchCommand::Model {
            size,
            file_size,
            dir,
            segment_size,
            threads,
            repeat,
        } => {
            model::run(
                model::ModelSettings {
                    size,
                    file_size,
                    dir: dir.as_deref(),
                    segment_size,
                    threads: *threads,
                    repeat: *repeat,
                },
                out,
            )
            .await
        }
        BenchCommand::Sign {
            seconds,
            threads,
            concurrency,
            provider,
            count,
        } => match (provider, count) {
            (Some(p), _) => hsm::run(p, cli.config.as_deref(), *seconds, *count, out),
            (None, Some(n)) => sign::count(*n, out),
            (None, None) => sign::run(*seconds, *threads, *concurrency, out).await,
        },
    }
}

/// The API token: --token or HANZO_KMS_TOKEN, else the contents of --token-file.
fn api_token(
    token: Option<&hanzo_kms_core::config::ConfigSecret>,
    file: Option<&Path>,
) -> Result<Option<zeroize::Zeroizing<String>>> {
    Ok(match (token, file) {
        (Some(t), _) => Some(zeroize::Zeroizing::new(t.expose().to_owned())),
        (None, Some(f)) => Some(zeroize::Zeroizing::new(
            std::fs::read_to_string(f).map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("reading the token file {}", f.display()),
                )
                .with_source(e)
            })?,
        )),
        (None, None) => None,
    })
}

/// Warnings of the in-process server (`server` without --url) on stderr, as `hanzo-kms serve`
/// logs them; `HANZO_KMS_LOG` sets the filter.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HANZO_KMS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// A panic is a bug. Say so in one line, without the payload and without a backtrace.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let _ = writeln!(
            std::io::stderr(),
            "hanzo-kms-bench: internal error{location}; this is a bug, please report it"
        );
    }));
}
