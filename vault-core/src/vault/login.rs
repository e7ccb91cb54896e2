//! Issuing tokens, refresh families, and refreshing.
//!
//! A refresh family starts when a token is created or a login succeeds with a refresh token. It
//! has a maximum lifetime and a generation; each refresh token belongs to one generation and is
//! good for one exchange, which revokes the family's current access token and issues the next
//! pair. Presenting a refresh token that was already exchanged revokes the whole family (its
//! holder and whoever stole it both lose access), unless it comes back within
//! [`REFRESH_GRACE`] of its first use: a client that lost the answer to a refresh and retries
//! gets a new pair, and the pair it never saw is revoked (only for the generation just
//! replaced). Revoking a family's access token, or the token that created the family, ends the
//! family. An exchange revokes the old access token and issues the next pair in one write.
//!
//! Storage: `family/<id>` holds the family, `refresh/<keyed hash>` each refresh token (kept
//! after use, so a reuse is recognized, until the family is purged).

use std::time::Duration;

use std::net::IpAddr;

use super::approle::Logins;
use super::*;
use crate::token::TokenKind;
use access::{MAX_TOKEN_TTL, Networks};
use schema::{children_key, family_key, refresh_key, token_record_key_hex};

/// How long after its first use a refresh token may be presented again without being taken
/// for stolen.
pub const REFRESH_GRACE: Duration = Duration::from_secs(30);
/// Default maximum lifetime of a refresh family.
pub const DEFAULT_FAMILY_MAX_TTL: Duration = Duration::from_secs(24 * 3600);

pub(super) fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

/// The smaller of two deadlines where 0 means "none".
pub(super) fn nonzero_min(a: i64, b: i64) -> i64 {
    match (a, b) {
        (0, b) => b,
        (a, 0) => a,
        (a, b) => a.min(b),
    }
}

/// Everything a new token gets; checked by the caller of [`Vault::issue`].
pub(super) struct Issue {
    pub tenant: Option<TenantId>,
    pub system: bool,
    pub policies: Vec<String>,
    pub display_name: String,
    /// The creating token's accessor; empty for a login.
    pub parent: String,
    /// `None`: the token starts its own entity (`token:<its accessor>`).
    pub entity: Option<String>,
    pub ttl: Duration,
    /// A cap on the token's life (0: none beyond [`MAX_TOKEN_TTL`]).
    pub max_expires: i64,
    pub cidrs: Vec<String>,
    /// Start a refresh family living at most this long.
    pub family_max_ttl: Option<Duration>,
}

#[derive(Clone, Serialize, Deserialize)]
struct FamilyRecord {
    id: String,
    tenant: String,
    policies: Vec<String>,
    display_name: String,
    parent: String,
    entity: String,
    cidrs: Vec<String>,
    ttl_nanos: i64,
    created_unix_nanos: i64,
    expires_unix_nanos: i64,
    generation: u64,
    /// The access token of the current generation.
    current_accessor: String,
    revoked: bool,
}

/// No Debug: holds a keyed hash.
#[derive(Serialize, Deserialize)]
struct RefreshRecord {
    hash: String,
    family: String,
    generation: u64,
    /// 0 until exchanged.
    used_unix_nanos: i64,
}

impl Vault {
    /// Writes a new token (and, if asked, its refresh family) in one batch. Call with
    /// `token_changes` held.
    pub(super) fn issue(&self, issue: Issue) -> Result<CreatedToken> {
        self.issue_in(WriteBatch::new(), issue)
    }

    /// [`Vault::issue`], committing `batch` (e.g. a spent use of a login credential) in the
    /// same write.
    pub(super) fn issue_in(&self, mut batch: WriteBatch, issue: Issue) -> Result<CreatedToken> {
        let keyring = self.keyring()?;
        let now = self.now();
        let mut max_expires = now.saturating_add(nanos(MAX_TOKEN_TTL));
        max_expires = nonzero_min(max_expires, issue.max_expires);
        let family = match issue.family_max_ttl {
            Some(max_ttl) => {
                let expires = now.saturating_add(nanos(max_ttl)).min(max_expires);
                Some(FamilyRecord {
                    id: new_accessor()?.replacen(crate::token::ACCESSOR_PREFIX, "vf.", 1),
                    tenant: issue.tenant.map(|t| t.to_hex()).unwrap_or_default(),
                    policies: issue.policies.clone(),
                    display_name: issue.display_name.clone(),
                    parent: issue.parent.clone(),
                    entity: String::new(),
                    cidrs: issue.cidrs.clone(),
                    ttl_nanos: nanos(issue.ttl),
                    created_unix_nanos: now,
                    expires_unix_nanos: expires,
                    generation: 0,
                    current_accessor: String::new(),
                    revoked: false,
                })
            }
            None => None,
        };
        let (created, refresh) = self.issue_into(&mut batch, &keyring, issue, family)?;
        self.data.write(batch)?;
        Ok(CreatedToken {
            token: created.0,
            refresh_token: refresh,
            info: created.1,
        })
    }

    /// Adds a new token (and the next generation of `family`, if given) to `batch`.
    fn issue_into(
        &self,
        batch: &mut WriteBatch,
        keyring: &Keyring,
        issue: Issue,
        family: Option<FamilyRecord>,
    ) -> Result<((Token, TokenInfo), Option<Token>)> {
        let now = self.now();
        let mut max_expires = now.saturating_add(nanos(MAX_TOKEN_TTL));
        max_expires = nonzero_min(max_expires, issue.max_expires);
        if let Some(family) = &family {
            max_expires = max_expires.min(family.expires_unix_nanos);
        }
        let token = Token::generate()?;
        let hash = keyring.token_hasher.hash(&token);
        let accessor = new_accessor()?;
        let entity = issue
            .entity
            .clone()
            .or_else(|| family.as_ref().map(|f| f.entity.clone()))
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| format!("token:{accessor}"));
        let record = TokenRecord {
            hash: hash.to_hex(),
            accessor,
            policies: issue.policies,
            display_name: issue.display_name,
            created_unix_nanos: now,
            tenant: issue.tenant.map(|t| t.to_hex()).unwrap_or_default(),
            system: issue.system,
            parent: issue.parent,
            expires_unix_nanos: now.saturating_add(nanos(issue.ttl)).min(max_expires),
            max_expires_unix_nanos: max_expires,
            ttl_nanos: nanos(issue.ttl),
            cidrs: issue.cidrs,
            entity,
            family: family.as_ref().map(|f| f.id.clone()).unwrap_or_default(),
        };
        let children = children_key(&record.parent, &record.accessor);
        batch
            .put(Space::Config, token_record_key(&hash), to_json(&record)?)
            .put(Space::Config, accessor_key(&record.accessor), hash.to_hex());
        if !record.parent.is_empty() {
            batch.put(Space::Config, children, Vec::new());
        }
        let refresh = match family {
            Some(mut family) => {
                family.generation += 1;
                family.current_accessor = record.accessor.clone();
                family.entity = record.entity.clone();
                let refresh = Token::generate_kind(TokenKind::Refresh)?;
                let refresh_hash = keyring.token_hasher.hash(&refresh);
                let refresh_record = RefreshRecord {
                    hash: refresh_hash.to_hex(),
                    family: family.id.clone(),
                    generation: family.generation,
                    used_unix_nanos: 0,
                };
                batch
                    .put(Space::Config, family_key(&family.id), to_json(&family)?)
                    .put(
                        Space::Config,
                        refresh_key(&refresh_hash),
                        to_json(&refresh_record)?,
                    );
                Some(refresh)
            }
            None => None,
        };
        let info = self.token_info(&record)?;
        Ok(((token, info), refresh))
    }

    fn family(&self, id: &str) -> Result<Option<FamilyRecord>> {
        self.data
            .get(Space::Config, &family_key(id))?
            .map(|bytes| from_json(&bytes, "a refresh family"))
            .transpose()
    }

    /// Adds the revocation of a family (its refresh tokens stop working) to `batch`.
    pub(super) fn revoke_family_into(&self, batch: &mut WriteBatch, id: &str) -> Result<()> {
        if let Some(mut family) = self.family(id)? {
            family.revoked = true;
            batch.put(Space::Config, family_key(id), to_json(&family)?);
        }
        Ok(())
    }

    /// A family may refresh while its creator (if any) is alive and the caller is inside its
    /// networks.
    fn check_family_alive(&self, family: &FamilyRecord, source: Option<IpAddr>) -> Result<()> {
        if !crate::cidr::Cidr::allows(&family.cidrs, source) {
            return Err(Error::login_failed(format!(
                "refresh from outside the family's networks ({})",
                family.cidrs.join(", ")
            )));
        }
        if family.parent.is_empty() {
            return Ok(());
        }
        match self.record_by_accessor(&family.parent)? {
            Some(parent) => self
                .check_alive(&parent, Networks::From(source))
                .map_err(|e| {
                    Error::login_failed(format!("the family's creator: {}", e.audit_detail()))
                }),
            None => Err(Error::login_failed("the family's creator was revoked")),
        }
    }
}

impl Logins<'_> {
    /// Exchanges a refresh token for a new access token and refresh token (no access token is
    /// needed: the refresh token is the credential). `source` is the caller's address.
    pub fn refresh(&self, presented: &Token, source: Option<IpAddr>) -> Result<CreatedToken> {
        let keyring = self.keyring()?;
        let hash = keyring.token_hasher.hash(presented);
        let key = refresh_key(&hash);
        // Token changes are serialized per tenant: find the family's tenant first (everything
        // is read again under the lock).
        let tenant_of_family = match self.data.get(Space::Config, &key)? {
            Some(bytes) => {
                let record: RefreshRecord = from_json(&bytes, "a refresh token record")?;
                self.family(&record.family)?
                    .and_then(|family| TenantId::parse_hex(&family.tenant))
            }
            None => None,
        };
        let held = self.token_changes.of(tenant_of_family);
        let _guard = lock(&held);
        let Some(bytes) = self.data.get(Space::Config, &key)? else {
            return Err(Error::login_failed("unknown refresh token"));
        };
        let mut record: RefreshRecord = from_json(&bytes, "a refresh token record")?;
        if !hash
            .matches_hex(&record.hash)
            .ok_or_else(|| corrupt("a refresh token record"))?
        {
            return Err(Error::login_failed("unknown refresh token"));
        }
        let family = self
            .family(&record.family)?
            .ok_or_else(|| Error::login_failed("the refresh token's family is gone"))?;
        let id = family.id.clone();
        if family.revoked {
            return Err(Error::login_failed(format!(
                "refresh family {id} is revoked"
            )));
        }
        let now = self.now();
        if now >= family.expires_unix_nanos {
            return Err(Error::login_failed(format!(
                "refresh family {id} reached its maximum lifetime"
            )));
        }
        let current = family.generation;
        let fresh = record.used_unix_nanos == 0 && record.generation == current;
        let retry = record.used_unix_nanos != 0
            && record.generation + 1 == current
            && now.saturating_sub(record.used_unix_nanos) <= nanos(REFRESH_GRACE);
        if !fresh && !retry {
            // A used refresh token came back: someone holds a copy. End the family.
            let mut batch = WriteBatch::new();
            self.revoke_family_into(&mut batch, &id)?;
            if let Some(live) = self.record_by_accessor(&family.current_accessor)? {
                // Tokens it created die with it (and are purged by maintenance).
                self.revoke_into(&mut batch, &live)?;
            }
            self.data.write(batch)?;
            return Err(Error::login_failed(format!(
                "refresh token of generation {} reused (current {current}); family {id} revoked",
                record.generation
            )));
        }
        self.check_family_alive(&family, source)?;
        let tenant = match family.tenant.as_str() {
            "" => None,
            hex => Some(TenantId::parse_hex(hex).ok_or_else(|| corrupt("a refresh family"))?),
        };
        if let Some(tenant) = tenant {
            self.tenant_state(tenant)?
                .ok_or_else(|| Error::login_failed(format!("family {id}: tenant deleted")))?
                .admit(source)?;
        }
        let mut batch = WriteBatch::new();
        if let Some(live) = self.record_by_accessor(&family.current_accessor)? {
            // The current access token goes; its family must not (so no revoke_into here).
            batch
                .delete(Space::Config, token_record_key_hex(&live.hash))
                .delete(Space::Config, accessor_key(&live.accessor))
                .delete(Space::Config, children_key(&live.parent, &live.accessor));
        }
        if record.used_unix_nanos == 0 {
            record.used_unix_nanos = now;
            batch.put(Space::Config, key, to_json(&record)?);
        }
        let issue = Issue {
            tenant,
            system: false,
            policies: family.policies.clone(),
            display_name: family.display_name.clone(),
            parent: family.parent.clone(),
            entity: Some(family.entity.clone()),
            ttl: Duration::from_nanos(u64::try_from(family.ttl_nanos).unwrap_or(0)),
            max_expires: family.expires_unix_nanos,
            cidrs: family.cidrs.clone(),
            family_max_ttl: None,
        };
        let ((token, info), refresh) =
            self.issue_into(&mut batch, &keyring, issue, Some(family))?;
        self.data.write(batch)?;
        Ok(CreatedToken {
            token,
            refresh_token: refresh,
            info,
        })
    }
}
