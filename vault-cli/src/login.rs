//! `vault-cli login`, `token refresh`, `approle ...`, `jwt ...` and `mfa ...`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::json;
use vault_core::files::write_private;
use vault_proto::v1::{
    self, app_roles_client::AppRolesClient, jwt_auth_client::JwtAuthClient,
    login_client::LoginClient, mfa_client::MfaClient, tokens_client::TokensClient,
};
use zeroize::Zeroizing;

use crate::{
    Format, TenantArg,
    access::{info_json, info_rows, parse_duration},
    client::{CliError, CliResult, authed, connect, refresh_token_file, token, token_file},
    input::read_secret_line,
    output::{json_string, print_json, print_rows},
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

/// Prints a token just issued (and its refresh token, if any): shown once. The JSON is built
/// in a zeroizing buffer so no unzeroized copy of the token is left behind.
pub fn print_issued(token: &str, refresh: &str, info: &v1::TokenInfo, format: Format) {
    match format {
        Format::Json => {
            let mut out = Zeroizing::new(String::from("{\"token\":"));
            out.push_str(&json_string(token));
            if !refresh.is_empty() {
                out.push_str(",\"refresh_token\":");
                out.push_str(&json_string(refresh));
            }
            out.push_str(",\"info\":");
            out.push_str(&info_json(info).to_string());
            out.push('}');
            println!("{}", out.as_str());
        }
        Format::Text => {
            println!("Token:     {token}");
            if !refresh.is_empty() {
                println!("Refresh:   {refresh}");
            }
            print_rows(&info_rows(info));
        }
    }
}

/// Keeps (or prints) what a login returned.
fn finish_login(
    response: v1::LoginResponse,
    store: bool,
    format: Format,
    verb: &str,
) -> CliResult<()> {
    let token = Zeroizing::new(response.token.clone());
    let refresh = Zeroizing::new(response.refresh_token.clone());
    let info = response.info.clone().unwrap_or_default();
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
        match format {
            Format::Json => print_json(&json!({ "token_file": path, "info": info_json(&info) })),
            Format::Text => {
                println!(
                    "{verb}; the token is kept in {} (VAULT_TOKEN overrides it).",
                    path.display()
                );
                print_rows(&info_rows(&info));
            }
        }
        return Ok(());
    }
    print_issued(&token, &refresh, &info, format);
    Ok(())
}

pub async fn login(addr: &str, args: LoginArgs, format: Format) -> CliResult<()> {
    let status_error = |status: tonic::Status| CliError::from_status(status, addr);
    let response = match args.method {
        Method::Token => {
            let token = read_secret_line("Token (input hidden): ", "token")?;
            let mut client = TokensClient::new(connect(addr).await?);
            let info = client
                .lookup_token(authed(v1::LookupTokenRequest::default(), &token)?)
                .await
                .map_err(status_error)?
                .into_inner()
                .info;
            v1::LoginResponse {
                token: token.to_string(),
                info,
                refresh_token: String::new(),
            }
        }
        Method::Approle => {
            let secret_id = match &args.secret_id_file {
                Some(path) => read_file_secret(path, "secret id")?,
                None => read_secret_line("Secret id (input hidden): ", "secret id")?,
            };
            let request = v1::LoginAppRoleRequest {
                tenant: args.tenant.unwrap_or_default(),
                role_id: args.role_id.unwrap_or_default(),
                secret_id: secret_id.to_string(),
            };
            LoginClient::new(connect(addr).await?)
                .login_app_role(request)
                .await
                .map_err(status_error)?
                .into_inner()
        }
        Method::Jwt => {
            let jwt = match &args.jwt_file {
                Some(path) => read_file_secret(path, "jwt")?,
                None => read_secret_line("JWT (input hidden): ", "jwt")?,
            };
            let request = v1::LoginJwtRequest {
                config: args.config.unwrap_or_default(),
                jwt: jwt.to_string(),
            };
            LoginClient::new(connect(addr).await?)
                .login_jwt(request)
                .await
                .map_err(status_error)?
                .into_inner()
        }
    };
    finish_login(response, !args.no_store, format, "Logged in")
}

/// `vault-cli token refresh`: from VAULT_REFRESH_TOKEN (printed result) or the file `login`
/// keeps (both files updated).
pub async fn refresh(addr: &str, format: Format) -> CliResult<()> {
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
    let response = LoginClient::new(connect(addr).await?)
        .refresh(v1::RefreshRequest {
            refresh_token: refresh.to_string(),
        })
        .await
        .map_err(|s| CliError::from_status(s, addr))?
        .into_inner();
    finish_login(response, from_file, format, "Refreshed")
}

fn role_rows(role: &v1::AppRole) -> Vec<(&'static str, String)> {
    let list = |items: &[String]| {
        if items.is_empty() {
            "any".to_owned()
        } else {
            items.join(", ")
        }
    };
    vec![
        ("Role", role.name.clone()),
        ("Role id", role.role_id.clone()),
        ("Policies", role.policies.join(", ")),
        ("Token TTL", format!("{}s", role.token_ttl_seconds)),
        (
            "Refresh max TTL",
            match role.refresh_max_ttl_seconds {
                0 => "no refresh tokens".into(),
                n => format!("{n}s"),
            },
        ),
        (
            "Secret id uses",
            match role.secret_id_uses {
                0 => "unlimited".into(),
                n => n.to_string(),
            },
        ),
        ("Secret id TTL", format!("{}s", role.secret_id_ttl_seconds)),
        ("Login networks", list(&role.bound_cidrs)),
        ("Token networks", list(&role.token_cidrs)),
    ]
}

fn role_json(role: &v1::AppRole) -> serde_json::Value {
    json!({
        "name": role.name, "role_id": role.role_id, "policies": role.policies,
        "token_ttl_seconds": role.token_ttl_seconds, "refresh_max_ttl_seconds": role.refresh_max_ttl_seconds,
        "secret_id_uses": role.secret_id_uses, "secret_id_ttl_seconds": role.secret_id_ttl_seconds,
        "bound_cidrs": role.bound_cidrs, "token_cidrs": role.token_cidrs,
    })
}

fn print_role(role: &v1::AppRole, format: Format) {
    match format {
        Format::Json => print_json(&role_json(role)),
        Format::Text => print_rows(&role_rows(role)),
    }
}

pub async fn approle(addr: &str, command: ApproleCommand, format: Format) -> CliResult<()> {
    let status_error = |status: tonic::Status| CliError::from_status(status, addr);
    let token = token()?;
    let mut client = AppRolesClient::new(connect(addr).await?);
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
            let role = client
                .write_role(authed(request, &token)?)
                .await
                .map_err(status_error)?
                .into_inner()
                .role
                .unwrap_or_default();
            print_role(&role, format);
        }
        ApproleCommand::Read { tenant, name } => {
            let request = v1::ReadRoleRequest {
                tenant: tenant.tenant,
                name,
            };
            let role = client
                .read_role(authed(request, &token)?)
                .await
                .map_err(status_error)?
                .into_inner()
                .role
                .unwrap_or_default();
            print_role(&role, format);
        }
        ApproleCommand::Delete { tenant, name } => {
            let request = v1::DeleteRoleRequest {
                tenant: tenant.tenant,
                name: name.clone(),
            };
            client
                .delete_role(authed(request, &token)?)
                .await
                .map_err(status_error)?;
            match format {
                Format::Json => print_json(&json!({ "role": name, "deleted": true })),
                Format::Text => println!("Deleted role {name}; its secret ids no longer work."),
            }
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
            let response = client
                .generate_secret_id(authed(request, &token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            let secret_id = Zeroizing::new(response.secret_id.clone());
            match format {
                Format::Json => {
                    let mut out = Zeroizing::new(String::from("{\"secret_id\":"));
                    out.push_str(&json_string(&secret_id));
                    out.push_str(",\"accessor\":");
                    out.push_str(&json_string(&response.accessor));
                    out.push('}');
                    println!("{}", out.as_str());
                }
                Format::Text => {
                    println!("Secret id: {}", secret_id.as_str());
                    println!("Accessor:  {}", response.accessor);
                    println!();
                    println!("The secret id is shown only now.");
                }
            }
        }
    }
    Ok(())
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

pub async fn jwt(addr: &str, command: JwtCommand, format: Format) -> CliResult<()> {
    let status_error = |status: tonic::Status| CliError::from_status(status, addr);
    let token = token()?;
    let mut client = JwtAuthClient::new(connect(addr).await?);
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
            client
                .write_jwt_config(authed(
                    v1::WriteJwtConfigRequest {
                        config: Some(config),
                    },
                    &token,
                )?)
                .await
                .map_err(status_error)?;
            match format {
                Format::Json => print_json(&json!({ "name": name, "written": true })),
                Format::Text => println!("Wrote jwt configuration {name}."),
            }
        }
        JwtCommand::Read { name } => {
            let config = client
                .read_jwt_config(authed(v1::ReadJwtConfigRequest { name }, &token)?)
                .await
                .map_err(status_error)?
                .into_inner()
                .config
                .unwrap_or_default();
            let value = json!({
                "name": config.name, "issuer": config.issuer, "jwks_file": config.jwks_file,
                "audiences": config.audiences, "tenant": config.tenant, "tenant_claim": config.tenant_claim,
                "user_claim": config.user_claim, "policies": config.policies,
                "policy_map": config.policy_map.iter().map(|m| json!({"claim": m.claim, "value": m.value, "policies": m.policies})).collect::<Vec<_>>(),
                "token_ttl_seconds": config.token_ttl_seconds, "refresh_max_ttl_seconds": config.refresh_max_ttl_seconds,
                "bound_cidrs": config.bound_cidrs, "leeway_seconds": config.leeway_seconds,
            });
            match format {
                Format::Json => print_json(&value),
                Format::Text => println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                ),
            }
        }
        JwtCommand::Delete { name } => {
            client
                .delete_jwt_config(authed(
                    v1::DeleteJwtConfigRequest { name: name.clone() },
                    &token,
                )?)
                .await
                .map_err(status_error)?;
            match format {
                Format::Json => print_json(&json!({ "name": name, "deleted": true })),
                Format::Text => println!("Deleted jwt configuration {name}."),
            }
        }
    }
    Ok(())
}

pub async fn mfa(addr: &str, command: MfaCommand, format: Format) -> CliResult<()> {
    let status_error = |status: tonic::Status| CliError::from_status(status, addr);
    let token = token()?;
    let mut client = MfaClient::new(connect(addr).await?);
    match command {
        MfaCommand::Enroll { entity } => {
            let response = client
                .enroll_totp(authed(
                    v1::EnrollTotpRequest {
                        entity: entity.unwrap_or_default(),
                    },
                    &token,
                )?)
                .await
                .map_err(status_error)?
                .into_inner();
            let secret = Zeroizing::new(response.secret.clone());
            let uri = Zeroizing::new(response.otpauth_uri.clone());
            match format {
                Format::Json => {
                    let mut out = Zeroizing::new(String::from("{\"entity\":"));
                    out.push_str(&json_string(&response.entity));
                    out.push_str(",\"secret\":");
                    out.push_str(&json_string(&secret));
                    out.push_str(",\"otpauth_uri\":");
                    out.push_str(&json_string(&uri));
                    out.push('}');
                    println!("{}", out.as_str());
                }
                Format::Text => {
                    println!("Entity:  {}", response.entity);
                    println!("Secret:  {}", secret.as_str());
                    println!("URI:     {}", uri.as_str());
                    println!();
                    println!(
                        "Add the secret to an authenticator app now; it is shown only once. Pass codes with --mfa CODE."
                    );
                }
            }
        }
        MfaCommand::Reset { entity } => {
            client
                .reset_mfa(authed(
                    v1::ResetMfaRequest {
                        entity: entity.clone(),
                    },
                    &token,
                )?)
                .await
                .map_err(status_error)?;
            match format {
                Format::Json => print_json(&json!({ "entity": entity, "reset": true })),
                Format::Text => println!("Removed the mfa enrolment of {entity}."),
            }
        }
        MfaCommand::Require { operations } => {
            client
                .set_system_mfa(authed(
                    v1::SetSystemMfaRequest {
                        operations: operations.clone(),
                    },
                    &token,
                )?)
                .await
                .map_err(status_error)?;
            match format {
                Format::Json => print_json(&json!({ "operations": operations })),
                Format::Text if operations.is_empty() => {
                    println!("No system operation needs mfa now.")
                }
                Format::Text => println!("MFA is now required for: {}.", operations.join(", ")),
            }
        }
        MfaCommand::Show => {
            let operations = client
                .get_system_mfa(authed(v1::GetSystemMfaRequest {}, &token)?)
                .await
                .map_err(status_error)?
                .into_inner()
                .operations;
            match format {
                Format::Json => print_json(&json!({ "operations": operations })),
                Format::Text => operations.iter().for_each(|op| println!("{op}")),
            }
        }
    }
    Ok(())
}
