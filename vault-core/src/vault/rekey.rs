//! Rekey: new unseal shares (and threshold) for the same root key, multi-party like unseal; and
//! the share check that tells an operator whether a share belongs to the current set.
//!
//! A rekey is started (system scope) with the new share count and threshold and gets a random
//! nonce. Each operator submits one current share with that nonce, no token needed: the share is
//! the credential. The submission that reaches the current threshold combines the shares; if they
//! open the root key, a new unseal key is made, the root key is sealed under it, and the new seal
//! configuration (with one commitment per new share) replaces the old in one key-store write.
//! Only then do the old shares stop working; an interrupted (restarted) or cancelled rekey changes
//! nothing. Secret data and the keyring are not touched.
//!
//! Commitments: SHA-256 over a domain tag, the unseal key version and the share. A share is 33
//! bytes of which 32 are uniformly random to anyone holding fewer than a threshold of shares,
//! so the hash reveals nothing useful and cannot be inverted.

use ring::digest;
use subtle::ConstantTimeEq;

use super::*;

const COMMITMENT_DOMAIN: &[u8] = b"vault.share-commitment.v1";

/// The rekey in progress.
pub(super) struct RekeyState {
    nonce: String,
    shares: u32,
    threshold: u32,
    /// Also rotate the root key (re-sealing the keyring under a new one).
    rotate_root: bool,
    started_unix_nanos: i64,
    submitted: Vec<UnsealShare>,
}

/// What a rekey step reports. `new_shares` is filled once, for the submission that completes it.
pub struct RekeyProgress {
    pub nonce: String,
    pub shares: u32,
    pub threshold: u32,
    /// Current shares submitted so far, and how many are needed (the current threshold).
    pub progress: u32,
    pub required: u32,
    pub rotate_root: bool,
    pub started_unix_nanos: i64,
    pub complete: bool,
    pub new_shares: Vec<UnsealShare>,
}

/// What the share check says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareCheck {
    /// The share belongs to the current share set.
    Current,
    /// It does not (an old, mistyped or foreign share).
    NotCurrent,
    /// The vault was initialized before commitments were kept; a rekey adds them.
    Unknown,
}

pub(super) fn share_commitment(unseal_key_version: u32, share: &UnsealShare) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(COMMITMENT_DOMAIN);
    context.update(&unseal_key_version.to_be_bytes());
    context.update(share.expose_bytes());
    hex::encode(context.finish())
}

impl Vault {
    /// Starts a rekey to `shares` shares with `threshold` (system scope); with `rotate_root`, the
    /// root key is rotated too when it completes.
    pub fn rekey_init(
        &self,
        caller: &Caller,
        shares: u32,
        threshold: u32,
        rotate_root: bool,
    ) -> Result<RekeyProgress> {
        self.require_system_op(caller, SystemOp::Rekey)?;
        shamir::check_parameters(shares, threshold)?;
        let required = self.current_threshold()?;
        let mut rekey = lock(&self.rekey);
        if let Some(existing) = rekey.as_ref() {
            return Err(Error::FailedPrecondition(format!(
                "a rekey is in progress (nonce {}); cancel it first",
                existing.nonce
            )));
        }
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|_| Error::Rng)?;
        let state = RekeyState {
            nonce: hex::encode(nonce),
            shares,
            threshold,
            rotate_root,
            started_unix_nanos: self.now(),
            submitted: Vec::new(),
        };
        let progress = state.progress(required);
        *rekey = Some(state);
        Ok(progress)
    }

    /// The rekey in progress, if any (no token: it shows no secret).
    pub fn rekey_status(&self) -> Result<Option<RekeyProgress>> {
        let required = self.current_threshold()?;
        Ok(lock(&self.rekey).as_ref().map(|s| s.progress(required)))
    }

    /// Abandons the rekey in progress (system scope); the current shares stay valid.
    pub fn rekey_cancel(&self, caller: &Caller) -> Result<()> {
        self.require_system_op(caller, SystemOp::Rekey)?;
        match lock(&self.rekey).take() {
            Some(_) => Ok(()),
            None => Err(Error::NotFound("rekey in progress".into())),
        }
    }

    /// Adds one current share to the rekey identified by `nonce`. The submission that reaches
    /// the threshold completes the rekey and receives the new shares.
    pub fn rekey_submit(&self, nonce: &str, share: UnsealShare) -> Result<RekeyProgress> {
        let mut seal_config = write(&self.seal_config);
        let config = seal_config.as_ref().ok_or(Error::NotInitialized)?;
        let mut rekey = lock(&self.rekey);
        let Some(state) = rekey.as_mut() else {
            return Err(Error::NotFound("rekey in progress".into()));
        };
        let nonce_matches: bool = state.nonce.as_bytes().ct_eq(nonce.trim().as_bytes()).into();
        if !nonce_matches {
            return Err(Error::invalid(
                "nonce",
                "does not match the rekey in progress (see vault-cli rekey status)",
            ));
        }
        if let Some(existing) = state
            .submitted
            .iter()
            .find(|s| s.identifier() == share.identifier())
        {
            if existing.same_as(&share) {
                return Ok(state.progress(config.threshold));
            }
            return Err(Error::invalid(
                "share",
                "differs from a share with the same identifier already submitted",
            ));
        }
        state.submitted.push(share);
        if (state.submitted.len() as u32) < config.threshold {
            return Ok(state.progress(config.threshold));
        }
        let submitted = std::mem::take(&mut state.submitted);
        let unseal_key = shamir::combine(&submitted)?;
        drop(submitted);
        let old_root = open_root_key(config, &unseal_key)?;
        drop(unseal_key);

        let mut batch = WriteBatch::new();
        // A root rotation re-seals every KEK record: no KEK may change until it is committed.
        let changes = state.rotate_root.then(|| lock(&self.key_changes));
        let (root, root_version) = if state.rotate_root {
            self.rotate_root_into(&old_root, config.root_key_version, &mut batch)?
        } else {
            (old_root, config.root_key_version)
        };

        let new_version = config
            .unseal_key_version
            .checked_add(1)
            .ok_or_else(|| Error::FailedPrecondition("no unseal key versions left".into()))?;
        let new_unseal = SecretKey::generate()?;
        let new_sealed = crypto::seal(
            &new_unseal,
            KeyRef {
                kind: KeyKind::Unseal,
                version: new_version,
            },
            &root_key_context(),
            root.expose_secret(),
        )?;
        let split = shamir::split(&new_unseal, state.shares, state.threshold)?;
        drop(new_unseal);
        let new_config = SealConfig {
            shares: state.shares,
            threshold: state.threshold,
            unseal_key_version: new_version,
            root_key_version: root_version,
            root_key_sealed: STANDARD.encode(&new_sealed),
            created_unix_nanos: config.created_unix_nanos,
            share_commitments: split
                .iter()
                .map(|share| share_commitment(new_version, share))
                .collect(),
        };
        let rotated = root_version != config.root_key_version;
        batch.put(Space::Config, SEAL_CONFIG_KEY, to_json(&new_config)?);
        self.keys.write(batch)?;
        if rotated {
            self.install_rotated_root(root_version, root);
        }
        drop(changes);
        let mut progress = state.progress(config.threshold);
        progress.progress = config.threshold;
        progress.complete = true;
        progress.new_shares = split;
        *seal_config = Some(new_config);
        *rekey = None;
        // Shares entered towards an unseal belong to the old set now.
        if let State::Sealed { progress } = &mut *write(&self.state) {
            progress.clear();
        }
        Ok(progress)
    }

    /// Whether `share` belongs to the current share set. Needs no token and unseals nothing.
    pub fn verify_share(&self, share: &UnsealShare) -> Result<ShareCheck> {
        let seal_config = read(&self.seal_config);
        let config = seal_config.as_ref().ok_or(Error::NotInitialized)?;
        if config.share_commitments.is_empty() {
            return Ok(ShareCheck::Unknown);
        }
        let candidate = share_commitment(config.unseal_key_version, share);
        let mut found = subtle::Choice::from(0u8);
        for commitment in &config.share_commitments {
            found |= commitment.as_bytes().ct_eq(candidate.as_bytes());
        }
        Ok(if bool::from(found) {
            ShareCheck::Current
        } else {
            ShareCheck::NotCurrent
        })
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

    fn current_threshold(&self) -> Result<u32> {
        read(&self.seal_config)
            .as_ref()
            .map(|c| c.threshold)
            .ok_or(Error::NotInitialized)
    }
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
            complete: false,
            new_shares: Vec::new(),
        }
    }
}
