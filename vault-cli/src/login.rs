//! `vault-cli login` (with a token, AppRole or a JWT).

use std::path::{Path, PathBuf};

use serde::Serialize;
use vault_core::files::write_private;
use vault_proto::v1::{self, login_client::LoginClient, tokens_client::TokensClient};
use zeroize::Zeroizing;

use crate::{
    Format,
    client::{CliError, CliResult, Ctx, refresh_token_file, token_file},
    input::read_secret_line,
    output::{Show, show},
    token::Info,
};

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// How to log in: token (checks a token you have), approle or jwt.
    #[arg(long, value_enum, default_value_t = Method::Token)]
    pub method: Method,
    /// approle: the tenant of the role.
    #[arg(long, env = "VAULT_TENANT", required_if_eq("method", "approle"))]
    pub tenant: Option<String>,
    /// approle: the role id.
    #[arg(long, required_if_eq("method", "approle"))]
    pub role_id: Option<String>,
    /// approle: read the secret id from this file (default: hidden prompt or standard input).
    #[arg(long, value_name = "FILE")]
    pub secret_id_file: Option<PathBuf>,
    /// jwt: the name of the JWT configuration.
    #[arg(long, required_if_eq("method", "jwt"))]
    pub config: Option<String>,
    /// jwt: read the JWT from this file (default: hidden prompt or standard input).
    #[arg(long, value_name = "FILE")]
    pub jwt_file: Option<PathBuf>,
    /// Print the token (and refresh token) instead of keeping them in ~/.vault-token.
    #[arg(long)]
    pub no_store: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    Token,
    Approle,
    Jwt,
}

pub fn read_file_secret(path: &Path, what: &str) -> CliResult<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| CliError::new(format!("cannot read {} ({what}): {e}", path.display())))?,
    );
    Ok(Zeroizing::new(text.trim().to_owned()))
}

/// A credential from `file`, else from a hidden prompt `<prompt> (input hidden): ` or
/// standard input.
fn read_input(file: Option<&Path>, prompt: &str, what: &str) -> CliResult<Zeroizing<String>> {
    match file {
        Some(path) => read_file_secret(path, what),
        None => read_secret_line(&format!("{prompt} (input hidden): "), what),
    }
}

/// A token just issued (and its refresh token, if any): shown once.
#[derive(Serialize)]
pub struct Issued<'a> {
    pub token: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub refresh_token: &'a str,
    pub info: Info,
}

impl Show for Issued<'_> {
    fn text(&self) -> String {
        let info = self.info.text();
        let mut parts = vec!["Token:     ", self.token, "\n"];
        if !self.refresh_token.is_empty() {
            parts.extend(["Refresh:   ", self.refresh_token, "\n"]);
        }
        parts.push(&info);
        // Joined in one allocation of the final size: no copy of the token is left behind.
        parts.concat()
    }
}

/// A login whose token is kept in a file.
#[derive(Serialize)]
struct Stored {
    token_file: PathBuf,
    info: Info,
    /// "Logged in" or "Refreshed", for the text.
    #[serde(skip)]
    verb: &'static str,
}

impl Show for Stored {
    fn text(&self) -> String {
        format!(
            "{}; the token is kept in {} (VAULT_TOKEN overrides it).\n{}",
            self.verb,
            self.token_file.display(),
            self.info.text()
        )
    }
}

/// Keeps (or prints) what a login returned.
pub fn finish_login(
    mut response: v1::LoginResponse,
    store: bool,
    format: Format,
    verb: &'static str,
) -> CliResult<()> {
    let token = Zeroizing::new(std::mem::take(&mut response.token));
    let refresh = Zeroizing::new(std::mem::take(&mut response.refresh_token));
    let info = Info::from(response.info.unwrap_or_default());
    if store {
        let path = token_file()
            .ok_or_else(|| CliError::new("cannot find the home directory (HOME is not set)"))?;
        write_private(&path, token.as_bytes())
            .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))?;
        if let Some(refresh_path) = refresh_token_file() {
            if refresh.is_empty() {
                // A stale refresh token from an earlier login would belong to another family.
                let _ = std::fs::remove_file(&refresh_path);
            } else {
                write_private(&refresh_path, refresh.as_bytes()).map_err(|e| {
                    CliError::new(format!("cannot write {}: {e}", refresh_path.display()))
                })?;
            }
        }
        let stored = Stored {
            token_file: path,
            info,
            verb,
        };
        return show(&stored, format);
    }
    let issued = Issued {
        token: &token,
        refresh_token: &refresh,
        info,
    };
    show(&issued, format)
}

pub async fn login(ctx: &Ctx, args: LoginArgs, format: Format) -> CliResult<()> {
    let response = match args.method {
        Method::Token => {
            let token = read_secret_line("Token (input hidden): ", "token")?;
            let mut client = TokensClient::new(ctx.connect().await?);
            let request = ctx.authed(v1::LookupTokenRequest::default(), &token)?;
            client.lookup_token(request).await.map(|response| {
                tonic::Response::new(v1::LoginResponse {
                    token: token.to_string(),
                    info: response.into_inner().info,
                    refresh_token: String::new(),
                })
            })
        }
        Method::Approle => {
            let secret_id = read_input(args.secret_id_file.as_deref(), "Secret id", "secret id")?;
            let request = v1::LoginAppRoleRequest {
                tenant: args.tenant.unwrap_or_default(),
                role_id: args.role_id.unwrap_or_default(),
                secret_id: secret_id.to_string(),
            };
            LoginClient::new(ctx.connect().await?)
                .login_app_role(request)
                .await
        }
        Method::Jwt => {
            let jwt = read_input(args.jwt_file.as_deref(), "JWT", "jwt")?;
            let request = v1::LoginJwtRequest {
                config: args.config.unwrap_or_default(),
                jwt: jwt.to_string(),
            };
            LoginClient::new(ctx.connect().await?)
                .login_jwt(request)
                .await
        }
    };
    let response = ctx.answer(response)?;
    finish_login(response, !args.no_store, format, "Logged in")
}
