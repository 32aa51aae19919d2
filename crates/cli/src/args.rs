//! The command line. Names of commands and options are a contract for scripts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use hanzo_kms_core::config::ConfigSecret;

/// Hanzo KMS: key management for AI infrastructure.
///
/// Encrypts model weights and data, signs Proof-of-AI attestations and compute-marketplace
/// settlements, and keeps every customer's and model's keys apart. Keys are named
/// purpose:customer:name, for example model:acme:gpt4 (purposes: model, data, poai, hmm, api).
///
/// Start with `hanzo-kms init`, then `hanzo-kms keyspace create --customer acme --model gpt4`.
/// `hanzo-kms demo` walks through the whole flow in a throwaway directory.
#[derive(Debug, Parser)]
#[command(name = "hanzo-kms", version, max_term_width = 100)]
pub struct Cli {
    /// Data directory: holds kms.db (the store) and master.key.
    #[arg(
        long,
        global = true,
        env = "HANZO_KMS_DATA_DIR",
        default_value = "./hanzo-kms-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// Configuration file (YAML, the HIP-005 format). Environment variables
    /// HANZO_KMS__SECTION__KEY=value override it.
    #[arg(long, global = true, env = "HANZO_KMS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print results as JSON objects on stdout (errors as JSON on stderr).
    #[arg(long, global = true)]
    pub json: bool,

    /// Run the command against this server instead of the data directory: the gRPC address
    /// (http://127.0.0.1:8201), or the REST one with --protocol rest. Works for keys
    /// (create, list, show, rotate), keyspace, encrypt, decrypt, model, poai, hmm and tokens.
    /// `init` and `serve` always work on the data directory: they ignore HANZO_KMS_SERVER (and
    /// refuse --server). An empty HANZO_KMS_SERVER counts as unset.
    #[arg(long, global = true, env = "HANZO_KMS_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// Whether `server` came from HANZO_KMS_SERVER rather than the command line (set by `main`).
    #[arg(skip)]
    pub server_from_env: bool,

    /// The API token for --server (prefer HANZO_KMS_TOKEN or --token-file: a command line is
    /// visible to other users of the machine).
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

    /// Read the API token for --server from this file (e.g. DATA_DIR/admin.token).
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// The API --server speaks.
    #[arg(long, global = true, value_enum, default_value = "grpc")]
    pub protocol: WireProtocol,

    /// For an https:// --server: trust this CA certificate (PEM) instead of the system's roots.
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// For a server that requires mutual TLS: this client certificate (PEM; with --tls-key).
    #[arg(long, global = true, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The API a `--server` speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WireProtocol {
    Grpc,
    Rest,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new data directory: a master key (mode 0600) and an empty store.
    ///
    /// The master key is written to DIR/master.key, unless HANZO_KMS_MASTER_KEY (64 hex
    /// characters) is set, in which case that key is used and no file is written. Back the
    /// master key up: without it no key in the store can be used.
    Init,

    /// Run the server: REST on server.rest_addr (default 127.0.0.1:8200) and gRPC on
    /// server.grpc_addr (default 127.0.0.1:8201, with server reflection).
    ///
    /// On the first start with an empty data directory it initialises it, like `init`, and
    /// writes a first all-tenant admin token to DIR/admin.token (mode 0600); both paths are
    /// printed once. Stops gracefully on SIGINT or SIGTERM, finishing requests in flight.
    /// Example: curl -H "Authorization: Bearer $(cat DIR/admin.token)" http://127.0.0.1:8200/v1/keys
    Serve {
        /// Listen here instead of server.rest_addr.
        #[arg(long, value_name = "ADDR")]
        rest_addr: Option<String>,
        /// Serve gRPC here instead of server.grpc_addr ("off" serves REST only).
        #[arg(long, value_name = "ADDR")]
        grpc_addr: Option<String>,
    },

    /// Create, inspect, rotate, disable, enable and destroy keys.
    #[command(subcommand)]
    Keys(KeysCommand),

    /// Model keyspaces (the spec's CreateModelKeyspace).
    #[command(subcommand)]
    Keyspace(KeyspaceCommand),

    /// Encrypt stdin to stdout with an aes-256-gcm key (small data, at most 4 MiB).
    ///
    /// Prints `hkms:v<version>:<base64url>`. The version lets `decrypt` find the right key version
    /// after rotation.
    Encrypt(CryptArgs),

    /// Decrypt an hkms:v… ciphertext from stdin to stdout.
    ///
    /// Fails with "authentication failed" (and writes nothing) if the ciphertext was made with
    /// another key or AAD, or was changed in any way.
    Decrypt(CryptArgs),

    /// Encrypt, decrypt, rewrap and inspect model-weight files (envelope encryption).
    ///
    /// The model's key (model:customer:name) wraps a fresh data key per file; the weights are
    /// encrypted here, in this process, in 1 MiB AES-256-GCM segments on all cores. Output is
    /// written to a temporary file, fsynced, and renamed into place only when complete.
    #[command(subcommand)]
    Model(ModelCommand),

    /// Proof-of-AI attestations: EIP-712 typed data signed with secp256k1 (or ML-DSA-65).
    #[command(subcommand)]
    Poai(PoaiCommand),

    /// Compute-marketplace settlements: EIP-712, secp256k1; each attestation is paid once.
    #[command(subcommand)]
    Hmm(HmmCommand),

    /// API tokens for the server: bearer credentials scoped to a tenant, with roles and optional
    /// key-name patterns. Works offline on the data directory, or online with --server. A token is printed once, at
    /// creation; only an HMAC of it (under a provider key) is stored.
    #[command(subcommand)]
    Tokens(TokensCommand),

    /// Read and verify the hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),

    /// Back every key up into one authenticated bundle, and restore it (into this provider or
    /// another). The bundle format is in docs/backup.md.
    #[command(subcommand)]
    Backup(BackupCommand),

    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),

    /// Walk through the spec's complete inference flow (keys, weights, PoAI, HMM) in a throwaway data directory.
    Demo,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key.
    ///
    /// The algorithm defaults by purpose: model and data keys are aes-256-gcm; poai and hmm keys
    /// use the algorithm in the config (ECDSA-secp256k1 unless changed). api keys need
    /// --algorithm.
    Create {
        /// Key name, purpose:customer:name (e.g. model:acme:gpt4).
        name: String,
        /// aes-256-gcm, secp256k1, p256, ed25519 or ml-dsa-65.
        #[arg(long, short)]
        algorithm: Option<String>,
        /// Rotate automatically every N days (0: never). Model keys default to the config's
        /// key_rotation_days (90); other keys never rotate by default.
        #[arg(long, value_name = "N")]
        rotation_days: Option<u32>,
    },
    /// List keys, optionally only those whose name starts with a prefix.
    List {
        /// Only keys whose name starts with this, e.g. `model:acme:`.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Show a key: versions, state, origin, public key and (secp256k1) Ethereum address.
    Show { name: String },
    /// Make a new primary version (older versions still decrypt and verify), or with --due,
    /// rotate every key past its rotation period.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["name", "due"])))]
    Rotate {
        name: Option<String>,
        /// Rotate every key whose rotation period has passed (model keys: 90 days by default).
        #[arg(long)]
        due: bool,
    },
    /// Refuse every operation with a key (or one non-primary version) until enabled again.
    Disable {
        name: String,
        /// Disable only this version (not the primary one); the others stay usable.
        #[arg(long)]
        version: Option<u32>,
    },
    /// Enable a disabled key or version; cancels a scheduled destruction.
    Enable {
        name: String,
        /// Enable only this version.
        #[arg(long)]
        version: Option<u32>,
    },
    /// Destroy a key's material. By default destruction is scheduled (7 days) and can be
    /// cancelled with `keys enable`; --now destroys at once. Destroyed names are never reused.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["name", "due"])))]
    Destroy {
        name: Option<String>,
        /// Destroy only this (non-primary) version, immediately. Needs --now.
        #[arg(long, requires = "now")]
        version: Option<u32>,
        /// Destroy immediately instead of scheduling.
        #[arg(long, conflicts_with = "delay_days")]
        now: bool,
        /// Days until a scheduled destruction takes effect.
        #[arg(long, default_value_t = 7, value_name = "DAYS")]
        delay_days: u32,
        /// Carry out every scheduled destruction whose time has come.
        #[arg(long, conflicts_with_all = ["name", "now", "version"])]
        due: bool,
    },
    /// Move every key of the store to another provider, in one transaction (stop every node
    /// first). Each version is exported wrapped under a one-time key and imported into the
    /// target: signing keys become hsm-wrapped on a PKCS#11 token, AES keys token objects; on a
    /// remote key service (openbao, aws-kms) every key becomes kms-wrapped under its root KEK.
    /// The target comes from its section of the config (kms.lux.softhsm2, kms.lux.openbao, …;
    /// `software` uses the master key file, created if missing). Keys that cannot leave their
    /// HSM or key service stop it before anything changes. Afterwards set kms.lux.provider to
    /// the target.
    ///
    /// Example: hanzo-kms --config kms.yaml keys migrate --to softhsm2 --revoke-tokens
    Migrate {
        /// The target provider: software, openbao (vault), aws-kms, softhsm2, thales-luna,
        /// aws-cloudhsm, fortanix, yubihsm2, yubihsm2-native, zymbit or nitrokey.
        #[arg(long, value_name = "PROVIDER")]
        to: String,
        /// API tokens are MACs under the old provider's key and cannot move: revoke them in the
        /// same transaction (create new ones afterwards). Without this, active tokens refuse.
        #[arg(long)]
        revoke_tokens: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyspaceCommand {
    /// Create model:C:M (aes-256-gcm) and, unless --no-signing-keys, poai:C:M and hmm:C:M with
    /// the configured signing algorithms. All or nothing.
    Create {
        /// The customer (tenant), e.g. acme.
        #[arg(long)]
        customer: String,
        /// The model, e.g. gpt4.
        #[arg(long)]
        model: String,
        /// Create only the model key, not poai:C:M and hmm:C:M.
        #[arg(long)]
        no_signing_keys: bool,
    },
}

#[derive(Debug, Args)]
pub struct CryptArgs {
    /// Key name (an aes-256-gcm key, e.g. data:acme:users).
    #[arg(long)]
    pub key: String,
    /// Additional authenticated data: must be given again, identically, to decrypt.
    #[arg(long)]
    pub aad: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token. Prints it once (`hkms_<id>_<secret>`); store it like a password.
    ///
    /// Example: hanzo-kms tokens create --tenant acme --role decrypt --keys 'model:acme:*'
    Create {
        /// The tenant (customer) the token acts for; it sees only this tenant's keys. `*` makes
        /// an all-tenant token (only an all-tenant admin may create one).
        #[arg(long)]
        tenant: String,
        /// A role: admin, manage (create, rotate, disable, destroy keys, without using them), audit,
        /// decrypt, encrypt, sign or verify. Repeat for several. `audit`
        /// needs `--tenant '*'`: the audit log spans all tenants.
        #[arg(long = "role", required = true, value_name = "ROLE")]
        roles: Vec<String>,
        /// Limit the token to keys matching PATTERN (purpose:tenant:name, `*` allowed in
        /// purpose and name). Repeat for several; none means every key of the tenant.
        #[arg(long = "keys", value_name = "PATTERN")]
        patterns: Vec<String>,
        /// A note for `tokens list` (who or what uses it).
        #[arg(long, default_value = "")]
        description: String,
        /// Stop working after this long: `3600`, `90s`, `15m`, `12h`, `30d` (1 s to 10 years).
        /// Without it the token works until revoked.
        #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
        ttl: Option<u64>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id; it stops working at once.
    Revoke {
        /// The id printed by `tokens create` or `tokens list`.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print audit records, oldest first.
    List {
        /// Only records with a sequence number above SEQ.
        #[arg(long, default_value_t = 0, value_name = "SEQ")]
        after: u64,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Recompute the hash chain from the oldest record the store holds; exit 1 if any record
    /// was edited, deleted or reordered, a checkpoint's signature does not verify, or records
    /// were pruned that no export covers. With --archive, also check those archive files: each
    /// alone, that they link to each other and to the store, and that none named by an export
    /// record is missing.
    ///
    /// Example: hanzo-kms audit verify --archive archives/*.jsonl
    Verify {
        /// Start at the newest signed checkpoint instead of the oldest record (every
        /// checkpoint's signature is still checked): fast on a long log.
        #[arg(long)]
        since_checkpoint: bool,
        /// Archives written by `audit export`: one or more after the flag (a shell glob
        /// works), or the flag repeated.
        #[arg(long, value_name = "FILE", num_args = 1..)]
        archive: Vec<PathBuf>,
    },
    /// Append a checkpoint: a record that pins the newest record's hash, signed with the audit
    /// key (api:system:audit, P-256, made in the provider the first time). `serve` makes one
    /// every audit.checkpoint_interval_secs; an export ends at a checkpoint.
    Checkpoint,
    /// Write the records from the oldest one the store holds up to a signed checkpoint to a new
    /// file that verifies alone (docs/audit-archive.md), and record the export (its range and
    /// the file's SHA-256) in the log. Then `audit prune --archive FILE` may delete them.
    ///
    /// Example: hanzo-kms audit export --before 2026-12-01T00:00:00Z --out audit-1.jsonl
    Export {
        /// Only records before this: a sequence number, or an RFC 3339 UTC time
        /// (2026-12-01T00:00:00Z). The archive ends at the newest checkpoint before it.
        /// Default: the newest checkpoint.
        #[arg(long, value_name = "SEQ|TIME")]
        before: Option<String>,
        /// The archive to write. It must not exist yet.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Delete the records an exported archive holds from the store. The file must verify, be
    /// signed by this store's audit key and be named by an export record: records leave the
    /// store only into an archive. Keep the archive safe first (docs/operations.md).
    Prune {
        /// The archive `audit export` wrote.
        #[arg(long, value_name = "FILE")]
        archive: PathBuf,
    },
    /// Check archive files without a store: each alone, that they link to each other and that
    /// none named by another's export record is missing. Checkpoints verify under the public
    /// key the archives carry, or under --public-key.
    VerifyArchive {
        /// Archives written by `audit export`.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The audit key's public key (hex, SEC1) the checkpoints must verify under, as
        /// `keys show api:system:audit` prints it.
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Write a bundle: every key's metadata and versions, each version's material sealed under
    /// a backup key. The backup key comes from a passphrase (argon2id; --passphrase-file or
    /// HANZO_KMS_BACKUP_PASSPHRASE) or is random and split into Shamir shares (--shares N
    /// --threshold T), written to FILE.share-1 … FILE.share-N (mode 0600; hand them to N
    /// different people). Keys that cannot leave their HSM are named and stop the backup,
    /// unless --skip-unexportable.
    ///
    /// Example: hanzo-kms backup create --out kms.bundle --shares 5 --threshold 3
    #[command(group(clap::ArgGroup::new("secret").args(["passphrase_file", "shares"])))]
    Create {
        /// Where to write the bundle (mode 0600). It must not exist yet.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Read the passphrase from this file (first line). Default: HANZO_KMS_BACKUP_PASSPHRASE.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Split the backup key into this many shares (2 to 255) instead of a passphrase.
        #[arg(long, value_name = "N", requires = "threshold")]
        shares: Option<u8>,
        /// Shares needed to restore (2 to --shares).
        #[arg(long, value_name = "T", requires = "shares")]
        threshold: Option<u8>,
        /// Leave out keys that cannot be exported (listed in the output) instead of failing.
        #[arg(long)]
        skip_unexportable: bool,
    },
    /// Restore a bundle into this data directory's store and provider, in one transaction.
    ///
    /// An uninitialised data directory is initialised first (a new master key, as `init`).
    /// Keys already present exactly as in the bundle are skipped, so restoring twice changes
    /// nothing. A store that holds other keys is refused unless --merge; keys present with other
    /// contents are conflicts, listed, and refuse the whole restore.
    Restore {
        /// The bundle `backup create` wrote.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Read the passphrase from this file. Default: HANZO_KMS_BACKUP_PASSPHRASE.
        #[arg(long, value_name = "FILE", conflicts_with = "shares")]
        passphrase_file: Option<PathBuf>,
        /// A share file (FILE.share-K). Repeat until the threshold is met.
        #[arg(long = "share", value_name = "FILE")]
        shares: Vec<PathBuf>,
        /// Add the bundle's keys to a store that already holds other keys.
        #[arg(long)]
        merge: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load a config file (with environment overrides), check it, and print the resolved
    /// config with secrets redacted.
    Check {
        /// The file; defaults to --config.
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Encrypt a weights file under the model's key (the spec's EncryptModelWeights).
    Encrypt {
        /// The model: customer:model (e.g. acme:gpt4) or its key name model:acme:gpt4.
        #[arg(long)]
        model: String,
        /// The weights file to encrypt (any format; .safetensors keeps `model tensors` usable).
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the encrypted file. It appears only when complete, replacing any
        /// file there.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Text stored, authenticated but not encrypted, in the header (at most 64 KiB).
        #[arg(long)]
        metadata: Option<String>,
        /// Plaintext bytes per segment: a power of two from 4KiB to 64MiB.
        #[arg(long, default_value = "1MiB", value_name = "SIZE")]
        segment_size: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Decrypt a model file (the spec's DecryptModelWeights), or with --tensor only one tensor
    /// of a .safetensors file, decrypting only the segments that hold it.
    Decrypt {
        /// The model: customer:model (e.g. acme:gpt4) or its key name model:acme:gpt4.
        #[arg(long)]
        model: String,
        /// The encrypted file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the plaintext (owner-only). It appears only when complete and
        /// authenticated, replacing any file there.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Write only this tensor's raw bytes (safetensors files).
        #[arg(long, value_name = "NAME")]
        tensor: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Move a file to its key's primary version by rewriting only the header (after
    /// `keys rotate`). The segments are copied unchanged.
    Rewrap {
        /// The encrypted file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Write here instead of replacing the input.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print a model file's header: key, version, model, sizes, segments. Needs no key.
    Inspect {
        /// The encrypted file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
    /// List the tensors of an encrypted .safetensors file, decrypting only its header segments.
    Tensors {
        /// The model: customer:model (e.g. acme:gpt4) or its key name model:acme:gpt4.
        #[arg(long)]
        model: String,
        /// The encrypted .safetensors file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = parse_count)]
    pub threads: Option<usize>,
    /// Never show a progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// A secret argument (the API token): held in zeroizing memory, and `Debug` (of [`Cli`]) shows
/// `<redacted>`.
fn parse_secret(s: &str) -> Result<ConfigSecret, std::convert::Infallible> {
    Ok(ConfigSecret::new(s))
}

/// A token lifetime in seconds: `3600`, `90s`, `15m`, `12h`, `30d`; 1 s to 10 years.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 3600, 90s, 15m, 12h or 30d"))?;
    let mult: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("'{s}' has an unknown unit; use s, m, h or d")),
    };
    let max = hanzo_kms_service::MAX_TOKEN_TTL_SECS;
    match n.checked_mul(mult) {
        Some(v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is out of range: 1 second to 10 years")),
    }
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

#[derive(Debug, Subcommand)]
pub enum PoaiCommand {
    /// Sign an attestation (JSON: model_id, input_hash, output_hash, timestamp, compute_time_ms,
    /// node_id, optional nonce). Prints {attestation, digest, signature, signer, algorithm, key,
    /// version}. A missing nonce is filled in: with 32 random bytes locally, or, with --server,
    /// by the client with one that sorts by time (docs/signing.md).
    Sign {
        /// The signing key, e.g. poai:acme:gpt4.
        #[arg(long)]
        key: String,
        /// The attestation, a JSON file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
    /// Verify a signed attestation; prints {valid, reason} and exits 0 only if valid.
    Verify {
        /// The signed attestation, as `poai sign` printed it.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
    /// Sign many attestations (JSON lines) with one signature over their Merkle root. Prints one
    /// JSON line per item: the item with its inclusion proof and the batch signature.
    SignBatch {
        /// The signing key, e.g. poai:acme:gpt4.
        #[arg(long)]
        key: String,
        /// The attestations, one JSON object per line.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
    /// Verify one batch item (a line printed by sign-batch) on its own.
    VerifyItem {
        /// One line of `poai sign-batch`'s output, in a file of its own.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
    /// Print the ABI-encoded call data that submits a signed attestation or a batch item to the
    /// on-chain verifier (docs/onchain.md): recordAttestation or recordBatchItem, or with
    /// --verify the view call verify or verifyBatchProof. Offline: reads only the file.
    /// Prints 0x… (with --json: {function, calldata}).
    Calldata {
        /// A `poai sign` output, or one line of `poai sign-batch`'s output, in a file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Encode the view call (verify, verifyBatchProof) instead of the recording transaction.
        #[arg(long)]
        verify: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum HmmCommand {
    /// Sign a settlement (JSON: job_id, provider, consumer, amount, attestation_digest,
    /// timestamp, optional expiry and nonce) for the attestation it pays for. That attestation
    /// must verify, be signed by a PoAI key of the same tenant as the settling key, and have the
    /// settlement's attestation_digest. An attestation can be settled only once.
    Sign {
        /// The signing key, e.g. hmm:acme:gpt4.
        #[arg(long)]
        key: String,
        /// The settlement, a JSON file.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// The attestation it pays for: a signed attestation as `poai sign` printed it, or one
        /// batch item (a line of `poai sign-batch`'s output).
        #[arg(long, value_name = "FILE")]
        attestation: PathBuf,
    },
    /// Verify a signed settlement; prints {valid, reason} and exits 0 only if valid.
    Verify {
        /// The signed settlement, as `hmm sign` printed it.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Also check that this signed attestation verifies and is the one the settlement pays for.
        #[arg(long, value_name = "FILE")]
        attestation: Option<PathBuf>,
    },
    /// Print the ABI-encoded call data that settles a signed settlement on chain
    /// (docs/onchain.md): settleWithAttestation with --attestation, settleWithBatchItem with
    /// --item, or settle (its attestation recorded earlier) with neither. Offline: reads only the
    /// files. Prints 0x… (with --json: {function, calldata}).
    Calldata {
        /// The signed settlement, as `hmm sign` printed it.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// The signed attestation it pays for, as `poai sign` printed it, verified in the same call.
        #[arg(long, value_name = "FILE", conflicts_with = "item")]
        attestation: Option<PathBuf>,
        /// The batch item it pays for (one line of `poai sign-batch`), verified in the same call.
        #[arg(long, value_name = "FILE")]
        item: Option<PathBuf>,
    },
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
        walk(&super::Cli::command(), "hanzo-kms", &mut missing);
        assert!(missing.is_empty(), "options without help: {missing:?}");
    }

    /// Issue 26 item 13: the parsed command line holds the API token, and its `Debug` (what a
    /// `tracing` field or a panic message would print) does not show it.
    #[test]
    fn debug_of_the_command_line_hides_the_token() {
        use clap::Parser;
        let cli = super::Cli::try_parse_from([
            "hanzo-kms",
            "--token",
            "hkms_secret_token_value",
            "keys",
            "list",
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
