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

/// Serves Vault's HTTP API on `listener` until `stop` turns true; then stops accepting, lets
/// each connection finish the requests it carries (HTTP/1.1 keep-alive ends, HTTP/2 gets a
/// GOAWAY) and returns once they have, so their records precede the final checkpoint.
pub(crate) async fn serve(
    incoming: impl futures_util::Stream<Item = std::io::Result<transport::GuardedStream>>,
    config: HttpConfig,
    gateway: Arc<Gateway>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let config = Arc::new(config);
    futures_util::pin_mut!(incoming);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = futures_util::StreamExt::next(&mut incoming) => accepted,
            () = stopped(&mut stop) => break,
        };
        let Some(accepted) = accepted else { break };
        // Reap the connections that ended, so the set holds open ones only.
        while connections.try_join_next().is_some() {}
        let Ok(stream) = accepted else { continue };
        let (gateway, config, stop) = (Arc::clone(&gateway), Arc::clone(&config), stop.clone());
        connections.spawn(async move {
            let peer = tonic::transport::server::Connected::connect_info(&stream);
            match &config.tls {
                None => connection(TokioIo::new(stream), peer, &config, gateway, stop).await,
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
                            connection(TokioIo::new(tls_stream), peer, &config, gateway, stop)
                                .await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "HTTP API: TLS handshake failed"),
                        Err(_) => tracing::debug!("HTTP API: TLS handshake timed out"),
                    }
                }
            }
        });
    }
    while connections.join_next().await.is_some() {}
    // And the requests whose clients went away: their calls run on to their records.
    gateway.in_flight.idle().await;
}

/// Until the server stops (or its stop signal is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Serves one connection: HTTP/1.1, or HTTP/2 (by ALPN over TLS, by preface in plaintext),
/// until it ends or the server stops.
async fn connection<I>(
    io: I,
    peer: transport::PeerInfo,
    config: &HttpConfig,
    gateway: Arc<Gateway>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let max_body = config.max_body_bytes;
    let body_timeout = config.body_timeout;
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let (gateway, peer) = (Arc::clone(&gateway), peer.clone());
        // In a task of its own: a client that resets its stream or closes the connection
        // drops this future, but the request keeps its place under the per-source limits
        // until its call (which runs on) has ended.
        let serving = gateway.in_flight.start();
        let task = tokio::spawn(async move {
            let _serving = serving;
            handle(&gateway, peer, request, max_body, body_timeout).await
        });
        async move {
            Ok::<_, std::convert::Infallible>(match task.await {
                Ok(response) => response,
                Err(_) => Failure::internal().into_response(""),
            })
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
    let connection = builder.serve_connection(io, service);
    futures_util::pin_mut!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
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
    /// `http PUT "/v1/secret/data/db/primary"`: how the audit record names the route.
    pub fn route(&self) -> String {
        recorded_route(&self.method, &format!("/v1/{}", self.path))
    }
}

/// How a route is recorded: quoted (a path cannot pass for other words of the record), and
/// with anything that looks like a credential blanked (see [`redact_credentials`]).
pub(crate) fn recorded_route(method: &Method, path: &str) -> String {
    let decoded = decode_escapes(path, false).unwrap_or_else(|| path.to_owned());
    format!("http {method} {:?}", redact_credentials(&decoded))
}

/// Text for an audit record with every word that looks like one of this vault's credentials
/// (`vt.` access and `vr.` refresh tokens, `vs.` AppRole secret ids) blanked: a client may put
/// one in a path (Vault's old `auth/token/lookup/<token>`), and a path is recorded.
pub(crate) fn redact_credentials(text: &str) -> String {
    const PREFIXES: [&str; 3] = ["vt.", "vr.", "vs."];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = PREFIXES.iter().filter_map(|p| rest.find(p)).min() {
        out.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(after.len());
        out.push_str("<credential>");
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

async fn handle(
    gateway: &Gateway,
    peer: transport::PeerInfo,
    request: Request<hyper::body::Incoming>,
    max_body: usize,
    body_timeout: Duration,
) -> Response<Full<Bytes>> {
    // In flight on its connection until answered (the connection's idle timer waits).
    let _activity = peer.activity();
    let (parts, body) = request.into_parts();
    // Where the request goes, from its head alone (nothing read, nothing looked up).
    let located = locate(&parts.headers, parts.uri.path());
    let found = located
        .as_ref()
        .ok()
        .and_then(|(_, path)| routes::find(&parts.method, path, parts.uri.query()));
    // A health check (GET or HEAD sys/health) is not audited, reads no body and touches no
    // storage, like gRPC health, and has its limits (`sys::health`: the source's rate, its
    // open health calls, and a server-wide bound of HTTP health checks), refused with 503.
    if let (Ok((namespace, path)), Some((route, _))) = (&located, &found)
        && route.rpc.is_none()
    {
        let incoming = Incoming {
            method: parts.method,
            path: path.clone(),
            headers: parts.headers,
            peer,
            namespace: namespace.clone(),
            params: Params::default(),
        };
        return match sys::health(gateway, incoming, parts.uri.query()).await {
            Ok(answer) => answer.into_response(),
            Err(failure) => failure.into_response(""),
        };
    }
    // Until the request is routed, it is recorded under its raw path.
    let raw = recorded_route(&parts.method, parts.uri.path());
    // The per-source limits come first, before the body is read or anything is looked up;
    // the place is held until the answer.
    let _admission = match gateway.admit(&peer, &parts.headers, &raw).await {
        Ok(admission) => admission,
        Err(refusal) => return refusal,
    };
    let (namespace, path) = match located {
        Ok(located) => located,
        Err(failure) => return gateway.unrouted(&peer, &parts.headers, &raw, failure).await,
    };
    let Some((route, matched)) = found else {
        let failure = routes::not_routed(&parts.method, &path);
        return gateway.unrouted(&peer, &parts.headers, &raw, failure).await;
    };
    let body = match read_body(body, max_body, body_timeout).await {
        Ok(body) => body,
        Err(failure) => return gateway.unrouted(&peer, &parts.headers, &raw, failure).await,
    };
    // Parsed off the async threads (a large body takes milliseconds); the body may carry
    // secret values, and its buffer is ours alone once read.
    let query = parts.uri.query().map(str::to_owned);
    let parsed = tokio::task::spawn_blocking(move || {
        let parsed = Params::parse(query.as_deref(), &body);
        if let Ok(mut buffer) = body.try_into_mut() {
            zeroize::Zeroize::zeroize(buffer.as_mut());
        }
        parsed
    })
    .await
    .unwrap_or_else(|_| Err(Failure::internal()));
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
        // A call's own failure has its record; one the mapping found before any call (a
        // missing or mistyped field) gets one here.
        Err(failure) if failure.is_recorded() => failure.into_response(""),
        Err(failure) => gateway.refused(&incoming, route, failure).await,
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
    let decoded = percent_decode(rest).ok_or_else(|| {
        Failure::bad_request(
            "the path is not valid percent-encoded UTF-8 (an encoded '/' or control character \
             is refused)",
        )
    })?;
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

/// Headers this vault answers with a refusal before anything else: response wrapping, and
/// any request from a web page (browsers send `Origin`; this API serves no browser clients
/// and answers no CORS preflight, so a page cannot make a vault on loopback initialise itself
/// or reset an unseal in progress).
fn refuse_early(headers: &HeaderMap) -> Option<Failure> {
    if headers.contains_key(http::header::ORIGIN) {
        return Some(Failure::new(
            StatusCode::FORBIDDEN,
            "requests from web pages (with an Origin header) are refused: this API serves no \
             browser clients",
        ));
    }
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

/// Percent-decodes a path; `None` if an escape is malformed (two hex digits, not `/` or a
/// control character) or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    decode_escapes(text, true)
}

/// Percent-decodes; in a path (`path`), an encoded `/` or control character is refused.
fn decode_escapes(text: &str, path: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            // An encoded `/` would be a segment boundary a proxy's path rules did not see;
            // control characters name nothing.
            if path && (value == b'/' || value.is_ascii_control()) {
                return None;
            }
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
/// enough (sealed 503, not initialised 501, a failed login 400, as in Vault).
pub(crate) fn http_status(code: Code, reason: &str) -> StatusCode {
    use vault_proto::reason as r;
    match reason {
        // 400 as in Vault (not 412: Vault's Go client retries every 412, so each CAS failure
        // would be tried three times).
        r::CAS_MISMATCH => return StatusCode::BAD_REQUEST,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_routes_are_quoted_and_carry_no_credential() {
        let route = recorded_route(&Method::GET, "/v1/auth/token/lookup/vt.abc-DEF_123");
        assert_eq!(route, r#"http GET "/v1/auth/token/lookup/<credential>""#);
        // Encoded or not, and secret ids and refresh tokens too.
        let route = recorded_route(&Method::POST, "/v1/x/%76t.secret/vs.id;vr.r");
        assert_eq!(
            route,
            r#"http POST "/v1/x/<credential>/<credential>;<credential>""#
        );
        let forged = recorded_route(&Method::PUT, "/v1/secret/data/a\"; forwarded");
        assert_eq!(forged, r#"http PUT "/v1/secret/data/a\"; forwarded""#);
        assert_eq!(
            redact_credentials("no handler for \"vt.x\""),
            "no handler for \"<credential>\""
        );
    }

    #[test]
    fn paths_decode_strictly() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        for bad in ["a%2Fb", "a%2fb", "a%00", "a%+f", "a%1", "a%zz", "%ff%fe"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
        assert_eq!(decode_escapes("a%2Fb", false).as_deref(), Some("a/b"));
    }
}
