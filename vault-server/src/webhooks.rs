//! Webhooks service (create, list, status, delete, replay) and the dispatcher that posts
//! deliveries.
//!
//! The dispatcher wakes when any feed moves (or a retry falls due), fans new events out to
//! deliveries, and posts the due ones concurrently. Each post resolves the host again and checks
//! every address (so DNS cannot be switched to an internal address after creation), connects to
//! a checked address itself, and speaks minimal HTTP/1.1 (or HTTPS, with the web PKI roots):
//! the request, then the status line; a 2xx answer is success.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
};
use tonic::{Request, Response, Status};
use vault_core::{
    Error, Vault,
    cidr::Cidr,
    names::TenantName,
    secret::SecretBytes,
    time::{now_unix_nanos, rfc3339},
    vault::{
        Delivery, DeliveryState, EventKind, SIGNATURE_HEADER, WebhookInfo, WebhookSpec, WebhookUrl,
        check_addresses,
    },
};
use vault_proto::v1::{self, webhooks_server::Webhooks};

use crate::{
    Shared,
    call::{Call, presented_token},
};

/// Deliveries posted at once.
const DELIVERIES_PER_ROUND: usize = 32;
/// Longest wait between rounds when nothing wakes the dispatcher.
const IDLE_WAKE: Duration = Duration::from_secs(5);
/// Longest status line read from a receiver.
const MAX_STATUS_LINE: usize = 8 * 1024;

pub struct WebhooksService {
    shared: Arc<Shared>,
}

impl WebhooksService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        WebhooksService { shared }
    }
}

fn webhook_message(info: WebhookInfo) -> v1::Webhook {
    v1::Webhook {
        id: info.id,
        url: info.url,
        paths: info.paths,
        events: info.events.iter().map(|e| e.as_str().to_owned()).collect(),
        created_time: rfc3339(info.created_unix_nanos),
        cursor: info.cursor,
        delivered: info.delivered,
        last_delivered_revision: info.last_delivered_revision,
        last_error: info.last_error,
    }
}

fn delivery_message(state: DeliveryState) -> v1::Delivery {
    v1::Delivery {
        revision: state.revision,
        r#type: state.kind.as_str().to_owned(),
        path: state.path,
        attempts: state.attempts,
        next_attempt: rfc3339(state.next_attempt_unix_nanos),
        last_error: state.last_error,
    }
}

#[tonic::async_trait]
impl Webhooks for WebhooksService {
    async fn create_webhook(
        &self,
        request: Request<v1::CreateWebhookRequest>,
    ) -> Result<Response<v1::CreateWebhookResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::CreateWebhookRequest {
            tenant,
            url,
            paths,
            events,
            secret,
        } = request.into_inner();
        call.target(&tenant, &paths);
        let secret = (!secret.is_empty()).then(|| SecretBytes::new(secret));
        let vault = Arc::clone(&self.shared.vault);
        let (info, generated) = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let tenant = TenantName::parse(&tenant)?;
                let events = events
                    .iter()
                    .map(|e| EventKind::parse(e))
                    .collect::<Result<Vec<_>, Error>>()?;
                // The host only: webhook URLs often carry a credential in their path or query.
                if let Ok(parsed) = WebhookUrl::parse(&url) {
                    call.note(format!("webhook to {}", parsed.host_header()));
                }
                call.intent()?;
                vault.webhook_create(
                    &caller,
                    &tenant,
                    WebhookSpec {
                        url,
                        paths,
                        events,
                        secret,
                    },
                )
            })
            .await?;
        let secret = generated
            .map(|secret| String::from_utf8_lossy(secret.expose_secret()).into_owned())
            .unwrap_or_default();
        Ok(Response::new(v1::CreateWebhookResponse {
            webhook: Some(webhook_message(info)),
            secret,
        }))
    }

    async fn list_webhooks(
        &self,
        request: Request<v1::ListWebhooksRequest>,
    ) -> Result<Response<v1::ListWebhooksResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::ListWebhooksRequest { tenant } = request.into_inner();
        call.target(&tenant, "");
        let vault = Arc::clone(&self.shared.vault);
        let hooks = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let tenant = TenantName::parse(&tenant)?;
                vault.webhook_list(&caller, &tenant)
            })
            .await?;
        Ok(Response::new(v1::ListWebhooksResponse {
            webhooks: hooks.into_iter().map(webhook_message).collect(),
        }))
    }

    async fn webhook_status(
        &self,
        request: Request<v1::WebhookStatusRequest>,
    ) -> Result<Response<v1::WebhookStatusResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::WebhookStatusRequest { tenant, id } = request.into_inner();
        call.target(&tenant, &id);
        let vault = Arc::clone(&self.shared.vault);
        let status = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let tenant = TenantName::parse(&tenant)?;
                vault.webhook_status(&caller, &tenant, &id)
            })
            .await?;
        Ok(Response::new(v1::WebhookStatusResponse {
            webhook: Some(webhook_message(status.webhook)),
            pending: status.pending.into_iter().map(delivery_message).collect(),
            pending_total: status.pending_total,
            dead: status.dead.into_iter().map(delivery_message).collect(),
            dead_total: status.dead_total,
        }))
    }

    async fn delete_webhook(
        &self,
        request: Request<v1::DeleteWebhookRequest>,
    ) -> Result<Response<v1::DeleteWebhookResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::DeleteWebhookRequest { tenant, id } = request.into_inner();
        call.target(&tenant, &id);
        let vault = Arc::clone(&self.shared.vault);
        call.blocking(move |call| {
            let caller = call.authenticate(&vault, token)?;
            let tenant = TenantName::parse(&tenant)?;
            call.intent()?;
            vault.webhook_delete(&caller, &tenant, &id)
        })
        .await?;
        Ok(Response::new(v1::DeleteWebhookResponse {}))
    }

    async fn replay_webhook(
        &self,
        request: Request<v1::ReplayWebhookRequest>,
    ) -> Result<Response<v1::ReplayWebhookResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::ReplayWebhookRequest {
            tenant,
            id,
            revision,
        } = request.into_inner();
        call.target(&tenant, &id);
        let vault = Arc::clone(&self.shared.vault);
        let replayed = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let tenant = TenantName::parse(&tenant)?;
                call.intent()?;
                vault.webhook_replay(&caller, &tenant, &id, revision)
            })
            .await?;
        Ok(Response::new(v1::ReplayWebhookResponse { replayed }))
    }
}

/// The dispatcher: runs until `stop` turns true.
pub async fn dispatch(vault: Arc<Vault>, timeout: Duration, mut stop: watch::Receiver<bool>) {
    let mut wake = vault.subscribe_all_feeds();
    let allow: Arc<[Cidr]> = vault.webhook_allowlist().into();
    loop {
        wake.borrow_and_update();
        let round = Arc::clone(&vault);
        let due = tokio::task::spawn_blocking(move || {
            round.webhook_fanout()?;
            round.webhook_due(DELIVERIES_PER_ROUND)
        })
        .await;
        let (deliveries, next_due) = match due {
            Ok(Ok(due)) => due,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "webhook round failed; retrying");
                (Vec::new(), None)
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook round panicked; retrying");
                (Vec::new(), None)
            }
        };
        if !deliveries.is_empty() {
            let posts = deliveries.into_iter().map(|delivery| {
                let allow = Arc::clone(&allow);
                async move {
                    let outcome = post(&delivery, &allow, timeout).await;
                    if let Err(error) = &outcome {
                        tracing::info!(delivery = %delivery.delivery_id, attempt = delivery.attempt, error = %error, "webhook delivery failed");
                    }
                    (delivery, outcome)
                }
            });
            let results = futures_util::future::join_all(posts).await;
            let record = Arc::clone(&vault);
            let recorded = tokio::task::spawn_blocking(move || {
                for (delivery, outcome) in &results {
                    record.webhook_result(delivery, outcome.clone())?;
                }
                Ok::<_, Error>(())
            })
            .await;
            if !matches!(recorded, Ok(Ok(()))) {
                tracing::warn!("webhook results not recorded; the deliveries will be repeated");
            }
            continue;
        }
        let wait = next_due.map_or(IDLE_WAKE, |due| {
            let nanos = due.saturating_sub(now_unix_nanos()).max(0) as u64;
            Duration::from_nanos(nanos).min(IDLE_WAKE)
        });
        tokio::select! {
            _ = wake.changed() => {}
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Posts one delivery: `Ok` on a 2xx answer, else what went wrong (for the delivery's status;
/// it never contains the body or the secret).
async fn post(delivery: &Delivery, allow: &[Cidr], timeout: Duration) -> Result<(), String> {
    let url = WebhookUrl::parse(&delivery.url).map_err(|e| e.to_string())?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: vault-webhook/1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{SIGNATURE_HEADER}: {}\r\nx-vault-delivery: {}\r\nx-vault-event: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.host_header(),
        delivery.body.len(),
        delivery.signature,
        delivery.delivery_id,
        delivery.event_type,
    );
    let attempt = async {
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
            .collect();
        check_addresses(&url.host, &addresses, allow).map_err(|e| e.to_string())?;
        let mut last_error = String::new();
        let mut stream = None;
        for address in &addresses {
            match TcpStream::connect(address).await {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(e) => last_error = format!("connect to {address}: {e}"),
            }
        }
        let stream = stream.ok_or(last_error)?;
        if url.https {
            let connector = tls_connector()?;
            let name = ServerName::try_from(url.host.clone())
                .map_err(|_| format!("{} is not a valid TLS server name", url.host))?;
            let tls = connector
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            exchange(tls, head.as_bytes(), &delivery.body).await
        } else {
            exchange(stream, head.as_bytes(), &delivery.body).await
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    head: &[u8],
    body: &[u8],
) -> Result<(), String> {
    stream
        .write_all(head)
        .await
        .map_err(|e| format!("send: {e}"))?;
    stream
        .write_all(body)
        .await
        .map_err(|e| format!("send: {e}"))?;
    stream.flush().await.map_err(|e| format!("send: {e}"))?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() >= MAX_STATUS_LINE {
            return Err("the answer's status line is too long".into());
        }
        match stream.read(&mut byte).await {
            Ok(0) => return Err("the receiver closed the connection without an answer".into()),
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&line);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| "the answer is not HTTP".to_owned())?;
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP {code}"))
    }
}
