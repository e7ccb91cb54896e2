//! `vault-cli generate-root ...` (init, submit, status, cancel): a threshold of share holders
//! makes a new root token, encrypted to an age recipient named at init.

use clap::Subcommand;
use serde::Serialize;
use vault_proto::v1;

use crate::{
    Format,
    client::{CliResult, Ctx},
    input::read_share,
    output::{Field, Show, show},
    share::system,
};

#[derive(Subcommand, Debug)]
pub enum GenerateRootCommand {
    /// Start an attempt with your share as its first submission (no token needed); prints the
    /// nonce the other share holders submit with. The new root token will be encrypted to
    /// --recipient (`vault-cli share decrypt` opens it).
    Init {
        /// The age public key (age1...) the root token goes to, as `vault-cli share keygen`
        /// or `age-keygen` print it.
        #[arg(long, value_name = "AGE_RECIPIENT")]
        recipient: String,
        #[arg(long, value_name = "FILE")]
        share_file: Option<std::path::PathBuf>,
    },
    /// Submit one current share (hidden prompt, standard input or --share-file; never an
    /// argument) to the attempt for --recipient. The submission that reaches the threshold
    /// prints the root token as an age file for the recipient (write it with --out).
    Submit {
        #[arg(long)]
        nonce: String,
        /// Whom you expect the root token to go to (age1...): the share is not submitted if
        /// the attempt sends it to anyone else.
        #[arg(long, value_name = "AGE_RECIPIENT")]
        recipient: String,
        #[arg(long, value_name = "FILE")]
        share_file: Option<std::path::PathBuf>,
        /// Also write the encrypted root token to this file.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// The attempt in progress, if any.
    Status,
    /// Abandon the attempt; needs one current share (hidden prompt, stdin or --share-file).
    Cancel {
        #[arg(long, value_name = "FILE")]
        share_file: Option<std::path::PathBuf>,
    },
}

#[derive(Serialize)]
struct Status {
    started: bool,
    nonce: String,
    recipient: String,
    progress: u32,
    required: u32,
    started_time: String,
}

impl From<v1::GenerateRootStatusResponse> for Status {
    fn from(r: v1::GenerateRootStatusResponse) -> Self {
        Status {
            started: r.started,
            nonce: r.nonce,
            recipient: r.recipient,
            progress: r.progress,
            required: r.required,
            started_time: r.started_time,
        }
    }
}

impl Show for Status {
    fn text(&self) -> String {
        if !self.started {
            return "No generate-root attempt in progress.\n".to_owned();
        }
        format!(
            "Generate-root attempt {} (started {}): {}/{} shares; the root token goes to {}\n",
            self.nonce, self.started_time, self.progress, self.required, self.recipient
        )
    }
}

#[derive(Serialize)]
struct Submitted {
    complete: bool,
    progress: u32,
    required: u32,
    encrypted_root_token: String,
    accessor: String,
}

impl Show for Submitted {
    fn text(&self) -> String {
        if !self.complete {
            return format!("Share accepted: {}/{}.\n", self.progress, self.required);
        }
        format!(
            "A new root token was made (accessor {}); it is encrypted to the recipient \
             (`vault-cli share decrypt --identity FILE`). Revoke it after use: \
             vault-cli token revoke-root\n{}",
            self.accessor, self.encrypted_root_token
        )
    }
}

pub async fn generate_root(
    ctx: &Ctx,
    command: GenerateRootCommand,
    format: Format,
) -> CliResult<()> {
    let mut client = system(ctx).await?;
    match command {
        GenerateRootCommand::Init {
            recipient,
            share_file,
        } => {
            let share = read_share(share_file.as_deref())?;
            let request = v1::GenerateRootInitRequest {
                recipient,
                share: share.as_str().to_owned(),
            };
            let status = ctx.answer(client.generate_root_init(request).await)?;
            show(&Status::from(status), format)
        }
        GenerateRootCommand::Status => {
            let request = v1::GenerateRootStatusRequest {};
            let status = ctx.answer(client.generate_root_status(request).await)?;
            show(&Status::from(status), format)
        }
        GenerateRootCommand::Submit {
            nonce,
            recipient,
            share_file,
            out,
        } => {
            // The holder says whom the token is for; a share never helps an attempt that sends
            // it to someone else.
            let status = ctx.answer(
                client
                    .generate_root_status(v1::GenerateRootStatusRequest {})
                    .await,
            )?;
            if !status.started || status.nonce != nonce.trim() {
                return Err(crate::client::CliError::new(format!(
                    "no generate-root attempt with nonce {} is in progress; nothing was submitted",
                    nonce.trim()
                )));
            }
            if status.recipient != recipient.trim() {
                return Err(crate::client::CliError::new(format!(
                    "this attempt encrypts the root token to {}, not to {}; nothing was submitted",
                    status.recipient,
                    recipient.trim()
                )));
            }
            let share = read_share(share_file.as_deref())?;
            let request = v1::GenerateRootSubmitRequest {
                nonce,
                share: share.as_str().to_owned(),
            };
            let response = ctx.answer(client.generate_root_submit(request).await)?;
            if let Some(path) = out.filter(|_| response.complete) {
                vault_core::files::write_private(&path, response.encrypted_root_token.as_bytes())
                    .map_err(|e| {
                    crate::client::CliError::new(format!("cannot write {}: {e}", path.display()))
                })?;
            }
            show(
                &Submitted {
                    complete: response.complete,
                    progress: response.progress,
                    required: response.required,
                    encrypted_root_token: response.encrypted_root_token,
                    accessor: response.accessor,
                },
                format,
            )
        }
        GenerateRootCommand::Cancel { share_file } => {
            let share = read_share(share_file.as_deref())?;
            let request = v1::GenerateRootCancelRequest {
                share: share.as_str().to_owned(),
            };
            ctx.answer(client.generate_root_cancel(request).await)?;
            let text = "Generate-root attempt cancelled.\n".to_owned();
            show(&Field::new("cancelled", true, text), format)
        }
    }
}
