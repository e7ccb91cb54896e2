//! `vault-cli jwt ...` (write, read, delete JWT/OIDC login configurations).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vault_proto::v1::{self, jwt_auth_client::JwtAuthClient};

use crate::{
    Format,
    client::{CliError, CliResult, Ctx},
    input::{parse_duration, read_toml},
    output::{Done, Show, show},
};

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
            let parsed: JwtConfigFile = read_toml(&file)?;
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
