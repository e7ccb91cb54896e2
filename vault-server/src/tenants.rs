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
    call::{Call, presented_token},
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

#[tonic::async_trait]
impl Tenants for TenantsService {
    async fn create_tenant(
        &self,
        request: Request<v1::CreateTenantRequest>,
    ) -> Result<Response<v1::CreateTenantResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::CreateTenantRequest { name, settings } = request.into_inner();
        call.target(&name, "");
        let vault = Arc::clone(&self.shared.vault);
        let info = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let name = TenantName::parse(&name)?;
                call.intent()?;
                vault.create_tenant(&caller, &name, settings_of(settings))
            })
            .await?;
        Ok(Response::new(v1::CreateTenantResponse {
            tenant: Some(tenant_message(info)),
        }))
    }

    async fn list_tenants(
        &self,
        request: Request<v1::ListTenantsRequest>,
    ) -> Result<Response<v1::ListTenantsResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let vault = Arc::clone(&self.shared.vault);
        let tenants = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                vault.list_tenants(&caller)
            })
            .await?;
        Ok(Response::new(v1::ListTenantsResponse {
            tenants: tenants.into_iter().map(tenant_message).collect(),
        }))
    }

    async fn get_tenant(
        &self,
        request: Request<v1::GetTenantRequest>,
    ) -> Result<Response<v1::GetTenantResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::GetTenantRequest { name } = request.into_inner();
        call.target(&name, "");
        let vault = Arc::clone(&self.shared.vault);
        let info = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                vault.show_tenant(&caller, &TenantName::parse(&name)?)
            })
            .await?;
        Ok(Response::new(v1::GetTenantResponse {
            tenant: Some(tenant_message(info)),
        }))
    }

    async fn update_tenant(
        &self,
        request: Request<v1::UpdateTenantRequest>,
    ) -> Result<Response<v1::UpdateTenantResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::UpdateTenantRequest {
            name,
            allowed_cidrs,
            rate_limit,
            default_max_versions,
            cas_required,
        } = request.into_inner();
        call.target(&name, "");
        let vault = Arc::clone(&self.shared.vault);
        let info = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let name = TenantName::parse(&name)?;
                let update = TenantUpdate {
                    allowed_cidrs: allowed_cidrs.map(|list| list.cidrs),
                    rate_limit,
                    default_max_versions,
                    cas_required,
                };
                call.intent()?;
                vault.update_tenant(&caller, &name, update)
            })
            .await?;
        Ok(Response::new(v1::UpdateTenantResponse {
            tenant: Some(tenant_message(info)),
        }))
    }

    async fn delete_tenant(
        &self,
        request: Request<v1::DeleteTenantRequest>,
    ) -> Result<Response<v1::DeleteTenantResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::DeleteTenantRequest { name } = request.into_inner();
        call.target(&name, "");
        let vault = Arc::clone(&self.shared.vault);
        let shred_after = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let name = TenantName::parse(&name)?;
                call.intent()?;
                vault.delete_tenant(&caller, &name)
            })
            .await?;
        Ok(Response::new(v1::DeleteTenantResponse {
            shred_after: rfc3339(shred_after),
        }))
    }

    async fn restore_tenant(
        &self,
        request: Request<v1::RestoreTenantRequest>,
    ) -> Result<Response<v1::RestoreTenantResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::RestoreTenantRequest { name, id } = request.into_inner();
        call.target(&name, "");
        let vault = Arc::clone(&self.shared.vault);
        let info = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let name = TenantName::parse(&name)?;
                let id =
                    match id.trim() {
                        "" => None,
                        text => Some(TenantId::parse_hex(text).ok_or_else(|| {
                            Error::InvalidArgument {
                                field: "id",
                                reason: "not a tenant id (hex, as `tenant deleted` shows it)"
                                    .into(),
                            }
                        })?),
                    };
                call.intent()?;
                vault.restore_tenant(&caller, &name, id)
            })
            .await?;
        Ok(Response::new(v1::RestoreTenantResponse {
            tenant: Some(tenant_message(info)),
        }))
    }

    async fn list_deleted_tenants(
        &self,
        request: Request<v1::ListDeletedTenantsRequest>,
    ) -> Result<Response<v1::ListDeletedTenantsResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let vault = Arc::clone(&self.shared.vault);
        let deleted = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                vault.deleted_tenants(&caller)
            })
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
