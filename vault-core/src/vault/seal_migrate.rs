//! Seal migration: from Shamir shares to the server's auto seal, and back, multi-party like
//! rekey, without changing the root key or the shares.
//!
//! 1. **Init** (no token, as with Vault, where the shares drive a migration: one current share,
//!    which counts as the first submission, so nobody without one can hold the only slot; the
//!    vault must be unsealed): the target, `auto` (the server must have been started with
//!    `--seal`) or `shamir` (the vault must be auto-sealed by the server's seal). A random
//!    nonce names the migration; one at a time, and none while a rekey is in progress or staged
//!    (nor a rekey while a migration is). Cancelling needs one current share too.
//! 2. **Submit**: each operator submits one current share (unseal shares towards `auto`,
//!    recovery shares towards `shamir`), checked against the share commitments before it
//!    counts. The submission that reaches the threshold combines them and checks the result
//!    (it must open the root key, or match the recovery key check), then commits the new seal
//!    configuration in one key-store write:
//!    - towards `auto`: a new unseal key seals the root key and is wrapped by the auto seal;
//!      the old unseal key becomes the recovery key, so the same shares go on as recovery
//!      shares;
//!    - towards `shamir`: the recovery key becomes the unseal key (it seals the root key), so
//!      the same shares go on as unseal shares.
//!
//!    The replaced configuration is compacted out of the key store's files (towards `auto`,
//!    it is what the shares alone would open).
//!
//! The shares submitted live in memory: a restart or a seal abandons the migration. A crash
//! before the commit write leaves the old seal; after it, the new one: the shares work either
//! way, as unseal or as recovery shares.

use super::rekey::{add_share, check_combined_key, check_current_share, new_nonce, nonce_matches};
use super::*;

/// Where a migration goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealTarget {
    /// To the server's auto seal (`--seal`).
    Auto,
    /// Back to Shamir shares.
    Shamir,
}

/// The migration in progress (in memory).
pub(super) struct Migration {
    nonce: String,
    target: SealTarget,
    /// What the vault migrates to: `shamir` or the auto seal's kind and id.
    to: String,
    started_unix_nanos: i64,
    submitted: Vec<UnsealShare>,
    /// A submission reached the threshold and is committing: further submissions and cancels
    /// are refused until it ends (a failure clears it).
    committing: bool,
}

/// What seal-migrate reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationProgress {
    pub nonce: String,
    /// `shamir`, or the auto seal's kind and key (e.g. `transit acme/unseal`).
    pub to: String,
    pub started_unix_nanos: i64,
    pub progress: u32,
    pub required: u32,
    /// The new seal is in force.
    pub complete: bool,
}

impl Migration {
    fn progress(&self, required: u32) -> MigrationProgress {
        MigrationProgress {
            nonce: self.nonce.clone(),
            to: self.to.clone(),
            started_unix_nanos: self.started_unix_nanos,
            progress: self.submitted.len() as u32,
            required,
            complete: false,
        }
    }
}

impl Seal<'_> {
    /// Starts a migration to `target` (the vault must be unsealed); `share`, a current share,
    /// is its first submission.
    pub fn seal_migrate_init(
        &self,
        target: SealTarget,
        share: UnsealShare,
    ) -> Result<MigrationProgress> {
        self.keyring()?;
        let (required, to) = {
            let seal_config = read(&self.seal_config);
            let config = seal_config.as_ref().ok_or(Error::NotInitialized)?;
            if config.share_commitments.is_empty() {
                return Err(Error::FailedPrecondition(
                    "this vault's shares have no commitments, so a share cannot be checked \
                     before it counts: rekey first, then migrate"
                        .into(),
                ));
            }
            check_current_share(config, &share)?;
            let to = match (target, &config.auto) {
                (SealTarget::Auto, Some(auto)) => {
                    return Err(Error::FailedPrecondition(format!(
                        "this vault is auto-sealed already ({} {})",
                        auto.kind, auto.id
                    )));
                }
                (SealTarget::Auto, None) => {
                    let seal = self.auto_seal.as_ref().ok_or_else(|| {
                        Error::FailedPrecondition(
                            "this server has no auto seal: start it with the seal to migrate to \
                             (--seal transit ... or --danger-seal-key-file), unseal it with the \
                             shares, then migrate"
                                .into(),
                        )
                    })?;
                    format!("{} {}", seal.kind(), seal.id())
                }
                (SealTarget::Shamir, None) => {
                    return Err(Error::FailedPrecondition(
                        "this vault is sealed with Shamir shares already".into(),
                    ));
                }
                (SealTarget::Shamir, Some(_)) => {
                    self.matching_auto_seal(config)?;
                    "shamir".to_owned()
                }
            };
            (config.threshold, to)
        };
        // Lock order: the seal configuration, then the rekey's lock, then the migration's
        // (innermost); none is held across the audit write below.
        let nonce = new_nonce()?;
        self.check_migration_can_start()?;
        if let Some(audit) = &self.audit {
            let mut entry = crate::audit::writer::system_entry(format!(
                "seal migration {nonce} to {to} requested"
            ));
            entry.method = "seal-migrate".into();
            audit.append(entry).map_err(|_| Error::AuditUnavailable)?;
        }
        let _rekeys = lock(&self.rekey);
        self.check_migration_can_start_held(&_rekeys)?;
        let mut migration = lock(&self.seal_migration);
        self.expire_migration(&mut migration);
        if let Some(existing) = migration.as_ref() {
            return Err(self.migration_in_progress(existing));
        }
        let state = Migration {
            nonce,
            target,
            to,
            started_unix_nanos: self.now(),
            submitted: vec![share],
            committing: false,
        };
        let progress = state.progress(required);
        *migration = Some(state);
        Ok(progress)
    }

    /// Refuses to start a migration while a rekey or another migration is in progress.
    fn check_migration_can_start(&self) -> Result<()> {
        let rekeys = lock(&self.rekey);
        self.check_migration_can_start_held(&rekeys)
    }

    fn check_migration_can_start_held(&self, rekeys: &super::rekey::Rekeys) -> Result<()> {
        if rekeys.started.is_some() || self.rekey_staged()? {
            return Err(Error::FailedPrecondition(
                "a rekey is in progress or waits for verification; finish or cancel it first"
                    .into(),
            ));
        }
        let mut migration = lock(&self.seal_migration);
        self.expire_migration(&mut migration);
        match migration.as_ref() {
            Some(existing) => Err(self.migration_in_progress(existing)),
            None => Ok(()),
        }
    }

    fn migration_in_progress(&self, existing: &Migration) -> Error {
        Error::FailedPrecondition(format!(
            "a seal migration to {} is in progress (nonce {}); cancel it first, or it lapses {} \
             minutes after it started",
            existing.to,
            existing.nonce,
            MIGRATION_LIFETIME_NANOS / 60_000_000_000
        ))
    }

    /// Forgets a migration that started more than [`MIGRATION_LIFETIME_NANOS`] ago (unless it
    /// is committing), so that one share holder cannot hold the one slot (and keep rekeys
    /// out) for good.
    fn expire_migration(&self, migration: &mut Option<Migration>) {
        if migration.as_ref().is_some_and(|state| {
            !state.committing
                && self.now().saturating_sub(state.started_unix_nanos) > MIGRATION_LIFETIME_NANOS
        }) {
            *migration = None;
        }
    }

    /// The migration in progress, if any (no token: it shows no secret).
    pub fn seal_migrate_status(&self) -> Result<Option<MigrationProgress>> {
        let required = self.current_threshold()?;
        let mut migration = lock(&self.seal_migration);
        self.expire_migration(&mut migration);
        Ok(migration.as_ref().map(|state| state.progress(required)))
    }

    /// Abandons the migration; `share` must be one of the current shares. The seal stays as
    /// it is.
    pub fn seal_migrate_cancel(&self, share: &UnsealShare) -> Result<()> {
        {
            let seal_config = read(&self.seal_config);
            let config = seal_config.as_ref().ok_or(Error::NotInitialized)?;
            check_current_share(config, share)?;
        }
        let mut migration = lock(&self.seal_migration);
        match migration.as_ref() {
            Some(state) if state.committing => Err(Error::FailedPrecondition(
                "the seal migration is being committed; see vault-cli seal-migrate status".into(),
            )),
            Some(_) => {
                *migration = None;
                Ok(())
            }
            None => Err(Error::NotFound("seal migration".into())),
        }
    }

    /// Refuses a rekey while a migration is in progress; the caller holds the rekey's lock
    /// (taken before the migration's, as in [`Seal::seal_migrate_init`]).
    pub(super) fn refuse_during_migration(&self) -> Result<()> {
        let mut migration = lock(&self.seal_migration);
        self.expire_migration(&mut migration);
        match migration.as_ref() {
            Some(existing) => Err(Error::FailedPrecondition(format!(
                "a seal migration to {} is in progress (nonce {}); finish or cancel it first",
                existing.to, existing.nonce
            ))),
            None => Ok(()),
        }
    }

    /// Adds one current share to the migration `nonce`; the one that reaches the threshold
    /// commits the new seal. The auto seal is asked (and its wrap checked by unwrapping it)
    /// with no lock held; the commit then requires the seal configuration to be unchanged.
    pub fn seal_migrate_submit(
        &self,
        nonce: &str,
        share: UnsealShare,
    ) -> Result<MigrationProgress> {
        self.keyring()?;
        // Checked against the configuration before the migration's lock is taken (it is the
        // innermost lock: nothing is locked while holding it).
        let threshold = {
            let seal_config = read(&self.seal_config);
            let config = seal_config.as_ref().ok_or(Error::NotInitialized)?;
            check_current_share(config, &share)?;
            config.threshold
        };
        // The shares are counted under the migration's lock only; until the new
        // configuration is written they stay, so that a failure below (the seal, the audit
        // log, storage) loses no operator's submission.
        let (combined, target, to, started) = {
            let mut migration = lock(&self.seal_migration);
            self.expire_migration(&mut migration);
            let state = migration
                .as_mut()
                .ok_or_else(|| Error::NotFound("seal migration".into()))?;
            if !nonce_matches(&state.nonce, nonce) {
                return Err(Error::invalid(
                    "nonce",
                    "does not name the seal migration in progress (see vault-cli seal-migrate status)",
                ));
            }
            if state.committing {
                return Err(Error::FailedPrecondition(
                    "the seal migration is being committed; see vault-cli seal-migrate status"
                        .into(),
                ));
            }
            add_share(&mut state.submitted, share)?;
            if (state.submitted.len() as u32) < threshold {
                return Ok(state.progress(threshold));
            }
            let combined = shamir::combine(&state.submitted)?;
            state.committing = true;
            (
                combined,
                state.target,
                state.to.clone(),
                state.started_unix_nanos,
            )
        };
        let nonce = nonce.trim().to_owned();
        let committed = self.commit_migration(&nonce, target, &to, combined);
        if committed.is_err() {
            // The shares stay: the operators may submit again (or cancel).
            if let Some(state) = lock(&self.seal_migration)
                .as_mut()
                .filter(|state| state.nonce == nonce)
            {
                state.committing = false;
            }
        }
        committed?;
        // The replaced configuration leaves the files (towards the auto seal it is what the
        // shares alone open), with no lock held: compaction can take a while.
        if let Err(error) = self.keys.compact() {
            tracing::warn!(%error, "key store compaction after a seal migration failed; retried at the next one");
        }
        Ok(MigrationProgress {
            nonce,
            to,
            started_unix_nanos: started,
            progress: threshold,
            required: threshold,
            complete: true,
        })
    }

    /// Makes and commits the new seal configuration of the migration `nonce` (marked
    /// committing). The auto seal is asked with no lock held; the commit requires the seal
    /// configuration unchanged and the migration still there (not cancelled, not sealed).
    fn commit_migration(
        &self,
        nonce: &str,
        target: SealTarget,
        to: &str,
        combined: SecretKey,
    ) -> Result<()> {
        let (current, prepared) = {
            let seal_config = read(&self.seal_config);
            let config = seal_config.as_ref().ok_or(Error::NotInitialized)?;
            check_combined_key(config, &combined)?;
            let prepared = match target {
                SealTarget::Auto => Prepared::ToAuto(self.prepare_auto(config, &combined)?),
                SealTarget::Shamir => Prepared::Ready(self.shamir_sealed_config(config, combined)?),
            };
            (to_json(config)?, prepared)
        };
        let new_config = match prepared {
            Prepared::ToAuto(toward) => toward.wrapped_by(self.auto_seal.as_ref())?,
            Prepared::Ready(config) => config,
        };
        if let Some(audit) = &self.audit {
            let mut entry = crate::audit::writer::system_entry(format!(
                "seal migration {nonce}: committing the move to {to} (the shares go on as {})",
                if new_config.auto.is_some() {
                    "recovery shares"
                } else {
                    "unseal shares"
                }
            ));
            entry.method = "seal-migrate".into();
            audit.append(entry).map_err(|_| Error::AuditUnavailable)?;
        }
        let mut seal_config = write(&self.seal_config);
        let unchanged = match seal_config.as_ref() {
            Some(config) => to_json(config)? == current,
            None => false,
        };
        if !unchanged {
            return Err(Error::FailedPrecondition(
                "the seal configuration changed during the migration; cancel it and start again"
                    .into(),
            ));
        }
        // The migration's lock inside the seal configuration's (the order everywhere).
        let mut migration = lock(&self.seal_migration);
        if !migration
            .as_ref()
            .is_some_and(|state| state.nonce == nonce && state.committing)
        {
            return Err(Error::FailedPrecondition(
                "the seal migration was cancelled (or the vault sealed) while it committed; \
                 nothing was changed"
                    .into(),
            ));
        }
        let mut batch = WriteBatch::new();
        batch.put(Space::Config, SEAL_CONFIG_KEY, to_json(&new_config)?);
        self.keys.write(batch)?;
        *seal_config = Some(new_config);
        *migration = None;
        Ok(())
    }

    /// Towards the auto seal: a new unseal key seals the root key; `unseal_key` (what the
    /// shares combine to) becomes the recovery key. The new key is wrapped afterwards, with no
    /// lock held ([`TowardAuto::wrapped_by`]).
    fn prepare_auto(&self, config: &SealConfig, unseal_key: &SecretKey) -> Result<TowardAuto> {
        let seal = self.auto_seal.as_ref().ok_or_else(|| {
            Error::FailedPrecondition("this server has no auto seal (--seal)".into())
        })?;
        let root = open_root_key(config, unseal_key)?;
        let version = config.next_version()?;
        let new_unseal = SecretKey::generate()?;
        let sealed = seal_root_key(&new_unseal, version, &root)?;
        drop(root);
        let share_version = config.share_version();
        Ok(TowardAuto {
            config: SealConfig {
                unseal_key_version: version,
                root_key_sealed: STANDARD.encode(&sealed),
                share_version: Some(share_version),
                auto: Some(AutoSealRecord {
                    kind: seal.kind().to_owned(),
                    id: seal.id(),
                    wrapped_unseal_key: String::new(),
                    recovery_key_check: super::rekey::recovery_check(share_version, unseal_key),
                }),
                ..config.clone()
            },
            unseal_key: new_unseal,
        })
    }

    /// Towards Shamir: `recovery_key` (what the recovery shares combine to) becomes the unseal
    /// key and seals the root key in force.
    fn shamir_sealed_config(
        &self,
        config: &SealConfig,
        recovery_key: SecretKey,
    ) -> Result<SealConfig> {
        // The seal configuration's lock is held: not `keyring()`, which takes it again.
        let keyring = self.unsealed_keyring().ok_or(Error::Sealed)?;
        if keyring.root_version != config.root_key_version {
            return Err(Error::FailedPrecondition(
                "this node holds an older root key than the one in force; unseal it again first"
                    .into(),
            ));
        }
        let version = config.next_version()?;
        let sealed = seal_root_key(&recovery_key, version, &keyring.root)?;
        drop(recovery_key);
        Ok(SealConfig {
            unseal_key_version: version,
            root_key_sealed: STANDARD.encode(&sealed),
            share_version: Some(config.share_version()),
            auto: None,
            ..config.clone()
        })
    }
}

/// How long a migration may collect shares before it lapses.
const MIGRATION_LIFETIME_NANOS: i64 = 15 * 60 * 1_000_000_000;

/// The new configuration of a submission that reached the threshold.
enum Prepared {
    /// Towards the auto seal: still to be wrapped.
    ToAuto(TowardAuto),
    Ready(SealConfig),
}

/// An auto-sealed configuration whose new unseal key is still to be wrapped.
struct TowardAuto {
    config: SealConfig,
    unseal_key: SecretKey,
}

impl TowardAuto {
    /// Wraps the new unseal key with `seal` (checking that it unwraps again).
    fn wrapped_by(self, seal: Option<&Arc<dyn AutoSeal>>) -> Result<SealConfig> {
        let seal = seal.ok_or_else(|| {
            Error::FailedPrecondition("this server has no auto seal (--seal)".into())
        })?;
        let wrapped = crate::autoseal::wrap_checked(
            seal.as_ref(),
            &self.unseal_key,
            self.config.unseal_key_version,
        )?;
        let mut config = self.config;
        if let Some(record) = &mut config.auto {
            record.wrapped_unseal_key = wrapped;
        }
        Ok(config)
    }
}
