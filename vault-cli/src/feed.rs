//! `vault-cli watch` (the change feed) and `vault-cli webhook ...`.

use clap::{Args, Subcommand};
use serde::Serialize;
use vault_client::{Event, EventKind, Start};
use vault_proto::v1::{self, webhooks_client::WebhooksClient};

use crate::{
    Format,
    client::{CliError, CliResult, Ctx, from_client},
    output::{Show, rows_text, show},
    secrets::TenantArg,
    sources,
};

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
pub async fn watch(ctx: &Ctx, args: WatchArgs, format: Format) -> CliResult<()> {
    let client = sources::client(ctx, true).await?;
    let start = args.from_revision.map_or(Start::Now, Start::After);
    let tenant = &args.tenant.tenant;
    let mut watch = client
        .watch(tenant, &args.prefix, start)
        .await
        .map_err(watch_error)?;
    let mut printed = 0u64;
    while args.count.is_none_or(|count| printed < count) {
        let event = watch.next().await.map_err(watch_error)?;
        show(&EventLine::from(&event), format)?;
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

/// One event of `watch`, printed as it comes.
#[derive(Serialize)]
struct EventLine<'a> {
    revision: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    path: &'a str,
    versions: &'a [u64],
    time: &'a str,
    key_version: u32,
    deadline: &'a str,
    detail: &'a str,
    #[serde(skip)]
    key_rotated: bool,
}

impl<'a> From<&'a Event> for EventLine<'a> {
    fn from(event: &'a Event) -> Self {
        EventLine {
            revision: event.revision,
            kind: event.kind.as_str(),
            path: &event.path,
            versions: &event.versions,
            time: &event.time,
            key_version: event.key_version,
            deadline: &event.deadline,
            detail: &event.detail,
            key_rotated: event.kind == EventKind::KeyRotated,
        }
    }
}

impl Show for EventLine<'_> {
    fn text(&self) -> String {
        let mut line = format!(
            "{} {} {} {}",
            self.revision, self.time, self.path, self.kind
        );
        if !self.versions.is_empty() {
            let versions: Vec<String> = self.versions.iter().map(u64::to_string).collect();
            line.push_str(&format!(" versions={}", versions.join(",")));
        }
        if self.key_rotated {
            line.push_str(&format!(" key_version={}", self.key_version));
        }
        if !self.deadline.is_empty() {
            line.push_str(&format!(" deadline={}", self.deadline));
        }
        if !self.detail.is_empty() {
            line.push_str(&format!(" ({})", self.detail));
        }
        line.push('\n');
        line
    }
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
        /// expiring, expired, key_rotated, security_alert; default: all).
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

/// A webhook as `create`, `list` and `status` print it.
#[derive(Serialize)]
struct Webhook {
    id: String,
    url: String,
    paths: String,
    events: Vec<String>,
    created_time: String,
    cursor: u64,
    delivered: u64,
    last_delivered_revision: u64,
    last_error: String,
}

impl From<v1::Webhook> for Webhook {
    fn from(hook: v1::Webhook) -> Self {
        Webhook {
            id: hook.id,
            url: hook.url,
            paths: hook.paths,
            events: hook.events,
            created_time: hook.created_time,
            cursor: hook.cursor,
            delivered: hook.delivered,
            last_delivered_revision: hook.last_delivered_revision,
            last_error: hook.last_error,
        }
    }
}

/// `create`: the webhook, and its signing secret once when the vault generated it.
#[derive(Serialize)]
struct Created<'a> {
    #[serde(flatten)]
    webhook: Webhook,
    #[serde(skip_serializing_if = "str::is_empty")]
    secret: &'a str,
}

impl Show for Created<'_> {
    fn text(&self) -> String {
        let mut out = format!(
            "Created webhook {} to {}.\n",
            self.webhook.id, self.webhook.url
        );
        if !self.secret.is_empty() {
            out.push_str("Signing secret (shown once; keep it with the receiver): ");
            out.push_str(self.secret);
            out.push('\n');
        }
        out
    }
}

#[derive(Serialize)]
#[serde(transparent)]
struct Listed(Vec<Webhook>);

impl Show for Listed {
    fn text(&self) -> String {
        self.0
            .iter()
            .map(|hook| {
                format!(
                    "{} {} paths={} events={} delivered={}\n",
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
                )
            })
            .collect()
    }
}

#[derive(Serialize)]
struct Delivery {
    revision: u64,
    #[serde(rename = "type")]
    kind: String,
    path: String,
    attempts: u32,
    next_attempt: String,
    last_error: String,
}

impl From<v1::Delivery> for Delivery {
    fn from(d: v1::Delivery) -> Self {
        Delivery {
            revision: d.revision,
            kind: d.r#type,
            path: d.path,
            attempts: d.attempts,
            next_attempt: d.next_attempt,
            last_error: d.last_error,
        }
    }
}

#[derive(Serialize)]
struct Status {
    webhook: Webhook,
    pending: Vec<Delivery>,
    pending_total: u64,
    dead: Vec<Delivery>,
    dead_total: u64,
}

impl Show for Status {
    fn text(&self) -> String {
        let hook = &self.webhook;
        let mut out = rows_text(&[
            ("Webhook", hook.id.clone()),
            ("URL", hook.url.clone()),
            ("Delivered", hook.delivered.to_string()),
            ("Last error", hook.last_error.clone()),
            ("Pending", self.pending_total.to_string()),
            ("Dead letters", self.dead_total.to_string()),
        ]);
        for (label, list) in [("pending", &self.pending), ("dead", &self.dead)] {
            for d in list {
                out.push_str(&format!(
                    "{label} revision={} {} {} attempts={} next={} error={}\n",
                    d.revision, d.kind, d.path, d.attempts, d.next_attempt, d.last_error
                ));
            }
        }
        out
    }
}

#[derive(Serialize)]
struct Deleted {
    id: String,
    deleted: bool,
}

impl Show for Deleted {
    fn text(&self) -> String {
        format!("Deleted webhook {}.\n", self.id)
    }
}

#[derive(Serialize)]
struct Replayed {
    id: String,
    replayed: u64,
}

impl Show for Replayed {
    fn text(&self) -> String {
        format!(
            "Queued {} dead-lettered deliveries of {} again.\n",
            self.replayed, self.id
        )
    }
}

pub async fn webhook(ctx: &Ctx, command: WebhookCommand, format: Format) -> CliResult<()> {
    let new = WebhooksClient::new;
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
            let request = v1::CreateWebhookRequest {
                tenant: tenant.tenant,
                url,
                paths,
                events,
                secret,
            };
            let response = call!(ctx, new, create_webhook, request).await?;
            let created = Created {
                webhook: response.webhook.unwrap_or_default().into(),
                secret: &response.secret,
            };
            show(&created, format)
        }
        WebhookCommand::List { tenant } => {
            let request = v1::ListWebhooksRequest {
                tenant: tenant.tenant,
            };
            let hooks = call!(ctx, new, list_webhooks, request).await?.webhooks;
            show(
                &Listed(hooks.into_iter().map(Webhook::from).collect()),
                format,
            )
        }
        WebhookCommand::Status { tenant, id } => {
            let request = v1::WebhookStatusRequest {
                tenant: tenant.tenant,
                id,
            };
            let status = call!(ctx, new, webhook_status, request).await?;
            let status = Status {
                webhook: status.webhook.unwrap_or_default().into(),
                pending: status.pending.into_iter().map(Delivery::from).collect(),
                pending_total: status.pending_total,
                dead: status.dead.into_iter().map(Delivery::from).collect(),
                dead_total: status.dead_total,
            };
            show(&status, format)
        }
        WebhookCommand::Delete { tenant, id } => {
            let request = v1::DeleteWebhookRequest {
                tenant: tenant.tenant,
                id: id.clone(),
            };
            call!(ctx, new, delete_webhook, request).await?;
            show(&Deleted { id, deleted: true }, format)
        }
        WebhookCommand::Replay {
            tenant,
            id,
            revision,
        } => {
            let request = v1::ReplayWebhookRequest {
                tenant: tenant.tenant,
                id: id.clone(),
                revision,
            };
            let replayed = call!(ctx, new, replay_webhook, request).await?.replayed;
            show(&Replayed { id, replayed }, format)
        }
    }
}
