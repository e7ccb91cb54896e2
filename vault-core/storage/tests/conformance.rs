//! The conformance suite run from outside the crate, through its public `testing` module, as a
//! backend of another crate would run it.

use vault_storage::{MemoryStorage, conformance};

#[test]
fn memory_backend_conforms() {
    conformance::run(&MemoryStorage::new());
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_backend_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::run(&vault_storage::RocksStorage::open(dir.path()).expect("open"));
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_key_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::run(&vault_storage::RocksStorage::open_key_store(dir.path()).expect("open"));
}
