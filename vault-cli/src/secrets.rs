//! `vault-cli put`, `patch`, `get`, `list`, `delete`, `undelete`, `destroy`, `history` and
//! `metadata`: a tenant's versioned secrets.

use std::collections::BTreeMap;

use clap::Args;
use serde::Serialize;
use serde_json::json;
use vault_proto::v1::{self, secrets_client::SecretsClient};

use crate::{
    Format,
    client::{CliError, CliResult, Ctx},
    input::read_fields,
    output::{
        Show, field_text, fields_json, print_json, print_rows, rows_text, show, text_or, write_raw,
    },
};

#[derive(Args, Debug)]
pub struct TenantArg {
    /// Tenant that owns the secret.
    #[arg(long, env = "VAULT_TENANT")]
    pub tenant: String,
}

// A tenant and the name of one of its objects (a key, a policy, a role). A plain comment: clap
// would take a doc comment for the description of the commands that take it.
#[derive(Args, Debug)]
pub struct NamedArg {
    #[command(flatten)]
    pub tenant: TenantArg,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    tenant: TenantArg,
    /// Secret path, e.g. db/primary.
    path: String,
    /// Fields: NAME=VALUE, NAME=@FILE or NAME=-.
    #[arg(required = true, value_name = "FIELD")]
    fields: Vec<String>,
    /// Check-and-set: write only if the current version is N (0: only if the secret does not
    /// exist yet).
    #[arg(long, value_name = "N")]
    cas: Option<u64>,
}

#[derive(Args, Debug)]
pub struct PatchArgs {
    #[command(flatten)]
    tenant: TenantArg,
    path: String,
    #[arg(value_name = "FIELD")]
    fields: Vec<String>,
    /// A field to remove (repeat for several).
    #[arg(long, value_name = "NAME")]
    remove: Vec<String>,
    #[arg(long, value_name = "N")]
    cas: Option<u64>,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    tenant: TenantArg,
    path: String,
    /// Print only this field's value.
    #[arg(long)]
    field: Option<String>,
    /// Read this version instead of the current one.
    #[arg(long, default_value_t = 0)]
    version: u64,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    tenant: TenantArg,
    /// Folder to list (default: the top level).
    #[arg(default_value = "")]
    prefix: String,
    /// Entries per page (at most 1000; default 100).
    #[arg(long, default_value_t = 0)]
    page_size: u32,
    /// Token printed by the previous page.
    #[arg(long, default_value = "")]
    page_token: String,
    /// List every secret below the folder instead of one level.
    #[arg(long)]
    recursive: bool,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    tenant: TenantArg,
    path: String,
    #[command(flatten)]
    versions: VersionsArg,
    /// Remove every version and the metadata (irreversible).
    #[arg(long, conflicts_with = "versions")]
    all: bool,
}

/// The arguments of `undelete` and `destroy`.
#[derive(Args, Debug)]
pub struct ChangeArgs {
    #[command(flatten)]
    tenant: TenantArg,
    path: String,
    #[command(flatten)]
    versions: VersionsArg,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[command(flatten)]
    tenant: TenantArg,
    path: String,
}

#[derive(Args, Debug)]
pub struct MetadataArgs {
    #[command(flatten)]
    tenant: TenantArg,
    path: String,
    #[command(flatten)]
    settings: MetadataSettings,
}

/// What `put` and `patch` print: the same JSON, and each its own line of text.
#[derive(Serialize)]
struct Written {
    path: String,
    version: u64,
    created_time: String,
    revision: u64,
    #[serde(skip)]
    patched: bool,
}

impl Show for Written {
    fn text(&self) -> String {
        if self.patched {
            format!("Patched {}: version {}.\n", self.path, self.version)
        } else {
            format!("Wrote {} version {}.\n", self.path, self.version)
        }
    }
}

#[derive(Serialize)]
struct Page {
    keys: Vec<String>,
    next_page_token: String,
    revision: u64,
}

impl Show for Page {
    fn text(&self) -> String {
        self.keys.iter().map(|key| format!("{key}\n")).collect()
    }
}

pub async fn put(ctx: &Ctx, args: PutArgs) -> CliResult<()> {
    let data = read_fields(&args.fields)?;
    let request = v1::PutRequest {
        tenant: args.tenant.tenant,
        path: args.path.clone(),
        data,
        cas: args.cas,
    };
    let response = call!(ctx, SecretsClient::new, put, request).await?;
    show(
        &Written {
            path: args.path,
            version: response.version,
            created_time: response.created_time,
            revision: response.revision,
            patched: false,
        },
        ctx.format,
    )
}

pub async fn get(ctx: &Ctx, args: GetArgs) -> CliResult<()> {
    let request = v1::GetRequest {
        tenant: args.tenant.tenant,
        path: args.path,
        version: args.version,
    };
    let response = call!(ctx, SecretsClient::new, get, request).await?;
    print_secret(&response, args.field.as_deref(), ctx.format)
}

pub async fn list(ctx: &Ctx, args: ListArgs) -> CliResult<()> {
    let request = v1::ListRequest {
        tenant: args.tenant.tenant,
        prefix: args.prefix,
        page_size: args.page_size,
        page_token: args.page_token,
        recursive: args.recursive,
    };
    let response = call!(ctx, SecretsClient::new, list, request).await?;
    if ctx.format == Format::Text && !response.next_page_token.is_empty() {
        eprintln!("(more: --page-token {})", response.next_page_token);
    }
    show(
        &Page {
            keys: response.keys,
            next_page_token: response.next_page_token,
            revision: response.revision,
        },
        ctx.format,
    )
}

pub async fn delete(ctx: &Ctx, args: DeleteArgs) -> CliResult<()> {
    let op = if args.all {
        VersionsOp::DeleteAll
    } else {
        VersionsOp::Delete
    };
    change_versions(ctx, args.tenant, args.path, args.versions.versions, op).await
}

pub async fn undelete(ctx: &Ctx, args: ChangeArgs) -> CliResult<()> {
    let versions = args.versions.versions;
    change_versions(ctx, args.tenant, args.path, versions, VersionsOp::Undelete).await
}

pub async fn destroy(ctx: &Ctx, args: ChangeArgs) -> CliResult<()> {
    let versions = args.versions.versions;
    change_versions(ctx, args.tenant, args.path, versions, VersionsOp::Destroy).await
}

#[derive(Args, Debug)]
pub struct VersionsArg {
    /// Versions, comma-separated (e.g. 1,2).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..))]
    pub versions: Vec<u64>,
}

/// Settings that `metadata` changes; none given: it only shows the metadata.
#[derive(Args, Debug, Default)]
pub struct MetadataSettings {
    /// Versions kept for this secret (0: the tenant's default).
    #[arg(long)]
    pub max_versions: Option<u32>,
    /// Require check-and-set (`put --cas N`) on every write of this secret.
    #[arg(long, value_name = "BOOL")]
    pub cas_required: Option<bool>,
    /// Custom metadata KEY=VALUE to add or replace (repeat for several).
    #[arg(long = "custom", value_name = "KEY=VALUE")]
    pub custom: Vec<String>,
    /// Custom metadata key to remove (repeat for several).
    #[arg(long = "remove-custom", value_name = "KEY")]
    pub remove_custom: Vec<String>,
    /// When the secret expires (RFC 3339, e.g. 2027-01-31T00:00:00Z; "" clears). Watchers
    /// and webhooks get `expiring` ahead of it and `expired` at it; afterwards it does not read.
    #[arg(long, value_name = "TIME")]
    pub expires_at: Option<String>,
    /// When the secret should have been rotated by (RFC 3339; "" clears): `expiring` and
    /// `expired` events, with detail rotate_by.
    #[arg(long, value_name = "TIME")]
    pub rotate_by: Option<String>,
}

impl MetadataSettings {
    fn is_empty(&self) -> bool {
        self.max_versions.is_none()
            && self.cas_required.is_none()
            && self.custom.is_empty()
            && self.remove_custom.is_empty()
            && self.expires_at.is_none()
            && self.rotate_by.is_none()
    }
}

/// A version as `history` and `metadata --format json` list it.
#[derive(Serialize)]
struct Version {
    version: u64,
    created_time: String,
    deletion_time: String,
    destroyed: bool,
    author: String,
}

fn versions(versions: Vec<v1::VersionInfo>) -> Vec<Version> {
    versions
        .into_iter()
        .map(|v| Version {
            version: v.version,
            created_time: v.created_time,
            deletion_time: v.deletion_time,
            destroyed: v.destroyed,
            author: v.author,
        })
        .collect()
}

#[derive(Serialize)]
struct History {
    path: String,
    current_version: u64,
    versions: Vec<Version>,
}

impl Show for History {
    fn text(&self) -> String {
        let mut out = format!(
            "{:<8} {:<28} {:<28} {:<10} AUTHOR\n",
            "VERSION", "CREATED", "DELETED", "DESTROYED"
        );
        for v in &self.versions {
            out.push_str(&format!(
                "{:<8} {:<28} {:<28} {:<10} {}\n",
                v.version,
                v.created_time,
                if v.deletion_time.is_empty() {
                    "-"
                } else {
                    &v.deletion_time
                },
                v.destroyed,
                v.author
            ));
        }
        out
    }
}

pub async fn history_command(ctx: &Ctx, args: HistoryArgs) -> CliResult<()> {
    let meta = read_metadata(ctx, args.tenant, args.path).await?;
    let history = History {
        path: meta.path,
        current_version: meta.current_version,
        versions: versions(meta.versions),
    };
    show(&history, ctx.format)
}

async fn read_metadata(
    ctx: &Ctx,
    tenant: TenantArg,
    path: String,
) -> CliResult<v1::ReadMetadataResponse> {
    let request = v1::ReadMetadataRequest {
        tenant: tenant.tenant,
        path,
    };
    call!(ctx, SecretsClient::new, read_metadata, request).await
}

#[derive(Serialize)]
struct Metadata {
    path: String,
    current_version: u64,
    oldest_version: u64,
    created_time: String,
    updated_time: String,
    max_versions: u32,
    effective_max_versions: u32,
    cas_required: bool,
    custom: BTreeMap<String, String>,
    expires_at: String,
    rotate_by: String,
    versions: Vec<Version>,
}

impl From<v1::ReadMetadataResponse> for Metadata {
    fn from(meta: v1::ReadMetadataResponse) -> Self {
        Metadata {
            path: meta.path,
            current_version: meta.current_version,
            oldest_version: meta.oldest_version,
            created_time: meta.created_time,
            updated_time: meta.updated_time,
            max_versions: meta.max_versions,
            effective_max_versions: meta.effective_max_versions,
            cas_required: meta.cas_required,
            custom: meta.custom.into_iter().collect(),
            expires_at: meta.expires_at,
            rotate_by: meta.rotate_by,
            versions: versions(meta.versions),
        }
    }
}

impl Show for Metadata {
    fn text(&self) -> String {
        let max_versions_from = if self.max_versions == 0 {
            "default"
        } else {
            "set on the secret"
        };
        rows_text(&[
            ("Path", self.path.clone()),
            ("Current version", self.current_version.to_string()),
            ("Oldest version", self.oldest_version.to_string()),
            ("Created", self.created_time.clone()),
            ("Updated", self.updated_time.clone()),
            (
                "Max versions",
                format!("{} ({max_versions_from})", self.effective_max_versions),
            ),
            ("Check-and-set required", self.cas_required.to_string()),
            ("Expires at", text_or(&self.expires_at, "none")),
            ("Rotate by", text_or(&self.rotate_by, "none")),
            (
                "Custom",
                self.custom
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ])
    }
}

pub async fn metadata_command(ctx: &Ctx, args: MetadataArgs) -> CliResult<()> {
    let (tenant, path, settings) = (args.tenant, args.path, args.settings);
    let meta = if settings.is_empty() {
        read_metadata(ctx, tenant, path).await?
    } else {
        let mut custom = std::collections::HashMap::new();
        for entry in &settings.custom {
            let (key, value) = entry
                .split_once('=')
                .ok_or_else(|| CliError::new(format!("--custom {entry:?}: expected KEY=VALUE")))?;
            custom.insert(key.to_owned(), value.to_owned());
        }
        let request = v1::UpdateMetadataRequest {
            tenant: tenant.tenant,
            path,
            max_versions: settings.max_versions,
            cas_required: settings.cas_required,
            custom,
            remove_custom: settings.remove_custom,
            expires_at: settings.expires_at,
            rotate_by: settings.rotate_by,
        };
        call!(ctx, SecretsClient::new, update_metadata, request).await?
    };
    show(&Metadata::from(meta), ctx.format)
}

/// Which change a versions command makes.
#[derive(Clone, Copy, Debug)]
pub enum VersionsOp {
    Delete,
    Undelete,
    Destroy,
    DeleteAll,
}

/// What `delete`, `undelete` and `destroy` changed.
#[derive(Serialize)]
struct Changed {
    #[serde(skip)]
    op: VersionsOp,
    path: String,
    versions: Vec<u64>,
    revision: u64,
}

impl Show for Changed {
    fn text(&self) -> String {
        let path = &self.path;
        let verb = match self.op {
            VersionsOp::DeleteAll => {
                return format!("Deleted every version and the metadata of {path}.\n");
            }
            VersionsOp::Delete => "Deleted",
            VersionsOp::Undelete => "Undeleted",
            VersionsOp::Destroy => "Destroyed",
        };
        if self.versions.is_empty() {
            return format!(
                "Nothing to change in {path}: the versions are already in that state.\n"
            );
        }
        let list: Vec<String> = self.versions.iter().map(u64::to_string).collect();
        format!("{verb} {path} version {}.\n", list.join(", "))
    }
}

async fn change_versions(
    ctx: &Ctx,
    tenant: TenantArg,
    path: String,
    versions: Vec<u64>,
    op: VersionsOp,
) -> CliResult<()> {
    let (tenant, new, p) = (tenant.tenant, SecretsClient::new, path.clone());
    let changed = match op {
        VersionsOp::Delete => {
            let request = v1::DeleteRequest {
                tenant,
                path: p,
                versions,
            };
            let r = call!(ctx, new, delete, request);
            r.await?.changed
        }
        VersionsOp::Undelete => {
            let request = v1::UndeleteRequest {
                tenant,
                path: p,
                versions,
            };
            let r = call!(ctx, new, undelete, request);
            r.await?.changed
        }
        VersionsOp::Destroy => {
            let request = v1::DestroyRequest {
                tenant,
                path: p,
                versions,
            };
            let r = call!(ctx, new, destroy, request);
            r.await?.changed
        }
        VersionsOp::DeleteAll => {
            let request = v1::DeleteMetadataRequest { tenant, path: p };
            let r = call!(ctx, new, delete_metadata, request);
            r.await?.changed
        }
    }
    .unwrap_or_default();
    let changed = Changed {
        op,
        path,
        versions: changed.versions,
        revision: changed.revision,
    };
    show(&changed, ctx.format)
}

pub async fn patch_command(ctx: &Ctx, args: PatchArgs) -> CliResult<()> {
    let data = read_fields(&args.fields)?;
    let request = v1::PatchRequest {
        tenant: args.tenant.tenant,
        path: args.path.clone(),
        data,
        remove: args.remove,
        cas: args.cas,
    };
    let response = call!(ctx, SecretsClient::new, patch, request).await?;
    show(
        &Written {
            path: args.path,
            version: response.version,
            created_time: response.created_time,
            revision: response.revision,
            patched: true,
        },
        ctx.format,
    )
}

fn print_secret(response: &v1::GetResponse, field: Option<&str>, format: Format) -> CliResult<()> {
    if let Some(name) = field {
        let value = response.data.get(name).ok_or_else(|| {
            CliError::new(format!(
                "field {name:?} not found in {} version {}",
                response.path, response.version
            ))
        })?;
        return match format {
            Format::Json => {
                let (text, binary) = fields_json(&[(&name.to_owned(), value)]);
                print_json(
                    &json!({ "field": name, "value": text.get(name), "value_base64": binary.get(name) }),
                );
                Ok(())
            }
            Format::Text => write_raw(value)
                .map_err(|e| CliError::new(format!("cannot write to standard output: {e}"))),
        };
    }
    let mut fields: Vec<(&String, &Vec<u8>)> = response.data.iter().collect();
    fields.sort();
    match format {
        Format::Json => {
            let (text, binary) = fields_json(&fields);
            print_json(&json!({
                "path": response.path, "version": response.version, "created_time": response.created_time,
                "key_version": response.key_version, "data": text, "data_base64": binary,
            }));
        }
        Format::Text => {
            println!(
                "== {} (version {}, created {}) ==",
                response.path, response.version, response.created_time
            );
            let rows: Vec<(&str, String)> = fields
                .iter()
                .map(|(name, value)| (name.as_str(), field_text(value)))
                .collect();
            print_rows(&rows);
        }
    }
    Ok(())
}
