//! Webhooks service (create, list, status, delete, replay) and the dispatcher that posts
//! deliveries.
//!
//! The dispatcher wakes when any feed moves (or a retry falls due), fans new events out to
//! deliveries, and posts the due ones concurrently. Each post resolves the host again and checks
//! every address (so DNS cannot be switched to an internal address after creation), connects to
//! a checked address itself, and speaks minimal HTTP/1.1 (or HTTPS, with the web PKI roots):
//! the request, then the status line; a 2xx answer is success.
//!
//! Due deliveries are taken from every tenant's queue in turn, within the limits in flight (in
//! all, per tenant, per host:port; `DispatchState`), and posted as a `JoinSet`: each result is
//! recorded as it comes, and its place goes to the next delivery. The host is resolved
//! asynchronously, with a timeout, at creation (after the quota and rate checks,
//! `Vault::webhook_admit`) and at each delivery, on its own bounded share of the blocking pool
//! ([`Lookups`]). Neither the creation error nor `last_error` tells what a host resolved to,
//! or whether a port refused or timed out. A 3xx is a failure (no redirects), and every post
//! has a connection of its own (`Connection: close`).

use std::{
    net::SocketAddr,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::FutureExt;

use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
    task::JoinSet,
};
use tonic::{Request, Response};
use vault_core::{
    Error, Vault,
    cidr::Cidr,
    limits::CountedPlaces,
    names::TenantName,
    secret::SecretBytes,
    time::{now_unix_nanos, rfc3339},
    vault::{
        Delivery, DeliveryState, DispatchLimits, DispatchState, EventKind, SIGNATURE_HEADER,
        WebhookInfo, WebhookSpec, WebhookUrl, check_addresses, unreachable_host,
    },
};
use vault_proto::v1::{
    self, CreateWebhookRequest, CreateWebhookResponse, DeleteWebhookRequest, DeleteWebhookResponse,
    ListWebhooksRequest, ListWebhooksResponse, ReplayWebhookRequest, ReplayWebhookResponse,
    WebhookStatusRequest, WebhookStatusResponse, webhooks_server::Webhooks,
};

use crate::{
    call::{Call, presented_token},
    serve::{Handlers, Reply, at},
};

/// Longest wait between rounds when nothing wakes the dispatcher.
const IDLE_WAKE: Duration = Duration::from_secs(5);
/// Longest status line read from a receiver.
const MAX_STATUS_LINE: usize = 8 * 1024;

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
        creator: info.creator,
        pending: info.pending,
        dead: info.dead,
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
impl Webhooks for Handlers {
    async fn create_webhook(
        &self,
        request: Request<CreateWebhookRequest>,
    ) -> Reply<CreateWebhookResponse> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let CreateWebhookRequest {
            tenant,
            url,
            paths,
            events,
            secret,
        } = request.into_inner();
        call.target(&tenant, &paths);
        let secret = (!secret.is_empty()).then(|| SecretBytes::new(secret));
        let vault = Arc::clone(&self.shared.vault);
        // First everything that needs no network, the quota and the rate included; only then
        // is the host resolved, asynchronously and with a timeout, so slow DNS holds neither
        // a blocking thread nor the way for callers who would be refused anyway.
        let (caller, tenant, spec, url) = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let tenant = TenantName::parse(&tenant)?;
                let events = events
                    .iter()
                    .map(|e| EventKind::parse(e))
                    .collect::<Result<Vec<_>, Error>>()?;
                let spec = WebhookSpec {
                    url,
                    paths,
                    events,
                    secret,
                };
                let url = vault.webhooks().webhook_admit(&caller, &tenant, &spec)?;
                // The host only: webhook URLs often carry a credential in their path or query.
                call.note(format!("webhook to {}", url.host_header()));
                Ok((caller, tenant, spec, url))
            })
            .await?;
        let addresses = self
            .shared
            .webhook_lookups
            .resolve(tenant.as_str(), &url)
            .await
            .unwrap_or_default();
        let vault = Arc::clone(&self.shared.vault);
        let generates = spec.secret.is_none();
        let (info, generated) = call
            .blocking(move |call| {
                if generates {
                    call.intent_to_return("the generated webhook signing secret")?;
                } else {
                    call.intent()?;
                }
                vault
                    .webhooks()
                    .webhook_create(&caller, &tenant, spec, &addresses)
            })
            .await?;
        if generated.is_some() {
            call.answer_carries_credential();
        }
        let secret = generated
            .map(|secret| String::from_utf8_lossy(secret.expose_secret()).into_owned())
            .unwrap_or_default();
        Ok(Response::new(CreateWebhookResponse {
            webhook: Some(webhook_message(info)),
            secret,
        }))
    }

    async fn list_webhooks(&self, r: Request<ListWebhooksRequest>) -> Reply<ListWebhooksResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, ""))
            .parse(|r| TenantName::parse(&r.tenant))
            .run(|step, tenant| step.vault.webhooks().webhook_list(step.caller()?, &tenant))
            .answer(|hooks| ListWebhooksResponse {
                webhooks: hooks.into_iter().map(webhook_message).collect(),
            })
            .await
    }

    async fn webhook_status(
        &self,
        r: Request<WebhookStatusRequest>,
    ) -> Reply<WebhookStatusResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, &r.id))
            .parse(|r| Ok((TenantName::parse(&r.tenant)?, r.id)))
            .run(|step, (tenant, id)| {
                step.vault
                    .webhooks()
                    .webhook_status(step.caller()?, &tenant, &id)
            })
            .answer(|status| WebhookStatusResponse {
                webhook: Some(webhook_message(status.webhook)),
                pending: status.pending.into_iter().map(delivery_message).collect(),
                pending_total: status.pending_total,
                dead: status.dead.into_iter().map(delivery_message).collect(),
                dead_total: status.dead_total,
            })
            .await
    }

    async fn delete_webhook(
        &self,
        r: Request<DeleteWebhookRequest>,
    ) -> Reply<DeleteWebhookResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, &r.id))
            .parse(|r| Ok((TenantName::parse(&r.tenant)?, r.id)))
            .run(|step, (tenant, id)| {
                step.vault
                    .webhooks()
                    .webhook_delete(step.caller()?, &tenant, &id)
            })
            .answer(|()| DeleteWebhookResponse {})
            .await
    }

    async fn replay_webhook(
        &self,
        r: Request<ReplayWebhookRequest>,
    ) -> Reply<ReplayWebhookResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, &r.id))
            .parse(|r| Ok((TenantName::parse(&r.tenant)?, r.id, r.revision)))
            .run(|step, (tenant, id, revision)| {
                step.vault
                    .webhooks()
                    .webhook_replay(step.caller()?, &tenant, &id, revision)
            })
            .answer(|replayed| ReplayWebhookResponse { replayed })
            .await
    }
}

/// How the dispatcher posts.
#[derive(Clone, Copy, Debug)]
pub struct DispatchConfig {
    /// How long a receiver has to answer.
    pub timeout: Duration,
    /// Posts in flight: in all, per tenant, per receiving host.
    pub limits: DispatchLimits,
}

/// What one post reports back.
type Posted = (Delivery, Result<(), String>);

/// The dispatcher: runs until `stop` turns true.
///
/// Posts are streamed: each runs on its own, and the moment one ends its result is recorded
/// and its place goes to the next due delivery, so a receiver that takes its whole timeout
/// holds up nobody else. Due deliveries are taken from every tenant's queue in turn, within
/// the limits per tenant and per host (see [`Vault::webhook_due`]), so one tenant's tarpit
/// receivers can take at most its own share of posts.
pub async fn dispatch(
    vault: Arc<Vault>,
    config: DispatchConfig,
    lookups: Arc<Lookups>,
    mut stop: watch::Receiver<bool>,
) {
    let mut wake = vault.changes().subscribe_all_feeds();
    let allow: Arc<[Cidr]> = vault.webhooks().webhook_allowlist().into();
    let mut busy = DispatchState::default();
    let mut posts: JoinSet<Posted> = JoinSet::new();
    let mut next_due: Option<i64> = None;
    let mut pass = true;
    loop {
        if std::mem::take(&mut pass) {
            wake.borrow_and_update();
            let (round, state, limits) = (Arc::clone(&vault), busy.clone(), config.limits);
            busy.turn = busy.turn.wrapping_add(1);
            let due = tokio::task::spawn_blocking(move || {
                round.webhooks().webhook_fanout()?;
                round.webhooks().webhook_due(&state, &limits)
            })
            .await;
            match due {
                Ok(Ok((deliveries, due))) => {
                    next_due = due;
                    for delivery in deliveries {
                        start_post(
                            &mut busy,
                            &mut posts,
                            delivery,
                            &allow,
                            config.timeout,
                            &lookups,
                        );
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "webhook round failed; retrying");
                    next_due = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhook round panicked; retrying");
                    next_due = None;
                }
            }
        }
        let wait = next_due.map_or(IDLE_WAKE, |due| {
            let nanos = due.saturating_sub(now_unix_nanos()).max(0) as u64;
            Duration::from_nanos(nanos).min(IDLE_WAKE)
        });
        tokio::select! {
            Some(done) = posts.join_next(), if !posts.is_empty() => {
                let mut finished = Vec::new();
                let mut push = |joined: Result<Posted, tokio::task::JoinError>| match joined {
                    Ok(posted) => finished.push(posted),
                    // Posts catch their own panics (see start_post); nothing to record.
                    Err(e) => tracing::warn!(error = %e, "webhook post task failed"),
                };
                push(done);
                while let Some(more) = posts.try_join_next() {
                    push(more);
                }
                for (delivery, _) in &finished {
                    end_post(&mut busy, delivery);
                }
                let record = Arc::clone(&vault);
                let recorded = tokio::task::spawn_blocking(move || {
                    for (delivery, outcome) in &finished {
                        record.webhooks().webhook_result(delivery, outcome.clone())?;
                    }
                    Ok::<_, Error>(())
                })
                .await;
                if !matches!(recorded, Ok(Ok(()))) {
                    tracing::warn!("webhook results not recorded; the deliveries will be repeated");
                }
                pass = true;
            }
            changed = wake.changed() => {
                if changed.is_err() {
                    return;
                }
                pass = true;
            }
            () = tokio::time::sleep(wait) => pass = true,
            _ = stop.changed() => return,
        }
    }
}

fn start_post(
    busy: &mut DispatchState,
    posts: &mut JoinSet<Posted>,
    delivery: Delivery,
    allow: &Arc<[Cidr]>,
    timeout: Duration,
    lookups: &Arc<Lookups>,
) {
    busy.in_flight
        .insert((delivery.tenant, delivery.webhook.clone(), delivery.revision));
    *busy.per_tenant.entry(delivery.tenant).or_insert(0) += 1;
    *busy.per_host.entry(delivery.host.clone()).or_insert(0) += 1;
    let allow = Arc::clone(allow);
    let lookups = Arc::clone(lookups);
    posts.spawn(async move {
        let outcome = match AssertUnwindSafe(post(&delivery, &allow, timeout, &lookups))
            .catch_unwind()
            .await
        {
            Ok(outcome) => outcome,
            Err(_) => Err("internal error while posting".to_owned()),
        };
        if let Err(error) = &outcome {
            tracing::info!(delivery = %delivery.delivery_id, attempt = delivery.attempt, error = %error, "webhook delivery failed");
        }
        (delivery, outcome)
    });
}

fn end_post(busy: &mut DispatchState, delivery: &Delivery) {
    busy.in_flight
        .remove(&(delivery.tenant, delivery.webhook.clone(), delivery.revision));
    for count in [
        busy.per_tenant.get_mut(&delivery.tenant),
        busy.per_host.get_mut(&delivery.host),
    ]
    .into_iter()
    .flatten()
    {
        *count = count.saturating_sub(1);
    }
    busy.per_tenant.retain(|_, count| *count > 0);
    busy.per_host.retain(|_, count| *count > 0);
}

/// Host lookups of webhooks. The system resolver (`getaddrinfo`) blocks a thread for as long as
/// a DNS server takes, whatever the caller's timeout, so lookups run on the blocking pool under
/// their own bound: at most [`Lookups::MAX`] at once, [`Lookups::PER_TENANT`] for one tenant.
/// A tenant whose hosts' DNS never answers holds at most its own share; past the bounds a
/// lookup is refused at once (a creation is told the host does not resolve, a delivery is
/// retried later).
pub struct Lookups {
    timeout: Duration,
    running: Arc<tokio::sync::Semaphore>,
    per_tenant: CountedPlaces<String>,
}

impl Lookups {
    pub const MAX: usize = 32;
    pub const PER_TENANT: usize = 4;

    pub fn new(timeout: Duration) -> Self {
        Lookups {
            timeout,
            running: Arc::new(tokio::sync::Semaphore::new(Self::MAX)),
            per_tenant: CountedPlaces::default(),
        }
    }

    /// The addresses `url`'s host resolves to, or `None` when the lookup fails, is refused by
    /// the bounds, or takes longer than the timeout (the caller is told the same in every
    /// case, see [`vault_core::vault::unreachable_host`]; the log says which).
    pub async fn resolve(&self, tenant: &str, url: &WebhookUrl) -> Option<Vec<SocketAddr>> {
        let Ok(running) = Arc::clone(&self.running).try_acquire_owned() else {
            tracing::info!(host = %url.host, "webhook host lookup refused: too many lookups running");
            return None;
        };
        let Some(place) = self.per_tenant.take(tenant.to_owned(), Self::PER_TENANT) else {
            tracing::info!(host = %url.host, %tenant, "webhook host lookup refused: the tenant has its share running");
            return None;
        };
        let (host, port) = (url.host.clone(), url.port);
        // The places go with the thread: they are given back when the lookup really ends,
        // not when the caller stops waiting.
        let lookup = tokio::task::spawn_blocking(move || {
            let _held = (running, place);
            std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                .map(|addresses| addresses.collect::<Vec<_>>())
        });
        match tokio::time::timeout(self.timeout, lookup).await {
            Ok(Ok(Ok(addresses))) => Some(addresses),
            Ok(Ok(Err(error))) => {
                tracing::info!(host = %url.host, %error, "webhook host does not resolve");
                None
            }
            Ok(Err(error)) => {
                tracing::warn!(host = %url.host, %error, "webhook host lookup failed");
                None
            }
            Err(_) => {
                tracing::info!(host = %url.host, timeout_ms = self.timeout.as_millis() as u64, "webhook host lookup timed out");
                None
            }
        }
    }
}

/// Posts one delivery: `Ok` on a 2xx answer, else what went wrong (for the delivery's status;
/// it never contains the body or the secret).
async fn post(
    delivery: &Delivery,
    allow: &[Cidr],
    timeout: Duration,
    lookups: &Lookups,
) -> Result<(), String> {
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
    // What the receiver's owner may learn from `last_error`: whether the host resolved to an
    // allowed address and whether a connection was made, never which error a port gave (no
    // "refused" against "timed out" per port) nor what an internal DNS server answered.
    let connected = AtomicBool::new(false);
    let attempt = async {
        let Some(addresses) = lookups.resolve(&delivery.tenant.to_hex(), &url).await else {
            return Err(unreachable_host(&url.host).to_string());
        };
        check_addresses(&url.host, &addresses, allow).map_err(|e| e.to_string())?;
        let mut stream = None;
        for address in &addresses {
            match TcpStream::connect(address).await {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(e) => tracing::debug!(%address, error = %e, "webhook connect failed"),
            }
        }
        let stream = stream.ok_or_else(|| COULD_NOT_CONNECT.to_owned())?;
        connected.store(true, Ordering::Relaxed);
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
    match tokio::time::timeout(timeout, attempt).await {
        Ok(outcome) => outcome,
        Err(_) if !connected.load(Ordering::Relaxed) => Err(COULD_NOT_CONNECT.to_owned()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// Every failure to connect reads the same (see `post`).
const COULD_NOT_CONNECT: &str = "could not connect to the receiver";

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
