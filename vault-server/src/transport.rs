//! Connections, before any request: a bound on connections per source, and the timeouts that
//! close a connection which sends no request.
//!
//! [`incoming`] accepts TCP connections and refuses (closes at once) a connection from a source
//! that already holds `max_per_source` of them (trusted proxies excepted: the sources behind
//! them are told apart per request). Each accepted connection is a [`GuardedStream`], which
//! closes the connection when no request is in flight and none arrived within the header
//! timeout of connecting, or within the idle timeout of the last one ending. The call layer
//! marks requests in flight through [`PeerInfo::activity`], from the request's headers to the
//! end of its response body (so a watch keeps its connection).
//!
//! It closes by failing the read, without a GOAWAY: a client's request that races the close
//! fails once, and its channel reconnects. (Reflection streams get six times the body timeout
//! in the call layer, so a reflection session longer than a minute is cut at the default.)

use std::{
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_util::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::{Instant, Sleep},
};
use tonic::transport::server::Connected;
use vault_core::{
    cidr::Cidr,
    limits::{CountedPlaces, Place, source_key},
};

/// Limits on connections.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// A new connection must send its first request's headers within this.
    pub header_timeout: Duration,
    /// A connection with nothing in flight is closed after this.
    pub idle_timeout: Duration,
    /// Open connections one source address (IPv6: its /64) may hold; 0: no limit.
    pub max_per_source: usize,
    /// Peers exempt from `max_per_source` (proxies carry many clients).
    pub trusted_proxies: Vec<Cidr>,
}

/// What the connection tells the call layer (request extensions).
#[derive(Clone)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    state: Arc<ConnState>,
}

impl PeerInfo {
    /// Marks one request in flight on this connection until the returned guard is dropped.
    pub fn activity(&self) -> Activity {
        self.state.seen.store(true, Ordering::Relaxed);
        self.state.active.fetch_add(1, Ordering::AcqRel);
        Activity(Arc::clone(&self.state))
    }
}

struct ConnState {
    /// Requests in flight.
    active: AtomicUsize,
    /// Whether any request arrived.
    seen: AtomicBool,
    /// When the last request in flight ended (or the connection opened).
    idle_since: Mutex<Instant>,
}

/// One request in flight on a connection.
pub struct Activity(Arc<ConnState>);

impl Drop for Activity {
    fn drop(&mut self) {
        *self
            .0
            .idle_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An accepted connection that closes itself when it carries no request for too long.
pub struct GuardedStream {
    inner: TcpStream,
    remote: Option<SocketAddr>,
    state: Arc<ConnState>,
    limits: Arc<ConnectionLimits>,
    opened: Instant,
    timer: Pin<Box<Sleep>>,
    /// Its place under the per-source limit (none for trusted proxies or without a limit).
    _place: Option<Place<IpAddr>>,
}

impl GuardedStream {
    /// Ready with an error once the connection has been without a request past its deadline;
    /// otherwise keeps the timer armed (so an idle connection is woken to be closed).
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let deadline = if self.state.active.load(Ordering::Acquire) > 0 {
                // Busy: look again later.
                now + self.limits.idle_timeout
            } else if !self.state.seen.load(Ordering::Relaxed) {
                self.opened + self.limits.header_timeout
            } else {
                *self
                    .state
                    .idle_since
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    + self.limits.idle_timeout
            };
            if deadline <= now {
                let what = if self.state.seen.load(Ordering::Relaxed) {
                    "idle connection closed"
                } else {
                    "no request headers within the header timeout"
                };
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, what));
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

impl Connected for GuardedStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        PeerInfo {
            remote: self.remote,
            state: Arc::clone(&self.state),
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Poll::Ready(error) = self.poll_expired(cx) {
            return Poll::Ready(Err(error));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        // Bytes from a client that has sent requests before count as activity (the next
        // request may be arriving); before the first request they do not, so a connection
        // that trickles a partial request stays bound by the header timeout.
        if buf.filled().len() > before
            && self.state.seen.load(Ordering::Relaxed)
            && self.state.active.load(Ordering::Acquire) == 0
        {
            *self
                .state
                .idle_since
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
        }
        read
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The open connections per source, shared by the listeners that count them together (gRPC's
/// and the HTTP API's).
pub type ConnectionPlaces = Arc<CountedPlaces<IpAddr>>;

/// The accepted connections of `listener`, within `limits`, counted in `places`.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    places: ConnectionPlaces,
) -> impl Stream<Item = io::Result<GuardedStream>> {
    let limits = Arc::new(limits);
    futures_util::stream::unfold(
        (listener, limits, places),
        |(listener, limits, places)| async move {
            loop {
                let (stream, remote) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    // Out of descriptors and the like: go on accepting.
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let ip = remote.ip();
                let counted = limits.max_per_source > 0
                    && !limits.trusted_proxies.iter().any(|c| c.contains(ip));
                let place = if counted {
                    match places.take(source_key(ip), limits.max_per_source) {
                        Some(place) => Some(place),
                        None => {
                            tracing::debug!(source = %ip, "connection refused: per-source limit");
                            crate::metrics::metrics().refused("connections-per-source");
                            drop(stream);
                            continue;
                        }
                    }
                } else {
                    None
                };
                let _ = stream.set_nodelay(true);
                let now = Instant::now();
                let guarded = GuardedStream {
                    inner: stream,
                    remote: Some(remote),
                    state: Arc::new(ConnState {
                        active: AtomicUsize::new(0),
                        seen: AtomicBool::new(false),
                        idle_since: Mutex::new(now),
                    }),
                    timer: Box::pin(tokio::time::sleep_until(now + limits.header_timeout)),
                    opened: now,
                    limits: Arc::clone(&limits),
                    _place: place,
                };
                return Some((Ok(guarded), (listener, limits, places)));
            }
        },
    )
}
