//! The HTTP API's one way into the core: an in-process unary gRPC call through the call layer.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tonic::{Code, Status, body::Body, service::Routes};

use super::{
    Incoming,
    reply::{Answer, Failure},
    routes::Route,
};
use crate::{
    Shared,
    call::{CallLayer, CallService, HttpOrigin, NotRecorded, REQUEST_ID_HEADER},
    transport::PeerInfo,
};

/// Request headers that travel with the in-process call: the token (the call layer reads it
/// as for gRPC, `call::token_in`), the MFA code and the proxy chain (the call layer resolves
/// the source from it as for gRPC).
const PASSED_HEADERS: &[&str] = &[
    "x-vault-token",
    "authorization",
    "x-vault-mfa",
    "x-forwarded-for",
];

/// Health checks served at once over HTTP (their own bound: gRPC health watches, which are
/// long, do not take these places).
const HEALTH_CALLS: usize = 64;

/// The largest answer the gateway decodes (a list page, a batch: well under this).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The services behind the call layer, called in-process.
pub(crate) struct Gateway {
    pub(super) shared: Arc<Shared>,
    service: CallService<Routes>,
    layer: CallLayer,
    health_calls: Arc<tokio::sync::Semaphore>,
    /// Requests being served: the drain waits for them all, those whose client went away
    /// included.
    pub(super) in_flight: Arc<InFlight>,
}

/// A count of requests being served, and a wake-up when it reaches zero.
#[derive(Default)]
pub(crate) struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One request being served.
pub(crate) struct Serving(Arc<InFlight>);

impl InFlight {
    pub(crate) fn start(self: &Arc<Self>) -> Serving {
        self.count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Serving(Arc::clone(self))
    }

    /// Until no request is being served.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count.load(std::sync::atomic::Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

/// The answer of one call: the message and the call's request id.
pub(crate) struct Called<T> {
    pub message: T,
    pub request_id: String,
}

impl Gateway {
    pub(super) fn new(shared: Arc<Shared>, routes: Routes, layer: CallLayer) -> Self {
        let service = tower::Layer::layer(&layer, routes.prepare());
        Gateway {
            shared,
            service,
            layer,
            health_calls: Arc::new(tokio::sync::Semaphore::new(HEALTH_CALLS)),
            in_flight: Arc::default(),
        }
    }

    /// One unary call of `method` (`Secrets/Get`) with `request`, as the HTTP request's caller:
    /// its credentials and source, marked as coming over HTTP.
    pub(crate) async fn unary<Req, Resp>(
        &self,
        incoming: &Incoming,
        method: &str,
        request: Req,
    ) -> Result<Called<Resp>, Failure>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let encoded = request.encoded_len();
        let mut frame = BytesMut::with_capacity(5 + encoded);
        frame.put_u8(0);
        frame.put_u32(u32::try_from(encoded).map_err(|_| Failure::too_large())?);
        request
            .encode(&mut frame)
            .map_err(|_| Failure::internal())?;
        let mut call = Request::new(Body::new(Full::new(frame.freeze())));
        *call.method_mut() = http::Method::POST;
        *call.uri_mut() = format!("/vault.v1.{method}")
            .parse()
            .map_err(|_| Failure::internal())?;
        *call.version_mut() = http::Version::HTTP_2;
        let headers = call.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        for name in PASSED_HEADERS {
            for value in incoming.headers.get_all(*name) {
                headers.append(*name, value.clone());
            }
        }
        call.extensions_mut().insert(incoming.peer.clone());
        call.extensions_mut().insert(HttpOrigin {
            route: Arc::from(incoming.route()),
            admitted: true,
        });
        let answer = match tower::ServiceExt::oneshot(self.service.clone(), call).await {
            Ok(answer) => answer,
            Err(never) => match never {},
        };
        decode(answer).await
    }

    /// The tenant a call acts in: the namespace it names, else its token's own tenant (empty
    /// if the token names none, or cannot be read: the call itself then fails as it should).
    pub(crate) async fn tenant(&self, incoming: &Incoming) -> String {
        if !incoming.namespace.is_empty() {
            return incoming.namespace.clone();
        }
        let Ok(token) = crate::call::token_in(&incoming.headers) else {
            return String::new();
        };
        let vault = Arc::clone(&self.shared.vault);
        match tokio::task::spawn_blocking(move || vault.access().tenant_of_token(&token)).await {
            Ok(Ok(Some(tenant))) => tenant.to_string(),
            _ => String::new(),
        }
    }

    /// Answers a request that no route serves (or whose path does not parse), after its
    /// audit record: the gateway's own refusal, recorded like a gRPC call to an unknown method.
    pub(super) async fn unrouted(
        &self,
        peer: &PeerInfo,
        headers: &HeaderMap,
        route: &str,
        failure: Failure,
    ) -> Response<Full<Bytes>> {
        self.record(peer, headers, "", route, failure).await
    }

    /// Answers a routed request refused before its call (its body does not parse).
    pub(super) async fn refused(
        &self,
        incoming: &Incoming,
        route: &Route,
        failure: Failure,
    ) -> Response<Full<Bytes>> {
        let method = format!("/vault.v1.{}", route.rpc.unwrap_or(""));
        self.record(
            &incoming.peer,
            &incoming.headers,
            &method,
            &incoming.route(),
            failure,
        )
        .await
    }

    async fn record(
        &self,
        peer: &PeerInfo,
        headers: &HeaderMap,
        method: &str,
        route: &str,
        failure: Failure,
    ) -> Response<Full<Bytes>> {
        // The failure's text may repeat the path; neither may carry a credential.
        let detail = super::redact_credentials(&failure.message());
        match self
            .layer
            .record_http_failure(peer.remote, headers, method, route, failure.code(), detail)
            .await
        {
            Ok(request_id) => failure.into_response(&request_id),
            Err(not_recorded) => refusal(not_recorded),
        }
    }

    /// Admits an HTTP request under the per-source limits (see [`CallLayer::admit_http`]), or
    /// gives the refusal's answer.
    pub(super) async fn admit(
        &self,
        peer: &PeerInfo,
        headers: &HeaderMap,
        route: &str,
    ) -> Result<crate::call::Admitted, Response<Full<Bytes>>> {
        self.layer
            .admit_http(peer.remote, headers, route)
            .await
            .map_err(refusal)
    }

    /// Admits a health check: the health calls' per-source limits and the HTTP health
    /// checks' own server-wide bound. Refused: 503, not 429 (Vault's code for a standby).
    pub(super) fn admit_health(
        &self,
        incoming: &Incoming,
    ) -> Result<(crate::call::Admitted, tokio::sync::OwnedSemaphorePermit), Failure> {
        let refused = |message: String| Failure::new(StatusCode::SERVICE_UNAVAILABLE, message);
        let admitted = self
            .layer
            .admit_unaudited(incoming.peer.remote.map(|a| a.ip()), &incoming.headers)
            .map_err(refused)?;
        let place = Arc::clone(&self.health_calls)
            .try_acquire_owned()
            .map_err(|_| {
                refused(format!(
                    "the server is serving its limit of {HEALTH_CALLS} health checks"
                ))
            })?;
        Ok((admitted, place))
    }

    /// Whether this node is the active one (always, on embedded storage).
    pub(super) fn is_active(&self) -> bool {
        crate::is_active(&self.shared.cluster)
    }
}

/// The answer to a request that was refused, or whose refusal could not be recorded.
fn refusal(not_recorded: NotRecorded) -> Response<Full<Bytes>> {
    match not_recorded {
        NotRecorded::Limited(message) => {
            Failure::new(StatusCode::TOO_MANY_REQUESTS, message).into_response("")
        }
        NotRecorded::AuditUnavailable => Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit log cannot be written; nothing was done",
        )
        .into_response(""),
    }
}

/// The message of a gRPC answer, or its status as a [`Failure`].
async fn decode<Resp: prost::Message + Default>(
    answer: Response<Body>,
) -> Result<Called<Resp>, Failure> {
    let request_id = answer
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // A trailers-only answer: the status is in the headers.
    if let Some(status) = Status::from_header_map(answer.headers())
        && status.code() != Code::Ok
    {
        return Err(Failure::from_status(&status, request_id));
    }
    let collected = http_body_util::Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|_| Failure::internal().with_request_id(&request_id))?;
    if let Some(trailers) = collected.trailers()
        && let Some(status) = Status::from_header_map(trailers)
        && status.code() != Code::Ok
    {
        return Err(Failure::from_status(&status, request_id));
    }
    let bytes: Bytes = collected.to_bytes();
    let message = bytes
        .get(5..)
        .and_then(|body| Resp::decode(body).ok())
        .ok_or_else(|| Failure::internal().with_request_id(&request_id))?;
    Ok(Called {
        message,
        request_id,
    })
}

impl<T> Called<T> {
    /// Vault's answer envelope around `data`, with this call's request id.
    pub(crate) fn data(&self, data: serde_json::Value) -> Answer {
        Answer::data(&self.request_id, data)
    }
}
