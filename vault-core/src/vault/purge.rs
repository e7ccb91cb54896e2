//! Purging access-control records that can never be used again: tokens that expired, were
//! revoked or lost an ancestor; refresh families that ended, with their refresh records; and
//! AppRole secret ids past their lifetime. (A secret id's last use deletes it already.) Also
//! every record of a crypto-shredded tenant under a global key (`crate::schema::GLOBAL_RECORDS`):
//! its tokens, families (and so their refresh records), secret ids, the MFA enrolments of its
//! entities and its named-key schedule entries.
//!
//! Each maintenance round looks at a bounded number of records of each kind, continuing from
//! where the last round stopped and starting over at the end, so a round's cost does not grow
//! with the number of tokens. No lock is needed: nothing purged can come back to life (an
//! expired or orphaned token is refused, renewal refuses a dead token, and a shredded tenant is
//! never restored), and a record is deleted only together with the index entries that point at
//! it.

use std::collections::HashMap;

use super::*;
use crate::{
    schema::{
        FAMILY_PREFIX, MFA_PREFIX, NAMED_SCHEDULE_PREFIX, REFRESH_PREFIX, SECRET_ID_PREFIX,
        TOKEN_PREFIX, children_key, entity_tenant, family_key, named_schedule_tenant,
        token_record_key_hex,
    },
    storage::Storage,
};

/// Where each kind's scan goes on from in the next round.
#[derive(Default)]
pub(super) struct PurgeCursors {
    tokens: Vec<u8>,
    families: Vec<u8>,
    refresh: Vec<u8>,
    secret_ids: Vec<u8>,
    mfa: Vec<u8>,
    schedule: Vec<u8>,
}

#[derive(Deserialize)]
struct FamilyEnd {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    expires_unix_nanos: i64,
    #[serde(default)]
    revoked: bool,
}

#[derive(Deserialize)]
struct RefreshFamily {
    family: String,
}

/// The tenant an MFA enrolment names (enrolments from before it did name none).
#[derive(Deserialize)]
struct MfaTenant {
    #[serde(default)]
    tenant: String,
}

#[derive(Deserialize)]
struct SecretIdEnd {
    #[serde(default)]
    tenant: String,
    expires_unix_nanos: i64,
}

/// Which tenants are shredded, asked of the key store once per tenant per round.
struct Shredded<'a> {
    vault: &'a Vault,
    known: HashMap<TenantId, bool>,
}

impl Shredded<'_> {
    fn contains(&mut self, id: Option<TenantId>) -> Result<bool> {
        let Some(id) = id else {
            return Ok(false);
        };
        if let Some(known) = self.known.get(&id) {
            return Ok(*known);
        }
        let shredded = self.vault.tenant_shredded(id)?;
        self.known.insert(id, shredded);
        Ok(shredded)
    }

    /// For a tenant id as records hold it (hex; empty for the system scope).
    fn contains_hex(&mut self, hex: &str) -> Result<bool> {
        self.contains(TenantId::parse_hex(hex))
    }
}

impl Vault {
    /// One round of purging; returns how many records it deleted.
    pub(super) fn purge_access(&self, now: i64) -> Result<usize> {
        let budget = self.config.token_purge_per_round.max(1);
        let mut cursors = lock(&self.purge_cursors);
        let mut shredded = Shredded {
            vault: self,
            known: HashMap::new(),
        };
        let data: &dyn Storage = &*self.data;
        // Each kind of record is its own unit: one that fails is logged and the others run.
        let mut purged = 0;
        let mut failed = None;
        let mut unit = |kind: &str, result: Result<usize>| match result {
            Ok(count) => purged += count,
            Err(error) => {
                tracing::warn!(kind, %error, "purge of one kind of record failed; the others go on");
                failed.get_or_insert(error);
            }
        };
        unit(
            "tokens",
            self.purge_scan(
                data,
                TOKEN_PREFIX,
                &mut cursors.tokens,
                budget,
                |_, value, batch| {
                    let record: TokenRecord = from_json(value, "a token record")?;
                    if !shredded.contains_hex(&record.tenant)? && !self.token_dead(&record, now)? {
                        return Ok(false);
                    }
                    // Every read before the first delete: a record that fails here leaves the
                    // batch as it was, never half of its keys.
                    let indexed = self
                        .data
                        .get(Space::Config, &accessor_key(&record.accessor))?;
                    batch.delete(Space::Config, token_record_key_hex(&record.hash));
                    if indexed.as_deref() == Some(record.hash.as_bytes()) {
                        batch.delete(Space::Config, accessor_key(&record.accessor));
                    }
                    batch.delete(
                        Space::Config,
                        children_key(&record.parent, &record.accessor),
                    );
                    Ok(true)
                },
            ),
        );
        unit(
            "refresh tokens",
            self.purge_scan(
                data,
                REFRESH_PREFIX,
                &mut cursors.refresh,
                budget,
                |key, value, batch| {
                    let record: RefreshFamily = from_json(value, "a refresh token record")?;
                    if self.family_live(&record.family, now, &mut shredded)? {
                        return Ok(false);
                    }
                    batch.delete(Space::Config, key.to_vec());
                    Ok(true)
                },
            ),
        );
        unit(
            "refresh families",
            self.purge_scan(
                data,
                FAMILY_PREFIX,
                &mut cursors.families,
                budget,
                |key, value, batch| {
                    let family: FamilyEnd = from_json(value, "a refresh family")?;
                    if family_open(&family, now) && !shredded.contains_hex(&family.tenant)? {
                        return Ok(false);
                    }
                    batch.delete(Space::Config, key.to_vec());
                    Ok(true)
                },
            ),
        );
        unit(
            "secret ids",
            self.purge_scan(
                data,
                SECRET_ID_PREFIX,
                &mut cursors.secret_ids,
                budget,
                |key, value, batch| {
                    let record: SecretIdEnd = from_json(value, "a secret id record")?;
                    if now < record.expires_unix_nanos && !shredded.contains_hex(&record.tenant)? {
                        return Ok(false);
                    }
                    batch.delete(Space::Config, key.to_vec());
                    Ok(true)
                },
            ),
        );
        // The MFA enrolments of a shredded tenant's entities (AppRole and JWT logins).
        unit(
            "mfa enrolments",
            self.purge_scan(
                data,
                MFA_PREFIX,
                &mut cursors.mfa,
                budget,
                |key, value, batch| {
                    // The tenant the entity's name gives, if the record confirms it (stamped
                    // at a login's own enrolment, see mfa.rs) or the entity is an AppRole one
                    // (its name always carries its tenant). A legacy JWT entity's name is
                    // ambiguous (a user claim may start like a tenant id, and tokens of several
                    // tenants may share it), so such a record is never purged.
                    let named: MfaTenant = from_json(value, "an mfa enrolment")?;
                    let entity = std::str::from_utf8(&key[MFA_PREFIX.len()..]).ok();
                    let tenant = entity.and_then(entity_tenant).filter(|tenant| {
                        if named.tenant.is_empty() {
                            entity.is_some_and(|entity| entity.starts_with("approle:"))
                        } else {
                            named.tenant == tenant.to_hex()
                        }
                    });
                    if !shredded.contains(tenant)? {
                        return Ok(false);
                    }
                    batch.delete(Space::Config, key.to_vec());
                    Ok(true)
                },
            ),
        );
        // A shredded tenant's named-key schedule entries (key store); those that fall due go
        // at once anyway, this takes the ones due far ahead.
        unit(
            "named-key schedule",
            self.purge_scan(
                &*self.keys,
                NAMED_SCHEDULE_PREFIX,
                &mut cursors.schedule,
                budget,
                |key, _, batch| {
                    if !shredded.contains(named_schedule_tenant(key))? {
                        return Ok(false);
                    }
                    batch.delete(Space::Config, key.to_vec());
                    Ok(true)
                },
            ),
        );
        match failed {
            Some(error) => Err(error),
            None => Ok(purged),
        }
    }

    /// Whether a token can never be used again: expired, revoked (no longer indexed), or below
    /// an ancestor that is gone.
    fn token_dead(&self, record: &TokenRecord, now: i64) -> Result<bool> {
        if record.expires_unix_nanos != 0 && now >= record.expires_unix_nanos {
            return Ok(true);
        }
        let indexed = self
            .data
            .get(Space::Config, &accessor_key(&record.accessor))?;
        if indexed.as_deref() != Some(record.hash.as_bytes()) {
            return Ok(true);
        }
        Ok(!record.parent.is_empty() && self.record_by_accessor(&record.parent)?.is_none())
    }

    fn family_live(&self, id: &str, now: i64, shredded: &mut Shredded<'_>) -> Result<bool> {
        Ok(match self.data.get(Space::Config, &family_key(id))? {
            Some(bytes) => {
                let family: FamilyEnd = from_json(&bytes, "a refresh family")?;
                family_open(&family, now) && !shredded.contains_hex(&family.tenant)?
            }
            None => false,
        })
    }

    /// Looks at up to `budget` records of `store` under `prefix` (config space) from `cursor`,
    /// deleting those `dead` says to (it adds the deletions to the batch), in one write; moves
    /// the cursor on, back to the start at the end.
    fn purge_scan(
        &self,
        store: &dyn Storage,
        prefix: &[u8],
        cursor: &mut Vec<u8>,
        budget: usize,
        mut dead: impl FnMut(&[u8], &[u8], &mut WriteBatch) -> Result<bool>,
    ) -> Result<usize> {
        if !cursor.starts_with(prefix) {
            *cursor = prefix.to_vec();
        }
        let page = store.scan(Space::Config, prefix, cursor, budget)?;
        match page.last() {
            Some((last, _)) if page.len() == budget => {
                *cursor = last.clone();
                cursor.push(0);
            }
            _ => *cursor = prefix.to_vec(),
        }
        let mut batch = WriteBatch::new();
        let mut purged = 0;
        // A record that cannot be judged (it does not decode, a read fails) is passed over: the
        // rest of the page is purged all the same, and the error is reported once the page's
        // write is done. The cursor has moved on already, so it does not hold up later rounds.
        let mut failed = None;
        for (key, value) in &page {
            match dead(key, value, &mut batch) {
                Ok(true) => purged += 1,
                Ok(false) => {}
                Err(error) => {
                    failed.get_or_insert(error);
                }
            }
        }
        if purged > 0 {
            // Dead records need not go together; a page larger than the store takes in one
            // write goes in several, in order.
            for part in batch.split(store.batch_limits()) {
                store.write(part)?;
            }
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(purged),
        }
    }
}

/// A family not revoked and within its maximum lifetime.
fn family_open(family: &FamilyEnd, now: i64) -> bool {
    !family.revoked && now < family.expires_unix_nanos
}
