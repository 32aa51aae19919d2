//! `hanzo-kms`: the command-line interface to Hanzo KMS.
//!
//! Exit codes: 0 success, 1 a failed operation, 2 a usage error. A failure prints one line on
//! stderr saying what failed and why (with `--json`, a JSON object). Secrets are never printed,
//! except a decrypted plaintext on stdout, which is what `decrypt` is for.

#![forbid(unsafe_code)]

/// mimalloc rather than glibc's allocator: a signing request allocates and frees a few dozen
/// small objects on the server's threads, and glibc's `malloc`/`free` were about 5 % of its CPU.
/// Measured (docs/benchmarks.md, session 18): REST PoAI sign +4–5 % on average. Built without
/// transparent huge pages (`no_thp`): with them, `model encrypt` of a 1 GiB file peaked at
/// 62–64 MiB of RSS against 48 MiB with glibc; without, 50–51 MiB (4 GiB file).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod args;
mod atomic;
mod backend;
mod backup;
mod calldata;
mod demo;
mod model;
mod output;
mod sign;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hanzo_kms_core::{Algorithm, Error, ErrorKind, Result};
use hanzo_kms_service::archive::{ExportBound, ExportTo};
use hanzo_kms_service::{DestroyMode, Kms, MASTER_KEY_ENV, RequestCtx, Settings, load_config};
use serde_json::json;

use crate::args::{
    AuditCommand, Cli, Command, ConfigCommand, CryptArgs, KeysCommand, KeyspaceCommand,
};
use crate::backend::Backend;
use crate::output::Out;

/// A failure, and whether it was the caller's usage (exit 2) or the operation (exit 1).
struct Failure {
    error: Error,
    usage: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self {
            error,
            usage: false,
        }
    }
}

/// The command line, noting whether `--server` came from HANZO_KMS_SERVER (which `init` and
/// `serve` ignore) and treating an empty HANZO_KMS_SERVER as unset.
fn parse_cli() -> Cli {
    use clap::parser::ValueSource;
    use clap::{CommandFactory, FromArgMatches};
    let mut matches = Cli::command().get_matches();
    // `--server` is global: clap records its source at the level of the subcommand that took
    // it, so look at every level (before `from_arg_matches_mut` takes the values out).
    let mut sources = Vec::new();
    let mut level = Some(&matches);
    while let Some(m) = level {
        sources.extend(m.value_source("server"));
        level = m.subcommand().map(|(_, sub)| sub);
    }
    let mut cli = Cli::from_arg_matches_mut(&mut matches)
        .unwrap_or_else(|e| e.format(&mut Cli::command()).exit());
    cli.server_from_env =
        sources.contains(&ValueSource::EnvVariable) && !sources.contains(&ValueSource::CommandLine);
    if cli.server.as_deref().is_some_and(|s| s.trim().is_empty()) {
        cli.server = None;
    }
    cli
}

/// Mark an error in a command-line argument as a usage error.
fn usage(error: Error) -> Failure {
    Failure { error, usage: true }
}

fn main() -> ExitCode {
    install_panic_hook();
    let cli = parse_cli();
    init_tracing();
    let out = Out::new(cli.json);
    // The server uses every core; the other commands make a few calls and start faster on one
    // thread.
    let mut builder = match cli.command {
        Command::Serve { .. } => tokio::runtime::Builder::new_multi_thread(),
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
        Err(f) => {
            out.error(&f.error);
            ExitCode::from(if f.usage { 2 } else { 1 })
        }
    }
}

async fn run(cli: &Cli, out: &Out) -> Result<ExitCode, Failure> {
    match &cli.command {
        Command::Config(ConfigCommand::Check { file }) => {
            let path = file.as_ref().or(cli.config.as_ref()).ok_or_else(|| {
                usage(Error::invalid(
                    "config check needs a FILE (or --config FILE)",
                ))
            })?;
            let config = load_config(Some(path))?;
            // What `serve` checks when it starts (rate limits, the TLS files), so that a file that
            // passes here starts.
            let in_file =
                |e: Error| Error::new(ErrorKind::Config, format!("{}: {e}", path.display()));
            hanzo_kms_service::ratelimit::ConfiguredLimiter::new(&config.rate_limits)
                .map_err(in_file)?;
            hanzo_kms_service::guard::AuthGuard::new(&config.auth.failures_per_peer)
                .map_err(in_file)?;
            if let Some(tls) = &config.server.tls {
                hanzo_kms_server::tls::load(tls).map_err(in_file)?;
            }
            if out.json {
                out.json(&config.to_redacted_json());
            } else {
                out.line(format!(
                    "# {} is valid; resolved with environment overrides, secrets redacted",
                    path.display()
                ));
                out.raw(&config.to_redacted_yaml()?);
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Demo => return demo::run(out).await.map_err(Failure::from),
        Command::Audit(AuditCommand::VerifyArchive { files, public_key }) => {
            let mut report = hanzo_kms_service::archive::check_archives(files, None);
            if let Some(pk) = public_key {
                let pk = hex::decode(pk.trim_start_matches("0x"))
                    .map_err(|_| usage(Error::invalid("--public-key: expected the key in hex")))?;
                for f in files {
                    if let Ok(a) = hanzo_kms_service::archive::read_archive(f)
                        && a.public_key != pk
                    {
                        report.problems.push(format!(
                            "{}: its checkpoint is signed under another key than --public-key",
                            f.display()
                        ));
                    }
                }
            }
            return Ok(out.archive_report(&report));
        }
        Command::Poai(p @ args::PoaiCommand::Calldata { .. }) => {
            sign::offline(&sign::Offline::Poai(p), out)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Hmm(h @ args::HmmCommand::Calldata { .. }) => {
            sign::offline(&sign::Offline::Hmm(h), out)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Model(m) if !model::needs_store(m) => {
            if let args::ModelCommand::Inspect { input } = m {
                model::inspect(input, out)?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    // `init` and `serve` only ever work on the data directory; a server named in the
    // environment (for the other commands) does not stop them. `--server` given to them on the
    // command line is refused in `remote`.
    let local_only = matches!(cli.command, Command::Init | Command::Serve { .. });
    if let Some(url) = cli.server.as_deref()
        && !(local_only && cli.server_from_env)
    {
        return remote(cli, url, out).await;
    }
    let settings = settings(cli)?;
    if let Command::Serve {
        rest_addr,
        grpc_addr,
    } = &cli.command
    {
        return serve(&settings, rest_addr.as_deref(), grpc_addr.as_deref(), out)
            .await
            .map_err(Failure::from);
    }
    if let Command::Init = cli.command {
        let (kms, report) = Kms::init(&settings).await?;
        kms.close().await;
        out.init(&report);
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Keys(KeysCommand::Migrate { to, revoke_tokens }) = &cli.command {
        return migrate(&settings, to, *revoke_tokens, out)
            .await
            .map(|_| ExitCode::SUCCESS);
    }
    if let Command::Backup(b) = &cli.command {
        backup::run(&settings, b, out).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let kms = Kms::open(&settings).await?;
    let result = dispatch(&Backend::Local(&kms), &cli.command, out).await;
    kms.close().await;
    result
}

/// `keys migrate --to PROVIDER` (see its help).
async fn migrate(
    settings: &Settings,
    to: &str,
    revoke_tokens: bool,
    out: &Out,
) -> Result<(), Failure> {
    let kind: hanzo_kms_core::config::ProviderKind =
        serde_json::from_value(serde_json::Value::String(to.to_owned())).map_err(|_| {
            usage(Error::invalid(format!(
                "--to {to}: expected software, openbao (vault), aws-kms, softhsm2, thales-luna, aws-cloudhsm, fortanix, yubihsm2, yubihsm2-native, zymbit or nitrokey"
            )))
        })?;
    let kms = Kms::open(settings).await?;
    let r = async {
        let (target, source) = hanzo_kms_service::bootstrap::open_provider(settings, kind)?;
        kms.migrate_to(&RequestCtx::local(), target, revoke_tokens)
            .await
            .map(|report| (report, source))
    }
    .await;
    kms.close().await;
    let (report, source) = r?;
    if out.json {
        out.json(&json!({
            "from": report.from,
            "to": report.to,
            "keys": report.keys,
            "versions": report.versions,
            "revoked_tokens": report.revoked_tokens,
            "root_of_trust": source.to_string(),
        }));
    } else {
        out.line(format!(
            "migrated {} keys ({} versions) from {} to {} (root of trust: {source})",
            report.keys, report.versions, report.from, report.to
        ));
        if report.revoked_tokens > 0 {
            out.line(format!(
                "  revoked {} API tokens; create new ones with `hanzo-kms tokens create`",
                report.revoked_tokens
            ));
        }
        out.line(format!(
            "  now set kms.lux.provider: {} in the config of every node before starting them",
            report.to
        ));
    }
    Ok(())
}

/// `--server URL`: the same commands through the client.
async fn remote(cli: &Cli, url: &str, out: &Out) -> Result<ExitCode, Failure> {
    if matches!(
        cli.command,
        Command::Init
            | Command::Serve { .. }
            | Command::Audit(_)
            | Command::Backup(_)
            | Command::Keys(KeysCommand::Migrate { .. })
    ) {
        let hint = if matches!(cli.command, Command::Audit(_)) {
            " (over the API, read the audit log with GET /v1/audit and GET /v1/audit/verify)"
        } else {
            ""
        };
        return Err(usage(Error::invalid(format!(
            "this command works on the data directory, not with --server{hint}"
        ))));
    }
    let Some(token) = api_token(cli)? else {
        return Err(usage(Error::invalid(
            "--server needs a token: --token-file FILE, HANZO_KMS_TOKEN or --token",
        )));
    };
    let protocol = match cli.protocol {
        args::WireProtocol::Grpc => hanzo_kms_client::Protocol::Grpc,
        args::WireProtocol::Rest => hanzo_kms_client::Protocol::Rest,
    };
    let read = |what: &str, p: &Path| {
        std::fs::read(p).map_err(|e| {
            Error::new(ErrorKind::Io, format!("reading {what} {}", p.display())).with_source(e)
        })
    };
    let mut builder = hanzo_kms_client::Client::builder(url, token.trim()).protocol(protocol);
    if let Some(ca) = &cli.tls_ca {
        builder = builder.tls_ca_pem(read("--tls-ca", ca)?);
    }
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        builder = builder.tls_identity(read("--tls-cert", cert)?, read("--tls-key", key)?);
    }
    let client = builder.connect().await?;
    dispatch(&Backend::Remote(&client), &cli.command, out).await
}

/// The API token from --token (or HANZO_KMS_TOKEN) or --token-file, if one was given.
fn api_token(cli: &Cli) -> Result<Option<zeroize::Zeroizing<String>>> {
    Ok(match (&cli.token, &cli.token_file) {
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

async fn dispatch(b: &Backend<'_>, command: &Command, out: &Out) -> Result<ExitCode, Failure> {
    let ctx = RequestCtx::local();
    fn checked<'s>(b: &Backend<'_>, s: &'s str) -> Result<&'s str, Failure> {
        b.check_name(s).map(|_| s).map_err(usage)
    }
    let name = |s| checked(b, s);
    match command {
        Command::Keys(k) => match k {
            KeysCommand::Create {
                name: n,
                algorithm,
                rotation_days,
            } => {
                let n = name(n)?;
                if let Some(a) = algorithm {
                    a.parse::<Algorithm>().map_err(usage)?;
                }
                let info = b
                    .create_key(n, algorithm.as_deref(), *rotation_days)
                    .await?;
                out.key_created(&info);
            }
            KeysCommand::List { prefix } => {
                let keys = b.list_keys(prefix).await?;
                out.key_list(&keys);
            }
            KeysCommand::Show { name: n } => {
                let info = b.show_key(name(n)?).await?;
                out.key_show(&info);
            }
            KeysCommand::Rotate { name: n, due } => {
                if *due {
                    let kms = b.local("keys rotate --due").map_err(usage)?;
                    let outcomes = kms.rotate_due(&ctx, hanzo_kms_service::now_secs()).await?;
                    return Ok(out.due("rotated", &outcomes));
                }
                let n = n
                    .as_deref()
                    .ok_or_else(|| usage(Error::invalid("give a key NAME or --due")))?;
                let info = b.rotate_key(name(n)?).await?;
                out.key_changed("rotated", &info);
            }
            KeysCommand::Disable { name: n, version } => {
                let kms = b.local("keys disable").map_err(usage)?;
                let n = kms.parse_name(n).map_err(usage)?;
                let info = kms.set_enabled(&ctx, &n, *version, false).await?;
                out.key_changed("disabled", &info);
            }
            KeysCommand::Enable { name: n, version } => {
                let kms = b.local("keys enable").map_err(usage)?;
                let n = kms.parse_name(n).map_err(usage)?;
                let info = kms.set_enabled(&ctx, &n, *version, true).await?;
                out.key_changed("enabled", &info);
            }
            KeysCommand::Destroy {
                name: n,
                version,
                now,
                delay_days,
                due,
            } => {
                let kms = b.local("keys destroy").map_err(usage)?;
                if *due {
                    let outcomes = kms.destroy_due(&ctx, hanzo_kms_service::now_secs()).await?;
                    return Ok(out.due("destroyed", &outcomes));
                }
                let n = n
                    .as_deref()
                    .ok_or_else(|| usage(Error::invalid("give a key NAME or --due")))?;
                let mode = if *now {
                    DestroyMode::Now
                } else {
                    if *delay_days == 0 {
                        return Err(usage(Error::invalid(
                            "--delay-days must be at least 1; use --now to destroy immediately",
                        )));
                    }
                    DestroyMode::After(i64::from(*delay_days) * 86_400)
                };
                let n = kms.parse_name(n).map_err(usage)?;
                let info = kms.destroy(&ctx, &n, *version, mode).await?;
                let verb = if *now {
                    "destroyed"
                } else {
                    "scheduled for destruction"
                };
                out.key_changed(verb, &info);
            }
            KeysCommand::Migrate { .. } => {
                return Err(Failure::from(Error::internal("command dispatched twice")));
            }
        },
        Command::Keyspace(KeyspaceCommand::Create {
            customer,
            model,
            no_signing_keys,
        }) => {
            let keys = b.create_keyspace(customer, model, !no_signing_keys).await?;
            out.keyspace(&keys);
        }
        Command::Encrypt(CryptArgs { key, aad }) => {
            let n = name(key)?;
            let input = read_stdin(hanzo_kms_service::data::MAX_DATA_LEN)?;
            let (key, version, text) = b
                .encrypt(n, &input, aad.as_deref().unwrap_or("").as_bytes())
                .await?;
            if out.json {
                out.json(&json!({"key": key, "version": version, "ciphertext": text}));
            } else {
                out.line(&text);
            }
        }
        Command::Decrypt(CryptArgs { key, aad }) => {
            let n = name(key)?;
            let input = read_stdin(2 * hanzo_kms_service::data::MAX_DATA_LEN)?;
            let text = std::str::from_utf8(&input).map_err(|_| {
                Error::invalid("not a Hanzo KMS ciphertext: expected hkms:v<version>:<base64url>")
            })?;
            let (version, _) = hanzo_kms_service::data::parse_ciphertext(text)?;
            let plain = b
                .decrypt(n, text, aad.as_deref().unwrap_or("").as_bytes())
                .await?;
            if out.json {
                use base64::Engine;
                let b64 = zeroize::Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(plain.expose()),
                );
                out.json(&json!({"key": n, "version": version, "plaintext_base64": b64.as_str()}));
            } else {
                out.bytes(plain.expose())?;
            }
        }
        Command::Audit(AuditCommand::List { after, limit }) => {
            let kms = b.local("audit list").map_err(usage)?;
            let records = kms.audit_records(&ctx, *after, *limit).await?;
            out.audit_list(&records);
        }
        Command::Audit(AuditCommand::Verify {
            since_checkpoint,
            archive,
        }) => {
            let kms = b.local("audit verify").map_err(usage)?;
            let opts = hanzo_kms_service::archive::VerifyOptions {
                since_checkpoint: *since_checkpoint,
            };
            let report = kms.audit_verify_with(&ctx, opts).await?;
            if archive.is_empty() {
                return Ok(out.audit_verify(&report));
            }
            let archives = kms.audit_verify_archives(&ctx, archive).await?;
            return Ok(out.audit_verify_with_archives(&report, &archives));
        }
        Command::Audit(AuditCommand::Checkpoint) => {
            let kms = b.local("audit checkpoint").map_err(usage)?;
            let c = kms.audit_checkpoint(&ctx).await?;
            out.audit_checkpoint(&c);
        }
        Command::Audit(AuditCommand::Export { before, out: file }) => {
            let kms = b.local("audit export").map_err(usage)?;
            let bound = match before.as_deref() {
                None => ExportBound::Newest,
                Some(b) => parse_bound(b)?,
            };
            let e = kms
                .audit_export(&ctx, bound, &ExportTo::File(file.clone()))
                .await?;
            out.audit_export(&e);
        }
        Command::Audit(AuditCommand::Prune { archive }) => {
            let kms = b.local("audit prune").map_err(usage)?;
            let p = kms.audit_prune(&ctx, archive).await?;
            out.audit_prune(&p);
        }
        Command::Audit(AuditCommand::VerifyArchive { .. }) => {
            return Err(Failure::from(Error::internal("command dispatched twice")));
        }
        Command::Tokens(t) => tokens(b, t, out).await?,
        Command::Model(m) => model::run(b, m, out).await?,
        Command::Poai(p) => return Ok(sign::poai(b, p, out).await?),
        Command::Hmm(h) => return Ok(sign::hmm(b, h, out).await?),
        Command::Init
        | Command::Serve { .. }
        | Command::Backup(_)
        | Command::Config(_)
        | Command::Demo => {
            return Err(Failure::from(Error::internal("command dispatched twice")));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--before SEQ|TIME` of `audit export`.
fn parse_bound(s: &str) -> Result<ExportBound, Failure> {
    if let Ok(seq) = s.parse::<u64>() {
        return Ok(ExportBound::Seq(seq));
    }
    output::parse_rfc3339(s)
        .map(|t| ExportBound::TimeMs(t.saturating_mul(1000)))
        .ok_or_else(|| {
            usage(Error::invalid(format!(
                "--before: '{s}' is neither a sequence number nor an RFC 3339 UTC time (2026-12-01T00:00:00Z)"
            )))
        })
}

fn settings(cli: &Cli) -> Result<Settings> {
    Ok(Settings {
        data_dir: absolute(&cli.data_dir),
        config: load_config(cli.config.as_deref())?,
        master_key_env: std::env::var(MASTER_KEY_ENV)
            .ok()
            .filter(|v| !v.is_empty())
            .map(hanzo_kms_core::config::ConfigSecret::new),
    })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Read all of stdin, refusing more than `limit` bytes.
fn read_stdin(limit: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::new(ErrorKind::Io, "reading stdin").with_source(e))?;
    if buf.len() > limit {
        return Err(Error::invalid(format!(
            "stdin holds more than {limit} bytes, the most this command takes"
        )));
    }
    Ok(buf)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HANZO_KMS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or journald gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// A panic is a bug. Say so in one line, without the payload (which we never want to risk
/// carrying data) and without a backtrace.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let _ = writeln!(
            std::io::stderr(),
            "hanzo-kms: internal error{location}; this is a bug, please report it"
        );
    }));
}

async fn tokens(b: &Backend<'_>, cmd: &args::TokensCommand, out: &Out) -> Result<()> {
    match cmd {
        args::TokensCommand::Create {
            tenant,
            roles,
            patterns,
            description,
            ttl,
        } => {
            let (info, token) = b
                .create_token(tenant, roles, patterns, description, *ttl)
                .await?;
            if out.json {
                let mut v = serde_json::to_value(&info)
                    .map_err(|e| Error::internal(format!("encoding JSON: {e}")))?;
                v["token"] = serde_json::Value::String(token.as_str().to_owned());
                out.json(&v);
            } else {
                out.line(format!(
                    "created token {} for tenant {} (roles: {})",
                    info.id,
                    info.tenant,
                    info.roles.join(", ")
                ));
                if let Some(at) = info.expires_at {
                    out.line(format!("  expires at {at} (Unix seconds)"));
                }
                out.line(token.as_str());
                out.line("  This is the only time the token is shown. Send it as: Authorization: Bearer <token>");
            }
        }
        args::TokensCommand::List => {
            let list = b.list_tokens().await?;
            if out.json {
                out.json(&serde_json::json!(list));
            } else if list.is_empty() {
                out.line("no tokens");
            } else {
                for t in &list {
                    let state = if t.revoked_at.is_some() {
                        "revoked"
                    } else if t
                        .expires_at
                        .is_some_and(|at| at <= hanzo_kms_service::now_secs())
                    {
                        "expired"
                    } else {
                        "active"
                    };
                    let keys = if t.patterns.is_empty() {
                        "all keys".to_owned()
                    } else {
                        t.patterns.join(" ")
                    };
                    out.line(format!(
                        "{}  {state:<7}  tenant {}  roles {}  {keys}  {}",
                        t.id,
                        t.tenant,
                        t.roles.join(","),
                        t.description
                    ));
                }
            }
        }
        args::TokensCommand::Revoke { id } => {
            let info = b.revoke_token(id).await?;
            if out.json {
                out.json(&serde_json::json!(info));
            } else {
                out.line(format!(
                    "revoked token {} (tenant {})",
                    info.id, info.tenant
                ));
            }
        }
    }
    Ok(())
}

/// `hanzo-kms serve`: open (or, the first time, initialise) the data directory and serve REST
/// until SIGINT or SIGTERM.
async fn serve(
    settings: &Settings,
    rest_addr: Option<&str>,
    grpc_addr: Option<&str>,
    out: &Out,
) -> Result<ExitCode> {
    use hanzo_kms_service::Role;
    // Checked before anything is opened or initialised: a bad `rate_limits` leaves no trace.
    let limiter = std::sync::Arc::new(hanzo_kms_service::ratelimit::ConfiguredLimiter::new(
        &settings.config.rate_limits,
    )?);
    let guard = std::sync::Arc::new(hanzo_kms_service::guard::AuthGuard::new(
        &settings.config.auth.failures_per_peer,
    )?);
    let kms = match Kms::open(settings).await {
        Ok(kms) => kms,
        Err(e) if e.kind() == ErrorKind::NotInitialized => {
            let (kms, report) = Kms::init(settings).await?;
            out.init(&report);
            let (info, token) = kms
                .create_token(
                    &RequestCtx::local(),
                    hanzo_kms_service::tokens::ALL_TENANTS,
                    &[Role::Admin],
                    &[],
                    "first admin token (hanzo-kms serve)",
                )
                .await?;
            let path = settings.data_dir.join("admin.token");
            hanzo_kms_service::bootstrap::write_private_file(
                &path,
                format!("{}\n", token.expose()).as_bytes(),
            )?;
            out.line(format!(
                "  admin token: {} (mode 0600; token id {}, all tenants). Create narrower tokens with it, then revoke it.",
                path.display(),
                info.id
            ));
            kms
        }
        Err(e) => return Err(e),
    };
    let config = kms.config().clone();
    let kms = kms.with_limiter(limiter.clone()).with_auth_guard(guard);
    let mut opts = hanzo_kms_server::Options::from_config(&config);
    if let Some(a) = rest_addr {
        opts.rest_addr = a.to_owned();
    }
    match grpc_addr {
        Some("off") => opts.grpc_addr = None,
        Some(a) => opts.grpc_addr = Some(a.to_owned()),
        None => {}
    }
    let server = hanzo_kms_server::Server::bind(kms, Some(limiter), &opts).await?;
    let addr = server.local_addr()?;
    let grpc = server.grpc_addr()?;
    let scheme = if server.is_tls() { "https" } else { "http" };
    if out.json {
        out.json(
            &json!({"rest": format!("{scheme}://{addr}"), "grpc": grpc.map(|g| format!("{scheme}://{g}"))}),
        );
    } else {
        let grpc = grpc
            .map(|g| format!(", {scheme}://{g} (gRPC)"))
            .unwrap_or_default();
        out.line(format!(
            "listening on {scheme}://{addr} (REST){grpc}; SIGINT or SIGTERM stops"
        ));
    }
    server.run(shutdown_signal()).await?;
    if !out.json {
        out.line("stopped");
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
