//! Access control: authenticating tokens, authorizing each operation, and the token and policy
//! operations.
//!
//! Invariant: every tenant operation starts with [`Vault::authorize`], which returns the
//! tenant id the operation needs, so skipping the check leaves nothing to work with. A tenant
//! token naming another tenant is denied whether or not that tenant exists.
//!
//! Tokens. The root token (from init) has the system scope. A tenant token belongs to one
//! tenant and carries policy names, a TTL, a maximum life and a parent; a token creates only
//! tokens of its own tenant, with a subset of its policies, living no longer than itself, and
//! at most `--max-token-children` live children. Tokens are looked up by their keyed hash
//! (`crate::token::TokenHasher`, `token/<hash>`) and the stored hash is compared in constant
//! time.
//!
//! Authentication walks the token's ancestors (`Vault::check_alive`): a token is alive only
//! while every token above it is unexpired and still indexed by its accessor, and the call
//! comes from every network (`cidrs`) bound along the chain, checked against the call's source
//! (the peer, or for a trusted proxy the client it forwarded for). It then looks the token's
//! tenant up by id and admits the call inside the tenant's networks and rate limit.
//!
//! Creation, renewal, revocation and logins are serialized per tenant (`token_changes`), and
//! each re-reads what it changes. Revocation deletes the token itself in one write (its whole
//! subtree is refused from then on), then its descendants in pages of [`REVOKE_PAGE`]; the
//! purge (`purge.rs`) removes what a crash left half way.
//!
//! Denials. Every denial reaches the client as PERMISSION_DENIED "permission denied"; the failed
//! check goes into the audit record's `detail` (`Error::Denied { reason }`). An unknown token
//! gets the same answer, so a caller cannot tell a missing token from a refused one.

use std::{collections::BTreeSet, time::Duration};

use super::*;
use std::net::IpAddr;

use crate::{
    cidr::Cidr,
    policy::{Decision, PolicyName, decide},
};

/// Default lifetime of a new token, and the longest any token (or chain of renewals) may live.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(32 * 24 * 3600);
/// Most tokens between a token and the root of its family.
pub const MAX_TOKEN_DEPTH: usize = 32;
/// Longest display name.
pub const MAX_DISPLAY_NAME_LEN: usize = 128;
/// What [`Vault::authorize`] grants: a capability in one tenant, whose id the operation then
/// uses (never resolving the tenant's name again, which a delete and re-create could change
/// under it). Its fields are private to this module, so only `authorize` makes one.
#[derive(Clone, Copy, Debug)]
pub(super) struct Authorized {
    tenant: TenantId,
}

impl Authorized {
    /// The tenant the caller was authorized in.
    pub(super) fn tenant(&self) -> TenantId {
        self.tenant
    }
}

/// Tokens deleted per write when a revoked token's subtree is removed.
pub const REVOKE_PAGE: usize = 1000;

use super::login::nanos;
use crate::schema::{
    children_key, children_prefix, policy_key, policy_prefix, token_record_key_hex,
};

/// Whether a liveness check also checks where the call comes from.
#[derive(Clone, Copy)]
pub(super) enum Networks {
    /// At authentication: the peer address (unknown: `None`).
    From(Option<IpAddr>),
    /// Re-checks of a record already authenticated, or of a token acted upon.
    Ignore,
}

pub(super) fn require_system(caller: &Caller) -> Result<()> {
    if caller.system {
        Ok(())
    } else {
        Err(Error::denied("the operation needs the system scope"))
    }
}

/// What a caller asks for when creating a token.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The tenant of a tenant token; `None` for a system-scope token.
    pub tenant: Option<TenantName>,
    pub policies: Vec<PolicyName>,
    /// A system-scope token (only the system scope may create one).
    pub system: bool,
    pub ttl: Option<Duration>,
    pub display_name: String,
    /// Networks the token may be used from (on top of its ancestors' restrictions).
    pub cidrs: Vec<Cidr>,
    /// Also issue a refresh token; the family it starts lives at most this long.
    pub refresh_max_ttl: Option<Duration>,
}

/// A token just created: shown once.
pub struct CreatedToken {
    pub token: Token,
    /// For a token of a refresh family: the refresh token to exchange for the next pair.
    pub refresh_token: Option<Token>,
    pub info: TokenInfo,
}

/// What lookup shows about a token (never the token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub accessor: String,
    pub tenant: Option<TenantName>,
    pub policies: Vec<String>,
    pub system: bool,
    pub parent: String,
    pub display_name: String,
    pub created_unix_nanos: i64,
    /// 0: never.
    pub expires_unix_nanos: i64,
    pub max_expires_unix_nanos: i64,
    pub cidrs: Vec<String>,
    pub entity: String,
    /// The refresh family; empty for a plain token.
    pub family: String,
}

impl Vault {
    /// Checks a presented token: known, unexpired, its tenant still there. Sealed answers
    /// [`Error::Sealed`]; an unknown token [`Error::PermissionDenied`].
    pub fn authenticate(&self, token: &Token) -> Result<Caller> {
        self.authenticate_from(token, None)
    }

    /// [`Vault::authenticate`] for a call from `source` (the connection's peer address). A
    /// token bound to networks, or whose ancestors are, is refused from anywhere else, and
    /// from an unknown source.
    pub fn authenticate_from(&self, token: &Token, source: Option<IpAddr>) -> Result<Caller> {
        let record = self.access().record_of_token(token)?;
        let tenant = match record.tenant.as_str() {
            "" => None,
            hex => Some(TenantId::parse_hex(hex).ok_or_else(|| corrupt("a token record"))?),
        };
        let state = match tenant {
            Some(id) => Some(self.tenant_state(id)?.ok_or_else(|| {
                Error::denied(format!(
                    "token {} belongs to a deleted tenant",
                    record.accessor
                ))
            })?),
            None => None,
        };
        // Before the token's ancestors are read: a standby spends nothing more on a call that
        // the active node must count.
        if let Some(state) = &state
            && self.limits_elsewhere()
            && state.rate_limited()
        {
            return Err(Error::NotActive(format!(
                "tenant {} has a rate limit, which the active node keeps",
                state.name
            )));
        }
        self.check_alive(&record, Networks::From(source))?;
        // Once per call: a no-wait attempt that admitted it and then had to wait does not
        // take a second rate-limit token when the call runs again.
        if let Some(state) = &state
            && !vault_storage::nowait::admitted()
        {
            state.admit(source)?;
            vault_storage::nowait::note_admitted();
        }
        let policies = match tenant {
            Some(id) => self.load_policies(id, &record.policies)?,
            None => Vec::new(),
        };
        Ok(Caller {
            accessor: record.accessor.clone(),
            tenant,
            system: record.system,
            policies,
            record,
            mfa_code: None,
            mfa_verified: Mutex::new(false),
        })
    }

    /// A token is alive while it is unexpired, still indexed by its accessor (revocation removes
    /// both), and every token above it is alive too: expiry and revocation reach the whole
    /// subtree at once.
    pub(super) fn check_alive(&self, record: &TokenRecord, networks: Networks) -> Result<()> {
        let now = self.now();
        let mut parent: Arc<TokenRecord>;
        let mut current = record;
        for _ in 0..=MAX_TOKEN_DEPTH {
            if let Networks::From(source) = networks
                && !Cidr::allows(&current.cidrs, source)
            {
                let from =
                    source.map_or_else(|| "an unknown address".to_owned(), |a| a.to_string());
                return Err(Error::denied(format!(
                    "token {} may not be used from {from} (allowed: {})",
                    record.accessor,
                    current.cidrs.join(", ")
                )));
            }
            if current.expires_unix_nanos != 0 && now >= current.expires_unix_nanos {
                return Err(Error::denied(if current.accessor == record.accessor {
                    format!("token {} expired", record.accessor)
                } else {
                    format!(
                        "token {} expired with its ancestor {}",
                        record.accessor, current.accessor
                    )
                }));
            }
            let indexed = self.indexed_hash(&current.accessor)?;
            if indexed.as_deref() != Some(&current.hash) {
                return Err(Error::denied(format!(
                    "token {} was revoked (or an ancestor was)",
                    record.accessor
                )));
            }
            if current.parent.is_empty() {
                return Ok(());
            }
            parent = match self.hot_record_by_accessor(&current.parent)? {
                Some(found) => found,
                None => {
                    return Err(Error::denied(format!(
                        "token {} lost its parent {}",
                        record.accessor, current.parent
                    )));
                }
            };
            current = &parent;
        }
        Err(Error::denied(format!(
            "token {} is nested too deep",
            record.accessor
        )))
    }

    /// The tenant's id if `caller` may use `capability` on `path` in it.
    pub(super) fn authorize(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        path: &str,
        capability: Capability,
    ) -> Result<Authorized> {
        let own = self.token_tenant(caller, tenant)?;
        let granted = Authorized { tenant: own };
        if caller.system {
            return Ok(granted);
        }
        match decide(&caller.policies, path, capability) {
            Decision::Allow => Ok(granted),
            Decision::AllowWithMfa(policy) => {
                self.verify_mfa(
                    caller,
                    &format!("policy {policy} requires mfa for {capability}"),
                )?;
                Ok(granted)
            }
            Decision::Deny(reason) => Err(Error::denied(reason)),
        }
    }

    /// Whether the caller may see (lookup, renew, revoke) the token with `record`: its own, one
    /// it created (directly or not), or any with the system scope.
    fn may_manage(&self, caller: &Caller, record: &TokenRecord) -> Result<bool> {
        if caller.system || record.accessor == caller.accessor {
            return Ok(true);
        }
        let mut parent = record.parent.clone();
        // Bounded: a chain longer than this is not something the vault creates.
        for _ in 0..=MAX_TOKEN_DEPTH {
            if parent.is_empty() {
                return Ok(false);
            }
            if parent == caller.accessor {
                return Ok(true);
            }
            parent = match self.record_by_accessor(&parent)? {
                Some(ancestor) => ancestor.parent,
                None => return Ok(false),
            };
        }
        Ok(false)
    }

    /// How many tokens sit above this one.
    fn depth(&self, record: &TokenRecord) -> Result<usize> {
        let mut depth = 0;
        let mut parent = record.parent.clone();
        while !parent.is_empty() && depth <= MAX_TOKEN_DEPTH {
            depth += 1;
            parent = self
                .record_by_accessor(&parent)?
                .map(|r| r.parent)
                .unwrap_or_default();
        }
        Ok(depth)
    }

    pub(super) fn record_by_accessor(&self, accessor: &str) -> Result<Option<TokenRecord>> {
        Ok(self
            .hot_record_by_accessor(accessor)?
            .map(|record| TokenRecord::clone(&record)))
    }

    /// [`Vault::record_by_accessor`] from the hot records (shared, not copied).
    fn hot_record_by_accessor(&self, accessor: &str) -> Result<Option<Arc<TokenRecord>>> {
        let Some(hash) = self.indexed_hash(accessor)? else {
            return Ok(None);
        };
        self.data
            .cached(Space::Config, &token_record_key_hex(&hash), |bytes| {
                from_json::<TokenRecord>(bytes, "a token record")
            })
    }

    /// The token hash (hex) the accessor index names for `accessor`: `None` once revoked.
    fn indexed_hash(&self, accessor: &str) -> Result<Option<Arc<String>>> {
        self.data
            .cached(Space::Config, &accessor_key(accessor), |bytes| {
                String::from_utf8(bytes.to_vec()).map_err(|_| corrupt("an accessor index entry"))
            })
    }

    fn target(&self, caller: &Caller, accessor: Option<&str>) -> Result<TokenRecord> {
        let record = match accessor {
            None => self
                .record_by_accessor(&caller.accessor)?
                .ok_or_else(|| Error::denied(format!("token {} was revoked", caller.accessor)))?,
            Some(accessor) => {
                let unknown = || Error::NotFound(format!("token with accessor {accessor}"));
                let record = self.record_by_accessor(accessor)?.ok_or_else(unknown)?;
                // A token the caller may not manage looks exactly like one that does not exist.
                if !self.may_manage(caller, &record)? {
                    return Err(unknown());
                }
                record
            }
        };
        Ok(record)
    }

    pub(super) fn token_info(&self, record: &TokenRecord) -> Result<TokenInfo> {
        let tenant = match TenantId::parse_hex(&record.tenant) {
            Some(id) => self.tenant_name(id)?,
            None => None,
        };
        Ok(TokenInfo {
            accessor: record.accessor.clone(),
            tenant,
            policies: record.policies.clone(),
            system: record.system,
            parent: record.parent.clone(),
            display_name: record.display_name.clone(),
            created_unix_nanos: record.created_unix_nanos,
            expires_unix_nanos: record.expires_unix_nanos,
            max_expires_unix_nanos: record.max_expires_unix_nanos,
            cidrs: record.cidrs.clone(),
            entity: record.entity.clone(),
            family: record.family.clone(),
        })
    }

    fn tenant_name(&self, id: TenantId) -> Result<Option<TenantName>> {
        Ok(self.tenant_state(id)?.map(|state| state.name.clone()))
    }

    /// The tenant a new token is for: any for the system scope, the caller's own otherwise.
    /// A tenant token naming another tenant is denied whether or not that tenant exists.
    pub(super) fn token_tenant(&self, caller: &Caller, tenant: &TenantName) -> Result<TenantId> {
        if caller.system {
            return self.tenant_id(tenant);
        }
        // The caller's own tenant by its name: another tenant's name is never looked up, so
        // the answer (and its timing) is the same whether or not that tenant exists.
        let denied = || Error::denied(format!("token of another tenant used for tenant {tenant}"));
        let Some(own) = caller.tenant else {
            return Err(denied());
        };
        match self.tenant_state(own)? {
            Some(state) if state.name == *tenant => Ok(own),
            _ => Err(denied()),
        }
    }

    /// Checks the policies of a new tenant token: at least one, each existing in the tenant,
    /// and (unless the caller has the system scope) each among the caller's own. Also returns
    /// the first of them that requires MFA for anything.
    fn token_policies(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        tenant_id: TenantId,
        requested: &[PolicyName],
    ) -> Result<(Vec<String>, Option<String>)> {
        if requested.is_empty() {
            return Err(Error::invalid(
                "policies",
                "a token needs at least one policy",
            ));
        }
        let own: BTreeSet<&str> = caller.record.policies.iter().map(String::as_str).collect();
        let mut protected = None;
        for policy in requested {
            if !caller.system && !own.contains(policy.as_str()) {
                return Err(Error::denied(format!(
                    "policy {} is not among the creating token's policies",
                    policy.as_str()
                )));
            }
            let Some(bytes) = self
                .data
                .get(Space::Config, &policy_key(tenant_id, policy))?
            else {
                return Err(Error::invalid(
                    "policies",
                    format!(
                        "policy {} does not exist in tenant {tenant}",
                        policy.as_str()
                    ),
                ));
            };
            let stored: Policy = from_json(&bytes, "a policy")?;
            if protected.is_none() && !stored.require_mfa.is_empty() {
                protected = Some(policy.as_str().to_owned());
            }
        }
        Ok((
            requested.iter().map(|p| p.as_str().to_owned()).collect(),
            protected,
        ))
    }

    /// Adds the revocation of `target` alone to `batch`: its record, its accessor index, its
    /// entry in its parent's children and (for a family's token) the family. Its descendants
    /// are dead from the commit on; [`Vault::delete_descendants`] or the purge removes them.
    /// Call with the tenant's `token_changes` held.
    pub(super) fn revoke_into(&self, batch: &mut WriteBatch, target: &TokenRecord) -> Result<()> {
        batch
            .delete(Space::Config, token_record_key_hex(&target.hash))
            .delete(Space::Config, accessor_key(&target.accessor))
            .delete(
                Space::Config,
                children_key(&target.parent, &target.accessor),
            );
        if !target.family.is_empty() {
            self.revoke_family_into(batch, &target.family)?;
        }
        Ok(())
    }

    /// Deletes every token below the (already revoked) token `accessor`, a page at a time,
    /// depth first. Returns how many it deleted.
    pub(super) fn delete_descendants(&self, accessor: &str) -> Result<usize> {
        let mut deleted = 0;
        // Parents whose children are still to go; bounded by depth × page size.
        let mut parents = vec![accessor.to_owned()];
        while let Some(parent) = parents.last().cloned() {
            let prefix = children_prefix(&parent);
            let page = self
                .data
                .scan(Space::Config, &prefix, &prefix, REVOKE_PAGE)?;
            if page.is_empty() {
                parents.pop();
                continue;
            }
            let mut batch = WriteBatch::new();
            for (key, _) in page {
                let child = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                if let Some(record) = self.record_by_accessor(&child)? {
                    batch
                        .delete(Space::Config, token_record_key_hex(&record.hash))
                        .delete(Space::Config, accessor_key(&record.accessor));
                    if !record.family.is_empty() {
                        self.revoke_family_into(&mut batch, &record.family)?;
                    }
                    deleted += 1;
                    if parents.len() <= MAX_TOKEN_DEPTH + 1 {
                        parents.push(child);
                    }
                }
                batch.delete(Space::Config, key);
            }
            self.data.write(batch)?;
        }
        Ok(deleted)
    }

    // ---- policies ----

    fn load_policies(&self, tenant: TenantId, names: &[String]) -> Result<Vec<Arc<Policy>>> {
        let mut policies = Vec::with_capacity(names.len());
        for name in names {
            let Ok(name) = PolicyName::parse(name) else {
                continue;
            };
            // A deleted policy simply grants nothing any more.
            if let Some(policy) =
                self.data
                    .cached(Space::Config, &policy_key(tenant, &name), |bytes| {
                        from_json::<Policy>(bytes, "a policy")
                    })?
            {
                policies.push(policy);
            }
        }
        Ok(policies)
    }

    /// Fails unless the caller has the system scope (for server-level operations such as the
    /// audit log).
    pub fn require_system(&self, caller: &Caller) -> Result<()> {
        require_system(caller)
    }

    /// Fails unless the caller may read the audit log of all tenants (system scope, and MFA if
    /// the audit operation needs it).
    pub fn require_audit_access(&self, caller: &Caller) -> Result<()> {
        self.require_system_op(caller, SystemOp::Audit)
    }
}

/// Tokens and policies, as `vault.access()` hands them out. The view derefs to the vault for the
/// helpers the operations share with the other subsystems.
pub struct Access<'a> {
    vault: &'a Vault,
}

impl std::ops::Deref for Access<'_> {
    type Target = Vault;

    fn deref(&self) -> &Vault {
        self.vault
    }
}

impl Vault {
    /// Tokens and policies.
    pub fn access(&self) -> Access<'_> {
        Access { vault: self }
    }
}

impl Access<'_> {
    /// Creates a token. A tenant token may only create tokens for its own tenant with a subset
    /// of its own policies, living no longer than itself; only the system scope may create
    /// system-scope tokens.
    pub fn create_token(&self, caller: &Caller, request: TokenRequest) -> Result<CreatedToken> {
        self.keyring()?;
        let name = &request.display_name;
        if name.len() > MAX_DISPLAY_NAME_LEN || name.chars().any(char::is_control) {
            return Err(Error::invalid(
                "display_name",
                format!("at most {MAX_DISPLAY_NAME_LEN} bytes, no control characters"),
            ));
        }
        let ttl = request.ttl.unwrap_or(DEFAULT_TOKEN_TTL);
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(Error::invalid(
                "ttl",
                format!("must be between 1s and {}h", MAX_TOKEN_TTL.as_secs() / 3600),
            ));
        }
        if request.system && request.refresh_max_ttl.is_some() {
            return Err(Error::invalid(
                "refresh_max_ttl",
                "system-scope tokens are not refreshable",
            ));
        }
        if let Some(max) = request.refresh_max_ttl
            && (max < ttl || max > MAX_TOKEN_TTL)
        {
            return Err(Error::invalid(
                "refresh_max_ttl",
                format!(
                    "must be at least the ttl and at most {}h",
                    MAX_TOKEN_TTL.as_secs() / 3600
                ),
            ));
        }
        // Token changes are serialized per tenant (the new token's), and the creator must
        // still be alive under the lock. A revocation of a system creator (another lock) that
        // commits meanwhile leaves the new token under a dead ancestor: refused at once, and
        // purged by maintenance.
        let lock_key = match &request.tenant {
            Some(name) if !request.system => self.tenant_id(name).ok(),
            _ => None,
        };
        // The creator's lock too, so that its children cap holds when it creates tokens for
        // several tenants at once. Two locks are always taken in key order (the system's
        // before any tenant's), so no two creations can wait for each other.
        let (first, second) = if caller.tenant <= lock_key {
            (caller.tenant, lock_key)
        } else {
            (lock_key, caller.tenant)
        };
        let first_held = self.token_changes.of(first);
        let _first_guard = lock(&first_held);
        let second_held = (second != first).then(|| self.token_changes.of(second));
        let _second_guard = second_held.as_ref().map(|held| lock(held));
        self.check_alive(&caller.record, Networks::Ignore)?;
        if self.depth(&caller.record)? >= MAX_TOKEN_DEPTH {
            return Err(Error::invalid(
                "policies",
                format!("tokens nest at most {MAX_TOKEN_DEPTH} deep"),
            ));
        }
        let max_children = self.config.max_token_children;
        let prefix = children_prefix(&caller.accessor);
        if self
            .data
            .scan(
                Space::Config,
                &prefix,
                &prefix,
                max_children.saturating_add(1),
            )?
            .len()
            >= max_children
        {
            return Err(Error::ResourceExhausted(format!(
                "token {} has created {max_children} tokens that are not yet revoked or purged, \
                 the most one token may have",
                caller.accessor
            )));
        }
        let (tenant_id, policies) = if request.system {
            self.require_system_op(caller, SystemOp::CreateSystemToken)?;
            if request.tenant.is_some() || !request.policies.is_empty() {
                return Err(Error::invalid(
                    "system",
                    "a system-scope token has no tenant and no policies",
                ));
            }
            // The new token acts for the creator's entity; if that entity has a second factor,
            // minting a system token takes it too (whether or not the operation is listed).
            if self.mfa_enrolled(&caller.record.entity)? {
                self.verify_mfa(
                    caller,
                    "creating a system token requires the creator's mfa (its entity is enrolled)",
                )?;
            }
            (None, vec!["system".to_owned()])
        } else {
            let tenant = request
                .tenant
                .as_ref()
                .ok_or_else(|| Error::invalid("tenant", "a tenant token needs a tenant"))?;
            let tenant_id = self.token_tenant(caller, tenant)?;
            let (policies, protected) =
                self.token_policies(caller, tenant, tenant_id, &request.policies)?;
            if let Some(policy) = protected
                && self.mfa_enrolled(&caller.record.entity)?
            {
                self.verify_mfa(
                    caller,
                    &format!(
                        "creating a token with policy {policy}, which requires mfa, requires the \
                         creator's mfa"
                    ),
                )?;
            }
            (Some(tenant_id), policies)
        };
        let mut max_expires = caller.record.max_expires_unix_nanos;
        if caller.record.expires_unix_nanos != 0 {
            max_expires = nonzero_min(max_expires, caller.record.expires_unix_nanos);
        }
        self.issue(Issue {
            tenant: tenant_id,
            system: request.system,
            policies,
            display_name: request.display_name,
            parent: caller.accessor.clone(),
            // A created token acts for its creator's entity (kept across its refreshes): its
            // MFA enrolment, lockout and replay state are the creator's, so a child can never
            // bring a second factor of its own. A creator from before entities existed has
            // none; its children get one that nobody can enrol by themselves.
            entity: Some(if caller.record.entity.is_empty() {
                format!("token:{}", caller.accessor)
            } else {
                caller.record.entity.clone()
            }),
            ttl,
            max_expires,
            cidrs: request.cidrs.iter().map(ToString::to_string).collect(),
            family_max_ttl: request.refresh_max_ttl,
        })
    }

    /// The tenant a presented token belongs to (`None`: a system-scope token), read from its
    /// record alone: no liveness, network or rate check, so it is no authentication. Vault's
    /// HTTP API uses it to pick the tenant of a call that names no namespace; the call itself
    /// then authenticates as usual.
    pub fn tenant_of_token(&self, token: &Token) -> Result<Option<TenantName>> {
        let record = self.record_of_token(token)?;
        match TenantId::parse_hex(&record.tenant) {
            Some(id) => self.tenant_name(id),
            None => Ok(None),
        }
    }

    /// The accessor of a presented token (for a lookup or revocation by the token itself);
    /// an unknown token is [`Error::NotFound`], as an accessor the caller may not manage is.
    pub fn accessor_of(&self, token: &Token) -> Result<String> {
        match self.record_of_token(token) {
            Ok(record) => Ok(record.accessor.clone()),
            Err(Error::PermissionDenied) => Err(Error::NotFound("the token".into())),
            Err(e) => Err(e),
        }
    }

    /// The record a token's keyed hash names; unknown: [`Error::PermissionDenied`].
    fn record_of_token(&self, token: &Token) -> Result<Arc<TokenRecord>> {
        let keyring = self.keyring()?;
        let hash = keyring.token_hasher.hash(token);
        let Some(record) = self
            .data
            .cached(Space::Config, &token_record_key(&hash), |bytes| {
                from_json::<TokenRecord>(bytes, "a token record")
            })?
        else {
            return Err(Error::PermissionDenied);
        };
        if !hash
            .matches_hex(&record.hash)
            .ok_or_else(|| corrupt("a token record"))?
        {
            return Err(Error::PermissionDenied);
        }
        Ok(record)
    }

    /// Shows a token: the caller's own (`None`) or one it may manage.
    pub fn lookup_token(&self, caller: &Caller, accessor: Option<&str>) -> Result<TokenInfo> {
        self.keyring()?;
        let mut info = self.token_info(&self.target(caller, accessor)?)?;
        // Who created a token is for the system scope to see (it may be root's accessor).
        if !caller.system {
            info.parent.clear();
        }
        Ok(info)
    }

    /// Extends a token's life by `increment` (default: its original TTL) from now, never past
    /// its maximum.
    pub fn renew_token(
        &self,
        caller: &Caller,
        accessor: Option<&str>,
        increment: Option<Duration>,
    ) -> Result<TokenInfo> {
        self.keyring()?;
        let found = self.target(caller, accessor)?;
        let held = self.token_changes.of(TenantId::parse_hex(&found.tenant));
        let _guard = lock(&held);
        self.check_alive(&caller.record, Networks::Ignore)?;
        // Re-read under the lock; a dead token is not brought back.
        let mut record = self
            .record_by_accessor(&found.accessor)?
            .filter(|record| record.hash == found.hash)
            .ok_or_else(|| Error::NotFound(format!("token with accessor {}", found.accessor)))?;
        self.check_alive(&record, Networks::Ignore)?;
        if record.expires_unix_nanos == 0 {
            return self.token_info(&record);
        }
        let parent_expires = match self.record_by_accessor(&record.parent)? {
            Some(parent) if parent.expires_unix_nanos != 0 => parent.expires_unix_nanos,
            _ => i64::MAX,
        };
        let increment = increment.map_or(record.ttl_nanos, nanos);
        if increment <= 0 {
            return Err(Error::invalid("increment", "must be positive"));
        }
        record.expires_unix_nanos = self
            .now()
            .saturating_add(increment)
            .min(record.max_expires_unix_nanos)
            .min(parent_expires);
        let mut batch = WriteBatch::new();
        batch.put(
            Space::Config,
            token_record_key_hex(&record.hash),
            to_json(&record)?,
        );
        self.data.write(batch)?;
        self.token_info(&record)
    }

    /// Revokes a token and every token created from it. Returns how many tokens were revoked.
    /// Revoking a token of a refresh family revokes the family too.
    ///
    /// The token itself goes in one write under its tenant's lock; from that moment every
    /// token below it is refused (authentication walks the ancestors). The subtree is then
    /// deleted in pages of [`REVOKE_PAGE`], without holding the lock, so that revoking a
    /// token with a million descendants stalls nobody; a crash half way leaves dead records
    /// that maintenance purges.
    pub fn revoke_token(&self, caller: &Caller, accessor: Option<&str>) -> Result<usize> {
        self.keyring()?;
        let target = self.target(caller, accessor)?;
        let head = {
            let held = self.token_changes.of(TenantId::parse_hex(&target.tenant));
            let _guard = lock(&held);
            // Re-read under the lock: a revocation that won the race has nothing left to do.
            let target = self
                .record_by_accessor(&target.accessor)?
                .filter(|record| record.hash == target.hash)
                .ok_or_else(|| {
                    Error::NotFound(format!("token with accessor {}", target.accessor))
                })?;
            // A root token (no parent) is revoked like any other, with the tokens it created
            // (`target` says who may); generate-root makes a new one from a threshold of shares.
            let mut batch = WriteBatch::new();
            self.revoke_into(&mut batch, &target)?;
            self.data.write(batch)?;
            target.accessor
        };
        Ok(1 + self.delete_descendants(&head)?)
    }

    /// Creates or replaces a policy in a tenant (needs `admin` on the tenant root).
    pub fn write_policy(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        policy: &Policy,
    ) -> Result<()> {
        self.keyring()?;
        let id = self
            .authorize(caller, tenant, "", Capability::Admin)?
            .tenant();
        let mut batch = WriteBatch::new();
        batch.put(
            Space::Config,
            policy_key(id, &policy.name),
            to_json(policy)?,
        );
        Ok(self.data.write(batch)?)
    }

    pub fn read_policy(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &PolicyName,
    ) -> Result<Policy> {
        self.keyring()?;
        let id = self
            .authorize(caller, tenant, "", Capability::Admin)?
            .tenant();
        let bytes = self
            .data
            .get(Space::Config, &policy_key(id, name))?
            .ok_or_else(|| Error::NotFound(format!("policy {}", name.as_str())))?;
        from_json(&bytes, "a policy")
    }

    pub fn list_policies(&self, caller: &Caller, tenant: &TenantName) -> Result<Vec<String>> {
        self.keyring()?;
        let id = self
            .authorize(caller, tenant, "", Capability::Admin)?
            .tenant();
        let prefix = policy_prefix(id);
        let entries = self
            .data
            .scan(Space::Config, &prefix, &prefix, usize::MAX)?;
        Ok(entries
            .into_iter()
            .map(|(key, _)| String::from_utf8_lossy(&key[prefix.len()..]).into_owned())
            .collect())
    }

    pub fn delete_policy(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &PolicyName,
    ) -> Result<()> {
        self.keyring()?;
        let id = self
            .authorize(caller, tenant, "", Capability::Admin)?
            .tenant();
        let key = policy_key(id, name);
        if self.data.get(Space::Config, &key)?.is_none() {
            return Err(Error::NotFound(format!("policy {}", name.as_str())));
        }
        let mut batch = WriteBatch::new();
        batch.delete(Space::Config, key);
        Ok(self.data.write(batch)?)
    }
}
