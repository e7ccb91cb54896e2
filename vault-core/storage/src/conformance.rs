//! The storage conformance suite: every backend runs every check here, and the in-memory
//! backend is the reference. Public with the `testing` feature, so a backend in another crate
//! (etcd, say) passes the same checks:
//!
//! ```text
//! vault_storage::conformance::run(&MyBackend::open(..)?);
//! ```
//!
//! Each check uses key prefixes of its own, so one empty store runs them all in turn. A check
//! panics on the first departure from the contract of [`Storage`]: this is a test harness.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Entry, Space, Storage, WriteBatch};

/// One check of the contract, run against a backend.
pub type Check = fn(&dyn Storage);

/// Every check, with the name [`run`] prints before it.
pub const CHECKS: &[(&str, Check)] = &[
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
    (
        "concurrent writers to one key range lose nothing and no scan sees half a batch",
        concurrent_writers_one_range,
    ),
    (
        "a paged scan while others write sees every old key once, in order",
        scan_while_writing,
    ),
    (
        "compaction keeps what is live and nothing that was deleted",
        compaction_keeps_live_data,
    ),
    (
        "a batch beyond the backend's limits is refused whole; one within them is applied",
        batch_limits_are_kept,
    ),
    (
        "a scan whose values together pass 4 MiB returns them all",
        scan_of_large_values,
    ),
    (
        "a write if absent commits once; a second writes nothing",
        write_if_absent_once,
    ),
];

/// Runs every check against `storage` (an empty store), printing each name to stderr first.
pub fn run(storage: &dyn Storage) {
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

/// Writes a batch of setup data in as many writes as the backend's limits need (setup need not
/// be atomic).
fn write_all(storage: &dyn Storage, batch: WriteBatch) {
    for part in batch.split(storage.batch_limits()) {
        storage.write(part).expect("write");
    }
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

const WRITERS: usize = 4;
const BATCHES_PER_WRITER: usize = 150;

fn text_keys(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|(key, _)| String::from_utf8_lossy(key).into_owned())
        .collect()
}

/// Every entry under `prefix`, read in pages of `page` through the cursor API.
fn scan_all(storage: &dyn Storage, space: Space, prefix: &[u8], page: usize) -> Vec<Entry> {
    let mut all: Vec<Entry> = Vec::new();
    let mut start = prefix.to_vec();
    loop {
        let found = storage.scan(space, prefix, &start, page).expect("scan");
        let done = found.len() < page;
        if let Some((last, _)) = found.last() {
            start = last.clone();
            start.push(0);
        }
        all.extend(found);
        if done {
            return all;
        }
    }
}

/// Several writers hammer one key range: each batch writes a pair of keys (`a/` and `b/`) and
/// moves the writer's counter and a shared hot key. Meanwhile a reader's single scans must never
/// see one half of a pair without the other; afterwards every write is there.
fn concurrent_writers_one_range(storage: &dyn Storage) {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                scope.spawn(move || {
                    for i in 0..BATCHES_PER_WRITER {
                        let mut batch = WriteBatch::new();
                        batch
                            .put(
                                Space::Secrets,
                                format!("cw/a/{writer}/{i:04}"),
                                b"a".to_vec(),
                            )
                            .put(
                                Space::Secrets,
                                format!("cw/b/{writer}/{i:04}"),
                                b"b".to_vec(),
                            )
                            .put(Space::Secrets, format!("cw/count/{writer}"), i.to_string())
                            .put(Space::Secrets, "cw/hot", format!("{writer}/{i}"));
                        storage.write(batch).expect("concurrent write");
                    }
                })
            })
            .collect();
        let reader = scope.spawn(|| {
            let mut scans = 0usize;
            while !done.load(Ordering::Acquire) || scans == 0 {
                let seen = storage
                    .scan(Space::Secrets, b"cw/", b"cw/", usize::MAX)
                    .expect("scan while writing");
                let keys = text_keys(&seen);
                let halves = |half: &str| -> Vec<String> {
                    keys.iter()
                        .filter_map(|key| key.strip_prefix(half).map(str::to_owned))
                        .collect()
                };
                assert_eq!(
                    halves("cw/a/"),
                    halves("cw/b/"),
                    "one scan saw part of a batch (scan number {scans})"
                );
                scans += 1;
            }
        });
        for writer in writers {
            writer.join().expect("writer thread");
        }
        done.store(true, Ordering::Release);
        reader.join().expect("reader thread");
    });
    let all = scan_all(storage, Space::Secrets, b"cw/", 64);
    assert_eq!(all.len(), 2 * WRITERS * BATCHES_PER_WRITER + WRITERS + 1);
    for writer in 0..WRITERS {
        assert_eq!(
            storage
                .get(Space::Secrets, format!("cw/count/{writer}").as_bytes())
                .expect("get"),
            Some((BATCHES_PER_WRITER - 1).to_string().into_bytes()),
            "writer {writer}'s last write was lost"
        );
    }
    let hot = storage.get(Space::Secrets, b"cw/hot").expect("get");
    let hot = String::from_utf8(hot.expect("the hot key is there")).expect("utf-8");
    let (writer, i) = hot.split_once('/').expect("writer/i");
    assert!(writer.parse::<usize>().expect("writer") < WRITERS);
    assert!(i.parse::<usize>().expect("i") < BATCHES_PER_WRITER);
}

/// A reader pages through a range (small pages, resuming after the last key) while one writer
/// adds keys between the existing ones and another rewrites the existing ones: each key that
/// was there before the scan began is seen exactly once, and the keys come in strictly
/// increasing order.
fn scan_while_writing(storage: &dyn Storage) {
    const OLD: usize = 400;
    let mut batch = WriteBatch::new();
    for i in 0..OLD {
        batch.put(Space::Config, format!("sw/{:05}", 2 * i), b"old".to_vec());
    }
    write_all(storage, batch);
    let done = AtomicBool::new(false);
    let seen = std::thread::scope(|scope| {
        let adder = scope.spawn(|| {
            let mut i = 0usize;
            while !done.load(Ordering::Acquire) && i < 4 * OLD {
                let mut batch = WriteBatch::new();
                batch.put(
                    Space::Config,
                    format!("sw/{:05}", 2 * (i % OLD) + 1),
                    b"new".to_vec(),
                );
                storage.write(batch).expect("write between");
                i += 1;
            }
        });
        let rewriter = scope.spawn(|| {
            let mut i = 0usize;
            while !done.load(Ordering::Acquire) && i < 4 * OLD {
                let mut batch = WriteBatch::new();
                batch.put(
                    Space::Config,
                    format!("sw/{:05}", 2 * (OLD - 1 - i % OLD)),
                    b"again".to_vec(),
                );
                storage.write(batch).expect("rewrite");
                i += 1;
            }
        });
        let seen = scan_all(storage, Space::Config, b"sw/", 7);
        done.store(true, Ordering::Release);
        adder.join().expect("adder thread");
        rewriter.join().expect("rewriter thread");
        seen
    });
    let keys = text_keys(&seen);
    assert!(
        keys.windows(2).all(|pair| pair[0] < pair[1]),
        "a paged scan went back or repeated a key"
    );
    for i in 0..OLD {
        let key = format!("sw/{:05}", 2 * i);
        assert_eq!(
            keys.iter().filter(|seen| **seen == key).count(),
            1,
            "{key} was there before the scan and must be seen once"
        );
    }
}

/// After deletes and a compaction, live entries read back unchanged, deleted ones are gone
/// from gets and scans, and the store takes writes again.
fn compaction_keeps_live_data(storage: &dyn Storage) {
    let mut batch = WriteBatch::new();
    for i in 0..100u32 {
        batch.put(
            Space::Secrets,
            format!("cp/{i:03}"),
            i.to_be_bytes().to_vec(),
        );
        batch.put(Space::Config, format!("cp/{i:03}"), b"config".to_vec());
    }
    write_all(storage, batch);
    let mut batch = WriteBatch::new();
    for i in (0..100u32).filter(|i| i % 3 == 0) {
        batch.delete(Space::Secrets, format!("cp/{i:03}"));
    }
    storage.write(batch).expect("delete");
    storage.compact().expect("compact");
    for i in 0..100u32 {
        let expected = (i % 3 != 0).then(|| i.to_be_bytes().to_vec());
        assert_eq!(
            storage
                .get(Space::Secrets, format!("cp/{i:03}").as_bytes())
                .expect("get"),
            expected,
            "cp/{i:03} after compaction"
        );
    }
    assert_eq!(scan_all(storage, Space::Secrets, b"cp/", 10).len(), 66);
    assert_eq!(scan_all(storage, Space::Config, b"cp/", 10).len(), 100);
    put(storage, Space::Secrets, b"cp/after", b"yes");
    assert_eq!(
        storage.get(Space::Secrets, b"cp/after").expect("get"),
        Some(b"yes".to_vec())
    );
}

/// A backend with limits refuses a batch one change or one byte beyond them, and applies none
/// of it; a batch at the limits is applied whole. A backend without limits takes a batch of
/// 1000 changes.
fn batch_limits_are_kept(storage: &dyn Storage) {
    let limits = storage.batch_limits();
    let batch_of = |ops: usize, value_bytes: usize| {
        let mut batch = WriteBatch::new();
        for i in 0..ops {
            batch.put(Space::Config, format!("bl/{i:05}"), vec![b'v'; value_bytes]);
        }
        batch
    };
    if limits == crate::BatchLimits::NONE {
        storage.write(batch_of(1000, 8)).expect("a large batch");
        assert_eq!(scan_all(storage, Space::Config, b"bl/", 100).len(), 1000);
        return;
    }
    let refused = |batch: WriteBatch, what: &str| {
        let error = storage.write(batch).expect_err(what);
        assert!(!error.to_string().is_empty());
        assert!(
            scan_all(storage, Space::Config, b"bl/", 100).is_empty(),
            "part of a refused batch ({what}) was applied"
        );
    };
    refused(batch_of(limits.max_ops + 1, 8), "one change too many");
    // Keys are "bl/NNNNN" (8 bytes).
    let per_op = limits.max_bytes / limits.max_ops;
    refused(
        batch_of(limits.max_ops, per_op.saturating_sub(8) + 1),
        "too many bytes",
    );
    let fitting = batch_of(limits.max_ops, per_op.saturating_sub(8));
    assert!(fitting.fits(limits));
    storage.write(fitting).expect("a batch at the limits");
    assert_eq!(
        scan_all(storage, Space::Config, b"bl/", 100).len(),
        limits.max_ops
    );
}

/// Six values of 1 MiB (a secret version may be that large), written one per batch, come back
/// whole from one scan: a backend whose transport limits one answer must page.
fn scan_of_large_values(storage: &dyn Storage) {
    for i in 0..6u8 {
        let mut batch = WriteBatch::new();
        batch.put(Space::Secrets, format!("lv/{i}"), vec![i; 1024 * 1024]);
        storage.write(batch).expect("write a large value");
    }
    let found = storage
        .scan(Space::Secrets, b"lv/", b"lv/", 100)
        .expect("scan of large values");
    assert_eq!(found.len(), 6);
    for (i, (key, value)) in found.iter().enumerate() {
        assert_eq!(key, format!("lv/{i}").as_bytes());
        assert_eq!(value.len(), 1024 * 1024);
        assert!(value.iter().all(|b| usize::from(*b) == i));
    }
}

fn write_if_absent_once(storage: &dyn Storage) {
    let batch = |value: &[u8]| {
        let mut batch = WriteBatch::new();
        batch
            .put(Space::Config, b"wia/marker", value)
            .put(Space::Config, b"wia/other", value);
        batch
    };
    assert!(
        storage
            .write_if_absent(batch(b"first"), Space::Config, b"wia/marker")
            .expect("first write")
    );
    assert!(
        !storage
            .write_if_absent(batch(b"second"), Space::Config, b"wia/marker")
            .expect("second write")
    );
    // Nothing of the second batch was applied.
    for key in [&b"wia/marker"[..], b"wia/other"] {
        assert_eq!(
            storage.get(Space::Config, key).expect("get"),
            Some(b"first".to_vec())
        );
    }
}
