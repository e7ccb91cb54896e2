//! `vault-cli seal-migrate ...` (init, submit, status, cancel): move the vault between Shamir
//! shares and the auto seal the server was started with (`--seal`), both ways. The same
//! shares go on: as recovery shares under the auto seal, as unseal shares under Shamir.

use clap::{Subcommand, ValueEnum};
use serde::Serialize;
use vault_proto::v1;

use crate::{
    Format,
    client::{CliResult, Ctx},
    input::read_share,
    output::{Field, Show, show},
    share::system,
};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Target {
    /// To the server's auto seal (`--seal transit` or `--danger-seal-key-file`).
    Transit,
    /// Back to unseal shares.
    Shamir,
}

#[derive(Subcommand, Debug)]
pub enum SealMigrateCommand {
    /// Start a migration with your share as its first submission (no token needed; the vault
    /// must be unsealed); prints the nonce the other share holders submit with.
    Init {
        #[arg(long, value_enum)]
        to: Target,
        #[arg(long, value_name = "FILE")]
        share_file: Option<std::path::PathBuf>,
    },
    /// Submit one current share (hidden prompt, standard input or --share-file). The
    /// submission that reaches the threshold commits the new seal.
    Submit {
        #[arg(long)]
        nonce: String,
        #[arg(long, value_name = "FILE")]
        share_file: Option<std::path::PathBuf>,
    },
    /// The migration in progress, if any.
    Status,
    /// Abandon the migration; needs one current share.
    Cancel {
        #[arg(long, value_name = "FILE")]
        share_file: Option<std::path::PathBuf>,
    },
}

#[derive(Serialize)]
struct Status {
    started: bool,
    nonce: String,
    to: String,
    progress: u32,
    required: u32,
    started_time: String,
    complete: bool,
}

impl From<v1::SealMigrateStatusResponse> for Status {
    fn from(r: v1::SealMigrateStatusResponse) -> Self {
        Status {
            started: r.started,
            nonce: r.nonce,
            to: r.to,
            progress: r.progress,
            required: r.required,
            started_time: r.started_time,
            complete: r.complete,
        }
    }
}

impl Show for Status {
    fn text(&self) -> String {
        if !self.started {
            return "No seal migration in progress.\n".to_owned();
        }
        if self.complete {
            return format!(
                "Seal migrated: the vault is now sealed by {}; the same shares go on as {}.\n",
                self.to,
                if self.to == "shamir" {
                    "unseal shares (restart the server without --seal and unseal with them)"
                } else {
                    "recovery shares (for rekey, generate-root and seal-migrate)"
                }
            );
        }
        format!(
            "Seal migration {} to {} (started {}): {}/{} shares\n",
            self.nonce, self.to, self.started_time, self.progress, self.required
        )
    }
}

pub async fn seal_migrate(ctx: &Ctx, command: SealMigrateCommand, format: Format) -> CliResult<()> {
    let mut client = system(ctx).await?;
    let status = match command {
        SealMigrateCommand::Init { to, share_file } => {
            let share = read_share(share_file.as_deref())?;
            let request = v1::SealMigrateInitRequest {
                to: match to {
                    Target::Transit => "auto",
                    Target::Shamir => "shamir",
                }
                .into(),
                share: share.as_str().to_owned(),
            };
            ctx.answer(client.seal_migrate_init(request).await)?
        }
        SealMigrateCommand::Submit { nonce, share_file } => {
            let share = read_share(share_file.as_deref())?;
            let request = v1::SealMigrateSubmitRequest {
                nonce,
                share: share.as_str().to_owned(),
            };
            ctx.answer(client.seal_migrate_submit(request).await)?
        }
        SealMigrateCommand::Status => ctx.answer(
            client
                .seal_migrate_status(v1::SealMigrateStatusRequest {})
                .await,
        )?,
        SealMigrateCommand::Cancel { share_file } => {
            let share = read_share(share_file.as_deref())?;
            let request = v1::SealMigrateCancelRequest {
                share: share.as_str().to_owned(),
            };
            ctx.answer(client.seal_migrate_cancel(request).await)?;
            let text = "Seal migration cancelled.\n".to_owned();
            return show(&Field::new("cancelled", true, text), format);
        }
    };
    show(&Status::from(status), format)
}
