//! Tenants service: create, list, get, update settings, delete.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vault_core::{
    Error,
    names::{TenantId, TenantName},
    time::rfc3339,
    vault::{TenantInfo, TenantSettings, TenantUpdate},
};
use vault_proto::v1::{self, tenants_server::Tenants};

use crate::{
    Shared,
    serve::{at, nothing, serve},
};

pub struct TenantsService {
    shared: Arc<Shared>,
}

impl TenantsService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        TenantsService { shared }
    }
}

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
impl Tenants for TenantsService {
    async fn create_tenant(
        &self,
        request: Request<v1::CreateTenantRequest>,
    ) -> Result<Response<v1::CreateTenantResponse>, Status> {
        let info = serve(
            &self.shared.vault,
            request,
            |r| at(&r.name, ""),
            |r| Ok((name_of(&r.name)?, settings_of(r.settings))),
            |step, (name, settings)| {
                step.vault
                    .tenants()
                    .create_tenant(step.caller()?, &name, settings)
            },
        )
        .await?;
        Ok(Response::new(v1::CreateTenantResponse {
            tenant: Some(tenant_message(info)),
        }))
    }

    async fn list_tenants(
        &self,
        request: Request<v1::ListTenantsRequest>,
    ) -> Result<Response<v1::ListTenantsResponse>, Status> {
        let tenants = serve(
            &self.shared.vault,
            request,
            nothing,
            |_| Ok(()),
            |step, ()| step.vault.tenants().list_tenants(step.caller()?),
        )
        .await?;
        Ok(Response::new(v1::ListTenantsResponse {
            tenants: tenants.into_iter().map(tenant_message).collect(),
        }))
    }

    async fn get_tenant(
        &self,
        request: Request<v1::GetTenantRequest>,
    ) -> Result<Response<v1::GetTenantResponse>, Status> {
        let info = serve(
            &self.shared.vault,
            request,
            |r| at(&r.name, ""),
            |r| name_of(&r.name),
            |step, name| step.vault.tenants().show_tenant(step.caller()?, &name),
        )
        .await?;
        Ok(Response::new(v1::GetTenantResponse {
            tenant: Some(tenant_message(info)),
        }))
    }

    async fn update_tenant(
        &self,
        request: Request<v1::UpdateTenantRequest>,
    ) -> Result<Response<v1::UpdateTenantResponse>, Status> {
        let info = serve(
            &self.shared.vault,
            request,
            |r| at(&r.name, ""),
            |r| {
                let update = TenantUpdate {
                    allowed_cidrs: r.allowed_cidrs.map(|list| list.cidrs),
                    rate_limit: r.rate_limit,
                    default_max_versions: r.default_max_versions,
                    cas_required: r.cas_required,
                };
                Ok((name_of(&r.name)?, update))
            },
            |step, (name, update)| {
                step.vault
                    .tenants()
                    .update_tenant(step.caller()?, &name, update)
            },
        )
        .await?;
        Ok(Response::new(v1::UpdateTenantResponse {
            tenant: Some(tenant_message(info)),
        }))
    }

    async fn delete_tenant(
        &self,
        request: Request<v1::DeleteTenantRequest>,
    ) -> Result<Response<v1::DeleteTenantResponse>, Status> {
        let shred_after = serve(
            &self.shared.vault,
            request,
            |r| at(&r.name, ""),
            |r| name_of(&r.name),
            |step, name| step.vault.tenants().delete_tenant(step.caller()?, &name),
        )
        .await?;
        Ok(Response::new(v1::DeleteTenantResponse {
            shred_after: rfc3339(shred_after),
        }))
    }

    async fn restore_tenant(
        &self,
        request: Request<v1::RestoreTenantRequest>,
    ) -> Result<Response<v1::RestoreTenantResponse>, Status> {
        let info = serve(
            &self.shared.vault,
            request,
            |r| at(&r.name, ""),
            |r| {
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
            },
            |step, (name, id)| {
                step.vault
                    .tenants()
                    .restore_tenant(step.caller()?, &name, id)
            },
        )
        .await?;
        Ok(Response::new(v1::RestoreTenantResponse {
            tenant: Some(tenant_message(info)),
        }))
    }

    async fn list_deleted_tenants(
        &self,
        request: Request<v1::ListDeletedTenantsRequest>,
    ) -> Result<Response<v1::ListDeletedTenantsResponse>, Status> {
        let deleted = serve(
            &self.shared.vault,
            request,
            nothing,
            |_| Ok(()),
            |step, ()| step.vault.tenants().deleted_tenants(step.caller()?),
        )
        .await?;
        Ok(Response::new(v1::ListDeletedTenantsResponse {
            tenants: deleted
                .into_iter()
                .map(|d| v1::DeletedTenant {
                    name: d.name.to_string(),
                    id: d.id.to_hex(),
                    deleted_time: rfc3339(d.deleted_unix_nanos),
                    shred_after: rfc3339(d.shred_after_unix_nanos),
                })
                .collect(),
        }))
    }
}
