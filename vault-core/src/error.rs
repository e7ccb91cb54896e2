//! Errors of the vault core. Messages are lower case, name the offending field or path, and
//! never contain a secret value, share, token or key.
//!
//! One enum, [`Error`] (not `#[non_exhaustive]`: vault-server's `status.rs` matches it
//! exhaustively, so a new variant does not compile until it has a code and a reason). A
//! denial's or failed login's `reason` is for the audit record only ([`Error::audit_detail`]).
//! The test below prints every variant, so that wording is reviewed in one place.

/// Every failure the core reports. The server maps each variant to one gRPC status code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed; `field` names it, `reason` says what is wrong.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// A request is larger than a configured limit.
    #[error("{field} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        field: String,
        size: usize,
        limit: usize,
    },
    /// No token was presented.
    #[error("a token is required")]
    Unauthenticated,
    /// The token presented is unknown or malformed.
    #[error("permission denied")]
    PermissionDenied,
    /// A valid token lacks the right; `reason` names the failed check for the audit record and
    /// never reaches the client.
    #[error("permission denied")]
    Denied { reason: String },
    /// A login presented credentials that do not check out; `reason` is for the audit record.
    #[error("login failed")]
    LoginFailed { reason: String },
    /// A rate or concurrency limit refused the call.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The named object does not exist (or the caller may not know that it does).
    #[error("{0} not found")]
    NotFound(String),
    /// The named object is not there any more: soft-deleted, destroyed or expired; `why` says
    /// which (answered as NOT_FOUND).
    #[error("{what} not found: {why}")]
    Gone { what: String, why: String },
    /// A check-and-set write found another current version.
    #[error(
        "check-and-set failed for secret {path}: expected current version {expected}, the current version is {current}"
    )]
    CasMismatch {
        path: String,
        expected: u64,
        current: u64,
    },
    /// A position (a feed revision) outside what is kept.
    #[error("{0}")]
    OutOfRange(String),
    /// The named object exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The vault holds no keys in memory.
    #[error("vault is sealed")]
    Sealed,
    /// The vault has not been initialized yet.
    #[error("vault is not initialized")]
    NotInitialized,
    /// Init was called on an initialized vault.
    #[error("vault is already initialized")]
    AlreadyInitialized,
    /// The operation makes no sense in the current state (e.g. unseal while unsealed).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The submitted shares combine to a key that does not open the root key.
    #[error("unseal failed: the shares do not reconstruct the unseal key")]
    UnsealFailed,
    /// A stored ciphertext failed to open: tampered, moved or sealed under another key.
    #[error("integrity check failed for {0}")]
    Integrity(String),
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Rng,
    /// The audit log cannot be written, so the call may not proceed (fail closed).
    #[error("audit log unavailable")]
    AuditUnavailable,
    /// The storage backend failed; the detail goes to the server log only.
    #[error("storage unavailable")]
    Storage(#[source] StorageError),
    /// This node may not serve the call (it is a standby and the call needs what only the
    /// active node keeps, e.g. a tenant's rate limit); the server relays it to the active node.
    #[error("{0}")]
    NotActive(String),
    /// The auto seal (another vault's named key, or a file key) did not answer or refused;
    /// the detail names the seal and what it said, never a key.
    #[error("seal unavailable: {0}")]
    SealUnavailable(String),
    /// A no-wait attempt (`vault_storage::nowait`) reached something that would wait (a
    /// disk read, a round trip, a held lock); the server runs the call again where it may
    /// wait. Never an answer.
    #[error("the call would wait")]
    WouldWait,
}

/// `Err(WouldWait)` in a no-wait attempt: before whatever must not run on an async worker.
pub fn refuse_to_wait() -> Result<()> {
    if vault_storage::nowait::active() {
        Err(Error::WouldWait)
    } else {
        Ok(())
    }
}

pub use vault_storage::StorageError;

impl From<StorageError> for Error {
    fn from(error: StorageError) -> Self {
        if error.is_would_wait() {
            return Error::WouldWait;
        }
        Error::Storage(error)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What the audit record says about this failure: the failed check for a denial, the
    /// message otherwise. Never contains a value, token, share or key.
    pub fn audit_detail(&self) -> String {
        match self {
            Error::Denied { reason } | Error::LoginFailed { reason } => reason.clone(),
            Error::PermissionDenied => "unknown or malformed token".into(),
            other => other.to_string(),
        }
    }

    pub(crate) fn denied(reason: impl Into<String>) -> Self {
        Error::Denied {
            reason: reason.into(),
        }
    }

    pub(crate) fn login_failed(reason: impl Into<String>) -> Self {
        Error::LoginFailed {
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prints every variant so that the wording is reviewed in one place.
    #[test]
    fn every_message_is_lower_case_and_names_its_subject() {
        let all = [
            Error::invalid("path", "segment 2 is empty"),
            Error::TooLarge {
                field: "data[\"password\"]".into(),
                size: 2_000_000,
                limit: 1_048_576,
            },
            Error::Unauthenticated,
            Error::PermissionDenied,
            Error::denied("no policy grants read on \"db/x\""),
            Error::login_failed("secret id expired"),
            Error::ResourceExhausted("tenant acme is over its rate limit of 5 calls/s".into()),
            Error::NotFound("secret db/primary".into()),
            Error::Gone {
                what: "secret db/primary version 2".into(),
                why: "destroyed".into(),
            },
            Error::CasMismatch {
                path: "db/primary".into(),
                expected: 3,
                current: 4,
            },
            Error::OutOfRange("revision 5 was pruned; list the secrets again".into()),
            Error::AlreadyExists("tenant acme".into()),
            Error::Sealed,
            Error::NotInitialized,
            Error::AlreadyInitialized,
            Error::FailedPrecondition("vault is already unsealed".into()),
            Error::UnsealFailed,
            Error::Integrity("secret db/primary version 3".into()),
            Error::Rng,
            Error::AuditUnavailable,
            Error::Storage(StorageError("disk on fire".into())),
            Error::NotActive("tenant acme has a rate limit, which the active node keeps".into()),
            Error::SealUnavailable(
                "transit seal https://kms:8200 key unseal: connection refused".into(),
            ),
        ];
        let printed: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(
            printed,
            [
                "invalid path: segment 2 is empty",
                "data[\"password\"] is 2000000 bytes, over the limit of 1048576 bytes",
                "a token is required",
                "permission denied",
                "permission denied",
                "login failed",
                "tenant acme is over its rate limit of 5 calls/s",
                "secret db/primary not found",
                "secret db/primary version 2 not found: destroyed",
                "check-and-set failed for secret db/primary: expected current version 3, the current version is 4",
                "revision 5 was pruned; list the secrets again",
                "tenant acme already exists",
                "vault is sealed",
                "vault is not initialized",
                "vault is already initialized",
                "vault is already unsealed",
                "unseal failed: the shares do not reconstruct the unseal key",
                "integrity check failed for secret db/primary version 3",
                "the operating system's random number generator failed",
                "audit log unavailable",
                "storage unavailable",
                "tenant acme has a rate limit, which the active node keeps",
                "seal unavailable: transit seal https://kms:8200 key unseal: connection refused",
            ]
        );
    }
}
