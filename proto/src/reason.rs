//! The stable, machine-readable reason the server sends with every non-OK status, in the
//! `x-vault-reason` metadata entry ([`METADATA_KEY`]). Clients branch on the reason, never on
//! the message, which is for people and may change. A reason, once sent, keeps its meaning.
//!
//! A status the vault did not make itself (tonic's own, e.g. UNIMPLEMENTED for an unknown
//! method) carries the name of its status code as the reason.

/// The metadata entry (response header or trailer) that carries the reason.
pub const METADATA_KEY: &str = "x-vault-reason";

/// A request field is malformed; the message names the field.
pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
/// A request or one of its fields is larger than a limit.
pub const TOO_LARGE: &str = "TOO_LARGE";
/// No token was presented.
pub const TOKEN_REQUIRED: &str = "TOKEN_REQUIRED";
/// The token is unknown, malformed, expired or revoked, or lacks the right (the vault does not
/// say which).
pub const PERMISSION_DENIED: &str = "PERMISSION_DENIED";
/// A login's credentials did not check out.
pub const LOGIN_FAILED: &str = "LOGIN_FAILED";
/// A rate, concurrency or count limit refused the call; retry with backoff.
pub const LIMIT_REACHED: &str = "LIMIT_REACHED";
/// The named object does not exist.
pub const NOT_FOUND: &str = "NOT_FOUND";
/// The named object is not there any more (soft-deleted, destroyed or expired).
pub const GONE: &str = "GONE";
/// A check-and-set write found another current version.
pub const CAS_MISMATCH: &str = "CAS_MISMATCH";
/// A feed position outside what is kept; read again and watch from the new revision.
pub const OUT_OF_RANGE: &str = "OUT_OF_RANGE";
/// The named object exists already.
pub const ALREADY_EXISTS: &str = "ALREADY_EXISTS";
/// The vault is sealed; operators must unseal it.
pub const SEALED: &str = "SEALED";
/// The vault has not been initialized.
pub const NOT_INITIALIZED: &str = "NOT_INITIALIZED";
/// Init was called on an initialized vault.
pub const ALREADY_INITIALIZED: &str = "ALREADY_INITIALIZED";
/// The operation makes no sense in the current state; the message says why.
pub const FAILED_PRECONDITION: &str = "FAILED_PRECONDITION";
/// The submitted shares do not reconstruct the unseal key.
pub const UNSEAL_FAILED: &str = "UNSEAL_FAILED";
/// A stored ciphertext failed to open; the server log has the detail.
pub const INTEGRITY: &str = "INTEGRITY";
/// The audit log cannot be written, so no call is served.
pub const AUDIT_UNAVAILABLE: &str = "AUDIT_UNAVAILABLE";
/// The server runs without an audit log, so there is none to read.
pub const AUDIT_DISABLED: &str = "AUDIT_DISABLED";
/// The storage backend failed; the server log has the detail.
pub const STORAGE_UNAVAILABLE: &str = "STORAGE_UNAVAILABLE";
/// The storage backend is out of space (etcd raised its space alarm): nothing was written;
/// an operator must free space (compact, defragment, disarm the alarm) or raise the quota.
pub const STORAGE_FULL: &str = "STORAGE_FULL";
/// A standby could not reach the active node to relay the call (or none is elected yet);
/// retry: a new active node is elected within the lease TTL.
pub const ACTIVE_NODE_UNAVAILABLE: &str = "ACTIVE_NODE_UNAVAILABLE";
/// The auto seal (another vault's named key, or a file key) did not answer or refused to
/// unwrap the unseal key; the message names it. The vault stays sealed until it answers.
pub const SEAL_UNAVAILABLE: &str = "SEAL_UNAVAILABLE";
/// The request did not arrive in time.
pub const REQUEST_TIMEOUT: &str = "REQUEST_TIMEOUT";
/// The server is shutting down; retry against another node or later.
pub const SHUTTING_DOWN: &str = "SHUTTING_DOWN";
/// An unexpected failure; the server log has the detail under the request id.
pub const INTERNAL: &str = "INTERNAL";

/// Every reason the vault itself sends.
pub const ALL: &[&str] = &[
    INVALID_ARGUMENT,
    TOO_LARGE,
    TOKEN_REQUIRED,
    PERMISSION_DENIED,
    LOGIN_FAILED,
    LIMIT_REACHED,
    NOT_FOUND,
    GONE,
    CAS_MISMATCH,
    OUT_OF_RANGE,
    ALREADY_EXISTS,
    SEALED,
    NOT_INITIALIZED,
    ALREADY_INITIALIZED,
    FAILED_PRECONDITION,
    UNSEAL_FAILED,
    INTEGRITY,
    AUDIT_UNAVAILABLE,
    AUDIT_DISABLED,
    STORAGE_UNAVAILABLE,
    STORAGE_FULL,
    ACTIVE_NODE_UNAVAILABLE,
    SEAL_UNAVAILABLE,
    REQUEST_TIMEOUT,
    SHUTTING_DOWN,
    INTERNAL,
];

/// The reason a status carries: its `x-vault-reason` entry, if any.
pub fn of(status: &tonic::Status) -> Option<&str> {
    status
        .metadata()
        .get(METADATA_KEY)
        .and_then(|value| value.to_str().ok())
}
