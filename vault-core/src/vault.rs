//! The vault: seal state machine, keyring and the operations on tenants and secrets.
//!
//! Key hierarchy (DESIGN.md): shares -> unseal key -> root key -> per-tenant KEK versions ->
//! per-secret-version DEK -> value. Only the sealed forms are ever stored; the unseal key exists
//! only while shares are being combined, and every key in memory is dropped (zeroized) on seal.
//! The seal state is `Sealed { progress }` or `Unsealed(Keyring)`: while unsealed, the root
//! key, the token hashing key, the audit signing key, every KEK version used so far and the
//! unwrapped named-key versions are held in one `Keyring`; sealing drops it.
//!
//! Two stores: the key store (its own RocksDB instance) holds the seal configuration, the sealed
//! root key, the sealed system keys and every sealed KEK version; the data store holds tenants,
//! token records and secrets. A copy of the data store therefore carries no key material.
//!
//! Invariant: every data operation takes a [`Caller`], which only [`Vault::authenticate`] can
//! construct, so "forgot to check the token" does not compile.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};

use ring::{rand::SystemRandom, signature::Ed25519KeyPair};
use zeroize::Zeroizing;

use crate::{
    audit::{
        record::format_public_key,
        record::public_key_of,
        writer::{AuditLog, Head},
    },
    autoseal::AutoSeal,
    crypto::{self, Context, Header, KeyKind, KeyRef, Purpose},
    error::{Error, Result, StorageError, refuse_to_wait},
    names::{SecretPath, TenantId, TenantName},
    policy::{Capability, Policy},
    recipient::{Handout, ShareRecipient},
    schema::{
        self, AUDIT_HEAD_KEY, AUDIT_PUBLIC_KEY, AUDIT_SIGNING_KEY, SEAL_CONFIG_KEY, TOKEN_HMAC_KEY,
        accessor_key, tenant_key, token_record_key, version_key,
    },
    secret::{SecretData, SecretKey},
    shamir::{self, UnsealShare},
    storage::{Space, WriteBatch},
    stores::{DataStore, KeyStore},
    time::now_unix_nanos,
    token::{Token, TokenHasher, new_accessor},
};

/// Default largest secret (all fields of one version together), in bytes.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Default and largest page sizes for listing.
pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;

/// A requested page size: 0 is [`DEFAULT_PAGE_SIZE`], more than [`MAX_PAGE_SIZE`] is refused.
fn page_size(requested: usize) -> Result<usize> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n > MAX_PAGE_SIZE => Err(Error::invalid(
            "page_size",
            format!("must be at most {MAX_PAGE_SIZE}"),
        )),
        n => Ok(n),
    }
}

/// A page of a listing that is not of secrets (tenants, key status): what was asked for.
#[derive(Clone, Debug, Default)]
pub struct PageRequest {
    /// 0: [`DEFAULT_PAGE_SIZE`]; at most [`MAX_PAGE_SIZE`].
    pub size: usize,
    /// From the previous page; empty for the first.
    pub token: String,
}
/// Rotation past this many stored KEK versions per tenant is refused (retirement keeps the
/// number small).
const MAX_KEK_VERSIONS: usize = 100_000;

const TOKEN_HMAC_PATH: &str = "token-hmac";
const AUDIT_SIGNING_PATH: &str = "audit-signing";
const ROOT_KEY_PATH: &str = "root";
/// The entity of the root token.
const ROOT_ENTITY: &str = "root";
const LOCK_STRIPES: usize = 64;

#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// Largest secret (all fields of one version together), in bytes.
    pub max_value_bytes: usize,
    /// Budgets, rotation, retirement and shredding of keys.
    pub keys: KeyPolicy,
    /// Versions kept per secret when neither the secret nor its tenant sets a number.
    pub default_max_versions: u32,
    /// Retention of the change feed and lead time of expiry notices.
    pub feed: FeedPolicy,
    /// Where webhooks may deliver, and how hard the vault tries.
    pub webhooks: WebhookPolicy,
    /// Limits and switches of the named keys (encryption as a service).
    pub kms: KmsPolicy,
    /// A tenant's own actions that seal under the root key (MFA enrolment, webhook creation,
    /// KEK rotation), a minute; 0: no limit.
    pub tenant_root_key_per_minute: u32,
    /// Token records (with refresh families and AppRole secret ids) looked at per
    /// maintenance round when purging expired ones; as many MFA enrolments and named-key
    /// schedule entries are looked at for those of shredded tenants.
    pub token_purge_per_round: usize,
    /// Live tokens one token may have created; more are refused.
    pub max_token_children: usize,
    /// Where the vault keeps its key backups (`--key-backup-dir`): shredding a tenant purges
    /// its keys from every one of them. `None`: no key backups are kept.
    pub key_backup_dir: Option<std::path::PathBuf>,
}

/// Default of [`VaultConfig::tenant_root_key_per_minute`].
pub const DEFAULT_TENANT_ROOT_KEY_PER_MINUTE: u32 = 60;
/// Default of [`VaultConfig::max_token_children`].
pub const DEFAULT_MAX_TOKEN_CHILDREN: usize = 10_000;

/// Retention of the change feed and lead time of expiry notices.
#[derive(Clone, Debug)]
pub struct FeedPolicy {
    /// Events older than this are pruned (0: kept forever).
    pub retention_nanos: i64,
    /// How long before a deadline the `expiring` event is sent.
    pub expiry_lead_nanos: i64,
}

impl Default for FeedPolicy {
    fn default() -> Self {
        FeedPolicy {
            retention_nanos: feed::DEFAULT_FEED_RETENTION_NANOS,
            expiry_lead_nanos: feed::DEFAULT_EXPIRY_LEAD_NANOS,
        }
    }
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            keys: KeyPolicy::default(),
            default_max_versions: secrets::DEFAULT_MAX_VERSIONS,
            feed: FeedPolicy::default(),
            webhooks: WebhookPolicy::default(),
            kms: KmsPolicy::default(),
            tenant_root_key_per_minute: DEFAULT_TENANT_ROOT_KEY_PER_MINUTE,
            token_purge_per_round: 1024,
            max_token_children: DEFAULT_MAX_TOKEN_CHILDREN,
            key_backup_dir: None,
        }
    }
}

/// What status reports about the seal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealStatus {
    pub initialized: bool,
    pub sealed: bool,
    pub threshold: u32,
    pub shares: u32,
    pub progress: u32,
    /// `shamir`, or the auto seal's kind (`transit`, `danger-file`): with an auto seal the
    /// shares are recovery shares.
    pub seal_type: String,
}

impl SealStatus {
    /// Whether the vault is initialized with an auto seal (whether or not this server has that
    /// seal: [`Seal::unseal_auto`] says which seal it needs).
    pub fn auto_sealed(&self) -> bool {
        self.initialized && self.seal_type != "shamir"
    }
}

/// What init hands out, once: each share and the root token in the clear or encrypted to its
/// holder.
pub struct InitOutput {
    pub shares: Vec<Handout<UnsealShare>>,
    pub root_token: Handout<Token>,
    pub threshold: u32,
    /// `shamir`, or the auto seal's kind: then the shares are recovery shares and the vault is
    /// unsealed already.
    pub seal_type: String,
}

/// Who receives what init hands out; empty: the caller, in the clear.
#[derive(Clone, Debug, Default)]
pub struct InitRecipients {
    /// One per share, in order.
    pub shares: Vec<ShareRecipient>,
    pub root_token: Option<ShareRecipient>,
}

/// An authenticated caller. Only [`Vault::authenticate`] constructs one.
pub struct Caller {
    accessor: String,
    /// The token's tenant; `None` for system-scope tokens (root).
    tenant: Option<TenantId>,
    system: bool,
    policies: Vec<Arc<Policy>>,
    record: Arc<TokenRecord>,
    /// The one-time code presented with the call (request metadata), if any.
    mfa_code: Option<Zeroizing<String>>,
    /// Whether the code was checked and accepted in this call (a code is used at most once, and
    /// one call may authorize several steps).
    mfa_verified: Mutex<bool>,
}

/// Prints what an audit record may hold: the accessor, tenant, scope and policy names (not
/// the token record, which holds the token's keyed hash).
impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("accessor", &self.accessor)
            .field("tenant", &self.tenant)
            .field("system", &self.system)
            .field("policies", &self.record.policies)
            .finish()
    }
}

impl Caller {
    /// The token's accessor: safe to log and to put in audit records.
    pub fn accessor(&self) -> &str {
        &self.accessor
    }

    /// Whether the token has the system scope (seal, tenants, audit of all tenants).
    pub fn is_system(&self) -> bool {
        self.system
    }

    /// The tenant a tenant token belongs to (`None` for system tokens).
    pub fn tenant_id(&self) -> Option<TenantId> {
        self.tenant
    }

    /// Attaches the MFA code presented with the call; checked only if an operation needs it.
    pub fn with_mfa_code(mut self, code: Option<String>) -> Caller {
        self.mfa_code = code.map(Zeroizing::new);
        self
    }
}

#[derive(Clone, Debug)]
pub struct TenantInfo {
    pub name: TenantName,
    pub id: TenantId,
    pub created_unix_nanos: i64,
    pub key_version: u32,
    pub settings: TenantSettings,
}

/// A secret version as read.
pub struct SecretVersion {
    pub version: u64,
    pub created_unix_nanos: i64,
    /// The KEK version its data key is wrapped under.
    pub key_version: u32,
    pub data: SecretData,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutOutcome {
    pub version: u64,
    pub created_unix_nanos: i64,
    /// The feed revision of the write.
    pub revision: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    pub keys: Vec<String>,
    pub next_page_token: Option<String>,
    /// The tenant's feed revision when the page was read: a watch from it sees every later
    /// change.
    pub revision: u64,
}

#[derive(Clone, Serialize, Deserialize)]
struct SealConfig {
    shares: u32,
    threshold: u32,
    unseal_key_version: u32,
    root_key_version: u32,
    /// The root key sealed under the unseal key (base64).
    root_key_sealed: String,
    created_unix_nanos: i64,
    /// One commitment per current share (see `rekey::share_commitment`); empty for a vault
    /// initialized before commitments existed.
    #[serde(default)]
    share_commitments: Vec<String>,
    /// The version the share commitments (and, with an auto seal, the recovery key check) are
    /// made for; `None`: the unseal key's version (the shares are the unseal key's). A seal
    /// migration changes the unseal key but keeps the shares, so the two part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    share_version: Option<u32>,
    /// With an auto seal: the unseal key is wrapped by it, and the shares are recovery shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auto: Option<AutoSealRecord>,
}

/// How an auto-sealed vault's unseal key is kept (see `crate::autoseal`).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
struct AutoSealRecord {
    /// `transit` or `danger-file`.
    kind: String,
    /// The wrapping key, as the seal names it (never the key itself).
    id: String,
    /// The unseal key wrapped by the seal (for the unseal key version).
    wrapped_unseal_key: String,
    /// SHA-256 over a domain tag, the share version and the recovery key the recovery shares
    /// combine to: a threshold of them is checked against it (the recovery key opens nothing).
    recovery_key_check: String,
}

impl SealConfig {
    /// The version the shares' commitments are made for.
    fn share_version(&self) -> u32 {
        self.share_version.unwrap_or(self.unseal_key_version)
    }

    /// The version of the next unseal key or share set: above both.
    fn next_version(&self) -> Result<u32> {
        self.unseal_key_version
            .max(self.share_version())
            .checked_add(1)
            .ok_or_else(|| Error::FailedPrecondition("no unseal key versions left".into()))
    }

    /// `shamir`, or the auto seal's kind.
    fn seal_type(&self) -> &str {
        self.auto
            .as_ref()
            .map_or("shamir", |auto| auto.kind.as_str())
    }
}

#[derive(Serialize, Deserialize)]
struct TenantRecord {
    id: String,
    name: String,
    created_unix_nanos: i64,
    #[serde(default)]
    settings: TenantSettings,
    /// Set on the copy kept under `tenant-deleted/` for crypto-shredding.
    #[serde(default)]
    deleted_unix_nanos: i64,
    /// When the deleted tenant's keys are destroyed (unless it is restored before).
    #[serde(default)]
    shred_after_unix_nanos: i64,
}

/// No Debug: it holds the token's keyed hash, which has no business in a log.
#[derive(Clone, Serialize, Deserialize)]
struct TokenRecord {
    /// Hex of the keyed hash; compared in constant time after the lookup.
    hash: String,
    accessor: String,
    policies: Vec<String>,
    display_name: String,
    created_unix_nanos: i64,
    /// The tenant id (hex) a tenant token belongs to; empty for system tokens.
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    system: bool,
    /// The accessor of the token that created this one.
    #[serde(default)]
    parent: String,
    /// 0: never.
    #[serde(default)]
    expires_unix_nanos: i64,
    #[serde(default)]
    max_expires_unix_nanos: i64,
    #[serde(default)]
    ttl_nanos: i64,
    /// Networks the token may be used from; empty: anywhere.
    #[serde(default)]
    cidrs: Vec<String>,
    /// The identity the token acts for, which outlives rotating tokens (MFA enrolment is per
    /// entity): "root", "approle:<tenant>:<role>" or "jwt:<config>:<tenant id>:<sub>"; a token
    /// created by another token (and its refreshes) has its creator's.
    #[serde(default)]
    entity: String,
    /// The refresh family an access token belongs to; empty for a plain token.
    #[serde(default)]
    family: String,
}

enum State {
    Sealed { progress: Vec<UnsealShare> },
    Unsealed(Arc<Keyring>),
}

/// Every key the vault holds while unsealed. Dropping it zeroizes them all.
struct Keyring {
    root: SecretKey,
    root_version: u32,
    /// Root keys before a root rotation, kept (sealed under the current one) for what they
    /// still seal: MFA enrolments in the data store, and a KEK a rotation added meanwhile.
    previous_roots: BTreeMap<u32, SecretKey>,
    token_hasher: TokenHasher,
    audit_signer: Option<Arc<Ed25519KeyPair>>,
    /// The root key's uses (it seals KEKs, system keys and MFA secrets).
    root_uses: Mutex<Uses>,
    tenants: RwLock<HashMap<TenantId, Arc<TenantKeys>>>,
    /// Named keys (encryption as a service), unwrapped on first use.
    named: RwLock<kms::NamedKeys>,
    /// Which keyring this is (a new one at every unseal): the due index starts over under
    /// another one.
    serial: u64,
}

/// The serial of the next keyring made.
static KEYRINGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub struct Vault {
    data: DataStore,
    keys: KeyStore,
    config: VaultConfig,
    seal_config: RwLock<Option<SealConfig>>,
    state: RwLock<State>,
    /// The tenants known by name and id, the live ones' state, and the lock that orders a
    /// tenant's changes (tenants.rs).
    tenant_registry: tenants::TenantRegistry,
    stripes: Vec<Mutex<()>>,
    audit: Option<Arc<AuditLog>>,
    /// Where this node's audit head is kept: `audit/head`, or on a shared store (several
    /// nodes), `audit/head/<node id>` (see [`Vault::with_node_id`]).
    audit_head_key: Vec<u8>,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    /// Serializes token creation, renewal, revocation and logins per tenant (`None`: system
    /// tokens); each re-reads what it changes. One tenant's token changes never wait for
    /// another's.
    token_changes: KeyedLocks<Option<TenantId>>,
    /// Serializes MFA checks and enrolments (each reads, then writes, an entity's record).
    mfa_state: mfa::MfaState,
    /// The KEK lock, the wrap gate and the key-use log (keys.rs). Shredding and root
    /// rotation ask keys.rs for the KEK lock's guard.
    kek_state: keys::KekState,
    /// The named keys' lock (kms.rs): taken before the wrap gate and the KEK lock, never
    /// after.
    kms_state: kms::KmsState,
    maintenance_state: maintenance::MaintenanceState,
    /// The rekey collecting current shares (in memory: a restart abandons it) and the new
    /// shares submitted towards verifying a staged one (whose configuration is durable).
    rekey: Mutex<rekey::Rekeys>,
    /// Each tenant's change feed (revisions in flight and the watermark).
    feeds: feed::Feeds,
    /// Serializes changes to webhook deliveries (fan-out, results, replay, deletion).
    webhook_state: webhooks::WebhookState,
    /// Where the maintenance round's purge of dead tokens goes on from.
    purge_cursors: Mutex<purge::PurgeCursors>,
    /// Set when another node rotated the root key this node holds (follow.rs): it then serves
    /// no reads from its caches until it is unsealed again.
    root_behind: std::sync::atomic::AtomicBool,
    /// Set on a standby of a cluster: tenants' rate limits are the active node's to keep, so a
    /// call by a rate-limited tenant's token is refused here with [`Error::NotActive`] (and
    /// relayed by the server) instead of counted against a copy of the limit.
    limits_elsewhere: std::sync::atomic::AtomicBool,
    /// Serializes writing, pruning and purging the kept key backups (backup.rs).
    key_backups: Mutex<()>,
    /// The generate-root attempt collecting shares (in memory: a restart abandons it).
    generate_root: Mutex<Option<generate_root::GenerateRootState>>,
    /// The auto seal this server was started with (`--seal`), if any.
    auto_seal: Option<Arc<dyn AutoSeal>>,
    /// Set when an operator sealed the vault: the server does not unseal it with the auto seal
    /// again until it restarts (as with Vault).
    sealed_by_request: std::sync::atomic::AtomicBool,
    /// The seal migration collecting shares (in memory: a restart abandons it).
    seal_migration: Mutex<Option<seal_migrate::Migration>>,
}

#[derive(Serialize, Deserialize)]
struct StoredHead {
    seq: u64,
    hash: String,
}

/// Locks made on demand, one per key, and forgotten once nobody holds them: for state that is
/// serialized per tenant rather than server-wide.
struct KeyedLocks<K> {
    locks: Mutex<HashMap<K, std::sync::Weak<Mutex<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            locks: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    /// The lock of `key`; hold the returned handle while holding the lock.
    fn of(&self, key: K) -> Arc<Mutex<()>> {
        let mut locks = lock(&self.locks);
        if let Some(existing) = locks.get(&key).and_then(std::sync::Weak::upgrade) {
            return existing;
        }
        if locks.len() >= 1024 {
            locks.retain(|_, held| held.strong_count() > 0);
        }
        let new = Arc::new(Mutex::new(()));
        locks.insert(key, Arc::downgrade(&new));
        new
    }
}

/// A lock owned by one subsystem. `Key` is a type only the owning module can make (a unit
/// struct with a private field), so only that module can take the lock; and a function that
/// needs the lock held takes the guard, [`Held`], as a parameter, so that "the caller holds
/// it" is in the signature rather than in a comment.
struct OwnedLock<Key> {
    mutex: Mutex<()>,
    _key: std::marker::PhantomData<fn() -> Key>,
}

impl<Key> Default for OwnedLock<Key> {
    fn default() -> Self {
        OwnedLock {
            mutex: Mutex::new(()),
            _key: std::marker::PhantomData,
        }
    }
}

impl<Key> OwnedLock<Key> {
    /// Takes the lock; `key` proves the caller is the owning module.
    fn hold(&self, key: Key) -> Held<'_, Key> {
        Held {
            _guard: lock(&self.mutex),
            _key: key,
        }
    }
}

/// Proof that an [`OwnedLock`] is held, for as long as this lives.
struct Held<'a, Key> {
    _guard: MutexGuard<'a, ()>,
    _key: Key,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// [`read`], but in a no-wait attempt (`vault_storage::nowait`) `WouldWait` rather than
/// waiting for a writer: the locks a get takes are held for writing across disk and network
/// work (a registry load, a KEK change).
fn read_now<T>(lock: &RwLock<T>) -> Result<RwLockReadGuard<'_, T>> {
    if !vault_storage::nowait::active() {
        return Ok(read(lock));
    }
    match lock.try_read() {
        Ok(guard) => Ok(guard),
        Err(std::sync::TryLockError::Poisoned(poisoned)) => Ok(poisoned.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => Err(Error::WouldWait),
    }
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Keyring {
    /// The root key of `version`: the current one or a previous one.
    fn root_key(&self, version: u32) -> Option<&SecretKey> {
        if version == self.root_version {
            Some(&self.root)
        } else {
            self.previous_roots.get(&version)
        }
    }
}

fn corrupt(what: &str) -> Error {
    Error::Integrity(what.to_owned())
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|_| corrupt("a record that cannot be encoded"))
}

fn from_json<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|_| corrupt(what))
}

/// A stored secret version: created time (i64 BE), wrapped-DEK length (u32 BE), wrapped DEK,
/// sealed value.
fn encode_version(created_unix_nanos: i64, wrapped_dek: &[u8], sealed_value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + wrapped_dek.len() + sealed_value.len());
    out.extend_from_slice(&created_unix_nanos.to_be_bytes());
    out.extend_from_slice(&(wrapped_dek.len() as u32).to_be_bytes());
    out.extend_from_slice(wrapped_dek);
    out.extend_from_slice(sealed_value);
    out
}

fn decode_version(bytes: &[u8]) -> Option<(i64, &[u8], &[u8])> {
    let created = i64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let dek_len = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
    let wrapped_dek = bytes.get(12..12usize.checked_add(dek_len)?)?;
    let sealed_value = bytes.get(12 + dek_len..)?;
    Some((created, wrapped_dek, sealed_value))
}

impl Vault {
    /// Opens a vault on its two stores. It starts sealed (or uninitialized).
    pub fn open(data: DataStore, keys: KeyStore, config: VaultConfig) -> Result<Vault> {
        config.keys.validate()?;
        let seal_config = keys
            .get(Space::Config, SEAL_CONFIG_KEY)?
            .map(|bytes| from_json::<SealConfig>(&bytes, "the seal configuration"))
            .transpose()?;
        if seal_config
            .as_ref()
            .is_some_and(|config| config.share_commitments.is_empty())
        {
            tracing::warn!(
                "this vault was initialized before share commitments were kept: unseal cannot \
                 refuse a wrong share before it counts; rekey to add them"
            );
        }
        tenants::index_tenant_ids(&data)?;
        Vault::migrate_webhook_queue(&data)?;
        let kek_state = keys::KekState::new(&config.keys)?;
        Ok(Vault {
            data,
            keys,
            config,
            seal_config: RwLock::new(seal_config),
            state: RwLock::new(State::Sealed {
                progress: Vec::new(),
            }),
            tenant_registry: tenants::TenantRegistry::default(),
            root_behind: std::sync::atomic::AtomicBool::new(false),
            limits_elsewhere: std::sync::atomic::AtomicBool::new(false),
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            audit: None,
            audit_head_key: AUDIT_HEAD_KEY.to_vec(),
            clock: Arc::new(now_unix_nanos),
            token_changes: KeyedLocks::default(),
            mfa_state: mfa::MfaState::default(),
            kek_state,
            kms_state: kms::KmsState::default(),
            maintenance_state: maintenance::MaintenanceState::default(),
            rekey: Mutex::new(rekey::Rekeys::default()),
            feeds: feed::Feeds::default(),
            webhook_state: webhooks::WebhookState::default(),
            purge_cursors: Mutex::new(purge::PurgeCursors::default()),
            key_backups: Mutex::new(()),
            generate_root: Mutex::new(None),
            auto_seal: None,
            sealed_by_request: std::sync::atomic::AtomicBool::new(false),
            seal_migration: Mutex::new(None),
        })
    }

    /// Replaces the wall clock (tests drive token expiry with it).
    pub fn with_clock(mut self, clock: Arc<dyn Fn() -> i64 + Send + Sync>) -> Vault {
        self.clock = clock;
        self
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Connects the audit log: on unseal it receives the checkpoint signing key, on seal it
    /// loses it again.
    pub fn with_audit(mut self, audit: Arc<AuditLog>) -> Vault {
        self.audit = Some(audit);
        self
    }

    /// Unseals with `seal` (the server's `--seal`): init wraps the unseal key with it and makes
    /// recovery shares; [`Seal::unseal_auto`] unwraps it.
    pub fn with_auto_seal(mut self, seal: Arc<dyn AutoSeal>) -> Vault {
        self.auto_seal = Some(seal);
        self
    }

    /// For a node of a cluster that shares its stores: its audit head is its own record.
    pub fn with_node_id(mut self, node_id: &str) -> Vault {
        self.audit_head_key = schema::node_audit_head_key(node_id);
        self
    }

    pub fn audit(&self) -> Option<&Arc<AuditLog>> {
        self.audit.as_ref()
    }

    /// The audit checkpoint public key (base64), readable while sealed; `None` before init.
    pub fn audit_public_key(&self) -> Result<Option<String>> {
        let stored = self.keys.get(Space::Config, AUDIT_PUBLIC_KEY)?;
        stored
            .map(|bytes| String::from_utf8(bytes).map_err(|_| corrupt("the audit public key")))
            .transpose()
    }

    /// Records the audit chain head in the vault's own state, so that a log cut short while the
    /// vault was down is noticed.
    pub fn store_audit_head(&self, head: &Head) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(
            Space::Config,
            self.audit_head_key.clone(),
            to_json(&StoredHead {
                seq: head.seq,
                hash: head.hash.clone(),
            })?,
        );
        // The node's own record: written whether or not it leads a cluster.
        Ok(self.data.write_own(batch)?)
    }

    pub fn stored_audit_head(&self) -> Result<Option<Head>> {
        let stored = self.data.get(Space::Config, &self.audit_head_key)?;
        Ok(stored
            .map(|bytes| from_json::<StoredHead>(&bytes, "the stored audit head"))
            .transpose()?
            .map(|h| Head {
                seq: h.seq,
                hash: h.hash,
            }))
    }

    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    /// Writes both stores' memory tables to their table files (a clean stop: the next start
    /// replays no write-ahead log). Everything acknowledged is durable already; this only
    /// shortens the next start.
    pub fn flush_stores(&self) -> Result<()> {
        self.data.flush()?;
        self.keys.flush()?;
        Ok(())
    }

    pub fn storage_kind(&self) -> &'static str {
        self.data.kind()
    }

    /// The data store's and the key store's own figures (size, compactions), for metrics.
    pub fn storage_stats(&self) -> (crate::storage::StorageStats, crate::storage::StorageStats) {
        (self.data.stats(), self.keys.stats())
    }
}

impl Vault {
    /// The seal: status, init, unseal and seal, and the rekey of the shares.
    pub fn seal(&self) -> Seal<'_> {
        Seal { vault: self }
    }
}

/// The seal state machine and the shares, as `vault.seal()` hands them out. The view derefs to
/// the vault for the stores and the keyring it opens and drops.
pub struct Seal<'a> {
    vault: &'a Vault,
}

impl std::ops::Deref for Seal<'_> {
    type Target = Vault;

    fn deref(&self) -> &Vault {
        self.vault
    }
}

impl Seal<'_> {
    pub fn status(&self) -> SealStatus {
        self.refresh_seal_config();
        let seal_config = read(&self.seal_config);
        let state = read(&self.state);
        let (sealed, progress) = match &*state {
            State::Sealed { progress } => (true, progress.len() as u32),
            State::Unsealed(_) => (false, 0),
        };
        match &*seal_config {
            Some(config) => SealStatus {
                initialized: true,
                sealed,
                threshold: config.threshold,
                shares: config.shares,
                progress,
                seal_type: config.seal_type().to_owned(),
            },
            None => SealStatus {
                initialized: false,
                sealed: true,
                threshold: 0,
                shares: 0,
                progress: 0,
                seal_type: self
                    .auto_seal
                    .as_ref()
                    .map_or("shamir", |seal| seal.kind())
                    .to_owned(),
            },
        }
    }

    /// Creates the unseal key (split into `shares` shares, `threshold` to unseal), the root key
    /// and the root token. The vault stays sealed.
    ///
    /// With an auto seal, the unseal key is wrapped by the seal instead, the shares are
    /// recovery shares of a separate recovery key (for rekey, generate-root and seal
    /// migration; they open nothing), and the vault is unsealed at once.
    pub fn init(
        &self,
        shares: u32,
        threshold: u32,
        recipients: InitRecipients,
    ) -> Result<InitOutput> {
        shamir::check_parameters(shares, threshold)?;
        rekey::check_recipients(&recipients.shares, shares)?;
        if read(&self.seal_config).is_some() {
            return Err(Error::AlreadyInitialized);
        }
        let unseal_key = SecretKey::generate()?;
        let root_key = SecretKey::generate()?;
        let token_key = SecretKey::generate()?;
        let root_sealed = seal_root_key(&unseal_key, 1, &root_key)?;
        let token_key_sealed = crypto::seal(
            &root_key,
            KeyRef {
                kind: KeyKind::Root,
                version: 1,
            },
            &token_key_context(),
            token_key.expose_secret(),
        )?;
        // With an auto seal the wrap (a call to another vault) happens before the seal lock is
        // taken, so that status does not wait for it.
        let (split_key, auto) = match &self.auto_seal {
            None => (unseal_key, None),
            Some(seal) => {
                let wrapped = crate::autoseal::wrap_checked(seal.as_ref(), &unseal_key, 1)?;
                drop(unseal_key);
                let recovery_key = SecretKey::generate()?;
                let record = AutoSealRecord {
                    kind: seal.kind().to_owned(),
                    id: seal.id(),
                    wrapped_unseal_key: wrapped,
                    recovery_key_check: rekey::recovery_check(1, &recovery_key),
                };
                (recovery_key, Some(record))
            }
        };
        let mut seal_config = write(&self.seal_config);
        if seal_config.is_some() {
            return Err(Error::AlreadyInitialized);
        }
        let split = shamir::split(&split_key, shares, threshold)?;
        drop(split_key);
        let share_commitments = split
            .iter()
            .map(|share| rekey::share_commitment(1, share))
            .collect();
        let handed_out = rekey::hand_out(split, &recipients.shares)?;
        let signing_pkcs8 = Zeroizing::new(
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| Error::Rng)?
                .as_ref()
                .to_vec(),
        );
        let signing_key = Ed25519KeyPair::from_pkcs8(&signing_pkcs8).map_err(|_| Error::Rng)?;
        let signing_sealed = crypto::seal(
            &root_key,
            KeyRef {
                kind: KeyKind::Root,
                version: 1,
            },
            &audit_signing_context(),
            &signing_pkcs8,
        )?;

        let root_token = Token::generate()?;
        let hash = TokenHasher::new(&token_key).hash(&root_token);
        let record = self.root_token_record(&hash)?;
        // The token record goes first: the key store's write is the commit point of init, and a
        // crash before it leaves an uninitialized vault with an unusable stray record.
        let mut data_batch = WriteBatch::new();
        data_batch
            .put(Space::Config, token_record_key(&hash), to_json(&record)?)
            .put(Space::Config, accessor_key(&record.accessor), hash.to_hex());
        self.data.write(data_batch)?;

        let config = SealConfig {
            shares,
            threshold,
            unseal_key_version: 1,
            root_key_version: 1,
            root_key_sealed: STANDARD.encode(&root_sealed),
            created_unix_nanos: now_unix_nanos(),
            share_commitments,
            share_version: None,
            auto,
        };
        let root_token = match &recipients.root_token {
            Some(recipient) => {
                Handout::Encrypted(recipient.encrypt(root_token.expose_secret().as_bytes())?)
            }
            None => Handout::Plain(root_token),
        };
        let mut key_batch = WriteBatch::new();
        key_batch
            .put(Space::Config, TOKEN_HMAC_KEY, token_key_sealed)
            .put(Space::Config, AUDIT_SIGNING_KEY, signing_sealed)
            .put(
                Space::Config,
                AUDIT_PUBLIC_KEY,
                format_public_key(&public_key_of(&signing_key)),
            )
            // The root key sealed the two system keys above.
            .put(Space::Config, schema::root_count_key(1), 2u64.to_be_bytes())
            .put(Space::Config, SEAL_CONFIG_KEY, to_json(&config)?);
        // Commits only if no seal configuration exists: two nodes of a cluster initialized at
        // once cannot both succeed (the second's shares would open nothing).
        if !self
            .keys
            .write_if_absent(key_batch, Space::Config, SEAL_CONFIG_KEY)?
        {
            // Unless the configuration found is this one (a retried request that had
            // committed).
            let stored = self.keys.get(Space::Config, SEAL_CONFIG_KEY)?;
            let ours = stored
                .as_deref()
                .map(|bytes| from_json::<SealConfig>(bytes, "the seal configuration"))
                .transpose()?
                .is_some_and(|stored| stored.root_key_sealed == config.root_key_sealed);
            if !ours {
                return Err(Error::AlreadyInitialized);
            }
        }
        let seal_type = config.seal_type().to_owned();
        let auto_sealed = config.auto.is_some();
        *seal_config = Some(config);
        drop(seal_config);
        if auto_sealed {
            // The shares and the root token must reach the caller whatever happens here: a
            // keyring that cannot be loaded leaves the vault sealed, for the server's auto
            // unseal to try again.
            match self.keyring_from_root(1, root_key, HashMap::new(), HashMap::new()) {
                Ok(keyring) => self.install_keyring(keyring),
                Err(error) => {
                    tracing::error!(%error, "initialized, but the keyring did not load; the vault stays sealed");
                }
            }
        }
        Ok(InitOutput {
            shares: handed_out,
            root_token,
            threshold,
            seal_type,
        })
    }

    /// Makes `keyring` the one in force (unsealed).
    fn install_keyring(&self, keyring: Keyring) {
        let mut state = write(&self.state);
        self.unsealed_with(&mut state, keyring);
    }

    /// Unseals with `keyring`, in the state the caller holds: the audit log gets the signing
    /// key, and the flags of a sealed vault are cleared.
    fn unsealed_with(&self, state: &mut State, keyring: Keyring) {
        if let Some(audit) = &self.audit {
            audit.set_signer(keyring.audit_signer.clone());
        }
        *state = State::Unsealed(Arc::new(keyring));
        self.root_behind
            .store(false, std::sync::atomic::Ordering::Release);
        self.sealed_by_request
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// A root token's record: system scope, policy `root`, no expiry (init and generate-root).
    fn root_token_record(&self, hash: &crate::token::TokenHash) -> Result<TokenRecord> {
        Ok(TokenRecord {
            hash: hash.to_hex(),
            accessor: new_accessor()?,
            policies: vec!["root".into()],
            display_name: "root".into(),
            created_unix_nanos: self.now(),
            tenant: String::new(),
            system: true,
            parent: String::new(),
            expires_unix_nanos: 0,
            max_expires_unix_nanos: 0,
            ttl_nanos: 0,
            cidrs: Vec::new(),
            entity: ROOT_ENTITY.into(),
            family: String::new(),
        })
    }

    /// Adds one share to the unseal attempt. A share already submitted does not count twice;
    /// shares that do not reconstruct the unseal key fail the attempt and reset the progress.
    pub fn unseal(&self, share: UnsealShare) -> Result<SealStatus> {
        self.refresh_seal_config();
        let seal_config = read(&self.seal_config);
        let config = seal_config.as_ref().ok_or(Error::NotInitialized)?;
        // An auto-sealed vault unseals with its seal; a threshold of recovery shares asks for
        // that (after `vault-cli seal`, as with Vault), which needs the server's seal.
        if config.auto.is_some() {
            self.matching_auto_seal(config)?;
        }
        // Checked before it counts (and whatever the state): a share that is not one of the
        // current ones must not be able to make the combine at threshold fail and clear the
        // operators' progress.
        rekey::check_current_share(config, &share)?;
        let mut state = write(&self.state);
        let State::Sealed { progress } = &mut *state else {
            drop(state);
            drop(seal_config);
            return Ok(self.status());
        };
        if let Some(existing) = progress
            .iter()
            .find(|s| s.identifier() == share.identifier())
        {
            if existing.same_as(&share) {
                drop(state);
                drop(seal_config);
                return Ok(self.status());
            }
            // Refused without clearing: an unauthenticated caller must not be able to wipe the
            // operators' progress this way.
            return Err(Error::invalid(
                "share",
                "differs from a share with the same identifier already entered",
            ));
        }
        progress.push(share);
        if (progress.len() as u32) < config.threshold {
            drop(state);
            drop(seal_config);
            return Ok(self.status());
        }
        let shares = std::mem::take(progress);
        if config.auto.is_some() {
            let combined = shamir::combine(&shares);
            drop(shares);
            rekey::check_combined_key(config, &combined?)?;
            drop(state);
            drop(seal_config);
            return self.unseal_auto();
        }
        let keyring = self.open_keyring(config, &shares)?;
        self.unsealed_with(&mut state, keyring);
        drop(state);
        drop(seal_config);
        Ok(self.status())
    }

    /// With an auto seal: unwraps the unseal key with it and unseals (asked for by operators:
    /// a threshold of recovery shares, or a backup's verification). An unsealed vault stays as
    /// it is. The seal is asked without any lock held (it may be another vault, far away).
    pub fn unseal_auto(&self) -> Result<SealStatus> {
        self.unseal_with_seal(false)
    }

    /// The server's own auto unseal: as [`Seal::unseal_auto`], but a vault an operator sealed
    /// stays sealed (checked again once the seal answered, under the state's lock).
    pub fn auto_unseal_if_due(&self) -> Result<SealStatus> {
        self.unseal_with_seal(true)
    }

    fn unseal_with_seal(&self, automatic: bool) -> Result<SealStatus> {
        self.refresh_seal_config();
        let (seal, version, wrapped) = {
            let seal_config = read(&self.seal_config);
            let config = seal_config.as_ref().ok_or(Error::NotInitialized)?;
            let (seal, record) = self.matching_auto_seal(config)?;
            if !matches!(&*read(&self.state), State::Sealed { .. }) {
                drop(seal_config);
                return Ok(self.status());
            }
            (
                Arc::clone(seal),
                config.unseal_key_version,
                record.wrapped_unseal_key.clone(),
            )
        };
        let unseal_key = seal.unwrap(&wrapped, version)?;
        let seal_config = read(&self.seal_config);
        let config = seal_config.as_ref().ok_or(Error::NotInitialized)?;
        let mut state = write(&self.state);
        let sealed_by_request = automatic
            && self
                .sealed_by_request
                .load(std::sync::atomic::Ordering::Acquire);
        if sealed_by_request || !matches!(&*state, State::Sealed { .. }) {
            drop(state);
            drop(seal_config);
            return Ok(self.status());
        }
        if config.unseal_key_version != version
            || config
                .auto
                .as_ref()
                .is_none_or(|auto| auto.wrapped_unseal_key != wrapped)
        {
            return Err(Error::FailedPrecondition(
                "the seal configuration changed while the seal was asked; try again".into(),
            ));
        }
        let root = open_root_key(config, &unseal_key).map_err(|_| {
            Error::Integrity(
                "the root key (the unseal key the auto seal returned does not open it)".into(),
            )
        })?;
        drop(unseal_key);
        let keyring = self.keyring_from_root(
            config.root_key_version,
            root,
            HashMap::new(),
            HashMap::new(),
        )?;
        self.unsealed_with(&mut state, keyring);
        drop(state);
        drop(seal_config);
        Ok(self.status())
    }

    /// Whether an operator sealed the vault since it was last unsealed (the server's auto
    /// unseal then leaves it sealed until a restart).
    pub fn sealed_by_request(&self) -> bool {
        self.sealed_by_request
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The server's auto seal and the configuration's record of it, which must match.
    fn matching_auto_seal<'c>(
        &self,
        config: &'c SealConfig,
    ) -> Result<(&Arc<dyn AutoSeal>, &'c AutoSealRecord)> {
        let Some(record) = &config.auto else {
            return Err(Error::FailedPrecondition(
                "this vault is sealed with Shamir shares: unseal it with vault-cli unseal \
                 (vault-cli seal-migrate moves it to the auto seal)"
                    .into(),
            ));
        };
        let Some(seal) = &self.auto_seal else {
            return Err(Error::FailedPrecondition(format!(
                "this vault is auto-sealed ({} {}): start the server with its seal settings \
                 (--seal); its shares are recovery shares and unseal nothing",
                record.kind, record.id
            )));
        };
        if seal.kind() != record.kind || seal.id() != record.id {
            return Err(Error::FailedPrecondition(format!(
                "this vault is sealed by {} {}, but the server was started with {} {}",
                record.kind,
                record.id,
                seal.kind(),
                seal.id()
            )));
        }
        Ok((seal, record))
    }

    /// While sealed, reads the seal configuration again: on stores that several nodes share,
    /// another node may have initialized the vault or committed a rekey since this one
    /// opened. A changed configuration clears the unseal progress (its shares were for the old
    /// one). A read that fails leaves what is known.
    fn refresh_seal_config(&self) {
        if !matches!(&*read(&self.state), State::Sealed { .. }) {
            return;
        }
        let Ok(Some(bytes)) = self.keys.get(Space::Config, SEAL_CONFIG_KEY) else {
            return;
        };
        let Ok(fresh) = from_json::<SealConfig>(&bytes, "the seal configuration") else {
            return;
        };
        let mut current = write(&self.seal_config);
        let changed = current.as_ref().is_none_or(|known| {
            known.unseal_key_version != fresh.unseal_key_version
                || known.share_version() != fresh.share_version()
                || known.root_key_version != fresh.root_key_version
                || known.root_key_sealed != fresh.root_key_sealed
                || known.auto != fresh.auto
        });
        if changed {
            *current = Some(fresh);
            drop(current);
            if let State::Sealed { progress } = &mut *write(&self.state) {
                progress.clear();
            }
        }
    }

    fn open_keyring(&self, config: &SealConfig, shares: &[UnsealShare]) -> Result<Keyring> {
        let unseal_key = shamir::combine(shares)?;
        let root = open_root_key(config, &unseal_key)?;
        drop(unseal_key);
        self.keyring_from_root(
            config.root_key_version,
            root,
            HashMap::new(),
            HashMap::new(),
        )
    }

    /// The keyring around an opened root key: the previous root keys, the system keys and the
    /// root key's use count from the key store; `tenants` is the KEK cache to start with.
    fn keyring_from_root(
        &self,
        root_version: u32,
        root: SecretKey,
        tenants: HashMap<TenantId, Arc<TenantKeys>>,
        named: kms::NamedKeys,
    ) -> Result<Keyring> {
        let previous_roots = self.previous_roots(&root)?;
        let token_key = self.token_key(&root)?;
        let audit_signer = match self.keys.get(Space::Config, AUDIT_SIGNING_KEY)? {
            Some(sealed) => {
                let pkcs8 = crypto::open(&root, &audit_signing_context(), &sealed, &|| {
                    "the audit signing key".into()
                })?;
                Some(Arc::new(
                    Ed25519KeyPair::from_pkcs8(&pkcs8)
                        .map_err(|_| corrupt("the audit signing key"))?,
                ))
            }
            None => None,
        };
        let root_used = self
            .keys
            .get(Space::Config, &schema::root_count_key(root_version))?
            .map(|bytes| keys::count_value(&bytes))
            .transpose()?
            .unwrap_or(0);
        Ok(Keyring {
            root,
            root_version,
            previous_roots,
            token_hasher: TokenHasher::new(&token_key),
            audit_signer,
            root_uses: Mutex::new(Uses::loaded(root_used)),
            tenants: RwLock::new(tenants),
            named: RwLock::new(named),
            serial: KEYRINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Forgets the shares submitted so far; `share` must be one of the current shares, so
    /// that nobody without one can keep the vault sealed by resetting the operators' progress.
    pub fn reset_unseal(&self, share: &UnsealShare) -> Result<SealStatus> {
        {
            let seal_config = read(&self.seal_config);
            let config = seal_config.as_ref().ok_or(Error::NotInitialized)?;
            rekey::check_current_share(config, share)?;
            if let State::Sealed { progress } = &mut *write(&self.state) {
                progress.clear();
            }
        }
        Ok(self.status())
    }

    /// The token hashing key, opened with `root` (which fails unless `root` is the root key
    /// in force).
    fn token_key(&self, root: &SecretKey) -> Result<SecretKey> {
        let token_sealed = self
            .keys
            .get(Space::Config, TOKEN_HMAC_KEY)?
            .ok_or_else(|| corrupt("the token hashing key (missing)"))?;
        let token_key = crypto::open(root, &token_key_context(), &token_sealed, &|| {
            "the token hashing key".into()
        })?;
        SecretKey::from_bytes(token_key)
            .ok_or_else(|| corrupt("the token hashing key (wrong length)"))
    }

    /// Drops every key held in memory. Calls already in flight finish with the keys they hold.
    pub fn seal(&self, caller: &Caller) -> Result<()> {
        self.require_system_op(caller, SystemOp::Seal)?;
        {
            // The flag is set under the state's lock, where the auto unseal checks it.
            let mut state = write(&self.state);
            *state = State::Sealed {
                progress: Vec::new(),
            };
            self.sealed_by_request
                .store(true, std::sync::atomic::Ordering::Release);
        }
        // A seal migration's shares are keys too.
        lock(&self.seal_migration).take();
        // Shares submitted to a generate-root attempt are keys too.
        self.forget_generate_root();
        if let Some(audit) = &self.audit {
            audit.set_signer(None);
        }
        Ok(())
    }
}

impl Vault {
    /// Forgets everything cached from the stores (tenants, their KEK versions, named keys, feed
    /// positions, token records and policies) so that it is read again: for a node that becomes the active node of a
    /// cluster, whose caches may predate another node's changes.
    pub fn drop_caches(&self) {
        self.data.forget_all();
        self.maintenance_state.due.reset();
        self.tenant_registry.forget_all();
        self.feeds.forget_all();
        let keyring = match &*read(&self.state) {
            State::Unsealed(keyring) => Arc::clone(keyring),
            State::Sealed { .. } => return,
        };
        // Under the locks the loads hold, so that no load in flight puts back what it read
        // before (kms_changes first: the lock order).
        let kms_changes = self.hold_kms_changes();
        let key_changes = self.hold_key_changes();
        write(&keyring.tenants).clear();
        write(&keyring.named).clear();
        drop(key_changes);
        drop(kms_changes);
    }

    fn keyring(&self) -> Result<Arc<Keyring>> {
        if read_now(&self.seal_config)?.is_none() {
            return Err(Error::NotInitialized);
        }
        match &*read_now(&self.state)? {
            State::Unsealed(keyring) => Ok(Arc::clone(keyring)),
            State::Sealed { .. } => Err(Error::Sealed),
        }
    }

    fn stripe(&self, tenant: TenantId, path: &str) -> &Mutex<()> {
        &self.stripes[self.stripe_index(tenant, path)]
    }

    /// Which of [`Vault::stripes`] guards `path` of `tenant`: a holder of several takes them in
    /// ascending order of this index.
    fn stripe_index(&self, tenant: TenantId, path: &str) -> usize {
        let mut hasher = DefaultHasher::new();
        (tenant, path).hash(&mut hasher);
        (hasher.finish() as usize) % self.stripes.len()
    }
}

/// Opens the root key with a candidate unseal key: `UnsealFailed` if it is the wrong one.
fn open_root_key(config: &SealConfig, unseal_key: &SecretKey) -> Result<SecretKey> {
    let root_sealed = STANDARD
        .decode(&config.root_key_sealed)
        .map_err(|_| corrupt("the sealed root key"))?;
    let header = Header::parse(&root_sealed)?;
    if header.key
        != (KeyRef {
            kind: KeyKind::Unseal,
            version: config.unseal_key_version,
        })
    {
        return Err(corrupt("the sealed root key (unexpected key)"));
    }
    let root_bytes = crypto::open(unseal_key, &root_key_context(), &root_sealed, &|| {
        "the root key".into()
    })
    .map_err(|_| Error::UnsealFailed)?;
    SecretKey::from_bytes(root_bytes).ok_or_else(|| corrupt("the root key (wrong length)"))
}

/// The root key sealed under an unseal key of `version` (what a seal configuration keeps).
fn seal_root_key(unseal_key: &SecretKey, version: u32, root: &SecretKey) -> Result<Vec<u8>> {
    crypto::seal(
        unseal_key,
        KeyRef {
            kind: KeyKind::Unseal,
            version,
        },
        &root_key_context(),
        root.expose_secret(),
    )
}

fn root_key_context() -> Context<'static> {
    Context {
        purpose: Purpose::RootKey,
        tenant: None,
        path: ROOT_KEY_PATH,
        version: 1,
    }
}

fn token_key_context() -> Context<'static> {
    Context {
        purpose: Purpose::SystemKey,
        tenant: None,
        path: TOKEN_HMAC_PATH,
        version: 1,
    }
}

fn audit_signing_context() -> Context<'static> {
    Context {
        purpose: Purpose::SystemKey,
        tenant: None,
        path: AUDIT_SIGNING_PATH,
        version: 1,
    }
}

fn kek_context(tenant: TenantId, version: u32) -> Context<'static> {
    Context {
        purpose: Purpose::Kek,
        tenant: Some(tenant),
        path: "",
        version: u64::from(version),
    }
}

fn dek_context(tenant: TenantId, path: &SecretPath, version: u64) -> Context<'_> {
    Context {
        purpose: Purpose::Dek,
        tenant: Some(tenant),
        path: path.as_str(),
        version,
    }
}

fn value_context(tenant: TenantId, path: &SecretPath, version: u64) -> Context<'_> {
    Context {
        purpose: Purpose::SecretValue,
        tenant: Some(tenant),
        path: path.as_str(),
        version,
    }
}

mod access;
mod approle;
pub mod backup;
mod due;
mod feed;
mod follow;
mod generate_root;
mod keys;
mod kms;
mod login;
mod maintenance;
mod mfa;
mod oidc;
mod purge;
mod rekey;
mod seal_migrate;
mod secrets;
mod shred;
mod tenants;
mod webhooks;

pub use feed::{
    DEFAULT_EXPIRY_LEAD_NANOS, DEFAULT_FEED_RETENTION_NANOS, Event, EventKind, WATCH_BATCH,
    WatchCursor,
};
pub use secrets::{
    DEFAULT_MAX_VERSIONS, MAX_VERSIONS_PER_CALL, MetadataUpdate, SecretMetadata, VersionInfo,
    VersionsChange,
};
pub use webhooks::{
    Delivery, DeliveryState, DispatchLimits, DispatchState, MAX_DEAD_PER_WEBHOOK,
    MAX_PENDING_PER_WEBHOOK, SIGNATURE_HEADER, WebhookInfo, WebhookPolicy, WebhookSpec,
    WebhookStatus, WebhookUrl, address_refusal, check_addresses, sign, unreachable_host,
    verify_signature,
};

pub use approle::{AppRole, AppRoleSpec, SecretIdSpec};
pub use login::{DEFAULT_FAMILY_MAX_TTL, REFRESH_GRACE};
use login::{Issue, nonzero_min};
pub use mfa::{MAX_MFA_FAILURES, MFA_LOCKOUT, SystemOp, TotpEnrollment};
pub use oidc::{JwtConfig, PolicyMapping};

/// The views the façade hands out, one per subsystem.
pub use self::{
    access::Access, approle::Logins, feed::Changes, keys::Keks, kms::Kms, mfa::Mfa,
    secrets::Secrets, tenants::Tenants, webhooks::Webhooks,
};
pub use access::REVOKE_PAGE;
use access::require_system;
pub use access::{CreatedToken, TokenInfo, TokenRequest};
pub use generate_root::GenerateRootProgress;
pub use keys::{
    DEFAULT_KEY_BUDGET, DEFAULT_MAX_LIVE_VERSIONS, DEFAULT_RESERVE_BLOCK,
    DEFAULT_SHRED_DELAY_NANOS, HARD_CAP, KeyPolicy, KeyStatus, KeyVersionStatus, MaintenanceReport,
    RetiredStatus, RewrapProgress, RootKeyStatus, TenantKeyStatus, TenantUsage, UsageReport,
};
use keys::{TenantKeys, Uses};
pub use kms::{
    DATA_KEY_BITS, DEFAULT_KEY_DELETION_DELAY_NANOS, DEFAULT_MAX_BATCH_ITEMS,
    DEFAULT_MAX_PLAINTEXT_BYTES, DataKey, DecryptItem, EncryptItem, KeySpec, KeyUpdate, KmsPolicy,
    MAX_NAMED_KEY_VERSIONS, NamedKeyInfo, NamedKeyVersion, Versioned,
};
pub use maintenance::{Task, TaskReport};
pub use rekey::{RekeyProgress, ShareCheck};
pub use seal_migrate::{MigrationProgress, SealTarget};
pub use shred::{DeletedTenant, SHRED_LIMIT};
pub use tenants::{TenantSettings, TenantUpdate};

#[cfg(test)]
mod tests;
