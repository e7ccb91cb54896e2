//! Key lifecycle commands: `rotate --all`, `keys status|retire`, `rekey init|submit|cancel|status`,
//! `share verify`, and `tenant restore|deleted`.

use clap::Subcommand;
use serde_json::json;
use vault_core::recipient::ShareIdentity;
use vault_proto::v1::{
    self, keys_client::KeysClient, system_client::SystemClient, tenants_client::TenantsClient,
};
use zeroize::Zeroizing;

use crate::{
    Format,
    client::{CliError, CliResult, authed, connect, token},
    input::read_share,
    output::{json_string, print_json, print_rows},
};

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// KEK versions with creation time, invocation count, remaining budget and state; the
    /// re-wrap job's progress; retired versions. Without --tenant: every tenant and the root key
    /// (system scope).
    Status {
        #[arg(long, env = "VAULT_TENANT")]
        tenant: Option<String>,
    },
    /// Schedule a KEK version for retirement: its data keys are re-wrapped into the current
    /// version in the background, then it is destroyed.
    Retire {
        #[arg(long, env = "VAULT_TENANT")]
        tenant: String,
        #[arg(long)]
        version: u32,
    },
}

/// Who receives the new shares: one age public key per share, in order.
#[derive(clap::Args, Debug, Default)]
pub struct RecipientArgs {
    /// Encrypt share N to the N-th of these age public keys (age1..., as `age-keygen` or
    /// `vault-cli share keygen` print them); repeat once per share. Then nobody, the caller
    /// included, sees a share in the clear but its holder (`vault-cli share decrypt`).
    #[arg(long = "share-recipient", value_name = "AGE_RECIPIENT")]
    share_recipient: Vec<String>,
    /// A file with one age public key per line (blank lines and # comments ignored), in place
    /// of --share-recipient.
    #[arg(long, value_name = "FILE", conflicts_with = "share_recipient")]
    share_recipients_file: Option<std::path::PathBuf>,
}

impl RecipientArgs {
    pub fn read(self) -> CliResult<Vec<String>> {
        let Some(path) = self.share_recipients_file else {
            return Ok(self.share_recipient);
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            CliError::new(format!(
                "cannot read recipients file {}: {e}",
                path.display()
            ))
        })?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(str::to_owned)
            .collect())
    }
}

#[derive(Subcommand, Debug)]
pub enum RekeyCommand {
    /// Start a rekey to new shares and threshold; prints the nonce operators submit with.
    Init {
        #[arg(long, default_value_t = 5)]
        shares: u32,
        #[arg(long, default_value_t = 3)]
        threshold: u32,
        /// Also rotate the root key (when the rekey is verified): every KEK and system key is
        /// re-sealed under a new one (secret data is not touched). Needed once the root key
        /// nears its budget.
        #[arg(long)]
        rotate_root: bool,
        #[command(flatten)]
        recipients: RecipientArgs,
    },
    /// Submit one current share (hidden prompt, standard input or --share-file; never an
    /// argument). The submission that reaches the threshold stages the rekey and prints the
    /// new shares; the current shares keep working until the rekey is verified.
    Submit {
        #[arg(long)]
        nonce: String,
        #[arg(long, value_name = "FILE")]
        share_file: Option<std::path::PathBuf>,
    },
    /// Submit one NEW share to verify a staged rekey (with the verification nonce). Once a
    /// threshold of the new shares came back, the rekey is committed and the old shares stop
    /// working.
    Verify {
        #[arg(long)]
        nonce: String,
        #[arg(long, value_name = "FILE")]
        share_file: Option<std::path::PathBuf>,
    },
    /// Abandon the rekey in progress or waiting for verification; the current shares stay
    /// valid.
    Cancel,
    /// The rekey in progress or waiting for verification, if any.
    Status,
}

#[derive(Subcommand, Debug)]
pub enum ShareCommand {
    /// Tell whether a share belongs to the current share set (or a staged one), without
    /// unsealing anything.
    Verify {
        #[arg(long, value_name = "FILE")]
        share_file: Option<std::path::PathBuf>,
    },
    /// Decrypt a share (or root token) that init or rekey encrypted to you, and print it.
    /// Reads the armored age file from --in or standard input.
    Decrypt {
        /// Your age identity file (AGE-SECRET-KEY-1..., as `age-keygen` writes it).
        #[arg(long, value_name = "FILE")]
        identity: std::path::PathBuf,
        #[arg(long = "in", value_name = "FILE")]
        input: Option<std::path::PathBuf>,
    },
    /// Make an age identity for receiving shares: writes it to --out (mode 0600) and prints
    /// its public key, to give to whoever runs init or rekey.
    Keygen {
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
    },
}

pub async fn rotate(
    addr: &str,
    tenant: Option<String>,
    all: bool,
    format: Format,
) -> CliResult<()> {
    let token = token()?;
    let mut client = SystemClient::new(connect(addr).await?);
    let request = v1::RotateRequest {
        tenant: if all {
            String::new()
        } else {
            tenant.unwrap_or_default()
        },
        all,
    };
    let response = client
        .rotate(authed(request, &token)?)
        .await
        .map_err(|s| CliError::from_status(s, addr))?
        .into_inner();
    if all {
        match format {
            Format::Json => print_json(&json!({
                "rotated": response.rotated.iter().map(|r| json!({
                    "tenant": r.tenant, "key_version": r.key_version,
                })).collect::<Vec<_>>(),
            })),
            Format::Text => {
                for r in &response.rotated {
                    println!(
                        "Rotated tenant {}: key version {} seals new data.",
                        r.tenant, r.key_version
                    );
                }
                println!("{} tenants rotated.", response.rotated.len());
            }
        }
        return Ok(());
    }
    match format {
        Format::Json => {
            print_json(&json!({ "tenant": response.tenant, "key_version": response.key_version }))
        }
        Format::Text => println!(
            "Rotated tenant {}: key version {} seals new data.",
            response.tenant, response.key_version
        ),
    }
    Ok(())
}

pub async fn keys(addr: &str, command: KeysCommand, format: Format) -> CliResult<()> {
    let token = token()?;
    let mut client = KeysClient::new(connect(addr).await?);
    let status_error = |s| CliError::from_status(s, addr);
    match command {
        KeysCommand::Status { tenant } => {
            let request = v1::KeyStatusRequest {
                tenant: tenant.unwrap_or_default(),
            };
            let status = client
                .key_status(authed(request, &token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            match format {
                Format::Json => print_json(&status_json(&status)),
                Format::Text => print_status(&status),
            }
        }
        KeysCommand::Retire { tenant, version } => {
            let request = v1::RetireKeyVersionRequest {
                tenant: tenant.clone(),
                version,
            };
            client
                .retire_key_version(authed(request, &token)?)
                .await
                .map_err(status_error)?;
            match format {
                Format::Json => {
                    print_json(&json!({ "tenant": tenant, "version": version, "scheduled": true }))
                }
                Format::Text => println!(
                    "KEK version {version} of tenant {tenant} is scheduled for retirement; \
                     `vault-cli keys status --tenant {tenant}` shows the re-wrap progress."
                ),
            }
        }
    }
    Ok(())
}

fn status_json(status: &v1::KeyStatusResponse) -> serde_json::Value {
    json!({
        "budget": status.budget,
        "max_age_seconds": status.max_age_seconds,
        "max_live_versions": status.max_live_versions,
        "root": status.root.as_ref().map(|r| json!({
            "version": r.version, "invocations": r.invocations, "reserved": r.reserved,
            "remaining": r.remaining,
        })),
        "tenants": status.tenants.iter().map(|t| json!({
            "tenant": t.tenant,
            "id": t.id,
            "current_version": t.current_version,
            "versions": t.versions.iter().map(|v| json!({
                "version": v.version, "created_time": v.created_time,
                "invocations": v.invocations, "reserved": v.reserved,
                "remaining": v.remaining, "state": v.state,
            })).collect::<Vec<_>>(),
            "rewrap": t.rewrap.as_ref().map(|j| json!({
                "versions": j.versions, "started_time": j.started_time,
                "scanned": j.scanned, "rewrapped": j.rewrapped, "total": j.total,
            })),
            "retired": t.retired.iter().map(|r| json!({
                "version": r.version, "retired_time": r.retired_time, "rewrapped": r.rewrapped,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn print_status(status: &v1::KeyStatusResponse) {
    let age = match status.max_age_seconds {
        0 => "never by age".to_owned(),
        s => format!("every {s} s"),
    };
    let live = match status.max_live_versions {
        0 => "on request only".to_owned(),
        n => format!("beyond {n} live versions"),
    };
    println!(
        "Budget: {} invocations per key version; rotation {age}; retirement {live}.",
        status.budget
    );
    if let Some(root) = &status.root {
        println!(
            "Root key v{}: {} invocations, {} remaining.",
            root.version, root.invocations, root.remaining
        );
    }
    for tenant in &status.tenants {
        println!();
        println!(
            "Tenant {} (id {}): current version {}",
            tenant.tenant, tenant.id, tenant.current_version
        );
        println!(
            "  {:>7}  {:<9}  {:<30}  {:>12}  {:>12}",
            "VERSION", "STATE", "CREATED", "INVOCATIONS", "REMAINING"
        );
        for v in &tenant.versions {
            println!(
                "  {:>7}  {:<9}  {:<30}  {:>12}  {:>12}",
                v.version, v.state, v.created_time, v.invocations, v.remaining
            );
        }
        if let Some(job) = &tenant.rewrap {
            let versions: Vec<String> = job.versions.iter().map(u32::to_string).collect();
            println!(
                "  Re-wrap of versions {}: {} of {} secret versions scanned, {} data keys re-wrapped.",
                versions.join(", "),
                job.scanned,
                job.total,
                job.rewrapped
            );
        }
        for r in &tenant.retired {
            println!(
                "  Retired version {} at {} ({} data keys re-wrapped).",
                r.version, r.retired_time, r.rewrapped
            );
        }
    }
}

pub async fn rekey(addr: &str, command: RekeyCommand, format: Format) -> CliResult<()> {
    let mut client = SystemClient::new(connect(addr).await?);
    let status_error = |s| CliError::from_status(s, addr);
    match command {
        RekeyCommand::Init {
            shares,
            threshold,
            rotate_root,
            recipients,
        } => {
            let token = token()?;
            let share_recipients = recipients.read()?;
            if share_recipients.is_empty() {
                eprintln!(
                    "vault-cli: warning: the new shares will be shown in the clear to whoever \
                     submits the last current share; give --share-recipient (one age public key \
                     per new share) to hand each to its holder encrypted"
                );
            }
            let request = v1::RekeyInitRequest {
                shares,
                threshold,
                rotate_root,
                share_recipients,
            };
            let status = client
                .rekey_init(authed(request, &token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            print_rekey_status(&status, format);
        }
        RekeyCommand::Status => {
            let status = client
                .rekey_status(v1::RekeyStatusRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            print_rekey_status(&status, format);
        }
        RekeyCommand::Cancel => {
            let token = token()?;
            client
                .rekey_cancel(authed(v1::RekeyCancelRequest {}, &token)?)
                .await
                .map_err(status_error)?;
            match format {
                Format::Json => print_json(&json!({ "cancelled": true })),
                Format::Text => println!("Rekey cancelled; the current shares stay valid."),
            }
        }
        RekeyCommand::Submit { nonce, share_file } => {
            // Whoever started the rekey chose who receives the new shares: say who, so that
            // an operator can refuse to hand a share to a rekey that sends them to a stranger.
            let status = client
                .rekey_status(v1::RekeyStatusRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            if status.share_recipients.is_empty() {
                eprintln!(
                    "vault-cli: note: this rekey hands the new shares out IN THE CLEAR to whoever \
                     submits the last current share"
                );
            } else {
                eprintln!("vault-cli: note: this rekey encrypts the new shares to:");
                for (index, recipient) in status.share_recipients.iter().enumerate() {
                    eprintln!("  share {}: {recipient}", index + 1);
                }
            }
            let share = read_share(share_file.as_deref())?;
            let response = client
                .rekey_submit(v1::RekeySubmitRequest {
                    nonce,
                    share: share.as_str().to_owned(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_rekey_submit(&response, format);
        }
        RekeyCommand::Verify { nonce, share_file } => {
            let share = read_share(share_file.as_deref())?;
            let response = client
                .rekey_verify(v1::RekeyVerifyRequest {
                    nonce,
                    share: share.as_str().to_owned(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            match format {
                Format::Json => print_json(&json!({
                    "complete": response.complete, "progress": response.progress,
                    "required": response.required,
                })),
                Format::Text if response.complete => println!(
                    "Rekey verified and committed: only the new shares unseal the vault now."
                ),
                Format::Text => println!(
                    "New share accepted: {}/{} verified. The current shares stay in force until \
                     the rest are verified.",
                    response.progress, response.required
                ),
            }
        }
    }
    Ok(())
}

fn recipients_text(recipients: &[String]) -> String {
    if recipients.is_empty() {
        "in the clear, to whoever submits the last current share".to_owned()
    } else {
        recipients.join(", ")
    }
}

/// Prints shares as an answer carries them: one line each, or an armored age block each.
pub fn print_shares(shares: &[String], encrypted: bool, label: &str) {
    for (index, share) in shares.iter().enumerate() {
        if encrypted {
            println!(
                "{label} {} (encrypted to recipient {}; `vault-cli share decrypt` opens it):",
                index + 1,
                index + 1
            );
            println!("{}", share.trim_end());
        } else {
            println!("{label} {}: {share}", index + 1);
        }
    }
}

fn print_rekey_status(status: &v1::RekeyStatusResponse, format: Format) {
    match format {
        Format::Json => print_json(&json!({
            "started": status.started, "nonce": status.nonce, "shares": status.shares,
            "threshold": status.threshold, "progress": status.progress,
            "required": status.required, "started_time": status.started_time,
            "rotate_root": status.rotate_root,
            "verification_pending": status.verification_pending,
            "verification_nonce": status.verification_nonce,
            "verification_progress": status.verification_progress,
            "verification_required": status.verification_required,
            "share_recipients": status.share_recipients,
        })),
        Format::Text if !status.started => println!("No rekey in progress."),
        Format::Text if status.verification_pending => {
            print_rows(&[
                ("Verification nonce", status.verification_nonce.clone()),
                ("New shares", status.shares.to_string()),
                ("New threshold", status.threshold.to_string()),
                (
                    "Verified",
                    format!(
                        "{}/{}",
                        status.verification_progress, status.verification_required
                    ),
                ),
                ("Started", status.started_time.clone()),
                ("Rotates root key", status.rotate_root.to_string()),
                (
                    "New shares went to",
                    recipients_text(&status.share_recipients),
                ),
            ]);
            println!();
            println!(
                "The new shares were handed out; the current shares stay in force until {} \
                 holders of new shares run `vault-cli rekey verify --nonce {}`.",
                status.verification_required, status.verification_nonce
            );
        }
        Format::Text => {
            print_rows(&[
                ("Nonce", status.nonce.clone()),
                ("New shares", status.shares.to_string()),
                ("New threshold", status.threshold.to_string()),
                (
                    "Progress",
                    format!("{}/{}", status.progress, status.required),
                ),
                ("Started", status.started_time.clone()),
                ("Rotates root key", status.rotate_root.to_string()),
                (
                    "New shares go to",
                    recipients_text(&status.share_recipients),
                ),
            ]);
            println!();
            println!(
                "Each operator now runs `vault-cli rekey submit --nonce {}` with one current share.",
                status.nonce
            );
        }
    }
}

fn print_rekey_submit(response: &v1::RekeySubmitResponse, format: Format) {
    let staged = !response.verification_nonce.is_empty();
    match format {
        Format::Json => {
            // Built by hand into a zeroizing buffer rather than through a serde value.
            let mut out = Zeroizing::new(format!(
                "{{\"complete\":{},\"staged\":{staged},\"progress\":{},\"required\":{},\"threshold\":{},\"shares_encrypted\":{},\"verification_nonce\":{},\"shares\":[",
                response.complete,
                response.progress,
                response.required,
                response.threshold,
                response.shares_encrypted,
                json_string(&response.verification_nonce).as_str()
            ));
            for (index, share) in response.shares.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&json_string(share));
            }
            out.push_str("]}");
            println!("{}", out.as_str());
        }
        Format::Text if !staged => println!(
            "Share accepted: {}/{} submitted.",
            response.progress, response.required
        ),
        Format::Text => {
            print_shares(
                &response.shares,
                response.shares_encrypted,
                "New unseal share",
            );
            println!();
            println!(
                "Rekey staged. The CURRENT shares still unseal the vault: the new ones take over \
                 only once {} of these {} holders have run `vault-cli rekey verify --nonce {}` \
                 with their new share. Give each share to a different operator; they are shown \
                 only now.",
                response.threshold,
                response.shares.len(),
                response.verification_nonce
            );
        }
    }
}

pub async fn share(addr: &str, command: ShareCommand, format: Format) -> CliResult<()> {
    let share_file = match command {
        ShareCommand::Verify { share_file } => share_file,
        ShareCommand::Decrypt { identity, input } => {
            return decrypt_share(&identity, input.as_deref());
        }
        ShareCommand::Keygen { out } => return keygen(&out, format),
    };
    let share = read_share(share_file.as_deref())?;
    let mut client = SystemClient::new(connect(addr).await?);
    let result = client
        .verify_share(v1::VerifyShareRequest {
            share: share.as_str().to_owned(),
        })
        .await
        .map_err(|s| CliError::from_status(s, addr))?
        .into_inner()
        .result;
    match format {
        Format::Json => print_json(&json!({ "result": result, "current": result == "current" })),
        Format::Text => match result.as_str() {
            "current" => println!("The share belongs to the current share set."),
            "staged" => println!(
                "The share is one of the new shares of a rekey waiting for verification \
                 (`vault-cli rekey verify`); it does not unseal the vault yet."
            ),
            "not-current" => println!(
                "The share does NOT belong to the current share set (an old share from before a \
                 rekey, a mistyped one, or another vault's)."
            ),
            _ => println!(
                "Unknown: this vault was initialized before share commitments were kept; a rekey \
                 adds them."
            ),
        },
    }
    if result == "not-current" {
        return Err(CliError::new(
            "the share is not part of the current share set",
        ));
    }
    Ok(())
}

/// `vault-cli share decrypt`: prints the share (or token) an age file holds for `identity`.
fn decrypt_share(identity: &std::path::Path, input: Option<&std::path::Path>) -> CliResult<()> {
    let identity_text = Zeroizing::new(std::fs::read_to_string(identity).map_err(|e| {
        CliError::new(format!(
            "cannot read identity file {}: {e}",
            identity.display()
        ))
    })?);
    let identity = ShareIdentity::parse_file(&identity_text).map_err(CliError::from_core)?;
    let armored = match input {
        Some(path) => std::fs::read(path)
            .map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))?,
        None => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).map_err(|e| {
                CliError::new(format!("cannot read the share from standard input: {e}"))
            })?;
            bytes
        }
    };
    let plaintext = identity.decrypt(&armored).map_err(CliError::from_core)?;
    let text = std::str::from_utf8(&plaintext)
        .map_err(|_| CliError::new("share: the decrypted file is not a share"))?;
    println!("{text}");
    Ok(())
}

/// `vault-cli share keygen`: a new identity, written only to `out`.
fn keygen(out: &std::path::Path, format: Format) -> CliResult<()> {
    let identity = ShareIdentity::generate();
    let recipient = identity.recipient().to_string();
    let contents = Zeroizing::new(format!(
        "# vault-cli share keygen\n# public key: {recipient}\n{}\n",
        identity.expose_secret().as_str()
    ));
    vault_core::files::write_private(out, contents.as_bytes())
        .map_err(|e| CliError::new(format!("cannot write identity file {}: {e}", out.display())))?;
    match format {
        Format::Json => print_json(&json!({ "recipient": recipient, "identity_file": out })),
        Format::Text => println!("{recipient}"),
    }
    Ok(())
}

pub async fn restore(
    addr: &str,
    name: String,
    id: Option<String>,
    format: Format,
) -> CliResult<()> {
    let token = token()?;
    let mut client = TenantsClient::new(connect(addr).await?);
    let request = v1::RestoreTenantRequest {
        name,
        id: id.unwrap_or_default(),
    };
    let tenant = client
        .restore_tenant(authed(request, &token)?)
        .await
        .map_err(|s| CliError::from_status(s, addr))?
        .into_inner()
        .tenant
        .unwrap_or_default();
    match format {
        Format::Json => {
            print_json(&json!({ "name": tenant.name, "id": tenant.id, "restored": true }))
        }
        Format::Text => println!(
            "Restored tenant {} (id {}); its keys will not be destroyed.",
            tenant.name, tenant.id
        ),
    }
    Ok(())
}

pub async fn deleted(addr: &str, format: Format) -> CliResult<()> {
    let token = token()?;
    let mut client = TenantsClient::new(connect(addr).await?);
    let tenants = client
        .list_deleted_tenants(authed(v1::ListDeletedTenantsRequest {}, &token)?)
        .await
        .map_err(|s| CliError::from_status(s, addr))?
        .into_inner()
        .tenants;
    match format {
        Format::Json => print_json(&json!({
            "tenants": tenants.iter().map(|t| json!({
                "name": t.name, "id": t.id, "deleted_time": t.deleted_time,
                "shred_after": t.shred_after,
            })).collect::<Vec<_>>(),
        })),
        Format::Text => {
            for t in &tenants {
                println!(
                    "{} (id {}): deleted {}, keys destroyed after {}",
                    t.name, t.id, t.deleted_time, t.shred_after
                );
            }
        }
    }
    Ok(())
}
