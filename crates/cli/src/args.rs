//! The command line. Names of commands and options are a contract for scripts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new data directory: a master key (mode 0600) and an empty store.
    ///
    /// The master key is written to DIR/master.key, unless HANZO_KMS_MASTER_KEY (64 hex
    /// characters) is set, in which case that key is used and no file is written. Back the
    /// master key up: without it no key in the store can be used.
    Init,

    /// Create, inspect, rotate, disable, enable and destroy keys.
    #[command(subcommand)]
    Keys(KeysCommand),

    /// Model keyspaces (the spec's CreateModelKeyspace).
    #[command(subcommand)]
    Keyspace(KeyspaceCommand),

    /// Encrypt stdin to stdout with an aes-256-gcm key (small data, at most 4 MiB).
    ///
    /// Prints hkms:v<version>:<base64url>. The version lets `decrypt` find the right key version
    /// after rotation.
    Encrypt(CryptArgs),

    /// Decrypt an hkms:v… ciphertext from stdin to stdout.
    ///
    /// Fails with "authentication failed" (and writes nothing) if the ciphertext was made with
    /// another key or AAD, or was changed in any way.
    Decrypt(CryptArgs),

    /// Read and verify the hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),

    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),

    /// Walk through the spec's flow in a throwaway data directory.
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
        #[arg(long)]
        due: bool,
    },
    /// Refuse every operation with a key (or one non-primary version) until enabled again.
    Disable {
        name: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Enable a disabled key or version; cancels a scheduled destruction.
    Enable {
        name: String,
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
}

#[derive(Debug, Subcommand)]
pub enum KeyspaceCommand {
    /// Create model:C:M (aes-256-gcm) and, unless --no-signing-keys, poai:C:M and hmm:C:M with
    /// the configured signing algorithms. All or nothing.
    Create {
        #[arg(long)]
        customer: String,
        #[arg(long)]
        model: String,
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
pub enum AuditCommand {
    /// Print audit records, oldest first.
    List {
        /// Only records with a sequence number above SEQ.
        #[arg(long, default_value_t = 0, value_name = "SEQ")]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Recompute the hash chain; exit 1 if any record was edited, deleted or reordered.
    Verify,
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
