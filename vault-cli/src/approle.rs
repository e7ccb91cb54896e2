//! `vault-cli approle ...` (write, read, delete, secret-id).

use serde::Serialize;
use vault_proto::v1::{self, app_roles_client::AppRolesClient};
use zeroize::Zeroizing;

use crate::{
    Format,
    client::{CliResult, Ctx},
    input::parse_duration,
    output::{Done, Show, rows_text, show},
    secrets::{NamedArg, TenantArg},
    token::networks_text,
};

#[derive(clap::Subcommand, Debug)]
pub enum ApproleCommand {
    /// Create or replace a role (its role id stays the same on replace).
    Write {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        /// A policy of the tenant (repeat for several).
        #[arg(long = "policy", required = true)]
        policies: Vec<String>,
        /// Lifetime of the tokens a login issues (default 1h).
        #[arg(long, value_parser = parse_duration)]
        token_ttl: Option<std::time::Duration>,
        /// Logins also get a refresh token; the family lives at most this long.
        #[arg(long, value_parser = parse_duration)]
        refresh_max_ttl: Option<std::time::Duration>,
        /// Logins per secret id (0: unlimited).
        #[arg(long, default_value_t = 0)]
        secret_id_uses: u32,
        /// Lifetime of a secret id (default 24h).
        #[arg(long, value_parser = parse_duration)]
        secret_id_ttl: Option<std::time::Duration>,
        /// A network logins may come from (repeat for several).
        #[arg(long = "bound-cidr")]
        bound_cidrs: Vec<String>,
        /// A network the issued tokens may be used from (repeat for several).
        #[arg(long = "token-cidr")]
        token_cidrs: Vec<String>,
    },
    /// Show a role, with its role id.
    Read(NamedArg),
    /// Delete a role; its secret ids stop working.
    Delete(NamedArg),
    /// Issue a secret id for a role; printed once.
    SecretId {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        /// A network this secret id may log in from (repeat for several).
        #[arg(long = "cidr")]
        cidrs: Vec<String>,
    },
}

/// A role as `write` and `read` print it.
#[derive(Serialize)]
struct Role {
    name: String,
    role_id: String,
    policies: Vec<String>,
    token_ttl_seconds: u64,
    refresh_max_ttl_seconds: u64,
    secret_id_uses: u32,
    secret_id_ttl_seconds: u64,
    bound_cidrs: Vec<String>,
    token_cidrs: Vec<String>,
}

impl From<v1::AppRole> for Role {
    fn from(role: v1::AppRole) -> Self {
        Role {
            name: role.name,
            role_id: role.role_id,
            policies: role.policies,
            token_ttl_seconds: role.token_ttl_seconds,
            refresh_max_ttl_seconds: role.refresh_max_ttl_seconds,
            secret_id_uses: role.secret_id_uses,
            secret_id_ttl_seconds: role.secret_id_ttl_seconds,
            bound_cidrs: role.bound_cidrs,
            token_cidrs: role.token_cidrs,
        }
    }
}

impl Show for Role {
    fn text(&self) -> String {
        rows_text(&[
            ("Role", self.name.clone()),
            ("Role id", self.role_id.clone()),
            ("Policies", self.policies.join(", ")),
            ("Token TTL", format!("{}s", self.token_ttl_seconds)),
            (
                "Refresh max TTL",
                match self.refresh_max_ttl_seconds {
                    0 => "no refresh tokens".into(),
                    n => format!("{n}s"),
                },
            ),
            (
                "Secret id uses",
                match self.secret_id_uses {
                    0 => "unlimited".into(),
                    n => n.to_string(),
                },
            ),
            ("Secret id TTL", format!("{}s", self.secret_id_ttl_seconds)),
            ("Login networks", networks_text(&self.bound_cidrs)),
            ("Token networks", networks_text(&self.token_cidrs)),
        ])
    }
}

/// A secret id just issued: shown once.
#[derive(Serialize)]
struct SecretId<'a> {
    secret_id: &'a str,
    accessor: String,
}

impl Show for SecretId<'_> {
    fn text(&self) -> String {
        // Joined in one allocation of the final size: no copy of the secret id is left behind.
        [
            "Secret id: ",
            self.secret_id,
            "\nAccessor:  ",
            self.accessor.as_str(),
            "\n\nThe secret id is shown only now.\n",
        ]
        .concat()
    }
}

pub async fn approle(ctx: &Ctx, command: ApproleCommand, format: Format) -> CliResult<()> {
    let new = AppRolesClient::new;
    match command {
        ApproleCommand::Write {
            tenant,
            name,
            policies,
            token_ttl,
            refresh_max_ttl,
            secret_id_uses,
            secret_id_ttl,
            bound_cidrs,
            token_cidrs,
        } => {
            let role = v1::AppRole {
                name,
                role_id: String::new(),
                policies,
                token_ttl_seconds: token_ttl.map_or(0, |d| d.as_secs()),
                refresh_max_ttl_seconds: refresh_max_ttl.map_or(0, |d| d.as_secs()),
                secret_id_uses,
                secret_id_ttl_seconds: secret_id_ttl.map_or(0, |d| d.as_secs()),
                bound_cidrs,
                token_cidrs,
            };
            let request = v1::WriteRoleRequest {
                tenant: tenant.tenant,
                role: Some(role),
            };
            let role = call!(ctx, new, write_role, request).await?.role;
            show(&Role::from(role.unwrap_or_default()), format)
        }
        ApproleCommand::Read(role) => {
            let request = v1::ReadRoleRequest {
                tenant: role.tenant.tenant,
                name: role.name,
            };
            let role = call!(ctx, new, read_role, request).await?.role;
            show(&Role::from(role.unwrap_or_default()), format)
        }
        ApproleCommand::Delete(role) => {
            let request = v1::DeleteRoleRequest {
                tenant: role.tenant.tenant,
                name: role.name.clone(),
            };
            call!(ctx, new, delete_role, request).await?;
            let text = format!("Deleted role {}; its secret ids no longer work.", role.name);
            show(&Done::new("role", role.name, "deleted", text), format)
        }
        ApproleCommand::SecretId {
            tenant,
            name,
            cidrs,
        } => {
            let request = v1::GenerateSecretIdRequest {
                tenant: tenant.tenant,
                role: name,
                cidrs,
            };
            let mut response = call!(ctx, new, generate_secret_id, request).await?;
            let secret_id = Zeroizing::new(std::mem::take(&mut response.secret_id));
            show(
                &SecretId {
                    secret_id: &secret_id,
                    accessor: response.accessor,
                },
                format,
            )
        }
    }
}
