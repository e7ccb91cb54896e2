//! `vault-cli`: the vault's command-line client for operators and scripts.
//!
//! Invariant: vault-cli talks to the server over gRPC only and never opens a store; it uses
//! vault-core (asking for none of its storage backends; a workspace build unifies features, so
//! the binary may still contain RocksDB code) only to verify audit logs offline.

#![forbid(unsafe_code)]

// First: its `call!` macro is used by the command modules.
#[macro_use]
mod client;
mod alerts;
mod approle;
mod audit;
mod backup;
mod bench;
mod feed;
mod generate_root;
mod input;
mod jwt;
mod kek;
mod kms;
mod login;
mod mfa;
mod output;
mod policy;
mod rekey;
mod render;
mod run;
mod seal_migrate;
mod secrets;
mod share;
mod sources;
mod system;
mod tenant;
mod token;

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
    Init(system::InitArgs),
    /// Submit one unseal share (from a hidden prompt, standard input or --share-file).
    ///
    /// Shares are never taken as arguments: arguments leak into shell history and process lists.
    Unseal(system::UnsealArgs),
    /// Show whether the vault is initialized and sealed, and the unseal progress.
    Status,
    /// Seal the vault: every key in memory is forgotten until it is unsealed again.
    Seal,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// Write a new version of a secret.
    ///
    /// Fields are NAME=VALUE, NAME=@FILE (the file's bytes) or NAME=- (standard input, once).
    /// Prefer @FILE or - for real secrets: values given as arguments leak into shell history
    /// and process lists.
    Put(secrets::PutArgs),
    /// Write a new version from the current one with some fields set (NAME=VALUE, NAME=@FILE,
    /// NAME=-) or removed (--remove NAME); the other fields are kept.
    Patch(secrets::PatchArgs),
    /// Read a secret.
    Get(secrets::GetArgs),
    /// List one level of a tenant's secrets, like a directory (folders end in '/').
    List(secrets::ListArgs),
    /// Soft-delete versions of a secret (default: the current one); `undelete` restores them.
    /// With --all, remove the secret entirely: every version and its metadata.
    Delete(secrets::DeleteArgs),
    /// Restore soft-deleted versions.
    Undelete(secrets::ChangeArgs),
    /// Destroy versions: their data keys and ciphertext are removed (irreversible).
    Destroy(secrets::ChangeArgs),
    /// A secret's versions: created, deleted and destroyed, and who wrote each.
    History(secrets::HistoryArgs),
    /// Show a secret's metadata, or change it (max versions, check-and-set, custom metadata,
    /// expires_at, rotate_by).
    Metadata(secrets::MetadataArgs),
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
    Rotate(kek::RotateArgs),
    /// Key-encryption keys (KEKs) of tenants: versions, invocation counts, budgets, retirement.
    /// (`keys` is the old name, kept as a hidden alias for one release.)
    #[command(subcommand, alias = "keys")]
    Kek(kek::KekCommand),
    /// Named keys (encryption as a service): create, encrypt, decrypt, rewrap, datakey, sign,
    /// verify, hmac, rotate, trim, delete. Policies grant encrypt, decrypt, sign, verify,
    /// rewrap, datakey, rotate and admin on keys/NAME.
    #[command(subcommand)]
    Key(kms::KeyCommand),
    /// Nodes of a cluster on etcd: members, step-down.
    #[command(subcommand)]
    Cluster(system::ClusterCommand),
    /// Replace the unseal shares (multi-party, like unseal).
    #[command(subcommand)]
    Rekey(rekey::RekeyCommand),
    /// Check an unseal share.
    #[command(subcommand)]
    Share(share::ShareCommand),
    /// Tokens: create, lookup, renew, revoke.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Policies of a tenant: write (from TOML), read, list, delete.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Log in and keep the token in ~/.vault-token (mode 0600): check a token (hidden prompt or
    /// standard input), or log in with AppRole or a JWT.
    Login(login::LoginArgs),
    /// AppRole roles of a tenant: write, read, delete, and issue secret ids.
    #[command(subcommand)]
    Approle(approle::ApproleCommand),
    /// JWT/OIDC login configurations (system scope): write (from TOML), read, delete.
    #[command(subcommand)]
    Jwt(jwt::JwtCommand),
    /// Multi-factor authentication: enrol in TOTP, reset an entity, require MFA for system operations.
    #[command(subcommand)]
    Mfa(mfa::MfaCommand),
    /// The audit log: verify it offline, query and export it, fetch its public key.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Make a new root token with a threshold of unseal shares, encrypted to an age recipient
    /// (init, submit, status, cancel).
    #[command(subcommand)]
    GenerateRoot(generate_root::GenerateRootCommand),
    /// Move the vault between Shamir shares and the server's auto seal, both ways (init,
    /// submit, status, cancel); the same shares go on as recovery or unseal shares.
    #[command(subcommand)]
    SealMigrate(seal_migrate::SealMigrateCommand),
    /// Alerts on suspicious access the node raised recently (list).
    #[command(subcommand)]
    Alerts(alerts::AlertsCommand),
    /// Backups: take one from the running vault, verify, restore or show one offline.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Drive a running server with concurrent clients and print throughput and latency.
    Bench(bench::BenchArgs),
}

/// Runs the command with its group's handler; returns the exit code (`run` passes on its
/// command's).
async fn dispatch(ctx: &client::Ctx, command: Command) -> client::CliResult<u8> {
    let format = ctx.format;
    match command {
        Command::Run(args) => return run::run(ctx, args).await,
        Command::Key(command) => return kms::key(ctx, command, format).await,
        Command::Render(args) => render::render(ctx, format, args).await?,
        Command::Init(args) => system::init(ctx, args).await?,
        Command::Unseal(args) => system::unseal(ctx, args).await?,
        Command::Status => return system::status(ctx).await,
        Command::Seal => system::seal(ctx).await?,
        Command::Tenant(command) => tenant::run(ctx, command).await?,
        Command::Put(args) => secrets::put(ctx, args).await?,
        Command::Patch(args) => secrets::patch_command(ctx, args).await?,
        Command::Get(args) => secrets::get(ctx, args).await?,
        Command::List(args) => secrets::list(ctx, args).await?,
        Command::Delete(args) => secrets::delete(ctx, args).await?,
        Command::Undelete(args) => secrets::undelete(ctx, args).await?,
        Command::Destroy(args) => secrets::destroy(ctx, args).await?,
        Command::History(args) => secrets::history_command(ctx, args).await?,
        Command::Metadata(args) => secrets::metadata_command(ctx, args).await?,
        Command::Watch(args) => feed::watch(ctx, args, format).await?,
        Command::Webhook(command) => feed::webhook(ctx, command, format).await?,
        Command::Rotate(args) => kek::rotate(ctx, args.tenant, args.all, format).await?,
        Command::Kek(command) => kek::kek(ctx, command, format).await?,
        Command::Rekey(command) => rekey::rekey(ctx, command, format).await?,
        Command::Cluster(command) => system::cluster(ctx, command).await?,
        Command::Share(command) => share::share(ctx, command, format).await?,
        Command::Token(command) => token::token_command(ctx, command, format).await?,
        Command::Policy(command) => policy::policy_command(ctx, command, format).await?,
        Command::Login(args) => login::login(ctx, args, format).await?,
        Command::Approle(command) => approle::approle(ctx, command, format).await?,
        Command::Jwt(command) => jwt::jwt(ctx, command, format).await?,
        Command::Mfa(command) => mfa::mfa(ctx, command, format).await?,
        Command::Audit(command) => audit::run(ctx, command, format).await?,
        Command::Backup(command) => backup::run(ctx, command, format).await?,
        Command::GenerateRoot(command) => {
            generate_root::generate_root(ctx, command, format).await?
        }
        Command::Alerts(command) => alerts::alerts(ctx, command, format).await?,
        Command::SealMigrate(command) => seal_migrate::seal_migrate(ctx, command, format).await?,
        Command::Bench(args) => bench::run(ctx, args, format).await?,
    }
    Ok(0)
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
    let ctx = client::Ctx::new(
        cli.addr,
        cli.format,
        client::TlsFiles {
            ca_cert: cli.ca_cert,
            client_cert: cli.client_cert,
            client_key: cli.client_key,
        },
        cli.mfa,
    );
    match runtime.block_on(dispatch(&ctx, cli.command)) {
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
