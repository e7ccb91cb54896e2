//! The one place every RPC passes through.
//!
//! [`CallLayer`] wraps every service (ours, health and reflection). For each request it assigns
//! a request id (echoed to the client in the `x-request-id` response header), notes the method
//! and source address, hands the handler a [`Call`] to record the tenant, path and principal,
//! and once the handler has answered, records the outcome. The audit log hooks in at
//! [`CallService::call`]; today the record goes to the server log.
//!
//! It also turns tonic's OUT_OF_RANGE for an oversized request into RESOURCE_EXHAUSTED, the code
//! gRPC specifies for exceeding the receive limit: such a request never reaches a handler, which
//! is how the layer tells it apart from a handler's own OUT_OF_RANGE.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context as TaskContext, Poll},
    time::Instant,
};

use http::{HeaderValue, Request as HttpRequest, Response as HttpResponse};
use tonic::{Code, Request, Status, transport::server::TcpConnectInfo};
use tower::{Layer, Service};
use vault_core::{Error, token::Token};

use crate::status::to_status;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

#[derive(Clone)]
pub struct CallLayer {
    node_id: Arc<str>,
    max_request_bytes: usize,
}

impl CallLayer {
    pub fn new(node_id: String, max_request_bytes: usize) -> Self {
        CallLayer { node_id: node_id.into(), max_request_bytes }
    }
}

impl<S> Layer<S> for CallLayer {
    type Service = CallService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallService { inner, node_id: Arc::clone(&self.node_id), max_request_bytes: self.max_request_bytes }
    }
}

#[derive(Clone)]
pub struct CallService<S> {
    inner: S,
    node_id: Arc<str>,
    max_request_bytes: usize,
}

/// What is known about one call; shared between the layer and the handler.
#[derive(Default)]
struct CallRecord {
    handled: bool,
    tenant: String,
    path: String,
    principal: String,
}

/// The handler's view of the call it is serving.
#[derive(Clone)]
pub struct Call {
    request_id: Arc<str>,
    record: Arc<Mutex<CallRecord>>,
}

impl Call {
    /// The call for this request, marking it as having reached its handler.
    pub fn of<T>(request: &Request<T>) -> Call {
        let call = request.extensions().get::<Call>().cloned().unwrap_or_else(|| Call {
            // Only reachable if a service is mounted outside the layer; keep serving.
            request_id: Arc::from(new_request_id()),
            record: Arc::default(),
        });
        call.update(|record| record.handled = true);
        call
    }

    fn update(&self, change: impl FnOnce(&mut CallRecord)) {
        let mut record = self.record.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut record);
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Records what the call is about (names only, never values).
    pub fn target(&self, tenant: &str, path: &str) {
        self.update(|record| {
            record.tenant = tenant.to_owned();
            record.path = path.to_owned();
        });
    }

    /// Records who is calling: a token accessor, never the token.
    pub fn principal(&self, accessor: &str) {
        self.update(|record| record.principal = accessor.to_owned());
    }
}

/// The bearer token of a request: `authorization: Bearer <token>` or `x-vault-token: <token>`.
pub fn presented_token<T>(request: &Request<T>) -> Result<Token, Error> {
    let metadata = request.metadata();
    let raw = if let Some(value) = metadata.get("authorization") {
        let text = value.to_str().map_err(|_| Error::PermissionDenied)?;
        let token = text.strip_prefix("Bearer ").or_else(|| text.strip_prefix("bearer ")).ok_or(Error::PermissionDenied)?;
        token.trim().to_owned()
    } else if let Some(value) = metadata.get("x-vault-token") {
        value.to_str().map_err(|_| Error::PermissionDenied)?.trim().to_owned()
    } else {
        return Err(Error::Unauthenticated);
    };
    Token::from_presented(raw)
}

/// Runs blocking vault-core work off the async threads and maps its error to a status.
pub async fn blocking<R: Send + 'static>(work: impl FnOnce() -> Result<R, Error> + Send + 'static) -> Result<R, Status> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(to_status),
        Err(e) => {
            tracing::error!(error = %e, "request task failed");
            Err(Status::internal("internal error; see the server log"))
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
    ResBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: HttpRequest<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let call = Call { request_id: Arc::from(new_request_id()), record: Arc::default() };
        let method = request.uri().path().to_owned();
        let source: Option<SocketAddr> = request.extensions().get::<TcpConnectInfo>().and_then(TcpConnectInfo::remote_addr);
        request.extensions_mut().insert(call.clone());
        // The service that was polled ready is the one to call; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let node_id = Arc::clone(&self.node_id);
        let max_request_bytes = self.max_request_bytes;
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            let record = call.record.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let headers = response.headers_mut();
            let mut code = headers
                .get("grpc-status")
                .and_then(|value| value.to_str().ok())
                .and_then(|text| text.parse::<i32>().ok())
                .map_or(Code::Ok, Code::from);
            if code == Code::OutOfRange && !record.handled {
                code = Code::ResourceExhausted;
                let message = format!("request is larger than the transport limit of {max_request_bytes} bytes");
                headers.insert("grpc-status", HeaderValue::from(code as i32));
                if let Ok(value) = HeaderValue::from_str(&message) {
                    headers.insert("grpc-message", value);
                }
            }
            if let Ok(value) = HeaderValue::from_str(&call.request_id) {
                headers.insert(REQUEST_ID_HEADER, value);
            }
            tracing::info!(
                target: "vault::call",
                request_id = %call.request_id,
                node = %node_id,
                method = %method,
                source = %source.map_or_else(|| "-".to_owned(), |addr| addr.to_string()),
                tenant = %record.tenant,
                path = %record.path,
                principal = %record.principal,
                outcome = outcome(code),
                code = ?code,
                micros = started.elapsed().as_micros() as u64,
                "call"
            );
            drop(record);
            Ok(response)
        })
    }
}

fn outcome(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::PermissionDenied | Code::Unauthenticated => "denied",
        _ => "error",
    }
}
