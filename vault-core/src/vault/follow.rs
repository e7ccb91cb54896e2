//! What a standby node learns from the stores' change stream (an etcd watch): every record
//! another node changed that this node caches is forgotten or read again, so that a standby can
//! serve reads from its caches as truly as the active node.
//!
//! The caches and how each stays true:
//!
//! | cache | records | on a change |
//! |---|---|---|
//! | tenant names and live tenants (settings, networks, rate limits) | `tenant/`, `tenant-id/`, `tenant-deleted/` | forgotten (read again on next use) |
//! | a tenant's KEK versions | `kek/<tenant>/`, `kek-state/<tenant>`, `shredded/<tenant>` | read again: versions still stored keep their unwrapped key, versions gone (retired, destroyed) are dropped |
//! | named keys | `kmsc/<tenant>/<name>`, `kmsv/<tenant>/<name>/` | read again alike |
//! | the seal configuration | `seal/config` | read again; a root key this node does not hold (a root rotation) stops it from serving reads until it is unsealed again |
//!
//! | token records, the accessor index, policies, secrets' metadata (the data store's hot records) | `token/`, `accessor/`, `policy/`, `t/<tenant>/m/` | forgotten (the data store forgets them too on this node's own writes; while the watch is down none is served) |
//!
//! Not cached, so nothing to do: AppRoles, MFA enrolments, JWT configurations, secrets'
//! versions (read from the store on every call). Use counts
//! (`kek-count/`, `kmsn/`, `sys/root-count/`) are the active node's reservations; a standby takes
//! no uses, and a node that becomes active drops every cache anyway
//! ([`Vault::drop_caches`]).
//!
//! Loads and forgetting are ordered by the lock each cache's loads hold while they read the store
//! (the tenant maps' write locks, `key_changes`, `kms_changes`): a change seen here was committed
//! before it is seen, so a load that reads after the forgetting reads the change, and a load
//! that read before it inserted before it, and is forgotten.

use std::sync::atomic::Ordering;

use crate::{
    kms::KeyName,
    names::{TenantId, TenantName},
    schema::{SEAL_CONFIG_KEY, Store},
    storage::Space,
};

use super::{SealConfig, State, Vault, from_json, read, write};

/// A record the caches depend on.
enum Cached {
    TenantName(TenantName),
    TenantId(TenantId),
    Keks(TenantId),
    NamedKey(TenantId, KeyName),
    SealConfig,
}

fn tenant_of(rest: &[u8]) -> Option<TenantId> {
    let hex = rest.get(..16)?;
    TenantId::parse_hex(std::str::from_utf8(hex).ok()?)
}

/// Which cache a changed record feeds, if any.
fn classify(store: Store, space: Space, key: &[u8]) -> Option<Cached> {
    if space != Space::Config {
        return None;
    }
    let after = |prefix: &[u8]| key.strip_prefix(prefix);
    match store {
        Store::Data => {
            if let Some(name) = after(b"tenant/") {
                let name = TenantName::parse(std::str::from_utf8(name).ok()?).ok()?;
                Some(Cached::TenantName(name))
            } else if let Some(rest) = after(b"tenant-id/").or_else(|| after(b"tenant-deleted/")) {
                tenant_of(rest).map(Cached::TenantId)
            } else {
                None
            }
        }
        Store::Keys => {
            if key == SEAL_CONFIG_KEY {
                Some(Cached::SealConfig)
            } else if let Some(rest) = after(b"kek/")
                .or_else(|| after(b"kek-state/"))
                .or_else(|| after(b"shredded/"))
            {
                tenant_of(rest).map(Cached::Keks)
            } else if let Some(rest) = after(b"kmsc/").or_else(|| after(b"kmsv/")) {
                let tenant = tenant_of(rest)?;
                let name = rest.get(17..)?;
                let name = name.split(|b| *b == b'/').next()?;
                let name = KeyName::parse(std::str::from_utf8(name).ok()?).ok()?;
                Some(Cached::NamedKey(tenant, name))
            } else {
                None
            }
        }
    }
}

impl Vault {
    /// Brings this node's caches up to a record changed (put or deleted) at `key` of `store`.
    /// Cheap for records nothing caches (most changes: secrets, tokens). An error (the store
    /// could not be read) leaves the caches unknown: the caller reloads them
    /// ([`Vault::reload_followed`]).
    pub fn follow_change(&self, store: Store, space: Space, key: &[u8]) -> crate::Result<()> {
        if store == Store::Data {
            // Token records, the accessor index and policies (the data store's hot records).
            self.data.forget(space, key);
        }
        let Some(cached) = classify(store, space, key) else {
            return Ok(());
        };
        match cached {
            Cached::TenantName(name) => {
                self.tenant_registry.forget_name(&name);
                Ok(())
            }
            Cached::TenantId(id) => {
                self.tenant_registry.forget_id(id);
                Ok(())
            }
            Cached::Keks(tenant) => {
                // The state's guard is dropped before the KEK lock is taken (root rotation
                // takes them the other way round).
                let Some(keyring) = self.unsealed_keyring() else {
                    return Ok(());
                };
                let changes = self.hold_key_changes();
                if !read(&keyring.tenants).contains_key(&tenant) {
                    return Ok(());
                }
                if let Err(error) = self.reload_tenant_keys(&changes, &keyring, tenant) {
                    tracing::debug!(%error, %tenant, "a changed tenant's KEKs are read again on next use");
                    write(&keyring.tenants).remove(&tenant);
                }
                Ok(())
            }
            Cached::NamedKey(tenant, name) => {
                let Some(keyring) = self.unsealed_keyring() else {
                    return Ok(());
                };
                let changes = self.hold_kms_changes();
                let cache_key = (tenant, name);
                if !read(&keyring.named).contains_key(&cache_key) {
                    return Ok(());
                }
                let (tenant, name) = cache_key;
                if self
                    .load_named_key(&changes, &keyring, tenant, &name)
                    .is_err()
                {
                    write(&keyring.named).remove(&(tenant, name));
                }
                Ok(())
            }
            Cached::SealConfig => self.follow_seal_config(),
        }
    }

    /// Drops every cache and reads the seal configuration again: for a node whose view of the
    /// changes has a gap (its watch was compacted past, or a change could not be applied).
    pub fn reload_followed(&self) -> crate::Result<()> {
        self.drop_caches();
        self.follow_seal_config()
    }

    /// Whether token records and policies may be served from memory (see
    /// [`crate::stores::DataStore::set_hot_records_trusted`]): not while this node's watch of
    /// other nodes' writes is down.
    pub fn set_hot_records_trusted(&self, trusted: bool) {
        self.data.set_hot_records_trusted(trusted);
    }

    /// The keyring in force, if unsealed; it takes only the state's lock (not the seal
    /// configuration's, as `keyring()` does), so a holder of that lock may call it.
    pub(super) fn unsealed_keyring(&self) -> Option<std::sync::Arc<super::Keyring>> {
        match &*read(&self.state) {
            State::Unsealed(keyring) => Some(std::sync::Arc::clone(keyring)),
            State::Sealed { .. } => None,
        }
    }

    /// Whether this node's keys are those in force: unsealed, holding the current root key. A
    /// standby that is not (another node rotated the root key) forwards reads instead of
    /// serving them, and does not campaign, until it is sealed and unsealed again.
    pub fn follows(&self) -> bool {
        matches!(&*read(&self.state), State::Unsealed(_))
            && !self.root_behind.load(Ordering::Acquire)
    }

    /// Whether tenants' rate limits are kept by another node (this one is a standby): calls by
    /// the tokens of a rate-limited tenant then fail [`crate::Error::NotActive`] here, for the
    /// server to relay, so that several nodes never multiply a tenant's limit.
    pub fn set_limits_elsewhere(&self, elsewhere: bool) {
        self.limits_elsewhere.store(elsewhere, Ordering::Release);
    }

    pub(super) fn limits_elsewhere(&self) -> bool {
        self.limits_elsewhere.load(Ordering::Acquire)
    }

    fn follow_seal_config(&self) -> crate::Result<()> {
        let Some(bytes) = self.keys.get(Space::Config, SEAL_CONFIG_KEY)? else {
            return Ok(());
        };
        let fresh = from_json::<SealConfig>(&bytes, "the seal configuration")?;
        if let State::Unsealed(keyring) = &*read(&self.state)
            && keyring.root_version != fresh.root_key_version
        {
            tracing::warn!(
                held = keyring.root_version,
                current = fresh.root_key_version,
                "another node rotated the root key; this node forwards reads until it is unsealed again"
            );
            self.root_behind.store(true, Ordering::Release);
        }
        *write(&self.seal_config) = Some(fresh);
        Ok(())
    }
}
