//! The vault's byte-level storage seam: the [`Storage`] trait, the in-memory backend, the
//! RocksDB backend (feature `rocksdb`), the etcd backend (feature `etcd`) and the conformance
//! suite (feature `testing`, with real etcd members for tests in `etcd_process`).
//!
//! Invariant: backends see only storage keys (tenant ids, paths: metadata, not secrets) and
//! values that are ciphertext or non-secret metadata. A write batch is atomic, and when
//! [`Storage::write`] returns the batch is durable (synced to the write-ahead log).
//!
//! Every backend passes the same conformance suite ([`conformance::run`], public with the
//! `testing` feature so that a backend in another crate runs the same checks); the in-memory
//! backend is the reference. The vault's own layout of keys (which key holds what, and which
//! ranges a tenant owns) is not here but in vault-core's `schema` module: this crate sees bytes.

#![forbid(unsafe_code)]

use std::fmt;

#[cfg(feature = "etcd")]
pub mod etcd;
mod memory;
pub mod nowait;
#[cfg(feature = "rocksdb")]
mod rocks;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
#[cfg(feature = "testing")]
pub mod etcd_process;

#[cfg(feature = "etcd")]
pub use etcd::{EtcdOptions, EtcdStorage, EtcdTls, EtcdUser};
pub use memory::MemoryStorage;
#[cfg(feature = "rocksdb")]
pub use rocks::RocksStorage;

/// A storage backend failure. The message is for operators (server log), not for callers.
#[derive(Debug)]
pub struct StorageError(pub String);

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StorageError {}

/// The message of [`StorageError::would_wait`].
const WOULD_WAIT: &str = "the request would wait on storage (no-wait attempt)";

impl StorageError {
    /// A no-wait attempt ([`nowait`]) asked for something the backend cannot answer from
    /// memory; the caller runs the call again where it may wait.
    pub fn would_wait() -> StorageError {
        StorageError(WOULD_WAIT.to_owned())
    }

    pub fn is_would_wait(&self) -> bool {
        self.0 == WOULD_WAIT
    }
}

/// Begins the message of a write refused because the backend is out of space (etcd's space
/// alarm); nothing of the write was applied.
pub const NO_SPACE: &str = "etcd is out of space";

impl StorageError {
    /// Whether the backend refused the write for want of space (see [`NO_SPACE`]).
    pub fn is_out_of_space(&self) -> bool {
        self.0.starts_with(NO_SPACE)
    }
}

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

impl WriteBatch {
    /// The bytes of keys and values the batch carries.
    pub fn bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, .. } => key.len() + value.len(),
                Op::Delete { key, .. } => key.len(),
            })
            .sum()
    }

    /// Whether a backend with `limits` takes the batch whole.
    pub fn fits(&self, limits: BatchLimits) -> bool {
        self.ops.len() <= limits.max_ops && self.bytes() <= limits.max_bytes
    }

    /// The batch cut, in order, into batches that each fit `limits`: for changes that need
    /// not be applied together (bulk deletion of what nothing reads any more, say). A single
    /// change too large for the backend stays alone in its batch, which the backend refuses.
    pub fn split(self, limits: BatchLimits) -> Vec<WriteBatch> {
        let mut parts = Vec::new();
        let mut current = WriteBatch::new();
        let mut bytes = 0usize;
        for op in self.ops {
            let size = match &op {
                Op::Put { key, value, .. } => key.len() + value.len(),
                Op::Delete { key, .. } => key.len(),
            };
            if !current.is_empty()
                && (current.ops.len() >= limits.max_ops
                    || bytes.saturating_add(size) > limits.max_bytes)
            {
                parts.push(std::mem::take(&mut current));
                bytes = 0;
            }
            bytes = bytes.saturating_add(size);
            current.ops.push(op);
        }
        if !current.is_empty() {
            parts.push(current);
        }
        parts
    }
}

/// The largest batch a backend takes in one atomic write: changes, and bytes of keys and
/// values. A larger batch is refused whole, with an error that names the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_ops: usize,
    pub max_bytes: usize,
}

impl BatchLimits {
    /// No limit but memory (RocksDB, the in-memory backend).
    pub const NONE: BatchLimits = BatchLimits {
        max_ops: usize::MAX,
        max_bytes: usize::MAX,
    };
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

pub trait Storage: Send + Sync + 'static {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Up to `limit` entries whose keys start with `prefix`, in key order, beginning at the
    /// first key `>= start` (`start` itself begins with `prefix`, or is the prefix). One call
    /// reads one consistent state: a batch written concurrently is in it whole or not at all.
    /// Paging (each call starting just after the last key of the one before) sees every key
    /// that existed throughout exactly once, in order, whatever is written meanwhile.
    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError>;

    /// Applies the batch atomically; returns once it is durable. A batch beyond
    /// [`Storage::batch_limits`] is refused whole.
    fn write(&self, batch: WriteBatch) -> Result<(), StorageError>;

    /// [`Storage::write`] only if `key` of `space` does not exist: `Ok(false)`, writing
    /// nothing, if it does. For a creation that processes sharing the store may race for (init
    /// on stores several nodes share): a backend that several processes write (etcd) checks and
    /// writes in one transaction; the others, each opened by one process, check and write under
    /// the caller's lock.
    fn write_if_absent(
        &self,
        batch: WriteBatch,
        space: Space,
        key: &[u8],
    ) -> Result<bool, StorageError> {
        if self.get(space, key)?.is_some() {
            return Ok(false);
        }
        self.write(batch)?;
        Ok(true)
    }

    /// [`Storage::write`] for records that belong to this node alone (its audit head), which
    /// a node writes whether or not it holds a cluster's leadership: a backend that fences
    /// writes (etcd) does not fence these.
    fn write_own(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.write(batch)
    }

    /// The largest batch [`Storage::write`] takes.
    fn batch_limits(&self) -> BatchLimits {
        BatchLimits::NONE
    }

    /// A short name for status output ("rocksdb", "etcd", "memory").
    fn kind(&self) -> &'static str;

    /// Rewrites the stored files so that deleted entries are physically gone (no file of the
    /// store holds them afterwards, write-ahead log included). Backends without files do nothing.
    fn compact(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Writes what is held in memory tables to table files, so that the next open has no
    /// write-ahead log to replay (a clean stop). Backends without memory tables do nothing.
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// What the backend tells of its size and compactions (metrics); empty when it keeps no
    /// such figures.
    fn stats(&self) -> StorageStats {
        StorageStats::default()
    }

    /// A consistent view of the whole store as it is now (for backups): writes made after this
    /// returns are not in it, and a batch is in it whole or not at all. Cheap to take; holding
    /// it keeps what it sees from being compacted away.
    fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StorageError> {
        Err(StorageError(format!(
            "the {} store takes no snapshots here (back it up with its own tools)",
            self.kind()
        )))
    }
}

/// A fixed view of a store ([`Storage::snapshot`]).
pub trait Snapshot {
    /// Up to `limit` entries of `space` in key order, from the first key `>= start`.
    fn scan(&self, space: Space, start: &[u8], limit: usize) -> Result<Vec<Entry>, StorageError>;
}

/// A backend's own figures, each `None` where it has none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Bytes of the store's table files (RocksDB: every column family's SST files).
    pub table_bytes: Option<u64>,
    /// Bytes held in memory tables, not yet flushed to table files.
    pub memtable_bytes: Option<u64>,
    /// Bytes compaction estimates it still has to rewrite.
    pub pending_compaction_bytes: Option<u64>,
    /// Compactions running now.
    pub running_compactions: Option<u64>,
    /// Estimated number of keys.
    pub keys: Option<u64>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "rocksdb")]
    fn put(storage: &dyn Storage, space: Space, key: &[u8], value: &[u8]) {
        let mut batch = WriteBatch::new();
        batch.put(space, key, value);
        storage.write(batch).expect("write");
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn rocksdb_writes_survive_reopen_and_the_directory_is_locked() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let storage = RocksStorage::open(dir.path()).expect("open");
            put(&storage, Space::Secrets, b"durable", b"yes");
            let second = RocksStorage::open(dir.path());
            let message = second.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains("in use by another process"), "{message}");
        }
        let reopened = RocksStorage::open(dir.path()).expect("reopen");
        assert_eq!(
            reopened.get(Space::Secrets, b"durable").expect("get"),
            Some(b"yes".to_vec())
        );
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn a_no_wait_rocksdb_read_is_served_from_memory_only_and_nothing_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let storage = RocksStorage::open(dir.path()).expect("open");
            put(&storage, Space::Secrets, b"on-disk", b"yes");
            storage.flush().expect("flush");
        }
        // Reopened: the value is in a table file, not in a memory table or the block cache.
        let storage = RocksStorage::open(dir.path()).expect("reopen");
        let mut attempt = nowait::Attempt::new();
        let cold = attempt.now(|| storage.get(Space::Secrets, b"on-disk"));
        assert!(
            cold.as_ref().is_err_and(StorageError::is_would_wait),
            "a read that needs the file must not wait: {cold:?}"
        );
        assert_eq!(
            attempt
                .run(|| storage.get(Space::Secrets, b"on-disk"))
                .expect("get"),
            Some(b"yes".to_vec())
        );
        // Now in the block cache: served without waiting, and so is an absent key.
        let warm = attempt.now(|| storage.get(Space::Secrets, b"on-disk"));
        assert_eq!(warm.expect("warm get"), Some(b"yes".to_vec()));
        put(&storage, Space::Secrets, b"fresh", b"in the memory table");
        let fresh = attempt.now(|| storage.get(Space::Secrets, b"fresh"));
        assert_eq!(
            fresh.expect("memtable get"),
            Some(b"in the memory table".to_vec())
        );
        let refused = attempt.now(|| {
            let mut batch = WriteBatch::new();
            batch.put(Space::Secrets, b"no", b"write");
            storage.write(batch)
        });
        assert!(refused.is_err_and(|e| e.is_would_wait()));
        assert_eq!(storage.get(Space::Secrets, b"no").expect("get"), None);
        let scan = attempt.now(|| storage.scan(Space::Secrets, b"", b"", 10));
        assert!(scan.is_err_and(|e| e.is_would_wait()));
    }

    /// RocksDB's own recovery of a torn WAL tail (its default point-in-time mode), shown at
    /// every byte offset of the last record: the copy opens, the earlier batches are all there,
    /// and the last one is there whole or not at all.
    #[cfg(feature = "rocksdb")]
    #[test]
    fn a_wal_torn_at_any_byte_of_its_last_record_recovers_to_the_batches_before_it() {
        fn copy(from: &std::path::Path, to: &std::path::Path) {
            std::fs::create_dir_all(to).expect("mkdir");
            for entry in std::fs::read_dir(from)
                .expect("read_dir")
                .map_while(Result::ok)
            {
                if entry.file_name() != "LOCK" {
                    std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
                }
            }
        }
        fn wal(dir: &std::path::Path) -> std::path::PathBuf {
            let mut logs: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
                .expect("read_dir")
                .map_while(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .collect();
            logs.sort();
            logs.pop().expect("a WAL file")
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("live");
        let storage = RocksStorage::open(&live).expect("open");
        for i in 0..3u8 {
            put(&storage, Space::Secrets, &[b'k', i], &[i; 100]);
        }
        let before = std::fs::metadata(wal(&live)).expect("wal").len();
        put(&storage, Space::Secrets, b"last", &[7u8; 300]);
        let after = std::fs::metadata(wal(&live)).expect("wal").len();
        assert!(after > before, "the last batch went to the WAL");
        for cut in before..=after {
            let copy_dir = dir.path().join(format!("cut-{cut}"));
            copy(&live, &copy_dir);
            let log = wal(&copy_dir);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&log)
                .and_then(|file| file.set_len(cut))
                .expect("truncate the WAL");
            let reopened = RocksStorage::open(&copy_dir)
                .unwrap_or_else(|e| panic!("a WAL cut at {cut} of {after} does not open: {e}"));
            for i in 0..3u8 {
                assert_eq!(
                    reopened.get(Space::Secrets, &[b'k', i]).expect("get"),
                    Some(vec![i; 100]),
                    "cut at {cut}: batch {i} lost"
                );
            }
            let last = reopened.get(Space::Secrets, b"last").expect("get");
            assert!(
                last.is_none() || last == Some(vec![7u8; 300]),
                "cut at {cut}: the last batch is half there"
            );
            if cut == after {
                assert_eq!(
                    last,
                    Some(vec![7u8; 300]),
                    "the whole WAL keeps the last batch"
                );
            }
            drop(reopened);
            std::fs::remove_dir_all(&copy_dir).expect("cleanup");
        }
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }
}
