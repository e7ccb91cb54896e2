//! `vault-cli policy ...` (write, read, list, delete).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vault_proto::v1::{self, policies_client::PoliciesClient};

use crate::{
    Format,
    client::{CliResult, Ctx},
    input::read_toml,
    output::{Done, Field, Show, show},
    secrets::{NamedArg, TenantArg},
};

#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {
    /// Create or replace a policy from a TOML file of [[rule]] tables (path, capabilities).
    Write {
        #[command(flatten)]
        policy: NamedArg,
        file: PathBuf,
    },
    Read(NamedArg),
    List(TenantArg),
    Delete(NamedArg),
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

impl From<v1::PolicyRule> for Rule {
    fn from(rule: v1::PolicyRule) -> Self {
        Rule {
            path: rule.path,
            capabilities: rule.capabilities,
        }
    }
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
        PolicyCommand::Write { policy, file } => {
            let parsed: PolicyFile = read_toml(&file)?;
            let rules = parsed
                .rule
                .into_iter()
                .map(|r| v1::PolicyRule {
                    path: r.path,
                    capabilities: r.capabilities,
                })
                .collect();
            let request = v1::WritePolicyRequest {
                tenant: policy.tenant.tenant,
                name: policy.name.clone(),
                rules,
                require_mfa: parsed.require_mfa,
            };
            call!(ctx, new, write_policy, request).await?;
            show(&Done::written("policy", policy.name), format)
        }
        PolicyCommand::Read(policy) => {
            let request = v1::ReadPolicyRequest {
                tenant: policy.tenant.tenant,
                name: policy.name,
            };
            let policy = call!(ctx, new, read_policy, request).await?;
            let policy = Policy {
                name: policy.name,
                rules: policy.rules.into_iter().map(Rule::from).collect(),
                require_mfa: policy.require_mfa,
            };
            show(&policy, format)
        }
        PolicyCommand::List(tenant) => {
            let request = v1::ListPoliciesRequest {
                tenant: tenant.tenant,
            };
            let names = call!(ctx, new, list_policies, request).await?.names;
            show(&Field::lines("names", names), format)
        }
        PolicyCommand::Delete(policy) => {
            let request = v1::DeletePolicyRequest {
                tenant: policy.tenant.tenant,
                name: policy.name.clone(),
            };
            call!(ctx, new, delete_policy, request).await?;
            show(&Done::deleted("policy", policy.name), format)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz target (`vault-fuzz`): any policy file is read or refused, never a panic.
    #[test]
    fn fuzz_policy_toml() {
        vault_fuzz::run(
            env!("CARGO_MANIFEST_DIR"),
            "policy-toml",
            &[
                b"[[rule]]\npath = \"db/*\"\ncapabilities = [\"read\", \"list\"]\n",
                b"require_mfa = [\"write\"]\n[[rule]]\npath = \"\"\ncapabilities = []\n",
            ],
            |bytes| {
                let _ = toml::from_str::<PolicyFile>(&String::from_utf8_lossy(bytes));
            },
        );
    }
}
