//! `vault-cli`: the vault's command-line client for operators and scripts.
//!
//! Invariant: vault-cli talks to the server over gRPC only and never links RocksDB; it uses
//! vault-core (without its storage backends) only to verify audit logs offline.

#![forbid(unsafe_code)]

mod access;
mod audit;
mod bench;
mod client;
mod commands;
mod feed;
mod input;
mod keys;
mod kms;
mod login;
mod output;
mod render;
mod run;
mod sources;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes: 0 success; 1 the server refused or the command failed; 2 invalid usage.
const AFTER_HELP: &str = "\
Environment:
  VAULT_ADDR    server address (default http://127.0.0.1:8200; https:// needs --ca-cert)
  VAULT_CACERT  CA certificate for https (and VAULT_CLIENT_CERT, VAULT_CLIENT_KEY for mTLS)
  VAULT_TOKEN   token for every command that needs one (else ~/.vault-token from `login`)
  VAULT_TENANT  tenant for secret commands, in place of --tenant

Exit codes: 0 success, 1 error (from the server or the command), 2 invalid usage.";

#[derive(Parser, Debug)]
#[command(name = "vault-cli", version, about = "Operate and use the vault", after_help = AFTER_HELP)]
pub struct Cli {
    /// Server address.
    #[arg(
        long,
        global = true,
        env = "VAULT_ADDR",
        default_value = "http://127.0.0.1:8200"
    )]
    pub addr: String,

    /// PEM CA certificate to trust for an https:// VAULT_ADDR.
    #[arg(long, global = true, env = "VAULT_CACERT", value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,

    /// PEM client certificate, for servers that require mutual TLS.
    #[arg(
        long,
        global = true,
        env = "VAULT_CLIENT_CERT",
        value_name = "FILE",
        requires = "client_key"
    )]
    pub client_cert: Option<std::path::PathBuf>,

    /// PEM private key of the client certificate.
    #[arg(
        long,
        global = true,
        env = "VAULT_CLIENT_KEY",
        value_name = "FILE",
        requires = "client_cert"
    )]
    pub client_key: Option<std::path::PathBuf>,

    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// A one-time MFA code (TOTP) for operations that require one.
    #[arg(long = "mfa", global = true, env = "VAULT_MFA", value_name = "CODE")]
    pub mfa: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Initialise a new vault: prints the unseal shares and the root token, once.
    Init {
        /// Number of unseal shares to create.
        #[arg(long, default_value_t = 5)]
        shares: u32,
        /// Number of shares needed to unseal.
        #[arg(long, default_value_t = 3)]
        threshold: u32,
        #[command(flatten)]
        recipients: keys::RecipientArgs,
        /// Encrypt the root token to this age public key (age1...).
        #[arg(long, value_name = "AGE_RECIPIENT")]
        root_token_recipient: Option<String>,
    },
    /// Submit one unseal share (from a hidden prompt, standard input or --share-file).
    ///
    /// Shares are never taken as arguments: arguments leak into shell history and process lists.
    Unseal {
        /// Read the share from this file.
        #[arg(long, value_name = "FILE")]
        share_file: Option<std::path::PathBuf>,
        /// Forget the shares submitted so far. Needs one current share (read like any other,
        /// and not counted), so that nobody without one can reset the operators' progress.
        #[arg(long)]
        reset: bool,
    },
    /// Show whether the vault is initialized and sealed, and the unseal progress.
    Status,
    /// Seal the vault: every key in memory is forgotten until it is unsealed again.
    Seal,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Write a new version of a secret.
    ///
    /// Fields are NAME=VALUE, NAME=@FILE (the file's bytes) or NAME=- (standard input, once).
    /// Prefer @FILE or - for real secrets: values given as arguments leak into shell history
    /// and process lists.
    Put {
        #[command(flatten)]
        tenant: TenantArg,
        /// Secret path, e.g. db/primary.
        path: String,
        /// Fields: NAME=VALUE, NAME=@FILE or NAME=-.
        #[arg(required = true, value_name = "FIELD")]
        fields: Vec<String>,
        /// Check-and-set: write only if the current version is N (0: only if the secret does
        /// not exist yet).
        #[arg(long, value_name = "N")]
        cas: Option<u64>,
    },
    /// Write a new version from the current one with some fields set (NAME=VALUE, NAME=@FILE,
    /// NAME=-) or removed (--remove NAME); the other fields are kept.
    Patch {
        #[command(flatten)]
        tenant: TenantArg,
        path: String,
        #[arg(value_name = "FIELD")]
        fields: Vec<String>,
        /// A field to remove (repeat for several).
        #[arg(long, value_name = "NAME")]
        remove: Vec<String>,
        #[arg(long, value_name = "N")]
        cas: Option<u64>,
    },
    /// Read a secret.
    Get {
        #[command(flatten)]
        tenant: TenantArg,
        path: String,
        /// Print only this field's value.
        #[arg(long)]
        field: Option<String>,
        /// Read this version instead of the current one.
        #[arg(long, default_value_t = 0)]
        version: u64,
    },
    /// List one level of a tenant's secrets, like a directory (folders end in '/').
    List {
        #[command(flatten)]
        tenant: TenantArg,
        /// Folder to list (default: the top level).
        #[arg(default_value = "")]
        prefix: String,
        /// Entries per page (at most 1000; default 100).
        #[arg(long, default_value_t = 0)]
        page_size: u32,
        /// Token printed by the previous page.
        #[arg(long, default_value = "")]
        page_token: String,
        /// List every secret below the folder instead of one level.
        #[arg(long)]
        recursive: bool,
    },
    /// Soft-delete versions of a secret (default: the current one); `undelete` restores them.
    /// With --all, remove the secret entirely: every version and its metadata.
    Delete {
        #[command(flatten)]
        tenant: TenantArg,
        path: String,
        #[command(flatten)]
        versions: feed::VersionsArg,
        /// Remove every version and the metadata (irreversible).
        #[arg(long, conflicts_with = "versions")]
        all: bool,
    },
    /// Restore soft-deleted versions.
    Undelete {
        #[command(flatten)]
        tenant: TenantArg,
        path: String,
        #[command(flatten)]
        versions: feed::VersionsArg,
    },
    /// Destroy versions: their data keys and ciphertext are removed (irreversible).
    Destroy {
        #[command(flatten)]
        tenant: TenantArg,
        path: String,
        #[command(flatten)]
        versions: feed::VersionsArg,
    },
    /// A secret's versions: created, deleted and destroyed, and who wrote each.
    History {
        #[command(flatten)]
        tenant: TenantArg,
        path: String,
    },
    /// Show a secret's metadata, or change it (max versions, check-and-set, custom metadata,
    /// expires_at, rotate_by).
    Metadata {
        #[command(flatten)]
        tenant: TenantArg,
        path: String,
        #[command(flatten)]
        settings: feed::MetadataSettings,
    },
    /// Print changes to a tenant's secrets as they happen (names and versions, never values);
    /// reconnects and resumes from the last revision printed.
    Watch(feed::WatchArgs),
    /// Webhooks: signed change notifications posted to a URL.
    #[command(subcommand)]
    Webhook(feed::WebhookCommand),
    /// Run a command with secrets in its environment (only there: not on disk, not on its
    /// command line, not in vault-cli's environment); exits with the command's exit code.
    ///
    /// Example: vault-cli run --env DB_PASSWORD=db/primary#password -- ./migrate.sh
    Run(run::RunArgs),
    /// Render a template's {{ secret "PATH" "FIELD" }} references into a file (mode 0600,
    /// replaced atomically); with --watch, render again when a secret changes.
    Render(render::RenderArgs),
    /// Add a key-encryption-key version for a tenant (or every tenant with --all); new data is
    /// sealed under it at once.
    Rotate {
        #[arg(long, env = "VAULT_TENANT", required_unless_present = "all")]
        tenant: Option<String>,
        /// Rotate every tenant's KEK (system scope).
        #[arg(long)]
        all: bool,
    },
    /// Key lifecycle: versions, invocation counts, budgets, retirement.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Named keys (encryption as a service): create, encrypt, decrypt, rewrap, datakey, sign,
    /// verify, hmac, rotate, trim, delete. Policies grant encrypt, decrypt, sign, verify,
    /// rewrap, datakey, rotate and admin on keys/NAME.
    #[command(subcommand)]
    Key(kms::KeyCommand),
    /// Replace the unseal shares (multi-party, like unseal).
    #[command(subcommand)]
    Rekey(keys::RekeyCommand),
    /// Check an unseal share.
    #[command(subcommand)]
    Share(keys::ShareCommand),
    /// Tokens: create, lookup, renew, revoke.
    #[command(subcommand)]
    Token(access::TokenCommand),
    /// Policies of a tenant: write (from TOML), read, list, delete.
    #[command(subcommand)]
    Policy(access::PolicyCommand),
    /// Log in and keep the token in ~/.vault-token (mode 0600): check a token (hidden prompt or
    /// standard input), or log in with AppRole or a JWT.
    Login(login::LoginArgs),
    /// AppRole roles of a tenant: write, read, delete, and issue secret ids.
    #[command(subcommand)]
    Approle(login::ApproleCommand),
    /// JWT/OIDC login configurations (system scope): write (from TOML), read, delete.
    #[command(subcommand)]
    Jwt(login::JwtCommand),
    /// Multi-factor authentication: enrol in TOTP, reset an entity, require MFA for system operations.
    #[command(subcommand)]
    Mfa(login::MfaCommand),
    /// The audit log: verify it offline, query and export it, fetch its public key.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Drive a running server with concurrent clients and print throughput and latency.
    Bench(bench::BenchArgs),
}

#[derive(clap::Args, Debug)]
pub struct TenantArg {
    /// Tenant that owns the secret.
    #[arg(long, env = "VAULT_TENANT")]
    pub tenant: String,
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        name: String,
        #[command(flatten)]
        settings: TenantSettingsArgs,
    },
    /// List tenants.
    List,
    /// Show a tenant and its settings.
    Show { name: String },
    /// Change a tenant's settings; unnamed settings keep their value.
    Update {
        name: String,
        #[command(flatten)]
        settings: TenantSettingsArgs,
        /// Remove the network allowlist (calls from anywhere).
        #[arg(long, conflicts_with = "cidrs")]
        clear_cidrs: bool,
    },
    /// Delete a tenant: all access to it stops at once, and its keys are destroyed
    /// (crypto-shredding) after the server's waiting period unless it is restored first.
    Delete { name: String },
    /// Bring a deleted tenant back before its keys are destroyed.
    Restore {
        name: String,
        /// Which one, when several deleted tenants had the name (see `tenant deleted`).
        #[arg(long)]
        id: Option<String>,
    },
    /// Deleted tenants whose keys are not destroyed yet.
    Deleted,
}

#[derive(clap::Args, Debug)]
pub struct TenantSettingsArgs {
    /// A network the tenant's tokens may be used from, e.g. 10.0.0.0/8 (repeat for several).
    #[arg(long = "cidr")]
    pub cidrs: Vec<String>,
    /// Calls per second for all of the tenant's tokens together (0: no limit).
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Versions kept per secret by default (0: the server default).
    #[arg(long)]
    pub max_versions: Option<u32>,
    /// Require check-and-set (`put --cas N`) on every write of the tenant's secrets.
    #[arg(long, value_name = "BOOL")]
    pub cas_required: Option<bool>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("vault-cli: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    client::set_mfa_code(cli.mfa.clone());
    client::set_tls(client::TlsFiles {
        ca_cert: cli.ca_cert.clone(),
        client_cert: cli.client_cert.clone(),
        client_key: cli.client_key.clone(),
    });
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("vault-cli: error: {}", error.message);
            if let Some(hint) = error.hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}
