//! The audit log: append-only, hash-chained, checkpoint-signed segment files.
//!
//! - `record`: the record format, hashing and signatures.
//! - `writer`: the group-committing writer thread (the only writer).
//! - `verify`: the chain walk shared by start-up recovery and offline verification.
//! - `query`: reading records back for query and export.
//! - `sink`: an external syslog sink that follows the durable log.

pub mod query;
pub mod record;
pub mod segments;
#[cfg(unix)]
pub mod sink;
pub mod verify;
pub mod writer;

pub use record::{Entry, Kind, Record};
pub use verify::{Report, scan};

#[cfg(test)]
mod tests;
