//! AppRole logins: a machine presents a role id (not secret, baked into its configuration) and
//! a secret id (secret, delivered at deploy time, limited in uses, lifetime and networks) and
//! gets a token with the role's policies.
//!
//! Roles and secret ids are managed by the tenant's administrators (`admin` on the tenant
//! root) or the system scope. Storage: `approle/<tenant>/<name>` the role,
//! `approle-id/<tenant>/<role id>` the role id index, `secret-id/<keyed hash>` each secret id.
//!
//! The spent use and the issued token are one write. Every failure is `Error::LoginFailed`:
//! the client gets UNAUTHENTICATED "login failed", the audit record the reason. The tenant's
//! networks and rate limit are checked only after the credentials check out, so strangers
//! cannot spend a tenant's budget.

use std::time::Duration;

use std::net::IpAddr;

use super::*;
use crate::{
    cidr::Cidr,
    policy::PolicyName,
    schema::{approle_entity, approle_id_key, approle_key, secret_id_key},
    token::TokenKind,
};

/// Longest role name.
const MAX_ROLE_NAME_LEN: usize = 63;
/// Default lifetime of a secret id.
pub const DEFAULT_SECRET_ID_TTL: Duration = Duration::from_secs(24 * 3600);

/// What an administrator asks for when writing a role.
#[derive(Clone, Debug, Default)]
pub struct AppRoleSpec {
    pub name: String,
    pub policies: Vec<PolicyName>,
    /// Lifetime of the tokens a login issues (default: 1 hour).
    pub token_ttl: Option<Duration>,
    /// If set, logins also issue a refresh token; the family lives at most this long.
    pub refresh_max_ttl: Option<Duration>,
    /// Uses per secret id (0: unlimited).
    pub secret_id_uses: u32,
    /// Lifetime of a secret id (default 24 hours).
    pub secret_id_ttl: Option<Duration>,
    /// Networks logins may come from.
    pub bound_cidrs: Vec<Cidr>,
    /// Networks the issued tokens may be used from.
    pub token_cidrs: Vec<Cidr>,
}

/// A role as stored and shown (the role id is not a secret).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppRole {
    pub name: String,
    pub role_id: String,
    pub policies: Vec<String>,
    pub token_ttl_nanos: i64,
    /// 0: no refresh tokens.
    pub refresh_max_ttl_nanos: i64,
    pub secret_id_uses: u32,
    pub secret_id_ttl_nanos: i64,
    pub bound_cidrs: Vec<String>,
    pub token_cidrs: Vec<String>,
}

/// Extra restrictions on one secret id.
#[derive(Clone, Debug, Default)]
pub struct SecretIdSpec {
    /// Networks this secret id may log in from (on top of the role's).
    pub cidrs: Vec<Cidr>,
}

/// No Debug: holds a keyed hash.
#[derive(Serialize, Deserialize)]
struct SecretIdRecord {
    hash: String,
    tenant: String,
    role_id: String,
    accessor: String,
    /// 0: unlimited.
    remaining_uses: u32,
    expires_unix_nanos: i64,
    cidrs: Vec<String>,
}

fn check_role_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_ROLE_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(Error::invalid(
            "role",
            format!("1 to {MAX_ROLE_NAME_LEN} of a-z, 0-9, '-' and '_'"),
        ));
    }
    Ok(())
}

impl Vault {
    fn approle(&self, tenant: TenantId, name: &str) -> Result<Option<AppRole>> {
        self.data
            .get(Space::Config, &approle_key(tenant, name))?
            .map(|bytes| from_json(&bytes, "an approle"))
            .transpose()
    }
}

/// Machine logins and their configuration: AppRole, JWT/OIDC, refresh, as `vault.logins()` hands them out. The view derefs to the vault for the
/// helpers the operations share with the other subsystems.
pub struct Logins<'a> {
    vault: &'a Vault,
}

impl std::ops::Deref for Logins<'_> {
    type Target = Vault;

    fn deref(&self) -> &Vault {
        self.vault
    }
}

impl Vault {
    /// Machine logins and their configuration: AppRole, JWT/OIDC, refresh.
    pub fn logins(&self) -> Logins<'_> {
        Logins { vault: self }
    }
}

impl Logins<'_> {
    /// Creates or replaces a role; a replaced role keeps its role id.
    pub fn write_approle(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        spec: AppRoleSpec,
    ) -> Result<AppRole> {
        self.keyring()?;
        let id = self
            .authorize(caller, tenant, "", Capability::Admin)?
            .tenant();
        check_role_name(&spec.name)?;
        if spec.policies.is_empty() {
            return Err(Error::invalid(
                "policies",
                "a role needs at least one policy",
            ));
        }
        for policy in &spec.policies {
            if self
                .data
                .get(Space::Config, &schema::policy_key(id, policy))?
                .is_none()
            {
                return Err(Error::invalid(
                    "policies",
                    format!(
                        "policy {} does not exist in tenant {tenant}",
                        policy.as_str()
                    ),
                ));
            }
        }
        let token_ttl = spec.token_ttl.unwrap_or(access::DEFAULT_TOKEN_TTL);
        if token_ttl.is_zero() || token_ttl > access::MAX_TOKEN_TTL {
            return Err(Error::invalid(
                "token_ttl",
                "must be between 1s and 32 days",
            ));
        }
        if let Some(max) = spec.refresh_max_ttl
            && (max < token_ttl || max > access::MAX_TOKEN_TTL)
        {
            return Err(Error::invalid(
                "refresh_max_ttl",
                "must be at least the token ttl and at most 32 days",
            ));
        }
        let secret_id_ttl = spec.secret_id_ttl.unwrap_or(DEFAULT_SECRET_ID_TTL);
        if secret_id_ttl.is_zero() || secret_id_ttl > access::MAX_TOKEN_TTL {
            return Err(Error::invalid(
                "secret_id_ttl",
                "must be between 1s and 32 days",
            ));
        }
        let held = self.token_changes.of(Some(id));
        let _guard = lock(&held);
        let key = approle_key(id, &spec.name);
        let role_id = match self.data.get(Space::Config, &key)? {
            Some(bytes) => from_json::<AppRole>(&bytes, "an approle")?.role_id,
            None => format!(
                "role-{}",
                &new_accessor()?[crate::token::ACCESSOR_PREFIX.len()..]
            ),
        };
        let role = AppRole {
            name: spec.name,
            role_id,
            policies: spec
                .policies
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            token_ttl_nanos: login::nanos(token_ttl),
            refresh_max_ttl_nanos: spec.refresh_max_ttl.map_or(0, login::nanos),
            secret_id_uses: spec.secret_id_uses,
            secret_id_ttl_nanos: login::nanos(secret_id_ttl),
            bound_cidrs: spec.bound_cidrs.iter().map(ToString::to_string).collect(),
            token_cidrs: spec.token_cidrs.iter().map(ToString::to_string).collect(),
        };
        let mut batch = WriteBatch::new();
        batch.put(Space::Config, key, to_json(&role)?).put(
            Space::Config,
            approle_id_key(id, &role.role_id),
            role.name.as_bytes(),
        );
        self.data.write(batch)?;
        Ok(role)
    }

    pub fn read_approle(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &str,
    ) -> Result<AppRole> {
        self.keyring()?;
        let id = self
            .authorize(caller, tenant, "", Capability::Admin)?
            .tenant();
        self.approle(id, name)?
            .ok_or_else(|| Error::NotFound(format!("role {name}")))
    }

    /// Deletes a role: its secret ids stop working at once (their role id no longer resolves).
    pub fn delete_approle(&self, caller: &Caller, tenant: &TenantName, name: &str) -> Result<()> {
        self.keyring()?;
        let id = self
            .authorize(caller, tenant, "", Capability::Admin)?
            .tenant();
        let held = self.token_changes.of(Some(id));
        let _guard = lock(&held);
        let role = self
            .approle(id, name)?
            .ok_or_else(|| Error::NotFound(format!("role {name}")))?;
        let mut batch = WriteBatch::new();
        batch
            .delete(Space::Config, approle_key(id, name))
            .delete(Space::Config, approle_id_key(id, &role.role_id));
        Ok(self.data.write(batch)?)
    }

    /// Issues a secret id for a role; returns it (shown once) and its accessor.
    pub fn generate_secret_id(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        name: &str,
        spec: SecretIdSpec,
    ) -> Result<(Token, String)> {
        let keyring = self.keyring()?;
        let id = self
            .authorize(caller, tenant, "", Capability::Admin)?
            .tenant();
        let role = self
            .approle(id, name)?
            .ok_or_else(|| Error::NotFound(format!("role {name}")))?;
        let secret_id = Token::generate_kind(TokenKind::SecretId)?;
        let hash = keyring.token_hasher.hash(&secret_id);
        let accessor = new_accessor()?;
        let record = SecretIdRecord {
            hash: hash.to_hex(),
            tenant: id.to_hex(),
            role_id: role.role_id,
            accessor: accessor.clone(),
            remaining_uses: role.secret_id_uses,
            expires_unix_nanos: self.now().saturating_add(role.secret_id_ttl_nanos),
            cidrs: spec.cidrs.iter().map(ToString::to_string).collect(),
        };
        let mut batch = WriteBatch::new();
        batch.put(Space::Config, secret_id_key(&hash), to_json(&record)?);
        self.data.write(batch)?;
        Ok((secret_id, accessor))
    }

    /// Logs in with a role id and secret id from `source`. Every failure says why in its
    /// [`Error::LoginFailed`] reason (for the audit record) and nothing more to the caller.
    pub fn login_approle(
        &self,
        tenant: &TenantName,
        role_id: &str,
        secret_id: &Token,
        source: Option<IpAddr>,
    ) -> Result<CreatedToken> {
        let keyring = self.keyring()?;
        let id = self
            .tenant_id(tenant)
            .map_err(|_| Error::login_failed(format!("unknown tenant {tenant}")))?;
        let state = self
            .tenant_state(id)?
            .ok_or_else(|| Error::login_failed(format!("unknown tenant {tenant}")))?;
        let held = self.token_changes.of(Some(id));
        let _guard = lock(&held);
        let name = self
            .data
            .get(Space::Config, &approle_id_key(id, role_id))?
            .ok_or_else(|| Error::login_failed("unknown role id"))?;
        let name = String::from_utf8(name).map_err(|_| corrupt("a role id index entry"))?;
        let role = self
            .approle(id, &name)?
            .ok_or_else(|| Error::login_failed("unknown role id"))?;
        let hash = keyring.token_hasher.hash(secret_id);
        let key = secret_id_key(&hash);
        let Some(bytes) = self.data.get(Space::Config, &key)? else {
            return Err(Error::login_failed(format!(
                "role {name}: unknown secret id"
            )));
        };
        let mut record: SecretIdRecord = from_json(&bytes, "a secret id record")?;
        let same = hash
            .matches_hex(&record.hash)
            .ok_or_else(|| corrupt("a secret id record"))?;
        if !same || record.tenant != id.to_hex() || record.role_id != role.role_id {
            return Err(Error::login_failed(format!(
                "role {name}: secret id belongs to another role"
            )));
        }
        let mut batch = WriteBatch::new();
        if self.now() >= record.expires_unix_nanos {
            batch.delete(Space::Config, key);
            self.data.write(batch)?;
            return Err(Error::login_failed(format!(
                "role {name}: secret id {} expired",
                record.accessor
            )));
        }
        if !Cidr::allows(&role.bound_cidrs, source) || !Cidr::allows(&record.cidrs, source) {
            let from = source.map_or_else(|| "an unknown address".to_owned(), |a| a.to_string());
            return Err(Error::login_failed(format!(
                "role {name}: login from {from} is outside the bound networks"
            )));
        }
        // Only now, with valid credentials, do the tenant's networks and rate limit count: a
        // stranger can neither spend the tenant's budget nor probe its settings.
        state.admit_login(source)?;
        match record.remaining_uses {
            0 => {}
            1 => {
                batch.delete(Space::Config, key);
            }
            n => {
                record.remaining_uses = n - 1;
                batch.put(Space::Config, key, to_json(&record)?);
            }
        }
        // The use is spent in the same write that issues the token.
        self.issue_in(
            batch,
            Issue {
                tenant: Some(id),
                system: false,
                policies: role.policies.clone(),
                display_name: format!("approle-{name}"),
                parent: String::new(),
                entity: Some(approle_entity(id, &name)),
                ttl: Duration::from_nanos(u64::try_from(role.token_ttl_nanos).unwrap_or(0)),
                max_expires: 0,
                cidrs: role.token_cidrs.clone(),
                family_max_ttl: (role.refresh_max_ttl_nanos > 0).then(|| {
                    Duration::from_nanos(u64::try_from(role.refresh_max_ttl_nanos).unwrap_or(0))
                }),
            },
        )
    }
}
