//! `vault-cli token ...`, `vault-cli policy ...` and `vault-cli login`.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use vault_proto::v1::{self, policies_client::PoliciesClient, tokens_client::TokensClient};
use zeroize::Zeroizing;

use crate::{
    Format,
    client::{CliError, CliResult, Ctx},
    login::Issued,
    output::{Show, rows_text, show},
    secrets::TenantArg,
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
        let or_never = |time: &str| {
            if time.is_empty() {
                "never".to_owned()
            } else {
                time.to_owned()
            }
        };
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
            ("Expires", or_never(&self.expire_time)),
            ("Max expiry", or_never(&self.max_expire_time)),
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
        TokenCommand::Refresh => crate::login::refresh(ctx, format).await,
        TokenCommand::Revoke {
            accessor,
            self_token: _,
        } => {
            let request = v1::RevokeTokenRequest {
                accessor: accessor.unwrap_or_default(),
            };
            let revoked = call!(ctx, new, revoke_token, request).await?.revoked;
            let text = format!("Revoked {revoked} token(s).\n");
            show(&Field::new("revoked", revoked, text), format)
        }
    }
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

/// A command that changed one named thing: `{"<key>": name, "<flag>": true}` as JSON, and a
/// sentence as text (e.g. `policy write`: `{"name": .., "written": true}`, "Wrote policy ..").
pub struct Done {
    key: &'static str,
    name: String,
    flag: &'static str,
    /// The text, one line.
    text: String,
}

impl Done {
    pub fn new(key: &'static str, name: String, flag: &'static str, text: String) -> Self {
        Done {
            key,
            name,
            flag,
            text,
        }
    }

    /// `{"name": .., "written": true}`, "Wrote <what> <name>."
    pub fn written(what: &str, name: String) -> Self {
        let text = format!("Wrote {what} {name}.");
        Done::new("name", name, "written", text)
    }

    /// `{"name": .., "deleted": true}`, "Deleted <what> <name>."
    pub fn deleted(what: &str, name: String) -> Self {
        let text = format!("Deleted {what} {name}.");
        Done::new("name", name, "deleted", text)
    }
}

impl Serialize for Done {
    fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = out.serialize_map(Some(2))?;
        map.serialize_entry(self.key, &self.name)?;
        map.serialize_entry(self.flag, &true)?;
        map.end()
    }
}

impl Show for Done {
    fn text(&self) -> String {
        format!("{}\n", self.text)
    }
}

/// A result of one field: `{"<key>": value}` as JSON, and the given text (e.g. `policy list`:
/// `{"names": [..]}`, one name a line).
pub struct Field<T> {
    key: &'static str,
    value: T,
    text: String,
}

impl<T> Field<T> {
    /// `text`: every line ending in a newline.
    pub fn new(key: &'static str, value: T, text: String) -> Self {
        Field { key, value, text }
    }
}

impl Field<Vec<String>> {
    /// A list, one item a line as text.
    pub fn lines(key: &'static str, items: Vec<String>) -> Self {
        let text = items.iter().map(|item| format!("{item}\n")).collect();
        Field::new(key, items, text)
    }
}

impl<T: Serialize> Serialize for Field<T> {
    fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = out.serialize_map(Some(1))?;
        map.serialize_entry(self.key, &self.value)?;
        map.end()
    }
}

impl<T: Serialize> Show for Field<T> {
    fn text(&self) -> String {
        self.text.clone()
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
