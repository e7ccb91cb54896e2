//! `vault-cli rotate [--all]` and `vault-cli kek ...` (status, retire): the KEK lifecycle.

use clap::Subcommand;
use serde::Serialize;
use vault_proto::v1::{self, keys_client::KeysClient, system_client::SystemClient};

use crate::{
    Format,
    client::{CliError, CliResult, Ctx},
    output::{Show, show},
};

#[derive(clap::Args, Debug)]
pub struct RotateArgs {
    #[arg(long, env = "VAULT_TENANT", required_unless_present = "all")]
    pub tenant: Option<String>,
    /// Rotate every tenant's KEK (system scope).
    #[arg(long)]
    pub all: bool,
}

#[derive(Subcommand, Debug)]
pub enum KekCommand {
    /// KEK versions with creation time, invocation count, remaining budget and state; the
    /// re-wrap job's progress; retired versions. Without --tenant: every tenant and the root key
    /// (system scope).
    Status {
        #[arg(long, env = "VAULT_TENANT")]
        tenant: Option<String>,
        /// Without --tenant: tenants per page (at most 1000; the server's default is 100).
        /// With --page-size or --page-token one page is shown, with the token of the next;
        /// without either, every page.
        #[arg(long)]
        page_size: Option<u32>,
        /// The page after the one that printed this token.
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Schedule a KEK version for retirement: its data keys are re-wrapped into the current
    /// version in the background, then it is destroyed.
    Retire {
        #[arg(long, env = "VAULT_TENANT")]
        tenant: String,
        #[arg(long)]
        version: u32,
    },
}

#[derive(Serialize)]
struct Rotated {
    tenant: String,
    key_version: u32,
}

impl From<v1::RotatedTenant> for Rotated {
    fn from(rotated: v1::RotatedTenant) -> Self {
        Rotated {
            tenant: rotated.tenant,
            key_version: rotated.key_version,
        }
    }
}

impl Show for Rotated {
    fn text(&self) -> String {
        format!(
            "Rotated tenant {}: key version {} seals new data.\n",
            self.tenant, self.key_version
        )
    }
}

/// `rotate --all`.
#[derive(Serialize)]
struct RotatedAll {
    rotated: Vec<Rotated>,
}

impl Show for RotatedAll {
    fn text(&self) -> String {
        let mut out: String = self.rotated.iter().map(Rotated::text).collect();
        out.push_str(&format!("{} tenants rotated.\n", self.rotated.len()));
        out
    }
}

pub async fn rotate(ctx: &Ctx, tenant: Option<String>, all: bool, format: Format) -> CliResult<()> {
    let request = v1::RotateRequest {
        tenant: if all {
            String::new()
        } else {
            tenant.unwrap_or_default()
        },
        all,
    };
    let response = call!(ctx, SystemClient::new, rotate, request).await?;
    if all {
        let rotated = response.rotated.into_iter().map(Rotated::from).collect();
        return show(&RotatedAll { rotated }, format);
    }
    show(
        &Rotated {
            tenant: response.tenant,
            key_version: response.key_version,
        },
        format,
    )
}

#[derive(Serialize)]
struct Scheduled {
    tenant: String,
    version: u32,
    scheduled: bool,
}

impl Show for Scheduled {
    fn text(&self) -> String {
        format!(
            "KEK version {version} of tenant {tenant} is scheduled for retirement; \
             `vault-cli keys status --tenant {tenant}` shows the re-wrap progress.\n",
            version = self.version,
            tenant = self.tenant
        )
    }
}

pub async fn kek(ctx: &Ctx, command: KekCommand, format: Format) -> CliResult<()> {
    let new = KeysClient::new;
    match command {
        KekCommand::Status {
            tenant,
            page_size,
            page_token,
        } => {
            let one_page = page_size.is_some() || page_token.is_some();
            let mut request = v1::KeyStatusRequest {
                tenant: tenant.unwrap_or_default(),
                page_size: page_size.unwrap_or(0),
                page_token: page_token.unwrap_or_default(),
            };
            let mut status = call!(ctx, new, key_status, request.clone()).await?;
            while !one_page && !status.next_page_token.is_empty() {
                if status.next_page_token == request.page_token {
                    return Err(CliError::new(
                        "the server answered the same page token twice; stopping",
                    ));
                }
                request.page_token = std::mem::take(&mut status.next_page_token);
                let page = call!(ctx, new, key_status, request.clone()).await?;
                status.tenants.extend(page.tenants);
                status.next_page_token = page.next_page_token;
            }
            show(&KekStatus::from(status), format)
        }
        KekCommand::Retire { tenant, version } => {
            let request = v1::RetireKeyVersionRequest {
                tenant: tenant.clone(),
                version,
            };
            call!(ctx, new, retire_key_version, request).await?;
            let scheduled = Scheduled {
                tenant,
                version,
                scheduled: true,
            };
            show(&scheduled, format)
        }
    }
}

/// `kek status`: the budget and rotation settings, the root key and each tenant's KEK versions.
#[derive(Serialize)]
struct KekStatus {
    budget: u64,
    max_age_seconds: u64,
    max_live_versions: u32,
    root: Option<RootKey>,
    tenants: Vec<TenantKeys>,
    /// Only when one page was asked for and more follow.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

#[derive(Serialize)]
struct RootKey {
    version: u32,
    invocations: u64,
    reserved: u64,
    remaining: u64,
}

#[derive(Serialize)]
struct TenantKeys {
    tenant: String,
    id: String,
    current_version: u32,
    versions: Vec<KekVersion>,
    rewrap: Option<Rewrap>,
    retired: Vec<Retired>,
}

#[derive(Serialize)]
struct KekVersion {
    version: u32,
    created_time: String,
    invocations: u64,
    reserved: u64,
    remaining: u64,
    state: String,
}

#[derive(Serialize)]
struct Rewrap {
    versions: Vec<u32>,
    started_time: String,
    scanned: u64,
    rewrapped: u64,
    total: u64,
}

#[derive(Serialize)]
struct Retired {
    version: u32,
    retired_time: String,
    rewrapped: u64,
}

impl From<v1::KeyStatusResponse> for KekStatus {
    fn from(status: v1::KeyStatusResponse) -> Self {
        KekStatus {
            next_page_token: (!status.next_page_token.is_empty()).then_some(status.next_page_token),
            budget: status.budget,
            max_age_seconds: status.max_age_seconds,
            max_live_versions: status.max_live_versions,
            root: status.root.map(|r| RootKey {
                version: r.version,
                invocations: r.invocations,
                reserved: r.reserved,
                remaining: r.remaining,
            }),
            tenants: status.tenants.into_iter().map(TenantKeys::from).collect(),
        }
    }
}

impl From<v1::TenantKeys> for TenantKeys {
    fn from(t: v1::TenantKeys) -> Self {
        TenantKeys {
            tenant: t.tenant,
            id: t.id,
            current_version: t.current_version,
            versions: t
                .versions
                .into_iter()
                .map(|v| KekVersion {
                    version: v.version,
                    created_time: v.created_time,
                    invocations: v.invocations,
                    reserved: v.reserved,
                    remaining: v.remaining,
                    state: v.state,
                })
                .collect(),
            rewrap: t.rewrap.map(|j| Rewrap {
                versions: j.versions,
                started_time: j.started_time,
                scanned: j.scanned,
                rewrapped: j.rewrapped,
                total: j.total,
            }),
            retired: t
                .retired
                .into_iter()
                .map(|r| Retired {
                    version: r.version,
                    retired_time: r.retired_time,
                    rewrapped: r.rewrapped,
                })
                .collect(),
        }
    }
}

impl Show for KekStatus {
    fn text(&self) -> String {
        let age = match self.max_age_seconds {
            0 => "never by age".to_owned(),
            s => format!("every {s} s"),
        };
        let live = match self.max_live_versions {
            0 => "on request only".to_owned(),
            n => format!("beyond {n} live versions"),
        };
        let mut out = format!(
            "Budget: {} invocations per key version; rotation {age}; retirement {live}.\n",
            self.budget
        );
        if let Some(root) = &self.root {
            out.push_str(&format!(
                "Root key v{}: {} invocations, {} remaining.\n",
                root.version, root.invocations, root.remaining
            ));
        }
        for tenant in &self.tenants {
            out.push_str(&format!(
                "\nTenant {} (id {}): current version {}\n",
                tenant.tenant, tenant.id, tenant.current_version
            ));
            out.push_str(&format!(
                "  {:>7}  {:<9}  {:<30}  {:>12}  {:>12}\n",
                "VERSION", "STATE", "CREATED", "INVOCATIONS", "REMAINING"
            ));
            for v in &tenant.versions {
                out.push_str(&format!(
                    "  {:>7}  {:<9}  {:<30}  {:>12}  {:>12}\n",
                    v.version, v.state, v.created_time, v.invocations, v.remaining
                ));
            }
            if let Some(job) = &tenant.rewrap {
                let versions: Vec<String> = job.versions.iter().map(u32::to_string).collect();
                out.push_str(&format!(
                    "  Re-wrap of versions {}: {} of {} secret versions scanned, {} data keys \
                     re-wrapped.\n",
                    versions.join(", "),
                    job.scanned,
                    job.total,
                    job.rewrapped
                ));
            }
            for r in &tenant.retired {
                out.push_str(&format!(
                    "  Retired version {} at {} ({} data keys re-wrapped).\n",
                    r.version, r.retired_time, r.rewrapped
                ));
            }
        }
        if let Some(token) = &self.next_page_token {
            out.push_str(&format!("(more tenants: --page-token {token})\n"));
        }
        out
    }
}
