//! Typed errors: one variant per thing an application does something different about, each
//! saying what to do. Built from the server's gRPC status or from a failure on this side.

use std::fmt;

use tonic::{Code, Status};
use vault_proto::reason;

/// What went wrong, and (in its Display) what to do about it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The vault is sealed: nothing can be read until operators unseal it. Retry later.
    Sealed,
    /// The vault has not been initialized yet.
    NotInitialized,
    /// No valid token: it is missing, expired or revoked, or the login was refused.
    Unauthenticated { message: String },
    /// The token's policies do not allow this, or the token is no longer valid: like Vault,
    /// the server answers an unknown, expired or revoked token as it answers a policy denial.
    Denied { message: String },
    /// The secret, version or field does not exist (or is deleted, destroyed or expired; the
    /// message says which).
    NotFound { message: String },
    /// The request is malformed; the message names the field.
    InvalidArgument { message: String },
    /// A check-and-set mismatch or another precondition that does not hold.
    FailedPrecondition { message: String },
    /// Too many requests (rate or concurrency limit). Retry with backoff.
    ResourceExhausted { message: String },
    /// A watch asked for a revision older than the retained feed: read the secrets again and
    /// watch from now.
    OutOfRange { message: String },
    /// The server (or its audit log or storage) is unavailable, or the call timed out. Retry.
    Unavailable { message: String },
    /// The connection could not be made.
    Connect { addr: String, reason: String },
    /// The client's own configuration is wrong (address, TLS files, a token that cannot be
    /// sent); the message names the setting.
    Config { message: String },
    /// A value was asked for as text but is not UTF-8; read it as bytes.
    NotUtf8,
    /// Any other status from the server.
    Server { code: Code, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether the same call may succeed later without anything changing on the caller's side.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Sealed
                | Error::ResourceExhausted { .. }
                | Error::Unavailable { .. }
                | Error::Connect { .. }
        )
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound {
            message: message.into(),
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        let message = status.message().to_owned();
        // A connection lost mid-call (the server restarting, say) arrives as a status made on
        // this side from the transport's error (UNKNOWN or INTERNAL, with the error as its
        // source), not as one the server sent: every status the server sends has a reason.
        let transport = reason::of(&status).is_none()
            && (std::error::Error::source(&status).is_some()
                || (status.code() == Code::Unknown
                    && (message.starts_with("h2 protocol error")
                        || message.starts_with("transport error"))));
        if transport {
            return Error::Unavailable { message };
        }
        // The server's stable reason decides; the message is for people.
        match vault_proto::reason::of(&status) {
            // Also when a seal ends a watch ("vault is sealed; resume from revision N").
            Some(reason::SEALED) => return Error::Sealed,
            Some(reason::NOT_INITIALIZED) => return Error::NotInitialized,
            _ => {}
        }
        match status.code() {
            Code::FailedPrecondition => Error::FailedPrecondition { message },
            Code::Unauthenticated => Error::Unauthenticated { message },
            Code::PermissionDenied => Error::Denied { message },
            Code::NotFound => Error::NotFound { message },
            Code::InvalidArgument => Error::InvalidArgument { message },
            Code::ResourceExhausted => Error::ResourceExhausted { message },
            Code::OutOfRange => Error::OutOfRange { message },
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                Error::Unavailable { message }
            }
            code => Error::Server { code, message },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Sealed => write!(
                f,
                "the vault is sealed: operators must unseal it (`vault-cli unseal`); retry afterwards"
            ),
            Error::NotInitialized => write!(
                f,
                "the vault is not initialized: an operator must run `vault-cli init` first"
            ),
            Error::Unauthenticated { message } => write!(
                f,
                "not authenticated ({message}): the token is missing, expired or revoked; log in again"
            ),
            Error::Denied { message } => write!(
                f,
                "permission denied ({message}): the token's policies do not allow this (ask a \
                 tenant administrator for a policy that does), or the token expired or was revoked"
            ),
            Error::NotFound { message } => write!(f, "not found: {message}"),
            Error::InvalidArgument { message } => write!(f, "invalid request: {message}"),
            Error::FailedPrecondition { message } => write!(f, "precondition failed: {message}"),
            Error::ResourceExhausted { message } => {
                write!(f, "too many requests ({message}): retry with backoff")
            }
            Error::OutOfRange { message } => write!(
                f,
                "watch position too old ({message}): read the secrets again and watch from now"
            ),
            Error::Unavailable { message } => {
                write!(
                    f,
                    "the vault is unavailable ({message}): retry with backoff"
                )
            }
            Error::Connect { addr, reason } => write!(
                f,
                "cannot connect to the vault at {addr}: {reason}; is vault-server running there? (VAULT_ADDR)"
            ),
            Error::Config { message } => write!(f, "client configuration: {message}"),
            Error::NotUtf8 => write!(
                f,
                "the value is not UTF-8 text: read it as bytes (SecretValue::expose)"
            ),
            Error::Server { code, message } => write!(f, "the vault answered {code:?}: {message}"),
        }
    }
}

impl std::error::Error for Error {}

/// An error and its sources on one line.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
}
