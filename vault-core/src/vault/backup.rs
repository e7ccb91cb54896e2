//! Backups of a running vault, restoring them, opening every secret of a restored copy, and
//! purging shredded tenants from the key backups the vault keeps.
//!
//! A backup is two files taken at one moment: the data backup (the data store: it carries no
//! key material) and the key backup (the key store: the root key sealed under the unseal key,
//! and the KEKs and system keys sealed under the root key). The vault writes the key backup
//! into its own key-backup directory, so that crypto-shredding a tenant can purge the tenant's
//! keys from every kept key backup ([`Vault::purge_key_backups`]); the data backup goes
//! wherever the operator wants it.
//!
//! Consistency: both snapshots are taken under the KEK lock, which every KEK change holds
//! until committed (a new version, a retired version's destruction, shredding). So the key
//! backup holds every KEK version the data backup's DEKs are wrapped under. The audit head
//! is read after the snapshots: it covers the intent record of every mutation in them.
//!
//! Restoring ([`restore`]) writes both stores into a new directory beside the target and
//! renames it into place only when both are whole and synced: a bad file, a mismatch or a
//! crash leaves no half-restored data directory. The restored stores have no audit head (the
//! old log is not part of a backup); a note (`restored.json`) tells the server to record the
//! restore, with the backup's audit head, as the first record of the new log.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use super::*;
use crate::{
    backup::{
        AuditHead, BackupError, BackupKind, BackupReader, BackupWriter, Manifest, load_into,
        new_id, write_snapshot,
    },
    schema::{AUDIT_HEAD_KEY, Store, TENANT_ID_PREFIX, tenant_ranges},
};

/// What a backup wrote.
#[derive(Clone, Debug)]
pub struct BackupTaken {
    pub data: Manifest,
    pub keys: Manifest,
    /// Where the key backup was written.
    pub key_path: PathBuf,
}

/// The note a restore leaves in the data directory for the server's first start.
pub const RESTORED_NOTE: &str = "restored.json";

/// What a purge of the kept key backups did.
#[derive(Clone, Debug, Default)]
pub(super) struct PurgeReport {
    /// Key backups that now list the tenant as purged.
    pub(super) purged: usize,
    /// Files that were not key backups of this vault, deleted.
    pub(super) removed: Vec<String>,
}

impl PurgeReport {
    /// What the shred receipt says of it (`kept`: a key-backup directory is configured).
    pub(super) fn describe(&self, kept: bool) -> String {
        let mut text = match (kept, self.purged) {
            (false, _) => String::new(),
            (true, 0) => "; no kept key backup held them".to_owned(),
            (true, n) => format!("; purged from {n} kept key backups"),
        };
        if !self.removed.is_empty() {
            text.push_str(&format!(
                "; deleted {} files of the key-backup directory that were not key backups of \
                 this vault: {}",
                self.removed.len(),
                self.removed.join(", ")
            ));
        }
        text
    }
}

/// Removes `*.partial` files an interrupted backup or purge left in `dir` (each may be a copy
/// of the key store that no purge would reach). Called with the key-backup lock held.
fn remove_partials(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "partial") {
            let _ = fs::remove_file(&path);
        }
    }
}

/// What [`restore`] did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Restored {
    pub data_backup: String,
    pub key_backup: String,
    pub created: String,
    pub node: String,
    pub audit_head: Option<AuditHead>,
    pub data_entries: u64,
    pub key_entries: u64,
}

/// What opening every secret version and named key of a vault found
/// ([`Vault::open_everything`]). Failures name the object, never a value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContentReport {
    pub tenants: u64,
    pub secrets: u64,
    pub secret_versions: u64,
    pub named_keys: u64,
    pub named_key_versions: u64,
    /// Versions of tenants whose keys were destroyed (crypto-shredded): unreadable by design.
    pub shredded_versions: u64,
    /// Everything that failed to open (or to parse).
    pub failed: u64,
    /// The first [`MAX_LISTED_FAILURES`] of them.
    pub failures: Vec<String>,
}

/// At most this many failures are listed (the count goes on).
const MAX_LISTED_FAILURES: usize = 100;

impl ContentReport {
    pub(super) fn fail(&mut self, what: String) {
        if self.failures.len() < MAX_LISTED_FAILURES {
            self.failures.push(what);
        }
        self.failed += 1;
    }
}

fn audit_signer(keyring: &Keyring) -> Result<Arc<ring::signature::Ed25519KeyPair>> {
    keyring
        .audit_signer
        .clone()
        .ok_or_else(|| Error::FailedPrecondition("the vault has no audit signing key".into()))
}

fn backup_error(e: BackupError) -> Error {
    Error::Storage(StorageError(e.0))
}

impl Vault {
    /// Writes a data backup into `data_out` and a key backup into the key-backup directory,
    /// from one moment (see the module documentation). System scope; the vault must be
    /// unsealed (the manifests are signed with the audit key). Writes carry on while it runs.
    pub fn create_backup(
        &self,
        caller: &Caller,
        node: &str,
        data_out: &mut dyn Write,
    ) -> Result<BackupTaken> {
        self.require_system_op(caller, SystemOp::Backup)?;
        self.take_backup(node, data_out)
    }

    /// [`Vault::create_backup`] by the vault itself (the server's scheduled backups).
    pub fn take_backup(&self, node: &str, data_out: &mut dyn Write) -> Result<BackupTaken> {
        let Some(dir) = self.config.key_backup_dir.clone() else {
            return Err(Error::FailedPrecondition(
                "no key-backup directory is configured (--key-backup-dir)".into(),
            ));
        };
        let keyring = self.keyring()?;
        let signer = audit_signer(&keyring)?;
        let public_key = self.audit_public_key()?.ok_or(Error::NotInitialized)?;
        let data_id = new_id().map_err(|_| Error::Rng)?;
        let key_id = new_id().map_err(|_| Error::Rng)?;
        let now = self.now();
        let manifest = |kind, id: &str, pair: &str, backend: &str, head: &Option<AuditHead>| {
            let mut manifest = Manifest::new(kind, id.to_owned(), pair.to_owned(), now);
            manifest.node = node.to_owned();
            manifest.backend = backend.to_owned();
            manifest.audit_head.clone_from(head);
            manifest.public_key.clone_from(&public_key);
            manifest
        };

        // Held until the key backup is in place: a shredding that destroys keys after the
        // snapshot purges the file only once it exists.
        let kept = lock(&self.key_backups);
        remove_partials(&dir);
        let (data_snapshot, key_snapshot) = {
            let _changes = self.hold_key_changes();
            (self.data.snapshot()?, self.keys.snapshot()?)
        };
        let head = self.audit.as_ref().map(|audit| {
            let head = audit.head();
            AuditHead {
                seq: head.seq,
                hash: head.hash,
            }
        });
        let stamp = crate::backup::file_stamp(now);
        let key_path = dir.join(format!("keys-{stamp}-{key_id}.vkb"));
        let storage_error = |what: &str, e: std::io::Error| {
            Error::Storage(StorageError(format!("{what} {}: {e}", dir.display())))
        };
        create_private_dir(&dir).map_err(|e| storage_error("cannot create", e))?;
        let partial = crate::backup::partial_path(&key_path);
        let file = crate::files::create_private(&partial)
            .map_err(|e| storage_error("cannot create a key backup in", e))?;
        let written = (|| {
            let mut writer = BackupWriter::new(&file)?;
            write_snapshot(&mut writer, &*key_snapshot, |_, _| true)?;
            let keys = manifest(BackupKind::Keys, &key_id, &data_id, self.keys.kind(), &head);
            writer.finish(keys, &signer)
        })();
        let keys = match written {
            Ok((keys, _)) => {
                crate::backup::commit_file(file, &partial, &key_path).map_err(backup_error)?;
                keys
            }
            Err(e) => {
                let _ = fs::remove_file(&partial);
                return Err(backup_error(e));
            }
        };
        drop(key_snapshot);
        drop(kept);

        let data = (|| {
            let mut data_writer = BackupWriter::new(&mut *data_out)?;
            write_snapshot(&mut data_writer, &*data_snapshot, |_, _| true)?;
            let data = manifest(BackupKind::Data, &data_id, &key_id, self.data.kind(), &head);
            data_writer.finish(data, &signer).map(|(data, _)| data)
        })();
        let data = match data {
            Ok(data) => data,
            Err(e) => {
                // No key backup without its data backup: it would only be a copy of the keys.
                let _kept = lock(&self.key_backups);
                let _ = fs::remove_file(&key_path);
                return Err(backup_error(e));
            }
        };
        Ok(BackupTaken {
            data,
            keys,
            key_path,
        })
    }

    /// Removes the oldest key backups beyond the newest `keep`; returns how many went.
    pub fn prune_key_backups(&self, keep: usize) -> Result<usize> {
        let Some(dir) = &self.config.key_backup_dir else {
            return Ok(0);
        };
        let _kept = lock(&self.key_backups);
        remove_partials(dir);
        let paths = kept_backups(dir, BackupKind::Keys).map_err(backup_error)?;
        crate::backup::remove_oldest(&paths, keep).map_err(backup_error)
    }

    /// Holds the key backups still (shredding holds it from the key store's compaction through
    /// the purge: no key snapshot is alive then, so compaction drops what was deleted).
    pub(super) fn hold_key_backups(&self) -> MutexGuard<'_, ()> {
        lock(&self.key_backups)
    }

    /// Removes the tenant's key-store ranges from every key backup in the key-backup directory
    /// (crypto-shredding) and adds its tombstone: each file is rewritten beside itself,
    /// re-signed, synced and renamed over the old one. A file that already lists the tenant as
    /// purged is left alone, so a repeat after a crash finishes the job. A file that is not a
    /// key backup signed by this vault (damaged, or planted) is deleted rather than re-signed,
    /// since it may hold the tenant's keys; partial files of an interrupted backup go too.
    pub(super) fn purge_key_backups(
        &self,
        _held: &MutexGuard<'_, ()>,
        keyring: &Keyring,
        id: TenantId,
    ) -> Result<PurgeReport> {
        let mut report = PurgeReport::default();
        let Some(dir) = &self.config.key_backup_dir else {
            return Ok(report);
        };
        let signer = audit_signer(keyring)?;
        let own_key = self
            .audit_public_key()?
            .and_then(|text| crate::audit::record::parse_public_key(&text))
            .ok_or(Error::NotInitialized)?;
        let tombstone = self.keys.get(Space::Config, &schema::shredded_key(id))?;
        let ranges: Vec<_> = tenant_ranges(id)
            .into_iter()
            .filter(|range| range.store == Store::Keys)
            .collect();
        let tenant = id.to_hex();
        remove_partials(dir);
        for path in kept_backups(dir, BackupKind::Keys).map_err(backup_error)? {
            let opened = BackupReader::open(&path).and_then(|reader| {
                reader.expect_kind(BackupKind::Keys)?;
                reader.check_signature(Some(&own_key))?;
                Ok(reader)
            });
            let mut reader = match opened {
                Ok(reader) => reader,
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "a file in the key-backup directory is not a key backup of this vault: deleted");
                    fs::remove_file(&path).map_err(|e| {
                        Error::Storage(StorageError(format!(
                            "cannot remove {}: {e}",
                            path.display()
                        )))
                    })?;
                    report.removed.push(path.display().to_string());
                    continue;
                }
            };
            if reader.manifest().purged_tenants.contains(&tenant) {
                report.purged += 1;
                continue;
            }
            let mut manifest = reader.manifest().clone();
            manifest.purged_tenants.push(tenant.clone());
            // Key backups are small (keys only): read whole, written again without the tenant.
            let mut entries: Vec<(Space, Vec<u8>, Vec<u8>)> = Vec::new();
            reader
                .read_entries(|space, key, value| {
                    if !ranges.iter().any(|r| r.contains(Store::Keys, space, key)) {
                        entries.push((space, key.to_vec(), value.to_vec()));
                    }
                    Ok(())
                })
                .map_err(backup_error)?;
            if let Some(tombstone) = &tombstone {
                entries.push((Space::Config, schema::shredded_key(id), tombstone.clone()));
            }
            let partial = crate::backup::partial_path(&path);
            let file = crate::files::create_private(&partial).map_err(|e| {
                Error::Storage(StorageError(format!(
                    "cannot create {}: {e}",
                    partial.display()
                )))
            })?;
            let written = (|| {
                let mut writer = BackupWriter::new(&file)?;
                for space in Space::ALL {
                    writer.begin(space.name())?;
                    for (_, key, value) in entries.iter().filter(|(s, _, _)| *s == space) {
                        writer.entry(key, value)?;
                    }
                }
                writer.finish(manifest, &signer).map(|_| ())
            })();
            match written {
                Ok(()) => {
                    crate::backup::commit_file(file, &partial, &path).map_err(backup_error)?;
                    report.purged += 1;
                }
                Err(e) => {
                    let _ = fs::remove_file(&partial);
                    return Err(backup_error(e));
                }
            }
        }
        Ok(report)
    }

    /// Opens every secret version and every named key version the vault holds (without
    /// returning a value): what `backup verify` runs on a restored copy. Unsealed only.
    pub fn open_everything(&self) -> Result<ContentReport> {
        let keyring = self.keyring()?;
        let mut report = ContentReport::default();
        let mut start = TENANT_ID_PREFIX.to_vec();
        loop {
            let page = self
                .data
                .scan(Space::Config, TENANT_ID_PREFIX, &start, 1024)?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            start.push(0);
            for (key, _) in &page {
                let hex = String::from_utf8_lossy(&key[TENANT_ID_PREFIX.len()..]).into_owned();
                match TenantId::parse_hex(&hex) {
                    Some(_) => report.tenants += 1,
                    None => report.fail(format!("tenant index entry {hex:?}")),
                }
            }
        }
        // One pass over every tenant's secrets (deleted tenants' included): each metadata
        // record is a secret, each version record is opened as read.
        let prefix = schema::TENANTS_DATA_PREFIX;
        let mut start = prefix.to_vec();
        loop {
            let page = self.data.scan(Space::Secrets, prefix, &start, 1024)?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            start.push(0);
            for (key, value) in &page {
                if schema::is_meta_key(key) {
                    report.secrets += 1;
                    continue;
                }
                let Some((id, path, version)) = schema::parse_version_key(key) else {
                    continue;
                };
                let Ok(path) = SecretPath::parse(&path) else {
                    report.fail(format!("a secret version with an invalid path {path:?}"));
                    continue;
                };
                report.secret_versions += 1;
                match self.open_stored(&keyring, id, &path, version, value) {
                    Ok(Some(opened)) => drop(opened),
                    Ok(None) | Err(_) if self.tenant_shredded(id)? => {
                        report.shredded_versions += 1;
                    }
                    Ok(None) => report.fail(format!(
                        "tenant {id} secret {path} version {version}: its KEK version is not in the key backup"
                    )),
                    Err(e) => report.fail(format!(
                        "tenant {id} secret {path} version {version}: {}",
                        e.audit_detail()
                    )),
                }
            }
        }
        self.open_named_keys(&keyring, &mut report)?;
        Ok(report)
    }
}

/// The backups of `kind` in `dir`, oldest first (names begin with the creation time).
pub fn kept_backups(
    dir: &Path,
    kind: BackupKind,
) -> std::result::Result<Vec<PathBuf>, BackupError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BackupError(format!("cannot list {}: {e}", dir.display()))),
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == kind.extension()))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Creates `dir` (and its parents), readable by its owner only.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Restores a data backup and a key backup into `target`, which must not exist or be empty.
/// Both files are checked before anything is written (kinds, trailers, signatures: against
/// `public_key` if given, and against each other), and every section's hash as it is read;
/// the stores are built in a directory beside `target` and renamed into place when whole, so
/// on any error nothing is left at `target`.
#[cfg(feature = "rocksdb")]
pub fn restore(
    data_file: &Path,
    key_file: &Path,
    target: &Path,
    public_key: Option<&[u8; 32]>,
    allow_unpaired: bool,
) -> std::result::Result<Restored, BackupError> {
    use crate::storage::Storage;
    let mut data = BackupReader::open(data_file)?;
    let mut keys = BackupReader::open(key_file)?;
    data.expect_kind(BackupKind::Data)?;
    keys.expect_kind(BackupKind::Keys)?;
    data.check_signature(public_key)?;
    keys.check_signature(public_key)?;
    if data.manifest().public_key != keys.manifest().public_key {
        return Err(BackupError(format!(
            "{} and {} are from different vaults (signed by different audit keys)",
            data_file.display(),
            key_file.display()
        )));
    }
    let (d, k) = (data.manifest(), keys.manifest());
    if !allow_unpaired && (d.pair != k.id || k.pair != d.id) {
        return Err(BackupError(format!(
            "{} (data backup {}, taken with key backup {}) and {} (key backup {}) were not taken together; \
             give the key backup taken with it (or allow an unpaired one, knowing that secrets under \
             KEK versions retired in between will not open)",
            data_file.display(),
            d.id,
            d.pair,
            key_file.display(),
            k.id
        )));
    }
    match fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError(format!(
                    "{} is not empty: restore into a new directory",
                    target.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(BackupError(format!(
                "cannot read {}: {e}",
                target.display()
            )));
        }
    }
    let name = target
        .file_name()
        .ok_or_else(|| BackupError(format!("{} names no directory", target.display())))?
        .to_string_lossy()
        .into_owned();
    let building = target.with_file_name(format!(".{name}.restoring-{}", std::process::id()));
    let _ = fs::remove_dir_all(&building);
    let result = (|| {
        create_private_dir(&building)
            .map_err(|e| BackupError(format!("cannot create {}: {e}", building.display())))?;
        let open_error =
            |e: StorageError| BackupError(format!("cannot create the restored store: {e}"));
        let key_entries = {
            let store = crate::storage::RocksStorage::open_key_store(&building.join("keys"))
                .map_err(open_error)?;
            load_into(&mut keys, &store)?
        };
        let data_entries = {
            let store =
                crate::storage::RocksStorage::open(&building.join("data")).map_err(open_error)?;
            let loaded = load_into(&mut data, &store)?;
            // The old node's audit head belongs to the old log.
            let mut batch = WriteBatch::new();
            for (key, _) in store
                .scan(Space::Config, AUDIT_HEAD_KEY, AUDIT_HEAD_KEY, usize::MAX)
                .map_err(|e| BackupError(format!("reading the restored store failed: {e}")))?
            {
                batch.delete(Space::Config, key);
            }
            if !batch.is_empty() {
                store
                    .write(batch)
                    .map_err(|e| BackupError(format!("writing the restored store failed: {e}")))?;
            }
            loaded
        };
        let restored = Restored {
            data_backup: data.manifest().id.clone(),
            key_backup: keys.manifest().id.clone(),
            created: data.manifest().created.clone(),
            node: data.manifest().node.clone(),
            audit_head: data.manifest().audit_head.clone(),
            data_entries,
            key_entries,
        };
        let note = serde_json::to_vec(&restored)
            .map_err(|e| BackupError(format!("cannot encode the restore note: {e}")))?;
        crate::files::write_private(&building.join(RESTORED_NOTE), &note)
            .map_err(|e| BackupError(format!("cannot write the restore note: {e}")))?;
        // Over an empty directory, rename replaces it.
        fs::rename(&building, target).map_err(|e| {
            BackupError(format!(
                "cannot move the restored stores into {}: {e}",
                target.display()
            ))
        })?;
        crate::files::sync_parent(target)
            .map_err(|e| BackupError(format!("cannot sync {}: {e}", target.display())))?;
        Ok(restored)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&building);
    }
    result
}
