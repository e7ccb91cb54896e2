//! Secrets service: put, patch, get, list, delete, undelete, destroy and metadata.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vault_core::{
    Error,
    names::{FolderPrefix, SecretPath, TenantName},
    secret::{SecretBytes, SecretData},
    time::{parse_rfc3339, rfc3339},
    vault::{MetadataUpdate, SecretMetadata, VersionsChange},
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
        let v1::PutRequest {
            tenant,
            path,
            data,
            cas,
        } = request.into_inner();
        call.target(&tenant, &path);
        let secret = sealed_fields(data);
        let vault = Arc::clone(&self.shared.vault);
        let outcome = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let tenant = TenantName::parse(&tenant)?;
                let path = SecretPath::parse(&path)?;
                call.intent()?;
                vault.put_checked(&caller, &tenant, &path, secret, cas)
            })
            .await?;
        Ok(Response::new(v1::PutResponse {
            version: outcome.version,
            created_time: rfc3339(outcome.created_unix_nanos),
            revision: outcome.revision,
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
            revision: page.revision,
        }))
    }

    async fn delete(
        &self,
        request: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::DeleteResponse>, Status> {
        let v1::DeleteRequest {
            tenant,
            path,
            versions,
        } = request.get_ref().clone();
        let changed = self
            .versions_call(
                &request,
                tenant,
                path,
                move |vault, caller, tenant, path| {
                    vault.delete_versions(caller, tenant, path, &versions)
                },
            )
            .await?;
        Ok(Response::new(v1::DeleteResponse {
            changed: Some(changed),
        }))
    }

    async fn undelete(
        &self,
        request: Request<v1::UndeleteRequest>,
    ) -> Result<Response<v1::UndeleteResponse>, Status> {
        let v1::UndeleteRequest {
            tenant,
            path,
            versions,
        } = request.get_ref().clone();
        let changed = self
            .versions_call(
                &request,
                tenant,
                path,
                move |vault, caller, tenant, path| {
                    vault.undelete_versions(caller, tenant, path, &versions)
                },
            )
            .await?;
        Ok(Response::new(v1::UndeleteResponse {
            changed: Some(changed),
        }))
    }

    async fn destroy(
        &self,
        request: Request<v1::DestroyRequest>,
    ) -> Result<Response<v1::DestroyResponse>, Status> {
        let v1::DestroyRequest {
            tenant,
            path,
            versions,
        } = request.get_ref().clone();
        let changed = self
            .versions_call(
                &request,
                tenant,
                path,
                move |vault, caller, tenant, path| {
                    vault.destroy_versions(caller, tenant, path, &versions)
                },
            )
            .await?;
        Ok(Response::new(v1::DestroyResponse {
            changed: Some(changed),
        }))
    }

    async fn delete_metadata(
        &self,
        request: Request<v1::DeleteMetadataRequest>,
    ) -> Result<Response<v1::DeleteMetadataResponse>, Status> {
        let v1::DeleteMetadataRequest { tenant, path } = request.get_ref().clone();
        let changed = self
            .versions_call(&request, tenant, path, |vault, caller, tenant, path| {
                vault.delete_metadata(caller, tenant, path)
            })
            .await?;
        Ok(Response::new(v1::DeleteMetadataResponse {
            changed: Some(changed),
        }))
    }

    async fn patch(
        &self,
        request: Request<v1::PatchRequest>,
    ) -> Result<Response<v1::PatchResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::PatchRequest {
            tenant,
            path,
            data,
            remove,
            cas,
        } = request.into_inner();
        call.target(&tenant, &path);
        let changes = sealed_fields(data);
        let vault = Arc::clone(&self.shared.vault);
        let outcome = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let tenant = TenantName::parse(&tenant)?;
                let path = SecretPath::parse(&path)?;
                call.intent()?;
                vault.patch(&caller, &tenant, &path, changes, &remove, cas)
            })
            .await?;
        Ok(Response::new(v1::PatchResponse {
            version: outcome.version,
            created_time: rfc3339(outcome.created_unix_nanos),
            revision: outcome.revision,
        }))
    }

    async fn read_metadata(
        &self,
        request: Request<v1::ReadMetadataRequest>,
    ) -> Result<Response<v1::ReadMetadataResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::ReadMetadataRequest { tenant, path } = request.into_inner();
        call.target(&tenant, &path);
        let vault = Arc::clone(&self.shared.vault);
        let meta = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let tenant = TenantName::parse(&tenant)?;
                let path = SecretPath::parse(&path)?;
                vault.read_metadata(&caller, &tenant, &path)
            })
            .await?;
        Ok(Response::new(metadata_message(meta)))
    }

    async fn update_metadata(
        &self,
        request: Request<v1::UpdateMetadataRequest>,
    ) -> Result<Response<v1::ReadMetadataResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::UpdateMetadataRequest {
            tenant,
            path,
            max_versions,
            cas_required,
            custom,
            remove_custom,
            expires_at,
            rotate_by,
        } = request.into_inner();
        call.target(&tenant, &path);
        let vault = Arc::clone(&self.shared.vault);
        let meta = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let tenant = TenantName::parse(&tenant)?;
                let path = SecretPath::parse(&path)?;
                let update = MetadataUpdate {
                    max_versions,
                    cas_required,
                    custom: custom.into_iter().collect(),
                    remove_custom,
                    expires_at_unix_nanos: deadline("expires_at", expires_at)?,
                    rotate_by_unix_nanos: deadline("rotate_by", rotate_by)?,
                };
                call.intent()?;
                vault.update_metadata(&caller, &tenant, &path, update)
            })
            .await?;
        Ok(Response::new(metadata_message(meta)))
    }
}

impl SecretsService {
    /// A delete, undelete, destroy or delete-all: authenticate, parse, intent, change.
    async fn versions_call<T>(
        &self,
        request: &Request<T>,
        tenant: String,
        path: String,
        change: impl FnOnce(
            &vault_core::Vault,
            &vault_core::vault::Caller,
            &TenantName,
            &SecretPath,
        ) -> Result<VersionsChange, Error>
        + Send
        + 'static,
    ) -> Result<v1::VersionsChanged, Status> {
        let call = Call::of(request);
        let token = presented_token(request);
        call.target(&tenant, &path);
        let vault = Arc::clone(&self.shared.vault);
        let changed = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let tenant = TenantName::parse(&tenant)?;
                let path = SecretPath::parse(&path)?;
                call.intent()?;
                change(&vault, &caller, &tenant, &path)
            })
            .await?;
        Ok(v1::VersionsChanged {
            versions: changed.versions,
            revision: changed.revision,
        })
    }
}

/// The values move (no copy) into buffers that zeroize on drop.
fn sealed_fields(data: std::collections::HashMap<String, Vec<u8>>) -> SecretData {
    let mut secret = SecretData::new();
    for (name, value) in data {
        secret.insert(name, SecretBytes::new(value));
    }
    secret
}

/// An RFC 3339 deadline from a request: unset leaves it, "" clears it (0).
fn deadline(field: &'static str, text: Option<String>) -> Result<Option<i64>, Error> {
    match text.as_deref() {
        None => Ok(None),
        Some("") => Ok(Some(0)),
        Some(text) => parse_rfc3339(text)
            .map(Some)
            .ok_or_else(|| Error::InvalidArgument {
                field,
                reason: format!("{text:?} is not an RFC 3339 time like 2027-01-31T12:00:00Z"),
            }),
    }
}

fn optional_time(nanos: i64) -> String {
    if nanos == 0 {
        String::new()
    } else {
        rfc3339(nanos)
    }
}

fn metadata_message(meta: SecretMetadata) -> v1::ReadMetadataResponse {
    v1::ReadMetadataResponse {
        path: meta.path,
        current_version: meta.current_version,
        oldest_version: meta.oldest_version,
        created_time: rfc3339(meta.created_unix_nanos),
        updated_time: rfc3339(meta.updated_unix_nanos),
        max_versions: meta.max_versions,
        effective_max_versions: meta.effective_max_versions,
        cas_required: meta.cas_required,
        custom: meta.custom.into_iter().collect(),
        expires_at: optional_time(meta.expires_at_unix_nanos),
        rotate_by: optional_time(meta.rotate_by_unix_nanos),
        versions: meta
            .versions
            .into_iter()
            .map(|v| v1::VersionInfo {
                version: v.version,
                created_time: rfc3339(v.created_unix_nanos),
                deletion_time: optional_time(v.deleted_unix_nanos),
                destroyed: v.destroyed,
                author: v.author,
            })
            .collect(),
    }
}
