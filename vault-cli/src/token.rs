//! `vault-cli token ...` (create, lookup, renew, refresh, revoke).

use std::time::Duration;

use serde::Serialize;
use vault_proto::v1::{self, login_client::LoginClient, tokens_client::TokensClient};
use zeroize::Zeroizing;

use crate::{
    Format,
    client::{CliError, CliResult, Ctx, refresh_token_file},
    input::parse_duration,
    login::{Issued, finish_login, read_file_secret},
    output::{Field, Show, rows_text, show, text_or},
};

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token for a tenant with some of your policies (or, with --system, a
    /// system-scope token); prints it once, with its accessor.
    Create {
        /// The tenant the token is for.
        #[arg(long, env = "VAULT_TENANT", required_unless_present = "system")]
        tenant: Option<String>,
        /// A policy of the tenant (repeat for several).
        #[arg(long = "policy", required_unless_present = "system")]
        policies: Vec<String>,
        /// A system-scope token (no tenant, no policies); needs the system scope.
        #[arg(long, conflicts_with_all = ["tenant", "policies"])]
        system: bool,
        /// Also issue a refresh token; the family it starts lives at most this long (e.g. 24h).
        #[arg(long, value_parser = parse_duration)]
        refresh_max_ttl: Option<Duration>,
        /// Lifetime, e.g. 30m, 1h, 7d (default 1h; never past the creating token's own).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        /// A name that shows in lookups.
        #[arg(long, default_value = "")]
        display_name: String,
        /// A network the token may be used from, e.g. 10.0.0.0/8 (repeat for several).
        #[arg(long = "cidr")]
        cidrs: Vec<String>,
    },
    /// Show a token: yours, or one you created (by accessor).
    Lookup {
        #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
        accessor: Option<String>,
    },
    /// Extend a token's life (never past its maximum).
    Renew {
        #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
        accessor: Option<String>,
        /// From now; default: the token's original TTL.
        #[arg(long, value_parser = parse_duration)]
        increment: Option<Duration>,
    },
    /// Exchange a refresh token (VAULT_REFRESH_TOKEN, else ~/.vault-refresh-token) for a new
    /// token and refresh token; the files from `login` are updated in place.
    Refresh,
    /// Revoke a token and every token created from it.
    Revoke {
        #[arg(
            long,
            required_unless_present = "self_token",
            conflicts_with = "self_token"
        )]
        accessor: Option<String>,
        /// Revoke the token in use.
        #[arg(long = "self")]
        self_token: bool,
    },
    /// Revoke the root token in use (refused if it is not a root token). Root tokens should
    /// live only as long as the task that needed one; make a new one with `generate-root`.
    RevokeRoot,
}

/// A token's details, as `lookup` and `renew` print them (and `create` and `login` under
/// "info").
#[derive(Serialize)]
pub struct Info {
    accessor: String,
    tenant: String,
    policies: Vec<String>,
    system: bool,
    display_name: String,
    created_time: String,
    expire_time: String,
    max_expire_time: String,
    parent_accessor: String,
    cidrs: Vec<String>,
    entity: String,
    family: String,
}

impl From<v1::TokenInfo> for Info {
    fn from(info: v1::TokenInfo) -> Self {
        Info {
            accessor: info.accessor,
            tenant: info.tenant,
            policies: info.policies,
            system: info.system,
            display_name: info.display_name,
            created_time: info.created_time,
            expire_time: info.expire_time,
            max_expire_time: info.max_expire_time,
            parent_accessor: info.parent_accessor,
            cidrs: info.cidrs,
            entity: info.entity,
            family: info.family,
        }
    }
}

impl Info {
    pub fn accessor(&self) -> &str {
        &self.accessor
    }
}

impl Show for Info {
    fn text(&self) -> String {
        rows_text(&[
            ("Accessor", self.accessor.clone()),
            (
                "Tenant",
                if self.system {
                    "(system scope)".into()
                } else {
                    self.tenant.clone()
                },
            ),
            ("Policies", self.policies.join(", ")),
            ("Display name", self.display_name.clone()),
            ("Created", self.created_time.clone()),
            ("Expires", text_or(&self.expire_time, "never")),
            ("Max expiry", text_or(&self.max_expire_time, "never")),
            ("Parent", self.parent_accessor.clone()),
            ("Entity", self.entity.clone()),
            ("Networks", networks_text(&self.cidrs)),
        ])
    }
}

/// `token create`: the token as `login --no-store` prints it, and how to revoke it.
#[derive(Serialize)]
#[serde(transparent)]
struct Created<'a>(Issued<'a>);

impl Show for Created<'_> {
    fn text(&self) -> String {
        let mut out = Zeroizing::new(String::with_capacity(2048));
        out.push_str(&Zeroizing::new(self.0.text()));
        out.push_str(&format!(
            "\nThe token is shown only now. Revoke it by accessor: vault-cli token revoke --accessor {}\n",
            self.0.info.accessor()
        ));
        std::mem::take(&mut *out)
    }
}

/// Networks a token or login may come from, as text: "any" when none are set.
pub fn networks_text(cidrs: &[String]) -> String {
    if cidrs.is_empty() {
        "any".to_owned()
    } else {
        cidrs.join(", ")
    }
}

pub async fn token_command(ctx: &Ctx, command: TokenCommand, format: Format) -> CliResult<()> {
    let new = TokensClient::new;
    match command {
        TokenCommand::Create {
            tenant,
            policies,
            system,
            refresh_max_ttl,
            ttl,
            display_name,
            cidrs,
        } => {
            let request = v1::CreateTokenRequest {
                tenant: tenant.unwrap_or_default(),
                policies,
                ttl_seconds: ttl.map_or(0, |t| t.as_secs()),
                display_name,
                cidrs,
                system,
                refresh_max_ttl_seconds: refresh_max_ttl.map_or(0, |t| t.as_secs()),
            };
            let mut response = call!(ctx, new, create_token, request).await?;
            let token = Zeroizing::new(std::mem::take(&mut response.token));
            let refresh = Zeroizing::new(std::mem::take(&mut response.refresh_token));
            let issued = Issued {
                token: &token,
                refresh_token: &refresh,
                info: response.info.unwrap_or_default().into(),
            };
            show(&Created(issued), format)
        }
        TokenCommand::Lookup { accessor } => {
            let request = v1::LookupTokenRequest {
                accessor: accessor.unwrap_or_default(),
                ..Default::default()
            };
            let info = call!(ctx, new, lookup_token, request).await?.info;
            show(&Info::from(info.unwrap_or_default()), format)
        }
        TokenCommand::Renew {
            accessor,
            increment,
        } => {
            let request = v1::RenewTokenRequest {
                accessor: accessor.unwrap_or_default(),
                increment_seconds: increment.map_or(0, |d| d.as_secs()),
            };
            let info = call!(ctx, new, renew_token, request).await?.info;
            show(&Info::from(info.unwrap_or_default()), format)
        }
        // A refresh token is the credential here; no access token is needed.
        TokenCommand::Refresh => refresh(ctx, format).await,
        TokenCommand::Revoke {
            accessor,
            self_token: _,
        } => {
            let request = v1::RevokeTokenRequest {
                accessor: accessor.unwrap_or_default(),
                ..Default::default()
            };
            let revoked = call!(ctx, new, revoke_token, request).await?.revoked;
            let text = format!("Revoked {revoked} token(s).\n");
            show(&Field::new("revoked", revoked, text), format)
        }
        TokenCommand::RevokeRoot => {
            let info = call!(ctx, new, lookup_token, v1::LookupTokenRequest::default())
                .await?
                .info
                .unwrap_or_default();
            if !(info.system && info.policies.iter().any(|p| p == "root")) {
                return Err(CliError::new(format!(
                    "the token in use (accessor {}) is not a root token; nothing was revoked",
                    info.accessor
                )));
            }
            let revoked = call!(ctx, new, revoke_token, v1::RevokeTokenRequest::default())
                .await?
                .revoked;
            let text = format!(
                "Revoked the root token (accessor {}) and {} token(s) with it.\n",
                info.accessor,
                revoked.saturating_sub(1)
            );
            show(&Field::new("revoked", revoked, text), format)
        }
    }
}

/// `vault-cli token refresh`: from VAULT_REFRESH_TOKEN (printed result) or the file `login`
/// keeps (both files updated).
pub async fn refresh(ctx: &Ctx, format: Format) -> CliResult<()> {
    let (refresh, from_file) = match std::env::var("VAULT_REFRESH_TOKEN") {
        Ok(text) if !text.trim().is_empty() => (Zeroizing::new(text.trim().to_owned()), false),
        _ => {
            let path = refresh_token_file()
                .ok_or_else(|| CliError::new("cannot find the home directory (HOME is not set)"))?;
            let text = read_file_secret(&path, "refresh token").map_err(|_| {
                CliError::with_hint(
                    "no refresh token: VAULT_REFRESH_TOKEN is not set and there is no ~/.vault-refresh-token",
                    "log in with a role or configuration that issues refresh tokens",
                )
            })?;
            (text, true)
        }
    };
    let request = v1::RefreshRequest {
        refresh_token: refresh.to_string(),
    };
    let mut client = LoginClient::new(ctx.connect().await?);
    let response = ctx.answer(client.refresh(request).await)?;
    finish_login(response, from_file, format, "Refreshed")
}
