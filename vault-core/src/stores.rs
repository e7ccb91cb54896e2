//! The vault's two stores as two types, so that they cannot be swapped: a [`KeyStore`] where a
//! [`DataStore`] is expected does not compile.
//!
//! The key store holds the seal configuration, the sealed root key, the sealed system keys,
//! every sealed KEK version and the wrapped named keys. The data store holds everything else:
//! tenants, tokens, policies, secrets (ciphertext), the feed and webhooks. A copy of the data
//! store therefore carries no key material, and a backup of one alone opens nothing.
//!
//! Writes that span both stores are ordered so that a crash leaves nothing reachable half made:
//! init writes the root token's record, then the key store (the commit point); creating a
//! tenant writes its KEK, then the tenant record. On disk the key store is `DATA/keys` and the
//! data store `DATA/data` (RocksDB, one column family per `Space`; the key store
//! uncompressed). Which key holds what is in [`crate::schema`].

use std::{
    any::Any,
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    ops::Deref,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::storage::{
    BatchLimits, Entry, Op, Snapshot, Space, Storage, StorageError, StorageStats, WriteBatch,
};

/// The data store (see the module documentation), with its caches of hot records.
#[derive(Clone)]
pub struct DataStore {
    storage: Arc<dyn Storage>,
    hot: Arc<Hot>,
}

/// The two caches of hot records: access records (tokens, their index, policies), read on
/// every call, and secrets' metadata, read on every get and put; apart, so that a walk over
/// a million secrets does not push the tokens out.
struct Hot {
    access: HotRecords,
    meta: HotRecords,
    /// See [`DataStore::set_hot_records_trusted`] (both caches).
    trusted: AtomicBool,
}

impl Hot {
    fn of(&self, kind: HotKind) -> &HotRecords {
        match kind {
            HotKind::Access => &self.access,
            HotKind::Meta => &self.meta,
        }
    }

    fn forget(&self, space: Space, key: &[u8]) {
        if let Some(kind) = hot_kind(space, key) {
            self.of(kind).forget(key);
        }
    }

    fn forget_all(&self) {
        self.access.forget_all();
        self.meta.forget_all();
    }
}

/// The key store (see the module documentation).
#[derive(Clone)]
pub struct KeyStore(Arc<dyn Storage>);

impl DataStore {
    /// A data store on any backend (the in-memory one in tests). A server opens its stores
    /// with [`DataStore::open_rocks`] and [`KeyStore::open_rocks`], which cannot be swapped.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        let hot = Arc::new(Hot {
            access: HotRecords::new(HOT_CAPACITY, HOT_BYTES),
            meta: HotRecords::new(HOT_CAPACITY, HOT_BYTES),
            trusted: AtomicBool::new(true),
        });
        DataStore {
            storage: Arc::new(Invalidating {
                inner: storage,
                hot: Arc::clone(&hot),
            }),
            hot,
        }
    }

    /// The record at `key`, decoded by `decode`, from a cache of hot records if it is one of
    /// them ([`hot_kind`]: token records, the accessor index, policies, secrets' metadata) and
    /// was read before; read and decoded otherwise (and kept, for a hot record of at most
    /// [`MAX_HOT_RECORD_BYTES`]). `None` if there is no record (not kept: absence is read again
    /// every time).
    ///
    /// Every write through this store forgets the hot records it touches, after the write and
    /// whether or not it succeeded; a read that raced with such a write does not keep what it
    /// read (the shard's generation moved on). Writes by other nodes reach the cache through
    /// [`DataStore::forget`] (the watch) or [`DataStore::forget_all`].
    pub(crate) fn cached<T: Send + Sync + 'static>(
        &self,
        space: Space,
        key: &[u8],
        decode: impl FnOnce(&[u8]) -> crate::Result<T>,
    ) -> crate::Result<Option<Arc<T>>> {
        let Some(kind) = hot_kind(space, key) else {
            return match self.storage.get(space, key)? {
                Some(bytes) => Ok(Some(Arc::new(decode(&bytes)?))),
                None => Ok(None),
            };
        };
        let trusted = &self.hot.trusted;
        let hot = self.hot.of(kind);
        let shard = hot.shard(key);
        let generation = {
            let held = lock(shard);
            if trusted.load(Ordering::Acquire)
                && let Some((found, _)) = held.entries.get(key)
                && let Ok(value) = Arc::clone(found).downcast::<T>()
            {
                return Ok(Some(value));
            }
            held.generation
        };
        let Some(bytes) = self.storage.get(space, key)? else {
            return Ok(None);
        };
        let weight = key.len() + bytes.len();
        let value = Arc::new(decode(&bytes)?);
        if weight > MAX_HOT_RECORD_BYTES || !trusted.load(Ordering::Acquire) {
            return Ok(Some(value));
        }
        let mut held = lock(shard);
        if held.generation == generation {
            if let Some((_, replaced)) = held.entries.remove(key) {
                held.bytes -= replaced;
            }
            while held.entries.len() >= hot.per_shard || held.bytes + weight > hot.bytes_per_shard {
                let Some(evicted) = held.entries.keys().next().cloned() else {
                    break;
                };
                if let Some((_, freed)) = held.entries.remove(&evicted) {
                    held.bytes -= freed;
                }
            }
            held.entries.insert(
                key.to_vec(),
                (Arc::clone(&value) as Arc<dyn Any + Send + Sync>, weight),
            );
            held.bytes += weight;
        }
        Ok(Some(value))
    }

    /// Forgets the hot record at `key` (changed by another node).
    pub(crate) fn forget(&self, space: Space, key: &[u8]) {
        self.hot.forget(space, key);
    }

    /// Forgets every hot record.
    pub(crate) fn forget_all(&self) {
        self.hot.forget_all();
    }

    /// Whether hot records may be served from memory: a node whose view of other nodes'
    /// writes has a gap (its watch is down) reads them from the store until it is whole again,
    /// and forgets what it held.
    pub fn set_hot_records_trusted(&self, trusted: bool) {
        let was = self.hot.trusted.swap(trusted, Ordering::AcqRel);
        if was && !trusted {
            self.hot.forget_all();
        }
    }

    /// How many access records (token records, index entries, policies) are held (tests).
    pub fn hot_records(&self) -> usize {
        self.hot.access.len()
    }

    /// How many secrets' metadata records are held (tests).
    pub fn hot_metadata(&self) -> usize {
        self.hot.meta.len()
    }

    /// The data store in `dir` (RocksDB, compressed).
    #[cfg(feature = "rocksdb")]
    pub fn open_rocks(dir: &std::path::Path) -> Result<Self, crate::storage::StorageError> {
        Ok(DataStore::new(Arc::new(
            crate::storage::RocksStorage::open(dir)?,
        )))
    }

    /// The data store on etcd, under `<options.prefix>data/`, and its backend (for fencing).
    #[cfg(feature = "etcd")]
    pub fn open_etcd(
        mut options: crate::storage::EtcdOptions,
    ) -> Result<(Self, Arc<crate::storage::EtcdStorage>), crate::storage::StorageError> {
        options.prefix.push_str("data/");
        let storage = Arc::new(crate::storage::EtcdStorage::connect(options)?);
        Ok((
            DataStore::new(Arc::clone(&storage) as Arc<dyn Storage>),
            storage,
        ))
    }
}

impl KeyStore {
    /// A key store on any backend (see [`DataStore::new`]).
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        KeyStore(storage)
    }

    /// The key store in `dir` (RocksDB, uncompressed: it holds only sealed blobs, and its files
    /// can be searched byte for byte to show a destroyed key is gone).
    #[cfg(feature = "rocksdb")]
    pub fn open_rocks(dir: &std::path::Path) -> Result<Self, crate::storage::StorageError> {
        Ok(KeyStore(Arc::new(
            crate::storage::RocksStorage::open_key_store(dir)?,
        )))
    }

    /// The key store on etcd, under `<options.prefix>keys/` (on the data store's cluster or
    /// one of its own).
    #[cfg(feature = "etcd")]
    pub fn open_etcd(
        mut options: crate::storage::EtcdOptions,
    ) -> Result<(Self, Arc<crate::storage::EtcdStorage>), crate::storage::StorageError> {
        options.prefix.push_str("keys/");
        let storage = Arc::new(crate::storage::EtcdStorage::connect(options)?);
        Ok((KeyStore(Arc::clone(&storage) as Arc<dyn Storage>), storage))
    }
}

impl Deref for DataStore {
    type Target = dyn Storage;

    fn deref(&self) -> &Self::Target {
        self.storage.as_ref()
    }
}

/// Hot records held at most, and their bytes (key and stored value) at most.
const HOT_CAPACITY: usize = 16_384;
const HOT_BYTES: usize = 16 * 1024 * 1024;
/// A record larger than this is read from the store every time (a policy of many rules).
const MAX_HOT_RECORD_BYTES: usize = 16 * 1024;
const HOT_SHARDS: usize = 16;

/// Which cache keeps the record at `key` decoded, if any: token records, the accessor index
/// (which says a token is not revoked) and policies, read on every call; secrets' metadata
/// (`t/<tenant>/m/...`), read on every get and put. Their writes all go through the data
/// store, which forgets them.
#[derive(Clone, Copy)]
enum HotKind {
    Access,
    Meta,
}

fn hot_kind(space: Space, key: &[u8]) -> Option<HotKind> {
    match space {
        Space::Config
            if key.starts_with(crate::schema::TOKEN_PREFIX)
                || key.starts_with(crate::schema::ACCESSOR_PREFIX)
                || key.starts_with(crate::schema::POLICY_PREFIX) =>
        {
            Some(HotKind::Access)
        }
        Space::Secrets if crate::schema::is_meta_key(key) => Some(HotKind::Meta),
        _ => None,
    }
}

/// The cache of [`DataStore::cached`]: shards of decoded records, each with a generation that
/// every forgetting moves on.
struct HotRecords {
    shards: Box<[Mutex<HotShard>]>,
    per_shard: usize,
    bytes_per_shard: usize,
    hasher: RandomState,
}

#[derive(Default)]
struct HotShard {
    generation: u64,
    /// Each record with its weight (the bytes of its key and stored value).
    entries: HashMap<Vec<u8>, (Arc<dyn Any + Send + Sync>, usize)>,
    bytes: usize,
}

fn lock(shard: &Mutex<HotShard>) -> MutexGuard<'_, HotShard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HotRecords {
    fn new(capacity: usize, bytes: usize) -> Self {
        HotRecords {
            shards: (0..HOT_SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: (capacity / HOT_SHARDS).max(1),
            bytes_per_shard: (bytes / HOT_SHARDS).max(MAX_HOT_RECORD_BYTES),
            hasher: RandomState::new(),
        }
    }

    fn forget_all(&self) {
        for shard in &self.shards {
            let mut held = lock(shard);
            held.entries.clear();
            held.bytes = 0;
            held.generation = held.generation.wrapping_add(1);
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<HotShard> {
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        &self.shards[index]
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).entries.len()).sum()
    }

    fn forget(&self, key: &[u8]) {
        let mut held = lock(self.shard(key));
        if let Some((_, freed)) = held.entries.remove(key) {
            held.bytes -= freed;
        }
        held.generation = held.generation.wrapping_add(1);
    }
}

impl Hot {
    fn forget_batch(&self, batch_keys: &[(Space, Vec<u8>)]) {
        for (space, key) in batch_keys {
            self.forget(*space, key);
        }
    }
}

/// The data store's backend, forgetting the hot records each write touches once it is done.
struct Invalidating {
    inner: Arc<dyn Storage>,
    hot: Arc<Hot>,
}

/// The hot keys a batch writes (taken before the batch moves into the backend).
fn hot_keys(batch: &WriteBatch) -> Vec<(Space, Vec<u8>)> {
    batch
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Put { space, key, .. } | Op::Delete { space, key } => {
                hot_kind(*space, key).map(|_| (*space, key.clone()))
            }
        })
        .collect()
}

impl Storage for Invalidating {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(space, key)
    }

    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        self.inner.scan(space, prefix, start, limit)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        // The failure-injection tests' I/O fault (feature `failpoints`): see `crate::injected`.
        if touches_faulty(&batch) && crate::injected("storage-write-error") {
            return Err(StorageError(
                "injected I/O error (failpoint storage-write-error)".into(),
            ));
        }
        let keys = hot_keys(&batch);
        let written = self.inner.write(batch);
        self.hot.forget_batch(&keys);
        written
    }

    fn write_if_absent(
        &self,
        batch: WriteBatch,
        space: Space,
        key: &[u8],
    ) -> Result<bool, StorageError> {
        let keys = hot_keys(&batch);
        let written = self.inner.write_if_absent(batch, space, key);
        self.hot.forget_batch(&keys);
        written
    }

    fn write_own(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let keys = hot_keys(&batch);
        let written = self.inner.write_own(batch);
        self.hot.forget_batch(&keys);
        written
    }

    fn batch_limits(&self) -> BatchLimits {
        self.inner.batch_limits()
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn compact(&self) -> Result<(), StorageError> {
        self.inner.compact()
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush()
    }

    fn stats(&self) -> StorageStats {
        self.inner.stats()
    }

    fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StorageError> {
        self.inner.snapshot()
    }
}

impl Deref for KeyStore {
    type Target = dyn Storage;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

/// Whether a batch writes under a path with a `faulty/` segment (the failure-injection tests'
/// I/O faults hit only those; without the `failpoints` feature nothing asks).
fn touches_faulty(batch: &WriteBatch) -> bool {
    cfg!(feature = "failpoints")
        && batch.ops.iter().any(|op| {
            let key = match op {
                vault_storage::Op::Put { key, .. } | vault_storage::Op::Delete { key, .. } => key,
            };
            key.windows(7).any(|w| w == b"faulty/")
        })
}
