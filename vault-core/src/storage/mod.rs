//! The byte-level storage trait, and its backends.
//!
//! Invariant: backends see only storage keys (tenant ids, paths: metadata, not secrets) and
//! values that are ciphertext or non-secret metadata. A write batch is atomic, and when
//! [`Storage::write`] returns the batch is durable (synced to the write-ahead log).
//!
//! Every backend passes the same conformance suite (`conformance.rs`); the in-memory backend is
//! the reference.

mod memory;
#[cfg(feature = "rocksdb")]
mod rocks;

#[cfg(test)]
mod conformance;

pub use memory::MemoryStorage;
#[cfg(feature = "rocksdb")]
pub use rocks::RocksStorage;

use crate::error::StorageError;

/// Separate key spaces (RocksDB column families). Configuration (tenants, tokens, keyring
/// metadata) and secret data never share one, so each can be compacted, backed up and scanned
/// apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Space {
    Config,
    Secrets,
}

impl Space {
    pub const ALL: [Space; 2] = [Space::Config, Space::Secrets];

    pub fn name(self) -> &'static str {
        match self {
            Space::Config => "config",
            Space::Secrets => "secrets",
        }
    }
}

/// One change in a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        space: Space,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        space: Space,
        key: Vec<u8>,
    },
}

/// Changes applied together or not at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<Op>,
}

impl WriteBatch {
    pub fn new() -> Self {
        WriteBatch::default()
    }

    pub fn put(
        &mut self,
        space: Space,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.ops.push(Op::Put {
            space,
            key: key.into(),
            value: value.into(),
        });
        self
    }

    pub fn delete(&mut self, space: Space, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Delete {
            space,
            key: key.into(),
        });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

pub trait Storage: Send + Sync + 'static {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Up to `limit` entries whose keys start with `prefix`, in key order, beginning at the
    /// first key `>= start` (`start` itself begins with `prefix`, or is the prefix).
    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError>;

    /// Applies the batch atomically; returns once it is durable.
    fn write(&self, batch: WriteBatch) -> Result<(), StorageError>;

    /// A short name for status output ("rocksdb", "memory").
    fn kind(&self) -> &'static str;

    /// Rewrites the stored files so that deleted entries are physically gone (no file of the
    /// store holds them afterwards, write-ahead log included). Backends without files do nothing.
    fn compact(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

/// The smallest key greater than every key that starts with `prefix`, or `None` if no such key
/// exists (the prefix is all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
