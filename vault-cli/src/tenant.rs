//! `vault-cli tenant ...`: create, list, show, update, delete, restore and list deleted
//! tenants (system scope, except `show`, which a tenant's admin may run).

use clap::Subcommand;
use serde::Serialize;
use vault_proto::v1::{self, tenants_client::TenantsClient};

use crate::{
    client::{CliError, CliResult, Ctx},
    output::{Described, Show, rows_text, show},
    token::networks_text,
};

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        name: String,
        #[command(flatten)]
        settings: TenantSettingsArgs,
    },
    /// List tenants, in name order. Without --page-size or --page-token: every tenant (page by
    /// page); with either: one page, and the token of the next.
    List {
        /// Tenants per page (at most 1000; the server's default is 100).
        #[arg(long)]
        page_size: Option<u32>,
        /// The page after the one that printed this token.
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Show a tenant and its settings.
    Show { name: String },
    /// Change a tenant's settings; unnamed settings keep their value.
    Update {
        name: String,
        #[command(flatten)]
        settings: TenantSettingsArgs,
        /// Remove the network allowlist (calls from anywhere).
        #[arg(long, conflicts_with = "cidrs")]
        clear_cidrs: bool,
    },
    /// Delete a tenant: all access to it stops at once, and its keys are destroyed
    /// (crypto-shredding) after the server's waiting period unless it is restored first.
    Delete { name: String },
    /// Bring a deleted tenant back before its keys are destroyed.
    Restore {
        name: String,
        /// Which one, when several deleted tenants had the name (see `tenant deleted`).
        #[arg(long)]
        id: Option<String>,
    },
    /// Deleted tenants whose keys are not destroyed yet.
    Deleted,
}

#[derive(clap::Args, Debug)]
pub struct TenantSettingsArgs {
    /// A network the tenant's tokens may be used from, e.g. 10.0.0.0/8 (repeat for several).
    #[arg(long = "cidr")]
    pub cidrs: Vec<String>,
    /// Calls per second for all of the tenant's tokens together (0: no limit).
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Versions kept per secret by default (0: the server default).
    #[arg(long)]
    pub max_versions: Option<u32>,
    /// Require check-and-set (`put --cas N`) on every write of the tenant's secrets.
    #[arg(long, value_name = "BOOL")]
    pub cas_required: Option<bool>,
}

/// A tenant as `create`, `show`, `update` and `list --format json` print it.
#[derive(Serialize)]
struct Tenant {
    name: String,
    id: String,
    created_time: String,
    key_version: u32,
    allowed_cidrs: Vec<String>,
    rate_limit: u32,
    default_max_versions: u32,
    cas_required: bool,
}

impl From<v1::Tenant> for Tenant {
    fn from(tenant: v1::Tenant) -> Self {
        let settings = tenant.settings.unwrap_or_default();
        Tenant {
            name: tenant.name,
            id: tenant.id,
            created_time: tenant.created_time,
            key_version: tenant.key_version,
            allowed_cidrs: settings.allowed_cidrs,
            rate_limit: settings.rate_limit,
            default_max_versions: settings.default_max_versions,
            cas_required: settings.cas_required,
        }
    }
}

impl Show for Tenant {
    fn text(&self) -> String {
        rows_text(&[
            ("Name", self.name.clone()),
            ("Id", self.id.clone()),
            ("Created", self.created_time.clone()),
            ("Key version", self.key_version.to_string()),
            ("Networks", networks_text(&self.allowed_cidrs)),
            (
                "Rate limit",
                match self.rate_limit {
                    0 => "none".into(),
                    n => format!("{n} calls/s"),
                },
            ),
            (
                "Max versions",
                match self.default_max_versions {
                    0 => "server default".into(),
                    n => n.to_string(),
                },
            ),
            ("Check-and-set required", self.cas_required.to_string()),
        ])
    }
}

#[derive(Serialize)]
struct Listed {
    tenants: Vec<Tenant>,
    /// Only when one page was asked for and more follow.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

impl Show for Listed {
    fn text(&self) -> String {
        let mut text: String = self
            .tenants
            .iter()
            .map(|tenant| format!("{}\n", tenant.name))
            .collect();
        if let Some(token) = &self.next_page_token {
            text.push_str(&format!("(more: --page-token {token})\n"));
        }
        text
    }
}

#[derive(Serialize)]
struct Deleted {
    name: String,
    deleted: bool,
    shred_after: String,
}

impl Show for Deleted {
    fn text(&self) -> String {
        format!(
            "Deleted tenant {name}; its tokens no longer work. Its keys will be destroyed after {} \
             (`vault-cli tenant restore {name}` cancels until then).\n",
            self.shred_after,
            name = self.name
        )
    }
}

#[derive(Serialize)]
struct Restored {
    name: String,
    id: String,
    restored: bool,
}

impl Show for Restored {
    fn text(&self) -> String {
        format!(
            "Restored tenant {} (id {}); its keys will not be destroyed.\n",
            self.name, self.id
        )
    }
}

#[derive(Serialize)]
struct DeletedTenant {
    name: String,
    id: String,
    deleted_time: String,
    shred_after: String,
}

#[derive(Serialize)]
struct DeletedList {
    tenants: Vec<DeletedTenant>,
}

impl Show for DeletedList {
    fn text(&self) -> String {
        self.tenants
            .iter()
            .map(|t| {
                format!(
                    "{} (id {}): deleted {}, keys destroyed after {}\n",
                    t.name, t.id, t.deleted_time, t.shred_after
                )
            })
            .collect()
    }
}

pub async fn run(ctx: &Ctx, command: TenantCommand) -> CliResult<()> {
    let new = TenantsClient::new;
    match command {
        TenantCommand::Create { name, settings } => {
            let request = v1::CreateTenantRequest {
                name,
                settings: Some(v1::TenantSettings {
                    allowed_cidrs: settings.cidrs,
                    rate_limit: settings.rate_limit.unwrap_or(0),
                    default_max_versions: settings.max_versions.unwrap_or(0),
                    cas_required: settings.cas_required.unwrap_or(false),
                }),
            };
            let tenant = call!(ctx, new, create_tenant, request)
                .await?
                .tenant
                .unwrap_or_default();
            let tenant = Tenant::from(tenant);
            let text = format!("Created tenant {} (id {}).\n", tenant.name, tenant.id);
            show(&Described::new(tenant, text), ctx.format)
        }
        TenantCommand::Show { name } => {
            let tenant = call!(ctx, new, get_tenant, v1::GetTenantRequest { name })
                .await?
                .tenant
                .unwrap_or_default();
            show(&Tenant::from(tenant), ctx.format)
        }
        TenantCommand::Update {
            name,
            settings,
            clear_cidrs,
        } => {
            let allowed_cidrs =
                (clear_cidrs || !settings.cidrs.is_empty()).then_some(v1::CidrList {
                    cidrs: settings.cidrs,
                });
            let request = v1::UpdateTenantRequest {
                name,
                allowed_cidrs,
                rate_limit: settings.rate_limit,
                default_max_versions: settings.max_versions,
                cas_required: settings.cas_required,
            };
            let tenant = call!(ctx, new, update_tenant, request)
                .await?
                .tenant
                .unwrap_or_default();
            show(&Tenant::from(tenant), ctx.format)
        }
        TenantCommand::Delete { name } => {
            let request = v1::DeleteTenantRequest { name: name.clone() };
            let response = call!(ctx, new, delete_tenant, request).await?;
            show(
                &Deleted {
                    name,
                    deleted: true,
                    shred_after: response.shred_after,
                },
                ctx.format,
            )
        }
        TenantCommand::List {
            page_size,
            page_token,
        } => {
            let one_page = page_size.is_some() || page_token.is_some();
            let mut request = v1::ListTenantsRequest {
                page_size: page_size.unwrap_or(0),
                page_token: page_token.unwrap_or_default(),
            };
            let mut tenants = Vec::new();
            let next_page_token = loop {
                let page = call!(ctx, new, list_tenants, request.clone()).await?;
                tenants.extend(page.tenants.into_iter().map(Tenant::from));
                if page.next_page_token.is_empty() {
                    break None;
                }
                if one_page {
                    break Some(page.next_page_token);
                }
                if page.next_page_token == request.page_token {
                    return Err(CliError::new(
                        "the server answered the same page token twice; stopping",
                    ));
                }
                request.page_token = page.next_page_token;
            };
            show(
                &Listed {
                    tenants,
                    next_page_token,
                },
                ctx.format,
            )
        }
        TenantCommand::Restore { name, id } => {
            let request = v1::RestoreTenantRequest {
                name,
                id: id.unwrap_or_default(),
            };
            let tenant = call!(ctx, new, restore_tenant, request)
                .await?
                .tenant
                .unwrap_or_default();
            show(
                &Restored {
                    name: tenant.name,
                    id: tenant.id,
                    restored: true,
                },
                ctx.format,
            )
        }
        TenantCommand::Deleted => {
            let tenants = call!(
                ctx,
                new,
                list_deleted_tenants,
                v1::ListDeletedTenantsRequest {}
            )
            .await?
            .tenants;
            let tenants = tenants
                .into_iter()
                .map(|t| DeletedTenant {
                    name: t.name,
                    id: t.id,
                    deleted_time: t.deleted_time,
                    shred_after: t.shred_after,
                })
                .collect();
            show(&DeletedList { tenants }, ctx.format)
        }
    }
}
