//! The vault's gRPC server: turns protobuf into vault-core calls and back.
//!
//! Invariant: this is the only crate that converts between protobuf messages and domain types,
//! and every RPC passes through [`call::CallLayer`], which knows the request id, the caller and
//! the outcome of every call (the audit log hooks in there).
//!
//! [`run`] takes the flags ([`Args`]), opens the two stores, the audit log and the vault,
//! registers every service once (its route and its health status, `register!`) behind the call
//! layer, and serves. TLS is rustls through tonic's `tls-ring`; `--tls-client-ca` makes client
//! certificates mandatory. Without TLS the server refuses any non-loopback address; in dev mode
//! it refuses them with TLS too.

#![forbid(unsafe_code)]

pub mod alerts;
mod audit;
mod auth;
mod backup;
pub mod bench_null;
pub mod call;
#[cfg(feature = "etcd")]
pub mod cluster;
pub mod config;
mod dev;
#[cfg(test)]
mod fuzz_targets;
pub mod harden;
pub mod http;
mod keys;
mod kms;
mod login;
pub mod metrics;
pub mod rpcs;
mod secrets;
mod serve;
mod status;
mod system;
mod tenants;
mod tls;
mod transport;
mod watch;
mod webhooks;

use std::{io::Write, net::SocketAddr, path::PathBuf, sync::Arc};

use clap::Parser;
use tokio::net::TcpListener;
use tonic::transport::Server;
use vault_core::{
    Vault, VaultConfig,
    audit::writer::{AuditConfig, AuditError, AuditLog, system_entry},
    cidr::Cidr,
    limits::LoginFailures,
    stores::{DataStore, KeyStore},
    vault::{FeedPolicy, KeyPolicy, KmsPolicy, WebhookPolicy},
};
use vault_proto::v1::{
    FILE_DESCRIPTOR_SET, app_roles_server::AppRolesServer, audit_server::AuditServer,
    jwt_auth_server::JwtAuthServer, keys_server::KeysServer, kms_server::KmsServer,
    login_server::LoginServer, mfa_server::MfaServer, policies_server::PoliciesServer,
    secrets_server::SecretsServer, system_server::SystemServer, tenants_server::TenantsServer,
    tokens_server::TokensServer, watch_server::WatchServer, webhooks_server::WebhooksServer,
};

/// Failed logins from one source are counted over this window.
const LOGIN_FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// Connections one source may hold open to the metrics endpoint.
const METRICS_CONNECTIONS_PER_SOURCE: usize = 8;

/// Default transport limit for one request message.
const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "vault-server",
    version,
    about = "The vault: secrets and key-management server (gRPC)"
)]
pub struct Args {
    /// A TOML file of settings: every flag is a key (its long name with `_` for `-`), see
    /// vault-server/CONFIG.md or --config-reference. Flags and VAULT_* variables override it.
    /// SIGHUP re-reads it.
    #[arg(long, value_name = "FILE", env = "VAULT_CONFIG")]
    pub config: Option<PathBuf>,

    /// Print the reference of every configuration key (Markdown) and exit.
    #[arg(long)]
    pub config_reference: bool,

    /// The log filter (`info`, `warn,vault::call=debug`, ...; tracing's EnvFilter syntax).
    /// Default: the VAULT_LOG variable, else `info`. SIGHUP applies a changed one.
    #[arg(long, value_name = "FILTER", env = "VAULT_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// Development mode: embedded RocksDB in --data-dir (default ./vault-dev-data), one share,
    /// unseals itself and prints the share and root token. Insecure; loopback only.
    #[arg(long)]
    pub dev: bool,

    /// Address to listen on. Plaintext gRPC is only allowed on loopback addresses; any other
    /// address needs --tls-cert and --tls-key.
    #[arg(long, default_value = "127.0.0.1:8200", env = "VAULT_LISTEN")]
    pub listen: SocketAddr,

    /// Also serve Vault's HTTP API (a stated subset: sys, KV v2 at secret/, transit, token,
    /// AppRole and JWT login) on this address, so Vault's and OpenBao's clients work. Same
    /// TLS flags and loopback rule as gRPC.
    #[arg(long, value_name = "ADDR", env = "VAULT_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,

    /// PEM certificate chain for TLS (rustls).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        env = "VAULT_TLS_CERT"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for TLS.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        env = "VAULT_TLS_KEY"
    )]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): clients must present a certificate signed by one (mutual TLS).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        env = "VAULT_TLS_CLIENT_CA"
    )]
    pub tls_client_ca: Option<PathBuf>,

    /// Directory for the data store and the key store (created if missing); with `--storage
    /// etcd`, for this node's own files (the audit log unless --audit-dir says otherwise).
    #[arg(long, env = "VAULT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Where the two stores live: `rocksdb` (embedded, in --data-dir) or `etcd` (shared by
    /// every node of a cluster; needs --etcd-endpoints).
    #[arg(long, value_enum, default_value_t = StorageKind::Rocksdb, env = "VAULT_STORAGE")]
    pub storage: StorageKind,

    /// etcd client URLs, comma-separated (`--storage etcd`).
    #[arg(long, value_delimiter = ',', env = "VAULT_ETCD_ENDPOINTS")]
    pub etcd_endpoints: Vec<String>,

    /// etcd client URLs of the cluster that holds the key store, if it is not the data store's
    /// (so that backups of the data cluster carry no key material).
    #[arg(long, value_delimiter = ',', env = "VAULT_KEY_STORE_ETCD_ENDPOINTS")]
    pub key_store_etcd_endpoints: Vec<String>,

    /// Every key the vault writes to etcd starts with this; the data store is under
    /// `<prefix>data/`, the key store under `<prefix>keys/`.
    #[arg(long, default_value = "vault/", env = "VAULT_ETCD_PREFIX")]
    pub etcd_prefix: String,

    /// The longest one etcd request may take; a call that needs a slower one fails UNAVAILABLE.
    #[arg(long, default_value_t = 5000, env = "VAULT_ETCD_TIMEOUT_MS")]
    pub etcd_timeout_ms: u64,

    /// The etcd user the nodes sign in as (etcd with authentication enabled); its password
    /// comes from --etcd-password-file or the environment variable VAULT_ETCD_PASSWORD, never
    /// from the command line. Used for the key store's cluster too.
    #[arg(long, env = "VAULT_ETCD_USER")]
    pub etcd_user: Option<String>,

    /// A file holding the etcd user's password (one line).
    #[arg(long, env = "VAULT_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,

    /// The CA (PEM) that signed the etcd members' certificates: the nodes then speak TLS to
    /// etcd (give `https://` endpoints). Used for the key store's cluster too.
    #[arg(long, env = "VAULT_ETCD_CA_CERT")]
    pub etcd_ca_cert: Option<PathBuf>,

    /// The node's client certificate for etcd (PEM; etcd's --client-cert-auth), with
    /// --etcd-client-key.
    #[arg(long, env = "VAULT_ETCD_CLIENT_CERT", requires = "etcd_client_key")]
    pub etcd_client_cert: Option<PathBuf>,

    /// The key of --etcd-client-cert (PEM).
    #[arg(long, env = "VAULT_ETCD_CLIENT_KEY", requires = "etcd_client_cert")]
    pub etcd_client_key: Option<PathBuf>,

    /// Where other nodes and clients reach this node (`host:port`; default: the address it
    /// listens on). A
    /// standby forwards calls to the active node's advertised address.
    #[arg(long, env = "VAULT_ADVERTISE")]
    pub advertise: Option<String>,

    /// The TTL of this node's etcd lease: an active node that stops renewing it (killed,
    /// paused, cut off) loses leadership this long after its last renewal.
    #[arg(long, default_value_t = 10)]
    pub lease_ttl_secs: u64,

    /// Largest secret accepted (all fields of one version together), in bytes.
    #[arg(long, default_value_t = vault_core::vault::DEFAULT_MAX_VALUE_BYTES)]
    pub max_value_bytes: usize,

    /// Transport limit for one request message, in bytes; larger requests get RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,

    /// This node's name in status output and audit records (default: the host name).
    #[arg(long, env = "VAULT_NODE_ID")]
    pub node_id: Option<String>,

    /// Directory for the audit log's segment files (default: DATA_DIR/audit). May be on another
    /// disk.
    #[arg(long, env = "VAULT_AUDIT_DIR")]
    pub audit_dir: Option<PathBuf>,

    /// Size at which an audit segment is closed and a new one started.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub audit_segment_bytes: u64,

    /// A signed checkpoint is written after this many records...
    #[arg(long, default_value_t = 1000)]
    pub audit_checkpoint_records: u64,

    /// ...or once the oldest unsigned record is this many milliseconds old.
    #[arg(long, default_value_t = 1000)]
    pub audit_checkpoint_ms: u64,

    /// Audit segments whose newest record is older than this many days are pruned, with a signed
    /// pruning record. 0 keeps everything.
    #[arg(long, default_value_t = 0)]
    pub audit_retention_days: u64,

    /// Also send every audit record to this Unix datagram socket as RFC 5424 syslog (e.g.
    /// /dev/log). Fed from the durable log; a slow or absent receiver never blocks calls.
    #[arg(long, value_name = "PATH")]
    pub audit_syslog_socket: Option<PathBuf>,

    /// A proxy (CIDR) whose `x-forwarded-for` header is believed; repeat or separate with
    /// commas. Calls from anywhere else are judged by their peer address alone.
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<Cidr>,

    /// Calls per second one source address may make (bursts of twice that), counted before
    /// authentication so floods cannot fill the audit disk; 0: no limit.
    #[arg(long, default_value_t = 1000)]
    pub source_rate_limit: u32,

    /// Calls the whole server works on at once (a call takes its place once its request is
    /// decoded); more get RESOURCE_EXHAUSTED. 0: no limit.
    #[arg(long, default_value_t = 1024)]
    pub max_concurrent_calls: usize,

    /// Calls one source address (IPv6: its /64) may have open at once, from their headers to
    /// their answer, a request still arriving included; more get RESOURCE_EXHAUSTED. 0: no
    /// limit.
    #[arg(long, default_value_t = 256)]
    pub max_calls_per_source: usize,

    /// Milliseconds a request's message may take to arrive after its headers; a stream that
    /// never finishes its request is answered DEADLINE_EXCEEDED.
    #[arg(long, default_value_t = 10_000)]
    pub request_body_timeout_ms: u64,

    /// Milliseconds a new connection may take to send its first request's headers (a
    /// connection that sends nothing, or trickles a partial request, is closed).
    #[arg(long, default_value_t = 30_000)]
    pub header_timeout_ms: u64,

    /// Seconds a connection with nothing in flight stays open.
    #[arg(long, default_value_t = 300)]
    pub idle_connection_timeout_secs: u64,

    /// Open connections per source address (trusted proxies excepted); more are closed at
    /// once. 0: no limit.
    #[arg(long, default_value_t = 256)]
    pub max_connections_per_source: usize,

    /// Concurrent HTTP/2 streams per connection.
    #[arg(long, default_value_t = 128)]
    pub max_streams_per_connection: u32,

    /// Seconds between HTTP/2 keepalive pings; a peer that does not answer within 10 s is
    /// disconnected.
    #[arg(long, default_value_t = 30)]
    pub http2_keepalive_secs: u64,

    /// Health and reflection calls served at once (they are not audited).
    #[arg(long, default_value_t = 64)]
    pub max_concurrent_health_calls: usize,

    /// Watches one token may have open at once.
    #[arg(long, default_value_t = 32)]
    pub max_watches_per_token: usize,

    /// Watches one tenant's tokens may have open at once, together.
    #[arg(long, default_value_t = 1024)]
    pub max_watches_per_tenant: usize,

    /// Actions a minute by one tenant's tokens that seal under the root key (MFA enrolment,
    /// webhook creation, KEK rotation), so no tenant can run the root key toward its budget.
    /// 0: no limit.
    #[arg(long, default_value_t = vault_core::vault::DEFAULT_TENANT_ROOT_KEY_PER_MINUTE)]
    pub tenant_root_key_ops_per_minute: u32,

    /// Live tokens one token may have created (expired and revoked ones are purged).
    #[arg(long, default_value_t = vault_core::vault::DEFAULT_MAX_TOKEN_CHILDREN)]
    pub max_token_children: usize,

    /// Encryptions a key version may serve before it rotates (at most 2^32, the NIST limit for
    /// AES-GCM with random nonces). The default, 2^30, keeps the chance of a nonce collision
    /// below 2^-37.
    #[arg(long, default_value_t = vault_core::vault::DEFAULT_KEY_BUDGET)]
    pub key_budget: u64,

    /// A tenant's KEK rotates once its current version is this many seconds old; 0: never by age.
    #[arg(long, default_value_t = 0)]
    pub key_max_age_secs: u64,

    /// KEK versions each tenant keeps live; older ones are retired (their data keys re-wrapped
    /// into the current version, then destroyed). 0: retire only on request.
    #[arg(long, default_value_t = vault_core::vault::DEFAULT_MAX_LIVE_VERSIONS)]
    pub key_max_live_versions: u32,

    /// Key uses reserved durably at a time: a crash over-counts by at most this many.
    #[arg(long, default_value_t = vault_core::vault::DEFAULT_RESERVE_BLOCK)]
    pub key_reserve_block: u64,

    /// Data keys the retirement job re-wraps per second (it runs in the background).
    #[arg(long, default_value_t = 1000)]
    pub rewrap_rate: u64,

    /// Seconds between a tenant's deletion and the destruction of its keys (crypto-shredding);
    /// `vault-cli tenant restore` cancels within this time.
    #[arg(long, default_value_t = (vault_core::vault::DEFAULT_SHRED_DELAY_NANOS / 1_000_000_000) as u64)]
    pub tenant_shred_delay_secs: u64,

    /// Milliseconds between rounds of background key maintenance (rotation by age, re-wrap,
    /// shredding).
    #[arg(long, default_value_t = 200, hide = true)]
    pub maintenance_interval_ms: u64,

    /// Versions kept per secret unless the secret or its tenant says otherwise (0: all).
    #[arg(long, default_value_t = vault_core::vault::DEFAULT_MAX_VERSIONS)]
    pub default_max_versions: u32,

    /// Seconds the change feed keeps events; resuming a watch from before answers OUT_OF_RANGE.
    #[arg(long, default_value_t = (vault_core::vault::DEFAULT_FEED_RETENTION_NANOS / 1_000_000_000) as u64)]
    pub feed_retention_secs: u64,

    /// Seconds before a secret's expires_at or rotate_by deadline that the `expiring` event is
    /// sent.
    #[arg(long, default_value_t = (vault_core::vault::DEFAULT_EXPIRY_LEAD_NANOS / 1_000_000_000) as u64)]
    pub expiry_lead_secs: u64,

    /// Milliseconds a watch may leave its buffer full before it is dropped (it resumes from
    /// the last revision it received).
    #[arg(long, default_value_t = 30_000)]
    pub watch_send_timeout_ms: u64,

    /// A network webhooks may reach although it is loopback, private or link-local (repeat
    /// for several, e.g. 10.0.0.0/8). Everything else of that kind is refused.
    #[arg(long = "webhook-allow-network", value_name = "CIDR", value_parser = parse_cidr)]
    pub webhook_allow_networks: Vec<Cidr>,

    /// Attempts before a webhook delivery moves to the dead-letter list.
    #[arg(long, default_value_t = 10)]
    pub webhook_max_attempts: u32,

    /// Milliseconds before the first retry of a webhook delivery; each further retry waits
    /// twice as long, up to --webhook-backoff-max-secs.
    #[arg(long, default_value_t = 1000)]
    pub webhook_backoff_ms: u64,

    #[arg(long, default_value_t = 3600)]
    pub webhook_backoff_max_secs: u64,

    /// Milliseconds a webhook receiver has to answer.
    #[arg(long, default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,

    /// Milliseconds a webhook host's DNS lookup may take (at creation and each delivery).
    #[arg(long, default_value_t = 5_000)]
    pub webhook_dns_timeout_ms: u64,

    /// Webhook posts in flight at once: in all, per tenant, and per receiving host and port.
    #[arg(long, default_value_t = 256)]
    pub webhook_max_in_flight: usize,

    #[arg(long, default_value_t = 8)]
    pub webhook_max_in_flight_per_tenant: usize,

    #[arg(long, default_value_t = 8)]
    pub webhook_max_in_flight_per_host: usize,

    /// Largest plaintext, message or batch item of the named keys (encrypt, sign, hmac), in
    /// bytes.
    #[arg(long, default_value_t = vault_core::vault::DEFAULT_MAX_PLAINTEXT_BYTES)]
    pub kms_max_plaintext_bytes: usize,

    /// Most items in one BatchEncrypt or BatchDecrypt call.
    #[arg(long, default_value_t = vault_core::vault::DEFAULT_MAX_BATCH_ITEMS)]
    pub kms_max_batch_items: usize,

    /// Seconds between the deletion of a named key and the destruction of its material;
    /// `vault-cli key delete --cancel` brings the key back within this time.
    #[arg(long, default_value_t = (vault_core::vault::DEFAULT_KEY_DELETION_DELAY_NANOS / 1_000_000_000) as u64)]
    pub kms_deletion_delay_secs: u64,

    /// Milliseconds form of --kms-deletion-delay-secs, for tests (overrides it when set).
    #[arg(long, hide = true)]
    pub kms_deletion_delay_ms: Option<u64>,

    /// Allow named keys to be created exportable (their material can then be read out with
    /// `vault-cli key export`). Refused by default: a key that can leave the vault is only as
    /// safe as every place it went.
    #[arg(long)]
    pub kms_allow_exportable_keys: bool,

    /// DANGER, for tests: every key use is appended to this file (and synced) before it is
    /// made, so a test can compare the durable counts with the truth after a crash.
    #[arg(long, value_name = "FILE", hide = true)]
    pub danger_invocation_log: Option<PathBuf>,

    /// DANGER, for tests: while this file exists, every audit write fails (if it contains
    /// `partial`, half of each batch reaches the segment first, as in a torn write).
    #[arg(long, value_name = "FILE", hide = true)]
    pub danger_audit_fault_file: Option<PathBuf>,

    /// DANGER, for benchmarks only: serve calls without an audit log.
    #[arg(long)]
    pub danger_disable_audit: bool,

    /// Auto-unseal: `transit` wraps the unseal key with a named key of another vault (its KMS,
    /// over gRPC with TLS; see --seal-addr, --seal-key, --seal-token-file), so the server
    /// unseals itself at every start. The shares made at init are then recovery shares (for
    /// rekey, generate-root and seal-migrate); `vault-cli seal-migrate` moves an existing vault
    /// to this seal and back.
    #[arg(long, value_name = "KIND", value_parser = ["transit"], env = "VAULT_SEAL")]
    pub seal: Option<String>,

    /// The other vault that holds the transit seal's key, e.g. https://kms.internal:8200.
    #[arg(long, value_name = "URL", env = "VAULT_SEAL_ADDR")]
    pub seal_addr: Option<String>,

    /// The transit seal's named key: NAME with --seal-tenant, or TENANT/NAME (an aes256-gcm
    /// key of the other vault).
    #[arg(long, value_name = "KEY", env = "VAULT_SEAL_KEY")]
    pub seal_key: Option<String>,

    /// The tenant of the transit seal's key on the other vault (or give --seal-key
    /// TENANT/NAME).
    #[arg(long, value_name = "TENANT", env = "VAULT_SEAL_TENANT")]
    pub seal_tenant: Option<String>,

    /// A file with the token the transit seal uses (its policy needs `encrypt` and `decrypt`
    /// on the key; renewed in the background).
    #[arg(long, value_name = "FILE", env = "VAULT_SEAL_TOKEN_FILE")]
    pub seal_token_file: Option<PathBuf>,

    /// The CA certificate (PEM) of the other vault, for an https:// --seal-addr.
    #[arg(long, value_name = "FILE", env = "VAULT_SEAL_CA_FILE")]
    pub seal_ca_file: Option<PathBuf>,

    /// Alert (audit record of kind `alert`, metric, `security_alert` feed event) when one
    /// principal (a token, or an address without a valid token) is denied more than this many
    /// times within a minute; 0: off.
    #[arg(long, default_value_t = 0, env = "VAULT_ALERT_DENIALS_PER_MINUTE")]
    pub alert_denials_per_minute: u32,

    /// Alert when one token reads more than this many distinct secrets within a minute; 0: off.
    #[arg(
        long,
        default_value_t = 0,
        value_parser = clap::value_parser!(u32).range(0..=1_000),
        env = "VAULT_ALERT_DISTINCT_READS_PER_MINUTE"
    )]
    pub alert_distinct_reads_per_minute: u32,

    /// Alert on a token's first call from a network (IPv4 /24, IPv6 /64) it has not called from
    /// before (its first call sets what it knows; per node, forgotten at restart).
    #[arg(long, env = "VAULT_ALERT_NEW_NETWORK")]
    pub alert_new_network: bool,

    /// DANGER, for tests only: auto-unseal with a key kept in this file (64 hex digits, e.g.
    /// `openssl rand -hex 32`). Whoever reads the file and the key store has every key.
    #[arg(long, value_name = "FILE", conflicts_with = "seal")]
    pub danger_seal_key_file: Option<PathBuf>,

    /// Where the vault keeps its key backups (sealed snapshots of the key store, one taken with
    /// every data backup). Crypto-shredding a tenant purges its keys from every file here.
    /// Default: DATA/key-backups; put it on another disk than the data directory.
    #[arg(long, value_name = "DIR", env = "VAULT_KEY_BACKUP_DIR")]
    pub key_backup_dir: Option<PathBuf>,

    /// Take a data backup into this directory every --backup-interval (and a key backup into
    /// --key-backup-dir), keeping the newest --backup-keep of each.
    #[arg(long, value_name = "DIR", env = "VAULT_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,

    /// How often scheduled backups are taken: a number with s, m, h or d (e.g. 24h).
    #[arg(long, default_value = "24h", value_parser = backup::parse_interval, env = "VAULT_BACKUP_INTERVAL")]
    pub backup_interval: std::time::Duration,

    /// Scheduled data backups kept in --backup-dir, and key backups kept in --key-backup-dir;
    /// older ones are removed.
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u32).range(1..), env = "VAULT_BACKUP_KEEP")]
    pub backup_keep: u32,

    /// Restore this data backup (`.vbk`) into --data-dir before starting (the directory must
    /// be new or empty); needs --restore-keys. Then unseal with the shares that were in force
    /// when the key backup was taken.
    #[arg(long, value_name = "FILE", requires_all = ["restore_keys", "data_dir"])]
    pub restore_from: Option<PathBuf>,

    /// The key backup (`.vkb`) to restore with --restore-from.
    #[arg(long, value_name = "FILE", requires = "restore_from")]
    pub restore_keys: Option<PathBuf>,

    /// The pinned audit public key (from `vault-cli audit public-key --out`) the backups must
    /// be signed with; without it the signatures are checked against the key they name.
    #[arg(long, value_name = "FILE", requires = "restore_from")]
    pub restore_public_key: Option<PathBuf>,

    /// Serve Prometheus metrics at http://ADDR/metrics (text format). Plaintext on loopback
    /// only; elsewhere over TLS with --tls-cert/--tls-key. Unauthenticated, as Prometheus
    /// expects: no secret is in them, and tenant names only with --metrics-tenant-labels.
    #[arg(long, value_name = "ADDR", env = "VAULT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Label key and webhook metrics with tenant names (one series per tenant and key
    /// version). Off by default: the label sets then grow with the number of tenants.
    #[arg(long, env = "VAULT_METRICS_TENANT_LABELS")]
    pub metrics_tenant_labels: bool,

    /// Lock all of the server's memory (mlockall), so keys and secret values are never
    /// swapped to disk; the start is refused if that fails. Needs CAP_IPC_LOCK or a high
    /// enough locked-memory limit. (Core dumps are always disabled.)
    #[arg(long, env = "VAULT_MLOCK")]
    pub mlock: bool,
}

fn parse_cidr(text: &str) -> Result<Cidr, String> {
    Cidr::parse(text).map_err(|e| e.to_string())
}

/// The settings SIGHUP applies at run time (by `Args` field); a change to any other one is
/// reported as needing a restart. The TLS certificate and key files are re-read on every
/// SIGHUP, changed paths or not.
pub const RELOADABLE: [&str; 5] = [
    "tls_cert",
    "tls_key",
    "source_rate_limit",
    "max_calls_per_source",
    "log_level",
];

type LogFilter =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The running log filter, which a reload replaces.
static LOG_FILTER: std::sync::OnceLock<LogFilter> = std::sync::OnceLock::new();

/// The log filter `--log-level` gives, else VAULT_LOG's, else `info`.
fn log_filter(level: Option<&str>) -> Result<tracing_subscriber::EnvFilter, String> {
    match level {
        Some(level) => tracing_subscriber::EnvFilter::try_new(level)
            .map_err(|e| format!("--log-level {level:?}: {e}")),
        None => Ok(tracing_subscriber::EnvFilter::try_from_env("VAULT_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))),
    }
}

pub fn init_logging(level: Option<&str>) -> Result<(), String> {
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};
    let (filter, handle) = tracing_subscriber::reload::Layer::new(log_filter(level)?);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(std::io::stderr),
        )
        .init();
    let _ = LOG_FILTER.set(handle);
    Ok(())
}

/// Adds each service to the routes and its name to the list the health service reports on,
/// so that the list of services is written once.
macro_rules! register {
    ($routes:expr, $names:expr, [$($service:expr),+ $(,)?]) => {{
        let routes = $routes;
        $(
            let service = $service;
            $names.push(name_of(&service));
            let routes = routes.add_service(service);
        )+
        routes
    }};
}

/// The gRPC health service's view of the vault: every service (and the server, `""`) is
/// SERVING while the vault is initialised and unsealed, NOT_SERVING otherwise, so load
/// balancers stop sending calls to a sealed node. Unseal and seal refresh it before they
/// answer; a timer catches every other change (a cluster node that fell behind) within a
/// quarter second.
pub(crate) struct Health {
    reporter: tonic_health::server::HealthReporter,
    services: std::sync::OnceLock<Vec<&'static str>>,
    /// What the reporter says now (`None`: nothing yet).
    shown: tokio::sync::Mutex<Option<bool>>,
}

impl Health {
    /// Sets every service's status from the seal state, if it changed.
    pub(crate) async fn refresh(&self, vault: &Arc<Vault>) {
        let mut shown = self.shown.lock().await;
        let reading = Arc::clone(vault);
        let Ok(status) = tokio::task::spawn_blocking(move || reading.seal().status()).await else {
            return;
        };
        let serving = status.initialized && !status.sealed;
        if *shown == Some(serving) {
            return;
        }
        let state = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.reporter.set_service_status("", state).await;
        for name in self.services.get().map(Vec::as_slice).unwrap_or_default() {
            self.reporter.set_service_status(*name, state).await;
        }
        *shown = Some(serving);
    }
}

/// Refreshes the health service every quarter second.
async fn report_health(health: Arc<Health>, vault: Arc<Vault>) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(250));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        health.refresh(&vault).await;
    }
}

/// The gRPC name of a service (`vault.v1.Secrets`).
fn name_of<S: tonic::server::NamedService>(_: &S) -> &'static str {
    S::NAME
}

/// The storage backends `--storage` chooses from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageKind {
    Rocksdb,
    Etcd,
}

/// The etcd backends of the two stores, for leadership and fencing.
#[cfg(feature = "etcd")]
type EtcdBackends = Option<(
    Arc<vault_core::storage::EtcdStorage>,
    Arc<vault_core::storage::EtcdStorage>,
)>;
#[cfg(not(feature = "etcd"))]
type EtcdBackends = Option<std::convert::Infallible>;

/// The data store and the key store, as `--storage` says.
fn open_stores(
    args: &Args,
    data_dir: &std::path::Path,
) -> Result<(DataStore, KeyStore, EtcdBackends), String> {
    match args.storage {
        StorageKind::Rocksdb => {
            let data = DataStore::open_rocks(&data_dir.join("data"))
                .map_err(|e| format!("cannot open the data store: {e}"))?;
            let keys = KeyStore::open_rocks(&data_dir.join("keys"))
                .map_err(|e| format!("cannot open the key store: {e}"))?;
            Ok((data, keys, None))
        }
        StorageKind::Etcd => open_etcd_stores(args),
    }
}

#[cfg(feature = "etcd")]
fn open_etcd_stores(args: &Args) -> Result<(DataStore, KeyStore, EtcdBackends), String> {
    use vault_core::storage::EtcdOptions;
    if args.dev {
        return Err("--dev runs on embedded RocksDB; leave out --storage etcd".into());
    }
    if args.etcd_endpoints.is_empty() {
        return Err("--storage etcd needs --etcd-endpoints (comma-separated client URLs)".into());
    }
    if !args.etcd_prefix.ends_with('/') {
        return Err(format!(
            "--etcd-prefix must end with '/' (got {:?}): the stores live under <prefix>data/ and \
             <prefix>keys/",
            args.etcd_prefix
        ));
    }
    let user = etcd_user(args)?;
    let tls = etcd_tls(args)?;
    let options = |endpoints: &[String]| {
        let mut options = EtcdOptions::new(endpoints.to_vec(), args.etcd_prefix.clone());
        options.timeout = std::time::Duration::from_millis(args.etcd_timeout_ms.max(1));
        options.user.clone_from(&user);
        options.tls.clone_from(&tls);
        options
    };
    let key_endpoints = if args.key_store_etcd_endpoints.is_empty() {
        &args.etcd_endpoints
    } else {
        &args.key_store_etcd_endpoints
    };
    let (data, data_backend) = DataStore::open_etcd(options(&args.etcd_endpoints))
        .map_err(|e| format!("cannot open the data store: {e}"))?;
    let (keys, keys_backend) = KeyStore::open_etcd(options(key_endpoints))
        .map_err(|e| format!("cannot open the key store: {e}"))?;
    Ok((data, keys, Some((data_backend, keys_backend))))
}

/// TLS to etcd from --etcd-ca-cert and --etcd-client-cert/--etcd-client-key.
#[cfg(feature = "etcd")]
fn etcd_tls(args: &Args) -> Result<Option<Arc<vault_core::storage::EtcdTls>>, String> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("{flag} {}: cannot read it: {e}", path.display()))
    };
    let Some(ca) = &args.etcd_ca_cert else {
        if args.etcd_client_cert.is_some() {
            return Err("--etcd-client-cert needs --etcd-ca-cert (TLS to etcd)".into());
        }
        return Ok(None);
    };
    let ca_pem = read("--etcd-ca-cert", ca)?;
    let identity = match (&args.etcd_client_cert, &args.etcd_client_key) {
        (Some(cert), Some(key)) => Some((
            read("--etcd-client-cert", cert)?,
            zeroize::Zeroizing::new(read("--etcd-client-key", key)?),
        )),
        _ => None,
    };
    Ok(Some(Arc::new(vault_core::storage::EtcdTls::new(
        ca_pem, identity,
    ))))
}

/// The etcd user of --etcd-user, with its password from --etcd-password-file or
/// VAULT_ETCD_PASSWORD.
#[cfg(feature = "etcd")]
fn etcd_user(args: &Args) -> Result<Option<Arc<vault_core::storage::EtcdUser>>, String> {
    let Some(name) = &args.etcd_user else {
        if args.etcd_password_file.is_some() {
            return Err("--etcd-password-file needs --etcd-user".into());
        }
        return Ok(None);
    };
    let password = match &args.etcd_password_file {
        Some(path) => {
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "--etcd-password-file {}: cannot read it: {e}",
                    path.display()
                )
            })?);
            zeroize::Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned())
        }
        None => match std::env::var("VAULT_ETCD_PASSWORD") {
            Ok(password) => zeroize::Zeroizing::new(password),
            Err(_) => {
                return Err(
                    "--etcd-user needs a password: --etcd-password-file or VAULT_ETCD_PASSWORD"
                        .into(),
                );
            }
        },
    };
    if password.is_empty() {
        return Err(
            "the etcd password (--etcd-password-file or VAULT_ETCD_PASSWORD) is empty".into(),
        );
    }
    Ok(Some(Arc::new(vault_core::storage::EtcdUser::new(
        name.clone(),
        password,
    ))))
}

#[cfg(not(feature = "etcd"))]
fn open_etcd_stores(_: &Args) -> Result<(DataStore, KeyStore, EtcdBackends), String> {
    Err("this vault-server was built without the etcd feature".into())
}

/// The auto seal of `--seal transit ...` or `--danger-seal-key-file`, if any.
fn auto_seal_of(args: &Args) -> Result<Option<Arc<dyn vault_core::autoseal::AutoSeal>>, String> {
    let transit_flags = [
        ("--seal-addr", args.seal_addr.is_some()),
        ("--seal-key", args.seal_key.is_some()),
        ("--seal-tenant", args.seal_tenant.is_some()),
        ("--seal-token-file", args.seal_token_file.is_some()),
        ("--seal-ca-file", args.seal_ca_file.is_some()),
    ];
    if args.seal.is_none()
        && let Some((flag, _)) = transit_flags.iter().find(|(_, given)| *given)
    {
        return Err(format!(
            "{flag} is a setting of the transit seal: give --seal transit"
        ));
    }
    if args.dev && (args.seal.is_some() || args.danger_seal_key_file.is_some()) {
        return Err(
            "--dev unseals with the share it keeps in the data directory; leave out --seal".into(),
        );
    }
    if let Some(path) = &args.danger_seal_key_file {
        tracing::warn!(
            file = %path.display(),
            "DANGER: the unseal key is wrapped by a key in a file (--danger-seal-key-file); for tests only"
        );
        let seal = vault_core::autoseal::FileSeal::from_file(path).map_err(|e| e.to_string())?;
        return Ok(Some(Arc::new(seal)));
    }
    if args.seal.as_deref() != Some("transit") {
        return Ok(None);
    }
    let need = |flag: &str, value: &Option<String>| {
        value
            .clone()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| format!("--seal transit needs {flag}"))
    };
    let addr = need("--seal-addr", &args.seal_addr)?;
    let key = need("--seal-key", &args.seal_key)?;
    let (tenant, key) = match (key.split_once('/'), &args.seal_tenant) {
        (Some((tenant, name)), None) => (tenant.to_owned(), name.to_owned()),
        (None, Some(tenant)) => (tenant.clone(), key),
        (Some(_), Some(_)) => {
            return Err(
                "--seal-key TENANT/NAME names the tenant already; leave out --seal-tenant".into(),
            );
        }
        (None, None) => {
            return Err(
                "--seal transit needs the key's tenant: --seal-tenant, or --seal-key TENANT/NAME"
                    .into(),
            );
        }
    };
    let token_file = args
        .seal_token_file
        .clone()
        .ok_or_else(|| "--seal transit needs --seal-token-file".to_owned())?;
    let seal = vault_client::transit::TransitSeal::start(vault_client::transit::TransitSettings {
        addr,
        tenant,
        key,
        token_file,
        ca_file: args.seal_ca_file.clone(),
    })?;
    Ok(Some(Arc::new(seal)))
}

/// With an auto seal: unseals the vault whenever it is sealed (at start, and after the seal
/// did not answer), backing off from 1 s to 30 s while it fails; the last failure is in
/// status. A vault an operator sealed stays sealed until the server restarts, as with Vault.
async fn auto_unseal(shared: Arc<Shared>) {
    const IDLE: std::time::Duration = std::time::Duration::from_secs(1);
    const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(30);
    let mut backoff = IDLE;
    loop {
        let vault = Arc::clone(&shared.vault);
        let due = tokio::task::spawn_blocking(move || {
            let status = vault.seal().status();
            // One read of the seal configuration (status refreshes it while sealed).
            status.auto_sealed() && status.sealed && !vault.seal().sealed_by_request()
        })
        .await
        .unwrap_or(false);
        let mut wait = IDLE;
        if due {
            let vault = Arc::clone(&shared.vault);
            let outcome =
                tokio::task::spawn_blocking(move || vault.seal().auto_unseal_if_due()).await;
            match outcome {
                Ok(Ok(status)) if !status.sealed => {
                    tracing::info!(seal = %status.seal_type, "unsealed with the auto seal");
                    shared.set_seal_error(String::new());
                    record_auto_unseal(
                        &shared,
                        format!("unsealed with the {} auto seal", status.seal_type),
                    )
                    .await;
                    shared.health.refresh(&shared.vault).await;
                    backoff = IDLE;
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, retry_in_secs = backoff.as_secs(), "auto unseal failed");
                    let text = error.to_string();
                    // One record per change of reason, not one per retry.
                    if shared.seal_error() != text {
                        record_auto_unseal(&shared, format!("auto unseal failed: {text}")).await;
                    }
                    shared.set_seal_error(text);
                    wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(error) => tracing::error!(%error, "the auto unseal task failed"),
            }
        }
        tokio::time::sleep(wait).await;
    }
}

/// An audit record of the auto unseal loop, written off the async workers.
async fn record_auto_unseal(shared: &Shared, detail: String) {
    let Some(audit) = shared.vault.audit().cloned() else {
        return;
    };
    let mut entry = system_entry(detail);
    entry.method = "auto-unseal".into();
    match tokio::task::spawn_blocking(move || audit.append(entry)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::error!(%error, "cannot record the auto unseal in the audit log"),
        Err(error) => tracing::error!(%error, "the audit task of the auto unseal failed"),
    }
}

impl Shared {
    /// The auto seal's last failure, if the vault is sealed because of it.
    pub(crate) fn seal_error(&self) -> String {
        self.seal_error
            .lock()
            .map(|error| error.clone())
            .unwrap_or_default()
    }

    fn set_seal_error(&self, error: String) {
        if let Ok(mut current) = self.seal_error.lock() {
            *current = error;
        }
    }
}

/// What every service shares.
pub(crate) struct Shared {
    /// The auto seal's last failure while the vault is sealed (status shows it).
    seal_error: std::sync::Mutex<String>,
    /// `--backup-keep`: key backups kept (also after a backup a caller takes).
    pub(crate) backup_keep: usize,
    pub vault: Arc<Vault>,
    pub node_id: String,
    /// Recent failed logins per source; logins from a source that keeps failing are slowed.
    pub login_failures: LoginFailures,
    /// Webhook host lookups, bounded in all and per tenant.
    pub webhook_lookups: Arc<webhooks::Lookups>,
    /// The watches open, their limits and send timeout, and the stop signal that ends them.
    pub watches: watch::Watches,
    /// This node's part in a cluster, on etcd.
    pub cluster: ClusterHandle,
    /// What the gRPC health service says.
    pub health: Arc<Health>,
}

pub async fn run(loaded: config::Loaded) -> Result<(), String> {
    let config::Loaded {
        args,
        values: loaded_values,
        file: config_file,
    } = loaded;
    if let Some(file) = &config_file {
        tracing::info!(file = %file.display(), "settings read from the config file");
    }
    let server_cert = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::ServerCert::load(cert, key)?),
        _ => None,
    };
    let tls = match &server_cert {
        Some(cert) => Some(tls::server_config(
            cert,
            args.tls_client_ca.as_deref(),
            &[b"h2"],
        )?),
        None => None,
    };
    if args.dev && !args.listen.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {} in dev mode: dev mode is loopback only",
            args.listen
        ));
    }
    if tls.is_none() && !args.listen.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {} without TLS: plaintext gRPC is allowed on loopback addresses only \
             (use --listen 127.0.0.1:PORT, or give --tls-cert and --tls-key)",
            args.listen
        ));
    }
    if let Some(http) = args.http_listen {
        if args.dev && !http.ip().is_loopback() {
            return Err(format!(
                "refusing --http-listen {http} in dev mode: dev mode is loopback only"
            ));
        }
        if tls.is_none() && !http.ip().is_loopback() {
            return Err(format!(
                "refusing --http-listen {http} without TLS: plaintext HTTP is allowed on loopback \
                 addresses only (give --tls-cert and --tls-key)"
            ));
        }
    }
    let web_tls = match &server_cert {
        Some(cert) => Some(tls::server_config(
            cert,
            args.tls_client_ca.as_deref(),
            &[b"h2", b"http/1.1"],
        )?),
        None => None,
    };
    let http_tls = web_tls.clone().filter(|_| args.http_listen.is_some());
    if let Some(address) = args.metrics_listen {
        metrics::check_listen(address, tls.is_some())?;
    }
    if args.max_request_bytes <= args.max_value_bytes {
        return Err(format!(
            "--max-request-bytes ({}) must be larger than --max-value-bytes ({})",
            args.max_request_bytes, args.max_value_bytes
        ));
    }
    let data_dir = match (&args.data_dir, args.dev) {
        (Some(dir), _) => dir.clone(),
        (None, true) => PathBuf::from("vault-dev-data"),
        (None, false) => {
            return Err("--data-dir is required (or use --dev to try the vault)".into());
        }
    };
    if let (Some(data_file), Some(key_file)) = (&args.restore_from, &args.restore_keys) {
        if args.storage != StorageKind::Rocksdb {
            return Err("--restore-from restores the embedded RocksDB stores; it does not apply to --storage etcd".into());
        }
        backup::restore_at_start(
            data_file,
            key_file,
            args.restore_public_key.as_deref(),
            &data_dir,
        )?;
    }
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    let (data, keys, etcd_backends) = open_stores(&args, &data_dir)?;
    let interval_ms = args.maintenance_interval_ms.max(1);
    let seconds = |s: u64| i64::try_from(s.saturating_mul(1_000_000_000)).unwrap_or(i64::MAX);
    let config = VaultConfig {
        max_value_bytes: args.max_value_bytes,
        keys: KeyPolicy {
            budget: args.key_budget,
            max_age_nanos: seconds(args.key_max_age_secs),
            max_live_versions: args.key_max_live_versions,
            reserve_block: args.key_reserve_block,
            rewrap_per_round: usize::try_from(
                (args.rewrap_rate.saturating_mul(interval_ms) / 1000).max(1),
            )
            .unwrap_or(usize::MAX),
            shred_delay_nanos: seconds(args.tenant_shred_delay_secs),
            invocation_log: args.danger_invocation_log.clone(),
        },
        default_max_versions: args.default_max_versions,
        feed: FeedPolicy {
            retention_nanos: seconds(args.feed_retention_secs),
            expiry_lead_nanos: seconds(args.expiry_lead_secs),
        },
        webhooks: WebhookPolicy {
            allow: args.webhook_allow_networks.clone(),
            max_attempts: args.webhook_max_attempts.max(1),
            backoff_base_nanos: i64::try_from(args.webhook_backoff_ms.saturating_mul(1_000_000))
                .unwrap_or(i64::MAX),
            backoff_max_nanos: seconds(args.webhook_backoff_max_secs),
        },
        kms: KmsPolicy {
            max_plaintext_bytes: args.kms_max_plaintext_bytes,
            max_batch_items: args.kms_max_batch_items.max(1),
            deletion_delay_nanos: match args.kms_deletion_delay_ms {
                Some(ms) => i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
                None => seconds(args.kms_deletion_delay_secs),
            },
            allow_exportable: args.kms_allow_exportable_keys,
        },
        tenant_root_key_per_minute: args.tenant_root_key_ops_per_minute,
        token_purge_per_round: 1024,
        max_token_children: args.max_token_children.max(1),
        key_backup_dir: Some(
            args.key_backup_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("key-backups")),
        ),
    };
    config
        .keys
        .validate()
        .map_err(|e| format!("key settings: {e}"))?;
    let mut vault =
        Vault::open(data, keys, config).map_err(|e| format!("cannot open the vault: {e}"))?;
    let node_id = args.node_id.clone().unwrap_or_else(host_name);
    if etcd_backends.is_some() {
        // Several nodes share the stores: each keeps its own audit head.
        vault = vault.with_node_id(&node_id);
    }
    let audit = if args.danger_disable_audit {
        tracing::warn!(
            "DANGER: the audit log is disabled (--danger-disable-audit); calls leave no trace"
        );
        None
    } else {
        let audit = open_audit(&args, &data_dir, &node_id, &vault)?;
        vault = vault.with_audit(Arc::clone(&audit));
        Some(audit)
    };
    if let Some(seal) = auto_seal_of(&args)? {
        vault = vault.with_auto_seal(seal);
    }
    let vault = Arc::new(vault);
    alerts::install(
        alerts::AlertRules {
            denials_per_minute: args.alert_denials_per_minute,
            distinct_reads_per_minute: args.alert_distinct_reads_per_minute,
            new_network: args.alert_new_network,
        },
        Arc::clone(&vault),
        audit.clone(),
    );

    if args.dev {
        dev::bootstrap(&vault, &data_dir)?;
        if let Some(audit) = &audit {
            audit
                .append(system_entry(
                    "dev mode: unsealed with the share kept in the data directory".into(),
                ))
                .map_err(|e| e.to_string())?;
        }
    }
    backup::record_restore(&data_dir, audit.as_deref())?;
    if let Some(audit) = &audit {
        tokio::spawn(persist_audit_head(Arc::clone(&vault), Arc::clone(audit)));
        #[cfg(unix)]
        if let Some(socket) = &args.audit_syslog_socket {
            vault_core::audit::sink::spawn_syslog_sink(
                Arc::clone(audit),
                socket.clone(),
                node_id.clone(),
            )
            .map_err(|e| format!("cannot start the syslog sink: {e}"))?;
        }
    }

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    let cluster = start_cluster(&args, &node_id, &vault, etcd_backends, local);
    tokio::spawn(maintain(
        Arc::clone(&vault),
        std::time::Duration::from_millis(interval_ms),
        cluster.clone(),
    ));
    if let Some(dir) = &args.backup_dir {
        tokio::spawn(backup::scheduled(
            Arc::clone(&vault),
            backup::Schedule {
                dir: dir.clone(),
                interval: args.backup_interval,
                keep: args.backup_keep as usize,
                node: node_id.clone(),
            },
            cluster.clone(),
        ));
    }
    // Turns true when the server begins to shut down: open watches end with a resume hint
    // (instead of holding the shutdown up) and the webhook dispatcher stops.
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let stop_for_http = stop.clone();
    let stop_for_metrics = stop.clone();
    let webhook_lookups = Arc::new(webhooks::Lookups::new(std::time::Duration::from_millis(
        args.webhook_dns_timeout_ms.max(1),
    )));
    tokio::spawn(dispatch_while_active(
        Arc::clone(&vault),
        webhooks::DispatchConfig {
            timeout: std::time::Duration::from_millis(args.webhook_timeout_ms.max(1)),
            limits: vault_core::vault::DispatchLimits {
                total: args.webhook_max_in_flight.max(1),
                per_tenant: args.webhook_max_in_flight_per_tenant.max(1),
                per_host: args.webhook_max_in_flight_per_host.max(1),
            },
        },
        Arc::clone(&webhook_lookups),
        stop.clone(),
        cluster.clone(),
    ));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let health = Arc::new(Health {
        reporter: health_reporter,
        services: std::sync::OnceLock::new(),
        shown: tokio::sync::Mutex::new(None),
    });
    let shared = Arc::new(Shared {
        seal_error: std::sync::Mutex::new(String::new()),
        vault: Arc::clone(&vault),
        node_id: node_id.clone(),
        backup_keep: args.backup_keep as usize,
        login_failures: LoginFailures::new(LOGIN_FAILURE_WINDOW),
        webhook_lookups,
        watches: watch::Watches::new(
            std::time::Duration::from_millis(args.watch_send_timeout_ms.max(1)),
            stop,
            watch::WatchLimits {
                per_token: args.max_watches_per_token.max(1),
                per_tenant: args.max_watches_per_tenant.max(1),
            },
        ),
        cluster: cluster.clone(),
        health: Arc::clone(&health),
    });

    // Both versions: grpcurl and grpcio-reflection of some ages speak only v1alpha.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("cannot build the reflection service: {e}"))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| format!("cannot build the reflection service: {e}"))?;

    let limit = args.max_request_bytes;
    let http_listener = match args.http_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|e| format!("cannot listen on {address} (--http-listen): {e}"))?,
        ),
        None => None,
    };
    if let Some(listener) = &http_listener {
        let local = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?;
        println!("{}", http::banner(local, http_tls.is_some()));
        tracing::info!(%local, "Vault's HTTP API listening");
    }
    if let Some(address) = args.metrics_listen {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| format!("cannot listen on {address} (--metrics-listen): {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?;
        let metrics_tls = web_tls.clone();
        println!(
            "vault-server metrics on {}://{local}/metrics",
            if metrics_tls.is_some() {
                "https"
            } else {
                "http"
            }
        );
        tracing::info!(%local, "metrics listening");
        let limits = transport::ConnectionLimits {
            header_timeout: std::time::Duration::from_millis(args.header_timeout_ms.max(1)),
            idle_timeout: std::time::Duration::from_secs(args.idle_connection_timeout_secs.max(1)),
            max_per_source: METRICS_CONNECTIONS_PER_SOURCE,
            trusted_proxies: Vec::new(),
        };
        let header_timeout = limits.header_timeout;
        tokio::spawn(metrics::serve(
            transport::incoming(listener, limits, transport::ConnectionPlaces::default()),
            metrics_tls,
            header_timeout,
            metrics::Endpoint::new(metrics::Scrape {
                vault: Arc::clone(&vault),
                audit: audit.clone(),
                cluster: cluster.clone(),
                tenant_labels: args.metrics_tenant_labels,
            }),
            stop_for_metrics,
        ));
    }
    // Before the listening line: a signal from then on stops the server gracefully, and a
    // SIGHUP reloads (its default action would end the process).
    let shutdown = shutdown_signal();
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("cannot listen for SIGHUP: {e}"))?;
    // The first line on stdout is for humans and for tests that start the server on port 0
    // (the HTTP API's line, if any, comes before it).
    println!("vault-server listening on {local}");
    let _ = std::io::stdout().flush();
    tracing::info!(%local, node = %node_id, storage = vault.storage_kind(), "listening");

    let builder = grpc_builder(&args);
    let call_layer = call::CallLayer::new(
        limit,
        audit.clone(),
        call::Limits {
            trusted_proxies: args.trusted_proxies.clone(),
            source_rate: args.source_rate_limit,
            max_concurrent: args.max_concurrent_calls,
            max_per_source: args.max_calls_per_source,
            body_timeout: std::time::Duration::from_millis(args.request_body_timeout_ms.max(1)),
            max_concurrent_aux: args.max_concurrent_health_calls,
        },
    );
    #[cfg(feature = "etcd")]
    let call_layer = match &cluster {
        Some(cluster) => call_layer.with_forwarder(Arc::clone(cluster) as Arc<dyn call::Forwarder>),
        None => call_layer,
    };
    // Every service once: its route, and its status in the health service.
    let handlers = serve::Handlers::new(Arc::clone(&shared));
    let mut served = Vec::new();
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha);
    let routes = register!(
        routes,
        served,
        [
            SystemServer::new(handlers.clone()).max_decoding_message_size(limit),
            SecretsServer::new(handlers.clone()).max_decoding_message_size(limit),
            TenantsServer::new(handlers.clone()).max_decoding_message_size(limit),
            AuditServer::new(handlers.clone()).max_decoding_message_size(limit),
            TokensServer::new(handlers.clone()).max_decoding_message_size(limit),
            PoliciesServer::new(handlers.clone()).max_decoding_message_size(limit),
            LoginServer::new(handlers.clone()).max_decoding_message_size(limit),
            AppRolesServer::new(handlers.clone()).max_decoding_message_size(limit),
            JwtAuthServer::new(handlers.clone()).max_decoding_message_size(limit),
            MfaServer::new(handlers.clone()).max_decoding_message_size(limit),
            KeysServer::new(handlers.clone()).max_decoding_message_size(limit),
            KmsServer::new(handlers.clone()).max_decoding_message_size(limit),
            WatchServer::new(handlers.clone()).max_decoding_message_size(limit),
            WebhooksServer::new(handlers.clone()).max_decoding_message_size(limit),
        ]
    );
    // Every service has its status before the first call is served.
    let _ = health.services.set(served);
    health.refresh(&vault).await;
    tokio::spawn(report_health(Arc::clone(&health), Arc::clone(&vault)));
    if args.seal.is_some() || args.danger_seal_key_file.is_some() {
        tokio::spawn(auto_unseal(Arc::clone(&shared)));
    }
    // Connections are bounded per source and closed when they carry no request (see
    // transport.rs), gRPC's and the HTTP API's counted together.
    let connection_limits = connection_limits(&args);
    let connection_places = transport::ConnectionPlaces::default();
    let http_served = http_listener.map(|listener| {
        let gateway = http::gateway(Arc::clone(&shared), routes.clone(), call_layer.clone());
        tokio::spawn(http::serve(
            transport::incoming(
                listener,
                connection_limits.clone(),
                Arc::clone(&connection_places),
            ),
            http::HttpConfig {
                tls: http_tls,
                connections: connection_limits.clone(),
                max_body_bytes: limit,
                body_timeout: std::time::Duration::from_millis(args.request_body_timeout_ms.max(1)),
                max_streams_per_connection: args.max_streams_per_connection,
            },
            gateway,
            stop_for_http,
        ))
    });
    #[cfg(unix)]
    tokio::spawn(reload_on_hangup(
        hangups,
        Reloading {
            argv: std::env::args_os().collect(),
            values: loaded_values,
            cert: server_cert.clone(),
            call_layer: call_layer.clone(),
            audit: audit.clone(),
            file: config_file,
        },
    ));
    let router = builder.layer(call_layer).add_routes(routes);
    let draining = Arc::new(tokio::sync::Notify::new());
    let stopping = {
        let (audit, draining) = (audit.clone(), Arc::clone(&draining));
        async move {
            shutdown.await;
            stop_sender.send_replace(true);
            // Signed at once, in case the drain below never ends.
            final_checkpoint(audit.as_ref()).await;
            draining.notify_one();
        }
    };
    // TCP_NODELAY is set on each connection, or small responses wait for the peer's delayed
    // ACK (~40 ms). TLS handshakes are made by tls.rs, with the certificate SIGHUP reloads.
    let accepted = transport::incoming(listener, connection_limits.clone(), connection_places);
    let serve: std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match tls {
        Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
            tls::incoming(accepted, tls, connection_limits.header_timeout),
            stopping,
        )),
        None => Box::pin(router.serve_with_incoming_shutdown(accepted, stopping)),
    };
    // Open connections get this long to finish after the signal (a health watch would
    // otherwise hold the stop up for ever).
    tokio::select! {
        served = serve => served.map_err(|e| format!("server failed: {e}"))?,
        () = async {
            draining.notified().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => tracing::warn!(seconds = DRAIN_TIMEOUT.as_secs(), "connections still open after the drain timeout; stopping"),
    }
    // The HTTP API's connections end their requests too (within the same drain time).
    if let Some(http_served) = http_served
        && tokio::time::timeout(DRAIN_TIMEOUT, http_served)
            .await
            .is_err()
    {
        tracing::warn!(
            seconds = DRAIN_TIMEOUT.as_secs(),
            "HTTP API connections still open after the drain timeout; stopping"
        );
    }
    // And once more for the calls that ended while draining.
    final_checkpoint(audit.as_ref()).await;
    // The memory tables to table files: the next start replays no write-ahead log.
    let flushing = Arc::clone(&vault);
    // Bounded: a stuck disk does not keep the process from stopping (what was acknowledged is
    // in the synced write-ahead log already).
    let flushed = tokio::time::timeout(
        DRAIN_TIMEOUT,
        tokio::task::spawn_blocking(move || flushing.flush_stores()),
    )
    .await;
    match flushed {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "stores not flushed at stop; the next start replays their logs")
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "stores not flushed at stop"),
        Err(_) => tracing::warn!("stores not flushed within the drain timeout; stopping"),
    }
    tracing::info!("shut down");
    Ok(())
}

/// The gRPC server with the HTTP/2 settings of `args` (the vault's and the null baseline's).
fn grpc_builder(args: &Args) -> Server {
    Server::builder()
        .max_concurrent_streams(args.max_streams_per_connection.max(1))
        .http2_keepalive_interval(
            (args.http2_keepalive_secs > 0)
                .then(|| std::time::Duration::from_secs(args.http2_keepalive_secs)),
        )
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .http2_max_header_list_size(64 * 1024)
}

/// How accepted connections are bounded (see transport.rs).
fn connection_limits(args: &Args) -> transport::ConnectionLimits {
    transport::ConnectionLimits {
        header_timeout: std::time::Duration::from_millis(args.header_timeout_ms.max(1)),
        idle_timeout: std::time::Duration::from_secs(args.idle_connection_timeout_secs.max(1)),
        max_per_source: args.max_connections_per_source,
        trusted_proxies: args.trusted_proxies.clone(),
    }
}

/// How long open connections may take to finish after a stop signal.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Signs a checkpoint over the audit records written so far, so that the log of a server
/// stopped right after its last call verifies offline (while sealed there is no key to sign
/// with; the first checkpoint after the next unseal covers those records).
async fn final_checkpoint(audit: Option<&Arc<AuditLog>>) {
    let Some(audit) = audit.cloned() else { return };
    match tokio::task::spawn_blocking(move || audit.checkpoint_now()).await {
        Ok(Ok(())) => tracing::info!("audit checkpoint signed at shutdown"),
        Ok(Err(e)) => tracing::warn!(error = %e, "no audit checkpoint at shutdown"),
        Err(e) => tracing::warn!(error = %e, "no audit checkpoint at shutdown"),
    }
}

/// Opens the audit log: recovery (torn tail, crashed intents, tail check against the head the
/// vault's state recorded) happens here, and corruption refuses start-up.
fn open_audit(
    args: &Args,
    data_dir: &std::path::Path,
    node_id: &str,
    vault: &Vault,
) -> Result<Arc<AuditLog>, String> {
    let dir = args
        .audit_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("audit"));
    let mut config = AuditConfig::new(dir.clone(), node_id.to_owned());
    config.segment_bytes = args.audit_segment_bytes.max(1);
    config.checkpoint_records = args.audit_checkpoint_records.max(1);
    config.checkpoint_interval = std::time::Duration::from_millis(args.audit_checkpoint_ms.max(1));
    config.retention = (args.audit_retention_days > 0)
        .then(|| std::time::Duration::from_secs(args.audit_retention_days * 86_400));
    config.fault_file = args.danger_audit_fault_file.clone();
    config.observer = Some(Arc::new(metrics::AuditMetrics));
    config.expected_head = vault
        .stored_audit_head()
        .map_err(|e| format!("cannot read the stored audit head: {e}"))?;
    let audit = AuditLog::open(config).map_err(|e| match e {
        AuditError::Corrupt(broken) => {
            format!("refusing to start: the audit log is corrupt: {broken}")
        }
        other => format!("cannot open the audit log in {}: {other}", dir.display()),
    })?;
    let recovery = &audit.recovery;
    tracing::info!(records = recovery.records, repaired_bytes = recovery.repaired_bytes, crashed_intents = recovery.crashed_intents, dir = %dir.display(), "audit log opened");
    Ok(Arc::new(audit))
}

/// Keeps the audit head in the vault's own state (at most once a second), so a log cut short
/// while the server is down is noticed at the next start.
async fn persist_audit_head(vault: Arc<Vault>, audit: Arc<AuditLog>) {
    let mut stored = None;
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let head = audit.head();
        if stored.as_ref() == Some(&head) {
            continue;
        }
        let (vault, to_store) = (Arc::clone(&vault), head.clone());
        match tokio::task::spawn_blocking(move || vault.store_audit_head(&to_store)).await {
            Ok(Ok(())) => stored = Some(head),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot store the audit head"),
            Err(e) => tracing::warn!(error = %e, "cannot store the audit head"),
        }
    }
}

/// This node's part in a cluster (`--storage etcd`): `None` on embedded storage, where the one
/// node is always the active one.
#[cfg(feature = "etcd")]
pub(crate) type ClusterHandle = Option<Arc<cluster::Cluster>>;
#[cfg(not(feature = "etcd"))]
pub(crate) type ClusterHandle = Option<std::convert::Infallible>;

/// Whether this node runs the background work and serves calls itself.
pub(crate) fn is_active(cluster: &ClusterHandle) -> bool {
    #[cfg(feature = "etcd")]
    return cluster.as_ref().is_none_or(|c| c.is_active());
    #[cfg(not(feature = "etcd"))]
    return cluster.is_none();
}

#[cfg(feature = "etcd")]
fn start_cluster(
    args: &Args,
    node_id: &str,
    vault: &Arc<Vault>,
    backends: EtcdBackends,
    local: SocketAddr,
) -> ClusterHandle {
    let (data, keys) = backends?;
    let cluster = cluster::Cluster::new(
        cluster::ClusterConfig {
            node_id: node_id.to_owned(),
            advertise: args.advertise.clone().unwrap_or_else(|| local.to_string()),
            lease_ttl: std::time::Duration::from_secs(args.lease_ttl_secs.max(2)),
            prefix: args.etcd_prefix.clone(),
        },
        Arc::clone(vault),
        data,
        keys,
        !args.key_store_etcd_endpoints.is_empty()
            && args.key_store_etcd_endpoints != args.etcd_endpoints,
    );
    tokio::spawn(Arc::clone(&cluster).run());
    Some(cluster)
}

#[cfg(not(feature = "etcd"))]
fn start_cluster(
    _: &Args,
    _: &str,
    _: &Arc<Vault>,
    _: EtcdBackends,
    _: SocketAddr,
) -> ClusterHandle {
    None
}

/// Delivers webhooks while this node is the active one (always, on embedded storage).
async fn dispatch_while_active(
    vault: Arc<Vault>,
    config: webhooks::DispatchConfig,
    lookups: Arc<webhooks::Lookups>,
    stop: tokio::sync::watch::Receiver<bool>,
    cluster: ClusterHandle,
) {
    #[cfg(feature = "etcd")]
    if let Some(cluster) = cluster {
        let mut view = cluster.subscribe();
        let mut stopping = stop.clone();
        loop {
            // Until this node is active (or the server stops).
            while view.borrow_and_update().role != cluster::Role::Active {
                tokio::select! {
                    changed = view.changed() => if changed.is_err() { return },
                    _ = stopping.changed() => return,
                }
                if *stopping.borrow() {
                    return;
                }
            }
            // Deliver until this node stops being active or the server stops.
            let (end, ended) = tokio::sync::watch::channel(false);
            let mut watch_role = cluster.subscribe();
            let mut watch_stop = stop.clone();
            let ender = tokio::spawn(async move {
                loop {
                    if watch_role.borrow_and_update().role != cluster::Role::Active
                        || *watch_stop.borrow_and_update()
                    {
                        let _ = end.send(true);
                        return;
                    }
                    tokio::select! {
                        changed = watch_role.changed() => if changed.is_err() { let _ = end.send(true); return },
                        changed = watch_stop.changed() => if changed.is_err() { let _ = end.send(true); return },
                    }
                }
            });
            webhooks::dispatch(Arc::clone(&vault), config, Arc::clone(&lookups), ended).await;
            ender.abort();
            if *stop.borrow() {
                return;
            }
        }
    }
    #[cfg(not(feature = "etcd"))]
    let _ = cluster;
    webhooks::dispatch(vault, config, lookups, stop).await;
}

/// Background key maintenance: rotation by age, the retirement job (throttled by the rounds'
/// spacing and size), and crypto-shredding. A failing round is logged and retried next time.
/// On a cluster, only the active node runs it.
async fn maintain(vault: Arc<Vault>, interval: std::time::Duration, cluster: ClusterHandle) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !is_active(&cluster) {
            continue;
        }
        let round = Arc::clone(&vault);
        match tokio::task::spawn_blocking(move || round.maintain_tasks()).await {
            Ok(Ok(reports)) => {
                let mut report = vault_core::vault::MaintenanceReport::default();
                for task in &reports {
                    metrics::metrics().task_ran(task.task, task.failed);
                    report.add(&task.done);
                    report.failed += task.failed;
                }
                if report != vault_core::vault::MaintenanceReport::default() {
                    tracing::info!(
                        rotated = report.rotated,
                        rewrapped = report.rewrapped,
                        retired = report.retired,
                        shredded = report.shredded,
                        purged = report.purged,
                        failed_tasks = report.failed,
                        "maintenance"
                    );
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "key maintenance failed; retrying"),
            Err(e) => tracing::warn!(error = %e, "key maintenance panicked; retrying"),
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "vault-node".into())
}

/// What a SIGHUP reload needs: how the server was started, what was in force, and what it
/// can change.
struct Reloading {
    argv: Vec<std::ffi::OsString>,
    /// The settings' raw values in force (a reload updates the ones it applies).
    values: std::collections::BTreeMap<String, Vec<std::ffi::OsString>>,
    cert: Option<Arc<tls::ServerCert>>,
    call_layer: call::CallLayer,
    audit: Option<Arc<AuditLog>>,
    file: Option<PathBuf>,
}

impl Reloading {
    /// Re-reads the command line, the environment and the config file, and applies what can
    /// change at run time: all of it or, when something is wrong, none of it. The message
    /// names the keys (never their values).
    fn reload(&mut self) -> Result<String, String> {
        let loaded = config::load(self.argv.clone()).map_err(|e| e.to_string())?;
        let args = &loaded.args;
        let changed = config::changed(&self.values, &loaded.values);
        let (applied, restart): (Vec<&String>, Vec<&String>) = changed
            .iter()
            .partition(|key| RELOADABLE.contains(&key.as_str()));
        let mut applied: Vec<String> = applied.into_iter().cloned().collect();
        let mut restart: Vec<String> = restart.into_iter().cloned().collect();
        let filter = if changed.iter().any(|key| key == "log_level") {
            Some(log_filter(args.log_level.as_deref())?)
        } else {
            None
        };
        match (&self.cert, &args.tls_cert, &args.tls_key) {
            (Some(cert), Some(cert_file), Some(key_file)) => {
                let before = cert.fingerprint();
                cert.reload(cert_file, key_file)?;
                let after = cert.fingerprint();
                if before != after {
                    applied.push(format!(
                        "TLS certificate (now sha256 {})",
                        after.get(..16).unwrap_or(&after)
                    ));
                }
            }
            (Some(_), _, _) => restart.push("TLS off (it stays on until a restart)".into()),
            (None, Some(_), _) => restart.push("TLS on (it was off at start)".into()),
            (None, None, _) => {}
        }
        if let Some(filter) = filter
            && let Some(handle) = LOG_FILTER.get()
        {
            handle
                .reload(filter)
                .map_err(|e| format!("the log filter: {e}"))?;
        }
        self.call_layer
            .set_source_limits(args.source_rate_limit, args.max_calls_per_source);
        for key in RELOADABLE {
            match loaded.values.get(key) {
                Some(value) => self.values.insert(key.to_owned(), value.clone()),
                None => self.values.remove(key),
            };
        }
        let list = |keys: &[String]| {
            if keys.is_empty() {
                "nothing".to_owned()
            } else {
                keys.join(", ")
            }
        };
        Ok(format!(
            "configuration reloaded on SIGHUP{}: applied {}; needs a restart: {}",
            self.file
                .as_ref()
                .map_or_else(String::new, |f| format!(" from {}", f.display())),
            list(&applied),
            list(&restart)
        ))
    }
}

/// Reloads on every SIGHUP, and audits each reload, refused ones included.
#[cfg(unix)]
async fn reload_on_hangup(mut hangups: tokio::signal::unix::Signal, state: Reloading) {
    let mut state = Some(state);
    while hangups.recv().await.is_some() {
        let Some(mut reloading) = state.take() else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || {
            let detail = match reloading.reload() {
                Ok(summary) => {
                    tracing::info!("{summary}");
                    summary
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration reload refused; the settings in force stay");
                    format!(
                        "configuration reload on SIGHUP refused: {e}; the settings in force stay"
                    )
                }
            };
            if let Some(audit) = &reloading.audit
                && let Err(e) = audit.append(system_entry(detail))
            {
                tracing::error!(error = %e, "the reload's audit record was not written");
            }
            reloading
        })
        .await;
        match done {
            Ok(reloading) => state = Some(reloading),
            Err(e) => {
                tracing::error!(error = %e, "the reload failed; SIGHUP is ignored from now on");
                return;
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when the
/// future is first polled: a signal sent as soon as the listening line is out must stop the
/// server the graceful way, not kill it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut terminate, mut interrupt) = signals;
            let wait = |signal: Option<tokio::signal::unix::Signal>| async move {
                match signal {
                    Some(mut signal) => drop(signal.recv().await),
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(terminate.take()) => {}
                () = wait(interrupt.take()) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown requested");
    }
}
