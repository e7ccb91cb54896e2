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
//! The handler pipeline (`crate::serve`) calls [`Call::intent`] before any RPC the RPC table
//! marks as changing state (`Webhooks/CreateWebhook`, which resolves a host between two
//! blocking steps, calls it itself), so a change is never committed without a durable record
//! covering it, even if the process dies mid-call. A call whose answer carries a one-time credential uses
//! [`Call::intent_to_return`]: the intent names what will be returned, and once the change has
//! committed, a failed outcome record no longer withholds the answer (it is written late). The
//! handler and the outcome record run in a spawned task, so a client that cancels cannot stop
//! a mutation's outcome from being written.
//!
//! Before anything else the layer resolves the source (a trusted proxy's `x-forwarded-for`,
//! else the peer) and applies the per-source rate limit, the per-source cap on open calls (from
//! headers to answer) and the request-body timeout (`TimeoutBody`); health and reflection have
//! a small semaphore of their own. Refusals are audited at most once a second per source and
//! reason, with a count of those not recorded. The server-wide concurrency place is taken only
//! in [`Call::blocking`], once the request is decoded and work starts, so a stream that never
//! finishes its request holds none. The answer's body (`HeldBody`) keeps the connection marked
//! busy (and a health watch's place) until it ends.
//!
//! Every non-OK answer leaves with an `x-vault-reason`: the vault's own statuses carry theirs
//! (`crate::status`), and the layer adds the code's name to a trailers-only status tonic made
//! itself (an unknown method, a message that does not decode).
//!
//! It also turns tonic's OUT_OF_RANGE for an oversized request into RESOURCE_EXHAUSTED, the code
//! gRPC specifies for exceeding the receive limit: such a request never reaches a handler, which
//! is how the layer tells it apart from a handler's own OUT_OF_RANGE.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    net::{IpAddr, SocketAddr},
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context as TaskContext, Poll},
    time::{Duration, Instant},
};

use futures_util::FutureExt;
use http::{HeaderValue, Request as HttpRequest, Response as HttpResponse};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{
    Code, Request, Status,
    body::Body,
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
    limits::{CountedPlaces, KeyedRateLimit, Place, source_key},
    token::Token,
    vault::Caller,
};

use crate::{
    status::{self, to_status},
    transport::PeerInfo,
};
use vault_proto::reason;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A request extension that marks a call made by the HTTP API's gateway (`crate::http`) on
/// behalf of an HTTP request: its audit records say `transport: http` and name the route.
/// Extensions are set in-process only, so no network client can claim it.
#[derive(Clone)]
pub struct HttpOrigin {
    /// `PUT /v1/secret/data/db/primary`, as recorded.
    pub route: Arc<str>,
    /// The HTTP request was admitted under the per-source limits (`CallLayer::admit_http`)
    /// and holds its place: the call does not count again.
    pub admitted: bool,
}

/// Limits applied to every call.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Peers whose `x-forwarded-for` header is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Calls per second from one source address, before authentication; 0: no limit.
    pub source_rate: u32,
    /// Calls the whole server works on at once (a call holds its place from the moment its
    /// request is decoded and its work starts); 0: no limit.
    pub max_concurrent: usize,
    /// Calls one source may have open at once, from their headers to their answer (a stream
    /// that never finishes its request counts); 0: no limit.
    pub max_per_source: usize,
    /// A request's body (its message) must arrive within this of its headers.
    pub body_timeout: Duration,
    /// Health and reflection calls at once (they are not audited and hold no other place;
    /// a health watch holds its place while it runs); 0: no limit.
    pub max_concurrent_aux: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            trusted_proxies: Vec::new(),
            source_rate: 0,
            max_concurrent: 0,
            max_per_source: 0,
            body_timeout: Duration::from_secs(10),
            max_concurrent_aux: 0,
        }
    }
}

/// The layer's shared state: the limits and the bookkeeping of refusals.
struct Guards {
    limits: Limits,
    /// The per-source rate and open-call limits in force (SIGHUP may change them).
    source_limits: RwLock<SourceLimits>,
    concurrency: Option<Arc<Semaphore>>,
    aux: Option<Arc<Semaphore>>,
    /// Calls open per source (see [`Limits::max_per_source`]).
    open: CountedPlaces<IpAddr>,
    /// Health and reflection calls open per source, streams included (at most
    /// [`AUX_PER_SOURCE`]).
    open_aux: CountedPlaces<IpAddr>,
    /// Refusals per (source, reason) since the last one that was audited: a flood is recorded
    /// once a second per source, with a count, instead of once per call.
    refusals: Mutex<HashMap<RefusalKey, (u64, Instant)>>,
}

/// The per-source limits that a reload can change.
struct SourceLimits {
    /// Calls per second (0: none), and its token buckets.
    rate: u32,
    buckets: Option<Arc<KeyedRateLimit<IpAddr>>>,
    /// Calls open at once (0: no limit).
    max_open: usize,
}

impl SourceLimits {
    fn new(rate: u32, max_open: usize) -> Self {
        SourceLimits {
            rate,
            buckets: (rate > 0)
                .then(|| Arc::new(KeyedRateLimit::new(rate, rate.saturating_mul(2)))),
            max_open,
        }
    }
}

/// Refusals are counted per source address and reason.
type RefusalKey = (IpAddr, &'static str);

/// Health and reflection calls (a health watch is a long stream) one source may have open.
const AUX_PER_SOURCE: usize = 8;

/// At most one audited refusal per source and reason in this interval.
const REFUSAL_RECORD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Clone)]
pub struct CallLayer {
    max_request_bytes: usize,
    audit: Option<Arc<AuditLog>>,
    guards: Arc<Guards>,
    forwarder: Option<Arc<dyn Forwarder>>,
}

/// Where a call goes that this node does not serve itself: a standby of a cluster relays it to
/// the active node.
pub trait Forwarder: Send + Sync {
    /// Where a call to `method` (a gRPC path) is served; `mfa`: the call carries a one-time
    /// code (checking it writes, so only the active node can). May wait, e.g. for a standby's
    /// caches to catch up before it serves a read.
    fn route<'a>(
        &'a self,
        method: &'a str,
        mfa: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Route> + Send + 'a>>;
}

/// Where a call is served.
pub enum Route {
    Here,
    /// Relayed to another node (a standby's call, to the active node).
    Relay(tonic::transport::Channel),
    /// Served here unless the handler answers that only the active node may serve it
    /// ([`Error::NotActive`], e.g. a rate-limited tenant's call on a standby); then relayed.
    /// The request is held in memory until the answer (it is at most the request limit).
    HereOrRelay(tonic::transport::Channel),
    /// Neither: answered UNAVAILABLE with this message.
    Refuse(&'static str),
}

/// Room a unary gRPC request needs beyond its message (the length-prefixed framing).
const REQUEST_FRAMING: usize = 64;

/// Serves a call on this node; a panicking handler still gets its outcome record (INTERNAL).
async fn serve_here<S>(inner: &mut S, request: HttpRequest<Body>, call: &Call) -> HttpResponse<Body>
where
    S: Service<HttpRequest<Body>, Response = HttpResponse<Body>, Error = std::convert::Infallible>,
{
    match AssertUnwindSafe(inner.call(request)).catch_unwind().await {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(_) => {
            tracing::error!(request_id = %call.request_id, method = %call.method, "handler panicked");
            status::internal().into_http()
        }
    }
}

/// The longest a relayed call may take (the client's own deadline travels with it).
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Relays a call to another node and hands back its answer: the caller's address goes along
/// in `x-forwarded-for`, this node's request id in `x-vault-forwarded-request-id`.
async fn forward(
    mut channel: tonic::transport::Channel,
    mut request: HttpRequest<Body>,
    call: &Call,
) -> HttpResponse<Body> {
    if let Some(ip) = call.source_ip
        && let Ok(value) = HeaderValue::from_str(&ip.to_string())
    {
        request.headers_mut().append("x-forwarded-for", value);
    }
    if let Ok(value) = HeaderValue::from_str(&call.request_id) {
        request
            .headers_mut()
            .insert("x-vault-forwarded-request-id", value);
    }
    call.update(|record| record.handled = true);
    call.note("forwarded to the active node".to_owned());
    match tokio::time::timeout(
        FORWARD_TIMEOUT,
        tower::ServiceExt::oneshot(&mut channel, request),
    )
    .await
    {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, request_id = %call.request_id, "cannot reach the active node");
            status::status(
                Code::Unavailable,
                reason::ACTIVE_NODE_UNAVAILABLE,
                "the active node cannot be reached; retry (a new one is elected within the lease TTL)",
            )
            .into_http()
        }
        Err(_) => status::status(
            Code::Unavailable,
            reason::ACTIVE_NODE_UNAVAILABLE,
            "the active node did not answer in time; retry",
        )
        .into_http(),
    }
}

impl CallLayer {
    /// `audit` is `None` only when the operator started the server with audit disabled.
    pub fn new(max_request_bytes: usize, audit: Option<Arc<AuditLog>>, limits: Limits) -> Self {
        let source_limits =
            RwLock::new(SourceLimits::new(limits.source_rate, limits.max_per_source));
        let concurrency =
            (limits.max_concurrent > 0).then(|| Arc::new(Semaphore::new(limits.max_concurrent)));
        let aux = (limits.max_concurrent_aux > 0)
            .then(|| Arc::new(Semaphore::new(limits.max_concurrent_aux)));
        CallLayer {
            max_request_bytes,
            audit,
            forwarder: None,
            guards: Arc::new(Guards {
                limits,
                source_limits,
                concurrency,
                aux,
                open: CountedPlaces::default(),
                open_aux: CountedPlaces::default(),
                refusals: Mutex::new(HashMap::new()),
            }),
        }
    }
}

/// How a call's source is recorded: the peer, or the client behind a trusted proxy.
fn source_text(peer: Option<SocketAddr>, source_ip: Option<IpAddr>) -> String {
    match (peer, source_ip) {
        (Some(peer), Some(ip)) if peer.ip() != ip => format!("{ip} (via {peer})"),
        (Some(peer), _) => peer.to_string(),
        _ => "-".to_owned(),
    }
}

/// A request's place among its source's open calls, held while it is served (see
/// [`CallLayer::admit_http`] and [`CallLayer::admit_unaudited`]).
pub struct Admitted {
    _open: Option<Place<IpAddr>>,
}

/// Why [`CallLayer::record_http_failure`] wrote no record, or [`CallLayer::admit_http`]
/// refused.
pub enum NotRecorded {
    /// The source is over its rate limit (answer 429 with this message).
    Limited(String),
    /// The audit log cannot be written (answer 503).
    AuditUnavailable,
}

impl CallLayer {
    /// Admits a call the layer does not see and that is not audited (the HTTP API's
    /// `sys/health`) under the per-source limits of gRPC health calls: the source's rate and
    /// its cap on open health calls (the server-wide number is the caller's to bound). `Err`:
    /// why it is refused.
    pub fn admit_unaudited(
        &self,
        peer: Option<IpAddr>,
        headers: &http::HeaderMap,
    ) -> Result<Admitted, String> {
        let guards = &self.guards;
        let source = guards.source_of(peer, headers);
        let open = guards.admit(source, true).map_err(|(_, message)| message)?;
        Ok(Admitted { _open: open })
    }

    /// Records the outcome of an HTTP request that the HTTP API answered itself, before any
    /// call (an unknown path, a body that does not parse), as a call of `method` (empty: no
    /// method) with `transport: http`. Gives the record's request id.
    pub async fn record_http_failure(
        &self,
        peer: Option<SocketAddr>,
        headers: &http::HeaderMap,
        method: &str,
        route: &str,
        code: Code,
        detail: String,
    ) -> Result<String, NotRecorded> {
        let guards = &self.guards;
        let source_ip = guards.source_of(peer.map(|addr| addr.ip()), headers);
        let call = self.http_call(peer, source_ip, method);
        call.note(truncated(route));
        call.note(truncated(&detail));
        if let Err(e) = record_outcome(&call, code).await {
            tracing::error!(error = %e, request_id = %call.request_id, "outcome record not written; answer withheld");
            crate::metrics::metrics().call_ended(method, "http", Code::Unavailable, Duration::ZERO);
            return Err(NotRecorded::AuditUnavailable);
        }
        crate::metrics::metrics().call_ended(method, "http", code, Duration::ZERO);
        Ok(call.request_id.to_string())
    }

    /// Admits one HTTP request under the per-source limits, as a gRPC call is admitted: its
    /// rate, and a place among the source's open calls held until the answer (the request's
    /// body is read within it, and its in-process call counts no second time). A refusal is
    /// recorded at most once a second per source and kind.
    pub async fn admit_http(
        &self,
        peer: Option<SocketAddr>,
        headers: &http::HeaderMap,
        route: &str,
    ) -> Result<Admitted, NotRecorded> {
        let guards = &self.guards;
        let source_ip = guards.source_of(peer.map(|addr| addr.ip()), headers);
        match guards.admit(source_ip, false) {
            Ok(open) => Ok(Admitted { _open: open }),
            Err((reason, message)) => {
                crate::metrics::metrics().refused(reason);
                if let Some(suppressed) =
                    source_ip.and_then(|ip| guards.refusal_to_record(source_key(ip), reason))
                {
                    let call = self.http_call(peer, source_ip, "");
                    call.note(truncated(route));
                    call.note(format!(
                        "refused: {message}; {suppressed} similar refusals not recorded since \
                         the last record"
                    ));
                    if let Err(e) = record_outcome(&call, Code::ResourceExhausted).await {
                        tracing::warn!(error = %e, "refusal record not written");
                    }
                }
                Err(NotRecorded::Limited(message))
            }
        }
    }

    /// A call made by the HTTP API itself (not through the layer), for its records.
    fn http_call(&self, peer: Option<SocketAddr>, source_ip: Option<IpAddr>, method: &str) -> Call {
        Call {
            request_id: Arc::from(new_request_id()),
            method: Arc::from(method),
            source: Arc::from(source_text(peer, source_ip)),
            source_ip,
            audit: self.audit.clone(),
            transport: "http",
            record: Arc::default(),
            slot: Arc::default(),
            guards: Some(Arc::clone(&self.guards)),
        }
    }

    /// Puts new per-source limits in force (a configuration reload): calls per second (0:
    /// none) and calls open at once (0: no limit). A changed rate starts every source's bucket
    /// afresh; an unchanged one keeps them.
    pub fn set_source_limits(&self, rate: u32, max_open: usize) {
        let mut limits = self
            .guards
            .source_limits
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if limits.rate != rate {
            *limits = SourceLimits::new(rate, max_open);
        } else {
            limits.max_open = max_open;
        }
    }

    /// Relays the calls `forwarder` names to another node (a standby's, to the active node).
    pub fn with_forwarder(mut self, forwarder: Arc<dyn Forwarder>) -> Self {
        self.forwarder = Some(forwarder);
        self
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

    /// [`Guards::source`] of a request's peer and headers.
    fn source_of(&self, peer: Option<IpAddr>, headers: &http::HeaderMap) -> Option<IpAddr> {
        self.source(peer, headers.get_all("x-forwarded-for").iter())
    }

    /// The per-source limits of one call from `source` (a health or reflection call if `aux`):
    /// its rate, then its place among the source's open calls (`None` without a limit).
    /// `Err`: the refusal's kind and message.
    fn admit(
        &self,
        source: Option<IpAddr>,
        aux: bool,
    ) -> Result<Option<Place<IpAddr>>, (&'static str, String)> {
        let (rate, buckets, max_open) = {
            let limits = self
                .source_limits
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            (limits.rate, limits.buckets.clone(), limits.max_open)
        };
        if let Some(limit) = &buckets
            && let Some(ip) = source
            && !limit.try_take(&source_key(ip), Instant::now())
        {
            return Err((
                "source-rate",
                format!("source {ip} is over the limit of {rate} calls/s"),
            ));
        }
        match source.map(|ip| self.open_call(ip, aux, max_open)) {
            Some(None) => Err((
                "source-open",
                format!(
                    "source {} has its limit of {} calls open at once",
                    source.map_or_else(String::new, |ip| ip.to_string()),
                    if aux { AUX_PER_SOURCE } else { max_open }
                ),
            )),
            Some(Some(open)) => Ok(open),
            None => Ok(None),
        }
    }

    /// Takes a place for one more open call from `source` (a health or reflection call if
    /// `aux`), unless it has its limit; `Some(None)` when there is no limit.
    fn open_call(
        &self,
        source: IpAddr,
        aux: bool,
        max_open: usize,
    ) -> Option<Option<Place<IpAddr>>> {
        let (places, limit) = if aux {
            (&self.open_aux, AUX_PER_SOURCE)
        } else {
            (&self.open, max_open)
        };
        if limit == 0 {
            return Some(None);
        }
        places.take(source_key(source), limit).map(Some)
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
            forwarder: self.forwarder.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CallService<S> {
    inner: S,
    max_request_bytes: usize,
    audit: Option<Arc<AuditLog>>,
    guards: Arc<Guards>,
    forwarder: Option<Arc<dyn Forwarder>>,
}

/// What is known about one call; shared between the layer and the handler.
#[derive(Default)]
struct CallRecord {
    handled: bool,
    tenant: String,
    path: String,
    principal: String,
    /// The tenant of the caller's token (none for system tokens or without a token): alerts
    /// go to its feed only.
    caller_tenant: Option<vault_core::names::TenantId>,
    /// Why the call failed (e.g. which check denied it); for the audit record only.
    detail: String,
    /// The call's answer carries a one-time credential and its intent record, written before
    /// the change committed, names what it returns: the answer is not withheld if the outcome
    /// record fails afterwards (the writer keeps it and writes it late).
    answer_recorded: bool,
    /// A refusal of the flood kind whose record is suppressed (counted in the next one).
    unrecorded: bool,
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
    /// `http` for a call the HTTP API made; empty for gRPC.
    transport: &'static str,
    record: Arc<Mutex<CallRecord>>,
    /// The call's place under the server-wide concurrency limit, taken when its work starts.
    slot: Arc<Mutex<Slot>>,
    guards: Option<Arc<Guards>>,
}

/// Where a call stands under the server-wide concurrency limit.
#[derive(Default)]
enum Slot {
    #[default]
    NotTaken,
    /// Held until the call's last handle is dropped, after its outcome record.
    Held(
        #[allow(dead_code, reason = "held for its Drop, which frees the place")]
        OwnedSemaphorePermit,
    ),
    /// Given up for good (a stream that outlives its call).
    Released,
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
                transport: "",
                record: Arc::default(),
                slot: Arc::default(),
                guards: None,
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

    /// The gRPC path of the call (`/vault.v1.Secrets/Get`).
    pub fn method(&self) -> &str {
        &self.method
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

    /// [`Call::intent`] for a call whose answer may carry a one-time credential (unseal
    /// shares, a root token, a TOTP secret, a webhook secret): the intent names what the
    /// answer will return (never the value). Once the change committed, the handler calls
    /// [`Call::answer_carries_credential`].
    pub fn intent_to_return(&self, what: &str) -> Result<(), Error> {
        self.note(format!("returns {what}"));
        self.intent()
    }

    /// The answer carries the credential that [`Call::intent_to_return`] announced, and its
    /// state change committed: the answer no longer waits on the outcome record, so the
    /// credential is never withheld (a failed outcome record is written late).
    pub fn answer_carries_credential(&self) {
        self.update(|record| record.answer_recorded = true);
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
            transport: self.transport.to_owned(),
            detail: record.detail.clone(),
            answered_anyway: record.answer_recorded,
            ..Entry::default()
        }
    }

    /// Checks the presented token and records who is calling (the token's accessor, never the
    /// token itself). The MFA code, if one came with the call, rides along.
    pub fn authenticate(&self, vault: &Vault, presented: Presented) -> Result<Caller, Error> {
        let caller = self.caller_of(vault, &presented.token?)?;
        Ok(caller.with_mfa_code(presented.mfa_code))
    }

    /// [`Call::authenticate`] without giving up what was presented, for a call that may run
    /// twice ([`Call::now_or_blocking`]). A call with an MFA code or without a usable token
    /// runs once, on the blocking pool ([`Presented::may_run_twice`]), and never gets here.
    pub fn authenticate_again(
        &self,
        vault: &Vault,
        presented: &Presented,
    ) -> Result<Caller, Error> {
        let (Ok(token), None) = (&presented.token, &presented.mfa_code) else {
            return Err(Error::FailedPrecondition(
                "a call with an MFA code or without a usable token runs once".into(),
            ));
        };
        self.caller_of(vault, token)
    }

    /// The caller a token names, recorded as the call's principal (its accessor).
    fn caller_of(&self, vault: &Vault, token: &Token) -> Result<Caller, Error> {
        let caller = vault.authenticate_from(token, self.source_ip)?;
        self.update(|record| {
            record.principal = caller.accessor().to_owned();
            record.caller_tenant = caller.tenant_id();
        });
        Ok(caller)
    }

    /// Gives up the call's place under the concurrency limit, for a handler about to wait on
    /// purpose (a held-back login) rather than work; its next blocking step takes one again.
    pub fn release_slot(&self) {
        let mut slot = self
            .slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if matches!(*slot, Slot::Held(_)) {
            *slot = Slot::NotTaken;
        }
    }

    /// Gives up the call's place for good: the call goes on as a stream that waits more than
    /// it works (a watch).
    pub fn end_slot(&self) {
        *self
            .slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Slot::Released;
    }

    /// Takes the call's place under the server-wide concurrency limit, once its request is
    /// decoded and its work starts (a request still arriving holds none). A refusal is
    /// recorded at most once a second per source, like the other floods.
    fn take_slot(&self) -> Result<(), Error> {
        let Some(guards) = &self.guards else {
            return Ok(());
        };
        let Some(semaphore) = &guards.concurrency else {
            return Ok(());
        };
        let mut slot = self
            .slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !matches!(*slot, Slot::NotTaken) {
            return Ok(());
        }
        match Arc::clone(semaphore).try_acquire_owned() {
            Ok(permit) => {
                *slot = Slot::Held(permit);
                Ok(())
            }
            Err(_) => {
                crate::metrics::metrics().refused("concurrency");
                let message = format!(
                    "the server is serving its limit of {} calls at once",
                    guards.limits.max_concurrent
                );
                match self
                    .source_ip
                    .and_then(|ip| guards.refusal_to_record(source_key(ip), "concurrency"))
                {
                    Some(suppressed) => self.note(format!(
                        "refused: {message}; {suppressed} similar refusals not recorded since \
                         the last record"
                    )),
                    None => self.update(|record| record.unrecorded = true),
                }
                Err(Error::ResourceExhausted(message))
            }
        }
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

impl Presented {
    /// Whether [`Call::authenticate_again`] takes it: a token, and no MFA code (which is
    /// spent once, so such a call runs once).
    pub fn may_run_twice(&self) -> bool {
        self.token.is_ok() && self.mfa_code.is_none()
    }
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

/// The token of a request (`x-vault-token: <token>`, else `authorization: Bearer <token>`)
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
    token_in(request.metadata().as_ref())
}

/// The token in a request's headers: `x-vault-token`, else `authorization: Bearer <token>`,
/// the order Vault reads them in (a proxy's own `Authorization` does not stand in for the
/// client's token). gRPC calls and the HTTP API's gateway both read it here.
pub(crate) fn token_in(headers: &http::HeaderMap) -> Result<Token, Error> {
    let raw = if let Some(value) = headers.get("x-vault-token") {
        value
            .to_str()
            .map_err(|_| Error::PermissionDenied)?
            .trim()
            .to_owned()
    } else if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let text = value.to_str().map_err(|_| Error::PermissionDenied)?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .ok_or(Error::PermissionDenied)?;
        token.trim().to_owned()
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
        self.take_slot().map_err(to_status)?;
        self.on_pool(work).await
    }

    /// `work` on the blocking pool (the call's place already taken), its error noted for the
    /// audit record.
    async fn on_pool<R: Send + 'static>(
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
                Err(status::internal())
            }
        }
    }
}

/// The work of a call that may run twice ([`Call::now_or_blocking`]).
pub type Rerunnable<R> = Arc<dyn Fn(&Call) -> Result<R, Error> + Send + Sync>;

impl Call {
    /// [`Call::blocking`] for a read that usually needs nothing slow: `work` runs first on
    /// this async worker as a no-wait attempt (`vault_storage::nowait`: memory tables, block
    /// cache and hot records only, no lock a writer holds, no round trip, no write). If it
    /// reaches anything that would wait, it runs again on the blocking pool, carrying what the
    /// first run did (its tenant's rate-limit token). Once `work` has authenticated its
    /// caller it passes [`inline::gate`], which ends the attempt there while most attempts of
    /// late by that caller's tenant had to run again (a working set beyond the caches): then
    /// only one of the tenant's calls in [`inline::PROBE_EVERY`] goes on.
    pub(crate) async fn now_or_blocking<R: Send + 'static>(
        &self,
        work: Rerunnable<R>,
    ) -> Result<R, Status> {
        self.take_slot().map_err(to_status)?;
        let mut attempt = vault_core::storage::nowait::Attempt::new();
        let (result, tried) = inline::attempt(|| attempt.now(|| work(self)));
        if let Some(scope) = tried {
            inline::note(scope, !matches!(result, Err(Error::WouldWait)));
        }
        match result {
            Err(Error::WouldWait) => self.on_pool(move |call| attempt.run(|| work(call))).await,
            result => {
                if let Err(error) = &result {
                    self.note(error.audit_detail());
                }
                result.map_err(to_status)
            }
        }
    }
}

/// How often no-wait attempts had to run again, per tenant: a heuristic (relaxed atomics),
/// which decides only where a call runs, never what it answers. The tenant is the
/// authenticated caller's (a system caller, of no tenant, counts as one more), never the one
/// a request names: a caller moves only its own tenant's reads, and a call that fails
/// authentication touches no score and learns nothing of one. Tenants are spread over
/// [`SCOPES`] scores by a hash with this process's random keys, so which tenants share a
/// score cannot be predicted.
pub(crate) mod inline {
    use std::{
        cell::Cell,
        hash::{BuildHasher, RandomState},
        sync::{
            LazyLock,
            atomic::{AtomicU32, Ordering},
        },
    };

    use vault_core::{Error, names::TenantId, storage::nowait, vault::Caller};

    /// How many scores the tenants share (8 bytes each).
    const SCOPES: usize = 1024;

    /// While more than half fell back, one call in this many goes on with its attempt (and so
    /// keeps the score current).
    pub const PROBE_EVERY: u32 = 16;

    /// Decaying scores of fallbacks: each attempt keeps 15/16 of its score, a fallback adds
    /// 64, so a score settles near 1024 times the share of attempts that fell back.
    pub struct Scores {
        misses: [AtomicU32; SCOPES],
        calls: [AtomicU32; SCOPES],
    }

    static SCORES: Scores = Scores::new();
    static KEYS: LazyLock<RandomState> = LazyLock::new(RandomState::new);

    /// The score of one tenant (and of the few that share it).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Scope(usize);

    impl Scope {
        pub fn of(tenant: Option<TenantId>) -> Scope {
            Scope((KEYS.hash_one(tenant) % SCOPES as u64) as usize)
        }
    }

    impl Scores {
        pub const fn new() -> Scores {
            Scores {
                misses: [const { AtomicU32::new(0) }; SCOPES],
                calls: [const { AtomicU32::new(0) }; SCOPES],
            }
        }

        fn worth_trying(&self, scope: Scope) -> bool {
            let at = scope.0 % SCOPES;
            self.misses[at].load(Ordering::Relaxed) < 512
                || self.calls[at]
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(PROBE_EVERY)
        }

        fn note(&self, scope: Scope, served: bool) {
            let misses = &self.misses[scope.0 % SCOPES];
            let before = misses.load(Ordering::Relaxed);
            let kept = before - before / 16;
            let next = if served { kept } else { kept + 64 };
            if next != before {
                misses.store(next, Ordering::Relaxed);
            }
        }
    }

    thread_local! {
        /// The score the attempt running on this thread counts for, once its [`gate`] let it
        /// go on.
        static TRIED: Cell<Option<Scope>> = const { Cell::new(None) };
    }

    /// Runs a no-wait attempt (synchronous, on this thread) and returns, with its result, the
    /// score it counts for: `None` if it ended before its [`gate`] (authentication failed or
    /// would have waited) or at it.
    pub fn attempt<T>(attempt: impl FnOnce() -> T) -> (T, Option<Scope>) {
        TRIED.set(None);
        let out = attempt();
        (out, TRIED.take())
    }

    /// Passed by a call's work once it knows its authenticated caller. In a no-wait attempt,
    /// ends it ([`Error::WouldWait`], so the call runs on the pool) unless the caller's tenant's
    /// attempts are worth trying; elsewhere it does nothing.
    pub fn gate(caller: &Caller) -> Result<(), Error> {
        if !nowait::active() {
            return Ok(());
        }
        let scope = Scope::of(caller.tenant_id());
        if !SCORES.worth_trying(scope) {
            return Err(Error::WouldWait);
        }
        TRIED.set(Some(scope));
        Ok(())
    }

    pub fn note(scope: Scope, served: bool) {
        SCORES.note(scope, served);
        crate::metrics::metrics().inline_attempt(served);
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A tenant whose reads keep falling back goes on with one attempt in 16; another
        /// tenant's reads go on every time; and the first tenant comes back once its probes
        /// are served again.
        #[test]
        fn one_tenants_fallbacks_leave_another_tenants_reads_on_the_worker_until_it_recovers() {
            let scores = Scores::new();
            let (cold, warm) = (Scope(3), Scope(700));
            for _ in 0..400 {
                if scores.worth_trying(cold) {
                    scores.note(cold, false);
                }
            }
            let tries = (0..160).filter(|_| scores.worth_trying(cold)).count();
            assert_eq!(
                tries,
                160 / PROBE_EVERY as usize,
                "the tenant whose reads fall back"
            );
            for _ in 0..160 {
                assert!(
                    scores.worth_trying(warm),
                    "another tenant's read was sent to the pool by the first tenant's fallbacks"
                );
                scores.note(warm, true);
            }
            // Its probes are served again: within 200 calls every call tries once more.
            let mut calls = 0;
            while !(0..PROBE_EVERY).all(|_| scores.worth_trying(cold)) {
                calls += 1;
                assert!(calls < 200, "the tenant never came back to the worker");
                if scores.worth_trying(cold) {
                    scores.note(cold, true);
                }
            }
        }

        /// A tenant's calls always count for the same score, and tenants are spread over the
        /// scores (64 tenants on a single one of 1,024 would take odds of 1,024^-63).
        #[test]
        fn a_tenant_keeps_its_score_and_tenants_are_spread_over_the_scores() {
            let tenants: Vec<TenantId> = (0..64u8)
                .map(|i| TenantId::parse_hex(&format!("00112233445566{i:02x}")).expect("id"))
                .collect();
            for &tenant in &tenants {
                assert_eq!(Scope::of(Some(tenant)), Scope::of(Some(tenant)));
            }
            assert_eq!(Scope::of(None), Scope::of(None));
            let first = Scope::of(Some(tenants[0]));
            assert!(
                tenants.iter().any(|&t| Scope::of(Some(t)) != first),
                "every tenant counts for the same score"
            );
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

/// The peer of a request and its connection (see [`crate::transport`]), whatever carried it.
fn peer_of<B>(request: &HttpRequest<B>) -> (Option<SocketAddr>, Option<PeerInfo>) {
    let extensions = request.extensions();
    if let Some(info) = extensions.get::<PeerInfo>() {
        return (info.remote, Some(info.clone()));
    }
    if let Some(info) = extensions.get::<TlsConnectInfo<PeerInfo>>() {
        return (info.get_ref().remote, Some(info.get_ref().clone()));
    }
    let remote = extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        });
    (remote, None)
}

/// A refusal answered by the layer itself, recorded at most once a second per source and
/// reason.
fn refuse(
    guards: &Guards,
    call: Call,
    reason: &'static str,
    message: String,
) -> BoxFuture<HttpResponse<Body>, Infallible> {
    crate::metrics::metrics().refused(reason);
    let record = call
        .source_ip
        .and_then(|ip| guards.refusal_to_record(source_key(ip), reason));
    Box::pin(async move {
        if let Some(suppressed) = record {
            call.note(format!(
                "refused: {message}; {suppressed} similar refusals not recorded since the last record"
            ));
            if let Err(e) = record_outcome(&call, Code::ResourceExhausted).await {
                tracing::warn!(error = %e, "refusal record not written");
            }
        }
        let mut response = status::status(Code::ResourceExhausted, reason::LIMIT_REACHED, message)
            .into_http::<Body>();
        if let Ok(value) = HeaderValue::from_str(&call.request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        Ok(response)
    })
}

impl<S> Service<HttpRequest<Body>> for CallService<S>
where
    S: Service<HttpRequest<Body>, Response = HttpResponse<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = HttpResponse<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest<Body>) -> Self::Future {
        let started = Instant::now();
        let method = request.uri().path().to_owned();
        let (source, peer) = peer_of(&request);
        // In flight on its connection from now until its answer's body ends.
        let activity = peer.as_ref().map(PeerInfo::activity);
        let reflection = method.starts_with("/grpc.reflection.");
        let audited = !method.starts_with("/grpc.health.") && !reflection;
        let guards = Arc::clone(&self.guards);
        let source_ip = guards.source_of(source.map(|addr| addr.ip()), request.headers());
        let source_text = source_text(source, source_ip);
        let origin = request.extensions().get::<HttpOrigin>().cloned();
        let call = Call {
            request_id: Arc::from(new_request_id()),
            method: Arc::from(method.as_str()),
            source: Arc::from(source_text),
            source_ip,
            audit: if audited { self.audit.clone() } else { None },
            transport: if origin.is_some() { "http" } else { "" },
            record: Arc::default(),
            slot: Arc::default(),
            guards: Some(Arc::clone(&guards)),
        };
        // An HTTP request's call was admitted with the request (`CallLayer::admit_http`),
        // which holds its place until the HTTP answer.
        let admitted = origin.as_ref().is_some_and(|origin| origin.admitted);
        if let Some(origin) = origin {
            call.note(truncated(&origin.route));
        }
        // Limits before anything else (authentication included): a flood is refused cheaply
        // and recorded once a second per source, not once per call. The server-wide place is
        // taken later, when the request is decoded and work starts (`Call::blocking`).
        let open = if admitted {
            None
        } else {
            match guards.admit(source_ip, !audited) {
                Ok(open) => open,
                Err((reason, message)) => return refuse(&guards, call, reason, message),
            }
        };
        let aux = if audited {
            None
        } else {
            match &guards.aux {
                Some(semaphore) => match Arc::clone(semaphore).try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        let message = format!(
                            "the server is serving its limit of {} health and reflection calls",
                            guards.limits.max_concurrent_aux
                        );
                        return refuse(&guards, call, "aux", message);
                    }
                },
                None => None,
            }
        };
        // The message must arrive in time: a stream that sends headers and then nothing is
        // cut off. Reflection streams (client tools) get longer.
        let body_timeout = if reflection {
            guards.limits.body_timeout.saturating_mul(6)
        } else {
            guards.limits.body_timeout
        };
        let timed_out = Arc::new(AtomicBool::new(false));
        let mut request = request.map(|body| {
            Body::new(TimeoutBody {
                inner: body,
                timer: Box::pin(tokio::time::sleep(body_timeout)),
                timed_out: Arc::clone(&timed_out),
                finished: false,
            })
        });
        request.extensions_mut().insert(call.clone());
        // The service that was polled ready is the one to call; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let max_request_bytes = self.max_request_bytes;
        let forwarder = self.forwarder.clone();
        let carries_mfa = request.headers().contains_key(MFA_HEADER);
        let route_method = method.clone();
        // The handler and the outcome record run in their own task: a client that cancels or
        // times out drops this future, but must not stop a mutation's outcome from being
        // recorded.
        let task = tokio::spawn(async move {
            let _in_flight = crate::metrics::metrics().call_started();
            // A call's place under the per-source limit ends with its answer's head; a health
            // or reflection call keeps it while its stream runs.
            let (open, aux_open) = if audited { (open, None) } else { (None, open) };
            let _open = open;
            let route = match &forwarder {
                Some(forwarder) => forwarder.route(&route_method, carries_mfa).await,
                None => Route::Here,
            };
            let mut response = match route {
                Route::Relay(channel) => forward(channel, request, &call).await,
                Route::Here => serve_here(&mut inner, request, &call).await,
                Route::Refuse(message) => {
                    status::status(Code::Unavailable, reason::ACTIVE_NODE_UNAVAILABLE, message)
                        .into_http()
                }
                Route::HereOrRelay(channel) => {
                    let (parts, body) = request.into_parts();
                    let limit = max_request_bytes.saturating_add(REQUEST_FRAMING);
                    match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit))
                        .await
                    {
                        Ok(collected) => {
                            let bytes = collected.to_bytes();
                            let mut relayed = HttpRequest::new(Body::new(
                                http_body_util::Full::new(bytes.clone()),
                            ));
                            *relayed.method_mut() = parts.method.clone();
                            *relayed.uri_mut() = parts.uri.clone();
                            *relayed.version_mut() = parts.version;
                            *relayed.headers_mut() = parts.headers.clone();
                            let here = HttpRequest::from_parts(
                                parts,
                                Body::new(http_body_util::Full::new(bytes)),
                            );
                            let answer = serve_here(&mut inner, here, &call).await;
                            if answer.headers().contains_key(status::RELAY_HEADER) {
                                // Waiting on the active node is not work here: the call gives
                                // its place under this node's concurrency limit up.
                                call.release_slot();
                                forward(channel, relayed, &call).await
                            } else {
                                answer
                            }
                        }
                        // Too large, or not in time: as the handler would have refused it.
                        Err(_) => status::status(
                            Code::ResourceExhausted,
                            reason::TOO_LARGE,
                            format!(
                                "request is larger than the transport limit of {max_request_bytes} bytes, or did not arrive in time"
                            ),
                        )
                        .into_http(),
                    }
                }
            };
            let (handled, answer_recorded, mut unrecorded) = {
                let record = call
                    .record
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                (record.handled, record.answer_recorded, record.unrecorded)
            };
            let headers = response.headers_mut();
            let mut code = headers
                .get("grpc-status")
                .and_then(|value| value.to_str().ok())
                .and_then(|text| text.parse::<i32>().ok())
                .map_or(Code::Ok, Code::from);
            let rewrite = if timed_out.load(Ordering::Acquire) && !handled {
                code = Code::DeadlineExceeded;
                let message = format!(
                    "the request's message did not arrive within {} ms of its headers",
                    body_timeout.as_millis()
                );
                match call
                    .source_ip
                    .and_then(|ip| guards.refusal_to_record(source_key(ip), "body-timeout"))
                {
                    Some(suppressed) => call.note(format!(
                        "{message}; {suppressed} similar calls not recorded since the last record"
                    )),
                    None => unrecorded = true,
                }
                Some((reason::REQUEST_TIMEOUT, Some(message)))
            } else if code == Code::OutOfRange && !handled {
                code = Code::ResourceExhausted;
                Some((
                    reason::TOO_LARGE,
                    Some(format!(
                        "request is larger than the transport limit of {max_request_bytes} bytes"
                    )),
                ))
            } else if code == Code::Internal && !handled && undecodable(headers) {
                // tonic's answer to a message that does not decode, before any handler ran:
                // the caller's fault, not the server's. Its message stays: it names the field
                // ("failed to decode Protobuf message: PutRequest.path: invalid wire type").
                // The server's own INTERNAL answers (a panic) carry a reason and stay INTERNAL.
                code = Code::InvalidArgument;
                Some((reason::INVALID_ARGUMENT, None))
            } else {
                None
            };
            if let Some((why, message)) = rewrite {
                headers.insert("grpc-status", HeaderValue::from(code as i32));
                headers.insert(reason::METADATA_KEY, HeaderValue::from_static(why));
                if let Some(value) = message.and_then(|m| HeaderValue::from_str(&m).ok()) {
                    headers.insert("grpc-message", value);
                }
            } else if code != Code::Ok && !headers.contains_key(reason::METADATA_KEY) {
                // A status tonic made (an unknown method, a stream reset by the client).
                headers.insert(
                    reason::METADATA_KEY,
                    HeaderValue::from_static(status::fallback_reason(code)),
                );
            }
            // Between a put's committed batch and its outcome record (puts only: the crash
            // tests must reach it with the call they choose).
            if !unrecorded && &*call.method == "/vault.v1.Secrets/Put" {
                vault_core::crash_point("put-before-outcome");
            }
            if !unrecorded && let Err(e) = record_outcome(&call, code).await {
                if answer_recorded {
                    // Its intent, durable before the change, names what this answer returns.
                    tracing::error!(error = %e, request_id = %call.request_id, method = %call.method, "outcome record not written yet; the answer carries a one-time credential and goes out");
                } else {
                    tracing::error!(error = %e, request_id = %call.request_id, method = %call.method, "outcome record not written; answer withheld");
                    response = status::to_status(vault_core::Error::AuditUnavailable).into_http();
                    code = Code::Unavailable;
                }
            }
            if let Ok(value) = HeaderValue::from_str(&call.request_id) {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            crate::metrics::metrics().call_ended(
                &call.method,
                call.transport,
                code,
                started.elapsed(),
            );
            tracing::debug!(
                target: "vault::call",
                request_id = %call.request_id,
                method = %call.method,
                code = ?code,
                micros = started.elapsed().as_micros() as u64,
                "call"
            );
            // What the answer's body holds until it ends: the connection's activity (a watch
            // keeps its connection open) and a health watch's place.
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(HeldBody {
                    inner: body,
                    _held: (activity, aux, aux_open),
                })
            }))
        });
        Box::pin(async move {
            match task.await {
                Ok(result) => result,
                Err(e) => {
                    tracing::error!(error = %e, "call task failed");
                    Ok(status::internal().into_http())
                }
            }
        })
    }
}

/// A request body that fails once its deadline passes before it ends.
struct TimeoutBody {
    inner: Body,
    timer: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
    finished: bool,
}

impl http_body::Body for TimeoutBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if !this.finished && this.timer.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Release);
            this.finished = true;
            return Poll::Ready(Some(Err(status::status(
                Code::DeadlineExceeded,
                reason::REQUEST_TIMEOUT,
                "the request's message did not arrive in time",
            ))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds something (a permit, a connection's activity) until it ends.
struct HeldBody<T> {
    inner: Body,
    _held: T,
}

impl<T: Send + Unpin + 'static> http_body::Body for HeldBody<T> {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Appends the call's outcome record and waits until it is durable (never longer than
/// [`APPEND_TIMEOUT`]).
async fn record_outcome(call: &Call, code: Code) -> Result<(), String> {
    if call.audit.is_none() && crate::alerts::alerts().is_none() {
        return Ok(());
    }
    let mut entry = call.entry();
    entry.outcome = outcome(code).to_owned();
    entry.code = code_name(code).to_owned();
    if let Some(alerts) = crate::alerts::alerts() {
        let caller_tenant = call
            .record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .caller_tenant;
        alerts.observe(&crate::alerts::Observed {
            caller_tenant,
            method: &entry.method,
            tenant: &entry.tenant,
            path: &entry.path,
            principal: &entry.principal,
            source_ip: call.source_ip,
            source: &entry.source,
            ok: code == Code::Ok,
            denied: matches!(code, Code::PermissionDenied | Code::Unauthenticated),
        });
    }
    let Some(audit) = &call.audit else {
        return Ok(());
    };
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

/// Whether an answer is tonic's status for a request message that does not decode: INTERNAL
/// with its "failed to decode" message (percent-encoded in the header) and no reason of the
/// vault's own.
fn undecodable(headers: &http::HeaderMap) -> bool {
    !headers.contains_key(reason::METADATA_KEY)
        && headers.get("grpc-message").is_some_and(|m| {
            m.as_bytes()
                .starts_with(b"failed%20to%20decode%20Protobuf%20message")
        })
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

    fn grpc_reason<B>(response: &HttpResponse<B>) -> Option<&str> {
        response
            .headers()
            .get(reason::METADATA_KEY)
            .and_then(|v| v.to_str().ok())
    }

    fn request() -> HttpRequest<Body> {
        let mut request = HttpRequest::builder()
            .uri("/vault.v1.System/Status")
            .body(Body::empty())
            .expect("request");
        request.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some("127.0.0.1:40000".parse().expect("address")),
        });
        request
    }

    /// A gate a blocking step waits at until the test opens it.
    #[derive(Clone, Default)]
    struct Gate(Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

    impl Gate {
        fn wait(&self) {
            let (open, changed) = &*self.0;
            let mut open = open.lock().expect("gate");
            while !*open {
                open = changed.wait(open).expect("gate");
            }
        }

        fn open(&self) {
            let (open, changed) = &*self.0;
            *open.lock().expect("gate") = true;
            changed.notify_all();
        }
    }

    /// A handler whose blocking step waits at `gate` after telling `entered`.
    fn handler(
        gate: Gate,
        entered: Arc<Notify>,
    ) -> impl Service<
        HttpRequest<Body>,
        Response = HttpResponse<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<HttpResponse<Body>, Infallible>> + Send,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(move |request: HttpRequest<Body>| {
            let (gate, entered) = (gate.clone(), Arc::clone(&entered));
            async move {
                let call = request.extensions().get::<Call>().cloned().expect("call");
                let result = call
                    .blocking(move |_| {
                        entered.notify_one();
                        gate.wait();
                        Ok(())
                    })
                    .await;
                Ok::<_, Infallible>(match result {
                    Ok(()) => HttpResponse::new(Body::empty()),
                    Err(status) => status.into_http(),
                })
            }
        })
    }

    /// A request message that does not decode is the caller's error (INVALID_ARGUMENT, tonic's
    /// message naming the field); a panic before the handler took its call stays INTERNAL.
    #[tokio::test]
    async fn only_a_message_that_does_not_decode_turns_internal_into_invalid_argument() {
        let undecodable = tower::service_fn(|_: HttpRequest<Body>| async {
            Ok::<_, Infallible>(
                Status::internal(
                    "failed to decode Protobuf message: GetRequest.path: invalid wire type",
                )
                .into_http(),
            )
        });
        let mut service = CallLayer::new(1024, None, Limits::default()).layer(undecodable);
        let answer = service.call(request()).await.expect("answer");
        assert_eq!(grpc_status(&answer), Code::InvalidArgument);
        assert_eq!(grpc_reason(&answer), Some(reason::INVALID_ARGUMENT));
        let panics = tower::service_fn(|_: HttpRequest<Body>| async {
            if std::hint::black_box(true) {
                panic!("a handler bug before the call is taken");
            }
            Ok::<HttpResponse<Body>, Infallible>(Status::ok("").into_http())
        });
        let mut service = CallLayer::new(1024, None, Limits::default()).layer(panics);
        let answer = service.call(request()).await.expect("answer");
        assert_eq!(grpc_status(&answer), Code::Internal);
        assert_eq!(grpc_reason(&answer), Some(reason::INTERNAL));
    }

    #[tokio::test]
    async fn calls_beyond_the_concurrency_limit_are_refused_when_their_work_starts() {
        let (gate, entered) = (Gate::default(), Arc::new(Notify::new()));
        let limits = Limits {
            max_concurrent: 1,
            ..Limits::default()
        };
        let mut service =
            CallLayer::new(1024, None, limits).layer(handler(gate.clone(), Arc::clone(&entered)));
        let first = tokio::spawn(service.call(request()));
        entered.notified().await;
        let refused = service.call(request()).await.expect("answer");
        assert_eq!(grpc_status(&refused), Code::ResourceExhausted);
        gate.open();
        let answered = first.await.expect("task").expect("answer");
        assert_eq!(grpc_status(&answered), Code::Ok);
        // The place is free again.
        let again = service.call(request()).await.expect("answer");
        assert_eq!(grpc_status(&again), Code::Ok);
    }

    #[tokio::test]
    async fn one_source_has_a_bounded_number_of_open_calls() {
        let (gate, entered) = (Gate::default(), Arc::new(Notify::new()));
        let limits = Limits {
            max_per_source: 1,
            ..Limits::default()
        };
        let mut service =
            CallLayer::new(1024, None, limits).layer(handler(gate.clone(), Arc::clone(&entered)));
        let first = tokio::spawn(service.call(request()));
        entered.notified().await;
        let refused = service.call(request()).await.expect("answer");
        assert_eq!(grpc_status(&refused), Code::ResourceExhausted);
        // Another source is not affected.
        let mut other = request();
        other.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some("127.0.0.2:40000".parse().expect("address")),
        });
        let from_elsewhere = tokio::spawn(service.call(other));
        entered.notified().await;
        gate.open();
        assert_eq!(
            grpc_status(&from_elsewhere.await.expect("task").expect("answer")),
            Code::Ok
        );
        assert_eq!(
            grpc_status(&first.await.expect("task").expect("answer")),
            Code::Ok
        );
    }

    /// Guards that believe `x-forwarded-for` from the `trusted` networks, with no limits.
    fn trusting(trusted: &[&str]) -> Guards {
        Guards {
            limits: Limits {
                trusted_proxies: trusted
                    .iter()
                    .map(|c| Cidr::parse(c).expect("cidr"))
                    .collect(),
                ..Limits::default()
            },
            source_limits: RwLock::new(SourceLimits::new(0, 0)),
            concurrency: None,
            aux: None,
            open: CountedPlaces::default(),
            open_aux: CountedPlaces::default(),
            refusals: Mutex::new(HashMap::new()),
        }
    }

    /// Fuzz target (`vault-fuzz`): any `x-forwarded-for` fields, from a trusted proxy or not,
    /// give the peer or an address the fields name, never a panic.
    #[test]
    fn fuzz_forwarded_for() {
        let guards = trusting(&["10.0.0.0/24", "fd00::/8"]);
        vault_fuzz::run(
            env!("CARGO_MANIFEST_DIR"),
            "forwarded-for",
            &[
                b"203.0.113.9",
                b"198.51.100.1, 10.0.0.7",
                b"::1,fd00::2",
                b"garbage, 10.0.0.2",
            ],
            |bytes| {
                let peer: IpAddr = if bytes.first().is_some_and(|b| b % 2 == 0) {
                    "10.0.0.1".parse().expect("ip")
                } else {
                    "192.0.2.1".parse().expect("ip")
                };
                let fields: Vec<HeaderValue> = bytes
                    .split(|b| *b == b'\n')
                    .filter_map(|field| HeaderValue::from_bytes(field).ok())
                    .collect();
                let source = guards.source(Some(peer), fields.iter());
                let text = String::from_utf8_lossy(bytes);
                // An untrusted peer is the source, whatever it forwards.
                if !guards
                    .limits
                    .trusted_proxies
                    .iter()
                    .any(|c| c.contains(peer))
                {
                    assert_eq!(
                        source,
                        Some(peer),
                        "an untrusted peer's header was believed"
                    );
                }
                // A trusted one gives itself or an address its fields name (IPv6 may be
                // written in another form than its canonical one).
                assert!(
                    source == Some(peer)
                        || source.is_some_and(|ip| text.contains(&ip.to_string())
                            || (ip.is_ipv6() && text.contains(':'))),
                    "{source:?} is neither the peer nor named in {text:?}"
                );
            },
        );
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_and_only_from_trusted_proxies() {
        let guards = trusting;
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
