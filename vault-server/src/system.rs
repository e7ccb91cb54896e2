//! System service: init, unseal, seal, status, rotate.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vault_core::{Error, names::TenantName, shamir::UnsealShare, vault::SealStatus};
use vault_proto::v1::{self, system_server::System};

use crate::{
    Shared,
    call::{Call, presented_token},
};

pub struct SystemService {
    shared: Arc<Shared>,
}

impl SystemService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        SystemService { shared }
    }
}

fn unseal_response(status: SealStatus) -> v1::UnsealResponse {
    v1::UnsealResponse {
        sealed: status.sealed,
        threshold: status.threshold,
        shares: status.shares,
        progress: status.progress,
    }
}

#[tonic::async_trait]
impl System for SystemService {
    async fn init(
        &self,
        request: Request<v1::InitRequest>,
    ) -> Result<Response<v1::InitResponse>, Status> {
        let call = Call::of(&request);
        let v1::InitRequest { shares, threshold } = request.into_inner();
        let vault = Arc::clone(&self.shared.vault);
        let output = call
            .blocking(move |call| {
                call.intent()?;
                vault.init(shares, threshold)
            })
            .await?;
        Ok(Response::new(v1::InitResponse {
            shares: output
                .shares
                .iter()
                .map(|share| share.expose_secret().to_string())
                .collect(),
            root_token: output.root_token.expose_secret().to_owned(),
            threshold: output.threshold,
        }))
    }

    async fn unseal(
        &self,
        request: Request<v1::UnsealRequest>,
    ) -> Result<Response<v1::UnsealResponse>, Status> {
        let call = Call::of(&request);
        let v1::UnsealRequest { share, reset } = request.into_inner();
        let share = zeroize::Zeroizing::new(share);
        let vault = Arc::clone(&self.shared.vault);
        let status = call
            .blocking(move |_| {
                if reset {
                    return vault.reset_unseal();
                }
                vault.unseal(UnsealShare::parse(&share)?)
            })
            .await?;
        Ok(Response::new(unseal_response(status)))
    }

    async fn seal(
        &self,
        request: Request<v1::SealRequest>,
    ) -> Result<Response<v1::SealResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let vault = Arc::clone(&self.shared.vault);
        call.blocking(move |call| {
            let caller = call.authenticate(&vault, token)?;
            call.intent()?;
            vault.seal(&caller)
        })
        .await?;
        tracing::warn!("vault sealed by request");
        Ok(Response::new(v1::SealResponse {}))
    }

    async fn status(
        &self,
        request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let call = Call::of(&request);
        let vault = Arc::clone(&self.shared.vault);
        // Status takes the seal locks, which init and unseal hold across storage I/O.
        let status = call.blocking(move |_| Ok(vault.status())).await?;
        Ok(Response::new(v1::StatusResponse {
            initialized: status.initialized,
            sealed: status.sealed,
            threshold: status.threshold,
            shares: status.shares,
            progress: status.progress,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            node_id: self.shared.node_id.clone(),
            storage: self.shared.vault.storage_kind().to_owned(),
        }))
    }

    async fn rotate(
        &self,
        request: Request<v1::RotateRequest>,
    ) -> Result<Response<v1::RotateResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::RotateRequest { tenant } = request.into_inner();
        call.target(&tenant, "");
        let vault = Arc::clone(&self.shared.vault);
        let (tenant, key_version) = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let tenant = TenantName::parse(&tenant)?;
                call.intent()?;
                let version = vault.rotate(&caller, &tenant)?;
                Ok::<_, Error>((tenant, version))
            })
            .await?;
        Ok(Response::new(v1::RotateResponse {
            tenant: tenant.to_string(),
            key_version,
        }))
    }
}
