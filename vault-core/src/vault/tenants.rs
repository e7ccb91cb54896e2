//! Tenants: create, list, show, update settings, delete.
//!
//! A tenant's settings (allowed networks, rate limit, default versions kept) are set by the
//! system scope, since they constrain the tenant. Deleting a tenant removes its record and its
//! id index in one write and drops it from every cache, so its tokens fail authentication from
//! the next call on; a copy of the record stays under `tenant-deleted/` for crypto-shredding.
//!
//! Invariant: the caches (name -> id, id -> state) are filled under their write lock, with the
//! storage read inside it, and deletion empties them after its write; so a deleted tenant is
//! never brought back into a cache by a load that raced with the deletion.

use std::{net::IpAddr, time::Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::*;
use crate::{
    cidr::Cidr,
    limits::RateLimit,
    schema::{deleted_tenant_key, tenant_id_key},
};

/// Most networks in a tenant's allowlist.
pub const MAX_TENANT_CIDRS: usize = 64;
/// Highest rate limit, in calls per second.
pub const MAX_TENANT_RATE: u32 = 1_000_000;
/// Most versions a tenant may keep per secret by default.
pub const MAX_DEFAULT_VERSIONS: u32 = 10_000;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSettings {
    /// Networks (CIDR) the tenant's tokens may be used from; empty: anywhere.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
    /// Calls per second the tenant's tokens may make together, with bursts of one second's
    /// worth; 0: no limit.
    #[serde(default)]
    pub rate_limit: u32,
    /// Versions kept per secret unless the secret says otherwise; 0: the server default.
    #[serde(default)]
    pub default_max_versions: u32,
    /// Every write of the tenant's secrets must carry check-and-set.
    #[serde(default)]
    pub cas_required: bool,
}

/// A change to a tenant's settings; `None` leaves a setting as it is.
#[derive(Clone, Debug, Default)]
pub struct TenantUpdate {
    pub allowed_cidrs: Option<Vec<String>>,
    pub rate_limit: Option<u32>,
    pub default_max_versions: Option<u32>,
    pub cas_required: Option<bool>,
}

impl TenantSettings {
    fn cidrs(&self) -> Result<Vec<Cidr>> {
        if self.allowed_cidrs.len() > MAX_TENANT_CIDRS {
            return Err(Error::invalid(
                "allowed_cidrs",
                format!("at most {MAX_TENANT_CIDRS} networks"),
            ));
        }
        self.allowed_cidrs
            .iter()
            .map(|text| {
                Cidr::parse(text).map_err(|_| {
                    Error::invalid(
                        "allowed_cidrs",
                        format!("{text:?} is not a network such as 10.0.0.0/8"),
                    )
                })
            })
            .collect()
    }

    fn validate(&self) -> Result<()> {
        self.cidrs()?;
        if self.rate_limit > MAX_TENANT_RATE {
            return Err(Error::invalid(
                "rate_limit",
                format!("at most {MAX_TENANT_RATE} calls per second"),
            ));
        }
        if self.default_max_versions > MAX_DEFAULT_VERSIONS {
            return Err(Error::invalid(
                "default_max_versions",
                format!("at most {MAX_DEFAULT_VERSIONS}"),
            ));
        }
        Ok(())
    }
}

/// The tenants the vault knows: names resolved to ids, the live tenants' state, and the lock
/// that orders a tenant's creation, settings changes, deletion, restoration and shredding.
/// Only this module reads the caches; the others ask [`Vault::tenant_id`] and
/// [`Vault::tenant_state`], and take the lock through [`TenantRegistry::hold`].
#[derive(Default)]
pub(super) struct TenantRegistry {
    ids: RwLock<HashMap<TenantName, TenantId>>,
    /// Live tenants by id: name, settings, rate limiter. Deleting a tenant removes its entry.
    live: RwLock<HashMap<TenantId, Arc<TenantState>>>,
    changes: Mutex<()>,
}

/// Proof that the tenant-change lock is held, for as long as this lives.
pub(super) struct TenantChange<'a> {
    _guard: MutexGuard<'a, ()>,
}

impl TenantRegistry {
    /// Forgets every cached name and live tenant; they are read again from the store.
    pub(super) fn forget_all(&self) {
        let _change = self.hold();
        write(&self.ids).clear();
        write(&self.live).clear();
    }

    /// Forgets the tenant cached under `name` (its id and live state), and any live tenant of
    /// that name: another node changed its record.
    pub(super) fn forget_name(&self, name: &TenantName) {
        let mut ids = write(&self.ids);
        let mut live = write(&self.live);
        if let Some(id) = ids.remove(name) {
            live.remove(&id);
        }
        live.retain(|_, state| state.name != *name);
    }

    /// Forgets the tenant with this id (its live state, and any name cached for it).
    pub(super) fn forget_id(&self, id: TenantId) {
        let mut ids = write(&self.ids);
        let mut live = write(&self.live);
        ids.retain(|_, known| *known != id);
        live.remove(&id);
    }

    /// Takes the lock that orders changes to tenants.
    pub(super) fn hold(&self) -> TenantChange<'_> {
        TenantChange {
            _guard: lock(&self.changes),
        }
    }
}

/// A live tenant as authentication sees it.
pub(super) struct TenantState {
    pub(super) name: TenantName,
    pub(super) default_max_versions: u32,
    pub(super) cas_required: bool,
    cidrs: Vec<Cidr>,
    limiter: Option<RateLimit>,
    /// The tenant's own actions that spend root-key uses (MFA enrolment, webhook creation,
    /// KEK rotation): rate limited so that no tenant can run the root key toward its budget.
    root_key_limiter: Option<RateLimit>,
}

impl TenantState {
    fn new(
        name: TenantName,
        settings: &TenantSettings,
        root_key_per_minute: u32,
    ) -> Result<TenantState> {
        Ok(TenantState {
            name,
            default_max_versions: settings.default_max_versions,
            cas_required: settings.cas_required,
            cidrs: settings.cidrs()?,
            limiter: (settings.rate_limit > 0)
                .then(|| RateLimit::new(settings.rate_limit, settings.rate_limit)),
            root_key_limiter: (root_key_per_minute > 0)
                .then(|| RateLimit::per_minute(root_key_per_minute)),
        })
    }

    /// Whether the tenant has a rate limit of its own.
    pub(super) fn rate_limited(&self) -> bool {
        self.limiter.is_some()
    }

    /// Admits one call by a token of this tenant from `source`: inside the tenant's networks
    /// and within its rate limit.
    pub(super) fn admit(&self, source: Option<IpAddr>) -> Result<()> {
        if !self.cidrs.is_empty()
            && !source.is_some_and(|address| self.cidrs.iter().any(|c| c.contains(address)))
        {
            let from = source.map_or_else(|| "an unknown address".to_owned(), |a| a.to_string());
            let allowed: Vec<String> = self.cidrs.iter().map(ToString::to_string).collect();
            return Err(Error::denied(format!(
                "tenant {} allows calls only from {}; this one came from {from}",
                self.name,
                allowed.join(", ")
            )));
        }
        if let Some(limiter) = &self.limiter
            && !limiter.try_take(Instant::now())
        {
            return Err(Error::ResourceExhausted(format!(
                "tenant {} is over its rate limit of {} calls/s",
                self.name,
                limiter.per_second()
            )));
        }
        Ok(())
    }

    /// [`TenantState::admit`] for a login whose credentials checked out: a network refusal is
    /// a failed login (counted and slowed like any other), a rate refusal stays one.
    pub(super) fn admit_login(&self, source: Option<IpAddr>) -> Result<()> {
        self.admit(source).map_err(|e| match e {
            Error::Denied { reason } => Error::login_failed(reason),
            other => other,
        })
    }
}

/// Writes the id index of tenants created before it existed (one batch; nothing if complete).
pub(super) fn index_tenant_ids(data: &DataStore) -> Result<()> {
    let prefix = schema::TENANT_ID_PREFIX;
    let indexed: std::collections::HashSet<Vec<u8>> = data
        .scan(Space::Config, prefix, prefix, usize::MAX)?
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    let mut batch = WriteBatch::new();
    let mut missing = 0;
    for record in tenant_records(data)? {
        let id = TenantId::parse_hex(&record.id).ok_or_else(|| corrupt("a tenant record"))?;
        if !indexed.contains(&tenant_id_key(id)) {
            batch.put(Space::Config, tenant_id_key(id), record.name.into_bytes());
            missing += 1;
        }
    }
    if missing > 0 {
        data.write(batch)?;
    }
    Ok(())
}

/// Every tenant record, in name order.
fn tenant_records(data: &DataStore) -> Result<Vec<TenantRecord>> {
    let mut records = Vec::new();
    let prefix = schema::TENANT_PREFIX;
    let mut start = prefix.to_vec();
    loop {
        let page = data.scan(Space::Config, prefix, &start, 256)?;
        let Some((last, _)) = page.last() else { break };
        start = last.clone();
        start.push(0);
        for (_, value) in &page {
            records.push(from_json(value, "a tenant record")?);
        }
    }
    Ok(records)
}

impl Vault {
    fn tenant_record(&self, name: &TenantName) -> Result<TenantRecord> {
        let bytes = self
            .data
            .get(Space::Config, &tenant_key(name))?
            .ok_or_else(|| Error::NotFound(format!("tenant {name}")))?;
        from_json(&bytes, "a tenant record")
    }

    /// Every tenant record, in name order.
    pub(super) fn tenant_records(&self) -> Result<Vec<TenantRecord>> {
        tenant_records(&self.data)
    }

    /// One page of tenant records in name order, and the token of the next page: the last
    /// name of this one, encoded (`None` on the last page). One read of the store.
    pub(super) fn tenant_record_page(
        &self,
        page: &PageRequest,
    ) -> Result<(Vec<TenantRecord>, Option<String>)> {
        let size = super::page_size(page.size)?;
        let prefix = schema::TENANT_PREFIX;
        let mut start = prefix.to_vec();
        if !page.token.is_empty() {
            let after = URL_SAFE_NO_PAD
                .decode(&page.token)
                .ok()
                .filter(|name| {
                    std::str::from_utf8(name).is_ok_and(|name| TenantName::parse(name).is_ok())
                })
                .ok_or_else(|| Error::invalid("page_token", "not a token from a previous page"))?;
            start.extend_from_slice(&after);
            start.push(0);
        }
        let entries = self.data.scan(Space::Config, prefix, &start, size + 1)?;
        let more = entries.len() > size;
        let mut records = Vec::with_capacity(entries.len().min(size));
        for (_, value) in entries.iter().take(size) {
            records.push(from_json::<TenantRecord>(value, "a tenant record")?);
        }
        let next = match records.last() {
            Some(last) if more => Some(URL_SAFE_NO_PAD.encode(last.name.as_bytes())),
            _ => None,
        };
        Ok((records, next))
    }

    pub(super) fn tenant_info(
        &self,
        keyring: &Keyring,
        record: TenantRecord,
    ) -> Result<TenantInfo> {
        let name = TenantName::parse(&record.name).map_err(|_| corrupt("a tenant record"))?;
        let id = TenantId::parse_hex(&record.id).ok_or_else(|| corrupt("a tenant record"))?;
        let keys = self.tenant_keys(keyring, id)?;
        Ok(TenantInfo {
            name,
            id,
            created_unix_nanos: record.created_unix_nanos,
            key_version: keys.current,
            settings: record.settings,
        })
    }

    pub(super) fn tenant_id(&self, name: &TenantName) -> Result<TenantId> {
        if let Some(id) = read_now(&self.tenant_registry.ids)?.get(name) {
            return Ok(*id);
        }
        refuse_to_wait()?;
        let mut cache = write(&self.tenant_registry.ids);
        let record = self.tenant_record(name)?;
        let id = TenantId::parse_hex(&record.id).ok_or_else(|| corrupt("a tenant record"))?;
        cache.insert(name.clone(), id);
        Ok(id)
    }

    /// Admits one of a tenant's own actions that seals under the root key (its MFA
    /// enrolments, webhook creations and KEK rotations): at most
    /// [`VaultConfig::tenant_root_key_per_minute`] a minute.
    pub(super) fn admit_root_key_use(&self, tenant: TenantId) -> Result<()> {
        let Some(state) = self.tenant_state(tenant)? else {
            return Err(Error::denied("the tenant was deleted"));
        };
        if let Some(limiter) = &state.root_key_limiter
            && !limiter.try_take(Instant::now())
        {
            return Err(Error::ResourceExhausted(format!(
                "tenant {} is over its limit of {} actions a minute that use the root key \
                 (mfa enrolment, webhook creation, key rotation)",
                state.name, self.config.tenant_root_key_per_minute
            )));
        }
        Ok(())
    }

    /// The live tenant with this id; `None` once it is deleted.
    pub(super) fn tenant_state(&self, id: TenantId) -> Result<Option<Arc<TenantState>>> {
        if let Some(state) = read_now(&self.tenant_registry.live)?.get(&id) {
            return Ok(Some(Arc::clone(state)));
        }
        // Loading holds the registry for writing across storage reads.
        refuse_to_wait()?;
        let mut cache = write(&self.tenant_registry.live);
        let record = match self.data.get(Space::Config, &tenant_id_key(id))? {
            Some(name) => {
                let name = std::str::from_utf8(&name)
                    .ok()
                    .and_then(|n| TenantName::parse(n).ok())
                    .ok_or_else(|| corrupt("a tenant id index entry"))?;
                match self.data.get(Space::Config, &tenant_key(&name))? {
                    Some(bytes) => Some(from_json::<TenantRecord>(&bytes, "a tenant record")?),
                    None => None,
                }
            }
            None => None,
        };
        let Some(record) = record.filter(|r| r.id == id.to_hex()) else {
            return Ok(None);
        };
        let name = TenantName::parse(&record.name).map_err(|_| corrupt("a tenant record"))?;
        let state = Arc::new(TenantState::new(
            name,
            &record.settings,
            self.config.tenant_root_key_per_minute,
        )?);
        cache.insert(id, Arc::clone(&state));
        Ok(Some(state))
    }
}

/// The tenants: create, list, show, update, delete, restore, as `vault.tenants()` hands them out. The view derefs to the vault for the
/// helpers the operations share with the other subsystems.
pub struct Tenants<'a> {
    vault: &'a Vault,
}

impl std::ops::Deref for Tenants<'_> {
    type Target = Vault;

    fn deref(&self) -> &Vault {
        self.vault
    }
}

impl Vault {
    /// The tenants: create, list, show, update, delete, restore.
    pub fn tenants(&self) -> Tenants<'_> {
        Tenants { vault: self }
    }
}

impl Tenants<'_> {
    pub fn create_tenant(
        &self,
        caller: &Caller,
        name: &TenantName,
        settings: TenantSettings,
    ) -> Result<TenantInfo> {
        self.require_system_op(caller, SystemOp::TenantCreate)?;
        settings.validate()?;
        let keyring = self.keyring()?;
        let _change = self.tenant_registry.hold();
        if self.data.get(Space::Config, &tenant_key(name))?.is_some() {
            return Err(Error::AlreadyExists(format!("tenant {name}")));
        }
        let id = TenantId::generate()?;
        let created = self.now();
        // The KEK first: a crash between the two writes leaves an unreachable KEK under a random
        // id, never a tenant without a key.
        let mut key_batch = WriteBatch::new();
        key_batch.put(
            Space::Config,
            schema::kek_key(id, 1),
            self.first_kek(&keyring, id)?,
        );
        self.keys.write(key_batch)?;
        let record = TenantRecord {
            id: id.to_hex(),
            name: name.as_str().to_owned(),
            created_unix_nanos: created,
            settings: settings.clone(),
            deleted_unix_nanos: 0,
            shred_after_unix_nanos: 0,
        };
        let mut data_batch = WriteBatch::new();
        data_batch
            .put(Space::Config, tenant_key(name), to_json(&record)?)
            .put(Space::Config, tenant_id_key(id), name.as_str().as_bytes());
        self.data.write(data_batch)?;
        if self.config.keys.max_age_nanos > 0 {
            self.note_due(
                super::due::Unit::Sweep,
                id,
                created.saturating_add(self.config.keys.max_age_nanos),
            );
        }
        Ok(TenantInfo {
            name: name.clone(),
            id,
            created_unix_nanos: created,
            key_version: 1,
            settings,
        })
    }

    /// One page of the tenants, in name order, and the token of the next page (`None` on the
    /// last).
    pub fn list_tenants(
        &self,
        caller: &Caller,
        page: &PageRequest,
    ) -> Result<(Vec<TenantInfo>, Option<String>)> {
        require_system(caller)?;
        let keyring = self.keyring()?;
        let (records, next) = self.tenant_record_page(page)?;
        let mut tenants = Vec::with_capacity(records.len());
        for record in records {
            tenants.push(self.tenant_info(&keyring, record)?);
        }
        Ok((tenants, next))
    }

    /// One tenant: for the system scope, or a token with `admin` on the tenant's root.
    pub fn show_tenant(&self, caller: &Caller, name: &TenantName) -> Result<TenantInfo> {
        let keyring = self.keyring()?;
        self.authorize(caller, name, "", Capability::Admin)?
            .tenant();
        let record = self.tenant_record(name)?;
        self.tenant_info(&keyring, record)
    }

    /// Changes a tenant's settings (system scope); they apply from the next call on.
    pub fn update_tenant(
        &self,
        caller: &Caller,
        name: &TenantName,
        update: TenantUpdate,
    ) -> Result<TenantInfo> {
        self.require_system_op(caller, SystemOp::TenantUpdate)?;
        let keyring = self.keyring()?;
        let _change = self.tenant_registry.hold();
        let mut record = self.tenant_record(name)?;
        let settings = &mut record.settings;
        if let Some(cidrs) = update.allowed_cidrs {
            settings.allowed_cidrs = cidrs;
        }
        if let Some(rate) = update.rate_limit {
            settings.rate_limit = rate;
        }
        if let Some(versions) = update.default_max_versions {
            settings.default_max_versions = versions;
        }
        if let Some(required) = update.cas_required {
            settings.cas_required = required;
        }
        settings.validate()?;
        let id = TenantId::parse_hex(&record.id).ok_or_else(|| corrupt("a tenant record"))?;
        let state = Arc::new(TenantState::new(
            name.clone(),
            &record.settings,
            self.config.tenant_root_key_per_minute,
        )?);
        let mut batch = WriteBatch::new();
        batch.put(Space::Config, tenant_key(name), to_json(&record)?);
        self.data.write(batch)?;
        write(&self.tenant_registry.live).insert(id, state);
        self.tenant_info(&keyring, record)
    }

    /// Deletes a tenant (system scope): from the next call on, its tokens are refused and its
    /// name is free. Its keys are destroyed after the waiting period (crypto-shredding), unless
    /// [`Vault::restore_tenant`] brings it back first. Returns when the keys will be destroyed.
    pub fn delete_tenant(&self, caller: &Caller, name: &TenantName) -> Result<i64> {
        self.require_system_op(caller, SystemOp::TenantDelete)?;
        let keyring = self.keyring()?;
        let _change = self.tenant_registry.hold();
        let mut record = self.tenant_record(name)?;
        let id = TenantId::parse_hex(&record.id).ok_or_else(|| corrupt("a tenant record"))?;
        record.deleted_unix_nanos = self.now();
        record.shred_after_unix_nanos = record
            .deleted_unix_nanos
            .saturating_add(self.config.keys.shred_delay_nanos);
        let mut batch = WriteBatch::new();
        batch
            .delete(Space::Config, tenant_key(name))
            .delete(Space::Config, tenant_id_key(id))
            .put(Space::Config, deleted_tenant_key(id), to_json(&record)?);
        self.data.write(batch)?;
        write(&self.tenant_registry.ids).remove(name);
        write(&self.tenant_registry.live).remove(&id);
        write(&keyring.tenants).remove(&id);
        Ok(record.shred_after_unix_nanos)
    }
}
