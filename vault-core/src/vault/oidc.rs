//! JWT/OIDC logins: a workload or user presents a JWT from an identity provider; the vault
//! checks it against the provider's keys (a JWKS file on the server, re-read at each login so a
//! key rotation at the provider needs only a new file), its issuer and audience, and maps its
//! claims to a tenant and policies.
//!
//! Configurations are system-level (`jwt/<name>`), since one provider may serve many tenants.
//! The tenant is fixed or read from a claim; policies are fixed or granted by claim values.
//! The entity of a JWT login is `jwt:<config>:<tenant id>:<user claim>`: a user of one tenant
//! cannot pre-enrol or lock out a same-named user of another.
//!
//! As with AppRole, every failure is `Error::LoginFailed` (UNAUTHENTICATED "login failed" to the
//! client, the reason in the audit record), and the tenant's networks and rate limit are checked
//! only once the JWT checks out.

use std::{path::PathBuf, time::Duration};

use std::net::IpAddr;

use super::approle::Logins;
use super::*;
use crate::{
    cidr::Cidr,
    jwt::{self, Expectations, Jwks},
    policy::PolicyName,
    schema::{jwt_config_key, jwt_entity},
};

/// Default clock skew allowed for `exp`, `nbf` and `iat`.
const DEFAULT_LEEWAY_SECONDS: i64 = 60;
/// Largest JWKS file read.
const MAX_JWKS_BYTES: u64 = 1024 * 1024;

/// Grants `policies` when the claim `claim` is, or (for a list) contains, `value`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyMapping {
    pub claim: String,
    pub value: String,
    pub policies: Vec<String>,
}

/// A JWT login configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct JwtConfig {
    pub name: String,
    /// `iss` must equal this.
    pub issuer: String,
    /// A JWKS document on the server's file system.
    pub jwks_file: PathBuf,
    /// `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// The tenant every login gets, or...
    #[serde(default)]
    pub tenant: String,
    /// ...the claim naming the tenant.
    #[serde(default)]
    pub tenant_claim: String,
    /// The claim that identifies the user or workload (default `sub`).
    #[serde(default)]
    pub user_claim: String,
    /// Policies every login gets.
    #[serde(default)]
    pub policies: Vec<String>,
    #[serde(default)]
    pub policy_map: Vec<PolicyMapping>,
    /// Token lifetime (0: 1 hour).
    #[serde(default)]
    pub token_ttl_seconds: u64,
    /// If set, logins also get a refresh token; the family lives at most this long.
    #[serde(default)]
    pub refresh_max_ttl_seconds: u64,
    /// Networks logins may come from; empty: anywhere.
    #[serde(default)]
    pub bound_cidrs: Vec<String>,
    /// Clock skew allowed (0: 60 seconds).
    #[serde(default)]
    pub leeway_seconds: i64,
    /// The id of the fixed tenant when the configuration was written: a tenant deleted and
    /// re-created under the same name is someone else, and gets no logins from it.
    #[serde(default)]
    pub tenant_id: String,
}

fn read_jwks(path: &std::path::Path) -> std::result::Result<Jwks, String> {
    let metadata =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if metadata.len() > MAX_JWKS_BYTES {
        return Err(format!("{} is over {MAX_JWKS_BYTES} bytes", path.display()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Jwks::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

impl JwtConfig {
    fn validate(&self) -> Result<()> {
        if self.name.is_empty()
            || self.name.len() > 63
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(Error::invalid("name", "1 to 63 of a-z, 0-9, '-' and '_'"));
        }
        if self.issuer.is_empty() {
            return Err(Error::invalid("issuer", "is required"));
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return Err(Error::invalid("audiences", "at least one, none empty"));
        }
        match (self.tenant.is_empty(), self.tenant_claim.is_empty()) {
            (false, true) => {
                TenantName::parse(&self.tenant)?;
            }
            (true, false) => {}
            _ => {
                return Err(Error::invalid(
                    "tenant",
                    "give exactly one of tenant and tenant_claim",
                ));
            }
        }
        for policy in self
            .policies
            .iter()
            .chain(self.policy_map.iter().flat_map(|m| m.policies.iter()))
        {
            PolicyName::parse(policy)?;
        }
        if self.policies.is_empty() && self.policy_map.is_empty() {
            return Err(Error::invalid(
                "policies",
                "give policies or a policy_map, or logins get nothing",
            ));
        }
        for cidr in &self.bound_cidrs {
            Cidr::parse(cidr)
                .map_err(|_| Error::invalid("bound_cidrs", format!("{cidr:?} is not a network")))?;
        }
        if self.token_ttl_seconds > access::MAX_TOKEN_TTL.as_secs() {
            return Err(Error::invalid("token_ttl", "at most 32 days"));
        }
        if self.refresh_max_ttl_seconds > access::MAX_TOKEN_TTL.as_secs() {
            return Err(Error::invalid("refresh_max_ttl", "at most 32 days"));
        }
        if !(0..=3600).contains(&self.leeway_seconds) {
            return Err(Error::invalid("leeway_seconds", "between 0 and 3600"));
        }
        read_jwks(&self.jwks_file).map_err(|reason| Error::invalid("jwks_file", reason))?;
        Ok(())
    }
}

impl Vault {
    fn jwt_config(&self, name: &str) -> Result<Option<JwtConfig>> {
        self.data
            .get(Space::Config, &jwt_config_key(name))?
            .map(|bytes| from_json(&bytes, "a jwt config"))
            .transpose()
    }
}

impl Logins<'_> {
    /// Creates or replaces a JWT login configuration (system scope). The JWKS file is read
    /// now, so a wrong path or document is reported here, not at the first login.
    pub fn write_jwt_config(&self, caller: &Caller, config: JwtConfig) -> Result<()> {
        self.keyring()?;
        self.require_system_op(caller, SystemOp::AuthConfig)?;
        let mut config = config;
        config.validate()?;
        config.tenant_id = if config.tenant.is_empty() {
            String::new()
        } else {
            self.tenant_id(&TenantName::parse(&config.tenant)?)?
                .to_hex()
        };
        let mut batch = WriteBatch::new();
        batch.put(
            Space::Config,
            jwt_config_key(&config.name),
            to_json(&config)?,
        );
        Ok(self.data.write(batch)?)
    }

    pub fn read_jwt_config(&self, caller: &Caller, name: &str) -> Result<JwtConfig> {
        self.keyring()?;
        require_system(caller)?;
        self.jwt_config(name)?
            .ok_or_else(|| Error::NotFound(format!("jwt config {name}")))
    }

    pub fn delete_jwt_config(&self, caller: &Caller, name: &str) -> Result<()> {
        self.keyring()?;
        self.require_system_op(caller, SystemOp::AuthConfig)?;
        if self.jwt_config(name)?.is_none() {
            return Err(Error::NotFound(format!("jwt config {name}")));
        }
        let mut batch = WriteBatch::new();
        batch.delete(Space::Config, jwt_config_key(name));
        Ok(self.data.write(batch)?)
    }

    /// Logs in with a JWT under configuration `name`, from `source`.
    pub fn login_jwt(
        &self,
        name: &str,
        token: &Zeroizing<String>,
        source: Option<IpAddr>,
    ) -> Result<CreatedToken> {
        self.keyring()?;
        let config = self
            .jwt_config(name)?
            .ok_or_else(|| Error::login_failed(format!("unknown jwt config {name:?}")))?;
        if !Cidr::allows(&config.bound_cidrs, source) {
            return Err(Error::login_failed(format!(
                "jwt config {name}: login from outside its bound networks"
            )));
        }
        let jwks = read_jwks(&config.jwks_file)
            .map_err(|reason| Error::login_failed(format!("jwt config {name}: jwks: {reason}")))?;
        let leeway = if config.leeway_seconds == 0 {
            DEFAULT_LEEWAY_SECONDS
        } else {
            config.leeway_seconds
        };
        let claims = jwt::verify(
            token,
            &jwks,
            &Expectations {
                issuer: &config.issuer,
                audiences: &config.audiences,
                now_unix: self.now().div_euclid(1_000_000_000),
                leeway_seconds: leeway,
            },
        )
        .map_err(|e| Error::login_failed(format!("jwt config {name}: {e}")))?;
        let tenant_text = if config.tenant.is_empty() {
            claims.string(&config.tenant_claim).ok_or_else(|| {
                Error::login_failed(format!(
                    "jwt config {name}: the jwt has no string claim {:?}",
                    config.tenant_claim
                ))
            })?
        } else {
            config.tenant.as_str()
        };
        let unknown = || Error::login_failed(format!("jwt config {name}: unknown tenant"));
        let tenant = TenantName::parse(tenant_text).map_err(|_| unknown())?;
        let id = self.tenant_id(&tenant).map_err(|_| unknown())?;
        if !config.tenant_id.is_empty() && config.tenant_id != id.to_hex() {
            return Err(Error::login_failed(format!(
                "jwt config {name}: tenant {tenant} was deleted and re-created since the config was written"
            )));
        }
        let state = self.tenant_state(id)?.ok_or_else(unknown)?;
        let user_claim = if config.user_claim.is_empty() {
            "sub"
        } else {
            config.user_claim.as_str()
        };
        let user = claims
            .string(user_claim)
            .filter(|u| u.len() <= mfa::MAX_USER_LEN && mfa::check_entity(u).is_ok())
            .ok_or_else(|| {
                Error::login_failed(format!(
                    "jwt config {name}: the jwt has no usable string claim {user_claim:?}"
                ))
            })?;
        let mut policies: Vec<String> = config.policies.clone();
        for mapping in &config.policy_map {
            if claims
                .strings(&mapping.claim)
                .contains(&mapping.value.as_str())
            {
                policies.extend(mapping.policies.iter().cloned());
            }
        }
        policies.sort();
        policies.dedup();
        // Only policies the tenant has count: a claim naming another tenant must not carry
        // names that mean something else there.
        let mut existing = Vec::with_capacity(policies.len());
        for policy in policies {
            let parsed = PolicyName::parse(&policy).map_err(|_| corrupt("a jwt config"))?;
            if self
                .data
                .get(Space::Config, &schema::policy_key(id, &parsed))?
                .is_some()
            {
                existing.push(policy);
            }
        }
        let policies = existing;
        if policies.is_empty() {
            return Err(Error::login_failed(format!(
                "jwt config {name}: the jwt's claims grant no policy"
            )));
        }
        let ttl = match config.token_ttl_seconds {
            0 => access::DEFAULT_TOKEN_TTL,
            seconds => Duration::from_secs(seconds),
        };
        state.admit_login(source)?;
        let held = self.token_changes.of(Some(id));
        let _guard = lock(&held);
        self.issue(Issue {
            tenant: Some(id),
            system: false,
            policies,
            display_name: format!("jwt-{name}"),
            parent: String::new(),
            entity: Some(jwt_entity(name, id, user)),
            ttl,
            max_expires: 0,
            cidrs: Vec::new(),
            family_max_ttl: (config.refresh_max_ttl_seconds > 0)
                .then(|| Duration::from_secs(config.refresh_max_ttl_seconds).max(ttl)),
        })
    }
}
