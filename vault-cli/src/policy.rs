//! `vault-cli policy ...` (write, read, list, delete).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vault_proto::v1::{self, policies_client::PoliciesClient};

use crate::{
    Format,
    client::{CliError, CliResult, Ctx},
    output::{Done, Field, Show, show},
    secrets::TenantArg,
};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rule: Vec<Rule>,
    /// Capabilities this policy grants only with an MFA code.
    #[serde(default)]
    require_mfa: Vec<String>,
}

/// A `[[rule]]` of a policy file, and a rule as `policy read` prints it.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    path: String,
    capabilities: Vec<String>,
}

#[derive(Serialize)]
struct Policy {
    name: String,
    rules: Vec<Rule>,
    require_mfa: Vec<String>,
}

impl Show for Policy {
    fn text(&self) -> String {
        let mut out = String::new();
        if !self.require_mfa.is_empty() {
            out.push_str(&format!(
                "require_mfa = {}\n\n",
                json_text(&self.require_mfa)
            ));
        }
        for rule in &self.rules {
            out.push_str(&format!(
                "[[rule]]\npath = {}\ncapabilities = {}\n\n",
                json_text(&rule.path),
                json_text(&rule.capabilities)
            ));
        }
        out
    }
}

/// A value as compact JSON, which is also its TOML form for strings and string lists.
fn json_text<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

pub async fn policy_command(ctx: &Ctx, command: PolicyCommand, format: Format) -> CliResult<()> {
    let new = PoliciesClient::new;
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
            call!(ctx, new, write_policy, request).await?;
            show(&Done::written("policy", name), format)
        }
        PolicyCommand::Read { tenant, name } => {
            let request = v1::ReadPolicyRequest {
                tenant: tenant.tenant,
                name,
            };
            let policy = call!(ctx, new, read_policy, request).await?;
            let rules = policy
                .rules
                .into_iter()
                .map(|r| Rule {
                    path: r.path,
                    capabilities: r.capabilities,
                })
                .collect();
            show(
                &Policy {
                    name: policy.name,
                    rules,
                    require_mfa: policy.require_mfa,
                },
                format,
            )
        }
        PolicyCommand::List { tenant } => {
            let request = v1::ListPoliciesRequest {
                tenant: tenant.tenant,
            };
            let names = call!(ctx, new, list_policies, request).await?.names;
            show(&Field::lines("names", names), format)
        }
        PolicyCommand::Delete { tenant, name } => {
            let request = v1::DeletePolicyRequest {
                tenant: tenant.tenant,
                name: name.clone(),
            };
            call!(ctx, new, delete_policy, request).await?;
            show(&Done::deleted("policy", name), format)
        }
    }
}
