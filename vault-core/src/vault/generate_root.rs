//! generate-root: a threshold of share holders makes a new root token when none is left (it was
//! revoked after use, as it should be), multi-party like unseal and rekey.
//!
//! 1. **Init** (no token: whoever has lost the root token has none, but one current share,
//!    which counts as the first submission, so nobody without one can hold the only slot)
//!    names the recipient, an age X25519 public key; a random nonce names the attempt. One
//!    attempt at a time; the audit log records the recipient.
//! 2. **Submit**: each operator submits one current share with the nonce (checked against the
//!    share commitments before it counts). The submission that reaches the threshold combines
//!    them, must open the root key with the result, creates a root token (system scope, policy
//!    `root`) and receives it encrypted to the recipient, never in the clear.
//! 3. **Cancel** needs one current share (so that nobody without one can cancel the
//!    operators' attempt); status needs nothing and shows no secret.
//!
//! The vault must be unsealed (the token's keyed hash needs the token key), and its shares
//! must have commitments (a vault initialized before they were kept must rekey first: without
//! them a share cannot be checked before it counts). The attempt lives in memory: a restart or
//! a seal abandons it; a failure at the threshold (audit, storage) keeps it and its shares. Only one caller ever sees the token, and only as the age
//! file; the audit log records the new token's accessor.

use super::rekey::{check_current_share, nonce_matches};
use super::*;
use crate::recipient::ShareRecipient;

/// The attempt in progress.
pub(super) struct GenerateRootState {
    nonce: String,
    recipient: ShareRecipient,
    started_unix_nanos: i64,
    submitted: Vec<UnsealShare>,
}

/// What generate-root status and submit answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateRootProgress {
    pub nonce: String,
    /// The age public key the token goes to.
    pub recipient: String,
    pub started_unix_nanos: i64,
    pub progress: u32,
    pub required: u32,
    pub complete: bool,
    /// Once complete, to the submission that completed it: the root token as an armored age
    /// file for the recipient.
    pub encrypted_token: String,
    /// Once complete: the new token's accessor (for `token revoke-root --accessor`).
    pub accessor: String,
}

impl GenerateRootState {
    fn progress(&self, required: u32) -> GenerateRootProgress {
        GenerateRootProgress {
            nonce: self.nonce.clone(),
            recipient: self.recipient.to_string(),
            started_unix_nanos: self.started_unix_nanos,
            progress: self.submitted.len() as u32,
            required,
            complete: false,
            encrypted_token: String::new(),
            accessor: String::new(),
        }
    }
}

impl Seal<'_> {
    /// Starts an attempt whose root token goes to `recipient`; `share`, a current share, is
    /// its first submission (no token needed).
    pub fn generate_root_init(
        &self,
        recipient: ShareRecipient,
        share: UnsealShare,
    ) -> Result<GenerateRootProgress> {
        self.keyring()?;
        let required = self.checked_share(&share)?;
        let mut attempt = lock(&self.generate_root);
        if let Some(existing) = attempt.as_ref() {
            return Err(Error::FailedPrecondition(format!(
                "a generate-root attempt is in progress (nonce {}, for {}); cancel it first",
                existing.nonce, existing.recipient
            )));
        }
        let state = GenerateRootState {
            nonce: super::rekey::new_nonce()?,
            recipient,
            started_unix_nanos: self.now(),
            submitted: vec![share],
        };
        if let Some(audit) = &self.audit {
            let mut entry = crate::audit::writer::system_entry(format!(
                "generate-root attempt {} started: the new root token will be encrypted to {}",
                state.nonce, state.recipient
            ));
            entry.method = "generate-root".into();
            audit.append(entry).map_err(|_| Error::AuditUnavailable)?;
        }
        let progress = state.progress(required);
        *attempt = Some(state);
        Ok(progress)
    }

    /// Checks that `share` is one of the current shares (the vault's shares must have
    /// commitments); returns the threshold.
    fn checked_share(&self, share: &UnsealShare) -> Result<u32> {
        let seal_config = read(&self.seal_config);
        let config = seal_config.as_ref().ok_or(Error::NotInitialized)?;
        if config.share_commitments.is_empty() {
            return Err(Error::FailedPrecondition(
                "this vault's shares have no commitments, so a share cannot be checked before it \
                 counts: rekey first, then generate a root token"
                    .into(),
            ));
        }
        check_current_share(config, share)?;
        Ok(config.threshold)
    }

    /// The attempt in progress, if any.
    pub fn generate_root_status(&self) -> Result<Option<GenerateRootProgress>> {
        let required = self.current_threshold()?;
        Ok(lock(&self.generate_root)
            .as_ref()
            .map(|state| state.progress(required)))
    }

    /// Abandons the attempt; `share` must be one of the current shares.
    pub fn generate_root_cancel(&self, share: &UnsealShare) -> Result<()> {
        self.checked_share(share)?;
        match lock(&self.generate_root).take() {
            Some(_) => Ok(()),
            None => Err(Error::NotFound("generate-root attempt".into())),
        }
    }

    /// Adds one current share to the attempt `nonce`; the one that reaches the threshold gets
    /// the new root token, encrypted to the recipient.
    pub fn generate_root_submit(
        &self,
        nonce: &str,
        share: UnsealShare,
    ) -> Result<GenerateRootProgress> {
        let keyring = self.keyring()?;
        let threshold = self.checked_share(&share)?;
        let mut attempt = lock(&self.generate_root);
        let state = attempt
            .as_mut()
            .ok_or_else(|| Error::NotFound("generate-root attempt".into()))?;
        if !nonce_matches(&state.nonce, nonce) {
            return Err(Error::invalid(
                "nonce",
                "does not name the generate-root attempt in progress",
            ));
        }
        super::rekey::add_share(&mut state.submitted, share)?;
        if (state.submitted.len() as u32) < threshold {
            return Ok(state.progress(threshold));
        }
        // Until the token is written the attempt stays, shares and all: a failure below (the
        // audit log, storage) loses no operator's submission.
        let unseal_key = shamir::combine(&state.submitted)?;
        {
            // The shares must open the root key in force (with an auto seal: match the
            // recovery key): a threshold of them, not just any.
            let seal_config = read(&self.seal_config);
            let config = seal_config.as_ref().ok_or(Error::NotInitialized)?;
            super::rekey::check_combined_key(config, &unseal_key)?;
        }
        drop(unseal_key);
        let token = Token::generate()?;
        let hash = keyring.token_hasher.hash(&token);
        let record = self.root_token_record(&hash)?;
        let encrypted = state.recipient.encrypt(token.expose_secret().as_bytes())?;
        drop(token);
        if let Some(audit) = &self.audit {
            let mut entry = crate::audit::writer::system_entry(format!(
                "generate-root attempt {}: a threshold of shares is making a new root token \
                 (accessor {}), encrypted to {}; revoke it after use",
                state.nonce, record.accessor, state.recipient
            ));
            entry.method = "generate-root".into();
            audit.append(entry).map_err(|_| Error::AuditUnavailable)?;
        }
        let mut batch = WriteBatch::new();
        batch
            .put(Space::Config, token_record_key(&hash), to_json(&record)?)
            .put(Space::Config, accessor_key(&record.accessor), hash.to_hex());
        self.data.write(batch)?;
        let Some(state) = attempt.take() else {
            return Err(Error::NotFound("generate-root attempt".into()));
        };
        let mut progress = state.progress(threshold);
        progress.complete = true;
        progress.encrypted_token = encrypted;
        progress.accessor = record.accessor;
        Ok(progress)
    }

    /// Forgets the attempt and its shares (sealing).
    pub(super) fn forget_generate_root(&self) {
        lock(&self.generate_root).take();
    }
}
