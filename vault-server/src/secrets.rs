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
    serve::{at, serve},
};

pub struct SecretsService {
    shared: Arc<Shared>,
}

impl SecretsService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        SecretsService { shared }
    }
}

/// The tenant and secret path a request names, parsed.
fn secret(tenant: &str, path: &str) -> Result<(TenantName, SecretPath), Error> {
    Ok((TenantName::parse(tenant)?, SecretPath::parse(path)?))
}

fn versions_changed(changed: VersionsChange) -> Option<v1::VersionsChanged> {
    Some(v1::VersionsChanged {
        versions: changed.versions,
        revision: changed.revision,
    })
}

#[tonic::async_trait]
impl Secrets for SecretsService {
    async fn put(
        &self,
        request: Request<v1::PutRequest>,
    ) -> Result<Response<v1::PutResponse>, Status> {
        // The values move into buffers that zeroize, before anything else is checked.
        let request = request.map(|mut r| (sealed_fields(std::mem::take(&mut r.data)), r));
        let outcome = serve(
            &self.shared.vault,
            request,
            |(_, r)| at(&r.tenant, &r.path),
            |(data, r)| Ok((secret(&r.tenant, &r.path)?, data, r.cas)),
            |step, ((tenant, path), data, cas)| {
                step.vault
                    .secrets()
                    .put_checked(step.caller()?, &tenant, &path, data, cas)
            },
        )
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
        let (path, found) = serve(
            &self.shared.vault,
            request,
            |r| at(&r.tenant, &r.path),
            |r| Ok((secret(&r.tenant, &r.path)?, r.version)),
            |step, ((tenant, path), version)| {
                let found = step
                    .vault
                    .secrets()
                    .get(step.caller()?, &tenant, &path, version)?;
                Ok((path, found))
            },
        )
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
        let page = serve(
            &self.shared.vault,
            request,
            |r| at(&r.tenant, &r.prefix),
            |r| {
                let tenant = TenantName::parse(&r.tenant)?;
                let prefix = FolderPrefix::parse(&r.prefix)?;
                Ok((tenant, prefix, r))
            },
            |step, (tenant, prefix, r)| {
                step.vault.secrets().list(
                    step.caller()?,
                    &tenant,
                    &prefix,
                    r.page_size as usize,
                    &r.page_token,
                    r.recursive,
                )
            },
        )
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
        let changed = serve(
            &self.shared.vault,
            request,
            |r| at(&r.tenant, &r.path),
            |r| Ok((secret(&r.tenant, &r.path)?, r.versions)),
            |step, ((tenant, path), versions)| {
                step.vault
                    .secrets()
                    .delete_versions(step.caller()?, &tenant, &path, &versions)
            },
        )
        .await?;
        Ok(Response::new(v1::DeleteResponse {
            changed: versions_changed(changed),
        }))
    }

    async fn undelete(
        &self,
        request: Request<v1::UndeleteRequest>,
    ) -> Result<Response<v1::UndeleteResponse>, Status> {
        let changed = serve(
            &self.shared.vault,
            request,
            |r| at(&r.tenant, &r.path),
            |r| Ok((secret(&r.tenant, &r.path)?, r.versions)),
            |step, ((tenant, path), versions)| {
                step.vault
                    .secrets()
                    .undelete_versions(step.caller()?, &tenant, &path, &versions)
            },
        )
        .await?;
        Ok(Response::new(v1::UndeleteResponse {
            changed: versions_changed(changed),
        }))
    }

    async fn destroy(
        &self,
        request: Request<v1::DestroyRequest>,
    ) -> Result<Response<v1::DestroyResponse>, Status> {
        let changed = serve(
            &self.shared.vault,
            request,
            |r| at(&r.tenant, &r.path),
            |r| Ok((secret(&r.tenant, &r.path)?, r.versions)),
            |step, ((tenant, path), versions)| {
                step.vault
                    .secrets()
                    .destroy_versions(step.caller()?, &tenant, &path, &versions)
            },
        )
        .await?;
        Ok(Response::new(v1::DestroyResponse {
            changed: versions_changed(changed),
        }))
    }

    async fn delete_metadata(
        &self,
        request: Request<v1::DeleteMetadataRequest>,
    ) -> Result<Response<v1::DeleteMetadataResponse>, Status> {
        let changed = serve(
            &self.shared.vault,
            request,
            |r| at(&r.tenant, &r.path),
            |r| secret(&r.tenant, &r.path),
            |step, (tenant, path)| {
                step.vault
                    .secrets()
                    .delete_metadata(step.caller()?, &tenant, &path)
            },
        )
        .await?;
        Ok(Response::new(v1::DeleteMetadataResponse {
            changed: versions_changed(changed),
        }))
    }

    async fn patch(
        &self,
        request: Request<v1::PatchRequest>,
    ) -> Result<Response<v1::PatchResponse>, Status> {
        let request = request.map(|mut r| (sealed_fields(std::mem::take(&mut r.data)), r));
        let outcome = serve(
            &self.shared.vault,
            request,
            |(_, r)| at(&r.tenant, &r.path),
            |(changes, r)| Ok((secret(&r.tenant, &r.path)?, changes, r.remove, r.cas)),
            |step, ((tenant, path), changes, remove, cas)| {
                step.vault
                    .secrets()
                    .patch(step.caller()?, &tenant, &path, changes, &remove, cas)
            },
        )
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
        let meta = serve(
            &self.shared.vault,
            request,
            |r| at(&r.tenant, &r.path),
            |r| secret(&r.tenant, &r.path),
            |step, (tenant, path)| {
                step.vault
                    .secrets()
                    .read_metadata(step.caller()?, &tenant, &path)
            },
        )
        .await?;
        Ok(Response::new(metadata_message(meta)))
    }

    async fn update_metadata(
        &self,
        request: Request<v1::UpdateMetadataRequest>,
    ) -> Result<Response<v1::ReadMetadataResponse>, Status> {
        let meta = serve(
            &self.shared.vault,
            request,
            |r| at(&r.tenant, &r.path),
            |r| {
                let target = secret(&r.tenant, &r.path)?;
                let update = MetadataUpdate {
                    max_versions: r.max_versions,
                    cas_required: r.cas_required,
                    custom: r.custom.into_iter().collect(),
                    remove_custom: r.remove_custom,
                    expires_at_unix_nanos: deadline("expires_at", r.expires_at)?,
                    rotate_by_unix_nanos: deadline("rotate_by", r.rotate_by)?,
                };
                Ok((target, update))
            },
            |step, ((tenant, path), update)| {
                step.vault
                    .secrets()
                    .update_metadata(step.caller()?, &tenant, &path, update)
            },
        )
        .await?;
        Ok(Response::new(metadata_message(meta)))
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
