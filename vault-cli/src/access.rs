//! `vault-cli token ...`, `vault-cli policy ...` and `vault-cli login`.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;
use serde_json::json;
use vault_proto::v1::{self, policies_client::PoliciesClient, tokens_client::TokensClient};
use zeroize::Zeroizing;

use crate::{
    Format, TenantArg,
    client::{CliError, CliResult, authed, connect, token},
    output::{print_json, print_rows},
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
}

#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {
    /// Create or replace a policy from a TOML file of [[rule]] tables (path, capabilities).
    Write {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        file: PathBuf,
    },
    Read {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
    },
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    Delete {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
    },
}

/// `30s`, `15m`, `1h`, `7d`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30m, 1h or 7d"))?;
    let seconds = match unit {
        "" | "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        "d" => value * 86_400,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (s, m, h, d)")),
    };
    Ok(Duration::from_secs(seconds))
}

pub fn info_rows(info: &v1::TokenInfo) -> Vec<(&'static str, String)> {
    vec![
        ("Accessor", info.accessor.clone()),
        (
            "Tenant",
            if info.system {
                "(system scope)".into()
            } else {
                info.tenant.clone()
            },
        ),
        ("Policies", info.policies.join(", ")),
        ("Display name", info.display_name.clone()),
        ("Created", info.created_time.clone()),
        (
            "Expires",
            if info.expire_time.is_empty() {
                "never".into()
            } else {
                info.expire_time.clone()
            },
        ),
        (
            "Max expiry",
            if info.max_expire_time.is_empty() {
                "never".into()
            } else {
                info.max_expire_time.clone()
            },
        ),
        ("Parent", info.parent_accessor.clone()),
        ("Entity", info.entity.clone()),
        (
            "Networks",
            if info.cidrs.is_empty() {
                "any".into()
            } else {
                info.cidrs.join(", ")
            },
        ),
    ]
}

pub fn info_json(info: &v1::TokenInfo) -> serde_json::Value {
    json!({
        "accessor": info.accessor, "tenant": info.tenant, "policies": info.policies, "system": info.system,
        "display_name": info.display_name, "created_time": info.created_time, "expire_time": info.expire_time,
        "max_expire_time": info.max_expire_time, "parent_accessor": info.parent_accessor, "cidrs": info.cidrs,
        "entity": info.entity, "family": info.family,
    })
}

fn print_info(info: &v1::TokenInfo, format: Format) {
    match format {
        Format::Json => print_json(&info_json(info)),
        Format::Text => print_rows(&info_rows(info)),
    }
}

pub async fn token_command(addr: &str, command: TokenCommand, format: Format) -> CliResult<()> {
    let status_error = |status: tonic::Status| CliError::from_status(status, addr);
    // A refresh token is the credential here; no access token is needed.
    if let TokenCommand::Refresh = command {
        return crate::login::refresh(addr, format).await;
    }
    let token = token()?;
    let mut client = TokensClient::new(connect(addr).await?);
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
            let response = client
                .create_token(authed(request, &token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            let created = Zeroizing::new(response.token.clone());
            let refresh = Zeroizing::new(response.refresh_token.clone());
            let info = response.info.clone().unwrap_or_default();
            crate::login::print_issued(&created, &refresh, &info, format);
            if format == Format::Text {
                println!();
                println!(
                    "The token is shown only now. Revoke it by accessor: vault-cli token revoke --accessor {}",
                    info.accessor
                );
            }
        }
        TokenCommand::Lookup { accessor } => {
            let request = v1::LookupTokenRequest {
                accessor: accessor.unwrap_or_default(),
            };
            let response = client
                .lookup_token(authed(request, &token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            print_info(&response.info.unwrap_or_default(), format);
        }
        TokenCommand::Renew {
            accessor,
            increment,
        } => {
            let request = v1::RenewTokenRequest {
                accessor: accessor.unwrap_or_default(),
                increment_seconds: increment.map_or(0, |d| d.as_secs()),
            };
            let response = client
                .renew_token(authed(request, &token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            print_info(&response.info.unwrap_or_default(), format);
        }
        // Answered above, before a token is required.
        TokenCommand::Refresh => crate::login::refresh(addr, format).await?,
        TokenCommand::Revoke {
            accessor,
            self_token: _,
        } => {
            let request = v1::RevokeTokenRequest {
                accessor: accessor.unwrap_or_default(),
            };
            let response = client
                .revoke_token(authed(request, &token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            match format {
                Format::Json => print_json(&json!({ "revoked": response.revoked })),
                Format::Text => println!("Revoked {} token(s).", response.revoked),
            }
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rule: Vec<RuleFile>,
    /// Capabilities this policy grants only with an MFA code.
    #[serde(default)]
    require_mfa: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    path: String,
    capabilities: Vec<String>,
}

pub async fn policy_command(addr: &str, command: PolicyCommand, format: Format) -> CliResult<()> {
    let status_error = |status: tonic::Status| CliError::from_status(status, addr);
    let token = token()?;
    let mut client = PoliciesClient::new(connect(addr).await?);
    match command {
        PolicyCommand::Write { tenant, name, file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| CliError::new(format!("cannot read {}: {e}", file.display())))?;
            let parsed: PolicyFile = toml::from_str(&text)
                .map_err(|e| CliError::new(format!("{}: {}", file.display(), e.message())))?;
            let rules = parsed
                .rule
                .into_iter()
                .map(|r| v1::PolicyRule {
                    path: r.path,
                    capabilities: r.capabilities,
                })
                .collect();
            let request = v1::WritePolicyRequest {
                tenant: tenant.tenant,
                name: name.clone(),
                rules,
                require_mfa: parsed.require_mfa,
            };
            client
                .write_policy(authed(request, &token)?)
                .await
                .map_err(status_error)?;
            match format {
                Format::Json => print_json(&json!({ "name": name, "written": true })),
                Format::Text => println!("Wrote policy {name}."),
            }
        }
        PolicyCommand::Read { tenant, name } => {
            let request = v1::ReadPolicyRequest {
                tenant: tenant.tenant,
                name,
            };
            let policy = client
                .read_policy(authed(request, &token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            match format {
                Format::Json => print_json(&json!({
                    "name": policy.name,
                    "rules": policy.rules.iter().map(|r| json!({ "path": r.path, "capabilities": r.capabilities })).collect::<Vec<_>>(),
                    "require_mfa": policy.require_mfa,
                })),
                Format::Text => {
                    if !policy.require_mfa.is_empty() {
                        println!("require_mfa = {}\n", json!(policy.require_mfa));
                    }
                    for rule in &policy.rules {
                        println!(
                            "[[rule]]\npath = {}\ncapabilities = {}\n",
                            json!(rule.path),
                            json!(rule.capabilities)
                        );
                    }
                }
            }
        }
        PolicyCommand::List { tenant } => {
            let request = v1::ListPoliciesRequest {
                tenant: tenant.tenant,
            };
            let names = client
                .list_policies(authed(request, &token)?)
                .await
                .map_err(status_error)?
                .into_inner()
                .names;
            match format {
                Format::Json => print_json(&json!({ "names": names })),
                Format::Text => names.iter().for_each(|n| println!("{n}")),
            }
        }
        PolicyCommand::Delete { tenant, name } => {
            let request = v1::DeletePolicyRequest {
                tenant: tenant.tenant,
                name: name.clone(),
            };
            client
                .delete_policy(authed(request, &token)?)
                .await
                .map_err(status_error)?;
            match format {
                Format::Json => print_json(&json!({ "name": name, "deleted": true })),
                Format::Text => println!("Deleted policy {name}."),
            }
        }
    }
    Ok(())
}
