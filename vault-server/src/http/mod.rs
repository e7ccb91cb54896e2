//! Vault's HTTP API: a listener (`--http-listen`) that serves a stated subset of HashiCorp
//! Vault's and OpenBao's HTTP API over the same core, so their clients (the `vault`/`bao` CLI,
//! hvac, Terraform, External Secrets) work unchanged.
//!
//! Invariant: an HTTP request that reaches the core does so as exactly one in-process gRPC
//! call ([`grpc::Gateway::unary`]) through the same [`CallLayer`] stack as a network gRPC call,
//! so authentication, authorization, per-source and per-tenant limits, relaying to the active
//! node, and the audit records (one outcome record, the intent before a mutation, the answer
//! held until durable) are the gRPC path's own; the records say `transport: http` and name the
//! route. What no gRPC call serves is either unaudited like gRPC health (`sys/health`, under
//! the health calls' limits) or an answer of the gateway's own that is recorded through
//! [`CallLayer::record_http_failure`] (an unknown path, a body that does not parse).
//!
//! The routes are one table ([`routes::ROUTES`]): HTTP method and path pattern, the gRPC
//! method it becomes (whose row in [`crate::rpcs`] says what capability it needs), and the
//! mapping module that builds the request and shapes the answer as Vault does (`sys`, `kv`,
//! `transit`, `token`).
//!
//! Namespaces are tenants: `X-Vault-Namespace` (or a first path segment that is no mount,
//! `/v1/acme/secret/...`) names the tenant; without one, a call acts in its token's own
//! tenant.

mod grpc;
mod kv;
mod params;
mod reply;
pub mod routes;
mod sys;
mod token;
mod transit;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tonic::Code;

pub(crate) use grpc::Gateway;
use params::Params;
use reply::Failure;

use crate::{Shared, call::CallLayer, transport};

/// How the HTTP listener is set up.
pub(crate) struct HttpConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub connections: transport::ConnectionLimits,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// A request's body must arrive within this of its headers.
    pub body_timeout: Duration,
    pub max_streams_per_connection: u32,
}

/// Serves Vault's HTTP API on `listener` until the process ends.
pub(crate) async fn serve(listener: TcpListener, config: HttpConfig, gateway: Arc<Gateway>) {
    let config = Arc::new(config);
    let incoming = transport::incoming(listener, config.connections.clone());
    futures_util::pin_mut!(incoming);
    while let Some(accepted) = futures_util::StreamExt::next(&mut incoming).await {
        let Ok(stream) = accepted else { continue };
        let (gateway, config) = (Arc::clone(&gateway), Arc::clone(&config));
        tokio::spawn(async move {
            let peer = tonic::transport::server::Connected::connect_info(&stream);
            match &config.tls {
                None => connection(TokioIo::new(stream), peer, &config, gateway).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(tls));
                    // The handshake is bounded like a request's headers.
                    match tokio::time::timeout(
                        config.connections.header_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(tls_stream)) => {
                            connection(TokioIo::new(tls_stream), peer, &config, gateway).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "HTTP API: TLS handshake failed"),
                        Err(_) => tracing::debug!("HTTP API: TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Serves one connection: HTTP/1.1, or HTTP/2 (by ALPN over TLS, by preface in plaintext).
async fn connection<I>(io: I, peer: transport::PeerInfo, config: &HttpConfig, gateway: Arc<Gateway>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let max_body = config.max_body_bytes;
    let body_timeout = config.body_timeout;
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let (gateway, peer) = (Arc::clone(&gateway), peer.clone());
        async move {
            Ok::<_, std::convert::Infallible>(
                handle(&gateway, peer, request, max_body, body_timeout).await,
            )
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(config.connections.header_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .max_concurrent_streams(config.max_streams_per_connection.max(1))
        .max_header_list_size(64 * 1024);
    if let Err(e) = builder.serve_connection(io, service).await {
        tracing::debug!(error = %e, "HTTP API connection ended");
    }
}

/// What one request is: its route's words, for the audit record and errors.
pub(crate) struct Incoming {
    pub method: Method,
    /// The path after `/v1/`, percent-decoded, without the namespace prefix.
    pub path: String,
    pub headers: HeaderMap,
    pub peer: transport::PeerInfo,
    /// The tenant the namespace names (header or path prefix); empty: none given.
    pub namespace: String,
    pub params: Params,
}

impl Incoming {
    /// `PUT /v1/secret/data/db/primary`: how the audit record names the route.
    pub fn route(&self) -> String {
        format!("http {} /v1/{}", self.method, self.path)
    }
}

async fn handle(
    gateway: &Gateway,
    peer: transport::PeerInfo,
    request: Request<hyper::body::Incoming>,
    max_body: usize,
    body_timeout: Duration,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    // Until the request is routed, it is recorded under its raw path.
    let raw = format!("http {} {}", parts.method, parts.uri.path());
    // The per-source limits come first, before the body is read or anything is looked up;
    // the place is held until the answer.
    let _admission = match gateway.admit(&peer, &parts.headers, &raw).await {
        Ok(admission) => admission,
        Err(refusal) => return refusal,
    };
    let (namespace, path) = match locate(&parts.headers, parts.uri.path()) {
        Ok(located) => located,
        Err(failure) => return gateway.unrouted(&peer, &parts.headers, &raw, failure).await,
    };
    let body = match read_body(body, max_body, body_timeout).await {
        Ok(body) => body,
        Err(failure) => return gateway.unrouted(&peer, &parts.headers, &raw, failure).await,
    };
    let Some((route, matched)) = routes::find(&parts.method, &path, parts.uri.query()) else {
        let failure = routes::not_routed(&parts.method, &path);
        return gateway.unrouted(&peer, &parts.headers, &raw, failure).await;
    };
    let parsed = Params::parse(parts.uri.query(), &body);
    // The body may carry secret values; its buffer is ours alone once read.
    if let Ok(mut buffer) = body.try_into_mut() {
        zeroize::Zeroize::zeroize(buffer.as_mut());
    }
    let mut incoming = Incoming {
        method: parts.method,
        path,
        headers: parts.headers,
        peer,
        namespace,
        params: Params::default(),
    };
    incoming.params = match parsed {
        Ok(params) => params,
        Err(failure) => return gateway.refused(&incoming, route, failure).await,
    };
    match routes::dispatch(gateway, &incoming, route, &matched).await {
        Ok(answer) => answer.into_response(),
        Err(failure) => failure.into_response(""),
    }
}

/// The namespace and the path (after `/v1/`, percent-decoded) of a request, or why it is
/// refused before its body is read.
fn locate(headers: &HeaderMap, raw_path: &str) -> Result<(String, String), Failure> {
    if let Some(refusal) = refuse_early(headers) {
        return Err(refusal);
    }
    let rest = raw_path.strip_prefix("/v1/").ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            format!("no handler for {raw_path}: Vault's API is served under /v1/"),
        )
    })?;
    let decoded = percent_decode(rest)
        .ok_or_else(|| Failure::bad_request("the path is not valid percent-encoded UTF-8"))?;
    namespace_of(headers, &decoded)
}

/// The request body, bounded in size and in time.
async fn read_body(
    body: hyper::body::Incoming,
    max_body: usize,
    body_timeout: Duration,
) -> Result<Bytes, Failure> {
    match tokio::time::timeout(body_timeout, BodyExt::collect(Limited::new(body, max_body))).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {max_body} bytes"),
        )),
        Ok(Err(_)) => Err(Failure::bad_request("the request body could not be read")),
        Err(_) => Err(Failure::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} ms of its headers",
                body_timeout.as_millis()
            ),
        )),
    }
}

/// Headers this vault answers with a refusal before anything else: response wrapping.
fn refuse_early(headers: &HeaderMap) -> Option<Failure> {
    headers.contains_key("x-vault-wrap-ttl").then(|| {
        Failure::bad_request(
            "response wrapping is not supported (X-Vault-Wrap-TTL); ask without it",
        )
    })
}

/// The mounts and top-level paths this vault serves: a first segment that is none of these
/// names a namespace.
const MOUNTS: &[&str] = &["sys", "secret", "transit", "auth"];

/// The namespace (tenant) of a request and the path left: `X-Vault-Namespace`, or a first
/// segment that is no mount before one that is (`acme/secret/data/x`); not both at once. Namespaces are
/// flat (tenants do not nest).
fn namespace_of(headers: &HeaderMap, path: &str) -> Result<(String, String), Failure> {
    let header = match headers.get("x-vault-namespace") {
        Some(value) => value
            .to_str()
            .map_err(|_| Failure::bad_request("X-Vault-Namespace is not text"))?
            .trim()
            .trim_matches('/')
            .to_owned(),
        None => String::new(),
    };
    // `acme/secret/...`: a first segment that is no mount, before one that is.
    let mount_of = |rest: &str| rest.split('/').next().is_some_and(|m| MOUNTS.contains(&m));
    let (prefix, rest) = match path.split_once('/') {
        Some((first, rest)) if !MOUNTS.contains(&first) && !first.is_empty() && mount_of(rest) => {
            (first.to_owned(), rest.to_owned())
        }
        _ => (String::new(), path.to_owned()),
    };
    let namespace = match (header.is_empty(), prefix.is_empty()) {
        (_, true) => header,
        (true, false) => prefix,
        (false, false) => {
            return Err(Failure::bad_request(format!(
                "namespace: the path names namespace {prefix:?} and X-Vault-Namespace names \
                 {header:?}; namespaces are tenants and do not nest"
            )));
        }
    };
    if namespace.contains('/') {
        return Err(Failure::bad_request(format!(
            "namespace {namespace:?}: namespaces are tenants here and do not nest; name one tenant"
        )));
    }
    Ok((namespace, rest))
}

/// Percent-decodes a path; `None` if an escape is malformed or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(value);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The HTTP status of a gRPC answer, told apart by its reason where the code alone is not
/// enough (a CAS mismatch is 412, sealed 503, a failed login 400, as in Vault).
pub(crate) fn http_status(code: Code, reason: &str) -> StatusCode {
    use vault_proto::reason as r;
    match reason {
        r::CAS_MISMATCH => return StatusCode::PRECONDITION_FAILED,
        r::SEALED => return StatusCode::SERVICE_UNAVAILABLE,
        r::NOT_INITIALIZED => return StatusCode::NOT_IMPLEMENTED,
        r::LOGIN_FAILED => return StatusCode::BAD_REQUEST,
        r::TOO_LARGE => return StatusCode::PAYLOAD_TOO_LARGE,
        _ => {}
    }
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::AlreadyExists => StatusCode::BAD_REQUEST,
        Code::Unauthenticated | Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable | Code::Aborted | Code::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::METHOD_NOT_ALLOWED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The first line the server prints for the HTTP listener.
pub(crate) fn banner(local: SocketAddr, tls: bool) -> String {
    format!(
        "vault-server HTTP API listening on {}://{local}",
        if tls { "https" } else { "http" }
    )
}

/// Builds the gateway over the gRPC routes, behind the same call layer as the network.
pub(crate) fn gateway(
    shared: Arc<Shared>,
    routes: tonic::service::Routes,
    layer: CallLayer,
) -> Arc<Gateway> {
    Arc::new(Gateway::new(shared, routes, layer))
}
