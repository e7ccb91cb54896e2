//! Backups on the server: the `System/Backup` stream, scheduled backups with retention, and
//! restoring at start-up (`--restore-from`).
//!
//! One backup at a time per server ([`Running`]): a second, by a caller or the schedule, is
//! refused RESOURCE_EXHAUSTED. A backup holds a storage snapshot while it streams, so a client
//! that reads slowly keeps old data files from being compacted away for that long; the stream
//! ends with the client.

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc;
use tonic::{Code, Status};
use vault_core::{
    audit::writer::{AuditLog, system_entry},
    backup::{BackupError, BackupKind},
    vault::{
        Vault,
        backup::{BackupTaken, RESTORED_NOTE, Restored, kept_backups},
    },
};
use vault_proto::v1::BackupChunk;

use crate::{ClusterHandle, is_active, metrics};

/// Bytes per streamed message.
const CHUNK: usize = 1 << 20;
/// A client that takes no chunk for this long is dropped (the backup fails and lets go of its
/// snapshot and of the one-at-a-time place).
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest --backup-interval.
const MAX_INTERVAL: Duration = Duration::from_secs(366 * 86_400);

static RUNNING: AtomicBool = AtomicBool::new(false);

/// The one backup running on this server; dropped when it ends.
pub struct Running(());

impl Running {
    pub fn take() -> Result<Running, Status> {
        if RUNNING.swap(true, Ordering::AcqRel) {
            return Err(crate::status::status(
                Code::ResourceExhausted,
                vault_proto::reason::LIMIT_REACHED,
                "a backup is being taken on this server already; try again when it is done",
            ));
        }
        Ok(Running(()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// `--backup-interval`: a number with s, m, h or d.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: give s, m, h or d (e.g. 24h)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not begin with a number (e.g. 24h)"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unit {other:?} is not s, m, h or d")),
    };
    if number == 0 {
        return Err("the interval must be longer than 0".into());
    }
    let interval = Duration::from_secs(number.saturating_mul(seconds));
    if interval > MAX_INTERVAL {
        return Err("the interval must be at most 366d".into());
    }
    Ok(interval)
}

/// Sends what is written to it as [`BackupChunk`]s, holding back the last bytes until
/// [`ChannelWriter::finish`]: a client that has the whole file knows its record is written.
struct ChannelWriter {
    sender: mpsc::Sender<Result<BackupChunk, Status>>,
    buffer: Vec<u8>,
    runtime: tokio::runtime::Handle,
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        while self.buffer.len() > CHUNK {
            let rest = self.buffer.split_off(CHUNK);
            let data = std::mem::replace(&mut self.buffer, rest);
            self.runtime
                .block_on(
                    self.sender
                        .send_timeout(Ok(BackupChunk { data }), SEND_TIMEOUT),
                )
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the client went away or stopped reading",
                    )
                })?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ChannelWriter {
    fn finish(self) {
        let _ = self.runtime.block_on(
            self.sender
                .send_timeout(Ok(BackupChunk { data: self.buffer }), SEND_TIMEOUT),
        );
    }
}

/// What a failed backup says in the server log and its audit record: the error and, for a
/// storage or file error, its detail (paths, never values).
fn failure_detail(e: &vault_core::Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

/// The audit record of a backup that failed (the call's own record was written when the
/// stream began).
fn record_failed(audit: Option<&AuditLog>, why: &str) {
    let Some(audit) = audit else { return };
    let mut entry = system_entry(format!("backup failed: {why}"));
    entry.method = "backup".into();
    entry.outcome = "error".into();
    if let Err(e) = audit.append(entry) {
        tracing::error!(error = %e, "cannot record the failed backup");
    }
}

/// The audit record of a backup taken (by a caller: its call record says who; here what).
fn record_taken(audit: Option<&AuditLog>, taken: &BackupTaken, to: &str) -> Result<(), String> {
    let Some(audit) = audit else { return Ok(()) };
    let mut entry = system_entry(format!(
        "backup taken: data backup {} ({} entries{}) and key backup {} ({} entries, {}) at audit record {}",
        taken.data.id,
        taken.data.entries(),
        to,
        taken.keys.id,
        taken.keys.entries(),
        taken.key_path.display(),
        taken.data.audit_head.as_ref().map_or(0, |h| h.seq),
    ));
    entry.method = "backup".into();
    audit
        .append(entry)
        .map(|_| ())
        .map_err(|e| format!("cannot record the backup: {e}"))
}

/// Streams a data backup to a caller (already authorized: `System/Backup` is system scope,
/// checked again by the vault).
pub fn stream(
    vault: Arc<Vault>,
    caller: vault_core::vault::Caller,
    node: String,
    keep: usize,
    running: Running,
) -> mpsc::Receiver<Result<BackupChunk, Status>> {
    let (sender, receiver) = mpsc::channel(4);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _running = running;
        let mut writer = ChannelWriter {
            sender: sender.clone(),
            buffer: Vec::with_capacity(CHUNK * 2),
            runtime: runtime.clone(),
        };
        let result = vault
            .create_backup(&caller, &node, &mut writer)
            .map_err(|e| {
                let detail = failure_detail(&e);
                tracing::error!(detail = %detail, "backup failed");
                record_failed(vault.audit().map(|a| &**a), &detail);
                crate::status::to_status(e)
            })
            .and_then(|taken| {
                record_taken(
                    vault.audit().map(|a| &**a),
                    &taken,
                    ", streamed to the caller",
                )
                .map_err(|e| {
                    tracing::error!(error = %e, "backup not recorded");
                    crate::status::status(
                        Code::Unavailable,
                        vault_proto::reason::AUDIT_UNAVAILABLE,
                        "the backup could not be recorded in the audit log",
                    )
                })
            });
        metrics::metrics().backup_done(result.is_ok());
        match result {
            Ok(()) => {
                writer.finish();
                if let Err(e) = vault.prune_key_backups(keep) {
                    tracing::error!(error = %e, "cannot prune the key backups");
                }
            }
            Err(status) => {
                let _ = runtime.block_on(sender.send_timeout(Err(status), SEND_TIMEOUT));
            }
        }
    });
    receiver
}

/// What the scheduled backups need.
pub struct Schedule {
    pub dir: PathBuf,
    pub interval: Duration,
    pub keep: usize,
    pub node: String,
}

/// Takes a backup every interval on the active, unsealed node, keeping the newest `keep` data
/// backups in `dir` and as many key backups.
pub async fn scheduled(vault: Arc<Vault>, schedule: Schedule, cluster: ClusterHandle) {
    let schedule = Arc::new(schedule);
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + schedule.interval,
        schedule.interval,
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !is_active(&cluster) || vault.seal().status().sealed {
            continue;
        }
        let Ok(running) = Running::take() else {
            tracing::warn!("scheduled backup skipped: another backup is running");
            continue;
        };
        let (vault, schedule) = (Arc::clone(&vault), Arc::clone(&schedule));
        let outcome = tokio::task::spawn_blocking(move || {
            let _running = running;
            let result = take_into(&vault, &schedule);
            metrics::metrics().backup_done(result.is_ok());
            result
        })
        .await;
        match outcome {
            Ok(Ok(path)) => tracing::info!(path = %path.display(), "scheduled backup taken"),
            Ok(Err(e)) => tracing::error!(error = %e, "scheduled backup failed"),
            Err(e) => tracing::error!(error = %e, "scheduled backup panicked"),
        }
    }
}

/// One scheduled backup: `dir/vault-<time>-<id>.vbk`, written beside itself and renamed when
/// whole; then retention.
fn take_into(vault: &Vault, schedule: &Schedule) -> Result<PathBuf, String> {
    let dir = &schedule.dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let partial = dir.join(format!(
        ".vault-backup-{}.partial",
        vault_core::backup::new_id().map_err(|e| e.0)?
    ));
    let mut file = vault_core::files::create_private(&partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let taken = match vault.take_backup(&schedule.node, &mut file) {
        Ok(taken) => taken,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            let why = failure_detail(&e);
            record_failed(vault.audit().map(|a| &**a), &why);
            return Err(why);
        }
    };
    let stamp = vault_core::backup::file_stamp(taken.data.created_unix_nanos);
    let path = dir.join(format!("vault-{stamp}-{}.vbk", taken.data.id));
    if let Err(e) = vault_core::backup::commit_file(file, &partial, &path) {
        let _ = std::fs::remove_file(&partial);
        return Err(e.0);
    }
    record_taken(
        vault.audit().map(|a| &**a),
        &taken,
        &format!(", {}", path.display()),
    )?;
    prune(dir, schedule.keep).map_err(|e| e.0)?;
    vault
        .prune_key_backups(schedule.keep)
        .map_err(|e| format!("cannot prune the key backups: {e}"))?;
    Ok(path)
}

/// Removes the oldest scheduled data backups (`vault-*.vbk`) in `dir` beyond the newest
/// `keep`; other files are the operator's.
fn prune(dir: &Path, keep: usize) -> Result<usize, BackupError> {
    let paths: Vec<PathBuf> = kept_backups(dir, BackupKind::Data)?
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vault-"))
        })
        .collect();
    vault_core::backup::remove_oldest(&paths, keep)
}

/// `--restore-from`: restores into the data directory before the stores are opened.
pub fn restore_at_start(
    data_file: &Path,
    key_file: &Path,
    public_key_file: Option<&Path>,
    data_dir: &Path,
) -> Result<(), String> {
    let pinned = public_key_file
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--restore-public-key {}: {e}", path.display()))?;
            vault_core::audit::record::parse_public_key(&text).ok_or_else(|| {
                format!(
                    "--restore-public-key {}: not base64 of 32 bytes",
                    path.display()
                )
            })
        })
        .transpose()?;
    if pinned.is_none() {
        tracing::warn!(
            "--restore-from without --restore-public-key: the backups' signatures are checked \
             against the key they name, which proves they are whole, not that they are yours"
        );
    }
    let restored =
        vault_core::vault::backup::restore(data_file, key_file, data_dir, pinned.as_ref(), false)
            .map_err(|e| format!("--restore-from: {e}; nothing was restored"))?;
    tracing::info!(
        data_backup = %restored.data_backup,
        key_backup = %restored.key_backup,
        entries = restored.data_entries + restored.key_entries,
        dir = %data_dir.display(),
        "restored; unseal with the shares in force when the key backup was taken"
    );
    Ok(())
}

/// After a restore, the new audit log's first record says what was restored (with the backup's
/// audit head, so the old log and the new one can be tied together); then the note goes.
pub fn record_restore(data_dir: &Path, audit: Option<&AuditLog>) -> Result<(), String> {
    let note_path = data_dir.join(RESTORED_NOTE);
    let bytes = match std::fs::read(&note_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", note_path.display())),
    };
    let note: Restored = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} does not parse: {e}", note_path.display()))?;
    if let Some(audit) = audit {
        let mut entry = system_entry(format!(
            "restored from data backup {} and key backup {}, taken {} on node {} at audit record {} (hash {}); {} entries",
            note.data_backup,
            note.key_backup,
            note.created,
            note.node,
            note.audit_head.as_ref().map_or(0, |h| h.seq),
            note.audit_head.as_ref().map_or("none", |h| h.hash.as_str()),
            note.data_entries + note.key_entries,
        ));
        entry.method = "restore".into();
        audit
            .append(entry)
            .map_err(|e| format!("cannot record the restore: {e}"))?;
    }
    std::fs::remove_file(&note_path)
        .map_err(|e| format!("cannot remove {}: {e}", note_path.display()))?;
    Ok(())
}
