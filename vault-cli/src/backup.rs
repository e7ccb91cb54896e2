//! `vault-cli backup ...`: take a backup from a running server, and verify, restore or show
//! backup files offline.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Instant,
};

use serde::Serialize;
use tokio_stream::StreamExt;
use vault_core::{
    audit::record::parse_public_key,
    backup::{BackupKind, BackupReader, Manifest, commit_file, partial_path},
    shamir::UnsealShare,
    stores::{DataStore, KeyStore},
    vault::{Vault, VaultConfig, backup::restore},
};
use vault_proto::v1::{self, system_client::SystemClient};

use crate::{
    Format,
    client::{CliError, CliResult, Ctx},
    input::read_share,
    output::{Show, show},
};

#[derive(clap::Subcommand, Debug)]
pub enum BackupCommand {
    /// Take a backup of the running vault (system scope): writes the data backup to --out;
    /// the key backup taken with it stays in the server's --key-backup-dir.
    Create {
        /// The file to write (it must not exist); written beside itself and renamed when whole.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Verify a backup offline: restores it into a scratch directory, checks the manifests'
    /// signatures against the pinned key and every hash, unseals the copy with shares that
    /// were in force when the key backup was taken, and opens every secret version and named
    /// key (no value is shown). Exit code 0 only if everything checks out.
    Verify {
        /// The data backup (.vbk).
        file: PathBuf,
        /// The key backup (.vkb) taken with it (the data backup's manifest names it).
        #[arg(long, value_name = "FILE")]
        key_backup: PathBuf,
        /// File holding the pinned audit public key (from `vault-cli audit public-key --out`).
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// A file holding one unseal share; repeat up to the threshold. Without it the shares
        /// are asked for at a hidden prompt.
        #[arg(long = "share-file", value_name = "FILE")]
        share_files: Vec<PathBuf>,
        /// Check signatures and hashes only: do not unseal or open anything.
        #[arg(long)]
        no_open: bool,
        /// For a backup of an auto-sealed vault: its seal, as the server was started with it.
        #[command(flatten)]
        seal: SealFlags,
        /// Where to restore the scratch copy (must not exist; removed afterwards); default: a
        /// new directory in the system's temporary directory.
        #[arg(long, value_name = "DIR")]
        scratch: Option<PathBuf>,
        /// Accept a key backup that was not taken with this data backup (a later one, say):
        /// secrets under KEK versions retired in between then fail to open.
        #[arg(long)]
        allow_unpaired: bool,
    },
    /// Restore a backup into a new data directory offline (what `vault-server --restore-from`
    /// does at start); then start the server on it and unseal.
    Restore {
        /// The data backup (.vbk).
        file: PathBuf,
        #[arg(long, value_name = "FILE")]
        key_backup: PathBuf,
        /// The new data directory (must not exist, or be empty).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// File holding the pinned audit public key; recommended.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// Accept a key backup that was not taken with this data backup.
        #[arg(long)]
        allow_unpaired: bool,
    },
    /// Print a backup file's manifest (checks its trailer, not its signature).
    Show { file: PathBuf },
}

/// The auto seal of a backup of an auto-sealed vault (the server's `--seal` settings).
#[derive(clap::Args, Debug, Default)]
pub struct SealFlags {
    /// `transit`: unwrap the copy's unseal key with the other vault's named key.
    #[arg(long, value_parser = ["transit"])]
    seal: Option<String>,
    /// The other vault, e.g. https://kms.internal:8200.
    #[arg(long, value_name = "URL", requires = "seal")]
    seal_addr: Option<String>,
    /// TENANT/NAME of the seal's named key.
    #[arg(long, value_name = "TENANT/NAME", requires = "seal")]
    seal_key: Option<String>,
    /// A file with a token that may decrypt with the key.
    #[arg(long, value_name = "FILE", requires = "seal")]
    seal_token_file: Option<PathBuf>,
    /// The other vault's CA certificate (PEM), for https://.
    #[arg(long, value_name = "FILE", requires = "seal")]
    seal_ca_file: Option<PathBuf>,
    /// DANGER, for tests: the file key the server was started with.
    #[arg(long, value_name = "FILE", conflicts_with = "seal")]
    danger_seal_key_file: Option<PathBuf>,
}

impl SealFlags {
    fn seal(&self) -> CliResult<Option<std::sync::Arc<dyn vault_core::autoseal::AutoSeal>>> {
        if let Some(path) = &self.danger_seal_key_file {
            let seal = vault_core::autoseal::FileSeal::from_file(path)
                .map_err(|e| CliError::new(e.to_string()))?;
            return Ok(Some(std::sync::Arc::new(seal)));
        }
        if self.seal.is_none() {
            return Ok(None);
        }
        let need = |flag: &str, value: &Option<String>| {
            value
                .clone()
                .ok_or_else(|| CliError::new(format!("--seal transit needs {flag}")))
        };
        let key = need("--seal-key TENANT/NAME", &self.seal_key)?;
        let Some((tenant, name)) = key.split_once('/') else {
            return Err(CliError::new("--seal-key takes TENANT/NAME"));
        };
        let seal =
            vault_client::transit::TransitSeal::start(vault_client::transit::TransitSettings {
                addr: need("--seal-addr", &self.seal_addr)?,
                tenant: tenant.to_owned(),
                key: name.to_owned(),
                token_file: self
                    .seal_token_file
                    .clone()
                    .ok_or_else(|| CliError::new("--seal transit needs --seal-token-file"))?,
                ca_file: self.seal_ca_file.clone(),
            })
            .map_err(CliError::new)?;
        Ok(Some(std::sync::Arc::new(seal)))
    }
}

pub async fn run(ctx: &Ctx, command: BackupCommand, format: Format) -> CliResult<()> {
    match command {
        BackupCommand::Create { out } => create(ctx, &out, format).await,
        BackupCommand::Verify {
            file,
            key_backup,
            public_key,
            share_files,
            no_open,
            seal,
            scratch,
            allow_unpaired,
        } => {
            let seal = seal.seal()?;
            let pinned = read_public_key(&public_key)?;
            let scratch = match scratch {
                Some(dir) => dir,
                None => std::env::temp_dir().join(format!(
                    "vault-verify-{}-{}",
                    std::process::id(),
                    vault_core::backup::new_id().map_err(|e| CliError::new(e.0))?
                )),
            };
            // Removed afterwards, so it must be this run's own.
            if scratch.symlink_metadata().is_ok() {
                return Err(CliError::new(format!(
                    "--scratch {} exists: give a directory that does not exist yet (it is removed afterwards)",
                    scratch.display()
                )));
            }
            let result = verify(
                &file,
                &key_backup,
                &pinned,
                OpenWith {
                    share_files: &share_files,
                    seal,
                },
                no_open,
                &scratch,
                allow_unpaired,
            );
            let _ = std::fs::remove_dir_all(&scratch);
            let verified = result?;
            show(&verified, format)?;
            if verified.ok {
                Ok(())
            } else {
                Err(CliError::new(format!(
                    "{} of the backup's secret versions and named keys failed to open",
                    verified.failed
                )))
            }
        }
        BackupCommand::Restore {
            file,
            key_backup,
            data_dir,
            public_key,
            allow_unpaired,
        } => {
            let pinned = public_key.as_deref().map(read_public_key).transpose()?;
            if pinned.is_none() {
                eprintln!(
                    "vault-cli: warning: without --public-key the signatures are checked against the key the files name: that proves they are whole, not that they are yours"
                );
            }
            let restored = restore(
                &file,
                &key_backup,
                &data_dir,
                pinned.as_ref(),
                allow_unpaired,
            )
            .map_err(|e| CliError::new(format!("{e}; nothing was restored")))?;
            eprintln!(
                "restored {} entries into {}; start vault-server --data-dir {} and unseal with the shares in force when the key backup was taken",
                restored.data_entries + restored.key_entries,
                data_dir.display(),
                data_dir.display()
            );
            Ok(())
        }
        BackupCommand::Show { file } => {
            let reader = BackupReader::open(&file).map_err(|e| CliError::new(e.0))?;
            show(&Shown(reader.manifest().clone()), format)
        }
    }
}

fn read_public_key(path: &Path) -> CliResult<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::new(format!("cannot read public key {}: {e}", path.display())))?;
    parse_public_key(&text).ok_or_else(|| {
        CliError::new(format!(
            "public key {}: not base64 of 32 bytes",
            path.display()
        ))
    })
}

struct Shown(Manifest);

impl Serialize for Shown {
    fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(out)
    }
}

impl Show for Shown {
    fn text(&self) -> String {
        let m = &self.0;
        let mut out = format!(
            "{} {}\ncreated:    {} on node {} ({})\npaired with: {}\naudit head: {}\n",
            m.kind.name(),
            m.id,
            m.created,
            m.node,
            m.backend,
            m.pair,
            m.audit_head.as_ref().map_or("none".to_owned(), |h| format!(
                "record {} {}",
                h.seq, h.hash
            )),
        );
        for file in &m.files {
            out.push_str(&format!(
                "section {:8} {} entries, {} bytes, sha256 {}\n",
                file.name, file.entries, file.bytes, file.sha256
            ));
        }
        if !m.purged_tenants.is_empty() {
            out.push_str(&format!(
                "purged tenants: {}\n",
                m.purged_tenants.join(", ")
            ));
        }
        out.push_str(&format!("signed by:  {}\n", m.public_key));
        out
    }
}

#[derive(Serialize)]
struct Created {
    file: PathBuf,
    id: String,
    bytes: u64,
    entries: u64,
    key_backup: String,
    seconds: f64,
}

impl Show for Created {
    fn text(&self) -> String {
        format!(
            "wrote data backup {} to {}: {} entries, {} bytes in {:.1} s; key backup {} is kept by the server\n",
            self.id,
            self.file.display(),
            self.entries,
            self.bytes,
            self.seconds,
            self.key_backup
        )
    }
}

async fn create(ctx: &Ctx, out: &Path, format: Format) -> CliResult<()> {
    if out.exists() {
        return Err(CliError::new(format!(
            "{} exists already: give a new file",
            out.display()
        )));
    }
    let started = Instant::now();
    let partial = partial_path(out);
    let _ = std::fs::remove_file(&partial);
    let mut file = vault_core::files::create_private(&partial)
        .map_err(|e| CliError::new(format!("cannot create {}: {e}", partial.display())))?;
    let received = async {
        let mut stream = call!(ctx, SystemClient::new, backup, v1::BackupRequest {}).await?;
        let mut bytes = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|s| ctx.status_error(s))?;
            bytes += chunk.data.len() as u64;
            file.write_all(&chunk.data)
                .map_err(|e| CliError::new(format!("cannot write {}: {e}", partial.display())))?;
        }
        Ok::<_, CliError>(bytes)
    }
    .await;
    let checked = received.and_then(|bytes| {
        // The whole file arrived only if its trailer and signature check out.
        let reader = BackupReader::open(&partial)
            .map_err(|e| CliError::new(format!("the backup arrived incomplete ({})", e.0)))?;
        reader
            .expect_kind(BackupKind::Data)
            .and_then(|()| reader.check_signature(None))
            .map_err(|e| CliError::new(e.0))?;
        Ok((bytes, reader.manifest().clone()))
    });
    let (bytes, manifest) = match checked {
        Ok(done) => done,
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    commit_file(file, &partial, out).map_err(|e| CliError::new(e.0))?;
    show(
        &Created {
            file: out.to_owned(),
            id: manifest.id.clone(),
            bytes,
            entries: manifest.entries(),
            key_backup: manifest.pair.clone(),
            seconds: started.elapsed().as_secs_f64(),
        },
        format,
    )
}

#[derive(Serialize)]
struct Verified {
    ok: bool,
    data_backup: String,
    key_backup: String,
    created: String,
    entries: u64,
    restore_seconds: f64,
    opened: bool,
    tenants: u64,
    secrets: u64,
    secret_versions: u64,
    named_keys: u64,
    named_key_versions: u64,
    shredded_versions: u64,
    failed: u64,
    failures: Vec<String>,
    open_seconds: f64,
}

impl Show for Verified {
    fn text(&self) -> String {
        let mut out = format!(
            "data backup {} with key backup {} (taken {})\n\
             signatures:  OK (pinned key)\n\
             hashes:      OK ({} entries restored in {:.1} s)\n",
            self.data_backup, self.key_backup, self.created, self.entries, self.restore_seconds
        );
        if !self.opened {
            out.push_str("contents:    not opened (--no-open)\n");
            return out;
        }
        out.push_str(&format!(
            "opened:      {} secret versions of {} secrets in {} tenants, {} versions of {} named keys, in {:.1} s\n",
            self.secret_versions, self.secrets, self.tenants, self.named_key_versions, self.named_keys, self.open_seconds
        ));
        if self.shredded_versions > 0 {
            out.push_str(&format!(
                "shredded:    {} versions of crypto-shredded tenants (unreadable by design)\n",
                self.shredded_versions
            ));
        }
        out.push_str(&format!("failed:      {}\n", self.failed));
        for failure in &self.failures {
            out.push_str(&format!("  {failure}\n"));
        }
        out
    }
}

/// What opens the restored copy: the auto seal it was sealed with, or shares.
struct OpenWith<'a> {
    share_files: &'a [PathBuf],
    seal: Option<std::sync::Arc<dyn vault_core::autoseal::AutoSeal>>,
}

fn verify(
    file: &Path,
    key_backup: &Path,
    pinned: &[u8; 32],
    open_with: OpenWith<'_>,
    no_open: bool,
    scratch: &Path,
    allow_unpaired: bool,
) -> CliResult<Verified> {
    let OpenWith { share_files, seal } = open_with;
    let started = Instant::now();
    let restored = restore(file, key_backup, scratch, Some(pinned), allow_unpaired)
        .map_err(|e| CliError::new(e.0))?;
    let restore_seconds = started.elapsed().as_secs_f64();
    let mut verified = Verified {
        ok: true,
        data_backup: restored.data_backup,
        key_backup: restored.key_backup,
        created: restored.created,
        entries: restored.data_entries + restored.key_entries,
        restore_seconds,
        opened: false,
        tenants: 0,
        secrets: 0,
        secret_versions: 0,
        named_keys: 0,
        named_key_versions: 0,
        shredded_versions: 0,
        failed: 0,
        failures: Vec::new(),
        open_seconds: 0.0,
    };
    if no_open {
        return Ok(verified);
    }
    let open_error = |e: vault_core::storage::StorageError| {
        CliError::new(format!("cannot open the restored copy: {e}"))
    };
    let data = DataStore::open_rocks(&scratch.join("data")).map_err(open_error)?;
    let keys = KeyStore::open_rocks(&scratch.join("keys")).map_err(open_error)?;
    let mut vault = Vault::open(data, keys, VaultConfig::default())
        .map_err(|e| CliError::new(format!("cannot open the restored copy: {e}")))?;
    if let Some(seal) = seal {
        vault = vault.with_auto_seal(seal);
        if vault.seal().status().auto_sealed() {
            vault.seal().unseal_auto().map_err(|e| {
                CliError::new(format!(
                    "unsealing the restored copy with its auto seal failed: {e}"
                ))
            })?;
        }
    }
    let mut files = share_files.iter();
    loop {
        let status = vault.seal().status();
        if !status.sealed {
            break;
        }
        let text = match files.next() {
            Some(path) => read_share(Some(path))?,
            None if share_files.is_empty() => read_share(None)?,
            None => {
                return Err(CliError::new(format!(
                    "the shares given unseal nothing yet: {} of {} submitted",
                    status.progress, status.threshold
                )));
            }
        };
        let share = UnsealShare::parse(&text)
            .map_err(|e| CliError::new(format!("a share does not parse: {e}")))?;
        vault.seal().unseal(share).map_err(|e| {
            CliError::new(format!(
                "unsealing the restored copy failed: {e} (give shares in force when the key backup was taken)"
            ))
        })?;
    }
    let opened_at = Instant::now();
    let report = vault
        .open_everything()
        .map_err(|e| CliError::new(format!("reading the restored copy failed: {e}")))?;
    verified.opened = true;
    verified.open_seconds = opened_at.elapsed().as_secs_f64();
    verified.tenants = report.tenants;
    verified.secrets = report.secrets;
    verified.secret_versions = report.secret_versions;
    verified.named_keys = report.named_keys;
    verified.named_key_versions = report.named_key_versions;
    verified.shredded_versions = report.shredded_versions;
    verified.failed = report.failed;
    verified.failures = report.failures;
    verified.ok = report.failed == 0;
    Ok(verified)
}
