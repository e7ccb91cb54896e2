//! Named keys: encryption as a service (create, encrypt, decrypt, re-wrap, data keys, sign,
//! verify, HMAC), and their lifecycle (rotation by hand, by schedule and by budget, minimum
//! versions, trimming, deletion after a waiting period, export when created exportable).
//!
//! Storage (key store, column family `config`):
//! - `kmsc/<tenant id>/<name>`: the key's configuration (JSON);
//! - `kmsv/<tenant id>/<name>/<u32 BE version>`: a version's material, wrapped under the tenant's
//!   KEK (purpose `NamedKey`, path the name, version the key version), and its public key;
//! - `kmsn/<tenant id>/<name>/<u32 BE version>`: a version's durably reserved use count;
//! - `kmsq/<u64 BE due><r|d><tenant id>/<name>`: a scheduled rotation (`r`) or destruction (`d`).
//!
//! A tenant's named keys are therefore destroyed with its KEKs (crypto-shredding), and the KEK
//! retirement job re-wraps their material like any data key before a KEK version goes.
//!
//! Invariants: key material is unwrapped into the keyring's cache (zeroized on seal) and never
//! leaves the vault except through `export_key` on a key created exportable. Every encryption
//! under a version takes one use first; a version of a type with random 96-bit nonces stops at
//! its budget, and the key rotates (exactly on budget). Changes to a key's configuration or
//! versions hold `kms_changes`. Lock order: `kms_changes`, `wrap_gate`, `key_changes`.
//!
//! Versions are generated in the vault (32 random bytes, or a PKCS#8 document from ring for
//! Ed25519 and ECDSA P-256). The KEK retirement job re-wraps named-key material under the
//! versions it retires (all of it, once its secret scan is done, before the KEK records go);
//! root rotation does not touch them.
//!
//! Budgets. Every encryption (encrypt, each batch item, re-wrap, data key) takes one use of the
//! version first, through the KEKs' reservation counter (`kmsn/...`). AES-256-GCM and
//! ChaCha20-Poly1305 (random 96-bit nonces) stop at the key's budget (default `--key-budget`,
//! at most 2^32) and the key rotates, under `kms_changes`, only if nobody rotated first; a
//! version asked for by number refuses at its budget instead. XChaCha20-Poly1305 (192-bit
//! nonces) counts but has no budget.
//!
//! Versions. `min_decryption_version` refuses older ciphertexts, signatures and MACs
//! (FAILED_PRECONDITION); `min_encryption_version` (0: any kept version) limits `key_version`
//! requests. Trimming destroys versions below N ≤ both minimums in one key-store write, then
//! compacts the key store. Scheduled rotation and destruction use the `kmsq/` index ordered by
//! due time, so a maintenance round reads only what is due.
//!
//! Deletion and export. Only a key marked `deletion_allowed` can be deleted; it is unusable at
//! once and destroyed (records deleted, audited as the vault, key store compacted) after
//! `--kms-deletion-delay-secs` (7 days by default), and `CancelKeyDeletion` brings it back
//! meanwhile. Export needs both `--kms-allow-exportable-keys` and a key created exportable; it
//! returns the material of every kept version.
//!
//! Limits. A plaintext, message or batch item: `--kms-max-plaintext-bytes`
//! ([`DEFAULT_MAX_PLAINTEXT_BYTES`]); a batch: `--kms-max-batch-items`
//! ([`DEFAULT_MAX_BATCH_ITEMS`]); over either, INVALID_ARGUMENT naming the field
//! (`items[2].plaintext is 2000 bytes, over the limit of 1024 bytes`). In a batch decrypt, an
//! item that does not decrypt carries its own error and the others still decrypt. A
//! ciphertext that does not open is INVALID_ARGUMENT naming `ciphertext`, saying only that.
//!
//! Cache. Unwrapped versions live in the keyring's `named` cache: dropped (zeroized) on seal,
//! emptied on root rotation and loaded again on first use; per process, like the KEK cache.
//!
//! Policy paths. A key is `keys/<name>` in its tenant's policy namespace, which it shares with
//! secrets: a secret at `keys/x` falls under the same rules as the key `x`. The key
//! capabilities (`encrypt decrypt sign verify rewrap datakey`) mean nothing for secrets, and
//! `write` and `delete` nothing for keys; `read`, `list`, `rotate`, `admin` and `deny` apply to
//! both.

use std::collections::BTreeMap;

use super::keys::WrapGuard;

use super::keys::{Counted, HARD_CAP, MaintenanceReport, Uses};
use super::*;
use crate::kms::{self as named, Binding, EncryptionContext, KeyName, KeyType, Usage};
use crate::schema::{
    NAMED_SCHEDULE_PREFIX, SCHEDULE_DESTROY, SCHEDULE_ROTATE, named_config_key,
    named_config_prefix, named_count_key, named_counts_prefix, named_schedule_key,
    named_version_key, named_versions_prefix,
};
use crate::secret::SecretBytes;

/// Default largest plaintext (or message) per call, and per item of a batch.
pub const DEFAULT_MAX_PLAINTEXT_BYTES: usize = 64 * 1024;
/// Default most items in one batch call.
pub const DEFAULT_MAX_BATCH_ITEMS: usize = 1000;
/// Default waiting period between a key's deletion and the destruction of its material.
pub const DEFAULT_KEY_DELETION_DELAY_NANOS: i64 = 7 * 86_400 * 1_000_000_000;
/// Most versions a named key keeps (trim old ones to rotate further).
pub const MAX_NAMED_KEY_VERSIONS: usize = 1000;
/// Data keys `datakey` generates, in bits.
pub const DATA_KEY_BITS: [u32; 3] = [128, 256, 512];

/// Limits and switches of the named keys.
#[derive(Clone, Debug)]
pub struct KmsPolicy {
    /// Largest plaintext, message or data per call and per batch item, in bytes.
    pub max_plaintext_bytes: usize,
    /// Most items in one batch.
    pub max_batch_items: usize,
    /// Waiting period between `delete` and the destruction of a key.
    pub deletion_delay_nanos: i64,
    /// Whether keys may be created exportable (their material can then be read out).
    pub allow_exportable: bool,
}

impl Default for KmsPolicy {
    fn default() -> Self {
        KmsPolicy {
            max_plaintext_bytes: DEFAULT_MAX_PLAINTEXT_BYTES,
            max_batch_items: DEFAULT_MAX_BATCH_ITEMS,
            deletion_delay_nanos: DEFAULT_KEY_DELETION_DELAY_NANOS,
            allow_exportable: false,
        }
    }
}

/// A named key's configuration as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct KeyConfig {
    key_type: String,
    created_unix_nanos: i64,
    latest: u32,
    min_decryption_version: u32,
    /// 0: any version from `min_decryption_version` may encrypt (the latest by default).
    min_encryption_version: u32,
    /// Versions below this were trimmed.
    min_available_version: u32,
    deletion_allowed: bool,
    exportable: bool,
    budget: u64,
    /// 0: no scheduled rotation.
    rotation_period_nanos: i64,
    #[serde(default)]
    delete_after_unix_nanos: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct VersionRecord {
    created_unix_nanos: i64,
    /// The material wrapped under the tenant's KEK (base64).
    sealed: String,
    /// The public key of a signing key (base64), empty otherwise.
    #[serde(default)]
    public_key: String,
}

/// A named key in the keyring's cache.
pub(super) struct NamedKey {
    config: KeyConfig,
    key_type: KeyType,
    versions: BTreeMap<u32, Arc<NamedVersion>>,
}

/// One version's material; zeroized when the last reference goes (seal, trim, destruction).
pub(super) struct NamedVersion {
    material: SecretBytes,
    created_unix_nanos: i64,
    public_key: Option<Vec<u8>>,
    uses: Mutex<Uses>,
}

pub(super) type NamedKeys = HashMap<(TenantId, KeyName), Arc<NamedKey>>;

/// What a caller asks for when creating a key.
#[derive(Clone, Debug, Default)]
pub struct KeySpec {
    pub key_type: String,
    pub exportable: bool,
    pub deletion_allowed: bool,
    /// Encryptions per version before it rotates; 0: the server's key budget.
    pub budget: u64,
    /// Rotate when the latest version is this old; 0: never by age.
    pub rotation_period_nanos: i64,
}

/// Changes to a key's configuration; `None` leaves a setting as it is.
#[derive(Clone, Debug, Default)]
pub struct KeyUpdate {
    pub min_decryption_version: Option<u32>,
    pub min_encryption_version: Option<u32>,
    pub deletion_allowed: Option<bool>,
    pub rotation_period_nanos: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedKeyVersion {
    pub version: u32,
    pub created_unix_nanos: i64,
    /// Encryptions counted (exact while the server runs; after a restart from the reserved mark).
    pub invocations: u64,
    /// Encryptions left before the version rotates; `None` for types without a budget.
    pub remaining: Option<u64>,
    /// Raw public key of a signing key.
    pub public_key: Option<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedKeyInfo {
    pub name: KeyName,
    pub key_type: KeyType,
    pub created_unix_nanos: i64,
    pub latest_version: u32,
    pub min_decryption_version: u32,
    pub min_encryption_version: u32,
    pub min_available_version: u32,
    pub deletion_allowed: bool,
    pub exportable: bool,
    pub budget: Option<u64>,
    pub rotation_period_nanos: i64,
    pub delete_after_unix_nanos: Option<i64>,
    pub versions: Vec<NamedKeyVersion>,
}

/// One plaintext of an encrypt call.
pub struct EncryptItem {
    pub plaintext: SecretBytes,
    pub context: EncryptionContext,
}

/// One ciphertext of a decrypt call.
pub struct DecryptItem {
    pub ciphertext: String,
    pub context: EncryptionContext,
}

/// A ciphertext, signature or MAC in its printable form, and the key version that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub text: String,
    pub version: u32,
}

/// A generated data key: its plaintext (unless only the wrapped form was asked for) and its
/// ciphertext under the named key.
pub struct DataKey {
    pub plaintext: Option<SecretBytes>,
    pub wrapped: Versioned,
}

/// When a scheduled change failed, or its tenant is deleted (and may be restored), it is looked
/// at again this much later.
const DUE_RETRY_FAILED_NANOS: i64 = 60 * 1_000_000_000;
const DUE_RETRY_DELETED_NANOS: i64 = 3600 * 1_000_000_000;

fn named_context(tenant: TenantId, name: &KeyName, version: u32) -> Context<'_> {
    Context {
        purpose: Purpose::NamedKey,
        tenant: Some(tenant),
        path: name.as_str(),
        version: u64::from(version),
    }
}

impl KeyConfig {
    fn key_type(&self) -> Result<KeyType> {
        KeyType::parse(&self.key_type).map_err(|_| corrupt("a named key's configuration"))
    }
}

impl NamedKey {
    fn info(&self, name: &KeyName) -> NamedKeyInfo {
        let budget = self.key_type.needs_budget().then_some(self.config.budget);
        NamedKeyInfo {
            name: name.clone(),
            key_type: self.key_type,
            created_unix_nanos: self.config.created_unix_nanos,
            latest_version: self.config.latest,
            min_decryption_version: self.config.min_decryption_version,
            min_encryption_version: self.config.min_encryption_version,
            min_available_version: self.config.min_available_version,
            deletion_allowed: self.config.deletion_allowed,
            exportable: self.config.exportable,
            budget,
            rotation_period_nanos: self.config.rotation_period_nanos,
            delete_after_unix_nanos: self.config.delete_after_unix_nanos,
            versions: self
                .versions
                .iter()
                .map(|(version, v)| {
                    let used = lock(&v.uses).used();
                    NamedKeyVersion {
                        version: *version,
                        created_unix_nanos: v.created_unix_nanos,
                        invocations: used,
                        remaining: budget.map(|b| b.saturating_sub(used)),
                        public_key: v.public_key.clone(),
                    }
                })
                .collect(),
        }
    }

    /// Refuses a key that is waiting for destruction, or of the wrong type for `usage`.
    fn check_usable(&self, name: &KeyName, usage: Usage, operation: &str) -> Result<()> {
        if let Some(when) = self.config.delete_after_unix_nanos {
            return Err(Error::FailedPrecondition(format!(
                "key {name} is scheduled for deletion at {}; cancel the deletion to use it",
                crate::time::rfc3339(when)
            )));
        }
        if self.key_type.usage() != usage {
            let wanted = match usage {
                Usage::Encryption => "aes256-gcm, chacha20-poly1305 or xchacha20-poly1305",
                Usage::Signing => "ed25519 or ecdsa-p256",
                Usage::Mac => "hmac-sha256",
            };
            return Err(Error::invalid(
                "key",
                format!(
                    "{name} is a {} key; {operation} needs a {wanted} key",
                    self.key_type.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// The version a new ciphertext, signature or MAC uses: `requested`, or the latest if 0.
    fn version_for_use(&self, name: &KeyName, requested: u32) -> Result<u32> {
        if requested == 0 {
            return Ok(self.config.latest);
        }
        let floor = self
            .config
            .min_encryption_version
            .max(self.config.min_decryption_version);
        if requested > self.config.latest {
            return Err(Error::invalid(
                "key_version",
                format!(
                    "key {name} has no version {requested} (latest is {})",
                    self.config.latest
                ),
            ));
        }
        if requested < floor || !self.versions.contains_key(&requested) {
            return Err(Error::FailedPrecondition(format!(
                "key {name} version {requested} may not be used (below min_encryption_version, \
                 min_decryption_version or trimmed; the lowest usable version is {floor})"
            )));
        }
        Ok(requested)
    }

    /// The version that opens a presented ciphertext, signature or MAC.
    fn version_for_opening(&self, name: &KeyName, version: u32) -> Result<&Arc<NamedVersion>> {
        if version < self.config.min_decryption_version {
            return Err(Error::FailedPrecondition(format!(
                "key {name} version {version} is below min_decryption_version {}",
                self.config.min_decryption_version
            )));
        }
        self.versions.get(&version).ok_or_else(|| {
            if version < self.config.min_available_version {
                Error::FailedPrecondition(format!("key {name} version {version} was trimmed"))
            } else {
                Error::invalid("ciphertext", format!("key {name} has no version {version}"))
            }
        })
    }
}

/// Checks a payload against the per-call (per-item) limit.
fn check_size(field: String, size: usize, limit: usize) -> Result<()> {
    if size > limit {
        return Err(Error::TooLarge { field, size, limit });
    }
    Ok(())
}

fn item_field(batch: bool, index: usize, field: &str) -> String {
    if batch {
        format!("items[{index}].{field}")
    } else {
        field.to_owned()
    }
}

/// The key to the named keys' lock ([`KmsState`]): only this module makes one, so only this module takes the
/// named keys' lock.
pub(super) struct KmsChanges(());

/// The named keys' own state: the lock over their changes, which only this module can take.
#[derive(Default)]
pub(super) struct KmsState {
    changes: OwnedLock<KmsChanges>,
}

impl Vault {
    /// Takes `kms_changes` (creation, rotation, configuration, trimming, deletion, cache
    /// loads of named keys). Taken before `wrap_gate` and `key_changes`, never after.
    pub(super) fn hold_kms_changes(&self) -> Held<'_, KmsChanges> {
        self.kms_state.changes.hold(KmsChanges(()))
    }

    fn authorize_key(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &KeyName,
        capability: Capability,
    ) -> Result<TenantId> {
        self.authorize(caller, tenant, &name.policy_path(), capability)
            .map(|granted| granted.tenant())
    }

    /// The named key from the cache, loaded (and its versions unwrapped) on first use.
    fn named_key(
        &self,
        keyring: &Keyring,
        tenant: TenantId,
        name: &KeyName,
    ) -> Result<Arc<NamedKey>> {
        if let Some(key) = read(&keyring.named).get(&(tenant, name.clone())) {
            return Ok(Arc::clone(key));
        }
        let changes = self.hold_kms_changes();
        self.load_named_key(&changes, keyring, tenant, name)
    }

    /// Loads a key from the key store into the cache; versions already cached keep their
    /// counters.
    pub(super) fn load_named_key(
        &self,
        _changes: &Held<'_, KmsChanges>,
        keyring: &Keyring,
        tenant: TenantId,
        name: &KeyName,
    ) -> Result<Arc<NamedKey>> {
        let Some(bytes) = self
            .keys
            .get(Space::Config, &named_config_key(tenant, name))?
        else {
            write(&keyring.named).remove(&(tenant, name.clone()));
            return Err(Error::NotFound(format!("key {name}")));
        };
        let config: KeyConfig = from_json(&bytes, "a named key's configuration")?;
        let key_type = config.key_type()?;
        let prefix = named_versions_prefix(tenant, Some(name));
        let entries =
            self.keys
                .scan(Space::Config, &prefix, &prefix, MAX_NAMED_KEY_VERSIONS + 1)?;
        let count_prefix = named_counts_prefix(tenant, Some(name));
        let mut counts = HashMap::new();
        for (key, value) in self.keys.scan(
            Space::Config,
            &count_prefix,
            &count_prefix,
            MAX_NAMED_KEY_VERSIONS + 1,
        )? {
            counts.insert(
                keys::version_suffix(&key, count_prefix.len(), "a named key count key")?,
                keys::count_value(&value)?,
            );
        }
        let cached = read(&keyring.named).get(&(tenant, name.clone())).cloned();
        let mut versions = BTreeMap::new();
        for (key, value) in entries {
            let version = keys::version_suffix(&key, prefix.len(), "a named key version key")?;
            if let Some(existing) = cached.as_ref().and_then(|c| c.versions.get(&version)) {
                versions.insert(version, Arc::clone(existing));
                continue;
            }
            let record: VersionRecord = from_json(&value, "a named key version")?;
            let material = self.unwrap_named(keyring, tenant, name, version, &record.sealed)?;
            // Derived from the authenticated material, never taken from the record: the stored
            // copy (for readers of the key store) is not covered by any tag.
            let public_key = named::public_key(key_type, &material)?;
            versions.insert(
                version,
                Arc::new(NamedVersion {
                    material,
                    created_unix_nanos: record.created_unix_nanos,
                    public_key,
                    uses: Mutex::new(Uses::loaded(counts.get(&version).copied().unwrap_or(0))),
                }),
            );
        }
        let loaded = Arc::new(NamedKey {
            config,
            key_type,
            versions,
        });
        write(&keyring.named).insert((tenant, name.clone()), Arc::clone(&loaded));
        Ok(loaded)
    }

    /// Opens every named key version in the key store (backup verification), counting into
    /// `report`; a failure names the key and version, never material.
    pub(super) fn open_named_keys(
        &self,
        keyring: &Keyring,
        report: &mut super::backup::ContentReport,
    ) -> Result<()> {
        let prefix = schema::NAMED_VERSION_PREFIX;
        let mut start = prefix.to_vec();
        let mut last_key: Option<(TenantId, String)> = None;
        loop {
            let page = self.keys.scan(Space::Config, prefix, &start, 1024)?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            start.push(0);
            for (key, value) in &page {
                let Some((tenant, name, version)) = schema::parse_named_version_key(key) else {
                    report.fail(format!(
                        "a named key version entry {:?}",
                        String::from_utf8_lossy(key)
                    ));
                    continue;
                };
                if last_key.as_ref() != Some(&(tenant, name.clone())) {
                    report.named_keys += 1;
                    last_key = Some((tenant, name.clone()));
                }
                report.named_key_versions += 1;
                let opened = KeyName::parse(&name).and_then(|key_name| {
                    let record: VersionRecord = from_json(value, "a named key version")?;
                    self.unwrap_named(keyring, tenant, &key_name, version, &record.sealed)
                });
                if let Err(e) = opened {
                    report.fail(format!(
                        "tenant {tenant} key {name} version {version}: {}",
                        e.audit_detail()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Opens a version's material wrapped under the tenant's KEK.
    fn unwrap_named(
        &self,
        keyring: &Keyring,
        tenant: TenantId,
        name: &KeyName,
        version: u32,
        sealed: &str,
    ) -> Result<SecretBytes> {
        let what = || format!("version {version} of key {name}");
        let sealed = STANDARD
            .decode(sealed)
            .map_err(|_| Error::Integrity(what()))?;
        let header = Header::parse(&sealed).map_err(|_| Error::Integrity(what()))?;
        let kek = self
            .kek(keyring, tenant, header.key.version)?
            .ok_or_else(|| Error::Integrity(what()))?;
        let opened = crypto::open(
            &kek.key,
            &named_context(tenant, name, version),
            &sealed,
            &what,
        )?;
        Ok(SecretBytes::new(opened.to_vec()))
    }

    /// Generates version `version` of a key, wraps it under the tenant's current KEK and adds
    /// its record to `batch`. The caller stays inside the wrap gate (`wrapping`) until the
    /// batch is written (so a KEK retirement job never misses it).
    #[allow(clippy::too_many_arguments)]
    fn new_named_version(
        &self,
        wrapping: &WrapGuard<'_>,
        keyring: &Keyring,
        tenant: TenantId,
        name: &KeyName,
        key_type: KeyType,
        version: u32,
        now: i64,
        batch: &mut WriteBatch,
    ) -> Result<Arc<NamedVersion>> {
        let material = named::generate(key_type)?;
        let public_key = named::public_key(key_type, &material)?;
        let (wrapped, _) = self.wrap_under_kek(
            wrapping,
            keyring,
            tenant,
            &named_context(tenant, name, version),
            material.expose_secret(),
        )?;
        let record = VersionRecord {
            created_unix_nanos: now,
            sealed: STANDARD.encode(wrapped),
            public_key: public_key
                .as_ref()
                .map(|k| STANDARD.encode(k))
                .unwrap_or_default(),
        };
        batch.put(
            Space::Config,
            named_version_key(tenant, name, version),
            to_json(&record)?,
        );
        Ok(Arc::new(NamedVersion {
            material,
            created_unix_nanos: now,
            public_key,
            uses: Mutex::new(Uses::default()),
        }))
    }

    /// Puts a changed key into the cache: `config`, and the versions of `key` (or `versions`).
    fn replace_named(
        &self,
        keyring: &Keyring,
        tenant: TenantId,
        name: &KeyName,
        key: &NamedKey,
        config: KeyConfig,
        versions: Option<BTreeMap<u32, Arc<NamedVersion>>>,
    ) -> Arc<NamedKey> {
        let replaced = Arc::new(NamedKey {
            config,
            key_type: key.key_type,
            versions: versions.unwrap_or_else(|| key.versions.clone()),
        });
        write(&keyring.named).insert((tenant, name.clone()), Arc::clone(&replaced));
        replaced
    }

    /// Adds a version to a key (rotation). `automatic` names the reason for a rotation the vault
    /// does by itself (audited as the vault); empty for one a caller asked for.
    fn add_named_version(
        &self,
        changes: &Held<'_, KmsChanges>,
        keyring: &Keyring,
        tenant: TenantId,
        name: &KeyName,
        automatic: &str,
    ) -> Result<u32> {
        let key = self.load_named_key(changes, keyring, tenant, name)?;
        if key.versions.len() >= MAX_NAMED_KEY_VERSIONS {
            return Err(Error::FailedPrecondition(format!(
                "key {name} keeps {MAX_NAMED_KEY_VERSIONS} versions, the most it may; trim old \
                 versions first"
            )));
        }
        let version =
            key.config.latest.checked_add(1).ok_or_else(|| {
                Error::FailedPrecondition(format!("key {name} has no versions left"))
            })?;
        if !automatic.is_empty() {
            self.audit_vault(
                tenant,
                format!("rotating key {name} to version {version}: {automatic}"),
            )?;
        }
        let now = self.now();
        let mut config = key.config.clone();
        config.latest = version;
        let mut batch = WriteBatch::new();
        let wrapping = self.kek_state.enter_wrap_gate();
        let added = self.new_named_version(
            &wrapping,
            keyring,
            tenant,
            name,
            key.key_type,
            version,
            now,
            &mut batch,
        )?;
        batch.put(
            Space::Config,
            named_config_key(tenant, name),
            to_json(&config)?,
        );
        if config.rotation_period_nanos > 0 {
            batch.put(
                Space::Config,
                named_schedule_key(
                    now.saturating_add(config.rotation_period_nanos),
                    SCHEDULE_ROTATE,
                    tenant,
                    name,
                ),
                Vec::new(),
            );
        }
        self.keys.write(batch)?;
        let mut versions = key.versions.clone();
        versions.insert(version, added);
        self.replace_named(keyring, tenant, name, &key, config, Some(versions));
        Ok(version)
    }

    fn check_batch<T>(
        &self,
        items: &[T],
        batch: bool,
        size: impl Fn(&T) -> usize,
        field: &str,
    ) -> Result<()> {
        if items.is_empty() {
            return Err(Error::invalid("items", "at least one item is needed"));
        }
        if items.len() > self.config.kms.max_batch_items {
            return Err(Error::invalid(
                "items",
                format!(
                    "{} items, over the limit of {} per batch",
                    items.len(),
                    self.config.kms.max_batch_items
                ),
            ));
        }
        for (index, item) in items.iter().enumerate() {
            check_size(
                item_field(batch, index, field),
                size(item),
                self.config.kms.max_plaintext_bytes,
            )?;
        }
        Ok(())
    }

    /// One encryption, with the budget rule: take a use of the version first; a latest version
    /// at its budget rotates the key and the encryption goes to the new version.
    #[allow(clippy::too_many_arguments)]
    fn encrypt_one(
        &self,
        keyring: &Keyring,
        tenant: TenantId,
        name: &KeyName,
        key_version: u32,
        operation: &str,
        context: &EncryptionContext,
        plaintext: &[u8],
    ) -> Result<Versioned> {
        loop {
            let key = self.named_key(keyring, tenant, name)?;
            key.check_usable(name, Usage::Encryption, operation)?;
            let version = key.version_for_use(name, key_version)?;
            let current = key
                .versions
                .get(&version)
                .ok_or_else(|| corrupt("a named key's version"))?;
            let limit = if key.key_type.needs_budget() {
                key.config.budget
            } else {
                u64::MAX
            };
            let counted = Counted::Named(tenant, name, version);
            if !self.take_use_within(counted, &current.uses, limit)? {
                if key_version != 0 {
                    return Err(Error::FailedPrecondition(format!(
                        "key {name} version {version} used its budget of {limit} encryptions"
                    )));
                }
                let changes = self.hold_kms_changes();
                // Another caller may have rotated already.
                if self
                    .load_named_key(&changes, keyring, tenant, name)?
                    .config
                    .latest
                    == version
                {
                    self.add_named_version(
                        &changes,
                        keyring,
                        tenant,
                        name,
                        &format!("version {version} used its budget of {limit} encryptions"),
                    )?;
                }
                continue;
            }
            let binding = Binding {
                tenant,
                key: name,
                version,
                key_type: key.key_type,
                context,
            };
            let body = named::encrypt(&current.material, &binding, plaintext)?;
            return Ok(Versioned {
                text: named::format_versioned(version, &body),
                version,
            });
        }
    }

    fn decrypt_one(
        &self,
        key: &NamedKey,
        tenant: TenantId,
        name: &KeyName,
        ciphertext: &str,
        context: &EncryptionContext,
    ) -> Result<(SecretBytes, u32)> {
        let (version, body) = named::parse_versioned("ciphertext", ciphertext)?;
        let opener = key.version_for_opening(name, version)?;
        let binding = Binding {
            tenant,
            key: name,
            version,
            key_type: key.key_type,
            context,
        };
        let plaintext = named::decrypt(&opener.material, &binding, &body).ok_or_else(|| {
            Error::invalid(
                "ciphertext",
                format!(
                    "does not decrypt under key {name} version {version} with this context \
                     (another key or tenant, another context, or altered)"
                ),
            )
        })?;
        Ok((SecretBytes::new(plaintext.to_vec()), version))
    }

    // ---- background work ----

    /// Scheduled rotations and destructions that are due (at most `limit` of them).
    pub(super) fn kms_due(
        &self,
        keyring: &Keyring,
        now: i64,
        limit: usize,
        report: &mut MaintenanceReport,
    ) -> Result<()> {
        for (key, _) in self.keys.scan(
            Space::Config,
            NAMED_SCHEDULE_PREFIX,
            NAMED_SCHEDULE_PREFIX,
            limit,
        )? {
            let rest = &key[NAMED_SCHEDULE_PREFIX.len()..];
            let malformed = || corrupt("a named key schedule entry");
            if rest.len() < 10 {
                return Err(malformed());
            }
            let due = rest[..8]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| malformed())?;
            if i64::try_from(due).unwrap_or(i64::MAX) > now {
                break;
            }
            let Some((tenant, name)) = std::str::from_utf8(&rest[9..])
                .ok()
                .and_then(|text| text.split_once('/'))
                .and_then(|(tenant, name)| {
                    Some((TenantId::parse_hex(tenant)?, KeyName::parse(name).ok()?))
                })
            else {
                tracing::warn!("a malformed named key schedule entry was dropped");
                let mut batch = WriteBatch::new();
                batch.delete(Space::Config, key);
                self.keys.write(batch)?;
                continue;
            };
            let mut batch = WriteBatch::new();
            batch.delete(Space::Config, key.clone());
            let postpone = |batch: &mut WriteBatch, delay: i64| {
                let mut later =
                    named_schedule_key(now.saturating_add(delay), rest[8], tenant, &name);
                if later == key {
                    later =
                        named_schedule_key(now.saturating_add(delay + 1), rest[8], tenant, &name);
                }
                batch.put(Space::Config, later, Vec::new());
            };
            if self.tenant_state(tenant)?.is_none() {
                // A deleted tenant: a restore brings the schedule back, so look again later;
                // once its keys are destroyed (shredded), the entry just goes.
                if !self.tenant_shredded(tenant)? {
                    postpone(&mut batch, DUE_RETRY_DELETED_NANOS);
                }
            } else {
                match self.kms_due_one(keyring, tenant, &name, now) {
                    Ok(Some(true)) => report.keys_destroyed += 1,
                    Ok(Some(false)) => report.keys_rotated += 1,
                    Ok(None) => {}
                    // One key that cannot be rotated or destroyed (e.g. at its version limit)
                    // must not hold up the other keys and the rest of maintenance.
                    Err(error) => {
                        tracing::warn!(%error, tenant = %tenant, key = %name, "scheduled key change failed; retrying later");
                        postpone(&mut batch, DUE_RETRY_FAILED_NANOS);
                    }
                }
            }
            self.keys.write(batch)?;
        }
        Ok(())
    }

    /// Does what is due for one key: `Some(true)` destroyed, `Some(false)` rotated.
    fn kms_due_one(
        &self,
        keyring: &Keyring,
        tenant: TenantId,
        name: &KeyName,
        now: i64,
    ) -> Result<Option<bool>> {
        let changes = self.hold_kms_changes();
        let key = match self.load_named_key(&changes, keyring, tenant, name) {
            Ok(key) => key,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if key
            .config
            .delete_after_unix_nanos
            .is_some_and(|when| when <= now)
        {
            self.audit_vault(
                tenant,
                format!(
                    "destroying key {name}: its deletion waiting period is over; versions {} to \
                     {} are destroyed",
                    key.config.min_available_version, key.config.latest
                ),
            )?;
            let mut batch = WriteBatch::new();
            batch.delete(Space::Config, named_config_key(tenant, name));
            for version in key.versions.keys() {
                batch
                    .delete(Space::Config, named_version_key(tenant, name, *version))
                    .delete(Space::Config, named_count_key(tenant, name, *version));
            }
            self.keys.write(batch)?;
            write(&keyring.named).remove(&(tenant, name.clone()));
            drop(changes);
            self.keys.compact()?;
            return Ok(Some(true));
        }
        if key.config.delete_after_unix_nanos.is_none() && key.config.rotation_period_nanos > 0 {
            let latest_created = key
                .versions
                .get(&key.config.latest)
                .map_or(key.config.created_unix_nanos, |v| v.created_unix_nanos);
            if now - latest_created >= key.config.rotation_period_nanos {
                self.add_named_version(
                    &changes,
                    keyring,
                    tenant,
                    name,
                    &format!("version {} reached the rotation period", key.config.latest),
                )?;
                return Ok(Some(false));
            }
        }
        Ok(None)
    }

    /// Re-wraps every named-key version of the tenant that is wrapped under a KEK version of
    /// `set` into the current KEK (the KEK retirement job, before the set is destroyed).
    /// Returns how many were re-wrapped.
    pub(super) fn rewrap_named_keys(
        &self,
        keyring: &Keyring,
        tenant: TenantId,
        set: &std::collections::BTreeSet<u32>,
    ) -> Result<u64> {
        let _changes = self.hold_kms_changes();
        let prefix = named_versions_prefix(tenant, None);
        let mut rewrapped = 0;
        for (key, value) in self
            .keys
            .scan(Space::Config, &prefix, &prefix, usize::MAX)?
        {
            let mut record: VersionRecord = from_json(&value, "a named key version")?;
            let sealed = STANDARD
                .decode(&record.sealed)
                .map_err(|_| corrupt("a named key version"))?;
            if !set.contains(&Header::parse(&sealed)?.key.version) {
                continue;
            }
            let relative = &key[prefix.len()..];
            let split = relative
                .len()
                .checked_sub(5)
                .filter(|at| relative[*at] == b'/')
                .ok_or_else(|| corrupt("a named key version key"))?;
            let name = std::str::from_utf8(&relative[..split])
                .ok()
                .and_then(|n| KeyName::parse(n).ok())
                .ok_or_else(|| corrupt("a named key version key"))?;
            let version = keys::version_suffix(relative, split + 1, "a named key version key")?;
            let material = self.unwrap_named(keyring, tenant, &name, version, &record.sealed)?;
            let wrapping = self.kek_state.enter_wrap_gate();
            let (wrapped, _) = self.wrap_under_kek(
                &wrapping,
                keyring,
                tenant,
                &named_context(tenant, &name, version),
                material.expose_secret(),
            )?;
            record.sealed = STANDARD.encode(wrapped);
            let mut batch = WriteBatch::new();
            batch.put(Space::Config, key, to_json(&record)?);
            self.keys.write(batch)?;
            rewrapped += 1;
        }
        Ok(rewrapped)
    }
}

/// The named keys of a vault (encryption as a service), as `vault.kms()` hands them out. The
/// view derefs to the vault for the helpers the operations share with the other subsystems.
pub struct Kms<'a> {
    vault: &'a Vault,
}

impl std::ops::Deref for Kms<'_> {
    type Target = Vault;

    fn deref(&self) -> &Vault {
        self.vault
    }
}

impl Vault {
    /// The named keys: create, encrypt, decrypt, sign, rotate, trim, delete, export.
    pub fn kms(&self) -> Kms<'_> {
        Kms { vault: self }
    }
}

impl Kms<'_> {
    /// Creates a named key with its first version.
    pub fn create_key(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &KeyName,
        spec: KeySpec,
    ) -> Result<NamedKeyInfo> {
        let id = self.authorize_key(caller, tenant, name, Capability::Admin)?;
        let key_type = KeyType::parse(&spec.key_type)?;
        if spec.exportable && !self.config.kms.allow_exportable {
            return Err(Error::FailedPrecondition(
                "exportable keys are refused by this server (start it with \
                 --kms-allow-exportable-keys to allow them)"
                    .into(),
            ));
        }
        let budget = match spec.budget {
            0 => self.config.keys.budget.min(HARD_CAP),
            b if b > HARD_CAP => {
                return Err(Error::invalid(
                    "budget",
                    format!("must be at most {HARD_CAP} (2^32)"),
                ));
            }
            b => b,
        };
        if spec.rotation_period_nanos < 0 {
            return Err(Error::invalid("rotation_period", "must not be negative"));
        }
        let keyring = self.keyring()?;
        let _changes = self.hold_kms_changes();
        if self
            .keys
            .get(Space::Config, &named_config_key(id, name))?
            .is_some()
        {
            return Err(Error::AlreadyExists(format!("key {name}")));
        }
        let now = self.now();
        let config = KeyConfig {
            key_type: key_type.as_str().to_owned(),
            created_unix_nanos: now,
            latest: 1,
            min_decryption_version: 1,
            min_encryption_version: 0,
            min_available_version: 1,
            deletion_allowed: spec.deletion_allowed,
            exportable: spec.exportable,
            budget,
            rotation_period_nanos: spec.rotation_period_nanos,
            delete_after_unix_nanos: None,
        };
        let mut batch = WriteBatch::new();
        let wrapping = self.kek_state.enter_wrap_gate();
        let first =
            self.new_named_version(&wrapping, &keyring, id, name, key_type, 1, now, &mut batch)?;
        batch.put(Space::Config, named_config_key(id, name), to_json(&config)?);
        if config.rotation_period_nanos > 0 {
            batch.put(
                Space::Config,
                named_schedule_key(
                    now.saturating_add(config.rotation_period_nanos),
                    SCHEDULE_ROTATE,
                    id,
                    name,
                ),
                Vec::new(),
            );
        }
        self.keys.write(batch)?;
        let key = Arc::new(NamedKey {
            config,
            key_type,
            versions: BTreeMap::from([(1, first)]),
        });
        write(&keyring.named).insert((id, name.clone()), Arc::clone(&key));
        Ok(key.info(name))
    }

    /// A key's configuration, versions, use counts and public keys (never its material).
    pub fn read_key(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &KeyName,
    ) -> Result<NamedKeyInfo> {
        let id = self.authorize_key(caller, tenant, name, Capability::Read)?;
        let keyring = self.keyring()?;
        Ok(self.named_key(&keyring, id, name)?.info(name))
    }

    /// The tenant's key names in order, at most `limit` after `after`, and whether more follow.
    pub fn list_keys(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<KeyName>, bool)> {
        let id = self
            .authorize(caller, tenant, "keys/", Capability::List)?
            .tenant();
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let prefix = named_config_prefix(id);
        let mut start = prefix.clone();
        if !after.is_empty() {
            start.extend_from_slice(after.as_bytes());
            start.push(0);
        }
        let entries = self.keys.scan(Space::Config, &prefix, &start, limit + 1)?;
        let more = entries.len() > limit;
        let names = entries
            .into_iter()
            .take(limit)
            .map(|(key, _)| {
                std::str::from_utf8(&key[prefix.len()..])
                    .ok()
                    .and_then(|name| KeyName::parse(name).ok())
                    .ok_or_else(|| corrupt("a named key's configuration key"))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((names, more))
    }

    /// Changes a key's minimum versions, deletability or rotation schedule.
    pub fn update_key(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &KeyName,
        update: KeyUpdate,
    ) -> Result<NamedKeyInfo> {
        let id = self.authorize_key(caller, tenant, name, Capability::Admin)?;
        let keyring = self.keyring()?;
        let changes = self.hold_kms_changes();
        let key = self.load_named_key(&changes, &keyring, id, name)?;
        let mut config = key.config.clone();
        if let Some(min) = update.min_decryption_version {
            if min < config.min_available_version.max(1) || min > config.latest {
                return Err(Error::invalid(
                    "min_decryption_version",
                    format!(
                        "must be between {} (the oldest version kept) and {} (the latest)",
                        config.min_available_version.max(1),
                        config.latest
                    ),
                ));
            }
            config.min_decryption_version = min;
        }
        if let Some(min) = update.min_encryption_version {
            if min != 0 && (min < config.min_decryption_version || min > config.latest) {
                return Err(Error::invalid(
                    "min_encryption_version",
                    format!(
                        "must be 0 (any) or between min_decryption_version ({}) and the latest \
                         version ({})",
                        config.min_decryption_version, config.latest
                    ),
                ));
            }
            config.min_encryption_version = min;
        }
        if config.min_encryption_version != 0
            && config.min_encryption_version < config.min_decryption_version
        {
            return Err(Error::invalid(
                "min_decryption_version",
                format!(
                    "must not exceed min_encryption_version ({}); raise both",
                    config.min_encryption_version
                ),
            ));
        }
        if let Some(allowed) = update.deletion_allowed {
            config.deletion_allowed = allowed;
        }
        let mut batch = WriteBatch::new();
        if let Some(period) = update.rotation_period_nanos {
            if period < 0 {
                return Err(Error::invalid("rotation_period", "must not be negative"));
            }
            config.rotation_period_nanos = period;
            if period > 0 {
                let latest_created = key
                    .versions
                    .get(&config.latest)
                    .map_or(config.created_unix_nanos, |v| v.created_unix_nanos);
                batch.put(
                    Space::Config,
                    named_schedule_key(
                        latest_created.saturating_add(period),
                        SCHEDULE_ROTATE,
                        id,
                        name,
                    ),
                    Vec::new(),
                );
            }
        }
        batch.put(Space::Config, named_config_key(id, name), to_json(&config)?);
        self.keys.write(batch)?;
        Ok(self
            .replace_named(&keyring, id, name, &key, config, None)
            .info(name))
    }

    /// Rotates a key by hand: new ciphertexts, signatures and MACs use the new version.
    pub fn rotate_key(&self, caller: &Caller, tenant: &TenantName, name: &KeyName) -> Result<u32> {
        let id = self.authorize_key(caller, tenant, name, Capability::Rotate)?;
        let keyring = self.keyring()?;
        let changes = self.hold_kms_changes();
        self.load_named_key(&changes, &keyring, id, name)?
            .check_deletion_pending(name)?;
        self.add_named_version(&changes, &keyring, id, name, "")
    }

    /// Destroys every version below `min_available_version` (which may not exceed the minimum
    /// decryption and encryption versions). Returns the versions destroyed.
    pub fn trim_key(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &KeyName,
        min_available_version: u32,
    ) -> Result<Vec<u32>> {
        let id = self.authorize_key(caller, tenant, name, Capability::Admin)?;
        let keyring = self.keyring()?;
        let changes = self.hold_kms_changes();
        let key = self.load_named_key(&changes, &keyring, id, name)?;
        let mut ceiling = key.config.min_decryption_version;
        if key.config.min_encryption_version != 0 {
            ceiling = ceiling.min(key.config.min_encryption_version);
        }
        if min_available_version == 0 || min_available_version > ceiling {
            return Err(Error::invalid(
                "min_available_version",
                format!(
                    "must be between 1 and {ceiling} (min_decryption_version and \
                     min_encryption_version); raise those first"
                ),
            ));
        }
        let doomed: Vec<u32> = key
            .versions
            .keys()
            .copied()
            .filter(|v| *v < min_available_version)
            .collect();
        let mut config = key.config.clone();
        config.min_available_version = config.min_available_version.max(min_available_version);
        let mut batch = WriteBatch::new();
        for version in &doomed {
            batch
                .delete(Space::Config, named_version_key(id, name, *version))
                .delete(Space::Config, named_count_key(id, name, *version));
        }
        batch.put(Space::Config, named_config_key(id, name), to_json(&config)?);
        self.keys.write(batch)?;
        let mut versions = key.versions.clone();
        for version in &doomed {
            versions.remove(version);
        }
        self.replace_named(&keyring, id, name, &key, config, Some(versions));
        drop(changes);
        if !doomed.is_empty() {
            // So that the destroyed material is physically gone from the key store's files.
            self.keys.compact()?;
        }
        Ok(doomed)
    }

    /// Schedules a deletable key for destruction after the waiting period; returns when.
    pub fn delete_key(&self, caller: &Caller, tenant: &TenantName, name: &KeyName) -> Result<i64> {
        let id = self.authorize_key(caller, tenant, name, Capability::Admin)?;
        let keyring = self.keyring()?;
        let changes = self.hold_kms_changes();
        let key = self.load_named_key(&changes, &keyring, id, name)?;
        if let Some(when) = key.config.delete_after_unix_nanos {
            return Ok(when);
        }
        if !key.config.deletion_allowed {
            return Err(Error::FailedPrecondition(format!(
                "key {name} is not marked deletable; set deletion_allowed first"
            )));
        }
        let when = self
            .now()
            .saturating_add(self.config.kms.deletion_delay_nanos);
        let mut config = key.config.clone();
        config.delete_after_unix_nanos = Some(when);
        let mut batch = WriteBatch::new();
        batch
            .put(Space::Config, named_config_key(id, name), to_json(&config)?)
            .put(
                Space::Config,
                named_schedule_key(when, SCHEDULE_DESTROY, id, name),
                Vec::new(),
            );
        self.keys.write(batch)?;
        self.replace_named(&keyring, id, name, &key, config, None);
        Ok(when)
    }

    /// Cancels a scheduled deletion.
    pub fn cancel_key_deletion(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &KeyName,
    ) -> Result<()> {
        let id = self.authorize_key(caller, tenant, name, Capability::Admin)?;
        let keyring = self.keyring()?;
        let changes = self.hold_kms_changes();
        let key = self.load_named_key(&changes, &keyring, id, name)?;
        let Some(when) = key.config.delete_after_unix_nanos else {
            return Err(Error::FailedPrecondition(format!(
                "key {name} is not scheduled for deletion"
            )));
        };
        let mut config = key.config.clone();
        config.delete_after_unix_nanos = None;
        let mut batch = WriteBatch::new();
        batch
            .put(Space::Config, named_config_key(id, name), to_json(&config)?)
            .delete(
                Space::Config,
                named_schedule_key(when, SCHEDULE_DESTROY, id, name),
            );
        if config.rotation_period_nanos > 0 {
            // A rotation that fell due while the deletion was pending was dropped.
            let latest_created = key
                .versions
                .get(&config.latest)
                .map_or(config.created_unix_nanos, |v| v.created_unix_nanos);
            batch.put(
                Space::Config,
                named_schedule_key(
                    latest_created.saturating_add(config.rotation_period_nanos),
                    SCHEDULE_ROTATE,
                    id,
                    name,
                ),
                Vec::new(),
            );
        }
        self.keys.write(batch)?;
        self.replace_named(&keyring, id, name, &key, config, None);
        Ok(())
    }

    /// The material of every kept version of a key created exportable.
    pub fn export_key(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &KeyName,
    ) -> Result<(KeyType, Vec<(u32, SecretBytes)>)> {
        let id = self.authorize_key(caller, tenant, name, Capability::Admin)?;
        let keyring = self.keyring()?;
        let key = self.named_key(&keyring, id, name)?;
        key.check_deletion_pending(name)?;
        if !key.config.exportable {
            return Err(Error::FailedPrecondition(format!(
                "key {name} was not created exportable; its material never leaves the vault"
            )));
        }
        let versions = key
            .versions
            .iter()
            .map(|(version, v)| {
                (
                    *version,
                    SecretBytes::new(v.material.expose_secret().to_vec()),
                )
            })
            .collect();
        Ok((key.key_type, versions))
    }

    /// Encrypts each item under the key (the latest version unless `key_version` names one),
    /// taking one use per item; a version at its budget rotates the key first. `batch` only
    /// decides how errors name the fields.
    pub fn encrypt(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &KeyName,
        key_version: u32,
        items: Vec<EncryptItem>,
        batch: bool,
    ) -> Result<Vec<Versioned>> {
        let id = self.authorize_key(caller, tenant, name, Capability::Encrypt)?;
        self.check_batch(&items, batch, |item| item.plaintext.len(), "plaintext")?;
        let keyring = self.keyring()?;
        items
            .iter()
            .map(|item| {
                self.encrypt_one(
                    &keyring,
                    id,
                    name,
                    key_version,
                    "encrypt",
                    &item.context,
                    item.plaintext.expose_secret(),
                )
            })
            .collect()
    }

    /// Decrypts each item; a ciphertext that does not open is that item's error (the others
    /// still decrypt). Returns each plaintext with the version that opened it.
    pub fn decrypt(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &KeyName,
        items: Vec<DecryptItem>,
        batch: bool,
    ) -> Result<Vec<Result<(SecretBytes, u32)>>> {
        let id = self.authorize_key(caller, tenant, name, Capability::Decrypt)?;
        // A ciphertext is about 4/3 of its plaintext, plus the prefix, nonce and tag.
        let limit = self.config.kms.max_plaintext_bytes;
        self.check_batch(&items, batch, |_| 0, "ciphertext")?;
        let keyring = self.keyring()?;
        let key = self.named_key(&keyring, id, name)?;
        key.check_usable(name, Usage::Encryption, "decrypt")?;
        Ok(items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                check_size(
                    item_field(batch, index, "ciphertext"),
                    item.ciphertext.len(),
                    limit.saturating_mul(4) / 3 + 128,
                )?;
                self.decrypt_one(&key, id, name, &item.ciphertext, &item.context)
            })
            .collect())
    }

    /// Re-encrypts a ciphertext under the latest version (or `key_version`) without returning
    /// the plaintext. Returns the old version and the new ciphertext.
    pub fn rewrap(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &KeyName,
        ciphertext: &str,
        context: &EncryptionContext,
        key_version: u32,
    ) -> Result<(u32, Versioned)> {
        let id = self.authorize_key(caller, tenant, name, Capability::Rewrap)?;
        let keyring = self.keyring()?;
        let key = self.named_key(&keyring, id, name)?;
        key.check_usable(name, Usage::Encryption, "rewrap")?;
        let (plaintext, old) = self.decrypt_one(&key, id, name, ciphertext, context)?;
        let new = self.encrypt_one(
            &keyring,
            id,
            name,
            key_version,
            "rewrap",
            context,
            plaintext.expose_secret(),
        )?;
        Ok((old, new))
    }

    /// Generates a random data key and returns it wrapped under the named key (and in plaintext
    /// when `with_plaintext`). The wrapped form decrypts with `decrypt` and the same context.
    #[allow(clippy::too_many_arguments)]
    pub fn datakey(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &KeyName,
        context: &EncryptionContext,
        key_version: u32,
        bits: u32,
        with_plaintext: bool,
    ) -> Result<DataKey> {
        let id = self.authorize_key(caller, tenant, name, Capability::Datakey)?;
        let bits = if bits == 0 { 256 } else { bits };
        if !DATA_KEY_BITS.contains(&bits) {
            return Err(Error::invalid("bits", "must be 128, 256 or 512"));
        }
        let keyring = self.keyring()?;
        let mut bytes = Zeroizing::new(vec![0u8; bits as usize / 8]);
        getrandom::fill(bytes.as_mut_slice()).map_err(|_| Error::Rng)?;
        let wrapped =
            self.encrypt_one(&keyring, id, name, key_version, "datakey", context, &bytes)?;
        Ok(DataKey {
            plaintext: with_plaintext.then(|| SecretBytes::new(bytes.to_vec())),
            wrapped,
        })
    }

    /// Signs `message` with version `key_version` (0: the latest) of a signing key, as
    /// `vault:vN:<base64>`.
    pub fn sign(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &KeyName,
        message: &[u8],
        key_version: u32,
    ) -> Result<Versioned> {
        self.tag(caller, tenant, name, message, key_version, Tag::Signature)
    }

    /// The HMAC-SHA256 of `message` under version `key_version` (0: the latest) of an `hmac`
    /// key, as `vault:vN:<base64>`.
    pub fn hmac(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &KeyName,
        message: &[u8],
        key_version: u32,
    ) -> Result<Versioned> {
        self.tag(caller, tenant, name, message, key_version, Tag::Mac)
    }

    /// Whether `signature` is a valid signature of `message`. A version below
    /// `min_decryption_version` or trimmed is refused, not reported as invalid.
    pub fn verify(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &KeyName,
        message: &[u8],
        signature: &str,
    ) -> Result<(bool, u32)> {
        self.check_tag(caller, tenant, name, message, signature, Tag::Signature)
    }

    /// Whether `hmac` is the HMAC of `message`; versions as for [`Kms::verify`].
    pub fn verify_hmac(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &KeyName,
        message: &[u8],
        hmac: &str,
    ) -> Result<(bool, u32)> {
        self.check_tag(caller, tenant, name, message, hmac, Tag::Mac)
    }

    fn tag(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &KeyName,
        message: &[u8],
        key_version: u32,
        tag: Tag,
    ) -> Result<Versioned> {
        let mac = tag == Tag::Mac;
        let id = self.authorize_key(caller, tenant, name, Capability::Sign)?;
        check_size(
            "message".into(),
            message.len(),
            self.config.kms.max_plaintext_bytes,
        )?;
        let keyring = self.keyring()?;
        let key = self.named_key(&keyring, id, name)?;
        let (usage, operation) = if mac {
            (Usage::Mac, "hmac")
        } else {
            (Usage::Signing, "sign")
        };
        key.check_usable(name, usage, operation)?;
        let version = key.version_for_use(name, key_version)?;
        let current = key
            .versions
            .get(&version)
            .ok_or_else(|| corrupt("a named key's version"))?;
        let body = if mac {
            named::hmac(&current.material, message)
        } else {
            named::sign(key.key_type, &current.material, message)?
        };
        Ok(Versioned {
            text: named::format_versioned(version, &body),
            version,
        })
    }

    fn check_tag(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &KeyName,
        message: &[u8],
        signature: &str,
        tag: Tag,
    ) -> Result<(bool, u32)> {
        let mac = tag == Tag::Mac;
        let id = self.authorize_key(caller, tenant, name, Capability::Verify)?;
        check_size(
            "message".into(),
            message.len(),
            self.config.kms.max_plaintext_bytes,
        )?;
        let field = if mac { "hmac" } else { "signature" };
        let (version, body) = named::parse_versioned(field, signature)?;
        let keyring = self.keyring()?;
        let key = self.named_key(&keyring, id, name)?;
        let usage = if mac { Usage::Mac } else { Usage::Signing };
        key.check_usable(name, usage, if mac { "hmac verify" } else { "verify" })?;
        let opener = key.version_for_opening(name, version)?;
        let valid = if mac {
            named::hmac_verify(&opener.material, message, &body)
        } else {
            let public = opener
                .public_key
                .as_deref()
                .ok_or_else(|| corrupt("a signing key's public key"))?;
            named::verify(key.key_type, public, message, &body)
        };
        Ok((valid, version))
    }
}

/// What [`Kms::sign`] and [`Kms::hmac`] (and their checks) make: one body, two kinds of tag.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tag {
    Signature,
    Mac,
}

impl NamedKey {
    fn check_deletion_pending(&self, name: &KeyName) -> Result<()> {
        match self.config.delete_after_unix_nanos {
            Some(when) => Err(Error::FailedPrecondition(format!(
                "key {name} is scheduled for deletion at {}; cancel the deletion first",
                crate::time::rfc3339(when)
            ))),
            None => Ok(()),
        }
    }
}
