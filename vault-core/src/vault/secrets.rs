//! Versioned secrets: put (with check-and-set), patch, get by version, list, soft delete,
//! undelete, destroy, metadata, max-versions pruning and expiry deadlines.
//!
//! A secret is its metadata record (`t/<tenant>/m/<path>`, JSON: current version, settings and
//! one entry per kept version) and one record per version that still has ciphertext
//! (`t/<tenant>/v/<path>\0<version>`). Every change writes the metadata, the version records it
//! touches, its feed event and its expiry alarms in one atomic write.
//!
//! Expiry: a secret may carry `expires_at` and `rotate_by` deadlines. Each pending notice is an
//! alarm: listed in the metadata and indexed at `t/<tenant>/x/<when, u64 BE><phase><kind><path>`,
//! so the maintenance round finds due alarms with one ordered scan. A deadline schedules
//! `expiring` at the deadline minus the lead time (`--expiry-lead-secs`), then `expired` at the
//! deadline. A changed deadline replaces its alarms, and an index entry whose alarm is no longer
//! in the metadata is dropped. Each notice is audited as the vault before it is written. Time
//! comes from the vault's clock, which the tests drive.
//!
//! Listing is an ordered scan of `m/` that skips each sub-folder with one seek; a page reads
//! at most about twice the entries it returns, plus one (see [`Vault::list`]).
//!
//! A holder of `write` on a secret may turn its own `cas_required` off again; only the
//! tenant-wide setting (system scope) cannot be bypassed that way.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use super::{
    Caller, Keyring, ListPage, PutOutcome, SecretVersion, Vault, corrupt, decode_version,
    dek_context,
    due::Unit,
    encode_version,
    feed::{Event, EventKind},
    from_json, lock, to_json, value_context,
};
use crate::{
    crypto::{self, Header, KeyKind, KeyRef},
    error::{Error, Result},
    names::{FolderPrefix, SecretPath, TenantId, TenantName, check_field_name},
    policy::{Capability, Decision, decide},
    schema::{self, meta_key, meta_prefix, version_key, versions_prefix},
    secret::{SecretData, SecretKey},
    storage::{Space, WriteBatch},
    time::rfc3339,
};

/// Versions kept per secret when neither the secret nor its tenant says otherwise.
pub const DEFAULT_MAX_VERSIONS: u32 = 10;
/// Most custom metadata entries per secret, and longest key and value.
pub const MAX_CUSTOM_ENTRIES: usize = 64;
pub const MAX_CUSTOM_KEY_LEN: usize = 128;
pub const MAX_CUSTOM_VALUE_LEN: usize = 512;
/// Most versions named in one delete, undelete or destroy.
pub const MAX_VERSIONS_PER_CALL: usize = 1000;
/// Due alarms handled per tenant per maintenance round.
const ALARMS_PER_ROUND: usize = 256;

#[derive(Clone, Serialize, Deserialize)]
pub(super) struct SecretMeta {
    pub(super) current_version: u64,
    pub(super) created_unix_nanos: i64,
    pub(super) updated_unix_nanos: i64,
    /// Versions kept; 0: the tenant's default.
    #[serde(default)]
    max_versions: u32,
    #[serde(default)]
    cas_required: bool,
    #[serde(default)]
    custom: BTreeMap<String, String>,
    /// 0: none.
    #[serde(default)]
    expires_at_unix_nanos: i64,
    #[serde(default)]
    rotate_by_unix_nanos: i64,
    /// The kept versions, oldest first. Empty in records written before versions were tracked;
    /// such a record is filled from the stored versions on its next change.
    #[serde(default)]
    versions: BTreeMap<u64, VersionMeta>,
    #[serde(default)]
    alarms: Vec<Alarm>,
}

#[derive(Clone, Serialize, Deserialize)]
struct VersionMeta {
    created_unix_nanos: i64,
    /// 0: not deleted.
    #[serde(default)]
    deleted_unix_nanos: i64,
    #[serde(default)]
    destroyed: bool,
    /// The accessor of the token that wrote it.
    #[serde(default)]
    author: String,
}

/// A pending expiry notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Alarm {
    at_unix_nanos: i64,
    phase: Phase,
    deadline: Deadline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    Expiring,
    Expired,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Deadline {
    ExpiresAt,
    RotateBy,
}

impl Deadline {
    fn name(self) -> &'static str {
        match self {
            Deadline::ExpiresAt => "expires_at",
            Deadline::RotateBy => "rotate_by",
        }
    }
}

/// A version as the metadata reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: u64,
    pub created_unix_nanos: i64,
    /// 0: not deleted.
    pub deleted_unix_nanos: i64,
    pub destroyed: bool,
    pub author: String,
}

/// A secret's metadata, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretMetadata {
    pub path: String,
    pub current_version: u64,
    pub oldest_version: u64,
    pub created_unix_nanos: i64,
    pub updated_unix_nanos: i64,
    /// As set on the secret (0: the tenant's default) and as in effect.
    pub max_versions: u32,
    pub effective_max_versions: u32,
    pub cas_required: bool,
    pub custom: BTreeMap<String, String>,
    pub expires_at_unix_nanos: i64,
    pub rotate_by_unix_nanos: i64,
    pub versions: Vec<VersionInfo>,
}

/// A change to a secret's metadata; `None` leaves a setting as it is. A deadline of 0 clears it.
#[derive(Clone, Debug, Default)]
pub struct MetadataUpdate {
    pub max_versions: Option<u32>,
    pub cas_required: Option<bool>,
    /// Entries to add or replace.
    pub custom: BTreeMap<String, String>,
    pub remove_custom: Vec<String>,
    pub expires_at_unix_nanos: Option<i64>,
    pub rotate_by_unix_nanos: Option<i64>,
}

/// What a delete, undelete or destroy changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionsChange {
    /// The versions the call changed (those already in the requested state are left out).
    pub versions: Vec<u64>,
    /// The feed revision of the change; 0 if nothing changed.
    pub revision: u64,
}

fn alarm_key(tenant: TenantId, path: &SecretPath, alarm: &Alarm) -> Vec<u8> {
    let phase = match alarm.phase {
        Phase::Expiring => schema::ALARM_EXPIRING,
        Phase::Expired => schema::ALARM_EXPIRED,
    };
    let deadline = match alarm.deadline {
        Deadline::ExpiresAt => schema::ALARM_EXPIRES_AT,
        Deadline::RotateBy => schema::ALARM_ROTATE_BY,
    };
    schema::alarm_key(tenant, alarm.at_unix_nanos, phase, deadline, path)
}

fn version_number(key: &[u8], prefix_len: usize) -> Result<u64> {
    key.get(prefix_len..)
        .and_then(|suffix| suffix.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt("a secret version key"))
}

fn check_versions(versions: &[u64]) -> Result<()> {
    if versions.len() > MAX_VERSIONS_PER_CALL {
        return Err(Error::invalid(
            "versions",
            format!("at most {MAX_VERSIONS_PER_CALL} per call"),
        ));
    }
    if versions.contains(&0) {
        return Err(Error::invalid("versions", "version numbers start at 1"));
    }
    Ok(())
}

/// Which change a versions call makes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum VersionsOp {
    Delete,
    Undelete,
    Destroy,
}

impl SecretMeta {
    fn new(now: i64) -> SecretMeta {
        SecretMeta {
            current_version: 0,
            created_unix_nanos: now,
            updated_unix_nanos: now,
            max_versions: 0,
            cas_required: false,
            custom: BTreeMap::new(),
            expires_at_unix_nanos: 0,
            rotate_by_unix_nanos: 0,
            versions: BTreeMap::new(),
            alarms: Vec::new(),
        }
    }

    fn deadline(&self, deadline: Deadline) -> i64 {
        match deadline {
            Deadline::ExpiresAt => self.expires_at_unix_nanos,
            Deadline::RotateBy => self.rotate_by_unix_nanos,
        }
    }
}

impl Vault {
    pub(super) fn check_data(&self, data: &SecretData) -> Result<()> {
        if data.is_empty() {
            return Err(Error::invalid("data", "a secret needs at least one field"));
        }
        let limit = self.config.max_value_bytes;
        let mut total = 0usize;
        for (name, value) in data.expose_secret() {
            check_field_name(name)?;
            if value.len() > limit {
                return Err(Error::TooLarge {
                    field: format!("data[{name:?}]"),
                    size: value.len(),
                    limit,
                });
            }
            total += name.len() + value.len();
        }
        if total > limit {
            return Err(Error::TooLarge {
                field: "data".into(),
                size: total,
                limit,
            });
        }
        Ok(())
    }

    /// The secret's metadata, with the version list filled in for a record written before
    /// versions were tracked.
    fn load_meta(&self, id: TenantId, path: &SecretPath) -> Result<Option<SecretMeta>> {
        // Kept decoded (the data store's metadata cache): a get or put copies it.
        let Some(cached) = self
            .data
            .cached(Space::Secrets, &meta_key(id, path), |bytes| {
                from_json::<SecretMeta>(bytes, "secret metadata")
            })?
        else {
            return Ok(None);
        };
        let mut meta = SecretMeta::clone(&cached);
        if meta.versions.is_empty() && meta.current_version > 0 {
            let prefix = versions_prefix(id, path);
            let mut start = prefix.clone();
            loop {
                let page = self.data.scan(Space::Secrets, &prefix, &start, 1024)?;
                let Some((last, _)) = page.last() else {
                    break;
                };
                start = last.clone();
                start.push(0);
                for (key, value) in &page {
                    let version = version_number(key, prefix.len())?;
                    let (created, _, _) =
                        decode_version(value).ok_or_else(|| corrupt("a secret version"))?;
                    meta.versions.insert(
                        version,
                        VersionMeta {
                            created_unix_nanos: created,
                            deleted_unix_nanos: 0,
                            destroyed: false,
                            author: String::new(),
                        },
                    );
                }
            }
        }
        Ok(Some(meta))
    }

    fn existing_meta(&self, id: TenantId, path: &SecretPath) -> Result<SecretMeta> {
        self.load_meta(id, path)?
            .ok_or_else(|| Error::NotFound(format!("secret {path}")))
    }

    /// Versions kept for this secret: its own setting, else its tenant's, else the default.
    fn keep_versions(&self, id: TenantId, meta: &SecretMeta) -> Result<u32> {
        if meta.max_versions > 0 {
            return Ok(meta.max_versions);
        }
        let tenant = self
            .tenant_state(id)?
            .map_or(0, |state| state.default_max_versions);
        Ok(if tenant > 0 {
            tenant
        } else {
            self.config.default_max_versions
        })
    }

    /// Drops the oldest versions past the limit: their records (wrapped DEK and ciphertext) are
    /// deleted in `batch`. Returns the versions whose ciphertext this destroyed.
    fn prune_versions(
        &self,
        id: TenantId,
        path: &SecretPath,
        meta: &mut SecretMeta,
        batch: &mut WriteBatch,
    ) -> Result<Vec<u64>> {
        let keep = self.keep_versions(id, meta)? as usize;
        let mut destroyed = Vec::new();
        while keep > 0 && meta.versions.len() > keep {
            let Some((version, info)) = meta.versions.pop_first() else {
                break;
            };
            if !info.destroyed {
                batch.delete(Space::Secrets, version_key(id, path, version));
                destroyed.push(version);
            }
        }
        Ok(destroyed)
    }

    /// The write shared by put and patch; the caller holds the secret's stripe lock.
    #[allow(clippy::too_many_arguments)]
    fn write_version(
        &self,
        keyring: &Keyring,
        caller: &Caller,
        id: TenantId,
        path: &SecretPath,
        meta: Option<SecretMeta>,
        data: SecretData,
        cas: Option<u64>,
    ) -> Result<PutOutcome> {
        let current = meta.as_ref().map_or(0, |meta| meta.current_version);
        match cas {
            Some(expected) if expected != current => {
                return Err(Error::CasMismatch {
                    path: path.to_string(),
                    expected,
                    current,
                });
            }
            Some(_) => {}
            None => {
                let tenant_requires = self.tenant_state(id)?.is_some_and(|s| s.cas_required);
                if tenant_requires || meta.as_ref().is_some_and(|m| m.cas_required) {
                    return Err(Error::invalid(
                        "cas",
                        format!(
                            "required for secret {path} (check-and-set is on); pass the current \
                             version ({current}), or 0 to create"
                        ),
                    ));
                }
            }
        }
        // Until the write below is committed (see `wrap_gate`).
        let wrapping = self.kek_state.enter_wrap_gate();
        let now = self.now();
        let created = meta.is_none();
        let mut meta = meta.unwrap_or_else(|| SecretMeta::new(now));
        let version = current + 1;

        let dek = SecretKey::generate()?;
        let (wrapped_dek, _) = self.wrap_dek(
            &wrapping,
            keyring,
            id,
            &dek_context(id, path, version),
            &dek,
        )?;
        let sealed_value = crypto::seal(
            &dek,
            KeyRef {
                kind: KeyKind::Dek,
                version: 0,
            },
            &value_context(id, path, version),
            &data.encode(),
        )?;
        drop(dek);

        meta.current_version = version;
        meta.updated_unix_nanos = now;
        meta.versions.insert(
            version,
            VersionMeta {
                created_unix_nanos: now,
                deleted_unix_nanos: 0,
                destroyed: false,
                author: caller.accessor.clone(),
            },
        );
        let mut batch = WriteBatch::new();
        batch.put(
            Space::Secrets,
            version_key(id, path, version),
            encode_version(now, &wrapped_dek, &sealed_value),
        );
        let pruned = self.prune_versions(id, path, &mut meta, &mut batch)?;
        batch.put(Space::Secrets, meta_key(id, path), to_json(&meta)?);
        let kind = if created {
            EventKind::Created
        } else {
            EventKind::Updated
        };
        let revision = self.record_event(
            id,
            &mut batch,
            Event::new(kind, path.as_str(), vec![version], now),
        )?;
        let pruned_revision = if pruned.is_empty() {
            None
        } else {
            Some(
                self.record_event(
                    id,
                    &mut batch,
                    Event::new(EventKind::Destroyed, path.as_str(), pruned, now)
                        .with_detail("pruned past max_versions"),
                )?,
            )
        };
        crate::crash_point("put-before-commit");
        self.data.write(batch)?;
        crate::crash_point("put-after-commit");
        let revision = pruned_revision
            .as_ref()
            .map_or(revision.revision, |pruned| pruned.revision);
        Ok(PutOutcome {
            version,
            created_unix_nanos: now,
            revision,
        })
    }

    /// Why `version` cannot be read, if it cannot: unknown, deleted, destroyed or expired.
    fn check_readable(&self, path: &SecretPath, meta: &SecretMeta, version: u64) -> Result<()> {
        let what = || format!("secret {path} version {version}");
        if version == 0 || version > meta.current_version {
            return Err(Error::NotFound(what()));
        }
        if meta.expires_at_unix_nanos > 0 && self.now() >= meta.expires_at_unix_nanos {
            return Err(Error::Gone {
                what: format!("secret {path}"),
                why: format!(
                    "expired at {}; set a later expires_at to read it again",
                    rfc3339(meta.expires_at_unix_nanos)
                ),
            });
        }
        match meta.versions.get(&version) {
            // Pruned (or, in an old record, checked against storage by the caller).
            None if !meta.versions.is_empty() => Err(Error::Gone {
                what: what(),
                why: "pruned past max_versions".into(),
            }),
            Some(info) if info.destroyed => Err(Error::Gone {
                what: what(),
                why: "destroyed".into(),
            }),
            Some(info) if info.deleted_unix_nanos > 0 => Err(Error::Gone {
                what: what(),
                why: format!(
                    "deleted at {}; undelete restores it",
                    rfc3339(info.deleted_unix_nanos)
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Decrypts a stored version. A re-wrap may retire the KEK between our read and its lookup;
    /// the version then reads again, wrapped under the newer KEK.
    fn open_version(
        &self,
        keyring: &Keyring,
        id: TenantId,
        path: &SecretPath,
        version: u64,
    ) -> Result<SecretVersion> {
        let what = || format!("secret {path} version {version}");
        let mut attempts = 0;
        loop {
            attempts += 1;
            let stored = self
                .data
                .get(Space::Secrets, &version_key(id, path, version))?
                .ok_or_else(|| Error::NotFound(what()))?;
            match self.open_stored(keyring, id, path, version, &stored)? {
                Some(opened) => return Ok(opened),
                None if attempts < 3 => continue,
                None => return Err(Error::Integrity(what())),
            }
        }
    }

    /// Decrypts `stored`, the record of version `version` of `path`; `None` if the KEK version
    /// that wrapped its DEK is not (or no longer) there.
    pub(super) fn open_stored(
        &self,
        keyring: &Keyring,
        id: TenantId,
        path: &SecretPath,
        version: u64,
        stored: &[u8],
    ) -> Result<Option<SecretVersion>> {
        let what = || format!("secret {path} version {version}");
        let (created, wrapped_dek, sealed_value) =
            decode_version(stored).ok_or_else(|| Error::Integrity(what()))?;
        let header = Header::parse(wrapped_dek).map_err(|_| Error::Integrity(what()))?;
        if header.key.kind != KeyKind::Kek {
            return Err(Error::Integrity(what()));
        }
        let Some(kek) = self.kek(keyring, id, header.key.version)? else {
            return Ok(None);
        };
        let dek_bytes = crypto::open(
            &kek.key,
            &dek_context(id, path, version),
            wrapped_dek,
            &what,
        )?;
        let dek = SecretKey::from_bytes(dek_bytes).ok_or_else(|| Error::Integrity(what()))?;
        let plaintext = crypto::open(&dek, &value_context(id, path, version), sealed_value, &what)?;
        let data = SecretData::decode(&plaintext).ok_or_else(|| Error::Integrity(what()))?;
        Ok(Some(SecretVersion {
            version,
            created_unix_nanos: created,
            key_version: header.key.version,
            data,
        }))
    }

    fn change_versions(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        path: &SecretPath,
        versions: &[u64],
        op: VersionsOp,
    ) -> Result<VersionsChange> {
        check_versions(versions)?;
        if op != VersionsOp::Delete && versions.is_empty() {
            return Err(Error::invalid("versions", "name at least one version"));
        }
        let _keyring = self.keyring()?;
        let capability = match op {
            VersionsOp::Undelete => Capability::Write,
            VersionsOp::Delete | VersionsOp::Destroy => Capability::Delete,
        };
        let id = self
            .authorize(caller, tenant, path.as_str(), capability)?
            .tenant();
        let _guard = lock(self.stripe(id, path.as_str()));
        let mut meta = self.existing_meta(id, path)?;
        let requested = if versions.is_empty() {
            vec![meta.current_version]
        } else {
            let mut sorted = versions.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            sorted
        };
        let now = self.now();
        let mut batch = WriteBatch::new();
        let mut changed = Vec::new();
        for version in requested {
            let Some(info) = meta.versions.get_mut(&version) else {
                if version > meta.current_version {
                    return Err(Error::NotFound(format!("secret {path} version {version}")));
                }
                // Pruned already: nothing left to change.
                continue;
            };
            let changes = match op {
                VersionsOp::Delete => !info.destroyed && info.deleted_unix_nanos == 0,
                VersionsOp::Undelete => !info.destroyed && info.deleted_unix_nanos > 0,
                VersionsOp::Destroy => !info.destroyed,
            };
            if !changes {
                continue;
            }
            match op {
                VersionsOp::Delete => info.deleted_unix_nanos = now,
                VersionsOp::Undelete => info.deleted_unix_nanos = 0,
                VersionsOp::Destroy => {
                    info.destroyed = true;
                    batch.delete(Space::Secrets, version_key(id, path, version));
                }
            }
            changed.push(version);
        }
        if changed.is_empty() {
            return Ok(VersionsChange {
                versions: changed,
                revision: 0,
            });
        }
        meta.updated_unix_nanos = now;
        batch.put(Space::Secrets, meta_key(id, path), to_json(&meta)?);
        let kind = match op {
            VersionsOp::Delete => EventKind::Deleted,
            VersionsOp::Undelete => EventKind::Undeleted,
            VersionsOp::Destroy => EventKind::Destroyed,
        };
        let revision = self.record_event(
            id,
            &mut batch,
            Event::new(kind, path.as_str(), changed.clone(), now),
        )?;
        self.data.write(batch)?;
        Ok(VersionsChange {
            versions: changed,
            revision: revision.revision,
        })
    }

    fn metadata_view(
        &self,
        id: TenantId,
        path: &SecretPath,
        meta: &SecretMeta,
    ) -> Result<SecretMetadata> {
        Ok(SecretMetadata {
            path: path.to_string(),
            current_version: meta.current_version,
            oldest_version: meta.versions.keys().next().copied().unwrap_or(0),
            created_unix_nanos: meta.created_unix_nanos,
            updated_unix_nanos: meta.updated_unix_nanos,
            max_versions: meta.max_versions,
            effective_max_versions: self.keep_versions(id, meta)?,
            cas_required: meta.cas_required,
            custom: meta.custom.clone(),
            expires_at_unix_nanos: meta.expires_at_unix_nanos,
            rotate_by_unix_nanos: meta.rotate_by_unix_nanos,
            versions: meta
                .versions
                .iter()
                .map(|(version, info)| VersionInfo {
                    version: *version,
                    created_unix_nanos: info.created_unix_nanos,
                    deleted_unix_nanos: info.deleted_unix_nanos,
                    destroyed: info.destroyed,
                    author: info.author.clone(),
                })
                .collect(),
        })
    }

    /// When the tenant's earliest alarm goes off, if it has any.
    pub(super) fn first_alarm(&self, id: TenantId) -> Result<Option<i64>> {
        let prefix = schema::alarm_prefix(id);
        match self.data.scan(Space::Secrets, &prefix, &prefix, 1)?.first() {
            Some((key, _)) => key
                .get(prefix.len()..prefix.len() + 8)
                .and_then(|bytes| bytes.try_into().ok())
                .map(|bytes| i64::try_from(u64::from_be_bytes(bytes)).unwrap_or(i64::MAX))
                .map(Some)
                .ok_or_else(|| corrupt("an expiry alarm key")),
            None => Ok(None),
        }
    }

    /// Sends the tenant's due expiry notices (at most [`ALARMS_PER_ROUND`]): each is an event,
    /// audited as the vault first, written with the next alarm in one write.
    pub(super) fn expire_due(&self, id: TenantId, now: i64) -> Result<usize> {
        let prefix = schema::alarm_prefix(id);
        let due = |key: &[u8]| -> Result<bool> {
            let at = key
                .get(prefix.len()..prefix.len() + 8)
                .and_then(|bytes| bytes.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt("an expiry alarm key"))?;
            Ok(at <= now.max(0) as u64)
        };
        // The earliest alarm decides whether to read on.
        match self.data.scan(Space::Secrets, &prefix, &prefix, 1)?.first() {
            Some((key, _)) if due(key)? => {}
            _ => return Ok(0),
        }
        let page = self
            .data
            .scan(Space::Secrets, &prefix, &prefix, ALARMS_PER_ROUND)?;
        let mut sent = 0;
        for (key, _) in page {
            if !due(&key)? {
                break;
            }
            let path = key
                .get(prefix.len() + 10..)
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .and_then(|text| SecretPath::parse(text).ok())
                .ok_or_else(|| corrupt("an expiry alarm key"))?;
            let _guard = lock(self.stripe(id, path.as_str()));
            let mut batch = WriteBatch::new();
            batch.delete(Space::Secrets, key.clone());
            let Some(mut meta) = self.load_meta(id, &path)? else {
                self.data.write(batch)?;
                continue;
            };
            let Some(position) = meta
                .alarms
                .iter()
                .position(|alarm| alarm_key(id, &path, alarm) == key)
            else {
                // Stale: the deadline changed since.
                self.data.write(batch)?;
                continue;
            };
            let alarm = meta.alarms.remove(position);
            let deadline = meta.deadline(alarm.deadline);
            let kind = match alarm.phase {
                Phase::Expiring => EventKind::Expiring,
                Phase::Expired => EventKind::Expired,
            };
            self.audit_vault(
                id,
                format!(
                    "secret {path} {} ({} {})",
                    kind.as_str(),
                    alarm.deadline.name(),
                    rfc3339(deadline)
                ),
            )?;
            if alarm.phase == Phase::Expiring {
                let next = Alarm {
                    at_unix_nanos: deadline,
                    phase: Phase::Expired,
                    deadline: alarm.deadline,
                };
                batch.put(Space::Secrets, alarm_key(id, &path, &next), Vec::new());
                meta.alarms.push(next);
            }
            batch.put(Space::Secrets, meta_key(id, &path), to_json(&meta)?);
            let mut event = Event::new(kind, path.as_str(), vec![meta.current_version], now)
                .with_detail(alarm.deadline.name());
            event.deadline_unix_nanos = deadline;
            let _revision = self.record_event(id, &mut batch, event)?;
            self.data.write(batch)?;
            sent += 1;
        }
        Ok(sent)
    }

    /// [`Vault::list`], also returning how many entries it read from storage.
    pub(super) fn list_counting(
        &self,
        id: TenantId,
        prefix: &FolderPrefix,
        page_size: usize,
        page_token: &str,
        recursive: bool,
    ) -> Result<(ListPage, usize)> {
        let _keyring = self.keyring()?;
        let page_size = super::page_size(page_size)?;
        // Read first: every change up to it is in the listing (watch from it to follow on).
        let revision = self.committed_revision(id)?;
        let mut base = meta_prefix(id);
        base.extend_from_slice(prefix.as_str().as_bytes());
        let mut cursor = base.clone();
        cursor.extend_from_slice(
            &URL_SAFE_NO_PAD
                .decode(page_token)
                .map_err(|_| Error::invalid("page_token", "not a token from a previous page"))?,
        );

        let mut keys = Vec::new();
        let mut next_page_token = None;
        let mut read = 0;
        // One more than the page, so that a full page knows whether another follows.
        let mut batch = page_size + 1;
        'scan: loop {
            let entries = self.data.scan(Space::Secrets, &base, &cursor, batch)?;
            read += entries.len();
            let exhausted = entries.len() < batch;
            for (key, _) in &entries {
                let relative = &key[base.len()..];
                if keys.len() == page_size {
                    next_page_token = Some(URL_SAFE_NO_PAD.encode(relative));
                    break 'scan;
                }
                let name = std::str::from_utf8(relative).map_err(|_| corrupt("a secret path"))?;
                match name.find('/') {
                    Some(slash) if !recursive => {
                        keys.push(name[..=slash].to_owned());
                        // Skip the folder's subtree: '0' is the byte after '/'.
                        cursor = base.clone();
                        cursor.extend_from_slice(&relative[..slash]);
                        cursor.push(b'/' + 1);
                        batch = 1;
                        continue 'scan;
                    }
                    _ => {
                        keys.push(name.to_owned());
                        cursor = key.clone();
                        cursor.push(0);
                    }
                }
            }
            if exhausted {
                break;
            }
            batch = (batch * 2).min(page_size + 1 - keys.len()).max(1);
        }
        Ok((
            ListPage {
                keys,
                next_page_token,
                revision,
            },
            read,
        ))
    }
}

/// A tenant's versioned secrets: put, patch, get, list, delete, undelete, destroy, metadata, as `vault.secrets()` hands them out. The view derefs to the vault for the
/// helpers the operations share with the other subsystems.
pub struct Secrets<'a> {
    vault: &'a Vault,
}

impl std::ops::Deref for Secrets<'_> {
    type Target = Vault;

    fn deref(&self) -> &Vault {
        self.vault
    }
}

impl Vault {
    /// A tenant's versioned secrets: put, patch, get, list, delete, undelete, destroy, metadata.
    pub fn secrets(&self) -> Secrets<'_> {
        Secrets { vault: self }
    }
}

impl Secrets<'_> {
    /// Writes a new version of the secret: a fresh DEK wrapped under the tenant's current KEK,
    /// all fields sealed together under the DEK, metadata, version and feed event in one write.
    pub fn put(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        path: &SecretPath,
        data: SecretData,
    ) -> Result<PutOutcome> {
        self.put_checked(caller, tenant, path, data, None)
    }

    /// [`Vault::put`] with check-and-set: `cas` is the version the caller expects to be
    /// current (0: the secret must not exist). A mismatch writes nothing.
    pub fn put_checked(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        path: &SecretPath,
        data: SecretData,
        cas: Option<u64>,
    ) -> Result<PutOutcome> {
        self.check_data(&data)?;
        let keyring = self.keyring()?;
        let id = self
            .authorize(caller, tenant, path.as_str(), Capability::Write)?
            .tenant();
        let _guard = lock(self.stripe(id, path.as_str()));
        let meta = self.load_meta(id, path)?;
        self.write_version(&keyring, caller, id, path, meta, data, cas)
    }

    /// Writes a new version whose fields are the current version's with `changes` applied:
    /// fields in `changes` are set, fields in `remove` dropped. The current version must be
    /// readable (not deleted, destroyed or expired).
    pub fn patch(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        path: &SecretPath,
        changes: SecretData,
        remove: &[String],
        cas: Option<u64>,
    ) -> Result<PutOutcome> {
        if changes.is_empty() && remove.is_empty() {
            return Err(Error::invalid(
                "data",
                "a patch sets or removes at least one field",
            ));
        }
        for name in remove {
            check_field_name(name).map_err(|_| Error::invalid("remove", "not a field name"))?;
        }
        let keyring = self.keyring()?;
        let id = self
            .authorize(caller, tenant, path.as_str(), Capability::Write)?
            .tenant();
        let _guard = lock(self.stripe(id, path.as_str()));
        let meta = self.existing_meta(id, path)?;
        let current = meta.current_version;
        self.check_readable(path, &meta, current)?;
        let existing = self.open_version(&keyring, id, path, current)?;
        let mut merged = SecretData::new();
        let mut changes: BTreeMap<String, _> = changes.into_fields().collect();
        for (name, value) in existing.data.into_fields() {
            if remove.contains(&name) || changes.contains_key(&name) {
                continue;
            }
            merged.insert(name, value);
        }
        for (name, value) in std::mem::take(&mut changes) {
            merged.insert(name, value);
        }
        self.check_data(&merged)?;
        self.write_version(&keyring, caller, id, path, Some(meta), merged, cas)
    }

    /// Reads a version of the secret (0: the current one).
    pub fn get(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        path: &SecretPath,
        version: u64,
    ) -> Result<SecretVersion> {
        let keyring = self.keyring()?;
        let id = self
            .authorize(caller, tenant, path.as_str(), Capability::Read)?
            .tenant();
        let meta = self.existing_meta(id, path)?;
        let version = if version == 0 {
            meta.current_version
        } else {
            version
        };
        self.check_readable(path, &meta, version)?;
        self.open_version(&keyring, id, path, version)
    }

    /// Soft-deletes versions (none named: the current one). They read as NOT_FOUND until
    /// undeleted; their ciphertext stays.
    pub fn delete(&self, caller: &Caller, tenant: &TenantName, path: &SecretPath) -> Result<()> {
        self.delete_versions(caller, tenant, path, &[]).map(drop)
    }

    pub fn delete_versions(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        path: &SecretPath,
        versions: &[u64],
    ) -> Result<VersionsChange> {
        self.change_versions(caller, tenant, path, versions, VersionsOp::Delete)
    }

    /// Restores soft-deleted versions.
    pub fn undelete_versions(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        path: &SecretPath,
        versions: &[u64],
    ) -> Result<VersionsChange> {
        self.change_versions(caller, tenant, path, versions, VersionsOp::Undelete)
    }

    /// Destroys versions: their wrapped DEK and ciphertext are deleted. Irreversible.
    pub fn destroy_versions(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        path: &SecretPath,
        versions: &[u64],
    ) -> Result<VersionsChange> {
        self.change_versions(caller, tenant, path, versions, VersionsOp::Destroy)
    }

    /// Removes the secret: its metadata and every version, in one atomic write. The next put
    /// starts again at version 1.
    pub fn delete_metadata(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        path: &SecretPath,
    ) -> Result<VersionsChange> {
        let _keyring = self.keyring()?;
        let id = self
            .authorize(caller, tenant, path.as_str(), Capability::Delete)?
            .tenant();
        let _guard = lock(self.stripe(id, path.as_str()));
        let meta = self.existing_meta(id, path)?;
        let prefix = versions_prefix(id, path);
        let mut batch = WriteBatch::new();
        let mut destroyed = Vec::new();
        let mut start = prefix.clone();
        loop {
            let entries = self.data.scan(Space::Secrets, &prefix, &start, 1024)?;
            let Some((last, _)) = entries.last() else {
                break;
            };
            start = last.clone();
            start.push(0);
            for (key, _) in entries {
                destroyed.push(version_number(&key, prefix.len())?);
                batch.delete(Space::Secrets, key);
            }
        }
        for alarm in &meta.alarms {
            batch.delete(Space::Secrets, alarm_key(id, path, alarm));
        }
        batch.delete(Space::Secrets, meta_key(id, path));
        let revision = self.record_event(
            id,
            &mut batch,
            Event::new(
                EventKind::Destroyed,
                path.as_str(),
                destroyed.clone(),
                self.now(),
            )
            .with_detail("metadata and all versions deleted"),
        )?;
        self.data.write(batch)?;
        Ok(VersionsChange {
            versions: destroyed,
            revision: revision.revision,
        })
    }

    pub fn read_metadata(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        path: &SecretPath,
    ) -> Result<SecretMetadata> {
        let _keyring = self.keyring()?;
        let id = self
            .authorize(caller, tenant, path.as_str(), Capability::Read)?
            .tenant();
        let meta = self.existing_meta(id, path)?;
        self.metadata_view(id, path, &meta)
    }

    /// Changes a secret's settings: max versions (lowering it prunes at once), check-and-set,
    /// custom metadata and deadlines.
    pub fn update_metadata(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        path: &SecretPath,
        update: MetadataUpdate,
    ) -> Result<SecretMetadata> {
        if let Some(max) = update.max_versions
            && max > super::tenants::MAX_DEFAULT_VERSIONS
        {
            return Err(Error::invalid(
                "max_versions",
                format!("at most {}", super::tenants::MAX_DEFAULT_VERSIONS),
            ));
        }
        for (field, deadline) in [
            ("expires_at", update.expires_at_unix_nanos),
            ("rotate_by", update.rotate_by_unix_nanos),
        ] {
            if deadline.is_some_and(|at| at < 0) {
                return Err(Error::invalid(field, "must not be before 1970"));
            }
        }
        let _keyring = self.keyring()?;
        let id = self
            .authorize(caller, tenant, path.as_str(), Capability::Write)?
            .tenant();
        if update.max_versions.is_some() {
            // Lowering it destroys versions, which takes delete.
            self.authorize(caller, tenant, path.as_str(), Capability::Delete)?
                .tenant();
        }
        let _guard = lock(self.stripe(id, path.as_str()));
        let mut meta = self.existing_meta(id, path)?;
        let now = self.now();
        let mut batch = WriteBatch::new();
        if let Some(max) = update.max_versions {
            meta.max_versions = max;
        }
        if let Some(required) = update.cas_required {
            meta.cas_required = required;
        }
        for name in &update.remove_custom {
            meta.custom.remove(name);
        }
        for (key, value) in update.custom {
            if key.is_empty() || key.len() > MAX_CUSTOM_KEY_LEN {
                return Err(Error::invalid(
                    "custom",
                    format!("keys are 1 to {MAX_CUSTOM_KEY_LEN} bytes"),
                ));
            }
            if value.len() > MAX_CUSTOM_VALUE_LEN {
                return Err(Error::invalid(
                    "custom",
                    format!("value of {key:?} is longer than {MAX_CUSTOM_VALUE_LEN} bytes"),
                ));
            }
            meta.custom.insert(key, value);
        }
        if meta.custom.len() > MAX_CUSTOM_ENTRIES {
            return Err(Error::invalid(
                "custom",
                format!("at most {MAX_CUSTOM_ENTRIES} entries"),
            ));
        }
        // Only a deadline that changes gets new alarms: the other's notices are not re-sent.
        let mut changed = Vec::new();
        if let Some(at) = update.expires_at_unix_nanos
            && at != meta.expires_at_unix_nanos
        {
            meta.expires_at_unix_nanos = at;
            changed.push(Deadline::ExpiresAt);
        }
        if let Some(at) = update.rotate_by_unix_nanos
            && at != meta.rotate_by_unix_nanos
        {
            meta.rotate_by_unix_nanos = at;
            changed.push(Deadline::RotateBy);
        }
        let mut earliest_alarm = None;
        {
            let (stale, kept): (Vec<Alarm>, Vec<Alarm>) = std::mem::take(&mut meta.alarms)
                .into_iter()
                .partition(|alarm| changed.contains(&alarm.deadline));
            meta.alarms = kept;
            for alarm in stale {
                batch.delete(Space::Secrets, alarm_key(id, path, &alarm));
            }
            for deadline in changed {
                let at = meta.deadline(deadline);
                if at == 0 {
                    continue;
                }
                let lead = self.config.feed.expiry_lead_nanos;
                let alarm = if now < at {
                    Alarm {
                        at_unix_nanos: at.saturating_sub(lead).max(now),
                        phase: Phase::Expiring,
                        deadline,
                    }
                } else {
                    Alarm {
                        at_unix_nanos: at,
                        phase: Phase::Expired,
                        deadline,
                    }
                };
                batch.put(Space::Secrets, alarm_key(id, path, &alarm), Vec::new());
                earliest_alarm = Some(
                    earliest_alarm
                        .map_or(alarm.at_unix_nanos, |at: i64| at.min(alarm.at_unix_nanos)),
                );
                meta.alarms.push(alarm);
            }
        }
        let pruned = self.prune_versions(id, path, &mut meta, &mut batch)?;
        meta.updated_unix_nanos = now;
        batch.put(Space::Secrets, meta_key(id, path), to_json(&meta)?);
        let _revision = if pruned.is_empty() {
            None
        } else {
            Some(
                self.record_event(
                    id,
                    &mut batch,
                    Event::new(EventKind::Destroyed, path.as_str(), pruned, now)
                        .with_detail("pruned past max_versions"),
                )?,
            )
        };
        self.data.write(batch)?;
        // After the write: a round that takes the expiry unit from now on reads the alarm.
        if let Some(at) = earliest_alarm {
            self.note_due(Unit::Expiry, id, at);
        }
        self.metadata_view(id, path, &meta)
    }

    /// Lists one level below `prefix` (folders end in `/`), or every secret below it when
    /// `recursive`. A page of plain entries reads `page_size + 1` entries from storage. Each
    /// folder is skipped with one seek; after a folder the scan probes one entry at a time and
    /// doubles its batch while it finds plain entries, so a page reads at most about twice the
    /// entries it returns, plus one.
    pub fn list(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        prefix: &FolderPrefix,
        page_size: usize,
        page_token: &str,
        recursive: bool,
    ) -> Result<ListPage> {
        // The id the check authorized is the one listed: resolving the name again could reach
        // a tenant deleted and re-created under the same name in between.
        let id = self
            .authorize(caller, tenant, prefix.as_str(), Capability::List)?
            .tenant();
        let (mut page, _) = self.list_counting(id, prefix, page_size, page_token, recursive)?;
        if !caller.system {
            // Names under a denied path stay hidden, even inside a listable folder.
            page.keys.retain(|key| {
                let full = format!("{}{key}", prefix.as_str());
                // MFA, if the listing needed it, was checked above.
                !matches!(
                    decide(&caller.policies, &full, Capability::List),
                    Decision::Deny(_)
                )
            });
        }
        Ok(page)
    }
}
