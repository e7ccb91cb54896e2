//! The one place where vault-core errors become gRPC statuses, and where every status the
//! server makes gets its stable reason (`x-vault-reason`, see `vault_proto::reason`). Internal
//! details (storage and integrity failures) go to the server log; the client gets a safe
//! message. A denial (`PermissionDenied` or `Denied`) always reads PERMISSION_DENIED
//! "permission denied" with one reason, so the caller cannot tell an unknown token from a
//! missing grant.
//!
//! The test below turns a hand-written list of the variants (complete today; the compiler
//! checks the match in `code_and_reason`, not the list) into statuses and checks that each
//! carries a reason from `vault_proto::reason::ALL`, and that the two denials share reason and
//! message. It does not look at the wording of messages (vault-core's `error.rs` test does).

use tonic::{Code, Status, metadata::MetadataValue};
use vault_core::Error;
use vault_proto::reason;

/// A status with its reason attached. Every status the server makes goes through here.
pub(crate) fn status(code: Code, why: &'static str, message: impl Into<String>) -> Status {
    let mut status = Status::new(code, message);
    status
        .metadata_mut()
        .insert(reason::METADATA_KEY, MetadataValue::from_static(why));
    status
}

/// The code and reason of each error. Exhaustive: a new variant does not compile until it has
/// its own row.
fn code_and_reason(error: &Error) -> (Code, &'static str) {
    match error {
        Error::InvalidArgument { .. } => (Code::InvalidArgument, reason::INVALID_ARGUMENT),
        Error::TooLarge { .. } => (Code::InvalidArgument, reason::TOO_LARGE),
        Error::UnsealFailed => (Code::InvalidArgument, reason::UNSEAL_FAILED),
        Error::Unauthenticated => (Code::Unauthenticated, reason::TOKEN_REQUIRED),
        // One reason for both: the caller must not learn whether the token exists.
        Error::PermissionDenied | Error::Denied { .. } => {
            (Code::PermissionDenied, reason::PERMISSION_DENIED)
        }
        Error::LoginFailed { .. } => (Code::Unauthenticated, reason::LOGIN_FAILED),
        Error::ResourceExhausted(_) => (Code::ResourceExhausted, reason::LIMIT_REACHED),
        Error::NotFound(_) => (Code::NotFound, reason::NOT_FOUND),
        Error::Gone { .. } => (Code::NotFound, reason::GONE),
        Error::CasMismatch { .. } => (Code::FailedPrecondition, reason::CAS_MISMATCH),
        Error::OutOfRange(_) => (Code::OutOfRange, reason::OUT_OF_RANGE),
        Error::AlreadyExists(_) => (Code::AlreadyExists, reason::ALREADY_EXISTS),
        Error::Sealed => (Code::FailedPrecondition, reason::SEALED),
        Error::NotInitialized => (Code::FailedPrecondition, reason::NOT_INITIALIZED),
        Error::AlreadyInitialized => (Code::FailedPrecondition, reason::ALREADY_INITIALIZED),
        Error::FailedPrecondition(_) => (Code::FailedPrecondition, reason::FAILED_PRECONDITION),
        Error::Integrity(_) => (Code::Internal, reason::INTEGRITY),
        Error::Storage(detail) if detail.is_out_of_space() => {
            (Code::ResourceExhausted, reason::STORAGE_FULL)
        }
        Error::Storage(_) => (Code::Unavailable, reason::STORAGE_UNAVAILABLE),
        Error::AuditUnavailable => (Code::Unavailable, reason::AUDIT_UNAVAILABLE),
        Error::NotActive(_) => (Code::Unavailable, reason::ACTIVE_NODE_UNAVAILABLE),
        Error::SealUnavailable(_) => (Code::Unavailable, reason::SEAL_UNAVAILABLE),
        Error::Rng => (Code::Internal, reason::INTERNAL),
        // Only a no-wait attempt answers it, and `Call::now_or_blocking` runs the call again.
        Error::WouldWait => (Code::Internal, reason::INTERNAL),
    }
}

/// In the metadata of a standby's answer that the call must be relayed to the active node
/// ([`Error::NotActive`]); the call layer relays it and the client never sees this answer.
pub(crate) const RELAY_HEADER: &str = "x-vault-relay";

pub(crate) fn to_status(error: Error) -> Status {
    let (code, why) = code_and_reason(&error);
    if let Error::NotActive(_) = &error {
        let mut status = status(code, why, error.to_string());
        status
            .metadata_mut()
            .insert(RELAY_HEADER, MetadataValue::from_static("1"));
        return status;
    }
    let message = match &error {
        Error::PermissionDenied | Error::Denied { .. } => "permission denied".to_owned(),
        Error::LoginFailed { .. } => "login failed".to_owned(),
        Error::Integrity(_) => {
            tracing::error!(error = %error, "integrity failure");
            "integrity check failed; see the server log".to_owned()
        }
        Error::Storage(detail) if detail.is_out_of_space() => {
            tracing::error!(error = %detail, "storage out of space");
            "storage is out of space (etcd raised its space alarm); nothing was written. An \
             operator must compact and defragment etcd and disarm the alarm, or raise its \
             quota (--quota-backend-bytes)"
                .to_owned()
        }
        Error::Storage(detail) => {
            tracing::error!(error = %detail, "storage failure");
            "storage unavailable; see the server log".to_owned()
        }
        Error::AuditUnavailable => {
            "audit log unavailable; no call is served until it can be written".to_owned()
        }
        Error::Rng => {
            tracing::error!(error = %error, "rng failure");
            "internal error; see the server log".to_owned()
        }
        _ => error.to_string(),
    };
    status(code, why, message)
}

/// The answer to a failure of the server's own (a panic, a lost task): INTERNAL, details in
/// the log.
pub(crate) fn internal() -> Status {
    status(
        Code::Internal,
        reason::INTERNAL,
        "internal error; see the server log",
    )
}

/// The reason for a status the vault did not make (tonic's own): its code's name.
pub(crate) fn fallback_reason(code: Code) -> &'static str {
    crate::call::code_name(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_core::error::StorageError;

    /// Every variant, once: a new one must be added here (and to `code_and_reason`).
    fn every_error() -> Vec<Error> {
        vec![
            Error::InvalidArgument {
                field: "path",
                reason: "x".into(),
            },
            Error::TooLarge {
                field: "data".into(),
                size: 2,
                limit: 1,
            },
            Error::Unauthenticated,
            Error::PermissionDenied,
            Error::Denied {
                reason: "policy".into(),
            },
            Error::LoginFailed {
                reason: "bad secret".into(),
            },
            Error::ResourceExhausted("limit".into()),
            Error::NotFound("secret x".into()),
            Error::Gone {
                what: "secret x".into(),
                why: "destroyed".into(),
            },
            Error::CasMismatch {
                path: "x".into(),
                expected: 1,
                current: 2,
            },
            Error::OutOfRange("old".into()),
            Error::AlreadyExists("tenant x".into()),
            Error::Sealed,
            Error::NotInitialized,
            Error::AlreadyInitialized,
            Error::FailedPrecondition("state".into()),
            Error::UnsealFailed,
            Error::Integrity("secret x".into()),
            Error::Rng,
            Error::AuditUnavailable,
            Error::Storage(StorageError("disk".into())),
            Error::Storage(StorageError(format!(
                "{} (its space alarm is raised)",
                vault_core::storage::NO_SPACE
            ))),
            Error::NotActive("tenant acme has a rate limit".into()),
            Error::SealUnavailable("transit seal: connection refused".into()),
        ]
    }

    #[test]
    fn every_error_carries_a_known_reason_and_denials_one_reason() {
        for error in every_error() {
            let printed = format!("{error:?}");
            let status = to_status(error);
            let why = reason::of(&status).unwrap_or_default().to_owned();
            assert!(
                reason::ALL.contains(&why.as_str()),
                "{printed}: reason {why:?}"
            );
        }
        let unknown = to_status(Error::PermissionDenied);
        let denied = to_status(Error::Denied {
            reason: "policy default lacks read".into(),
        });
        assert_eq!(reason::of(&unknown), reason::of(&denied));
        assert_eq!(unknown.message(), denied.message());
        assert_eq!(reason::of(&to_status(Error::Sealed)), Some(reason::SEALED));
    }
}
