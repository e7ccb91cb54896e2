//! Commands for versions (history, undelete, destroy, metadata, patch), the change feed
//! (watch) and webhooks.

use clap::{Args, Subcommand};
use serde_json::json;
use vault_client::{Event, EventKind, Start};
use vault_proto::v1::{self, secrets_client::SecretsClient, webhooks_client::WebhooksClient};

use crate::{
    Format, TenantArg,
    client::{CliError, CliResult, authed, connect, from_client, token},
    input::read_fields,
    output::{print_json, print_rows},
    sources,
};

fn status_error(addr: &str) -> impl Fn(tonic::Status) -> CliError + '_ {
    move |status| CliError::from_status(status, addr)
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

pub async fn history(addr: &str, tenant: TenantArg, path: String, format: Format) -> CliResult<()> {
    let meta = read_metadata(addr, tenant, path).await?;
    match format {
        Format::Json => print_json(&json!({
            "path": meta.path,
            "current_version": meta.current_version,
            "versions": meta.versions.iter().map(version_json).collect::<Vec<_>>(),
        })),
        Format::Text => {
            println!(
                "{:<8} {:<28} {:<28} {:<10} AUTHOR",
                "VERSION", "CREATED", "DELETED", "DESTROYED"
            );
            for v in &meta.versions {
                println!(
                    "{:<8} {:<28} {:<28} {:<10} {}",
                    v.version,
                    v.created_time,
                    if v.deletion_time.is_empty() {
                        "-"
                    } else {
                        &v.deletion_time
                    },
                    v.destroyed,
                    v.author
                );
            }
        }
    }
    Ok(())
}

fn version_json(v: &v1::VersionInfo) -> serde_json::Value {
    json!({
        "version": v.version, "created_time": v.created_time,
        "deletion_time": v.deletion_time, "destroyed": v.destroyed, "author": v.author,
    })
}

async fn read_metadata(
    addr: &str,
    tenant: TenantArg,
    path: String,
) -> CliResult<v1::ReadMetadataResponse> {
    let token = token()?;
    let mut client = SecretsClient::new(connect(addr).await?);
    Ok(client
        .read_metadata(authed(
            v1::ReadMetadataRequest {
                tenant: tenant.tenant,
                path,
            },
            &token,
        )?)
        .await
        .map_err(status_error(addr))?
        .into_inner())
}

pub async fn metadata(
    addr: &str,
    tenant: TenantArg,
    path: String,
    settings: MetadataSettings,
    format: Format,
) -> CliResult<()> {
    let meta = if settings.is_empty() {
        read_metadata(addr, tenant, path).await?
    } else {
        let mut custom = std::collections::HashMap::new();
        for entry in &settings.custom {
            let (key, value) = entry
                .split_once('=')
                .ok_or_else(|| CliError::new(format!("--custom {entry:?}: expected KEY=VALUE")))?;
            custom.insert(key.to_owned(), value.to_owned());
        }
        let token = token()?;
        let mut client = SecretsClient::new(connect(addr).await?);
        client
            .update_metadata(authed(
                v1::UpdateMetadataRequest {
                    tenant: tenant.tenant,
                    path,
                    max_versions: settings.max_versions,
                    cas_required: settings.cas_required,
                    custom,
                    remove_custom: settings.remove_custom,
                    expires_at: settings.expires_at,
                    rotate_by: settings.rotate_by,
                },
                &token,
            )?)
            .await
            .map_err(status_error(addr))?
            .into_inner()
    };
    let or_none = |text: &str| {
        if text.is_empty() {
            "none".to_owned()
        } else {
            text.to_owned()
        }
    };
    match format {
        Format::Json => print_json(&json!({
            "path": meta.path,
            "current_version": meta.current_version,
            "oldest_version": meta.oldest_version,
            "created_time": meta.created_time,
            "updated_time": meta.updated_time,
            "max_versions": meta.max_versions,
            "effective_max_versions": meta.effective_max_versions,
            "cas_required": meta.cas_required,
            "custom": meta.custom,
            "expires_at": meta.expires_at,
            "rotate_by": meta.rotate_by,
            "versions": meta.versions.iter().map(version_json).collect::<Vec<_>>(),
        })),
        Format::Text => {
            let mut custom: Vec<_> = meta.custom.iter().collect();
            custom.sort();
            print_rows(&[
                ("Path", meta.path.clone()),
                ("Current version", meta.current_version.to_string()),
                ("Oldest version", meta.oldest_version.to_string()),
                ("Created", meta.created_time.clone()),
                ("Updated", meta.updated_time.clone()),
                (
                    "Max versions",
                    format!(
                        "{} ({})",
                        meta.effective_max_versions,
                        if meta.max_versions == 0 {
                            "default"
                        } else {
                            "set on the secret"
                        }
                    ),
                ),
                ("Check-and-set required", meta.cas_required.to_string()),
                ("Expires at", or_none(&meta.expires_at)),
                ("Rotate by", or_none(&meta.rotate_by)),
                (
                    "Custom",
                    custom
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            ]);
        }
    }
    Ok(())
}

/// Which change a versions command makes.
#[derive(Clone, Copy, Debug)]
pub enum VersionsOp {
    Delete,
    Undelete,
    Destroy,
    DeleteAll,
}

pub async fn change_versions(
    addr: &str,
    tenant: TenantArg,
    path: String,
    versions: Vec<u64>,
    op: VersionsOp,
    format: Format,
) -> CliResult<()> {
    let token = token()?;
    let mut client = SecretsClient::new(connect(addr).await?);
    let tenant = tenant.tenant;
    let changed = match op {
        VersionsOp::Delete => client
            .delete(authed(
                v1::DeleteRequest {
                    tenant,
                    path: path.clone(),
                    versions,
                },
                &token,
            )?)
            .await
            .map(|r| r.into_inner().changed),
        VersionsOp::Undelete => client
            .undelete(authed(
                v1::UndeleteRequest {
                    tenant,
                    path: path.clone(),
                    versions,
                },
                &token,
            )?)
            .await
            .map(|r| r.into_inner().changed),
        VersionsOp::Destroy => client
            .destroy(authed(
                v1::DestroyRequest {
                    tenant,
                    path: path.clone(),
                    versions,
                },
                &token,
            )?)
            .await
            .map(|r| r.into_inner().changed),
        VersionsOp::DeleteAll => client
            .delete_metadata(authed(
                v1::DeleteMetadataRequest {
                    tenant,
                    path: path.clone(),
                },
                &token,
            )?)
            .await
            .map(|r| r.into_inner().changed),
    }
    .map_err(status_error(addr))?
    .unwrap_or_default();
    let verb = match op {
        VersionsOp::Delete => "Deleted",
        VersionsOp::Undelete => "Undeleted",
        VersionsOp::Destroy => "Destroyed",
        VersionsOp::DeleteAll => "Deleted every version and the metadata of",
    };
    match format {
        Format::Json => print_json(&json!({
            "path": path, "versions": changed.versions, "revision": changed.revision,
        })),
        Format::Text if changed.versions.is_empty() && !matches!(op, VersionsOp::DeleteAll) => {
            println!("Nothing to change in {path}: the versions are already in that state.")
        }
        Format::Text => {
            let list: Vec<String> = changed.versions.iter().map(u64::to_string).collect();
            match op {
                VersionsOp::DeleteAll => println!("{verb} {path}."),
                _ => println!("{verb} {path} version {}.", list.join(", ")),
            }
        }
    }
    Ok(())
}

pub async fn patch(
    addr: &str,
    tenant: TenantArg,
    path: String,
    fields: Vec<String>,
    remove: Vec<String>,
    cas: Option<u64>,
    format: Format,
) -> CliResult<()> {
    let data = read_fields(&fields)?;
    let token = token()?;
    let mut client = SecretsClient::new(connect(addr).await?);
    let response = client
        .patch(authed(
            v1::PatchRequest {
                tenant: tenant.tenant,
                path: path.clone(),
                data,
                remove,
                cas,
            },
            &token,
        )?)
        .await
        .map_err(status_error(addr))?
        .into_inner();
    match format {
        Format::Json => print_json(&json!({
            "path": path, "version": response.version,
            "created_time": response.created_time, "revision": response.revision,
        })),
        Format::Text => println!("Patched {path}: version {}.", response.version),
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub tenant: TenantArg,
    /// A folder ("" or ending in '/') or one secret's path.
    #[arg(default_value = "")]
    pub prefix: String,
    /// Resume after this revision (the last one you saw); without it, start with the next change.
    #[arg(long)]
    pub from_revision: Option<u64>,
    /// Exit after this many events.
    #[arg(long)]
    pub count: Option<u64>,
}

/// Prints events as they happen, one per line. The library's watch re-opens by itself after a
/// disconnect or a server restart, from the last revision printed.
pub async fn watch(addr: &str, args: WatchArgs, format: Format) -> CliResult<()> {
    let client = sources::client(addr, true).await?;
    let start = args.from_revision.map_or(Start::Now, Start::After);
    let tenant = &args.tenant.tenant;
    let mut watch = client
        .watch(tenant, &args.prefix, start)
        .await
        .map_err(watch_error)?;
    let mut printed = 0u64;
    while args.count.is_none_or(|count| printed < count) {
        print_event(&watch.next().await.map_err(watch_error)?, format);
        printed += 1;
    }
    Ok(())
}

fn watch_error(error: vault_client::Error) -> CliError {
    match error {
        vault_client::Error::OutOfRange { message } => CliError::with_hint(
            message,
            "list the secrets again (`vault-cli list --format json` reports the revision), then \
             `vault-cli watch --from-revision REVISION`",
        ),
        other => from_client(other),
    }
}

fn print_event(event: &Event, format: Format) {
    let kind = event.kind.as_str();
    match format {
        Format::Json => print_json(&json!({
            "revision": event.revision, "type": kind, "path": event.path,
            "versions": event.versions, "time": event.time, "key_version": event.key_version,
            "deadline": event.deadline, "detail": event.detail,
        })),
        Format::Text => {
            let versions: Vec<String> = event.versions.iter().map(u64::to_string).collect();
            let mut line = format!("{} {} {} {kind}", event.revision, event.time, event.path);
            if !versions.is_empty() {
                line.push_str(&format!(" versions={}", versions.join(",")));
            }
            if event.kind == EventKind::KeyRotated {
                line.push_str(&format!(" key_version={}", event.key_version));
            }
            if !event.deadline.is_empty() {
                line.push_str(&format!(" deadline={}", event.deadline));
            }
            if !event.detail.is_empty() {
                line.push_str(&format!(" ({})", event.detail));
            }
            println!("{line}");
        }
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Subscribe a URL to the tenant's changes. Deliveries are JSON (names and versions, never
    /// values), signed in the x-vault-signature header: t=<unix seconds>,v1=<hex HMAC-SHA256 of
    /// "<t>.<body>">, retried with backoff, and dead-lettered after the last attempt.
    Create {
        #[command(flatten)]
        tenant: TenantArg,
        /// Where to post (http or https). Loopback, private and link-local addresses are
        /// refused unless the server allows them.
        #[arg(long)]
        url: String,
        /// Path glob of the secrets to report, e.g. "db/*" (default: all).
        #[arg(long, default_value = "")]
        paths: String,
        /// Event types, comma-separated (created, updated, deleted, undeleted, destroyed,
        /// expiring, expired, key_rotated; default: all).
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// Read the signing secret from this file; without it the vault generates one and
        /// prints it once.
        #[arg(long, value_name = "FILE")]
        secret_file: Option<std::path::PathBuf>,
    },
    /// List the tenant's webhooks.
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// A webhook's deliveries: pending (with attempts and next try) and dead-lettered.
    Status {
        #[command(flatten)]
        tenant: TenantArg,
        id: String,
    },
    /// Remove a webhook with its pending and dead-lettered deliveries.
    Delete {
        #[command(flatten)]
        tenant: TenantArg,
        id: String,
    },
    /// Retry dead-lettered deliveries (one revision, or all).
    Replay {
        #[command(flatten)]
        tenant: TenantArg,
        id: String,
        #[arg(long, default_value_t = 0)]
        revision: u64,
    },
}

fn webhook_json(hook: &v1::Webhook) -> serde_json::Value {
    json!({
        "id": hook.id, "url": hook.url, "paths": hook.paths, "events": hook.events,
        "created_time": hook.created_time, "cursor": hook.cursor, "delivered": hook.delivered,
        "last_delivered_revision": hook.last_delivered_revision, "last_error": hook.last_error,
    })
}

fn delivery_json(d: &v1::Delivery) -> serde_json::Value {
    json!({
        "revision": d.revision, "type": d.r#type, "path": d.path, "attempts": d.attempts,
        "next_attempt": d.next_attempt, "last_error": d.last_error,
    })
}

pub async fn webhook(addr: &str, command: WebhookCommand, format: Format) -> CliResult<()> {
    let token = token()?;
    let mut client = WebhooksClient::new(connect(addr).await?);
    match command {
        WebhookCommand::Create {
            tenant,
            url,
            paths,
            events,
            secret_file,
        } => {
            let secret = match secret_file {
                Some(file) => {
                    let mut bytes = std::fs::read(&file).map_err(|e| {
                        CliError::new(format!("cannot read {}: {e}", file.display()))
                    })?;
                    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                        bytes.pop();
                    }
                    bytes
                }
                None => Vec::new(),
            };
            let response = client
                .create_webhook(authed(
                    v1::CreateWebhookRequest {
                        tenant: tenant.tenant,
                        url,
                        paths,
                        events,
                        secret,
                    },
                    &token,
                )?)
                .await
                .map_err(status_error(addr))?
                .into_inner();
            let hook = response.webhook.clone().unwrap_or_default();
            match format {
                Format::Json => {
                    let mut value = webhook_json(&hook);
                    if !response.secret.is_empty() {
                        value["secret"] = response.secret.clone().into();
                    }
                    print_json(&value);
                }
                Format::Text => {
                    println!("Created webhook {} to {}.", hook.id, hook.url);
                    if !response.secret.is_empty() {
                        println!(
                            "Signing secret (shown once; keep it with the receiver): {}",
                            response.secret
                        );
                    }
                }
            }
        }
        WebhookCommand::List { tenant } => {
            let hooks = client
                .list_webhooks(authed(
                    v1::ListWebhooksRequest {
                        tenant: tenant.tenant,
                    },
                    &token,
                )?)
                .await
                .map_err(status_error(addr))?
                .into_inner()
                .webhooks;
            match format {
                Format::Json => {
                    print_json(&json!(hooks.iter().map(webhook_json).collect::<Vec<_>>()))
                }
                Format::Text => {
                    for hook in &hooks {
                        println!(
                            "{} {} paths={} events={} delivered={}",
                            hook.id,
                            hook.url,
                            if hook.paths.is_empty() {
                                "*"
                            } else {
                                &hook.paths
                            },
                            if hook.events.is_empty() {
                                "all".to_owned()
                            } else {
                                hook.events.join(",")
                            },
                            hook.delivered
                        );
                    }
                }
            }
        }
        WebhookCommand::Status { tenant, id } => {
            let status = client
                .webhook_status(authed(
                    v1::WebhookStatusRequest {
                        tenant: tenant.tenant,
                        id,
                    },
                    &token,
                )?)
                .await
                .map_err(status_error(addr))?
                .into_inner();
            let hook = status.webhook.clone().unwrap_or_default();
            match format {
                Format::Json => print_json(&json!({
                    "webhook": webhook_json(&hook),
                    "pending": status.pending.iter().map(delivery_json).collect::<Vec<_>>(),
                    "pending_total": status.pending_total,
                    "dead": status.dead.iter().map(delivery_json).collect::<Vec<_>>(),
                    "dead_total": status.dead_total,
                })),
                Format::Text => {
                    print_rows(&[
                        ("Webhook", hook.id.clone()),
                        ("URL", hook.url.clone()),
                        ("Delivered", hook.delivered.to_string()),
                        ("Last error", hook.last_error.clone()),
                        ("Pending", status.pending_total.to_string()),
                        ("Dead letters", status.dead_total.to_string()),
                    ]);
                    for (label, list) in [("pending", &status.pending), ("dead", &status.dead)] {
                        for d in list {
                            println!(
                                "{label} revision={} {} {} attempts={} next={} error={}",
                                d.revision,
                                d.r#type,
                                d.path,
                                d.attempts,
                                d.next_attempt,
                                d.last_error
                            );
                        }
                    }
                }
            }
        }
        WebhookCommand::Delete { tenant, id } => {
            client
                .delete_webhook(authed(
                    v1::DeleteWebhookRequest {
                        tenant: tenant.tenant,
                        id: id.clone(),
                    },
                    &token,
                )?)
                .await
                .map_err(status_error(addr))?;
            match format {
                Format::Json => print_json(&json!({ "id": id, "deleted": true })),
                Format::Text => println!("Deleted webhook {id}."),
            }
        }
        WebhookCommand::Replay {
            tenant,
            id,
            revision,
        } => {
            let replayed = client
                .replay_webhook(authed(
                    v1::ReplayWebhookRequest {
                        tenant: tenant.tenant,
                        id: id.clone(),
                        revision,
                    },
                    &token,
                )?)
                .await
                .map_err(status_error(addr))?
                .into_inner()
                .replayed;
            match format {
                Format::Json => print_json(&json!({ "id": id, "replayed": replayed })),
                Format::Text => {
                    println!("Queued {replayed} dead-lettered deliveries of {id} again.")
                }
            }
        }
    }
    Ok(())
}
