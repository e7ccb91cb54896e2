//! Key lifecycle: exact budgets, rotation by budget and age, retirement by re-wrap, rekey, share
//! check, crypto-shredding and restore.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use super::*;

pub(super) const START: i64 = 1_800_000_000_000_000_000;
pub(super) const HOUR: i64 = 3_600_000_000_000;

pub(super) struct Lab {
    pub(super) data: Arc<MemoryStorage>,
    pub(super) keys: Arc<MemoryStorage>,
    pub(super) vault: Arc<Vault>,
    pub(super) clock: Arc<AtomicI64>,
    pub(super) root: Caller,
    pub(super) root_token: Token,
    pub(super) shares: Vec<String>,
}

pub(super) fn lab(keys: KeyPolicy, shares: u32, threshold: u32) -> Lab {
    let data = Arc::new(MemoryStorage::new());
    let key_store = Arc::new(MemoryStorage::new());
    let clock = Arc::new(AtomicI64::new(START));
    let vault = open_with(&data, &key_store, &keys, &clock);
    let output = vault
        .seal()
        .init(shares, threshold, InitRecipients::default())
        .expect("init");
    let texts = share_texts(&output);
    let needed: Vec<&String> = texts.iter().take(threshold as usize).collect();
    unseal_with(&vault, &needed).expect("unseal");
    let root = vault.authenticate(root_of(&output)).expect("root");
    vault
        .tenants()
        .create_tenant(&root, &tenant("acme"), TenantSettings::default())
        .expect("tenant");
    Lab {
        data,
        keys: key_store,
        vault: Arc::new(vault),
        clock,
        root,
        root_token: output.root_token.into_plain().expect("root token"),
        shares: texts,
    }
}

pub(super) fn open_with(
    data: &Arc<MemoryStorage>,
    keys: &Arc<MemoryStorage>,
    policy: &KeyPolicy,
    clock: &Arc<AtomicI64>,
) -> Vault {
    let reading = Arc::clone(clock);
    Vault::open(
        DataStore::new(data.clone()),
        KeyStore::new(keys.clone()),
        VaultConfig {
            keys: policy.clone(),
            // Every version kept: the tests read old versions by number.
            default_max_versions: 0,
            ..VaultConfig::default()
        },
    )
    .expect("open")
    .with_clock(Arc::new(move || reading.load(Ordering::SeqCst)))
}

pub(super) fn policy(budget: u64, max_live: u32) -> KeyPolicy {
    KeyPolicy {
        budget,
        max_live_versions: max_live,
        reserve_block: 64,
        rewrap_per_round: 100,
        ..KeyPolicy::default()
    }
}

pub(super) fn put(lab: &Lab, path_text: &str, value: &str) -> u64 {
    lab.vault
        .secrets()
        .put(
            &lab.root,
            &tenant("acme"),
            &path(path_text),
            data(&[("v", value)]),
        )
        .expect("put")
        .version
}

pub(super) fn acme_status(lab: &Lab) -> TenantKeyStatus {
    lab.vault
        .keks()
        .key_status(&lab.root, Some(&tenant("acme")), &PageRequest::default())
        .expect("status")
        .tenants
        .remove(0)
}

/// Runs maintenance rounds until no version is scheduled or retiring.
pub(super) fn settle(lab: &Lab) -> MaintenanceReport {
    let mut total = MaintenanceReport::default();
    for _ in 0..10_000 {
        let report = lab.vault.maintain().expect("maintain");
        total.rotated += report.rotated;
        total.rewrapped += report.rewrapped;
        total.retired += report.retired;
        total.shredded += report.shredded;
        let status = acme_status(lab);
        if status.rewrap.is_none()
            && status
                .versions
                .iter()
                .all(|v| v.state == "current" || v.state == "live")
        {
            return total;
        }
    }
    panic!("maintenance did not settle");
}

/// The KEK version every stored secret version of `tenant` is wrapped under.
fn wrapping_versions(data: &MemoryStorage, tenant: TenantId) -> Vec<u32> {
    let prefix = crate::schema::tenant_versions_prefix(tenant);
    data.scan(Space::Secrets, &prefix, &prefix, usize::MAX)
        .expect("scan")
        .iter()
        .map(|(_, value)| {
            let (_, wrapped, _) = decode_version(value).expect("stored version");
            Header::parse(wrapped).expect("header").key.version
        })
        .collect()
}

fn stored_kek_versions(keys: &MemoryStorage, tenant: TenantId) -> Vec<u32> {
    let prefix = crate::schema::kek_prefix(tenant);
    keys.scan(Space::Config, &prefix, &prefix, usize::MAX)
        .expect("scan")
        .iter()
        .map(|(key, _)| u32::from_be_bytes(key[prefix.len()..].try_into().expect("u32")))
        .collect()
}

#[test]
fn a_budget_of_1000_rotates_exactly_every_1000_writes_and_no_version_exceeds_it() {
    let lab = lab(policy(1000, 0), 1, 1);
    for i in 0..10_000 {
        put(&lab, &format!("app/s{}", i % 250), "x");
    }
    let status = acme_status(&lab);
    assert_eq!(status.current, 10, "10,000 writes at 1,000 per version");
    assert_eq!(status.versions.len(), 10);
    for version in &status.versions {
        assert_eq!(version.invocations, 1000, "version {}", version.version);
        assert!(version.reserved <= 1000, "reservation past the budget");
        assert_eq!(version.remaining, 0);
    }
    // One more write rotates once more.
    put(&lab, "app/one-more", "x");
    let status = acme_status(&lab);
    assert_eq!(status.current, 11);
    assert_eq!(status.versions.last().map(|v| v.invocations), Some(1));
    // Every secret still reads, whatever version wraps it.
    let read = lab
        .vault
        .secrets()
        .get(&lab.root, &tenant("acme"), &path("app/s7"), 1)
        .expect("first version");
    assert_eq!(read.key_version, 1);
}

#[test]
fn re_wraps_count_against_the_budget_like_any_encryption() {
    let lab = lab(policy(1000, 2), 1, 1);
    // One version kept per secret: 250 DEKs, fewer than a budget, so retirement settles (with
    // more DEKs than a budget, each job's re-wraps rotate the key and schedule the next job).
    lab.vault
        .tenants()
        .update_tenant(
            &lab.root,
            &tenant("acme"),
            TenantUpdate {
                default_max_versions: Some(1),
                ..TenantUpdate::default()
            },
        )
        .expect("keep one version");
    let mut rewrapped = 0;
    for i in 0..10_000 {
        // 200 secrets written once (they stay on old versions until re-wrapped), then 50 hot
        // ones.
        let name = if i < 200 {
            format!("app/cold{i}")
        } else {
            format!("app/hot{}", i % 50)
        };
        put(&lab, &name, "x");
        if i % 100 == 99 {
            rewrapped += lab.vault.maintain().expect("maintain").rewrapped;
            for version in acme_status(&lab).versions {
                assert!(version.invocations <= 1000, "{version:?}");
            }
        }
    }
    rewrapped += settle(&lab).rewrapped;
    let status = acme_status(&lab);
    assert!(rewrapped > 0, "retirement re-wrapped nothing");
    for version in &status.versions {
        assert!(version.invocations <= 1000, "{version:?}");
    }
    // Every rotation was forced by the budget, so every version before the current one served
    // exactly 1,000 uses: the writes and the re-wraps together.
    let current = status.versions.last().expect("current");
    assert_eq!(
        1000 * u64::from(status.current - 1) + current.invocations,
        10_000 + rewrapped
    );
    assert!(status.versions.len() <= 2);
    let id = status.id;
    let live: Vec<u32> = status.versions.iter().map(|v| v.version).collect();
    assert!(
        wrapping_versions(&lab.data, id)
            .iter()
            .all(|v| live.contains(v))
    );
    assert_eq!(stored_kek_versions(&lab.keys, id), live);
}

#[test]
fn retirement_under_concurrent_reads_and_writes_never_fails_a_read() {
    let lab = lab(policy(1 << 20, 1), 1, 1);
    for i in 0..200 {
        put(&lab, &format!("app/s{i}"), &format!("v{i}"));
        if i % 50 == 49 {
            lab.vault
                .keks()
                .rotate(&lab.root, &tenant("acme"))
                .expect("rotate");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for reader in 0..3u64 {
        let (vault, stop, failures, reads) = (
            Arc::clone(&lab.vault),
            Arc::clone(&stop),
            Arc::clone(&failures),
            Arc::clone(&reads),
        );
        let caller = vault.authenticate(&lab.root_token).expect("root");
        threads.push(std::thread::spawn(move || {
            let mut i = reader;
            while !stop.load(Ordering::SeqCst) {
                i = (i * 7 + 13) % 200;
                match vault
                    .secrets()
                    .get(&caller, &tenant("acme"), &path(&format!("app/s{i}")), 0)
                {
                    Ok(read) if fields(&read)[0].1.starts_with('v') => {}
                    _ => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                reads.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    {
        let (vault, stop) = (Arc::clone(&lab.vault), Arc::clone(&stop));
        let caller = vault.authenticate(&lab.root_token).expect("root");
        threads.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                vault
                    .secrets()
                    .put(
                        &caller,
                        &tenant("acme"),
                        &path(&format!("app/s{}", i % 200)),
                        data(&[("v", &format!("v{i}"))]),
                    )
                    .expect("concurrent put");
                i += 1;
            }
        }));
    }
    for _ in 0..3 {
        lab.vault
            .keks()
            .rotate(&lab.root, &tenant("acme"))
            .expect("rotate");
        let mut rounds = 0;
        while lab.vault.maintain().expect("maintain").rewrapped > 0 || rounds < 3 {
            rounds += 1;
        }
    }
    let report = settle(&lab);
    stop.store(true, Ordering::SeqCst);
    for thread in threads {
        thread.join().expect("thread");
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0, "failed reads");
    assert!(reads.load(Ordering::SeqCst) > 0);
    let status = acme_status(&lab);
    assert_eq!(status.versions.len(), 1, "{status:?} {report:?}");
    assert!(status.retired.len() >= 6, "{:?}", status.retired);
    assert!(
        wrapping_versions(&lab.data, status.id)
            .iter()
            .all(|v| *v == status.current),
        "records left on retired versions"
    );
    assert_eq!(
        stored_kek_versions(&lab.keys, status.id),
        vec![status.current]
    );
}

#[test]
fn an_operator_retires_a_version_and_the_job_resumes_after_a_restart() {
    let mut keys = policy(1 << 20, 0);
    keys.rewrap_per_round = 10;
    let lab = lab(keys.clone(), 1, 1);
    for i in 0..35 {
        put(&lab, &format!("app/s{i}"), "old");
    }
    assert!(matches!(
        lab.vault
            .keks()
            .retire_key_version(&lab.root, &tenant("acme"), 1),
        Err(Error::InvalidArgument {
            field: "version",
            ..
        })
    ));
    assert!(matches!(
        lab.vault
            .keks()
            .retire_key_version(&lab.root, &tenant("acme"), 9),
        Err(Error::NotFound(_))
    ));
    lab.vault
        .keks()
        .rotate(&lab.root, &tenant("acme"))
        .expect("rotate");
    lab.vault
        .keks()
        .retire_key_version(&lab.root, &tenant("acme"), 1)
        .expect("retire");
    assert_eq!(acme_status(&lab).versions[0].state, "scheduled");
    assert_eq!(lab.vault.maintain().expect("round").rewrapped, 10);
    let progress = acme_status(&lab).rewrap.expect("job running");
    assert_eq!(
        (progress.scanned, progress.rewrapped, progress.total),
        (10, 10, 35)
    );

    // A restart: the job continues from its cursor.
    let vault = open_with(&lab.data, &lab.keys, &keys, &lab.clock);
    unseal_with(&vault, &[&lab.shares[0]]).expect("unseal");
    let mut rewrapped = 10;
    loop {
        let report = vault.maintain().expect("round");
        rewrapped += report.rewrapped;
        if report.retired > 0 {
            break;
        }
    }
    assert_eq!(rewrapped, 35, "each DEK re-wrapped once");
    let root = vault.authenticate(&lab.root_token).expect("root");
    let status = vault
        .keks()
        .key_status(&root, Some(&tenant("acme")), &PageRequest::default())
        .expect("status");
    assert_eq!(status.tenants[0].retired[0].version, 1);
    assert_eq!(status.tenants[0].versions.len(), 1);
    let read = vault
        .secrets()
        .get(&root, &tenant("acme"), &path("app/s3"), 0)
        .expect("read after retirement");
    assert_eq!((read.key_version, fields(&read)[0].1.as_str()), (2, "old"));
    assert_eq!(
        stored_kek_versions(&lab.keys, status.tenants[0].id),
        vec![2]
    );
}

#[test]
fn kek_rotates_by_age_and_the_root_key_counts_its_uses() {
    let mut keys = policy(1 << 20, 0);
    keys.max_age_nanos = 24 * HOUR;
    let lab = lab(keys, 1, 1);
    let root_before = lab
        .vault
        .keks()
        .key_status(&lab.root, None, &PageRequest::default())
        .expect("status")
        .root
        .expect("root status");
    // Init sealed two system keys, creating acme sealed its first KEK.
    assert_eq!(root_before.invocations, 3);
    lab.clock.fetch_add(23 * HOUR, Ordering::SeqCst);
    assert_eq!(lab.vault.maintain().expect("round").rotated, 0);
    lab.clock.fetch_add(2 * HOUR, Ordering::SeqCst);
    assert_eq!(lab.vault.maintain().expect("round").rotated, 1);
    assert_eq!(acme_status(&lab).current, 2);
    let root_after = lab
        .vault
        .keks()
        .key_status(&lab.root, None, &PageRequest::default())
        .expect("status")
        .root;
    assert_eq!(root_after.map(|r| r.invocations), Some(4));
}

#[test]
fn rekey_needs_a_threshold_of_current_shares_and_replaces_them() {
    let lab = lab(KeyPolicy::default(), 3, 2);
    put(&lab, "db/primary", "p1");
    let started = lab
        .vault
        .seal()
        .rekey_init(&lab.root, 5, 3, false, Vec::new())
        .expect("rekey init");
    assert!(matches!(
        lab.vault
            .seal()
            .rekey_init(&lab.root, 5, 3, false, Vec::new()),
        Err(Error::FailedPrecondition(_))
    ));
    let share = |text: &String| UnsealShare::parse(text).expect("share");
    assert!(matches!(
        lab.vault
            .seal()
            .rekey_submit("not-the-nonce", share(&lab.shares[0])),
        Err(Error::InvalidArgument { field: "nonce", .. })
    ));
    let first = lab
        .vault
        .seal()
        .rekey_submit(&started.nonce, share(&lab.shares[0]))
        .expect("first share");
    assert_eq!(
        (first.progress, first.required, first.complete),
        (1, 2, false)
    );
    let staged = lab
        .vault
        .seal()
        .rekey_submit(&started.nonce, share(&lab.shares[1]))
        .expect("second share");
    assert!(staged.staged && !staged.complete);
    assert_eq!(staged.new_shares.len(), 5);
    let new = plain_shares(&staged.new_shares);
    // Staged: the old shares are still the ones in force, the new ones wait.
    for old in &lab.shares {
        assert_eq!(
            lab.vault.seal().verify_share(&share(old)).expect("check"),
            ShareCheck::Current
        );
    }
    assert_eq!(
        lab.vault
            .seal()
            .verify_share(&share(&new[0]))
            .expect("check"),
        ShareCheck::Staged
    );
    let status = lab
        .vault
        .seal()
        .rekey_status()
        .expect("status")
        .expect("staged");
    assert!(status.staged);
    assert!(matches!(
        lab.vault
            .seal()
            .rekey_verify("not-the-nonce", share(&new[0])),
        Err(Error::InvalidArgument { field: "nonce", .. })
    ));
    // An old share is not a new one.
    assert!(matches!(
        lab.vault
            .seal()
            .rekey_verify(&status.verification_nonce, share(&lab.shares[0])),
        Err(Error::InvalidArgument { field: "share", .. })
    ));
    for (index, fresh) in [&new[3], &new[1]].into_iter().enumerate() {
        let progress = lab
            .vault
            .seal()
            .rekey_verify(&status.verification_nonce, share(fresh))
            .expect("verify");
        assert_eq!(
            (progress.verification_progress, progress.complete),
            (index as u32 + 1, false)
        );
    }
    let done = lab
        .vault
        .seal()
        .rekey_verify(&status.verification_nonce, share(&new[2]))
        .expect("verify");
    assert!(done.complete);
    assert!(lab.vault.seal().rekey_status().expect("status").is_none());
    for old in &lab.shares {
        assert_eq!(
            lab.vault.seal().verify_share(&share(old)).expect("check"),
            ShareCheck::NotCurrent
        );
    }
    for fresh in &new {
        assert_eq!(
            lab.vault.seal().verify_share(&share(fresh)).expect("check"),
            ShareCheck::Current
        );
    }

    lab.vault.seal().seal(&lab.root).expect("seal");
    // The old shares are refused before they count for anything.
    assert!(matches!(
        unseal_with(&lab.vault, &[&lab.shares[0]]),
        Err(Error::InvalidArgument { field: "share", .. })
    ));
    assert_eq!(lab.vault.seal().status().progress, 0);
    let status = unseal_with(&lab.vault, &[&new[4], &new[0], &new[2]]).expect("new shares");
    assert!(!status.sealed);
    assert_eq!((status.shares, status.threshold), (5, 3));
    let root = lab.vault.authenticate(&lab.root_token).expect("root");
    let read = lab
        .vault
        .secrets()
        .get(&root, &tenant("acme"), &path("db/primary"), 0)
        .expect("data untouched");
    assert_eq!(fields(&read)[0].1, "p1");
}

#[test]
fn an_interrupted_or_cancelled_rekey_leaves_the_old_shares_working() {
    let lab = lab(KeyPolicy::default(), 3, 2);
    let share = |text: &String| UnsealShare::parse(text).expect("share");
    let started = lab
        .vault
        .seal()
        .rekey_init(&lab.root, 2, 2, false, Vec::new())
        .expect("rekey init");
    lab.vault
        .seal()
        .rekey_submit(&started.nonce, share(&lab.shares[2]))
        .expect("one share");
    lab.vault.seal().rekey_cancel(&lab.root).expect("cancel");
    assert!(matches!(
        lab.vault
            .seal()
            .rekey_submit(&started.nonce, share(&lab.shares[0])),
        Err(Error::NotFound(_))
    ));

    // Interrupted: the process goes away with a rekey half done.
    let again = lab
        .vault
        .seal()
        .rekey_init(&lab.root, 2, 2, false, Vec::new())
        .expect("rekey init");
    lab.vault
        .seal()
        .rekey_submit(&again.nonce, share(&lab.shares[0]))
        .expect("one share");
    let restarted = open_with(&lab.data, &lab.keys, &KeyPolicy::default(), &lab.clock);
    assert!(restarted.seal().rekey_status().expect("status").is_none());
    let status = unseal_with(&restarted, &[&lab.shares[1], &lab.shares[2]]).expect("old shares");
    assert!(!status.sealed);
    assert_eq!(
        restarted
            .seal()
            .verify_share(&share(&lab.shares[0]))
            .expect("check"),
        ShareCheck::Current
    );
}

/// Every entry of both spaces, copied into a new store (a backup of the data store).
fn copy_of(store: &MemoryStorage) -> Arc<MemoryStorage> {
    let copy = Arc::new(MemoryStorage::new());
    let mut batch = WriteBatch::new();
    for space in Space::ALL {
        for (key, value) in store.scan(space, b"", b"", usize::MAX).expect("scan") {
            batch.put(space, key, value);
        }
    }
    copy.write(batch).expect("copy");
    copy
}

#[test]
fn deleting_a_tenant_shreds_its_keys_after_the_waiting_period() {
    let mut keys = policy(1 << 20, 0);
    keys.shred_delay_nanos = HOUR;
    let lab = lab(keys.clone(), 1, 1);
    lab.vault
        .tenants()
        .create_tenant(&lab.root, &tenant("globex"), TenantSettings::default())
        .expect("globex");
    put(&lab, "db/primary", "acme-secret");
    lab.vault
        .keks()
        .rotate(&lab.root, &tenant("acme"))
        .expect("rotate");
    put(&lab, "db/replica", "acme-secret-2");
    lab.vault
        .secrets()
        .put(
            &lab.root,
            &tenant("globex"),
            &path("db/primary"),
            data(&[("v", "globex-secret")]),
        )
        .expect("globex put");
    let acme_id = acme_status(&lab).id;
    let backup = copy_of(&lab.data);

    let due = lab
        .vault
        .tenants()
        .delete_tenant(&lab.root, &tenant("acme"))
        .expect("delete");
    assert_eq!(due, START + HOUR);
    let waiting = lab
        .vault
        .tenants()
        .deleted_tenants(&lab.root)
        .expect("deleted");
    assert_eq!(waiting.len(), 1);
    lab.clock.fetch_add(HOUR - 1, Ordering::SeqCst);
    assert_eq!(lab.vault.maintain().expect("round").shredded, 0);
    assert_eq!(stored_kek_versions(&lab.keys, acme_id), vec![1, 2]);
    lab.clock.fetch_add(1, Ordering::SeqCst);
    assert_eq!(lab.vault.maintain().expect("round").shredded, 1);
    assert!(stored_kek_versions(&lab.keys, acme_id).is_empty());
    assert!(
        lab.vault
            .tenants()
            .deleted_tenants(&lab.root)
            .expect("deleted")
            .is_empty()
    );
    assert_eq!(lab.vault.maintain().expect("round").shredded, 0, "once");
    assert!(matches!(
        lab.vault
            .tenants()
            .restore_tenant(&lab.root, &tenant("acme"), None),
        Err(Error::NotFound(_))
    ));

    // The old copy of the data store, opened with today's key store: nothing of acme opens.
    let old = Vault::open(
        DataStore::new(backup),
        KeyStore::new(lab.keys.clone()),
        VaultConfig::default(),
    )
    .expect("open");
    unseal_with(&old, &[&lab.shares[0]]).expect("unseal");
    let root = old.authenticate(&lab.root_token).expect("root");
    for secret in ["db/primary", "db/replica"] {
        match old.secrets().get(&root, &tenant("acme"), &path(secret), 0) {
            Err(Error::FailedPrecondition(message)) => {
                assert!(message.contains("crypto-shredded"), "{message}")
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("{secret} of a shredded tenant was readable"),
        }
    }
    let globex = old
        .secrets()
        .get(&root, &tenant("globex"), &path("db/primary"), 0)
        .expect("other tenants unaffected");
    assert_eq!(fields(&globex)[0].1, "globex-secret");
}

#[test]
fn a_deleted_tenant_is_restored_before_its_keys_are_destroyed() {
    let mut keys = policy(1 << 20, 0);
    keys.shred_delay_nanos = HOUR;
    let lab = lab(keys, 1, 1);
    put(&lab, "db/primary", "kept");
    lab.vault
        .tenants()
        .delete_tenant(&lab.root, &tenant("acme"))
        .expect("delete");
    lab.clock.fetch_add(60_000_000_000, Ordering::SeqCst);
    assert!(
        lab.vault
            .secrets()
            .get(&lab.root, &tenant("acme"), &path("db/primary"), 0)
            .is_err()
    );
    lab.vault
        .tenants()
        .create_tenant(&lab.root, &tenant("acme"), TenantSettings::default())
        .expect("name reused");
    assert!(matches!(
        lab.vault
            .tenants()
            .restore_tenant(&lab.root, &tenant("acme"), None),
        Err(Error::AlreadyExists(_))
    ));
    lab.vault
        .tenants()
        .delete_tenant(&lab.root, &tenant("acme"))
        .expect("delete the new one");
    assert!(matches!(
        lab.vault
            .tenants()
            .restore_tenant(&lab.root, &tenant("acme"), None),
        Err(Error::InvalidArgument { field: "id", .. })
    ));
    let first = lab
        .vault
        .tenants()
        .deleted_tenants(&lab.root)
        .expect("deleted")
        .into_iter()
        .find(|d| d.deleted_unix_nanos == START)
        .expect("first acme");
    lab.vault
        .tenants()
        .restore_tenant(&lab.root, &tenant("acme"), Some(first.id))
        .expect("restore");
    let read = lab
        .vault
        .secrets()
        .get(&lab.root, &tenant("acme"), &path("db/primary"), 0)
        .expect("restored data");
    assert_eq!(fields(&read)[0].1, "kept");
    lab.clock.fetch_add(2 * HOUR, Ordering::SeqCst);
    assert_eq!(
        lab.vault.maintain().expect("round").shredded,
        1,
        "the other acme"
    );
    assert!(
        lab.vault
            .secrets()
            .get(&lab.root, &tenant("acme"), &path("db/primary"), 0)
            .is_ok()
    );
}

/// RFC 4648 base32 without padding, as TOTP enrolments print the secret.
fn base32_decode(text: &str) -> Vec<u8> {
    let mut bits = 0u64;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => continue,
        };
        bits = (bits << 5) | u64::from(value);
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

#[test]
fn a_rekey_that_rotates_the_root_key_reseals_the_keyring_and_keeps_everything_readable() {
    let lab = lab(KeyPolicy::default(), 3, 2);
    put(&lab, "db/primary", "p1");
    let enrolled = lab.vault.mfa().enroll_totp(&lab.root, None).expect("enrol");
    let secret =
        crate::totp::TotpSecret::from_bytes(Zeroizing::new(base32_decode(&enrolled.secret_base32)))
            .expect("totp secret");
    lab.vault
        .mfa()
        .set_mfa_system_ops(&lab.root, vec![SystemOp::Rotate])
        .expect("mfa for rotate");

    let share = |text: &String| UnsealShare::parse(text).expect("share");
    let started = lab
        .vault
        .seal()
        .rekey_init(&lab.root, 3, 2, true, Vec::new())
        .expect("rekey init");
    assert!(started.rotate_root);
    lab.vault
        .seal()
        .rekey_submit(&started.nonce, share(&lab.shares[0]))
        .expect("first");
    let staged = lab
        .vault
        .seal()
        .rekey_submit(&started.nonce, share(&lab.shares[2]))
        .expect("second");
    let new = plain_shares(&staged.new_shares);
    // Nothing is rotated before the new shares are verified.
    assert_eq!(
        lab.vault
            .keks()
            .key_status(&lab.root, None, &PageRequest::default())
            .expect("status")
            .root
            .expect("root")
            .version,
        1
    );
    for fresh in [&new[2], &new[0]] {
        lab.vault
            .seal()
            .rekey_verify(&staged.verification_nonce, share(fresh))
            .expect("verify");
    }
    let root_status = lab
        .vault
        .keks()
        .key_status(&lab.root, None, &PageRequest::default())
        .expect("status")
        .root
        .expect("root");
    // acme's KEK, the two system keys and the old root key, sealed under the new root key.
    assert_eq!((root_status.version, root_status.invocations), (2, 4));
    let prefix = crate::schema::KEK_PREFIX;
    for (_, value) in lab
        .keys
        .scan(Space::Config, prefix, prefix, usize::MAX)
        .expect("scan")
    {
        let record: keys::KekRecord = from_json(&value, "kek").expect("record");
        let sealed = STANDARD.decode(record.sealed).expect("base64");
        assert_eq!(Header::parse(&sealed).expect("header").key.version, 2);
    }

    // The running vault uses the new root key at once; the data and the MFA enrolment (sealed
    // under the old root key, in the data store) still open.
    lab.vault
        .tenants()
        .create_tenant(&lab.root, &tenant("globex"), TenantSettings::default())
        .expect("tenant under the new root key");
    let code = format!(
        "{:06}",
        crate::totp::code_at(&secret, crate::totp::step_of(START / 1_000_000_000))
    );
    let with_code = lab
        .vault
        .authenticate(&lab.root_token)
        .expect("root")
        .with_mfa_code(Some(code));
    assert_eq!(
        lab.vault
            .keks()
            .rotate(&with_code, &tenant("acme"))
            .expect("rotate"),
        2
    );

    // After a restart, only the new shares open it, and everything reads.
    let restarted = open_with(&lab.data, &lab.keys, &KeyPolicy::default(), &lab.clock);
    unseal_with(&restarted, &[&new[1], &new[0]]).expect("new shares");
    let root = restarted.authenticate(&lab.root_token).expect("root");
    let read = restarted
        .secrets()
        .get(&root, &tenant("acme"), &path("db/primary"), 0)
        .expect("secret");
    assert_eq!(fields(&read)[0].1, "p1");
    put(&lab, "db/after", "a");
    assert!(
        restarted
            .secrets()
            .get(&root, &tenant("acme"), &path("db/after"), 0)
            .is_ok()
    );
}
