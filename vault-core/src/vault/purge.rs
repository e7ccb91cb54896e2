//! Purging access-control records that can never be used again: tokens that expired, were
//! revoked or lost an ancestor; refresh families that ended, with their refresh records; and
//! AppRole secret ids past their lifetime. (A secret id's last use deletes it already.)
//!
//! Each maintenance round looks at a bounded number of records of each kind, continuing from
//! where the last round stopped and starting over at the end, so a round's cost does not grow
//! with the number of tokens. No lock is needed: nothing purged can come back to life (an
//! expired or orphaned token is refused, and renewal refuses a dead token), and a record is
//! deleted only together with the index entries that point at it.

use super::access::{accessor_key, children_prefix, token_record_key_hex};
use super::*;

/// Where each kind's scan goes on from in the next round.
#[derive(Default)]
pub(super) struct PurgeCursors {
    tokens: Vec<u8>,
    families: Vec<u8>,
    refresh: Vec<u8>,
    secret_ids: Vec<u8>,
}

#[derive(Deserialize)]
struct FamilyEnd {
    #[serde(default)]
    expires_unix_nanos: i64,
    #[serde(default)]
    revoked: bool,
}

#[derive(Deserialize)]
struct RefreshFamily {
    family: String,
}

#[derive(Deserialize)]
struct SecretIdEnd {
    expires_unix_nanos: i64,
}

impl Vault {
    /// One round of purging; returns how many records it deleted.
    pub(super) fn purge_access(&self, now: i64) -> Result<usize> {
        let budget = self.config.token_purge_per_round.max(1);
        let mut cursors = lock(&self.purge_cursors);
        let mut purged = 0;
        purged += self.purge_scan(b"token/", &mut cursors.tokens, budget, |_, value, batch| {
            let record: TokenRecord = from_json(value, "a token record")?;
            if !self.token_dead(&record, now)? {
                return Ok(false);
            }
            batch.delete(Space::Config, token_record_key_hex(&record.hash));
            let indexed = self
                .data
                .get(Space::Config, &accessor_key(&record.accessor))?;
            if indexed.as_deref() == Some(record.hash.as_bytes()) {
                batch.delete(Space::Config, accessor_key(&record.accessor));
            }
            let mut own_index = children_prefix(&record.parent);
            own_index.extend_from_slice(record.accessor.as_bytes());
            batch.delete(Space::Config, own_index);
            Ok(true)
        })?;
        purged += self.purge_scan(
            b"refresh/",
            &mut cursors.refresh,
            budget,
            |key, value, batch| {
                let record: RefreshFamily = from_json(value, "a refresh token record")?;
                if self.family_live(&record.family, now)? {
                    return Ok(false);
                }
                batch.delete(Space::Config, key.to_vec());
                Ok(true)
            },
        )?;
        purged += self.purge_scan(
            b"family/",
            &mut cursors.families,
            budget,
            |key, value, batch| {
                let family: FamilyEnd = from_json(value, "a refresh family")?;
                if !family.revoked && now < family.expires_unix_nanos {
                    return Ok(false);
                }
                batch.delete(Space::Config, key.to_vec());
                Ok(true)
            },
        )?;
        purged += self.purge_scan(
            b"secret-id/",
            &mut cursors.secret_ids,
            budget,
            |key, value, batch| {
                let record: SecretIdEnd = from_json(value, "a secret id record")?;
                if now < record.expires_unix_nanos {
                    return Ok(false);
                }
                batch.delete(Space::Config, key.to_vec());
                Ok(true)
            },
        )?;
        Ok(purged)
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

    fn family_live(&self, id: &str, now: i64) -> Result<bool> {
        Ok(
            match self
                .data
                .get(Space::Config, format!("family/{id}").as_bytes())?
            {
                Some(bytes) => {
                    let family: FamilyEnd = from_json(&bytes, "a refresh family")?;
                    !family.revoked && now < family.expires_unix_nanos
                }
                None => false,
            },
        )
    }

    /// Looks at up to `budget` records under `prefix` from `cursor`, deleting those `dead`
    /// says to (it adds the deletions to the batch), in one write; moves the cursor on, back
    /// to the start at the end.
    fn purge_scan(
        &self,
        prefix: &[u8],
        cursor: &mut Vec<u8>,
        budget: usize,
        mut dead: impl FnMut(&[u8], &[u8], &mut WriteBatch) -> Result<bool>,
    ) -> Result<usize> {
        if !cursor.starts_with(prefix) {
            *cursor = prefix.to_vec();
        }
        let page = self.data.scan(Space::Config, prefix, cursor, budget)?;
        match page.last() {
            Some((last, _)) if page.len() == budget => {
                *cursor = last.clone();
                cursor.push(0);
            }
            _ => *cursor = prefix.to_vec(),
        }
        let mut batch = WriteBatch::new();
        let mut purged = 0;
        for (key, value) in &page {
            if dead(key, value, &mut batch)? {
                purged += 1;
            }
        }
        if purged > 0 {
            self.data.write(batch)?;
        }
        Ok(purged)
    }
}
