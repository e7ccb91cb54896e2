//! `vault-cli mfa ...` (enroll, reset, require, show).

use serde::Serialize;
use vault_proto::v1::{self, mfa_client::MfaClient};
use zeroize::Zeroizing;

use crate::{
    Format,
    client::{CliResult, Ctx},
    output::{Done, Field, Show, show},
};

#[derive(clap::Subcommand, Debug)]
pub enum MfaCommand {
    /// Enrol the token's entity in TOTP (or, with the system scope, --entity); prints the
    /// secret and an otpauth:// URI once.
    Enroll {
        /// Another entity, whose owner gets the secret out of band (system scope).
        #[arg(long)]
        entity: Option<String>,
    },
    /// Remove an entity's enrolment (system scope), e.g. after a lost device.
    Reset { entity: String },
    /// Set the system operations that need MFA (seal, tenant-create, tenant-update,
    /// tenant-delete, create-system-token, audit, auth-config, mfa-config); none clears.
    Require { operations: Vec<String> },
    /// Show the system operations that need MFA.
    Show,
}

/// A TOTP enrolment: its secret is shown once.
#[derive(Serialize)]
struct Enrolled<'a> {
    entity: String,
    secret: &'a str,
    otpauth_uri: &'a str,
}

impl Show for Enrolled<'_> {
    fn text(&self) -> String {
        let mut out = Zeroizing::new(String::with_capacity(1024));
        for (label, value) in [
            ("Entity:  ", self.entity.as_str()),
            ("Secret:  ", self.secret),
            ("URI:     ", self.otpauth_uri),
        ] {
            out.push_str(label);
            out.push_str(value);
            out.push('\n');
        }
        out.push_str(
            "\nAdd the secret to an authenticator app now; it is shown only once. Pass codes with \
             --mfa CODE.\n",
        );
        std::mem::take(&mut *out)
    }
}

pub async fn mfa(ctx: &Ctx, command: MfaCommand, format: Format) -> CliResult<()> {
    let new = MfaClient::new;
    match command {
        MfaCommand::Enroll { entity } => {
            let request = v1::EnrollTotpRequest {
                entity: entity.unwrap_or_default(),
            };
            let mut response = call!(ctx, new, enroll_totp, request).await?;
            let secret = Zeroizing::new(std::mem::take(&mut response.secret));
            let uri = Zeroizing::new(std::mem::take(&mut response.otpauth_uri));
            show(
                &Enrolled {
                    entity: response.entity,
                    secret: &secret,
                    otpauth_uri: &uri,
                },
                format,
            )
        }
        MfaCommand::Reset { entity } => {
            let request = v1::ResetMfaRequest {
                entity: entity.clone(),
            };
            call!(ctx, new, reset_mfa, request).await?;
            let text = format!("Removed the mfa enrolment of {entity}.");
            show(&Done::new("entity", entity, "reset", text), format)
        }
        MfaCommand::Require { operations } => {
            let request = v1::SetSystemMfaRequest {
                operations: operations.clone(),
            };
            call!(ctx, new, set_system_mfa, request).await?;
            let sentence = if operations.is_empty() {
                "No system operation needs mfa now.\n".to_owned()
            } else {
                format!("MFA is now required for: {}.\n", operations.join(", "))
            };
            show(&Field::new("operations", operations, sentence), format)
        }
        MfaCommand::Show => {
            let operations = call!(ctx, new, get_system_mfa, v1::GetSystemMfaRequest {})
                .await?
                .operations;
            show(&Field::lines("operations", operations), format)
        }
    }
}
