//! The one place every RPC passes through.
//!
//! [`CallLayer`] wraps every service (ours, health and reflection). For each request it assigns
//! a request id (echoed to the client in the `x-request-id` response header), notes the method
//! and source address, hands the handler a [`Call`] to record the tenant, path and principal,
//! and once the handler has answered, appends the call's one outcome record to the audit log
//! and holds the answer until that record is durable. If it cannot be written, the answer is
//! replaced by UNAVAILABLE: no secret leaves without its record. Health and reflection calls
//! are not audited (they touch no vault data); every other call is.
//!
//! Mutating handlers also call [`Call::intent`] before they change anything, so a change is
//! never committed without a durable record covering it, even if the process dies mid-call.
//!
//! It also turns tonic's OUT_OF_RANGE for an oversized request into RESOURCE_EXHAUSTED, the code
//! gRPC specifies for exceeding the receive limit: such a request never reaches a handler, which
//! is how the layer tells it apart from a handler's own OUT_OF_RANGE.

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context as TaskContext, Poll},
    time::Instant,
};

use futures_util::FutureExt;
use http::{HeaderValue, Request as HttpRequest, Response as HttpResponse};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{
    Code, Request, Status,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};
use tower::{Layer, Service};
use vault_core::{
    Error, Vault,
    audit::{
        Entry, Kind,
        writer::{APPEND_TIMEOUT, AuditLog},
    },
    cidr::Cidr,
    limits::{KeyedRateLimit, source_key},
    token::Token,
    vault::Caller,
};

use crate::status::to_status;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Limits applied to every call before it reaches a handler (health and reflection excepted).
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// Peers whose `x-forwarded-for` header is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Calls per second from one source address, before authentication; 0: no limit.
    pub source_rate: u32,
    /// Calls served at once by the whole server; 0: no limit.
    pub max_concurrent: usize,
}

/// The layer's shared state: the limits and the bookkeeping of refusals.
struct Guards {
    limits: Limits,
    per_source: Option<KeyedRateLimit<IpAddr>>,
    concurrency: Option<Arc<Semaphore>>,
    /// Refusals per (source, reason) since the last one that was audited: a flood is recorded
    /// once a second per source, with a count, instead of once per call.
    refusals: Mutex<HashMap<RefusalKey, (u64, Instant)>>,
}

/// Refusals are counted per source address and reason.
type RefusalKey = (IpAddr, &'static str);

/// At most one audited refusal per source and reason in this interval.
const REFUSAL_RECORD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Clone)]
pub struct CallLayer {
    max_request_bytes: usize,
    audit: Option<Arc<AuditLog>>,
    guards: Arc<Guards>,
}

impl CallLayer {
    /// `audit` is `None` only when the operator started the server with audit disabled.
    pub fn new(max_request_bytes: usize, audit: Option<Arc<AuditLog>>, limits: Limits) -> Self {
        let per_source = (limits.source_rate > 0)
            .then(|| KeyedRateLimit::new(limits.source_rate, limits.source_rate.saturating_mul(2)));
        let concurrency =
            (limits.max_concurrent > 0).then(|| Arc::new(Semaphore::new(limits.max_concurrent)));
        CallLayer {
            max_request_bytes,
            audit,
            guards: Arc::new(Guards {
                limits,
                per_source,
                concurrency,
                refusals: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Guards {
    /// The address a call comes from: the peer, unless the peer is a trusted proxy, in which
    /// case the right-most `x-forwarded-for` entry that is not itself a trusted proxy.
    /// Every `x-forwarded-for` field counts, in order: a proxy that adds its own field instead
    /// of appending to the client's must not let the client's field be read as the truth.
    fn source<'a>(
        &self,
        peer: Option<IpAddr>,
        forwarded: impl Iterator<Item = &'a HeaderValue>,
    ) -> Option<IpAddr> {
        let peer = peer?;
        let trusted = |address: IpAddr| {
            self.limits
                .trusted_proxies
                .iter()
                .any(|c| c.contains(address))
        };
        if !trusted(peer) {
            return Some(peer);
        }
        let fields: Option<Vec<&str>> = forwarded.map(|v| v.to_str().ok()).collect();
        let Some(list) = fields.map(|fields| fields.join(",")) else {
            // A field that is not text: believe none of it.
            return Some(peer);
        };
        let mut client = peer;
        for entry in list.rsplit(',') {
            let Ok(address) = entry.trim().parse::<IpAddr>() else {
                // Garbage in the chain: stop believing it here.
                break;
            };
            client = address;
            if !trusted(address) {
                break;
            }
        }
        Some(client)
    }

    /// Whether a refusal of this kind from `source` should be audited now, and how many were
    /// left unrecorded since the last one.
    fn refusal_to_record(&self, source: IpAddr, reason: &'static str) -> Option<u64> {
        let now = Instant::now();
        let mut refusals = self
            .refusals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if refusals.len() > 65_536 {
            refusals.retain(|_, (_, last)| now.duration_since(*last) < REFUSAL_RECORD_INTERVAL);
        }
        match refusals.get_mut(&(source, reason)) {
            Some((suppressed, last)) if now.duration_since(*last) < REFUSAL_RECORD_INTERVAL => {
                *suppressed += 1;
                None
            }
            Some((suppressed, last)) => {
                let count = *suppressed;
                *suppressed = 0;
                *last = now;
                Some(count)
            }
            None => {
                refusals.insert((source, reason), (0, now));
                Some(0)
            }
        }
    }
}

impl<S> Layer<S> for CallLayer {
    type Service = CallService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallService {
            inner,
            max_request_bytes: self.max_request_bytes,
            audit: self.audit.clone(),
            guards: Arc::clone(&self.guards),
        }
    }
}

#[derive(Clone)]
pub struct CallService<S> {
    inner: S,
    max_request_bytes: usize,
    audit: Option<Arc<AuditLog>>,
    guards: Arc<Guards>,
}

/// What is known about one call; shared between the layer and the handler.
#[derive(Default)]
struct CallRecord {
    handled: bool,
    tenant: String,
    path: String,
    principal: String,
    /// Why the call failed (e.g. which check denied it); for the audit record only.
    detail: String,
}

/// The handler's view of the call it is serving.
#[derive(Clone)]
pub struct Call {
    request_id: Arc<str>,
    method: Arc<str>,
    source: Arc<str>,
    /// The connection's peer address, which network restrictions are checked against.
    source_ip: Option<std::net::IpAddr>,
    audit: Option<Arc<AuditLog>>,
    record: Arc<Mutex<CallRecord>>,
    /// The call's place under the server-wide concurrency limit.
    slot: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl Call {
    /// The call for this request, marking it as having reached its handler.
    pub fn of<T>(request: &Request<T>) -> Call {
        let call = request
            .extensions()
            .get::<Call>()
            .cloned()
            .unwrap_or_else(|| Call {
                // Only reachable if a service is mounted outside the layer; keep serving.
                request_id: Arc::from(new_request_id()),
                method: Arc::from(""),
                source: Arc::from("-"),
                source_ip: None,
                audit: None,
                record: Arc::default(),
                slot: Arc::default(),
            });
        call.update(|record| record.handled = true);
        call
    }

    fn update(&self, change: impl FnOnce(&mut CallRecord)) {
        let mut record = self
            .record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut record);
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Records what the call is about (names only, never values). Raw input is recorded, so
    /// that malformed calls are traceable too, cut to [`MAX_RECORDED_NAME`] bytes.
    pub fn target(&self, tenant: &str, path: &str) {
        self.update(|record| {
            record.tenant = truncated(tenant);
            record.path = truncated(path);
        });
    }

    /// Writes the intent record of a mutation and waits until it is durable. Call it after
    /// authentication and validation, immediately before the change; if it fails, do not make
    /// the change. Blocking: call it from blocking work.
    pub fn intent(&self) -> Result<(), Error> {
        let Some(audit) = &self.audit else {
            return Ok(());
        };
        let mut entry = self.entry();
        entry.kind = Some(Kind::Intent);
        audit.append(entry).map(|_| ()).map_err(|e| {
            tracing::error!(error = %e, request_id = %self.request_id, "intent record not written; change refused");
            Error::AuditUnavailable
        })
    }

    /// An audit entry with everything known about the call so far.
    fn entry(&self) -> Entry {
        let record = self
            .record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Entry {
            kind: Some(Kind::Outcome),
            request_id: self.request_id.to_string(),
            method: self.method.to_string(),
            tenant: record.tenant.clone(),
            path: record.path.clone(),
            principal: record.principal.clone(),
            source: self.source.to_string(),
            detail: record.detail.clone(),
            ..Entry::default()
        }
    }

    /// Checks the presented token and records who is calling (the token's accessor, never the
    /// token itself). The MFA code, if one came with the call, rides along.
    pub fn authenticate(&self, vault: &Vault, presented: Presented) -> Result<Caller, Error> {
        let caller = vault.authenticate_from(&presented.token?, self.source_ip)?;
        self.update(|record| record.principal = caller.accessor().to_owned());
        Ok(caller.with_mfa_code(presented.mfa_code))
    }

    /// Gives up the call's place under the concurrency limit, for a handler about to wait on
    /// purpose (a held-back login) rather than work.
    pub fn release_slot(&self) {
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
    }

    /// The caller's address: the peer, or the client a trusted proxy forwarded for.
    pub fn source_ip(&self) -> Option<std::net::IpAddr> {
        self.source_ip
    }

    /// Records the principal of a login (the accessor of the token it issued).
    pub fn set_principal(&self, principal: &str) {
        self.update(|record| record.principal = principal.to_owned());
    }

    /// Adds to the audit detail of a call that succeeds (failures get the error's detail).
    pub fn note(&self, detail: String) {
        self.update(|record| {
            if record.detail.is_empty() {
                record.detail = detail;
            } else {
                record.detail = format!("{}; {detail}", record.detail);
            }
        });
    }
}

/// What a call presented: its bearer token and, if any, an MFA code.
pub struct Presented {
    token: Result<Token, Error>,
    mfa_code: Option<String>,
}

/// Request metadata carrying a one-time MFA code.
pub const MFA_HEADER: &str = "x-vault-mfa";

/// Longest tenant or path recorded for a call; longer input is cut (on a character boundary).
pub const MAX_RECORDED_NAME: usize = 600;

fn truncated(text: &str) -> String {
    if text.len() <= MAX_RECORDED_NAME {
        return text.to_owned();
    }
    let mut end = MAX_RECORDED_NAME;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The bearer token of a request (`authorization: Bearer <token>` or `x-vault-token: <token>`)
/// and its MFA code (`x-vault-mfa`).
pub fn presented_token<T>(request: &Request<T>) -> Presented {
    let mfa_code = request
        .metadata()
        .get(MFA_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(|code| code.trim().to_owned());
    Presented {
        token: bearer_token(request),
        mfa_code,
    }
}

pub(crate) fn bearer_token<T>(request: &Request<T>) -> Result<Token, Error> {
    let metadata = request.metadata();
    let raw = if let Some(value) = metadata.get("authorization") {
        let text = value.to_str().map_err(|_| Error::PermissionDenied)?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .ok_or(Error::PermissionDenied)?;
        token.trim().to_owned()
    } else if let Some(value) = metadata.get("x-vault-token") {
        value
            .to_str()
            .map_err(|_| Error::PermissionDenied)?
            .trim()
            .to_owned()
    } else {
        return Err(Error::Unauthenticated);
    };
    Token::from_presented(raw)
}

impl Call {
    /// Runs blocking vault-core work off the async threads. On failure the audit record gets
    /// the error's detail (which check denied the call), the client only its status.
    pub async fn blocking<R: Send + 'static>(
        &self,
        work: impl FnOnce(&Call) -> Result<R, Error> + Send + 'static,
    ) -> Result<R, Status> {
        let call = self.clone();
        match tokio::task::spawn_blocking(move || {
            let result = work(&call);
            if let Err(error) = &result {
                call.note(error.audit_detail());
            }
            result
        })
        .await
        {
            Ok(result) => result.map_err(to_status),
            Err(e) => {
                tracing::error!(error = %e, "request task failed");
                Err(Status::internal("internal error; see the server log"))
            }
        }
    }
}

fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    match getrandom::fill(&mut bytes) {
        Ok(()) => hex::encode(bytes),
        // A request id only correlates records; a clock-based one keeps the call going.
        Err(_) => format!("{:032x}", vault_core::time::now_unix_nanos()),
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<HttpRequest<ReqBody>> for CallService<S>
where
    S: Service<HttpRequest<ReqBody>, Response = HttpResponse<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: HttpRequest<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let method = request.uri().path().to_owned();
        let extensions = request.extensions();
        let source: Option<SocketAddr> = extensions
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .or_else(|| {
                extensions
                    .get::<TlsConnectInfo<TcpConnectInfo>>()
                    .and_then(|info| info.get_ref().remote_addr())
            });
        let audited =
            !method.starts_with("/grpc.health.") && !method.starts_with("/grpc.reflection.");
        let guards = Arc::clone(&self.guards);
        let source_ip = guards.source(
            source.map(|addr| addr.ip()),
            request.headers().get_all("x-forwarded-for").iter(),
        );
        let source_text = match (source, source_ip) {
            (Some(peer), Some(ip)) if peer.ip() != ip => format!("{ip} (via {peer})"),
            (Some(peer), _) => peer.to_string(),
            _ => "-".to_owned(),
        };
        let call = Call {
            request_id: Arc::from(new_request_id()),
            method: Arc::from(method.as_str()),
            source: Arc::from(source_text),
            source_ip,
            audit: if audited { self.audit.clone() } else { None },
            record: Arc::default(),
            slot: Arc::default(),
        };
        // Limits before anything else (authentication included): a flood is refused cheaply
        // and recorded once a second per source, not once per call.
        let mut permit = None;
        let refusal = if !audited {
            None
        } else if let Some(semaphore) = &guards.concurrency {
            match Arc::clone(semaphore).try_acquire_owned() {
                Ok(held) => {
                    permit = Some(held);
                    None
                }
                Err(_) => Some((
                    "concurrency",
                    format!(
                        "the server is serving its limit of {} calls at once",
                        guards.limits.max_concurrent
                    ),
                )),
            }
        } else {
            None
        };
        let refusal = refusal.or_else(|| {
            let limit = guards.per_source.as_ref()?;
            let ip = source_ip?;
            (audited && !limit.try_take(&source_key(ip), Instant::now())).then(|| {
                (
                    "source-rate",
                    format!(
                        "source {ip} is over the limit of {} calls/s",
                        guards.limits.source_rate
                    ),
                )
            })
        });
        if let Some((reason, message)) = refusal {
            let record = source_ip.and_then(|ip| guards.refusal_to_record(source_key(ip), reason));
            return Box::pin(async move {
                if let Some(suppressed) = record {
                    call.note(format!(
                        "refused: {message}; {suppressed} similar refusals not recorded since the last record"
                    ));
                    if let Err(e) = record_outcome(&call, Code::ResourceExhausted).await {
                        tracing::warn!(error = %e, "refusal record not written");
                    }
                }
                let mut response = Status::resource_exhausted(message).into_http();
                if let Ok(value) = HeaderValue::from_str(&call.request_id) {
                    response.headers_mut().insert(REQUEST_ID_HEADER, value);
                }
                Ok(response)
            });
        }
        // Held until the call's last handle is dropped, after its outcome record (or until
        // the handler gives it up, see `Call::release_slot`).
        *call
            .slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = permit;
        request.extensions_mut().insert(call.clone());
        // The service that was polled ready is the one to call; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let max_request_bytes = self.max_request_bytes;
        // The handler and the outcome record run in their own task: a client that cancels or
        // times out drops this future, but must not stop a mutation's outcome from being
        // recorded.
        let task = tokio::spawn(async move {
            // A panicking handler still gets its outcome record (INTERNAL).
            let mut response = match AssertUnwindSafe(inner.call(request)).catch_unwind().await {
                Ok(result) => result?,
                Err(_) => {
                    tracing::error!(request_id = %call.request_id, method = %call.method, "handler panicked");
                    Status::internal("internal error; see the server log").into_http()
                }
            };
            let handled = call
                .record
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .handled;
            let headers = response.headers_mut();
            let mut code = headers
                .get("grpc-status")
                .and_then(|value| value.to_str().ok())
                .and_then(|text| text.parse::<i32>().ok())
                .map_or(Code::Ok, Code::from);
            if code == Code::OutOfRange && !handled {
                code = Code::ResourceExhausted;
                let message = format!(
                    "request is larger than the transport limit of {max_request_bytes} bytes"
                );
                headers.insert("grpc-status", HeaderValue::from(code as i32));
                if let Ok(value) = HeaderValue::from_str(&message) {
                    headers.insert("grpc-message", value);
                }
            }
            if let Err(e) = record_outcome(&call, code).await {
                tracing::error!(error = %e, request_id = %call.request_id, method = %call.method, "outcome record not written; answer withheld");
                response = Status::unavailable(
                    "audit log unavailable; no call is served until it can be written",
                )
                .into_http();
            }
            if let Ok(value) = HeaderValue::from_str(&call.request_id) {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            tracing::debug!(
                target: "vault::call",
                request_id = %call.request_id,
                method = %call.method,
                code = ?code,
                micros = started.elapsed().as_micros() as u64,
                "call"
            );
            Ok(response)
        });
        Box::pin(async move {
            match task.await {
                Ok(result) => result,
                Err(e) => {
                    tracing::error!(error = %e, "call task failed");
                    Ok(Status::internal("internal error; see the server log").into_http())
                }
            }
        })
    }
}

/// Appends the call's outcome record and waits until it is durable (never longer than
/// [`APPEND_TIMEOUT`]).
async fn record_outcome(call: &Call, code: Code) -> Result<(), String> {
    let Some(audit) = &call.audit else {
        return Ok(());
    };
    let mut entry = call.entry();
    entry.outcome = outcome(code).to_owned();
    entry.code = code_name(code).to_owned();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    audit.submit(entry, Box::new(move |result| drop(sender.send(result))));
    match tokio::time::timeout(APPEND_TIMEOUT, receiver).await {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(_)) => Err("the audit writer dropped the record".into()),
        Err(_) => Err("timed out waiting for the audit log".into()),
    }
}

/// The canonical name of a gRPC status code, as audit records carry it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn outcome(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::PermissionDenied | Code::Unauthenticated => "denied",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use std::convert::Infallible;

    use tokio::sync::Notify;

    use super::*;

    fn grpc_status<B>(response: &HttpResponse<B>) -> Code {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.parse::<i32>().ok())
            .map_or(Code::Ok, Code::from)
    }

    fn request() -> HttpRequest<()> {
        HttpRequest::builder()
            .uri("/vault.v1.System/Status")
            .body(())
            .expect("request")
    }

    #[tokio::test]
    async fn calls_beyond_the_concurrency_limit_are_refused_until_a_slot_frees() {
        let release = Arc::new(Notify::new());
        let entered = Arc::new(Notify::new());
        let inner = {
            let (release, entered) = (Arc::clone(&release), Arc::clone(&entered));
            tower::service_fn(move |_request: HttpRequest<()>| {
                let (release, entered) = (Arc::clone(&release), Arc::clone(&entered));
                async move {
                    entered.notify_one();
                    release.notified().await;
                    Ok::<_, Infallible>(HttpResponse::new(String::new()))
                }
            })
        };
        let limits = Limits {
            max_concurrent: 1,
            ..Limits::default()
        };
        let mut service = CallLayer::new(1024, None, limits).layer(inner);
        let first = tokio::spawn(service.call(request()));
        entered.notified().await;
        let refused = service.call(request()).await.expect("answer");
        assert_eq!(grpc_status(&refused), Code::ResourceExhausted);
        release.notify_one();
        let answered = first.await.expect("task").expect("answer");
        assert_eq!(grpc_status(&answered), Code::Ok);
        // The slot is free again.
        let again = tokio::spawn(service.call(request()));
        entered.notified().await;
        release.notify_one();
        assert_eq!(
            grpc_status(&again.await.expect("task").expect("answer")),
            Code::Ok
        );
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_and_only_from_trusted_proxies() {
        let guards = |trusted: &[&str]| Guards {
            limits: Limits {
                trusted_proxies: trusted
                    .iter()
                    .map(|c| Cidr::parse(c).expect("cidr"))
                    .collect(),
                ..Limits::default()
            },
            per_source: None,
            concurrency: None,
            refusals: Mutex::new(HashMap::new()),
        };
        let ip = |text: &str| text.parse::<IpAddr>().expect("ip");
        let header = |text: &'static str| HeaderValue::from_static(text);
        let proxy = Some(ip("10.0.0.1"));
        let trusting = guards(&["10.0.0.0/24"]);
        let one = [header("203.0.113.9")];
        assert_eq!(trusting.source(proxy, one.iter()), Some(ip("203.0.113.9")));
        // Chained proxies are skipped; a forged left-most entry is never reached.
        let chain = [header("6.6.6.6, 203.0.113.9, 10.0.0.7")];
        assert_eq!(
            trusting.source(proxy, chain.iter()),
            Some(ip("203.0.113.9"))
        );
        let split = [header("6.6.6.6"), header("203.0.113.9")];
        assert_eq!(
            trusting.source(proxy, split.iter()),
            Some(ip("203.0.113.9"))
        );
        // Garbage stops the walk at the last believable hop.
        let garbage = [header("203.0.113.9, nonsense")];
        assert_eq!(trusting.source(proxy, garbage.iter()), proxy);
        // From an untrusted peer the header means nothing.
        assert_eq!(
            guards(&[]).source(proxy, one.iter()),
            proxy,
            "untrusted peer"
        );
        assert_eq!(trusting.source(proxy, [].iter()), proxy);
    }
}
