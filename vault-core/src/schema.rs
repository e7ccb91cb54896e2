//! Every storage key of the vault, built in this one module.
//!
//! Invariant: no key is built anywhere else, and the bytes of every key stay exactly what they
//! are (existing data directories open unchanged; there is no migration). `<tenant>` is the
//! tenant id as 16 lower-case hex digits, so `kek/<tenant>` of one tenant is never a prefix of
//! another's; `<u32>` and `<u64>` are big-endian, so keys sort by number.
//!
//! # Key store ([`crate::stores::KeyStore`])
//!
//! All in [`Space::Config`].
//!
//! | key | holds |
//! |---|---|
//! | `seal/config` | the seal configuration (JSON): shares, threshold, key versions, the root key sealed under the unseal key, one commitment per share |
//! | `seal/staged` | a rekey staged and not yet committed: the current root key sealed under the new unseal key, one commitment per new share, the verification nonce, the unseal key version it replaces |
//! | `sys/token-hmac` | the token hashing key, sealed under the root key |
//! | `sys/audit-signing` | the audit checkpoint signing key (PKCS#8), sealed under the root key |
//! | `sys/audit-public-key` | its public half, base64 (readable while sealed) |
//! | `sys/root-previous/<u32>` | a previous root key, sealed under the current one |
//! | `sys/root-count/<u32>` | a root key version's reserved use count (u64) |
//! | `kek/<tenant>/<u32>` | a KEK version (JSON: created time, the KEK sealed under the root key) |
//! | `kek-count/<tenant>/<u32>` | a KEK version's durably reserved use count (u64) |
//! | `kek-state/<tenant>` | the tenant's KEK lifecycle: scheduled retirements, the re-wrap job (set, cursor, progress), retired versions |
//! | `kmsc/<tenant>/<name>` | a named key's configuration: type, latest and minimum versions, budget, rotation period, deletable, exportable, deletion time |
//! | `kmsv/<tenant>/<name>/<u32>` | a named key version: created time, material wrapped under the tenant's KEK, public key |
//! | `kmsn/<tenant>/<name>/<u32>` | a named key version's reserved use count |
//! | `kmsq/<u64 due><r\|d><tenant>/<name>` | a named key's scheduled rotation or destruction (empty) |
//! | `shredded/<tenant>` | the tombstone of a crypto-shredded tenant: name, times, destroyed KEK versions; no key |
//!
//! The key store is opened uncompressed (`RocksStorage::open_key_store`): it holds small sealed
//! blobs, and uncompressed files can be searched byte for byte, which is how the tests show that
//! a destroyed KEK is gone from every file after compaction.
//!
//! # Data store ([`crate::stores::DataStore`])
//!
//! [`Space::Config`]:
//!
//! | key | holds |
//! |---|---|
//! | `tenant/<name>` | a live tenant's record (JSON: `id`, created time, settings) |
//! | `tenant-id/<tenant>` | the id index: the live tenant's name (deletion removes both in one write) |
//! | `tenant-deleted/<tenant>` | a deleted tenant's record with the time its keys are destroyed; removed after the shred receipt |
//! | `token/<keyed hash>` | a token record (JSON: accessor, tenant (empty for system tokens), policies, parent, expiry, networks, entity, family) |
//! | `accessor/<accessor>` | the accessor index: the token's keyed hash (revocation removes it) |
//! | `children/<parent accessor>/<accessor>` | the tokens a token created (empty) |
//! | `family/<id>` | a refresh family (JSON, `tenant`) |
//! | `refresh/<keyed hash>` | a refresh token (JSON, its `family`) |
//! | `policy/<tenant>/<name>` | a policy |
//! | `approle/<tenant>/<name>` | an AppRole |
//! | `approle-id/<tenant>/<role id>` | the role id index: the role's name |
//! | `secret-id/<keyed hash>` | an AppRole secret id (JSON, `tenant`) |
//! | `mfa/<entity>` | an entity's TOTP enrolment: secret sealed under the root key, last used step, failures (a reset keeps the record without the secret) |
//! | `sys/mfa-system` | the system operations that need MFA |
//! | `jwt/<name>` | a JWT login configuration (system level) |
//! | `audit/head`, `audit/head/<node id>` | the audit chain head as last recorded (at most once a second); per node when nodes share the stores |
//! | `wh/<tenant>/<webhook id>` | the webhook index (empty) |
//! | `wt/<tenant>/<u64 due><webhook id>/<u64 revision>` | the tenant's webhook delivery queue |
//! | `wq/<u64 due><tenant>/<webhook id>/<u64 revision>` | the queue before per-tenant queues; moved into `wt/` at start-up |
//!
//! [`Space::Secrets`]:
//!
//! | key | holds |
//! |---|---|
//! | `t/<tenant>/m/<path>` | a secret's metadata (JSON: current version, times, max versions, cas_required, custom metadata, deadlines, one entry per kept version, pending expiry alarms) |
//! | `t/<tenant>/v/<path>\0<u64 version>` | a secret version: created time, wrapped DEK, sealed value (deleted on destroy and on pruning) |
//! | `t/<tenant>/e/<u64 revision>` | a change feed event (JSON, no values) |
//! | `t/<tenant>/feed` | the feed's floor (oldest revision kept) |
//! | `t/<tenant>/x/<u64 when><i\|x><e\|r><path>` | an expiry alarm (expiring or expired; expires-at or rotate-by) |
//! | `t/<tenant>/w/<webhook id>` | a webhook: URL, filters, secret sealed under the root key, feed cursor, counters |
//! | `t/<tenant>/wp/<webhook id>/<u64 revision>` | a pending webhook delivery |
//! | `t/<tenant>/wd/<webhook id>/<u64 revision>` | a dead-letter webhook delivery |
//!
//! # What a tenant owns
//!
//! Every range of [`tenant_ranges`] is the tenant's alone: deleting a tenant's data is deleting
//! those ranges (crypto-shredding does, the key-store ranges in the one write that destroys the
//! KEKs). The tombstone `shredded/<tenant>` is deliberately not among them: it outlives the
//! shredding, it is what says the tenant's keys are gone (a restore is refused, and the purge
//! knows the tenant's global records are dead).
//!
//! A tenant also has records under global keys, listed in [`GLOBAL_RECORDS`] with how each
//! names its tenant and what removes it. After shredding and one maintenance round over them
//! (the purge is paged, so a large vault takes several), no key of the tenant remains but its
//! tombstone.
//!
//! Not the tenant's: `jwt/<name>` may name a fixed tenant, but it is the operator's
//! configuration (a tenant re-created under the name gets no logins from it, its id differs);
//! MFA enrolments of entities that carry no tenant id (`root`, `token:<accessor>`, and
//! `jwt:<config>:<user>` from before entities carried the tenant id) are not swept.

use crate::{
    names::{SecretPath, TenantId, TenantName},
    storage::Space,
    token::TokenHash,
};

/// Which of the vault's two stores a key lies in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Store {
    Data,
    Keys,
}

/// A range of keys one tenant owns: every key of `store` in `space` that starts with `prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantRange {
    pub store: Store,
    pub space: Space,
    pub prefix: Vec<u8>,
}

impl TenantRange {
    pub fn contains(&self, store: Store, space: Space, key: &[u8]) -> bool {
        self.store == store && self.space == space && key.starts_with(&self.prefix)
    }
}

/// Every range of keys the tenant owns, in both stores. Not the tombstone `shredded/<tenant>`
/// (see the module documentation), nor its records under global keys ([`GLOBAL_RECORDS`]).
pub fn tenant_ranges(id: TenantId) -> Vec<TenantRange> {
    let range = |store, space, prefix| TenantRange {
        store,
        space,
        prefix,
    };
    vec![
        range(Store::Data, Space::Secrets, tenant_data_prefix(id)),
        range(Store::Data, Space::Config, policy_prefix(id)),
        range(Store::Data, Space::Config, approle_prefix(id)),
        range(Store::Data, Space::Config, approle_id_prefix(id)),
        range(Store::Data, Space::Config, webhook_index_prefix(id)),
        range(Store::Data, Space::Config, webhook_queue_prefix(id)),
        range(Store::Keys, Space::Config, kek_prefix(id)),
        range(Store::Keys, Space::Config, kek_count_prefix(id)),
        range(Store::Keys, Space::Config, kek_state_key(id)),
        range(Store::Keys, Space::Config, named_config_prefix(id)),
        range(Store::Keys, Space::Config, named_versions_prefix(id, None)),
        range(Store::Keys, Space::Config, named_counts_prefix(id, None)),
    ]
}

/// How a record under a global key names its tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamedBy {
    /// The tenant id is in the key.
    Key,
    /// The tenant's name is in the key (the record holds the id).
    Name,
    /// The record's JSON field of this name holds the tenant id.
    Field(&'static str),
    /// Through the record it points at (said how).
    Through(&'static str),
}

/// A kind of record of a tenant kept under a global key.
#[derive(Clone, Copy, Debug)]
pub struct GlobalRecord {
    pub store: Store,
    pub space: Space,
    pub prefix: &'static [u8],
    pub named_by: NamedBy,
    /// What removes the records of a deleted (and shredded) tenant.
    pub removed_by: &'static str,
}

/// The records of a tenant under global keys.
pub const GLOBAL_RECORDS: &[GlobalRecord] = &[
    GlobalRecord {
        store: Store::Data,
        space: Space::Config,
        prefix: TENANT_PREFIX,
        named_by: NamedBy::Name,
        removed_by: "tenant deletion (a restore writes it again)",
    },
    GlobalRecord {
        store: Store::Data,
        space: Space::Config,
        prefix: TENANT_ID_PREFIX,
        named_by: NamedBy::Key,
        removed_by: "tenant deletion (a restore writes it again)",
    },
    GlobalRecord {
        store: Store::Data,
        space: Space::Config,
        prefix: DELETED_TENANT_PREFIX,
        named_by: NamedBy::Key,
        removed_by: "the last step of shredding, after the receipt",
    },
    GlobalRecord {
        store: Store::Data,
        space: Space::Config,
        prefix: TOKEN_PREFIX,
        named_by: NamedBy::Field("tenant"),
        removed_by: "the purge, once the tenant is shredded",
    },
    GlobalRecord {
        store: Store::Data,
        space: Space::Config,
        prefix: ACCESSOR_PREFIX,
        named_by: NamedBy::Through("the token record of the keyed hash it holds"),
        removed_by: "the purge, with its token",
    },
    GlobalRecord {
        store: Store::Data,
        space: Space::Config,
        prefix: CHILDREN_PREFIX,
        named_by: NamedBy::Through("the token record of the child accessor in the key"),
        removed_by: "the purge, with the child token",
    },
    GlobalRecord {
        store: Store::Data,
        space: Space::Config,
        prefix: FAMILY_PREFIX,
        named_by: NamedBy::Field("tenant"),
        removed_by: "the purge, once the tenant is shredded",
    },
    GlobalRecord {
        store: Store::Data,
        space: Space::Config,
        prefix: REFRESH_PREFIX,
        named_by: NamedBy::Through("the family in its `family` field"),
        removed_by: "the purge, once its family is not live",
    },
    GlobalRecord {
        store: Store::Data,
        space: Space::Config,
        prefix: SECRET_ID_PREFIX,
        named_by: NamedBy::Field("tenant"),
        removed_by: "the purge, once the tenant is shredded",
    },
    GlobalRecord {
        store: Store::Data,
        space: Space::Config,
        prefix: MFA_PREFIX,
        named_by: NamedBy::Key,
        removed_by: "the purge, once the tenant of the entity (see entity_tenant) is shredded",
    },
    GlobalRecord {
        store: Store::Keys,
        space: Space::Config,
        prefix: NAMED_SCHEDULE_PREFIX,
        named_by: NamedBy::Key,
        removed_by: "the purge (or the schedule when due), once the tenant is shredded",
    },
];

// ---- key store ----

pub(crate) const SEAL_CONFIG_KEY: &[u8] = b"seal/config";
pub(crate) const SEAL_STAGED_KEY: &[u8] = b"seal/staged";
pub(crate) const TOKEN_HMAC_KEY: &[u8] = b"sys/token-hmac";
pub(crate) const AUDIT_SIGNING_KEY: &[u8] = b"sys/audit-signing";
pub(crate) const AUDIT_PUBLIC_KEY: &[u8] = b"sys/audit-public-key";
pub(crate) const PREVIOUS_ROOT_PREFIX: &[u8] = b"sys/root-previous/";
const ROOT_COUNT_PREFIX: &[u8] = b"sys/root-count/";

pub(crate) fn previous_root_key(version: u32) -> Vec<u8> {
    with_u32(PREVIOUS_ROOT_PREFIX.to_vec(), version)
}

pub(crate) fn root_count_key(version: u32) -> Vec<u8> {
    with_u32(ROOT_COUNT_PREFIX.to_vec(), version)
}

/// Every tenant's KEK versions (root key rotation re-seals them all).
pub(crate) const KEK_PREFIX: &[u8] = b"kek/";

pub(crate) fn kek_prefix(tenant: TenantId) -> Vec<u8> {
    format!("kek/{}/", tenant.to_hex()).into_bytes()
}

pub(crate) fn kek_key(tenant: TenantId, version: u32) -> Vec<u8> {
    with_u32(kek_prefix(tenant), version)
}

pub(crate) fn kek_count_prefix(tenant: TenantId) -> Vec<u8> {
    format!("kek-count/{}/", tenant.to_hex()).into_bytes()
}

pub(crate) fn kek_count_key(tenant: TenantId, version: u32) -> Vec<u8> {
    with_u32(kek_count_prefix(tenant), version)
}

/// A tenant's KEK lifecycle record (its re-wrap job starts from it).
pub(crate) fn kek_state_key(tenant: TenantId) -> Vec<u8> {
    format!("kek-state/{}", tenant.to_hex()).into_bytes()
}

pub(crate) fn shredded_key(tenant: TenantId) -> Vec<u8> {
    format!("shredded/{}", tenant.to_hex()).into_bytes()
}

pub(crate) fn named_config_prefix(tenant: TenantId) -> Vec<u8> {
    format!("kmsc/{}/", tenant.to_hex()).into_bytes()
}

pub(crate) fn named_config_key(tenant: TenantId, name: &crate::kms::KeyName) -> Vec<u8> {
    format!("kmsc/{}/{}", tenant.to_hex(), name.as_str()).into_bytes()
}

/// One named key's versions, or (`None`) all of the tenant's.
pub(crate) fn named_versions_prefix(
    tenant: TenantId,
    name: Option<&crate::kms::KeyName>,
) -> Vec<u8> {
    match name {
        Some(name) => format!("kmsv/{}/{}/", tenant.to_hex(), name.as_str()),
        None => format!("kmsv/{}/", tenant.to_hex()),
    }
    .into_bytes()
}

pub(crate) fn named_version_key(
    tenant: TenantId,
    name: &crate::kms::KeyName,
    version: u32,
) -> Vec<u8> {
    with_u32(named_versions_prefix(tenant, Some(name)), version)
}

/// Every named key version of every tenant.
pub(crate) const NAMED_VERSION_PREFIX: &[u8] = b"kmsv/";

/// `kmsv/<16 hex>/<name>/<u32>` → tenant, name, version.
pub(crate) fn parse_named_version_key(key: &[u8]) -> Option<(TenantId, String, u32)> {
    let (id, rest) = split_tenant(key, NAMED_VERSION_PREFIX)?;
    let (name, version) = rest.split_at_checked(rest.len().checked_sub(5)?)?;
    let (b'/', number) = version.split_first()? else {
        return None;
    };
    let number = u32::from_be_bytes(number.try_into().ok()?);
    Some((id, String::from_utf8(name.to_vec()).ok()?, number))
}

/// One named key's use counts, or (`None`) all of the tenant's.
pub(crate) fn named_counts_prefix(tenant: TenantId, name: Option<&crate::kms::KeyName>) -> Vec<u8> {
    match name {
        Some(name) => format!("kmsn/{}/{}/", tenant.to_hex(), name.as_str()),
        None => format!("kmsn/{}/", tenant.to_hex()),
    }
    .into_bytes()
}

pub(crate) fn named_count_key(
    tenant: TenantId,
    name: &crate::kms::KeyName,
    version: u32,
) -> Vec<u8> {
    with_u32(named_counts_prefix(tenant, Some(name)), version)
}

/// The named keys' schedule, in due order across tenants.
pub(crate) const NAMED_SCHEDULE_PREFIX: &[u8] = b"kmsq/";
pub(crate) const SCHEDULE_ROTATE: u8 = b'r';
pub(crate) const SCHEDULE_DESTROY: u8 = b'd';

pub(crate) fn named_schedule_key(
    when: i64,
    kind: u8,
    tenant: TenantId,
    name: &crate::kms::KeyName,
) -> Vec<u8> {
    let mut key = NAMED_SCHEDULE_PREFIX.to_vec();
    key.extend_from_slice(&u64::try_from(when.max(0)).unwrap_or(0).to_be_bytes());
    key.push(kind);
    key.extend_from_slice(format!("{}/{}", tenant.to_hex(), name.as_str()).as_bytes());
    key
}

/// The tenant a schedule entry is for (`None` if the key is malformed).
pub(crate) fn named_schedule_tenant(key: &[u8]) -> Option<TenantId> {
    let rest = key.strip_prefix(NAMED_SCHEDULE_PREFIX)?.get(9..)?;
    let (tenant, _) = std::str::from_utf8(rest).ok()?.split_once('/')?;
    TenantId::parse_hex(tenant)
}

// ---- data store, config space ----

/// Every live tenant's record, in name order.
pub(crate) const TENANT_PREFIX: &[u8] = b"tenant/";

pub(crate) fn tenant_key(name: &TenantName) -> Vec<u8> {
    format!("tenant/{}", name.as_str()).into_bytes()
}

pub(crate) const TENANT_ID_PREFIX: &[u8] = b"tenant-id/";

pub(crate) fn tenant_id_key(id: TenantId) -> Vec<u8> {
    format!("tenant-id/{}", id.to_hex()).into_bytes()
}

pub(crate) const DELETED_TENANT_PREFIX: &[u8] = b"tenant-deleted/";

pub(crate) fn deleted_tenant_key(id: TenantId) -> Vec<u8> {
    format!("tenant-deleted/{}", id.to_hex()).into_bytes()
}

pub(crate) const TOKEN_PREFIX: &[u8] = b"token/";

pub(crate) fn token_record_key(hash: &TokenHash) -> Vec<u8> {
    let mut key = Vec::with_capacity(TOKEN_PREFIX.len() + 64);
    key.extend_from_slice(TOKEN_PREFIX);
    push_hex(&mut key, hash.as_bytes());
    key
}

/// [`token_record_key`] of a hash as stored (hex) in the records that point at a token.
pub(crate) fn token_record_key_hex(hash_hex: &str) -> Vec<u8> {
    [TOKEN_PREFIX, hash_hex.as_bytes()].concat()
}

pub(crate) const ACCESSOR_PREFIX: &[u8] = b"accessor/";

pub(crate) fn accessor_key(accessor: &str) -> Vec<u8> {
    [ACCESSOR_PREFIX, accessor.as_bytes()].concat()
}

pub(crate) const CHILDREN_PREFIX: &[u8] = b"children/";

pub(crate) fn children_prefix(parent: &str) -> Vec<u8> {
    format!("children/{parent}/").into_bytes()
}

pub(crate) fn children_key(parent: &str, child: &str) -> Vec<u8> {
    let mut key = children_prefix(parent);
    key.extend_from_slice(child.as_bytes());
    key
}

pub(crate) const FAMILY_PREFIX: &[u8] = b"family/";

pub(crate) fn family_key(id: &str) -> Vec<u8> {
    format!("family/{id}").into_bytes()
}

pub(crate) const REFRESH_PREFIX: &[u8] = b"refresh/";

pub(crate) fn refresh_key(hash: &TokenHash) -> Vec<u8> {
    format!("refresh/{}", hash.to_hex()).into_bytes()
}

pub(crate) const POLICY_PREFIX: &[u8] = b"policy/";

pub(crate) fn policy_prefix(tenant: TenantId) -> Vec<u8> {
    format!("policy/{}/", tenant.to_hex()).into_bytes()
}

pub(crate) fn policy_key(tenant: TenantId, name: &crate::policy::PolicyName) -> Vec<u8> {
    let mut key = policy_prefix(tenant);
    key.extend_from_slice(name.as_str().as_bytes());
    key
}

fn approle_prefix(tenant: TenantId) -> Vec<u8> {
    format!("approle/{}/", tenant.to_hex()).into_bytes()
}

pub(crate) fn approle_key(tenant: TenantId, name: &str) -> Vec<u8> {
    let mut key = approle_prefix(tenant);
    key.extend_from_slice(name.as_bytes());
    key
}

fn approle_id_prefix(tenant: TenantId) -> Vec<u8> {
    format!("approle-id/{}/", tenant.to_hex()).into_bytes()
}

pub(crate) fn approle_id_key(tenant: TenantId, role_id: &str) -> Vec<u8> {
    let mut key = approle_id_prefix(tenant);
    key.extend_from_slice(role_id.as_bytes());
    key
}

pub(crate) const SECRET_ID_PREFIX: &[u8] = b"secret-id/";

pub(crate) fn secret_id_key(hash: &TokenHash) -> Vec<u8> {
    format!("secret-id/{}", hash.to_hex()).into_bytes()
}

/// The entity of an AppRole's logins.
pub(crate) fn approle_entity(tenant: TenantId, role: &str) -> String {
    format!("approle:{}:{role}", tenant.to_hex())
}

/// The entity of a JWT login (`config` names have no ':').
pub(crate) fn jwt_entity(config: &str, tenant: TenantId, user: &str) -> String {
    format!("jwt:{config}:{}:{user}", tenant.to_hex())
}

/// The tenant an entity belongs to: `approle:<tenant>:<role>` and `jwt:<config>:<tenant>:<user>`
/// name one; other entities (`root`, `token:<accessor>`, legacy ones) none.
pub(crate) fn entity_tenant(entity: &str) -> Option<TenantId> {
    let hex = if let Some(rest) = entity.strip_prefix("approle:") {
        rest.split_once(':')?.0
    } else {
        let rest = entity.strip_prefix("jwt:")?;
        let (_config, rest) = rest.split_once(':')?;
        rest.split_once(':')?.0
    };
    (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| TenantId::parse_hex(hex))
        .flatten()
}

pub(crate) const MFA_PREFIX: &[u8] = b"mfa/";

pub(crate) fn mfa_key(entity: &str) -> Vec<u8> {
    format!("mfa/{entity}").into_bytes()
}

pub(crate) const MFA_SYSTEM_KEY: &[u8] = b"sys/mfa-system";

pub(crate) fn jwt_config_key(name: &str) -> Vec<u8> {
    format!("jwt/{name}").into_bytes()
}

pub(crate) const AUDIT_HEAD_KEY: &[u8] = b"audit/head";

/// A node's audit head when several nodes share the stores: `audit/head/<node id>`.
pub(crate) fn node_audit_head_key(node_id: &str) -> Vec<u8> {
    format!("audit/head/{node_id}").into_bytes()
}

/// Every tenant's webhook index entries.
pub(crate) const WEBHOOK_INDEX_PREFIX: &[u8] = b"wh/";

fn webhook_index_prefix(tenant: TenantId) -> Vec<u8> {
    format!("wh/{}/", tenant.to_hex()).into_bytes()
}

pub(crate) fn webhook_index_key(tenant: TenantId, id: &str) -> Vec<u8> {
    let mut key = webhook_index_prefix(tenant);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The first index key past every key of `tenant` ('0' follows '/').
pub(crate) fn webhook_index_after(tenant: TenantId) -> Vec<u8> {
    format!("wh/{}0", tenant.to_hex()).into_bytes()
}

/// Each tenant's delivery queue, by due time. One queue per tenant, so the dispatcher can take
/// from every tenant in turn and no tenant's backlog sits in front of another's.
pub(crate) fn webhook_queue_prefix(tenant: TenantId) -> Vec<u8> {
    format!("wt/{}/", tenant.to_hex()).into_bytes()
}

pub(crate) fn webhook_queue_key(due: i64, tenant: TenantId, id: &str, revision: u64) -> Vec<u8> {
    let mut key = webhook_queue_prefix(tenant);
    key.extend_from_slice(&(due.max(0) as u64).to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key.push(b'/');
    with_u64(key, revision)
}

/// The queue of versions before per-tenant queues: `wq/<due><tenant>/<id>/<revision>`.
pub(crate) const OLD_WEBHOOK_QUEUE_PREFIX: &[u8] = b"wq/";

// ---- data store, secrets space ----

/// Everything of the tenant in the secrets space.
pub(crate) fn tenant_data_prefix(tenant: TenantId) -> Vec<u8> {
    format!("t/{}/", tenant.to_hex()).into_bytes()
}

/// Secret metadata; listing is an ordered scan of these.
pub(crate) fn meta_prefix(tenant: TenantId) -> Vec<u8> {
    tenant_space_prefix(tenant, b"m")
}

pub(crate) fn meta_key(tenant: TenantId, path: &SecretPath) -> Vec<u8> {
    let mut key = meta_prefix(tenant);
    key.extend_from_slice(path.as_str().as_bytes());
    key
}

/// Every secret version of the tenant (the re-wrap job scans them in key order).
pub(crate) fn tenant_versions_prefix(tenant: TenantId) -> Vec<u8> {
    tenant_space_prefix(tenant, b"v")
}

/// One secret's versions: `t/<tenant>/v/<path>\0`. Paths never contain NUL, so the prefix holds
/// exactly this secret's versions, in version order.
pub(crate) fn versions_prefix(tenant: TenantId, path: &SecretPath) -> Vec<u8> {
    let mut key = tenant_versions_prefix(tenant);
    key.extend_from_slice(path.as_str().as_bytes());
    key.push(0);
    key
}

pub(crate) fn version_key(tenant: TenantId, path: &SecretPath, version: u64) -> Vec<u8> {
    with_u64(versions_prefix(tenant, path), version)
}

/// Every tenant's part of the secrets space (`t/<tenant>/...`).
pub(crate) const TENANTS_DATA_PREFIX: &[u8] = b"t/";

/// `<prefix><16 hex>/<rest>` → tenant, rest.
fn split_tenant<'k>(key: &'k [u8], prefix: &[u8]) -> Option<(TenantId, &'k [u8])> {
    let rest = key.strip_prefix(prefix)?;
    let (hex, rest) = (rest.get(..16)?, rest.get(16..)?);
    let id = TenantId::parse_hex(std::str::from_utf8(hex).ok()?)?;
    Some((id, rest.strip_prefix(b"/")?))
}

/// `t/<16 hex>/v/<path>\0<u64>` → tenant, path, version.
pub(crate) fn parse_version_key(key: &[u8]) -> Option<(TenantId, String, u64)> {
    let (id, rest) = split_tenant(key, TENANTS_DATA_PREFIX)?;
    let rest = rest.strip_prefix(b"v/")?;
    let (path, version) = rest.split_at_checked(rest.len().checked_sub(9)?)?;
    let (0, number) = version.split_first()? else {
        return None;
    };
    let number = u64::from_be_bytes(number.try_into().ok()?);
    Some((id, String::from_utf8(path.to_vec()).ok()?, number))
}

/// Whether `key` is a secret's metadata record (`t/<16 hex>/m/<path>`).
pub(crate) fn is_meta_key(key: &[u8]) -> bool {
    split_tenant(key, TENANTS_DATA_PREFIX).is_some_and(|(_, rest)| rest.starts_with(b"m/"))
}

pub(crate) fn events_prefix(tenant: TenantId) -> Vec<u8> {
    tenant_space_prefix(tenant, b"e")
}

pub(crate) fn event_key(tenant: TenantId, revision: u64) -> Vec<u8> {
    with_u64(events_prefix(tenant), revision)
}

pub(crate) fn feed_floor_key(tenant: TenantId) -> Vec<u8> {
    format!("t/{}/feed", tenant.to_hex()).into_bytes()
}

/// The phase of an expiry alarm: the `expiring` notice, or the `expired` one.
pub(crate) const ALARM_EXPIRING: u8 = b'i';
pub(crate) const ALARM_EXPIRED: u8 = b'x';
/// The deadline an alarm is for.
pub(crate) const ALARM_EXPIRES_AT: u8 = b'e';
pub(crate) const ALARM_ROTATE_BY: u8 = b'r';

/// The tenant's expiry alarms, by due time.
pub(crate) fn alarm_prefix(tenant: TenantId) -> Vec<u8> {
    tenant_space_prefix(tenant, b"x")
}

pub(crate) fn alarm_key(
    tenant: TenantId,
    at_unix_nanos: i64,
    phase: u8,
    deadline: u8,
    path: &SecretPath,
) -> Vec<u8> {
    let mut key = with_u64(alarm_prefix(tenant), at_unix_nanos.max(0) as u64);
    key.push(phase);
    key.push(deadline);
    key.extend_from_slice(path.as_str().as_bytes());
    key
}

pub(crate) fn webhook_prefix(tenant: TenantId) -> Vec<u8> {
    tenant_space_prefix(tenant, b"w")
}

pub(crate) fn webhook_key(tenant: TenantId, id: &str) -> Vec<u8> {
    let mut key = webhook_prefix(tenant);
    key.extend_from_slice(id.as_bytes());
    key
}

pub(crate) fn webhook_pending_prefix(tenant: TenantId, id: &str) -> Vec<u8> {
    format!("t/{}/wp/{id}/", tenant.to_hex()).into_bytes()
}

pub(crate) fn webhook_pending_key(tenant: TenantId, id: &str, revision: u64) -> Vec<u8> {
    with_u64(webhook_pending_prefix(tenant, id), revision)
}

pub(crate) fn webhook_dead_prefix(tenant: TenantId, id: &str) -> Vec<u8> {
    format!("t/{}/wd/{id}/", tenant.to_hex()).into_bytes()
}

pub(crate) fn webhook_dead_key(tenant: TenantId, id: &str, revision: u64) -> Vec<u8> {
    with_u64(webhook_dead_prefix(tenant, id), revision)
}

fn with_u32(mut key: Vec<u8>, number: u32) -> Vec<u8> {
    key.extend_from_slice(&number.to_be_bytes());
    key
}

/// `t/<tenant hex>/<space>/`: one tenant's part of a space of the secrets store (built on
/// every call, so without formatting machinery).
fn tenant_space_prefix(tenant: TenantId, space: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + 16 + 2 + space.len() + 48);
    key.extend_from_slice(b"t/");
    push_hex(&mut key, &tenant.to_bytes());
    key.push(b'/');
    key.extend_from_slice(space);
    key.push(b'/');
    key
}

/// Appends the lower-case hex digits of `bytes`.
fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0x0f)]);
    }
}

fn with_u64(mut key: Vec<u8>, number: u64) -> Vec<u8> {
    key.extend_from_slice(&number.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the bytes of keys built from parts (a change here breaks existing data).
    #[test]
    fn keys_keep_their_bytes() {
        let id = TenantId::parse_hex("0123456789abcdef").expect("id");
        let path = SecretPath::parse("db/a").expect("path");
        let name = crate::kms::KeyName::parse("orders").expect("name");
        let cases: [(Vec<u8>, &[u8]); 8] = [
            (
                version_key(id, &path, 2),
                b"t/0123456789abcdef/v/db/a\0\0\0\0\0\0\0\0\x02",
            ),
            (kek_key(id, 3), b"kek/0123456789abcdef/\0\0\0\x03"),
            (
                named_count_key(id, &name, 1),
                b"kmsn/0123456789abcdef/orders/\0\0\0\x01",
            ),
            (
                named_schedule_key(1, SCHEDULE_ROTATE, id, &name),
                b"kmsq/\0\0\0\0\0\0\0\x01r0123456789abcdef/orders",
            ),
            (
                alarm_key(id, 1, ALARM_EXPIRING, ALARM_ROTATE_BY, &path),
                b"t/0123456789abcdef/x/\0\0\0\0\0\0\0\x01irdb/a",
            ),
            (
                webhook_queue_key(1, id, "w1", 2),
                b"wt/0123456789abcdef/\0\0\0\0\0\0\0\x01w1/\0\0\0\0\0\0\0\x02",
            ),
            (children_key("p", "c"), b"children/p/c"),
            (root_count_key(1), b"sys/root-count/\0\0\0\x01"),
        ];
        for (built, expected) in cases {
            assert_eq!(built, expected, "{}", String::from_utf8_lossy(expected));
        }
        assert_eq!(
            named_schedule_tenant(&named_schedule_key(1, SCHEDULE_DESTROY, id, &name)),
            Some(id)
        );
        assert_eq!(entity_tenant(&approle_entity(id, "deployer")), Some(id));
        assert_eq!(entity_tenant(&jwt_entity("okta", id, "a:b")), Some(id));
        assert_eq!(entity_tenant("jwt:okta:alice"), None);
        assert_eq!(entity_tenant("root"), None);
    }
}
