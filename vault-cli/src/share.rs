//! `vault-cli share ...` (verify, decrypt, keygen), and the share helpers init and rekey use.

use clap::Subcommand;
use serde::Serialize;
use tonic::transport::Channel;
use vault_core::recipient::ShareIdentity;
use vault_proto::v1::{self, system_client::SystemClient};
use zeroize::Zeroizing;

use crate::{
    Format,
    client::{CliError, CliResult, Ctx},
    input::read_share,
    output::{Show, show},
};

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

/// A client for the unauthenticated seal calls: init, unseal and status, and rekey submit and
/// verify and share verify (a share is the credential).
pub async fn system(ctx: &Ctx) -> CliResult<SystemClient<Channel>> {
    Ok(SystemClient::new(ctx.connect().await?))
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
    let request = v1::VerifyShareRequest {
        share: share.as_str().to_owned(),
    };
    let result = ctx
        .answer(system(ctx).await?.verify_share(request).await)?
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
