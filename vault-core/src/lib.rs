//! The vault's core: sealing, the key hierarchy, Shamir sharing, the seal state machine and
//! storage.
//!
//! This crate knows nothing of gRPC, protobuf or command lines. Its API is synchronous: storage
//! calls block, and the server runs them on a blocking thread pool.

#![forbid(unsafe_code)]

pub mod audit;
pub mod autoseal;
pub mod backup;
pub mod cidr;
pub mod crypto;
pub mod error;
pub mod files;
#[cfg(test)]
mod fuzz_targets;
pub mod jwt;
pub mod kms;
pub mod limits;
pub mod names;
pub mod policy;
pub mod recipient;
pub mod schema;
pub mod secret;
pub mod shamir;
/// The storage seam (crate `vault-storage`): the trait, its backends and the conformance suite.
pub use vault_storage as storage;
pub mod stores;
pub mod time;
pub mod token;
pub mod totp;
pub mod vault;

pub use error::{Error, Result};
pub use vault::{Vault, VaultConfig};

/// A crash point of the failure-injection tests (feature `failpoints`: the suite's `--workspace`
/// builds only, see the workspace's `default-members`): with `FAILPOINTS=NAME=return` in the
/// server's environment the process aborts here, as a kill -9 at that step would (the page
/// cache survives it, so it does not test fsync). Each sits at a durable step (RELIABILITY.md
/// lists them and what a restart then finds).
#[inline]
pub fn crash_point(name: &'static str) {
    if injected(name) {
        std::process::abort();
    }
}

/// Whether the failure-injection tests armed the I/O fault `name` and it fires now (feature
/// `failpoints`; always false otherwise). `FAILPOINTS=NAME=3*return` fires it three times.
/// The seams that ask (the data store's writes, the audit writer's) fail only for what touches
/// a path with a `faulty/` segment, so that a test chooses which calls meet the fault.
#[inline]
pub fn injected(name: &'static str) -> bool {
    #[cfg(feature = "failpoints")]
    {
        fail::eval(name, |_| ()).is_some()
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        false
    }
}
