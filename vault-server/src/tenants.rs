//! Tenants service: create and list.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vault_core::{names::TenantName, time::rfc3339, vault::TenantInfo};
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
        let v1::CreateTenantRequest { name } = request.into_inner();
        call.target(&name, "");
        let vault = Arc::clone(&self.shared.vault);
        let info = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let name = TenantName::parse(&name)?;
                call.intent()?;
                vault.create_tenant(&caller, &name)
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
}
