//! Secrets service: put, patch, get, list, delete, undelete, destroy and metadata.

use tonic::Request;
use vault_core::{
    Error,
    names::{FolderPrefix, SecretPath, TenantName},
    secret::{SecretBytes, SecretData},
    time::{parse_rfc3339, rfc3339},
    vault::{MetadataUpdate, SecretMetadata, VersionsChange},
};
use vault_proto::v1::{
    self, DeleteMetadataRequest, DeleteMetadataResponse, DeleteRequest, DeleteResponse,
    DestroyRequest, DestroyResponse, GetRequest, GetResponse, ListRequest, ListResponse,
    PatchRequest, PatchResponse, PutRequest, PutResponse, ReadMetadataRequest,
    ReadMetadataResponse, UndeleteRequest, UndeleteResponse, UpdateMetadataRequest,
    secrets_server::Secrets,
};

use crate::serve::{Handlers, Reply, at};

/// The tenant and secret path a request names, parsed.
pub(crate) fn secret(tenant: &str, path: &str) -> Result<(TenantName, SecretPath), Error> {
    Ok((TenantName::parse(tenant)?, SecretPath::parse(path)?))
}

fn versions_changed(changed: VersionsChange) -> Option<v1::VersionsChanged> {
    Some(v1::VersionsChanged {
        versions: changed.versions,
        revision: changed.revision,
    })
}

/// What delete, undelete and destroy name: a tenant, a secret path and versions.
type Versions = (String, String, Vec<u64>);

/// What delete, undelete or destroy does to the versions named.
#[derive(Clone, Copy)]
enum Change {
    Delete,
    Undelete,
    Destroy,
}

impl Handlers {
    /// Delete, undelete and destroy: one call but for the change and the response message.
    async fn secrets_change_versions<Resp>(
        &self,
        r: Request<Versions>,
        change: Change,
        respond: fn(Option<v1::VersionsChanged>) -> Resp,
    ) -> Reply<Resp> {
        self.rpc(r)
            .target(|(tenant, path, _)| at(tenant, path))
            .parse(|(tenant, path, versions)| Ok((secret(&tenant, &path)?, versions)))
            .run(move |step, ((tenant, path), versions)| {
                let secrets = step.vault.secrets();
                let caller = step.caller()?;
                match change {
                    Change::Delete => secrets.delete_versions(caller, &tenant, &path, &versions),
                    Change::Undelete => {
                        secrets.undelete_versions(caller, &tenant, &path, &versions)
                    }
                    Change::Destroy => secrets.destroy_versions(caller, &tenant, &path, &versions),
                }
            })
            .answer(|changed| respond(versions_changed(changed)))
            .await
    }
}

#[tonic::async_trait]
impl Secrets for Handlers {
    async fn put(&self, r: Request<PutRequest>) -> Reply<PutResponse> {
        // The values move into buffers that zeroize, before anything else is checked.
        let r = r.map(|mut r| (sealed_fields(std::mem::take(&mut r.data)), r));
        self.rpc(r)
            .target(|(_, r)| at(&r.tenant, &r.path))
            .parse(|(data, r)| Ok((secret(&r.tenant, &r.path)?, data, r.cas)))
            .run(|step, ((tenant, path), data, cas)| {
                step.vault
                    .secrets()
                    .put_checked(step.caller()?, &tenant, &path, data, cas)
            })
            .answer(|outcome| PutResponse {
                version: outcome.version,
                created_time: rfc3339(outcome.created_unix_nanos),
                revision: outcome.revision,
            })
            .await
    }

    async fn get(&self, r: Request<GetRequest>) -> Reply<GetResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, &r.path))
            .parse(|r| Ok((secret(&r.tenant, &r.path)?, r.version)))
            .run_now(|step, ((tenant, path), version)| {
                let found = step
                    .vault
                    .secrets()
                    .get(step.caller()?, &tenant, &path, version)?;
                Ok((path, found))
            })
            .answer_now(|(path, found)| {
                let data = found
                    .data
                    .expose_secret()
                    .map(|(name, value)| (name.to_owned(), value.to_vec()))
                    .collect();
                GetResponse {
                    path: path.to_string(),
                    version: found.version,
                    data,
                    created_time: rfc3339(found.created_unix_nanos),
                    key_version: found.key_version,
                }
            })
            .await
    }

    async fn list(&self, r: Request<ListRequest>) -> Reply<ListResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, &r.prefix))
            .parse(|r| {
                let tenant = TenantName::parse(&r.tenant)?;
                let prefix = FolderPrefix::parse(&r.prefix)?;
                Ok((tenant, prefix, r))
            })
            .run(|step, (tenant, prefix, r)| {
                step.vault.secrets().list(
                    step.caller()?,
                    &tenant,
                    &prefix,
                    r.page_size as usize,
                    &r.page_token,
                    r.recursive,
                )
            })
            .answer(|page| ListResponse {
                keys: page.keys,
                next_page_token: page.next_page_token.unwrap_or_default(),
                revision: page.revision,
            })
            .await
    }

    async fn delete(&self, r: Request<DeleteRequest>) -> Reply<DeleteResponse> {
        let r = r.map(|r| (r.tenant, r.path, r.versions));
        self.secrets_change_versions(r, Change::Delete, |changed| DeleteResponse { changed })
            .await
    }

    async fn undelete(&self, r: Request<UndeleteRequest>) -> Reply<UndeleteResponse> {
        let r = r.map(|r| (r.tenant, r.path, r.versions));
        self.secrets_change_versions(r, Change::Undelete, |changed| UndeleteResponse { changed })
            .await
    }

    async fn destroy(&self, r: Request<DestroyRequest>) -> Reply<DestroyResponse> {
        let r = r.map(|r| (r.tenant, r.path, r.versions));
        self.secrets_change_versions(r, Change::Destroy, |changed| DestroyResponse { changed })
            .await
    }

    async fn delete_metadata(
        &self,
        r: Request<DeleteMetadataRequest>,
    ) -> Reply<DeleteMetadataResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, &r.path))
            .parse(|r| secret(&r.tenant, &r.path))
            .run(|step, (tenant, path)| {
                step.vault
                    .secrets()
                    .delete_metadata(step.caller()?, &tenant, &path)
            })
            .answer(|changed| DeleteMetadataResponse {
                changed: versions_changed(changed),
            })
            .await
    }

    async fn patch(&self, r: Request<PatchRequest>) -> Reply<PatchResponse> {
        let r = r.map(|mut r| (sealed_fields(std::mem::take(&mut r.data)), r));
        self.rpc(r)
            .target(|(_, r)| at(&r.tenant, &r.path))
            .parse(|(changes, r)| Ok((secret(&r.tenant, &r.path)?, changes, r.remove, r.cas)))
            .run(|step, ((tenant, path), changes, remove, cas)| {
                step.vault
                    .secrets()
                    .patch(step.caller()?, &tenant, &path, changes, &remove, cas)
            })
            .answer(|outcome| PatchResponse {
                version: outcome.version,
                created_time: rfc3339(outcome.created_unix_nanos),
                revision: outcome.revision,
            })
            .await
    }

    async fn read_metadata(&self, r: Request<ReadMetadataRequest>) -> Reply<ReadMetadataResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, &r.path))
            .parse(|r| secret(&r.tenant, &r.path))
            .run(|step, (tenant, path)| {
                step.vault
                    .secrets()
                    .read_metadata(step.caller()?, &tenant, &path)
            })
            .answer(metadata_message)
            .await
    }

    async fn update_metadata(
        &self,
        r: Request<UpdateMetadataRequest>,
    ) -> Reply<ReadMetadataResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, &r.path))
            .parse(|r| {
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
            })
            .run(|step, ((tenant, path), update)| {
                step.vault
                    .secrets()
                    .update_metadata(step.caller()?, &tenant, &path, update)
            })
            .answer(metadata_message)
            .await
    }
}

/// The values move (no copy) into buffers that zeroize on drop.
pub(crate) fn sealed_fields(data: std::collections::HashMap<String, Vec<u8>>) -> SecretData {
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
