use std::{
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use ring::{rand::SystemRandom, signature::Ed25519KeyPair};

use super::{
    record::{Entry, Kind, Record, line_hash, public_key_of},
    segments::list_segments,
    verify::scan,
    writer::{AuditConfig, AuditError, AuditLog, Head},
};

fn key_pair() -> Arc<Ed25519KeyPair> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("rng");
    Arc::new(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key"))
}

fn config(dir: &Path) -> AuditConfig {
    let mut config = AuditConfig::new(dir.to_owned(), "test-node".into());
    config.segment_bytes = 256 * 1024;
    config.checkpoint_records = 100;
    // Checkpoints by count only, so tests are deterministic.
    config.checkpoint_interval = Duration::from_secs(3600);
    config
}

fn entry(i: usize) -> Entry {
    Entry {
        kind: Some(if i.is_multiple_of(3) {
            Kind::Intent
        } else {
            Kind::Outcome
        }),
        request_id: format!("req-{}", i / 3 * 3),
        method: "/vault.v1.Secrets/Put".into(),
        tenant: "acme".into(),
        path: format!("db/secret-{i}"),
        principal: "va.0123".into(),
        source: "127.0.0.1:5000".into(),
        transport: String::new(),
        outcome: if i.is_multiple_of(3) {
            String::new()
        } else {
            "ok".into()
        },
        code: if i.is_multiple_of(3) {
            String::new()
        } else {
            "OK".into()
        },
        detail: String::new(),
        answered_anyway: false,
    }
}

/// Writes `count` records in chunks (so checkpoints land between them) and returns the key.
fn write_log(dir: &Path, count: usize) -> Arc<Ed25519KeyPair> {
    let key = key_pair();
    let log = AuditLog::open(config(dir)).expect("open");
    log.set_signer(Some(Arc::clone(&key)));
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        let (sender, receiver) = std::sync::mpsc::channel();
        for &i in chunk {
            let sender = sender.clone();
            log.submit(entry(i), Box::new(move |result| drop(sender.send(result))));
        }
        drop(sender);
        for result in receiver {
            result.expect("append");
        }
    }
    // Sign the tail, and let the writer finish.
    log.set_signer(Some(Arc::clone(&key)));
    log.append(entry(count)).expect("append");
    key
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("tempdir");
    for (_, path) in list_segments(from).expect("list") {
        fs::copy(&path, to.path().join(path.file_name().expect("name"))).expect("copy");
    }
    to
}

fn lines(path: &Path) -> Vec<Vec<u8>> {
    let data = fs::read(path).expect("read");
    data.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    let mut data = Vec::new();
    for line in lines {
        data.extend_from_slice(line);
        data.push(b'\n');
    }
    fs::write(path, data).expect("write");
}

fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    list_segments(dir)
        .expect("list")
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

fn verifies(dir: &Path, key: &[u8; 32]) -> Result<(), String> {
    let report = scan(dir, Some(key), |_, _| {}).expect("scan");
    match report.broken {
        None => Ok(()),
        Some(broken) => Err(broken.to_string()),
    }
}

#[test]
fn tampering_with_a_ten_thousand_record_log_is_detected() {
    let original = tempfile::tempdir().expect("tempdir");
    let key = write_log(original.path(), 10_200);
    let public = public_key_of(&key);
    let report = scan(original.path(), Some(&public), |_, _| {}).expect("scan");
    assert!(report.broken.is_none(), "{:?}", report.broken);
    assert!(report.records >= 10_000, "{}", report.records);
    assert!(
        report.checkpoints_verified >= 20,
        "{}",
        report.checkpoints_verified
    );
    let segments = segment_paths(original.path());
    assert!(
        segments.len() >= 3,
        "expected several segments, got {}",
        segments.len()
    );
    let first = &segments[0];
    let first_name = first.file_name().expect("name").to_owned();

    // Single-bit flips at spread-out places in closed segments.
    let data = fs::read(first).expect("read");
    for position in (0..data.len()).step_by(data.len() / 40) {
        for bit in [0, 3, 6] {
            let copy = copy_dir(original.path());
            let mut tampered = data.clone();
            tampered[position] ^= 1 << bit;
            fs::write(copy.path().join(&first_name), tampered).expect("write");
            assert!(
                verifies(copy.path(), &public).is_err(),
                "flip of bit {bit} at byte {position} went unnoticed"
            );
        }
    }

    let edit = |change: &dyn Fn(&mut Vec<Vec<u8>>)| {
        let copy = copy_dir(original.path());
        let path = copy.path().join(&first_name);
        let mut all = lines(&path);
        change(&mut all);
        write_lines(&path, &all);
        verifies(copy.path(), &public)
    };
    assert!(edit(&|l| drop(l.remove(50))).is_err(), "deleted record");
    assert!(edit(&|l| l.swap(60, 61)).is_err(), "swapped records");
    assert!(
        edit(&|l| {
            let mut forged: Record = serde_json::from_slice(&l[70]).expect("record");
            forged.path = "forged".into();
            l.insert(71, forged.to_line());
        })
        .is_err(),
        "inserted record"
    );
    // Re-chained forgery: change one record and recompute every later link. Without the
    // signing key the next checkpoint's signature no longer verifies.
    let rechained = copy_dir(original.path());
    let mut previous_hash = None;
    for path in segment_paths(rechained.path()) {
        let mut all = lines(&path);
        for line in all.iter_mut() {
            let mut record: Record = serde_json::from_slice(line).expect("record");
            if record.seq == 80 {
                record.path = "rewritten/by/attacker".into();
            }
            if let Some(hash) = &previous_hash {
                record.prev = String::clone(hash);
            }
            *line = record.to_line();
            previous_hash = Some(line_hash(line));
        }
        write_lines(&path, &all);
    }
    let error = verifies(rechained.path(), &public).expect_err("re-chained forgery");
    assert!(error.contains("signature"), "{error}");
    // Truncation in the middle: a closed segment cut short, later segments intact.
    let truncated = copy_dir(original.path());
    let middle = truncated.path().join(&first_name);
    let length = fs::metadata(&middle).expect("metadata").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&middle)
        .expect("open")
        .set_len(length / 2)
        .expect("truncate");
    assert!(
        verifies(truncated.path(), &public).is_err(),
        "truncated middle segment"
    );
    // A whole middle segment removed.
    let gap = copy_dir(original.path());
    fs::remove_file(gap.path().join(segments[1].file_name().expect("name"))).expect("remove");
    assert!(
        verifies(gap.path(), &public).is_err(),
        "removed middle segment"
    );
    // The first segment removed without a signed pruning record.
    let headless = copy_dir(original.path());
    fs::remove_file(headless.path().join(&first_name)).expect("remove");
    let error = verifies(headless.path(), &public).expect_err("removed first segment");
    assert!(error.contains("no signed pruning record"), "{error}");
    // Another key does not verify the checkpoints.
    let other = public_key_of(&key_pair());
    assert!(verifies(original.path(), &other).is_err());
}

#[test]
fn a_torn_tail_is_repaired_at_every_offset_and_mid_log_corruption_refuses_to_open() {
    let original = tempfile::tempdir().expect("tempdir");
    let key = write_log(original.path(), 30);
    let public = public_key_of(&key);
    let last_segment = segment_paths(original.path()).pop().expect("segment");
    let data = fs::read(&last_segment).expect("read");
    let last_start = data[..data.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    for cut in last_start..data.len() {
        let copy = copy_dir(original.path());
        let path = copy.path().join(last_segment.file_name().expect("name"));
        fs::write(&path, &data[..cut]).expect("write");
        let log =
            AuditLog::open(config(copy.path())).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let expected_repair = cut.saturating_sub(last_start) as u64;
        assert_eq!(log.recovery.repaired_bytes, expected_repair, "cut at {cut}");
        drop(log);
        assert_eq!(verifies(copy.path(), &public), Ok(()), "cut at {cut}");
        if expected_repair > 0 {
            let repaired = lines(&path);
            let note: Record =
                serde_json::from_slice(repaired.last().expect("line")).expect("record");
            assert!(
                note.detail.contains("repaired a torn tail"),
                "{}",
                note.detail
            );
        }
    }
    // Corruption before the tail: start-up refuses, naming the file and offset.
    let corrupt = copy_dir(original.path());
    let first = segment_paths(corrupt.path()).remove(0);
    let mut bytes = fs::read(&first).expect("read");
    let offset = bytes.iter().position(|b| *b == b'\n').expect("newline") + 5;
    bytes[offset] = b'#';
    fs::write(&first, bytes).expect("write");
    match AuditLog::open(config(corrupt.path())) {
        Err(AuditError::Corrupt(broken)) => {
            assert_eq!(broken.file, first);
            assert_eq!(
                broken.offset,
                (offset - 4) as u64,
                "the broken record starts where its line does"
            );
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a corrupt log opened"),
    }
}

#[test]
fn failed_writes_fail_closed_and_recover_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fault = dir.path().join("fault");
    let mut config = config(&dir.path().join("audit"));
    config.fault_file = Some(fault.clone());
    let log = AuditLog::open(config).expect("open");
    let key = key_pair();
    log.set_signer(Some(Arc::clone(&key)));
    assert_eq!(log.append(entry(1)).expect("append"), 1);
    fs::write(&fault, b"").expect("fault on");
    assert!(matches!(
        log.append(entry(2)),
        Err(AuditError::Unavailable(_))
    ));
    assert_eq!(log.head().seq, 1);
    fs::remove_file(&fault).expect("fault off");
    // The failed outcome record is written late (as record 2) before the next one.
    assert_eq!(log.append(entry(3)).expect("append"), 3);
    drop(log);
    assert_eq!(
        verifies(&dir.path().join("audit"), &public_key_of(&key)),
        Ok(())
    );
}

#[test]
fn intents_without_outcomes_get_a_crashed_outcome_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = AuditLog::open(config(dir.path())).expect("open");
    let mut intent = entry(0);
    intent.request_id = "lost-call".into();
    log.append(intent).expect("intent");
    let mut finished = entry(3);
    finished.kind = Some(Kind::Intent);
    finished.request_id = "finished-call".into();
    log.append(finished.clone()).expect("intent");
    finished.kind = Some(Kind::Outcome);
    log.append(finished).expect("outcome");
    drop(log);
    let reopened = AuditLog::open(config(dir.path())).expect("reopen");
    assert_eq!(reopened.recovery.crashed_intents, 1);
    drop(reopened);
    let mut crashed = Vec::new();
    scan(dir.path(), None, |record, _| {
        if record.outcome == "crashed" {
            crashed.push(record.request_id.clone());
        }
    })
    .expect("scan");
    assert_eq!(crashed, ["lost-call"]);
    // Reconciled once: a second open finds nothing left to reconcile.
    assert_eq!(
        AuditLog::open(config(dir.path()))
            .expect("open")
            .recovery
            .crashed_intents,
        0
    );
}

#[test]
fn retention_prunes_old_segments_with_a_signed_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = Arc::new(AtomicI64::new(1_800_000_000_000_000_000));
    let clock_now = Arc::clone(&now);
    let mut config = config(dir.path());
    config.segment_bytes = 4096;
    config.retention = Some(Duration::from_secs(86_400));
    config.clock = Arc::new(move || clock_now.load(Ordering::SeqCst));
    let log = AuditLog::open(config).expect("open");
    let key = key_pair();
    log.set_signer(Some(Arc::clone(&key)));
    for i in 0..60 {
        log.append(entry(i)).expect("append");
    }
    let before = segment_paths(dir.path()).len();
    assert!(before >= 3, "{before}");
    // Two days later, more records; then retention runs.
    now.fetch_add(2 * 86_400 * 1_000_000_000, Ordering::SeqCst);
    for i in 60..80 {
        log.append(entry(i)).expect("append");
    }
    let removed = log.prune_now().expect("prune");
    assert!(removed >= 2, "{removed}");
    drop(log);
    let remaining = segment_paths(dir.path()).len();
    assert!(remaining < before + 1, "{remaining}");
    let public = public_key_of(&key);
    assert_eq!(verifies(dir.path(), &public), Ok(()));
    let report = scan(dir.path(), Some(&public), |_, _| {}).expect("scan");
    assert!(report.first_seq.is_some_and(|first| first > 1));
}

#[test]
fn a_log_shorter_than_the_recorded_head_is_reported_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = AuditLog::open(config(dir.path())).expect("open");
    for i in 0..10 {
        log.append(entry(i)).expect("append");
    }
    let head = log.head();
    drop(log);
    // Cut the last three records off.
    let path = segment_paths(dir.path()).pop().expect("segment");
    let mut all = lines(&path);
    all.truncate(all.len() - 3);
    write_lines(&path, &all);
    let mut config = config(dir.path());
    config.expected_head = Some(Head {
        seq: head.seq,
        hash: head.hash,
    });
    let reopened = AuditLog::open(config).expect("open");
    let problem = reopened
        .recovery
        .tail_problem
        .clone()
        .expect("tail problem");
    assert!(
        problem.contains("records were removed from the tail"),
        "{problem}"
    );
}

#[cfg(unix)]
#[test]
fn the_syslog_sink_catches_up_after_the_receiver_returns() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("syslog.sock");
    let log = Arc::new(AuditLog::open(config(&dir.path().join("audit"))).expect("open"));
    let receiver = UnixDatagram::bind(&socket).expect("bind");
    receiver
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    super::sink::spawn_syslog_sink(Arc::clone(&log), socket.clone(), "host".into()).expect("sink");
    let mut seen = Vec::new();
    let receive = |receiver: &UnixDatagram, until: u64, seen: &mut Vec<u64>| {
        let mut buffer = vec![0u8; 65536];
        while seen.last().copied().unwrap_or(0) < until {
            let n = receiver
                .recv(&mut buffer)
                .expect("a record within the timeout");
            let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
            assert!(text.starts_with("<110>1 "), "{text}");
            let json = &text[text.find('{').expect("json")..];
            let record: Record = serde_json::from_str(json).expect("record");
            seen.push(record.seq);
        }
    };
    for i in 0..5 {
        log.append(entry(i)).expect("append");
    }
    receive(&receiver, 5, &mut seen);
    // The receiver goes away; calls go on regardless.
    drop(receiver);
    fs::remove_file(&socket).expect("remove socket");
    for i in 5..15 {
        log.append(entry(i)).expect("append");
    }
    // It comes back and receives everything it missed, in order.
    let receiver = UnixDatagram::bind(&socket).expect("rebind");
    receiver
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    receive(&receiver, 15, &mut seen);
    let expected: Vec<u64> = (1..=15).collect();
    let mut deduplicated = seen.clone();
    deduplicated.dedup();
    assert_eq!(deduplicated, expected);
}

#[cfg(unix)]
#[test]
fn a_black_holed_sink_never_blocks_appends() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("never-read.sock");
    // A receiver that exists but never reads: its queue fills and sends would block.
    let _receiver = UnixDatagram::bind(&socket).expect("bind");
    let log = Arc::new(AuditLog::open(config(&dir.path().join("audit"))).expect("open"));
    super::sink::spawn_syslog_sink(Arc::clone(&log), socket, "host".into()).expect("sink");
    let (sender, results) = std::sync::mpsc::channel();
    for i in 0..5000 {
        let sender = sender.clone();
        log.submit(entry(i), Box::new(move |result| drop(sender.send(result))));
    }
    drop(sender);
    // Every append completes (each with its own bounded wait inside the writer) even though
    // the sink is stuck.
    let completed = results.iter().filter(Result::is_ok).count();
    assert_eq!(completed, 5000);
    assert_eq!(log.head().seq, 5000);
}

#[test]
fn an_outcome_that_fails_to_write_is_written_late_marked_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fault = dir.path().join("fault");
    let mut config = config(&dir.path().join("audit"));
    config.fault_file = Some(fault.clone());
    let log = AuditLog::open(config).expect("open");
    log.append(entry(1)).expect("append");
    fs::write(&fault, b"").expect("fault on");
    let mut late = entry(2);
    late.request_id = "late-call".into();
    assert!(log.append(late).is_err());
    fs::remove_file(&fault).expect("fault off");
    log.append(entry(4)).expect("append");
    drop(log);
    let mut found = Vec::new();
    scan(&dir.path().join("audit"), None, |record, _| {
        if record.request_id == "late-call" {
            found.push(record.clone());
        }
    })
    .expect("scan");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].outcome.as_str(), found[0].code.as_str()),
        ("error", "UNAVAILABLE")
    );
    assert!(
        found[0].detail.contains("written late"),
        "{}",
        found[0].detail
    );
}

#[test]
fn a_prune_interrupted_part_way_verifies_and_is_finished_at_start_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let saved = tempfile::tempdir().expect("tempdir");
    let now = Arc::new(AtomicI64::new(1_800_000_000_000_000_000));
    let clock_now = Arc::clone(&now);
    let mut config = config(dir.path());
    config.segment_bytes = 4096;
    config.retention = Some(Duration::from_secs(86_400));
    config.clock = Arc::new(move || clock_now.load(Ordering::SeqCst));
    let log = AuditLog::open(config.clone()).expect("open");
    let key = key_pair();
    log.set_signer(Some(Arc::clone(&key)));
    for i in 0..60 {
        log.append(entry(i)).expect("append");
    }
    now.fetch_add(2 * 86_400 * 1_000_000_000, Ordering::SeqCst);
    log.append(entry(60)).expect("append");
    let before = segment_paths(dir.path());
    for path in &before {
        fs::copy(path, saved.path().join(path.file_name().expect("name"))).expect("save");
    }
    assert!(log.prune_now().expect("prune") >= 2);
    drop(log);
    // As if the process had died before deleting the newest expired segment.
    let after = segment_paths(dir.path());
    let newest_removed = before
        .iter()
        .rfind(|p| !after.contains(p))
        .expect("a removed segment");
    let name = newest_removed.file_name().expect("name");
    fs::copy(saved.path().join(name), dir.path().join(name)).expect("restore");
    let public = public_key_of(&key);
    assert_eq!(verifies(dir.path(), &public), Ok(()));
    let reopened = AuditLog::open(config).expect("open");
    drop(reopened);
    assert!(
        !dir.path().join(name).exists(),
        "start-up finishes the prune"
    );
    assert_eq!(verifies(dir.path(), &public), Ok(()));
}

#[test]
fn a_repair_marker_left_by_a_crash_is_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = AuditLog::open(config(dir.path())).expect("open");
    log.append(entry(1)).expect("append");
    drop(log);
    // The crash came after the cut but before the repair record.
    fs::write(
        dir.path().join("repair-pending.txt"),
        "repaired a torn tail: test marker",
    )
    .expect("marker");
    drop(AuditLog::open(config(dir.path())).expect("open"));
    assert!(!dir.path().join("repair-pending.txt").exists());
    let mut notes = Vec::new();
    scan(dir.path(), None, |record, _| {
        notes.push(record.detail.clone())
    })
    .expect("scan");
    assert!(
        notes
            .iter()
            .any(|n| n == "repaired a torn tail: test marker"),
        "{notes:?}"
    );
}

#[test]
fn a_torn_write_is_cut_back_before_the_next_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fault = dir.path().join("fault");
    let mut config = config(&dir.path().join("audit"));
    config.fault_file = Some(fault.clone());
    let log = AuditLog::open(config.clone()).expect("open");
    let key = key_pair();
    log.set_signer(Some(Arc::clone(&key)));
    for i in 0..5 {
        log.append(entry(i)).expect("append");
    }
    // Half of the next batch reaches the file, then the write fails.
    fs::write(&fault, b"partial").expect("fault on");
    assert!(log.append(entry(5)).is_err());
    let segment = segment_paths(&dir.path().join("audit"))
        .pop()
        .expect("segment");
    assert!(
        !fs::read(&segment).expect("read").ends_with(b"\n"),
        "the torn bytes are on disk"
    );
    fs::remove_file(&fault).expect("fault off");
    for i in 6..10 {
        log.append(entry(i)).expect("append");
    }
    drop(log);
    // No fragment is left in the chain, and nothing needed repair.
    assert_eq!(
        verifies(&dir.path().join("audit"), &public_key_of(&key)),
        Ok(())
    );
    let reopened = AuditLog::open(config).expect("reopen");
    assert_eq!(reopened.recovery.repaired_bytes, 0);
}
