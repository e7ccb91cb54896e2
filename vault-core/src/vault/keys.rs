//! Key lifecycle: exact invocation counts, rotation by budget and age, retirement of old KEK
//! versions by a background re-wrap job, the key status report, and the maintenance round.
//!
//! Counting. Every encryption under a key (a KEK version wrapping a DEK, the root key sealing a
//! KEK, a system key or an MFA secret) takes one use from that key's counter first. The counter
//! reserves uses in blocks (`--key-reserve-block`, [`DEFAULT_RESERVE_BLOCK`], capped at the
//! budget): before the first use past the reserved mark, the next mark is written to the key
//! store (synced). A crash loses at most the unused rest of a block, so the stored count can
//! only exceed the true one, never fall short of it; after a restart a version's count starts
//! at its stored mark. The kill -9 test checks this against a test-only log of every use
//! (`--danger-invocation-log`, written and synced after the reservation and before the
//! encryption).
//!
//! Budgets. A version at its budget takes no more uses: `Vault::wrap_dek` then rotates the
//! tenant's KEK (under `key_changes`, only if no other writer rotated first) and wraps under the
//! new version, so with budget B a version serves exactly B encryptions. The root key refuses
//! ("rotate the root key": a rekey with `--rotate-root` gives it a new version). The default
//! budget is [`DEFAULT_KEY_BUDGET`] (2^30); no budget may exceed [`HARD_CAP`] (NIST SP 800-38D:
//! 2^32 invocations with random nonces).
//!
//! Retirement. `kek-state/<tenant>` holds the scheduled versions, the running job and the
//! retired ones. A rotation schedules the oldest versions beyond `--key-max-live-versions` in
//! the same key-store write; the sweep (every 10 s) does the same after a changed setting and
//! rotates by age; an operator can name a version too. The job takes every scheduled version as
//! its fixed set when it starts, scans the tenant's secret versions in key order (resuming from
//! a stored cursor after a restart), re-wraps each DEK sealed under a version of the set into
//! the current version (taking uses like any encryption, rotating if the budget says so; new
//! versions are never in the set, so the job ends), then deletes the set's key records in one
//! write and compacts the key store. The keyring drops the set's keys (zeroized once the last
//! read in flight lets go); a read that found a DEK under a version retired meanwhile reads the
//! secret again.
//!
//! Invariant: no DEK is wrapped under a version of a job's set after the job's scan starts: the
//! set holds only versions that were not current, puts hold `wrap_gate` for reading from wrap
//! to commit, and a starting job takes it for writing once (a barrier) before it scans. (A unit
//! test with concurrent writers found the race without the barrier: a put that read the current
//! version just before a rotation committed a DEK under it after the scan had passed its key.)
//! A re-wrap holds the secret's stripe lock, so it never races a put or a delete of the same
//! secret. KEK changes (rotation, scheduling, retirement) hold `key_changes`. Lock order:
//! stripe, `wrap_gate`, `key_changes`; never the reverse.
//!
//! Maintenance (`maintenance.rs`) runs the sweep and the re-wrap jobs of this module as tasks
//! of their own, on the server's timer (`--maintenance-interval-ms`, default 200); a run
//! re-wraps at most `--rewrap-rate` × interval DEKs.

use std::collections::{BTreeMap, BTreeSet};

use super::due::Unit;
use super::feed::{Event, EventKind};
use super::*;
use crate::schema::{
    KEK_PREFIX, PREVIOUS_ROOT_PREFIX, kek_count_key, kek_count_prefix, kek_key, kek_prefix,
    kek_state_key, previous_root_key, root_count_key, shredded_key,
};

/// The wrap gate: every writer is inside it (holds a [`WrapGuard`]) from the moment it wraps
/// under a KEK until its write is committed, and wrapping takes the guard as a parameter; a
/// re-wrap job closes it behind them once after fixing its set of versions (only this module
/// can), so every write that could have wrapped under a version of the set has committed
/// before the job's scan starts.
struct WrapGate(RwLock<()>);

/// Proof of being inside the wrap gate.
pub(super) struct WrapGuard<'a>(
    #[allow(dead_code, reason = "held for its Drop, which lets the gate close")]
    RwLockReadGuard<'a, ()>,
);

impl Default for WrapGate {
    fn default() -> Self {
        WrapGate(RwLock::new(()))
    }
}

impl WrapGate {
    /// Enters the gate; leave it (drop the guard) once what was wrapped is committed.
    fn enter(&self) -> WrapGuard<'_> {
        WrapGuard(read(&self.0))
    }

    /// Waits until every writer inside the gate has left. The caller must hold no
    /// [`WrapGuard`] itself (it would wait for itself): only the re-wrap job calls this, at
    /// the start of its round, from maintenance, which holds none.
    fn close_behind(&self) {
        drop(write(&self.0));
    }
}

/// The key to the KEK lock ([`KekState`]): only this module makes one, so only this module takes the
/// lock (others ask [`Vault::hold_key_changes`]).
pub(super) struct KeyChanges(());

/// The KEK lifecycle's own state: the lock over KEK changes (only this module takes it; others
/// ask [`Vault::hold_key_changes`]), the wrap gate, and the test-only log of key uses.
pub(super) struct KekState {
    /// Serializes changes to KEK versions (rotation, scheduling, retirement, cache loads).
    /// Taken after a stripe lock, never before one.
    changes: OwnedLock<KeyChanges>,
    /// Held for reading by every put from the moment it wraps a DEK until its write is
    /// committed; a re-wrap job takes it for writing once after fixing its set, so every put
    /// that could have wrapped under a version of the set has committed before the scan starts.
    wrap_gate: WrapGate,
    /// Test-only log of every key use (see [`KeyPolicy::invocation_log`]).
    invocation_log: Option<Mutex<std::fs::File>>,
}

impl KekState {
    pub(super) fn new(policy: &KeyPolicy) -> Result<KekState> {
        let invocation_log = match &policy.invocation_log {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        Error::Storage(StorageError(format!(
                            "invocation log {}: {e}",
                            path.display()
                        )))
                    })?,
            )),
            None => None,
        };
        Ok(KekState {
            changes: OwnedLock::default(),
            wrap_gate: WrapGate::default(),
            invocation_log,
        })
    }

    /// Enters the wrap gate, before wrapping under a KEK; drop the guard once the write is
    /// committed.
    pub(super) fn enter_wrap_gate(&self) -> WrapGuard<'_> {
        self.wrap_gate.enter()
    }
}

/// No key is ever used for more invocations than this (random 96-bit nonces, NIST SP 800-38D).
pub const HARD_CAP: u64 = 1 << 32;
/// Default budget of a key version: 2^30 invocations, a quarter of the cap (the chance of a nonce
/// collision stays below 2^-37).
pub const DEFAULT_KEY_BUDGET: u64 = 1 << 30;
/// Default number of live KEK versions per tenant; older ones are retired.
pub const DEFAULT_MAX_LIVE_VERSIONS: u32 = 8;
/// Default size of a durable reservation of uses.
pub const DEFAULT_RESERVE_BLOCK: u64 = 1024;
/// Default waiting period between a tenant's deletion and the destruction of its keys.
pub const DEFAULT_SHRED_DELAY_NANOS: i64 = 7 * 86_400 * 1_000_000_000;

/// How keys are used up, rotated, retired and destroyed.
#[derive(Clone, Debug)]
pub struct KeyPolicy {
    /// Invocations a key version may serve (at most [`HARD_CAP`]).
    pub budget: u64,
    /// A tenant's KEK rotates once its current version is this old; 0: never by age.
    pub max_age_nanos: i64,
    /// KEK versions a tenant keeps live; older ones are retired. 0: retirement only on request.
    pub max_live_versions: u32,
    /// Uses reserved durably at a time.
    pub reserve_block: u64,
    /// DEKs the re-wrap job re-wraps per maintenance round (the server runs rounds on a timer).
    pub rewrap_per_round: usize,
    /// Waiting period between a tenant's deletion and the destruction of its keys.
    pub shred_delay_nanos: i64,
    /// DANGER, tests only: every use of a key is appended (and synced) to this file first.
    pub invocation_log: Option<std::path::PathBuf>,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            budget: DEFAULT_KEY_BUDGET,
            max_age_nanos: 0,
            max_live_versions: DEFAULT_MAX_LIVE_VERSIONS,
            reserve_block: DEFAULT_RESERVE_BLOCK,
            rewrap_per_round: 200,
            shred_delay_nanos: DEFAULT_SHRED_DELAY_NANOS,
            invocation_log: None,
        }
    }
}

impl KeyPolicy {
    pub fn validate(&self) -> Result<()> {
        if self.budget == 0 || self.budget > HARD_CAP {
            return Err(Error::invalid(
                "key_budget",
                format!("must be between 1 and {HARD_CAP} (2^32)"),
            ));
        }
        if self.reserve_block == 0 {
            return Err(Error::invalid("key_reserve_block", "must be at least 1"));
        }
        if self.max_age_nanos < 0 || self.shred_delay_nanos < 0 {
            return Err(Error::invalid("key_max_age", "must not be negative"));
        }
        Ok(())
    }
}

/// A key's uses: `used` counts every invocation since the count was loaded (exact while the
/// process lives); `reserved` is what the key store holds, never below `used`.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Uses {
    used: u64,
    reserved: u64,
}

impl Uses {
    pub(super) fn loaded(stored: u64) -> Uses {
        Uses {
            used: stored,
            reserved: stored,
        }
    }

    pub(super) fn used(&self) -> u64 {
        self.used
    }
}

/// One KEK version in memory. Dropping it zeroizes the key.
pub(super) struct KekVersion {
    pub(super) key: SecretKey,
    pub(super) created_unix_nanos: i64,
    uses: Mutex<Uses>,
}

/// DEKs a re-wrap job writes in one batch (one synced write instead of one per DEK), and
/// the most secret versions one call of [`Vault::rewrap_round`] reads (each up to the largest
/// value: their memory is bounded by this many values).
pub(super) const REWRAP_CHUNK: usize = 256;

/// Lock stripes (of [`LOCK_STRIPES`](super::LOCK_STRIPES)) a re-wrap write holds at most: a
/// quarter of the puts wait for it, the others go on.
const REWRAP_STRIPES: usize = 16;

/// Tenants whose unsealed KEKs the keyring keeps at most; beyond it, tenants whose keys no
/// call holds are evicted (and unsealed again on their next use).
pub(super) const KEK_CACHE_TENANTS: usize = 4096;

/// Tenants evicted at once when the KEK cache is full.
const KEK_EVICTIONS: usize = 64;

impl Keyring {
    /// Keeps `keys` as the tenant's cached KEKs. When the cache holds [`KEK_CACHE_TENANTS`]
    /// others, up to [`KEK_EVICTIONS`] tenants whose keys nothing else holds go first: a call in
    /// flight keeps its keys and their use counts, and a tenant loaded again reads its counts
    /// from the key store, where the reservations made for it are (so an evicted tenant's
    /// unused reservation, at most one block, counts as used: budgets err on the safe side).
    pub(super) fn cache_tenant_keys(&self, tenant: TenantId, keys: Arc<TenantKeys>) {
        let mut cache = write(&self.tenants);
        if cache.len() >= KEK_CACHE_TENANTS && !cache.contains_key(&tenant) {
            let idle: Vec<TenantId> = cache
                .iter()
                .filter(|(_, held)| {
                    Arc::strong_count(held) == 1
                        && held
                            .versions
                            .values()
                            .all(|kek| Arc::strong_count(kek) == 1)
                })
                .map(|(id, _)| *id)
                .take(KEK_EVICTIONS)
                .collect();
            for id in idle {
                cache.remove(&id);
            }
        }
        cache.insert(tenant, keys);
    }
}

/// A tenant's KEK versions, unsealed on first use and cached (up to [`KEK_CACHE_TENANTS`]
/// tenants) until seal.
pub(super) struct TenantKeys {
    pub(super) current: u32,
    pub(super) versions: BTreeMap<u32, Arc<KekVersion>>,
}

#[derive(Serialize, Deserialize)]
pub(in crate::vault) struct KekRecord {
    pub(super) created_unix_nanos: i64,
    /// The KEK sealed under the root key (base64).
    pub(super) sealed: String,
}

/// A tenant's retirement state, in the key store (`kek-state/<tenant id>`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Lifecycle {
    /// Versions waiting for the next job.
    #[serde(default)]
    scheduled: BTreeSet<u32>,
    #[serde(default)]
    job: Option<RewrapJob>,
    #[serde(default)]
    retired: Vec<RetiredVersion>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct RewrapJob {
    /// The fixed set being retired.
    versions: BTreeSet<u32>,
    started_unix_nanos: i64,
    /// Hex of the last secret-version key handled (relative to the tenant's prefix).
    cursor: String,
    scanned: u64,
    rewrapped: u64,
    /// Secret versions of the tenant when the job started.
    total: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct RetiredVersion {
    version: u32,
    retired_unix_nanos: i64,
    rewrapped: u64,
}

/// A KEK version as `keys status` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersionStatus {
    pub version: u32,
    pub created_unix_nanos: i64,
    /// Invocations counted (exact since start-up; after a restart it starts at the stored mark).
    pub invocations: u64,
    /// The durably reserved mark (never below `invocations`).
    pub reserved: u64,
    pub remaining: u64,
    /// current, live, scheduled (for retirement) or retiring (in the running job).
    pub state: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewrapProgress {
    pub versions: Vec<u32>,
    pub started_unix_nanos: i64,
    pub scanned: u64,
    pub rewrapped: u64,
    pub total: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetiredStatus {
    pub version: u32,
    pub retired_unix_nanos: i64,
    pub rewrapped: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantKeyStatus {
    pub tenant: TenantName,
    pub id: TenantId,
    pub current: u32,
    pub versions: Vec<KeyVersionStatus>,
    pub rewrap: Option<RewrapProgress>,
    pub retired: Vec<RetiredStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootKeyStatus {
    pub version: u32,
    pub invocations: u64,
    pub reserved: u64,
    pub remaining: u64,
}

/// What [`Vault::usage_report`] finds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageReport {
    pub budget: u64,
    pub root: RootKeyStatus,
    pub tenants: Vec<TenantUsage>,
    /// Tenants whose records failed to load.
    pub failed: u64,
}

/// One tenant in a [`UsageReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantUsage {
    pub keys: TenantKeyStatus,
    /// Webhook deliveries waiting, and in the dead-letter lists, over the tenant's webhooks.
    pub webhooks_pending: u64,
    pub webhooks_dead: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStatus {
    pub budget: u64,
    pub max_age_nanos: i64,
    pub max_live_versions: u32,
    /// Only for the system scope.
    pub root: Option<RootKeyStatus>,
    /// One page of the tenants when no tenant was named.
    pub tenants: Vec<TenantKeyStatus>,
    /// The next page's token; `None` on the last page.
    pub next_page_token: Option<String>,
}

pub(super) fn previous_root_context(version: u32) -> Context<'static> {
    Context {
        purpose: Purpose::SystemKey,
        tenant: None,
        path: "root-previous",
        version: u64::from(version),
    }
}

pub(super) fn version_suffix(key: &[u8], prefix_len: usize, what: &str) -> Result<u32> {
    key[prefix_len..]
        .try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| corrupt(what))
}

pub(super) fn count_value(bytes: &[u8]) -> Result<u64> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt("a key use count"))
}

/// Which key a use is taken from (for the reservation key and the invocation log).
#[derive(Clone, Copy)]
pub(super) enum Counted<'a> {
    Kek(TenantId, u32),
    Root(u32),
    /// A named key's version (encryption as a service).
    Named(TenantId, &'a crate::kms::KeyName, u32),
}

impl Counted<'_> {
    fn storage_key(self) -> Vec<u8> {
        match self {
            Counted::Kek(tenant, version) => kek_count_key(tenant, version),
            Counted::Root(version) => root_count_key(version),
            Counted::Named(tenant, name, version) => schema::named_count_key(tenant, name, version),
        }
    }
}

impl Vault {
    /// Takes one use of a key: `false` if it is at its budget (nothing taken). Reserves the next
    /// block durably first when the reserved uses are spent.
    pub(super) fn take_use(&self, counted: Counted<'_>, uses: &Mutex<Uses>) -> Result<bool> {
        self.take_use_within(counted, uses, self.config.keys.budget.min(HARD_CAP))
    }

    /// [`Vault::take_use`] with the key's own `limit` (a named key's budget, or `u64::MAX` for a
    /// type that needs none).
    pub(super) fn take_use_within(
        &self,
        counted: Counted<'_>,
        uses: &Mutex<Uses>,
        limit: u64,
    ) -> Result<bool> {
        let mut uses = lock(uses);
        if uses.used >= limit {
            return Ok(false);
        }
        if uses.used >= uses.reserved {
            // The durable count is read again before the next block: on stores that several
            // nodes share, a node that was active before this one may have reserved past what
            // this node's cache knows. Uses are never taken below the durable count.
            let durable = match self.keys.get(Space::Config, &counted.storage_key())? {
                Some(bytes) => count_value(&bytes)?,
                None => 0,
            };
            if durable > uses.used {
                uses.used = durable;
                uses.reserved = durable;
                if uses.used >= limit {
                    return Ok(false);
                }
            }
            let next = uses
                .used
                .saturating_add(self.config.keys.reserve_block)
                .min(limit);
            let mut batch = WriteBatch::new();
            batch.put(Space::Config, counted.storage_key(), next.to_be_bytes());
            self.keys.write(batch)?;
            uses.reserved = next;
        }
        uses.used += 1;
        if let Some(log) = &self.kek_state.invocation_log {
            use std::io::Write;
            let line = match counted {
                Counted::Kek(tenant, version) => format!("kek {} {version}\n", tenant.to_hex()),
                Counted::Root(version) => format!("root {version}\n"),
                Counted::Named(tenant, name, version) => {
                    format!("named {} {name} {version}\n", tenant.to_hex())
                }
            };
            let mut file = lock(log);
            file.write_all(line.as_bytes())
                .and_then(|()| file.sync_data())
                .map_err(|e| Error::Storage(StorageError(format!("invocation log: {e}"))))?;
        }
        Ok(true)
    }

    /// Seals under the root key, taking one of its uses; refused once the root key is at its
    /// budget.
    pub(super) fn seal_under_root(
        &self,
        keyring: &Keyring,
        context: &Context<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        if !self.take_use(Counted::Root(keyring.root_version), &keyring.root_uses)? {
            return Err(Error::FailedPrecondition(format!(
                "root key version {} has used its budget of {} invocations; no more keys can be \
                 sealed under it",
                keyring.root_version, self.config.keys.budget
            )));
        }
        crypto::seal(
            &keyring.root,
            KeyRef {
                kind: KeyKind::Root,
                version: keyring.root_version,
            },
            context,
            plaintext,
        )
    }

    fn seal_kek(
        &self,
        keyring: &Keyring,
        tenant: TenantId,
        version: u32,
        kek: &SecretKey,
        created: i64,
    ) -> Result<Vec<u8>> {
        let sealed =
            self.seal_under_root(keyring, &kek_context(tenant, version), kek.expose_secret())?;
        to_json(&KekRecord {
            created_unix_nanos: created,
            sealed: STANDARD.encode(sealed),
        })
    }

    /// Creates version 1 of a new tenant's KEK and returns its stored record.
    pub(super) fn first_kek(&self, keyring: &Keyring, tenant: TenantId) -> Result<Vec<u8>> {
        let kek = SecretKey::generate()?;
        self.seal_kek(keyring, tenant, 1, &kek, self.now())
    }

    /// The tenant's KEK versions, unsealed on first use and cached until seal.
    pub(super) fn tenant_keys(
        &self,
        keyring: &Keyring,
        tenant: TenantId,
    ) -> Result<Arc<TenantKeys>> {
        if let Some(keys) = read_now(&keyring.tenants)?.get(&tenant) {
            return Ok(Arc::clone(keys));
        }
        // `key_changes` is held across a tenant's re-wrap and its audit record.
        refuse_to_wait()?;
        let changes = self.hold_key_changes();
        self.tenant_keys_locked(&changes, keyring, tenant)
    }

    /// Takes `key_changes`, for a change outside this module that must not race a KEK change
    /// (shredding's destruction, root rotation). Hold it until the change is committed.
    pub(super) fn hold_key_changes(&self) -> Held<'_, KeyChanges> {
        self.kek_state.changes.hold(KeyChanges(()))
    }

    /// [`Vault::tenant_keys`] with `key_changes` held.
    pub(super) fn tenant_keys_locked(
        &self,
        _changes: &Held<'_, KeyChanges>,
        keyring: &Keyring,
        tenant: TenantId,
    ) -> Result<Arc<TenantKeys>> {
        if let Some(keys) = read(&keyring.tenants).get(&tenant) {
            return Ok(Arc::clone(keys));
        }
        self.reload_tenant_keys(_changes, keyring, tenant)
    }

    /// Loads the tenant's KEK versions from the key store into the cache; versions already
    /// cached keep their counters.
    pub(super) fn reload_tenant_keys(
        &self,
        _changes: &Held<'_, KeyChanges>,
        keyring: &Keyring,
        tenant: TenantId,
    ) -> Result<Arc<TenantKeys>> {
        let prefix = kek_prefix(tenant);
        let entries = self
            .keys
            .scan(Space::Config, &prefix, &prefix, MAX_KEK_VERSIONS + 1)?;
        if entries.len() > MAX_KEK_VERSIONS {
            return Err(corrupt(&format!(
                "the KEKs of tenant {tenant} (more than {MAX_KEK_VERSIONS} versions)"
            )));
        }
        if entries.is_empty() {
            if let Some(receipt) = self.keys.get(Space::Config, &shredded_key(tenant))? {
                let receipt: ShredTombstone = from_json(&receipt, "a shred record")?;
                return Err(Error::FailedPrecondition(format!(
                    "the keys of tenant {} ({tenant}) were destroyed (crypto-shredded) at {}; \
                     its data cannot be read",
                    receipt.name,
                    crate::time::rfc3339(receipt.shredded_unix_nanos)
                )));
            }
            return Err(corrupt(&format!(
                "the KEKs of tenant {tenant} (none stored)"
            )));
        }
        let count_prefix = kek_count_prefix(tenant);
        let mut counts = HashMap::new();
        for (key, value) in self.keys.scan(
            Space::Config,
            &count_prefix,
            &count_prefix,
            MAX_KEK_VERSIONS + 1,
        )? {
            counts.insert(
                version_suffix(&key, count_prefix.len(), "a key use count key")?,
                count_value(&value)?,
            );
        }
        let cached = read(&keyring.tenants).get(&tenant).cloned();
        let mut versions = BTreeMap::new();
        for (key, value) in entries {
            let version = version_suffix(&key, prefix.len(), "a KEK key")?;
            if let Some(existing) = cached.as_ref().and_then(|c| c.versions.get(&version)) {
                versions.insert(version, Arc::clone(existing));
                continue;
            }
            let record: KekRecord = from_json(&value, "a KEK record")?;
            let sealed = STANDARD
                .decode(&record.sealed)
                .map_err(|_| corrupt("a KEK record"))?;
            let header = Header::parse(&sealed)?;
            let root = (header.key.kind == KeyKind::Root)
                .then(|| keyring.root_key(header.key.version))
                .flatten()
                .ok_or_else(|| {
                    corrupt("a KEK record (sealed under an unknown root key version)")
                })?;
            let what = || format!("KEK version {version} of tenant {tenant}");
            let bytes = crypto::open(root, &kek_context(tenant, version), &sealed, &what)?;
            let key =
                SecretKey::from_bytes(bytes).ok_or_else(|| corrupt("a KEK (wrong length)"))?;
            versions.insert(
                version,
                Arc::new(KekVersion {
                    key,
                    created_unix_nanos: record.created_unix_nanos,
                    uses: Mutex::new(Uses::loaded(counts.get(&version).copied().unwrap_or(0))),
                }),
            );
        }
        let current = versions.keys().next_back().copied().unwrap_or(0);
        let loaded = Arc::new(TenantKeys { current, versions });
        keyring.cache_tenant_keys(tenant, Arc::clone(&loaded));
        Ok(loaded)
    }

    /// The KEK of `version`, reloading the tenant's keys once if the cache does not have it.
    pub(super) fn kek(
        &self,
        keyring: &Keyring,
        tenant: TenantId,
        version: u32,
    ) -> Result<Option<Arc<KekVersion>>> {
        if let Some(kek) = self.tenant_keys(keyring, tenant)?.versions.get(&version) {
            return Ok(Some(Arc::clone(kek)));
        }
        refuse_to_wait()?;
        let changes = self.hold_key_changes();
        Ok(self
            .reload_tenant_keys(&changes, keyring, tenant)?
            .versions
            .get(&version)
            .cloned())
    }

    /// Wraps a DEK under the tenant's current KEK, taking one use of it; a version at its budget
    /// is rotated first. Returns the wrapped DEK and the version that wrapped it. The caller is
    /// inside the wrap gate (`wrapping`) until what it wrapped is committed.
    pub(super) fn wrap_dek(
        &self,
        wrapping: &WrapGuard<'_>,
        keyring: &Keyring,
        tenant: TenantId,
        context: &Context<'_>,
        dek: &SecretKey,
    ) -> Result<(Vec<u8>, u32)> {
        self.wrap_under_kek(wrapping, keyring, tenant, context, dek.expose_secret())
    }

    /// [`Vault::wrap_dek`] for key material of any length (a named key's version).
    pub(super) fn wrap_under_kek(
        &self,
        _wrapping: &WrapGuard<'_>,
        keyring: &Keyring,
        tenant: TenantId,
        context: &Context<'_>,
        material: &[u8],
    ) -> Result<(Vec<u8>, u32)> {
        loop {
            let keys = self.tenant_keys(keyring, tenant)?;
            let version = keys.current;
            let kek = keys
                .versions
                .get(&version)
                .ok_or_else(|| corrupt("the current KEK"))?;
            if self.take_use(Counted::Kek(tenant, version), &kek.uses)? {
                let wrapped = crypto::seal(
                    &kek.key,
                    KeyRef {
                        kind: KeyKind::Kek,
                        version,
                    },
                    context,
                    material,
                )?;
                return Ok((wrapped, version));
            }
            let changes = self.hold_key_changes();
            // Another writer may have rotated already.
            if self.tenant_keys_locked(&changes, keyring, tenant)?.current == version {
                self.add_kek_version(
                    &changes,
                    keyring,
                    tenant,
                    &format!(
                        "KEK version {version} used its budget of {} invocations",
                        self.config.keys.budget
                    ),
                )?;
            }
        }
    }

    /// Adds a KEK version for the tenant and schedules versions past the live limit for
    /// retirement, in one key-store write. `automatic` names the reason for a rotation the vault
    /// does by itself (audited as the vault), empty for one a caller asked for.
    fn add_kek_version(
        &self,
        changes: &Held<'_, KeyChanges>,
        keyring: &Keyring,
        tenant: TenantId,
        automatic: &str,
    ) -> Result<u32> {
        let keys = self.tenant_keys_locked(changes, keyring, tenant)?;
        if keys.versions.len() >= MAX_KEK_VERSIONS {
            return Err(Error::FailedPrecondition(format!(
                "tenant {tenant} has {MAX_KEK_VERSIONS} KEK versions, the most it may keep"
            )));
        }
        let version = keys
            .current
            .checked_add(1)
            .ok_or_else(|| Error::FailedPrecondition("no KEK versions left".into()))?;
        // Never overwrite a stored KEK: data may still be wrapped under it.
        if self
            .keys
            .get(Space::Config, &kek_key(tenant, version))?
            .is_some()
        {
            return Err(corrupt(&format!(
                "KEK version {version} of tenant {tenant} (exists but is not cached)"
            )));
        }
        if !automatic.is_empty() {
            self.audit_vault(
                tenant,
                format!("rotating the KEK of tenant {tenant} to version {version}: {automatic}"),
            )?;
        }
        let kek = SecretKey::generate()?;
        let created = self.now();
        let mut batch = WriteBatch::new();
        batch.put(
            Space::Config,
            kek_key(tenant, version),
            self.seal_kek(keyring, tenant, version, &kek, created)?,
        );
        let mut lifecycle = self.lifecycle(tenant)?;
        let mut live: Vec<u32> = keys.versions.keys().copied().collect();
        live.push(version);
        let scheduled = self.schedule_past_limit(&mut lifecycle, &live);
        if scheduled {
            batch.put(Space::Config, kek_state_key(tenant), to_json(&lifecycle)?);
        }
        crate::crash_point("kek-rotate-before-write");
        self.keys.write(batch)?;
        crate::crash_point("kek-rotate-after-write");
        if scheduled {
            self.note_due(Unit::Rewrap, tenant, created);
        }
        if self.config.keys.max_age_nanos > 0 {
            self.note_due(
                Unit::Sweep,
                tenant,
                created.saturating_add(self.config.keys.max_age_nanos),
            );
        }
        let mut versions = keys.versions.clone();
        versions.insert(
            version,
            Arc::new(KekVersion {
                key: kek,
                created_unix_nanos: created,
                uses: Mutex::new(Uses::default()),
            }),
        );
        keyring.cache_tenant_keys(
            tenant,
            Arc::new(TenantKeys {
                current: version,
                versions,
            }),
        );
        // The key store's write above is the change; the event follows it (a crash in between
        // loses the event, never invents one).
        let mut event = Event::new(EventKind::KeyRotated, "", Vec::new(), created);
        event.key_version = version;
        if !automatic.is_empty() {
            event.detail = automatic.to_owned();
        }
        if let Err(e) = self.write_event(tenant, event) {
            // The rotation happened; only its notice is lost.
            tracing::warn!(error = %e, tenant = %tenant, version, "key rotation event not written");
        }
        Ok(version)
    }

    /// Schedules the oldest versions beyond the live limit; `versions` holds every stored
    /// version, the newest (current) last. Returns whether anything changed.
    fn schedule_past_limit(&self, lifecycle: &mut Lifecycle, versions: &[u32]) -> bool {
        let limit = self.config.keys.max_live_versions as usize;
        if limit == 0 {
            return false;
        }
        let Some(current) = versions.iter().max().copied() else {
            return false;
        };
        let in_job = lifecycle.job.as_ref().map(|j| &j.versions);
        let mut live: Vec<u32> = versions
            .iter()
            .copied()
            .filter(|v| {
                *v != current
                    && !lifecycle.scheduled.contains(v)
                    && !in_job.is_some_and(|set| set.contains(v))
            })
            .collect();
        live.sort_unstable();
        // The current version counts as live.
        let excess = (live.len() + 1).saturating_sub(limit);
        for version in live.into_iter().take(excess) {
            lifecycle.scheduled.insert(version);
        }
        excess > 0
    }

    /// Whether the tenant has a re-wrap job running, or versions waiting for one.
    pub(super) fn rewrap_pending(&self, tenant: TenantId) -> Result<bool> {
        let lifecycle = self.lifecycle(tenant)?;
        Ok(lifecycle.job.is_some() || !lifecycle.scheduled.is_empty())
    }

    fn lifecycle(&self, tenant: TenantId) -> Result<Lifecycle> {
        Ok(self
            .keys
            .get(Space::Config, &kek_state_key(tenant))?
            .map(|bytes| from_json(&bytes, "a tenant's key lifecycle"))
            .transpose()?
            .unwrap_or_default())
    }

    /// Writes a record as the vault itself (background jobs); the job does not proceed if the
    /// audit log cannot take it.
    pub(super) fn audit_vault(&self, tenant: TenantId, detail: String) -> Result<()> {
        let Some(audit) = &self.audit else {
            return Ok(());
        };
        let mut entry = crate::audit::writer::system_entry(detail);
        entry.tenant = self
            .tenant_state(tenant)
            .ok()
            .flatten()
            .map_or_else(|| tenant.to_hex(), |state| state.name.to_string());
        audit.append(entry).map_err(|_| Error::AuditUnavailable)?;
        Ok(())
    }

    /// The key sweep of one tenant: rotation by age, and scheduling past the live limit (a
    /// limit lowered since the versions were made). Its unit is due again when the current
    /// KEK reaches the maximum age. A deleted tenant, or one without keys, has nothing to sweep.
    pub(super) fn sweep_tenant(
        &self,
        keyring: &Keyring,
        id: TenantId,
        now: i64,
        report: &mut MaintenanceReport,
    ) -> Result<()> {
        if self.tenant_state(id)?.is_none() {
            return Ok(());
        }
        let max_age = self.config.keys.max_age_nanos;
        let changes = self.hold_key_changes();
        // The stored records tell the versions and their ages: nothing is unsealed (or cached)
        // unless the tenant rotates. A tenant without keys (a data store older than a
        // shredding) has nothing to maintain.
        let stored = self.stored_kek_ages(id)?;
        let Some((&current, &created)) = stored.last_key_value() else {
            return Ok(());
        };
        if max_age > 0 && now - created >= max_age {
            let age_days = (now - created) / 86_400_000_000_000;
            // add_kek_version makes the sweep due again at the new version's age limit.
            self.add_kek_version(
                &changes,
                keyring,
                id,
                &format!("KEK version {current} reached the maximum age ({age_days} days)"),
            )?;
            report.rotated += 1;
            return Ok(());
        }
        let mut lifecycle = self.lifecycle(id)?;
        let versions: Vec<u32> = stored.keys().copied().collect();
        if self.schedule_past_limit(&mut lifecycle, &versions) {
            let mut batch = WriteBatch::new();
            batch.put(Space::Config, kek_state_key(id), to_json(&lifecycle)?);
            self.keys.write(batch)?;
            self.note_due(Unit::Rewrap, id, now);
        }
        if max_age > 0 {
            self.note_due(Unit::Sweep, id, created.saturating_add(max_age));
        }
        Ok(())
    }

    /// The tenant's stored KEK versions and when each was made, from their records (nothing
    /// unsealed).
    fn stored_kek_ages(&self, tenant: TenantId) -> Result<BTreeMap<u32, i64>> {
        let prefix = kek_prefix(tenant);
        let mut ages = BTreeMap::new();
        for (key, value) in self
            .keys
            .scan(Space::Config, &prefix, &prefix, MAX_KEK_VERSIONS + 1)?
        {
            let version = version_suffix(&key, prefix.len(), "a KEK key")?;
            let record: KekRecord = from_json(&value, "a KEK record")?;
            ages.insert(version, record.created_unix_nanos);
        }
        Ok(ages)
    }

    /// Advances the tenant's re-wrap job by at most `budget` DEKs (starting one if versions are
    /// scheduled); retires the set when the scan is done. Returns the DEKs handled.
    pub(super) fn rewrap_round(
        &self,
        keyring: &Keyring,
        tenant: TenantId,
        budget: usize,
        report: &mut MaintenanceReport,
    ) -> Result<usize> {
        let mut started = false;
        let job = {
            let _changes = self.hold_key_changes();
            let mut lifecycle = self.lifecycle(tenant)?;
            match &lifecycle.job {
                Some(job) => job.clone(),
                None if lifecycle.scheduled.is_empty() => return Ok(0),
                None => {
                    let versions = std::mem::take(&mut lifecycle.scheduled);
                    let total = self.count_secret_versions(tenant)?;
                    let listed: Vec<String> = versions.iter().map(u32::to_string).collect();
                    self.audit_vault(
                        tenant,
                        format!(
                            "re-wrap job started: retiring KEK versions {} of tenant {tenant} \
                             ({total} secret versions to scan)",
                            listed.join(", ")
                        ),
                    )?;
                    let job = RewrapJob {
                        versions,
                        started_unix_nanos: self.now(),
                        cursor: String::new(),
                        scanned: 0,
                        rewrapped: 0,
                        total,
                    };
                    lifecycle.job = Some(job.clone());
                    let mut batch = WriteBatch::new();
                    batch.put(Space::Config, kek_state_key(tenant), to_json(&lifecycle)?);
                    self.keys.write(batch)?;
                    started = true;
                    job
                }
            }
        };
        if started {
            // The barrier: a put that read the current version before it left the set may still
            // be about to commit a DEK wrapped under it. Wait for every put in flight; puts after
            // this read a current version outside the set. (A job resumed after a restart needs
            // no barrier: no put of this process predates its set.)
            self.kek_state.wrap_gate.close_behind();
        }

        let prefix = schema::tenant_versions_prefix(tenant);
        let mut start = prefix.clone();
        start
            .extend_from_slice(&hex::decode(&job.cursor).map_err(|_| corrupt("a re-wrap cursor"))?);
        if !job.cursor.is_empty() {
            start.push(0);
        }
        let entries = self.data.scan(Space::Secrets, &prefix, &start, budget)?;
        let done = entries.len() < budget;
        let mut scanned = 0u64;
        let mut rewrapped = 0u64;
        let mut last = None;
        let mut chunk = Vec::with_capacity(REWRAP_CHUNK);
        for (key, value) in &entries {
            scanned += 1;
            last = Some(key.clone());
            let Some((_, wrapped, _)) = decode_version(value) else {
                return Err(corrupt("a stored secret version"));
            };
            let header = Header::parse(wrapped)?;
            if job.versions.contains(&header.key.version) {
                chunk.push(&key[prefix.len()..]);
            }
            if chunk.len() == REWRAP_CHUNK {
                rewrapped += self.rewrap_chunk(keyring, tenant, &chunk, &job.versions)?;
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            rewrapped += self.rewrap_chunk(keyring, tenant, &chunk, &job.versions)?;
        }

        if done {
            // Named keys' material wrapped under the set goes to the current KEK too (their
            // records are few: all of them in this round).
            rewrapped += self.rewrap_named_keys(keyring, tenant, &job.versions)?;
        }
        let changes = self.hold_key_changes();
        let mut lifecycle = self.lifecycle(tenant)?;
        let Some(stored) = lifecycle.job.as_mut() else {
            return Err(corrupt("a re-wrap job (vanished while running)"));
        };
        stored.scanned += scanned;
        stored.rewrapped += rewrapped;
        if let Some(last) = &last {
            stored.cursor = hex::encode(&last[prefix.len()..]);
        }
        report.rewrapped += rewrapped;
        if !done {
            let mut batch = WriteBatch::new();
            batch.put(Space::Config, kek_state_key(tenant), to_json(&lifecycle)?);
            self.keys.write(batch)?;
            return Ok(entries.len());
        }
        // The scan is complete: nothing is wrapped under the set any more.
        let Some(finished) = lifecycle.job.take() else {
            return Err(corrupt("a re-wrap job"));
        };
        let keys = self.tenant_keys_locked(&changes, keyring, tenant)?;
        let listed: Vec<String> = finished.versions.iter().map(u32::to_string).collect();
        self.audit_vault(
            tenant,
            format!(
                "retired KEK versions {} of tenant {tenant}: {} DEKs re-wrapped into version {} \
                 ({} secret versions scanned); the key material is destroyed",
                listed.join(", "),
                finished.rewrapped,
                keys.current,
                finished.scanned
            ),
        )?;
        let now = self.now();
        let mut batch = WriteBatch::new();
        for version in &finished.versions {
            batch
                .delete(Space::Config, kek_key(tenant, *version))
                .delete(Space::Config, kek_count_key(tenant, *version));
            lifecycle.retired.push(RetiredVersion {
                version: *version,
                retired_unix_nanos: now,
                rewrapped: finished.rewrapped,
            });
        }
        batch.put(Space::Config, kek_state_key(tenant), to_json(&lifecycle)?);
        self.keys.write(batch)?;
        let mut versions = keys.versions.clone();
        for version in &finished.versions {
            versions.remove(version);
        }
        keyring.cache_tenant_keys(
            tenant,
            Arc::new(TenantKeys {
                current: keys.current,
                versions,
            }),
        );
        drop(changes);
        self.keys.compact()?;
        report.retired += finished.versions.len() as u64;
        Ok(entries.len())
    }

    /// Re-wraps the DEKs of the secret versions at `relatives` (keys below the tenant's
    /// versions prefix) still wrapped under a version of `set`: one write per group of paths
    /// that fall on at most [`REWRAP_STRIPES`] lock stripes. A group's stripes are held, in
    /// ascending order, from the read of each version to the write: nothing written meanwhile
    /// (a put, a destroy) is overwritten, and puts on the other stripes go on. Returns the DEKs
    /// re-wrapped.
    fn rewrap_chunk(
        &self,
        keyring: &Keyring,
        tenant: TenantId,
        relatives: &[&[u8]],
        set: &BTreeSet<u32>,
    ) -> Result<u64> {
        let mut parsed = Vec::with_capacity(relatives.len());
        for relative in relatives {
            let split = relative
                .len()
                .checked_sub(9)
                .filter(|at| relative[*at] == 0)
                .ok_or_else(|| corrupt("a secret version key"))?;
            let path = std::str::from_utf8(&relative[..split])
                .ok()
                .and_then(|p| SecretPath::parse(p).ok())
                .ok_or_else(|| corrupt("a secret version key"))?;
            let version = relative[split + 1..]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| corrupt("a secret version key"))?;
            let stripe = self.stripe_index(tenant, path.as_str());
            parsed.push((stripe, path, version));
        }
        parsed.sort_unstable_by_key(|(stripe, _, _)| *stripe);
        let mut count = 0;
        let mut rest = parsed.as_slice();
        while !rest.is_empty() {
            // The longest run of `rest` on at most REWRAP_STRIPES stripes.
            let mut stripes = 0;
            let mut end = 0;
            while end < rest.len() {
                if end == 0 || rest[end].0 != rest[end - 1].0 {
                    if stripes == REWRAP_STRIPES {
                        break;
                    }
                    stripes += 1;
                }
                end += 1;
            }
            let (group, after) = rest.split_at(end);
            count += self.rewrap_group(keyring, tenant, group, set)?;
            rest = after;
        }
        Ok(count)
    }

    /// One group of [`Vault::rewrap_chunk`], sorted by stripe.
    fn rewrap_group(
        &self,
        keyring: &Keyring,
        tenant: TenantId,
        group: &[(usize, SecretPath, u64)],
        set: &BTreeSet<u32>,
    ) -> Result<u64> {
        let mut guards = Vec::new();
        let mut held = None;
        for (stripe, _, _) in group {
            if held != Some(*stripe) {
                guards.push(lock(&self.stripes[*stripe]));
                held = Some(*stripe);
            }
        }
        // Inside the gate like any writer (this job closed it behind the puts before its scan).
        let wrapping = self.kek_state.enter_wrap_gate();
        let mut batch = WriteBatch::new();
        for (_, path, version) in group {
            let (path, version) = (path, *version);
            let key = version_key(tenant, path, version);
            let Some(stored) = self.data.get(Space::Secrets, &key)? else {
                continue;
            };
            let what = || format!("secret {path} version {version}");
            let (created, wrapped, sealed_value) =
                decode_version(&stored).ok_or_else(|| Error::Integrity(what()))?;
            let header = Header::parse(wrapped).map_err(|_| Error::Integrity(what()))?;
            if !set.contains(&header.key.version) {
                continue;
            }
            let old = self
                .kek(keyring, tenant, header.key.version)?
                .ok_or_else(|| Error::Integrity(what()))?;
            let context = dek_context(tenant, path, version);
            let dek = SecretKey::from_bytes(crypto::open(&old.key, &context, wrapped, &what)?)
                .ok_or_else(|| Error::Integrity(what()))?;
            let (rewrapped, _) = self.wrap_dek(&wrapping, keyring, tenant, &context, &dek)?;
            batch.put(
                Space::Secrets,
                key,
                encode_version(created, &rewrapped, sealed_value),
            );
        }
        let count = batch.ops.len() as u64;
        // Each DEK stands alone: a backend with a smaller batch takes it in parts (the stripes
        // stay held until the last).
        for part in batch.split(self.data.batch_limits()) {
            self.data.write(part)?;
            crate::crash_point("rewrap-after-chunk");
        }
        drop(guards);
        Ok(count)
    }

    fn count_secret_versions(&self, tenant: TenantId) -> Result<u64> {
        let prefix = schema::tenant_versions_prefix(tenant);
        let mut start = prefix.clone();
        let mut total = 0u64;
        loop {
            let page = self.data.scan(Space::Secrets, &prefix, &start, 1024)?;
            let Some((last, _)) = page.last() else { break };
            total += page.len() as u64;
            start = last.clone();
            start.push(0);
        }
        Ok(total)
    }
}

/// Tenants' key-encryption keys: rotation, retirement, status, as `vault.keks()` hands them out. The view derefs to the vault for the
/// helpers the operations share with the other subsystems.
pub struct Keks<'a> {
    vault: &'a Vault,
}

impl std::ops::Deref for Keks<'_> {
    type Target = Vault;

    fn deref(&self) -> &Vault {
        self.vault
    }
}

impl Vault {
    /// Tenants' key-encryption keys: rotation, retirement, status.
    pub fn keks(&self) -> Keks<'_> {
        Keks { vault: self }
    }
}

impl Keks<'_> {
    /// Adds a KEK version for the tenant; every seal after this returns uses it.
    pub fn rotate(&self, caller: &Caller, tenant: &TenantName) -> Result<u32> {
        let keyring = self.keyring()?;
        if caller.system {
            self.require_system_op(caller, SystemOp::Rotate)?;
        }
        let id = self
            .authorize(caller, tenant, "", Capability::Rotate)?
            .tenant();
        if !caller.system {
            // The new KEK is sealed under the root key.
            self.admit_root_key_use(id)?;
        }
        let changes = self.hold_key_changes();
        self.add_kek_version(&changes, &keyring, id, "")
    }

    /// Rotates every live tenant's KEK (system scope). Returns each tenant with its new version.
    pub fn rotate_all(&self, caller: &Caller) -> Result<Vec<(TenantName, u32)>> {
        let keyring = self.keyring()?;
        self.require_system_op(caller, SystemOp::Rotate)?;
        let mut rotated = Vec::new();
        for record in self.tenant_records()? {
            let name = TenantName::parse(&record.name).map_err(|_| corrupt("a tenant record"))?;
            let id = TenantId::parse_hex(&record.id).ok_or_else(|| corrupt("a tenant record"))?;
            let changes = self.hold_key_changes();
            rotated.push((name, self.add_kek_version(&changes, &keyring, id, "")?));
        }
        Ok(rotated)
    }

    /// Schedules one KEK version for retirement (`rotate` on the tenant). The current version
    /// cannot be retired: rotate first.
    pub fn retire_key_version(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        version: u32,
    ) -> Result<()> {
        let keyring = self.keyring()?;
        let id = self
            .authorize(caller, tenant, "", Capability::Rotate)?
            .tenant();
        if version == 0 {
            return Err(Error::invalid("version", "KEK versions start at 1"));
        }
        let changes = self.hold_key_changes();
        let keys = self.tenant_keys_locked(&changes, &keyring, id)?;
        if !keys.versions.contains_key(&version) {
            return Err(Error::NotFound(format!(
                "KEK version {version} of tenant {tenant}"
            )));
        }
        if version == keys.current {
            return Err(Error::invalid(
                "version",
                format!("{version} is the current KEK version of tenant {tenant}; rotate first"),
            ));
        }
        let mut lifecycle = self.lifecycle(id)?;
        if lifecycle
            .job
            .as_ref()
            .is_some_and(|j| j.versions.contains(&version))
            || !lifecycle.scheduled.insert(version)
        {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        batch.put(Space::Config, kek_state_key(id), to_json(&lifecycle)?);
        self.keys.write(batch)?;
        self.note_due(Unit::Rewrap, id, self.now());
        Ok(())
    }

    /// Versions, counts, budgets and retirement progress: one tenant (`admin` on it, or the
    /// system scope), or a page of the live tenants and the root key (system scope).
    pub fn key_status(
        &self,
        caller: &Caller,
        tenant: Option<&TenantName>,
        page: &PageRequest,
    ) -> Result<KeyStatus> {
        let keyring = self.keyring()?;
        let mut next_page_token = None;
        let tenants = match tenant {
            Some(name) => {
                let id = self
                    .authorize(caller, name, "", Capability::Admin)?
                    .tenant();
                vec![(name.clone(), id)]
            }
            None => {
                require_system(caller)?;
                let mut all = Vec::new();
                let (records, next) = self.tenant_record_page(page)?;
                next_page_token = next;
                for record in records {
                    let name =
                        TenantName::parse(&record.name).map_err(|_| corrupt("a tenant record"))?;
                    let id = TenantId::parse_hex(&record.id)
                        .ok_or_else(|| corrupt("a tenant record"))?;
                    all.push((name, id));
                }
                all
            }
        };
        let budget = self.config.keys.budget;
        let mut statuses = Vec::new();
        for (name, id) in tenants {
            statuses.push(self.tenant_key_status(&keyring, name, id)?);
        }
        let root = caller.system.then(|| {
            let uses = *lock(&keyring.root_uses);
            RootKeyStatus {
                version: keyring.root_version,
                invocations: uses.used,
                reserved: uses.reserved,
                remaining: budget.saturating_sub(uses.used),
            }
        });
        Ok(KeyStatus {
            budget,
            max_age_nanos: self.config.keys.max_age_nanos,
            max_live_versions: self.config.keys.max_live_versions,
            root,
            tenants: statuses,
            next_page_token,
        })
    }

    /// Every tenant's key versions and webhook backlog, and the root key's counts: what the
    /// metrics endpoint reports. No caller: the server's operator reads it from the metrics
    /// listener, which shows tenant names only when told to. A tenant whose records fail to
    /// load is counted in `failed` and left out; the others are reported.
    pub fn usage_report(&self) -> Result<UsageReport> {
        let keyring = self.keyring()?;
        let budget = self.config.keys.budget;
        let uses = *lock(&keyring.root_uses);
        let mut report = UsageReport {
            budget,
            root: RootKeyStatus {
                version: keyring.root_version,
                invocations: uses.used,
                reserved: uses.reserved,
                remaining: budget.saturating_sub(uses.used),
            },
            tenants: Vec::new(),
            failed: 0,
        };
        for record in self.tenant_records()? {
            let (Ok(name), Some(id)) = (
                TenantName::parse(&record.name),
                TenantId::parse_hex(&record.id),
            ) else {
                report.failed += 1;
                continue;
            };
            let usage = self
                .tenant_key_status(&keyring, name, id)
                .and_then(|keys| Ok((keys, self.webhooks().webhook_backlog(id)?)));
            match usage {
                Ok((keys, (webhooks_pending, webhooks_dead))) => report.tenants.push(TenantUsage {
                    keys,
                    webhooks_pending,
                    webhooks_dead,
                }),
                Err(_) => report.failed += 1,
            }
        }
        Ok(report)
    }

    /// One tenant's versions, counts and retirement progress.
    fn tenant_key_status(
        &self,
        keyring: &Keyring,
        name: TenantName,
        id: TenantId,
    ) -> Result<TenantKeyStatus> {
        let budget = self.config.keys.budget;
        let keys = self.tenant_keys(keyring, id)?;
        let lifecycle = self.lifecycle(id)?;
        let in_job = |v: &u32| {
            lifecycle
                .job
                .as_ref()
                .is_some_and(|j| j.versions.contains(v))
        };
        let versions = keys
            .versions
            .iter()
            .map(|(version, kek)| {
                let uses = *lock(&kek.uses);
                KeyVersionStatus {
                    version: *version,
                    created_unix_nanos: kek.created_unix_nanos,
                    invocations: uses.used,
                    reserved: uses.reserved,
                    remaining: budget.saturating_sub(uses.used),
                    state: if *version == keys.current {
                        "current"
                    } else if in_job(version) {
                        "retiring"
                    } else if lifecycle.scheduled.contains(version) {
                        "scheduled"
                    } else {
                        "live"
                    },
                }
            })
            .collect();
        Ok(TenantKeyStatus {
            tenant: name,
            id,
            current: keys.current,
            versions,
            rewrap: lifecycle.job.as_ref().map(|job| RewrapProgress {
                versions: job.versions.iter().copied().collect(),
                started_unix_nanos: job.started_unix_nanos,
                scanned: job.scanned,
                rewrapped: job.rewrapped,
                total: job.total,
            }),
            retired: lifecycle
                .retired
                .iter()
                .map(|r| RetiredStatus {
                    version: r.version,
                    retired_unix_nanos: r.retired_unix_nanos,
                    rewrapped: r.rewrapped,
                })
                .collect(),
        })
    }
}

/// What one maintenance round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub rotated: u64,
    pub rewrapped: u64,
    pub retired: u64,
    pub shredded: u64,
    /// Named keys rotated by their schedule, and destroyed after their deletion waiting period.
    pub keys_rotated: u64,
    pub keys_destroyed: u64,
    /// Expiry notices sent (expiring and expired events).
    pub expiry_events: u64,
    /// Feed events removed past the retention period.
    pub events_pruned: u64,
    /// Dead tokens, ended refresh families and expired secret ids removed.
    pub purged: u64,
    /// Tasks of the round that failed (each is logged; the others ran all the same).
    pub failed: u64,
}

/// The key store's record of a destroyed tenant (`shredded/<tenant id>`): it holds no key.
#[derive(Serialize, Deserialize)]
pub(super) struct ShredTombstone {
    pub(super) name: String,
    pub(super) deleted_unix_nanos: i64,
    pub(super) shredded_unix_nanos: i64,
    pub(super) versions: Vec<u32>,
}

impl Vault {
    /// The previous root keys (`sys/root-previous/`), opened with the current root key.
    pub(super) fn previous_roots(&self, root: &SecretKey) -> Result<BTreeMap<u32, SecretKey>> {
        let mut previous = BTreeMap::new();
        let prefix = PREVIOUS_ROOT_PREFIX;
        for (key, sealed) in self.keys.scan(Space::Config, prefix, prefix, usize::MAX)? {
            let version = version_suffix(&key, prefix.len(), "a previous root key")?;
            let bytes = crypto::open(root, &previous_root_context(version), &sealed, &|| {
                format!("previous root key version {version}")
            })?;
            previous.insert(
                version,
                SecretKey::from_bytes(bytes).ok_or_else(|| corrupt("a previous root key"))?,
            );
        }
        Ok(previous)
    }

    /// Root key rotation (during a rekey, the only time the unseal key exists): a new root key,
    /// and into `batch` every KEK record, the system keys and the previous root keys re-sealed
    /// under it, with the old root key added to the previous ones. Secret data is not touched.
    /// The caller holds `key_changes` (`_changes`) until the batch is committed, and seals the
    /// returned root key under the new unseal key in the same write.
    pub(super) fn rotate_root_into(
        &self,
        _changes: &Held<'_, KeyChanges>,
        old_root: &SecretKey,
        old_version: u32,
        batch: &mut WriteBatch,
    ) -> Result<(SecretKey, u32)> {
        let new_version = old_version
            .checked_add(1)
            .ok_or_else(|| Error::FailedPrecondition("no root key versions left".into()))?;
        let new_root = SecretKey::generate()?;
        let new_ref = KeyRef {
            kind: KeyKind::Root,
            version: new_version,
        };
        let mut uses = 0u64;
        let mut reseal = |context: &Context<'_>, plaintext: &[u8]| {
            uses += 1;
            crypto::seal(&new_root, new_ref, context, plaintext)
        };

        let previous = self.previous_roots(old_root)?;

        let prefix = KEK_PREFIX;
        for (key, value) in self.keys.scan(Space::Config, prefix, prefix, usize::MAX)? {
            let rest = &key[prefix.len()..];
            let slash = rest
                .iter()
                .position(|b| *b == b'/')
                .ok_or_else(|| corrupt("a KEK key"))?;
            let tenant = std::str::from_utf8(&rest[..slash])
                .ok()
                .and_then(TenantId::parse_hex)
                .ok_or_else(|| corrupt("a KEK key"))?;
            let version = version_suffix(rest, slash + 1, "a KEK key")?;
            let record: KekRecord = from_json(&value, "a KEK record")?;
            let sealed = STANDARD
                .decode(&record.sealed)
                .map_err(|_| corrupt("a KEK record"))?;
            let header = Header::parse(&sealed)?;
            let root = if header.key.version == old_version {
                Some(old_root)
            } else {
                previous.get(&header.key.version)
            }
            .filter(|_| header.key.kind == KeyKind::Root)
            .ok_or_else(|| corrupt("a KEK record (sealed under an unknown root key version)"))?;
            let context = kek_context(tenant, version);
            let what = || format!("KEK version {version} of tenant {tenant}");
            let kek = crypto::open(root, &context, &sealed, &what)?;
            let resealed = reseal(&context, &kek)?;
            batch.put(
                Space::Config,
                key,
                to_json(&KekRecord {
                    created_unix_nanos: record.created_unix_nanos,
                    sealed: STANDARD.encode(resealed),
                })?,
            );
        }

        for (key, context, what) in [
            (TOKEN_HMAC_KEY, token_key_context(), "the token hashing key"),
            (
                AUDIT_SIGNING_KEY,
                audit_signing_context(),
                "the audit signing key",
            ),
        ] {
            if let Some(sealed) = self.keys.get(Space::Config, key)? {
                let plaintext = crypto::open(old_root, &context, &sealed, &|| what.into())?;
                batch.put(Space::Config, key, reseal(&context, &plaintext)?);
            }
        }
        for (version, key) in &previous {
            batch.put(
                Space::Config,
                previous_root_key(*version),
                reseal(&previous_root_context(*version), key.expose_secret())?,
            );
        }
        batch.put(
            Space::Config,
            previous_root_key(old_version),
            reseal(
                &previous_root_context(old_version),
                old_root.expose_secret(),
            )?,
        );
        batch.put(
            Space::Config,
            root_count_key(new_version),
            uses.to_be_bytes(),
        );
        Ok((new_root, new_version))
    }
}
