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
    future::Future,
    net::SocketAddr,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context as TaskContext, Poll},
    time::Instant,
};

use futures_util::FutureExt;
use http::{HeaderValue, Request as HttpRequest, Response as HttpResponse};
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
    token::Token,
    vault::Caller,
};

use crate::status::to_status;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

#[derive(Clone)]
pub struct CallLayer {
    max_request_bytes: usize,
    audit: Option<Arc<AuditLog>>,
}

impl CallLayer {
    /// `audit` is `None` only when the operator started the server with audit disabled.
    pub fn new(max_request_bytes: usize, audit: Option<Arc<AuditLog>>) -> Self {
        CallLayer {
            max_request_bytes,
            audit,
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
        }
    }
}

#[derive(Clone)]
pub struct CallService<S> {
    inner: S,
    max_request_bytes: usize,
    audit: Option<Arc<AuditLog>>,
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
    /// token itself).
    pub fn authenticate(
        &self,
        vault: &Vault,
        token: Result<Token, Error>,
    ) -> Result<Caller, Error> {
        let caller = vault.authenticate_from(&token?, self.source_ip)?;
        self.update(|record| record.principal = caller.accessor().to_owned());
        Ok(caller)
    }
}

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

/// The bearer token of a request: `authorization: Bearer <token>` or `x-vault-token: <token>`.
pub fn presented_token<T>(request: &Request<T>) -> Result<Token, Error> {
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
                let detail = error.audit_detail();
                call.update(|record| record.detail = detail);
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
        let call = Call {
            request_id: Arc::from(new_request_id()),
            method: Arc::from(method.as_str()),
            source: Arc::from(source.map_or_else(|| "-".to_owned(), |addr| addr.to_string())),
            source_ip: source.map(|addr| addr.ip()),
            audit: if audited { self.audit.clone() } else { None },
            record: Arc::default(),
        };
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
