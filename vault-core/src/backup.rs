//! The backup file format: a data backup (`.vbk`, a snapshot of the data store) and a key
//! backup (`.vkb`, a snapshot of the key store), each with a signed manifest.
//!
//! A file is
//!
//! ```text
//! "VAULTBK1"
//! per stored space: 'F' u16 name-length name, then per entry 'E' u32 key-length key
//!                   u32 value-length value, then 'Z'
//! 'M' u32 manifest-length manifest (JSON) signature (64 bytes, Ed25519 over the manifest)
//! u64 offset of 'M', "VBKEND01"
//! ```
//!
//! (integers big-endian). The manifest lists every section ("file") with its entry count, size
//! and the SHA-256 of its bytes from the first 'E' to the 'Z', the audit head at the moment of
//! the snapshot, and the id of the backup taken with it; it is signed with the vault's audit
//! signing key, so a reader that pins that key (`vault-cli audit public-key`) knows the file
//! came from the vault and was not changed. A reader checks the trailer and the signature
//! before it reads an entry, and the hashes and counts as it reads; any mismatch stops it with
//! an error naming what did not match.
//!
//! Invariant: a data backup holds what the data store holds: ciphertext and metadata, no key.
//! The key material (sealed) is only in key backups, which the vault keeps itself (so that
//! crypto-shredding can purge a tenant from them, [`purge_tenant`]).

use std::{
    fs::{self, File},
    io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use ring::{
    digest,
    signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey},
};
use serde::{Deserialize, Serialize};

use crate::storage::{Space, Storage, WriteBatch};

const MAGIC: &[u8; 8] = b"VAULTBK1";
const END_MAGIC: &[u8; 8] = b"VBKEND01";
const TRAILER: u64 = 16;
const SIGNATURE: usize = 64;
/// What the signature covers before the manifest's bytes (so a signature over a manifest can
/// never stand for anything else the audit key signs).
const SIGNING_DOMAIN: &[u8] = b"vault-backup-manifest-v1\0";

fn signed_message(manifest: &[u8]) -> Vec<u8> {
    let mut message = SIGNING_DOMAIN.to_vec();
    message.extend_from_slice(manifest);
    message
}
/// The format this code writes and reads.
pub const FORMAT: u32 = 1;
/// Longest manifest accepted (it lists a handful of sections).
const MAX_MANIFEST: u32 = 1 << 20;
/// Longest key and value accepted (far above any the vault writes).
const MAX_KEY: u32 = 1 << 16;
const MAX_VALUE: u32 = 64 << 20;

/// A failed backup operation; the text names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackupError(pub String);

pub type Result<T> = std::result::Result<T, BackupError>;

fn io_error(context: impl std::fmt::Display) -> impl FnOnce(io::Error) -> BackupError {
    move |e| BackupError(format!("{context}: {e}"))
}

/// What a backup holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// The data store: tenants, tokens (hashed), policies, secrets (ciphertext), the feed.
    Data,
    /// The key store: the seal configuration, the sealed root key, system keys and KEKs.
    Keys,
}

impl BackupKind {
    pub fn name(self) -> &'static str {
        match self {
            BackupKind::Data => "data backup",
            BackupKind::Keys => "key backup",
        }
    }

    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            BackupKind::Data => "vbk",
            BackupKind::Keys => "vkb",
        }
    }
}

/// One section of a backup: a stored space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub entries: u64,
    pub bytes: u64,
    /// Hex SHA-256 of the section's bytes.
    pub sha256: String,
}

/// The audit chain head when the snapshot was taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: String,
}

/// A backup's manifest (signed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub kind: BackupKind,
    /// 16 hex digits, random.
    pub id: String,
    pub created_unix_nanos: i64,
    /// RFC 3339.
    pub created: String,
    /// The node that took it.
    pub node: String,
    /// The storage backend it was taken from.
    pub backend: String,
    pub files: Vec<FileEntry>,
    pub audit_head: Option<AuditHead>,
    /// The other half taken at the same moment: a data backup names its key backup and the
    /// other way round.
    pub pair: String,
    /// Tenant ids purged from a key backup since it was taken (crypto-shredding).
    #[serde(default)]
    pub purged_tenants: Vec<String>,
    /// The audit public key (base64) that signs this manifest.
    pub public_key: String,
}

impl Manifest {
    /// A manifest for a backup about to be written; `files` are filled in as it is.
    pub fn new(kind: BackupKind, id: String, pair: String, created_unix_nanos: i64) -> Manifest {
        Manifest {
            format: FORMAT,
            kind,
            id,
            created_unix_nanos,
            created: crate::time::rfc3339(created_unix_nanos),
            node: String::new(),
            backend: String::new(),
            files: Vec::new(),
            audit_head: None,
            pair,
            purged_tenants: Vec::new(),
            public_key: String::new(),
        }
    }

    /// Entries in every section.
    pub fn entries(&self) -> u64 {
        self.files.iter().map(|f| f.entries).sum()
    }
}

/// A time as backup file names carry it (`20261203T072724860945387Z`): names sort in time order.
pub fn file_stamp(unix_nanos: i64) -> String {
    crate::time::rfc3339(unix_nanos)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

/// Removes the oldest of `paths` (sorted oldest first) beyond the newest `keep` (at least one
/// stays), then syncs their directory; returns how many went.
pub fn remove_oldest(paths: &[PathBuf], keep: usize) -> Result<usize> {
    let excess = paths.len().saturating_sub(keep.max(1));
    for path in &paths[..excess] {
        fs::remove_file(path).map_err(io_error(format!("cannot remove {}", path.display())))?;
    }
    if let Some(first) = paths.first().filter(|_| excess > 0) {
        crate::files::sync_parent(first).map_err(io_error(format!(
            "cannot sync the directory of {}",
            first.display()
        )))?;
    }
    Ok(excess)
}

/// A fresh backup id: 16 hex digits from the OS generator.
pub fn new_id() -> Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|_| BackupError("the operating system's random number generator failed".into()))?;
    Ok(hex::encode(bytes))
}

fn sha256_hex(context: digest::Context) -> String {
    hex::encode(context.finish().as_ref())
}

/// Writes a backup file section by section. Nothing is valid until [`BackupWriter::finish`].
pub struct BackupWriter<W: Write> {
    out: BufWriter<W>,
    position: u64,
    section: Option<(FileEntry, digest::Context)>,
    files: Vec<FileEntry>,
}

impl<W: Write> BackupWriter<W> {
    pub fn new(out: W) -> Result<Self> {
        let mut writer = BackupWriter {
            out: BufWriter::with_capacity(1 << 20, out),
            position: 0,
            section: None,
            files: Vec::new(),
        };
        writer.raw(MAGIC)?;
        Ok(writer)
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(io_error("cannot write the backup"))?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    fn hashed(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some((entry, hash)) = &mut self.section {
            hash.update(bytes);
            entry.bytes += bytes.len() as u64;
        }
        self.raw(bytes)
    }

    /// Starts the section `name` (one per stored space).
    pub fn begin(&mut self, name: &str) -> Result<()> {
        self.end()?;
        let length = u16::try_from(name.len())
            .map_err(|_| BackupError(format!("section name {name:?} is too long")))?;
        self.raw(b"F")?;
        self.raw(&length.to_be_bytes())?;
        self.raw(name.as_bytes())?;
        self.section = Some((
            FileEntry {
                name: name.to_owned(),
                entries: 0,
                bytes: 0,
                sha256: String::new(),
            },
            digest::Context::new(&digest::SHA256),
        ));
        Ok(())
    }

    /// Adds an entry to the current section.
    pub fn entry(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let (Ok(key_length), Ok(value_length)) =
            (u32::try_from(key.len()), u32::try_from(value.len()))
        else {
            return Err(BackupError(
                "an entry is too large for the backup format".into(),
            ));
        };
        if self.section.is_none() {
            return Err(BackupError("an entry outside a section".into()));
        }
        self.hashed(b"E")?;
        self.hashed(&key_length.to_be_bytes())?;
        self.hashed(key)?;
        self.hashed(&value_length.to_be_bytes())?;
        self.hashed(value)?;
        if let Some((entry, _)) = &mut self.section {
            entry.entries += 1;
        }
        Ok(())
    }

    fn end(&mut self) -> Result<()> {
        if let Some((mut entry, hash)) = self.section.take() {
            entry.sha256 = sha256_hex(hash);
            self.raw(b"Z")?;
            self.files.push(entry);
        }
        Ok(())
    }

    /// Ends the last section, signs the manifest (its `files` set to what was written) and
    /// writes it and the trailer. Returns the manifest and the inner writer, flushed (the
    /// caller syncs a file).
    pub fn finish(
        mut self,
        mut manifest: Manifest,
        signer: &Ed25519KeyPair,
    ) -> Result<(Manifest, W)> {
        self.end()?;
        manifest.files = std::mem::take(&mut self.files);
        let bytes = serde_json::to_vec(&manifest)
            .map_err(|e| BackupError(format!("cannot encode the manifest: {e}")))?;
        let length = u32::try_from(bytes.len())
            .map_err(|_| BackupError("the manifest is too large".into()))?;
        let offset = self.position;
        self.raw(b"M")?;
        self.raw(&length.to_be_bytes())?;
        self.raw(&bytes)?;
        let signature = signer.sign(&signed_message(&bytes));
        self.raw(signature.as_ref())?;
        self.raw(&offset.to_be_bytes())?;
        self.raw(END_MAGIC)?;
        let inner = self
            .out
            .into_inner()
            .map_err(|e| BackupError(format!("cannot write the backup: {}", e.error())))?;
        Ok((manifest, inner))
    }
}

/// A backup file opened for reading: its trailer and manifest parsed (not yet trusted: see
/// [`BackupReader::check_signature`]).
pub struct BackupReader {
    path: PathBuf,
    file: File,
    manifest_bytes: Vec<u8>,
    signature: Vec<u8>,
    manifest: Manifest,
    /// Where the manifest starts: sections end there.
    manifest_offset: u64,
}

impl BackupReader {
    /// Opens `path` and reads its manifest; a file that is not a backup, truncated, or whose
    /// trailer does not add up is refused here.
    pub fn open(path: &Path) -> Result<BackupReader> {
        let shown = path.display().to_string();
        let not_backup = |why: &str| BackupError(format!("{shown} is not a vault backup: {why}"));
        let mut file = File::open(path).map_err(io_error(format!("cannot open {shown}")))?;
        let length = file
            .metadata()
            .map_err(io_error(format!("cannot read {shown}")))?
            .len();
        let mut magic = [0u8; 8];
        if length < MAGIC.len() as u64 + TRAILER
            || file.read_exact(&mut magic).is_err()
            || &magic != MAGIC
        {
            return Err(not_backup("it does not begin with the backup header"));
        }
        let mut trailer = [0u8; TRAILER as usize];
        file.seek(SeekFrom::End(-(TRAILER as i64)))
            .and_then(|_| file.read_exact(&mut trailer))
            .map_err(io_error(format!("cannot read {shown}")))?;
        if &trailer[8..] != END_MAGIC {
            return Err(BackupError(format!(
                "{shown} is truncated or damaged: its end marker is missing (an interrupted copy?)"
            )));
        }
        let mut offset_bytes = [0u8; 8];
        offset_bytes.copy_from_slice(&trailer[..8]);
        let manifest_offset = u64::from_be_bytes(offset_bytes);
        let damaged = |why: &str| BackupError(format!("{shown} is damaged: {why}"));
        if manifest_offset < MAGIC.len() as u64
            || manifest_offset
                .checked_add(5)
                .is_none_or(|end| end > length - TRAILER)
        {
            return Err(damaged("the manifest offset lies outside the file"));
        }
        file.seek(SeekFrom::Start(manifest_offset))
            .map_err(io_error(format!("cannot read {shown}")))?;
        let mut head = [0u8; 5];
        file.read_exact(&mut head)
            .map_err(io_error(format!("cannot read {shown}")))?;
        let manifest_length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if head[0] != b'M' || manifest_length > MAX_MANIFEST {
            return Err(damaged("no manifest where the trailer points"));
        }
        // No overflow: the offset is below the length, the rest is small.
        let expected_end =
            manifest_offset + 5 + u64::from(manifest_length) + SIGNATURE as u64 + TRAILER;
        if expected_end != length {
            return Err(damaged(&format!(
                "the manifest and signature should end the file at byte {expected_end}, the file has {length}"
            )));
        }
        let mut manifest_bytes = vec![0u8; manifest_length as usize];
        let mut signature = vec![0u8; SIGNATURE];
        file.read_exact(&mut manifest_bytes)
            .and_then(|_| file.read_exact(&mut signature))
            .map_err(io_error(format!("cannot read {shown}")))?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| damaged(&format!("its manifest does not parse: {e}")))?;
        if manifest.format != FORMAT {
            return Err(BackupError(format!(
                "{shown} is in backup format {}; this vault reads format {FORMAT}",
                manifest.format
            )));
        }
        Ok(BackupReader {
            path: path.to_owned(),
            file,
            manifest_bytes,
            signature,
            manifest,
            manifest_offset,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fails unless `kind` is what the file holds.
    pub fn expect_kind(&self, kind: BackupKind) -> Result<()> {
        if self.manifest.kind == kind {
            return Ok(());
        }
        Err(BackupError(format!(
            "{} is a {}, not a {}",
            self.path.display(),
            self.manifest.kind.name(),
            kind.name()
        )))
    }

    /// Checks the manifest's signature against `public_key` (the pinned audit key), or, with
    /// `None`, against the key the manifest names (which proves only that the file is whole).
    pub fn check_signature(&self, public_key: Option<&[u8; 32]>) -> Result<()> {
        let named = crate::audit::record::parse_public_key(&self.manifest.public_key);
        let key = match (public_key, named) {
            (Some(pinned), Some(named)) if *pinned != named => {
                return Err(BackupError(format!(
                    "{} was signed by audit key {}, not by the pinned key",
                    self.path.display(),
                    self.manifest.public_key
                )));
            }
            (Some(pinned), _) => *pinned,
            (None, Some(named)) => named,
            (None, None) => {
                return Err(BackupError(format!(
                    "{}: the manifest names no valid public key",
                    self.path.display()
                )));
            }
        };
        UnparsedPublicKey::new(&ED25519, key)
            .verify(&signed_message(&self.manifest_bytes), &self.signature)
            .map_err(|_| {
                BackupError(format!(
                    "{}: the manifest's signature does not verify (the manifest was changed)",
                    self.path.display()
                ))
            })
    }

    /// Reads every entry in order, giving each with its section's space to `each`, and checks
    /// the structure, every section's count, size and SHA-256 against the manifest. An error
    /// from `each` stops the reading.
    pub fn read_entries(
        &mut self,
        mut each: impl FnMut(Space, &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let shown = self.path.display().to_string();
        let damaged = |why: String| BackupError(format!("{shown} is damaged: {why}"));
        self.file
            .seek(SeekFrom::Start(MAGIC.len() as u64))
            .map_err(io_error(format!("cannot read {shown}")))?;
        let limit = self.manifest_offset - MAGIC.len() as u64;
        let mut input = BufReader::with_capacity(1 << 20, (&self.file).take(limit));
        let mut seen = 0usize;
        let mut tag = [0u8; 1];
        loop {
            match input.read(&mut tag) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(BackupError(format!("cannot read {shown}: {e}"))),
            }
            if tag[0] != b'F' {
                return Err(damaged(format!(
                    "unexpected byte {:#04x} between sections",
                    tag[0]
                )));
            }
            let name_length =
                read_u16(&mut input).map_err(|_| damaged("a section header is cut".into()))?;
            let name = read_bytes(&mut input, usize::from(name_length))
                .map_err(|_| damaged("a section header is cut".into()))?;
            let name = String::from_utf8_lossy(&name).into_owned();
            let Some(listed) = self.manifest.files.get(seen) else {
                return Err(damaged(format!("section {name:?} is not in the manifest")));
            };
            if listed.name != name {
                return Err(damaged(format!(
                    "section {} is {name:?}, the manifest lists {:?}",
                    seen + 1,
                    listed.name
                )));
            }
            let space = space_named(&name)
                .ok_or_else(|| damaged(format!("section {name:?} names no stored space")))?;
            let mut hash = digest::Context::new(&digest::SHA256);
            let (mut entries, mut bytes) = (0u64, 0u64);
            loop {
                let mut entry_tag = [0u8; 1];
                input
                    .read_exact(&mut entry_tag)
                    .map_err(|_| damaged(format!("section {name:?} is cut short")))?;
                if entry_tag[0] == b'Z' {
                    break;
                }
                if entry_tag[0] != b'E' {
                    return Err(damaged(format!(
                        "unexpected byte {:#04x} in section {name:?}",
                        entry_tag[0]
                    )));
                }
                let cut = || {
                    damaged(format!(
                        "entry {} of section {name:?} is cut short",
                        entries + 1
                    ))
                };
                let key_length = read_u32(&mut input).map_err(|_| cut())?;
                if key_length > MAX_KEY {
                    return Err(damaged(format!(
                        "entry {} of section {name:?} has a key of {key_length} bytes",
                        entries + 1
                    )));
                }
                let key = read_bytes(&mut input, key_length as usize).map_err(|_| cut())?;
                let value_length = read_u32(&mut input).map_err(|_| cut())?;
                if value_length > MAX_VALUE {
                    return Err(damaged(format!(
                        "entry {} of section {name:?} has a value of {value_length} bytes",
                        entries + 1
                    )));
                }
                let value = read_bytes(&mut input, value_length as usize).map_err(|_| cut())?;
                hash.update(b"E");
                hash.update(&key_length.to_be_bytes());
                hash.update(&key);
                hash.update(&value_length.to_be_bytes());
                hash.update(&value);
                entries += 1;
                bytes += 9 + u64::from(key_length) + u64::from(value_length);
                each(space, &key, &value)?;
            }
            let sha256 = sha256_hex(hash);
            if entries != listed.entries || bytes != listed.bytes || sha256 != listed.sha256 {
                return Err(damaged(format!(
                    "section {name:?} does not match the manifest: {entries} entries, {bytes} bytes, SHA-256 {sha256}; the manifest says {} entries, {} bytes, SHA-256 {}",
                    listed.entries, listed.bytes, listed.sha256
                )));
            }
            seen += 1;
        }
        if seen != self.manifest.files.len() {
            return Err(damaged(format!(
                "the manifest lists {} sections, the file holds {seen}",
                self.manifest.files.len()
            )));
        }
        Ok(())
    }
}

fn space_named(name: &str) -> Option<Space> {
    Space::ALL.into_iter().find(|space| space.name() == name)
}

fn read_u16(input: &mut impl Read) -> io::Result<u16> {
    let mut bytes = [0u8; 2];
    input.read_exact(&mut bytes)?;
    Ok(u16::from_be_bytes(bytes))
}

fn read_u32(input: &mut impl Read) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    input.read_exact(&mut bytes)?;
    Ok(u32::from_be_bytes(bytes))
}

fn read_bytes(input: &mut impl Read, length: usize) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; length];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Writes a store's snapshot into `writer`, one section per space, `PAGE` entries at a time;
/// `keep` leaves out the entries it says no to.
pub(crate) fn write_snapshot<W: Write>(
    writer: &mut BackupWriter<W>,
    snapshot: &dyn crate::storage::Snapshot,
    keep: impl Fn(Space, &[u8]) -> bool,
) -> Result<()> {
    const PAGE: usize = 4096;
    for space in Space::ALL {
        writer.begin(space.name())?;
        let mut start = Vec::new();
        loop {
            let page = snapshot
                .scan(space, &start, PAGE)
                .map_err(|e| BackupError(format!("reading the store failed: {e}")))?;
            for (key, value) in &page {
                if keep(space, key) {
                    writer.entry(key, value)?;
                }
            }
            let Some((last, _)) = page.last() else { break };
            if page.len() < PAGE {
                break;
            }
            start.clone_from(last);
            start.push(0);
        }
    }
    Ok(())
}

/// Creates `path` for writing a backup: `path` with `.partial` appended, renamed into place by
/// [`commit_file`] once whole and synced, so a crash never leaves a half file under the name.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Syncs `partial` and renames it to `path` (and syncs the directory).
pub fn commit_file(file: File, partial: &Path, path: &Path) -> Result<()> {
    file.sync_all()
        .map_err(io_error(format!("cannot sync {}", partial.display())))?;
    drop(file);
    fs::rename(partial, path).map_err(io_error(format!(
        "cannot rename {} to {}",
        partial.display(),
        path.display()
    )))?;
    crate::files::sync_parent(path).map_err(io_error(format!(
        "cannot sync the directory of {}",
        path.display()
    )))
}

/// Loads a backup's entries into `storage` in batches (each durable when written).
pub(crate) fn load_into(reader: &mut BackupReader, storage: &dyn Storage) -> Result<u64> {
    let limits = storage.batch_limits();
    let max_ops = limits.max_ops.min(8192);
    let mut batch = WriteBatch::new();
    let mut loaded = 0u64;
    let flush = |batch: &mut WriteBatch| -> Result<()> {
        let full = std::mem::take(batch);
        storage
            .write(full)
            .map_err(|e| BackupError(format!("writing the restored store failed: {e}")))
    };
    reader.read_entries(|space, key, value| {
        batch.put(space, key.to_vec(), value.to_vec());
        loaded += 1;
        if batch.ops.len() >= max_ops || batch.bytes() >= limits.max_bytes.min(8 << 20) {
            flush(&mut batch)?;
        }
        Ok(())
    })?;
    if !batch.is_empty() {
        flush(&mut batch)?;
    }
    Ok(loaded)
}
