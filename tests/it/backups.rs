//! Backups (issue 20) through the real binaries: `vault-cli backup create` from a running
//! server, the files scanned for key material, `backup verify` with shares, a restore with
//! `vault-server --restore-from` read back through the CLI, bad files refused with nothing
//! half-restored, a KEK destroyed after a backup caught by verify, scheduled backups with
//! retention, and shredding purging a tenant from every kept key backup.

use std::{
    fs,
    path::{Path, PathBuf},
};

use vault_core::backup::BackupReader;
use vault_tests::{TestServer, audit_records, eventually, files_containing, init, unseal};

/// Every sealed blob a key backup holds, by what it is: each KEK version's `sealed` string,
/// the root key sealed under the unseal key, the system keys and the named keys' material.
fn sealed_blobs(key_backup: &Path) -> Vec<(String, Vec<u8>)> {
    let mut reader = BackupReader::open(key_backup).expect("open the key backup");
    let mut blobs = Vec::new();
    reader
        .read_entries(|_, key, value| {
            let name = String::from_utf8_lossy(key).into_owned();
            let record: Option<serde_json::Value> = serde_json::from_slice(value).ok();
            if name.starts_with("kek/") || name.starts_with("kmsv/") {
                let sealed = record.as_ref().expect("json record")["sealed"]
                    .as_str()
                    .expect("sealed")
                    .to_owned();
                blobs.push((name, sealed.into_bytes()));
            } else if name == "seal/config" {
                let record = record.expect("seal config json");
                let root = record
                    .as_object()
                    .expect("object")
                    .iter()
                    .find(|(field, _)| field.contains("root"))
                    .and_then(|(_, value)| value.as_str())
                    .expect("a sealed root key field")
                    .to_owned();
                blobs.push((name, root.into_bytes()));
            } else if name.starts_with("sys/token-hmac") || name.starts_with("sys/audit-signing") {
                blobs.push((name, value.to_vec()));
            }
            Ok(())
        })
        .expect("read the key backup");
    blobs
}

fn only_file(dir: &Path, extension: &str) -> PathBuf {
    let files = files_with(dir, extension);
    assert_eq!(
        files.len(),
        1,
        "one .{extension} in {}: {files:?}",
        dir.display()
    );
    files.into_iter().next().expect("one")
}

fn files_with(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .map_while(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == extension))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn write_shares(dir: &Path, shares: &[String]) -> Vec<String> {
    shares
        .iter()
        .enumerate()
        .map(|(i, share)| {
            let path = dir.join(format!("share-{i}"));
            fs::write(&path, share).expect("write share");
            path.to_str().expect("utf-8").to_owned()
        })
        .collect()
}

/// Writes the audit public key to DIR/audit.pub (to pin it), and returns the path.
fn pin_audit_key(server: &TestServer, root: &str, dir: &Path) -> PathBuf {
    let path = dir.join("audit.pub");
    let out = path.to_str().expect("utf-8");
    server
        .cli(Some(root), &["audit", "public-key", "--out", out])
        .ok();
    path
}

/// `vault-cli backup create --out OUT`; returns what it printed (JSON).
fn create_backup(server: &TestServer, root: &str, out: &Path) -> serde_json::Value {
    let out = out.to_str().expect("utf-8");
    server
        .cli(
            Some(root),
            &["backup", "create", "--out", out, "--format", "json"],
        )
        .json()
}

fn get_field(server: &TestServer, root: &str, tenant: &str, path: &str) -> String {
    server
        .cli(
            Some(root),
            &["get", "--tenant", tenant, path, "--field", "password"],
        )
        .ok()
        .to_owned()
}

#[test]
fn a_backup_carries_no_key_material_verifies_and_restores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, key_backups) = (dir.path().join("data"), dir.path().join("key-backups"));
    let server = TestServer::start(
        &data,
        &["--key-backup-dir", key_backups.to_str().expect("utf-8")],
    );
    let (shares, root) = init(&server, 3, 2);
    unseal(&server, &[&shares[0], &shares[1]]);
    let share_files = write_shares(dir.path(), &shares);
    let mut written = 0;
    for tenant in ["acme", "globex"] {
        server.cli(Some(&root), &["tenant", "create", tenant]).ok();
        for (path, value) in [
            ("db/primary", "one"),
            ("db/primary", "two"),
            ("api/key", "k"),
        ] {
            server
                .cli(
                    Some(&root),
                    &[
                        "put",
                        "--tenant",
                        tenant,
                        path,
                        &format!("password={tenant}-{value}"),
                    ],
                )
                .ok();
            written += 1;
        }
    }
    // A second KEK version, so the backup spans two.
    server.cli(Some(&root), &["rotate", "--all"]).ok();
    server
        .cli(
            Some(&root),
            &["put", "--tenant", "acme", "db/replica", "password=acme-r"],
        )
        .ok();
    written += 1;
    server
        .cli(
            Some(&root),
            &["key", "create", "--tenant", "acme", "orders"],
        )
        .ok();
    let ciphertext = server
        .cli_with_stdin(
            Some(&root),
            &["key", "encrypt", "--tenant", "acme", "orders"],
            Some(b"order 66"),
        )
        .ok()
        .trim()
        .to_owned();
    let public_key = pin_audit_key(&server, &root, dir.path());

    let backup = dir.path().join("vault.vbk");
    let created = create_backup(&server, &root, &backup);
    let key_backup = only_file(&key_backups, "vkb");
    assert!(
        key_backup
            .to_string_lossy()
            .contains(created["key_backup"].as_str().expect("key backup id")),
        "{created}"
    );
    // Written after the backup: not in the restored copy.
    server
        .cli(
            Some(&root),
            &["put", "--tenant", "acme", "late", "password=late"],
        )
        .ok();
    // The call and the backup are both in the audit log.
    let records = audit_records(&server.audit_dir());
    assert!(
        records
            .iter()
            .any(|r| r["method"] == "/vault.v1.System/Backup" && r["outcome"] == "ok")
    );
    assert!(records.iter().any(|r| {
        r["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("backup taken: data backup "))
    }));

    // No key material in the data backup; all of it in the key backup.
    let blobs = sealed_blobs(&key_backup);
    let keks = blobs
        .iter()
        .filter(|(name, _)| name.starts_with("kek/"))
        .count();
    assert_eq!(keks, 4, "two tenants with two KEK versions each: {blobs:?}");
    assert!(blobs.iter().any(|(name, _)| name == "seal/config"));
    assert!(blobs.iter().any(|(name, _)| name.starts_with("kmsv/")));
    let backup_bytes = fs::read(&backup).expect("read backup");
    let key_bytes = fs::read(&key_backup).expect("read key backup");
    for (name, blob) in &blobs {
        assert!(
            key_bytes.windows(blob.len()).any(|w| w == blob.as_slice()),
            "{name} is in the key backup"
        );
        assert!(
            !backup_bytes
                .windows(blob.len())
                .any(|w| w == blob.as_slice()),
            "{name}'s sealed key is in the data backup"
        );
    }

    // Verify: signatures against the pinned key, hashes, every version opened.
    let scratch = dir.path().join("scratch");
    let mut verify = vec![
        "backup",
        "verify",
        backup.to_str().expect("utf-8"),
        "--key-backup",
        key_backup.to_str().expect("utf-8"),
        "--public-key",
        public_key.to_str().expect("utf-8"),
        "--scratch",
        scratch.to_str().expect("utf-8"),
        "--format",
        "json",
    ];
    for file in &share_files[..2] {
        verify.extend(["--share-file", file.as_str()]);
    }
    let verified = server.cli(None, &verify).json();
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["secret_versions"], written, "{verified}");
    assert_eq!(verified["secrets"], 5, "{verified}");
    assert_eq!(verified["tenants"], 2, "{verified}");
    assert_eq!(verified["named_key_versions"], 1, "{verified}");
    assert_eq!(verified["failed"], 0, "{verified}");
    assert!(!scratch.exists(), "the scratch copy is removed");
    let text = format!("{verified}");
    assert!(!text.contains("acme-one") && !text.contains("order 66"));

    // Restore into a new directory, unseal with the shares, read back.
    let restored_dir = dir.path().join("restored");
    let restored = TestServer::start(
        &restored_dir,
        &[
            "--restore-from",
            backup.to_str().expect("utf-8"),
            "--restore-keys",
            key_backup.to_str().expect("utf-8"),
            "--restore-public-key",
            public_key.to_str().expect("utf-8"),
        ],
    );
    unseal(&restored, &[&shares[1], &shares[2]]);
    assert_eq!(
        get_field(&restored, &root, "acme", "db/primary"),
        "acme-two"
    );
    assert_eq!(get_field(&restored, &root, "globex", "api/key"), "globex-k");
    assert_eq!(get_field(&restored, &root, "acme", "db/replica"), "acme-r");
    let late = restored.cli(Some(&root), &["get", "--tenant", "acme", "late"]);
    assert!(late.failed().contains("not found"), "{}", late.stderr);
    let decrypted = restored
        .cli(
            Some(&root),
            &["key", "decrypt", "--tenant", "acme", "orders", &ciphertext],
        )
        .ok()
        .to_owned();
    assert_eq!(decrypted, "order 66");
    let first = audit_records(&restored.audit_dir());
    let restore_record = first
        .iter()
        .find(|r| r["method"] == "restore")
        .unwrap_or_else(|| panic!("a restore record: {first:?}"));
    assert!(
        restore_record["detail"]
            .as_str()
            .is_some_and(|d| d.contains(created["id"].as_str().expect("id")))
    );
    restored.kill();
    assert!(!restored_dir.join("restored.json").exists());
    server.kill();
}

#[test]
fn bad_backup_files_are_refused_and_nothing_is_half_restored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, key_backups) = (dir.path().join("data"), dir.path().join("key-backups"));
    let server = TestServer::start(
        &data,
        &["--key-backup-dir", key_backups.to_str().expect("utf-8")],
    );
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    for i in 0..50 {
        server
            .cli(
                Some(&root),
                &["put", "--tenant", "acme", &format!("s{i}"), "password=p"],
            )
            .ok();
    }
    let public_key = pin_audit_key(&server, &root, dir.path());
    let backup = dir.path().join("vault.vbk");
    create_backup(&server, &root, &backup);
    // A second create to an existing file is refused.
    let again = server.cli(
        Some(&root),
        &["backup", "create", "--out", backup.to_str().expect("utf-8")],
    );
    assert!(
        again.failed().contains("exists already"),
        "{}",
        again.stderr
    );
    let key_backup = files_with(&key_backups, "vkb")[0].clone();
    server.kill();
    let original = fs::read(&backup).expect("read");

    let variant = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        fs::write(&path, bytes).expect("write variant");
        path
    };
    let truncated = variant("truncated.vbk", &original[..original.len() - 100]);
    let manifest_at = original
        .windows(8)
        .position(|w| w == b"\"entries")
        .expect("the manifest lists entries");
    let mut edited = original.clone();
    // One digit of an entry count in the manifest: the signature no longer verifies.
    let digit = manifest_at
        + edited[manifest_at..]
            .iter()
            .position(u8::is_ascii_digit)
            .expect("digit");
    edited[digit] = if edited[digit] == b'9' {
        b'8'
    } else {
        edited[digit] + 1
    };
    let edited = variant("edited-manifest.vbk", &edited);
    let mut flipped = original.clone();
    // A byte inside the first entry's key (after "VAULTBK1", 'F', the name, 'E' and its length).
    flipped[30] ^= 0x20;
    let flipped = variant("flipped.vbk", &flipped);
    let other_key = variant(
        "other.pub",
        b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    );

    let cases: [(&Path, &Path, &Path, &str); 5] = [
        (&truncated, &key_backup, &public_key, "truncated"),
        (
            &edited,
            &key_backup,
            &public_key,
            "signature does not verify",
        ),
        (
            &flipped,
            &key_backup,
            &public_key,
            "does not match the manifest",
        ),
        (
            &key_backup,
            &key_backup,
            &public_key,
            "is a key backup, not a data backup",
        ),
        (&backup, &key_backup, &other_key, "not by the pinned key"),
    ];
    for (file, keys, pinned, expected) in cases {
        let scratch = dir.path().join("scratch");
        let output = vault_tests::run_cli(
            "127.0.0.1:1",
            None,
            &[
                "backup",
                "verify",
                file.to_str().expect("utf-8"),
                "--key-backup",
                keys.to_str().expect("utf-8"),
                "--public-key",
                pinned.to_str().expect("utf-8"),
                "--no-open",
                "--scratch",
                scratch.to_str().expect("utf-8"),
            ],
            None,
        );
        assert!(
            output.failed().contains(expected),
            "verify {}: expected {expected:?}, got {}",
            file.display(),
            output.stderr
        );
        assert!(
            !scratch.exists(),
            "verify of {} left its scratch copy",
            file.display()
        );

        // The server refuses to start on it, and leaves no data directory behind.
        let target = dir.path().join("restored");
        let started = TestServer::try_start(
            &target,
            &[
                "--restore-from",
                file.to_str().expect("utf-8"),
                "--restore-keys",
                keys.to_str().expect("utf-8"),
                "--restore-public-key",
                pinned.to_str().expect("utf-8"),
            ],
        );
        let Err(printed) = started else {
            panic!("the server started on {}", file.display());
        };
        assert!(
            printed.contains(expected),
            "restore {}: {printed}",
            file.display()
        );
        assert!(printed.contains("nothing was restored"), "{printed}");
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("read dir")
            .map_while(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("restoring"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "a restore of {} left {leftovers:?}",
            file.display()
        );
        assert!(
            fs::read_dir(&target).map_or(true, |mut d| d.next().is_none()),
            "a restore of {} left files in the data directory",
            file.display()
        );
    }
    // A scratch directory that exists is refused and left alone (verify removes its scratch).
    let mine = dir.path().join("mine");
    fs::create_dir(&mine).expect("mkdir");
    fs::write(mine.join("keep"), b"x").expect("write");
    let output = vault_tests::run_cli(
        "127.0.0.1:1",
        None,
        &[
            "backup",
            "verify",
            backup.to_str().expect("utf-8"),
            "--key-backup",
            key_backup.to_str().expect("utf-8"),
            "--public-key",
            public_key.to_str().expect("utf-8"),
            "--no-open",
            "--scratch",
            mine.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(output.failed().contains("exists"), "{}", output.stderr);
    assert!(mine.join("keep").exists());
    // A data directory that is not empty is never restored over.
    let output = TestServer::try_start(
        &data,
        &[
            "--restore-from",
            backup.to_str().expect("utf-8"),
            "--restore-keys",
            key_backup.to_str().expect("utf-8"),
        ],
    );
    let Err(printed) = output else {
        panic!("restored over a live data directory")
    };
    assert!(printed.contains("is not empty"), "{printed}");
}

#[test]
fn verify_fails_when_a_kek_the_data_needs_was_destroyed_after_the_backup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, key_backups) = (dir.path().join("data"), dir.path().join("key-backups"));
    let server = TestServer::start(
        &data,
        &[
            "--key-backup-dir",
            key_backups.to_str().expect("utf-8"),
            "--maintenance-interval-ms",
            "20",
            "--rewrap-rate",
            "100000",
        ],
    );
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    let share_files = write_shares(dir.path(), &shares);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    for i in 0..5 {
        server
            .cli(
                Some(&root),
                &["put", "--tenant", "acme", &format!("s{i}"), "password=p"],
            )
            .ok();
    }
    let public_key = pin_audit_key(&server, &root, dir.path());
    let first = dir.path().join("first.vbk");
    create_backup(&server, &root, &first);
    // Version 1 retired: its DEKs re-wrapped into version 2, then it is destroyed.
    server
        .cli(Some(&root), &["rotate", "--tenant", "acme"])
        .ok();
    server
        .cli(
            Some(&root),
            &["kek", "retire", "--tenant", "acme", "--version", "1"],
        )
        .ok();
    eventually("version 1 retired", || {
        audit_records(&server.audit_dir()).iter().any(|r| {
            r["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("retired KEK versions 1 "))
        })
    });
    let second = dir.path().join("second.vbk");
    create_backup(&server, &root, &second);
    server.kill();
    let keys = files_with(&key_backups, "vkb");
    assert_eq!(keys.len(), 2);
    let verify = |data: &Path, keys: &Path, unpaired: bool| {
        let mut args = vec![
            "backup",
            "verify",
            data.to_str().expect("utf-8"),
            "--key-backup",
            keys.to_str().expect("utf-8"),
            "--public-key",
            public_key.to_str().expect("utf-8"),
            "--share-file",
            &share_files[0],
            "--format",
            "json",
        ];
        if unpaired {
            args.push("--allow-unpaired");
        }
        vault_tests::run_cli("127.0.0.1:1", None, &args, None)
    };
    // Each backup with its own key backup verifies.
    let ok = verify(&second, &keys[1], false);
    assert_eq!(ok.json()["ok"], true, "{}", ok.stdout);
    // Backups not taken together are refused unless asked for.
    let refused = verify(&first, &keys[1], false);
    assert!(
        refused.failed().contains("were not taken together"),
        "{}",
        refused.stderr
    );
    // The first data backup with the later key backup: version 1 is gone, nothing opens.
    let mismatched = verify(&first, &keys[1], true);
    assert_ne!(mismatched.code, 0, "{}", mismatched.stdout);
    let report: serde_json::Value = serde_json::from_str(&mismatched.stdout).expect("json report");
    assert_eq!(report["failed"], 5, "{report}");
    assert!(
        report["failures"][0]
            .as_str()
            .is_some_and(|f| f.contains("secret s") && f.contains("version 1")),
        "{report}"
    );
    assert!(
        mismatched.stderr.contains("failed to open"),
        "{}",
        mismatched.stderr
    );
}

#[test]
fn scheduled_backups_keep_the_newest_and_shredding_purges_every_kept_key_backup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (backups, key_backups) = (dir.path().join("backups"), dir.path().join("key-backups"));
    let server = TestServer::start(
        &data,
        &[
            "--backup-dir",
            backups.to_str().expect("utf-8"),
            "--key-backup-dir",
            key_backups.to_str().expect("utf-8"),
            "--backup-interval",
            "1s",
            "--backup-keep",
            "2",
            "--tenant-shred-delay-secs",
            "0",
            "--maintenance-interval-ms",
            "20",
        ],
    );
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    for tenant in ["acme", "globex"] {
        server.cli(Some(&root), &["tenant", "create", tenant]).ok();
        server
            .cli(
                Some(&root),
                &["put", "--tenant", tenant, "db", "password=p"],
            )
            .ok();
    }
    let taken = |records: &[serde_json::Value]| {
        records
            .iter()
            .filter(|r| {
                r["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("backup taken:"))
            })
            .count()
    };
    eventually("three scheduled backups", || {
        taken(&audit_records(&server.audit_dir())) >= 3
    });
    eventually("retention at two", || {
        files_with(&backups, "vbk").len() == 2 && files_with(&key_backups, "vkb").len() == 2
    });
    let acme = server
        .cli(Some(&root), &["tenant", "show", "acme", "--format", "json"])
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let kept = files_with(&key_backups, "vkb");
    let acme_blobs: Vec<Vec<u8>> = sealed_blobs(&kept[0])
        .into_iter()
        .filter(|(name, _)| name.starts_with(&format!("kek/{acme}/")))
        .map(|(_, blob)| blob)
        .collect();
    assert_eq!(acme_blobs.len(), 1);
    let globex_blobs: Vec<Vec<u8>> = sealed_blobs(&kept[0])
        .into_iter()
        .filter(|(name, _)| name.starts_with("kek/") && !name.contains(&acme))
        .map(|(_, blob)| blob)
        .collect();
    assert!(!files_containing(&key_backups, &acme_blobs[0]).is_empty());
    // A file planted in the key-backup directory, holding acme's key: a purge must not keep
    // (or re-sign) it.
    let planted = key_backups.join("keys-9-planted.vkb");
    let mut planted_bytes = fs::read(&kept[0]).expect("read");
    let last = planted_bytes.len() - 20;
    planted_bytes[last] ^= 1;
    fs::write(&planted, &planted_bytes).expect("plant");

    server.cli(Some(&root), &["tenant", "delete", "acme"]).ok();
    let receipt = |records: &[serde_json::Value]| {
        records.iter().find_map(|r| {
            r["detail"]
                .as_str()
                .filter(|d| d.starts_with("crypto-shred receipt"))
                .map(str::to_owned)
        })
    };
    eventually("the shred receipt", || {
        receipt(&audit_records(&server.audit_dir())).is_some()
    });
    let receipt = receipt(&audit_records(&server.audit_dir())).expect("receipt");
    assert!(
        receipt.contains("purged from "),
        "a kept key backup held acme: {receipt}"
    );
    server.kill();
    // Every kept key backup: acme's KEK gone, globex's still there, the manifest says so.
    assert_eq!(
        files_containing(&key_backups, &acme_blobs[0]),
        Vec::<PathBuf>::new()
    );
    for path in files_with(&key_backups, "vkb") {
        let bytes = fs::read(&path).expect("read");
        assert!(
            globex_blobs
                .iter()
                .all(|b| bytes.windows(b.len()).any(|w| w == b.as_slice()))
        );
        let reader = BackupReader::open(&path).expect("open");
        reader.check_signature(None).expect("re-signed");
        let purged = &reader.manifest().purged_tenants;
        // Backups taken after the destruction never held acme.
        assert!(
            purged.is_empty() || purged == &vec![acme.clone()],
            "{purged:?}"
        );
    }
}
