//! Tenants service: create, list, get, update settings, delete.

use tonic::Request;
use vault_core::{
    Error,
    names::{TenantId, TenantName},
    time::rfc3339,
    vault::{PageRequest, TenantInfo, TenantSettings, TenantUpdate},
};
use vault_proto::v1::{
    self, CreateTenantRequest, CreateTenantResponse, DeleteTenantRequest, DeleteTenantResponse,
    GetTenantRequest, GetTenantResponse, ListDeletedTenantsRequest, ListDeletedTenantsResponse,
    ListTenantsRequest, ListTenantsResponse, RestoreTenantRequest, RestoreTenantResponse,
    UpdateTenantRequest, UpdateTenantResponse, tenants_server::Tenants,
};

use crate::serve::{Handlers, Reply, at};

fn tenant_message(info: TenantInfo) -> v1::Tenant {
    v1::Tenant {
        name: info.name.to_string(),
        id: info.id.to_hex(),
        created_time: rfc3339(info.created_unix_nanos),
        key_version: info.key_version,
        settings: Some(v1::TenantSettings {
            allowed_cidrs: info.settings.allowed_cidrs,
            rate_limit: info.settings.rate_limit,
            default_max_versions: info.settings.default_max_versions,
            cas_required: info.settings.cas_required,
        }),
    }
}

fn settings_of(message: Option<v1::TenantSettings>) -> TenantSettings {
    let message = message.unwrap_or_default();
    TenantSettings {
        allowed_cidrs: message.allowed_cidrs,
        rate_limit: message.rate_limit,
        default_max_versions: message.default_max_versions,
        cas_required: message.cas_required,
    }
}

fn name_of(name: &str) -> Result<TenantName, Error> {
    TenantName::parse(name)
}

#[tonic::async_trait]
impl Tenants for Handlers {
    async fn create_tenant(&self, r: Request<CreateTenantRequest>) -> Reply<CreateTenantResponse> {
        self.rpc(r)
            .target(|r| at(&r.name, ""))
            .parse(|r| Ok((name_of(&r.name)?, settings_of(r.settings))))
            .run(|step, (name, settings)| {
                step.vault
                    .tenants()
                    .create_tenant(step.caller()?, &name, settings)
            })
            .answer(|info| CreateTenantResponse {
                tenant: Some(tenant_message(info)),
            })
            .await
    }

    async fn list_tenants(&self, r: Request<ListTenantsRequest>) -> Reply<ListTenantsResponse> {
        self.rpc(r)
            .parse(|r| {
                Ok(PageRequest {
                    size: r.page_size as usize,
                    token: r.page_token.clone(),
                })
            })
            .run(|step, page| step.vault.tenants().list_tenants(step.caller()?, &page))
            .answer(|(tenants, next)| ListTenantsResponse {
                tenants: tenants.into_iter().map(tenant_message).collect(),
                next_page_token: next.unwrap_or_default(),
            })
            .await
    }

    async fn get_tenant(&self, r: Request<GetTenantRequest>) -> Reply<GetTenantResponse> {
        self.rpc(r)
            .target(|r| at(&r.name, ""))
            .parse(|r| name_of(&r.name))
            .run(|step, name| step.vault.tenants().show_tenant(step.caller()?, &name))
            .answer(|info| GetTenantResponse {
                tenant: Some(tenant_message(info)),
            })
            .await
    }

    async fn update_tenant(&self, r: Request<UpdateTenantRequest>) -> Reply<UpdateTenantResponse> {
        self.rpc(r)
            .target(|r| at(&r.name, ""))
            .parse(|r| {
                let update = TenantUpdate {
                    allowed_cidrs: r.allowed_cidrs.map(|list| list.cidrs),
                    rate_limit: r.rate_limit,
                    default_max_versions: r.default_max_versions,
                    cas_required: r.cas_required,
                };
                Ok((name_of(&r.name)?, update))
            })
            .run(|step, (name, update)| {
                step.vault
                    .tenants()
                    .update_tenant(step.caller()?, &name, update)
            })
            .answer(|info| UpdateTenantResponse {
                tenant: Some(tenant_message(info)),
            })
            .await
    }

    async fn delete_tenant(&self, r: Request<DeleteTenantRequest>) -> Reply<DeleteTenantResponse> {
        self.rpc(r)
            .target(|r| at(&r.name, ""))
            .parse(|r| name_of(&r.name))
            .run(|step, name| step.vault.tenants().delete_tenant(step.caller()?, &name))
            .answer(|shred_after| DeleteTenantResponse {
                shred_after: rfc3339(shred_after),
            })
            .await
    }

    async fn restore_tenant(
        &self,
        r: Request<RestoreTenantRequest>,
    ) -> Reply<RestoreTenantResponse> {
        self.rpc(r)
            .target(|r| at(&r.name, ""))
            .parse(|r| {
                let name = name_of(&r.name)?;
                let id =
                    match r.id.trim() {
                        "" => None,
                        text => Some(TenantId::parse_hex(text).ok_or_else(|| {
                            Error::InvalidArgument {
                                field: "id",
                                reason: "not a tenant id (hex, as `tenant deleted` shows it)"
                                    .into(),
                            }
                        })?),
                    };
                Ok((name, id))
            })
            .run(|step, (name, id)| {
                step.vault
                    .tenants()
                    .restore_tenant(step.caller()?, &name, id)
            })
            .answer(|info| RestoreTenantResponse {
                tenant: Some(tenant_message(info)),
            })
            .await
    }

    async fn list_deleted_tenants(
        &self,
        r: Request<ListDeletedTenantsRequest>,
    ) -> Reply<ListDeletedTenantsResponse> {
        self.rpc(r)
            .run(|step, ()| step.vault.tenants().deleted_tenants(step.caller()?))
            .answer(|deleted| ListDeletedTenantsResponse {
                tenants: deleted
                    .into_iter()
                    .map(|d| v1::DeletedTenant {
                        name: d.name.to_string(),
                        id: d.id.to_hex(),
                        deleted_time: rfc3339(d.deleted_unix_nanos),
                        shred_after: rfc3339(d.shred_after_unix_nanos),
                    })
                    .collect(),
            })
            .await
    }
}
