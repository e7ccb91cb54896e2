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
