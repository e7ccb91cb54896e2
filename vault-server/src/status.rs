//! The one place where vault-core errors become gRPC statuses. Internal details (storage and
//! integrity failures) go to the server log; the client gets a safe message.

use tonic::Status;
use vault_core::Error;

pub(crate) fn to_status(error: Error) -> Status {
    match error {
        Error::InvalidArgument { .. } | Error::TooLarge { .. } | Error::UnsealFailed => {
            Status::invalid_argument(error.to_string())
        }
        Error::Unauthenticated => Status::unauthenticated(error.to_string()),
        Error::PermissionDenied | Error::Denied { .. } => {
            Status::permission_denied("permission denied")
        }
        Error::LoginFailed { .. } => Status::unauthenticated("login failed"),
        Error::ResourceExhausted(_) => Status::resource_exhausted(error.to_string()),
        Error::NotFound(_) | Error::Gone { .. } => Status::not_found(error.to_string()),
        Error::CasMismatch { .. } => Status::failed_precondition(error.to_string()),
        Error::OutOfRange(_) => Status::out_of_range(error.to_string()),
        Error::AlreadyExists(_) => Status::already_exists(error.to_string()),
        Error::Sealed
        | Error::NotInitialized
        | Error::AlreadyInitialized
        | Error::FailedPrecondition(_) => Status::failed_precondition(error.to_string()),
        Error::Integrity(_) => {
            tracing::error!(error = %error, "integrity failure");
            Status::internal("integrity check failed; see the server log")
        }
        Error::Storage(ref detail) => {
            tracing::error!(error = %detail, "storage failure");
            Status::unavailable("storage unavailable; see the server log")
        }
        Error::AuditUnavailable => {
            Status::unavailable("audit log unavailable; no call is served until it can be written")
        }
        Error::Rng => {
            tracing::error!(error = %error, "rng failure");
            Status::internal("internal error; see the server log")
        }
        _ => {
            tracing::error!(error = %error, "unexpected error");
            Status::internal("internal error; see the server log")
        }
    }
}
