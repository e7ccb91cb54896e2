//! Secrets service: put, get, list, delete.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vault_core::{
    names::{FolderPrefix, SecretPath, TenantName},
    secret::{SecretBytes, SecretData},
    time::rfc3339,
};
use vault_proto::v1::{self, secrets_server::Secrets};

use crate::{
    Shared,
    call::{Call, presented_token},
};

pub struct SecretsService {
    shared: Arc<Shared>,
}

impl SecretsService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        SecretsService { shared }
    }
}

#[tonic::async_trait]
impl Secrets for SecretsService {
    async fn put(
        &self,
        request: Request<v1::PutRequest>,
    ) -> Result<Response<v1::PutResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::PutRequest { tenant, path, data } = request.into_inner();
        call.target(&tenant, &path);
        // The values move (no copy) into buffers that zeroize on drop.
        let mut secret = SecretData::new();
        for (name, value) in data {
            secret.insert(name, SecretBytes::new(value));
        }
        let vault = Arc::clone(&self.shared.vault);
        let outcome = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let tenant = TenantName::parse(&tenant)?;
                let path = SecretPath::parse(&path)?;
                call.intent()?;
                vault.put(&caller, &tenant, &path, secret)
            })
            .await?;
        Ok(Response::new(v1::PutResponse {
            version: outcome.version,
            created_time: rfc3339(outcome.created_unix_nanos),
        }))
    }

    async fn get(
        &self,
        request: Request<v1::GetRequest>,
    ) -> Result<Response<v1::GetResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::GetRequest {
            tenant,
            path,
            version,
        } = request.into_inner();
        call.target(&tenant, &path);
        let vault = Arc::clone(&self.shared.vault);
        let (path, found) = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let tenant = TenantName::parse(&tenant)?;
                let path = SecretPath::parse(&path)?;
                let found = vault.get(&caller, &tenant, &path, version)?;
                Ok((path, found))
            })
            .await?;
        let data = found
            .data
            .expose_secret()
            .map(|(name, value)| (name.to_owned(), value.to_vec()))
            .collect();
        Ok(Response::new(v1::GetResponse {
            path: path.to_string(),
            version: found.version,
            data,
            created_time: rfc3339(found.created_unix_nanos),
            key_version: found.key_version,
        }))
    }

    async fn list(
        &self,
        request: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::ListRequest {
            tenant,
            prefix,
            page_size,
            page_token,
            recursive,
        } = request.into_inner();
        call.target(&tenant, &prefix);
        let vault = Arc::clone(&self.shared.vault);
        let page = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let tenant = TenantName::parse(&tenant)?;
                let prefix = FolderPrefix::parse(&prefix)?;
                vault.list(
                    &caller,
                    &tenant,
                    &prefix,
                    page_size as usize,
                    &page_token,
                    recursive,
                )
            })
            .await?;
        Ok(Response::new(v1::ListResponse {
            keys: page.keys,
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn delete(
        &self,
        request: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::DeleteResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::DeleteRequest { tenant, path } = request.into_inner();
        call.target(&tenant, &path);
        let vault = Arc::clone(&self.shared.vault);
        call.blocking(move |call| {
            let caller = call.authenticate(&vault, token)?;
            let tenant = TenantName::parse(&tenant)?;
            let path = SecretPath::parse(&path)?;
            call.intent()?;
            vault.delete(&caller, &tenant, &path)
        })
        .await?;
        Ok(Response::new(v1::DeleteResponse {}))
    }
}
