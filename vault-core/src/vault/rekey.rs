//! Rekey: new unseal shares (and threshold) for the same root key, multi-party like unseal and
//! two-phase, so that no lost answer can leave the vault without a working set of shares; and
//! the share checks that tell whether a share belongs to the current (or staged) set.
//!
//! 1. **Start** (system scope): the new share count, threshold, optional root rotation and
//!    optional recipients (one age public key per new share). A random nonce names the rekey.
//! 2. **Submit**: each operator submits one *current* share with that nonce (no token: the
//!    share is the credential; it is checked against the current share commitments before it
//!    counts). The submission that reaches the current threshold combines them, opens the root
//!    key, makes a new unseal key and splits it, and **stages** the new configuration (the
//!    root key sealed under the new unseal key, one commitment per new share, a verification
//!    nonce) in one key-store write under `seal/staged`. The new shares are handed out
//!    (encrypted to their recipients if given). The old shares still unseal.
//! 3. **Verify**: operators submit a threshold of the *new* shares with the verification nonce.
//!    They must open the staged root key, which must be the current root key; then one
//!    key-store write replaces `seal/config` with the staged configuration (re-sealing the
//!    keyring under a new root key first, with root rotation) and removes `seal/staged`. Only
//!    then do the old shares stop working.
//!
//! The submissions of step 2, and the new shares submitted in step 3, live in memory: a restart
//! abandons a rekey still collecting (the staged configuration stays). Shares are handed out
//! encrypted with age X25519 (`crate::recipient`) when recipients are given. In step 3 the
//! staged root key must open the token hashing key, which is how it is known to be the root
//! key in force.
//!
//! Root rotation (`--rotate-root`): the commit write of step 3 also carries every KEK record,
//! the system keys and the previous root keys re-sealed under a new root key, and the old root
//! key sealed under the new one (`sys/root-previous/<version>`: MFA enrolments in the data
//! store stay sealed under the root key of their time). The unsealed vault switches to the new
//! keyring at once, keeping its KEK cache and counters.
//!
//! Cancelling removes the staged configuration. A crash at any point leaves exactly one working
//! set: before the commit write, the old shares (a staged rekey survives a restart and can
//! still be verified or cancelled); after it, the new ones.
//!
//! Commitments: SHA-256 over a domain tag, the unseal key version and the share. A share is 33
//! bytes of which 32 are uniformly random to anyone holding fewer than a threshold of shares,
//! so the hash reveals nothing useful and cannot be inverted.

use ring::digest;
use subtle::ConstantTimeEq;

use super::*;
use crate::{
    recipient::{Handout, ShareRecipient},
    schema::SEAL_STAGED_KEY,
};

const COMMITMENT_DOMAIN: &[u8] = b"vault.share-commitment.v1";
const RECOVERY_DOMAIN: &[u8] = b"vault.recovery-key.v1";

/// The rekey in progress, collecting current shares (in memory: a restart abandons it).
pub(super) struct RekeyState {
    nonce: String,
    shares: u32,
    threshold: u32,
    /// Also rotate the root key (re-sealing the keyring under a new one) at the commit.
    rotate_root: bool,
    started_unix_nanos: i64,
    /// One per new share, in order; empty: the shares are handed out in the clear.
    recipients: Vec<ShareRecipient>,
    submitted: Vec<UnsealShare>,
}

/// The rekeys of the vault: one collecting current shares, or one staged and collecting new
/// shares for verification (whose configuration is durable, see [`StagedRekey`]).
#[derive(Default)]
pub(super) struct Rekeys {
    pub(super) started: Option<RekeyState>,
    /// New shares submitted towards verifying the staged rekey (in memory).
    verifying: Vec<UnsealShare>,
}

/// A staged rekey: the configuration that replaces the current one once verified.
#[derive(Serialize, Deserialize)]
struct StagedRekey {
    /// Names the verification (not the nonce of the rekey that staged it).
    nonce: String,
    shares: u32,
    threshold: u32,
    rotate_root: bool,
    /// The unseal key version of the configuration it replaces: a stale staging (from before
    /// another commit) is never applied.
    replaces_unseal_key_version: u32,
    unseal_key_version: u32,
    /// The current root key sealed under the new unseal key (base64).
    root_key_sealed: String,
    share_commitments: Vec<String>,
    started_unix_nanos: i64,
    staged_unix_nanos: i64,
    /// Who the new shares were encrypted to (public keys), for everyone to check.
    #[serde(default)]
    recipients: Vec<String>,
    /// With an auto seal the new shares are recovery shares: the check of the new recovery
    /// key (and `root_key_sealed` is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recovery_key_check: Option<String>,
}

/// A new unseal key already wrapped by the auto seal, for the staged rekey `nonce` of
/// `version` (a root rotation of an auto-sealed vault).
struct Prewrapped {
    unseal_key: SecretKey,
    wrapped: String,
    version: u32,
    nonce: String,
}

/// What a rekey step reports. `new_shares` is filled once, for the submission that stages it.
pub struct RekeyProgress {
    pub nonce: String,
    pub shares: u32,
    pub threshold: u32,
    /// Current shares submitted so far, and how many are needed (the current threshold).
    pub progress: u32,
    pub required: u32,
    pub rotate_root: bool,
    pub started_unix_nanos: i64,
    /// Staged: the new shares were handed out and wait for verification.
    pub staged: bool,
    /// The nonce to verify with, once staged.
    pub verification_nonce: String,
    /// New shares submitted towards verification, and how many are needed (the new threshold).
    pub verification_progress: u32,
    pub verification_required: u32,
    /// Verified and committed: the new shares are in force.
    pub complete: bool,
    pub new_shares: Vec<Handout<UnsealShare>>,
    /// The age public keys the new shares go to, in order (empty: in the clear, to the
    /// submission that stages the rekey). Shown to every operator, since whoever started the
    /// rekey chose them.
    pub recipients: Vec<String>,
}

/// What the share check says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareCheck {
    /// The share belongs to the current share set.
    Current,
    /// It belongs to the share set of a rekey waiting for verification.
    Staged,
    /// It does not (an old, mistyped or foreign share).
    NotCurrent,
    /// The vault was initialized before commitments were kept; a rekey adds them.
    Unknown,
}

pub(super) fn share_commitment(unseal_key_version: u32, share: &UnsealShare) -> String {
    versioned_hash(COMMITMENT_DOMAIN, unseal_key_version, share.expose_bytes())
}

/// The check of an auto-sealed vault's recovery key (what a threshold of recovery shares
/// combines to) for share version `version`. The recovery key is 32 random bytes, so the hash
/// cannot be inverted.
pub(super) fn recovery_check(version: u32, recovery_key: &SecretKey) -> String {
    versioned_hash(RECOVERY_DOMAIN, version, recovery_key.expose_secret())
}

/// Hex SHA-256 over a domain tag, a version and `secret`.
fn versioned_hash(domain: &[u8], version: u32, secret: &[u8]) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(domain);
    context.update(&version.to_be_bytes());
    context.update(secret);
    hex::encode(context.finish())
}

/// Whether `key`, combined from a threshold of the current shares, is what they are shares
/// of: the unseal key (it opens the root key), or with an auto seal the recovery key (its
/// check matches, in constant time). `UnsealFailed` otherwise.
pub(super) fn check_combined_key(config: &SealConfig, key: &SecretKey) -> Result<()> {
    match &config.auto {
        None => open_root_key(config, key).map(drop),
        Some(auto) => {
            let candidate = recovery_check(config.share_version(), key);
            if bool::from(
                candidate
                    .as_bytes()
                    .ct_eq(auto.recovery_key_check.as_bytes()),
            ) {
                Ok(())
            } else {
                Err(Error::UnsealFailed)
            }
        }
    }
}

/// Whether `share` is one of the shares `commitments` were made for (constant time in the
/// share and over every commitment).
fn committed(unseal_key_version: u32, commitments: &[String], share: &UnsealShare) -> bool {
    let candidate = share_commitment(unseal_key_version, share);
    let mut found = subtle::Choice::from(0u8);
    for commitment in commitments {
        found |= commitment.as_bytes().ct_eq(candidate.as_bytes());
    }
    bool::from(found)
}

/// Refuses a share that is not one of the current shares, before it counts towards anything:
/// otherwise anyone could submit garbage and make the combine at threshold fail for everyone.
/// A vault from before commitments has none to check against.
pub(super) fn check_current_share(config: &SealConfig, share: &UnsealShare) -> Result<()> {
    if config.share_commitments.is_empty()
        || committed(config.share_version(), &config.share_commitments, share)
    {
        Ok(())
    } else {
        Err(not_a_share("current"))
    }
}

fn not_a_share(set: &str) -> Error {
    Error::invalid(
        "share",
        format!("this share is not one of the {set} shares"),
    )
}

/// Adds `share` to `submitted` unless a share with its identifier is there already (the same
/// share again counts once; a different one is refused and changes nothing).
pub(super) fn add_share(submitted: &mut Vec<UnsealShare>, share: UnsealShare) -> Result<()> {
    if let Some(existing) = submitted
        .iter()
        .find(|s| s.identifier() == share.identifier())
    {
        if existing.same_as(&share) {
            return Ok(());
        }
        return Err(Error::invalid(
            "share",
            "differs from a share with the same identifier already submitted",
        ));
    }
    submitted.push(share);
    Ok(())
}

/// Splits `unseal_key` and hands each share out, encrypted to its recipient if there are any.
pub(super) fn hand_out(
    split: Vec<UnsealShare>,
    recipients: &[ShareRecipient],
) -> Result<Vec<Handout<UnsealShare>>> {
    if recipients.is_empty() {
        return Ok(split.into_iter().map(Handout::Plain).collect());
    }
    split
        .iter()
        .zip(recipients)
        .map(|(share, recipient)| {
            recipient
                .encrypt(share.expose_secret().as_bytes())
                .map(Handout::Encrypted)
        })
        .collect()
}

/// Checks recipients against the number of shares they are for.
pub(super) fn check_recipients(recipients: &[ShareRecipient], shares: u32) -> Result<()> {
    if !recipients.is_empty() && recipients.len() != shares as usize {
        return Err(Error::invalid(
            "share_recipients",
            format!(
                "{} recipients for {shares} shares: give one per share, in order",
                recipients.len()
            ),
        ));
    }
    Ok(())
}

impl Seal<'_> {
    /// Starts a rekey to `shares` shares with `threshold` (system scope); with `rotate_root`, the
    /// root key is rotated too when it is verified. With `recipients` (one per new share), each
    /// new share is handed out encrypted to its holder.
    pub fn rekey_init(
        &self,
        caller: &Caller,
        shares: u32,
        threshold: u32,
        rotate_root: bool,
        recipients: Vec<ShareRecipient>,
    ) -> Result<RekeyProgress> {
        self.require_system_op(caller, SystemOp::Rekey)?;
        shamir::check_parameters(shares, threshold)?;
        check_recipients(&recipients, shares)?;
        let required = self.current_threshold()?;
        // The rekey's lock, then the migration's (as seal_migrate_init takes them).
        let mut rekeys = lock(&self.rekey);
        self.refuse_during_migration()?;
        if let Some(existing) = rekeys.started.as_ref() {
            return Err(Error::FailedPrecondition(format!(
                "a rekey is in progress (nonce {}); cancel it first",
                existing.nonce
            )));
        }
        if let Some(staged) = self.staged_rekey()? {
            return Err(Error::FailedPrecondition(format!(
                "a rekey waits for verification (nonce {}); verify or cancel it first",
                staged.nonce
            )));
        }
        let state = RekeyState {
            nonce: new_nonce()?,
            shares,
            threshold,
            rotate_root,
            started_unix_nanos: self.now(),
            recipients,
            submitted: Vec::new(),
        };
        let progress = state.progress(required);
        rekeys.started = Some(state);
        Ok(progress)
    }

    /// The rekey in progress or waiting for verification, if any (no token: it shows no
    /// secret).
    pub fn rekey_status(&self) -> Result<Option<RekeyProgress>> {
        let required = self.current_threshold()?;
        let rekeys = lock(&self.rekey);
        if let Some(state) = &rekeys.started {
            return Ok(Some(state.progress(required)));
        }
        Ok(self
            .staged_rekey()?
            .map(|staged| staged.progress(required, rekeys.verifying.len() as u32)))
    }

    /// Abandons the rekey in progress or waiting for verification (system scope); the current
    /// shares stay valid.
    pub fn rekey_cancel(&self, caller: &Caller) -> Result<()> {
        self.require_system_op(caller, SystemOp::Rekey)?;
        let mut rekeys = lock(&self.rekey);
        let started = rekeys.started.take().is_some();
        rekeys.verifying.clear();
        if self.staged_rekey()?.is_some() {
            let mut batch = WriteBatch::new();
            batch.delete(Space::Config, SEAL_STAGED_KEY);
            self.keys.write(batch)?;
            // The cancelled configuration opens the root key with its (handed out) shares:
            // compact it out of the key store's files.
            self.keys.compact()?;
            return Ok(());
        }
        if started {
            Ok(())
        } else {
            Err(Error::NotFound("rekey in progress".into()))
        }
    }

    /// Adds one current share to the rekey identified by `nonce`. The submission that reaches
    /// the threshold stages the new configuration and receives the new shares; the old shares
    /// keep working until [`Vault::rekey_verify`] commits it.
    pub fn rekey_submit(&self, nonce: &str, share: UnsealShare) -> Result<RekeyProgress> {
        let seal_config = read(&self.seal_config);
        let config = seal_config.as_ref().ok_or(Error::NotInitialized)?;
        let mut rekeys = lock(&self.rekey);
        let Some(state) = rekeys.started.as_mut() else {
            return Err(Error::NotFound("rekey in progress".into()));
        };
        if !nonce_matches(&state.nonce, nonce) {
            return Err(Error::invalid(
                "nonce",
                "does not match the rekey in progress (see vault-cli rekey status)",
            ));
        }
        check_current_share(config, &share)?;
        add_share(&mut state.submitted, share)?;
        if (state.submitted.len() as u32) < config.threshold {
            return Ok(state.progress(config.threshold));
        }
        let submitted = std::mem::take(&mut state.submitted);
        let combined = shamir::combine(&submitted);
        drop(submitted);
        let combined = combined?;
        let new_version = config.next_version()?;
        // The new unseal key, or with an auto seal the new recovery key.
        let new_key = SecretKey::generate()?;
        let (root_sealed, recovery_key_check) = if config.auto.is_some() {
            check_combined_key(config, &combined)?;
            (Vec::new(), Some(recovery_check(new_version, &new_key)))
        } else {
            let root = open_root_key(config, &combined)?;
            let sealed = seal_root_key(&new_key, new_version, &root)?;
            (sealed, None)
        };
        drop(combined);
        let split = shamir::split(&new_key, state.shares, state.threshold)?;
        drop(new_key);
        let staged = StagedRekey {
            nonce: new_nonce()?,
            shares: state.shares,
            threshold: state.threshold,
            rotate_root: state.rotate_root,
            replaces_unseal_key_version: config.share_version(),
            unseal_key_version: new_version,
            root_key_sealed: if root_sealed.is_empty() {
                String::new()
            } else {
                STANDARD.encode(&root_sealed)
            },
            share_commitments: split
                .iter()
                .map(|share| share_commitment(new_version, share))
                .collect(),
            started_unix_nanos: state.started_unix_nanos,
            staged_unix_nanos: self.now(),
            recipients: state.recipients.iter().map(ToString::to_string).collect(),
            recovery_key_check,
        };
        let new_shares = hand_out(split, &state.recipients)?;
        let mut batch = WriteBatch::new();
        batch.put(Space::Config, SEAL_STAGED_KEY, to_json(&staged)?);
        self.keys.write(batch)?;
        rekeys.started = None;
        rekeys.verifying.clear();
        let mut progress = staged.progress(config.threshold, 0);
        progress.progress = config.threshold;
        progress.new_shares = new_shares;
        Ok(progress)
    }

    /// Adds one *new* share to the verification of the staged rekey named by `nonce` (the
    /// verification nonce). The submission that reaches the new threshold commits the rekey:
    /// from then on only the new shares unseal.
    pub fn rekey_verify(&self, nonce: &str, share: UnsealShare) -> Result<RekeyProgress> {
        // A recovery rekey that rotates the root key needs a new unseal key wrapped by the
        // auto seal: wrapped (and checked) here, before the seal lock is taken, since the seal
        // may be another vault far away.
        let prewrapped = self.prewrap_for_rotation(nonce, &share)?;
        let mut seal_config = write(&self.seal_config);
        let config = seal_config.as_ref().ok_or(Error::NotInitialized)?;
        let mut rekeys = lock(&self.rekey);
        let staged = self
            .staged_rekey()?
            .ok_or_else(|| Error::NotFound("rekey waiting for verification".into()))?;
        if !nonce_matches(&staged.nonce, nonce) {
            return Err(Error::invalid(
                "nonce",
                "does not match the rekey waiting for verification (see vault-cli rekey status)",
            ));
        }
        if staged.replaces_unseal_key_version != config.share_version()
            || staged.recovery_key_check.is_some() != config.auto.is_some()
        {
            return Err(Error::FailedPrecondition(
                "the staged rekey was made for an earlier share set; cancel it and start again"
                    .into(),
            ));
        }
        if !committed(staged.unseal_key_version, &staged.share_commitments, &share) {
            return Err(not_a_share("new"));
        }
        add_share(&mut rekeys.verifying, share)?;
        let verifying = rekeys.verifying.len() as u32;
        if verifying < staged.threshold {
            return Ok(staged.progress(config.threshold, verifying));
        }
        let submitted = std::mem::take(&mut rekeys.verifying);
        let new_unseal = shamir::combine(&submitted);
        drop(submitted);
        let new_unseal = new_unseal?;
        if let (Some(auto), Some(check)) = (&config.auto, &staged.recovery_key_check) {
            let new_config =
                self.commit_recovery_rekey(config, auto, &staged, check, new_unseal, prewrapped)?;
            *seal_config = Some(new_config);
            // Shares entered towards an unseal belong to the old set now.
            if let State::Sealed { progress } = &mut *write(&self.state) {
                progress.clear();
            }
            let mut progress = staged.progress(staged.threshold, staged.threshold);
            progress.complete = true;
            return Ok(progress);
        }
        let staged_config = SealConfig {
            shares: staged.shares,
            threshold: staged.threshold,
            unseal_key_version: staged.unseal_key_version,
            root_key_version: config.root_key_version,
            root_key_sealed: staged.root_key_sealed.clone(),
            created_unix_nanos: config.created_unix_nanos,
            share_commitments: staged.share_commitments.clone(),
            share_version: None,
            auto: None,
        };
        let root = open_root_key(&staged_config, &new_unseal)?;
        // The staged root key must be the one in force: it opens the token hashing key.
        self.token_key(&root)?;

        let mut batch = WriteBatch::new();
        // A root rotation re-seals every KEK record: no KEK may change until it is committed.
        let changes = staged.rotate_root.then(|| self.hold_key_changes());
        let new_config = if let Some(changes) = &changes {
            let (new_root, version) =
                self.rotate_root_into(changes, &root, config.root_key_version, &mut batch)?;
            let sealed = seal_root_key(&new_unseal, staged.unseal_key_version, &new_root)?;
            (
                SealConfig {
                    root_key_version: version,
                    root_key_sealed: STANDARD.encode(&sealed),
                    ..staged_config
                },
                Some(new_root),
            )
        } else {
            (staged_config, None)
        };
        drop(new_unseal);
        drop(root);
        let (new_config, rotated) = new_config;
        batch
            .put(Space::Config, SEAL_CONFIG_KEY, to_json(&new_config)?)
            .delete(Space::Config, SEAL_STAGED_KEY);
        crate::crash_point("rekey-before-commit");
        self.keys.write(batch)?;
        crate::crash_point("rekey-after-commit");
        // The replaced configuration (which the old shares open) leaves the files too.
        if let Err(error) = self.keys.compact() {
            tracing::warn!(%error, "key store compaction after a rekey failed; retried at the next one");
        }
        let root_version = new_config.root_key_version;
        *seal_config = Some(new_config);
        if let Some(root) = rotated {
            self.install_rotated_root(root_version, root);
        }
        drop(changes);
        // Shares entered towards an unseal belong to the old set now.
        if let State::Sealed { progress } = &mut *write(&self.state) {
            progress.clear();
        }
        let mut progress = staged.progress(staged.threshold, staged.threshold);
        progress.complete = true;
        Ok(progress)
    }

    /// Whether `share` belongs to the current share set (or the staged one). Needs no token
    /// and unseals nothing.
    pub fn verify_share(&self, share: &UnsealShare) -> Result<ShareCheck> {
        let seal_config = read(&self.seal_config);
        let config = seal_config.as_ref().ok_or(Error::NotInitialized)?;
        if let Some(staged) = self.staged_rekey()?
            && committed(staged.unseal_key_version, &staged.share_commitments, share)
        {
            return Ok(ShareCheck::Staged);
        }
        if config.share_commitments.is_empty() {
            return Ok(ShareCheck::Unknown);
        }
        Ok(
            if committed(config.share_version(), &config.share_commitments, share) {
                ShareCheck::Current
            } else {
                ShareCheck::NotCurrent
            },
        )
    }

    /// With an auto seal and a staged rekey that rotates the root key: a new unseal key and
    /// its wrap (checked by unwrapping it), for the version the rekey commits. Takes no lock
    /// across the call to the seal.
    /// Only for the submission that completes the threshold (a share of the staged set, with
    /// its nonce, on an unsealed vault): nobody can make the vault call its seal at will.
    fn prewrap_for_rotation(&self, nonce: &str, share: &UnsealShare) -> Result<Option<Prewrapped>> {
        let Some(staged) = self.staged_rekey()? else {
            return Ok(None);
        };
        if !staged.rotate_root
            || staged.recovery_key_check.is_none()
            || !nonce_matches(&staged.nonce, nonce)
            || !committed(staged.unseal_key_version, &staged.share_commitments, share)
            || self.unsealed_keyring().is_none()
        {
            return Ok(None);
        }
        {
            let rekeys = lock(&self.rekey);
            let counted = rekeys
                .verifying
                .iter()
                .any(|s| s.identifier() == share.identifier());
            let would_have = rekeys.verifying.len() + usize::from(!counted);
            if (would_have as u32) < staged.threshold {
                return Ok(None);
            }
        }
        let seal = {
            let seal_config = read(&self.seal_config);
            let config = seal_config.as_ref().ok_or(Error::NotInitialized)?;
            Arc::clone(self.matching_auto_seal(config)?.0)
        };
        let unseal_key = SecretKey::generate()?;
        let wrapped =
            crate::autoseal::wrap_checked(seal.as_ref(), &unseal_key, staged.unseal_key_version)?;
        Ok(Some(Prewrapped {
            unseal_key,
            wrapped,
            version: staged.unseal_key_version,
            nonce: staged.nonce,
        }))
    }

    /// Commits a verified rekey of an auto-sealed vault's recovery shares (`recovery_key`, the
    /// new recovery key, must match the staged check). With root rotation the vault must be
    /// unsealed: the new root key is sealed under `prewrapped`, a new unseal key already wrapped
    /// by the auto seal for the staged version.
    fn commit_recovery_rekey(
        &self,
        config: &SealConfig,
        auto: &AutoSealRecord,
        staged: &StagedRekey,
        check: &str,
        recovery_key: SecretKey,
        prewrapped: Option<Prewrapped>,
    ) -> Result<SealConfig> {
        let candidate = recovery_check(staged.unseal_key_version, &recovery_key);
        drop(recovery_key);
        if !bool::from(candidate.as_bytes().ct_eq(check.as_bytes())) {
            return Err(Error::UnsealFailed);
        }
        let mut new_config = SealConfig {
            shares: staged.shares,
            threshold: staged.threshold,
            unseal_key_version: config.unseal_key_version,
            root_key_version: config.root_key_version,
            root_key_sealed: config.root_key_sealed.clone(),
            created_unix_nanos: config.created_unix_nanos,
            share_commitments: staged.share_commitments.clone(),
            share_version: Some(staged.unseal_key_version),
            auto: Some(AutoSealRecord {
                recovery_key_check: check.to_owned(),
                ..auto.clone()
            }),
        };
        let mut batch = WriteBatch::new();
        let changes = staged.rotate_root.then(|| self.hold_key_changes());
        let mut rotated = None;
        if let Some(changes) = &changes {
            let Some(Prewrapped {
                unseal_key,
                wrapped,
                ..
            }) = prewrapped
                .filter(|p| p.version == staged.unseal_key_version && p.nonce == staged.nonce)
            else {
                return Err(Error::FailedPrecondition(
                    "the staged rekey changed during its verification; submit the share again"
                        .into(),
                ));
            };
            // The seal configuration's lock is held: not `keyring()`, which takes it again.
            let keyring = self.unsealed_keyring().ok_or(Error::Sealed)?;
            if keyring.root_version != config.root_key_version {
                return Err(Error::FailedPrecondition(
                    "this node holds an older root key than the one in force; unseal it again first"
                        .into(),
                ));
            }
            let (new_root, version) =
                self.rotate_root_into(changes, &keyring.root, config.root_key_version, &mut batch)?;
            let sealed = seal_root_key(&unseal_key, staged.unseal_key_version, &new_root)?;
            drop(unseal_key);
            new_config.unseal_key_version = staged.unseal_key_version;
            new_config.root_key_version = version;
            new_config.root_key_sealed = STANDARD.encode(&sealed);
            if let Some(record) = &mut new_config.auto {
                record.wrapped_unseal_key = wrapped;
            }
            rotated = Some(new_root);
        }
        batch
            .put(Space::Config, SEAL_CONFIG_KEY, to_json(&new_config)?)
            .delete(Space::Config, SEAL_STAGED_KEY);
        self.keys.write(batch)?;
        if let Err(error) = self.keys.compact() {
            tracing::warn!(%error, "key store compaction after a rekey failed; retried at the next one");
        }
        if let Some(root) = rotated {
            self.install_rotated_root(new_config.root_key_version, root);
        }
        drop(changes);
        Ok(new_config)
    }

    /// Whether a rekey waits for verification.
    pub(super) fn rekey_staged(&self) -> Result<bool> {
        Ok(self.staged_rekey()?.is_some())
    }

    fn staged_rekey(&self) -> Result<Option<StagedRekey>> {
        self.keys
            .get(Space::Config, SEAL_STAGED_KEY)?
            .map(|bytes| from_json(&bytes, "the staged rekey"))
            .transpose()
    }

    /// After a root rotation is committed: an unsealed vault continues with a keyring around the
    /// new root key (keeping its KEK cache and counters). If that keyring cannot be built, the
    /// vault seals itself rather than run with a stale root key.
    fn install_rotated_root(&self, version: u32, root: SecretKey) {
        let mut state = write(&self.state);
        let State::Unsealed(current) = &*state else {
            return;
        };
        let tenants = read(&current.tenants).clone();
        // Named keys are loaded again on first use: a change made under `kms_changes` while this
        // swap happens could otherwise be missing from a copied cache.
        match self.keyring_from_root(version, root, tenants, HashMap::new()) {
            Ok(keyring) => {
                if let Some(audit) = &self.audit {
                    audit.set_signer(keyring.audit_signer.clone());
                }
                *state = State::Unsealed(Arc::new(keyring));
                self.root_behind
                    .store(false, std::sync::atomic::Ordering::Release);
            }
            Err(error) => {
                tracing::error!(%error, "cannot load the keyring after a root key rotation; sealing");
                *state = State::Sealed {
                    progress: Vec::new(),
                };
                if let Some(audit) = &self.audit {
                    audit.set_signer(None);
                }
            }
        }
    }

    pub(super) fn current_threshold(&self) -> Result<u32> {
        read(&self.seal_config)
            .as_ref()
            .map(|c| c.threshold)
            .ok_or(Error::NotInitialized)
    }
}

pub(super) fn new_nonce() -> Result<String> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|_| Error::Rng)?;
    Ok(hex::encode(nonce))
}

pub(super) fn nonce_matches(expected: &str, presented: &str) -> bool {
    expected
        .as_bytes()
        .ct_eq(presented.trim().as_bytes())
        .into()
}

impl RekeyState {
    fn progress(&self, required: u32) -> RekeyProgress {
        RekeyProgress {
            nonce: self.nonce.clone(),
            shares: self.shares,
            threshold: self.threshold,
            progress: self.submitted.len() as u32,
            required,
            rotate_root: self.rotate_root,
            started_unix_nanos: self.started_unix_nanos,
            staged: false,
            verification_nonce: String::new(),
            verification_progress: 0,
            verification_required: self.threshold,
            complete: false,
            new_shares: Vec::new(),
            recipients: self.recipients.iter().map(ToString::to_string).collect(),
        }
    }
}

impl StagedRekey {
    fn progress(&self, required: u32, verifying: u32) -> RekeyProgress {
        RekeyProgress {
            nonce: String::new(),
            shares: self.shares,
            threshold: self.threshold,
            progress: required,
            required,
            rotate_root: self.rotate_root,
            started_unix_nanos: self.started_unix_nanos,
            staged: true,
            verification_nonce: self.nonce.clone(),
            verification_progress: verifying,
            verification_required: self.threshold,
            complete: false,
            new_shares: Vec::new(),
            recipients: self.recipients.clone(),
        }
    }
}
