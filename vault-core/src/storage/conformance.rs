//! The storage conformance suite: every backend runs every check here, and the in-memory
//! backend is the reference. A new backend adds one `#[test]` at the bottom.

use super::*;

type Check = fn(&dyn Storage);

const CHECKS: &[(&str, Check)] = &[
    ("get of a missing key is none", get_missing),
    ("put then get", put_then_get),
    ("spaces are separate", spaces_are_separate),
    ("batch applies in order, atomically", batch_in_order),
    ("delete removes", delete_removes),
    (
        "scan is ordered and bounded by prefix",
        scan_ordered_and_bounded,
    ),
    ("scan resumes from a cursor", scan_resumes_from_cursor),
    ("scan honours the limit", scan_honours_limit),
    ("scan with 0xff keys", scan_with_high_bytes),
    ("empty values and binary keys", empty_values_and_binary_keys),
];

fn run(storage: &dyn Storage) {
    for (name, check) in CHECKS {
        eprintln!("conformance [{}]: {name}", storage.kind());
        check(storage);
    }
}

fn put(storage: &dyn Storage, space: Space, key: &[u8], value: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.put(space, key, value);
    storage.write(batch).expect("write");
}

fn keys(entries: Vec<Entry>) -> Vec<Vec<u8>> {
    entries.into_iter().map(|(key, _)| key).collect()
}

fn get_missing(storage: &dyn Storage) {
    assert_eq!(
        storage.get(Space::Config, b"missing/key").expect("get"),
        None
    );
}

fn put_then_get(storage: &dyn Storage) {
    put(storage, Space::Config, b"pg/a", b"1");
    put(storage, Space::Config, b"pg/a", b"2");
    assert_eq!(
        storage.get(Space::Config, b"pg/a").expect("get"),
        Some(b"2".to_vec())
    );
}

fn spaces_are_separate(storage: &dyn Storage) {
    put(storage, Space::Config, b"sp/k", b"config");
    put(storage, Space::Secrets, b"sp/k", b"secrets");
    assert_eq!(
        storage.get(Space::Config, b"sp/k").expect("get"),
        Some(b"config".to_vec())
    );
    assert_eq!(
        storage.get(Space::Secrets, b"sp/k").expect("get"),
        Some(b"secrets".to_vec())
    );
    assert_eq!(
        keys(
            storage
                .scan(Space::Secrets, b"sp/", b"sp/", 10)
                .expect("scan")
        ),
        [b"sp/k".to_vec()]
    );
}

fn batch_in_order(storage: &dyn Storage) {
    let mut batch = WriteBatch::new();
    batch
        .put(Space::Secrets, b"bt/a".to_vec(), b"1".to_vec())
        .put(Space::Secrets, b"bt/b".to_vec(), b"2".to_vec())
        .delete(Space::Secrets, b"bt/a".to_vec())
        .put(Space::Config, b"bt/c".to_vec(), b"3".to_vec());
    storage.write(batch).expect("write");
    assert_eq!(storage.get(Space::Secrets, b"bt/a").expect("get"), None);
    assert_eq!(
        storage.get(Space::Secrets, b"bt/b").expect("get"),
        Some(b"2".to_vec())
    );
    assert_eq!(
        storage.get(Space::Config, b"bt/c").expect("get"),
        Some(b"3".to_vec())
    );
}

fn delete_removes(storage: &dyn Storage) {
    put(storage, Space::Config, b"dl/a", b"1");
    let mut batch = WriteBatch::new();
    batch
        .delete(Space::Config, b"dl/a".to_vec())
        .delete(Space::Config, b"dl/never-existed".to_vec());
    storage.write(batch).expect("write");
    assert_eq!(storage.get(Space::Config, b"dl/a").expect("get"), None);
    assert!(
        storage
            .scan(Space::Config, b"dl/", b"dl/", 10)
            .expect("scan")
            .is_empty()
    );
}

fn scan_ordered_and_bounded(storage: &dyn Storage) {
    for key in [
        "sc/b", "sc/a", "sc/c/d", "sc", "sd/a", "sb/z", "sc/a-", "sc/a/",
    ] {
        put(storage, Space::Secrets, key.as_bytes(), key.as_bytes());
    }
    let found = storage
        .scan(Space::Secrets, b"sc/", b"sc/", 100)
        .expect("scan");
    let found_keys: Vec<String> = found
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(found_keys, ["sc/a", "sc/a-", "sc/a/", "sc/b", "sc/c/d"]);
    assert!(found.iter().all(|(k, v)| k == v));
}

fn scan_resumes_from_cursor(storage: &dyn Storage) {
    for i in 0..10u8 {
        put(storage, Space::Secrets, &[b'r', b'/', i], &[i]);
    }
    let page = keys(
        storage
            .scan(Space::Secrets, b"r/", &[b'r', b'/', 4], 3)
            .expect("scan"),
    );
    assert_eq!(
        page,
        [
            vec![b'r', b'/', 4],
            vec![b'r', b'/', 5],
            vec![b'r', b'/', 6]
        ]
    );
    // A start before the prefix is clamped to the prefix.
    let first = keys(storage.scan(Space::Secrets, b"r/", b"a", 1).expect("scan"));
    assert_eq!(first, [vec![b'r', b'/', 0]]);
    // A start past every key finds nothing.
    assert!(
        storage
            .scan(Space::Secrets, b"r/", &[b'r', b'/', 200], 10)
            .expect("scan")
            .is_empty()
    );
}

fn scan_honours_limit(storage: &dyn Storage) {
    for i in 0..5u8 {
        put(storage, Space::Config, &[b'l', b'/', i], b"");
    }
    assert_eq!(
        storage
            .scan(Space::Config, b"l/", b"l/", 2)
            .expect("scan")
            .len(),
        2
    );
    assert_eq!(
        storage
            .scan(Space::Config, b"l/", b"l/", 0)
            .expect("scan")
            .len(),
        0
    );
}

fn scan_with_high_bytes(storage: &dyn Storage) {
    put(storage, Space::Config, &[0xff, 0xff, 1], b"x");
    put(storage, Space::Config, &[0xff, 0xff], b"y");
    let found = keys(
        storage
            .scan(Space::Config, &[0xff, 0xff], &[0xff, 0xff], 10)
            .expect("scan"),
    );
    assert_eq!(found, [vec![0xff, 0xff], vec![0xff, 0xff, 1]]);
}

fn empty_values_and_binary_keys(storage: &dyn Storage) {
    put(storage, Space::Secrets, &[b'e', 0, 1, 2], b"");
    assert_eq!(
        storage.get(Space::Secrets, &[b'e', 0, 1, 2]).expect("get"),
        Some(Vec::new())
    );
}

#[test]
fn memory_backend_conforms() {
    run(&MemoryStorage::new());
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_backend_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(&RocksStorage::open(dir.path()).expect("open"));
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

#[test]
fn prefix_end_is_the_next_key() {
    assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
    assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
    assert_eq!(prefix_end(&[0xff, 0xff]), None);
}
