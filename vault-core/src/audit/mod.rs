//! The audit log: append-only, hash-chained, checkpoint-signed segment files.
//!
//! - `record`: the record format, hashing and signatures.
//! - `writer`: the group-committing writer thread (the only writer).
//! - `verify`: the chain walk shared by start-up recovery and offline verification.
//! - `query`: reading records back for query and export.
//! - `sink`: an external syslog sink that follows the durable log.
//! - `segments`: the segment files and their names.
//!
//! Segments are `DATA/audit/audit-NNNNNNNN.jsonl` (or `--audit-dir`), one JSON record per line,
//! each with `prev` = SHA-256 of the line before; a segment rolls over at
//! `--audit-segment-bytes`. The kinds of record ([`Kind`]):
//! - `outcome`: one per call, appended by vault-server's call layer once the call has answered;
//! - `intent`: before every RPC that vault-server's RPC table marks as a mutation, so no change
//!   commits without a durable record covering it; reconciled with its outcome at start-up;
//! - `checkpoint`: signs the chain head (Ed25519), every `--audit-checkpoint-records` records or
//!   `--audit-checkpoint-ms` (defaults 1000 and 1 s), only while unsealed; the first one after
//!   unseal covers what was written while sealed;
//! - `system`: what the vault did by itself: torn-tail repair, intents with no outcome
//!   reconciled as `crashed`, tail-check failures, background jobs (shredding, expiry notices,
//!   scheduled key changes);
//! - `prune`: retention removed segments; signed, and names the record they ended at, so the
//!   rest of the chain still verifies.
//!
//! Health and reflection calls are not audited; every other call is, `System/Status` included.
//!
//! At start-up [`writer::AuditLog::open`] walks the whole chain ([`verify`]): a partial last
//! record is cut and the repair recorded; a break anywhere before that refuses start-up, naming
//! the file and byte offset; the head the vault stored in its data store (`audit/head`, at most
//! once a second) must still be in the log, or a `system` record says records were removed.
//! Retention deletes the oldest segments first, and start-up finishes a prune that was cut
//! short.
//!
//! Switches for tests and benchmarks only: `--danger-audit-fault-file F` (hidden) makes every
//! write fail while `F` exists; `--danger-disable-audit` runs without a log (the on/off
//! benchmark).

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
