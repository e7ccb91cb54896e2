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

/// Fencing: a store fenced on a key's create revision commits while the key is unchanged, and
/// refuses (applying nothing) once the key was deleted and created again, as when another node
/// takes the leadership; an own-record write is not fenced.
#[cfg(feature = "etcd")]
#[test]
fn an_etcd_write_fenced_on_a_lost_term_commits_nothing() {
    use vault_storage::{
        EtcdOptions, EtcdStorage, Space, Storage, WriteBatch,
        etcd::{FENCED, Fence},
        etcd_process::EtcdCluster,
    };
    let cluster = EtcdCluster::start(1);
    let storage = EtcdStorage::connect(EtcdOptions::new(cluster.endpoints(), "fence/data/"))
        .expect("connect");
    let term = |storage: &EtcdStorage| {
        let mut client = storage.client().clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            client.delete("fence/leader", None).await.expect("delete");
            let put = client.put("fence/leader", "node", None).await.expect("put");
            put.header().expect("header").revision()
        })
    };
    let put = |key: &str| {
        let mut batch = WriteBatch::new();
        batch
            .put(Space::Secrets, key, b"v".to_vec())
            .put(Space::Config, key, b"v".to_vec());
        batch
    };
    let first = term(&storage);
    storage.set_fence(Some(Fence {
        key: b"fence/leader".to_vec(),
        create_revision: first,
    }));
    storage.write(put("during")).expect("a write in the term");
    // Another node's term begins.
    term(&storage);
    let refused = storage
        .write(put("after"))
        .expect_err("a write after the term");
    assert!(refused.to_string().contains(FENCED), "{refused}");
    for space in [Space::Secrets, Space::Config] {
        assert_eq!(storage.get(space, b"after").expect("get"), None);
        assert!(storage.get(space, b"during").expect("get").is_some());
    }
    storage
        .write_own(put("own"))
        .expect("an own record is not fenced");
}
