//! `vault-cli rekey ...` (init, submit, verify, cancel, status).

use clap::Subcommand;
use serde::Serialize;
use tonic::transport::Channel;
use vault_proto::v1::{self, system_client::SystemClient};

use crate::{
    Format,
    client::{CliResult, Ctx},
    input::read_share,
    output::{Field, Show, rows_text, show},
    share::{RecipientArgs, shares_text, system},
};

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
    Submit(ShareArgs),
    /// Submit one NEW share to verify a staged rekey (with the verification nonce). Once a
    /// threshold of the new shares came back, the rekey is committed and the old shares stop
    /// working.
    Verify(ShareArgs),
    /// Abandon the rekey in progress or waiting for verification; the current shares stay
    /// valid.
    Cancel,
    /// The rekey in progress or waiting for verification, if any.
    Status,
}

// What `rekey submit` and `rekey verify` send: the nonce and one share (a plain comment, not a
// doc comment: clap would take that for the commands' description).
#[derive(clap::Args, Debug)]
pub struct ShareArgs {
    #[arg(long)]
    nonce: String,
    #[arg(long, value_name = "FILE")]
    share_file: Option<std::path::PathBuf>,
}

impl ShareArgs {
    /// The nonce, and the share (from --share-file, a hidden prompt or standard input) as the
    /// request carries it.
    fn read(self) -> CliResult<(String, String)> {
        let share = read_share(self.share_file.as_deref())?;
        Ok((self.nonce, share.as_str().to_owned()))
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
            let text = "Rekey cancelled; the current shares stay valid.\n".to_owned();
            show(&Field::new("cancelled", true, text), format)
        }
        RekeyCommand::Submit(args) => {
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
            let (nonce, share) = args.read()?;
            let request = v1::RekeySubmitRequest { nonce, share };
            let response = ctx.answer(client.rekey_submit(request).await)?;
            show(&RekeySubmitted::from(&response), format)
        }
        RekeyCommand::Verify(args) => {
            let mut client = system(ctx).await?;
            let (nonce, share) = args.read()?;
            let request = v1::RekeyVerifyRequest { nonce, share };
            let response = ctx.answer(client.rekey_verify(request).await)?;
            let verified = Verified {
                complete: response.complete,
                progress: response.progress,
                required: response.required,
            };
            show(&verified, format)
        }
    }
}

async fn rekey_status(
    ctx: &Ctx,
    client: &mut SystemClient<Channel>,
) -> CliResult<v1::RekeyStatusResponse> {
    ctx.answer(client.rekey_status(v1::RekeyStatusRequest {}).await)
}

fn recipients_text(recipients: &[String]) -> String {
    if recipients.is_empty() {
        "in the clear, to whoever submits the last current share".to_owned()
    } else {
        recipients.join(", ")
    }
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
