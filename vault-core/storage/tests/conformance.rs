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

/// The whole suite against a real etcd (three members, as in production), for the data store's
/// prefix and the key store's.
#[cfg(feature = "etcd")]
#[test]
fn etcd_backend_conforms() {
    use vault_storage::{EtcdOptions, EtcdStorage, etcd_process::EtcdCluster};
    let cluster = EtcdCluster::start(3);
    for prefix in ["vault/data/", "vault/keys/"] {
        let storage =
            EtcdStorage::connect(EtcdOptions::new(cluster.endpoints(), prefix)).expect("connect");
        conformance::run(&storage);
    }
}
