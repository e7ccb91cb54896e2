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

use std::{ops::Deref, sync::Arc};

use crate::storage::Storage;

/// The data store (see the module documentation).
#[derive(Clone)]
pub struct DataStore(Arc<dyn Storage>);

/// The key store (see the module documentation).
#[derive(Clone)]
pub struct KeyStore(Arc<dyn Storage>);

impl DataStore {
    /// A data store on any backend (the in-memory one in tests). A server opens its stores
    /// with [`DataStore::open_rocks`] and [`KeyStore::open_rocks`], which cannot be swapped.
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        DataStore(storage)
    }

    /// The data store in `dir` (RocksDB, compressed).
    #[cfg(feature = "rocksdb")]
    pub fn open_rocks(dir: &std::path::Path) -> Result<Self, crate::storage::StorageError> {
        Ok(DataStore(Arc::new(crate::storage::RocksStorage::open(
            dir,
        )?)))
    }

    /// The data store on etcd, under `<options.prefix>data/`, and its backend (for fencing).
    #[cfg(feature = "etcd")]
    pub fn open_etcd(
        mut options: crate::storage::EtcdOptions,
    ) -> Result<(Self, Arc<crate::storage::EtcdStorage>), crate::storage::StorageError> {
        options.prefix.push_str("data/");
        let storage = Arc::new(crate::storage::EtcdStorage::connect(options)?);
        Ok((DataStore(Arc::clone(&storage) as Arc<dyn Storage>), storage))
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
        self.0.as_ref()
    }
}

impl Deref for KeyStore {
    type Target = dyn Storage;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}
