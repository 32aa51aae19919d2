//! The command line of `hanzo-kms-bench`. Its subcommands, options and `--json` output are those
//! `hanzo-kms bench …` had before the load generators left the deployed binary; they are a
//! contract for scripts (scripts/bench-ha.sh) and for docs/benchmarks.md.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hanzo_kms_core::config::ConfigSecret;

/// Measure throughput against reference implementations on this machine.
///
/// The load generators and benchmarks of Hanzo KMS, apart from the `hanzo-kms` binary that is
/// deployed. docs/benchmarks.md records what they measured and how to run them.
#[derive(Debug, Parser)]
#[command(name = "hanzo-kms-bench", version, max_term_width = 100)]
pub struct Cli {
    /// Configuration file (YAML, the HIP-005 format) for `sign --provider`. Environment
    /// variables HANZO_KMS__SECTION__KEY=value override it.
    #[arg(long, global = true, env = "HANZO_KMS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print results as JSON objects on stdout (errors as JSON on stderr).
    #[arg(long, global = true)]
    pub json: bool,

    /// The API token for `server --url` (prefer HANZO_KMS_TOKEN or --token-file: a command line
    /// is visible to other users of the machine).
    #[arg(
        long,
        global = true,
        env = "HANZO_KMS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        conflicts_with = "token_file",
        value_parser = parse_secret
    )]
    pub token: Option<ConfigSecret>,

    /// Read the API token for `server --url` from this file (e.g. DATA_DIR/admin.token).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The REST server under load on loopback: PoAI sign and 1 KiB encrypt at a given
    /// concurrency, with req/s, p50/p95/p99 latency and commits (fsyncs) per request, and the
    /// CPU the load generator itself took per request (on loopback it shares the cores with the
    /// server).
    ///
    /// Without --url it starts a server in this process on a throwaway data directory (software
    /// provider); with --url it drives a running `hanzo-kms serve`, with the token from
    /// --token-file, HANZO_KMS_TOKEN or --token (it needs admin on tenant `bench`, or all
    /// tenants).
    Server {
        /// A running server, e.g. http://127.0.0.1:8200. Repeat for several nodes of one
        /// store (PostgreSQL): the connections are spread over them in turn.
        #[arg(long)]
        url: Vec<String>,
        /// The same server's gRPC address (with --url), e.g. http://127.0.0.1:8201; without it
        /// the gRPC figures are skipped.
        #[arg(long, requires = "url")]
        grpc_url: Option<String>,
        /// Concurrent connections (keep-alive), one request in flight each.
        #[arg(long, default_value_t = 16, value_parser = parse_count)]
        concurrency: usize,
        /// Seconds per measurement (more than 0, at most a day).
        #[arg(long, default_value_t = 5.0, value_parser = parse_seconds)]
        seconds: f64,
        /// Attestations per gRPC SignPoaiBatch call.
        #[arg(long, default_value_t = 256, value_parser = parse_count)]
        batch: usize,
        /// Offered rate (requests/s, open loop) for the latency figures; 0 skips them. A thread
        /// of its own paces the requests, and each latency counts from when its request was
        /// due. If the server falls behind, the backlog is still sent for as long again as the
        /// figure; what is left then is reported as never sent.
        #[arg(long, default_value_t = 5000.0, value_parser = parse_rate)]
        rate: f64,
        /// Seconds each latency figure first runs at its rate without counting, so that it
        /// measures the steady state at that rate, not the recovery from the throughput figure
        /// before it (whose backlog of WAL pages the background checkpoint is still copying).
        /// 0 measures from the first request.
        #[arg(long, default_value_t = 2.0, value_parser = parse_warmup)]
        warmup: f64,
        /// Send each PoAI attestation with a nonce that sorts by time (as the client crate's
        /// `time_ordered_nonce` makes them: nanoseconds, big-endian, then 16 random bytes)
        /// instead of none, which the server fills with 32 random bytes. The replay index then
        /// grows at its end instead of at random places; docs/benchmarks.md compares the two.
        #[arg(long)]
        ordered_nonces: bool,
        /// Where to measure the disk reference: appends of 4 KiB, each followed by fdatasync,
        /// as the server's WAL is written. Every durable request waits for at least one such
        /// sync, so the disk's own latency is a floor under the latency figures. Default: the
        /// in-process server's data directory, or the system's temporary directory with --url
        /// (give the server's data directory if that is on another disk).
        #[arg(long, value_name = "DIR")]
        disk_dir: Option<std::path::PathBuf>,
        /// Before the figures, sign this many PoAI attestations through gRPC SignPoaiBatch
        /// (1,024 per call), so that the replay index already holds that many nonce records, as
        /// a store in service does. A fresh store's index is small and cheap to insert into;
        /// docs/benchmarks.md shows how much a large one costs. Then it waits half the prefill's
        /// time (2 to 60 s) while the server writes the backlog out. Needs the gRPC
        /// address.
        #[arg(long, default_value_t = 0, value_name = "NONCES")]
        prefill: u64,
    },
    /// Model-weight encryption: in memory against raw aws-lc-rs and `openssl speed`, and file
    /// to file against `cp` + `sync`, with peak RSS.
    Model {
        /// Bytes for the in-memory runs.
        #[arg(long, default_value = "1GiB", value_name = "SIZE")]
        size: String,
        /// Bytes for the file-to-file runs (0 skips them).
        #[arg(long, default_value = "1GiB", value_name = "SIZE")]
        file_size: String,
        /// Where the file-to-file runs put their files (default: the system temp directory).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Segment size for our format.
        #[arg(long, default_value = "1MiB", value_name = "SIZE")]
        segment_size: String,
        /// Worker threads (default: all cores).
        #[arg(long, value_parser = parse_count)]
        threads: Option<usize>,
        /// Repetitions of each measurement; the best is reported.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
        repeat: u32,
    },
    /// PoAI signing: raw libsecp256k1 against our path (EIP-712 hashing + provider sign) on one
    /// thread and all cores; verification; durable signing through the pipeline with group
    /// commit (fsyncs per signature); Merkle batches of 64 and 1024.
    Sign {
        /// Seconds per measurement (more than 0, at most a day).
        #[arg(long, default_value_t = 3.0, value_parser = parse_seconds)]
        seconds: f64,
        /// Worker threads for "all cores" (default: all cores).
        #[arg(long, value_parser = parse_count)]
        threads: Option<usize>,
        /// Concurrent requests for the durable (store) measurement.
        #[arg(long, default_value_t = 64, value_parser = parse_count)]
        concurrency: usize,
        /// Measure a PKCS#11 provider instead (e.g. softhsm2): secp256k1 and P-256 signs through
        /// the provider against a raw C_Sign loop on the same token, at 1 and max_sessions
        /// threads, plus Merkle-batched PoAI on the HSM key. The token comes from the config's
        /// `kms.lux.<provider>` section; for softhsm2 without one, a throwaway token is made.
        #[arg(long, value_name = "PROVIDER")]
        provider: Option<String>,
        /// Instead of timing, run exactly N signatures per path on one thread, each path in its
        /// own never-inlined function, and exit: for an instruction count under
        /// `valgrind --tool=callgrind`, which does not depend on the machine's load
        /// (docs/benchmarks.md shows how).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
}

/// A secret argument (the API token): held in zeroizing memory, and `Debug` (of [`Cli`]) shows
/// `<redacted>`.
fn parse_secret(s: &str) -> Result<ConfigSecret, std::convert::Infallible> {
    Ok(ConfigSecret::new(s))
}

/// The longest a benchmark measurement may run: a day.
const MAX_BENCH_SECONDS: f64 = 86_400.0;

fn parse_number(s: &str, what: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of {what}"))?;
    if !v.is_finite() {
        return Err(format!("'{s}' is not a finite number of {what}"));
    }
    Ok(v)
}

/// A measurement's length: more than 0 and at most a day.
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    let v = parse_number(s, "seconds")?;
    if v <= 0.0 || v > MAX_BENCH_SECONDS {
        return Err(format!(
            "'{s}' seconds is out of range: give more than 0 and at most {MAX_BENCH_SECONDS}"
        ));
    }
    Ok(v)
}

/// A warm-up: 0 (none) up to a day.
pub fn parse_warmup(s: &str) -> Result<f64, String> {
    let v = parse_number(s, "seconds")?;
    if !(0.0..=MAX_BENCH_SECONDS).contains(&v) {
        return Err(format!(
            "'{s}' seconds is out of range: give 0 (no warm-up) up to {MAX_BENCH_SECONDS}"
        ));
    }
    Ok(v)
}

/// An offered rate in requests per second: 0 (skip the latency figures) up to 10 million.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let v = parse_number(s, "requests per second")?;
    if !(0.0..=1e7).contains(&v) {
        return Err(format!(
            "'{s}' requests/s is out of range: give 0 (skip the latency figures) up to 10000000"
        ));
    }
    Ok(v)
}

/// A count of connections, requests or items: 1 to 100,000.
pub fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a count from 1 to 100000")),
    }
}

/// Parse `1GiB`, `512MiB`, `64KiB`, `4096` (binary units; `K`, `M`, `G` mean the same).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size like 1GiB, 512MiB or 4096"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        "t" | "tib" | "tb" => 1 << 40,
        _ => {
            return Err(format!(
                "'{s}' has an unknown unit; use KiB, MiB, GiB or TiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every option of every command says what it takes in `--help`.
    #[test]
    fn every_option_has_help() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                let builtin = matches!(a.get_id().as_str(), "help" | "version");
                if a.get_long().is_some() && !builtin && a.get_help().is_none() {
                    missing.push(format!("{path} --{}", a.get_long().unwrap_or_default()));
                }
            }
            for sub in c.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "hanzo-kms-bench", &mut missing);
        assert!(missing.is_empty(), "options without help: {missing:?}");
    }

    /// clap's own consistency checks (conflicts and requirements name real arguments).
    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// The parsed command line holds the API token, and its `Debug` does not show it.
    #[test]
    fn debug_of_the_command_line_hides_the_token() {
        use clap::Parser;
        let cli = super::Cli::try_parse_from([
            "hanzo-kms-bench",
            "--token",
            "hkms_secret_token_value",
            "server",
            "--url",
            "http://127.0.0.1:8200",
        ])
        .unwrap();
        assert_eq!(
            cli.token.as_ref().map(|t| t.expose()),
            Some("hkms_secret_token_value")
        );
        let shown = format!("{cli:?}");
        assert!(!shown.contains("hkms_secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
