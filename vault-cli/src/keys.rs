//! Key lifecycle commands: `rotate [--all]`, `kek status|retire`,
//! `rekey init|submit|verify|cancel|status` and `share verify|decrypt|keygen`.

use clap::Subcommand;
use serde::Serialize;
use tonic::transport::Channel;
use vault_core::recipient::ShareIdentity;
use vault_proto::v1::{self, keys_client::KeysClient, system_client::SystemClient};
use zeroize::Zeroizing;

use crate::{
    Format,
    client::{CliError, CliResult, Ctx},
    input::read_share,
    output::{Show, rows_text, show},
};

#[derive(clap::Args, Debug)]
pub struct RotateArgs {
    #[arg(long, env = "VAULT_TENANT", required_unless_present = "all")]
    pub tenant: Option<String>,
    /// Rotate every tenant's KEK (system scope).
    #[arg(long)]
    pub all: bool,
}

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

#[derive(Serialize)]
struct Rotated {
    tenant: String,
    key_version: u32,
}

impl Show for Rotated {
    fn text(&self) -> String {
        format!(
            "Rotated tenant {}: key version {} seals new data.\n",
            self.tenant, self.key_version
        )
    }
}

/// `rotate --all`.
#[derive(Serialize)]
struct RotatedAll {
    rotated: Vec<Rotated>,
}

impl Show for RotatedAll {
    fn text(&self) -> String {
        let mut out: String = self.rotated.iter().map(Rotated::text).collect();
        out.push_str(&format!("{} tenants rotated.\n", self.rotated.len()));
        out
    }
}

pub async fn rotate(ctx: &Ctx, tenant: Option<String>, all: bool, format: Format) -> CliResult<()> {
    let request = v1::RotateRequest {
        tenant: if all {
            String::new()
        } else {
            tenant.unwrap_or_default()
        },
        all,
    };
    let response = call!(ctx, SystemClient::new, rotate, request).await?;
    if all {
        let rotated = response
            .rotated
            .into_iter()
            .map(|r| Rotated {
                tenant: r.tenant,
                key_version: r.key_version,
            })
            .collect();
        return show(&RotatedAll { rotated }, format);
    }
    show(
        &Rotated {
            tenant: response.tenant,
            key_version: response.key_version,
        },
        format,
    )
}

#[derive(Serialize)]
struct Scheduled {
    tenant: String,
    version: u32,
    scheduled: bool,
}

impl Show for Scheduled {
    fn text(&self) -> String {
        format!(
            "KEK version {version} of tenant {tenant} is scheduled for retirement; \
             `vault-cli keys status --tenant {tenant}` shows the re-wrap progress.\n",
            version = self.version,
            tenant = self.tenant
        )
    }
}

pub async fn keys(ctx: &Ctx, command: KeysCommand, format: Format) -> CliResult<()> {
    let new = KeysClient::new;
    match command {
        KeysCommand::Status { tenant } => {
            let request = v1::KeyStatusRequest {
                tenant: tenant.unwrap_or_default(),
            };
            let status = call!(ctx, new, key_status, request).await?;
            show(&KekStatus::from(status), format)
        }
        KeysCommand::Retire { tenant, version } => {
            let request = v1::RetireKeyVersionRequest {
                tenant: tenant.clone(),
                version,
            };
            call!(ctx, new, retire_key_version, request).await?;
            let scheduled = Scheduled {
                tenant,
                version,
                scheduled: true,
            };
            show(&scheduled, format)
        }
    }
}

/// `kek status`: the budget and rotation settings, the root key and each tenant's KEK versions.
#[derive(Serialize)]
struct KekStatus {
    budget: u64,
    max_age_seconds: u64,
    max_live_versions: u32,
    root: Option<RootKey>,
    tenants: Vec<TenantKeys>,
}

#[derive(Serialize)]
struct RootKey {
    version: u32,
    invocations: u64,
    reserved: u64,
    remaining: u64,
}

#[derive(Serialize)]
struct TenantKeys {
    tenant: String,
    id: String,
    current_version: u32,
    versions: Vec<KekVersion>,
    rewrap: Option<Rewrap>,
    retired: Vec<Retired>,
}

#[derive(Serialize)]
struct KekVersion {
    version: u32,
    created_time: String,
    invocations: u64,
    reserved: u64,
    remaining: u64,
    state: String,
}

#[derive(Serialize)]
struct Rewrap {
    versions: Vec<u32>,
    started_time: String,
    scanned: u64,
    rewrapped: u64,
    total: u64,
}

#[derive(Serialize)]
struct Retired {
    version: u32,
    retired_time: String,
    rewrapped: u64,
}

impl From<v1::KeyStatusResponse> for KekStatus {
    fn from(status: v1::KeyStatusResponse) -> Self {
        KekStatus {
            budget: status.budget,
            max_age_seconds: status.max_age_seconds,
            max_live_versions: status.max_live_versions,
            root: status.root.map(|r| RootKey {
                version: r.version,
                invocations: r.invocations,
                reserved: r.reserved,
                remaining: r.remaining,
            }),
            tenants: status.tenants.into_iter().map(TenantKeys::from).collect(),
        }
    }
}

impl From<v1::TenantKeys> for TenantKeys {
    fn from(t: v1::TenantKeys) -> Self {
        TenantKeys {
            tenant: t.tenant,
            id: t.id,
            current_version: t.current_version,
            versions: t
                .versions
                .into_iter()
                .map(|v| KekVersion {
                    version: v.version,
                    created_time: v.created_time,
                    invocations: v.invocations,
                    reserved: v.reserved,
                    remaining: v.remaining,
                    state: v.state,
                })
                .collect(),
            rewrap: t.rewrap.map(|j| Rewrap {
                versions: j.versions,
                started_time: j.started_time,
                scanned: j.scanned,
                rewrapped: j.rewrapped,
                total: j.total,
            }),
            retired: t
                .retired
                .into_iter()
                .map(|r| Retired {
                    version: r.version,
                    retired_time: r.retired_time,
                    rewrapped: r.rewrapped,
                })
                .collect(),
        }
    }
}

impl Show for KekStatus {
    fn text(&self) -> String {
        let age = match self.max_age_seconds {
            0 => "never by age".to_owned(),
            s => format!("every {s} s"),
        };
        let live = match self.max_live_versions {
            0 => "on request only".to_owned(),
            n => format!("beyond {n} live versions"),
        };
        let mut out = format!(
            "Budget: {} invocations per key version; rotation {age}; retirement {live}.\n",
            self.budget
        );
        if let Some(root) = &self.root {
            out.push_str(&format!(
                "Root key v{}: {} invocations, {} remaining.\n",
                root.version, root.invocations, root.remaining
            ));
        }
        for tenant in &self.tenants {
            out.push_str(&format!(
                "\nTenant {} (id {}): current version {}\n",
                tenant.tenant, tenant.id, tenant.current_version
            ));
            out.push_str(&format!(
                "  {:>7}  {:<9}  {:<30}  {:>12}  {:>12}\n",
                "VERSION", "STATE", "CREATED", "INVOCATIONS", "REMAINING"
            ));
            for v in &tenant.versions {
                out.push_str(&format!(
                    "  {:>7}  {:<9}  {:<30}  {:>12}  {:>12}\n",
                    v.version, v.state, v.created_time, v.invocations, v.remaining
                ));
            }
            if let Some(job) = &tenant.rewrap {
                let versions: Vec<String> = job.versions.iter().map(u32::to_string).collect();
                out.push_str(&format!(
                    "  Re-wrap of versions {}: {} of {} secret versions scanned, {} data keys \
                     re-wrapped.\n",
                    versions.join(", "),
                    job.scanned,
                    job.total,
                    job.rewrapped
                ));
            }
            for r in &tenant.retired {
                out.push_str(&format!(
                    "  Retired version {} at {} ({} data keys re-wrapped).\n",
                    r.version, r.retired_time, r.rewrapped
                ));
            }
        }
        out
    }
}

#[derive(Serialize)]
struct Cancelled {
    cancelled: bool,
}

impl Show for Cancelled {
    fn text(&self) -> String {
        "Rekey cancelled; the current shares stay valid.\n".to_owned()
    }
}

#[derive(Serialize)]
struct Verified {
    complete: bool,
    progress: u32,
    required: u32,
}

impl Show for Verified {
    fn text(&self) -> String {
        if self.complete {
            "Rekey verified and committed: only the new shares unseal the vault now.\n".to_owned()
        } else {
            format!(
                "New share accepted: {}/{} verified. The current shares stay in force until the \
                 rest are verified.\n",
                self.progress, self.required
            )
        }
    }
}

pub async fn rekey(ctx: &Ctx, command: RekeyCommand, format: Format) -> CliResult<()> {
    match command {
        RekeyCommand::Init {
            shares,
            threshold,
            rotate_root,
            recipients,
        } => {
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
            let status = call!(ctx, SystemClient::new, rekey_init, request).await?;
            show(&RekeyStatus::from(status), format)
        }
        RekeyCommand::Status => {
            let status = rekey_status(ctx, &mut system(ctx).await?).await?;
            show(&RekeyStatus::from(status), format)
        }
        RekeyCommand::Cancel => {
            call!(
                ctx,
                SystemClient::new,
                rekey_cancel,
                v1::RekeyCancelRequest {}
            )
            .await?;
            show(&Cancelled { cancelled: true }, format)
        }
        RekeyCommand::Submit { nonce, share_file } => {
            let mut client = system(ctx).await?;
            // Whoever started the rekey chose who receives the new shares: say who, so that
            // an operator can refuse to hand a share to a rekey that sends them to a stranger.
            let status = rekey_status(ctx, &mut client).await?;
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
                .map_err(|s| ctx.status_error(s))?
                .into_inner();
            show(&RekeySubmitted::from(&response), format)
        }
        RekeyCommand::Verify { nonce, share_file } => {
            let mut client = system(ctx).await?;
            let share = read_share(share_file.as_deref())?;
            let response = client
                .rekey_verify(v1::RekeyVerifyRequest {
                    nonce,
                    share: share.as_str().to_owned(),
                })
                .await
                .map_err(|s| ctx.status_error(s))?
                .into_inner();
            let verified = Verified {
                complete: response.complete,
                progress: response.progress,
                required: response.required,
            };
            show(&verified, format)
        }
    }
}

/// A client for the unauthenticated seal calls (rekey submit and verify, share verify: a share
/// is the credential).
async fn system(ctx: &Ctx) -> CliResult<SystemClient<Channel>> {
    Ok(SystemClient::new(ctx.connect().await?))
}

async fn rekey_status(
    ctx: &Ctx,
    client: &mut SystemClient<Channel>,
) -> CliResult<v1::RekeyStatusResponse> {
    client
        .rekey_status(v1::RekeyStatusRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| ctx.status_error(s))
}

fn recipients_text(recipients: &[String]) -> String {
    if recipients.is_empty() {
        "in the clear, to whoever submits the last current share".to_owned()
    } else {
        recipients.join(", ")
    }
}

/// Shares as an answer carries them: one line each, or an armored age block each, in a buffer
/// that zeroizes on drop.
pub fn shares_text(shares: &[String], encrypted: bool, label: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::new());
    for (index, share) in shares.iter().enumerate() {
        if encrypted {
            out.push_str(&format!(
                "{label} {} (encrypted to recipient {}; `vault-cli share decrypt` opens it):\n",
                index + 1,
                index + 1
            ));
            out.push_str(share.trim_end());
            out.push('\n');
        } else {
            out.push_str(&format!("{label} {}: ", index + 1));
            out.push_str(share);
            out.push('\n');
        }
    }
    out
}

/// The rekey in progress, as `rekey init` and `rekey status` print it.
#[derive(Serialize)]
struct RekeyStatus {
    started: bool,
    nonce: String,
    shares: u32,
    threshold: u32,
    progress: u32,
    required: u32,
    started_time: String,
    rotate_root: bool,
    verification_pending: bool,
    verification_nonce: String,
    verification_progress: u32,
    verification_required: u32,
    share_recipients: Vec<String>,
}

impl From<v1::RekeyStatusResponse> for RekeyStatus {
    fn from(status: v1::RekeyStatusResponse) -> Self {
        RekeyStatus {
            started: status.started,
            nonce: status.nonce,
            shares: status.shares,
            threshold: status.threshold,
            progress: status.progress,
            required: status.required,
            started_time: status.started_time,
            rotate_root: status.rotate_root,
            verification_pending: status.verification_pending,
            verification_nonce: status.verification_nonce,
            verification_progress: status.verification_progress,
            verification_required: status.verification_required,
            share_recipients: status.share_recipients,
        }
    }
}

impl Show for RekeyStatus {
    fn text(&self) -> String {
        if !self.started {
            return "No rekey in progress.\n".to_owned();
        }
        let (first, progress, recipients, next) = if self.verification_pending {
            (
                ("Verification nonce", self.verification_nonce.clone()),
                (
                    "Verified",
                    format!(
                        "{}/{}",
                        self.verification_progress, self.verification_required
                    ),
                ),
                "New shares went to",
                format!(
                    "The new shares were handed out; the current shares stay in force until {} \
                     holders of new shares run `vault-cli rekey verify --nonce {}`.",
                    self.verification_required, self.verification_nonce
                ),
            )
        } else {
            (
                ("Nonce", self.nonce.clone()),
                ("Progress", format!("{}/{}", self.progress, self.required)),
                "New shares go to",
                format!(
                    "Each operator now runs `vault-cli rekey submit --nonce {}` with one current \
                     share.",
                    self.nonce
                ),
            )
        };
        let mut out = rows_text(&[
            first,
            ("New shares", self.shares.to_string()),
            ("New threshold", self.threshold.to_string()),
            progress,
            ("Started", self.started_time.clone()),
            ("Rotates root key", self.rotate_root.to_string()),
            (recipients, recipients_text(&self.share_recipients)),
        ]);
        out.push('\n');
        out.push_str(&next);
        out.push('\n');
        out
    }
}

/// A rekey submission; the one that stages the rekey carries the new shares, once.
#[derive(Serialize)]
struct RekeySubmitted<'a> {
    complete: bool,
    staged: bool,
    progress: u32,
    required: u32,
    threshold: u32,
    shares_encrypted: bool,
    verification_nonce: &'a str,
    shares: &'a [String],
}

impl<'a> From<&'a v1::RekeySubmitResponse> for RekeySubmitted<'a> {
    fn from(response: &'a v1::RekeySubmitResponse) -> Self {
        RekeySubmitted {
            complete: response.complete,
            staged: !response.verification_nonce.is_empty(),
            progress: response.progress,
            required: response.required,
            threshold: response.threshold,
            shares_encrypted: response.shares_encrypted,
            verification_nonce: &response.verification_nonce,
            shares: &response.shares,
        }
    }
}

impl Show for RekeySubmitted<'_> {
    fn text(&self) -> String {
        if !self.staged {
            return format!(
                "Share accepted: {}/{} submitted.\n",
                self.progress, self.required
            );
        }
        let mut out = shares_text(self.shares, self.shares_encrypted, "New unseal share");
        out.push_str(&format!(
            "\nRekey staged. The CURRENT shares still unseal the vault: the new ones take over \
             only once {} of these {} holders have run `vault-cli rekey verify --nonce {}` with \
             their new share. Give each share to a different operator; they are shown only now.\n",
            self.threshold,
            self.shares.len(),
            self.verification_nonce
        ));
        std::mem::take(&mut *out)
    }
}

#[derive(Serialize)]
struct ShareChecked {
    result: String,
    current: bool,
}

impl Show for ShareChecked {
    fn text(&self) -> String {
        let text = match self.result.as_str() {
            "current" => "The share belongs to the current share set.",
            "staged" => {
                "The share is one of the new shares of a rekey waiting for verification \
                 (`vault-cli rekey verify`); it does not unseal the vault yet."
            }
            "not-current" => {
                "The share does NOT belong to the current share set (an old share from before a \
                 rekey, a mistyped one, or another vault's)."
            }
            _ => {
                "Unknown: this vault was initialized before share commitments were kept; a rekey \
                 adds them."
            }
        };
        format!("{text}\n")
    }
}

pub async fn share(ctx: &Ctx, command: ShareCommand, format: Format) -> CliResult<()> {
    let share_file = match command {
        ShareCommand::Verify { share_file } => share_file,
        ShareCommand::Decrypt { identity, input } => {
            return decrypt_share(&identity, input.as_deref());
        }
        ShareCommand::Keygen { out } => return keygen(&out, format),
    };
    let share = read_share(share_file.as_deref())?;
    let result = system(ctx)
        .await?
        .verify_share(v1::VerifyShareRequest {
            share: share.as_str().to_owned(),
        })
        .await
        .map_err(|s| ctx.status_error(s))?
        .into_inner()
        .result;
    let current = result == "current";
    let not_current = result == "not-current";
    show(&ShareChecked { result, current }, format)?;
    if not_current {
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
    let generated = Generated {
        recipient: &recipient,
        identity_file: out,
    };
    show(&generated, format)
}

#[derive(Serialize)]
struct Generated<'a> {
    recipient: &'a str,
    identity_file: &'a std::path::Path,
}

impl Show for Generated<'_> {
    fn text(&self) -> String {
        format!("{}\n", self.recipient)
    }
}
