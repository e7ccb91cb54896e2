//! KV v2 at `secret/`: `data/`, `metadata/`, `delete/`, `undelete/`, `destroy/`.
//!
//! A secret's fields are bytes here and JSON values in Vault: a string is kept as its bytes,
//! any other JSON value as its JSON text; a field reads back as a string (bytes that are not
//! UTF-8 read as base64, with a warning).

use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Map, Value, json};
use vault_proto::v1;

use super::{
    Gateway, Incoming,
    reply::{Answer, Failure},
};

/// The fields of a secret as Vault sends them (`data`), as this vault keeps them.
fn fields_in(data: &Map<String, Value>) -> HashMap<String, Vec<u8>> {
    data.iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(name, value)| {
            let bytes = match value {
                Value::String(text) => text.as_bytes().to_vec(),
                other => other.to_string().into_bytes(),
            };
            (name.clone(), bytes)
        })
        .collect()
}

/// The fields as Vault answers them, and the names of those that were not text.
fn fields_out(data: HashMap<String, Vec<u8>>) -> (Map<String, Value>, Vec<String>) {
    let mut binary = Vec::new();
    let mut fields = Map::new();
    let mut names: Vec<_> = data.into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, bytes) in names {
        let value = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                binary.push(name.clone());
                STANDARD.encode(e.into_bytes())
            }
        };
        fields.insert(name, Value::String(value));
    }
    (fields, binary)
}

fn binary_warning(binary: &[String]) -> Vec<String> {
    if binary.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "fields {} are not UTF-8 text and are given in base64",
            binary.join(", ")
        )]
    }
}

/// The metadata block of one version, as Vault shapes it.
fn version_metadata(
    version: u64,
    created_time: &str,
    deletion_time: &str,
    destroyed: bool,
) -> Value {
    json!({
        "version": version,
        "created_time": created_time,
        "deletion_time": deletion_time,
        "destroyed": destroyed,
        "custom_metadata": null,
    })
}

/// `GET secret/data/<path>[?version=N]`.
pub(crate) async fn read(
    gateway: &Gateway,
    incoming: &Incoming,
    path: &str,
) -> Result<Answer, Failure> {
    let request = v1::GetRequest {
        tenant: gateway.tenant(incoming).await,
        path: path.to_owned(),
        version: incoming.params.u64("version")?.unwrap_or(0),
    };
    let called = gateway
        .unary::<_, v1::GetResponse>(incoming, "Secrets/Get", request)
        .await?;
    let m = &called.message;
    let metadata = version_metadata(m.version, &m.created_time, "", false);
    let (fields, binary) = fields_out(called.message.data.clone());
    Ok(called
        .data(json!({ "data": fields, "metadata": metadata }))
        .warn(binary_warning(&binary)))
}

/// The data and check-and-set of a write: `{"data": {...}, "options": {"cas": N}}`.
fn write_body(incoming: &Incoming) -> Result<(&Map<String, Value>, Option<u64>), Failure> {
    let data = incoming
        .params
        .object("data")?
        .ok_or_else(|| Failure::field("data", "missing: give the secret's fields as an object"))?;
    let cas = match incoming.params.nested("options")? {
        Some(options) => options
            .u64("cas")
            .map_err(|_| Failure::field("options.cas", "must be a whole number"))?,
        None => None,
    };
    Ok((data, cas))
}

/// `POST/PUT secret/data/<path>`.
pub(crate) async fn write(
    gateway: &Gateway,
    incoming: &Incoming,
    path: &str,
) -> Result<Answer, Failure> {
    let (data, cas) = write_body(incoming)?;
    let request = v1::PutRequest {
        tenant: gateway.tenant(incoming).await,
        path: path.to_owned(),
        data: fields_in(data),
        cas,
    };
    let called = gateway
        .unary::<_, v1::PutResponse>(incoming, "Secrets/Put", request)
        .await?;
    let m = &called.message;
    Ok(called.data(version_metadata(m.version, &m.created_time, "", false)))
}

/// `PATCH secret/data/<path>` (JSON merge patch: a null field is removed).
pub(crate) async fn patch(
    gateway: &Gateway,
    incoming: &Incoming,
    path: &str,
) -> Result<Answer, Failure> {
    let (data, cas) = write_body(incoming)?;
    let remove = data
        .iter()
        .filter(|(_, value)| value.is_null())
        .map(|(name, _)| name.clone())
        .collect();
    let request = v1::PatchRequest {
        tenant: gateway.tenant(incoming).await,
        path: path.to_owned(),
        data: fields_in(data),
        remove,
        cas,
    };
    let called = gateway
        .unary::<_, v1::PatchResponse>(incoming, "Secrets/Patch", request)
        .await?;
    let m = &called.message;
    Ok(called.data(version_metadata(m.version, &m.created_time, "", false)))
}

/// `DELETE secret/data/<path>`: soft-deletes the latest version.
pub(crate) async fn delete_latest(
    gateway: &Gateway,
    incoming: &Incoming,
    path: &str,
) -> Result<Answer, Failure> {
    let request = v1::DeleteRequest {
        tenant: gateway.tenant(incoming).await,
        path: path.to_owned(),
        versions: Vec::new(),
    };
    let called = gateway
        .unary::<_, v1::DeleteResponse>(incoming, "Secrets/Delete", request)
        .await?;
    Ok(Answer::empty(&called.request_id))
}

/// What `delete/`, `undelete/` and `destroy/` do to the versions they name.
#[derive(Clone, Copy)]
pub(crate) enum Change {
    Delete,
    Undelete,
    Destroy,
}

/// `POST secret/{delete,undelete,destroy}/<path>` with `versions`.
pub(crate) async fn versions(
    gateway: &Gateway,
    incoming: &Incoming,
    path: &str,
    change: Change,
) -> Result<Answer, Failure> {
    let versions = incoming
        .params
        .u64s("versions")?
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Failure::field("versions", "missing: name the versions (e.g. [1, 2])"))?;
    let tenant = gateway.tenant(incoming).await;
    let path = path.to_owned();
    let request_id = match change {
        Change::Delete => {
            let request = v1::DeleteRequest {
                tenant,
                path,
                versions,
            };
            gateway
                .unary::<_, v1::DeleteResponse>(incoming, "Secrets/Delete", request)
                .await?
                .request_id
        }
        Change::Undelete => {
            let request = v1::UndeleteRequest {
                tenant,
                path,
                versions,
            };
            gateway
                .unary::<_, v1::UndeleteResponse>(incoming, "Secrets/Undelete", request)
                .await?
                .request_id
        }
        Change::Destroy => {
            let request = v1::DestroyRequest {
                tenant,
                path,
                versions,
            };
            gateway
                .unary::<_, v1::DestroyResponse>(incoming, "Secrets/Destroy", request)
                .await?
                .request_id
        }
    };
    Ok(Answer::empty(&request_id))
}

/// `GET secret/metadata/<path>`.
pub(crate) async fn read_metadata(
    gateway: &Gateway,
    incoming: &Incoming,
    path: &str,
) -> Result<Answer, Failure> {
    let request = v1::ReadMetadataRequest {
        tenant: gateway.tenant(incoming).await,
        path: path.to_owned(),
    };
    let called = gateway
        .unary::<_, v1::ReadMetadataResponse>(incoming, "Secrets/ReadMetadata", request)
        .await?;
    let m = &called.message;
    let versions: Map<String, Value> = m
        .versions
        .iter()
        .map(|v| {
            (
                v.version.to_string(),
                json!({
                    "created_time": v.created_time,
                    "deletion_time": v.deletion_time,
                    "destroyed": v.destroyed,
                }),
            )
        })
        .collect();
    let custom = if m.custom.is_empty() {
        Value::Null
    } else {
        json!(m.custom)
    };
    Ok(called.data(json!({
        "cas_required": m.cas_required,
        "created_time": m.created_time,
        "current_version": m.current_version,
        "custom_metadata": custom,
        "delete_version_after": "0s",
        "max_versions": m.max_versions,
        "oldest_version": m.oldest_version,
        "updated_time": m.updated_time,
        "versions": versions,
    })))
}

/// `LIST secret/metadata/<prefix>`: one level, sub-folders end in `/`; 404 when empty, as in
/// Vault. One page of at most 1000 keys (`after` is the page token of the previous page).
pub(crate) async fn list(
    gateway: &Gateway,
    incoming: &Incoming,
    prefix: &str,
) -> Result<Answer, Failure> {
    let request = v1::ListRequest {
        tenant: gateway.tenant(incoming).await,
        prefix: prefix.to_owned(),
        page_size: incoming
            .params
            .u32("limit")?
            .unwrap_or(vault_core::vault::MAX_PAGE_SIZE as u32),
        page_token: incoming.params.str("after")?.unwrap_or_default(),
        recursive: false,
    };
    let called = gateway
        .unary::<_, v1::ListResponse>(incoming, "Secrets/List", request)
        .await?;
    let m = &called.message;
    super::reply::listed(
        &called.request_id,
        &m.keys,
        &m.next_page_token,
        "no secrets under this prefix",
    )
}

/// `POST secret/metadata/<path>`: `max_versions`, `cas_required`, `custom_metadata` (its
/// fields are set; a null field is removed).
pub(crate) async fn write_metadata(
    gateway: &Gateway,
    incoming: &Incoming,
    path: &str,
) -> Result<Answer, Failure> {
    let params = &incoming.params;
    let (mut custom, mut remove_custom) = (HashMap::new(), Vec::new());
    if let Some(fields) = params.object("custom_metadata")? {
        for (name, value) in fields {
            match value {
                Value::Null => remove_custom.push(name.clone()),
                Value::String(text) => {
                    custom.insert(name.clone(), text.clone());
                }
                _ => {
                    return Err(Failure::field(
                        &format!("custom_metadata[{name:?}]"),
                        "must be a string",
                    ));
                }
            }
        }
    }
    if let Some(after) = params.seconds("delete_version_after")?
        && after != 0
    {
        return Err(Failure::field(
            "delete_version_after",
            "not supported: use max_versions, or expires_at through vault-cli",
        ));
    }
    let request = v1::UpdateMetadataRequest {
        tenant: gateway.tenant(incoming).await,
        path: path.to_owned(),
        max_versions: params.u32("max_versions")?,
        cas_required: params.bool("cas_required")?,
        custom,
        remove_custom,
        expires_at: None,
        rotate_by: None,
    };
    let called = gateway
        .unary::<_, v1::ReadMetadataResponse>(incoming, "Secrets/UpdateMetadata", request)
        .await?;
    Ok(Answer::empty(&called.request_id))
}

/// `DELETE secret/metadata/<path>`: every version and the metadata.
pub(crate) async fn delete_metadata(
    gateway: &Gateway,
    incoming: &Incoming,
    path: &str,
) -> Result<Answer, Failure> {
    let request = v1::DeleteMetadataRequest {
        tenant: gateway.tenant(incoming).await,
        path: path.to_owned(),
    };
    let called = gateway
        .unary::<_, v1::DeleteMetadataResponse>(incoming, "Secrets/DeleteMetadata", request)
        .await?;
    Ok(Answer::empty(&called.request_id))
}
