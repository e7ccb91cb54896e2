//! Crypto-shredding of deleted tenants, and restoring a tenant before its keys are destroyed.
//!
//! A deleted tenant's record waits under `tenant-deleted/<id>` with the time its keys may be
//! destroyed. Once that time has passed, a maintenance round destroys them:
//!
//! 1. an audit record announces the destruction (the job does not go on without it);
//! 2. one key-store write deletes every key-store range of the tenant
//!    ([`crate::schema::tenant_ranges`]: KEK versions, use counts, lifecycle record, named
//!    keys) and puts a tombstone (`shredded/<id>`: name and times, no key), which stays;
//! 3. the key store is compacted, so the sealed blobs are gone from its files (`compact`
//!    flushes every column family, so the write-ahead log holding the old writes is obsolete
//!    and removed, and forces a bottommost compaction, so no table file keeps them);
//!    Then every key backup the vault keeps (`--key-backup-dir`) is rewritten without the
//!    tenant's key-store ranges ([`Vault::purge_key_backups`]);
//! 4. the tenant's data-store ranges (ciphertext and configuration) are deleted (hygiene: they
//!    are unreadable already);
//! 5. the receipt goes to the audit log, and only then is `tenant-deleted/<id>` removed.
//!
//! The tenant's records under global keys (tokens, refresh families, secret ids, MFA
//! enrolments of its entities, named-key schedule entries; see
//! [`crate::schema::GLOBAL_RECORDS`]) are not looked for here: the maintenance purge, paged and
//! bounded per round, removes them once the tombstone is there.
//!
//! A crash anywhere repeats the remaining steps in the next round (the tombstone says step 2 is
//! done); at worst the receipt is written twice, never not at all.
//!
//! A stale copy of the data store opened with the current key store finds the tombstone: its
//! reads of the tenant answer FAILED_PRECONDITION "... were destroyed (crypto-shredded) ...".
//! The tenant's tokens are refused from the deletion on (its record is gone) and purged later.
//!
//! Invariant: restore and the decision to destroy both hold the tenant-change lock ([`tenants::TenantRegistry::hold`]), so a tenant is
//! never both restored and shredded.

use super::tenants::Tenants;
use super::*;
use super::{
    keys::{ShredTombstone, version_suffix},
    tenants::TenantChange,
};
use crate::schema::{
    DELETED_TENANT_PREFIX, Store, deleted_tenant_key, kek_prefix, shredded_key, tenant_id_key,
    tenant_ranges,
};

/// The stated limit every receipt carries (DESIGN.md, crypto-shredding).
pub const SHRED_LIMIT: &str = "limit: a copy of the key store taken before the destruction, \
     together with a threshold of the current unseal shares, still opens this tenant's data; \
     rekey to rule that out";

/// A deleted tenant waiting for its keys to be destroyed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedTenant {
    pub name: TenantName,
    pub id: TenantId,
    pub deleted_unix_nanos: i64,
    pub shred_after_unix_nanos: i64,
}

impl Vault {
    fn deleted_records(&self) -> Result<Vec<TenantRecord>> {
        let prefix = DELETED_TENANT_PREFIX;
        self.data
            .scan(Space::Config, prefix, prefix, usize::MAX)?
            .into_iter()
            .map(|(_, value)| from_json(&value, "a deleted tenant record"))
            .collect()
    }

    /// Destroys the keys of every deleted tenant whose waiting period is over.
    pub(super) fn shred_due(
        &self,
        keyring: &Keyring,
        now: i64,
        report: &mut MaintenanceReport,
    ) -> Result<()> {
        // One tenant that cannot be shredded now does not hold up the others; the first
        // failure is reported once all were tried.
        let mut first_error = None;
        for record in self.deleted_records()? {
            if record.shred_after_unix_nanos > now {
                continue;
            }
            let result = TenantId::parse_hex(&record.id)
                .ok_or_else(|| corrupt("a tenant record"))
                .and_then(|id| self.shred(keyring, id, now));
            match result {
                Ok(()) => report.shredded += 1,
                Err(error) => {
                    tracing::warn!(tenant = %record.id, %error, "shredding failed; retried next round");
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn shred(&self, keyring: &Keyring, id: TenantId, now: i64) -> Result<()> {
        let tombstone = {
            let change = self.tenant_registry.hold();
            // Restored (or finished) since the scan: nothing to do.
            let Some(bytes) = self.data.get(Space::Config, &deleted_tenant_key(id))? else {
                return Ok(());
            };
            let record: TenantRecord = from_json(&bytes, "a deleted tenant record")?;
            match self.keys.get(Space::Config, &shredded_key(id))? {
                Some(bytes) => from_json::<ShredTombstone>(&bytes, "a shred record")?,
                None => self.destroy_keys(&change, keyring, id, &record, now)?,
            }
        };
        let purge = {
            // No key snapshot is alive while this is held: compaction drops the deleted keys.
            let held = self.hold_key_backups();
            self.keys.compact()?;
            self.purge_key_backups(&held, keyring, id)?
        };
        self.delete_tenant_data(id)?;
        self.drop_feed(id);
        let versions: Vec<String> = tombstone.versions.iter().map(u32::to_string).collect();
        self.audit_vault(
            id,
            format!(
                "crypto-shred receipt: tenant {} (id {id}), deleted at {}; KEK versions {} \
                 destroyed at {} and the key store compacted{}, so its data cannot be read from \
                 the vault or from any copy of the data store; {SHRED_LIMIT}",
                tombstone.name,
                crate::time::rfc3339(tombstone.deleted_unix_nanos),
                if versions.is_empty() {
                    "(none)".to_owned()
                } else {
                    versions.join(", ")
                },
                crate::time::rfc3339(tombstone.shredded_unix_nanos),
                purge.describe(self.config.key_backup_dir.is_some()),
            ),
        )?;
        let mut batch = WriteBatch::new();
        batch.delete(Space::Config, deleted_tenant_key(id));
        self.data.write(batch)?;
        Ok(())
    }

    /// Step 1 and 2: the announcement, then every key record of the tenant gone and the
    /// tombstone written, in one key-store write, under the tenant-change lock.
    fn destroy_keys(
        &self,
        _change: &TenantChange<'_>,
        keyring: &Keyring,
        id: TenantId,
        record: &TenantRecord,
        now: i64,
    ) -> Result<ShredTombstone> {
        let mut batch = WriteBatch::new();
        let mut versions = Vec::new();
        let kek = kek_prefix(id);
        // Every key-store range of the tenant: KEK versions, their use counts, the lifecycle
        // record and the named keys (wrapped under the KEKs going now). Not the tombstone.
        for range in tenant_ranges(id) {
            if range.store != Store::Keys {
                continue;
            }
            for (key, _) in self
                .keys
                .scan(range.space, &range.prefix, &range.prefix, usize::MAX)?
            {
                if range.prefix == kek {
                    versions.push(version_suffix(&key, kek.len(), "a KEK key")?);
                }
                batch.delete(range.space, key);
            }
        }
        let listed: Vec<String> = versions.iter().map(u32::to_string).collect();
        self.audit_vault(
            id,
            format!(
                "crypto-shredding tenant {} (id {id}): destroying KEK versions {}",
                record.name,
                listed.join(", ")
            ),
        )?;
        let tombstone = ShredTombstone {
            name: record.name.clone(),
            deleted_unix_nanos: record.deleted_unix_nanos,
            shredded_unix_nanos: now,
            versions,
        };
        batch.put(Space::Config, shredded_key(id), to_json(&tombstone)?);
        {
            let _changes = self.hold_key_changes();
            crate::crash_point("shred-before-key-destroy");
            self.keys.write(batch)?;
            crate::crash_point("shred-after-key-destroy");
            write(&keyring.tenants).remove(&id);
            write(&keyring.named).retain(|(tenant, _), _| *tenant != id);
        }
        Ok(tombstone)
    }

    /// Step 4: the tenant's data-store ranges (secrets, feed, webhooks, policies, AppRoles)
    /// are deleted, a page at a time. Its records under global keys go with the purge.
    fn delete_tenant_data(&self, id: TenantId) -> Result<()> {
        for range in tenant_ranges(id) {
            if range.store != Store::Data {
                continue;
            }
            loop {
                let page_size = self.data.batch_limits().max_ops.min(1024);
                let page = self
                    .data
                    .scan(range.space, &range.prefix, &range.prefix, page_size)?;
                if page.is_empty() {
                    break;
                }
                let mut batch = WriteBatch::new();
                for (key, _) in page {
                    batch.delete(range.space, key);
                }
                self.data.write(batch)?;
            }
        }
        Ok(())
    }

    /// Whether the tenant's keys were destroyed: its tombstone is written (from then on it
    /// can never be restored, so its records under global keys are dead).
    pub(super) fn tenant_shredded(&self, id: TenantId) -> Result<bool> {
        Ok(self.keys.get(Space::Config, &shredded_key(id))?.is_some())
    }
}

impl Tenants<'_> {
    /// Deleted tenants whose keys are not destroyed yet (system scope).
    pub fn deleted_tenants(&self, caller: &Caller) -> Result<Vec<DeletedTenant>> {
        require_system(caller)?;
        self.keyring()?;
        self.deleted_records()?
            .into_iter()
            .map(|record| deleted_tenant(&record))
            .collect()
    }

    /// Brings a deleted tenant back before its keys are destroyed (system scope). `id` picks
    /// one when several deleted tenants had the name.
    pub fn restore_tenant(
        &self,
        caller: &Caller,
        name: &TenantName,
        id: Option<TenantId>,
    ) -> Result<TenantInfo> {
        self.require_system_op(caller, SystemOp::TenantDelete)?;
        let keyring = self.keyring()?;
        let _change = self.tenant_registry.hold();
        let mut candidates: Vec<TenantRecord> = self
            .deleted_records()?
            .into_iter()
            .filter(|r| r.name == name.as_str() && id.is_none_or(|id| r.id == id.to_hex()))
            .collect();
        let mut record = match candidates.len() {
            0 => return Err(Error::NotFound(format!("deleted tenant {name}"))),
            1 => candidates.remove(0),
            n => {
                let ids: Vec<&str> = candidates.iter().map(|r| r.id.as_str()).collect();
                return Err(Error::invalid(
                    "id",
                    format!(
                        "{n} deleted tenants were named {name} ({}); name one by id",
                        ids.join(", ")
                    ),
                ));
            }
        };
        if self.data.get(Space::Config, &tenant_key(name))?.is_some() {
            return Err(Error::AlreadyExists(format!(
                "tenant {name} (a new tenant has the name; delete or rename it first)"
            )));
        }
        let id = TenantId::parse_hex(&record.id).ok_or_else(|| corrupt("a tenant record"))?;
        // Under the tenant-change lock, like the decision to destroy: once the tombstone is written
        // (the keys are gone) the record under `tenant-deleted/` only waits for the remaining
        // clean-up steps, and restoring it would bring back a tenant without keys.
        if self.keys.get(Space::Config, &shredded_key(id))?.is_some() {
            return Err(Error::FailedPrecondition(format!(
                "tenant {name} (id {id}) cannot be restored: its keys were destroyed \
                 (crypto-shredded)"
            )));
        }
        record.deleted_unix_nanos = 0;
        record.shred_after_unix_nanos = 0;
        let mut batch = WriteBatch::new();
        batch
            .put(Space::Config, tenant_key(name), to_json(&record)?)
            .put(Space::Config, tenant_id_key(id), name.as_str().as_bytes())
            .delete(Space::Config, deleted_tenant_key(id));
        crate::crash_point("restore-before-commit");
        self.data.write(batch)?;
        crate::crash_point("restore-after-commit");
        // Its units were dropped while it was deleted: every one is due again.
        let now = self.now();
        for unit in super::due::Unit::ALL {
            self.note_due(unit, id, now);
        }
        self.tenant_info(&keyring, record)
    }
}

fn deleted_tenant(record: &TenantRecord) -> Result<DeletedTenant> {
    Ok(DeletedTenant {
        name: TenantName::parse(&record.name).map_err(|_| corrupt("a tenant record"))?,
        id: TenantId::parse_hex(&record.id).ok_or_else(|| corrupt("a tenant record"))?,
        deleted_unix_nanos: record.deleted_unix_nanos,
        shred_after_unix_nanos: record.shred_after_unix_nanos,
    })
}
