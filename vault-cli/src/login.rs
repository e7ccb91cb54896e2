//! `vault-cli login`, `token refresh`, `approle ...`, `jwt ...` and `mfa ...`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vault_core::files::write_private;
use vault_proto::v1::{
    self, app_roles_client::AppRolesClient, jwt_auth_client::JwtAuthClient,
    login_client::LoginClient, mfa_client::MfaClient, tokens_client::TokensClient,
};
use zeroize::Zeroizing;

use crate::{
    Format,
    access::{Done, Field, Info, networks_text, parse_duration},
    client::{CliError, CliResult, Ctx, refresh_token_file, token_file},
    input::read_secret_line,
    output::{Show, rows_text, show},
    secrets::TenantArg,
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
    Read {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
    },
    /// Delete a role; its secret ids stop working.
    Delete {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
    },
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

#[derive(clap::Subcommand, Debug)]
pub enum JwtCommand {
    /// Create or replace a configuration from a TOML file (issuer, jwks_file, audiences,
    /// tenant or tenant_claim, policies, [[policy_map]] ...).
    Write {
        name: String,
        file: PathBuf,
    },
    Read {
        name: String,
    },
    Delete {
        name: String,
    },
}

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

fn read_file_secret(path: &Path, what: &str) -> CliResult<Zeroizing<String>> {
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
        let mut out = Zeroizing::new(String::with_capacity(2048));
        out.push_str("Token:     ");
        out.push_str(self.token);
        out.push('\n');
        if !self.refresh_token.is_empty() {
            out.push_str("Refresh:   ");
            out.push_str(self.refresh_token);
            out.push('\n');
        }
        out.push_str(&self.info.text());
        std::mem::take(&mut *out)
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
fn finish_login(
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
    let response = response.map_err(|s| ctx.status_error(s))?.into_inner();
    finish_login(response, !args.no_store, format, "Logged in")
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
    let response = LoginClient::new(ctx.connect().await?)
        .refresh(v1::RefreshRequest {
            refresh_token: refresh.to_string(),
        })
        .await
        .map_err(|s| ctx.status_error(s))?
        .into_inner();
    finish_login(response, from_file, format, "Refreshed")
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
        let mut out = Zeroizing::new(String::with_capacity(256));
        out.push_str("Secret id: ");
        out.push_str(self.secret_id);
        out.push_str("\nAccessor:  ");
        out.push_str(&self.accessor);
        out.push_str("\n\nThe secret id is shown only now.\n");
        std::mem::take(&mut *out)
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
        ApproleCommand::Read { tenant, name } => {
            let request = v1::ReadRoleRequest {
                tenant: tenant.tenant,
                name,
            };
            let role = call!(ctx, new, read_role, request).await?.role;
            show(&Role::from(role.unwrap_or_default()), format)
        }
        ApproleCommand::Delete { tenant, name } => {
            let request = v1::DeleteRoleRequest {
                tenant: tenant.tenant,
                name: name.clone(),
            };
            call!(ctx, new, delete_role, request).await?;
            let text = format!("Deleted role {name}; its secret ids no longer work.");
            show(&Done::new("role", name, "deleted", text), format)
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtConfigFile {
    issuer: String,
    jwks_file: PathBuf,
    audiences: Vec<String>,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    tenant_claim: String,
    #[serde(default)]
    user_claim: String,
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default)]
    policy_map: Vec<PolicyMapFile>,
    #[serde(default)]
    token_ttl: Option<String>,
    #[serde(default)]
    refresh_max_ttl: Option<String>,
    #[serde(default)]
    bound_cidrs: Vec<String>,
    #[serde(default)]
    leeway_seconds: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyMapFile {
    claim: String,
    value: String,
    policies: Vec<String>,
}

fn duration_field(value: Option<String>, field: &str, file: &Path) -> CliResult<u64> {
    match value {
        None => Ok(0),
        Some(text) => parse_duration(&text)
            .map(|d| d.as_secs())
            .map_err(|e| CliError::new(format!("{}: {field}: {e}", file.display()))),
    }
}

#[derive(Serialize)]
struct PolicyMap {
    claim: String,
    value: String,
    policies: Vec<String>,
}

/// A JWT configuration as `jwt read` prints it; the text is the JSON, indented.
#[derive(Serialize)]
struct JwtConfig {
    name: String,
    issuer: String,
    jwks_file: String,
    audiences: Vec<String>,
    tenant: String,
    tenant_claim: String,
    user_claim: String,
    policies: Vec<String>,
    policy_map: Vec<PolicyMap>,
    token_ttl_seconds: u64,
    refresh_max_ttl_seconds: u64,
    bound_cidrs: Vec<String>,
    leeway_seconds: i64,
}

impl From<v1::JwtConfig> for JwtConfig {
    fn from(config: v1::JwtConfig) -> Self {
        JwtConfig {
            name: config.name,
            issuer: config.issuer,
            jwks_file: config.jwks_file,
            audiences: config.audiences,
            tenant: config.tenant,
            tenant_claim: config.tenant_claim,
            user_claim: config.user_claim,
            policies: config.policies,
            policy_map: config
                .policy_map
                .into_iter()
                .map(|m| PolicyMap {
                    claim: m.claim,
                    value: m.value,
                    policies: m.policies,
                })
                .collect(),
            token_ttl_seconds: config.token_ttl_seconds,
            refresh_max_ttl_seconds: config.refresh_max_ttl_seconds,
            bound_cidrs: config.bound_cidrs,
            leeway_seconds: config.leeway_seconds,
        }
    }
}

impl Show for JwtConfig {
    fn text(&self) -> String {
        // Through a `Value`, whose keys are sorted, as the text has always had them.
        let pretty = serde_json::to_value(self)
            .and_then(|value| serde_json::to_string_pretty(&value))
            .unwrap_or_default();
        format!("{pretty}\n")
    }
}

pub async fn jwt(ctx: &Ctx, command: JwtCommand, format: Format) -> CliResult<()> {
    let new = JwtAuthClient::new;
    match command {
        JwtCommand::Write { name, file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| CliError::new(format!("cannot read {}: {e}", file.display())))?;
            let parsed: JwtConfigFile = toml::from_str(&text)
                .map_err(|e| CliError::new(format!("{}: {}", file.display(), e.message())))?;
            let config = v1::JwtConfig {
                name: name.clone(),
                issuer: parsed.issuer,
                jwks_file: parsed.jwks_file.display().to_string(),
                audiences: parsed.audiences,
                tenant: parsed.tenant,
                tenant_claim: parsed.tenant_claim,
                user_claim: parsed.user_claim,
                policies: parsed.policies,
                policy_map: parsed
                    .policy_map
                    .into_iter()
                    .map(|m| v1::PolicyMapping {
                        claim: m.claim,
                        value: m.value,
                        policies: m.policies,
                    })
                    .collect(),
                token_ttl_seconds: duration_field(parsed.token_ttl, "token_ttl", &file)?,
                refresh_max_ttl_seconds: duration_field(
                    parsed.refresh_max_ttl,
                    "refresh_max_ttl",
                    &file,
                )?,
                bound_cidrs: parsed.bound_cidrs,
                leeway_seconds: parsed.leeway_seconds,
            };
            let request = v1::WriteJwtConfigRequest {
                config: Some(config),
            };
            call!(ctx, new, write_jwt_config, request).await?;
            show(&Done::written("jwt configuration", name), format)
        }
        JwtCommand::Read { name } => {
            let config = call!(ctx, new, read_jwt_config, v1::ReadJwtConfigRequest { name })
                .await?
                .config;
            show(&JwtConfig::from(config.unwrap_or_default()), format)
        }
        JwtCommand::Delete { name } => {
            let request = v1::DeleteJwtConfigRequest { name: name.clone() };
            call!(ctx, new, delete_jwt_config, request).await?;
            show(&Done::deleted("jwt configuration", name), format)
        }
    }
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
