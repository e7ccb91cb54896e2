//! Multi-factor authentication: TOTP per entity, and the system operations that need it.
//!
//! An entity enrols once (`enroll_totp`, for the caller's own entity) and gets the shared
//! secret, shown once; the vault keeps it sealed under the root key. A policy can require MFA
//! for chosen capabilities (`require_mfa`), and the system scope can require it for chosen
//! system operations; the code travels with the call (request metadata) and is checked at most
//! once per call. A code is good once: the step it matched is stored, and no code of that step
//! or an earlier one is accepted again. After [`MAX_MFA_FAILURES`] wrong codes in a row the
//! entity is locked out of MFA for [`MFA_LOCKOUT`].
//!
//! Storage: `mfa/<entity>` (sealed secret, last used step, failures), `sys/mfa-system` (the
//! system operations that need MFA).
//!
//! Entities: `root`, `approle:<tenant id>:<role>`, `jwt:<config>:<tenant id>:<sub>`. A token
//! created by another token acts for its creator's entity (kept across its refreshes), so its
//! enrolment, lockout and replay state are the creator's. Entities `token:<accessor>` (which
//! created tokens had of their own before this rule, and could enrol) pass no MFA check: such
//! tokens must be created again. Only the root token and tokens issued by a login (empty
//! `parent`) enrol themselves, and only an entity never enrolled: a reset keeps the record
//! without its secret, so only the root token enrols it again. Creating a token whose policies
//! carry any `require_mfa`, or a system token, needs the creator's code once its entity is
//! enrolled. Checks and enrolments are serialized (`mfa_changes`). Once any system operation
//! needs MFA, changing the MFA settings (or resetting an enrolment) needs it too.

use std::time::Duration;

use super::*;
use crate::{
    schema::{MFA_SYSTEM_KEY, mfa_key},
    totp::{self, TotpSecret},
};

/// Wrong codes in a row before the entity is locked out, and for how long.
pub const MAX_MFA_FAILURES: u32 = 5;
pub const MFA_LOCKOUT: Duration = Duration::from_secs(300);
/// The issuer shown by authenticator apps.
const TOTP_ISSUER: &str = "vault";

/// System-scope operations that can be made to require MFA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SystemOp {
    Seal,
    TenantCreate,
    TenantUpdate,
    TenantDelete,
    /// Creating a token with the system scope.
    CreateSystemToken,
    /// Reading or exporting the audit log of all tenants.
    Audit,
    /// Rotating a tenant's key-encryption key with the system scope.
    Rotate,
    /// Configuring logins (JWT issuers).
    AuthConfig,
    /// Changing which system operations need MFA, or resetting an entity's enrolment.
    MfaConfig,
    Rekey,
    /// Taking a backup (a copy of every tenant's data).
    Backup,
}

impl SystemOp {
    pub const ALL: [SystemOp; 11] = [
        SystemOp::Seal,
        SystemOp::TenantCreate,
        SystemOp::TenantUpdate,
        SystemOp::TenantDelete,
        SystemOp::CreateSystemToken,
        SystemOp::Audit,
        SystemOp::Rotate,
        SystemOp::AuthConfig,
        SystemOp::MfaConfig,
        SystemOp::Rekey,
        SystemOp::Backup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SystemOp::Seal => "seal",
            SystemOp::TenantCreate => "tenant-create",
            SystemOp::TenantUpdate => "tenant-update",
            SystemOp::TenantDelete => "tenant-delete",
            SystemOp::CreateSystemToken => "create-system-token",
            SystemOp::Audit => "audit",
            SystemOp::Rotate => "rotate",
            SystemOp::AuthConfig => "auth-config",
            SystemOp::MfaConfig => "mfa-config",
            SystemOp::Rekey => "rekey",
            SystemOp::Backup => "backup",
        }
    }

    pub fn parse(text: &str) -> Result<SystemOp> {
        SystemOp::ALL
            .into_iter()
            .find(|op| op.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = SystemOp::ALL.iter().map(|op| op.as_str()).collect();
                Error::invalid(
                    "operations",
                    format!("unknown system operation {text:?} ({})", known.join(", ")),
                )
            })
    }
}

#[derive(Serialize, Deserialize)]
struct MfaRecord {
    /// The TOTP secret sealed under the root key (base64); empty once the enrolment was reset
    /// (the record stays, so the entity is known to have been enrolled and cannot enrol itself
    /// again: the root token enrols it).
    sealed: String,
    enrolled_unix_nanos: i64,
    #[serde(default)]
    last_used_step: Option<u64>,
    #[serde(default)]
    failures: u32,
    #[serde(default)]
    locked_until_unix_nanos: i64,
    /// When the enrolment was reset (0: never).
    #[serde(default)]
    reset_unix_nanos: i64,
    /// The tenant (id, hex) of a login's entity that enrolled itself, the only case where the
    /// tenant is known for certain: the purge removes the record once that tenant is shredded.
    /// Empty for root and for entities the root token enrolled.
    #[serde(default)]
    tenant: String,
}

impl MfaRecord {
    fn enrolled(&self) -> bool {
        !self.sealed.is_empty()
    }
}

/// A new enrolment: the secret, shown once.
pub struct TotpEnrollment {
    pub entity: String,
    pub secret_base32: Zeroizing<String>,
    pub otpauth_uri: Zeroizing<String>,
}

/// Longest entity name.
pub(super) const MAX_ENTITY_LEN: usize = 512;
/// Longest user claim of a JWT login (the entity adds the config name and tenant id).
pub(super) const MAX_USER_LEN: usize = 256;

pub(super) fn check_entity(entity: &str) -> Result<()> {
    if entity.is_empty() || entity.len() > MAX_ENTITY_LEN || entity.chars().any(char::is_control) {
        return Err(Error::invalid(
            "entity",
            format!("1 to {MAX_ENTITY_LEN} bytes, no control characters"),
        ));
    }
    Ok(())
}

/// The name `jwt:<config>:<tenant id>:<sub>` had before entities carried the tenant id.
fn legacy_jwt_entity(entity: &str) -> Option<String> {
    let rest = entity.strip_prefix("jwt:")?;
    let (config, rest) = rest.split_once(':')?;
    let (tenant, user) = rest.split_once(':')?;
    (tenant.len() == 16 && tenant.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("jwt:{config}:{user}"))
}

fn mfa_context(entity: &str) -> Context<'_> {
    Context {
        purpose: Purpose::MfaSecret,
        tenant: None,
        path: entity,
        version: 1,
    }
}

/// The key to `Vault::mfa_changes`: only this module makes one, so only this module takes the
/// lock that serializes MFA checks and enrolments.
pub(super) struct MfaChanges(());

/// MFA's own state: the lock over enrolments and checks, which only this module can take.
#[derive(Default)]
pub(super) struct MfaState {
    changes: OwnedLock<MfaChanges>,
}

impl Vault {
    /// Takes `mfa_changes` (each check and enrolment reads, then writes, an entity's record).
    fn hold_mfa_changes(&self) -> Held<'_, MfaChanges> {
        self.mfa_state.changes.hold(MfaChanges(()))
    }

    /// Fails unless the caller has the system scope and, if `op` is one of the operations that
    /// need MFA, a valid code.
    pub fn require_system_op(&self, caller: &Caller, op: SystemOp) -> Result<()> {
        require_system(caller)?;
        let required = self.mfa().mfa_system_ops()?;
        // Once any system operation needs MFA, changing MFA itself does too: otherwise a stolen
        // system token could switch the requirement off, or reset root's enrolment.
        if required.contains(&op) || (op == SystemOp::MfaConfig && !required.is_empty()) {
            self.verify_mfa(
                caller,
                &format!("system operation {} requires mfa", op.as_str()),
            )?;
        }
        Ok(())
    }

    /// Whether `entity` has a current TOTP enrolment.
    pub(super) fn mfa_enrolled(&self, entity: &str) -> Result<bool> {
        if entity.is_empty() {
            return Ok(false);
        }
        Ok(match self.data.get(Space::Config, &mfa_key(entity))? {
            Some(bytes) => from_json::<MfaRecord>(&bytes, "an mfa enrolment")?.enrolled(),
            None => false,
        })
    }

    /// Checks the caller's MFA code, once per call. `why` says what needed it (audit record).
    pub(super) fn verify_mfa(&self, caller: &Caller, why: &str) -> Result<()> {
        // Without a code the answer is a denial whatever is enrolled: given at once, with
        // nothing to spend or wait for.
        if caller.mfa_code.is_none() && !*lock(&caller.mfa_verified) {
            self.keyring()?;
            return Err(refused_mfa(caller, why));
        }
        // Spends a code (a write) under `mfa_changes`.
        refuse_to_wait()?;
        let changes = self.hold_mfa_changes();
        self.verify_mfa_locked(&changes, caller, why)
    }

    /// [`Vault::verify_mfa`] with `mfa_changes` held.
    fn verify_mfa_locked(
        &self,
        _changes: &Held<'_, MfaChanges>,
        caller: &Caller,
        why: &str,
    ) -> Result<()> {
        let mut verified = lock(&caller.mfa_verified);
        if *verified {
            return Ok(());
        }
        let keyring = self.keyring()?;
        let entity = &caller.record.entity;
        let (false, Some(code)) = (entity.starts_with("token:"), &caller.mfa_code) else {
            return Err(refused_mfa(caller, why));
        };
        let key = mfa_key(entity);
        let Some(bytes) = self.data.get(Space::Config, &key)? else {
            return Err(Error::denied(format!(
                "{why}; entity {entity} has no mfa enrolment"
            )));
        };
        let mut record: MfaRecord = from_json(&bytes, "an mfa enrolment")?;
        if !record.enrolled() {
            return Err(Error::denied(format!(
                "{why}; entity {entity} has no mfa enrolment (it was reset)"
            )));
        }
        let now = self.now();
        if record.locked_until_unix_nanos > now {
            return Err(Error::denied(format!(
                "{why}; mfa of entity {entity} is locked after {} failed attempts until {}",
                record.failures,
                crate::time::rfc3339(record.locked_until_unix_nanos)
            )));
        }
        let sealed = STANDARD
            .decode(&record.sealed)
            .map_err(|_| corrupt("an mfa enrolment"))?;
        let what = || format!("the mfa secret of entity {entity}");
        let root = Header::parse(&sealed)
            .ok()
            .filter(|header| header.key.kind == KeyKind::Root)
            .and_then(|header| keyring.root_key(header.key.version))
            .ok_or_else(|| Error::Integrity(what()))?;
        let bytes = crypto::open(root, &mfa_context(entity), &sealed, &what)?;
        let secret = TotpSecret::from_bytes(bytes).ok_or_else(|| corrupt("an mfa secret"))?;
        let now_seconds = now.div_euclid(1_000_000_000);
        let result = totp::check(&secret, code, now_seconds, record.last_used_step);
        let outcome = match result {
            Ok(step) => {
                record.last_used_step = Some(step);
                record.failures = 0;
                record.locked_until_unix_nanos = 0;
                Ok(())
            }
            Err(error) => {
                record.failures = record.failures.saturating_add(1);
                let mut reason = format!(
                    "{why}; {error} (entity {entity}, failed attempt {})",
                    record.failures
                );
                if record.failures >= MAX_MFA_FAILURES {
                    record.locked_until_unix_nanos = now
                        .saturating_add(i64::try_from(MFA_LOCKOUT.as_nanos()).unwrap_or(i64::MAX));
                    reason.push_str("; mfa locked");
                }
                Err(Error::denied(reason))
            }
        };
        let mut batch = WriteBatch::new();
        batch.put(Space::Config, key, to_json(&record)?);
        self.data.write(batch)?;
        if outcome.is_ok() {
            *verified = true;
        }
        outcome
    }
}

/// Multi-factor authentication: TOTP enrolments and the system operations that need a code, as `vault.mfa()` hands them out. The view derefs to the vault for the
/// helpers the operations share with the other subsystems.
pub struct Mfa<'a> {
    vault: &'a Vault,
}

impl std::ops::Deref for Mfa<'_> {
    type Target = Vault;

    fn deref(&self) -> &Vault {
        self.vault
    }
}

impl Vault {
    /// Multi-factor authentication: TOTP enrolments and the system operations that need a code.
    pub fn mfa(&self) -> Mfa<'_> {
        Mfa { vault: self }
    }
}

impl Mfa<'_> {
    /// The system operations that need MFA.
    pub fn mfa_system_ops(&self) -> Result<Vec<SystemOp>> {
        self.data
            .get(Space::Config, MFA_SYSTEM_KEY)?
            .map(|bytes| from_json(&bytes, "the mfa system operations"))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// Sets the system operations that need MFA (system scope; MFA too if changing this
    /// already needs it).
    pub fn set_mfa_system_ops(&self, caller: &Caller, ops: Vec<SystemOp>) -> Result<()> {
        self.keyring()?;
        self.require_system_op(caller, SystemOp::MfaConfig)?;
        let mut ops = ops;
        ops.sort();
        ops.dedup();
        let mut batch = WriteBatch::new();
        batch.put(Space::Config, MFA_SYSTEM_KEY.to_vec(), to_json(&ops)?);
        Ok(self.data.write(batch)?)
    }

    /// Enrols an entity in TOTP: the caller's own (`None`), or, for the root token, any entity
    /// (the secret is then handed to its owner out of band).
    ///
    /// Self-enrolment is trust on first use, so it is kept to the tokens whose holder *is* the
    /// entity: the root token and tokens issued by a login (AppRole, JWT, or a refresh of such
    /// a login). A token created by another token acts for its creator's entity and can enrol
    /// nothing: otherwise a stolen token could mint a child, enrol a second factor of the
    /// thief's, and pass every MFA check. An entity enrolled once (even if reset since) never
    /// enrols itself again; replacing a current secret needs a valid code.
    pub fn enroll_totp(&self, caller: &Caller, entity: Option<&str>) -> Result<TotpEnrollment> {
        let keyring = self.keyring()?;
        let own = entity.is_none_or(|e| e == caller.record.entity);
        let entity = match entity {
            Some(entity) if !own => {
                self.require_system_op(caller, SystemOp::MfaConfig)?;
                check_entity(entity)?;
                entity.to_owned()
            }
            _ => caller.record.entity.clone(),
        };
        if entity.is_empty() {
            return Err(Error::FailedPrecondition(
                "this token has no entity to enrol (create a new token)".into(),
            ));
        }
        if !caller.record.parent.is_empty() {
            return Err(Error::denied(if own {
                format!(
                    "token {} was created by another token and acts for entity {entity}; only a \
                     login or the root token enrols its own entity",
                    caller.accessor
                )
            } else {
                format!(
                    "token {} was created by another token and enrols nothing; the root token \
                     enrols entity {entity}",
                    caller.accessor
                )
            }));
        }
        // A tenant's own enrolments seal under the root key: they are rate limited per tenant.
        if own && let Some(tenant) = caller.tenant {
            self.admit_root_key_use(tenant)?;
        }
        let changes = self.hold_mfa_changes();
        if own
            && let Some(legacy) = legacy_jwt_entity(&entity)
            && self.data.get(Space::Config, &mfa_key(&legacy))?.is_some()
        {
            return Err(Error::denied(format!(
                "entity {entity} was enrolled as {legacy} before entities carried the tenant id; \
                 only the root token enrols it again (vault-cli mfa enroll --entity)"
            )));
        }
        // Stamped only when the entity's name carries the caller's own tenant: a legacy JWT
        // entity (no tenant in it, possibly shared by several tenants' tokens) gets none.
        let mut tenant = match (own, caller.tenant) {
            (true, Some(tenant)) if crate::schema::entity_tenant(&entity) == Some(tenant) => {
                tenant.to_hex()
            }
            _ => String::new(),
        };
        if let Some(bytes) = self.data.get(Space::Config, &mfa_key(&entity))? {
            let existing: MfaRecord = from_json(&bytes, "an mfa enrolment")?;
            if tenant.is_empty() {
                tenant.clone_from(&existing.tenant);
            }
            match (own, existing.enrolled()) {
                (false, true) => {
                    return Err(Error::AlreadyExists(format!(
                        "mfa enrolment of entity {entity} (reset it first)"
                    )));
                }
                (false, false) => {}
                (true, true) => self.verify_mfa_locked(
                    &changes,
                    caller,
                    "re-enrolling an enrolled entity requires mfa",
                )?,
                // The root token itself may enrol root again after a reset: every system
                // token acts for root, so nobody else could, and the holder of the root token
                // can do everything anyway.
                (true, false) if caller.system && caller.record.parent.is_empty() => {}
                (true, false) => {
                    return Err(Error::denied(format!(
                        "entity {entity} was enrolled before and its enrolment was reset; only \
                         the root token enrols it again (vault-cli mfa enroll --entity)"
                    )));
                }
            }
        }
        let secret = TotpSecret::generate()?;
        let sealed =
            self.seal_under_root(&keyring, &mfa_context(&entity), secret.expose_secret())?;
        let record = MfaRecord {
            sealed: STANDARD.encode(sealed),
            enrolled_unix_nanos: self.now(),
            last_used_step: None,
            failures: 0,
            locked_until_unix_nanos: 0,
            reset_unix_nanos: 0,
            tenant,
        };
        let mut batch = WriteBatch::new();
        batch.put(Space::Config, mfa_key(&entity), to_json(&record)?);
        self.data.write(batch)?;
        Ok(TotpEnrollment {
            secret_base32: secret.base32(),
            otpauth_uri: secret.otpauth_uri(TOTP_ISSUER, &entity),
            entity,
        })
    }

    /// Removes an entity's enrolment (system scope), e.g. after a lost device.
    pub fn reset_mfa(&self, caller: &Caller, entity: &str) -> Result<()> {
        self.keyring()?;
        self.require_system_op(caller, SystemOp::MfaConfig)?;
        let _changes = self.hold_mfa_changes();
        let key = mfa_key(entity);
        let mut record = match self.data.get(Space::Config, &key)? {
            Some(bytes) => from_json::<MfaRecord>(&bytes, "an mfa enrolment")?,
            None => return Err(Error::NotFound(format!("mfa enrolment of entity {entity}"))),
        };
        if !record.enrolled() {
            return Err(Error::NotFound(format!("mfa enrolment of entity {entity}")));
        }
        // The record stays without its secret: the entity was enrolled, so it may not enrol
        // itself again (whoever holds one of its tokens would otherwise pick the new factor).
        record.sealed.clear();
        record.last_used_step = None;
        record.failures = 0;
        record.locked_until_unix_nanos = 0;
        record.reset_unix_nanos = self.now();
        let mut batch = WriteBatch::new();
        batch.put(Space::Config, key, to_json(&record)?);
        Ok(self.data.write(batch)?)
    }
}

/// The denial of an MFA check that cannot pass: a caller whose entity is a legacy `token:` one,
/// or who presented no code.
fn refused_mfa(caller: &Caller, why: &str) -> Error {
    let entity = &caller.record.entity;
    if entity.starts_with("token:") {
        // `token:<accessor>` entities come from before created tokens acted for their
        // creator: a created token had one of its own, which its holder (a thief included)
        // could enrol, and its children inherit it now. None of them passes an MFA check;
        // create new tokens from a login or the root token.
        return Error::denied(format!(
            "{why}; entity {entity} belongs to a token created before created tokens acted for \
             their creator, and passes no mfa check; create a new token"
        ));
    }
    Error::denied(format!("{why}; no mfa code was presented"))
}
